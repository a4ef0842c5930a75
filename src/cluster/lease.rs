//! Leases on partitions, and the workers' presence, in one key-value
//! bucket whose `max_age` is the lease time.
//!
//! Keys: `p.<partition>` holds the owner of a partition, `w.<worker>` says
//! a worker is alive. A key not rewritten within the lease time ages out,
//! so a dead worker's claims end on their own. Claims and renewals are
//! compare-and-set (`create`, and `update` at the revision last written):
//! two workers cannot both hold a partition's key.
//!
//! A holder counts its lease valid until the lease time, less a quarter
//! of it, after it *sent* its last renewal: the server stamped the entry
//! later, so it cannot have expired it before then (clock rates, not
//! clocks, must agree).

use std::collections::HashSet;
use std::time::{Duration, Instant};

use async_nats::jetstream::kv;
use bytes::Bytes;
use futures_util::StreamExt;

use super::config::ClusterConfig;
use super::error::ClusterError;

/// A partition's lease, as its holder knows it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Lease {
    /// The revision of the key the holder wrote last.
    pub revision: u64,
    /// Until when the holder may apply the partition.
    pub valid_until: Instant,
}

impl Lease {
    /// Whether the holder may still apply the partition.
    pub fn valid(&self) -> bool {
        Instant::now() < self.valid_until
    }
}

/// What the bucket says about the cluster now.
#[derive(Debug, Default)]
pub(crate) struct Roster {
    /// Workers alive (their presence key not aged out).
    pub workers: usize,
    /// Partitions someone holds.
    pub held: HashSet<u32>,
}

/// The lease bucket, as one worker uses it.
pub(crate) struct Leases {
    store: kv::Store,
    ttl: Duration,
    owner: String,
}

impl Leases {
    pub fn new(store: kv::Store, ttl: Duration, owner: String) -> Leases {
        Leases { store, ttl, owner }
    }

    fn lease(&self, revision: u64, sent: Instant) -> Lease {
        Lease {
            revision,
            valid_until: sent + self.ttl - self.ttl / 4,
        }
    }

    /// Takes partition `p` if no one holds it: `None` if someone does.
    pub async fn claim(&self, partition: u32) -> Result<Option<Lease>, ClusterError> {
        let sent = Instant::now();
        let key = ClusterConfig::partition_key(partition);
        match self.store.create(&key, self.owner_bytes()).await {
            Ok(revision) => Ok(Some(self.lease(revision, sent))),
            Err(err) if err.kind() == kv::CreateErrorKind::AlreadyExists => Ok(None),
            Err(err) => Err(ClusterError::js(format!("claiming {key}"), err)),
        }
    }

    /// Renews a lease held: fails if another worker took the key.
    pub async fn renew(&self, partition: u32, lease: &mut Lease) -> Result<(), ClusterError> {
        let sent = Instant::now();
        let key = ClusterConfig::partition_key(partition);
        let revision = self
            .store
            .update(&key, self.owner_bytes(), lease.revision)
            .await
            .map_err(|e| ClusterError::js(format!("renewing {key}"), e))?;
        *lease = self.lease(revision, sent);
        Ok(())
    }

    /// Gives a partition up (only if the key is still this holder's).
    pub async fn release(&self, partition: u32, lease: &Lease) -> Result<(), ClusterError> {
        let key = ClusterConfig::partition_key(partition);
        self.store
            .delete_expect_revision(&key, Some(lease.revision))
            .await
            .map_err(|e| ClusterError::js(format!("releasing {key}"), e))
    }

    /// Says this worker is alive (renewed with the leases).
    pub async fn announce(&self) -> Result<(), ClusterError> {
        self.store
            .put(format!("w.{}", self.owner), self.owner_bytes())
            .await
            .map(|_| ())
            .map_err(|e| ClusterError::js("announcing the worker", e))
    }

    /// Says this worker is gone.
    pub async fn leave(&self) -> Result<(), ClusterError> {
        self.store
            .delete(format!("w.{}", self.owner))
            .await
            .map_err(|e| ClusterError::js("removing the worker", e))
    }

    /// The live workers and the partitions held.
    /// At most half a lease: a listing that stalls (its consumer on a node
    /// that died) must not hold up the renewals.
    pub async fn roster(&self) -> Result<Roster, ClusterError> {
        let error = |e: &dyn std::fmt::Display| ClusterError::js("listing the leases", e);
        let listing = async {
            let mut keys = self.store.keys().await.map_err(|e| error(&e))?;
            let mut roster = Roster::default();
            while let Some(key) = keys.next().await {
                let key = key.map_err(|e| error(&e))?;
                if key.starts_with("w.") {
                    roster.workers += 1;
                } else if let Some(p) = key.strip_prefix("p.").and_then(|p| p.parse().ok()) {
                    roster.held.insert(p);
                }
            }
            Ok(roster)
        };
        tokio::time::timeout(self.ttl / 2, listing)
            .await
            .unwrap_or_else(|_| Err(error(&"no answer within half a lease")))
    }

    fn owner_bytes(&self) -> Bytes {
        Bytes::from(self.owner.clone())
    }
}

/// The number of partitions each of `workers` should hold: an even share,
/// rounded up so that every partition has a holder.
pub(crate) fn fair_share(partitions: u32, workers: usize) -> usize {
    let workers = workers.max(1);
    (partitions as usize).div_ceil(workers)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_cover_every_partition() {
        assert_eq!(fair_share(64, 0), 64);
        assert_eq!(fair_share(64, 1), 64);
        assert_eq!(fair_share(64, 3), 22);
        assert_eq!(fair_share(64, 100), 1);
        for workers in 1..70 {
            assert!(fair_share(64, workers) * workers >= 64);
        }
    }
}
