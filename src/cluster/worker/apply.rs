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

use super::{Runner, WorkerStats, MAX_UNACKED};
use crate::cluster::error::ClusterError;
use crate::cluster::wire::{verdict_id, Message, MessageKind};
use crate::results::StreamResults;
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
        self.report_new_matches().await;
        // Waiting for verdicts or events may have dropped the partition.
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
            MessageKind::Chunk => self.append(partition, sequence, &message, StreamMode::Chunks),
            MessageKind::Line => self.append(partition, sequence, &message, StreamMode::Lines),
            MessageKind::Close => return self.close(partition, message.stream, sequence).await,
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

    /// Appends a chunk or a line (`sequence`: the message's, which a
    /// stream's first message records).
    fn append(&mut self, partition: u32, sequence: u64, message: &Message, mode: StreamMode) {
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
                o.streams.entry(stream).or_insert(sequence);
            }
            Err(err) => {
                WorkerStats::add(&self.stats.stream_errors, 1);
                self.stats.problem(&err);
                o.failed.insert(stream, err.to_string());
                o.streams.remove(&stream);
                o.reported.remove(&stream);
                self.scanner.discard_stream(&stream);
            }
        }
    }

    /// Closes a stream (its close at `sequence`): publishes its match
    /// events not reported yet (with events), then its verdict (the error,
    /// for a failed stream).
    async fn close(
        &mut self,
        partition: u32,
        stream: Uuid,
        sequence: u64,
    ) -> Result<(), ClusterError> {
        let o = self.owned.get_mut(&partition).expect("owned");
        let opened = o.streams.remove(&stream).unwrap_or(sequence);
        let mut reported = o.reported.remove(&stream).unwrap_or_default();
        let verdict = match o.failed.remove(&stream) {
            Some(reason) => failure(stream, &reason),
            None => match self.final_verdict(stream) {
                Ok(results) => {
                    if self.config.events {
                        self.publish_events(partition, &results, opened, &mut reported, true)
                            .await?;
                    }
                    serde_json::to_value(&results).expect("results serialize")
                }
                Err(reason) => failure(stream, &reason),
            },
        };
        let payload = serde_json::to_vec(&verdict).expect("JSON serializes");
        let subject = self.config.verdict_subject();
        self.publish_once(partition, subject, payload, verdict_id(&stream, sequence))
            .await?;
        WorkerStats::add(&self.stats.verdicts, 1);
        Ok(())
    }

    /// A closing stream's final verdict, or why it has none. A stream
    /// never opened closes with the empty verdict.
    fn final_verdict(&mut self, stream: Uuid) -> Result<StreamResults, String> {
        let mut closed = self.scanner.close_stream(&stream);
        if matches!(closed, Ok(None)) {
            closed = self
                .scanner
                .open_stream(stream, StreamMode::Chunks)
                .and_then(|()| self.scanner.close_stream(&stream));
        }
        match closed {
            Ok(Some(results)) => Ok(results),
            Ok(None) => Err("the stream could not be opened".into()),
            Err(err) => {
                WorkerStats::add(&self.stats.stream_errors, 1);
                Err(err.to_string())
            }
        }
    }

    /// Publishes `payload` to `subject` with the message id `id`:
    /// JetStream drops a second publish of that id within its duplicate
    /// window, so a replay publishes nothing twice. The acknowledgement is
    /// awaited before partition `p`'s next checkpoint (or sooner, past
    /// [`MAX_UNACKED`]).
    pub(super) async fn publish_once(
        &mut self,
        partition: u32,
        subject: String,
        payload: Vec<u8>,
        id: String,
    ) -> Result<(), ClusterError> {
        let publish = PublishMessage::build()
            .payload(payload.into())
            .message_id(id);
        let ack = self
            .objects
            .js
            .send_publish(subject.clone(), publish)
            .await
            .map_err(|e| ClusterError::js(format!("publishing to {subject}"), e))?;
        self.unacked.push((partition, ack));
        if self.unacked.len() >= MAX_UNACKED {
            self.settle_published().await;
        }
        Ok(())
    }
}

/// The verdict line of a stream that has none, with why.
fn failure(stream: Uuid, reason: &str) -> serde_json::Value {
    serde_json::json!({ "stream": stream, "error": reason })
}
