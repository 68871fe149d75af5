//! Authentication: the middleware every `/fhir` request passes before any handler runs.
//! It resolves the bearer token, determines the network zone (ACL-3) and the declared purpose of
//! use, asks the policy once for the request's [`Rights`] (carried in the [`AccessContext`] the
//! store applies to every resource), and audits refusals.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use mamori_access::scope::Interaction;
use mamori_access::secret::{SecretKind, presented};
use mamori_access::{CategorySet, Decision, Operation, Principal, Purpose, Rights, TokenHash, ZoneId};
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
    /// The network zone the request came from (ACL-3).
    pub zone: ZoneId,
    /// The declared purpose of use.
    pub purpose: Purpose,
}

/// The header declaring the purpose of use: `treatment` (default), `payment`, `operations` or
/// `emergency` (break-glass, which needs [`REASON_HEADER`]).
pub const PURPOSE_HEADER: &str = "x-mamori-purpose";
/// The stated reason of a break-glass request (recorded in the audit trail).
pub const REASON_HEADER: &str = "x-mamori-reason";
const MAX_REASON_CHARS: usize = 200;

/// The purpose (and break-glass reason) a request declares.
fn purpose_of(h: &HeaderMap) -> Result<(Purpose, Option<String>), ApiError> {
    use axum::http::StatusCode;
    let bad = |m: &str| ApiError::new(StatusCode::BAD_REQUEST, "invalid", m.to_string());
    let purpose = match h.get(PURPOSE_HEADER) {
        None => Purpose::Treatment,
        Some(v) => v
            .to_str()
            .ok()
            .and_then(|s| s.trim().parse::<Purpose>().ok())
            .ok_or_else(|| bad("X-Mamori-Purpose must be treatment, payment, operations or emergency"))?,
    };
    if purpose != Purpose::Emergency {
        return Ok((purpose, None));
    }
    let reason = h
        .get(REASON_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(|s| s.trim().chars().filter(|c| !c.is_control()).take(MAX_REASON_CHARS).collect::<String>())
        .filter(|s| !s.is_empty())
        .ok_or_else(|| bad("an emergency (break-glass) request must state its reason in X-Mamori-Reason"))?;
    Ok((purpose, Some(reason)))
}

/// The zone of a connection (ACL-3): by a verified client certificate (and the CA that issued
/// it), the listener it arrived on, and its source address.
pub(crate) fn zone_of(state: &crate::Shared, conn: Option<&ConnInfo>) -> ZoneId {
    use mamori_access::ClientCert;
    let policy = &state.policy;
    match conn {
        Some(c) => {
            let cert = match c.tls.as_ref().and_then(|t| t.peer_cert_der.as_ref().map(|d| (d, t))) {
                None => ClientCert::None,
                Some((leaf, t)) => ClientCert::Verified {
                    issuer: state.client_issuers.issuer_of(leaf, &t.peer_intermediates_der, state.clock.now()),
                },
            };
            policy.zone_of_connection(c.remote.ip(), Some(c.local), cert)
        }
        // No connection information (never in the server): the most restricted, default zone.
        None => policy.zone_of(std::net::IpAddr::from([0, 0, 0, 0]), false),
    }
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
        // Clinical operations: the request-level gate is "allowed on some category"; the store
        // applies the per-category rights to each resource. Other operations are decided here.
        let decision = if Operation::CLINICAL.contains(&op) {
            // AUTH-6: under SMART scopes the interaction must be in scope for the type too.
            let in_scope = interaction_of(action).is_none_or(|i| self.ctx.rights.scope_permits(i, rtype));
            if self.ctx.rights.any(op) && in_scope { Decision::Permit } else { Decision::Deny }
        } else if self.ctx.rights.is_scoped() && op != Operation::Capabilities {
            // An OAuth token carries clinical scopes only: nothing administrative.
            Decision::Deny
        } else {
            state.policy.decide(&self.principal, op, CategorySet::EMPTY, self.zone, self.purpose)
        };
        match decision {
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

/// The SMART interaction a request's action is, for the scope check at the gate; `None` for a
/// Bundle, whose entries the store checks one by one.
fn interaction_of(action: Action) -> Option<Interaction> {
    match action {
        Action::Read | Action::Vread | Action::HistoryInstance => Some(Interaction::Read),
        Action::Search | Action::HistoryType | Action::HistorySystem => Some(Interaction::Search),
        Action::Create => Some(Interaction::Create),
        Action::Update | Action::Patch => Some(Interaction::Update),
        Action::Delete => Some(Interaction::Delete),
        _ => None,
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
    // The zone first: a password-only session is not valid from a zone where its role needs two
    // factors (AUTH-2).
    let zone = zone_of(&state, req.extensions().get::<ConnInfo>());
    // An OAuth access token (AUTH-6) names its client and carries scopes; otherwise an API
    // token or a login session. A person's app token meets the same per-zone two-factor rule.
    let oauth = match oauth_bearer(&state, req.headers(), zone).await {
        Ok(Some(g)) => match crate::oauth_zone::admit(&state, g, zone, &request_id, &source).await {
            Ok(g) => Some(g),
            Err(refused) => return refused,
        },
        Ok(None) => None,
        Err(e) => return with_request_id(ApiError::from(e).into_response(), &request_id),
    };
    let (principal, session, scope, client, launch) = match oauth {
        Some(g) => (Some(g.principal), None, Some(Arc::new(g.scope)), Some(g.client_id), g.patient),
        None => match bearer_principal(&state, req.headers(), zone).await {
            Ok(Some((p, session))) => (Some(p), session, None, None, None),
            Ok(None) => (None, None, None, None, None),
            Err(e) => return with_request_id(ApiError::from(e).into_response(), &request_id),
        },
    };
    let Some(principal) = principal else {
        // AUD-1: failed authentication is recorded too (no name: the token identified nobody).
        let ctx = AccessContext::anonymous(request_id.clone(), source);
        let ev = AuditEvent::new(Action::Refused, 401).with_detail("login");
        let resp = match state.store.record_event(ctx, ev).await {
            Ok(()) => ApiError::unauthorized().into_response(),
            Err(e) => ApiError::from(e).into_response(),
        };
        return with_request_id(resp, &request_id);
    };
    // ACL-4: staff credentials work only at the staff interface, patients' only at theirs.
    if !state.login.admits(principal.role) || state.login.audience == mamori_access::Audience::Patient {
        let via = crate::patient::Credential { session, scope, client };
        return crate::patient::require_patient(&state, req, next, principal, via, request_id, source).await;
    }
    let (purpose, emergency) = match purpose_of(req.headers()) {
        Ok(p) => p,
        Err(err) => {
            let mut ctx = AccessContext::anonymous(request_id.clone(), source);
            ctx.actor = Actor::Person(principal);
            ctx.client = client;
            let (status, code) = err.audit_detail();
            let ev = AuditEvent::new(Action::Refused, status).with_detail(format!("{code}: purpose"));
            let resp = match state.store.record_event(ctx, ev).await {
                Ok(()) => err.into_response(),
                Err(e) => ApiError::from(e).into_response(),
            };
            return with_request_id(resp, &request_id);
        }
    };
    // ACL-1: one decision per request, from job type, zone and purpose; the store applies it per
    // resource (information category).
    let mut rights: Rights = request_rights(&state, &principal, zone, purpose);
    // AUTH-6: an EHR-launched app's token is confined to the launch patient's compartment, and
    // scopes narrow what the policy allows, never widen it. patient/ scopes without a launch
    // patient (never issued here) get nothing.
    match (&launch, &scope) {
        (Some(patient), _) => rights = rights.confined_to(patient),
        (None, Some(sc)) if sc.has_context(mamori_access::scope::Context::Patient) => rights = Rights::none(),
        _ => {}
    }
    if let Some(scope) = scope {
        rights = rights.narrowed(scope);
    }
    if let Some(reason) = &emergency {
        tracing::warn!(
            target: "security",
            account = %principal.account,
            zone = state.policy.zone_name(zone),
            reason_chars = reason.chars().count(),
            "break-glass (emergency purpose) request"
        );
    }
    let ctx = AccessContext {
        request_id: request_id.clone(),
        actor: Actor::Person(principal.clone()),
        source,
        rights,
        emergency,
        client,
    };
    req.extensions_mut().insert(Authenticated { principal, ctx, session, zone, purpose });
    with_request_id(next.run(req).await, &request_id)
}

/// The request's rights from the one policy point.
#[cfg(not(feature = "bench-baseline"))]
fn request_rights(state: &crate::Shared, who: &Principal, zone: ZoneId, purpose: Purpose) -> Rights {
    state.policy.rights(who, zone, purpose)
}

/// As shipped, unless the benchmark harness has switched the decision off to measure its cost.
#[cfg(feature = "bench-baseline")]
fn request_rights(state: &crate::Shared, who: &Principal, zone: ZoneId, purpose: Purpose) -> Rights {
    if state.policy_bypass.load(std::sync::atomic::Ordering::Relaxed) {
        Rights::unrestricted()
    } else {
        state.policy.rights(who, zone, purpose)
    }
}

/// Resolves an OAuth access token (`mamoria_…`), if the request presents one, for a request
/// from `zone`.
async fn oauth_bearer(
    state: &crate::Shared,
    headers: &HeaderMap,
    zone: ZoneId,
) -> Result<Option<mamori_store::oauth::OAuthGrant>, mamori_store::StoreError> {
    let hash = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
        .and_then(|raw| presented(SecretKind::OAuthAccess, raw.trim()));
    match hash {
        Some(h) => {
            let zone = Some(state.policy.zone_name(zone).to_string());
            state.store.authenticate_oauth(h, zone, Arc::clone(&state.login)).await
        }
        None => Ok(None),
    }
}

/// Resolves the bearer credential of a request: an API token (`mamori_…`) or a login session
/// (`mamoris_…`); both give the same kind of principal and meet the same policy. A session
/// opened with a password alone is not valid from a zone where the role needs two factors.
pub(crate) async fn bearer_principal(
    state: &crate::Shared,
    headers: &HeaderMap,
    zone: ZoneId,
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
        let zone = Some(state.policy.zone_name(zone).to_string());
        let p = state.store.authenticate_session_from(hash, zone, std::sync::Arc::clone(&state.login)).await?;
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
