//! The one error type of the crate.
//!
//! Messages go back to clients in OperationOutcome.issue.diagnostics, and into logs. Resource
//! content can be patient data, so no variant ever carries a value taken from resource
//! content: only element paths, type names, positions, limits and header fragments.

/// Everything that can be wrong with FHIR input.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FhirError {
    /// The body is not well-formed JSON. `message` is serde_json's syntax description
    /// (e.g. "EOF while parsing an object"), which never quotes the input.
    #[error("body is not valid JSON: {message} at line {line}, column {column}")]
    Json {
        /// Fixed description of the syntax problem.
        message: String,
        /// 1-based line of the problem.
        line: usize,
        /// 1-based column of the problem.
        column: usize,
    },

    /// A resource type name that is not a concrete FHIR R4 resource type. The name is only
    /// kept when it looks like a type name (ASCII letters, at most 64), otherwise it is
    /// replaced by a placeholder so arbitrary input is never echoed.
    #[error("unknown FHIR R4 resource type {0:?}")]
    UnknownResourceType(String),

    /// A string that is not a valid FHIR id (`[A-Za-z0-9\-\.]{1,64}`). `path` says where it
    /// was (e.g. "Patient.id", or "id" for a bare id).
    #[error("{path}: invalid id (1 to 64 characters from A-Z, a-z, 0-9, '-', '.')")]
    InvalidId {
        /// Where the id was found.
        path: String,
    },

    /// The JSON does not have the shape FHIR JSON requires (null, empty object/array/string,
    /// wrong JSON type, missing resourceType, ...). Issue code "structure".
    #[error("{path}: {reason}")]
    Structure {
        /// FHIRPath-like location, e.g. "Patient.name[0].given[1]".
        path: String,
        /// What is wrong.
        reason: &'static str,
    },

    /// A reference string that cannot be understood. The reference itself is not repeated:
    /// conditional references can carry identifiers such as national ids.
    #[error("invalid reference: {reason}")]
    InvalidReference {
        /// What is wrong.
        reason: &'static str,
    },

    /// A transaction/batch Bundle, or one of its entries, is not acceptable. Issue code
    /// "invalid".
    #[error("{path}: {reason}")]
    Bundle {
        /// Location, e.g. "Bundle.type" or "Bundle.entry[3].request.method".
        path: String,
        /// What is wrong.
        reason: String,
    },

    /// The Bundle has more entries than the server accepts. Issue code "too-costly".
    #[error("Bundle has {count} entries; this server accepts at most {limit} per request")]
    TooManyEntries {
        /// Entries in the request.
        count: usize,
        /// The configured maximum.
        limit: usize,
    },

    /// The request body's Content-Type is missing or not a FHIR JSON type. Issue code
    /// "not-supported" (HTTP 415).
    #[error("unsupported Content-Type: {reason}")]
    UnsupportedMediaType {
        /// What is wrong (may quote the header, which is not patient data).
        reason: String,
    },

    /// A fhirVersion media-type parameter asks for a FHIR version other than 4.0.x.
    /// Issue code "not-supported".
    #[error("FHIR version {0:?} is not supported; this server implements FHIR 4.0.1 (R4)")]
    UnsupportedFhirVersion(String),

    /// Neither Accept nor _format allow a JSON response. Issue code "not-supported"
    /// (HTTP 406).
    #[error("not acceptable: this server only returns application/fhir+json or application/json")]
    NotAcceptable,

    /// The JSON nests deeper than this crate walks. Issue code "too-costly".
    #[error("{path}: JSON nested too deeply (more than {limit} levels)")]
    TooDeep {
        /// Where the limit was reached.
        path: String,
        /// The limit.
        limit: usize,
    },
}

impl FhirError {
    /// The FHIR IssueType code (http://hl7.org/fhir/issue-type) for OperationOutcome.
    pub fn issue_code(&self) -> &'static str {
        match self {
            FhirError::Json { .. } | FhirError::Structure { .. } => "structure",
            FhirError::UnknownResourceType(_) => "not-supported",
            FhirError::InvalidId { .. } | FhirError::InvalidReference { .. } => "value",
            FhirError::Bundle { .. } => "invalid",
            FhirError::TooManyEntries { .. } | FhirError::TooDeep { .. } => "too-costly",
            FhirError::UnsupportedMediaType { .. }
            | FhirError::UnsupportedFhirVersion(_)
            | FhirError::NotAcceptable => "not-supported",
        }
    }

    /// The FHIRPath-like location of the problem, if the error has one; goes into
    /// OperationOutcome.issue.expression.
    pub fn path(&self) -> Option<&str> {
        match self {
            FhirError::InvalidId { path }
            | FhirError::Structure { path, .. }
            | FhirError::Bundle { path, .. }
            | FhirError::TooDeep { path, .. } => Some(path),
            _ => None,
        }
    }

    /// Builds `UnknownResourceType`, keeping the name only if it looks like one.
    pub(crate) fn unknown_type(name: &str) -> FhirError {
        let looks_like_type = !name.is_empty() && name.len() <= 64 && name.bytes().all(|b| b.is_ascii_alphabetic());
        FhirError::UnknownResourceType(if looks_like_type {
            name.to_owned()
        } else {
            "(not a resource type name)".to_owned()
        })
    }
}

/// Quotes an untrusted header fragment for a message: at most 100 printable ASCII characters.
pub(crate) fn quote_header(s: &str) -> String {
    let cleaned: String = s.chars().take(100).map(|c| if c.is_ascii_graphic() || c == ' ' { c } else { '?' }).collect();
    format!("{cleaned:?}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_type_never_echoes_arbitrary_input() {
        let e = FhirError::unknown_type("Patient/123 John Smith");
        assert!(!e.to_string().contains("John"));
        assert_eq!(e.issue_code(), "not-supported");
        let e = FhirError::unknown_type("Patinet");
        assert!(e.to_string().contains("\"Patinet\""));
    }

    #[test]
    fn codes_and_paths() {
        let e = FhirError::Structure { path: "Patient.name[0]".into(), reason: "null value" };
        assert_eq!(e.issue_code(), "structure");
        assert_eq!(e.path(), Some("Patient.name[0]"));
        assert_eq!(e.to_string(), "Patient.name[0]: null value");
        assert_eq!(FhirError::TooManyEntries { count: 5, limit: 2 }.issue_code(), "too-costly");
        assert_eq!(FhirError::NotAcceptable.issue_code(), "not-supported");
        assert_eq!(FhirError::NotAcceptable.path(), None);
    }

    #[test]
    fn quote_header_is_bounded_and_printable() {
        let q = quote_header(&format!("a\u{7}b{}", "x".repeat(500)));
        assert!(q.starts_with("\"a?b"));
        assert!(q.len() <= 102);
    }
}
