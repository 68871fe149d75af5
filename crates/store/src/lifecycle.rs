//! Account lifecycle (AUTH-7): rights granted on request and approved by a manager, immediate
//! disabling, automatic disabling of accounts unused for N days, and the review report of who has
//! what. Every step is audited in the same transaction as its effect.
//!
//! Separation of duties: an approval needs a *manager* (an account named in
//! `[lifecycle] approvers`, or any administrator when that list is empty, or the local operator),
//! and the manager may be neither the person who asked nor the account that gets the role.
//!
//! Inactivity is measured from the latest of: creation, re-enabling, the last login (a session
//! created) and the last authenticated request (a session or an API token used; written at most
//! once a minute, like a session's idle time).

use std::sync::Arc;

use mamori_access::Role;
use rusqlite::{Connection, OptionalExtension, params};
use serde::Serialize;

use crate::accounts::AccountName;
use crate::clock::fhir_instant;
use crate::model::{AccessContext, Action, Actor, AuditEvent};
use crate::writes::Tx;
use crate::{SqliteStore, StoreError, StoreFuture};

/// Schema of the lifecycle, appended to the records database's migration chain.
pub(crate) const MIGRATION: &str = r#"
-- Last use (AUTH-7): a login, or an authenticated request with a session or an API token
-- (written at most once a minute). enabled_us: last re-enabled; disabled_reason: why disabled.
ALTER TABLE account ADD COLUMN last_login_us INTEGER;
ALTER TABLE account ADD COLUMN last_used_us INTEGER;
ALTER TABLE account ADD COLUMN enabled_us INTEGER;
ALTER TABLE account ADD COLUMN disabled_reason TEXT;
ALTER TABLE api_token ADD COLUMN last_used_us INTEGER;
-- Requests for a role, decided by a manager (AUTH-7). status: pending, approved, rejected,
-- expired. The role changes only when a request is approved.
CREATE TABLE role_request (
    id            INTEGER PRIMARY KEY,
    account       TEXT    NOT NULL REFERENCES account(name),
    role          TEXT    NOT NULL,
    reason        TEXT    NOT NULL,
    requested_by  TEXT    NOT NULL,
    requested_us  INTEGER NOT NULL,
    status        TEXT    NOT NULL,
    previous_role TEXT,
    decided_by    TEXT,
    decided_us    INTEGER,
    note          TEXT
);
CREATE INDEX role_request_by_status ON role_request (status, requested_us);
CREATE INDEX role_request_by_account ON role_request (account, id);
-- Accounts that existed before use was tracked count as (re-)enabled at the upgrade, so the
-- first sweep after upgrading does not disable them all at once.
UPDATE account SET enabled_us = CAST(strftime('%s', 'now') AS INTEGER) * 1000000;
"#;

/// Lifecycle rules from `[lifecycle]`.
#[derive(Clone, Debug)]
pub struct LifecyclePolicy {
    /// Accounts that may approve role requests; empty: every administrator.
    pub approvers: Vec<String>,
    /// A pending request not decided within this long expires (and changes nothing).
    pub request_ttl: time::Duration,
    /// Accounts unused this long are disabled automatically; `None`: never.
    pub disable_after: Option<time::Duration>,
}

impl Default for LifecyclePolicy {
    fn default() -> Self {
        LifecyclePolicy {
            approvers: Vec::new(),
            request_ttl: time::Duration::days(14),
            disable_after: Some(time::Duration::days(90)),
        }
    }
}

pub type SharedLifecyclePolicy = Arc<LifecyclePolicy>;

impl LifecyclePolicy {
    /// Whether the actor may decide role requests (before separation of duties is applied).
    pub fn is_manager(&self, actor: &Actor) -> bool {
        match actor {
            // The local operator holds the data directory's keys: already all-powerful.
            Actor::Operator(_) => true,
            Actor::Person(p) if self.approvers.is_empty() => p.role == Role::Administrator,
            Actor::Person(p) => self.approvers.iter().any(|a| a == &p.account),
            Actor::Anonymous => false,
        }
    }
}

/// One role request as the API and the CLI show it.
#[derive(Clone, Debug, Serialize)]
pub struct RoleRequest {
    pub id: i64,
    pub account: String,
    pub role: String,
    pub reason: String,
    pub requested_by: String,
    pub requested_at: String,
    pub status: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub previous_role: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub decided_by: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub decided_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// A pending request as listed in the review report.
#[derive(Clone, Debug, Serialize)]
pub struct PendingRequest {
    pub id: i64,
    pub role: String,
    pub requested_by: String,
    pub requested_at: String,
}

/// One account in the review report (AUTH-7).
#[derive(Clone, Debug, Serialize)]
pub struct AccountReportRow {
    pub name: String,
    pub role: String,
    /// Network zones the account's job type may work from under the access policy (ACL-3); filled
    /// by [`fill_zones`], since the policy belongs to the server, not the store.
    pub zones: Vec<String>,
    pub created: String,
    pub last_login: Option<String>,
    pub last_used: Option<String>,
    /// "set", "must-change" or "none".
    pub password: String,
    /// "active", "pending" or "none".
    pub totp: String,
    /// Enrolled WebAuthn credentials (security keys, passkeys).
    pub webauthn: i64,
    pub recovery_codes_left: i64,
    pub disabled_at: Option<String>,
    pub disabled_reason: Option<String>,
    pub locked_until: Option<String>,
    pub sessions: i64,
    pub api_tokens: i64,
    pub pending_requests: Vec<PendingRequest>,
    /// The Patient a patient account is linked to (ACL-4).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub patient: Option<String>,
}

/// What a lifecycle sweep did.
#[derive(Clone, Debug, Default)]
pub struct SweepOutcome {
    /// Accounts disabled for inactivity, with their last activity (µs).
    pub disabled: Vec<(String, i64)>,
    /// Role requests that expired undecided.
    pub expired: Vec<i64>,
}

/// Account administration over HTTP; each call is audited.
pub trait Lifecycle: Send + Sync {
    /// Adds the account `who` of a staff job type (AUTH-1), linked to the person's Practitioner
    /// `pr` if given (it must exist; the ID token's `fhirUser`); it has no credential until an
    /// administrator gives it an initial password or a temporary credential.
    fn add_account(&self, ctx: AccessContext, who: AccountName, role: Role, pr: Option<String>) -> StoreFuture<'_, ()>;
    /// Adds a patient account linked to the (existing) Patient `patient` (ACL-4).
    fn add_patient_account(&self, ctx: AccessContext, account: AccountName, patient: String) -> StoreFuture<'_, ()>;
    /// A one-time temporary credential for a person who lost their second factor or password
    /// (AUTH-8): the secret (shown once) and its expiry (µs).
    fn temporary_credential(
        &self,
        ctx: AccessContext,
        account: AccountName,
        policy: mamori_access::SharedLoginPolicy,
    ) -> StoreFuture<'_, (zeroize::Zeroizing<String>, i64)>;
    /// Asks for `role` on `account`; the requester is the context's actor.
    fn request_role(
        &self,
        ctx: AccessContext,
        account: AccountName,
        role: Role,
        reason: String,
    ) -> StoreFuture<'_, RoleRequest>;
    /// Approves (`approve`) or rejects a pending request; only a manager other than the
    /// requester and the account concerned may approve.
    fn decide_role_request(
        &self,
        ctx: AccessContext,
        id: i64,
        approve: bool,
        note: Option<String>,
        policy: SharedLifecyclePolicy,
    ) -> StoreFuture<'_, RoleRequest>;
    /// Role requests, newest first (`pending_only`: only those awaiting a decision).
    fn role_requests(&self, ctx: AccessContext, pending_only: bool) -> StoreFuture<'_, Vec<RoleRequest>>;
    /// Disables an account at once (sessions end, tokens stop working); returns the sessions ended.
    fn disable_account_because(
        &self,
        ctx: AccessContext,
        account: AccountName,
        reason: String,
    ) -> StoreFuture<'_, usize>;
    /// Enables a disabled account; its inactivity is counted afresh from now.
    fn enable_account(&self, ctx: AccessContext, account: AccountName) -> StoreFuture<'_, ()>;
    /// The review report of every account; the report itself is audited.
    fn account_report(&self, ctx: AccessContext) -> StoreFuture<'_, Vec<AccountReportRow>>;
    /// Every account: name, job type, state (audited).
    fn accounts(&self, ctx: AccessContext) -> StoreFuture<'_, Vec<crate::AccountInfo>>;
    /// An API token for an enabled staff account, of lifetime `ttl` (the policy's default when
    /// `None`, at most its maximum): the token (shown once) and its expiry (µs).
    fn issue_api_token(
        &self,
        ctx: AccessContext,
        account: AccountName,
        ttl: Option<time::Duration>,
        policy: crate::accounts::TokenPolicy,
    ) -> StoreFuture<'_, (mamori_access::ApiToken, i64)>;
    /// An account's API tokens: ids and dates, never secrets.
    fn api_tokens(&self, ctx: AccessContext, account: AccountName) -> StoreFuture<'_, Vec<crate::accounts::TokenInfo>>;
    /// Revokes one API token of an account by its listed id; it stops working at once.
    fn revoke_api_token(&self, ctx: AccessContext, account: AccountName, id: String) -> StoreFuture<'_, ()>;
    /// Lifts a lockout (AUTH-5); whether the account was locked.
    fn unlock(&self, ctx: AccessContext, account: AccountName) -> StoreFuture<'_, bool>;
    /// Invalidates an account's unused recovery codes (AUTH-8); how many there were.
    fn revoke_recovery_codes_of(&self, ctx: AccessContext, account: AccountName) -> StoreFuture<'_, usize>;
    /// Sets an initial password, to be changed at first login (AUTH-3); never one's own.
    fn initial_password(
        &self,
        ctx: AccessContext,
        account: AccountName,
        password: zeroize::Zeroizing<String>,
        policy: mamori_access::SharedLoginPolicy,
    ) -> StoreFuture<'_, ()>;
    /// Runs the lifecycle sweep now (inactive accounts, expired requests): each change is
    /// audited, and so is the sweep itself (`account-sweep`, with what it did).
    fn sweep(&self, ctx: AccessContext, policy: SharedLifecyclePolicy) -> StoreFuture<'_, SweepOutcome>;
}

/// Free text from people (reasons, notes): one line, bounded, no control characters.
pub fn clean_text(raw: &str, what: &str, required: bool) -> Result<String, StoreError> {
    let t = raw.trim();
    if t.is_empty() && required {
        return Err(StoreError::invalid("required", format!("a {what} is required")));
    }
    if t.chars().count() > 500 || t.chars().any(char::is_control) {
        return Err(StoreError::invalid("invalid", format!("the {what} must be one line of at most 500 characters")));
    }
    Ok(t.to_string())
}

fn refuse(message: impl Into<String>) -> StoreError {
    StoreError::invalid("forbidden", message)
}

fn actor_label(ctx: &AccessContext) -> Result<String, StoreError> {
    ctx.actor_name().map(str::to_string).ok_or(StoreError::Forbidden)
}

const REQUEST_COLUMNS: &str = "id, account, role, reason, requested_by, requested_us, status, previous_role, \
                               decided_by, decided_us, note";

fn request_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<RoleRequest> {
    Ok(RoleRequest {
        id: r.get(0)?,
        account: r.get(1)?,
        role: r.get(2)?,
        reason: r.get(3)?,
        requested_by: r.get(4)?,
        requested_at: fhir_instant(r.get(5)?),
        status: r.get(6)?,
        previous_role: r.get(7)?,
        decided_by: r.get(8)?,
        decided_at: r.get::<_, Option<i64>>(9)?.map(fhir_instant),
        note: r.get(10)?,
    })
}

fn load_request(c: &Connection, id: i64) -> Result<Option<(RoleRequest, i64)>, StoreError> {
    Ok(c.query_row(&format!("SELECT {REQUEST_COLUMNS} FROM role_request WHERE id = ?1"), [id], |r| {
        Ok((request_row(r)?, r.get::<_, i64>(5)?))
    })
    .optional()?)
}

/// Disables in the current transaction; returns the sessions ended, or `None` if already disabled.
fn disable_in_tx(tx: &Tx<'_>, account: &str, reason: &str) -> Result<Option<usize>, StoreError> {
    let changed = tx.conn.execute(
        "UPDATE account SET disabled_us = ?1, disabled_reason = ?2 WHERE name = ?3 AND disabled_us IS NULL",
        params![tx.now_us, reason, account],
    )?;
    let sessions = tx.conn.execute("DELETE FROM login_session WHERE account = ?1", [account])?;
    tx.conn.execute("DELETE FROM login_ticket WHERE account = ?1", [account])?;
    Ok((changed == 1).then_some(sessions))
}

fn status_of<T>(r: &Result<T, StoreError>, ok: u16) -> u16 {
    r.as_ref().map(|_| ok).unwrap_or_else(|e| e.status())
}

pub(crate) fn failure_detail(e: &StoreError) -> String {
    match e {
        StoreError::Invalid { message, .. } => format!("refused: {}", message.chars().take(120).collect::<String>()),
        other => format!("refused: {}", other.issue_code()),
    }
}

impl SqliteStore {
    async fn request_role_now(
        &self,
        ctx: AccessContext,
        account: AccountName,
        role: Role,
        reason: String,
    ) -> Result<RoleRequest, StoreError> {
        let reason = clean_text(&reason, "reason", true)?;
        let requester = actor_label(&ctx)?;
        // Anyone may ask for themselves; asking for someone else is an administrator's job.
        let on_behalf_ok = match &ctx.actor {
            Actor::Person(p) => p.account == account.as_str() || p.role == Role::Administrator,
            Actor::Operator(_) => true,
            Actor::Anonymous => false,
        };
        let name = account.as_str().to_string();
        let target = name.clone();
        self.write_audited(
            ctx,
            move |tx| {
                if !on_behalf_ok {
                    return Err(refuse("only an administrator may request a role for another account"));
                }
                let current: Option<String> =
                    tx.conn.query_row("SELECT role FROM account WHERE name = ?1", [&name], |r| r.get(0)).optional()?;
                let Some(current) = current else { return Err(StoreError::NotFound(format!("account '{name}'"))) };
                if current == role.as_str() {
                    return Err(StoreError::invalid("business-rule", format!("'{name}' already has the role {role}")));
                }
                // ACL-4: a patient account never becomes a staff account, nor the reverse.
                if role == Role::Patient || current == Role::Patient.as_str() {
                    return Err(StoreError::invalid(
                        "business-rule",
                        "patient accounts and staff accounts are separate: no role request turns one into the other",
                    ));
                }
                tx.conn.execute(
                    "INSERT INTO role_request (account, role, reason, requested_by, requested_us, status) \
                     VALUES (?1, ?2, ?3, ?4, ?5, 'pending')",
                    params![name, role.as_str(), reason, requester, tx.now_us],
                )?;
                let id = tx.conn.last_insert_rowid();
                load_request(tx.conn, id)?.map(|(r, _)| r).ok_or_else(|| StoreError::internal("request vanished"))
            },
            |_| true,
            move |r| {
                let ev = AuditEvent::new(Action::RoleRequest, status_of(r, 201)).with_target("account", Some(target));
                vec![match r {
                    Ok(req) => ev.with_detail(format!("request {}: role={}", req.id, req.role)),
                    Err(e) => ev.with_detail(failure_detail(e)),
                }]
            },
        )
        .await
    }

    async fn decide_now(
        &self,
        ctx: AccessContext,
        id: i64,
        approve: bool,
        note: Option<String>,
        policy: SharedLifecyclePolicy,
    ) -> Result<RoleRequest, StoreError> {
        let note = match note {
            Some(n) => Some(clean_text(&n, "note", false)?).filter(|n| !n.is_empty()),
            None => None,
        };
        let decider = actor_label(&ctx)?;
        let manager = policy.is_manager(&ctx.actor);
        let ttl_us = crate::clock::to_micros(time::OffsetDateTime::UNIX_EPOCH + policy.request_ttl);
        let action = if approve { Action::RoleApprove } else { Action::RoleReject };
        self.write_audited(
            ctx,
            move |tx| {
                let Some((req, requested_us)) = load_request(tx.conn, id)? else {
                    return Err(StoreError::NotFound(format!("role request {id}")));
                };
                if req.status != "pending" {
                    return Err(StoreError::PreconditionFailed(format!("role request {id} is already {}", req.status)));
                }
                if requested_us + ttl_us <= tx.now_us {
                    return Err(StoreError::PreconditionFailed(format!(
                        "role request {id} has expired; ask again"
                    )));
                }
                if !manager {
                    return Err(refuse("only a manager (lifecycle.approvers, or an administrator) decides role requests"));
                }
                // Separation of duties: no one approves their own request or their own rights.
                if approve && decider == req.requested_by {
                    return Err(refuse("separation of duties: the requester cannot approve the request"));
                }
                if approve && decider == req.account {
                    return Err(refuse("separation of duties: no one approves a role for their own account"));
                }
                let (status, previous) = if approve {
                    let previous: String =
                        tx.conn.query_row("SELECT role FROM account WHERE name = ?1", [&req.account], |r| r.get(0))?;
                    tx.conn.execute("UPDATE account SET role = ?1 WHERE name = ?2", params![req.role, req.account])?;
                    ("approved", Some(previous))
                } else {
                    ("rejected", None)
                };
                tx.conn.execute(
                    "UPDATE role_request SET status = ?1, previous_role = ?2, decided_by = ?3, decided_us = ?4, note = ?5 \
                     WHERE id = ?6",
                    params![status, previous, decider, tx.now_us, note, id],
                )?;
                load_request(tx.conn, id)?.map(|(r, _)| r).ok_or_else(|| StoreError::internal("request vanished"))
            },
            |_| true,
            move |r| {
                vec![match r {
                    Ok(req) => AuditEvent::new(action, 200).with_target("account", Some(req.account.clone())).with_detail(
                        match &req.previous_role {
                            Some(prev) => format!(
                                "request {id}: role {prev} -> {}; requested by {}",
                                req.role, req.requested_by
                            ),
                            None => format!("request {id}: role {} rejected; requested by {}", req.role, req.requested_by),
                        },
                    ),
                    Err(e) => AuditEvent::new(action, e.status())
                        .with_target("role-request", Some(id.to_string()))
                        .with_detail(failure_detail(e)),
                }]
            },
        )
        .await
    }

    async fn role_requests_now(&self, ctx: AccessContext, pending_only: bool) -> Result<Vec<RoleRequest>, StoreError> {
        let result = self
            .inner
            .engine
            .read(move |c| {
                let filter = if pending_only { "WHERE status = 'pending'" } else { "" };
                let mut stmt = c.prepare(&format!(
                    "SELECT {REQUEST_COLUMNS} FROM role_request {filter} ORDER BY id DESC LIMIT 1000"
                ))?;
                let rows = stmt.query_map([], request_row)?.collect::<Result<Vec<_>, _>>()?;
                Ok(rows)
            })
            .await;
        let ev = AuditEvent::new(Action::RoleRequestList, status_of(&result, 200)).with_detail(if pending_only {
            "pending"
        } else {
            "all"
        });
        self.audit(ctx, ev).await?;
        result
    }

    async fn disable_because_now(
        &self,
        ctx: AccessContext,
        account: AccountName,
        reason: String,
    ) -> Result<usize, StoreError> {
        let reason = clean_text(&reason, "reason", false)?;
        let reason = if reason.is_empty() { "disabled by an administrator".to_string() } else { reason };
        let by = ctx.actor_name().unwrap_or("unknown").to_string();
        let name = account.as_str().to_string();
        let target = name.clone();
        self.write_audited(
            ctx,
            move |tx| {
                let exists: Option<i64> =
                    tx.conn.query_row("SELECT 1 FROM account WHERE name = ?1", [&name], |r| r.get(0)).optional()?;
                if exists.is_none() {
                    return Err(StoreError::NotFound(format!("account '{name}'")));
                }
                Ok(disable_in_tx(tx, &name, &format!("{reason} (by {by})"))?.unwrap_or(0))
            },
            |_| true,
            move |r| {
                let ev =
                    AuditEvent::new(Action::AccountDisable, status_of(r, 200)).with_target("account", Some(target));
                vec![match r {
                    Ok(n) => ev.with_detail(format!("{n} session(s) ended")),
                    Err(e) => ev.with_detail(failure_detail(e)),
                }]
            },
        )
        .await
    }

    async fn enable_now(&self, ctx: AccessContext, account: AccountName) -> Result<(), StoreError> {
        let name = account.as_str().to_string();
        let target = name.clone();
        self.write_audited(
            ctx,
            move |tx| {
                let disabled: Option<bool> = tx
                    .conn
                    .query_row("SELECT disabled_us IS NOT NULL FROM account WHERE name = ?1", [&name], |r| r.get(0))
                    .optional()?;
                match disabled {
                    None => Err(StoreError::NotFound(format!("account '{name}'"))),
                    Some(false) => Err(StoreError::invalid("business-rule", format!("'{name}' is not disabled"))),
                    Some(true) => {
                        tx.conn.execute(
                            "UPDATE account SET disabled_us = NULL, disabled_reason = NULL, enabled_us = ?1 WHERE name = ?2",
                            params![tx.now_us, name],
                        )?;
                        Ok(())
                    }
                }
            },
            |_| true,
            move |r| {
                let ev = AuditEvent::new(Action::AccountEnable, status_of(r, 200)).with_target("account", Some(target));
                vec![match r {
                    Ok(()) => ev,
                    Err(e) => ev.with_detail(failure_detail(e)),
                }]
            },
        )
        .await
    }

    async fn account_report_now(&self, ctx: AccessContext) -> Result<Vec<AccountReportRow>, StoreError> {
        let now = crate::clock::to_micros(self.inner.clock.now());
        let result = self.inner.engine.read(move |c| report_rows(c, now)).await;
        let ev = AuditEvent::new(Action::AccountReport, status_of(&result, 200))
            .with_detail(format!("{} account(s)", result.as_ref().map(Vec::len).unwrap_or(0)));
        self.audit(ctx, ev).await?;
        result
    }

    /// The periodic lifecycle sweep (AUTH-7): disables accounts unused for
    /// `policy.disable_after` and expires undecided role requests older than `policy.request_ttl`.
    /// Each change is audited with its reason; a sweep that changes nothing writes nothing.
    pub async fn lifecycle_sweep(
        &self,
        ctx: AccessContext,
        policy: &LifecyclePolicy,
    ) -> Result<SweepOutcome, StoreError> {
        let after_us = policy.disable_after.map(|d| d.whole_microseconds().clamp(0, i128::from(i64::MAX)) as i64);
        let ttl_us = policy.request_ttl.whole_microseconds().clamp(0, i128::from(i64::MAX)) as i64;
        let days = policy.disable_after.map(|d| d.whole_days()).unwrap_or(0);
        let by = ctx.actor_name().unwrap_or("system").to_string();
        self.write_audited(
            ctx,
            move |tx| {
                let mut out = SweepOutcome::default();
                if let Some(after) = after_us {
                    let idle: Vec<(String, i64)> = tx
                        .conn
                        .prepare(
                            "SELECT name, max(created_us, coalesce(enabled_us, 0), coalesce(last_login_us, 0), \
                             coalesce(last_used_us, 0)) AS last FROM account WHERE disabled_us IS NULL \
                             AND last <= ?1 ORDER BY name",
                        )?
                        .query_map([tx.now_us.saturating_sub(after)], |r| Ok((r.get(0)?, r.get(1)?)))?
                        .collect::<Result<_, _>>()?;
                    for (name, last) in idle {
                        let reason = format!("inactive: unused for {days} days since {} (by {by})", fhir_instant(last));
                        if disable_in_tx(tx, &name, &reason)?.is_some() {
                            out.disabled.push((name, last));
                        }
                    }
                }
                let expired: Vec<i64> = tx
                    .conn
                    .prepare(
                        "UPDATE role_request SET status = 'expired', decided_us = ?1 \
                         WHERE status = 'pending' AND requested_us <= ?2 RETURNING id",
                    )?
                    .query_map(params![tx.now_us, tx.now_us.saturating_sub(ttl_us)], |r| r.get(0))?
                    .collect::<Result<_, _>>()?;
                out.expired = expired;
                Ok(out)
            },
            |_| true,
            move |r| match r {
                Ok(out) => out
                    .disabled
                    .iter()
                    .map(|(name, last)| {
                        AuditEvent::new(Action::AccountDisable, 200)
                            .with_target("account", Some(name.clone()))
                            .with_detail(format!("automatic: unused for {days} days since {}", fhir_instant(*last)))
                    })
                    .chain(out.expired.iter().map(|id| {
                        AuditEvent::new(Action::RoleRequestExpire, 200)
                            .with_target("role-request", Some(id.to_string()))
                            .with_detail("undecided within lifecycle.request_ttl; nothing changed")
                    }))
                    .collect(),
                Err(e) => {
                    vec![AuditEvent::new(Action::AccountDisable, e.status()).with_detail("automatic sweep failed")]
                }
            },
        )
        .await
    }
}

fn opt_instant(us: Option<i64>) -> Option<String> {
    us.map(fhir_instant)
}

fn report_rows(c: &Connection, now: i64) -> Result<Vec<AccountReportRow>, StoreError> {
    let mut pending: std::collections::HashMap<String, Vec<PendingRequest>> = std::collections::HashMap::new();
    {
        let mut stmt = c.prepare(
            "SELECT account, id, role, requested_by, requested_us FROM role_request WHERE status = 'pending' ORDER BY id",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                PendingRequest {
                    id: r.get(1)?,
                    role: r.get(2)?,
                    requested_by: r.get(3)?,
                    requested_at: fhir_instant(r.get(4)?),
                },
            ))
        })?;
        for row in rows {
            let (account, p) = row?;
            pending.entry(account).or_default().push(p);
        }
    }
    let mut stmt = c.prepare(
        "SELECT a.name, a.role, a.created_us, a.last_login_us, a.last_used_us, \
         (SELECT CASE WHEN p.must_change THEN 'must-change' ELSE 'set' END FROM credential_password p WHERE p.account = a.name), \
         (SELECT CASE WHEN t.active THEN 'active' ELSE 'pending' END FROM credential_totp t WHERE t.account = a.name), \
         (SELECT count(*) FROM recovery_code r WHERE r.account = a.name AND r.used_us IS NULL), \
         a.disabled_us, a.disabled_reason, \
         (SELECT locked_until_us FROM login_throttle l WHERE l.kind = 'account' AND l.key = a.name AND l.locked_until_us > ?1), \
         (SELECT count(*) FROM login_session s WHERE s.account = a.name AND s.expires_us > ?1), \
         (SELECT count(*) FROM api_token k WHERE k.account = a.name AND k.expires_us > ?1), \
         (SELECT pa.patient FROM patient_account pa WHERE pa.account = a.name), \
         (SELECT count(*) FROM credential_webauthn w WHERE w.account = a.name) \
         FROM account a ORDER BY a.name",
    )?;
    let rows = stmt
        .query_map([now], |r| {
            let name: String = r.get(0)?;
            Ok(AccountReportRow {
                pending_requests: Vec::new(),
                role: r.get(1)?,
                zones: Vec::new(),
                created: fhir_instant(r.get(2)?),
                last_login: opt_instant(r.get(3)?),
                last_used: opt_instant(r.get(4)?),
                password: r.get::<_, Option<String>>(5)?.unwrap_or_else(|| "none".into()),
                totp: r.get::<_, Option<String>>(6)?.unwrap_or_else(|| "none".into()),
                webauthn: r.get(14)?,
                recovery_codes_left: r.get(7)?,
                disabled_at: opt_instant(r.get(8)?),
                disabled_reason: r.get(9)?,
                locked_until: opt_instant(r.get(10)?),
                sessions: r.get(11)?,
                api_tokens: r.get(12)?,
                patient: r.get(13)?,
                name,
            })
        })?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(rows
        .into_iter()
        .map(|mut row| {
            row.pending_requests = pending.remove(&row.name).unwrap_or_default();
            row
        })
        .collect())
}

/// Columns of the CSV review report, in order.
pub const REPORT_CSV_HEADER: [&str; 16] = [
    "name",
    "role",
    "zones",
    "created",
    "last_login",
    "last_used",
    "password",
    "totp",
    "webauthn",
    "recovery_codes_left",
    "disabled_at",
    "disabled_reason",
    "locked_until",
    "sessions",
    "api_tokens",
    "pending_requests",
];

/// One CSV field per RFC 4180: quoted when it holds a comma, quote, CR or LF (quotes doubled).
/// A field a spreadsheet would run as a formula (starting with `=`, `+`, `-`, `@`, tab or CR) is
/// prefixed with `'` (OWASP CSV injection), since reasons are free text.
pub fn csv_field(raw: &str) -> String {
    let defused = if raw.starts_with(['=', '+', '-', '@', '\t', '\r']) { format!("'{raw}") } else { raw.to_string() };
    if defused.contains([',', '"', '\r', '\n']) { format!("\"{}\"", defused.replace('"', "\"\"")) } else { defused }
}

/// The review report as CSV (RFC 4180: CRLF line ends, header row).
/// Fills each row's zones from the access policy (by the row's job type).
pub fn fill_zones(rows: &mut [AccountReportRow], policy: &mamori_access::Policy) {
    for r in rows {
        r.zones = r.role.parse::<mamori_access::Role>().map(|role| policy.zones_of(role)).unwrap_or_default();
    }
}

pub fn report_csv(rows: &[AccountReportRow]) -> String {
    let mut out = REPORT_CSV_HEADER.join(",");
    out.push_str("\r\n");
    let o = |v: &Option<String>| v.clone().unwrap_or_default();
    for r in rows {
        let pending = r
            .pending_requests
            .iter()
            .map(|p| format!("#{} {} by {} at {}", p.id, p.role, p.requested_by, p.requested_at))
            .collect::<Vec<_>>()
            .join("; ");
        let fields = [
            r.name.clone(),
            r.role.clone(),
            r.zones.join(" "),
            r.created.clone(),
            o(&r.last_login),
            o(&r.last_used),
            r.password.clone(),
            r.totp.clone(),
            r.webauthn.to_string(),
            r.recovery_codes_left.to_string(),
            o(&r.disabled_at),
            o(&r.disabled_reason),
            o(&r.locked_until),
            r.sessions.to_string(),
            r.api_tokens.to_string(),
            pending,
        ];
        out.push_str(&fields.iter().map(|f| csv_field(f)).collect::<Vec<_>>().join(","));
        out.push_str("\r\n");
    }
    out
}

impl Lifecycle for SqliteStore {
    fn add_account(&self, ctx: AccessContext, who: AccountName, role: Role, pr: Option<String>) -> StoreFuture<'_, ()> {
        Box::pin(async move { self.create_staff_account(ctx, &who, role, None, pr).await })
    }

    fn add_patient_account(&self, ctx: AccessContext, account: AccountName, patient: String) -> StoreFuture<'_, ()> {
        Box::pin(async move { self.create_patient_account(ctx, &account, &patient).await })
    }

    fn temporary_credential(
        &self,
        ctx: AccessContext,
        account: AccountName,
        policy: mamori_access::SharedLoginPolicy,
    ) -> StoreFuture<'_, (zeroize::Zeroizing<String>, i64)> {
        Box::pin(async move { self.issue_temporary_credential(ctx, &account, policy).await })
    }

    fn request_role(
        &self,
        ctx: AccessContext,
        account: AccountName,
        role: Role,
        reason: String,
    ) -> StoreFuture<'_, RoleRequest> {
        Box::pin(self.request_role_now(ctx, account, role, reason))
    }

    fn decide_role_request(
        &self,
        ctx: AccessContext,
        id: i64,
        approve: bool,
        note: Option<String>,
        policy: SharedLifecyclePolicy,
    ) -> StoreFuture<'_, RoleRequest> {
        Box::pin(self.decide_now(ctx, id, approve, note, policy))
    }

    fn role_requests(&self, ctx: AccessContext, pending_only: bool) -> StoreFuture<'_, Vec<RoleRequest>> {
        Box::pin(self.role_requests_now(ctx, pending_only))
    }

    fn disable_account_because(
        &self,
        ctx: AccessContext,
        account: AccountName,
        reason: String,
    ) -> StoreFuture<'_, usize> {
        Box::pin(self.disable_because_now(ctx, account, reason))
    }

    fn enable_account(&self, ctx: AccessContext, account: AccountName) -> StoreFuture<'_, ()> {
        Box::pin(self.enable_now(ctx, account))
    }

    fn account_report(&self, ctx: AccessContext) -> StoreFuture<'_, Vec<AccountReportRow>> {
        Box::pin(self.account_report_now(ctx))
    }

    fn accounts(&self, ctx: AccessContext) -> StoreFuture<'_, Vec<crate::AccountInfo>> {
        Box::pin(self.list_accounts(ctx))
    }

    fn issue_api_token(
        &self,
        ctx: AccessContext,
        account: AccountName,
        ttl: Option<time::Duration>,
        policy: crate::accounts::TokenPolicy,
    ) -> StoreFuture<'_, (mamori_access::ApiToken, i64)> {
        Box::pin(async move { self.issue_token(ctx, &account, ttl, policy).await })
    }

    fn api_tokens(&self, ctx: AccessContext, account: AccountName) -> StoreFuture<'_, Vec<crate::accounts::TokenInfo>> {
        Box::pin(async move { self.list_tokens(ctx, &account).await })
    }

    fn revoke_api_token(&self, ctx: AccessContext, account: AccountName, id: String) -> StoreFuture<'_, ()> {
        Box::pin(async move { self.revoke_token(ctx, &account, &id).await })
    }

    fn unlock(&self, ctx: AccessContext, account: AccountName) -> StoreFuture<'_, bool> {
        Box::pin(async move { self.unlock_account(ctx, &account).await })
    }

    fn revoke_recovery_codes_of(&self, ctx: AccessContext, account: AccountName) -> StoreFuture<'_, usize> {
        Box::pin(async move { self.revoke_recovery_codes(ctx, &account).await })
    }

    fn initial_password(
        &self,
        ctx: AccessContext,
        account: AccountName,
        password: zeroize::Zeroizing<String>,
        policy: mamori_access::SharedLoginPolicy,
    ) -> StoreFuture<'_, ()> {
        Box::pin(async move { self.set_initial_password(ctx, &account, password, policy).await })
    }

    fn sweep(&self, ctx: AccessContext, policy: SharedLifecyclePolicy) -> StoreFuture<'_, SweepOutcome> {
        Box::pin(async move {
            let out = self.lifecycle_sweep(ctx.clone(), &policy).await?;
            let ev = AuditEvent::new(Action::AccountSweep, 200).with_detail(format!(
                "{} account(s) disabled, {} request(s) expired",
                out.disabled.len(),
                out.expired.len()
            ));
            self.audit(ctx, ev).await?;
            Ok(out)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auth7_csv_fields_are_quoted_per_rfc4180_and_defused() {
        assert_eq!(csv_field("dr.sato"), "dr.sato");
        assert_eq!(csv_field(""), "");
        assert_eq!(csv_field("a,b"), "\"a,b\"");
        assert_eq!(csv_field("say \"hi\""), "\"say \"\"hi\"\"\"");
        assert_eq!(csv_field("two\nlines"), "\"two\nlines\"");
        assert_eq!(csv_field("cr\rhere"), "\"cr\rhere\"");
        assert_eq!(csv_field("=HYPERLINK(\"x\")"), "\"'=HYPERLINK(\"\"x\"\")\"");
        assert_eq!(csv_field("+1"), "'+1");
        assert_eq!(csv_field("@sum"), "'@sum");
        assert_eq!(csv_field("東京, 受付"), "\"東京, 受付\"");
    }

    #[test]
    fn free_text_is_one_bounded_line() {
        assert_eq!(clean_text("  covering night shift ", "reason", true).unwrap(), "covering night shift");
        assert!(clean_text("  ", "reason", true).is_err());
        assert!(clean_text("a\nb", "reason", true).is_err());
        assert!(clean_text(&"x".repeat(501), "reason", true).is_err());
        assert_eq!(clean_text("", "note", false).unwrap(), "");
    }
}
