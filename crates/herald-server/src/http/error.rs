//! The HTTP API's error: one type, one place that picks the status and the JSON body.
//!
//! Bodies are [`ErrorBody`]s, `{"error": "<what is wrong>", "code": <status>}`: no official
//! library parses them, so they are written for the person reading a failed request.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use herald_protocol::api::ErrorBody;

use crate::adapter::AdapterError;

/// An HTTP API failure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// The HTTP status.
    pub status: StatusCode,
    /// What is wrong, for the caller.
    pub message: String,
    /// Seconds after which a rate-limited caller may retry (`Retry-After`).
    pub retry_after: Option<u64>,
}

impl ApiError {
    fn new(status: StatusCode, message: impl Into<String>) -> Self {
        ApiError {
            status,
            message: message.into(),
            retry_after: None,
        }
    }

    /// 400: the request is malformed or breaks a rule.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }

    /// 401: the signature, key or timestamp is wrong.
    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, message)
    }

    /// 403: the app is disabled.
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, message)
    }

    /// 404: no such app or path.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, message)
    }

    /// 429: over a per-second rate; retry after `secs`.
    pub fn too_many(message: impl Into<String>, secs: u64) -> Self {
        let mut e = Self::new(StatusCode::TOO_MANY_REQUESTS, message);
        e.retry_after = Some(secs);
        e
    }

    /// 503: the server cannot answer yet, or the cluster's shared state did not answer.
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, message)
    }

    /// 408: the request body did not arrive in time.
    pub fn timeout(message: impl Into<String>) -> Self {
        Self::new(StatusCode::REQUEST_TIMEOUT, message)
    }

    /// 413: event data or a request body over its limit.
    pub fn too_large(message: impl Into<String>) -> Self {
        Self::new(StatusCode::PAYLOAD_TOO_LARGE, message)
    }
}

/// A query the backend could not answer: 503.
impl From<AdapterError> for ApiError {
    fn from(error: AdapterError) -> Self {
        // Logged by the adapter, at most once per interval: while the cluster's shared state
        // is away, every query fails.
        let AdapterError::Unavailable(why) = error;
        Self::unavailable(format!("The cluster's shared state is unavailable: {why}"))
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody::new(self.message.as_str(), self.status.as_u16());
        let mut response = (self.status, Json(body)).into_response();
        if let Some(secs) = self.retry_after {
            response
                .headers_mut()
                .insert(axum::http::header::RETRY_AFTER, secs.into());
        }
        response
    }
}
