//! Reading a request body under the service's limits, for the API and
//! the gateway alike: its size (declared, read, decoded), the time it
//! takes to arrive, its encoding; and splitting a body into lines.

use std::io::Read;
use std::time::Duration;

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest};
use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;

use super::error::ApiError;

/// The bounds of a request body.
#[derive(Debug, Clone, Copy)]
pub struct BodyLimits {
    /// Largest body accepted, in bytes (after decoding).
    pub max_bytes: usize,
    /// Longest time a body may take to arrive.
    pub timeout: Duration,
}

/// How a request body is encoded (`Content-Encoding`).
#[derive(Clone, Copy)]
enum Encoding {
    Identity,
    Gzip,
    Deflate,
}

/// The 413 of a body past `limit` (`what`: which measure of it).
pub(crate) fn too_large(limit: usize, what: &str) -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "body_too_large",
        format!("the request body{what} exceeds the limit of {limit} bytes (max_body_bytes); send smaller requests"),
    )
}

fn encoding(request: &HttpRequest) -> Result<Encoding, ApiError> {
    let Some(value) = request.headers().get("content-encoding") else {
        return Ok(Encoding::Identity);
    };
    let text = value
        .to_str()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    match text.as_str() {
        "" | "identity" => Ok(Encoding::Identity),
        "gzip" | "x-gzip" => Ok(Encoding::Gzip),
        "deflate" => Ok(Encoding::Deflate),
        _ => Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_encoding",
            format!("Content-Encoding {text:?} is not supported; send gzip, deflate or identity"),
        )),
    }
}

/// Reads a request body: refused before reading when its declared length
/// passes the limit, as soon as it passes the limit, when it takes longer
/// than the body timeout, and decoded (under the same limit) when it is
/// `gzip` or `deflate`.
pub(crate) async fn read_body(
    limits: &BodyLimits,
    request: &HttpRequest,
    mut payload: web::Payload,
) -> Result<Bytes, ApiError> {
    let limit = limits.max_bytes;
    let encoding = match encoding(request) {
        Ok(encoding) => encoding,
        Err(refusal) => return Err(let_go(payload, refusal)),
    };
    let declared = request
        .headers()
        .get("content-length")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if declared.is_some_and(|len| len > limit as u64) {
        return Err(let_go(payload, too_large(limit, " (its Content-Length)")));
    }
    let deadline = tokio::time::Instant::now() + limits.timeout;
    let mut body = BytesMut::new();
    loop {
        let piece = match tokio::time::timeout_at(deadline, payload.next()).await {
            Ok(Some(piece)) => piece,
            Ok(None) => break,
            Err(_) => {
                let refusal = ApiError::new(
                    StatusCode::REQUEST_TIMEOUT,
                    "body_timeout",
                    format!(
                        "the request body did not arrive within {} s (body_timeout); send it at once",
                        limits.timeout.as_secs_f64()
                    ),
                );
                return Err(let_go(payload, refusal));
            }
        };
        let piece = match piece {
            Ok(piece) => piece,
            Err(e) => {
                return Err(let_go(
                    payload,
                    ApiError::bad_request("bad_body", e.to_string()),
                ))
            }
        };
        if body.len() + piece.len() > limit {
            return Err(let_go(payload, too_large(limit, "")));
        }
        body.extend_from_slice(&piece);
    }
    let body = body.freeze();
    let decoder: Box<dyn Read> = match encoding {
        Encoding::Identity => return Ok(body),
        Encoding::Gzip => Box::new(flate2::read::MultiGzDecoder::new(&body[..])),
        Encoding::Deflate => Box::new(flate2::read::ZlibDecoder::new(&body[..])),
    };
    let mut decoded = Vec::new();
    decoder
        .take(limit as u64 + 1)
        .read_to_end(&mut decoded)
        .map_err(|e| {
            ApiError::bad_request("bad_encoding", format!("cannot decode the body: {e}"))
        })?;
    if decoded.len() > limit {
        return Err(too_large(limit, " (decoded)"));
    }
    Ok(decoded.into())
}

/// How long an unread body's payload is kept after the answer.
pub(crate) const HOLD_REFUSED_PAYLOAD: Duration = Duration::from_secs(1);

/// A refusal sent before the body was read: the connection closes after
/// it. The payload is held a moment instead of dropped with the handler:
/// actix-web drains a dropped chunked body before the connection's next
/// request, with no timeout, so a client that stalls mid-body would keep
/// the connection; a payload still held when the answer goes out makes
/// actix close the connection instead.
fn let_go(payload: web::Payload, refusal: ApiError) -> ApiError {
    actix_web::rt::spawn(async move {
        actix_web::rt::time::sleep(HOLD_REFUSED_PAYLOAD).await;
        drop(payload);
    });
    refusal.closing()
}

/// The lines of a body of whole lines (each without its newline, as
/// slices of the body).
pub(crate) fn split_lines(body: &Bytes) -> Result<Vec<Bytes>, ApiError> {
    if !body.is_empty() && !body.ends_with(b"\n") {
        return Err(ApiError::bad_request(
            "unterminated_line",
            "the body's last line has no newline; send whole lines only",
        ));
    }
    let mut lines = Vec::new();
    let mut start = 0;
    for end in memchr::memchr_iter(b'\n', body) {
        lines.push(body.slice(start..end));
        start = end + 1;
    }
    Ok(lines)
}

/// Reads a body of frames (`framing.rs`): the frames, or 400 `bad_frame`.
pub(crate) async fn read_frames(
    limits: &BodyLimits,
    request: &HttpRequest,
    payload: web::Payload,
) -> Result<Vec<(uuid::Uuid, Bytes)>, ApiError> {
    let body = read_body(limits, request, payload).await?;
    super::framing::parse(&body).map_err(|e| ApiError::bad_request("bad_frame", e.to_string()))
}

/// The bytes of all frames' chunks.
pub(crate) fn frame_bytes(frames: &[(uuid::Uuid, Bytes)]) -> usize {
    frames.iter().map(|(_, chunk)| chunk.len()).sum()
}
