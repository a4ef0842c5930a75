//! Limits and tuning of the multi-stream scanner, with defaults; with the
//! `engine` and `store` features, those of the engine and its store too.
//!
//! Every limit is enforced with a typed [`crate::ScanError`]: going over one
//! rejects the offending call and leaves every stream's state as it was.

#[cfg(feature = "store")]
use std::path::PathBuf;
use std::time::Duration;

#[cfg(feature = "store")]
use crate::store::OnRulesChange;

/// Configuration of a [`crate::MultiStreamScanner`].
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ScannerConfig {
    /// Most streams open at once; opening one more fails with
    /// [`crate::ScanError::TooManyStreams`].
    pub max_open_streams: usize,
    /// Largest chunk (or line) accepted by one call.
    pub max_chunk_bytes: usize,
    /// Bytes buffered across all streams before a batch is searched (the
    /// tails a batch rescans count: a stream fed tiny chunks must not make
    /// a batch many times larger than its new bytes). Larger
    /// batches amortise the per-batch harvest (one condition evaluation of
    /// the whole rule set) over more bytes. When searches are slow (rules
    /// whose atoms hit the traffic often), batches are capped lower, at
    /// what a quarter of `scan_timeout` searches at the measured rate. They
    /// are capped lower too where matches are dense or long (YARA-X copies
    /// the bytes of each match a batch finds), and by the rule set's
    /// longest match: as low as 64 KB with open-ended regexes.
    pub max_batch_bytes: usize,
    /// Longest time a buffered chunk waits before its batch is searched. It is
    /// checked when a chunk or line arrives and by
    /// [`crate::MultiStreamScanner::flush_if_due`], which a caller with idle
    /// periods should call on a timer.
    pub max_batch_delay: Duration,
    /// Most matches kept per pattern per stream (as YARA-X's
    /// `max_matches_per_pattern`).
    pub max_matches_per_pattern: usize,
    /// Most pattern matches kept per stream for its verdict (and listed in
    /// its results). A stream's verdict replays the matches it kept, and
    /// YARA-X's work for that grows with (matches x blocks); the cap keeps
    /// one match-heavy stream from holding its shard for seconds or
    /// minutes. Matches past it are still counted
    /// (`StreamResults::matches`), but not kept: the results then say
    /// `matches_cut: true` and `exact: false` (a condition on counts or
    /// offsets past the cut may differ from a whole-buffer scan). Raise it
    /// for rules whose conditions count more matches than this.
    pub max_stream_matches: usize,
    /// Most matched bytes reported per match in results.
    pub max_snippet_bytes: usize,
    /// Cap on the window: the longest match the scanner guarantees to find
    /// across chunk boundaries. Patterns that can match more bytes (or have
    /// no bound) make their rule inexact, as reported by rule analysis.
    pub max_pattern_len: usize,
    /// Timeout of every YARA-X call of the scanner: each batch search and
    /// each verdict evaluation (YARA-X counts it in whole seconds). A batch
    /// search that times out fails the streams with bytes in it (their
    /// callers get the error, as for a failed chunk); a verdict that times
    /// out fails that call only (`ScanError::Yara(Timeout)`). `None`: no
    /// limit, so a costly stream can hold its shard for as long as it
    /// takes.
    pub scan_timeout: Option<Duration>,
    /// Most bytes a chunk stream retains for whole-data rules (rules that
    /// read the header, `filesize` or modules: see `yaraflow check`). Past
    /// it the stream keeps only its first bytes (for the rules' gates), and
    /// whole-data rules whose gate it passes are reported undecided.
    pub max_retained_stream_bytes: usize,
    /// Most bytes all streams of the scanner (in the engine: of each shard)
    /// retain together for whole-data rules; a stream that would go past
    /// it stops retaining, as at its own cap.
    pub max_retained_bytes: usize,
    /// Search the chunks of a stream that retains its bytes for whole-data
    /// rules as they come. By default such a stream's search waits: its
    /// bytes are searched once, when it stops retaining (a gate failed, a
    /// cap was reached) or a verdict needs its matches, and not at all
    /// when its verdict is a whole-buffer scan of them, which finds every
    /// match itself. That costs one whole-buffer scan instead of two
    /// passes, but its matches are only found then: subscribers to match
    /// events who want them as they happen set this.
    pub eager_search: bool,
}

impl Default for ScannerConfig {
    fn default() -> Self {
        ScannerConfig {
            max_open_streams: 1_000_000,
            max_chunk_bytes: 16 << 20,
            max_batch_bytes: 4 << 20,
            max_batch_delay: Duration::from_millis(100),
            max_matches_per_pattern: 1_000_000,
            max_stream_matches: 10_000,
            max_snippet_bytes: 64,
            max_pattern_len: 1024,
            scan_timeout: Some(Duration::from_secs(10)),
            max_retained_stream_bytes: 4 << 20,
            max_retained_bytes: 128 << 20,
            eager_search: false,
        }
    }
}

/// Configuration of the actor engine ([`crate::engine::Engine`]).
#[cfg(feature = "engine")]
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EngineConfig {
    /// Scanner actors, each on its own thread with its own shard of the
    /// streams; 0 means one per core (`num_cpus::get()`).
    pub shards: usize,
    /// Limits and tuning of each shard's scanner. `max_open_streams` applies
    /// per shard (and, for a while after a rule reload, per rule set).
    pub scanner: ScannerConfig,
    /// Most messages queued for one shard: a chunk or line sent alone is one
    /// message, a burst (`scan_chunks`) is one message per shard it goes
    /// to. A producer that finds the mailbox full waits.
    pub mailbox_messages: usize,
    /// Most bytes queued for one shard (a single larger chunk still passes
    /// when the mailbox is empty).
    pub mailbox_bytes: usize,
    /// How long a producer waits for room in a full mailbox before it gets
    /// [`crate::EngineError::Overloaded`] (for a burst: for each shard it
    /// goes to); `None` waits for as long as it takes, zero never waits.
    pub overload_after: Option<Duration>,
    /// Capacity of each match-event subscription; events that find it full
    /// are dropped and counted (see [`crate::engine::Subscription::dropped`]).
    pub event_capacity: usize,
    /// How often each shard checks whether its batch is due
    /// (`ScannerConfig::max_batch_delay`) and refreshes its gauges.
    pub tick: Duration,
    /// Also count rule matches per rule, in
    /// `yaraflow_rule_matches_by_rule_total{rule="namespace.identifier"}`
    /// (for "top rules" panels). One series per rule that ever matched:
    /// off by default, since a set of tens of thousands of rules could
    /// make that many series.
    pub rule_metrics: bool,
    /// Keep stream contexts in an on-disk store: streams past the resident
    /// bounds are evicted to it, checkpoints write to it, and the next
    /// start resumes the streams it holds. `None`: streams live in memory
    /// only, and a shutdown closes them.
    pub store: Option<StoreConfig>,
    /// Close streams that received no data for this long (checked about
    /// every second, or every quarter of the timeout if shorter), and
    /// deliver their final verdicts as [`crate::engine::ClosedEvent`]s.
    /// `None`: streams stay open until closed.
    pub idle_timeout: Option<Duration>,
    /// Longest a shard spends closing its streams at shutdown; the streams
    /// it has not closed by then are reported without a verdict
    /// ([`crate::EngineError::ShutdownTimedOut`]). With
    /// `ScannerConfig::scan_timeout`, this bounds how long a shutdown takes
    /// whatever the streams hold.
    pub shutdown_timeout: Duration,
}

/// The stream store of an engine (see [`crate::store`]).
#[cfg(feature = "store")]
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StoreConfig {
    /// The store's file (created if missing).
    pub path: PathBuf,
    /// Most stream contexts held in memory, over all shards; past it the
    /// least recently fed streams are evicted to the store.
    pub max_resident_streams: usize,
    /// Most bytes of stream contexts held in memory, over all shards
    /// ([`crate::StreamContext::memory_bytes`]; batches and the store's
    /// cache come on top).
    pub max_resident_bytes: usize,
    /// Write the contexts that changed every this long, so that a crash
    /// loses at most this much of each stream (see
    /// [`crate::StreamResults::durable_offset`]). `None`: only at
    /// shutdown and eviction.
    pub checkpoint_interval: Option<Duration>,
    /// What to do at start with stored streams of other rules.
    pub on_rules_change: OnRulesChange,
    /// The store's page cache.
    pub cache_bytes: usize,
}

#[cfg(feature = "store")]
impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            path: PathBuf::from("yaraflow-streams.redb"),
            max_resident_streams: 1_000_000,
            max_resident_bytes: 1 << 30,
            checkpoint_interval: None,
            on_rules_change: OnRulesChange::Refuse,
            cache_bytes: 64 << 20,
        }
    }
}

#[cfg(feature = "engine")]
impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            shards: 0,
            scanner: ScannerConfig::default(),
            mailbox_messages: 4096,
            mailbox_bytes: 64 << 20,
            overload_after: Some(Duration::from_secs(10)),
            event_capacity: 65_536,
            tick: Duration::from_millis(20),
            rule_metrics: false,
            store: None,
            idle_timeout: None,
            shutdown_timeout: Duration::from_secs(20),
        }
    }
}

#[cfg(feature = "engine")]
impl EngineConfig {
    /// The number of shards to start: `shards`, or one per core.
    pub fn shard_count(&self) -> usize {
        if self.shards == 0 {
            num_cpus::get().max(1)
        } else {
            self.shards
        }
    }
}
