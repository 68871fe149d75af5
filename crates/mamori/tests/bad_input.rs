//! NET-2 / INT-1: bad input gets a clear OperationOutcome with the right status and changes
//! nothing. "Nothing" is checked by counting stored versions, not taken on trust.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use serde_json::json;
use support::*;

fn versions(s: &Server) -> i64 {
    s.dir.query_i64("SELECT count(*) FROM resource_version")
}

async fn raw_post(s: &Server, path: &str, content_type: &str, body: Vec<u8>) -> reqwest::Response {
    s.http.post(s.url(path)).bearer_auth(&s.token).header("content-type", content_type).body(body).send().await.unwrap()
}

#[tokio::test]
async fn net2_each_bad_input_gets_its_outcome_and_changes_nothing() {
    let s = Server::start();
    let before = versions(&s);
    let fhir = "application/fhir+json";

    expect_outcome(raw_post(&s, "Patient", fhir, b"{\"resourceType\": \"Patient\",".to_vec()).await, 400, "line").await;
    expect_outcome(raw_post(&s, "Patient", fhir, b"[1,2]".to_vec()).await, 400, "object").await;
    expect_outcome(raw_post(&s, "Patient", fhir, br#"{"resourceType":"Patientt"}"#.to_vec()).await, 400, "Patientt")
        .await;
    expect_outcome(raw_post(&s, "Patient", fhir, br#"{"name":[{"family":"x"}]}"#.to_vec()).await, 400, "resourceType")
        .await;
    expect_outcome(
        raw_post(&s, "Patient", fhir, br#"{"resourceType":"Observation","status":"final"}"#.to_vec()).await,
        400,
        "Observation",
    )
    .await;
    expect_outcome(
        raw_post(&s, "Patient", fhir, br#"{"resourceType":"Patient","gender":null}"#.to_vec()).await,
        400,
        "gender",
    )
    .await;
    expect_outcome(raw_post(&s, "Patient", "text/plain", br#"{"resourceType":"Patient"}"#.to_vec()).await, 415, "")
        .await;
    expect_outcome(
        raw_post(&s, "Patient", "application/fhir+json; fhirVersion=3.0", br#"{"resourceType":"Patient"}"#.to_vec())
            .await,
        415,
        "",
    )
    .await;
    expect_outcome(raw_post(&s, "Unicorn", fhir, br#"{"resourceType":"Unicorn"}"#.to_vec()).await, 404, "Unicorn")
        .await;

    // Bad id syntax, and an id that does not match the URL.
    let bad_id =
        s.put_json("Patient/has$dollar", &json!({"resourceType": "Patient", "id": "has$dollar"})).send().await.unwrap();
    expect_outcome(bad_id, 400, "id").await;
    let too_long = "a".repeat(65);
    let resp = s
        .put_json(&format!("Patient/{too_long}"), &json!({"resourceType": "Patient", "id": too_long}))
        .send()
        .await
        .unwrap();
    expect_outcome(resp, 400, "id").await;
    let mismatch = s.put_json("Patient/one", &json!({"resourceType": "Patient", "id": "two"})).send().await.unwrap();
    expect_outcome(mismatch, 400, "does not match").await;

    // Unknown search parameter names the parameter.
    expect_outcome(s.get("Patient?favourite-colour=blue").send().await.unwrap(), 400, "favourite-colour").await;

    // A known URL with a method it does not take: 405, an OperationOutcome, and the Allow header.
    let resp = s.http.delete(s.url("metadata")).bearer_auth(&s.token).send().await.unwrap();
    assert_eq!(resp.headers().get("allow").and_then(|v| v.to_str().ok()), Some("GET,HEAD"));
    expect_outcome(resp, 405, "method").await;
    assert_eq!(versions(&s), before, "no bad request stored anything");
}

#[tokio::test]
async fn net2_oversized_bodies_and_bundles_are_refused() {
    let dir = DataDir::init();
    let cfg_path = dir.path.join("mamori.toml");
    let cfg = std::fs::read_to_string(&cfg_path).unwrap();
    let cfg = cfg
        .replace("max_body_bytes = 33554432", "max_body_bytes = 65536")
        .replace("max_bundle_entries = 10000", "max_bundle_entries = 3");
    std::fs::write(&cfg_path, cfg).unwrap();
    let token = dir.user_with_token("dr.limits", "physician");
    let s = Server::start_in(dir, token);
    let before = versions(&s);

    let big = json!({"resourceType": "Patient", "name": [{"text": "x".repeat(70_000)}]});
    let resp = s.post_json("Patient", &big).send().await.unwrap();
    expect_outcome(resp, 413, "limit").await;

    let entry = json!({"resource": {"resourceType": "Patient"}, "request": {"method": "POST", "url": "Patient"}});
    let bundle = json!({"resourceType": "Bundle", "type": "transaction", "entry": [entry, entry, entry, entry]});
    let resp = s.post_json("", &bundle).send().await.unwrap();
    expect_outcome(resp, 413, "3").await;
    assert_eq!(versions(&s), before);
}

#[tokio::test]
async fn int1_bundle_shape_errors_name_the_entry() {
    let s = Server::start();
    let before = versions(&s);
    let not_tx =
        json!({"resourceType": "Bundle", "type": "collection", "entry": [{"resource": {"resourceType": "Patient"}}]});
    expect_outcome(s.post_json("", &not_tx).send().await.unwrap(), 400, "transaction").await;
    let no_request = json!({"resourceType": "Bundle", "type": "transaction",
        "entry": [{"resource": {"resourceType": "Patient"}}]});
    expect_outcome(s.post_json("", &no_request).send().await.unwrap(), 400, "entry").await;
    let bad_resource = json!({"resourceType": "Bundle", "type": "transaction",
        "entry": [{"resource": {"resourceType": "Patient", "active": "yes", "x": []}, "request": {"method": "POST", "url": "Patient"}}]});
    expect_outcome(s.post_json("", &bad_resource).send().await.unwrap(), 400, "entry").await;
    let not_a_bundle = json!({"resourceType": "Patient"});
    expect_outcome(s.post_json("", &not_a_bundle).send().await.unwrap(), 400, "Bundle").await;
    assert_eq!(versions(&s), before);
}

#[tokio::test]
async fn aud1_requests_without_a_valid_token_are_refused_and_audited() {
    let s = Server::start();
    let audited_before = s.dir.audit_i64("SELECT count(*) FROM audit_event WHERE outcome = 401");
    let none = s.http.get(s.url("Patient")).send().await.unwrap();
    expect_outcome(none, 401, "token").await;
    let forged = s
        .http
        .get(s.url("metadata"))
        .bearer_auth("mamori_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA")
        .send()
        .await
        .unwrap();
    expect_outcome(forged, 401, "token").await;
    let junk = s.http.get(s.url("Patient/x")).header("authorization", "Basic YWRtaW46YWRtaW4=").send().await.unwrap();
    expect_outcome(junk, 401, "token").await;
    assert_eq!(s.dir.audit_i64("SELECT count(*) FROM audit_event WHERE outcome = 401"), audited_before + 3);
}
