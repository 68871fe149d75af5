//! AUTH-6 over the real binary: SMART EHR launch and OpenID Connect. A staff member's EHR asks
//! `/oauth/launch` for a launch context (decided by the policy, audited), the app signs the same
//! person in on the page with `launch` + `patient/` scopes, and its token is confined to the
//! launch patient within the person's own rights. `openid fhirUser` bring an ES256 ID token that
//! the test verifies against the published JWK Set with its own JOSE library. Launch expiry on
//! the injected clock is proven in `crates/store/tests/oauth.rs`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "support/oauth_page.rs"]
mod oauth_page;
mod support;

use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use oauth_page::*;
use serde_json::{Value, json};
use support::*;

fn observation(patient: &str) -> Value {
    json!({"resourceType": "Observation", "status": "final", "code": {"text": "body weight"},
           "subject": {"reference": format!("Patient/{patient}")}})
}

/// `POST /oauth/launch` with `bearer`: (status, body).
async fn launch(s: &Server, bearer: &str, body: &Value) -> (u16, Value) {
    post(s, "/oauth/launch", body, Some(bearer)).await
}

async fn get(s: &Server, token: &str, path: &str) -> (u16, Value) {
    json(s.http.get(s.url(path)).bearer_auth(token).send().await.unwrap()).await
}

/// The redirect of an authorisation request that fails before the sign-in page: its `error`.
async fn authorize_error(url: &str) -> Option<String> {
    let resp = no_redirects().get(url).send().await.unwrap();
    if resp.status().as_u16() != 303 {
        return None;
    }
    param(&redirect_params(&resp), "error").map(str::to_string)
}

/// Signs `account` in for `client` with `extra` authorisation parameters and exchanges the code.
async fn app_token(
    root: &str,
    client: &str,
    scope: &str,
    extra: &[(&str, &str)],
    account: &str,
    factor: Factor<'_>,
) -> Value {
    let (verifier, challenge) = pkce();
    let url = authorize_params(root, client, scope, &challenge, extra);
    let p = sign_in_with(&no_redirects(), root, &url, account, PASSWORD, factor).await;
    let (st, t) = exchange_at(root, client, param(&p, "code").expect("a code"), &verifier).await;
    assert_eq!(st, 200, "{t}");
    t
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth6_ehr_launch_confines_patient_scopes_to_the_launch_patient() {
    let s = Server::start();
    let root = root(&s);
    let a = create_resource(&s, json!({"resourceType": "Patient", "name": [{"family": "Alpha"}]})).await;
    let b = create_resource(&s, json!({"resourceType": "Patient", "name": [{"family": "Beta"}]})).await;
    let oa = create_resource(&s, observation(&a)).await;
    let ob = create_resource(&s, observation(&b)).await;
    ok(&["user", "add", "--data-dir", s.dir.arg(), "--name", "dr.sato", "--role", "physician"]);
    ok(&["user", "add", "--data-dir", s.dir.arg(), "--name", "dr.kato", "--role", "physician"]);
    let sato = enrol_totp(&s.dir, &root, "dr.sato").await;
    let kato = enrol_totp(&s.dir, &root, "dr.kato").await;
    let ehr = s.dir.token("dr.sato");
    assert_eq!(add_app(&s.dir, "viewer", "launch patient/*.rs offline_access").0, 0);
    assert_eq!(add_app(&s.dir, "chart", "user/*.rs").0, 0);

    // The EHR asks for a launch context for Patient A and the viewer app.
    let (st, l) = launch(&s, &ehr, &json!({"patient": a, "client_id": "viewer"})).await;
    assert_eq!(st, 201, "{l}");
    assert_eq!((l["patient"].as_str(), l["expires_in"].as_i64()), (Some(a.as_str()), Some(300)));
    assert_eq!(l["iss"], s.base.as_str());
    let value = l["launch"].as_str().unwrap().to_string();
    assert!(value.starts_with("mamoril_"), "{l}");

    // The app is launched: the token names Patient A and is confined to A's compartment.
    let scope = "launch patient/Observation.rs offline_access";
    let t = app_token(&root, "viewer", scope, &[("launch", &value)], "dr.sato", Factor::Totp(&sato.0, unix_now() + 30))
        .await;
    assert_eq!(t["patient"], a.as_str(), "{t}");
    assert_eq!(t["scope"], "patient/Observation.rs launch offline_access");
    let token = t["access_token"].as_str().unwrap().to_string();
    assert_eq!(get(&s, &token, &format!("Observation/{oa}")).await.0, 200);
    assert_eq!(get(&s, &token, &format!("Observation/{ob}")).await.0, 404, "another patient's data is invisible");
    let (st, bundle) = get(&s, &token, "Observation?_total=accurate").await;
    assert_eq!((st, ids(&bundle)), (200, vec![oa.clone()]), "{bundle}");
    let (_, bundle) = get(&s, &token, &format!("Observation?subject=Patient/{b}")).await;
    assert!(ids(&bundle).is_empty(), "{bundle}");
    // The scopes narrow further: no Patient read, no writes (the physician could do both).
    assert_eq!(get(&s, &token, &format!("Patient/{a}")).await.0, 403);
    let r = s.http.post(s.url("Observation")).bearer_auth(&token).json(&observation(&a)).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 403);
    // A refresh keeps the launch context and the confinement.
    let rt = t["refresh_token"].as_str().unwrap();
    let (st, r) =
        token_at(&root, &[("grant_type", "refresh_token"), ("client_id", "viewer"), ("refresh_token", rt)]).await;
    assert_eq!((st, r["patient"].as_str()), (200, Some(a.as_str())), "{r}");
    let token = r["access_token"].as_str().unwrap().to_string();
    assert_eq!(get(&s, &token, &format!("Observation/{ob}")).await.0, 404);
    assert_eq!(get(&s, &token, &format!("Observation/{oa}")).await.0, 200);

    // Writes are confined too: into A's compartment only, nothing of B's can be changed.
    assert_eq!(add_app(&s.dir, "writer", "launch patient/Observation.cruds").0, 0);
    let (_, l) = launch(&s, &ehr, &json!({"patient": a, "client_id": "writer"})).await;
    let extra = [("launch", l["launch"].as_str().unwrap())];
    let scope_w = "launch patient/Observation.cruds";
    let w = app_token(&root, "writer", scope_w, &extra, "dr.sato", Factor::Recovery(&sato.1[0])).await;
    let w = w["access_token"].as_str().unwrap().to_string();
    let post_obs = |p: &str| s.http.post(s.url("Observation")).bearer_auth(&w).json(&observation(p)).send();
    assert_eq!(post_obs(&a).await.unwrap().status().as_u16(), 201);
    assert_eq!(post_obs(&b).await.unwrap().status().as_u16(), 403, "not into another patient's compartment");
    let mut moved = observation(&b);
    moved["id"] = json!(ob);
    let r = s.http.put(s.url(&format!("Observation/{ob}"))).bearer_auth(&w).json(&moved).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 404);
    // Deleting what the token cannot see is answered as for a missing resource, and changes nothing.
    let r = s.http.delete(s.url(&format!("Observation/{ob}"))).bearer_auth(&w).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 204);
    assert_eq!(get(&s, &s.token, &format!("Observation/{ob}")).await.0, 200, "B's Observation is untouched");

    // Single use: the spent launch value starts nothing.
    let (_, challenge) = pkce();
    let url = authorize_params(&root, "viewer", scope, &challenge, &[("launch", &value)]);
    assert_eq!(authorize_error(&url).await.as_deref(), Some("invalid_request"));

    // A launch is the person's own: someone else signing in with it gets nothing, and spends it.
    let (_, l) = launch(&s, &ehr, &json!({"patient": format!("Patient/{a}"), "client_id": "viewer"})).await;
    let value = l["launch"].as_str().unwrap().to_string();
    let (_, challenge) = pkce();
    let url = authorize_params(&root, "viewer", scope, &challenge, &[("launch", &value)]);
    let resp = password_step(&root, &url, "dr.kato", PASSWORD).await;
    let cookie = set_cookie(&resp);
    let ft = form_token(&resp.text().await.unwrap());
    let code = totp(&kato.0, unix_now() + 30);
    let resp = no_redirects()
        .post(format!("{root}/oauth/authorize"))
        .header("cookie", &cookie)
        .form_(&[("form_token", ft.as_str()), ("step", "second-factor"), ("method", "totp"), ("code", code.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 303);
    let p = redirect_params(&resp);
    assert_eq!((param(&p, "error"), param(&p, "code")), (Some("access_denied"), None), "{p:?}");
    assert_eq!(authorize_error(&url).await.as_deref(), Some("invalid_request"), "spent");

    // Without a launch context, patient/ scopes are refused with a clear invalid_scope.
    let (_, challenge) = pkce();
    let refused = |scope: &str, extra: &[(&str, &str)]| authorize_params(&root, "viewer", scope, &challenge, extra);
    assert_eq!(authorize_error(&refused("patient/Observation.rs", &[])).await.as_deref(), Some("invalid_scope"));
    assert_eq!(
        authorize_error(&refused("launch patient/Observation.rs", &[])).await.as_deref(),
        Some("invalid_request"),
        "launch scope without the launch parameter"
    );
    assert_eq!(
        authorize_error(&refused("patient/Observation.rs", &[("launch", "mamoril_x")])).await.as_deref(),
        Some("invalid_scope"),
        "launch parameter without the launch scope"
    );
    // Standalone patient selection is not offered to staff (no patient picker).
    let resp = no_redirects().get(refused("launch/patient patient/*.rs", &[])).send().await.unwrap();
    let loc = resp.headers()["location"].to_str().unwrap().to_string();
    assert!(loc.contains("error=invalid_scope") && loc.contains("launch%2Fpatient"), "{loc}");
    // A launch token is confined: user/ scopes do not come with it.
    let (_, l) = launch(&s, &ehr, &json!({"patient": a, "client_id": "viewer"})).await;
    let v = l["launch"].as_str().unwrap();
    let url = refused("launch patient/*.rs user/*.rs", &[("launch", v)]);
    assert_eq!(authorize_error(&url).await.as_deref(), Some("invalid_scope"));
    // The launch is bound to its app.
    let url = authorize_params(&root, "chart", "launch user/*.rs", &challenge, &[("launch", v)]);
    assert!(authorize_error(&url).await.is_some());
    // Launches are for registered launchable apps, asked with the person's own credential.
    let (st, e) = launch(&s, &ehr, &json!({"patient": a, "client_id": "chart"})).await;
    assert_eq!(st, 400, "{e}");
    assert!(e["issue"][0]["diagnostics"].as_str().unwrap().contains("not registered for EHR launch"), "{e}");
    let (st, _) = launch(&s, &ehr, &json!({"patient": a, "client_id": "nobody"})).await;
    assert_eq!(st, 400);
    let (st, e) = launch(&s, &token, &json!({"patient": a, "client_id": "viewer"})).await;
    assert_eq!(st, 403, "an app's OAuth token cannot launch: {e}");
    let (st, _) = launch(&s, "mamori_nonsense", &json!({"patient": a, "client_id": "viewer"})).await;
    assert_eq!(st, 401);

    // Audited: the launch names the person and the patient; the token issue names the patient.
    let rows = s.dir.audit_i64(&format!(
        "SELECT COUNT(*) FROM audit_event WHERE action = 'oauth-launch' AND actor = 'dr.sato' AND outcome = 201 \
         AND patients = '{a}'"
    ));
    assert_eq!(rows, 4);
    assert!(s.dir.audit_i64("SELECT COUNT(*) FROM audit_event WHERE action = 'oauth-launch' AND outcome = 400") >= 1);
    let issued = s.dir.audit_i64(&format!(
        "SELECT COUNT(*) FROM audit_event WHERE action = 'oauth-token' AND actor = 'dr.sato' AND patients = '{a}'"
    ));
    assert_eq!(issued, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth6_staff_cannot_launch_for_a_patient_the_policy_hides() {
    let s = Server::start();
    let open = create_resource(&s, json!({"resourceType": "Patient", "name": [{"family": "Open"}]})).await;
    // A Patient labelled psychiatric: pharmacists may not see it under the default policy.
    let psy = create_resource(
        &s,
        json!({"resourceType": "Patient", "name": [{"family": "Hidden"}],
               "meta": {"security": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "PSY"}]}}),
    )
    .await;
    assert_eq!(add_app(&s.dir, "viewer", "launch patient/*.rs").0, 0);
    let pharmacist = s.dir.user_with_token("ph.mori", "pharmacist");
    assert_eq!(get(&s, &pharmacist, &format!("Patient/{psy}")).await.0, 404, "the policy hides it");

    let (st, e) = launch(&s, &pharmacist, &json!({"patient": psy, "client_id": "viewer"})).await;
    assert_eq!(st, 404, "{e}");
    assert_eq!(e["resourceType"], "OperationOutcome");
    let (st, l) = launch(&s, &pharmacist, &json!({"patient": open, "client_id": "viewer"})).await;
    assert_eq!(st, 201, "{l}");
    // The physician may see both.
    let (st, _) = launch(&s, &s.token, &json!({"patient": psy, "client_id": "viewer"})).await;
    assert_eq!(st, 201);
    // Bad input: a clear OperationOutcome, nothing issued.
    let (st, e) = launch(&s, &pharmacist, &json!({"patient": "no such id!", "client_id": "viewer"})).await;
    assert_eq!((st, e["resourceType"].as_str()), (400, Some("OperationOutcome")), "{e}");
    let (st, e) = launch(&s, &pharmacist, &json!({"patient": open})).await;
    assert_eq!((st, e["resourceType"].as_str()), (400, Some("OperationOutcome")), "{e}");
    let (st, _) = launch(&s, &pharmacist, &json!({"patient": "unknown-patient", "client_id": "viewer"})).await;
    assert_eq!(st, 404);
    // Only the two granted launches exist; the refused reads (the direct one above and the
    // launch's) are audited with the pharmacist.
    assert_eq!(s.dir.query_i64("SELECT COUNT(*) FROM oauth_launch"), 2);
    assert_eq!(s.dir.audit_i64("SELECT COUNT(*) FROM audit_event WHERE action = 'oauth-launch'"), 2);
    let refused = s.dir.audit_i64(&format!(
        "SELECT COUNT(*) FROM audit_event WHERE actor = 'ph.mori' AND action = 'read' AND outcome = 404 \
         AND rid = '{psy}'"
    ));
    assert_eq!(refused, 2);
}

/// Verifies an ID token with the server's published JWK Set (found by `kid`).
fn verify(id_token: &str, jwks: &Value, issuer: &str, client: &str) -> Value {
    let header = jsonwebtoken::decode_header(id_token).unwrap();
    assert_eq!(header.alg, Algorithm::ES256);
    let set: JwkSet = serde_json::from_value(jwks.clone()).unwrap();
    let jwk = set.find(header.kid.as_deref().unwrap()).expect("the kid is published");
    let mut v = Validation::new(Algorithm::ES256);
    v.set_audience(&[client]);
    v.set_issuer(&[issuer]);
    v.set_required_spec_claims(&["exp", "iat", "iss", "aud", "sub"]);
    jsonwebtoken::decode::<Value>(id_token, &DecodingKey::from_jwk(jwk).unwrap(), &v).unwrap().claims
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth6_openid_id_token_verifies_against_jwks_and_names_fhir_user() {
    let (s, root, portal) = server_with_portal();
    let pr = create_resource(&s, json!({"resourceType": "Practitioner", "name": [{"family": "Sato"}]})).await;
    let pa = create_resource(&s, json!({"resourceType": "Patient", "name": [{"family": "Alpha"}]})).await;
    ok(&["user", "add", "--data-dir", s.dir.arg(), "--name", "dr.sato", "--role", "physician", "--practitioner", &pr]);
    ok(&["user", "add", "--data-dir", s.dir.arg(), "--name", "dr.kato", "--role", "physician"]);
    let (code, _, err) = mamori(&[
        "user",
        "add",
        "--data-dir",
        s.dir.arg(),
        "--name",
        "dr.ono",
        "--role",
        "nurse",
        "--practitioner",
        "x",
    ]);
    assert!(code != 0 && err.contains("Practitioner/x"), "a missing Practitioner is refused: {err}");
    assert!(!ok(&["user", "list", "--data-dir", s.dir.arg()]).contains("dr.ono"), "and nothing was added");
    ok(&["patient-account", "add", "--data-dir", s.dir.arg(), "alice", "--patient", &pa]);
    let sato = enrol_totp(&s.dir, &root, "dr.sato").await;
    let kato = enrol_totp(&s.dir, &root, "dr.kato").await;
    let alice = enrol_totp(&s.dir, &portal, "alice").await;
    assert_eq!(add_app(&s.dir, "chart", "user/*.rs openid fhirUser offline_access").0, 0);
    assert_eq!(add_app(&s.dir, "phr", "patient/*.rs launch/patient openid fhirUser").0, 0);

    // Discovery: SMART configuration, CapabilityStatement and OpenID metadata agree.
    let (_, smart) = json(s.http.get(s.url(".well-known/smart-configuration")).send().await.unwrap()).await;
    let has = |v: &Value, x: &str| v.as_array().unwrap().iter().any(|e| e == x);
    for c in ["sso-openid-connect", "launch-ehr", "context-ehr-patient", "launch-standalone", "permission-patient"] {
        assert!(has(&smart["capabilities"], c), "{c}: {smart}");
    }
    assert!(
        !has(&smart["capabilities"], "context-standalone-patient")
            && !has(&smart["capabilities"], "context-ehr-encounter")
    );
    for sc in ["openid", "fhirUser", "launch", "patient/*.rs"] {
        assert!(has(&smart["scopes_supported"], sc), "{sc}: {smart}");
    }
    assert_eq!(smart["jwks_uri"], format!("{root}/oauth/jwks"));
    let (_, oidc) = json(s.http.get(format!("{root}/.well-known/openid-configuration")).send().await.unwrap()).await;
    assert_eq!(
        (oidc["issuer"].as_str(), oidc["jwks_uri"].as_str()),
        (smart["issuer"].as_str(), smart["jwks_uri"].as_str())
    );
    assert!(
        has(&oidc["id_token_signing_alg_values_supported"], "ES256") && has(&oidc["subject_types_supported"], "public")
    );
    let (_, cap) = get(&s, &s.token, "metadata").await;
    let codes: Vec<&str> = cap["rest"][0]["security"]["extension"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["valueCode"].as_str())
        .collect();
    assert!(codes.contains(&"launch-ehr") && codes.contains(&"sso-openid-connect"), "{codes:?}");
    let (_, pd) =
        json(s.http.get(format!("{portal}/fhir/.well-known/smart-configuration")).send().await.unwrap()).await;
    assert!(has(&pd["capabilities"], "sso-openid-connect") && !has(&pd["capabilities"], "launch-ehr"), "{pd}");
    assert!(has(&pd["scopes_supported"], "launch/patient"), "{pd}");
    let (_, jwks) = json(s.http.get(format!("{root}/oauth/jwks")).send().await.unwrap()).await;
    let key = &jwks["keys"][0];
    assert_eq!(
        (key["kty"].as_str(), key["crv"].as_str(), key["alg"].as_str()),
        (Some("EC"), Some("P-256"), Some("ES256"))
    );
    assert!(key.get("d").is_none(), "no private part: {jwks}");

    // A staff app with openid fhirUser: the ID token verifies and names the Practitioner.
    let extra = [("nonce", "n-0S6_WzA2Mj")];
    let t = app_token(
        &root,
        "chart",
        "user/*.rs openid fhirUser offline_access",
        &extra,
        "dr.sato",
        Factor::Totp(&sato.0, unix_now() + 30),
    )
    .await;
    assert_eq!(t["scope"], "user/*.rs openid fhirUser offline_access");
    let claims = verify(t["id_token"].as_str().expect("an ID token"), &jwks, &root, "chart");
    assert_eq!(claims["sub"], "dr.sato");
    assert_eq!(claims["fhirUser"], format!("{root}/fhir/Practitioner/{pr}"));
    assert_eq!(claims["nonce"], "n-0S6_WzA2Mj");
    assert_eq!(claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap(), 300);
    // The same token does not verify for another audience.
    let mut v = Validation::new(Algorithm::ES256);
    v.set_audience(&["someone-else"]);
    let set: JwkSet = serde_json::from_value(jwks.clone()).unwrap();
    let dk = DecodingKey::from_jwk(&set.keys[0]).unwrap();
    assert!(jsonwebtoken::decode::<Value>(t["id_token"].as_str().unwrap(), &dk, &v).is_err());
    // A refresh returns no ID token (OpenID Connect Core §12.2 allows leaving it out).
    let rt = t["refresh_token"].as_str().unwrap();
    let (st, r) =
        token_at(&root, &[("grant_type", "refresh_token"), ("client_id", "chart"), ("refresh_token", rt)]).await;
    assert_eq!(st, 200, "{r}");
    assert!(r.get("id_token").is_none(), "{r}");

    // No openid asked: no ID token. An account without a Practitioner: no fhirUser claim.
    let t = app_token(&root, "chart", "user/*.rs", &[], "dr.sato", Factor::Recovery(&sato.1[0])).await;
    assert!(t.get("id_token").is_none(), "{t}");
    let t = app_token(&root, "chart", "openid fhirUser", &[], "dr.kato", Factor::Totp(&kato.0, unix_now() + 30)).await;
    let claims = verify(t["id_token"].as_str().unwrap(), &jwks, &root, "chart");
    assert_eq!(claims["sub"], "dr.kato");
    assert!(claims.get("fhirUser").is_none() && claims.get("nonce").is_none(), "{claims}");
    // Linking the account later adds it.
    ok(&["user", "practitioner", "--data-dir", s.dir.arg(), "dr.kato", &pr]);
    let t = app_token(&root, "chart", "openid fhirUser", &[], "dr.kato", Factor::Recovery(&kato.1[0])).await;
    let claims = verify(t["id_token"].as_str().unwrap(), &jwks, &root, "chart");
    assert_eq!(claims["fhirUser"], format!("{root}/fhir/Practitioner/{pr}"));

    // A patient's app at the patient interface: launch/patient, the issuer there, fhirUser = Patient.
    let t = app_token(
        &portal,
        "phr",
        "launch/patient patient/*.rs openid fhirUser",
        &[("nonce", "p1")],
        "alice",
        Factor::Totp(&alice.0, unix_now() + 30),
    )
    .await;
    assert_eq!(t["patient"], pa.as_str());
    let claims = verify(t["id_token"].as_str().unwrap(), &jwks, &portal, "phr");
    assert_eq!(claims["fhirUser"], format!("{portal}/fhir/Patient/{pa}"));
    assert_eq!((claims["sub"].as_str(), claims["nonce"].as_str()), (Some("alice"), Some("p1")));

    // The signing key is generated once, kept sealed, and survives a restart.
    let kid = key["kid"].as_str().unwrap().to_string();
    let token = s.token.clone();
    let dir = s.stop();
    assert_eq!(dir.audit_i64("SELECT COUNT(*) FROM audit_event WHERE action = 'server-key-create'"), 1);
    assert_eq!(
        dir.query_i64("SELECT COUNT(*) FROM server_key WHERE name = 'oidc-signing' AND length(sealed) > 100"),
        1
    );
    assert_eq!(dir.audit_i64("SELECT COUNT(*) FROM audit_event WHERE action = 'practitioner-link'"), 1);
    let (s, _) = Server::start_with(dir, token, &["--dev"], 2);
    let (_, jwks) = json(s.http.get(format!("{}/oauth/jwks", support::root(&s))).send().await.unwrap()).await;
    assert_eq!(jwks["keys"][0]["kid"].as_str(), Some(kid.as_str()));
    assert_eq!(s.dir.audit_i64("SELECT COUNT(*) FROM audit_event WHERE action = 'server-key-create'"), 1);
}
