//! The one error shape of the sim protocol: `{"error": "<code>", "message": "<human text>"}`.
//!
//! Every failure a handler or the state can produce is an [`ApiError`], so the status code and
//! the machine-readable code always travel together and no handler formats errors by hand.

use std::fmt;

use axum::Json;
use axum::http::StatusCode;
use axum::http::header::RETRY_AFTER;
use axum::response::{IntoResponse, Response};
use serde_json::json;

/// The machine-readable error codes of the protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    /// The request is malformed or breaks a limit.
    BadRequest,
    /// The bearer token is missing, unknown or logged out.
    Unauthorized,
    /// The user, chat or login flow does not exist.
    NotFound,
    /// The login code is wrong; the flow stays open.
    BadCode,
    /// The account (or sender) is not a member of the chat.
    NotMember,
    /// A member, but not allowed to do this: someone else's message, not an admin.
    Forbidden,
    /// The account is rate limited (simulated through the control API).
    RateLimited,
    /// The network has been taken down through the control API.
    NetworkDown,
}

impl ErrorCode {
    /// The code as it appears in the `error` field.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::BadRequest => "bad_request",
            Self::Unauthorized => "unauthorized",
            Self::NotFound => "not_found",
            Self::BadCode => "bad_code",
            Self::NotMember => "not_member",
            Self::Forbidden => "forbidden",
            Self::RateLimited => "rate_limited",
            Self::NetworkDown => "network_down",
        }
    }

    /// The HTTP status the code is normally answered with.
    pub fn status(self) -> StatusCode {
        match self {
            Self::BadRequest => StatusCode::BAD_REQUEST,
            Self::Unauthorized | Self::BadCode => StatusCode::UNAUTHORIZED,
            Self::NotFound => StatusCode::NOT_FOUND,
            Self::NotMember | Self::Forbidden => StatusCode::FORBIDDEN,
            Self::RateLimited => StatusCode::TOO_MANY_REQUESTS,
            Self::NetworkDown => StatusCode::SERVICE_UNAVAILABLE,
        }
    }
}

/// An error answer: status, code and a human-readable message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    status: StatusCode,
    code: ErrorCode,
    message: String,
    /// For `rate_limited`: how long to wait before retrying.
    retry_after_ms: Option<u64>,
}

impl ApiError {
    /// An error with the code's usual status.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            status: code.status(),
            code,
            message: message.into(),
            retry_after_ms: None,
        }
    }

    /// The same error answered with another status (413 for an oversized body, 405 for a wrong
    /// method), where HTTP has a more precise status than the code's usual one.
    pub(crate) fn with_status(mut self, status: StatusCode) -> Self {
        self.status = status;
        self
    }

    pub(crate) fn bad_request(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::BadRequest, message)
    }

    pub(crate) fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Unauthorized, message)
    }

    pub(crate) fn not_found(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::NotFound, message)
    }

    pub(crate) fn not_member(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::NotMember, message)
    }

    pub(crate) fn forbidden(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Forbidden, message)
    }

    pub(crate) fn rate_limited(retry_after_ms: u64) -> Self {
        let mut error = Self::new(ErrorCode::RateLimited, "too many requests, slow down");
        error.retry_after_ms = Some(retry_after_ms);
        error
    }

    pub(crate) fn network_down() -> Self {
        Self::new(ErrorCode::NetworkDown, "the network is down")
    }

    /// The HTTP status of the answer.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The machine-readable code.
    pub fn code(&self) -> ErrorCode {
        self.code
    }

    /// The human-readable message.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// For `rate_limited`: how long the client should wait, in milliseconds.
    pub fn retry_after_ms(&self) -> Option<u64> {
        self.retry_after_ms
    }
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} ({}): {}",
            self.code.as_str(),
            self.status,
            self.message
        )
    }
}

impl std::error::Error for ApiError {}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut body = json!({ "error": self.code.as_str(), "message": self.message });
        match self.retry_after_ms {
            Some(ms) => {
                body["retry_after_ms"] = ms.into();
                // Retry-After counts whole seconds; round up so a client never retries early.
                let seconds = ms.div_ceil(1000).max(1).to_string();
                (self.status, [(RETRY_AFTER, seconds)], Json(body)).into_response()
            }
            None => (self.status, Json(body)).into_response(),
        }
    }
}
