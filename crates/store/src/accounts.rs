//! Accounts and API tokens: operator actions, each audited.

use std::fmt;

use mamori_access::{ApiToken, Role};
use rusqlite::{OptionalExtension, params};

use crate::clock::to_micros;
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

impl SqliteStore {
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
    fn account_names_are_strict() {
        assert!(AccountName::parse("dr.sato").is_ok());
        assert!(AccountName::parse("admin-01").is_ok());
        for bad in ["", "Admin", "-x", "a b", "山田", &"x".repeat(65)] {
            assert!(AccountName::parse(bad).is_err(), "{bad}");
        }
    }
}
