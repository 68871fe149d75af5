//! WebAuthn credentials (AUTH-2): registration and the second step of a login, with the
//! relying-party checks of `mamori_access::webauthn`. Challenges are random, bound to the login
//! ticket or session that asked for them, single-use and short-lived; credentials (ID, COSE
//! public key sealed with the `credentials` data key so that a swapped key fails to open,
//! signature counter, label) live beside the TOTP material. Every step is audited in the
//! same transaction as its effect; a failed login step answers
//! [`StoreError::InvalidCredentials`] like every other.
//!
//! Passwordless login does not exist here: the only way to an assertion is a second-factor
//! ticket, which only a correct password gives (AUTH-2: a device alone never authenticates).

use mamori_access::secret::{SecretKind, presented};
use mamori_access::webauthn::{self as wa, RelyingParty, WebauthnError};
use mamori_access::{Principal, Role, SharedLoginPolicy, TokenHash};
use rusqlite::{Connection, OptionalExtension, params};
use zeroize::Zeroizing;

use crate::accounts::AccountName;
use crate::identity::{
    Events, Kept, LoginOutcome, Subject, TICKET_ENROL, TICKET_SECOND_FACTOR, account_state, account_target, acting,
    create_session, dur_us, locked, missing_account, own_account, person, record_failure, ticket_account,
};
use crate::model::{AccessContext, Action, AuditEvent};
use crate::writes::Tx;
use crate::{SqliteStore, StoreError, StoreFuture};

/// Schema of the WebAuthn tables, appended to the records database's migration chain.
pub(crate) const MIGRATION: &str = r#"
-- WebAuthn credentials (AUTH-2). id: the credential ID; public_key: the COSE_Key sealed with
-- the 'credentials' data key, bound to the account and credential ID; sign_count: the last
-- signature counter seen (clone detection); user_handle: the account's opaque WebAuthn user id.
CREATE TABLE credential_webauthn (
    id              BLOB PRIMARY KEY,
    account         TEXT    NOT NULL REFERENCES account(name),
    label           TEXT    NOT NULL,
    user_handle     BLOB    NOT NULL,
    key_id          INTEGER NOT NULL,
    public_key      BLOB    NOT NULL,
    alg             INTEGER NOT NULL,
    sign_count      INTEGER NOT NULL,
    user_verified   INTEGER NOT NULL,
    backup_eligible INTEGER NOT NULL,
    attestation     TEXT    NOT NULL,
    created_us      INTEGER NOT NULL,
    last_used_us    INTEGER
) WITHOUT ROWID;
CREATE INDEX credential_webauthn_by_account ON credential_webauthn (account);
-- Outstanding challenges: SHA-256 of the ticket or session they belong to ('bound'), one per
-- binding and purpose ('register' or 'login'); deleted when answered, right or wrong.
CREATE TABLE webauthn_challenge (
    bound       BLOB    NOT NULL,
    purpose     TEXT    NOT NULL,
    challenge   BLOB    NOT NULL,
    account     TEXT    NOT NULL REFERENCES account(name),
    label       TEXT,
    user_handle BLOB,
    expires_us  INTEGER NOT NULL,
    PRIMARY KEY (bound, purpose)
) WITHOUT ROWID;
"#;

/// Credentials one account may hold.
pub const MAX_CREDENTIALS: i64 = 10;
/// Longest label, in characters.
pub const MAX_LABEL_CHARS: usize = 64;

const PURPOSE_REGISTER: &str = "register";
const PURPOSE_LOGIN: &str = "login";

/// What `navigator.credentials.create()` needs (the server renders it as
/// `PublicKeyCredentialCreationOptions` JSON).
pub struct CreationOptions {
    pub rp: RelyingParty,
    pub challenge: Vec<u8>,
    pub account: String,
    pub user_handle: Vec<u8>,
    /// Credentials the account already has (the authenticator must not create a second one).
    pub exclude: Vec<Vec<u8>>,
    pub timeout_ms: i64,
}

/// What `navigator.credentials.get()` needs (`PublicKeyCredentialRequestOptions`).
pub struct RequestOptions {
    pub rp: RelyingParty,
    pub challenge: Vec<u8>,
    /// The account's credential IDs (`allowCredentials`).
    pub allow: Vec<Vec<u8>>,
    pub timeout_ms: i64,
}

/// A registration response, decoded from base64url.
pub struct RegistrationResponse {
    /// `rawId`: must be the ID inside the attestation.
    pub credential_id: Vec<u8>,
    pub client_data_json: Vec<u8>,
    pub attestation_object: Vec<u8>,
}

/// An authentication response, decoded from base64url.
pub struct AssertionResponse {
    pub credential_id: Vec<u8>,
    pub client_data_json: Vec<u8>,
    pub authenticator_data: Vec<u8>,
    pub signature: Vec<u8>,
    pub user_handle: Option<Vec<u8>>,
}

/// A registered credential as listed (nothing secret).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CredentialInfo {
    /// The credential ID in base64url.
    pub id: String,
    pub label: String,
    /// COSE algorithm (−7 ES256, −8 EdDSA, −257 RS256).
    pub alg: i64,
    pub attestation: String,
    pub user_verified: bool,
    pub backup_eligible: bool,
    pub sign_count: u32,
    pub created_us: i64,
    pub last_used_us: Option<i64>,
}

/// WebAuthn steps over HTTP (and, later, the login page). Each is audited.
pub trait Webauthn: Send + Sync {
    /// Starts registering a credential for the holder of an enrolment ticket or a session.
    fn webauthn_register_begin(
        &self,
        ctx: AccessContext,
        subject: Subject,
        label: String,
        policy: SharedLoginPolicy,
    ) -> StoreFuture<'_, CreationOptions>;
    /// Checks the authenticator's response (§7.1) and stores the credential. With an enrolment
    /// ticket the ticket is spent: the person then logs in with password and the new credential.
    fn webauthn_register_finish(
        &self,
        ctx: AccessContext,
        subject: Subject,
        response: RegistrationResponse,
        policy: SharedLoginPolicy,
    ) -> StoreFuture<'_, CredentialInfo>;
    /// The second step of a login, part one: a challenge bound to the second-factor ticket.
    fn webauthn_login_begin(
        &self,
        ctx: AccessContext,
        ticket: Zeroizing<String>,
        policy: SharedLoginPolicy,
    ) -> StoreFuture<'_, RequestOptions>;
    /// Part two: checks the assertion (§7.2), spends the ticket and the challenge, opens a
    /// session.
    fn webauthn_login_finish(
        &self,
        ctx: AccessContext,
        ticket: Zeroizing<String>,
        response: AssertionResponse,
        policy: SharedLoginPolicy,
    ) -> StoreFuture<'_, LoginOutcome>;
    /// The caller's own credentials (session).
    fn webauthn_credentials(&self, ctx: AccessContext, principal: Principal) -> StoreFuture<'_, Vec<CredentialInfo>>;
    /// Removes one of the caller's own credentials (session); the last second factor of a
    /// two-factor role cannot be removed.
    fn webauthn_remove(
        &self,
        ctx: AccessContext,
        principal: Principal,
        credential: String,
        policy: SharedLoginPolicy,
    ) -> StoreFuture<'_, ()>;
    /// An administrator lists an account's credentials (audited).
    fn webauthn_credentials_of(&self, ctx: AccessContext, account: AccountName)
    -> StoreFuture<'_, Vec<CredentialInfo>>;
    /// An administrator removes a credential of someone else's account (audited); the last
    /// second factor of a two-factor role is not removed.
    fn webauthn_remove_of(
        &self,
        ctx: AccessContext,
        account: AccountName,
        credential: String,
        policy: SharedLoginPolicy,
    ) -> StoreFuture<'_, ()>;
}

/// Deletes an account's credentials and challenges (temporary credential: the lost-factor
/// fallback resets every second factor).
pub(crate) fn delete_all(c: &Connection, account: &str) -> Result<(), StoreError> {
    c.execute("DELETE FROM credential_webauthn WHERE account = ?1", [account])?;
    c.execute("DELETE FROM webauthn_challenge WHERE account = ?1", [account])?;
    Ok(())
}

fn key_aad(account: &str, id: &[u8]) -> Vec<u8> {
    let mut a = format!("mamori/webauthn/{account}/").into_bytes();
    a.extend_from_slice(id);
    a
}

fn rp(policy: &mamori_access::LoginPolicy) -> Result<RelyingParty, StoreError> {
    policy
        .webauthn
        .clone()
        .ok_or_else(|| StoreError::invalid("not-supported", "WebAuthn is not configured on this server ([webauthn])"))
}

/// A short, non-secret reference to a credential for the audit trail and logs.
fn short_id(id: &[u8]) -> String {
    let b = wa::b64url(id);
    b.chars().take(16).collect()
}

/// What the subject's challenges are bound to: the ticket's or the session's hash.
fn binding(subject: &Subject) -> Option<TokenHash> {
    match subject {
        Subject::Ticket(t) => presented(SecretKind::Ticket, t),
        Subject::Session { token, .. } => Some(*token),
    }
}

fn list(c: &Connection, account: &str) -> Result<Vec<CredentialInfo>, StoreError> {
    let mut stmt = c.prepare_cached(
        "SELECT id, label, alg, attestation, user_verified, backup_eligible, sign_count, created_us, last_used_us \
         FROM credential_webauthn WHERE account = ?1 ORDER BY created_us, id",
    )?;
    let rows = stmt.query_map([account], |r| {
        Ok(CredentialInfo {
            id: wa::b64url(&r.get::<_, Vec<u8>>(0)?),
            label: r.get(1)?,
            alg: r.get(2)?,
            attestation: r.get(3)?,
            user_verified: r.get(4)?,
            backup_eligible: r.get(5)?,
            sign_count: u32::try_from(r.get::<_, i64>(6)?).unwrap_or(0),
            created_us: r.get(7)?,
            last_used_us: r.get(8)?,
        })
    })?;
    Ok(rows.collect::<Result<Vec<_>, _>>()?)
}

fn ids(c: &Connection, account: &str) -> Result<Vec<Vec<u8>>, StoreError> {
    let mut stmt = c.prepare_cached("SELECT id FROM credential_webauthn WHERE account = ?1 ORDER BY created_us, id")?;
    let rows = stmt.query_map([account], |r| r.get::<_, Vec<u8>>(0))?;
    Ok(rows.collect::<Result<Vec<_>, _>>()?)
}

/// An outstanding challenge, as taken.
struct Pending {
    challenge: Vec<u8>,
    account: String,
    label: Option<String>,
    user_handle: Option<Vec<u8>>,
}

/// Takes (deletes) the challenge of a binding and purpose for `account`; the audit reason if
/// there is none or it expired.
fn take_challenge(
    c: &Connection,
    bound: &TokenHash,
    purpose: &str,
    account: &str,
    now: i64,
) -> Result<Result<Pending, &'static str>, StoreError> {
    let row: Option<(Pending, i64)> = c
        .prepare_cached(
            "SELECT challenge, account, label, user_handle, expires_us FROM webauthn_challenge \
             WHERE bound = ?1 AND purpose = ?2",
        )?
        .query_row(params![&bound.0[..], purpose], |r| {
            Ok((
                Pending { challenge: r.get(0)?, account: r.get(1)?, label: r.get(2)?, user_handle: r.get(3)? },
                r.get(4)?,
            ))
        })
        .optional()?;
    c.prepare_cached("DELETE FROM webauthn_challenge WHERE bound = ?1 AND purpose = ?2")?
        .execute(params![&bound.0[..], purpose])?;
    c.prepare_cached("DELETE FROM webauthn_challenge WHERE expires_us <= ?1")?.execute([now])?;
    Ok(match row {
        Some((p, exp)) if exp > now && p.account == account => Ok(p),
        Some((p, _)) if p.account == account => Err("challenge-expired"),
        _ => Err("no-challenge"),
    })
}

fn put_challenge(
    tx: &Tx<'_>,
    bound: &TokenHash,
    purpose: &str,
    account: &str,
    label: Option<&str>,
    user_handle: Option<&[u8]>,
    ttl: time::Duration,
) -> Result<Vec<u8>, StoreError> {
    let challenge = wa::random_bytes::<{ wa::CHALLENGE_BYTES }>().to_vec();
    tx.conn
        .prepare_cached(
            "INSERT INTO webauthn_challenge (bound, purpose, challenge, account, label, user_handle, expires_us) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) ON CONFLICT (bound, purpose) DO UPDATE SET \
             challenge = excluded.challenge, account = excluded.account, label = excluded.label, \
             user_handle = excluded.user_handle, expires_us = excluded.expires_us",
        )?
        .execute(params![&bound.0[..], purpose, challenge, account, label, user_handle, tx.now_us + dur_us(ttl)])?;
    Ok(challenge)
}

/// A label as given: trimmed, 1-64 characters, no control characters.
fn check_label(label: &str) -> Result<String, StoreError> {
    let l = label.trim();
    let n = l.chars().count();
    if n == 0 || n > MAX_LABEL_CHARS || l.chars().any(char::is_control) {
        return Err(StoreError::invalid(
            "invalid",
            format!("the label must be 1-{MAX_LABEL_CHARS} characters without control characters"),
        ));
    }
    Ok(l.to_string())
}

/// Removes `id` from `account` unless it is the last second factor of a two-factor role.
fn remove_one(
    tx: &Tx<'_>,
    ev: &mut Events,
    who: &AccessContext,
    account: &str,
    id: &str,
    policy: &mamori_access::LoginPolicy,
) -> Result<Kept<()>, StoreError> {
    let Some(st) = account_state(tx.conn, account)? else {
        return missing_account(ev, who, Action::WebauthnRemove, account);
    };
    let raw = wa::from_b64url(id).unwrap_or_default();
    let exists: bool = tx
        .conn
        .query_row("SELECT 1 FROM credential_webauthn WHERE id = ?1 AND account = ?2", params![raw, account], |_| {
            Ok(true)
        })
        .optional()?
        .unwrap_or(false);
    if !exists {
        ev.push(
            who,
            account_target(AuditEvent::new(Action::WebauthnRemove, 404), account).with_detail("no such credential"),
        );
        return Ok(Err(StoreError::NotFound(format!("WebAuthn credential '{id}' of account '{account}'"))));
    }
    let last = !st.totp_active && st.webauthn <= 1;
    if last && st.role.is_some_and(|r: Role| policy.requires_two_factors(r)) {
        ev.push(
            who,
            account_target(AuditEvent::new(Action::WebauthnRemove, 409), account)
                .with_detail(format!("refused: last second factor ({})", short_id(&raw))),
        );
        return Ok(Err(StoreError::invalid(
            "business-rule",
            "this is the account's last second factor and its role needs two factors: enrol another first, or \
             have an administrator issue a temporary credential (mamori user temp-credential), which resets \
             every second factor",
        )));
    }
    tx.conn.execute("DELETE FROM credential_webauthn WHERE id = ?1 AND account = ?2", params![raw, account])?;
    tracing::warn!(target: "security", account = %account, credential = %short_id(&raw), "WebAuthn credential removed");
    ev.push(
        who,
        account_target(AuditEvent::new(Action::WebauthnRemove, 200), account)
            .with_detail(format!("credential {}", short_id(&raw))),
    );
    Ok(Ok(()))
}

/// Who a registration step acts for.
struct Enrolling {
    account: String,
    /// What the step's challenge is bound to (the ticket's or session's hash).
    bound: TokenHash,
    who: AccessContext,
    /// Credentials the account has.
    credentials: i64,
}

/// The (enabled) account of an enrolment ticket or session; a bad ticket is a recorded failure.
fn enrolling(
    tx: &Tx<'_>,
    ev: &mut Events,
    ctx: &AccessContext,
    subject: &Subject,
    policy: &mamori_access::LoginPolicy,
) -> Result<Kept<Enrolling>, StoreError> {
    let account = match binding(subject) {
        Some(_) => SqliteStore::subject_account(tx, subject, TICKET_ENROL, false, policy)?,
        None => None,
    };
    let (Some(account), Some(bound)) = (account, binding(subject)) else {
        record_failure(tx, ev, ctx, None, "bad-ticket", policy)?;
        return Ok(Err(StoreError::InvalidCredentials));
    };
    let Some(st) = account_state(tx.conn, &account)?.filter(|s| !s.disabled) else {
        return Ok(Err(StoreError::InvalidCredentials));
    };
    let who = acting(ctx, &account, st.role);
    Ok(Ok(Enrolling { account, bound, who, credentials: st.webauthn }))
}

impl SqliteStore {
    async fn register_begin_now(
        &self,
        ctx: AccessContext,
        subject: Subject,
        label: String,
        policy: SharedLoginPolicy,
    ) -> Result<CreationOptions, StoreError> {
        let rp = rp(&policy)?;
        let label = check_label(&label)?;
        self.identity_job(move |tx, ev| {
            let Enrolling { account, bound, who, credentials } = match enrolling(tx, ev, &ctx, &subject, &policy)? {
                Ok(e) => e,
                Err(e) => return Ok(Err(e)),
            };
            if credentials >= MAX_CREDENTIALS {
                ev.push(
                    &who,
                    account_target(AuditEvent::new(Action::WebauthnEnrol, 409), &account).with_detail("limit reached"),
                );
                return Ok(Err(StoreError::invalid(
                    "business-rule",
                    format!("an account holds at most {MAX_CREDENTIALS} WebAuthn credentials; remove one first"),
                )));
            }
            let handle: Option<Vec<u8>> = tx
                .conn
                .query_row("SELECT user_handle FROM credential_webauthn WHERE account = ?1 LIMIT 1", [&account], |r| {
                    r.get(0)
                })
                .optional()?;
            let user_handle = handle.unwrap_or_else(|| wa::random_bytes::<{ wa::USER_HANDLE_BYTES }>().to_vec());
            let challenge = put_challenge(
                tx,
                &bound,
                PURPOSE_REGISTER,
                &account,
                Some(&label),
                Some(&user_handle),
                rp.challenge_ttl,
            )?;
            let exclude = ids(tx.conn, &account)?;
            ev.push(
                &who,
                account_target(AuditEvent::new(Action::WebauthnChallenge, 200), &account).with_detail("register"),
            );
            Ok(Ok(CreationOptions {
                timeout_ms: rp.challenge_ttl.whole_milliseconds() as i64,
                rp,
                challenge,
                account,
                user_handle,
                exclude,
            }))
        })
        .await
    }

    async fn register_finish_now(
        &self,
        ctx: AccessContext,
        subject: Subject,
        response: RegistrationResponse,
        policy: SharedLoginPolicy,
    ) -> Result<CredentialInfo, StoreError> {
        let rp = rp(&policy)?;
        self.identity_job(move |tx, ev| {
            let Enrolling { account, bound, who, .. } = match enrolling(tx, ev, &ctx, &subject, &policy)? {
                Ok(e) => e,
                Err(e) => return Ok(Err(e)),
            };
            let refuse = |ev: &mut Events, why: &str| -> Kept<CredentialInfo> {
                tracing::info!(target: "security", account = %account, reason = why, "WebAuthn registration refused");
                ev.push(&who, account_target(AuditEvent::new(Action::WebauthnEnrol, 400), &account).with_detail(why.to_string()));
                Err(StoreError::invalid(
                    "business-rule",
                    "the authenticator's response could not be verified; start the registration again",
                ))
            };
            let Pending { challenge, label, user_handle: handle, .. } =
                match take_challenge(tx.conn, &bound, PURPOSE_REGISTER, &account, tx.now_us)? {
                    Ok(p) => p,
                    Err(why) => return Ok(refuse(ev, why)),
                };
            let reg = match wa::verify_registration(&rp, &challenge, &response.client_data_json, &response.attestation_object)
            {
                Ok(r) => r,
                Err(e) => return Ok(refuse(ev, e.code())),
            };
            if reg.credential_id != response.credential_id {
                return Ok(refuse(ev, "raw-id-mismatch"));
            }
            let taken: bool = tx
                .conn
                .query_row("SELECT 1 FROM credential_webauthn WHERE id = ?1", [&reg.credential_id], |_| Ok(true))
                .optional()?
                .unwrap_or(false);
            if taken {
                return Ok(refuse(ev, "already-registered"));
            }
            let (key_id, key) = tx.keys.for_scope(tx.conn, "credentials")?;
            let sealed = key.seal(&reg.public_key, &key_aad(&account, &reg.credential_id))?;
            let label = label.unwrap_or_else(|| "security key".into());
            let user_handle = handle.unwrap_or_default();
            tx.conn.execute(
                "INSERT INTO credential_webauthn (id, account, label, user_handle, key_id, public_key, alg, sign_count, \
                 user_verified, backup_eligible, attestation, created_us, last_used_us) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, NULL)",
                params![
                    reg.credential_id,
                    account,
                    label,
                    user_handle,
                    key_id,
                    sealed,
                    reg.alg,
                    i64::from(reg.sign_count),
                    reg.user_verified,
                    reg.backup_eligible,
                    reg.attestation,
                    tx.now_us
                ],
            )?;
            if let Subject::Ticket(t) = &subject {
                ticket_account(tx.conn, t, TICKET_ENROL, tx.now_us, true, &policy)?;
            }
            ev.push(
                &who,
                account_target(AuditEvent::new(Action::WebauthnEnrol, 201), &account).with_detail(format!(
                    "credential {} alg {} attestation {}{}",
                    short_id(&reg.credential_id),
                    reg.alg,
                    reg.attestation,
                    if reg.user_verified { " uv" } else { "" }
                )),
            );
            Ok(Ok(CredentialInfo {
                id: wa::b64url(&reg.credential_id),
                label,
                alg: reg.alg,
                attestation: reg.attestation.to_string(),
                user_verified: reg.user_verified,
                backup_eligible: reg.backup_eligible,
                sign_count: reg.sign_count,
                created_us: tx.now_us,
                last_used_us: None,
            }))
        })
        .await
    }

    /// The account behind a second-factor ticket if it may continue (exists, enabled, not
    /// locked); otherwise the failure is recorded and `None` returned.
    fn second_factor_account(
        tx: &Tx<'_>,
        ev: &mut Events,
        ctx: &AccessContext,
        ticket: &str,
        consume: bool,
        policy: &mamori_access::LoginPolicy,
    ) -> Result<Option<(String, Role, i64)>, StoreError> {
        let now = tx.now_us;
        let Some(account) = ticket_account(tx.conn, ticket, TICKET_SECOND_FACTOR, now, consume, policy)? else {
            record_failure(tx, ev, ctx, None, "bad-ticket", policy)?;
            return Ok(None);
        };
        let st = account_state(tx.conn, &account)?;
        let role = st.as_ref().and_then(|s| s.role);
        let refused = match &st {
            None => Some("unknown-account"),
            Some(s) if s.disabled => Some("disabled"),
            Some(_) if locked(tx.conn, "account", &account, now)? => Some("account-locked"),
            Some(_) if locked(tx.conn, "source", &ctx.source, now)? => Some("source-locked"),
            Some(s) if s.webauthn == 0 => Some("webauthn-not-enrolled"),
            _ => None,
        };
        match (role, refused, st) {
            (Some(role), None, Some(st)) => Ok(Some((account, role, st.webauthn))),
            _ => {
                record_failure(tx, ev, ctx, Some(&account), refused.unwrap_or("refused"), policy)?;
                Ok(None)
            }
        }
    }

    async fn login_begin_now(
        &self,
        ctx: AccessContext,
        ticket: Zeroizing<String>,
        policy: SharedLoginPolicy,
    ) -> Result<RequestOptions, StoreError> {
        let rp = rp(&policy)?;
        self.identity_job(move |tx, ev| {
            let Some((account, role, _)) = Self::second_factor_account(tx, ev, &ctx, &ticket, false, &policy)? else {
                return Ok(Err(StoreError::InvalidCredentials));
            };
            let Some(bound) = presented(SecretKind::Ticket, &ticket) else {
                return Ok(Err(StoreError::InvalidCredentials));
            };
            let challenge = put_challenge(tx, &bound, PURPOSE_LOGIN, &account, None, None, rp.challenge_ttl)?;
            let allow = ids(tx.conn, &account)?;
            ev.push(
                &person(&ctx, &account, role),
                account_target(AuditEvent::new(Action::WebauthnChallenge, 200), &account).with_detail("login"),
            );
            Ok(Ok(RequestOptions { timeout_ms: rp.challenge_ttl.whole_milliseconds() as i64, rp, challenge, allow }))
        })
        .await
    }

    async fn login_finish_now(
        &self,
        ctx: AccessContext,
        ticket: Zeroizing<String>,
        response: AssertionResponse,
        policy: SharedLoginPolicy,
    ) -> Result<LoginOutcome, StoreError> {
        let rp = rp(&policy)?;
        self.identity_job(move |tx, ev| {
            let now = tx.now_us;
            // The ticket is spent whatever happens next, like a TOTP attempt.
            let Some((account, role, _)) = Self::second_factor_account(tx, ev, &ctx, &ticket, true, &policy)? else {
                return Ok(Err(StoreError::InvalidCredentials));
            };
            let who = person(&ctx, &account, role);
            let fail = |ev: &mut Events, reason: &str| -> Result<Kept<LoginOutcome>, StoreError> {
                record_failure(tx, ev, &ctx, Some(&account), reason, &policy)?;
                Ok(Err(StoreError::InvalidCredentials))
            };
            let pending = match presented(SecretKind::Ticket, &ticket) {
                Some(bound) => take_challenge(tx.conn, &bound, PURPOSE_LOGIN, &account, now)?,
                None => Err("no-challenge"),
            };
            let challenge = match pending {
                Ok(p) => p.challenge,
                Err(why) => return fail(ev, &format!("webauthn: {why}")),
            };
            let row: Option<(Vec<u8>, i64, Vec<u8>, i64)> = tx
                .conn
                .query_row(
                    "SELECT user_handle, key_id, public_key, sign_count FROM credential_webauthn \
                     WHERE id = ?1 AND account = ?2",
                    params![response.credential_id, account],
                    |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
                )
                .optional()?;
            let Some((user_handle, key_id, sealed, stored_count)) = row else {
                return fail(ev, "webauthn: unknown-credential");
            };
            if response.user_handle.as_ref().is_some_and(|h| *h != user_handle) {
                return fail(ev, "webauthn: wrong-user-handle");
            }
            let key = tx.keys.by_id(tx.conn, key_id)?;
            let public_key = key.open(&sealed, &key_aad(&account, &response.credential_id)).ok_or_else(|| {
                StoreError::Tampered(format!(
                    "WebAuthn credential {} of account '{account}'",
                    short_id(&response.credential_id)
                ))
            })?;
            let stored = u32::try_from(stored_count).unwrap_or(u32::MAX);
            let assertion = match wa::verify_assertion(
                &rp,
                &challenge,
                &public_key,
                stored,
                &response.client_data_json,
                &response.authenticator_data,
                &response.signature,
            ) {
                Ok(a) => a,
                Err(e @ WebauthnError::SignCountRegression { .. }) => {
                    tracing::warn!(
                        target: "security",
                        account = %account,
                        credential = %short_id(&response.credential_id),
                        "WebAuthn signature counter did not increase: possible cloned authenticator"
                    );
                    ev.push(
                        &who,
                        account_target(AuditEvent::new(Action::WebauthnCloneSuspected, 401), &account)
                            .with_detail(format!("credential {}: {e}", short_id(&response.credential_id))),
                    );
                    return fail(ev, "webauthn: sign-count-regression");
                }
                Err(e) => return fail(ev, &format!("webauthn: {}", e.code())),
            };
            tx.conn.execute(
                "UPDATE credential_webauthn SET sign_count = ?1, last_used_us = ?2 WHERE id = ?3",
                params![i64::from(assertion.sign_count), now, response.credential_id],
            )?;
            tx.conn.execute("DELETE FROM login_throttle WHERE kind = 'account' AND key = ?1", [&account])?;
            let factors = "password+webauthn";
            let outcome = create_session(tx, ev, &who, &account, factors, &policy)?;
            ev.push(
                &who,
                account_target(AuditEvent::new(Action::Login, 200), &account).with_detail(format!(
                    "{factors} ({}{})",
                    short_id(&response.credential_id),
                    if assertion.user_verified { ", uv" } else { "" }
                )),
            );
            Ok(Ok(outcome))
        })
        .await
    }

    async fn own_credentials_now(
        &self,
        ctx: AccessContext,
        principal: Principal,
    ) -> Result<Vec<CredentialInfo>, StoreError> {
        self.identity_job(move |tx, ev| {
            let l = list(tx.conn, &principal.account)?;
            ev.push(&ctx, account_target(AuditEvent::new(Action::WebauthnList, 200), &principal.account));
            Ok(Ok(l))
        })
        .await
    }

    async fn own_remove_now(
        &self,
        ctx: AccessContext,
        principal: Principal,
        credential: String,
        policy: SharedLoginPolicy,
    ) -> Result<(), StoreError> {
        self.identity_job(move |tx, ev| remove_one(tx, ev, &ctx, &principal.account, &credential, &policy)).await
    }

    // ---- Administrator (operator) actions -------------------------------------------------

    /// An account's WebAuthn credentials, for `mamori user webauthn list` (audited).
    pub async fn list_webauthn(
        &self,
        ctx: AccessContext,
        name: &AccountName,
    ) -> Result<Vec<CredentialInfo>, StoreError> {
        self.account_job(ctx, name, Action::WebauthnList, |tx, ev, ctx, account| {
            let l = list(tx.conn, account)?;
            ev.push(ctx, account_target(AuditEvent::new(Action::WebauthnList, 200), account));
            Ok(Ok(l))
        })
        .await
    }

    /// Removes a credential of an account, for `mamori user webauthn remove` (audited). The last
    /// second factor of a two-factor role is not removed: a temporary credential (AUTH-8) resets
    /// them all instead.
    pub async fn remove_webauthn(
        &self,
        ctx: AccessContext,
        name: &AccountName,
        credential: &str,
        policy: SharedLoginPolicy,
    ) -> Result<(), StoreError> {
        let account = name.as_str().to_string();
        let credential = credential.to_string();
        self.identity_job(move |tx, ev| {
            // Separation of duties: holders remove their own credentials with their session
            // (`/auth/webauthn/remove`); the administration path is for someone else's.
            if own_account(&ctx, &account) {
                ev.push(
                    &ctx,
                    account_target(AuditEvent::new(Action::WebauthnRemove, 403), &account)
                        .with_detail("refused: separation of duties: own account"),
                );
                return Ok(Err(StoreError::invalid(
                    "forbidden",
                    "separation of duties: remove your own credentials with your session (POST /auth/webauthn/remove)",
                )));
            }
            remove_one(tx, ev, &ctx, &account, &credential, &policy)
        })
        .await
    }
}

impl Webauthn for SqliteStore {
    fn webauthn_register_begin(
        &self,
        ctx: AccessContext,
        subject: Subject,
        label: String,
        policy: SharedLoginPolicy,
    ) -> StoreFuture<'_, CreationOptions> {
        Box::pin(self.register_begin_now(ctx, subject, label, policy))
    }

    fn webauthn_register_finish(
        &self,
        ctx: AccessContext,
        subject: Subject,
        response: RegistrationResponse,
        policy: SharedLoginPolicy,
    ) -> StoreFuture<'_, CredentialInfo> {
        Box::pin(self.register_finish_now(ctx, subject, response, policy))
    }

    fn webauthn_login_begin(
        &self,
        ctx: AccessContext,
        ticket: Zeroizing<String>,
        policy: SharedLoginPolicy,
    ) -> StoreFuture<'_, RequestOptions> {
        Box::pin(self.login_begin_now(ctx, ticket, policy))
    }

    fn webauthn_login_finish(
        &self,
        ctx: AccessContext,
        ticket: Zeroizing<String>,
        response: AssertionResponse,
        policy: SharedLoginPolicy,
    ) -> StoreFuture<'_, LoginOutcome> {
        Box::pin(self.login_finish_now(ctx, ticket, response, policy))
    }

    fn webauthn_credentials(&self, ctx: AccessContext, principal: Principal) -> StoreFuture<'_, Vec<CredentialInfo>> {
        Box::pin(self.own_credentials_now(ctx, principal))
    }

    fn webauthn_remove(
        &self,
        ctx: AccessContext,
        principal: Principal,
        credential: String,
        policy: SharedLoginPolicy,
    ) -> StoreFuture<'_, ()> {
        Box::pin(self.own_remove_now(ctx, principal, credential, policy))
    }

    fn webauthn_credentials_of(
        &self,
        ctx: AccessContext,
        account: AccountName,
    ) -> StoreFuture<'_, Vec<CredentialInfo>> {
        Box::pin(async move { self.list_webauthn(ctx, &account).await })
    }

    fn webauthn_remove_of(
        &self,
        ctx: AccessContext,
        account: AccountName,
        credential: String,
        policy: SharedLoginPolicy,
    ) -> StoreFuture<'_, ()> {
        Box::pin(async move { self.remove_webauthn(ctx, &account, &credential, policy).await })
    }
}
