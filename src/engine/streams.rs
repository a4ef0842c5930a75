//! A shard's streams: the work of a shard, without actix.
//!
//! [`Streams`] owns what a shard keeps: its scanners (one per rule
//! generation, [`super::generation`]), the stream store's side
//! ([`Residency`], with a store), the rules already reported per stream,
//! the shard's counters and metric handles, and the report of a shutdown
//! in progress. The actor (`shard.rs`) turns each command into one call
//! here, under its fault boundary; everything below runs on the shard's
//! thread and knows nothing of mailboxes, so it is tested here with plain
//! calls.
//!
//! One way in to a stream: [`Streams::enter`] reads a stored stream back
//! into memory (its failure, a damaged entry, goes to the ledger like any
//! other) and then reports the error waiting for the stream's caller, if
//! any. Every operation that works on a stream's context starts there, so
//! none can meet a stream that is open but not resident. The operations
//! that do not enter say why (a stored stream's offsets are read from its
//! entry without restoring it).
//!
//! Metrics: the scanner's counters become metrics in one place,
//! [`Generation::scan`](super::generation::Generation::scan), which every searching scanner call goes through;
//! the handles are borrowed, never cloned (a chunk costs no allocation for
//! them).

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;
use std::time::{Duration, Instant};

use uuid::Uuid;

use super::events::{CloseReason, ClosedEvent, EventHub, Reported};
use super::generation::Generations;
use super::ledger::ShardShared;
use super::residency::Residency;
use crate::config::EngineConfig;
use crate::error::{EngineError, ErrorKind, ScanError};
use crate::metrics::ShardMetrics;
use crate::results::StreamResults;
use crate::rules::{External, RuleSet};
use crate::scanner::{MultiStreamScanner, ScannerStats};
use crate::stream::{now_ms, StreamMode};

/// Counters of one shard.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct ShardStats {
    /// The shard's index.
    pub shard: usize,
    /// The scanners' counters, summed over rule generations.
    #[serde(flatten)]
    pub scanner: ScannerStats,
    /// Bytes appended to streams.
    pub bytes: u64,
    /// Chunks and lines appended.
    pub chunks: u64,
    /// Messages queued now (a chunk or line sent alone, or a burst's share
    /// for this shard).
    pub mailbox_depth: usize,
    /// Restarts after a fault.
    pub restarts: u64,
    /// Streams lost in faults.
    pub lost_streams: u64,
    /// What the last fault reported.
    pub last_fault: Option<String>,
    /// Streams waiting for their caller to learn they were lost or failed.
    pub failed_streams: usize,
    /// Rule sets in use (more than one after a reload, until the streams
    /// of the older rules close).
    pub generations: usize,
    /// Open streams whose context is in the stream store only (counted in
    /// `open_streams` too).
    pub stored_streams: usize,
}

/// What a shard hands back at shutdown.
#[derive(Debug, Default)]
pub struct ShardReport {
    /// Final verdicts of the streams that were open.
    pub results: Vec<StreamResults>,
    /// Streams that could not be closed cleanly, with why.
    pub failed: Vec<(Uuid, EngineError)>,
    /// Streams left open in the stream store, to resume at the next start.
    pub kept: usize,
}

/// Where a stream stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct StreamOffsets {
    /// Bytes appended so far: where the next chunk starts.
    pub offset: u64,
    /// Lines appended so far (line streams; newlines seen, for chunk
    /// streams).
    pub lines: u64,
    /// Bytes whose effect is durable in the stream store: after a crash of
    /// yaraflow the stream resumes here. `None` without a store, or before
    /// the stream was first written to it.
    pub durable_offset: Option<u64>,
    /// The same in lines: where a line stream resumes (an empty line moves
    /// no offset, so a line producer resumes by line count).
    pub durable_lines: Option<u64>,
}

/// The streams of one shard and everything kept about them.
pub(crate) struct Streams {
    shared: Arc<ShardShared>,
    config: EngineConfig,
    /// The rules new streams (and a restart) use.
    rules: Arc<RuleSet>,
    generations: Generations,
    events: Arc<EventHub>,
    reported: Reported,
    metrics: ShardMetrics,
    bytes: u64,
    chunks: u64,
    restarts: u64,
    lost_streams: u64,
    last_fault: Option<String>,
    /// The report of a shutdown in progress.
    closing: ShardReport,
    /// The stream store's side of the shard, if there is a store.
    residency: Option<Residency>,
    /// When idle streams were last looked for.
    idle_checked: Instant,
}

impl Streams {
    /// No stream yet, on `rules`.
    pub fn new(
        shared: Arc<ShardShared>,
        config: EngineConfig,
        rules: Arc<RuleSet>,
        events: Arc<EventHub>,
        residency: Option<Residency>,
    ) -> Streams {
        Streams {
            metrics: ShardMetrics::new(shared.index),
            generations: Generations::new(rules.clone(), config.scanner.clone()),
            reported: Reported::new(config.rule_metrics),
            shared,
            config,
            rules,
            events,
            bytes: 0,
            chunks: 0,
            restarts: 0,
            lost_streams: 0,
            last_fault: None,
            closing: ShardReport::default(),
            residency,
            idle_checked: Instant::now(),
        }
    }

    /// The way in to a stream: reads it back from the store if it is
    /// stored there, then the error waiting for its caller, if any.
    fn enter(&mut self, stream: Uuid) -> Result<(), EngineError> {
        self.make_resident(stream);
        match self.shared.failures.get(&stream) {
            Some(failure) => Err(failure),
            None => Ok(()),
        }
    }

    /// Reads a stored stream back into memory, if it is stored; a failure
    /// (a damaged entry) is kept for the stream's caller. Only
    /// [`Self::enter`] calls it.
    fn make_resident(&mut self, stream: Uuid) {
        let Some(residency) = self.residency.as_mut() else {
            return;
        };
        let Some(tag) = residency.rules_of(&stream) else {
            return;
        };
        let result = match self.generations.with_rules(tag) {
            Some(generation) => generation.with(|scanner| residency.restore(scanner, stream)),
            None => Err(EngineError::StreamFailed {
                stream,
                reason: "the rules it was scanned with are no longer loaded".into(),
            }),
        };
        if let Err(error) = result {
            self.metrics.error(ErrorKind::StoreFailed);
            let failure = match error {
                failure @ EngineError::StreamFailed { .. } => failure,
                other => EngineError::StreamFailed {
                    stream,
                    reason: other.to_string(),
                },
            };
            self.shared.failures.record(stream, failure);
        }
    }

    /// Drops old rule generations that no stream needs any more.
    fn prune(&mut self) {
        let residency = self.residency.as_ref();
        self.generations
            .prune(|tag| residency.is_some_and(|r| r.holds_rules(tag)));
    }

    /// With a store: runs `work` on the current rules' generation and the
    /// residency, then syncs the generation's metrics. `None` without a
    /// store.
    fn with_current_store<R>(
        &mut self,
        work: impl FnOnce(&mut MultiStreamScanner<'_>, &mut Residency) -> R,
    ) -> Option<R> {
        let residency = self.residency.as_mut()?;
        let generation = self.generations.current();
        Some(generation.scan(&self.metrics, |scanner| work(scanner, residency)))
    }

    /// A store operation failed: counted, and kept as the last fault.
    fn store_failed(&mut self, what: &str, error: EngineError) {
        self.metrics.error(ErrorKind::StoreFailed);
        self.last_fault = Some(format!("{what} failed: {error}"));
    }

    /// Checks that a request's streams can all take data (the shard's
    /// `Admit` command); with `open`, the new streams are opened. A refusal comes with the index of the item it
    /// concerns.
    pub fn admit(
        &mut self,
        streams: &[(Uuid, usize)],
        mode: StreamMode,
        open: bool,
    ) -> Result<Vec<Uuid>, (usize, EngineError)> {
        // Every stream is entered before any is checked, and so before
        // the limit is: a restored stream counts as open.
        let entered: Vec<_> = streams.iter().map(|&(s, _)| self.enter(s)).collect();
        let mut new = Vec::new();
        for (&(stream, index), entered) in streams.iter().zip(entered) {
            entered.map_err(|failure| (index, failure))?;
            let held = self.generations.holding(&stream);
            match held.map(|g| g.with(|scanner| scanner.check_append(stream, mode))) {
                Some(Err(error)) => return Err((index, error.into())),
                Some(Ok(())) => {}
                None => new.push((stream, index)),
            }
        }
        let limit = self.config.scanner.max_open_streams;
        let current = self.generations.current();
        let open_now = current.stats().open_streams;
        if open_now + new.len() > limit {
            let (stream, index) = new[limit.saturating_sub(open_now)];
            return Err((index, ScanError::TooManyStreams { stream, limit }.into()));
        }
        if open {
            for &(stream, index) in &new {
                current
                    .with(|scanner| scanner.open_stream(stream, mode))
                    .map_err(|error| (index, error.into()))?;
            }
        }
        Ok(new.into_iter().map(|(stream, _)| stream).collect())
    }

    /// Closes the streams a refused request opened, if they still hold
    /// nothing (another request may have sent them data since). Not
    /// entered: an admitted stream is resident, a stored one has data.
    pub fn release(&mut self, streams: &[Uuid]) {
        for stream in streams {
            let empty = self.generations.holding(stream).is_some_and(|generation| {
                generation.with(|scanner| {
                    scanner
                        .stream_stats(stream)
                        .is_some_and(|stats| stats.chunks == 0)
                })
            });
            if empty {
                self.discard(stream);
            }
        }
    }

    /// Appends a chunk or line; an error is kept for the stream's next
    /// caller (data of the other mode is only counted).
    pub fn append(&mut self, stream: Uuid, data: &[u8], mode: StreamMode, submitted: Instant) {
        #[cfg(test)]
        if data == super::tests::PANIC_CHUNK {
            panic!("injected fault in a chunk");
        }
        if self.enter(stream).is_err() {
            self.metrics.error(ErrorKind::StreamFailed);
            return;
        }
        let generation = self.generations.for_stream(&stream);
        let result = generation.scan(&self.metrics, |scanner| match mode {
            StreamMode::Chunks => scanner.scan_chunk(stream, data),
            StreamMode::Lines => scanner.scan_line(stream, data),
        });
        match result {
            Ok(()) => {
                generation.pending.push(submitted);
                self.bytes += data.len() as u64;
                self.chunks += 1;
                self.metrics.bytes.increment(data.len() as u64);
                match mode {
                    StreamMode::Chunks => self.metrics.chunks.increment(1),
                    StreamMode::Lines => self.metrics.lines.increment(1),
                }
            }
            Err(error @ ScanError::ModeMismatch { .. }) => {
                // Data of the other mode is no part of the stream: refused
                // alone, the stream has no hole and goes on as it was.
                // (Callers that must learn it use the acknowledged or
                // admitted appends, which check before sending.)
                self.metrics.error(error.kind());
            }
            Err(error) => {
                self.metrics.error(error.kind());
                let failure = EngineError::StreamFailed {
                    stream,
                    reason: error.to_string(),
                };
                self.shared.failures.record(stream, failure);
            }
        }
    }

    /// Enters `streams` and searches what their verdicts need in one
    /// search per rule generation, so that the verdicts that follow need
    /// none. A failure here is left for each verdict to meet (and report)
    /// on its own.
    pub fn prepare_verdicts(&mut self, streams: &[Uuid]) {
        for stream in streams {
            let _ = self.enter(*stream);
        }
        for generation in self.generations.iter_mut() {
            let held: Vec<Uuid> = streams
                .iter()
                .filter(|s| generation.holds(s))
                .copied()
                .collect();
            if !held.is_empty() {
                let _ = generation.with(|scanner| scanner.prepare_verdicts(&held));
            }
        }
    }

    /// The verdict of a stream so far (`None` if it is not open), closing
    /// it if `close`. A close always closes, even when its verdict fails.
    pub fn verdict(
        &mut self,
        stream: Uuid,
        close: bool,
    ) -> Result<Option<StreamResults>, EngineError> {
        if let Err(failure) = self.enter(stream) {
            if close {
                self.shared.failures.clear(&stream);
                self.discard(&stream);
            }
            return Err(failure);
        }
        let Some(generation) = self.generations.holding(&stream) else {
            return Ok(None);
        };
        let started = Instant::now();
        let result = generation.scan(&self.metrics, |scanner| match close {
            true => scanner.close_stream(&stream),
            false => scanner.get_matches(&stream),
        });
        ShardMetrics::seconds(&self.metrics.evaluation, started.elapsed());
        if close && result.is_err() {
            // A close always closes: a verdict that failed (a timeout, say)
            // is not going to succeed later, and the caller is done.
            self.discard(&stream);
        }
        let results = result.inspect_err(|e| self.metrics.error(e.kind()))?;
        if let Some(results) = &results {
            let new = self
                .reported
                .report(&self.events, self.shared.index, results, close);
            self.metrics.rule_matches.increment(new);
        }
        if close {
            self.metrics.closed.increment(1);
            let durable = results.as_ref().is_some_and(|r| r.durable_offset.is_some());
            self.forget(&stream, durable);
            self.prune();
        }
        Ok(results)
    }

    /// Bytes appended to a stream so far, or the error waiting for it.
    pub fn offset(&mut self, stream: Uuid) -> Result<u64, EngineError> {
        Ok(self.offsets(stream)?.map_or(0, |o| o.offset))
    }

    /// A stream's offsets; `None` if it is not open. Not entered: a stored
    /// stream's are read from its entry (it stays stored).
    pub fn offsets(&mut self, stream: Uuid) -> Result<Option<StreamOffsets>, EngineError> {
        if let Some(failure) = self.shared.failures.get(&stream) {
            return Err(failure);
        }
        let of = |c: &crate::StreamContext| StreamOffsets {
            offset: c.stats.bytes,
            lines: c.stats.lines,
            durable_offset: c.durable.map(|d| d.bytes),
            durable_lines: c.durable.map(|d| d.lines),
        };
        if let Some(residency) = self.residency.as_ref().filter(|r| r.is_stored(&stream)) {
            return Ok(residency.peek(stream)?.map(|c| StreamOffsets {
                durable_offset: Some(c.stats.bytes),
                durable_lines: Some(c.stats.lines),
                ..of(&c)
            }));
        }
        let offsets = self.generations.holding(&stream).and_then(|generation| {
            generation.with(|scanner| scanner.stream_context(&stream).map(of))
        });
        Ok(offsets)
    }

    /// Ids of the open streams, resident or stored.
    pub fn active_streams(&mut self) -> Vec<Uuid> {
        let mut streams = self.generations.active_streams();
        if let Some(residency) = &self.residency {
            streams.extend(residency.stored_streams());
        }
        streams
    }

    /// Forgets what the shard keeps about a stream besides its context;
    /// `durable` says whether its context has a copy in the store.
    fn forget(&mut self, stream: &Uuid, durable: bool) {
        self.reported.forget(stream);
        if let Some(residency) = self.residency.as_mut() {
            residency.forget(stream, durable);
        }
    }

    /// Closes a stream without a verdict (it has a hole).
    fn discard(&mut self, stream: &Uuid) {
        let durable = self.generations.holding(stream).is_some_and(|generation| {
            generation.with(|scanner| {
                scanner
                    .stream_context(stream)
                    .is_some_and(|c| c.durable.is_some())
            })
        });
        self.forget(stream, durable);
        if let Some(generation) = self.generations.holding(stream) {
            generation.with(|scanner| scanner.discard_stream(stream));
            self.metrics.closed.increment(1);
            self.prune();
        }
    }

    /// Opens a stream in `mode` if it is not open (within
    /// `max_open_streams`), and sets its own values of the rules'
    /// externals (see `MultiStreamScanner::set_stream_externals`). A failed
    /// stream answers its failure.
    pub fn open(
        &mut self,
        stream: Uuid,
        mode: StreamMode,
        externals: Vec<External>,
    ) -> Result<(), EngineError> {
        // Enters the stream (a failure waiting is answered), checks the
        // mode of an open one, opens a new one.
        self.admit(&[(stream, 0)], mode, true)
            .map_err(|(_, error)| {
                if let EngineError::Scan(refusal) = &error {
                    self.metrics.error(refusal.kind());
                }
                error
            })?;
        let generation = self.generations.for_stream(&stream);
        let result = generation.with(|scanner| scanner.set_stream_externals(stream, externals));
        result.map_err(|error| {
            self.metrics.error(error.kind());
            error.into()
        })
    }

    /// Puts a stream back at offset 0; acknowledges its failure, if it had
    /// one.
    pub fn reset(&mut self, stream: Uuid) -> Result<(), EngineError> {
        // A failure waiting is what the reset acknowledges.
        let _ = self.enter(stream);
        let acknowledged = self.shared.failures.clear(&stream);
        // Its stored copy, if any, is of the old bytes.
        self.forget(&stream, true);
        let Some(generation) = self.generations.holding(&stream) else {
            // A lost stream is gone already: it opens anew on its next chunk.
            return match acknowledged {
                true => Ok(()),
                false => Err(ScanError::UnknownStream(stream).into()),
            };
        };
        generation.with(|scanner| scanner.reset_stream(&stream))?;
        self.metrics.reset.increment(1);
        Ok(())
    }

    /// The shard's counters.
    pub fn stats(&mut self) -> ShardStats {
        let mut stats = ShardStats {
            shard: self.shared.index,
            bytes: self.bytes,
            chunks: self.chunks,
            mailbox_depth: self.shared.gate.depth(),
            restarts: self.restarts,
            lost_streams: self.lost_streams,
            last_fault: self.last_fault.clone(),
            failed_streams: self.shared.failures.len(),
            ..ShardStats::default()
        };
        for generation in self.generations.iter() {
            stats.scanner += &generation.stats();
            stats.generations += 1;
        }
        stats.stored_streams = self.residency.as_ref().map_or(0, |r| r.stored_count());
        stats.scanner.open_streams += stats.stored_streams;
        stats
    }

    /// New streams use `rules` from now on.
    pub fn reload(&mut self, rules: Arc<RuleSet>) {
        self.rules = rules.clone();
        self.generations.reload(rules);
        self.prune();
    }

    /// Closes every stream; the final verdicts and the streams that failed.
    /// The report grows in `self.closing`, so that a fault half-way loses
    /// none of what was closed before it (see [`Self::take_closing`]).
    pub fn shutdown(&mut self) -> ShardReport {
        if self.residency.is_some() {
            // Before the failures are taken: reading one back may fail.
            self.restore_older_rules();
        }
        let failed = self.shared.failures.take_all();
        for (stream, _) in &failed {
            self.discard(stream);
        }
        self.closing.failed.extend(failed);
        if self.residency.is_some() {
            self.keep_in_store();
        }
        let limit = self.config.shutdown_timeout;
        let deadline = Instant::now() + limit;
        let (metrics, closing) = (&self.metrics, &mut self.closing);
        for generation in self.generations.iter_mut() {
            let streams = generation.with(|scanner| scanner.active_streams());
            let started = Instant::now();
            let closed_before = closing.results.len();
            generation.scan(metrics, |scanner| {
                close_all(scanner, &streams, closing, deadline, limit);
            });
            ShardMetrics::seconds(&metrics.evaluation, started.elapsed());
            metrics
                .closed
                .increment((closing.results.len() - closed_before) as u64);
        }
        for results in &self.closing.results {
            let new = self
                .reported
                .report(&self.events, self.shared.index, results, true);
            self.metrics.rule_matches.increment(new);
            if let Some(residency) = self.residency.as_mut() {
                residency.forget(&results.stream, results.durable_offset.is_some());
            }
        }
        self.metrics.open.set(0.0);
        self.reported.clear();
        self.prune();
        // The engine stops: the closed streams' entries go, and the store
        // is let go of (its file lock).
        if let Some(Err(error)) = self.residency.take().map(|mut r| r.write_removals()) {
            self.store_failed("removing closed streams", error);
        }
        std::mem::take(&mut self.closing)
    }

    /// After a fault during a shutdown: what was closed before it, and the
    /// streams that failed.
    pub fn take_closing(&mut self) -> ShardReport {
        let mut report = std::mem::take(&mut self.closing);
        report.failed.extend(self.shared.failures.take_all());
        report
    }

    /// At shutdown with a store: stored streams of older rules (than the
    /// current ones) are entered, to be closed with their final verdicts
    /// (a restart could not restore them: their rules are gone).
    fn restore_older_rules(&mut self) {
        let current = self.generations.current().rules_tag();
        let older: Vec<Uuid> = self.residency.as_ref().map_or_else(Vec::new, |r| {
            r.stored_streams()
                .filter(|s| r.rules_of(s) != Some(current))
                .copied()
                .collect()
        });
        for stream in older {
            let _ = self.enter(stream);
        }
    }

    /// At shutdown with a store: writes the current rules' streams to the
    /// store (they resume at the next start) and takes them out of the
    /// scanner, so that only older rules' streams are closed. If the write
    /// fails, the streams are closed instead (their verdicts are not lost).
    fn keep_in_store(&mut self) {
        let kept = self.with_current_store(|scanner, residency| {
            residency.checkpoint(scanner)?;
            let streams = scanner.active_streams();
            let kept = scanner.evict_streams(&streams).map_err(EngineError::from)?;
            Ok::<_, EngineError>(kept.len() + residency.stored_count())
        });
        match kept {
            Some(Ok(kept)) => self.closing.kept = kept,
            Some(Err(error)) => self.store_failed("checkpoint at shutdown", error),
            None => {}
        }
    }

    /// Searches due batches and refreshes the gauges.
    pub fn tick(&mut self) {
        let (mut open, mut retained) = (0, 0);
        for generation in self.generations.iter_mut() {
            if let Err(error) = generation.scan(&self.metrics, |scanner| scanner.flush_if_due()) {
                // The batch is kept and searched again at the next tick.
                self.metrics.error(error.kind());
            }
            open += generation.seen.open_streams; // just synced
            retained += generation.seen.retained_bytes;
        }
        self.metrics.retained.set(retained as f64);
        open += self.residency.as_ref().map_or(0, |r| r.stored_count());
        self.metrics.open.set(open as f64);
        self.metrics
            .mailbox_depth
            .set(self.shared.gate.depth() as f64);
    }

    /// The timed work besides searching: idle streams are closed, a due
    /// checkpoint is written, and the resident bounds are enforced.
    pub fn maintain(&mut self) {
        self.close_idle_if_due();
        let failures = self.with_current_store(|scanner, residency| {
            let checkpoint = match residency.checkpoint_due() {
                true => residency.checkpoint(scanner).err(),
                false => None,
            };
            let eviction = residency.enforce_bounds(scanner);
            [
                ("checkpoint", checkpoint),
                ("eviction", eviction.err()),
                ("removing closed streams", residency.write_removals().err()),
            ]
        });
        for (what, error) in failures.into_iter().flatten() {
            if let Some(error) = error {
                self.store_failed(what, error);
            }
        }
    }

    /// A checkpoint asked for by a caller, then the resident bounds; the
    /// streams written. Without a store, nothing to do.
    pub fn checkpoint_now(&mut self) -> Result<usize, EngineError> {
        let done = self.with_current_store(|scanner, residency| {
            let written = residency.checkpoint(scanner);
            residency.enforce_bounds(scanner)?;
            Ok(written?.streams)
        });
        done.unwrap_or(Ok(0))
    }

    /// After data arrived: evicts at once if the current rules' scanner is
    /// over the resident bounds (the tick would, but a fast producer can
    /// open many streams between two ticks).
    pub fn enforce_bounds_if_over(&mut self) {
        // Cheap when under the bounds: the check comes first.
        let evicted =
            self.with_current_store(|scanner, residency| residency.enforce_bounds(scanner));
        if let Some(Err(error)) = evicted {
            self.store_failed("eviction", error);
        }
    }

    /// Closes the streams idle longer than the idle timeout, if it is time
    /// to look for them.
    fn close_idle_if_due(&mut self) {
        let Some(timeout) = self.config.idle_timeout else {
            return;
        };
        let every = (timeout / 4).clamp(self.config.tick, Duration::from_secs(1));
        if self.idle_checked.elapsed() < every {
            return;
        }
        self.idle_checked = Instant::now();
        let cutoff = now_ms().saturating_sub(timeout.as_millis() as u64);
        let mut idle = Vec::new();
        for generation in self.generations.iter_mut() {
            generation.with(|scanner| {
                let old = scanner
                    .stream_contexts()
                    .filter(|c| c.stats.last_seen_ms < cutoff);
                idle.extend(old.map(|c| c.id));
            });
        }
        if let Some(residency) = &self.residency {
            idle.extend(residency.stored_idle(cutoff));
        }
        for group in idle.chunks(1024) {
            self.close_idle(group);
        }
    }

    /// Closes idle streams; their final verdicts go out as events. A
    /// stream waiting for its caller to learn of a failure is dropped.
    fn close_idle(&mut self, streams: &[Uuid]) {
        self.prepare_verdicts(streams);
        for stream in streams {
            self.metrics.idle_closes.increment(1);
            if let Ok(Some(results)) = self.verdict(*stream, true) {
                self.events.publish_closed(ClosedEvent {
                    reason: CloseReason::IdleTimeout,
                    shard: self.shared.index,
                    results,
                });
            }
        }
    }

    /// While anyone subscribes to events: evaluates the streams that found
    /// matches, and reports the rules they match.
    pub fn report_new_matches(&mut self) {
        let subscribed = self.events.has_subscribers();
        let (shard, events) = (self.shared.index, &self.events);
        let (metrics, reported) = (&self.metrics, &mut self.reported);
        for generation in self.generations.iter_mut() {
            let streams = generation.with(|scanner| scanner.take_streams_with_new_matches());
            if streams.is_empty() || !subscribed {
                continue;
            }
            let started = Instant::now();
            // A second search, and why: a verdict needs the streams'
            // batched bytes searched and their tails searched as the end of
            // the data (a match near the end is provisional until then),
            // which the search that found these matches did not do. It
            // finds their matches again: these verdicts report them, so
            // they are forgotten here. Other streams whose batched bytes it
            // searched keep theirs for the next report.
            let verdicts = generation.scan(metrics, |scanner| {
                let verdicts = scanner.verdicts(&streams);
                scanner.forget_new_matches(&streams);
                verdicts
            });
            ShardMetrics::seconds(&metrics.evaluation, started.elapsed());
            match verdicts {
                Ok(verdicts) => {
                    for results in &verdicts {
                        let new = reported.report(events, shard, results, false);
                        metrics.rule_matches.increment(new);
                    }
                }
                Err(error) => metrics.error(error.kind()),
            }
        }
    }

    /// After a fault: the scanners are in an unknown state, so every
    /// stream they held is lost (recorded for its next caller) and they
    /// are replaced by empty ones on the same rules. Stored streams were
    /// not in memory, and survive. How many streams were lost.
    pub fn lose_all(&mut self, reason: String) -> usize {
        let fresh = Generations::new(self.rules.clone(), self.config.scanner.clone());
        let mut held = std::mem::replace(&mut self.generations, fresh);
        let lost =
            catch_unwind(AssertUnwindSafe(move || held.active_streams())).unwrap_or_default();
        self.last_fault = Some(reason);
        self.mark_lost(&lost);
        if let Some(residency) = self.residency.as_mut() {
            // Their stored copies (if any) are older than what was lost:
            // they must not come back at the next start.
            lost.iter()
                .for_each(|stream| residency.forget(stream, true));
        }
        self.reported.clear();
        self.metrics.open.set(0.0);
        self.metrics.error(ErrorKind::ShardFailed);
        lost.len()
    }

    /// Records streams as lost in the last fault (their next caller learns
    /// it).
    pub fn mark_lost(&mut self, streams: &[Uuid]) {
        let reason: Arc<str> = self.last_fault.as_deref().unwrap_or("panic").into();
        let mut newly = 0;
        for stream in streams {
            if self.shared.failures.get(stream).is_none() {
                newly += 1;
            }
            let error = EngineError::StreamLost {
                stream: *stream,
                shard: self.shared.index,
                reason: reason.clone(),
            };
            self.shared.failures.record(*stream, error);
        }
        self.lost_streams += newly;
        self.metrics.lost.increment(newly);
    }

    /// How often the shard's timed work runs.
    pub fn tick_every(&self) -> Duration {
        self.config.tick
    }

    /// Counts a restart after a fault.
    pub fn restarted(&mut self) {
        self.restarts += 1;
        self.metrics.restarts.increment(1);
    }
}

/// Closes `streams` after one search for all of them, one by one, so that
/// one stream's error costs no other stream its verdict. Past `deadline`
/// the streams left are dropped and reported as such: a shutdown ends in
/// bounded time whatever the streams hold.
fn close_all(
    scanner: &mut MultiStreamScanner<'_>,
    streams: &[Uuid],
    report: &mut ShardReport,
    deadline: Instant,
    limit: Duration,
) {
    // A failed search marks its streams broken; each close reports it.
    let _ = scanner.prepare_verdicts(streams);
    for stream in streams {
        if Instant::now() >= deadline {
            scanner.discard_stream(stream);
            let error = EngineError::ShutdownTimedOut {
                stream: *stream,
                limit_ms: limit.as_millis() as u64,
            };
            report.failed.push((*stream, error));
            continue;
        }
        match scanner.close_stream(stream) {
            Ok(results) => report.results.extend(results),
            Err(error) => {
                scanner.discard_stream(stream);
                report.failed.push((*stream, error.into()));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    //! The shard's work with plain calls: no actor, no mailbox.

    use super::*;
    use crate::config::StoreConfig;
    use crate::store::ContextStore;

    const RULES: &str = r#"
rule secret { strings: $a = "secret" condition: $a }
rule two_words { strings: $a = "alpha" $b = "omega" condition: $a and $b }
"#;

    fn streams_with(config: EngineConfig, residency: Option<Residency>) -> Streams {
        let rules = Arc::new(RuleSet::from_source(RULES, 1024).unwrap());
        let shared = Arc::new(ShardShared::new(0, &config));
        Streams::new(shared, config, rules, Arc::default(), residency)
    }

    fn streams() -> Streams {
        streams_with(EngineConfig::default(), None)
    }

    fn id(n: u128) -> Uuid {
        Uuid::from_u128(n)
    }

    fn chunk(streams: &mut Streams, stream: Uuid, data: &[u8]) {
        streams.append(stream, data, StreamMode::Chunks, Instant::now());
    }

    fn rule_names(results: &StreamResults) -> Vec<&str> {
        results
            .rules
            .iter()
            .map(|r| r.identifier.as_str())
            .collect()
    }

    #[test]
    fn appends_make_a_verdict_and_a_close_ends_the_stream() {
        let mut streams = streams();
        chunk(&mut streams, id(1), b"xx secr");
        chunk(&mut streams, id(1), b"et alpha .. omega");
        chunk(&mut streams, id(2), b"nothing here");
        let stats = streams.stats();
        assert_eq!((stats.bytes, stats.chunks), (36, 3));
        assert_eq!(stats.scanner.open_streams, 2);
        let so_far = streams.verdict(id(1), false).unwrap().unwrap();
        assert_eq!(rule_names(&so_far), ["secret", "two_words"]);
        assert_eq!(streams.offset(id(1)).unwrap(), 24);
        let closed = streams.verdict(id(1), true).unwrap().unwrap();
        assert_eq!(rule_names(&closed), ["secret", "two_words"]);
        assert_eq!(streams.verdict(id(1), false).unwrap(), None);
        assert_eq!(streams.active_streams(), [id(2)]);
    }

    #[test]
    fn data_of_the_other_mode_is_dropped_and_the_stream_goes_on() {
        let mut streams = streams();
        chunk(&mut streams, id(1), b"secr");
        streams.append(id(1), b"line", StreamMode::Lines, Instant::now());
        chunk(&mut streams, id(1), b"et");
        assert_eq!(streams.stats().failed_streams, 0);
        let results = streams.verdict(id(1), true).unwrap().unwrap();
        assert_eq!(results.stats.bytes, 6);
        assert_eq!(rule_names(&results), ["secret"]);
    }

    #[test]
    fn admit_refuses_past_the_limit_naming_the_item_and_opens_nothing() {
        let mut config = EngineConfig::default();
        config.scanner.max_open_streams = 2;
        let mut streams = streams_with(config, None);
        chunk(&mut streams, id(1), b"a");
        let request = [(id(1), 0), (id(2), 1), (id(3), 4)];
        let (index, refusal) = streams
            .admit(&request, StreamMode::Chunks, true)
            .unwrap_err();
        assert_eq!(index, 4);
        assert!(matches!(
            refusal,
            EngineError::Scan(ref e) if matches!(**e, ScanError::TooManyStreams { limit: 2, .. })
        ));
        assert_eq!(streams.active_streams(), [id(1)]);
        // A line for a chunk stream is refused before anything is opened.
        let (index, refusal) = streams
            .admit(&[(id(2), 0), (id(1), 1)], StreamMode::Lines, true)
            .unwrap_err();
        assert_eq!((index, refusal.kind()), (1, ErrorKind::ModeMismatch));
        assert_eq!(streams.active_streams(), [id(1)]);
        // Within the limit the new one opens, and a release closes it
        // while it holds nothing.
        let opened = streams
            .admit(&[(id(1), 0), (id(2), 1)], StreamMode::Chunks, true)
            .unwrap();
        assert_eq!(opened, [id(2)]);
        assert_eq!(streams.stats().scanner.open_streams, 2);
        streams.release(&[id(1), id(2)]);
        assert_eq!(streams.active_streams(), [id(1)]);
    }

    #[test]
    fn a_lost_stream_is_refused_until_a_close_or_reset_acknowledges_it() {
        let mut streams = streams();
        chunk(&mut streams, id(1), b"secret");
        chunk(&mut streams, id(2), b"secret");
        let lost = streams.lose_all("injected".into());
        assert_eq!(lost, 2);
        let stats = streams.stats();
        assert_eq!((stats.lost_streams, stats.failed_streams), (2, 2));
        assert_eq!(stats.last_fault.as_deref(), Some("injected"));
        // Data for a lost stream is dropped; the error stays for its caller.
        chunk(&mut streams, id(1), b"more");
        let error = streams.verdict(id(1), false).unwrap_err();
        assert_eq!(error.kind(), ErrorKind::StreamLost);
        assert_eq!(
            streams.offsets(id(1)).unwrap_err().kind(),
            ErrorKind::StreamLost
        );
        // A close acknowledges (answering the error), a reset too.
        assert!(streams.verdict(id(1), true).is_err());
        assert_eq!(streams.verdict(id(1), true).unwrap(), None);
        streams.reset(id(2)).unwrap();
        assert_eq!(streams.stats().failed_streams, 0);
        // The empty scanners take new streams at once.
        chunk(&mut streams, id(2), b"secret");
        let results = streams.verdict(id(2), true).unwrap().unwrap();
        assert_eq!(rule_names(&results), ["secret"]);
        assert!(streams.reset(id(3)).is_err(), "an unknown stream");
    }

    #[test]
    fn a_stored_stream_is_entered_by_its_next_operation_and_goes_on() {
        let dir = tempfile::tempdir().unwrap();
        let store_config = StoreConfig {
            path: dir.path().join("streams.redb"),
            max_resident_streams: 1,
            ..StoreConfig::default()
        };
        let store = Arc::new(ContextStore::open(&store_config.path, 1 << 20).unwrap());
        let residency = Residency::new(store, &store_config, 1, 0, Vec::new());
        let config = EngineConfig {
            store: Some(store_config),
            ..EngineConfig::default()
        };
        let mut streams = streams_with(config, Some(residency));
        chunk(&mut streams, id(1), b"xx secr");
        streams.enforce_bounds_if_over();
        // Last-seen times are in milliseconds: the two must differ.
        std::thread::sleep(Duration::from_millis(5));
        chunk(&mut streams, id(2), b"alpha");
        // Two streams, one resident: the least recently fed goes to the
        // store.
        streams.enforce_bounds_if_over();
        let stats = streams.stats();
        assert_eq!((stats.stored_streams, stats.scanner.open_streams), (1, 2));
        let stored = |streams: &Streams| streams.residency.as_ref().unwrap().is_stored(&id(1));
        assert!(stored(&streams));
        assert_eq!(streams.offset(id(1)).unwrap(), 7, "read from its entry");
        assert!(stored(&streams), "offsets do not enter");
        // The next chunk enters it: read back, then appended to.
        chunk(&mut streams, id(1), b"et");
        assert!(!stored(&streams));
        let results = streams.verdict(id(1), true).unwrap().unwrap();
        assert_eq!(rule_names(&results), ["secret"]);
        assert_eq!(results.stats.bytes, 9);
        let report = streams.shutdown();
        assert_eq!(report.kept, 1, "the other stream stays in the store");
    }

    #[test]
    fn match_events_come_once_per_rule_and_none_is_lost_to_the_probes_search() {
        let mut streams = streams();
        let events = streams.events.subscribe(64);
        let rules_of = |events: &crate::engine::Subscription| {
            let mut got = Vec::new();
            while let Some(event) = events.try_recv() {
                got.push((event.stream, event.rule, event.at_close));
            }
            got
        };
        // Far from the end, a match is settled by the batch's search.
        let padding = [b'.'; 300];
        chunk(&mut streams, id(1), &[&b"a secret"[..], &padding].concat());
        streams.generations.current().with(|s| s.flush()).unwrap();
        // Stream 1 has more bytes in the batch, so its verdict (the probe)
        // searches the batch, and with it stream 2's bytes.
        chunk(&mut streams, id(1), &padding);
        chunk(
            &mut streams,
            id(2),
            &[&b"another secret"[..], &padding].concat(),
        );
        streams.report_new_matches();
        assert_eq!(rules_of(&events), [(id(1), "secret".into(), false)]);
        // Stream 2's match, found by that search, is reported next.
        streams.report_new_matches();
        assert_eq!(rules_of(&events), [(id(2), "secret".into(), false)]);
        // Reported once: nothing new, no event; the close repeats none.
        streams.report_new_matches();
        streams.verdict(id(1), true).unwrap();
        assert_eq!(rules_of(&events), []);
    }
}
