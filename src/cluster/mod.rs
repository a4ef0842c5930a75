//! Past one machine: producers and workers on a NATS JetStream cluster.
//!
//! This module owns everything yaraflow puts on NATS: the partitioning of
//! streams, the subjects and JetStream objects, the wire format of a
//! message, the checkpoint of a partition, the [`Producer`] and the
//! [`Worker`]. It is compiled with the `cluster` feature (on by default).
//!
//! # The design
//!
//! - **Partitions.** A stream id hashes to one of P partitions
//!   ([`Partitioner`], P fixed per deployment, 64 by default). All the
//!   chunks, lines and the close of a stream are published to its
//!   partition's subject (`yaraflow.in.<p>`), one JetStream stream
//!   (`YARAFLOW_IN`, replicated) holding every partition. JetStream keeps
//!   a publisher's order on a subject, so a partition is an ordered log.
//!   An acknowledged publish is durable: that is a producer's offset.
//! - **Leases.** A worker owns a partition while it holds the key `p.<p>`
//!   of the key-value bucket `yaraflow_leases`. It takes the key with
//!   `create` (which fails when the key exists) and renews it with
//!   `update` at the revision it last wrote (compare-and-set); the
//!   bucket's `max_age` is the lease time, so the key of a worker that
//!   died disappears and another worker can create it. A worker applies a
//!   partition's messages only while its last renewal is younger than the
//!   lease time less a margin, measured on its own monotonic clock from
//!   before the renewal was sent: the server cannot have expired the key
//!   earlier. A paused worker finds its lease stale when it wakes, and
//!   stops applying before it touches the partition again.
//! - **Checkpoints.** Each owned partition is checkpointed to the bucket
//!   `yaraflow_checkpoints` (key `p.<p>`): the open streams' contexts in
//!   the stream store's format (`store/codec.rs`), the streams that failed
//!   and the last JetStream sequence applied. A checkpoint larger than
//!   [`ClusterConfig::inline_checkpoint_bytes`] is written to the object
//!   store `yaraflow_checkpoint_objects` first, and the entry holds a
//!   reference to it (`checkpoint_store.rs`). Writes are compare-and-set
//!   on the revision the worker read or wrote last; a new owner rewrites
//!   the checkpoint as soon as it claims the partition, so a former owner
//!   that still runs can never write one again (the revision is the
//!   fencing token). A checkpoint is written only once every verdict of
//!   the closes before it is acknowledged by JetStream.
//! - **Replay.** A new owner restores the checkpoint's contexts into its
//!   scanner and reads the partition from the sequence after the
//!   checkpoint (an ordered consumer, filtered on the partition's
//!   subject): the messages applied since the checkpoint by the former
//!   owner are applied again, and the contexts end up as they would have
//!   without the takeover. Verdicts are deterministic, so a replayed
//!   close gives the same verdict.
//! - **Verdicts.** A close publishes the stream's final verdict (the JSON
//!   `yaraflow scan` prints, without `file`) to `yaraflow.verdicts`, in
//!   the stream `YARAFLOW_VERDICTS`, with `Nats-Msg-Id` set to the stream
//!   id and the close's sequence: JetStream drops the second publish of a
//!   replayed close within the duplicate window (10 minutes by default).
//! - **Match events** (with [`ClusterConfig::events`]): each rule seen
//!   matching a stream for the first time goes to `yaraflow.events`
//!   (stream `YARAFLOW_EVENTS`), with a message id from the stream, the
//!   sequence of its first message and the rule (`worker/events.rs`).
//!
//! The worker runs one [`crate::MultiStreamScanner`] for all its
//! partitions, on one thread: the scanner is not `Send`, and one scanner
//! batches the searches of every stream the worker holds.
//!
//! # Guarantees and limits
//!
//! At-least-once delivery of every message to a worker, exactly-once
//! verdicts within the duplicate window (a takeover later than the window
//! after the close it replays may publish that verdict twice). A
//! partition's checkpoint is at most [`ClusterConfig::max_checkpoint_bytes`]
//! (256 MiB by default; it is held in memory while written or read); a
//! partition whose open streams' contexts exceed it is not checkpointed
//! (its replay grows) and the failure is counted. A
//! producer whose publish fails must treat that stream as failed: a
//! stream's later messages may be applied without the lost one.

mod checkpoint;
mod checkpoint_store;
mod config;
mod error;
mod lease;
mod partition;
mod producer;
mod setup;
mod verdicts;
mod wire;
mod worker;

pub use checkpoint::Checkpoint;
pub use config::ClusterConfig;
pub use error::ClusterError;
pub use partition::Partitioner;
pub use producer::{await_ack, Producer, Publisher};
pub use setup::{connect, ensure_cluster};
pub use verdicts::{published, verdicts, Output, Verdicts};
pub use wire::{verdict_id, Message, MessageKind};
pub use worker::{Worker, WorkerStats, WorkerStatsSnapshot};
