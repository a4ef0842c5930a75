//! The contenders of `yaraflow bench`, each run on the same [`Workload`]:
//!
//! 1. [`whole_buffer`]: one `yara_x::Scanner` scanning each stream's whole
//!    data at once: the ceiling (and the reference verdicts);
//! 2. [`blocks_per_stream`]: one `yara_x::blocks::Scanner` per stream fed
//!    each chunk with the bytes before it as overlap (the simple design);
//!    each holds a WASM instance, so it runs on at most `cap` streams;
//! 3. [`multi_stream`]: yaraflow's single-threaded [`MultiStreamScanner`];
//! 4. [`engine`]: yaraflow's actor engine with N shards, fed in bursts.
//!
//! Each returns an [`Outcome`]: time, memory per open stream, open and
//! close cost, chunk latency where it applies, and a fingerprint of each
//! stream's verdict (the names of the matching rules) to compare with the
//! reference. Closes are grouped 64 at a time where the API allows, as a
//! caller closing many streams would.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use uuid::Uuid;

use super::workload::{Step, Workload};
use crate::{Engine, EngineConfig, MultiStreamScanner, RuleSet, ScannerConfig, StreamResults};

/// Chunks between two latency samples (timing every call would cost more
/// than some calls).
const SAMPLE_EVERY: usize = 16;
/// Streams closed together, and chunks sent together to the engine.
const GROUP: usize = 64;
/// Streams opened and closed one by one for the open and close costs.
const COST_STREAMS: usize = 10_000;

/// What a contender measured.
#[derive(Debug, Clone, Default)]
pub struct Outcome {
    /// Its name.
    pub name: String,
    /// Streams it ran on (fewer than the workload's when capped).
    pub streams: usize,
    /// Bytes it scanned.
    pub bytes: u64,
    /// Time it took.
    pub seconds: f64,
    /// Resident bytes per open stream, halfway through.
    pub rss_bytes_per_stream: Option<f64>,
    /// Cost of opening a stream.
    pub open_ns_per_stream: Option<f64>,
    /// Cost of closing a stream that matched nothing.
    pub close_ns_per_stream: Option<f64>,
    /// The same, per stream, when closed `GROUP` at a time.
    pub bulk_close_ns_per_stream: Option<f64>,
    /// 99th percentile of the time a chunk call took.
    pub p99_chunk_latency_us: Option<f64>,
    /// A fingerprint of each stream's verdict, by stream index.
    pub verdicts: Vec<u64>,
    /// What the reader should know (a cap, what a figure means).
    pub note: Option<String>,
}

impl Outcome {
    /// Megabytes (10^6 bytes) per second.
    pub fn mb_per_s(&self) -> f64 {
        self.bytes as f64 / self.seconds.max(1e-9) / 1e6
    }
}

/// Gives the memory freed by earlier contenders back to the system, so
/// that the next contender's growth in resident memory is its own (glibc
/// keeps freed pages otherwise, and reuses them without growing).
pub fn release_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only returns free heap pages to the system; it
    // takes no pointer and has no precondition.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Resident memory of this process, in bytes (0 where unknown).
pub fn resident_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let resident = statm
        .split_whitespace()
        .nth(1)
        .and_then(|f| f.parse::<u64>().ok());
    resident.unwrap_or(0) * 4096
}

/// A verdict's fingerprint: FNV-1a over the sorted names of its rules.
pub fn fingerprint<'a>(rules: impl Iterator<Item = &'a str>) -> u64 {
    let mut names: Vec<&str> = rules.collect();
    names.sort_unstable();
    let mut hash = 0xcbf2_9ce4_8422_2325u64;
    for byte in names.join("\0").bytes() {
        hash = (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3);
    }
    hash
}

fn fingerprint_of(results: &StreamResults) -> u64 {
    fingerprint(results.rules.iter().map(|r| r.identifier.as_str()))
}

/// The id of stream `index` (its index, recoverable from the id).
fn stream_id(index: usize) -> Uuid {
    Uuid::from_u128(0x7961_7261_666c_6f77_0000_0000_0000_0000 | index as u128)
}

fn stream_index(id: &Uuid) -> usize {
    (id.as_u128() & 0xffff_ffff_ffff_ffff) as usize
}

/// Chunk call durations, sampled.
#[derive(Default)]
struct Latencies(Vec<Duration>);

impl Latencies {
    fn p99_us(mut self) -> Option<f64> {
        if self.0.is_empty() {
            return None;
        }
        self.0.sort_unstable();
        let at = (self.0.len() * 99 / 100).min(self.0.len() - 1);
        Some(self.0[at].as_secs_f64() * 1e6)
    }
}

/// Resident bytes per open stream, taken once, halfway through the
/// schedule.
struct MemoryProbe {
    before: u64,
    halfway: usize,
    per_stream: Option<f64>,
}

impl MemoryProbe {
    fn new(steps: usize) -> MemoryProbe {
        release_freed_memory();
        MemoryProbe {
            before: resident_bytes(),
            halfway: steps / 2,
            per_stream: None,
        }
    }

    fn at(&mut self, step: usize, open: impl FnOnce() -> usize) {
        if step == self.halfway && self.per_stream.is_none() {
            let grown = resident_bytes().saturating_sub(self.before);
            self.per_stream = Some(grown as f64 / open().max(1) as f64);
        }
    }
}

/// 1. Each stream's whole data scanned at once: the ceiling.
pub fn whole_buffer(
    rules: &yara_x::Rules,
    workload: &Workload,
) -> Result<Outcome, yara_x::ScanError> {
    let mut scanner = yara_x::Scanner::new(rules);
    let mut verdicts = Vec::with_capacity(workload.streams());
    let started = Instant::now();
    for index in 0..workload.streams() {
        let results = scanner.scan(workload.stream(index))?;
        verdicts.push(fingerprint(
            results.matching_rules().map(|r| r.identifier()),
        ));
    }
    Ok(Outcome {
        name: "yara-x whole buffer per stream".into(),
        streams: workload.streams(),
        bytes: workload.bytes(),
        seconds: started.elapsed().as_secs_f64(),
        verdicts,
        note: Some("the reference: each stream's bytes scanned as one buffer".into()),
        ..Outcome::default()
    })
}

/// 1b. What a user without yaraflow does with streams: each stream's
///     chunks appended to a buffer of its own as they arrive
///     (interleaved), the buffer scanned whole when the stream ends. It
///     pays what the reference does not: holding every open stream's bytes.
pub fn buffered_whole_buffer(
    rules: &yara_x::Rules,
    workload: &Workload,
) -> Result<Outcome, yara_x::ScanError> {
    release_freed_memory();
    let mut scanner = yara_x::Scanner::new(rules);
    let mut buffers: Vec<Vec<u8>> = vec![Vec::new(); workload.streams()];
    let mut verdicts = vec![0; workload.streams()];
    let started = Instant::now();
    for step in workload.schedule() {
        let index = step.stream as usize;
        buffers[index].extend_from_slice(workload.chunk(step));
        if step.last {
            let data = std::mem::take(&mut buffers[index]);
            let results = scanner.scan(&data)?;
            verdicts[index] = fingerprint(results.matching_rules().map(|r| r.identifier()));
        }
    }
    Ok(Outcome {
        name: "yara-x, each stream buffered, then whole".into(),
        streams: workload.streams(),
        bytes: workload.bytes(),
        seconds: started.elapsed().as_secs_f64(),
        verdicts,
        note: Some(
            "each stream's chunks appended to its own buffer as they arrive, scanned whole at its end: the alternative to yaraflow"
                .into(),
        ),
        ..Outcome::default()
    })
}

/// Scans the first `streams` streams whole, untimed: the first pass over
/// the pool pays for cold caches and pages, which no contender should.
pub fn warm_up(
    rules: &yara_x::Rules,
    workload: &Workload,
    streams: usize,
) -> Result<(), yara_x::ScanError> {
    let mut scanner = yara_x::Scanner::new(rules);
    for index in 0..workload.streams().min(streams) {
        scanner.scan(workload.stream(index))?;
    }
    Ok(())
}

/// 2. One `blocks::Scanner` per stream, on the first `cap` streams; each
///    chunk is scanned with up to `overlap` bytes before it, so that a
///    pattern of up to `overlap + 1` bytes is found across chunks.
pub fn blocks_per_stream(
    rules: &yara_x::Rules,
    workload: &Workload,
    cap: usize,
    overlap: usize,
) -> Result<Outcome, yara_x::ScanError> {
    let covered = workload.streams().min(cap);
    let steps: Vec<&Step> = workload
        .schedule()
        .iter()
        .filter(|s| (s.stream as usize) < covered)
        .collect();
    let mut scanners: Vec<Option<yara_x::blocks::Scanner>> = (0..covered).map(|_| None).collect();
    let mut verdicts = vec![0; covered];
    let (mut open_time, mut close_time, mut open) = (Duration::ZERO, Duration::ZERO, 0usize);
    let mut latencies = Latencies::default();
    let mut memory = MemoryProbe::new(steps.len());
    let started = Instant::now();
    for (n, step) in steps.iter().enumerate() {
        let index = step.stream as usize;
        if scanners[index].is_none() {
            let opening = Instant::now();
            scanners[index] = Some(yara_x::blocks::Scanner::new(rules));
            open_time += opening.elapsed();
            open += 1;
        }
        let scanner = scanners[index].as_mut().expect("opened above");
        let from = (step.offset as usize).saturating_sub(overlap);
        let end = (step.offset + step.len) as usize;
        let timed = (n % SAMPLE_EVERY == 0).then(Instant::now);
        scanner.scan(from, &workload.stream(index)[from..end])?;
        latencies.0.extend(timed.map(|t| t.elapsed()));
        memory.at(n, || open);
        if step.last {
            let closing = Instant::now();
            let results = scanner.finish()?;
            verdicts[index] = fingerprint(results.matching_rules().map(|r| r.identifier()));
            scanners[index] = None;
            close_time += closing.elapsed();
            open -= 1;
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    let bytes = (0..covered).map(|i| workload.stream(i).len() as u64).sum();
    Ok(Outcome {
        name: "yara-x blocks::Scanner per stream".into(),
        streams: covered,
        bytes,
        seconds,
        rss_bytes_per_stream: memory.per_stream,
        open_ns_per_stream: Some(open_time.as_nanos() as f64 / covered.max(1) as f64),
        close_ns_per_stream: Some(close_time.as_nanos() as f64 / covered.max(1) as f64),
        bulk_close_ns_per_stream: None,
        p99_chunk_latency_us: latencies.p99_us(),
        verdicts,
        note: (covered < workload.streams()).then(|| {
            format!(
                "capped at {covered} of {} streams (each scanner is a WASM instance with its own memory mappings; --blocks-cap)",
                workload.streams()
            )
        }),
    })
}

/// The default configuration, with room for every stream of the workload
/// open at once (the default caps a scanner at a million).
fn scanner_config(workload: &Workload, eager_search: bool) -> ScannerConfig {
    let config = ScannerConfig::default();
    ScannerConfig {
        max_open_streams: config.max_open_streams.max(workload.streams()),
        eager_search,
        ..config
    }
}

/// 3. yaraflow's single-threaded scanner, on a thread it has to itself
///    ([`MultiStreamScanner::claim_its_thread`], as an engine shard's).
///
/// `eager_search`: see [`ScannerConfig::eager_search`].
pub fn multi_stream(
    rules: &RuleSet,
    workload: &Workload,
    eager_search: bool,
) -> Result<Outcome, crate::ScanError> {
    let mut scanner = MultiStreamScanner::new(rules, scanner_config(workload, eager_search));
    scanner.claim_its_thread();
    let mut verdicts = vec![0; workload.streams()];
    let mut ended = Vec::with_capacity(GROUP);
    let mut latencies = Latencies::default();
    let mut memory = MemoryProbe::new(workload.schedule().len());
    let started = Instant::now();
    for (n, step) in workload.schedule().iter().enumerate() {
        let id = stream_id(step.stream as usize);
        let timed = (n % SAMPLE_EVERY == 0).then(Instant::now);
        scanner.scan_chunk(id, workload.chunk(step))?;
        latencies.0.extend(timed.map(|t| t.elapsed()));
        memory.at(n, || scanner.stats().open_streams);
        if step.last {
            ended.push(id);
        }
        if ended.len() >= GROUP || n + 1 == workload.schedule().len() {
            for results in scanner.close_streams(&ended)? {
                verdicts[stream_index(&results.stream)] = fingerprint_of(&results);
            }
            ended.clear();
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    let stats = scanner.stats();
    let mean_batch_kb = stats.searched_bytes / stats.batches.max(1) / 1000;
    let costs = open_and_close_costs(rules, workload)?;
    Ok(Outcome {
        name: "yaraflow multi-stream scanner (1 thread)".into(),
        streams: workload.streams(),
        bytes: workload.bytes(),
        seconds,
        rss_bytes_per_stream: memory.per_stream,
        open_ns_per_stream: Some(costs.open_ns),
        close_ns_per_stream: costs.close_ns,
        bulk_close_ns_per_stream: costs.bulk_close_ns,
        p99_chunk_latency_us: latencies.p99_us(),
        verdicts,
        note: Some(format!(
            "claims its thread; closes {GROUP} at a time; {} batches searched, {mean_batch_kb} KB each on average (tails included); open/close costs: {} streams opened, given one chunk, searched, then closed one by one (close ns) and {GROUP} at a time (bulk close ns)",
            stats.batches,
            COST_STREAMS.min(workload.streams())
        )),
    })
}

/// Per-stream costs of the scanner's calls outside the search.
struct StreamCosts {
    open_ns: f64,
    /// Closing a stream that matched nothing, one call each (`None`: every
    /// stream matched).
    close_ns: Option<f64>,
    /// The same, `GROUP` streams per call (`close_streams`).
    bulk_close_ns: Option<f64>,
}

/// The cost of opening a stream, and of closing one that matched nothing
/// (its bytes already searched), one call at a time and `GROUP` at a time.
/// Each stream gets one chunk: the workload's first chunks, cycled; the
/// streams closed in bulk get those of the streams closed alone that
/// matched nothing.
fn open_and_close_costs(
    rules: &RuleSet,
    workload: &Workload,
) -> Result<StreamCosts, crate::ScanError> {
    let mut scanner = MultiStreamScanner::new(rules, ScannerConfig::default());
    scanner.claim_its_thread();
    let count = COST_STREAMS.min(workload.streams());
    let ids = |round: usize| -> Vec<Uuid> {
        (0..count)
            .map(|i| stream_id(workload.streams() + round * count + i))
            .collect()
    };
    let (alone, bulk) = (ids(0), ids(1));
    let started = Instant::now();
    for id in &alone {
        scanner.open_stream(*id, crate::StreamMode::Chunks)?;
    }
    let open = started.elapsed();
    let first_chunks: Vec<&Step> = workload.schedule().iter().take(count).collect();
    feed_one_chunk_each(&mut scanner, workload, &alone, &first_chunks)?;
    let mut alone_cost = CloseCost::default();
    let mut quiet_chunks = Vec::new();
    for (n, id) in alone.iter().enumerate() {
        let started = Instant::now();
        let results = scanner.close_stream(id)?;
        if alone_cost.add(started.elapsed(), results.iter()) {
            quiet_chunks.push(first_chunks[n % first_chunks.len()]);
        }
    }
    let mut bulk_cost = CloseCost::default();
    if !quiet_chunks.is_empty() {
        feed_one_chunk_each(&mut scanner, workload, &bulk, &quiet_chunks)?;
        for group in bulk.chunks(GROUP) {
            let started = Instant::now();
            let results = scanner.close_streams(group)?;
            bulk_cost.add(started.elapsed(), results.iter());
        }
    }
    Ok(StreamCosts {
        open_ns: open.as_nanos() as f64 / count.max(1) as f64,
        close_ns: alone_cost.per_stream_ns(),
        bulk_close_ns: bulk_cost.per_stream_ns(),
    })
}

/// One chunk to each stream (`chunks`, cycled), every byte searched.
fn feed_one_chunk_each(
    scanner: &mut MultiStreamScanner<'_>,
    workload: &Workload,
    ids: &[Uuid],
    chunks: &[&Step],
) -> Result<(), crate::ScanError> {
    for (n, id) in ids.iter().enumerate() {
        scanner.scan_chunk(*id, workload.chunk(chunks[n % chunks.len()]))?;
    }
    scanner.flush()
}

/// Time spent closing streams that matched nothing. A call that closed one
/// that matched counts wholly to neither (its share cannot be told).
#[derive(Default)]
struct CloseCost {
    time: Duration,
    streams: usize,
}

impl CloseCost {
    /// Counts a call that took `took` to close `closed`; whether it did
    /// (all of them matched nothing).
    fn add<'a>(&mut self, took: Duration, closed: impl Iterator<Item = &'a StreamResults>) -> bool {
        let closed: Vec<&StreamResults> = closed.collect();
        let quiet = !closed.is_empty() && closed.iter().all(|r| r.rules.is_empty());
        if quiet {
            self.time += took;
            self.streams += closed.len();
        }
        quiet
    }

    /// `None` when no stream that matched nothing was closed (every one
    /// matched: a rule such as yara-rules' `domain` matches any text).
    fn per_stream_ns(&self) -> Option<f64> {
        (self.streams > 0).then(|| self.time.as_nanos() as f64 / self.streams as f64)
    }
}

/// 4. yaraflow's engine with `shards` shards, fed in bursts of 64 chunks.
///    `rules` makes the engine's own copy of the rules.
pub fn engine(
    rules: impl FnOnce() -> RuleSet,
    workload: &Workload,
    shards: usize,
    eager_search: bool,
) -> Result<Outcome, crate::EngineError> {
    let config = EngineConfig {
        shards,
        overload_after: None,
        scanner: scanner_config(workload, eager_search),
        ..EngineConfig::default()
    };
    let engine = Engine::start(rules(), config)?;
    let handle = engine.handle().blocking();
    let mut verdicts = vec![0; workload.streams()];
    let mut burst = Vec::with_capacity(GROUP);
    let mut ended = Vec::with_capacity(GROUP);
    let mut memory = MemoryProbe::new(workload.schedule().len());
    let cpu_before = (
        cpu_seconds(libc::CLOCK_THREAD_CPUTIME_ID),
        cpu_seconds(libc::CLOCK_PROCESS_CPUTIME_ID),
    );
    let started = Instant::now();
    for (n, step) in workload.schedule().iter().enumerate() {
        let id = stream_id(step.stream as usize);
        burst.push((id, workload.chunk_bytes(step)));
        if step.last {
            ended.push(id);
        }
        let end = n + 1 == workload.schedule().len();
        if burst.len() >= GROUP || ended.len() >= GROUP || end {
            handle.scan_chunks(std::mem::take(&mut burst))?;
        }
        if ended.len() >= GROUP || end {
            for closed in handle.close_streams(&ended) {
                let results = closed?.ok_or(crate::EngineError::ShuttingDown)?;
                verdicts[stream_index(&results.stream)] = fingerprint_of(&results);
            }
            ended.clear();
        }
        memory.at(n, || handle.stats().map_or(0, |s| s.open_streams()));
    }
    let seconds = started.elapsed().as_secs_f64();
    let producer = cpu_seconds(libc::CLOCK_THREAD_CPUTIME_ID) - cpu_before.0;
    let process = cpu_seconds(libc::CLOCK_PROCESS_CPUTIME_ID) - cpu_before.1;
    engine.shutdown()?;
    Ok(Outcome {
        name: format!("yaraflow engine, {shards} shard(s)"),
        streams: workload.streams(),
        bytes: workload.bytes(),
        seconds,
        rss_bytes_per_stream: memory.per_stream,
        verdicts,
        note: Some(format!(
            "bursts of {GROUP} chunks (scan_chunks), closes {GROUP} at a time; the producer is this thread: {producer:.2} s of CPU ({:.0}% of the run), the rest of the process {:.2} s",
            100.0 * producer / seconds.max(1e-9),
            process - producer
        )),
        ..Outcome::default()
    })
}

/// CPU time of `clock` (this thread's, or the process's), in seconds.
fn cpu_seconds(clock: libc::clockid_t) -> f64 {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the struct it is given; both
    // clocks exist on Linux.
    match unsafe { libc::clock_gettime(clock, &mut now) } {
        0 => now.tv_sec as f64 + now.tv_nsec as f64 / 1e9,
        _ => 0.0,
    }
}

/// `threads` threads each scanning whole streams (a share of them): the
/// ceiling the engine with as many shards is measured against.
pub fn parallel_whole_buffers(
    rules: &yara_x::Rules,
    workload: &Workload,
    threads: usize,
) -> Result<f64, yara_x::ScanError> {
    let threads = threads.max(1);
    let start_line = std::sync::Barrier::new(threads + 1);
    std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads)
            .map(|t| {
                let start_line = &start_line;
                scope.spawn(move || -> Result<(), yara_x::ScanError> {
                    let mut scanner = yara_x::Scanner::new(rules);
                    start_line.wait();
                    for index in (t..workload.streams()).step_by(threads) {
                        scanner.scan(workload.stream(index))?;
                    }
                    Ok(())
                })
            })
            .collect();
        start_line.wait();
        let started = Instant::now();
        for worker in workers {
            worker.join().expect("a scanning thread panicked")?;
        }
        Ok(workload.bytes() as f64 / started.elapsed().as_secs_f64().max(1e-9) / 1e6)
    })
}

/// What an actor hop costs (see [`actor_hop`]).
#[derive(Debug, Clone, serde::Serialize)]
pub struct ActorHop {
    /// A 64-byte chunk given to a scanner directly.
    pub direct_ns_per_chunk: f64,
    /// The same chunk sent through a one-shard engine (no reply).
    pub engine_ns_per_chunk: f64,
    /// A blocking query's round trip (`get_matches`).
    pub query_round_trip_us: f64,
}

/// The cost of the actor hop, on an empty rule set: 64-byte chunks sent
/// without waiting (against the same chunks given to a scanner directly),
/// and the round trip of a query; over up to 10,000 streams.
pub fn actor_hop(streams: usize) -> Result<ActorHop, crate::EngineError> {
    const CHUNKS: usize = 200_000;
    const QUERIES: usize = 20_000;
    let chunk = bytes::Bytes::from_static(&[0x5a; 64]);
    let ids: Vec<Uuid> = (0..streams.clamp(1, 10_000)).map(stream_id).collect();
    let empty = || RuleSet::from_source("", 1024).expect("an empty rule set compiles");

    let rules = empty();
    let mut scanner = MultiStreamScanner::new(&rules, ScannerConfig::default());
    let started = Instant::now();
    for i in 0..CHUNKS {
        scanner.scan_chunk(ids[i % ids.len()], &chunk)?;
    }
    scanner.flush()?;
    let direct = started.elapsed();

    let config = EngineConfig {
        shards: 1,
        overload_after: None,
        ..EngineConfig::default()
    };
    let engine = Engine::start(empty(), config)?;
    let handle = engine.handle().blocking();
    let started = Instant::now();
    for i in 0..CHUNKS {
        handle.scan_chunk(ids[i % ids.len()], chunk.clone())?;
    }
    // A query queues behind every chunk: when it answers, all were scanned.
    handle.stats()?;
    let through_engine = started.elapsed();
    let started = Instant::now();
    for i in 0..QUERIES {
        handle.get_matches(ids[i % ids.len()])?;
    }
    let queries = started.elapsed();
    engine.shutdown()?;
    Ok(ActorHop {
        direct_ns_per_chunk: direct.as_nanos() as f64 / CHUNKS as f64,
        engine_ns_per_chunk: through_engine.as_nanos() as f64 / CHUNKS as f64,
        query_round_trip_us: queries.as_secs_f64() * 1e6 / QUERIES as f64,
    })
}

/// Not a contender: the floor of yaraflow's design, what any scanner that
/// searches many streams' chunks in shared batches with YARA-X's block
/// scanner does at the least. Each chunk finds its stream's tail (one
/// lookup among the open streams, keyed by id as the scanner's contexts
/// are), is copied after it into the batch, and leaves its own last bytes
/// as the new tail; a full batch is searched as one block and its matches
/// are walked. A batch is searched also when [`GROUP`] streams have ended,
/// as `multi_stream` closes them (a verdict needs its stream's bytes
/// searched). Nothing else: no verdict, no counters, no spans, no
/// retention. Its ratio to whole-buffer YARA-X bounds the scanner's where
/// tails are short (synthetic literals): it copies the tail before every
/// chunk, where the scanner joins a stream's chunks that share a batch, so
/// with long tails it can search more bytes than the scanner. Gives the
/// matches it walked, too (the real ones, and some twice or across seams).
pub fn design_floor(
    rules: &yara_x::Rules,
    workload: &Workload,
    tail_len: usize,
    batch_bytes: usize,
) -> Result<(Outcome, usize), yara_x::ScanError> {
    let mut search = yara_x::blocks::Scanner::new(rules);
    search.max_matches_per_pattern(usize::MAX);
    let mut tails: HashMap<Uuid, Vec<u8>, foldhash::fast::RandomState> = HashMap::default();
    let mut batch = Vec::with_capacity(batch_bytes + tail_len + workload.chunk_size());
    let (mut matches, mut ended) = (0, 0);
    let started = Instant::now();
    for step in workload.schedule() {
        let id = stream_id(step.stream as usize);
        let tail = tails.entry(id).or_default();
        let start = batch.len();
        batch.extend_from_slice(tail);
        batch.extend_from_slice(workload.chunk(step));
        let kept = (batch.len() - start).min(tail_len);
        tail.clear();
        tail.extend_from_slice(&batch[batch.len() - kept..]);
        if step.last {
            tails.remove(&id);
            ended += 1;
        }
        if batch.len() >= batch_bytes || ended == GROUP {
            ended = 0;
            matches += search_batch(&mut search, &batch)?;
            batch.clear();
        }
    }
    if !batch.is_empty() {
        matches += search_batch(&mut search, &batch)?;
    }
    let outcome = Outcome {
        name: "design floor (copy and search only)".into(),
        streams: workload.streams(),
        bytes: workload.bytes(),
        seconds: started.elapsed().as_secs_f64(),
        ..Outcome::default()
    };
    Ok((outcome, matches))
}

/// The batch the design floor searches for `rules`: the largest the
/// scanner allows them (see `scanner::pace`).
pub fn floor_batch_bytes(rules: &RuleSet) -> usize {
    crate::scanner::pace::Pace::of(rules, &ScannerConfig::default()).largest_batch()
}

/// Searches `batch` as one block and counts its matches, walking them as
/// the scanner does.
fn search_batch(
    search: &mut yara_x::blocks::Scanner<'_>,
    batch: &[u8],
) -> Result<usize, yara_x::ScanError> {
    // Not at address 0, where YARA-X applies header constraints.
    search.scan(1, batch)?;
    let results = search.finish()?;
    let rules = results.matching_rules().include_private(true);
    Ok(rules
        .chain(results.non_matching_rules().include_private(true))
        .flat_map(|rule| rule.patterns().include_private(true))
        .map(|pattern| pattern.matches().count())
        .sum())
}
