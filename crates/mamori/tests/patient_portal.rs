//! ACL-4 over the real binary: the patient interface on its own listener. A patient account,
//! linked to one Patient, signs in there (password rules as for everyone) and sees exactly its
//! own compartment — reads, searches and their totals, includes, chains, `_has`, `$everything`,
//! history, Bundles — with psychiatric entries withheld and writes refused by default. Staff
//! credentials do not work there, patient credentials do not work on the internal listener, and
//! every access is audited with the patient account as the actor and the patient as the subject.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use serde_json::{Value, json};
use support::*;

const ACT: &str = "http://terminology.hl7.org/CodeSystem/v3-ActCode";

fn root(base: &str) -> String {
    base.trim_end_matches("/fhir").to_string()
}

async fn post(http: &reqwest::Client, url: String, body: &Value, bearer: Option<&str>) -> (u16, Value) {
    let mut r = http.post(url).json(body);
    if let Some(b) = bearer {
        r = r.bearer_auth(b);
    }
    json(r.send().await.unwrap()).await
}

/// Initial password → change → login with the new one at the interface `base`: a session.
async fn sign_in(s: &Server, base: &str, account: &str) -> String {
    let (code, out) = set_password(&s.dir, account, "Initial-Pass-9876!");
    assert_eq!(code, 0, "{out}");
    let r = root(base);
    let (st, b) =
        post(&s.http, format!("{r}/auth/login"), &json!({"account": account, "password": "Initial-Pass-9876!"}), None)
            .await;
    assert_eq!((st, b["status"].as_str()), (200, Some("password-change-required")), "{b}");
    let t = b["password_ticket"].as_str().unwrap();
    let (st, b) = post(
        &s.http,
        format!("{r}/auth/password"),
        &json!({"password_ticket": t, "new_password": "Hakone-Maple-42-River"}),
        None,
    )
    .await;
    assert_eq!(st, 200, "{b}");
    let (st, b) = post(
        &s.http,
        format!("{r}/auth/login"),
        &json!({"account": account, "password": "Hakone-Maple-42-River"}),
        None,
    )
    .await;
    assert_eq!(st, 200, "{b}");
    b["access_token"].as_str().unwrap().to_string()
}

async fn get(s: &Server, base: &str, token: &str, path: &str) -> (u16, Value) {
    json(s.http.get(format!("{base}/{path}")).bearer_auth(token).send().await.unwrap()).await
}

struct Portal {
    s: Server,
    portal: String,
    staff_token: String,
    a: String,
    b: String,
    oa: String,
    ob: String,
    psy: String,
    practitioner: String,
}

/// A server with the patient interface on, two patients' data, and the patient account alice
/// linked to Patient A.
async fn portal() -> Portal {
    let dir = DataDir::init();
    let cfg = std::fs::read_to_string(dir.path.join("mamori.toml")).unwrap();
    // Password-only logins keep the flow short (two-factor enrolment is proven in login.rs).
    let cfg = cfg.lines().filter(|l| !l.starts_with("two_factor_required")).collect::<Vec<_>>().join("\n");
    let cfg = cfg.replace("[login]\n", "[login]\ntwo_factor_required = []\n");
    std::fs::write(dir.path.join("mamori.toml"), format!("{cfg}\n[patient_portal]\nlisten = [\"127.0.0.1:0\"]\n"))
        .unwrap();
    let token = dir.user_with_token("dr.test", "physician");
    let (s, bases) = Server::start_with(dir, token.clone(), &["--dev"], 2);
    let portal = bases[1].clone();
    assert_ne!(portal, s.base, "the patient interface has a listener of its own");
    let create = |v: Value| create_resource(&s, v);
    let a = create(json!({"resourceType": "Patient", "gender": "female", "name": [{"family": "Alpha"}]})).await;
    let b = create(json!({"resourceType": "Patient", "gender": "male", "name": [{"family": "Beta"}]})).await;
    let practitioner = create(json!({"resourceType": "Practitioner", "name": [{"family": "Sato"}]})).await;
    let obs = |p: &str| {
        json!({"resourceType": "Observation", "status": "final", "code": {"text": "body weight"},
               "subject": {"reference": format!("Patient/{p}")},
               "performer": [{"reference": format!("Practitioner/{practitioner}")}]})
    };
    let oa = create(obs(&a)).await;
    let ob = create(obs(&b)).await;
    // A second version of A's observation (history).
    let mut v2 = obs(&a);
    v2["id"] = json!(oa);
    v2["status"] = json!("amended");
    let (st, _) = json(s.put_json(&format!("Observation/{oa}"), &v2).send().await.unwrap()).await;
    assert_eq!(st, 200);
    let psy = create(json!({"resourceType": "Condition", "meta": {"security": [{"system": ACT, "code": "PSY"}]},
        "code": {"text": "episode"}, "subject": {"reference": format!("Patient/{a}")}}))
    .await;
    ok(&["patient-account", "add", "--data-dir", s.dir.arg(), "alice", "--patient", &a]);
    Portal { s, portal, staff_token: token, a, b, oa, ob, psy, practitioner }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acl4_patient_sees_exactly_their_own_compartment() {
    let p = portal().await;
    let (s, base) = (&p.s, p.portal.as_str());
    let alice = sign_in(s, base, "alice").await;

    // Reads: own data yes; another patient's, withheld categories and outside data: 404.
    assert_eq!(get(s, base, &alice, &format!("Patient/{}", p.a)).await.0, 200);
    assert_eq!(get(s, base, &alice, &format!("Observation/{}", p.oa)).await.0, 200);
    assert_eq!(get(s, base, &alice, &format!("Observation/{}/_history/1", p.oa)).await.0, 200);
    for path in [
        format!("Patient/{}", p.b),
        format!("Observation/{}", p.ob),
        format!("Observation/{}/_history/1", p.ob),
        format!("Condition/{}", p.psy),
        format!("Practitioner/{}", p.practitioner),
    ] {
        let (st, body) = get(s, base, &alice, &path).await;
        assert_eq!(st, 404, "{path}: {body}");
    }

    // Search: forced into the compartment, totals included.
    let (st, b) = get(s, base, &alice, "Observation?_total=accurate").await;
    assert_eq!(st, 200, "{b}");
    assert_eq!((b["total"].as_u64(), ids(&b)), (Some(1), vec![p.oa.clone()]), "{b}");
    let (_, b) = get(s, base, &alice, &format!("Observation?subject=Patient/{}&_total=accurate", p.b)).await;
    assert_eq!(b["total"], 0, "{b}");
    let (_, b) = get(s, base, &alice, "Patient?_total=accurate").await;
    assert_eq!((b["total"].as_u64(), ids(&b)), (Some(1), vec![p.a.clone()]), "{b}");
    let (_, b) = get(s, base, &alice, "Condition?_total=accurate").await;
    assert_eq!(b["total"], 0, "psychiatric entries are withheld by default: {b}");
    // _include that would leave the compartment brings nothing; _revinclude stays inside.
    let (_, b) = get(s, base, &alice, &format!("Observation?_id={}&_include=Observation:performer", p.oa)).await;
    assert_eq!(ids(&b), vec![p.oa.clone()], "{b}");
    let (_, b) = get(s, base, &alice, "Patient?_revinclude=Observation:subject&_revinclude=Condition:subject").await;
    let mut got = ids(&b);
    got.sort();
    let mut want = vec![p.a.clone(), p.oa.clone()];
    want.sort();
    assert_eq!(got, want, "{b}");
    // Chains and _has see only the compartment too.
    let (_, b) = get(s, base, &alice, "Observation?subject:Patient.gender=male&_total=accurate").await;
    assert_eq!(b["total"], 0, "{b}");
    let (_, b) = get(s, base, &alice, "Observation?subject:Patient.gender=female&_total=accurate").await;
    assert_eq!(b["total"], 1, "{b}");
    let (_, b) = get(s, base, &alice, &format!("Patient?_has:Observation:subject:_id={}&_total=accurate", p.ob)).await;
    assert_eq!(b["total"], 0, "{b}");
    let (_, b) = get(s, base, &alice, &format!("Patient?_has:Condition:subject:_id={}&_total=accurate", p.psy)).await;
    assert_eq!(b["total"], 0, "{b}");

    // $everything: their own, nothing else.
    let (st, b) = get(s, base, &alice, &format!("Patient/{}/$everything", p.a)).await;
    assert_eq!(st, 200, "{b}");
    let all = ids(&b);
    assert!(all.contains(&p.a) && all.contains(&p.oa), "{b}");
    for other in [&p.b, &p.ob, &p.psy, &p.practitioner] {
        assert!(!all.contains(other), "{other} leaked into $everything: {b}");
    }
    let (_, b) = get(s, base, &alice, &format!("Patient/{}/$everything", p.b)).await;
    assert!(ids(&b).is_empty(), "another patient's $everything is empty: {b}");

    // History of their own resources; nothing of others'.
    let (_, b) = get(s, base, &alice, &format!("Observation/{}/_history", p.oa)).await;
    assert_eq!(b["entry"].as_array().map(Vec::len), Some(2), "{b}");
    let (_, b) = get(s, base, &alice, &format!("Observation/{}/_history", p.ob)).await;
    assert!(b["entry"].as_array().is_none_or(Vec::is_empty), "{b}");
    let (_, b) = get(s, base, &alice, "_history").await;
    let seen: Vec<&str> = b["entry"].as_array().unwrap().iter().filter_map(|e| e["resource"]["id"].as_str()).collect();
    assert!(!seen.is_empty() && seen.iter().all(|id| *id == p.a || *id == p.oa), "{b}");

    // Bundles: each entry decided on its own, the same rules.
    let batch = json!({"resourceType": "Bundle", "type": "batch", "entry": [
        {"request": {"method": "GET", "url": format!("Observation/{}", p.oa)}},
        {"request": {"method": "GET", "url": format!("Observation/{}", p.ob)}},
        {"request": {"method": "DELETE", "url": format!("Observation/{}", p.oa)}}]});
    let r = s
        .http
        .post(base)
        .bearer_auth(&alice)
        .header("content-type", "application/fhir+json")
        .body(serde_json::to_vec(&batch).unwrap())
        .send()
        .await
        .unwrap();
    let (st, b) = json(r).await;
    assert_eq!(st, 200, "{b}");
    let statuses: Vec<&str> =
        b["entry"].as_array().unwrap().iter().map(|e| e["response"]["status"].as_str().unwrap()).collect();
    assert_eq!(statuses, ["200 OK", "404 Not Found", "403 Forbidden"], "{b}");

    // Read-only by default: writes are refused, and nothing changed.
    let mine = json!({"resourceType": "Observation", "status": "final", "code": {"text": "home blood pressure"},
        "subject": {"reference": format!("Patient/{}", p.a)}});
    let r = s.http.post(format!("{base}/Observation")).bearer_auth(&alice).json(&mine).send().await.unwrap();
    assert_eq!(r.status(), 403);
    let r = s.http.delete(format!("{base}/Observation/{}", p.oa)).bearer_auth(&alice).send().await.unwrap();
    assert_eq!(r.status(), 403);
    let (_, b) = get(s, &s.base, &p.staff_token, &format!("Observation?subject=Patient/{}&_total=accurate", p.a)).await;
    assert_eq!(b["total"], 1, "{b}");

    // Audit: the patient account is the actor and the patient the subject of every access.
    let dir = p.s.stop();
    let a = &p.a;
    assert!(
        dir.audit_i64(
            "SELECT count(*) FROM audit_event WHERE actor = 'alice' AND role = 'patient' AND action = 'read' AND outcome = 200"
        ) >= 2
    );
    assert_eq!(
        dir.audit_i64(&format!(
            "SELECT count(*) FROM audit_event WHERE actor = 'alice' AND action NOT IN \
             ('login', 'login-failure', 'password-change', 'logout', 'session-evict') \
             AND instr(',' || patients || ',', ',{a},') = 0"
        )),
        0,
        "every access by alice names Patient/{a}"
    );
    assert!(
        dir.audit_i64(&format!(
            "SELECT count(*) FROM audit_event WHERE actor = 'alice' AND action = 'read' AND outcome = 404 \
             AND instr(',' || patients || ',', ',{a},') > 0"
        )) >= 4,
        "refused reads are recorded against the patient too"
    );
}

/// A password-change ticket is for the interface whose login issued it (ACL-4): presented at the
/// other interface it is as invalid as a made-up one, and it still works where it belongs.
#[tokio::test]
async fn acl4_login_tickets_work_only_at_the_interface_that_issued_them() {
    let p = portal().await;
    let (s, portal_root, staff_root) = (&p.s, root(&p.portal), root(&p.s.base));
    ok(&["user", "add", "--data-dir", s.dir.arg(), "--name", "ns.kato", "--role", "nurse"]);
    for (account, home, other) in [("alice", &portal_root, &staff_root), ("ns.kato", &staff_root, &portal_root)] {
        let (code, out) = set_password(&s.dir, account, "Initial-Pass-9876!");
        assert_eq!(code, 0, "{out}");
        let (st, b) = post(
            &s.http,
            format!("{home}/auth/login"),
            &json!({"account": account, "password": "Initial-Pass-9876!"}),
            None,
        )
        .await;
        assert_eq!((st, b["status"].as_str()), (200, Some("password-change-required")), "{b}");
        let change = json!({"password_ticket": b["password_ticket"], "new_password": "Hakone-Maple-42-River"});
        let (st, b) = post(&s.http, format!("{other}/auth/password"), &change, None).await;
        assert_eq!(st, 401, "{account}'s ticket at the other interface: {b}");
        let (st, b) = post(&s.http, format!("{home}/auth/password"), &change, None).await;
        assert_eq!(st, 200, "{account}'s ticket where it was issued: {b}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acl4_credentials_work_only_at_their_own_interface() {
    let p = portal().await;
    let (s, base) = (&p.s, p.portal.as_str());
    ok(&["user", "add", "--data-dir", s.dir.arg(), "--name", "ns.kato", "--role", "nurse"]);
    let alice = sign_in(s, base, "alice").await;
    let nurse = sign_in(s, &s.base, "ns.kato").await;
    let own = format!("Patient/{}", p.a);

    // Staff credentials (API token, session) are refused at the patient interface…
    assert_eq!(get(s, base, &p.staff_token, &own).await.0, 401);
    assert_eq!(get(s, base, &nurse, &own).await.0, 401);
    // …and the patient's session at the internal one.
    assert_eq!(get(s, &s.base, &alice, &own).await.0, 401);
    assert_eq!(get(s, &s.base, &nurse, &own).await.0, 200);
    assert_eq!(get(s, base, &alice, &own).await.0, 200);
    // Logins too: patients at the patient interface only, staff never there.
    let (st, _) = post(
        &s.http,
        format!("{}/auth/login", root(&s.base)),
        &json!({"account": "alice", "password": "Hakone-Maple-42-River"}),
        None,
    )
    .await;
    assert_eq!(st, 401);
    let (st, _) = post(
        &s.http,
        format!("{}/auth/login", root(base)),
        &json!({"account": "ns.kato", "password": "Hakone-Maple-42-River"}),
        None,
    )
    .await;
    assert_eq!(st, 401);
    // No administration at the patient interface.
    let r = s.http.get(format!("{}/admin/status", root(base))).bearer_auth(&p.staff_token).send().await.unwrap();
    assert_eq!(r.status(), 404);
    // Patient accounts come only from `patient-account add`, get no API tokens, and never
    // change into staff accounts.
    let (code, _, err) = mamori(&["token", "create", "--data-dir", s.dir.arg(), "--user", "alice"]);
    assert!(code != 0 && err.contains("patient"), "{err}");
    let (code, _, err) = mamori(&["user", "add", "--data-dir", s.dir.arg(), "--name", "bob", "--role", "patient"]);
    assert!(code != 0 && err.contains("patient-account add"), "{err}");
    let (code, _, err) =
        mamori(&["patient-account", "add", "--data-dir", s.dir.arg(), "bob", "--patient", "no-such-patient"]);
    assert!(code != 0 && err.contains("Patient/no-such-patient"), "{err}");
    let (code, _, err) =
        mamori(&["user", "request-role", "--data-dir", s.dir.arg(), "alice", "physician", "--reason", "promotion"]);
    assert!(code != 0 && err.contains("separate"), "{err}");
    // The review report lists the patient account with its Patient.
    let report = ok(&["user", "report", "--data-dir", s.dir.arg()]);
    let rows: Value = serde_json::from_str(&report).unwrap();
    let row = rows["accounts"].as_array().unwrap().iter().find(|r| r["name"] == "alice").unwrap();
    assert_eq!((row["role"].as_str(), row["patient"].as_str()), (Some("patient"), Some(p.a.as_str())), "{row}");

    let dir = p.s.stop();
    assert!(
        dir.audit_i64(
            "SELECT count(*) FROM audit_event WHERE actor = 'dr.test' AND action = 'refused' AND outcome = 401 \
             AND detail LIKE 'login: staff credentials%'"
        ) >= 1,
        "the refused staff credential is audited with its actor"
    );
    assert!(
        dir.audit_i64("SELECT count(*) FROM audit_event WHERE action = 'login-failure' AND detail = 'wrong-interface'")
            >= 2
    );
}

#[test]
fn acl4_patient_policy_is_validated_at_start_up() {
    let dir = DataDir::init();
    let cfg = dir.path.join("mamori.toml");
    let base = std::fs::read_to_string(&cfg).unwrap();
    for (extra, needle) in [
        ("[policy.patient]\noperations = [\"export\"]\n", "patient.operations"),
        ("[policy.patient]\noperations = [\"create\"]\n", "must include view"),
        ("[policy.patient]\nhidden_categories = [\"astrology\"]\n", "unknown category"),
        (
            "[[policy.grant]]\njobs = [\"patient\"]\noperations = [\"view\"]\ncategories = [\"general\"]\nzones = [\"his\"]\n",
            "patients get no grants",
        ),
        ("[patient_portal]\nlisten = [\"127.0.0.1:8443\"]\n", "both server.listen and patient_portal.listen"),
    ] {
        std::fs::write(&cfg, format!("{base}\n{extra}")).unwrap();
        let (code, _, err) = mamori(&["serve", "--data-dir", dir.arg(), "--listen", "127.0.0.1:0", "--dev"]);
        assert_ne!(code, 0, "{extra}");
        assert!(err.contains(needle), "{extra}: {err}");
    }
}
