//! Which shard holds a stream: the one home of that rule.
//!
//! A stream belongs to the shard its id hashes to, for its whole life, so
//! that all its requests reach one actor in order. Two places ask: the
//! handle, routing every request, and the start-up, handing each shard
//! the streams the store kept. If the two ever disagreed, a restored
//! stream would land on a shard its chunks never reach; [`ShardMap`] is
//! the one answer both use.
//!
//! The hash has fixed seeds (foldhash's fast hasher, a fixed seed): a
//! stream maps to the same shard in every run with the same shard count,
//! which the stream store relies on across restarts.

use std::hash::BuildHasher;

use uuid::Uuid;

/// Maps stream ids to shard indices.
#[derive(Clone)]
pub(crate) struct ShardMap {
    hasher: foldhash::fast::FixedState,
    shards: usize,
}

impl ShardMap {
    /// A map onto `shards` shards (at least one).
    pub fn new(shards: usize) -> ShardMap {
        assert!(shards > 0, "an engine has at least one shard");
        ShardMap {
            hasher: foldhash::fast::FixedState::with_seed(0x5ca1_ab1e),
            shards,
        }
    }

    /// The index of the shard that holds `stream`.
    pub fn shard_of(&self, stream: &Uuid) -> usize {
        (self.hasher.hash_one(stream) % self.shards as u64) as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stream_maps_to_one_shard_in_range_the_same_every_time() {
        let map = ShardMap::new(3);
        let again = ShardMap::new(3);
        let mut used = [0usize; 3];
        for n in 0..300u128 {
            let stream = Uuid::from_u128(n * 0x9e37_79b9_7f4a_7c15);
            let shard = map.shard_of(&stream);
            assert_eq!(shard, again.shard_of(&stream));
            used[shard] += 1;
        }
        assert!(used.iter().all(|&n| n > 50), "{used:?}");
        assert_eq!(ShardMap::new(1).shard_of(&Uuid::from_u128(7)), 0);
    }
}
