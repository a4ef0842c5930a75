//! The shard: one scanner actor, on its own thread, owning a share of the
//! streams.
//!
//! A [`ShardActor`] owns its scanners (one per rule generation, see
//! [`super::generation`]); YARA-X scanners are not `Send`, so they are
//! built on the shard's thread and never leave it. Every request reaches
//! the shard as one [`ShardCommand`] through its actix mailbox, in the
//! order its producer sent it. Chunks carry no reply; queries and closes
//! carry a oneshot channel.
//!
//! Faults: every command runs under `catch_unwind`. A panic (from YARA-X or
//! from yaraflow) leaves the scanners in an unknown state, so the shard
//! marks every stream it held as lost (their next caller gets
//! `StreamLost`), reports the fault ([`ShardFailed`], to a `Recipient`), and stops; actix's `Supervisor`
//! restarts it at once with empty scanners on the same rules and the same
//! mailbox, so the chunks queued behind the fault are not lost (those of
//! lost streams are refused, new streams open normally). Other shards never
//! notice.
//!
//! Errors that concern one chunk after its sender has returned (the
//! per-shard stream limit, a failed search) are recorded against the
//! stream in [`ShardShared`], so that its next caller learns of them
//! instead of getting a verdict over a stream with a hole. Data of the
//! wrong mode leaves no hole: it is dropped and counted, and the stream
//! goes on. Acknowledged appends, and requests admitted whole
//! ([`ShardCommand::Admit`]), are checked before anything is applied, so
//! their caller gets the refusal and no stream changes.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use bytes::Bytes;
use tokio::sync::oneshot;
use uuid::Uuid;

use super::events::{CloseReason, ClosedEvent};
use super::events::{EventHub, Reported};
use super::gate::MailboxGate;
use super::generation::{Generation, Generations};
use super::ledger::FailureLedger;
use super::residency::Residency;
use crate::config::EngineConfig;
use crate::error::{EngineError, ErrorKind, ScanError};
use crate::metrics::ShardMetrics;
use crate::results::StreamResults;
use crate::rules::RuleSet;
use crate::scanner::ScannerStats;
use crate::stream::{now_ms, StreamMode};

/// A reply channel.
pub(crate) type Reply<T> = oneshot::Sender<Result<T, EngineError>>;

/// What a shard can be asked to do.
pub(crate) enum ShardCommand {
    /// Append data to streams, in order. Errors are kept for each
    /// stream's next caller; with `ack`, that stream's new offset (or its
    /// error) is also sent back once the data is taken.
    Append {
        items: Vec<(Uuid, Bytes)>,
        bytes: usize,
        mode: StreamMode,
        submitted: Instant,
        ack: Option<(Uuid, Reply<u64>)>,
    },
    /// Checks, before any of a request's data is sent, that it can all be
    /// taken: each stream (with the index of its first item in the
    /// request) is not failed, not open in the other mode, and the new
    /// ones fit under `max_open_streams`. If so, the new streams are
    /// opened (the data follows in an `Append`) and sent back; if not,
    /// nothing changes and the refusal names the item.
    Admit {
        streams: Vec<(Uuid, usize)>,
        mode: StreamMode,
        reply: Reply<Vec<Uuid>>,
    },
    /// Closes streams an `Admit` opened, if they still hold no data (the
    /// request was refused by another shard).
    Release { streams: Vec<Uuid> },
    /// The verdict of a stream so far, closing it if `close`.
    Verdict {
        stream: Uuid,
        close: bool,
        reply: Reply<Option<StreamResults>>,
    },
    /// Close several streams, searching their tails together; one reply
    /// per stream, in order.
    CloseMany {
        streams: Vec<Uuid>,
        replies: Vec<Reply<Option<StreamResults>>>,
    },
    /// Put a stream back at offset 0.
    Reset { stream: Uuid, reply: Reply<()> },
    /// Write a checkpoint now and enforce the resident bounds; replies
    /// with the streams written.
    Checkpoint { reply: Reply<usize> },
    /// A stream's offset and durable offset.
    Offsets {
        stream: Uuid,
        reply: Reply<Option<StreamOffsets>>,
    },
    /// Ids of the shard's open streams.
    Active { reply: Reply<Vec<Uuid>> },
    /// The shard's counters.
    Stats { reply: Reply<ShardStats> },
    /// New streams use these rules from now on.
    Reload {
        rules: Arc<RuleSet>,
        reply: Reply<()>,
    },
    /// Close every stream and hand back the final verdicts.
    Shutdown { reply: Reply<ShardReport> },
    /// Panic (fault-injection for tests).
    #[cfg(test)]
    Panic,
}

impl Message for ShardCommand {
    type Result = ();
}

/// Sent by a shard that failed, just before it restarts, to whoever keeps
/// the record of faults (the supervisor). The shard holds a `Recipient` of
/// it, not the supervisor's address: the shard knows nothing of the
/// supervisor, and the imports point one way.
pub(crate) struct ShardFailed {
    pub shard: usize,
    pub lost: usize,
    pub reason: String,
}

impl Message for ShardFailed {
    type Result = ();
}

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

/// What a shard shares with the handles: its queue bound and the errors
/// waiting for their streams' callers.
pub(crate) struct ShardShared {
    pub index: usize,
    pub gate: MailboxGate,
    pub failures: FailureLedger,
}

impl ShardShared {
    pub fn new(index: usize, config: &EngineConfig) -> ShardShared {
        ShardShared {
            index,
            gate: MailboxGate::new(config.mailbox_messages, config.mailbox_bytes),
            failures: FailureLedger::default(),
        }
    }
}

/// One scanner actor.
pub(crate) struct ShardActor {
    shared: Arc<ShardShared>,
    config: EngineConfig,
    /// `None` between a fault and the restart.
    generations: Option<Generations>,
    /// The rules a restart builds on.
    rules: Arc<RuleSet>,
    events: Arc<EventHub>,
    reported: Reported,
    /// Where the shard's faults are reported.
    faults: Recipient<ShardFailed>,
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

impl ShardActor {
    pub fn new(
        shared: Arc<ShardShared>,
        config: EngineConfig,
        rules: Arc<RuleSet>,
        events: Arc<EventHub>,
        faults: Recipient<ShardFailed>,
        residency: Option<Residency>,
    ) -> ShardActor {
        let metrics = ShardMetrics::new(shared.index);
        ShardActor {
            generations: Some(Generations::new(rules.clone(), config.scanner.clone())),
            reported: Reported::new(config.rule_metrics),
            shared,
            config,
            rules,
            events,
            faults,
            metrics,
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

    /// Drops old rule generations that no stream needs any more.
    fn prune(&mut self) {
        let residency = self.residency.as_ref();
        if let Some(generations) = self.generations.as_mut() {
            generations.prune(|tag| residency.is_some_and(|r| r.holds_rules(tag)));
        }
    }

    /// Reads a stored stream back into memory, if it is stored; a failure
    /// (a damaged entry) is kept for the stream's caller.
    fn make_resident(&mut self, stream: Uuid) {
        let Some(tag) = self.residency.as_ref().and_then(|r| r.rules_of(&stream)) else {
            return;
        };
        self.generations();
        let (Some(generations), Some(residency)) =
            (self.generations.as_mut(), self.residency.as_mut())
        else {
            return;
        };
        let result = match generations.with_rules(tag) {
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

    /// With a store: runs `work` on the current rules' generation and the
    /// residency, then syncs the generation's metrics. `None` without a
    /// store.
    fn with_current_store<R>(
        &mut self,
        work: impl FnOnce(&mut Generation, &mut Residency) -> R,
    ) -> Option<R> {
        self.generations();
        let (Some(generations), Some(residency)) =
            (self.generations.as_mut(), self.residency.as_mut())
        else {
            return None;
        };
        let generation = generations.current();
        let result = work(generation, residency);
        sync_metrics(generation, &self.metrics);
        Some(result)
    }

    /// A store operation failed: counted, and kept as the last fault.
    fn store_failed(&mut self, what: &str, error: EngineError) {
        self.metrics.error(ErrorKind::StoreFailed);
        self.last_fault = Some(format!("{what} failed: {error}"));
    }

    fn generations(&mut self) -> &mut Generations {
        let (rules, config) = (&self.rules, &self.config);
        self.generations
            .get_or_insert_with(|| Generations::new(rules.clone(), config.scanner.clone()))
    }

    /// Runs `work` under `catch_unwind`; a panic fails the shard.
    fn guarded<R>(
        &mut self,
        ctx: &mut Context<Self>,
        work: impl FnOnce(&mut Self) -> R,
    ) -> Option<R> {
        match catch_unwind(AssertUnwindSafe(|| work(self))) {
            Ok(result) => Some(result),
            Err(payload) => {
                self.fail(ctx, panic_message(payload.as_ref()));
                None
            }
        }
    }

    /// After a panic: every stream of the shard is lost; stop, so that the
    /// supervisor restarts the shard.
    fn fail(&mut self, ctx: &mut Context<Self>, reason: String) {
        let held = self.generations.take().map(|mut generations| {
            catch_unwind(AssertUnwindSafe(move || generations.active_streams())).unwrap_or_default()
        });
        let lost = held.unwrap_or_default();
        self.last_fault = Some(reason.clone());
        self.mark_lost(&lost);
        if let Some(residency) = self.residency.as_mut() {
            // Their stored copies (if any) are older than what was lost:
            // they must not come back at the next start. Stored streams
            // were not in memory, and survive the fault.
            lost.iter()
                .for_each(|stream| residency.forget(stream, true));
        }
        self.reported.clear();
        self.metrics.open.set(0.0);
        self.metrics.error(ErrorKind::ShardFailed);
        self.faults.do_send(ShardFailed {
            shard: self.shared.index,
            lost: lost.len(),
            reason,
        });
        ctx.stop();
    }

    /// Records streams as lost in the last fault (their next caller learns
    /// it).
    fn mark_lost(&mut self, streams: &[Uuid]) {
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

    /// See [`ShardCommand::Admit`]; with `open`, the new streams are
    /// opened. A refusal comes with the index of the item it concerns.
    fn admit(
        &mut self,
        streams: &[(Uuid, usize)],
        mode: StreamMode,
        open: bool,
    ) -> Result<Vec<Uuid>, (usize, EngineError)> {
        streams.iter().for_each(|(s, _)| self.make_resident(*s));
        let mut new = Vec::new();
        for &(stream, index) in streams {
            if let Some(failure) = self.shared.failures.get(&stream) {
                return Err((index, failure));
            }
            let held = self
                .generations()
                .holding(&stream)
                .map(|generation| generation.with(|scanner| scanner.check_append(stream, mode)));
            match held {
                Some(Err(error)) => return Err((index, error.into())),
                Some(Ok(())) => {}
                None => new.push((stream, index)),
            }
        }
        let limit = self.config.scanner.max_open_streams;
        let current = self.generations().current();
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
    /// nothing (another request may have sent them data since).
    fn release(&mut self, streams: &[Uuid]) {
        for stream in streams {
            let empty = self
                .generations()
                .holding(stream)
                .is_some_and(|generation| {
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

    fn append(&mut self, stream: Uuid, data: &[u8], mode: StreamMode, submitted: Instant) {
        #[cfg(test)]
        if data == super::tests::PANIC_CHUNK {
            panic!("injected fault in a chunk");
        }
        self.make_resident(stream);
        if self.shared.failures.get(&stream).is_some() {
            self.metrics.error(ErrorKind::StreamFailed);
            return;
        }
        let metrics = self.metrics.clone();
        let generation = self.generations().for_stream(&stream);
        let result = generation.with(|scanner| match mode {
            StreamMode::Chunks => scanner.scan_chunk(stream, data),
            StreamMode::Lines => scanner.scan_line(stream, data),
        });
        sync_metrics(generation, &metrics);
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

    /// Searches what the verdicts of `streams` need in one search per rule
    /// generation, so that the verdicts that follow need none. A failure
    /// here is left for each verdict to meet (and report) on its own.
    fn prepare_verdicts(&mut self, streams: &[Uuid]) {
        for generation in self.generations().iter_mut() {
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

    fn verdict(&mut self, stream: Uuid, close: bool) -> Result<Option<StreamResults>, EngineError> {
        self.make_resident(stream);
        if let Some(failure) = self.shared.failures.get(&stream) {
            if close {
                self.shared.failures.clear(&stream);
                self.discard(&stream);
            }
            return Err(failure);
        }
        let metrics = self.metrics.clone();
        let Some(generation) = self.generations().holding(&stream) else {
            return Ok(None);
        };
        let started = Instant::now();
        let result = generation.with(|scanner| match close {
            true => scanner.close_stream(&stream),
            false => scanner.get_matches(&stream),
        });
        ShardMetrics::seconds(&metrics.evaluation, started.elapsed());
        sync_metrics(generation, &metrics);
        if close && result.is_err() {
            // A close always closes: a verdict that failed (a timeout, say)
            // is not going to succeed later, and the caller is done.
            self.discard(&stream);
        }
        let results = result.inspect_err(|e| metrics.error(e.kind()))?;
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
    fn offset(&mut self, stream: Uuid) -> Result<u64, EngineError> {
        Ok(self.offsets(stream)?.map_or(0, |o| o.offset))
    }

    /// A stream's offsets; `None` if it is not open. A stored stream's are
    /// read from its entry (it stays stored).
    fn offsets(&mut self, stream: Uuid) -> Result<Option<StreamOffsets>, EngineError> {
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
        let offsets = self.generations().holding(&stream).and_then(|generation| {
            generation.with(|scanner| scanner.stream_context(&stream).map(of))
        });
        Ok(offsets)
    }

    /// Ids of the open streams, resident or stored.
    fn active_streams(&mut self) -> Vec<Uuid> {
        let mut streams = self.generations().active_streams();
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
        let durable = self
            .generations()
            .holding(stream)
            .is_some_and(|generation| {
                generation.with(|scanner| {
                    scanner
                        .stream_context(stream)
                        .is_some_and(|c| c.durable.is_some())
                })
            });
        self.forget(stream, durable);
        if let Some(generation) = self.generations().holding(stream) {
            generation.with(|scanner| scanner.discard_stream(stream));
            self.metrics.closed.increment(1);
            self.prune();
        }
    }

    fn reset(&mut self, stream: Uuid) -> Result<(), EngineError> {
        self.make_resident(stream);
        let acknowledged = self.shared.failures.clear(&stream);
        // Its stored copy, if any, is of the old bytes.
        self.forget(&stream, true);
        let Some(generation) = self.generations().holding(&stream) else {
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

    fn stats(&mut self) -> ShardStats {
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
        for generation in self.generations().iter() {
            stats.scanner += &generation.stats();
            stats.generations += 1;
        }
        stats.stored_streams = self.residency.as_ref().map_or(0, |r| r.stored_count());
        stats.scanner.open_streams += stats.stored_streams;
        stats
    }

    fn reload(&mut self, rules: Arc<RuleSet>) {
        self.rules = rules.clone();
        self.generations().reload(rules);
        self.prune();
    }

    /// Closes every stream; the final verdicts and the streams that failed.
    /// The report grows in `self.closing`, so that a fault half-way loses
    /// none of what was closed before it.
    fn shutdown(&mut self) -> ShardReport {
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
        let metrics = self.metrics.clone();
        let limit = self.config.shutdown_timeout;
        let deadline = Instant::now() + limit;
        self.generations();
        let (generations, closing) = (self.generations.as_mut(), &mut self.closing);
        for generation in generations.into_iter().flat_map(|g| g.iter_mut()) {
            let streams = generation.with(|scanner| scanner.active_streams());
            let started = Instant::now();
            let closed_before = closing.results.len();
            close_all(generation, &streams, closing, deadline, limit);
            ShardMetrics::seconds(&metrics.evaluation, started.elapsed());
            sync_metrics(generation, &metrics);
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

    /// At shutdown with a store: stored streams of older rules (than the
    /// current ones) are read back, to be closed with their final verdicts
    /// (a restart could not restore them: their rules are gone).
    fn restore_older_rules(&mut self) {
        let current = self.generations().current().rules_tag();
        let older: Vec<Uuid> = self.residency.as_ref().map_or_else(Vec::new, |r| {
            r.stored_streams()
                .filter(|s| r.rules_of(s) != Some(current))
                .copied()
                .collect()
        });
        older
            .into_iter()
            .for_each(|stream| self.make_resident(stream));
    }

    /// At shutdown with a store: writes the current rules' streams to the
    /// store (they resume at the next start) and takes them out of the
    /// scanner, so that only older rules' streams are closed. If the write
    /// fails, the streams are closed instead (their verdicts are not lost).
    fn keep_in_store(&mut self) {
        let kept = self.with_current_store(|generation, residency| {
            let kept = generation.with(|scanner| {
                residency.checkpoint(scanner)?;
                let streams = scanner.active_streams();
                scanner.evict_streams(&streams).map_err(EngineError::from)
            });
            kept.map(|kept| kept.len() + residency.stored_count())
        });
        match kept {
            Some(Ok(kept)) => self.closing.kept = kept,
            Some(Err(error)) => self.store_failed("checkpoint at shutdown", error),
            None => {}
        }
    }

    /// Searches due batches and refreshes the gauges.
    fn tick(&mut self) {
        let metrics = self.metrics.clone();
        let (mut open, mut retained) = (0, 0);
        for generation in self.generations().iter_mut() {
            if let Err(error) = generation.with(|scanner| scanner.flush_if_due()) {
                // The batch is kept and searched again at the next tick.
                metrics.error(error.kind());
            }
            sync_metrics(generation, &metrics);
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
    fn maintain(&mut self) {
        self.close_idle_if_due();
        let failures = self.with_current_store(|generation, residency| {
            let checkpoint = match residency.checkpoint_due() {
                true => generation
                    .with(|scanner| residency.checkpoint(scanner))
                    .err(),
                false => None,
            };
            let eviction = generation.with(|scanner| residency.enforce_bounds(scanner));
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
    fn checkpoint_now(&mut self) -> Result<usize, EngineError> {
        let done = self.with_current_store(|generation, residency| {
            let written = generation.with(|scanner| residency.checkpoint(scanner));
            let bounded = generation.with(|scanner| residency.enforce_bounds(scanner));
            bounded?;
            Ok(written?.streams)
        });
        done.unwrap_or(Ok(0))
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
        for generation in self.generations().iter_mut() {
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
        streams.iter().for_each(|s| self.make_resident(*s));
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
    fn report_new_matches(&mut self) {
        let subscribed = self.events.has_subscribers();
        let metrics = self.metrics.clone();
        let (shard, events) = (self.shared.index, self.events.clone());
        let Some(generations) = self.generations.as_mut() else {
            return;
        };
        for generation in generations.iter_mut() {
            let streams = generation.with(|scanner| scanner.take_streams_with_new_matches());
            if streams.is_empty() || !subscribed {
                continue;
            }
            let started = Instant::now();
            let verdicts = generation.with(|scanner| {
                let verdicts = scanner.verdicts(&streams);
                // The probe's own search found these matches again.
                scanner.take_streams_with_new_matches();
                verdicts
            });
            ShardMetrics::seconds(&metrics.evaluation, started.elapsed());
            sync_metrics(generation, &metrics);
            match verdicts {
                Ok(verdicts) => {
                    for results in &verdicts {
                        let new = self.reported.report(&events, shard, results, false);
                        metrics.rule_matches.increment(new);
                    }
                }
                Err(error) => metrics.error(error.kind()),
            }
        }
    }

    /// After data arrived: evicts at once if the current rules' scanner is
    /// over the resident bounds (the tick would, but a fast producer can
    /// open many streams between two ticks).
    fn enforce_bounds_if_over(&mut self) {
        let evicted = self.with_current_store(|generation, residency| {
            // Cheap when under the bounds: the check comes first.
            generation.with(|scanner| residency.enforce_bounds(scanner))
        });
        if let Some(Err(error)) = evicted {
            self.store_failed("eviction", error);
        }
    }

    fn run(&mut self, command: ShardCommand, ctx: &mut Context<Self>) {
        match command {
            ShardCommand::Append {
                items,
                bytes,
                mode,
                submitted,
                ack,
            } => {
                self.shared.gate.release(bytes);
                // An acknowledged append is checked whole first: a refusal
                // (a mode mismatch, the stream limit) is its caller's
                // answer, and leaves the stream as it was.
                let ack = match ack {
                    Some((stream, reply)) => {
                        let firsts = first_items(&items);
                        match self.guarded(ctx, |shard| shard.admit(&firsts, mode, false)) {
                            Some(Ok(_)) => Some((stream, reply)),
                            Some(Err((_, refusal))) => {
                                let _ = reply.send(Err(refusal));
                                return;
                            }
                            None => {
                                let _ = reply.send(Err(self.lost(stream)));
                                return;
                            }
                        }
                    }
                    None => None,
                };
                let done = self.guarded(ctx, |shard| {
                    for (stream, data) in &items {
                        shard.append(*stream, data, mode, submitted);
                    }
                    shard.enforce_bounds_if_over();
                });
                if done.is_none() {
                    // Streams this message would have opened were not open
                    // when the shard failed: lost all the same.
                    let streams: Vec<Uuid> = items.iter().map(|(stream, _)| *stream).collect();
                    self.mark_lost(&streams);
                }
                if let Some((stream, reply)) = ack {
                    let offset = match done {
                        Some(()) => self.guarded(ctx, |shard| shard.offset(stream)),
                        None => None,
                    };
                    let _ = reply.send(offset.unwrap_or_else(|| Err(self.lost(stream))));
                }
            }
            ShardCommand::Admit {
                streams,
                mode,
                reply,
            } => {
                let result = self.guarded(ctx, |shard| shard.admit(&streams, mode, true));
                let answer = match result {
                    Some(Ok(opened)) => Ok(opened),
                    Some(Err((index, refusal))) => Err(EngineError::Refused {
                        index,
                        source: Box::new(refusal),
                    }),
                    None => Err(self.panicked()),
                };
                let _ = reply.send(answer);
            }
            ShardCommand::Release { streams } => {
                self.guarded(ctx, |shard| shard.release(&streams));
            }
            ShardCommand::Verdict {
                stream,
                close,
                reply,
            } => {
                let result = self.guarded(ctx, |shard| shard.verdict(stream, close));
                let _ = reply.send(result.unwrap_or_else(|| Err(self.lost(stream))));
            }
            ShardCommand::CloseMany { streams, replies } => {
                self.guarded(ctx, |shard| {
                    streams.iter().for_each(|s| shard.make_resident(*s));
                    shard.prepare_verdicts(&streams);
                });
                for (stream, reply) in streams.into_iter().zip(replies) {
                    let result = self.guarded(ctx, |shard| shard.verdict(stream, true));
                    let _ = reply.send(result.unwrap_or_else(|| Err(self.lost(stream))));
                }
            }
            ShardCommand::Reset { stream, reply } => {
                let result = self.guarded(ctx, |shard| shard.reset(stream));
                let _ = reply.send(result.unwrap_or_else(|| Err(self.lost(stream))));
            }
            ShardCommand::Checkpoint { reply } => {
                let result = self.guarded(ctx, |shard| shard.checkpoint_now());
                let _ = reply.send(result.unwrap_or_else(|| Err(self.panicked())));
            }
            ShardCommand::Offsets { stream, reply } => {
                let result = self.guarded(ctx, |shard| shard.offsets(stream));
                let _ = reply.send(result.unwrap_or_else(|| Err(self.lost(stream))));
            }
            ShardCommand::Active { reply } => {
                let result = self.guarded(ctx, |shard| shard.active_streams());
                let _ = reply.send(result.ok_or_else(|| self.panicked()));
            }
            ShardCommand::Stats { reply } => {
                let result = self.guarded(ctx, |shard| shard.stats());
                let _ = reply.send(result.ok_or_else(|| self.panicked()));
            }
            ShardCommand::Reload { rules, reply } => {
                let result = self.guarded(ctx, |shard| shard.reload(rules));
                let _ = reply.send(result.ok_or_else(|| self.panicked()));
            }
            ShardCommand::Shutdown { reply } => {
                let report = self.guarded(ctx, |shard| shard.shutdown());
                let report = report.unwrap_or_else(|| {
                    // A fault half-way: what was closed, and the lost rest.
                    let mut report = std::mem::take(&mut self.closing);
                    report.failed.extend(self.shared.failures.take_all());
                    report
                });
                let _ = reply.send(Ok(report));
            }
            #[cfg(test)]
            ShardCommand::Panic => {
                self.guarded(ctx, |_| panic!("injected fault"));
            }
        }
    }

    /// The error for a caller whose command failed the shard.
    fn lost(&self, stream: Uuid) -> EngineError {
        self.shared
            .failures
            .get(&stream)
            .unwrap_or_else(|| self.panicked())
    }

    fn panicked(&self) -> EngineError {
        EngineError::ShardFailed {
            shard: self.shared.index,
        }
    }
}

/// Each stream once, with the index of its first item.
fn first_items(items: &[(Uuid, Bytes)]) -> Vec<(Uuid, usize)> {
    let mut seen = std::collections::HashSet::new();
    items
        .iter()
        .enumerate()
        .filter(|(_, (stream, _))| seen.insert(*stream))
        .map(|(index, (stream, _))| (*stream, index))
        .collect()
}

/// Closes `streams` after one search for all of them, one by one, so that
/// one stream's error costs no other stream its verdict. Past `deadline`
/// the streams left are dropped and reported as such: a shutdown ends in
/// bounded time whatever the streams hold.
fn close_all(
    generation: &mut Generation,
    streams: &[Uuid],
    report: &mut ShardReport,
    deadline: Instant,
    limit: Duration,
) {
    // A failed search marks its streams broken; each close reports it.
    let _ = generation.with(|scanner| scanner.prepare_verdicts(streams));
    for stream in streams {
        if Instant::now() >= deadline {
            generation.with(|scanner| scanner.discard_stream(stream));
            let error = EngineError::ShutdownTimedOut {
                stream: *stream,
                limit_ms: limit.as_millis() as u64,
            };
            report.failed.push((*stream, error));
            continue;
        }
        match generation.with(|scanner| scanner.close_stream(stream)) {
            Ok(results) => report.results.extend(results),
            Err(error) => {
                generation.with(|scanner| scanner.discard_stream(stream));
                report.failed.push((*stream, error.into()));
            }
        }
    }
}

/// Turns the scanner's counters into metrics: what changed since last time,
/// and the latency of the chunks a new batch search covered.
fn sync_metrics(generation: &mut Generation, metrics: &ShardMetrics) {
    let now = generation.stats();
    let seen = &generation.seen;
    let batches = now.batches.saturating_sub(seen.batches);
    if batches > 0 {
        let finished = Instant::now();
        for submitted in generation.pending.drain(..) {
            ShardMetrics::seconds(&metrics.latency, finished - submitted);
        }
        let searched = now.searched_bytes.saturating_sub(seen.searched_bytes);
        metrics.batch_size.record(searched as f64 / batches as f64);
        metrics.flushes.increment(batches);
    }
    let opened = now.streams_opened.saturating_sub(seen.streams_opened);
    metrics.opened.increment(opened);
    let reused = now.verdicts.saturating_sub(now.evaluations);
    let reused = reused.saturating_sub(seen.verdicts.saturating_sub(seen.evaluations));
    metrics.empty_verdicts.increment(reused);
    metrics
        .whole_scans
        .increment(now.whole_scans.saturating_sub(seen.whole_scans));
    generation.seen = now;
}

/// The text of a panic.
fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(text) = payload.downcast_ref::<&str>() {
        text.to_string()
    } else if let Some(text) = payload.downcast_ref::<String>() {
        text.clone()
    } else {
        "panic".to_string()
    }
}

impl Actor for ShardActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        // Runs again after each restart (the restart drops the interval).
        ctx.run_interval(self.config.tick, |shard, ctx| {
            shard.guarded(ctx, |shard| {
                shard.tick();
                shard.report_new_matches();
                shard.maintain();
            });
        });
    }
}

impl Supervised for ShardActor {
    fn restarting(&mut self, _ctx: &mut Context<Self>) {
        self.restarts += 1;
        self.metrics.restarts.increment(1);
        self.generations = Some(Generations::new(
            self.rules.clone(),
            self.config.scanner.clone(),
        ));
    }
}

impl Handler<ShardCommand> for ShardActor {
    type Result = ();

    fn handle(&mut self, command: ShardCommand, ctx: &mut Context<Self>) {
        self.run(command, ctx);
        if self.generations.is_some() {
            self.guarded(ctx, |shard| shard.report_new_matches());
        }
    }
}
