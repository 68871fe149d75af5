//! OAuth 2.0 / SMART on FHIR (AUTH-6) end to end with the real binary and no browser: the test
//! reads the sign-in page's HTML form, posts it like a browser (form token and cookie), follows
//! the redirect to the app, exchanges the code with its PKCE verifier and calls /fhir with the
//! token. TOTP codes are computed here independently (RFC 6238); client assertions are signed
//! with a P-384 key generated here. Expiry on the injected clock is proven in
//! `crates/store/tests/oauth.rs`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "support/oauth_page.rs"]
mod oauth_page;
mod support;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use oauth_page::*;
use serde_json::{Value, json};
use sha2::Digest;
use support::*;

async fn post_json(s: &Server, path: &str, body: &Value) -> Value {
    let r = s.http.post(format!("{}{path}", root(s))).json(body).send().await.unwrap();
    json(r).await.1
}

/// A person with a chosen password and an active TOTP; returns the TOTP secret and recovery codes.
async fn enrolled(s: &Server, name: &str, role: &str, password: &str) -> (Vec<u8>, Vec<String>) {
    ok(&["user", "add", "--data-dir", s.dir.arg(), "--name", name, "--role", role]);
    assert_eq!(set_password(&s.dir, name, "Initial-Pass-9876!").0, 0);
    let r = post_json(s, "/auth/login", &json!({"account": name, "password": "Initial-Pass-9876!"})).await;
    let t = r["password_ticket"].as_str().unwrap().to_string();
    post_json(s, "/auth/password", &json!({"password_ticket": t, "new_password": password})).await;
    let r = post_json(s, "/auth/login", &json!({"account": name, "password": password})).await;
    let enrol = r["enrol_ticket"].as_str().unwrap().to_string();
    let r = post_json(s, "/auth/totp", &json!({"enrol_ticket": enrol})).await;
    let secret = base32_decode(r["secret"].as_str().unwrap());
    let r =
        post_json(s, "/auth/totp/confirm", &json!({"enrol_ticket": enrol, "code": totp(&secret, unix_now())})).await;
    assert_eq!(r["status"], "second-factor-active", "{r}");
    let out = ok(&["user", "recovery-codes", "--data-dir", s.dir.arg(), name]);
    let codes = out.lines().map(str::trim).filter(|l| l.len() == 19).map(str::to_string).collect();
    (secret, codes)
}

fn authorize_url(s: &Server, client: &str, redirect: &str, scope: &str, challenge: &str, method: &str) -> String {
    let q: String = form_urlencoded::Serializer::new(String::new())
        .append_pair("response_type", "code")
        .append_pair("client_id", client)
        .append_pair("redirect_uri", redirect)
        .append_pair("scope", scope)
        .append_pair("state", "st-42")
        .append_pair("aud", &s.base)
        .append_pair("code_challenge", challenge)
        .append_pair("code_challenge_method", method)
        .finish();
    format!("{}/oauth/authorize?{q}", root(s))
}

/// Signs in on the page like a browser and returns the redirect's query parameters.
async fn sign_in(s: &Server, url: &str, account: &str, password: &str, factor: Factor<'_>) -> Vec<(String, String)> {
    sign_in_with(&no_redirects(), &root(s), url, account, password, factor).await
}

async fn token(s: &Server, form: &[(&str, &str)]) -> (u16, Value) {
    json(s.http.post(format!("{}/oauth/token", root(s))).form_(form).send().await.unwrap()).await
}

async fn exchange(s: &Server, code: &str, verifier: &str) -> (u16, Value) {
    token(
        s,
        &[
            ("grant_type", "authorization_code"),
            ("client_id", "chart"),
            ("code", code),
            ("redirect_uri", REDIRECT),
            ("code_verifier", verifier),
        ],
    )
    .await
}

async fn status(s: &Server, path: &str, bearer: &str) -> u16 {
    s.http.get(s.url(path)).bearer_auth(bearer).send().await.unwrap().status().as_u16()
}

/// A Patient and an Observation about them, created with the physician's API token.
async fn chart(s: &Server) -> (String, String) {
    let (_, p) =
        json(s.post_json("Patient", &json!({"resourceType": "Patient", "gender": "female"})).send().await.unwrap())
            .await;
    let pid = p["id"].as_str().unwrap().to_string();
    let obs = json!({"resourceType": "Observation", "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]},
        "subject": {"reference": format!("Patient/{pid}")}});
    let (_, o) = json(s.post_json("Observation", &obs).send().await.unwrap()).await;
    (pid, o["id"].as_str().unwrap().to_string())
}

fn register_app(s: &Server) {
    ok(&[
        "client",
        "add",
        "--data-dir",
        s.dir.arg(),
        "--id",
        "chart",
        "--name",
        "Chart <viewer>",
        "--scope",
        "user/*.cruds offline_access",
        "--redirect-uri",
        REDIRECT,
    ]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth6_code_pkce_totp_flow_and_scopes_narrow_every_path() {
    let s = Server::start();
    let (pid, oid) = chart(&s).await;
    register_app(&s);
    let (secret, codes) = enrolled(&s, "dr.sato", "physician", "Hakone-Maple-42-River").await;

    let (verifier, challenge) = pkce();
    let url = authorize_url(&s, "chart", REDIRECT, "user/Patient.rs offline_access", &challenge, "S256");
    let p = sign_in(&s, &url, "dr.sato", "Hakone-Maple-42-River", Factor::Totp(&secret, unix_now() + 30)).await;
    assert_eq!(param(&p, "state"), Some("st-42"));
    let code = param(&p, "code").unwrap().to_string();
    let (st, t) = exchange(&s, &code, &verifier).await;
    assert_eq!(st, 200, "{t}");
    assert_eq!(t["token_type"], "Bearer");
    assert_eq!(t["expires_in"], 300);
    assert_eq!(t["scope"], "user/Patient.rs offline_access");
    let access = t["access_token"].as_str().unwrap().to_string();
    assert!(t["refresh_token"].as_str().is_some());

    // The token reads Patients and nothing else, by any path.
    assert_eq!(status(&s, &format!("Patient/{pid}"), &access).await, 200);
    assert_eq!(status(&s, &format!("Observation/{oid}"), &access).await, 403);
    assert_eq!(status(&s, "Observation", &access).await, 403);
    assert_eq!(status(&s, &format!("Patient/{pid}/Observation"), &access).await, 403);
    let get = |path: String| {
        let (s, a) = (&s, access.clone());
        async move { json(s.http.get(s.url(&path)).bearer_auth(a).send().await.unwrap()).await }
    };
    let types = |b: &Value| -> Vec<String> {
        b["entry"]
            .as_array()
            .map(|e| e.iter().map(|x| x["resource"]["resourceType"].as_str().unwrap().to_string()).collect())
            .unwrap_or_default()
    };
    let (st, b) = get(format!("Patient?_id={pid}&_revinclude=Observation:subject")).await;
    assert_eq!((st, types(&b)), (200, vec!["Patient".to_string()]), "{b}");
    let (_, b) = get(format!("Patient/{pid}/$everything")).await;
    assert_eq!(types(&b), vec!["Patient".to_string()], "{b}");
    let (_, b) = get("Patient?_has:Observation:subject:status=final".into()).await;
    assert_eq!(b["total"], 0, "_has cannot probe Observations: {b}");
    let (_, b) = json(s.get("Patient?_has:Observation:subject:status=final").send().await.unwrap()).await;
    assert_eq!(b["total"], 1, "the API token (no scopes) sees the same Patient: {b}");
    let (_, b) = get(format!("Observation?subject={pid}")).await;
    assert_eq!(b["resourceType"], "OperationOutcome");
    // Writes, Bundles and administration are out of scope.
    let obs = json!({"resourceType": "Observation", "status": "final", "code": {"text": "x"}});
    let r = s
        .http
        .post(s.url("Observation"))
        .bearer_auth(&access)
        .header("content-type", "application/fhir+json")
        .body(obs.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 403);
    let bundle = json!({"resourceType": "Bundle", "type": "batch", "entry": [{"request": {"method": "GET", "url": format!("Observation/{oid}")}}]});
    let r = s
        .http
        .post(s.url(""))
        .bearer_auth(&access)
        .header("content-type", "application/fhir+json")
        .body(bundle.to_string())
        .send()
        .await
        .unwrap();
    // Each entry is decided as its single request would be (per-entry Bundle decisions): a
    // Patient-only token may not read Observations.
    assert_eq!(r.status().as_u16(), 200, "a batch of reads is decided entry by entry");
    let b: Value = r.json().await.unwrap();
    assert_eq!(b["entry"][0]["response"]["status"].as_str().unwrap_or("").split(' ').next(), Some("403"), "{b}");
    let r = s.http.get(format!("{}/admin/status", root(&s))).bearer_auth(&access).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 403);

    // The audit trail names the person and the app for every access.
    let reads = s.dir.audit_i64(
        "SELECT count(*) FROM audit_event WHERE action = 'read' AND actor = 'dr.sato' AND detail LIKE '%client: chart%'",
    );
    assert!(reads >= 1);

    // AUTH-6: a code is single-use; a replay revokes what it was exchanged for.
    let (st, r) = exchange(&s, &code, &verifier).await;
    assert_eq!((st, r["error"].as_str()), (400, Some("invalid_grant")), "{r}");
    assert_eq!(status(&s, &format!("Patient/{pid}"), &access).await, 401);

    // A wider token, through a Bundle: the entries are narrowed one by one.
    let (verifier, challenge) = pkce();
    let url = authorize_url(&s, "chart", REDIRECT, "user/Patient.cruds offline_access", &challenge, "S256");
    let p = sign_in(&s, &url, "dr.sato", "Hakone-Maple-42-River", Factor::Recovery(&codes[0])).await;
    let (_, t) = exchange(&s, param(&p, "code").unwrap(), &verifier).await;
    let access = t["access_token"].as_str().unwrap().to_string();
    let bundle = json!({"resourceType": "Bundle", "type": "batch", "entry": [
        {"request": {"method": "GET", "url": format!("Observation/{oid}")}},
        {"request": {"method": "GET", "url": format!("Patient?_id={pid}&_revinclude=Observation:subject")}},
        {"request": {"method": "POST", "url": "Observation"}, "resource": obs}
    ]});
    let (st, b) = json(
        s.http
            .post(s.url(""))
            .bearer_auth(&access)
            .header("content-type", "application/fhir+json")
            .body(bundle.to_string())
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(st, 200, "{b}");
    let e = b["entry"].as_array().unwrap();
    // As the single request would answer: the scopes do not let this token read Observations.
    assert!(e[0]["response"]["status"].as_str().unwrap().starts_with("403"), "{b}");
    assert_eq!(types(&e[1]["resource"]), vec!["Patient".to_string()], "{b}");
    assert!(e[2]["response"]["status"].as_str().unwrap().starts_with("403"), "{b}");

    // Refresh with rotation; reuse of a rotated refresh token revokes the whole family.
    let r1 = t["refresh_token"].as_str().unwrap().to_string();
    let (st, t2) = token(&s, &[("grant_type", "refresh_token"), ("client_id", "chart"), ("refresh_token", &r1)]).await;
    assert_eq!(st, 200, "{t2}");
    let (a2, r2) =
        (t2["access_token"].as_str().unwrap().to_string(), t2["refresh_token"].as_str().unwrap().to_string());
    assert_ne!(r1, r2);
    assert_eq!(status(&s, &format!("Patient/{pid}"), &a2).await, 200);
    let (st, t3) = token(
        &s,
        &[("grant_type", "refresh_token"), ("client_id", "chart"), ("refresh_token", &r2), ("scope", "user/*.cruds")],
    )
    .await;
    assert_eq!((st, t3["error"].as_str()), (400, Some("invalid_scope")), "a refresh cannot widen: {t3}");
    let (st, r) = token(&s, &[("grant_type", "refresh_token"), ("client_id", "chart"), ("refresh_token", &r1)]).await;
    assert_eq!((st, r["error"].as_str()), (400, Some("invalid_grant")), "{r}");
    assert_eq!(status(&s, &format!("Patient/{pid}"), &a2).await, 401, "the family is revoked");
    let (st, _) = token(&s, &[("grant_type", "refresh_token"), ("client_id", "chart"), ("refresh_token", &r2)]).await;
    assert_eq!(st, 400);

    // Revocation (RFC 7009): a refresh token takes its access tokens with it.
    let (verifier, challenge) = pkce();
    let url = authorize_url(&s, "chart", REDIRECT, "user/Patient.rs offline_access", &challenge, "S256");
    let p = sign_in(&s, &url, "dr.sato", "Hakone-Maple-42-River", Factor::Recovery(&codes[1])).await;
    let (_, t) = exchange(&s, param(&p, "code").unwrap(), &verifier).await;
    let access = t["access_token"].as_str().unwrap().to_string();
    assert_eq!(status(&s, &format!("Patient/{pid}"), &access).await, 200);
    let r = s
        .http
        .post(format!("{}/oauth/revoke", root(&s)))
        .form_(&[("token", t["refresh_token"].as_str().unwrap()), ("client_id", "chart")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    assert_eq!(status(&s, &format!("Patient/{pid}"), &access).await, 401);

    // PKCE: a wrong verifier spends the code; the right one afterwards is refused too.
    let (verifier, challenge) = pkce();
    let url = authorize_url(&s, "chart", REDIRECT, "user/Patient.rs", &challenge, "S256");
    let p = sign_in(&s, &url, "dr.sato", "Hakone-Maple-42-River", Factor::Recovery(&codes[2])).await;
    let code = param(&p, "code").unwrap().to_string();
    let (other, _) = pkce();
    let (st, r) = exchange(&s, &code, &other).await;
    assert_eq!((st, r["error"].as_str()), (400, Some("invalid_grant")));
    let (st, _) = exchange(&s, &code, &verifier).await;
    assert_eq!(st, 400);

    // Disabling the account ends its apps' tokens at once.
    let (verifier, challenge) = pkce();
    let url = authorize_url(&s, "chart", REDIRECT, "user/Patient.rs", &challenge, "S256");
    let p = sign_in(&s, &url, "dr.sato", "Hakone-Maple-42-River", Factor::Recovery(&codes[3])).await;
    let (_, t) = exchange(&s, param(&p, "code").unwrap(), &verifier).await;
    let access = t["access_token"].as_str().unwrap().to_string();
    assert!(t.get("refresh_token").is_none(), "no offline_access, no refresh token");
    assert_eq!(status(&s, &format!("Patient/{pid}"), &access).await, 200);
    ok(&["user", "disable", "--data-dir", s.dir.arg(), "dr.sato"]);
    assert_eq!(status(&s, &format!("Patient/{pid}"), &access).await, 401);

    let dir = s.stop();
    let n = |a: &str| dir.audit_i64(&format!("SELECT count(*) FROM audit_event WHERE action = '{a}'"));
    assert!(n("oauth-client-register") == 1);
    assert_eq!(n("oauth-authorize"), 5, "five codes issued");
    assert_eq!(n("oauth-token"), 4, "four exchanges succeeded (the wrong verifier did not)");
    assert_eq!(n("oauth-refresh"), 1);
    assert_eq!(n("oauth-revoke"), 3, "code replay, refresh reuse and revocation");
    assert!(n("oauth-failure") >= 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth6_authorize_request_errors_pkce_required_and_redirect_uri_exact() {
    let s = Server::start();
    register_app(&s);
    let http = no_redirects();
    let (_, challenge) = pkce();
    // An unregistered redirect URI is never redirected to.
    let url = authorize_url(&s, "chart", "http://127.0.0.1:9/evil", "user/*.rs", &challenge, "S256");
    let r = http.get(url).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 400);
    assert!(r.headers().get("location").is_none());
    let url = authorize_url(&s, "nobody", REDIRECT, "user/*.rs", &challenge, "S256");
    let r = http.get(url).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 400);
    assert!(r.headers().get("location").is_none());
    // Everything else goes back to the app (RFC 6749 §4.1.2.1) with the state.
    for (scope, ch, method, error) in [
        ("user/*.rs", challenge.as_str(), "plain", "invalid_request"),
        ("user/*.rs", "", "S256", "invalid_request"),
        ("user/Nonsense.rs", challenge.as_str(), "S256", "invalid_scope"),
        ("patient/*.rs", challenge.as_str(), "S256", "invalid_scope"),
        ("system/*.rs", challenge.as_str(), "S256", "invalid_scope"),
    ] {
        let r = http.get(authorize_url(&s, "chart", REDIRECT, scope, ch, method)).send().await.unwrap();
        assert_eq!(r.status().as_u16(), 303, "{scope} {method}");
        let p = redirect_params(&r);
        assert_eq!(param(&p, "error"), Some(error), "{scope} {method}");
        assert_eq!(param(&p, "state"), Some("st-42"));
    }
    // The page escapes what it shows and refuses a post without the matching cookie (CSRF).
    let r = http.get(authorize_url(&s, "chart", REDIRECT, "user/*.rs", &challenge, "S256")).send().await.unwrap();
    let html = r.text().await.unwrap();
    assert!(html.contains("Chart &lt;viewer&gt;") && !html.contains("<viewer>"), "{html}");
    let ft = form_token(&html);
    let r = http
        .post(format!("{}/oauth/authorize", root(&s)))
        .form_(&[("form_token", ft.as_str()), ("step", "password"), ("account", "x"), ("password", "y")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 403);
    // Wrong password: the same "invalid credentials" page, and the attempt counts (audited).
    ok(&["user", "add", "--data-dir", s.dir.arg(), "--name", "nurse.kato", "--role", "nurse"]);
    let r = http.get(authorize_url(&s, "chart", REDIRECT, "user/*.rs", &challenge, "S256")).send().await.unwrap();
    let cookie = set_cookie(&r);
    let ft = form_token(&r.text().await.unwrap());
    let r = http
        .post(format!("{}/oauth/authorize", root(&s)))
        .header("cookie", cookie)
        .form_(&[
            ("form_token", ft.as_str()),
            ("step", "password"),
            ("account", "nurse.kato"),
            ("password", "wrong-wrong-wrong"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);
    assert!(r.text().await.unwrap().contains("Invalid credentials"));
    let failures = s
        .dir
        .audit_i64("SELECT count(*) FROM audit_event WHERE action = 'login-failure' AND detail LIKE '%client: chart%'");
    assert_eq!(failures, 1);
    // Token endpoint errors are RFC 6749 §5.2 JSON.
    let (st, r) = token(&s, &[("grant_type", "password")]).await;
    assert_eq!((st, r["error"].as_str()), (400, Some("unsupported_grant_type")));
    let (st, r) = token(
        &s,
        &[("grant_type", "authorization_code"), ("client_id", "nobody"), ("code", "x"), ("redirect_uri", REDIRECT)],
    )
    .await;
    assert_eq!((st, r["error"].as_str()), (401, Some("invalid_client")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth6_clerk_with_every_scope_gets_only_what_the_clerk_policy_allows() {
    let s = Server::start();
    let (pid, oid) = chart(&s).await;
    register_app(&s);
    let (secret, _) = enrolled(&s, "clerk.ito", "clerk", "Kyoto-Lantern-77-Bridge").await;
    let (verifier, challenge) = pkce();
    let url = authorize_url(&s, "chart", REDIRECT, "user/*.cruds", &challenge, "S256");
    let p = sign_in(&s, &url, "clerk.ito", "Kyoto-Lantern-77-Bridge", Factor::Totp(&secret, unix_now() + 30)).await;
    let (st, t) = exchange(&s, param(&p, "code").unwrap(), &verifier).await;
    assert_eq!(st, 200, "{t}");
    let access = t["access_token"].as_str().unwrap().to_string();
    assert_eq!(status(&s, &format!("Patient/{pid}"), &access).await, 200, "administrative data: the clerk's policy");
    assert_eq!(status(&s, &format!("Observation/{oid}"), &access).await, 404, "clinical data stays invisible");
    let (_, b) = json(s.http.get(s.url("Observation")).bearer_auth(&access).send().await.unwrap()).await;
    assert_eq!(b["total"], 0, "{b}");
}

fn p384_key() -> (rcgen::KeyPair, Value) {
    let kp = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384).unwrap();
    let raw = kp.public_key_raw().to_vec();
    assert_eq!(raw.len(), 97);
    let jwk = json!({"kty": "EC", "crv": "P-384", "kid": "k1", "alg": "ES384", "use": "sig",
        "x": URL_SAFE_NO_PAD.encode(&raw[1..49]), "y": URL_SAFE_NO_PAD.encode(&raw[49..])});
    (kp, jwk)
}

fn assertion(kp: &rcgen::KeyPair, client: &str, aud: &str, exp: u64, jti: &str) -> String {
    let mut h = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES384);
    h.kid = Some("k1".into());
    let claims = json!({"iss": client, "sub": client, "aud": aud, "exp": exp, "jti": jti});
    jsonwebtoken::encode(&h, &claims, &jsonwebtoken::EncodingKey::from_ec_der(&kp.serialize_der())).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth6_backend_service_private_key_jwt() {
    let s = Server::start();
    let (_, oid) = chart(&s).await;
    let (kp, jwk) = p384_key();
    let jwks = s.dir.path.join("lab-jwks.json");
    std::fs::write(&jwks, json!({"keys": [jwk]}).to_string()).unwrap();
    ok(&[
        "client",
        "add",
        "--data-dir",
        s.dir.arg(),
        "--id",
        "lab",
        "--name",
        "Lab feed",
        "--scope",
        "system/Observation.rs system/Patient.rs",
        "--jwks",
        jwks.to_str().unwrap(),
        "--role",
        "nurse",
    ]);
    let listed = ok(&["client", "list", "--data-dir", s.dir.arg()]);
    assert!(listed.contains("lab\tsystem\tLab feed"), "{listed}");
    let aud = format!("{}/oauth/token", root(&s));
    let now = unix_now();
    let cc = |a: String| {
        let s = &s;
        async move {
            token(
                s,
                &[
                    ("grant_type", "client_credentials"),
                    ("scope", "system/Observation.rs system/Observation.c"),
                    ("client_assertion_type", "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"),
                    ("client_assertion", &a),
                ],
            )
            .await
        }
    };
    let good = assertion(&kp, "lab", &aud, now + 120, "jti-1");
    let (st, t) = cc(good.clone()).await;
    assert_eq!(st, 200, "{t}");
    assert_eq!(t["scope"], "system/Observation.rs", "requested ∩ registered");
    assert!(t.get("refresh_token").is_none());
    let access = t["access_token"].as_str().unwrap().to_string();
    assert_eq!(status(&s, &format!("Observation/{oid}"), &access).await, 200);
    let r = s
        .http
        .post(s.url("Observation"))
        .bearer_auth(&access)
        .header("content-type", "application/fhir+json")
        .body(json!({"resourceType": "Observation", "status": "final", "code": {"text": "x"}}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 403);
    let by_client = s.dir.audit_i64(
        "SELECT count(*) FROM audit_event WHERE action = 'read' AND actor = 'client:lab' AND role = 'nurse' AND detail LIKE '%client: lab%'",
    );
    assert_eq!(by_client, 1);

    let (other, _) = p384_key();
    for (a, why) in [
        (good, "replayed jti"),
        (assertion(&other, "lab", &aud, now + 120, "jti-2"), "wrong key"),
        (assertion(&kp, "lab", &aud, now - 10, "jti-3"), "expired"),
        (assertion(&kp, "lab", "https://elsewhere.example/oauth/token", now + 120, "jti-4"), "wrong aud"),
        (assertion(&kp, "lab", &aud, now + 3600, "jti-5"), "too long"),
    ] {
        let (st, r) = cc(a).await;
        assert_eq!((st, r["error"].as_str()), (401, Some("invalid_client")), "{why}: {r}");
    }
    let failures = s
        .dir
        .audit_i64("SELECT count(*) FROM audit_event WHERE action = 'oauth-failure' AND detail LIKE '%client: lab%'");
    assert_eq!(failures, 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth6_smart_configuration_and_capability_statement() {
    let s = Server::start();
    let (st, c) = json(s.http.get(s.url(".well-known/smart-configuration")).send().await.unwrap()).await;
    assert_eq!(st, 200, "public, no token");
    let r = root(&s);
    assert_eq!(c["issuer"], r);
    assert_eq!(c["authorization_endpoint"], format!("{r}/oauth/authorize"));
    assert_eq!(c["token_endpoint"], format!("{r}/oauth/token"));
    assert_eq!(c["revocation_endpoint"], format!("{r}/oauth/revoke"));
    assert_eq!(c["code_challenge_methods_supported"], json!(["S256"]));
    assert_eq!(c["token_endpoint_auth_methods_supported"], json!(["none", "private_key_jwt"]));
    let caps: Vec<&str> = c["capabilities"].as_array().unwrap().iter().map(|v| v.as_str().unwrap()).collect();
    assert!(caps.contains(&"launch-standalone") && caps.contains(&"client-confidential-asymmetric"));
    // EHR launch and OpenID Connect are listed since they work (smart_launch.rs); nothing else.
    assert!(caps.contains(&"launch-ehr") && caps.contains(&"sso-openid-connect"), "{caps:?}");
    assert!(
        !caps.contains(&"context-ehr-encounter") && !caps.contains(&"context-standalone-patient"),
        "only what works"
    );
    let (_, cap) = json(s.get("metadata").send().await.unwrap()).await;
    let ext = &cap["rest"][0]["security"]["extension"][0];
    assert_eq!(ext["url"], "http://fhir-registry.smarthealthit.org/StructureDefinition/oauth-uris");
    assert_eq!(ext["extension"][1]["valueUri"], format!("{r}/oauth/token"));
}

// ---- WebAuthn on the sign-in page (AUTH-2 with AUTH-6) -----------------------------------------

/// The text between `open` and the next `</script>`.
fn element<'a>(html: &'a str, open: &str) -> &'a str {
    let at = html.find(open).unwrap_or_else(|| panic!("{open} in {html}")) + open.len();
    html[at..].split("</script>").next().unwrap()
}

/// What the browser has after the password step: the cookie, the form token, the embedded
/// WebAuthn request options, and the page's CSP.
struct SecondFactorPage {
    cookie: String,
    form_token: String,
    options: Value,
    csp: String,
    html: String,
}

async fn second_factor_page(s: &Server, url: &str, account: &str, password: &str) -> SecondFactorPage {
    let resp = password_step(&root(s), url, account, password).await;
    assert_eq!(resp.status().as_u16(), 200);
    let csp = resp.headers()["content-security-policy"].to_str().unwrap().to_string();
    let cookie = set_cookie(&resp);
    let html = resp.text().await.unwrap();
    let options: Value =
        serde_json::from_str(element(&html, "<script type=\"application/json\" id=\"webauthn-options\">")).unwrap();
    SecondFactorPage { cookie, form_token: form_token(&html), options, csp, html }
}

/// Posts the WebAuthn form as the page's script would: the assertion JSON in the hidden field.
async fn post_assertion(s: &Server, page: &SecondFactorPage, assertion: &str) -> reqwest::Response {
    no_redirects()
        .post(format!("{}/oauth/authorize", root(s)))
        .header("cookie", &page.cookie)
        .form_(&[
            ("form_token", page.form_token.as_str()),
            ("step", "second-factor"),
            ("method", "webauthn"),
            ("assertion", assertion),
        ])
        .send()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth2_auth6_code_pkce_flow_with_a_webauthn_software_authenticator() {
    use support::authenticator::{Authenticator, b64, unb64};
    const PASSWORD: &str = "Hakone-Maple-42-River";
    let s = server_with_webauthn("");
    let (pid, oid) = chart(&s).await;
    register_app(&s);
    // TOTP first, then a security key added with the session that TOTP opened (JSON API).
    let (secret, _) = enrolled(&s, "dr.sato", "physician", PASSWORD).await;
    let r = post_json(&s, "/auth/login", &json!({"account": "dr.sato", "password": PASSWORD})).await;
    let mfa = r["mfa_ticket"].as_str().unwrap();
    let r =
        post_json(&s, "/auth/login/second-factor", &json!({"mfa_ticket": mfa, "totp": totp(&secret, unix_now() + 30)}))
            .await;
    let session = r["access_token"].as_str().unwrap().to_string();
    let mut key = Authenticator::es256(7);
    let reg = |path: &str, body: Value| {
        let (s, session, path) = (&s, session.clone(), path.to_string());
        async move {
            json(s.http.post(format!("{}{path}", root(s))).bearer_auth(session).json(&body).send().await.unwrap()).await
        }
    };
    let (st, options) = reg("/auth/webauthn/register", json!({"label": "YubiKey"})).await;
    assert_eq!(st, 200, "{options}");
    let (st, r) = reg("/auth/webauthn/register/finish", json!({"credential": key.create_json(&options)})).await;
    assert_eq!(st, 200, "{r}");

    // The page after the password: WebAuthn beside TOTP and the recovery code, its options bound
    // to this sign-in, its one script allowed by hash and never by 'unsafe-inline'.
    let (verifier, challenge) = pkce();
    let url = authorize_url(&s, "chart", REDIRECT, "user/Patient.rs", &challenge, "S256");
    let page = second_factor_page(&s, &url, "dr.sato", PASSWORD).await;
    for method in ["webauthn", "totp", "recovery_code"] {
        assert!(page.html.contains(&format!("name=\"method\" value=\"{method}\"")), "{method}: {}", page.html);
    }
    assert!(page.html.contains("id=\"webauthn-form\" hidden"), "shown only by the script: {}", page.html);
    assert!(!page.csp.contains("unsafe-inline") && !page.csp.contains("unsafe-eval"), "{}", page.csp);
    let script = element(&page.html, "<script>");
    let hash = format!("'sha256-{}'", base64::engine::general_purpose::STANDARD.encode(sha2::Sha256::digest(script)));
    assert!(page.csp.contains(&format!("script-src {hash}")), "{} vs {hash}", page.csp);
    assert!(page.csp.starts_with("default-src 'none'"), "{}", page.csp);
    assert_eq!(page.html.matches("<script>").count(), 1, "one executable script");
    let pk = &page.options["publicKey"];
    assert_eq!(pk["rpId"], "emr.example.jp");
    assert_eq!(pk["allowCredentials"][0]["id"], json!(b64(&key.credential_id)));
    assert_eq!(unb64(pk["challenge"].as_str().unwrap()).len(), 32, "{pk}");

    // The software authenticator answers; the form goes back with the CSRF token; the code
    // comes, is exchanged with the verifier, and the token reads the chart within its scope.
    let good = key.get_json(&page.options).to_string();
    let resp = post_assertion(&s, &page, &good).await;
    assert_eq!(resp.status().as_u16(), 303, "{:?}", resp.text().await);
    let p = redirect_params(&resp);
    assert_eq!(param(&p, "state"), Some("st-42"));
    let (st, t) = exchange(&s, param(&p, "code").unwrap(), &verifier).await;
    assert_eq!(st, 200, "{t}");
    let access = t["access_token"].as_str().unwrap().to_string();
    assert_eq!(status(&s, &format!("Patient/{pid}"), &access).await, 200);
    assert_eq!(status(&s, &format!("Observation/{oid}"), &access).await, 403, "scope still narrows");

    // A bad signature, the wrong origin, a replayed assertion and a field that is no assertion:
    // the same answer each time, no code, all audited.
    let flip = |v: Value| {
        let mut v = v;
        let mut sig = unb64(v["response"]["signature"].as_str().unwrap());
        let last = sig.len() - 1;
        sig[last] ^= 1;
        v["response"]["signature"] = json!(b64(&sig));
        v.to_string()
    };
    for case in ["bad-signature", "wrong-origin", "replay", "malformed"] {
        let page = second_factor_page(&s, &url, "dr.sato", PASSWORD).await;
        let assertion = match case {
            "bad-signature" => flip(key.get_json(&page.options)),
            "wrong-origin" => {
                key.origin = "https://evil.example".into();
                let a = key.get_json(&page.options).to_string();
                key.origin = "https://emr.example.jp".into();
                a
            }
            "replay" => good.clone(),
            _ => "{\"id\": \"AA\"}".to_string(),
        };
        let resp = post_assertion(&s, &page, &assertion).await;
        assert_eq!(resp.status().as_u16(), 401, "{case}");
        assert!(resp.headers().get("location").is_none(), "{case}");
        assert!(!resp.headers()["content-security-policy"].to_str().unwrap().contains("unsafe-inline"));
        let html = resp.text().await.unwrap();
        assert!(html.contains("Invalid credentials"), "{case}: {html}");
        assert!(html.contains("name=\"step\" value=\"password\""), "{case}: back to the start");
    }
    // The same key still works afterwards (the refusals changed nothing it relies on).
    let page = second_factor_page(&s, &url, "dr.sato", PASSWORD).await;
    let resp = post_assertion(&s, &page, &key.get_json(&page.options).to_string()).await;
    assert_eq!(resp.status().as_u16(), 303);

    let n = |sql: &str| s.dir.audit_i64(sql);
    assert_eq!(n("SELECT count(*) FROM audit_event WHERE action = 'oauth-authorize' AND outcome = 200"), 2);
    let failure = |detail: &str| {
        n(&format!(
            "SELECT count(*) FROM audit_event WHERE action = 'login-failure' AND detail = '{detail}; client: chart'"
        ))
    };
    assert_eq!(failure("webauthn: bad-signature"), 1);
    assert_eq!(failure("webauthn: wrong-origin"), 1);
    assert_eq!(failure("webauthn: wrong-challenge"), 1, "the replay, under a new challenge");
    assert_eq!(
        n(
            "SELECT count(*) FROM audit_event WHERE action = 'oauth-failure' AND detail LIKE '%malformed WebAuthn assertion%'"
        ),
        1
    );
    assert_eq!(n("SELECT count(*) FROM audit_event WHERE action = 'login' AND detail LIKE 'password+webauthn%'"), 2);
    assert_eq!(
        n("SELECT count(*) FROM audit_event WHERE action = 'webauthn-challenge' AND detail = 'login; client: chart'"),
        6
    );
}

async fn admin_call(
    s: &Server,
    method: reqwest::Method,
    path: &str,
    body: Option<&Value>,
    bearer: &str,
) -> (u16, Value) {
    let mut r = s.http.request(method, format!("{}/admin{path}", root(s))).bearer_auth(bearer);
    if let Some(b) = body {
        r = r.json(b);
    }
    json(r.send().await.unwrap()).await
}

/// AUTH-6 (`mamori client …` over HTTP): an administrator registers a backend service with its
/// public JWK and a staff job type, and a SMART app with its redirect URIs; the service's
/// assertions get tokens at once. The registration rules are the CLI's (no patient job type for
/// a service, public keys only, https redirect URIs, scopes of the client's kind): every refusal
/// is a 400 OperationOutcome that registers nothing. Removing the client stops its tokens at
/// once. Other job types are refused; everything is audited.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth6_clients_registered_and_removed_over_the_admin_api() {
    use reqwest::Method as M;
    let s = Server::start();
    let boss = s.dir.user_with_token("boss", "administrator");
    let auditor = s.dir.user_with_token("audit.k", "auditor");
    let (_, oid) = chart(&s).await;
    let (kp, jwk) = p384_key();
    let lab = json!({"id": "lab", "name": "Lab feed", "scope": "system/Observation.rs", "jwks": jwk, "role": "nurse"});

    assert_eq!(admin_call(&s, M::POST, "/clients", Some(&lab), &s.token).await.0, 403);
    assert_eq!(admin_call(&s, M::POST, "/clients", Some(&lab), &auditor).await.0, 403);
    let (st, r) = admin_call(&s, M::POST, "/clients", Some(&lab), &boss).await;
    assert_eq!((st, r["kind"].as_str(), r["role"].as_str()), (201, Some("system"), Some("nurse")), "{r}");
    assert_eq!(r["jwks"]["keys"][0]["kid"], "k1", "one JWK is stored as a JWK Set: {r}");
    let aud = format!("{}/oauth/token", root(&s));
    let cc = |jti: &str| {
        let a = assertion(&kp, "lab", &aud, unix_now() + 120, jti);
        let s = &s;
        async move {
            token(
                s,
                &[
                    ("grant_type", "client_credentials"),
                    ("scope", "system/Observation.rs"),
                    ("client_assertion_type", "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"),
                    ("client_assertion", &a),
                ],
            )
            .await
        }
    };
    let (st, t) = cc("admin-api-1").await;
    assert_eq!(st, 200, "{t}");
    let access = t["access_token"].as_str().unwrap().to_string();
    assert_eq!(status(&s, &format!("Observation/{oid}"), &access).await, 200, "the registered service works");

    let app = json!({"id": "viewer", "name": "Chart viewer", "scope": "user/*.rs offline_access",
        "redirect_uris": ["https://viewer.clinic.example/callback"]});
    let (st, r) = admin_call(&s, M::POST, "/clients", Some(&app), &boss).await;
    assert_eq!((st, r["kind"].as_str()), (201, Some("public")), "{r}");

    // The registration rules, whoever registers: each refusal is a 400 and registers nothing.
    let mut private = jwk.clone();
    private["d"] = json!("AAAA");
    let with = |patch: Value| {
        let mut v = lab.clone();
        v["id"] = json!("other");
        for (k, val) in patch.as_object().unwrap() {
            v[k] = val.clone();
        }
        v
    };
    for (bad, needle) in [
        (with(json!({"role": "patient"})), "staff job type"),
        (with(json!({"jwks": private})), "private key"),
        (with(json!({"jwks": {"keys": []}})), "between 1 and 10 keys"),
        (with(json!({"role": "wizard"})), "role"),
        (with(json!({"redirect_uris": ["https://x.example/cb"]})), "redirect URIs for an app"),
        (with(json!({"id": "no spaces"})), "client ids"),
        (with(json!({"scope": "offline_access"})), "no resource scope"),
        (with(json!({"scope": "user/*.rs"})), "user/ scopes"),
        (
            json!({"id": "app2", "name": "A", "scope": "user/*.rs", "redirect_uris": ["http://app.example/cb"]}),
            "loopback",
        ),
        (
            json!({"id": "app2", "name": "A", "scope": "system/*.rs", "redirect_uris": ["https://app.example/cb"]}),
            "system/",
        ),
        (json!({"id": "app2", "name": "", "scope": "user/*.rs", "redirect_uris": ["https://app.example/cb"]}), "name"),
    ] {
        let resp =
            s.http.post(format!("{}/admin/clients", root(&s))).bearer_auth(&boss).json(&bad).send().await.unwrap();
        expect_outcome(resp, 400, needle).await;
    }
    let (st, r) = admin_call(&s, M::POST, "/clients", Some(&json!({"id": "x", "colour": "red"})), &boss).await;
    assert_eq!((st, r["resourceType"].as_str()), (400, Some("OperationOutcome")), "{r}");
    assert_eq!(admin_call(&s, M::POST, "/clients", Some(&lab), &boss).await.0, 412, "already registered");

    // Listed for administrators and auditors (and by the CLI): public keys, never anything secret.
    assert_eq!(admin_call(&s, M::GET, "/clients", None, &s.token).await.0, 403);
    let (st, list) = admin_call(&s, M::GET, "/clients", None, &auditor).await;
    assert_eq!(st, 200, "{list}");
    let ids: Vec<&str> = list["clients"].as_array().unwrap().iter().map(|c| c["id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["lab", "viewer"]);
    assert_eq!(list["clients"][1]["redirect_uris"], json!(["https://viewer.clinic.example/callback"]));
    let cli = ok(&["client", "list", "--data-dir", s.dir.arg()]);
    assert!(cli.contains("lab\tsystem\tLab feed") && cli.contains("viewer\tpublic\tChart viewer"), "{cli}");

    // EHR launch and OpenID Connect scopes register where they can work: an app launched from
    // the EHR (launch with patient/ scopes, confined to the launch patient), never a service.
    let ehr = json!({"id": "ehr-viewer", "name": "EHR viewer", "scope": "launch patient/*.rs openid fhirUser",
        "redirect_uris": ["https://viewer.clinic.example/ehr"]});
    let (st, r) = admin_call(&s, M::POST, "/clients", Some(&ehr), &boss).await;
    assert_eq!((st, r["scope"].as_str()), (201, Some("patient/*.rs launch openid fhirUser")), "{r}");
    let app =
        |scope: &str| json!({"id": "app3", "name": "A", "scope": scope, "redirect_uris": ["https://a.example/cb"]});
    for (bad, needle) in [
        (with(json!({"scope": "system/*.rs openid"})), "no sign-in"),
        (with(json!({"scope": "system/*.rs launch"})), "no sign-in"),
        (app("launch user/*.rs"), "patient context"),
        (app("launch launch/patient patient/*.rs"), "not both"),
        (app("launch/encounter patient/*.rs"), "launch/patient"),
    ] {
        let resp =
            s.http.post(format!("{}/admin/clients", root(&s))).bearer_auth(&boss).json(&bad).send().await.unwrap();
        expect_outcome(resp, 400, needle).await;
    }

    // Removal: its tokens stop working at once and it gets no new ones.
    assert_eq!(admin_call(&s, M::DELETE, "/clients/lab", None, &auditor).await.0, 403);
    let (st, r) = admin_call(&s, M::DELETE, "/clients/lab", None, &boss).await;
    assert_eq!((st, r["token_families_revoked"].as_u64()), (200, Some(1)), "{r}");
    assert_eq!(status(&s, &format!("Observation/{oid}"), &access).await, 401, "its token stopped working");
    assert_eq!(cc("admin-api-2").await.0, 401, "no new tokens");
    assert_eq!(admin_call(&s, M::DELETE, "/clients/lab", None, &boss).await.0, 404);

    let n = |sql_where: &str| s.dir.audit_i64(&format!("SELECT count(*) FROM audit_event WHERE {sql_where}"));
    assert_eq!(n("action = 'oauth-client-register' AND actor = 'boss' AND outcome = 201"), 3);
    assert_eq!(n("action = 'oauth-client-register' AND actor = 'boss' AND outcome = 400"), 16);
    assert_eq!(n("action = 'oauth-client-register' AND actor = 'boss' AND outcome = 412"), 1);
    assert_eq!(n("action = 'oauth-client-list' AND actor = 'audit.k' AND outcome = 200"), 1);
    assert_eq!(n("action = 'oauth-client-remove' AND actor = 'boss' AND outcome = 200"), 1);
    assert_eq!(n("action = 'oauth-client-remove' AND actor = 'boss' AND outcome = 404"), 1);
    assert_eq!(n("action = 'refused' AND outcome = 403"), 4, "every denial is audited");
}
