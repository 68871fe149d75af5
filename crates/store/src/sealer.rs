//! The audit trail's sequencer and sealer (AUD-2).
//!
//! Runs on the writer thread after every commit: it hashes the audit rows committed since the
//! last run — read back from the database in seq order, so exactly what an auditor will read is
//! what gets hashed — into an RFC 6962 Merkle tree, and every `every_entries` rows or `interval`
//! (and at shutdown) signs a checkpoint. Each checkpoint goes into `audit_checkpoint` and is
//! appended, fsync'd, to the witness file outside the database.

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;

use mamori_audit::{AuditEntry, Checkpoint, SigningKey, TreeBuilder, sign};
use rusqlite::{Connection, OptionalExtension, params};

use crate::StoreError;
use crate::audit_log::{ENTRY_COLUMNS, entry_from_row};
use crate::clock::{Clock, to_micros};

/// How and where checkpoints are made.
pub struct SealingConfig {
    pub key: SigningKey,
    /// Append-only file receiving every checkpoint; `None` keeps them in the database only.
    pub witness: Option<PathBuf>,
    pub every_entries: u64,
    pub interval: time::Duration,
}

pub(crate) struct Sealer {
    cfg: SealingConfig,
    clock: Arc<dyn Clock>,
    tree: TreeBuilder,
    last_checkpoint_size: u64,
    last_checkpoint_us: i64,
}

impl Sealer {
    /// Rebuilds the tree from the stored trail and checks it against the newest checkpoint.
    pub(crate) fn open(conn: &Connection, cfg: SealingConfig, clock: Arc<dyn Clock>) -> Result<Sealer, StoreError> {
        let last: Option<(i64, String)> = conn
            .query_row("SELECT size, note FROM audit_checkpoint ORDER BY size DESC LIMIT 1", [], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .optional()?;
        let mut sealer =
            Sealer { cfg, clock, tree: TreeBuilder::new(), last_checkpoint_size: 0, last_checkpoint_us: 0 };
        let expected_root = match &last {
            Some((size, note)) => {
                sealer.last_checkpoint_size = *size as u64;
                let cp = mamori_audit::open(note, &sealer.cfg.key.verifier_key())
                    .map_err(|e| StoreError::Tampered(format!("stored audit checkpoint {size}: {e}")))?;
                Some(cp)
            }
            None => None,
        };
        let mut stmt = conn.prepare(&format!("SELECT {ENTRY_COLUMNS} FROM audit_event ORDER BY seq"))?;
        let mut rows = stmt.query([])?;
        let mut matched = expected_root.is_none();
        while let Some(row) = rows.next()? {
            let entry = entry_from_row(row)?;
            sealer.tree.push(entry.leaf_hash());
            if let Some(cp) = &expected_root
                && sealer.tree.size() == cp.size
            {
                matched = sealer.tree.root() == cp.root;
            }
        }
        if !matched {
            // Loud, not fatal: the record system stays up; `mamori audit verify` says what changed.
            tracing::error!(
                target: "security",
                "the stored audit trail no longer matches its last signed checkpoint; run `mamori audit verify`"
            );
        }
        sealer.last_checkpoint_us = to_micros(sealer.clock.now());
        Ok(sealer)
    }

    /// Hashes newly committed rows; checkpoints when due (or when `force`, at shutdown).
    pub(crate) fn after_commit(&mut self, conn: &Connection, force: bool) {
        if let Err(e) = self.run(conn, force) {
            tracing::error!(target: "security", error = %e, "audit sealing failed");
        }
    }

    fn run(&mut self, conn: &Connection, force: bool) -> Result<(), StoreError> {
        let mut stmt =
            conn.prepare_cached(&format!("SELECT {ENTRY_COLUMNS} FROM audit_event WHERE seq > ?1 ORDER BY seq"))?;
        let mut rows = stmt.query([self.tree.size() as i64])?;
        while let Some(row) = rows.next()? {
            let entry: AuditEntry = entry_from_row(row)?;
            self.tree.push(entry.leaf_hash());
        }
        let now = to_micros(self.clock.now());
        let pending = self.tree.size().saturating_sub(self.last_checkpoint_size);
        let due = pending >= self.cfg.every_entries
            || (pending > 0
                && (force || now - self.last_checkpoint_us >= self.cfg.interval.whole_microseconds() as i64));
        if due {
            self.checkpoint(conn, now)?;
        }
        Ok(())
    }

    fn checkpoint(&mut self, conn: &Connection, now: i64) -> Result<(), StoreError> {
        let cp = Checkpoint {
            origin: self.cfg.key.name().to_string(),
            size: self.tree.size(),
            root: self.tree.root(),
            extensions: Vec::new(),
        };
        let note = sign(&cp, &self.cfg.key).map_err(StoreError::internal)?;
        // Another mamori process (an operator command) may have sealed the same size already.
        conn.prepare_cached("INSERT OR IGNORE INTO audit_checkpoint (size, recorded_us, note) VALUES (?1, ?2, ?3)")?
            .execute(params![cp.size as i64, now, note])?;
        if let Some(path) = &self.cfg.witness {
            let mut f = std::fs::OpenOptions::new()
                .append(true)
                .create(true)
                .open(path)
                .map_err(|e| StoreError::Setup(format!("cannot open witness file {}: {e}", path.display())))?;
            f.write_all(note.as_bytes())
                .and_then(|()| f.sync_data())
                .map_err(|e| StoreError::Setup(format!("cannot append to witness file {}: {e}", path.display())))?;
        }
        self.last_checkpoint_size = cp.size;
        self.last_checkpoint_us = now;
        Ok(())
    }
}
