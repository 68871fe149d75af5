//! Search and history parameters, parsed at the edge into types the engine can run.
//!
//! Search queries live in [`crate::search::params`]; this module keeps history and the helpers
//! both share.

use mamori_fhir::resource_type::ResourceType;

use crate::StoreError;

/// Page-size limits from the configuration.
#[derive(Clone, Copy, Debug)]
pub struct PageLimits {
    pub default_count: usize,
    pub max_count: usize,
}

impl Default for PageLimits {
    fn default() -> Self {
        PageLimits { default_count: 50, max_count: 1000 }
    }
}

/// Parameters the server itself consumes; ignored by the store.
const PRESENTATION_PARAMS: &[&str] = &["_format", "_pretty"];

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HistoryScope {
    System,
    Type(ResourceType),
    Instance(ResourceType, String),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HistoryQuery {
    pub since_us: Option<i64>,
    pub count: usize,
    /// Paging cursor: versions older than this sequence number. Stable under concurrent writes
    /// because new versions only ever get larger numbers.
    pub before_seq: Option<i64>,
}

fn parse_count(raw: &str, limits: PageLimits) -> Result<usize, StoreError> {
    let n: usize = raw.parse().map_err(|_| {
        StoreError::invalid("invalid", format!("_count must be a non-negative integer, got '{}'", clip(raw)))
    })?;
    Ok(n.min(limits.max_count))
}

/// Shortens user-supplied text echoed in a diagnostic.
pub(crate) fn clip(s: &str) -> String {
    s.chars().take(64).collect()
}

impl HistoryQuery {
    pub fn parse(pairs: &[(String, String)], limits: PageLimits) -> Result<HistoryQuery, StoreError> {
        let mut q = HistoryQuery { since_us: None, count: limits.default_count, before_seq: None };
        for (name, value) in pairs {
            match name.as_str() {
                "_count" => q.count = parse_count(value, limits)?,
                "_since" => q.since_us = Some(parse_instant(value)?),
                "_cursor" => {
                    q.before_seq = Some(
                        value
                            .parse()
                            .map_err(|_| StoreError::invalid("invalid", "_cursor is not a valid paging cursor"))?,
                    )
                }
                n if PRESENTATION_PARAMS.contains(&n) => {}
                n => {
                    return Err(StoreError::Unsupported(format!(
                        "unknown or unsupported history parameter '{}' (supported: _since, _count)",
                        clip(n)
                    )));
                }
            }
        }
        Ok(q)
    }
}

/// Parses a FHIR instant or dateTime (a date alone means its first moment, UTC).
pub fn parse_instant(raw: &str) -> Result<i64, StoreError> {
    use time::format_description::well_known::Rfc3339;
    // A '+' in an unencoded query string arrives as a space.
    let fixed = raw.replace(' ', "+");
    let parsed = time::OffsetDateTime::parse(&fixed, &Rfc3339).or_else(|_| {
        time::Date::parse(&fixed, time::macros::format_description!("[year]-[month]-[day]"))
            .map(|d| d.midnight().assume_utc())
    });
    parsed
        .map(crate::clock::to_micros)
        .map_err(|_| StoreError::invalid("invalid", format!("'{}' is not a valid FHIR instant", clip(raw))))
}

/// The last microsecond a FHIR date or instant covers: the end of the day for a date, the
/// instant itself otherwise (for inclusive upper bounds such as `to=2026-11-21`).
pub fn parse_instant_end(raw: &str) -> Result<i64, StoreError> {
    let start = parse_instant(raw)?;
    Ok(if raw.trim().len() == 10 { start + 86_400_000_000 - 1 } else { start })
}

/// Decodes an `application/x-www-form-urlencoded` query (as in `If-None-Exist` and Bundle URLs).
pub fn parse_query_string(raw: &str) -> Vec<(String, String)> {
    raw.split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (decode(k), decode(v))
        })
        .collect()
}

fn decode(s: &str) -> String {
    let plus = s.replace('+', " ");
    percent_encoding::percent_decode_str(&plus).decode_utf8_lossy().into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instants_parse_with_offsets_and_dates() {
        assert_eq!(parse_instant("1970-01-01T00:00:01Z").unwrap(), 1_000_000);
        assert_eq!(parse_instant("1970-01-01T09:00:01 09:00").unwrap(), 1_000_000);
        assert_eq!(parse_instant("1970-01-02").unwrap(), 86_400_000_000);
        assert_eq!(parse_instant_end("1970-01-01").unwrap(), 86_400_000_000 - 1);
        assert_eq!(parse_instant_end("1970-01-01T00:00:01Z").unwrap(), 1_000_000);
        assert!(parse_instant("yesterday").is_err());
    }
}

#[cfg(test)]
mod proptests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Whatever arrives in a query string, parsing never panics, and a parsed query keeps
        /// within the configured page limit.
        #[test]
        fn search_parsing_never_panics(raw in ".{0,200}") {
            let pairs = parse_query_string(&raw);
            let opts = crate::ParseOptions::new(PageLimits { default_count: 10, max_count: 100 });
            if let Ok(q) = crate::SearchQuery::parse(ResourceType::parse("Patient").unwrap(), &pairs, opts) {
                prop_assert!(q.count <= 100);
            }
            let _ = HistoryQuery::parse(&pairs, PageLimits::default());
        }

        /// Percent-encoded names and values decode back to what was encoded.
        #[test]
        fn query_strings_round_trip(k in "[a-z_]{1,12}", v in "\\PC{0,40}") {
            use percent_encoding::{NON_ALPHANUMERIC, utf8_percent_encode};
            let raw = format!("{}={}", utf8_percent_encode(&k, NON_ALPHANUMERIC), utf8_percent_encode(&v, NON_ALPHANUMERIC));
            prop_assert_eq!(parse_query_string(&raw), vec![(k, v)]);
        }

        #[test]
        fn etags_parse_in_every_accepted_form(v in 0u64..u64::MAX) {
            prop_assert_eq!(crate::parse_etag(&format!("W/\"{v}\"")).unwrap(), v);
            prop_assert_eq!(crate::parse_etag(&format!("\"{v}\"")).unwrap(), v);
            prop_assert_eq!(crate::parse_etag(&v.to_string()).unwrap(), v);
        }
    }
}
