//! `yaraflow loadtest`: drives a running `yaraflow serve` over HTTP, on
//! loopback only, with many concurrent streams at a target rate, and
//! reports the rate achieved, the errors and the latency percentiles.
//!
//! Each connection is a thread with its own keep-alive HTTP client sending
//! `POST /v1/chunks` bodies (frames of `--frames` streams drawn at random
//! from `--streams`). With `--rate`, sends follow a fixed schedule (open
//! loop) and latency is measured from when a request was due, not from when
//! it went out, so a slow server shows as latency instead of hiding as a
//! lower rate ("coordinated omission"). It stops by itself: after
//! `--duration` (at most 10 minutes) or `--requests`, whichever comes
//! first; with `--close`, every stream it used is then closed
//! (`DELETE /v1/streams/{id}`), so that the server is left as it was found.

use std::net::IpAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use yaraflow::service::framing;
use yaraflow::Uuid;

/// Longest run accepted.
const MAX_DURATION: Duration = Duration::from_secs(600);

/// Arguments of `yaraflow loadtest`.
#[derive(Debug, clap::Args)]
pub struct LoadtestArgs {
    /// Base URL of the service (loopback only).
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    url: String,
    /// Streams the chunks go to.
    #[arg(long, default_value_t = 10_000)]
    streams: usize,
    /// Frames (chunks of distinct streams) per request.
    #[arg(long, default_value_t = 64)]
    frames: usize,
    /// Bytes per chunk.
    #[arg(long, default_value_t = 1460)]
    chunk_size: usize,
    /// Target requests per second over all connections (0: as fast as the
    /// server answers).
    #[arg(long, default_value_t = 0.0)]
    rate: f64,
    /// Concurrent connections (one thread each).
    #[arg(long, default_value_t = 8)]
    connections: usize,
    /// Seconds to run (at most 600).
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Stop after this many requests.
    #[arg(long)]
    requests: Option<u64>,
    /// Fraction of chunks that carry an HTTP Basic credential (a match for
    /// the bundled rules).
    #[arg(long, default_value_t = 0.01)]
    match_fraction: f64,
    /// Close every stream used, at the end.
    #[arg(long)]
    close: bool,
    /// File holding the bearer token of the service.
    #[arg(long)]
    token_file: Option<PathBuf>,
    /// One JSON object on stdout instead of text.
    #[arg(long)]
    json: bool,
    /// Seed of the stream ids and the data.
    #[arg(long, default_value_t = 1)]
    seed: u64,
}

/// What the connections counted.
#[derive(Default)]
struct Tally {
    sent: AtomicU64,
    ok: AtomicU64,
    bytes: AtomicU64,
    errors: Mutex<std::collections::BTreeMap<String, u64>>,
    latencies: Mutex<Vec<Duration>>,
}

impl Tally {
    fn error(&self, what: String) {
        *self
            .errors
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(what)
            .or_default() += 1;
    }
}

/// What one connection needs to send.
struct Plan {
    url: String,
    token: Option<String>,
    bodies: Vec<(Vec<u8>, u64)>,
    interval: Option<Duration>,
    until: Instant,
    requests: u64,
}

pub fn run(args: LoadtestArgs) -> anyhow::Result<ExitCode> {
    check_loopback(&args.url)?;
    anyhow::ensure!(
        args.streams > 0 && args.frames > 0 && args.connections > 0 && args.chunk_size > 0,
        "--streams, --frames, --connections and --chunk-size must be positive"
    );
    let duration = Duration::from_secs_f64(args.duration.max(0.0)).min(MAX_DURATION);
    let token = super::read_token(args.token_file.as_deref())?;
    let ids = stream_ids(&args);
    let plan = Arc::new(Plan {
        url: format!("{}/v1/chunks", args.url.trim_end_matches('/')),
        token,
        bodies: bodies(&args, &ids),
        interval: (args.rate > 0.0)
            .then(|| Duration::from_secs_f64(args.connections as f64 / args.rate)),
        until: Instant::now() + duration,
        requests: args.requests.unwrap_or(u64::MAX),
    });
    let tally = Arc::new(Tally::default());
    let started = Instant::now();
    let workers: Vec<_> = (0..args.connections)
        .map(|n| {
            let (plan, tally) = (plan.clone(), tally.clone());
            std::thread::spawn(move || connection(n, &plan, &tally))
        })
        .collect();
    watch(&args, &tally, &plan, started);
    for worker in workers {
        let _ = worker.join();
    }
    let elapsed = started.elapsed();
    if args.close {
        close_streams(&args, &plan, &ids, &tally);
    }
    report(&args, &tally, elapsed)
}

/// Refuses anything but a loopback address: a load test is not for
/// someone else's server.
fn check_loopback(url: &str) -> anyhow::Result<()> {
    let rest = url
        .strip_prefix("http://")
        .context("--url must start with http:// (loopback only, no TLS)")?;
    let authority = rest.split('/').next().unwrap_or_default();
    let host = match authority.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or_default(),
        None => authority
            .rsplit_once(':')
            .map_or(authority, |(host, _)| host),
    };
    let loopback = host == "localhost" || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback());
    anyhow::ensure!(
        loopback,
        "--url must name a loopback address (127.0.0.1, ::1, localhost), not {host}"
    );
    Ok(())
}

fn stream_ids(args: &LoadtestArgs) -> Vec<Uuid> {
    let mut rng = StdRng::seed_from_u64(args.seed);
    (0..args.streams)
        .map(|_| Uuid::from_u128(rng.gen()))
        .collect()
}

/// Request bodies, built once (and how many payload bytes each carries):
/// 256 of them, or fewer when they would exceed 256 MiB.
fn bodies(args: &LoadtestArgs, ids: &[Uuid]) -> Vec<(Vec<u8>, u64)> {
    let mut rng = StdRng::seed_from_u64(args.seed ^ 0xb0d1e5);
    let per_body = args.frames * (args.chunk_size + 20);
    let count = (256usize).min((256usize << 20) / per_body.max(1)).max(1);
    let credential = b"\r\nAuthorization: Basic dXNlcjpwYXNz\r\n";
    (0..count)
        .map(|_| {
            let chunks: Vec<(Uuid, Vec<u8>)> = (0..args.frames)
                .map(|_| {
                    let mut chunk: Vec<u8> = (0..args.chunk_size).map(|_| rng.gen()).collect();
                    if rng.gen_bool(args.match_fraction.clamp(0.0, 1.0))
                        && chunk.len() > credential.len()
                    {
                        let at = rng.gen_range(0..=chunk.len() - credential.len());
                        chunk[at..at + credential.len()].copy_from_slice(credential);
                    }
                    (ids[rng.gen_range(0..ids.len())], chunk)
                })
                .collect();
            let body = framing::encode(chunks.iter().map(|(id, c)| (*id, c.as_slice())));
            (body, (args.frames * args.chunk_size) as u64)
        })
        .collect()
}

/// One connection: sends bodies in turn until the plan says stop.
fn connection(n: usize, plan: &Plan, tally: &Tally) {
    let agent = ureq::AgentBuilder::new()
        .timeout(Duration::from_secs(30))
        .build();
    let mut due = Instant::now();
    let mut turn = n;
    loop {
        if Instant::now() >= plan.until
            || tally.sent.fetch_add(1, Ordering::Relaxed) >= plan.requests
        {
            return;
        }
        match plan.interval {
            // On schedule: wait for the due time (a late one goes at once).
            Some(_) => std::thread::sleep(due.saturating_duration_since(Instant::now())),
            None => due = Instant::now(),
        }
        let (body, payload) = &plan.bodies[turn % plan.bodies.len()];
        turn += 1;
        let mut request = agent
            .post(&plan.url)
            .set("Content-Type", "application/octet-stream");
        if let Some(token) = &plan.token {
            request = request.set("Authorization", &format!("Bearer {token}"));
        }
        match request.send_bytes(body) {
            Ok(_) => {
                tally.ok.fetch_add(1, Ordering::Relaxed);
                tally.bytes.fetch_add(*payload, Ordering::Relaxed);
            }
            Err(ureq::Error::Status(code, response)) => {
                let detail = response.into_string().unwrap_or_default();
                let code_name = serde_json::from_str::<serde_json::Value>(&detail)
                    .ok()
                    .and_then(|v| v["error"]["code"].as_str().map(str::to_string))
                    .unwrap_or_default();
                tally.error(format!("HTTP {code} {code_name}").trim().to_string());
            }
            Err(other) => tally.error(format!("transport: {}", other.kind())),
        }
        tally
            .latencies
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(due.elapsed());
        if let Some(interval) = plan.interval {
            due += interval;
        }
    }
}

/// A line per second on stderr while the connections work.
fn watch(args: &LoadtestArgs, tally: &Tally, plan: &Plan, started: Instant) {
    let mut last = (0u64, Instant::now());
    while Instant::now() < plan.until && tally.sent.load(Ordering::Relaxed) < plan.requests {
        std::thread::sleep(
            Duration::from_millis(100).min(plan.until.saturating_duration_since(Instant::now())),
        );
        if last.1.elapsed() >= Duration::from_secs(1) && !args.json {
            let ok = tally.ok.load(Ordering::Relaxed);
            let errors: u64 = tally
                .errors
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .values()
                .sum();
            eprintln!(
                "{:>5.1} s: {:.0} req/s, {} errors so far",
                started.elapsed().as_secs_f64(),
                (ok - last.0) as f64 / last.1.elapsed().as_secs_f64(),
                errors
            );
            last = (ok, Instant::now());
        }
    }
}

/// Closes every stream (the server keeps them otherwise).
fn close_streams(args: &LoadtestArgs, plan: &Plan, ids: &[Uuid], tally: &Tally) {
    let base = args.url.trim_end_matches('/');
    let agent = ureq::AgentBuilder::new()
        .timeout(Duration::from_secs(30))
        .build();
    for id in ids {
        let mut request = agent.delete(&format!("{base}/v1/streams/{id}"));
        if let Some(token) = &plan.token {
            request = request.set("Authorization", &format!("Bearer {token}"));
        }
        match request.call() {
            Ok(_) | Err(ureq::Error::Status(404, _)) => {}
            Err(err) => tally.error(format!("close: {err}")),
        }
    }
}

fn report(args: &LoadtestArgs, tally: &Tally, elapsed: Duration) -> anyhow::Result<ExitCode> {
    let mut latencies =
        std::mem::take(&mut *tally.latencies.lock().unwrap_or_else(|e| e.into_inner()));
    latencies.sort_unstable();
    let quantile = |q: f64| {
        latencies
            .get(((latencies.len() as f64 * q) as usize).min(latencies.len().saturating_sub(1)))
            .map_or(0.0, |d| d.as_secs_f64() * 1e3)
    };
    let ok = tally.ok.load(Ordering::Relaxed);
    let errors = tally
        .errors
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    let seconds = elapsed.as_secs_f64().max(1e-9);
    let summary = serde_json::json!({
        "url": args.url,
        "streams": args.streams,
        "frames_per_request": args.frames,
        "chunk_size": args.chunk_size,
        "connections": args.connections,
        "target_rate": args.rate,
        "seconds": seconds,
        "requests_ok": ok,
        "requests_per_s": ok as f64 / seconds,
        "mb_per_s": tally.bytes.load(Ordering::Relaxed) as f64 / seconds / 1e6,
        "errors": errors,
        "latency_ms": {
            "p50": quantile(0.50), "p90": quantile(0.90), "p99": quantile(0.99),
            "p999": quantile(0.999), "max": latencies.last().map_or(0.0, |d| d.as_secs_f64() * 1e3),
        },
    });
    if args.json {
        println!("{}", serde_json::to_string_pretty(&summary)?);
    } else {
        println!(
            "{ok} requests in {seconds:.1} s: {:.0} req/s, {:.1} MB/s of chunks ({} frames of {} bytes each, {} connections{})",
            summary["requests_per_s"].as_f64().unwrap_or(0.0),
            summary["mb_per_s"].as_f64().unwrap_or(0.0),
            args.frames,
            args.chunk_size,
            args.connections,
            match args.rate > 0.0 {
                true => format!(", target {} req/s", args.rate),
                false => String::new(),
            }
        );
        println!(
            "latency (from when each request was due): p50 {:.2} ms, p90 {:.2} ms, p99 {:.2} ms, p99.9 {:.2} ms, max {:.2} ms",
            quantile(0.5), quantile(0.9), quantile(0.99), quantile(0.999),
            latencies.last().map_or(0.0, |d| d.as_secs_f64() * 1e3)
        );
        for (what, count) in &errors {
            println!("errors: {count} x {what}");
        }
    }
    Ok(match errors.is_empty() && ok > 0 {
        true => ExitCode::SUCCESS,
        false => ExitCode::FAILURE,
    })
}
