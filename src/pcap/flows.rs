//! The flow table: every direction of every TCP connection of a capture,
//! each one stream.
//!
//! A direction is keyed by its 4-tuple (source and destination address and
//! port; the protocol is always TCP) and named by a UUID v5 of that key
//! (see [`flow_uuid`]), so the same direction of the same connection gets
//! the same stream id in every run and from every tool that follows the
//! rule. A connection that reuses a 4-tuple after the previous one ended
//! (a new SYN after FIN or RST) is a new stream: its name carries the
//! number of the reuse.
//!
//! [`FlowTable::segment`] takes segments in capture order and tells the
//! caller what happened as [`FlowEvent`]s: a direction opened, bytes are
//! ready in stream order, a direction ended (FIN, RST), with its summary.
//! [`FlowTable::finish`] ends what is still open when the capture ends.
//!
//! Ended directions keep their entry (without buffers, about 200 bytes) so
//! that late retransmissions are recognised and dropped instead of opening
//! a stream of stray bytes. A RST ends both directions of its connection;
//! a SYN that is not the open direction's own starts a new connection on
//! the same 4-tuple (the old direction's FIN or RST was not captured).
//! Left out: an idle timeout in capture time, and a bound on the table as
//! a whole (each direction's reordering buffer is bounded).

use std::collections::HashMap;
use std::net::SocketAddr;

use serde::Serialize;
use uuid::Uuid;

use super::packet::{FlowKey, TcpSegment};
use super::reassembly::{Direction, End};

/// The namespace of flow stream ids: UUID v5 of `yaraflow:tcp` in the URL
/// namespace.
pub fn flow_namespace() -> Uuid {
    Uuid::new_v5(&Uuid::NAMESPACE_URL, b"yaraflow:tcp")
}

/// The stream id of a direction: UUID v5, in [`flow_namespace`], of
/// `tcp SRC > DST` (addresses as `1.2.3.4:80` or `[::1]:80`), followed by
/// ` #N` for the N-th reuse of the same 4-tuple.
pub fn flow_uuid(key: &FlowKey, reuse: u32) -> Uuid {
    let name = match reuse {
        0 => format!("tcp {} > {}", key.src, key.dst),
        n => format!("tcp {} > {} #{n}", key.src, key.dst),
    };
    Uuid::new_v5(&flow_namespace(), name.as_bytes())
}

/// Which side of the connection sent a direction, told by the handshake.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Its first segment was a SYN: the side that opened the connection.
    Client,
    /// Its first segment was a SYN+ACK.
    Server,
    /// The capture started after the handshake.
    Unknown,
}

/// What became of a direction, once it ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FlowSummary {
    /// Its stream id.
    pub stream: Uuid,
    /// Sender address.
    pub src: SocketAddr,
    /// Receiver address.
    pub dst: SocketAddr,
    /// Which side sent it.
    pub role: Role,
    /// Segments seen (retransmissions included).
    pub packets: u64,
    /// Bytes handed out in stream order.
    pub bytes: u64,
    /// Bytes that never arrived (holes skipped).
    pub missing_bytes: u64,
    /// How it ended.
    pub end: End,
}

/// What a segment (or the end of the capture) did to the flow table.
#[derive(Debug, PartialEq, Eq)]
pub enum FlowEvent {
    /// A new direction: a new stream.
    Opened(Uuid),
    /// Bytes of a direction, in stream order, following the previous ones.
    Data(Uuid, Vec<u8>),
    /// A direction ended; no more events for its stream.
    Ended(FlowSummary),
}

/// One direction in the table.
#[derive(Debug)]
struct FlowState {
    stream: Uuid,
    role: Role,
    reuse: u32,
    packets: u64,
    bytes: u64,
    /// `None` once ended (the buffers are gone).
    reassembly: Option<Direction>,
}

/// Every direction seen so far.
#[derive(Debug)]
pub struct FlowTable {
    flows: HashMap<FlowKey, FlowState>,
    /// Keys of the open directions, in the order they opened (and of
    /// some ended ones, dropped lazily).
    order: Vec<FlowKey>,
    /// Directions open now.
    open: usize,
    max_pending: usize,
}

impl FlowTable {
    /// A table whose directions each buffer at most `max_pending` bytes
    /// behind a hole (see [`Direction::new`]).
    pub fn new(max_pending: usize) -> FlowTable {
        FlowTable {
            flows: HashMap::new(),
            order: Vec::new(),
            open: 0,
            max_pending,
        }
    }

    /// Directions open now.
    pub fn open_flows(&self) -> usize {
        self.open
    }

    /// Takes one segment; appends what happened to `events`.
    pub fn segment(&mut self, segment: TcpSegment, events: &mut Vec<FlowEvent>) {
        let key = segment.key;
        let (reuse, superseded) = match self.flows.get(&key) {
            Some(state) => match &state.reassembly {
                // A SYN that is not this connection's: the 4-tuple is
                // reused while the old direction looked open (its FIN or
                // RST was not captured).
                Some(r) if r.is_new_connection(segment.syn, segment.seq) => {
                    (Some(state.reuse + 1), true)
                }
                Some(_) => (None, false),
                None if segment.syn => (Some(state.reuse + 1), false),
                None => return, // a late segment of an ended direction
            },
            None => (Some(0), false),
        };
        if superseded {
            self.end(&key, false, events);
        }
        if let Some(reuse) = reuse {
            self.open(key, &segment, reuse, events);
        }
        let state = self.flows.get_mut(&key).expect("opened above");
        state.packets += 1;
        let Some(reassembly) = state.reassembly.as_mut() else {
            return;
        };
        let ready = reassembly.segment(
            segment.syn,
            segment.fin,
            segment.rst,
            segment.seq,
            &segment.payload,
        );
        hand_out(&mut state.bytes, state.stream, ready, events);
        if reassembly.end().is_some() {
            retire(&key, state, events);
            self.open -= 1;
        }
        if segment.rst {
            // A reset ends the connection: the other direction too.
            self.end(&key.reverse(), true, events);
        }
    }

    /// Ends every open direction (the capture is over), in the order they
    /// opened; bytes waiting behind holes are handed out first.
    pub fn finish(&mut self, events: &mut Vec<FlowEvent>) {
        for key in std::mem::take(&mut self.order) {
            self.end(&key, false, events);
        }
    }

    /// Ends a direction if it is open: by a reset of its connection, or
    /// because the capture ended (or a new connection took its 4-tuple).
    fn end(&mut self, key: &FlowKey, reset: bool, events: &mut Vec<FlowEvent>) {
        let Some(state) = self.flows.get_mut(key) else {
            return;
        };
        let Some(reassembly) = state.reassembly.as_mut() else {
            return;
        };
        let ready = match reset {
            true => reassembly.reset(),
            false => reassembly.finish(),
        };
        hand_out(&mut state.bytes, state.stream, ready, events);
        retire(key, state, events);
        self.open -= 1;
    }

    fn open(&mut self, key: FlowKey, first: &TcpSegment, reuse: u32, events: &mut Vec<FlowEvent>) {
        let role = match (first.syn, first.ack) {
            (true, false) => Role::Client,
            (true, true) => Role::Server,
            _ => Role::Unknown,
        };
        let stream = flow_uuid(&key, reuse);
        events.push(FlowEvent::Opened(stream));
        // Ended directions leave `order` lazily: drop them when it doubles.
        if self.order.len() >= 64 && self.order.len() > 2 * self.open {
            let flows = &self.flows;
            self.order
                .retain(|k| flows.get(k).is_some_and(|f| f.reassembly.is_some()));
        }
        self.order.push(key);
        let state = FlowState {
            stream,
            role,
            reuse,
            packets: 0,
            bytes: 0,
            reassembly: Some(Direction::new(self.max_pending)),
        };
        self.flows.insert(key, state);
        self.open += 1;
    }
}

/// Reports bytes of a direction now in order, if any.
/// (Counted in `bytes`; the caller may hold its reassembly borrowed.)
fn hand_out(bytes: &mut u64, stream: Uuid, ready: Vec<u8>, events: &mut Vec<FlowEvent>) {
    if !ready.is_empty() {
        *bytes += ready.len() as u64;
        events.push(FlowEvent::Data(stream, ready));
    }
}

/// Reports an ended direction and drops its buffers.
fn retire(key: &FlowKey, state: &mut FlowState, events: &mut Vec<FlowEvent>) {
    events.push(FlowEvent::Ended(summary(key, state)));
    state.reassembly = None;
}

fn summary(key: &FlowKey, state: &FlowState) -> FlowSummary {
    let reassembly = state.reassembly.as_ref();
    FlowSummary {
        stream: state.stream,
        src: key.src,
        dst: key.dst,
        role: state.role,
        packets: state.packets,
        bytes: state.bytes,
        missing_bytes: reassembly.map_or(0, Direction::missing_bytes),
        end: reassembly.and_then(Direction::end).unwrap_or(End::Open),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn segment(src: &str, dst: &str, seq: u32, flags: &str, payload: &[u8]) -> TcpSegment {
        TcpSegment {
            key: FlowKey {
                src: src.parse().unwrap(),
                dst: dst.parse().unwrap(),
            },
            seq,
            syn: flags.contains('S'),
            ack: flags.contains('A'),
            fin: flags.contains('F'),
            rst: flags.contains('R'),
            payload: payload.to_vec(),
        }
    }

    const C: &str = "10.0.0.1:40000";
    const S: &str = "10.0.0.2:80";

    #[test]
    fn a_connection_is_two_streams_with_roles_and_ends() {
        let mut table = FlowTable::new(1 << 16);
        let mut events = Vec::new();
        table.segment(segment(C, S, 100, "S", b""), &mut events);
        table.segment(segment(S, C, 500, "SA", b""), &mut events);
        table.segment(segment(C, S, 101, "A", b"GET /"), &mut events);
        table.segment(segment(S, C, 501, "AF", b"200 OK"), &mut events);
        table.finish(&mut events);
        let up = flow_uuid(&segment(C, S, 0, "", b"").key, 0);
        let down = flow_uuid(&segment(S, C, 0, "", b"").key, 0);
        assert_ne!(up, down);
        let ended: Vec<&FlowSummary> = events
            .iter()
            .filter_map(|e| match e {
                FlowEvent::Ended(summary) => Some(summary),
                _ => None,
            })
            .collect();
        assert_eq!(ended.len(), 2);
        assert_eq!(
            (ended[0].stream, ended[0].role, ended[0].end),
            (down, Role::Server, End::Fin)
        );
        assert_eq!(
            (ended[1].stream, ended[1].role, ended[1].end),
            (up, Role::Client, End::Open)
        );
        assert_eq!((ended[1].packets, ended[1].bytes), (2, 5));
        assert!(events.contains(&FlowEvent::Data(up, b"GET /".to_vec())));
        assert!(events.contains(&FlowEvent::Data(down, b"200 OK".to_vec())));
    }

    #[test]
    fn a_reused_four_tuple_is_a_new_stream_and_late_segments_are_dropped() {
        let mut table = FlowTable::new(1 << 16);
        let mut events = Vec::new();
        table.segment(segment(C, S, 1, "S", b""), &mut events);
        table.segment(segment(C, S, 2, "AR", b""), &mut events);
        table.segment(segment(C, S, 2, "A", b"late"), &mut events);
        table.segment(segment(C, S, 9000, "S", b""), &mut events);
        table.segment(segment(C, S, 9001, "A", b"again"), &mut events);
        let key = segment(C, S, 0, "", b"").key;
        let (first, second) = (flow_uuid(&key, 0), flow_uuid(&key, 1));
        assert_eq!(
            events,
            vec![
                FlowEvent::Opened(first),
                FlowEvent::Ended(FlowSummary {
                    stream: first,
                    src: key.src,
                    dst: key.dst,
                    role: Role::Client,
                    packets: 2,
                    bytes: 0,
                    missing_bytes: 0,
                    end: End::Rst,
                }),
                FlowEvent::Opened(second),
                FlowEvent::Data(second, b"again".to_vec()),
            ]
        );
        assert_eq!(table.open_flows(), 1);
    }

    #[test]
    fn a_reset_ends_both_directions() {
        let mut table = FlowTable::new(1 << 16);
        let mut events = Vec::new();
        table.segment(segment(C, S, 1, "S", b""), &mut events);
        table.segment(segment(S, C, 9, "SA", b""), &mut events);
        table.segment(segment(C, S, 2, "A", b"req"), &mut events);
        table.segment(segment(S, C, 10, "AR", b""), &mut events);
        let ends: Vec<(SocketAddr, End)> = events
            .iter()
            .filter_map(|e| match e {
                FlowEvent::Ended(s) => Some((s.src, s.end)),
                _ => None,
            })
            .collect();
        let (c, s): (SocketAddr, SocketAddr) = (C.parse().unwrap(), S.parse().unwrap());
        assert_eq!(ends, [(s, End::Rst), (c, End::Rst)]);
        assert_eq!(table.open_flows(), 0);
    }

    #[test]
    fn a_new_syn_on_an_open_direction_starts_a_new_stream() {
        // The first connection's FIN was never captured; the client port is
        // reused with a new initial sequence number.
        let mut table = FlowTable::new(1 << 16);
        let mut events = Vec::new();
        table.segment(segment(C, S, 100, "S", b""), &mut events);
        table.segment(segment(C, S, 101, "A", b"first"), &mut events);
        table.segment(segment(C, S, 100, "S", b""), &mut events); // a repeated SYN
        table.segment(segment(C, S, 5, "S", b""), &mut events);
        table.segment(segment(C, S, 6, "A", b"EVIL"), &mut events);
        let key = segment(C, S, 0, "", b"").key;
        let (first, second) = (flow_uuid(&key, 0), flow_uuid(&key, 1));
        assert!(events.contains(&FlowEvent::Data(first, b"first".to_vec())));
        assert!(events.contains(&FlowEvent::Data(second, b"EVIL".to_vec())));
        assert!(events
            .iter()
            .any(|e| matches!(e, FlowEvent::Ended(s) if s.stream == first)));
        assert_eq!(table.open_flows(), 1);
    }

    #[test]
    fn stream_ids_follow_the_documented_name() {
        let key = segment("[::1]:5000", "[::1]:80", 0, "", b"").key;
        let expected = Uuid::new_v5(&flow_namespace(), b"tcp [::1]:5000 > [::1]:80 #2");
        assert_eq!(flow_uuid(&key, 2), expected);
    }
}
