//! Person login (AUTH-2..6, AUTH-8): passwords, TOTP, recovery codes, temporary credentials,
//! lockout and sessions. Every step is audited in the same transaction as its effect; every
//! failure answers [`StoreError::InvalidCredentials`] whatever the cause, while the audit row
//! records the cause.
//!
//! Slow work (argon2) runs on the blocking pool before the writer job; the writer job re-reads
//! what it needs and decides.

use std::sync::Arc;

use mamori_access::password::PasswordProblem;
use mamori_access::secret::{
    IssuedSecret, RECOVERY_CODE_GROUPS, SecretKind, TEMPORARY_GROUPS, presented, presented_readable,
};
use mamori_access::totp::{STEP_SECONDS, TotpSecret};
use mamori_access::{Principal, Role, SharedLoginPolicy, TokenHash};
use rusqlite::{Connection, OptionalExtension, params};
use zeroize::Zeroizing;

use crate::accounts::AccountName;
use crate::audit;
use crate::clock::to_micros;
use crate::engine::savepoint_keeping;
use crate::model::{AccessContext, Action, Actor, AuditEvent};
use crate::writes::Tx;
use crate::{SqliteStore, StoreError, StoreFuture};

/// Schema of the credential tables, appended to the records database's migration chain.
pub(crate) const MIGRATION: &str = r#"
-- Current password of an account: argon2id PHC string (AUTH-3). must_change: set by an
-- administrator (or reset), usable only to choose a new one.
CREATE TABLE credential_password (
    account     TEXT PRIMARY KEY REFERENCES account(name),
    phc         TEXT NOT NULL,
    must_change INTEGER NOT NULL,
    set_us      INTEGER NOT NULL
) WITHOUT ROWID;
-- Earlier passwords (hashes), newest first by set_us, for the no-reuse rule.
CREATE TABLE password_history (
    account TEXT NOT NULL REFERENCES account(name),
    set_us  INTEGER NOT NULL,
    phc     TEXT NOT NULL,
    PRIMARY KEY (account, set_us)
) WITHOUT ROWID;
-- TOTP secret sealed with the 'credentials' data key (AES-256-GCM, bound to the account name).
-- active = 0 until the person proves a code; last_step: replay protection.
CREATE TABLE credential_totp (
    account    TEXT PRIMARY KEY REFERENCES account(name),
    key_id     INTEGER NOT NULL,
    sealed     BLOB    NOT NULL,
    active     INTEGER NOT NULL,
    last_step  INTEGER,
    created_us INTEGER NOT NULL
) WITHOUT ROWID;
-- One-time recovery codes (AUTH-8): SHA-256 only.
CREATE TABLE recovery_code (
    hash       BLOB PRIMARY KEY,
    account    TEXT NOT NULL REFERENCES account(name),
    created_us INTEGER NOT NULL,
    used_us    INTEGER
) WITHOUT ROWID;
-- Administrator-issued temporary credentials (AUTH-8): SHA-256, short-lived, one use.
CREATE TABLE temporary_credential (
    hash       BLOB PRIMARY KEY,
    account    TEXT NOT NULL REFERENCES account(name),
    created_us INTEGER NOT NULL,
    expires_us INTEGER NOT NULL,
    used_us    INTEGER
) WITHOUT ROWID;
-- Single-use steps of a login: 'second-factor', 'password-change', 'enrol'.
CREATE TABLE login_ticket (
    hash       BLOB PRIMARY KEY,
    account    TEXT NOT NULL REFERENCES account(name),
    purpose    TEXT NOT NULL,
    expires_us INTEGER NOT NULL
) WITHOUT ROWID;
-- Login sessions (AUTH-6): SHA-256 of the bearer token.
CREATE TABLE login_session (
    hash         BLOB PRIMARY KEY,
    account      TEXT NOT NULL REFERENCES account(name),
    created_us   INTEGER NOT NULL,
    last_used_us INTEGER NOT NULL,
    expires_us   INTEGER NOT NULL,
    factors      TEXT NOT NULL
) WITHOUT ROWID;
CREATE INDEX login_session_by_account ON login_session (account, created_us);
-- Failure counting and lockout (AUTH-5); kind 'account' or 'source'.
CREATE TABLE login_throttle (
    kind            TEXT    NOT NULL,
    key             TEXT    NOT NULL,
    failures        INTEGER NOT NULL,
    window_start_us INTEGER NOT NULL,
    locked_until_us INTEGER NOT NULL,
    PRIMARY KEY (kind, key)
) WITHOUT ROWID;
"#;

/// Audit actions of authentication itself (DICOM "User Authentication" in the FHIR view).
pub(crate) fn is_authentication_action(a: &str) -> bool {
    matches!(
        a,
        "login"
            | "login-failure"
            | "lockout"
            | "logout"
            | "session-evict"
            | "recovery-code-use"
            | "temporary-credential-use"
            | "oauth-authorize"
            | "oauth-token"
            | "oauth-refresh"
            | "oauth-revoke"
            | "oauth-failure"
            | "oauth-launch"
            | "webauthn-challenge"
            | "webauthn-clone-suspected"
    )
}

/// Audit actions about accounts' credentials (not RESTful interactions).
pub(crate) fn is_identity_action(a: &str) -> bool {
    is_authentication_action(a)
        || matches!(
            a,
            "unlock"
                | "password-set"
                | "password-change"
                | "totp-enrol"
                | "webauthn-enrol"
                | "webauthn-remove"
                | "webauthn-list"
                | "recovery-codes-issue"
                | "recovery-codes-revoke"
                | "token-revoke"
                | "temporary-credential-issue"
                | "account-disable"
                | "account-enable"
                | "role-request"
                | "role-approve"
                | "role-reject"
                | "role-request-expire"
                | "oauth-client-register"
                | "oauth-client-remove"
                | "practitioner-link"
        )
}

/// Where a password login (or a later step) leads.
pub enum LoginOutcome {
    /// Logged in: a session bearer token, shown once.
    Session { token: Zeroizing<String>, expires_in: i64 },
    /// The password was right; a second factor must follow with this ticket, by one of
    /// `methods` (`totp`, `webauthn`, `recovery_code`).
    SecondFactorRequired { ticket: Zeroizing<String>, expires_in: i64, methods: Vec<&'static str> },
    /// The password is an initial (or reset) one: only a new password can be set with the ticket.
    PasswordChangeRequired { ticket: Zeroizing<String>, expires_in: i64 },
    /// The role needs two factors and none is enrolled: only enrolment with the ticket.
    EnrolmentRequired { ticket: Zeroizing<String>, expires_in: i64 },
}

/// The second step of a login.
pub enum SecondFactor {
    Totp(String),
    RecoveryCode(Zeroizing<String>),
}

/// Who is acting on their own credentials: a login ticket, or a logged-in session.
pub enum Subject {
    Ticket(Zeroizing<String>),
    Session { principal: Principal, token: TokenHash },
}

/// A TOTP enrolment in progress: shown once.
pub struct TotpEnrolment {
    pub otpauth_uri: Zeroizing<String>,
    pub secret_base32: Zeroizing<String>,
}

/// Login and self-service credential operations, over HTTP. Each is audited.
pub trait Identity: Send + Sync {
    fn login_password(
        &self,
        ctx: AccessContext,
        account: String,
        password: Zeroizing<String>,
        policy: SharedLoginPolicy,
    ) -> StoreFuture<'_, LoginOutcome>;
    fn login_temporary(
        &self,
        ctx: AccessContext,
        account: String,
        credential: Zeroizing<String>,
        policy: SharedLoginPolicy,
    ) -> StoreFuture<'_, LoginOutcome>;
    fn login_second_factor(
        &self,
        ctx: AccessContext,
        ticket: Zeroizing<String>,
        factor: SecondFactor,
        policy: SharedLoginPolicy,
    ) -> StoreFuture<'_, LoginOutcome>;
    /// `current` is required with a session, ignored with a password-change ticket.
    fn change_password(
        &self,
        ctx: AccessContext,
        subject: Subject,
        current: Option<Zeroizing<String>>,
        new: Zeroizing<String>,
        policy: SharedLoginPolicy,
    ) -> StoreFuture<'_, ()>;
    fn totp_begin(
        &self,
        ctx: AccessContext,
        subject: Subject,
        policy: SharedLoginPolicy,
    ) -> StoreFuture<'_, TotpEnrolment>;
    fn totp_confirm(
        &self,
        ctx: AccessContext,
        subject: Subject,
        code: String,
        policy: SharedLoginPolicy,
    ) -> StoreFuture<'_, ()>;
    /// Resolves a session token to its (enabled) account, within the idle and absolute limits.
    /// A session opened with a password alone is refused if the role needs two factors in some
    /// zone (the zone of the request is not known here; see [`Identity::authenticate_session_from`]).
    fn authenticate_session(&self, token: TokenHash, policy: SharedLoginPolicy) -> StoreFuture<'_, Option<Principal>>;
    /// As [`Identity::authenticate_session`], for a request from network zone `zone`: a session
    /// opened with a password alone is refused where the role needs two factors (AUTH-2).
    fn authenticate_session_from(
        &self,
        token: TokenHash,
        zone: Option<String>,
        policy: SharedLoginPolicy,
    ) -> StoreFuture<'_, Option<Principal>>;
    /// As [`Identity::login_password`], from network zone `zone`: whether a password alone
    /// suffices is decided per role and zone (`[login] password_only_from`). `login_password`
    /// decides as for the strictest zone.
    fn login_password_from(
        &self,
        ctx: AccessContext,
        zone: Option<String>,
        account: String,
        password: Zeroizing<String>,
        policy: SharedLoginPolicy,
    ) -> StoreFuture<'_, LoginOutcome>;
    fn logout(&self, ctx: AccessContext, token: TokenHash) -> StoreFuture<'_, ()>;
    /// The holder of a session replaces their own recovery codes (AUTH-8) after proving their
    /// current password; returns the new codes (shown once).
    fn regenerate_recovery_codes(
        &self,
        ctx: AccessContext,
        principal: Principal,
        current_password: Zeroizing<String>,
        policy: SharedLoginPolicy,
    ) -> StoreFuture<'_, Vec<Zeroizing<String>>>;
}

/// How many recovery codes a set holds.
pub const RECOVERY_CODE_COUNT: usize = 10;

pub(crate) const TICKET_SECOND_FACTOR: &str = "second-factor";
pub(crate) const TICKET_PASSWORD_CHANGE: &str = "password-change";
pub(crate) const TICKET_ENROL: &str = "enrol";

/// A session's last use is written at most this often (the idle timeout is this exact).
pub(crate) const TOUCH_EVERY_US: i64 = 60_000_000;

/// Audit rows a writer job collects; appended after its data changes, in the same transaction.
#[derive(Default)]
pub(crate) struct Events(Vec<(AccessContext, AuditEvent)>);

impl Events {
    pub(crate) fn push(&mut self, ctx: &AccessContext, ev: AuditEvent) {
        self.0.push((ctx.clone(), ev));
    }
}

/// An outcome that is a failure but whose bookkeeping (counters, audit) must be kept.
pub(crate) type Kept<T> = Result<T, StoreError>;

pub(crate) fn dur_us(d: time::Duration) -> i64 {
    (d.whole_microseconds()).clamp(0, i128::from(i64::MAX)) as i64
}

pub(crate) fn person(ctx: &AccessContext, account: &str, role: Role) -> AccessContext {
    AccessContext {
        request_id: ctx.request_id.clone(),
        actor: Actor::Person(Principal { account: account.to_string(), role }),
        source: ctx.source.clone(),
        rights: mamori_access::Rights::none(),
        emergency: None,
        client: ctx.client.clone(),
    }
}

/// The person acting if their role is known, else the request's own context (never a guessed role).
pub(crate) fn acting(ctx: &AccessContext, account: &str, role: Option<Role>) -> AccessContext {
    match role {
        Some(r) => person(ctx, account, r),
        None => ctx.clone(),
    }
}

pub(crate) fn account_target(ev: AuditEvent, account: &str) -> AuditEvent {
    ev.with_target("account", Some(account.to_string()))
}

fn totp_aad(account: &str) -> Vec<u8> {
    format!("mamori/totp/{account}").into_bytes()
}

fn policy_error(p: PasswordProblem) -> StoreError {
    StoreError::invalid("business-rule", p.to_string())
}

/// What a login needs to know about an account, read before hashing.
pub(crate) struct AccountState {
    pub(crate) role: Option<Role>,
    pub(crate) disabled: bool,
    phc: Option<String>,
    must_change: bool,
    pub(crate) totp_active: bool,
    /// Registered WebAuthn credentials.
    pub(crate) webauthn: i64,
}

impl AccountState {
    pub(crate) fn has_second_factor(&self) -> bool {
        self.totp_active || self.webauthn > 0
    }

    /// The second-factor methods a login can continue with.
    fn methods(&self) -> Vec<&'static str> {
        let mut m = Vec::new();
        if self.totp_active {
            m.push("totp");
        }
        if self.webauthn > 0 {
            m.push("webauthn");
        }
        m.push("recovery_code");
        m
    }
}

pub(crate) fn account_state(c: &Connection, name: &str) -> Result<Option<AccountState>, StoreError> {
    Ok(c.prepare_cached(
        "SELECT a.role, a.disabled_us IS NOT NULL, p.phc, p.must_change, \
         (SELECT active FROM credential_totp t WHERE t.account = a.name), \
         (SELECT count(*) FROM credential_webauthn w WHERE w.account = a.name) \
         FROM account a LEFT JOIN credential_password p ON p.account = a.name WHERE a.name = ?1",
    )?
    .query_row([name], |r| {
        Ok(AccountState {
            role: r.get::<_, String>(0)?.parse().ok(),
            disabled: r.get(1)?,
            phc: r.get(2)?,
            must_change: r.get::<_, Option<bool>>(3)?.unwrap_or(false),
            totp_active: r.get::<_, Option<bool>>(4)?.unwrap_or(false),
            webauthn: r.get(5)?,
        })
    })
    .optional()?)
}

pub(crate) fn locked(c: &Connection, kind: &str, key: &str, now: i64) -> Result<bool, StoreError> {
    let until: Option<i64> = c
        .prepare_cached("SELECT locked_until_us FROM login_throttle WHERE kind = ?1 AND key = ?2")?
        .query_row([kind, key], |r| r.get(0))
        .optional()?;
    Ok(until.is_some_and(|u| u > now))
}

/// Counts one failure for a key; returns true if this failure locked it.
fn count_failure(
    c: &Connection,
    kind: &str,
    key: &str,
    now: i64,
    l: mamori_access::login::Lockout,
) -> Result<bool, StoreError> {
    let row: Option<(i64, i64, i64)> = c
        .prepare_cached(
            "SELECT failures, window_start_us, locked_until_us FROM login_throttle WHERE kind = ?1 AND key = ?2",
        )?
        .query_row([kind, key], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .optional()?;
    let period = dur_us(l.period);
    let (mut failures, mut start, mut until) = row.unwrap_or((0, now, 0));
    if until > now {
        // Already locked: counted, but the lock is not extended (fixed period, documented).
        failures += 1;
    } else if start + period <= now {
        failures = 1;
        start = now;
    } else {
        failures += 1;
    }
    let newly = until <= now && failures >= i64::from(l.threshold);
    if newly {
        until = now + period;
        failures = 0;
        start = now;
    }
    c.prepare_cached(
        "INSERT INTO login_throttle (kind, key, failures, window_start_us, locked_until_us) VALUES (?1, ?2, ?3, ?4, ?5) \
         ON CONFLICT (kind, key) DO UPDATE SET failures = excluded.failures, window_start_us = excluded.window_start_us, \
         locked_until_us = excluded.locked_until_us",
    )?
    .execute(params![kind, key, failures, start, until])?;
    Ok(newly)
}

/// Records a failed login step: counters for the account (if it exists) and the source, the
/// failure and any lockout in the trail.
pub(crate) fn record_failure(
    tx: &Tx<'_>,
    ev: &mut Events,
    ctx: &AccessContext,
    account: Option<&str>,
    reason: &str,
    policy: &mamori_access::LoginPolicy,
) -> Result<(), StoreError> {
    let mut failure = AuditEvent::new(Action::LoginFailure, 401).with_detail(reason.to_string());
    if let Some(a) = account {
        failure = account_target(failure, a);
    }
    ev.push(ctx, failure);
    if let Some(a) = account
        && count_failure(tx.conn, "account", a, tx.now_us, policy.account_lockout)?
    {
        tracing::warn!(target: "security", account = %a, "account locked after repeated login failures");
        ev.push(
            ctx,
            account_target(AuditEvent::new(Action::Lockout, 423), a)
                .with_detail(format!("account locked for {}", policy.account_lockout.period)),
        );
    }
    if count_failure(tx.conn, "source", &ctx.source, tx.now_us, policy.source_lockout)? {
        tracing::warn!(target: "security", source = %ctx.source, "source locked after repeated login failures");
        ev.push(
            ctx,
            AuditEvent::new(Action::Lockout, 423)
                .with_detail(format!("source {} locked for {}", ctx.source, policy.source_lockout.period)),
        );
    }
    Ok(())
}

fn issue_ticket(
    c: &Connection,
    account: &str,
    purpose: &str,
    now: i64,
    ttl: time::Duration,
) -> Result<(Zeroizing<String>, i64), StoreError> {
    let t = IssuedSecret::generate(SecretKind::Ticket);
    c.prepare_cached("INSERT INTO login_ticket (hash, account, purpose, expires_us) VALUES (?1, ?2, ?3, ?4)")?
        .execute(params![&t.hash().0[..], account, purpose, now + dur_us(ttl)])?;
    Ok((Zeroizing::new(t.text().to_string()), ttl.whole_seconds()))
}

/// Looks a ticket up; `consume` deletes it. Expired tickets are deleted and never match. A ticket
/// works only at the interface whose login issued it (ACL-4): its account's role must be one that
/// `policy` (the interface's login policy) admits, as only those can log in there.
pub(crate) fn ticket_account(
    c: &Connection,
    text: &str,
    purpose: &str,
    now: i64,
    consume: bool,
    policy: &mamori_access::LoginPolicy,
) -> Result<Option<String>, StoreError> {
    let Some(hash) = presented(SecretKind::Ticket, text) else { return Ok(None) };
    c.prepare_cached("DELETE FROM login_ticket WHERE expires_us <= ?1")?.execute([now])?;
    let row: Option<(String, String)> = c
        .prepare_cached(
            "SELECT t.account, a.role FROM login_ticket t JOIN account a ON a.name = t.account \
             WHERE t.hash = ?1 AND t.purpose = ?2",
        )?
        .query_row(params![&hash.0[..], purpose], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?;
    let Some((account, role)) = row else { return Ok(None) };
    if !role.parse::<Role>().is_ok_and(|r| policy.admits(r)) {
        return Ok(None);
    }
    if consume {
        c.prepare_cached("DELETE FROM login_ticket WHERE hash = ?1")?.execute([&hash.0[..]])?;
    }
    Ok(Some(account))
}

/// Creates a session, evicting the account's oldest beyond the limit (audited).
pub(crate) fn create_session(
    tx: &Tx<'_>,
    ev: &mut Events,
    ctx: &AccessContext,
    account: &str,
    factors: &str,
    policy: &mamori_access::LoginPolicy,
) -> Result<LoginOutcome, StoreError> {
    let s = policy.sessions;
    let now = tx.now_us;
    tx.conn
        .prepare_cached("DELETE FROM login_session WHERE account = ?1 AND (expires_us <= ?2 OR last_used_us <= ?3)")?
        .execute(params![account, now, now - dur_us(s.idle_timeout)])?;
    let open: i64 =
        tx.conn.query_row("SELECT count(*) FROM login_session WHERE account = ?1", [account], |r| r.get(0))?;
    let excess = open - i64::from(s.max_per_account) + 1;
    if excess > 0 {
        let evicted = tx.conn.execute(
            "DELETE FROM login_session WHERE hash IN \
             (SELECT hash FROM login_session WHERE account = ?1 ORDER BY created_us LIMIT ?2)",
            params![account, excess],
        )?;
        ev.push(
            ctx,
            account_target(AuditEvent::new(Action::SessionEvict, 200), account)
                .with_detail(format!("{evicted} oldest session(s) ended: limit {}", s.max_per_account)),
        );
    }
    let token = IssuedSecret::generate(SecretKind::Session);
    tx.conn
        .prepare_cached(
            "INSERT INTO login_session (hash, account, created_us, last_used_us, expires_us, factors, audience) \
             VALUES (?1, ?2, ?3, ?3, ?4, ?5, ?6)",
        )?
        .execute(params![
            &token.hash().0[..],
            account,
            now,
            now + dur_us(s.lifetime),
            factors,
            policy.audience.as_str()
        ])?;
    // AUTH-7: a login is a use of the account (inactivity is measured from it).
    tx.conn
        .prepare_cached("UPDATE account SET last_login_us = ?1, last_used_us = ?1 WHERE name = ?2")?
        .execute(params![now, account])?;
    Ok(LoginOutcome::Session {
        token: Zeroizing::new(token.text().to_string()),
        expires_in: s.idle_timeout.min(s.lifetime).whole_seconds(),
    })
}

fn outcome_name(o: &LoginOutcome) -> &'static str {
    match o {
        LoginOutcome::Session { .. } => "session",
        LoginOutcome::SecondFactorRequired { .. } => "second-factor-required",
        LoginOutcome::PasswordChangeRequired { .. } => "password-change-required",
        LoginOutcome::EnrolmentRequired { .. } => "enrolment-required",
    }
}

impl SqliteStore {
    /// Runs `f` as one writer job: its data changes in a savepoint (undone if it fails with the
    /// outer error), then the audit rows it collected, in the same transaction. The inner result
    /// is a failure whose bookkeeping is kept (failed logins count).
    pub(crate) async fn identity_job<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Tx<'_>, &mut Events) -> Result<Kept<T>, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let inner = Arc::clone(&self.inner);
        self.inner
            .engine
            .write(move |conn| {
                let now = inner.next_time();
                // Identity jobs touch no records: no clinical rights.
                let none = mamori_access::Rights::none();
                let open = crate::category::Visibility::default();
                let tx = Tx {
                    conn,
                    keys: &inner.keys,
                    index: &inner.index,
                    protect: inner.protect,
                    now_us: now,
                    policy: &inner.policy,
                    rights: &none,
                    hidden: &open,
                };
                let mut events = Events::default();
                let result = savepoint_keeping(conn, |_| f(&tx, &mut events), |_| true)?;
                if inner.protect.audit {
                    for (ctx, ev) in &events.0 {
                        audit::append(conn, now, ctx, ev)?;
                    }
                }
                Ok(result)
            })
            .await?
            .and_then(|kept| kept)
    }

    /// An administrative job on an existing account: a missing one is audited (404) and refused.
    /// `f` gets the context and the account name.
    pub(crate) async fn account_job<T: Send + 'static>(
        &self,
        ctx: AccessContext,
        name: &AccountName,
        action: Action,
        f: impl FnOnce(&Tx<'_>, &mut Events, &AccessContext, &str) -> Result<Kept<T>, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let account = name.as_str().to_string();
        self.identity_job(move |tx, ev| {
            if account_state(tx.conn, &account)?.is_none() {
                return missing_account(ev, &ctx, action, &account);
            }
            f(tx, ev, &ctx, &account)
        })
        .await
    }

    pub(crate) fn now_us(&self) -> i64 {
        to_micros(self.inner.clock.now())
    }

    async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Result<T, StoreError> {
        tokio::task::spawn_blocking(f).await.map_err(StoreError::internal)
    }

    async fn login_password_now(
        &self,
        ctx: AccessContext,
        zone: Option<String>,
        account: String,
        password: Zeroizing<String>,
        policy: SharedLoginPolicy,
    ) -> Result<LoginOutcome, StoreError> {
        let name = AccountName::parse(&account).ok().map(|n| n.as_str().to_string());
        let state = match &name {
            Some(n) => {
                let n = n.clone();
                self.inner.engine.read_now(move |c| account_state(c, &n))?
            }
            None => None,
        };
        // Always one argon2 verification, against the dummy hash when there is nothing to verify
        // against, so the answer takes as long whatever the account (no enumeration by timing).
        let phc = state.as_ref().and_then(|s| s.phc.clone());
        let p = Arc::clone(&policy);
        let pw = password.clone();
        let verified = Self::blocking(move || match &phc {
            Some(h) => p.hasher.verify(h, &pw),
            None => p.hasher.verify_dummy(&pw),
        })
        .await?;
        let rehash = match (&state, verified) {
            (Some(AccountState { phc: Some(h), .. }), true) if policy.hasher.needs_rehash(h) => {
                let p = Arc::clone(&policy);
                let pw = password.clone();
                Self::blocking(move || p.hasher.hash(&pw).ok()).await?
            }
            _ => None,
        };
        self.identity_job(move |tx, ev| {
            let now = tx.now_us;
            let known = state.as_ref().map(|_| name.clone()).unwrap_or(None);
            let source_locked = locked(tx.conn, "source", &ctx.source, now)?;
            let (account, st) = match (known, state) {
                (Some(a), Some(st)) => (a, st),
                _ => {
                    record_failure(tx, ev, &ctx, None, "unknown-account", &policy)?;
                    return Ok(Err(StoreError::InvalidCredentials));
                }
            };
            let reason = if st.disabled {
                Some("disabled")
            } else if st.role.is_none() {
                Some("unknown-role")
            } else if st.role.is_some_and(|r| !policy.admits(r)) {
                // ACL-4: patients sign in at the patient interface only, staff never there.
                Some("wrong-interface")
            } else if st.phc.is_none() {
                Some("no-password")
            } else if locked(tx.conn, "account", &account, now)? {
                Some("account-locked")
            } else if source_locked {
                Some("source-locked")
            } else if !verified {
                Some("bad-password")
            } else {
                None
            };
            let (Some(role), None) = (st.role, reason) else {
                record_failure(tx, ev, &ctx, Some(&account), reason.unwrap_or("refused"), &policy)?;
                return Ok(Err(StoreError::InvalidCredentials));
            };
            tx.conn.execute("DELETE FROM login_throttle WHERE kind = 'account' AND key = ?1", [&account])?;
            if let Some(new_phc) = rehash {
                tx.conn
                    .execute("UPDATE credential_password SET phc = ?1 WHERE account = ?2", params![new_phc, account])?;
            }
            let who = person(&ctx, &account, role);
            let outcome = if st.must_change {
                let (ticket, expires_in) =
                    issue_ticket(tx.conn, &account, TICKET_PASSWORD_CHANGE, now, policy.ticket_ttl)?;
                LoginOutcome::PasswordChangeRequired { ticket, expires_in }
            } else if st.has_second_factor() {
                let (ticket, expires_in) =
                    issue_ticket(tx.conn, &account, TICKET_SECOND_FACTOR, now, policy.ticket_ttl)?;
                LoginOutcome::SecondFactorRequired { ticket, expires_in, methods: st.methods() }
            } else if policy.requires_two_factors_from(role, zone.as_deref()) {
                let (ticket, expires_in) = issue_ticket(tx.conn, &account, TICKET_ENROL, now, policy.ticket_ttl)?;
                LoginOutcome::EnrolmentRequired { ticket, expires_in }
            } else {
                create_session(tx, ev, &who, &account, mamori_access::login::PASSWORD_ONLY, &policy)?
            };
            ev.push(
                &who,
                account_target(AuditEvent::new(Action::Login, 200), &account)
                    .with_detail(format!("password ok: {}", outcome_name(&outcome))),
            );
            Ok(Ok(outcome))
        })
        .await
    }

    async fn login_temporary_now(
        &self,
        ctx: AccessContext,
        account: String,
        credential: Zeroizing<String>,
        policy: SharedLoginPolicy,
    ) -> Result<LoginOutcome, StoreError> {
        let name = AccountName::parse(&account).ok().map(|n| n.as_str().to_string());
        let hash = presented_readable(&credential, TEMPORARY_GROUPS);
        self.identity_job(move |tx, ev| {
            let now = tx.now_us;
            let state = match &name {
                Some(n) => account_state(tx.conn, n)?,
                None => None,
            };
            let (Some(account), Some(st)) = (name, state) else {
                record_failure(tx, ev, &ctx, None, "unknown-account", &policy)?;
                return Ok(Err(StoreError::InvalidCredentials));
            };
            // Locks and disabling are checked before the credential is consumed, so a credential
            // presented while locked stays usable once the lock expires.
            let blocked = if st.disabled {
                Some("disabled")
            } else if st.role.is_some_and(|r| !policy.admits(r)) {
                Some("wrong-interface")
            } else if locked(tx.conn, "account", &account, now)? {
                Some("account-locked")
            } else if locked(tx.conn, "source", &ctx.source, now)? {
                Some("source-locked")
            } else {
                None
            };
            let matched = match (hash, blocked) {
                (Some(h), None) => {
                    let temp = tx.conn.execute(
                        "UPDATE temporary_credential SET used_us = ?1 \
                         WHERE hash = ?2 AND account = ?3 AND used_us IS NULL AND expires_us > ?1",
                        params![now, &h.0[..], account],
                    )?;
                    if temp == 1 {
                        Some("temporary-credential")
                    } else {
                        let setup = tx.conn.execute(
                            "UPDATE account SET setup_secret_hash = NULL WHERE name = ?1 AND setup_secret_hash = ?2",
                            params![account, &h.0[..]],
                        )?;
                        (setup == 1).then_some("setup-secret")
                    }
                }
                _ => None,
            };
            let (Some(role), Some(kind)) = (st.role, matched) else {
                let reason = blocked.unwrap_or("bad-temporary-credential");
                record_failure(tx, ev, &ctx, Some(&account), reason, &policy)?;
                return Ok(Err(StoreError::InvalidCredentials));
            };
            // The lost-factor fallback: the old second factor and recovery codes go, every session
            // ends, and the next step is a new password (then enrolment, if the role needs it).
            tx.conn.execute("DELETE FROM credential_totp WHERE account = ?1", [&account])?;
            crate::webauthn::delete_all(tx.conn, &account)?;
            tx.conn.execute("DELETE FROM recovery_code WHERE account = ?1", [&account])?;
            tx.conn.execute("DELETE FROM login_session WHERE account = ?1", [&account])?;
            tx.conn.execute("DELETE FROM login_throttle WHERE kind = 'account' AND key = ?1", [&account])?;
            let (ticket, expires_in) = issue_ticket(tx.conn, &account, TICKET_PASSWORD_CHANGE, now, policy.ticket_ttl)?;
            let who = person(&ctx, &account, role);
            ev.push(
                &who,
                account_target(AuditEvent::new(Action::TemporaryCredentialUse, 200), &account)
                    .with_detail(format!("{kind}: second factor and recovery codes reset; password change required")),
            );
            Ok(Ok(LoginOutcome::PasswordChangeRequired { ticket, expires_in }))
        })
        .await
    }

    async fn login_second_factor_now(
        &self,
        ctx: AccessContext,
        ticket: Zeroizing<String>,
        factor: SecondFactor,
        policy: SharedLoginPolicy,
    ) -> Result<LoginOutcome, StoreError> {
        self.identity_job(move |tx, ev| {
            let now = tx.now_us;
            let Some(account) = ticket_account(tx.conn, &ticket, TICKET_SECOND_FACTOR, now, true, &policy)? else {
                record_failure(tx, ev, &ctx, None, "bad-ticket", &policy)?;
                return Ok(Err(StoreError::InvalidCredentials));
            };
            let st = account_state(tx.conn, &account)?;
            let role = st.as_ref().and_then(|s| s.role);
            let refused = match &st {
                None => Some("unknown-account"),
                Some(s) if s.disabled => Some("disabled"),
                Some(s) if s.role.is_some_and(|r| !policy.admits(r)) => Some("wrong-interface"),
                Some(_) if locked(tx.conn, "account", &account, now)? => Some("account-locked"),
                Some(_) if locked(tx.conn, "source", &ctx.source, now)? => Some("source-locked"),
                _ => None,
            };
            let (Some(role), None) = (role, refused) else {
                record_failure(tx, ev, &ctx, Some(&account), refused.unwrap_or("refused"), &policy)?;
                return Ok(Err(StoreError::InvalidCredentials));
            };
            let who = person(&ctx, &account, role);
            let used = match &factor {
                SecondFactor::Totp(code) => {
                    let row: Option<(i64, Vec<u8>, Option<i64>)> = tx
                        .conn
                        .query_row(
                            "SELECT key_id, sealed, last_step FROM credential_totp WHERE account = ?1 AND active = 1",
                            [&account],
                            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
                        )
                        .optional()?;
                    let step = match row {
                        Some((key_id, sealed, last)) => {
                            let secret = open_totp(tx, key_id, &sealed, &account)?;
                            secret.verify(code, now.div_euclid(1_000_000), last)
                        }
                        None => None,
                    };
                    match step {
                        Some(step) => {
                            tx.conn.execute(
                                "UPDATE credential_totp SET last_step = ?1 WHERE account = ?2",
                                params![step, account],
                            )?;
                            Some("password+totp")
                        }
                        None => None,
                    }
                }
                SecondFactor::RecoveryCode(code) => {
                    let used = match presented_readable(code, RECOVERY_CODE_GROUPS) {
                        Some(h) => tx.conn.execute(
                            "UPDATE recovery_code SET used_us = ?1 WHERE hash = ?2 AND account = ?3 AND used_us IS NULL",
                            params![now, &h.0[..], account],
                        )?,
                        None => 0,
                    };
                    if used == 1 {
                        let left: i64 = tx.conn.query_row(
                            "SELECT count(*) FROM recovery_code WHERE account = ?1 AND used_us IS NULL",
                            [&account],
                            |r| r.get(0),
                        )?;
                        tracing::warn!(target: "security", account = %account, left, "recovery code used");
                        ev.push(
                            &who,
                            account_target(AuditEvent::new(Action::RecoveryCodeUse, 200), &account)
                                .with_detail(format!("{left} unused recovery code(s) left")),
                        );
                        Some("password+recovery-code")
                    } else {
                        None
                    }
                }
            };
            let Some(factors) = used else {
                let reason = match factor {
                    SecondFactor::Totp(_) => "bad-totp",
                    SecondFactor::RecoveryCode(_) => "bad-recovery-code",
                };
                record_failure(tx, ev, &ctx, Some(&account), reason, &policy)?;
                return Ok(Err(StoreError::InvalidCredentials));
            };
            tx.conn.execute("DELETE FROM login_throttle WHERE kind = 'account' AND key = ?1", [&account])?;
            let outcome = create_session(tx, ev, &who, &account, factors, &policy)?;
            ev.push(&who, account_target(AuditEvent::new(Action::Login, 200), &account).with_detail(factors));
            Ok(Ok(outcome))
        })
        .await
    }

    /// The account a subject acts for (ticket of `purpose`, or the session's principal).
    pub(crate) fn subject_account(
        tx: &Tx<'_>,
        subject: &Subject,
        purpose: &str,
        consume: bool,
        policy: &mamori_access::LoginPolicy,
    ) -> Result<Option<String>, StoreError> {
        match subject {
            Subject::Ticket(t) => ticket_account(tx.conn, t, purpose, tx.now_us, consume, policy),
            Subject::Session { principal, .. } => Ok(Some(principal.account.clone())),
        }
    }

    async fn change_password_now(
        &self,
        ctx: AccessContext,
        subject: Subject,
        current: Option<Zeroizing<String>>,
        new: Zeroizing<String>,
        policy: SharedLoginPolicy,
    ) -> Result<(), StoreError> {
        // Who: read-only look first (tickets are consumed only when the change is made).
        let now = self.now_us();
        let account = match &subject {
            Subject::Session { principal, .. } => Some(principal.account.clone()),
            Subject::Ticket(t) => {
                let t = t.clone();
                self.inner.engine.read_now(move |c| {
                    let Some(h) = presented(SecretKind::Ticket, &t) else { return Ok(None) };
                    Ok(c.query_row(
                        "SELECT account FROM login_ticket WHERE hash = ?1 AND purpose = ?2 AND expires_us > ?3",
                        params![&h.0[..], TICKET_PASSWORD_CHANGE, now],
                        |r| r.get::<_, String>(0),
                    )
                    .optional()?)
                })?
            }
        };
        let Some(account) = account else {
            return self
                .identity_job(move |tx, ev| {
                    record_failure(tx, ev, &ctx, None, "bad-ticket", &policy)?;
                    Ok(Err(StoreError::InvalidCredentials))
                })
                .await;
        };
        let a = account.clone();
        let (state, history) = self.inner.engine.read_now(move |c| {
            let st = account_state(c, &a)?;
            let mut stmt =
                c.prepare_cached("SELECT phc FROM password_history WHERE account = ?1 ORDER BY set_us DESC LIMIT ?2")?;
            let history = stmt
                .query_map(params![a, policy_history_limit()], |r| r.get::<_, String>(0))?
                .collect::<Result<Vec<_>, _>>()?;
            Ok((st, history))
        })?;
        let Some(state) = state else { return Err(StoreError::InvalidCredentials) };
        // With a session, the current password is proof that the person at the keyboard is the
        // account holder (a session left open is not enough to change it).
        if let Subject::Session { .. } = &subject {
            let cur = current.clone().unwrap_or_default();
            self.confirm_current_password(&ctx, &account, state.phc.clone(), cur, &policy).await?;
        }
        policy.passwords.check(&new, &account, state.has_second_factor()).map_err(policy_error)?;
        let keep = policy.passwords.history;
        let p = Arc::clone(&policy);
        let candidate = new.clone();
        let reused = Self::blocking(move || history.iter().take(keep).any(|h| p.hasher.verify(h, &candidate))).await?;
        if reused {
            return Err(policy_error(PasswordProblem::Reused(keep)));
        }
        let p = Arc::clone(&policy);
        let phc = Self::blocking(move || p.hasher.hash(&new)).await?.map_err(StoreError::internal)?;
        self.identity_job(move |tx, ev| {
            let Some(acc) = Self::subject_account(tx, &subject, TICKET_PASSWORD_CHANGE, true, &policy)? else {
                return Ok(Err(StoreError::InvalidCredentials));
            };
            set_password(tx, &acc, &phc, false, keep)?;
            // Other sessions end: whoever else held one no longer does.
            let ended = match &subject {
                Subject::Session { token, .. } => tx.conn.execute(
                    "DELETE FROM login_session WHERE account = ?1 AND hash != ?2",
                    params![acc, &token.0[..]],
                )?,
                Subject::Ticket(_) => tx.conn.execute("DELETE FROM login_session WHERE account = ?1", [&acc])?,
            };
            ev.push(
                &acting(&ctx, &acc, state.role),
                account_target(AuditEvent::new(Action::PasswordChange, 200), &acc)
                    .with_detail(format!("{ended} other session(s) ended")),
            );
            Ok(Ok(()))
        })
        .await
    }

    /// The holder's current password, re-proved for a sensitive step taken with a session (a
    /// session left open is not enough). A wrong one counts towards lockout like a failed login.
    async fn confirm_current_password(
        &self,
        ctx: &AccessContext,
        account: &str,
        phc: Option<String>,
        current: Zeroizing<String>,
        policy: &SharedLoginPolicy,
    ) -> Result<(), StoreError> {
        let p = Arc::clone(policy);
        let ok = Self::blocking(move || match &phc {
            Some(h) => p.hasher.verify(h, &current),
            None => p.hasher.verify_dummy(&current),
        })
        .await?;
        if ok {
            return Ok(());
        }
        let (ctx, acc, policy) = (ctx.clone(), account.to_string(), Arc::clone(policy));
        self.identity_job(move |tx, ev| {
            record_failure(tx, ev, &ctx, Some(&acc), "bad-current-password", &policy)?;
            Ok(Err(StoreError::InvalidCredentials))
        })
        .await
    }

    /// The holder replaces their own recovery codes (AUTH-8), proving the current password with
    /// their session; only an account with a second factor has codes to stand in for it.
    async fn regenerate_recovery_codes_now(
        &self,
        ctx: AccessContext,
        principal: Principal,
        current: Zeroizing<String>,
        policy: SharedLoginPolicy,
    ) -> Result<Vec<Zeroizing<String>>, StoreError> {
        let a = principal.account.clone();
        let state = self.inner.engine.read_now(move |c| account_state(c, &a))?;
        let Some(state) = state.filter(|s| !s.disabled) else { return Err(StoreError::InvalidCredentials) };
        self.confirm_current_password(&ctx, &principal.account, state.phc.clone(), current, &policy).await?;
        let account = principal.account;
        self.identity_job(move |tx, ev| {
            if !account_state(tx.conn, &account)?.is_some_and(|s| s.has_second_factor()) {
                let e = StoreError::invalid(
                    "business-rule",
                    "recovery codes stand in for a second factor: enrol TOTP or a WebAuthn credential first",
                );
                ev.push(
                    &ctx,
                    account_target(AuditEvent::new(Action::RecoveryCodesIssue, e.status()), &account)
                        .with_detail("refused: no second factor enrolled"),
                );
                return Ok(Err(e));
            }
            tracing::warn!(target: "security", account = %account, "recovery codes replaced by their holder");
            Ok(Ok(replace_recovery_codes(tx, ev, &ctx, &account, RECOVERY_CODE_COUNT, "by the holder; ")?))
        })
        .await
    }

    async fn totp_begin_now(
        &self,
        ctx: AccessContext,
        subject: Subject,
        policy: SharedLoginPolicy,
    ) -> Result<TotpEnrolment, StoreError> {
        self.identity_job(move |tx, ev| {
            let Some(account) = Self::subject_account(tx, &subject, TICKET_ENROL, false, &policy)? else {
                record_failure(tx, ev, &ctx, None, "bad-ticket", &policy)?;
                return Ok(Err(StoreError::InvalidCredentials));
            };
            let st = account_state(tx.conn, &account)?;
            let Some(st) = st.filter(|s| !s.disabled) else { return Ok(Err(StoreError::InvalidCredentials)) };
            let who = acting(&ctx, &account, st.role);
            if st.totp_active {
                ev.push(&who, account_target(AuditEvent::new(Action::TotpEnrol, 409), &account).with_detail("already enrolled"));
                return Ok(Err(StoreError::invalid(
                    "business-rule",
                    "a second factor is already enrolled; an administrator can issue a temporary credential to replace it",
                )));
            }
            let secret = TotpSecret::generate();
            let (key_id, key) = tx.keys.for_scope(tx.conn, "credentials")?;
            let sealed = key.seal(secret.as_bytes(), &totp_aad(&account))?;
            tx.conn.execute(
                "INSERT INTO credential_totp (account, key_id, sealed, active, last_step, created_us) VALUES (?1, ?2, ?3, 0, NULL, ?4) \
                 ON CONFLICT (account) DO UPDATE SET key_id = excluded.key_id, sealed = excluded.sealed, active = 0, \
                 last_step = NULL, created_us = excluded.created_us",
                params![account, key_id, sealed, tx.now_us],
            )?;
            ev.push(&who, account_target(AuditEvent::new(Action::TotpEnrol, 202), &account).with_detail("pending: awaiting a code"));
            Ok(Ok(TotpEnrolment {
                otpauth_uri: Zeroizing::new(secret.otpauth_uri(&policy.totp_issuer, &account)),
                secret_base32: Zeroizing::new(secret.base32()),
            }))
        })
        .await
    }

    async fn totp_confirm_now(
        &self,
        ctx: AccessContext,
        subject: Subject,
        code: String,
        policy: SharedLoginPolicy,
    ) -> Result<(), StoreError> {
        self.identity_job(move |tx, ev| {
            let Some(account) = Self::subject_account(tx, &subject, TICKET_ENROL, false, &policy)? else {
                record_failure(tx, ev, &ctx, None, "bad-ticket", &policy)?;
                return Ok(Err(StoreError::InvalidCredentials));
            };
            let st = account_state(tx.conn, &account)?;
            let Some(st) = st.filter(|s| !s.disabled) else { return Ok(Err(StoreError::InvalidCredentials)) };
            let who = acting(&ctx, &account, st.role);
            let row: Option<(i64, Vec<u8>)> = tx
                .conn
                .query_row("SELECT key_id, sealed FROM credential_totp WHERE account = ?1 AND active = 0", [&account], |r| {
                    Ok((r.get(0)?, r.get(1)?))
                })
                .optional()?;
            let step = match row {
                Some((key_id, sealed)) => open_totp(tx, key_id, &sealed, &account)?.verify(&code, tx.now_us.div_euclid(1_000_000), None),
                None => None,
            };
            let Some(step) = step else {
                ev.push(&who, account_target(AuditEvent::new(Action::TotpEnrol, 400), &account).with_detail("code did not match"));
                return Ok(Err(StoreError::invalid(
                    "business-rule",
                    "the code does not match a pending enrolment; start the enrolment again and check the device's clock",
                )));
            };
            tx.conn.execute(
                "UPDATE credential_totp SET active = 1, last_step = ?1 WHERE account = ?2",
                params![step, account],
            )?;
            if let Subject::Ticket(t) = &subject {
                ticket_account(tx.conn, t, TICKET_ENROL, tx.now_us, true, &policy)?;
            }
            ev.push(&who, account_target(AuditEvent::new(Action::TotpEnrol, 200), &account).with_detail("active"));
            Ok(Ok(()))
        })
        .await
    }

    async fn authenticate_session_now(
        &self,
        token: TokenHash,
        zone: Option<String>,
        policy: SharedLoginPolicy,
    ) -> Result<Option<Principal>, StoreError> {
        let now = self.now_us();
        // ACL-4: a session is accepted only by the interface (audience) it was issued for.
        let audience = policy.audience.as_str();
        let row: Option<(String, String, i64, i64, String)> = self.inner.engine.read_now(|c| {
            Ok(c.prepare_cached(
                "SELECT s.account, a.role, s.last_used_us, s.expires_us, s.factors FROM login_session s \
                 JOIN account a ON a.name = s.account WHERE s.hash = ?1 AND a.disabled_us IS NULL \
                 AND s.audience = ?2",
            )?
            .query_row(params![&token.0[..], audience], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)))
            .optional()?)
        })?;
        let Some((account, role, last_used, expires, factors)) = row else { return Ok(None) };
        if now >= expires || now >= last_used + dur_us(policy.sessions.idle_timeout) {
            return Ok(None);
        }
        let Ok(role) = role.parse::<Role>() else { return Ok(None) };
        if !policy.admits(role) {
            return Ok(None);
        }
        // AUTH-2 per zone: a session opened with a password alone (where that was allowed) does
        // not carry over to a zone where the role needs two factors.
        if !policy.factors_suffice(role, &factors, zone.as_deref()) {
            return Ok(None);
        }
        if now - last_used >= TOUCH_EVERY_US {
            let account_name = account.clone();
            self.inner
                .engine
                .write(move |c| {
                    c.prepare_cached("UPDATE login_session SET last_used_us = ?1 WHERE hash = ?2")?
                        .execute(params![now, &token.0[..]])?;
                    c.prepare_cached("UPDATE account SET last_used_us = ?1 WHERE name = ?2")?
                        .execute(params![now, account_name])?;
                    Ok(())
                })
                .await?;
        }
        Ok(Some(Principal { account, role }))
    }

    async fn logout_now(&self, ctx: AccessContext, token: TokenHash) -> Result<(), StoreError> {
        self.identity_job(move |tx, ev| {
            let n = tx.conn.execute("DELETE FROM login_session WHERE hash = ?1", [&token.0[..]])?;
            let account = ctx.actor_name().map(str::to_string);
            let mut e = AuditEvent::new(Action::Logout, if n == 1 { 200 } else { 404 });
            if let Some(a) = &account {
                e = account_target(e, a);
            }
            ev.push(&ctx, e);
            Ok(if n == 1 { Ok(()) } else { Err(StoreError::InvalidCredentials) })
        })
        .await
    }

    // ---- Administrator (operator) actions -------------------------------------------------

    /// Sets an initial password chosen by an administrator: flagged must-change, usable only to
    /// choose a new one at first login (AUTH-3). Ends the account's sessions.
    pub async fn set_initial_password(
        &self,
        ctx: AccessContext,
        name: &AccountName,
        password: Zeroizing<String>,
        policy: SharedLoginPolicy,
    ) -> Result<(), StoreError> {
        // Separation of duties: one's own password is changed with the current one
        // (`/auth/password`), never reset by oneself as an administrator.
        if own_account(&ctx, name.as_str()) {
            let e = StoreError::invalid(
                "forbidden",
                "separation of duties: no one sets an initial password for their own account; change it with the current password",
            );
            return self.refused(ctx, Action::PasswordSet, name.as_str(), e).await;
        }
        let n = name.as_str().to_string();
        let state = self.inner.engine.read_now(move |c| account_state(c, &n))?;
        let Some(state) = state else {
            return self.refused(ctx, Action::PasswordSet, name.as_str(), missing(name.as_str())).await;
        };
        if let Err(p) = policy.passwords.check(&password, name.as_str(), state.has_second_factor()) {
            return self.refused(ctx, Action::PasswordSet, name.as_str(), policy_error(p)).await;
        }
        let p = Arc::clone(&policy);
        let phc = Self::blocking(move || p.hasher.hash(&password)).await?.map_err(StoreError::internal)?;
        let account = name.as_str().to_string();
        let keep = policy.passwords.history;
        self.identity_job(move |tx, ev| {
            set_password(tx, &account, &phc, true, keep)?;
            let ended = tx.conn.execute("DELETE FROM login_session WHERE account = ?1", [&account])?;
            ev.push(
                &ctx,
                account_target(AuditEvent::new(Action::PasswordSet, 200), &account)
                    .with_detail(format!("initial password, must change; {ended} session(s) ended")),
            );
            Ok(Ok(()))
        })
        .await
    }

    /// Replaces the account's recovery codes with `count` new ones, returned once (AUTH-8).
    pub async fn issue_recovery_codes(
        &self,
        ctx: AccessContext,
        name: &AccountName,
        count: usize,
    ) -> Result<Vec<Zeroizing<String>>, StoreError> {
        self.account_job(ctx, name, Action::RecoveryCodesIssue, move |tx, ev, ctx, account| {
            Ok(Ok(replace_recovery_codes(tx, ev, ctx, account, count, "")?))
        })
        .await
    }

    /// Invalidates every unused recovery code of an account (AUTH-8: codes reported lost or
    /// seen by someone else); returns how many there were.
    pub async fn revoke_recovery_codes(&self, ctx: AccessContext, name: &AccountName) -> Result<usize, StoreError> {
        self.account_job(ctx, name, Action::RecoveryCodesRevoke, |tx, ev, ctx, account| {
            let n = tx.conn.execute("DELETE FROM recovery_code WHERE account = ?1 AND used_us IS NULL", [account])?;
            ev.push(
                ctx,
                account_target(AuditEvent::new(Action::RecoveryCodesRevoke, 200), account)
                    .with_detail(format!("{n} unused code(s) revoked")),
            );
            Ok(Ok(n))
        })
        .await
    }

    /// Lifts an account's lockout (AUTH-5).
    pub async fn unlock_account(&self, ctx: AccessContext, name: &AccountName) -> Result<bool, StoreError> {
        self.account_job(ctx, name, Action::Unlock, |tx, ev, ctx, account| {
            let was = locked(tx.conn, "account", account, tx.now_us)?;
            tx.conn.execute("DELETE FROM login_throttle WHERE kind = 'account' AND key = ?1", [account])?;
            ev.push(
                ctx,
                account_target(AuditEvent::new(Action::Unlock, 200), account).with_detail(if was {
                    "lock lifted"
                } else {
                    "was not locked; failure count reset"
                }),
            );
            Ok(Ok(was))
        })
        .await
    }

    /// Issues a one-time temporary credential (AUTH-8); returns it (shown once) and its expiry.
    pub async fn issue_temporary_credential(
        &self,
        ctx: AccessContext,
        name: &AccountName,
        policy: SharedLoginPolicy,
    ) -> Result<(Zeroizing<String>, i64), StoreError> {
        let account = name.as_str().to_string();
        self.identity_job(move |tx, ev| {
            // Separation of duties: the fallback for a lost factor is someone else's act, never a
            // way round one's own second factor.
            if own_account(&ctx, &account) {
                ev.push(
                    &ctx,
                    account_target(AuditEvent::new(Action::TemporaryCredentialIssue, 403), &account)
                        .with_detail("separation of duties: own account"),
                );
                return Ok(Err(StoreError::invalid(
                    "forbidden",
                    "separation of duties: no one issues a temporary credential for their own account",
                )));
            }
            match account_state(tx.conn, &account)? {
                None => return missing_account(ev, &ctx, Action::TemporaryCredentialIssue, &account),
                Some(s) if s.disabled => {
                    ev.push(
                        &ctx,
                        account_target(AuditEvent::new(Action::TemporaryCredentialIssue, 403), &account)
                            .with_detail("refused: the account is disabled"),
                    );
                    return Ok(Err(StoreError::Forbidden));
                }
                Some(_) => {}
            }
            tx.conn.execute("DELETE FROM temporary_credential WHERE account = ?1 AND used_us IS NULL", [&account])?;
            let c = IssuedSecret::readable(TEMPORARY_GROUPS);
            let expires = tx.now_us + dur_us(policy.temporary_credential_ttl);
            tx.conn.execute(
                "INSERT INTO temporary_credential (hash, account, created_us, expires_us, used_us) VALUES (?1, ?2, ?3, ?4, NULL)",
                params![&c.hash().0[..], account, tx.now_us, expires],
            )?;
            ev.push(
                &ctx,
                account_target(AuditEvent::new(Action::TemporaryCredentialIssue, 201), &account)
                    .with_detail(format!("valid {}; one use", policy.temporary_credential_ttl)),
            );
            Ok(Ok((Zeroizing::new(c.text().to_string()), expires)))
        })
        .await
    }

    /// Disables an account at once: API tokens and sessions stop working (AUTH-7).
    pub async fn disable_account(&self, ctx: AccessContext, name: &AccountName) -> Result<(), StoreError> {
        let account = name.as_str().to_string();
        self.identity_job(move |tx, ev| {
            if account_state(tx.conn, &account)?.is_none() {
                return Ok(Err(StoreError::NotFound(format!("account '{account}'"))));
            }
            tx.conn.execute(
                "UPDATE account SET disabled_us = ?1 WHERE name = ?2 AND disabled_us IS NULL",
                params![tx.now_us, account],
            )?;
            let sessions = tx.conn.execute("DELETE FROM login_session WHERE account = ?1", [&account])?;
            tx.conn.execute("DELETE FROM login_ticket WHERE account = ?1", [&account])?;
            ev.push(
                &ctx,
                account_target(AuditEvent::new(Action::AccountDisable, 200), &account)
                    .with_detail(format!("{sessions} session(s) ended")),
            );
            Ok(Ok(()))
        })
        .await
    }
}

/// Whether the context's actor is the person `account` (separation of duties).
pub(crate) fn own_account(ctx: &AccessContext, account: &str) -> bool {
    matches!(&ctx.actor, Actor::Person(p) if p.account == account)
}

pub(crate) fn missing(account: &str) -> StoreError {
    StoreError::NotFound(format!("account '{account}'"))
}

/// An administrative action on an account that does not exist: audited (404) and refused.
pub(crate) fn missing_account<T>(
    ev: &mut Events,
    ctx: &AccessContext,
    action: Action,
    account: &str,
) -> Result<Kept<T>, StoreError> {
    ev.push(ctx, account_target(AuditEvent::new(action, 404), account).with_detail("refused: no such account"));
    Ok(Err(missing(account)))
}

/// Replaces an account's recovery codes with `count` new ones (only their SHA-256 is stored) and
/// audits the issue (`by`: who, when not the context's actor alone).
fn replace_recovery_codes(
    tx: &Tx<'_>,
    ev: &mut Events,
    ctx: &AccessContext,
    account: &str,
    count: usize,
    by: &str,
) -> Result<Vec<Zeroizing<String>>, StoreError> {
    tx.conn.execute("DELETE FROM recovery_code WHERE account = ?1", [account])?;
    let mut codes = Vec::with_capacity(count);
    for _ in 0..count {
        let c = IssuedSecret::readable(RECOVERY_CODE_GROUPS);
        tx.conn.execute(
            "INSERT INTO recovery_code (hash, account, created_us, used_us) VALUES (?1, ?2, ?3, NULL)",
            params![&c.hash().0[..], account, tx.now_us],
        )?;
        codes.push(Zeroizing::new(c.text().to_string()));
    }
    ev.push(
        ctx,
        account_target(AuditEvent::new(Action::RecoveryCodesIssue, 201), account)
            .with_detail(format!("{count} codes, {by}earlier codes revoked")),
    );
    Ok(codes)
}

/// The most history entries ever read (the policy's `history` is capped by the configuration).
fn policy_history_limit() -> i64 {
    24
}

fn set_password(tx: &Tx<'_>, account: &str, phc: &str, must_change: bool, keep: usize) -> Result<(), StoreError> {
    tx.conn.execute(
        "INSERT INTO credential_password (account, phc, must_change, set_us) VALUES (?1, ?2, ?3, ?4) \
         ON CONFLICT (account) DO UPDATE SET phc = excluded.phc, must_change = excluded.must_change, set_us = excluded.set_us",
        params![account, phc, must_change, tx.now_us],
    )?;
    tx.conn.execute(
        "INSERT OR REPLACE INTO password_history (account, set_us, phc) VALUES (?1, ?2, ?3)",
        params![account, tx.now_us, phc],
    )?;
    tx.conn.execute(
        "DELETE FROM password_history WHERE account = ?1 AND set_us NOT IN \
         (SELECT set_us FROM password_history WHERE account = ?1 ORDER BY set_us DESC LIMIT ?2)",
        params![account, keep.max(1) as i64],
    )?;
    Ok(())
}

fn open_totp(tx: &Tx<'_>, key_id: i64, sealed: &[u8], account: &str) -> Result<TotpSecret, StoreError> {
    let key = tx.keys.by_id(tx.conn, key_id)?;
    let plain = key
        .open(sealed, &totp_aad(account))
        .ok_or_else(|| StoreError::Tampered(format!("TOTP secret of account '{account}'")))?;
    TotpSecret::from_bytes(plain).ok_or_else(|| StoreError::Tampered(format!("TOTP secret of account '{account}'")))
}

impl Identity for SqliteStore {
    fn login_password(
        &self,
        ctx: AccessContext,
        account: String,
        password: Zeroizing<String>,
        policy: SharedLoginPolicy,
    ) -> StoreFuture<'_, LoginOutcome> {
        Box::pin(self.login_password_now(ctx, None, account, password, policy))
    }

    fn login_password_from(
        &self,
        ctx: AccessContext,
        zone: Option<String>,
        account: String,
        password: Zeroizing<String>,
        policy: SharedLoginPolicy,
    ) -> StoreFuture<'_, LoginOutcome> {
        Box::pin(self.login_password_now(ctx, zone, account, password, policy))
    }

    fn login_temporary(
        &self,
        ctx: AccessContext,
        account: String,
        credential: Zeroizing<String>,
        policy: SharedLoginPolicy,
    ) -> StoreFuture<'_, LoginOutcome> {
        Box::pin(self.login_temporary_now(ctx, account, credential, policy))
    }

    fn login_second_factor(
        &self,
        ctx: AccessContext,
        ticket: Zeroizing<String>,
        factor: SecondFactor,
        policy: SharedLoginPolicy,
    ) -> StoreFuture<'_, LoginOutcome> {
        Box::pin(self.login_second_factor_now(ctx, ticket, factor, policy))
    }

    fn change_password(
        &self,
        ctx: AccessContext,
        subject: Subject,
        current: Option<Zeroizing<String>>,
        new: Zeroizing<String>,
        policy: SharedLoginPolicy,
    ) -> StoreFuture<'_, ()> {
        Box::pin(self.change_password_now(ctx, subject, current, new, policy))
    }

    fn totp_begin(
        &self,
        ctx: AccessContext,
        subject: Subject,
        policy: SharedLoginPolicy,
    ) -> StoreFuture<'_, TotpEnrolment> {
        Box::pin(self.totp_begin_now(ctx, subject, policy))
    }

    fn totp_confirm(
        &self,
        ctx: AccessContext,
        subject: Subject,
        code: String,
        policy: SharedLoginPolicy,
    ) -> StoreFuture<'_, ()> {
        Box::pin(self.totp_confirm_now(ctx, subject, code, policy))
    }

    fn authenticate_session(&self, token: TokenHash, policy: SharedLoginPolicy) -> StoreFuture<'_, Option<Principal>> {
        Box::pin(self.authenticate_session_now(token, None, policy))
    }

    fn authenticate_session_from(
        &self,
        token: TokenHash,
        zone: Option<String>,
        policy: SharedLoginPolicy,
    ) -> StoreFuture<'_, Option<Principal>> {
        Box::pin(self.authenticate_session_now(token, zone, policy))
    }

    fn logout(&self, ctx: AccessContext, token: TokenHash) -> StoreFuture<'_, ()> {
        Box::pin(self.logout_now(ctx, token))
    }

    fn regenerate_recovery_codes(
        &self,
        ctx: AccessContext,
        principal: Principal,
        current_password: Zeroizing<String>,
        policy: SharedLoginPolicy,
    ) -> StoreFuture<'_, Vec<Zeroizing<String>>> {
        Box::pin(self.regenerate_recovery_codes_now(ctx, principal, current_password, policy))
    }
}

/// Seconds a TOTP step lasts (re-exported for documentation and tests).
pub const TOTP_STEP_SECONDS: i64 = STEP_SECONDS;
