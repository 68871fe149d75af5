//! OAuth (AUTH-6) at the store level with the injected clock: code lifetime, access token
//! lifetime, and the login session's idle and absolute limits and per-account limit applying to
//! refresh tokens — without sleeping. (The HTTP flow over the real binary is
//! `crates/mamori/tests/oauth.rs`.)
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;

use mamori_access::password::PasswordHasher;
use mamori_access::scope::ScopeSet;
use mamori_access::secret::{SecretKind, presented};
use mamori_access::{LoginPolicy, Role, SharedLoginPolicy, TokenHash};
use mamori_store::clock::ManualClock;
use mamori_store::identity::{Identity, LoginOutcome, Subject};
use mamori_store::keys::MasterKey;
use mamori_store::oauth::{ClientKind, CodeExchange, CodeGrant, Lifetimes, OAuth, Tokens, pkce_s256};
use mamori_store::{AccessContext, AccountName, SqliteStore, StoreConfig};
use time::Duration;
use zeroize::Zeroizing;

const VERIFIER: &str = "a-verifier-of-at-least-forty-three-characters-1234";
const REDIRECT: &str = "https://app.example/cb";

struct Env {
    _dir: tempfile::TempDir,
    clock: Arc<ManualClock>,
    store: SqliteStore,
    policy: SharedLoginPolicy,
}

fn z(s: &str) -> Zeroizing<String> {
    Zeroizing::new(s.to_string())
}

fn req() -> AccessContext {
    AccessContext::anonymous("req", "10.0.0.1")
}

async fn env() -> Env {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(time::macros::datetime!(2026-04-01 09:00 UTC)));
    let mut cfg = StoreConfig::new(dir.path().join("db"));
    cfg.clock = clock.clone();
    let store = SqliteStore::open(cfg, &MasterKey::ephemeral()).unwrap();
    let mut p = LoginPolicy::with_hasher(PasswordHasher::floor());
    p.two_factor_roles.clear();
    p.sessions.max_per_account = 2;
    let policy = Arc::new(p);
    let op = AccessContext::operator("op", "operator:test");
    let n = AccountName::parse("dr.sato").unwrap();
    store.create_account(op.clone(), &n, Role::Physician, None).await.unwrap();
    store.set_initial_password(op.clone(), &n, z("Initial-Pass-9876!"), policy.clone()).await.unwrap();
    let LoginOutcome::PasswordChangeRequired { ticket, .. } =
        store.login_password(req(), "dr.sato".into(), z("Initial-Pass-9876!"), policy.clone()).await.unwrap()
    else {
        panic!("initial password leads to a change")
    };
    store
        .change_password(req(), Subject::Ticket(ticket), None, z("Hakone-Maple-42-River"), policy.clone())
        .await
        .unwrap();
    let scope: ScopeSet = "user/*.rs offline_access".parse().unwrap();
    let kind = ClientKind::Public { redirect_uris: vec![REDIRECT.into()] };
    store.register_client(op, "app".into(), "App".into(), kind, scope).await.unwrap();
    Env { _dir: dir, clock, store, policy }
}

impl Env {
    /// Signs in (password only under this policy) and returns a code bound to the new session.
    async fn code(&self) -> Zeroizing<String> {
        let LoginOutcome::Session { token, .. } = self
            .store
            .login_password(req(), "dr.sato".into(), z("Hakone-Maple-42-River"), self.policy.clone())
            .await
            .unwrap()
        else {
            panic!("a session")
        };
        let grant = CodeGrant {
            session: TokenHash::of(&token),
            account: "dr.sato".into(),
            client_id: "app".into(),
            redirect_uri: REDIRECT.into(),
            challenge: pkce_s256(VERIFIER).unwrap(),
            scope: "user/*.rs offline_access".parse().unwrap(),
        };
        self.store.issue_code(req(), grant).await.unwrap()
    }

    async fn exchange(&self, code: Zeroizing<String>) -> Option<Tokens> {
        let l = Lifetimes::default();
        let x = CodeExchange { client_id: "app".into(), code, redirect_uri: REDIRECT.into(), verifier: z(VERIFIER) };
        let r = self.store.exchange_code(req(), x, self.policy.clone(), l);
        r.await.unwrap().ok()
    }

    async fn refresh(&self, t: &Tokens) -> Option<Tokens> {
        let rt = t.refresh_token.clone().unwrap();
        let r = self.store.refresh(req(), "app".into(), rt, None, self.policy.clone(), Lifetimes::default());
        r.await.unwrap().ok()
    }

    async fn works(&self, t: &Tokens) -> bool {
        let h = presented(SecretKind::OAuthAccess, &t.access_token).unwrap();
        self.store.authenticate_oauth(h, self.policy.clone()).await.unwrap().is_some()
    }
}

#[tokio::test]
async fn auth6_codes_live_sixty_seconds_and_access_tokens_five_minutes() {
    let e = env().await;
    let code = e.code().await;
    e.clock.advance(Duration::seconds(61));
    assert!(e.exchange(code).await.is_none(), "an expired code is refused");
    let code = e.code().await;
    e.clock.advance(Duration::seconds(59));
    let t = e.exchange(code).await.expect("within 60 s");
    assert!(e.works(&t).await);
    e.clock.advance(Duration::minutes(5));
    assert!(!e.works(&t).await, "access tokens expire after five minutes");
    let t2 = e.refresh(&t).await.expect("the refresh token outlives it");
    assert!(e.works(&t2).await);
}

#[tokio::test]
async fn auth6_session_idle_and_absolute_limits_end_refresh() {
    let e = env().await;
    // Idle: 30 minutes without use of the session (or its app) ends it.
    let t = e.exchange(e.code().await).await.unwrap();
    e.clock.advance(Duration::minutes(31));
    assert!(e.refresh(&t).await.is_none(), "idle session: no refresh");
    // Absolute: refreshing every 20 minutes keeps it alive, but not beyond 10 hours.
    let mut t = e.exchange(e.code().await).await.unwrap();
    for _ in 0..29 {
        e.clock.advance(Duration::minutes(20));
        t = e.refresh(&t).await.expect("an active session refreshes");
    }
    e.clock.advance(Duration::minutes(21));
    assert!(e.refresh(&t).await.is_none(), "past the session's absolute lifetime (10 h)");
}

#[tokio::test]
async fn auth6_session_limit_per_account_applies_to_apps() {
    let e = env().await;
    let first = e.exchange(e.code().await).await.unwrap();
    let _second = e.exchange(e.code().await).await.unwrap();
    assert!(e.works(&first).await);
    // A third sign-in (limit 2) ends the oldest session, and the app tokens bound to it.
    let _third = e.exchange(e.code().await).await.unwrap();
    assert!(!e.works(&first).await);
    assert!(e.refresh(&first).await.is_none());
}
