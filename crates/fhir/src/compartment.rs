//! Patient compartment membership (CompartmentDefinition/patient).

use serde_json::Value;

use crate::generated::PATIENT_COMPARTMENT;
use crate::id::is_valid_id;
use crate::resource_type::ResourceType;

/// The compartment paths of `rtype` (empty if the type is not in the Patient compartment).
pub fn patient_paths(rtype: ResourceType) -> &'static [&'static str] {
    PATIENT_COMPARTMENT
        .binary_search_by(|(t, _)| (*t).cmp(rtype.as_str()))
        .map(|i| PATIENT_COMPARTMENT[i].1)
        .unwrap_or(&[])
}

/// The logical ids of the Patients whose compartment `resource` is in: deduplicated, in
/// first-seen order (a Patient's own id first).
///
/// Only literal references "Patient/<id>" count, optionally version-specific
/// ("/_history/<v>") or as an absolute http(s) URL ending in "/Patient/<id>" (the caller is
/// expected to have rejected or rewritten URLs of other servers). Contained, urn:uuid: and
/// conditional references are skipped: they must be resolved before storing.
pub fn patient_ids(resource: &Value, rtype: ResourceType) -> Vec<String> {
    let mut ids: Vec<String> = Vec::new();
    let mut push = |id: &str| {
        if !ids.iter().any(|x| x == id) {
            ids.push(id.to_owned());
        }
    };
    if rtype.as_str() == "Patient"
        && let Some(Value::String(id)) = resource.get("id")
        && is_valid_id(id)
    {
        push(id);
    }
    for path in patient_paths(rtype) {
        let segments: Vec<&str> = path.split('.').collect();
        visit(resource, &segments, &mut |target| {
            if let Some(Value::String(r)) = target.get("reference")
                && let Some(id) = patient_id_of(r)
            {
                push(id);
            }
        });
    }
    ids
}

/// Follows `segments` from `v`, descending into arrays at every level, and calls `f` on each
/// object reached.
fn visit<'a>(v: &'a Value, segments: &[&str], f: &mut impl FnMut(&'a Value)) {
    match v {
        Value::Array(items) => items.iter().for_each(|item| visit(item, segments, f)),
        Value::Object(map) => match segments.split_first() {
            None => f(v),
            Some((first, rest)) => {
                if let Some(child) = map.get(*first) {
                    visit(child, rest, f);
                }
            }
        },
        _ => {}
    }
}

/// "Patient/<id>", "Patient/<id>/_history/<v>", or an http(s) URL ending in one of those.
fn patient_id_of(reference: &str) -> Option<&str> {
    let mut parts: Vec<&str> = reference.split('/').collect();
    if parts.len() >= 4 && parts[parts.len() - 2] == "_history" {
        parts.truncate(parts.len() - 2);
    }
    let n = parts.len();
    if n < 2 || parts[n - 2] != "Patient" || !is_valid_id(parts[n - 1]) {
        return None;
    }
    let absolute = {
        let lower = reference.get(..8).unwrap_or(reference).to_ascii_lowercase();
        lower.starts_with("http://") || lower.starts_with("https://")
    };
    // Relative: exactly "Patient/<id>"; absolute: scheme://host[/base]/Patient/<id>.
    if (n == 2 && !absolute) || (absolute && n >= 5) { Some(parts[n - 1]) } else { None }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn rt(s: &str) -> ResourceType {
        ResourceType::parse(s).unwrap()
    }

    #[test]
    fn table_is_sorted_and_known() {
        assert!(PATIENT_COMPARTMENT.windows(2).all(|w| w[0].0 < w[1].0));
        for (t, paths) in PATIENT_COMPARTMENT {
            assert!(ResourceType::parse(t).is_ok(), "{t}");
            assert!(!paths.is_empty());
        }
        assert_eq!(patient_paths(rt("Observation")), &["subject", "performer"]);
        assert!(patient_paths(rt("Organization")).is_empty());
    }

    #[test]
    fn observation_subject_and_performer() {
        let obs = json!({
            "resourceType": "Observation",
            "subject": {"reference": "Patient/p1"},
            "performer": [{"reference": "Practitioner/x"}, {"reference": "Patient/p2/_history/3"}, {"reference": "Patient/p1"}],
            "hasMember": [{"reference": "Patient/not-a-compartment-path"}]
        });
        assert_eq!(patient_ids(&obs, rt("Observation")), vec!["p1", "p2"]);
    }

    #[test]
    fn nested_arrays_and_absolute_urls() {
        let appt = json!({
            "resourceType": "Appointment",
            "participant": [
                {"actor": {"reference": "https://h/fhir/Patient/a"}},
                {"actor": {"reference": "Practitioner/b"}},
                {"actor": {"reference": "http://h/Patient/c/_history/1"}}
            ]
        });
        assert_eq!(patient_ids(&appt, rt("Appointment")), vec!["a", "c"]);
    }

    #[test]
    fn patient_itself_and_links() {
        let p = json!({"resourceType": "Patient", "id": "me", "link": [{"other": {"reference": "Patient/other"}, "type": "seealso"}]});
        assert_eq!(patient_ids(&p, rt("Patient")), vec!["me", "other"]);
        let p = json!({"resourceType": "Patient"});
        assert!(patient_ids(&p, rt("Patient")).is_empty());
    }

    #[test]
    fn only_patient_literal_references_count() {
        for r in [
            "#p",
            "urn:uuid:1",
            "Patient?identifier=x",
            "Group/1",
            "x/Patient/1",
            "Patient/a b",
            "Patient/",
            "https://Patient/1",
            "Patient/1/_history",
            "Patient/1/x/2",
        ] {
            assert_eq!(patient_id_of(r), None, "{r}");
        }
        assert_eq!(patient_id_of("Patient/1"), Some("1"));
        assert_eq!(patient_id_of("HTTPS://h/Patient/1"), Some("1"));
    }
}
