//! Finding every `Reference.reference` in a resource.
//!
//! Purely structural: any object member named "reference" whose value is a JSON string is a
//! reference. That covers References inside extensions, backbone elements, contained resources
//! and nested Bundle entries without a per-type schema.

use serde_json::Value;

/// Calls `f(path, reference)` for every reference string in `v`, in document order. `path` is
/// the location of the Reference element relative to `v`, e.g. "subject",
/// "participant[0].individual" or "contained[1].subject" ("" if `v` itself is a Reference).
pub fn for_each_reference(v: &Value, mut f: impl FnMut(&str, &str)) {
    let mut path = String::new();
    walk(v, &mut path, &mut f);
}

fn walk(v: &Value, path: &mut String, f: &mut impl FnMut(&str, &str)) {
    match v {
        Value::Object(map) => {
            if let Some(Value::String(r)) = map.get("reference") {
                f(path, r);
            }
            for (k, child) in map {
                if matches!(child, Value::Object(_) | Value::Array(_)) {
                    let len = path.len();
                    if !path.is_empty() {
                        path.push('.');
                    }
                    path.push_str(k);
                    walk(child, path, f);
                    path.truncate(len);
                }
            }
        }
        Value::Array(items) => {
            for (i, child) in items.iter().enumerate() {
                let len = path.len();
                path.push_str(&format!("[{i}]"));
                walk(child, path, f);
                path.truncate(len);
            }
        }
        _ => {}
    }
}

/// Calls `f` on every reference string in `v` so it can be rewritten in place (e.g. replacing
/// transaction `urn:uuid:` placeholders by assigned "Type/id").
pub fn for_each_reference_mut(v: &mut Value, mut f: impl FnMut(&mut String)) {
    walk_mut(v, &mut f);
}

fn walk_mut(v: &mut Value, f: &mut impl FnMut(&mut String)) {
    match v {
        Value::Object(map) => {
            for (k, child) in map.iter_mut() {
                match child {
                    Value::String(s) if k == "reference" => f(s),
                    Value::Object(_) | Value::Array(_) => walk_mut(child, f),
                    _ => {}
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(|c| walk_mut(c, f)),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn sample() -> Value {
        json!({
            "resourceType": "Encounter",
            "subject": {"reference": "Patient/1", "display": "x"},
            "participant": [
                {"individual": {"reference": "Practitioner/2"}},
                {"individual": {"display": "no ref"}},
                {"individual": {"reference": "RelatedPerson/3"}}
            ],
            "contained": [{"resourceType": "Observation", "id": "o", "subject": {"reference": "#"}}],
            "extension": [{"url": "u", "valueReference": {"reference": "urn:uuid:abc"}}],
            "reference": 5,
            "note": [{"text": "reference"}]
        })
    }

    #[test]
    fn finds_all_with_paths() {
        let mut found = vec![];
        for_each_reference(&sample(), |p, r| found.push((p.to_owned(), r.to_owned())));
        let expected = [
            ("subject", "Patient/1"),
            ("participant[0].individual", "Practitioner/2"),
            ("participant[2].individual", "RelatedPerson/3"),
            ("contained[0].subject", "#"),
            ("extension[0].valueReference", "urn:uuid:abc"),
        ];
        let expected: Vec<_> = expected.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect();
        assert_eq!(found, expected);
    }

    #[test]
    fn root_reference_has_empty_path() {
        let mut found = vec![];
        for_each_reference(&json!({"reference": "Patient/1"}), |p, r| found.push((p.to_owned(), r.to_owned())));
        assert_eq!(found, vec![(String::new(), "Patient/1".to_owned())]);
    }

    #[test]
    fn rewrites_in_place() {
        let mut v = sample();
        for_each_reference_mut(&mut v, |r| {
            if r == "urn:uuid:abc" {
                *r = "Patient/9".into();
            }
        });
        assert_eq!(v["extension"][0]["valueReference"]["reference"], "Patient/9");
        let mut n = 0;
        for_each_reference_mut(&mut v, |_| n += 1);
        assert_eq!(n, 5);
        assert_eq!(v["reference"], 5);
    }
}
