//! The stream store's benchmark (`yaraflow bench-store`): how many streams
//! an engine holds under a resident bound, what bringing a stored stream
//! back costs, and how long checkpoints, a shutdown and a restart take.
//!
//! The engine runs with a stream store and the given bounds. Each stream
//! gets one chunk (filling the engine: the oldest streams are evicted as
//! the bound is reached), then a checkpoint writes every resident stream.
//! A sample of stored streams and a sample of resident streams then get
//! their second chunk, timed separately: the difference per stream is the
//! cost of a restore (read, decode, reinsert, and the eviction it causes
//! once the bound is full). The sampled streams are closed and their
//! verdicts compared with whole-buffer scans of the same bytes. Last, the
//! engine shuts down (every open stream kept in the store) and starts again
//! on the store.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use uuid::Uuid;

use super::contenders::{fingerprint, release_freed_memory, resident_bytes};
use super::workload::{Workload, WorkloadSpec};
use crate::config::{EngineConfig, StoreConfig};
use crate::engine::{BlockingHandle, Engine};
use crate::error::{EngineError, RuleError};
use crate::rules::RuleSet;

/// Why the benchmark stopped.
#[derive(Debug, thiserror::Error)]
pub enum StoreBenchError {
    /// The synthetic rules did not compile.
    #[error(transparent)]
    Rules(#[from] RuleError),
    /// The engine failed.
    #[error(transparent)]
    Engine(#[from] EngineError),
    /// The reference scan failed.
    #[error("reference scan failed: {0}")]
    Reference(#[from] yara_x::ScanError),
}

/// What to measure.
#[derive(Debug, Clone)]
pub struct StoreBenchSpec {
    /// Streams opened (each gets two chunks).
    pub streams: usize,
    /// Bytes per chunk.
    pub chunk_size: usize,
    /// Synthetic rules (10-byte hex patterns).
    pub rules: usize,
    /// The engine's resident bounds.
    pub max_resident_bytes: usize,
    /// See `max_resident_bytes`.
    pub max_resident_streams: usize,
    /// Engine shards.
    pub shards: usize,
    /// Streams in each timed sample (stored, resident).
    pub sample: usize,
    /// The store's file (removed at the end).
    pub path: PathBuf,
    /// Seed of the rules and the data.
    pub seed: u64,
}

/// The figures.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct StoreReport {
    /// Streams opened.
    pub streams: usize,
    /// The resident bound on context bytes.
    pub max_resident_bytes: usize,
    /// Seconds to open every stream with its first chunk.
    pub fill_seconds: f64,
    /// Streams in memory after the fill and the checkpoint.
    pub resident_streams: usize,
    /// Streams in the store only after the fill and the checkpoint.
    pub stored_streams: usize,
    /// Growth of the process's resident memory from before the engine
    /// started to after the fill and the checkpoint (contexts, index of
    /// stored streams, batches, the store's cache).
    pub engine_rss_bytes: u64,
    /// Size of the store's file after the checkpoint.
    pub store_file_bytes: u64,
    /// Seconds of the checkpoint that wrote every changed resident stream
    /// (then applied the resident bounds, evicting without a second write).
    pub checkpoint_seconds: f64,
    /// Streams the checkpoint wrote.
    pub checkpoint_streams: usize,
    /// Nanoseconds per stream to append a chunk to a resident stream (0
    /// when nothing was stored, so that there was no sample).
    pub resident_chunk_ns: f64,
    /// Nanoseconds per stream to append a chunk to a stored stream.
    pub stored_chunk_ns: f64,
    /// The difference: what restoring a stream costs.
    pub restore_ns_per_stream: f64,
    /// Sampled verdicts compared with whole-buffer scans.
    pub verdicts_checked: usize,
    /// How many of them differ (must be 0).
    pub verdicts_differing: usize,
    /// Seconds of the shutdown that keeps every open stream.
    pub shutdown_seconds: f64,
    /// Streams it kept.
    pub kept_streams: usize,
    /// Seconds to start again on the store (its index read).
    pub restart_seconds: f64,
    /// Streams open after the restart.
    pub restarted_streams: usize,
}

/// Runs the benchmark; `progress` hears of each phase.
pub fn run(spec: &StoreBenchSpec, progress: &dyn Fn(&str)) -> Result<StoreReport, StoreBenchError> {
    let (source, plants) = super::synthetic_rules(spec.rules, spec.seed);
    let compile = || RuleSet::from_source(&source, 1024);
    let workload = Workload::generate(
        &WorkloadSpec {
            streams: spec.streams,
            chunk_size: spec.chunk_size,
            total_bytes: (spec.streams * spec.chunk_size * 2) as u64,
            short_streams: false,
            match_fraction: 0.1,
            seed: spec.seed,
            traffic: Default::default(),
            plant_at_start: false,
        },
        &plants,
    );
    let ids: Vec<Uuid> = (0..spec.streams)
        .map(|i| Uuid::from_u128(i as u128 + 1))
        .collect();
    let config = engine_config(spec);
    let _ = std::fs::remove_file(&spec.path);
    let mut report = StoreReport {
        streams: spec.streams,
        max_resident_bytes: spec.max_resident_bytes,
        ..StoreReport::default()
    };
    release_freed_memory();
    let baseline = resident_bytes();
    let engine = Engine::start(compile()?, config.clone())?;
    let handle = engine.handle().blocking();

    progress("fill: one chunk per stream");
    let started = Instant::now();
    send(&handle, &workload, &ids, 0..spec.streams, 0)?;
    report.fill_seconds = started.elapsed().as_secs_f64();

    progress("checkpoint: every changed stream, then the bounds");
    let started = Instant::now();
    report.checkpoint_streams = handle.checkpoint()?;
    report.checkpoint_seconds = started.elapsed().as_secs_f64();
    let stats = handle.stats()?;
    report.stored_streams = stats.shards.iter().map(|s| s.stored_streams).sum();
    report.resident_streams = stats.open_streams() - report.stored_streams;
    release_freed_memory(); // what the evicted contexts held
    report.engine_rss_bytes = resident_bytes().saturating_sub(baseline);
    report.store_file_bytes = std::fs::metadata(&spec.path).map_or(0, |m| m.len());

    progress("second chunks: stored sample, resident sample");
    let sample = spec
        .sample
        .min(report.stored_streams)
        .min(report.resident_streams);
    let stored = 0..sample;
    let resident = spec.streams - sample..spec.streams;
    // In alternating halves, so that warming up favours neither side.
    let (mut stored_time, mut resident_time) = (Duration::ZERO, Duration::ZERO);
    let half = sample / 2;
    for part in [0..half, half..sample] {
        let (from_stored, from_resident) = (
            part.start..part.end,
            resident.start + part.start..resident.start + part.end,
        );
        stored_time += timed(|| send(&handle, &workload, &ids, from_stored, 1))?;
        resident_time += timed(|| send(&handle, &workload, &ids, from_resident, 1))?;
    }
    // No sample (nothing stored, say): no figure rather than a wrong one.
    let per = |d: Duration| match sample {
        0 => 0.0,
        n => d.as_nanos() as f64 / n as f64,
    };
    report.stored_chunk_ns = per(stored_time);
    report.resident_chunk_ns = per(resident_time);
    report.restore_ns_per_stream = report.stored_chunk_ns - report.resident_chunk_ns;

    progress("verdicts of the samples");
    let reference = compile()?;
    let checked: Vec<usize> = stored.chain(resident).collect();
    report.verdicts_checked = checked.len();
    report.verdicts_differing = differing(&handle, &reference, &workload, &ids, &checked)?;

    progress("shutdown (keeping every stream) and restart");
    let started = Instant::now();
    report.kept_streams = engine.shutdown()?.kept;
    report.shutdown_seconds = started.elapsed().as_secs_f64();
    let started = Instant::now();
    let engine = Engine::start(compile()?, config)?;
    report.restart_seconds = started.elapsed().as_secs_f64();
    report.restarted_streams = engine.handle().blocking().stats()?.open_streams();
    drop(engine);
    let _ = std::fs::remove_file(&spec.path);
    Ok(report)
}

fn engine_config(spec: &StoreBenchSpec) -> EngineConfig {
    let mut config = EngineConfig {
        shards: spec.shards,
        store: Some(StoreConfig {
            path: spec.path.clone(),
            max_resident_bytes: spec.max_resident_bytes,
            max_resident_streams: spec.max_resident_streams,
            ..StoreConfig::default()
        }),
        ..EngineConfig::default()
    };
    config.scanner.max_open_streams = usize::MAX;
    config
}

/// Sends chunk `chunk` (0 or 1) of each stream in `range`, in bursts, and
/// waits until the shards have taken them.
fn send(
    handle: &BlockingHandle,
    workload: &Workload,
    ids: &[Uuid],
    range: std::ops::Range<usize>,
    chunk: usize,
) -> Result<(), EngineError> {
    let size = workload.chunk_size();
    let mut burst = Vec::with_capacity(1024);
    for index in range {
        let len = workload.stream(index).len();
        let (start, end) = ((chunk * size).min(len), ((chunk + 1) * size).min(len));
        let step = workload.step_of(index, start, end - start);
        burst.push((ids[index], workload.chunk_bytes(&step)));
        if burst.len() == 1024 {
            handle.scan_chunks(std::mem::take(&mut burst))?;
        }
    }
    handle.scan_chunks(burst)?;
    handle.stats().map(|_| ()) // a round trip through every shard
}

fn timed(work: impl FnOnce() -> Result<(), EngineError>) -> Result<Duration, EngineError> {
    let started = Instant::now();
    work()?;
    Ok(started.elapsed())
}

/// Closes the `checked` streams; how many verdicts differ from a
/// whole-buffer scan of the bytes they were sent.
fn differing(
    handle: &BlockingHandle,
    rules: &RuleSet,
    workload: &Workload,
    ids: &[Uuid],
    checked: &[usize],
) -> Result<usize, StoreBenchError> {
    let streams: Vec<Uuid> = checked.iter().map(|&i| ids[i]).collect();
    let plain = rules.compile_unchanged()?;
    let mut scanner = yara_x::Scanner::new(&plain);
    let mut differing = 0;
    for (&index, result) in checked.iter().zip(handle.close_streams(&streams)) {
        let ours = result?.map(|r| fingerprint(r.rules.iter().map(|m| m.identifier.as_str())));
        let data = workload.stream(index);
        let data = &data[..data.len().min(2 * workload.chunk_size())];
        let theirs = scanner
            .scan(data)
            .map(|r| fingerprint(r.matching_rules().map(|m| m.identifier())))?;
        differing += usize::from(ours != Some(theirs));
    }
    Ok(differing)
}
