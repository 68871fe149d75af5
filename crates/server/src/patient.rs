//! The patient interface (ACL-4): what the authentication middleware does for a request on the
//! patient listener. Only a patient principal (signed in there, with a session of the patient
//! audience) gets through, with rights confined to the compartment of the Patient the account is
//! linked to; every other credential is refused 401 and the refusal audited with its actor. A
//! patient credential presented at the staff interface is refused the same way.

use axum::extract::Request;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
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

/// The middleware's patient branch: `principal` was authenticated by a credential presented at
/// an interface of `state.login.audience`.
pub(crate) async fn require_patient(
    state: &Shared,
    mut req: Request,
    next: Next,
    principal: Principal,
    session: Option<TokenHash>,
    request_id: String,
    source: String,
) -> Response {
    if state.login.audience != Audience::Patient {
        return refuse(state, principal, &request_id, source, "patient credentials work at the patient interface only")
            .await;
    }
    // Only sessions are issued for the patient audience (API tokens are for staff).
    if principal.role != Role::Patient || session.is_none() {
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
    let rights = state.policy.patient_rights(&patient);
    let ctx = AccessContext {
        request_id: request_id.clone(),
        actor: Actor::Person(principal.clone()),
        source,
        rights,
        emergency: None,
        client: None,
    };
    req.extensions_mut().insert(Authenticated { principal, ctx, session, zone, purpose: Purpose::Treatment });
    with_request_id(next.run(req).await, &request_id)
}
