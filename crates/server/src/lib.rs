//! HTTP: the FHIR REST API over the record store.
//!
//! The request path is fixed by the router: every `/fhir` route sits behind
//! [`auth::require_token`], handlers ask the policy before calling the store, and the store
//! writes the audit row. One error mapper ([`error::ApiError`]) turns every failure into an
//! OperationOutcome.
#![forbid(unsafe_code)]

mod account_admin_api;
mod admin_api;
mod audit_event_api;
pub mod auth;
mod auth_api;
mod capability;
mod client_admin_api;
pub mod cursor;
pub mod error;
mod fhir_api;
mod lifecycle_api;
pub mod listener;
pub mod oauth_api;
mod oauth_launch;
mod oauth_webauthn;
mod oauth_zone;
mod oidc;
mod patient;
pub mod respond;
pub mod syslog;
pub mod tls;
mod webauthn_api;
pub mod witness;

use std::sync::Arc;

pub use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::{HeaderMap, HeaderValue, header};
use axum::routing::{delete, get, post};
use mamori_store::clock::{Clock, fhir_instant, to_micros};
use mamori_store::{PageLimits, Store};

use crate::listener::ConnInfo;

/// Request-size limits (NET-2).
#[derive(Clone, Copy, Debug)]
pub struct HttpLimits {
    pub max_body_bytes: usize,
    pub max_bundle_entries: usize,
}

impl Default for HttpLimits {
    fn default() -> Self {
        HttpLimits { max_body_bytes: 32 * 1024 * 1024, max_bundle_entries: 10_000 }
    }
}

/// What every handler shares.
pub struct Shared {
    pub store: Arc<dyn Store>,
    pub limits: HttpLimits,
    pub page_limits: PageLimits,
    /// Public base URL of the FHIR endpoint (e.g. `https://emr.example.jp/fhir`); when unset it
    /// is derived from the request's Host header and scheme.
    pub base_url: Option<String>,
    pub clock: Arc<dyn Clock>,
    /// The OS clock-synchronisation status as read at start-up (AUD-3), for /admin/status.
    pub clock_status: String,
    /// Password, two-factor, lockout and session rules of person login (AUTH-2..6).
    pub login: mamori_access::SharedLoginPolicy,
    /// The access policy (ACL-1..3, ACL-5): zones, information categories, grants.
    pub policy: Arc<mamori_access::Policy>,
    /// The CAs of the client-CA bundle, to place a client certificate in a zone by its issuer
    /// (ACL-3); empty unless a zone names issuers.
    pub client_issuers: Arc<tls::ClientIssuers>,
    /// The syslog forwarder's state (AUD-5), when `[audit.syslog]` is configured.
    pub forwarding: Option<syslog::ForwarderStatus>,
    /// The HTTP checkpoint witness's state (AUD-2), when `[audit.http_witness]` is configured.
    pub witness: Option<witness::WitnessStatus>,
    /// Account lifecycle rules (AUTH-7): who approves role requests, request expiry.
    pub lifecycle: mamori_store::lifecycle::SharedLifecyclePolicy,
    /// API token lifetimes (`[tokens]`) for tokens issued over the admin API.
    pub tokens: mamori_store::accounts::TokenPolicy,
    /// Benchmark only (feature `bench-baseline`, never in the server binary): when set, requests
    /// skip the policy decision and run unrestricted, so the harness can measure what the
    /// decision costs on the same server and data (BENCHMARKS.md, policy overhead).
    #[cfg(feature = "bench-baseline")]
    pub policy_bypass: std::sync::atomic::AtomicBool,
    /// OAuth 2.0 / SMART settings (AUTH-6): issuer URL, token lifetimes.
    pub oauth: oauth_api::OAuthSettings,
    /// Sign-ins in progress on the authorisation page.
    pub(crate) oauth_pending: oauth_api::PendingRequests,
    capability: Vec<u8>,
}

pub type AppState = Shared;

impl Shared {
    pub fn new(
        store: Arc<dyn Store>,
        limits: HttpLimits,
        page_limits: PageLimits,
        base_url: Option<String>,
        clock: Arc<dyn Clock>,
    ) -> Shared {
        let cap = capability::statement(env!("CARGO_PKG_VERSION"), &fhir_instant(to_micros(clock.now())));
        Shared {
            store,
            limits,
            page_limits,
            base_url: base_url.map(|b| b.trim_end_matches('/').to_string()),
            clock,
            clock_status: "not checked".into(),
            login: Arc::new(mamori_access::LoginPolicy::with_hasher(mamori_access::password::PasswordHasher::floor())),
            policy: Arc::new(mamori_access::Policy::builtin().unwrap_or_else(|_| mamori_access::Policy::deny_all())),
            client_issuers: Arc::new(tls::ClientIssuers::none()),
            forwarding: None,
            witness: None,
            lifecycle: Arc::new(mamori_store::lifecycle::LifecyclePolicy::default()),
            tokens: mamori_store::accounts::TokenPolicy::default(),
            #[cfg(feature = "bench-baseline")]
            policy_bypass: std::sync::atomic::AtomicBool::new(false),
            oauth: oauth_api::OAuthSettings::default(),
            oauth_pending: oauth_api::PendingRequests::default(),
            capability: serde_json::to_vec(&cap).unwrap_or_default(),
        }
    }

    /// The state of the patient interface (ACL-4): the same store, policy and limits, with the
    /// patient login policy (`login.audience` = patient), whose sessions only it accepts.
    pub fn patient_portal(&self, login: mamori_access::SharedLoginPolicy) -> Shared {
        Shared {
            store: Arc::clone(&self.store),
            limits: self.limits,
            page_limits: self.page_limits,
            base_url: None,
            clock: Arc::clone(&self.clock),
            clock_status: self.clock_status.clone(),
            login,
            policy: Arc::clone(&self.policy),
            client_issuers: Arc::clone(&self.client_issuers),
            forwarding: None,
            witness: None,
            lifecycle: Arc::clone(&self.lifecycle),
            tokens: self.tokens,
            #[cfg(feature = "bench-baseline")]
            policy_bypass: std::sync::atomic::AtomicBool::new(false),
            // Patient-facing SMART apps: the same token lifetimes; the issuer is this interface's
            // own base URL (`[patient_portal] base_url`, else the request's Host).
            oauth: oauth_api::OAuthSettings {
                issuer: None,
                lifetimes: self.oauth.lifetimes,
                id_token_key: self.oauth.id_token_key.clone(),
            },
            oauth_pending: oauth_api::PendingRequests::default(),
            capability: self.capability.clone(),
        }
    }

    pub(crate) fn now_us(&self) -> i64 {
        to_micros(self.clock.now())
    }

    pub(crate) fn base(&self, h: &HeaderMap, conn: &ConnInfo) -> String {
        if let Some(b) = &self.base_url {
            return b.clone();
        }
        let scheme = if conn.tls.is_some() { "https" } else { "http" };
        let host = h
            .get(header::HOST)
            .and_then(|v| v.to_str().ok())
            .filter(|h| h.bytes().all(|b| b.is_ascii_alphanumeric() || b".-:[]".contains(&b)))
            .map(str::to_string)
            .unwrap_or_else(|| conn.local.to_string());
        format!("{scheme}://{host}/fhir")
    }
}

/// The FHIR REST routes, behind the authentication middleware.
fn fhir_routes(shared: &Arc<Shared>) -> Router<Arc<Shared>> {
    use fhir_api as f;
    Router::new()
        .route("/metadata", get(f::metadata))
        .route("/", post(f::bundle))
        .route("/_history", get(f::history_system))
        .route("/{rtype}", get(f::search_get).post(f::create).put(f::conditional_update).delete(f::conditional_delete))
        .route("/{rtype}/_search", post(f::search_post))
        .route("/{rtype}/_history", get(f::history_type))
        .route("/{rtype}/{id}", get(f::read).put(f::update).patch(f::patch).delete(f::delete))
        .route("/{rtype}/{id}/_history", get(f::history_instance))
        .route("/{rtype}/{id}/{target}", get(f::compartment_get))
        .route("/{rtype}/{id}/_history/{vid}", get(f::vread))
        .fallback(f::not_found)
        // `layer`, not `route_layer`: unknown /fhir URLs are authenticated (and audited) too.
        .layer(axum::middleware::from_fn_with_state(Arc::clone(shared), auth::require_token))
        .layer(DefaultBodyLimit::max(shared.limits.max_body_bytes))
}

/// The whole HTTP application.
pub fn app(shared: Arc<Shared>) -> Router {
    use fhir_api as f;
    let fhir = fhir_routes(&shared);
    let admin = Router::new()
        .route("/audit/accounts/{account}", get(admin_api::account))
        .route("/audit/patients/{id}", get(admin_api::patient))
        .route("/audit/patient-counts", get(admin_api::patient_counts))
        .route("/audit/anomalies", get(admin_api::anomalies))
        .route("/audit/outside-hours", get(admin_api::outside_hours))
        .route("/audit/flagged", get(admin_api::flagged))
        .route("/audit/emergency", get(admin_api::emergency))
        .route("/status", get(admin_api::status))
        .route("/accounts/report", get(lifecycle_api::report))
        .route("/accounts/role-requests", get(lifecycle_api::list_requests))
        .route("/accounts/role-requests/{id}/approve", post(lifecycle_api::approve))
        .route("/accounts/role-requests/{id}/reject", post(lifecycle_api::reject))
        .route("/accounts/{name}/role-requests", post(lifecycle_api::request_role))
        .route("/accounts/{name}/disable", post(lifecycle_api::disable))
        .route("/accounts/{name}/enable", post(lifecycle_api::enable))
        .route("/accounts", get(account_admin_api::list_accounts).post(lifecycle_api::add_account))
        .route("/patient-accounts", post(lifecycle_api::add_patient_account))
        .route("/accounts/{name}/temporary-credential", post(lifecycle_api::temporary_credential))
        .route("/accounts/sweep", post(account_admin_api::sweep))
        .route("/accounts/{name}/unlock", post(account_admin_api::unlock))
        .route("/accounts/{name}/password", post(account_admin_api::initial_password))
        .route("/accounts/{name}/practitioner", post(account_admin_api::link_practitioner))
        .route("/accounts/{name}/tokens", get(account_admin_api::list_tokens).post(account_admin_api::create_token))
        .route("/accounts/{name}/tokens/{id}", delete(account_admin_api::revoke_token))
        .route("/accounts/{name}/recovery-codes", delete(account_admin_api::revoke_recovery_codes))
        .route("/accounts/{name}/webauthn", get(account_admin_api::list_webauthn))
        .route("/accounts/{name}/webauthn/{credential}", delete(account_admin_api::remove_webauthn))
        .route("/clients", get(client_admin_api::list).post(client_admin_api::register))
        .route("/clients/{id}", delete(client_admin_api::remove))
        .fallback(f::not_found)
        .layer(axum::middleware::from_fn_with_state(Arc::clone(&shared), auth::require_token));
    // SMART EHR launch: the EHR asks with the person's credential (staff interface only).
    let launch = Router::new()
        .route("/launch", post(oauth_launch::create))
        .route_layer(axum::middleware::from_fn_with_state(Arc::clone(&shared), auth::require_token));
    Router::new()
        .nest("/auth", auth_api::routes())
        .nest("/oauth", oauth_routes().merge(launch))
        // SMART and OpenID discovery are public (apps read them before they have a token).
        .route("/fhir/.well-known/smart-configuration", get(oauth_api::smart_configuration))
        .route("/.well-known/openid-configuration", get(oidc::configuration))
        .nest("/admin", admin)
        // The nested "/" route serves POST /fhir; this one serves POST /fhir/ (both are the base).
        .route(
            "/fhir/",
            post(f::bundle).layer(axum::middleware::from_fn_with_state(Arc::clone(&shared), auth::require_token)),
        )
        .nest("/fhir", fhir)
        .fallback(outside_fhir)
        .layer(DefaultBodyLimit::max(shared.limits.max_body_bytes))
        .layer(axum::middleware::map_response(outcome_for_bare_405))
        .layer(axum::middleware::map_response(security_headers))
        .with_state(shared)
}

/// The OAuth 2.0 endpoints (AUTH-6); which people and scopes they serve follows the interface's
/// login policy (`oauth_api`).
fn oauth_routes() -> Router<Arc<Shared>> {
    Router::new()
        .route("/authorize", get(oauth_api::authorize_get).post(oauth_api::authorize_post))
        .route("/token", post(oauth_api::token))
        .route("/revoke", post(oauth_api::revoke))
        .route("/jwks", get(oidc::jwks))
        .fallback(outside_fhir)
}

/// The patient interface (ACL-4): the FHIR API, the login endpoints and OAuth for patients'
/// SMART apps, served on its own listener to patient principals only (the middleware refuses
/// every other credential, and the patient's rights confine every request to their own
/// compartment). No administration routes.
pub fn patient_app(shared: Arc<Shared>) -> Router {
    let fhir = fhir_routes(&shared);
    Router::new()
        .nest("/auth", auth_api::routes())
        .nest("/oauth", oauth_routes())
        .route("/fhir/.well-known/smart-configuration", get(oauth_api::smart_configuration))
        .route("/.well-known/openid-configuration", get(oidc::configuration))
        .route(
            "/fhir/",
            post(fhir_api::bundle)
                .layer(axum::middleware::from_fn_with_state(Arc::clone(&shared), auth::require_token)),
        )
        .nest("/fhir", fhir)
        .fallback(outside_fhir)
        .layer(DefaultBodyLimit::max(shared.limits.max_body_bytes))
        .layer(axum::middleware::map_response(outcome_for_bare_405))
        .layer(axum::middleware::map_response(security_headers))
        .with_state(shared)
}

async fn outside_fhir() -> error::ApiError {
    error::ApiError::new(axum::http::StatusCode::NOT_FOUND, "not-found", "the FHIR endpoint is at /fhir")
}

/// axum answers a known URL asked with a method it does not take with a bare 405 (and its
/// `Allow` header); FHIR and admin clients get an OperationOutcome there like everywhere else.
async fn outcome_for_bare_405(resp: axum::response::Response) -> axum::response::Response {
    use axum::response::IntoResponse;
    if resp.status() != axum::http::StatusCode::METHOD_NOT_ALLOWED || resp.headers().contains_key(header::CONTENT_TYPE)
    {
        return resp;
    }
    let allow = resp.headers().get(header::ALLOW).cloned();
    let mut out = error::ApiError::new(
        axum::http::StatusCode::METHOD_NOT_ALLOWED,
        "not-supported",
        "this URL does not take this HTTP method",
    )
    .into_response();
    if let Some(a) = allow {
        out.headers_mut().insert(header::ALLOW, a);
    }
    out
}

/// Security headers on every response (NET-2).
async fn security_headers(mut resp: axum::response::Response) -> axum::response::Response {
    let h = resp.headers_mut();
    h.insert("x-content-type-options", HeaderValue::from_static("nosniff"));
    h.insert("strict-transport-security", HeaderValue::from_static("max-age=31536000"));
    h.insert("cache-control", HeaderValue::from_static("no-store"));
    h.insert("referrer-policy", HeaderValue::from_static("no-referrer"));
    // A page that set its own policy (the OAuth sign-in page: form-action) keeps it.
    if !h.contains_key("content-security-policy") {
        h.insert("content-security-policy", HeaderValue::from_static("default-src 'none'; frame-ancestors 'none'"));
    }
    resp
}
