//! Patient accounts (ACL-4): an account of the job type `patient`, linked to one Patient
//! resource. It signs in at the patient interface only, with the same password, two-factor and
//! lifecycle rules as every account (the identity tables are shared; only the link is new).

use rusqlite::{Connection, OptionalExtension, params};

use crate::accounts::AccountName;
use crate::model::AccessContext;
use crate::{SqliteStore, StoreError, StoreFuture};

pub(crate) const MIGRATION: &str = r#"
-- Patient accounts (ACL-4): each is linked to exactly one Patient resource, by logical id.
CREATE TABLE patient_account (
    account TEXT PRIMARY KEY REFERENCES account(name),
    patient TEXT NOT NULL
) WITHOUT ROWID;
CREATE INDEX patient_account_by_patient ON patient_account (patient);
-- The interface a login session was issued for (ACL-4): 'staff' or 'patient'.
ALTER TABLE login_session ADD COLUMN audience TEXT NOT NULL DEFAULT 'staff';
"#;

/// The link from patient accounts to their Patient, as the patient interface resolves it.
pub trait PatientAccounts: Send + Sync {
    /// The Patient id a (patient) account is linked to.
    fn patient_of(&self, account: String) -> StoreFuture<'_, Option<String>>;
}

/// The Patient (or a staff account's Practitioner) must exist, and not be deleted, when an
/// account is linked to it.
pub(crate) fn check_live(conn: &Connection, rtype: &str, id: &str) -> Result<(), StoreError> {
    mamori_fhir::id::Id::parse(id)?;
    let live: Option<bool> = conn
        .query_row("SELECT deleted = 0 FROM resource_current WHERE rtype = ?1 AND id = ?2", [rtype, id], |r| r.get(0))
        .optional()?;
    match live {
        Some(true) => Ok(()),
        _ => Err(StoreError::NotFound(format!("{rtype}/{id}"))),
    }
}

impl SqliteStore {
    /// Creates a patient account linked to the Patient `patient` (audited; the trail names the
    /// patient). Its password, second factor and lifecycle are those of every account.
    pub async fn create_patient_account(
        &self,
        ctx: AccessContext,
        name: &AccountName,
        patient: &str,
    ) -> Result<(), StoreError> {
        let link = Some(crate::accounts::AccountLink::Patient(patient.to_string()));
        self.insert_account(ctx, name, mamori_access::Role::Patient, None, link).await
    }
}

impl PatientAccounts for SqliteStore {
    fn patient_of(&self, account: String) -> StoreFuture<'_, Option<String>> {
        Box::pin(async move {
            self.inner.engine.read_now(move |c| {
                Ok(c.prepare_cached(
                    "SELECT p.patient FROM patient_account p JOIN account a ON a.name = p.account \
                     WHERE p.account = ?1 AND a.role = 'patient' AND a.disabled_us IS NULL",
                )?
                .query_row(params![account], |r| r.get(0))
                .optional()?)
            })
        })
    }
}
