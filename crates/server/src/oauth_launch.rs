//! SMART EHR launch (AUTH-6): `POST /oauth/launch` for a staff member's EHR, and the rules the
//! authorisation page applies to `launch`, `launch/patient` and `patient/` scopes.
//!
//! ```text
//! POST /oauth/launch {"patient": "<id>", "client_id": "<app>"}   staff credential (session or API
//!      token; not an OAuth token) → {"launch": "mamoril_…", "expires_in": 300, "iss": "<base>/fhir", …}
//! GET  /oauth/authorize?…&launch=mamoril_…&scope=launch patient/Observation.rs …
//! ```
//!
//! The EHR's request goes the one way every record access goes: the middleware authenticated the
//! person and computed their rights (job type × zone × purpose); the launch is refused unless the
//! policy lets them view the Patient, which the store decides by reading it with those rights
//! (audited); then the store issues the launch value (audited, naming the patient). The value is
//! bound to the person, the app and the Patient, single use and valid for five minutes; the
//! token of the sign-in it is used in is confined to that Patient's compartment, within the
//! person's own rights (`auth::require_token`).
//!
//! Standalone `launch/patient` is not offered at the staff interface: there is no patient picker
//! (a staff app without an EHR uses `user/` scopes). At the patient interface `launch/patient`
//! is granted: the signed-in patient is the context.

use std::sync::Arc;

use axum::Extension;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use mamori_access::scope::{Context, ScopeSet};
use mamori_access::{Audience, Operation};
use mamori_fhir::resource_type::ResourceType;
use mamori_store::Action;
use serde::Deserialize;
use serde_json::json;

use crate::Shared;
use crate::auth::Authenticated;
use crate::error::ApiError;
use crate::listener::ConnInfo;

/// What the EHR asks for.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LaunchRequest {
    /// The Patient's logical id (`123` or `Patient/123`).
    patient: String,
    /// The app being launched (a registered SMART client with the `launch` scope).
    client_id: String,
}

/// `POST /oauth/launch`: a launch context for one patient, for one app, for the caller.
pub(crate) async fn create(
    State(s): State<Arc<Shared>>,
    Extension(auth): Extension<Authenticated>,
    Extension(conn): Extension<ConnInfo>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    // An app's OAuth token cannot launch other apps: launches come from the person's EHR.
    if auth.ctx.rights.is_scoped() {
        let err = ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "an OAuth access token cannot create launch contexts; the EHR uses the person's session or API token",
        );
        return Err(auth.refuse(&s, err, Some("Patient")).await);
    }
    let req: LaunchRequest = crate::lifecycle_api::body_within(
        &s,
        &auth,
        body,
        "{\"patient\": \"<Patient id>\", \"client_id\": \"<app>\"}",
        crate::lifecycle_api::MAX_ADMIN_BODY,
        Some("Patient"),
    )
    .await?;
    let id = req.patient.strip_prefix("Patient/").unwrap_or(&req.patient).to_string();
    if let Err(e) = mamori_fhir::id::Id::parse(&id) {
        return Err(auth.refuse(&s, ApiError::from(mamori_store::StoreError::from(e)), Some("Patient")).await);
    }
    if mamori_store::oauth::check_client_id(&req.client_id).is_err() {
        let err = ApiError::new(StatusCode::BAD_REQUEST, "invalid", "client_id is not a registered client's id");
        return Err(auth.refuse(&s, err, Some("Patient")).await);
    }
    // The policy decides: the person must be allowed to view this Patient (read with their
    // rights through the store, which audits it and answers 404 for what they may not see).
    let ctx = auth.permit(&s, Operation::View, Action::Read, Some("Patient")).await?;
    let rtype = ResourceType::parse("Patient").map_err(|e| ApiError::from(mamori_store::StoreError::from(e)))?;
    s.store.read(ctx.clone(), rtype, id.clone(), None).await?;
    let launch = s.store.create_launch(ctx, auth.principal.account.clone(), req.client_id.clone(), id.clone()).await?;
    let iss = format!("{}/fhir", crate::oauth_api::root(&s, &headers, Some(&conn)));
    let body = json!({
        "launch": launch.launch.as_str(),
        "expires_in": launch.expires_in,
        "patient": id,
        "client_id": req.client_id,
        "iss": iss,
    });
    // The launch value is a secret shown once: never cached.
    Ok(crate::oauth_api::token_json(StatusCode::CREATED, body))
}

/// A refusal of an authorisation request: the RFC 6749 error code and what the app is told.
pub(crate) type ScopeRefusal = (&'static str, &'static str);

/// ACL-4, AUTH-6: whether the requested scopes fit this interface and the launch (`launch`: the
/// request carries a `launch` parameter).
pub(crate) fn scopes_fit(audience: Audience, scope: &ScopeSet, launch: bool) -> Result<(), ScopeRefusal> {
    let patient = scope.has_context(Context::Patient);
    let user = scope.has_context(Context::User);
    match audience {
        Audience::Patient if user || scope.has_context(Context::System) => {
            Err(("invalid_scope", "only patient/ scopes can be granted at the patient interface"))
        }
        Audience::Patient if scope.launch || launch => Err((
            "invalid_scope",
            "EHR launch (scope launch) is for staff apps at the staff interface; patients' apps ask for launch/patient",
        )),
        Audience::Patient => Ok(()),
        Audience::Staff if scope.launch_patient => Err((
            "invalid_scope",
            "standalone patient selection (launch/patient) is not supported here: start the app from the EHR \
             (EHR launch: scope launch with the launch parameter), or use user/ scopes",
        )),
        Audience::Staff if launch && !scope.launch => {
            Err(("invalid_scope", "the launch parameter needs the scope launch"))
        }
        Audience::Staff if scope.launch && !launch => Err((
            "invalid_request",
            "the scope launch needs the launch parameter the EHR provided; start the app from the EHR",
        )),
        Audience::Staff if scope.launch && user => Err((
            "invalid_scope",
            "an EHR-launched app's token is confined to the launch patient: ask for patient/ scopes, not user/ scopes",
        )),
        Audience::Staff if patient && !scope.launch => Err((
            "invalid_scope",
            "patient/ scopes need a patient context: start the app from the EHR (EHR launch: scope launch with the \
             launch parameter), use user/ scopes, or the patient interface for apps used by patients",
        )),
        Audience::Staff => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fit(a: Audience, scope: &str, launch: bool) -> Result<(), &'static str> {
        scopes_fit(a, &scope.parse().unwrap_or_default(), launch).map_err(|(code, _)| code)
    }

    #[test]
    fn auth6_launch_scopes_fit_the_interface() {
        use Audience::{Patient, Staff};
        assert_eq!(fit(Staff, "launch patient/Observation.rs openid fhirUser", true), Ok(()));
        assert_eq!(fit(Staff, "user/*.rs openid fhirUser", false), Ok(()));
        assert_eq!(fit(Staff, "patient/Observation.rs", false), Err("invalid_scope"));
        assert_eq!(fit(Staff, "launch patient/Observation.rs", false), Err("invalid_request"));
        assert_eq!(fit(Staff, "patient/Observation.rs", true), Err("invalid_scope"));
        assert_eq!(fit(Staff, "launch patient/*.rs user/*.rs", true), Err("invalid_scope"));
        assert_eq!(fit(Staff, "launch/patient patient/*.rs", false), Err("invalid_scope"));
        assert_eq!(fit(Patient, "launch/patient patient/*.rs openid fhirUser", false), Ok(()));
        assert_eq!(fit(Patient, "launch patient/*.rs", true), Err("invalid_scope"));
        assert_eq!(fit(Patient, "patient/*.rs", true), Err("invalid_scope"));
        assert_eq!(fit(Patient, "user/*.rs", false), Err("invalid_scope"));
    }
}
