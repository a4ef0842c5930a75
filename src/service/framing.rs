//! The binary framing of `POST /v1/chunks`: many streams' chunks in one
//! request, for high-rate producers.
//!
//! A body is a sequence of frames, each `uuid (16 bytes) | length (u32,
//! big-endian) | length bytes`. Chunks are sliced out of the request body
//! without a copy. A body that does not end on a frame boundary is refused
//! whole, naming the offset of the broken frame.

use bytes::Bytes;
use uuid::Uuid;

/// Bytes before each chunk: the stream id and the length.
pub const HEADER_LEN: usize = 16 + 4;

/// Why a body is not a sequence of frames.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// The body ends inside a frame header.
    #[error("frame at byte {offset}: the body ends inside its 20-byte header")]
    TruncatedHeader {
        /// Offset of the frame in the body.
        offset: usize,
    },
    /// The body ends inside a frame's chunk.
    #[error(
        "frame at byte {offset}: its header announces {announced} bytes but only {left} follow"
    )]
    TruncatedChunk {
        /// Offset of the frame in the body.
        offset: usize,
        /// The length in the header.
        announced: usize,
        /// Bytes left in the body.
        left: usize,
    },
}

/// Splits a body into `(stream, chunk)` pairs.
pub fn parse(body: &Bytes) -> Result<Vec<(Uuid, Bytes)>, FrameError> {
    let mut frames = Vec::new();
    let mut offset = 0;
    while offset < body.len() {
        let header = body
            .get(offset..offset + HEADER_LEN)
            .ok_or(FrameError::TruncatedHeader { offset })?;
        let id = Uuid::from_slice(&header[..16]).expect("16 bytes make a UUID");
        let announced = u32::from_be_bytes(header[16..].try_into().expect("4 bytes")) as usize;
        let start = offset + HEADER_LEN;
        let left = body.len() - start;
        if announced > left {
            return Err(FrameError::TruncatedChunk {
                offset,
                announced,
                left,
            });
        }
        frames.push((id, body.slice(start..start + announced)));
        offset = start + announced;
    }
    Ok(frames)
}

/// Encodes frames (for clients and tests).
pub fn encode<'a>(frames: impl IntoIterator<Item = (Uuid, &'a [u8])>) -> Vec<u8> {
    let mut body = Vec::new();
    for (id, chunk) in frames {
        body.extend_from_slice(id.as_bytes());
        body.extend_from_slice(&(chunk.len() as u32).to_be_bytes());
        body.extend_from_slice(chunk);
    }
    body
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip() {
        let (a, b) = (Uuid::from_u128(1), Uuid::from_u128(2));
        let body = Bytes::from(encode([(a, &b"one"[..]), (b, b""), (a, b"two")]));
        let frames = parse(&body).unwrap();
        assert_eq!(frames.len(), 3);
        assert_eq!(frames[0], (a, Bytes::from_static(b"one")));
        assert_eq!(frames[1], (b, Bytes::new()));
        assert_eq!(frames[2], (a, Bytes::from_static(b"two")));
        assert_eq!(parse(&Bytes::new()).unwrap(), vec![]);
    }

    #[test]
    fn broken_bodies_name_the_broken_frame() {
        let a = Uuid::from_u128(1);
        let body = encode([(a, &b"one"[..]), (a, b"two")]);
        let cut = Bytes::copy_from_slice(&body[..body.len() - 1]);
        assert_eq!(
            parse(&cut),
            Err(FrameError::TruncatedChunk {
                offset: 23,
                announced: 3,
                left: 2
            })
        );
        let cut = Bytes::copy_from_slice(&body[..30]);
        assert_eq!(parse(&cut), Err(FrameError::TruncatedHeader { offset: 23 }));
    }
}
