//! The API error: one stable machine-readable code per kind of problem, each mapped to
//! exactly one HTTP status. Every error response body is
//! `{"error":{"code":"...","message":"..."}}`.

use serde::{Deserialize, Serialize};

/// Stable error codes. Clients match on these strings; never rename one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    InvalidJson,
    InvalidField,
    UnknownType,
    PayloadTooLarge,
    UnsupportedMediaType,
    NotFound,
    MethodNotAllowed,
    JobNotFound,
    ScheduleNotFound,
    /// A create for a schedule name that exists (change it with PATCH).
    ScheduleExists,
    InvalidTransition,
    StaleAttempt,
    /// A consumer's report for an attempt that another consumer took over (the lease ran out).
    LeaseLost,
    /// A takeover refused: the running attempt still holds its lease.
    LeaseHeld,
    /// A consumer's report whose lease token is not the running attempt's: only the holder
    /// of the attempt (the consumer its start or takeover answered) may report on it.
    LeaseMismatch,
    /// A consumer's report about a job no consumer holds: an edge-lane job, or one with no
    /// live native attempt.
    NotLeased,
    JobCancelled,
    Unauthorized,
    Forbidden,
    RateLimited,
    /// The tenant holds `TENANT_MAX_PENDING` jobs that are not final yet.
    TenantPendingLimit,
    /// An enqueue over its `throttle` with `on_limit: "reject"`.
    Throttled,
    /// A workflow step report that does not fit what the run recorded: the handler changed
    /// its steps between executions.
    NondeterministicStep,
    /// A workflow run over its limits (steps per run, bytes per run).
    StepLimit,
    /// A live update (#30) over a job's limits: its streams' bytes, its metadata's size.
    LiveLimit,
    Unavailable,
    Internal,
}

impl ErrorCode {
    pub fn status(self) -> u16 {
        match self {
            ErrorCode::InvalidJson | ErrorCode::InvalidField | ErrorCode::UnknownType => 400,
            ErrorCode::Unauthorized => 401,
            ErrorCode::Forbidden => 403,
            ErrorCode::NotFound | ErrorCode::JobNotFound | ErrorCode::ScheduleNotFound => 404,
            ErrorCode::MethodNotAllowed => 405,
            ErrorCode::InvalidTransition
            | ErrorCode::ScheduleExists
            | ErrorCode::StaleAttempt
            | ErrorCode::LeaseLost
            | ErrorCode::LeaseHeld
            | ErrorCode::LeaseMismatch
            | ErrorCode::NotLeased
            | ErrorCode::JobCancelled
            | ErrorCode::NondeterministicStep => 409,
            ErrorCode::StepLimit | ErrorCode::LiveLimit => 413,
            ErrorCode::PayloadTooLarge => 413,
            ErrorCode::UnsupportedMediaType => 415,
            ErrorCode::RateLimited | ErrorCode::TenantPendingLimit | ErrorCode::Throttled => 429,
            ErrorCode::Internal => 500,
            ErrorCode::Unavailable => 503,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::InvalidJson => "invalid_json",
            ErrorCode::InvalidField => "invalid_field",
            ErrorCode::UnknownType => "unknown_type",
            ErrorCode::PayloadTooLarge => "payload_too_large",
            ErrorCode::UnsupportedMediaType => "unsupported_media_type",
            ErrorCode::NotFound => "not_found",
            ErrorCode::MethodNotAllowed => "method_not_allowed",
            ErrorCode::JobNotFound => "job_not_found",
            ErrorCode::ScheduleNotFound => "schedule_not_found",
            ErrorCode::ScheduleExists => "schedule_exists",
            ErrorCode::InvalidTransition => "invalid_transition",
            ErrorCode::StaleAttempt => "stale_attempt",
            ErrorCode::LeaseLost => "lease_lost",
            ErrorCode::LeaseHeld => "lease_held",
            ErrorCode::LeaseMismatch => "lease_mismatch",
            ErrorCode::NotLeased => "not_leased",
            ErrorCode::JobCancelled => "job_cancelled",
            ErrorCode::Unauthorized => "unauthorized",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::TenantPendingLimit => "tenant_pending_limit",
            ErrorCode::Throttled => "throttled",
            ErrorCode::NondeterministicStep => "nondeterministic_step",
            ErrorCode::StepLimit => "step_limit",
            ErrorCode::LiveLimit => "live_limit",
            ErrorCode::Unavailable => "unavailable",
            ErrorCode::Internal => "internal",
        }
    }
}

/// An error as the API reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{}: {message}", code.as_str())]
pub struct ApiError {
    pub code: ErrorCode,
    pub message: String,
    /// The offending field, for `invalid_field`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
}

impl ApiError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        ApiError { code, message: message.into(), field: None }
    }

    pub fn field(field: &str, message: impl Into<String>) -> Self {
        ApiError {
            code: ErrorCode::InvalidField,
            message: format!("{field}: {}", message.into()),
            field: Some(field.to_owned()),
        }
    }

    pub fn status(&self) -> u16 {
        self.code.status()
    }

    /// The response body: `{"error":{...}}`.
    pub fn body(&self) -> serde_json::Value {
        serde_json::json!({ "error": self })
    }

    /// Parses a response body made by [`ApiError::body`].
    pub fn from_body(body: &serde_json::Value) -> Option<ApiError> {
        serde_json::from_value(body.get("error")?.clone()).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_serialize_as_their_stable_names() {
        for code in [ErrorCode::InvalidJson, ErrorCode::PayloadTooLarge, ErrorCode::JobNotFound, ErrorCode::RateLimited]
        {
            assert_eq!(serde_json::to_value(code).ok(), Some(serde_json::Value::from(code.as_str())));
        }
    }

    #[test]
    fn body_round_trips() {
        let e = ApiError::field("payload", "must be JSON");
        let back = ApiError::from_body(&e.body());
        assert_eq!(back, Some(e));
    }
}
