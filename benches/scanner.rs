//! Criterion benchmarks of the multi-stream scanner against whole-buffer
//! YARA-X on the same bytes: 1,000 streams fed interleaved 1460-byte chunks,
//! with 100 random 10-byte rules. `cargo bench` prints both; their ratio is
//! the figure to watch. (`yaraflow bench` measures larger setups.)

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use yaraflow::{MultiStreamScanner, RuleSet, ScannerConfig, Uuid};

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
    group.bench_function("yara-x whole buffer", |b| {
        let mut scanner = yara_x::Scanner::new(rules.rules());
        b.iter(|| scanner.scan(&data).unwrap().matching_rules().len())
    });
    group.finish();
}

criterion_group!(benches, interleaved);
criterion_main!(benches);
