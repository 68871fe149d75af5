//! Running a parsed search against the index tables.
//!
//! The most selective clause becomes `c.first_seq IN (SELECT rid FROM idx_… WHERE …)`, the others
//! correlated probes `EXISTS (… AND rid = c.first_seq)`; keyed values are
//! turned into their HMAC tokens here, so the SQL never sees a name or identifier. Two cases
//! cannot be answered by the index alone and are finished in memory on the decrypted resources
//! (bounded by [`MAX_IN_MEMORY`]): `:contains` and string prefixes longer than the stored prefix
//! tokens (the index gives candidates, the value confirms), and `_sort` by a keyed parameter
//! (names, codes), whose order the index deliberately does not keep.

use std::collections::HashSet;

use mamori_fhir::search_params::{self, ParamType};
use rusqlite::types::Value as Sql;
use rusqlite::{Connection, OptionalExtension, params_from_iter};
use serde_json::Value as Json;

use super::extract::{Coded, coded, string_parts};
use super::normalize::normalize;
use super::params::{Clause, Cursor, Include, Prefix, SearchQuery, SortKey, StringMode, TokenValue, TotalMode, Value};
use super::{PREFIX_CHARS, ParamKey, Token};
use crate::StoreError;
use crate::keyring::KeyRing;
use crate::keys::IndexKey;
use crate::model::VersionRecord;
use crate::rows::{self, Protection};

/// Candidates a search may finish in memory (contains, long prefixes, sorting by keyed values).
pub(crate) const MAX_IN_MEMORY: usize = 10_000;
/// Resources `_include`/`_revinclude` may add to one page.
pub(crate) const MAX_INCLUDED: usize = 1_000;
const DAY_US: i64 = 86_400_000_000;

/// What a search returns: one page of matches, what the includes added, and paging.
#[derive(Debug, Default)]
pub struct SearchResult {
    pub matches: Vec<VersionRecord>,
    pub included: Vec<VersionRecord>,
    pub total: Option<u64>,
    pub next: Option<Cursor>,
    pub previous: Option<Cursor>,
}

/// The connection and keys a search runs with.
pub(crate) struct Ctx<'a> {
    pub conn: &'a Connection,
    pub keys: &'a KeyRing,
    pub index: &'a IndexKey,
    pub protect: Protection,
    pub now_us: i64,
    /// Categories the caller may not view (ACL-3): resources in them are left out of matches,
    /// totals, chains, `_has`, includes and `$everything`.
    pub hidden: &'a crate::category::Visibility,
    /// Sealed version rows shared by every reader.
    pub versions: &'a crate::version_cache::VersionCache,
}

/// A WHERE clause under construction.
struct Where<'a> {
    ctx: &'a Ctx<'a>,
    sql: String,
    args: Vec<Sql>,
    aliases: usize,
    /// While set, value subqueries are correlated to this alias's `first_seq` (probes for one
    /// candidate) instead of listing every matching rid.
    correlate: Option<String>,
}

impl Where<'_> {
    fn push(&mut self, s: &str) {
        self.sql.push_str(s);
    }

    fn arg(&mut self, v: impl Into<Sql>) {
        self.sql.push('?');
        self.args.push(v.into());
    }

    fn alias(&mut self) -> String {
        self.aliases += 1;
        format!("c{}", self.aliases)
    }

    /// `alias.rtype = ? AND alias.deleted = 0 AND <clauses>`. When a clause selects rids by an
    /// index seek, the type test is written `+alias.rtype`: otherwise SQLite (without statistics)
    /// walks every resource of the type in primary-key order and probes the clause's list for
    /// each, which makes even an identifier search linear in the number of resources.
    ///
    /// One clause — the most selective kind present ([`drive_rank`]) — lists its rids and drives
    /// the lookup; every other clause is written as a correlated probe for each candidate, so a
    /// broad criterion (a common code, a date range) is never materialised in full.
    fn resource(&mut self, alias: &str, rtype: &str, clauses: &[Clause]) {
        let driver =
            clauses.iter().enumerate().filter_map(|(i, c)| drive_rank(c).map(|r| (r, i))).min().map(|(_, i)| i);
        let plus = if driver.is_some() { "+" } else { "" };
        self.push(&format!("{plus}{alias}.rtype = "));
        self.arg(rtype.to_string());
        self.push(&format!(" AND {alias}.deleted = 0"));
        self.hidden(alias);
        for (i, c) in clauses.iter().enumerate() {
            self.push(" AND ");
            if Some(i) == driver {
                self.clause(alias, c);
            } else {
                self.probe(alias, c);
            }
        }
    }

    /// A clause as a correlated test of the one resource `a`.
    fn probe(&mut self, a: &str, clause: &Clause) {
        match clause {
            Clause::Id(_) => self.clause(a, clause),
            Clause::Missing { rtype, code, missing } => {
                self.push(&format!("{}EXISTS (SELECT 1 FROM idx_present WHERE pid IN ", not(*missing)));
                self.pids(rtype, code);
                self.push(&format!(" AND rid = {a}.first_seq)"));
            }
            Clause::Match { rtype, code, negate, values, .. } => {
                let saved = self.correlate.replace(a.to_string());
                self.push(&format!("{}EXISTS (", not(*negate)));
                self.values(rtype, code, values, " UNION ALL ");
                self.push(")");
                self.correlate = saved;
            }
            Clause::Chain { rtype, code, targets, inner } => {
                let pk = ParamKey::new(rtype, code);
                self.push(&format!("EXISTS (SELECT 1 FROM idx_ref r WHERE r.rid = {a}.first_seq AND r.pid = "));
                self.arg(pk.pid);
                self.chain_targets(targets, inner);
                self.push(")");
            }
            Clause::Has { source, code, inner } => {
                let pk = ParamKey::new(source, code);
                let b = self.alias();
                self.push(&format!(
                    "EXISTS (SELECT 1 FROM idx_ref r JOIN resource_current {b} ON {b}.first_seq = r.rid \
                     WHERE r.target_id = {a}.id AND r.target_type = {a}.rtype AND r.pid = "
                ));
                self.arg(pk.pid);
                self.push(" AND ");
                self.resource(&b, source, inner);
                self.push(")");
            }
        }
    }

    /// ` AND (target type and chained criteria, for each target)` of a chain on `idx_ref r`.
    fn chain_targets(&mut self, targets: &[String], inner: &[Vec<Clause>]) {
        self.push(" AND (");
        for (i, (t, clauses)) in targets.iter().zip(inner).enumerate() {
            if i > 0 {
                self.push(" OR ");
            }
            let b = self.alias();
            self.push("(r.target_type = ");
            self.arg(t.clone());
            self.push(&format!(" AND r.target_id IN (SELECT {b}.id FROM resource_current {b} WHERE "));
            let saved = self.correlate.take();
            self.resource(&b, t, clauses);
            self.correlate = saved;
            self.push("))");
        }
        self.push(")");
    }

    /// The rids matching any of `values` of one parameter, as subqueries joined by `op`.
    /// A parameter that is a union of others ([`super::unions`]) asks each part's rows.
    fn values(&mut self, rtype: &str, code: &str, values: &[Value], op: &str) {
        let pks = super::unions::keys(rtype, code);
        let gram_indexed = super::indexes_contains(rtype, code);
        for (i, v) in values.iter().enumerate() {
            // Compound operators chain left to right: a composite's INTERSECT is nested.
            let nest = values.len() > 1 && matches!(v, Value::Composite { .. });
            for (j, pk) in pks.iter().enumerate() {
                if i > 0 || j > 0 {
                    self.push(op);
                }
                if nest {
                    self.push("SELECT rid FROM (");
                }
                self.value(pk, gram_indexed, v);
                if nest {
                    self.push(")");
                }
            }
        }
    }

    /// `(pid, …)`: the parameters whose rows answer `code` of `rtype`.
    fn pids(&mut self, rtype: &str, code: &str) {
        self.push("(");
        for (i, pk) in super::unions::keys(rtype, code).iter().enumerate() {
            if i > 0 {
                self.push(", ");
            }
            self.arg(pk.pid);
        }
        self.push(")");
    }

    /// `SELECT rid FROM table WHERE pid = ?`, correlated to the probed resource when probing.
    fn rows_of(&mut self, table: &str, pk: &ParamKey) {
        if table == "idx_token" {
            // Token rows live in sorted runs (search/runs.rs): one seek per live run.
            self.push(&format!("SELECT rid FROM idx_token WHERE {} AND pid = ", super::runs::LIVE_RUNS));
        } else if self.correlate.is_some() && table != "idx_present" {
            // A probe of one resource: seek by (rid, pid). Left to itself SQLite may prefer the
            // value index for a range (`lo < ?`) and walk the parameter's whole range for each
            // candidate (the `-date` search at 100,000 patients spent 37 ms per page in it).
            self.push(&format!("SELECT rid FROM {table} INDEXED BY {table}_by_rid WHERE pid = "));
        } else {
            self.push(&format!("SELECT rid FROM {table} WHERE pid = "));
        }
        self.arg(pk.pid);
        if let Some(a) = &self.correlate {
            let cond = format!(" AND rid = {a}.first_seq");
            self.push(&cond);
        }
    }

    /// Leaves out resources (alias `a`) the request may not see: a hidden category, or outside
    /// the confining compartment (ACL-4) — in matches, totals, chains, `_has` and `$everything`.
    fn hidden(&mut self, a: &str) {
        let filter = crate::category::current_filter(&format!("{a}."), self.ctx.hidden, &mut self.args);
        self.sql.push_str(&filter);
    }

    fn clause(&mut self, a: &str, clause: &Clause) {
        match clause {
            Clause::Id(ids) => {
                self.push(&format!("{a}.id IN ("));
                for (i, id) in ids.iter().enumerate() {
                    if i > 0 {
                        self.push(", ");
                    }
                    self.arg(id.clone());
                }
                self.push(")");
            }
            Clause::Missing { rtype, code, missing } => {
                self.push(&format!("{a}.first_seq {}IN (SELECT rid FROM idx_present WHERE pid IN ", not(*missing)));
                self.pids(rtype, code);
                self.push(")");
            }
            Clause::Match { rtype, code, negate, values, .. } => {
                self.push(&format!("{a}.first_seq {}IN (", not(*negate)));
                self.values(rtype, code, values, " UNION ");
                self.push(")");
            }
            Clause::Chain { rtype, code, targets, inner } => {
                let pk = ParamKey::new(rtype, code);
                self.push(&format!("{a}.first_seq IN (SELECT r.rid FROM idx_ref r WHERE r.pid = "));
                self.arg(pk.pid);
                self.chain_targets(targets, inner);
                self.push(")");
            }
            Clause::Has { source, code, inner } => {
                let pk = ParamKey::new(source, code);
                let b = self.alias();
                self.push(&format!(
                    "{a}.id IN (SELECT r.target_id FROM idx_ref r JOIN resource_current {b} ON {b}.first_seq = r.rid \
                     WHERE r.target_type = {a}.rtype AND r.pid = "
                ));
                self.arg(pk.pid);
                self.push(" AND ");
                let saved = self.correlate.take();
                self.resource(&b, source, inner);
                self.correlate = saved;
                self.push(")");
            }
        }
    }

    fn tokens(&mut self, pk: &ParamKey, tokens: &[[u8; 16]]) {
        self.rows_of("idx_token", pk);
        self.push(" AND token IN (");
        for (i, t) in tokens.iter().enumerate() {
            if i > 0 {
                self.push(", ");
            }
            self.arg(t.to_vec());
        }
        self.push(")");
    }

    /// A subquery selecting the rids whose parameter `pk` matches one value.
    /// `gram_indexed`: whether the parameter has `:contains` grams ([`super::indexes_contains`]).
    fn value(&mut self, pk: &ParamKey, gram_indexed: bool, v: &Value) {
        let key = self.ctx.index;
        match v {
            Value::String { text, mode } => {
                let norm: Vec<char> = normalize(text).chars().collect();
                match mode {
                    StringMode::Exact => self.tokens(pk, &[pk.token(key, Token::Exact(text))]),
                    StringMode::Prefix => {
                        let p: String = norm.iter().take(PREFIX_CHARS).collect();
                        self.tokens(pk, &[pk.token(key, Token::Prefix(&p))]);
                    }
                    StringMode::Contains if !gram_indexed => {
                        // No grams for this parameter: every resource with a value is a
                        // candidate, confirmed on the decrypted value (bounded in `materialize`).
                        self.rows_of("idx_present", pk);
                    }
                    StringMode::Contains => {
                        let grams = query_grams(&norm);
                        let tokens: Vec<[u8; 16]> = grams.iter().map(|g| pk.token(key, Token::Gram(g))).collect();
                        self.tokens(pk, &tokens);
                        self.push(&format!(" GROUP BY rid HAVING count(DISTINCT token) = {}", tokens.len()));
                    }
                }
            }
            Value::Token(t) => self.tokens(pk, &[pk.token(key, token_of(t))]),
            Value::TokenText(text) => {
                let p: String = normalize(text).chars().take(PREFIX_CHARS).collect();
                self.tokens(pk, &[pk.token(key, Token::TextPrefix(&p))]);
            }
            Value::OfType(s, c, val) => self.tokens(pk, &[pk.token(key, Token::OfType(s, c, val))]),
            Value::Uri(u) => self.tokens(pk, &[pk.token(key, Token::Exact(u))]),
            Value::Reference { rtype, id } => {
                self.rows_of("idx_ref", pk);
                self.push(" AND target_id = ");
                self.arg(id.clone());
                if let Some(t) = rtype {
                    self.push(" AND target_type = ");
                    self.arg(t.clone());
                }
            }
            Value::ReferenceUrl(u) => {
                self.rows_of("idx_ref", pk);
                self.push(" AND url = ");
                self.arg(u.clone());
            }
            Value::Date { prefix, lo, hi } => {
                self.rows_of("idx_date", pk);
                self.push(" AND ");
                let (lo, hi) = (*lo, *hi);
                let cond = match prefix {
                    // lo <= hi is implied; stating it bounds the (pid, lo) index range.
                    Prefix::Eq => format!("(lo >= {lo} AND lo <= {hi} AND hi <= {hi})"),
                    Prefix::Ne => format!("NOT (lo >= {lo} AND hi <= {hi})"),
                    Prefix::Gt => format!("hi > {hi}"),
                    Prefix::Lt => format!("lo < {lo}"),
                    Prefix::Ge => format!("(hi > {hi} OR (lo >= {lo} AND hi <= {hi}))"),
                    Prefix::Le => format!("(lo < {lo} OR (lo >= {lo} AND hi <= {hi}))"),
                    Prefix::Sa => format!("lo > {hi}"),
                    Prefix::Eb => format!("hi < {lo}"),
                    Prefix::Ap => {
                        let d = approx_margin(self.ctx.now_us, lo, hi);
                        format!("(lo <= {} AND hi >= {})", hi.saturating_add(d), lo.saturating_sub(d))
                    }
                };
                self.push(&cond);
            }
            Value::Number { prefix, value, precision, system, code } => {
                self.rows_of("idx_number", pk);
                self.push(" AND ");
                let (x, p) = (*value, *precision);
                let (op, a, b) = match prefix {
                    Prefix::Eq => ("between", x - p, x + p),
                    Prefix::Ne => ("outside", x - p, x + p),
                    Prefix::Gt | Prefix::Sa => ("gt", x, x),
                    Prefix::Lt | Prefix::Eb => ("lt", x, x),
                    Prefix::Ge => ("ge", x, x),
                    Prefix::Le => ("le", x, x),
                    Prefix::Ap => ("between", x - (x * 0.1).abs(), x + (x * 0.1).abs()),
                };
                match op {
                    "between" => {
                        self.push("value >= ");
                        self.arg(a);
                        self.push(" AND value < ");
                        self.arg(b);
                    }
                    "outside" => {
                        self.push("(value < ");
                        self.arg(a);
                        self.push(" OR value >= ");
                        self.arg(b);
                        self.push(")");
                    }
                    op => {
                        let sym = match op {
                            "gt" => ">",
                            "lt" => "<",
                            "ge" => ">=",
                            _ => "<=",
                        };
                        self.push(&format!("value {sym} "));
                        self.arg(a);
                    }
                }
                if let Some(s) = system {
                    self.push(" AND system = ");
                    self.arg(s.clone());
                }
                if let Some(c) = code {
                    self.push(" AND code = ");
                    self.arg(c.clone());
                }
            }
            Value::Composite { head, rest } => {
                // Each further component is looked up under the parameter id keyed by the head.
                let head_key = token_of(head).canonical();
                for (i, (code, _, cv)) in rest.iter().enumerate() {
                    if i > 0 {
                        self.push(" INTERSECT ");
                    }
                    let cpk = pk.component(key, &head_key, code);
                    self.value(&cpk, false, cv);
                }
            }
        }
    }
}

fn not(negate: bool) -> &'static str {
    if negate { "NOT " } else { "" }
}

pub(crate) fn token_of(t: &TokenValue) -> Token<'_> {
    match t {
        TokenValue::Code(c) => Token::Code(c),
        TokenValue::SystemCode(s, c) => Token::SystemCode(s, c),
        TokenValue::NoSystemCode(c) => Token::NoSystemCode(c),
        TokenValue::System(s) => Token::System(s),
    }
}

/// The grams a `:contains` value must all have: its 2-grams, or the character itself.
fn query_grams(norm: &[char]) -> Vec<String> {
    let mut g: Vec<String> =
        if norm.len() == 1 { vec![norm[0].to_string()] } else { norm.windows(2).map(|w| w.iter().collect()).collect() };
    g.sort_unstable();
    g.dedup();
    g
}

/// `ap` on dates: 10% of the distance from now, at least a day.
fn approx_margin(now_us: i64, lo: i64, hi: i64) -> i64 {
    let mid = lo / 2 + hi / 2;
    ((now_us - mid).abs() / 10).max(DAY_US)
}

/// Whether `q` must be finished in memory: which top-level clauses need confirming on the
/// decrypted value, and whether the sort needs decrypted values.
fn in_memory_work(q: &SearchQuery) -> (Vec<&Clause>, bool) {
    let checks: Vec<&Clause> = q
        .clauses
        .iter()
        .filter(|c| match c {
            Clause::Match { values, .. } => values.iter().any(|v| match v {
                Value::String { mode: StringMode::Contains, .. } => true,
                Value::String { mode: StringMode::Prefix, text } | Value::TokenText(text) => {
                    normalize(text).chars().count() > PREFIX_CHARS
                }
                _ => false,
            }),
            _ => false,
        })
        .collect();
    let keyed_sort = q.sort.iter().any(|k| !sortable_in_sql(k));
    (checks, keyed_sort)
}

fn sortable_in_sql(k: &SortKey) -> bool {
    k.code == "_id"
        || matches!(k.ptype, ParamType::Date | ParamType::Number | ParamType::Quantity | ParamType::Reference)
}

fn filter_sql(ctx: &Ctx<'_>, q: &SearchQuery, snapshot: i64) -> (String, Vec<Sql>) {
    let mut w = Where { ctx, sql: String::new(), args: Vec::new(), aliases: 0, correlate: None };
    if q.all_types {
        // $everything: every type in the compartment.
        w.push("c.deleted = 0");
        w.hidden("c");
        for c in &q.clauses {
            w.push(" AND ");
            w.clause("c", c);
        }
    } else {
        w.resource("c", q.rtype.as_str(), &q.clauses);
    }
    w.push(" AND c.first_seq <= ");
    w.arg(snapshot);
    if let Some(p) = &q.compartment {
        w.push(" AND c.first_seq IN (SELECT rid FROM idx_compartment WHERE patient = ");
        w.arg(p.clone());
        w.push(")");
    }
    (w.sql, w.args)
}

/// How well a clause can drive a lookup (lower is more selective); None: never (negations and
/// `:missing=true` select by absence).
fn drive_rank(c: &Clause) -> Option<u8> {
    use mamori_fhir::search_params::ParamType as T;
    match c {
        Clause::Id(_) => Some(0),
        Clause::Match { negate: true, .. } | Clause::Missing { missing: true, .. } => None,
        Clause::Match { ptype: T::Reference, .. } => Some(1),
        Clause::Match { ptype: T::Token | T::Uri, .. } => Some(2),
        Clause::Chain { .. } => Some(3),
        Clause::Match { ptype: T::String | T::Composite, .. } => Some(4),
        Clause::Has { .. } => Some(5),
        Clause::Match { .. } => Some(6),
        Clause::Missing { .. } => Some(7),
    }
}

fn order_sql(q: &SearchQuery) -> String {
    let mut parts = Vec::new();
    for k in &q.sort {
        let dir = if k.descending { "DESC" } else { "ASC" };
        let agg = if k.descending { "MAX" } else { "MIN" };
        let expr = if k.code == "_id" {
            "c.id".to_string()
        } else {
            // INDEXED BY the (rid, pid) index: otherwise SQLite's MIN/MAX optimisation walks the
            // parameter's whole (pid, value) range looking for this rid, once per sorted row.
            let (col, table) = match k.ptype {
                ParamType::Date => ("lo", "idx_date INDEXED BY idx_date_by_rid"),
                ParamType::Reference => ("target_id", "idx_ref INDEXED BY idx_ref_by_rid"),
                _ => ("value", "idx_number INDEXED BY idx_number_by_rid"),
            };
            // The pid is our own hash, an integer: safe to inline (the expression appears twice).
            let pids: Vec<String> =
                super::unions::keys(q.rtype.as_str(), k.code).iter().map(|pk| pk.pid.to_string()).collect();
            let pids = pids.join(", ");
            format!("(SELECT {agg}({col}) FROM {table} WHERE rid = c.first_seq AND pid IN ({pids}))")
        };
        // Resources without the value sort last in either direction.
        parts.push(format!("({expr}) IS NULL, {expr} {dir}"));
    }
    if q.all_types {
        parts.push("c.rtype ASC".to_string());
    }
    // Then creation order (the rid, unique and stable): an unsorted search reads the driving
    // clause's rids in this order through the rid index and stops after one page, instead of
    // sorting every match by id first (a 3-letter name prefix at 100,000 patients: 234 matches).
    parts.push("c.first_seq ASC".to_string());
    parts.join(", ")
}

/// The ids (and rids) matching `q`'s criteria, in result order, for one page window.
fn page_ids(
    ctx: &Ctx<'_>,
    q: &SearchQuery,
    snapshot: i64,
    offset: usize,
    limit: usize,
) -> Result<Vec<(String, String, i64)>, StoreError> {
    let (filter, mut args) = filter_sql(ctx, q, snapshot);
    let order = order_sql(q);
    let sql = format!(
        "SELECT c.rtype, c.id, c.first_seq FROM resource_current c WHERE {filter} ORDER BY {order} LIMIT ? OFFSET ?"
    );
    args.push(Sql::Integer(limit as i64));
    args.push(Sql::Integer(offset as i64));
    let mut stmt = ctx.conn.prepare_cached(&sql)?;
    let rows = stmt.query_map(params_from_iter(args), |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// One window of matches, decrypted, in result order, and how many rows the walk saw. With
/// `count_all` the walk goes over every match (creation order streams, so this is the total at
/// the cost of a count); otherwise the statement is bounded to one row past the window (a
/// bounded sort), which says whether more follow. The ids come from resource_current and its
/// covering rid index alone; the version rows from the readers' cache, or by seq.
fn window(
    ctx: &Ctx<'_>,
    q: &SearchQuery,
    snapshot: i64,
    offset: usize,
    limit: usize,
    count_all: bool,
) -> Result<(Vec<(VersionRecord, i64)>, usize), StoreError> {
    let (filter, mut args) = filter_sql(ctx, q, snapshot);
    let mut sql = format!(
        "SELECT c.seq, c.version, c.first_seq FROM resource_current c WHERE {filter} ORDER BY {}",
        order_sql(q)
    );
    let skip = if count_all {
        offset
    } else {
        sql.push_str(" LIMIT ? OFFSET ?");
        args.push(Sql::Integer(limit as i64 + 1));
        args.push(Sql::Integer(offset as i64));
        0
    };
    let mut stmt = ctx.conn.prepare_cached(&sql)?;
    let mut rows = stmt.query(params_from_iter(args))?;
    let (mut picked, mut walked) = (Vec::new(), 0usize);
    while let Some(r) = rows.next()? {
        if walked >= skip && picked.len() < limit {
            picked.push(rows::Pointer::from_row(r)?);
        }
        walked += 1;
    }
    drop(rows);
    Ok((rows::open_pointers(ctx.conn, ctx.keys, ctx.protect, ctx.versions, picked)?, walked))
}

fn count(ctx: &Ctx<'_>, q: &SearchQuery, snapshot: i64) -> Result<u64, StoreError> {
    let (sql, args) = if counted_in_index(ctx, q) {
        index_count_sql(ctx, q, snapshot)
    } else {
        let (filter, args) = filter_sql(ctx, q, snapshot);
        (format!("SELECT count(*) FROM resource_current c WHERE {filter}"), args)
    };
    let mut stmt = ctx.conn.prepare_cached(&sql)?;
    Ok(stmt.query_row(params_from_iter(args), |r| r.get::<_, i64>(0))? as u64)
}

/// Whether a search's total can be counted in the index alone: its one criterion is a positive
/// match (nothing confirmed in memory) and nothing is hidden from the request.
///
/// The index tables hold the entries of current, non-deleted versions only — every write
/// replaces its resource's entries in the same transaction (maintain.rs) — and a parameter id
/// belongs to one resource type, so the distinct rids a clause's values select are exactly its
/// matches. Counting them reads the clause's index range once, where counting through
/// `resource_current` seeks once per match (236 seeks for a 3-letter family prefix at 100,000
/// patients).
fn counted_in_index(ctx: &Ctx<'_>, q: &SearchQuery) -> bool {
    matches!(&q.clauses[..], [Clause::Match { negate: false, .. }])
        && !q.all_types
        && q.compartment.is_none()
        && ctx.hidden.sees_all()
        && in_memory_work(q).0.is_empty()
}

/// `SELECT count(*)` over the rids of a search's one clause (see [`counted_in_index`]).
fn index_count_sql(ctx: &Ctx<'_>, q: &SearchQuery, snapshot: i64) -> (String, Vec<Sql>) {
    let mut w = Where { ctx, sql: String::new(), args: Vec::new(), aliases: 0, correlate: None };
    if let [Clause::Match { rtype, code, values, .. }] = &q.clauses[..] {
        w.push("SELECT count(*) FROM (");
        w.values(rtype, code, values, " UNION ");
        w.push(") WHERE rid <= ");
        w.arg(snapshot);
    }
    (w.sql, w.args)
}

fn current_snapshot(conn: &Connection) -> Result<i64, StoreError> {
    Ok(conn.query_row("SELECT COALESCE(max(seq), 0) FROM resource_version", [], |r| r.get(0))?)
}

/// Ids matching the criteria of `q` (no paging, no includes), at most `limit`: conditional
/// operations ask for two to tell none, one and many apart.
pub(crate) fn matching_ids(ctx: &Ctx<'_>, q: &SearchQuery, limit: usize) -> Result<Vec<String>, StoreError> {
    let snapshot = current_snapshot(ctx.conn)?;
    let (checks, _) = in_memory_work(q);
    if checks.is_empty() {
        return Ok(page_ids(ctx, q, snapshot, 0, limit)?.into_iter().map(|(_, id, _)| id).collect());
    }
    let all = materialize(ctx, q, snapshot, &checks, false)?;
    Ok(all.into_iter().take(limit).map(|(r, _)| r.id).collect())
}

/// Runs a search: one page of matches, its includes, the total and the paging cursors.
pub(crate) fn run(ctx: &Ctx<'_>, q: &SearchQuery) -> Result<SearchResult, StoreError> {
    let (snapshot, offset) = match q.cursor {
        Some(c) => (c.snapshot, c.offset),
        None => (current_snapshot(ctx.conn)?, 0),
    };
    let (checks, keyed_sort) = in_memory_work(q);
    let mut out = SearchResult::default();
    let page: Vec<(VersionRecord, i64)>;
    let has_more;
    if checks.is_empty() && !keyed_sort {
        if q.count_only {
            out.total = Some(count(ctx, q, snapshot)?);
            return Ok(out);
        }
        if q.total == TotalMode::Accurate && q.sort.is_empty() && !q.all_types && !counted_in_index(ctx, q) {
            // Creation order is the order the driving clause lists its rids in: one walk gives
            // the page and the total, where a page query and a count would walk twice. (A total
            // the index counts alone is cheaper still: the page then walks `_count + 1`.)
            let (rows, total) = window(ctx, q, snapshot, offset, q.count, true)?;
            has_more = total > offset + q.count;
            out.total = Some(total as u64);
            page = rows;
        } else {
            let (rows, seen) = window(ctx, q, snapshot, offset, q.count, false)?;
            has_more = seen > q.count;
            // The last page knows the total without counting (unless a stale cursor overshot it).
            let counted = (!has_more && (offset == 0 || !rows.is_empty())).then_some((offset + rows.len()) as u64);
            page = rows;
            if q.total == TotalMode::Accurate {
                out.total = Some(match counted {
                    Some(n) => n,
                    None => count(ctx, q, snapshot)?,
                });
            }
        }
    } else {
        let all = materialize(ctx, q, snapshot, &checks, keyed_sort)?;
        out.total = (q.total == TotalMode::Accurate || q.count_only).then_some(all.len() as u64);
        if q.count_only {
            return Ok(out);
        }
        has_more = all.len() > offset + q.count;
        page = all.into_iter().skip(offset).take(q.count).collect();
    }
    if has_more {
        out.next = Some(Cursor { snapshot, offset: offset + q.count });
    }
    if offset > 0 {
        out.previous = Some(Cursor { snapshot, offset: offset.saturating_sub(q.count) });
    }
    out.included = includes(ctx, q, &page)?;
    out.matches = page.into_iter().map(|(r, _)| r).collect();
    Ok(out)
}

/// The current versions of `ids` (those not deleted), through the readers' cache of rows.
fn load(
    ctx: &Ctx<'_>,
    ids: impl IntoIterator<Item = (String, String, i64)>,
) -> Result<Vec<(VersionRecord, i64)>, StoreError> {
    let mut out = Vec::new();
    let mut stmt = ctx
        .conn
        .prepare_cached("SELECT seq, version FROM resource_current WHERE rtype = ?1 AND id = ?2 AND deleted = 0")?;
    for (rtype, id, rid) in ids {
        let pointer: Option<(i64, i64)> =
            stmt.query_row(rusqlite::params![rtype, id], |r| Ok((r.get(0)?, r.get(1)?))).optional()?;
        let Some((seq, version)) = pointer else { continue };
        if let Some(rec) = rows::open_pointed(ctx.conn, ctx.keys, ctx.protect, ctx.versions, seq, version)? {
            out.push((rec, rid));
        }
    }
    Ok(out)
}

/// All candidates, decrypted, confirmed and sorted in memory.
fn materialize(
    ctx: &Ctx<'_>,
    q: &SearchQuery,
    snapshot: i64,
    checks: &[&Clause],
    keyed_sort: bool,
) -> Result<Vec<(VersionRecord, i64)>, StoreError> {
    let mut unsorted = q.clone();
    if keyed_sort {
        unsorted.sort.clear();
    }
    let ids = page_ids(ctx, &unsorted, snapshot, 0, MAX_IN_MEMORY + 1)?;
    if ids.len() > MAX_IN_MEMORY {
        return Err(StoreError::TooCostly(format!(
            "this search (:contains, a long prefix or sorting by an encrypted value) matches more than \
             {MAX_IN_MEMORY} resources; narrow it with more criteria"
        )));
    }
    let mut rows = Vec::with_capacity(ids.len());
    for (rec, rid) in load(ctx, ids)? {
        let Some(bytes) = &rec.body else { continue };
        let body: Json = serde_json::from_slice(bytes).map_err(StoreError::internal)?;
        if checks.iter().all(|c| confirms(c, &body)) {
            let keys: Vec<Option<String>> = if keyed_sort {
                q.sort.iter().map(|k| sort_value(q.rtype.as_str(), k, &body, &rec)).collect()
            } else {
                Vec::new()
            };
            rows.push((rec, rid, keys));
        }
    }
    if keyed_sort {
        rows.sort_by(|a, b| {
            for (i, k) in q.sort.iter().enumerate() {
                let ord = match (&a.2[i], &b.2[i]) {
                    (None, None) => std::cmp::Ordering::Equal,
                    (None, Some(_)) => std::cmp::Ordering::Greater,
                    (Some(_), None) => std::cmp::Ordering::Less,
                    (Some(x), Some(y)) if k.descending => y.cmp(x),
                    (Some(x), Some(y)) => x.cmp(y),
                };
                if ord != std::cmp::Ordering::Equal {
                    return ord;
                }
            }
            a.0.id.cmp(&b.0.id)
        });
    }
    Ok(rows.into_iter().map(|(r, rid, _)| (r, rid)).collect())
}

/// The value a resource sorts by for one key (the smallest for ascending, largest for descending).
fn sort_value(rtype: &str, k: &SortKey, body: &Json, rec: &VersionRecord) -> Option<String> {
    if k.code == "_id" {
        return Some(rec.id.clone());
    }
    let def = search_params::lookup(rtype, k.code)?;
    let nodes = search_params::compiled(def).evaluate(body);
    let mut values: Vec<String> = match k.ptype {
        ParamType::String => nodes.iter().flat_map(|n| string_parts(n.value)).map(normalize).collect(),
        ParamType::Token => nodes.iter().flat_map(coded).filter_map(|c: Coded<'_>| c.code).collect(),
        _ => nodes.iter().filter_map(|n| n.value.as_str().map(str::to_string)).collect(),
    };
    values.sort();
    if k.descending { values.pop() } else { values.into_iter().next() }
}

/// Confirms a string clause on the decrypted resource.
fn confirms(clause: &Clause, body: &Json) -> bool {
    let Clause::Match { rtype, code, values, .. } = clause else { return true };
    let Some(def) = search_params::lookup(rtype, code) else { return false };
    let nodes = search_params::compiled(def).evaluate(body);
    let parts: Vec<String> = nodes.iter().flat_map(|n| string_parts(n.value)).map(normalize).collect();
    values.iter().any(|v| match v {
        Value::String { text, mode: StringMode::Contains } => {
            let t = normalize(text);
            parts.iter().any(|p| p.contains(&t))
        }
        Value::String { text, mode: StringMode::Prefix } => {
            let t = normalize(text);
            parts.iter().any(|p| p.starts_with(&t))
        }
        Value::String { text, mode: StringMode::Exact } => {
            nodes.iter().flat_map(|n| string_parts(n.value)).any(|p| p == text)
        }
        Value::TokenText(text) => {
            let t = normalize(text);
            nodes.iter().flat_map(coded).any(|c| c.text.iter().any(|d| normalize(d).starts_with(&t)))
        }
        _ => false,
    })
}

/// `_include` and `_revinclude` (with `:iterate`) over one page.
fn includes(ctx: &Ctx<'_>, q: &SearchQuery, page: &[(VersionRecord, i64)]) -> Result<Vec<VersionRecord>, StoreError> {
    if q.includes.is_empty() && q.revincludes.is_empty() {
        return Ok(Vec::new());
    }
    let mut seen: HashSet<(String, String)> =
        page.iter().map(|(r, _)| (r.rtype.as_str().to_string(), r.id.clone())).collect();
    let mut out: Vec<(VersionRecord, i64)> = Vec::new();
    // Round 0 works on the matches; later rounds only run :iterate includes on what was added.
    let mut frontier: Vec<(VersionRecord, i64)> = page.iter().map(|(r, rid)| (r.clone(), *rid)).collect();
    for round in 0..4 {
        let mut found: Vec<(String, String)> = Vec::new();
        for (rec, rid) in &frontier {
            let rtype = rec.rtype.as_str();
            for inc in q.includes.iter().filter(|i| (round == 0 || i.iterate) && i.source == rtype) {
                found.extend(forward(ctx, inc, *rid)?);
            }
            for inc in q.revincludes.iter().filter(|i| round == 0 || i.iterate) {
                found.extend(reverse(ctx, inc, rtype, &rec.id)?);
            }
        }
        let mut next = Vec::new();
        for (t, id) in found {
            if !seen.insert((t.clone(), id.clone())) || ctx.hidden.hides_type(&t) {
                continue;
            }
            let mut args = vec![Sql::Text(t.clone()), Sql::Text(id.clone())];
            // ACL-3: an include never brings in what the caller may not view.
            let filter = crate::category::current_filter("", ctx.hidden, &mut args);
            let rid: Option<i64> = ctx
                .conn
                .prepare_cached(&format!(
                    "SELECT first_seq FROM resource_current WHERE rtype = ? AND id = ? AND deleted = 0{filter}"
                ))?
                .query_row(params_from_iter(args), |r| r.get(0))
                .ok();
            let Some(rid) = rid else { continue };
            next.extend(load(ctx, [(t, id, rid)])?);
            if out.len() + next.len() > MAX_INCLUDED {
                return Err(StoreError::TooCostly(format!(
                    "_include/_revinclude would add more than {MAX_INCLUDED} resources to one page; use a smaller _count"
                )));
            }
        }
        if next.is_empty() {
            break;
        }
        out.extend(next.iter().cloned());
        frontier = next;
    }
    Ok(out.into_iter().map(|(r, _)| r).collect())
}

fn forward(ctx: &Ctx<'_>, inc: &Include, rid: i64) -> Result<Vec<(String, String)>, StoreError> {
    let pid = ParamKey::new(&inc.source, inc.code).pid;
    let mut stmt = ctx.conn.prepare_cached(
        "SELECT target_type, target_id FROM idx_ref WHERE rid = ?1 AND pid = ?2 AND target_id IS NOT NULL",
    )?;
    let rows = stmt.query_map(rusqlite::params![rid, pid], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))?;
    let mut out = Vec::new();
    for row in rows {
        let (t, id) = row?;
        if inc.target.as_deref().is_none_or(|want| want == t) {
            out.push((t, id));
        }
    }
    Ok(out)
}

fn reverse(
    ctx: &Ctx<'_>,
    inc: &Include,
    target_type: &str,
    target_id: &str,
) -> Result<Vec<(String, String)>, StoreError> {
    if inc.target.as_deref().is_some_and(|t| t != target_type) {
        return Ok(Vec::new());
    }
    let pid = ParamKey::new(&inc.source, inc.code).pid;
    let mut stmt = ctx.conn.prepare_cached(
        "SELECT c.rtype, c.id FROM idx_ref r JOIN resource_current c ON c.first_seq = r.rid \
         WHERE r.target_id = ?1 AND r.target_type = ?2 AND r.pid = ?3 AND c.deleted = 0",
    )?;
    let rows = stmt.query_map(rusqlite::params![target_id, target_type, pid], |r| Ok((r.get(0)?, r.get(1)?)))?;
    Ok(rows.collect::<Result<_, _>>()?)
}
