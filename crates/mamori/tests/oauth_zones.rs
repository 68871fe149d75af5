//! AUTH-2 × AUTH-6 × ACL-3 over the real binary: OAuth app tokens and network zones. Zones by
//! source address: 127.0.0.1 is the HIS, 127.0.0.2 the VPN, every other address (127.0.0.3) the
//! internet; clerks may sign in with a password alone from the HIS only. The test's browsers
//! and apps connect from those addresses (`browser_from`), sign in on `/oauth/authorize`,
//! exchange and refresh at `/oauth/token` and call `/fhir` like a real app would.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "support/oauth_page.rs"]
mod oauth_page;
mod support;

use oauth_page::*;
use serde_json::{Value, json};
use support::*;

const HIS: &str = "127.0.0.1";
const VPN: &str = "127.0.0.2";
const INTERNET: &str = "127.0.0.3";

/// A server with the three zones by source address, clerks' password-only exception in the HIS,
/// and the staff app `chart` (`user/*.cruds offline_access`) registered.
fn start() -> (Server, String) {
    let dir = DataDir::init();
    let cfg = dir.path.join("mamori.toml");
    let text = std::fs::read_to_string(&cfg).unwrap();
    let zones = format!(
        "\n[[policy.zone]]\nname = \"his\"\naddresses = [\"{HIS}/32\"]\n\
         [[policy.zone]]\nname = \"vpn\"\naddresses = [\"{VPN}/32\"]\n\
         [[policy.zone]]\nname = \"internet\"\naddresses = []\n\
         [login.password_only_from]\nhis = [\"clerk\"]\n"
    );
    std::fs::write(&cfg, format!("{text}{zones}")).unwrap();
    let token = dir.user_with_token("dr.test", "physician");
    let s = Server::start_in(dir, token);
    assert_eq!(add_app(&s.dir, "chart", "user/*.cruds offline_access").0, 0);
    let root = s.base.trim_end_matches("/fhir").to_string();
    (s, root)
}

fn add_user(s: &Server, name: &str, role: &str) {
    ok(&["user", "add", "--data-dir", s.dir.arg(), "--name", name, "--role", role]);
}

/// A Patient (administrative) and a psychiatric Condition about them, created from the HIS with
/// the physician's API token.
async fn chart(s: &Server) -> (String, String) {
    let (st, p) =
        json(s.post_json("Patient", &json!({"resourceType": "Patient", "gender": "female"})).send().await.unwrap())
            .await;
    assert_eq!(st, 201, "{p}");
    let pid = p["id"].as_str().unwrap().to_string();
    let condition = json!({"resourceType": "Condition",
        "meta": {"security": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "PSY"}]},
        "code": {"text": "episode"}, "subject": {"reference": format!("Patient/{pid}")}});
    let (st, c) = json(s.post_json("Condition", &condition).send().await.unwrap()).await;
    assert_eq!(st, 201, "{c}");
    (pid, c["id"].as_str().unwrap().to_string())
}

/// The authorisation page URL for `chart` and a fresh PKCE verifier.
fn authorize(root: &str, scope: &str) -> (String, String) {
    let (verifier, challenge) = pkce();
    (authorize_at(root, "chart", scope, &challenge), verifier)
}

/// `GET /fhir/{path}` with `bearer`, from `http`: the response.
async fn fhir_get(http: &reqwest::Client, root: &str, path: &str, bearer: &str) -> reqwest::Response {
    http.get(format!("{root}/fhir/{path}")).bearer_auth(bearer).send().await.unwrap()
}

async fn status_from(http: &reqwest::Client, root: &str, path: &str, bearer: &str) -> u16 {
    fhir_get(http, root, path, bearer).await.status().as_u16()
}

async fn refresh_with(http: &reqwest::Client, root: &str, refresh_token: &str) -> (u16, Value) {
    token_with(http, root, &[("grant_type", "refresh_token"), ("client_id", "chart"), ("refresh_token", refresh_token)])
        .await
}

/// The code of a 303 to the app, when the password step alone completes the sign-in.
fn code_of(resp: &reqwest::Response) -> String {
    assert_eq!(resp.status().as_u16(), 303, "the sign-in completes with the password alone");
    param(&redirect_params(resp), "code").unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth2_acl3_oauth_token_from_a_password_only_zone_is_refused_elsewhere() {
    let (s, root) = start();
    let (pid, _) = chart(&s).await;
    add_user(&s, "clerk.ito", "clerk");
    let r = own_password(&s.dir, &root, "clerk.ito").await;
    assert!(r["access_token"].is_string(), "a clerk in the HIS gets a session with a password alone: {r}");
    let (his, vpn, internet) = (browser_from(HIS), browser_from(VPN), browser_from(INTERNET));

    // Signed in at the HIS with a password alone; the app exchanges the code at the HIS.
    let (url, verifier) = authorize(&root, "user/*.cruds offline_access");
    let code = code_of(&password_step_with(&his, &root, &url, "clerk.ito", PASSWORD).await);
    let (st, t) = exchange_with(&his, &root, "chart", &code, &verifier).await;
    assert_eq!(st, 200, "{t}");
    let access = t["access_token"].as_str().unwrap().to_string();
    let refresh = t["refresh_token"].as_str().unwrap().to_string();
    let patient = format!("Patient/{pid}");
    assert_eq!(status_from(&his, &root, &patient, &access).await, 200, "clerks see administrative data in the HIS");

    // The same token from the VPN or the internet: refused, with a step-up challenge.
    for (zone, http) in [("vpn", &vpn), ("internet", &internet)] {
        let resp = fhir_get(http, &root, &patient, &access).await;
        let challenge = resp.headers()["www-authenticate"].to_str().unwrap().to_string();
        assert!(challenge.contains("error=\"insufficient_user_authentication\""), "{zone}: {challenge}");
        expect_outcome(resp, 401, "second factor").await;
        let resp = fhir_get(http, &root, "metadata", &access).await;
        assert_eq!(resp.status().as_u16(), 401, "{zone}: no request at all, not even the capabilities");
    }
    assert_eq!(status_from(&his, &root, &patient, &access).await, 200, "back in the HIS it works again");

    // Refreshing from the VPN is refused and does not spend the refresh token; from the HIS it
    // rotates, and the new token keeps the sign-in's factors.
    let (st, r) = refresh_with(&vpn, &root, &refresh).await;
    assert_eq!((st, r["error"].as_str()), (400, Some("invalid_grant")), "{r}");
    assert!(r["error_description"].as_str().unwrap().contains("second factor"), "{r}");
    let (st, t) = refresh_with(&his, &root, &refresh).await;
    assert_eq!(st, 200, "{t}");
    let access = t["access_token"].as_str().unwrap().to_string();
    assert_eq!(status_from(&his, &root, &patient, &access).await, 200);
    assert_eq!(status_from(&vpn, &root, &patient, &access).await, 401);

    // A code from a password-only sign-in is not exchanged from the VPN either (and is spent).
    let (url, verifier) = authorize(&root, "user/*.rs");
    let code = code_of(&password_step_with(&his, &root, &url, "clerk.ito", PASSWORD).await);
    let (st, r) = exchange_with(&vpn, &root, "chart", &code, &verifier).await;
    assert_eq!((st, r["error"].as_str()), (400, Some("invalid_grant")), "{r}");
    let (st, _) = exchange_with(&his, &root, "chart", &code, &verifier).await;
    assert_eq!(st, 400, "the refused exchange spent the code");

    // Login sessions follow the same rule (unchanged).
    let session = r_session(&his, &root, "clerk.ito").await;
    assert_eq!(status_from(&his, &root, &patient, &session).await, 200);
    assert_eq!(status_from(&vpn, &root, &patient, &session).await, 401);

    // The trail: the tokens say how and where the person signed in; every refusal names the
    // person, the app and both zones.
    let n = |sql: &str| s.dir.audit_i64(sql);
    assert_eq!(
        n("SELECT count(*) FROM audit_event WHERE action = 'oauth-token' AND actor = 'clerk.ito' \
           AND detail LIKE '%signed in with password in zone his%'"),
        1
    );
    for (zone, source) in [("vpn", VPN), ("internet", INTERNET)] {
        assert_eq!(
            n(&format!(
                "SELECT count(*) FROM audit_event WHERE action = 'refused' AND outcome = 401 AND actor = 'clerk.ito' \
                 AND role = 'clerk' AND source = '{source}' AND detail LIKE 'login: sign-in with password in zone his is not enough from zone \
                 {zone}: two factors required%client: chart%'"
            )),
            if zone == "vpn" { 3 } else { 2 },
            "{zone}"
        );
    }
    assert_eq!(
        n("SELECT count(*) FROM audit_event WHERE action = 'oauth-failure' AND actor = 'clerk.ito' \
           AND detail LIKE 'sign-in with password in zone his is not enough from zone vpn%client: chart%'"),
        2,
        "the refused refresh and the refused exchange"
    );
}

/// A login session for `name` (password alone) from `http`.
async fn r_session(http: &reqwest::Client, root: &str, name: &str) -> String {
    let r = http.post(format!("{root}/auth/login")).json(&json!({"account": name, "password": PASSWORD}));
    let (st, v) = json(r.send().await.unwrap()).await;
    assert_eq!(st, 200, "{v}");
    v["access_token"].as_str().unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acl3_oauth_token_rights_are_those_of_the_requests_zone() {
    let (s, root) = start();
    let (pid, cid) = chart(&s).await;
    add_user(&s, "dr.sato", "physician");
    let (secret, _) = enrol_totp(&s.dir, &root, "dr.sato").await;
    let (his, vpn, internet) = (browser_from(HIS), browser_from(VPN), browser_from(INTERNET));

    // Signed in from the VPN with two factors; the app works from every zone…
    let (url, verifier) = authorize(&root, "user/*.cruds offline_access");
    let p = sign_in_with(&vpn, &root, &url, "dr.sato", PASSWORD, Factor::Totp(&secret, unix_now() + 30)).await;
    let (st, t) = exchange_with(&vpn, &root, "chart", param(&p, "code").unwrap(), &verifier).await;
    assert_eq!(st, 200, "{t}");
    let access = t["access_token"].as_str().unwrap().to_string();
    // …with the rights of the zone each request comes from, not of the zone of the sign-in.
    let condition = format!("Condition/{cid}");
    let patient = format!("Patient/{pid}");
    assert_eq!(status_from(&his, &root, &condition, &access).await, 200);
    assert_eq!(status_from(&vpn, &root, &condition, &access).await, 200);
    assert_eq!(
        status_from(&internet, &root, &condition, &access).await,
        404,
        "psychiatric: invisible from the internet"
    );
    assert_eq!(status_from(&internet, &root, &patient, &access).await, 200);
    let (_, b) =
        json(fhir_get(&internet, &root, &format!("Condition?subject={pid}&_total=accurate"), &access).await).await;
    assert_eq!(b["total"], 0, "{b}");
    let (_, b) = json(fhir_get(&his, &root, &format!("Condition?subject={pid}&_total=accurate"), &access).await).await;
    assert_eq!(b["total"], 1, "{b}");
    let obs = json!({"resourceType": "Observation", "status": "final", "code": {"text": "weight"},
        "subject": {"reference": patient}});
    let create = |http: &reqwest::Client| {
        http.post(format!("{root}/fhir/Observation"))
            .bearer_auth(&access)
            .header("content-type", "application/fhir+json")
            .body(serde_json::to_vec(&obs).unwrap())
            .send()
    };
    assert_eq!(create(&internet).await.unwrap().status().as_u16(), 403, "view only from the internet");
    assert_eq!(create(&his).await.unwrap().status().as_u16(), 201);
    assert_eq!(
        s.dir.audit_i64(
            "SELECT count(*) FROM audit_event WHERE action = 'oauth-token' AND actor = 'dr.sato' \
             AND detail LIKE '%signed in with password+totp in zone vpn%'"
        ),
        1
    );
    assert_eq!(
        s.dir.audit_i64(
            "SELECT count(*) FROM audit_event WHERE action = 'read' AND outcome = 404 AND actor = 'dr.sato' \
             AND detail LIKE 'hidden-by-policy%client: chart%'"
        ),
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth6_sign_in_page_asks_for_a_second_factor_by_zone() {
    let (s, root) = start();
    add_user(&s, "clerk.ito", "clerk");
    own_password(&s.dir, &root, "clerk.ito").await;
    add_user(&s, "dr.sato", "physician");
    enrol_totp(&s.dir, &root, "dr.sato").await;
    let (his, vpn) = (browser_from(HIS), browser_from(VPN));
    let (url, _) = authorize(&root, "user/*.rs");

    // A clerk: a password alone on the HIS network (straight back to the app with a code)…
    let resp = password_step_with(&his, &root, &url, "clerk.ito", PASSWORD).await;
    assert!(code_of(&resp).starts_with("mamoric_"));
    // …but two factors from the VPN: without one enrolled, no code.
    let resp = password_step_with(&vpn, &root, &url, "clerk.ito", PASSWORD).await;
    assert_eq!(resp.status().as_u16(), 403);
    assert!(resp.headers().get("location").is_none());
    assert!(resp.text().await.unwrap().contains("needs a second factor"));
    // A physician needs two factors everywhere, the HIS included.
    let resp = password_step_with(&his, &root, &url, "dr.sato", PASSWORD).await;
    assert_eq!(resp.status().as_u16(), 200);
    assert!(resp.text().await.unwrap().contains("name=\"method\" value=\"totp\""));

    // A clerk who has enrolled a second factor is asked for it, also in the HIS.
    add_user(&s, "clerk.mori", "clerk");
    let session = own_password(&s.dir, &root, "clerk.mori").await["access_token"].as_str().unwrap().to_string();
    let enrol = |path: &str, body: Value| his.post(format!("{root}{path}")).bearer_auth(&session).json(&body).send();
    let (_, r) = json(enrol("/auth/totp", json!({})).await.unwrap()).await;
    let secret = base32_decode(r["secret"].as_str().expect("TOTP enrolment with a session"));
    let (_, r) = json(enrol("/auth/totp/confirm", json!({"code": totp(&secret, unix_now())})).await.unwrap()).await;
    assert_eq!(r["status"], "second-factor-active", "{r}");
    let resp = password_step_with(&his, &root, &url, "clerk.mori", PASSWORD).await;
    assert_eq!(resp.status().as_u16(), 200);
    assert!(resp.text().await.unwrap().contains("name=\"method\" value=\"totp\""));

    let n = |sql: &str| s.dir.audit_i64(sql);
    assert_eq!(
        n("SELECT count(*) FROM audit_event WHERE action = 'login' AND actor = 'clerk.ito' \
           AND detail LIKE 'password ok: enrolment-required%client: chart%'"),
        1,
        "the refused sign-in from the VPN is in the trail"
    );
    assert_eq!(
        n("SELECT count(*) FROM audit_event WHERE action = 'oauth-authorize' AND rid = 'clerk.ito'"),
        1,
        "one code: the sign-in from the HIS"
    );
}
