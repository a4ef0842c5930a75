//! A match-event consumer: rule matches arrive as the engine finds them.
//!
//! The actor engine scans on every core. A consumer thread subscribes to
//! match events (stream id, rule, offset) and prints each as a JSON line,
//! without polling any stream; two producer threads feed the bundled
//! samples as interleaved streams in packet-sized chunks. At the end the
//! engine shuts down, which scans whatever is still queued, closes every
//! stream and ends the subscription. Run with:
//!
//! ```sh
//! cargo run --example match_events
//! ```

use std::path::PathBuf;

use yaraflow::{Engine, EngineConfig, RuleSet, Uuid};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let config = EngineConfig::default();
    let rules = RuleSet::from_paths(&["data/rules"], config.scanner.max_pattern_len)?;
    let engine = Engine::start(rules, config)?;
    let handle = engine.handle().blocking();

    let events = handle.subscribe();
    let consumer = std::thread::spawn(move || {
        let mut seen = 0;
        // `None` once the engine has shut down and every event was read.
        while let Some(event) = events.recv_blocking() {
            println!(
                "{}",
                serde_json::to_string(&event).expect("events serialize")
            );
            seen += 1;
        }
        seen
    });

    let mut samples: Vec<PathBuf> = std::fs::read_dir("data/samples")?
        .map(|entry| entry.map(|e| e.path()))
        .collect::<Result<_, _>>()?;
    samples.sort();
    std::thread::scope(
        |scope| -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
            let producers: Vec<_> = samples
                .chunks(samples.len().div_ceil(2))
                .map(|mine| {
                    let handle = handle.clone();
                    scope.spawn(
                        move || -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
                            let files: Vec<Vec<u8>> =
                                mine.iter().map(std::fs::read).collect::<Result<_, _>>()?;
                            let ids: Vec<Uuid> = mine.iter().map(|_| Uuid::new_v4()).collect();
                            // Round-robin over this producer's files, 1460 bytes at a time.
                            for offset in (0..).step_by(1460) {
                                let mut sent = false;
                                for (id, data) in ids.iter().zip(&files) {
                                    if offset < data.len() {
                                        let end = (offset + 1460).min(data.len());
                                        handle.scan_chunk(*id, data[offset..end].to_vec())?;
                                        sent = true;
                                    }
                                }
                                if !sent {
                                    return Ok(());
                                }
                            }
                            Ok(())
                        },
                    )
                })
                .collect();
            for producer in producers {
                producer.join().expect("producer thread")?;
            }
            Ok(())
        },
    )
    .map_err(|e| e.to_string())?;

    let report = engine.shutdown()?;
    let seen = consumer.join().expect("consumer thread");
    eprintln!(
        "{} streams closed, {} match events",
        report.results.len(),
        seen
    );
    Ok(())
}
