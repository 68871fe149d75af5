//! ACL-1..3, ACL-5 over the real server: an authorisation matrix generated from the built-in
//! default policy — every job type × zone × information category × operation that has an HTTP
//! interaction — asserting permit or deny, and for categories hidden from a zone that reads,
//! searches (results and totals), `_include`, `_revinclude`, history and `$everything` show
//! nothing of them.
//!
//! Zones are simulated by mapping the loopback address the tests connect from into each zone in
//! turn (one server start per zone, same data directory). Expectations come from
//! `Policy::decide` (the policy's own answer); enforcement is the store's SQL filters and write
//! checks, so the test proves the two agree.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::collections::HashMap;

use mamori_access::{Decision, Operation, Policy, Principal, Purpose, Role};
use serde_json::{Value, json};
use support::{DataDir, Server, json};

const ACT: &str = "http://terminology.hl7.org/CodeSystem/v3-ActCode";

/// One fixture resource per category of the default policy (every one in the compartment of the
/// patient `pid`, except the Patient itself, which is the administrative one).
fn fixture(category: &str, pid: &str) -> Value {
    let subject = json!({"reference": format!("Patient/{pid}")});
    match category {
        "general" => json!({"resourceType": "Observation", "status": "final",
            "code": {"text": "body weight"}, "subject": subject}),
        "psychiatric" => json!({"resourceType": "Condition",
            "meta": {"security": [{"system": ACT, "code": "PSY"}]},
            "code": {"text": "episode"}, "subject": subject}),
        "infectious" => json!({"resourceType": "Condition",
            "code": {"coding": [{"system": "http://hl7.org/fhir/sid/icd-10", "code": "B20"}]}, "subject": subject}),
        "genetic" => json!({"resourceType": "Observation", "status": "final",
            "meta": {"security": [{"system": ACT, "code": "GDIS"}]},
            "code": {"text": "variant"}, "subject": subject}),
        "billing" => json!({"resourceType": "Claim", "status": "active",
            "type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/claim-type", "code": "professional"}]},
            "use": "claim", "patient": subject, "created": "2026-01-05",
            "provider": {"display": "clinic"},
            "priority": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/processpriority", "code": "normal"}]},
            "insurance": [{"sequence": 1, "focal": true, "coverage": {"display": "national health insurance"}}]}),
        "administrative" => json!({"resourceType": "Patient", "name": [{"family": "Kanja"}]}),
        other => panic!("no fixture for {other}"),
    }
}

/// A query that would bring the fixture of `category` in through `_include`/`_revinclude`.
fn include_query(category: &str, pid: &str, general_id: &str) -> String {
    match category {
        "administrative" => format!("Observation?_id={general_id}&_include=Observation:subject"),
        "general" | "genetic" => format!("Patient?_id={pid}&_revinclude=Observation:subject"),
        "psychiatric" | "infectious" => format!("Patient?_id={pid}&_revinclude=Condition:subject"),
        "billing" => format!("Patient?_id={pid}&_revinclude=Claim:patient"),
        other => panic!("{other}"),
    }
}

fn policy_toml(loopback_zone: &str, setup: bool) -> String {
    let mut s = String::from("\n");
    for z in ["his", "vpn", "internet"] {
        let addrs = if z == loopback_zone { "[\"127.0.0.0/8\", \"::1/128\"]" } else { "[]" };
        s.push_str(&format!("[[policy.zone]]\nname = \"{z}\"\naddresses = {addrs}\n"));
    }
    if setup {
        // Setting up the fixtures needs every right once; the matrix runs use the default grants.
        s.push_str(
            "[[policy.grant]]\njobs = [\"physician\"]\n\
             operations = [\"view\", \"create\", \"update\", \"delete\"]\n\
             categories = [\"general\", \"psychiatric\", \"infectious\", \"genetic\", \"billing\", \"administrative\"]\n\
             zones = [\"his\"]\n",
        );
    }
    s
}

struct Fixtures {
    pid: String,
    /// category → (type, id, body as created)
    one: HashMap<String, (String, String, Value)>,
    /// (zone, job, category) → (type, id) of a resource to try deleting
    victims: HashMap<(String, String, String), (String, String)>,
}

fn start(dir: DataDir, base_cfg: &str, zone: &str, setup: bool) -> Server {
    std::fs::write(dir.path.join("mamori.toml"), format!("{base_cfg}{}", policy_toml(zone, setup))).unwrap();
    Server::start_in(dir, String::new())
}

async fn req(s: &Server, token: &str, method: reqwest::Method, path: &str, body: Option<&Value>) -> (u16, Value) {
    let mut r = s.http.request(method, s.url(path)).bearer_auth(token);
    if let Some(b) = body {
        r = r.header("content-type", "application/fhir+json").body(serde_json::to_vec(b).unwrap());
    }
    json(r.send().await.unwrap()).await
}

fn ids_in(bundle: &Value) -> Vec<String> {
    bundle["entry"]
        .as_array()
        .map(|es| {
            es.iter()
                .filter_map(|e| e["resource"]["id"].as_str().or_else(|| e["fullUrl"].as_str()).map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

const CATEGORIES: [&str; 6] = ["general", "psychiatric", "infectious", "genetic", "billing", "administrative"];
const ZONES: [&str; 3] = ["his", "vpn", "internet"];

async fn setup(s: &Server, token: &str) -> Fixtures {
    let post = |v: Value| async move {
        let t = v["resourceType"].as_str().unwrap().to_string();
        let (st, created) = req(s, token, reqwest::Method::POST, &t, Some(&v)).await;
        assert_eq!(st, 201, "setup create {t}: {created}");
        (t, created["id"].as_str().unwrap().to_string(), created)
    };
    let (_, pid, p) = post(fixture("administrative", "x")).await;
    let mut one = HashMap::new();
    one.insert("administrative".to_string(), ("Patient".to_string(), pid.clone(), p));
    for c in CATEGORIES.iter().filter(|c| **c != "administrative") {
        one.insert(c.to_string(), post(fixture(c, &pid)).await);
    }
    let mut victims = HashMap::new();
    for z in ZONES {
        for job in Role::ALL {
            for c in CATEGORIES {
                let (t, id, _) = post(fixture(c, &pid)).await;
                victims.insert((z.to_string(), job.as_str().to_string(), c.to_string()), (t, id));
            }
        }
    }
    Fixtures { pid, one, victims }
}

#[tokio::test]
async fn acl2_acl3_acl5_authorisation_matrix_from_the_default_policy() {
    let policy = Policy::builtin().unwrap();
    let dir = DataDir::init();
    let base_cfg = std::fs::read_to_string(dir.path.join("mamori.toml")).unwrap();
    let mut tokens: HashMap<Role, String> = HashMap::new();
    // Staff job types: patients have no grants and use the patient interface (patient_portal.rs).
    for job in Role::ALL.into_iter().filter(|r| r.is_staff()) {
        tokens.insert(job, dir.user_with_token(&format!("{}.one", job.as_str()), job.as_str()));
    }
    let s = start(dir, &base_cfg, "his", true);
    let fx = setup(&s, &tokens[&Role::Physician]).await;
    let mut dir = s.stop();

    let mut failures: Vec<String> = Vec::new();
    let mut checked = 0usize;
    let mut must_survive: Vec<(String, String)> = Vec::new();
    let mut by_status: std::collections::BTreeMap<u16, usize> = Default::default();
    macro_rules! check {
        ($what:expr, $got:expr, $want:expr) => {{
            checked += 1;
            *by_status.entry($want).or_default() += 1;
            let (got, want): (u16, u16) = ($got, $want);
            if got != want {
                failures.push(format!("{}: got {got}, want {want}", $what));
            }
        }};
    }
    let mut leaks: Vec<String> = Vec::new();

    for zone_name in ZONES {
        let s = start(dir, &base_cfg, zone_name, false);
        let zone = policy.zone_named(zone_name).unwrap();
        for job in Role::ALL.into_iter().filter(|r| r.is_staff()) {
            let token = &tokens[&job];
            let who = Principal { account: "x".into(), role: job };
            let rights = std::sync::Arc::new(policy.clone()).rights(&who, zone, Purpose::Treatment);
            let can = |op: Operation, c: &str| {
                policy.decide(&who, op, policy.category_named(c).unwrap(), zone, Purpose::Treatment) == Decision::Permit
            };
            let any_view = rights.any(Operation::View);
            let at = |c: &str, what: &str| format!("{zone_name} × {job} × {c} × {what}");
            // Resources of categories this job may not view from this zone: must never show.
            let hidden_ids: Vec<&str> =
                CATEGORIES.iter().filter(|c| !can(Operation::View, c)).map(|c| fx.one[*c].1.as_str()).collect();
            for c in CATEGORIES {
                let (t, id, body) = &fx.one[c];
                let view = can(Operation::View, c);
                // Reads: 200, or 404 (invisible) when the job sees something here, else 403.
                let denied = if any_view { 404 } else { 403 };
                let want = if view { 200 } else { denied };
                let (st, _) = req(&s, token, reqwest::Method::GET, &format!("{t}/{id}"), None).await;
                check!(at(c, "read"), st, want);
                let (st, _) = req(&s, token, reqwest::Method::GET, &format!("{t}/{id}/_history/1"), None).await;
                check!(at(c, "vread"), st, want);
                let (st, _) = req(&s, token, reqwest::Method::GET, &format!("{t}/{id}/_history"), None).await;
                check!(at(c, "history-instance"), st, want);
                // Search: results and totals.
                let (st, b) =
                    req(&s, token, reqwest::Method::GET, &format!("{t}?_id={id}&_total=accurate"), None).await;
                check!(at(c, "search"), st, if any_view { 200 } else { 403 });
                if any_view {
                    let want_total = u64::from(view);
                    if b["total"].as_u64() != Some(want_total) || ids_in(&b).len() as u64 != want_total {
                        failures.push(format!(
                            "{}: total {} entries {:?}",
                            at(c, "search total"),
                            b["total"],
                            ids_in(&b)
                        ));
                    }
                    let (_, b) =
                        req(&s, token, reqwest::Method::GET, &format!("{t}?_id={id}&_summary=count"), None).await;
                    if b["total"].as_u64() != Some(want_total) {
                        failures.push(format!("{}: {}", at(c, "_summary=count"), b["total"]));
                    }
                }
                // Includes never bring in what may not be viewed.
                if any_view && !view {
                    let q = include_query(c, &fx.pid, &fx.one["general"].1);
                    let (_, b) = req(&s, token, reqwest::Method::GET, &q, None).await;
                    if ids_in(&b).iter().any(|x| x == id) {
                        leaks.push(format!("{}: {q}", at(c, "include")));
                    }
                    let (_, b) = req(&s, token, reqwest::Method::GET, &format!("{t}/_history"), None).await;
                    if ids_in(&b).iter().any(|x| x == id) {
                        leaks.push(at(c, "history-type"));
                    }
                }
                // Create: a new resource of the category.
                let (st, _) = req(&s, token, reqwest::Method::POST, t, Some(&fixture(c, &fx.pid))).await;
                check!(at(c, "create"), st, if can(Operation::Create, c) { 201 } else { 403 });
                // Update the fixture with its own content.
                let want = if !rights.any(Operation::Update) {
                    403
                } else if !view {
                    404
                } else if !can(Operation::Update, c) {
                    403
                } else {
                    200
                };
                let (st, _) = req(&s, token, reqwest::Method::PUT, &format!("{t}/{id}"), Some(body)).await;
                check!(at(c, "update"), st, want);
                // Delete this (zone, job, category)'s victim. An invisible resource is, to the
                // caller, absent: the delete answers as for a missing one and changes nothing.
                let (vt, vid) = &fx.victims[&(zone_name.to_string(), job.as_str().to_string(), c.to_string())];
                let want = if !rights.any(Operation::Delete) {
                    403
                } else if !view {
                    204
                } else if !can(Operation::Delete, c) {
                    403
                } else {
                    204
                };
                if want != 204 || !view {
                    must_survive.push((vt.clone(), vid.clone()));
                }
                let (st, _) = req(&s, token, reqwest::Method::DELETE, &format!("{vt}/{vid}"), None).await;
                check!(at(c, "delete"), st, want);
            }
            if any_view {
                // System history and $everything show nothing of the hidden categories.
                let (st, b) = req(&s, token, reqwest::Method::GET, "_history?_count=1000", None).await;
                check!(format!("{zone_name} × {job} × history-system"), st, 200);
                let (st2, e) =
                    req(&s, token, reqwest::Method::GET, &format!("Patient/{}/$everything?_count=1000", fx.pid), None)
                        .await;
                check!(format!("{zone_name} × {job} × $everything"), st2, 200);
                for h in &hidden_ids {
                    if ids_in(&b).iter().any(|x| x == h) {
                        leaks.push(format!("{zone_name} × {job}: {h} in system history"));
                    }
                    if ids_in(&e).iter().any(|x| x == h) {
                        leaks.push(format!("{zone_name} × {job}: {h} in $everything"));
                    }
                }
                for c in CATEGORIES.iter().filter(|c| can(Operation::View, c) && **c != "administrative") {
                    if !ids_in(&e).contains(&fx.one[*c].1) {
                        failures.push(format!("{zone_name} × {job}: visible {c} missing from $everything"));
                    }
                }
            }
        }
        dir = s.stop();
    }
    // Refused and invisible deletes changed nothing.
    let s = start(dir, &base_cfg, "his", true);
    for (t, id) in &must_survive {
        let (st, _) = req(&s, &tokens[&Role::Physician], reqwest::Method::GET, &format!("{t}/{id}"), None).await;
        if st != 200 {
            failures.push(format!("{t}/{id} should have survived a refused delete, read gives {st}"));
        }
    }
    eprintln!("matrix: {checked} checks, expected statuses {by_status:?}, {} survivors checked", must_survive.len());
    assert!(leaks.is_empty(), "hidden resources leaked:\n{}", leaks.join("\n"));
    assert!(failures.is_empty(), "{} of {checked} checks failed:\n{}", failures.len(), failures.join("\n"));
    assert!(checked > 3 * 7 * 6 * 7, "the matrix ran ({checked} checks)");
}

#[tokio::test]
async fn acl3_same_account_sees_different_categories_per_zone() {
    let dir = DataDir::init();
    let base_cfg = std::fs::read_to_string(dir.path.join("mamori.toml")).unwrap();
    let token = dir.user_with_token("dr.zone", "physician");
    let s = start(dir, &base_cfg, "his", false);
    let (_, p) = req(&s, &token, reqwest::Method::POST, "Patient", Some(&fixture("administrative", "x"))).await;
    let pid = p["id"].as_str().unwrap().to_string();
    let (st, c) = req(&s, &token, reqwest::Method::POST, "Condition", Some(&fixture("psychiatric", &pid))).await;
    assert_eq!(st, 201);
    let cid = c["id"].as_str().unwrap().to_string();
    assert_eq!(req(&s, &token, reqwest::Method::GET, &format!("Condition/{cid}"), None).await.0, 200);
    let (_, b) = req(
        &s,
        &token,
        reqwest::Method::GET,
        &format!("Patient?_has:Condition:subject:_id={cid}&_total=accurate"),
        None,
    )
    .await;
    assert_eq!(b["total"], 1, "the _has query works where the record is visible: {b}");
    let dir = s.stop();
    // From the internet the same physician's psychiatric record does not exist.
    let s = start(dir, &base_cfg, "internet", false);
    let (st, body) = req(&s, &token, reqwest::Method::GET, &format!("Condition/{cid}"), None).await;
    assert_eq!(st, 404, "{body}");
    let (_, missing) = req(&s, &token, reqwest::Method::GET, "Condition/no-such-id", None).await;
    assert_eq!(body["issue"][0]["code"], missing["issue"][0]["code"], "indistinguishable from a missing id");
    let (_, b) = req(&s, &token, reqwest::Method::GET, "Condition?_total=accurate", None).await;
    assert_eq!(b["total"], 0);
    // _has through the hidden record matches nothing (its existence would otherwise show).
    let (_, b) = req(
        &s,
        &token,
        reqwest::Method::GET,
        &format!("Patient?_has:Condition:subject:_id={cid}&_total=accurate"),
        None,
    )
    .await;
    assert_eq!(b["total"], 0, "{b}");
    // …while the patient's general data is there.
    assert_eq!(req(&s, &token, reqwest::Method::GET, &format!("Patient/{pid}"), None).await.0, 200);
    let dir = s.stop();
    // The audit trail records why the read answered 404.
    assert_eq!(
        dir.audit_i64(
            "SELECT count(*) FROM audit_event WHERE action = 'read' AND outcome = 404 AND detail = 'hidden-by-policy'"
        ),
        1
    );
}

#[tokio::test]
async fn acl2_break_glass_needs_a_reason_and_is_audited() {
    let dir = DataDir::init();
    let base_cfg = std::fs::read_to_string(dir.path.join("mamori.toml")).unwrap();
    let dr = dir.user_with_token("dr.bg", "physician");
    let nurse = dir.user_with_token("ns.bg", "nurse");
    let s = start(dir, &base_cfg, "his", false);
    let (_, p) = req(&s, &dr, reqwest::Method::POST, "Patient", Some(&fixture("administrative", "x"))).await;
    let pid = p["id"].as_str().unwrap().to_string();
    let (_, g) = req(&s, &dr, reqwest::Method::POST, "Observation", Some(&fixture("genetic", &pid))).await;
    let path = format!("Observation/{}", g["id"].as_str().unwrap());
    // A nurse does not see genetic data for treatment…
    assert_eq!(req(&s, &nurse, reqwest::Method::GET, &path, None).await.0, 404);
    // …nor can probe it with a conditional update: If-Match gets the answer of a missing one.
    let r = s
        .http
        .put(s.url(&path))
        .bearer_auth(&nurse)
        .header("content-type", "application/fhir+json")
        .header("if-match", "W/\"7\"")
        .body(serde_json::to_vec(&g).unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    // …break-glass needs a reason…
    let r = s.http.get(s.url(&path)).bearer_auth(&nurse).header("x-mamori-purpose", "emergency").send().await.unwrap();
    assert_eq!(r.status(), 400);
    let r = s.http.get(s.url(&path)).bearer_auth(&nurse).header("x-mamori-purpose", "curiosity").send().await.unwrap();
    assert_eq!(r.status(), 400);
    // …and with one it opens, flagged in the audit trail.
    let r = s
        .http
        .get(s.url(&path))
        .bearer_auth(&nurse)
        .header("x-mamori-purpose", "emergency")
        .header("x-mamori-reason", "unconscious patient in ER")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // Break-glass grants views, not deletion.
    let r = s
        .http
        .delete(s.url(&path))
        .bearer_auth(&nurse)
        .header("x-mamori-purpose", "emergency")
        .header("x-mamori-reason", "unconscious patient in ER")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let dir = s.stop();
    assert_eq!(
        dir.audit_i64(
            "SELECT count(*) FROM audit_event WHERE actor = 'ns.bg' AND action = 'read' AND outcome = 200 \
             AND detail LIKE '%emergency: unconscious patient in ER%'"
        ),
        1
    );
}

#[test]
fn acl1_server_refuses_to_start_on_a_contradictory_policy() {
    let dir = DataDir::init();
    let cfg = dir.path.join("mamori.toml");
    let base = std::fs::read_to_string(&cfg).unwrap();
    for (extra, needle) in [
        (
            "[[policy.grant]]\njobs = [\"administrator\"]\noperations = [\"view\"]\ncategories = [\"general\"]\nzones = [\"his\"]\n",
            "ACL-5",
        ),
        (
            "[[policy.grant]]\njobs = [\"physician\"]\noperations = [\"view\"]\ncategories = [\"astrology\"]\nzones = [\"his\"]\n",
            "unknown category",
        ),
        ("[policy]\ndefault_zone = \"mars\"\n", "unknown zone"),
        ("[policy]\nzones = []\n", "unknown field"),
    ] {
        std::fs::write(&cfg, format!("{base}\n{extra}")).unwrap();
        let (code, _, err) = support::mamori(&["serve", "--data-dir", dir.arg(), "--listen", "127.0.0.1:0", "--dev"]);
        assert_ne!(code, 0, "{extra}");
        assert!(err.contains(needle), "{extra}: {err}");
    }
}

/// Calls `path` (under the server root) and returns the status.
async fn admin_call(s: &Server, token: &str, method: reqwest::Method, path: &str) -> u16 {
    let url = format!("{}{path}", s.base.trim_end_matches("/fhir"));
    let mut r = s.http.request(method.clone(), url).bearer_auth(token);
    if method == reqwest::Method::POST {
        r = r.header("content-type", "application/json").body("{}");
    }
    r.send().await.unwrap().status().as_u16()
}

/// ACL-1/ACL-3: administration (account review and management, audit review, status) is decided
/// by the same policy point, and only from the administration zones (`his` and `vpn` by default).
#[tokio::test]
async fn acl3_administration_only_from_administration_zones() {
    use reqwest::Method;
    let dir = DataDir::init();
    let base_cfg = std::fs::read_to_string(dir.path.join("mamori.toml")).unwrap();
    let admin = dir.user_with_token("boss", "administrator");
    let auditor = dir.user_with_token("audit.k", "auditor");
    dir.user_with_token("dr.x", "physician");
    let calls = [
        (&admin, Method::GET, "/admin/accounts/report"),
        (&admin, Method::POST, "/admin/accounts/dr.x/disable"),
        (&auditor, Method::GET, "/admin/accounts/report"),
        (&auditor, Method::GET, "/admin/audit/anomalies"),
        (&admin, Method::GET, "/admin/status"),
    ];
    let s = start(dir, &base_cfg, "internet", false);
    for (token, method, path) in &calls {
        assert_eq!(admin_call(&s, token, method.clone(), path).await, 403, "{method} {path} from the internet");
    }
    let dir = s.stop();
    assert_eq!(
        dir.audit_i64("SELECT count(*) FROM audit_event WHERE action = 'refused' AND outcome = 403"),
        5,
        "every refusal is audited"
    );
    let s = start(dir, &base_cfg, "vpn", false);
    for (token, method, path) in &calls {
        assert_eq!(admin_call(&s, token, method.clone(), path).await, 200, "{method} {path} from the VPN");
    }
    // Auditors may look but not act.
    assert_eq!(admin_call(&s, &auditor, Method::POST, "/admin/accounts/dr.x/enable").await, 403);
}
