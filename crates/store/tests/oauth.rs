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
use mamori_store::oauth::{ClientKind, CodeExchange, CodeGrant, Lifetimes, OAuth, RefreshRequest, Tokens, pkce_s256};
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
    env_with(|_| {}).await
}

/// An environment whose login policy `adjust` changes (after the defaults of [`env`]).
async fn env_with(adjust: impl FnOnce(&mut LoginPolicy)) -> Env {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(time::macros::datetime!(2026-04-01 09:00 UTC)));
    let mut cfg = StoreConfig::new(dir.path().join("db"));
    cfg.clock = clock.clone();
    let store = SqliteStore::open(cfg, &MasterKey::ephemeral()).unwrap();
    let mut p = LoginPolicy::with_hasher(PasswordHasher::floor());
    p.two_factor_roles.clear();
    p.sessions.max_per_account = 2;
    adjust(&mut p);
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
            .login_password_from(
                req(),
                Some("his".into()),
                "dr.sato".into(),
                z("Hakone-Maple-42-River"),
                self.policy.clone(),
            )
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
            zone: Some("his".into()),
        };
        self.store.issue_code(req(), grant).await.unwrap()
    }

    async fn exchange(&self, code: Zeroizing<String>) -> Option<Tokens> {
        let l = Lifetimes::default();
        let x = CodeExchange {
            client_id: "app".into(),
            code,
            redirect_uri: REDIRECT.into(),
            verifier: z(VERIFIER),
            zone: Some("his".into()),
        };
        let r = self.store.exchange_code(req(), x, self.policy.clone(), l);
        r.await.unwrap().ok()
    }

    async fn refresh(&self, t: &Tokens) -> Option<Tokens> {
        self.refresh_from(t, "his").await
    }

    async fn refresh_from(&self, t: &Tokens, zone: &str) -> Option<Tokens> {
        let rt = t.refresh_token.clone().unwrap();
        let x = RefreshRequest { client_id: "app".into(), refresh_token: rt, scope: None, zone: Some(zone.into()) };
        let r = self.store.refresh(req(), x, self.policy.clone(), Lifetimes::default());
        r.await.unwrap().ok()
    }

    async fn works(&self, t: &Tokens) -> bool {
        self.works_from(t, "his").await
    }

    /// Whether the access token is accepted for a request from `zone` (present, alive, and its
    /// sign-in strong enough there).
    async fn works_from(&self, t: &Tokens, zone: &str) -> bool {
        let h = presented(SecretKind::OAuthAccess, &t.access_token).unwrap();
        let g = self.store.authenticate_oauth(h, Some(zone.into()), self.policy.clone()).await.unwrap();
        g.is_some_and(|g| g.sign_in.is_some_and(|s| s.suffices))
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

#[tokio::test]
async fn auth2_acl3_a_password_only_token_is_refused_elsewhere_and_that_use_does_not_count() {
    // Physicians need two factors except on the HIS network, where a password alone suffices.
    let e = env_with(|p| {
        p.two_factor_roles = vec![Role::Physician];
        p.password_only_from = vec![("his".into(), vec![Role::Physician])];
    })
    .await;
    let refused = e.exchange(e.code().await).await.expect("a password alone suffices in the HIS zone");
    let used = e.exchange(e.code().await).await.unwrap();
    assert!(e.works_from(&refused, "his").await);
    assert!(!e.works_from(&refused, "vpn").await, "a password-only sign-in does not carry over to the VPN");
    assert!(!e.works_from(&refused, "internet").await);
    // A refresh from the VPN is refused without spending the refresh token.
    assert!(e.refresh_from(&refused, "vpn").await.is_none());
    let refused = e.refresh(&refused).await.expect("the refresh token was not spent by the refusal");
    assert!(!e.works_from(&refused, "vpn").await, "the rotated tokens keep the sign-in's factors");

    // Four minutes on, one token is used from the VPN (refused), the other from the HIS.
    e.clock.advance(Duration::minutes(4));
    assert!(!e.works_from(&refused, "vpn").await);
    assert!(e.works_from(&used, "his").await);
    // 31 minutes after sign-in: the refused use did not restart the 30-minute idle timeout.
    e.clock.advance(Duration::minutes(27));
    assert!(e.refresh(&refused).await.is_none(), "idle since the sign-in: a refused use is no use");
    assert!(e.refresh(&used).await.is_some(), "used 27 minutes ago: alive");
}
