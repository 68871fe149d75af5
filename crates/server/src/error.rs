//! The one place errors become HTTP responses: a FHIR OperationOutcome with a useful diagnostic
//! and never a secret or a piece of a record. Details of internal failures go to the log only.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use mamori_fhir::FhirError;
use mamori_fhir::outcome::OperationOutcome;
use mamori_store::StoreError;

pub const FHIR_JSON: &str = "application/fhir+json; charset=utf-8";

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub outcome: OperationOutcome,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, diagnostics: impl Into<String>) -> Self {
        ApiError { status, outcome: OperationOutcome::error(code, diagnostics) }
    }

    pub fn unauthorized() -> Self {
        ApiError::new(StatusCode::UNAUTHORIZED, "login", "a valid bearer token is required")
    }

    pub fn forbidden() -> Self {
        ApiError::new(StatusCode::FORBIDDEN, "forbidden", "access denied by policy")
    }

    /// The numeric status and issue code for the audit row.
    pub fn audit_detail(&self) -> (u16, String) {
        let code = self.outcome.issues.first().map(|i| i.code).unwrap_or("exception");
        (self.status.as_u16(), code.to_string())
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        let status = StatusCode::from_u16(e.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let diagnostics = match &e {
            StoreError::Internal(detail) => {
                tracing::error!(error = %detail, "internal storage error");
                e.to_string()
            }
            StoreError::Tampered(what) => {
                tracing::error!(target: "security", record = %what, "stored record failed authentication");
                "a stored record failed its integrity check; the operator has been alerted".to_string()
            }
            StoreError::Setup(detail) => {
                tracing::error!(error = %detail, "storage setup error");
                "internal storage error".to_string()
            }
            _ => e.to_string(),
        };
        ApiError::new(status, e.issue_code(), diagnostics)
    }
}

impl From<FhirError> for ApiError {
    fn from(e: FhirError) -> Self {
        let status = match e.issue_code() {
            "too-costly" => StatusCode::PAYLOAD_TOO_LARGE,
            _ => StatusCode::BAD_REQUEST,
        };
        let mut outcome = OperationOutcome::from(&e);
        if outcome.issues.is_empty() {
            outcome = OperationOutcome::error(e.issue_code(), e.to_string());
        }
        ApiError { status, outcome }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::to_vec(&self.outcome.to_json()).unwrap_or_default();
        let mut resp = (self.status, body).into_response();
        resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(FHIR_JSON));
        if self.status == StatusCode::UNAUTHORIZED {
            resp.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer realm=\"mamori\""));
        }
        resp
    }
}
