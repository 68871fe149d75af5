//! INT-1 / REC-1: the FHIR REST core against the real server.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use serde_json::{Value, json};
use support::*;

fn patient(family: &str) -> Value {
    json!({
        "resourceType": "Patient",
        "identifier": [{"system": "urn:oid:1.2.392.100495.20.3.51.1", "value": format!("id-{family}")}],
        "name": [{"family": family, "given": ["Taro"]}],
        "gender": "male",
        "birthDate": "1970-01-01"
    })
}

#[tokio::test]
async fn int1_create_read_vread_update_history() {
    let s = Server::start();
    let resp = s.post_json("Patient", &patient("Yamada")).send().await.unwrap();
    assert_eq!(resp.status(), 201);
    let loc = resp.headers()["location"].to_str().unwrap().to_string();
    assert_eq!(resp.headers()["etag"], "W/\"1\"");
    assert!(resp.headers().contains_key("last-modified"));
    assert!(loc.starts_with(&s.url("Patient/")) && loc.ends_with("/_history/1"), "{loc}");
    let (_, created) = json(resp).await;
    let id = created["id"].as_str().unwrap().to_string();
    assert_eq!(created["meta"]["versionId"], "1");
    assert_eq!(strip_server_fields(&created), patient("Yamada"));

    let (st, read) = json(s.get(&format!("Patient/{id}")).send().await.unwrap()).await;
    assert_eq!(st, 200);
    assert_eq!(read, created);

    let mut changed = read.clone();
    changed["gender"] = json!("female");
    let resp = s.put_json(&format!("Patient/{id}"), &changed).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["etag"], "W/\"2\"");

    let (_, v1) = json(s.get(&format!("Patient/{id}/_history/1")).send().await.unwrap()).await;
    assert_eq!(v1["gender"], "male", "REC-1: the earlier version stays readable");
    let (_, v2) = json(s.get(&format!("Patient/{id}/_history/2")).send().await.unwrap()).await;
    assert_eq!(v2["gender"], "female");
    let (st, _) = json(s.get(&format!("Patient/{id}/_history/3")).send().await.unwrap()).await;
    assert_eq!(st, 404);

    let (_, hist) = json(s.get(&format!("Patient/{id}/_history")).send().await.unwrap()).await;
    assert_eq!(hist["type"], "history");
    assert_eq!(hist["total"], 2);
    let versions: Vec<&str> = hist["entry"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["resource"]["meta"]["versionId"].as_str().unwrap())
        .collect();
    assert_eq!(versions, ["2", "1"], "newest first");
}

#[tokio::test]
async fn int1_if_match_conflicts_answer_412_and_change_nothing() {
    let s = Server::start();
    let (_, p) = json(s.post_json("Patient", &patient("Sato")).send().await.unwrap()).await;
    let id = p["id"].as_str().unwrap();
    let stale = s.put_json(&format!("Patient/{id}"), &p).header("if-match", "W/\"7\"").send().await.unwrap();
    expect_outcome(stale, 412, "version").await;
    let fresh = s.put_json(&format!("Patient/{id}"), &p).header("if-match", "W/\"1\"").send().await.unwrap();
    assert_eq!(fresh.status(), 200);
    let (_, hist) = json(s.get(&format!("Patient/{id}/_history")).send().await.unwrap()).await;
    assert_eq!(hist["total"], 2, "the 412 wrote no version");
}

#[tokio::test]
async fn int1_delete_then_read_is_410_and_history_keeps_the_tombstone() {
    let s = Server::start();
    let (_, p) = json(s.post_json("Patient", &patient("Suzuki")).send().await.unwrap()).await;
    let id = p["id"].as_str().unwrap();
    let del = s.delete(&format!("Patient/{id}")).send().await.unwrap();
    assert_eq!(del.status(), 204);
    expect_outcome(s.get(&format!("Patient/{id}")).send().await.unwrap(), 410, "deleted").await;
    let (st, v1) = json(s.get(&format!("Patient/{id}/_history/1")).send().await.unwrap()).await;
    assert_eq!((st, v1["name"][0]["family"].as_str()), (200, Some("Suzuki")));
    let (_, hist) = json(s.get(&format!("Patient/{id}/_history")).send().await.unwrap()).await;
    assert_eq!(hist["total"], 2);
    let first = &hist["entry"][0];
    assert_eq!(first["request"]["method"], "DELETE");
    assert!(first.get("resource").is_none(), "a tombstone has no body");
    // Deleting again is idempotent; a search no longer finds it.
    assert_eq!(s.delete(&format!("Patient/{id}")).send().await.unwrap().status(), 204);
    let (_, found) = json(s.get("Patient?identifier=id-Suzuki").send().await.unwrap()).await;
    assert_eq!(found["total"], 0);
}

#[tokio::test]
async fn int1_conditional_create_returns_the_existing_resource() {
    let s = Server::start();
    let cond = "identifier=urn:oid:1.2.392.100495.20.3.51.1|id-Tanaka";
    let first = s.post_json("Patient", &patient("Tanaka")).header("if-none-exist", cond).send().await.unwrap();
    assert_eq!(first.status(), 201);
    let (_, a) = json(first).await;
    let second = s.post_json("Patient", &patient("Tanaka")).header("if-none-exist", cond).send().await.unwrap();
    assert_eq!(second.status(), 200);
    let (_, b) = json(second).await;
    assert_eq!(a["id"], b["id"]);
    let (_, found) = json(s.get("Patient?identifier=id-Tanaka").send().await.unwrap()).await;
    assert_eq!(found["total"], 1);
    // Two matches make the condition ambiguous: 412, nothing created.
    s.post_json("Patient", &patient("Tanaka")).send().await.unwrap();
    let third = s.post_json("Patient", &patient("Tanaka")).header("if-none-exist", cond).send().await.unwrap();
    expect_outcome(third, 412, "more than one").await;
    let (_, found) = json(s.get("Patient?identifier=id-Tanaka").send().await.unwrap()).await;
    assert_eq!(found["total"], 2);
}

#[tokio::test]
async fn int1_conditional_update_and_update_as_create() {
    let s = Server::start();
    let mut p = patient("Ito");
    p["id"] = json!("ito-1");
    let created = s.put_json("Patient/ito-1", &p).send().await.unwrap();
    assert_eq!(created.status(), 201, "update-as-create with the client's id");
    let (_, read) = json(s.get("Patient/ito-1").send().await.unwrap()).await;
    assert_eq!(read["id"], "ito-1");

    let mut changed = patient("Ito");
    changed["gender"] = json!("female");
    let resp = s.put_json("Patient?identifier=id-Ito", &changed).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let (_, read) = json(s.get("Patient/ito-1").send().await.unwrap()).await;
    assert_eq!((read["gender"].as_str(), read["meta"]["versionId"].as_str()), (Some("female"), Some("2")));
    let resp = s.put_json("Patient?identifier=id-Nobody", &patient("Nobody")).send().await.unwrap();
    assert_eq!(resp.status(), 201, "no match: the conditional update creates");
}

#[tokio::test]
async fn int1_json_patch_makes_a_new_version() {
    let s = Server::start();
    let (_, p) = json(s.post_json("Patient", &patient("Kato")).send().await.unwrap()).await;
    let id = p["id"].as_str().unwrap();
    let patch = json!([{"op": "replace", "path": "/gender", "value": "other"}]);
    let resp = s
        .http
        .patch(s.url(&format!("Patient/{id}")))
        .bearer_auth(&s.token)
        .header("content-type", "application/json-patch+json")
        .body(patch.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let (_, body) = json(resp).await;
    assert_eq!((body["gender"].as_str(), body["meta"]["versionId"].as_str()), (Some("other"), Some("2")));
    let bad = json!([{"op": "replace", "path": "/id", "value": "other-id"}]);
    let resp = s
        .http
        .patch(s.url(&format!("Patient/{id}")))
        .bearer_auth(&s.token)
        .header("content-type", "application/json-patch+json")
        .body(bad.to_string())
        .send()
        .await
        .unwrap();
    expect_outcome(resp, 400, "may not change").await;
}

#[tokio::test]
async fn int1_prefer_return_minimal_and_operation_outcome() {
    let s = Server::start();
    let minimal = s.post_json("Patient", &patient("Abe")).header("prefer", "return=minimal").send().await.unwrap();
    assert_eq!(minimal.status(), 201);
    assert!(minimal.headers().contains_key("location"));
    assert!(minimal.bytes().await.unwrap().is_empty());
    let oo = s.post_json("Patient", &patient("Abe")).header("prefer", "return=OperationOutcome").send().await.unwrap();
    let (st, body) = json(oo).await;
    assert_eq!((st, body["resourceType"].as_str()), (201, Some("OperationOutcome")));
}

#[tokio::test]
async fn int1_decimals_keep_their_exact_form() {
    let s = Server::start();
    let obs = r#"{"resourceType":"Observation","status":"final","code":{"text":"Hb"},"valueQuantity":{"value":1.50,"unit":"g/dL"}}"#;
    let resp = s
        .http
        .post(s.url("Observation"))
        .bearer_auth(&s.token)
        .header("content-type", "application/fhir+json; fhirVersion=4.0")
        .body(obs)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201);
    let text = resp.text().await.unwrap();
    assert!(text.contains("\"value\":1.50"), "{text}");
}

#[tokio::test]
async fn int1_type_and_system_history_with_since_and_paging() {
    let s = Server::start();
    for i in 0..5 {
        s.post_json("Patient", &patient(&format!("P{i}"))).send().await.unwrap();
    }
    let (_, page1) = json(s.get("Patient/_history?_count=2").send().await.unwrap()).await;
    assert_eq!(page1["entry"].as_array().unwrap().len(), 2);
    let next = page1["link"].as_array().unwrap().iter().find(|l| l["relation"] == "next").unwrap()["url"]
        .as_str()
        .unwrap()
        .to_string();
    // A write between pages must not shift the next page.
    s.post_json("Patient", &patient("Late")).send().await.unwrap();
    let (_, page2) = json(s.http.get(&next).bearer_auth(&s.token).send().await.unwrap()).await;
    let fam = |p: &Value| -> Vec<String> {
        p["entry"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["resource"]["name"][0]["family"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(fam(&page1), ["P4", "P3"]);
    assert_eq!(fam(&page2), ["P2", "P1"]);
    let (_, all) = json(s.get("_history?_count=100").send().await.unwrap()).await;
    assert_eq!(all["entry"].as_array().unwrap().len(), 6);
    let future = "2999-01-01T00:00:00Z";
    let (_, none) = json(s.get(&format!("_history?_since={future}")).send().await.unwrap()).await;
    assert!(none.get("entry").is_none());
}

#[tokio::test]
async fn int1_capability_statement_states_what_is_implemented() {
    let s = Server::start();
    let (st, cap) = json(s.get("metadata").send().await.unwrap()).await;
    assert_eq!(st, 200);
    assert_eq!(cap["fhirVersion"], "4.0.1");
    let resources = cap["rest"][0]["resource"].as_array().unwrap();
    assert!(resources.len() >= 140, "all R4 resource types: {}", resources.len());
    let patient = resources.iter().find(|r| r["type"] == "Patient").unwrap();
    assert_eq!(patient["conditionalCreate"], true);
    let system: Vec<&str> =
        cap["rest"][0]["interaction"].as_array().unwrap().iter().map(|i| i["code"].as_str().unwrap()).collect();
    assert_eq!(system, ["transaction", "batch", "history-system"]);
}

#[tokio::test]
async fn int1_transaction_resolves_urn_uuid_and_is_all_or_nothing() {
    let s = Server::start();
    let tx = json!({
        "resourceType": "Bundle", "type": "transaction",
        "entry": [
            {"fullUrl": "urn:uuid:11111111-1111-1111-1111-111111111111",
             "resource": patient("Mori"), "request": {"method": "POST", "url": "Patient"}},
            {"fullUrl": "urn:uuid:22222222-2222-2222-2222-222222222222",
             "resource": {"resourceType": "Observation", "status": "final", "code": {"text": "BP"},
                          "subject": {"reference": "urn:uuid:11111111-1111-1111-1111-111111111111"}},
             "request": {"method": "POST", "url": "Observation"}}
        ]
    });
    let (st, resp) = json(s.post_json("", &tx).send().await.unwrap()).await;
    assert_eq!(st, 200, "{resp}");
    assert_eq!(resp["type"], "transaction-response");
    let pat_loc = resp["entry"][0]["response"]["location"].as_str().unwrap();
    let obs_loc = resp["entry"][1]["response"]["location"].as_str().unwrap();
    assert_eq!(resp["entry"][0]["response"]["status"], "201 Created");
    let pat_ref = pat_loc.split("/_history").next().unwrap();
    let (_, obs) = json(s.get(obs_loc).send().await.unwrap()).await;
    assert_eq!(obs["subject"]["reference"], pat_ref);

    // A broken reference fails the whole transaction; the valid entry before it is not kept.
    let broken = json!({
        "resourceType": "Bundle", "type": "transaction",
        "entry": [
            {"resource": patient("Kept"), "request": {"method": "POST", "url": "Patient"}},
            {"resource": {"resourceType": "Observation", "status": "final", "code": {"text": "x"},
                          "subject": {"reference": "urn:uuid:99999999-9999-9999-9999-999999999999"}},
             "request": {"method": "POST", "url": "Observation"}}
        ]
    });
    let before = s.dir.query_i64("SELECT count(*) FROM resource_version");
    let body = expect_outcome(s.post_json("", &broken).send().await.unwrap(), 400, "urn:uuid").await;
    assert_eq!(body["issue"][0]["expression"][0], "Bundle.entry[1]");
    assert_eq!(s.dir.query_i64("SELECT count(*) FROM resource_version"), before);
    let (_, found) = json(s.get("Patient?identifier=id-Kept").send().await.unwrap()).await;
    assert_eq!(found["total"], 0);
}

#[tokio::test]
async fn int1_batch_reports_each_entry() {
    let s = Server::start();
    let batch = json!({
        "resourceType": "Bundle", "type": "batch",
        "entry": [
            {"resource": patient("Ok"), "request": {"method": "POST", "url": "Patient"}},
            {"request": {"method": "GET", "url": "Patient/does-not-exist"}},
            {"request": {"method": "GET", "url": "Patient?identifier=id-Ok"}}
        ]
    });
    // The base URL without a trailing slash (the transaction test above uses "/fhir/").
    let resp = s
        .http
        .post(&s.base)
        .bearer_auth(&s.token)
        .header("content-type", "application/fhir+json")
        .body(batch.to_string())
        .send()
        .await
        .unwrap();
    let (st, resp) = json(resp).await;
    assert_eq!(st, 200, "{resp}");
    assert_eq!(resp["type"], "batch-response");
    assert_eq!(resp["entry"][0]["response"]["status"], "201 Created");
    assert_eq!(resp["entry"][1]["response"]["status"], "404 Not Found");
    assert_eq!(resp["entry"][1]["response"]["outcome"]["resourceType"], "OperationOutcome");
    assert_eq!(resp["entry"][2]["resource"]["total"], 1);
}
