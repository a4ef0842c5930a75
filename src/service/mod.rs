//! The HTTP service: the engine behind an HTTP API, and `/metrics`.
//!
//! [`Service::start`] starts an [`Engine`] and an actix-web server on a
//! thread of its own: the API (`api.rs`, JSON; `framing.rs` for the binary
//! bulk endpoint; `events.rs` for server-sent match events; `state.rs`,
//! what their handlers share; `body.rs`, reading a body under the limits)
//! on one listener, and Prometheus' `/metrics` on another (or on the API
//! listener too, with `metrics_on_api`). Both default to loopback.
//! [`Gateway::start`] (feature `cluster`) serves the API's write routes
//! in front of a NATS cluster instead (`gateway.rs`), with the same
//! listeners, token check and limits.
//!
//! Every request is counted by route pattern and status class, with its
//! latency; `/v1` routes need `Authorization: Bearer TOKEN` when a token is
//! configured. The token is checked by the `/v1` scope itself, after the
//! router has decoded and matched the path, never by comparing the raw
//! path: `/%761/streams` and `/v%31/streams` are `/v1/streams` to the
//! router, so they are to the check too.
//!
//! Limits of a connection, so that a stalled or hostile client holds
//! nothing for long: request heads must arrive within
//! [`ServiceConfig::request_timeout`], bodies within
//! [`ServiceConfig::body_timeout`] (408), idle keep-alive connections close
//! after [`ServiceConfig::keep_alive`], a client that closes its side ends
//! its event stream at once (half-closed connections are not kept), and at
//! most [`ServiceConfig::max_event_subscribers`] event streams are open.
//!
//! The Prometheus recorder is process-wide: the first service of a process
//! installs it, later ones share it. Its upkeep (folding histogram samples
//! into their buckets) runs on a thread of its own every
//! [`METRICS_UPKEEP`], so memory stays flat when nobody scrapes.

mod api;
mod body;
mod error;
mod events;
pub mod framing;
#[cfg(feature = "cluster")]
mod gateway;
mod state;

use std::cell::{Cell, RefCell};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::atomic::AtomicUsize;
use std::sync::Arc;
use std::sync::OnceLock;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use actix_web::body::MessageBody;
use actix_web::dev::{Server, ServerHandle, ServiceRequest, ServiceResponse};
use actix_web::middleware::Next;
use actix_web::{web, App, HttpResponse, HttpServer, ResponseError};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

pub use error::ApiError;
#[cfg(feature = "cluster")]
pub use gateway::Gateway;

use crate::config::EngineConfig;
use crate::engine::{Engine, ShutdownReport};
use crate::rules::RuleSet;

/// Configuration of [`Service`].
#[derive(Debug, Clone)]
pub struct ServiceConfig {
    /// Address of the API.
    pub listen: SocketAddr,
    /// Address of the Prometheus endpoint, if any.
    pub metrics_listen: Option<SocketAddr>,
    /// Also serve `/metrics` on the API listener.
    pub metrics_on_api: bool,
    /// Largest request body, in bytes.
    pub max_body_bytes: usize,
    /// Bearer token required by `/v1` routes, if any.
    pub token: Option<String>,
    /// Where rules are (re)loaded from.
    pub rule_paths: Vec<PathBuf>,
    /// External variables the rules are (re)compiled with.
    pub rule_externals: Vec<crate::rules::External>,
    /// Whether streams retain their bytes for dense rules and are scanned
    /// whole (see `RuleOptions::whole_scan_dense`).
    pub whole_scan_dense_rules: bool,
    /// HTTP worker threads.
    pub workers: usize,
    /// Longest time a client may take to send a request's head (line and
    /// headers); past it the connection is closed (408).
    pub request_timeout: Duration,
    /// Longest time a request's body may take to arrive; past it the
    /// request gets 408 `body_timeout` and the connection is closed.
    pub body_timeout: Duration,
    /// How long an idle keep-alive connection stays open.
    pub keep_alive: Duration,
    /// Most event subscriptions (`GET /v1/events`, `/v1/events/closed`)
    /// open at once; past it, 503 `too_many_subscribers`.
    pub max_event_subscribers: usize,
    /// The engine behind the API.
    pub engine: EngineConfig,
}

impl Default for ServiceConfig {
    fn default() -> Self {
        ServiceConfig {
            listen: ([127, 0, 0, 1], 8080).into(),
            metrics_listen: Some(([127, 0, 0, 1], 9464).into()),
            metrics_on_api: false,
            max_body_bytes: 16 << 20,
            token: None,
            rule_paths: Vec::new(),
            rule_externals: Vec::new(),
            whole_scan_dense_rules: true,
            workers: 2,
            request_timeout: Duration::from_secs(5),
            body_timeout: Duration::from_secs(30),
            keep_alive: Duration::from_secs(5),
            max_event_subscribers: 64,
            engine: EngineConfig::default(),
        }
    }
}

/// Why the service could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// The engine did not start.
    #[error(transparent)]
    Engine(#[from] crate::EngineError),
    /// A listener could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The server thread failed.
    #[error("the HTTP server failed: {0}")]
    Server(String),
    /// The gateway could not reach its cluster.
    #[cfg(feature = "cluster")]
    #[error(transparent)]
    Cluster(#[from] crate::cluster::ClusterError),
}

/// A running service.
pub struct Service {
    engine: Engine,
    http: ServerThread,
    api_addr: SocketAddr,
    metrics_addr: Option<SocketAddr>,
}

/// Actix servers on a thread of their own (an actix system of their own),
/// with their handles: the service's, or `/metrics` alone.
struct ServerThread {
    handles: Vec<ServerHandle>,
    thread: Option<JoinHandle<std::io::Result<()>>>,
}

impl ServerThread {
    /// Starts thread `name`, runs `bind` in its actix system and serves
    /// what it bound until the servers stop; gives back what `bind` says
    /// of them (their addresses).
    fn start<T: Send + 'static>(
        name: &str,
        bind: impl FnOnce() -> Result<(Vec<Server>, T), ServiceError> + Send + 'static,
    ) -> Result<(ServerThread, T), ServiceError> {
        let (started, on_start) = std::sync::mpsc::channel();
        let thread = std::thread::Builder::new()
            .name(name.into())
            .spawn(move || {
                actix_web::rt::System::new().block_on(async move {
                    match bind() {
                        Ok((servers, bound)) => {
                            let handles = servers.iter().map(|s| s.handle()).collect();
                            let _ = started.send(Ok((handles, bound)));
                            futures_util::future::try_join_all(servers)
                                .await
                                .map(|_| ())
                        }
                        Err(error) => {
                            let _ = started.send(Err(error));
                            Ok(())
                        }
                    }
                })
            })
            .map_err(|e| ServiceError::Server(e.to_string()))?;
        let (handles, bound) = on_start.recv().map_err(|_| {
            ServiceError::Server(format!("the {name} thread stopped while starting"))
        })??;
        let servers = ServerThread {
            handles,
            thread: Some(thread),
        };
        Ok((servers, bound))
    }

    /// Blocks until the servers stop (on SIGINT or SIGTERM, or [`Self::stop`]).
    fn wait(&mut self) -> Result<(), ServiceError> {
        if let Some(thread) = self.thread.take() {
            let served = thread
                .join()
                .map_err(|_| ServiceError::Server("panicked".into()))?;
            served.map_err(|e| ServiceError::Server(e.to_string()))?;
        }
        Ok(())
    }

    /// Stops the servers (finishing requests in flight) and waits for them.
    fn stop(&mut self) -> Result<(), ServiceError> {
        let handles = self.handles.clone();
        std::thread::spawn(move || {
            actix_web::rt::System::new().block_on(async move {
                for server in handles {
                    server.stop(true).await;
                }
            })
        })
        .join()
        .map_err(|_| ServiceError::Server("panicked while stopping".into()))?;
        self.wait()
    }
}

/// The process-wide Prometheus recorder (installed on first use); `None`
/// when another recorder was installed first.
pub fn prometheus() -> Option<PrometheusHandle> {
    static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let seconds = [
                0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05,
                0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
            ];
            let bytes: Vec<f64> = (10..=26).step_by(2).map(|p| f64::from(1u32 << p)).collect();
            let handle = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &seconds)
                .and_then(|b| b.set_buckets_for_metric(Matcher::Suffix("_bytes".into()), &bytes))
                .ok()?
                .install_recorder()
                .ok()?;
            crate::metrics::describe();
            metrics_process::Collector::default().describe();
            spawn_upkeep(handle.clone());
            Some(handle)
        })
        .clone()
}

/// How often the recorder's upkeep runs without a scrape.
pub const METRICS_UPKEEP: Duration = Duration::from_secs(5);

/// Runs the recorder's upkeep every [`METRICS_UPKEEP`], for the life of the
/// process (the recorder lives as long). Without it, histogram samples
/// pile up until the next scrape: about a gigabyte a minute at full load
/// when Prometheus is down.
fn spawn_upkeep(handle: PrometheusHandle) {
    let spawned = std::thread::Builder::new()
        .name("yaraflow-metrics-upkeep".into())
        .spawn(move || loop {
            std::thread::sleep(METRICS_UPKEEP);
            handle.run_upkeep();
        });
    if let Err(error) = spawned {
        eprintln!("warning: no metrics upkeep thread ({error}); scrape /metrics to bound memory");
    }
}

impl Service {
    /// Starts the engine on `rules` and the HTTP listeners.
    pub fn start(rules: RuleSet, config: ServiceConfig) -> Result<Service, ServiceError> {
        let prometheus = prometheus();
        let summary = api::rules_summary(&rules);
        let engine = Engine::start(rules, config.engine.clone())?;
        let state = web::Data::new(state::ApiState {
            engine: engine.handle(),
            body: body::BodyLimits {
                max_bytes: config.max_body_bytes,
                timeout: config.body_timeout,
            },
            rule_paths: config.rule_paths.clone(),
            rule_options: crate::rules::RuleOptions {
                max_pattern_len: config.engine.scanner.max_pattern_len,
                externals: config.rule_externals.clone(),
                whole_scan_dense: config.whole_scan_dense_rules,
            },
            rules_summary: Arc::new(std::sync::RwLock::new(summary)),
            subscribers: Arc::new(AtomicUsize::new(0)),
            max_subscribers: config.max_event_subscribers,
        });
        let (http, (api_addr, metrics_addr)) = ServerThread::start("yaraflow-http", move || {
            bind(state, api::routes, prometheus, &config)
        })?;
        Ok(Service {
            engine,
            http,
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

    /// Blocks until the server stops (on SIGINT or SIGTERM), then shuts the
    /// engine down: every open stream's final verdict.
    pub fn wait(mut self) -> Result<ShutdownReport, ServiceError> {
        self.http.wait()?;
        Ok(self.engine.shutdown()?)
    }

    /// Stops the server (finishing requests in flight; event streams end)
    /// and the engine.
    pub fn stop(mut self) -> Result<ShutdownReport, ServiceError> {
        self.engine.handle().end_subscriptions();
        self.http.stop()?;
        Ok(self.engine.shutdown()?)
    }
}

type Addresses = (SocketAddr, Option<SocketAddr>);

/// How long a stopping server waits for open connections (event streams).
const SHUTDOWN_TIMEOUT_SECS: u64 = 3;

/// Binds the listeners (inside the server's actix system): the API (its
/// `routes` over `state`: the engine's, or the gateway's), and `/metrics`
/// on a server of its own.
fn bind<S: Send + Sync + 'static>(
    state: web::Data<S>,
    routes: fn(&mut web::ServiceConfig),
    prometheus: Option<PrometheusHandle>,
    config: &ServiceConfig,
) -> Result<(Vec<Server>, Addresses), ServiceError> {
    let token = web::Data::new(Token(config.token.clone()));
    let metrics = web::Data::new(Metrics(prometheus));
    let metrics_on_api = config.metrics_on_api;
    let api_metrics = metrics.clone();
    let api = HttpServer::new(move || {
        let app = App::new()
            .app_data(state.clone())
            .app_data(token.clone())
            .app_data(api_metrics.clone())
            .wrap(actix_web::middleware::from_fn(hold_unread_body))
            .wrap(actix_web::middleware::from_fn(count_request))
            .configure(routes)
            .default_service(web::to(api::not_found));
        match metrics_on_api {
            true => {
                app.service(api::resource("/metrics", "GET").route(web::get().to(render_metrics)))
            }
            false => app,
        }
    })
    .workers(config.workers.max(1))
    .client_request_timeout(config.request_timeout)
    .keep_alive(config.keep_alive)
    // A client that closes its side is gone: end its response (an event
    // stream would otherwise be noticed only when a write fails).
    .h1_allow_half_closed(false)
    // Event streams end only with the engine: do not wait 30 s for them.
    .shutdown_timeout(SHUTDOWN_TIMEOUT_SECS)
    .bind(config.listen)
    .map_err(|source| ServiceError::Bind {
        addr: config.listen,
        source,
    })?;
    let api_addr = api.addrs()[0];
    let mut servers = vec![api.run()];
    let mut metrics_addr = None;
    if let Some(listen) = config.metrics_listen {
        let (exporter, addr) = metrics_server(metrics, listen, config)?;
        metrics_addr = Some(addr);
        servers.push(exporter);
    }
    Ok((servers, (api_addr, metrics_addr)))
}

/// The `/metrics` server on `listen` (inside an actix system), with the
/// request limits of `config`.
fn metrics_server(
    metrics: web::Data<Metrics>,
    listen: SocketAddr,
    config: &ServiceConfig,
) -> Result<(Server, SocketAddr), ServiceError> {
    let exporter = HttpServer::new(move || {
        App::new()
            .app_data(metrics.clone())
            .wrap(actix_web::middleware::from_fn(count_request))
            .service(api::resource("/metrics", "GET").route(web::get().to(render_metrics)))
            .default_service(web::to(api::not_found))
    })
    .workers(1)
    .client_request_timeout(config.request_timeout)
    .keep_alive(config.keep_alive)
    .shutdown_timeout(SHUTDOWN_TIMEOUT_SECS)
    .bind(listen)
    .map_err(|source| ServiceError::Bind {
        addr: listen,
        source,
    })?;
    let addr = exporter.addrs()[0];
    Ok((exporter.run(), addr))
}

/// `/metrics` alone, for a process that serves no API (a cluster worker):
/// the process-wide recorder, on a thread of its own.
pub struct MetricsEndpoint {
    server: ServerThread,
    addr: SocketAddr,
}

impl MetricsEndpoint {
    /// Installs the recorder (if no other is) and serves it on `listen`.
    pub fn start(listen: SocketAddr) -> Result<MetricsEndpoint, ServiceError> {
        let metrics = web::Data::new(Metrics(prometheus()));
        let (server, addr) = ServerThread::start("yaraflow-metrics", move || {
            let (server, addr) = metrics_server(metrics, listen, &ServiceConfig::default())?;
            Ok((vec![server], addr))
        })?;
        Ok(MetricsEndpoint { server, addr })
    }

    /// Where `/metrics` listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops the server and waits for its thread.
    pub fn stop(mut self) {
        let _ = self.server.stop();
    }
}

/// The bearer token `/v1` routes need, if any.
struct Token(Option<String>);

/// The Prometheus handle, if this process's recorder is ours.
struct Metrics(Option<PrometheusHandle>);

async fn render_metrics(metrics: web::Data<Metrics>) -> HttpResponse {
    match &metrics.0 {
        Some(handle) => {
            // Process CPU, memory, threads and file descriptors, read now.
            metrics_process::Collector::default().collect();
            handle.run_upkeep();
            HttpResponse::Ok()
                .content_type("text/plain; version=0.0.4")
                .body(handle.render())
        }
        None => ApiError::new(
            actix_web::http::StatusCode::SERVICE_UNAVAILABLE,
            "metrics_unavailable",
            "another metrics recorder was installed in this process",
        )
        .error_response(),
    }
}

/// Refuses requests without the configured bearer token. It wraps the
/// `/v1` scope, so it runs on every request the router sends there, however
/// its path was spelled.
pub(crate) async fn authorize(
    request: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<actix_web::body::EitherBody<impl MessageBody>>, actix_web::Error> {
    let expected = request
        .app_data::<web::Data<Token>>()
        .and_then(|t| t.0.clone());
    if let Some(expected) = expected {
        let given = request
            .headers()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        if !given.is_some_and(|given| same_secret(given.as_bytes(), expected.as_bytes())) {
            let refusal = ApiError::new(
                actix_web::http::StatusCode::UNAUTHORIZED,
                "unauthorized",
                "this route needs the header `Authorization: Bearer TOKEN`",
            );
            let response = refusal.error_response().map_into_right_body();
            return Ok(request.into_response(response));
        }
    }
    Ok(next.call(request).await?.map_into_left_body())
}

/// A request's payload, shared between the handler (which reads it) and
/// [`hold_unread_body`] (which keeps it past the answer if unread).
struct Tracked {
    inner: Rc<RefCell<Option<actix_web::dev::Payload>>>,
    finished: Rc<Cell<bool>>,
}

impl futures_util::Stream for Tracked {
    type Item = Result<bytes::Bytes, actix_web::error::PayloadError>;

    fn poll_next(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        let mut inner = self.inner.borrow_mut();
        let Some(payload) = inner.as_mut() else {
            return std::task::Poll::Ready(None);
        };
        let polled = std::pin::Pin::new(payload).poll_next(cx);
        if let std::task::Poll::Ready(None) = polled {
            self.finished.set(true);
        }
        polled
    }
}

/// Keeps a request's body from holding its connection: when the handler
/// answered without reading the body to its end (a route that takes no
/// body, a refusal), the payload is held a moment past the answer, so
/// that actix closes the connection. Dropped at once, actix would drain
/// a chunked body before the next request, without any timeout: a client
/// stalling mid-body would keep its connection (and a file handle)
/// forever.
async fn hold_unread_body<B: MessageBody>(
    mut request: ServiceRequest,
    next: Next<B>,
) -> Result<ServiceResponse<B>, actix_web::Error> {
    use actix_web::HttpMessage;
    let headers = request.headers();
    let declared = headers
        .get("content-length")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim() != "0");
    if !declared && !headers.contains_key("transfer-encoding") {
        // No body: nothing to hold (and no timer to start).
        return next.call(request).await;
    }
    let inner = Rc::new(RefCell::new(Some(request.take_payload())));
    let finished = Rc::new(Cell::new(false));
    let tracked = Tracked {
        inner: inner.clone(),
        finished: finished.clone(),
    };
    request.set_payload(actix_web::dev::Payload::Stream {
        payload: Box::pin(tracked),
    });
    let response = next.call(request).await;
    if !finished.get() {
        let held = inner.borrow_mut().take();
        actix_web::rt::spawn(async move {
            actix_web::rt::time::sleep(body::HOLD_REFUSED_PAYLOAD).await;
            drop(held);
        });
    }
    response
}

/// Counts every request by route pattern and status class, with latency.
async fn count_request(
    request: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let started = Instant::now();
    let route = request
        .match_pattern()
        .unwrap_or_else(|| "unmatched".to_string());
    let response = next.call(request).await?;
    let status = response.status().as_u16();
    crate::metrics::http_request(&route, status, started.elapsed());
    Ok(response)
}

/// Compares a given token with the expected one in time that does not
/// depend on where they differ.
fn same_secret(given: &[u8], expected: &[u8]) -> bool {
    given.len() == expected.len()
        && given
            .iter()
            .zip(expected)
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
}
