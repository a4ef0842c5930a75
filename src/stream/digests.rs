//! A stream's running digests of its whole data: what `hash.md5(0,
//! filesize)` and its kin read.
//!
//! A whole-buffer scan hashes the data at once; a chunk stream hashes each
//! chunk as it comes, so a rule that compares the digest of the whole data
//! with a literal needs no byte kept (see `rules::data_values`, which
//! rewrites those calls into values of each stream). The states serialize
//! with the stream (RustCrypto's serializable hasher states), so a stream
//! evicted to the store or handed to another worker hashes on where it
//! stopped.

use md5::digest::common::hazmat::SerializableState;
use md5::Digest as _;
use serde::{Deserialize, Serialize};

/// A digest of the data that YARA-X's `hash` module computes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum DigestKind {
    /// `hash.md5`: lowercase hex text.
    Md5,
    /// `hash.sha1`: lowercase hex text.
    Sha1,
    /// `hash.sha256`: lowercase hex text.
    Sha256,
    /// `hash.crc32`: an integer.
    Crc32,
    /// `hash.checksum32` (the bytes' sum, modulo 2^32): an integer.
    Checksum32,
}

impl DigestKind {
    /// Every kind, in the order of [`DigestSet`]'s bits.
    pub const ALL: [DigestKind; 5] = [
        DigestKind::Md5,
        DigestKind::Sha1,
        DigestKind::Sha256,
        DigestKind::Crc32,
        DigestKind::Checksum32,
    ];

    /// The kind a `hash` function's name names.
    pub fn named(name: &str) -> Option<DigestKind> {
        DigestKind::ALL.into_iter().find(|kind| kind.name() == name)
    }

    /// Its function's name in the `hash` module.
    pub fn name(self) -> &'static str {
        match self {
            DigestKind::Md5 => "md5",
            DigestKind::Sha1 => "sha1",
            DigestKind::Sha256 => "sha256",
            DigestKind::Crc32 => "crc32",
            DigestKind::Checksum32 => "checksum32",
        }
    }

    /// Whether its value is hex text (compared with string literals) rather
    /// than an integer.
    pub fn is_text(self) -> bool {
        matches!(
            self,
            DigestKind::Md5 | DigestKind::Sha1 | DigestKind::Sha256
        )
    }

    fn bit(self) -> u8 {
        1 << DigestKind::ALL
            .iter()
            .position(|k| *k == self)
            .expect("listed")
    }
}

/// The digests a rule set reads of every chunk stream.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DigestSet(u8);

impl DigestSet {
    /// The set with `kind` added.
    pub fn with(self, kind: DigestKind) -> DigestSet {
        DigestSet(self.0 | kind.bit())
    }

    /// Whether it holds no digest.
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// Its kinds, in [`DigestKind::ALL`]'s order.
    pub fn kinds(self) -> impl Iterator<Item = DigestKind> {
        DigestKind::ALL
            .into_iter()
            .filter(move |kind| self.0 & kind.bit() != 0)
    }

    /// A stream's digests of these kinds, over no data yet (`None` when the
    /// set is empty).
    pub(crate) fn start(self) -> Option<Box<RunningDigests>> {
        (!self.is_empty()).then(|| {
            Box::new(RunningDigests(
                self.kinds().map(RunningDigest::new).collect(),
            ))
        })
    }
}

/// The value of one digest of the data so far.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DigestValue {
    /// Lowercase hex, as YARA-X's `hash` module gives it.
    Text(String),
    /// An integer.
    Integer(i64),
}

/// A stream's running digests, one per kind its rules read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunningDigests(Box<[RunningDigest]>);

impl RunningDigests {
    /// Hashes `data`, the bytes that follow those hashed so far.
    pub(crate) fn update(&mut self, data: &[u8]) {
        self.0.iter_mut().for_each(|digest| digest.update(data));
    }

    /// The value of the digest of `kind` over the data so far (`None`: not
    /// kept).
    pub fn value(&self, kind: DigestKind) -> Option<DigestValue> {
        self.0
            .iter()
            .find(|digest| digest.kind() == kind)
            .map(RunningDigest::value)
    }

    /// What the states take on the heap, boxed as a stream holds them.
    pub(crate) fn heap_bytes(&self) -> usize {
        super::allocation_bytes(std::mem::size_of::<RunningDigests>())
            + super::allocation_bytes(std::mem::size_of_val::<[RunningDigest]>(&self.0))
    }
}

/// One running digest.
#[derive(Clone, Serialize, Deserialize)]
#[serde(into = "StoredDigest", try_from = "StoredDigest")]
enum RunningDigest {
    Md5(md5::Md5),
    Sha1(sha1::Sha1),
    Sha256(sha2::Sha256),
    Crc32(crc32fast::Hasher),
    Checksum32(u32),
}

impl RunningDigest {
    fn new(kind: DigestKind) -> RunningDigest {
        match kind {
            DigestKind::Md5 => RunningDigest::Md5(md5::Md5::new()),
            DigestKind::Sha1 => RunningDigest::Sha1(sha1::Sha1::new()),
            DigestKind::Sha256 => RunningDigest::Sha256(sha2::Sha256::new()),
            DigestKind::Crc32 => RunningDigest::Crc32(crc32fast::Hasher::new()),
            DigestKind::Checksum32 => RunningDigest::Checksum32(0),
        }
    }

    fn kind(&self) -> DigestKind {
        match self {
            RunningDigest::Md5(_) => DigestKind::Md5,
            RunningDigest::Sha1(_) => DigestKind::Sha1,
            RunningDigest::Sha256(_) => DigestKind::Sha256,
            RunningDigest::Crc32(_) => DigestKind::Crc32,
            RunningDigest::Checksum32(_) => DigestKind::Checksum32,
        }
    }

    fn update(&mut self, data: &[u8]) {
        match self {
            RunningDigest::Md5(h) => h.update(data),
            RunningDigest::Sha1(h) => h.update(data),
            RunningDigest::Sha256(h) => h.update(data),
            RunningDigest::Crc32(h) => h.update(data),
            RunningDigest::Checksum32(sum) => {
                *sum = data
                    .iter()
                    .fold(*sum, |sum, byte| sum.wrapping_add(u32::from(*byte)))
            }
        }
    }

    fn value(&self) -> DigestValue {
        match self {
            RunningDigest::Md5(h) => DigestValue::Text(hex(&h.clone().finalize())),
            RunningDigest::Sha1(h) => DigestValue::Text(hex(&h.clone().finalize())),
            RunningDigest::Sha256(h) => DigestValue::Text(hex(&h.clone().finalize())),
            RunningDigest::Crc32(h) => DigestValue::Integer(i64::from(h.clone().finalize())),
            RunningDigest::Checksum32(sum) => DigestValue::Integer(i64::from(*sum)),
        }
    }
}

impl PartialEq for RunningDigest {
    fn eq(&self, other: &RunningDigest) -> bool {
        StoredDigest::from(self.clone()) == StoredDigest::from(other.clone())
    }
}

impl Eq for RunningDigest {}

impl std::fmt::Debug for RunningDigest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?} digest", self.kind())
    }
}

/// A running digest as the store keeps it: its kind and its hasher's
/// serialized state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct StoredDigest {
    kind: DigestKind,
    state: Vec<u8>,
}

impl From<RunningDigest> for StoredDigest {
    fn from(digest: RunningDigest) -> StoredDigest {
        let kind = digest.kind();
        let state = match digest {
            RunningDigest::Md5(h) => h.serialize().to_vec(),
            RunningDigest::Sha1(h) => h.serialize().to_vec(),
            RunningDigest::Sha256(h) => h.serialize().to_vec(),
            RunningDigest::Crc32(h) => h.finalize().to_le_bytes().to_vec(),
            RunningDigest::Checksum32(sum) => sum.to_le_bytes().to_vec(),
        };
        StoredDigest { kind, state }
    }
}

impl TryFrom<StoredDigest> for RunningDigest {
    type Error = String;

    fn try_from(stored: StoredDigest) -> Result<RunningDigest, String> {
        let damaged = || format!("a damaged {} digest state", stored.kind.name());
        let state = stored.state.as_slice();
        let word = || -> Result<u32, String> {
            Ok(u32::from_le_bytes(state.try_into().map_err(|_| damaged())?))
        };
        Ok(match stored.kind {
            DigestKind::Md5 => RunningDigest::Md5(restore(state).ok_or_else(damaged)?),
            DigestKind::Sha1 => RunningDigest::Sha1(restore(state).ok_or_else(damaged)?),
            DigestKind::Sha256 => RunningDigest::Sha256(restore(state).ok_or_else(damaged)?),
            DigestKind::Crc32 => RunningDigest::Crc32(crc32fast::Hasher::new_with_initial(word()?)),
            DigestKind::Checksum32 => RunningDigest::Checksum32(word()?),
        })
    }
}

/// A hasher from its serialized state (`None`: not a state of it).
fn restore<H: SerializableState>(state: &[u8]) -> Option<H> {
    H::deserialize(&state.try_into().ok()?).ok()
}

/// Lowercase hex of `bytes`.
fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    bytes
        .iter()
        .flat_map(|b| [DIGITS[usize::from(b >> 4)], DIGITS[usize::from(b & 15)]])
        .map(char::from)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const DATA: &[u8] = b"The quick brown fox jumps over the lazy dog, in chunks of any size.";

    fn all() -> DigestSet {
        DigestKind::ALL
            .into_iter()
            .fold(DigestSet::default(), DigestSet::with)
    }

    #[test]
    fn chunked_digests_equal_the_whole_datas() {
        let whole = {
            let mut digests = all().start().unwrap();
            digests.update(DATA);
            digests
        };
        assert_eq!(
            whole.value(DigestKind::Md5),
            Some(DigestValue::Text(hex(&md5::Md5::digest(DATA))))
        );
        assert_eq!(
            whole.value(DigestKind::Crc32),
            Some(DigestValue::Integer(i64::from(crc32fast::hash(DATA))))
        );
        let sum: u32 = DATA.iter().map(|b| u32::from(*b)).sum();
        assert_eq!(
            whole.value(DigestKind::Checksum32),
            Some(DigestValue::Integer(i64::from(sum)))
        );
        for cut in [0, 1, 7, 63, 64, 65, DATA.len()] {
            let mut chunked = all().start().unwrap();
            chunked.update(&DATA[..cut]);
            chunked.update(&DATA[cut..]);
            for kind in DigestKind::ALL {
                assert_eq!(
                    chunked.value(kind),
                    whole.value(kind),
                    "{kind:?} cut at {cut}"
                );
            }
        }
    }

    #[test]
    fn a_stored_state_hashes_on_where_it_stopped() {
        let mut digests = all().start().unwrap();
        digests.update(&DATA[..30]);
        let stored = serde_json::to_vec(&digests).unwrap();
        let mut restored: RunningDigests = serde_json::from_slice(&stored).unwrap();
        assert_eq!(restored, *digests);
        restored.update(&DATA[30..]);
        let mut whole = all().start().unwrap();
        whole.update(DATA);
        assert_eq!(restored, *whole);
        for kind in DigestKind::ALL {
            assert_eq!(restored.value(kind), whole.value(kind));
        }
    }

    #[test]
    fn a_damaged_state_is_an_error() {
        let stored = StoredDigest {
            kind: DigestKind::Sha1,
            state: vec![1, 2, 3],
        };
        let err = RunningDigest::try_from(stored).unwrap_err();
        assert!(err.contains("damaged sha1"), "{err}");
    }

    #[test]
    fn a_set_starts_only_its_kinds() {
        assert!(DigestSet::default().start().is_none());
        let set = DigestSet::default().with(DigestKind::Sha256);
        let digests = set.start().unwrap();
        assert!(digests.value(DigestKind::Sha256).is_some());
        assert_eq!(digests.value(DigestKind::Md5), None);
        assert_eq!(
            DigestKind::named("checksum32"),
            Some(DigestKind::Checksum32)
        );
        assert_eq!(DigestKind::named("entropy"), None);
    }
}
