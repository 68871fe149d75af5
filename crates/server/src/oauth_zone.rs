//! OAuth tokens and network zones (AUTH-2, AUTH-6, ACL-3).
//!
//! A person's app token records how the person signed in (a password alone, or with which
//! second factor) and the zone of the sign-in page (`mamori_store::oauth::SignIn`). The rule of
//! login sessions applies to it on every request: a sign-in that is not strong enough for the
//! role in the request's zone (`[login] password_only_from`) is refused — a clerk's password-only
//! sign-in on the HIS network does not carry over to the VPN. The rights are always those of the
//! request's zone (the policy, in `auth::require_token`). The token endpoint applies the same
//! rule at the zone of the code exchange and of every refresh (`mamori_store::oauth`), and the
//! sign-in page asks for a second factor by the zone of its request, as `/auth/login` does.

use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use mamori_access::ZoneId;
use mamori_store::oauth::OAuthGrant;
use mamori_store::{AccessContext, Action, Actor, AuditEvent};

use crate::Shared;
use crate::auth::{with_request_id, zone_of};
use crate::error::ApiError;
use crate::listener::ConnInfo;

/// The name of a connection's zone, as the login policy and the store name zones.
pub(crate) fn zone_name_of(s: &Shared, conn: Option<&ConnInfo>) -> Option<String> {
    Some(s.policy.zone_name(zone_of(s, conn)).to_string())
}

/// `Some(grant)` if its sign-in is strong enough for the request's `zone` (or it is a system
/// client's, which has no sign-in); otherwise the refusal to answer with.
pub(crate) async fn admit(
    state: &Shared,
    grant: OAuthGrant,
    zone: ZoneId,
    request_id: &str,
    source: &str,
) -> Result<OAuthGrant, Response> {
    let Some(sign_in) = grant.sign_in.as_ref().filter(|s| !s.suffices) else { return Ok(grant) };
    let here = state.policy.zone_name(zone);
    tracing::info!(
        target: "security",
        account = %grant.principal.account,
        client = %grant.client_id,
        zone = here,
        "app token refused: its sign-in is not strong enough for this zone"
    );
    let mut ctx = AccessContext::anonymous(request_id.to_string(), source.to_string());
    ctx.actor = Actor::Person(grant.principal.clone());
    ctx.client = Some(grant.client_id.clone());
    let ev =
        AuditEvent::new(Action::Refused, 401).with_detail(format!("login: {}", sign_in.refusal_detail(Some(here))));
    let resp = match state.store.record_event(ctx, ev).await {
        Ok(()) => insufficient_user_authentication(),
        Err(e) => ApiError::from(e).into_response(),
    };
    Err(with_request_id(resp, request_id))
}

/// 401 with an OperationOutcome and the step-up challenge of RFC 9470
/// (`error="insufficient_user_authentication"`): the app should sign the person in again.
fn insufficient_user_authentication() -> Response {
    let err = ApiError::new(
        axum::http::StatusCode::UNAUTHORIZED,
        "login",
        "this app's sign-in used a password alone, which is not enough from this network zone: \
         sign in to the app again with a second factor",
    );
    let mut resp = err.into_response();
    resp.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static(
            "Bearer realm=\"mamori\", error=\"insufficient_user_authentication\", \
             error_description=\"a second factor is required from this network zone\"",
        ),
    );
    resp
}
