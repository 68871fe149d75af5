//! Content-Type and Accept / `_format` handling (R4 http.html#mime-type). JSON only.

use crate::error::{FhirError, quote_header};

const FHIR_JSON: &str = "application/fhir+json";
const JSON: &str = "application/json";

/// A parsed media type: lower-cased "type/subtype" and parameters (names lower-cased, values
/// unquoted).
struct MediaType {
    essence: String,
    params: Vec<(String, String)>,
}

fn parse_media_type(s: &str) -> Option<MediaType> {
    let mut parts = s.split(';');
    let essence = parts.next()?.trim().to_ascii_lowercase();
    let (ty, sub) = essence.split_once('/')?;
    if ty.is_empty() || sub.is_empty() {
        return None;
    }
    let mut params = Vec::new();
    for p in parts {
        let p = p.trim();
        if p.is_empty() {
            continue;
        }
        let (name, value) = p.split_once('=')?;
        let value = value.trim();
        let value = value.strip_prefix('"').and_then(|v| v.strip_suffix('"')).unwrap_or(value);
        params.push((name.trim().to_ascii_lowercase(), value.to_owned()));
    }
    Some(MediaType { essence, params })
}

impl MediaType {
    fn param(&self, name: &str) -> Option<&str> {
        self.params.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }
}

/// FHIR R4 is 4.0.x; "4.0" is the form http.html uses in the fhirVersion parameter.
fn is_r4(version: &str) -> bool {
    match version.strip_prefix("4.0") {
        Some("") => true,
        Some(rest) => rest.strip_prefix('.').is_some_and(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit())),
        None => false,
    }
}

/// Checks a request body's Content-Type: application/fhir+json or application/json, with
/// optional `charset=utf-8` (any case) and `fhirVersion=4.0[.x]`. Other parameters are
/// ignored (RFC 9110: unknown parameters carry no meaning for us). JSON Patch bodies are
/// recognised separately by [`is_json_patch`].
pub fn check_content_type(header: Option<&str>) -> Result<(), FhirError> {
    let header = header.map(str::trim).filter(|h| !h.is_empty()).ok_or_else(|| FhirError::UnsupportedMediaType {
        reason: "missing Content-Type; send application/fhir+json".to_owned(),
    })?;
    let unsupported =
        || FhirError::UnsupportedMediaType { reason: format!("{}; send application/fhir+json", quote_header(header)) };
    let mt = parse_media_type(header).ok_or_else(unsupported)?;
    if mt.essence != FHIR_JSON && mt.essence != JSON {
        return Err(unsupported());
    }
    if let Some(charset) = mt.param("charset")
        && !charset.eq_ignore_ascii_case("utf-8")
    {
        return Err(FhirError::UnsupportedMediaType {
            reason: format!("charset {} (only utf-8 is accepted)", quote_header(charset)),
        });
    }
    match mt.param("fhirversion") {
        Some(v) if !is_r4(v) => Err(FhirError::UnsupportedFhirVersion(quote_header(v).trim_matches('"').to_owned())),
        _ => Ok(()),
    }
}

/// Whether a Content-Type is JSON Patch (application/json-patch+json, parameters ignored).
pub fn is_json_patch(header: Option<&str>) -> bool {
    header.and_then(parse_media_type).is_some_and(|mt| mt.essence == "application/json-patch+json")
}

/// Decides whether the client accepts our JSON responses. `_format` (if given) overrides
/// Accept, as http.html specifies. Ok for a missing/empty Accept, `*/*`, `application/*`,
/// application/fhir+json and application/json (q > 0, fhirVersion 4.0.x if given), and for
/// `_format` json / application/json / application/fhir+json. Anything else (XML, Turtle,
/// HTML) is `NotAcceptable`, which the server answers with 406.
pub fn negotiate_accept(accept: Option<&str>, format_param: Option<&str>) -> Result<(), FhirError> {
    if let Some(format) = format_param {
        // In a query string '+' decodes to ' ', so "_format=application/fhir+json" often
        // arrives as "application/fhir json".
        let format = format.trim().replace(' ', "+");
        if format.eq_ignore_ascii_case("json") {
            return Ok(());
        }
        return match parse_media_type(&format) {
            Some(mt)
                if (mt.essence == FHIR_JSON || mt.essence == JSON) && mt.param("fhirversion").is_none_or(is_r4) =>
            {
                Ok(())
            }
            _ => Err(FhirError::NotAcceptable),
        };
    }
    let Some(accept) = accept.map(str::trim).filter(|a| !a.is_empty()) else {
        return Ok(());
    };
    let acceptable = accept.split(',').filter_map(|r| parse_media_type(r.trim())).any(|mt| {
        let q_ok = mt.param("q").is_none_or(|q| q.trim().parse::<f32>().is_ok_and(|q| q > 0.0));
        let type_ok = matches!(mt.essence.as_str(), "*/*" | "application/*" | FHIR_JSON | JSON);
        q_ok && type_ok && mt.param("fhirversion").is_none_or(is_r4)
    });
    if acceptable { Ok(()) } else { Err(FhirError::NotAcceptable) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_type() {
        for ok in [
            "application/fhir+json",
            "application/json",
            "Application/FHIR+JSON",
            "application/fhir+json; charset=utf-8",
            "application/fhir+json;charset=UTF-8",
            "application/fhir+json; charset=\"utf-8\"; fhirVersion=4.0",
            "application/json; fhirVersion=4.0.1",
            "application/fhir+json; foo=bar",
        ] {
            assert_eq!(check_content_type(Some(ok)), Ok(()), "{ok}");
        }
        for bad in [
            None,
            Some(""),
            Some("application/fhir+xml"),
            Some("application/json-patch+json"),
            Some("text/plain"),
            Some("json"),
            Some("application/json; charset=latin1"),
        ] {
            let e = check_content_type(bad).unwrap_err();
            assert!(matches!(e, FhirError::UnsupportedMediaType { .. }), "{bad:?}");
            assert_eq!(e.issue_code(), "not-supported");
        }
        for bad in [
            "application/fhir+json; fhirVersion=3.0",
            "application/fhir+json; fhirVersion=4.3",
            "application/fhir+json; fhirVersion=4.01",
            "application/fhir+json; fhirVersion=4.0.",
        ] {
            assert!(matches!(check_content_type(Some(bad)), Err(FhirError::UnsupportedFhirVersion(_))), "{bad}");
        }
    }

    #[test]
    fn json_patch() {
        assert!(is_json_patch(Some("application/json-patch+json")));
        assert!(is_json_patch(Some("Application/JSON-Patch+JSON; charset=utf-8")));
        assert!(!is_json_patch(Some("application/json")));
        assert!(!is_json_patch(None));
    }

    #[test]
    fn accept() {
        for ok in [
            None,
            Some(""),
            Some("*/*"),
            Some("application/*"),
            Some("application/fhir+json"),
            Some("application/json"),
            Some("application/fhir+xml;q=1.0, application/fhir+json;q=0.9"),
            Some("text/html, application/xhtml+xml, application/xml;q=0.9, */*;q=0.8"),
            Some("application/fhir+json; fhirVersion=4.0"),
        ] {
            assert_eq!(negotiate_accept(ok, None), Ok(()), "{ok:?}");
        }
        for bad in [
            "application/fhir+xml",
            "application/xml, text/xml",
            "application/fhir+json;q=0",
            "text/turtle",
            "application/fhir+json; fhirVersion=3.0",
            "garbage",
        ] {
            assert_eq!(negotiate_accept(Some(bad), None), Err(FhirError::NotAcceptable), "{bad}");
        }
    }

    #[test]
    fn format_overrides_accept() {
        for ok in ["json", "JSON", "application/json", "application/fhir+json", "application/fhir json"] {
            assert_eq!(negotiate_accept(Some("application/fhir+xml"), Some(ok)), Ok(()), "{ok}");
        }
        for bad in ["xml", "application/fhir+xml", "html", "ttl", ""] {
            assert_eq!(negotiate_accept(None, Some(bad)), Err(FhirError::NotAcceptable), "{bad}");
        }
    }

    #[test]
    fn r4_versions() {
        assert!(is_r4("4.0") && is_r4("4.0.0") && is_r4("4.0.1"));
        assert!(!is_r4("4") && !is_r4("4.01") && !is_r4("4.0.1a") && !is_r4("4.1") && !is_r4("5.0.0"));
    }
}
