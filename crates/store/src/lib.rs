//! The record store: versioned, encrypted FHIR resources, the search index and the audit trail.
//!
//! Every entry point takes an [`AccessContext`] and writes an audit row (AUD-1): for writes in
//! the same transaction as the data, for reads before the data is returned. There is no way to
//! reach stored records through this crate without leaving that row; if it cannot be written the
//! call fails (fail closed).
#![forbid(unsafe_code)]

pub mod accounts;
mod audit;
mod audit_index;
pub mod audit_log;
mod bundle;
mod category;
pub mod clock;
mod engine;
pub mod error;
mod flags;
pub mod identity;
pub mod integrity;
mod keyring;
pub mod keys;
pub mod lifecycle;
pub mod model;
pub mod oauth;
pub mod oauth_launch;
pub mod oidc;
pub mod patients;
pub mod query;
mod rows;
mod schema;
mod sealer;
pub mod search;
mod sqlite;
mod version_cache;
pub mod webauthn;
mod writes;

pub use accounts::{AccountInfo, AccountName};
pub use bundle::{EntryResult, TransactionError};
pub use error::StoreError;
pub use integrity::IntegrityReport;
pub use model::{AccessContext, Action, Actor, AuditEvent, VersionRecord};
pub use query::{HistoryQuery, HistoryScope, PageLimits};
pub use sealer::SealingConfig;
pub use search::params::{ParseOptions, SearchQuery, TokenValue};
pub use sqlite::{SqliteStore, StoreConfig, default_audit_path};
pub use version_cache::DEFAULT_BYTES as VERSION_CACHE_DEFAULT_BYTES;
pub use writes::{WriteOp, WriteOutcome};

use std::future::Future;
use std::pin::Pin;

use base64::Engine as _;
use mamori_access::{Principal, TokenHash};
use mamori_fhir::bundle::{BundleKind, RequestEntry};
use mamori_fhir::resource_type::ResourceType;

/// A boxed future, so that [`Store`] can be used as a trait object.
pub type StoreFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, StoreError>> + Send + 'a>>;

/// One page of versions (history) or current resources (search).
#[derive(Debug, Default)]
pub struct Page {
    pub records: Vec<VersionRecord>,
    /// Resources a search's `_include`/`_revinclude` added (search mode `include`).
    pub included: Vec<VersionRecord>,
    /// The cursor for the next page, if there is one.
    pub next_cursor: Option<String>,
    /// The cursor for the previous page (searches only).
    pub previous_cursor: Option<String>,
    pub total: Option<u64>,
}

/// The storage contract the request path is written against. The SQLite store implements it
/// today; a PostgreSQL store implements the same trait and passes the same conformance tests.
pub trait Store:
    identity::Identity
    + lifecycle::Lifecycle
    + patients::PatientAccounts
    + oauth::OAuth
    + oauth_launch::Launches
    + oidc::OpenId
    + webauthn::Webauthn
    + Send
    + Sync
    + 'static
{
    /// Resolves a bearer token to its (enabled, unexpired) account.
    fn authenticate(&self, token: TokenHash) -> StoreFuture<'_, Option<Principal>>;
    /// Records an event that touches no record: a refused request (no token, denied, bad
    /// input) or a request for server metadata.
    fn record_event(&self, ctx: AccessContext, event: AuditEvent) -> StoreFuture<'_, ()>;
    fn read(
        &self,
        ctx: AccessContext,
        rtype: ResourceType,
        id: String,
        version: Option<u64>,
    ) -> StoreFuture<'_, VersionRecord>;
    fn history(&self, ctx: AccessContext, scope: HistoryScope, query: HistoryQuery) -> StoreFuture<'_, Page>;
    fn search(&self, ctx: AccessContext, rtype: ResourceType, query: SearchQuery) -> StoreFuture<'_, Page>;
    fn write(&self, ctx: AccessContext, op: WriteOp) -> StoreFuture<'_, WriteOutcome>;
    fn bundle(
        &self,
        ctx: AccessContext,
        kind: BundleKind,
        entries: Vec<RequestEntry>,
    ) -> StoreFuture<'_, Result<Vec<EntryResult>, TransactionError>>;
    /// Operational status of the audit trail (entries, checkpoint coverage); audited.
    fn audit_status(&self, ctx: AccessContext) -> StoreFuture<'_, serde_json::Value>;
    /// A review view of the audit trail (AUD-4); the review itself is audited.
    fn review(&self, ctx: AccessContext, query: audit_log::ReviewQuery) -> StoreFuture<'_, serde_json::Value>;
}

/// Parses an ETag / `If-Match` value: `W/"3"`, `"3"` or `3`.
pub fn parse_etag(raw: &str) -> Result<u64, StoreError> {
    let t = raw.trim();
    let t = t.strip_prefix("W/").unwrap_or(t);
    let t = t.trim_matches('"');
    t.parse().map_err(|_| {
        StoreError::invalid("invalid", format!("'{}' is not a version ETag such as W/\"3\"", query::clip(raw)))
    })
}

/// A JSON Patch document, from a request body or (in a Bundle) a Binary resource carrying one.
pub fn patch_from_resource(resource: serde_json::Value) -> Result<json_patch::Patch, StoreError> {
    let doc = if resource.get("resourceType").and_then(|v| v.as_str()) == Some("Binary") {
        let data = resource
            .get("data")
            .and_then(|d| d.as_str())
            .ok_or_else(|| StoreError::invalid("required", "a PATCH Binary needs base64 data"))?;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(data)
            .map_err(|_| StoreError::invalid("invalid", "the PATCH Binary's data is not base64"))?;
        serde_json::from_slice(&bytes)
            .map_err(|e| StoreError::invalid("invalid", format!("invalid JSON Patch: {e}")))?
    } else {
        resource
    };
    serde_json::from_value(doc).map_err(|e| StoreError::invalid("invalid", format!("invalid JSON Patch document: {e}")))
}

impl StoreError {
    /// The HTTP status this error answers with; the audit row records the same number.
    pub fn status(&self) -> u16 {
        match self {
            StoreError::NotFound(_) => 404,
            StoreError::Gone { .. } => 410,
            StoreError::VersionConflict(_) | StoreError::PreconditionFailed(_) => 412,
            StoreError::Invalid { code: "processing", .. } => 422,
            StoreError::Invalid { code: "forbidden", .. } => 403,
            StoreError::Invalid { .. } | StoreError::Unsupported(_) => 400,
            StoreError::TooCostly(_) => 413,
            StoreError::Forbidden => 403,
            StoreError::InvalidCredentials => 401,
            StoreError::AuditUnavailable | StoreError::Internal(_) | StoreError::Tampered(_) | StoreError::Setup(_) => {
                500
            }
        }
    }

    /// The FHIR IssueType code for the OperationOutcome.
    pub fn issue_code(&self) -> &'static str {
        match self {
            StoreError::NotFound(_) => "not-found",
            StoreError::Gone { .. } => "deleted",
            StoreError::VersionConflict(_) => "conflict",
            StoreError::PreconditionFailed(_) => "multiple-matches",
            StoreError::Invalid { code, .. } => code,
            StoreError::Unsupported(_) => "not-supported",
            StoreError::TooCostly(_) => "too-costly",
            StoreError::Forbidden => "forbidden",
            StoreError::InvalidCredentials => "login",
            StoreError::AuditUnavailable | StoreError::Internal(_) | StoreError::Setup(_) => "exception",
            StoreError::Tampered(_) => "exception",
        }
    }
}
