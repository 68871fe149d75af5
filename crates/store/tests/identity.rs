//! Person login at the store level, with the injected clock: TOTP windows and replay, lockout
//! expiry, session idle and absolute timeouts — all without sleeping. (The HTTP flow over the real
//! binary is `crates/mamori/tests/login.rs`.)
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;

use mamori_access::password::{Argon2Params, PasswordHasher};
use mamori_access::secret::{SecretKind, presented};
use mamori_access::totp::TotpSecret;
use mamori_access::webauthn::{RelyingParty, UserVerification};
use mamori_access::{LoginPolicy, Principal, Role, SharedLoginPolicy};
use mamori_store::clock::{Clock, ManualClock};
use mamori_store::identity::{Identity, LoginOutcome, SecondFactor, Subject};
use mamori_store::keys::MasterKey;
use mamori_store::webauthn::{AssertionResponse, RegistrationResponse, Webauthn};
use mamori_store::{AccessContext, AccountName, Actor, SqliteStore, StoreConfig, StoreError};
use time::Duration;
use zeroize::Zeroizing;

const INITIAL: &str = "Initial-Pass-9876!";
const CHOSEN: &str = "Hakone-Maple-42-River";

struct Env {
    _dir: tempfile::TempDir,
    audit: std::path::PathBuf,
    records: std::path::PathBuf,
    clock: Arc<ManualClock>,
    store: SqliteStore,
    policy: SharedLoginPolicy,
}

fn policy_with(f: impl FnOnce(&mut LoginPolicy)) -> SharedLoginPolicy {
    let mut p = LoginPolicy::with_hasher(PasswordHasher::floor());
    f(&mut p);
    Arc::new(p)
}

fn env_with(f: impl FnOnce(&mut LoginPolicy)) -> Env {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(time::macros::datetime!(2026-04-01 09:00 UTC)));
    let mut cfg = StoreConfig::new(dir.path().join("db"));
    cfg.clock = clock.clone();
    let store = SqliteStore::open(cfg, &MasterKey::ephemeral()).unwrap();
    Env {
        audit: dir.path().join("db-audit.db"),
        records: dir.path().join("db"),
        _dir: dir,
        clock,
        store,
        policy: policy_with(f),
    }
}

fn env() -> Env {
    env_with(|_| {})
}

fn operator() -> AccessContext {
    AccessContext::operator("op", "operator:test")
}

fn from(source: &str) -> AccessContext {
    AccessContext::anonymous("req", source)
}

fn z(s: &str) -> Zeroizing<String> {
    Zeroizing::new(s.to_string())
}

fn ticket(o: LoginOutcome) -> (&'static str, Zeroizing<String>) {
    match o {
        LoginOutcome::Session { token, .. } => ("session", token),
        LoginOutcome::SecondFactorRequired { ticket, .. } => ("second-factor", ticket),
        LoginOutcome::PasswordChangeRequired { ticket, .. } => ("password-change", ticket),
        LoginOutcome::EnrolmentRequired { ticket, .. } => ("enrol", ticket),
    }
}

impl Env {
    fn unix(&self) -> i64 {
        self.clock.now().unix_timestamp()
    }

    async fn account(&self, name: &str, role: Role) {
        let n = AccountName::parse(name).unwrap();
        self.store.create_account(operator(), &n, role, None).await.unwrap();
        self.store.set_initial_password(operator(), &n, z(INITIAL), self.policy.clone()).await.unwrap();
    }

    async fn login(&self, name: &str, pw: &str) -> Result<(&'static str, Zeroizing<String>), StoreError> {
        self.login_from(name, pw, "10.0.0.1").await
    }

    async fn login_from(
        &self,
        name: &str,
        pw: &str,
        src: &str,
    ) -> Result<(&'static str, Zeroizing<String>), StoreError> {
        self.store.login_password(from(src), name.into(), z(pw), self.policy.clone()).await.map(ticket)
    }

    /// Initial password → chosen password; returns what the next password login leads to.
    async fn change_initial(&self, name: &str) -> (&'static str, Zeroizing<String>) {
        let (kind, t) = self.login(name, INITIAL).await.unwrap();
        assert_eq!(kind, "password-change");
        self.store
            .change_password(from("10.0.0.1"), Subject::Ticket(t), None, z(CHOSEN), self.policy.clone())
            .await
            .unwrap();
        self.login(name, CHOSEN).await.unwrap()
    }

    /// Account with a chosen password and an active TOTP (confirmed at the current step).
    async fn enrolled(&self, name: &str) -> TotpSecret {
        self.account(name, Role::Physician).await;
        let (kind, t) = self.change_initial(name).await;
        assert_eq!(kind, "enrol");
        let e = self.store.totp_begin(from("10.0.0.1"), Subject::Ticket(t.clone()), self.policy.clone()).await.unwrap();
        assert!(e.otpauth_uri.starts_with("otpauth://totp/mamori:"), "{}", e.otpauth_uri.as_str());
        let secret = TotpSecret::from_base32(&e.secret_base32).unwrap();
        let code = secret.code_at(self.unix());
        self.store.totp_confirm(from("10.0.0.1"), Subject::Ticket(t), code, self.policy.clone()).await.unwrap();
        secret
    }

    async fn second(
        &self,
        t: Zeroizing<String>,
        f: SecondFactor,
    ) -> Result<(&'static str, Zeroizing<String>), StoreError> {
        self.store.login_second_factor(from("10.0.0.1"), t, f, self.policy.clone()).await.map(ticket)
    }

    async fn session_of(&self, token: &str) -> Option<Principal> {
        let h = presented(SecretKind::Session, token).unwrap();
        self.store.authenticate_session(h, self.policy.clone()).await.unwrap()
    }

    fn audit_count(&self, action: &str) -> i64 {
        let c = rusqlite::Connection::open(&self.audit).unwrap();
        c.query_row("SELECT count(*) FROM audit_event WHERE action = ?1", [action], |r| r.get(0)).unwrap()
    }

    fn audit_details(&self, action: &str) -> Vec<String> {
        let c = rusqlite::Connection::open(&self.audit).unwrap();
        let mut s = c.prepare("SELECT coalesce(detail, '') FROM audit_event WHERE action = ?1 ORDER BY seq").unwrap();
        s.query_map([action], |r| r.get(0)).unwrap().map(Result::unwrap).collect()
    }
}

fn invalid(r: Result<(&'static str, Zeroizing<String>), StoreError>) {
    match r {
        Err(StoreError::InvalidCredentials) => {}
        Err(e) => panic!("expected invalid credentials, got {e:?}"),
        Ok((kind, _)) => panic!("expected invalid credentials, got {kind}"),
    }
}

#[tokio::test]
async fn auth5_lockout_after_failures_expires_by_clock() {
    let e = env();
    e.account("dr.sato", Role::Physician).await;
    for _ in 0..5 {
        invalid(e.login("dr.sato", "Wrong-Pass-0000!").await);
    }
    // Locked: even the right password is refused, with the same answer.
    invalid(e.login("dr.sato", INITIAL).await);
    e.clock.advance(Duration::minutes(14));
    invalid(e.login("dr.sato", INITIAL).await);
    e.clock.advance(Duration::minutes(2));
    let (kind, _) = e.login("dr.sato", INITIAL).await.unwrap();
    assert_eq!(kind, "password-change", "the lock expired after 15 minutes");
    assert_eq!(e.audit_count("login-failure"), 7);
    assert_eq!(e.audit_count("lockout"), 1);
    let reasons = e.audit_details("login-failure");
    assert_eq!(reasons.iter().filter(|r| *r == "bad-password").count(), 5, "{reasons:?}");
    assert_eq!(reasons.iter().filter(|r| *r == "account-locked").count(), 2, "{reasons:?}");
    store_shutdown(e);
}

#[tokio::test]
async fn auth5_failures_are_counted_within_the_period_only() {
    let e = env();
    e.account("dr.sato", Role::Physician).await;
    for _ in 0..4 {
        invalid(e.login("dr.sato", "Wrong-Pass-0000!").await);
    }
    e.clock.advance(Duration::minutes(16));
    invalid(e.login("dr.sato", "Wrong-Pass-0000!").await);
    assert_eq!(e.login("dr.sato", INITIAL).await.unwrap().0, "password-change", "four old failures have lapsed");
    assert_eq!(e.audit_count("lockout"), 0);
    store_shutdown(e);
}

#[tokio::test]
async fn auth5_administrator_unlocks_and_it_is_audited() {
    let e = env();
    e.account("dr.sato", Role::Physician).await;
    for _ in 0..5 {
        invalid(e.login("dr.sato", "Wrong-Pass-0000!").await);
    }
    invalid(e.login("dr.sato", INITIAL).await);
    assert!(e.store.unlock_account(operator(), &AccountName::parse("dr.sato").unwrap()).await.unwrap());
    assert_eq!(e.login("dr.sato", INITIAL).await.unwrap().0, "password-change");
    assert_eq!(e.audit_count("unlock"), 1);
    store_shutdown(e);
}

#[tokio::test]
async fn auth5_source_lockout_covers_unknown_accounts_and_spares_other_sources() {
    let e = env_with(|p| p.source_lockout.threshold = 3);
    e.account("dr.sato", Role::Physician).await;
    for name in ["nobody", "root", "admin"] {
        invalid(e.login_from(name, "Wrong-Pass-0000!", "203.0.113.9").await);
    }
    invalid(e.login_from("dr.sato", INITIAL, "203.0.113.9").await);
    assert_eq!(e.login_from("dr.sato", INITIAL, "10.0.0.2").await.unwrap().0, "password-change");
    let details = e.audit_details("lockout");
    assert_eq!(details.len(), 1);
    assert!(details[0].contains("source 203.0.113.9"), "{details:?}");
    assert!(e.audit_details("login-failure").contains(&"source-locked".to_string()));
    e.clock.advance(Duration::minutes(16));
    assert_eq!(e.login_from("dr.sato", INITIAL, "203.0.113.9").await.unwrap().0, "password-change");
    store_shutdown(e);
}

#[tokio::test]
async fn auth2_totp_window_and_replay_by_clock() {
    let e = env();
    let secret = e.enrolled("dr.sato").await;
    // The enrolment used the current step: the same code cannot log in (replay).
    let (kind, t) = e.login("dr.sato", CHOSEN).await.unwrap();
    assert_eq!(kind, "second-factor");
    invalid(e.second(t, SecondFactor::Totp(secret.code_at(e.unix()))).await);
    // Next step: the code of the step after (within the ±1 window) works once.
    e.clock.advance(Duration::seconds(30));
    let (_, t) = e.login("dr.sato", CHOSEN).await.unwrap();
    let code = secret.code_at(e.unix() + 30);
    let (kind, token) = e.second(t, SecondFactor::Totp(code.clone())).await.unwrap();
    assert_eq!(kind, "session");
    assert!(token.starts_with("mamoris_"));
    // Replay of that code, and the (older) current step's code, are refused.
    let (_, t) = e.login("dr.sato", CHOSEN).await.unwrap();
    invalid(e.second(t, SecondFactor::Totp(code)).await);
    let (_, t) = e.login("dr.sato", CHOSEN).await.unwrap();
    invalid(e.second(t, SecondFactor::Totp(secret.code_at(e.unix()))).await);
    // Two steps later: a code two steps old is outside the window; the current one works.
    e.clock.advance(Duration::seconds(90));
    let (_, t) = e.login("dr.sato", CHOSEN).await.unwrap();
    invalid(e.second(t, SecondFactor::Totp(secret.code_at(e.unix() - 60))).await);
    let (_, t) = e.login("dr.sato", CHOSEN).await.unwrap();
    assert_eq!(e.second(t, SecondFactor::Totp(secret.code_at(e.unix()))).await.unwrap().0, "session");
    // A ticket is single-use and short-lived.
    let (_, t) = e.login("dr.sato", CHOSEN).await.unwrap();
    e.clock.advance(Duration::minutes(6));
    invalid(e.second(t, SecondFactor::Totp(secret.code_at(e.unix()))).await);
    assert!(e.audit_details("login-failure").iter().filter(|d| *d == "bad-totp").count() >= 3);
    assert_eq!(e.audit_details("login").iter().filter(|d| *d == "password+totp").count(), 2);
    store_shutdown(e);
}

#[tokio::test]
async fn auth2_totp_secret_is_encrypted_at_rest() {
    let e = env();
    let secret = e.enrolled("dr.sato").await;
    let c = rusqlite::Connection::open(&e.records).unwrap();
    let sealed: Vec<u8> = c.query_row("SELECT sealed FROM credential_totp", [], |r| r.get(0)).unwrap();
    assert!(!sealed.windows(secret.as_bytes().len()).any(|w| w == secret.as_bytes()), "secret stored in clear");
    assert!(!String::from_utf8_lossy(&sealed).contains(&secret.base32()));
    store_shutdown(e);
}

#[tokio::test]
async fn auth2_role_requiring_two_factors_gets_no_session_with_a_password_alone() {
    let e = env_with(|p| p.two_factor_roles = vec![Role::Administrator]);
    e.account("admin2", Role::Administrator).await;
    e.account("dr.sato", Role::Physician).await;
    assert_eq!(e.change_initial("admin2").await.0, "enrol");
    let (kind, token) = e.change_initial("dr.sato").await;
    assert_eq!(kind, "session", "physicians are not in two_factor_required here");
    assert_eq!(e.session_of(&token).await.unwrap().account, "dr.sato");
    store_shutdown(e);
}

#[tokio::test]
async fn auth3_initial_password_only_changes_the_password() {
    let e = env();
    e.account("dr.sato", Role::Physician).await;
    let (_, t) = e.login("dr.sato", INITIAL).await.unwrap();
    // The password-change ticket is no second-factor ticket and no enrolment ticket.
    invalid(e.second(t.clone(), SecondFactor::Totp("123456".into())).await);
    let (_, t) = e.login("dr.sato", INITIAL).await.unwrap();
    assert!(matches!(
        e.store.totp_begin(from("10.0.0.1"), Subject::Ticket(t.clone()), e.policy.clone()).await,
        Err(StoreError::InvalidCredentials)
    ));
    // The policy applies to the new password, and the initial one cannot be kept.
    let weak = e.store.change_password(from("x"), Subject::Ticket(t.clone()), None, z("short"), e.policy.clone()).await;
    assert!(matches!(weak, Err(StoreError::Invalid { .. })), "{weak:?}");
    let same = e.store.change_password(from("x"), Subject::Ticket(t.clone()), None, z(INITIAL), e.policy.clone()).await;
    assert!(format!("{same:?}").contains("used recently"), "{same:?}");
    e.store.change_password(from("x"), Subject::Ticket(t.clone()), None, z(CHOSEN), e.policy.clone()).await.unwrap();
    // Single use.
    let again =
        e.store.change_password(from("x"), Subject::Ticket(t), None, z("Other-Pass-5555!x"), e.policy.clone()).await;
    assert!(matches!(again, Err(StoreError::InvalidCredentials)));
    invalid(e.login("dr.sato", INITIAL).await);
    assert_eq!(e.login("dr.sato", CHOSEN).await.unwrap().0, "enrol");
    assert_eq!(e.audit_count("password-set"), 1);
    assert_eq!(e.audit_count("password-change"), 1);
    store_shutdown(e);
}

#[tokio::test]
async fn auth3_no_reuse_of_the_last_five_passwords() {
    let e = env_with(|p| p.two_factor_roles.clear());
    e.account("dr.sato", Role::Physician).await;
    let (_, mut token) = e.change_initial("dr.sato").await;
    let principal = e.session_of(&token).await.unwrap();
    let mut current = CHOSEN.to_string();
    for i in 0..4 {
        let next = format!("Kumamoto-Plum-{i}{i}-Bridge");
        let h = presented(SecretKind::Session, &token).unwrap();
        let s = Subject::Session { principal: principal.clone(), token: h };
        e.store.change_password(from("x"), s, Some(z(&current)), z(&next), e.policy.clone()).await.unwrap();
        current = next;
        token = e.login("dr.sato", &current).await.unwrap().1;
    }
    // History: INITIAL, CHOSEN, 0, 1, 2, 3 — the last five are CHOSEN..3.
    let h = presented(SecretKind::Session, &token).unwrap();
    let s = Subject::Session { principal: principal.clone(), token: h };
    let r = e.store.change_password(from("x"), s, Some(z(&current)), z(CHOSEN), e.policy.clone()).await;
    assert!(format!("{r:?}").contains("used recently"), "{r:?}");
    // Wrong current password: generic refusal, counted as a failure.
    let s = Subject::Session { principal, token: h };
    let r = e
        .store
        .change_password(from("x"), s, Some(z("Wrong-Pass-0000!")), z("Fresh-Pass-8080!x"), e.policy.clone())
        .await;
    assert!(matches!(r, Err(StoreError::InvalidCredentials)));
    assert!(e.audit_details("login-failure").contains(&"bad-current-password".to_string()));
    store_shutdown(e);
}

#[tokio::test]
async fn auth3_password_rehashed_on_login_when_parameters_change() {
    let e = env_with(|p| p.two_factor_roles.clear());
    e.account("dr.sato", Role::Physician).await;
    e.change_initial("dr.sato").await;
    let phc = |e: &Env| -> String {
        let c = rusqlite::Connection::open(&e.records).unwrap();
        c.query_row("SELECT phc FROM credential_password", [], |r| r.get(0)).unwrap()
    };
    assert!(phc(&e).contains("m=19456,t=2,p=1"));
    let stronger = policy_with(|p| {
        p.hasher = PasswordHasher::new(Argon2Params { iterations: 3, ..Argon2Params::FLOOR }).unwrap();
        p.two_factor_roles.clear();
    });
    let r = e.store.login_password(from("x"), "dr.sato".into(), z(CHOSEN), stronger.clone()).await.unwrap();
    assert!(matches!(r, LoginOutcome::Session { .. }));
    assert!(phc(&e).contains("m=19456,t=3,p=1"), "{}", phc(&e));
    let r = e.store.login_password(from("x"), "dr.sato".into(), z(CHOSEN), stronger).await.unwrap();
    assert!(matches!(r, LoginOutcome::Session { .. }), "the new hash verifies");
    store_shutdown(e);
}

#[tokio::test]
async fn auth6_session_idle_and_absolute_timeout_by_clock() {
    let e = env_with(|p| p.two_factor_roles.clear());
    e.account("dr.sato", Role::Physician).await;
    let (_, token) = e.change_initial("dr.sato").await;
    assert!(e.session_of(&token).await.is_some());
    e.clock.advance(Duration::minutes(29));
    assert!(e.session_of(&token).await.is_some(), "used within the idle timeout");
    e.clock.advance(Duration::minutes(29));
    assert!(e.session_of(&token).await.is_some(), "each use restarts the idle timeout");
    e.clock.advance(Duration::minutes(31));
    assert!(e.session_of(&token).await.is_none(), "idle for 31 minutes");

    let (_, token) = e.login("dr.sato", CHOSEN).await.unwrap();
    for _ in 0..29 {
        e.clock.advance(Duration::minutes(20));
        assert!(e.session_of(&token).await.is_some());
    }
    e.clock.advance(Duration::minutes(20)); // 10 h after login
    assert!(e.session_of(&token).await.is_none(), "absolute lifetime of 10 h");
    store_shutdown(e);
}

#[tokio::test]
async fn auth6_session_limit_evicts_the_oldest_and_logout_ends_a_session() {
    let e = env_with(|p| p.two_factor_roles.clear());
    e.account("dr.sato", Role::Physician).await;
    let (_, first) = e.change_initial("dr.sato").await;
    let mut tokens = vec![first];
    for _ in 0..3 {
        e.clock.advance(Duration::seconds(1));
        tokens.push(e.login("dr.sato", CHOSEN).await.unwrap().1);
    }
    assert!(e.session_of(&tokens[0]).await.is_none(), "the oldest was evicted");
    for t in &tokens[1..] {
        assert!(e.session_of(t).await.is_some());
    }
    assert_eq!(e.audit_count("session-evict"), 1);
    let who = e.session_of(&tokens[1]).await.unwrap();
    let mut ctx = AccessContext::anonymous("r", "x");
    ctx.actor = Actor::Person(who);
    e.store.logout(ctx, presented(SecretKind::Session, &tokens[1]).unwrap()).await.unwrap();
    assert!(e.session_of(&tokens[1]).await.is_none());
    assert_eq!(e.audit_count("logout"), 1);
    store_shutdown(e);
}

#[tokio::test]
async fn auth8_recovery_codes_are_single_use_and_each_use_is_audited() {
    let e = env();
    let _secret = e.enrolled("dr.sato").await;
    let codes = e.store.issue_recovery_codes(operator(), &AccountName::parse("dr.sato").unwrap(), 10).await.unwrap();
    assert_eq!(codes.len(), 10);
    let (_, t) = e.login("dr.sato", CHOSEN).await.unwrap();
    let typed = codes[0].to_lowercase();
    assert_eq!(e.second(t, SecondFactor::RecoveryCode(z(&typed))).await.unwrap().0, "session");
    let (_, t) = e.login("dr.sato", CHOSEN).await.unwrap();
    invalid(e.second(t, SecondFactor::RecoveryCode(codes[0].clone())).await);
    assert_eq!(e.audit_count("recovery-codes-issue"), 1);
    assert_eq!(e.audit_details("recovery-code-use"), vec!["9 unused recovery code(s) left".to_string()]);
    assert!(e.audit_details("login-failure").contains(&"bad-recovery-code".to_string()));
    // Stored as hashes only.
    let c = rusqlite::Connection::open(&e.records).unwrap();
    let stored: Vec<u8> = c.query_row("SELECT hash FROM recovery_code LIMIT 1", [], |r| r.get(0)).unwrap();
    assert_eq!(stored.len(), 32);
    store_shutdown(e);
}

#[tokio::test]
async fn auth8_temporary_credential_is_one_time_short_lived_and_resets_the_second_factor() {
    let e = env();
    let _lost = e.enrolled("dr.sato").await;
    let name = AccountName::parse("dr.sato").unwrap();
    let (expired, _) = e.store.issue_temporary_credential(operator(), &name, e.policy.clone()).await.unwrap();
    e.clock.advance(Duration::hours(25));
    let temp = |c: &str| e.store.login_temporary(from("10.0.0.1"), "dr.sato".into(), z(c), e.policy.clone());
    invalid(temp(&expired).await.map(ticket));
    let (cred, _) = e.store.issue_temporary_credential(operator(), &name, e.policy.clone()).await.unwrap();
    let (kind, t) = temp(&cred).await.map(ticket).unwrap();
    assert_eq!(kind, "password-change");
    invalid(temp(&cred).await.map(ticket));
    e.store
        .change_password(from("x"), Subject::Ticket(t), None, z("Nara-Deer-77-Temple"), e.policy.clone())
        .await
        .unwrap();
    assert_eq!(e.login("dr.sato", "Nara-Deer-77-Temple").await.unwrap().0, "enrol", "the lost device no longer counts");
    assert_eq!(e.audit_count("temporary-credential-issue"), 2);
    assert_eq!(e.audit_count("temporary-credential-use"), 1);
    store_shutdown(e);
}

#[tokio::test]
async fn auth7_disable_ends_sessions_at_once() {
    let e = env_with(|p| p.two_factor_roles.clear());
    e.account("dr.sato", Role::Physician).await;
    let (_, token) = e.change_initial("dr.sato").await;
    assert!(e.session_of(&token).await.is_some());
    e.store.disable_account(operator(), &AccountName::parse("dr.sato").unwrap()).await.unwrap();
    assert!(e.session_of(&token).await.is_none());
    invalid(e.login("dr.sato", CHOSEN).await);
    assert_eq!(e.audit_details("account-disable"), vec!["1 session(s) ended".to_string()]);
    assert!(e.audit_details("login-failure").contains(&"disabled".to_string()));
    store_shutdown(e);
}

#[path = "../../mamori/tests/support/authenticator.rs"]
mod authenticator;

fn with_webauthn(p: &mut LoginPolicy) {
    let origins = ["https://emr.example.jp".to_string()];
    let rp = RelyingParty::new("emr.example.jp", "mamori", &origins, UserVerification::Preferred, Duration::minutes(2));
    p.webauthn = Some(rp.unwrap());
}

fn registration(r: authenticator::Registration) -> RegistrationResponse {
    RegistrationResponse {
        credential_id: r.credential_id,
        client_data_json: r.client_data_json,
        attestation_object: r.attestation_object,
    }
}

fn assertion(a: authenticator::Assertion) -> AssertionResponse {
    AssertionResponse {
        credential_id: a.credential_id,
        client_data_json: a.client_data_json,
        authenticator_data: a.authenticator_data,
        signature: a.signature,
        user_handle: a.user_handle,
    }
}

#[tokio::test]
async fn auth2_webauthn_challenges_expire_by_clock_and_are_single_use() {
    let e = env_with(with_webauthn);
    let src = || from("10.0.0.1");
    e.account("dr.sato", Role::Physician).await;
    let (kind, enrol) = e.change_initial("dr.sato").await;
    assert_eq!(kind, "enrol");
    let mut key = authenticator::Authenticator::es256(3);
    let subject = || Subject::Ticket(enrol.clone());

    // A registration answered after the challenge's two minutes is refused.
    let o = e.store.webauthn_register_begin(src(), subject(), "key".into(), e.policy.clone()).await.unwrap();
    e.clock.advance(Duration::minutes(2) + Duration::seconds(1));
    let late = registration(key.register(&o.challenge));
    let r = e.store.webauthn_register_finish(src(), subject(), late, e.policy.clone()).await;
    assert!(matches!(r, Err(StoreError::Invalid { .. })), "{r:?}");
    // A fresh one in time registers.
    let o = e.store.webauthn_register_begin(src(), subject(), "key".into(), e.policy.clone()).await.unwrap();
    e.clock.advance(Duration::seconds(119));
    let again = registration(key.register(&o.challenge));
    e.store.webauthn_register_finish(src(), subject(), again, e.policy.clone()).await.unwrap();

    // A login assertion after the challenge expired is refused (the ticket itself still valid).
    let (kind, mfa) = e.login("dr.sato", CHOSEN).await.unwrap();
    assert_eq!(kind, "second-factor");
    let o = e.store.webauthn_login_begin(src(), mfa.clone(), e.policy.clone()).await.unwrap();
    e.clock.advance(Duration::minutes(3));
    let late = assertion(key.assert(&o.challenge));
    invalid(e.store.webauthn_login_finish(src(), mfa, late, e.policy.clone()).await.map(ticket));
    // In time, it logs in; the challenge (and ticket) answer once.
    let (_, mfa) = e.login("dr.sato", CHOSEN).await.unwrap();
    let o = e.store.webauthn_login_begin(src(), mfa.clone(), e.policy.clone()).await.unwrap();
    e.clock.advance(Duration::seconds(90));
    let a = key.assert(&o.challenge);
    let (kind, token) =
        e.store.webauthn_login_finish(src(), mfa.clone(), assertion(a), e.policy.clone()).await.map(ticket).unwrap();
    assert_eq!(kind, "session");
    assert!(e.session_of(&token).await.is_some());
    let replay = assertion(key.assert(&o.challenge));
    invalid(e.store.webauthn_login_finish(src(), mfa, replay, e.policy.clone()).await.map(ticket));

    assert_eq!(e.audit_details("webauthn-enrol").iter().filter(|d| *d == "challenge-expired").count(), 1);
    let failures = e.audit_details("login-failure");
    assert_eq!(failures.iter().filter(|d| *d == "webauthn: challenge-expired").count(), 1, "{failures:?}");
    assert_eq!(failures.iter().filter(|d| *d == "bad-ticket").count(), 1, "{failures:?}");
    store_shutdown(e);
}

fn store_shutdown(e: Env) {
    e.store.shutdown();
}
