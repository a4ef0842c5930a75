//! Errors of the HTTP API: every failure is a JSON body with a stable
//! `code`, a human `message`, and the HTTP status that fits.
//!
//! Bad input is a 4xx naming the problem; a busy engine is a 503 with
//! `Retry-After`; a 5xx is left for failures of the service itself.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};

use crate::error::{EngineError, ErrorKind};

/// An API error.
#[derive(Debug, Clone)]
pub struct ApiError {
    /// The HTTP status.
    pub status: StatusCode,
    /// A stable, machine-readable code.
    pub code: &'static str,
    /// What went wrong and, where it helps, what to do.
    pub message: String,
    /// Close the connection after the answer (`Connection: close`): for
    /// refusals sent before the request's body was read, so that the
    /// server does not read (or wait for) the rest of it.
    pub close: bool,
    /// The `Allow` header of a 405.
    pub allow: Option<&'static str>,
}

impl ApiError {
    /// An error with a status, code and message.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
            close: false,
            allow: None,
        }
    }

    /// The same error, closing the connection after the answer.
    pub fn closing(self) -> Self {
        ApiError {
            close: true,
            ..self
        }
    }

    /// A 400 for a malformed request.
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::BAD_REQUEST, code, message)
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({}): {}", self.code, self.status, self.message)
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        self.status
    }

    fn error_response(&self) -> HttpResponse {
        let mut response = HttpResponse::build(self.status);
        if self.status == StatusCode::SERVICE_UNAVAILABLE
            || self.status == StatusCode::TOO_MANY_REQUESTS
        {
            response.insert_header(("Retry-After", "1"));
        }
        if let Some(allow) = self.allow {
            response.insert_header(("Allow", allow));
        }
        if self.close {
            response.force_close();
        }
        response.json(serde_json::json!({
            "error": { "code": self.code, "message": self.message }
        }))
    }
}

impl From<EngineError> for ApiError {
    fn from(error: EngineError) -> Self {
        let kind = error.kind();
        ApiError::new(status(kind), code(&error), error.to_string())
    }
}

/// The `code` of an engine error: its kind's name, except that a stream
/// whose batch search failed answers as a failed stream (`stream_failed`):
/// to its client the two are the same, a stream with a hole to reset or
/// close.
pub fn code(error: &EngineError) -> &'static str {
    match error.kind() {
        ErrorKind::SearchFailed => ErrorKind::StreamFailed.as_str(),
        kind => kind.as_str(),
    }
}

/// The HTTP status of an error kind: the one place that decides it.
pub fn status(kind: ErrorKind) -> StatusCode {
    match kind {
        ErrorKind::TooManyStreams
        | ErrorKind::Overloaded
        | ErrorKind::ShardFailed
        | ErrorKind::ShuttingDown => StatusCode::SERVICE_UNAVAILABLE,
        ErrorKind::ChunkTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
        ErrorKind::ModeMismatch
        | ErrorKind::AlreadyOpen
        | ErrorKind::StreamFailed
        | ErrorKind::SearchFailed => StatusCode::CONFLICT,
        ErrorKind::UnknownStream => StatusCode::NOT_FOUND,
        ErrorKind::BadExternal => StatusCode::BAD_REQUEST,
        ErrorKind::StreamLost => StatusCode::GONE,
        ErrorKind::ScanTimeout => StatusCode::GATEWAY_TIMEOUT,
        ErrorKind::ScanFailed | ErrorKind::EngineFailed | ErrorKind::StoreFailed => {
            StatusCode::INTERNAL_SERVER_ERROR
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ScanError;
    use uuid::Uuid;

    /// The codes and statuses the API documented before the kinds owned
    /// them (docs/openapi.yaml): unchanged.
    #[test]
    fn codes_and_statuses_are_the_documented_ones() {
        let stream = Uuid::nil();
        let scan = |e: ScanError| EngineError::from(e);
        let cases = [
            (
                scan(ScanError::TooManyStreams { stream, limit: 1 }),
                503,
                "too_many_streams",
            ),
            (
                scan(ScanError::ChunkTooLarge {
                    stream,
                    len: 2,
                    limit: 1,
                }),
                413,
                "chunk_too_large",
            ),
            (
                scan(ScanError::ModeMismatch {
                    stream,
                    opened: "chunk",
                    attempted: "line",
                }),
                409,
                "mode_mismatch",
            ),
            (
                scan(ScanError::UnknownStream(stream)),
                404,
                "unknown_stream",
            ),
            (scan(ScanError::AlreadyOpen(stream)), 409, "already_open"),
            (
                scan(ScanError::SearchFailed {
                    stream,
                    reason: "t".into(),
                    limit: None,
                }),
                409,
                "stream_failed",
            ),
            (
                scan(ScanError::BadExternal {
                    stream,
                    reason: "r".into(),
                }),
                400,
                "bad_external",
            ),
            (
                scan(ScanError::Yara(yara_x::ScanError::Timeout)),
                504,
                "scan_timeout",
            ),
            (
                EngineError::Overloaded {
                    stream,
                    shard: 0,
                    waited_ms: 1,
                },
                503,
                "overloaded",
            ),
            (
                EngineError::StreamLost {
                    stream,
                    shard: 0,
                    reason: "p".into(),
                },
                410,
                "stream_lost",
            ),
            (
                EngineError::StreamFailed {
                    stream,
                    reason: "r".into(),
                },
                409,
                "stream_failed",
            ),
            (EngineError::ShardFailed { shard: 0 }, 503, "shard_failed"),
            (
                EngineError::ShutdownTimedOut {
                    stream,
                    limit_ms: 1,
                },
                503,
                "shutting_down",
            ),
            (EngineError::ShuttingDown, 503, "shutting_down"),
            (EngineError::Start("x".into()), 500, "engine_failed"),
            (
                EngineError::Store(crate::error::StoreError::Io("x".into())),
                500,
                "store_failed",
            ),
            (
                EngineError::Refused {
                    index: 3,
                    source: Box::new(EngineError::StreamFailed {
                        stream,
                        reason: "r".into(),
                    }),
                },
                409,
                "stream_failed",
            ),
        ];
        for (error, status, code) in cases {
            let api = ApiError::from(error.clone());
            assert_eq!((api.status.as_u16(), api.code), (status, code), "{error:?}");
        }
    }
}
