//! The search index over current versions, as keyed tokens (ENC-1).
//!
//! Token search (`identifier`) needs only equality, so each identifier is stored as HMAC tokens
//! of the forms FHIR token search can ask for: `system|value`, `value` (any system),
//! `|value` (no system) and `system|` (any value). The search issue extends this table to the
//! full set of R4 search parameters.

use rusqlite::{Connection, params};
use serde_json::Value;

use crate::StoreError;
use crate::keys::IndexKey;

pub(crate) const IDENTIFIER: &str = "identifier";

/// One token-search alternative as parsed from `[system]|[value]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TokenQuery {
    /// `value`: any system.
    Value(String),
    /// `system|value`.
    SystemValue(String, String),
    /// `|value`: identifiers without a system.
    NoSystemValue(String),
    /// `system|`: any value in that system.
    System(String),
}

impl TokenQuery {
    pub fn parse(raw: &str) -> Option<TokenQuery> {
        match raw.split_once('|') {
            None if !raw.is_empty() => Some(TokenQuery::Value(raw.to_string())),
            None => None,
            Some(("", "")) => None,
            Some(("", v)) => Some(TokenQuery::NoSystemValue(v.to_string())),
            Some((s, "")) => Some(TokenQuery::System(s.to_string())),
            Some((s, v)) => Some(TokenQuery::SystemValue(s.to_string(), v.to_string())),
        }
    }

    pub(crate) fn token(&self, key: &IndexKey, rtype: &str) -> [u8; 16] {
        match self {
            TokenQuery::Value(v) => key.token(&[rtype, IDENTIFIER, "v", v]),
            TokenQuery::SystemValue(s, v) => key.token(&[rtype, IDENTIFIER, "sv", s, v]),
            TokenQuery::NoSystemValue(v) => key.token(&[rtype, IDENTIFIER, "nv", v]),
            TokenQuery::System(s) => key.token(&[rtype, IDENTIFIER, "s", s]),
        }
    }
}

/// The tokens a resource's identifiers produce.
pub(crate) fn identifier_tokens(key: &IndexKey, rtype: &str, body: &Value) -> Vec<[u8; 16]> {
    let idents: Vec<&Value> = match body.get("identifier") {
        Some(Value::Array(a)) => a.iter().collect(),
        Some(v @ Value::Object(_)) => vec![v],
        _ => return Vec::new(),
    };
    let mut out = Vec::new();
    for ident in idents {
        let system = ident.get("system").and_then(Value::as_str);
        let value = ident.get("value").and_then(Value::as_str);
        let forms = [
            value.map(|v| TokenQuery::Value(v.into())),
            match (system, value) {
                (Some(s), Some(v)) => Some(TokenQuery::SystemValue(s.into(), v.into())),
                (None, Some(v)) => Some(TokenQuery::NoSystemValue(v.into())),
                _ => None,
            },
            system.map(|s| TokenQuery::System(s.into())),
        ];
        out.extend(forms.into_iter().flatten().map(|q| q.token(key, rtype)));
    }
    out.sort_unstable();
    out.dedup();
    out
}

/// Replaces the index entries of one resource with those of its new current version.
pub(crate) fn reindex(
    conn: &Connection,
    key: &IndexKey,
    rtype: &str,
    id: &str,
    body: Option<&Value>,
) -> Result<(), StoreError> {
    conn.prepare_cached("DELETE FROM idx_token WHERE rtype = ?1 AND id = ?2")?.execute(params![rtype, id])?;
    if let Some(body) = body {
        let mut ins =
            conn.prepare_cached("INSERT OR IGNORE INTO idx_token (rtype, param, token, id) VALUES (?1, ?2, ?3, ?4)")?;
        for t in identifier_tokens(key, rtype, body) {
            ins.execute(params![rtype, IDENTIFIER, &t[..], id])?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_query_forms() {
        assert_eq!(TokenQuery::parse("a"), Some(TokenQuery::Value("a".into())));
        assert_eq!(TokenQuery::parse("|a"), Some(TokenQuery::NoSystemValue("a".into())));
        assert_eq!(TokenQuery::parse("s|"), Some(TokenQuery::System("s".into())));
        assert_eq!(TokenQuery::parse("s|a"), Some(TokenQuery::SystemValue("s".into(), "a".into())));
        assert_eq!(TokenQuery::parse("s|a|b"), Some(TokenQuery::SystemValue("s".into(), "a|b".into())));
        assert_eq!(TokenQuery::parse(""), None);
        assert_eq!(TokenQuery::parse("|"), None);
    }
}
