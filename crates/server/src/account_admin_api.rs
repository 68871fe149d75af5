//! Account administration over HTTP beyond the lifecycle (AUTH-5, AUTH-7, AUTH-8, AUTH-2): the
//! account list, API tokens, lockouts, initial passwords, Practitioner links (AUTH-6: the ID
//! token's `fhirUser`), recovery codes, someone else's WebAuthn credentials and the lifecycle
//! sweep — what `mamori user …` and `mamori token …` do, through the same store operations.
//! Under `/admin`, behind the authentication middleware:
//!
//! ```text
//! GET    /admin/accounts                                  administrators, auditors
//! POST   /admin/accounts/sweep                            administrators
//! POST   /admin/accounts/{name}/unlock                    administrators
//! POST   /admin/accounts/{name}/password {password}       administrators, never their own account
//! POST   /admin/accounts/{name}/practitioner {practitioner} administrators (the ID token's fhirUser)
//! GET    /admin/accounts/{name}/tokens                    administrators, auditors (no secrets)
//! POST   /admin/accounts/{name}/tokens {ttl?}             administrators; the token shown once
//! DELETE /admin/accounts/{name}/tokens/{id}               administrators
//! DELETE /admin/accounts/{name}/recovery-codes            administrators
//! GET    /admin/accounts/{name}/webauthn                  administrators, auditors
//! DELETE /admin/accounts/{name}/webauthn/{credential}     administrators, never their own account
//! ```
//!
//! Every call is first decided by the policy point (`Operation::AccountReview` or
//! `Operation::AccountManage`: job type and administration zone, ACL-1/ACL-3); a denial, bad
//! input and every outcome of the store operation are audited.

use std::sync::Arc;

use axum::Extension;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use mamori_access::Operation;
use mamori_store::clock::fhir_instant;
use mamori_store::{AccountName, Action};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::json;
use zeroize::Zeroizing;

use crate::Shared;
use crate::auth::Authenticated;
use crate::error::ApiError;
use crate::lifecycle_api::{account_name, bad, body, json_response, secret_response};

type Result<T> = std::result::Result<T, ApiError>;

const ACCOUNT: Option<&str> = Some("account");

/// Every account: name, job type, state.
pub async fn list_accounts(
    State(s): State<Arc<Shared>>,
    Extension(auth): Extension<Authenticated>,
) -> Result<Response> {
    auth.permit(&s, Operation::AccountReview, Action::AccountList, ACCOUNT).await?;
    let list = s.store.accounts(auth.ctx.clone()).await?;
    let accounts: Vec<_> = list
        .iter()
        .map(|a| json!({"name": a.name, "role": a.role, "created": fhir_instant(a.created_us), "disabled": a.disabled}))
        .collect();
    Ok(json_response(StatusCode::OK, &json!({ "accounts": accounts })))
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct Empty {}

/// The first steps of a change an administrator makes to the account named `raw_name`: the
/// policy point decides `action` (`account-manage`), then the name and the JSON body (`shape`)
/// are parsed. A denial or bad input is audited and answered.
async fn manage<T: DeserializeOwned>(
    s: &Shared,
    auth: &Authenticated,
    action: Action,
    raw_name: &str,
    raw: Body,
    shape: &str,
) -> Result<(AccountName, T)> {
    auth.permit(s, Operation::AccountManage, action, ACCOUNT).await?;
    let name = account_name(s, auth, raw_name).await?;
    Ok((name, body(s, auth, raw, shape).await?))
}

/// The lifecycle sweep, now (AUTH-7): accounts unused for `lifecycle.disable_after_days` are
/// disabled, undecided role requests past `lifecycle.request_ttl` expire.
pub async fn sweep(
    State(s): State<Arc<Shared>>,
    Extension(auth): Extension<Authenticated>,
    raw: Body,
) -> Result<Response> {
    auth.permit(&s, Operation::AccountManage, Action::AccountSweep, ACCOUNT).await?;
    let _: Empty = body(&s, &auth, raw, "{} (or empty)").await?;
    let out = s.store.sweep(auth.ctx.clone(), Arc::clone(&s.lifecycle)).await?;
    let disabled: Vec<_> =
        out.disabled.iter().map(|(name, last)| json!({"account": name, "last_active": fhir_instant(*last)})).collect();
    Ok(json_response(StatusCode::OK, &json!({"disabled": disabled, "expired_requests": out.expired})))
}

/// Lifts a lockout after repeated login failures (AUTH-5).
pub async fn unlock(
    State(s): State<Arc<Shared>>,
    Extension(auth): Extension<Authenticated>,
    Path(name): Path<String>,
    raw: Body,
) -> Result<Response> {
    let (name, Empty {}) = manage(&s, &auth, Action::Unlock, &name, raw, "{} (or empty)").await?;
    let was_locked = s.store.unlock(auth.ctx.clone(), name.clone()).await?;
    let status = if was_locked { "unlocked" } else { "not-locked" };
    Ok(json_response(StatusCode::OK, &json!({"account": name.as_str(), "status": status})))
}

/// Links (or re-links) a staff account to the person's Practitioner resource, which must exist
/// (AUTH-6: the `fhirUser` of their OpenID Connect ID tokens).
pub async fn link_practitioner(
    State(s): State<Arc<Shared>>,
    Extension(auth): Extension<Authenticated>,
    Path(name): Path<String>,
    raw: Body,
) -> Result<Response> {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct PractitionerLink {
        practitioner: String,
    }
    let shape = "{\"practitioner\": \"<Practitioner id>\"}";
    let (name, req): (_, PractitionerLink) = manage(&s, &auth, Action::PractitionerLink, &name, raw, shape).await?;
    s.store.link_practitioner(auth.ctx.clone(), name.clone(), req.practitioner.clone()).await?;
    Ok(json_response(StatusCode::OK, &json!({"account": name.as_str(), "practitioner": req.practitioner})))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct InitialPassword {
    password: String,
}

/// Sets an initial password, which its holder must change at the first login (AUTH-3). The
/// password is checked against the password policy and never appears in an answer or the trail.
pub async fn initial_password(
    State(s): State<Arc<Shared>>,
    Extension(auth): Extension<Authenticated>,
    Path(name): Path<String>,
    raw: Body,
) -> Result<Response> {
    let (name, req): (_, InitialPassword) =
        manage(&s, &auth, Action::PasswordSet, &name, raw, "{\"password\": …}").await?;
    let password = Zeroizing::new(req.password);
    s.store.initial_password(auth.ctx.clone(), name.clone(), password, Arc::clone(&s.login)).await?;
    Ok(json_response(StatusCode::OK, &json!({"account": name.as_str(), "status": "password-set", "must_change": true})))
}

/// An account's API tokens: ids, dates and last use; never a secret.
pub async fn list_tokens(
    State(s): State<Arc<Shared>>,
    Extension(auth): Extension<Authenticated>,
    Path(name): Path<String>,
) -> Result<Response> {
    auth.permit(&s, Operation::AccountReview, Action::TokenList, ACCOUNT).await?;
    let name = account_name(&s, &auth, &name).await?;
    let tokens = s.store.api_tokens(auth.ctx.clone(), name).await?;
    Ok(json_response(StatusCode::OK, &json!({ "tokens": tokens })))
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct NewToken {
    #[serde(default)]
    ttl: Option<String>,
}

/// Issues an API token for an account (`mamori token create`): the answer is the only place the
/// token appears; only its SHA-256 is stored.
pub async fn create_token(
    State(s): State<Arc<Shared>>,
    Extension(auth): Extension<Authenticated>,
    Path(name): Path<String>,
    raw: Body,
) -> Result<Response> {
    let shape = "{\"ttl\": \"8h\"} (optional)";
    let (name, req): (_, NewToken) = manage(&s, &auth, Action::TokenCreate, &name, raw, shape).await?;
    let ttl = match req.ttl.as_deref().map(mamori_store::accounts::parse_duration).transpose() {
        Ok(t) => t,
        Err(e) => return Err(auth.refuse(&s, ApiError::from(e), ACCOUNT).await),
    };
    let (token, expires_us) = s.store.issue_api_token(auth.ctx.clone(), name.clone(), ttl, s.tokens).await?;
    Ok(secret_response(
        StatusCode::CREATED,
        &json!({
            "account": name.as_str(),
            "id": token.hash().public_id(),
            "token": token.secret(),
            "expires": fhir_instant(expires_us),
        }),
    ))
}

/// Revokes one API token (by the id the list shows); it stops working at once.
pub async fn revoke_token(
    State(s): State<Arc<Shared>>,
    Extension(auth): Extension<Authenticated>,
    Path((name, id)): Path<(String, String)>,
) -> Result<Response> {
    auth.permit(&s, Operation::AccountManage, Action::TokenRevoke, ACCOUNT).await?;
    let name = account_name(&s, &auth, &name).await?;
    s.store.revoke_api_token(auth.ctx.clone(), name.clone(), id.clone()).await?;
    Ok(json_response(StatusCode::OK, &json!({"account": name.as_str(), "id": id, "status": "revoked"})))
}

/// Invalidates an account's unused recovery codes (AUTH-8), e.g. when the printed sheet is lost.
/// New codes are made by their holder (`POST /auth/recovery-codes`), never by an administrator.
pub async fn revoke_recovery_codes(
    State(s): State<Arc<Shared>>,
    Extension(auth): Extension<Authenticated>,
    Path(name): Path<String>,
) -> Result<Response> {
    auth.permit(&s, Operation::AccountManage, Action::RecoveryCodesRevoke, ACCOUNT).await?;
    let name = account_name(&s, &auth, &name).await?;
    let revoked = s.store.revoke_recovery_codes_of(auth.ctx.clone(), name.clone()).await?;
    Ok(json_response(StatusCode::OK, &json!({"account": name.as_str(), "status": "revoked", "revoked": revoked})))
}

/// An account's WebAuthn credentials (AUTH-2): ids, labels, algorithms, last use.
pub async fn list_webauthn(
    State(s): State<Arc<Shared>>,
    Extension(auth): Extension<Authenticated>,
    Path(name): Path<String>,
) -> Result<Response> {
    auth.permit(&s, Operation::AccountReview, Action::WebauthnList, ACCOUNT).await?;
    let name = account_name(&s, &auth, &name).await?;
    let list = s.store.webauthn_credentials_of(auth.ctx.clone(), name.clone()).await?;
    let credentials: Vec<_> = list.iter().map(crate::webauthn_api::info_json).collect();
    Ok(json_response(StatusCode::OK, &json!({"account": name.as_str(), "credentials": credentials})))
}

/// Removes a WebAuthn credential of someone else's account; the last second factor of a role
/// that needs two factors stays (issue a temporary credential instead, which resets them all).
pub async fn remove_webauthn(
    State(s): State<Arc<Shared>>,
    Extension(auth): Extension<Authenticated>,
    Path((name, credential)): Path<(String, String)>,
) -> Result<Response> {
    auth.permit(&s, Operation::AccountManage, Action::WebauthnRemove, ACCOUNT).await?;
    let name = account_name(&s, &auth, &name).await?;
    if credential.is_empty()
        || credential.len() > 1400
        || !credential.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        let e = bad("a credential id is the base64url id the credential list shows");
        return Err(auth.refuse(&s, e, ACCOUNT).await);
    }
    s.store.webauthn_remove_of(auth.ctx.clone(), name.clone(), credential.clone(), Arc::clone(&s.login)).await?;
    Ok(json_response(StatusCode::OK, &json!({"account": name.as_str(), "credential": credential, "status": "removed"})))
}
