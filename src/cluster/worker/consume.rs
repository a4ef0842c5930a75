//! The reading of one owned partition: an ordered JetStream consumer,
//! filtered on the partition's subject, from the sequence after the
//! checkpoint; its messages go, tagged, to the worker's loop.
//!
//! The task holds no state of the partition: the loop drops it (abort) to
//! stop reading, and ignores what a dropped one sent (its generation).

use std::time::Duration;

use async_nats::jetstream::consumer::{pull, DeliverPolicy};
use async_nats::jetstream::stream;
use bytes::Bytes;
use futures_util::StreamExt;
use tokio::sync::mpsc;

/// What a partition's reader tells the worker's loop.
pub(crate) enum Event {
    /// The next message of a partition.
    Message {
        partition: u32,
        generation: u64,
        sequence: u64,
        /// Messages after this one in the partition, as the server counts.
        pending: u64,
        payload: Bytes,
    },
    /// The checkpoint objects of a partition taken over, listed: all but
    /// the current one are orphans.
    Objects { partition: u32, names: Vec<String> },
    /// The reader stopped on an error.
    Failed {
        partition: u32,
        generation: u64,
        error: String,
    },
}

/// Where and how one reader reads.
pub(crate) struct Reader {
    pub input: stream::Stream,
    pub subject: String,
    pub partition: u32,
    pub generation: u64,
    /// The first sequence to read.
    pub start: u64,
    /// A pause before reading (after a failed reader).
    pub delay: Duration,
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

impl Reader {
    /// Reads until the loop goes away or the consumer fails.
    pub async fn run(self, events: mpsc::Sender<Event>) {
        tokio::time::sleep(self.delay).await;
        let (partition, generation) = (self.partition, self.generation);
        if let Err(error) = self.read(&events).await {
            let error = error.to_string();
            let _ = events
                .send(Event::Failed {
                    partition,
                    generation,
                    error,
                })
                .await;
        }
    }

    async fn read(&self, events: &mpsc::Sender<Event>) -> Result<(), BoxError> {
        let deliver_policy = match self.start {
            0 | 1 => DeliverPolicy::All,
            start => DeliverPolicy::ByStartSequence {
                start_sequence: start,
            },
        };
        let consumer = self
            .input
            .create_consumer(pull::OrderedConfig {
                filter_subject: self.subject.clone(),
                deliver_policy,
                ..Default::default()
            })
            .await?;
        let mut messages = consumer.messages().await?;
        while let Some(message) = messages.next().await {
            let message = message?;
            let info = message.info()?;
            let event = Event::Message {
                partition: self.partition,
                generation: self.generation,
                sequence: info.stream_sequence,
                pending: info.pending,
                payload: message.payload.clone(),
            };
            if events.send(event).await.is_err() {
                return Ok(());
            }
        }
        Err("the consumer ended".into())
    }
}
