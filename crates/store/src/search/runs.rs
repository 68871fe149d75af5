//! The token index as sorted runs (a log-structured merge tree inside one SQLite table).
//!
//! Tokens are uniformly random HMAC values, so one B-tree keyed by `(pid, token)` takes every
//! new row on a page of its own once it outgrows the cache: each commit wrote about one 4 KiB
//! page per index row, and ingest slowed as the index grew. Here every row carries the number
//! of the *run* it belongs to, and the key is `(run, pid, token, rid)`:
//!
//! - new rows go into the one **open** run, which stays small ([`IndexRuns::seal_rows`]), so a
//!   commit dirties at most the few hundred pages of that run;
//! - a full open run is **sealed** (a new open run starts; nothing is rewritten);
//! - when [`IndexRuns::fanout`] sealed runs of one level exist they are **merged** into one run
//!   of the next level, whose number is higher than every other, so the merge appends in key
//!   order (sequential pages). A merge runs in steps inside the writer's group commits, sized by
//!   the rows the group added ([`maintain`]); each step moves the smallest keys of the sources
//!   into the target in one transaction, so a reader always finds every row exactly once.
//!
//! Lookups ask every live run (`run IN (SELECT run FROM idx_token_run)`): a handful of index
//! seeks instead of one. The state of every run lives in `idx_token_run`, in the same
//! transactions as the rows, so a crash at any point leaves a consistent index.

use rusqlite::{Connection, OptionalExtension, params};

use crate::StoreError;

/// Shape of the run structure. The defaults suit the reference machine; tests use tiny values to
/// exercise sealing and merging.
#[derive(Clone, Copy, Debug)]
pub struct IndexRuns {
    /// Rows after which the open run is sealed.
    pub seal_rows: i64,
    /// Sealed runs of one level that are merged into one run of the next level.
    pub fanout: usize,
    /// Rows a merge step moves per row the group added (a merge must keep up with ingest: each
    /// row is moved once per level).
    pub merge_per_added: i64,
    /// Smallest merge step, so a merge also finishes when only few rows arrive.
    pub min_step: i64,
}

impl Default for IndexRuns {
    fn default() -> Self {
        IndexRuns { seal_rows: 50_000, fanout: 4, merge_per_added: 6, min_step: 2_000 }
    }
}

/// `idx_token_run.state` values.
const OPEN: i64 = 0;
const SEALED: i64 = 1;
const MERGING: i64 = 2;
const TARGET: i64 = 3;

/// The SQL condition every token lookup adds: rows of live runs only (all runs are live; the
/// condition lets SQLite seek `(run, pid, token)` once per run).
pub(crate) const LIVE_RUNS: &str = "run IN (SELECT run FROM idx_token_run)";

/// The open run, counting `added` more rows into it.
pub(crate) fn open_run(conn: &Connection, added: usize) -> Result<i64, StoreError> {
    Ok(conn
        .prepare_cached("UPDATE idx_token_run SET rows = rows + ?1 WHERE state = 0 RETURNING run")?
        .query_row([added as i64], |r| r.get(0))?)
}

/// Drops every run and starts an empty open run (index rebuild).
pub(crate) fn reset(conn: &Connection) -> Result<(), StoreError> {
    conn.execute_batch(
        "DELETE FROM idx_token; DELETE FROM idx_token_run; \
         INSERT INTO idx_token_run (run, level, state, rows) VALUES (1, 0, 0, 0);",
    )?;
    Ok(())
}

/// The writer's memory between group commits: how many rows the open run had at the last
/// maintenance, so a group's additions can be told.
#[derive(Debug, Default)]
pub(crate) struct Maintainer {
    seen: Option<(i64, i64)>,
}

impl Maintainer {
    /// Runs at the end of every group commit, in its transaction: seals a full open run, starts
    /// a merge when a level is full, and moves one step of a running merge.
    pub(crate) fn maintain(&mut self, conn: &Connection, cfg: &IndexRuns) -> Result<(), StoreError> {
        let (run, rows): (i64, i64) = conn
            .prepare_cached("SELECT run, rows FROM idx_token_run WHERE state = 0")?
            .query_row([], |r| Ok((r.get(0)?, r.get(1)?)))?;
        let added = match self.seen {
            Some((r, before)) if r == run => rows - before,
            _ => rows,
        };
        self.seen = Some((run, rows));
        if added <= 0 {
            return Ok(());
        }
        if rows >= cfg.seal_rows {
            seal(conn, cfg, run, rows)?;
            self.seen = None;
        }
        if !merging(conn)? {
            start_merge(conn, cfg)?;
        }
        if merging(conn)? {
            merge_step(conn, (added * cfg.merge_per_added).max(cfg.min_step))?;
        }
        Ok(())
    }
}

fn level_of(rows: i64, cfg: &IndexRuns) -> i64 {
    let (mut level, mut size) = (0, cfg.seal_rows.max(1) * cfg.fanout as i64);
    while rows >= size {
        level += 1;
        size = size.saturating_mul(cfg.fanout as i64);
    }
    level
}

fn next_run(conn: &Connection) -> Result<i64, StoreError> {
    Ok(conn.query_row("SELECT COALESCE(max(run), 0) + 1 FROM idx_token_run", [], |r| r.get(0))?)
}

fn seal(conn: &Connection, cfg: &IndexRuns, run: i64, rows: i64) -> Result<(), StoreError> {
    conn.execute(
        "UPDATE idx_token_run SET state = ?1, level = ?2 WHERE run = ?3",
        params![SEALED, level_of(rows, cfg), run],
    )?;
    let next = next_run(conn)?;
    conn.execute("INSERT INTO idx_token_run (run, level, state, rows) VALUES (?1, 0, ?2, 0)", params![next, OPEN])?;
    Ok(())
}

fn merging(conn: &Connection) -> Result<bool, StoreError> {
    Ok(conn
        .prepare_cached("SELECT 1 FROM idx_token_run WHERE state = ?1 LIMIT 1")?
        .query_row([TARGET], |_| Ok(()))
        .optional()?
        .is_some())
}

/// Marks the oldest `fanout` sealed runs of the lowest full level as sources of a new target.
fn start_merge(conn: &Connection, cfg: &IndexRuns) -> Result<(), StoreError> {
    let full: Option<i64> = conn
        .query_row(
            "SELECT level FROM idx_token_run WHERE state = ?1 GROUP BY level HAVING count(*) >= ?2 \
             ORDER BY level LIMIT 1",
            params![SEALED, cfg.fanout as i64],
            |r| r.get(0),
        )
        .optional()?;
    let Some(level) = full else { return Ok(()) };
    let sources: Vec<(i64, i64)> = conn
        .prepare("SELECT run, rows FROM idx_token_run WHERE state = ?1 AND level = ?2 ORDER BY run LIMIT ?3")?
        .query_map(params![SEALED, level, cfg.fanout as i64], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<Result<_, _>>()?;
    let rows: i64 = sources.iter().map(|s| s.1).sum();
    let target = next_run(conn)?;
    for (run, _) in &sources {
        conn.execute("UPDATE idx_token_run SET state = ?1 WHERE run = ?2", params![MERGING, run])?;
    }
    conn.execute(
        "INSERT INTO idx_token_run (run, level, state, rows) VALUES (?1, ?2, ?3, ?4)",
        params![target, level_of(rows, cfg).max(level + 1), TARGET, rows],
    )?;
    Ok(())
}

type Key = (i64, Vec<u8>, i64);

/// Moves the `budget` smallest keys of the merge's sources to its target (appending: the
/// target's rows are taken in key order and its number is the highest). A source left empty is
/// dropped; when all are, the target becomes a sealed run.
pub(crate) fn merge_step(conn: &Connection, budget: i64) -> Result<(), StoreError> {
    let target: i64 = conn.query_row("SELECT run FROM idx_token_run WHERE state = ?1", [TARGET], |r| r.get(0))?;
    let sources: Vec<i64> = conn
        .prepare_cached("SELECT run FROM idx_token_run WHERE state = ?1 ORDER BY run")?
        .query_map([MERGING], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    // The smallest `budget` keys of each source, then of all of them together.
    let mut batch: Vec<Key> = Vec::new();
    for run in &sources {
        let mut stmt = conn
            .prepare_cached("SELECT pid, token, rid FROM idx_token WHERE run = ?1 ORDER BY pid, token, rid LIMIT ?2")?;
        let rows = stmt.query_map(params![run, budget], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
        for row in rows {
            batch.push(row?);
        }
    }
    batch.sort_unstable();
    batch.truncate(budget.max(1) as usize);
    if let Some((pid, token, rid)) = batch.last().cloned() {
        {
            let mut insert =
                conn.prepare_cached("INSERT OR IGNORE INTO idx_token (run, pid, token, rid) VALUES (?1, ?2, ?3, ?4)")?;
            for (pid, token, rid) in &batch {
                insert.execute(params![target, pid, token, rid])?;
            }
        }
        // The moved rows are copies, not erasures: zeroing their old pages (secure_delete) would
        // only double the merge's writes.
        conn.execute_batch("PRAGMA secure_delete = OFF")?;
        let deleted = (|| {
            let mut delete =
                conn.prepare_cached("DELETE FROM idx_token WHERE run = ?1 AND (pid, token, rid) <= (?2, ?3, ?4)")?;
            for run in &sources {
                delete.execute(params![run, pid, &token, rid])?;
            }
            Ok::<(), StoreError>(())
        })();
        conn.execute_batch("PRAGMA secure_delete = ON")?;
        deleted?;
    }
    // Sources with nothing left are done.
    for run in &sources {
        let empty = conn
            .prepare_cached("SELECT 1 FROM idx_token WHERE run = ?1 LIMIT 1")?
            .query_row([run], |_| Ok(()))
            .optional()?
            .is_none();
        if empty {
            conn.execute("DELETE FROM idx_token_run WHERE run = ?1", [run])?;
        }
    }
    let left: i64 = conn.query_row("SELECT count(*) FROM idx_token_run WHERE state = ?1", [MERGING], |r| r.get(0))?;
    if left == 0 {
        conn.execute("UPDATE idx_token_run SET state = ?1 WHERE run = ?2", params![SEALED, target])?;
    }
    Ok(())
}
