//! ACL-4 × AUTH-6 over the real binary: SMART apps for patients at the patient interface. A
//! patient signs in on the patient listener's `/oauth/authorize` page (password + TOTP, code +
//! PKCE, no browser), the token response names their Patient, and the app's `patient/` scopes
//! narrow the patient's compartment rights, never widen them. Tokens work only at the interface
//! that issued them; `user/` scopes are refused there and `patient/` scopes at the staff one
//! (unless launched from the EHR: `smart_launch.rs`).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "support/oauth_page.rs"]
mod oauth_page;
mod support;

use oauth_page::*;
use serde_json::{Value, json};
use support::*;

async fn get(s: &Server, root: &str, token: &str, path: &str) -> (u16, Value) {
    json(s.http.get(format!("{root}/fhir/{path}")).bearer_auth(token).send().await.unwrap()).await
}

/// Authorises `client` for `scope` at `root` as `account` and exchanges the code there.
async fn app_token(root: &str, client: &str, scope: &str, account: &str, factor: Factor<'_>) -> Value {
    let (verifier, challenge) = pkce();
    let url = authorize_at(root, client, scope, &challenge);
    let p = sign_in_with(&no_redirects(), root, &url, account, PASSWORD, factor).await;
    assert_eq!(param(&p, "state"), Some("st-42"));
    let (st, t) = exchange_at(root, client, param(&p, "code").unwrap(), &verifier).await;
    assert_eq!(st, 200, "{t}");
    t
}

/// The error an authorisation request is redirected back with, if any.
async fn authorize_error(root: &str, client: &str, scope: &str) -> Option<String> {
    let (_, challenge) = pkce();
    let resp = no_redirects().get(authorize_at(root, client, scope, &challenge)).send().await.unwrap();
    if resp.status().as_u16() != 303 {
        return None;
    }
    param(&redirect_params(&resp), "error").map(str::to_string)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acl4_auth6_patient_app_flow_at_the_patient_interface() {
    let (s, staff, portal) = server_with_portal();
    assert_ne!(staff, portal);

    // Two patients' data; alice is linked to Patient A.
    let create = |v: Value| create_resource(&s, v);
    let a = create(json!({"resourceType": "Patient", "name": [{"family": "Alpha"}]})).await;
    let b = create(json!({"resourceType": "Patient", "name": [{"family": "Beta"}]})).await;
    let obs = |p: &str| {
        json!({"resourceType": "Observation", "status": "final", "code": {"text": "body weight"},
               "subject": {"reference": format!("Patient/{p}")}})
    };
    let oa = create(obs(&a)).await;
    let ob = create(obs(&b)).await;
    ok(&["patient-account", "add", "--data-dir", s.dir.arg(), "alice", "--patient", &a]);
    ok(&["user", "add", "--data-dir", s.dir.arg(), "--name", "dr.sato", "--role", "physician"]);
    let alice = enrol_totp(&s.dir, &portal, "alice").await;
    let sato = enrol_totp(&s.dir, &staff, "dr.sato").await;

    // Registration: a patients' app has patient/ scopes; one client is never for both.
    assert_eq!(add_app(&s.dir, "phr", "patient/*.cruds offline_access").0, 0);
    assert_eq!(add_app(&s.dir, "chart", "user/*.rs").0, 0);
    let (code, _, err) = add_app(&s.dir, "both", "user/*.rs patient/*.rs");
    assert_ne!(code, 0);
    assert!(err.contains("not both"), "{err}");

    // Discovery at each interface says what works there.
    let (_, d) = json(s.http.get(format!("{portal}/fhir/.well-known/smart-configuration")).send().await.unwrap()).await;
    assert_eq!(d["issuer"], portal.as_str());
    assert_eq!(d["authorization_endpoint"], format!("{portal}/oauth/authorize"));
    let has = |v: &Value, k: &str, x: &str| v[k].as_array().unwrap().iter().any(|e| e == x);
    assert!(has(&d, "capabilities", "context-standalone-patient") && has(&d, "capabilities", "permission-patient"));
    assert!(has(&d, "scopes_supported", "patient/*.rs") && !has(&d, "scopes_supported", "user/*.rs"));
    assert!(!has(&d, "grant_types_supported", "client_credentials"), "{d}");
    let (_, d) = json(s.http.get(format!("{staff}/fhir/.well-known/smart-configuration")).send().await.unwrap()).await;
    assert!(!has(&d, "capabilities", "context-standalone-patient") && !has(&d, "scopes_supported", "launch/patient"));
    // At the staff interface patient/ scopes come with an EHR launch only (smart_launch.rs).
    assert!(has(&d, "capabilities", "launch-ehr") && has(&d, "capabilities", "context-ehr-patient"), "{d}");

    // Scopes by interface: user/ (and system/) refused at the patient interface, patient/ at the staff one.
    assert_eq!(authorize_error(&portal, "phr", "user/*.rs").await.as_deref(), Some("invalid_scope"));
    assert_eq!(authorize_error(&portal, "chart", "user/*.rs").await.as_deref(), Some("invalid_scope"));
    assert_eq!(authorize_error(&portal, "phr", "system/*.rs").await.as_deref(), Some("invalid_scope"));
    assert_eq!(authorize_error(&portal, "chart", "patient/*.rs").await.as_deref(), Some("invalid_scope"));
    assert_eq!(authorize_error(&staff, "phr", "patient/*.rs").await.as_deref(), Some("invalid_scope"));
    assert_eq!(
        authorize_error(&staff, "chart", "user/*.rs").await,
        None,
        "the staff app still works at the staff page"
    );

    // The page signs in only the interface's own people.
    let (_, challenge) = pkce();
    let resp =
        password_step(&portal, &authorize_at(&portal, "phr", "patient/*.rs", &challenge), "dr.sato", PASSWORD).await;
    assert_eq!(resp.status().as_u16(), 401, "staff cannot sign in at the patient page");
    let resp = password_step(&staff, &authorize_at(&staff, "chart", "user/*.rs", &challenge), "alice", PASSWORD).await;
    assert_eq!(resp.status().as_u16(), 401, "patients cannot sign in at the staff page");

    // The flow: code + PKCE + TOTP at the patient listener; the response names alice's Patient.
    let t =
        app_token(&portal, "phr", "patient/*.cruds offline_access", "alice", Factor::Totp(&alice.0, unix_now() + 30))
            .await;
    assert_eq!(t["patient"], a.as_str(), "{t}");
    assert_eq!(t["scope"], "patient/*.cruds offline_access");
    let token = t["access_token"].as_str().unwrap().to_string();
    assert_eq!(get(&s, &portal, &token, &format!("Observation/{oa}")).await.0, 200);
    let (st, bundle) = get(&s, &portal, &token, "Observation?_total=accurate").await;
    assert_eq!((st, ids(&bundle)), (200, vec![oa.clone()]), "{bundle}");
    // Another patient's resources are invisible.
    assert_eq!(get(&s, &portal, &token, &format!("Observation/{ob}")).await.0, 404);
    assert_eq!(get(&s, &portal, &token, &format!("Patient/{b}")).await.0, 404);
    let (_, bundle) = get(&s, &portal, &token, &format!("Observation?subject=Patient/{b}")).await;
    assert!(ids(&bundle).is_empty(), "{bundle}");
    // patient/*.cruds does not widen the read-only [policy.patient]: writes are refused.
    let r = s.http.post(format!("{portal}/fhir/Observation")).bearer_auth(&token).json(&obs(&a)).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 403);
    let r = s.http.delete(format!("{portal}/fhir/Observation/{oa}")).bearer_auth(&token).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 403);
    // The refresh token keeps the patient context.
    let (st, r) = token_at(
        &portal,
        &[
            ("grant_type", "refresh_token"),
            ("client_id", "phr"),
            ("refresh_token", t["refresh_token"].as_str().unwrap()),
        ],
    )
    .await;
    assert_eq!((st, r["patient"].as_str()), (200, Some(a.as_str())), "{r}");
    let token = r["access_token"].as_str().unwrap().to_string();
    assert_eq!(get(&s, &portal, &token, &format!("Observation/{oa}")).await.0, 200);

    // A patient's token is refused at the staff listener…
    assert_eq!(get(&s, &staff, &token, &format!("Observation/{oa}")).await.0, 401);
    // …and a staff app's token at the patient listener.
    let st_token = app_token(&staff, "chart", "user/*.rs", "dr.sato", Factor::Totp(&sato.0, unix_now() + 30)).await;
    assert!(st_token.get("patient").is_none(), "{st_token}");
    let st_token = st_token["access_token"].as_str().unwrap().to_string();
    assert_eq!(get(&s, &staff, &st_token, &format!("Observation/{ob}")).await.0, 200);
    assert_eq!(get(&s, &portal, &st_token, &format!("Observation/{oa}")).await.0, 401);
    // A code from the patient page is not exchangeable at the staff token endpoint.
    let (verifier, challenge) = pkce();
    let url = authorize_at(&portal, "phr", "patient/*.rs", &challenge);
    let p = sign_in_with(&no_redirects(), &portal, &url, "alice", PASSWORD, Factor::Recovery(&alice.1[0])).await;
    let (st, e) = exchange_at(&staff, "phr", param(&p, "code").unwrap(), &verifier).await;
    assert_eq!((st, e["error"].as_str()), (400, Some("invalid_grant")), "{e}");
    // Backend services are a staff-interface thing.
    let (st, e) = token_at(&portal, &[("grant_type", "client_credentials")]).await;
    assert_eq!((st, e["error"].as_str()), (400, Some("unsupported_grant_type")), "{e}");

    // patient/Patient.rs: the Patient resource yes, Observations no.
    let t = app_token(&portal, "phr", "patient/Patient.rs", "alice", Factor::Recovery(&alice.1[1])).await;
    let token = t["access_token"].as_str().unwrap().to_string();
    assert_eq!(get(&s, &portal, &token, &format!("Patient/{a}")).await.0, 200);
    assert_eq!(get(&s, &portal, &token, &format!("Observation/{oa}")).await.0, 403);
    assert_eq!(get(&s, &portal, &token, "Observation").await.0, 403);
    let (_, bundle) = get(&s, &portal, &token, &format!("Patient/{a}/$everything")).await;
    let types: Vec<&str> =
        bundle["entry"].as_array().unwrap().iter().filter_map(|e| e["resource"]["resourceType"].as_str()).collect();
    assert_eq!(types, vec!["Patient"], "{bundle}");

    // Issue and refusals are in the audit trail, the app's tokens with alice as the actor.
    assert!(
        s.dir.audit_i64("SELECT COUNT(*) FROM audit_event WHERE action = 'oauth-token' AND actor = 'alice'") >= 2,
        "token issues audited"
    );
}
