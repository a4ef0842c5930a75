//! `yaraflow serve`: the engine behind the HTTP API, until SIGINT/SIGTERM;
//! with `--nats`, the API as an ingest gateway to a cluster instead.
//!
//! Settings are checked before anything starts: a non-loopback `--listen`
//! needs a token (or `--allow-no-token`), and `--shards` must fit in the
//! file handles the process may open.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use yaraflow::service::{Service, ServiceConfig};
use yaraflow::store::OnRulesChange;
use yaraflow::{EngineConfig, StoreConfig};

/// Arguments of `yaraflow serve`.
#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// Rules: `.yar`/`.yara` files or directories (default: the bundled
    /// rules in `data/rules`, relative to the current directory).
    #[arg(long, default_value = "data/rules")]
    rules: Vec<PathBuf>,
    /// Address of the HTTP API.
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// Address of the Prometheus `/metrics` endpoint.
    #[arg(long, default_value = "127.0.0.1:9464")]
    metrics_listen: SocketAddr,
    /// Also serve `/metrics` on the API address.
    #[arg(long)]
    metrics_on_api: bool,
    /// Scanner shards (0: one per core).
    #[arg(long, default_value_t = 0)]
    shards: usize,
    /// Engine configuration (JSON, the fields of `EngineConfig`); `--shards`
    /// overrides its `shards`.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Count rule matches per rule too (`yaraflow_rule_matches_by_rule_total`,
    /// one series per rule that matched).
    #[arg(long)]
    rule_metrics: bool,
    /// File holding the bearer token `/v1` routes require (not empty).
    #[arg(long)]
    token_file: Option<PathBuf>,
    /// Serve a non-loopback `--listen` address without a token (refused
    /// otherwise: anyone who reaches it could read every stream).
    #[arg(long)]
    allow_no_token: bool,
    /// Largest request body, in bytes (after decoding gzip/deflate).
    #[arg(long, default_value_t = 16 << 20)]
    max_body_bytes: usize,
    /// Longest time a client may take to send a request's head.
    #[arg(long, default_value = "5s")]
    request_timeout: humantime::Duration,
    /// Longest time a request's body may take to arrive (408 past it).
    #[arg(long, default_value = "30s")]
    body_timeout: humantime::Duration,
    /// How long an idle keep-alive connection stays open.
    #[arg(long, default_value = "5s")]
    keep_alive: humantime::Duration,
    /// Most event subscriptions (`/v1/events`, `/v1/events/closed`) open at
    /// once (503 past it).
    #[arg(long, default_value_t = 64)]
    max_event_subscribers: usize,
    /// Keep stream contexts in this store file (created if missing): idle
    /// streams past the resident bounds go to disk, a shutdown keeps every
    /// open stream there, and the next start resumes them.
    #[arg(long)]
    store: Option<PathBuf>,
    /// With --store: most stream contexts held in memory, over all shards.
    #[arg(long, default_value_t = 1_000_000)]
    max_resident_streams: usize,
    /// With --store: most bytes of stream contexts held in memory, over all
    /// shards (e.g. 512MiB, 1GiB).
    #[arg(long, default_value = "1GiB")]
    max_resident_bytes: bytesize::ByteSize,
    /// With --store: also write the streams that changed this often (e.g.
    /// 1s, 500ms), so that a crash loses at most that much; each stream's
    /// durable offset is at `GET /v1/streams/{id}/offset`.
    #[arg(long)]
    checkpoint_interval: Option<humantime::Duration>,
    /// With --store: drop stored streams scanned with other rules instead
    /// of refusing to start (their producers resend them from offset 0).
    #[arg(long)]
    discard_stored_streams: bool,
    /// Close streams that received nothing for this long (e.g. 5m), with
    /// their final verdicts sent to `GET /v1/events/closed`.
    #[arg(long)]
    idle_timeout: Option<humantime::Duration>,
    #[command(flatten)]
    rule_args: super::RuleArgs,
    #[cfg(feature = "cluster")]
    #[command(flatten)]
    gateway: super::cluster::GatewayArgs,
}

pub fn run(args: ServeArgs) -> anyhow::Result<ExitCode> {
    let token = super::read_token(args.token_file.as_deref())?;
    anyhow::ensure!(
        token.is_some() || args.listen.ip().is_loopback() || args.allow_no_token,
        "--listen {} is not a loopback address and no --token-file was given: anyone who reaches it could read and feed every stream; give --token-file FILE, or --allow-no-token if something in front of yaraflow authenticates",
        args.listen
    );
    #[cfg(feature = "cluster")]
    if args.gateway.nats.is_some() {
        let config = service_config(&args, token, EngineConfig::default());
        return super::cluster::gateway(&args.gateway, config);
    }
    serve_engine(args, token)
}

/// The HTTP settings of `args`, over `engine`.
fn service_config(args: &ServeArgs, token: Option<String>, engine: EngineConfig) -> ServiceConfig {
    ServiceConfig {
        listen: args.listen,
        metrics_listen: Some(args.metrics_listen),
        metrics_on_api: args.metrics_on_api,
        max_body_bytes: args.max_body_bytes,
        token,
        request_timeout: args.request_timeout.into(),
        body_timeout: args.body_timeout.into(),
        keep_alive: args.keep_alive.into(),
        max_event_subscribers: args.max_event_subscribers,
        rule_paths: args.rules.clone(),
        rule_externals: args.rule_args.defines.clone(),
        whole_scan_dense_rules: !args.rule_args.stream_dense_rules,
        engine,
        ..ServiceConfig::default()
    }
}

/// The engine behind the API, until SIGINT/SIGTERM; then every open
/// stream's final verdict on stdout.
fn serve_engine(args: ServeArgs, token: Option<String>) -> anyhow::Result<ExitCode> {
    let mut engine: EngineConfig = match &args.config {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?;
            serde_json::from_str(&text).map_err(|e| {
                anyhow::anyhow!("{} is not an engine configuration: {e}", path.display())
            })?
        }
        None => EngineConfig::default(),
    };
    if args.shards > 0 || args.config.is_none() {
        engine.shards = args.shards;
    }
    engine.scanner.max_pattern_len = args.rule_args.max_pattern_len;
    engine.rule_metrics |= args.rule_metrics;
    apply_store_args(&args, &mut engine)?;
    check_shards(engine.shards)?;
    let rules = super::load_rules(&args.rules, &args.rule_args)?;
    let config = service_config(&args, token, engine);
    let service = Service::start(rules, config)?;
    eprintln!(
        "yaraflow serving the API on http://{} and metrics on http://{}/metrics (Ctrl-C stops)",
        service.api_addr(),
        service.metrics_addr().map_or("-".into(), |a| a.to_string())
    );
    let report = service.wait()?;
    eprintln!(
        "stopped: {} streams closed, {} without a verdict, {} kept in the store",
        report.results.len(),
        report.failed.len(),
        report.kept
    );
    for results in &report.results {
        println!("{}", serde_json::to_string(results)?);
    }
    // Every open stream gets a line: those without a final verdict (failed,
    // or not closed within the shutdown's time limit) say why.
    for (stream, error) in &report.failed {
        let line = serde_json::json!({ "stream": stream, "error": error.to_string() });
        println!("{line}");
    }
    Ok(ExitCode::SUCCESS)
}

/// Most shards accepted whatever the machine: far more than cores buys
/// nothing, and each shard is a thread with its own runtime.
const MAX_SHARDS: usize = 1024;

/// File handles a shard takes (its runtime's event loop and wakers), with
/// room to spare.
const HANDLES_PER_SHARD: u64 = 4;

/// File handles kept for everything else: listeners, connections, the
/// store, rule files.
const HANDLES_RESERVED: u64 = 256;

/// Refuses a shard count the machine cannot hold (it would fail half-way
/// with "too many open files") or that makes no sense.
fn check_shards(shards: usize) -> anyhow::Result<()> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct it is given.
    let handles = match unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } {
        0 => limit.rlim_cur,
        _ => libc::RLIM_INFINITY,
    };
    let by_handles = handles.saturating_sub(HANDLES_RESERVED) / HANDLES_PER_SHARD;
    let most = (MAX_SHARDS as u64).min(by_handles).max(1);
    anyhow::ensure!(
        shards as u64 <= most,
        "--shards {shards} is more than this machine can hold: at most {most} (the cap is {MAX_SHARDS}, and each shard takes about {HANDLES_PER_SHARD} of the {handles} file handles `ulimit -n` allows); use --shards 0 for one per core ({})",
        num_cpus::get()
    );
    Ok(())
}

/// The store and idle-timeout flags, over what `--config` said.
fn apply_store_args(args: &ServeArgs, engine: &mut EngineConfig) -> anyhow::Result<()> {
    if let Some(timeout) = args.idle_timeout {
        engine.idle_timeout = Some(timeout.into());
    }
    let Some(path) = &args.store else {
        if args.checkpoint_interval.is_some() || args.discard_stored_streams {
            anyhow::bail!("--checkpoint-interval and --discard-stored-streams need --store PATH");
        }
        return Ok(());
    };
    let store = engine.store.get_or_insert_with(StoreConfig::default);
    store.path = path.clone();
    store.max_resident_streams = args.max_resident_streams;
    store.max_resident_bytes = usize::try_from(args.max_resident_bytes.as_u64())?;
    if let Some(interval) = args.checkpoint_interval {
        store.checkpoint_interval = Some(interval.into());
    }
    if args.discard_stored_streams {
        store.on_rules_change = OnRulesChange::Discard;
    }
    Ok(())
}
