//! The Rust baseline of the bindings' per-chunk overhead: the same loop as
//! `bindings/bench/chunk_calls.c` and `chunk_calls.py` on the same workload
//! (see `bindings/bench/workload.py`), through `MultiStreamScanner`
//! directly. Prints one JSON line: nanoseconds per chunk call and per
//! close. `bindings/bench/run.sh` runs all three side by side.
//!
//! ```sh
//! cargo bench --bench chunk_calls -- RULES WORKLOAD STREAMS SIZE
//! ```

use std::time::Instant;

use yaraflow::{MultiStreamScanner, RuleSet, ScannerConfig, Uuid};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // `cargo bench` adds `--bench`; the rest are ours.
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let [rules, workload, streams, size] = args.as_slice() else {
        eprintln!("usage: cargo bench --bench chunk_calls -- RULES WORKLOAD STREAMS SIZE");
        return Ok(());
    };
    let streams: usize = streams.parse()?;
    let size: usize = size.parse()?;
    let data = std::fs::read(workload)?;
    let chunks = data.len() / size / streams;
    let config = ScannerConfig::default();
    let rules = RuleSet::from_paths(&[rules], config.max_pattern_len)?;
    let mut scanner = MultiStreamScanner::new(&rules, config);
    let ids: Vec<Uuid> = (0..streams)
        .map(|s| Uuid::from_u128(s as u128 + 1))
        .collect();

    let started = Instant::now();
    for c in 0..chunks {
        for (s, id) in ids.iter().enumerate() {
            let at = (c * streams + s) * size;
            scanner.scan_chunk(*id, &data[at..at + size])?;
        }
    }
    let scanned = Instant::now();
    for id in &ids {
        std::hint::black_box(scanner.close_stream(id)?);
    }
    let closed = Instant::now();
    println!(
        "{{\"binding\": \"rust\", \"ns_per_chunk\": {:.1}, \"ns_per_close\": {:.1}}}",
        (scanned - started).as_nanos() as f64 / (streams * chunks) as f64,
        (closed - scanned).as_nanos() as f64 / streams as f64
    );
    Ok(())
}
