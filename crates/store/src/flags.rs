//! Patients whose records draw extra scrutiny in the audit review (AUD-4): VIPs and staff.
//!
//! A Patient is flagged by the HL7 sensitivity labels institutions already use in
//! `meta.security` (system `http://terminology.hl7.org/CodeSystem/v3-ActCode`): `CELEB`
//! (celebrity, "VIP") and `EMP` (employee, "staff"). The flag is kept beside the record so the
//! review can list every access to such a patient without decrypting anything.

use rusqlite::{Connection, params};
use serde_json::Value;

use crate::StoreError;

const ACT_CODE: &str = "http://terminology.hl7.org/CodeSystem/v3-ActCode";

/// The review flag a Patient body carries, if any.
pub(crate) fn flag_of(body: &Value) -> Option<&'static str> {
    let labels = body.get("meta")?.get("security")?.as_array()?;
    let has = |code: &str| {
        labels.iter().any(|l| {
            l.get("system").and_then(Value::as_str) == Some(ACT_CODE)
                && l.get("code").and_then(Value::as_str) == Some(code)
        })
    };
    if has("CELEB") {
        Some("vip")
    } else if has("EMP") {
        Some("staff")
    } else {
        None
    }
}

/// Keeps `patient_flag` in step with a Patient's current version (None: deleted).
pub(crate) fn update(conn: &Connection, rtype: &str, id: &str, body: Option<&Value>) -> Result<(), StoreError> {
    if rtype != "Patient" {
        return Ok(());
    }
    conn.prepare_cached("DELETE FROM patient_flag WHERE patient = ?1")?.execute([id])?;
    if let Some(flag) = body.and_then(flag_of) {
        conn.prepare_cached("INSERT INTO patient_flag (patient, flag) VALUES (?1, ?2)")?.execute(params![id, flag])?;
    }
    Ok(())
}

/// Every flagged patient: (patient id, flag).
pub(crate) fn all(conn: &Connection) -> Result<Vec<(String, String)>, StoreError> {
    let mut stmt = conn.prepare_cached("SELECT patient, flag FROM patient_flag ORDER BY patient")?;
    let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
    Ok(rows.collect::<Result<_, _>>()?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn celeb_is_vip_and_emp_is_staff() {
        let label = |c: &str| json!({"meta": {"security": [{"system": ACT_CODE, "code": c}]}});
        assert_eq!(flag_of(&label("CELEB")), Some("vip"));
        assert_eq!(flag_of(&label("EMP")), Some("staff"));
        assert_eq!(flag_of(&label("PSY")), None);
        assert_eq!(flag_of(&json!({"meta": {"security": [{"system": "other", "code": "CELEB"}]}})), None);
        assert_eq!(flag_of(&json!({})), None);
    }
}
