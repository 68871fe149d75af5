//! Writing audit rows (AUD-1). Every store entry point ends here, on the writer thread: in the
//! same transaction as the data for writes, before the data is returned for reads.

use rusqlite::{Connection, params};

use crate::StoreError;
use crate::model::{AccessContext, AuditEvent};

/// The row's detail; break-glass requests are flagged with their reason (AUD-4 reviews them).
fn detail(ctx: &AccessContext, ev: &AuditEvent) -> Option<String> {
    let d = match (&ctx.emergency, &ev.detail) {
        (None, d) => d.clone(),
        (Some(reason), None) => Some(format!("emergency: {reason}")),
        (Some(reason), Some(d)) => Some(format!("{d}; emergency: {reason}")),
    };
    // AUTH-6: the OAuth client a request came through is named in every row.
    match (&ctx.client, d) {
        (None, d) => d,
        (Some(c), None) => Some(format!("client: {c}")),
        (Some(c), Some(d)) => Some(format!("{d}; client: {c}")),
    }
}

pub(crate) fn append(conn: &Connection, now_us: i64, ctx: &AccessContext, ev: &AuditEvent) -> Result<(), StoreError> {
    // ACL-4: a patient's own request is about that patient, whatever it touched or was refused.
    let with_subject;
    let ev = match ctx.rights.compartment() {
        Some(p) if !ev.patients.iter().any(|x| x == p) => {
            let mut e = ev.clone();
            e.patients.insert(0, p.to_string());
            with_subject = e;
            &with_subject
        }
        _ => ev,
    };
    let mut stmt = conn.prepare_cached(
        "INSERT INTO audit_event (recorded_us, request_id, actor, role, source, action, rtype, rid, version, \
         patients, outcome, detail) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
    )?;
    stmt.execute(params![
        now_us,
        ctx.request_id,
        ctx.actor_name(),
        ctx.role().map(|r| r.as_str()),
        ctx.source,
        ev.action.as_str(),
        ev.rtype,
        ev.rid,
        ev.version.map(|v| v as i64),
        ev.patients.join(","),
        i64::from(ev.outcome),
        detail(ctx, ev),
    ])
    .map_err(|e| {
        tracing::error!(target: "security", error = %e, "audit append failed; refusing the request");
        StoreError::AuditUnavailable
    })?;
    // The per-patient index (AUD-4) is filled behind the trail: `index_patients`.
    Ok(())
}

/// Audit rows indexed per patient in one step (bounds the writer's pause between commits).
pub(crate) const INDEX_STEP_ROWS: i64 = 4096;

/// Moves AUD-4's per-patient index (`audit_patient`) forward over the next audit rows after its
/// mark; returns how many rows it covered. The rows themselves — with their patient lists — were
/// written durably before; the `audit_patient_all` view reads rows past the mark directly, so a
/// review sees every row whether or not this has run. Called by the writer between its commits.
pub(crate) fn index_patients(conn: &Connection) -> Result<i64, StoreError> {
    let upto: i64 = conn.query_row("SELECT upto FROM main.audit_patient_mark", [], |r| r.get(0))?;
    let last: i64 = conn.query_row("SELECT COALESCE(max(seq), 0) FROM main.audit_event", [], |r| r.get(0))?;
    if last <= upto {
        return Ok(0);
    }
    let until = last.min(upto + INDEX_STEP_ROWS);
    // Its own durable commit, on purpose: it runs while the callers of the last group are busy
    // answering, so its sync overlaps their work. (Committed without a sync, its pages would be
    // flushed by the next request's audit commit, on that request's clock.)
    conn.execute_batch("BEGIN IMMEDIATE")?;
    let step = (|| -> Result<(), StoreError> {
        let mut rows = conn.prepare_cached(
            "SELECT seq, patients FROM main.audit_event WHERE seq > ?1 AND seq <= ?2 AND patients <> ''",
        )?;
        let mut idx = conn.prepare_cached("INSERT OR IGNORE INTO main.audit_patient (patient, seq) VALUES (?1, ?2)")?;
        let listed = rows
            .query_map(params![upto, until], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?)))?
            .collect::<Result<Vec<_>, _>>()?;
        for (seq, patients) in listed {
            for p in patients.split(',') {
                idx.execute(params![p, seq])?;
            }
        }
        conn.prepare_cached("UPDATE main.audit_patient_mark SET upto = ?1")?.execute([until])?;
        Ok(())
    })();
    if step.is_ok() {
        conn.execute_batch("COMMIT")?;
    } else {
        conn.execute_batch("ROLLBACK")?;
    }
    step?;
    Ok(until - upto)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Action;

    fn patient_seqs(conn: &Connection, patient: &str) -> Vec<i64> {
        let mut stmt = conn.prepare("SELECT seq FROM audit_patient_all WHERE patient = ?1 ORDER BY seq").unwrap();
        stmt.query_map([patient], |r| r.get(0)).unwrap().collect::<Result<_, _>>().unwrap()
    }

    /// AUD-4: a review finds every row naming a patient exactly once, before the per-patient
    /// index has caught up, part-way, and after.
    #[test]
    fn aud4_patient_rows_are_found_once_before_and_after_indexing() {
        let conn = Connection::open_in_memory().unwrap();
        crate::schema::migrate(&conn, crate::schema::Db::Audit).unwrap();
        let ctx = AccessContext::operator("r", "ops");
        for patients in [vec!["p1", "p2"], vec![], vec!["p2"], vec!["p1", "p3"]] {
            let mut ev = AuditEvent::new(Action::Search, 200);
            ev.patients = patients.into_iter().map(String::from).collect();
            append(&conn, 1, &ctx, &ev).unwrap();
        }
        let expect = |conn: &Connection| {
            assert_eq!(patient_seqs(conn, "p1"), [1, 4]);
            assert_eq!(patient_seqs(conn, "p2"), [1, 3]);
            assert_eq!(patient_seqs(conn, "p3"), [4]);
            assert!(patient_seqs(conn, "p4").is_empty());
        };
        expect(&conn);
        // Part-way: the mark at 2 (rows 1–2 indexed, 3–4 read directly).
        conn.execute("UPDATE audit_patient_mark SET upto = 0", []).unwrap();
        conn.execute_batch("INSERT INTO audit_patient VALUES ('p1', 1), ('p2', 1)").unwrap();
        conn.execute("UPDATE audit_patient_mark SET upto = 2", []).unwrap();
        expect(&conn);
        assert_eq!(index_patients(&conn).unwrap(), 2);
        assert_eq!(index_patients(&conn).unwrap(), 0);
        expect(&conn);
        let indexed: i64 = conn.query_row("SELECT count(*) FROM audit_patient", [], |r| r.get(0)).unwrap();
        assert_eq!(indexed, 5);
    }
}
