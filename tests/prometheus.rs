//! A real Prometheus scraping a running service: the queries operators
//! run return data. Starts the service in-process on loopback, a
//! `prometheus` (Debian package `prometheus`) scraping it every 250 ms
//! with the bundled alert rules loaded, sends traffic for a few seconds,
//! then asks Prometheus's HTTP API for a byte rate, a latency quantile,
//! every query of the dashboard, and the state of the alert rules. Skipped when `prometheus` is not
//! installed, unless `YARAFLOW_REQUIRE_PROMETHEUS` is set (`.ci/run` sets
//! it).

mod common;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use yaraflow::service::{framing, Service};
use yaraflow::Uuid;

/// Kills Prometheus when the test ends, however it ends.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn prometheus_installed() -> bool {
    common::tool_installed(
        "prometheus",
        "YARAFLOW_REQUIRE_PROMETHEUS",
        "the Prometheus tests",
    )
}

fn start_prometheus(dir: &std::path::Path, target: std::net::SocketAddr, port: u16) -> Running {
    let alerts = std::fs::canonicalize("grafana/alerts.yml").unwrap();
    let config = format!(
        "global: {{scrape_interval: 250ms, evaluation_interval: 1s}}\n\
         rule_files: [\"{}\"]\n\
         scrape_configs:\n  - job_name: yaraflow\n    static_configs: [{{targets: [\"{target}\"]}}]\n",
        alerts.display()
    );
    std::fs::write(dir.join("prometheus.yml"), config).unwrap();
    let log = std::fs::File::create(dir.join("prometheus.log")).unwrap();
    let child = Command::new("prometheus")
        .arg(format!(
            "--config.file={}",
            dir.join("prometheus.yml").display()
        ))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.join("data").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("prometheus starts");
    Running(child)
}

/// Runs an instant query; its result vector (an error for a bad query).
fn query(port: u16, promql: &str) -> Result<Vec<serde_json::Value>, String> {
    let url = format!("http://127.0.0.1:{port}/api/v1/query");
    let response = match ureq::get(&url).query("query", promql).call() {
        Ok(response) => response,
        Err(ureq::Error::Status(_, response)) => response,
        Err(other) => return Err(other.to_string()),
    };
    let text = response.into_string().map_err(|e| e.to_string())?;
    let body: serde_json::Value = serde_json::from_str(&text).map_err(|e| e.to_string())?;
    if body["status"] != "success" {
        return Err(format!("{promql}: {body}"));
    }
    Ok(body["data"]["result"]
        .as_array()
        .cloned()
        .unwrap_or_default())
}

/// The value of the first sample of a result, as a number.
fn first_value(result: &[serde_json::Value]) -> Option<f64> {
    result.first()?["value"][1].as_str()?.parse().ok()
}

/// Sends chunks to a few streams, each a known match, for `duration`.
fn traffic(service: &Service, duration: Duration) {
    let url = format!("http://{}/v1/chunks", service.api_addr());
    let session = std::fs::read("data/samples/http_session.txt").unwrap();
    let ids: Vec<Uuid> = (0..16).map(|_| Uuid::new_v4()).collect();
    let body = framing::encode(ids.iter().map(|id| (*id, session.as_slice())));
    let until = Instant::now() + duration;
    while Instant::now() < until {
        ureq::post(&url).send_bytes(&body).unwrap();
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Retries `probe` until it gives `Some`, for up to 30 s.
fn eventually<T>(what: &str, mut probe: impl FnMut() -> Option<T>) -> T {
    let until = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(value) = probe() {
            return value;
        }
        assert!(Instant::now() < until, "{what}: no data after 30 s");
        std::thread::sleep(Duration::from_millis(250));
    }
}

#[test]
fn prometheus_gets_rates_quantiles_and_every_dashboard_query() {
    if !prometheus_installed() {
        return;
    }
    let dir = std::env::temp_dir().join(format!("yaraflow-prometheus-{}", Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let service = common::start_bundled_service();
    let port = common::free_port();
    let _prometheus = start_prometheus(&dir, service.metrics_addr().unwrap(), port);
    eventually("prometheus ready", || query(port, "up").ok());
    traffic(&service, Duration::from_secs(3));

    let rate = "sum(rate(yaraflow_scanned_bytes_total[2s]))";
    let bytes_per_second = eventually(rate, || {
        traffic(&service, Duration::from_millis(300));
        first_value(&query(port, rate).ok()?).filter(|v| *v > 0.0)
    });
    let p99 =
        "histogram_quantile(0.99, sum by (le) (rate(yaraflow_scan_latency_seconds_bucket[2s])))";
    let latency = eventually(p99, || {
        traffic(&service, Duration::from_millis(300));
        first_value(&query(port, p99).ok()?).filter(|v| v.is_finite())
    });
    eprintln!("{rate} = {bytes_per_second:.0} B/s; {p99} = {latency} s");
    assert!(latency > 0.0 && latency < 10.0);

    let mut with_data = 0;
    let mut queries = 0;
    for (title, expr) in common::dashboard_panel_queries() {
        let expr = expr
            .replace("$instance", ".*")
            .replace("$shard", ".*")
            .replace("$__rate_interval", "2s");
        let result = query(port, &expr).unwrap_or_else(|e| panic!("{title}: {e}"));
        if expr.contains("yaraflow_cluster_") {
            continue; // a cluster worker's: it parses; no service has data
        }
        queries += 1;
        with_data += usize::from(!result.is_empty());
        if result.is_empty() {
            eprintln!("no data (yet): {expr}");
        }
    }
    eprintln!("{with_data} of {queries} dashboard queries returned data");
    // Every query parses; all but the rare-event ones (restarts, reloads,
    // errors as rates of zero still return series) have data.
    assert!(with_data * 10 >= queries * 9, "{with_data} of {queries}");
    let rules = eventually("alert rules evaluated", || {
        let url = format!("http://127.0.0.1:{port}/api/v1/rules");
        let text = ureq::get(&url).call().ok()?.into_string().ok()?;
        let body: serde_json::Value = serde_json::from_str(&text).ok()?;
        let rules = body["data"]["groups"][0]["rules"].as_array()?.clone();
        rules.iter().all(|r| r["health"] == "ok").then_some(rules)
    });
    assert_eq!(
        rules.len(),
        common::alert_queries().len(),
        "every alert rule loaded and evaluated"
    );
    let firing: Vec<&serde_json::Value> =
        rules.iter().filter(|r| r["state"] != "inactive").collect();
    assert!(
        firing.is_empty(),
        "a healthy service fires no alert: {firing:?}"
    );
    drop(_prometheus);
    service.stop().unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}
