//! Parsing a request body and checking the generic FHIR JSON rules (R4 json.html).
//!
//! Checked: the body is a JSON object with a known R4 `resourceType`; `id` (if any) is a
//! valid id; no nulls, empty objects, empty arrays, empty strings or arrays of arrays anywhere;
//! nulls inside arrays only as the primitive-extension placeholder, paired with the sibling
//! `_name` array; every nested resource (contained, Bundle.entry.resource,
//! Parameters.parameter.resource: any object with a "resourceType") recursively.
//!
//! Not checked: element names and types per StructureDefinition, cardinalities, invariants.

use serde_json::{Map, Value};

use crate::error::FhirError;
use crate::id::Id;
use crate::resource_type::ResourceType;

/// Deepest JSON nesting walked; the same as serde_json's parse recursion limit, so anything
/// `parse_resource` returns can be checked, while hand-built values cannot blow the stack.
pub const MAX_DEPTH: usize = 128;

/// Parses a request body as JSON. The error gives line and column and serde_json's syntax
/// description, never the content.
pub fn parse_resource(bytes: &[u8]) -> Result<Value, FhirError> {
    serde_json::from_slice(bytes).map_err(|e| {
        use serde_json::error::Category;
        let message = match e.classify() {
            // Syntax/EOF messages are fixed strings ("expected `,` or `}`", "EOF while parsing
            // a string", ...); strip serde_json's own " at line .. column .." suffix.
            Category::Syntax | Category::Eof => {
                let full = e.to_string();
                match full.rfind(" at line ") {
                    Some(i) => full[..i].to_owned(),
                    None => full,
                }
            }
            Category::Data | Category::Io => "malformed JSON value".to_owned(),
        };
        FhirError::Json { message, line: e.line(), column: e.column() }
    })
}

/// Checks a resource (see the module docs) and returns its type and id.
pub fn check_resource(v: &Value) -> Result<(ResourceType, Option<Id>), FhirError> {
    let rtype = match v.get("resourceType") {
        Some(Value::String(t)) => ResourceType::parse(t)?,
        _ => {
            let reason = if v.is_object() {
                "missing or non-string \"resourceType\""
            } else {
                "a resource must be a JSON object"
            };
            return Err(FhirError::Structure { path: "(root)".into(), reason });
        }
    };
    check_resource_at(v, &Path::root(rtype.as_str()), 0)
}

/// Like [`check_resource`], for a resource nested in a larger document: paths in errors start
/// with `prefix` (e.g. "Bundle.entry[2].resource").
pub(crate) fn check_nested_resource(v: &Value, prefix: &str) -> Result<(ResourceType, Option<Id>), FhirError> {
    check_resource_at(v, &Path::root(prefix), 0)
}

fn check_resource_at(v: &Value, path: &Path<'_>, depth: usize) -> Result<(ResourceType, Option<Id>), FhirError> {
    let Value::Object(map) = v else {
        return Err(path.structure("a resource must be a JSON object"));
    };
    let rtype = match map.get("resourceType") {
        Some(Value::String(t)) => {
            ResourceType::parse(t).map_err(|_| path.key("resourceType").structure("not a FHIR R4 resource type"))?
        }
        _ => return Err(path.structure("missing or non-string \"resourceType\"")),
    };
    let id = match map.get("id") {
        None => None,
        Some(Value::String(s)) => Some(Id::parse_at(s, &path.key("id").render())?),
        Some(_) => {
            return Err(FhirError::InvalidId { path: path.key("id").render() });
        }
    };
    check_members(map, path, depth)?;
    Ok((rtype, id))
}

fn check_value(v: &Value, path: &Path<'_>, depth: usize) -> Result<(), FhirError> {
    if depth > MAX_DEPTH {
        return Err(FhirError::TooDeep { path: path.render(), limit: MAX_DEPTH });
    }
    match v {
        Value::Null => Err(path.structure(
            "null is not allowed (only inside an array, as the placeholder paired with the \
             primitive extension array)",
        )),
        Value::String(s) if s.is_empty() => Err(path.structure("empty string (omit the element instead)")),
        Value::Object(map) if map.is_empty() => Err(path.structure("empty object (omit the element instead)")),
        Value::Object(map) if map.contains_key("resourceType") => check_resource_at(v, path, depth).map(|_| ()),
        Value::Object(map) => check_members(map, path, depth),
        Value::Array(items) if items.is_empty() => Err(path.structure("empty array (omit the element instead)")),
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                let p = path.index(i);
                match item {
                    // Pairing with the sibling array is checked by the parent object.
                    Value::Null => {}
                    Value::Array(_) => return Err(p.structure("arrays of arrays are not allowed")),
                    _ => check_value(item, &p, depth + 1)?,
                }
            }
            Ok(())
        }
        Value::String(_) | Value::Bool(_) | Value::Number(_) => Ok(()),
    }
}

fn check_members(map: &Map<String, Value>, path: &Path<'_>, depth: usize) -> Result<(), FhirError> {
    for (k, child) in map {
        if k.is_empty() {
            return Err(path.structure("empty property name"));
        }
        let p = path.key(k);
        if k == "contained" {
            // Contained resources must be resources, not just any objects.
            let Value::Array(items) = child else {
                return Err(p.structure("contained must be an array of resources"));
            };
            if items.is_empty() {
                return Err(p.structure("empty array (omit the element instead)"));
            }
            for (i, item) in items.iter().enumerate() {
                check_resource_at(item, &p.index(i), depth + 1)?;
            }
            continue;
        }
        check_value(child, &p, depth + 1)?;
        if let Value::Array(items) = child {
            check_null_pairing(map, k, items, path)?;
        }
    }
    Ok(())
}

/// R4 json.html, "Representing primitive elements": repeating primitives with extensions are
/// two parallel arrays, `"given": ["a", null]` / `"_given": [null, {...}]`, where null fills
/// the positions that have no value (resp. no id/extension). So a null at position i of one
/// array needs a non-null at position i of the other, and the arrays have equal length.
fn check_null_pairing(map: &Map<String, Value>, key: &str, items: &[Value], path: &Path<'_>) -> Result<(), FhirError> {
    let sibling_key = match key.strip_prefix('_') {
        Some(base) => base.to_owned(),
        None => format!("_{key}"),
    };
    let sibling = match map.get(&sibling_key) {
        Some(Value::Array(s)) => Some(s),
        _ => None,
    };
    if let Some(sibling) = sibling
        && sibling.len() != items.len()
    {
        // Report once, on the value array.
        let value_key = if key.starts_with('_') { sibling_key.as_str() } else { key };
        return Err(path
            .key(value_key)
            .structure("primitive value array and its '_' extension array differ in length"));
    }
    for (i, item) in items.iter().enumerate() {
        if item.is_null() && sibling.and_then(|s| s.get(i)).is_none_or(|s| s.is_null()) {
            return Err(path.key(key).index(i).structure(
                "null in an array is only allowed when the paired '_' array (or value array) has an entry at the same position",
            ));
        }
    }
    Ok(())
}

/// A location in the JSON, built on the stack as the walk descends and only rendered to a
/// string when an error is reported (so checking valid resources allocates nothing for paths).
#[derive(Clone, Copy)]
struct Path<'a> {
    parent: Option<&'a Path<'a>>,
    seg: Seg<'a>,
}

#[derive(Clone, Copy)]
enum Seg<'a> {
    Root(&'a str),
    Key(&'a str),
    Index(usize),
}

impl<'a> Path<'a> {
    fn root(s: &'a str) -> Path<'a> {
        Path { parent: None, seg: Seg::Root(s) }
    }
    fn key(&'a self, k: &'a str) -> Path<'a> {
        Path { parent: Some(self), seg: Seg::Key(k) }
    }
    fn index(&'a self, i: usize) -> Path<'a> {
        Path { parent: Some(self), seg: Seg::Index(i) }
    }
    fn render(&self) -> String {
        let mut segs = vec![self.seg];
        let mut cur = self.parent;
        while let Some(p) = cur {
            segs.push(p.seg);
            cur = p.parent;
        }
        let mut out = String::new();
        for seg in segs.iter().rev() {
            match seg {
                Seg::Root(s) => out.push_str(s),
                Seg::Key(k) if out.is_empty() => out.push_str(k),
                Seg::Key(k) => {
                    out.push('.');
                    out.push_str(k);
                }
                Seg::Index(i) => out.push_str(&format!("[{i}]")),
            }
        }
        out
    }
    fn structure(&self, reason: &'static str) -> FhirError {
        FhirError::Structure { path: self.render(), reason }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    fn err_path(v: Value) -> String {
        match check_resource(&v) {
            Err(e) => e.path().unwrap_or("").to_owned(),
            Ok(_) => panic!("accepted {v}"),
        }
    }

    #[test]
    fn accepts_minimal_and_returns_type_and_id() {
        let (t, id) = check_resource(&json!({"resourceType": "Patient", "id": "p1"})).unwrap();
        assert_eq!((t.as_str(), id.map(Id::into_string)), ("Patient", Some("p1".into())));
        let (_, id) = check_resource(&json!({"resourceType": "Basic"})).unwrap();
        assert_eq!(id, None);
    }

    #[test]
    fn rejects_bad_roots() {
        assert!(matches!(check_resource(&json!([])), Err(FhirError::Structure { .. })));
        assert!(matches!(check_resource(&json!({"id": "1"})), Err(FhirError::Structure { .. })));
        assert!(matches!(check_resource(&json!({"resourceType": 1})), Err(FhirError::Structure { .. })));
        assert!(matches!(check_resource(&json!({"resourceType": "Foo"})), Err(FhirError::UnknownResourceType(_))));
        assert_eq!(err_path(json!({"resourceType": "Patient", "id": "a b"})), "Patient.id");
        assert_eq!(err_path(json!({"resourceType": "Patient", "id": 1})), "Patient.id");
    }

    #[test]
    fn names_the_offending_element() {
        assert_eq!(
            err_path(json!({"resourceType": "Patient", "name": [{"given": ["a", ""]}]})),
            "Patient.name[0].given[1]"
        );
        assert_eq!(err_path(json!({"resourceType": "Patient", "active": null})), "Patient.active");
        assert_eq!(err_path(json!({"resourceType": "Patient", "name": []})), "Patient.name");
        assert_eq!(err_path(json!({"resourceType": "Patient", "name": [{}]})), "Patient.name[0]");
        assert_eq!(err_path(json!({"resourceType": "Patient", "name": [[{"text": "x"}]]})), "Patient.name[0]");
        assert_eq!(err_path(json!({"resourceType": "Patient", "": 1})), "Patient");
    }

    #[test]
    fn error_messages_do_not_contain_content() {
        let e = check_resource(
            &json!({"resourceType": "Patient", "name": [{"given": ["Secretname", ""]}], "id": "Secret id"}),
        )
        .unwrap_err();
        assert!(!e.to_string().contains("Secret"));
    }

    #[test]
    fn primitive_extension_nulls() {
        let ext = json!({"extension": [{"url": "http://x", "valueString": "y"}]});
        let ok = json!({"resourceType": "Patient", "name": [{"given": ["a", "b"], "_given": [null, ext]}]});
        check_resource(&ok).unwrap();
        let ok = json!({"resourceType": "Patient", "name": [{"given": [null, "b"], "_given": [ext, null]}]});
        check_resource(&ok).unwrap();
        let bad = json!({"resourceType": "Patient", "name": [{"given": ["a", null]}]});
        assert_eq!(err_path(bad), "Patient.name[0].given[1]");
        let bad = json!({"resourceType": "Patient", "name": [{"given": [null, "b"], "_given": [null, ext]}]});
        assert_eq!(err_path(bad), "Patient.name[0].given[0]");
        let bad = json!({"resourceType": "Patient", "name": [{"given": ["a"], "_given": [null, ext]}]});
        assert_eq!(err_path(bad), "Patient.name[0].given");
        let bad = json!({"resourceType": "Patient", "name": [{"_given": [null]}]});
        assert_eq!(err_path(bad), "Patient.name[0]._given[0]");
    }

    #[test]
    fn nested_resources_are_checked() {
        let bad = json!({"resourceType": "Patient", "contained": [{"resourceType": "Nope", "id": "x"}]});
        assert_eq!(err_path(bad), "Patient.contained[0].resourceType");
        let bad = json!({"resourceType": "Patient", "contained": [{"id": "x"}]});
        assert_eq!(err_path(bad), "Patient.contained[0]");
        let bad =
            json!({"resourceType": "Patient", "contained": [{"resourceType": "Organization", "id": "x", "name": ""}]});
        assert_eq!(err_path(bad), "Patient.contained[0].name");
        let bad = json!({"resourceType": "Bundle", "entry": [{"resource": {"resourceType": "Patient", "id": "_"}}]});
        assert_eq!(err_path(bad), "Bundle.entry[0].resource.id");
        let bad = json!({"resourceType": "Patient", "contained": {"resourceType": "Organization"}});
        assert_eq!(err_path(bad), "Patient.contained");
    }

    #[test]
    fn too_deep_is_an_error_not_a_crash() {
        let mut v = json!({"x": 1});
        for _ in 0..(MAX_DEPTH + 10) {
            v = json!({"extension": [v]});
        }
        let r = json!({"resourceType": "Basic", "code": v});
        assert!(matches!(check_resource(&r), Err(FhirError::TooDeep { .. })));
    }

    #[test]
    fn parse_reports_position_not_content() {
        let e = parse_resource(b"{\n  \"resourceType\": \"Patient\",\n  \"name\": SecretValue\n}").unwrap_err();
        let FhirError::Json { line, column, .. } = &e else { panic!("{e:?}") };
        assert_eq!(*line, 3);
        assert!(*column > 0);
        assert!(!e.to_string().contains("Secret"), "{e}");
        assert_eq!(e.issue_code(), "structure");
        assert!(parse_resource(b"").is_err());
        assert!(parse_resource(b"{} x").is_err());
    }

    #[test]
    fn decimals_keep_their_lexical_form() {
        let src = r#"{"resourceType":"Observation","valueQuantity":{"value":1.50}}"#;
        let v = parse_resource(src.as_bytes()).unwrap();
        check_resource(&v).unwrap();
        assert_eq!(v.to_string(), src);
        let v =
            parse_resource(br#"{"b":0.000000000000000000000000000001,"c":123456789012345678901234567890,"d":-0.0}"#)
                .unwrap();
        assert_eq!(
            v.to_string(),
            r#"{"b":0.000000000000000000000000000001,"c":123456789012345678901234567890,"d":-0.0}"#
        );
        // serde_json normalises exponent notation ("1.0e2" -> "1.0e+2"): same value and
        // precision, different text. Exponents are rare in FHIR data; pinned here so a
        // change in serde_json's behaviour is noticed.
        let v = parse_resource(br#"{"a":1.0e2,"b":1.5E-3}"#).unwrap();
        assert_eq!(v.to_string(), r#"{"a":1.0e+2,"b":1.5e-3}"#);
    }

    fn arb_json() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            "[a-z]{0,3}".prop_map(Value::String),
        ];
        leaf.prop_recursive(5, 64, 6, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                proptest::collection::vec(
                    (
                        prop_oneof![
                            Just("resourceType".to_owned()),
                            Just("id".to_owned()),
                            Just("contained".to_owned()),
                            Just("given".to_owned()),
                            Just("_given".to_owned()),
                            "[a-z]{0,2}"
                        ],
                        inner
                    ),
                    0..5
                )
                .prop_map(|kv| Value::Object(kv.into_iter().collect())),
            ]
        })
    }

    proptest! {
        #[test]
        fn never_panics_on_arbitrary_json(v in arb_json()) {
            let _ = check_resource(&v);
            let wrapped = json!({"resourceType": "Patient", "contained": [v.clone()], "extension": [v]});
            let _ = check_resource(&wrapped);
        }

        #[test]
        fn never_panics_on_arbitrary_bytes(b in proptest::collection::vec(any::<u8>(), 0..200)) {
            if let Ok(v) = parse_resource(&b) {
                let _ = check_resource(&v);
            }
        }

        #[test]
        fn accepted_resources_round_trip_through_text(v in arb_json()) {
            let r = json!({"resourceType": "Basic", "id": "x", "extension": [v]});
            if let Ok(got) = check_resource(&r) {
                let again = parse_resource(r.to_string().as_bytes()).unwrap();
                prop_assert_eq!(&again, &r);
                prop_assert_eq!(check_resource(&again).unwrap(), got);
            }
        }
    }
}
