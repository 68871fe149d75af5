//! Reading the audit trail back for verification and export: needs only the database file (no
//! master key — audit rows hold no record content) and, to check signatures, the public key.

use std::path::Path;

use mamori_audit::AuditEntry;
use rusqlite::{Connection, OpenFlags, Row};

use crate::StoreError;

pub(crate) const ENTRY_COLUMNS: &str =
    "seq, recorded_us, request_id, actor, role, source, action, rtype, rid, version, patients, outcome, detail";

pub(crate) fn entry_from_row(r: &Row<'_>) -> rusqlite::Result<AuditEntry> {
    Ok(AuditEntry {
        seq: r.get::<_, i64>(0)? as u64,
        recorded_us: r.get(1)?,
        request_id: r.get(2)?,
        actor: r.get(3)?,
        role: r.get(4)?,
        source: r.get(5)?,
        action: r.get(6)?,
        rtype: r.get(7)?,
        rid: r.get(8)?,
        version: r.get::<_, Option<i64>>(9)?.map(|v| v as u64),
        patients: AuditEntry::patients_from_column(&r.get::<_, String>(10)?),
        outcome: r.get::<_, i64>(11)? as u16,
        detail: r.get(12)?,
    })
}

/// A read-only view of a database's audit trail.
pub struct AuditLogReader {
    conn: Connection,
}

impl AuditLogReader {
    pub fn open(db: &Path) -> Result<AuditLogReader, StoreError> {
        if !db.exists() {
            return Err(StoreError::Setup(format!("no database at {}", db.display())));
        }
        let conn = Connection::open_with_flags(db, OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX)?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        Ok(AuditLogReader { conn })
    }

    /// Streams every entry in storage (seq) order.
    pub fn for_each_entry(&self, mut f: impl FnMut(AuditEntry)) -> Result<u64, StoreError> {
        let mut stmt = self.conn.prepare(&format!("SELECT {ENTRY_COLUMNS} FROM audit_event ORDER BY seq"))?;
        let mut rows = stmt.query([])?;
        let mut n = 0;
        while let Some(row) = rows.next()? {
            f(entry_from_row(row)?);
            n += 1;
        }
        Ok(n)
    }

    /// The signed checkpoints stored in the database, smallest first.
    pub fn checkpoints(&self) -> Result<Vec<String>, StoreError> {
        let mut stmt = self.conn.prepare("SELECT note FROM audit_checkpoint ORDER BY size")?;
        let notes = stmt.query_map([], |r| r.get::<_, String>(0))?.collect::<Result<Vec<_>, _>>()?;
        Ok(notes)
    }
}
