//! The metrics yaraflow publishes, through the `metrics` facade.
//!
//! This module owns every metric name, so that the README, the dashboard
//! and the code agree. The library only records; an application installs a
//! recorder (the service installs the Prometheus exporter). With no
//! recorder installed every call is a no-op.
//!
//! Names follow Prometheus conventions: prefix `yaraflow_`, base units in
//! the name, counters end in `_total`. The engine's labels are `shard` (the
//! shard's index) and `kind` (an [`ErrorKind`]'s name), both of low cardinality, and
//! `rule` on the opt-in per-rule counter; the service's are `route` and
//! `status` (a class: `2xx`). Process metrics (`process_cpu_seconds_total`,
//! `process_resident_memory_bytes`, ...) come from `metrics-process`,
//! collected when `/metrics` is scraped.
//! Handles are registered once per shard, so recording costs an atomic add.

use std::time::Duration;

use metrics::{counter, gauge, histogram, Counter, Gauge, Histogram};

use crate::error::ErrorKind;

/// Bytes appended to streams (chunks and lines).
pub const SCANNED_BYTES: &str = "yaraflow_scanned_bytes_total";
/// Chunks appended to chunk streams.
pub const SCANNED_CHUNKS: &str = "yaraflow_scanned_chunks_total";
/// Lines appended to line streams.
pub const SCANNED_LINES: &str = "yaraflow_scanned_lines_total";
/// Streams opened.
pub const STREAMS_OPENED: &str = "yaraflow_streams_opened_total";
/// Streams closed by their caller or at shutdown.
pub const STREAMS_CLOSED: &str = "yaraflow_streams_closed_total";
/// Streams reset to offset 0.
pub const STREAMS_RESET: &str = "yaraflow_streams_reset_total";
/// Streams lost when their shard failed.
pub const STREAMS_LOST: &str = "yaraflow_streams_lost_total";
/// Streams open now.
pub const OPEN_STREAMS: &str = "yaraflow_open_streams";
/// Rules found matching a stream (each rule once per stream).
pub const RULE_MATCHES: &str = "yaraflow_rule_matches_total";
/// Counter, label `rule` (`namespace.identifier`): the same, per rule; only
/// with `EngineConfig::rule_metrics`.
pub const RULE_MATCHES_BY_RULE: &str = "yaraflow_rule_matches_by_rule_total";
/// Batches searched.
pub const BATCH_FLUSHES: &str = "yaraflow_batch_flushes_total";
/// Bytes searched per batch.
pub const BATCH_SIZE: &str = "yaraflow_batch_size_bytes";
/// Time from a chunk's submission to the search of its batch.
pub const SCAN_LATENCY: &str = "yaraflow_scan_latency_seconds";
/// Messages queued for a shard (a chunk or line sent alone, or a burst's
/// share for the shard).
pub const MAILBOX_DEPTH: &str = "yaraflow_mailbox_depth";
/// Chunks refused with `Overloaded`.
pub const OVERLOAD_REJECTIONS: &str = "yaraflow_overload_rejections_total";
/// Time spent computing verdicts.
pub const EVALUATION_TIME: &str = "yaraflow_evaluation_seconds";
/// Verdicts that reused the empty stream's verdict (no replay).
pub const EMPTY_VERDICT_REUSES: &str = "yaraflow_empty_verdict_reuses_total";
/// Shard restarts after a failure.
pub const SHARD_RESTARTS: &str = "yaraflow_shard_restarts_total";
/// Errors of the shards, by `kind`.
pub const SCAN_ERRORS: &str = "yaraflow_scan_errors_total";
/// Streams closed because they were idle longer than the idle timeout.
pub const IDLE_CLOSES: &str = "yaraflow_idle_closes_total";
/// Stream contexts evicted from memory to the stream store.
pub const EVICTIONS: &str = "yaraflow_evictions_total";
/// Stream contexts read back from the stream store.
pub const RESTORES: &str = "yaraflow_restores_total";
/// Open streams whose context is in the stream store only.
pub const STORED_STREAMS: &str = "yaraflow_stored_streams";
/// Size of the stream store's file (no `shard` label: one file).
pub const STORE_BYTES: &str = "yaraflow_store_bytes";
/// Time a checkpoint takes (search of the buffered bytes included).
pub const CHECKPOINT_TIME: &str = "yaraflow_checkpoint_seconds";
/// Match events dropped because a subscriber's channel was full.
pub const EVENTS_DROPPED: &str = "yaraflow_events_dropped_total";
/// Rule reloads.
pub const RULE_RELOADS: &str = "yaraflow_rule_reloads_total";
/// Bytes the open streams retain for whole-data and dense rules.
pub const RETAINED_BYTES: &str = "yaraflow_retained_bytes";
/// Verdicts computed by a whole-buffer scan of a stream's retained bytes.
pub const WHOLE_DATA_SCANS: &str = "yaraflow_whole_data_scans_total";
/// Streams whose search had waited while they retained their bytes and
/// then ran (they stopped retaining, or a verdict needed their matches).
pub const DEFERRED_SEARCHES: &str = "yaraflow_deferred_searches_total";
/// Pattern matches dropped because their stream failed their rule's
/// precondition (see `rules::preconditions`).
pub const RULED_OUT_MATCHES: &str = "yaraflow_ruled_out_matches_total";
/// Rules loaded, by `class`: `stream_exact`, `whole_data_gated`,
/// `whole_data_ungated` (see `yaraflow check`), which add up to all rules,
/// and `dense`, the stream-exact rules chunk streams retain their bytes for
/// (see `rules::density`).
pub const RULES: &str = "yaraflow_rules";

/// Every metric name with its type and help text, for documentation and
/// for exporters that want descriptions.
pub const ALL: &[(&str, &str, &str)] = &[
    (SCANNED_BYTES, "counter", "Bytes appended to streams"),
    (
        SCANNED_CHUNKS,
        "counter",
        "Chunks appended to chunk streams",
    ),
    (SCANNED_LINES, "counter", "Lines appended to line streams"),
    (STREAMS_OPENED, "counter", "Streams opened"),
    (STREAMS_CLOSED, "counter", "Streams closed"),
    (STREAMS_RESET, "counter", "Streams reset to offset 0"),
    (
        STREAMS_LOST,
        "counter",
        "Streams lost when their shard failed",
    ),
    (OPEN_STREAMS, "gauge", "Streams open now"),
    (RULE_MATCHES, "counter", "Rules found matching a stream"),
    (
        RULE_MATCHES_BY_RULE,
        "counter",
        "Rules found matching a stream, per rule (opt-in)",
    ),
    (BATCH_FLUSHES, "counter", "Batches searched"),
    (BATCH_SIZE, "histogram", "Bytes searched per batch"),
    (SCAN_LATENCY, "histogram", "Chunk submission to search"),
    (
        MAILBOX_DEPTH,
        "gauge",
        "Chunks and lines queued for a shard",
    ),
    (
        OVERLOAD_REJECTIONS,
        "counter",
        "Chunks refused as overloaded",
    ),
    (
        EVALUATION_TIME,
        "histogram",
        "Time spent computing verdicts",
    ),
    (
        EMPTY_VERDICT_REUSES,
        "counter",
        "Verdicts that needed no replay",
    ),
    (SHARD_RESTARTS, "counter", "Shard restarts after a failure"),
    (SCAN_ERRORS, "counter", "Shard errors by kind"),
    (
        EVENTS_DROPPED,
        "counter",
        "Match events dropped (subscriber full)",
    ),
    (RULE_RELOADS, "counter", "Rule reloads"),
    (
        RETAINED_BYTES,
        "gauge",
        "Bytes streams retain for whole-data and dense rules",
    ),
    (
        WHOLE_DATA_SCANS,
        "counter",
        "Verdicts from a whole-buffer scan of retained bytes",
    ),
    (
        DEFERRED_SEARCHES,
        "counter",
        "Deferred searches of retaining streams that ran",
    ),
    (
        RULED_OUT_MATCHES,
        "counter",
        "Pattern matches dropped: their stream failed their rule's precondition",
    ),
    (
        RULES,
        "gauge",
        "Rules loaded, by class (dense: of the stream-exact ones)",
    ),
    (IDLE_CLOSES, "counter", "Streams closed by the idle timeout"),
    (EVICTIONS, "counter", "Stream contexts evicted to the store"),
    (
        RESTORES,
        "counter",
        "Stream contexts read back from the store",
    ),
    (
        STORED_STREAMS,
        "gauge",
        "Open streams held in the store only",
    ),
    (STORE_BYTES, "gauge", "Size of the stream store's file"),
    (CHECKPOINT_TIME, "histogram", "Time a checkpoint takes"),
    (
        HTTP_REQUESTS,
        "counter",
        "HTTP requests by route and status class",
    ),
    (
        HTTP_REQUEST_DURATION,
        "histogram",
        "HTTP request latency by route",
    ),
];

/// Registers the help text of every metric with the installed recorder.
pub fn describe() {
    #[cfg(feature = "cluster")]
    let all = ALL.iter().chain(cluster::ALL);
    #[cfg(not(feature = "cluster"))]
    let all = ALL.iter();
    for &(name, kind, help) in all {
        match kind {
            "counter" => metrics::describe_counter!(name, help),
            "gauge" => metrics::describe_gauge!(name, help),
            _ => metrics::describe_histogram!(name, help),
        }
    }
}

/// The metric handles of one shard. Not `Clone`: the shard borrows them
/// (a clone costs a `String` and a reference count per handle).
pub(crate) struct ShardMetrics {
    shard: String,
    pub bytes: Counter,
    pub chunks: Counter,
    pub lines: Counter,
    pub opened: Counter,
    pub closed: Counter,
    pub reset: Counter,
    pub lost: Counter,
    pub open: Gauge,
    pub rule_matches: Counter,
    pub flushes: Counter,
    pub batch_size: Histogram,
    pub latency: Histogram,
    pub mailbox_depth: Gauge,
    pub evaluation: Histogram,
    pub empty_verdicts: Counter,
    pub retained: Gauge,
    pub whole_scans: Counter,
    pub deferred_searches: Counter,
    pub ruled_out_matches: Counter,
    pub restarts: Counter,
    pub idle_closes: Counter,
}

/// The stream store's handles of one shard.
#[derive(Clone)]
pub(crate) struct ResidencyMetrics {
    pub evictions: Counter,
    pub restores: Counter,
    pub stored: Gauge,
    pub store_bytes: Gauge,
    pub checkpoint: Histogram,
}

impl ResidencyMetrics {
    /// Registers the handles of shard `index`.
    pub fn new(index: usize) -> ResidencyMetrics {
        let label = [("shard", index.to_string())];
        ResidencyMetrics {
            evictions: counter!(EVICTIONS, &label),
            restores: counter!(RESTORES, &label),
            stored: gauge!(STORED_STREAMS, &label),
            store_bytes: gauge!(STORE_BYTES),
            checkpoint: histogram!(CHECKPOINT_TIME, &label),
        }
    }
}

impl ShardMetrics {
    /// Registers the handles of shard `index`.
    pub fn new(index: usize) -> ShardMetrics {
        let shard = index.to_string();
        let label = || [("shard", shard.clone())];
        let metrics = ShardMetrics {
            bytes: counter!(SCANNED_BYTES, &label()),
            chunks: counter!(SCANNED_CHUNKS, &label()),
            lines: counter!(SCANNED_LINES, &label()),
            opened: counter!(STREAMS_OPENED, &label()),
            closed: counter!(STREAMS_CLOSED, &label()),
            reset: counter!(STREAMS_RESET, &label()),
            lost: counter!(STREAMS_LOST, &label()),
            open: gauge!(OPEN_STREAMS, &label()),
            rule_matches: counter!(RULE_MATCHES, &label()),
            flushes: counter!(BATCH_FLUSHES, &label()),
            batch_size: histogram!(BATCH_SIZE, &label()),
            latency: histogram!(SCAN_LATENCY, &label()),
            mailbox_depth: gauge!(MAILBOX_DEPTH, &label()),
            evaluation: histogram!(EVALUATION_TIME, &label()),
            empty_verdicts: counter!(EMPTY_VERDICT_REUSES, &label()),
            retained: gauge!(RETAINED_BYTES, &label()),
            whole_scans: counter!(WHOLE_DATA_SCANS, &label()),
            deferred_searches: counter!(DEFERRED_SEARCHES, &label()),
            ruled_out_matches: counter!(RULED_OUT_MATCHES, &label()),
            restarts: counter!(SHARD_RESTARTS, &label()),
            idle_closes: counter!(IDLE_CLOSES, &label()),
            shard: shard.clone(),
        };
        // Series that count rare things exist from the start, at 0, so
        // that `rate()` and `increase()` (dashboards, alerts) see them.
        let _ = counter!(OVERLOAD_REJECTIONS, &label());
        // The store's series too (0 without a store), so that its panels
        // show 0 rather than no data.
        let residency = ResidencyMetrics::new(index);
        residency.stored.set(0.0);
        for kind in SCAN_ERROR_KINDS {
            let _ =
                counter!(SCAN_ERRORS, "shard" => metrics.shard.clone(), "kind" => kind.as_str());
        }
        metrics
    }

    /// Counts one error of the given kind (one of [`SCAN_ERROR_KINDS`]).
    pub fn error(&self, kind: ErrorKind) {
        debug_assert!(SCAN_ERROR_KINDS.contains(&kind), "{kind} is not a shard's");
        counter!(SCAN_ERRORS, "shard" => self.shard.clone(), "kind" => kind.as_str()).increment(1);
    }

    /// Records a duration in seconds.
    pub fn seconds(histogram: &Histogram, elapsed: Duration) {
        histogram.record(elapsed.as_secs_f64());
    }
}

/// The values of the `kind` label of [`SCAN_ERRORS`]: the kinds of every
/// [`ScanError`](crate::ScanError) (a shard counts those its scanners
/// return), and three a shard counts itself: data dropped because its
/// stream had failed, a failure of the stream store, and a panic.
pub const SCAN_ERROR_KINDS: &[ErrorKind] = &[
    ErrorKind::TooManyStreams,
    ErrorKind::ChunkTooLarge,
    ErrorKind::ModeMismatch,
    ErrorKind::UnknownStream,
    ErrorKind::AlreadyOpen,
    ErrorKind::SearchFailed,
    ErrorKind::BadExternal,
    ErrorKind::ScanTimeout,
    ErrorKind::ScanFailed,
    ErrorKind::StreamFailed,
    ErrorKind::StoreFailed,
    ErrorKind::ShardFailed,
];

/// Registers the engine-wide series at 0 (see [`ShardMetrics::new`]).
pub(crate) fn register_engine() {
    let _ = counter!(EVENTS_DROPPED);
    let _ = counter!(RULE_RELOADS);
}

/// Counts dropped match events.
pub(crate) fn events_dropped(count: u64) {
    counter!(EVENTS_DROPPED).increment(count);
}

/// Counts a rule's first match in a stream, in the per-rule counter.
pub(crate) fn rule_matched(namespace: &str, identifier: &str) {
    counter!(RULE_MATCHES_BY_RULE, "rule" => format!("{namespace}.{identifier}")).increment(1);
}

/// Counts a rule reload.
pub(crate) fn rule_reloaded() {
    counter!(RULE_RELOADS).increment(1);
}

/// HTTP requests served, by `route` (the route's pattern, never a stream
/// id) and `status` class (`2xx`, `4xx`, ...).
pub const HTTP_REQUESTS: &str = "yaraflow_http_requests_total";
/// HTTP request latency, by `route`.
pub const HTTP_REQUEST_DURATION: &str = "yaraflow_http_request_duration_seconds";

/// Records one served HTTP request.
pub fn http_request(route: &str, status: u16, elapsed: Duration) {
    let class = format!("{}xx", status / 100);
    counter!(HTTP_REQUESTS, "route" => route.to_string(), "status" => class).increment(1);
    histogram!(HTTP_REQUEST_DURATION, "route" => route.to_string()).record(elapsed.as_secs_f64());
}

/// Sets the [`RULES`] gauges to the classes of the rules now loaded.
pub fn record_rule_classes(classes: &crate::rules::RuleClasses) {
    for (class, count) in [
        ("stream_exact", classes.stream_exact),
        ("whole_data_gated", classes.whole_data_gated),
        ("whole_data_ungated", classes.whole_data_ungated),
        ("dense", classes.dense),
    ] {
        metrics::gauge!(RULES, "class" => class).set(count as f64);
    }
}

/// The metrics of a cluster worker (`yaraflow worker`), recorded from its
/// counters on every lease tick. No labels: one worker per process.
#[cfg(feature = "cluster")]
pub mod cluster {
    use metrics::{counter, gauge};

    use crate::cluster::WorkerStatsSnapshot;

    /// Partitions of the deployment (its configured count), so that an
    /// alert can compare them with those owned.
    pub const PARTITIONS: &str = "yaraflow_cluster_partitions";
    /// Partitions the worker owns now.
    pub const PARTITIONS_OWNED: &str = "yaraflow_cluster_partitions_owned";
    /// Messages not yet applied in the owned partitions.
    pub const LAG: &str = "yaraflow_cluster_lag_messages";
    /// Messages not yet applied in one owned partition (label `partition`;
    /// 0 once the worker no longer owns it).
    pub const PARTITION_LAG: &str = "yaraflow_cluster_partition_lag_messages";
    /// Age of the oldest checkpoint of an owned partition.
    pub const CHECKPOINT_AGE: &str = "yaraflow_cluster_checkpoint_age_seconds";
    /// Size of the last checkpoint written.
    pub const CHECKPOINT_BYTES: &str = "yaraflow_cluster_checkpoint_bytes";
    /// Time the last checkpoint took to cut and write.
    pub const CHECKPOINT_SECONDS: &str = "yaraflow_cluster_checkpoint_write_seconds";
    /// Checkpoints written to the object store (too large to be inline).
    pub const CHECKPOINT_OBJECTS: &str = "yaraflow_cluster_checkpoint_objects_total";
    /// Partitions taken over from a worker that did not hand them over.
    pub const TAKEOVERS: &str = "yaraflow_cluster_takeovers_total";
    /// Messages replayed after takeovers.
    pub const REPLAYED: &str = "yaraflow_cluster_replayed_messages_total";
    /// Match events published.
    pub const EVENTS: &str = "yaraflow_cluster_events_total";
    /// Messages applied.
    pub const APPLIED: &str = "yaraflow_cluster_applied_messages_total";
    /// Messages skipped: they did not decode, or came on another partition.
    pub const BAD_MESSAGES: &str = "yaraflow_cluster_bad_messages_total";
    /// Partitions dropped without a checkpoint.
    pub const PARTITIONS_LOST: &str = "yaraflow_cluster_partitions_lost_total";

    /// Every cluster metric with its type and help text.
    pub const ALL: &[(&str, &str, &str)] = &[
        (PARTITIONS, "gauge", "Partitions of the deployment"),
        (PARTITIONS_OWNED, "gauge", "Partitions this worker owns"),
        (LAG, "gauge", "Messages not yet applied in owned partitions"),
        (
            PARTITION_LAG,
            "gauge",
            "Messages not yet applied in one owned partition",
        ),
        (
            CHECKPOINT_AGE,
            "gauge",
            "Age of the oldest checkpoint of an owned partition",
        ),
        (
            CHECKPOINT_BYTES,
            "gauge",
            "Size of the last checkpoint written",
        ),
        (
            CHECKPOINT_SECONDS,
            "gauge",
            "Time the last checkpoint took to cut and write",
        ),
        (
            CHECKPOINT_OBJECTS,
            "counter",
            "Checkpoints written to the object store",
        ),
        (
            TAKEOVERS,
            "counter",
            "Partitions taken over from a failed worker",
        ),
        (REPLAYED, "counter", "Messages replayed after takeovers"),
        (APPLIED, "counter", "Messages applied"),
        (EVENTS, "counter", "Match events published"),
        (
            BAD_MESSAGES,
            "counter",
            "Messages skipped as undecodable or misrouted",
        ),
        (
            PARTITIONS_LOST,
            "counter",
            "Partitions dropped without a checkpoint",
        ),
    ];

    /// Records a worker's counters (`partitions`: the deployment's count).
    pub(crate) fn record(
        stats: &WorkerStatsSnapshot,
        partitions: u32,
        oldest_checkpoint_secs: f64,
    ) {
        gauge!(PARTITIONS).set(f64::from(partitions));
        gauge!(PARTITIONS_OWNED).set(stats.owned as f64);
        gauge!(LAG).set(stats.lag as f64);
        gauge!(CHECKPOINT_AGE).set(oldest_checkpoint_secs);
        gauge!(CHECKPOINT_BYTES).set(stats.checkpoint_bytes as f64);
        gauge!(CHECKPOINT_SECONDS).set(stats.checkpoint_micros as f64 / 1e6);
        counter!(CHECKPOINT_OBJECTS).absolute(stats.checkpoint_objects);
        counter!(TAKEOVERS).absolute(stats.takeovers);
        counter!(REPLAYED).absolute(stats.replayed);
        counter!(APPLIED).absolute(stats.applied);
        counter!(EVENTS).absolute(stats.events);
        counter!(BAD_MESSAGES).absolute(stats.bad_messages + stats.misrouted);
        counter!(PARTITIONS_LOST).absolute(stats.lost);
    }

    /// Records the lag of an owned partition (0 once it is given up).
    pub(crate) fn record_partition_lag(partition: u32, lag: u64) {
        gauge!(PARTITION_LAG, "partition" => partition.to_string()).set(lag as f64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ScanError;

    /// The label list is the scanner's error kinds and the shard's own
    /// three, each once: a new `ScanError` variant fails here until it is
    /// listed.
    #[test]
    fn scan_error_kinds_are_the_scanners_and_the_shards() {
        let stream = uuid::Uuid::nil();
        let scanner = [
            ScanError::TooManyStreams { stream, limit: 1 },
            ScanError::ChunkTooLarge {
                stream,
                len: 2,
                limit: 1,
            },
            ScanError::ModeMismatch {
                stream,
                opened: "chunk",
                attempted: "line",
            },
            ScanError::UnknownStream(stream),
            ScanError::AlreadyOpen(stream),
            ScanError::SearchFailed {
                stream,
                reason: String::new(),
                limit: None,
            },
            ScanError::BadExternal {
                stream,
                reason: String::new(),
            },
            ScanError::Yara(yara_x::ScanError::Timeout),
            ScanError::Yara(yara_x::ScanError::UnknownModule {
                module: String::new(),
            }),
        ];
        let mut expected: Vec<ErrorKind> = scanner.iter().map(ScanError::kind).collect();
        // Kept exhaustive: a new variant must be added to `scanner` above.
        for error in &scanner {
            match error {
                ScanError::TooManyStreams { .. }
                | ScanError::ChunkTooLarge { .. }
                | ScanError::ModeMismatch { .. }
                | ScanError::UnknownStream(_)
                | ScanError::AlreadyOpen(_)
                | ScanError::SearchFailed { .. }
                | ScanError::BadExternal { .. }
                | ScanError::Yara(_) => {}
            }
        }
        expected.extend([
            ErrorKind::StreamFailed,
            ErrorKind::StoreFailed,
            ErrorKind::ShardFailed,
        ]);
        assert_eq!(SCAN_ERROR_KINDS, expected.as_slice());
        let mut names: Vec<&str> = SCAN_ERROR_KINDS.iter().map(|k| k.as_str()).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), SCAN_ERROR_KINDS.len(), "a kind listed twice");
    }
}
