//! ACL-1 in batch and transaction Bundles, over the real binary: each entry is decided by the
//! one policy point as a single request would be (and audited as one). A batch answers a denied
//! entry with its own 403 and runs the rest; a transaction with a denied entry is refused whole
//! and changes nothing; resources hidden from the caller answer 404 inside Bundles too; auditors
//! read the AuditEvent view in a batch.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use serde_json::{Value, json};
use support::*;

const ACT: &str = "http://terminology.hl7.org/CodeSystem/v3-ActCode";

async fn bundle(s: &Server, token: &str, body: &Value) -> (u16, Value) {
    let r = s
        .http
        .post(&s.base)
        .bearer_auth(token)
        .header("content-type", "application/fhir+json")
        .body(serde_json::to_vec(body).unwrap())
        .send()
        .await
        .unwrap();
    json(r).await
}

fn statuses(b: &Value) -> Vec<String> {
    b["entry"].as_array().unwrap().iter().map(|e| e["response"]["status"].as_str().unwrap().to_string()).collect()
}

async fn total(s: &Server, query: &str) -> u64 {
    let (_, b) = json(s.get(&format!("{query}&_total=accurate")).send().await.unwrap()).await;
    b["total"].as_u64().unwrap()
}

/// A physician's server (loopback is the HIS zone) with one patient, one observation and one
/// psychiatric condition.
async fn fixtures() -> (Server, String, String, String) {
    let s = Server::start();
    let (_, p) = json(s.post_json("Patient", &json!({"resourceType": "Patient"})).send().await.unwrap()).await;
    let pid = p["id"].as_str().unwrap().to_string();
    let obs = json!({"resourceType": "Observation", "status": "final", "code": {"text": "pulse"},
        "subject": {"reference": format!("Patient/{pid}")}});
    let (_, o) = json(s.post_json("Observation", &obs).send().await.unwrap()).await;
    let psy = json!({"resourceType": "Condition", "meta": {"security": [{"system": ACT, "code": "PSY"}]},
        "code": {"text": "episode"}, "subject": {"reference": format!("Patient/{pid}")}});
    let (_, c) = json(s.post_json("Condition", &psy).send().await.unwrap()).await;
    (s, pid, o["id"].as_str().unwrap().to_string(), c["id"].as_str().unwrap().to_string())
}

fn new_obs(pid: &str) -> Value {
    json!({"resourceType": "Observation", "status": "final", "code": {"text": "temperature"},
           "subject": {"reference": format!("Patient/{pid}")}})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acl1_batch_decides_each_entry_and_runs_the_permitted_ones() {
    let (s, pid, oid, _) = fixtures().await;
    // A nurse views and writes general data in the HIS, but may not delete it.
    let nurse = s.dir.user_with_token("ns.batch", "nurse");
    let before = total(&s, "Observation?_count=1").await;
    let (st, b) = bundle(
        &s,
        &nurse,
        &json!({"resourceType": "Bundle", "type": "batch", "entry": [
            {"request": {"method": "GET", "url": format!("Observation/{oid}")}},
            {"request": {"method": "DELETE", "url": format!("Observation/{oid}")}},
            {"resource": new_obs(&pid), "request": {"method": "POST", "url": "Observation"}},
            {"request": {"method": "GET", "url": format!("Observation?subject=Patient/{pid}")}}]}),
    )
    .await;
    assert_eq!(st, 200, "{b}");
    assert_eq!(statuses(&b), ["200 OK", "403 Forbidden", "201 Created", "200 OK"], "{b}");
    assert_eq!(b["entry"][1]["response"]["outcome"]["resourceType"], "OperationOutcome", "{b}");
    assert_eq!(total(&s, "Observation?_count=1").await, before + 1, "the permitted create ran, the delete did not");
    // A read-only batch of a pharmacist (no write rights at all) runs too.
    let pharmacist = s.dir.user_with_token("ph.batch", "pharmacist");
    let (st, b) = bundle(
        &s,
        &pharmacist,
        &json!({"resourceType": "Bundle", "type": "batch", "entry": [
            {"request": {"method": "GET", "url": format!("Observation/{oid}")}}]}),
    )
    .await;
    assert_eq!((st, statuses(&b)), (200, vec!["200 OK".to_string()]), "{b}");
    let dir = s.stop();
    // The denied entry is audited as a refused single delete would be.
    assert_eq!(
        dir.audit_i64(
            "SELECT count(*) FROM audit_event WHERE actor = 'ns.batch' AND action = 'refused' AND outcome = 403 \
             AND rtype = 'Observation' AND detail = 'forbidden: delete'"
        ),
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acl1_transaction_with_a_denied_entry_changes_nothing() {
    let (s, pid, oid, _) = fixtures().await;
    let nurse = s.dir.user_with_token("ns.tx", "nurse");
    let before = total(&s, "Observation?_count=1").await;
    let (st, b) = bundle(
        &s,
        &nurse,
        &json!({"resourceType": "Bundle", "type": "transaction", "entry": [
            {"resource": new_obs(&pid), "request": {"method": "POST", "url": "Observation"}},
            {"request": {"method": "DELETE", "url": format!("Observation/{oid}")}}]}),
    )
    .await;
    assert_eq!(st, 403, "{b}");
    assert_eq!(b["issue"][0]["expression"][0], "Bundle.entry[1]", "{b}");
    assert_eq!(total(&s, "Observation?_count=1").await, before, "the permitted create did not run either");
    // The same transaction without the denied entry commits.
    let (st, b) = bundle(
        &s,
        &nurse,
        &json!({"resourceType": "Bundle", "type": "transaction", "entry": [
            {"resource": new_obs(&pid), "request": {"method": "POST", "url": "Observation"}}]}),
    )
    .await;
    assert_eq!((st, statuses(&b)), (200, vec!["201 Created".to_string()]), "{b}");
    assert_eq!(total(&s, "Observation?_count=1").await, before + 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acl1_hidden_resources_stay_invisible_inside_bundles() {
    let (s, pid, oid, cid) = fixtures().await;
    // A pharmacist in the HIS sees general and administrative data, not psychiatric.
    let pharmacist = s.dir.user_with_token("ph.hidden", "pharmacist");
    let (st, b) = bundle(
        &s,
        &pharmacist,
        &json!({"resourceType": "Bundle", "type": "batch", "entry": [
            {"request": {"method": "GET", "url": format!("Condition/{cid}")}},
            {"request": {"method": "GET", "url": "Condition/no-such-id"}},
            {"request": {"method": "GET", "url": format!("Condition?subject=Patient/{pid}")}},
            {"request": {"method": "GET", "url": format!("Observation/{oid}")}}]}),
    )
    .await;
    assert_eq!(st, 200, "{b}");
    assert_eq!(statuses(&b), ["404 Not Found", "404 Not Found", "200 OK", "200 OK"], "{b}");
    assert_eq!(
        b["entry"][0]["response"]["outcome"]["issue"][0]["code"],
        b["entry"][1]["response"]["outcome"]["issue"][0]["code"],
        "indistinguishable from a missing id: {b}"
    );
    assert_eq!(b["entry"][2]["resource"]["total"], 0, "the search entry's total leaves it out: {b}");
    // A transaction reading it fails as for a missing resource.
    let (st, _) = bundle(
        &s,
        &pharmacist,
        &json!({"resourceType": "Bundle", "type": "transaction", "entry": [
            {"request": {"method": "GET", "url": format!("Condition/{cid}")}}]}),
    )
    .await;
    assert_eq!(st, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acl1_auditor_reads_audit_events_in_a_batch() {
    let (s, _, oid, _) = fixtures().await;
    let auditor = s.dir.user_with_token("au.batch", "auditor");
    let (_, page) = json(s.http.get(s.url("AuditEvent?_count=1")).bearer_auth(&auditor).send().await.unwrap()).await;
    let seq = page["entry"][0]["resource"]["id"].as_str().unwrap().to_string();
    let (st, b) = bundle(
        &s,
        &auditor,
        &json!({"resourceType": "Bundle", "type": "batch", "entry": [
            {"request": {"method": "GET", "url": format!("AuditEvent/{seq}")}},
            {"request": {"method": "GET", "url": "AuditEvent?action=C&_count=5"}},
            {"request": {"method": "GET", "url": format!("Observation/{oid}")}}]}),
    )
    .await;
    assert_eq!(st, 200, "{b}");
    assert_eq!(statuses(&b), ["200 OK", "200 OK", "403 Forbidden"], "{b}");
    assert_eq!(b["entry"][0]["resource"]["resourceType"], "AuditEvent", "{b}");
    assert_eq!(b["entry"][0]["resource"]["id"], seq.as_str(), "{b}");
    let inner = &b["entry"][1]["resource"];
    assert_eq!(inner["type"], "searchset", "{b}");
    assert!(!inner["entry"].as_array().unwrap().is_empty(), "{b}");
    // The physician is no auditor: the view is forbidden in a batch as over REST.
    let (st, b) = bundle(
        &s,
        &s.token,
        &json!({"resourceType": "Bundle", "type": "batch", "entry": [
            {"request": {"method": "GET", "url": format!("AuditEvent/{seq}")}}]}),
    )
    .await;
    assert_eq!((st, statuses(&b)), (200, vec!["403 Forbidden".to_string()]), "{b}");
}
