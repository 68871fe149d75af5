//! OpenID Connect (AUTH-6, SMART `openid fhirUser`): which FHIR resource an account stands for
//! (its `fhirUser`), and the ID token signing key, kept in the records database sealed with the
//! `credentials` data key (like TOTP secrets) and generated at the first start.
//!
//! A staff account is linked to its Practitioner by the operator (`mamori user add
//! --practitioner ID`, `mamori user practitioner NAME ID`); a patient account's resource is the
//! Patient it is linked to (ACL-4).

use mamori_access::oidc::IdTokenKey;
use rusqlite::{Connection, OptionalExtension, params};
use zeroize::Zeroizing;

use crate::accounts::AccountName;
use crate::model::{AccessContext, Action, AuditEvent};
use crate::{SqliteStore, StoreError, StoreFuture};

pub(crate) const MIGRATION: &str = r#"
-- A staff account's Practitioner resource (by logical id): the ID token's fhirUser.
CREATE TABLE account_practitioner (
    account      TEXT PRIMARY KEY REFERENCES account(name),
    practitioner TEXT NOT NULL
) WITHOUT ROWID;
-- Server private keys kept in the database, sealed with the 'credentials' data key, bound to
-- their name: the OpenID Connect ID token signing key ('oidc-signing', PKCS#8).
CREATE TABLE server_key (
    name       TEXT PRIMARY KEY,
    key_id     INTEGER NOT NULL,
    sealed     BLOB    NOT NULL,
    created_us INTEGER NOT NULL
) WITHOUT ROWID;
"#;

/// The name of the ID token signing key in `server_key`.
const ID_TOKEN_KEY: &str = "oidc-signing";

fn key_aad(name: &str) -> Vec<u8> {
    format!("mamori/server-key/{name}").into_bytes()
}

/// Links (or re-links) an account to its Practitioner.
pub(crate) fn set_practitioner(conn: &Connection, account: &str, practitioner: &str) -> Result<(), StoreError> {
    conn.execute(
        "INSERT INTO account_practitioner (account, practitioner) VALUES (?1, ?2) \
         ON CONFLICT (account) DO UPDATE SET practitioner = excluded.practitioner",
        params![account, practitioner],
    )?;
    Ok(())
}

/// The account → FHIR resource link: set by the operator or an administrator, resolved by the
/// token endpoint as `fhirUser`.
pub trait OpenId: Send + Sync {
    /// The FHIR resource an enabled account stands for, as a relative reference
    /// (`Practitioner/…` for staff, `Patient/…` for patient accounts), if it is linked.
    fn fhir_user_of(&self, account: String) -> StoreFuture<'_, Option<String>>;
    /// Links (or re-links) a staff account to its Practitioner, which must exist; audited.
    fn link_practitioner(&self, ctx: AccessContext, account: AccountName, practitioner: String) -> StoreFuture<'_, ()>;
}

impl OpenId for SqliteStore {
    fn fhir_user_of(&self, account: String) -> StoreFuture<'_, Option<String>> {
        Box::pin(async move {
            self.inner.engine.read_now(move |c| {
                Ok(c.prepare_cached(
                    "SELECT 'Practitioner/' || l.practitioner FROM account_practitioner l \
                     JOIN account a ON a.name = l.account \
                     WHERE l.account = ?1 AND a.role <> 'patient' AND a.disabled_us IS NULL \
                     UNION ALL SELECT 'Patient/' || p.patient FROM patient_account p \
                     JOIN account a ON a.name = p.account \
                     WHERE p.account = ?1 AND a.role = 'patient' AND a.disabled_us IS NULL",
                )?
                .query_row(params![account], |r| r.get(0))
                .optional()?)
            })
        })
    }

    fn link_practitioner(&self, ctx: AccessContext, name: AccountName, practitioner: String) -> StoreFuture<'_, ()> {
        let target = name.to_string();
        let detail = format!("Practitioner/{}", crate::query::clip(&practitioner));
        Box::pin(self.write_audited(
            ctx,
            move |tx| {
                let role: Option<String> = tx
                    .conn
                    .query_row("SELECT role FROM account WHERE name = ?1", [name.as_str()], |r| r.get(0))
                    .optional()?;
                match role.as_deref() {
                    None => return Err(StoreError::NotFound(format!("account '{name}'"))),
                    Some("patient") => {
                        return Err(StoreError::invalid(
                            "business-rule",
                            "a patient account stands for its Patient; only staff accounts link to a Practitioner",
                        ));
                    }
                    Some(_) => {}
                }
                crate::patients::check_live(tx.conn, "Practitioner", &practitioner)?;
                set_practitioner(tx.conn, name.as_str(), &practitioner)
            },
            |_| true,
            move |r| {
                let status = r.as_ref().map(|_| 200).unwrap_or_else(|e| e.status());
                vec![
                    AuditEvent::new(Action::PractitionerLink, status)
                        .with_target("account", Some(target))
                        .with_detail(detail),
                ]
            },
        ))
    }
}

impl SqliteStore {
    /// The ID token signing key: generated and stored sealed at the first call (audited),
    /// unsealed at every later one.
    pub async fn id_token_key(&self, ctx: AccessContext) -> Result<IdTokenKey, StoreError> {
        let pkcs8 = self
            .identity_job(move |tx, ev| {
                let row: Option<(i64, Vec<u8>)> = tx
                    .conn
                    .query_row("SELECT key_id, sealed FROM server_key WHERE name = ?1", [ID_TOKEN_KEY], |r| {
                        Ok((r.get(0)?, r.get(1)?))
                    })
                    .optional()?;
                if let Some((key_id, sealed)) = row {
                    let key = tx.keys.by_id(tx.conn, key_id)?;
                    let plain = key
                        .open(&sealed, &key_aad(ID_TOKEN_KEY))
                        .ok_or_else(|| StoreError::Tampered("the ID token signing key".into()))?;
                    return Ok(Ok(Zeroizing::new(plain)));
                }
                let pkcs8 = IdTokenKey::generate_pkcs8().map_err(StoreError::internal)?;
                let (key_id, key) = tx.keys.for_scope(tx.conn, "credentials")?;
                let sealed = key.seal(&pkcs8, &key_aad(ID_TOKEN_KEY))?;
                tx.conn.execute(
                    "INSERT INTO server_key (name, key_id, sealed, created_us) VALUES (?1, ?2, ?3, ?4)",
                    params![ID_TOKEN_KEY, key_id, sealed, tx.now_us],
                )?;
                ev.push(
                    &ctx,
                    AuditEvent::new(Action::ServerKeyCreate, 201)
                        .with_detail("OpenID Connect ID token signing key (ES256)"),
                );
                Ok(Ok(pkcs8))
            })
            .await?;
        IdTokenKey::from_pkcs8(&pkcs8).map_err(|e| StoreError::Tampered(e.to_string()))
    }
}
