//! What a worker counts: shared with its caller (and the CLI's status
//! line) through atomics, and published as metrics by the worker itself.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

/// A worker's counters, readable while it runs ([`super::Worker::stats`]).
#[derive(Debug, Default)]
pub struct WorkerStats {
    pub(crate) owned: AtomicU64,
    pub(crate) claims: AtomicU64,
    pub(crate) takeovers: AtomicU64,
    pub(crate) handoffs: AtomicU64,
    pub(crate) releases: AtomicU64,
    pub(crate) lost: AtomicU64,
    pub(crate) applied: AtomicU64,
    pub(crate) replayed: AtomicU64,
    pub(crate) verdicts: AtomicU64,
    pub(crate) events: AtomicU64,
    pub(crate) checkpoints: AtomicU64,
    pub(crate) checkpoint_bytes: AtomicU64,
    pub(crate) checkpoint_micros: AtomicU64,
    pub(crate) checkpoint_failures: AtomicU64,
    pub(crate) checkpoint_objects: AtomicU64,
    pub(crate) objects_swept: AtomicU64,
    pub(crate) bad_messages: AtomicU64,
    pub(crate) misrouted: AtomicU64,
    pub(crate) stream_errors: AtomicU64,
    pub(crate) lag: AtomicU64,
    pub(crate) last_problem: Mutex<Option<String>>,
}

/// A copy of a worker's counters at one moment.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct WorkerStatsSnapshot {
    /// Partitions owned now.
    pub owned: u64,
    /// Partitions claimed (every claim, a first one included).
    pub claims: u64,
    /// Claims of a partition whose former owner stopped without handing it
    /// over (it died or lost its lease): its messages since its last
    /// checkpoint were replayed.
    pub takeovers: u64,
    /// Claims of a partition another worker handed over cleanly.
    pub handoffs: u64,
    /// Partitions given up cleanly (rebalance, stop).
    pub releases: u64,
    /// Partitions dropped without a checkpoint (a lease or checkpoint
    /// write lost to another worker, a verdict not acknowledged).
    pub lost: u64,
    /// Messages applied.
    pub applied: u64,
    /// Messages applied after a takeover that were in the log when the
    /// partition was claimed: the former owner's unfinished work.
    pub replayed: u64,
    /// Verdicts published (duplicates JetStream dropped included).
    pub verdicts: u64,
    /// Match events published (duplicates JetStream dropped included).
    pub events: u64,
    /// Checkpoints written.
    pub checkpoints: u64,
    /// Size of the last checkpoint written, in bytes.
    pub checkpoint_bytes: u64,
    /// Time the last checkpoint took, from the cut of its streams to the
    /// store's acknowledgement, in microseconds.
    pub checkpoint_micros: u64,
    /// Checkpoints not written (too large, or the write failed).
    pub checkpoint_failures: u64,
    /// Checkpoints written to the object store (too large to be inline).
    pub checkpoint_objects: u64,
    /// Checkpoint objects deleted at a claim because no entry pointed at
    /// them (their writer crashed between the object and the entry).
    pub objects_swept: u64,
    /// Messages that did not decode (counted, skipped).
    pub bad_messages: u64,
    /// Messages on another partition than their stream's (skipped).
    pub misrouted: u64,
    /// Streams failed by their own data (a chunk too large, a mode
    /// mismatch): their close publishes the error.
    pub stream_errors: u64,
    /// Messages not yet applied in the owned partitions, as of the last
    /// message of each.
    pub lag: u64,
    /// The latest problem, in words.
    pub last_problem: Option<String>,
}

impl WorkerStats {
    /// A copy of the counters now.
    pub fn snapshot(&self) -> WorkerStatsSnapshot {
        let get = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        WorkerStatsSnapshot {
            owned: get(&self.owned),
            claims: get(&self.claims),
            takeovers: get(&self.takeovers),
            handoffs: get(&self.handoffs),
            releases: get(&self.releases),
            lost: get(&self.lost),
            applied: get(&self.applied),
            replayed: get(&self.replayed),
            verdicts: get(&self.verdicts),
            events: get(&self.events),
            checkpoints: get(&self.checkpoints),
            checkpoint_bytes: get(&self.checkpoint_bytes),
            checkpoint_micros: get(&self.checkpoint_micros),
            checkpoint_failures: get(&self.checkpoint_failures),
            checkpoint_objects: get(&self.checkpoint_objects),
            objects_swept: get(&self.objects_swept),
            bad_messages: get(&self.bad_messages),
            misrouted: get(&self.misrouted),
            stream_errors: get(&self.stream_errors),
            lag: get(&self.lag),
            last_problem: self.last_problem.lock().expect("not poisoned").clone(),
        }
    }

    pub(crate) fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    pub(crate) fn set(counter: &AtomicU64, n: u64) {
        counter.store(n, Ordering::Relaxed);
    }

    pub(crate) fn problem(&self, what: impl std::fmt::Display) {
        *self.last_problem.lock().expect("not poisoned") = Some(what.to_string());
    }
}
