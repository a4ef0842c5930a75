//! The serialized form of a [`StreamContext`]: versioned and checksummed.
//!
//! An entry is a fixed header followed by the context in `postcard` (a
//! compact serde format):
//!
//! ```text
//! 0..4    magic "YFSC"
//! 4..6    format version, u16 little-endian (FORMAT_VERSION)
//! 6..14   checksum: the first 8 bytes of BLAKE3 over bytes 14..
//! 14..22  stats.bytes, u64 LE         } readable without decoding the
//! 22..30  stats.last_seen_ms, u64 LE  } body, for the index built at
//! 30..38  rules fingerprint (prefix)  } start
//! 38..    postcard body
//! ```
//!
//! The rules fingerprint ([`crate::RuleSet::fingerprint`]) ties each
//! context to the rules it was made with: its tail length, head and
//! replay spans depend on them, so it must never be restored under others.
//!
//! The checksum makes a damaged entry an error rather than a context that
//! decodes into wrong values: a stream whose entry is damaged is reported
//! as such, and no other stream is affected. The version is bumped
//! whenever the meaning of a context changes; an entry of another version
//! is refused, never guessed at.

use uuid::Uuid;

use crate::stream::StreamContext;

/// The version of the entry layout and of the context it holds.
pub const FORMAT_VERSION: u16 = 7;

const MAGIC: &[u8; 4] = b"YFSC";
const HEADER_LEN: usize = 38;

/// The prefix of a rules fingerprint kept in each entry.
pub type RulesTag = [u8; 8];

/// The tag of a rule set's fingerprint.
pub fn rules_tag(fingerprint: &[u8; 32]) -> RulesTag {
    fingerprint[..8].try_into().expect("8 bytes")
}

/// What an entry's header says about its stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EntryHeader {
    /// The stream's offset (`stats.bytes`) when it was written.
    pub bytes: u64,
    /// When the stream last received data, in milliseconds since the epoch.
    pub last_seen_ms: u64,
    /// The rules the context was made with.
    pub rules: RulesTag,
}

/// Appends the entry of `context`, made with the rules tagged `rules`, to
/// `out`.
pub fn encode(context: &StreamContext, rules: RulesTag, out: &mut Vec<u8>) {
    let start = out.len();
    ENTRY.start(out);
    out.extend_from_slice(&context.stats.bytes.to_le_bytes());
    out.extend_from_slice(&context.stats.last_seen_ms.to_le_bytes());
    out.extend_from_slice(&rules);
    // Writing into a Vec cannot fail, and every field serializes.
    let body = postcard::to_extend(context, Vec::new()).expect("a stream context serializes");
    out.extend_from_slice(&body);
    Frame::seal(&mut out[start..]);
}

/// The framing of a stored entry, shared with the cluster's partition
/// checkpoints: 4 bytes of magic, a u16 little-endian version, then the
/// first 8 bytes of BLAKE3 over everything from byte 14 on.
pub(crate) struct Frame {
    /// The magic of this kind of record.
    pub magic: &'static [u8; 4],
    /// The version this build writes and reads.
    pub version: u16,
    /// The length of the fixed header (frame included).
    pub header_len: usize,
    /// What the record is, for errors (`a yaraflow stream context`).
    pub what: &'static str,
}

/// The frame of a stream context entry.
const ENTRY: Frame = Frame {
    magic: MAGIC,
    version: FORMAT_VERSION,
    header_len: HEADER_LEN,
    what: "a yaraflow stream context",
};

impl Frame {
    /// Starts a record at the end of `out`: magic, version, and room for
    /// the checksum ([`Frame::seal`] writes it).
    pub fn start(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(self.magic);
        out.extend_from_slice(&self.version.to_le_bytes());
        out.extend_from_slice(&[0; 8]);
    }

    /// Writes the checksum of a finished record.
    pub fn seal(record: &mut [u8]) {
        let sum = checksum(&record[14..]);
        record[6..14].copy_from_slice(&sum);
    }

    /// Checks a record's length, magic, version and checksum.
    pub fn check(&self, record: &[u8]) -> Result<(), String> {
        let header_len = self.header_len;
        if record.len() < header_len {
            return Err(format!(
                "truncated: {} bytes, shorter than the {header_len}-byte header",
                record.len()
            ));
        }
        if &record[..4] != self.magic {
            return Err(format!("not {} (bad magic)", self.what));
        }
        let version = u16::from_le_bytes([record[4], record[5]]);
        if version != self.version {
            return Err(format!(
                "format version {version}, this yaraflow reads version {}",
                self.version
            ));
        }
        if record[6..14] != checksum(&record[14..]) {
            return Err("checksum mismatch (damaged or truncated)".into());
        }
        Ok(())
    }
}

/// Reads and checks an entry's header (and its checksum).
pub fn header(entry: &[u8]) -> Result<EntryHeader, String> {
    ENTRY.check(entry)?;
    let word = |at: usize| u64::from_le_bytes(entry[at..at + 8].try_into().expect("8 bytes"));
    Ok(EntryHeader {
        bytes: word(14),
        last_seen_ms: word(22),
        rules: entry[30..38].try_into().expect("8 bytes"),
    })
}

/// Decodes the entry of `stream`, checking that it is whole and is that
/// stream's; returns the context and the tag of its rules.
pub fn decode(stream: Uuid, entry: &[u8]) -> Result<(StreamContext, RulesTag), String> {
    let header = header(entry)?;
    let context: StreamContext =
        postcard::from_bytes(&entry[HEADER_LEN..]).map_err(|e| format!("does not decode: {e}"))?;
    if context.id != stream {
        return Err(format!("holds the context of stream {}", context.id));
    }
    if context.stats.bytes != header.bytes {
        return Err("header and body disagree on the offset".into());
    }
    Ok((context, header.rules))
}

fn checksum(bytes: &[u8]) -> [u8; 8] {
    let hash = blake3::hash(bytes);
    hash.as_bytes()[..8].try_into().expect("8 bytes")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stream::{HeadKeep, Retention, StreamMode};

    fn sample() -> StreamContext {
        let mut context = StreamContext::new(
            Uuid::from_u128(7),
            StreamMode::Chunks,
            3,
            Retention::Retaining,
        );
        let now = crate::stream::now_ms();
        context.record(
            b"hello\nworld",
            &Default::default(),
            &HeadKeep::first(4),
            now,
        );
        context.retained = b"hello\nworld".to_vec();
        context
    }

    const TAG: RulesTag = *b"rulesTag";

    fn entry() -> Vec<u8> {
        let mut out = Vec::new();
        encode(&sample(), TAG, &mut out);
        out
    }

    #[test]
    fn an_entry_decodes_to_the_same_context() {
        // One context, encoded once (contexts carry the time they were
        // made: two calls of `sample` may differ by a millisecond).
        let context = sample();
        let mut entry = Vec::new();
        encode(&context, TAG, &mut entry);
        let decoded = decode(Uuid::from_u128(7), &entry).unwrap();
        assert_eq!(decoded, (context.clone(), TAG));
        let header = header(&entry).unwrap();
        assert_eq!(header.bytes, 11);
        assert_eq!(header.rules, TAG);
        assert_eq!(header.last_seen_ms, context.stats.last_seen_ms);
    }

    #[test]
    fn every_single_byte_flip_is_caught() {
        let good = entry();
        for at in 0..good.len() {
            let mut bad = good.clone();
            bad[at] ^= 0x40;
            assert!(decode(Uuid::from_u128(7), &bad).is_err(), "flip at {at}");
        }
    }

    #[test]
    fn every_truncation_is_caught() {
        let good = entry();
        for len in 0..good.len() {
            let err = decode(Uuid::from_u128(7), &good[..len]).unwrap_err();
            assert!(
                err.contains("truncated") || err.contains("checksum"),
                "{err}"
            );
        }
    }

    #[test]
    fn another_version_or_stream_is_refused() {
        let mut other = entry();
        other[4] = 9;
        let err = decode(Uuid::from_u128(7), &other).unwrap_err();
        assert!(err.contains("format version 9"), "{err}");
        let err = decode(Uuid::from_u128(8), &entry()).unwrap_err();
        assert!(err.contains("holds the context of stream"), "{err}");
    }

    /// A context with every stored field set, and fixed times: its entry
    /// is the same bytes on every run.
    fn golden_context() -> StreamContext {
        use crate::stream::span::ReplaySpan;
        use crate::stream::RetentionLimit;
        let span = |start: u64, bytes: &[u8], quiet: bool| ReplaySpan {
            start,
            segment: 0,
            line: 2,
            bytes: bytes.to_vec(),
            quiet_start: quiet,
            quiet_end: !quiet,
        };
        let mut context = StreamContext::new(
            Uuid::from_u128(0x0123_4567_89ab_cdef_0123_4567_89ab_cdef),
            StreamMode::Chunks,
            5,
            Retention::Retaining,
        );
        context.stats = crate::stream::StreamStats {
            bytes: 300,
            lines: 4,
            chunks: 3,
            matches: 2,
            opened_at_ms: 1_700_000_000_000,
            last_seen_ms: 1_700_000_000_123,
        };
        context.tail = b"tail bytes".to_vec();
        context.head = b"head".to_vec();
        context.in_batch = true;
        context.tail_unsettled = true;
        context.retention = Retention::Cut {
            limit: RetentionLimit::StreamCap,
        };
        context.retained = b"kept".to_vec();
        let digests = crate::stream::digests::DigestSet::default()
            .with(crate::stream::digests::DigestKind::Md5)
            .with(crate::stream::digests::DigestKind::Crc32);
        context.digests = digests.start();
        context.digests.as_mut().unwrap().update(b"kept");
        // Only while `Retaining`: a cut stream's search is not deferred.
        context.deferred = false;
        context.externals = vec![crate::rules::External {
            name: "filename".into(),
            value: crate::rules::ExternalValue::String("a.exe".into()),
        }]
        .into_boxed_slice();
        context.settled.insert(span(10, b"a secret here", true));
        context.provisional.insert(span(290, b"end", false));
        context.match_reads = 0b101;
        context.provisional_match_reads = 0b10;
        context
    }

    /// The format version the golden entry below was written with.
    const GOLDEN_VERSION: u16 = 7;

    /// The entry of [`golden_context`], as format [`GOLDEN_VERSION`]
    /// writes it.
    const GOLDEN_ENTRY: &str = concat!(
        "594653430700b09dfed7f38b44192c010000000000007b68e5cf8b0100007275",
        "6c6573546167100123456789abcdef0123456789abcdef00ac0204030280d095",
        "ffbc31fbd095ffbc31050a7461696c206279746573046865616401010300046b",
        "65707400010200580123456789abcdeffedcba98765432100000000000000000",
        "046b657074000000000000000000000000000000000000000000000000000000",
        "0000000000000000000000000000000000000000000000000000000000000000",
        "0304066a28fb010866696c656e616d650305612e657865010a00020d61207365",
        "637265742068657265010001a202000203656e6400010502",
    );

    /// The store's format is `StreamContext`'s serde derive: a new, removed
    /// or reordered field changes the bytes. If this fails, the format
    /// changed: bump `FORMAT_VERSION` (entries of the old one are refused,
    /// never misread) and write the new entry and version here.
    #[test]
    fn the_format_changes_only_with_its_version() {
        let mut entry = Vec::new();
        encode(&golden_context(), TAG, &mut entry);
        let hex: String = entry.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(
            (FORMAT_VERSION, hex.as_str()),
            (GOLDEN_VERSION, GOLDEN_ENTRY),
            "the entry format changed: bump FORMAT_VERSION and update the golden entry"
        );
        let decoded = decode(golden_context().id, &entry).unwrap();
        assert_eq!(decoded, (golden_context(), TAG));
    }
}
