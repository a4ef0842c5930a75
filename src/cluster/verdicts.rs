//! Reading the verdicts and match events back: an ordered consumer on the
//! verdict (or event) stream, from its first message. Each verdict is the
//! JSON line of one closed stream, published once per close; each event
//! the JSON line of a rule first seen matching a stream (see the module
//! docs of [`crate::cluster`]).

use async_nats::jetstream::consumer::{pull, DeliverPolicy};
use bytes::Bytes;
use futures_util::{Stream, StreamExt};

use super::config::ClusterConfig;
use super::error::ClusterError;

/// The verdicts (or events) published so far, then those to come.
pub struct Verdicts<S> {
    /// How many the stream held when reading began.
    pub published: u64,
    /// Each one's JSON, with how many were published after it (as the
    /// server counted when it delivered it).
    pub stream: S,
}

/// What workers publish.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Output {
    /// Final verdicts, one per close.
    Verdicts,
    /// Match events (workers publish them with [`ClusterConfig::events`]).
    Events,
}

/// Reads the verdict stream of `config` from its start.
pub async fn verdicts(
    client: &async_nats::Client,
    config: &ClusterConfig,
) -> Result<Verdicts<impl Stream<Item = Result<(Bytes, u64), ClusterError>>>, ClusterError> {
    published(client, config, Output::Verdicts).await
}

/// Reads the verdict or event stream of `config` from its start.
pub async fn published(
    client: &async_nats::Client,
    config: &ClusterConfig,
    output: Output,
) -> Result<Verdicts<impl Stream<Item = Result<(Bytes, u64), ClusterError>>>, ClusterError> {
    let name = match output {
        Output::Verdicts => config.verdict_stream(),
        Output::Events => config.event_stream(),
    };
    let js = async_nats::jetstream::new(client.clone());
    let stream = js
        .get_stream(&name)
        .await
        .map_err(|e| ClusterError::js(format!("opening the stream {name}"), e))?;
    let published = stream.cached_info().state.messages;
    let consumer = stream
        .create_consumer(pull::OrderedConfig {
            deliver_policy: DeliverPolicy::All,
            ..Default::default()
        })
        .await
        .map_err(|e| ClusterError::js(format!("reading {name}"), e))?;
    let messages = consumer
        .messages()
        .await
        .map_err(|e| ClusterError::js(format!("reading {name}"), e))?;
    let stream = messages.map(|message| {
        let message = message.map_err(|e| ClusterError::js("reading a message", e))?;
        let pending = message.info().map(|i| i.pending).unwrap_or(0);
        Ok((message.payload.clone(), pending))
    });
    Ok(Verdicts { published, stream })
}
