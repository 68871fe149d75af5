//! Parsing a FHIR search query into typed clauses, against the generated R4 parameter table.
//!
//! Everything a client can get wrong is caught here and answered 400 with the offending
//! parameter named — unless the client sent `Prefer: handling=lenient`, in which case unknown
//! parameters are dropped and listed (the self link then shows only what was used).

use mamori_fhir::resource_type::ResourceType;
use mamori_fhir::search_params::{self, ParamType, SearchParamDef};

use super::date_range;
use crate::StoreError;
use crate::query::{PageLimits, clip};

/// Parameters the server itself consumes (presentation); the store ignores them.
const PRESENTATION_PARAMS: &[&str] = &["_format", "_pretty", "_elements", "_summary"];

/// How deep chains (`a.b.c`) and `_has` may nest: enough for real queries, bounded for cost.
const MAX_CHAIN_DEPTH: usize = 3;
/// Values in one comma-separated list, and clauses in one query.
const MAX_VALUES: usize = 100;
const MAX_CLAUSES: usize = 50;

/// Comparison prefixes of number, date and quantity values.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Prefix {
    Eq,
    Ne,
    Lt,
    Gt,
    Le,
    Ge,
    Sa,
    Eb,
    Ap,
}

impl Prefix {
    fn split(raw: &str) -> (Prefix, &str) {
        let table = [
            ("eq", Prefix::Eq),
            ("ne", Prefix::Ne),
            ("lt", Prefix::Lt),
            ("gt", Prefix::Gt),
            ("le", Prefix::Le),
            ("ge", Prefix::Ge),
            ("sa", Prefix::Sa),
            ("eb", Prefix::Eb),
            ("ap", Prefix::Ap),
        ];
        for (p, v) in table {
            if let Some(rest) = raw.strip_prefix(p) {
                return (v, rest);
            }
        }
        (Prefix::Eq, raw)
    }
}

/// How a string value is compared.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StringMode {
    Prefix,
    Exact,
    Contains,
}

/// A token value as written: `code`, `system|code`, `|code`, `system|`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TokenValue {
    Code(String),
    SystemCode(String, String),
    NoSystemCode(String),
    System(String),
}

impl TokenValue {
    pub fn parse(raw: &str) -> Option<TokenValue> {
        match raw.split_once('|') {
            None if !raw.is_empty() => Some(TokenValue::Code(raw.to_string())),
            None => None,
            Some(("", "")) => None,
            Some(("", v)) => Some(TokenValue::NoSystemCode(v.to_string())),
            Some((s, "")) => Some(TokenValue::System(s.to_string())),
            Some((s, v)) => Some(TokenValue::SystemCode(s.to_string(), v.to_string())),
        }
    }
}

/// One alternative of a clause (the values of a comma-separated list are ORed).
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    String {
        text: String,
        mode: StringMode,
    },
    Token(TokenValue),
    /// `:text`: a prefix of the display text.
    TokenText(String),
    /// `:of-type`: identifier type system, type code, value.
    OfType(String, String, String),
    Reference {
        rtype: Option<String>,
        id: String,
    },
    ReferenceUrl(String),
    Date {
        prefix: Prefix,
        lo: i64,
        hi: i64,
    },
    Number {
        prefix: Prefix,
        value: f64,
        precision: f64,
        system: Option<String>,
        code: Option<String>,
    },
    Uri(String),
    /// A composite value: the first component's token and the others' values.
    Composite {
        head: TokenValue,
        rest: Vec<(&'static str, ParamType, Box<Value>)>,
    },
}

/// One ANDed condition of a search.
#[derive(Clone, Debug, PartialEq)]
pub enum Clause {
    /// `_id=a,b`
    Id(Vec<String>),
    /// A parameter compared with values (ORed). `negate` is the token `:not` modifier.
    Match { rtype: String, code: &'static str, ptype: ParamType, negate: bool, values: Vec<Value> },
    /// `param:missing=true|false`
    Missing { rtype: String, code: &'static str, missing: bool },
    /// `ref:Type.param=…`: the reference points at a resource of one of `targets` meeting `inner`.
    Chain { rtype: String, code: &'static str, targets: Vec<String>, inner: Vec<Vec<Clause>> },
    /// `_has:Type:ref:param=…`: some `source` resource referring here by `code` meets `inner`.
    Has { source: String, code: &'static str, inner: Vec<Clause> },
}

/// A sort key: a parameter and direction.
#[derive(Clone, Debug, PartialEq)]
pub struct SortKey {
    pub code: &'static str,
    pub ptype: ParamType,
    pub descending: bool,
}

/// `_include` / `_revinclude`: `Source:param[:Target]`, with `:iterate`.
#[derive(Clone, Debug, PartialEq)]
pub struct Include {
    pub source: String,
    pub code: &'static str,
    pub target: Option<String>,
    pub iterate: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TotalMode {
    None,
    Accurate,
}

/// Where a page starts: the data as of `snapshot` (the last version seq when the search began;
/// resources created later are left out, so inserts between pages never shift them) and an offset.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cursor {
    pub snapshot: i64,
    pub offset: usize,
}

impl Cursor {
    pub fn encode(&self) -> String {
        format!("{}-{}", self.snapshot, self.offset)
    }

    pub fn decode(raw: &str) -> Result<Cursor, StoreError> {
        let bad = || StoreError::invalid("invalid", "_cursor is not a valid paging cursor");
        let (s, o) = raw.split_once('-').ok_or_else(bad)?;
        Ok(Cursor { snapshot: s.parse().map_err(|_| bad())?, offset: o.parse().map_err(|_| bad())? })
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct SearchQuery {
    pub rtype: ResourceType,
    pub clauses: Vec<Clause>,
    pub sort: Vec<SortKey>,
    pub count: usize,
    pub cursor: Option<Cursor>,
    pub includes: Vec<Include>,
    pub revincludes: Vec<Include>,
    pub total: TotalMode,
    /// `_summary=count`: only the total.
    pub count_only: bool,
    /// Compartment search: only resources in this patient's compartment.
    pub compartment: Option<String>,
    /// `Patient/{id}/$everything`: every resource type (with `compartment` set).
    pub all_types: bool,
    /// Parameters dropped under `Prefer: handling=lenient`, reported back in the self link.
    pub ignored: Vec<String>,
}

/// The parts of the request a parse needs besides the parameters.
#[derive(Clone, Copy, Debug)]
pub struct ParseOptions<'a> {
    pub limits: PageLimits,
    pub lenient: bool,
    /// This server's base URL: absolute references under it are local `Type/id` references.
    pub base_url: Option<&'a str>,
}

impl<'a> ParseOptions<'a> {
    pub fn new(limits: PageLimits) -> ParseOptions<'a> {
        ParseOptions { limits, lenient: false, base_url: None }
    }
}

fn unknown(name: &str, rtype: &str) -> StoreError {
    StoreError::Unsupported(format!("unknown search parameter '{}' for {rtype}", clip(name)))
}

fn invalid(name: &str, why: impl std::fmt::Display) -> StoreError {
    StoreError::invalid("invalid", format!("search parameter '{}': {why}", clip(name)))
}

impl SearchQuery {
    pub fn parse(
        rtype: ResourceType,
        pairs: &[(String, String)],
        opts: ParseOptions<'_>,
    ) -> Result<SearchQuery, StoreError> {
        let mut q = SearchQuery {
            rtype,
            clauses: Vec::new(),
            sort: Vec::new(),
            count: opts.limits.default_count,
            cursor: None,
            includes: Vec::new(),
            revincludes: Vec::new(),
            total: TotalMode::Accurate,
            count_only: false,
            compartment: None,
            all_types: false,
            ignored: Vec::new(),
        };
        if pairs.len() > MAX_CLAUSES {
            return Err(StoreError::TooCostly(format!("at most {MAX_CLAUSES} search parameters per query")));
        }
        for (name, value) in pairs {
            let handled = q.parse_control(name, value, opts)?;
            if handled {
                continue;
            }
            match parse_clause(rtype.as_str(), name, value, opts, 0) {
                Ok(c) => q.clauses.push(c),
                Err(StoreError::Unsupported(_)) if opts.lenient => q.ignored.push(name.clone()),
                Err(e) => return Err(e),
            }
        }
        Ok(q)
    }

    /// Result-control parameters; true when `name` was one.
    fn parse_control(&mut self, name: &str, value: &str, opts: ParseOptions<'_>) -> Result<bool, StoreError> {
        let rtype = self.rtype.as_str();
        match name {
            "_count" => {
                let n: usize = value.parse().map_err(|_| {
                    StoreError::invalid(
                        "invalid",
                        format!("_count must be a non-negative integer, got '{}'", clip(value)),
                    )
                })?;
                self.count = n.min(opts.limits.max_count);
            }
            "_cursor" => self.cursor = Some(Cursor::decode(value)?),
            "_total" => {
                self.total = match value {
                    "none" => TotalMode::None,
                    "estimate" | "accurate" => TotalMode::Accurate,
                    _ => return Err(invalid(name, "expected none, estimate or accurate")),
                }
            }
            "_summary" if value == "count" => self.count_only = true,
            "_sort" => {
                for key in value.split(',').filter(|k| !k.is_empty()) {
                    let (descending, code) = match key.strip_prefix('-') {
                        Some(c) => (true, c),
                        None => (false, key),
                    };
                    let def = lookup(rtype, code).ok_or_else(|| unknown(code, rtype))?;
                    if matches!(def.ptype, ParamType::Composite | ParamType::Special) {
                        return Err(invalid("_sort", format!("cannot sort by the {:?} parameter '{code}'", def.ptype)));
                    }
                    self.sort.push(SortKey { code: def.code, ptype: def.ptype, descending });
                }
            }
            "_include" | "_include:iterate" | "_revinclude" | "_revinclude:iterate" => {
                let iterate = name.ends_with(":iterate");
                let inc = parse_include(name, value, iterate)?;
                if name.starts_with("_include") {
                    self.includes.push(inc);
                } else {
                    self.revincludes.push(inc);
                }
            }
            n if PRESENTATION_PARAMS.contains(&n) => {}
            _ => return Ok(false),
        }
        Ok(true)
    }

    /// True when the query has no criteria at all (conditional operations refuse that).
    pub fn has_criteria(&self) -> bool {
        !self.clauses.is_empty()
    }
}

fn parse_include(name: &str, value: &str, iterate: bool) -> Result<Include, StoreError> {
    let parts: Vec<&str> = value.split(':').collect();
    let (source, code, target) = match parts.as_slice() {
        [s, c] => (*s, *c, None),
        [s, c, t] => (*s, *c, Some(t.to_string())),
        _ => return Err(invalid(name, "expected Source:parameter[:Target]")),
    };
    ResourceType::parse(source).map_err(|_| invalid(name, format!("unknown resource type '{}'", clip(source))))?;
    let def = lookup(source, code).ok_or_else(|| unknown(code, source))?;
    if def.ptype != ParamType::Reference {
        return Err(invalid(name, format!("'{code}' is not a reference parameter of {source}")));
    }
    if let Some(t) = &target
        && !def.targets.contains(&t.as_str())
    {
        return Err(invalid(name, format!("{source}:{code} does not refer to {}", clip(t))));
    }
    Ok(Include { source: source.to_string(), code: def.code, target, iterate })
}

fn lookup(rtype: &str, code: &str) -> Option<&'static SearchParamDef> {
    search_params::lookup(rtype, code)
}

/// One search parameter (name with modifiers and chains, and its value) in the context of `rtype`.
fn parse_clause(
    rtype: &str,
    name: &str,
    value: &str,
    opts: ParseOptions<'_>,
    depth: usize,
) -> Result<Clause, StoreError> {
    if depth > MAX_CHAIN_DEPTH {
        return Err(invalid(name, format!("chains and _has nest at most {MAX_CHAIN_DEPTH} levels")));
    }
    if let Some(rest) = name.strip_prefix("_has:") {
        return parse_has(rtype, name, rest, value, opts, depth);
    }
    if name == "_id" {
        let ids: Vec<String> = split_values(value).into_iter().collect();
        if ids.is_empty() || ids.len() > MAX_VALUES {
            return Err(invalid(name, "expected 1 to 100 ids"));
        }
        return Ok(Clause::Id(ids));
    }
    // A chain: `ref[:Type].rest`.
    if let Some((head, rest)) = name.split_once('.') {
        let (code, modifier) = split_modifier(head);
        let def = lookup(rtype, code).ok_or_else(|| unknown(code, rtype))?;
        if def.ptype != ParamType::Reference {
            return Err(invalid(name, format!("'{code}' is not a reference parameter, so it cannot be chained")));
        }
        let targets: Vec<String> = match modifier {
            Some(t) if def.targets.contains(&t) => vec![t.to_string()],
            Some(t) => return Err(invalid(name, format!("{rtype}:{code} does not refer to {}", clip(t)))),
            None => def.targets.iter().map(|t| t.to_string()).collect(),
        };
        // The chained parameter must exist on at least one target; targets without it drop out.
        let mut inner = Vec::new();
        let mut kept: Vec<String> = Vec::new();
        for t in &targets {
            match parse_clause(t, rest, value, opts, depth + 1) {
                Ok(c) => {
                    kept.push(t.to_string());
                    inner.push(vec![c]);
                }
                Err(StoreError::Unsupported(_)) => {}
                Err(e) => return Err(e),
            }
        }
        if kept.is_empty() {
            return Err(unknown(name, rtype));
        }
        return Ok(Clause::Chain { rtype: rtype.to_string(), code: def.code, targets: kept, inner });
    }
    let (code, modifier) = split_modifier(name);
    let def = lookup(rtype, code).ok_or_else(|| unknown(code, rtype))?;
    if def.expression.is_empty() || def.ptype == ParamType::Special {
        return Err(StoreError::Unsupported(format!("search parameter '{}' is not supported", clip(code))));
    }
    if modifier == Some("missing") {
        let missing = match value {
            "true" => true,
            "false" => false,
            _ => return Err(invalid(name, "':missing' takes true or false")),
        };
        return Ok(Clause::Missing { rtype: rtype.to_string(), code: def.code, missing });
    }
    let raw_values = split_values(value);
    if raw_values.is_empty() {
        return Err(invalid(name, "empty value"));
    }
    if raw_values.len() > MAX_VALUES {
        return Err(StoreError::TooCostly(format!("at most {MAX_VALUES} values per search parameter")));
    }
    let mut negate = false;
    let mut values = Vec::with_capacity(raw_values.len());
    for raw in &raw_values {
        let v = match (def.ptype, modifier) {
            (ParamType::String, None) => Value::String { text: raw.clone(), mode: StringMode::Prefix },
            (ParamType::String, Some("exact")) => Value::String { text: raw.clone(), mode: StringMode::Exact },
            (ParamType::String, Some("contains")) => Value::String { text: raw.clone(), mode: StringMode::Contains },
            (ParamType::Token, None | Some("not")) => {
                negate = modifier == Some("not");
                Value::Token(TokenValue::parse(raw).ok_or_else(|| invalid(name, "expected [system]|[code]"))?)
            }
            (ParamType::Token, Some("text")) => Value::TokenText(raw.clone()),
            (ParamType::Token, Some("of-type")) => {
                let mut it = raw.splitn(3, '|');
                match (it.next(), it.next(), it.next()) {
                    (Some(s), Some(c), Some(v)) if !c.is_empty() && !v.is_empty() => {
                        Value::OfType(s.to_string(), c.to_string(), v.to_string())
                    }
                    _ => return Err(invalid(name, "':of-type' takes [type system]|[type code]|[value]")),
                }
            }
            (ParamType::Reference, m) => parse_reference_value(name, def, m, raw, opts)?,
            (ParamType::Date, None) => {
                let (prefix, rest) = Prefix::split(raw);
                let (lo, hi) = date_range(rest).ok_or_else(|| {
                    invalid(name, format!("'{}' is not a FHIR date, dateTime or instant", clip(rest)))
                })?;
                Value::Date { prefix, lo, hi }
            }
            (ParamType::Number | ParamType::Quantity, None) => parse_number_value(name, def.ptype, raw)?,
            (ParamType::Uri, None) => Value::Uri(raw.clone()),
            (ParamType::Composite, None) => parse_composite_value(name, def, raw)?,
            (_, Some(m)) => {
                return Err(StoreError::Unsupported(format!(
                    "modifier ':{}' is not supported on search parameter '{}'",
                    clip(m),
                    def.code
                )));
            }
            (ParamType::Special, None) => return Err(unknown(code, rtype)),
        };
        values.push(v);
    }
    Ok(Clause::Match { rtype: rtype.to_string(), code: def.code, ptype: def.ptype, negate, values })
}

fn parse_has(
    rtype: &str,
    name: &str,
    rest: &str,
    value: &str,
    opts: ParseOptions<'_>,
    depth: usize,
) -> Result<Clause, StoreError> {
    let mut parts = rest.splitn(3, ':');
    let (Some(source), Some(code), Some(inner_name)) = (parts.next(), parts.next(), parts.next()) else {
        return Err(invalid(name, "expected _has:Type:reference:parameter"));
    };
    ResourceType::parse(source).map_err(|_| invalid(name, format!("unknown resource type '{}'", clip(source))))?;
    let def = lookup(source, code).ok_or_else(|| unknown(code, source))?;
    if def.ptype != ParamType::Reference || !def.targets.contains(&rtype) {
        return Err(invalid(name, format!("{source}:{code} is not a reference to {rtype}")));
    }
    let inner = parse_clause(source, inner_name, value, opts, depth + 1)?;
    Ok(Clause::Has { source: source.to_string(), code: def.code, inner: vec![inner] })
}

fn parse_reference_value(
    name: &str,
    def: &SearchParamDef,
    modifier: Option<&str>,
    raw: &str,
    opts: ParseOptions<'_>,
) -> Result<Value, StoreError> {
    let type_modifier = match modifier {
        None => None,
        Some(t) if def.targets.contains(&t) => Some(t.to_string()),
        Some(t) if ResourceType::parse(t).is_ok() => {
            return Err(invalid(name, format!("{} does not refer to {}", def.code, clip(t))));
        }
        Some(m) => {
            return Err(StoreError::Unsupported(format!(
                "modifier ':{}' is not supported on search parameter '{}'",
                clip(m),
                def.code
            )));
        }
    };
    let local =
        opts.base_url.and_then(|b| raw.strip_prefix(b.trim_end_matches('/'))).map(|r| r.trim_start_matches('/'));
    if raw.contains("://") && local.is_none() {
        return Ok(Value::ReferenceUrl(raw.to_string()));
    }
    let path = local.unwrap_or(raw);
    let segs: Vec<&str> = path.split('/').collect();
    let (rtype, id) = match segs.as_slice() {
        [id] => (type_modifier, id.to_string()),
        [t, id] | [t, id, "_history", _] => {
            ResourceType::parse(t).map_err(|_| invalid(name, format!("unknown resource type '{}'", clip(t))))?;
            if type_modifier.as_deref().is_some_and(|m| m != *t) {
                return Err(invalid(name, "the type modifier and the reference's type differ"));
            }
            (Some(t.to_string()), id.to_string())
        }
        _ => return Err(invalid(name, "expected id, Type/id or an absolute URL")),
    };
    if id.is_empty() {
        return Err(invalid(name, "empty reference id"));
    }
    Ok(Value::Reference { rtype, id })
}

fn parse_number_value(name: &str, ptype: ParamType, raw: &str) -> Result<Value, StoreError> {
    let (prefix, rest) = Prefix::split(raw);
    let mut parts = rest.splitn(3, '|');
    let number = parts.next().unwrap_or("");
    let system = parts.next().filter(|s| !s.is_empty()).map(str::to_string);
    let code = parts.next().filter(|s| !s.is_empty()).map(str::to_string);
    if ptype == ParamType::Number && (system.is_some() || code.is_some()) {
        return Err(invalid(name, "a number takes no unit"));
    }
    let value: f64 = number
        .parse()
        .ok()
        .filter(|v: &f64| v.is_finite())
        .ok_or_else(|| invalid(name, format!("'{}' is not a number", clip(number))))?;
    // The precision the client wrote: 5.4 means [5.35, 5.45).
    let decimals = number.split_once(['e', 'E']).map_or(number, |(m, _)| m).split_once('.').map_or(0, |(_, f)| f.len());
    let precision = 0.5 * 10f64.powi(-(decimals as i32));
    Ok(Value::Number { prefix, value, precision, system, code })
}

fn parse_composite_value(name: &str, def: &SearchParamDef, raw: &str) -> Result<Value, StoreError> {
    let parts: Vec<&str> = raw.split('$').collect();
    if parts.len() != def.components.len() || parts.len() < 2 {
        return Err(invalid(name, format!("expected {} '$'-separated components", def.components.len())));
    }
    if def.components[0].ptype != ParamType::Token {
        return Err(StoreError::Unsupported(format!("composite parameter '{}' is not supported", def.code)));
    }
    let head = TokenValue::parse(parts[0]).ok_or_else(|| invalid(name, "expected [system]|[code] first"))?;
    let mut rest = Vec::new();
    for (comp, part) in def.components.iter().zip(&parts).skip(1) {
        let v = match comp.ptype {
            ParamType::Token => {
                Value::Token(TokenValue::parse(part).ok_or_else(|| invalid(name, "expected [system]|[code]"))?)
            }
            ParamType::Quantity | ParamType::Number => parse_number_value(name, comp.ptype, part)?,
            ParamType::Date => {
                let (prefix, r) = Prefix::split(part);
                let (lo, hi) = date_range(r).ok_or_else(|| invalid(name, "not a FHIR date"))?;
                Value::Date { prefix, lo, hi }
            }
            ParamType::String => Value::String { text: part.to_string(), mode: StringMode::Prefix },
            _ => return Err(StoreError::Unsupported(format!("composite parameter '{}' is not supported", def.code))),
        };
        rest.push((comp.code, comp.ptype, Box::new(v)));
    }
    Ok(Value::Composite { head, rest })
}

fn split_modifier(name: &str) -> (&str, Option<&str>) {
    match name.split_once(':') {
        Some((c, m)) => (c, Some(m)),
        None => (name, None),
    }
}

/// Splits a comma-separated list, honouring `\,` as a literal comma.
fn split_values(raw: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut chars = raw.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.next() {
                Some(n @ (',' | '\\')) => cur.push(n),
                Some(n) => {
                    cur.push('\\');
                    cur.push(n);
                }
                None => cur.push('\\'),
            },
            ',' => out.push(std::mem::take(&mut cur)),
            c => cur.push(c),
        }
    }
    out.push(cur);
    out.retain(|v| !v.is_empty());
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::query::parse_query_string;

    fn parse(rtype: &str, q: &str) -> Result<SearchQuery, StoreError> {
        let rt = ResourceType::parse(rtype).unwrap();
        SearchQuery::parse(rt, &parse_query_string(q), ParseOptions::new(PageLimits::default()))
    }

    #[test]
    fn unknown_parameters_are_named_and_lenient_mode_lists_them() {
        let err = parse("Patient", "nonsense=x").unwrap_err().to_string();
        assert!(err.contains("'nonsense'"), "{err}");
        let rt = ResourceType::parse("Patient").unwrap();
        let opts = ParseOptions { lenient: true, ..ParseOptions::new(PageLimits::default()) };
        let q = SearchQuery::parse(rt, &parse_query_string("nonsense=x&gender=male"), opts).unwrap();
        assert_eq!(q.ignored, vec!["nonsense".to_string()]);
        assert_eq!(q.clauses.len(), 1);
    }

    #[test]
    fn count_is_clamped_to_the_configured_maximum() {
        let rt = ResourceType::parse("Patient").unwrap();
        let opts = ParseOptions::new(PageLimits { default_count: 10, max_count: 100 });
        let q = SearchQuery::parse(rt, &parse_query_string("_count=100000"), opts).unwrap();
        assert_eq!(q.count, 100);
        assert!(parse("Patient", "_count=-1").is_err());
    }

    #[test]
    fn values_modifiers_chains_and_has_parse_into_clauses() {
        let q = parse("Observation", "code=http://loinc.org|8302-2,|x&date=ge2020&value-quantity=5.4||mg").unwrap();
        assert_eq!(q.clauses.len(), 3);
        match &q.clauses[2] {
            Clause::Match { values, .. } => match &values[0] {
                Value::Number { value, precision, code, .. } => {
                    assert_eq!(*value, 5.4);
                    assert!((precision - 0.05).abs() < 1e-12);
                    assert_eq!(code.as_deref(), Some("mg"));
                }
                other => panic!("{other:?}"),
            },
            other => panic!("{other:?}"),
        }
        let q = parse("Observation", "subject:Patient.name=peter").unwrap();
        assert!(matches!(&q.clauses[0], Clause::Chain { targets, .. } if targets == &["Patient".to_string()]));
        let q = parse("Patient", "_has:Observation:patient:code=1234").unwrap();
        assert!(matches!(&q.clauses[0], Clause::Has { source, .. } if source == "Observation"));
        assert!(parse("Patient", "_has:Observation:performer:code=1").is_ok());
        assert!(parse("Patient", "_has:Observation:code:code=1").is_err());
        assert!(parse("Patient", "gender:below=x").is_err());
        assert!(parse("Patient", "birthdate=2020-13").is_err());
    }

    #[test]
    fn escaped_commas_stay_in_the_value() {
        assert_eq!(split_values("a\\,b,c"), vec!["a,b".to_string(), "c".to_string()]);
    }
}
