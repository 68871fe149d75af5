//! The physical baseline: what plain SQLite does with the same resource JSON, no HTTP, no FHIR
//! processing, no encryption, no audit, no index. One table, WAL, `synchronous=FULL`, one
//! transaction per bundle (as mamori commits a bundle), point selects on one connection.

use std::borrow::Cow;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use rusqlite::{Connection, params};
use serde::Deserialize;
use serde_json::value::RawValue;

use crate::data::Bundle;
use crate::load::XorShift;

#[derive(Deserialize)]
struct RawBundle<'a> {
    #[serde(borrow)]
    entry: Vec<RawEntry<'a>>,
}

#[derive(Deserialize)]
struct RawEntry<'a> {
    #[serde(rename = "fullUrl", borrow)]
    full_url: Cow<'a, str>,
    #[serde(borrow)]
    resource: &'a RawValue,
}

pub struct Raw {
    pub rows: usize,
    pub insert_elapsed: Duration,
    pub selects: usize,
    pub select_elapsed: Duration,
}

/// Inserts every resource of `bundles` (one transaction per bundle), then runs random point
/// selects for `select_for`.
pub fn run(bundles: &[Bundle], tmp_parent: &Path, select_for: Duration) -> Result<Raw> {
    // Extracting the rows is preparation, not timed.
    let parsed: Vec<RawBundle<'_>> = bundles
        .iter()
        .map(|b| serde_json::from_slice(&b.body).context("bundle does not parse"))
        .collect::<Result<_>>()?;
    let ids: Vec<&str> = parsed
        .iter()
        .flat_map(|b| b.entry.iter())
        .map(|e| e.full_url.strip_prefix("urn:uuid:").unwrap_or(&e.full_url))
        .collect();
    anyhow::ensure!(!ids.is_empty(), "no resources to insert");

    let dir = tempfile::Builder::new()
        .prefix("mamori-bench-raw-")
        .tempdir_in(tmp_parent)
        .with_context(|| format!("cannot create a temporary directory in {}", tmp_parent.display()))?;
    let mut conn = Connection::open(dir.path().join("raw.db")).context("cannot open raw.db")?;
    conn.execute_batch(
        "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; \
         CREATE TABLE r (id TEXT PRIMARY KEY, body BLOB NOT NULL);",
    )?;

    let start = Instant::now();
    let mut rows = 0;
    for b in &parsed {
        let tx = conn.transaction()?;
        {
            let mut stmt = tx.prepare_cached("INSERT INTO r (id, body) VALUES (?1, ?2)")?;
            for e in &b.entry {
                let id = e.full_url.strip_prefix("urn:uuid:").unwrap_or(&e.full_url);
                stmt.execute(params![id, e.resource.get().as_bytes()])?;
                rows += 1;
            }
        }
        tx.commit()?;
    }
    let insert_elapsed = start.elapsed();

    let mut stmt = conn.prepare_cached("SELECT body FROM r WHERE id = ?1")?;
    let mut rng = XorShift::new(7);
    let mut selects = 0;
    let mut bytes = 0usize;
    let start = Instant::now();
    loop {
        for _ in 0..1024 {
            let id = ids[rng.below(ids.len())];
            let body: Vec<u8> = stmt.query_row([id], |r| r.get(0))?;
            bytes += body.len();
            selects += 1;
        }
        if start.elapsed() >= select_for {
            break;
        }
    }
    let select_elapsed = start.elapsed();
    drop(stmt);
    anyhow::ensure!(bytes > 0, "selects returned nothing");
    Ok(Raw { rows, insert_elapsed, selects, select_elapsed })
}
