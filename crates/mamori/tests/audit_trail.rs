//! AUD-2: the audit trail is tamper-evident. An insider with database access edits the trail
//! with SQL; `mamori audit verify` (no database server, public key only) names what changed.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::path::Path;

use mamori_audit::{Checkpoint, SigningKey, TreeBuilder, sign};
use mamori_store::audit_log::AuditLogReader;
use serde_json::json;
use support::*;

/// A data directory whose trail has ~40 entries, sealed at shutdown.
async fn sealed_trail() -> DataDir {
    let s = Server::start();
    for i in 0..12 {
        let (_, p) =
            json(s.post_json("Patient", &json!({"resourceType": "Patient", "gender": "male"})).send().await.unwrap())
                .await;
        s.get(&format!("Patient/{}", p["id"].as_str().unwrap())).send().await.unwrap();
        s.get(&format!("Patient/nobody-{i}")).send().await.unwrap();
    }
    s.stop()
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let p = e.unwrap().path();
        let dest = to.join(p.file_name().unwrap());
        if p.is_dir() { copy_dir(&p, &dest) } else { std::fs::copy(&p, &dest).map(|_| ()).unwrap() }
    }
}

/// Applies `sql` as an insider would (dropping the append-only guards first) to a copy of the
/// data directory, then verifies it; returns (exit code, output).
fn tamper_and_verify(dir: &DataDir, sql: &str) -> (i32, String) {
    let tmp = tempfile::tempdir().unwrap();
    let copy = tmp.path().join("d");
    copy_dir(&dir.path, &copy);
    let c = rusqlite::Connection::open(copy.join("mamori-audit.db")).unwrap();
    c.execute_batch("DROP TRIGGER audit_event_no_update; DROP TRIGGER audit_event_no_delete;").unwrap();
    c.execute_batch(sql).unwrap();
    drop(c);
    let (code, out, err) = mamori(&["audit", "verify", "--data-dir", copy.to_str().unwrap()]);
    (code, format!("{out}{err}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aud2_insider_edits_made_with_sql_are_detected_and_named() {
    let dir = sealed_trail().await;
    let (code, out, _) = mamori(&["audit", "verify", "--data-dir", dir.arg()]);
    assert_eq!(code, 0, "an untouched trail verifies: {out}");
    assert!(out.contains("audit trail: OK"), "{out}");
    let n = dir.audit_i64("SELECT count(*) FROM audit_event");
    assert!(n >= 40, "{n}");

    let cases: [(&str, String, &str); 6] = [
        ("deleted", "DELETE FROM audit_event WHERE seq = 17".into(), "deleted: 1 entry from seq 17"),
        ("altered", "UPDATE audit_event SET actor = 'someone-else' WHERE seq = 23".into(), "checkpoint"),
        (
            "inserted",
            "INSERT INTO audit_event (seq, recorded_us, request_id, actor, role, source, action, patients, outcome) \
             SELECT seq + 1000, recorded_us, request_id, actor, role, source, action, patients, outcome FROM audit_event WHERE seq = 5"
                .into(),
            "seq",
        ),
        (
            "reordered",
            "UPDATE audit_event SET seq = -1 WHERE seq = 30; UPDATE audit_event SET seq = 30 WHERE seq = 31; \
             UPDATE audit_event SET seq = 31 WHERE seq = -1;"
                .into(),
            "checkpoint",
        ),
        ("truncated", format!("DELETE FROM audit_event WHERE seq > {}", n - 3), "truncated"),
        ("time moved", "UPDATE audit_event SET recorded_us = 0 WHERE seq = 12".into(), "seq 12"),
    ];
    for (kind, sql, expect) in cases {
        let (code, out) = tamper_and_verify(&dir, &sql);
        assert_eq!(code, 2, "{kind} went unnoticed:\n{out}");
        assert!(out.contains("FINDING"), "{kind}: {out}");
        assert!(out.to_lowercase().contains(&expect.to_lowercase()), "{kind}: expected {expect:?} in\n{out}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aud2_a_rewritten_and_re_signed_trail_is_exposed_by_the_witness_file() {
    let dir = sealed_trail().await;
    let tmp = tempfile::tempdir().unwrap();
    let copy = tmp.path().join("d");
    copy_dir(&dir.path, &copy);
    // The insider rewrites who did entry 9 — same number of entries — and re-signs a fresh
    // checkpoint with the real signing key: the database is consistent with itself again.
    let db = copy.join("mamori-audit.db");
    let c = rusqlite::Connection::open(&db).unwrap();
    c.execute_batch(
        "DROP TRIGGER audit_event_no_update; DROP TRIGGER audit_event_no_delete;
         DROP TRIGGER audit_checkpoint_no_delete;
         UPDATE audit_event SET actor = 'someone-else' WHERE seq = 9;
         DELETE FROM audit_checkpoint;",
    )
    .unwrap();
    let key_text = std::fs::read_to_string(copy.join("keys/audit-signing.key")).unwrap();
    let key = SigningKey::from_skey(key_text.trim()).unwrap();
    let mut tree = TreeBuilder::new();
    AuditLogReader::open(&db).unwrap().for_each_entry(|e| tree.push(e.leaf_hash())).unwrap();
    let cp = Checkpoint { origin: key.name().into(), size: tree.size(), root: tree.root(), extensions: vec![] };
    c.execute(
        "INSERT INTO audit_checkpoint (size, recorded_us, note) VALUES (?1, 0, ?2)",
        rusqlite::params![cp.size as i64, sign(&cp, &key).unwrap()],
    )
    .unwrap();
    let stored: i64 = c.query_row("SELECT count(*) FROM audit_checkpoint", [], |r| r.get(0)).unwrap();
    assert_eq!(stored, 1, "only the forged checkpoint remains in the table");
    drop(c);

    // Without the witness file the forgery is self-consistent…
    let witness = copy.join("audit/checkpoints.log");
    let kept = std::fs::read(&witness).unwrap();
    std::fs::remove_file(&witness).unwrap();
    let (code, out, _) = mamori(&["audit", "verify", "--data-dir", copy.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}");
    // …but the checkpoints witnessed outside the database expose the rewritten history.
    std::fs::write(&witness, kept).unwrap();
    let (code, out, _) = mamori(&["audit", "verify", "--data-dir", copy.to_str().unwrap()]);
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("FINDING") && out.contains("witness"), "the finding names the witnessed checkpoint: {out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aud2_an_export_verifies_offline_with_the_public_key_only() {
    let dir = sealed_trail().await;
    let tmp = tempfile::tempdir().unwrap();
    let export = tmp.path().join("trail.jsonl");
    ok(&["audit", "export", "--data-dir", dir.arg(), "--out", export.to_str().unwrap()]);
    // Only the export and the public key travel to the auditor.
    let key = tmp.path().join("auditor.vkey");
    std::fs::copy(dir.path.join("audit-signing.vkey"), &key).unwrap();
    drop(dir);
    let (code, out, _) = mamori(&["audit", "verify", export.to_str().unwrap(), "--key", key.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("audit trail: OK"), "{out}");

    // An edited line in the export is caught too.
    let text = std::fs::read_to_string(&export).unwrap();
    let edited = text.replacen("\"outcome\":404", "\"outcome\":200", 1);
    assert_ne!(text, edited);
    std::fs::write(&export, edited).unwrap();
    let (code, out, _) = mamori(&["audit", "verify", export.to_str().unwrap(), "--key", key.to_str().unwrap()]);
    assert_eq!(code, 2, "{out}");
    // A key other than the institution's does not vouch for the trail.
    let other = tempfile::tempdir().unwrap();
    let other_dir = other.path().join("o");
    ok(&["init", "--data-dir", other_dir.to_str().unwrap()]);
    let (code, _, _) = mamori(&[
        "audit",
        "verify",
        export.to_str().unwrap(),
        "--key",
        other_dir.join("audit-signing.vkey").to_str().unwrap(),
    ]);
    assert_eq!(code, 2);
}
