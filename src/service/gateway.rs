//! The HTTP API as an ingest gateway to a cluster (`yaraflow serve
//! --nats`): the write routes of the API publish to the stream's
//! partition instead of scanning here, and answer once JetStream has
//! every message of the request (durable); the cluster's workers scan,
//! and publish verdicts and match events.
//!
//! Routes: `POST /v1/streams/{id}/chunks` (a body longer than one message
//! goes as several chunks, in order), `POST /v1/streams/{id}/lines` (one
//! message per line), `POST /v1/chunks` (framed, as the API's) and
//! `DELETE /v1/streams/{id}` (the close; 202: the verdict goes to the
//! verdict subject). The API's other routes read state this process does
//! not hold: 501 `not_in_gateway`, saying where to look instead. The
//! token check, body limits and request metrics are the API's.
//!
//! A request makes at most 65,536 messages (413 `too_many_messages`
//! past it), at most 256 of them awaiting their acknowledgement at once:
//! a small body of empty lines must not become millions of publishes.
//! A request whose publishes fail gets 503 `cluster_unavailable`: some of
//! its messages may be in the cluster already, so its client must treat
//! those streams as failed (as with [`crate::cluster::Producer`]). A
//! stream's order holds within a request and across requests a client
//! sends one after the other; two requests for one stream in flight at
//! once have no order.

use std::net::SocketAddr;
use std::thread::JoinHandle;

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use bytes::Bytes;
use tokio::sync::oneshot;
use uuid::Uuid;

use super::api::{resource, stream_id};
use super::body::{frame_bytes, read_body, read_frames, split_lines, BodyLimits};
use super::error::ApiError;
use super::{ServerThread, ServiceConfig, ServiceError};
use crate::cluster::{await_ack, ClusterConfig, ClusterError, MessageKind, Publisher};

/// A running gateway: the HTTP listeners, and the thread that drives the
/// NATS connection.
pub struct Gateway {
    http: ServerThread,
    nats: NatsThread,
    api_addr: SocketAddr,
    metrics_addr: Option<SocketAddr>,
}

impl Gateway {
    /// Connects to the cluster at `url` (creating its streams and buckets
    /// if absent) and starts the HTTP listeners of `config` (its engine
    /// settings are not used).
    pub fn start(
        url: &str,
        cluster: ClusterConfig,
        config: ServiceConfig,
    ) -> Result<Gateway, ServiceError> {
        let prometheus = super::prometheus();
        let (nats, client, publisher) = NatsThread::start(url.to_string(), cluster)?;
        let state = web::Data::new(GatewayState {
            publisher,
            client,
            body: BodyLimits {
                max_bytes: config.max_body_bytes,
                timeout: config.body_timeout,
            },
        });
        let (http, (api_addr, metrics_addr)) =
            ServerThread::start("yaraflow-gateway", move || {
                super::bind(state, routes, prometheus, &config)
            })?;
        Ok(Gateway {
            http,
            nats,
            api_addr,
            metrics_addr,
        })
    }

    /// Where the API listens.
    pub fn api_addr(&self) -> SocketAddr {
        self.api_addr
    }

    /// Where `/metrics` listens, if on its own listener.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_addr
    }

    /// Blocks until the server stops (on SIGINT or SIGTERM).
    pub fn wait(mut self) -> Result<(), ServiceError> {
        self.http.wait()?;
        self.nats.stop();
        Ok(())
    }

    /// Stops the server (finishing requests in flight).
    pub fn stop(mut self) -> Result<(), ServiceError> {
        self.http.stop()?;
        self.nats.stop();
        Ok(())
    }
}

/// A thread whose runtime drives the NATS connection (the client's
/// reader and writer are tasks on it) until it is told to stop; the
/// HTTP workers use the client from their own runtimes.
struct NatsThread {
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl NatsThread {
    fn start(
        url: String,
        cluster: ClusterConfig,
    ) -> Result<(NatsThread, async_nats::Client, Publisher), ServiceError> {
        let (connected, on_connect) = std::sync::mpsc::channel();
        let (stop, stopped) = oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("yaraflow-nats".into())
            .spawn(move || {
                let runtime = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(runtime) => runtime,
                    Err(e) => {
                        let _ = connected.send(Err(ServiceError::Server(e.to_string())));
                        return;
                    }
                };
                runtime.block_on(async move {
                    let ready = async {
                        let client = crate::cluster::connect(&url).await?;
                        let publisher = Publisher::new(client.clone(), cluster).await?;
                        Ok::<_, ClusterError>((client, publisher))
                    };
                    let ready = ready.await.map_err(ServiceError::from);
                    let failed = ready.is_err();
                    let _ = connected.send(ready);
                    if !failed {
                        let _ = stopped.await;
                    }
                });
            })
            .map_err(|e| ServiceError::Server(e.to_string()))?;
        let (client, publisher) = on_connect
            .recv()
            .map_err(|_| ServiceError::Server("the NATS thread stopped while starting".into()))??;
        let nats = NatsThread {
            stop: Some(stop),
            thread: Some(thread),
        };
        Ok((nats, client, publisher))
    }

    fn stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for NatsThread {
    fn drop(&mut self) {
        self.stop();
    }
}

/// What the gateway's handlers share.
pub struct GatewayState {
    /// Publishes to the cluster.
    pub publisher: Publisher,
    /// The NATS connection (for readiness).
    pub client: async_nats::Client,
    /// The bounds of a request body.
    pub body: BodyLimits,
}

type State = web::Data<GatewayState>;

/// Registers the health checks and the `/v1` routes (behind `authorize`).
pub fn routes(config: &mut web::ServiceConfig) {
    let elsewhere = || web::to(not_in_gateway);
    let v1 = web::scope("/v1")
        .wrap(actix_web::middleware::from_fn(super::authorize))
        .service(
            resource("/streams/{stream}", "GET, PUT, DELETE")
                .route(web::delete().to(close_stream))
                .route(web::get().to(not_in_gateway))
                .route(web::put().to(not_in_gateway)),
        )
        .service(resource("/streams/{stream}/chunks", "POST").route(web::post().to(append_chunk)))
        .service(resource("/streams/{stream}/lines", "POST").route(web::post().to(append_lines)))
        .service(resource("/chunks", "POST").route(web::post().to(append_frames)))
        .service(web::resource("/streams").to(not_in_gateway))
        .service(web::resource("/streams/{stream}/reset").route(elsewhere()))
        .service(web::resource("/streams/{stream}/offset").route(elsewhere()))
        .service(web::resource("/checkpoint").route(elsewhere()))
        .service(web::resource("/events").route(elsewhere()))
        .service(web::resource("/events/closed").route(elsewhere()))
        .service(web::resource("/rules").route(elsewhere()))
        .service(web::resource("/rules/reload").route(elsewhere()))
        .default_service(web::to(super::api::not_found));
    config
        .service(resource("/healthz", "GET").route(web::get().to(healthz)))
        .service(resource("/readyz", "GET").route(web::get().to(readyz)))
        .service(v1);
}

async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(serde_json::json!({ "status": "ok" }))
}

/// Ready while connected to NATS.
async fn readyz(state: State) -> Result<HttpResponse, ApiError> {
    match state.client.connection_state() {
        async_nats::connection::State::Connected => {
            Ok(HttpResponse::Ok().json(serde_json::json!({ "status": "ready" })))
        }
        other => Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "cluster_unavailable",
            format!("not connected to NATS ({other})"),
        )),
    }
}

/// A route of the API that reads state only the cluster's workers hold.
async fn not_in_gateway(request: HttpRequest, state: State) -> Result<HttpResponse, ApiError> {
    let config = state.publisher.config();
    Err(ApiError::new(
        StatusCode::NOT_IMPLEMENTED,
        "not_in_gateway",
        format!(
            "{} {} is not served by an ingest gateway (serve --nats): streams are scanned by the cluster's workers; verdicts go to {} and match events to {} (yaraflow verdicts --nats URL [--events])",
            request.method(),
            request.path(),
            config.verdict_subject(),
            config.event_subject()
        ),
    ))
}

async fn append_chunk(
    state: State,
    request: HttpRequest,
    path: web::Path<String>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let stream = stream_id(&path)?;
    let body = read_body(&state.body, &request, payload).await?;
    let piece = state.publisher.max_data_bytes();
    let messages = chunk_messages(stream, &body, piece);
    let published = publish_all(&state.publisher, messages.len(), messages).await?;
    Ok(HttpResponse::Ok().json(serde_json::json!({
        "stream": stream, "accepted_bytes": body.len(), "messages": published
    })))
}

async fn append_lines(
    state: State,
    request: HttpRequest,
    path: web::Path<String>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let stream = stream_id(&path)?;
    let body = read_body(&state.body, &request, payload).await?;
    // Before the lines are split: a body of empty lines is cheap to send.
    check_count(memchr::memchr_iter(b'\n', &body).count())?;
    let lines = split_lines(&body)?;
    let limit = state.publisher.max_data_bytes();
    if let Some(line) = lines.iter().find(|line| line.len() > limit) {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "line_too_large",
            format!(
                "a line of {} bytes exceeds the cluster's message limit ({limit} bytes of data)",
                line.len()
            ),
        ));
    }
    let count = lines.len();
    let messages = lines.into_iter().map(|l| (MessageKind::Line, stream, l));
    publish_all(&state.publisher, count, messages).await?;
    Ok(HttpResponse::Ok().json(serde_json::json!({
        "stream": stream, "accepted_lines": count
    })))
}

async fn append_frames(
    state: State,
    request: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let frames = read_frames(&state.body, &request, payload).await?;
    let (chunks, bytes) = (frames.len(), frame_bytes(&frames));
    let piece = state.publisher.max_data_bytes();
    let count = frames
        .iter()
        .map(|(_, c)| c.len().div_ceil(piece).max(1))
        .sum();
    let messages = frames
        .iter()
        .flat_map(|(stream, chunk)| chunk_messages(*stream, chunk, piece));
    publish_all(&state.publisher, count, messages).await?;
    Ok(HttpResponse::Accepted().json(serde_json::json!({
        "accepted_chunks": chunks, "accepted_bytes": bytes
    })))
}

async fn close_stream(state: State, path: web::Path<String>) -> Result<HttpResponse, ApiError> {
    let stream = stream_id(&path)?;
    let close = std::iter::once((MessageKind::Close, stream, Bytes::new()));
    publish_all(&state.publisher, 1, close).await?;
    Ok(HttpResponse::Accepted().json(serde_json::json!({
        "stream": stream,
        "closed": true,
        "verdict_subject": state.publisher.config().verdict_subject(),
    })))
}

/// Most messages one request may make: each is a JetStream message with
/// its own acknowledgement, so a small body of empty lines or frames must
/// not become millions of them.
const MAX_MESSAGES_PER_REQUEST: usize = 65_536;

/// Most publishes of one request awaiting their acknowledgement at once.
const IN_FLIGHT_PER_REQUEST: usize = 256;

fn check_count(messages: usize) -> Result<(), ApiError> {
    if messages <= MAX_MESSAGES_PER_REQUEST {
        return Ok(());
    }
    Err(ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "too_many_messages",
        format!(
            "the request makes {messages} messages (lines, frames or pieces of chunks), more than the {MAX_MESSAGES_PER_REQUEST} a request may; send smaller requests"
        ),
    ))
}

/// One message per piece of `data` of at most `piece` bytes (one empty
/// chunk for empty data: it opens the stream, as the API's does).
fn chunk_messages(stream: Uuid, data: &Bytes, piece: usize) -> Vec<(MessageKind, Uuid, Bytes)> {
    if data.is_empty() {
        return vec![(MessageKind::Chunk, stream, Bytes::new())];
    }
    (0..data.len())
        .step_by(piece)
        .map(|start| {
            let end = (start + piece).min(data.len());
            (MessageKind::Chunk, stream, data.slice(start..end))
        })
        .collect()
}

/// Publishes `count` messages in order, at most [`IN_FLIGHT_PER_REQUEST`]
/// awaiting their acknowledgement at once, and returns once JetStream has
/// them all. How many were published.
async fn publish_all(
    publisher: &Publisher,
    count: usize,
    messages: impl IntoIterator<Item = (MessageKind, Uuid, Bytes)>,
) -> Result<usize, ApiError> {
    check_count(count)?;
    let mut in_flight = std::collections::VecDeque::with_capacity(IN_FLIGHT_PER_REQUEST);
    let mut published = 0;
    for (kind, stream, data) in messages {
        if in_flight.len() >= IN_FLIGHT_PER_REQUEST {
            let oldest = in_flight.pop_front().expect("not empty");
            await_ack(oldest).await.map_err(unavailable)?;
        }
        in_flight.push_back(
            publisher
                .publish(kind, stream, data)
                .await
                .map_err(unavailable)?,
        );
        published += 1;
    }
    let acks = futures_util::future::join_all(in_flight.into_iter().map(await_ack)).await;
    for ack in acks {
        ack.map_err(unavailable)?;
    }
    Ok(published)
}

fn unavailable(error: ClusterError) -> ApiError {
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "cluster_unavailable",
        format!(
            "{error}; the streams of this request may be partly published: treat them as failed"
        ),
    )
}
