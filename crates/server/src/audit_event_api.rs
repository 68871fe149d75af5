//! `AuditEvent` over FHIR (AUD-5): the audit trail as read-only `AuditEvent` resources in the IHE
//! BALP shape, for auditors only (ACL-5). There are no stored AuditEvent records: writes are
//! refused, and every read or search of the view is itself audited.

use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use mamori_access::Operation;
use mamori_store::Action;
use mamori_store::audit_log::{AuditEventFilter, ReviewQuery};
use mamori_store::query::{parse_instant, parse_instant_end};
use serde_json::value::RawValue;

use crate::Shared;
use crate::auth::Authenticated;
use crate::error::ApiError;
use crate::listener::ConnInfo;
use crate::respond::{Bundle, Entry, Link, SearchMode, json_response};

type Result<T> = std::result::Result<T, ApiError>;

pub const TYPE: &str = "AuditEvent";

pub fn refuse_write() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "not-supported",
        "AuditEvent is the read-only view of the audit trail; it cannot be created, changed or deleted",
    )
}

fn bad(msg: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, "invalid", msg)
}

/// `date=[ge|gt|le|lt|eq]<instant or date>`; a date covers its whole day.
fn apply_date(f: &mut AuditEventFilter, raw: &str) -> Result<()> {
    let (prefix, value) = match raw.get(..2) {
        Some(p @ ("ge" | "gt" | "le" | "lt" | "eq")) => (p, &raw[2..]),
        _ => ("eq", raw),
    };
    let (start, end) = (parse_instant(value)?, parse_instant_end(value)?);
    let narrow_from = |f: &mut AuditEventFilter, t: i64| f.from_us = Some(f.from_us.map_or(t, |x| x.max(t)));
    let narrow_to = |f: &mut AuditEventFilter, t: i64| f.to_us = Some(f.to_us.map_or(t, |x| x.min(t)));
    match prefix {
        "ge" => narrow_from(f, start),
        "gt" => narrow_from(f, end + 1),
        "le" => narrow_to(f, end),
        "lt" => narrow_to(f, start - 1),
        _ => {
            narrow_from(f, start);
            narrow_to(f, end);
        }
    }
    Ok(())
}

fn filter(pairs: &[(String, String)], s: &Shared) -> Result<AuditEventFilter> {
    let mut f = AuditEventFilter { limit: s.page_limits.default_count, ..Default::default() };
    for (k, v) in pairs {
        match k.as_str() {
            "date" => apply_date(&mut f, v)?,
            "agent" => f.agent = Some(v.clone()),
            "patient" => f.patient = Some(v.strip_prefix("Patient/").unwrap_or(v).to_string()),
            "entity" => {
                let (t, id) = v.split_once('/').ok_or_else(|| bad("entity takes Type/id"))?;
                f.entity = Some((t.to_string(), id.to_string()));
            }
            "action" => {
                f.action = match v.as_str() {
                    "C" | "R" | "U" | "D" | "E" => v.chars().next(),
                    _ => return Err(bad("action is one of C, R, U, D, E")),
                }
            }
            "outcome" => {
                f.outcome = Some(match v.as_str() {
                    "0" => 0,
                    "4" => 4,
                    "8" | "12" => 8,
                    _ => return Err(bad("outcome is one of 0, 4, 8, 12")),
                })
            }
            "_count" => {
                f.limit =
                    v.parse::<usize>().map_err(|_| bad("_count must be a number"))?.clamp(1, s.page_limits.max_count)
            }
            "_cursor" => f.after_seq = Some(v.parse().map_err(|_| bad("bad paging cursor"))?),
            "_format" | "_pretty" => {}
            other => {
                return Err(ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "not-supported",
                    format!(
                        "unknown or unsupported AuditEvent search parameter '{}' (supported: date, agent, patient, entity, action, outcome, _count)",
                        other.chars().take(40).collect::<String>()
                    ),
                ));
            }
        }
    }
    Ok(f)
}

async fn run(s: &Shared, auth: &Authenticated, f: Result<AuditEventFilter>) -> Result<serde_json::Value> {
    let f = match f {
        Ok(f) => f,
        Err(e) => return Err(auth.refuse(s, e, Some(TYPE)).await),
    };
    let ctx = auth.permit(s, Operation::AuditReview, Action::AuditReview, Some(TYPE)).await?;
    Ok(s.store.review(ctx, ReviewQuery::FhirAuditEvents(f)).await?)
}

/// The filter selecting one entry of the view by its id (the trail's sequence number).
fn by_id(id: &str) -> Result<AuditEventFilter> {
    id.parse::<u64>().map(|seq| AuditEventFilter { seq: Some(seq), limit: 1, ..Default::default() }).map_err(|_| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "not-found",
            format!("AuditEvent/{} is not known", id.chars().take(64).collect::<String>()),
        )
    })
}

pub async fn read(s: &Shared, auth: &Authenticated, id: &str) -> Result<Response> {
    let found = run(s, auth, by_id(id)).await?;
    match found["resources"].get(0) {
        Some(r) => Ok(json_response(StatusCode::OK, serde_json::to_vec(r).unwrap_or_default())),
        None => Err(ApiError::new(StatusCode::NOT_FOUND, "not-found", format!("AuditEvent/{id} is not known"))),
    }
}

/// The search entries of a review answer's resources.
fn matches(base: &str, found: &serde_json::Value) -> Vec<Entry> {
    found["resources"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|r| Entry {
            full_url: Some(format!("{base}/{TYPE}/{}", r["id"].as_str().unwrap_or_default())),
            resource: RawValue::from_string(r.to_string()).ok(),
            search: Some(SearchMode { mode: "match" }),
            ..Entry::default()
        })
        .collect()
}

/// One GET entry of a batch or transaction Bundle on the view: `AuditEvent/<id>` or
/// `AuditEvent?<params>`, answered as the REST read or search would be (and audited as one).
pub(crate) async fn entry(s: &Shared, auth: &Authenticated, base: &str, url: &str) -> Result<Entry> {
    let url = url.trim_start_matches('/');
    let (path, query) = url.split_once('?').unwrap_or((url, ""));
    let ok = |resource: Option<Box<RawValue>>| Entry {
        resource,
        response: Some(crate::respond::EntryResponse {
            status: crate::respond::status_line(200),
            ..Default::default()
        }),
        ..Entry::default()
    };
    match path.strip_prefix(TYPE).unwrap_or(path) {
        "" => {
            let pairs = mamori_store::query::parse_query_string(query);
            let found = run(s, auth, filter(&pairs, s)).await?;
            let mut inner = Bundle::new("searchset", 0);
            inner.entry = matches(base, &found);
            inner.total = Some(inner.entry.len() as u64);
            let text = serde_json::to_string(&inner)
                .map_err(|_| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "exception", "encoding failed"))?;
            Ok(ok(RawValue::from_string(text).ok()))
        }
        rest => {
            let id = rest.strip_prefix('/').unwrap_or(rest);
            let found = run(s, auth, by_id(id)).await?;
            match found["resources"].get(0) {
                Some(r) => Ok(Entry {
                    full_url: Some(format!("{base}/{TYPE}/{id}")),
                    ..ok(RawValue::from_string(r.to_string()).ok())
                }),
                None => Err(ApiError::new(StatusCode::NOT_FOUND, "not-found", format!("AuditEvent/{id} is not known"))),
            }
        }
    }
}

pub async fn search(
    s: &Shared,
    auth: &Authenticated,
    conn: &ConnInfo,
    h: &HeaderMap,
    pairs: Vec<(String, String)>,
) -> Result<Response> {
    let found = run(s, auth, filter(&pairs, s)).await?;
    let base = s.base(h, conn);
    let mut bundle = Bundle::new("searchset", s.now_us());
    let used: Vec<(String, String)> = pairs.iter().filter(|(k, _)| k != "_cursor").cloned().collect();
    bundle.link.push(Link { relation: "self", url: format!("{base}/{TYPE}{}", crate::fhir_api::encode_query(&used)) });
    if let Some(next) = found["next_after"].as_u64() {
        let mut more = used.clone();
        more.push(("_cursor".into(), next.to_string()));
        bundle
            .link
            .push(Link { relation: "next", url: format!("{base}/{TYPE}{}", crate::fhir_api::encode_query(&more)) });
    }
    bundle.entry = matches(&base, &found);
    Ok(bundle.into_response(StatusCode::OK))
}
