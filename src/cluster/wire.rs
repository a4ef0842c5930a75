//! The wire format of a message on a partition's subject: tiny, documented
//! and symmetric ([`Message::encode`], [`Message::parse`]).
//!
//! ```text
//! 0..4    magic "YFM1"
//! 4       kind: 1 chunk, 2 line, 3 close
//! 5..21   stream id (16 bytes, big-endian UUID)
//! 21..    data (a chunk or a line; empty for a close)
//! ```
//!
//! Everything a worker needs is in the payload, so a message can be
//! checked alone, and a message that does not decode is counted and
//! skipped, never applied in part.

use bytes::Bytes;
use uuid::Uuid;

use super::error::ClusterError;

const MAGIC: &[u8; 4] = b"YFM1";
/// Bytes of a message before its data.
pub const HEADER_LEN: usize = 21;

/// What a message does to its stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessageKind {
    /// Appends a chunk to a chunk stream (opening it).
    Chunk,
    /// Appends a line to a line stream (opening it).
    Line,
    /// Closes the stream: its verdict is published.
    Close,
}

impl MessageKind {
    fn code(self) -> u8 {
        match self {
            MessageKind::Chunk => 1,
            MessageKind::Line => 2,
            MessageKind::Close => 3,
        }
    }

    fn from_code(code: u8) -> Option<MessageKind> {
        match code {
            1 => Some(MessageKind::Chunk),
            2 => Some(MessageKind::Line),
            3 => Some(MessageKind::Close),
            _ => None,
        }
    }
}

/// One message of a stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// What it does.
    pub kind: MessageKind,
    /// The stream it is for.
    pub stream: Uuid,
    /// Its data (empty for a close).
    pub data: Bytes,
}

impl Message {
    /// The payload of this message.
    pub fn encode(&self) -> Bytes {
        let mut out = Vec::with_capacity(HEADER_LEN + self.data.len());
        out.extend_from_slice(MAGIC);
        out.push(self.kind.code());
        out.extend_from_slice(self.stream.as_bytes());
        out.extend_from_slice(&self.data);
        out.into()
    }

    /// Decodes a payload (the data is shared, not copied).
    pub fn parse(payload: &Bytes) -> Result<Message, ClusterError> {
        let bad = |why: String| Err(ClusterError::BadMessage(why));
        if payload.len() < HEADER_LEN {
            return bad(format!(
                "{} bytes, shorter than the {HEADER_LEN}-byte header",
                payload.len()
            ));
        }
        if &payload[..4] != MAGIC {
            return bad("not a yaraflow message (bad magic)".into());
        }
        let Some(kind) = MessageKind::from_code(payload[4]) else {
            return bad(format!("unknown kind {}", payload[4]));
        };
        let stream = Uuid::from_slice(&payload[5..HEADER_LEN]).expect("16 bytes");
        let data = payload.slice(HEADER_LEN..);
        if kind == MessageKind::Close && !data.is_empty() {
            return bad(format!("a close of stream {stream} carries data"));
        }
        Ok(Message { kind, stream, data })
    }
}

/// The `Nats-Msg-Id` of the verdict of `stream` closed by the message at
/// JetStream sequence `close_sequence`: the same on every replay of that
/// close, different for a later stream reusing the id.
pub fn verdict_id(stream: &Uuid, close_sequence: u64) -> String {
    format!("{stream}:{close_sequence}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(kind: MessageKind, data: &'static [u8]) -> Message {
        Message {
            kind,
            stream: Uuid::from_u128(0xfeed),
            data: Bytes::from_static(data),
        }
    }

    #[test]
    fn every_kind_round_trips() {
        for message in [
            sample(MessageKind::Chunk, b"GET / HTTP/1.1\r\n"),
            sample(MessageKind::Line, b"a line\n"),
            sample(MessageKind::Chunk, b""),
            sample(MessageKind::Close, b""),
        ] {
            assert_eq!(Message::parse(&message.encode()).unwrap(), message);
        }
    }

    #[test]
    fn garbage_is_an_error_never_a_panic() {
        let good = sample(MessageKind::Chunk, b"data").encode();
        for len in 0..HEADER_LEN {
            assert!(Message::parse(&good.slice(..len)).is_err(), "{len}");
        }
        let mut kind = good.to_vec();
        kind[4] = 9;
        let err = Message::parse(&kind.into()).unwrap_err().to_string();
        assert!(err.contains("unknown kind 9"), "{err}");
        let err = Message::parse(&Bytes::from_static(b"hello world, not ours!"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("bad magic"), "{err}");
        let mut close = sample(MessageKind::Close, b"").encode().to_vec();
        close.push(b'x');
        assert!(Message::parse(&close.into()).is_err());
    }

    #[test]
    fn a_verdict_id_names_the_stream_and_its_close() {
        let stream = Uuid::from_u128(1);
        assert_eq!(verdict_id(&stream, 7), verdict_id(&stream, 7));
        assert_ne!(verdict_id(&stream, 7), verdict_id(&stream, 8));
    }
}
