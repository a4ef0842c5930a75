//! The engine's metrics count what really happened. One test in its own
//! binary: it installs the process-wide recorder.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use metrics_util::debugging::{DebugValue, DebuggingRecorder};
use yaraflow::{metrics as names, Engine, EngineConfig, EngineError, Uuid};

/// Sums every series of a metric over its labels.
fn totals(snapshot: Vec<(metrics_util::CompositeKey, DebugValue)>) -> HashMap<String, f64> {
    let mut totals = HashMap::new();
    for (key, value) in snapshot {
        let value = match value {
            DebugValue::Counter(n) => n as f64,
            DebugValue::Gauge(g) => g.into_inner(),
            DebugValue::Histogram(samples) => samples.len() as f64,
        };
        *totals.entry(key.key().name().to_string()).or_insert(0.0) += value;
    }
    totals
}

#[test]
fn counters_equal_what_was_sent_under_backpressure() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    recorder
        .install()
        .expect("the only recorder of this test binary");

    let rules = common::compile(r#"rule word { strings: $a = "abc" condition: $a }"#);
    let config = EngineConfig {
        shards: 2,
        mailbox_messages: 2,
        overload_after: None,
        ..EngineConfig::default()
    };
    let engine = Engine::start(rules, config).unwrap();
    let handle = engine.handle().blocking();
    let mut sent = 0u64;
    std::thread::scope(|scope| {
        let producers: Vec<_> = (0..3u128)
            .map(|producer| {
                let handle = handle.clone();
                scope.spawn(move || {
                    let mut sent = 0u64;
                    for i in 0..3000u128 {
                        let stream = Uuid::from_u128(producer << 64 | (i % 40));
                        let chunk = format!("{i} abc ").repeat(20).into_bytes();
                        sent += chunk.len() as u64;
                        handle.scan_chunk(stream, chunk).unwrap();
                    }
                    sent
                })
            })
            .collect();
        sent = producers.into_iter().map(|p| p.join().unwrap()).sum();
    });
    let lines = Uuid::new_v4();
    handle.scan_line(lines, b"abc".to_vec()).unwrap();
    handle.scan_line(lines, b"xyz".to_vec()).unwrap();
    handle.reset_stream(lines).unwrap();
    // A refused chunk is counted as an overload, not as scanned.
    let impatient = Engine::start(
        common::compile("rule r { condition: true }"),
        EngineConfig {
            shards: 1,
            mailbox_messages: 1,
            overload_after: Some(Duration::ZERO),
            ..EngineConfig::default()
        },
    )
    .unwrap();
    let mut refused = 0;
    let mut taken = 0;
    for _ in 0..5000 {
        match impatient
            .handle()
            .blocking()
            .scan_chunk(Uuid::nil(), vec![1; 4096])
        {
            Ok(()) => taken += 4096,
            Err(EngineError::Overloaded { .. }) => refused += 1,
            Err(other) => panic!("{other}"),
        }
    }
    assert!(refused > 0);
    impatient.shutdown().unwrap();
    // Whole-data rules: a stream that stops retaining has its deferred
    // search run; one that closes while retaining is scanned whole.
    let whole = Engine::start(
        common::compile(
            "import \"math\" rule small { strings: $a = \"abc\" \
             condition: $a and filesize < 10 and math.entropy(0, filesize) >= 0 }",
        ),
        EngineConfig {
            shards: 1,
            ..EngineConfig::default()
        },
    )
    .unwrap();
    let whole_handle = whole.handle().blocking();
    let (long, short) = (Uuid::from_u128(1), Uuid::from_u128(2));
    whole_handle
        .scan_chunk(long, b"0123456789 abc".to_vec())
        .unwrap();
    whole_handle.scan_chunk(short, b"abc".to_vec()).unwrap();
    let matched: Vec<usize> = [long, short]
        .iter()
        .map(|s| whole_handle.close_stream(*s).unwrap().unwrap().rules.len())
        .collect();
    assert_eq!(matched, [0, 1]);
    whole.shutdown().unwrap();
    std::thread::sleep(Duration::from_millis(50)); // a tick refreshes the gauges
    let report = engine.shutdown().unwrap();
    assert_eq!(report.results.len(), 121);

    let snapshot = snapshotter
        .snapshot()
        .into_vec()
        .into_iter()
        .map(|(key, _, _, value)| (key, value))
        .collect();
    let totals = totals(snapshot);
    assert_eq!(totals[names::SCANNED_BYTES], (sent + 6 + taken + 17) as f64);
    assert_eq!(
        totals[names::SCANNED_CHUNKS],
        9002.0 + (taken / 4096) as f64
    );
    assert_eq!(totals[names::SCANNED_LINES], 2.0);
    assert_eq!(totals[names::STREAMS_OPENED], 124.0);
    assert_eq!(totals[names::STREAMS_RESET], 1.0);
    assert_eq!(totals[names::STREAMS_CLOSED], 124.0);
    // Each of the 120 chunk streams matched "word" once; so did the line
    // stream before its reset; the impatient engine's `r` matched once;
    // `small` matched the short stream.
    assert_eq!(totals[names::RULE_MATCHES], 122.0);
    assert_eq!(totals[names::DEFERRED_SEARCHES], 1.0);
    assert_eq!(totals[names::WHOLE_DATA_SCANS], 1.0);
    assert_eq!(totals[names::OVERLOAD_REJECTIONS], refused as f64);
    assert!(totals[names::BATCH_FLUSHES] >= 1.0);
    assert!(
        totals[names::SCAN_LATENCY] >= 9000.0,
        "one sample per chunk"
    );
    // One sample per verdict asked, one per shard's closing at shutdown.
    assert!(totals[names::EVALUATION_TIME] >= 3.0);
    assert!(totals.contains_key(names::MAILBOX_DEPTH));
    assert!(totals.contains_key(names::OPEN_STREAMS));
    assert_eq!(totals[names::STREAMS_LOST], 0.0);
}
