//! `yaraflow worker` and `yaraflow verdicts`: a worker of a NATS
//! JetStream cluster, and a reader of the verdicts the workers publish
//! (see `yaraflow::cluster`).

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use futures_util::StreamExt;
use yaraflow::cluster::{self, ClusterConfig, Worker};
use yaraflow::service::{Gateway, ServiceConfig};
use yaraflow::ScannerConfig;

use super::{load_rules, RuleArgs};

/// What every cluster command needs to find the cluster.
#[derive(Debug, clap::Args)]
struct ClusterArgs {
    /// NATS server URL(s), comma-separated (nats://host:4222).
    #[arg(long)]
    nats: String,
    #[command(flatten)]
    deployment: Deployment,
}

impl ClusterArgs {
    fn config(&self) -> ClusterConfig {
        self.deployment.config()
    }
}

/// The deployment's shape, the same for every producer and worker.
#[derive(Debug, clap::Args)]
pub struct Deployment {
    /// Subject prefix of the deployment.
    #[arg(long, default_value = "yaraflow")]
    prefix: String,
    /// Partitions (the same for every producer and worker; 1 to 1024).
    #[arg(long, default_value_t = 64)]
    partitions: u32,
    /// Replicas of the streams and buckets, when this command creates
    /// them (3 on a three-node cluster).
    #[arg(long, default_value_t = 1)]
    replicas: usize,
    /// JetStream streams the partitions' input is spread over (the same
    /// for every producer and worker; 1 to 64): each has its own leader
    /// node, so several spread the writes over the cluster.
    #[arg(long, default_value_t = 1)]
    input_streams: u32,
    /// How long the verdict and event streams keep their messages, when
    /// this command creates them (0s: until removed by hand).
    #[arg(long, default_value = "7days")]
    output_max_age: humantime::Duration,
}

impl Deployment {
    fn config(&self) -> ClusterConfig {
        ClusterConfig {
            prefix: self.prefix.clone(),
            partitions: self.partitions,
            input_streams: self.input_streams,
            replicas: self.replicas,
            output_max_age: self.output_max_age.into(),
            ..ClusterConfig::default()
        }
    }
}

/// `yaraflow pcap --nats`: publish the directions to a cluster instead of
/// scanning them here.
#[derive(Debug, clap::Args)]
pub struct PublishArgs {
    /// Publish each direction to this NATS JetStream cluster (URL(s),
    /// comma-separated) instead of scanning it here: the cluster's workers
    /// scan it and publish its verdict (read them with `yaraflow
    /// verdicts`). One line per direction says its stream id. Files inside
    /// flows are not extracted then (the cluster's messages carry no file
    /// names).
    #[arg(long)]
    pub nats: Option<String>,
    #[command(flatten)]
    deployment: Deployment,
}

/// Publishes flow events to a cluster: a direction's bytes as chunks of
/// its stream, its end as the stream's close. Reassembly hands over a
/// segment at a time; a direction's bytes are gathered into chunks of up
/// to [`MAX_PUBLISHED_CHUNK`] first (one JetStream message, replicated and
/// acknowledged, per 64 KiB rather than per 1.4 KB segment), at most
/// [`MAX_GATHERED`] bytes over all directions.
pub struct FlowPublisher {
    runtime: tokio::runtime::Runtime,
    producer: cluster::Producer,
    gathered: std::collections::HashMap<uuid::Uuid, Vec<u8>>,
    gathered_bytes: usize,
    /// Directions whose close was published.
    pub closed: u64,
}

/// Largest chunk published (NATS's default message limit is 1 MiB).
const MAX_PUBLISHED_CHUNK: usize = 64 << 10;
/// Most bytes gathered over all directions before they are all published.
const MAX_GATHERED: usize = 64 << 20;

impl FlowPublisher {
    /// Connects to the cluster of `args` (whose `nats` must be set).
    pub fn connect(args: &PublishArgs) -> anyhow::Result<FlowPublisher> {
        let url = args.nats.as_deref().context("no --nats URL")?;
        let runtime = runtime()?;
        let producer = runtime.block_on(async {
            let client = cluster::connect(url).await?;
            cluster::Producer::new(client, args.deployment.config(), 1024).await
        })?;
        Ok(FlowPublisher {
            runtime,
            producer,
            gathered: std::collections::HashMap::new(),
            gathered_bytes: 0,
            closed: 0,
        })
    }

    /// Takes a direction's next bytes (in stream order), publishing its
    /// full chunks.
    pub fn data(&mut self, stream: uuid::Uuid, bytes: &[u8]) -> anyhow::Result<()> {
        let gathered = self.gathered.entry(stream).or_default();
        gathered.extend_from_slice(bytes);
        self.gathered_bytes += bytes.len();
        if gathered.len() >= MAX_PUBLISHED_CHUNK {
            self.publish_gathered(stream)?;
        }
        if self.gathered_bytes > MAX_GATHERED {
            self.publish_all_gathered()?;
        }
        Ok(())
    }

    /// Publishes what a direction gathered, in chunks (slices of it, not
    /// copies).
    fn publish_gathered(&mut self, stream: uuid::Uuid) -> anyhow::Result<()> {
        let Some(gathered) = self.gathered.remove(&stream) else {
            return Ok(());
        };
        self.gathered_bytes -= gathered.len();
        let gathered = bytes::Bytes::from(gathered);
        for start in (0..gathered.len()).step_by(MAX_PUBLISHED_CHUNK) {
            let end = (start + MAX_PUBLISHED_CHUNK).min(gathered.len());
            let piece = gathered.slice(start..end);
            self.runtime.block_on(self.producer.chunk(stream, piece))?;
        }
        Ok(())
    }

    /// Publishes what every direction gathered.
    fn publish_all_gathered(&mut self) -> anyhow::Result<()> {
        let streams: Vec<uuid::Uuid> = self.gathered.keys().copied().collect();
        for stream in streams {
            self.publish_gathered(stream)?;
        }
        Ok(())
    }

    /// Publishes a direction's last bytes and its end.
    pub fn close(&mut self, stream: uuid::Uuid) -> anyhow::Result<()> {
        self.publish_gathered(stream)?;
        self.runtime.block_on(self.producer.close(stream))?;
        self.closed += 1;
        Ok(())
    }

    /// Waits until the cluster has every message (durable), and says how
    /// many were published. Every direction was closed before.
    pub fn finish(mut self) -> anyhow::Result<u64> {
        self.publish_all_gathered()?;
        self.runtime.block_on(self.producer.flush())?;
        Ok(self.producer.published())
    }
}

/// `yaraflow serve --nats`: the HTTP API as an ingest gateway.
#[derive(Debug, clap::Args)]
pub struct GatewayArgs {
    /// Serve the API as an ingest gateway to this NATS JetStream cluster
    /// (URL(s), comma-separated) instead of scanning here: chunks, lines
    /// and closes are published to the streams' partitions and answered
    /// once durable; the cluster's workers scan them and publish verdicts
    /// (`yaraflow verdicts`). Routes that read a stream's state answer
    /// 501; `--rules` and the engine's settings are not used.
    #[arg(long)]
    pub nats: Option<String>,
    #[command(flatten)]
    deployment: Deployment,
}

/// Serves the gateway until SIGINT or SIGTERM.
pub fn gateway(args: &GatewayArgs, config: ServiceConfig) -> anyhow::Result<ExitCode> {
    let url = args.nats.as_deref().context("no --nats URL")?;
    let gateway = Gateway::start(url, args.deployment.config(), config)
        .with_context(|| format!("cannot start the gateway to {url}"))?;
    eprintln!(
        "yaraflow gateway to {url}: the API on http://{} and metrics on http://{}/metrics (Ctrl-C stops)",
        gateway.api_addr(),
        gateway.metrics_addr().map_or("-".into(), |a| a.to_string())
    );
    gateway.wait()?;
    eprintln!("stopped");
    Ok(ExitCode::SUCCESS)
}

/// Arguments of `yaraflow worker`.
#[derive(Debug, clap::Args)]
pub struct WorkerArgs {
    #[command(flatten)]
    cluster: ClusterArgs,
    /// Rules: `.yar`/`.yara` files or directories (default: the bundled
    /// rules in `data/rules`). Every worker must load the same rules.
    #[arg(long, default_value = "data/rules")]
    rules: Vec<PathBuf>,
    /// Lease time: how long a dead worker's partitions wait to move.
    #[arg(long, default_value = "10s")]
    lease: humantime::Duration,
    /// How often a status line is printed on stderr (0: never).
    #[arg(long, default_value = "10s")]
    status_every: humantime::Duration,
    /// Serve the worker's Prometheus metrics (`yaraflow_cluster_*`, the
    /// scanner's and the process's) at `http://ADDR/metrics`; none unless
    /// given (one address per worker on a host).
    #[arg(long)]
    metrics_listen: Option<std::net::SocketAddr>,
    /// Publish match events (each rule seen matching a stream for the
    /// first time, as JSON) to `<prefix>.events`; read them with
    /// `yaraflow verdicts --events`.
    #[arg(long)]
    events: bool,
    #[command(flatten)]
    rule_args: RuleArgs,
}

/// Arguments of `yaraflow verdicts`.
#[derive(Debug, clap::Args)]
pub struct VerdictsArgs {
    #[command(flatten)]
    cluster: ClusterArgs,
    /// Stop once every verdict published so far is printed, instead of
    /// following new ones.
    #[arg(long)]
    no_follow: bool,
    /// Print the match events (workers run with `--events`) instead of
    /// the verdicts.
    #[arg(long)]
    events: bool,
}

/// One thread, one runtime: the worker's loop is not `Send`.
fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

/// Runs a worker until SIGINT or SIGTERM, then hands its partitions over.
pub fn worker(args: WorkerArgs) -> anyhow::Result<ExitCode> {
    let rules = load_rules(&args.rules, &args.rule_args)?;
    let config = ClusterConfig {
        lease_ttl: args.lease.into(),
        events: args.events,
        ..args.cluster.config()
    };
    let scanner = ScannerConfig {
        max_pattern_len: args.rule_args.max_pattern_len,
        ..ScannerConfig::default()
    };
    let worker = Worker::new(rules, config, scanner)?;
    let stats = worker.stats();
    let metrics = match args.metrics_listen {
        Some(listen) => {
            let endpoint = yaraflow::service::MetricsEndpoint::start(listen)
                .with_context(|| format!("cannot serve metrics on {listen}"))?;
            eprintln!("metrics on http://{}/metrics", endpoint.addr());
            Some(endpoint)
        }
        None => None,
    };
    eprintln!(
        "worker {} joining {} (Ctrl-C stops)",
        worker.id(),
        args.cluster.nats
    );
    let status_every: Duration = args.status_every.into();
    let final_stats = runtime()?.block_on(async move {
        let client = cluster::connect(&args.cluster.nats).await?;
        let status = async {
            if status_every.is_zero() {
                return std::future::pending::<()>().await;
            }
            loop {
                tokio::time::sleep(status_every).await;
                eprintln!(
                    "{}",
                    serde_json::to_string(&stats.snapshot()).unwrap_or_default()
                );
            }
        };
        let stop = async {
            tokio::select! {
                _ = stop_signal() => {}
                _ = status => {}
            }
        };
        worker.run(client, stop).await
    })?;
    if let Some(endpoint) = metrics {
        endpoint.stop();
    }
    eprintln!("stopped: {}", serde_json::to_string(&final_stats)?);
    Ok(ExitCode::SUCCESS)
}

async fn stop_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

/// Prints the verdicts (or the match events) in the order published, one
/// JSON line each.
pub fn verdicts(args: VerdictsArgs) -> anyhow::Result<ExitCode> {
    runtime()?.block_on(async move {
        let config = args.cluster.config();
        let client = cluster::connect(&args.cluster.nats).await?;
        cluster::ensure_cluster(&client, &config).await?;
        let output = match args.events {
            true => cluster::Output::Events,
            false => cluster::Output::Verdicts,
        };
        let verdicts = cluster::published(&client, &config, output).await?;
        if args.no_follow && verdicts.published == 0 {
            return Ok(ExitCode::SUCCESS);
        }
        let mut stream = std::pin::pin!(verdicts.stream);
        let mut out = std::io::stdout().lock();
        while let Some(verdict) = stream.next().await {
            let (payload, pending) = verdict?;
            out.write_all(&payload)?;
            out.write_all(b"\n")?;
            if args.no_follow && pending == 0 {
                break;
            }
        }
        out.flush()?;
        Ok::<_, anyhow::Error>(ExitCode::SUCCESS)
    })
}
