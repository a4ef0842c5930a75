//! Refused requests leave streams as they were (issue 13, findings 5 and
//! 6): data of the wrong mode is refused alone with `mode_mismatch`, and a
//! bulk request is admitted whole or not at all, before any frame is
//! applied, naming the frame that was refused.

mod common;

use std::time::Duration;

use bytes::Bytes;
use yaraflow::service::{framing, Service, ServiceConfig};
use yaraflow::{Engine, EngineConfig, EngineError, ScanError, ScannerConfig, Uuid};

const RULES: &str = r#"
rule secret { strings: $a = "secret" condition: $a }
"#;

/// A service with one shard of at most `max_open` streams.
fn start(max_open: usize) -> Service {
    let config = ServiceConfig {
        listen: ([127, 0, 0, 1], 0).into(),
        metrics_listen: None,
        engine: EngineConfig {
            shards: 1,
            scanner: ScannerConfig {
                max_open_streams: max_open,
                max_batch_delay: Duration::from_millis(5),
                ..ScannerConfig::default()
            },
            ..EngineConfig::default()
        },
        ..ServiceConfig::default()
    };
    Service::start(common::compile(RULES), config).expect("service starts")
}

fn post(service: &Service, path: &str, body: &[u8]) -> (u16, serde_json::Value) {
    let url = format!("http://{}{}", service.api_addr(), path);
    common::answer(ureq::post(&url).send_bytes(body))
}

fn get(service: &Service, path: &str) -> (u16, serde_json::Value) {
    let url = format!("http://{}{}", service.api_addr(), path);
    common::answer(ureq::get(&url).call())
}

fn code(body: &serde_json::Value) -> &str {
    body["error"]["code"].as_str().unwrap_or("")
}

#[test]
fn data_of_the_wrong_mode_is_refused_alone_over_http() {
    let service = start(100);
    let chunks = Uuid::new_v4();
    let lines = Uuid::new_v4();
    assert_eq!(
        post(
            &service,
            &format!("/v1/streams/{chunks}/chunks"),
            b"a secret"
        )
        .0,
        200
    );
    assert_eq!(
        post(&service, &format!("/v1/streams/{lines}/lines"), b"one\n").0,
        200
    );

    let (status, body) = post(&service, &format!("/v1/streams/{chunks}/lines"), b"x\n");
    assert_eq!((status, code(&body)), (409, "mode_mismatch"), "{body}");
    let (status, body) = post(&service, &format!("/v1/streams/{lines}/chunks"), b"x");
    assert_eq!((status, code(&body)), (409, "mode_mismatch"), "{body}");

    // Both streams go on as if the refused requests had never come.
    let (status, results) = get(&service, &format!("/v1/streams/{chunks}"));
    assert_eq!(status, 200, "{results}");
    assert_eq!(results["bytes"], 8);
    assert_eq!(results["rules"][0]["identifier"], "secret");
    let (status, body) = post(&service, &format!("/v1/streams/{chunks}/chunks"), b" more");
    assert_eq!((status, body["offset"].as_u64()), (200, Some(13)));
    let (status, body) = post(&service, &format!("/v1/streams/{lines}/lines"), b"two\n");
    assert_eq!((status, body["offset"].as_u64()), (200, Some(6)));
    let report = service.stop().unwrap();
    assert!(report.failed.is_empty(), "{:?}", report.failed);
    assert_eq!(report.results.len(), 2);
}

#[test]
fn a_refused_append_keeps_the_idle_close_event() {
    let config = EngineConfig {
        shards: 1,
        idle_timeout: Some(Duration::from_millis(300)),
        tick: Duration::from_millis(5),
        ..EngineConfig::default()
    };
    let engine = Engine::start(common::compile(RULES), config).unwrap();
    let handle = engine.handle();
    let closes = handle.subscribe_closes();
    let stream = Uuid::new_v4();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        assert_eq!(handle.scan_chunk_acked(stream, &b"the secret"[..]).await.unwrap(), 10);
        let refused = handle
            .scan_lines_acked(stream, vec![Bytes::from_static(b"a line")])
            .await
            .unwrap_err();
        assert!(
            matches!(&refused, EngineError::Scan(e) if matches!(**e, ScanError::ModeMismatch { .. })),
            "{refused:?}"
        );
    });
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let event = loop {
        if let Some(event) = closes.try_recv() {
            break event;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the idle stream closed without an event"
        );
        std::thread::sleep(Duration::from_millis(10));
    };
    assert_eq!(event.results.stream, stream);
    assert_eq!(event.results.stats.bytes, 10);
    assert_eq!(event.results.rules[0].identifier, "secret");
    drop(engine);
}

#[test]
fn a_bulk_request_past_the_stream_limit_is_refused_whole() {
    let service = start(2);
    let old = Uuid::new_v4();
    assert_eq!(
        post(&service, &format!("/v1/streams/{old}/chunks"), b"secret").0,
        200
    );
    let new: Vec<Uuid> = (0..3).map(|_| Uuid::new_v4()).collect();
    // Frame 0 feeds the open stream, frames 1 and 2 open one stream each:
    // the second new stream is one too many.
    let frames = [
        (old, &b" more"[..]),
        (new[0], b"a"),
        (new[1], b"b"),
        (new[0], b"c"),
    ];
    let (status, body) = post(&service, "/v1/chunks", &framing::encode(frames));
    assert_eq!((status, code(&body)), (503, "too_many_streams"), "{body}");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains("item 2"), "{message}");
    // Nothing was applied: no stream opened, the open one unchanged.
    for id in &new {
        assert_eq!(get(&service, &format!("/v1/streams/{id}")).0, 404);
    }
    let (status, results) = get(&service, &format!("/v1/streams/{old}"));
    assert_eq!((status, results["bytes"].as_u64()), (200, Some(6)));
    // Within the limit, the same kind of request is taken.
    let frames = [(old, &b" more"[..]), (new[0], b"a")];
    assert_eq!(
        post(&service, "/v1/chunks", &framing::encode(frames)).0,
        202
    );
    let (_, results) = get(&service, &format!("/v1/streams/{old}"));
    assert_eq!(results["bytes"], 11);
    service.stop().unwrap();
}

#[test]
fn a_bulk_frame_for_a_line_stream_is_refused_whole() {
    let service = start(100);
    let lines = Uuid::new_v4();
    let fresh = Uuid::new_v4();
    assert_eq!(
        post(&service, &format!("/v1/streams/{lines}/lines"), b"one\n").0,
        200
    );
    let frames = [(fresh, &b"secret"[..]), (lines, b"x")];
    let (status, body) = post(&service, "/v1/chunks", &framing::encode(frames));
    assert_eq!((status, code(&body)), (409, "mode_mismatch"), "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("item 1"),
        "{body}"
    );
    assert_eq!(get(&service, &format!("/v1/streams/{fresh}")).0, 404);
    let (status, results) = get(&service, &format!("/v1/streams/{lines}"));
    assert_eq!(
        (status, results["bytes"].as_u64()),
        (200, Some(3)),
        "{results}"
    );
    let (status, body) = post(&service, &format!("/v1/streams/{lines}/lines"), b"two\n");
    assert_eq!((status, body["offset"].as_u64()), (200, Some(6)));
    service.stop().unwrap();
}
