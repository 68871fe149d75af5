//! FHIR search over encrypted storage (issue 3), against the real server.
//!
//! The matrix loads Synthea bundles and, for every query, computes the expected result set
//! itself from the raw bundle JSON (with its own small predicates — never from the server and
//! never with the server's FHIRPath evaluator), then compares it with every page the server
//! returns.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::collections::BTreeSet;

use serde_json::{Value, json};
use support::synthea::{load, synthea_files};
use support::*;

/// The hospital and practitioner bundles plus the first `n` patients.
fn some_bundles(n: usize) -> Vec<std::path::PathBuf> {
    let files = synthea_files();
    let (shared, patients): (Vec<_>, Vec<_>) = files.into_iter().partition(|p| {
        let name = p.file_name().unwrap().to_string_lossy().into_owned();
        name.starts_with("hospitalInformation") || name.starts_with("practitionerInformation")
    });
    shared.into_iter().chain(patients.into_iter().take(n)).collect()
}

/// Every match of a search, following `next` links; checks `total` against what was paged.
async fn search(s: &Server, query: &str) -> BTreeSet<String> {
    let (matches, _) = search_all(s, query).await;
    matches.into_iter().collect()
}

/// (matches in order, included) over all pages.
async fn search_all(s: &Server, query: &str) -> (Vec<String>, Vec<String>) {
    let mut url = s.url(query);
    let mut matches = Vec::new();
    let mut included = Vec::new();
    let mut total = None;
    for _ in 0..1000 {
        let resp = s.http.get(&url).bearer_auth(&s.token).send().await.unwrap();
        let (status, body) = json(resp).await;
        assert_eq!(status, 200, "{query}: {body}");
        if total.is_none() {
            total = body["total"].as_u64();
        }
        for e in body["entry"].as_array().into_iter().flatten() {
            let key = format!(
                "{}/{}",
                e["resource"]["resourceType"].as_str().unwrap(),
                e["resource"]["id"].as_str().unwrap()
            );
            match e["search"]["mode"].as_str() {
                Some("match") => matches.push(key),
                Some("include") => included.push(key),
                other => panic!("{query}: entry without search mode {other:?}"),
            }
        }
        match body["link"].as_array().unwrap().iter().find(|l| l["relation"] == "next") {
            Some(next) => url = next["url"].as_str().unwrap().to_string(),
            None => break,
        }
    }
    if let Some(t) = total {
        assert_eq!(t as usize, matches.len(), "{query}: total differs from what the pages hold");
    }
    (matches, included)
}

/// The test's model of the loaded data: raw resources with references rewritten to server ids.
struct Data {
    all: Vec<(Value, String)>,
}

impl Data {
    fn of_type<'a>(&'a self, t: &'a str) -> impl Iterator<Item = &'a (Value, String)> + 'a {
        self.all.iter().filter(move |(r, _)| r["resourceType"] == t)
    }

    fn select(&self, t: &str, pred: impl Fn(&Value) -> bool) -> BTreeSet<String> {
        self.of_type(t).filter(|(r, _)| pred(r)).map(|(_, k)| k.clone()).collect()
    }
}

fn arr(v: &Value) -> Vec<&Value> {
    match v {
        Value::Array(a) => a.iter().collect(),
        Value::Null => Vec::new(),
        other => vec![other],
    }
}

fn codings(cc: &Value) -> Vec<(&str, &str)> {
    arr(&cc["coding"])
        .into_iter()
        .map(|c| (c["system"].as_str().unwrap_or(""), c["code"].as_str().unwrap_or("")))
        .collect()
}

fn has_code(cc: &Value, system: &str, code: &str) -> bool {
    codings(cc).iter().any(|(s, c)| *s == system && *c == code)
}

fn reference_is(v: &Value, target: &str) -> bool {
    arr(v).iter().any(|r| r["reference"].as_str() == Some(target))
}

/// Seconds since the epoch of a FHIR dateTime with offset (the Synthea form).
fn ts(s: &str) -> i64 {
    time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).unwrap().unix_timestamp()
}

fn day_start(d: &str) -> i64 {
    ts(&format!("{d}T00:00:00Z"))
}

/// Each expected set must be non-trivial, or the case proves nothing.
fn nonempty(name: &str, set: &BTreeSet<String>) {
    assert!(!set.is_empty(), "{name}: the expected set is empty — pick another value");
}

async fn check(s: &Server, name: &str, query: &str, expected: BTreeSet<String>) {
    let got = search(s, query).await;
    assert_eq!(got, expected, "{name}: {query}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn search_matrix_over_synthea_matches_expectations_computed_from_the_raw_bundles() {
    let s = Server::start();
    let data = Data { all: load(&s, some_bundles(8)).await };
    let patients: Vec<&(Value, String)> = data.of_type("Patient").collect();
    assert_eq!(patients.len(), 8);
    let (p0, p0key) = patients[0];
    let p0id = p0key.split('/').nth(1).unwrap();

    // --- string: default prefix (case-insensitive), :exact, :contains ----------------------------
    let family = p0["name"][0]["family"].as_str().unwrap();
    let prefix = &family[..3].to_lowercase();
    let expected = data.select("Patient", |p| {
        arr(&p["name"])
            .iter()
            .any(|n| n["family"].as_str().is_some_and(|f| f.to_lowercase().starts_with(prefix.as_str())))
    });
    nonempty("family prefix", &expected);
    check(&s, "string prefix", &format!("Patient?family={prefix}"), expected.clone()).await;
    check(&s, "string prefix upper", &format!("Patient?family={}", prefix.to_uppercase()), expected).await;
    let given = p0["name"][0]["given"][0].as_str().unwrap();
    let expected = data.select("Patient", |p| {
        arr(&p["name"])
            .iter()
            .any(|n| n["family"].as_str() == Some(given) || arr(&n["given"]).iter().any(|g| g.as_str() == Some(given)))
    });
    nonempty("name exact", &expected);
    check(&s, "string :exact", &format!("Patient?name:exact={given}"), expected).await;
    check(
        &s,
        "string :exact is case-sensitive",
        &format!("Patient?name:exact={}", given.to_uppercase()),
        BTreeSet::new(),
    )
    .await;
    let middle: String = family.chars().skip(1).take(3).collect::<String>().to_lowercase();
    let expected = data.select("Patient", |p| {
        arr(&p["name"]).iter().any(|n| n["family"].as_str().is_some_and(|f| f.to_lowercase().contains(&middle)))
    });
    nonempty("family contains", &expected);
    check(&s, "string :contains", &format!("Patient?family:contains={middle}"), expected).await;
    let city = p0["address"][0]["city"].as_str().unwrap();
    let expected = data.select("Patient", |p| arr(&p["address"]).iter().any(|a| a["city"].as_str() == Some(city)));
    check(&s, "address-city", &format!("Patient?address-city={}", city.replace(' ', "%20")), expected.clone()).await;
    // :contains where no grams are stored (addresses): confirmed on the decrypted candidates.
    let mid: String = city.chars().skip(1).take(4).collect::<String>().to_lowercase();
    let expected = data.select("Patient", |p| {
        arr(&p["address"]).iter().any(|a| {
            let mut parts: Vec<String> =
                arr(&a["line"]).iter().filter_map(|l| l.as_str()).map(str::to_lowercase).collect();
            for k in ["city", "district", "state", "postalCode", "country", "text"] {
                parts.extend(a[k].as_str().map(str::to_lowercase));
            }
            parts.iter().any(|x| x.contains(&mid))
        })
    });
    nonempty("address contains", &expected);
    check(
        &s,
        "string :contains without grams",
        &format!("Patient?address:contains={}", mid.replace(' ', "%20")),
        expected,
    )
    .await;

    // --- token: code, system|code, |code, system|, :not, :text, :missing, :of-type ---------------
    let expected = data.select("Patient", |p| p["gender"] == "female");
    nonempty("female", &expected);
    check(&s, "token code", "Patient?gender=female", expected).await;
    let expected = data.select("Patient", |p| p["gender"] != "male");
    check(&s, "token :not", "Patient?gender:not=male", expected).await;
    let loinc = "http://loinc.org";
    let height = data.select("Observation", |o| has_code(&o["code"], loinc, "8302-2"));
    nonempty("height", &height);
    check(&s, "token system|code", "Observation?code=http://loinc.org|8302-2", height.clone()).await;
    check(&s, "token code alone", "Observation?code=8302-2", height.clone()).await;
    check(&s, "token |code (no system) finds none", "Observation?code=|8302-2", BTreeSet::new()).await;
    let vital = data.select("Observation", |o| {
        arr(&o["category"])
            .iter()
            .any(|c| codings(c).iter().any(|(s, _)| *s == "http://terminology.hl7.org/CodeSystem/observation-category"))
    });
    check(
        &s,
        "token system|",
        "Observation?category=http://terminology.hl7.org/CodeSystem/observation-category|",
        vital,
    )
    .await;
    let body_text = data.select("Observation", |o| {
        let t = o["code"]["text"].as_str().unwrap_or("");
        let d: Vec<&str> = arr(&o["code"]["coding"]).iter().filter_map(|c| c["display"].as_str()).collect();
        t.to_lowercase().starts_with("body") || d.iter().any(|d| d.to_lowercase().starts_with("body"))
    });
    nonempty("code text", &body_text);
    check(&s, "token :text", "Observation?code:text=body", body_text).await;
    // Longer than the stored text prefixes: confirmed on the decrypted value.
    let long = "low density lipoprotein c";
    let bmi = data.select("Observation", |o| {
        let mut texts: Vec<String> =
            arr(&o["code"]["coding"]).iter().filter_map(|c| c["display"].as_str()).map(str::to_lowercase).collect();
        texts.extend(o["code"]["text"].as_str().map(str::to_lowercase));
        texts.iter().any(|t| t.starts_with(long))
    });
    nonempty("long :text", &bmi);
    check(&s, "token :text longer than the index prefix", "Observation?code:text=Low%20Density%20Lipoprotein%20C", bmi)
        .await;
    let no_value = data.select("Observation", |o| {
        o.get("valueQuantity").is_none() && o.get("valueCodeableConcept").is_none() && o.get("valueString").is_none()
    });
    let _ = no_value;
    let with_deceased =
        data.select("Patient", |p| p.get("deceasedDateTime").is_some() || p.get("deceasedBoolean").is_some());
    let all_patients = data.select("Patient", |_| true);
    let without: BTreeSet<String> = all_patients.difference(&with_deceased).cloned().collect();
    check(
        &s,
        ":missing=true",
        "Patient?death-date:missing=true",
        data.select("Patient", |p| p.get("deceasedDateTime").is_none()),
    )
    .await;
    check(
        &s,
        ":missing=false",
        "Patient?death-date:missing=false",
        data.select("Patient", |p| p.get("deceasedDateTime").is_some()),
    )
    .await;
    let _ = without;
    let mr = arr(&p0["identifier"]).into_iter().find(|i| codings(&i["type"]).iter().any(|(_, c)| *c == "MR")).unwrap();
    let mr_value = mr["value"].as_str().unwrap();
    let mr_system = codings(&mr["type"])[0].0;
    check(
        &s,
        ":of-type",
        &format!("Patient?identifier:of-type={mr_system}|MR|{mr_value}"),
        BTreeSet::from([p0key.clone()]),
    )
    .await;
    let ident_sys = mr["system"].as_str().unwrap();
    check(
        &s,
        "identifier system|value",
        &format!("Patient?identifier={ident_sys}|{mr_value}"),
        BTreeSet::from([p0key.clone()]),
    )
    .await;
    check(&s, "_tag", "Observation?_tag=https://smarthealthit.org/tags|synthea-5-2019&code=8302-2", height.clone())
        .await;

    // --- reference: id, Type/id, absolute URL, :Type, chaining, _has ----------------------------------
    let p0obs = data.select("Observation", |o| reference_is(&o["subject"], p0key));
    nonempty("p0 observations", &p0obs);
    check(&s, "reference Type/id", &format!("Observation?subject={p0key}"), p0obs.clone()).await;
    check(&s, "reference id", &format!("Observation?patient={p0id}"), p0obs.clone()).await;
    check(&s, "reference :Type", &format!("Observation?subject:Patient={p0id}"), p0obs.clone()).await;
    check(&s, "reference absolute", &format!("Observation?subject={}", s.url(p0key)), p0obs.clone()).await;
    check(&s, "chain", &format!("Observation?subject:Patient.family={}&code=8302-2", family), {
        let fam_patients = data.select("Patient", |p| {
            arr(&p["name"])
                .iter()
                .any(|n| n["family"].as_str().is_some_and(|f| f.to_lowercase().starts_with(&family.to_lowercase())))
        });
        data.select("Observation", |o| {
            has_code(&o["code"], loinc, "8302-2") && fam_patients.iter().any(|k| reference_is(&o["subject"], k))
        })
    })
    .await;
    // One and two levels: Encounters by their practitioner's family name; Observations by the
    // practitioner of their encounter.
    let p0enc = data.select("Encounter", |e| reference_is(&e["subject"], p0key));
    let enc0 = &data.all.iter().find(|(_, k)| p0enc.contains(k)).unwrap().0;
    let prac = enc0["participant"][0]["individual"]["reference"].as_str().unwrap();
    let prac_res = &data.all.iter().find(|(_, k)| k == prac).unwrap().0;
    let prac_family = prac_res["name"][0]["family"].as_str().unwrap();
    let pracs = data.select("Practitioner", |p| {
        arr(&p["name"])
            .iter()
            .any(|n| n["family"].as_str().is_some_and(|f| f.to_lowercase().starts_with(&prac_family.to_lowercase())))
    });
    let encs = data.select("Encounter", |e| {
        arr(&e["participant"]).iter().any(|pt| pracs.iter().any(|k| reference_is(&pt["individual"], k)))
    });
    nonempty("encounters by practitioner", &encs);
    check(&s, "chain one level", &format!("Encounter?practitioner.family={prac_family}"), encs.clone()).await;
    let obs = data.select("Observation", |o| encs.iter().any(|k| reference_is(&o["encounter"], k)));
    nonempty("two-level chain", &obs);
    check(&s, "chain two levels", &format!("Observation?encounter.practitioner.family={prac_family}"), obs).await;
    let with_height = data.select("Patient", |p| {
        data.of_type("Observation").any(|(o, _)| {
            has_code(&o["code"], loinc, "8302-2")
                && reference_is(&o["subject"], &format!("Patient/{}", p["id"].as_str().unwrap_or("")))
        })
    });
    let _ = with_height;
    let expected: BTreeSet<String> = patients
        .iter()
        .filter(|(_, k)| {
            data.of_type("Condition").any(|(c, _)| {
                reference_is(&c["subject"], k) && has_code(&c["code"], "http://snomed.info/sct", "444814009")
            })
        })
        .map(|(_, k)| k.clone())
        .collect();
    check(&s, "_has", "Patient?_has:Condition:patient:code=http://snomed.info/sct|444814009", expected).await;

    // --- date with every prefix --------------------------------------------------------------------
    let p0heights: Vec<(i64, String)> = data
        .of_type("Observation")
        .filter(|(o, _)| has_code(&o["code"], loinc, "8302-2"))
        .map(|(o, k)| (ts(o["effectiveDateTime"].as_str().unwrap()), k.clone()))
        .collect();
    let d = "2015-06-01";
    let (lo, hi) = (day_start(d), day_start(d) + 86_399);
    for (prefix, pred) in [
        ("eq", Box::new(move |t: i64| t >= lo && t <= hi) as Box<dyn Fn(i64) -> bool>),
        ("ne", Box::new(move |t: i64| !(t >= lo && t <= hi))),
        ("lt", Box::new(move |t: i64| t < lo)),
        ("gt", Box::new(move |t: i64| t > hi)),
        ("le", Box::new(move |t: i64| t <= hi)),
        ("ge", Box::new(move |t: i64| t >= lo)),
        ("sa", Box::new(move |t: i64| t > hi)),
        ("eb", Box::new(move |t: i64| t < lo)),
    ] {
        let expected: BTreeSet<String> = p0heights.iter().filter(|(t, _)| pred(*t)).map(|(_, k)| k.clone()).collect();
        check(&s, &format!("date {prefix}"), &format!("Observation?code=8302-2&date={prefix}{d}"), expected).await;
    }
    // `ap`: the ranges overlap once the searched day is widened by a tenth of its distance from
    // now (at least a day), the margin docs/search.md gives. The boundary moves a tenth of a
    // second per second, far less than the data's one-second spacing in one request.
    #[allow(clippy::disallowed_methods)] // the server under test reads the real clock too
    let now_us = time::OffsetDateTime::now_utc().unix_timestamp() * 1_000_000;
    let (lo_us, hi_us) = (lo * 1_000_000, hi * 1_000_000 + 999_999);
    let margin = ((now_us - (lo_us / 2 + hi_us / 2)).abs() / 10).max(86_400 * 1_000_000);
    let near: BTreeSet<String> = p0heights
        .iter()
        .filter(|(t, _)| t * 1_000_000 <= hi_us + margin && t * 1_000_000 + 999_999 >= lo_us - margin)
        .map(|(_, k)| k.clone())
        .collect();
    nonempty("date ap", &near);
    assert!(near.len() < p0heights.len(), "date ap: every observation is near {d}; pick another day");
    check(&s, "date ap", &format!("Observation?code=8302-2&date=ap{d}"), near).await;
    let in_2016: BTreeSet<String> = p0heights
        .iter()
        .filter(|(t, _)| *t >= day_start("2016-01-01") && *t < day_start("2017-01-01"))
        .map(|(_, k)| k.clone())
        .collect();
    check(&s, "date partial year", "Observation?code=8302-2&date=2016", in_2016.clone()).await;
    check(&s, "date range", "Observation?code=8302-2&date=ge2016-01-01&date=lt2017-01-01", in_2016).await;
    let encounters_in_2015 = data.select("Encounter", |e| {
        let (a, b) = (ts(e["period"]["start"].as_str().unwrap()), ts(e["period"]["end"].as_str().unwrap()));
        a >= day_start("2015-01-01") && b < day_start("2016-01-01")
    });
    check(&s, "Period eq year", "Encounter?date=2015", encounters_in_2015).await;

    // --- quantity and number with prefixes; composite -----------------------------------------------
    let heights: Vec<(f64, String)> = data
        .of_type("Observation")
        .filter(|(o, _)| has_code(&o["code"], loinc, "8302-2"))
        .map(|(o, k)| (o["valueQuantity"]["value"].as_f64().unwrap(), k.clone()))
        .collect();
    for (q, pred) in [
        ("gt150", Box::new(|v: f64| v > 150.0) as Box<dyn Fn(f64) -> bool>),
        ("lt100", Box::new(|v: f64| v < 100.0)),
        ("ge150", Box::new(|v: f64| v >= 150.0)),
        ("le150", Box::new(|v: f64| v <= 150.0)),
        ("eq176", Box::new(|v: f64| (175.5..176.5).contains(&v))),
        ("ne176", Box::new(|v: f64| !(175.5..176.5).contains(&v))),
        // `ap`: within 10 % of the value.
        ("ap176", Box::new(|v: f64| (158.4..193.6).contains(&v))),
    ] {
        let expected: BTreeSet<String> = heights.iter().filter(|(v, _)| pred(*v)).map(|(_, k)| k.clone()).collect();
        check(&s, &format!("quantity {q}"), &format!("Observation?code=8302-2&value-quantity={q}"), expected.clone())
            .await;
        check(
            &s,
            &format!("quantity {q} with unit"),
            &format!("Observation?code=8302-2&value-quantity={q}|http://unitsofmeasure.org|cm"),
            expected.clone(),
        )
        .await;
        check(
            &s,
            &format!("composite {q}"),
            &format!("Observation?code-value-quantity=http://loinc.org|8302-2${q}"),
            expected,
        )
        .await;
    }
    check(&s, "quantity wrong unit", "Observation?code=8302-2&value-quantity=gt1||kg", BTreeSet::new()).await;
    let either: BTreeSet<String> =
        heights.iter().filter(|(v, _)| *v > 150.0 || *v < 100.0).map(|(_, k)| k.clone()).collect();
    check(
        &s,
        "composite, two values ORed",
        "Observation?code-value-quantity=http://loinc.org|8302-2$gt150,http://loinc.org|8302-2$lt100",
        either,
    )
    .await;

    // --- sorting ---------------------------------------------------------------------------------
    let (ordered, _) = search_all(&s, &format!("Observation?patient={p0id}&code=8302-2&_sort=-date&_count=2")).await;
    let mut expected: Vec<(i64, String)> = p0heights.iter().filter(|(_, k)| p0obs.contains(k)).cloned().collect();
    expected.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
    assert_eq!(ordered, expected.into_iter().map(|(_, k)| k).collect::<Vec<_>>(), "_sort=-date across pages");
    let (by_name, _) = search_all(&s, "Patient?_sort=family,-birthdate&_count=3").await;
    let mut expected: Vec<(String, String, String)> = patients
        .iter()
        .map(|(p, k)| {
            let fam = arr(&p["name"]).iter().filter_map(|n| n["family"].as_str()).map(str::to_lowercase).min().unwrap();
            (fam, p["birthDate"].as_str().unwrap().to_string(), k.clone())
        })
        .collect();
    expected.sort_by(|a, b| a.0.cmp(&b.0).then(b.1.cmp(&a.1)).then(a.2.cmp(&b.2)));
    assert_eq!(by_name, expected.into_iter().map(|(_, _, k)| k).collect::<Vec<_>>(), "_sort by an encrypted string");

    // --- includes ------------------------------------------------------------------------------
    let (m, inc) = search_all(&s, &format!("Encounter?patient={p0id}&_include=Encounter:patient&_count=5")).await;
    assert_eq!(
        m.iter().cloned().collect::<BTreeSet<_>>(),
        data.select("Encounter", |e| reference_is(&e["subject"], p0key))
    );
    assert_eq!(
        inc.into_iter().collect::<BTreeSet<_>>(),
        BTreeSet::from([p0key.clone()]),
        "_include adds the patient once per page"
    );
    let (m, inc) = search_all(&s, &format!("Patient?_id={p0id}&_revinclude=Encounter:patient")).await;
    assert_eq!(m, vec![p0key.clone()]);
    assert_eq!(
        inc.into_iter().collect::<BTreeSet<_>>(),
        data.select("Encounter", |e| reference_is(&e["subject"], p0key))
    );
    let (_, inc) = search_all(
        &s,
        &format!("Patient?_id={p0id}&_revinclude=Encounter:patient&_include:iterate=Encounter:service-provider"),
    )
    .await;
    let orgs: BTreeSet<String> = data
        .select("Encounter", |e| reference_is(&e["subject"], p0key))
        .iter()
        .filter_map(|k| {
            data.all
                .iter()
                .find(|(_, kk)| kk == k)
                .and_then(|(e, _)| e["serviceProvider"]["reference"].as_str().map(str::to_string))
        })
        .collect();
    nonempty("iterate orgs", &orgs);
    assert!(orgs.iter().all(|o| inc.contains(o)), "_include:iterate follows from included Encounters");

    // --- compartments and $everything -----------------------------------------------------------
    check(&s, "compartment", &format!("Patient/{p0id}/Observation"), p0obs.clone()).await;
    check(
        &s,
        "compartment + criteria",
        &format!("Patient/{p0id}/Observation?code=8302-2"),
        p0obs.intersection(&height).cloned().collect(),
    )
    .await;
    let everything = search(&s, &format!("Patient/{p0id}/$everything?_count=50")).await;
    assert!(everything.contains(p0key.as_str()));
    assert!(p0obs.iter().all(|o| everything.contains(o)), "$everything holds every Observation of the patient");
    let others: Vec<&String> = everything
        .iter()
        .filter(|k| data.all.iter().any(|(r, kk)| kk == *k && r["resourceType"] == "Patient" && *kk != *p0key))
        .collect();
    assert!(others.is_empty(), "$everything holds no other patient: {others:?}");

    // --- _lastUpdated (server-assigned: everything was written after 2000) -------------------------
    check(&s, "_lastUpdated gt", "Patient?_lastUpdated=gt2000-01-01", data.select("Patient", |_| true)).await;
    check(&s, "_lastUpdated lt", "Patient?_lastUpdated=lt2000-01-01", BTreeSet::new()).await;

    // --- _summary=true and _elements ---------------------------------------------------------------
    let (_, body) = json(s.get(&format!("Patient?_id={p0id}&_summary=true")).send().await.unwrap()).await;
    let r = &body["entry"][0]["resource"];
    assert_eq!(r["name"], p0["name"], "summary keeps the name");
    assert!(r.get("extension").is_none() && r.get("text").is_none(), "summary drops non-summary elements: {r}");
    assert!(arr(&r["meta"]["tag"]).iter().any(|t| t["code"] == "SUBSETTED"), "subsetted results are tagged");
    let (_, body) = json(s.get("Observation?code=8302-2&_elements=status&_count=3").send().await.unwrap()).await;
    for e in body["entry"].as_array().unwrap() {
        assert_eq!(e["resource"]["status"], "final");
        assert!(e["resource"].get("valueQuantity").is_none() && e["resource"].get("code").is_none());
    }

    // --- _summary=count and _total=none ------------------------------------------------------------
    let (status, body) = json(s.get("Observation?code=8302-2&_summary=count").send().await.unwrap()).await;
    assert_eq!(status, 200);
    assert_eq!(body["total"].as_u64(), Some(height.len() as u64));
    assert!(body.get("entry").is_none_or(|e| e.as_array().unwrap().is_empty()));
    let (_, body) = json(s.get("Observation?code=8302-2&_total=none").send().await.unwrap()).await;
    assert!(body.get("total").is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paging_is_stable_when_resources_are_inserted_between_pages() {
    let s = Server::start();
    for i in 0..12 {
        let p = json!({"resourceType": "Patient", "name": [{"family": format!("Pager{i:02}")}], "gender": "other"});
        assert_eq!(s.post_json("Patient", &p).send().await.unwrap().status(), 201);
    }
    let resp = s.get("Patient?gender=other&_count=5").send().await.unwrap();
    let (_, first) = json(resp).await;
    let mut seen: Vec<String> =
        first["entry"].as_array().unwrap().iter().map(|e| e["resource"]["id"].as_str().unwrap().to_string()).collect();
    // Inserts between pages, including ones that sort before everything already seen.
    for i in 0..4 {
        let p = json!({"resourceType": "Patient", "id": format!("0000-inserted-{i}"), "gender": "other"});
        assert_eq!(s.put_json(&format!("Patient/0000-inserted-{i}"), &p).send().await.unwrap().status(), 201);
    }
    let mut next = first["link"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["relation"] == "next")
        .map(|l| l["url"].as_str().unwrap().to_string());
    let mut previous_seen = false;
    while let Some(url) = next {
        let (status, page) = json(s.http.get(&url).bearer_auth(&s.token).send().await.unwrap()).await;
        assert_eq!(status, 200);
        assert_eq!(page["total"], 12, "the total is that of the search's snapshot");
        previous_seen |= page["link"].as_array().unwrap().iter().any(|l| l["relation"] == "previous");
        seen.extend(
            page["entry"].as_array().unwrap().iter().map(|e| e["resource"]["id"].as_str().unwrap().to_string()),
        );
        next = page["link"]
            .as_array()
            .unwrap()
            .iter()
            .find(|l| l["relation"] == "next")
            .map(|l| l["url"].as_str().unwrap().to_string());
    }
    assert!(previous_seen, "later pages link back");
    let unique: BTreeSet<&String> = seen.iter().collect();
    assert_eq!(seen.len(), 12, "every original result exactly once: {seen:?}");
    assert_eq!(unique.len(), 12);
    assert!(seen.iter().all(|id| !id.starts_with("0000-inserted")));
    // A new search sees the inserted ones.
    assert_eq!(search(&s, "Patient?gender=other").await.len(), 16);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn japanese_names_are_found_by_kanji_kana_and_either_width() {
    let s = Server::start();
    // JP Core: the kanji name (IDE) and the katakana reading (SYL) as two HumanNames.
    let yamada = json!({"resourceType": "Patient", "name": [
        {"extension": [{"url": "http://hl7.org/fhir/StructureDefinition/iso21090-EN-representation", "valueCode": "IDE"}],
         "use": "official", "text": "山田 太郎", "family": "山田", "given": ["太郎"]},
        {"extension": [{"url": "http://hl7.org/fhir/StructureDefinition/iso21090-EN-representation", "valueCode": "SYL"}],
         "use": "official", "text": "ヤマダ タロウ", "family": "ヤマダ", "given": ["タロウ"]}
    ]});
    let yamata = json!({"resourceType": "Patient", "name": [{"family": "ヤマタ", "given": ["ハナコ"]}]});
    let latin = json!({"resourceType": "Patient", "name": [{"family": "Yamada", "given": ["Taro"]}]});
    let mut ids = Vec::new();
    for p in [&yamada, &yamata, &latin] {
        let (status, body) = json(s.post_json("Patient", p).send().await.unwrap()).await;
        assert_eq!(status, 201);
        ids.push(format!("Patient/{}", body["id"].as_str().unwrap()));
    }
    let only = |i: usize| BTreeSet::from([ids[i].clone()]);
    check(&s, "kanji prefix", "Patient?family=山", only(0)).await;
    check(&s, "kanji exact", "Patient?family:exact=山田", only(0)).await;
    check(&s, "kanji full name text", "Patient?name=山田%20太郎", only(0)).await;
    check(&s, "katakana prefix", "Patient?family=ヤマダ", only(0)).await;
    check(&s, "half-width katakana", "Patient?family=ﾔﾏﾀﾞ", only(0)).await;
    check(&s, "voiced mark matters", "Patient?family=ヤマタ", only(1)).await;
    check(&s, "katakana shared prefix", "Patient?family=ヤマ", BTreeSet::from([ids[0].clone(), ids[1].clone()])).await;
    check(&s, "given katakana", "Patient?given=タロ", only(0)).await;
    check(&s, "full-width latin", "Patient?family=ＹＡＭＡ", only(2)).await;
    check(&s, "contains kanji", "Patient?name:contains=田", only(0)).await;
    check(&s, ":exact is exact", "Patient?family:exact=ﾔﾏﾀﾞ", BTreeSet::new()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_search_parameters_are_named_unless_lenient() {
    let s = Server::start();
    for (q, needle) in [
        ("Patient?nonsense=1", "'nonsense'"),
        ("Patient?birthdate=yesterday", "'birthdate'"),
        ("Patient?gender:below=x", "':below'"),
        ("Observation?value-quantity=abc", "'value-quantity'"),
        ("Observation?subject:Device.name=x", "Device"),
        ("Patient?_sort=nonsense", "'nonsense'"),
        ("Patient?_include=Encounter:nonsense", "'nonsense'"),
        ("Observation?code-value-quantity=1", "component"),
        ("Patient?_has:Observation:nonsense:code=1", "nonsense"),
        ("Patient?_summary=maybe", "_summary"),
        ("Patient?_elements=a;b", "_elements"),
    ] {
        expect_outcome(s.get(q).send().await.unwrap(), 400, needle).await;
    }
    let resp = s.get("Patient?nonsense=1&gender=male").header("prefer", "handling=lenient").send().await.unwrap();
    let (status, body) = json(resp).await;
    assert_eq!(status, 200);
    let self_link = body["link"][0]["url"].as_str().unwrap();
    assert!(self_link.contains("gender=male") && !self_link.contains("nonsense"), "{self_link}");
}

/// Creates `resource` and returns "Type/id".
async fn create(s: &Server, resource: Value) -> String {
    let t = resource["resourceType"].as_str().unwrap().to_string();
    let (status, body) = json(s.post_json(&t, &resource).send().await.unwrap()).await;
    assert_eq!(status, 201, "{body}");
    format!("{t}/{}", body["id"].as_str().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn number_uri_profile_security_and_post_search() {
    let s = Server::start();
    let mut risks = Vec::new();
    for p in ["0.2", "0.5", "0.55", "0.9"] {
        let r = json!({"resourceType": "RiskAssessment", "status": "final", "subject": {"reference": "Patient/x"},
            "prediction": [{"probabilityDecimal": p.parse::<f64>().unwrap()}]});
        risks.push((p.parse::<f64>().unwrap(), create(&s, r).await));
    }
    let pick =
        |f: &dyn Fn(f64) -> bool| risks.iter().filter(|(v, _)| f(*v)).map(|(_, k)| k.clone()).collect::<BTreeSet<_>>();
    check(&s, "number gt", "RiskAssessment?probability=gt0.5", pick(&|v| v > 0.5)).await;
    check(&s, "number le", "RiskAssessment?probability=le0.5", pick(&|v| v <= 0.5)).await;
    check(&s, "number eq uses precision", "RiskAssessment?probability=0.5", pick(&|v| (0.45..0.55).contains(&v))).await;
    check(&s, "number eq finer precision", "RiskAssessment?probability=0.50", pick(&|v| (0.495..0.505).contains(&v)))
        .await;
    check(&s, "number ne", "RiskAssessment?probability=ne0.5", pick(&|v| !(0.45..0.55).contains(&v))).await;

    let vs = create(
        &s,
        json!({"resourceType": "ValueSet", "status": "active", "url": "http://example.org/vs/a",
        "meta": {"profile": ["http://example.org/StructureDefinition/p1"],
                 "security": [{"system": "http://terminology.hl7.org/CodeSystem/v3-Confidentiality", "code": "R"}]}}),
    )
    .await;
    let _other =
        create(&s, json!({"resourceType": "ValueSet", "status": "active", "url": "http://example.org/vs/b"})).await;
    check(&s, "uri", "ValueSet?url=http://example.org/vs/a", BTreeSet::from([vs.clone()])).await;
    check(&s, "uri is not a prefix match", "ValueSet?url=http://example.org/vs", BTreeSet::new()).await;
    check(&s, "_profile", "ValueSet?_profile=http://example.org/StructureDefinition/p1", BTreeSet::from([vs.clone()]))
        .await;
    check(
        &s,
        "_security",
        "ValueSet?_security=http://terminology.hl7.org/CodeSystem/v3-Confidentiality|R",
        BTreeSet::from([vs.clone()]),
    )
    .await;

    let resp = s
        .http
        .post(s.url("ValueSet/_search"))
        .bearer_auth(&s.token)
        .header("content-type", "application/x-www-form-urlencoded")
        .body("url=http%3A%2F%2Fexample.org%2Fvs%2Fa")
        .send()
        .await
        .unwrap();
    let (status, body) = json(resp).await;
    assert_eq!(status, 200);
    assert_eq!(body["total"], 1, "POST _search takes form parameters");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn search_audit_names_every_patient_disclosed_including_via_revinclude() {
    let s = Server::start();
    let prac = create(&s, json!({"resourceType": "Practitioner", "name": [{"family": "Doc"}]})).await;
    let mut patients = Vec::new();
    for i in 0..3 {
        let p = create(&s, json!({"resourceType": "Patient", "name": [{"family": format!("P{i}")}]})).await;
        create(
            &s,
            json!({"resourceType": "Encounter", "status": "finished", "class": {"code": "AMB"},
            "subject": {"reference": p}, "participant": [{"individual": {"reference": prac}}]}),
        )
        .await;
        patients.push(p);
    }
    let prac_id = prac.split('/').nth(1).unwrap();
    let (matches, included) =
        search_all(&s, &format!("Practitioner?_id={prac_id}&_revinclude=Encounter:practitioner")).await;
    assert_eq!(matches, vec![prac.clone()]);
    assert_eq!(included.len(), 3);
    // The Practitioner is in no patient's compartment; the Encounters are: the row names all three.
    let named = s.dir.audit_i64(
        "SELECT count(*) FROM audit_event WHERE action = 'search-type' AND rtype = 'Practitioner' AND outcome = 200",
    );
    assert_eq!(named, 1);
    let c =
        rusqlite::Connection::open_with_flags(s.dir.audit_db(), rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY).unwrap();
    let row: String = c
        .query_row(
            "SELECT patients FROM audit_event WHERE action = 'search-type' AND rtype = 'Practitioner'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    for p in &patients {
        assert!(row.contains(p.split('/').nth(1).unwrap()), "audit row {row:?} must name {p}");
    }
}

/// The string parts of every HumanName / Address in `v`, lower-cased (FHIR string search parts).
fn element_parts(v: &Value) -> Vec<String> {
    let mut out = Vec::new();
    for e in arr(v) {
        for k in ["family", "text", "city", "district", "state", "postalCode", "country"] {
            out.extend(e[k].as_str().map(str::to_lowercase));
        }
        for k in ["given", "prefix", "suffix", "line"] {
            out.extend(arr(&e[k]).iter().filter_map(|x| x.as_str()).map(str::to_lowercase));
        }
    }
    out
}

/// Parameters answered as unions of other parameters' rows (`combo-*` of Observation, `name` and
/// `address` over `family`/`given`/`address-*`) give the answers their definitions give.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn union_parameters_answer_like_their_parts() {
    let s = Server::start();
    let data = Data { all: load(&s, some_bundles(8)).await };
    let loinc = "http://loinc.org";

    // combo-code = code | component.code (blood pressure panels carry 8480-6 as a component).
    let expected = data.select("Observation", |o| {
        has_code(&o["code"], loinc, "8480-6")
            || arr(&o["component"]).iter().any(|c| has_code(&c["code"], loinc, "8480-6"))
    });
    nonempty("combo-code component", &expected);
    check(&s, "combo-code via component", "Observation?combo-code=http://loinc.org|8480-6", expected).await;
    let expected = data.select("Observation", |o| has_code(&o["code"], loinc, "8302-2"));
    nonempty("combo-code code", &expected);
    check(&s, "combo-code via code", "Observation?combo-code=8302-2", expected).await;
    let expected = data.select("Observation", |o| !o["code"].is_null() || !o["component"].is_null());
    check(&s, "combo-code :missing=false", "Observation?combo-code:missing=false", expected).await;
    // combo-value-quantity = value | component.value.
    let over = |q: &Value| q["value"].as_f64().is_some_and(|v| v > 100.0);
    let expected = data.select("Observation", |o| {
        over(&o["valueQuantity"]) || arr(&o["component"]).iter().any(|c| over(&c["valueQuantity"]))
    });
    nonempty("combo-value-quantity", &expected);
    check(&s, "combo-value-quantity gt", "Observation?combo-value-quantity=gt100", expected).await;

    // name = family | given | prefix | suffix | text, by prefix, :exact and :contains.
    let patients: Vec<&(Value, String)> = data.of_type("Patient").collect();
    let (p0, p0key) = patients[0];
    let name_starts = |p: &Value, x: &str| element_parts(&p["name"]).iter().any(|n| n.starts_with(x));
    for want in [p0["name"][0]["family"].as_str().unwrap(), p0["name"][0]["given"][0].as_str().unwrap(), "mr"] {
        let x: String = want.chars().take(4).collect::<String>().to_lowercase();
        let expected = data.select("Patient", |p| name_starts(p, &x));
        nonempty("name prefix", &expected);
        check(&s, "name prefix", &format!("Patient?name={x}"), expected.clone()).await;
        check(&s, "phonetic is name", &format!("Patient?phonetic={x}"), expected).await;
    }
    let mid: String =
        p0["name"][0]["given"][0].as_str().unwrap().chars().skip(1).take(3).collect::<String>().to_lowercase();
    let expected = data.select("Patient", |p| element_parts(&p["name"]).iter().any(|n| n.contains(&mid)));
    nonempty("name contains", &expected);
    check(&s, "name :contains", &format!("Patient?name:contains={mid}"), expected).await;
    // address = line | city | district | state | postalCode | country | text.
    for a in [p0["address"][0]["line"][0].as_str().unwrap(), p0["address"][0]["state"].as_str().unwrap()] {
        let x: String = a.chars().take(4).collect::<String>().to_lowercase();
        let expected = data.select("Patient", |p| element_parts(&p["address"]).iter().any(|n| n.starts_with(&x)));
        nonempty("address prefix", &expected);
        check(&s, "address prefix", &format!("Patient?address={}", x.replace(' ', "%20")), expected).await;
    }

    // An update moves the name's rows: the old family no longer finds the patient, the new one does.
    let old: String = p0["name"][0]["family"].as_str().unwrap().chars().take(4).collect::<String>().to_lowercase();
    let mut changed = p0.clone();
    changed["id"] = json!(p0key.split('/').nth(1).unwrap());
    changed["name"] = json!([{ "family": "Zyxwvu", "given": ["Quorra"] }]);
    let resp = s.http.put(s.url(p0key)).bearer_auth(&s.token).json(&changed).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert!(!search(&s, &format!("Patient?name={old}")).await.contains(p0key.as_str()));
    assert_eq!(search(&s, "Patient?name=zyxw").await, BTreeSet::from([p0key.clone()]));
    assert_eq!(search(&s, "Patient?name=quor").await, BTreeSet::from([p0key.clone()]));
}
