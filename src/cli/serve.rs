//! `yaraflow serve`: the engine behind the HTTP API, until SIGINT/SIGTERM.

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
    /// rules in `data/rules`).
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
    /// File holding the bearer token `/v1` routes require.
    #[arg(long)]
    token_file: Option<PathBuf>,
    /// Largest request body, in bytes.
    #[arg(long, default_value_t = 16 << 20)]
    max_body_bytes: usize,
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
}

pub fn run(args: ServeArgs) -> anyhow::Result<ExitCode> {
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
    let token = super::read_token(args.token_file.as_deref())?;
    let rules = super::load_rules(&args.rules, &args.rule_args)?;
    let config = ServiceConfig {
        listen: args.listen,
        metrics_listen: Some(args.metrics_listen),
        metrics_on_api: args.metrics_on_api,
        max_body_bytes: args.max_body_bytes,
        token,
        rule_paths: args.rules.clone(),
        engine,
        ..ServiceConfig::default()
    };
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
