//! The per-stream context: everything a stream keeps between its chunks.
//!
//! A [`StreamContext`] is plain data (it serializes with serde): counters,
//! the tail of the stream (the last bytes, rescanned with the next chunk so
//! that matches can span chunks), the head (the first bytes, for patterns
//! anchored at fixed offsets), the replay spans of the matches found so
//! far, and, while a whole-data rule may still match it, every byte it
//! received (see [`Retention`]). It
//! owns no YARA-X object: opening a stream allocates a few small vectors
//! and nothing else.

pub mod digests;
mod retention;
pub(crate) mod span;

use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::rules::preconditions::{FailedPreconditions, RuledOutSets};
use crate::rules::{External, HeadPlan, PreconditionPlan, TailPlan};

use digests::RunningDigests;
pub(crate) use retention::RetentionRoom;
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

/// Whether a chunk stream keeps its bytes for whole-data rules (rules that
/// stream scanning cannot evaluate exactly) or dense ones (see
/// [`crate::rules::WholeDataPlan`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Retention {
    /// No whole-data or dense rule applies: the rule set has none, or the
    /// stream is a line stream (whose verdicts scan each line alone).
    Off,
    /// Every byte is kept: the verdict of whole-data rules is a whole-buffer
    /// scan of them.
    Retaining,
    /// Every whole-data rule's gate failed: all of them are false, exactly,
    /// and nothing is kept (also where only dense rules kept the bytes,
    /// and they gave way: see `stream::retention`).
    Gated,
    /// A limit stopped the retention: the per-stream cap or the scanner's
    /// budget. Only the first bytes the gates read are kept; whole-data
    /// rules whose gate passes are undecided.
    Cut {
        /// Which limit.
        limit: RetentionLimit,
    },
}

/// The limit that stopped a stream's retention.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RetentionLimit {
    /// `ScannerConfig::max_retained_stream_bytes`.
    StreamCap,
    /// `ScannerConfig::max_retained_bytes`, over all streams.
    Budget,
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
    /// Matches the search settled so far, of every pattern: private ones
    /// and those of rules that do not match count too (the same bytes
    /// matched by patterns of different lengths count once per length).
    /// Not counted: the matches of patterns anchored with `at N` in the
    /// head (found by replaying it, not by the search), and the last ones
    /// near the end of the data (they settle when more bytes come, or stay
    /// provisional at close). So
    /// it is the search's work, not the verdict's matches: those are listed
    /// under each matching rule's patterns. Anchors past the head count
    /// where the stream has their first bytes (`rules::head::FarAnchor`),
    /// whether or not the rest matches.
    pub matches: u64,
    /// When the stream was opened, in milliseconds since the Unix epoch.
    pub opened_at_ms: u64,
    /// When the stream last received data, in milliseconds since the epoch.
    pub last_seen_ms: u64,
}

/// Milliseconds since the Unix epoch, by the wall clock.
///
/// Read once per chunk (a stream's last-seen time, a batch's delay). On
/// Linux it is the coarse clock (`CLOCK_REALTIME_COARSE`, the time of the
/// last timer tick, a few milliseconds behind at most), which costs a load
/// where the precise one cost about 60 ns on a virtual machine: 3% of the
/// scanner's time with packet-sized chunks.
pub fn now_ms() -> u64 {
    #[cfg(target_os = "linux")]
    {
        let mut now = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: clock_gettime only writes the timespec it is given.
        if unsafe { libc::clock_gettime(libc::CLOCK_REALTIME_COARSE, &mut now) } == 0 {
            return now.tv_sec as u64 * 1000 + now.tv_nsec as u64 / 1_000_000;
        }
    }
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// The state of one open stream.
///
/// The bytes a stream receives go straight into the scanner's current batch
/// (see `scanner::batch`); the context keeps only what later chunks and the
/// verdict need.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamContext {
    /// The stream's id.
    pub id: Uuid,
    /// How the stream is fed.
    pub mode: StreamMode,
    /// Counters. `bytes` is also the offset where the next chunk starts, and
    /// `lines` the index of the next line (line mode).
    pub stats: StreamStats,
    /// Tells this incarnation of the stream from earlier ones (before a
    /// reset, or a close and reopen): batch segments of another epoch are
    /// ignored.
    pub(crate) epoch: u64,
    /// The last bytes of the stream, rescanned with the next chunk (chunk
    /// mode).
    pub(crate) tail: Vec<u8>,
    /// The first bytes of the stream, for anchored patterns (chunk mode).
    pub(crate) head: Vec<u8>,
    /// Whether the stream has bytes in the current batch.
    pub(crate) in_batch: bool,
    /// Whether its last segment in the current batch is a block of its
    /// own that ends where the stream does (its first chunk, say): that
    /// search sees the stream's end as the end of the data, so a verdict
    /// needs no rescan of the tail. (Not stored: a stream leaves for the
    /// store only once its bytes were searched.)
    #[serde(skip)]
    pub(crate) batch_ends_standalone: bool,
    /// The index of its last segment in the current batch, while
    /// `in_batch` (its next chunk joins that segment).
    #[serde(skip)]
    pub(crate) batch_segment: usize,
    /// Whether the end of the stream was last searched inside a packed
    /// block, so that `provisional` is not known.
    pub(crate) tail_unsettled: bool,
    /// Whether the stream keeps its bytes for whole-data rules.
    pub(crate) retention: Retention,
    /// Its bytes from offset 0 while `retention` is `Retaining`; the first
    /// ones the gates read when it is `Cut`; nothing otherwise.
    pub(crate) retained: Vec<u8>,
    /// Its bytes have not been searched yet: it retains them all, and
    /// they are searched once, from offset 0, when it stops retaining or
    /// its verdict needs its matches; a verdict that is a whole-buffer
    /// scan of them needs no search at all. Only while `Retaining`.
    pub(crate) deferred: bool,
    /// Running digests of every byte so far, for the rules that compare
    /// the digest of the whole data (`hash.md5(0, filesize)`, see
    /// `rules::data_values`); chunk mode only.
    pub(crate) digests: Option<Box<RunningDigests>>,
    /// The stream's own values of its rules' external variables (a file's
    /// name, say), set over the rule set's for its verdicts.
    pub(crate) externals: Box<[External]>,
    /// Spans of settled matches.
    pub(crate) settled: SpanSet,
    /// Spans of matches that touch the end of the data seen so far: right
    /// if the stream ends here, re-derived when more bytes come.
    pub(crate) provisional: SpanSet,
    /// The match reads (see `rules::match_reads`) that held on one of its
    /// settled matches, one bit each (chunk mode).
    pub(crate) match_reads: u64,
    /// Those that held on one of its provisional matches: voided with them.
    pub(crate) provisional_match_reads: u64,
    /// Where the stream stood when its copy in the engine's store was last
    /// written durably: what a producer need not send again after a
    /// crash. Kept by the engine, not stored.
    #[serde(skip)]
    pub(crate) durable: Option<DurableMark>,
    /// Why a search of the stream's bytes failed (YARA-X timed out over
    /// its batch), if one did: its bytes were not all searched, so it
    /// takes no more data and has no verdict. Never stored (a broken
    /// stream is not evicted).
    #[serde(skip)]
    pub(crate) broken: Option<std::sync::Arc<str>>,
    /// The rules' preconditions its first bytes failed (see
    /// `rules::preconditions`): the search drops their rules' matches.
    /// Decided from the first bytes while they are all at hand; not
    /// stored: a restored stream decides again from its head.
    #[serde(skip)]
    pub(crate) ruled_out: FailedPreconditions,
}

/// What a chunk stream keeps of its first bytes.
#[derive(Debug, Clone, Copy)]
pub(crate) struct HeadKeep<'a> {
    /// Bytes kept while an anchored match may be among them (see
    /// `scanner::batch::Window::head_keep`).
    pub len: usize,
    /// Bytes kept once none can be: what the rules' header reads need.
    pub values_len: usize,
    /// The anchored patterns.
    pub plan: &'a HeadPlan,
}

#[cfg(test)]
impl HeadKeep<'static> {
    /// Keeps a stream's first `len` bytes, for rules that anchor nothing.
    pub(crate) fn first(len: usize) -> HeadKeep<'static> {
        static NO_ANCHORS: std::sync::LazyLock<HeadPlan> =
            std::sync::LazyLock::new(HeadPlan::default);
        HeadKeep {
            len,
            values_len: len,
            plan: &NO_ANCHORS,
        }
    }
}

/// Where a stream stood when it was last written to the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct DurableMark {
    /// `stats.bytes` then.
    pub bytes: u64,
    /// `stats.lines` then.
    pub lines: u64,
    /// `stats.chunks` then: an empty line changes a stream without changing
    /// its offset, and this tells it.
    pub chunks: u64,
}

impl StreamContext {
    /// A new, empty stream; `retention` is `Retaining` when the rules have
    /// whole-data or dense rules, `Off` otherwise (and always for a line
    /// stream).
    pub(crate) fn new(
        id: Uuid,
        mode: StreamMode,
        epoch: u64,
        retention: Retention,
    ) -> StreamContext {
        let now = now_ms();
        StreamContext {
            id,
            mode,
            stats: StreamStats {
                opened_at_ms: now,
                last_seen_ms: now,
                ..StreamStats::default()
            },
            epoch,
            tail: Vec::new(),
            head: Vec::new(),
            in_batch: false,
            batch_ends_standalone: false,
            batch_segment: 0,
            tail_unsettled: false,
            retention: match mode {
                StreamMode::Lines => Retention::Off,
                StreamMode::Chunks => retention,
            },
            retained: Vec::new(),
            deferred: false,
            digests: None,
            externals: Box::default(),
            settled: SpanSet::default(),
            provisional: SpanSet::default(),
            match_reads: 0,
            provisional_match_reads: 0,
            durable: None,
            broken: None,
            ruled_out: FailedPreconditions::default(),
        }
    }

    /// Counts appended bytes, and in chunk mode moves the tail and grows
    /// the head (as `tail` and `head` say) unless the stream's search is
    /// deferred. `now_ms` is the time the data came.
    pub(crate) fn record(
        &mut self,
        data: &[u8],
        tail: &TailPlan,
        head: &HeadKeep<'_>,
        now_ms: u64,
    ) {
        self.stats.bytes += data.len() as u64;
        self.stats.chunks += 1;
        self.stats.last_seen_ms = now_ms;
        match self.mode {
            StreamMode::Lines => self.stats.lines += 1,
            StreamMode::Chunks => {
                self.stats.lines += span::count_newlines(data);
                if let Some(digests) = &mut self.digests {
                    digests.update(data);
                }
                if !self.deferred {
                    self.keep_edges(data, tail, head);
                }
            }
        }
    }

    /// Moves the tail (as the plan says) and grows the head (or cuts it,
    /// see [`Self::grow_head`]) over `data`, the bytes that follow the ones
    /// they were kept from. A deferred stream keeps neither: it retains
    /// every byte, and gets both from them when it is searched.
    pub(crate) fn keep_edges(&mut self, data: &[u8], plan: &TailPlan, head: &HeadKeep<'_>) {
        self.grow_head(data, head);
        // The plan reads at most the last `most` bytes.
        let most = plan.most();
        let new = &data[data.len().saturating_sub(most)..];
        let old =
            &self.tail[self.tail.len() - most.saturating_sub(new.len()).min(self.tail.len())..];
        let keep = match old.is_empty() {
            true => plan.keep(new, &self.ruled_out),
            false => plan.keep(&[old, new].concat(), &self.ruled_out),
        };
        let from_old = keep.saturating_sub(new.len());
        if from_old == 0 && self.tail.capacity() == keep {
            // The usual case: a chunk longer than the tail, whose length
            // is unchanged; its allocation is reused.
            self.tail.clear();
            self.tail.extend_from_slice(&new[new.len() - keep..]);
            return;
        }
        // A new tail of exact capacity: idle streams hold no slack.
        let mut tail = Vec::with_capacity(keep);
        tail.extend_from_slice(&old[old.len() - from_old..]);
        tail.extend_from_slice(&new[new.len() - (keep - from_old)..]);
        self.tail = tail;
    }

    /// Grows the head over `data`, the stream's last bytes, while it holds
    /// every byte before them (a head cut short stays so), and cuts it to
    /// what header reads need once no anchored match can be in it.
    fn grow_head(&mut self, data: &[u8], head: &HeadKeep<'_>) {
        let before = self.stats.bytes - data.len() as u64;
        if self.head.len() as u64 != before || self.head.len() >= head.len {
            return;
        }
        let room = (head.len - self.head.len()).min(data.len());
        self.head.extend_from_slice(&data[..room]);
        if self.head.len() > head.values_len && head.plan.rules_out(&self.head) {
            self.head.truncate(head.values_len);
            self.head.shrink_to_fit();
        }
    }

    /// Where the stream stands now, as a [`DurableMark`].
    #[cfg(feature = "engine")]
    pub(crate) fn mark(&self) -> DurableMark {
        DurableMark {
            bytes: self.stats.bytes,
            lines: self.stats.lines,
            chunks: self.stats.chunks,
        }
    }

    /// Whether the stream changed since it was last written to the store
    /// (or was never written).
    #[cfg(feature = "engine")]
    pub(crate) fn changed_since_written(&self) -> bool {
        self.durable != Some(self.mark())
    }

    /// Stream offset of the first byte of the tail.
    pub(crate) fn tail_start(&self) -> u64 {
        self.stats.bytes - self.tail.len() as u64
    }

    /// Decides which preconditions the stream fails, given `data`, its
    /// bytes after those counted so far, when all of its first bytes are
    /// at hand (its tail still starts at offset 0). A later decision sees
    /// more bytes, and fails a superset.
    pub(crate) fn rule_out(
        &mut self,
        data: &[u8],
        plan: &PreconditionPlan,
        sets: &mut RuledOutSets,
    ) {
        if plan.is_empty() || self.tail_start() > 0 {
            return;
        }
        let want = plan.prefix_len();
        let mut prefix = self.tail[..self.tail.len().min(want)].to_vec();
        prefix.extend_from_slice(&data[..data.len().min(want - prefix.len())]);
        let len = self.stats.bytes + data.len() as u64;
        self.ruled_out.0 = plan.failed(&prefix, len, sets);
    }

    /// [`Self::rule_out`] for a stream whose bytes from offset 0 are all
    /// in `bytes` (its deferred search).
    pub(crate) fn rule_out_by_all(
        &mut self,
        bytes: &[u8],
        plan: &PreconditionPlan,
        sets: &mut RuledOutSets,
    ) {
        self.ruled_out.0 = plan.failed(bytes, bytes.len() as u64, sets);
    }

    /// [`Self::rule_out`] for a stream restored from a store, from the
    /// first bytes its head keeps (perhaps fewer than the tests read:
    /// then it fails fewer, which costs memory, never a verdict).
    pub(crate) fn rule_out_by_head(&mut self, plan: &PreconditionPlan, sets: &mut RuledOutSets) {
        if self.mode == StreamMode::Chunks {
            self.ruled_out.0 = plan.failed(&self.head, self.stats.bytes, sets);
        }
    }

    /// 1-based line number of the first byte of the tail (chunk mode).
    pub(crate) fn tail_first_line(&self) -> u64 {
        1 + self.stats.lines - span::count_newlines(&self.tail)
    }

    /// What this context costs in memory, estimated: its slot in the
    /// scanner's map (key, a pointer to the boxed context and a control
    /// byte, with the map's spare room: a map is between 7/16 and 7/8
    /// full), the box, and its heap allocations (with the allocator's
    /// rounding and header). The resident bounds of the stream store count
    /// this; `yaraflow bench-store` shows how it compares with the
    /// process's resident memory.
    pub fn memory_bytes(&self) -> usize {
        const SLOT: usize =
            (std::mem::size_of::<Uuid>() + std::mem::size_of::<usize>() + 1) * 3 / 2;
        SLOT + allocation_bytes(std::mem::size_of::<StreamContext>())
            + self.buffer_bytes()
            + self.settled.heap_bytes()
            + self.provisional.heap_bytes()
            + self.externals_bytes()
            + self.digests.as_ref().map_or(0, |d| d.heap_bytes())
    }

    /// The stream's own externals (see [`crate::FileInfo`]).
    pub fn externals(&self) -> &[External] {
        &self.externals
    }

    /// What its externals take on the heap.
    fn externals_bytes(&self) -> usize {
        let values: usize = self
            .externals
            .iter()
            .map(|e| {
                let text = match &e.value {
                    crate::ExternalValue::String(text) => text.capacity(),
                    _ => 0,
                };
                allocation_bytes(e.name.capacity()) + allocation_bytes(text)
            })
            .sum();
        allocation_bytes(self.externals.len() * std::mem::size_of::<External>()) + values
    }

    /// The part of [`Self::memory_bytes`] that appending changes: the
    /// tail's, the head's and the retained bytes' allocations.
    pub(crate) fn buffer_bytes(&self) -> usize {
        allocation_bytes(self.tail.capacity())
            + allocation_bytes(self.head.capacity())
            + allocation_bytes(self.retained.capacity())
    }
}

/// What a heap allocation of `capacity` bytes costs: glibc's malloc rounds
/// to 16 bytes and adds an 8-byte header (none for an empty `Vec`).
pub(crate) fn allocation_bytes(capacity: usize) -> usize {
    match capacity {
        0 => 0,
        n => (n + 8).next_multiple_of(16),
    }
}
