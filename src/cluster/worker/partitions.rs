//! A worker's partitions: claiming one (lease, checkpoint, fencing,
//! reader), checkpointing it, giving it up cleanly, and dropping it when
//! its lease or a write is lost.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use uuid::Uuid;

use super::consume::{Event, Reader};
use super::{Owned, Runner, WorkerStats};
use crate::cluster::checkpoint::Checkpoint;
use crate::cluster::checkpoint_store::{list_objects, ObjectRef};
use crate::cluster::error::ClusterError;
use crate::cluster::lease::{fair_share, Lease};

/// Most claims tried per tick: a worker joining a large deployment takes
/// its share over a few ticks rather than in one burst of requests.
const MAX_CLAIMS_PER_TICK: usize = 64;
/// Leases a reader may deliver nothing for before the worker checks
/// whether it stalled.
const STALLED_AFTER_LEASES: u32 = 2;
/// A partition's open streams, each with the sequence of its first message.
type OpenStreams = HashMap<Uuid, u64>;

/// Leases the listing of a partition's checkpoint objects may take.
const LISTING_LEASES: u32 = 5;

impl Runner<'_> {
    /// Renews every lease; drops the partitions whose renewal failed.
    pub(super) async fn renew_all(&mut self) {
        let owned: Vec<u32> = self.owned.keys().copied().collect();
        for partition in owned {
            let Some(o) = self.owned.get_mut(&partition) else {
                continue;
            };
            if !o.lease.valid() {
                self.lose(partition, "its lease ran out before it was renewed")
                    .await;
                continue;
            }
            if let Err(err) = self.leases.renew(partition, &mut o.lease).await {
                self.lose(partition, &err).await;
            }
        }
    }

    /// Announces the worker, gives up partitions past its share and
    /// claims free ones up to it. The first tick only announces, so that
    /// workers started together see each other before they claim.
    pub(super) async fn rebalance(&mut self) -> Result<(), ClusterError> {
        self.leases.announce().await?;
        if self.ticks < 2 {
            return Ok(());
        }
        let roster = self.leases.roster().await?;
        let share = fair_share(self.config.partitions, roster.workers);
        while self.owned.len() > share {
            let last = *self.owned.keys().next_back().expect("not empty");
            self.release(last).await;
        }
        let start = self.partitioner.partition_of(&uuid::Uuid::new_v5(
            &uuid::Uuid::NAMESPACE_OID,
            self.id.as_bytes(),
        ));
        let free: Vec<u32> = (0..self.config.partitions)
            .map(|n| (start + n) % self.config.partitions)
            .filter(|p| !roster.held.contains(p) && !self.owned.contains_key(p))
            .take(MAX_CLAIMS_PER_TICK)
            .collect();
        for partition in free {
            if self.owned.len() >= share {
                break;
            }
            self.claim(partition).await?;
        }
        Ok(())
    }

    /// Takes partition `p` if it is free.
    async fn claim(&mut self, partition: u32) -> Result<(), ClusterError> {
        let Some(lease) = self.leases.claim(partition).await? else {
            return Ok(());
        };
        if let Err(err) = self.adopt(partition, lease).await {
            self.stats.problem(&err);
            let _ = self.leases.release(partition, &lease).await;
            return Err(err);
        }
        Ok(())
    }

    /// Loads the checkpoint, fences the former owner out by rewriting it,
    /// and starts reading after it.
    async fn adopt(&mut self, partition: u32, lease: Lease) -> Result<(), ClusterError> {
        let stored = self.objects.checkpoints.read(partition).await?;
        let checkpoint = self.decode_checkpoint(partition, stored.bytes.as_deref())?;
        let former = checkpoint.owner.clone();
        let (streams, failed) = self.restore(partition, checkpoint.clone())?;
        let mine = Checkpoint {
            owner: self.id.clone(),
            rules: self.rules_tag,
            ..checkpoint
        };
        let current = stored.object.as_ref();
        let written = self
            .write_checkpoint(partition, mine.encode(), stored.revision, current)
            .await;
        let (checkpoint_revision, checkpoint_object) = match written {
            Ok(written) => written,
            Err(err) => {
                for stream in streams.keys() {
                    self.scanner.discard_stream(stream);
                }
                return Err(err);
            }
        };
        let takeover = !former.is_empty() && former != self.id;
        if stored.revision.is_some() {
            self.list_orphans(partition);
        }
        let replay_until = match takeover {
            true => self.last_sequence(partition).await.unwrap_or_else(|err| {
                // Only the count of replayed messages depends on it.
                self.stats.problem(&err);
                0
            }),
            false => 0,
        };
        self.count_claim(takeover, stored.revision.is_some() && former.is_empty());
        self.generation += 1;
        let owned = Owned {
            lease,
            checkpoint_revision,
            checkpoint_object,
            applied: mine.applied,
            checkpointed: mine.applied,
            checkpointed_at: Instant::now(),
            streams,
            reported: HashMap::new(),
            failed,
            generation: self.generation,
            reader: self.spawn_reader(partition, mine.applied + 1, Duration::ZERO),
            replay_until,
            pending: 0,
            read_at: Instant::now(),
        };
        self.owned.insert(partition, owned);
        Ok(())
    }

    /// When a partition that had a checkpoint is claimed: the former
    /// writers' objects are orphans now (the claim's write fenced them
    /// out). Lists partition `p`'s objects on a task of its own, for at
    /// most [`LISTING_LEASES`] leases: the store's whole listing (seconds
    /// on a busy cluster) must not hold up the loop's renewals. The loop
    /// deletes the orphans when the list comes ([`Self::delete_orphans`]);
    /// what is left is swept at the partition's next claim.
    fn list_orphans(&self, partition: u32) {
        let (objects, events) = (
            self.objects.checkpoints.objects.clone(),
            self.events.clone(),
        );
        let (stats, limit) = (self.stats.clone(), self.config.lease_ttl * LISTING_LEASES);
        tokio::spawn(async move {
            let listed = tokio::time::timeout(limit, list_objects(objects, partition)).await;
            match listed {
                Ok(Ok(names)) => {
                    let _ = events.send(Event::Objects { partition, names }).await;
                }
                Ok(Err(err)) => stats.problem(err),
                Err(_) => stats.problem(format!(
                    "partition {partition}: listing its checkpoint objects took over {limit:?}"
                )),
            }
        });
    }

    /// Deletes partition `p`'s objects listed at its claim, but the one
    /// its entry points at and the worker's own, if the worker still owns
    /// it with a valid lease and its entry is still at the revision it
    /// last wrote (so that the object it thinks current is: a write whose
    /// acknowledgement was lost may have moved it).
    pub(super) async fn delete_orphans(&mut self, partition: u32, names: Vec<String>) {
        let Some(o) = self.owned.get(&partition) else {
            return;
        };
        if !o.lease.valid() {
            return;
        }
        let store = &self.objects.checkpoints;
        match store.revision(partition).await {
            Ok(Some(revision)) if revision == o.checkpoint_revision => {}
            Ok(_) => return,
            Err(err) => return self.stats.problem(err),
        }
        let current = o.checkpoint_object.as_ref();
        let deleted = store
            .delete_orphans(partition, &self.id, &names, current)
            .await;
        WorkerStats::add(&self.stats.objects_swept, deleted as u64);
    }

    fn decode_checkpoint(
        &self,
        partition: u32,
        bytes: Option<&[u8]>,
    ) -> Result<Checkpoint, ClusterError> {
        let Some(bytes) = bytes else {
            return Ok(Checkpoint {
                rules: self.rules_tag,
                ..Checkpoint::default()
            });
        };
        let checkpoint = Checkpoint::decode(bytes)
            .map_err(|reason| ClusterError::Checkpoint { partition, reason })?;
        if checkpoint.rules != self.rules_tag {
            return Err(ClusterError::Checkpoint {
                partition,
                reason:
                    "made with other rules: run every worker of a deployment with the same rules"
                        .into(),
            });
        }
        Ok(checkpoint)
    }

    /// Opens a checkpoint's streams in the scanner (all or none): the open
    /// streams with their first sequences, and the failed ones.
    fn restore(
        &mut self,
        partition: u32,
        checkpoint: Checkpoint,
    ) -> Result<(OpenStreams, HashMap<Uuid, String>), ClusterError> {
        let opened: HashMap<Uuid, u64> = checkpoint.opened.into_iter().collect();
        let mut streams = HashMap::new();
        for context in checkpoint.streams {
            let stream = context.id;
            if let Err(err) = self.scanner.restore_stream(context) {
                for stream in streams.keys() {
                    self.scanner.discard_stream(stream);
                }
                return Err(ClusterError::Checkpoint {
                    partition,
                    reason: format!("stream {stream} cannot be restored: {err}"),
                });
            }
            let first = opened.get(&stream).copied().unwrap_or(checkpoint.applied);
            streams.insert(stream, first);
        }
        Ok((streams, checkpoint.failed.into_iter().collect()))
    }

    /// The last sequence of partition `p`'s input stream.
    async fn last_sequence(&self, partition: u32) -> Result<u64, ClusterError> {
        let stream = self
            .objects
            .js
            .get_stream(self.config.input_stream(partition))
            .await
            .map_err(|e| ClusterError::js("reading the input stream's state", e))?;
        Ok(stream.cached_info().state.last_sequence)
    }

    /// Counts a claim: a takeover when the former owner left no
    /// hand-off, a hand-off when it did (an existing checkpoint with no
    /// owner).
    fn count_claim(&self, takeover: bool, handoff: bool) {
        WorkerStats::add(&self.stats.claims, 1);
        if takeover {
            WorkerStats::add(&self.stats.takeovers, 1);
        }
        if handoff {
            WorkerStats::add(&self.stats.handoffs, 1);
        }
    }

    pub(super) fn spawn_reader(
        &self,
        partition: u32,
        start: u64,
        delay: Duration,
    ) -> tokio::task::JoinHandle<()> {
        let reader = Reader {
            input: self.input_of(partition).clone(),
            subject: self.config.input_subject(partition),
            partition,
            generation: self.generation,
            start,
            delay,
        };
        tokio::spawn(reader.run(self.events.clone()))
    }

    /// The input stream holding partition `p`.
    fn input_of(&self, partition: u32) -> &async_nats::jetstream::stream::Stream {
        &self.objects.inputs[self.config.input_index(partition) as usize]
    }

    /// A reader failed: read again from after the last applied message.
    pub(super) fn restart_reader(&mut self, partition: u32, generation: u64, error: String) {
        let Some(o) = self.owned.get(&partition) else {
            return;
        };
        if o.generation != generation {
            return;
        }
        self.stats
            .problem(format!("reading partition {partition}: {error}"));
        self.generation += 1;
        let start = o.applied + 1;
        let reader = self.spawn_reader(partition, start, Duration::from_millis(500));
        let o = self.owned.get_mut(&partition).expect("owned");
        o.generation = self.generation;
        o.reader.abort();
        o.reader = reader;
        o.read_at = Instant::now();
    }

    /// Restarts the readers that delivered nothing for a few leases while
    /// their partition has messages past the last one applied. A reader's
    /// consumer can go quiet without an error (its node died and the
    /// consumer was not recreated), and the worker would keep renewing
    /// the partition's lease without applying it.
    pub(super) async fn restart_stalled_readers(&mut self) {
        let quiet_for = self.config.lease_ttl * STALLED_AFTER_LEASES;
        let quiet: Vec<(u32, u64, u64)> = self
            .owned
            .iter()
            .filter(|(_, o)| o.read_at.elapsed() >= quiet_for)
            .map(|(p, o)| (*p, o.generation, o.applied))
            .collect();
        for (partition, generation, applied) in quiet {
            let subject = self.config.input_subject(partition);
            let last = tokio::time::timeout(
                self.config.lease_ttl / 2,
                self.input_of(partition)
                    .get_last_raw_message_by_subject(&subject),
            )
            .await;
            match last {
                Ok(Ok(message)) if message.sequence > applied => self.restart_reader(
                    partition,
                    generation,
                    format!(
                        "its reader delivered nothing for {quiet_for:?} while message {} waits (applied: {applied}); restarted",
                        message.sequence
                    ),
                ),
                // Nothing waits (or the partition is empty): look again later.
                Ok(_) => {
                    if let Some(o) = self.owned.get_mut(&partition) {
                        o.read_at = Instant::now();
                    }
                }
                Err(_) => self.stats.problem(format!(
                    "partition {partition}: no answer about its last message within half a lease"
                )),
            }
        }
    }

    /// Waits for every verdict and event published so far; drops the
    /// partitions whose publishes JetStream did not take (they replay from
    /// their checkpoints, and publish those again).
    ///
    /// The acknowledgements are awaited together, for at most a lease:
    /// awaited one by one, a thousand that time out (a node just died)
    /// held the loop for minutes. Past the lease every partition still
    /// waiting is dropped as if its verdict failed.
    pub(super) async fn settle_published(&mut self) {
        for partition in std::mem::take(&mut self.unsettled) {
            self.lose(
                partition,
                "its publishes were awaited by a tick that was cut",
            )
            .await;
        }
        let unacked = std::mem::take(&mut self.unacked);
        if unacked.is_empty() {
            return;
        }
        let (partitions, acks): (Vec<u32>, Vec<_>) = unacked.into_iter().unzip();
        // Cleared below; left set if this wait is cut (cancelled).
        self.unsettled = partitions.iter().copied().collect();
        let acks = acks.into_iter().map(std::future::IntoFuture::into_future);
        let waited =
            tokio::time::timeout(self.config.lease_ttl, futures_util::future::join_all(acks)).await;
        self.unsettled.clear();
        let mut failed: BTreeMap<u32, String> = BTreeMap::new();
        match waited {
            Ok(results) => {
                for (partition, result) in partitions.into_iter().zip(results) {
                    if let Err(err) = result {
                        failed.entry(partition).or_insert_with(|| err.to_string());
                    }
                }
            }
            Err(_) => {
                for partition in partitions {
                    failed.insert(partition, "no acknowledgement within a lease".into());
                }
            }
        }
        for (partition, err) in failed {
            self.lose(
                partition,
                format!("a verdict or event was not acknowledged: {err}"),
            )
            .await;
        }
    }

    /// Writes partition `p`'s checkpoint (with no owner when `handoff`:
    /// the next owner replays nothing of this one's).
    pub(super) async fn checkpoint(&mut self, partition: u32, handoff: bool) -> bool {
        if let Err(err) = self.scanner.flush() {
            self.stats.problem(err);
        }
        // What the flush found goes out before the cut that includes it.
        self.report_new_matches().await;
        self.settle_published().await;
        if !self.owned.contains_key(&partition) {
            return false;
        }
        let started = Instant::now();
        let checkpoint = self.cut(partition, handoff);
        let bytes = checkpoint.encode();
        if bytes.len() > self.config.max_checkpoint_bytes {
            WorkerStats::add(&self.stats.checkpoint_failures, 1);
            self.stats.problem(format!(
                "partition {partition}: a checkpoint of {} bytes exceeds max_checkpoint_bytes ({}); its replay grows until its streams close",
                bytes.len(),
                self.config.max_checkpoint_bytes
            ));
            return false;
        }
        let o = &self.owned[&partition];
        let size = bytes.len() as u64;
        let (revision, current) = (Some(o.checkpoint_revision), o.checkpoint_object.as_ref());
        let written = self
            .write_checkpoint(partition, bytes, revision, current)
            .await;
        match written {
            Ok((revision, object)) => {
                self.count_checkpoint(size, object.is_some(), started);
                let o = self.owned.get_mut(&partition).expect("owned");
                o.checkpoint_revision = revision;
                o.checkpoint_object = object;
                o.checkpointed = checkpoint.applied;
                o.checkpointed_at = Instant::now();
                true
            }
            Err(err) => {
                WorkerStats::add(&self.stats.checkpoint_failures, 1);
                self.lose(partition, &err).await;
                false
            }
        }
    }

    /// Writes partition `p`'s checkpoint as this worker (see
    /// `checkpoint_store.rs`).
    async fn write_checkpoint(
        &self,
        partition: u32,
        bytes: Vec<u8>,
        revision: Option<u64>,
        current: Option<&ObjectRef>,
    ) -> Result<(u64, Option<ObjectRef>), ClusterError> {
        let store = &self.objects.checkpoints;
        store
            .write(partition, &self.id, bytes, revision, current)
            .await
    }

    /// Counts a checkpoint written: its size, where it went, how long it
    /// took from the cut to the store's acknowledgement.
    fn count_checkpoint(&self, size: u64, as_object: bool, started: Instant) {
        WorkerStats::add(&self.stats.checkpoints, 1);
        WorkerStats::set(&self.stats.checkpoint_bytes, size);
        let micros = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
        WorkerStats::set(&self.stats.checkpoint_micros, micros);
        if as_object {
            WorkerStats::add(&self.stats.checkpoint_objects, 1);
        }
    }

    /// The checkpoint of partition `p` now (the scanner flushed): streams
    /// whose search failed move to the failed ones.
    fn cut(&mut self, partition: u32, handoff: bool) -> Checkpoint {
        let o = self.owned.get_mut(&partition).expect("owned");
        let mut streams = Vec::with_capacity(o.streams.len());
        for stream in o.streams.keys() {
            let Some(context) = self.scanner.stream_context(stream) else {
                continue;
            };
            match &context.broken {
                Some(reason) => {
                    o.failed.insert(*stream, reason.to_string());
                }
                None => streams.push(context.clone()),
            }
        }
        Checkpoint {
            applied: o.applied,
            owner: if handoff {
                String::new()
            } else {
                self.id.clone()
            },
            rules: self.rules_tag,
            streams,
            failed: o.failed.iter().map(|(s, r)| (*s, r.clone())).collect(),
            opened: o.streams.iter().map(|(s, first)| (*s, *first)).collect(),
        }
    }

    /// Gives partition `p` up cleanly: a last checkpoint, then the lease.
    pub(super) async fn release(&mut self, partition: u32) {
        if let Some(o) = self.owned.get(&partition) {
            o.reader.abort();
        }
        if !self.checkpoint(partition, true).await {
            self.lose(partition, "its last checkpoint was not written")
                .await;
            return;
        }
        let o = self.give_up(partition).expect("owned");
        if let Err(err) = self.leases.release(partition, &o.lease).await {
            self.stats.problem(err);
        }
        WorkerStats::add(&self.stats.releases, 1);
    }

    /// Drops partition `p` without a checkpoint: whoever claims it next
    /// replays it from its last one.
    pub(super) async fn lose(&mut self, partition: u32, why: impl std::fmt::Display) {
        let Some(o) = self.give_up(partition) else {
            return;
        };
        self.stats
            .problem(format!("dropped partition {partition}: {why}"));
        WorkerStats::add(&self.stats.lost, 1);
        if o.lease.valid() {
            let _ = self.leases.release(partition, &o.lease).await;
        }
    }

    /// Takes partition `p` out of the owned ones: stops its reader,
    /// forgets its streams, and shows no lag for it any more.
    fn give_up(&mut self, partition: u32) -> Option<Owned> {
        let o = self.owned.remove(&partition)?;
        o.reader.abort();
        for stream in o.streams.keys() {
            self.scanner.discard_stream(stream);
        }
        crate::metrics::cluster::record_partition_lag(partition, 0);
        Some(o)
    }
}
