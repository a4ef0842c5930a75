//! The HTTP API's routes: thin handlers over an [`EngineHandle`].
//!
//! Each handler reads and checks its input (stream ids, body size,
//! framing), makes one engine call, and answers JSON; every failure goes
//! through [`ApiError`]. Bodies are read up to the configured limit and no
//! further, so an oversized request costs at most that much memory.

use std::path::PathBuf;

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;
use uuid::Uuid;

use super::error::ApiError;
use super::framing;
use crate::engine::EngineHandle;
use crate::rules::RuleSet;

/// What every handler shares.
pub struct ApiState {
    /// The engine.
    pub engine: EngineHandle,
    /// Largest request body accepted, in bytes.
    pub max_body_bytes: usize,
    /// Where `POST /v1/rules/reload` reads rules from.
    pub rule_paths: Vec<PathBuf>,
    /// The window cap rules are compiled with.
    pub max_pattern_len: usize,
}

type State = web::Data<ApiState>;

/// Registers the `/v1` routes and the health checks.
pub fn routes(config: &mut web::ServiceConfig) {
    config
        .route("/healthz", web::get().to(healthz))
        .route("/readyz", web::get().to(readyz))
        .route("/v1/streams", web::get().to(list_streams))
        .route("/v1/streams/{stream}", web::get().to(get_stream))
        .route("/v1/streams/{stream}", web::delete().to(close_stream))
        .route("/v1/streams/{stream}/chunks", web::post().to(append_chunk))
        .route("/v1/streams/{stream}/lines", web::post().to(append_lines))
        .route("/v1/streams/{stream}/reset", web::post().to(reset_stream))
        .route("/v1/streams/{stream}/offset", web::get().to(stream_offset))
        .route("/v1/checkpoint", web::post().to(checkpoint))
        .route("/v1/chunks", web::post().to(append_frames))
        .route("/v1/events", web::get().to(super::events::events))
        .route("/v1/events/closed", web::get().to(super::events::closed))
        .route("/v1/rules/reload", web::post().to(reload_rules));
}

fn stream_id(text: &str) -> Result<Uuid, ApiError> {
    Uuid::parse_str(text)
        .map_err(|e| ApiError::bad_request("bad_stream_id", format!("{text:?} is not a UUID: {e}")))
}

/// Reads a request body, refusing it as soon as it passes `limit` bytes.
async fn read_body(mut payload: web::Payload, limit: usize) -> Result<Bytes, ApiError> {
    let mut body = BytesMut::new();
    while let Some(piece) = payload.next().await {
        let piece = piece.map_err(|e| ApiError::bad_request("bad_body", e.to_string()))?;
        if body.len() + piece.len() > limit {
            return Err(ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "body_too_large",
                format!(
                    "the request body exceeds the limit of {limit} bytes; send smaller requests"
                ),
            ));
        }
        body.extend_from_slice(&piece);
    }
    Ok(body.freeze())
}

fn unknown(stream: Uuid) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "unknown_stream",
        format!("stream {stream} is not open"),
    )
}

async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(serde_json::json!({ "status": "ok" }))
}

async fn readyz(state: State) -> Result<HttpResponse, ApiError> {
    let stats = state.engine.stats().await?;
    Ok(HttpResponse::Ok().json(serde_json::json!({
        "status": "ready",
        "shards": stats.shards.len(),
        "open_streams": stats.open_streams(),
    })))
}

async fn append_chunk(
    state: State,
    path: web::Path<String>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let stream = stream_id(&path)?;
    let body = read_body(payload, state.max_body_bytes).await?;
    let len = body.len();
    let offset = state.engine.scan_chunk_acked(stream, body).await?;
    Ok(HttpResponse::Ok().json(serde_json::json!({
        "stream": stream, "accepted_bytes": len, "offset": offset
    })))
}

async fn append_lines(
    state: State,
    path: web::Path<String>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let stream = stream_id(&path)?;
    let body = read_body(payload, state.max_body_bytes).await?;
    if !body.is_empty() && !body.ends_with(b"\n") {
        return Err(ApiError::bad_request(
            "unterminated_line",
            "the body's last line has no newline; send whole lines only",
        ));
    }
    let mut lines = Vec::new();
    let mut start = 0;
    for end in memchr::memchr_iter(b'\n', &body) {
        lines.push(body.slice(start..end));
        start = end + 1;
    }
    let count = lines.len();
    let offset = state.engine.scan_lines_acked(stream, lines).await?;
    Ok(HttpResponse::Ok().json(serde_json::json!({
        "stream": stream, "accepted_lines": count, "offset": offset
    })))
}

async fn append_frames(state: State, payload: web::Payload) -> Result<HttpResponse, ApiError> {
    let body = read_body(payload, state.max_body_bytes).await?;
    let frames =
        framing::parse(&body).map_err(|e| ApiError::bad_request("bad_frame", e.to_string()))?;
    let (chunks, bytes) = (
        frames.len(),
        frames.iter().map(|(_, c)| c.len()).sum::<usize>(),
    );
    // All or nothing: the shards check every frame (modes, stream limits)
    // before any is taken.
    state.engine.scan_chunks_admitted(frames).await?;
    Ok(HttpResponse::Accepted().json(serde_json::json!({
        "accepted_chunks": chunks, "accepted_bytes": bytes
    })))
}

async fn get_stream(state: State, path: web::Path<String>) -> Result<HttpResponse, ApiError> {
    let stream = stream_id(&path)?;
    let results = state.engine.get_matches(stream).await?;
    Ok(HttpResponse::Ok().json(results.ok_or_else(|| unknown(stream))?))
}

async fn close_stream(state: State, path: web::Path<String>) -> Result<HttpResponse, ApiError> {
    let stream = stream_id(&path)?;
    let results = state.engine.close_stream(stream).await?;
    Ok(HttpResponse::Ok().json(results.ok_or_else(|| unknown(stream))?))
}

async fn reset_stream(state: State, path: web::Path<String>) -> Result<HttpResponse, ApiError> {
    let stream = stream_id(&path)?;
    state.engine.reset_stream(stream).await?;
    Ok(HttpResponse::NoContent().finish())
}

async fn stream_offset(state: State, path: web::Path<String>) -> Result<HttpResponse, ApiError> {
    let stream = stream_id(&path)?;
    let offsets = state.engine.stream_offsets(stream).await?;
    let offsets = offsets.ok_or_else(|| unknown(stream))?;
    Ok(HttpResponse::Ok().json(serde_json::json!({
        "stream": stream,
        "offset": offsets.offset,
        "lines": offsets.lines,
        "durable_offset": offsets.durable_offset,
        "durable_lines": offsets.durable_lines,
    })))
}

async fn checkpoint(state: State) -> Result<HttpResponse, ApiError> {
    let written = state.engine.checkpoint().await?;
    Ok(HttpResponse::Ok().json(serde_json::json!({ "written_streams": written })))
}

/// Paging of `GET /v1/streams`.
#[derive(serde::Deserialize)]
struct Page {
    #[serde(default)]
    offset: usize,
    #[serde(default = "default_limit")]
    limit: usize,
}

fn default_limit() -> usize {
    1000
}

async fn list_streams(state: State, request: HttpRequest) -> Result<HttpResponse, ApiError> {
    let page = web::Query::<Page>::from_query(request.query_string())
        .map_err(|e| ApiError::bad_request("bad_query", e.to_string()))?;
    let mut streams = state.engine.active_streams().await?;
    streams.sort();
    let total = streams.len();
    let limit = page.limit.min(10_000);
    let shown: Vec<Uuid> = streams.into_iter().skip(page.offset).take(limit).collect();
    Ok(HttpResponse::Ok().json(serde_json::json!({
        "streams": shown, "total": total, "offset": page.offset, "limit": limit
    })))
}

async fn reload_rules(state: State) -> Result<HttpResponse, ApiError> {
    let paths = state.rule_paths.clone();
    let max = state.max_pattern_len;
    let rules = web::block(move || RuleSet::from_paths(&paths, max))
        .await
        .map_err(|e| {
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "reload_failed",
                e.to_string(),
            )
        })?
        .map_err(|e| ApiError::bad_request("bad_rules", e.to_string()))?;
    let count = rules.analysis().rules.len();
    state.engine.reload_rules(rules).await?;
    Ok(HttpResponse::Ok().json(serde_json::json!({ "reloaded": true, "rules": count })))
}
