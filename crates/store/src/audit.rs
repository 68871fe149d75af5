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
