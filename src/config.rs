//! Limits and tuning of the multi-stream scanner, with defaults.
//!
//! Every limit is enforced with a typed [`crate::ScanError`]: going over one
//! rejects the offending call and leaves every stream's state as it was.

use std::time::Duration;

/// Configuration of a [`crate::MultiStreamScanner`].
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct ScannerConfig {
    /// Most streams open at once; opening one more fails with
    /// [`crate::ScanError::TooManyStreams`].
    pub max_open_streams: usize,
    /// Largest chunk (or line) accepted by one call.
    pub max_chunk_bytes: usize,
    /// Bytes buffered across all streams before a batch is searched. Larger
    /// batches amortise the per-batch harvest (one condition evaluation of
    /// the whole rule set) over more bytes.
    pub max_batch_bytes: usize,
    /// Longest time a buffered chunk waits before its batch is searched. It is
    /// checked when a chunk or line arrives and by
    /// [`crate::MultiStreamScanner::flush_if_due`], which a caller with idle
    /// periods should call on a timer.
    pub max_batch_delay: Duration,
    /// Most matches kept per pattern per stream (as YARA-X's
    /// `max_matches_per_pattern`).
    pub max_matches_per_pattern: usize,
    /// Most matched bytes reported per match in results.
    pub max_snippet_bytes: usize,
    /// Cap on the window: the longest match the scanner guarantees to find
    /// across chunk boundaries. Patterns that can match more bytes (or have
    /// no bound) make their rule inexact, as reported by rule analysis.
    pub max_pattern_len: usize,
    /// Timeout of one verdict evaluation, if any.
    pub scan_timeout: Option<Duration>,
}

impl Default for ScannerConfig {
    fn default() -> Self {
        ScannerConfig {
            max_open_streams: 1_000_000,
            max_chunk_bytes: 16 << 20,
            max_batch_bytes: 4 << 20,
            max_batch_delay: Duration::from_millis(100),
            max_matches_per_pattern: 1_000_000,
            max_snippet_bytes: 64,
            max_pattern_len: 1024,
            scan_timeout: None,
        }
    }
}
