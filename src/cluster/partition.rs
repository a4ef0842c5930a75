//! Which partition a stream belongs to: the one home of that rule in a
//! cluster.
//!
//! The same hash family as the engine's shard map (`engine/shard_map.rs`:
//! foldhash's fast hasher with a fixed seed, so every producer and worker
//! of every run agrees), with another seed: were the seeds equal, the
//! streams of one partition would all land on a few of an engine's shards
//! whenever the partition and shard counts share a factor.

use std::hash::BuildHasher;

use uuid::Uuid;

use super::error::ClusterError;

/// The most partitions a deployment may have: each is a subject, a lease
/// and a checkpoint, and a worker runs one consumer per owned partition.
pub const MAX_PARTITIONS: u32 = 1024;

/// Maps stream ids to partitions.
#[derive(Clone, Debug)]
pub struct Partitioner {
    hasher: foldhash::fast::FixedState,
    partitions: u32,
}

impl Partitioner {
    /// A map onto `partitions` partitions (1 to [`MAX_PARTITIONS`]).
    pub fn new(partitions: u32) -> Result<Partitioner, ClusterError> {
        if partitions == 0 || partitions > MAX_PARTITIONS {
            return Err(ClusterError::Partitions {
                partitions,
                limit: MAX_PARTITIONS,
            });
        }
        Ok(Partitioner {
            hasher: foldhash::fast::FixedState::with_seed(0x7a47_f10e),
            partitions,
        })
    }

    /// How many partitions there are.
    pub fn partitions(&self) -> u32 {
        self.partitions
    }

    /// The partition of `stream`.
    pub fn partition_of(&self, stream: &Uuid) -> u32 {
        (self.hasher.hash_one(stream) % u64::from(self.partitions)) as u32
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streams_spread_over_every_partition_the_same_every_time() {
        let map = Partitioner::new(8).unwrap();
        let mut used = [0usize; 8];
        for n in 0..800u128 {
            let stream = Uuid::from_u128(n * 0x9e37_79b9_7f4a_7c15);
            let partition = map.partition_of(&stream);
            assert_eq!(
                partition,
                Partitioner::new(8).unwrap().partition_of(&stream)
            );
            used[partition as usize] += 1;
        }
        assert!(used.iter().all(|&n| n > 60), "{used:?}");
    }

    #[test]
    fn a_partition_count_out_of_bounds_is_refused() {
        assert!(Partitioner::new(0).is_err());
        assert!(Partitioner::new(MAX_PARTITIONS + 1).is_err());
        assert!(Partitioner::new(MAX_PARTITIONS).is_ok());
    }
}
