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
//!
//! With `--flow-chunks N`, streams churn as a reassembler's flows do:
//! each connection keeps `--frames` flows open, each flow carries a number
//! of chunks drawn from an exponential distribution of mean N (at least
//! one), is then closed, and a new flow with a new id takes its place.
//!
//! With `--soak`, the server's resident memory (from `/proc/PID/status`
//! with `--server-pid`, else from `process_resident_memory_bytes` at
//! `--metrics-url`) and its open streams are sampled every
//! `--sample-interval` seconds, and the report gives each sample and the
//! slope of both (least squares, per minute), over the whole run and over
//! its second half (past the warm-up): a server that leaks shows a slope
//! that stays in the second half. Scraping `/metrics`
//! runs its upkeep, so `--server-pid` is the better witness of memory
//! when nobody else scrapes.

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
    /// Flow churn: each stream carries this many chunks on average
    /// (exponentially distributed), then is closed and replaced.
    #[arg(long)]
    flow_chunks: Option<f64>,
    /// Sample the server's memory and open streams while running, and
    /// report their slopes.
    #[arg(long)]
    soak: bool,
    /// With --soak: seconds between samples.
    #[arg(long, default_value_t = 5.0)]
    sample_interval: f64,
    /// With --soak: the server's process id (memory read from /proc).
    #[arg(long)]
    server_pid: Option<u32>,
    /// With --soak and no --server-pid: the server's `/metrics` URL
    /// (loopback only), for `process_resident_memory_bytes`.
    #[arg(long)]
    metrics_url: Option<String>,
}

/// What the connections counted.
#[derive(Default)]
struct Tally {
    sent: AtomicU64,
    ok: AtomicU64,
    bytes: AtomicU64,
    errors: Mutex<std::collections::BTreeMap<String, u64>>,
    latencies: Mutex<Vec<Duration>>,
    flows_closed: AtomicU64,
    samples: Mutex<Vec<Sample>>,
}

/// One soak sample.
#[derive(Clone, Copy, serde::Serialize)]
struct Sample {
    seconds: f64,
    rss_bytes: Option<u64>,
    open_streams: Option<u64>,
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
    /// With flow churn: the mean chunks per flow, and the bytes chunks are
    /// cut from.
    flows: Option<(f64, Vec<u8>)>,
    frames: usize,
    chunk_size: usize,
    seed: u64,
}

pub fn run(args: LoadtestArgs) -> anyhow::Result<ExitCode> {
    check_loopback(&args.url)?;
    if let Some(url) = &args.metrics_url {
        check_loopback(url)?;
    }
    anyhow::ensure!(
        args.flow_chunks.is_none_or(|n| n >= 1.0),
        "--flow-chunks must be at least 1"
    );
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
        flows: args.flow_chunks.map(|mean| (mean, chunk_pool(&args))),
        frames: args.frames,
        chunk_size: args.chunk_size,
        seed: args.seed,
    });
    let tally = Arc::new(Tally::default());
    let started = Instant::now();
    let workers: Vec<_> = (0..args.connections)
        .map(|n| {
            let (plan, tally) = (plan.clone(), tally.clone());
            std::thread::spawn(move || connection(n, &plan, &tally))
        })
        .collect();
    let sampler = args.soak.then(|| {
        let (tally, plan) = (tally.clone(), plan.clone());
        let source = Source::of(&args);
        let every = Duration::from_secs_f64(args.sample_interval.max(0.1));
        std::thread::spawn(move || sample(&source, &plan, &tally, started, every))
    });
    watch(&args, &tally, &plan, started);
    if let Some(sampler) = sampler {
        let _ = sampler.join();
    }
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
/// someone else's server. The URL is parsed as the HTTP client parses it
/// (`url`, ureq's parser), so the host checked is the host connected to:
/// in `http://127.0.0.1:80@otherhost` that is `otherhost`.
fn check_loopback(text: &str) -> anyhow::Result<()> {
    let url = url::Url::parse(text).with_context(|| format!("--url {text:?} is not a URL"))?;
    anyhow::ensure!(
        url.scheme() == "http",
        "--url must start with http:// (loopback only, no TLS)"
    );
    anyhow::ensure!(
        url.username().is_empty() && url.password().is_none(),
        "--url must not carry credentials (`user:password@`); give the token with --token-file"
    );
    let loopback = match url.host() {
        Some(url::Host::Domain(name)) => name.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(ip)) => IpAddr::V4(ip).is_loopback(),
        Some(url::Host::Ipv6(ip)) => IpAddr::V6(ip).is_loopback(),
        None => false,
    };
    anyhow::ensure!(
        loopback,
        "--url must name a loopback address (127.0.0.1, ::1, localhost), not {}",
        url.host_str().unwrap_or_default()
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
    let mut backoff = Backoff::default();
    let mut flows = plan
        .flows
        .as_ref()
        .map(|(mean, _)| Flows::new(plan, *mean, n));
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
        let churned;
        let (body, payload) = match &mut flows {
            Some(flows) => {
                churned = flows.body(plan);
                (&churned.0, &churned.1)
            }
            None => {
                let (body, payload) = &plan.bodies[turn % plan.bodies.len()];
                (body, payload)
            }
        };
        turn += 1;
        let mut request = agent
            .post(&plan.url)
            .set("Content-Type", "application/octet-stream");
        if let Some(token) = &plan.token {
            request = request.set("Authorization", &format!("Bearer {token}"));
        }
        let sent = request.send_bytes(body);
        if let (Some(flows), Ok(_)) = (&mut flows, &sent) {
            flows.advance(plan, &agent, tally);
        }
        backoff.after(&sent, plan.until);
        match sent {
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

/// Random bytes chunks are cut from (4 MiB), with HTTP Basic credentials
/// planted at about `--match-fraction` of the chunk starts.
fn chunk_pool(args: &LoadtestArgs) -> Vec<u8> {
    let mut rng = StdRng::seed_from_u64(args.seed ^ 0xf10e);
    let mut pool: Vec<u8> = (0..(4usize << 20)).map(|_| rng.gen()).collect();
    let credential = b"\r\nAuthorization: Basic dXNlcjpwYXNz\r\n";
    let step = args.chunk_size.max(credential.len());
    let mut at = 0;
    while at + credential.len() <= pool.len() {
        if rng.gen_bool(args.match_fraction.clamp(0.0, 1.0)) {
            pool[at..at + credential.len()].copy_from_slice(credential);
        }
        at += step;
    }
    pool
}

/// One connection's open flows (flow churn).
struct Flows {
    rng: StdRng,
    mean: f64,
    /// Each flow's id and the chunks it still has to carry.
    open: Vec<(Uuid, u64)>,
}

impl Flows {
    fn new(plan: &Plan, mean: f64, connection: usize) -> Flows {
        let mut flows = Flows {
            rng: StdRng::seed_from_u64(plan.seed ^ (connection as u64).wrapping_mul(0x9e37)),
            mean,
            open: Vec::new(),
        };
        flows.open = (0..plan.frames).map(|_| flows.fresh()).collect();
        flows
    }

    /// A new flow: a random id, and a length drawn from an exponential
    /// distribution of mean `mean`, rounded up.
    fn fresh(&mut self) -> (Uuid, u64) {
        let u: f64 = self.rng.gen();
        let chunks = (-(1.0 - u).ln() * self.mean).ceil().max(1.0);
        (Uuid::from_u128(self.rng.gen()), chunks as u64)
    }

    /// A body with one chunk of each open flow, and its payload bytes.
    fn body(&mut self, plan: &Plan) -> (Vec<u8>, u64) {
        let pool = plan.flows.as_ref().map_or(&[][..], |(_, pool)| pool);
        let size = plan.chunk_size.min(pool.len());
        let chunks: Vec<(Uuid, &[u8])> = self
            .open
            .iter()
            .map(|(id, _)| {
                let at = self.rng.gen_range(0..=pool.len() - size);
                (*id, &pool[at..at + size])
            })
            .collect();
        let payload = (chunks.len() * size) as u64;
        (framing::encode(chunks), payload)
    }

    /// After a body was taken: closes the flows that carried their last
    /// chunk, and opens new ones in their place.
    fn advance(&mut self, plan: &Plan, agent: &ureq::Agent, tally: &Tally) {
        let base = plan.url.trim_end_matches("/v1/chunks").to_string();
        for index in 0..self.open.len() {
            self.open[index].1 -= 1;
            if self.open[index].1 > 0 {
                continue;
            }
            let mut request = agent.delete(&format!("{base}/v1/streams/{}", self.open[index].0));
            if let Some(token) = &plan.token {
                request = request.set("Authorization", &format!("Bearer {token}"));
            }
            match request.call() {
                Ok(_) => {
                    tally.flows_closed.fetch_add(1, Ordering::Relaxed);
                }
                Err(error) => tally.error(format!("close: {}", error.kind())),
            }
            self.open[index] = self.fresh();
        }
    }
}

/// Where soak samples read the server's memory.
enum Source {
    Pid(u32),
    Metrics(String),
    Nothing,
}

impl Source {
    fn of(args: &LoadtestArgs) -> Source {
        match (args.server_pid, &args.metrics_url) {
            (Some(pid), _) => Source::Pid(pid),
            (None, Some(url)) => Source::Metrics(url.clone()),
            (None, None) => Source::Nothing,
        }
    }

    fn rss_bytes(&self, agent: &ureq::Agent) -> Option<u64> {
        match self {
            Source::Pid(pid) => {
                let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
                let kib: u64 = status
                    .lines()
                    .find_map(|l| l.strip_prefix("VmRSS:"))?
                    .split_whitespace()
                    .next()?
                    .parse()
                    .ok()?;
                Some(kib * 1024)
            }
            Source::Metrics(url) => {
                let text = agent.get(url).call().ok()?.into_string().ok()?;
                let value = text
                    .lines()
                    .find_map(|l| l.strip_prefix("process_resident_memory_bytes "))?;
                value.trim().parse::<f64>().ok().map(|v| v as u64)
            }
            Source::Nothing => None,
        }
    }
}

/// Samples memory and open streams every `every` until the run ends.
fn sample(source: &Source, plan: &Plan, tally: &Tally, started: Instant, every: Duration) {
    let agent = ureq::AgentBuilder::new()
        .timeout(Duration::from_secs(10))
        .build();
    let streams_url = format!(
        "{}/v1/streams?limit=0",
        plan.url.trim_end_matches("/v1/chunks")
    );
    loop {
        let mut request = agent.get(&streams_url);
        if let Some(token) = &plan.token {
            request = request.set("Authorization", &format!("Bearer {token}"));
        }
        let open_streams = request
            .call()
            .ok()
            .and_then(|r| r.into_string().ok())
            .and_then(|text| serde_json::from_str::<serde_json::Value>(&text).ok())
            .and_then(|v| v["total"].as_u64());
        let sample = Sample {
            seconds: started.elapsed().as_secs_f64(),
            rss_bytes: source.rss_bytes(&agent),
            open_streams,
        };
        tally
            .samples
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(sample);
        let next = Instant::now() + every;
        if next > plan.until || tally.sent.load(Ordering::Relaxed) >= plan.requests {
            return;
        }
        std::thread::sleep(every);
    }
}

/// The least-squares slope of `points`, per minute; `None` with fewer than
/// two distinct times.
fn slope_per_minute(points: &[(f64, f64)]) -> Option<f64> {
    let n = points.len() as f64;
    let mean_t = points.iter().map(|p| p.0).sum::<f64>() / n;
    let mean_v = points.iter().map(|p| p.1).sum::<f64>() / n;
    let var: f64 = points.iter().map(|p| (p.0 - mean_t).powi(2)).sum();
    let cov: f64 = points.iter().map(|p| (p.0 - mean_t) * (p.1 - mean_v)).sum();
    (points.len() >= 2 && var > 0.0).then(|| cov / var * 60.0)
}

/// The pause of a connection after transport errors (the server is gone
/// or refuses connections): 50 ms, doubling to 2 s while they last, so that
/// a stopped server gets a few attempts a second instead of thousands.
#[derive(Default)]
struct Backoff {
    pause: Option<Duration>,
}

impl Backoff {
    const FIRST: Duration = Duration::from_millis(50);
    const MOST: Duration = Duration::from_secs(2);

    /// Sleeps after a transport error (never past `until`); forgets the
    /// pause after an answer.
    fn after(&mut self, sent: &Result<ureq::Response, ureq::Error>, until: Instant) {
        if !matches!(sent, Err(ureq::Error::Transport(_))) {
            self.pause = None;
            return;
        }
        let pause = self.pause.map_or(Self::FIRST, |p| (p * 2).min(Self::MOST));
        self.pause = Some(pause);
        std::thread::sleep(pause.min(until.saturating_duration_since(Instant::now())));
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

/// The soak samples and their slopes.
fn soak(tally: &Tally) -> serde_json::Value {
    let samples = tally
        .samples
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    if samples.is_empty() {
        return serde_json::Value::Null;
    }
    let rss: Vec<(f64, f64)> = samples
        .iter()
        .filter_map(|s| s.rss_bytes.map(|b| (s.seconds, b as f64 / 1e6)))
        .collect();
    let open: Vec<(f64, f64)> = samples
        .iter()
        .filter_map(|s| s.open_streams.map(|n| (s.seconds, n as f64)))
        .collect();
    // The first half holds the warm-up (streams opening, caches filling):
    // a leak is a slope that stays in the second half.
    let later = |points: &[(f64, f64)]| slope_per_minute(&points[points.len() / 2..]);
    serde_json::json!({
        "samples": samples,
        "rss_mb_per_min": slope_per_minute(&rss),
        "open_streams_per_min": slope_per_minute(&open),
        "second_half": {
            "rss_mb_per_min": later(&rss),
            "open_streams_per_min": later(&open),
        },
    })
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
        "flows_closed": tally.flows_closed.load(Ordering::Relaxed),
        "soak": soak(tally),
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
        if args.flow_chunks.is_some() {
            println!("flows closed: {}", summary["flows_closed"]);
        }
        if args.soak {
            let soak = &summary["soak"];
            let show =
                |v: &serde_json::Value| v.as_f64().map_or("-".to_string(), |v| format!("{v:.2}"));
            println!(
                "soak: {} samples; RSS slope {} MB/min ({} in the second half), open streams slope {} per min ({} in the second half)",
                soak["samples"].as_array().map_or(0, Vec::len),
                show(&soak["rss_mb_per_min"]),
                show(&soak["second_half"]["rss_mb_per_min"]),
                show(&soak["open_streams_per_min"]),
                show(&soak["second_half"]["open_streams_per_min"]),
            );
        }
    }
    Ok(match errors.is_empty() && ok > 0 {
        true => ExitCode::SUCCESS,
        false => ExitCode::FAILURE,
    })
}
