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
use mamori_store::oauth::{
    ClientKind, CodeExchange, CodeGrant, Lifetimes, OAuth, OAuthGrant, RefreshRequest, Tokens, pkce_s256,
};
use mamori_store::oauth_launch::{CodeContext, LAUNCH_TTL_US, Launches};
use mamori_store::{AccessContext, AccountName, SqliteStore, StoreConfig, StoreError};
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

/// Physicians need two factors except on the HIS network, where a password alone suffices.
async fn env_his_password_only() -> Env {
    env_with(|p| {
        p.two_factor_roles = vec![Role::Physician];
        p.password_only_from = vec![("his".into(), vec![Role::Physician])];
    })
    .await
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
        self.code_for("app", "user/*.rs offline_access", CodeContext::default()).await.unwrap()
    }

    /// Signs in and asks for a code for `client` with `scope` and an authorisation context.
    async fn code_for(&self, client: &str, scope: &str, context: CodeContext) -> Result<Zeroizing<String>, StoreError> {
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
            client_id: client.into(),
            redirect_uri: REDIRECT.into(),
            challenge: pkce_s256(VERIFIER).unwrap(),
            scope: scope.parse().unwrap(),
            zone: Some("his".into()),
            context,
        };
        self.store.issue_code(req(), grant).await
    }

    async fn exchange(&self, code: Zeroizing<String>) -> Option<Tokens> {
        self.exchange_for("app", code, "his").await
    }

    /// Exchanges a code for `client` from `zone`.
    async fn exchange_for(&self, client: &str, code: Zeroizing<String>, zone: &str) -> Option<Tokens> {
        let l = Lifetimes::default();
        let x = CodeExchange {
            client_id: client.into(),
            code,
            redirect_uri: REDIRECT.into(),
            verifier: z(VERIFIER),
            zone: Some(zone.into()),
        };
        let r = self.store.exchange_code(req(), x, self.policy.clone(), l);
        r.await.unwrap().ok()
    }

    async fn refresh(&self, t: &Tokens) -> Option<Tokens> {
        self.refresh_from(t, "his").await
    }

    async fn refresh_from(&self, t: &Tokens, zone: &str) -> Option<Tokens> {
        self.refresh_for("app", t, zone).await
    }

    /// Refreshes `client`'s tokens from `zone`.
    async fn refresh_for(&self, client: &str, t: &Tokens, zone: &str) -> Option<Tokens> {
        let rt = t.refresh_token.clone().unwrap();
        let x = RefreshRequest { client_id: client.into(), refresh_token: rt, scope: None, zone: Some(zone.into()) };
        let r = self.store.refresh(req(), x, self.policy.clone(), Lifetimes::default());
        r.await.unwrap().ok()
    }

    async fn works(&self, t: &Tokens) -> bool {
        self.works_from(t, "his").await
    }

    /// Whether the access token is accepted for a request from `zone` (present, alive, and its
    /// sign-in strong enough there).
    async fn works_from(&self, t: &Tokens, zone: &str) -> bool {
        self.grant_from(t, zone).await.is_some_and(|g| g.sign_in.is_some_and(|s| s.suffices))
    }

    /// What the access token stands for in a request from `zone`, if it is known and alive.
    async fn grant_from(&self, t: &Tokens, zone: &str) -> Option<OAuthGrant> {
        let h = presented(SecretKind::OAuthAccess, &t.access_token).unwrap();
        self.store.authenticate_oauth(h, Some(zone.into()), self.policy.clone()).await.unwrap()
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
async fn auth6_launch_is_single_use_and_expires() {
    let e = env().await;
    let op = AccessContext::operator("op", "operator:test");
    let kind = ClientKind::Public { redirect_uris: vec![REDIRECT.into()] };
    let scope: ScopeSet = "launch patient/*.rs offline_access".parse().unwrap();
    e.store.register_client(op, "viewer".into(), "Viewer".into(), kind, scope).await.unwrap();
    let launch = |client: &'static str| {
        let store = &e.store;
        async move { store.create_launch(req(), "dr.sato".into(), client.into(), "p1".into()).await }
    };
    let with = |l: &Zeroizing<String>| CodeContext { launch: Some(l.clone()), nonce: Some("n-1".into()) };
    let scope = "launch patient/*.rs offline_access";
    // Only apps registered for EHR launch get launch contexts.
    assert!(matches!(launch("app").await, Err(StoreError::Invalid { .. })));

    // Expiry: five minutes on the injected clock.
    let l = launch("viewer").await.unwrap();
    assert_eq!(l.expires_in * 1_000_000, LAUNCH_TTL_US);
    assert!(e.store.launch_usable(l.launch.clone(), "viewer".into()).await.unwrap());
    assert!(!e.store.launch_usable(l.launch.clone(), "app".into()).await.unwrap(), "bound to its app");
    e.clock.advance(Duration::seconds(301));
    assert!(!e.store.launch_usable(l.launch.clone(), "viewer".into()).await.unwrap());
    assert!(e.code_for("viewer", scope, with(&l.launch)).await.is_err(), "an expired launch is refused");

    // Within its lifetime it is used once: the code, the tokens and their refreshes carry it.
    let l = launch("viewer").await.unwrap();
    e.clock.advance(Duration::seconds(299));
    let code = e.code_for("viewer", scope, with(&l.launch)).await.expect("within five minutes");
    assert!(!e.store.launch_usable(l.launch.clone(), "viewer".into()).await.unwrap(), "spent");
    assert!(e.code_for("viewer", scope, with(&l.launch)).await.is_err(), "single use");
    let t = e.exchange_for("viewer", code, "his").await.unwrap();
    assert_eq!((t.patient.as_deref(), t.nonce.as_deref()), (Some("p1"), Some("n-1")));
    let g = e.grant_from(&t, "his").await.unwrap();
    assert_eq!(g.patient.as_deref(), Some("p1"));
    let r = e.refresh_for("viewer", &t, "his").await.unwrap();
    assert_eq!((r.patient.as_deref(), r.nonce), (Some("p1"), None));

    // Another person's launch is refused (and spent); a code without launch has no patient.
    let l = e.store.create_launch(req(), "dr.other".into(), "viewer".into(), "p1".into()).await.unwrap();
    assert!(e.code_for("viewer", scope, with(&l.launch)).await.is_err());
    assert!(!e.store.launch_usable(l.launch.clone(), "viewer".into()).await.unwrap());
    let t = e.exchange(e.code().await).await.unwrap();
    assert_eq!((t.patient, t.nonce), (None, None));
}

#[tokio::test]
async fn auth2_acl3_a_password_only_token_is_refused_elsewhere_and_that_use_does_not_count() {
    let e = env_his_password_only().await;
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

#[tokio::test]
async fn auth2_auth6_an_ehr_launch_token_meets_the_zone_rule_and_keeps_its_patient() {
    let e = env_his_password_only().await;
    let op = AccessContext::operator("op", "operator:test");
    let kind = ClientKind::Public { redirect_uris: vec![REDIRECT.into()] };
    let scope = "launch patient/*.rs offline_access";
    e.store.register_client(op, "viewer".into(), "Viewer".into(), kind, scope.parse().unwrap()).await.unwrap();
    let launched = || async {
        let l = e.store.create_launch(req(), "dr.sato".into(), "viewer".into(), "p1".into()).await.unwrap();
        e.code_for("viewer", scope, CodeContext { launch: Some(l.launch), nonce: None }).await.unwrap()
    };
    // The code of a password-only sign-in on the HIS network is refused from the VPN (and spent).
    assert!(e.exchange_for("viewer", launched().await, "vpn").await.is_none());
    let t = e.exchange_for("viewer", launched().await, "his").await.expect("a password alone suffices in the HIS");
    assert_eq!(t.patient.as_deref(), Some("p1"));
    // Every request: the launch patient comes with the sign-in, judged at the request's zone.
    let g = e.grant_from(&t, "vpn").await.unwrap();
    assert_eq!((g.patient.as_deref(), g.sign_in.map(|s| s.suffices)), (Some("p1"), Some(false)));
    assert!(e.works_from(&t, "his").await && !e.works_from(&t, "vpn").await);
    // Refresh: refused from the VPN without spending the token; the rotated tokens keep both.
    assert!(e.refresh_for("viewer", &t, "vpn").await.is_none());
    let r = e.refresh_for("viewer", &t, "his").await.expect("the refresh token was not spent by the refusal");
    assert_eq!(r.patient.as_deref(), Some("p1"));
    assert!(e.works_from(&r, "his").await && !e.works_from(&r, "vpn").await);
}
