//! Errors of the HTTP API: every failure is a JSON body with a stable
//! `code`, a human `message`, and the HTTP status that fits.
//!
//! Bad input is a 4xx naming the problem; a busy engine is a 503 with
//! `Retry-After`; a 5xx is left for failures of the service itself.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};

use crate::error::{EngineError, ScanError};

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
        let message = error.to_string();
        let (status, code) = engine_status(&error);
        ApiError::new(status, code, message)
    }
}

fn engine_status(error: &EngineError) -> (StatusCode, &'static str) {
    {
        match error {
            EngineError::Overloaded { .. } => (StatusCode::SERVICE_UNAVAILABLE, "overloaded"),
            EngineError::StreamLost { .. } => (StatusCode::GONE, "stream_lost"),
            EngineError::StreamFailed { .. } => (StatusCode::CONFLICT, "stream_failed"),
            EngineError::ShardFailed { .. } => (StatusCode::SERVICE_UNAVAILABLE, "shard_failed"),
            EngineError::ShuttingDown => (StatusCode::SERVICE_UNAVAILABLE, "shutting_down"),
            EngineError::Start(_) => (StatusCode::INTERNAL_SERVER_ERROR, "engine_failed"),
            EngineError::Scan(scan) => scan_status(scan),
            EngineError::Store(_) => (StatusCode::INTERNAL_SERVER_ERROR, "store_failed"),
            // A bulk request's refused frame answers as its cause would.
            EngineError::Refused { source, .. } => engine_status(source),
            EngineError::ShutdownTimedOut { .. } => {
                (StatusCode::SERVICE_UNAVAILABLE, "shutting_down")
            }
        }
    }
}

fn scan_status(error: &ScanError) -> (StatusCode, &'static str) {
    match error {
        ScanError::TooManyStreams { .. } => (StatusCode::SERVICE_UNAVAILABLE, "too_many_streams"),
        ScanError::ChunkTooLarge { .. } => (StatusCode::PAYLOAD_TOO_LARGE, "chunk_too_large"),
        ScanError::ModeMismatch { .. } => (StatusCode::CONFLICT, "mode_mismatch"),
        ScanError::UnknownStream(_) => (StatusCode::NOT_FOUND, "unknown_stream"),
        ScanError::AlreadyOpen(_) => (StatusCode::CONFLICT, "already_open"),
        ScanError::Yara(yara_x::ScanError::Timeout) => {
            (StatusCode::GATEWAY_TIMEOUT, "scan_timeout")
        }
        ScanError::SearchFailed { .. } => (StatusCode::CONFLICT, "stream_failed"),
        ScanError::Yara(_) => (StatusCode::INTERNAL_SERVER_ERROR, "scan_failed"),
    }
}
