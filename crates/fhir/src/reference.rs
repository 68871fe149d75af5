//! Reference.reference strings (R4 references.html): what a resource points at.

use std::fmt;

use crate::error::FhirError;
use crate::id::{Id, is_valid_id};
use crate::resource_type::ResourceType;

/// A parsed `Reference.reference`.
#[derive(Clone, PartialEq, Eq, Hash, Debug)]
pub enum Reference {
    /// Relative literal reference on this server: "Patient/123" or
    /// "Patient/123/_history/2" (`version` = "2").
    Local {
        /// Target type.
        rtype: ResourceType,
        /// Target logical id.
        id: Id,
        /// Version id, when the reference is version-specific.
        version: Option<String>,
    },
    /// An absolute http(s) URL, kept verbatim. Use [`split_local_absolute`] to recognise URLs
    /// that point at this server's own base.
    Absolute(String),
    /// A URN kept verbatim: "urn:uuid:..." (transaction-local placeholders), and also
    /// "urn:oid:...", which plays the same role in Bundles.
    UrnUuid(String),
    /// Conditional reference "Patient?identifier=a|b" (allowed in transactions): the type and
    /// the query after '?', still percent-encoded as sent.
    Conditional {
        /// Type searched.
        rtype: ResourceType,
        /// Query string without the leading '?'.
        query: String,
    },
    /// Reference to a contained resource: "#abc" holds "abc". A bare "#" (the containing
    /// resource itself, allowed from inside contained resources) holds "".
    Contained(String),
}

impl Reference {
    /// Parses a reference string. Errors never repeat the input (conditional references can
    /// carry identifiers such as national ids).
    pub fn parse(s: &str) -> Result<Reference, FhirError> {
        let bad = |reason| Err(FhirError::InvalidReference { reason });
        if s.is_empty() {
            return bad("empty reference");
        }
        if s.chars().any(char::is_whitespace) {
            // Literal references are URLs; whitespace is never part of one.
            return bad("reference contains whitespace");
        }
        if let Some(local) = s.strip_prefix('#') {
            return Ok(Reference::Contained(local.to_owned()));
        }
        if let Some(rest) = s.strip_prefix("urn:uuid:").or_else(|| s.strip_prefix("urn:oid:")) {
            if rest.is_empty() {
                return bad("URN without a value");
            }
            return Ok(Reference::UrnUuid(s.to_owned()));
        }
        if let Some(rest) = strip_http_scheme(s) {
            if rest.is_empty() || rest.starts_with('/') {
                return bad("absolute URL without a host");
            }
            return Ok(Reference::Absolute(s.to_owned()));
        }
        if has_scheme(s) {
            return bad("only http(s) URLs, urn:uuid:, urn:oid: and relative references are supported");
        }
        if let Some((rtype, query)) = s.split_once('?') {
            let rtype = ResourceType::parse(rtype).map_err(|_| FhirError::InvalidReference {
                reason: "conditional reference does not start with a resource type",
            })?;
            if query.is_empty() {
                return bad("conditional reference without search parameters");
            }
            return Ok(Reference::Conditional { rtype, query: query.to_owned() });
        }
        parse_local_path(s).ok_or(FhirError::InvalidReference {
            reason: "expected Type/id, Type/id/_history/vid, Type?query, #id, urn:uuid: or an http(s) URL",
        })
    }
}

/// The remainder after "http://" or "https://" (scheme compared case-insensitively).
fn strip_http_scheme(s: &str) -> Option<&str> {
    for scheme in ["http://", "https://"] {
        if s.len() >= scheme.len() && s.is_char_boundary(scheme.len()) && s[..scheme.len()].eq_ignore_ascii_case(scheme)
        {
            return Some(&s[scheme.len()..]);
        }
    }
    None
}

/// RFC 3986 scheme ("mailto:", "urn:") before any '/', '?' or '#'.
fn has_scheme(s: &str) -> bool {
    match s.find(':') {
        Some(i) => {
            let scheme = &s[..i];
            scheme.starts_with(|c: char| c.is_ascii_alphabetic())
                && scheme.chars().all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c))
        }
        None => false,
    }
}

/// "Type/id" or "Type/id/_history/vid".
fn parse_local_path(s: &str) -> Option<Reference> {
    let mut parts = s.split('/');
    let rtype = ResourceType::parse(parts.next()?).ok()?;
    let id = parts.next().filter(|p| is_valid_id(p))?;
    let version = match (parts.next(), parts.next(), parts.next()) {
        (None, _, _) => None,
        (Some("_history"), Some(v), None) if is_valid_id(v) => Some(v.to_owned()),
        _ => return None,
    };
    let id = Id::parse(id).ok()?;
    Some(Reference::Local { rtype, id, version })
}

/// For an absolute URL under this server's `base` (e.g. base "https://host/fhir" and url
/// "https://host/fhir/Patient/1/_history/3"), the type, id and version it points at.
/// Scheme and host compare case-insensitively, the path exactly; a trailing '/' on the base
/// is ignored. `None` for anything else, including search URLs.
pub fn split_local_absolute(url: &str, base: &str) -> Option<(ResourceType, Id, Option<String>)> {
    let base = base.trim_end_matches('/');
    let url_rest = strip_http_scheme(url)?;
    let base_rest = strip_http_scheme(base)?;
    // Schemes must match too: http://x/fhir is not https://x/fhir.
    if url.len() - url_rest.len() != base.len() - base_rest.len() {
        return None;
    }
    let (base_host, base_path) = base_rest.split_at(base_rest.find('/').unwrap_or(base_rest.len()));
    let (url_host, url_path) = url_rest.split_at(url_rest.find('/').unwrap_or(url_rest.len()));
    if !url_host.eq_ignore_ascii_case(base_host) {
        return None;
    }
    let local = url_path.strip_prefix(base_path)?.strip_prefix('/')?;
    match parse_local_path(local)? {
        Reference::Local { rtype, id, version } => Some((rtype, id, version)),
        _ => None,
    }
}

impl fmt::Display for Reference {
    /// The reference string; `Reference::parse(&r.to_string()) == Ok(r)`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reference::Local { rtype, id, version: None } => write!(f, "{rtype}/{id}"),
            Reference::Local { rtype, id, version: Some(v) } => write!(f, "{rtype}/{id}/_history/{v}"),
            Reference::Absolute(s) | Reference::UrnUuid(s) => f.write_str(s),
            Reference::Conditional { rtype, query } => write!(f, "{rtype}?{query}"),
            Reference::Contained(id) => write!(f, "#{id}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn rt(s: &str) -> ResourceType {
        ResourceType::parse(s).unwrap()
    }

    #[test]
    fn local() {
        assert_eq!(
            Reference::parse("Patient/123"),
            Ok(Reference::Local { rtype: rt("Patient"), id: Id::parse("123").unwrap(), version: None })
        );
        assert_eq!(
            Reference::parse("Patient/123/_history/2"),
            Ok(Reference::Local { rtype: rt("Patient"), id: Id::parse("123").unwrap(), version: Some("2".into()) })
        );
        for bad in [
            "Patient",
            "Patient/",
            "Patient/1/2",
            "Patient/1/_history",
            "Patient/1/_history/",
            "Foo/1",
            "patient/1",
            "/Patient/1",
            "Patient/a_b",
            "Patient/1/_history/2/x",
        ] {
            assert!(Reference::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn other_forms() {
        assert_eq!(
            Reference::parse("https://x.org/fhir/Patient/1"),
            Ok(Reference::Absolute("https://x.org/fhir/Patient/1".into()))
        );
        assert_eq!(Reference::parse("HTTP://x.org/a"), Ok(Reference::Absolute("HTTP://x.org/a".into())));
        assert_eq!(
            Reference::parse("urn:uuid:61ebe359-bfdc-4613-8bf2-c5e300945f0a"),
            Ok(Reference::UrnUuid("urn:uuid:61ebe359-bfdc-4613-8bf2-c5e300945f0a".into()))
        );
        assert_eq!(Reference::parse("urn:oid:1.2.3"), Ok(Reference::UrnUuid("urn:oid:1.2.3".into())));
        assert_eq!(
            Reference::parse("Patient?identifier=http://acme.org/mrn|123"),
            Ok(Reference::Conditional { rtype: rt("Patient"), query: "identifier=http://acme.org/mrn|123".into() })
        );
        assert_eq!(Reference::parse("#abc"), Ok(Reference::Contained("abc".into())));
        assert_eq!(Reference::parse("#"), Ok(Reference::Contained(String::new())));
        for bad in [
            "",
            " Patient/1",
            "Patient/1 ",
            "urn:uuid:",
            "urn:isbn:123",
            "mailto:a@b",
            "http://",
            "https:///x",
            "Patient?",
            "Foo?a=b",
            "?a=b",
        ] {
            assert!(Reference::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn errors_do_not_echo_input() {
        let e = Reference::parse("Foo?identifier=secret-ssn").unwrap_err();
        assert!(!e.to_string().contains("secret"));
        assert_eq!(e.issue_code(), "value");
    }

    #[test]
    fn local_absolute() {
        let base = "https://host.example/fhir";
        let r = split_local_absolute("https://host.example/fhir/Patient/1", base).unwrap();
        assert_eq!((r.0.as_str(), r.1.as_str(), r.2), ("Patient", "1", None));
        let r = split_local_absolute("HTTPS://HOST.example/fhir/Patient/1/_history/4", "https://host.example/fhir/")
            .unwrap();
        assert_eq!(r.2.as_deref(), Some("4"));
        assert_eq!(split_local_absolute("http://host.example/fhir/Patient/1", base), None);
        assert_eq!(split_local_absolute("https://other/fhir/Patient/1", base), None);
        assert_eq!(split_local_absolute("https://host.example/fhirx/Patient/1", base), None);
        assert_eq!(split_local_absolute("https://host.example/fhir/Patient?x=1", base), None);
        assert_eq!(split_local_absolute("https://host.example/fhir/Patient/1/x", base), None);
        assert_eq!(
            split_local_absolute("https://host.example/Patient/1", "https://host.example").map(|r| r.1.into_string()),
            Some("1".into())
        );
    }

    fn arb_type() -> impl Strategy<Value = ResourceType> {
        proptest::sample::select(ResourceType::all().collect::<Vec<_>>())
    }

    proptest! {
        #[test]
        fn never_panics(s in "\\PC{0,100}") {
            let _ = Reference::parse(&s);
            let _ = split_local_absolute(&s, "https://h/fhir");
        }

        #[test]
        fn round_trips(rtype in arb_type(), id in "[A-Za-z0-9.-]{1,64}", v in proptest::option::of("[0-9]{1,5}"),
                       q in "[a-z]{1,8}=[A-Za-z0-9|:/.]{1,20}", c in "[a-z0-9]{0,10}", uuid in "[0-9a-f-]{36}") {
            let cases = [
                Reference::Local { rtype, id: Id::parse(&id).unwrap(), version: v },
                Reference::Conditional { rtype, query: q },
                Reference::Contained(c),
                Reference::UrnUuid(format!("urn:uuid:{uuid}")),
                Reference::Absolute(format!("https://example.org/{id}")),
            ];
            for r in cases {
                prop_assert_eq!(Reference::parse(&r.to_string()), Ok(r));
            }
        }

        #[test]
        fn parsed_display_is_identity(s in "(Patient|Observation|Foo|#|urn:uuid:|https://h/)[A-Za-z0-9/?=|._#-]{0,30}") {
            if let Ok(r) = Reference::parse(&s) {
                prop_assert_eq!(r.to_string(), s);
            }
        }
    }
}
