//! Reading a capture file, pcap or pcapng, as a sequence of TCP segments.
//!
//! `pcap-parser` does the file formats (both byte orders, pcapng sections
//! and interfaces); this module keeps what a frame needs to be decoded (the
//! link type of its interface) and turns the parser's errors into
//! [`CaptureError`]s that say where the file went wrong. The file is read
//! as it is parsed, through a buffer that grows only for a block larger
//! than it, so a capture larger than memory is fine.

use std::io::Read;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use pcap_parser::traits::PcapReaderIterator;
use pcap_parser::{Block, Linktype, PcapBlockOwned, PcapError};

use super::packet::{decode, Skip, TcpSegment};
use crate::error::CaptureError;

/// Initial size of the read buffer.
const BUFFER_BYTES: usize = 1 << 20;
/// Largest block accepted: a pcapng block can claim up to 4 GiB, no frame
/// is larger than 256 KiB, and a corrupt length must not make the reader
/// buffer the whole file.
const MAX_BLOCK_BYTES: usize = 16 << 20;

/// What one frame of the capture gave.
#[derive(Debug)]
pub enum Frame {
    /// A TCP segment.
    Segment(TcpSegment),
    /// A frame with no TCP segment, and why.
    Skipped(Skip),
}

/// A capture file read frame by frame.
pub struct CaptureReader {
    parser: Box<dyn PcapReaderIterator + Send>,
    /// Each interface of the current pcapng section (one entry for a legacy
    /// pcap file).
    links: Vec<Interface>,
    frames: u64,
    source: ReadSide,
}

/// What the parser's reader saw: bytes read (for progress) and the last
/// I/O error (the parser keeps only that one happened).
#[derive(Clone, Default)]
struct ReadSide {
    bytes: Arc<AtomicU64>,
    error: Arc<Mutex<Option<std::io::Error>>>,
}

/// The file, counting what it reads and keeping its errors.
struct CountingReader<R> {
    inner: R,
    side: ReadSide,
}

impl<R: Read> Read for CountingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self.inner.read(buf) {
            Ok(n) => {
                self.side.bytes.fetch_add(n as u64, Ordering::Relaxed);
                Ok(n)
            }
            Err(err) => {
                let copy = std::io::Error::new(err.kind(), err.to_string());
                *self.side.error.lock().unwrap_or_else(|e| e.into_inner()) = Some(copy);
                Err(err)
            }
        }
    }
}

impl CaptureReader {
    /// Starts reading a capture (pcap or pcapng, told by its first bytes).
    pub fn new(file: impl Read + Send + 'static) -> Result<CaptureReader, CaptureError> {
        let source = ReadSide::default();
        let reader = CountingReader {
            inner: file,
            side: source.clone(),
        };
        let parser = pcap_parser::create_reader(BUFFER_BYTES, reader).map_err(|err| match err {
            PcapError::Eof => CaptureError::Empty,
            PcapError::ReadError => CaptureError::Io(source.take_error()),
            _ => CaptureError::NotACapture,
        })?;
        Ok(CaptureReader {
            parser,
            links: Vec::new(),
            frames: 0,
            source,
        })
    }

    /// Bytes of the file read so far.
    pub fn bytes_read(&self) -> u64 {
        self.source.bytes.load(Ordering::Relaxed)
    }

    /// Frames read so far.
    pub fn frames(&self) -> u64 {
        self.frames
    }

    /// The next frame, or `None` at the end of the file.
    pub fn next_frame(&mut self) -> Result<Option<Frame>, CaptureError> {
        loop {
            let frame = match self.parser.next() {
                Ok((consumed, block)) => {
                    let frame = read_block(&mut self.links, block);
                    self.parser.consume(consumed);
                    frame.map_err(|interface| {
                        self.corrupt(&format!(
                            "a packet names interface {interface}, which its section never described"
                        ))
                    })?
                }
                Err(PcapError::Eof) => return Ok(None),
                Err(PcapError::Incomplete(_)) => {
                    self.refill()?;
                    continue;
                }
                Err(PcapError::BufferTooSmall) => {
                    self.grow()?;
                    continue;
                }
                Err(PcapError::UnexpectedEof) => {
                    return Err(self.corrupt("the file ends inside a block (truncated?)"))
                }
                Err(PcapError::ReadError) => {
                    return Err(CaptureError::Io(self.source.take_error()))
                }
                Err(_) => return Err(self.corrupt("a block does not parse")),
            };
            if let Some(frame) = frame {
                self.frames += 1;
                return Ok(Some(frame));
            }
        }
    }

    /// Reads more of the file, growing the buffer for a block larger than
    /// it.
    fn refill(&mut self) -> Result<(), CaptureError> {
        if self.parser.reader_exhausted() {
            return Err(self.corrupt("the file ends inside a block (truncated?)"));
        }
        let before = self.parser.data().len();
        self.parser
            .refill()
            .map_err(|_| CaptureError::Io(self.source.take_error()))?;
        if self.parser.data().len() == before && !self.parser.reader_exhausted() {
            // The buffer is full and still holds less than one block.
            self.grow()?;
        }
        Ok(())
    }

    /// Doubles the buffer, up to the largest block accepted.
    fn grow(&mut self) -> Result<(), CaptureError> {
        let size = (self.parser.data().len() * 2).max(2 * BUFFER_BYTES);
        if size > MAX_BLOCK_BYTES || !self.parser.grow(size) {
            return Err(self.corrupt("a block claims more than 16 MiB (corrupt?)"));
        }
        Ok(())
    }

    fn corrupt(&self, reason: &str) -> CaptureError {
        CaptureError::Corrupt {
            frame: self.frames + 1,
            offset: self.parser.consumed() as u64,
            reason: reason.to_string(),
        }
    }
}

impl ReadSide {
    fn take_error(&self) -> std::io::Error {
        let mut slot = self.error.lock().unwrap_or_else(|e| e.into_inner());
        slot.take()
            .unwrap_or_else(|| std::io::Error::other("the capture could not be read"))
    }
}

/// What decoding an interface's frames needs: its link type and how its
/// timestamps count.
#[derive(Debug, Clone, Copy)]
struct Interface {
    link: Linktype,
    /// Timestamp units per second.
    resolution: u64,
    /// Seconds added to every timestamp (pcapng `if_tsoffset`).
    offset: i64,
}

impl Interface {
    /// The capture time of a timestamp in this interface's units.
    fn time(&self, units: u64) -> Duration {
        let resolution = self.resolution.max(1);
        let since = Duration::from_secs(units / resolution)
            + Duration::from_nanos(
                ((units % resolution) as u128 * 1_000_000_000 / resolution as u128) as u64,
            );
        match self.offset {
            0 => since,
            o if o > 0 => since.saturating_add(Duration::from_secs(o as u64)),
            o => since.saturating_sub(Duration::from_secs(o.unsigned_abs())),
        }
    }
}

/// Reads one block: a frame, or a header that says how to decode frames.
/// Fails with the number of an interface never described.
fn read_block(links: &mut Vec<Interface>, block: PcapBlockOwned<'_>) -> Result<Option<Frame>, u32> {
    let (interface, data, time) = match block {
        PcapBlockOwned::LegacyHeader(header) => {
            let resolution = match header.is_nanosecond_precision() {
                true => 1_000_000_000,
                false => 1_000_000,
            };
            *links = vec![Interface {
                link: header.network,
                resolution,
                offset: 0,
            }];
            return Ok(None);
        }
        PcapBlockOwned::Legacy(packet) => {
            let interface = first_link(links)?;
            let units = packet.ts_sec as u64 * interface.resolution + packet.ts_usec as u64;
            (interface, packet.data, Some(interface.time(units)))
        }
        PcapBlockOwned::NG(Block::SectionHeader(_)) => {
            links.clear(); // interface numbers start again in a new section
            return Ok(None);
        }
        PcapBlockOwned::NG(Block::InterfaceDescription(interface)) => {
            links.push(Interface {
                link: interface.linktype,
                resolution: interface.ts_resolution().unwrap_or(1_000_000),
                offset: interface.ts_offset(),
            });
            return Ok(None);
        }
        PcapBlockOwned::NG(Block::EnhancedPacket(packet)) => {
            let interface = links
                .get(packet.if_id as usize)
                .copied()
                .ok_or(packet.if_id)?;
            let units = (packet.ts_high as u64) << 32 | packet.ts_low as u64;
            let data = captured(packet.data, packet.caplen);
            (interface, data, Some(interface.time(units)))
        }
        PcapBlockOwned::NG(Block::SimplePacket(packet)) => (
            first_link(links)?,
            captured(packet.data, packet.origlen),
            None,
        ),
        PcapBlockOwned::NG(_) => return Ok(None), // statistics, names, ...
    };
    Ok(Some(match decode(interface.link, data) {
        Ok(segment) => Frame::Segment(TcpSegment { time, ..segment }),
        Err(skip) => Frame::Skipped(skip),
    }))
}

/// A pcapng packet's bytes without the block's padding.
fn captured(data: &[u8], length: u32) -> &[u8] {
    &data[..(length as usize).min(data.len())]
}

fn first_link(links: &[Interface]) -> Result<Interface, u32> {
    links.first().copied().ok_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A legacy pcap header (little-endian, Ethernet) and records.
    fn legacy(records: &[(u32, &[u8])]) -> Vec<u8> {
        let mut file = Vec::new();
        for word in [0xa1b2_c3d4u32, 0x0004_0002, 0, 0, 65535, 1] {
            file.extend_from_slice(&word.to_le_bytes());
        }
        for (caplen, data) in records {
            for word in [0u32, 0, *caplen, *caplen] {
                file.extend_from_slice(&word.to_le_bytes());
            }
            file.extend_from_slice(data);
        }
        file
    }

    fn read_all(file: Vec<u8>) -> Result<u64, CaptureError> {
        let mut reader = CaptureReader::new(std::io::Cursor::new(file))?;
        while reader.next_frame()?.is_some() {}
        Ok(reader.frames())
    }

    fn message(result: Result<u64, CaptureError>) -> String {
        result.expect_err("an error").to_string()
    }

    #[test]
    fn frames_are_read_and_undecodable_ones_skipped() {
        let file = legacy(&[(4, b"abcd"), (3, b"xyz")]);
        assert_eq!(read_all(file).unwrap(), 2);
    }

    #[test]
    fn a_truncated_record_says_so_with_its_place() {
        let mut file = legacy(&[(4, b"abcd"), (100, b"")]);
        file.extend_from_slice(&[0; 10]);
        let text = message(read_all(file));
        assert!(text.contains("corrupt capture at frame 2"), "{text}");
        assert!(text.contains("truncated"), "{text}");
    }

    #[test]
    fn a_record_claiming_gigabytes_is_refused_not_buffered() {
        let mut file = legacy(&[(0x7fff_ffff, b"")]);
        file.extend_from_slice(&vec![0; 3 << 20]);
        let text = message(read_all(file));
        assert!(text.contains("corrupt capture at frame 1"), "{text}");
    }

    #[test]
    fn a_packet_of_an_undescribed_interface_is_corrupt() {
        let mut file = Vec::new();
        // Section header block, little-endian, no options.
        for word in [
            0x0a0d_0d0au32,
            28,
            0x1a2b_3c4d,
            1,
            0xffff_ffff,
            0xffff_ffff,
            28,
        ] {
            file.extend_from_slice(&word.to_le_bytes());
        }
        // An enhanced packet block on interface 3 (never described).
        for word in [6u32, 36, 3, 0, 0, 4, 4] {
            file.extend_from_slice(&word.to_le_bytes());
        }
        file.extend_from_slice(b"abcd");
        file.extend_from_slice(&36u32.to_le_bytes());
        let text = message(read_all(file));
        assert!(text.contains("interface 3"), "{text}");
        assert!(text.contains("at frame 1"), "{text}");
    }

    #[test]
    fn garbage_and_empty_files_are_named() {
        assert!(matches!(
            CaptureReader::new(std::io::Cursor::new(b"GET / HTTP/1.1\r\n".to_vec())),
            Err(CaptureError::NotACapture)
        ));
        assert!(matches!(
            CaptureReader::new(std::io::Cursor::new(Vec::new())),
            Err(CaptureError::Empty)
        ));
    }
}
