//! Applying one message of a partition to the scanner, and publishing a
//! closed stream's verdict.
//!
//! A message that does not decode, or whose stream belongs to another
//! partition, is counted and skipped: it is never applied in part, and
//! the partition goes on. A stream whose own data fails (a chunk past
//! the limit, a line sent to a chunk stream) is marked failed: its later
//! data is ignored and its close publishes the error instead of a verdict
//! that would not be the whole-buffer one.

use async_nats::jetstream::message::PublishMessage;
use bytes::Bytes;
use uuid::Uuid;

use super::{Runner, WorkerStats, MAX_UNACKED_VERDICTS};
use crate::cluster::error::ClusterError;
use crate::cluster::wire::{verdict_id, Message, MessageKind};
use crate::stream::StreamMode;

impl Runner<'_> {
    /// One message read from partition `p`'s log.
    pub(super) async fn on_message(
        &mut self,
        partition: u32,
        generation: u64,
        sequence: u64,
        pending: u64,
        payload: Bytes,
    ) {
        let Some(o) = self.owned.get_mut(&partition) else {
            return;
        };
        if o.generation != generation {
            return;
        }
        o.read_at = std::time::Instant::now();
        if sequence <= o.applied {
            return;
        }
        // Fencing: past its lease another worker may own the partition.
        if !o.lease.valid() {
            self.lose(
                partition,
                "its lease ran out (the worker was paused or slow)",
            )
            .await;
            return;
        }
        o.pending = pending;
        if let Err(err) = self.apply(partition, sequence, &payload).await {
            self.lose(partition, err).await;
            return;
        }
        // Waiting for verdicts may have dropped the partition.
        let Some(o) = self.owned.get_mut(&partition) else {
            return;
        };
        o.applied = sequence;
        WorkerStats::add(&self.stats.applied, 1);
        if sequence <= o.replay_until {
            WorkerStats::add(&self.stats.replayed, 1);
        }
        if o.applied - o.checkpointed >= self.config.checkpoint_every {
            self.checkpoint(partition, false).await;
        }
    }

    /// Applies one message; an error only when the partition must be
    /// dropped (a verdict that could not be published).
    async fn apply(
        &mut self,
        partition: u32,
        sequence: u64,
        payload: &Bytes,
    ) -> Result<(), ClusterError> {
        let message = match self.check(partition, payload) {
            Ok(message) => message,
            Err(err) => {
                self.stats
                    .problem(format!("partition {partition}, sequence {sequence}: {err}"));
                return Ok(());
            }
        };
        match message.kind {
            MessageKind::Chunk => self.append(partition, &message, StreamMode::Chunks),
            MessageKind::Line => self.append(partition, &message, StreamMode::Lines),
            MessageKind::Close => {
                let verdict = self.close(partition, message.stream);
                return self
                    .publish(partition, message.stream, sequence, verdict)
                    .await;
            }
        }
        Ok(())
    }

    /// Decodes a message and checks it belongs to partition `p`.
    fn check(&self, partition: u32, payload: &Bytes) -> Result<Message, ClusterError> {
        let message = Message::parse(payload).inspect_err(|_| {
            WorkerStats::add(&self.stats.bad_messages, 1);
        })?;
        let expected = self.partitioner.partition_of(&message.stream);
        if expected != partition {
            WorkerStats::add(&self.stats.misrouted, 1);
            return Err(ClusterError::Misrouted {
                stream: message.stream,
                expected,
                got: partition,
            });
        }
        Ok(message)
    }

    fn append(&mut self, partition: u32, message: &Message, mode: StreamMode) {
        let o = self.owned.get_mut(&partition).expect("owned");
        let stream = message.stream;
        if o.failed.contains_key(&stream) {
            return;
        }
        let appended = match mode {
            StreamMode::Chunks => self.scanner.scan_chunk(stream, &message.data),
            StreamMode::Lines => self.scanner.scan_line(stream, &message.data),
        };
        match appended {
            Ok(()) => {
                o.streams.insert(stream);
            }
            Err(err) => {
                WorkerStats::add(&self.stats.stream_errors, 1);
                self.stats.problem(&err);
                o.failed.insert(stream, err.to_string());
                o.streams.remove(&stream);
                self.scanner.discard_stream(&stream);
            }
        }
    }

    /// Closes a stream: its verdict as JSON (the error, for a failed
    /// stream). A stream never opened closes with the empty verdict.
    fn close(&mut self, partition: u32, stream: Uuid) -> serde_json::Value {
        let o = self.owned.get_mut(&partition).expect("owned");
        o.streams.remove(&stream);
        if let Some(reason) = o.failed.remove(&stream) {
            return failure(stream, &reason);
        }
        let mut closed = self.scanner.close_stream(&stream);
        if matches!(closed, Ok(None)) {
            closed = self
                .scanner
                .open_stream(stream, StreamMode::Chunks)
                .and_then(|()| self.scanner.close_stream(&stream));
        }
        match closed {
            Ok(Some(results)) => serde_json::to_value(&results).expect("results serialize"),
            Ok(None) => failure(stream, "the stream could not be opened"),
            Err(err) => {
                WorkerStats::add(&self.stats.stream_errors, 1);
                failure(stream, &err.to_string())
            }
        }
    }

    async fn publish(
        &mut self,
        partition: u32,
        stream: Uuid,
        sequence: u64,
        verdict: serde_json::Value,
    ) -> Result<(), ClusterError> {
        let payload = serde_json::to_vec(&verdict).expect("JSON serializes");
        let publish = PublishMessage::build()
            .payload(payload.into())
            .message_id(verdict_id(&stream, sequence));
        let ack = self
            .objects
            .js
            .send_publish(self.config.verdict_subject(), publish)
            .await
            .map_err(|e| ClusterError::js("publishing a verdict", e))?;
        WorkerStats::add(&self.stats.verdicts, 1);
        self.unacked.push((partition, ack));
        if self.unacked.len() >= MAX_UNACKED_VERDICTS {
            self.settle_verdicts().await;
        }
        Ok(())
    }
}

/// The verdict line of a stream that has none, with why.
fn failure(stream: Uuid, reason: &str) -> serde_json::Value {
    serde_json::json!({ "stream": stream, "error": reason })
}
