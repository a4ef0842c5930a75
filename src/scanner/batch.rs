//! One batch of the search: the bytes buffered by many streams, searched by
//! the shared YARA-X block scanner in one go.
//!
//! Every chunk a stream receives is copied once, on arrival, into the batch
//! as a *segment*: the stream's tail followed by the chunk (the tail rescans
//! the end of the previous chunk so that a match can span chunks). Every
//! line is a segment of its own. Each segment gets its own range of the
//! scanner's address space (addresses start at 1: a block at address 0
//! would apply YARA-X's header constraints). One `finish()` per batch then
//! yields every match of every stream; a match is routed back to its
//! segment by address.
//!
//! A block sees the stream only through its own edges, so a match is only
//! believed where the block gave it full context (see [`Acceptance`]); the
//! rest is found again by the stream's next segment, which starts far
//! enough back, or by a rescan of the tail when a verdict is asked.

use std::ops::Range;

use uuid::Uuid;

use crate::error::ScanError;
use crate::rules::head::HeadPlan;
use crate::rules::open_ended::WalkMemo;
use crate::rules::{EdgeGuard, MatchReads, PreconditionPlan, RuleSet, TailPlan};
use crate::stream::span::{count_newlines, replay_range_after, MAX_SPAN_GROWTH, SPAN_CONTEXT};
use crate::stream::{ReplaySpan, StreamContext};

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
    /// The stream's epoch when the segment was added.
    pub epoch: u64,
    /// Stream offset of the segment's first new byte (the bytes before were
    /// searched by the stream's previous segment, which settled every match
    /// it could; a tail rescan has no new byte).
    pub fresh_from: u64,
    /// Bytes of its stream's later chunks that wait at the end of the
    /// buffer, to be laid out after `bytes` before the search (see
    /// [`Batch::lay_out`]).
    pub appended: usize,
}

/// What a chunk stream keeps of its first bytes. (What it keeps of its
/// last ones follows its rules' [`TailPlan`].)
#[derive(Debug, Clone, Copy)]
pub(crate) struct Window {
    /// Stream prefix replayed for anchored patterns (0: none).
    pub head_len: usize,
    /// Stream prefix the rules' header reads need (see
    /// `rules::data_values`), kept with the head but not replayed.
    pub values_len: usize,
}

impl Window {
    pub fn new(head_len: usize, values_len: usize) -> Window {
        Window {
            head_len,
            values_len,
        }
    }

    /// Bytes of a chunk stream's head to keep: the head plus context, and
    /// at least what header reads need.
    pub fn head_keep(&self) -> usize {
        let replayed = match self.head_len {
            0 => 0,
            len => len + MAX_SPAN_GROWTH + 1,
        };
        replayed.max(self.values_len)
    }
}

/// A match the search found in a segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Found {
    /// Where it lies in the segment.
    pub range: Range<usize>,
    /// The longest match of its pattern (see [`TailPlan::pattern_reach`]): a
    /// block settles it when it shows this many bytes from its start, and
    /// the context after them.
    pub reach: usize,
    /// The precondition of its rule (see `rules::preconditions`): where
    /// the stream fails it, the match is dropped.
    pub precondition: Option<u32>,
    /// The match reads over its pattern (see `rules::match_reads`): the
    /// settled match's bytes tell which of them hold.
    pub reads: u64,
}

/// What the search needs of a rule set beside its compiled rules.
#[derive(Clone, Copy)]
pub(crate) struct SearchPlans<'r> {
    /// Each pattern's reach, and the open-ended regexes' walks.
    pub tail: &'r TailPlan,
    /// The rules' preconditions, by which matches are dropped.
    pub preconditions: &'r PreconditionPlan,
    /// The anchors past the head, which the search checks itself.
    pub head: &'r HeadPlan,
    /// The reads of matches' own bytes.
    pub match_reads: &'r MatchReads,
}

impl<'r> SearchPlans<'r> {
    /// The plans of `rules`.
    pub fn of(rules: &'r RuleSet) -> SearchPlans<'r> {
        SearchPlans {
            tail: rules.tail_plan(),
            preconditions: rules.preconditions(),
            head: &rules.analysis().head,
            match_reads: rules.match_reads(),
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
    /// Stream offset one past the segment's last byte.
    pub fn end(&self) -> u64 {
        self.start + (self.bytes.len() + self.appended) as u64
    }

    /// Judges a match that starts at stream offset `start`, of a pattern
    /// whose longest match is `reach`. `at_stream_end` says the block ended
    /// where the stream (so far) ends.
    pub fn accept(&self, start: u64, reach: usize, at_stream_end: bool) -> Acceptance {
        let end = self.end();
        if self.line.is_some() {
            return Acceptance::Settled; // a line is a whole document
        }
        let context = SPAN_CONTEXT as u64;
        // At a stream's start the block's edge is the stream's, even in a
        // packed block: it is packed only when no pattern looks left.
        if self.start != 0 && start < self.start + context {
            return Acceptance::Ignored;
        }
        let settles = |end: u64| start + reach as u64 + context <= end;
        if settles(end) {
            // Settled here unless the previous segment settled it already.
            if settles(self.fresh_from) {
                Acceptance::Ignored
            } else {
                Acceptance::Settled
            }
        } else if at_stream_end {
            Acceptance::Provisional
        } else {
            // The stream goes on: a later segment settles the match.
            Acceptance::Ignored
        }
    }
}

impl Segment {
    /// Whether a match found in this segment runs past its end, into the
    /// bytes that followed it in the block: not a match of the stream as
    /// it is (it is dropped, and found again by a later search).
    pub fn crosses_end(&self, range: &std::ops::Range<usize>) -> bool {
        range.end > self.bytes.len()
    }

    /// Whether a search of this chunk segment, the last of its stream so
    /// far, leaves nothing for a search of the stream's tail as the end of
    /// the data to find: every match it found starts early enough to have
    /// settled here, and none ran past its end (in a packed block the bytes
    /// after a segment are another stream's, so a match running into them,
    /// for example `c.?` on a final `c`, would be found again, shorter, at
    /// the stream's real end), and `end_quiet` says the segment's end is a
    /// quiet block end ([`crate::rules::EdgeGuard::blocks_end`] is false,
    /// or the rules have no context-sensitive pattern).
    ///
    /// Why that is enough: a match the tail alone would give starts in the
    /// tail, past its first [`SPAN_CONTEXT`] bytes (the others are not
    /// believed there), so with its left context whole. One that ends
    /// before the end sees the same bytes on both sides as in this search,
    /// which found none starting there. What the end of the data can
    /// change (`$`, a word boundary there, a `fullword` regex's match cut
    /// short, a base64 decode range cut) needs a context-sensitive pattern
    /// that could match up to the end, which a quiet end rules out. So
    /// closing such a stream needs no search, which was most of the cost
    /// of closing a stream with real rules (a `scan()` and a harvest of
    /// every rule per close).
    pub fn leaves_tail_settled(&self, found: &[Found], end_quiet: impl FnOnce() -> bool) -> bool {
        let context = SPAN_CONTEXT as u64;
        self.line.is_none()
            && found.iter().all(|found| {
                !self.crosses_end(&found.range)
                    && self.start + (found.range.start + found.reach) as u64 + context <= self.end()
            })
            && end_quiet()
    }
}

/// Scanner address of the packed block: far above every standalone block
/// (a batch holds far less than 2^40 bytes).
const PACKED_BASE: usize = 1 << 40;

/// The segments of one batch and their bytes.
///
/// Standalone segments are scanned one block each, so their edges are the
/// stream's edges as far as YARA-X can tell: lines, a stream's first bytes
/// (where `^` and `at 0` live) and the tails of streams whose verdict is
/// wanted now (their end must look like the end of the data). Every other
/// chunk segment goes into one packed block: one `scan()` for all of them,
/// whatever their number, which is what makes packet-sized chunks cheap.
/// The acceptance rule keeps only matches with full context, so nothing
/// found across a seam is believed.
#[derive(Debug, Default)]
pub(crate) struct Batch {
    standalone: Vec<u8>,
    packed: Vec<u8>,
    pub segments: Vec<Segment>,
    next_addr: usize,
    /// Segments scanned as blocks of their own.
    standalone_segments: usize,
    /// Chunks appended to an earlier segment of their stream: its index,
    /// and where they are in its buffer.
    appended: Vec<(usize, Range<usize>)>,
    /// A spare buffer for [`Self::lay_out`].
    spare: Vec<u8>,
}

/// Most standalone segments (lines, streams' first chunks, tails) in one
/// batch. YARA-X's block scanner walks every match of the batch found so
/// far on each `scan()` call, so a batch of many blocks that finds many
/// matches (short lines full of matches, say) costs (blocks x matches):
/// the batch is searched before it holds more blocks than this.
pub(crate) const MAX_STANDALONE_SEGMENTS: usize = 1024;

/// A chunk at least this many times its stream's tail gets a segment of
/// its own, even with its stream's segment in the batch (see
/// [`Batch::earlier_segment`]).
const TAIL_SHARE_REPEATED: usize = 8;

impl Batch {
    /// Adds a chunk of a chunk stream, before the context counts it, and
    /// notes in the context where it went. The segment is the stream's
    /// tail followed by the chunk. A stream's first bytes get a block of
    /// their own unless `pack_starts` (no pattern of the rule set looks at
    /// what precedes a match, or is anchored); the rest is packed.
    ///
    /// A chunk of a stream that has a segment in the batch already joins
    /// that segment: chunks of a stream are searched as one chunk, however
    /// many arrive before the search and whatever comes between them. Each
    /// in a segment of its own would rescan the stream's tail, which can be
    /// kilobytes (an open-ended regex's walk, a long pattern): streams fed
    /// 1-byte chunks made batches thousands of times their bytes, and as
    /// many copies of each match the tail held. Only a chunk far longer
    /// than its stream's tail repeats the tail instead (see
    /// [`Self::earlier_segment`]).
    pub fn add_chunk(&mut self, ctx: &mut StreamContext, chunk: &[u8], pack_starts: bool) {
        let placed = match self.earlier_segment(ctx, chunk.len()) {
            Some(index) => self.append_to(index, chunk),
            None => {
                let start = ctx.tail_start();
                let packed = start > 0 || pack_starts;
                let bytes = self.push_bytes(&[&ctx.tail, chunk], packed);
                self.push_segment(ctx, start, bytes, ctx.tail_first_line(), None, packed)
            }
        };
        (ctx.batch_segment, ctx.batch_ends_standalone) = placed;
    }

    /// The index of the stream's segment in this batch that ends where the
    /// stream does, if it has one (and is not a line), for a chunk of
    /// `len` bytes to join. Unless the segment ends the batch, joining it
    /// costs a copy of the batch before the search (see [`Self::lay_out`]),
    /// so a chunk that outweighs its stream's tail by far makes a segment
    /// of its own instead: its tail is searched again, at most
    /// 1/[`TAIL_SHARE_REPEATED`] more bytes.
    fn earlier_segment(&self, ctx: &StreamContext, len: usize) -> Option<usize> {
        let index = ctx.batch_segment;
        let segment = self.segments.get(index).filter(|_| ctx.in_batch)?;
        let same_stream = segment.stream == ctx.id && segment.epoch == ctx.epoch;
        let joins = same_stream && segment.line.is_none() && segment.end() == ctx.stats.bytes;
        let ends_batch = index + 1 == self.segments.len();
        let tail_repeats_cheaply = ctx.tail.len() * TAIL_SHARE_REPEATED <= len;
        (joins && (ends_batch || !tail_repeats_cheaply)).then_some(index)
    }

    /// Appends a chunk to the segment at `index`: in place when that is the
    /// batch's last segment and its bytes end the buffer, else at the
    /// buffer's end, laid out before the search. Where it went, as
    /// [`Self::push_segment`] says it.
    fn append_to(&mut self, index: usize, chunk: &[u8]) -> (usize, bool) {
        let last = index + 1 == self.segments.len();
        let segment = &mut self.segments[index];
        let buf = match segment.packed {
            true => &mut self.packed,
            false => &mut self.standalone,
        };
        let from = buf.len();
        buf.extend_from_slice(chunk);
        // In place only as the batch's last segment: a segment after it,
        // even an empty one, has the next address.
        if last && segment.bytes.end == from && segment.appended == 0 {
            segment.bytes.end = buf.len();
            if !segment.packed {
                self.next_addr = segment.addr + segment.bytes.len() + 1;
            }
        } else {
            segment.appended += chunk.len();
            match self.appended.last_mut() {
                Some((at, piece)) if *at == index && piece.end == from => piece.end = buf.len(),
                _ => self.appended.push((index, from..buf.len())),
            }
        }
        (index, !segment.packed)
    }

    /// Adds every byte of a chunk stream whose search was deferred, after
    /// the context counted them: one chunk from offset 0. Notes in the
    /// context where they went, as [`Self::add_chunk`] does.
    pub fn add_whole_stream(&mut self, ctx: &mut StreamContext, bytes: &[u8], pack_starts: bool) {
        debug_assert_eq!(bytes.len() as u64, ctx.stats.bytes);
        let bytes = self.push_bytes(&[bytes], pack_starts);
        let placed = self.push_segment(ctx, 0, bytes, 1, None, pack_starts);
        // Every byte is new to the search, though the context counted it.
        if let Some(segment) = self.segments.last_mut() {
            segment.fresh_from = 0;
        }
        (ctx.batch_segment, ctx.batch_ends_standalone) = placed;
    }

    /// Adds a line of a line stream, before the context counts it. A line
    /// is a whole document: it always gets a block of its own.
    pub fn add_line(&mut self, ctx: &StreamContext, line: &[u8]) {
        let bytes = self.push_bytes(&[line], false);
        let index = ctx.stats.lines;
        self.push_segment(ctx, ctx.stats.bytes, bytes, index + 1, Some(index), false);
    }

    /// Adds the tail of a chunk stream as a block of its own, so that its end
    /// looks like the end of the data: what matches there is provisional.
    pub fn add_tail(&mut self, ctx: &StreamContext) {
        let bytes = self.push_bytes(&[&ctx.tail], false);
        self.push_segment(
            ctx,
            ctx.tail_start(),
            bytes,
            ctx.tail_first_line(),
            None,
            false,
        );
    }

    /// Whether the batch holds no segment.
    pub fn is_empty(&self) -> bool {
        self.segments.is_empty()
    }

    /// Segments the batch scans as blocks of their own.
    pub fn standalone_segments(&self) -> usize {
        self.standalone_segments
    }

    /// Empties the batch, keeping its buffers for the next one.
    pub fn clear(&mut self) {
        self.standalone.clear();
        self.packed.clear();
        self.segments.clear();
        self.next_addr = 0;
        self.standalone_segments = 0;
        self.appended.clear();
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

    /// Adds a segment; its index, and whether it is a block of its own.
    fn push_segment(
        &mut self,
        ctx: &StreamContext,
        start: u64,
        bytes: Range<usize>,
        first_line: u64,
        line: Option<u64>,
        packed: bool,
    ) -> (usize, bool) {
        let addr = if packed {
            PACKED_BASE + bytes.start
        } else {
            self.standalone_segments += 1;
            standalone_addr(&mut self.next_addr, bytes.len())
        };
        self.segments.push(Segment {
            stream: ctx.id,
            addr,
            start,
            bytes,
            first_line,
            line,
            packed,
            epoch: ctx.epoch,
            fresh_from: ctx.stats.bytes,
            appended: 0,
        });
        (self.segments.len() - 1, !packed)
    }

    /// Lays every segment's appended chunks out right after its bytes, so
    /// that each segment is one run of bytes again: one copy of the batch,
    /// when some stream's chunks were not back to back.
    fn lay_out(&mut self) {
        if self.appended.is_empty() {
            return;
        }
        self.appended.sort_by_key(|(index, _)| *index);
        self.lay_out_buffer(true);
        self.lay_out_buffer(false);
        self.appended.clear();
        for segment in &mut self.segments {
            segment.appended = 0;
        }
    }

    /// [`Self::lay_out`] for the packed buffer or the other one: segments
    /// keep their order, and standalone ones get addresses anew as
    /// [`Self::push_segment`] gives them.
    fn lay_out_buffer(&mut self, packed: bool) {
        let (mut from, mut pieces) = (std::mem::take(&mut self.spare), self.appended.iter());
        let to = match packed {
            true => &mut self.packed,
            false => &mut self.standalone,
        };
        std::mem::swap(&mut from, to);
        to.clear();
        if !packed {
            self.next_addr = 0;
        }
        let mut piece = pieces.next();
        for (index, segment) in self.segments.iter_mut().enumerate() {
            while piece.is_some_and(|p| p.0 < index) {
                piece = pieces.next();
            }
            if segment.packed != packed {
                continue;
            }
            let start = to.len();
            to.extend_from_slice(&from[segment.bytes.clone()]);
            while let Some((_, bytes)) = piece.filter(|p| p.0 == index) {
                to.extend_from_slice(&from[bytes.clone()]);
                piece = pieces.next();
            }
            segment.bytes = start..to.len();
            segment.addr = match packed {
                true => PACKED_BASE + start,
                false => standalone_addr(&mut self.next_addr, segment.bytes.len()),
            };
        }
        self.spare = from;
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

    /// Scans every segment as one block and returns, per segment, all
    /// matches found (their ranges within the segment, the reach of their
    /// patterns in the tail plan, and their rules' preconditions), sorted
    /// and without duplicates.
    pub fn search(
        &mut self,
        scanner: &mut yara_x::blocks::Scanner<'_>,
        plans: SearchPlans<'_>,
    ) -> Result<Vec<Vec<Found>>, ScanError> {
        self.lay_out();
        let standalone = self
            .segments
            .iter()
            .filter(|s| !s.packed)
            .map(|s| (s.addr, self.data(s)));
        let packed = (!self.packed.is_empty()).then_some((PACKED_BASE, self.packed.as_slice()));
        let all = 0..self.segments.len();
        self.search_blocks(scanner, plans, standalone.chain(packed), all)
    }

    /// Searches only the segments at `indices` (of one stream, after the
    /// whole batch's search failed), each as a block of its own; the same
    /// answer as [`Self::search`], with nothing for the other segments. A
    /// packed segment alone is a block whose edges are seams, as it was.
    pub fn search_segments(
        &self,
        scanner: &mut yara_x::blocks::Scanner<'_>,
        plans: SearchPlans<'_>,
        indices: &[usize],
    ) -> Result<Vec<Vec<Found>>, ScanError> {
        let blocks = indices.iter().map(|&i| {
            let segment = &self.segments[i];
            (segment.addr, self.data(segment))
        });
        self.search_blocks(scanner, plans, blocks, indices.iter().copied())
    }

    /// Scans `blocks`, which hold the segments at `indices`, and gives what
    /// YARA-X and the far anchors found in them.
    fn search_blocks<'d>(
        &'d self,
        scanner: &mut yara_x::blocks::Scanner<'_>,
        plans: SearchPlans<'_>,
        blocks: impl Iterator<Item = (usize, &'d [u8])>,
        indices: impl Iterator<Item = usize>,
    ) -> Result<Vec<Vec<Found>>, ScanError> {
        let (plan, preconditions) = (plans.tail, plans.preconditions);
        for (addr, data) in blocks {
            if let Err(err) = scanner.scan(addr, data) {
                // Reset the scanner so the next batch starts clean.
                let _ = scanner.finish();
                return Err(err.into());
            }
        }
        let results = scanner.finish()?;
        let mut by_addr: Vec<usize> = (0..self.segments.len()).collect();
        by_addr.sort_unstable_by_key(|&i| self.segments[i].addr);
        let mut found = vec![Vec::new(); self.segments.len()];
        let rules = results.matching_rules().include_private(true);
        let mut memo = WalkMemo::default();
        for rule in rules.chain(results.non_matching_rules().include_private(true)) {
            // Patterns come in declaration order, as the plan has them.
            let mut precondition = None;
            for (index, pattern) in rule.patterns().include_private(true).enumerate() {
                // Looked up once per pattern, and only when it matched.
                let mut reaches = None;
                let mut reads = None;
                // The segment whose walks `memo` remembers.
                let mut walked = None;
                for m in pattern.matches() {
                    if let Some((segment, range)) = self.locate(&by_addr, m.range()) {
                        let (most, open_ended) = *reaches
                            .get_or_insert_with(|| plan.pattern_reach(rule.identifier(), index));
                        // An open-ended regex's match reaches where the walk
                        // from its start dies in its own segment.
                        let reach = open_ended
                            .and_then(|regex| {
                                if walked.replace(segment) != Some(segment) {
                                    memo.forget();
                                }
                                let data = self.data(&self.segments[segment]);
                                regex.reach_from_memo(data, range.start, &mut memo)
                            })
                            .unwrap_or(most);
                        let precondition = *precondition.get_or_insert_with(|| {
                            preconditions.precondition_of(rule.identifier())
                        });
                        let reads = *reads.get_or_insert_with(|| {
                            plans.match_reads.of_pattern(rule.identifier(), index)
                        });
                        found[segment].push(Found {
                            range,
                            reach,
                            precondition,
                            reads,
                        });
                    }
                }
            }
        }
        self.add_far_hits(&mut found, plans, indices);
        for matches in &mut found {
            matches.sort_unstable_by_key(|m| (m.range.start, m.range.end, m.reach, m.precondition));
            // The same match of patterns of several rules is one match,
            // with every match read of theirs.
            matches.dedup_by(|later, kept| {
                let same = (&later.range, later.reach, later.precondition)
                    == (&kept.range, kept.reach, kept.precondition);
                if same {
                    kept.reads |= later.reads;
                }
                same
            });
        }
        Ok(found)
    }

    /// Adds the hits of the anchors past the head (`rules::head::FarAnchor`)
    /// in the segments at `indices` to what was found there: YARA-X checks
    /// an anchored literal only at its offset from a block's base, which a
    /// segment's address is not. (A line's block in a line stream's
    /// contract starts at the line's stream offset, as its segment does.)
    fn add_far_hits(
        &self,
        found: &mut [Vec<Found>],
        plans: SearchPlans<'_>,
        indices: impl Iterator<Item = usize>,
    ) {
        for index in indices {
            let segment = &self.segments[index];
            for (range, rule) in plans.head.far_hits(segment.start, self.data(segment)) {
                found[index].push(Found {
                    reach: range.len(),
                    precondition: plans.preconditions.precondition_of(rule),
                    range,
                    reads: 0,
                });
            }
        }
    }

    /// The segment where an address range starts, and the range within it.
    /// The range may end past the segment (a match that ran into the bytes
    /// that follow it in the packed block): see [`Segment::crosses_end`].
    fn locate(&self, by_addr: &[usize], addrs: Range<usize>) -> Option<(usize, Range<usize>)> {
        let at = by_addr
            .partition_point(|&i| self.segments[i].addr <= addrs.start)
            .checked_sub(1)?;
        let index = by_addr[at];
        let segment = &self.segments[index];
        let range = addrs.start - segment.addr..addrs.end - segment.addr;
        (range.start < segment.bytes.len()).then_some((index, range))
    }

    /// The replay span of a match: the match grown to quiet edges. `lines`
    /// is the segment's line cursor (see [`LineCursor`]); `previous` is
    /// the stream's last settled span, which the new one may merge with.
    pub fn span_of(
        &self,
        segment: &Segment,
        range: Range<usize>,
        real_end: bool,
        guard: &EdgeGuard,
        lines: &mut LineCursor,
        previous: Option<&ReplaySpan>,
    ) -> ReplaySpan {
        let data = self.data(segment);
        // A match may run past the block's end (see `settle`): its span
        // ends with the data.
        let range = range.start.min(data.len())..range.end.min(data.len());
        let real_start = segment.start == 0 || segment.line.is_some();
        let real_end = real_end || segment.line.is_some();
        let before = bytes_before(segment, previous);
        let grown = replay_range_after(before, data, range, real_start, real_end, guard);
        let from = grown.range.start;
        ReplaySpan {
            start: segment.start + from as u64,
            segment: segment.line.unwrap_or(0),
            line: segment
                .line
                .map_or_else(|| lines.line_at(data, from), |index| index + 1),
            bytes: data[grown.range].to_vec(),
            quiet_start: grown.quiet_start,
            quiet_end: grown.quiet_end,
        }
    }

    /// `span` (of a match settled in `segment`), extended back over the
    /// real bytes between it and `previous` (the stream's last settled
    /// span) when the gap is at most [`BRIDGE_GAP`] bytes and the segment
    /// holds it: the two then merge into one span. Chunk mode only (lines
    /// never merge).
    ///
    /// Why: YARA-X's block scanner walks every match found so far on each
    /// `scan()` call, so replaying a verdict costs (spans x matches); a
    /// stream with matches every few bytes (a repeated header, say) kept
    /// one span per match and its verdict was quadratic in its matches.
    /// Bridged, dense matches replay as a few long blocks. It is exact:
    /// the bridge is real bytes, and the merged span's edges are the two
    /// spans' outer edges, judged on the merged bytes: `span`'s end with
    /// `previous`'s bytes in front (see [`Batch::span_of`]), `previous`'s
    /// start here (see [`start_holds_bridged`]); no bridge where it is not
    /// quiet.
    pub fn bridge(
        &self,
        segment: &Segment,
        previous: Option<&ReplaySpan>,
        mut span: ReplaySpan,
        guard: &EdgeGuard,
    ) -> ReplaySpan {
        let Some(previous) = previous else {
            return span;
        };
        let gap_start = previous.end();
        if segment.line.is_some()
            || previous.segment != span.segment
            || gap_start >= span.start
            || span.start - gap_start > BRIDGE_GAP as u64
            || gap_start < segment.start
        {
            return span;
        }
        let data = self.data(segment);
        let from = (gap_start - segment.start) as usize;
        let to = (span.start - segment.start) as usize;
        if !start_holds_bridged(previous, data, segment.start, guard) {
            return span;
        }
        let mut bytes = Vec::with_capacity(to - from + span.bytes.len());
        bytes.extend_from_slice(&data[from..to]);
        bytes.extend_from_slice(&span.bytes);
        span.line = previous.line_at(gap_start, false);
        span.start = gap_start;
        span.bytes = bytes;
        span
    }
}

/// The address of the next block of its own, of `len` bytes, and the one
/// after it: address 0 is never used, and a gap keeps blocks apart.
fn standalone_addr(next_addr: &mut usize, len: usize) -> usize {
    let addr = (*next_addr).max(1);
    *next_addr = addr + len + 1;
    addr
}

/// The bytes of `previous` (a stream's last settled span) before the
/// first byte of `segment`, when the two touch or overlap: a span settled
/// in `segment` may merge with `previous` (see [`Batch::bridge`] and
/// `SpanSet::insert`), so its end is judged with them in front.
fn bytes_before<'a>(segment: &Segment, previous: Option<&'a ReplaySpan>) -> &'a [u8] {
    match previous {
        Some(previous)
            if segment.line.is_none()
                && previous.start < segment.start
                && segment.start <= previous.end() =>
        {
            &previous.bytes[..(segment.start - previous.start) as usize]
        }
        _ => &[],
    }
}

/// Whether the start of `previous` stays quiet when `previous` is merged
/// with a span settled in `segment` (whose bytes are `data`). Its start
/// was judged on the bytes after it in the segment it settled in; merged,
/// the block runs on into this segment, where a context-sensitive pattern
/// starting at `previous`'s start could now end. (The new span's end was
/// judged with `previous`'s bytes in front: see [`bytes_before`].) More
/// bytes after an edge only add reasons to call it unsafe, so the bytes
/// after it up to the segment's end are looked at.
fn start_holds_bridged(
    previous: &ReplaySpan,
    data: &[u8],
    segment_start: u64,
    guard: &EdgeGuard,
) -> bool {
    if previous.start == 0 || guard.is_empty() {
        return true;
    }
    if let Some(from) = previous.start.checked_sub(segment_start) {
        return !guard.blocks_start(&data[from as usize..]);
    }
    if previous.bytes.len() >= guard.reach() {
        return !guard.blocks_start(&previous.bytes);
    }
    let after = &data[(previous.end() - segment_start) as usize..];
    !guard.blocks_start(&first_bytes(&[&previous.bytes, after], guard.reach()))
}

/// The first `n` bytes of `pieces` put end to end.
fn first_bytes(pieces: &[&[u8]], n: usize) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(n);
    for piece in pieces {
        let take = (n - bytes.len()).min(piece.len());
        bytes.extend_from_slice(&piece[..take]);
    }
    bytes
}

/// Most real bytes between two settled spans of a chunk stream that are
/// kept to merge them (see [`Batch::bridge`]): at most this much more
/// memory per kept match, for far fewer replay blocks.
pub(crate) const BRIDGE_GAP: usize = 64;

/// The line numbers of a segment's offsets, counted incrementally: the
/// matches of a segment come by offset, so each counts only the newlines
/// since the previous one (counting from the segment's start for each
/// made one large chunk with many matches quadratic).
#[derive(Debug, Clone, Copy)]
pub(crate) struct LineCursor {
    at: usize,
    line: u64,
}

impl LineCursor {
    /// A cursor at the start of `segment`.
    pub fn new(segment: &Segment) -> LineCursor {
        LineCursor {
            at: 0,
            line: segment.first_line,
        }
    }

    /// 1-based line of `data[offset]`; moves the cursor there.
    fn line_at(&mut self, data: &[u8], offset: usize) -> u64 {
        if offset >= self.at {
            self.line += count_newlines(&data[self.at..offset]);
        } else {
            // Grown spans may start a little before the previous one.
            self.line -= count_newlines(&data[offset..self.at]);
        }
        self.at = offset;
        self.line
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_bytes_of_pieces_put_end_to_end() {
        let pieces: [&[u8]; 3] = [b"abc", b"", b"defg"];
        assert_eq!(first_bytes(&pieces, 4), b"abcd");
        assert_eq!(first_bytes(&pieces, 99), b"abcdefg");
        assert_eq!(first_bytes(&pieces, 0), b"");
    }

    /// The reach of these tests' patterns: a tail of `W + 2 * SPAN_CONTEXT
    /// - 1` = 39 bytes settles all of them.
    const W: usize = 8;
    const TAIL: u64 = (W + 2 * SPAN_CONTEXT - 1) as u64;

    /// The chunk segment of a stream that had `before` bytes and receives
    /// `len` more: its tail (the last `TAIL` bytes) and the chunk.
    fn chunk_segment(before: u64, len: u64, packed: bool) -> Segment {
        let start = before - before.min(TAIL);
        Segment {
            stream: Uuid::nil(),
            addr: 1,
            start,
            bytes: 0..(before + len - start) as usize,
            first_line: 1,
            line: None,
            packed,
            epoch: 0,
            fresh_from: before,
            appended: 0,
        }
    }

    /// Adds a chunk as the scanner does, the context recording it after
    /// (its tail: the last `TAIL` bytes).
    fn feed(batch: &mut Batch, ctx: &mut StreamContext, chunk: &[u8], pack_starts: bool) {
        use crate::stream::HeadKeep;
        batch.add_chunk(ctx, chunk, pack_starts);
        ctx.in_batch = true;
        ctx.record(chunk, &TailPlan::uniform(W), &HeadKeep::first(0), 0);
    }

    /// A chunk that outweighs its stream's tail 8 times or more gets a
    /// segment of its own after its stream's: the tail again, then the
    /// chunk. (It joins a segment that ends the batch whatever its size.)
    #[test]
    fn long_chunks_repeat_their_tail_rather_than_join_across_others() {
        use crate::stream::{Retention, StreamMode};
        let new = |n| StreamContext::new(Uuid::from_u128(n), StreamMode::Chunks, 0, Retention::Off);
        let (mut a, mut b) = (new(1), new(2));
        let mut batch = Batch::default();
        let long = vec![b'x'; 8 * TAIL as usize];
        feed(&mut batch, &mut a, &long, true);
        feed(&mut batch, &mut a, &long, true);
        assert_eq!(batch.segments.len(), 1, "the last segment grows");
        feed(&mut batch, &mut b, b"b0", true);
        feed(&mut batch, &mut a, &long, true);
        let (n, tail) = (long.len() as u64, TAIL as usize);
        assert_eq!(batch.segments[2].start, 2 * n - TAIL);
        // Short chunks join: in place as the last segment, else as pieces.
        feed(&mut batch, &mut a, b"a", true);
        feed(&mut batch, &mut b, b"b1", true);
        feed(&mut batch, &mut a, &long[1..], true);
        let ends: Vec<u64> = batch.segments.iter().map(Segment::end).collect();
        assert_eq!(ends, [2 * n, 4, 4 * n]);
        assert_eq!(batch.len(), 4 * long.len() + 4 + tail);
        assert_eq!(a.batch_segment, 2);
    }

    #[test]
    fn chunks_of_a_stream_join_its_segment_whatever_comes_between() {
        use crate::stream::{Retention, StreamMode};
        for pack_starts in [false, true] {
            let new = |n, mode| StreamContext::new(Uuid::from_u128(n), mode, 0, Retention::Off);
            let (mut a, mut b) = (new(1, StreamMode::Chunks), new(2, StreamMode::Chunks));
            let line = new(3, StreamMode::Lines);
            let mut batch = Batch::default();
            feed(&mut batch, &mut a, b"a0", pack_starts);
            feed(&mut batch, &mut b, b"b0", pack_starts);
            feed(&mut batch, &mut a, b"a1", pack_starts);
            batch.add_line(&line, b"");
            feed(&mut batch, &mut a, b"a2", pack_starts);
            feed(&mut batch, &mut b, b"b1", pack_starts);
            feed(&mut batch, &mut b, b"b2", pack_starts);
            assert_eq!(batch.segments.len(), 3);
            assert_eq!((a.batch_segment, b.batch_segment), (0, 1));
            assert_eq!(a.batch_ends_standalone, !pack_starts);
            batch.lay_out();
            let data: Vec<&[u8]> = batch.segments.iter().map(|s| batch.data(s)).collect();
            assert_eq!(data, [&b"a0a1a2"[..], b"b0b1b2", b""]);
            assert_eq!(batch.len(), 12);
            let ends: Vec<u64> = batch.segments.iter().map(Segment::end).collect();
            assert_eq!(ends, [6, 6, 0]);
            // Each segment still has addresses of its own, and blocks of
            // their own have a gap between them.
            for standalone_only in [false, true] {
                let segments = batch.segments.iter();
                let mut addrs: Vec<_> = segments
                    .filter(|s| !(standalone_only && s.packed))
                    .map(|s| {
                        (
                            s.addr,
                            s.addr + s.bytes.len() + usize::from(standalone_only),
                        )
                    })
                    .collect();
                addrs.sort_unstable();
                assert!(addrs.windows(2).all(|w| w[0].1 <= w[1].0), "{addrs:?}");
            }
        }
    }

    #[test]
    fn only_the_bytes_of_a_span_running_into_the_segment_go_in_front() {
        // Bytes 100..200.
        let segment = chunk_segment(139, 61, false);
        let span = |start: u64, len: usize| ReplaySpan {
            start,
            segment: 0,
            line: 1,
            bytes: (0..len).map(|i| i as u8).collect(),
            quiet_start: true,
            quiet_end: true,
        };
        // 90..110 runs into the segment: its first 10 bytes go in front.
        let running_in = span(90, 20);
        assert_eq!(
            bytes_before(&segment, Some(&running_in)),
            &running_in.bytes[..10]
        );
        // 90..100 touches it: a span from 100 would merge with it.
        let touching = span(90, 10);
        assert_eq!(bytes_before(&segment, Some(&touching)), &touching.bytes[..]);
        // 80..99 leaves a byte the segment does not hold: no merge.
        assert!(bytes_before(&segment, Some(&span(80, 19))).is_empty());
        // A span within the segment: the segment holds its bytes.
        assert!(bytes_before(&segment, Some(&span(120, 5))).is_empty());
        assert!(bytes_before(&segment, None).is_empty());
        // Lines never merge.
        let line = Segment {
            line: Some(3),
            ..chunk_segment(139, 61, false)
        };
        assert!(bytes_before(&line, Some(&running_in)).is_empty());
    }

    #[test]
    fn acceptance_needs_full_context_on_both_sides() {
        let context = SPAN_CONTEXT as u64;
        // Bytes 100..200, of which 100..139 the tail searched before.
        let segment = chunk_segment(139, 61, false);
        assert_eq!((segment.start, segment.end()), (100, 200));
        let accept = |start, at_end| segment.accept(start, W, at_end);
        // No left context in this block: another block settles it.
        assert_eq!(accept(100 + context - 1, true), Acceptance::Ignored);
        // Settled by the previous segment already (it ended at 139).
        assert_eq!(accept(139 - W as u64 - context, false), Acceptance::Ignored);
        // The first start the previous segment could not settle, to the
        // last with `W` bytes and the context after it in this block.
        assert_eq!(
            accept(139 - W as u64 - context + 1, false),
            Acceptance::Settled
        );
        assert_eq!(accept(200 - W as u64 - context, false), Acceptance::Settled);
        // Too close to the end: right only if the stream ends here.
        assert_eq!(
            accept(200 - W as u64 - context + 1, true),
            Acceptance::Provisional
        );
        assert_eq!(
            accept(200 - W as u64 - context + 1, false),
            Acceptance::Ignored
        );
        // At a stream's start the block's edge is the stream's.
        let first = chunk_segment(0, 100, true);
        assert_eq!(first.accept(0, W, false), Acceptance::Settled);
        // A line is a whole document: every match settles.
        let line = Segment {
            line: Some(3),
            ..chunk_segment(139, 61, false)
        };
        assert_eq!(line.accept(199, W, false), Acceptance::Settled);
    }

    /// Over any cut of a stream into chunks, each match start is settled
    /// by exactly one segment, or is provisional in the last one when it
    /// lies within `W + SPAN_CONTEXT` of the end.
    #[test]
    fn every_match_settles_exactly_once_whatever_the_chunks() {
        let reach = (W + SPAN_CONTEXT) as u64;
        for sizes in [
            &[300u64][..],
            &[1; 120],
            &[7, 39, 40, 1, 100, 3],
            &[38, 38, 38, 38],
            &[64, 5, 200, 2, 2, 2, 90],
        ] {
            let total: u64 = sizes.iter().sum();
            let mut segments = Vec::new();
            let mut before = 0;
            for &len in sizes {
                segments.push(chunk_segment(before, len, false));
                before += len;
            }
            for start in 0..total {
                let mut settled = 0;
                let mut provisional = 0;
                for (index, segment) in segments.iter().enumerate() {
                    if start < segment.start || start >= segment.end() {
                        continue; // the block does not show it
                    }
                    let last = index == segments.len() - 1;
                    match segment.accept(start, W, last) {
                        Acceptance::Settled => settled += 1,
                        Acceptance::Provisional => provisional += 1,
                        Acceptance::Ignored => {}
                    }
                }
                let near_end = start + reach > total;
                assert_eq!(
                    (settled, provisional),
                    if near_end { (0, 1) } else { (1, 0) },
                    "match at {start} of chunks {sizes:?}"
                );
            }
        }
    }

    #[test]
    fn the_tail_is_settled_only_if_every_match_settled_and_the_end_is_quiet() {
        // Bytes 100..200 of the stream, the segment's last at 200.
        let segment = chunk_segment(139, 61, true);
        let last_settling = 200 - W - SPAN_CONTEXT - 100; // offset in the segment
        let found = |range: Range<usize>| Found {
            range,
            reach: W,
            precondition: None,
            reads: 0,
        };
        let early = found(last_settling..last_settling + 3);
        let late = found(last_settling + 1..last_settling + 4);
        let crossing = found(98..102); // runs into the next stream's bytes
        assert!(segment.leaves_tail_settled(&[], || true));
        assert!(segment.leaves_tail_settled(std::slice::from_ref(&early), || true));
        // The end of the data could change a context-sensitive match.
        assert!(!segment.leaves_tail_settled(std::slice::from_ref(&early), || false));
        // A match the tail's search could find again differently.
        assert!(!segment.leaves_tail_settled(&[early, late], || true));
        assert!(!segment.leaves_tail_settled(&[crossing], || true));
        // The end's check (the costly part) is only made when needed.
        let late = found(last_settling + 1..last_settling + 2);
        assert!(!segment.leaves_tail_settled(&[late], || unreachable!()));
        // A pattern of a shorter reach settles nearer the end.
        let short = Found {
            range: last_settling + 1..last_settling + 2,
            reach: W - 1,
            precondition: None,
            reads: 0,
        };
        assert!(segment.leaves_tail_settled(&[short], || true));
        // It speaks of chunk segments only: a line's answer is no.
        let line = Segment {
            line: Some(0),
            ..chunk_segment(139, 61, true)
        };
        assert!(!line.leaves_tail_settled(&[], || true));
    }

    /// With tails that follow the tail plan (the floor, stretched back to
    /// where a long pattern's key says a match may start), every match
    /// start of a short pattern (anywhere) and of a long one (where its key
    /// is) is still settled by exactly one segment, or provisional in the
    /// last.
    #[test]
    fn tails_that_follow_prefixes_still_settle_every_match_once() {
        use crate::rules::tail::{MatchKey, TailPattern};
        use crate::stream::{HeadKeep, Retention, StreamContext, StreamMode};
        let (short, long) = (5, 90);
        let plan = TailPlan::new(
            long,
            &[
                TailPattern {
                    reach: short,
                    keys: None,
                },
                TailPattern {
                    reach: long,
                    keys: Some(vec![MatchKey {
                        offset: 3,
                        bytes: b"ab".to_vec(),
                    }]),
                },
            ],
            Default::default(),
        );
        // Bytes with an `ab` every 64 or so, from a fixed generator.
        let mut seed = 7u32;
        let data: Vec<u8> = (0..700)
            .map(|_| {
                seed = seed.wrapping_mul(1_103_515_245).wrapping_add(12_345);
                match (seed >> 16) % 8 {
                    0 => b'a',
                    1 => b'b',
                    _ => b'.',
                }
            })
            .collect();
        let (mut stretched, mut short_tails) = (0, 0);
        for sizes in [
            &[700usize][..],
            &[1; 700],
            &[7, 39, 40, 1, 100, 3, 510],
            &[61; 12],
        ] {
            let mut ctx = StreamContext::new(Uuid::nil(), StreamMode::Chunks, 0, Retention::Off);
            let mut segments = Vec::new();
            let mut at = 0;
            for &len in sizes {
                if at == data.len() {
                    break;
                }
                let chunk = &data[at..(at + len).min(data.len())];
                let (start, tail) = (ctx.tail_start(), ctx.tail.len());
                segments.push(Segment {
                    bytes: 0..tail + chunk.len(),
                    ..chunk_segment(0, 0, false)
                });
                let segment = segments.last_mut().unwrap();
                (segment.start, segment.fresh_from) = (start, at as u64);
                ctx.record(chunk, &plan, &HeadKeep::first(0), 0);
                stretched += usize::from(ctx.tail.len() > plan.floor());
                short_tails += usize::from(ctx.tail.len() < plan.most().min(at + chunk.len()));
                at += chunk.len();
            }
            let total = data.len() as u64;
            // Each match of the long pattern holds `ab` 3 bytes in.
            let keys = (3..data.len() - 1).filter(|&at| &data[at..at + 2] == b"ab");
            let long_starts = keys.map(|at| at - 3);
            let starts = (0..data.len())
                .map(|s| (s, short))
                .chain(long_starts.map(|s| (s, long)));
            for (start, reach) in starts {
                let start = start as u64;
                let (mut settled, mut provisional) = (0, 0);
                for (index, segment) in segments.iter().enumerate() {
                    if start < segment.start || start >= segment.end() {
                        continue;
                    }
                    let last = index == segments.len() - 1;
                    match segment.accept(start, reach, last) {
                        Acceptance::Settled => settled += 1,
                        Acceptance::Provisional => provisional += 1,
                        Acceptance::Ignored => {}
                    }
                }
                let near_end = start + (reach + SPAN_CONTEXT) as u64 > total;
                assert_eq!(
                    (settled, provisional),
                    if near_end { (0, 1) } else { (1, 0) },
                    "match of reach {reach} at {start} of chunks {sizes:?}"
                );
            }
        }
        // The plan did both of its jobs here: tails below the most, and
        // tails stretched past the floor for a prefix.
        assert!(
            stretched > 10 && short_tails > 10,
            "{stretched} {short_tails}"
        );
    }

    /// The search gives each match the reach of its own pattern: YARA-X
    /// lists a rule's patterns in declaration order, private and anonymous
    /// ones included, as the analysis does.
    #[test]
    fn each_match_gets_its_own_patterns_reach() {
        use crate::stream::{Retention, StreamContext, StreamMode};
        let rules = crate::RuleSet::from_source(
            r#"rule r {
                 strings:
                   $ = "ab"
                   $long = "0123456789abcdefghijklmnopqrstuvwxyz" private
                   $hex = { 61 62 [2-5] 63 }
                   $ = /x{1,9}y/
                 condition: any of them }
               rule s { strings: $z = "zz" condition: $z }"#,
            1024,
        )
        .unwrap();
        let data = b"..0123456789abcdefghijklmnopqrstuvwxyz..ab...c..xxxy..zz..";
        let mut ctx = StreamContext::new(Uuid::nil(), StreamMode::Chunks, 0, Retention::Off);
        let mut batch = Batch::default();
        batch.add_chunk(&mut ctx, data, false);
        let mut scanner = yara_x::blocks::Scanner::new(rules.rules());
        let found = batch.search(&mut scanner, SearchPlans::of(&rules)).unwrap();
        let by_range = |at: &[u8]| {
            let start = memchr::memmem::find(data, at).unwrap();
            let reaches = found[0]
                .iter()
                .filter(|f| f.range == (start..start + at.len()));
            reaches.map(|f| f.reach).collect::<Vec<_>>()
        };
        assert_eq!(by_range(b"0123456789abcdefghijklmnopqrstuvwxyz"), [36]);
        assert_eq!(by_range(b"ab...c"), [2 + 5 + 1]);
        assert_eq!(by_range(b"ab"), [2]);
        assert_eq!(by_range(b"xxxy"), [10]);
        assert_eq!(by_range(b"zz"), [2]);
    }
}
