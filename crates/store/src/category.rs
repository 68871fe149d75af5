//! Information categories of stored versions (ACL-2, ACL-3) and the one filter every read path
//! applies: a version is invisible when it, or the current version of its resource, carries a
//! category the request may not view.
//!
//! Categories are computed at write time from the policy's rules and kept per version in
//! `resource_category(category, seq)`. A deletion keeps the categories of the version it ends, so
//! a deleted psychiatric record stays hidden in history. When the rules change (their fingerprint
//! in `meta`), every version's categories are recomputed at open.

use std::collections::HashMap;

use mamori_access::Policy;
use rusqlite::types::Value as Sql;
use rusqlite::{Connection, OptionalExtension, params};
use serde_json::Value;

use crate::StoreError;
use crate::keyring::KeyRing;
use crate::rows::{self, Protection, SealedRow, VERSION_COLUMNS};

/// What a request may not see: resources in its hidden categories (ACL-2, ACL-3), for a
/// patient's own request everything outside their Patient compartment (ACL-4), and under SMART
/// scopes resources of types the scopes do not let it read or search (AUTH-6). Built once per
/// request from its [`mamori_access::Rights`]; every read path and every write guard takes one.
#[derive(Clone, Debug, Default)]
pub(crate) struct Visibility {
    /// Categories the request may not view.
    pub hidden: Vec<String>,
    /// The Patient whose compartment the request is confined to.
    pub compartment: Option<String>,
    /// The resource types the request may view; `None`: every type.
    pub types: Option<Vec<String>>,
}

impl Visibility {
    pub(crate) fn of(rights: &mamori_access::Rights) -> Visibility {
        Visibility {
            hidden: rights.hidden_names(),
            compartment: rights.compartment().map(str::to_string),
            types: rights.viewable_types(),
        }
    }

    /// Whether nothing is hidden from the request: no category, compartment or type limit.
    pub(crate) fn sees_all(&self) -> bool {
        self.hidden.is_empty() && self.compartment.is_none() && self.types.is_none()
    }

    /// Whether resources of `rtype` are invisible to the request whatever their category.
    pub(crate) fn hides_type(&self, rtype: &str) -> bool {
        self.types.as_ref().is_some_and(|t| !t.iter().any(|v| v == rtype))
    }

    /// Whether a resource whose version names the patients `patients` (the version's
    /// comma-separated compartment list) is outside the confining compartment.
    pub(crate) fn outside(&self, patients: &str) -> bool {
        self.compartment.as_deref().is_some_and(|p| !patients.split(',').any(|x| x == p))
    }
}

/// The category names of one resource body.
pub(crate) fn of_body(policy: &Policy, rtype: &str, body: &Value) -> Vec<String> {
    policy.categorise(rtype, body).iter().map(|i| policy.category_name(i).to_string()).collect()
}

pub(crate) fn of_seq(conn: &Connection, seq: i64) -> Result<Vec<String>, StoreError> {
    let mut stmt = conn.prepare_cached("SELECT category FROM resource_category WHERE seq = ?1 ORDER BY category")?;
    let rows = stmt.query_map([seq], |r| r.get(0))?;
    Ok(rows.collect::<Result<_, _>>()?)
}

pub(crate) fn store(conn: &Connection, seq: i64, names: &[String]) -> Result<(), StoreError> {
    for n in names {
        conn.prepare_cached("INSERT OR IGNORE INTO resource_category (category, seq) VALUES (?1, ?2)")?
            .execute(params![n, seq])?;
    }
    Ok(())
}

/// Whether the comma-separated category list `stored` names one of `hidden`.
pub(crate) fn names_hidden(stored: &str, hidden: &[String]) -> bool {
    !hidden.is_empty() && stored.split(',').any(|c| hidden.iter().any(|h| h == c))
}

/// The seq of the current version of a resource.
pub(crate) fn current_seq(conn: &Connection, rtype: &str, id: &str) -> Result<Option<i64>, StoreError> {
    Ok(conn
        .prepare_cached("SELECT seq FROM resource_current WHERE rtype = ?1 AND id = ?2")?
        .query_row(params![rtype, id], |r| r.get(0))
        .optional()?)
}

/// SQL keeping only viewable types (by the type column `col`); empty when every type is.
pub(crate) fn type_filter(col: &str, vis: &Visibility, args: &mut Vec<Sql>) -> String {
    match &vis.types {
        None => String::new(),
        Some(t) if t.is_empty() => " AND 0".to_string(),
        // Unary + keeps the planner from choosing the type index for this test.
        Some(t) => format!(" AND +{col} IN {}", list(t, args)),
    }
}

/// `(?, ?, …)` with the hidden names as arguments.
fn list(hidden: &[String], args: &mut Vec<Sql>) -> String {
    let mut s = String::from("(");
    for (i, h) in hidden.iter().enumerate() {
        if i > 0 {
            s.push_str(", ");
        }
        s.push('?');
        args.push(Sql::Text(h.clone()));
    }
    s.push(')');
    s
}

/// SQL excluding versions (by the seq column `col`) that carry a hidden category: empty when
/// nothing is hidden (the common case costs nothing).
pub(crate) fn seq_filter(col: &str, hidden: &[String], args: &mut Vec<Sql>) -> String {
    if hidden.is_empty() {
        return String::new();
    }
    format!(" AND {col} NOT IN (SELECT seq FROM resource_category WHERE category IN {})", list(hidden, args))
}

/// SQL excluding current resources (`resource_current` columns prefixed `p`, e.g. `c.`) the
/// request may not see: a hidden category, or outside the confining compartment.
pub(crate) fn current_filter(p: &str, vis: &Visibility, args: &mut Vec<Sql>) -> String {
    let mut s = type_filter(&format!("{p}rtype"), vis, args);
    s.push_str(&seq_filter(&format!("{p}seq"), &vis.hidden, args));
    if let Some(patient) = &vis.compartment {
        s.push_str(&format!(" AND {p}first_seq IN (SELECT rid FROM idx_compartment WHERE patient = ?)"));
        args.push(Sql::Text(patient.clone()));
    }
    s
}

/// `instr(',' || <col> || ',', ',<patient>,') > 0`: the version list `col` names the patient.
fn names_patient(col: &str, patient: &str, args: &mut Vec<Sql>) -> String {
    args.push(Sql::Text(format!(",{patient},")));
    format!("instr(',' || {col} || ',', ?) > 0")
}

/// SQL excluding history rows (alias `v`) whose version or whose resource's current version
/// carries a hidden category or lies outside the confining compartment.
pub(crate) fn history_filter(vis: &Visibility, args: &mut Vec<Sql>) -> String {
    let mut s = type_filter("v.rtype", vis, args);
    if !vis.hidden.is_empty() {
        s.push_str(&seq_filter("v.seq", &vis.hidden, args));
        s.push_str(&format!(
            " AND NOT EXISTS (SELECT 1 FROM resource_current hc JOIN resource_category hk ON hk.seq = hc.seq \
             WHERE hc.rtype = v.rtype AND hc.id = v.id AND hk.category IN {})",
            list(&vis.hidden, args)
        ));
    }
    if let Some(patient) = &vis.compartment {
        // The version itself, and what the resource is now, must both be in the compartment (a
        // resource moved to another patient takes its history with it).
        s.push_str(" AND ");
        s.push_str(&names_patient("v.patients", patient, args));
        s.push_str(
            " AND EXISTS (SELECT 1 FROM resource_current hc JOIN resource_version hv ON hv.seq = hc.seq \
             WHERE hc.rtype = v.rtype AND hc.id = v.id AND ",
        );
        s.push_str(&names_patient("hv.patients", patient, args));
        s.push(')');
    }
    s
}

/// Whether a resource (its current version), or one version of it, is invisible to the request:
/// a hidden category, or (confined to a compartment) a version outside it. A resource that does
/// not exist is not "invisible" (the caller answers not-found, or creates it).
pub(crate) fn is_invisible(
    conn: &Connection,
    vis: &Visibility,
    rtype: &str,
    id: &str,
    version: Option<u64>,
) -> Result<bool, StoreError> {
    if vis.hides_type(rtype) || is_hidden(conn, &vis.hidden, rtype, id, version)? {
        return Ok(true);
    }
    if vis.compartment.is_none() {
        return Ok(false);
    }
    let mut stmt = conn.prepare_cached(
        "SELECT v.patients FROM resource_version v WHERE v.seq IN \
         (SELECT seq FROM resource_current WHERE rtype = ?1 AND id = ?2 \
          UNION ALL SELECT seq FROM resource_version WHERE rtype = ?1 AND id = ?2 AND version = ?3)",
    )?;
    let rows =
        stmt.query_map(params![rtype, id, version.map(|v| v as i64).unwrap_or(-1)], |r| r.get::<_, String>(0))?;
    for patients in rows {
        if vis.outside(&patients?) {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Whether a new version naming `patients` may be written by the request: confined requests
/// write only into their own compartment (ACL-4).
pub(crate) fn writes_outside(vis: &Visibility, patients: &[String]) -> bool {
    vis.compartment.as_deref().is_some_and(|p| !patients.iter().any(|x| x == p))
}

/// Whether a resource (its current version), or one version of it, is hidden from the request.
pub(crate) fn is_hidden(
    conn: &Connection,
    hidden: &[String],
    rtype: &str,
    id: &str,
    version: Option<u64>,
) -> Result<bool, StoreError> {
    if hidden.is_empty() {
        return Ok(false);
    }
    let mut args: Vec<Sql> =
        vec![Sql::Text(rtype.into()), Sql::Text(id.into()), Sql::Integer(version.map(|v| v as i64).unwrap_or(-1))];
    let sql = format!(
        "SELECT EXISTS (SELECT 1 FROM resource_category WHERE category IN {} AND seq IN \
         (SELECT seq FROM resource_current WHERE rtype = ?1 AND id = ?2 \
          UNION ALL SELECT seq FROM resource_version WHERE rtype = ?1 AND id = ?2 AND version = ?3))",
        {
            // Numbered placeholders follow the three above.
            let mut s = String::from("(");
            for (i, h) in hidden.iter().enumerate() {
                if i > 0 {
                    s.push_str(", ");
                }
                s.push_str(&format!("?{}", i + 4));
                args.push(Sql::Text(h.clone()));
            }
            s.push(')');
            s
        }
    );
    Ok(conn.prepare_cached(&sql)?.query_row(rusqlite::params_from_iter(args), |r| r.get(0))?)
}

/// Recomputes every version's categories when the rules changed since they were stored. Runs at
/// open, before the store serves requests, in one transaction.
pub(crate) fn rebuild_if_stale(
    conn: &Connection,
    keys: &KeyRing,
    protect: Protection,
    policy: &Policy,
) -> Result<(), StoreError> {
    let want = policy.category_fingerprint();
    let built: Option<String> =
        conn.query_row("SELECT value FROM meta WHERE key = 'category_rules'", [], |r| r.get(0)).optional()?;
    if built.as_deref() == Some(want.as_str()) {
        return Ok(());
    }
    conn.execute_batch("BEGIN IMMEDIATE")?;
    let result = (|| {
        conn.execute("DELETE FROM resource_category", [])?;
        let mut last: HashMap<(String, String), Vec<String>> = HashMap::new();
        let mut stmt = conn.prepare(&format!("SELECT {VERSION_COLUMNS} FROM resource_version v ORDER BY v.seq"))?;
        let sealed = stmt.query_map([], SealedRow::from_row)?;
        let mut count = 0usize;
        for row in sealed {
            let row = row?;
            let seq = row.seq;
            let rec = rows::open_row(conn, keys, protect, &row)?;
            let key = (rec.rtype.as_str().to_string(), rec.id.clone());
            let names = match &rec.body {
                Some(bytes) => {
                    let body: Value = serde_json::from_slice(bytes).map_err(StoreError::internal)?;
                    of_body(policy, rec.rtype.as_str(), &body)
                }
                None => last.get(&key).cloned().unwrap_or_default(),
            };
            store(conn, seq, &names)?;
            last.insert(key, names);
            count += 1;
        }
        conn.execute(
            "UPDATE resource_current SET categories = coalesce((SELECT group_concat(category, ',') \
             FROM resource_category k WHERE k.seq = resource_current.seq), '')",
            [],
        )?;
        conn.execute(
            "INSERT INTO meta (key, value) VALUES ('category_rules', ?1) \
             ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            [&want],
        )?;
        tracing::info!(versions = count, "information categories recomputed");
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
