//! Accounts and API tokens: operator actions, each audited.

use std::fmt;

use mamori_access::{ApiToken, Role};
use rusqlite::{OptionalExtension, params};
use serde::Serialize;

use crate::clock::{fhir_instant, to_micros};
use crate::model::{AccessContext, Action, AuditEvent};
use crate::{SqliteStore, StoreError};

/// An account name: one per person (AUTH-1), so names are short, lowercase and unambiguous.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AccountName(String);

impl AccountName {
    pub fn parse(raw: &str) -> Result<AccountName, StoreError> {
        let ok = (1..=64).contains(&raw.len())
            && raw.as_bytes()[0].is_ascii_alphanumeric()
            && raw.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b));
        if ok {
            Ok(AccountName(raw.to_string()))
        } else {
            Err(StoreError::invalid(
                "invalid",
                "account names are 1-64 characters: lowercase letters, digits, '.', '_' or '-', starting with a letter or digit",
            ))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for AccountName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[derive(Clone, Debug)]
pub struct AccountInfo {
    pub name: String,
    pub role: String,
    pub created_us: i64,
    pub disabled: bool,
}

/// The FHIR resource an account stands for: a patient account's Patient (ACL-4), a staff
/// account's Practitioner (the ID token's `fhirUser`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AccountLink {
    Patient(String),
    Practitioner(String),
}

/// Lifetimes of API tokens (`[tokens]`): the default when none is asked for, and the longest
/// allowed.
#[derive(Clone, Copy, Debug)]
pub struct TokenPolicy {
    pub default_ttl: time::Duration,
    pub max_ttl: time::Duration,
}

impl Default for TokenPolicy {
    fn default() -> Self {
        TokenPolicy { default_ttl: time::Duration::hours(8), max_ttl: time::Duration::days(30) }
    }
}

/// A positive duration written as a number and a unit: `90s`, `15m`, `8h` or `30d`.
pub fn parse_duration(raw: &str) -> Result<time::Duration, StoreError> {
    let raw = raw.trim();
    let clipped: String = raw.chars().take(40).collect();
    let bad = || StoreError::invalid("invalid", format!("'{clipped}' is not a duration like 90s, 15m, 8h or 30d"));
    let split = raw.find(|c: char| !c.is_ascii_digit()).unwrap_or(raw.len());
    let (num, unit) = raw.split_at(split);
    let n: i64 = num.parse().map_err(|_| bad())?;
    let unit_seconds = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(bad()),
    };
    // Checked: a huge number of days must be an error, not an overflow.
    let seconds = n.checked_mul(unit_seconds).ok_or_else(bad)?;
    if seconds <= 0 {
        return Err(StoreError::invalid("invalid", "a duration must be positive"));
    }
    Ok(time::Duration::seconds(seconds))
}

/// An API token as listed: its public id and dates, never the secret (which is not stored).
#[derive(Clone, Debug, Serialize)]
pub struct TokenInfo {
    /// [`mamori_access::TokenHash::public_id`]: what revocation names.
    pub id: String,
    pub account: String,
    pub created: String,
    pub expires: String,
    pub expired: bool,
    pub last_used: Option<String>,
}

/// A token id as listed: 16 lowercase hex digits (the first 8 bytes of the token's SHA-256).
fn token_id_bytes(id: &str) -> Result<Vec<u8>, StoreError> {
    let ok = id.len() == 16 && id.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    if !ok {
        return Err(StoreError::invalid("invalid", "a token id is 16 lowercase hexadecimal digits, as listed"));
    }
    (0..16).step_by(2).map(|i| u8::from_str_radix(&id[i..i + 2], 16).map_err(StoreError::internal)).collect()
}

impl SqliteStore {
    /// Audits a refused administrative action on `account` and returns the refusal, for checks
    /// made before the action's own transaction.
    pub(crate) async fn refused<T>(
        &self,
        ctx: AccessContext,
        action: Action,
        account: &str,
        e: StoreError,
    ) -> Result<T, StoreError> {
        let ev = AuditEvent::new(action, e.status())
            .with_target("account", Some(account.to_string()))
            .with_detail(crate::lifecycle::failure_detail(&e));
        self.audit(ctx, ev).await?;
        Err(e)
    }

    /// Creates an account. `setup_secret_hash` is set only for the first administrator, whose
    /// one-time setup secret replaces any default password (AUTH-4). Patient accounts are made
    /// by [`SqliteStore::create_patient_account`] (they need their Patient).
    pub async fn create_account(
        &self,
        ctx: AccessContext,
        name: &AccountName,
        role: Role,
        setup_secret_hash: Option<[u8; 32]>,
    ) -> Result<(), StoreError> {
        self.create_staff_account(ctx, name, role, setup_secret_hash, None).await
    }

    /// [`SqliteStore::create_account`], linked to the person's Practitioner resource if given
    /// (it must exist), in the same transaction.
    pub async fn create_staff_account(
        &self,
        ctx: AccessContext,
        name: &AccountName,
        role: Role,
        setup_secret_hash: Option<[u8; 32]>,
        practitioner: Option<String>,
    ) -> Result<(), StoreError> {
        if role == Role::Patient {
            return Err(StoreError::invalid(
                "business-rule",
                "patient accounts are created with `mamori patient-account add NAME --patient ID`",
            ));
        }
        self.insert_account(ctx, name, role, setup_secret_hash, practitioner.map(AccountLink::Practitioner)).await
    }

    /// Creates an account, linked to its Patient when it is a patient account (ACL-4).
    pub(crate) async fn insert_account(
        &self,
        ctx: AccessContext,
        name: &AccountName,
        role: Role,
        setup_secret_hash: Option<[u8; 32]>,
        link: Option<AccountLink>,
    ) -> Result<(), StoreError> {
        let name = name.clone();
        let target = name.to_string();
        let audited = link.clone();
        self.write_audited(
            ctx,
            move |tx| {
                let exists: Option<i64> = tx
                    .conn
                    .query_row("SELECT 1 FROM account WHERE name = ?1", [name.as_str()], |r| r.get(0))
                    .optional()?;
                if exists.is_some() {
                    return Err(StoreError::PreconditionFailed(format!("account '{name}' already exists")));
                }
                match &link {
                    Some(AccountLink::Patient(p)) => crate::patients::check_live(tx.conn, "Patient", p)?,
                    Some(AccountLink::Practitioner(p)) => crate::patients::check_live(tx.conn, "Practitioner", p)?,
                    None => {}
                }
                tx.conn.execute(
                    "INSERT INTO account (name, role, created_us, setup_secret_hash) VALUES (?1, ?2, ?3, ?4)",
                    params![name.as_str(), role.as_str(), tx.now_us, setup_secret_hash.as_ref().map(|h| &h[..])],
                )?;
                match &link {
                    Some(AccountLink::Patient(p)) => {
                        tx.conn.execute(
                            "INSERT INTO patient_account (account, patient) VALUES (?1, ?2)",
                            params![name.as_str(), p],
                        )?;
                    }
                    Some(AccountLink::Practitioner(p)) => crate::oidc::set_practitioner(tx.conn, name.as_str(), p)?,
                    None => {}
                }
                Ok(())
            },
            |_| true,
            move |r| {
                let mut ev =
                    AuditEvent::new(Action::AccountCreate, r.as_ref().map(|_| 201).unwrap_or_else(|e| e.status()))
                        .with_target("account", Some(target))
                        .with_detail(format!("role={}", role.as_str()));
                match audited {
                    Some(AccountLink::Patient(p)) => ev.patients = vec![p],
                    Some(AccountLink::Practitioner(p)) => {
                        ev.detail = Some(format!("role={}; Practitioner/{p}", role.as_str()));
                    }
                    None => {}
                }
                vec![ev]
            },
        )
        .await
    }

    /// Issues an API token for an enabled account; returns the token (shown once) and its expiry.
    pub async fn create_token(
        &self,
        ctx: AccessContext,
        name: &AccountName,
        ttl: time::Duration,
    ) -> Result<(ApiToken, i64), StoreError> {
        if ttl <= time::Duration::ZERO {
            return Err(StoreError::invalid("invalid", "the token lifetime must be positive"));
        }
        let name = name.clone();
        let target = name.to_string();
        let expires_us = to_micros(self.inner.clock.now() + ttl);
        self.write_audited(
            ctx,
            move |tx| {
                let enabled: Option<(bool, String)> = tx
                    .conn
                    .query_row("SELECT disabled_us IS NULL, role FROM account WHERE name = ?1", [name.as_str()], |r| {
                        Ok((r.get(0)?, r.get(1)?))
                    })
                    .optional()?;
                match enabled {
                    None => return Err(StoreError::NotFound(format!("account '{name}'"))),
                    Some((false, _)) => return Err(StoreError::Forbidden),
                    // ACL-4: patients sign in at the patient interface; API tokens are for staff.
                    Some((_, role)) if role == Role::Patient.as_str() => {
                        return Err(StoreError::invalid(
                            "business-rule",
                            "API tokens are for staff accounts; patients sign in at the patient interface",
                        ));
                    }
                    Some((true, _)) => {}
                }
                let token = ApiToken::generate();
                tx.conn.execute(
                    "INSERT INTO api_token (hash, account, created_us, expires_us) VALUES (?1, ?2, ?3, ?4)",
                    params![&token.hash().0[..], name.as_str(), tx.now_us, expires_us],
                )?;
                Ok((token, expires_us))
            },
            |_| true,
            move |r| {
                vec![
                    AuditEvent::new(Action::TokenCreate, r.as_ref().map(|_| 201).unwrap_or_else(|e| e.status()))
                        .with_target("account", Some(target)),
                ]
            },
        )
        .await
    }

    /// Issues an API token of lifetime `ttl` (the policy's default when `None`, at most its
    /// maximum) for an enabled staff account; returns the token (shown once) and its expiry.
    /// Every outcome is audited (`token-create`).
    pub async fn issue_token(
        &self,
        ctx: AccessContext,
        name: &AccountName,
        ttl: Option<time::Duration>,
        policy: TokenPolicy,
    ) -> Result<(ApiToken, i64), StoreError> {
        let ttl = ttl.unwrap_or(policy.default_ttl);
        if ttl > policy.max_ttl || ttl <= time::Duration::ZERO {
            let e = StoreError::invalid(
                "invalid",
                format!("the token lifetime must be positive and at most tokens.max_ttl ({})", policy.max_ttl),
            );
            return self.refused(ctx, Action::TokenCreate, name.as_str(), e).await;
        }
        self.create_token(ctx, name, ttl).await
    }

    /// An account's API tokens (expired ones too, until revoked); audited (`token-list`).
    pub async fn list_tokens(&self, ctx: AccessContext, name: &AccountName) -> Result<Vec<TokenInfo>, StoreError> {
        let account = name.as_str().to_string();
        let now = to_micros(self.inner.clock.now());
        let result = self
            .inner
            .engine
            .read(move |c| {
                let exists: Option<i64> =
                    c.query_row("SELECT 1 FROM account WHERE name = ?1", [&account], |r| r.get(0)).optional()?;
                if exists.is_none() {
                    return Err(StoreError::NotFound(format!("account '{account}'")));
                }
                let mut stmt = c.prepare(
                    "SELECT hash, created_us, expires_us, last_used_us FROM api_token WHERE account = ?1 \
                     ORDER BY created_us, hash",
                )?;
                let rows = stmt
                    .query_map([&account], |r| {
                        let hash: Vec<u8> = r.get(0)?;
                        let expires_us: i64 = r.get(2)?;
                        Ok(TokenInfo {
                            id: hash.iter().take(8).map(|b| format!("{b:02x}")).collect(),
                            account: account.clone(),
                            created: fhir_instant(r.get(1)?),
                            expires: fhir_instant(expires_us),
                            expired: expires_us <= now,
                            last_used: r.get::<_, Option<i64>>(3)?.map(fhir_instant),
                        })
                    })?
                    .collect::<Result<Vec<_>, _>>()?;
                Ok(rows)
            })
            .await;
        let ev = AuditEvent::new(Action::TokenList, result.as_ref().map(|_| 200).unwrap_or_else(|e| e.status()))
            .with_target("account", Some(name.to_string()));
        self.audit(ctx, ev).await?;
        result
    }

    /// Revokes one API token of an account (by the id [`SqliteStore::list_tokens`] shows): it
    /// stops working at once. Audited (`token-revoke`), refusals too.
    pub async fn revoke_token(&self, ctx: AccessContext, name: &AccountName, id: &str) -> Result<(), StoreError> {
        let account = name.as_str().to_string();
        let target = account.clone();
        let shown = id.chars().take(16).collect::<String>();
        let prefix = token_id_bytes(id);
        self.write_audited(
            ctx,
            move |tx| {
                let prefix = prefix?;
                let exists: Option<i64> =
                    tx.conn.query_row("SELECT 1 FROM account WHERE name = ?1", [&account], |r| r.get(0)).optional()?;
                if exists.is_none() {
                    return Err(StoreError::NotFound(format!("account '{account}'")));
                }
                let n = tx.conn.execute(
                    "DELETE FROM api_token WHERE account = ?1 AND substr(hash, 1, 8) = ?2",
                    params![account, prefix],
                )?;
                if n == 0 {
                    return Err(StoreError::NotFound(format!("API token '{shown}' of account '{account}'")));
                }
                Ok(())
            },
            |_| true,
            move |r| {
                let ev = AuditEvent::new(Action::TokenRevoke, r.as_ref().map(|_| 200).unwrap_or_else(|e| e.status()))
                    .with_target("account", Some(target));
                vec![match r {
                    Ok(()) => ev,
                    Err(e) => ev.with_detail(crate::lifecycle::failure_detail(e)),
                }]
            },
        )
        .await
    }

    /// Every account (name, role, state); the listing itself is audited.
    pub async fn list_accounts(&self, ctx: AccessContext) -> Result<Vec<AccountInfo>, StoreError> {
        let result = self
            .inner
            .engine
            .read(|c| {
                let mut stmt =
                    c.prepare("SELECT name, role, created_us, disabled_us IS NOT NULL FROM account ORDER BY name")?;
                let rows = stmt
                    .query_map([], |r| {
                        Ok(AccountInfo { name: r.get(0)?, role: r.get(1)?, created_us: r.get(2)?, disabled: r.get(3)? })
                    })?
                    .collect::<Result<Vec<_>, _>>()?;
                Ok(rows)
            })
            .await;
        let status = result.as_ref().map(|_| 200).unwrap_or_else(|e| e.status());
        self.audit(ctx, AuditEvent::new(Action::AccountList, status)).await?;
        result
    }

    /// Records an operator action that has no data of its own (e.g. initialisation).
    pub async fn record_operator_action(&self, ctx: AccessContext, ev: AuditEvent) -> Result<(), StoreError> {
        self.audit(ctx, ev).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_and_token_ids_are_strict() {
        assert_eq!(parse_duration("8h").unwrap(), time::Duration::hours(8));
        assert_eq!(parse_duration("30d").unwrap(), time::Duration::days(30));
        for bad in ["", "8", "h", "-1h", "0m", "8w", "99999999999999999999d", "999999999999999d", "+5h"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
        assert_eq!(token_id_bytes("00ff10a0b0c0d0e0").unwrap(), vec![0, 0xff, 0x10, 0xa0, 0xb0, 0xc0, 0xd0, 0xe0]);
        for bad in
            ["", "00FF10A0B0C0D0E0", "00ff10a0b0c0d0e", "00ff10a0b0c0d0e0f", "zzff10a0b0c0d0e0", "é0ff10a0b0c0d0e"]
        {
            assert!(token_id_bytes(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn account_names_are_strict() {
        assert!(AccountName::parse("dr.sato").is_ok());
        assert!(AccountName::parse("admin-01").is_ok());
        for bad in ["", "Admin", "-x", "a b", "山田", &"x".repeat(65)] {
            assert!(AccountName::parse(bad).is_err(), "{bad}");
        }
    }
}
