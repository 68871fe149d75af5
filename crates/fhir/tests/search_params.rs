//! The generated search-parameter table and the FHIRPath evaluator over it, checked against the
//! examples of the FHIR R4 specification (`.cache/fhir-packages/hl7.fhir.r4.examples`; the
//! example tests print a note and pass when the cache is missing).

#![allow(clippy::panic, clippy::expect_used, clippy::unwrap_used)]

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use mamori_fhir::ResourceType;
use mamori_fhir::fhirpath;
use mamori_fhir::search_params::{self, ParamType, compiled, compiled_component, lookup, params_for};
use serde_json::{Value, json};

#[test]
fn every_table_expression_parses() {
    let mut n = 0;
    for def in search_params::all() {
        if let Err(e) = fhirpath::parse(def.expression) {
            panic!("{} {}: {e}: {}", def.base, def.code, def.expression);
        }
        n += 1;
        for (i, c) in def.components.iter().enumerate() {
            if let Err(e) = fhirpath::parse(c.expression) {
                panic!("{} {} component {i}: {e}: {}", def.base, def.code, c.expression);
            }
            assert!(compiled_component(def, i).is_some());
        }
        assert_eq!(compiled(def).is_empty(), def.expression.is_empty(), "{} {}", def.base, def.code);
    }
    assert_eq!(n, search_params::all().len());
}

#[test]
fn table_rows_are_unique_sorted_and_cover_every_type() {
    let pairs: BTreeSet<(&str, &str)> = search_params::all().iter().map(|d| (d.base, d.code)).collect();
    assert_eq!(pairs.len(), search_params::all().len());
    let applicable: usize = ResourceType::all().map(|t| params_for(t.as_str()).len()).sum();
    println!("{} (base, code) rows; {applicable} (type, code) pairs over all resource types", pairs.len());
    for t in ResourceType::all() {
        let params = params_for(t.as_str());
        assert!(params.windows(2).all(|w| w[0].code < w[1].code), "{t} not sorted");
        for code in ["_id", "_lastUpdated", "_tag", "_profile", "_security", "_source"] {
            assert!(lookup(t.as_str(), code).is_some(), "{t} lacks {code}");
        }
        for p in params {
            assert!(p.base == t.as_str() || p.base == "Resource" || p.base == "DomainResource");
            assert!(p.targets.windows(2).all(|w| w[0] < w[1]));
            assert_eq!(p.ptype == ParamType::Composite, !p.components.is_empty(), "{t} {}", p.code);
        }
    }
    assert!(lookup("Bundle", "_text").is_none());
    assert!(lookup("Patient", "_text").is_some());
    assert!(lookup("NoSuchType", "_id").is_none());
    assert!(params_for("NoSuchType").is_empty());
}

#[test]
fn table_spot_checks() {
    let subject = lookup("Observation", "subject").unwrap();
    assert_eq!(subject.ptype, ParamType::Reference);
    assert_eq!(subject.expression, "Observation.subject");

    let name = lookup("Patient", "name").unwrap();
    assert_eq!(name.ptype, ParamType::String);
    assert_eq!(name.expression, "Patient.name");

    let cvq = lookup("Observation", "code-value-quantity").unwrap();
    assert_eq!(cvq.ptype, ParamType::Composite);
    assert_eq!(cvq.components.len(), 2);
    assert_eq!(
        (cvq.components[0].code, cvq.components[0].ptype, cvq.components[0].expression),
        ("code", ParamType::Token, "code")
    );
    assert_eq!(
        (cvq.components[1].code, cvq.components[1].ptype, cvq.components[1].expression),
        ("value-quantity", ParamType::Quantity, "value.as(Quantity)")
    );

    assert_eq!(lookup("Encounter", "patient").unwrap().targets, ["Patient"]);
    let patient = lookup("Observation", "patient").unwrap();
    assert_eq!(patient.expression, "Observation.subject.where(resolve() is Patient)");
    assert_eq!(patient.url, "http://hl7.org/fhir/SearchParameter/clinical-patient");

    for t in ["Patient", "Observation"] {
        for code in ["_lastUpdated", "_tag", "_profile", "_security"] {
            let p = lookup(t, code).unwrap();
            assert_eq!(p.base, "Resource");
        }
    }
    assert_eq!(lookup("Patient", "_lastUpdated").unwrap().ptype, ParamType::Date);
    assert_eq!(lookup("Patient", "_lastUpdated").unwrap().expression, "Resource.meta.lastUpdated");
    assert_eq!(lookup("Location", "near").unwrap().ptype, ParamType::Special);
    assert_eq!(lookup("InsurancePlan", "name").unwrap().expression, "InsurancePlan.name | InsurancePlan.alias");
    assert_eq!(
        lookup("MedicationRequest", "code").unwrap().expression,
        "(MedicationRequest.medication as CodeableConcept)"
    );
}

#[test]
fn clinical_patient_on_observation_follows_patient_subjects_only() {
    let def = lookup("Observation", "patient").unwrap();
    let obs = json!({"resourceType": "Observation", "subject": {"reference": "Patient/x"}});
    let got = compiled(def).evaluate(&obs);
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].value, &obs["subject"]);
    let obs = json!({"resourceType": "Observation", "subject": {"reference": "Group/y"}});
    assert!(compiled(def).evaluate(&obs).is_empty());
    // Evaluated over another type, the row's expression yields nothing.
    let cond = json!({"resourceType": "Condition", "subject": {"reference": "Patient/x"}});
    assert!(compiled(def).evaluate(&cond).is_empty());
}

#[test]
fn composite_components_evaluate_relative_to_the_composite_node() {
    let def = lookup("Observation", "component-code-value-quantity").unwrap();
    let obs = json!({"resourceType": "Observation", "component": [
        {"code": {"text": "systolic"}, "valueQuantity": {"value": 120, "unit": "mmHg"}},
        {"code": {"text": "note"}, "valueString": "hi"}
    ]});
    let nodes = compiled(def).evaluate(&obs);
    assert_eq!(nodes.len(), 2);
    let value = compiled_component(def, 1).unwrap();
    let q = value.evaluate_on(&nodes[0]);
    assert_eq!(q.len(), 1);
    assert_eq!(q[0].type_name, Some("Quantity"));
    assert!(value.evaluate_on(&nodes[1]).is_empty());
    assert_eq!(compiled_component(def, 0).unwrap().evaluate_on(&nodes[1])[0].value, &json!({"text": "note"}));
    assert!(compiled_component(def, 2).is_none());
}

fn examples_dir() -> Option<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.cache/fhir-packages/hl7.fhir.r4.examples/package");
    if dir.is_dir() {
        Some(dir)
    } else {
        eprintln!("note: {} missing (scripts/fetch-fhir-packages.sh); skipping spec example checks", dir.display());
        None
    }
}

fn load(path: &Path) -> Option<Value> {
    let v: Value = serde_json::from_slice(&std::fs::read(path).ok()?).ok()?;
    v.get("resourceType").and_then(Value::as_str)?;
    Some(v)
}

#[test]
fn every_applicable_expression_evaluates_over_spec_examples() {
    let Some(dir) = examples_dir() else { return };
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().path()).collect();
    files.sort();
    let (mut resources, mut evaluations, mut hits) = (0, 0, 0);
    let mut params_hit = BTreeSet::new();
    // Every 4th file keeps the run short in the debug profile while covering all types.
    for path in files.iter().step_by(4) {
        let name = path.file_name().unwrap().to_string_lossy();
        if name == "package.json" || name == ".index.json" || !name.ends_with(".json") {
            continue;
        }
        let Some(res) = load(path) else { continue };
        let rtype = res["resourceType"].as_str().unwrap().to_owned();
        resources += 1;
        for def in params_for(&rtype) {
            let nodes = compiled(def).evaluate(&res);
            evaluations += 1;
            if !nodes.is_empty() {
                hits += 1;
                params_hit.insert((def.base, def.code));
            }
            for node in &nodes {
                assert!(!node.value.is_array() && !node.value.is_null(), "{name} {}: {node:?}", def.code);
                for i in 0..def.components.len() {
                    compiled_component(def, i).unwrap().evaluate_on_with_resource(node, &res);
                }
            }
        }
    }
    println!(
        "{resources} resources, {evaluations} evaluations, {hits} non-empty, {} parameters matched",
        params_hit.len()
    );
    assert!(resources > 1000);
    assert!(params_hit.len() > 500, "only {} parameters ever matched", params_hit.len());
}

#[test]
fn spot_checks_on_spec_examples() {
    let Some(dir) = examples_dir() else { return };
    let obs = load(&dir.join("Observation-example.json")).unwrap();
    let q = compiled(lookup("Observation", "value-quantity").unwrap()).evaluate(&obs);
    assert_eq!(q.len(), 1);
    assert_eq!(q[0].type_name, Some("Quantity"));
    assert_eq!(q[0].value, &obs["valueQuantity"]);
    let subject = compiled(lookup("Observation", "patient").unwrap()).evaluate(&obs);
    assert_eq!(subject.len(), 1);
    assert_eq!(subject[0].value["reference"], "Patient/example");

    let bp = load(&dir.join("Observation-blood-pressure.json")).unwrap();
    let def = lookup("Observation", "component-value-quantity").unwrap();
    let values = compiled(def).evaluate(&bp);
    assert_eq!(values.len(), 2);
    assert!(values.iter().all(|n| n.type_name == Some("Quantity")));

    let patient = load(&dir.join("Patient-example.json")).unwrap();
    let names = compiled(lookup("Patient", "name").unwrap()).evaluate(&patient);
    assert_eq!(names.len(), patient["name"].as_array().unwrap().len());
    let birth = compiled(lookup("Patient", "birthdate").unwrap()).evaluate(&patient);
    assert_eq!(birth.len(), 1);
    assert_eq!(birth[0].value, "1974-12-25");
    let deceased = compiled(lookup("Patient", "deceased").unwrap()).evaluate(&patient);
    assert_eq!(deceased.len(), 1);
    assert_eq!(deceased[0].value, &json!(false));
    let document = load(&dir.join("Bundle-father.json")).unwrap();
    let composition = compiled(lookup("Bundle", "composition").unwrap()).evaluate(&document);
    assert_eq!(composition.len(), 1);
    assert_eq!(composition[0].type_name, Some("Composition"));

    let phones = compiled(lookup("Patient", "phone").unwrap()).evaluate(&patient);
    assert!(!phones.is_empty() && phones.iter().all(|n| n.value["system"] == "phone"));
}
