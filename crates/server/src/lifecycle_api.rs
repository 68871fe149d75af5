//! Account lifecycle over HTTP (AUTH-7), under `/admin/accounts`, behind the same authentication
//! middleware as FHIR. JSON in and out, bodies bounded, errors as OperationOutcomes; every call
//! (and every refusal) is audited by the store.
//!
//! ```text
//! GET  /admin/accounts/report[?format=json|csv]        administrators, auditors
//! GET  /admin/accounts/role-requests[?status=pending|all]  administrators, auditors, approvers
//! POST /admin/accounts/{name}/role-requests {role, reason}  the person themselves, or an administrator
//! POST /admin/accounts/role-requests/{id}/approve {note?}   a manager, not the requester nor the account
//! POST /admin/accounts/role-requests/{id}/reject  {note?}   a manager
//! POST /admin/accounts/{name}/disable {reason?}             administrators; immediate
//! POST /admin/accounts/{name}/enable                        administrators
//! POST /admin/accounts {name, role}                         administrators; a staff account
//! POST /admin/patient-accounts {name, patient}              administrators; a patient account (ACL-4)
//! POST /admin/accounts/{name}/temporary-credential          administrators; shown once (AUTH-8)
//! ```
//!
//! Who may call what is the policy decision point's (`Operation::AccountReview`,
//! `Operation::AccountManage`: job type and administration zone, ACL-1); who may *decide* a
//! request (managers, separation of duties) is a rule of the store, so the CLI and HTTP cannot
//! differ.

use std::sync::Arc;

use axum::Extension;
use axum::body::Body;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use mamori_access::{Operation, Role};
use mamori_store::lifecycle::{fill_zones, report_csv};
use mamori_store::query::parse_query_string;
use mamori_store::{AccountName, Action};
use serde::Deserialize;
use serde::de::DeserializeOwned;

use crate::Shared;
use crate::auth::Authenticated;
use crate::error::ApiError;

type Result<T> = std::result::Result<T, ApiError>;

/// Administration bodies are small; anything larger is refused before parsing (NET-2).
pub(crate) const MAX_ADMIN_BODY: usize = 16 * 1024;

pub(crate) fn bad(message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, "invalid", message)
}

/// Reads and parses a bounded JSON body; bad input is audited as a refusal.
pub(crate) async fn body<T: DeserializeOwned>(s: &Shared, auth: &Authenticated, body: Body, shape: &str) -> Result<T> {
    body_within(s, auth, body, shape, MAX_ADMIN_BODY, Some("account")).await
}

/// As [`body`], with its own size limit, for an administrative or OAuth request about `rtype`
/// (what a refusal is audited as).
pub(crate) async fn body_within<T: DeserializeOwned>(
    s: &Shared,
    auth: &Authenticated,
    body: Body,
    shape: &str,
    limit: usize,
    rtype: Option<&str>,
) -> Result<T> {
    let parsed = match axum::body::to_bytes(body, limit).await {
        Err(_) => Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too-costly",
            format!("this request is limited to {limit} bytes"),
        )),
        Ok(b) if b.is_empty() => serde_json::from_slice(b"{}").map_err(|_| bad(format!("the body must be {shape}"))),
        Ok(b) => serde_json::from_slice(&b).map_err(|_| bad(format!("the body must be a JSON object {shape}"))),
    };
    match parsed {
        Ok(v) => Ok(v),
        Err(e) => Err(auth.refuse(s, e, rtype).await),
    }
}

pub(crate) async fn account_name(s: &Shared, auth: &Authenticated, raw: &str) -> Result<AccountName> {
    match AccountName::parse(raw) {
        Ok(n) => Ok(n),
        Err(e) => Err(auth.refuse(s, ApiError::from(e), Some("account")).await),
    }
}

pub(crate) fn json_response(status: StatusCode, v: &impl serde::Serialize) -> Response {
    let mut resp = (status, serde_json::to_vec(v).unwrap_or_default()).into_response();
    resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    resp
}

fn query_value(q: &Option<String>, key: &str) -> std::result::Result<Option<String>, ApiError> {
    let pairs = parse_query_string(q.as_deref().unwrap_or(""));
    let mut found = None;
    for (k, v) in pairs {
        if k == key {
            found = Some(v);
        } else {
            return Err(bad(format!(
                "unknown parameter '{}' (supported: {key})",
                k.chars().take(40).collect::<String>()
            )));
        }
    }
    Ok(found)
}

/// The review report of every account (AUTH-7): JSON, or CSV with `?format=csv`.
pub async fn report(
    State(s): State<Arc<Shared>>,
    Extension(auth): Extension<Authenticated>,
    RawQuery(q): RawQuery,
) -> Result<Response> {
    auth.permit(&s, Operation::AccountReview, Action::AccountReport, Some("account")).await?;
    let csv = match query_value(&q, "format").map(|f| f.unwrap_or_else(|| "json".into())) {
        Ok(f) if f == "json" => false,
        Ok(f) if f == "csv" => true,
        Ok(_) => return Err(auth.refuse(&s, bad("format must be json or csv"), Some("account")).await),
        Err(e) => return Err(auth.refuse(&s, e, Some("account")).await),
    };
    let mut rows = s.store.account_report(auth.ctx.clone()).await?;
    fill_zones(&mut rows, &s.policy);
    if csv {
        let mut resp = (StatusCode::OK, report_csv(&rows)).into_response();
        let h = resp.headers_mut();
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/csv; charset=utf-8; header=present"));
        h.insert(header::CONTENT_DISPOSITION, HeaderValue::from_static("attachment; filename=\"accounts.csv\""));
        return Ok(resp);
    }
    let body = serde_json::json!({
        "generated": mamori_store::clock::fhir_instant(s.now_us()),
        "accounts": rows,
    });
    Ok(json_response(StatusCode::OK, &body))
}

pub async fn list_requests(
    State(s): State<Arc<Shared>>,
    Extension(auth): Extension<Authenticated>,
    RawQuery(q): RawQuery,
) -> Result<Response> {
    // Managers see the queue they decide from; everyone else needs the review right.
    if !s.lifecycle.is_manager(&auth.ctx.actor) {
        auth.permit(&s, Operation::AccountReview, Action::RoleRequestList, Some("account")).await?;
    }
    let pending_only = match query_value(&q, "status") {
        Ok(None) => true,
        Ok(Some(v)) if v == "pending" => true,
        Ok(Some(v)) if v == "all" => false,
        Ok(Some(_)) => return Err(auth.refuse(&s, bad("status must be pending or all"), Some("account")).await),
        Err(e) => return Err(auth.refuse(&s, e, Some("account")).await),
    };
    let list = s.store.role_requests(auth.ctx.clone(), pending_only).await?;
    Ok(json_response(StatusCode::OK, &serde_json::json!({ "requests": list })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewRequest {
    role: String,
    reason: String,
}

pub async fn request_role(
    State(s): State<Arc<Shared>>,
    Extension(auth): Extension<Authenticated>,
    Path(name): Path<String>,
    raw: Body,
) -> Result<Response> {
    let name = account_name(&s, &auth, &name).await?;
    let req: NewRequest = body(&s, &auth, raw, "{\"role\": …, \"reason\": …}").await?;
    let role: Role = match req.role.parse() {
        Ok(r) => r,
        Err(e) => return Err(auth.refuse(&s, bad(format!("{e}")), Some("account")).await),
    };
    let created = s.store.request_role(auth.ctx.clone(), name, role, req.reason).await?;
    Ok(json_response(StatusCode::CREATED, &created))
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct Decision {
    #[serde(default)]
    note: Option<String>,
}

async fn decide(s: Arc<Shared>, auth: Authenticated, id: String, raw: Body, approve: bool) -> Result<Response> {
    let Ok(id) = id.parse::<i64>() else {
        return Err(auth.refuse(&s, bad("a role request id is a number"), Some("role-request")).await);
    };
    let d: Decision = body(&s, &auth, raw, "{\"note\": …} (optional)").await?;
    let done = s.store.decide_role_request(auth.ctx.clone(), id, approve, d.note, Arc::clone(&s.lifecycle)).await?;
    Ok(json_response(StatusCode::OK, &done))
}

pub async fn approve(
    State(s): State<Arc<Shared>>,
    Extension(auth): Extension<Authenticated>,
    Path(id): Path<String>,
    raw: Body,
) -> Result<Response> {
    decide(s, auth, id, raw, true).await
}

pub async fn reject(
    State(s): State<Arc<Shared>>,
    Extension(auth): Extension<Authenticated>,
    Path(id): Path<String>,
    raw: Body,
) -> Result<Response> {
    decide(s, auth, id, raw, false).await
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct Disable {
    #[serde(default)]
    reason: Option<String>,
}

/// Disables an account at once (AUTH-7): its sessions end and its tokens stop working.
pub async fn disable(
    State(s): State<Arc<Shared>>,
    Extension(auth): Extension<Authenticated>,
    Path(name): Path<String>,
    raw: Body,
) -> Result<Response> {
    auth.permit(&s, Operation::AccountManage, Action::AccountDisable, Some("account")).await?;
    let name = account_name(&s, &auth, &name).await?;
    let d: Disable = body(&s, &auth, raw, "{\"reason\": …} (optional)").await?;
    let ended = s.store.disable_account_because(auth.ctx.clone(), name.clone(), d.reason.unwrap_or_default()).await?;
    Ok(json_response(
        StatusCode::OK,
        &serde_json::json!({"account": name.as_str(), "status": "disabled", "sessions_ended": ended}),
    ))
}

pub async fn enable(
    State(s): State<Arc<Shared>>,
    Extension(auth): Extension<Authenticated>,
    Path(name): Path<String>,
) -> Result<Response> {
    auth.permit(&s, Operation::AccountManage, Action::AccountEnable, Some("account")).await?;
    let name = account_name(&s, &auth, &name).await?;
    s.store.enable_account(auth.ctx.clone(), name.clone()).await?;
    Ok(json_response(StatusCode::OK, &serde_json::json!({"account": name.as_str(), "status": "enabled"})))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewAccount {
    name: String,
    role: String,
    /// The person's Practitioner (logical id; it must exist): the ID token's `fhirUser`.
    #[serde(default)]
    practitioner: Option<String>,
}

/// Adds a staff account (AUTH-1), linked to the person's Practitioner if given. It can do nothing
/// until it has a credential: an initial password (`mamori user password`) or a temporary
/// credential.
pub async fn add_account(
    State(s): State<Arc<Shared>>,
    Extension(auth): Extension<Authenticated>,
    raw: Body,
) -> Result<Response> {
    auth.permit(&s, Operation::AccountManage, Action::AccountCreate, Some("account")).await?;
    let req: NewAccount = body(&s, &auth, raw, "{\"name\": …, \"role\": …, \"practitioner\"?: …}").await?;
    let name = account_name(&s, &auth, &req.name).await?;
    let role: Role = match req.role.parse() {
        Ok(r) => r,
        Err(e) => return Err(auth.refuse(&s, bad(format!("{e}")), Some("account")).await),
    };
    s.store.add_account(auth.ctx.clone(), name.clone(), role, req.practitioner.clone()).await?;
    let mut answer = serde_json::json!({"account": name.as_str(), "role": role.as_str()});
    if let Some(p) = req.practitioner {
        answer["practitioner"] = serde_json::json!(p);
    }
    Ok(json_response(StatusCode::CREATED, &answer))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewPatientAccount {
    name: String,
    patient: String,
}

/// Adds a patient account linked to an existing Patient (ACL-4): it signs in only at the patient
/// interface and sees only that Patient's compartment.
pub async fn add_patient_account(
    State(s): State<Arc<Shared>>,
    Extension(auth): Extension<Authenticated>,
    raw: Body,
) -> Result<Response> {
    auth.permit(&s, Operation::AccountManage, Action::AccountCreate, Some("account")).await?;
    let req: NewPatientAccount = body(&s, &auth, raw, "{\"name\": …, \"patient\": …}").await?;
    let name = account_name(&s, &auth, &req.name).await?;
    s.store.add_patient_account(auth.ctx.clone(), name.clone(), req.patient.clone()).await?;
    Ok(json_response(
        StatusCode::CREATED,
        &serde_json::json!({"account": name.as_str(), "role": "patient", "patient": req.patient}),
    ))
}

/// Issues a one-time temporary credential (AUTH-8): the answer is the only place it appears.
pub async fn temporary_credential(
    State(s): State<Arc<Shared>>,
    Extension(auth): Extension<Authenticated>,
    Path(name): Path<String>,
) -> Result<Response> {
    auth.permit(&s, Operation::AccountManage, Action::TemporaryCredentialIssue, Some("account")).await?;
    let name = account_name(&s, &auth, &name).await?;
    let (secret, expires_us) =
        s.store.temporary_credential(auth.ctx.clone(), name.clone(), Arc::clone(&s.login)).await?;
    Ok(secret_response(
        StatusCode::OK,
        &serde_json::json!({
            "account": name.as_str(),
            "temporary_credential": secret.as_str(),
            "expires": mamori_store::clock::fhir_instant(expires_us),
        }),
    ))
}

/// An answer carrying a secret shown once: never cached.
pub(crate) fn secret_response(status: StatusCode, v: &impl serde::Serialize) -> Response {
    let mut resp = json_response(status, v);
    resp.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}
