//! A producer of a yaraflow cluster: streams published to NATS JetStream,
//! scanned by the cluster's workers, verdicts read back.
//!
//! Each file of `data/samples` becomes a stream, published in
//! packet-sized chunks to its partition, then closed; `flush` returns
//! once JetStream has every message (durable). The verdicts the workers
//! publish are read from the verdict stream and printed, one JSON line per
//! stream. Needs a JetStream server and at least one worker:
//!
//! ```sh
//! nats-server -js &
//! cargo run --release -- worker --nats nats://127.0.0.1:4222 &
//! cargo run --example cluster_producer -- nats://127.0.0.1:4222
//! ```

use std::collections::HashSet;
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use yaraflow::cluster::{self, ClusterConfig, Producer};
use yaraflow::Uuid;

/// How long to wait for the workers' verdicts.
const VERDICTS_WITHIN: Duration = Duration::from_secs(30);

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let url = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "nats://127.0.0.1:4222".into());
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(run(&url))
}

async fn run(url: &str) -> Result<(), Box<dyn std::error::Error>> {
    let client = cluster::connect(url).await?;
    let config = ClusterConfig::default();
    // At most 256 publishes await their acknowledgement at once.
    let mut producer = Producer::new(client.clone(), config.clone(), 256).await?;
    let mut ours = HashSet::new();
    for entry in std::fs::read_dir("data/samples")? {
        let path = entry?.path();
        let stream = Uuid::new_v4();
        let data = Bytes::from(std::fs::read(&path)?);
        for start in (0..data.len()).step_by(1460) {
            let end = (start + 1460).min(data.len());
            producer.chunk(stream, data.slice(start..end)).await?;
        }
        producer.close(stream).await?;
        eprintln!("{} -> stream {stream}", path.display());
        ours.insert(stream);
    }
    producer.flush().await?;
    eprintln!(
        "{} messages durable; waiting for the verdicts",
        producer.published()
    );

    let verdicts = cluster::verdicts(&client, &config).await?;
    let mut verdicts = std::pin::pin!(verdicts.stream);
    let deadline = tokio::time::Instant::now() + VERDICTS_WITHIN;
    while !ours.is_empty() {
        let next = tokio::time::timeout_at(deadline, verdicts.next()).await;
        let Ok(Some(verdict)) = next else {
            return Err(format!(
                "{} verdicts missing after {VERDICTS_WITHIN:?}: is a worker running (yaraflow worker --nats {url})?",
                ours.len()
            )
            .into());
        };
        let (payload, _) = verdict?;
        let line: serde_json::Value = serde_json::from_slice(&payload)?;
        let stream = line["stream"].as_str().and_then(|s| s.parse().ok());
        if stream.is_some_and(|s| ours.remove(&s)) {
            println!("{line}");
        }
    }
    Ok(())
}
