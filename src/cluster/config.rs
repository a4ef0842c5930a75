//! The settings of a deployment: names on NATS, partition count, lease and
//! checkpoint timing, and the bounds a worker holds to.

use std::time::Duration;

use super::error::ClusterError;
use super::partition::MAX_PARTITIONS;

/// Most input streams of a deployment.
const MAX_INPUT_STREAMS: u32 = 64;

/// Largest checkpoint a key-value entry may hold inline (half the
/// server's default `max_payload`).
const MAX_INLINE_CHECKPOINT: usize = 512 << 10;

/// Settings shared by the producers and workers of one deployment (all
/// must agree on `prefix` and `partitions`).
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    /// Subject prefix: input on `<prefix>.in.<p>`, verdicts on
    /// `<prefix>.verdicts`; streams and buckets are named after it.
    pub prefix: String,
    /// Partition count (1 to 1024).
    pub partitions: u32,
    /// JetStream streams the partitions are spread over (1 to 64, at most
    /// `partitions`): partition `p` is in stream `p mod input_streams`.
    /// Each stream has its own leader node, so more than one spreads the
    /// input's writes over the cluster's nodes. Fixed per deployment, as
    /// `partitions` is.
    pub input_streams: u32,
    /// Replicas of the JetStream streams and buckets created when absent
    /// (3 in a three-node cluster; at most 5).
    pub replicas: usize,
    /// How long a lease lasts without renewal: the pause after a worker's
    /// death before its partitions move.
    pub lease_ttl: Duration,
    /// A checkpoint of a partition is written at least this often while
    /// it changes.
    pub checkpoint_interval: Duration,
    /// ... and after this many applied messages, whichever comes first.
    pub checkpoint_every: u64,
    /// Largest checkpoint of one partition (held in memory while it is
    /// written or read).
    pub max_checkpoint_bytes: usize,
    /// Largest checkpoint kept inline in its key-value entry; a larger one
    /// goes to the checkpoint object store (in chunks of 128 KiB), its
    /// entry holding a reference. At most 512 KiB: an entry is one NATS
    /// message, and the server's `max_payload` is 1 MiB by default.
    pub inline_checkpoint_bytes: usize,
    /// How long JetStream remembers a verdict's message id: replays within
    /// it publish no duplicate.
    pub duplicate_window: Duration,
    /// How long input messages are kept (`max_age` of the input stream):
    /// a partition must be checkpointed within it.
    pub input_max_age: Duration,
    /// How long verdicts and match events are kept (`max_age` of their
    /// streams, when created; zero: until an operator removes them). At
    /// least the duplicate window.
    pub output_max_age: Duration,
    /// Largest message a producer publishes (its header included).
    pub max_message_bytes: usize,
    /// Whether workers publish match events (each rule seen matching a
    /// stream for the first time) to `<prefix>.events`.
    pub events: bool,
}

impl Default for ClusterConfig {
    fn default() -> ClusterConfig {
        ClusterConfig {
            prefix: "yaraflow".into(),
            partitions: 64,
            input_streams: 1,
            replicas: 1,
            lease_ttl: Duration::from_secs(10),
            checkpoint_interval: Duration::from_secs(2),
            checkpoint_every: 10_000,
            max_checkpoint_bytes: 256 << 20,
            inline_checkpoint_bytes: 256 << 10,
            duplicate_window: Duration::from_secs(600),
            input_max_age: Duration::from_secs(24 * 3600),
            output_max_age: Duration::from_secs(7 * 24 * 3600),
            max_message_bytes: 256 << 10,
            events: false,
        }
    }
}

impl ClusterConfig {
    /// Checks every bound.
    pub fn validate(&self) -> Result<(), ClusterError> {
        let bad = |why: String| Err(ClusterError::Config(why));
        if self.partitions == 0 || self.partitions > MAX_PARTITIONS {
            return Err(ClusterError::Partitions {
                partitions: self.partitions,
                limit: MAX_PARTITIONS,
            });
        }
        let prefix_ok = !self.prefix.is_empty()
            && self.prefix.len() <= 64
            && self
                .prefix
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        if !prefix_ok {
            return bad(format!(
                "prefix {:?}: use 1 to 64 letters, digits, '_' or '-'",
                self.prefix
            ));
        }
        if !(1..=MAX_INPUT_STREAMS.min(self.partitions)).contains(&self.input_streams) {
            return bad(format!(
                "{} input streams: use 1 to {} (and at most the partition count)",
                self.input_streams, MAX_INPUT_STREAMS
            ));
        }
        if !(1..=5).contains(&self.replicas) {
            return bad(format!("{} replicas: use 1 to 5", self.replicas));
        }
        if self.lease_ttl < Duration::from_secs(1) {
            return bad(format!("lease_ttl {:?}: use at least 1 s", self.lease_ttl));
        }
        if self.checkpoint_every == 0 || self.max_checkpoint_bytes < 1024 {
            return bad(
                "checkpoint_every must be at least 1, max_checkpoint_bytes at least 1 KiB".into(),
            );
        }
        if !(1024..=MAX_INLINE_CHECKPOINT).contains(&self.inline_checkpoint_bytes) {
            return bad(format!(
                "inline_checkpoint_bytes {}: use 1 KiB to {} KiB",
                self.inline_checkpoint_bytes,
                MAX_INLINE_CHECKPOINT >> 10
            ));
        }
        let output_age = self.output_max_age;
        if !output_age.is_zero() && output_age < self.duplicate_window {
            return bad(format!(
                "output_max_age {output_age:?} is shorter than the duplicate window {:?}: replayed verdicts could be published twice",
                self.duplicate_window
            ));
        }
        if self.max_message_bytes < 64 {
            return bad("max_message_bytes must be at least 64".into());
        }
        Ok(())
    }

    /// The subject of partition `p`'s input.
    pub fn input_subject(&self, partition: u32) -> String {
        format!("{}.in.{partition}", self.prefix)
    }

    /// The subject verdicts are published to.
    pub fn verdict_subject(&self) -> String {
        format!("{}.verdicts", self.prefix)
    }

    /// The subject match events are published to.
    pub fn event_subject(&self) -> String {
        format!("{}.events", self.prefix)
    }

    /// The JetStream stream holding partition `p`'s input: `<PREFIX>_IN`
    /// with one input stream, `<PREFIX>_IN_<k>` with several.
    pub fn input_stream(&self, partition: u32) -> String {
        self.input_stream_named(self.input_index(partition))
    }

    /// The index of the input stream holding partition `p`.
    pub fn input_index(&self, partition: u32) -> u32 {
        partition % self.input_streams
    }

    /// Input stream `k`'s name.
    fn input_stream_named(&self, k: u32) -> String {
        match self.input_streams {
            1 => format!("{}_IN", self.prefix.to_uppercase()),
            _ => format!("{}_IN_{k}", self.prefix.to_uppercase()),
        }
    }

    /// Every input stream with its subjects: a wildcard with one stream,
    /// each partition's subject in its stream with several.
    pub fn input_streams(&self) -> Vec<(String, Vec<String>)> {
        if self.input_streams == 1 {
            return vec![(
                self.input_stream_named(0),
                vec![format!("{}.in.*", self.prefix)],
            )];
        }
        (0..self.input_streams)
            .map(|k| {
                let subjects = (k..self.partitions)
                    .step_by(self.input_streams as usize)
                    .map(|p| self.input_subject(p))
                    .collect();
                (self.input_stream_named(k), subjects)
            })
            .collect()
    }

    /// The JetStream stream of the verdicts.
    pub fn verdict_stream(&self) -> String {
        format!("{}_VERDICTS", self.prefix.to_uppercase())
    }

    /// The JetStream stream of the match events.
    pub fn event_stream(&self) -> String {
        format!("{}_EVENTS", self.prefix.to_uppercase())
    }

    /// The key-value bucket of the leases (and the workers' presence).
    pub fn lease_bucket(&self) -> String {
        format!("{}_leases", self.prefix)
    }

    /// The key-value bucket of the checkpoints.
    pub fn checkpoint_bucket(&self) -> String {
        format!("{}_checkpoints", self.prefix)
    }

    /// The object store of the checkpoints too large to be inline.
    pub fn checkpoint_object_bucket(&self) -> String {
        format!("{}_checkpoint_objects", self.prefix)
    }

    /// The key of partition `p` in the lease and checkpoint buckets.
    pub fn partition_key(partition: u32) -> String {
        format!("p.{partition}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_defaults_are_valid_and_bounds_are_checked() {
        assert!(ClusterConfig::default().validate().is_ok());
        for bad in [
            ClusterConfig {
                partitions: 0,
                ..ClusterConfig::default()
            },
            ClusterConfig {
                prefix: "a.b".into(),
                ..ClusterConfig::default()
            },
            ClusterConfig {
                replicas: 7,
                ..ClusterConfig::default()
            },
            ClusterConfig {
                lease_ttl: Duration::from_millis(10),
                ..ClusterConfig::default()
            },
            ClusterConfig {
                inline_checkpoint_bytes: 1 << 20,
                ..ClusterConfig::default()
            },
            ClusterConfig {
                partitions: 4,
                input_streams: 5,
                ..ClusterConfig::default()
            },
            ClusterConfig {
                output_max_age: Duration::from_secs(60),
                ..ClusterConfig::default()
            },
        ] {
            assert!(bad.validate().is_err(), "{bad:?}");
        }
        let config = ClusterConfig::default();
        assert_eq!(config.input_subject(3), "yaraflow.in.3");
        assert_eq!(config.verdict_subject(), "yaraflow.verdicts");
        assert_eq!(config.input_stream(5), "YARAFLOW_IN");
        let spread = ClusterConfig {
            partitions: 5,
            input_streams: 2,
            ..ClusterConfig::default()
        };
        assert_eq!(spread.input_stream(3), "YARAFLOW_IN_1");
        assert_eq!(
            spread.input_streams(),
            vec![
                (
                    "YARAFLOW_IN_0".to_string(),
                    vec![
                        "yaraflow.in.0".into(),
                        "yaraflow.in.2".into(),
                        "yaraflow.in.4".into()
                    ]
                ),
                (
                    "YARAFLOW_IN_1".to_string(),
                    vec!["yaraflow.in.1".into(), "yaraflow.in.3".into()]
                ),
            ]
        );
        assert_eq!(config.event_subject(), "yaraflow.events");
        assert_eq!(config.event_stream(), "YARAFLOW_EVENTS");
    }
}
