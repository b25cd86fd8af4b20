//! Errors: a stable, machine-readable [`ErrorCode`] on the wire, a cause for the log.
//!
//! Policy:
//! - Client mistakes (bad JSON, bad ids, limits) are 4xx with a message meant for the
//!   developer integrating kefu; they are not logged above `debug`.
//! - PostgreSQL or Redis unreachable, pool exhausted, timeouts: `unavailable` (503). The
//!   caller may retry; resends are idempotent through `client_msg_id`.
//! - Anything else from a dependency is `internal` (500): logged at `error` with its cause,
//!   while the client only sees a generic message.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    BadRequest,
    Unauthorized,
    Forbidden,
    NotFound,
    Conflict,
    TooLarge,
    RateLimited,
    Unavailable,
    Internal,
}

impl ErrorCode {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BadRequest => "bad_request",
            ErrorCode::Unauthorized => "unauthorized",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::NotFound => "not_found",
            ErrorCode::Conflict => "conflict",
            ErrorCode::TooLarge => "too_large",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::Unavailable => "unavailable",
            ErrorCode::Internal => "internal",
        }
    }

    pub fn status(self) -> StatusCode {
        match self {
            ErrorCode::BadRequest => StatusCode::BAD_REQUEST,
            ErrorCode::Unauthorized => StatusCode::UNAUTHORIZED,
            ErrorCode::Forbidden => StatusCode::FORBIDDEN,
            ErrorCode::NotFound => StatusCode::NOT_FOUND,
            ErrorCode::Conflict => StatusCode::CONFLICT,
            ErrorCode::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ErrorCode::RateLimited => StatusCode::TOO_MANY_REQUESTS,
            ErrorCode::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

/// An error with its wire code and a message safe to show to the client.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{code:?}: {message}")]
pub struct AppError {
    pub code: ErrorCode,
    pub message: String,
}

pub type AppResult<T> = Result<T, AppError>;

impl AppError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        AppError {
            code,
            message: message.into(),
        }
    }
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::BadRequest, message)
    }
    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Unauthorized, message)
    }
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Forbidden, message)
    }
    pub fn not_found(what: &str) -> Self {
        Self::new(ErrorCode::NotFound, format!("{what} not found"))
    }
    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Conflict, message)
    }
    pub fn too_large(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::TooLarge, message)
    }
    pub fn rate_limited(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::RateLimited, message)
    }
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Unavailable, message)
    }
    /// Logs the cause and hides it from the client.
    pub fn internal(cause: impl std::fmt::Display) -> Self {
        log::error!("internal error: {cause}");
        Self::new(ErrorCode::Internal, "internal error")
    }
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    error: ErrorInner<'a>,
}

#[derive(Serialize)]
struct ErrorInner<'a> {
    code: ErrorCode,
    message: &'a str,
}

impl ResponseError for AppError {
    fn status_code(&self) -> StatusCode {
        self.code.status()
    }

    fn error_response(&self) -> HttpResponse {
        HttpResponse::build(self.status_code()).json(ErrorBody {
            error: ErrorInner {
                code: self.code,
                message: &self.message,
            },
        })
    }
}

impl From<diesel::result::Error> for AppError {
    fn from(e: diesel::result::Error) -> Self {
        use diesel::result::{DatabaseErrorKind, Error};
        match e {
            Error::NotFound => AppError::not_found("resource"),
            Error::DatabaseError(DatabaseErrorKind::UniqueViolation, info) => {
                log::debug!("unique violation: {}", info.message());
                AppError::conflict("already exists")
            }
            Error::DatabaseError(DatabaseErrorKind::ForeignKeyViolation, _) => {
                AppError::bad_request("a referenced resource does not exist")
            }
            Error::DatabaseError(DatabaseErrorKind::CheckViolation, _) => {
                AppError::bad_request("a value is out of range")
            }
            Error::DatabaseError(DatabaseErrorKind::ClosedConnection, _)
            | Error::BrokenTransactionManager => {
                log::warn!("database connection lost: {e}");
                AppError::unavailable("database unavailable")
            }
            Error::DatabaseError(DatabaseErrorKind::SerializationFailure, _) => {
                AppError::unavailable("database busy, retry")
            }
            // 40P01: PostgreSQL aborted this transaction to break a lock cycle; transient
            // like a serialization failure (diesel has no kind for it).
            Error::DatabaseError(DatabaseErrorKind::Unknown, ref info)
                if info.message().starts_with("deadlock detected") =>
            {
                log::warn!("database deadlock: {}", info.message());
                AppError::unavailable("database busy, retry")
            }
            other => {
                // Connection-level failures of tokio-postgres surface as "Unknown" database
                // errors whose text names the connection; treat them as an outage.
                let text = other.to_string();
                if text.contains("connection") || text.contains("Connection") {
                    log::warn!("database unavailable: {text}");
                    AppError::unavailable("database unavailable")
                } else {
                    AppError::internal(other)
                }
            }
        }
    }
}

impl From<diesel_async::pooled_connection::deadpool::PoolError> for AppError {
    fn from(e: diesel_async::pooled_connection::deadpool::PoolError) -> Self {
        log::warn!("database pool: {e}");
        AppError::unavailable("database unavailable")
    }
}

impl From<tokio::time::error::Elapsed> for AppError {
    fn from(_: tokio::time::error::Elapsed) -> Self {
        log::warn!("database call timed out");
        AppError::unavailable("database timed out")
    }
}

impl From<actix::MailboxError> for AppError {
    fn from(e: actix::MailboxError) -> Self {
        log::warn!("actor mailbox: {e}");
        AppError::unavailable("server busy, retry")
    }
}

impl From<actix_web::error::JsonPayloadError> for AppError {
    fn from(e: actix_web::error::JsonPayloadError) -> Self {
        use actix_web::error::JsonPayloadError as J;
        match e {
            J::Overflow { .. } | J::OverflowKnownLength { .. } => {
                AppError::too_large("request body too large")
            }
            J::ContentType => AppError::bad_request("expected Content-Type: application/json"),
            other => AppError::bad_request(format!("invalid JSON body: {other}")),
        }
    }
}
