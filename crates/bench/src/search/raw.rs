//! The physical baseline for search: the same rows in plain SQLite with the searched values in
//! clear and ordinary B-tree indexes, the same six lookups (same parameter draws, same page size
//! and totals) on one connection. No HTTP, no FHIR processing, no keyed tokens, no encryption,
//! no audit.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use rusqlite::{Connection, params};
use serde::Deserialize;
use serde_json::value::RawValue;

use super::queries::{KINDS, Kind, Params, Workload};
use crate::load::XorShift;
use crate::report::Latency;

const PAGE: i64 = 50;

#[derive(Deserialize)]
struct RawBundle<'a> {
    #[serde(borrow)]
    entry: Vec<RawEntry<'a>>,
}

#[derive(Deserialize)]
struct RawEntry<'a> {
    #[serde(borrow)]
    resource: &'a RawValue,
}

pub struct RawSearch {
    pub rows: usize,
    pub insert_elapsed: Duration,
    pub disk_bytes: u64,
    pub results: Vec<(Kind, usize, Duration, Latency)>,
}

impl RawSearch {
    pub fn per_sec(&self, kind: Kind) -> Option<f64> {
        self.results.iter().find(|r| r.0 == kind).map(|r| r.1 as f64 / r.2.as_secs_f64())
    }

    pub fn latency(&self, kind: Kind) -> Option<&Latency> {
        self.results.iter().find(|r| r.0 == kind).map(|r| &r.3)
    }
}

pub fn run(w: &Workload, tmp_parent: &Path, per_query: Duration) -> Result<RawSearch> {
    let data = &w.data;
    let parsed: Vec<RawBundle<'_>> = data
        .bundles
        .iter()
        .map(|b| serde_json::from_slice(&b.body).context("bundle does not parse"))
        .collect::<Result<_>>()?;
    let bodies: Vec<&[u8]> = parsed.iter().flat_map(|b| b.entry.iter()).map(|e| e.resource.get().as_bytes()).collect();

    let dir = tempfile::Builder::new().prefix("mamori-bench-rawsearch-").tempdir_in(tmp_parent)?;
    let mut conn = Connection::open(dir.path().join("raw.db"))?;
    conn.execute_batch(
        "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL;
         CREATE TABLE patient (id TEXT PRIMARY KEY, family TEXT NOT NULL, mrn TEXT NOT NULL, body BLOB NOT NULL);
         CREATE INDEX patient_family ON patient (family);
         CREATE INDEX patient_mrn ON patient (mrn);
         CREATE TABLE res (id INTEGER PRIMARY KEY, type TEXT NOT NULL, patient TEXT NOT NULL, code TEXT,
                           at INTEGER, body BLOB NOT NULL);
         CREATE INDEX res_code ON res (patient, type, code);
         CREATE INDEX res_at ON res (patient, type, at);
         CREATE INDEX res_day ON res (type, at);",
    )?;
    let start = Instant::now();
    let mut rows = 0;
    for chunk in data.patients.chunks(500).zip(0..) {
        let tx = conn.transaction()?;
        {
            let mut ins_p = tx.prepare_cached("INSERT INTO patient (id, family, mrn, body) VALUES (?1, ?2, ?3, ?4)")?;
            let mut ins_r =
                tx.prepare_cached("INSERT INTO res (type, patient, code, at, body) VALUES (?1, ?2, ?3, ?4, ?5)")?;
            for (k, p) in chunk.0.iter().enumerate() {
                let idx = chunk.1 * 500 + k;
                let id = &w.ids[idx];
                let mut e = p.first_entry;
                ins_p.execute(params![id, p.family.to_lowercase(), p.mrn, bodies[e]])?;
                e += 1;
                for at in &p.encounters {
                    ins_r.execute(params!["Encounter", id, None::<&str>, at, bodies[e]])?;
                    e += 1;
                }
                for (c, at) in &p.observations {
                    ins_r.execute(params!["Observation", id, data.codes[*c as usize], at, bodies[e]])?;
                    e += 1;
                }
                for _ in 0..p.conditions {
                    ins_r.execute(params!["Condition", id, None::<&str>, None::<i64>, bodies[e]])?;
                    e += 1;
                }
                rows += p.resources();
            }
        }
        tx.commit()?;
    }
    let insert_elapsed = start.elapsed();
    conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE); ANALYZE;")?;
    let disk_bytes = std::fs::read_dir(dir.path())?.filter_map(|e| e.ok()?.metadata().ok()).map(|m| m.len()).sum();

    // Every lookup is checked against the generated data once, then timed.
    let mut rng = XorShift::new(0xBA5E);
    for kind in KINDS {
        for _ in 0..20 {
            let q = w.draw(kind, &mut rng);
            let n = lookup(&conn, w, &q)?;
            ensure!(n == w.expected(&q), "raw {kind:?} {q:?}: {n} rows, expected {}", w.expected(&q));
        }
    }
    let mut results = Vec::new();
    for kind in KINDS {
        let mut lat = Vec::with_capacity(1 << 16);
        let start = Instant::now();
        while start.elapsed() < per_query {
            for _ in 0..64 {
                let q = w.draw(kind, &mut rng);
                let t0 = Instant::now();
                lookup(&conn, w, &q)?;
                lat.push(crate::load::micros(t0.elapsed()));
            }
        }
        let elapsed = start.elapsed();
        let latency = Latency::from_samples(vec![lat]);
        results.push((kind, latency.count, elapsed, latency));
    }
    drop(conn);
    dir.close()?;
    Ok(RawSearch { rows, insert_elapsed, disk_bytes, results })
}

/// Runs one lookup, reading the bodies of one page as the server does; returns the number of
/// matches (the server's `total`, or the `$everything` entries).
fn lookup(c: &Connection, w: &Workload, q: &Params) -> Result<u32> {
    let read_all = |sql: &str, p: &[&dyn rusqlite::ToSql]| -> Result<u32> {
        let mut s = c.prepare_cached(sql)?;
        let mut rows = s.query(p)?;
        let mut n = 0;
        while let Some(r) = rows.next()? {
            let b = r.get_ref(0)?.as_blob()?;
            std::hint::black_box(b);
            n += 1;
        }
        Ok(n)
    };
    let count = |sql: &str, p: &[&dyn rusqlite::ToSql]| -> Result<u32> {
        Ok(c.prepare_cached(sql)?.query_row(p, |r| r.get::<_, u32>(0))?)
    };
    Ok(match q {
        Params::Name(prefix) => {
            let mut hi = prefix.clone();
            let last = hi.pop().map_or('a', |ch| char::from_u32(ch as u32 + 1).unwrap_or(ch));
            hi.push(last);
            let total = count("SELECT count(*) FROM patient WHERE family >= ?1 AND family < ?2", &[prefix, &hi])?;
            read_all("SELECT body FROM patient WHERE family >= ?1 AND family < ?2 LIMIT ?3", &[prefix, &hi, &PAGE])?;
            total
        }
        Params::Identifier(p) => read_all("SELECT body FROM patient WHERE mrn = ?1", &[&w.data.patients[*p].mrn])?,
        Params::ObsCode(p, code) => read_all(
            "SELECT body FROM res WHERE patient = ?1 AND type = 'Observation' AND code = ?2",
            &[&w.ids[*p], &w.data.codes[*code as usize]],
        )?,
        Params::ObsDate(p, lo, hi) => read_all(
            "SELECT body FROM res WHERE patient = ?1 AND type = 'Observation' AND at >= ?2 AND at < ?3 ORDER BY at DESC",
            &[&w.ids[*p], lo, hi],
        )?,
        Params::EncounterDay(d) => {
            let end = d + 86_400;
            let total =
                count("SELECT count(*) FROM res WHERE type = 'Encounter' AND at >= ?1 AND at < ?2", &[d, &end])?;
            read_all(
                "SELECT e.body, p.body FROM res e JOIN patient p ON p.id = e.patient \
                 WHERE e.type = 'Encounter' AND e.at >= ?1 AND e.at < ?2 LIMIT ?3",
                &[d, &end, &PAGE],
            )?;
            total
        }
        Params::Everything(p) => {
            let id = &w.ids[*p];
            read_all("SELECT body FROM patient WHERE id = ?1", &[id])?
                + read_all("SELECT body FROM res WHERE patient = ?1", &[id])?
        }
    })
}
