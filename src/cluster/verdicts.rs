//! Reading the verdicts back: an ordered consumer on the verdict stream,
//! from its first message. Each verdict is the JSON line of one closed
//! stream, published once per close (see the module docs of
//! [`crate::cluster`]).

use async_nats::jetstream::consumer::{pull, DeliverPolicy};
use bytes::Bytes;
use futures_util::{Stream, StreamExt};

use super::config::ClusterConfig;
use super::error::ClusterError;

/// The verdicts published so far, then those to come.
pub struct Verdicts<S> {
    /// How many verdicts the stream held when reading began.
    pub published: u64,
    /// Each verdict's JSON, with how many were published after it (as the
    /// server counted when it delivered it).
    pub stream: S,
}

/// Reads the verdict stream of `config` from its start.
pub async fn verdicts(
    client: &async_nats::Client,
    config: &ClusterConfig,
) -> Result<Verdicts<impl Stream<Item = Result<(Bytes, u64), ClusterError>>>, ClusterError> {
    let js = async_nats::jetstream::new(client.clone());
    let stream = js
        .get_stream(config.verdict_stream())
        .await
        .map_err(|e| ClusterError::js("opening the verdict stream", e))?;
    let published = stream.cached_info().state.messages;
    let consumer = stream
        .create_consumer(pull::OrderedConfig {
            deliver_policy: DeliverPolicy::All,
            ..Default::default()
        })
        .await
        .map_err(|e| ClusterError::js("reading the verdicts", e))?;
    let messages = consumer
        .messages()
        .await
        .map_err(|e| ClusterError::js("reading the verdicts", e))?;
    let stream = messages.map(|message| {
        let message = message.map_err(|e| ClusterError::js("reading a verdict", e))?;
        let pending = message.info().map(|i| i.pending).unwrap_or(0);
        Ok((message.payload.clone(), pending))
    });
    Ok(Verdicts { published, stream })
}
