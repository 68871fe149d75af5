//! The integrity check (REC-6): detects version rows altered, removed or re-pointed outside the
//! application. Every sealed body is authenticated against its row (AES-GCM with the row's
//! identity as associated data), version numbers must run 1..n without gaps, and the current
//! pointer must name the newest version.

use std::sync::Arc;

use rusqlite::Connection;

use crate::model::{AccessContext, Action, AuditEvent};
use crate::rows::{self, SealedRow, VERSION_COLUMNS};
use crate::sqlite::Inner;
use crate::{SqliteStore, StoreError};

#[derive(Clone, Debug, Default)]
pub struct IntegrityReport {
    pub versions_checked: u64,
    pub resources_checked: u64,
    /// One line per problem, naming the record; empty when everything checks out.
    pub problems: Vec<String>,
}

impl IntegrityReport {
    pub fn is_clean(&self) -> bool {
        self.problems.is_empty()
    }
}

impl SqliteStore {
    pub async fn check_integrity(&self, ctx: AccessContext) -> Result<IntegrityReport, StoreError> {
        let inner = Arc::clone(&self.inner);
        let report = self.inner.engine.read(move |c| check(c, &inner)).await?;
        let mut ev = AuditEvent::new(Action::IntegrityCheck, if report.is_clean() { 200 } else { 409 });
        ev.detail = Some(format!("{} versions, {} problems", report.versions_checked, report.problems.len()));
        self.audit(ctx, ev).await?;
        Ok(report)
    }
}

fn check(c: &Connection, inner: &Inner) -> Result<IntegrityReport, StoreError> {
    let mut report = IntegrityReport::default();
    // Newest version per resource as the version rows say, to compare with resource_current.
    let mut newest: std::collections::HashMap<(String, String), (i64, i64, bool)> = std::collections::HashMap::new();
    {
        let mut stmt =
            c.prepare(&format!("SELECT {VERSION_COLUMNS} FROM resource_version v ORDER BY v.rtype, v.id, v.version"))?;
        let mut rows_iter = stmt.query([])?;
        let mut expected_next: Option<((String, String), i64)> = None;
        while let Some(row) = rows_iter.next()? {
            let sealed = SealedRow::from_row(row)?;
            report.versions_checked += 1;
            let key = (sealed.rtype.clone(), sealed.id.clone());
            let want = match &expected_next {
                Some((k, n)) if *k == key => *n,
                _ => {
                    report.resources_checked += 1;
                    1
                }
            };
            if sealed.version != want {
                report.problems.push(format!(
                    "{}/{}: version {} follows version {} (versions missing or renumbered)",
                    sealed.rtype,
                    sealed.id,
                    sealed.version,
                    want - 1
                ));
            }
            expected_next = Some((key.clone(), sealed.version + 1));
            newest.insert(key, (sealed.version, sealed.seq, sealed.deleted));
            let what = format!("{}/{}/_history/{}", sealed.rtype, sealed.id, sealed.version);
            match rows::open_row(c, &inner.keys, inner.protect, &sealed) {
                Ok(_) => {}
                Err(StoreError::Tampered(_)) => {
                    report.problems.push(format!("{what}: body or row metadata was altered outside mamori"))
                }
                Err(e) => return Err(e),
            }
        }
    }
    let mut stmt = c.prepare("SELECT rtype, id, version, seq, deleted FROM resource_current")?;
    let mut current = stmt.query([])?;
    let mut seen = 0usize;
    while let Some(row) = current.next()? {
        seen += 1;
        let key: (String, String) = (row.get(0)?, row.get(1)?);
        let (version, seq, deleted): (i64, i64, bool) = (row.get(2)?, row.get(3)?, row.get(4)?);
        match newest.get(&key) {
            None => report.problems.push(format!("{}/{}: current pointer names no stored version", key.0, key.1)),
            Some(&(v, s, d)) if (v, s, d) != (version, seq, deleted) => report.problems.push(format!(
                "{}/{}: current pointer (version {version}, deleted {deleted}) does not match the newest \
                     stored version (version {v}, deleted {d})",
                key.0, key.1
            )),
            Some(_) => {}
        }
    }
    if seen != newest.len() {
        report
            .problems
            .push(format!("{} resources have versions but no current pointer", newest.len().saturating_sub(seen)));
    }
    Ok(report)
}
