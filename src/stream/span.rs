//! Replay spans: the bytes of a stream that its verdict is computed from.
//!
//! A stream keeps none of its bytes except the tail (for matches that span
//! chunks) and, around every match the search found, a *replay span*: the
//! matched bytes plus a little real context. The verdict replays the spans
//! at their real offsets into an evaluation scanner; YARA-X finds the same
//! matches there and evaluates the conditions over them.
//!
//! Block edges look to YARA-X like the start and end of the data: `fullword`
//! and `\b` see a word boundary there. A span therefore grows (by up to
//! [`SPAN_CONTEXT`] bytes each side) until its edge is *quiet*: the byte
//! beyond it is not a word byte (and, for `wide` strings, not the second
//! half of a wide word character), so that a boundary at the edge is also a
//! boundary in the real stream. An edge that is a real edge of the data
//! (stream start, line edges, the end of what was seen so far) is quiet.
//!
//! Spans are kept sorted and merged when they overlap or touch within the
//! same *segment* (the whole stream in chunk mode, one line in line mode:
//! lines never merge, since no match spans two lines).

use serde::{Deserialize, Serialize};

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
        }
    }

    fn joins(&self, next: &ReplaySpan) -> bool {
        self.segment == next.segment && next.start <= self.end()
    }
}

/// A sorted set of disjoint spans, merged on insertion.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SpanSet {
    spans: Vec<ReplaySpan>,
}

impl SpanSet {
    /// Adds a span, merging it with the spans it overlaps or touches.
    pub fn insert(&mut self, span: ReplaySpan) {
        let key = |s: &ReplaySpan| (s.segment, s.start);
        let at = self.spans.partition_point(|s| key(s) < key(&span));
        // Merge with the previous span when it reaches this one.
        let at = if at > 0 && self.spans[at - 1].joins(&span) {
            self.spans[at - 1].absorb(span);
            at - 1
        } else {
            self.spans.insert(at, span);
            at
        };
        while at + 1 < self.spans.len() && self.spans[at].joins(&self.spans[at + 1]) {
            let next = self.spans.remove(at + 1);
            self.spans[at].absorb(next);
        }
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
        self.spans.clear()
    }

    /// Bytes held by the spans.
    pub fn byte_len(&self) -> usize {
        self.spans.iter().map(|s| s.bytes.len()).sum()
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
    bytes.iter().filter(|&&b| b == b'\n').count() as u64
}

/// Bytes that can make a word boundary disappear: ASCII letters, digits and
/// `_` (regex `\w`).
fn is_word(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || byte == b'_'
}

/// Whether a block starting at `data[i]` sees the same left boundary as the
/// real stream. `real_start` says `data[0]` is a real edge of the data.
fn quiet_left(data: &[u8], i: usize, real_start: bool) -> bool {
    match i {
        0 => real_start,
        1 => !is_word(data[0]) && (data[0] != 0 || real_start),
        _ => !is_word(data[i - 1]) && !(data[i - 1] == 0 && is_word(data[i - 2])),
    }
}

/// Whether a block ending before `data[j]` sees the same right boundary as
/// the real stream. `real_end` says the end of `data` is a real edge.
fn quiet_right(data: &[u8], j: usize, real_end: bool) -> bool {
    if j == data.len() {
        real_end
    } else {
        !is_word(data[j])
    }
}

/// The range to replay for a match at `range` of `data`: the match grown to
/// quiet edges, by at most [`SPAN_CONTEXT`] bytes each side.
pub fn replay_range(
    data: &[u8],
    range: std::ops::Range<usize>,
    real_start: bool,
    real_end: bool,
) -> std::ops::Range<usize> {
    let mut start = range.start;
    let floor = range.start.saturating_sub(SPAN_CONTEXT);
    while start > floor && !quiet_left(data, start, real_start) {
        start -= 1;
    }
    let mut end = range.end;
    let ceiling = (range.end + SPAN_CONTEXT).min(data.len());
    while end < ceiling && !quiet_right(data, end, real_end) {
        end += 1;
    }
    start..end
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

    #[test]
    fn replay_range_grows_to_word_boundaries() {
        let data = b"xx hello-world yy";
        // "llo" grows to "hello" on the left and to the '-' on the right.
        assert_eq!(replay_range(data, 5..8, false, false), 3..8);
        assert_eq!(&data[replay_range(data, 9..11, false, false)], b"world");
    }

    #[test]
    fn replay_range_stops_at_the_context_limit() {
        let data = [b'a'; 100];
        assert_eq!(replay_range(&data, 50..52, false, false), 34..68);
        assert_eq!(replay_range(&data, 2..4, true, true), 0..20);
    }

    #[test]
    fn wide_word_characters_are_not_quiet() {
        // "A\0" is a wide word character: the edge after it is not quiet.
        let data = b"..A\0B\0";
        assert_eq!(replay_range(data, 4..6, false, true), 2..6);
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
