//! SMART EHR launch (AUTH-6): a staff member's EHR asks for a launch context for one patient and
//! gets an opaque `launch` value (shown once, stored as SHA-256 only). It is single use,
//! short-lived, and bound to the person who asked, the app it is for and the Patient. The
//! authorisation page consumes it when it issues the code (same transaction), so the code, the
//! token family and every access token of that sign-in carry the Patient, and the request path
//! confines the token's rights to that Patient's compartment.
//!
//! The launch value says nothing by itself: whoever signs in on the page must be the person who
//! asked for it, and the client must be the one it names.

use mamori_access::secret::{IssuedSecret, SecretKind, presented};
use rusqlite::{OptionalExtension, params};
use zeroize::Zeroizing;

use crate::identity::Events;
use crate::model::{AccessContext, Action, AuditEvent};
use crate::writes::Tx;
use crate::{SqliteStore, StoreError, StoreFuture};

pub(crate) const MIGRATION: &str = r#"
-- EHR launch contexts (SMART `launch`, AUTH-6): SHA-256 of the launch value, the staff account
-- that asked for it, the app it is for and the Patient; single use, short-lived.
CREATE TABLE oauth_launch (
    hash       BLOB PRIMARY KEY,
    account    TEXT    NOT NULL,
    client_id  TEXT    NOT NULL,
    patient    TEXT    NOT NULL,
    expires_us INTEGER NOT NULL,
    used_us    INTEGER
) WITHOUT ROWID;
-- The launch Patient a code and its token family carry (NULL: no launch context), and the
-- OpenID Connect nonce of the authorisation request (echoed in the ID token).
ALTER TABLE oauth_code ADD COLUMN patient TEXT;
ALTER TABLE oauth_code ADD COLUMN nonce TEXT;
ALTER TABLE oauth_family ADD COLUMN patient TEXT;
"#;

/// How long a launch value may be used (from the EHR's request to the code being issued).
pub const LAUNCH_TTL_US: i64 = 5 * 60 * 1_000_000;

/// What an authorisation request adds to its code beyond [`crate::oauth::CodeGrant`]: the EHR
/// launch value (consumed when the code is issued) and the OpenID Connect nonce.
#[derive(Clone, Debug, Default)]
pub struct CodeContext {
    pub launch: Option<Zeroizing<String>>,
    pub nonce: Option<String>,
}

/// A launch context handed to the EHR (shown once).
pub struct Launch {
    pub launch: Zeroizing<String>,
    pub expires_in: i64,
}

/// The EHR launch operations.
pub trait Launches: Send + Sync {
    /// Creates a launch context for `patient` and the app `client_id`, bound to `account` (the
    /// staff member acting in `ctx`). The caller has already read the Patient through the store
    /// with the same rights (the policy lets them view it). Audited, naming the patient.
    fn create_launch(
        &self,
        ctx: AccessContext,
        account: String,
        client_id: String,
        patient: String,
    ) -> StoreFuture<'_, Launch>;
    /// Whether a launch value can still be used by `client_id` (known, unused, unexpired), to
    /// refuse a bad one before the sign-in page; not consumed, not audited (the caller audits a
    /// refusal).
    fn launch_usable(&self, launch: Zeroizing<String>, client_id: String) -> StoreFuture<'_, bool>;
}

/// Consumes a launch value for the code being issued to `account` through `client_id`: returns
/// the Patient, or the reason (for the audit trail) it cannot be used.
pub(crate) fn consume(
    tx: &Tx<'_>,
    launch: &str,
    client_id: &str,
    account: &str,
) -> Result<Result<String, &'static str>, StoreError> {
    let Some(hash) = presented(SecretKind::OAuthLaunch, launch) else { return Ok(Err("launch: malformed")) };
    let row: Option<(String, String, String, i64, Option<i64>)> = tx
        .conn
        .prepare_cached("SELECT account, client_id, patient, expires_us, used_us FROM oauth_launch WHERE hash = ?1")?
        .query_row([&hash.0[..]], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)))
        .optional()?;
    let Some((owner, client, patient, expires, used)) = row else { return Ok(Err("launch: unknown")) };
    if used.is_some() {
        return Ok(Err("launch: already used"));
    }
    if tx.now_us >= expires {
        return Ok(Err("launch: expired"));
    }
    if client != client_id {
        return Ok(Err("launch: issued for another app"));
    }
    // Spent from here on, whoever signed in (a launch meant for someone else is not retried).
    tx.conn.execute("UPDATE oauth_launch SET used_us = ?1 WHERE hash = ?2", params![tx.now_us, &hash.0[..]])?;
    if owner != account {
        return Ok(Err("launch: issued to another account"));
    }
    Ok(Ok(patient))
}

/// The launch Patient for a code being issued, consuming its launch value if it has one; a
/// refusal is recorded in `ev` and answered as invalid input.
pub(crate) fn patient_for_code(
    tx: &Tx<'_>,
    ev: &mut Events,
    ctx: &AccessContext,
    context: &CodeContext,
    client_id: &str,
    account: &str,
) -> Result<Result<Option<String>, StoreError>, StoreError> {
    let Some(launch) = &context.launch else { return Ok(Ok(None)) };
    match consume(tx, launch, client_id, account)? {
        Ok(patient) => Ok(Ok(Some(patient))),
        Err(reason) => {
            ev.push(ctx, AuditEvent::new(Action::OAuthFailure, 400).with_detail(format!("authorize: {reason}")));
            Ok(Err(StoreError::invalid(
                "invalid",
                "the launch context is unknown, expired, already used, or was issued to another person or app",
            )))
        }
    }
}

impl Launches for SqliteStore {
    fn create_launch(
        &self,
        ctx: AccessContext,
        account: String,
        client_id: String,
        patient: String,
    ) -> StoreFuture<'_, Launch> {
        Box::pin(self.identity_job(move |tx, ev| {
            let now = tx.now_us;
            let client = crate::oauth::load_client(tx.conn, &client_id)?;
            let ctx = AccessContext { client: Some(client_id.clone()), ..ctx };
            let is_app = client.as_ref().is_some_and(|c| matches!(c.kind, crate::oauth::ClientKind::Public { .. }));
            let launchable = client.as_ref().is_some_and(|c| c.scope.launch);
            let mut event = AuditEvent::new(Action::OAuthLaunch, 201)
                .with_target("oauth-client", Some(client_id.clone()))
                .with_detail("EHR launch context issued");
            event.patients = vec![patient.clone()];
            if !is_app || !launchable {
                let why = if is_app {
                    "this app is not registered for EHR launch (scope 'launch')"
                } else {
                    "no app (SMART client with redirect URIs) is registered under this client_id"
                };
                event.outcome = 400;
                event.detail = Some(format!("refused: {why}"));
                ev.push(&ctx, event);
                return Ok(Err(StoreError::invalid("invalid", why)));
            }
            tx.conn.execute("DELETE FROM oauth_launch WHERE expires_us <= ?1", [now])?;
            let secret = IssuedSecret::generate(SecretKind::OAuthLaunch);
            tx.conn.execute(
                "INSERT INTO oauth_launch (hash, account, client_id, patient, expires_us, used_us) \
                 VALUES (?1, ?2, ?3, ?4, ?5, NULL)",
                params![&secret.hash().0[..], account, client_id, patient, now + LAUNCH_TTL_US],
            )?;
            ev.push(&ctx, event);
            Ok(Ok(Launch { launch: Zeroizing::new(secret.text().to_string()), expires_in: LAUNCH_TTL_US / 1_000_000 }))
        }))
    }

    fn launch_usable(&self, launch: Zeroizing<String>, client_id: String) -> StoreFuture<'_, bool> {
        Box::pin(async move {
            let now = self.now_us();
            let Some(hash) = presented(SecretKind::OAuthLaunch, &launch) else { return Ok(false) };
            self.inner.engine.read_now(move |c| {
                Ok(c.prepare_cached(
                    "SELECT 1 FROM oauth_launch WHERE hash = ?1 AND client_id = ?2 AND used_us IS NULL \
                     AND expires_us > ?3",
                )?
                .query_row(params![&hash.0[..], client_id, now], |_| Ok(()))
                .optional()?
                .is_some())
            })
        })
    }
}
