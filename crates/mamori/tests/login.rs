//! Person login end to end over HTTP with the real binary (AUTH-2..8): an administrator sets an
//! initial password, the person changes it, enrols TOTP, logs in with password and code, reads a
//! FHIR resource with the session token, logs out. TOTP codes are computed here independently
//! (RFC 6238: HMAC-SHA-1, 6 digits, 30 s) from the secret the server hands out. Time-dependent
//! rules are proven on the injected clock in `crates/store/tests/identity.rs`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;
use serde_json::json;
use support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth2_auth3_http_login_flow_password_change_totp_session_logout() {
    let s = Server::start();
    let (_, patient) =
        json(s.post_json("Patient", &json!({"resourceType": "Patient", "gender": "female"})).send().await.unwrap())
            .await;
    let pid = patient["id"].as_str().unwrap().to_string();
    ok(&["user", "add", "--data-dir", s.dir.arg(), "--name", "dr.sato", "--role", "physician"]);

    // AUTH-3: the administrator's initial password follows the policy too.
    let (code, out) = set_password(&s.dir, "dr.sato", "short");
    assert_ne!(code, 0);
    assert!(out.contains("at least 13"), "{out}");
    let (code, out) = set_password(&s.dir, "dr.sato", "Initial-Pass-9876!");
    assert_eq!(code, 0, "{out}");

    // First login: the initial password only leads to choosing a new one.
    let (st, r) = post(&s, "/auth/login", &json!({"account": "dr.sato", "password": "Initial-Pass-9876!"}), None).await;
    assert_eq!((st, r["status"].as_str()), (200, Some("password-change-required")), "{r}");
    assert!(r.get("access_token").is_none());
    let t = r["password_ticket"].as_str().unwrap();
    let (st, r) = post(&s, "/auth/password", &json!({"password_ticket": t, "new_password": "password"}), None).await;
    assert_eq!(st, 400, "{r}");
    let (st, r) =
        post(&s, "/auth/password", &json!({"password_ticket": t, "new_password": "Hakone-Maple-42-River"}), None).await;
    assert_eq!(st, 200, "{r}");

    // Physicians need two factors (default): the password leads to enrolment.
    let (_, r) =
        post(&s, "/auth/login", &json!({"account": "dr.sato", "password": "Hakone-Maple-42-River"}), None).await;
    assert_eq!(r["status"], "enrolment-required", "{r}");
    let enrol = r["enrol_ticket"].as_str().unwrap().to_string();
    let (st, r) = post(&s, "/auth/totp", &json!({"enrol_ticket": enrol}), None).await;
    assert_eq!(st, 200, "{r}");
    assert!(r["otpauth_uri"].as_str().unwrap().starts_with("otpauth://totp/mamori:dr.sato?secret="), "{r}");
    let secret = base32_decode(r["secret"].as_str().unwrap());
    assert_eq!(secret.len(), 20);
    let (st, r) = post(&s, "/auth/totp/confirm", &json!({"enrol_ticket": enrol, "code": "000000x"}), None).await;
    assert_eq!(st, 400, "{r}");
    let now = unix_now();
    let (st, r) =
        post(&s, "/auth/totp/confirm", &json!({"enrol_ticket": enrol, "code": totp(&secret, now)}), None).await;
    assert_eq!(st, 200, "{r}");

    // Password, then the code of the next step (the current one was spent on enrolment).
    let (_, r) =
        post(&s, "/auth/login", &json!({"account": "dr.sato", "password": "Hakone-Maple-42-River"}), None).await;
    assert_eq!(r["status"], "second-factor-required", "{r}");
    let mfa = r["mfa_ticket"].as_str().unwrap();
    let (st, r) =
        post(&s, "/auth/login/second-factor", &json!({"mfa_ticket": mfa, "totp": totp(&secret, now + 30)}), None).await;
    assert_eq!(st, 200, "{r}");
    assert_eq!(r["token_type"], "Bearer");
    assert_eq!(r["expires_in"], 1800);
    let session = r["access_token"].as_str().unwrap().to_string();

    // The session token reads FHIR like an API token, under the same policy.
    let resp = s.http.get(s.url(&format!("Patient/{pid}"))).bearer_auth(&session).send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let resp = s.http.get(format!("{}/admin/status", root(&s))).bearer_auth(&session).send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 403, "a physician's session has a physician's rights");

    let (st, r) = post(&s, "/auth/logout", &json!({}), Some(&session)).await;
    assert_eq!(st, 200, "{r}");
    let resp = s.http.get(s.url(&format!("Patient/{pid}"))).bearer_auth(&session).send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 401, "logged out");

    let dir = s.stop();
    let n =
        |a: &str| dir.audit_i64(&format!("SELECT count(*) FROM audit_event WHERE action = '{a}' AND outcome < 300"));
    for action in ["password-set", "password-change", "totp-enrol", "login", "logout"] {
        assert!(n(action) >= 1, "{action} not audited");
    }
    let who =
        dir.audit_i64("SELECT count(*) FROM audit_event WHERE action = 'read' AND actor = 'dr.sato' AND outcome = 200");
    assert_eq!(who, 1, "the FHIR read is attributed to the person");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth3_failures_answer_identically_for_unknown_wrong_and_locked() {
    let s = Server::start();
    for name in ["dr.sato", "dr.lock"] {
        ok(&["user", "add", "--data-dir", s.dir.arg(), "--name", name, "--role", "physician"]);
        assert_eq!(set_password(&s.dir, name, "Initial-Pass-9876!").0, 0);
    }
    let login = |account: &str, password: &str| {
        let body = json!({"account": account, "password": password});
        let req = s.http.post(format!("{}/auth/login", root(&s))).json(&body);
        async move {
            let resp = req.send().await.unwrap();
            let status = resp.status().as_u16();
            let www = resp.headers().get("www-authenticate").map(|v| v.to_str().unwrap().to_string());
            (status, www, resp.text().await.unwrap())
        }
    };
    for _ in 0..5 {
        login("dr.lock", "Wrong-Pass-0000!").await;
    }
    let unknown = login("nobody", "Initial-Pass-9876!").await;
    let wrong = login("dr.sato", "Wrong-Pass-0000!").await;
    let locked = login("dr.lock", "Initial-Pass-9876!").await;
    let malformed_name = login("Not A Name", "x").await;
    assert_eq!(unknown.0, 401);
    assert!(unknown.2.contains("invalid credentials"), "{}", unknown.2);
    assert_eq!(unknown, wrong);
    assert_eq!(unknown, locked);
    assert_eq!(unknown, malformed_name);

    // AUTH-5: the administrator lifts the lock; the CLI action is audited.
    ok(&["user", "unlock", "--data-dir", s.dir.arg(), "dr.lock"]);
    let (st, r) = post(&s, "/auth/login", &json!({"account": "dr.lock", "password": "Initial-Pass-9876!"}), None).await;
    assert_eq!((st, r["status"].as_str()), (200, Some("password-change-required")), "{r}");

    let dir = s.stop();
    let n = |a: &str| dir.audit_i64(&format!("SELECT count(*) FROM audit_event WHERE action = '{a}'"));
    assert_eq!(n("lockout"), 1);
    assert_eq!(n("unlock"), 1);
    assert!(n("login-failure") >= 8, "{}", n("login-failure"));
    let reasons = dir.audit_i64(
        "SELECT count(DISTINCT detail) FROM audit_event WHERE action = 'login-failure' \
         AND detail IN ('unknown-account', 'bad-password', 'account-locked')",
    );
    assert_eq!(reasons, 3, "the trail keeps the reason the answer hides");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth8_cli_recovery_codes_temp_credential_and_disable_are_audited() {
    let s = Server::start();
    ok(&["user", "add", "--data-dir", s.dir.arg(), "--name", "dr.sato", "--role", "physician"]);
    let codes = ok(&["user", "recovery-codes", "--data-dir", s.dir.arg(), "dr.sato"]);
    assert_eq!(codes.lines().count(), 10);
    let temp = ok(&["user", "temp-credential", "--data-dir", s.dir.arg(), "dr.sato"]).trim().to_string();
    assert_eq!(temp.len(), 29, "{temp}");
    // The temporary credential leads to choosing a password, once.
    let body = json!({"account": "dr.sato", "temporary_credential": temp});
    let (st, r) = post(&s, "/auth/login", &body, None).await;
    assert_eq!((st, r["status"].as_str()), (200, Some("password-change-required")), "{r}");
    let (st, _) = post(&s, "/auth/login", &body, None).await;
    assert_eq!(st, 401, "one use");
    // Disabling is immediate: the API token of dr.test stops working at once.
    let resp = s.get("metadata").send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    ok(&["user", "disable", "--data-dir", s.dir.arg(), "dr.test"]);
    let resp = s.get("metadata").send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 401);
    let dir = s.stop();
    for action in ["recovery-codes-issue", "temporary-credential-issue", "temporary-credential-use", "account-disable"]
    {
        let n = dir.audit_i64(&format!("SELECT count(*) FROM audit_event WHERE action = '{action}'"));
        assert_eq!(n, 1, "{action}");
    }
    let n = dir.audit_i64(
        "SELECT count(*) FROM audit_event WHERE action = 'recovery-codes-issue' AND actor LIKE 'operator:%'",
    );
    assert_eq!(n, 1, "operator commands name the operator");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth4_first_administrator_logs_in_once_with_the_setup_secret() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("data");
    let out = ok(&["init", "--data-dir", path.to_str().unwrap()]);
    let secret = out
        .lines()
        .find_map(|l| l.strip_prefix("One-time setup secret (shown once, not stored in clear): "))
        .unwrap()
        .trim()
        .to_string();
    let toml = std::fs::read_to_string(path.join("mamori.toml")).unwrap();
    assert!(toml.contains("argon2_memory_kib = "), "calibrated parameters are stored");
    let dir = DataDir::from_path(tmp, path);
    let s = Server::start_in(dir, String::new());
    let body = json!({"account": "admin", "temporary_credential": secret});
    let (st, r) = post(&s, "/auth/login", &body, None).await;
    assert_eq!((st, r["status"].as_str()), (200, Some("password-change-required")), "{r}");
    let t = r["password_ticket"].as_str().unwrap();
    let (st, _) =
        post(&s, "/auth/password", &json!({"password_ticket": t, "new_password": "Shinkansen-Blue-7-Fuji"}), None)
            .await;
    assert_eq!(st, 200);
    let (st, _) = post(&s, "/auth/login", &body, None).await;
    assert_eq!(st, 401, "the setup secret works once");
    let (_, r) =
        post(&s, "/auth/login", &json!({"account": "admin", "password": "Shinkansen-Blue-7-Fuji"}), None).await;
    assert_eq!(r["status"], "enrolment-required", "administrators need two factors: {r}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn net2_login_input_is_bounded_and_errors_are_operation_outcomes() {
    let s = Server::start();
    let big = "x".repeat(20_000);
    let (st, r) = post(&s, "/auth/login", &json!({"account": "a", "password": big}), None).await;
    assert_eq!(st, 413, "{r}");
    assert_eq!(r["resourceType"], "OperationOutcome");
    let resp = s.http.post(format!("{}/auth/login", root(&s))).body("not json").send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 400);
    let (st, r) = post(&s, "/auth/login", &json!({"account": "a", "password": "x", "extra": 1}), None).await;
    assert_eq!(st, 400, "unknown fields are refused: {r}");
    let (st, _) = post(&s, "/auth/logout", &json!({}), None).await;
    assert_eq!(st, 401);
    let (st, _) = post(&s, "/auth/logout", &json!({}), Some(&s.token)).await;
    assert_eq!(st, 401, "an API token is not a session");
    let (st, _) =
        post(&s, "/auth/login/second-factor", &json!({"mfa_ticket": "mamorit_x", "totp": "123456"}), None).await;
    assert_eq!(st, 401);
}
