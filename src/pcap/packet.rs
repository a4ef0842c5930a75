//! One captured frame into one TCP segment.
//!
//! A capture's link type says what a frame starts with (an Ethernet header,
//! a Linux "cooked" header, a BSD loopback family word, or the IP header
//! itself); [`decode`] strips it and lets `etherparse` check and slice the
//! IP and TCP headers (VLAN tags and IPv6 extension headers included).
//!
//! The IP length fields are read as tshark reads them, with `etherparse`'s
//! lax slicing: a capture taken on the sending host sees segments before
//! the network card splits them (TCP segmentation offload), with an IPv4
//! total length of 0 and more bytes than the MTU; the frame's own length
//! then gives the payload. What the frame is missing is never guessed at:
//! a frame cut short by the capture's snapshot length (or one whose IP
//! length claims more bytes than the frame holds) would hand the scanner
//! bytes that are not the stream's, so it is skipped and its bytes become
//! a counted hole in the stream instead.

use std::net::{IpAddr, SocketAddr};

use etherparse::{EtherType, LaxNetSlice, LaxSlicedPacket, TransportSlice};
use pcap_parser::Linktype;

/// One direction of a TCP connection: from `src` to `dst`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FlowKey {
    /// The sender's address and port.
    pub src: SocketAddr,
    /// The receiver's address and port.
    pub dst: SocketAddr,
}

impl FlowKey {
    /// The other direction of the same connection.
    pub fn reverse(&self) -> FlowKey {
        FlowKey {
            src: self.dst,
            dst: self.src,
        }
    }
}

/// A TCP segment taken from a frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TcpSegment {
    /// Its direction.
    pub key: FlowKey,
    /// Its sequence number.
    pub seq: u32,
    /// SYN flag.
    pub syn: bool,
    /// ACK flag.
    pub ack: bool,
    /// Its acknowledgment number (meaningful with the ACK flag).
    pub ack_number: u32,
    /// FIN flag.
    pub fin: bool,
    /// RST flag.
    pub rst: bool,
    /// Its payload.
    pub payload: Vec<u8>,
    /// When it was captured (since the Unix epoch), if the capture says.
    pub time: Option<std::time::Duration>,
}

/// Why a frame gave no TCP segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Skip {
    /// A link type this reader does not decode.
    LinkType(i32),
    /// Not TCP over IPv4 or IPv6 (ARP, UDP, ICMP...).
    NotTcp,
    /// An IP fragment (fragments are not reassembled).
    Fragment,
    /// Headers that do not parse, or a frame cut short by the capture.
    Malformed,
}

impl std::fmt::Display for Skip {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Skip::LinkType(link) => write!(f, "link type {link} (not decoded)"),
            Skip::NotTcp => f.write_str("not TCP"),
            Skip::Fragment => f.write_str("IP fragment"),
            Skip::Malformed => f.write_str("malformed or cut short"),
        }
    }
}

/// Length of a Linux cooked v2 header; the EtherType is its first field.
const SLL2_HEADER: usize = 20;
/// Length of the address family word of BSD loopback link types.
const LOOPBACK_HEADER: usize = 4;

/// Decodes the TCP segment a frame of link type `link` carries.
pub fn decode(link: Linktype, frame: &[u8]) -> Result<TcpSegment, Skip> {
    let sliced = match link {
        Linktype::ETHERNET => LaxSlicedPacket::from_ethernet(frame).map_err(|_| Skip::Malformed)?,
        Linktype::LINUX_SLL => linux_sll(frame)?,
        Linktype::LINUX_SLL2 => {
            let header = frame.get(..SLL2_HEADER).ok_or(Skip::Malformed)?;
            let ether_type = EtherType(u16::from_be_bytes([header[0], header[1]]));
            LaxSlicedPacket::from_ether_type(ether_type, &frame[SLL2_HEADER..])
        }
        Linktype::NULL | Linktype::LOOP => {
            ip(frame.get(LOOPBACK_HEADER..).ok_or(Skip::Malformed)?)?
        }
        Linktype::RAW | Linktype::IPV4 | Linktype::IPV6 => ip(frame)?,
        other => return Err(Skip::LinkType(other.0)),
    };
    segment_of(&sliced)
}

/// Length of a Linux cooked v1 header; its last field is the EtherType.
const SLL_HEADER: usize = 16;

fn linux_sll(frame: &[u8]) -> Result<LaxSlicedPacket<'_>, Skip> {
    let header = frame.get(..SLL_HEADER).ok_or(Skip::Malformed)?;
    let ether_type = EtherType(u16::from_be_bytes([header[14], header[15]]));
    Ok(LaxSlicedPacket::from_ether_type(
        ether_type,
        &frame[SLL_HEADER..],
    ))
}

fn ip(frame: &[u8]) -> Result<LaxSlicedPacket<'_>, Skip> {
    LaxSlicedPacket::from_ip(frame).map_err(|_| Skip::Malformed)
}

/// The TCP segment of a laxly sliced packet.
fn segment_of(sliced: &LaxSlicedPacket<'_>) -> Result<TcpSegment, Skip> {
    let (src_ip, dst_ip, payload): (IpAddr, IpAddr, _) = match &sliced.net {
        Some(LaxNetSlice::Ipv4(ip)) => (
            ip.header().source_addr().into(),
            ip.header().destination_addr().into(),
            ip.payload(),
        ),
        Some(LaxNetSlice::Ipv6(ip)) => (
            ip.header().source_addr().into(),
            ip.header().destination_addr().into(),
            ip.payload(),
        ),
        _ => return Err(Skip::NotTcp),
    };
    if payload.fragmented {
        return Err(Skip::Fragment);
    }
    if payload.ip_number != etherparse::IpNumber::TCP {
        return Err(Skip::NotTcp);
    }
    // The IP header claims bytes the frame does not hold: cut short.
    if payload.incomplete {
        return Err(Skip::Malformed);
    }
    let Some(TransportSlice::Tcp(tcp)) = &sliced.transport else {
        return Err(Skip::Malformed); // TCP, but its header does not parse
    };
    Ok(TcpSegment {
        key: FlowKey {
            src: SocketAddr::new(src_ip, tcp.source_port()),
            dst: SocketAddr::new(dst_ip, tcp.destination_port()),
        },
        seq: tcp.sequence_number(),
        syn: tcp.syn(),
        ack: tcp.ack(),
        ack_number: tcp.acknowledgment_number(),
        fin: tcp.fin(),
        rst: tcp.rst(),
        payload: tcp.payload().to_vec(),
        time: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use etherparse::PacketBuilder;

    fn ipv4_frame(payload: &[u8]) -> Vec<u8> {
        let builder = PacketBuilder::ethernet2([1; 6], [2; 6])
            .ipv4([10, 0, 0, 1], [10, 0, 0, 2], 64)
            .tcp(40000, 80, 1234, 65535)
            .syn();
        let mut frame = Vec::new();
        builder.write(&mut frame, payload).unwrap();
        frame
    }

    #[test]
    fn an_ethernet_frame_gives_its_segment() {
        let segment = decode(Linktype::ETHERNET, &ipv4_frame(b"hello")).unwrap();
        assert_eq!(segment.key.src, "10.0.0.1:40000".parse().unwrap());
        assert_eq!(segment.key.dst, "10.0.0.2:80".parse().unwrap());
        assert_eq!(segment.seq, 1234);
        assert!(segment.syn && !segment.ack && !segment.fin && !segment.rst);
        assert_eq!(segment.payload, b"hello");
    }

    #[test]
    fn raw_ip_and_cooked_frames_decode_too() {
        let ethernet = ipv4_frame(b"xy");
        let ip = &ethernet[14..];
        assert_eq!(decode(Linktype::RAW, ip).unwrap().payload, b"xy");
        let mut sll2 = vec![0x08, 0x00];
        sll2.resize(SLL2_HEADER, 0);
        sll2.extend_from_slice(ip);
        assert_eq!(decode(Linktype::LINUX_SLL2, &sll2).unwrap().payload, b"xy");
        let mut null = 2u32.to_le_bytes().to_vec();
        null.extend_from_slice(ip);
        assert_eq!(decode(Linktype::NULL, &null).unwrap().payload, b"xy");
    }

    #[test]
    fn a_frame_cut_short_is_skipped_not_guessed() {
        let frame = ipv4_frame(b"a payload the capture cut");
        assert_eq!(
            decode(Linktype::ETHERNET, &frame[..frame.len() - 5]),
            Err(Skip::Malformed)
        );
        assert_eq!(decode(Linktype::LINUX_SLL2, &[0; 3]), Err(Skip::Malformed));
    }

    #[test]
    fn an_ipv4_total_length_of_zero_takes_the_frame_length() {
        // Segmentation offload: the sender's capture sees the segment
        // before the card splits it and sets its length.
        let payload = vec![b'x'; 4096];
        let mut frame = ipv4_frame(&payload);
        frame[16..18].copy_from_slice(&[0, 0]);
        assert_eq!(decode(Linktype::ETHERNET, &frame).unwrap().payload, payload);
        // A total length that claims more than the frame: cut short.
        let mut frame = ipv4_frame(b"abc");
        frame[16..18].copy_from_slice(&200u16.to_be_bytes());
        assert_eq!(decode(Linktype::ETHERNET, &frame), Err(Skip::Malformed));
        // Ethernet padding after a real total length is not payload.
        let mut frame = ipv4_frame(b"ab");
        frame.extend_from_slice(&[0; 6]);
        assert_eq!(decode(Linktype::ETHERNET, &frame).unwrap().payload, b"ab");
    }

    #[test]
    fn other_traffic_is_skipped_with_a_reason() {
        let mut udp = Vec::new();
        PacketBuilder::ethernet2([1; 6], [2; 6])
            .ipv4([10, 0, 0, 1], [10, 0, 0, 2], 64)
            .udp(53, 53)
            .write(&mut udp, b"dns")
            .unwrap();
        assert_eq!(decode(Linktype::ETHERNET, &udp), Err(Skip::NotTcp));
        assert_eq!(
            decode(Linktype(147), &udp),
            Err(Skip::LinkType(147)),
            "a user link type"
        );
    }
}
