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
        crate::audit_index::attach_for_review(&conn, db)?;
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

    /// Streams every entry in storage order as fields borrowed from the row (no allocation per
    /// entry): what `mamori audit verify --data-dir` hashes.
    pub fn for_each_entry_ref(&self, mut f: impl FnMut(&mamori_audit::EntryRef<'_>)) -> Result<u64, StoreError> {
        use rusqlite::types::ValueRef;
        let mut stmt = self.conn.prepare(&format!("SELECT {ENTRY_COLUMNS} FROM audit_event ORDER BY seq"))?;
        let mut rows = stmt.query([])?;
        let mut n = 0;
        while let Some(r) = rows.next()? {
            let text = |i: usize| -> rusqlite::Result<&str> { Ok(r.get_ref(i)?.as_str()?) };
            let opt = |i: usize| -> rusqlite::Result<Option<&str>> {
                match r.get_ref(i)? {
                    ValueRef::Null => Ok(None),
                    v => Ok(Some(v.as_str()?)),
                }
            };
            let entry = mamori_audit::EntryRef {
                seq: r.get::<_, i64>(0)? as u64,
                recorded_us: r.get(1)?,
                request_id: text(2)?,
                actor: opt(3)?,
                role: opt(4)?,
                source: text(5)?,
                action: text(6)?,
                rtype: opt(7)?,
                rid: opt(8)?,
                version: r.get::<_, Option<i64>>(9)?.map(|v| v as u64),
                patients: mamori_audit::Patients::Column(text(10)?),
                outcome: r.get::<_, i64>(11)? as u16,
                detail: opt(12)?,
            };
            f(&entry);
            n += 1;
        }
        Ok(n)
    }

    /// Up to `limit` committed entries with `seq > after`, in seq order (the syslog forwarder's
    /// read of the trail, which is its own durable spool).
    pub fn entries_after(&self, after: u64, limit: usize) -> Result<Vec<AuditEntry>, StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached(&format!("SELECT {ENTRY_COLUMNS} FROM audit_event WHERE seq > ?1 ORDER BY seq LIMIT ?2"))?;
        let after = i64::try_from(after).unwrap_or(i64::MAX);
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = stmt.query_map(rusqlite::params![after, limit], entry_from_row)?;
        Ok(rows.collect::<Result<Vec<_>, _>>()?)
    }

    /// Up to `limit` signed checkpoints (size, note) covering more than `after` entries,
    /// smallest first (for the HTTP witness).
    pub fn checkpoints_after(&self, after: u64, limit: usize) -> Result<Vec<(u64, String)>, StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT size, note FROM audit_checkpoint WHERE size > ?1 ORDER BY size LIMIT ?2")?;
        let after = i64::try_from(after).unwrap_or(i64::MAX);
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows =
            stmt.query_map(rusqlite::params![after, limit], |r| Ok((r.get::<_, i64>(0)?.max(0) as u64, r.get(1)?)))?;
        Ok(rows.collect::<Result<Vec<_>, _>>()?)
    }

    /// The size of the largest stored checkpoint (0 if none).
    pub fn last_checkpoint_size(&self) -> Result<u64, StoreError> {
        let n: i64 = self.conn.query_row("SELECT COALESCE(max(size), 0) FROM audit_checkpoint", [], |r| r.get(0))?;
        Ok(n.max(0) as u64)
    }

    /// The highest committed `seq` (0 for an empty trail).
    pub fn last_seq(&self) -> Result<u64, StoreError> {
        let n: i64 = self.conn.query_row("SELECT COALESCE(max(seq), 0) FROM audit_event", [], |r| r.get(0))?;
        Ok(n.max(0) as u64)
    }

    /// How far the trail reaches and how much of it signed checkpoints cover (for /admin/status).
    pub fn coverage(&self) -> Result<serde_json::Value, StoreError> {
        let entries: i64 = self.conn.query_row("SELECT COALESCE(max(seq), 0) FROM audit_event", [], |r| r.get(0))?;
        let (covered, at): (i64, Option<i64>) =
            self.conn.query_row("SELECT COALESCE(max(size), 0), max(recorded_us) FROM audit_checkpoint", [], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })?;
        Ok(serde_json::json!({
            "entries": entries,
            "covered_by_checkpoints": covered,
            "last_checkpoint": at.map(crate::clock::fhir_instant),
        }))
    }

    /// The signed checkpoints stored in the database, smallest first.
    pub fn checkpoints(&self) -> Result<Vec<String>, StoreError> {
        let mut stmt = self.conn.prepare("SELECT note FROM audit_checkpoint ORDER BY size")?;
        let notes = stmt.query_map([], |r| r.get::<_, String>(0))?.collect::<Result<Vec<_>, _>>()?;
        Ok(notes)
    }
}

/// A time window for the review views, in µs since 1970, inclusive.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Period {
    pub from_us: i64,
    pub to_us: i64,
}

impl Period {
    pub const ALL: Period = Period { from_us: i64::MIN, to_us: i64::MAX };
}

/// How often one patient's data was accessed in a period, and by whom (AUD-4).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct PatientAccesses {
    pub patient: String,
    pub accesses: u64,
    /// (account, accesses), most first; `null` account = failed authentication.
    pub by_account: Vec<(Option<String>, u64)>,
}

/// An account that touched unusually many distinct patients within one clock hour (UTC).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct ManyPatientsInAnHour {
    pub account: Option<String>,
    pub hour_start_us: i64,
    pub distinct_patients: u64,
}

/// One review view (AUD-4).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReviewQuery {
    /// Every entry of one account, in time order.
    Account { account: String, period: Period },
    /// Every entry that disclosed or changed one patient's data.
    Patient { patient: String, period: Period },
    /// Per-patient access counts, with the accounts that accessed each.
    PatientCounts { period: Period },
    /// Accounts that touched more than `limit` distinct patients within one clock hour.
    ManyPatients { period: Period, limit: u64 },
    /// Accesses to patients' data outside working hours, in local time.
    OutsideHours { period: Period, hours: WorkingHours },
    /// The read-only FHIR `AuditEvent` view (AUD-5).
    FhirAuditEvents(AuditEventFilter),
    /// Every access to a patient flagged VIP or staff (AUD-4), with the flags. The store fills
    /// `flagged` from the records before the view runs.
    Flagged { period: Period, flagged: Vec<(String, String)> },
    /// Every break-glass (purpose `emergency`) entry, with its stated reason (AUD-4).
    Emergency { period: Period },
}

/// Working hours in local time: `[start, end)` minutes after midnight, and the UTC offset.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WorkingHours {
    pub start_min: u32,
    pub end_min: u32,
    pub utc_offset_min: i32,
}

impl WorkingHours {
    /// Parses `"07:00-20:00"` and `"+09:00"`.
    pub fn parse(hours: &str, utc_offset: &str) -> Result<WorkingHours, StoreError> {
        let bad = || StoreError::invalid("invalid", "working hours look like 07:00-20:00 and offsets like +09:00");
        let hm = |t: &str| -> Result<u32, StoreError> {
            let (h, m) = t.trim().split_once(':').ok_or_else(bad)?;
            let (h, m): (u32, u32) = (h.parse().map_err(|_| bad())?, m.parse().map_err(|_| bad())?);
            if h > 24 || m > 59 || h * 60 + m > 1440 { Err(bad()) } else { Ok(h * 60 + m) }
        };
        let (a, b) = hours.split_once('-').ok_or_else(bad)?;
        let (start_min, end_min) = (hm(a)?, hm(b)?);
        if start_min >= end_min {
            return Err(bad());
        }
        let (sign, rest) = match utc_offset.trim().split_at_checked(1) {
            Some(("+", r)) | Some((" ", r)) => (1, r),
            Some(("-", r)) => (-1, r),
            _ => return Err(bad()),
        };
        let utc_offset_min = sign * hm(rest)? as i32;
        Ok(WorkingHours { start_min, end_min, utc_offset_min })
    }
}

impl ReviewQuery {
    pub fn kind(&self) -> &'static str {
        match self {
            ReviewQuery::Account { .. } => "account",
            ReviewQuery::Patient { .. } => "patient",
            ReviewQuery::PatientCounts { .. } => "patient-counts",
            ReviewQuery::ManyPatients { .. } => "many-patients-per-hour",
            ReviewQuery::OutsideHours { .. } => "outside-hours",
            ReviewQuery::FhirAuditEvents(_) => "fhir-auditevent",
            ReviewQuery::Flagged { .. } => "flagged-patients",
            ReviewQuery::Emergency { .. } => "emergency",
        }
    }

    /// Runs the view on a read-only connection to the audit database, as JSON.
    pub fn run(&self, reader: &AuditLogReader) -> Result<serde_json::Value, StoreError> {
        use serde_json::{Value, json};
        let entries = |v: Vec<AuditEntry>| Value::Array(v.iter().map(entry_json).collect());
        Ok(match self {
            ReviewQuery::Account { account, period } => {
                json!({"entries": entries(reader.account_entries(account, *period)?)})
            }
            ReviewQuery::Patient { patient, period } => {
                json!({"entries": entries(reader.patient_entries(patient, *period)?)})
            }
            ReviewQuery::PatientCounts { period } => json!({"patients": reader.patient_counts(*period)?}),
            ReviewQuery::ManyPatients { period, limit } => {
                json!({"flags": reader.many_patients_per_hour(*period, *limit)?})
            }
            ReviewQuery::OutsideHours { period, hours } => {
                json!({"entries": entries(reader.outside_hours(*period, *hours)?)})
            }
            ReviewQuery::Emergency { period } => json!({"entries": entries(reader.emergency_entries(*period)?)}),
            ReviewQuery::Flagged { period, flagged } => {
                let hits = reader.flagged_entries(*period, flagged)?;
                let mut by_account: std::collections::BTreeMap<String, u64> = std::collections::BTreeMap::new();
                for (e, _) in &hits {
                    *by_account.entry(e.actor.clone().unwrap_or_default()).or_default() += 1;
                }
                let rows: Vec<Value> = hits
                    .iter()
                    .map(|(e, flags)| {
                        let mut v = entry_json(e);
                        v["flagged"] = flags.iter().map(|(p, f)| json!({"patient": p, "flag": f})).collect();
                        v
                    })
                    .collect();
                json!({"entries": rows, "by_account": by_account})
            }
            ReviewQuery::FhirAuditEvents(filter) => {
                let found = reader.search(filter)?;
                json!({
                    "resources": found.iter().map(audit_event_resource).collect::<Vec<_>>(),
                    "next_after": if found.len() >= filter.limit { found.last().map(|e| e.seq) } else { None },
                })
            }
        })
    }
}

/// An audit entry as JSON (review views, exports).
pub fn entry_json(e: &AuditEntry) -> serde_json::Value {
    serde_json::json!({
        "seq": e.seq, "recorded_us": e.recorded_us, "recorded": crate::clock::fhir_instant(e.recorded_us),
        "request_id": e.request_id, "actor": e.actor, "role": e.role, "source": e.source, "action": e.action,
        "rtype": e.rtype, "rid": e.rid, "version": e.version, "patients": e.patients, "outcome": e.outcome,
        "detail": e.detail,
    })
}

impl AuditLogReader {
    /// Every break-glass entry in the period (the request path writes `emergency: <reason>` into
    /// the detail of every row of an emergency request), in seq order.
    pub fn emergency_entries(&self, period: Period) -> Result<Vec<AuditEntry>, StoreError> {
        let mut stmt = self.conn.prepare_cached(&format!(
            "SELECT {ENTRY_COLUMNS} FROM audit_event WHERE recorded_us BETWEEN ?1 AND ?2 \
             AND (detail LIKE 'emergency: %' OR detail LIKE '%; emergency: %') ORDER BY seq"
        ))?;
        let rows = stmt.query_map(rusqlite::params![period.from_us, period.to_us], entry_from_row)?;
        Ok(rows.collect::<Result<Vec<_>, _>>()?)
    }

    /// Every entry in the period that names one of `flagged` (patient id, flag), in seq order,
    /// with the flagged patients it named.
    #[allow(clippy::type_complexity)]
    pub fn flagged_entries(
        &self,
        period: Period,
        flagged: &[(String, String)],
    ) -> Result<Vec<(AuditEntry, Vec<(String, String)>)>, StoreError> {
        let mut hits: std::collections::BTreeMap<u64, (AuditEntry, Vec<(String, String)>)> =
            std::collections::BTreeMap::new();
        for (patient, flag) in flagged {
            for e in self.patient_entries(patient, period)? {
                hits.entry(e.seq).or_insert_with(|| (e, Vec::new())).1.push((patient.clone(), flag.clone()));
            }
        }
        Ok(hits.into_values().collect())
    }

    /// Every entry of one account in the period, in time order (the maintenance-vendor view).
    pub fn account_entries(&self, account: &str, period: Period) -> Result<Vec<AuditEntry>, StoreError> {
        let mut stmt = self.conn.prepare_cached(&format!(
            "SELECT {ENTRY_COLUMNS} FROM audit_event WHERE actor = ?1 AND recorded_us BETWEEN ?2 AND ?3 ORDER BY seq"
        ))?;
        let rows = stmt.query_map(rusqlite::params![account, period.from_us, period.to_us], entry_from_row)?;
        Ok(rows.collect::<Result<Vec<_>, _>>()?)
    }

    /// Every entry that disclosed or changed data of one patient ("who looked at me").
    pub fn patient_entries(&self, patient: &str, period: Period) -> Result<Vec<AuditEntry>, StoreError> {
        let mut stmt = self.conn.prepare_cached(&format!(
            "SELECT {ENTRY_COLUMNS} FROM audit_event WHERE seq IN (SELECT seq FROM audit_patient_all WHERE patient = ?1) \
             AND recorded_us BETWEEN ?2 AND ?3 ORDER BY seq"
        ))?;
        let rows = stmt.query_map(rusqlite::params![patient, period.from_us, period.to_us], entry_from_row)?;
        // The index is derived; keep only rows whose hashed patient list really names the patient.
        Ok(rows
            .collect::<Result<Vec<_>, _>>()?
            .into_iter()
            .filter(|e| e.patients.iter().any(|p| p == patient))
            .collect())
    }

    /// Per-patient access counts over the period, most accessed first.
    pub fn patient_counts(&self, period: Period) -> Result<Vec<PatientAccesses>, StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT p.patient, e.actor, count(*) FROM audit_patient_all p JOIN audit_event e ON e.seq = p.seq \
             WHERE e.recorded_us BETWEEN ?1 AND ?2 GROUP BY p.patient, e.actor",
        )?;
        let rows = stmt
            .query_map(rusqlite::params![period.from_us, period.to_us], |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, Option<String>>(1)?, r.get::<_, i64>(2)? as u64))
            })?
            .collect::<Result<Vec<_>, _>>()?;
        let mut by_patient: std::collections::BTreeMap<String, Vec<(Option<String>, u64)>> = Default::default();
        for (patient, actor, n) in rows {
            by_patient.entry(patient).or_default().push((actor, n));
        }
        let mut out: Vec<PatientAccesses> = by_patient
            .into_iter()
            .map(|(patient, mut by_account)| {
                by_account.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
                PatientAccesses { accesses: by_account.iter().map(|(_, n)| n).sum(), patient, by_account }
            })
            .collect();
        out.sort_by(|a, b| b.accesses.cmp(&a.accesses).then_with(|| a.patient.cmp(&b.patient)));
        Ok(out)
    }

    /// Entries that touched patients' data outside working hours (local time).
    pub fn outside_hours(&self, period: Period, hours: WorkingHours) -> Result<Vec<AuditEntry>, StoreError> {
        let mut stmt = self.conn.prepare_cached(&format!(
            "SELECT {ENTRY_COLUMNS} FROM audit_event WHERE patients != '' AND recorded_us BETWEEN ?1 AND ?2 \
             AND (((recorded_us / 60000000 + ?3) % 1440 + 1440) % 1440 NOT BETWEEN ?4 AND ?5 - 1) ORDER BY seq"
        ))?;
        let rows = stmt.query_map(
            rusqlite::params![period.from_us, period.to_us, hours.utc_offset_min, hours.start_min, hours.end_min],
            entry_from_row,
        )?;
        Ok(rows.collect::<Result<Vec<_>, _>>()?)
    }

    /// Accounts that touched more than `limit` distinct patients within one clock hour.
    pub fn many_patients_per_hour(&self, period: Period, limit: u64) -> Result<Vec<ManyPatientsInAnHour>, StoreError> {
        const HOUR_US: i64 = 3_600_000_000;
        let mut stmt = self.conn.prepare_cached(
            "SELECT e.actor, (e.recorded_us / ?3) * ?3 AS hour, count(DISTINCT p.patient) AS n \
             FROM audit_patient_all p JOIN audit_event e ON e.seq = p.seq \
             WHERE e.recorded_us BETWEEN ?1 AND ?2 GROUP BY e.actor, hour HAVING n > ?4 ORDER BY hour, e.actor",
        )?;
        let rows = stmt.query_map(rusqlite::params![period.from_us, period.to_us, HOUR_US, limit as i64], |r| {
            Ok(ManyPatientsInAnHour {
                account: r.get(0)?,
                hour_start_us: r.get(1)?,
                distinct_patients: r.get::<_, i64>(2)? as u64,
            })
        })?;
        Ok(rows.collect::<Result<Vec<_>, _>>()?)
    }
}

/// Filters of the read-only FHIR `AuditEvent` view (AUD-5): `date`, `agent`, `patient`, `entity`,
/// `action`, `outcome`, with seq-based paging.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AuditEventFilter {
    pub from_us: Option<i64>,
    pub to_us: Option<i64>,
    pub agent: Option<String>,
    pub patient: Option<String>,
    /// `(type, id)` of the record concerned.
    pub entity: Option<(String, String)>,
    /// FHIR action codes C, R, U, D, E.
    pub action: Option<char>,
    /// FHIR outcome codes 0, 4, 8.
    pub outcome: Option<u8>,
    /// Only entries with a larger seq (paging cursor).
    pub after_seq: Option<u64>,
    pub seq: Option<u64>,
    pub limit: usize,
}

/// The FHIR `action` code of a trail action.
fn fhir_action(action: &str) -> char {
    match action {
        "create" | "account-create" | "token-create" | "initialise" => 'C',
        "read" | "vread" | "search-type" | "history-instance" | "history-type" | "history-system" | "capabilities"
        | "audit-review" | "account-list" | "token-list" | "status" | "integrity-check" => 'R',
        "update" | "patch" => 'U',
        "delete" => 'D',
        _ => 'E',
    }
}

fn fhir_outcome(status: u16) -> u8 {
    match status {
        0..=399 => 0,
        400..=499 => 4,
        _ => 8,
    }
}

impl AuditLogReader {
    /// Entries matching `f`, in seq order, at most `f.limit` of them.
    pub fn search(&self, f: &AuditEventFilter) -> Result<Vec<AuditEntry>, StoreError> {
        use rusqlite::types::Value as V;
        let mut sql = format!("SELECT {ENTRY_COLUMNS} FROM audit_event WHERE 1 = 1");
        let mut args: Vec<V> = Vec::new();
        let mut push = |clause: &str, vals: Vec<V>| {
            sql.push_str(clause);
            args.extend(vals);
        };
        if let Some(seq) = f.seq {
            push(" AND seq = ?", vec![V::Integer(seq as i64)]);
        }
        if let Some(after) = f.after_seq {
            push(" AND seq > ?", vec![V::Integer(after as i64)]);
        }
        if let Some(t) = f.from_us {
            push(" AND recorded_us >= ?", vec![V::Integer(t)]);
        }
        if let Some(t) = f.to_us {
            push(" AND recorded_us <= ?", vec![V::Integer(t)]);
        }
        if let Some(a) = &f.agent {
            push(" AND actor = ?", vec![V::Text(a.clone())]);
        }
        if let Some(p) = &f.patient {
            push(" AND seq IN (SELECT seq FROM audit_patient_all WHERE patient = ?)", vec![V::Text(p.clone())]);
        }
        if let Some((t, id)) = &f.entity {
            push(" AND rtype = ? AND rid = ?", vec![V::Text(t.clone()), V::Text(id.clone())]);
        }
        if let Some(o) = f.outcome {
            let (lo, hi) = match o {
                0 => (0, 399),
                4 => (400, 499),
                _ => (500, 999),
            };
            push(" AND outcome BETWEEN ? AND ?", vec![V::Integer(lo), V::Integer(hi)]);
        }
        // The action filter is applied after the query (it maps many trail actions to one code),
        // so fetch generously and cut to the limit below.
        sql.push_str(" ORDER BY seq LIMIT ?");
        let fetch = if f.action.is_some() { f.limit.saturating_mul(20).max(1000) } else { f.limit };
        args.push(V::Integer(fetch as i64));
        let mut stmt = self.conn.prepare(&sql)?;
        let rows = stmt.query_map(rusqlite::params_from_iter(args), entry_from_row)?;
        let mut out = Vec::new();
        for r in rows {
            let e = r?;
            if f.action.is_none_or(|a| fhir_action(&e.action) == a) {
                out.push(e);
                if out.len() >= f.limit {
                    break;
                }
            }
        }
        Ok(out)
    }
}

/// An audit entry as a FHIR R4 `AuditEvent` in the IHE Basic Audit Log Patterns (BALP) shape.
pub fn audit_event_resource(e: &AuditEntry) -> serde_json::Value {
    use serde_json::json;
    // RESTful interactions get the "rest" type; operator, security and refused-login events
    // get their DICOM event types.
    let rest = match e.action.as_str() {
        "initialise" | "account-create" | "account-list" | "token-create" | "audit-review" | "audit-export"
        | "integrity-check" | "clock-step" | "clock-status" | "status" | "role-request-list" | "account-report"
        | "oauth-client-list" | "token-list" | "account-sweep" | "server-key-create" => false,
        a if crate::identity::is_identity_action(a) => false,
        "refused" => e.outcome != 401,
        _ => true,
    };
    let (type_system, type_code, type_display) = match e.action.as_str() {
        _ if rest => ("http://terminology.hl7.org/CodeSystem/audit-event-type", "rest", "RESTful Operation"),
        "refused" => ("http://dicom.nema.org/resources/ontology/DCM", "110114", "User Authentication"),
        a if crate::identity::is_authentication_action(a) => {
            ("http://dicom.nema.org/resources/ontology/DCM", "110114", "User Authentication")
        }
        a if crate::identity::is_identity_action(a) => {
            ("http://dicom.nema.org/resources/ontology/DCM", "110137", "User Security Attributes Changed")
        }
        "audit-review" | "audit-export" => ("http://dicom.nema.org/resources/ontology/DCM", "110101", "Audit Log Used"),
        "account-create" | "token-create" => {
            ("http://dicom.nema.org/resources/ontology/DCM", "110136", "Security Roles Changed")
        }
        _ => ("http://dicom.nema.org/resources/ontology/DCM", "110100", "Application Activity"),
    };
    let mut event = json!({
        "resourceType": "AuditEvent",
        "id": e.seq.to_string(),
        "type": {"system": type_system, "code": type_code, "display": type_display},
        "action": fhir_action(&e.action).to_string(),
        "recorded": crate::clock::fhir_instant(e.recorded_us),
        "outcome": fhir_outcome(e.outcome).to_string(),
        "agent": [{
            "who": match &e.actor {
                Some(a) => json!({"identifier": {"system": "urn:mamori:account", "value": a}}),
                None => json!({"display": "unauthenticated"}),
            },
            "requestor": true,
            "network": {"address": e.source, "type": "2"}
        }],
        "source": {
            "observer": {"display": "mamori"},
            "type": [{"system": "http://terminology.hl7.org/CodeSystem/security-source-type", "code": "4", "display": "Application Server"}]
        }
    });
    if rest && let Some(o) = event.as_object_mut() {
        o.insert(
            "subtype".into(),
            json!([{"system": "http://hl7.org/fhir/restful-interaction", "code": e.action.replace("refused", "operation")}]),
        );
    }
    if let Some(o) = event.as_object_mut() {
        if let Some(d) = &e.detail {
            o.insert("outcomeDesc".into(), json!(d));
        }
        if let Some(role) = &e.role
            && let Some(agent) = o.get_mut("agent").and_then(|a| a.get_mut(0)).and_then(|a| a.as_object_mut())
        {
            agent.insert("role".into(), json!([{"text": role}]));
        }
        let mut entities: Vec<serde_json::Value> = e
            .patients
            .iter()
            .map(|p| {
                json!({
                    "what": {"reference": format!("Patient/{p}")},
                    "type": {"system": "http://terminology.hl7.org/CodeSystem/audit-entity-type", "code": "1", "display": "Person"},
                    "role": {"system": "http://terminology.hl7.org/CodeSystem/object-role", "code": "1", "display": "Patient"}
                })
            })
            .collect();
        if let (Some(t), Some(id)) = (&e.rtype, &e.rid)
            && t != "account"
            && t != "audit"
        {
            let reference = match e.version {
                Some(v) => format!("{t}/{id}/_history/{v}"),
                None => format!("{t}/{id}"),
            };
            entities.push(json!({
                "what": {"reference": reference},
                "type": {"system": "http://terminology.hl7.org/CodeSystem/audit-entity-type", "code": "2", "display": "System Object"}
            }));
        }
        entities.push(json!({"what": {"identifier": {"system": "urn:mamori:request-id", "value": e.request_id}}}));
        o.insert("entity".into(), serde_json::Value::Array(entities));
    }
    event
}
