//! Errors in Azure Attestation's shape: `{"error":{"code","message"}}`.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use attest_raft::{Outcome, WriteError};

#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    pub retry_after_s: Option<u64>,
    /// For control-plane failures: whether the write may still happen.
    pub outcome: Option<Outcome>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self { status, code, message: message.into(), retry_after_s: None, outcome: None }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "InvalidParameter", message)
    }

    pub fn not_found(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, code, message)
    }

    /// Same error with another MAA code.
    pub fn with_code(mut self, code: &'static str) -> Self {
        self.code = code;
        self
    }

    pub fn retry_after(mut self, s: u64) -> Self {
        self.retry_after_s = Some(s);
        self
    }
}

impl From<WriteError> for ApiError {
    fn from(e: WriteError) -> Self {
        match &e {
            WriteError::ReadOnly { outcome, .. } => {
                let mut a = ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "ControlPlaneReadOnly", e.to_string())
                    .retry_after(5);
                a.outcome = Some(*outcome);
                a
            }
            WriteError::ReplicationPending { .. } => {
                let mut a =
                    ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "ReplicationPending", e.to_string()).retry_after(1);
                a.outcome = Some(Outcome::Unknown);
                a
            }
            WriteError::NotLeader { .. } => {
                ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "NotLeader", e.to_string()).retry_after(1)
            }
            WriteError::Rejected(m) => ApiError::new(StatusCode::BAD_REQUEST, "InvalidOperation", m.clone()),
            WriteError::Internal(_) => ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "InternalError", e.to_string()),
            WriteError::Fenced { .. } => ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "NodeFenced", e.to_string()),
            WriteError::NodeFailed { .. } => {
                // Refused before anything was proposed.
                let mut a = ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "NodeStorageFailed", e.to_string());
                a.outcome = Some(Outcome::NotApplied);
                a
            }
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut body = json!({"error": {"code": self.code, "message": self.message}});
        if let Some(o) = self.outcome {
            // OData-style inner error: tells a client whether retrying with
            // the same request id is needed to learn the write's fate.
            body["error"]["innererror"] =
                json!({"code": match o { Outcome::NotApplied => "NotApplied", Outcome::Unknown => "OutcomeUnknown" }});
        }
        let mut resp = (self.status, axum::Json(body)).into_response();
        if let Some(s) = self.retry_after_s {
            if let Ok(v) = HeaderValue::from_str(&s.to_string()) {
                resp.headers_mut().insert(header::RETRY_AFTER, v);
            }
        }
        resp
    }
}

pub type ApiResult<T> = Result<T, ApiError>;
