//! Transaction and batch Bundles (INT-1).
//!
//! A transaction runs as one writer job: ids are assigned first, `urn:uuid:` and conditional
//! references are resolved, then entries run in the order FHIR prescribes (DELETE, POST, PUT,
//! PATCH, GET). Any failure rolls the whole job back. A batch runs each entry in its own
//! savepoint and reports each outcome.

use std::collections::HashMap;
use std::str::FromStr;

use mamori_fhir::bundle::{BundleKind, Method, RequestEntry};
use mamori_fhir::resource_type::ResourceType;
use mamori_fhir::walk::for_each_reference_mut;
use serde_json::Value;

use crate::StoreError;
use crate::engine::savepoint;
use crate::model::VersionRecord;
use crate::query::{PageLimits, clip, parse_query_string};
use crate::rows;
use crate::search::params::{ParseOptions, SearchQuery};
use crate::writes::{Tx, WriteOp, WriteOutcome, new_id};

/// The outcome of one entry, in request order.
#[derive(Debug)]
pub enum EntryResult {
    Write(WriteOutcome),
    Read(VersionRecord),
    Search { rtype: ResourceType, records: Vec<VersionRecord>, total: u64 },
    Failed(StoreError),
}

/// A failed transaction: which entry broke it and why.
#[derive(Debug)]
pub struct TransactionError {
    pub entry: usize,
    pub error: StoreError,
}

/// Where an entry's request URL points.
enum Target {
    Type(ResourceType),
    Instance(ResourceType, String),
    Version(ResourceType, String, u64),
    Conditional(ResourceType, Vec<(String, String)>),
}

fn parse_target(url: &str) -> Result<Target, StoreError> {
    let url = url.trim_start_matches('/');
    let bad = || StoreError::invalid("invalid", format!("unsupported request url '{}'", clip(url)));
    let (path, query) = match url.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (url, None),
    };
    let parts: Vec<&str> = path.split('/').collect();
    let rtype = ResourceType::from_str(parts[0])?;
    match (parts.as_slice(), query) {
        ([_], None) => Ok(Target::Type(rtype)),
        ([_], Some(q)) => Ok(Target::Conditional(rtype, parse_query_string(q))),
        ([_, id], None) => Ok(Target::Instance(rtype, mamori_fhir::id::Id::parse(id)?.as_str().to_string())),
        ([_, id, "_history", v], None) => Ok(Target::Version(
            rtype,
            mamori_fhir::id::Id::parse(id)?.as_str().to_string(),
            v.parse().map_err(|_| bad())?,
        )),
        _ => Err(bad()),
    }
}

fn method_order(m: Method) -> u8 {
    match m {
        Method::Delete => 0,
        Method::Post => 1,
        Method::Put => 2,
        Method::Patch => 3,
        Method::Get | Method::Head => 4,
    }
}

fn parse_if_match(raw: &Option<String>) -> Result<Option<u64>, StoreError> {
    raw.as_deref().map(crate::parse_etag).transpose()
}

/// A prepared write: the id it will get and the operation to run.
struct Planned {
    index: usize,
    method: Method,
    op: Option<WriteOp>,
    target: Target,
    /// A conditional create that matched an existing resource.
    existing: Option<VersionRecord>,
}

pub(crate) fn run(
    tx: &Tx<'_>,
    kind: BundleKind,
    entries: Vec<RequestEntry>,
    limits: PageLimits,
) -> Result<Vec<EntryResult>, TransactionError> {
    match kind {
        // The caller's savepoint undoes a failed transaction (SqliteStore::bundle keeps the
        // changes only when this returns Ok): no savepoint of its own, so no nesting.
        BundleKind::Transaction => run_transaction(tx, entries, limits),
        BundleKind::Batch => Ok(entries
            .into_iter()
            .map(|e| {
                savepoint(tx.conn, "entry", |_| run_batch_entry(tx, e, limits)).unwrap_or_else(EntryResult::Failed)
            })
            .collect()),
    }
}

fn run_batch_entry(tx: &Tx<'_>, mut entry: RequestEntry, limits: PageLimits) -> Result<EntryResult, StoreError> {
    // Batch entries may not depend on each other (FHIR 3.1.0.11.1): no urn:uuid resolution.
    let mut broken = None;
    if let Some(resource) = entry.resource.as_mut() {
        for_each_reference_mut(resource, |r| {
            if broken.is_none() {
                match resolve_conditional_reference(tx, r, limits) {
                    Ok(Some(resolved)) => *r = resolved,
                    Ok(None) if r.starts_with("urn:uuid:") => {
                        broken = Some(StoreError::invalid(
                            "invalid",
                            "a batch entry cannot refer to another entry by urn:uuid (use a transaction)",
                        ))
                    }
                    Ok(None) => {}
                    Err(e) => broken = Some(e),
                }
            }
        });
    }
    if let Some(e) = broken {
        return Err(e);
    }
    let mut plan = plan_entry(tx, &entry, limits)?;
    if plan.op.is_none() && plan.existing.is_none() && plan.method != Method::Get && plan.method != Method::Head {
        plan.op = Some(build_op(&plan, entry.resource.take(), &entry, limits)?);
    }
    execute(tx, plan, entry.resource, limits)
}

fn run_transaction(
    tx: &Tx<'_>,
    mut entries: Vec<RequestEntry>,
    limits: PageLimits,
) -> Result<Vec<EntryResult>, TransactionError> {
    let fail = |entry: usize| move |error: StoreError| TransactionError { entry, error };
    // 1. Decide every target id up front so references between entries can be resolved.
    let mut plans = Vec::with_capacity(entries.len());
    let mut ids: HashMap<String, String> = HashMap::new();
    for e in &entries {
        let plan = plan_entry(tx, e, limits).map_err(fail(e.index))?;
        if let Some(full_url) = &e.full_url {
            let resolved = match (&plan.existing, &plan.target) {
                (Some(rec), _) => Some(format!("{}/{}", rec.rtype, rec.id)),
                (None, Target::Instance(t, id)) => Some(format!("{t}/{id}")),
                _ => None,
            };
            if let Some(r) = resolved {
                ids.insert(full_url.clone(), r);
            }
        }
        plans.push(plan);
    }
    // 2. Rewrite references: bundle-local ones to the ids chosen above, conditional ones by search.
    for e in entries.iter_mut() {
        let index = e.index;
        if let Some(resource) = e.resource.as_mut() {
            let mut broken: Option<StoreError> = None;
            for_each_reference_mut(resource, |r| {
                if broken.is_some() {
                    return;
                }
                if let Some(target) = ids.get(r.as_str()) {
                    *r = target.clone();
                } else if r.starts_with("urn:uuid:") || r.starts_with("urn:oid:") {
                    broken = Some(StoreError::invalid(
                        "invalid",
                        format!("reference '{}' does not match the fullUrl of any entry in this transaction", clip(r)),
                    ));
                } else {
                    match resolve_conditional_reference(tx, r, limits) {
                        Ok(Some(resolved)) => *r = resolved,
                        Ok(None) => {}
                        Err(e) => broken = Some(e),
                    }
                }
            });
            if let Some(err) = broken {
                return Err(TransactionError { entry: index, error: err });
            }
        }
    }
    // 3. Run in FHIR's order; answer in request order.
    let mut work: Vec<(Planned, Option<Value>, RequestEntry)> = plans
        .into_iter()
        .zip(entries)
        .map(|(p, mut e)| {
            let resource = e.resource.take();
            (p, resource, e)
        })
        .collect();
    work.sort_by_key(|(p, _, _)| (method_order(p.method), p.index));
    let mut results: Vec<(usize, EntryResult)> = Vec::with_capacity(work.len());
    for (mut plan, resource, entry) in work {
        let index = plan.index;
        let resource =
            if plan.op.is_none() && plan.existing.is_none() && !matches!(plan.method, Method::Get | Method::Head) {
                plan.op = Some(build_op(&plan, resource, &entry, limits).map_err(fail(index))?);
                None
            } else {
                resource
            };
        let outcome = execute(tx, plan, resource, limits).map_err(fail(index))?;
        results.push((index, outcome));
    }
    results.sort_by_key(|(i, _)| *i);
    Ok(results.into_iter().map(|(_, r)| r).collect())
}

/// Resolves `Type?query` references to `Type/id` (exactly one match required).
fn resolve_conditional_reference(tx: &Tx<'_>, r: &str, limits: PageLimits) -> Result<Option<String>, StoreError> {
    let Some((type_part, query)) = r.split_once('?') else {
        return Ok(None);
    };
    let Ok(rtype) = ResourceType::from_str(type_part) else {
        return Ok(None);
    };
    let q = SearchQuery::parse(rtype, &parse_query_string(query), ParseOptions::new(limits))?;
    match tx.find(rtype, &q)?.as_slice() {
        [one] => Ok(Some(format!("{rtype}/{one}"))),
        [] => Err(StoreError::invalid("not-found", format!("conditional reference to {rtype} matches no resource"))),
        _ => Err(StoreError::PreconditionFailed(format!(
            "conditional reference to {rtype} matches more than one resource"
        ))),
    }
}

/// First pass over an entry: parse its target and settle ids of creates.
fn plan_entry(tx: &Tx<'_>, e: &RequestEntry, limits: PageLimits) -> Result<Planned, StoreError> {
    let method = e.request.method;
    let target = parse_target(&e.request.url)?;
    let mut plan = Planned { index: e.index, method, op: None, target, existing: None };
    let target_type = match &plan.target {
        Target::Type(t) | Target::Instance(t, _) | Target::Version(t, _, _) | Target::Conditional(t, _) => *t,
    };
    if target_type.as_str() == "AuditEvent" && !matches!(method, Method::Get | Method::Head) {
        return Err(StoreError::Unsupported(
            "AuditEvent is the read-only view of the audit trail; it cannot be created, changed or deleted".into(),
        ));
    }
    match (method, &plan.target) {
        (Method::Post, Target::Type(rtype)) => {
            let rtype = *rtype;
            if let Some(cond) = &e.request.if_none_exist {
                let q = SearchQuery::parse(
                    rtype,
                    &parse_query_string(cond.trim_start_matches('?')),
                    ParseOptions::new(limits),
                )?;
                if let Some(id) = tx.find_unique(rtype, &q)? {
                    plan.existing = rows::load_current(tx.conn, tx.keys, tx.protect, rtype, &id)?;
                    return Ok(plan);
                }
            }
            plan.target = Target::Instance(rtype, new_id(tx.now_us));
        }
        (Method::Put, Target::Conditional(rtype, pairs)) => {
            let rtype = *rtype;
            let q = SearchQuery::parse(rtype, pairs, ParseOptions::new(limits))?;
            let id = match tx.find_unique(rtype, &q)? {
                Some(id) => id,
                None => match e.resource.as_ref().and_then(|r| r.get("id")).and_then(Value::as_str) {
                    Some(id) => id.to_string(),
                    None => new_id(tx.now_us),
                },
            };
            plan.target = Target::Instance(rtype, id);
        }
        (Method::Post, _) => {
            return Err(StoreError::invalid("invalid", "POST entries must name a resource type only"));
        }
        (Method::Put | Method::Patch, Target::Instance(..)) => {}
        (Method::Put | Method::Patch, _) => {
            return Err(StoreError::invalid("invalid", "PUT and PATCH entries need Type/id or Type?condition"));
        }
        (Method::Delete, Target::Instance(..) | Target::Conditional(..)) => {}
        (Method::Delete, _) => {
            return Err(StoreError::invalid("invalid", "DELETE entries need Type/id or Type?condition"));
        }
        (Method::Get | Method::Head, _) => {}
    }
    Ok(plan)
}

/// Turns a planned entry into the write it performs.
fn build_op(
    plan: &Planned,
    resource: Option<Value>,
    e: &RequestEntry,
    limits: PageLimits,
) -> Result<WriteOp, StoreError> {
    let if_match = parse_if_match(&e.request.if_match)?;
    let need_resource = || StoreError::invalid("required", "this entry needs a resource");
    match (plan.method, &plan.target) {
        (Method::Post, Target::Instance(rtype, id)) => {
            let mut resource = resource.ok_or_else(need_resource)?;
            check_type(&resource, *rtype)?;
            if let Some(obj) = resource.as_object_mut() {
                obj.insert("id".into(), Value::String(id.clone()));
            }
            Ok(WriteOp::Update { rtype: *rtype, id: id.clone(), resource, if_match: None })
        }
        (Method::Put, Target::Instance(rtype, id)) => {
            let resource = resource.ok_or_else(need_resource)?;
            check_type(&resource, *rtype)?;
            if let Some(body_id) = resource.get("id").and_then(Value::as_str)
                && body_id != id
            {
                return Err(StoreError::invalid("invalid", "the resource id does not match the request URL"));
            }
            Ok(WriteOp::Update { rtype: *rtype, id: id.clone(), resource, if_match })
        }
        (Method::Patch, Target::Instance(rtype, id)) => {
            let resource = resource.ok_or_else(need_resource)?;
            let patch = crate::patch_from_resource(resource)?;
            Ok(WriteOp::Patch { rtype: *rtype, id: id.clone(), patch, if_match })
        }
        (Method::Delete, Target::Instance(rtype, id)) => {
            Ok(WriteOp::Delete { rtype: *rtype, id: id.clone(), if_match })
        }
        (Method::Delete, Target::Conditional(rtype, pairs)) => Ok(WriteOp::ConditionalDelete {
            rtype: *rtype,
            query: SearchQuery::parse(*rtype, pairs, ParseOptions::new(limits))?,
        }),
        _ => Err(StoreError::invalid("invalid", "unsupported entry request")),
    }
}

fn check_type(resource: &Value, rtype: ResourceType) -> Result<(), StoreError> {
    if resource.get("resourceType").and_then(Value::as_str) == Some(rtype.as_str()) {
        Ok(())
    } else {
        Err(StoreError::invalid("invalid", format!("the entry's resource is not a {rtype}")))
    }
}

fn execute(
    tx: &Tx<'_>,
    plan: Planned,
    _resource: Option<Value>,
    limits: PageLimits,
) -> Result<EntryResult, StoreError> {
    if let Some(existing) = plan.existing {
        return Ok(EntryResult::Write(WriteOutcome::Existing(existing)));
    }
    if let Some(op) = plan.op {
        // A POST becomes an Update with a fresh id; report it as the create it is.
        let was_post = plan.method == Method::Post;
        return match tx.apply(op)? {
            WriteOutcome::Updated(r) if was_post => Ok(EntryResult::Write(WriteOutcome::Created(r))),
            other => Ok(EntryResult::Write(other)),
        };
    }
    // ACL-3: a GET entry for a resource the caller may not view answers as if it did not exist.
    match &plan.target {
        Target::Instance(rtype, id) | Target::Version(rtype, id, _)
            if crate::category::is_invisible(
                tx.conn,
                tx.hidden,
                rtype.as_str(),
                id,
                match &plan.target {
                    Target::Version(_, _, v) => Some(*v),
                    _ => None,
                },
            )? =>
        {
            return Err(StoreError::NotFound(format!("{rtype}/{id}")));
        }
        _ => {}
    }
    match plan.target {
        Target::Instance(rtype, id) => match rows::load_current(tx.conn, tx.keys, tx.protect, rtype, &id)? {
            Some(r) if r.deleted => Err(StoreError::Gone { what: format!("{rtype}/{id}"), version: r.version }),
            Some(r) => Ok(EntryResult::Read(r)),
            None => Err(StoreError::NotFound(format!("{rtype}/{id}"))),
        },
        Target::Version(rtype, id, v) => match rows::load_version(tx.conn, tx.keys, tx.protect, rtype, &id, v)? {
            Some(r) => Ok(EntryResult::Read(r)),
            None => Err(StoreError::NotFound(format!("{rtype}/{id}/_history/{v}"))),
        },
        Target::Type(rtype) => search(tx, rtype, &[], limits),
        Target::Conditional(rtype, pairs) => search(tx, rtype, &pairs, limits),
    }
}

fn search(
    tx: &Tx<'_>,
    rtype: ResourceType,
    pairs: &[(String, String)],
    limits: PageLimits,
) -> Result<EntryResult, StoreError> {
    let mut q = SearchQuery::parse(rtype, pairs, ParseOptions::new(limits))?;
    q.count = q.count.min(limits.max_count);
    let ctx = crate::search::sql::Ctx {
        conn: tx.conn,
        keys: tx.keys,
        index: tx.index,
        protect: tx.protect,
        now_us: tx.now_us,
        hidden: tx.hidden,
        versions: &crate::version_cache::NOT_IN_WRITES,
    };
    let result = crate::search::sql::run(&ctx, &q)?;
    let total = result.total.unwrap_or(result.matches.len() as u64);
    let mut records = result.matches;
    records.extend(result.included);
    Ok(EntryResult::Search { rtype, records, total })
}
