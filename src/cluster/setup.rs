//! Connecting, and making the JetStream streams and buckets a deployment
//! needs: whoever comes first (a producer or a worker) creates them with
//! the configured replicas; the others find them.

use async_nats::jetstream::{self, kv, object_store, stream};

use super::checkpoint_store::CheckpointStore;
use super::config::ClusterConfig;
use super::error::ClusterError;

/// What a deployment uses on JetStream.
pub(crate) struct Objects {
    pub js: jetstream::Context,
    /// The input streams, by index ([`ClusterConfig::input_index`]).
    pub inputs: Vec<stream::Stream>,
    pub leases: kv::Store,
    pub checkpoints: CheckpointStore,
}

/// Connects to the NATS server(s) at `url` (comma-separated for several).
pub async fn connect(url: &str) -> Result<async_nats::Client, ClusterError> {
    async_nats::ConnectOptions::new()
        .connection_timeout(std::time::Duration::from_secs(5))
        .connect(url)
        .await
        .map_err(|e| ClusterError::Connect {
            url: url.to_string(),
            reason: e.to_string(),
        })
}

/// Creates the input, verdict and event streams, the lease and checkpoint
/// buckets and the checkpoint object store of `config` when they are
/// absent (idempotent).
pub async fn ensure_cluster(
    client: &async_nats::Client,
    config: &ClusterConfig,
) -> Result<(), ClusterError> {
    objects(client, config).await.map(|_| ())
}

pub(crate) async fn objects(
    client: &async_nats::Client,
    config: &ClusterConfig,
) -> Result<Objects, ClusterError> {
    config.validate()?;
    let js = jetstream::new(client.clone());
    let mut inputs = Vec::new();
    for (name, subjects) in config.input_streams() {
        let input = js
            .get_or_create_stream(stream::Config {
                name: name.clone(),
                subjects,
                max_age: config.input_max_age,
                num_replicas: config.replicas,
                max_message_size: i32::try_from(config.max_message_bytes).unwrap_or(i32::MAX),
                ..Default::default()
            })
            .await
            .map_err(|e| ClusterError::js(format!("creating the input stream {name}"), e))?;
        inputs.push(input);
    }
    let outputs = [
        (config.verdict_stream(), config.verdict_subject(), "verdict"),
        (config.event_stream(), config.event_subject(), "event"),
    ];
    for (name, subject, what) in outputs {
        js.get_or_create_stream(stream::Config {
            name,
            subjects: vec![subject],
            num_replicas: config.replicas,
            duplicate_window: config.duplicate_window,
            max_age: config.output_max_age,
            ..Default::default()
        })
        .await
        .map_err(|e| ClusterError::js(format!("creating the {what} stream"), e))?;
    }
    let leases = bucket(&js, config, config.lease_bucket(), config.lease_ttl).await?;
    let entries = bucket(&js, config, config.checkpoint_bucket(), Default::default()).await?;
    let objects = object_bucket(&js, config).await?;
    Ok(Objects {
        js,
        inputs,
        leases,
        checkpoints: CheckpointStore {
            entries,
            objects,
            inline_limit: config.inline_checkpoint_bytes,
            max_bytes: config.max_checkpoint_bytes,
        },
    })
}

async fn bucket(
    js: &jetstream::Context,
    config: &ClusterConfig,
    name: String,
    max_age: std::time::Duration,
) -> Result<kv::Store, ClusterError> {
    if let Ok(store) = js.get_key_value(&name).await {
        return Ok(store);
    }
    // The bucket's stream, made as the key-value convention wants it:
    // async-nats 0.51's `create_key_value` first asks for the account's
    // info, whose answer from nats-server 2.9 it cannot parse.
    let window = match max_age.is_zero() {
        true => std::time::Duration::from_secs(120),
        false => max_age.min(std::time::Duration::from_secs(120)),
    };
    let created = js
        .create_stream(stream::Config {
            name: format!("KV_{name}"),
            subjects: vec![format!("$KV.{name}.>")],
            max_messages_per_subject: 1,
            max_age,
            duplicate_window: window,
            num_replicas: config.replicas,
            // An entry holds a checkpoint inline or a reference to one.
            max_message_size: i32::try_from(config.inline_checkpoint_bytes + 1024)
                .unwrap_or(i32::MAX),
            discard: stream::DiscardPolicy::New,
            allow_rollup: true,
            deny_delete: true,
            allow_direct: true,
            ..Default::default()
        })
        .await;
    match created {
        Ok(_) => js
            .get_key_value(&name)
            .await
            .map_err(|e| ClusterError::js(format!("opening the bucket {name}"), e)),
        // Another worker created it meanwhile.
        Err(err) => js
            .get_key_value(&name)
            .await
            .map_err(|_| ClusterError::js(format!("creating the bucket {name}"), err)),
    }
}

/// The object store of large checkpoints (its stream made by
/// `create_object_store` itself, which asks nothing of the account).
async fn object_bucket(
    js: &jetstream::Context,
    config: &ClusterConfig,
) -> Result<object_store::ObjectStore, ClusterError> {
    let name = config.checkpoint_object_bucket();
    if let Ok(store) = js.get_object_store(&name).await {
        return Ok(store);
    }
    let created = js
        .create_object_store(object_store::Config {
            bucket: name.clone(),
            num_replicas: config.replicas,
            ..Default::default()
        })
        .await;
    match created {
        Ok(store) => Ok(store),
        // Another worker created it meanwhile.
        Err(err) => js
            .get_object_store(&name)
            .await
            .map_err(|_| ClusterError::js(format!("creating the object store {name}"), err)),
    }
}
