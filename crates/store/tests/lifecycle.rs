//! Account lifecycle (AUTH-7) at the store level, on the injected clock: role requests approved
//! by a manager with separation of duties, expiry, immediate and automatic disabling, the review
//! report. (Over HTTP with the real binary: `crates/mamori/tests/lifecycle.rs`.)
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;

use mamori_access::{Principal, Role};
use mamori_store::clock::ManualClock;
use mamori_store::keys::MasterKey;
use mamori_store::lifecycle::{Lifecycle, LifecyclePolicy, report_csv};
use mamori_store::{AccessContext, AccountName, Actor, SqliteStore, Store, StoreConfig, StoreError};
use time::Duration;

/// (action, outcome, target id, detail, actor) of one audit row.
type AuditRow = (String, i64, Option<String>, Option<String>, Option<String>);

struct Env {
    _dir: tempfile::TempDir,
    audit: std::path::PathBuf,
    clock: Arc<ManualClock>,
    store: SqliteStore,
}

fn env() -> Env {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(time::macros::datetime!(2026-04-01 09:00 UTC)));
    let mut cfg = StoreConfig::new(dir.path().join("db"));
    cfg.clock = clock.clone();
    let store = SqliteStore::open(cfg, &MasterKey::ephemeral()).unwrap();
    Env { audit: dir.path().join("db-audit.db"), _dir: dir, clock, store }
}

fn operator() -> AccessContext {
    AccessContext::operator("op", "operator:test")
}

fn system() -> AccessContext {
    AccessContext::operator("sweep", "system:lifecycle")
}

fn as_person(account: &str, role: Role) -> AccessContext {
    AccessContext {
        actor: Actor::Person(Principal { account: account.into(), role }),
        ..AccessContext::anonymous("req", "10.0.0.1")
    }
}

fn name(n: &str) -> AccountName {
    AccountName::parse(n).unwrap()
}

fn policy() -> Arc<LifecyclePolicy> {
    Arc::new(LifecyclePolicy::default())
}

impl Env {
    async fn account(&self, n: &str, role: Role) {
        self.store.create_account(operator(), &name(n), role, None).await.unwrap();
    }

    async fn role_of(&self, n: &str) -> String {
        let all = self.store.list_accounts(operator()).await.unwrap();
        all.into_iter().find(|a| a.name == n).unwrap().role
    }

    async fn disabled(&self, n: &str) -> bool {
        let all = self.store.list_accounts(operator()).await.unwrap();
        all.into_iter().find(|a| a.name == n).unwrap().disabled
    }

    /// Audit rows whose action starts with `action_prefix`, in order.
    fn audit_rows(&self, action_prefix: &str) -> Vec<AuditRow> {
        let c = rusqlite::Connection::open_with_flags(&self.audit, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY).unwrap();
        let mut stmt = c
            .prepare(
                "SELECT action, outcome, rid, detail, actor FROM audit_event WHERE action LIKE ?1 || '%' ORDER BY seq",
            )
            .unwrap();
        stmt.query_map([action_prefix], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap()
    }

    fn advance_days(&self, d: i64) {
        self.clock.advance(Duration::days(d));
    }
}

fn is_refusal(e: &StoreError, needle: &str) -> bool {
    e.status() == 403 && e.to_string().contains(needle)
}

#[tokio::test]
async fn auth7_role_granted_only_after_manager_approval() {
    let e = env();
    e.account("boss", Role::Administrator).await;
    e.account("dr.a", Role::Physician).await;
    e.account("dr.b", Role::Physician).await;

    // The person asks for themselves; nothing changes yet.
    let req = e
        .store
        .request_role(as_person("dr.a", Role::Physician), name("dr.a"), Role::Auditor, "quality audit duty".into())
        .await
        .unwrap();
    assert_eq!((req.status.as_str(), req.role.as_str(), req.requested_by.as_str()), ("pending", "auditor", "dr.a"));
    assert_eq!(e.role_of("dr.a").await, "physician");

    // Asking for someone else is an administrator's job; a reason is required.
    let err = e
        .store
        .request_role(as_person("dr.b", Role::Physician), name("dr.a"), Role::Administrator, "x".into())
        .await
        .unwrap_err();
    assert!(is_refusal(&err, "administrator"), "{err}");
    let err = e
        .store
        .request_role(as_person("dr.a", Role::Physician), name("dr.a"), Role::Auditor, " ".into())
        .await
        .unwrap_err();
    assert_eq!(err.status(), 400);

    // A colleague who is not a manager cannot approve.
    let err = e
        .store
        .decide_role_request(as_person("dr.b", Role::Physician), req.id, true, None, policy())
        .await
        .unwrap_err();
    assert!(is_refusal(&err, "manager"), "{err}");
    assert_eq!(e.role_of("dr.a").await, "physician");

    // A manager approves: the role changes now, and only now.
    let done = e
        .store
        .decide_role_request(as_person("boss", Role::Administrator), req.id, true, Some("ok for Q2".into()), policy())
        .await
        .unwrap();
    assert_eq!(
        (done.status.as_str(), done.previous_role.as_deref(), done.decided_by.as_deref()),
        ("approved", Some("physician"), Some("boss"))
    );
    assert_eq!(e.role_of("dr.a").await, "auditor");
    // Decided once.
    let err = e
        .store
        .decide_role_request(as_person("boss", Role::Administrator), req.id, false, None, policy())
        .await
        .unwrap_err();
    assert_eq!(err.status(), 412);

    let rows = e.audit_rows("role-");
    let kinds: Vec<(&str, i64)> = rows.iter().map(|r| (r.0.as_str(), r.1)).collect();
    // The missing reason was refused before reaching the store (the HTTP layer audits it).
    assert_eq!(
        kinds,
        [
            ("role-request", 201),
            ("role-request", 403),
            ("role-approve", 403),
            ("role-approve", 200),
            ("role-reject", 412)
        ]
    );
    let approve = rows.iter().find(|r| r.0 == "role-approve" && r.1 == 200).unwrap();
    assert_eq!(approve.2.as_deref(), Some("dr.a"));
    assert!(approve.3.as_deref().unwrap().contains("physician -> auditor"), "{approve:?}");
    assert_eq!(approve.4.as_deref(), Some("boss"));
}

#[tokio::test]
async fn auth7_no_one_approves_their_own_request() {
    let e = env();
    e.account("boss", Role::Administrator).await;
    e.account("chief", Role::Administrator).await;
    e.account("dr.a", Role::Physician).await;

    // An administrator asking on someone's behalf cannot approve that request.
    let req = e
        .store
        .request_role(as_person("boss", Role::Administrator), name("dr.a"), Role::Auditor, "audit rota".into())
        .await
        .unwrap();
    let err = e
        .store
        .decide_role_request(as_person("boss", Role::Administrator), req.id, true, None, policy())
        .await
        .unwrap_err();
    assert!(is_refusal(&err, "separation of duties"), "{err}");
    assert_eq!(e.role_of("dr.a").await, "physician");

    // An administrator cannot grant themselves a role, even if another person asked for it.
    let own = e
        .store
        .request_role(as_person("chief", Role::Administrator), name("boss"), Role::Auditor, "backup auditor".into())
        .await
        .unwrap();
    let err = e
        .store
        .decide_role_request(as_person("boss", Role::Administrator), own.id, true, None, policy())
        .await
        .unwrap_err();
    assert!(is_refusal(&err, "their own account"), "{err}");
    assert_eq!(e.role_of("boss").await, "administrator");

    // With an approver list, only those named decide (an administrator not on it cannot).
    let listed = Arc::new(LifecyclePolicy { approvers: vec!["dr.director".into()], ..LifecyclePolicy::default() });
    let err = e
        .store
        .decide_role_request(as_person("chief", Role::Administrator), req.id, true, None, listed.clone())
        .await
        .unwrap_err();
    assert!(is_refusal(&err, "manager"), "{err}");
    e.store.decide_role_request(as_person("dr.director", Role::Physician), req.id, true, None, listed).await.unwrap();
    assert_eq!(e.role_of("dr.a").await, "auditor");

    // The second administrator may approve the first request's counterpart.
    e.store
        .decide_role_request(as_person("chief", Role::Administrator), own.id, true, None, policy())
        .await
        .unwrap_err(); // chief asked for it: refused too
    let refused = e.audit_rows("role-approve").iter().filter(|r| r.1 == 403).count();
    assert_eq!(refused, 4);
}

#[tokio::test]
async fn auth7_rejected_and_expired_requests_change_nothing() {
    let e = env();
    e.account("boss", Role::Administrator).await;
    e.account("dr.a", Role::Physician).await;
    let me = as_person("dr.a", Role::Physician);
    let r1 = e.store.request_role(me.clone(), name("dr.a"), Role::Administrator, "want it".into()).await.unwrap();
    let done = e
        .store
        .decide_role_request(as_person("boss", Role::Administrator), r1.id, false, None, policy())
        .await
        .unwrap();
    assert_eq!(done.status, "rejected");
    assert_eq!(e.role_of("dr.a").await, "physician");

    let r2 = e.store.request_role(me, name("dr.a"), Role::Administrator, "again".into()).await.unwrap();
    e.advance_days(15); // past the default request_ttl of 14 days
    let err = e
        .store
        .decide_role_request(as_person("boss", Role::Administrator), r2.id, true, None, policy())
        .await
        .unwrap_err();
    assert_eq!(err.status(), 412, "{err}");
    assert_eq!(e.role_of("dr.a").await, "physician");
    let swept = e.store.lifecycle_sweep(system(), &LifecyclePolicy::default()).await.unwrap();
    assert_eq!(swept.expired, vec![r2.id]);
    let all = e.store.role_requests(operator(), false).await.unwrap();
    assert_eq!(all.iter().map(|r| r.status.as_str()).collect::<Vec<_>>(), ["expired", "rejected"]);
    assert!(e.store.role_requests(operator(), true).await.unwrap().is_empty());
    assert_eq!(e.audit_rows("role-request-expire").len(), 1);
    assert_eq!(e.role_of("dr.a").await, "physician");
}

#[tokio::test]
async fn auth7_accounts_unused_for_n_days_are_disabled_by_clock() {
    let e = env();
    let p = LifecyclePolicy { disable_after: Some(Duration::days(90)), ..LifecyclePolicy::default() };
    e.account("idle", Role::Physician).await;
    e.account("busy", Role::Physician).await;
    let (token, _) = e.store.create_token(operator(), &name("busy"), Duration::days(365)).await.unwrap();

    e.advance_days(50);
    assert!(e.store.authenticate(token.hash()).await.unwrap().is_some(), "token use at day 50");

    e.advance_days(39); // day 89: nobody unused for 90 days yet
    let out = e.store.lifecycle_sweep(system(), &p).await.unwrap();
    assert!(out.disabled.is_empty(), "{out:?}");
    assert!(!e.disabled("idle").await);

    e.advance_days(2); // day 91: created on day 0 and never used
    let out = e.store.lifecycle_sweep(system(), &p).await.unwrap();
    assert_eq!(out.disabled.iter().map(|d| d.0.as_str()).collect::<Vec<_>>(), ["idle"]);
    assert!(e.disabled("idle").await);
    assert!(!e.disabled("busy").await, "used on day 50");

    // A second sweep the same day changes and records nothing.
    assert!(e.store.lifecycle_sweep(system(), &p).await.unwrap().disabled.is_empty());

    e.advance_days(48); // day 139: 89 days after the token's last use
    assert!(e.store.lifecycle_sweep(system(), &p).await.unwrap().disabled.is_empty());
    e.advance_days(2); // day 141
    let out = e.store.lifecycle_sweep(system(), &p).await.unwrap();
    assert_eq!(out.disabled.iter().map(|d| d.0.as_str()).collect::<Vec<_>>(), ["busy"]);
    assert!(e.store.authenticate(token.hash()).await.unwrap().is_none(), "a disabled account's token stops working");

    let rows = e.audit_rows("account-disable");
    assert_eq!(rows.len(), 2, "{rows:?}");
    for (r, who) in rows.iter().zip(["idle", "busy"]) {
        assert_eq!((r.1, r.2.as_deref(), r.4.as_deref()), (200, Some(who), Some("system:lifecycle")));
        assert!(r.3.as_deref().unwrap().starts_with("automatic: unused for 90 days since"), "{r:?}");
    }
    let report = e.store.account_report(operator()).await.unwrap();
    let idle = report.iter().find(|r| r.name == "idle").unwrap();
    assert!(idle.disabled_reason.as_deref().unwrap().starts_with("inactive: unused for 90 days"), "{idle:?}");

    // Enabling counts inactivity afresh; 0 days (off) disables nobody.
    e.store.enable_account(operator(), name("idle")).await.unwrap();
    e.advance_days(89);
    assert!(e.store.lifecycle_sweep(system(), &p).await.unwrap().disabled.is_empty());
    e.advance_days(400);
    let off = LifecyclePolicy { disable_after: None, ..LifecyclePolicy::default() };
    assert!(e.store.lifecycle_sweep(system(), &off).await.unwrap().disabled.is_empty());
    assert!(!e.disabled("idle").await);
}

#[tokio::test]
async fn auth7_token_use_is_recorded_at_most_once_a_minute() {
    let e = env();
    e.account("dr.a", Role::Physician).await;
    let (token, _) = e.store.create_token(operator(), &name("dr.a"), Duration::days(1)).await.unwrap();
    let last_used = |e: &Env| {
        let c = rusqlite::Connection::open_with_flags(
            e.audit.with_file_name("db"),
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
        )
        .unwrap();
        c.query_row("SELECT last_used_us FROM account WHERE name = 'dr.a'", [], |r| r.get::<_, Option<i64>>(0)).unwrap()
    };
    assert_eq!(last_used(&e), None);
    e.store.authenticate(token.hash()).await.unwrap().unwrap();
    let first = last_used(&e).unwrap();
    e.clock.advance(Duration::seconds(30));
    e.store.authenticate(token.hash()).await.unwrap().unwrap();
    assert_eq!(last_used(&e), Some(first), "not rewritten within a minute");
    e.clock.advance(Duration::seconds(31));
    e.store.authenticate(token.hash()).await.unwrap().unwrap();
    assert!(last_used(&e).unwrap() > first);
}

#[tokio::test]
async fn auth7_disable_is_immediate_and_states_why() {
    let e = env();
    e.account("dr.a", Role::Physician).await;
    let (token, _) = e.store.create_token(operator(), &name("dr.a"), Duration::days(1)).await.unwrap();
    assert!(e.store.authenticate(token.hash()).await.unwrap().is_some());
    e.store
        .disable_account_because(as_person("boss", Role::Administrator), name("dr.a"), "left the clinic".into())
        .await
        .unwrap();
    assert!(e.store.authenticate(token.hash()).await.unwrap().is_none());
    let report = e.store.account_report(operator()).await.unwrap();
    assert_eq!(report[0].disabled_reason.as_deref(), Some("left the clinic (by boss)"));
    let err = e.store.disable_account_because(operator(), name("nobody"), String::new()).await.unwrap_err();
    assert_eq!(err.status(), 404);
    let rows = e.audit_rows("account-disable");
    assert_eq!(rows.iter().map(|r| r.1).collect::<Vec<_>>(), [200, 404]);
}

#[tokio::test]
async fn auth7_review_report_lists_every_account_in_json_and_csv() {
    let e = env();
    e.account("boss", Role::Administrator).await;
    e.account("dr.a", Role::Physician).await;
    e.account("audit.k", Role::Auditor).await;
    e.store.issue_recovery_codes(operator(), &name("dr.a"), 3).await.unwrap();
    e.store
        .request_role(as_person("dr.a", Role::Physician), name("dr.a"), Role::Auditor, "=cmd, \"quoted\"".into())
        .await
        .unwrap();
    e.store.disable_account_because(operator(), name("audit.k"), "on leave, until June".into()).await.unwrap();

    let rows = e.store.account_report(operator()).await.unwrap();
    assert_eq!(rows.iter().map(|r| r.name.as_str()).collect::<Vec<_>>(), ["audit.k", "boss", "dr.a"]);
    let dr = &rows[2];
    assert_eq!((dr.role.as_str(), dr.totp.as_str(), dr.password.as_str()), ("physician", "none", "none"));
    assert_eq!(dr.recovery_codes_left, 3);
    assert_eq!(dr.webauthn, 0);
    assert_eq!(dr.pending_requests.len(), 1);
    assert_eq!(dr.pending_requests[0].role, "auditor");
    assert!(dr.zones.is_empty(), "zones come from the access policy, which the server holds");
    assert!(rows[0].disabled_at.is_some());
    let json = serde_json::to_value(&rows).unwrap();
    assert!(json[1]["created"].as_str().unwrap().starts_with("2026-04-01T09:00:00"), "{json}");
    assert!(json[2]["last_login"].is_null());

    let csv = report_csv(&rows);
    let lines: Vec<&str> = csv.split("\r\n").collect();
    assert_eq!(lines.len(), 5, "header, 3 accounts, final empty: {csv}");
    assert!(lines[0].starts_with("name,role,zones,created,last_login,last_used,password,totp,webauthn,"));
    assert!(json[2]["webauthn"] == 0, "{json}");
    assert!(lines[1].contains(",\"on leave, until June (by operator:test)\","), "{}", lines[1]);
    assert!(lines[3].starts_with("dr.a,physician,,"), "{}", lines[3]);
    assert!(lines[3].contains(",#1 auditor by dr.a at 2026-04-01T09:00:00"), "{}", lines[3]);
    // The reason is not in the report (only in the request list), so free text cannot break it.
    assert!(!csv.contains("=cmd"));

    let audited = e.audit_rows("account-report");
    assert_eq!(audited.len(), 1);
    assert_eq!(audited[0].3.as_deref(), Some("3 account(s)"));
}

#[tokio::test]
async fn auth7_a_login_counts_as_use_of_the_account() {
    use mamori_access::LoginPolicy;
    use mamori_access::password::PasswordHasher;
    use mamori_store::identity::{Identity, LoginOutcome, Subject};
    use zeroize::Zeroizing;

    let e = env();
    let mut lp = LoginPolicy::with_hasher(PasswordHasher::floor());
    lp.two_factor_roles = Vec::new();
    let lp = Arc::new(lp);
    let z = |s: &str| Zeroizing::new(s.to_string());
    let from = AccessContext::anonymous("r", "10.0.0.1");
    e.account("dr.a", Role::Physician).await;
    e.store.set_initial_password(operator(), &name("dr.a"), z("Initial-Pass-9876!"), lp.clone()).await.unwrap();
    let LoginOutcome::PasswordChangeRequired { ticket, .. } =
        e.store.login_password(from.clone(), "dr.a".into(), z("Initial-Pass-9876!"), lp.clone()).await.unwrap()
    else {
        panic!("initial password must be changed")
    };
    e.store
        .change_password(from.clone(), Subject::Ticket(ticket), None, z("Hakone-Maple-42-River"), lp.clone())
        .await
        .unwrap();

    e.advance_days(80);
    let out = e.store.login_password(from, "dr.a".into(), z("Hakone-Maple-42-River"), lp).await.unwrap();
    assert!(matches!(out, LoginOutcome::Session { .. }));
    let report = e.store.account_report(operator()).await.unwrap();
    assert!(report[0].last_login.as_deref().unwrap().starts_with("2026-06-20T09:00:00"), "{:?}", report[0]);
    assert_eq!(report[0].last_login, report[0].last_used);

    let p = LifecyclePolicy::default();
    e.advance_days(89); // 169 days after creation, 89 after the login
    assert!(e.store.lifecycle_sweep(system(), &p).await.unwrap().disabled.is_empty());
    e.advance_days(2);
    assert_eq!(e.store.lifecycle_sweep(system(), &p).await.unwrap().disabled.len(), 1);
}

/// AUTH-7, API tokens on the injected clock: lifetimes bounded by the token policy (refusals
/// audited), the list shows ids, expiry and last use but no secret, a token past its expiry is
/// listed as expired and refused, and revocation (by the listed id, of that account only) stops
/// a token at once.
#[tokio::test]
async fn auth7_api_tokens_expire_by_clock_list_without_secrets_and_revoke_at_once() {
    use mamori_store::accounts::TokenPolicy;
    let e = env();
    e.account("dr.a", Role::Physician).await;
    e.account("dr.b", Role::Physician).await;
    let p = TokenPolicy { default_ttl: Duration::hours(1), max_ttl: Duration::days(2) };
    let boss = || as_person("boss", Role::Administrator);
    let too_long = e.store.issue_api_token(boss(), name("dr.a"), Some(Duration::days(3)), p).await;
    assert!(matches!(too_long, Err(StoreError::Invalid { .. })), "longer than max_ttl");
    let (short, _) = e.store.issue_api_token(boss(), name("dr.a"), None, p).await.unwrap();
    let (long, _) = e.store.issue_api_token(boss(), name("dr.a"), Some(Duration::days(2)), p).await.unwrap();
    e.store.authenticate(long.hash()).await.unwrap().unwrap();

    let list = e.store.api_tokens(boss(), name("dr.a")).await.unwrap();
    assert_eq!(list.len(), 2);
    let listed = serde_json::to_string(&list).unwrap();
    assert!(!listed.contains(short.secret()) && !listed.contains(long.secret()), "{listed}");
    assert_eq!(list[0].id, short.hash().public_id());
    assert!(list.iter().all(|t| !t.expired));
    assert!(list[1].last_used.is_some() && list[0].last_used.is_none());

    // The default lifetime (1 h) passes: listed as expired, refused; the other still works.
    e.clock.advance(Duration::minutes(61));
    let list = e.store.api_tokens(boss(), name("dr.a")).await.unwrap();
    assert_eq!((list[0].expired, list[1].expired), (true, false));
    assert!(e.store.authenticate(short.hash()).await.unwrap().is_none());
    assert!(e.store.authenticate(long.hash()).await.unwrap().is_some());

    // Revocation: by the id, of that account only; at once.
    let id = long.hash().public_id();
    assert!(matches!(e.store.revoke_api_token(boss(), name("dr.b"), id.clone()).await, Err(StoreError::NotFound(_))));
    assert!(e.store.authenticate(long.hash()).await.unwrap().is_some(), "another account's revocation changes nothing");
    e.store.revoke_api_token(boss(), name("dr.a"), id.clone()).await.unwrap();
    assert!(e.store.authenticate(long.hash()).await.unwrap().is_none());
    assert!(matches!(e.store.revoke_api_token(boss(), name("dr.a"), id).await, Err(StoreError::NotFound(_))));
    assert!(matches!(
        e.store.revoke_api_token(boss(), name("dr.a"), "not-an-id".into()).await,
        Err(StoreError::Invalid { .. })
    ));

    let rows = e.audit_rows("token-");
    let outcomes: Vec<(&str, i64)> = rows.iter().map(|r| (r.0.as_str(), r.1)).collect();
    assert_eq!(
        outcomes,
        [
            ("token-create", 400),
            ("token-create", 201),
            ("token-create", 201),
            ("token-list", 200),
            ("token-list", 200),
            ("token-revoke", 404),
            ("token-revoke", 200),
            ("token-revoke", 404),
            ("token-revoke", 400),
        ]
    );
    assert!(
        rows.iter().all(|r| r.4.as_deref() == Some("boss") && r.2.as_deref().is_some_and(|t| t.starts_with("dr.")))
    );
}
