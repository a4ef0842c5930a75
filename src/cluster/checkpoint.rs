//! The checkpoint of one partition: what a new owner needs to go on
//! exactly where the former one was.
//!
//! ```text
//! 0..4    magic "YFCP"
//! 4..6    format version, u16 LE
//! 6..14   checksum: the first 8 bytes of BLAKE3 over bytes 14..
//! 14..22  last JetStream sequence applied, u64 LE
//! 22..30  rules tag (a prefix of the rules' fingerprint)
//! 30..    postcard body: owner, failed streams, stream entries, and
//!         the sequence of each open stream's first message (version 2)
//! ```
//!
//! Version 1 (no first sequences) is still read: its streams count as
//! opened at the checkpoint's sequence, which only names their match
//! events (see `worker/events.rs`).
//!
//! Each open stream's context is one entry of the stream store's format
//! (`store/codec.rs`, versioned and checksummed itself), so a context
//! moves between workers exactly as it moves between memory and disk. The
//! rules tag ties the checkpoint to the rules it was made with: a worker
//! with other rules refuses the partition rather than misread it.

use uuid::Uuid;

use crate::store::codec::{self, Frame, RulesTag};
use crate::stream::StreamContext;

const HEADER_LEN: usize = 30;

/// The frame of a checkpoint (the stream store's, with its own magic).
const FRAME: Frame = Frame {
    magic: b"YFCP",
    version: 2,
    header_len: HEADER_LEN,
    what: "a yaraflow checkpoint",
};

/// The frame of the first version, still read.
const FRAME_V1: Frame = Frame {
    version: 1,
    ..FRAME
};

/// The state of a partition as of a JetStream sequence.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Checkpoint {
    /// The last sequence of the input stream applied (0: none).
    pub applied: u64,
    /// The worker that wrote it.
    pub owner: String,
    /// The rules the contexts were made with.
    pub rules: RulesTag,
    /// The open streams' contexts.
    pub streams: Vec<StreamContext>,
    /// Streams that failed (a chunk refused, a mode mismatch), with why:
    /// their close publishes the error rather than a partial verdict.
    pub failed: Vec<(Uuid, String)>,
    /// The JetStream sequence of each open stream's first message.
    pub opened: Vec<(Uuid, u64)>,
}

#[derive(serde::Serialize, serde::Deserialize)]
struct Body {
    owner: String,
    failed: Vec<(Uuid, String)>,
    entries: Vec<(Uuid, Vec<u8>)>,
    opened: Vec<(Uuid, u64)>,
}

/// The body of version 1.
#[derive(serde::Deserialize)]
struct BodyV1 {
    owner: String,
    failed: Vec<(Uuid, String)>,
    entries: Vec<(Uuid, Vec<u8>)>,
}

impl Checkpoint {
    /// The bytes of this checkpoint.
    pub fn encode(&self) -> Vec<u8> {
        let entries = self
            .streams
            .iter()
            .map(|context| {
                let mut entry = Vec::new();
                codec::encode(context, self.rules, &mut entry);
                (context.id, entry)
            })
            .collect();
        let body = Body {
            owner: self.owner.clone(),
            failed: self.failed.clone(),
            entries,
            opened: self.opened.clone(),
        };
        let mut out = Vec::new();
        FRAME.start(&mut out);
        out.extend_from_slice(&self.applied.to_le_bytes());
        out.extend_from_slice(&self.rules);
        // Writing into a Vec cannot fail, and every field serializes.
        out.extend_from_slice(&postcard::to_stdvec(&body).expect("a checkpoint serializes"));
        Frame::seal(&mut out);
        out
    }

    /// Decodes and checks a checkpoint (each stream entry too).
    pub fn decode(bytes: &[u8]) -> Result<Checkpoint, String> {
        let first_version = bytes.get(4..6) == Some(&FRAME_V1.version.to_le_bytes()[..]);
        match first_version {
            true => FRAME_V1.check(bytes)?,
            false => FRAME.check(bytes)?,
        }
        let applied = u64::from_le_bytes(bytes[14..22].try_into().expect("8 bytes"));
        let rules: RulesTag = bytes[22..30].try_into().expect("8 bytes");
        let body = bytes[HEADER_LEN..].as_ref();
        let undecodable = |e: postcard::Error| format!("does not decode: {e}");
        let body: Body = match first_version {
            true => {
                let v1: BodyV1 = postcard::from_bytes(body).map_err(undecodable)?;
                let opened = v1.entries.iter().map(|(s, _)| (*s, applied)).collect();
                Body {
                    owner: v1.owner,
                    failed: v1.failed,
                    entries: v1.entries,
                    opened,
                }
            }
            false => postcard::from_bytes(body).map_err(undecodable)?,
        };
        let mut streams = Vec::with_capacity(body.entries.len());
        for (stream, entry) in &body.entries {
            let (context, tag) = codec::decode(*stream, entry)?;
            if tag != rules {
                return Err(format!("stream {stream} was made with other rules"));
            }
            streams.push(context);
        }
        Ok(Checkpoint {
            applied,
            owner: body.owner,
            rules,
            streams,
            failed: body.failed,
            opened: body.opened,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stream::{HeadKeep, Retention, StreamMode};

    fn sample() -> Checkpoint {
        let mut context =
            StreamContext::new(Uuid::from_u128(9), StreamMode::Chunks, 1, Retention::Off);
        context.record(
            b"some bytes",
            &Default::default(),
            &HeadKeep::first(2),
            1_700_000_000_000,
        );
        Checkpoint {
            applied: 1234,
            owner: "worker-a".into(),
            rules: *b"rulesTag",
            streams: vec![context],
            failed: vec![(Uuid::from_u128(3), "chunk too large".into())],
            opened: vec![(Uuid::from_u128(9), 1200)],
        }
    }

    #[test]
    fn a_checkpoint_round_trips() {
        let checkpoint = sample();
        assert_eq!(
            Checkpoint::decode(&checkpoint.encode()).unwrap(),
            checkpoint
        );
        let empty = Checkpoint::default();
        assert_eq!(Checkpoint::decode(&empty.encode()).unwrap(), empty);
    }

    /// A checkpoint of the first version (no first sequences), as its
    /// build wrote it.
    fn version_1(checkpoint: &Checkpoint) -> Vec<u8> {
        #[derive(serde::Serialize)]
        struct BodyV1<'c> {
            owner: &'c str,
            failed: &'c [(Uuid, String)],
            entries: Vec<(Uuid, Vec<u8>)>,
        }
        let entries = checkpoint
            .streams
            .iter()
            .map(|context| {
                let mut entry = Vec::new();
                codec::encode(context, checkpoint.rules, &mut entry);
                (context.id, entry)
            })
            .collect();
        let body = BodyV1 {
            owner: &checkpoint.owner,
            failed: &checkpoint.failed,
            entries,
        };
        let mut out = Vec::new();
        FRAME_V1.start(&mut out);
        out.extend_from_slice(&checkpoint.applied.to_le_bytes());
        out.extend_from_slice(&checkpoint.rules);
        out.extend_from_slice(&postcard::to_stdvec(&body).unwrap());
        Frame::seal(&mut out);
        out
    }

    #[test]
    fn a_first_version_checkpoint_is_read() {
        let checkpoint = sample();
        let read = Checkpoint::decode(&version_1(&checkpoint)).unwrap();
        assert_eq!(read.opened, vec![(Uuid::from_u128(9), checkpoint.applied)]);
        assert_eq!(
            read,
            Checkpoint {
                opened: read.opened.clone(),
                ..checkpoint
            }
        );
    }

    #[test]
    fn damage_and_truncation_are_caught() {
        let good = sample().encode();
        for at in 0..good.len() {
            let mut bad = good.clone();
            bad[at] ^= 0x21;
            assert!(Checkpoint::decode(&bad).is_err(), "flip at {at}");
        }
        for len in 0..good.len() {
            assert!(Checkpoint::decode(&good[..len]).is_err(), "length {len}");
        }
    }
}
