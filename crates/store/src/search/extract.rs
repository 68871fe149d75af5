//! From a resource to its index entries: evaluate each search parameter's FHIRPath expression
//! (generated from the R4 SearchParameter definitions) and turn the values into rows.
//!
//! What is keyed (HMAC tokens, ENC-1) and what is clear is decided by the *type* of the
//! parameter, never per resource: string, token and uri values are tokens; references (server
//! ids), dates and numbers/quantities are clear. ARCHITECTURE.md ("Search over encrypted
//! storage") explains why each is safe and what leaks.

use mamori_fhir::fhirpath::Node;
use mamori_fhir::search_params::{self, ParamType, SearchParamDef};
use serde_json::Value;

use super::normalize::normalize;
use super::{PREFIX_CHARS, ParamKey, Token, date_range};
use crate::keys::IndexKey;

/// One index entry of one resource.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Entry {
    Token(i64, [u8; 16]),
    Ref { pid: i64, target_type: Option<String>, target_id: Option<String>, url: Option<String> },
    Date { pid: i64, lo: i64, hi: i64 },
    Number { pid: i64, value: f64, system: Option<String>, code: Option<String> },
    Present(i64),
}

/// Every index entry of `body` (a resource of type `rtype`).
pub(crate) fn entries(key: &IndexKey, rtype: &str, body: &Value) -> Vec<Entry> {
    let mut out = Vec::new();
    for def in search_params::params_for(rtype) {
        if def.expression.is_empty() || def.ptype == ParamType::Special || def.code == "_id" {
            continue;
        }
        if super::canonical_code(rtype, def.code) != def.code {
            continue; // indexed under the parameter it is an alias of
        }
        if !super::unions::has_own_rows(rtype, def.code) {
            continue; // answered by the rows of the parameters it is a union of
        }
        let pk = ParamKey::new(rtype, def.code);
        let nodes = search_params::compiled(def).evaluate(body);
        let before = out.len();
        match def.ptype {
            ParamType::String => {
                let grams = super::indexes_contains(rtype, def.code);
                let skip = super::unions::skipped_fields(rtype, def.code);
                for n in &nodes {
                    for part in string_parts_skipping(n.value, skip) {
                        string_part_entries(key, &pk, part, grams, &mut out);
                    }
                }
            }
            ParamType::Token => nodes.iter().for_each(|n| token_entries(key, &pk, n, &mut out)),
            ParamType::Uri => nodes.iter().for_each(|n| uri_entries(key, &pk, n.value, &mut out)),
            ParamType::Reference => nodes.iter().for_each(|n| reference_entries(&pk, n.value, &mut out)),
            ParamType::Date => nodes.iter().for_each(|n| date_entries(&pk, n.value, &mut out)),
            ParamType::Number | ParamType::Quantity => nodes.iter().for_each(|n| number_entries(&pk, n, &mut out)),
            ParamType::Composite => composite_entries(key, &pk, def, &nodes, body, &mut out),
            ParamType::Special => {}
        }
        if out.len() > before {
            out.push(Entry::Present(pk.pid));
        }
    }
    out
}

/// The searchable text parts of a string-typed value: a string itself, or for complex types
/// (HumanName, Address, …) each of their string parts, as FHIR string search defines.
pub(crate) fn string_parts(v: &Value) -> Vec<&str> {
    string_parts_skipping(v, &[])
}

/// [`string_parts`] without the element fields `skip` (indexed by their own parameters).
fn string_parts_skipping<'a>(v: &'a Value, skip: &[&str]) -> Vec<&'a str> {
    let mut parts = Vec::new();
    match v {
        Value::String(s) => parts.push(s.as_str()),
        Value::Object(map) => {
            for (k, child) in map {
                // Codes and structure, not text.
                if matches!(k.as_str(), "use" | "period" | "type" | "id" | "extension" | "resourceType")
                    || skip.contains(&k.as_str())
                {
                    continue;
                }
                match child {
                    Value::String(s) => parts.push(s.as_str()),
                    Value::Array(items) => parts.extend(items.iter().filter_map(Value::as_str)),
                    _ => {}
                }
            }
        }
        _ => {}
    }
    parts
}

pub(crate) fn string_entries(key: &IndexKey, pk: &ParamKey, v: &Value, grams: bool, out: &mut Vec<Entry>) {
    for part in string_parts(v) {
        string_part_entries(key, pk, part, grams, out);
    }
}

fn string_part_entries(key: &IndexKey, pk: &ParamKey, part: &str, grams: bool, out: &mut Vec<Entry>) {
    out.push(Entry::Token(pk.pid, pk.token(key, Token::Exact(part))));
    let norm: Vec<char> = normalize(part).chars().collect();
    for len in 1..=norm.len().min(PREFIX_CHARS) {
        let prefix: String = norm[..len].iter().collect();
        out.push(Entry::Token(pk.pid, pk.token(key, Token::Prefix(&prefix))));
    }
    if grams {
        for gram in gram_set(&norm) {
            out.push(Entry::Token(pk.pid, pk.token(key, Token::Gram(&gram))));
        }
    }
}

/// The 1- and 2-character grams `:contains` looks up (then confirms on the decrypted value).
pub(crate) fn gram_set(norm: &[char]) -> Vec<String> {
    let mut out: Vec<String> = norm.iter().map(|c| c.to_string()).collect();
    out.extend(norm.windows(2).map(|w| w.iter().collect::<String>()));
    out.sort_unstable();
    out.dedup();
    out
}

/// System/code pairs of a token-typed node, whatever its FHIR type.
pub(crate) struct Coded<'a> {
    pub system: Option<&'a str>,
    pub code: Option<String>,
    /// Display text (`CodeableConcept.text`, `Coding.display`, `Identifier.type.text`) for `:text`.
    pub text: Vec<&'a str>,
    /// Identifier.type codings, for `:of-type`.
    pub of_type: Vec<(Option<&'a str>, &'a str)>,
}

pub(crate) fn coded<'a>(n: &Node<'a>) -> Vec<Coded<'a>> {
    let v = n.value;
    let plain = |code: String| Coded { system: None, code: Some(code), text: Vec::new(), of_type: Vec::new() };
    match v {
        Value::String(s) => vec![plain(s.clone())],
        Value::Bool(b) => vec![plain(b.to_string())],
        Value::Number(num) => vec![plain(num.to_string())],
        Value::Object(map) => {
            let s = |k: &str| map.get(k).and_then(Value::as_str);
            if let Some(codings) = map.get("coding").and_then(Value::as_array) {
                // CodeableConcept: each coding, plus its text.
                let mut out: Vec<Coded<'a>> = codings.iter().filter_map(coding).collect();
                let text = s("text");
                if out.is_empty() && text.is_some() {
                    out.push(Coded { system: None, code: None, text: Vec::new(), of_type: Vec::new() });
                }
                for c in &mut out {
                    c.text.extend(text);
                }
                return out;
            }
            if map.contains_key("code") && !map.contains_key("value") {
                return coding(v).into_iter().collect();
            }
            if let Some(value) = s("value") {
                // Identifier or ContactPoint: system|value.
                let mut c =
                    Coded { system: s("system"), code: Some(value.to_string()), text: Vec::new(), of_type: Vec::new() };
                if let Some(t) = map.get("type") {
                    c.text.extend(t.get("text").and_then(Value::as_str));
                    for tc in t.get("coding").and_then(Value::as_array).into_iter().flatten() {
                        if let Some(code) = tc.get("code").and_then(Value::as_str) {
                            c.of_type.push((tc.get("system").and_then(Value::as_str), code));
                        }
                        c.text.extend(tc.get("display").and_then(Value::as_str));
                    }
                }
                return vec![c];
            }
            Vec::new()
        }
        _ => Vec::new(),
    }
}

fn coding(v: &Value) -> Option<Coded<'_>> {
    let system = v.get("system").and_then(Value::as_str);
    let code = v.get("code").and_then(Value::as_str).map(str::to_string);
    let display = v.get("display").and_then(Value::as_str);
    (system.is_some() || code.is_some() || display.is_some()).then(|| Coded {
        system,
        code,
        text: display.into_iter().collect(),
        of_type: Vec::new(),
    })
}

fn token_entries(key: &IndexKey, pk: &ParamKey, n: &Node<'_>, out: &mut Vec<Entry>) {
    for c in coded(n) {
        for t in token_forms(&c) {
            out.push(Entry::Token(pk.pid, pk.token(key, t)));
        }
        for text in &c.text {
            let norm: Vec<char> = normalize(text).chars().collect();
            for len in 1..=norm.len().min(PREFIX_CHARS) {
                let prefix: String = norm[..len].iter().collect();
                out.push(Entry::Token(pk.pid, pk.token(key, Token::TextPrefix(&prefix))));
            }
        }
        if let Some(code) = &c.code {
            for (ts, tc) in &c.of_type {
                out.push(Entry::Token(pk.pid, pk.token(key, Token::OfType(ts.unwrap_or(""), tc, code))));
            }
        }
    }
}

/// The token forms a coded value answers to: `code`, `system|code`, `|code`, `system|`.
pub(crate) fn token_forms<'a>(c: &'a Coded<'a>) -> Vec<Token<'a>> {
    let mut forms = Vec::with_capacity(3);
    if let Some(code) = c.code.as_deref() {
        forms.push(Token::Code(code));
        match c.system {
            Some(s) => forms.push(Token::SystemCode(s, code)),
            None => forms.push(Token::NoSystemCode(code)),
        }
    }
    if let Some(s) = c.system {
        forms.push(Token::System(s));
    }
    forms
}

fn uri_entries(key: &IndexKey, pk: &ParamKey, v: &Value, out: &mut Vec<Entry>) {
    if let Some(s) = v.as_str() {
        out.push(Entry::Token(pk.pid, pk.token(key, Token::Exact(s))));
    }
}

/// Splits a reference into (type, id) when it names one: `Type/id`, `Type/id/_history/n` or an
/// absolute URL ending in them. `url` is kept for absolute references (and canonicals).
pub(crate) fn parse_reference(r: &str) -> (Option<String>, Option<String>, Option<String>) {
    let absolute = r.contains("://") || r.starts_with("urn:");
    let path = r.split('|').next().unwrap_or(r); // canonical|version
    let segs: Vec<&str> = path.trim_end_matches('/').split('/').collect();
    let typed = |i: usize| -> Option<(String, String)> {
        let t = segs.get(i)?;
        let id = segs.get(i + 1)?;
        mamori_fhir::resource_type::ResourceType::parse(t).ok()?;
        Some((t.to_string(), id.to_string()))
    };
    let n = segs.len();
    let found = if n >= 4 && segs[n - 2] == "_history" {
        typed(n - 4)
    } else if n >= 2 {
        typed(n - 2)
    } else {
        None
    };
    match found {
        Some((t, id)) => (Some(t), Some(id), absolute.then(|| r.to_string())),
        None => (None, None, Some(r.to_string())),
    }
}

fn reference_entries(pk: &ParamKey, v: &Value, out: &mut Vec<Entry>) {
    let raw = match v {
        Value::Object(m) => m.get("reference").and_then(Value::as_str),
        Value::String(s) => Some(s.as_str()), // canonical / uri
        _ => None,
    };
    let Some(raw) = raw else { return };
    if raw.starts_with('#') {
        return; // contained: not addressable from outside
    }
    let (target_type, target_id, url) = parse_reference(raw);
    out.push(Entry::Ref { pid: pk.pid, target_type, target_id, url });
}

fn date_entries(pk: &ParamKey, v: &Value, out: &mut Vec<Entry>) {
    match v {
        Value::String(s) => {
            if let Some((lo, hi)) = date_range(s) {
                out.push(Entry::Date { pid: pk.pid, lo, hi });
            }
        }
        Value::Object(m) if m.contains_key("start") || m.contains_key("end") => {
            // Period: an open end is unbounded.
            let lo = m.get("start").and_then(Value::as_str).and_then(date_range).map_or(i64::MIN, |r| r.0);
            let hi = m.get("end").and_then(Value::as_str).and_then(date_range).map_or(i64::MAX, |r| r.1);
            if lo <= hi {
                out.push(Entry::Date { pid: pk.pid, lo, hi });
            }
        }
        Value::Object(m) => {
            // Timing: each event.
            for e in m.get("event").and_then(Value::as_array).into_iter().flatten() {
                date_entries(pk, e, out);
            }
        }
        _ => {}
    }
}

fn number_entries(pk: &ParamKey, n: &Node<'_>, out: &mut Vec<Entry>) {
    match n.value {
        Value::Number(num) => {
            if let Some(value) = num.as_f64() {
                out.push(Entry::Number { pid: pk.pid, value, system: None, code: None });
            }
        }
        Value::Object(m) => {
            let Some(value) = m.get("value").and_then(Value::as_f64) else { return };
            let s = |k: &str| m.get(k).and_then(Value::as_str).map(str::to_string);
            // Money carries its unit as `currency`.
            let code = s("code").or_else(|| s("currency"));
            out.push(Entry::Number { pid: pk.pid, value, system: s("system"), code: code.clone() });
            // A quantity can be searched by its human unit too (`5||mg`).
            if let Some(unit) = s("unit").filter(|u| Some(u) != code.as_ref()) {
                out.push(Entry::Number { pid: pk.pid, value, system: None, code: Some(unit) });
            }
        }
        _ => {}
    }
}

/// Composite parameters are indexed as keyed tokens of the component tuple for token-only
/// composites, and as a token of the first component beside a clear number/date for
/// token+quantity / token+date ones (so `code-value-quantity=loinc|x$gt5` is one lookup).
fn composite_entries(
    key: &IndexKey,
    pk: &ParamKey,
    def: &SearchParamDef,
    nodes: &[Node<'_>],
    body: &Value,
    out: &mut Vec<Entry>,
) {
    let Some(first) = def.components.first() else { return };
    if first.ptype != ParamType::Token {
        return;
    }
    let Some(head_expr) = search_params::compiled_component(def, 0) else { return };
    for node in nodes {
        let heads: Vec<Coded<'_>> = head_expr.evaluate_on_with_resource(node, body).iter().flat_map(coded).collect();
        for (i, comp) in def.components.iter().enumerate().skip(1) {
            let Some(expr) = search_params::compiled_component(def, i) else { continue };
            let values = expr.evaluate_on_with_resource(node, body);
            for head in &heads {
                for form in token_forms(head) {
                    let head_key = form.canonical();
                    let cpk = pk.component(key, &head_key, comp.code);
                    match comp.ptype {
                        ParamType::Token => values.iter().flat_map(coded).for_each(|c| {
                            for t in token_forms(&c) {
                                out.push(Entry::Token(cpk.pid, cpk.token(key, t)));
                            }
                        }),
                        ParamType::Quantity | ParamType::Number => {
                            values.iter().for_each(|n| number_entries(&cpk, n, out))
                        }
                        ParamType::Date => values.iter().for_each(|n| date_entries(&cpk, n.value, out)),
                        ParamType::String => values.iter().for_each(|n| string_entries(key, &cpk, n.value, false, out)),
                        ParamType::Reference => values.iter().for_each(|n| reference_entries(&cpk, n.value, out)),
                        _ => {}
                    }
                }
            }
        }
    }
}
