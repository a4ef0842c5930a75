//! The failure ledger: errors waiting for their stream's next caller.
//!
//! A chunk is queued before its shard sees it, so an error the shard finds
//! afterwards (the stream limit, a failed search, a fault that lost the
//! stream) has no caller to go to. The shard writes it here, against the
//! stream; the handle reads it before routing the stream's next request,
//! and the start-up writes the stream store's damaged entries here too.
//! A reset or close acknowledges (clears) it.
//!
//! [`ShardShared`], what a shard shares with the handles, is the ledger
//! and the shard's mailbox gate (`engine/gate.rs`).
//!
//! Shared between a shard's thread and every handle: a `std` mutex (held
//! for a map operation, never across an await), with an atomic count in
//! front so that the common case, no failure at all, costs one atomic load
//! and no lock.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard};

use uuid::Uuid;

use super::gate::MailboxGate;
use crate::config::EngineConfig;
use crate::error::EngineError;

/// The errors of one shard's streams, waiting for their callers.
#[derive(Default)]
pub(crate) struct FailureLedger {
    failures: Mutex<HashMap<Uuid, EngineError>>,
    count: AtomicUsize,
}

impl FailureLedger {
    fn lock(&self) -> MutexGuard<'_, HashMap<Uuid, EngineError>> {
        self.failures.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The error waiting for the stream's caller, if any.
    pub fn get(&self, stream: &Uuid) -> Option<EngineError> {
        if self.count.load(Ordering::Acquire) == 0 {
            return None;
        }
        self.lock().get(stream).cloned()
    }

    /// Records the stream's error; a stream keeps its first.
    pub fn record(&self, stream: Uuid, error: EngineError) {
        let mut failures = self.lock();
        failures.entry(stream).or_insert(error);
        self.count.store(failures.len(), Ordering::Release);
    }

    /// Forgets the stream's error; whether there was one.
    pub fn clear(&self, stream: &Uuid) -> bool {
        if self.count.load(Ordering::Acquire) == 0 {
            return false;
        }
        let mut failures = self.lock();
        let had = failures.remove(stream).is_some();
        self.count.store(failures.len(), Ordering::Release);
        had
    }

    /// Takes every error out.
    pub fn take_all(&self) -> Vec<(Uuid, EngineError)> {
        let mut failures = self.lock();
        self.count.store(0, Ordering::Release);
        failures.drain().collect()
    }

    /// Streams with an error waiting.
    pub fn len(&self) -> usize {
        self.count.load(Ordering::Acquire)
    }
}

/// What a shard shares with the handles: its queue bound and the errors
/// waiting for their streams' callers.
pub(crate) struct ShardShared {
    pub index: usize,
    pub gate: MailboxGate,
    pub failures: FailureLedger,
}

impl ShardShared {
    pub fn new(index: usize, config: &EngineConfig) -> ShardShared {
        ShardShared {
            index,
            gate: MailboxGate::new(config.mailbox_messages, config.mailbox_bytes),
            failures: FailureLedger::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn failed(reason: &str) -> EngineError {
        EngineError::StreamFailed {
            stream: Uuid::nil(),
            reason: reason.into(),
        }
    }

    #[test]
    fn a_stream_keeps_its_first_error_until_cleared_or_taken() {
        let ledger = FailureLedger::default();
        let (a, b) = (Uuid::from_u128(1), Uuid::from_u128(2));
        assert!(ledger.get(&a).is_none());
        assert!(!ledger.clear(&a));
        ledger.record(a, failed("first"));
        ledger.record(a, failed("second"));
        ledger.record(b, failed("b"));
        assert_eq!(ledger.len(), 2);
        assert!(ledger.get(&a).unwrap().to_string().contains("first"));
        assert!(ledger.clear(&a));
        assert!(ledger.get(&a).is_none());
        assert_eq!(ledger.len(), 1);
        let taken = ledger.take_all();
        assert_eq!(taken.len(), 1);
        assert_eq!(taken[0].0, b);
        assert_eq!(ledger.len(), 0);
        assert!(ledger.get(&b).is_none());
    }
}
