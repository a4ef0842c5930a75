//! The multi-stream scanner: one YARA-X instance, many stream contexts.
//!
//! [`MultiStreamScanner`] holds two YARA-X block scanners over the same
//! rules, whatever the number of streams, and one small [`StreamContext`]
//! per stream:
//!
//! * the **search** scanner finds pattern matches. Chunks are copied into
//!   the current batch (`scanner/batch.rs`) as they arrive and searched together:
//!   most of them in one packed block, and one `finish()` per batch, so the
//!   fixed costs (per `scan()` call, and the harvest: YARA-X evaluates every
//!   condition on `finish()`) are paid per megabytes, not per chunk. Each
//!   match is judged by the context its block gave it, and kept as a replay
//!   span in its stream's context.
//! * the **evaluation** scanner computes a stream's verdict from its spans
//!   (`scanner/verdict.rs`), when the caller asks for it or closes the stream.
//!
//! The contract: for every rule that rule analysis marks supported, the
//! verdict equals a whole-buffer `yara_x::Scanner::scan` of the bytes seen
//! so far, whatever the chunking and the interleaving of streams. In line
//! mode it equals scanning each line as its own block at its offset.
//!
//! Trade-offs: a verdict or close of a stream that received bytes since its
//! last verdict searches the current batch first (with the stream's tail
//! rescanned alone, so that its end looks like the end of the data, unless
//! the last search showed nothing there can change: see
//! `Segment::leaves_tail_settled`): one harvest, `O(rules)`. Callers that
//! close many streams at once should use
//! [`MultiStreamScanner::close_streams`], which pays it once. Each stream
//! keeps a tail of up to `W + 31` bytes, `W` being the longest pattern
//! (see `rules::tail`: most streams keep far less).

pub(crate) mod batch;
pub(crate) mod pace;
pub(crate) mod verdict;

use std::collections::hash_map::Entry;
use std::collections::{HashMap, HashSet};

use foldhash::fast::RandomState;
use std::time::Instant;

use uuid::Uuid;

use crate::config::ScannerConfig;
use crate::error::ScanError;
use crate::results::StreamResults;
use crate::rules::match_reads::MatchReadScanner;
use crate::rules::preconditions::RuledOutSets;
use crate::rules::{External, RuleSet};
use crate::stream::digests::DigestSet;
use crate::stream::{
    now_ms, HeadKeep, Retention, RetentionRoom, StreamContext, StreamMode, StreamStats,
};
use batch::{Acceptance, Batch, Found, LineCursor, SearchPlans, Window};
use verdict::Evaluator;

/// Counters of the scanner as a whole.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct ScannerStats {
    /// Streams open now.
    pub open_streams: usize,
    /// Batches searched.
    pub batches: u64,
    /// Bytes searched, tails included.
    pub searched_bytes: u64,
    /// Streams opened (explicitly or by their first chunk or line).
    pub streams_opened: u64,
    /// Verdicts asked for (`get_matches`, closes).
    pub verdicts: u64,
    /// Verdicts computed by replaying spans (the others reused the verdict
    /// of the empty stream).
    pub evaluations: u64,
    /// Verdicts whose whole-data rules came from a whole-buffer scan of
    /// the stream's retained bytes.
    pub whole_scans: u64,
    /// Bytes the open streams retain for whole-data and dense rules now.
    pub retained_bytes: usize,
    /// Streams whose search had waited while they retained their bytes
    /// and whose bytes were then searched at once (they stopped retaining,
    /// or a verdict needed their matches); see
    /// [`ScannerConfig::eager_search`].
    pub deferred_searches: u64,
    /// Matches the search found and dropped because the stream failed
    /// their rule's precondition (see `rules::preconditions`); a match
    /// found again in a tail counts again.
    pub ruled_out_matches: u64,
    /// Matches whose own bytes were scanned to evaluate the rules' reads of
    /// them (see `rules::match_reads`): at most `max_stream_matches` per
    /// stream, plus those found again at the end of its data.
    pub match_read_scans: u64,
}

impl std::ops::AddAssign<&ScannerStats> for ScannerStats {
    /// Sums the counters of several scanners (a shard's rule generations).
    fn add_assign(&mut self, other: &ScannerStats) {
        self.open_streams += other.open_streams;
        self.batches += other.batches;
        self.searched_bytes += other.searched_bytes;
        self.streams_opened += other.streams_opened;
        self.verdicts += other.verdicts;
        self.evaluations += other.evaluations;
        self.whole_scans += other.whole_scans;
        self.retained_bytes += other.retained_bytes;
        self.deferred_searches += other.deferred_searches;
        self.ruled_out_matches += other.ruled_out_matches;
        self.match_read_scans += other.match_read_scans;
    }
}

/// Scans any number of concurrent streams with one set of rules.
pub struct MultiStreamScanner<'r> {
    rules: &'r RuleSet,
    config: ScannerConfig,
    window: Window,
    search: yara_x::blocks::Scanner<'r>,
    /// Evaluates the match reads of settled matches.
    match_reads: MatchReadScanner<'r>,
    evaluator: Evaluator<'r>,
    /// Boxed: the map's spare room (a map is 7/16 to 7/8 full) then costs
    /// a pointer per slot, not a context.
    streams: HashMap<Uuid, Box<StreamContext>, RandomState>,
    /// The bytes waiting to be searched.
    batch: Batch,
    /// Whether streams' first bytes may share the packed block: true when
    /// no pattern is context-sensitive or anchored in the head, so that no
    /// match depends on the stream starting where its block starts
    /// (anchors past the head are checked by the search itself).
    pack_starts: bool,
    /// Streams with bytes in the current batch, in arrival order.
    batch_streams: Vec<Uuid>,
    batch_started: Option<BatchStart>,
    epochs: Epochs,
    /// Streams that found matches since [`Self::take_streams_with_new_matches`]
    /// was last called.
    with_new_matches: HashSet<Uuid, RandomState>,
    /// Sum of the open contexts' [`StreamContext::memory_bytes`], kept up
    /// to date as they change (for bounds on resident memory).
    context_bytes: usize,
    /// Sum of the open contexts' retained bytes (for
    /// `ScannerConfig::max_retained_bytes`).
    retained_bytes: usize,
    /// How a new chunk stream starts: what it retains, and whether its
    /// search waits.
    new_streams: NewStreams,
    /// The measured search rate, which caps the batch below
    /// `max_batch_bytes` when searches are slow.
    pace: pace::Pace,
    stats: ScannerStats,
    /// The distinct sets of preconditions its streams failed.
    ruled_out_sets: RuledOutSets,
    /// No YARA-X scan but this crate's runs on the scanner's thread.
    alone_on_its_thread: bool,
}

impl<'r> MultiStreamScanner<'r> {
    /// A scanner of `rules` with the given limits.
    pub fn new(rules: &'r RuleSet, config: ScannerConfig) -> MultiStreamScanner<'r> {
        let analysis = rules.analysis();
        let mut search = yara_x::blocks::Scanner::new(rules.rules());
        // A batch holds many streams' matches: the per-pattern cap applies
        // per stream, in the evaluation scanner.
        search.max_matches_per_pattern(usize::MAX);
        if let Some(timeout) = config.scan_timeout {
            search.set_timeout(timeout);
        }
        MultiStreamScanner {
            rules,
            window: Window::new(analysis.head_len, rules.data_values().prefix_len()),
            search,
            match_reads: MatchReadScanner::new(rules.match_reads()),
            evaluator: Evaluator::new(rules, &config),
            pace: pace::Pace::of(rules, &config),
            new_streams: NewStreams {
                retention: match rules.whole_data().streams_retain() {
                    true => Retention::Retaining,
                    false => Retention::Off,
                },
                defer_search: !config.eager_search,
                digests: rules.data_values().digests(),
            },
            config,
            streams: HashMap::default(),
            batch: Batch::default(),
            pack_starts: rules.edge_guard().is_empty() && analysis.head_len == 0,
            batch_streams: Vec::new(),
            batch_started: None,
            epochs: Epochs::default(),
            with_new_matches: HashSet::default(),
            context_bytes: 0,
            retained_bytes: 0,
            stats: ScannerStats::default(),
            ruled_out_sets: RuledOutSets::default(),
            alone_on_its_thread: false,
        }
    }

    /// The rules this scanner uses.
    pub fn rules(&self) -> &'r RuleSet {
        self.rules
    }

    /// The configuration.
    pub fn config(&self) -> &ScannerConfig {
        &self.config
    }

    /// Appends a chunk to a stream, opening it on first use. A pattern may
    /// match across chunks. An empty chunk opens the stream and changes
    /// nothing else. On error the chunk is not taken and no state changes.
    pub fn scan_chunk(&mut self, stream: Uuid, chunk: &[u8]) -> Result<(), ScanError> {
        self.append(stream, chunk, StreamMode::Chunks)
    }

    /// Appends one line to a line stream, opening it on first use. No match
    /// spans two lines; offsets stay stream-absolute and each match reports
    /// its line.
    pub fn scan_line(&mut self, stream: Uuid, line: &[u8]) -> Result<(), ScanError> {
        self.append(stream, line, StreamMode::Lines)
    }

    fn append(&mut self, stream: Uuid, data: &[u8], mode: StreamMode) -> Result<(), ScanError> {
        if data.len() > self.config.max_chunk_bytes {
            return Err(ScanError::ChunkTooLarge {
                stream,
                len: data.len(),
                limit: self.config.max_chunk_bytes,
            });
        }
        // One reading of the clock per chunk, for the stream's last-seen
        // time and the batch's delay.
        let now = now_ms();
        if self.batch.len() + data.len() > self.pace.batch_limit()
            || self.batch.standalone_segments() >= batch::MAX_STANDALONE_SEGMENTS
            || self.batch_overdue_at_ms(now)
        {
            self.flush()?;
        }
        let head = self.head_keep();
        // One lookup (this runs for every chunk): it also finds a stream
        // the search just broke.
        let ctx = open_context(
            &mut self.streams,
            &mut self.epochs,
            &mut self.context_bytes,
            (stream, mode, self.new_streams),
            &self.config,
        )?;
        if data.is_empty() && mode == StreamMode::Chunks {
            return Ok(());
        }
        let searched_now = !ctx.deferred;
        match mode {
            StreamMode::Chunks if ctx.deferred => {}
            StreamMode::Chunks => {
                let plan = self.rules.preconditions();
                ctx.rule_out(data, plan, &mut self.ruled_out_sets);
                self.batch.add_chunk(ctx, data, self.pack_starts);
            }
            StreamMode::Lines => self.batch.add_line(ctx, data),
        }
        // Recording moves the tail and grows the head, and retaining keeps
        // or drops the retained bytes: the part of `memory_bytes` that
        // `buffer_bytes` counts.
        let (before, retained) = (ctx.buffer_bytes(), ctx.retained.len());
        ctx.record(data, self.rules.tail_plan(), &head, now);
        let room = RetentionRoom {
            stream_cap: self.config.max_retained_stream_bytes,
            budget_left: self
                .config
                .max_retained_bytes
                .saturating_sub(self.retained_bytes),
            dense_left: (self.config.max_retained_bytes / 2).saturating_sub(self.retained_bytes),
        };
        let unsearched = ctx.retain(data, self.rules.whole_data(), room);
        self.context_bytes = self.context_bytes + ctx.buffer_bytes() - before;
        self.retained_bytes = self.retained_bytes + ctx.retained.len() - retained;
        match unsearched {
            Some(bytes) => self.add_deferred_bytes(stream, &bytes),
            None if searched_now => {
                note_in_batch(ctx, &mut self.batch_streams, &mut self.batch_started, now);
            }
            None => {}
        }
        Ok(())
    }

    /// What chunk streams keep of their first bytes.
    fn head_keep(&self) -> HeadKeep<'r> {
        HeadKeep {
            len: self.window.head_keep(),
            values_len: self.window.values_len,
            plan: &self.rules.analysis().head,
        }
    }

    /// Adds every byte of a stream whose search was deferred to the batch,
    /// as one chunk from offset 0 (its context already recorded them).
    fn add_deferred_bytes(&mut self, stream: Uuid, bytes: &[u8]) {
        let head = self.head_keep();
        let Some(ctx) = self.streams.get_mut(&stream) else {
            return;
        };
        // Ruled out first: the tail keeps nothing for those rules.
        let plan = self.rules.preconditions();
        ctx.rule_out_by_all(bytes, plan, &mut self.ruled_out_sets);
        let before = ctx.buffer_bytes();
        ctx.keep_edges(bytes, self.rules.tail_plan(), &head);
        self.context_bytes = self.context_bytes + ctx.buffer_bytes() - before;
        self.batch.add_whole_stream(ctx, bytes, self.pack_starts);
        note_in_batch(
            ctx,
            &mut self.batch_streams,
            &mut self.batch_started,
            now_ms(),
        );
        self.stats.deferred_searches += 1;
    }

    /// A deferred stream whose verdict needs its matches (it is not a
    /// whole-buffer scan of its bytes) has them searched now: its
    /// retained bytes join the batch, and it is searched as it goes from
    /// then on.
    fn undefer_for_verdict(&mut self, stream: &Uuid) {
        let Some(ctx) = self.streams.get_mut(stream) else {
            return;
        };
        if !ctx.deferred || ctx.scans_whole(self.rules.whole_data()) {
            return;
        }
        ctx.deferred = false;
        // Lent to the batch and given back: the stream still retains them.
        let bytes = std::mem::take(&mut ctx.retained);
        if !bytes.is_empty() {
            self.add_deferred_bytes(*stream, &bytes);
        }
        if let Some(ctx) = self.streams.get_mut(stream) {
            ctx.retained = bytes;
        }
    }

    /// Whether data in `mode` for `stream` would be taken now (as far as
    /// the stream goes: a chunk's size is checked on its own): the error
    /// an append would meet, without appending. Changes nothing.
    pub fn check_append(&self, stream: Uuid, mode: StreamMode) -> Result<(), ScanError> {
        self.check_mode(stream, mode)
    }

    fn check_mode(&self, stream: Uuid, mode: StreamMode) -> Result<(), ScanError> {
        let open = self.streams.len();
        let ctx = self.streams.get(&stream).map(Box::as_ref);
        admission(ctx, (stream, mode), open, &self.config)
    }

    /// Opens a stream explicitly (streams also open on their first chunk or
    /// line). Opening an open stream of the same mode changes nothing.
    pub fn open_stream(&mut self, stream: Uuid, mode: StreamMode) -> Result<(), ScanError> {
        open_context(
            &mut self.streams,
            &mut self.epochs,
            &mut self.context_bytes,
            (stream, mode, self.new_streams),
            &self.config,
        )?;
        Ok(())
    }

    /// Sets an open stream's own values of its rules' external variables
    /// (a file's name, say: see [`crate::FileInfo`]), replacing those it
    /// had; its verdicts are then the whole-buffer verdicts with these
    /// values set. Each must be declared by the rule set
    /// ([`RuleSet::externals`]) with the same type; nothing changes when
    /// one is refused.
    pub fn set_stream_externals(
        &mut self,
        stream: Uuid,
        externals: Vec<External>,
    ) -> Result<(), ScanError> {
        self.rules
            .check_stream_externals(&externals)
            .map_err(|reason| ScanError::BadExternal { stream, reason })?;
        let ctx = self
            .streams
            .get_mut(&stream)
            .ok_or(ScanError::UnknownStream(stream))?;
        let before = ctx.memory_bytes();
        ctx.externals = externals.into_boxed_slice();
        self.context_bytes = self.context_bytes + ctx.memory_bytes() - before;
        Ok(())
    }

    fn batch_overdue(&self) -> bool {
        self.batch_started
            .is_some_and(|s| s.at.elapsed() >= self.config.max_batch_delay)
    }

    /// Whether the batch is overdue by the wall clock at `now_ms`, the
    /// reading a chunk takes for its stream's last-seen time anyway. A
    /// step back of the wall clock delays this check, not
    /// [`Self::flush_if_due`]'s.
    fn batch_overdue_at_ms(&self, now_ms: u64) -> bool {
        let delay_ms = self.config.max_batch_delay.as_millis() as u64;
        self.batch_started
            .is_some_and(|s| now_ms.saturating_sub(s.wall_ms) >= delay_ms)
    }

    /// Searches the current batch if it has waited `max_batch_delay`.
    pub fn flush_if_due(&mut self) -> Result<(), ScanError> {
        if self.batch_overdue() {
            self.flush()
        } else {
            Ok(())
        }
    }

    /// Searches every buffered byte now.
    pub fn flush(&mut self) -> Result<(), ScanError> {
        self.flush_for(&HashSet::new())
    }

    /// Searches every buffered byte, and makes sure that the end of what
    /// each of the `wanted` streams (whose verdicts are asked for) has seen
    /// is searched as the end of the data.
    ///
    /// A wanted stream's last segment in the batch is searched packed with
    /// the others first: most such searches settle everything up to the
    /// stream's end ([`batch::Segment::leaves_tail_settled`]). Only the
    /// streams whose end they leave unsettled, and wanted streams outside
    /// the batch whose last search left it so, get their tail searched as
    /// a block of its own, the former in a second search. (Adding every
    /// wanted stream's tail to the batch cost a `scan()` call per closing
    /// stream, each walking every match YARA-X had found in the batch.)
    ///
    /// A search that fails (YARA-X timed out) is retried stream by stream
    /// (see [`Self::search_streams_alone`]); a stream whose own search
    /// fails is marked broken, so that its next append or verdict fails
    /// with [`ScanError::SearchFailed`]. The other streams go on.
    fn flush_for(&mut self, wanted: &HashSet<Uuid>) -> Result<(), ScanError> {
        let mut searched_packed = Vec::new();
        for id in wanted {
            let Some(ctx) = self.streams.get(id) else {
                continue;
            };
            if ctx.mode != StreamMode::Chunks || ctx.tail.is_empty() || ctx.broken.is_some() {
                continue;
            }
            match (ctx.in_batch, ctx.batch_ends_standalone) {
                // Its last segment is a block of its own up to its end.
                (true, true) => {}
                (true, false) => searched_packed.push(*id),
                (false, _) => self.batch.add_tail(ctx),
            }
        }
        self.search_batch();
        let unsettled: HashSet<Uuid> = searched_packed
            .into_iter()
            .filter(|id| self.needs_search(id))
            .collect();
        if !unsettled.is_empty() {
            self.flush_for(&unsettled)?;
        }
        Ok(())
    }

    /// Searches the batch, settles what it found in its streams, and
    /// empties it.
    fn search_batch(&mut self) {
        if !self.batch.is_empty() {
            let started = Instant::now();
            let searched = self
                .batch
                .search(&mut self.search, SearchPlans::of(self.rules));
            match searched {
                Ok(found) => {
                    let finds = pace::Finds {
                        matches: found.iter().map(Vec::len).sum(),
                        matched_bytes: found.iter().flatten().map(|f| f.range.len()).sum(),
                    };
                    self.pace
                        .observe(self.batch.len(), started.elapsed(), finds);
                    self.settle(found);
                }
                Err(err) => {
                    self.pace.observe_timeout(self.batch.len());
                    let found = self.search_streams_alone(&err);
                    self.settle(found);
                }
            }
            self.stats.batches += 1;
            self.stats.searched_bytes += self.batch.len() as u64;
        }
        for id in std::mem::take(&mut self.batch_streams) {
            if let Some(ctx) = self.streams.get_mut(&id) {
                ctx.in_batch = false;
                ctx.batch_ends_standalone = false;
                ctx.batch_segment = 0;
            }
        }
        self.batch.clear();
        self.batch_started = None;
    }

    /// After the batch's search failed: searches each stream's segments
    /// alone, smallest first, so that the streams that did not cause it
    /// go on; a stream whose own search fails, or that is left when the
    /// retries have taken `scan_timeout`, is marked broken. What was found,
    /// per segment (nothing for broken streams').
    fn search_streams_alone(&mut self, error: &ScanError) -> Vec<Vec<Found>> {
        let segments = &self.batch.segments;
        let mut found = vec![Vec::new(); segments.len()];
        let mut streams: Vec<(Vec<usize>, usize)> = Vec::new();
        let mut position: HashMap<Uuid, usize, RandomState> = HashMap::default();
        for (index, segment) in segments.iter().enumerate() {
            let at = *position.entry(segment.stream).or_insert_with(|| {
                streams.push((Vec::new(), 0));
                streams.len() - 1
            });
            streams[at].0.push(index);
            streams[at].1 += segment.bytes.len();
        }
        if streams.len() == 1 {
            self.mark_broken(&streams[0].0, error);
            return found;
        }
        streams.sort_by_key(|(_, bytes)| *bytes);
        let started = Instant::now();
        let budget = self.config.scan_timeout.unwrap_or_default();
        for (indices, _) in &streams {
            if started.elapsed() > budget {
                self.mark_broken(indices, error);
                continue;
            }
            match self
                .batch
                .search_segments(&mut self.search, SearchPlans::of(self.rules), indices)
            {
                Ok(mut ranges) => {
                    for &index in indices {
                        found[index] = std::mem::take(&mut ranges[index]);
                    }
                }
                Err(own) => self.mark_broken(indices, &own),
            }
        }
        found
    }

    /// Marks the streams of these batch segments broken by `error`.
    fn mark_broken(&mut self, segments: &[usize], error: &ScanError) {
        let reason: std::sync::Arc<str> = error.to_string().into();
        for &index in segments {
            let segment = &self.batch.segments[index];
            if let Some(ctx) = self.streams.get_mut(&segment.stream) {
                if ctx.epoch == segment.epoch {
                    ctx.broken.get_or_insert_with(|| reason.clone());
                }
            }
        }
    }

    /// The error of a stream a failed search broke, if it is one.
    fn check_broken(&self, stream: &Uuid) -> Result<(), ScanError> {
        match self.streams.get(stream) {
            Some(ctx) => broken_error(ctx, &self.config).map_or(Ok(()), Err),
            None => Ok(()),
        }
    }

    /// Whether a stream's verdict needs a search first.
    fn needs_search(&self, stream: &Uuid) -> bool {
        self.streams
            .get(stream)
            .is_some_and(|c| c.in_batch || c.tail_unsettled)
    }

    /// Records the matches of the searched batch in their streams.
    fn settle(&mut self, found: Vec<Vec<Found>>) {
        let guard = self.rules.edge_guard();
        let batch = &self.batch;
        let match_reads = &mut self.match_reads;
        for (segment, found) in batch.segments.iter().zip(found) {
            let Some(ctx) = self.streams.get_mut(&segment.stream) else {
                continue;
            };
            if ctx.epoch != segment.epoch || ctx.broken.is_some() {
                // The stream was reset, or closed and reopened, since; or
                // its search failed.
                continue;
            }
            let found = drop_ruled_out(found, ctx, &mut self.stats.ruled_out_matches);
            // Most segments find nothing and change no kept match: their
            // contexts' sizes are left alone (counting one walks it all).
            let resized =
                !found.is_empty() || !ctx.provisional.is_empty() || segment.line.is_some();
            let before = if resized { ctx.memory_bytes() } else { 0 };
            if segment.line.is_none() {
                // New bytes (or a tail rescan) void what was provisional. A
                // stream's segments come in order, so the one that ends the
                // stream, if any, comes last.
                ctx.provisional.clear();
                ctx.provisional_match_reads = 0;
                ctx.tail_unsettled = true;
            }
            let at_stream_end =
                segment.line.is_none() && !segment.packed && segment.end() == ctx.stats.bytes;
            let ends_stream = segment.end() == ctx.stats.bytes;
            if at_stream_end
                || (ends_stream
                    && segment.leaves_tail_settled(&found, || {
                        guard.is_empty() || !guard.blocks_end(batch.data(segment))
                    }))
            {
                ctx.tail_unsettled = false;
            }
            let mut lines = LineCursor::new(segment);
            let cap = self.config.max_stream_matches as u64;
            for Found {
                range,
                reach,
                reads,
                ..
            } in found
            {
                if segment.packed && segment.crosses_end(&range) {
                    continue; // not this stream's bytes; a later search sees it
                }
                // A line is a block scan's data: reads of it are undefined.
                let reads = if segment.line.is_some() { 0 } else { reads };
                // In a block of its own, a match running past the end is
                // YARA-X's own doing (a `base64wide` match can claim the
                // zero after its last character), as in a whole-buffer
                // scan: it settles as any other.
                let start = segment.start + range.start as u64;
                match segment.accept(start, reach, at_stream_end) {
                    Acceptance::Settled => {
                        self.with_new_matches.insert(segment.stream);
                        ctx.stats.matches += 1;
                        if ctx.stats.matches > cap {
                            continue; // counted, not kept: see `matches_cut`
                        }
                        let data = batch.data(segment);
                        let held = match_reads_held(match_reads, ctx, data, &range, reads, false);
                        ctx.match_reads |= held;
                        let previous = ctx.settled.last();
                        let span =
                            batch.span_of(segment, range, false, guard, &mut lines, previous);
                        let span = batch.bridge(segment, previous, span, guard);
                        ctx.settled.insert(span);
                    }
                    Acceptance::Provisional => {
                        // Kept whatever the cap: they lie in the tail, so
                        // there are few of them.
                        self.with_new_matches.insert(segment.stream);
                        let data = batch.data(segment);
                        let held = match_reads_held(match_reads, ctx, data, &range, reads, true);
                        ctx.provisional_match_reads |= held;
                        let previous = ctx.settled.last();
                        let span = batch.span_of(segment, range, true, guard, &mut lines, previous);
                        ctx.provisional.insert(span);
                    }
                    Acceptance::Ignored => {}
                }
            }
            if segment.line.is_some() && segment.start < self.window.head_len as u64 {
                // Line mode: lines within the head are replayed for anchored
                // patterns, like the head of a chunk stream.
                let len = batch
                    .data(segment)
                    .len()
                    .min((self.window.head_len as u64 - segment.start) as usize);
                let mut lines = LineCursor::new(segment);
                ctx.settled
                    .insert(batch.span_of(segment, 0..len, true, guard, &mut lines, None));
            }
            if resized {
                self.context_bytes = self.context_bytes + ctx.memory_bytes() - before;
            }
        }
    }

    /// The verdict over everything seen so far on a stream, without closing
    /// it; `None` if the stream is not open.
    pub fn get_matches(&mut self, stream: &Uuid) -> Result<Option<StreamResults>, ScanError> {
        self.note_others_on_thread();
        self.verdict_of(stream)
    }

    /// Says that scans other than those of this crate's scanners may have
    /// run on this thread since the last call (unless told
    /// [`Self::claim_its_thread`]).
    fn note_others_on_thread(&mut self) {
        if !self.alone_on_its_thread {
            self.evaluator.others_may_have_scanned();
        }
    }

    /// Says that from now on no YARA-X scan runs on this scanner's thread
    /// but those of this crate's scanners (as on an engine shard's thread,
    /// or a thread a caller gives to this scanner alone), so that a verdict
    /// need not assume a caller's scan between two calls. With rules that
    /// call `pe`'s cached functions, that assumption costs a YARA-X scan
    /// of empty data per call that evaluates (4-5 us with
    /// `../shared/rules/bartblaze`). Scans made on the thread before the
    /// claim are still assumed, once.
    ///
    /// A caller that scans with YARA-X on this thread after claiming it
    /// may get verdicts built on that scan's `pe` caches (a `pe.imphash()`
    /// of another file, say).
    pub fn claim_its_thread(&mut self) {
        self.evaluator.others_may_have_scanned();
        self.alone_on_its_thread = true;
    }

    /// [`Self::get_matches`] within one call of the scanner.
    fn verdict_of(&mut self, stream: &Uuid) -> Result<Option<StreamResults>, ScanError> {
        if !self.streams.contains_key(stream) {
            return Ok(None);
        }
        self.check_broken(stream)?;
        self.undefer_for_verdict(stream);
        if self.needs_search(stream) {
            self.flush_for(&HashSet::from([*stream]))?;
            self.check_broken(stream)?;
        }
        let ctx = &self.streams[stream];
        self.stats.verdicts += 1;
        let cut = ctx.stats.matches > self.config.max_stream_matches as u64;
        let verdict = match ctx.scans_whole(self.rules.whole_data()) {
            true => self.evaluator.whole_verdict(ctx),
            false => self.evaluator.verdict(ctx, self.window.head_len, cut),
        };
        self.stats.evaluations = self.evaluator.evaluations;
        self.stats.whole_scans = self.evaluator.whole_scans;
        let verdict = verdict?;
        Ok(Some(StreamResults {
            stream: *stream,
            rules: verdict.rules,
            exact: verdict.exact,
            matches_cut: match verdict.whole_data.as_ref().is_some_and(|w| w.scanned()) {
                true => verdict.listing_cut,
                false => cut,
            },
            whole_data: verdict.whole_data,
            stats: ctx.stats.clone(),
            durable_offset: ctx.durable.map(|d| d.bytes),
        }))
    }

    /// Closes a stream and returns its final verdict; `None` if the stream is
    /// not open. On error the stream stays open.
    pub fn close_stream(&mut self, stream: &Uuid) -> Result<Option<StreamResults>, ScanError> {
        let results = self.get_matches(stream)?;
        self.forget_stream(stream);
        Ok(results)
    }

    /// Closes several streams with one batch flush. Streams that are not
    /// open are skipped. On error no stream is closed.
    pub fn close_streams(&mut self, streams: &[Uuid]) -> Result<Vec<StreamResults>, ScanError> {
        let all = self.verdicts(streams)?;
        for results in &all {
            self.forget_stream(&results.stream);
        }
        Ok(all)
    }

    /// The verdicts of several streams, with one batch flush for all of
    /// them (see [`Self::get_matches`]). Streams that are not open are
    /// skipped.
    pub fn verdicts(&mut self, streams: &[Uuid]) -> Result<Vec<StreamResults>, ScanError> {
        self.prepare_verdicts(streams)?;
        self.note_others_on_thread();
        let mut all = Vec::with_capacity(streams.len());
        for stream in streams {
            all.extend(self.verdict_of(stream)?);
        }
        Ok(all)
    }

    /// Does, in one search, what the verdicts of `streams` need searched
    /// (their batched bytes and their tails as the end of the data), so
    /// that asking for them one by one afterwards searches nothing. Streams
    /// that are not open are skipped.
    pub fn prepare_verdicts(&mut self, streams: &[Uuid]) -> Result<(), ScanError> {
        for stream in streams {
            self.undefer_for_verdict(stream);
        }
        let wanted: HashSet<Uuid> = streams
            .iter()
            .filter(|s| self.needs_search(s))
            .copied()
            .collect();
        if !wanted.is_empty() {
            self.flush_for(&wanted)?;
        }
        Ok(())
    }

    /// The streams that found pattern matches (final or provisional) since
    /// the last call, for callers that report rule matches as they happen:
    /// a rule that needs a pattern can only start to match on these. (A
    /// verdict can also change with no new match, for example `not $a` or
    /// `#a == 1`; only the verdict at close tells that.)
    pub fn take_streams_with_new_matches(&mut self) -> Vec<Uuid> {
        self.with_new_matches.drain().collect()
    }

    /// Forgets that `streams` found new matches: for a caller that has
    /// just taken their verdicts, whose search found their matches again.
    /// Other streams keep theirs.
    pub fn forget_new_matches(&mut self, streams: &[Uuid]) {
        for stream in streams {
            self.with_new_matches.remove(stream);
        }
    }

    /// Forgets a stream without computing its verdict (for callers that
    /// know it is worthless); whether it was open.
    pub fn discard_stream(&mut self, stream: &Uuid) -> bool {
        self.forget_stream(stream).is_some()
    }

    /// Takes the contexts of `streams` out of the scanner, to be kept
    /// elsewhere (an on-disk store, see `crate::store`). Their buffered
    /// bytes are searched first, so that each context is complete: given
    /// back to [`Self::restore_stream`] (of this scanner or of another on
    /// the same rules), a stream goes on exactly as if it had never left.
    /// Streams that are not open are skipped. On error no stream is taken.
    pub fn evict_streams(&mut self, streams: &[Uuid]) -> Result<Vec<StreamContext>, ScanError> {
        let buffered = streams
            .iter()
            .any(|s| self.streams.get(s).is_some_and(|c| c.in_batch));
        if buffered {
            self.flush()?;
        }
        // A broken stream stays, so that its caller learns it.
        let healthy: Vec<Uuid> = streams
            .iter()
            .filter(|s| self.streams.get(s).is_some_and(|c| c.broken.is_none()))
            .copied()
            .collect();
        let taken: Vec<StreamContext> = healthy
            .iter()
            .filter_map(|s| self.remove_context(s))
            .collect();
        // A map emptied by eviction gives its room back (it never shrinks
        // on its own, and its slots are a good part of a context's cost).
        if self.streams.len() < self.streams.capacity() / 4 {
            self.streams.shrink_to_fit();
        }
        Ok(taken)
    }

    /// Opens a stream from a context taken by [`Self::evict_streams`] (or
    /// decoded from a store written with the same rules). Fails, taking
    /// nothing, if the stream is open already or the scanner is full.
    pub fn restore_stream(&mut self, mut context: StreamContext) -> Result<(), ScanError> {
        let stream = context.id;
        if self.streams.contains_key(&stream) {
            return Err(ScanError::AlreadyOpen(stream));
        }
        if self.streams.len() >= self.config.max_open_streams {
            return Err(ScanError::TooManyStreams {
                stream,
                limit: self.config.max_open_streams,
            });
        }
        // Its bytes were all searched before it left; a fresh epoch keeps
        // it clear of whatever the batch holds under its id.
        self.epochs.last += 1;
        context.epoch = self.epochs.last;
        context.in_batch = false;
        context.rule_out_by_head(self.rules.preconditions(), &mut self.ruled_out_sets);
        self.context_bytes += context.memory_bytes();
        self.retained_bytes += context.retained.len();
        self.streams.insert(stream, Box::new(context));
        Ok(())
    }

    /// Removes a stream that ends (closed or discarded): its context, and
    /// its place among the streams with new matches (a caller that never
    /// takes those, as a cluster worker without events, must not keep an
    /// id per stream that ever matched).
    fn forget_stream(&mut self, stream: &Uuid) -> Option<StreamContext> {
        self.with_new_matches.remove(stream);
        self.remove_context(stream)
    }

    fn remove_context(&mut self, stream: &Uuid) -> Option<StreamContext> {
        let ctx = self.streams.remove(stream)?;
        self.context_bytes -= ctx.memory_bytes();
        self.retained_bytes -= ctx.retained.len();
        Some(*ctx)
    }

    /// Bytes held by the open streams' contexts (see
    /// [`StreamContext::memory_bytes`]); the batch is not counted.
    pub fn context_bytes(&self) -> usize {
        self.context_bytes
    }

    /// Puts a stream back at offset 0 with no matches, keeping its id, mode
    /// and open time.
    pub fn reset_stream(&mut self, stream: &Uuid) -> Result<(), ScanError> {
        let ctx = self
            .streams
            .get_mut(stream)
            .ok_or(ScanError::UnknownStream(*stream))?;
        // Its bytes still in the batch belong to the old epoch and are ignored.
        let mut fresh = new_context((*stream, ctx.mode, self.new_streams), &mut self.epochs);
        fresh.stats.opened_at_ms = ctx.stats.opened_at_ms;
        // What the stream is (a file's name) outlives a reset of its bytes.
        fresh.externals = std::mem::take(&mut ctx.externals);
        self.context_bytes = self.context_bytes + fresh.memory_bytes() - ctx.memory_bytes();
        self.retained_bytes -= ctx.retained.len();
        **ctx = fresh;
        Ok(())
    }

    /// Ids of the open streams, in no particular order.
    pub fn active_streams(&self) -> Vec<Uuid> {
        self.streams.keys().copied().collect()
    }

    /// Counters of an open stream.
    pub fn stream_stats(&self, stream: &Uuid) -> Option<&StreamStats> {
        self.streams.get(stream).map(|c| &c.stats)
    }

    /// The context of an open stream (plain data).
    pub fn stream_context(&self, stream: &Uuid) -> Option<&StreamContext> {
        self.streams.get(stream).map(|ctx| &**ctx)
    }

    /// The open streams' contexts, in no particular order.
    pub fn stream_contexts(&self) -> impl Iterator<Item = &StreamContext> {
        self.streams.values().map(|ctx| &**ctx)
    }

    /// The open streams' contexts, for the engine's bookkeeping of what is
    /// durable (nothing a search depends on may change through it).
    #[cfg(feature = "engine")]
    pub(crate) fn stream_contexts_mut(&mut self) -> impl Iterator<Item = &mut StreamContext> {
        self.streams.values_mut().map(|ctx| &mut **ctx)
    }

    /// Counters of the scanner.
    pub fn stats(&self) -> ScannerStats {
        ScannerStats {
            open_streams: self.streams.len(),
            streams_opened: self.epochs.opened,
            retained_bytes: self.retained_bytes,
            match_read_scans: self.match_reads.scans(),
            ..self.stats.clone()
        }
    }
}

/// Which of the match reads `reads` hold on the match at `range` of a
/// segment's `data` (see `rules::match_reads`), leaving out those the
/// stream already knows hold: on settled matches, and for a `provisional`
/// match also on provisional ones. A helper scan that fails breaks the
/// stream, as a failed search does: its verdict would not be exact.
fn match_reads_held(
    scanner: &mut MatchReadScanner<'_>,
    ctx: &mut StreamContext,
    data: &[u8],
    range: &std::ops::Range<usize>,
    reads: u64,
    provisional: bool,
) -> u64 {
    let provisional_known = if provisional {
        ctx.provisional_match_reads
    } else {
        0
    };
    let unknown = reads & !(ctx.match_reads | provisional_known);
    if unknown == 0 {
        return 0;
    }
    scanner.held(data, range, unknown).unwrap_or_else(|err| {
        let reason = format!("a read of a match's bytes could not be evaluated: {err}");
        ctx.broken.get_or_insert_with(|| reason.into());
        0
    })
}

/// The matches of `found` whose rules `ctx`'s stream has not ruled out
/// (see `rules::preconditions`), counting the others in `dropped`.
fn drop_ruled_out(mut found: Vec<Found>, ctx: &StreamContext, dropped: &mut u64) -> Vec<Found> {
    if ctx.ruled_out.0.is_some() {
        let before = found.len();
        found.retain(|m| !m.precondition.is_some_and(|p| ctx.ruled_out.contains(p)));
        *dropped += (before - found.len()) as u64;
    }
    found
}

/// The context of a stream, opened (and counted, in `epochs` and in
/// `context_bytes`) if needed, or why data in `kind`'s mode cannot go to
/// it: it is open in the other mode or broken, or too many streams are
/// open. One lookup. A free function so that callers may go on using the
/// scanner's other fields.
fn open_context<'a>(
    streams: &'a mut HashMap<Uuid, Box<StreamContext>, RandomState>,
    epochs: &mut Epochs,
    context_bytes: &mut usize,
    kind: (Uuid, StreamMode, NewStreams),
    config: &ScannerConfig,
) -> Result<&'a mut StreamContext, ScanError> {
    let open = streams.len();
    match streams.entry(kind.0) {
        Entry::Occupied(entry) => {
            admission(Some(entry.get()), (kind.0, kind.1), open, config)?;
            Ok(entry.into_mut())
        }
        Entry::Vacant(entry) => {
            admission(None, (kind.0, kind.1), open, config)?;
            epochs.opened += 1;
            let ctx = new_context(kind, epochs);
            *context_bytes += ctx.memory_bytes();
            Ok(entry.insert(Box::new(ctx)))
        }
    }
}

/// Whether data in `mode` may go to `stream`, whose context is `ctx` if it
/// is open, while `open` streams are: not to a stream a failed search
/// broke or that is open in the other mode, nor to a new one when
/// `max_open_streams` are open.
fn admission(
    ctx: Option<&StreamContext>,
    (stream, mode): (Uuid, StreamMode),
    open: usize,
    config: &ScannerConfig,
) -> Result<(), ScanError> {
    let Some(ctx) = ctx else {
        return match open >= config.max_open_streams {
            true => Err(ScanError::TooManyStreams {
                stream,
                limit: config.max_open_streams,
            }),
            false => Ok(()),
        };
    };
    if let Some(broken) = broken_error(ctx, config) {
        return Err(broken);
    }
    match ctx.mode == mode {
        true => Ok(()),
        false => Err(ScanError::ModeMismatch {
            stream,
            opened: ctx.mode.name(),
            attempted: mode.name(),
        }),
    }
}

/// The error of a stream a failed search broke, if it is one.
fn broken_error(ctx: &StreamContext, config: &ScannerConfig) -> Option<ScanError> {
    let reason = ctx.broken.as_ref()?;
    Some(ScanError::SearchFailed {
        stream: ctx.id,
        reason: reason.to_string(),
        limit: config.scan_timeout,
    })
}

/// Puts a stream in the current batch's list (once), and starts the
/// batch's clock if it is the first (`now_ms`: the wall clock, read for
/// the chunk).
fn note_in_batch(
    ctx: &mut StreamContext,
    batch_streams: &mut Vec<Uuid>,
    batch_started: &mut Option<BatchStart>,
    now_ms: u64,
) {
    if !ctx.in_batch {
        ctx.in_batch = true;
        batch_streams.push(ctx.id);
    }
    batch_started.get_or_insert_with(|| BatchStart {
        at: Instant::now(),
        wall_ms: now_ms,
    });
}

/// When the current batch took its first bytes: by the monotonic clock,
/// for [`MultiStreamScanner::flush_if_due`], and by the wall clock, which
/// each chunk reads once for its stream's last-seen time and its check
/// of the batch's delay.
#[derive(Debug, Clone, Copy)]
struct BatchStart {
    at: Instant,
    wall_ms: u64,
}

/// A new context with the next epoch.
fn new_context(
    (stream, mode, new_streams): (Uuid, StreamMode, NewStreams),
    epochs: &mut Epochs,
) -> StreamContext {
    epochs.last += 1;
    let mut ctx = StreamContext::new(stream, mode, epochs.last, new_streams.retention);
    ctx.deferred = new_streams.defer_search && ctx.retention == Retention::Retaining;
    if mode == StreamMode::Chunks {
        ctx.digests = new_streams.digests.start();
    }
    ctx
}

/// How new streams start.
#[derive(Debug, Clone, Copy)]
struct NewStreams {
    /// `Retaining` when the rules have whole-data or dense rules.
    retention: Retention,
    /// Whether a retaining stream's search waits (see
    /// `ScannerConfig::eager_search`).
    defer_search: bool,
    /// The digests of the whole data the rules read (see
    /// `stream::digests`), kept by chunk streams.
    digests: DigestSet,
}

/// Tells incarnations of streams apart.
#[derive(Default)]
struct Epochs {
    /// Epoch of the last context created (opens and resets).
    last: u64,
    /// Streams opened.
    opened: u64,
}
