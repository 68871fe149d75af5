//! Authentication: the middleware every `/fhir` request passes before any handler runs.
//! It resolves the bearer token, builds the request's [`AccessContext`], and audits refusals.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use mamori_access::secret::{SecretKind, presented};
use mamori_access::{Decision, Operation, Principal, TokenHash, decide};
use mamori_store::{AccessContext, Action, Actor, AuditEvent};

use crate::AppState;
use crate::error::ApiError;
use crate::listener::ConnInfo;

/// Proof that the request was authenticated; handlers take it as an extractor, so a handler
/// mounted without the middleware cannot run (the extractor fails).
#[derive(Clone, Debug)]
pub struct Authenticated {
    pub principal: Principal,
    pub ctx: AccessContext,
    /// The session's token hash when the credential was a login session (not an API token).
    pub session: Option<TokenHash>,
}

impl Authenticated {
    /// Asks the policy decision point; a denial is audited and answered 403.
    pub async fn permit(
        &self,
        state: &AppState,
        op: Operation,
        action: Action,
        rtype: Option<&str>,
    ) -> Result<AccessContext, ApiError> {
        match decide(&self.principal, op) {
            Decision::Permit => Ok(self.ctx.clone()),
            Decision::Deny => {
                let mut ev =
                    AuditEvent::new(Action::Refused, 403).with_detail(format!("forbidden: {}", action.as_str()));
                ev.rtype = rtype.map(str::to_string);
                state.store.record_event(self.ctx.clone(), ev).await.map_err(ApiError::from)?;
                Err(ApiError::forbidden())
            }
        }
    }

    /// Audits a request refused after authentication (bad input) and returns the error.
    pub async fn refuse(&self, state: &AppState, err: ApiError, rtype: Option<&str>) -> ApiError {
        let (status, code) = err.audit_detail();
        let mut ev = AuditEvent::new(Action::Refused, status).with_detail(code);
        ev.rtype = rtype.map(str::to_string);
        match state.store.record_event(self.ctx.clone(), ev).await {
            Ok(()) => err,
            Err(e) => ApiError::from(e),
        }
    }
}

pub(crate) fn request_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

pub(crate) fn source_of(req: &Request) -> String {
    req.extensions().get::<ConnInfo>().map(|c| c.remote.ip().to_string()).unwrap_or_else(|| "unknown".to_string())
}

pub async fn require_token(State(state): State<Arc<crate::Shared>>, mut req: Request, next: Next) -> Response {
    let request_id = request_id();
    let source = source_of(&req);
    let (principal, session) = match bearer_principal(&state, req.headers()).await {
        Ok(Some((p, session))) => (Some(p), session),
        Ok(None) => (None, None),
        Err(e) => return with_request_id(ApiError::from(e).into_response(), &request_id),
    };
    let Some(principal) = principal else {
        // AUD-1: failed authentication is recorded too (no name: the token identified nobody).
        let ctx = AccessContext { request_id: request_id.clone(), actor: Actor::Anonymous, source };
        let ev = AuditEvent::new(Action::Refused, 401).with_detail("login");
        let resp = match state.store.record_event(ctx, ev).await {
            Ok(()) => ApiError::unauthorized().into_response(),
            Err(e) => ApiError::from(e).into_response(),
        };
        return with_request_id(resp, &request_id);
    };
    let ctx = AccessContext { request_id: request_id.clone(), actor: Actor::Person(principal.clone()), source };
    req.extensions_mut().insert(Authenticated { principal, ctx, session });
    with_request_id(next.run(req).await, &request_id)
}

/// Resolves the bearer credential of a request: an API token (`mamori_…`) or a login session
/// (`mamoris_…`); both give the same kind of principal and meet the same policy.
pub(crate) async fn bearer_principal(
    state: &crate::Shared,
    headers: &HeaderMap,
) -> Result<Option<(Principal, Option<TokenHash>)>, mamori_store::StoreError> {
    let Some(raw) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
        .map(str::trim)
    else {
        return Ok(None);
    };
    if let Some(hash) = TokenHash::from_presented(raw) {
        return Ok(state.store.authenticate(hash).await?.map(|p| (p, None)));
    }
    if let Some(hash) = presented(SecretKind::Session, raw) {
        let p = state.store.authenticate_session(hash, std::sync::Arc::clone(&state.login)).await?;
        return Ok(p.map(|p| (p, Some(hash))));
    }
    Ok(None)
}

pub(crate) fn with_request_id(mut resp: Response, id: &str) -> Response {
    if let Ok(v) = HeaderValue::from_str(id) {
        resp.headers_mut().insert("x-request-id", v);
    }
    resp
}
