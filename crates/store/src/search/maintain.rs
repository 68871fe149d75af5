//! Keeping the index in step with current versions: each write replaces the entries of the one
//! resource it touches, in the writer's transaction; a store opened with an index built by an
//! older extraction rebuilds it once.

use rusqlite::{Connection, OptionalExtension, params};
use serde_json::Value;

use super::INDEX_VERSION;
use super::extract::{Entry, entries};
use crate::StoreError;
use crate::keyring::KeyRing;
use crate::keys::IndexKey;
use crate::rows::{self, Protection};

const INDEX_TABLES: &[&str] = &["idx_token", "idx_ref", "idx_date", "idx_number", "idx_present", "idx_compartment"];

/// The resource whose index entries are replaced: its previous indexed body, if any.
pub(crate) enum Previous<'a> {
    /// Just created (its rid is the seq of the version being written): nothing to remove.
    Fresh,
    /// Had a current version before this write; `Some` its body if that was not deleted.
    Existing(Option<&'a Value>),
}

/// Replaces the index entries of resource `rid` with those of `body` (None: deleted).
///
/// Token rows are found for removal by extracting `previous` again (the index holds no by-rid
/// copy of them: that second B-tree was half the cost of every token row); the other tables
/// remove by rid.
pub(crate) fn reindex(
    conn: &Connection,
    key: &IndexKey,
    rtype: &str,
    rid: i64,
    previous: Previous<'_>,
    body: Option<&Value>,
    patients: &[String],
) -> Result<(), StoreError> {
    if let Previous::Existing(old) = previous {
        for table in INDEX_TABLES.iter().filter(|t| **t != "idx_token") {
            conn.prepare_cached(&format!("DELETE FROM {table} WHERE rid = ?1"))?.execute([rid])?;
        }
        if let Some(old) = old {
            let mut delete = conn.prepare_cached(&format!(
                "DELETE FROM idx_token WHERE {} AND pid = ?1 AND token = ?2 AND rid = ?3",
                super::runs::LIVE_RUNS
            ))?;
            for (pid, token) in token_rows(&entries(key, rtype, old)) {
                delete.execute(params![pid, &token[..], rid])?;
            }
        }
    }
    let Some(body) = body else { return Ok(()) };
    let mut all = entries(key, rtype, body);
    all.dedup();
    let tokens = token_rows(&all);
    if !tokens.is_empty() {
        let run = super::runs::open_run(conn, tokens.len())?;
        let mut insert = conn.prepare_cached("INSERT INTO idx_token (run, pid, token, rid) VALUES (?1, ?2, ?3, ?4)")?;
        for (pid, token) in tokens {
            insert.execute(params![run, pid, &token[..], rid])?;
        }
    }
    for e in all {
        match e {
            Entry::Token(..) => 0,
            Entry::Ref { pid, target_type, target_id, url } => conn
                .prepare_cached(
                    "INSERT INTO idx_ref (pid, target_type, target_id, url, rid) VALUES (?1, ?2, ?3, ?4, ?5)",
                )?
                .execute(params![pid, target_type, target_id, url, rid])?,
            Entry::Date { pid, lo, hi } => conn
                .prepare_cached("INSERT INTO idx_date (pid, lo, hi, rid) VALUES (?1, ?2, ?3, ?4)")?
                .execute(params![pid, lo, hi, rid])?,
            Entry::Number { pid, value, system, code } => conn
                .prepare_cached("INSERT INTO idx_number (pid, value, system, code, rid) VALUES (?1, ?2, ?3, ?4, ?5)")?
                .execute(params![pid, value, system, code, rid])?,
            Entry::Present(pid) => conn
                .prepare_cached("INSERT OR IGNORE INTO idx_present (pid, rid) VALUES (?1, ?2)")?
                .execute(params![pid, rid])?,
        };
    }
    for p in patients {
        conn.prepare_cached("INSERT OR IGNORE INTO idx_compartment (patient, rid) VALUES (?1, ?2)")?
            .execute(params![p, rid])?;
    }
    Ok(())
}

/// A resource's token rows in key order, without repeats (a coding's display and its concept's
/// text are often the same words).
fn token_rows(all: &[Entry]) -> Vec<(i64, [u8; 16])> {
    let mut tokens: Vec<(i64, [u8; 16])> = all
        .iter()
        .filter_map(|e| match e {
            Entry::Token(pid, token) => Some((*pid, *token)),
            _ => None,
        })
        .collect();
    tokens.sort_unstable();
    tokens.dedup();
    tokens
}

/// Rebuilds the whole index when it was built by another extraction version. Runs at open,
/// before the store serves requests, in one transaction.
pub(crate) fn rebuild_if_stale(
    conn: &Connection,
    keys: &KeyRing,
    index: &IndexKey,
    protect: Protection,
) -> Result<(), StoreError> {
    let built: Option<i64> =
        conn.query_row("SELECT value FROM meta WHERE key = 'index_version'", [], |r| r.get(0)).optional()?;
    if built == Some(INDEX_VERSION) {
        return Ok(());
    }
    conn.execute_batch("BEGIN IMMEDIATE")?;
    let result = (|| {
        for table in INDEX_TABLES {
            conn.execute(&format!("DELETE FROM {table}"), [])?;
        }
        super::runs::reset(conn)?;
        let current: Vec<(String, String, i64)> = conn
            .prepare("SELECT rtype, id, first_seq FROM resource_current WHERE deleted = 0")?
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
            .collect::<Result<_, _>>()?;
        let mut count = 0usize;
        for (rtype, id, rid) in current {
            let Ok(rt) = rtype.parse() else { continue };
            let Some(rec) = rows::load_current(conn, keys, protect, rt, &id)? else { continue };
            let Some(bytes) = &rec.body else { continue };
            let body: Value = serde_json::from_slice(bytes).map_err(StoreError::internal)?;
            reindex(conn, index, &rtype, rid, Previous::Fresh, Some(&body), &rec.patients)?;
            crate::flags::update(conn, &rtype, &id, Some(&body))?;
            count += 1;
        }
        conn.execute(
            "INSERT INTO meta (key, value) VALUES ('index_version', ?1) \
             ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            [INDEX_VERSION],
        )?;
        tracing::info!(resources = count, version = INDEX_VERSION, "search index rebuilt");
        Ok::<(), StoreError>(())
    })();
    match result {
        Ok(()) => conn.execute_batch("COMMIT")?,
        Err(e) => {
            let _ = conn.execute_batch("ROLLBACK");
            return Err(e);
        }
    }
    Ok(())
}
