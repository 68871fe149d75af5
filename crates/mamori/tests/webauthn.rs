//! WebAuthn as a second factor end to end over HTTP with the real binary (AUTH-2): a software
//! authenticator (`support/authenticator.rs`: its own CBOR, p256 and ed25519-dalek signatures,
//! independent of the server's aws-lc-rs verifier) registers with an enrolment ticket or a
//! session and logs in after the password; every kind of bad response is refused, changes
//! nothing and is audited; credentials are listed and removed by their holder and by an
//! administrator; and the two-factor requirement follows the network zone of the connection.
//! Challenge expiry is proven on the injected clock in `crates/store/tests/identity.rs`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use serde_json::{Value, json};
use support::authenticator::Authenticator;
use support::*;

const INITIAL: &str = "Initial-Pass-9876!";
const PASSWORD: &str = "Hakone-Maple-42-River";
/// A server with WebAuthn configured, plus `extra` configuration.
fn start(extra: &str) -> Server {
    server_with_webauthn(extra)
}

async fn login(s: &Server, name: &str) -> Value {
    let (st, r) = post(s, "/auth/login", &json!({"account": name, "password": PASSWORD}), None).await;
    assert_eq!(st, 200, "{r}");
    r
}

/// An account with a chosen password; returns what its next password login leads to.
async fn person(s: &Server, name: &str, role: &str) -> Value {
    ok(&["user", "add", "--data-dir", s.dir.arg(), "--name", name, "--role", role]);
    assert_eq!(set_password(&s.dir, name, INITIAL).0, 0);
    let (_, r) = post(s, "/auth/login", &json!({"account": name, "password": INITIAL}), None).await;
    let t = r["password_ticket"].as_str().unwrap();
    let (st, r) = post(s, "/auth/password", &json!({"password_ticket": t, "new_password": PASSWORD}), None).await;
    assert_eq!(st, 200, "{r}");
    login(s, name).await
}

/// Registers `a` with an enrolment ticket (`Some`) or a session bearer; returns the finish answer.
async fn register(
    s: &Server,
    a: &mut Authenticator,
    label: &str,
    ticket: Option<&str>,
    bearer: Option<&str>,
) -> (u16, Value) {
    let mut begin = json!({"label": label});
    if let Some(t) = ticket {
        begin["enrol_ticket"] = json!(t);
    }
    let (st, options) = post(s, "/auth/webauthn/register", &begin, bearer).await;
    assert_eq!(st, 200, "{options}");
    let pk = &options["publicKey"];
    assert_eq!((pk["rp"]["id"].as_str(), pk["attestation"].as_str()), (Some("emr.example.jp"), Some("none")));
    let algs: Vec<i64> =
        pk["pubKeyCredParams"].as_array().unwrap().iter().map(|p| p["alg"].as_i64().unwrap()).collect();
    assert_eq!(algs, [-7, -8, -257]);
    let mut finish = json!({"credential": a.create_json(&options)});
    if let Some(t) = ticket {
        finish["enrol_ticket"] = json!(t);
    }
    post(s, "/auth/webauthn/register/finish", &finish, bearer).await
}

/// Password, then a WebAuthn challenge for the ticket: (mfa ticket, request options).
async fn challenge(s: &Server, name: &str) -> (String, Value) {
    let r = login(s, name).await;
    assert_eq!(r["status"], "second-factor-required", "{r}");
    let mfa = r["mfa_ticket"].as_str().unwrap().to_string();
    let (st, options) =
        post(s, "/auth/login/second-factor", &json!({"mfa_ticket": mfa, "method": "webauthn"}), None).await;
    assert_eq!(st, 200, "{options}");
    (mfa, options)
}

async fn finish(s: &Server, mfa: &str, assertion: Value) -> (u16, Value) {
    post(s, "/auth/login/second-factor", &json!({"mfa_ticket": mfa, "webauthn": assertion}), None).await
}

/// A full login with password and `a`; returns the session token.
async fn log_in(s: &Server, name: &str, a: &mut Authenticator) -> String {
    let (mfa, options) = challenge(s, name).await;
    let (st, r) = finish(s, &mfa, a.get_json(&options)).await;
    assert_eq!(st, 200, "{r}");
    r["access_token"].as_str().unwrap().to_string()
}

fn refused(st: u16, r: &Value) {
    assert_eq!(st, 401, "{r}");
    assert_eq!(r["resourceType"], "OperationOutcome");
    assert!(r.to_string().contains("invalid credentials"), "{r}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth2_webauthn_registers_and_logs_in_end_to_end() {
    let s = start("");
    let (_, patient) =
        json(s.post_json("Patient", &json!({"resourceType": "Patient", "gender": "male"})).send().await.unwrap()).await;
    let pid = patient["id"].as_str().unwrap().to_string();
    let r = person(&s, "dr.sato", "physician").await;
    assert_eq!(r["status"], "enrolment-required", "{r}");
    let enrol = r["enrol_ticket"].as_str().unwrap().to_string();

    // ES256 with packed self attestation, registered with the enrolment ticket (spent by it).
    let mut key = Authenticator::es256(11);
    key.fmt = "packed";
    let (st, r) = register(&s, &mut key, "YubiKey 5", Some(&enrol), None).await;
    assert_eq!(st, 200, "{r}");
    assert_eq!(
        (r["status"].as_str(), r["credential"]["attestation"].as_str()),
        (Some("second-factor-active"), Some("packed-self"))
    );
    let mut again = Authenticator::ed25519(12);
    let (st, _) = post(&s, "/auth/webauthn/register", &json!({"enrol_ticket": enrol, "label": "x"}), None).await;
    assert_eq!(st, 401, "the enrolment ticket was spent");

    // The password alone leads to the second factor, which offers WebAuthn.
    let r = login(&s, "dr.sato").await;
    assert_eq!(r["methods"], json!(["webauthn", "recovery_code"]), "{r}");
    let session = log_in(&s, "dr.sato", &mut key).await;
    let resp = s.http.get(s.url(&format!("Patient/{pid}"))).bearer_auth(&session).send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 200);

    // A second credential (EdDSA) added with the session; both are listed with their labels.
    let (st, r) = register(&s, &mut again, "backup key", None, Some(&session)).await;
    assert_eq!(st, 200, "{r}");
    let (st, list) = post(&s, "/auth/webauthn/credentials", &json!({}), Some(&session)).await;
    assert_eq!(st, 200, "{list}");
    let labels: Vec<&str> =
        list["credentials"].as_array().unwrap().iter().map(|c| c["label"].as_str().unwrap()).collect();
    assert_eq!(labels, ["YubiKey 5", "backup key"]);
    let (_, options) = challenge(&s, "dr.sato").await;
    let allowed: Vec<&str> = options["publicKey"]["allowCredentials"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["id"].as_str().unwrap())
        .collect();
    assert_eq!(allowed.len(), 2, "allowCredentials names the account's credentials: {options}");
    log_in(&s, "dr.sato", &mut again).await;
    let (_, list) = post(&s, "/auth/webauthn/credentials", &json!({}), Some(&session)).await;
    assert_eq!(list["credentials"][0]["sign_count"], 1, "{list}");

    // AUTH-2: no passwordless path — a WebAuthn step needs the ticket only a password gives.
    let (st, r) =
        post(&s, "/auth/login/second-factor", &json!({"mfa_ticket": "mamorit_x", "method": "webauthn"}), None).await;
    refused(st, &r);
    let (st, _) = post(&s, "/auth/login", &json!({"account": "dr.sato", "webauthn": {}}), None).await;
    assert_eq!(st, 400);

    let dir = s.stop();
    // The review report (AUTH-7) counts the account's credentials, in JSON and CSV.
    let report: Value = serde_json::from_str(&ok(&["user", "report", "--data-dir", dir.arg()])).unwrap();
    let row = report["accounts"].as_array().unwrap().iter().find(|r| r["name"] == "dr.sato").unwrap();
    assert_eq!((row["webauthn"].as_i64(), row["totp"].as_str()), (Some(2), Some("none")), "{row}");
    let csv = ok(&["user", "report", "--data-dir", dir.arg(), "--format", "csv"]);
    let col = csv.lines().next().unwrap().split(',').position(|h| h == "webauthn").unwrap();
    let line = csv.lines().find(|l| l.starts_with("dr.sato,")).unwrap();
    assert_eq!(line.split(',').nth(col), Some("2"), "{csv}");
    let n = |sql: &str| dir.audit_i64(sql);
    assert_eq!(n("SELECT count(*) FROM audit_event WHERE action = 'webauthn-enrol' AND outcome = 201"), 2);
    assert_eq!(n("SELECT count(*) FROM audit_event WHERE action = 'login' AND detail LIKE 'password+webauthn%'"), 2);
    assert!(n("SELECT count(*) FROM audit_event WHERE action = 'webauthn-challenge'") >= 5);
    assert_eq!(
        n("SELECT count(*) FROM audit_event WHERE action = 'read' AND actor = 'dr.sato' AND outcome = 200"),
        1,
        "the FHIR read is the person's"
    );
    // The public keys are sealed at rest: the raw COSE key bytes are not in the database file.
    let cose = key.cose_key();
    for file in [dir.db(), dir.path.join("mamori.db-wal")] {
        let raw = std::fs::read(&file).unwrap_or_default();
        assert!(!raw.windows(cose.len()).any(|w| w == cose.as_slice()), "a public key in the clear in {file:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth2_webauthn_bad_responses_are_refused_change_nothing_and_are_audited() {
    let s = start("");
    let r = person(&s, "dr.sato", "physician").await;
    let enrol = r["enrol_ticket"].as_str().unwrap().to_string();

    // A registration answered for another origin is refused and stores nothing.
    let mut key = Authenticator::es256(21);
    key.origin = "https://evil.example".into();
    let (st, r) = register(&s, &mut key, "phone", Some(&enrol), None).await;
    assert_eq!(st, 400, "{r}");
    key.origin = "https://emr.example.jp".into();
    let (st, r) = register(&s, &mut key, "phone", Some(&enrol), None).await;
    assert_eq!(st, 200, "the refusal spent the challenge, not the enrolment ticket: {r}");
    let session = log_in(&s, "dr.sato", &mut key).await;
    let counted = key.sign_count;

    // Each bad assertion: 401 "invalid credentials", whatever the reason.
    type Tweak = fn(&mut Authenticator);
    type Mangle = fn(&mut Value);
    fn flip_signature(v: &mut Value) {
        let mut sig = support::authenticator::unb64(v["response"]["signature"].as_str().unwrap());
        let last = sig.len() - 1;
        sig[last] ^= 1;
        v["response"]["signature"] = json!(support::authenticator::b64(&sig));
    }
    let cases: [(Tweak, Mangle); 4] = [
        (|a| a.origin = "https://evil.example".into(), |_| {}),
        (|a| a.rp_id = "evil.example".into(), |_| {}),
        (|a| a.flags = support::authenticator::UV, |_| {}),
        (|_| {}, flip_signature),
    ];
    for (tweak, mangle) in cases {
        let mut a = Authenticator::es256(21);
        a.sign_count = key.sign_count;
        tweak(&mut a);
        let (mfa, options) = challenge(&s, "dr.sato").await;
        let mut v = a.get_json(&options);
        mangle(&mut v);
        let (st, r) = finish(&s, &mfa, v).await;
        refused(st, &r);
    }
    // A credential the server does not know.
    let mut stranger = Authenticator::es256(99);
    let (mfa, options) = challenge(&s, "dr.sato").await;
    let (st, r) = finish(&s, &mfa, stranger.get_json(&options)).await;
    refused(st, &r);
    // A replayed assertion: once with its spent ticket, once under a new ticket and challenge.
    let (mfa, options) = challenge(&s, "dr.sato").await;
    let good = key.get_json(&options);
    let (st, _) = finish(&s, &mfa, good.clone()).await;
    assert_eq!(st, 200);
    let counted_now = key.sign_count;
    let (st, r) = finish(&s, &mfa, good.clone()).await;
    refused(st, &r);
    let (mfa2, _) = challenge(&s, "dr.sato").await;
    let (st, r) = finish(&s, &mfa2, good).await;
    refused(st, &r);
    // The signature counter goes back: a possible clone, refused.
    let mut clone = Authenticator::es256(21);
    clone.sign_count = counted_now - 1;
    let (mfa, options) = challenge(&s, "dr.sato").await;
    let (st, r) = finish(&s, &mfa, clone.get_json(&options)).await;
    refused(st, &r);
    // Malformed JSON of a response is a 400, audited as a refusal.
    let (mfa, _) = challenge(&s, "dr.sato").await;
    let (st, r) = finish(
        &s,
        &mfa,
        json!({"id": "AA", "rawId": "AB", "type": "public-key", "response": {
        "clientDataJSON": "e30", "authenticatorData": "AA", "signature": "AA"}}),
    )
    .await;
    assert_eq!(st, 400, "{r}");

    let (_, list) = post(&s, "/auth/webauthn/credentials", &json!({}), Some(&session)).await;
    assert_eq!(list["credentials"].as_array().unwrap().len(), 1, "{list}");
    assert_eq!(list["credentials"][0]["sign_count"], json!(counted_now), "only the accepted assertions counted");
    assert!(counted_now == counted + 1);
    let dir = s.stop();
    assert_eq!(
        dir.query_i64("SELECT count(*) FROM login_session WHERE account = 'dr.sato'"),
        2,
        "two logins succeeded"
    );
    let failures = |detail: &str| {
        dir.audit_i64(&format!(
            "SELECT count(*) FROM audit_event WHERE action = 'login-failure' AND detail = '{detail}'"
        ))
    };
    for reason in [
        "webauthn: wrong-origin",
        "webauthn: wrong-rp-id",
        "webauthn: user-not-present",
        "webauthn: bad-signature",
        "webauthn: unknown-credential",
        "webauthn: wrong-challenge",
        "webauthn: sign-count-regression",
        "bad-ticket",
    ] {
        assert_eq!(failures(reason), 1, "{reason}");
    }
    let n = |sql: &str| dir.audit_i64(sql);
    assert_eq!(n("SELECT count(*) FROM audit_event WHERE action = 'webauthn-clone-suspected' AND outcome = 401"), 1);
    assert_eq!(
        n(
            "SELECT count(*) FROM audit_event WHERE action = 'webauthn-enrol' AND outcome = 400 AND detail = 'wrong-origin'"
        ),
        1
    );
    assert!(n("SELECT count(*) FROM audit_event WHERE action = 'refused' AND outcome = 400") >= 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth2_webauthn_credentials_are_removed_by_holder_and_administrator() {
    let s = start("");
    let r = person(&s, "dr.sato", "physician").await;
    let enrol = r["enrol_ticket"].as_str().unwrap().to_string();
    let mut first = Authenticator::es256(31);
    let mut second = Authenticator::ed25519(32);
    assert_eq!(register(&s, &mut first, "office key", Some(&enrol), None).await.0, 200);
    let session = log_in(&s, "dr.sato", &mut first).await;
    assert_eq!(register(&s, &mut second, "phone", None, Some(&session)).await.0, 200);
    let (_, list) = post(&s, "/auth/webauthn/credentials", &json!({}), Some(&session)).await;
    let first_id = list["credentials"][0]["id"].as_str().unwrap().to_string();
    let second_id = list["credentials"][1]["id"].as_str().unwrap().to_string();

    // The holder removes one; the removed credential no longer logs in.
    let (st, r) = post(&s, "/auth/webauthn/remove", &json!({"credential": first_id}), Some(&session)).await;
    assert_eq!(st, 200, "{r}");
    let (mfa, options) = challenge(&s, "dr.sato").await;
    let (st, r) = finish(&s, &mfa, first.get_json(&options)).await;
    refused(st, &r);
    // The last second factor of a two-factor role stays (else the password alone would lead to
    // a new enrolment): refused for the holder and for the administrator.
    let (st, r) = post(&s, "/auth/webauthn/remove", &json!({"credential": second_id}), Some(&session)).await;
    assert_eq!(st, 400, "{r}");
    assert!(r.to_string().contains("last second factor"), "{r}");
    let (code, _, err) = mamori(&["user", "webauthn", "remove", "--data-dir", s.dir.arg(), "dr.sato", &second_id]);
    assert_ne!(code, 0);
    assert!(err.contains("temporary credential"), "{err}");
    let (code, _, _) = mamori(&["user", "webauthn", "remove", "--data-dir", s.dir.arg(), "dr.sato", "bm9uZQ"]);
    assert_ne!(code, 0, "unknown credential");
    let out = ok(&["user", "webauthn", "list", "--data-dir", s.dir.arg(), "dr.sato"]);
    assert_eq!(out.lines().count(), 1, "{out}");
    assert!(out.starts_with(&second_id) && out.contains("phone"), "{out}");
    log_in(&s, "dr.sato", &mut second).await;
    // With TOTP or another key enrolled, the administrator may remove a credential.
    let mut third = Authenticator::es256(33);
    assert_eq!(register(&s, &mut third, "spare", None, Some(&session)).await.0, 200);
    ok(&["user", "webauthn", "remove", "--data-dir", s.dir.arg(), "dr.sato", &second_id]);
    let (mfa, options) = challenge(&s, "dr.sato").await;
    refused_pair(finish(&s, &mfa, second.get_json(&options)).await);
    log_in(&s, "dr.sato", &mut third).await;

    let dir = s.stop();
    let n = |sql: &str| dir.audit_i64(sql);
    assert_eq!(n("SELECT count(*) FROM audit_event WHERE action = 'webauthn-remove' AND outcome = 200"), 2);
    assert_eq!(n("SELECT count(*) FROM audit_event WHERE action = 'webauthn-remove' AND outcome = 409"), 2);
    assert_eq!(
        n(
            "SELECT count(*) FROM audit_event WHERE action = 'webauthn-remove' AND outcome = 200 AND actor LIKE 'operator:%'"
        ),
        1,
        "the administrator's removal names the operator"
    );
    assert!(n("SELECT count(*) FROM audit_event WHERE action = 'webauthn-list'") >= 2);
}

fn refused_pair((st, r): (u16, Value)) {
    refused(st, &r);
}

/// A client whose connections come from `local` (a loopback address of the test machine).
fn client_from(local: &str) -> reqwest::Client {
    reqwest::Client::builder().local_address(local.parse::<std::net::IpAddr>().unwrap()).build().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth2_two_factors_required_per_zone_by_source_address() {
    // 127.0.0.1 is the HIS, 127.0.0.2 the VPN; clerks may use a password alone from the HIS only.
    let zones = "\n[[policy.zone]]\nname = \"his\"\naddresses = [\"127.0.0.1/32\"]\n\
                 [[policy.zone]]\nname = \"vpn\"\naddresses = [\"127.0.0.2/32\"]\n\
                 [[policy.zone]]\nname = \"internet\"\naddresses = []\n\
                 [login.password_only_from]\nhis = [\"clerk\"]\n";
    let s = start(zones);
    let his = client_from("127.0.0.1");
    let vpn = client_from("127.0.0.2");
    let url = |p: &str| format!("{}{p}", root(&s));
    let login_from = |c: &reqwest::Client, who: &str| {
        let req = c.post(url("/auth/login")).json(&json!({"account": who, "password": PASSWORD}));
        async move { json(req.send().await.unwrap()).await }
    };
    let r = person(&s, "clerk.ito", "clerk").await;
    assert!(r.get("access_token").is_some(), "the test client is on loopback = his: {r}");
    person(&s, "dr.sato", "physician").await;

    let (st, r) = login_from(&his, "clerk.ito").await;
    assert_eq!(st, 200, "{r}");
    let session = r["access_token"].as_str().expect("a password alone suffices from the HIS").to_string();
    let meta = |c: &reqwest::Client| c.get(s.url("metadata")).bearer_auth(&session).send();
    assert_eq!(meta(&his).await.unwrap().status().as_u16(), 200);
    assert_eq!(meta(&vpn).await.unwrap().status().as_u16(), 401, "that session does not carry over to the VPN");
    let (_, r) = login_from(&vpn, "clerk.ito").await;
    assert_eq!(r["status"], "enrolment-required", "from the VPN a clerk needs two factors: {r}");
    let (_, r) = login_from(&his, "dr.sato").await;
    assert_eq!(r["status"], "enrolment-required", "physicians need two factors everywhere: {r}");

    // Start-up refuses an exception for a zone the policy does not know.
    let dir = s.stop();
    let cfg = dir.path.join("mamori.toml");
    let text = std::fs::read_to_string(&cfg).unwrap().replace("his = [\"clerk\"]", "mars = [\"clerk\"]");
    std::fs::write(&cfg, text).unwrap();
    let (code, _, err) = mamori(&["serve", "--data-dir", dir.arg(), "--listen", "127.0.0.1:0", "--dev"]);
    assert_ne!(code, 0);
    assert!(err.contains("unknown zone \"mars\""), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth2_webauthn_is_off_unless_configured() {
    let s = Server::start();
    let (st, r) = post(&s, "/auth/webauthn/register", &json!({"enrol_ticket": "mamorit_x", "label": "k"}), None).await;
    assert_eq!(st, 404, "{r}");
    assert_eq!(r["resourceType"], "OperationOutcome");
}

/// An administrator's call to `/admin{path}` with `method`: (status, JSON body).
async fn admin(s: &Server, method: reqwest::Method, path: &str, bearer: &str) -> (u16, Value) {
    json(s.http.request(method, format!("{}/admin{path}", root(s))).bearer_auth(bearer).send().await.unwrap()).await
}

/// A password login continued with a recovery code instead of the second factor.
async fn with_recovery_code(s: &Server, name: &str, code: &str) -> (u16, Value) {
    let r = login(s, name).await;
    let mfa = r["mfa_ticket"].as_str().unwrap();
    post(s, "/auth/login/second-factor", &json!({"mfa_ticket": mfa, "recovery_code": code}), None).await
}

/// AUTH-8 and AUTH-2 over HTTP: the holder replaces their own recovery codes with their session
/// and current password (codes shown once; earlier ones stop working); an administrator
/// invalidates someone's unused codes, lists their WebAuthn credentials and removes one — never
/// the last second factor of a two-factor role, never on their own account. Every step, and
/// every refusal, is audited.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth8_recovery_codes_and_credentials_over_http_by_holder_and_administrator() {
    use reqwest::Method as M;
    let s = start("");
    let boss = s.dir.user_with_token("boss", "administrator");
    let r = person(&s, "dr.sato", "physician").await;
    let enrol = r["enrol_ticket"].as_str().unwrap().to_string();
    let mut first = Authenticator::es256(41);
    let mut second = Authenticator::ed25519(42);
    assert_eq!(register(&s, &mut first, "office key", Some(&enrol), None).await.0, 200);
    let session = log_in(&s, "dr.sato", &mut first).await;

    // The holder: a session and the current password, not an API token, no extra fields.
    let (st, r) =
        post(&s, "/auth/recovery-codes", &json!({"current_password": "Wrong-Pass-0000!"}), Some(&session)).await;
    refused(st, &r);
    let (st, api) = post_secret(&s, "/admin/accounts/dr.sato/tokens", &json!({}), &boss).await;
    assert_eq!(st, 201, "{api}");
    let (st, r) = post(&s, "/auth/recovery-codes", &json!({"current_password": PASSWORD}), api["token"].as_str()).await;
    refused(st, &r);
    let (st, r) =
        post(&s, "/auth/recovery-codes", &json!({"current_password": PASSWORD, "count": 3}), Some(&session)).await;
    assert_eq!((st, r["resourceType"].as_str()), (400, Some("OperationOutcome")), "{r}");
    let regenerate = || async {
        let (st, r) = post_secret(&s, "/auth/recovery-codes", &json!({"current_password": PASSWORD}), &session).await;
        assert_eq!(st, 200, "{r}");
        r["recovery_codes"].as_array().unwrap().iter().map(|c| c.as_str().unwrap().to_string()).collect::<Vec<_>>()
    };
    let codes = regenerate().await;
    assert_eq!(codes.len(), 10);
    // A code stands in for the second factor, once.
    let (st, r) = with_recovery_code(&s, "dr.sato", &codes[0]).await;
    assert_eq!(st, 200, "{r}");
    refused_pair(with_recovery_code(&s, "dr.sato", &codes[0]).await);
    // A new set revokes the earlier one.
    let again = regenerate().await;
    refused_pair(with_recovery_code(&s, "dr.sato", &codes[1]).await);

    // The administrator invalidates the unused codes (a lost sheet); new ones are the holder's.
    assert_eq!(admin(&s, M::DELETE, "/accounts/dr.sato/recovery-codes", &s.token).await.0, 403);
    assert_eq!(admin(&s, M::DELETE, "/accounts/nobody/recovery-codes", &boss).await.0, 404);
    let (st, r) = admin(&s, M::DELETE, "/accounts/dr.sato/recovery-codes", &boss).await;
    assert_eq!((st, r["revoked"].as_u64()), (200, Some(10)), "{r}");
    refused_pair(with_recovery_code(&s, "dr.sato", &again[0]).await);

    // Credentials: listed for administrators; the last second factor stays.
    assert_eq!(admin(&s, M::GET, "/accounts/dr.sato/webauthn", &s.token).await.0, 403);
    let (st, list) = admin(&s, M::GET, "/accounts/dr.sato/webauthn", &boss).await;
    assert_eq!(st, 200, "{list}");
    let first_id = list["credentials"][0]["id"].as_str().unwrap().to_string();
    assert_eq!(
        (list["credentials"].as_array().unwrap().len(), list["credentials"][0]["label"].as_str()),
        (1, Some("office key"))
    );
    let (st, r) = admin(&s, M::DELETE, &format!("/accounts/dr.sato/webauthn/{first_id}"), &boss).await;
    assert_eq!(st, 400, "{r}");
    assert!(r.to_string().contains("last second factor"), "{r}");
    log_in(&s, "dr.sato", &mut first).await;
    // With another credential the administrator may remove one — of someone else's account only.
    assert_eq!(register(&s, &mut second, "phone", None, Some(&session)).await.0, 200);
    assert_eq!(admin(&s, M::DELETE, &format!("/accounts/dr.sato/webauthn/{first_id}"), &s.token).await.0, 403);
    assert_eq!(admin(&s, M::DELETE, "/accounts/dr.sato/webauthn/bm9uZQ", &boss).await.0, 404);
    assert_eq!(admin(&s, M::DELETE, "/accounts/dr.sato/webauthn/not*an*id", &boss).await.0, 400);
    let (st, r) = admin(&s, M::DELETE, &format!("/accounts/boss/webauthn/{first_id}"), &boss).await;
    assert_eq!(st, 403, "separation of duties: {r}");
    let (st, r) = admin(&s, M::DELETE, &format!("/accounts/dr.sato/webauthn/{first_id}"), &boss).await;
    assert_eq!((st, r["status"].as_str()), (200, Some("removed")), "{r}");
    let (mfa, options) = challenge(&s, "dr.sato").await;
    refused_pair(finish(&s, &mfa, first.get_json(&options)).await);
    log_in(&s, "dr.sato", &mut second).await;

    let dir = s.stop();
    let n = |sql_where: &str| dir.audit_i64(&format!("SELECT count(*) FROM audit_event WHERE {sql_where}"));
    assert_eq!(n("action = 'recovery-codes-issue' AND actor = 'dr.sato' AND outcome = 201"), 2);
    assert_eq!(n("action = 'login-failure' AND actor = 'dr.sato' AND detail = 'bad-current-password'"), 1);
    assert_eq!(n("action = 'recovery-code-use' AND outcome = 200"), 1);
    assert_eq!(n("action = 'recovery-codes-revoke' AND actor = 'boss' AND outcome = 200"), 1);
    assert_eq!(n("action = 'recovery-codes-revoke' AND actor = 'boss' AND outcome = 404"), 1);
    assert_eq!(n("action = 'webauthn-list' AND actor = 'boss' AND outcome = 200"), 1);
    for (outcome, times) in [(200, 1), (409, 1), (404, 1), (403, 1)] {
        let got = n(&format!("action = 'webauthn-remove' AND actor = 'boss' AND outcome = {outcome}"));
        assert_eq!(got, times, "webauthn-remove {outcome}");
    }
    assert_eq!(n("action = 'refused' AND outcome = 403"), 3, "the physician's three attempts");
}
