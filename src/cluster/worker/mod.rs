//! The worker: claims partitions, applies their messages to one
//! multi-stream scanner, checkpoints them, publishes verdicts.
//!
//! One loop does it all, on one thread (the scanner is not `Send`): it
//! waits for the next message of any owned partition (from the readers,
//! `consume.rs`) or for the lease tick, whichever comes first. The tick
//! renews the leases, announces the worker, rebalances (gives up
//! partitions past its fair share, claims free ones up to it) and writes
//! the checkpoints that are due. Nothing else touches the scanner, so a
//! checkpoint is a consistent cut: the contexts as of the last sequence
//! applied.
//!
//! Every wait on the cluster is bounded, so that a slow or dying NATS
//! node costs a pause, not a stuck worker that renews leases it no longer
//! applies: a tick's renewals and rebalancing are cut after a lease (its
//! checkpoint writes are not: one cut halfway would leave an upload
//! behind), listing the leases after half of one, acknowledgements of
//! verdicts and events are awaited together for at most a lease
//! (partitions still waiting, or waiting when a tick was cut, are dropped
//! and replayed), a reader quiet for two leases while its partition has
//! messages is restarted, and a stop hands over within five leases.
//!
//! Layout: `consume.rs` reads a partition, `partitions.rs` claims,
//! checkpoints, gives up and drops partitions, `apply.rs` applies one
//! message and publishes verdicts, `events.rs` publishes match events,
//! `stats.rs` counts.

mod apply;
mod consume;
mod events;
mod partitions;
mod stats;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream::context::PublishAckFuture;
use tokio::sync::mpsc;
use uuid::Uuid;

pub use stats::{WorkerStats, WorkerStatsSnapshot};

use super::checkpoint_store::ObjectRef;
use super::config::ClusterConfig;
use super::error::ClusterError;
use super::lease::{Lease, Leases};
use super::partition::Partitioner;
use super::setup::Objects;
use crate::config::ScannerConfig;
use crate::rules::RuleSet;
use crate::scanner::MultiStreamScanner;
use crate::store::codec::RulesTag;
use consume::Event;

/// Messages read ahead of the loop, over all partitions: the readers wait
/// when it is full.
const READ_AHEAD: usize = 1024;

/// Verdicts and events awaiting their acknowledgement before the loop
/// waits for them.
const MAX_UNACKED: usize = 1024;

/// A worker of a cluster (see the module docs of [`crate::cluster`]).
pub struct Worker {
    rules: RuleSet,
    config: ClusterConfig,
    scanner: ScannerConfig,
    id: String,
    stats: Arc<WorkerStats>,
}

/// One partition the worker owns.
struct Owned {
    lease: Lease,
    /// The checkpoint key's revision this worker wrote last.
    checkpoint_revision: u64,
    /// The object holding that checkpoint, when it is not inline.
    checkpoint_object: Option<ObjectRef>,
    applied: u64,
    checkpointed: u64,
    checkpointed_at: Instant,
    /// The open streams, each with the sequence of its first message.
    streams: HashMap<Uuid, u64>,
    /// With events: the rules reported so far for each open stream.
    reported: HashMap<Uuid, HashSet<String>>,
    failed: HashMap<Uuid, String>,
    generation: u64,
    reader: tokio::task::JoinHandle<()>,
    /// After a takeover: the last sequence in the log at the claim.
    replay_until: u64,
    /// Messages after the last one read, as the server counted.
    pending: u64,
    /// When its reader last delivered a message, or was (re)started.
    read_at: Instant,
}

/// Leases a stopping worker may spend handing its partitions over.
const STOP_LEASES: u32 = 5;

/// The loop's state.
struct Runner<'r> {
    scanner: MultiStreamScanner<'r>,
    objects: Objects,
    leases: Leases,
    config: ClusterConfig,
    partitioner: Partitioner,
    rules_tag: RulesTag,
    id: String,
    stats: Arc<WorkerStats>,
    owned: BTreeMap<u32, Owned>,
    events: mpsc::Sender<Event>,
    unacked: Vec<(u32, PublishAckFuture)>,
    /// Partitions whose publishes were being awaited when the wait was
    /// cut (a tick past its lease): their fate is unknown, so they are
    /// dropped at the next settle.
    unsettled: BTreeSet<u32>,
    generation: u64,
    ticks: u64,
}

impl Worker {
    /// A worker of `rules` with a fresh id.
    pub fn new(
        rules: RuleSet,
        config: ClusterConfig,
        scanner: ScannerConfig,
    ) -> Result<Worker, ClusterError> {
        config.validate()?;
        let id = format!(
            "w{}-{}",
            std::process::id(),
            &Uuid::new_v4().simple().to_string()[..8]
        );
        Ok(Worker {
            rules,
            config,
            scanner,
            id,
            stats: Arc::default(),
        })
    }

    /// The worker's id (its name in the lease bucket).
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The worker's counters, live.
    pub fn stats(&self) -> Arc<WorkerStats> {
        self.stats.clone()
    }

    /// Runs until `stop` completes, then checkpoints and gives up every
    /// partition. The future is not `Send` (the scanner is not): run it
    /// with `block_on` of a current-thread runtime, or in a `LocalSet`.
    /// Dropping it instead is a crash: the leases age out, and the
    /// partitions are taken over from their last checkpoints.
    pub async fn run(
        self,
        client: async_nats::Client,
        stop: impl Future<Output = ()>,
    ) -> Result<WorkerStatsSnapshot, ClusterError> {
        let objects = super::setup::objects(&client, &self.config).await?;
        let (events, mut received) = mpsc::channel(READ_AHEAD);
        let mut runner = Runner {
            scanner: MultiStreamScanner::new(&self.rules, self.scanner.clone()),
            leases: Leases::new(
                objects.leases.clone(),
                self.config.lease_ttl,
                self.id.clone(),
            ),
            objects,
            partitioner: Partitioner::new(self.config.partitions)?,
            rules_tag: crate::store::rules_tag(&self.rules.fingerprint()),
            config: self.config.clone(),
            id: self.id.clone(),
            stats: self.stats.clone(),
            owned: BTreeMap::new(),
            events,
            unacked: Vec::new(),
            unsettled: BTreeSet::new(),
            generation: 0,
            ticks: 0,
        };
        let mut tick = tokio::time::interval(self.config.lease_ttl / 4);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tokio::pin!(stop);
        loop {
            tokio::select! {
                biased;
                _ = &mut stop => break,
                _ = tick.tick() => runner.tick(self.config.lease_ttl).await,
                Some(event) = received.recv() => runner.on_event(event).await,
            }
        }
        runner.stop().await;
        Ok(self.stats.snapshot())
    }
}

impl Runner<'_> {
    /// [`Self::maintain`], cut after `limit` (a lease): a cluster that
    /// answers slowly must not keep the loop from its messages and its
    /// stop. What was cut is safe to leave: a claim half made ages out, a
    /// checkpoint not written is written next time (or its partition is
    /// dropped when the write's revision no longer matches).
    async fn maintain_within(&mut self, limit: Duration) {
        if tokio::time::timeout(limit, self.maintain()).await.is_err() {
            self.stats
                .problem(format!("the lease tick took longer than {limit:?}; cut"));
        }
    }

    /// The lease tick: renew, announce, rebalance (within a lease), then
    /// write the checkpoints that are due. Those are not cut: a write cut
    /// halfway would leave an object's upload behind, and each one is
    /// bounded by the client's own request timeouts.
    async fn tick(&mut self, limit: Duration) {
        self.maintain_within(limit).await;
        self.write_due_checkpoints().await;
        if let Err(err) = self.scanner.flush_if_due() {
            self.stats.problem(err);
        }
        self.report_new_matches().await;
        self.publish_gauges();
    }

    /// Renew, announce, rebalance, restart stalled readers.
    async fn maintain(&mut self) {
        self.ticks += 1;
        self.renew_all().await;
        if let Err(err) = self.rebalance().await {
            self.stats.problem(err);
        }
        self.restart_stalled_readers().await;
    }

    async fn write_due_checkpoints(&mut self) {
        let due: Vec<u32> = self
            .owned
            .iter()
            .filter(|(_, o)| {
                o.applied > o.checkpointed
                    && o.checkpointed_at.elapsed() >= self.config.checkpoint_interval
            })
            .map(|(p, _)| *p)
            .collect();
        for partition in due {
            self.checkpoint(partition, false).await;
        }
    }

    async fn on_event(&mut self, event: Event) {
        match event {
            Event::Message {
                partition,
                generation,
                sequence,
                pending,
                payload,
            } => {
                self.on_message(partition, generation, sequence, pending, payload)
                    .await
            }
            Event::Failed {
                partition,
                generation,
                error,
            } => self.restart_reader(partition, generation, error),
            Event::Objects { partition, names } => self.delete_orphans(partition, names).await,
        }
    }

    /// Hands every partition over (a last checkpoint each), then says the
    /// worker is gone, within [`STOP_LEASES`] leases: a cluster that
    /// answers slowly (a node just died) must not hold a stopping worker
    /// for minutes. Partitions not handed over by then move when their
    /// leases run out, from their last checkpoints.
    async fn stop(&mut self) {
        let deadline = self.config.lease_ttl * STOP_LEASES;
        let handing_over = async {
            let owned: Vec<u32> = self.owned.keys().copied().collect();
            for partition in owned {
                self.release(partition).await;
            }
            if let Err(err) = self.leases.leave().await {
                self.stats.problem(err);
            }
        };
        if tokio::time::timeout(deadline, handing_over).await.is_err() {
            self.stats.problem(format!(
                "stopping: {} partitions not handed over within {deadline:?}; they move when their leases run out",
                self.owned.len()
            ));
        }
        self.publish_gauges();
    }

    fn publish_gauges(&self) {
        let lag: u64 = self.owned.values().map(|o| o.pending).sum();
        WorkerStats::set(&self.stats.lag, lag);
        WorkerStats::set(&self.stats.owned, self.owned.len() as u64);
        crate::metrics::cluster::record(
            &self.stats.snapshot(),
            self.config.partitions,
            self.oldest_checkpoint_age(),
        );
        for (partition, o) in &self.owned {
            crate::metrics::cluster::record_partition_lag(*partition, o.pending);
        }
    }

    fn oldest_checkpoint_age(&self) -> f64 {
        self.owned
            .values()
            .map(|o| o.checkpointed_at.elapsed().as_secs_f64())
            .fold(0.0, f64::max)
    }
}
