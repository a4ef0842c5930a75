//! The actor engine against the single-threaded scanner: same verdicts with
//! 1, 2 and 4 shards and several producer threads; order kept per stream;
//! backpressure without loss; shutdown that drains; rule reloads;
//! match events; bad input.

mod common;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use common::{compile, ours, reference};
use proptest::prelude::*;
use yaraflow::{
    BlockingHandle, Engine, EngineConfig, EngineError, MultiStreamScanner, RuleSet, ScanError,
    ScannerConfig, Uuid,
};

/// Rules with context-sensitive and anchored patterns, and a condition on
/// counts: wrong ordering or a lost chunk changes their verdicts.
const RULES: &str = r#"
rule word { strings: $a = "abc" fullword condition: $a }
rule starts { strings: $a = /^ab/ condition: $a }
rule ends { strings: $a = /ca$/ condition: $a }
rule at_two { strings: $a = "ba" condition: $a at 2 }
rule many { strings: $a = "cab" condition: #a >= 3 }
rule hex { strings: $a = { 61 ?? 63 [1-3] 62 } condition: $a }
rule both { strings: $a = "aab" $b = "bba" condition: $a and @b[1] > @a[1] }
"#;

fn engine(shards: usize, rules: RuleSet) -> Engine {
    let config = EngineConfig {
        shards,
        ..EngineConfig::default()
    };
    Engine::start(rules, config).expect("engine starts")
}

fn engine_with(rules: RuleSet, shards: usize, scanner: ScannerConfig) -> Engine {
    let config = EngineConfig {
        shards,
        scanner,
        ..EngineConfig::default()
    };
    Engine::start(rules, config).expect("engine starts")
}

/// One stream's data, cut into chunks.
#[derive(Debug, Clone)]
struct StreamCase {
    data: Vec<u8>,
    cuts: Vec<usize>,
}

impl StreamCase {
    fn chunks(&self) -> Vec<&[u8]> {
        let mut chunks = Vec::new();
        let mut start = 0;
        for &cut in self.cuts.iter().chain([&self.data.len()]) {
            let cut = cut.clamp(start, self.data.len());
            chunks.push(&self.data[start..cut]);
            start = cut;
        }
        chunks
    }
}

fn stream_case() -> impl Strategy<Value = StreamCase> {
    proptest::collection::vec(proptest::sample::select(&b"abc \n"[..]), 0..300).prop_flat_map(
        |data| {
            let len = data.len();
            let cuts = proptest::collection::vec(0..=len, 0..12).prop_map(|mut cuts| {
                cuts.sort();
                cuts
            });
            (Just(data), cuts).prop_map(|(data, cuts)| StreamCase { data, cuts })
        },
    )
}

/// Feeds streams from `producers` threads, each owning every
/// `producers`-th stream and interleaving its streams' chunks in a
/// seeded order, `burst` chunks per call (`scan_chunks`), or one by one
/// (`scan_chunk`) when `burst` is 1.
fn feed(
    handle: &BlockingHandle,
    streams: &[(Uuid, StreamCase)],
    producers: usize,
    seed: u64,
    burst: usize,
) {
    std::thread::scope(|scope| {
        for producer in 0..producers {
            let mine: Vec<_> = streams.iter().skip(producer).step_by(producers).collect();
            let handle = handle.clone();
            scope.spawn(move || {
                let mut queues: Vec<_> = mine.iter().map(|(id, c)| (*id, c.chunks())).collect();
                let mut turn = seed.wrapping_add(producer as u64);
                let mut pending = Vec::new();
                while queues.iter().any(|(_, q)| !q.is_empty()) {
                    turn = turn.wrapping_mul(6364136223846793005).wrapping_add(1);
                    let pick = (turn >> 33) as usize % queues.len();
                    let (id, queue) = &mut queues[pick];
                    if queue.is_empty() {
                        continue;
                    }
                    let chunk = queue.remove(0);
                    if burst == 1 {
                        handle.scan_chunk(*id, chunk.to_vec()).expect("chunk taken");
                        continue;
                    }
                    pending.push((*id, bytes::Bytes::copy_from_slice(chunk)));
                    if pending.len() == burst {
                        handle
                            .scan_chunks(std::mem::take(&mut pending))
                            .expect("chunks taken");
                    }
                }
                handle.scan_chunks(pending).expect("chunks taken");
            });
        }
    });
}

fn single_threaded(
    rules: &RuleSet,
    streams: &[(Uuid, StreamCase)],
) -> HashMap<Uuid, common::Verdict> {
    let mut scanner = MultiStreamScanner::new(rules, ScannerConfig::default());
    for (id, case) in streams {
        scanner
            .open_stream(*id, yaraflow::StreamMode::Chunks)
            .unwrap();
        for chunk in case.chunks() {
            scanner.scan_chunk(*id, chunk).unwrap();
        }
    }
    let ids: Vec<Uuid> = streams.iter().map(|(id, _)| *id).collect();
    let results = scanner.close_streams(&ids).unwrap();
    results.iter().map(|r| (r.stream, ours(rules, r))).collect()
}

/// The engine's verdicts equal the single-threaded scanner's and YARA-X's,
/// with 1, 2 and 4 shards, many producers and bursts. A case runs three
/// engines: at most 48 cases.
#[test]
fn engine_verdicts_equal_the_single_threaded_scanner() {
    let strategy = (
        proptest::collection::vec(stream_case(), 1..48),
        1usize..4,
        any::<u64>(),
        prop_oneof![Just(1usize), 2usize..20],
    );
    common::capped_runner(48, 48, "tests/engine.proptest-regressions")
        .run(&strategy, |(cases, producers, seed, burst)| {
            check_engine_verdicts(cases, producers, seed, burst)
        })
        .unwrap();
}

fn check_engine_verdicts(
    cases: Vec<StreamCase>,
    producers: usize,
    seed: u64,
    burst: usize,
) -> Result<(), TestCaseError> {
    let rules = compile(RULES);
    let streams: Vec<(Uuid, StreamCase)> = cases.into_iter().map(|c| (Uuid::new_v4(), c)).collect();
    let expected = single_threaded(&rules, &streams);
    for (id, case) in &streams {
        prop_assert_eq!(&expected[id], &reference(&rules, &case.data));
    }
    for shards in [1, 2, 4] {
        let engine = engine(shards, compile(RULES));
        let handle = engine.handle().blocking();
        feed(&handle, &streams, producers, seed, burst);
        // Half the streams closed by their callers, the rest at shutdown.
        let mut got = HashMap::new();
        for (id, _) in streams.iter().step_by(2) {
            let results = handle.close_stream(*id).unwrap().expect("open");
            got.insert(*id, ours(&rules, &results));
        }
        let report = engine.shutdown().unwrap();
        prop_assert!(report.failed.is_empty());
        for results in &report.results {
            got.insert(results.stream, ours(&rules, results));
        }
        prop_assert_eq!(&got, &expected, "{} shards", shards);
    }
    Ok(())
}

/// Chunk `i` of every stream starts with a marker naming `i`: the offsets
/// of the markers tell whether the chunks were scanned in order.
#[test]
fn chunks_of_a_stream_are_scanned_in_the_order_sent() {
    let rules = compile(r#"rule marker { strings: $m = /M[0-9]{4}\./ condition: $m }"#);
    let engine = engine(2, rules);
    let handle = engine.handle().blocking();
    let streams: Vec<Uuid> = (0..64).map(|_| Uuid::new_v4()).collect();
    const CHUNKS: usize = 200;
    const LEN: usize = 16;
    std::thread::scope(|scope| {
        for mine in streams.chunks(16) {
            let handle = handle.clone();
            scope.spawn(move || {
                for i in 0..CHUNKS {
                    for stream in mine {
                        let chunk = format!("M{i:04}.{:width$}", "", width = LEN - 6);
                        handle.scan_chunk(*stream, chunk.into_bytes()).unwrap();
                    }
                }
            });
        }
    });
    for stream in &streams {
        let results = handle.close_stream(*stream).unwrap().unwrap();
        let matches = &results.rules[0].patterns[0].matches;
        assert_eq!(matches.len(), CHUNKS);
        for (i, m) in matches.iter().enumerate() {
            assert_eq!(m.offset, (i * LEN) as u64);
            assert_eq!(m.data, format!("M{i:04}.").into_bytes());
        }
    }
    drop(engine);
}

#[test]
fn a_burst_is_taken_whole_or_not_at_all() {
    let rules = compile(RULES);
    let scanner = ScannerConfig {
        max_chunk_bytes: 10,
        ..ScannerConfig::default()
    };
    let engine = engine_with(rules, 2, scanner);
    let handle = engine.handle().blocking();
    let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
    let burst = vec![
        (a, bytes::Bytes::from_static(b"abc")),
        (b, bytes::Bytes::from_static(b"abc")),
        (b, bytes::Bytes::from_static(b"this chunk is too long")),
    ];
    let err = handle.scan_chunks(burst).unwrap_err();
    assert!(
        err.to_string().contains("exceeds the limit of 10 bytes"),
        "{err}"
    );
    assert_eq!(handle.get_matches(a).unwrap(), None, "nothing was taken");
    let burst = vec![
        (a, bytes::Bytes::from_static(b"x ab")),
        (b, bytes::Bytes::from_static(b"cab")),
        (a, bytes::Bytes::from_static(b"c y")),
    ];
    handle.scan_chunks(burst).unwrap();
    let results = handle.close_stream(a).unwrap().unwrap();
    assert_eq!(results.rules[0].identifier, "word");
    assert_eq!(results.stats.bytes, 7);
    drop(engine);
}

#[test]
fn full_mailboxes_slow_producers_down_and_lose_nothing() {
    let rules = compile(RULES);
    let config = EngineConfig {
        shards: 2,
        mailbox_messages: 4,
        mailbox_bytes: 4096,
        overload_after: None,
        ..EngineConfig::default()
    };
    let engine = Engine::start(rules, config).unwrap();
    let handle = engine.handle().blocking();
    let sent = std::sync::atomic::AtomicU64::new(0);
    std::thread::scope(|scope| {
        for producer in 0..4u128 {
            let (handle, sent) = (handle.clone(), &sent);
            scope.spawn(move || {
                for i in 0..2000u128 {
                    let stream = Uuid::from_u128(producer * 1000 + i % 50);
                    let chunk = vec![b'a' + (i % 3) as u8; 100 + (i % 200) as usize];
                    sent.fetch_add(chunk.len() as u64, std::sync::atomic::Ordering::Relaxed);
                    handle.scan_chunk(stream, chunk).unwrap();
                }
            });
        }
    });
    let stats = handle.stats().unwrap();
    let sent = sent.into_inner();
    assert_eq!(stats.bytes(), sent);
    assert_eq!(stats.chunks(), 8000);
    let report = engine.shutdown().unwrap();
    let closed: u64 = report.results.iter().map(|r| r.stats.bytes).sum();
    assert_eq!(closed, sent);
    assert_eq!(report.results.len(), 200);
}

#[test]
fn an_impatient_producer_gets_overloaded_and_keeps_its_chunk() {
    let rules = compile(RULES);
    let config = EngineConfig {
        shards: 1,
        mailbox_messages: 1,
        overload_after: Some(Duration::ZERO),
        ..EngineConfig::default()
    };
    let engine = Engine::start(rules, config).unwrap();
    let handle = engine.handle().blocking();
    let stream = Uuid::new_v4();
    let (mut taken, mut refused) = (0u64, 0u64);
    for i in 0..20_000u64 {
        let chunk = vec![b'a' + (i % 3) as u8; 1000];
        match handle.scan_chunk(stream, chunk) {
            Ok(()) => taken += 1000,
            Err(EngineError::Overloaded { shard: 0, .. }) => refused += 1,
            Err(other) => panic!("{other}"),
        }
    }
    assert!(refused > 0, "a one-message mailbox never filled");
    let results = handle.close_stream(stream).unwrap().unwrap();
    assert_eq!(results.stats.bytes, taken);
    drop(engine);
}

#[test]
fn shutdown_scans_everything_queued_and_closes_every_stream() {
    let rules = compile(RULES);
    let engine = engine(2, compile(RULES));
    let handle = engine.handle().blocking();
    let data: Vec<(Uuid, Vec<u8>)> = (0..300)
        .map(|i| {
            (
                Uuid::new_v4(),
                format!("xx abc ab cab cab cab {i} aab bba ca").into_bytes(),
            )
        })
        .collect();
    for (id, bytes) in &data {
        for chunk in bytes.chunks(5) {
            handle.scan_chunk(*id, chunk.to_vec()).unwrap();
        }
    }
    // No query in between: the chunks are still queued or batched.
    let report = engine.shutdown().unwrap();
    assert!(report.failed.is_empty());
    assert_eq!(report.results.len(), data.len());
    let by_id: HashMap<Uuid, _> = report.results.iter().map(|r| (r.stream, r)).collect();
    for (id, bytes) in &data {
        assert_eq!(ours(&rules, by_id[id]), reference(&rules, bytes));
    }
    assert!(matches!(
        handle.scan_chunk(Uuid::new_v4(), b"late".to_vec()),
        Err(EngineError::ShuttingDown)
    ));
    assert!(matches!(handle.stats(), Err(EngineError::ShuttingDown)));
}

#[test]
fn streams_opened_before_a_reload_finish_on_their_rules() {
    let old_rules = r#"rule old { strings: $a = "foo" condition: $a }"#;
    let new_rules = r#"rule new { strings: $a = "bar" condition: $a }"#;
    let engine = engine(2, compile(old_rules));
    let handle = engine.handle().blocking();
    let before: Vec<Uuid> = (0..20).map(|_| Uuid::new_v4()).collect();
    for id in &before {
        handle.scan_chunk(*id, b"xx fo".to_vec()).unwrap();
    }
    handle.reload_rules(compile(new_rules)).unwrap();
    let after: Vec<Uuid> = (0..20).map(|_| Uuid::new_v4()).collect();
    for id in before.iter().chain(&after) {
        handle.scan_chunk(*id, b"o bar foo".to_vec()).unwrap();
    }
    let generations: usize = handle
        .stats()
        .unwrap()
        .shards
        .iter()
        .map(|s| s.generations)
        .sum();
    assert_eq!(generations, 4, "two rule sets in each of two shards");
    for id in &before {
        let results = handle.close_stream(*id).unwrap().unwrap();
        assert_eq!(results.rules.len(), 1);
        assert_eq!(results.rules[0].identifier, "old");
        assert_eq!(results.rules[0].patterns[0].matches[0].offset, 3);
    }
    // The old rules are dropped once their last stream closed.
    let generations: usize = handle
        .stats()
        .unwrap()
        .shards
        .iter()
        .map(|s| s.generations)
        .sum();
    assert_eq!(generations, 2);
    for id in &after {
        let results = handle.close_stream(*id).unwrap().unwrap();
        assert_eq!(results.rules[0].identifier, "new");
    }
    drop(engine);
}

#[test]
fn subscribers_get_each_rule_match_once_without_polling() {
    let rules = compile(RULES);
    let scanner = ScannerConfig {
        max_batch_delay: Duration::from_millis(5),
        ..ScannerConfig::default()
    };
    let engine = engine_with(rules, 2, scanner);
    let handle = engine.handle().blocking();
    let events = handle.subscribe();
    let matching = Uuid::new_v4();
    let quiet = Uuid::new_v4();
    handle.scan_chunk(matching, b"zz abc zz".to_vec()).unwrap();
    handle.scan_chunk(quiet, b"zzzz".to_vec()).unwrap();
    // No query: the shard's timer searches the batch and reports.
    let event = events.recv_blocking().expect("an event");
    assert_eq!((event.stream, event.rule.as_str()), (matching, "word"));
    assert_eq!(event.offset, Some(3));
    assert!(!event.at_close);
    handle.scan_chunk(matching, b" abc".to_vec()).unwrap();
    let results = handle.close_stream(matching).unwrap().unwrap();
    assert_eq!(results.rules.len(), 1);
    handle.close_stream(quiet).unwrap();
    let report = engine.shutdown().unwrap();
    assert!(report.results.is_empty());
    // Nothing more: "word" was reported once, and the engine closed the
    // subscription at shutdown.
    assert_eq!(events.recv_blocking(), None);
    assert_eq!(events.dropped(), 0);
}

#[test]
fn rules_matching_only_at_close_are_reported_at_close() {
    let rules = r#"rule quiet_stream { strings: $a = "abc" condition: not $a }"#;
    let engine = engine(1, compile(rules));
    let handle = engine.handle().blocking();
    let events = handle.subscribe();
    let stream = Uuid::new_v4();
    handle.scan_chunk(stream, b"zzz".to_vec()).unwrap();
    handle.close_stream(stream).unwrap();
    let event = events.recv_blocking().unwrap();
    assert_eq!(event.rule, "quiet_stream");
    assert!(event.at_close);
    drop(engine);
}

#[test]
fn bad_input_gets_clear_errors_and_other_streams_go_on() {
    let rules = compile(RULES);
    let scanner = ScannerConfig {
        max_chunk_bytes: 100,
        ..ScannerConfig::default()
    };
    let engine = engine_with(rules, 2, scanner);
    let handle = engine.handle().blocking();
    let bystander = Uuid::new_v4();
    handle.scan_chunk(bystander, b"xx abc".to_vec()).unwrap();

    let big = Uuid::new_v4();
    let err = handle.scan_chunk(big, vec![0; 101]).unwrap_err();
    assert!(
        err.to_string().contains("exceeds the limit of 100 bytes"),
        "{err}"
    );

    // A line sent to a chunk stream is no part of it: its shard refuses it
    // alone (and counts it), and the stream goes on as it was (issue 13;
    // the acknowledged and admitted appends tell their caller, see
    // tests/refusals.rs).
    let mixed = Uuid::new_v4();
    handle.scan_chunk(mixed, b"abc".to_vec()).unwrap();
    handle.scan_line(mixed, b"a line".to_vec()).unwrap();
    let results = handle.get_matches(mixed).unwrap().unwrap();
    assert_eq!((results.stats.bytes, results.stats.chunks), (3, 1));
    handle.scan_chunk(mixed, b"x".to_vec()).unwrap();
    handle.reset_stream(mixed).unwrap();
    handle.scan_chunk(mixed, b"abc".to_vec()).unwrap();
    assert_eq!(handle.close_stream(mixed).unwrap().unwrap().stats.bytes, 3);

    let unknown = Uuid::new_v4();
    assert_eq!(handle.get_matches(unknown).unwrap(), None);
    assert_eq!(handle.close_stream(unknown).unwrap(), None);
    let err = handle.reset_stream(unknown).unwrap_err();
    assert!(
        matches!(&err, EngineError::Scan(e) if matches!(**e, ScanError::UnknownStream(id) if id == unknown)),
        "{err}"
    );

    // Closing a stream closes it: the id starts afresh, in any mode.
    handle.scan_chunk(mixed, b"abc".to_vec()).unwrap();
    handle.scan_line(mixed, b"a line".to_vec()).unwrap();
    assert_eq!(handle.close_stream(mixed).unwrap().unwrap().stats.bytes, 3);
    handle.scan_line(mixed, b"abc".to_vec()).unwrap();
    assert_eq!(handle.close_stream(mixed).unwrap().unwrap().stats.lines, 1);

    let results = handle.close_stream(bystander).unwrap().unwrap();
    assert_eq!(results.rules[0].identifier, "word");
    drop(engine);
    // A handle that outlives its engine is told so, for data and queries.
    assert!(matches!(
        handle.scan_chunk(bystander, b"abc".to_vec()),
        Err(EngineError::ShuttingDown)
    ));
    assert!(matches!(
        handle.get_matches(bystander),
        Err(EngineError::ShuttingDown)
    ));
    assert_eq!(handle.subscribe().recv_blocking(), None);
}

#[test]
fn closing_many_streams_at_once_gives_each_its_own_verdict_in_order() {
    let rules = compile(RULES);
    let engine = engine(2, compile(RULES));
    let handle = engine.handle().blocking();
    let data: Vec<(Uuid, Vec<u8>)> = (0..200)
        .map(|i| {
            let text = match i % 3 {
                0 => format!("abc {i} cab cab cab"),
                1 => format!("xx {i} aab bba ca"),
                _ => format!("ab {i}"),
            };
            (Uuid::new_v4(), text.into_bytes())
        })
        .collect();
    for (id, bytes) in &data {
        for chunk in bytes.chunks(3) {
            handle.scan_chunk(*id, chunk.to_vec()).unwrap();
        }
    }
    let never_opened = Uuid::new_v4();
    let mut ids: Vec<Uuid> = data.iter().map(|(id, _)| *id).collect();
    ids.insert(100, never_opened);
    let closed = handle.close_streams(&ids);
    assert_eq!(closed.len(), ids.len());
    assert!(
        matches!(closed[100], Ok(None)),
        "an unknown stream has no verdict"
    );
    let verdicts = closed.iter().filter(|c| !matches!(c, Ok(None)));
    for ((id, bytes), verdict) in data.iter().zip(verdicts) {
        let verdict = verdict.as_ref().unwrap().as_ref().unwrap();
        assert_eq!(verdict.stream, *id);
        assert_eq!(ours(&rules, verdict), reference(&rules, bytes));
    }
    assert!(handle.active_streams().unwrap().is_empty());
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let async_handle = engine.handle();
    runtime.block_on(async {
        async_handle.scan_chunk(ids[0], &b"abc"[..]).await.unwrap();
        let closed = async_handle.close_streams(&[ids[0], never_opened]).await;
        let verdict = closed[0].as_ref().unwrap().as_ref().unwrap();
        assert_eq!(ours(&rules, verdict), reference(&rules, b"abc"));
        assert!(matches!(closed[1], Ok(None)));
    });
}

#[test]
fn the_async_handle_works_from_a_tokio_runtime() {
    let rules = compile(RULES);
    let engine = engine(2, rules);
    let handle = engine.handle();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_time()
        .build()
        .unwrap();
    let streams: Arc<Vec<Uuid>> = Arc::new((0..50).map(|_| Uuid::new_v4()).collect());
    runtime.block_on(async {
        let mut tasks = Vec::new();
        for id in streams.iter().copied() {
            let handle = handle.clone();
            tasks.push(tokio::spawn(async move {
                for chunk in [&b"xx ab"[..], b"c yy cab cab", b" cab"] {
                    handle.scan_chunk(id, chunk).await.unwrap();
                }
                handle.close_stream(id).await.unwrap().unwrap()
            }));
        }
        for task in tasks {
            let results = task.await.unwrap();
            let names: Vec<_> = results
                .rules
                .iter()
                .map(|r| r.identifier.as_str())
                .collect();
            assert_eq!(names, ["word", "many"]);
        }
        assert!(handle.active_streams().await.unwrap().is_empty());
        handle.shutdown().await.unwrap();
    });
    drop(engine);
}

#[test]
fn a_verdict_that_times_out_is_an_error_and_a_close_still_closes() {
    // The condition loops long enough to meet YARA-X's timeout (checked
    // about once a second).
    let rules = compile(
        r#"rule slow { strings: $a = "abc" condition: $a and for all i in (0..4000000000) : (i >= 0) }"#,
    );
    let scanner = ScannerConfig {
        scan_timeout: Some(Duration::from_secs(1)),
        ..ScannerConfig::default()
    };
    let engine = engine_with(rules, 1, scanner);
    let handle = engine.handle().blocking();
    let (slow, bystander) = (Uuid::new_v4(), Uuid::new_v4());
    handle.scan_chunk(slow, b"xx abc".to_vec()).unwrap();
    handle.scan_chunk(bystander, b"zzz".to_vec()).unwrap();
    let timed_out = handle.get_matches(slow).unwrap_err();
    assert!(timed_out.to_string().contains("tim"), "{timed_out}");
    // The stream stays open and takes more data.
    handle.scan_chunk(slow, b" more".to_vec()).unwrap();
    assert!(handle.active_streams().unwrap().contains(&slow));
    assert!(handle.close_stream(slow).is_err());
    assert!(!handle.active_streams().unwrap().contains(&slow));
    let results = handle.close_stream(bystander).unwrap().unwrap();
    assert!(results.rules.is_empty());
    drop(engine);
}
