//! The HTTP API's routes: thin handlers over an [`EngineHandle`](crate::EngineHandle).
//!
//! Each handler reads and checks its input (stream ids, body size,
//! framing), makes one engine call, and answers JSON; every failure goes
//! through [`ApiError`], including unknown routes (404) and wrong methods
//! (405 with `Allow`). Bodies are read up to the configured limit and no
//! further, so an oversized request costs at most that much memory: a
//! declared `Content-Length` past the limit is refused before any of the
//! body is read, a body that stops arriving is refused after
//! `BodyLimits::timeout`, and a `gzip` or `deflate` body is decoded
//! under the same limit (other encodings get 415).
//!
//! The `/v1` routes are one scope behind the token check (`super::authorize`):
//! the check runs on whatever the router matched, so no spelling of a path
//! (percent-encoded, `/v%31`, ...) reaches a handler without it.

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use uuid::Uuid;

use super::body::{frame_bytes, read_body, read_frames, split_lines, too_large};
use super::error::ApiError;
use super::state::ApiState;
use crate::rules::{stream_externals, External, ExternalValue, FileInfo, RuleReport, RuleSet};
use crate::stream::StreamMode;

type State = web::Data<ApiState>;

/// Registers the health checks and the `/v1` routes (behind `authorize`).
pub fn routes(config: &mut web::ServiceConfig) {
    let v1 = web::scope("/v1")
        .wrap(actix_web::middleware::from_fn(super::authorize))
        .service(resource("/streams", "GET").route(web::get().to(list_streams)))
        .service(
            resource("/streams/{stream}", "GET, PUT, DELETE")
                .route(web::get().to(get_stream))
                .route(web::put().to(open_stream))
                .route(web::delete().to(close_stream)),
        )
        .service(resource("/streams/{stream}/chunks", "POST").route(web::post().to(append_chunk)))
        .service(resource("/streams/{stream}/lines", "POST").route(web::post().to(append_lines)))
        .service(resource("/streams/{stream}/reset", "POST").route(web::post().to(reset_stream)))
        .service(resource("/streams/{stream}/offset", "GET").route(web::get().to(stream_offset)))
        .service(resource("/checkpoint", "POST").route(web::post().to(checkpoint)))
        .service(resource("/chunks", "POST").route(web::post().to(append_frames)))
        .service(resource("/events", "GET").route(web::get().to(super::events::events)))
        .service(resource("/events/closed", "GET").route(web::get().to(super::events::closed)))
        .service(resource("/rules", "GET").route(web::get().to(rules)))
        .service(resource("/rules/reload", "POST").route(web::post().to(reload_rules)))
        .default_service(web::to(not_found));
    config
        .service(resource("/healthz", "GET").route(web::get().to(healthz)))
        .service(resource("/readyz", "GET").route(web::get().to(readyz)))
        .service(v1);
}

/// A resource whose other methods get 405 with `Allow: allow`.
pub(crate) fn resource(path: &str, allow: &'static str) -> actix_web::Resource {
    web::resource(path).default_service(web::to(move || async move {
        Err::<HttpResponse, _>(ApiError {
            allow: Some(allow),
            ..ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                format!("this route takes {allow}"),
            )
        })
    }))
}

/// The answer to a path no route matches.
pub(crate) async fn not_found(request: HttpRequest) -> Result<HttpResponse, ApiError> {
    let path: String = request.path().chars().take(200).collect();
    Err(ApiError::new(
        StatusCode::NOT_FOUND,
        "not_found",
        format!("no route {path:?}; the routes are in docs/openapi.yaml"),
    ))
}

pub(crate) fn stream_id(text: &str) -> Result<Uuid, ApiError> {
    Uuid::parse_str(text)
        .map_err(|e| ApiError::bad_request("bad_stream_id", format!("{text:?} is not a UUID: {e}")))
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

/// Ready when every shard answers. It says no more than that: it is not
/// behind the token, and counts of streams are for `/v1` and `/metrics`.
async fn readyz(state: State) -> Result<HttpResponse, ApiError> {
    state.engine.stats().await?;
    Ok(HttpResponse::Ok().json(serde_json::json!({ "status": "ready" })))
}

async fn append_chunk(
    state: State,
    request: HttpRequest,
    path: web::Path<String>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let stream = stream_id(&path)?;
    let body = read_body(&state.body, &request, payload).await?;
    let len = body.len();
    let offset = state.engine.scan_chunk_acked(stream, body).await?;
    Ok(HttpResponse::Ok().json(serde_json::json!({
        "stream": stream, "accepted_bytes": len, "offset": offset
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
    let lines = split_lines(&body)?;
    let count = lines.len();
    let offset = state.engine.scan_lines_acked(stream, lines).await?;
    Ok(HttpResponse::Ok().json(serde_json::json!({
        "stream": stream, "accepted_lines": count, "offset": offset
    })))
}

async fn append_frames(
    state: State,
    request: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let frames = read_frames(&state.body, &request, payload).await?;
    let (chunks, bytes) = (frames.len(), frame_bytes(&frames));
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

/// The body of `PUT /v1/streams/{stream}`.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct OpenRequest {
    /// `chunks` (the default) or `lines`.
    #[serde(default)]
    mode: Option<StreamMode>,
    /// What file the stream is: sets the file externals.
    #[serde(default)]
    file: Option<FileInfo>,
    /// Values of externals by name (over the file's).
    #[serde(default)]
    externals: serde_json::Map<String, serde_json::Value>,
}

/// The largest body `PUT /v1/streams/{stream}` reads: a few externals.
const MAX_OPEN_BODY_BYTES: usize = 64 * 1024;

/// `PUT /v1/streams/{stream}`: opens the stream (if it is not open) with
/// what it is, its own values of the rules' externals.
async fn open_stream(
    state: State,
    path: web::Path<String>,
    request: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let stream = stream_id(&path)?;
    let body = read_body(&state.body, &request, payload).await?;
    if body.len() > MAX_OPEN_BODY_BYTES {
        return Err(too_large(MAX_OPEN_BODY_BYTES, " of a stream's opening"));
    }
    let open: OpenRequest = match body.is_empty() {
        true => serde_json::from_str("{}"),
        false => serde_json::from_slice(&body),
    }
    .map_err(|e| {
        ApiError::bad_request(
            "bad_body",
            format!("the body is not a stream's opening: {e}"),
        )
    })?;
    let externals = externals_of(&open).map_err(|e| ApiError::bad_request("bad_external", e))?;
    let mode = open.mode.unwrap_or(StreamMode::Chunks);
    state.engine.open_stream(stream, mode, externals).await?;
    Ok(HttpResponse::NoContent().finish())
}

/// The file's externals, then those named, each replacing the file's of
/// the same name.
fn externals_of(open: &OpenRequest) -> Result<Vec<External>, String> {
    let mut given = Vec::with_capacity(open.externals.len());
    for (name, value) in &open.externals {
        let value = match value {
            serde_json::Value::Bool(b) => ExternalValue::Bool(*b),
            serde_json::Value::String(s) => ExternalValue::String(s.clone()),
            serde_json::Value::Number(n) => match (n.as_i64(), n.as_f64()) {
                (Some(i), _) => ExternalValue::Integer(i),
                (None, Some(f)) => ExternalValue::Float(f),
                _ => return Err(format!("`{name}`: {n} is out of range")),
            },
            other => {
                return Err(format!(
                    "`{name}`: {other} is not a boolean, number or string"
                ))
            }
        };
        given.push(External {
            name: name.clone(),
            value,
        });
    }
    Ok(stream_externals(open.file.as_ref(), given))
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
    let options = state.rule_options.clone();
    let rules = web::block(move || RuleSet::from_paths_with(&paths, &options))
        .await
        .map_err(|e| {
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "reload_failed",
                e.to_string(),
            )
        })?
        .map_err(|e| ApiError::bad_request("bad_rules", without_source(&e.to_string())))?;
    let count = rules.analysis().rules.len();
    if count == 0 {
        return Err(ApiError::bad_request(
            "empty_rules",
            "the rule files define no rule; the current rules stay (a reload to nothing would match nothing)",
        ));
    }
    let summary = rules_summary(&rules);
    state.engine.reload_rules(rules).await?;
    *state
        .rules_summary
        .write()
        .unwrap_or_else(|e| e.into_inner()) = summary;
    Ok(HttpResponse::Ok().json(serde_json::json!({ "reloaded": true, "rules": count })))
}

/// `GET /v1/rules`: how many rules are loaded, their classes, the window
/// and head, and the whole-data rules without a gate (every chunk stream
/// retains its bytes for them), named up to 100.
async fn rules(state: State) -> HttpResponse {
    let summary = state
        .rules_summary
        .read()
        .unwrap_or_else(|e| e.into_inner());
    HttpResponse::Ok().json(&*summary)
}

/// The answer of `GET /v1/rules` for `rules` (and the [`crate::metrics::RULES`]
/// gauges, set to its classes).
pub(crate) fn rules_summary(rules: &RuleSet) -> serde_json::Value {
    let analysis = rules.analysis();
    let classes = analysis.classes();
    crate::metrics::record_rule_classes(&classes);
    // The rules that make every chunk stream retain its bytes.
    let named = |keep: fn(&RuleReport) -> bool| -> Vec<String> {
        let kept = analysis.rules.iter().filter(|r| keep(r)).take(100);
        kept.map(|r| format!("{}.{}", r.namespace, r.identifier))
            .collect()
    };
    serde_json::json!({
        "rules": analysis.rules.len(),
        "classes": classes,
        "window": analysis.window,
        "head_len": analysis.head_len,
        "ungated": named(|r| !r.supported && r.gate.is_none()),
        "dense": named(|r| r.supported && r.dense.is_some()),
    })
}

/// A compiler report without its source excerpts: the title and location
/// (`--> file:line:column`) of each error, never the lines of the files
/// (an `include` can name any file the server can read).
fn without_source(report: &str) -> String {
    let kept: Vec<&str> = report
        .lines()
        .map(str::trim)
        .filter(|line| {
            line.starts_with("error")
                || line.starts_with("warning")
                || line.starts_with("rules do not compile")
                || line.starts_with("cannot read")
                || line.starts_with("no .yar")
                || line.starts_with("-->")
        })
        .collect();
    kept.join("\n")
}

#[cfg(test)]
mod tests {
    use super::without_source;

    #[test]
    fn compiler_reports_lose_their_source_lines() {
        let report = "rules do not compile:\nerror[E001]: syntax error\n --> /etc/shadow:1:5\n  |\n1 | root:$6$secret\n  |     ^ expected rule";
        let kept = without_source(report);
        assert!(kept.contains("/etc/shadow:1:5"), "{kept}");
        assert!(kept.contains("syntax error"), "{kept}");
        assert!(!kept.contains("secret"), "{kept}");
    }
}
