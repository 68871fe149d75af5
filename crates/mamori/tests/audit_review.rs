//! AUD-4: the review views, checked against a fixture of known accesses whose expected counts are
//! worked out by hand below. ACL-5: only auditors may review, and reviewing is itself audited.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use serde_json::{Value, json};
use support::*;

async fn get_as(s: &Server, token: &str, path: &str) -> (u16, Value) {
    let url = format!("{}/{}", s.base.trim_end_matches("/fhir"), path.trim_start_matches('/'));
    json(s.http.get(url).bearer_auth(token).send().await.unwrap()).await
}

async fn read_as(s: &Server, token: &str, path: &str) {
    let resp = s.http.get(s.url(path)).bearer_auth(token).send().await.unwrap();
    assert_eq!(resp.status(), 200, "{path}");
}

#[tokio::test]
async fn aud4_review_views_match_a_fixture_of_known_accesses() {
    let s = Server::start(); // physician dr.test
    let dr_b = s.dir.user_with_token("dr.b", "physician");
    let auditor = s.dir.user_with_token("audit.a", "auditor");

    // The fixture. Accesses per patient, by account:
    let (_, p1) = json(s.post_json("Patient", &json!({"resourceType": "Patient"})).send().await.unwrap()).await;
    let (_, p2) = json(s.post_json("Patient", &json!({"resourceType": "Patient"})).send().await.unwrap()).await;
    let (p1, p2) = (p1["id"].as_str().unwrap().to_string(), p2["id"].as_str().unwrap().to_string());
    //   creates:                               P1 dr.test 1, P2 dr.test 1
    let obs = json!({"resourceType": "Observation", "status": "final", "code": {"text": "BP"},
        "subject": {"reference": format!("Patient/{p1}")}});
    let (_, o1) = json(s.post_json("Observation", &obs).send().await.unwrap()).await;
    let o1 = o1["id"].as_str().unwrap().to_string();
    //   observation about P1 created:          P1 dr.test 2
    read_as(&s, &s.token, &format!("Patient/{p1}")).await;
    read_as(&s, &s.token, &format!("Patient/{p1}")).await;
    //   two reads of P1:                       P1 dr.test 4
    read_as(&s, &dr_b, &format!("Patient/{p1}")).await;
    read_as(&s, &dr_b, &format!("Observation/{o1}")).await;
    read_as(&s, &dr_b, &format!("Patient/{p2}")).await;
    //   dr.b: P1 twice, P2 once:               P1 dr.b 2, P2 dr.b 1
    read_as(&s, &s.token, &format!("Patient?_id={p1},{p2}")).await;
    //   one search disclosing both:            P1 dr.test 5, P2 dr.test 2
    s.get("Patient/no-such-patient").send().await.unwrap(); // names no patient
    // Expected: P1 = 7 (dr.test 5, dr.b 2), P2 = 3 (dr.test 2, dr.b 1).

    let (status, counts) = get_as(&s, &auditor, "admin/audit/patient-counts").await;
    assert_eq!(status, 200, "{counts}");
    assert_eq!(
        counts["patients"],
        json!([
            {"patient": p1, "accesses": 7, "by_account": [["dr.test", 5], ["dr.b", 2]]},
            {"patient": p2, "accesses": 3, "by_account": [["dr.test", 2], ["dr.b", 1]]},
        ])
    );

    // Who accessed P2, in time order.
    let (_, who) = get_as(&s, &auditor, &format!("admin/audit/patients/{p2}")).await;
    let seen: Vec<(String, String)> = who["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["actor"].as_str().unwrap().to_string(), e["action"].as_str().unwrap().to_string()))
        .collect();
    let pairs = [("dr.test", "create"), ("dr.b", "read"), ("dr.test", "search-type")];
    assert_eq!(seen, pairs.map(|(a, b)| (a.to_string(), b.to_string())));

    // Everything dr.b did, in order.
    let (_, mine) = get_as(&s, &auditor, "admin/audit/accounts/dr.b").await;
    let rids: Vec<&str> = mine["entries"].as_array().unwrap().iter().map(|e| e["rid"].as_str().unwrap()).collect();
    assert_eq!(rids, [p1.as_str(), o1.as_str(), p2.as_str()]);

    // A period that ends before the fixture shows nothing.
    let (_, empty) = get_as(&s, &auditor, "admin/audit/patient-counts?to=2000-01-01").await;
    assert_eq!(empty["patients"], json!([]));

    // Both physicians touched two distinct patients within the hour (if the fixture did not
    // straddle an hour boundary, which the entries' own times tell).
    let (_, flags) = get_as(&s, &auditor, "admin/audit/anomalies?max_patients_per_hour=1").await;
    let times: Vec<i64> =
        who["entries"].as_array().unwrap().iter().map(|e| e["recorded_us"].as_i64().unwrap()).collect();
    if times.first().unwrap() / 3_600_000_000 == times.last().unwrap() / 3_600_000_000 {
        let flagged: Vec<&str> =
            flags["flags"].as_array().unwrap().iter().map(|f| f["account"].as_str().unwrap()).collect();
        assert_eq!(flagged, ["dr.b", "dr.test"]);
    }
    let (_, none) = get_as(&s, &auditor, "admin/audit/anomalies?max_patients_per_hour=2").await;
    assert_eq!(none["flags"], json!([]));

    // Outside working hours: pick the UTC offset that makes "now" local noon, then a window
    // around noon flags nothing and an afternoon window flags every access to a patient (9).
    let now_min = (who["entries"][0]["recorded_us"].as_i64().unwrap() / 60_000_000).rem_euclid(1440);
    let mut offset = 720 - now_min;
    if offset > 720 {
        offset -= 1440;
    }
    if offset <= -720 {
        offset += 1440;
    }
    let sign = if offset < 0 { "-" } else { "%2B" };
    let off = format!("{sign}{:02}:{:02}", offset.abs() / 60, offset.abs() % 60);
    let (_, inside) =
        get_as(&s, &auditor, &format!("admin/audit/outside-hours?hours=09:00-15:00&utc_offset={off}")).await;
    assert_eq!(inside["entries"], json!([]), "{off}");
    let (_, outside) =
        get_as(&s, &auditor, &format!("admin/audit/outside-hours?hours=15:00-18:00&utc_offset={off}")).await;
    assert_eq!(outside["entries"].as_array().map(Vec::len), Some(9), "{outside}");

    // ACL-5: physicians and administrators may not review; every review is audited.
    let (status, _) = get_as(&s, &s.token, "admin/audit/patient-counts").await;
    assert_eq!(status, 403);
    let admin = s.dir.user_with_token("it.admin", "administrator");
    let (status, _) = get_as(&s, &admin, &format!("admin/audit/patients/{p1}")).await;
    assert_eq!(status, 403);
    let reviews =
        s.dir.audit_i64("SELECT count(*) FROM audit_event WHERE action = 'audit-review' AND actor = 'audit.a'");
    assert_eq!(reviews, 8, "reviews before the FHIR view");
    let (status, _) = get_as(&s, &auditor, "admin/audit/patient-counts?colour=blue").await;
    assert_eq!(status, 400);

    // AUD-3: the status endpoint reports the clock's synchronisation and the trail's coverage.
    let (status, st) = get_as(&s, &auditor, "admin/status").await;
    assert_eq!(status, 200, "{st}");
    assert!(st["clock"]["ntp"].as_str().is_some_and(|n| !n.is_empty() && n != "not checked"), "{st}");
    assert!(st["audit"]["entries"].as_i64().unwrap() > 20, "{st}");
    assert!(st["audit"]["covered_by_checkpoints"].as_i64().is_some(), "{st}");
    let (status, _) = get_as(&s, &s.token, "admin/status").await;
    assert_eq!(status, 403, "physicians get no operational data by default");

    // AUD-5: the trail as FHIR AuditEvent (IHE BALP shape), for auditors.
    let (status, events) = get_as(&s, &auditor, &format!("fhir/AuditEvent?patient=Patient/{p2}")).await;
    assert_eq!(status, 200, "{events}");
    let entries = events["entry"].as_array().unwrap();
    assert_eq!(entries.len(), 3, "create, dr.b's read, the search: {events}");
    let read_by_b = &entries[1]["resource"];
    assert_eq!(read_by_b["resourceType"], "AuditEvent");
    assert_eq!(read_by_b["action"], "R");
    assert_eq!(read_by_b["outcome"], "0");
    assert_eq!(read_by_b["subtype"][0]["code"], "read");
    assert_eq!(read_by_b["agent"][0]["who"]["identifier"]["value"], "dr.b");
    let refs: Vec<&str> =
        read_by_b["entity"].as_array().unwrap().iter().filter_map(|e| e["what"]["reference"].as_str()).collect();
    assert!(refs.contains(&format!("Patient/{p2}").as_str()), "{refs:?}");
    let id = read_by_b["id"].as_str().unwrap();
    let (status, one) = get_as(&s, &auditor, &format!("fhir/AuditEvent/{id}")).await;
    assert_eq!((status, &one), (200, read_by_b));
    let (_, creates) = get_as(&s, &auditor, "fhir/AuditEvent?action=C&agent=dr.test").await;
    assert_eq!(creates["entry"].as_array().unwrap().len(), 3, "P1, P2, O1");
    let (_, none) = get_as(&s, &auditor, "fhir/AuditEvent?date=lt2000-01-01").await;
    assert!(none.get("entry").is_none());
    let (status, _) = get_as(&s, &auditor, "fhir/AuditEvent?colour=blue").await;
    assert_eq!(status, 400);
    let (status, _) = get_as(&s, &s.token, "fhir/AuditEvent").await;
    assert_eq!(status, 403, "physicians do not read the trail");
    let forged = s
        .post_json("AuditEvent", &json!({"resourceType": "AuditEvent", "type": {"code": "rest"}, "recorded": "2026-01-01T00:00:00Z", "agent": [{"requestor": true}], "source": {"observer": {"display": "x"}}}))
        .send()
        .await
        .unwrap();
    expect_outcome(forged, 405, "read-only").await;

    // The same view from the operator CLI, offline from the HTTP API.
    let dir = s.stop();
    let out = ok(&["audit", "review", "--data-dir", dir.arg(), "--counts"]);
    let cli: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(cli["patients"][0]["accesses"], 7);
}

/// AUD-4: every access to a patient flagged VIP (CELEB) or staff (EMP) is listed with its flag;
/// accesses to other patients are not; the flag follows the record (removing the label ends it).
#[tokio::test]
async fn aud4_accesses_to_vip_and_staff_patients_are_flagged() {
    let s = Server::start();
    let dr_b = s.dir.user_with_token("dr.b", "physician");
    let auditor = s.dir.user_with_token("audit.a", "auditor");
    let label = |code: &str| json!({"security": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": code}]});
    let mut ids = Vec::new();
    for meta in [Some(label("CELEB")), Some(label("EMP")), None] {
        let mut p = json!({"resourceType": "Patient"});
        if let Some(m) = meta {
            p["meta"] = m;
        }
        let (status, body) = json(s.post_json("Patient", &p).send().await.unwrap()).await;
        assert_eq!(status, 201);
        ids.push(body["id"].as_str().unwrap().to_string());
    }
    let (vip, staff, plain) = (&ids[0], &ids[1], &ids[2]);
    read_as(&s, &dr_b, &format!("Patient/{vip}")).await;
    read_as(&s, &dr_b, &format!("Patient/{vip}")).await;
    read_as(&s, &dr_b, &format!("Patient/{staff}")).await;
    read_as(&s, &dr_b, &format!("Patient/{plain}")).await;
    // Expected: creates (dr.test) of vip and staff, dr.b's two reads of vip and one of staff.
    let (status, body) = get_as(&s, &auditor, "admin/audit/flagged").await;
    assert_eq!(status, 200, "{body}");
    let rows: Vec<(String, String, String)> = body["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["actor"].as_str().unwrap().to_string(),
                e["action"].as_str().unwrap().to_string(),
                e["flagged"][0]["flag"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let expected: Vec<(String, String, String)> = [
        ("dr.test", "create", "vip"),
        ("dr.test", "create", "staff"),
        ("dr.b", "read", "vip"),
        ("dr.b", "read", "vip"),
        ("dr.b", "read", "staff"),
    ]
    .iter()
    .map(|(a, b, c)| (a.to_string(), b.to_string(), c.to_string()))
    .collect();
    assert_eq!(rows, expected);
    assert_eq!(body["by_account"], json!({"dr.b": 3, "dr.test": 2}));
    assert!(!body.to_string().contains(plain.as_str()), "unflagged patients are not listed");
    // Physicians may not review (ACL-5).
    let (status, _) = get_as(&s, &dr_b, "admin/audit/flagged").await;
    assert_eq!(status, 403);
    // Removing the label ends the flag for later reviews.
    let (status, _) = json(
        s.put_json(&format!("Patient/{staff}"), &json!({"resourceType": "Patient", "id": staff})).send().await.unwrap(),
    )
    .await;
    assert_eq!(status, 200);
    let (_, body) = get_as(&s, &auditor, "admin/audit/flagged").await;
    assert!(body["entries"].as_array().unwrap().iter().all(|e| e["flagged"][0]["flag"] == "vip"));
}

/// AUD-4: break-glass (emergency purpose) accesses are listed with their stated reason, and only
/// those.
#[tokio::test]
async fn aud4_break_glass_accesses_are_listed_with_their_reason() {
    let s = Server::start();
    let auditor = s.dir.user_with_token("audit.a", "auditor");
    let (_, p) = json(s.post_json("Patient", &json!({"resourceType": "Patient"})).send().await.unwrap()).await;
    let path = format!("Patient/{}", p["id"].as_str().unwrap());
    read_as(&s, &s.token, &path).await;
    let r = s
        .http
        .get(s.url(&path))
        .bearer_auth(&s.token)
        .header("x-mamori-purpose", "emergency")
        .header("x-mamori-reason", "unconscious in ER")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let (status, body) = get_as(&s, &auditor, "admin/audit/emergency").await;
    assert_eq!(status, 200, "{body}");
    let entries = body["entries"].as_array().unwrap();
    assert_eq!(entries.len(), 1, "only the break-glass read: {body}");
    assert_eq!(entries[0]["action"], "read");
    assert_eq!(entries[0]["actor"], "dr.test");
    assert!(entries[0]["detail"].as_str().unwrap().contains("emergency: unconscious in ER"));
}
