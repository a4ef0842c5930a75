//! An object's bytes as a file: undoing `Content-Encoding` (`gzip`,
//! `deflate`) as the body arrives, with a cap on the decoded size.
//!
//! The decoder writes into a [`CappedSink`] that refuses bytes past the
//! cap, so a gzip bomb stops decoding at the cap instead of inflating in
//! memory or in time: the refusal stops `flate2`'s writer mid-stream.
//! Encodings yaraflow does not decode (`br`, `zstd`, `compress`) pass
//! through as they are, and the object says which encoding its bytes are
//! in.

use std::io::{self, Write};

use flate2::write::{DeflateDecoder, GzDecoder, ZlibDecoder};

/// Why an object's bytes stopped short of its end.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Cut {
    /// Its decoded size reached the cap ([`super::ObjectLimits`]).
    SizeCap,
    /// Its flow ended (or was cut) before the object did.
    FlowEnded,
    /// Its bytes could not be decoded or framed past this point.
    Malformed,
}

/// Collects decoded bytes up to a cap; past it, a write fails.
#[derive(Debug)]
pub struct CappedSink {
    bytes: Vec<u8>,
    room: u64,
    full: bool,
}

impl Write for CappedSink {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if buf.len() as u64 > self.room {
            self.full = true;
            let room = self.room as usize;
            self.bytes.extend_from_slice(&buf[..room]);
            self.room = 0;
            return Err(io::Error::other("the decoded size cap"));
        }
        self.room -= buf.len() as u64;
        self.bytes.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// How an object's body is decoded.
enum Codec {
    Identity,
    Gzip(GzDecoder<CappedSink>),
    Zlib(ZlibDecoder<CappedSink>),
    RawDeflate(DeflateDecoder<CappedSink>),
    /// `deflate` before its first byte tells zlib from raw deflate.
    DeflateUndecided,
}

/// Decodes one object's body as it arrives.
pub struct BodyDecoder {
    codec: Codec,
    sink: Option<CappedSink>,
    /// The decoder stopped (cap, corrupt data, or end); later bytes are
    /// dropped.
    stopped: Option<Cut>,
    error: Option<String>,
}

/// Whether yaraflow decodes this `Content-Encoding` value.
pub fn decodes(encoding: &str) -> bool {
    matches!(
        encoding.trim().to_ascii_lowercase().as_str(),
        "gzip" | "x-gzip" | "deflate" | "identity" | ""
    )
}

impl BodyDecoder {
    /// A decoder for `encoding` (a `Content-Encoding` value, `None` for
    /// none) that keeps at most `cap` decoded bytes.
    pub fn new(encoding: Option<&str>, cap: u64) -> BodyDecoder {
        let sink = CappedSink {
            bytes: Vec::new(),
            room: cap,
            full: false,
        };
        let encoding = encoding.map(|e| e.trim().to_ascii_lowercase());
        let (codec, sink) = match encoding.as_deref() {
            Some("gzip" | "x-gzip") => (Codec::Gzip(GzDecoder::new(sink)), None),
            Some("deflate") => (Codec::DeflateUndecided, Some(sink)),
            _ => (Codec::Identity, Some(sink)),
        };
        BodyDecoder {
            codec,
            sink,
            stopped: None,
            error: None,
        }
    }

    /// Decodes `input` and returns the decoded bytes so far (taken).
    pub fn push(&mut self, input: &[u8]) -> Vec<u8> {
        if self.stopped.is_none() && !input.is_empty() {
            if let Codec::DeflateUndecided = self.codec {
                self.decide_deflate(input[0]);
            }
            let written = match &mut self.codec {
                Codec::Identity => self.sink.as_mut().map(|s| s.write_all(input)),
                Codec::Gzip(d) => Some(d.write_all(input)),
                Codec::Zlib(d) => Some(d.write_all(input)),
                Codec::RawDeflate(d) => Some(d.write_all(input)),
                Codec::DeflateUndecided => None,
            };
            if let Some(Err(err)) = written {
                self.stop(err);
            }
        }
        self.take()
    }

    /// The body ended: flushes the decoder, returns the last bytes.
    pub fn finish(&mut self) -> Vec<u8> {
        if self.stopped.is_none() {
            let finished = match &mut self.codec {
                Codec::Gzip(d) => d.try_finish(),
                Codec::Zlib(d) => d.try_finish(),
                Codec::RawDeflate(d) => d.try_finish(),
                Codec::Identity | Codec::DeflateUndecided => Ok(()),
            };
            if let Err(err) = finished {
                self.stop(err);
            }
        }
        self.take()
    }

    /// Why the decoded bytes stop short, if they do.
    pub fn cut(&self) -> Option<Cut> {
        self.stopped
    }

    /// What went wrong while decoding, if anything did.
    pub fn error(&self) -> Option<&str> {
        self.error.as_deref()
    }

    /// HTTP's `deflate` is zlib, but some servers send raw deflate: a
    /// zlib stream starts with a CMF byte whose low nibble is 8.
    fn decide_deflate(&mut self, first: u8) {
        let sink = self
            .sink
            .take()
            .expect("an undecided deflate keeps its sink");
        self.codec = match first & 0x0f == 8 {
            true => Codec::Zlib(ZlibDecoder::new(sink)),
            false => Codec::RawDeflate(DeflateDecoder::new(sink)),
        };
    }

    fn stop(&mut self, err: io::Error) {
        if self.sink_mut().full {
            self.stopped = Some(Cut::SizeCap);
        } else {
            self.stopped = Some(Cut::Malformed);
            self.error = Some(format!("its content encoding does not decode: {err}"));
        }
    }

    fn sink_mut(&mut self) -> &mut CappedSink {
        match &mut self.codec {
            Codec::Gzip(d) => d.get_mut(),
            Codec::Zlib(d) => d.get_mut(),
            Codec::RawDeflate(d) => d.get_mut(),
            Codec::Identity | Codec::DeflateUndecided => {
                self.sink.as_mut().expect("identity keeps its sink")
            }
        }
    }

    fn take(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.sink_mut().bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flate2::write::GzEncoder;
    use flate2::Compression;

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut encoder = GzEncoder::new(Vec::new(), Compression::default());
        encoder.write_all(data).unwrap();
        encoder.finish().unwrap()
    }

    fn decode_in_pieces(encoding: Option<&str>, body: &[u8], cap: u64) -> (Vec<u8>, BodyDecoder) {
        let mut decoder = BodyDecoder::new(encoding, cap);
        let mut out = Vec::new();
        for piece in body.chunks(7) {
            out.extend(decoder.push(piece));
        }
        out.extend(decoder.finish());
        (out, decoder)
    }

    #[test]
    fn gzip_decodes_in_pieces() {
        let data = b"MZ this program cannot be run in DOS mode ".repeat(100);
        let (out, decoder) = decode_in_pieces(Some("gzip"), &gzip(&data), 1 << 20);
        assert_eq!(out, data);
        assert_eq!((decoder.cut(), decoder.error()), (None, None));
    }

    #[test]
    fn deflate_is_zlib_or_raw() {
        let data = b"deflated body".repeat(50);
        let mut zlib = flate2::write::ZlibEncoder::new(Vec::new(), Compression::default());
        zlib.write_all(&data).unwrap();
        let mut raw = flate2::write::DeflateEncoder::new(Vec::new(), Compression::default());
        raw.write_all(&data).unwrap();
        for body in [zlib.finish().unwrap(), raw.finish().unwrap()] {
            assert_eq!(decode_in_pieces(Some("deflate"), &body, 1 << 20).0, data);
        }
    }

    #[test]
    fn a_gzip_bomb_stops_at_the_cap() {
        let bomb = gzip(&vec![0u8; 64 << 20]);
        assert!(bomb.len() < 100 << 10);
        let (out, decoder) = decode_in_pieces(Some("gzip"), &bomb, 1 << 20);
        assert_eq!(out.len(), 1 << 20);
        assert_eq!(decoder.cut(), Some(Cut::SizeCap));
    }

    #[test]
    fn corrupt_gzip_is_an_error() {
        let data = b"abcdefgh".repeat(1000);
        let mut body = gzip(&data);
        let len = body.len();
        body[len / 2..].iter_mut().for_each(|b| *b = !*b);
        let (out, decoder) = decode_in_pieces(Some("gzip"), &body, 1 << 20);
        assert_ne!(out, data);
        assert_eq!(decoder.cut(), Some(Cut::Malformed));
        assert!(decoder.error().unwrap().contains("does not decode"));
    }

    #[test]
    fn unknown_encodings_pass_through_capped() {
        let (out, decoder) = decode_in_pieces(Some("br"), b"0123456789", 4);
        assert_eq!(out, b"0123");
        assert_eq!(decoder.cut(), Some(Cut::SizeCap));
        assert!(!decodes("br") && decodes("GZIP"));
    }
}
