//! What a stream's verdict looks like to callers: matching rules, their
//! pattern matches and the stream's counters. Everything serializes to JSON.
//!
//! Offsets are stream-absolute. Rules and patterns are listed as YARA-X lists
//! them for a whole-buffer scan: non-private rules that matched, and their
//! non-private patterns with every match.

use bytes::{Bytes, BytesMut};
use serde::{Serialize, Serializer};
use uuid::Uuid;

use crate::stream::StreamStats;

/// The verdict of one stream.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StreamResults {
    /// The stream's id.
    pub stream: Uuid,
    /// Rules that match the bytes seen so far.
    pub rules: Vec<RuleMatch>,
    /// False in the rare case where the stream's replayed spans could not
    /// be cut where no context-sensitive pattern starts or ends (a run of
    /// hundreds of bytes where one could): then no rule's verdict is
    /// claimed exact, and every rule says `exact: false`.
    pub exact: bool,
    /// True when the stream had more pattern matches than
    /// `ScannerConfig::max_stream_matches`: only the first ones were kept,
    /// so the rules list only those (`matches` still counts them all) and
    /// the verdict is not claimed exact. After a whole-buffer scan
    /// (`whole_data.state` is `scanned`) it says that only the first
    /// `max_stream_matches` matches are listed; every rule's verdict is
    /// still exact.
    pub matches_cut: bool,
    /// How whole-data rules (those stream scanning cannot evaluate
    /// exactly; see `yaraflow check`) were decided for this stream. `None`
    /// when the rules have none and no dense rule (`rules::density`) made
    /// the stream retain its bytes. A line stream's are evaluated on its
    /// lines (state `lines`): those that match say `exact: false`, the
    /// others are listed as undecided.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub whole_data: Option<WholeDataVerdict>,
    /// The stream's counters.
    #[serde(flatten)]
    pub stats: StreamStats,
    /// With an engine that keeps a stream store: the offset up to which the
    /// stream's state is durable (written by a checkpoint or an eviction).
    /// After a crash of yaraflow the stream resumes from there, so a
    /// producer need keep only the bytes past it. `None` without a store,
    /// or before the stream was first written.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub durable_offset: Option<u64>,
}

/// How a chunk stream's whole-data rules were decided.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct WholeDataVerdict {
    /// `scanned`: the stream kept every byte, and every rule's verdict is
    /// a whole-buffer scan of them (exact). `gated`: its first bytes or its
    /// length fail every whole-data rule's gate, so its own verdict decides
    /// them all (exact; most are simply false). `cut_at_...`: a retention
    /// limit stopped it; whole-data rules whose gate fails are decided as
    /// for `gated`, the others are `undecided`. `lines`: a line stream,
    /// which keeps no bytes; every whole-data rule that did not match is
    /// `undecided`.
    pub state: WholeDataState,
    /// Bytes the stream retained.
    pub retained_bytes: u64,
    /// How many whole-data rules are undecided (`cut` only).
    #[serde(skip_serializing_if = "is_zero")]
    pub undecided_rules: usize,
    /// The first [`MAX_UNDECIDED_LISTED`] of them, as `namespace.identifier`,
    /// sorted. A matching rule among them says `exact: false`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub undecided: Vec<String>,
}

/// Most undecided rules named in a [`WholeDataVerdict`] (a rule set can
/// have thousands).
pub const MAX_UNDECIDED_LISTED: usize = 100;

fn is_zero(n: &usize) -> bool {
    *n == 0
}

impl WholeDataVerdict {
    /// Whether the verdict came from a whole-buffer scan.
    pub fn scanned(&self) -> bool {
        self.state == WholeDataState::Scanned
    }
}

/// See [`WholeDataVerdict::state`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum WholeDataState {
    /// Retained bytes scanned whole.
    Scanned,
    /// Every gate failed.
    Gated,
    /// The per-stream cap stopped the retention.
    CutAtStreamCap,
    /// The scanner's budget stopped the retention.
    CutAtBudget,
    /// A line stream: each line is a block of its own, so no whole-data
    /// rule is decided as on whole data.
    Lines,
}

/// One matching rule.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RuleMatch {
    /// The rule's namespace.
    pub namespace: String,
    /// The rule's identifier.
    pub identifier: String,
    /// Its tags.
    pub tags: Vec<String>,
    /// Its metadata, as a JSON array of `[name, value]` pairs.
    pub metadata: serde_json::Value,
    /// False when rule analysis found that stream scanning cannot evaluate
    /// this rule exactly (see `yaraflow check`), or when the stream's
    /// verdict is not exact (see [`StreamResults::exact`]).
    pub exact: bool,
    /// Its patterns and their matches.
    pub patterns: Vec<PatternMatches>,
}

/// The matches of one pattern.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PatternMatches {
    /// The pattern's identifier (`$a`; `$` for anonymous patterns).
    pub identifier: String,
    /// Every match, by offset.
    pub matches: Vec<MatchInfo>,
}

/// One match of a pattern.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MatchInfo {
    /// Stream offset of the first matched byte.
    pub offset: u64,
    /// Length of the match in bytes.
    pub length: usize,
    /// 1-based line of the match: the line's index in line mode, one plus
    /// the newlines before the match in chunk mode.
    pub line: u64,
    /// The XOR key, for patterns with the `xor` modifier.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub xor_key: Option<u8>,
    /// The matched bytes, up to `ScannerConfig::max_snippet_bytes`, as text
    /// with non-printable bytes escaped (`\xNN`). The matches of a verdict
    /// share blocks of memory (see [`Snippets`]).
    #[serde(serialize_with = "escaped")]
    pub data: Bytes,
}

fn escaped<S: Serializer>(bytes: &Bytes, serializer: S) -> Result<S::Ok, S::Error> {
    let text: String = bytes
        .iter()
        .flat_map(|&b| std::ascii::escape_default(b))
        .map(char::from)
        .collect();
    serializer.serialize_str(&text)
}

/// Copies of matched bytes for a verdict's matches, at most `cap` bytes
/// each, cut from shared blocks: one allocation per block instead of one
/// per match (a verdict may list thousands; allocating and freeing each
/// was a tenth of the time of a verdict of yara-rules on random data).
pub(crate) struct Snippets {
    block: BytesMut,
    cap: usize,
}

impl Snippets {
    /// Bytes of each block: a result kept alone keeps at most this alive.
    const BLOCK_BYTES: usize = 1024;

    /// Copies of at most `cap` bytes (`ScannerConfig::max_snippet_bytes`).
    pub(crate) fn new(cap: usize) -> Snippets {
        Snippets {
            block: BytesMut::new(),
            cap,
        }
    }

    /// A copy of the first `cap` of `bytes`.
    pub(crate) fn copy(&mut self, bytes: &[u8]) -> Bytes {
        let bytes = &bytes[..bytes.len().min(self.cap)];
        if bytes.is_empty() {
            return Bytes::new();
        }
        if self.block.capacity() - self.block.len() < bytes.len() {
            self.block = BytesMut::with_capacity(Self::BLOCK_BYTES.max(bytes.len()));
        }
        self.block.extend_from_slice(bytes);
        self.block.split().freeze()
    }
}

/// How many more matches a verdict lists (a whole-buffer scan can find a
/// million per pattern), and whether some were left out.
#[derive(Debug, Clone, Copy)]
pub(crate) struct MatchBudget {
    /// Matches that may still be listed.
    pub room: usize,
    /// Some were not.
    pub cut: bool,
}

impl RuleMatch {
    /// Converts a YARA-X matching rule, listing no more matches than
    /// `budget` has room for. `locate` gives the line of an offset,
    /// `snippet` the bytes of a match's range, which `snippets` copies (its
    /// first bytes). The bytes come from the caller, not from YARA-X's
    /// `Match::data`: YARA-X 1.22 can report a `base64` match running past
    /// the end of the block it was found in, and its `Match::data` then
    /// panics.
    pub(crate) fn from_yara<'d>(
        rule: &yara_x::Rule<'_, '_>,
        exact: bool,
        budget: &mut MatchBudget,
        locate: &dyn Fn(u64) -> u64,
        snippet: &dyn Fn(std::ops::Range<u64>) -> &'d [u8],
        snippets: &mut Snippets,
    ) -> RuleMatch {
        let mut patterns = Vec::new();
        for pattern in rule.patterns() {
            let mut found = pattern.matches();
            // `Matches` knows its length but not its size hint: without
            // the capacity, a pattern with thousands of matches grows its
            // list by doubling, copying it each time.
            let mut matches = Vec::with_capacity(found.len().min(budget.room));
            matches.extend(found.by_ref().take(budget.room).map(|m| {
                let range = m.range().start as u64..m.range().end as u64;
                MatchInfo {
                    offset: range.start,
                    length: m.range().len(),
                    line: locate(range.start),
                    xor_key: m.xor_key(),
                    data: snippets.copy(snippet(range)),
                }
            }));
            budget.room -= matches.len();
            budget.cut |= found.next().is_some();
            patterns.push(PatternMatches {
                identifier: pattern.identifier().to_string(),
                matches,
            });
        }
        RuleMatch {
            namespace: rule.namespace().to_string(),
            identifier: rule.identifier().to_string(),
            tags: rule.tags().map(|t| t.identifier().to_string()).collect(),
            metadata: rule.metadata().into_json(),
            exact,
            patterns,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snippets_are_copies_cut_from_shared_blocks() {
        let mut snippets = Snippets::new(3000);
        let a = snippets.copy(b"first");
        let b = snippets.copy(b"second");
        assert_eq!((&a[..], &b[..]), (&b"first"[..], &b"second"[..]));
        // One block: the second follows the first.
        assert_eq!(b.as_ptr(), a[a.len()..].as_ptr());
        assert!(snippets.copy(b"").is_empty());
        // A block fills up and another starts; a snippet longer than a
        // block gets one of its own.
        let pieces: Vec<Bytes> = (0..100u8).map(|i| snippets.copy(&[i; 30])).collect();
        let long = snippets.copy(&[7; 3000]);
        assert!(pieces
            .iter()
            .enumerate()
            .all(|(i, p)| p[..] == [i as u8; 30]));
        assert_eq!(long[..], [7; 3000]);
        assert_eq!(snippets.copy(&[8; 3001])[..], [8; 3000], "cut at the cap");
        drop(snippets);
        assert_eq!(&a[..], b"first", "a copy outlives its maker");
    }
}
