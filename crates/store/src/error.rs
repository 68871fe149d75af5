//! The store's one error type. Each variant maps to exactly one HTTP status and FHIR issue code
//! in the server's error mapper; messages never carry resource content.

use std::sync::Arc;

#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// No resource with that type and id (or the version does not exist).
    #[error("{0} is not known")]
    NotFound(String),
    /// The resource was deleted; its history remains readable (REC-1).
    #[error("{what} was deleted (version {version})")]
    Gone { what: String, version: u64 },
    /// `If-Match` named a version other than the current one.
    #[error("version conflict: {0}")]
    VersionConflict(String),
    /// A conditional operation matched more than one resource.
    #[error("precondition failed: {0}")]
    PreconditionFailed(String),
    /// The request content is invalid (FHIR issue code in `code`).
    #[error("{message}")]
    Invalid { code: &'static str, message: String },
    /// A search or history parameter the server does not implement.
    #[error("{0}")]
    Unsupported(String),
    /// A configured limit was exceeded.
    #[error("{0}")]
    TooCostly(String),
    /// The request was refused by the access policy.
    #[error("access denied")]
    Forbidden,
    /// A login step failed. One answer for every cause — unknown account, wrong password or
    /// code, locked, disabled, expired ticket — so the answer reveals nothing (AUTH-3).
    #[error("invalid credentials")]
    InvalidCredentials,
    /// The audit record could not be written, so the request was refused (AUD-1, fail closed).
    #[error("the audit trail could not be written; the request was not carried out")]
    AuditUnavailable,
    /// The database or key material is unusable; details go to the operator log only.
    #[error("internal storage error")]
    Internal(Arc<str>),
    /// A stored record failed authentication: it was altered outside the application (REC-6).
    #[error("stored record failed its integrity check: {0}")]
    Tampered(String),
    /// Something in the deployment is wrong (configuration, key file): operator-facing.
    #[error("{0}")]
    Setup(String),
}

impl StoreError {
    pub(crate) fn internal(e: impl std::fmt::Display) -> Self {
        StoreError::Internal(e.to_string().into())
    }

    pub fn invalid(code: &'static str, message: impl Into<String>) -> Self {
        StoreError::Invalid { code, message: message.into() }
    }
}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        StoreError::internal(e)
    }
}

impl From<mamori_fhir::error::FhirError> for StoreError {
    fn from(e: mamori_fhir::error::FhirError) -> Self {
        StoreError::Invalid { code: e.issue_code(), message: e.to_string() }
    }
}
