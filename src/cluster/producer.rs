//! The library producer: publishes a stream's chunks, lines and close to
//! its partition, with a bounded number of publishes awaiting JetStream's
//! acknowledgement.
//!
//! Back-pressure: a publish past `max_in_flight` first waits for the
//! oldest acknowledgement, so a producer faster than the cluster slows to
//! its pace instead of buffering without bound. [`Producer::flush`] waits
//! for every acknowledgement: after it, everything published is durable
//! (replicated per the input stream's replicas) and will be scanned.
//!
//! An acknowledgement error is returned by the call that awaited it,
//! which may be a later call than the publish's: a producer that sees an
//! error must treat its streams with publishes in flight as failed.

use std::collections::VecDeque;

use async_nats::jetstream::{self, context::PublishAckFuture};
use bytes::Bytes;
use uuid::Uuid;

use super::config::ClusterConfig;
use super::error::ClusterError;
use super::partition::Partitioner;
use super::wire::{Message, MessageKind, HEADER_LEN};

/// Publishes messages to their partitions, each acknowledgement left to
/// the caller: the piece [`Producer`] and the HTTP gateway
/// (`yaraflow serve --nats`) share. Cheap to clone; usable from any task.
#[derive(Clone)]
pub struct Publisher {
    js: jetstream::Context,
    config: ClusterConfig,
    partitioner: Partitioner,
}

impl Publisher {
    /// A publisher on `client`, creating the cluster's streams and
    /// buckets if absent.
    pub async fn new(
        client: async_nats::Client,
        config: ClusterConfig,
    ) -> Result<Publisher, ClusterError> {
        let objects = super::setup::objects(&client, &config).await?;
        Ok(Publisher {
            js: objects.js,
            partitioner: Partitioner::new(config.partitions)?,
            config,
        })
    }

    /// The deployment's settings.
    pub fn config(&self) -> &ClusterConfig {
        &self.config
    }

    /// The most data one message carries (`max_message_bytes` less the
    /// message's header): split longer chunks.
    pub fn max_data_bytes(&self) -> usize {
        self.config.max_message_bytes - HEADER_LEN
    }

    /// Publishes one message to its stream's partition; the future
    /// resolves when JetStream has it (durable).
    pub async fn publish(
        &self,
        kind: MessageKind,
        stream: Uuid,
        data: Bytes,
    ) -> Result<PublishAckFuture, ClusterError> {
        let payload = Message { kind, stream, data }.encode();
        if payload.len() > self.config.max_message_bytes {
            return Err(ClusterError::TooLarge {
                stream,
                len: payload.len(),
                limit: self.config.max_message_bytes,
            });
        }
        let subject = self
            .config
            .input_subject(self.partitioner.partition_of(&stream));
        self.js
            .publish(subject, payload)
            .await
            .map_err(|e| ClusterError::js("publish", e))
    }
}

/// Publishes streams to a cluster. One producer serves one task; open
/// several for parallel producers (the order of a stream's messages holds
/// only within one producer).
pub struct Producer {
    publisher: Publisher,
    in_flight: VecDeque<PublishAckFuture>,
    max_in_flight: usize,
    published: u64,
}

impl Producer {
    /// A producer on `client`, creating the cluster's streams and buckets
    /// if absent; at most `max_in_flight` (1 to 65536) publishes await
    /// their acknowledgement at once.
    pub async fn new(
        client: async_nats::Client,
        config: ClusterConfig,
        max_in_flight: usize,
    ) -> Result<Producer, ClusterError> {
        if !(1..=65536).contains(&max_in_flight) {
            return Err(ClusterError::Config(format!(
                "max_in_flight {max_in_flight}: use 1 to 65536"
            )));
        }
        Ok(Producer {
            publisher: Publisher::new(client, config).await?,
            in_flight: VecDeque::with_capacity(max_in_flight),
            max_in_flight,
            published: 0,
        })
    }

    /// Appends a chunk to a chunk stream.
    pub async fn chunk(&mut self, stream: Uuid, data: Bytes) -> Result<(), ClusterError> {
        self.send(MessageKind::Chunk, stream, data).await
    }

    /// Appends a line to a line stream.
    pub async fn line(&mut self, stream: Uuid, data: Bytes) -> Result<(), ClusterError> {
        self.send(MessageKind::Line, stream, data).await
    }

    /// Closes a stream: its verdict will be published once.
    pub async fn close(&mut self, stream: Uuid) -> Result<(), ClusterError> {
        self.send(MessageKind::Close, stream, Bytes::new()).await
    }

    /// Waits until every publish so far is acknowledged (durable).
    pub async fn flush(&mut self) -> Result<(), ClusterError> {
        while let Some(ack) = self.in_flight.pop_front() {
            await_ack(ack).await?;
        }
        Ok(())
    }

    /// Messages published (acknowledged or not) so far.
    pub fn published(&self) -> u64 {
        self.published
    }

    async fn send(
        &mut self,
        kind: MessageKind,
        stream: Uuid,
        data: Bytes,
    ) -> Result<(), ClusterError> {
        while self.in_flight.len() >= self.max_in_flight {
            let oldest = self.in_flight.pop_front().expect("not empty");
            await_ack(oldest).await?;
        }
        let ack = self.publisher.publish(kind, stream, data).await?;
        self.in_flight.push_back(ack);
        self.published += 1;
        Ok(())
    }
}

/// Waits for one publish's acknowledgement.
pub async fn await_ack(ack: PublishAckFuture) -> Result<(), ClusterError> {
    ack.await
        .map(|_| ())
        .map_err(|e| ClusterError::js("publish acknowledgement", e))
}
