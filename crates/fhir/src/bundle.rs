//! Transaction and batch request Bundles (R4 http.html#transaction): shape checks only. The
//! server does the processing (ordering, urn:uuid resolution, conditional logic).

use std::collections::HashMap;

use serde_json::Value;

use crate::error::FhirError;
use crate::resource_type::ResourceType;
use crate::validate::check_nested_resource;

/// Bundle.type of a request Bundle.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum BundleKind {
    /// All-or-nothing.
    Transaction,
    /// Independent entries.
    Batch,
}

/// Bundle.entry.request.method.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Method {
    /// GET
    Get,
    /// HEAD
    Head,
    /// POST
    Post,
    /// PUT
    Put,
    /// PATCH
    Patch,
    /// DELETE
    Delete,
}

impl Method {
    /// Parses the FHIR code (upper case, as the http-verb value set defines it).
    pub fn parse(s: &str) -> Option<Method> {
        Some(match s {
            "GET" => Method::Get,
            "HEAD" => Method::Head,
            "POST" => Method::Post,
            "PUT" => Method::Put,
            "PATCH" => Method::Patch,
            "DELETE" => Method::Delete,
            _ => return None,
        })
    }

    /// The FHIR / HTTP code.
    pub fn as_str(&self) -> &'static str {
        match self {
            Method::Get => "GET",
            Method::Head => "HEAD",
            Method::Post => "POST",
            Method::Put => "PUT",
            Method::Patch => "PATCH",
            Method::Delete => "DELETE",
        }
    }
}

/// Bundle.entry.request.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct EntryRequest {
    /// request.method
    pub method: Method,
    /// request.url, relative to the base ("Patient", "Patient/1", "Patient?name=x").
    pub url: String,
    /// request.ifNoneExist (conditional create query, without '?').
    pub if_none_exist: Option<String>,
    /// request.ifMatch (ETag).
    pub if_match: Option<String>,
    /// request.ifNoneMatch.
    pub if_none_match: Option<String>,
    /// request.ifModifiedSince (instant, unparsed).
    pub if_modified_since: Option<String>,
}

/// One entry of a request Bundle.
#[derive(Clone, PartialEq, Debug)]
pub struct RequestEntry {
    /// Position in Bundle.entry (0-based), for error messages and the response Bundle.
    pub index: usize,
    /// entry.fullUrl (often "urn:uuid:..." that other entries reference).
    pub full_url: Option<String>,
    /// entry.resource, already checked with `check_resource` rules.
    pub resource: Option<Value>,
    /// entry.request.
    pub request: EntryRequest,
}

/// Splits a transaction or batch Bundle into its entries, checking their shape.
///
/// The entry count is checked against `max_entries` before anything else is examined, so an
/// oversized request costs little. Resources are checked as by `check_resource`, with paths
/// like "Bundle.entry[2].resource.name[0]".
pub fn parse_request_bundle(v: Value, max_entries: usize) -> Result<(BundleKind, Vec<RequestEntry>), FhirError> {
    let Value::Object(map) = v else {
        return Err(err("Bundle", "a Bundle must be a JSON object"));
    };
    if map.get("resourceType").and_then(Value::as_str) != Some("Bundle") {
        return Err(err("Bundle.resourceType", "expected a Bundle"));
    }
    let kind = match map.get("type").and_then(Value::as_str) {
        Some("transaction") => BundleKind::Transaction,
        Some("batch") => BundleKind::Batch,
        _ => {
            return Err(err("Bundle.type", "Bundle.type must be \"transaction\" or \"batch\""));
        }
    };
    let count = match map.get("entry") {
        None => 0,
        Some(Value::Array(entries)) => entries.len(),
        Some(_) => return Err(err("Bundle.entry", "entry must be an array")),
    };
    if count > max_entries {
        return Err(FhirError::TooManyEntries { count, limit: max_entries });
    }
    // One pass of the generic JSON rules over everything (entries, their resources, search,
    // extensions...), so errors name paths like "Bundle.entry[2].resource.name[0]".
    let v = Value::Object(map);
    check_nested_resource(&v, "Bundle")?;
    let entries = match v {
        Value::Object(mut map) => match map.remove("entry") {
            Some(Value::Array(entries)) => entries,
            _ => Vec::new(),
        },
        _ => Vec::new(),
    };

    let mut seen_full_urls: HashMap<String, usize> = HashMap::new();
    let mut out = Vec::with_capacity(entries.len());
    for (index, entry) in entries.into_iter().enumerate() {
        let e = parse_entry(index, entry)?;
        if let Some(url) = &e.full_url
            && let Some(first) = seen_full_urls.insert(url.clone(), index)
        {
            return Err(FhirError::Bundle {
                path: format!("Bundle.entry[{index}].fullUrl"),
                reason: format!("same fullUrl as Bundle.entry[{first}]"),
            });
        }
        out.push(e);
    }
    Ok((kind, out))
}

fn err(path: &str, reason: &str) -> FhirError {
    FhirError::Bundle { path: path.to_owned(), reason: reason.to_owned() }
}

fn parse_entry(index: usize, entry: Value) -> Result<RequestEntry, FhirError> {
    let at = |p: &str| format!("Bundle.entry[{index}]{p}");
    let Value::Object(mut entry) = entry else {
        return Err(err(&at(""), "an entry must be a JSON object"));
    };
    let full_url = optional_string(&entry, "fullUrl", &at(".fullUrl"))?;
    let resource = entry.remove("resource");
    let request = match entry.remove("request") {
        Some(Value::Object(r)) => r,
        _ => return Err(err(&at(".request"), "each entry needs a request object")),
    };
    let req_at = |p: &str| at(&format!(".request.{p}"));
    let method = request
        .get("method")
        .and_then(Value::as_str)
        .and_then(Method::parse)
        .ok_or_else(|| err(&req_at("method"), "request.method must be GET, HEAD, POST, PUT, PATCH or DELETE"))?;
    let url = optional_string(&request, "url", &req_at("url"))?
        .ok_or_else(|| err(&req_at("url"), "request.url is required"))?;
    let request = EntryRequest {
        method,
        url,
        if_none_exist: optional_string(&request, "ifNoneExist", &req_at("ifNoneExist"))?,
        if_match: optional_string(&request, "ifMatch", &req_at("ifMatch"))?,
        if_none_match: optional_string(&request, "ifNoneMatch", &req_at("ifNoneMatch"))?,
        if_modified_since: optional_string(&request, "ifModifiedSince", &req_at("ifModifiedSince"))?,
    };

    match (&resource, method) {
        (None, Method::Post | Method::Put) => {
            return Err(err(&at(".resource"), "POST and PUT entries need a resource"));
        }
        (Some(_), Method::Get | Method::Head | Method::Delete) => {
            return Err(err(&at(".resource"), "GET, HEAD and DELETE entries must not have a resource"));
        }
        (Some(r), _) => {
            // Already checked as a resource if it has a resourceType; make sure it has one.
            let rtype = r
                .get("resourceType")
                .and_then(Value::as_str)
                .and_then(|t| ResourceType::parse(t).ok())
                .ok_or_else(|| err(&at(".resource"), "entry.resource must be a resource"))?;
            // POST "Type", PUT "Type/id" or "Type?query": the URL's type must be the
            // resource's (PATCH bodies are Binary/Parameters, so not compared).
            let url_type = request.url.split(['/', '?']).next().unwrap_or("");
            if matches!(method, Method::Post | Method::Put) && url_type != rtype.as_str() {
                return Err(err(&req_at("url"), "request.url does not name the type of entry.resource"));
            }
        }
        (None, _) => {}
    }
    Ok(RequestEntry { index, full_url, resource, request })
}

/// A member that must be a non-empty string if present.
fn optional_string(map: &serde_json::Map<String, Value>, key: &str, path: &str) -> Result<Option<String>, FhirError> {
    match map.get(key) {
        None => Ok(None),
        Some(Value::String(s)) if !s.is_empty() => Ok(Some(s.clone())),
        Some(_) => Err(err(path, "must be a non-empty string")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn bundle(kind: &str, entries: Value) -> Value {
        json!({"resourceType": "Bundle", "type": kind, "entry": entries})
    }

    fn path_of(r: Result<(BundleKind, Vec<RequestEntry>), FhirError>) -> String {
        r.unwrap_err().path().unwrap_or("").to_owned()
    }

    #[test]
    fn parses_a_transaction() {
        let b = bundle(
            "transaction",
            json!([
                {"fullUrl": "urn:uuid:1", "resource": {"resourceType": "Patient"}, "request": {"method": "POST", "url": "Patient", "ifNoneExist": "identifier=a|b"}},
                {"resource": {"resourceType": "Observation", "id": "o", "subject": {"reference": "urn:uuid:1"}}, "request": {"method": "PUT", "url": "Observation/o", "ifMatch": "W/\"1\""}},
                {"request": {"method": "DELETE", "url": "Patient/9"}},
                {"request": {"method": "GET", "url": "Patient?name=x"}}
            ]),
        );
        let (kind, entries) = parse_request_bundle(b, 10).unwrap();
        assert_eq!(kind, BundleKind::Transaction);
        assert_eq!(entries.len(), 4);
        assert_eq!(entries[0].full_url.as_deref(), Some("urn:uuid:1"));
        assert_eq!(entries[0].request.if_none_exist.as_deref(), Some("identifier=a|b"));
        assert_eq!(entries[1].request.method, Method::Put);
        assert_eq!(entries[1].request.if_match.as_deref(), Some("W/\"1\""));
        assert_eq!(entries[1].resource.as_ref().unwrap()["id"], "o");
        assert_eq!(entries[3].index, 3);
        assert!(entries[3].resource.is_none());
    }

    #[test]
    fn empty_batch() {
        let (kind, entries) = parse_request_bundle(json!({"resourceType": "Bundle", "type": "batch"}), 0).unwrap();
        assert_eq!(kind, BundleKind::Batch);
        assert!(entries.is_empty());
    }

    #[test]
    fn rejects_wrong_bundles() {
        assert_eq!(path_of(parse_request_bundle(json!({"resourceType": "Patient"}), 5)), "Bundle.resourceType");
        assert_eq!(
            path_of(parse_request_bundle(json!({"resourceType": "Bundle", "type": "searchset"}), 5)),
            "Bundle.type"
        );
        assert_eq!(
            path_of(parse_request_bundle(json!({"resourceType": "Bundle", "type": "batch", "entry": {}}), 5)),
            "Bundle.entry"
        );
        assert_eq!(
            path_of(parse_request_bundle(json!({"resourceType": "Bundle", "type": "batch", "id": "a b"}), 5)),
            "Bundle.id"
        );
    }

    #[test]
    fn too_many_entries() {
        let e = parse_request_bundle(bundle("batch", json!([{}, {}, {}])), 2).unwrap_err();
        assert_eq!(e, FhirError::TooManyEntries { count: 3, limit: 2 });
        assert_eq!(e.issue_code(), "too-costly");
        assert!(e.to_string().contains('2'));
    }

    #[test]
    fn entry_errors_name_the_entry() {
        let ok_req = json!({"method": "GET", "url": "Patient"});
        let cases = [
            (json!([{"request": ok_req.clone()}, 1]), "Bundle.entry[1]"),
            (
                json!([{"request": ok_req.clone()}, {"resource": {"resourceType": "Patient"}}]),
                "Bundle.entry[1].request",
            ),
            (json!([{"request": {"method": "post", "url": "Patient"}}]), "Bundle.entry[0].request.method"),
            (json!([{"request": {"method": "GET"}}]), "Bundle.entry[0].request.url"),
            (json!([{"request": {"method": "GET", "url": ""}}]), "Bundle.entry[0].request.url"),
            (json!([{"request": {"method": "POST", "url": "Patient"}}]), "Bundle.entry[0].resource"),
            (
                json!([{"request": {"method": "DELETE", "url": "Patient/1"}, "resource": {"resourceType": "Patient"}}]),
                "Bundle.entry[0].resource",
            ),
            (
                json!([{"request": {"method": "PUT", "url": "Patient/1"}, "resource": {"resourceType": "Patient", "name": []}}]),
                "Bundle.entry[0].resource.name",
            ),
            (
                json!([{"request": {"method": "PUT", "url": "Patient/1"}, "resource": {"resourceType": "Observation"}}]),
                "Bundle.entry[0].request.url",
            ),
            (
                json!([{"request": {"method": "GET", "url": "Patient", "ifMatch": 1}}]),
                "Bundle.entry[0].request.ifMatch",
            ),
        ];
        for (entries, want) in cases {
            assert_eq!(path_of(parse_request_bundle(bundle("transaction", entries.clone()), 10)), want, "{entries}");
        }
    }

    #[test]
    fn duplicate_full_url() {
        let e = |u: &str| json!({"fullUrl": u, "request": {"method": "POST", "url": "Patient"}, "resource": {"resourceType": "Patient"}});
        let r =
            parse_request_bundle(bundle("transaction", json!([e("urn:uuid:a"), e("urn:uuid:b"), e("urn:uuid:a")])), 10);
        let err = r.unwrap_err();
        assert_eq!(err.path(), Some("Bundle.entry[2].fullUrl"));
        assert!(err.to_string().contains("Bundle.entry[0]"));
    }

    #[test]
    fn methods_round_trip() {
        for m in [Method::Get, Method::Head, Method::Post, Method::Put, Method::Patch, Method::Delete] {
            assert_eq!(Method::parse(m.as_str()), Some(m));
        }
    }
}
