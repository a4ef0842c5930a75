//! The errors of the cluster: typed, each naming what failed and, where
//! there is one, the remedy.

use uuid::Uuid;

/// Errors of producers and workers on a NATS cluster.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClusterError {
    /// The partition count is out of bounds.
    #[error("{partitions} partitions: use 1 to {limit}")]
    Partitions {
        /// The count asked for.
        partitions: u32,
        /// The largest count allowed.
        limit: u32,
    },
    /// A setting is out of its bounds.
    #[error("invalid cluster setting: {0}")]
    Config(String),
    /// Connecting to NATS failed.
    #[error("cannot connect to NATS at {url}: {reason}")]
    Connect {
        /// The server(s) asked for.
        url: String,
        /// What the client said.
        reason: String,
    },
    /// A JetStream request failed (creating a stream or bucket, a
    /// publish, a key-value read or write).
    #[error("JetStream {what} failed: {reason}")]
    JetStream {
        /// What was being done.
        what: String,
        /// What the client or server said.
        reason: String,
    },
    /// A message on an input subject does not decode.
    #[error("bad message: {0}")]
    BadMessage(String),
    /// A message's stream hashes to another partition than its subject's.
    #[error("stream {stream} belongs to partition {expected}, but its message came on partition {got}: the producer uses another partition count")]
    Misrouted {
        /// The stream.
        stream: Uuid,
        /// Its partition by the hash.
        expected: u32,
        /// The partition it was published to.
        got: u32,
    },
    /// A checkpoint does not decode, or was made with other rules.
    #[error("checkpoint of partition {partition}: {reason}")]
    Checkpoint {
        /// The partition.
        partition: u32,
        /// What is wrong with it.
        reason: String,
    },
    /// A chunk is larger than the producer accepts.
    #[error("a message of {len} bytes for stream {stream} exceeds the limit of {limit} bytes; split it into smaller chunks")]
    TooLarge {
        /// The stream.
        stream: Uuid,
        /// Its size.
        len: usize,
        /// The limit.
        limit: usize,
    },
}

impl ClusterError {
    /// A [`ClusterError::JetStream`] for `what`, from any client error.
    pub(crate) fn js(what: impl Into<String>, err: impl std::fmt::Display) -> ClusterError {
        ClusterError::JetStream {
            what: what.into(),
            reason: err.to_string(),
        }
    }
}
