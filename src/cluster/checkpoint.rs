//! The checkpoint of one partition: what a new owner needs to go on
//! exactly where the former one was.
//!
//! ```text
//! 0..4    magic "YFCP"
//! 4..6    format version, u16 LE
//! 6..14   checksum: the first 8 bytes of BLAKE3 over bytes 14..
//! 14..22  last JetStream sequence applied, u64 LE
//! 22..30  rules tag (a prefix of the rules' fingerprint)
//! 30..    postcard body: owner, failed streams, stream entries
//! ```
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
    version: 1,
    header_len: HEADER_LEN,
    what: "a yaraflow checkpoint",
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
}

#[derive(serde::Serialize, serde::Deserialize)]
struct Body {
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
        FRAME.check(bytes)?;
        let applied = u64::from_le_bytes(bytes[14..22].try_into().expect("8 bytes"));
        let rules: RulesTag = bytes[22..30].try_into().expect("8 bytes");
        let body: Body = postcard::from_bytes(&bytes[HEADER_LEN..])
            .map_err(|e| format!("does not decode: {e}"))?;
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
        context.record(b"some bytes", &Default::default(), &HeadKeep::first(2));
        Checkpoint {
            applied: 1234,
            owner: "worker-a".into(),
            rules: *b"rulesTag",
            streams: vec![context],
            failed: vec![(Uuid::from_u128(3), "chunk too large".into())],
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
