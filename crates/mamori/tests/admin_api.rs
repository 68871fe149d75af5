//! Account administration over the admin HTTP API with the real binary (AUTH-5, AUTH-7, AUTH-8):
//! API tokens (created and shown once, listed without secrets, revoked), the account list,
//! lockouts, initial passwords and the lifecycle sweep — each decided by the policy point, only
//! from the administration zones, audited when done and when refused, and the same operations
//! as the CLI's. OAuth clients over the admin API are in `oauth.rs`, WebAuthn credentials and
//! recovery codes in `webauthn.rs`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use serde_json::{Value, json};
use support::*;

const INITIAL: &str = "Initial-Pass-9876!";

async fn call(s: &Server, method: reqwest::Method, path: &str, body: Option<&Value>, bearer: &str) -> (u16, Value) {
    let mut r = s.http.request(method, format!("{}/admin{path}", root(s))).bearer_auth(bearer);
    if let Some(b) = body {
        r = r.json(b);
    }
    json(r.send().await.unwrap()).await
}

async fn get(s: &Server, path: &str, bearer: &str) -> (u16, Value) {
    call(s, reqwest::Method::GET, path, None, bearer).await
}

async fn post_admin(s: &Server, path: &str, body: &Value, bearer: &str) -> (u16, Value) {
    call(s, reqwest::Method::POST, path, Some(body), bearer).await
}

async fn delete(s: &Server, path: &str, bearer: &str) -> (u16, Value) {
    call(s, reqwest::Method::DELETE, path, None, bearer).await
}

async fn fhir_status(s: &Server, bearer: &str) -> u16 {
    s.http.get(s.url("Patient")).bearer_auth(bearer).send().await.unwrap().status().as_u16()
}

fn count(s: &Server, sql_where: &str) -> i64 {
    s.dir.audit_i64(&format!("SELECT count(*) FROM audit_event WHERE {sql_where}"))
}

/// AUTH-7 (`mamori token …` over HTTP): an administrator creates a token for an account (shown
/// once, never cached), it works at once; the list shows ids and dates but no secret; revoking
/// one stops it at once. Other job types are refused, bad input changes nothing, and the CLI sees
/// and acts on the same tokens. Everything is audited, refusals included.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth7_api_tokens_over_the_admin_api() {
    let s = Server::start();
    let boss = s.dir.user_with_token("boss", "administrator");
    let auditor = s.dir.user_with_token("audit.k", "auditor");

    let (st, created) = post_secret(&s, "/admin/accounts/dr.test/tokens", &json!({"ttl": "1h"}), &boss).await;
    assert_eq!(st, 201, "{created}");
    let token = created["token"].as_str().unwrap().to_string();
    let id = created["id"].as_str().unwrap().to_string();
    assert!(token.starts_with("mamori_") && id.len() == 16, "{created}");
    assert_eq!(fhir_status(&s, &token).await, 200, "a created token works at once");
    // The default lifetime applies without a body.
    let (st, other) = post_admin(&s, "/accounts/dr.test/tokens", &json!({}), &boss).await;
    assert_eq!(st, 201, "{other}");
    let other_id = other["id"].as_str().unwrap().to_string();

    // Listed for administrators and auditors: ids and dates, never a secret.
    let (st, list) = get(&s, "/accounts/dr.test/tokens", &auditor).await;
    assert_eq!(st, 200, "{list}");
    let ids: Vec<&str> = list["tokens"].as_array().unwrap().iter().map(|t| t["id"].as_str().unwrap()).collect();
    assert_eq!(ids.len(), 3, "the CLI's token and the two new ones: {list}");
    assert!(ids.contains(&id.as_str()) && ids.contains(&other_id.as_str()), "{list}");
    let text = list.to_string();
    assert!(!text.contains("mamori_") && !text.contains(&token[7..]), "no secret in the list: {text}");
    let used = list["tokens"].as_array().unwrap().iter().find(|t| t["id"] == id.as_str()).unwrap();
    assert!(used["last_used"].is_string() && used["expired"] == false, "its use is recorded: {list}");
    // The CLI lists the same tokens.
    let cli = ok(&["token", "list", "--data-dir", s.dir.arg(), "--user", "dr.test"]);
    assert!(cli.contains(&id) && cli.contains(&other_id) && !cli.contains("mamori_"), "{cli}");

    // Refused: other job types, bad lifetimes, unknown fields and accounts, patients' accounts.
    assert_eq!(post_admin(&s, "/accounts/dr.test/tokens", &json!({}), &s.token).await.0, 403);
    assert_eq!(post_admin(&s, "/accounts/dr.test/tokens", &json!({}), &auditor).await.0, 403);
    assert_eq!(get(&s, "/accounts/dr.test/tokens", &s.token).await.0, 403);
    assert_eq!(delete(&s, &format!("/accounts/dr.test/tokens/{id}"), &auditor).await.0, 403);
    let resp = s
        .http
        .post(format!("{}/admin/accounts/dr.test/tokens", root(&s)))
        .bearer_auth(&boss)
        .json(&json!({"ttl": "31d"}))
        .send()
        .await
        .unwrap();
    expect_outcome(resp, 400, "tokens.max_ttl").await;
    for bad in
        [json!({"ttl": "soon"}), json!({"ttl": "999999999999999d"}), json!({"ttl": "0h"}), json!({"lifetime": "1h"})]
    {
        let (st, r) = post_admin(&s, "/accounts/dr.test/tokens", &bad, &boss).await;
        assert_eq!((st, r["resourceType"].as_str()), (400, Some("OperationOutcome")), "{bad}: {r}");
    }
    assert_eq!(post_admin(&s, "/accounts/nobody/tokens", &json!({}), &boss).await.0, 404);
    assert_eq!(post_admin(&s, "/accounts/Not%20A%20Name/tokens", &json!({}), &boss).await.0, 400);
    assert_eq!(get(&s, "/accounts/dr.test/tokens", &boss).await.1["tokens"].as_array().unwrap().len(), 3, "unchanged");

    // Revoking: the token stops working at once; the other keeps working.
    let (st, r) = delete(&s, &format!("/accounts/dr.test/tokens/{id}"), &boss).await;
    assert_eq!((st, r["status"].as_str()), (200, Some("revoked")), "{r}");
    assert_eq!(fhir_status(&s, &token).await, 401, "a revoked token stops working");
    assert_eq!(fhir_status(&s, other["token"].as_str().unwrap()).await, 200);
    assert_eq!(delete(&s, &format!("/accounts/dr.test/tokens/{id}"), &boss).await.0, 404, "already revoked");
    assert_eq!(delete(&s, &format!("/accounts/boss/tokens/{other_id}"), &boss).await.0, 404, "not boss's token");
    assert_eq!(delete(&s, "/accounts/dr.test/tokens/XYZ", &boss).await.0, 400);
    // The CLI revokes the same way.
    ok(&["token", "revoke", "--data-dir", s.dir.arg(), "--user", "dr.test", &other_id]);
    assert_eq!(fhir_status(&s, other["token"].as_str().unwrap()).await, 401);

    assert_eq!(count(&s, "action = 'token-create' AND actor = 'boss' AND outcome = 201"), 2);
    assert_eq!(count(&s, "action = 'token-create' AND actor = 'boss' AND outcome = 400"), 1, "max_ttl");
    assert_eq!(count(&s, "action = 'token-create' AND actor = 'boss' AND outcome = 404"), 1);
    assert_eq!(count(&s, "action = 'token-list' AND actor = 'audit.k' AND outcome = 200"), 1);
    assert_eq!(count(&s, "action = 'token-revoke' AND actor = 'boss' AND outcome = 200"), 1);
    assert_eq!(count(&s, "action = 'token-revoke' AND actor = 'boss' AND outcome = 404"), 2);
    assert_eq!(count(&s, "action = 'token-revoke' AND actor LIKE 'operator:%' AND outcome = 200"), 1);
    assert_eq!(count(&s, "action = 'refused' AND outcome = 403"), 4, "every denial is audited");
    assert_eq!(count(&s, "action = 'refused' AND outcome = 400"), 5, "and every bad request");
    assert_eq!(count(&s, "action = 'token-revoke' AND actor = 'boss' AND outcome = 400"), 1, "a malformed id");
    assert_eq!(
        count(&s, "(detail LIKE '%mamori\\_%' ESCAPE '\\') OR (rid LIKE '%mamori\\_%' ESCAPE '\\')"),
        0,
        "no secret in the trail"
    );
}

/// AUTH-5/AUTH-3/AUTH-7 over HTTP: the account list, lifting a lockout, an initial password
/// (never one's own; the password policy applies) and the lifecycle sweep on request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth5_auth7_unlock_initial_password_list_and_sweep_over_the_admin_api() {
    let s = Server::start();
    let boss = s.dir.user_with_token("boss", "administrator");
    let auditor = s.dir.user_with_token("audit.k", "auditor");
    ok(&["user", "add", "--data-dir", s.dir.arg(), "--name", "dr.lock", "--role", "physician"]);
    assert_eq!(set_password(&s.dir, "dr.lock", INITIAL).0, 0);

    // The account list, for administrators and auditors.
    let (st, list) = get(&s, "/accounts", &auditor).await;
    assert_eq!(st, 200, "{list}");
    let names: Vec<&str> = list["accounts"].as_array().unwrap().iter().map(|a| a["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["admin", "audit.k", "boss", "dr.lock", "dr.test"]);
    assert_eq!(list["accounts"][3]["role"], "physician");
    assert_eq!(get(&s, "/accounts", &s.token).await.0, 403);

    // A lockout is lifted by an administrator.
    let login = json!({"account": "dr.lock", "password": INITIAL});
    for _ in 0..5 {
        assert_eq!(
            post(&s, "/auth/login", &json!({"account": "dr.lock", "password": "Wrong-Pass-0000!"}), None).await.0,
            401
        );
    }
    assert_eq!(post(&s, "/auth/login", &login, None).await.0, 401, "locked");
    assert_eq!(post_admin(&s, "/accounts/dr.lock/unlock", &json!({}), &s.token).await.0, 403);
    assert_eq!(post_admin(&s, "/accounts/dr.lock/unlock", &json!({}), &auditor).await.0, 403);
    assert_eq!(post(&s, "/auth/login", &login, None).await.0, 401, "still locked after the refusals");
    assert_eq!(post_admin(&s, "/accounts/nobody/unlock", &json!({}), &boss).await.0, 404);
    assert_eq!(post_admin(&s, "/accounts/dr.lock/unlock", &json!({"now": true}), &boss).await.0, 400);
    let (st, r) = post_admin(&s, "/accounts/dr.lock/unlock", &json!({}), &boss).await;
    assert_eq!((st, r["status"].as_str()), (200, Some("unlocked")), "{r}");
    let (st, r) = post(&s, "/auth/login", &login, None).await;
    assert_eq!((st, r["status"].as_str()), (200, Some("password-change-required")), "{r}");
    let (_, r) = post_admin(&s, "/accounts/dr.lock/unlock", &json!({}), &boss).await;
    assert_eq!(r["status"], "not-locked");

    // An initial password: the policy applies, never for one's own account, must be changed.
    ok(&["user", "add", "--data-dir", s.dir.arg(), "--name", "ns.ito", "--role", "nurse"]);
    let resp = s
        .http
        .post(format!("{}/admin/accounts/ns.ito/password", root(&s)))
        .bearer_auth(&boss)
        .json(&json!({"password": "password"}))
        .send()
        .await
        .unwrap();
    let weak = expect_outcome(resp, 400, "at least 13").await;
    assert!(!weak.to_string().contains("\"password\""), "the password is not echoed: {weak}");
    let (st, r) = post_admin(&s, "/accounts/boss/password", &json!({"password": INITIAL}), &boss).await;
    assert_eq!(st, 403, "separation of duties: {r}");
    assert_eq!(post_admin(&s, "/accounts/ns.ito/password", &json!({"password": INITIAL}), &s.token).await.0, 403);
    assert_eq!(post_admin(&s, "/accounts/nobody/password", &json!({"password": INITIAL}), &boss).await.0, 404);
    let login = json!({"account": "ns.ito", "password": INITIAL});
    assert_eq!(post(&s, "/auth/login", &login, None).await.0, 401, "no password was set by the refusals");
    let (st, r) = post_admin(&s, "/accounts/ns.ito/password", &json!({"password": INITIAL}), &boss).await;
    assert_eq!((st, r["must_change"].as_bool()), (200, Some(true)), "{r}");
    let (st, r) = post(&s, "/auth/login", &login, None).await;
    assert_eq!((st, r["status"].as_str()), (200, Some("password-change-required")), "{r}");

    // The lifecycle sweep on request: nothing is unused for 90 days here, and the run is audited.
    let (st, r) = post_admin(&s, "/accounts/sweep", &json!({}), &boss).await;
    assert_eq!(st, 200, "{r}");
    assert_eq!((r["disabled"].as_array().unwrap().len(), r["expired_requests"].as_array().unwrap().len()), (0, 0));
    assert_eq!(post_admin(&s, "/accounts/sweep", &json!({}), &auditor).await.0, 403);
    let cli = ok(&["user", "sweep", "--data-dir", s.dir.arg()]);
    assert!(cli.contains("0 account(s) disabled"), "{cli}");

    assert_eq!(count(&s, "action = 'account-list' AND actor = 'audit.k' AND outcome = 200"), 1);
    assert_eq!(count(&s, "action = 'unlock' AND actor = 'boss' AND outcome = 200"), 2);
    assert_eq!(count(&s, "action = 'unlock' AND actor = 'boss' AND outcome = 404"), 1);
    assert_eq!(count(&s, "action = 'password-set' AND actor = 'boss' AND outcome = 200"), 1);
    assert_eq!(count(&s, "action = 'password-set' AND actor = 'boss' AND outcome IN (400, 403, 404)"), 3);
    assert_eq!(count(&s, "action = 'account-sweep' AND actor = 'boss' AND outcome = 200"), 1);
    assert_eq!(count(&s, "action = 'account-sweep' AND actor = 'system:lifecycle' AND outcome = 200"), 1);
    assert_eq!(count(&s, "action = 'refused' AND outcome = 403"), 5, "every denial is audited");
    assert_eq!(count(&s, "(detail LIKE '%Initial-Pass%') OR (detail LIKE '%9876%')"), 0, "no password in the trail");
}

/// ACL-1/ACL-3: every account action of the admin API is decided by the policy point and refused
/// (403, audited, nothing changed) to an administrator outside the administration zones.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acl3_account_administration_refused_outside_the_administration_zones() {
    let dir = DataDir::init();
    let cfg = dir.path.join("mamori.toml");
    let base = std::fs::read_to_string(&cfg).unwrap();
    // Loopback is the internet zone here.
    let mut zones = String::from("\n");
    for (z, addrs) in [("his", "[]"), ("vpn", "[]"), ("internet", "[\"127.0.0.0/8\", \"::1/128\"]")] {
        zones.push_str(&format!("[[policy.zone]]\nname = \"{z}\"\naddresses = {addrs}\n"));
    }
    std::fs::write(&cfg, format!("{base}{zones}")).unwrap();
    let boss = dir.user_with_token("boss", "administrator");
    let dr = dir.user_with_token("dr.x", "physician");
    let s = Server::start_in(dir, dr);
    let token_id =
        ok(&["token", "list", "--data-dir", s.dir.arg(), "--user", "dr.x"]).split('\t').next().unwrap().to_string();
    use reqwest::Method as M;
    let pw = json!({"password": INITIAL});
    let app =
        json!({"id": "viewer", "name": "Viewer", "scope": "user/*.rs", "redirect_uris": ["https://viewer.example/cb"]});
    let calls: Vec<(M, String, Option<Value>)> = vec![
        (M::GET, "/accounts".into(), None),
        (M::POST, "/accounts/sweep".into(), Some(json!({}))),
        (M::POST, "/accounts/dr.x/unlock".into(), Some(json!({}))),
        (M::POST, "/accounts/dr.x/password".into(), Some(pw)),
        (M::POST, "/accounts/dr.x/practitioner".into(), Some(json!({"practitioner": "p1"}))),
        (M::GET, "/accounts/dr.x/tokens".into(), None),
        (M::POST, "/accounts/dr.x/tokens".into(), Some(json!({}))),
        (M::DELETE, format!("/accounts/dr.x/tokens/{token_id}"), None),
        (M::DELETE, "/accounts/dr.x/recovery-codes".into(), None),
        (M::GET, "/accounts/dr.x/webauthn".into(), None),
        (M::DELETE, "/accounts/dr.x/webauthn/bm9uZQ".into(), None),
        (M::GET, "/clients".into(), None),
        (M::POST, "/clients".into(), Some(app)),
        (M::DELETE, "/clients/viewer".into(), None),
    ];
    for (method, path, body) in &calls {
        let (st, r) = call(&s, method.clone(), path, body.as_ref(), &boss).await;
        assert_eq!((st, r["resourceType"].as_str()), (403, Some("OperationOutcome")), "{method} {path}: {r}");
    }
    assert_eq!(count(&s, "action = 'refused' AND outcome = 403 AND actor = 'boss'"), calls.len() as i64);
    // Nothing changed: the token still works, no client was registered, no password was set.
    assert_eq!(fhir_status(&s, &s.token).await, 200);
    assert_eq!(ok(&["client", "list", "--data-dir", s.dir.arg()]).trim(), "");
    assert_eq!(s.dir.query_i64("SELECT count(*) FROM credential_password"), 0);
}

/// AUTH-6 (`mamori user add --practitioner`, `mamori user practitioner` over HTTP): an
/// administrator links a staff account to the person's Practitioner (the `fhirUser` of their ID
/// tokens) when adding it or later. The Practitioner must exist, patient accounts stand for their
/// Patient, other job types are refused; everything is audited.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth6_practitioner_links_over_the_admin_api() {
    let s = Server::start();
    let boss = s.dir.user_with_token("boss", "administrator");
    let pr = create_resource(&s, json!({"resourceType": "Practitioner", "name": [{"family": "Sato"}]})).await;
    let pa = create_resource(&s, json!({"resourceType": "Patient", "name": [{"family": "Alpha"}]})).await;

    let sato = json!({"name": "dr.sato", "role": "physician", "practitioner": pr});
    let (st, r) = post_admin(&s, "/accounts", &sato, &boss).await;
    assert_eq!((st, r["practitioner"].as_str()), (201, Some(pr.as_str())), "{r}");
    let ghost = json!({"name": "dr.ghost", "role": "nurse", "practitioner": "no-such-practitioner"});
    assert_eq!(post_admin(&s, "/accounts", &ghost, &boss).await.0, 404, "the Practitioner must exist");
    let (_, list) = get(&s, "/accounts", &boss).await;
    assert!(!list.to_string().contains("dr.ghost"), "nothing was created: {list}");

    let link = json!({"practitioner": pr});
    assert_eq!(post_admin(&s, "/accounts/dr.test/practitioner", &link, &s.token).await.0, 403);
    let (st, r) = post_admin(&s, "/accounts/dr.test/practitioner", &link, &boss).await;
    assert_eq!((st, r["practitioner"].as_str()), (200, Some(pr.as_str())), "{r}");
    let missing = json!({"practitioner": "no-such-practitioner"});
    assert_eq!(post_admin(&s, "/accounts/dr.test/practitioner", &missing, &boss).await.0, 404);
    assert_eq!(post_admin(&s, "/accounts/nobody/practitioner", &link, &boss).await.0, 404);
    assert_eq!(post_admin(&s, "/patient-accounts", &json!({"name": "alice", "patient": pa}), &boss).await.0, 201);
    assert_eq!(
        post_admin(&s, "/accounts/alice/practitioner", &link, &boss).await.0,
        400,
        "a patient stands for a Patient"
    );
    assert_eq!(post_admin(&s, "/accounts/dr.test/practitioner", &json!({"id": pr}), &boss).await.0, 400);

    assert_eq!(s.dir.query_i64("SELECT count(*) FROM account_practitioner"), 2);
    assert_eq!(count(&s, "action = 'account-create' AND outcome = 201 AND detail LIKE '%Practitioner/%'"), 1);
    assert_eq!(count(&s, "action = 'account-create' AND outcome = 404"), 1);
    assert_eq!(count(&s, "action = 'practitioner-link' AND actor = 'boss' AND outcome = 200"), 1);
    assert_eq!(count(&s, "action = 'practitioner-link' AND actor = 'boss' AND outcome IN (400, 404)"), 3);
    assert_eq!(count(&s, "action = 'refused' AND outcome = 403 AND actor = 'dr.test'"), 1);
}
