//! The Grafana dashboard and the alert rules against a running service:
//! every metric name their PromQL uses is exposed by `/metrics` after some
//! traffic, so no panel shows "No data" because of a misspelt name, and
//! every metric yaraflow publishes has a panel.

mod common;

use std::collections::BTreeSet;

use yaraflow::service::{framing, Service};
use yaraflow::Uuid;

const DASHBOARD: &str = "grafana/dashboards/yaraflow.json";

/// Chunks, lines, a burst, queries, a reset and a close.
fn traffic(service: &Service) {
    let api = |path: &str| format!("http://{}{path}", service.api_addr());
    let session = std::fs::read("data/samples/http_session.txt").unwrap();
    let chunks = Uuid::new_v4();
    ureq::post(&api(&format!("/v1/streams/{chunks}/chunks")))
        .send_bytes(&session)
        .unwrap();
    let lines = Uuid::new_v4();
    ureq::post(&api(&format!("/v1/streams/{lines}/lines")))
        .send_bytes(&std::fs::read("data/samples/app.log").unwrap())
        .unwrap();
    let ids: Vec<Uuid> = (0..20).map(|_| Uuid::new_v4()).collect();
    let body = framing::encode(ids.iter().map(|id| (*id, session.as_slice())));
    ureq::post(&api("/v1/chunks")).send_bytes(&body).unwrap();
    ureq::get(&api(&format!("/v1/streams/{chunks}")))
        .call()
        .unwrap();
    ureq::post(&api(&format!("/v1/streams/{lines}/reset")))
        .send_bytes(b"")
        .unwrap();
    ureq::delete(&api(&format!("/v1/streams/{chunks}")))
        .call()
        .unwrap();
}

#[test]
fn every_metric_the_dashboard_and_alerts_use_is_exposed() {
    let service = common::start_bundled_service();
    traffic(&service);
    let exposed = common::exposed_metrics(&format!(
        "http://{}/metrics",
        service.metrics_addr().unwrap()
    ));
    let used = common::dashboard_and_alert_metrics();
    assert!(used.len() > 20, "{used:?}");
    // A cluster worker exposes these (tests/cluster.rs checks them there).
    let missing: Vec<&String> = used
        .iter()
        .filter(|n| !n.starts_with("yaraflow_cluster_") && !exposed.contains(*n))
        .collect();
    assert!(missing.is_empty(), "used but not exposed: {missing:?}");
    service.stop().unwrap();
}

#[test]
fn every_published_metric_has_a_panel() {
    let used = common::dashboard_and_alert_metrics();
    let shown = |name: &str| {
        used.iter().any(|u| {
            u == name
                || ["_bucket", "_count", "_sum"]
                    .iter()
                    .any(|s| *u == format!("{name}{s}"))
        })
    };
    let published = yaraflow::metrics::ALL
        .iter()
        .chain(yaraflow::metrics::cluster::ALL)
        .map(|(name, _, _)| *name);
    let process = ["process_resident_memory_bytes", "process_cpu_seconds_total"];
    let unshown: Vec<&str> = published.chain(process).filter(|n| !shown(n)).collect();
    assert!(unshown.is_empty(), "no panel shows {unshown:?}");
}

#[test]
fn the_dashboard_has_its_variables_and_well_formed_panels() {
    let dashboard: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(DASHBOARD).unwrap()).unwrap();
    let variables: Vec<&str> = dashboard["templating"]["list"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["name"].as_str().unwrap())
        .collect();
    assert_eq!(variables, ["datasource", "instance", "shard"]);
    let mut ids = BTreeSet::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        assert!(
            ids.insert(panel["id"].as_u64().unwrap()),
            "panel ids are unique"
        );
        if panel["type"] == "row" {
            continue;
        }
        assert_eq!(
            panel["datasource"]["uid"], "${datasource}",
            "{}",
            panel["title"]
        );
        let targets = panel["targets"].as_array().unwrap();
        assert!(!targets.is_empty(), "{}", panel["title"]);
        for target in targets {
            let expr = target["expr"].as_str().unwrap();
            assert!(expr.contains("instance=~\"$instance\""), "{expr}");
        }
    }
}

#[test]
fn metric_names_are_found_in_promql() {
    let mut names = BTreeSet::new();
    common::metric_names(
        "histogram_quantile(0.5, sum by (le) (rate(yaraflow_scan_latency_seconds_bucket{a=\"b\"}[5m]))) / process_threads + my_process_x",
        &mut names,
    );
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    assert_eq!(
        names,
        ["process_threads", "yaraflow_scan_latency_seconds_bucket"]
    );
}
