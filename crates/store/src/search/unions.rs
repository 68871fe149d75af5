//! Parameters answered as the union of other parameters' index rows instead of their own.
//!
//! Two shapes in the R4 definitions repeat what other parameters of the same type already index:
//!
//! - **Expression unions**: Observation `combo-code` is `Observation.code |
//!   Observation.component.code`, exactly the terms of `code` and `component-code`. Such a
//!   parameter gets no rows of its own; a query asks the rows of the parameters whose terms
//!   cover it.
//! - **Element parts**: Patient `name` is `Patient.name` (every string part of a HumanName) while
//!   `family` and `given` are `Patient.name.family` and `Patient.name.given`. The parts another
//!   parameter already indexes are left out of `name`'s rows (only `prefix`, `suffix`, `text`
//!   stay), and `name` is asked as `name ∪ family ∪ given`. Address and its `address-city`,
//!   `address-state`, … alike.
//!
//! A value matches a union exactly when it matches one of the parts, so answers are unchanged
//! (the search test matrix checks them against the raw data); only the rows are fewer.

use std::collections::{BTreeSet, HashMap};
use std::sync::OnceLock;

use mamori_fhir::search_params::{ParamType, params_for};

use super::{ParamKey, canonical_code, indexes_contains};

/// How one parameter is indexed and asked.
#[derive(Debug, Default, Clone)]
struct Plan {
    /// False: the parameter has no rows of its own (an expression union).
    own_rows: bool,
    /// Other parameters whose rows answer it too.
    parts: Vec<&'static str>,
    /// Element fields left out of the parameter's own rows (indexed by `parts`).
    skip_fields: Vec<&'static str>,
}

/// Resource type → parameter code → plan (only parameters that differ from one own row set).
type Plans = HashMap<&'static str, HashMap<&'static str, Plan>>;

fn plans() -> &'static Plans {
    static PLANS: OnceLock<Plans> = OnceLock::new();
    PLANS.get_or_init(|| {
        let mut out = Plans::new();
        let types: BTreeSet<&'static str> = mamori_fhir::generated::RESOURCE_TYPES.iter().copied().collect();
        for t in types {
            plan_type(t, &mut out);
        }
        out
    })
}

/// Splits an expression at its top-level ` | `.
fn terms(expr: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let (mut depth, mut start) = (0i32, 0usize);
    let b = expr.as_bytes();
    for (i, &c) in b.iter().enumerate() {
        match c {
            b'(' => depth += 1,
            b')' => depth -= 1,
            b'|' if depth == 0 => {
                out.push(expr[start..i].trim());
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(expr[start..].trim());
    out
}

fn unionable(p: ParamType) -> bool {
    matches!(
        p,
        ParamType::String
            | ParamType::Token
            | ParamType::Uri
            | ParamType::Date
            | ParamType::Number
            | ParamType::Quantity
    )
}

fn plan_type(t: &'static str, out: &mut Plans) {
    let params: Vec<_> = params_for(t)
        .iter()
        .filter(|d| !d.expression.is_empty() && unionable(d.ptype) && canonical_code(t, d.code) == d.code)
        .collect();
    // Expression unions, fewest terms first so a part is decided before what it covers.
    let mut by_terms: Vec<_> = params.iter().map(|d| (terms(d.expression), *d)).collect();
    by_terms.sort_by_key(|(ts, d)| (ts.len(), d.code));
    let mut unions: BTreeSet<&'static str> = BTreeSet::new();
    for (ts, d) in &by_terms {
        if ts.len() < 2 {
            continue;
        }
        let mut covered: BTreeSet<&str> = BTreeSet::new();
        let mut parts = Vec::new();
        for (qs, q) in &by_terms {
            if q.code == d.code || q.ptype != d.ptype || unions.contains(q.code) || qs.len() >= ts.len() {
                continue;
            }
            if qs.iter().all(|x| ts.contains(x)) {
                covered.extend(qs.iter().copied());
                parts.push(q.code);
            }
        }
        if covered.len() == ts.iter().collect::<BTreeSet<_>>().len() && !parts.is_empty() {
            unions.insert(d.code);
            out.entry(t).or_default().insert(d.code, Plan { own_rows: false, parts, skip_fields: Vec::new() });
        }
    }
    // Element parts of string parameters (HumanName, Address).
    for d in &params {
        if d.ptype != ParamType::String || unions.contains(d.code) || terms(d.expression).len() != 1 {
            continue;
        }
        let mut plan = Plan { own_rows: true, ..Plan::default() };
        for q in &params {
            if q.ptype != ParamType::String || q.code == d.code || unions.contains(q.code) {
                continue;
            }
            let Some(field) = q.expression.strip_prefix(d.expression).and_then(|r| r.strip_prefix('.')) else {
                continue;
            };
            if field.is_empty() || !field.bytes().all(|c| c.is_ascii_alphabetic()) {
                continue;
            }
            if indexes_contains(t, q.code) != indexes_contains(t, d.code) {
                continue; // `:contains` grams must be alike in every part
            }
            plan.parts.push(q.code);
            plan.skip_fields.push(field);
        }
        if !plan.parts.is_empty() {
            out.entry(t).or_default().insert(d.code, plan);
        }
    }
}

fn plan(rtype: &str, code: &str) -> Option<&'static Plan> {
    plans().get(rtype)?.get(code)
}

/// Whether `code` of `rtype` (canonical) gets index rows of its own.
pub(crate) fn has_own_rows(rtype: &str, code: &str) -> bool {
    plan(rtype, code).is_none_or(|p| p.own_rows)
}

/// Element fields left out of the rows of `code` (another parameter indexes them).
pub(crate) fn skipped_fields(rtype: &str, code: &str) -> &'static [&'static str] {
    plan(rtype, code).map_or(&[], |p| p.skip_fields.as_slice())
}

/// The parameters whose rows together answer `code` of `rtype`: itself when it has rows, and
/// the parts it is a union of.
pub(crate) fn keys(rtype: &str, code: &str) -> Vec<ParamKey> {
    let code = canonical_code(rtype, code);
    match plan(rtype, code) {
        None => vec![ParamKey::new(rtype, code)],
        Some(p) => {
            let mut out = Vec::with_capacity(p.parts.len() + 1);
            if p.own_rows {
                out.push(ParamKey::new(rtype, code));
            }
            out.extend(p.parts.iter().map(|q| ParamKey::new(rtype, q)));
            out
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn codes(t: &str, c: &str) -> Vec<i64> {
        keys(t, c).into_iter().map(|k| k.pid).collect()
    }

    #[test]
    fn observation_combos_are_unions_of_their_parts() {
        let pid = |c| ParamKey::new("Observation", c).pid;
        assert!(!has_own_rows("Observation", "combo-code"));
        let mut got = codes("Observation", "combo-code");
        got.sort();
        let mut want = vec![pid("code"), pid("component-code")];
        want.sort();
        assert_eq!(got, want);
        assert!(!has_own_rows("Observation", "combo-value-concept"));
        assert!(!has_own_rows("Observation", "combo-value-quantity"));
        assert!(has_own_rows("Observation", "code"));
        assert_eq!(codes("Observation", "code"), vec![pid("code")]);
    }

    #[test]
    fn names_and_addresses_leave_indexed_parts_to_their_parameters() {
        assert!(has_own_rows("Patient", "name"));
        let mut f = skipped_fields("Patient", "name").to_vec();
        f.sort();
        assert_eq!(f, ["family", "given"]);
        assert_eq!(codes("Patient", "phonetic"), codes("Patient", "name"));
        let mut a = skipped_fields("Patient", "address").to_vec();
        a.sort();
        assert_eq!(a, ["city", "country", "postalCode", "state"]);
        assert!(skipped_fields("Patient", "family").is_empty());
    }

    #[test]
    fn expression_terms_split_at_top_level_only() {
        assert_eq!(terms("(A as B) | (C.where(x | y))"), vec!["(A as B)", "(C.where(x | y))"]);
        assert_eq!(terms("A.b"), vec!["A.b"]);
    }
}
