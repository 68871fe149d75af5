//! Account lifecycle (AUTH-7) over HTTP and the CLI with the real binary: role requests approved
//! by a manager (separation of duties), immediate disabling, the review report in JSON and CSV.
//! Inactivity on the injected clock is proven in `crates/store/tests/lifecycle.rs`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use serde_json::{Value, json};
use support::*;

fn root(s: &Server) -> String {
    s.base.trim_end_matches("/fhir").to_string()
}

async fn admin_post(s: &Server, path: &str, body: &Value, bearer: &str) -> (u16, Value) {
    json(s.http.post(format!("{}/admin/accounts{path}", root(s))).bearer_auth(bearer).json(body).send().await.unwrap())
        .await
}

async fn admin_get(s: &Server, path: &str, bearer: &str) -> reqwest::Response {
    s.http.get(format!("{}/admin/accounts{path}", root(s))).bearer_auth(bearer).send().await.unwrap()
}

fn audit_count(s: &Server, action: &str, actor: &str, outcome: i64) -> i64 {
    s.dir.audit_i64(&format!(
        "SELECT count(*) FROM audit_event WHERE action = '{action}' AND actor = '{actor}' AND outcome = {outcome}"
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth7_disable_is_immediate_over_http() {
    let s = Server::start();
    let boss = s.dir.user_with_token("boss", "administrator");
    assert_eq!(s.get("Patient").send().await.unwrap().status().as_u16(), 200);

    // Only administrators disable.
    let (st, r) = admin_post(&s, "/boss/disable", &json!({}), &s.token).await;
    assert_eq!((st, r["resourceType"].as_str()), (403, Some("OperationOutcome")), "{r}");
    let (st, r) = admin_post(&s, "/dr.test/disable", &json!({"colour": "red"}), &boss).await;
    assert_eq!(st, 400, "{r}");
    let (st, r) = admin_post(&s, "/nobody/disable", &json!({}), &boss).await;
    assert_eq!(st, 404, "{r}");

    let (st, r) = admin_post(&s, "/dr.test/disable", &json!({"reason": "left the clinic"}), &boss).await;
    assert_eq!((st, r["status"].as_str()), (200, Some("disabled")), "{r}");
    // The very next request with the account's token is refused.
    assert_eq!(s.get("Patient").send().await.unwrap().status().as_u16(), 401);
    assert_eq!(audit_count(&s, "account-disable", "boss", 200), 1);

    // The report says when and why; enabling restores access.
    let (_, rep) = json(admin_get(&s, "/report", &boss).await).await;
    let dr = rep["accounts"].as_array().unwrap().iter().find(|a| a["name"] == "dr.test").unwrap().clone();
    assert_eq!(dr["disabled_reason"], "left the clinic (by boss)", "{dr}");
    let (st, _) = admin_post(&s, "/dr.test/enable", &json!({}), &boss).await;
    assert_eq!(st, 200);
    assert_eq!(s.get("Patient").send().await.unwrap().status().as_u16(), 200);
    assert_eq!(audit_count(&s, "account-enable", "boss", 200), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth7_role_granted_only_after_manager_approval_over_http() {
    let s = Server::start();
    let boss = s.dir.user_with_token("boss", "administrator");
    let _chief = s.dir.user_with_token("chief", "administrator");
    let dr = s.token.clone();

    // The physician asks for the auditor role for themselves; nothing changes yet.
    let (st, req) =
        admin_post(&s, "/dr.test/role-requests", &json!({"role": "auditor", "reason": "audit duty"}), &dr).await;
    assert_eq!((st, req["status"].as_str()), (201, Some("pending")), "{req}");
    let id = req["id"].as_i64().unwrap();
    assert_eq!(s.get("Patient").send().await.unwrap().status().as_u16(), 200, "still a physician");
    // Bad requests: unknown role, no reason, oversized body.
    let (st, _) = admin_post(&s, "/dr.test/role-requests", &json!({"role": "root", "reason": "x"}), &dr).await;
    assert_eq!(st, 400);
    let (st, _) = admin_post(&s, "/dr.test/role-requests", &json!({"role": "auditor"}), &dr).await;
    assert_eq!(st, 400);
    let (st, _) =
        admin_post(&s, "/dr.test/role-requests", &json!({"role": "auditor", "reason": "x".repeat(20_000)}), &dr).await;
    assert_eq!(st, 413);
    // A physician asks for someone else: refused.
    let (st, r) = admin_post(&s, "/boss/role-requests", &json!({"role": "auditor", "reason": "x"}), &dr).await;
    assert_eq!(st, 403, "{r}");

    // The requester (not a manager) cannot approve.
    let (st, r) = admin_post(&s, &format!("/role-requests/{id}/approve"), &json!({}), &dr).await;
    assert_eq!(st, 403, "{r}");
    // Pending requests are listed for administrators.
    let (st, list) = json(admin_get(&s, "/role-requests", &boss).await).await;
    assert_eq!((st, list["requests"].as_array().unwrap().len()), (200, 1), "{list}");
    // A manager approves: the session's next request has the new role's rights.
    let (st, r) = admin_post(&s, &format!("/role-requests/{id}/approve"), &json!({"note": "Q2 rota"}), &boss).await;
    assert_eq!(
        (st, r["status"].as_str(), r["previous_role"].as_str()),
        (200, Some("approved"), Some("physician")),
        "{r}"
    );
    assert_eq!(s.get("Patient").send().await.unwrap().status().as_u16(), 403, "an auditor reads no records");
    assert_eq!(audit_count(&s, "role-approve", "boss", 200), 1);

    // Separation of duties: the administrator who asked on someone's behalf cannot approve.
    let (_, req) =
        admin_post(&s, "/dr.test/role-requests", &json!({"role": "physician", "reason": "back"}), &boss).await;
    let id2 = req["id"].as_i64().unwrap();
    let resp = s
        .http
        .post(format!("{}/admin/accounts/role-requests/{id2}/approve", root(&s)))
        .bearer_auth(&boss)
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    expect_outcome(resp, 403, "separation of duties").await;
    assert_eq!(audit_count(&s, "role-approve", "boss", 403), 1);

    // The CLI follows the same rules: the operator who asked cannot approve; another manager can reject.
    let out = ok(&["user", "request-role", "--data-dir", s.dir.arg(), "chief", "auditor", "--reason", "cover"]);
    let id3 = out.trim().to_string();
    let (code, _, err) = mamori(&["user", "approve", "--data-dir", s.dir.arg(), &id3]);
    assert_ne!(code, 0);
    assert!(err.contains("separation of duties"), "{err}");
    let (st, r) = admin_post(&s, &format!("/role-requests/{id3}/reject"), &json!({}), &boss).await;
    assert_eq!((st, r["status"].as_str()), (200, Some("rejected")), "{r}");
    let cli = ok(&["user", "requests", "--data-dir", s.dir.arg(), "--all"]);
    let cli: Value = serde_json::from_str(&cli).unwrap();
    assert_eq!(cli["requests"].as_array().unwrap().len(), 3, "{cli}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth7_review_report_lists_every_account_in_json_and_csv() {
    let s = Server::start();
    let auditor = s.dir.user_with_token("audit.k", "auditor");
    let boss = s.dir.user_with_token("boss", "administrator");
    ok(&["user", "request-role", "--data-dir", s.dir.arg(), "dr.test", "auditor", "--reason", "=1+1, \"hi\""]);
    assert_eq!(s.get("Patient").send().await.unwrap().status().as_u16(), 200);

    // Physicians do not see who has what.
    assert_eq!(admin_get(&s, "/report", &s.token).await.status().as_u16(), 403);
    assert_eq!(admin_get(&s, "/report?format=xml", &boss).await.status().as_u16(), 400);

    let (st, rep) = json(admin_get(&s, "/report", &auditor).await).await;
    assert_eq!(st, 200, "{rep}");
    let names: Vec<&str> = rep["accounts"].as_array().unwrap().iter().map(|a| a["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["admin", "audit.k", "boss", "dr.test"]);
    let dr = &rep["accounts"][3];
    assert_eq!(dr["role"], "physician");
    assert_eq!(dr["totp"], "none");
    assert_eq!(dr["webauthn"], 0);
    assert_eq!(dr["api_tokens"], 1);
    assert!(dr["last_used"].is_string(), "token use is recorded: {dr}");
    assert_eq!(dr["pending_requests"][0]["role"], "auditor");
    assert_eq!(rep["accounts"][0]["password"], "none");
    // Zones from the default policy: physicians have grants in every zone, administrators and
    // auditors work from the administration zones only.
    assert_eq!(dr["zones"], json!(["his", "vpn", "internet"]), "{dr}");
    assert_eq!(rep["accounts"][1]["zones"], json!(["his", "vpn"]));

    let resp = admin_get(&s, "/report?format=csv", &boss).await;
    assert_eq!(resp.status().as_u16(), 200);
    assert!(resp.headers()["content-type"].to_str().unwrap().starts_with("text/csv"));
    let csv = resp.text().await.unwrap();
    let lines: Vec<&str> = csv.split_terminator("\r\n").collect();
    assert_eq!(lines.len(), 5, "{csv}");
    assert!(lines[0].starts_with("name,role,zones,created,last_login,last_used,"));
    assert!(lines[4].starts_with("dr.test,physician,his vpn internet,"), "{}", lines[4]);
    assert!(lines[4].contains("#1 auditor by operator:"), "{}", lines[4]);

    let cli = ok(&["user", "report", "--data-dir", s.dir.arg(), "--format", "csv"]);
    assert_eq!(cli.split_terminator("\r\n").count(), 5);
    assert_eq!(audit_count(&s, "account-report", "audit.k", 200), 1);
    assert_eq!(audit_count(&s, "account-report", "boss", 200), 1);
    assert_eq!(s.dir.audit_i64("SELECT count(*) FROM audit_event WHERE action = 'account-report'"), 3);
}

/// AUTH-1/AUTH-8/ACL-4 over the admin API: administrators add staff and patient accounts and issue
/// a temporary credential (shown once, one use), all decided by the policy point and audited;
/// other job types are refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth7_accounts_and_temporary_credentials_over_the_admin_api() {
    let s = Server::start();
    let boss = s.dir.user_with_token("boss", "administrator");
    let auditor = s.dir.user_with_token("audit.k", "auditor");
    let root = root(&s);
    let post_to = |path: &str, body: Value, bearer: &str| {
        let req = s.http.post(format!("{root}/admin{path}")).bearer_auth(bearer).json(&body);
        async move { json(req.send().await.unwrap()).await }
    };

    let (st, r) = post_to("/accounts", json!({"name": "ns.ito", "role": "nurse"}), &boss).await;
    assert_eq!((st, r["role"].as_str()), (201, Some("nurse")), "{r}");
    // Physicians and auditors do not add accounts; duplicates, unknown roles and patients (who
    // need their Patient) are refused.
    assert_eq!(post_to("/accounts", json!({"name": "x.y", "role": "nurse"}), &s.token).await.0, 403);
    assert_eq!(post_to("/accounts", json!({"name": "x.y", "role": "nurse"}), &auditor).await.0, 403);
    assert_ne!(post_to("/accounts", json!({"name": "ns.ito", "role": "nurse"}), &boss).await.0, 201);
    assert_eq!(post_to("/accounts", json!({"name": "x.y", "role": "wizard"}), &boss).await.0, 400);
    assert_eq!(post_to("/accounts", json!({"name": "x.y", "role": "patient"}), &boss).await.0, 400);

    // A temporary credential: shown once, not cached, leads to choosing a password, one use.
    let (st, r) = post_secret(&s, "/admin/accounts/ns.ito/temporary-credential", &json!({}), &boss).await;
    assert_eq!(st, 200, "{r}");
    let temp = r["temporary_credential"].as_str().unwrap().to_string();
    let login = json!({"account": "ns.ito", "temporary_credential": temp});
    let (st, r) = post(&s, "/auth/login", &login, None).await;
    assert_eq!((st, r["status"].as_str()), (200, Some("password-change-required")), "{r}");
    assert_eq!(post(&s, "/auth/login", &login, None).await.0, 401, "one use");
    assert_eq!(post_to("/accounts/ns.ito/temporary-credential", json!({}), &s.token).await.0, 403);
    // Separation of duties: not for one's own account.
    let (st, r) = post_to("/accounts/boss/temporary-credential", json!({}), &boss).await;
    assert_eq!(st, 403, "{r}");

    // A patient account needs an existing Patient.
    let (st, p) = json(s.post_json("Patient", &json!({"resourceType": "Patient"})).send().await.unwrap()).await;
    assert_eq!(st, 201);
    let pid = p["id"].as_str().unwrap();
    let (st, r) = post_to("/patient-accounts", json!({"name": "hanako", "patient": pid}), &boss).await;
    assert_eq!((st, r["patient"].as_str()), (201, Some(pid)), "{r}");
    assert_ne!(post_to("/patient-accounts", json!({"name": "taro", "patient": "no-such-id"}), &boss).await.0, 201);
    assert_eq!(post_to("/patient-accounts", json!({"name": "taro", "patient": pid}), &s.token).await.0, 403);

    let (st, rep) = json(admin_get(&s, "/report", &boss).await).await;
    assert_eq!(st, 200);
    let names: Vec<&str> = rep["accounts"].as_array().unwrap().iter().map(|a| a["name"].as_str().unwrap()).collect();
    assert!(names.contains(&"ns.ito") && names.contains(&"hanako") && !names.contains(&"x.y"), "{names:?}");
    assert_eq!(audit_count(&s, "account-create", "boss", 201), 2);
    assert_eq!(audit_count(&s, "temporary-credential-issue", "boss", 201), 1);
    // The five refusals above (three by a physician, one by an auditor, one to the administrator
    // for their own account) are audited.
    assert_eq!(s.dir.audit_i64("SELECT count(*) FROM audit_event WHERE outcome = 403"), 5);
}
