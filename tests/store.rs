//! The stream store: eviction past the resident bounds, checkpoints and
//! restarts, idle timeouts, rules that changed, damaged entries. Verdicts
//! must equal whole-buffer scans whether a stream stayed in memory, was
//! evicted and restored any number of times, or crossed a restart.

mod common;

use std::path::Path;
use std::time::Duration;

use common::{compile, ours, reference};
use proptest::prelude::*;
use yaraflow::store::{ContextStore, OnRulesChange};
use yaraflow::test_support::write_raw;
use yaraflow::{
    BlockingHandle, Engine, EngineConfig, EngineError, RuleSet, StoreConfig, StoreError, Uuid,
};

/// Context-sensitive, anchored and counting rules: a context restored
/// wrong (tail, head, spans, counters) changes their verdicts.
const RULES: &str = r#"
rule word { strings: $a = "abc" fullword condition: $a }
rule starts { strings: $a = /^ab/ condition: $a }
rule ends { strings: $a = /ca$/ condition: $a }
rule at_two { strings: $a = "ba" condition: $a at 2 }
rule many { strings: $a = "cab" condition: #a >= 3 }
rule spans { strings: $a = /b[a-c]{2,6}c/ condition: $a }
rule both { strings: $a = "aab" $b = "bba" condition: $a and @b[1] > @a[1] }
"#;

fn store_config(path: &Path, max_resident_streams: usize) -> StoreConfig {
    StoreConfig {
        path: path.to_path_buf(),
        max_resident_streams,
        ..StoreConfig::default()
    }
}

fn start(path: &Path, max_resident_streams: usize, shards: usize) -> Result<Engine, EngineError> {
    let config = EngineConfig {
        shards,
        store: Some(store_config(path, max_resident_streams)),
        tick: Duration::from_millis(1),
        ..EngineConfig::default()
    };
    Engine::start(compile(RULES), config)
}

/// Closes every stream and checks each verdict against a whole-buffer scan.
fn assert_verdicts(handle: &BlockingHandle, rules: &RuleSet, streams: &[(Uuid, Vec<u8>)]) {
    let ids: Vec<Uuid> = streams.iter().map(|(id, _)| *id).collect();
    let closed = handle.close_streams(&ids);
    for ((id, data), result) in streams.iter().zip(closed) {
        let results = result.unwrap().unwrap_or_else(|| panic!("{id} is open"));
        assert_eq!(results.stats.bytes, data.len() as u64);
        assert_eq!(
            ours(rules, &results),
            reference(rules, data),
            "stream {id}: \"{}\"",
            data.escape_ascii()
        );
    }
}

#[derive(Debug, Clone)]
struct Case {
    streams: Vec<Vec<u8>>,
    chunk: usize,
    /// Ask for a checkpoint (and so an eviction round) every this many
    /// chunks.
    checkpoint_every: usize,
    /// Restart the engine after this many chunks (0: never).
    restart_after: usize,
}

fn case() -> impl Strategy<Value = Case> {
    let data = proptest::collection::vec(proptest::sample::select(b"abc \n".to_vec()), 0..120);
    (
        proptest::collection::vec(data, 1..8),
        1usize..9,
        1usize..6,
        prop_oneof![Just(0usize), 1usize..40],
    )
        .prop_map(|(streams, chunk, checkpoint_every, restart_after)| Case {
            streams,
            chunk,
            checkpoint_every,
            restart_after,
        })
}

/// Feeds the case's streams round-robin through an engine that may hold one
/// context per shard in memory, with checkpoints (evicting all but one) and
/// maybe a restart on the way.
fn run(case: &Case) -> Result<(), TestCaseError> {
    let dir = common::store_dir();
    let path = dir.path().join("streams.redb");
    let rules = compile(RULES);
    let mut engine = start(&path, 2, 2).unwrap();
    let streams: Vec<(Uuid, Vec<u8>)> = case
        .streams
        .iter()
        .map(|data| (Uuid::new_v4(), data.clone()))
        .collect();
    for (id, _) in &streams {
        engine
            .handle()
            .blocking()
            .scan_chunk(*id, Vec::new())
            .unwrap();
    }
    let (mut step, mut offset) = (0usize, 0);
    while streams.iter().any(|(_, data)| offset < data.len()) {
        for (id, data) in &streams {
            let end = (offset + case.chunk).min(data.len());
            if offset >= end {
                continue;
            }
            let handle = engine.handle().blocking();
            handle.scan_chunk(*id, data[offset..end].to_vec()).unwrap();
            step += 1;
            if step.is_multiple_of(case.checkpoint_every) {
                handle.checkpoint().unwrap();
            }
            if step == case.restart_after {
                let report = engine.shutdown().unwrap();
                prop_assert!(report.results.is_empty() && report.failed.is_empty());
                engine = start(&path, 2, 2).unwrap();
            }
        }
        offset += case.chunk;
    }
    let handle = engine.handle().blocking();
    assert_verdicts(&handle, &rules, &streams);
    prop_assert!(handle.active_streams().unwrap().is_empty());
    Ok(())
}

/// The differential property with a tiny resident bound: the contract
/// holds whatever was evicted, restored or carried across a restart.
/// About 100 durable commits per case: at most 128 cases.
#[test]
fn evicted_and_restored_streams_match_whole_buffer_scans() {
    common::capped_runner(64, 128, "tests/store.proptest-regressions")
        .run(&case(), |case| run(&case))
        .unwrap();
}

#[test]
fn eviction_keeps_the_bound_and_restores_on_demand() {
    let dir = common::store_dir();
    let path = dir.path().join("streams.redb");
    let rules = compile(RULES);
    let engine = start(&path, 10, 1).unwrap();
    let handle = engine.handle().blocking();
    let streams: Vec<(Uuid, Vec<u8>)> = (0..100)
        .map(|i| {
            (
                Uuid::new_v4(),
                format!("ab cab cab {i} cab abc ca").into_bytes(),
            )
        })
        .collect();
    for (id, data) in &streams {
        handle.scan_chunk(*id, data[..7].to_vec()).unwrap();
    }
    handle.checkpoint().unwrap();
    let stats = handle.stats().unwrap();
    let stored = stats.shards[0].stored_streams;
    assert!(
        stored >= 90,
        "{stored} of 100 streams stored with a bound of 10"
    );
    assert_eq!(stats.open_streams(), 100);
    assert_eq!(handle.active_streams().unwrap().len(), 100);
    // A stored stream's offsets come from the store, without a restore.
    let offsets = handle.stream_offsets(streams[0].0).unwrap().unwrap();
    assert_eq!((offsets.offset, offsets.durable_offset), (7, Some(7)));
    for (id, data) in &streams {
        handle.scan_chunk(*id, data[7..].to_vec()).unwrap();
    }
    assert_verdicts(&handle, &rules, &streams);
    engine.shutdown().unwrap();
    let store = ContextStore::open(&path, 1 << 20).unwrap();
    assert_eq!(store.len().unwrap(), 0, "closed streams leave no entry");
}

#[test]
fn a_restart_resumes_every_stream_from_the_store() {
    let dir = common::store_dir();
    let path = dir.path().join("streams.redb");
    let rules = compile(RULES);
    let streams: Vec<(Uuid, Vec<u8>)> = (0..50)
        .map(|i| {
            (
                Uuid::new_v4(),
                format!("ab{i} cab cab abc cab ca").into_bytes(),
            )
        })
        .collect();
    let engine = start(&path, 1_000, 2).unwrap();
    let handle = engine.handle().blocking();
    for (id, data) in &streams {
        handle.scan_chunk(*id, data[..9].to_vec()).unwrap();
    }
    let offsets = handle.stream_offsets(streams[0].0).unwrap().unwrap();
    assert_eq!((offsets.offset, offsets.durable_offset), (9, None));
    let report = engine.shutdown().unwrap();
    assert_eq!((report.kept, report.results.len()), (50, 0));

    let engine = start(&path, 1_000, 3).unwrap(); // another shard count
    let handle = engine.handle().blocking();
    assert_eq!(handle.active_streams().unwrap().len(), 50);
    for (id, data) in &streams {
        let offsets = handle.stream_offsets(*id).unwrap().unwrap();
        assert_eq!((offsets.offset, offsets.durable_offset), (9, Some(9)));
        handle.scan_chunk(*id, data[9..].to_vec()).unwrap();
    }
    assert_verdicts(&handle, &rules, &streams);
}

#[test]
fn other_rules_are_refused_unless_told_to_discard() {
    let dir = common::store_dir();
    let path = dir.path().join("streams.redb");
    let engine = start(&path, 1_000, 1).unwrap();
    let stream = Uuid::new_v4();
    engine
        .handle()
        .blocking()
        .scan_chunk(stream, &b"abc"[..])
        .unwrap();
    assert_eq!(engine.shutdown().unwrap().kept, 1);

    let other = compile(r#"rule other { strings: $a = "zz" condition: $a }"#);
    let config = |on_rules_change| EngineConfig {
        shards: 1,
        store: Some(StoreConfig {
            on_rules_change,
            ..store_config(&path, 1_000)
        }),
        ..EngineConfig::default()
    };
    let refused = Engine::start(
        compile(r#"rule other { strings: $a = "zz" condition: $a }"#),
        config(OnRulesChange::Refuse),
    );
    match refused {
        Err(EngineError::Store(StoreError::RulesChanged { streams: 1, .. })) => {}
        other => panic!("expected RulesChanged, got {:?}", other.map(|_| ())),
    }
    let message = StoreError::RulesChanged {
        path: path.clone(),
        streams: 1,
    }
    .to_string();
    assert!(message.contains("--discard-stored-streams"), "{message}");
    let engine = Engine::start(other, config(OnRulesChange::Discard)).unwrap();
    let handle = engine.handle().blocking();
    assert!(handle.active_streams().unwrap().is_empty());
    assert_eq!(handle.stream_offsets(stream).unwrap(), None);
}

#[test]
fn a_damaged_entry_fails_its_stream_only() {
    let dir = common::store_dir();
    let path = dir.path().join("streams.redb");
    let rules = compile(RULES);
    let (damaged, truncated, good) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
    let engine = start(&path, 1_000, 2).unwrap();
    let handle = engine.handle().blocking();
    for id in [damaged, truncated, good] {
        handle.scan_chunk(id, &b"ab cab "[..]).unwrap();
    }
    assert_eq!(engine.shutdown().unwrap().kept, 3);
    {
        let store = ContextStore::open(&path, 1 << 20).unwrap();
        write_raw(
            &store,
            damaged,
            b"YFSC\x01\x00garbage that is long enough to have a header",
        )
        .unwrap();
        write_raw(&store, truncated, b"YFSC\x01").unwrap();
    }
    let engine = start(&path, 1_000, 2).unwrap();
    let handle = engine.handle().blocking();
    for id in [damaged, truncated] {
        let error = handle.close_stream(id).unwrap_err().to_string();
        assert!(
            error.contains(&format!("stored context of stream {id} is damaged")),
            "{error}"
        );
        // Acknowledged: the stream is gone and opens anew.
        assert_eq!(handle.stream_offsets(id).unwrap(), None);
    }
    handle.scan_chunk(good, &b"cab abc ca"[..]).unwrap();
    assert_verdicts(&handle, &rules, &[(good, b"ab cab cab abc ca".to_vec())]);
}

#[test]
fn idle_streams_close_with_their_final_verdict_as_an_event() {
    let dir = common::store_dir();
    let path = dir.path().join("streams.redb");
    let rules = compile(RULES);
    let config = EngineConfig {
        shards: 2,
        store: Some(store_config(&path, 2)),
        idle_timeout: Some(Duration::from_millis(300)),
        tick: Duration::from_millis(5),
        ..EngineConfig::default()
    };
    let engine = Engine::start(compile(RULES), config).unwrap();
    let handle = engine.handle().blocking();
    let closes = handle.subscribe_closes();
    let streams: Vec<(Uuid, Vec<u8>)> = (0..20)
        .map(|i| (Uuid::new_v4(), format!("ab cab {i} cab cab").into_bytes()))
        .collect();
    for (id, data) in &streams {
        handle.scan_chunk(*id, data.clone()).unwrap();
    }
    handle.checkpoint().unwrap(); // most of them are stored now
    let mut seen = std::collections::HashMap::new();
    while seen.len() < streams.len() {
        let event = closes.recv_blocking().expect("a closed stream");
        assert_eq!(event.reason, yaraflow::engine::CloseReason::IdleTimeout);
        seen.insert(event.results.stream, event.results);
    }
    for (id, data) in &streams {
        assert_eq!(ours(&rules, &seen[id]), reference(&rules, data));
    }
    assert!(handle.active_streams().unwrap().is_empty());
    let stats = handle.stats().unwrap();
    assert_eq!(stats.open_streams(), 0);
    handle.checkpoint().unwrap(); // a write barrier: pending deletions are done
    drop(engine);
    let store = ContextStore::open(&path, 1 << 20).unwrap();
    assert_eq!(
        store.len().unwrap(),
        0,
        "idle-closed streams leave no entry"
    );
}

const R1: &str = r#"rule word { strings: $a = "abc" fullword condition: $a }"#;
const R2: &str = r#"rule word { strings: $a = "abc" fullword condition: $a }
rule other { strings: $a = "zzz" condition: $a }"#;

fn config(path: &Path, store: StoreConfig, tick: Duration) -> EngineConfig {
    EngineConfig {
        shards: 1,
        store: Some(StoreConfig {
            path: path.to_path_buf(),
            ..store
        }),
        tick,
        ..EngineConfig::default()
    }
}

/// A stream checkpointed under R1, still open on R1 after a reload to R2,
/// is closed by the graceful shutdown (its verdict is in the report), and
/// its entry goes: the next start on R2 is not refused. (Found by review:
/// the entry stayed.)
#[test]
fn a_shutdown_after_a_reload_removes_the_entries_of_the_streams_it_closes() {
    let dir = common::store_dir();
    let path = dir.path().join("s.redb");
    let cfg = config(&path, StoreConfig::default(), Duration::from_millis(1));
    let engine = Engine::start(compile(R1), cfg.clone()).unwrap();
    let h = engine.handle().blocking();
    let x = Uuid::new_v4();
    h.scan_chunk(x, b"abc ".to_vec()).unwrap();
    h.checkpoint().unwrap();
    h.reload_rules(compile(R2)).unwrap();
    let report = engine.shutdown().unwrap();
    assert!(
        report.results.iter().any(|r| r.stream == x),
        "closed at shutdown"
    );
    assert_eq!(report.kept, 0);
    {
        let store = ContextStore::open(&path, 1 << 20).unwrap();
        let listing = store.entries().unwrap();
        eprintln!("entries left after shutdown: {:?}", listing.entries);
    }
    let restarted = Engine::start(compile(R2), cfg);
    assert!(
        restarted.is_ok(),
        "restart on the reloaded rules: {:?}",
        restarted.err()
    );
}

/// The same with a stream that was evicted (stored) before the reload.
#[test]
fn a_shutdown_after_a_reload_removes_the_entries_of_stored_streams_it_closes() {
    let dir = common::store_dir();
    let path = dir.path().join("s.redb");
    let store = StoreConfig {
        max_resident_streams: 1,
        ..StoreConfig::default()
    };
    let cfg = config(&path, store, Duration::from_millis(1));
    let engine = Engine::start(compile(R1), cfg.clone()).unwrap();
    let h = engine.handle().blocking();
    let (x, y) = (Uuid::new_v4(), Uuid::new_v4());
    h.scan_chunk(x, b"abc ".to_vec()).unwrap();
    std::thread::sleep(Duration::from_millis(5));
    h.scan_chunk(y, b"abc ".to_vec()).unwrap();
    h.checkpoint().unwrap();
    assert_eq!(h.stats().unwrap().shards[0].stored_streams, 1);
    h.reload_rules(compile(R2)).unwrap();
    let report = engine.shutdown().unwrap();
    eprintln!("results {} kept {}", report.results.len(), report.kept);
    let store = ContextStore::open(&path, 1 << 20).unwrap();
    let left = store.len().unwrap();
    assert_eq!(left, 0, "entries of streams closed at shutdown");
}

/// The offset acknowledged for a chunk is the stream's, even when the
/// bounds evicted the stream right after taking it (here: a context larger
/// than the bound). (Found by review: it was 0.)
#[test]
fn an_acked_chunk_reports_its_offset_even_when_its_stream_was_evicted() {
    let dir = common::store_dir();
    let path = dir.path().join("s.redb");
    let store = StoreConfig {
        max_resident_bytes: 1,
        ..StoreConfig::default()
    };
    let engine =
        Engine::start(compile(R1), config(&path, store, Duration::from_millis(1))).unwrap();
    let h = engine.handle();
    let x = Uuid::new_v4();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let first = rt
        .block_on(h.scan_chunk_acked(x, b"hello".to_vec()))
        .unwrap();
    let second = rt
        .block_on(h.scan_chunk_acked(x, b" world".to_vec()))
        .unwrap();
    let offsets = h.blocking().stream_offsets(x).unwrap().unwrap();
    eprintln!("acked {first}, {second}; stream_offsets {:?}", offsets);
    assert_eq!((first, second), (5, 11));
}

/// Line mode: an empty line changes the context (its line count) but not
/// its offset; an eviction after a checkpoint must still write it, or the
/// restored stream loses the line and later matches report wrong lines.
/// (Found by review.)
#[test]
fn an_empty_line_survives_a_checkpoint_and_an_eviction() {
    let run = |evict: bool| {
        let dir = common::store_dir();
        let path = dir.path().join("s.redb");
        let store = StoreConfig {
            max_resident_streams: 1,
            ..StoreConfig::default()
        };
        let engine =
            Engine::start(compile(R1), config(&path, store, Duration::from_secs(3600))).unwrap();
        let h = engine.handle().blocking();
        let (x, y) = (Uuid::new_v4(), Uuid::new_v4());
        h.scan_line(x, b"abc".to_vec()).unwrap();
        h.checkpoint().unwrap(); // x durable at 3
        h.scan_line(x, b"".to_vec()).unwrap(); // line 2, still offset 3
        std::thread::sleep(Duration::from_millis(5));
        if evict {
            h.scan_line(y, b"zz".to_vec()).unwrap(); // over the bound: x is evicted
            assert_eq!(h.stats().unwrap().shards[0].stored_streams, 1);
        }
        h.scan_line(x, b"abc".to_vec()).unwrap(); // line 3
        let r = h.close_stream(x).unwrap().unwrap();
        let lines: Vec<u64> = r.rules[0].patterns[0]
            .matches
            .iter()
            .map(|m| m.line)
            .collect();
        (r.stats.lines, r.stats.chunks, lines)
    };
    let resident = run(false);
    let evicted = run(true);
    eprintln!("resident {resident:?} evicted {evicted:?}");
    assert_eq!(resident, evicted);
}

/// Writes a store of 200 streams at `path` and returns its bytes.
fn filled_store(path: &std::path::Path) -> Vec<u8> {
    let cfg = config(path, StoreConfig::default(), Duration::from_millis(1));
    let engine = Engine::start(compile(R1), cfg).unwrap();
    let h = engine.handle().blocking();
    for i in 0..200u32 {
        h.scan_chunk(Uuid::new_v4(), format!("abc {i} abc").into_bytes())
            .unwrap();
    }
    engine.shutdown().unwrap();
    std::fs::read(path).unwrap()
}

/// A damaged store file (byte flips and truncations all over it): errors,
/// never a panic. (Found by review: redb panics on some damaged files.)
#[test]
fn a_damaged_store_file_gives_errors_not_panics() {
    let dir = common::store_dir();
    let path = dir.path().join("s.redb");
    let good = filled_store(&path);
    let mut panics = Vec::new();
    let mut outcomes = std::collections::BTreeMap::<String, usize>::new();
    let step = (good.len() / 300).max(1);
    for at in (0..good.len()).step_by(step) {
        for how in 0..2 {
            let mut bad = good.clone();
            if how == 0 {
                bad[at] ^= 0xff;
            } else {
                bad.truncate(at);
            }
            let p = dir.path().join("bad.redb");
            std::fs::write(&p, &bad).unwrap();
            let r = std::panic::catch_unwind(|| {
                let store = ContextStore::open(&p, 1 << 20)?;
                let l = store.entries()?;
                for e in &l.entries {
                    let _ = store.read(e.stream);
                }
                Ok::<_, yaraflow::StoreError>((l.entries.len(), l.damaged.len()))
            });
            match r {
                Err(e) => panics.push((
                    at,
                    how,
                    e.downcast_ref::<String>()
                        .cloned()
                        .or(e.downcast_ref::<&str>().map(|s| s.to_string())),
                )),
                Ok(Ok(x)) => *outcomes.entry(format!("ok {x:?}")).or_default() += 1,
                Ok(Err(e)) => {
                    *outcomes
                        .entry(format!(
                            "err {}",
                            e.to_string().chars().take(60).collect::<String>()
                        ))
                        .or_default() += 1
                }
            }
        }
    }
    eprintln!("file {} bytes; outcomes {:#?}", good.len(), outcomes);
    assert!(
        panics.is_empty(),
        "{} panics, first: {:?}",
        panics.len(),
        &panics[..panics.len().min(5)]
    );
}

/// The scanner's `context_bytes` (what the resident bounds count) equals
/// the sum of its contexts' `memory_bytes` after every operation, in chunk
/// and line mode, through evictions and restores.
#[test]
fn resident_bytes_never_drift_from_the_contexts() {
    use yaraflow::{MultiStreamScanner, ScannerConfig};
    let rules = compile(RULES);
    let mut next = common::xorshift(0xdead_beef_cafe_f00du64);
    for _ in 0..30 {
        let cfg = ScannerConfig {
            max_batch_bytes: 1 + (next() % 200) as usize,
            ..ScannerConfig::default()
        };
        let mut s = MultiStreamScanner::new(&rules, cfg);
        let ids: Vec<Uuid> = (0..6).map(|_| Uuid::new_v4()).collect();
        let mut kept = Vec::new();
        for step in 0..400 {
            let id = ids[(next() % 6) as usize];
            let lines = ids.iter().position(|i| *i == id).unwrap() >= 4;
            let data: Vec<u8> = (0..(next() % 30))
                .map(|_| b"abc \n"[(next() % 5) as usize])
                .collect();
            let _ = match next() % 12 {
                0..=4 if lines => s.scan_line(id, &data).map(|_| ()),
                0..=4 => s.scan_chunk(id, &data).map(|_| ()),
                5 => s.get_matches(&id).map(|_| ()),
                6 => s.close_stream(&id).map(|_| ()),
                7 => s.reset_stream(&id).map(|_| ()),
                8 => {
                    s.discard_stream(&id);
                    Ok(())
                }
                9 => s.evict_streams(&[id]).map(|mut c| kept.append(&mut c)),
                10 => {
                    for c in kept.drain(..) {
                        let _ = s.restore_stream(c);
                    }
                    Ok(())
                }
                _ => s.flush(),
            };
            let sum: usize = s.stream_contexts().map(|c| c.memory_bytes()).sum();
            assert_eq!(s.context_bytes(), sum, "step {step}");
        }
    }
}

/// Store-library panics (redb on some damaged files) are caught into
/// errors naming the damage, and print nothing: the damage loop runs in a
/// child process (this test binary again, output not captured), whose
/// stderr must hold no panic text while it reports that panics were caught.
#[test]
fn store_library_panics_are_caught_without_a_word_on_stderr() {
    const NAME: &str = "store_library_panics_are_caught_without_a_word_on_stderr";
    if std::env::var_os("YARAFLOW_DAMAGE_CHILD").is_some() {
        return damage_child();
    }
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", NAME, "--nocapture", "--test-threads", "1"])
        .env("YARAFLOW_DAMAGE_CHILD", "1")
        .output()
        .unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(out.status.success(), "{stdout}\n{stderr}");
    let caught: usize = stdout
        .lines()
        .find_map(|l| l.split("caught store panics: ").nth(1))
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("{stdout}"))
        .parse()
        .unwrap();
    assert!(
        caught > 0,
        "no damage made the store library panic: {stdout}"
    );
    assert!(
        !stderr.contains("panicked at"),
        "{caught} caught panics printed: {}",
        stderr.chars().take(2000).collect::<String>()
    );
}

/// The child of the test above: damages a store in many ways, prints how
/// many store operations panicked (each a `StoreError::Damaged`).
fn damage_child() {
    let dir = common::store_dir();
    let path = dir.path().join("s.redb");
    let good = filled_store(&path);
    let mut caught = 0;
    let step = (good.len() / 300).max(1);
    for at in (0..good.len()).step_by(step) {
        for how in 0..2 {
            let mut bad = good.clone();
            match how {
                0 => bad[at] ^= 0xff,
                _ => bad.truncate(at),
            }
            let p = dir.path().join("bad.redb");
            std::fs::write(&p, &bad).unwrap();
            let outcome = ContextStore::open(&p, 1 << 20).and_then(|store| {
                let listing = store.entries()?;
                for entry in &listing.entries {
                    store.read(entry.stream)?;
                }
                Ok(())
            });
            if let Err(yaraflow::StoreError::Damaged { .. }) = outcome {
                caught += 1;
            }
        }
    }
    println!("caught store panics: {caught}");
}
