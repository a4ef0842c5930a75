//! Replay spans: the bytes of a stream that its verdict is computed from.
//!
//! A stream keeps none of its bytes except the tail (for matches that span
//! chunks) and, around every match the search found, a *replay span*: the
//! matched bytes plus a little real context. The verdict replays the spans
//! at their real offsets into an evaluation scanner; YARA-X finds the same
//! matches there and evaluates the conditions over them.
//!
//! Block edges look to YARA-X like the start and end of the data: `^`, `$`,
//! `fullword`, `\b` and `\B` all see them. A span therefore takes at least
//! one byte of context each side, then grows (by up to [`SPAN_CONTEXT`]
//! bytes each side) until its edges are *quiet*: no context-sensitive
//! pattern can start or end there, nor have a `fullword` regex match cut
//! short by the end ([`EdgeGuard`]), so that a replayed block finds exactly
//! the matches the real stream has. An edge that is a real
//! edge of the data (stream start, line edges, the end of what was seen so
//! far) is quiet.
//!
//! Spans are kept sorted and merged when they overlap or touch within the
//! same *segment* (the whole stream in chunk mode, one line in line mode:
//! lines never merge, since no match spans two lines).

use serde::{Deserialize, Serialize};

use crate::rules::EdgeGuard;

/// Most bytes of context added on each side of a match.
pub const SPAN_CONTEXT: usize = 16;

/// Real bytes of a stream at their stream offset.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplaySpan {
    /// Stream offset of `bytes[0]`.
    pub start: u64,
    /// Segment the span belongs to: 0 in chunk mode, the line index in line
    /// mode. Spans of different segments never merge.
    pub segment: u64,
    /// 1-based line number of `bytes[0]`.
    pub line: u64,
    /// The bytes.
    pub bytes: Vec<u8>,
    /// Whether a block may start here without creating or losing a match
    /// (see `replay_range`).
    pub quiet_start: bool,
    /// Whether a block may end here without creating or losing a match.
    pub quiet_end: bool,
}

impl ReplaySpan {
    /// Stream offset one past the last byte.
    pub fn end(&self) -> u64 {
        self.start + self.bytes.len() as u64
    }

    /// 1-based line number of the byte at stream offset `offset` (which must
    /// lie in the span, or at its end).
    pub fn line_at(&self, offset: u64, line_mode: bool) -> u64 {
        if line_mode {
            return self.line;
        }
        let upto = (offset.saturating_sub(self.start) as usize).min(self.bytes.len());
        self.line + count_newlines(&self.bytes[..upto])
    }

    /// Appends `other` (which starts at or before `self.end()`) to `self`.
    fn absorb(&mut self, other: ReplaySpan) {
        if other.end() > self.end() {
            let skip = (self.end() - other.start) as usize;
            self.bytes.extend_from_slice(&other.bytes[skip..]);
            self.quiet_end = other.quiet_end;
        } else if other.end() == self.end() {
            self.quiet_end |= other.quiet_end;
        }
        if other.start == self.start {
            self.quiet_start |= other.quiet_start;
        }
    }

    /// Whether both edges are quiet: replaying the span finds exactly the
    /// stream's matches inside it.
    pub fn is_quiet(&self) -> bool {
        self.quiet_start && self.quiet_end
    }

    fn joins(&self, next: &ReplaySpan) -> bool {
        self.segment == next.segment && next.start <= self.end()
    }
}

/// A sorted set of disjoint spans, merged on insertion.
///
/// It keeps the sum of its spans' allocations as they change, so that
/// [`SpanSet::heap_bytes`] costs O(1): a stream with many spans that
/// receives many chunks must not recount them all for each (that made a
/// match-heavy stream quadratic in its matches).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(from = "SpanList")]
pub struct SpanSet {
    spans: Vec<ReplaySpan>,
    /// Sum of `allocation_bytes` of every span's bytes.
    #[serde(skip)]
    span_heap: usize,
}

/// The serialized form of a [`SpanSet`] (the same as its fields').
#[derive(Deserialize)]
struct SpanList {
    spans: Vec<ReplaySpan>,
}

impl From<SpanList> for SpanSet {
    fn from(list: SpanList) -> SpanSet {
        let span_heap = list.spans.iter().map(span_heap).sum();
        SpanSet {
            spans: list.spans,
            span_heap,
        }
    }
}

impl PartialEq for SpanSet {
    /// Equal spans (allocations may differ).
    fn eq(&self, other: &SpanSet) -> bool {
        self.spans == other.spans
    }
}

impl Eq for SpanSet {}

/// What a span's bytes cost as an allocation.
fn span_heap(span: &ReplaySpan) -> usize {
    super::allocation_bytes(span.bytes.capacity())
}

impl SpanSet {
    /// Adds a span, merging it with the spans it overlaps or touches.
    pub fn insert(&mut self, span: ReplaySpan) {
        let key = |s: &ReplaySpan| (s.segment, s.start);
        let at = self.spans.partition_point(|s| key(s) < key(&span));
        // Merge with the previous span when it reaches this one.
        // `span_heap` leaves out the span at `at` until it is final.
        let at = if at > 0 && self.spans[at - 1].joins(&span) {
            self.span_heap -= span_heap(&self.spans[at - 1]);
            self.spans[at - 1].absorb(span);
            at - 1
        } else {
            self.spans.insert(at, span);
            at
        };
        while at + 1 < self.spans.len() && self.spans[at].joins(&self.spans[at + 1]) {
            let next = self.spans.remove(at + 1);
            self.span_heap -= span_heap(&next);
            self.spans[at].absorb(next);
        }
        self.span_heap += span_heap(&self.spans[at]);
    }

    /// The last span (the one with the highest segment and offset).
    pub fn last(&self) -> Option<&ReplaySpan> {
        self.spans.last()
    }

    /// Spans held.
    pub fn len(&self) -> usize {
        self.spans.len()
    }

    /// The spans, sorted by segment and offset.
    pub fn iter(&self) -> impl Iterator<Item = &ReplaySpan> {
        self.spans.iter()
    }

    /// The spans as a slice, sorted by segment and offset.
    pub fn as_slice(&self) -> &[ReplaySpan] {
        &self.spans
    }

    /// Whether the set holds no span.
    pub fn is_empty(&self) -> bool {
        self.spans.is_empty()
    }

    /// Removes every span.
    pub fn clear(&mut self) {
        self.spans.clear();
        self.span_heap = 0;
    }

    /// Bytes held by the spans.
    pub fn byte_len(&self) -> usize {
        self.spans.iter().map(|s| s.bytes.len()).sum()
    }

    /// Heap bytes the set holds: the list of spans and each span's bytes,
    /// as allocations (see `stream::allocation_bytes`).
    pub fn heap_bytes(&self) -> usize {
        let list = self.spans.capacity() * std::mem::size_of::<ReplaySpan>();
        super::allocation_bytes(list) + self.span_heap
    }

    /// The union of several sets.
    pub fn union<'a>(sets: impl IntoIterator<Item = &'a SpanSet>) -> SpanSet {
        let mut all = SpanSet::default();
        for span in sets.into_iter().flat_map(|s| s.spans.iter()) {
            all.insert(span.clone());
        }
        all
    }
}

/// Counts `\n` bytes.
pub fn count_newlines(bytes: &[u8]) -> u64 {
    memchr::memchr_iter(b'\n', bytes).count() as u64
}

/// Whether a block may start at `data[i]`: at a real edge of the data, or
/// where no context-sensitive pattern can start (see [`EdgeGuard`]).
fn quiet_left(data: &[u8], i: usize, real_start: bool, guard: &EdgeGuard) -> bool {
    if i == 0 {
        real_start
    } else {
        !guard.blocks_start(&data[i..])
    }
}

/// Whether a block may end after `up_to_edge` (the bytes before the edge):
/// at a real edge of the data, or where no context-sensitive pattern can
/// end.
fn quiet_right(up_to_edge: &[u8], at_data_end: bool, real_end: bool, guard: &EdgeGuard) -> bool {
    if at_data_end {
        real_end
    } else {
        !guard.blocks_end(up_to_edge)
    }
}

/// Most bytes a span grows on each side looking for a quiet edge.
pub const MAX_SPAN_GROWTH: usize = 256;

/// A range of bytes to replay, and whether its edges are quiet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GrownRange {
    /// The range.
    pub range: std::ops::Range<usize>,
    /// Whether its start is quiet.
    pub quiet_start: bool,
    /// Whether its end is quiet.
    pub quiet_end: bool,
}

/// The range to replay for a match at `range` of `data`: the match grown by
/// at least one byte each side where `data` has one (YARA-X cuts a greedy
/// match that ends exactly at the end of a block short by a byte, so no
/// replayed match may end at a block's edge), then to the nearest quiet
/// edge within [`MAX_SPAN_GROWTH`] bytes and `data`. Where there is none
/// (a long run of bytes where a context-sensitive pattern could start or
/// end), the edge goes as far as it can and is reported not quiet.
pub fn replay_range(
    data: &[u8],
    range: std::ops::Range<usize>,
    real_start: bool,
    real_end: bool,
    guard: &EdgeGuard,
) -> GrownRange {
    replay_range_after(&[], data, range, real_start, real_end, guard)
}

/// [`replay_range`] for a match whose span may be replayed in one block
/// with `before`, the stream's bytes just before `data[0]` (the span
/// merges with the one holding them): its end is judged with them in
/// front, since a context-sensitive pattern may start in them and end at
/// the block's end.
pub fn replay_range_after(
    before: &[u8],
    data: &[u8],
    range: std::ops::Range<usize>,
    real_start: bool,
    real_end: bool,
    guard: &EdgeGuard,
) -> GrownRange {
    let floor = range.start.saturating_sub(MAX_SPAN_GROWTH);
    let lefts = (floor..range.start.max(floor + 1)).rev();
    let (start, quiet_start) = pick_edge(lefts, |i| quiet_left(data, i, real_start, guard));
    let ceiling = (range.end + MAX_SPAN_GROWTH).min(data.len());
    let rights = (range.end + 1).min(ceiling)..=ceiling;
    let quiet = |up_to_edge: &[u8], j| quiet_right(up_to_edge, j == data.len(), real_end, guard);
    // The checks read at most `guard.reach()` bytes back from an edge.
    let (end, quiet_end) = match before.is_empty() || range.end >= guard.reach() {
        true => pick_edge(rights, |j| quiet(&data[..j], j)),
        false => {
            let kept = &before[before.len().saturating_sub(guard.reach())..];
            let joined = [kept, &data[..ceiling]].concat();
            pick_edge(rights, |j| quiet(&joined[..kept.len() + j], j))
        }
    };
    GrownRange {
        range: start..end,
        quiet_start,
        quiet_end,
    }
}

/// The first candidate that is quiet, else the last (the most context),
/// and whether the one picked is quiet.
fn pick_edge(
    candidates: impl Iterator<Item = usize> + Clone,
    quiet: impl Fn(usize) -> bool,
) -> (usize, bool) {
    match candidates.clone().find(|&i| quiet(i)) {
        Some(edge) => (edge, true),
        None => (candidates.last().unwrap_or_default(), false),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn span(start: u64, bytes: &[u8]) -> ReplaySpan {
        ReplaySpan {
            start,
            segment: 0,
            line: 1,
            bytes: bytes.to_vec(),
            quiet_start: true,
            quiet_end: true,
        }
    }

    #[test]
    fn overlapping_and_touching_spans_merge() {
        let mut set = SpanSet::default();
        set.insert(span(10, b"klmn"));
        set.insert(span(0, b"abc"));
        set.insert(span(3, b"defghij"));
        set.insert(span(12, b"mnop"));
        let spans: Vec<_> = set.iter().cloned().collect();
        assert_eq!(spans, vec![span(0, b"abcdefghijklmnop")]);
    }

    #[test]
    fn heap_bytes_follow_inserts_and_merges() {
        let mut set = SpanSet::default();
        for (start, bytes) in [
            (10, &b"klmn"[..]),
            (0, b"abc"),
            (40, b"xy"),
            (3, b"defghij"),
        ] {
            set.insert(span(start, bytes));
            let recount: usize = set.iter().map(span_heap).sum();
            assert_eq!(set.span_heap, recount);
        }
        let copy: SpanSet = SpanList {
            spans: set.spans.clone(),
        }
        .into();
        assert_eq!(copy, set);
        assert_eq!(copy.span_heap, copy.iter().map(span_heap).sum::<usize>());
        set.clear();
        assert_eq!(
            set.heap_bytes(),
            super::super::allocation_bytes(
                set.spans.capacity() * std::mem::size_of::<ReplaySpan>()
            )
        );
    }

    #[test]
    fn spans_of_different_segments_stay_apart() {
        let mut set = SpanSet::default();
        set.insert(ReplaySpan {
            segment: 1,
            ..span(0, b"ab")
        });
        set.insert(ReplaySpan {
            segment: 2,
            ..span(2, b"cd")
        });
        assert_eq!(set.iter().count(), 2);
    }

    #[test]
    fn contained_span_changes_nothing() {
        let mut set = SpanSet::default();
        set.insert(span(0, b"abcdef"));
        set.insert(span(2, b"cd"));
        assert_eq!(
            set.iter().cloned().collect::<Vec<_>>(),
            vec![span(0, b"abcdef")]
        );
    }

    fn guard(src: &str) -> EdgeGuard {
        EdgeGuard::from_asts([&yara_x_parser::ast::AST::from(src)], 64)
    }

    fn grown(range: std::ops::Range<usize>, quiet_start: bool, quiet_end: bool) -> GrownRange {
        GrownRange {
            range,
            quiet_start,
            quiet_end,
        }
    }

    #[test]
    fn replay_range_takes_one_byte_of_context_without_guards() {
        let data = b"xx hello yy";
        let none = EdgeGuard::default();
        assert_eq!(
            replay_range(data, 3..8, false, false, &none),
            grown(2..9, true, true)
        );
        assert_eq!(
            replay_range(data, 0..2, true, false, &none),
            grown(0..3, true, true)
        );
        assert_eq!(
            replay_range(data, 9..11, false, true, &none),
            grown(8..11, true, true)
        );
        // The end of the data is not an edge of the stream: not quiet.
        assert_eq!(
            replay_range(data, 9..11, false, false, &none),
            grown(8..11, true, false)
        );
    }

    #[test]
    fn replay_range_moves_edges_off_context_sensitive_matches() {
        // A block ending right after the second "ab" would let the fullword
        // "ab" match there: the edge moves on.
        let g = guard(r#"rule r { strings: $a = "ab" fullword condition: $a }"#);
        let data = b"zz.qab.zz";
        assert_eq!(
            &data[replay_range(data, 3..5, false, false, &g).range],
            b".qab."
        );
    }

    #[test]
    fn replay_range_reports_edges_it_cannot_make_quiet() {
        let g = guard(r#"rule r { strings: $a = "a" fullword condition: $a }"#);
        let data = vec![b'a'; 1000];
        let far = MAX_SPAN_GROWTH;
        assert_eq!(
            replay_range(&data, 500..502, false, false, &g),
            grown(500 - far..502 + far, false, false)
        );
        assert_eq!(
            replay_range(&data, 2..4, true, true, &g),
            grown(0..4 + far, true, false)
        );
        assert_eq!(
            replay_range(&data[..10], 2..4, true, true, &g),
            grown(0..10, true, true)
        );
    }

    #[test]
    fn merged_spans_keep_the_quietness_of_their_outer_edges() {
        let mut set = SpanSet::default();
        set.insert(ReplaySpan {
            quiet_end: false,
            ..span(0, b"abcd")
        });
        set.insert(ReplaySpan {
            quiet_start: false,
            ..span(2, b"cdef")
        });
        assert!(set.iter().all(ReplaySpan::is_quiet));
    }

    #[test]
    fn line_numbers_count_newlines() {
        let s = ReplaySpan {
            line: 3,
            ..span(100, b"a\nb\nc")
        };
        assert_eq!(s.line_at(100, false), 3);
        assert_eq!(s.line_at(102, false), 4);
        assert_eq!(s.line_at(104, false), 5);
        assert_eq!(s.line_at(104, true), 3);
    }
}
