//! Tests of the engine that need to reach inside it: fault injection.

use std::time::Duration;

use super::*;
use crate::{EngineConfig, MultiStreamScanner, ScannerConfig, Uuid};

/// A chunk that makes the shard panic as it appends it.
pub(super) const PANIC_CHUNK: &[u8] = b"<injected panic>";

const RULES: &str = r#"
rule secret { strings: $a = "secret" condition: $a }
rule two_words { strings: $a = "alpha" $b = "omega" condition: $a and $b }
"#;

fn rules() -> RuleSet {
    RuleSet::from_source(RULES, 1024).unwrap()
}

fn engine(shards: usize) -> Engine {
    let config = EngineConfig {
        shards,
        ..EngineConfig::default()
    };
    Engine::start(rules(), config).unwrap()
}

/// Stream ids that hash to `shard`.
fn streams_on(handle: &BlockingHandle, shard: usize, count: usize) -> Vec<Uuid> {
    (0u128..)
        .map(Uuid::from_u128)
        .filter(|id| handle.shard_of(id) == shard)
        .take(count)
        .collect()
}

const CHUNKS: [&[u8]; 3] = [b"xx secr", b"et alpha yy", b" zz omega"];

fn feed(handle: &BlockingHandle, streams: &[Uuid]) {
    for chunk in CHUNKS {
        for stream in streams {
            handle.scan_chunk(*stream, chunk.to_vec()).unwrap();
        }
    }
}

/// The verdict the single-threaded scanner gives the same chunks.
fn expected(stream: Uuid) -> Vec<String> {
    let rules = rules();
    let mut scanner = MultiStreamScanner::new(&rules, ScannerConfig::default());
    for chunk in CHUNKS {
        scanner.scan_chunk(stream, chunk).unwrap();
    }
    let results = scanner.close_stream(&stream).unwrap().unwrap();
    results.rules.into_iter().map(|r| r.identifier).collect()
}

fn rule_names(results: &crate::StreamResults) -> Vec<String> {
    results.rules.iter().map(|r| r.identifier.clone()).collect()
}

#[test]
fn a_panic_in_one_shard_loses_its_streams_only_and_the_shard_restarts() {
    let engine = engine(2);
    let handle = engine.handle().blocking();
    let victims = streams_on(&handle, 0, 5);
    let bystanders = streams_on(&handle, 1, 5);
    feed(&handle, &victims);
    feed(&handle, &bystanders);

    handle.inject_panic(0);
    // A chunk queued behind the fault for a lost stream, and one for a new
    // stream of the same shard.
    let newcomer = streams_on(&handle, 0, 6)[5];
    handle.scan_chunk(victims[0], b"more".to_vec()).unwrap();
    handle.scan_chunk(newcomer, b"a secret".to_vec()).unwrap();

    // Stats pass through the shard after the fault: it has restarted.
    let stats = handle.stats().unwrap();
    assert_eq!(stats.shards[0].restarts, 1);
    assert_eq!(stats.shards[1].restarts, 0);
    assert_eq!(stats.shards[0].lost_streams, victims.len() as u64);
    let fault = stats.shards[0].last_fault.as_deref().unwrap();
    assert!(fault.contains("injected fault"), "{fault}");

    for victim in &victims {
        let lost = handle.get_matches(*victim).unwrap_err();
        assert!(
            matches!(lost, EngineError::StreamLost { stream, shard: 0, .. } if stream == *victim),
            "{lost}"
        );
        let refused = handle.scan_chunk(*victim, b"x".to_vec()).unwrap_err();
        assert!(matches!(refused, EngineError::StreamLost { .. }));
    }
    for bystander in &bystanders {
        let results = handle.close_stream(*bystander).unwrap().unwrap();
        assert_eq!(rule_names(&results), expected(*bystander));
        assert_eq!(results.stats.bytes, 27);
    }
    let results = handle.close_stream(newcomer).unwrap().unwrap();
    assert_eq!(rule_names(&results), ["secret"]);

    // Closing a lost stream acknowledges the loss; the id is free again.
    assert!(matches!(
        handle.close_stream(victims[0]),
        Err(EngineError::StreamLost { .. })
    ));
    handle.scan_chunk(victims[0], b"secret".to_vec()).unwrap();
    let results = handle.close_stream(victims[0]).unwrap().unwrap();
    assert_eq!(rule_names(&results), ["secret"]);
    // Resetting a lost stream acknowledges it too.
    handle.reset_stream(victims[1]).unwrap();
    assert_eq!(handle.get_matches(victims[1]).unwrap(), None);

    let report = engine.shutdown().unwrap();
    assert_eq!(report.results.len(), 0);
    assert_eq!(report.failed.len(), victims.len() - 2);
}

#[test]
fn a_query_that_meets_the_fault_gets_an_error_not_a_hang() {
    let engine = engine(1);
    let handle = engine.handle().blocking();
    let stream = Uuid::from_u128(7);
    handle.scan_chunk(stream, b"secret".to_vec()).unwrap();
    handle.inject_panic(0);
    let answer = handle.get_matches(stream);
    assert!(
        matches!(answer, Err(EngineError::StreamLost { .. })),
        "{answer:?}"
    );
    // Ticks go on after the restart: a due batch is searched without a query.
    handle
        .scan_chunk(Uuid::from_u128(8), b"secret".to_vec())
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let stats = handle.stats().unwrap();
    assert_eq!(stats.shards[0].scanner.batches, 1);
}

#[test]
fn a_fault_in_a_burst_loses_the_streams_it_would_have_opened() {
    let engine = engine(1);
    let handle = engine.handle().blocking();
    let (open, first, panicking, after) = (
        Uuid::from_u128(1),
        Uuid::from_u128(2),
        Uuid::from_u128(3),
        Uuid::from_u128(4),
    );
    handle.scan_chunk(open, b"secret".to_vec()).unwrap();
    let burst = vec![
        (first, bytes::Bytes::from_static(b"alpha")),
        (panicking, bytes::Bytes::from_static(PANIC_CHUNK)),
        (after, bytes::Bytes::from_static(b"omega")),
    ];
    handle.scan_chunks(burst).unwrap();
    for stream in [open, first, panicking, after] {
        let answer = handle.get_matches(stream);
        assert!(
            matches!(answer, Err(EngineError::StreamLost { .. })),
            "{answer:?}"
        );
    }
    // `after` was never opened: without the mark, its next chunk would
    // open it at offset 0 and hide the hole.
    assert!(handle.scan_chunk(after, b"x".to_vec()).is_err());
    let stats = handle.stats().unwrap();
    assert_eq!(stats.shards[0].lost_streams, 4);
    let report = engine.shutdown().unwrap();
    assert_eq!(report.failed.len(), 4);
    assert!(report.results.is_empty());
}

/// With a stream store, a fault loses the shard's resident streams only:
/// the stored ones were on disk, and come back with their whole state.
#[test]
fn stored_streams_survive_a_fault_of_their_shard() {
    let dir = tempfile::tempdir().unwrap();
    let config = EngineConfig {
        shards: 1,
        store: Some(crate::StoreConfig {
            path: dir.path().join("streams.redb"),
            max_resident_streams: 4,
            ..crate::StoreConfig::default()
        }),
        ..EngineConfig::default()
    };
    let engine = Engine::start(rules(), config).unwrap();
    let handle = engine.handle().blocking();
    let streams = streams_on(&handle, 0, 12);
    let (first, second, third) = (CHUNKS[0], CHUNKS[1], CHUNKS[2]);
    for stream in &streams {
        handle.scan_chunk(*stream, first.to_vec()).unwrap();
        handle.scan_chunk(*stream, second.to_vec()).unwrap();
    }
    handle.checkpoint().unwrap();
    let stored = handle.stats().unwrap().shards[0].stored_streams;
    assert_eq!(stored, 8, "4 of 12 streams resident");
    handle.inject_panic(0);
    let (mut lost, mut kept) = (0, 0);
    for stream in &streams {
        match handle
            .scan_chunk(*stream, third.to_vec())
            .and_then(|()| handle.close_stream(*stream))
        {
            Ok(Some(results)) => {
                assert_eq!(rule_names(&results), expected(*stream));
                kept += 1;
            }
            Err(EngineError::StreamLost { .. }) => lost += 1,
            other => panic!("{other:?}"),
        }
    }
    assert_eq!((kept, lost), (8, 4));
}
