//! `yaraflow loadtest` against a real service on loopback: it sends what
//! it says, counts errors, closes what it opened, and refuses other hosts.

mod common;

use std::time::Duration;

use yaraflow::service::{Service, ServiceConfig};
use yaraflow::EngineConfig;

fn start() -> Service {
    let config = ServiceConfig {
        listen: ([127, 0, 0, 1], 0).into(),
        metrics_listen: None,
        engine: EngineConfig {
            shards: 2,
            ..EngineConfig::default()
        },
        ..ServiceConfig::default()
    };
    let rules = yaraflow::RuleSet::from_paths(&["data/rules"], 1024).unwrap();
    Service::start(rules, config).expect("service starts")
}

fn loadtest(args: &[&str]) -> std::process::Output {
    let mut all = vec!["loadtest"];
    all.extend_from_slice(args);
    common::run_yaraflow(&all)
}

#[test]
fn a_bounded_run_sends_counts_and_cleans_up() {
    let service = start();
    let url = format!("http://{}", service.api_addr());
    let out = loadtest(&[
        "--url",
        &url,
        "--requests",
        "40",
        "--duration",
        "30",
        "--connections",
        "2",
        "--streams",
        "100",
        "--frames",
        "8",
        "--match-fraction",
        "0.5",
        "--close",
        "--json",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["requests_ok"], 40);
    assert_eq!(report["errors"], serde_json::json!({}));
    assert!(report["latency_ms"]["p99"].as_f64().unwrap() > 0.0);
    let stats = ureq::get(&format!("{url}/v1/streams"))
        .call()
        .unwrap()
        .into_string()
        .unwrap();
    let streams: serde_json::Value = serde_json::from_str(&stats).unwrap();
    assert_eq!(
        streams["streams"],
        serde_json::json!([]),
        "--close closed them: {streams}"
    );
    service.stop().unwrap();
}

#[test]
fn a_rate_is_kept_and_the_duration_bounds_the_run() {
    let service = start();
    let url = format!("http://{}", service.api_addr());
    let started = std::time::Instant::now();
    let out = loadtest(&[
        "--url",
        &url,
        "--rate",
        "50",
        "--duration",
        "1",
        "--connections",
        "2",
        "--json",
    ]);
    assert!(started.elapsed() < Duration::from_secs(20));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let sent = report["requests_ok"].as_u64().unwrap();
    assert!(
        (30..=70).contains(&sent),
        "about 50 requests in 1 s at 50/s, got {sent}"
    );
    service.stop().unwrap();
}

#[test]
fn errors_are_counted_by_code_and_other_hosts_refused() {
    let service = start();
    let url = format!("http://{}", service.api_addr());
    // 64 frames of 1 MiB each exceed the default body limit: every request
    // is refused with 413, and the run says so.
    let out = loadtest(&[
        "--url",
        &url,
        "--requests",
        "3",
        "--connections",
        "1",
        "--chunk-size",
        "1048576",
        "--frames",
        "20",
        "--json",
    ]);
    assert_eq!(out.status.code(), Some(1));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let errors = report["errors"].as_object().unwrap();
    assert!(
        errors.keys().any(|k| k.starts_with("HTTP 413")),
        "{errors:?}"
    );
    service.stop().unwrap();

    for bad in [
        "http://example.com:8080",
        "https://127.0.0.1:8080",
        "http://10.0.0.1",
    ] {
        let stderr = refused_url(bad);
        assert!(stderr.contains("loopback"), "{bad}: {stderr}");
    }
}

/// Runs the load test against `url`, which it must refuse (exit status
/// 2); returns what it said.
fn refused_url(url: &str) -> String {
    let out = loadtest(&["--url", url, "--requests", "1"]);
    assert_eq!(out.status.code(), Some(2), "{url}");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn the_host_checked_is_the_host_connected_to() {
    for bad in [
        "http://127.0.0.1:8080@example.com",
        "http://localhost@10.0.0.1:8080",
        "http://[::1]:80@example.com/",
    ] {
        let stderr = refused_url(bad);
        assert!(
            stderr.contains("loopback") || stderr.contains("credentials"),
            "{bad}: {stderr}"
        );
    }
}

#[test]
fn a_gone_server_gets_a_few_attempts_not_thousands() {
    // A port nobody listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let out = loadtest(&[
        "--url",
        &format!("http://127.0.0.1:{port}"),
        "--duration",
        "2",
        "--connections",
        "2",
        "--json",
    ]);
    assert_eq!(out.status.code(), Some(1));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let attempts: u64 = report["errors"]
        .as_object()
        .unwrap()
        .values()
        .map(|v| v.as_u64().unwrap())
        .sum();
    // With back-off from 50 ms doubling to 2 s: about 6 per connection.
    assert!((1..=100).contains(&attempts), "{attempts} attempts in 2 s");
}

#[test]
fn flows_churn_and_a_soak_reports_its_samples() {
    let service = start();
    let url = format!("http://{}", service.api_addr());
    let pid = std::process::id().to_string();
    let out = loadtest(&[
        "--url",
        &url,
        "--requests",
        "60",
        "--duration",
        "30",
        "--connections",
        "2",
        "--frames",
        "4",
        "--flow-chunks",
        "3",
        "--soak",
        "--sample-interval",
        "0.2",
        "--server-pid",
        &pid,
        "--json",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    // 60 requests of 4 flows, about 3 chunks each: about 80 flows closed.
    let closed = report["flows_closed"].as_u64().unwrap();
    assert!(closed >= 20, "{report}");
    let samples = report["soak"]["samples"].as_array().unwrap();
    assert!(!samples.is_empty(), "{report}");
    assert!(samples[0]["rss_bytes"].as_u64().unwrap() > 0, "{report}");
    assert!(report["soak"]["rss_mb_per_min"].is_f64(), "{report}");
    assert!(report["soak"]["second_half"].is_object(), "{report}");
    // Closed flows are gone: at most the flows still open remain.
    let listed = ureq::get(&format!("{url}/v1/streams"))
        .call()
        .unwrap()
        .into_string()
        .unwrap();
    let listed: serde_json::Value = serde_json::from_str(&listed).unwrap();
    assert!(listed["total"].as_u64().unwrap() <= 8, "{listed}");
    service.stop().unwrap();
}
