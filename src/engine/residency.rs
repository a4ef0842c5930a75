//! Residency: which of a shard's streams live in memory, which only in the
//! stream store, and the work that moves them.
//!
//! With a store ([`crate::store`]), a shard's open streams are either
//! *resident* (their context in a scanner) or *stored* (their context only
//! on disk, indexed here by id with its last-seen time and rules: a
//! 24-byte slot, 29 to 57 bytes in memory with the map's spare room; this
//! index is not counted by the bounds). [`Residency`] moves them:
//!
//! * **Eviction.** When the current rules' scanner holds more contexts, or
//!   more context bytes, than the shard's share of the bounds, the least
//!   recently fed contexts are written to the store in one transaction and
//!   dropped from memory, down to 90% of the bound (so that eviction runs
//!   now and then, in bulk, not at every new stream). Finding them sorts
//!   the resident streams by last-seen time: `O(n log n)` per eviction
//!   round, which the 10% of slack amortises.
//! * **Restore.** A chunk, query, close or reset for a stored stream reads
//!   its context back into the scanner of the rules it was made with,
//!   first. Its entry stays in the store: it is the stream's durable state
//!   until a newer one is written.
//! * **Checkpoints.** Every context of the current rules that changed since
//!   it was last written is written, in one transaction, after a search of
//!   the buffered bytes (a context is only complete once its bytes are
//!   searched). The offset each stream had then is its *durable offset*.
//! * **Removal.** Entries of closed streams are deleted with the next
//!   write.
//!
//! Trade-offs: only the current rules' streams are evicted and
//! checkpointed; after a rule reload, streams still on the older rules stay
//! resident until they close (and a shutdown closes them). Every write is
//! durable (an fsync), so eviction and checkpoints are batched rather than
//! per stream. The bounds are checked at each shard tick (20 ms by
//! default), so a burst of new streams can overshoot them until then.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use foldhash::fast::RandomState;
use uuid::Uuid;

use crate::config::StoreConfig;
use crate::error::{EngineError, StoreError};
use crate::metrics::ResidencyMetrics;
use crate::scanner::MultiStreamScanner;
use crate::store::{rules_tag, ContextStore, RulesTag, StoredEntry};

/// What a checkpoint wrote.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Checkpoint {
    /// Contexts written.
    pub streams: usize,
    /// Bytes of the entries written.
    pub bytes: u64,
}

/// What the index keeps of a stored stream besides its id, in one word
/// (so that a slot of the index is 24 bytes): when it was last fed, in
/// milliseconds since the epoch (the low 48 bits, enough until the year
/// 10889), and which rules it was made with (the high 16 bits: an index
/// into [`Residency`]'s table of rule tags). Its offset and everything
/// else are read from its entry when needed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stored(u64);

impl Stored {
    const TIME_BITS: u32 = 48;

    fn new(last_seen_ms: u64, rules: u16) -> Stored {
        let time = last_seen_ms & ((1 << Self::TIME_BITS) - 1);
        Stored(time | (u64::from(rules) << Self::TIME_BITS))
    }

    fn last_seen_ms(self) -> u64 {
        self.0 & ((1 << Self::TIME_BITS) - 1)
    }

    fn rules(self) -> usize {
        (self.0 >> Self::TIME_BITS) as usize
    }
}

/// The stored streams of one shard and its share of the bounds.
pub(crate) struct Residency {
    store: Arc<ContextStore>,
    max_streams: usize,
    max_bytes: usize,
    checkpoint_every: Option<Duration>,
    last_checkpoint: Instant,
    /// Streams whose context is in the store only.
    stored: HashMap<Uuid, Stored, RandomState>,
    /// The rules of stored streams, each with how many streams were made
    /// with it (so that their rules are kept loaded): a handful of entries
    /// (one per rule set since the start that still has stored streams).
    rules: Vec<(RulesTag, usize)>,
    /// Streams closed since the last write that have an entry to delete.
    removals: Vec<Uuid>,
    metrics: ResidencyMetrics,
}

impl Residency {
    /// The residency of shard `index` of `shards`, holding the `stored`
    /// streams found in the store at start.
    pub fn new(
        store: Arc<ContextStore>,
        config: &StoreConfig,
        shards: usize,
        index: usize,
        stored: Vec<StoredEntry>,
    ) -> Residency {
        let mut residency = Residency {
            store,
            max_streams: (config.max_resident_streams / shards).max(1),
            max_bytes: (config.max_resident_bytes / shards).max(1),
            checkpoint_every: config.checkpoint_interval,
            last_checkpoint: Instant::now(),
            stored: HashMap::default(),
            rules: Vec::new(),
            removals: Vec::new(),
            metrics: ResidencyMetrics::new(index),
        };
        for entry in stored {
            residency.insert(entry);
        }
        residency.metrics.stored.set(residency.stored.len() as f64);
        residency
    }

    /// The store.
    pub fn store(&self) -> &Arc<ContextStore> {
        &self.store
    }

    fn insert(&mut self, entry: StoredEntry) {
        let rules = match self.rules.iter().position(|(tag, _)| *tag == entry.rules) {
            Some(index) => index,
            None => {
                // Reuse a slot no stream needs any more; rule sets are few.
                let free = self.rules.iter().position(|(_, count)| *count == 0);
                let index = free.unwrap_or(self.rules.len());
                if index == self.rules.len() {
                    self.rules.push((entry.rules, 0));
                }
                self.rules[index] = (entry.rules, 0);
                index
            }
        };
        let index = u16::try_from(rules).expect("fewer than 65,536 rule sets with stored streams");
        let stored = Stored::new(entry.last_seen_ms, index);
        if self.stored.insert(entry.stream, stored).is_none() {
            self.rules[rules].1 += 1;
        }
    }

    fn take(&mut self, stream: &Uuid) -> Option<()> {
        let entry = self.stored.remove(stream)?;
        self.rules[entry.rules()].1 -= 1;
        self.metrics.stored.set(self.stored.len() as f64);
        Some(())
    }

    /// Whether a stream is stored (and not resident).
    pub fn is_stored(&self, stream: &Uuid) -> bool {
        self.stored.contains_key(stream)
    }

    /// Ids of the stored streams.
    pub fn stored_streams(&self) -> impl Iterator<Item = &Uuid> {
        self.stored.keys()
    }

    /// Stored streams last fed before `cutoff_ms`.
    pub fn stored_idle(&self, cutoff_ms: u64) -> Vec<Uuid> {
        self.stored
            .iter()
            .filter(|(_, e)| e.last_seen_ms() < cutoff_ms)
            .map(|(stream, _)| *stream)
            .collect()
    }

    /// Streams stored now.
    pub fn stored_count(&self) -> usize {
        self.stored.len()
    }

    /// Whether stored streams were made with these rules (which must then
    /// stay loaded).
    pub fn holds_rules(&self, tag: &RulesTag) -> bool {
        self.rules.iter().any(|(t, count)| t == tag && *count > 0)
    }

    /// The rules a stored stream was made with, if it is stored.
    pub fn rules_of(&self, stream: &Uuid) -> Option<RulesTag> {
        self.stored.get(stream).map(|e| self.rules[e.rules()].0)
    }

    /// The context of a stored stream, read without restoring it.
    pub fn peek(&self, stream: Uuid) -> Result<Option<crate::StreamContext>, EngineError> {
        Ok(self.store.read(stream)?.map(|(context, _)| context))
    }

    /// Reads a stored stream back into `scanner` (which must use the rules
    /// it was made with). A damaged entry is dropped, and reported.
    pub fn restore(
        &mut self,
        scanner: &mut MultiStreamScanner<'_>,
        stream: Uuid,
    ) -> Result<(), EngineError> {
        if !self.stored.contains_key(&stream) {
            return Ok(());
        }
        let mut context = match self.store.read(stream) {
            Ok(Some((context, _))) => context,
            Ok(None) => {
                return Err(self.drop_damaged(stream, "the entry is missing from the store".into()))
            }
            Err(StoreError::Corrupt { reason, .. }) => {
                return Err(self.drop_damaged(stream, reason))
            }
            Err(error) => return Err(error.into()),
        };
        // Its entry is what it holds: durable as it stands.
        context.durable = Some(context.mark());
        scanner.restore_stream(context)?;
        self.take(&stream);
        self.metrics.restores.increment(1);
        Ok(())
    }

    /// A stored stream whose entry is damaged: dropped (its entry deleted
    /// with the next write), and the error for its caller.
    fn drop_damaged(&mut self, stream: Uuid, reason: String) -> EngineError {
        self.take(&stream);
        self.removals.push(stream);
        StoreError::Corrupt { stream, reason }.into()
    }

    /// A stream closed (or dropped): its entry, if it has one, goes with
    /// the next write. `durable` says whether its resident context was
    /// written.
    pub fn forget(&mut self, stream: &Uuid, durable: bool) {
        if self.take(stream).is_some() || durable {
            self.removals.push(*stream);
        }
    }

    /// Evicts the least recently fed streams of `scanner` while it is over
    /// the bounds; how many were evicted. On error nothing is evicted.
    pub fn enforce_bounds(
        &mut self,
        scanner: &mut MultiStreamScanner<'_>,
    ) -> Result<usize, EngineError> {
        let chosen = self.eviction_candidates(scanner);
        if chosen.is_empty() {
            return Ok(0);
        }
        let tag = rules_tag(&scanner.rules().fingerprint());
        let contexts = scanner.evict_streams(&chosen)?;
        // A context unchanged since it was written is in the store already.
        let changed = contexts.iter().filter(|c| c.changed_since_written());
        if let Err(error) = self.store.write(changed, tag, &self.removals) {
            for context in contexts {
                // Back where they were: nothing is lost, the bound waits.
                let _ = scanner.restore_stream(context);
            }
            return Err(error.into());
        }
        self.removals.clear();
        for context in &contexts {
            self.insert(StoredEntry {
                stream: context.id,
                bytes: context.stats.bytes,
                last_seen_ms: context.stats.last_seen_ms,
                rules: tag,
            });
        }
        self.metrics.evictions.increment(contexts.len() as u64);
        self.metrics.stored.set(self.stored.len() as f64);
        self.metrics.store_bytes.set(self.store.file_bytes() as f64);
        Ok(contexts.len())
    }

    /// Whether `scanner` holds more than the bounds allow (cheap: for a
    /// check after every message).
    pub fn over_bounds(&self, scanner: &MultiStreamScanner<'_>) -> bool {
        scanner.stats().open_streams > self.max_streams || scanner.context_bytes() > self.max_bytes
    }

    /// The streams to evict to get 10% under both bounds, oldest first.
    fn eviction_candidates(&self, scanner: &MultiStreamScanner<'_>) -> Vec<Uuid> {
        if !self.over_bounds(scanner) {
            return Vec::new();
        }
        let (mut count, mut bytes) = (scanner.stats().open_streams, scanner.context_bytes());
        let (count_goal, bytes_goal) = (
            self.max_streams - self.max_streams / 10,
            self.max_bytes - self.max_bytes / 10,
        );
        let mut by_age: Vec<(u64, Uuid, usize)> = scanner
            .stream_contexts()
            .map(|c| (c.stats.last_seen_ms, c.id, c.memory_bytes()))
            .collect();
        by_age.sort_unstable_by_key(|&(seen, _, _)| seen);
        let mut chosen = Vec::new();
        for (_, stream, size) in by_age {
            if count <= count_goal && bytes <= bytes_goal {
                break;
            }
            chosen.push(stream);
            count -= 1;
            bytes = bytes.saturating_sub(size);
        }
        chosen
    }

    /// Deletes the entries of the streams closed since the last write, if
    /// any (done at each tick: a closed stream must not come back after a
    /// crash).
    pub fn write_removals(&mut self) -> Result<(), EngineError> {
        if self.removals.is_empty() {
            return Ok(());
        }
        self.store
            .write(std::iter::empty(), [0; 8], &self.removals)?;
        self.removals.clear();
        Ok(())
    }

    /// Whether a periodic checkpoint is due.
    pub fn checkpoint_due(&self) -> bool {
        self.checkpoint_every
            .is_some_and(|every| self.last_checkpoint.elapsed() >= every)
    }

    /// Writes every context of `scanner` that changed since it was last
    /// written (searching the buffered bytes first), and deletes the
    /// entries of closed streams, in one durable transaction.
    pub fn checkpoint(
        &mut self,
        scanner: &mut MultiStreamScanner<'_>,
    ) -> Result<Checkpoint, EngineError> {
        let started = Instant::now();
        self.last_checkpoint = started;
        scanner.flush()?;
        let tag = rules_tag(&scanner.rules().fingerprint());
        let changed: Vec<&crate::StreamContext> = scanner
            .stream_contexts()
            .filter(|c| c.changed_since_written())
            .collect();
        let streams = changed.len();
        let bytes = self.store.write(changed, tag, &self.removals)?;
        self.removals.clear();
        for context in scanner.stream_contexts_mut() {
            context.durable = Some(context.mark());
        }
        self.metrics
            .checkpoint
            .record(started.elapsed().as_secs_f64());
        self.metrics.store_bytes.set(self.store.file_bytes() as f64);
        Ok(Checkpoint { streams, bytes })
    }
}
