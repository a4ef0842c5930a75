//! Handles: how callers talk to a running engine.
//!
//! [`EngineHandle`] is cheap to clone and to share between tasks and
//! threads. Its methods are `async`; [`BlockingHandle`] (from
//! [`EngineHandle::blocking`]) has the same operations for plain threads.
//! Both route a stream's requests to its shard (`engine/shard_map.rs`), so
//! every request of a stream reaches the same actor, in the order one
//! producer made them.
//!
//! Appending data never waits for the shard to scan it: the call returns
//! once the chunk is queued (it waits only while the shard's mailbox is
//! full, see [`super::gate`]). Errors the shard finds later are kept for
//! the stream's next call. Queries and closes wait for their answer.
//!
//! The async methods may run on any executor; the wait for a full mailbox
//! uses Tokio's timer when `overload_after` is set, so run them inside a
//! Tokio runtime (actix's and `#[tokio::main]` are). The blocking methods
//! must not be called from async code.

use std::sync::Arc;
use std::time::Instant;

use actix::Addr;
use bytes::Bytes;
use tokio::sync::oneshot;
use uuid::Uuid;

use super::events::{ClosedEvent, EventHub, Subscription};
use super::gate::{Admission, Refusal};
use super::ledger::ShardShared;
use super::shard::{Reply, ShardActor, ShardCommand};
use super::shard_map::ShardMap;
use super::streams::{ShardReport, ShardStats, StreamOffsets};
use super::supervisor::{ShardFailure, SupervisorActor, SupervisorCommand};
use crate::config::EngineConfig;
use crate::error::{EngineError, ScanError};
use crate::results::StreamResults;
use crate::rules::{External, RuleSet};
use crate::stream::StreamMode;

/// Counters of the whole engine.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct EngineStats {
    /// Each shard's counters, in shard order.
    pub shards: Vec<ShardStats>,
    /// The latest shard faults (at most 64).
    pub failures: Vec<ShardFailure>,
}

impl EngineStats {
    /// Streams open in all shards.
    pub fn open_streams(&self) -> usize {
        self.shards.iter().map(|s| s.scanner.open_streams).sum()
    }

    /// Bytes appended in all shards.
    pub fn bytes(&self) -> u64 {
        self.shards.iter().map(|s| s.bytes).sum()
    }

    /// Chunks and lines appended in all shards.
    pub fn chunks(&self) -> u64 {
        self.shards.iter().map(|s| s.chunks).sum()
    }
}

/// What the engine hands back at shutdown.
#[derive(Debug, Default)]
pub struct ShutdownReport {
    /// The final verdict of every stream that was open.
    pub results: Vec<StreamResults>,
    /// Streams without a final verdict, and why (lost in a shard fault,
    /// refused a chunk, or their verdict failed).
    pub failed: Vec<(Uuid, EngineError)>,
    /// With a stream store: streams left open in it rather than closed;
    /// the next start with the same store and rules resumes them.
    pub kept: usize,
}

/// Data bound for one shard.
struct Parcel<'e> {
    link: &'e ShardLink,
    first: Uuid,
    items: Vec<(Uuid, Bytes)>,
    bytes: usize,
    /// Each stream of the parcel once, with the index of its first item in
    /// the caller's request.
    streams: Vec<(Uuid, usize)>,
}

impl<'e> Parcel<'e> {
    fn new(link: &'e ShardLink, first: Uuid) -> Parcel<'e> {
        Parcel {
            link,
            first,
            items: Vec::new(),
            bytes: 0,
            streams: Vec::new(),
        }
    }
}

/// The streams `Admit` opened on one shard, or its refusal.
type Admitted<'e> = (&'e ShardLink, Result<Vec<Uuid>, EngineError>);

/// One shard as the handles see it.
pub(crate) struct ShardLink {
    pub addr: Addr<ShardActor>,
    pub shared: Arc<ShardShared>,
}

/// What every handle of one engine shares.
pub(crate) struct EngineShared {
    pub shards: Vec<ShardLink>,
    pub supervisor: Addr<SupervisorActor>,
    pub events: Arc<EventHub>,
    pub config: EngineConfig,
    /// Which shard holds a stream.
    pub map: ShardMap,
}

/// An async handle on a running engine. Clone it freely.
#[derive(Clone)]
pub struct EngineHandle {
    inner: Arc<EngineShared>,
}

/// A handle for plain threads: the same operations, blocking.
#[derive(Clone)]
pub struct BlockingHandle {
    inner: Arc<EngineShared>,
}

impl EngineShared {
    fn shard_of(&self, stream: &Uuid) -> usize {
        self.map.shard_of(stream)
    }

    /// Checks what can be checked before queueing data, and groups the
    /// items by shard, keeping their order.
    fn route(&self, items: Vec<(Uuid, Bytes)>) -> Result<Vec<Parcel<'_>>, EngineError> {
        let limit = self.config.scanner.max_chunk_bytes;
        let mut parcels: Vec<Parcel<'_>> = Vec::new();
        let mut seen = std::collections::HashSet::new();
        for (index, (stream, data)) in items.into_iter().enumerate() {
            if data.len() > limit {
                let len = data.len();
                return Err(ScanError::ChunkTooLarge { stream, len, limit }.into());
            }
            let link = &self.shards[self.shard_of(&stream)];
            if let Some(failure) = link.shared.failures.get(&stream) {
                return Err(failure);
            }
            let parcel = match parcels.iter_mut().position(|p| std::ptr::eq(p.link, link)) {
                Some(index) => &mut parcels[index],
                None => {
                    parcels.push(Parcel::new(link, stream));
                    parcels.last_mut().expect("just pushed")
                }
            };
            parcel.bytes += data.len();
            parcel.items.push((stream, data));
            if seen.insert(stream) {
                parcel.streams.push((stream, index));
            }
        }
        Ok(parcels)
    }

    /// Asks every parcel's shard to admit its streams (see
    /// `ShardCommand::Admit`); the receivers of their answers.
    fn ask_admission<'e>(
        parcels: &[Parcel<'e>],
        mode: StreamMode,
    ) -> Result<Vec<(&'e ShardLink, AdmitAnswer)>, EngineError> {
        let mut asked = Vec::with_capacity(parcels.len());
        for parcel in parcels {
            if !parcel.link.addr.connected() {
                return Err(EngineError::ShuttingDown);
            }
            let (reply, receiver) = oneshot::channel();
            parcel.link.addr.do_send(ShardCommand::Admit {
                streams: parcel.streams.clone(),
                mode,
                reply,
            });
            asked.push((parcel.link, receiver));
        }
        Ok(asked)
    }

    /// All admitted, or the refusal of the lowest item: the shards that
    /// admitted close the streams they opened for it.
    fn admission_outcome(answers: Vec<Admitted<'_>>) -> Result<(), EngineError> {
        let index = |e: &EngineError| match e {
            EngineError::Refused { index, .. } => *index,
            _ => 0,
        };
        let refusal = answers
            .iter()
            .filter_map(|(_, answer)| answer.as_ref().err())
            .min_by_key(|e| index(e))
            .cloned();
        let Some(refusal) = refusal else {
            return Ok(());
        };
        for (link, answer) in answers {
            match answer {
                Ok(opened) if !opened.is_empty() => {
                    link.addr.do_send(ShardCommand::Release { streams: opened })
                }
                _ => {}
            }
        }
        Err(refusal)
    }

    /// [`Self::route`], and with an acknowledged stream, a parcel for it
    /// even when there is no data (the answer is its offset).
    fn parcels(
        &self,
        items: Vec<(Uuid, Bytes)>,
        acked: Option<Uuid>,
    ) -> Result<Vec<Parcel<'_>>, EngineError> {
        let mut parcels = self.route(items)?;
        if let (Some(stream), true) = (acked, parcels.is_empty()) {
            parcels.push(Parcel::new(&self.shards[self.shard_of(&stream)], stream));
        }
        Ok(parcels)
    }

    /// The error for a parcel the gate refused.
    fn refused(parcel: &Parcel<'_>, refusal: Refusal, since: Instant) -> EngineError {
        match refusal {
            Refusal::Closed => EngineError::ShuttingDown,
            Refusal::Full => {
                let shard = parcel.link.shared.index;
                metrics::counter!(crate::metrics::OVERLOAD_REJECTIONS, "shard" => shard.to_string())
                    .increment(1);
                EngineError::Overloaded {
                    stream: parcel.first,
                    shard,
                    waited_ms: since.elapsed().as_millis() as u64,
                }
            }
        }
    }

    /// Keeps a parcel's admission; on refusal, gives back the places taken
    /// for the parcels before it, so that nothing of the burst is sent.
    fn admitted<'e>(
        admissions: &mut Vec<Admission<'e>>,
        parcel: &Parcel<'_>,
        admission: Result<Admission<'e>, Refusal>,
        since: Instant,
    ) -> Result<(), EngineError> {
        match admission {
            Ok(admission) => {
                admissions.push(admission);
                Ok(())
            }
            Err(refusal) => {
                admissions.clear(); // gives the places back
                Err(EngineShared::refused(parcel, refusal, since))
            }
        }
    }

    /// Sends admitted parcels. `do_send` to a stopped actor drops the
    /// message without a word, so a stopped engine is checked for first.
    fn deliver(
        parcels: Vec<Parcel<'_>>,
        admissions: Vec<Admission<'_>>,
        mode: StreamMode,
        mut ack: Option<(Uuid, Reply<u64>)>,
    ) -> Result<(), EngineError> {
        if !parcels.iter().all(|parcel| parcel.link.addr.connected()) {
            return Err(EngineError::ShuttingDown);
        }
        let submitted = Instant::now();
        for (parcel, admission) in parcels.into_iter().zip(admissions) {
            parcel.link.addr.do_send(ShardCommand::Append {
                items: parcel.items,
                bytes: parcel.bytes,
                mode,
                submitted,
                ack: ack.take(),
            });
            admission.delivered();
        }
        Ok(())
    }

    /// Sends a request to the stream's shard; the receiver of its answer.
    fn ask_shard<T>(
        &self,
        stream: &Uuid,
        make: impl FnOnce(Reply<T>) -> ShardCommand,
    ) -> Result<oneshot::Receiver<Result<T, EngineError>>, EngineError> {
        let link = &self.shards[self.shard_of(stream)];
        if link.shared.gate.is_closed() {
            return Err(EngineError::ShuttingDown);
        }
        let (reply, receiver) = oneshot::channel();
        link.addr.do_send(make(reply));
        Ok(receiver)
    }

    /// Sends a request to the supervisor; the receiver of its answer.
    fn ask_supervisor<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<T>) -> SupervisorCommand,
    ) -> Result<oneshot::Receiver<T>, EngineError> {
        if !self.supervisor.connected() {
            return Err(EngineError::ShuttingDown);
        }
        let (reply, receiver) = oneshot::channel();
        // If the supervisor stops meanwhile, the reply channel closes and
        // the caller gets `ShuttingDown`.
        self.supervisor.do_send(make(reply));
        Ok(receiver)
    }

    /// Stops taking data (every gate first, so that a producer waiting on
    /// one gate while it holds a place in another gives it back).
    fn close_gates(&self) {
        self.shards.iter().for_each(|link| link.shared.gate.close());
    }

    /// Merges the shards' reports.
    fn merge(&self, reports: Vec<Result<ShardReport, EngineError>>) -> ShutdownReport {
        let mut merged = ShutdownReport::default();
        for (link, report) in self.shards.iter().zip(reports) {
            match report {
                Ok(report) => {
                    merged.results.extend(report.results);
                    merged.failed.extend(report.failed);
                    merged.kept += report.kept;
                }
                // The shard failed while closing: its streams are lost.
                Err(_) => merged.failed.extend(link.shared.failures.take_all()),
            }
        }
        merged
    }
}

/// The answer to an `Admit`.
type AdmitAnswer = oneshot::Receiver<Result<Vec<Uuid>, EngineError>>;

/// Waits for an answer (async).
async fn answer<T>(receiver: oneshot::Receiver<Result<T, EngineError>>) -> Result<T, EngineError> {
    receiver.await.unwrap_or(Err(EngineError::ShuttingDown))
}

/// The streams one shard is asked to close, and where each answer goes.
type ClosingGroup = (Vec<Uuid>, Vec<Reply<Option<StreamResults>>>);

/// A verdict that closes its stream, on its way.
type ClosingVerdict = oneshot::Receiver<Result<Option<StreamResults>, EngineError>>;

impl EngineShared {
    /// Asks the shards to close `streams`, without waiting.
    fn ask_to_close(&self, streams: &[Uuid]) -> Vec<Result<ClosingVerdict, EngineError>> {
        // One message per shard, so that the shard searches the tails of
        // all its streams at once.
        let mut per_shard: Vec<ClosingGroup> =
            (0..self.shards.len()).map(|_| Default::default()).collect();
        let receivers = streams
            .iter()
            .map(|stream| {
                let shard = self.shard_of(stream);
                if self.shards[shard].shared.gate.is_closed() {
                    return Err(EngineError::ShuttingDown);
                }
                let (reply, receiver) = oneshot::channel();
                per_shard[shard].0.push(*stream);
                per_shard[shard].1.push(reply);
                Ok(receiver)
            })
            .collect();
        for (link, (streams, replies)) in self.shards.iter().zip(per_shard) {
            if !streams.is_empty() {
                link.addr
                    .do_send(ShardCommand::CloseMany { streams, replies });
            }
        }
        receivers
    }
}

/// Waits for an answer (blocking).
fn answer_blocking<T>(
    receiver: oneshot::Receiver<Result<T, EngineError>>,
) -> Result<T, EngineError> {
    receiver
        .blocking_recv()
        .unwrap_or(Err(EngineError::ShuttingDown))
}

impl EngineHandle {
    pub(crate) fn new(inner: Arc<EngineShared>) -> EngineHandle {
        EngineHandle { inner }
    }

    /// Takes no more data and ends the event subscriptions (the engine
    /// is going away).
    pub(crate) fn close(&self) {
        self.inner.close_gates();
        self.inner.events.close();
    }

    /// The same engine, with blocking methods.
    pub fn blocking(&self) -> BlockingHandle {
        BlockingHandle {
            inner: self.inner.clone(),
        }
    }

    /// The number of shards.
    pub fn shards(&self) -> usize {
        self.inner.shards.len()
    }

    /// The shard that holds `stream`.
    pub fn shard_of(&self, stream: &Uuid) -> usize {
        self.inner.shard_of(stream)
    }

    /// Appends a chunk to a stream, opening it on first use; returns once
    /// the chunk is queued for the stream's shard. A chunk for a line
    /// stream is dropped by the shard (counted as a `mode_mismatch` error)
    /// and the stream goes on as it was; use [`Self::scan_chunk_acked`] to
    /// be told.
    pub async fn scan_chunk(
        &self,
        stream: Uuid,
        chunk: impl Into<Bytes>,
    ) -> Result<(), EngineError> {
        self.append(vec![(stream, chunk.into())], StreamMode::Chunks, None)
            .await
    }

    /// Appends one line to a line stream, opening it on first use.
    pub async fn scan_line(&self, stream: Uuid, line: impl Into<Bytes>) -> Result<(), EngineError> {
        self.append(vec![(stream, line.into())], StreamMode::Lines, None)
            .await
    }

    /// Appends chunks to several streams at once: one message per shard
    /// instead of one per chunk, which is what a producer with bursts of
    /// chunks should use. The chunks of a stream are scanned in the order
    /// given. All or nothing as far as the call can tell: on error no
    /// chunk was taken. What only the shards can check (a stream's mode,
    /// the per-shard stream limit) is checked when they take the chunks,
    /// after the call returned: a chunk for a line stream is dropped, and
    /// a stream over the limit is failed for its next caller. Use
    /// [`Self::scan_chunks_admitted`] to have those refuse the call.
    pub async fn scan_chunks(&self, chunks: Vec<(Uuid, Bytes)>) -> Result<(), EngineError> {
        self.append(chunks, StreamMode::Chunks, None).await
    }

    /// Appends lines to several line streams at once (see
    /// [`Self::scan_chunks`]).
    pub async fn scan_lines(&self, lines: Vec<(Uuid, Bytes)>) -> Result<(), EngineError> {
        self.append(lines, StreamMode::Lines, None).await
    }

    /// [`Self::scan_chunks`], admitted whole by the shards before any chunk
    /// is sent: a chunk for a line stream ([`ScanError::ModeMismatch`]),
    /// for a failed stream, or for a new stream past a shard's
    /// `max_open_streams` ([`ScanError::TooManyStreams`]) refuses the whole
    /// request with [`EngineError::Refused`], which names the item, and no
    /// stream changes. `scan_chunks` finds those only once the chunks
    /// are taken (and fails the stream). Costs one round trip to each
    /// shard the chunks go to (tens of microseconds): for requests from
    /// outside (`POST /v1/chunks`), not for a producer's every burst.
    pub async fn scan_chunks_admitted(
        &self,
        chunks: Vec<(Uuid, Bytes)>,
    ) -> Result<(), EngineError> {
        self.append_admitted(chunks, StreamMode::Chunks).await
    }

    /// [`Self::scan_lines`], admitted whole first (see
    /// [`Self::scan_chunks_admitted`]).
    pub async fn scan_lines_admitted(&self, lines: Vec<(Uuid, Bytes)>) -> Result<(), EngineError> {
        self.append_admitted(lines, StreamMode::Lines).await
    }

    /// Waits for mailbox room for every parcel, in turn (each within the
    /// overload patience); on a refusal the places taken are given back.
    async fn admit_all<'e>(
        &'e self,
        parcels: &[Parcel<'e>],
    ) -> Result<Vec<Admission<'e>>, EngineError> {
        let since = Instant::now();
        let patience = self.inner.config.overload_after;
        let mut admissions = Vec::with_capacity(parcels.len());
        for parcel in parcels {
            let admission = parcel
                .link
                .shared
                .gate
                .admit_async(parcel.bytes, patience)
                .await;
            EngineShared::admitted(&mut admissions, parcel, admission, since)?;
        }
        Ok(admissions)
    }

    async fn append_admitted(
        &self,
        items: Vec<(Uuid, Bytes)>,
        mode: StreamMode,
    ) -> Result<(), EngineError> {
        let parcels = self.inner.route(items)?;
        let admissions = self.admit_all(&parcels).await?;
        // The mailbox places are held while the shards check: on refusal
        // they are given back, and nothing was sent.
        let mut answers = Vec::with_capacity(parcels.len());
        for (link, receiver) in EngineShared::ask_admission(&parcels, mode)? {
            answers.push((link, answer(receiver).await));
        }
        EngineShared::admission_outcome(answers)?;
        EngineShared::deliver(parcels, admissions, mode, None)
    }

    /// Appends a chunk and waits until the stream's shard has taken it:
    /// the stream's new offset (bytes appended so far), or the error the
    /// shard found (a mode mismatch, say) right away. Costs a round trip
    /// (tens of microseconds) that `scan_chunk` does not.
    pub async fn scan_chunk_acked(
        &self,
        stream: Uuid,
        chunk: impl Into<Bytes>,
    ) -> Result<u64, EngineError> {
        self.append_acked(stream, vec![chunk.into()], StreamMode::Chunks)
            .await
    }

    /// Appends lines to one line stream and waits until its shard has
    /// taken them (see [`Self::scan_chunk_acked`]).
    pub async fn scan_lines_acked(
        &self,
        stream: Uuid,
        lines: Vec<Bytes>,
    ) -> Result<u64, EngineError> {
        self.append_acked(stream, lines, StreamMode::Lines).await
    }

    async fn append_acked(
        &self,
        stream: Uuid,
        pieces: Vec<Bytes>,
        mode: StreamMode,
    ) -> Result<u64, EngineError> {
        let items = pieces.into_iter().map(|piece| (stream, piece)).collect();
        let (reply, receiver) = oneshot::channel();
        self.append(items, mode, Some((stream, reply))).await?;
        answer(receiver).await
    }

    async fn append(
        &self,
        items: Vec<(Uuid, Bytes)>,
        mode: StreamMode,
        ack: Option<(Uuid, Reply<u64>)>,
    ) -> Result<(), EngineError> {
        let parcels = self
            .inner
            .parcels(items, ack.as_ref().map(|(stream, _)| *stream))?;
        let admissions = self.admit_all(&parcels).await?;
        EngineShared::deliver(parcels, admissions, mode, ack)
    }

    /// The verdict over everything sent to a stream so far; `None` if it is
    /// not open.
    pub async fn get_matches(&self, stream: Uuid) -> Result<Option<StreamResults>, EngineError> {
        let receiver = self
            .inner
            .ask_shard(&stream, |reply| ShardCommand::Verdict {
                stream,
                close: false,
                reply,
            })?;
        answer(receiver).await
    }

    /// Closes a stream; its final verdict, or `None` if it was not open.
    pub async fn close_stream(&self, stream: Uuid) -> Result<Option<StreamResults>, EngineError> {
        let receiver = self
            .inner
            .ask_shard(&stream, |reply| ShardCommand::Verdict {
                stream,
                close: true,
                reply,
            })?;
        answer(receiver).await
    }

    /// Closes many streams at once: every close is sent before the first
    /// answer is awaited, so the shards work on them together instead of
    /// one round trip each. One result per stream, in order.
    pub async fn close_streams(
        &self,
        streams: &[Uuid],
    ) -> Vec<Result<Option<StreamResults>, EngineError>> {
        let mut results = Vec::with_capacity(streams.len());
        for receiver in self.inner.ask_to_close(streams) {
            results.push(match receiver {
                Ok(receiver) => answer(receiver).await,
                Err(err) => Err(err),
            });
        }
        results
    }

    /// Opens a stream in `mode` (if it is not open; streams also open on
    /// their first chunk or line) with its own values of the rules'
    /// external variables, replacing any it had: a file's name, say (see
    /// [`crate::FileInfo::externals`]). Its verdicts are then whole-buffer
    /// verdicts with those values set. A value the rules do not declare,
    /// or of another type, is refused ([`crate::ScanError::BadExternal`])
    /// and changes nothing.
    pub async fn open_stream(
        &self,
        stream: Uuid,
        mode: StreamMode,
        externals: Vec<External>,
    ) -> Result<(), EngineError> {
        let receiver = self.inner.ask_shard(&stream, |reply| ShardCommand::Open {
            stream,
            mode,
            externals,
            reply,
        })?;
        answer(receiver).await
    }

    /// Puts a stream back at offset 0 with no matches. On a lost or failed
    /// stream it acknowledges the error: the stream opens anew on its next
    /// chunk.
    pub async fn reset_stream(&self, stream: Uuid) -> Result<(), EngineError> {
        let receiver = self
            .inner
            .ask_shard(&stream, |reply| ShardCommand::Reset { stream, reply })?;
        answer(receiver).await
    }

    /// Where a stream stands: its offset, and (with a stream store) the
    /// offset up to which its state is durable, from which it would resume
    /// after a crash of yaraflow. `None` if the stream is not open: a
    /// producer resumes it from offset 0. Cheap: no verdict is computed.
    pub async fn stream_offsets(&self, stream: Uuid) -> Result<Option<StreamOffsets>, EngineError> {
        let receiver = self
            .inner
            .ask_shard(&stream, |reply| ShardCommand::Offsets { stream, reply })?;
        answer(receiver).await
    }

    /// Ids of the open streams of every shard.
    pub async fn active_streams(&self) -> Result<Vec<Uuid>, EngineError> {
        answer(self.inner.ask_supervisor(SupervisorCommand::Active)?).await
    }

    /// With a stream store: writes every stream context that changed since
    /// it was last written, now (as `StoreConfig::checkpoint_interval` does
    /// periodically), and applies the resident bounds. Returns the streams
    /// written; afterwards every stream's durable offset is its offset as
    /// of the call. Without a store it does nothing and returns 0.
    pub async fn checkpoint(&self) -> Result<usize, EngineError> {
        answer(self.inner.ask_supervisor(SupervisorCommand::Checkpoint)?).await
    }

    /// Counters of every shard.
    pub async fn stats(&self) -> Result<EngineStats, EngineError> {
        let (shards, failures) =
            answer(self.inner.ask_supervisor(SupervisorCommand::Stats)?).await?;
        Ok(EngineStats { shards, failures })
    }

    /// Makes `rules` the rules of the streams opened from now on; the open
    /// streams finish on the rules they started with.
    pub async fn reload_rules(&self, rules: RuleSet) -> Result<(), EngineError> {
        let rules = Arc::new(rules);
        answer(
            self.inner
                .ask_supervisor(|reply| SupervisorCommand::Reload(rules, reply))?,
        )
        .await
    }

    /// A new subscription to match events.
    pub fn subscribe(&self) -> Subscription {
        self.inner
            .events
            .subscribe(self.inner.config.event_capacity)
    }

    /// Subscribes to the streams the engine closes on its own (idle
    /// timeout, see `EngineConfig::idle_timeout`): each event carries the
    /// stream's final verdict. Bounded like [`Self::subscribe`].
    pub fn subscribe_closes(&self) -> Subscription<ClosedEvent> {
        self.inner
            .events
            .subscribe_closes(self.inner.config.event_capacity)
    }

    /// Ends every event subscription now (their receivers see the end after
    /// the events already sent); new subscriptions still work.
    pub fn end_subscriptions(&self) {
        self.inner.events.end_all();
    }

    /// Stops taking data, lets every shard finish what is queued, closes
    /// every stream and returns the final verdicts. The engine stops.
    pub async fn shutdown(&self) -> Result<ShutdownReport, EngineError> {
        self.inner.close_gates();
        // Everything admitted is queued ahead of the shutdown request.
        for link in &self.inner.shards {
            link.shared.gate.wait_until_sent().await;
        }
        let reports = self.inner.ask_supervisor(SupervisorCommand::Shutdown)?;
        let reports = reports.await.map_err(|_| EngineError::ShuttingDown)?;
        self.inner.events.close();
        Ok(self.inner.merge(reports))
    }
}

impl BlockingHandle {
    /// The same engine, with async methods.
    pub fn to_async(&self) -> EngineHandle {
        EngineHandle::new(self.inner.clone())
    }

    /// The shard that holds `stream`.
    pub fn shard_of(&self, stream: &Uuid) -> usize {
        self.inner.shard_of(stream)
    }

    /// See [`EngineHandle::scan_chunk`]; blocks while the mailbox is full.
    pub fn scan_chunk(&self, stream: Uuid, chunk: impl Into<Bytes>) -> Result<(), EngineError> {
        self.append(vec![(stream, chunk.into())], StreamMode::Chunks)
    }

    /// See [`EngineHandle::scan_line`].
    pub fn scan_line(&self, stream: Uuid, line: impl Into<Bytes>) -> Result<(), EngineError> {
        self.append(vec![(stream, line.into())], StreamMode::Lines)
    }

    /// See [`EngineHandle::scan_chunks`].
    pub fn scan_chunks(&self, chunks: Vec<(Uuid, Bytes)>) -> Result<(), EngineError> {
        self.append(chunks, StreamMode::Chunks)
    }

    /// See [`EngineHandle::scan_lines`].
    pub fn scan_lines(&self, lines: Vec<(Uuid, Bytes)>) -> Result<(), EngineError> {
        self.append(lines, StreamMode::Lines)
    }

    fn append(&self, items: Vec<(Uuid, Bytes)>, mode: StreamMode) -> Result<(), EngineError> {
        let parcels = self.inner.route(items)?;
        let since = Instant::now();
        let patience = self.inner.config.overload_after;
        let mut admissions = Vec::with_capacity(parcels.len());
        for parcel in &parcels {
            let admission = parcel
                .link
                .shared
                .gate
                .admit_blocking(parcel.bytes, patience);
            EngineShared::admitted(&mut admissions, parcel, admission, since)?;
        }
        EngineShared::deliver(parcels, admissions, mode, None)
    }

    /// See [`EngineHandle::get_matches`].
    pub fn get_matches(&self, stream: Uuid) -> Result<Option<StreamResults>, EngineError> {
        answer_blocking(
            self.inner
                .ask_shard(&stream, |reply| ShardCommand::Verdict {
                    stream,
                    close: false,
                    reply,
                })?,
        )
    }

    /// See [`EngineHandle::close_stream`].
    pub fn close_stream(&self, stream: Uuid) -> Result<Option<StreamResults>, EngineError> {
        answer_blocking(
            self.inner
                .ask_shard(&stream, |reply| ShardCommand::Verdict {
                    stream,
                    close: true,
                    reply,
                })?,
        )
    }

    /// See [`EngineHandle::close_streams`].
    pub fn close_streams(
        &self,
        streams: &[Uuid],
    ) -> Vec<Result<Option<StreamResults>, EngineError>> {
        let receivers = self.inner.ask_to_close(streams);
        receivers
            .into_iter()
            .map(|receiver| receiver.and_then(answer_blocking))
            .collect()
    }

    /// See [`EngineHandle::open_stream`].
    pub fn open_stream(
        &self,
        stream: Uuid,
        mode: StreamMode,
        externals: Vec<External>,
    ) -> Result<(), EngineError> {
        answer_blocking(self.inner.ask_shard(&stream, |reply| ShardCommand::Open {
            stream,
            mode,
            externals,
            reply,
        })?)
    }

    /// See [`EngineHandle::reset_stream`].
    pub fn reset_stream(&self, stream: Uuid) -> Result<(), EngineError> {
        answer_blocking(
            self.inner
                .ask_shard(&stream, |reply| ShardCommand::Reset { stream, reply })?,
        )
    }

    /// See [`EngineHandle::stream_offsets`].
    pub fn stream_offsets(&self, stream: Uuid) -> Result<Option<StreamOffsets>, EngineError> {
        answer_blocking(
            self.inner
                .ask_shard(&stream, |reply| ShardCommand::Offsets { stream, reply })?,
        )
    }

    /// See [`EngineHandle::checkpoint`].
    pub fn checkpoint(&self) -> Result<usize, EngineError> {
        answer_blocking(self.inner.ask_supervisor(SupervisorCommand::Checkpoint)?)
    }

    /// See [`EngineHandle::active_streams`].
    pub fn active_streams(&self) -> Result<Vec<Uuid>, EngineError> {
        answer_blocking(self.inner.ask_supervisor(SupervisorCommand::Active)?)
    }

    /// See [`EngineHandle::stats`].
    pub fn stats(&self) -> Result<EngineStats, EngineError> {
        let (shards, failures) =
            answer_blocking(self.inner.ask_supervisor(SupervisorCommand::Stats)?)?;
        Ok(EngineStats { shards, failures })
    }

    /// See [`EngineHandle::reload_rules`].
    pub fn reload_rules(&self, rules: RuleSet) -> Result<(), EngineError> {
        let rules = Arc::new(rules);
        answer_blocking(
            self.inner
                .ask_supervisor(|reply| SupervisorCommand::Reload(rules, reply))?,
        )
    }

    /// See [`EngineHandle::subscribe`].
    pub fn subscribe(&self) -> Subscription {
        self.inner
            .events
            .subscribe(self.inner.config.event_capacity)
    }

    /// See [`EngineHandle::subscribe_closes`].
    pub fn subscribe_closes(&self) -> Subscription<ClosedEvent> {
        self.inner
            .events
            .subscribe_closes(self.inner.config.event_capacity)
    }

    /// See [`EngineHandle::shutdown`].
    pub fn shutdown(&self) -> Result<ShutdownReport, EngineError> {
        self.inner.close_gates();
        for link in &self.inner.shards {
            link.shared.gate.wait_until_sent_blocking();
        }
        let reports = self.inner.ask_supervisor(SupervisorCommand::Shutdown)?;
        let reports = reports
            .blocking_recv()
            .map_err(|_| EngineError::ShuttingDown)?;
        self.inner.events.close();
        Ok(self.inner.merge(reports))
    }

    #[cfg(test)]
    pub(crate) fn inject_panic(&self, shard: usize) {
        self.inner.shards[shard].addr.do_send(ShardCommand::Panic);
    }
}
