//! Search and history parameters, parsed at the edge into types the engine can run.
//!
//! The foundation supports what conditional operations need (`_id`, `identifier`) plus paging;
//! the search issue extends `Clause` to every R4 search parameter.

use mamori_fhir::resource_type::ResourceType;
use rusqlite::types::Value as SqlValue;
use rusqlite::{Connection, params_from_iter};

use crate::StoreError;
use crate::index::{IDENTIFIER, TokenQuery};
use crate::keys::IndexKey;

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
pub enum Clause {
    /// `_id=a,b`
    Id(Vec<String>),
    /// `identifier=[system]|[value],…`
    Identifier(Vec<TokenQuery>),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SearchQuery {
    pub clauses: Vec<Clause>,
    pub count: usize,
    /// Opaque paging cursor: results continue after this id.
    pub after: Option<String>,
    /// Parameters dropped under `Prefer: handling=lenient`, reported back in the self link.
    pub ignored: Vec<String>,
}

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

impl SearchQuery {
    pub fn parse(pairs: &[(String, String)], limits: PageLimits, lenient: bool) -> Result<SearchQuery, StoreError> {
        let mut q = SearchQuery { clauses: Vec::new(), count: limits.default_count, after: None, ignored: Vec::new() };
        for (name, value) in pairs {
            match name.as_str() {
                "_count" => q.count = parse_count(value, limits)?,
                "_cursor" => q.after = Some(value.clone()),
                "_id" => q.clauses.push(Clause::Id(value.split(',').map(str::to_string).collect())),
                IDENTIFIER => {
                    let tokens = value
                        .split(',')
                        .map(|v| {
                            TokenQuery::parse(v).ok_or_else(|| {
                                StoreError::invalid("invalid", "identifier: expected [system]|[value] (empty value)")
                            })
                        })
                        .collect::<Result<Vec<_>, _>>()?;
                    q.clauses.push(Clause::Identifier(tokens));
                }
                n if PRESENTATION_PARAMS.contains(&n) => {}
                n if lenient => q.ignored.push(n.to_string()),
                n => {
                    return Err(StoreError::Unsupported(format!(
                        "unknown or unsupported search parameter '{}' (supported: _id, identifier, _count)",
                        clip(n)
                    )));
                }
            }
        }
        Ok(q)
    }

    /// Runs the query over current, non-deleted versions and returns matching ids in id order.
    pub(crate) fn matching_ids(
        &self,
        conn: &Connection,
        index: &IndexKey,
        rtype: ResourceType,
        limit: usize,
    ) -> Result<Vec<String>, StoreError> {
        let (mut sql, mut args) = self.where_clause(index, rtype);
        if let Some(after) = &self.after {
            sql.push_str(" AND c.id > ?");
            args.push(SqlValue::Text(after.clone()));
        }
        sql.push_str(" ORDER BY c.id LIMIT ?");
        args.push(SqlValue::Integer(limit as i64));
        let mut stmt = conn.prepare_cached(&format!("SELECT c.id FROM resource_current c WHERE {sql}"))?;
        let ids = stmt.query_map(params_from_iter(args), |r| r.get::<_, String>(0))?.collect::<Result<Vec<_>, _>>()?;
        Ok(ids)
    }

    pub(crate) fn total(&self, conn: &Connection, index: &IndexKey, rtype: ResourceType) -> Result<u64, StoreError> {
        let (sql, args) = self.where_clause(index, rtype);
        let mut stmt = conn.prepare_cached(&format!("SELECT count(*) FROM resource_current c WHERE {sql}"))?;
        Ok(stmt.query_row(params_from_iter(args), |r| r.get::<_, i64>(0))? as u64)
    }

    fn where_clause(&self, index: &IndexKey, rtype: ResourceType) -> (String, Vec<SqlValue>) {
        let mut sql = String::from("c.rtype = ? AND c.deleted = 0");
        let mut args = vec![SqlValue::Text(rtype.as_str().to_string())];
        for clause in &self.clauses {
            match clause {
                Clause::Id(ids) => {
                    sql.push_str(&format!(" AND c.id IN ({})", placeholders(ids.len())));
                    args.extend(ids.iter().cloned().map(SqlValue::Text));
                }
                Clause::Identifier(tokens) => {
                    sql.push_str(&format!(
                        " AND c.id IN (SELECT id FROM idx_token WHERE rtype = ? AND param = '{IDENTIFIER}' AND token IN ({}))",
                        placeholders(tokens.len())
                    ));
                    args.push(SqlValue::Text(rtype.as_str().to_string()));
                    args.extend(tokens.iter().map(|t| SqlValue::Blob(t.token(index, rtype.as_str()).to_vec())));
                }
            }
        }
        (sql, args)
    }
}

fn placeholders(n: usize) -> String {
    vec!["?"; n.max(1)].join(", ")
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

    fn pairs(s: &str) -> Vec<(String, String)> {
        parse_query_string(s)
    }

    #[test]
    fn search_parameters_parse_and_unknown_ones_are_named() {
        let q = SearchQuery::parse(&pairs("identifier=s%7Cv&_count=5&_id=a,b"), PageLimits::default(), false).unwrap();
        assert_eq!(q.count, 5);
        assert_eq!(q.clauses.len(), 2);
        let err = SearchQuery::parse(&pairs("name=x"), PageLimits::default(), false).unwrap_err().to_string();
        assert!(err.contains("'name'"), "{err}");
        let lenient = SearchQuery::parse(&pairs("name=x"), PageLimits::default(), true).unwrap();
        assert_eq!(lenient.ignored, vec!["name".to_string()]);
    }

    #[test]
    fn count_is_clamped_to_the_configured_maximum() {
        let q = SearchQuery::parse(&pairs("_count=100000"), PageLimits { default_count: 10, max_count: 100 }, false)
            .unwrap();
        assert_eq!(q.count, 100);
        assert!(SearchQuery::parse(&pairs("_count=-1"), PageLimits::default(), false).is_err());
    }

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
            if let Ok(q) = SearchQuery::parse(&pairs, PageLimits { default_count: 10, max_count: 100 }, false) {
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
