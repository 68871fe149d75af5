//! WebAuthn over HTTP (AUTH-2): JSON in the shapes browsers use — the options are what
//! `navigator.credentials.create/get({publicKey})` take once their base64url fields are decoded
//! (`PublicKeyCredential.parseCreationOptionsFromJSON`), the responses are
//! `PublicKeyCredential.toJSON()`. The checks themselves are `mamori_access::webauthn`, the
//! bookkeeping `mamori_store::webauthn`; these handlers only translate.
//!
//! ```text
//! POST /auth/webauthn/register         {enrol_ticket?, label} or Bearer session + {label}
//!                                      → {publicKey: PublicKeyCredentialCreationOptionsJSON}
//! POST /auth/webauthn/register/finish  {enrol_ticket?, credential: RegistrationResponseJSON}
//!                                      → {status: "second-factor-active", credential}
//! POST /auth/login/second-factor       {mfa_ticket, method: "webauthn"}
//!                                      → {publicKey: PublicKeyCredentialRequestOptionsJSON}
//!                                      {mfa_ticket, webauthn: AuthenticationResponseJSON}
//!                                      → {access_token, token_type, expires_in}
//! POST /auth/webauthn/credentials      Bearer session → {credentials: […]}
//! POST /auth/webauthn/remove           Bearer session + {credential: id}
//! ```

use std::sync::Arc;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use mamori_access::webauthn::{b64url, cose, from_b64url};
use mamori_store::identity::Subject;
use mamori_store::webauthn::{
    AssertionResponse, CreationOptions, CredentialInfo, RegistrationResponse, RequestOptions,
};
use serde::Deserialize;
use serde_json::{Value, json};
use zeroize::Zeroizing;

use crate::Shared;
use crate::auth::with_request_id;
use crate::auth_api::{AuthRequest, answer, outcome_json, parse, refuse, subject, take, take_json, ticket_or_session};
use crate::error::ApiError;

type St = State<Arc<Shared>>;

pub(crate) fn routes() -> Router<Arc<Shared>> {
    Router::new()
        .route("/webauthn/register", post(register_begin))
        .route("/webauthn/register/finish", post(register_finish))
        .route("/webauthn/credentials", post(credentials))
        .route("/webauthn/remove", post(remove))
}

fn not_configured() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "not-supported", "WebAuthn is not configured on this server")
}

fn bad(what: &str) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, "invalid", format!("{what} is not a valid WebAuthn credential response"))
}

/// `RegistrationResponseJSON` (members beyond these are ignored, as browsers add some).
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RegistrationJson {
    id: String,
    raw_id: String,
    #[serde(rename = "type")]
    ty: String,
    response: AttestationResponseJson,
}

#[derive(Deserialize)]
struct AttestationResponseJson {
    #[serde(rename = "clientDataJSON")]
    client_data_json: String,
    #[serde(rename = "attestationObject")]
    attestation_object: String,
}

/// `AuthenticationResponseJSON`.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct AssertionJson {
    id: String,
    raw_id: String,
    #[serde(rename = "type")]
    ty: String,
    response: AssertionResponseJson,
}

#[derive(Deserialize)]
struct AssertionResponseJson {
    #[serde(rename = "clientDataJSON")]
    client_data_json: String,
    #[serde(rename = "authenticatorData")]
    authenticator_data: String,
    signature: String,
    #[serde(rename = "userHandle", default)]
    user_handle: Option<String>,
}

/// `id` and `rawId` name the same credential; `type` is `public-key`.
fn credential_id(id: &str, raw_id: &str, ty: &str, what: &str) -> Result<Vec<u8>, ApiError> {
    let raw = from_b64url(raw_id).filter(|r| !r.is_empty()).ok_or_else(|| bad(what))?;
    if ty != "public-key" || from_b64url(id).as_deref() != Some(&raw[..]) {
        return Err(bad(what));
    }
    Ok(raw)
}

impl RegistrationJson {
    fn decode(self) -> Result<RegistrationResponse, ApiError> {
        const W: &str = "credential";
        Ok(RegistrationResponse {
            credential_id: credential_id(&self.id, &self.raw_id, &self.ty, W)?,
            client_data_json: from_b64url(&self.response.client_data_json).ok_or_else(|| bad(W))?,
            attestation_object: from_b64url(&self.response.attestation_object).ok_or_else(|| bad(W))?,
        })
    }
}

impl AssertionJson {
    pub(crate) fn decode(self) -> Result<AssertionResponse, ApiError> {
        const W: &str = "webauthn";
        let user_handle = match self.response.user_handle.as_deref() {
            None | Some("") => None,
            Some(h) => Some(from_b64url(h).ok_or_else(|| bad(W))?),
        };
        Ok(AssertionResponse {
            credential_id: credential_id(&self.id, &self.raw_id, &self.ty, W)?,
            client_data_json: from_b64url(&self.response.client_data_json).ok_or_else(|| bad(W))?,
            authenticator_data: from_b64url(&self.response.authenticator_data).ok_or_else(|| bad(W))?,
            signature: from_b64url(&self.response.signature).ok_or_else(|| bad(W))?,
            user_handle,
        })
    }
}

fn descriptors(ids: &[Vec<u8>]) -> Vec<Value> {
    ids.iter().map(|id| json!({"type": "public-key", "id": b64url(id)})).collect()
}

/// `PublicKeyCredentialCreationOptionsJSON`.
fn creation_json(o: &CreationOptions) -> Value {
    let params: Vec<Value> = cose::ALGORITHMS.iter().map(|a| json!({"type": "public-key", "alg": a})).collect();
    json!({
        "publicKey": {
            "rp": {"id": o.rp.id, "name": o.rp.name},
            "user": {"id": b64url(&o.user_handle), "name": o.account, "displayName": o.account},
            "challenge": b64url(&o.challenge),
            "pubKeyCredParams": params,
            "timeout": o.timeout_ms,
            "excludeCredentials": descriptors(&o.exclude),
            "authenticatorSelection": {
                "residentKey": "discouraged",
                "requireResidentKey": false,
                "userVerification": o.rp.user_verification.as_str()
            },
            "attestation": "none"
        },
        "next": "POST /auth/webauthn/register/finish with the credential (PublicKeyCredential.toJSON())"
    })
}

/// `PublicKeyCredentialRequestOptionsJSON`.
pub(crate) fn request_json(o: &RequestOptions) -> Value {
    json!({
        "publicKey": {
            "rpId": o.rp.id,
            "challenge": b64url(&o.challenge),
            "timeout": o.timeout_ms,
            "allowCredentials": descriptors(&o.allow),
            "userVerification": o.rp.user_verification.as_str()
        },
        "next": "POST /auth/login/second-factor with the mfa_ticket and webauthn: the assertion (PublicKeyCredential.toJSON())"
    })
}

pub(crate) fn info_json(c: &CredentialInfo) -> Value {
    json!({
        "id": c.id, "label": c.label, "alg": c.alg, "attestation": c.attestation,
        "user_verified": c.user_verified, "backup_eligible": c.backup_eligible, "sign_count": c.sign_count,
        "created": mamori_store::clock::fhir_instant(c.created_us),
        "last_used": c.last_used_us.map(mamori_store::clock::fhir_instant),
    })
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RegisterBody {
    enrol_ticket: Option<String>,
    label: String,
}

async fn register_begin(State(s): St, req: Request) -> Response {
    let (mut r, body): (_, RegisterBody) =
        match take_json(&s, req, "{\"enrol_ticket\": …, \"label\": \"…\"} (no enrol_ticket with a session)").await {
            Ok(t) => t,
            Err(resp) => return resp,
        };
    if s.login.webauthn.is_none() {
        return refuse(&s, r.ctx, not_configured()).await;
    }
    let id = r.ctx.request_id.clone();
    let subj = match ticket_or_session(&s, &mut r, body.enrol_ticket).await {
        Ok(subj) => subj,
        Err(resp) => return resp,
    };
    let result = s.store.webauthn_register_begin(r.ctx, subj, body.label, Arc::clone(&s.login)).await;
    answer(result.map(|o| creation_json(&o)), &id)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RegisterFinishBody {
    enrol_ticket: Option<String>,
    credential: RegistrationJson,
}

async fn register_finish(State(s): St, req: Request) -> Response {
    let (mut r, body): (_, RegisterFinishBody) =
        match take_json(&s, req, "{\"enrol_ticket\": …, \"credential\": {…}}").await {
            Ok(t) => t,
            Err(resp) => return resp,
        };
    if s.login.webauthn.is_none() {
        return refuse(&s, r.ctx, not_configured()).await;
    }
    let response = match body.credential.decode() {
        Ok(c) => c,
        Err(e) => return refuse(&s, r.ctx, e).await,
    };
    let id = r.ctx.request_id.clone();
    let subj = match ticket_or_session(&s, &mut r, body.enrol_ticket).await {
        Ok(subj) => subj,
        Err(resp) => return resp,
    };
    let result = s.store.webauthn_register_finish(r.ctx, subj, response, Arc::clone(&s.login)).await;
    answer(result.map(|c| json!({"status": "second-factor-active", "credential": info_json(&c)})), &id)
}

/// `{mfa_ticket, method: "webauthn"}` on `/auth/login/second-factor`.
pub(crate) async fn login_begin(s: &Shared, r: AuthRequest, ticket: String) -> Response {
    if s.login.webauthn.is_none() {
        return refuse(s, r.ctx, not_configured()).await;
    }
    let id = r.ctx.request_id.clone();
    let result = s.store.webauthn_login_begin(r.ctx, Zeroizing::new(ticket), Arc::clone(&s.login)).await;
    answer(result.map(|o| request_json(&o)), &id)
}

/// `{mfa_ticket, webauthn: assertion}` on `/auth/login/second-factor`.
pub(crate) async fn login_finish(s: &Shared, r: AuthRequest, ticket: String, assertion: AssertionJson) -> Response {
    if s.login.webauthn.is_none() {
        return refuse(s, r.ctx, not_configured()).await;
    }
    let response = match assertion.decode() {
        Ok(a) => a,
        Err(e) => return refuse(s, r.ctx, e).await,
    };
    let id = r.ctx.request_id.clone();
    let result = s.store.webauthn_login_finish(r.ctx, Zeroizing::new(ticket), response, Arc::clone(&s.login)).await;
    answer(result.map(outcome_json), &id)
}

/// The caller's session, else an audited 401.
async fn session(s: &Shared, r: &mut AuthRequest) -> Result<mamori_access::Principal, Response> {
    let id = r.ctx.request_id.clone();
    match subject(s, r, None).await {
        Ok(Some((Subject::Session { principal, .. }, _))) => Ok(principal),
        Ok(_) => Err(crate::auth_api::unauthenticated(s, r.ctx.clone()).await),
        Err(e) => Err(with_request_id(e.into_response(), &id)),
    }
}

async fn credentials(State(s): St, req: Request) -> Response {
    let mut r = match take(&s, req).await {
        Ok(r) => r,
        Err((ctx, e)) => return refuse(&s, ctx, e).await,
    };
    if !r.body.is_empty() && parse::<serde_json::Map<String, Value>>(&r.body, "{} (or empty)").is_err() {
        return refuse(&s, r.ctx, ApiError::new(StatusCode::BAD_REQUEST, "invalid", "the body must be empty or {}"))
            .await;
    }
    let principal = match session(&s, &mut r).await {
        Ok(p) => p,
        Err(resp) => return resp,
    };
    let id = r.ctx.request_id.clone();
    let result = s.store.webauthn_credentials(r.ctx, principal).await;
    answer(result.map(|l| json!({"credentials": l.iter().map(info_json).collect::<Vec<_>>()})), &id)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RemoveBody {
    credential: String,
}

async fn remove(State(s): St, req: Request) -> Response {
    let (mut r, body): (_, RemoveBody) = match take_json(&s, req, "{\"credential\": \"<credential id>\"}").await {
        Ok(t) => t,
        Err(resp) => return resp,
    };
    let principal = match session(&s, &mut r).await {
        Ok(p) => p,
        Err(resp) => return resp,
    };
    let id = r.ctx.request_id.clone();
    let result = s.store.webauthn_remove(r.ctx, principal, body.credential, Arc::clone(&s.login)).await;
    answer(result.map(|()| json!({"status": "removed"})), &id)
}
