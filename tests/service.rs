//! The HTTP service, driven over loopback by a real HTTP client: every
//! endpoint, the events stream, bad input, the token, and `/metrics`.

mod common;

use std::io::{BufRead, BufReader};
use std::time::Duration;

use yaraflow::service::{framing, Service, ServiceConfig};
use yaraflow::{EngineConfig, ScannerConfig, Uuid};

const RULES: &str = r#"
rule word { strings: $a = "abc" fullword condition: $a }
rule secret { strings: $a = "secret" condition: $a }
"#;

fn start(token: Option<&str>) -> Service {
    start_in(token).0
}

/// A service, and the folder its rules are loaded from.
fn start_in(token: Option<&str>) -> (Service, std::path::PathBuf) {
    start_with(RULES, token)
}

/// A service on `rules`, and the folder they are loaded from.
fn start_with(rules: &str, token: Option<&str>) -> (Service, std::path::PathBuf) {
    let dir = std::env::temp_dir().join(format!("yaraflow-service-{}", Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("rules.yar"), rules).unwrap();
    let config = ServiceConfig {
        listen: ([127, 0, 0, 1], 0).into(),
        metrics_listen: Some(([127, 0, 0, 1], 0).into()),
        max_body_bytes: 4096,
        token: token.map(str::to_string),
        rule_paths: vec![dir.clone()],
        engine: EngineConfig {
            shards: 2,
            scanner: ScannerConfig {
                max_batch_delay: Duration::from_millis(5),
                ..ScannerConfig::default()
            },
            ..EngineConfig::default()
        },
        ..ServiceConfig::default()
    };
    let service = Service::start(common::compile(rules), config).expect("service starts");
    (service, dir)
}

fn url(service: &Service, path: &str) -> String {
    format!("http://{}{}", service.api_addr(), path)
}

fn post(service: &Service, path: &str, body: &[u8]) -> (u16, serde_json::Value) {
    common::answer(ureq::post(&url(service, path)).send_bytes(body))
}

fn get(service: &Service, path: &str) -> (u16, serde_json::Value) {
    common::answer(ureq::get(&url(service, path)).call())
}

fn rule_names(results: &serde_json::Value) -> Vec<String> {
    results["rules"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["identifier"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn streams_are_fed_queried_reset_listed_and_closed_over_http() {
    let service = start(None);
    let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
    let (status, body) = post(&service, &format!("/v1/streams/{a}/chunks"), b"xx ab");
    assert_eq!((status, body["accepted_bytes"].as_u64()), (200, Some(5)));
    let (_, body) = post(&service, &format!("/v1/streams/{a}/chunks"), b"c yy");
    assert_eq!(body["offset"], 9, "the stream's new offset");
    let (status, body) = post(
        &service,
        &format!("/v1/streams/{b}/lines"),
        b"one secret\ntwo\n",
    );
    assert_eq!((status, body["accepted_lines"].as_u64()), (200, Some(2)));
    assert_eq!(body["offset"], 13, "line bytes, newlines excluded");

    let (status, results) = get(&service, &format!("/v1/streams/{a}"));
    assert_eq!(status, 200);
    assert_eq!(rule_names(&results), ["word"]);
    assert_eq!(
        results["rules"][0]["patterns"][0]["matches"][0]["offset"],
        3
    );
    assert_eq!(results["bytes"], 9);

    let (status, list) = get(&service, "/v1/streams?limit=1");
    assert_eq!((status, list["total"].as_u64()), (200, Some(2)));
    assert_eq!(list["streams"].as_array().unwrap().len(), 1);

    let (status, _) = post(&service, &format!("/v1/streams/{a}/reset"), b"");
    assert_eq!(status, 204);
    assert_eq!(get(&service, &format!("/v1/streams/{a}")).1["bytes"], 0);

    let (status, results) =
        common::answer(ureq::delete(&url(&service, &format!("/v1/streams/{b}"))).call());
    assert_eq!(status, 200);
    assert_eq!(rule_names(&results), ["secret"]);
    assert_eq!(results["lines"], 2);
    let (status, error) = get(&service, &format!("/v1/streams/{b}"));
    assert_eq!(
        (status, error["error"]["code"].as_str()),
        (404, Some("unknown_stream"))
    );

    assert_eq!(get(&service, "/healthz").0, 200);
    let (status, ready) = get(&service, "/readyz");
    assert_eq!((status, ready["status"].as_str()), (200, Some("ready")));
    let report = service.stop().unwrap();
    assert_eq!(report.results.len(), 1, "stream a was still open");
}

/// `PUT /v1/streams/{id}` says what file a stream is: rules reading
/// `filename`, `extension`, `filetype` (and externals the rules define)
/// see its values; bad openings are refused with a code naming them.
#[test]
fn a_stream_opened_as_a_file_has_its_externals() {
    let rules = r#"
        rule exe_secret { strings: $a = "secret" condition: $a and extension == ".exe" }
        rule pdf { condition: filetype == "application/pdf" and filename == "a.pdf" }
    "#;
    let (service, _) = start_with(rules, None);
    let put = |stream: Uuid, body: &str| {
        common::answer(
            ureq::put(&url(&service, &format!("/v1/streams/{stream}"))).send_string(body),
        )
    };
    let (exe, pdf, plain) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
    assert_eq!(put(exe, r#"{"file": {"name": "Setup.EXE"}}"#).0, 204);
    let opening = r#"{"mode": "chunks", "file": {"name": "x"}, "externals": {"filename": "a.pdf", "filetype": "application/pdf"}}"#;
    assert_eq!(put(pdf, opening).0, 204);
    assert_eq!(put(plain, "").0, 204, "an empty body opens a plain stream");
    for stream in [exe, pdf, plain] {
        post(
            &service,
            &format!("/v1/streams/{stream}/chunks"),
            b"a secret",
        );
    }
    let verdict = |stream| get(&service, &format!("/v1/streams/{stream}")).1;
    assert_eq!(rule_names(&verdict(exe)), ["exe_secret"]);
    assert_eq!(rule_names(&verdict(pdf)), ["pdf"]);
    assert!(rule_names(&verdict(plain)).is_empty());

    let refusals = [
        (r#"{"externals": {"owner": "root"}}"#, 400, "bad_external"),
        (r#"{"externals": {"filename": 3}}"#, 400, "bad_external"),
        (r#"{"externals": {"filename": ["a"]}}"#, 400, "bad_external"),
        (r#"{"file": {"name": "a", "size": 3}}"#, 400, "bad_body"),
        (r#"{"mode": "packets"}"#, 400, "bad_body"),
        ("not json", 400, "bad_body"),
        (r#"{"mode": "lines"}"#, 409, "mode_mismatch"),
    ];
    for (body, status, code) in refusals {
        let (got, error) = put(exe, body);
        assert_eq!(
            (got, error["error"]["code"].as_str()),
            (status, Some(code)),
            "{body}"
        );
    }
    let long = format!(r#"{{"externals": {{"filename": "{}"}}}}"#, "a".repeat(5000));
    assert_eq!(put(exe, &long).0, 413, "past max_body_bytes");
    // The refusals left the stream as it was.
    assert_eq!(rule_names(&verdict(exe)), ["exe_secret"]);
    service.stop().unwrap();
}

#[test]
fn the_bulk_endpoint_takes_many_streams_in_one_request() {
    let service = start(None);
    let ids: Vec<Uuid> = (0..20).map(|_| Uuid::new_v4()).collect();
    let first: Vec<_> = ids.iter().map(|id| (*id, &b"zz ab"[..])).collect();
    let second: Vec<_> = ids.iter().map(|id| (*id, &b"c zz"[..])).collect();
    for frames in [first, second] {
        let (status, body) = post(&service, "/v1/chunks", &framing::encode(frames));
        assert_eq!((status, body["accepted_chunks"].as_u64()), (202, Some(20)));
    }
    for id in &ids {
        let (_, results) = get(&service, &format!("/v1/streams/{id}"));
        assert_eq!(rule_names(&results), ["word"]);
    }
    let mut broken = framing::encode([(ids[0], &b"abc"[..])]);
    broken.pop();
    let (status, error) = post(&service, "/v1/chunks", &broken);
    assert_eq!(
        (status, error["error"]["code"].as_str()),
        (400, Some("bad_frame"))
    );
    assert!(error["error"]["message"]
        .as_str()
        .unwrap()
        .contains("byte 0"));
    service.stop().unwrap();
}

#[test]
fn bad_input_gets_json_errors_with_stable_codes() {
    let service = start(None);
    let id = Uuid::new_v4();
    let cases: Vec<(u16, &str, (u16, serde_json::Value))> = vec![
        (
            400,
            "bad_stream_id",
            post(&service, "/v1/streams/not-a-uuid/chunks", b"x"),
        ),
        (
            413,
            "body_too_large",
            post(&service, &format!("/v1/streams/{id}/chunks"), &[0; 5000]),
        ),
        (
            400,
            "unterminated_line",
            post(&service, &format!("/v1/streams/{id}/lines"), b"no newline"),
        ),
        (
            404,
            "unknown_stream",
            post(&service, &format!("/v1/streams/{id}/reset"), b""),
        ),
        (400, "bad_query", get(&service, "/v1/streams?limit=many")),
    ];
    for (status, code, (got_status, body)) in cases {
        assert_eq!(got_status, status, "{body}");
        assert_eq!(body["error"]["code"], code, "{body}");
        assert!(body["error"]["message"].as_str().unwrap().len() > 10);
    }
    // A chunk stream refuses lines, alone: the stream is left as it was.
    post(&service, &format!("/v1/streams/{id}/chunks"), b"abc");
    let (status, error) = post(&service, &format!("/v1/streams/{id}/lines"), b"a line\n");
    assert_eq!(
        (status, error["error"]["code"].as_str()),
        (409, Some("mode_mismatch"))
    );
    assert!(error["error"]["message"]
        .as_str()
        .unwrap()
        .contains("cannot take line"));
    let (status, results) = get(&service, &format!("/v1/streams/{id}"));
    assert_eq!((status, results["bytes"].as_u64()), (200, Some(3)));
    service.stop().unwrap();
}

#[test]
fn routes_need_the_token_when_one_is_set() {
    let service = start(Some("s3cret"));
    let path = url(&service, "/v1/streams");
    let (status, error) = common::answer(ureq::get(&path).call());
    assert_eq!(
        (status, error["error"]["code"].as_str()),
        (401, Some("unauthorized"))
    );
    let (status, _) = common::answer(ureq::get(&path).set("Authorization", "Bearer wrong").call());
    assert_eq!(status, 401);
    let (status, _) = common::answer(
        ureq::get(&path)
            .set("Authorization", "Bearer s3cret")
            .call(),
    );
    assert_eq!(status, 200);
    assert_eq!(get(&service, "/healthz").0, 200, "health checks stay open");
    service.stop().unwrap();
}

#[test]
fn match_events_arrive_as_server_sent_events() {
    let service = start(None);
    let response = ureq::get(&url(&service, "/v1/events")).call().unwrap();
    assert_eq!(response.content_type(), "text/event-stream");
    let mut lines = BufReader::new(response.into_reader()).lines();
    let id = Uuid::new_v4();
    post(
        &service,
        &format!("/v1/streams/{id}/chunks"),
        b"a secret here",
    );
    let line = lines.next().unwrap().unwrap();
    let event: serde_json::Value =
        serde_json::from_str(line.strip_prefix("data: ").expect("a data line")).unwrap();
    assert_eq!(event["stream"], id.to_string());
    assert_eq!(event["rule"], "secret");
    assert_eq!(event["offset"], 2);
    service.stop().unwrap();
}

#[test]
fn rules_reload_from_their_files_and_bad_rules_are_refused() {
    let (service, dir) = start_in(None);
    let old = Uuid::new_v4();
    post(&service, &format!("/v1/streams/{old}/chunks"), b"a secret");
    std::fs::write(
        dir.join("more.yar"),
        r#"rule new { strings: $a = "new" condition: $a }"#,
    )
    .unwrap();
    let (status, body) = get(&service, "/v1/rules");
    assert_eq!(
        (status, body["classes"]["stream_exact"].as_u64()),
        (200, Some(2))
    );
    std::fs::write(
        dir.join("header.yar"),
        "import \"math\"\n\
         rule mz { condition: uint16(0) == 0x5A4D and math.entropy(0, filesize) >= 0 }\n\
         rule big { condition: filesize > 10 and math.entropy(0, filesize) >= 0 }\n\
         rule words { strings: $w = /[a-z]{2,}/ condition: $w }",
    )
    .unwrap();
    let (status, body) = post(&service, "/v1/rules/reload", b"");
    assert_eq!((status, body["rules"].as_u64()), (200, Some(6)));
    let (_, body) = get(&service, "/v1/rules");
    let classes = &body["classes"];
    assert_eq!(
        (
            classes["stream_exact"].as_u64(),
            classes["whole_data_gated"].as_u64(),
            classes["whole_data_ungated"].as_u64(),
            classes["dense"].as_u64()
        ),
        (Some(4), Some(1), Some(1), Some(1)),
        "{body}"
    );
    assert_eq!(body["ungated"], serde_json::json!(["default.big"]));
    assert_eq!(body["dense"], serde_json::json!(["default.words"]));
    std::fs::remove_file(dir.join("header.yar")).unwrap();
    post(&service, "/v1/rules/reload", b"");
    let new = Uuid::new_v4();
    post(
        &service,
        &format!("/v1/streams/{new}/chunks"),
        b"new secret",
    );
    post(&service, &format!("/v1/streams/{old}/chunks"), b" new");
    assert_eq!(
        rule_names(&get(&service, &format!("/v1/streams/{old}")).1),
        ["secret"]
    );
    let mut names = rule_names(&get(&service, &format!("/v1/streams/{new}")).1);
    names.sort();
    assert_eq!(names, ["new", "secret"]);

    std::fs::write(dir.join("broken.yar"), "rule broken { condition: $nope }").unwrap();
    let (status, error) = post(&service, "/v1/rules/reload", b"");
    assert_eq!(
        (status, error["error"]["code"].as_str()),
        (400, Some("bad_rules"))
    );
    assert!(error["error"]["message"]
        .as_str()
        .unwrap()
        .contains("broken.yar"));
    service.stop().unwrap();
}

#[test]
fn metrics_are_exposed_in_prometheus_format() {
    let service = start(None);
    let id = Uuid::new_v4();
    post(&service, &format!("/v1/streams/{id}/chunks"), b"abc abc");
    get(&service, &format!("/v1/streams/{id}"));
    let metrics_url = format!("http://{}/metrics", service.metrics_addr().unwrap());
    let text = ureq::get(&metrics_url)
        .call()
        .unwrap()
        .into_string()
        .unwrap();
    for name in [
        "yaraflow_scanned_bytes_total",
        "yaraflow_streams_opened_total",
        "yaraflow_http_requests_total",
        "yaraflow_http_request_duration_seconds_bucket",
        "yaraflow_scan_latency_seconds_bucket",
    ] {
        assert!(text.contains(name), "{name} missing from:\n{text}");
    }
    assert!(text.contains(r#"route="/v1/streams/{stream}/chunks",status="2xx""#));
    // The API listener does not serve /metrics unless asked to.
    assert_eq!(get(&service, "/metrics").0, 404);
    service.stop().unwrap();
}
