//! FHIR logical ids.

use std::fmt;

use crate::error::FhirError;

/// A FHIR resource id: `[A-Za-z0-9\-\.]{1,64}` (R4 datatypes, "id").
#[derive(Clone, PartialEq, Eq, Hash, Debug, PartialOrd, Ord)]
pub struct Id(String);

/// Whether `s` matches the FHIR id pattern. Also used for version ids, which the spec gives
/// the same type.
pub(crate) fn is_valid_id(s: &str) -> bool {
    (1..=64).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
}

impl Id {
    /// Parses an id; the error does not repeat the input.
    pub fn parse(s: &str) -> Result<Id, FhirError> {
        Self::parse_at(s, "id")
    }

    /// Like `parse`, naming `path` in the error.
    pub(crate) fn parse_at(s: &str, path: &str) -> Result<Id, FhirError> {
        if is_valid_id(s) { Ok(Id(s.to_owned())) } else { Err(FhirError::InvalidId { path: path.to_owned() }) }
    }

    /// The id text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The id text, by value.
    pub fn into_string(self) -> String {
        self.0
    }
}

impl fmt::Display for Id {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::str::FromStr for Id {
    type Err = FhirError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Id::parse(s)
    }
}

impl AsRef<str> for Id {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn examples() {
        for ok in ["1", "example", "a-b.c", "A1", &"x".repeat(64)] {
            assert_eq!(Id::parse(ok).map(|i| i.to_string()), Ok(ok.to_owned()));
        }
        for bad in ["", "a b", "a/b", "a_b", "é", &"x".repeat(65), "a\n"] {
            assert!(matches!(Id::parse(bad), Err(FhirError::InvalidId { .. })), "{bad:?}");
        }
    }

    proptest! {
        #[test]
        fn valid_ids_round_trip(s in "[A-Za-z0-9.-]{1,64}") {
            let id = Id::parse(&s).unwrap();
            prop_assert_eq!(id.as_str(), s.as_str());
        }

        #[test]
        fn never_panics_and_agrees_with_pattern(s in "\\PC{0,80}") {
            let ok = Id::parse(&s).is_ok();
            let expected = !s.is_empty() && s.len() <= 64
                && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.');
            prop_assert_eq!(ok, expected);
        }
    }
}
