//! The patient interface (ACL-4): what the authentication middleware does for a request on the
//! patient listener. Only a patient principal (signed in there, with a session of the patient
//! audience) gets through, with rights confined to the compartment of the Patient the account is
//! linked to; every other credential is refused 401 and the refusal audited with its actor. A
//! patient credential presented at the staff interface is refused the same way.

use std::sync::Arc;

use axum::extract::Request;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use mamori_access::scope::{Context, ScopeSet};
use mamori_access::{Audience, Principal, Purpose, Role, TokenHash};
use mamori_store::{AccessContext, Action, Actor, AuditEvent};

use crate::Shared;
use crate::auth::{Authenticated, with_request_id, zone_of};
use crate::error::ApiError;
use crate::listener::ConnInfo;

/// Refuses `principal` at this interface: 401, audited with the principal as the actor.
async fn refuse(state: &Shared, principal: Principal, request_id: &str, source: String, why: &str) -> Response {
    let mut ctx = AccessContext::anonymous(request_id.to_string(), source);
    ctx.actor = Actor::Person(principal);
    let ev = AuditEvent::new(Action::Refused, 401).with_detail(format!("login: {why}"));
    let resp = match state.store.record_event(ctx, ev).await {
        Ok(()) => ApiError::unauthorized().into_response(),
        Err(e) => ApiError::from(e).into_response(),
    };
    with_request_id(resp, request_id)
}

/// How a principal was authenticated: a login session, or an OAuth access token (its scopes and
/// client); API tokens have neither.
pub(crate) struct Credential {
    pub session: Option<TokenHash>,
    pub scope: Option<Arc<ScopeSet>>,
    pub client: Option<String>,
}

/// The middleware's patient branch: `principal` was authenticated by a credential presented at
/// an interface of `state.login.audience`.
pub(crate) async fn require_patient(
    state: &Shared,
    mut req: Request,
    next: Next,
    principal: Principal,
    via: Credential,
    request_id: String,
    source: String,
) -> Response {
    let Credential { session, scope, client } = via;
    if state.login.audience != Audience::Patient {
        return refuse(state, principal, &request_id, source, "patient credentials work at the patient interface only")
            .await;
    }
    // Only sessions, and OAuth tokens bound to them, are issued for the patient audience (API
    // tokens are for staff); an app's token carries patient/ scopes only.
    let patient_app = scope.as_ref().is_some_and(|s| !s.has_context(Context::User) && !s.has_context(Context::System));
    if principal.role != Role::Patient || (session.is_none() && !patient_app) {
        return refuse(state, principal, &request_id, source, "staff credentials do not work at the patient interface")
            .await;
    }
    let patient = match state.store.patient_of(principal.account.clone()).await {
        Ok(Some(p)) => p,
        Ok(None) => return refuse(state, principal, &request_id, source, "no linked Patient").await,
        Err(e) => return with_request_id(ApiError::from(e).into_response(), &request_id),
    };
    let zone = zone_of(state, req.extensions().get::<ConnInfo>());
    // The purpose of use is the patient's own; break-glass does not exist here.
    let mut rights = state.policy.patient_rights(&patient);
    // AUTH-6: an app's patient/ scopes narrow the patient's rights, never widen them.
    if let Some(scope) = scope {
        rights = rights.narrowed(scope);
    }
    let ctx = AccessContext {
        request_id: request_id.clone(),
        actor: Actor::Person(principal.clone()),
        source,
        rights,
        emergency: None,
        client,
    };
    req.extensions_mut().insert(Authenticated { principal, ctx, session, zone, purpose: Purpose::Treatment });
    with_request_id(next.run(req).await, &request_id)
}
