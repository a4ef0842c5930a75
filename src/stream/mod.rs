//! The per-stream context: everything a stream keeps between its chunks.
//!
//! A [`StreamContext`] is plain data (it serializes with serde): counters,
//! the tail of the stream (the last bytes, rescanned with the next chunk so
//! that matches can span chunks), the head (the first bytes, for patterns
//! anchored at fixed offsets), the bytes buffered for the next batch, and
//! the replay spans of the matches found so far. It owns no YARA-X object:
//! opening a stream allocates a few small vectors and nothing else.

pub mod span;

use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use uuid::Uuid;

pub use span::{ReplaySpan, SpanSet};

/// How a stream is fed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StreamMode {
    /// Arbitrary byte chunks; matches may span chunks.
    Chunks,
    /// Whole lines; no match spans two lines.
    Lines,
}

impl StreamMode {
    /// A name for messages.
    pub fn name(self) -> &'static str {
        match self {
            StreamMode::Chunks => "chunk",
            StreamMode::Lines => "line",
        }
    }
}

/// Counters of one stream.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamStats {
    /// Bytes appended so far.
    pub bytes: u64,
    /// Lines appended (line mode) or newline bytes seen (chunk mode).
    pub lines: u64,
    /// Calls that appended data.
    pub chunks: u64,
    /// Pattern matches found so far (final ones; the matches still waiting
    /// for more bytes are counted when they settle).
    pub matches: u64,
    /// When the stream was opened, in milliseconds since the Unix epoch.
    pub opened_at_ms: u64,
    /// When the stream last received data, in milliseconds since the epoch.
    pub last_seen_ms: u64,
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// The state of one open stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamContext {
    /// The stream's id.
    pub id: Uuid,
    /// How the stream is fed.
    pub mode: StreamMode,
    /// Counters.
    pub stats: StreamStats,
    /// Stream offset where the buffered (not yet searched) bytes start.
    pub(crate) searched: u64,
    /// Newlines in the searched bytes (chunk mode).
    pub(crate) searched_newlines: u64,
    /// Lines searched so far (line mode).
    pub(crate) searched_lines: u64,
    /// The last bytes searched, rescanned with the next chunk.
    pub(crate) tail: Vec<u8>,
    /// The first bytes of the stream, for anchored patterns (chunk mode).
    pub(crate) head: Vec<u8>,
    /// Bytes waiting for the next batch.
    pub(crate) pending: Vec<u8>,
    /// Newlines in `pending` (chunk mode).
    pub(crate) pending_newlines: u64,
    /// Lengths of the lines in `pending` (line mode).
    pub(crate) pending_lines: Vec<usize>,
    /// Whether the stream is listed in the current batch.
    pub(crate) in_batch: bool,
    /// Whether the end of the searched bytes was last searched in a packed
    /// block, so the provisional spans are not known yet.
    pub(crate) tail_unsettled: bool,
    /// Spans of settled matches.
    pub(crate) settled: SpanSet,
    /// Spans of matches that touch the end of the data seen so far: right
    /// if the stream ends here, re-derived when more bytes come.
    pub(crate) provisional: SpanSet,
}

impl StreamContext {
    /// A new, empty stream.
    pub fn new(id: Uuid, mode: StreamMode) -> StreamContext {
        let now = now_ms();
        StreamContext {
            id,
            mode,
            stats: StreamStats {
                opened_at_ms: now,
                last_seen_ms: now,
                ..StreamStats::default()
            },
            searched: 0,
            searched_newlines: 0,
            searched_lines: 0,
            tail: Vec::new(),
            head: Vec::new(),
            pending: Vec::new(),
            pending_newlines: 0,
            pending_lines: Vec::new(),
            in_batch: false,
            tail_unsettled: false,
            settled: SpanSet::default(),
            provisional: SpanSet::default(),
        }
    }

    /// Buffers `data` for the next batch and updates the counters.
    pub(crate) fn append(&mut self, data: &[u8]) {
        self.pending.extend_from_slice(data);
        self.stats.bytes += data.len() as u64;
        self.stats.chunks += 1;
        self.stats.last_seen_ms = now_ms();
        match self.mode {
            StreamMode::Chunks => {
                let newlines = span::count_newlines(data);
                self.stats.lines += newlines;
                self.pending_newlines += newlines;
            }
            StreamMode::Lines => {
                self.stats.lines += 1;
                self.pending_lines.push(data.len());
            }
        }
    }

    /// Whether bytes are waiting for the next batch (an empty line counts).
    pub(crate) fn has_pending(&self) -> bool {
        !self.pending.is_empty() || !self.pending_lines.is_empty()
    }

    /// Approximate heap and inline bytes held by this context.
    pub fn memory_bytes(&self) -> usize {
        std::mem::size_of::<Self>()
            + self.tail.capacity()
            + self.head.capacity()
            + self.pending.capacity()
            + self.pending_lines.capacity() * std::mem::size_of::<usize>()
            + self.settled.byte_len()
            + self.provisional.byte_len()
    }
}
