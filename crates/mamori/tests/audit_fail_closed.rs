//! AUD-1: every request writes an audit row, and when the audit row cannot be written the
//! request fails and changes nothing (fail closed).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use serde_json::json;
use support::*;

/// Runs SQL on the audit database, as an insider (or a failing disk) would affect it.
fn exec_audit(dir: &DataDir, sql: &str) {
    let c = rusqlite::Connection::open(dir.audit_db()).unwrap();
    c.busy_timeout(std::time::Duration::from_secs(10)).unwrap();
    c.execute_batch(sql).unwrap();
}

#[tokio::test]
async fn aud1_when_the_audit_write_fails_the_request_fails_and_no_data_changes() {
    let s = Server::start();
    let (_, p) =
        json(s.post_json("Patient", &json!({"resourceType": "Patient", "gender": "male"})).send().await.unwrap()).await;
    let id = p["id"].as_str().unwrap().to_string();
    let versions = s.dir.query_i64("SELECT count(*) FROM resource_version");

    // An insider (or a full disk) makes every audit insert fail.
    exec_audit(
        &s.dir,
        "CREATE TRIGGER break_audit BEFORE INSERT ON audit_event BEGIN SELECT RAISE(ABORT, 'audit down'); END;",
    );

    let create = s.post_json("Patient", &json!({"resourceType": "Patient"})).send().await.unwrap();
    expect_outcome(create, 500, "audit").await;
    let update = s
        .put_json(&format!("Patient/{id}"), &json!({"resourceType": "Patient", "id": id, "gender": "female"}))
        .send()
        .await
        .unwrap();
    expect_outcome(update, 500, "audit").await;
    let delete = s.delete(&format!("Patient/{id}")).send().await.unwrap();
    expect_outcome(delete, 500, "audit").await;
    let tx = json!({"resourceType": "Bundle", "type": "transaction",
        "entry": [{"resource": {"resourceType": "Patient"}, "request": {"method": "POST", "url": "Patient"}}]});
    expect_outcome(s.post_json("", &tx).send().await.unwrap(), 500, "audit").await;
    assert_eq!(s.dir.query_i64("SELECT count(*) FROM resource_version"), versions, "no write got through");

    // Reads disclose nothing without their audit row.
    let read = s.get(&format!("Patient/{id}")).send().await.unwrap();
    let body = expect_outcome(read, 500, "audit").await;
    assert!(!body.to_string().contains("male"), "no record content in the error");
    expect_outcome(s.get("Patient?_id=x").send().await.unwrap(), 500, "audit").await;
    expect_outcome(s.get(&format!("Patient/{id}/_history")).send().await.unwrap(), 500, "audit").await;

    // Audit back: service resumes, the data is as before.
    exec_audit(&s.dir, "DROP TRIGGER break_audit;");
    let (status, read) = json(s.get(&format!("Patient/{id}")).send().await.unwrap()).await;
    assert_eq!((status, read["gender"].as_str()), (200, Some("male")));
}

#[tokio::test]
async fn aud1_every_request_is_recorded_with_who_what_where_and_outcome() {
    let s = Server::start();
    let before = s.dir.audit_i64("SELECT count(*) FROM audit_event");
    let (_, p) = json(s.post_json("Patient", &json!({"resourceType": "Patient"})).send().await.unwrap()).await;
    let id = p["id"].as_str().unwrap().to_string();
    let obs = json!({"resourceType": "Observation", "status": "final", "code": {"text": "x"},
        "subject": {"reference": format!("Patient/{id}")}});
    let (_, o) = json(s.post_json("Observation", &obs).send().await.unwrap()).await;
    let oid = o["id"].as_str().unwrap().to_string();
    s.get(&format!("Observation/{oid}")).send().await.unwrap();
    s.get("Observation/missing").send().await.unwrap();
    s.http.get(s.url("Patient")).send().await.unwrap(); // no token
    assert_eq!(s.dir.audit_i64("SELECT count(*) FROM audit_event"), before + 5);

    let c =
        rusqlite::Connection::open_with_flags(s.dir.audit_db(), rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY).unwrap();
    let row: (String, String, String, String, String, i64, String, i64) = c
        .query_row(
            "SELECT actor, role, source, action, rtype, version, patients, outcome FROM audit_event \
             WHERE action = 'read' AND rid = ?1",
            [&oid],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?, r.get(6)?, r.get(7)?)),
        )
        .unwrap();
    assert_eq!(
        row,
        (
            "dr.test".into(),
            "physician".into(),
            "127.0.0.1".into(),
            "read".into(),
            "Observation".into(),
            1,
            id.clone(),
            200
        )
    );
    let missing: i64 = c.query_row("SELECT outcome FROM audit_event WHERE rid = 'missing'", [], |r| r.get(0)).unwrap();
    assert_eq!(missing, 404);
    let anonymous: i64 = c
        .query_row("SELECT count(*) FROM audit_event WHERE actor IS NULL AND outcome = 401", [], |r| r.get(0))
        .unwrap();
    assert_eq!(anonymous, 1);
    // Audit time is the server's, increasing with the sequence.
    let ordered: i64 = c
        .query_row(
            "SELECT count(*) FROM audit_event a JOIN audit_event b ON b.seq = a.seq + 1 WHERE b.recorded_us <= a.recorded_us",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(ordered, 0);
}

#[tokio::test]
async fn aud6_the_trail_refuses_update_and_delete_even_from_sql() {
    let s = Server::start();
    s.post_json("Patient", &json!({"resourceType": "Patient"})).send().await.unwrap();
    let c = rusqlite::Connection::open(s.dir.audit_db()).unwrap();
    c.busy_timeout(std::time::Duration::from_secs(10)).unwrap();
    let upd = c.execute("UPDATE audit_event SET actor = 'someone-else'", []).unwrap_err().to_string();
    assert!(upd.contains("append-only"), "{upd}");
    let del = c.execute("DELETE FROM audit_event", []).unwrap_err().to_string();
    assert!(del.contains("append-only"), "{del}");
    let c = rusqlite::Connection::open(s.dir.db()).unwrap();
    c.busy_timeout(std::time::Duration::from_secs(10)).unwrap();
    let rec = c.execute("DELETE FROM resource_version", []).unwrap_err().to_string();
    assert!(rec.contains("immutable"), "{rec}");
    let edit = c.execute("UPDATE resource_version SET deleted = 1", []).unwrap_err().to_string();
    assert!(edit.contains("immutable"), "{edit}");
}

#[tokio::test]
async fn acl5_administrator_and_auditor_tokens_get_no_clinical_data() {
    let s = Server::start();
    let (_, p) = json(s.post_json("Patient", &json!({"resourceType": "Patient"})).send().await.unwrap()).await;
    let id = p["id"].as_str().unwrap().to_string();
    for (name, role) in [("it.admin", "administrator"), ("audit.ito", "auditor")] {
        let token = s.dir.user_with_token(name, role);
        let read = s.http.get(s.url(&format!("Patient/{id}"))).bearer_auth(&token).send().await.unwrap();
        expect_outcome(read, 403, "denied").await;
        let create = s
            .http
            .post(s.url("Patient"))
            .bearer_auth(&token)
            .header("content-type", "application/fhir+json")
            .body(r#"{"resourceType":"Patient"}"#)
            .send()
            .await
            .unwrap();
        expect_outcome(create, 403, "denied").await;
        let refused =
            s.dir.audit_i64(&format!("SELECT count(*) FROM audit_event WHERE actor = '{name}' AND outcome = 403"));
        assert_eq!(refused, 2, "denials are audited");
    }
}
