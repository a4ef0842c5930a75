//! One batch of the search: the bytes buffered by many streams, searched by
//! the shared YARA-X block scanner in one go.
//!
//! Every stream that received bytes since the last batch contributes
//! *segments*: in chunk mode one, `tail ++ pending` (the tail rescans the
//! end of the previous batch so that a match can span chunks); in line mode
//! one per line. Each segment gets its own range of the scanner's address
//! space (addresses start at 1: a block at address 0 would apply YARA-X's
//! header constraints) and is scanned as one block. One `finish()` per batch
//! then yields every match of every stream; a match is routed back to its
//! segment by address.
//!
//! A block sees the stream only through its own edges, so a match is only
//! believed where the block gave it full context (see [`Acceptance`]); the
//! rest is found again by the next batch, whose segment starts far enough
//! back.

use std::ops::Range;

use uuid::Uuid;

use crate::rules::EdgeGuard;
use crate::stream::span::{count_newlines, replay_range, SPAN_CONTEXT};
use crate::stream::{ReplaySpan, StreamContext, StreamMode};

/// Where a segment's bytes come from.
#[derive(Debug, Clone)]
pub(crate) struct Segment {
    /// The stream it belongs to.
    pub stream: Uuid,
    /// Scanner address of its first byte.
    pub addr: usize,
    /// Stream offset of its first byte.
    pub start: u64,
    /// Its bytes in the batch buffer.
    pub bytes: Range<usize>,
    /// 1-based line number of its first byte.
    pub first_line: u64,
    /// Line index (line mode), or `None` (chunk mode).
    pub line: Option<u64>,
    /// Whether the segment shares one block with others (its edges are
    /// seams, not the stream's edges).
    pub packed: bool,
}

/// The window arithmetic shared by the batch and the streams.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Window {
    /// Longest match guaranteed to be found whole (`W`).
    pub longest_match: usize,
    /// Bytes each stream keeps and rescans: `W + 2 * SPAN_CONTEXT - 1`, so
    /// that a match not settled in one block is seen again, with full left
    /// context, by the next.
    pub tail_len: usize,
    /// Stream prefix replayed for anchored patterns (0: none).
    pub head_len: usize,
}

impl Window {
    pub fn new(longest_match: usize, head_len: usize) -> Window {
        Window {
            longest_match,
            tail_len: longest_match + 2 * SPAN_CONTEXT - 1,
            head_len,
        }
    }
}

/// What a block's view of a match is worth.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Acceptance {
    /// Final: the block showed the match with full context on both sides.
    Settled,
    /// Right only if the stream ends where the block ends.
    Provisional,
    /// Seen without its left context; the block that settles it is another.
    Ignored,
}

impl Segment {
    /// Judges a match that starts at stream offset `start`.
    pub fn accept(&self, start: u64, window: &Window) -> Acceptance {
        let end = self.start + self.bytes.len() as u64;
        if self.line.is_some() {
            return Acceptance::Settled; // a line is a whole document
        }
        let context = SPAN_CONTEXT as u64;
        if self.start != 0 && start < self.start + context {
            return Acceptance::Ignored;
        }
        if start + window.longest_match as u64 + context <= end {
            Acceptance::Settled
        } else if self.packed {
            // The block goes on past the stream's end: settled later.
            Acceptance::Ignored
        } else {
            Acceptance::Provisional
        }
    }
}

/// Scanner address of the packed block: far above every standalone block
/// (a batch holds far less than 2^40 bytes).
const PACKED_BASE: usize = 1 << 40;

/// The segments of one batch and their bytes.
///
/// Standalone segments are scanned one block each, so their edges are the
/// stream's edges as far as YARA-X can tell: a stream's first bytes (where
/// `^` and `at 0` live) and streams whose verdict is wanted now (their end
/// must look like the end of the data). Every other chunk segment goes into
/// one packed block: one `scan()` for all of them, whatever their number,
/// which is what makes packet-sized chunks cheap. The acceptance rule keeps
/// only matches with full context, so nothing found across a seam is
/// believed; what a packed segment leaves unsettled at its end is settled
/// later by the stream's next segment or by a standalone rescan of its tail.
#[derive(Debug, Default)]
pub(crate) struct Batch {
    standalone: Vec<u8>,
    packed: Vec<u8>,
    pub segments: Vec<Segment>,
    next_addr: usize,
}

impl Batch {
    /// Adds a stream's tail and pending bytes. `standalone` asks for blocks
    /// of their own; a stream's first bytes and lines always get them.
    pub fn add_stream(&mut self, ctx: &StreamContext, standalone: bool) {
        match ctx.mode {
            StreamMode::Chunks => {
                let start = ctx.searched - ctx.tail.len() as u64;
                let first_line = 1 + ctx.searched_newlines - count_newlines(&ctx.tail);
                let packed = !standalone && start > 0;
                let bytes = self.push_bytes(&[&ctx.tail, &ctx.pending], packed);
                self.push_segment(ctx.id, start, bytes, first_line, None, packed);
            }
            StreamMode::Lines => {
                let mut offset = 0;
                let mut start = ctx.searched;
                for (i, &len) in ctx.pending_lines.iter().enumerate() {
                    let bytes = self.push_bytes(&[&ctx.pending[offset..offset + len]], false);
                    let index = ctx.searched_lines + i as u64;
                    self.push_segment(ctx.id, start, bytes, index + 1, Some(index), false);
                    offset += len;
                    start += len as u64;
                }
            }
        }
    }

    /// Bytes searched by this batch, tails included.
    pub fn len(&self) -> usize {
        self.standalone.len() + self.packed.len()
    }

    fn push_bytes(&mut self, parts: &[&[u8]], packed: bool) -> Range<usize> {
        let buf = if packed {
            &mut self.packed
        } else {
            &mut self.standalone
        };
        let from = buf.len();
        parts.iter().for_each(|part| buf.extend_from_slice(part));
        from..buf.len()
    }

    fn push_segment(
        &mut self,
        stream: Uuid,
        start: u64,
        bytes: Range<usize>,
        first_line: u64,
        line: Option<u64>,
        packed: bool,
    ) {
        let addr = if packed {
            PACKED_BASE + bytes.start
        } else {
            // Address 0 is never used, and a gap keeps blocks apart.
            let addr = self.next_addr.max(1);
            self.next_addr = addr + bytes.len() + 1;
            addr
        };
        self.segments.push(Segment {
            stream,
            addr,
            start,
            bytes,
            first_line,
            line,
            packed,
        });
    }

    /// The bytes of a segment.
    pub fn data(&self, segment: &Segment) -> &[u8] {
        let buf = if segment.packed {
            &self.packed
        } else {
            &self.standalone
        };
        &buf[segment.bytes.clone()]
    }

    /// Scans every segment as one block and returns, per segment, the
    /// ranges (within the segment) of all matches found, sorted and without
    /// duplicates.
    pub fn search(
        &self,
        scanner: &mut yara_x::blocks::Scanner<'_>,
    ) -> Result<Vec<Vec<Range<usize>>>, yara_x::ScanError> {
        let standalone = self
            .segments
            .iter()
            .filter(|s| !s.packed)
            .map(|s| (s.addr, self.data(s)));
        let packed = (!self.packed.is_empty()).then_some((PACKED_BASE, self.packed.as_slice()));
        for (addr, data) in standalone.chain(packed) {
            if let Err(err) = scanner.scan(addr, data) {
                // Reset the scanner so the next batch starts clean.
                let _ = scanner.finish();
                return Err(err);
            }
        }
        let results = scanner.finish()?;
        let mut by_addr: Vec<usize> = (0..self.segments.len()).collect();
        by_addr.sort_unstable_by_key(|&i| self.segments[i].addr);
        let mut found = vec![Vec::new(); self.segments.len()];
        let rules = results.matching_rules().include_private(true);
        for rule in rules.chain(results.non_matching_rules().include_private(true)) {
            for pattern in rule.patterns().include_private(true) {
                for m in pattern.matches() {
                    if let Some((index, range)) = self.locate(&by_addr, m.range()) {
                        found[index].push(range);
                    }
                }
            }
        }
        for ranges in &mut found {
            ranges.sort_by_key(|r| (r.start, r.end));
            ranges.dedup();
        }
        Ok(found)
    }

    /// The segment holding an address range, and the range within it.
    fn locate(&self, by_addr: &[usize], addrs: Range<usize>) -> Option<(usize, Range<usize>)> {
        let at = by_addr
            .partition_point(|&i| self.segments[i].addr <= addrs.start)
            .checked_sub(1)?;
        let index = by_addr[at];
        let segment = &self.segments[index];
        let range = addrs.start - segment.addr..addrs.end - segment.addr;
        (range.end <= segment.bytes.len()).then_some((index, range))
    }

    /// The replay span of a match: the match grown to quiet edges.
    pub fn span_of(
        &self,
        segment: &Segment,
        range: Range<usize>,
        real_end: bool,
        guard: &EdgeGuard,
    ) -> ReplaySpan {
        let data = self.data(segment);
        let real_start = segment.start == 0 || segment.line.is_some();
        let real_end = real_end || segment.line.is_some();
        let grown = replay_range(data, range, real_start, real_end, guard);
        ReplaySpan {
            start: segment.start + grown.start as u64,
            segment: segment.line.unwrap_or(0),
            line: segment.line.map_or_else(
                || segment.first_line + count_newlines(&data[..grown.start]),
                |index| index + 1,
            ),
            bytes: data[grown].to_vec(),
        }
    }
}
