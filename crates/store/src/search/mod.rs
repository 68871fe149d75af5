//! FHIR search over encrypted storage (issue 3).
//!
//! - [`extract`] turns a resource into index entries by evaluating the generated R4
//!   SearchParameter expressions; [`maintain`] keeps the index tables in step with current
//!   versions, in the same transaction as the write.
//! - [`params`] parses a query into typed clauses; [`sql`] runs them against the index.
//! - [`runs`] keeps the token rows as sorted runs that are merged in the background of writes.
//!
//! Index rows name a resource by `rid`, the sequence number of its first version (stable for the
//! resource's life, an integer rather than a 36-byte id), and a parameter by `pid`, a 63-bit
//! hash of (resource type, code) — so rows carry no type or parameter names in the clear.

pub(crate) mod extract;
pub(crate) mod maintain;
pub mod normalize;
pub mod params;
pub mod runs;
pub(crate) mod sql;
pub(crate) mod unions;

use sha2::{Digest, Sha256};

use crate::keys::IndexKey;

/// Prefix tokens are stored for the first this-many characters of a normalised string; a
/// longer query prefix is looked up by its first characters and confirmed on the decrypted value.
pub(crate) const PREFIX_CHARS: usize = 16;

/// Whether a string parameter gets the 1- and 2-character grams that index `:contains`: person
/// names only (where `:contains` is asked for, e.g. one kanji of a name); elsewhere `:contains`
/// confirms the candidates of the query's other criteria. Grams are two rows per character, the
/// largest share of the index otherwise.
pub(crate) fn indexes_contains(rtype: &str, code: &str) -> bool {
    matches!(rtype, "Patient" | "Practitioner" | "RelatedPerson" | "Person")
        && matches!(code, "name" | "family" | "given" | "phonetic")
}

/// Bumped whenever extraction changes; a store whose index was built by another version
/// rebuilds it at open.
pub(crate) const INDEX_VERSION: i64 = 4;

/// The identity of one search parameter of one resource type in the index.
#[derive(Clone, Debug)]
pub(crate) struct ParamKey {
    pub pid: i64,
    tag: String,
}

/// The code a parameter is indexed under: parameters of one type with the same expression and
/// type (Organization `name` and `phonetic`, say) share their index rows under the first code.
pub(crate) fn canonical_code<'a>(rtype: &str, code: &'a str) -> &'a str {
    static ALIASES: std::sync::OnceLock<std::collections::HashMap<(&'static str, &'static str), &'static str>> =
        std::sync::OnceLock::new();
    let aliases = ALIASES.get_or_init(|| {
        use mamori_fhir::search_params::params_for;
        let mut map = std::collections::HashMap::new();
        let types: std::collections::BTreeSet<&'static str> =
            mamori_fhir::generated::RESOURCE_TYPES.iter().copied().collect();
        for t in types {
            let params = params_for(t);
            for d in params {
                if d.expression.is_empty() || !d.components.is_empty() {
                    continue;
                }
                // params_for is sorted by code: the first with this expression and type wins.
                if let Some(first) = params.iter().find(|o| o.expression == d.expression && o.ptype == d.ptype)
                    && first.code != d.code
                {
                    map.insert((t, d.code), first.code);
                }
            }
        }
        map
    });
    aliases.get(&(rtype, code)).copied().unwrap_or(code)
}

impl ParamKey {
    pub(crate) fn new(rtype: &str, code: &str) -> ParamKey {
        let code = canonical_code(rtype, code);
        let mut h = Sha256::new();
        for part in ["mamori-search-param", rtype, code] {
            h.update((part.len() as u32).to_le_bytes());
            h.update(part.as_bytes());
        }
        ParamKey::from_digest(&h.finalize())
    }

    /// A component of a composite parameter under one value of its first component. Keyed, so
    /// the row's parameter id reveals nothing of that value (a LOINC code, say).
    pub(crate) fn component(&self, key: &IndexKey, head: &str, code: &str) -> ParamKey {
        let t = key.token(&[&self.tag, "composite", head, code]);
        let mut full = [0u8; 32];
        full[..16].copy_from_slice(&t);
        ParamKey::from_digest(&full)
    }

    fn from_digest(d: &[u8]) -> ParamKey {
        let mut b = [0u8; 8];
        b.copy_from_slice(&d[..8]);
        let pid = (u64::from_le_bytes(b) >> 1) as i64;
        ParamKey { pid, tag: pid.to_string() }
    }

    pub(crate) fn token(&self, key: &IndexKey, t: Token<'_>) -> [u8; 16] {
        match t {
            Token::Exact(v) => key.token(&[&self.tag, "x", v]),
            Token::Prefix(v) => key.token(&[&self.tag, "p", v]),
            Token::Gram(v) => key.token(&[&self.tag, "g", v]),
            Token::Code(c) => key.token(&[&self.tag, "c", c]),
            Token::SystemCode(s, c) => key.token(&[&self.tag, "sc", s, c]),
            Token::NoSystemCode(c) => key.token(&[&self.tag, "nc", c]),
            Token::System(s) => key.token(&[&self.tag, "s", s]),
            Token::TextPrefix(v) => key.token(&[&self.tag, "t", v]),
            Token::OfType(s, c, v) => key.token(&[&self.tag, "ot", s, c, v]),
        }
    }
}

/// The kinds of keyed token. Each kind is a separate HMAC domain.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Token<'a> {
    /// A string part or uri exactly as written (`:exact`, uri equality).
    Exact(&'a str),
    /// A prefix of the normalised string (default string search).
    Prefix(&'a str),
    /// A 1- or 2-character gram of the normalised string (`:contains` candidates).
    Gram(&'a str),
    Code(&'a str),
    SystemCode(&'a str, &'a str),
    NoSystemCode(&'a str),
    System(&'a str),
    /// A prefix of normalised display text (`:text`).
    TextPrefix(&'a str),
    /// Identifier type system, type code and value (`:of-type`).
    OfType(&'a str, &'a str, &'a str),
}

impl Token<'_> {
    /// A canonical text of a token form, used to key composite components under their head.
    pub(crate) fn canonical(&self) -> String {
        match self {
            Token::Code(c) => format!("c|{c}"),
            Token::SystemCode(s, c) => format!("sc|{s}|{c}"),
            Token::NoSystemCode(c) => format!("nc|{c}"),
            Token::System(s) => format!("s|{s}"),
            other => format!("{other:?}"),
        }
    }
}

const MICROS_PER_SEC: i64 = 1_000_000;

/// The instant range `[lo, hi]` (microseconds since the epoch, inclusive) a FHIR date, dateTime
/// or instant covers at its precision: `2024` is the whole year, `2024-03-01T10:00:00Z` one
/// second. Values without a zone are taken as UTC.
pub fn date_range(raw: &str) -> Option<(i64, i64)> {
    use time::{Date, Month, PrimitiveDateTime, Time, UtcOffset};
    let s = raw.trim();
    let (date_part, time_part) = match s.split_once('T') {
        Some((d, t)) => (d, Some(t)),
        None => (s, None),
    };
    let mut it = date_part.split('-');
    let year: i32 = parse_digits(it.next()?, 4)?;
    let month: Option<u8> = match it.next() {
        Some(m) => Some(parse_digits(m, 2)? as u8),
        None => None,
    };
    let day: Option<u8> = match it.next() {
        Some(d) => Some(parse_digits(d, 2)? as u8),
        None => None,
    };
    if it.next().is_some() || (day.is_some() && month.is_none()) {
        return None;
    }
    let start_date =
        Date::from_calendar_date(year, Month::try_from(month.unwrap_or(1)).ok()?, day.unwrap_or(1)).ok()?;
    let micros = |d: Date, t: Time, off: UtcOffset| -> i64 {
        let odt = PrimitiveDateTime::new(d, t).assume_offset(off);
        (odt.unix_timestamp_nanos() / 1000) as i64
    };
    let Some(tp) = time_part else {
        let lo = micros(start_date, Time::MIDNIGHT, UtcOffset::UTC);
        let end = match (month, day) {
            (None, _) => Date::from_calendar_date(year + 1, Month::January, 1).ok()?,
            (Some(m), None) => {
                let (y, m) = if m == 12 { (year + 1, 1) } else { (year, m + 1) };
                Date::from_calendar_date(y, Month::try_from(m).ok()?, 1).ok()?
            }
            (Some(_), Some(_)) => start_date.next_day()?,
        };
        return Some((lo, micros(end, Time::MIDNIGHT, UtcOffset::UTC) - 1));
    };
    day?;
    // Split the zone off: Z, +hh:mm or -hh:mm.
    let (clock, offset) = if let Some(c) = tp.strip_suffix('Z') {
        (c, UtcOffset::UTC)
    } else if let Some(i) = tp.rfind(['+', '-']) {
        let z = &tp[i..];
        let sign = if z.starts_with('-') { -1 } else { 1 };
        let (h, m) = z[1..].split_once(':')?;
        let (h, m): (i32, i32) = (parse_digits(h, 2)?, parse_digits(m, 2)?);
        (&tp[..i], UtcOffset::from_hms((sign * h) as i8, (sign * m) as i8, 0).ok()?)
    } else {
        (tp, UtcOffset::UTC)
    };
    let mut parts = clock.split(':');
    let h: i32 = parse_digits(parts.next()?, 2)?;
    let mi: i32 = parse_digits(parts.next()?, 2)?;
    let (sec, frac, width) = match parts.next() {
        None => (0, 0, 60 * MICROS_PER_SEC),
        Some(sp) => {
            let (whole, frac) = sp.split_once('.').unwrap_or((sp, ""));
            let sec: i32 = parse_digits(whole, 2)?;
            if frac.is_empty() {
                (sec, 0, MICROS_PER_SEC)
            } else {
                if !frac.bytes().all(|b| b.is_ascii_digit()) || frac.len() > 9 {
                    return None;
                }
                let digits = frac.len().min(6);
                let f: i64 = frac[..digits].parse().ok()?;
                let scale = 10i64.pow((6 - digits) as u32);
                (sec, f * scale, scale)
            }
        }
    };
    if parts.next().is_some() {
        return None;
    }
    let t = Time::from_hms(h as u8, mi as u8, sec.min(59) as u8).ok()?;
    let lo = micros(start_date, t, offset) + frac;
    Some((lo, lo + width - 1))
}

fn parse_digits(s: &str, len: usize) -> Option<i32> {
    (s.len() == len && s.bytes().all(|b| b.is_ascii_digit())).then(|| s.parse().ok()).flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: i64 = 86_400 * MICROS_PER_SEC;

    #[test]
    fn date_ranges_follow_precision() {
        let (lo, hi) = date_range("1970").unwrap();
        assert_eq!((lo, hi), (0, 365 * DAY - 1));
        assert_eq!(date_range("1970-02").unwrap(), (31 * DAY, 59 * DAY - 1));
        assert_eq!(date_range("1970-01-02").unwrap(), (DAY, 2 * DAY - 1));
        assert_eq!(date_range("1970-01-01T00:00:01Z").unwrap(), (MICROS_PER_SEC, 2 * MICROS_PER_SEC - 1));
        assert_eq!(date_range("1970-01-01T09:00:00+09:00").unwrap(), (0, MICROS_PER_SEC - 1));
        assert_eq!(date_range("1970-01-01T00:00:00.5Z").unwrap(), (500_000, 599_999));
        assert_eq!(date_range("1970-01-01T00:01").unwrap(), (60 * MICROS_PER_SEC, 120 * MICROS_PER_SEC - 1));
        for bad in ["", "19", "1970-13", "1970-01-32", "1970-1-01", "1970-01-01T", "1970-01-01T25:00:00Z", "x"] {
            assert_eq!(date_range(bad), None, "{bad}");
        }
    }

    #[test]
    fn param_ids_differ_by_type_and_code() {
        assert_ne!(ParamKey::new("Patient", "name").pid, ParamKey::new("Person", "name").pid);
        assert_ne!(ParamKey::new("Patient", "name").pid, ParamKey::new("Patient", "family").pid);
        assert!(ParamKey::new("Patient", "name").pid >= 0);
    }
}
