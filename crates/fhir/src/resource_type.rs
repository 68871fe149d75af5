//! The closed set of FHIR R4 resource types (generated from the specification).

use std::fmt;

use crate::error::FhirError;
use crate::generated::RESOURCE_TYPES;

/// A concrete FHIR R4 resource type, e.g. `Patient`. Only constructible from the generated
/// list, so holding one proves the name is valid (and it is `Copy`, no allocation).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
pub struct ResourceType(&'static str);

impl ResourceType {
    /// Parses an exact (case-sensitive) R4 resource type name.
    pub fn parse(s: &str) -> Result<ResourceType, FhirError> {
        RESOURCE_TYPES
            .binary_search(&s)
            .map(|i| ResourceType(RESOURCE_TYPES[i]))
            .map_err(|_| FhirError::unknown_type(s))
    }

    /// The type name, e.g. "Patient".
    pub fn as_str(&self) -> &'static str {
        self.0
    }

    /// Every R4 resource type, in sorted order.
    pub fn all() -> impl Iterator<Item = ResourceType> {
        RESOURCE_TYPES.iter().map(|s| ResourceType(s))
    }
}

impl fmt::Display for ResourceType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
}

impl std::str::FromStr for ResourceType {
    type Err = FhirError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ResourceType::parse(s)
    }
}

impl AsRef<str> for ResourceType {
    fn as_ref(&self) -> &str {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_is_sorted_and_complete() {
        assert!(RESOURCE_TYPES.windows(2).all(|w| w[0] < w[1]));
        assert_eq!(RESOURCE_TYPES.len(), 146);
        for t in ["Bundle", "Parameters", "Binary", "Patient", "Observation", "OperationOutcome"] {
            assert_eq!(ResourceType::parse(t).map(|r| r.as_str()), Ok(t));
        }
    }

    #[test]
    fn rejects_non_types() {
        for t in ["", "patient", "Resource", "DomainResource", "HumanName", "Patient ", "Foo"] {
            let e = ResourceType::parse(t).unwrap_err();
            assert_eq!(e.issue_code(), "not-supported");
        }
        assert!(ResourceType::parse("Foo").unwrap_err().to_string().contains("Foo"));
    }

    #[test]
    fn all_round_trips() {
        let all: Vec<_> = ResourceType::all().collect();
        assert_eq!(all.len(), RESOURCE_TYPES.len());
        for t in all {
            assert_eq!(ResourceType::parse(t.as_ref()), Ok(t));
        }
    }
}
