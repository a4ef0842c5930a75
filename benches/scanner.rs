//! Criterion benchmarks of the multi-stream scanner.
//!
//! - `interleaved`: 1,000 streams fed interleaved 1460-byte chunks against
//!   whole-buffer YARA-X on the same bytes (100 random 10-byte rules); their
//!   ratio is the figure to watch.
//! - `costs`: the pieces, each on 1,000 rules: appending one chunk (no
//!   search), switching between streams (a chunk to a different stream each
//!   time vs the same one), the harvest (searching a full batch and settling
//!   its matches), a verdict evaluation, and opening and closing a stream.
//!
//! `yaraflow bench` measures whole workloads at scale.

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use yaraflow::bench::synthetic_rules;
use yaraflow::{MultiStreamScanner, RuleSet, ScannerConfig, StreamMode, Uuid};

const STREAMS: usize = 1000;
const STREAM_BYTES: usize = 14_600;
const CHUNK: usize = 1460;

fn rules(rng: &mut StdRng) -> RuleSet {
    let src: String = (0..100)
        .map(|i| {
            let hex: Vec<String> = (0..10)
                .map(|_| format!("{:02x}", rng.gen::<u8>()))
                .collect();
            format!(
                "rule r{i} {{ strings: $a = {{ {} }} condition: $a }}\n",
                hex.join(" ")
            )
        })
        .collect();
    RuleSet::from_source(&src, 1024).unwrap()
}

fn interleaved(c: &mut Criterion) {
    let mut rng = StdRng::seed_from_u64(7);
    let rules = rules(&mut rng);
    let data: Vec<u8> = (0..STREAMS * STREAM_BYTES).map(|_| rng.gen()).collect();
    let mut group = c.benchmark_group("1000 streams, 1460-byte chunks, 100 rules");
    group.throughput(Throughput::Bytes(data.len() as u64));
    group.sample_size(10);
    group.bench_function("yaraflow interleaved", |b| {
        b.iter(|| {
            let mut scanner = MultiStreamScanner::new(&rules, ScannerConfig::default());
            let ids: Vec<Uuid> = (0..STREAMS).map(|_| Uuid::new_v4()).collect();
            for offset in (0..STREAM_BYTES).step_by(CHUNK) {
                for (i, id) in ids.iter().enumerate() {
                    let stream = &data[i * STREAM_BYTES..(i + 1) * STREAM_BYTES];
                    scanner
                        .scan_chunk(*id, &stream[offset..offset + CHUNK])
                        .unwrap();
                }
            }
            scanner.close_streams(&ids).unwrap()
        })
    });
    let plain = rules.compile_unchanged().unwrap();
    group.bench_function("yara-x whole buffer", |b| {
        let mut scanner = yara_x::Scanner::new(&plain);
        b.iter(|| scanner.scan(&data).unwrap().matching_rules().len())
    });
    group.finish();
}

/// A scanner whose batch never fills during a measurement (so appending
/// is measured without the search).
fn roomy() -> ScannerConfig {
    ScannerConfig {
        max_batch_bytes: 1 << 30,
        max_batch_delay: std::time::Duration::from_secs(3600),
        ..ScannerConfig::default()
    }
}

fn costs(c: &mut Criterion) {
    let (source, _) = synthetic_rules(1000, 11);
    let rules = RuleSet::from_source(&source, 1024).unwrap();
    let mut rng = StdRng::seed_from_u64(11);
    let chunk: Vec<u8> = (0..CHUNK).map(|_| rng.gen()).collect();
    let ids: Vec<Uuid> = (0..STREAMS).map(|_| Uuid::new_v4()).collect();
    let mut group = c.benchmark_group("costs, 1000 rules");

    group.bench_function("append a chunk, same stream", |b| {
        let mut scanner = MultiStreamScanner::new(&rules, roomy());
        b.iter(|| scanner.scan_chunk(ids[0], &chunk).unwrap());
    });
    group.bench_function("append a chunk, another stream each time", |b| {
        let mut scanner = MultiStreamScanner::new(&rules, roomy());
        let mut i = 0;
        b.iter(|| {
            i = (i + 1) % ids.len();
            scanner.scan_chunk(ids[i], &chunk).unwrap()
        });
    });
    group.throughput(Throughput::Bytes((STREAMS * CHUNK) as u64));
    group.bench_function("harvest: search a batch of 1000 chunks", |b| {
        b.iter_batched_ref(
            || {
                let mut scanner = MultiStreamScanner::new(&rules, roomy());
                for id in &ids {
                    scanner.scan_chunk(*id, &chunk).unwrap();
                }
                scanner
            },
            |scanner| scanner.flush().unwrap(),
            BatchSize::LargeInput,
        );
    });
    group.throughput(Throughput::Elements(1));
    group.bench_function("evaluate a verdict (searched stream)", |b| {
        let mut scanner = MultiStreamScanner::new(&rules, ScannerConfig::default());
        scanner.scan_chunk(ids[0], &chunk).unwrap();
        scanner.flush().unwrap();
        b.iter(|| scanner.get_matches(&ids[0]).unwrap());
    });
    group.bench_function("open and close an empty stream", |b| {
        let mut scanner = MultiStreamScanner::new(&rules, ScannerConfig::default());
        b.iter(|| {
            let id = Uuid::new_v4();
            scanner.open_stream(id, StreamMode::Chunks).unwrap();
            scanner.close_stream(&id).unwrap()
        });
    });
    group.bench_function("close a searched stream that matched nothing", |b| {
        b.iter_batched_ref(
            || {
                let mut scanner = MultiStreamScanner::new(&rules, ScannerConfig::default());
                let id = Uuid::new_v4();
                scanner.scan_chunk(id, &chunk).unwrap();
                scanner.flush().unwrap();
                (scanner, id)
            },
            |(scanner, id)| scanner.close_stream(id).unwrap(),
            BatchSize::SmallInput,
        );
    });
    group.finish();
}

criterion_group!(benches, interleaved, costs);
criterion_main!(benches);
