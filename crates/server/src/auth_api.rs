//! Person login over HTTP (AUTH-2..6, AUTH-8), JSON in and out. The OAuth 2.0 authorisation-code
//! login page (SMART) comes later and will reuse the same store operations.
//!
//! ```text
//! POST /auth/login                {account, password} | {account, temporary_credential}
//!      → {access_token, token_type, expires_in}            logged in (password alone allowed)
//!      → {status: "second-factor-required", mfa_ticket, expires_in, methods}
//!      → {status: "password-change-required", password_ticket, expires_in}
//!      → {status: "enrolment-required", enrol_ticket, expires_in}
//! POST /auth/login/second-factor  {mfa_ticket, totp | recovery_code} → {access_token, …}
//!                                 {mfa_ticket, method: "webauthn"} → {publicKey: request options}
//!                                 {mfa_ticket, webauthn: {assertion}} → {access_token, …}
//! POST /auth/password             {password_ticket, new_password}
//!                                 or Bearer session + {current_password, new_password}
//! POST /auth/totp                 {enrol_ticket} or Bearer session → {otpauth_uri, secret}
//! POST /auth/totp/confirm         {enrol_ticket?, code}: activates the pending enrolment
//! POST /auth/logout               Bearer session
//! POST /auth/recovery-codes       Bearer session + {current_password} → {recovery_codes} (once)
//! POST /auth/webauthn/register    {enrol_ticket?, label} or Bearer session → {publicKey: creation options}
//! POST /auth/webauthn/register/finish  {enrol_ticket?, credential}: stores the credential
//! POST /auth/webauthn/credentials Bearer session → the caller's credentials
//! POST /auth/webauthn/remove      Bearer session + {credential}
//! ```
//!
//! The WebAuthn handlers are in [`crate::webauthn_api`].
//!
//! Every failed login step answers 401 with the same OperationOutcome ("invalid credentials");
//! the audit trail records the actual reason.

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use mamori_access::{Principal, TokenHash, ZoneId};
use mamori_store::identity::{LoginOutcome, SecondFactor, Subject};
use mamori_store::{AccessContext, Action, Actor, AuditEvent};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use zeroize::Zeroizing;

use crate::Shared;
use crate::auth::{bearer_principal, request_id, source_of, with_request_id, zone_of};
use crate::error::ApiError;
use crate::listener::ConnInfo;

/// Login bodies are small; anything larger is refused before parsing (NET-2).
const MAX_AUTH_BODY: usize = 16 * 1024;

type St = State<Arc<Shared>>;

pub(crate) fn routes() -> Router<Arc<Shared>> {
    Router::new()
        .route("/login", post(login))
        .route("/login/second-factor", post(second_factor))
        .route("/password", post(password))
        .route("/totp", post(totp_begin))
        .route("/totp/confirm", post(totp_confirm))
        .route("/logout", post(logout))
        .route("/recovery-codes", post(recovery_codes))
        .merge(crate::webauthn_api::routes())
        .fallback(not_found)
}

async fn not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "not-found", "no login endpoint matches this URL and method")
}

/// One parsed request: who is calling (anonymous until a bearer says otherwise) and the body.
pub(crate) struct AuthRequest {
    pub(crate) ctx: AccessContext,
    headers: HeaderMap,
    pub(crate) body: Bytes,
    /// The network zone of the connection (ACL-3), for the per-zone two-factor rule.
    zone: ZoneId,
}

pub(crate) async fn take(s: &Shared, req: Request) -> Result<AuthRequest, (AccessContext, ApiError)> {
    let ctx = AccessContext::anonymous(request_id(), source_of(&req));
    let zone = zone_of(s, req.extensions().get::<ConnInfo>());
    let (parts, body) = req.into_parts();
    match axum::body::to_bytes(body, MAX_AUTH_BODY).await {
        Ok(body) => Ok(AuthRequest { ctx, headers: parts.headers, body, zone }),
        Err(_) => Err((
            ctx,
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "too-costly",
                format!("login requests are limited to {MAX_AUTH_BODY} bytes"),
            ),
        )),
    }
}

/// Audits a request refused before it reached the store (bad input) and answers it.
pub(crate) async fn refuse(s: &Shared, ctx: AccessContext, err: ApiError) -> Response {
    let (status, code) = err.audit_detail();
    let ev = AuditEvent::new(Action::Refused, status).with_detail(format!("auth: {code}"));
    let id = ctx.request_id.clone();
    let resp = match s.store.record_event(ctx, ev).await {
        Ok(()) => err.into_response(),
        Err(e) => ApiError::from(e).into_response(),
    };
    with_request_id(resp, &id)
}

/// The body of an auth request as JSON of shape `T`; every refusal is audited.
pub(crate) async fn take_json<T: DeserializeOwned>(
    s: &Shared,
    req: Request,
    shape: &str,
) -> Result<(AuthRequest, T), Response> {
    let r = match take(s, req).await {
        Ok(r) => r,
        Err((ctx, e)) => return Err(refuse(s, ctx, e).await),
    };
    match parse(&r.body, shape) {
        Ok(b) => Ok((r, b)),
        Err(e) => Err(refuse(s, r.ctx, e).await),
    }
}

pub(crate) fn parse<T: DeserializeOwned>(body: &[u8], shape: &str) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|_| {
        ApiError::new(StatusCode::BAD_REQUEST, "invalid", format!("the body must be a JSON object {shape}"))
    })
}

fn json(status: StatusCode, v: serde_json::Value, request_id: &str) -> Response {
    let mut resp = (status, serde_json::to_vec(&v).unwrap_or_default()).into_response();
    resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    with_request_id(resp, request_id)
}

pub(crate) fn outcome_json(o: LoginOutcome) -> serde_json::Value {
    use serde_json::json;
    match o {
        LoginOutcome::Session { token, expires_in } => {
            json!({"access_token": token.as_str(), "token_type": "Bearer", "expires_in": expires_in})
        }
        LoginOutcome::SecondFactorRequired { ticket, expires_in, methods } => json!({
            "status": "second-factor-required", "mfa_ticket": ticket.as_str(), "expires_in": expires_in,
            "methods": methods
        }),
        LoginOutcome::PasswordChangeRequired { ticket, expires_in } => json!({
            "status": "password-change-required", "password_ticket": ticket.as_str(), "expires_in": expires_in
        }),
        LoginOutcome::EnrolmentRequired { ticket, expires_in } => json!({
            "status": "enrolment-required", "enrol_ticket": ticket.as_str(), "expires_in": expires_in
        }),
    }
}

pub(crate) fn answer(r: Result<serde_json::Value, mamori_store::StoreError>, request_id: &str) -> Response {
    match r {
        Ok(v) => json(StatusCode::OK, v, request_id),
        Err(e) => with_request_id(ApiError::from(e).into_response(), request_id),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LoginBody {
    account: String,
    password: Option<String>,
    temporary_credential: Option<String>,
}

async fn login(State(s): St, req: Request) -> Response {
    const SHAPE: &str = "{\"account\": …, \"password\": …} or {\"account\": …, \"temporary_credential\": …}";
    let (r, body): (_, LoginBody) = match take_json(&s, req, SHAPE).await {
        Ok(t) => t,
        Err(resp) => return resp,
    };
    let id = r.ctx.request_id.clone();
    let policy = Arc::clone(&s.login);
    let result = match (body.password, body.temporary_credential) {
        (Some(p), None) => {
            let zone = Some(s.policy.zone_name(r.zone).to_string());
            s.store.login_password_from(r.ctx, zone, body.account, Zeroizing::new(p), policy).await
        }
        (None, Some(t)) => s.store.login_temporary(r.ctx, body.account, Zeroizing::new(t), policy).await,
        _ => {
            let e = ApiError::new(StatusCode::BAD_REQUEST, "invalid", format!("the body must be {SHAPE}"));
            return refuse(&s, r.ctx, e).await;
        }
    };
    answer(result.map(outcome_json), &id)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SecondFactorBody {
    mfa_ticket: String,
    totp: Option<String>,
    recovery_code: Option<String>,
    /// `"webauthn"`: asks for a WebAuthn challenge.
    method: Option<String>,
    /// A WebAuthn assertion (`PublicKeyCredential.toJSON()` of `navigator.credentials.get`).
    webauthn: Option<crate::webauthn_api::AssertionJson>,
}

async fn second_factor(State(s): St, req: Request) -> Response {
    const SHAPE: &str = "{\"mfa_ticket\": …, \"totp\": \"123456\"}, {\"mfa_ticket\": …, \"recovery_code\": …}, {\"mfa_ticket\": …, \"method\": \"webauthn\"} or {\"mfa_ticket\": …, \"webauthn\": {assertion}}";
    let (r, body): (_, SecondFactorBody) = match take_json(&s, req, SHAPE).await {
        Ok(t) => t,
        Err(resp) => return resp,
    };
    let factor = match (body.totp, body.recovery_code, body.method, body.webauthn) {
        (None, None, Some(m), None) if m == "webauthn" => {
            return crate::webauthn_api::login_begin(&s, r, body.mfa_ticket).await;
        }
        (None, None, None, Some(a)) => return crate::webauthn_api::login_finish(&s, r, body.mfa_ticket, a).await,
        (Some(t), None, None, None) => SecondFactor::Totp(t),
        (None, Some(c), None, None) => SecondFactor::RecoveryCode(Zeroizing::new(c)),
        _ => {
            let e = ApiError::new(StatusCode::BAD_REQUEST, "invalid", format!("the body must be {SHAPE}"));
            return refuse(&s, r.ctx, e).await;
        }
    };
    let id = r.ctx.request_id.clone();
    let result =
        s.store.login_second_factor(r.ctx, Zeroizing::new(body.mfa_ticket), factor, Arc::clone(&s.login)).await;
    answer(result.map(outcome_json), &id)
}

/// The caller as a subject acting on their own credentials: a session bearer, else a ticket.
pub(crate) async fn subject(
    s: &Shared,
    r: &mut AuthRequest,
    ticket: Option<String>,
) -> Result<Option<(Subject, Option<Principal>)>, ApiError> {
    if let Some(t) = ticket {
        return Ok(Some((Subject::Ticket(Zeroizing::new(t)), None)));
    }
    match bearer_principal(s, &r.headers, r.zone).await? {
        Some((principal, Some(token))) => {
            r.ctx.actor = Actor::Person(principal.clone());
            Ok(Some((Subject::Session { principal: principal.clone(), token }, Some(principal))))
        }
        // API tokens are for scripts: they do not manage a person's credentials.
        _ => Ok(None),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PasswordBody {
    password_ticket: Option<String>,
    current_password: Option<String>,
    new_password: String,
}

async fn password(State(s): St, req: Request) -> Response {
    const SHAPE: &str = "{\"password_ticket\": …, \"new_password\": …} or, with a session, {\"current_password\": …, \"new_password\": …}";
    let (mut r, body): (_, PasswordBody) = match take_json(&s, req, SHAPE).await {
        Ok(t) => t,
        Err(resp) => return resp,
    };
    let id = r.ctx.request_id.clone();
    let subj = match ticket_or_session(&s, &mut r, body.password_ticket).await {
        Ok(subj) => subj,
        Err(resp) => return resp,
    };
    let current = body.current_password.map(Zeroizing::new);
    let result =
        s.store.change_password(r.ctx, subj, current, Zeroizing::new(body.new_password), Arc::clone(&s.login)).await;
    answer(result.map(|()| serde_json::json!({"status": "password-changed"})), &id)
}

/// Who the request acts for: the holder of `ticket`, else the session's account; neither is an
/// audited 401.
pub(crate) async fn ticket_or_session(
    s: &Shared,
    r: &mut AuthRequest,
    ticket: Option<String>,
) -> Result<Subject, Response> {
    let id = r.ctx.request_id.clone();
    match subject(s, r, ticket).await {
        Ok(Some((subj, _))) => Ok(subj),
        Ok(None) => Err(unauthenticated(s, r.ctx.clone()).await),
        Err(e) => Err(with_request_id(e.into_response(), &id)),
    }
}

/// No ticket and no session: recorded like any unauthenticated request.
pub(crate) async fn unauthenticated(s: &Shared, ctx: AccessContext) -> Response {
    let id = ctx.request_id.clone();
    let ev = AuditEvent::new(Action::Refused, 401).with_detail("login");
    let resp = match s.store.record_event(ctx, ev).await {
        Ok(()) => ApiError::new(StatusCode::UNAUTHORIZED, "login", "invalid credentials").into_response(),
        Err(e) => ApiError::from(e).into_response(),
    };
    with_request_id(resp, &id)
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct TotpBody {
    enrol_ticket: Option<String>,
}

async fn totp_begin(State(s): St, req: Request) -> Response {
    let mut r = match take(&s, req).await {
        Ok(r) => r,
        Err((ctx, e)) => return refuse(&s, ctx, e).await,
    };
    let body: TotpBody = if r.body.is_empty() {
        TotpBody::default()
    } else {
        match parse(&r.body, "{\"enrol_ticket\": …} (or empty, with a session)") {
            Ok(b) => b,
            Err(e) => return refuse(&s, r.ctx, e).await,
        }
    };
    let id = r.ctx.request_id.clone();
    let subj = match ticket_or_session(&s, &mut r, body.enrol_ticket).await {
        Ok(subj) => subj,
        Err(resp) => return resp,
    };
    let result = s.store.totp_begin(r.ctx, subj, Arc::clone(&s.login)).await;
    answer(
        result.map(|e| {
            serde_json::json!({
                "otpauth_uri": e.otpauth_uri.as_str(),
                "secret": e.secret_base32.as_str(),
                "algorithm": "SHA1", "digits": 6, "period": 30,
                "next": "POST /auth/totp/confirm with a current code to activate"
            })
        }),
        &id,
    )
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TotpConfirmBody {
    enrol_ticket: Option<String>,
    code: String,
}

async fn totp_confirm(State(s): St, req: Request) -> Response {
    let (mut r, body): (_, TotpConfirmBody) =
        match take_json(&s, req, "{\"enrol_ticket\": …, \"code\": \"123456\"}").await {
            Ok(t) => t,
            Err(resp) => return resp,
        };
    let id = r.ctx.request_id.clone();
    let subj = match ticket_or_session(&s, &mut r, body.enrol_ticket).await {
        Ok(subj) => subj,
        Err(resp) => return resp,
    };
    let result = s.store.totp_confirm(r.ctx, subj, body.code, Arc::clone(&s.login)).await;
    answer(result.map(|()| serde_json::json!({"status": "second-factor-active"})), &id)
}

async fn logout(State(s): St, req: Request) -> Response {
    let mut r = match take(&s, req).await {
        Ok(r) => r,
        Err((ctx, e)) => return refuse(&s, ctx, e).await,
    };
    let id = r.ctx.request_id.clone();
    let token: TokenHash = match subject(&s, &mut r, None).await {
        Ok(Some((Subject::Session { token, .. }, _))) => token,
        Ok(_) => return unauthenticated(&s, r.ctx).await,
        Err(e) => return with_request_id(e.into_response(), &id),
    };
    let result = s.store.logout(r.ctx, token).await;
    answer(result.map(|()| serde_json::json!({"status": "logged-out"})), &id)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RecoveryCodesBody {
    current_password: String,
}

/// The holder replaces their own recovery codes (AUTH-8): a session (not an API token) and the
/// current password, as for a password change. The codes are in this answer only.
async fn recovery_codes(State(s): St, req: Request) -> Response {
    let (mut r, body): (_, RecoveryCodesBody) = match take_json(&s, req, "{\"current_password\": …}").await {
        Ok(t) => t,
        Err(resp) => return resp,
    };
    let id = r.ctx.request_id.clone();
    let principal = match subject(&s, &mut r, None).await {
        Ok(Some((Subject::Session { principal, .. }, _))) => principal,
        Ok(_) => return unauthenticated(&s, r.ctx).await,
        Err(e) => return with_request_id(e.into_response(), &id),
    };
    let current = Zeroizing::new(body.current_password);
    let result = s.store.regenerate_recovery_codes(r.ctx, principal, current, Arc::clone(&s.login)).await;
    let mut resp = answer(
        result.map(|codes| {
            serde_json::json!({
                "recovery_codes": codes.iter().map(|c| c.as_str()).collect::<Vec<_>>(),
                "note": "each code works once, instead of the second factor; earlier codes no longer work",
            })
        }),
        &id,
    );
    resp.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}
