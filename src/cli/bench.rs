//! `yaraflow bench`: the figures that matter, measured side by side in one
//! run so that a noisy machine affects both sides alike.
//!
//! * memory and open time per stream: a yaraflow stream context next to one
//!   `yara_x::blocks::Scanner` per stream (the simple design);
//! * throughput on interleaved packet-sized chunks of many streams, as a
//!   ratio to YARA-X scanning the same bytes as one whole buffer, and as
//!   one whole buffer per stream;
//! * the actor engine with N shards on the same chunks, as a ratio to N
//!   threads each scanning 1/N of the bytes as one whole buffer;
//! * the cost of the actor hop on an empty rule set: a chunk sent without
//!   waiting, and a query's round trip.
//!
//! Rules are random 10-byte hex strings (as in the design notes); data is
//! random bytes, so almost nothing matches and the figures are the cost of
//! the search itself.

use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use yaraflow::{Engine, EngineConfig, MultiStreamScanner, RuleSet, ScannerConfig, Uuid};

/// Arguments of `yaraflow bench`.
#[derive(Debug, clap::Args)]
pub struct BenchArgs {
    /// Rule counts to measure, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "100,10000")]
    rules: Vec<usize>,
    /// Concurrent streams.
    #[arg(long, default_value_t = 10_000)]
    streams: usize,
    /// Bytes per stream.
    #[arg(long, default_value_t = 14_600)]
    stream_bytes: usize,
    /// Chunk size in bytes.
    #[arg(long, default_value_t = 1460)]
    chunk_size: usize,
    /// Blocks scanners created for the per-stream-scanner comparison.
    #[arg(long, default_value_t = 2000)]
    scanners: usize,
    /// Shard counts of the engine runs, comma-separated (empty: none).
    #[arg(long, value_delimiter = ',', default_value = "1,2")]
    shards: Vec<usize>,
    /// Chunks per call in the engine runs (`scan_chunks`); 1 sends each
    /// chunk on its own (`scan_chunk`'s cost).
    #[arg(long, default_value_t = 64)]
    burst: usize,
    /// Seed of the random rules and data.
    #[arg(long, default_value_t = 1)]
    seed: u64,
}

pub fn run(args: BenchArgs) -> anyhow::Result<std::process::ExitCode> {
    anyhow::ensure!(
        args.streams > 0 && args.chunk_size > 0,
        "--streams and --chunk-size must be positive"
    );
    let mut rng = StdRng::seed_from_u64(args.seed);
    let data: Vec<u8> = (0..args.streams * args.stream_bytes)
        .map(|_| rng.gen())
        .collect();
    println!(
        "yaraflow bench: {} streams x {} bytes ({:.1} MiB) in {}-byte chunks, interleaved",
        args.streams,
        args.stream_bytes,
        data.len() as f64 / (1 << 20) as f64,
        args.chunk_size
    );
    for &count in &args.rules {
        let started = Instant::now();
        let source = random_rules(count, &mut rng);
        let rules = RuleSet::from_source(&source, 1024)?;
        println!("\n{count} rules (compiled in {:.2?})", started.elapsed());
        stream_costs(&rules, &args)?;
        throughput(&rules, &args, &data)?;
        for &shards in &args.shards {
            engine_throughput(&rules, &args, &data, &source, shards)?;
        }
    }
    if !args.shards.is_empty() {
        actor_hop(&args)?;
    }
    Ok(std::process::ExitCode::SUCCESS)
}

fn random_rules(count: usize, rng: &mut StdRng) -> String {
    (0..count)
        .map(|i| {
            let hex: Vec<String> = (0..10)
                .map(|_| format!("{:02x}", rng.gen::<u8>()))
                .collect();
            format!(
                "rule r{i} {{ strings: $a = {{ {} }} condition: $a }}\n",
                hex.join(" ")
            )
        })
        .collect()
}

/// Resident and virtual memory of this process, in bytes.
fn memory() -> (u64, u64) {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let mut fields = statm
        .split_whitespace()
        .map(|f| f.parse::<u64>().unwrap_or(0) * 4096);
    let virt = fields.next().unwrap_or(0);
    (fields.next().unwrap_or(0), virt)
}

/// Memory and open time of a stream, next to a blocks scanner per stream.
fn stream_costs(rules: &RuleSet, args: &BenchArgs) -> anyhow::Result<()> {
    let packet = vec![0x5au8; args.chunk_size];
    let (rss0, virt0) = memory();
    let started = Instant::now();
    let mut scanners = Vec::with_capacity(args.scanners);
    for _ in 0..args.scanners {
        let mut scanner = yara_x::blocks::Scanner::new(rules.rules());
        scanner.scan(0, &packet)?;
        scanners.push(scanner);
    }
    let per_scanner_time = started.elapsed() / args.scanners.max(1) as u32;
    let (rss1, virt1) = memory();
    drop(scanners);
    let n = args.scanners.max(1) as u64;
    println!(
        "  one blocks::Scanner per stream: {} B resident, {} KiB virtual, open + first scan {:.1?} (over {} scanners)",
        (rss1.saturating_sub(rss0)) / n,
        (virt1.saturating_sub(virt0)) / n / 1024,
        per_scanner_time,
        args.scanners
    );

    let mut scanner = MultiStreamScanner::new(rules, ScannerConfig::default());
    let ids: Vec<Uuid> = (0..args.streams).map(|_| Uuid::new_v4()).collect();
    let (rss0, _) = memory();
    let started = Instant::now();
    for id in &ids {
        scanner.scan_chunk(*id, &packet)?;
    }
    let open_time = started.elapsed() / args.streams as u32;
    scanner.flush()?;
    let (rss1, _) = memory();
    let context: usize = ids
        .iter()
        .filter_map(|id| scanner.stream_context(id))
        .map(|c| c.memory_bytes())
        .sum();
    println!(
        "  yaraflow stream context:        {} B (counted; {} B resident incl. map), open + first chunk {:.1?} (over {} streams)",
        context / args.streams,
        (rss1.saturating_sub(rss0)) / args.streams as u64,
        open_time,
        args.streams
    );
    Ok(())
}

/// Throughput on interleaved chunks, against whole-buffer scans.
fn throughput(rules: &RuleSet, args: &BenchArgs, data: &[u8]) -> anyhow::Result<()> {
    let streams: Vec<&[u8]> = data.chunks(args.stream_bytes).collect();
    let ids: Vec<Uuid> = (0..streams.len()).map(|_| Uuid::new_v4()).collect();
    let mut scanner = MultiStreamScanner::new(rules, ScannerConfig::default());
    let started = Instant::now();
    for offset in (0..args.stream_bytes).step_by(args.chunk_size) {
        for (id, stream) in ids.iter().zip(&streams) {
            let end = (offset + args.chunk_size).min(stream.len());
            scanner.scan_chunk(*id, &stream[offset..end])?;
        }
    }
    let closed = scanner.close_streams(&ids)?;
    let ours = started.elapsed();
    anyhow::ensure!(
        closed.len() == ids.len(),
        "every stream closes with a verdict"
    );

    let mut whole = yara_x::Scanner::new(rules.rules());
    let started = Instant::now();
    whole.scan(data)?;
    let one_buffer = started.elapsed();
    let started = Instant::now();
    for stream in &streams {
        whole.scan(stream)?;
    }
    let per_stream = started.elapsed();

    let rate = |d: Duration| data.len() as f64 / d.as_secs_f64() / 1e9;
    println!(
        "  yaraflow, interleaved chunks:   {:.2?} ({:.2} GB/s), {} batches, {} verdict evaluations",
        ours,
        rate(ours),
        scanner.stats().batches,
        scanner.stats().evaluations
    );
    println!(
        "  yara-x, one whole buffer:       {one_buffer:.2?} ({:.2} GB/s)",
        rate(one_buffer)
    );
    println!(
        "  yara-x, whole buffer per stream: {per_stream:.2?} ({:.2} GB/s)",
        rate(per_stream)
    );
    println!(
        "  ratio yaraflow / whole buffer:  {:.2} (one buffer), {:.2} (buffer per stream)",
        one_buffer.as_secs_f64() / ours.as_secs_f64(),
        per_stream.as_secs_f64() / ours.as_secs_f64()
    );
    Ok(())
}

/// The engine with `shards` shards on the same interleaved chunks, against
/// `shards` threads scanning whole buffers side by side.
fn engine_throughput(
    rules: &RuleSet,
    args: &BenchArgs,
    data: &[u8],
    source: &str,
    shards: usize,
) -> anyhow::Result<()> {
    let engine_rules = RuleSet::from_source(source, 1024)?;
    let bytes = bytes::Bytes::copy_from_slice(data);
    let config = EngineConfig {
        shards,
        overload_after: None,
        ..EngineConfig::default()
    };
    let engine = Engine::start(engine_rules, config)?;
    let handle = engine.handle().blocking();
    let ids: Vec<Uuid> = (0..data.len().div_ceil(args.stream_bytes))
        .map(|_| Uuid::new_v4())
        .collect();
    let mut burst = Vec::with_capacity(args.burst);
    let started = Instant::now();
    for offset in (0..args.stream_bytes).step_by(args.chunk_size) {
        for (index, id) in ids.iter().enumerate() {
            let start = (index * args.stream_bytes + offset).min(data.len());
            let end = (start + args.chunk_size)
                .min((index + 1) * args.stream_bytes)
                .min(data.len());
            burst.push((*id, bytes.slice(start..end)));
            if burst.len() >= args.burst {
                handle.scan_chunks(std::mem::take(&mut burst))?;
            }
        }
    }
    handle.scan_chunks(burst)?;
    let report = engine.shutdown()?;
    let ours = started.elapsed();
    anyhow::ensure!(
        report.results.len() == ids.len() && report.failed.is_empty(),
        "every stream closes with a verdict"
    );
    let parallel = parallel_whole_buffers(rules, &bytes, shards)?;
    let rate = |d: Duration| data.len() as f64 / d.as_secs_f64() / 1e9;
    println!(
        "  engine, {shards} shard(s), bursts of {}: {ours:.2?} ({:.2} GB/s); {shards} thread(s) of whole-buffer yara-x: {parallel:.2?} ({:.2} GB/s); ratio {:.2}",
        args.burst,
        rate(ours),
        rate(parallel),
        parallel.as_secs_f64() / ours.as_secs_f64()
    );
    Ok(())
}

/// Time for `threads` threads to scan one part of `data` each, as one
/// whole buffer, with their own YARA-X scanners of the same rules.
fn parallel_whole_buffers(
    rules: &RuleSet,
    data: &[u8],
    threads: usize,
) -> anyhow::Result<Duration> {
    let part = data.len().div_ceil(threads.max(1)).max(1);
    let parts: Vec<&[u8]> = data.chunks(part).collect();
    let start_line = std::sync::Barrier::new(parts.len() + 1);
    std::thread::scope(|scope| {
        let workers: Vec<_> = parts
            .iter()
            .map(|part| {
                let start_line = &start_line;
                scope.spawn(move || -> Result<(), yara_x::ScanError> {
                    let mut scanner = yara_x::Scanner::new(rules.rules());
                    start_line.wait();
                    scanner.scan(part).map(|_| ())
                })
            })
            .collect();
        start_line.wait();
        let started = Instant::now();
        for worker in workers {
            worker
                .join()
                .map_err(|_| anyhow::anyhow!("a scanning thread panicked"))??;
        }
        Ok(started.elapsed())
    })
}

/// The cost of the actor hop, on an empty rule set: chunks sent without
/// waiting (against the same chunks given to a scanner directly), and the
/// round trip of a query.
fn actor_hop(args: &BenchArgs) -> anyhow::Result<()> {
    const CHUNKS: usize = 200_000;
    const QUERIES: usize = 20_000;
    let chunk = bytes::Bytes::from_static(&[0x5a; 64]);
    let ids: Vec<Uuid> = (0..args.streams.clamp(1, 10_000))
        .map(|_| Uuid::new_v4())
        .collect();

    let rules = RuleSet::from_source("", 1024)?;
    let mut scanner = MultiStreamScanner::new(&rules, ScannerConfig::default());
    let started = Instant::now();
    for i in 0..CHUNKS {
        scanner.scan_chunk(ids[i % ids.len()], &chunk)?;
    }
    scanner.flush()?;
    let direct = started.elapsed() / CHUNKS as u32;

    let config = EngineConfig {
        shards: 1,
        overload_after: None,
        ..EngineConfig::default()
    };
    let engine = Engine::start(RuleSet::from_source("", 1024)?, config)?;
    let handle = engine.handle().blocking();
    let started = Instant::now();
    for i in 0..CHUNKS {
        handle.scan_chunk(ids[i % ids.len()], chunk.clone())?;
    }
    // A query queues behind every chunk: when it answers, all were scanned.
    handle.stats()?;
    let hop = started.elapsed() / CHUNKS as u32;
    let started = Instant::now();
    for i in 0..QUERIES {
        handle.get_matches(ids[i % ids.len()])?;
    }
    let round_trip = started.elapsed() / QUERIES as u32;
    engine.shutdown()?;
    println!("\nactor hop, empty rules, 64-byte chunks, 1 shard:");
    println!(
        "  chunk to a scanner directly: {direct:.2?}; through the engine (do_send, no reply): {hop:.2?}; hop cost {:.2?} per chunk",
        hop.saturating_sub(direct)
    );
    println!("  query round trip (get_matches, blocking): {round_trip:.2?}");
    Ok(())
}
