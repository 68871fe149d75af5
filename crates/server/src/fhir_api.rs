//! The FHIR REST interactions (INT-1). Each handler follows the one request path:
//! authenticated (middleware) → parse input → authorise → store (which audits) → respond.
//! Input errors and denials are audited as refusals before they are answered.

use std::str::FromStr;
use std::sync::Arc;

use axum::Extension;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use mamori_access::Operation;
use mamori_fhir::bundle::{BundleKind, Method, RequestEntry, parse_request_bundle};
use mamori_fhir::id::Id;
use mamori_fhir::media;
use mamori_fhir::resource_type::ResourceType;
use mamori_fhir::subset::Subset;
use mamori_fhir::validate::{check_resource, parse_resource};
use mamori_store::query::parse_query_string;
use mamori_store::{
    Action, EntryResult, HistoryQuery, HistoryScope, Page, ParseOptions, SearchQuery, WriteOp, WriteOutcome,
    parse_etag, patch_from_resource,
};
use serde_json::Value;

use crate::Shared;
use crate::audit_event_api;
use crate::auth::Authenticated;
use crate::error::ApiError;
use crate::listener::ConnInfo;
use crate::respond::{
    Bundle, Entry, EntryRequest, EntryResponse, Link, ReturnPref, SearchMode, entry_response, lenient, raw,
    resource_response, status_line,
};

type St = State<Arc<Shared>>;
type Auth = Extension<Authenticated>;
type Conn = Extension<ConnInfo>;
type Result<T> = std::result::Result<T, ApiError>;

/// Audits a refusal if `r` failed, so bad input is recorded before it is answered.
async fn checked<T>(s: &Shared, auth: &Authenticated, rtype: Option<&str>, r: Result<T>) -> Result<T> {
    match r {
        Ok(v) => Ok(v),
        Err(e) => Err(auth.refuse(s, e, rtype).await),
    }
}

fn parse_type(raw: &str) -> Result<ResourceType> {
    ResourceType::from_str(raw).map_err(|e| ApiError::new(StatusCode::NOT_FOUND, "not-supported", e.to_string()))
}

fn parse_id(raw: &str) -> Result<String> {
    Ok(Id::parse(raw)?.into_string())
}

fn parse_version(raw: &str) -> Result<u64> {
    raw.parse()
        .map_err(|_| ApiError::new(StatusCode::BAD_REQUEST, "invalid", "the version id must be a positive integer"))
}

fn accept(h: &HeaderMap, pairs: &[(String, String)]) -> Result<()> {
    let format = pairs.iter().find(|(k, _)| k == "_format").map(|(_, v)| v.as_str());
    media::negotiate_accept(h.get(header::ACCEPT).and_then(|v| v.to_str().ok()), format)
        .map_err(|e| ApiError::new(StatusCode::NOT_ACCEPTABLE, "not-supported", e.to_string()))
}

fn content_type(h: &HeaderMap) -> Option<&str> {
    h.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok())
}

/// Reads and checks a resource body: size, media type, JSON, FHIR structure.
fn resource_body(
    h: &HeaderMap,
    body: std::result::Result<Bytes, BytesRejection>,
) -> Result<(ResourceType, Option<Id>, Value)> {
    media::check_content_type(content_type(h))
        .map_err(|e| ApiError::new(StatusCode::UNSUPPORTED_MEDIA_TYPE, "not-supported", e.to_string()))?;
    let bytes = body_bytes(body)?;
    let value = parse_resource(&bytes)?;
    let (rtype, id) = check_resource(&value)?;
    Ok((rtype, id, value))
}

/// A resource body that must be of the type the URL names.
fn resource_body_of(
    h: &HeaderMap,
    body: std::result::Result<Bytes, BytesRejection>,
    url_type: ResourceType,
) -> Result<(Option<Id>, Value)> {
    let (body_type, id, value) = resource_body(h, body)?;
    if body_type != url_type {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid",
            format!("the body is a {body_type} but the URL names {url_type}"),
        ));
    }
    Ok((id, value))
}

fn body_bytes(body: std::result::Result<Bytes, BytesRejection>) -> Result<Bytes> {
    body.map_err(|e| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "too-costly", "the request body exceeds the configured limit")
        } else {
            ApiError::new(StatusCode::BAD_REQUEST, "structure", "the request body could not be read")
        }
    })
}

fn if_match(h: &HeaderMap) -> Result<Option<u64>> {
    h.get(header::IF_MATCH)
        .map(|v| v.to_str().map_err(|_| ApiError::new(StatusCode::BAD_REQUEST, "invalid", "If-Match is not text")))
        .transpose()?
        .map(|v| parse_etag(v).map_err(ApiError::from))
        .transpose()
}

pub async fn metadata(State(s): St, Extension(auth): Auth, Extension(conn): Conn, h: HeaderMap) -> Result<Response> {
    let ctx = auth.permit(&s, Operation::Capabilities, Action::Capabilities, None).await?;
    s.store.record_event(ctx, mamori_store::AuditEvent::new(Action::Capabilities, 200)).await?;
    // AUTH-6: the SMART OAuth endpoints in the security section (their URLs depend on the host).
    let root = crate::oauth_api::root(&s, &h, Some(&conn));
    let body = match serde_json::from_slice::<serde_json::Value>(&s.capability) {
        Ok(mut cap) => {
            cap["rest"][0]["security"] = crate::oauth_api::capability_security(&s, &root);
            serde_json::to_vec(&cap).unwrap_or_else(|_| s.capability.clone())
        }
        Err(_) => s.capability.clone(),
    };
    Ok(crate::respond::json_response(StatusCode::OK, body))
}

pub async fn read(
    State(s): St,
    Extension(auth): Auth,
    Extension(conn): Conn,
    Path((rtype, id)): Path<(String, String)>,
    RawQuery(q): RawQuery,
    h: HeaderMap,
) -> Result<Response> {
    if rtype == audit_event_api::TYPE {
        return audit_event_api::read(&s, &auth, &id).await;
    }
    let pairs = parse_query_string(q.as_deref().unwrap_or(""));
    let (rtype, id) =
        checked(&s, &auth, Some(&rtype), accept(&h, &pairs).and_then(|()| Ok((parse_type(&rtype)?, parse_id(&id)?))))
            .await?;
    let ctx = auth.permit(&s, Operation::View, Action::Read, Some(rtype.as_str())).await?;
    let rec = s.store.read(ctx, rtype, id, None).await?;
    Ok(resource_response(StatusCode::OK, &rec, &s.base(&h, &conn), false, ReturnPref::Representation))
}

pub async fn vread(
    State(s): St,
    Extension(auth): Auth,
    Extension(conn): Conn,
    Path((rtype, id, vid)): Path<(String, String, String)>,
    h: HeaderMap,
) -> Result<Response> {
    let parsed = (|| Ok((parse_type(&rtype)?, parse_id(&id)?, parse_version(&vid)?)))();
    let (rtype, id, v) = checked(&s, &auth, Some(&rtype), parsed).await?;
    let ctx = auth.permit(&s, Operation::View, Action::Vread, Some(rtype.as_str())).await?;
    let rec = s.store.read(ctx, rtype, id, Some(v)).await?;
    Ok(resource_response(StatusCode::OK, &rec, &s.base(&h, &conn), false, ReturnPref::Representation))
}

pub async fn create(
    State(s): St,
    Extension(auth): Auth,
    Extension(conn): Conn,
    Path(rtype): Path<String>,
    h: HeaderMap,
    body: std::result::Result<Bytes, BytesRejection>,
) -> Result<Response> {
    if rtype == audit_event_api::TYPE {
        return Err(auth.refuse(&s, audit_event_api::refuse_write(), Some(audit_event_api::TYPE)).await);
    }
    let parsed = (|| {
        let url_type = parse_type(&rtype)?;
        let (_, value) = resource_body_of(&h, body, url_type)?;
        let cond = match h.get("if-none-exist").map(|v| v.to_str()) {
            None => None,
            Some(Ok(q)) => Some(SearchQuery::parse(
                url_type,
                &parse_query_string(q.trim_start_matches('?')),
                ParseOptions::new(s.page_limits),
            )?),
            Some(Err(_)) => {
                return Err(ApiError::new(StatusCode::BAD_REQUEST, "invalid", "If-None-Exist is not text"));
            }
        };
        Ok((url_type, value, cond))
    })();
    let (rtype, resource, if_none_exist) = checked(&s, &auth, Some(&rtype), parsed).await?;
    let ctx = auth.permit(&s, Operation::Create, Action::Create, Some(rtype.as_str())).await?;
    let outcome = s.store.write(ctx, WriteOp::Create { rtype, resource, if_none_exist }).await?;
    Ok(write_response(&s, &h, &conn, outcome))
}

pub async fn update(
    State(s): St,
    Extension(auth): Auth,
    Extension(conn): Conn,
    Path((rtype, id)): Path<(String, String)>,
    h: HeaderMap,
    body: std::result::Result<Bytes, BytesRejection>,
) -> Result<Response> {
    if rtype == audit_event_api::TYPE {
        return Err(auth.refuse(&s, audit_event_api::refuse_write(), Some(audit_event_api::TYPE)).await);
    }
    let parsed = (|| {
        let url_type = parse_type(&rtype)?;
        let id = parse_id(&id)?;
        let (body_id, value) = resource_body_of(&h, body, url_type)?;
        match body_id {
            Some(b) if b.as_str() == id => {}
            Some(b) => {
                return Err(ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "invalid",
                    format!("the resource id '{b}' does not match the URL id '{id}'"),
                ));
            }
            None => {
                return Err(ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "required",
                    "an update needs the resource id in the body",
                ));
            }
        }
        Ok((url_type, id, value, if_match(&h)?))
    })();
    let (rtype, id, resource, if_match) = checked(&s, &auth, Some(&rtype), parsed).await?;
    let ctx = auth.permit(&s, Operation::Update, Action::Update, Some(rtype.as_str())).await?;
    let outcome = s.store.write(ctx, WriteOp::Update { rtype, id, resource, if_match }).await?;
    Ok(write_response(&s, &h, &conn, outcome))
}

pub async fn conditional_update(
    State(s): St,
    Extension(auth): Auth,
    Extension(conn): Conn,
    Path(rtype): Path<String>,
    RawQuery(q): RawQuery,
    h: HeaderMap,
    body: std::result::Result<Bytes, BytesRejection>,
) -> Result<Response> {
    if rtype == audit_event_api::TYPE {
        return Err(auth.refuse(&s, audit_event_api::refuse_write(), Some(audit_event_api::TYPE)).await);
    }
    let parsed = (|| {
        let url_type = parse_type(&rtype)?;
        let query = SearchQuery::parse(
            url_type,
            &parse_query_string(q.as_deref().unwrap_or("")),
            ParseOptions::new(s.page_limits),
        )?;
        if !query.has_criteria() {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid",
                "a conditional update needs search criteria",
            ));
        }
        let (_, value) = resource_body_of(&h, body, url_type)?;
        Ok((url_type, query, value, if_match(&h)?))
    })();
    let (rtype, query, resource, if_match) = checked(&s, &auth, Some(&rtype), parsed).await?;
    let ctx = auth.permit(&s, Operation::Update, Action::Update, Some(rtype.as_str())).await?;
    let outcome = s.store.write(ctx, WriteOp::ConditionalUpdate { rtype, query, resource, if_match }).await?;
    Ok(write_response(&s, &h, &conn, outcome))
}

pub async fn patch(
    State(s): St,
    Extension(auth): Auth,
    Extension(conn): Conn,
    Path((rtype, id)): Path<(String, String)>,
    h: HeaderMap,
    body: std::result::Result<Bytes, BytesRejection>,
) -> Result<Response> {
    if rtype == audit_event_api::TYPE {
        return Err(auth.refuse(&s, audit_event_api::refuse_write(), Some(audit_event_api::TYPE)).await);
    }
    let parsed = (|| {
        let rtype = parse_type(&rtype)?;
        let id = parse_id(&id)?;
        if !media::is_json_patch(content_type(&h)) {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "not-supported",
                "PATCH takes a JSON Patch document (Content-Type: application/json-patch+json)",
            ));
        }
        let bytes = body_bytes(body)?;
        let doc: Value = serde_json::from_slice(&bytes).map_err(|e| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "structure",
                format!("invalid JSON at line {} column {}", e.line(), e.column()),
            )
        })?;
        Ok((rtype, id, patch_from_resource(doc)?, if_match(&h)?))
    })();
    let (rtype, id, patch, if_match) = checked(&s, &auth, Some(&rtype), parsed).await?;
    let ctx = auth.permit(&s, Operation::Update, Action::Patch, Some(rtype.as_str())).await?;
    let outcome = s.store.write(ctx, WriteOp::Patch { rtype, id, patch, if_match }).await?;
    Ok(write_response(&s, &h, &conn, outcome))
}

pub async fn delete(
    State(s): St,
    Extension(auth): Auth,
    Path((rtype, id)): Path<(String, String)>,
    h: HeaderMap,
) -> Result<Response> {
    if rtype == audit_event_api::TYPE {
        return Err(auth.refuse(&s, audit_event_api::refuse_write(), Some(audit_event_api::TYPE)).await);
    }
    let parsed = (|| Ok((parse_type(&rtype)?, parse_id(&id)?, if_match(&h)?)))();
    let (rtype, id, if_match) = checked(&s, &auth, Some(&rtype), parsed).await?;
    let ctx = auth.permit(&s, Operation::Delete, Action::Delete, Some(rtype.as_str())).await?;
    let outcome = s.store.write(ctx, WriteOp::Delete { rtype, id, if_match }).await?;
    Ok(delete_response(&outcome))
}

pub async fn conditional_delete(
    State(s): St,
    Extension(auth): Auth,
    Path(rtype): Path<String>,
    RawQuery(q): RawQuery,
) -> Result<Response> {
    if rtype == audit_event_api::TYPE {
        return Err(auth.refuse(&s, audit_event_api::refuse_write(), Some(audit_event_api::TYPE)).await);
    }
    let parsed = (|| {
        let rtype = parse_type(&rtype)?;
        let query = SearchQuery::parse(
            rtype,
            &parse_query_string(q.as_deref().unwrap_or("")),
            ParseOptions::new(s.page_limits),
        )?;
        if !query.has_criteria() {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid",
                "a conditional delete needs search criteria",
            ));
        }
        Ok((rtype, query))
    })();
    let (rtype, query) = checked(&s, &auth, Some(&rtype), parsed).await?;
    let ctx = auth.permit(&s, Operation::Delete, Action::Delete, Some(rtype.as_str())).await?;
    let outcome = s.store.write(ctx, WriteOp::ConditionalDelete { rtype, query }).await?;
    Ok(delete_response(&outcome))
}

fn delete_response(outcome: &WriteOutcome) -> Response {
    let mut resp = StatusCode::NO_CONTENT.into_response();
    if let Some(r) = outcome.record()
        && let Ok(v) = crate::respond::etag(r.version).parse()
    {
        resp.headers_mut().insert(header::ETAG, v);
    }
    resp
}

fn write_response(s: &Shared, h: &HeaderMap, conn: &ConnInfo, outcome: WriteOutcome) -> Response {
    let pref = ReturnPref::from_headers(h);
    let base = s.base(h, conn);
    match &outcome {
        WriteOutcome::Created(r) => resource_response(StatusCode::CREATED, r, &base, true, pref),
        WriteOutcome::Updated(r) => resource_response(StatusCode::OK, r, &base, false, pref),
        // A conditional create that found its match answers 200 with the existing resource.
        WriteOutcome::Existing(r) => resource_response(StatusCode::OK, r, &base, true, pref),
        WriteOutcome::Deleted(_) => delete_response(&outcome),
    }
}

pub async fn search_get(
    State(s): St,
    Extension(auth): Auth,
    Extension(conn): Conn,
    Path(rtype): Path<String>,
    RawQuery(q): RawQuery,
    h: HeaderMap,
) -> Result<Response> {
    let pairs = parse_query_string(q.as_deref().unwrap_or(""));
    search(s, auth, conn, rtype, pairs, h).await
}

pub async fn search_post(
    State(s): St,
    Extension(auth): Auth,
    Extension(conn): Conn,
    Path(rtype): Path<String>,
    RawQuery(q): RawQuery,
    h: HeaderMap,
    body: std::result::Result<Bytes, BytesRejection>,
) -> Result<Response> {
    let parsed = (|| {
        let is_form = content_type(&h).is_some_and(|c| c.starts_with("application/x-www-form-urlencoded"));
        if !is_form {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "not-supported",
                "_search takes application/x-www-form-urlencoded parameters",
            ));
        }
        let bytes = body_bytes(body)?;
        let text = std::str::from_utf8(&bytes)
            .map_err(|_| ApiError::new(StatusCode::BAD_REQUEST, "structure", "the form body is not UTF-8"))?;
        let mut pairs = parse_query_string(q.as_deref().unwrap_or(""));
        pairs.extend(parse_query_string(text));
        Ok(pairs)
    })();
    let pairs = checked(&s, &auth, Some(&rtype), parsed).await?;
    search(s, auth, conn, rtype, pairs, h).await
}

/// `/{rtype}/{id}/{compartment type}` (compartment search) and `/Patient/{id}/$everything`.
pub async fn compartment_get(
    State(s): St,
    Extension(auth): Auth,
    Extension(conn): Conn,
    Path((ctype, id, rtype)): Path<(String, String, String)>,
    RawQuery(q): RawQuery,
    h: HeaderMap,
) -> Result<Response> {
    let pairs = parse_query_string(q.as_deref().unwrap_or(""));
    if ctype != "Patient" {
        let err = ApiError::new(
            StatusCode::NOT_FOUND,
            "not-supported",
            "only the Patient compartment is supported (/Patient/{id}/{type} and /Patient/{id}/$everything)",
        );
        return Err(auth.refuse(&s, err, Some(&ctype)).await);
    }
    let scope = if rtype == "$everything" { Scope::Everything(id) } else { Scope::Compartment(id) };
    let rtype = if rtype == "$everything" { "Patient".to_string() } else { rtype };
    run_search(s, auth, conn, rtype, pairs, h, scope).await
}

/// What a search covers besides its parameters.
enum Scope {
    Type,
    Compartment(String),
    Everything(String),
}

async fn search(
    s: Arc<Shared>,
    auth: Authenticated,
    conn: ConnInfo,
    rtype: String,
    pairs: Vec<(String, String)>,
    h: HeaderMap,
) -> Result<Response> {
    run_search(s, auth, conn, rtype, pairs, h, Scope::Type).await
}

async fn run_search(
    s: Arc<Shared>,
    auth: Authenticated,
    conn: ConnInfo,
    rtype: String,
    pairs: Vec<(String, String)>,
    h: HeaderMap,
    scope: Scope,
) -> Result<Response> {
    if rtype == audit_event_api::TYPE && matches!(scope, Scope::Type) {
        return audit_event_api::search(&s, &auth, &conn, &h, pairs).await;
    }
    let base = s.base(&h, &conn);
    let parsed = (|| {
        accept(&h, &pairs)?;
        let rtype = parse_type(&rtype)?;
        let opts = ParseOptions { limits: s.page_limits, lenient: lenient(&h), base_url: Some(&base) };
        let mut query = SearchQuery::parse(rtype, &pairs, opts)?;
        let subset = Subset::from_query(&pairs).map_err(|m| ApiError::new(StatusCode::BAD_REQUEST, "invalid", m))?;
        match &scope {
            Scope::Type => {}
            Scope::Compartment(id) => query.compartment = Some(id.clone()),
            Scope::Everything(id) => {
                if !query.clauses.is_empty() || !query.sort.is_empty() {
                    return Err(ApiError::new(
                        StatusCode::BAD_REQUEST,
                        "not-supported",
                        "$everything takes only _count (and the paging cursor)",
                    ));
                }
                query.compartment = Some(id.clone());
                query.all_types = true;
            }
        }
        Ok((rtype, query, subset))
    })();
    let (rtype, query, subset) = checked(&s, &auth, Some(&rtype), parsed).await?;
    let ctx = auth.permit(&s, Operation::View, Action::Search, Some(rtype.as_str())).await?;
    let ignored = query.ignored.clone();
    let page = s.store.search(ctx, rtype, query).await?;
    // The self link shows the parameters actually used (lenient mode drops unknown ones).
    let used: Vec<(String, String)> =
        pairs.into_iter().filter(|(k, _)| k != "_cursor" && !ignored.contains(k)).collect();
    let path = match &scope {
        Scope::Type => format!("{base}/{rtype}"),
        Scope::Compartment(id) => format!("{base}/Patient/{id}/{rtype}"),
        Scope::Everything(id) => format!("{base}/Patient/{id}/$everything"),
    };
    let page_url = |cursor: Option<&str>| {
        let mut all = used.clone();
        if let Some(c) = cursor {
            all.push(("_cursor".into(), c.into()));
        }
        format!("{path}{}", encode_query(&all))
    };
    let mut bundle = Bundle::new("searchset", s.now_us());
    bundle.total = page.total;
    bundle.link.push(Link { relation: "self", url: page_url(None) });
    if let Some(c) = &page.next_cursor {
        bundle.link.push(Link { relation: "next", url: page_url(Some(c)) });
    }
    if let Some(c) = &page.previous_cursor {
        bundle.link.push(Link { relation: "previous", url: page_url(Some(c)) });
    }
    for (rec, mode) in page.records.iter().map(|r| (r, "match")).chain(page.included.iter().map(|r| (r, "include"))) {
        // _summary/_elements reduce the matches; included resources come whole.
        let resource = match (&subset, mode) {
            (Some(sub), "match") => subset_raw(rec, sub)?,
            _ => raw(rec)?,
        };
        bundle.entry.push(Entry {
            full_url: Some(format!("{base}/{}/{}", rec.rtype, rec.id)),
            resource,
            search: Some(SearchMode { mode }),
            ..Entry::default()
        });
    }
    Ok(bundle.into_response(StatusCode::OK))
}

/// A stored resource reduced to the subset a client asked for.
fn subset_raw(rec: &mamori_store::VersionRecord, subset: &Subset) -> Result<Option<Box<serde_json::value::RawValue>>> {
    let Some(bytes) = &rec.body else { return Ok(None) };
    let encoding =
        || ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "exception", "a stored resource could not be encoded");
    let mut v: serde_json::Value = serde_json::from_slice(bytes).map_err(|_| encoding())?;
    subset.apply(&mut v);
    let text = serde_json::to_string(&v).map_err(|_| encoding())?;
    serde_json::value::RawValue::from_string(text).map(Some).map_err(|_| encoding())
}

pub(crate) fn encode_query(pairs: &[(String, String)]) -> String {
    use percent_encoding::{NON_ALPHANUMERIC, utf8_percent_encode};
    if pairs.is_empty() {
        return String::new();
    }
    let parts: Vec<String> = pairs
        .iter()
        .map(|(k, v)| {
            format!("{}={}", utf8_percent_encode(k, NON_ALPHANUMERIC), utf8_percent_encode(v, NON_ALPHANUMERIC))
        })
        .collect();
    format!("?{}", parts.join("&"))
}

pub async fn history_system(
    State(s): St,
    Extension(auth): Auth,
    Extension(conn): Conn,
    RawQuery(q): RawQuery,
    h: HeaderMap,
) -> Result<Response> {
    history(s, auth, conn, None, None, q, h).await
}

pub async fn history_type(
    State(s): St,
    Extension(auth): Auth,
    Extension(conn): Conn,
    Path(rtype): Path<String>,
    RawQuery(q): RawQuery,
    h: HeaderMap,
) -> Result<Response> {
    history(s, auth, conn, Some(rtype), None, q, h).await
}

pub async fn history_instance(
    State(s): St,
    Extension(auth): Auth,
    Extension(conn): Conn,
    Path((rtype, id)): Path<(String, String)>,
    RawQuery(q): RawQuery,
    h: HeaderMap,
) -> Result<Response> {
    history(s, auth, conn, Some(rtype), Some(id), q, h).await
}

async fn history(
    s: Arc<Shared>,
    auth: Authenticated,
    conn: ConnInfo,
    rtype: Option<String>,
    id: Option<String>,
    q: Option<String>,
    h: HeaderMap,
) -> Result<Response> {
    let pairs = parse_query_string(q.as_deref().unwrap_or(""));
    let parsed = (|| {
        accept(&h, &pairs)?;
        let scope = match (&rtype, &id) {
            (None, _) => HistoryScope::System,
            (Some(t), None) => HistoryScope::Type(parse_type(t)?),
            (Some(t), Some(i)) => HistoryScope::Instance(parse_type(t)?, parse_id(i)?),
        };
        Ok((scope, HistoryQuery::parse(&pairs, s.page_limits)?))
    })();
    let (scope, query) = checked(&s, &auth, rtype.as_deref(), parsed).await?;
    let action = match scope {
        HistoryScope::System => Action::HistorySystem,
        HistoryScope::Type(_) => Action::HistoryType,
        HistoryScope::Instance(..) => Action::HistoryInstance,
    };
    let ctx = auth.permit(&s, Operation::View, action, rtype.as_deref()).await?;
    let page: Page = s.store.history(ctx, scope.clone(), query).await?;
    let base = s.base(&h, &conn);
    let path = match &scope {
        HistoryScope::System => format!("{base}/_history"),
        HistoryScope::Type(t) => format!("{base}/{t}/_history"),
        HistoryScope::Instance(t, i) => format!("{base}/{t}/{i}/_history"),
    };
    let used: Vec<(String, String)> = pairs.into_iter().filter(|(k, _)| k != "_cursor").collect();
    let mut bundle = Bundle::new("history", s.now_us());
    bundle.total = page.total;
    bundle.link.push(Link { relation: "self", url: format!("{path}{}", encode_query(&used)) });
    if let Some(c) = &page.next_cursor {
        let mut next = used.clone();
        next.push(("_cursor".into(), c.clone()));
        bundle.link.push(Link { relation: "next", url: format!("{path}{}", encode_query(&next)) });
    }
    for rec in &page.records {
        let (method, url, status) = if rec.deleted {
            ("DELETE", format!("{}/{}", rec.rtype, rec.id), 204)
        } else if rec.version == 1 {
            ("POST", rec.rtype.to_string(), 201)
        } else {
            ("PUT", format!("{}/{}", rec.rtype, rec.id), 200)
        };
        bundle.entry.push(Entry {
            full_url: Some(format!("{base}/{}/{}", rec.rtype, rec.id)),
            resource: raw(rec)?,
            request: Some(EntryRequest { method, url }),
            response: Some(entry_response(status, rec, false)),
            ..Entry::default()
        });
    }
    Ok(bundle.into_response(StatusCode::OK))
}

pub async fn bundle(
    State(s): St,
    Extension(auth): Auth,
    Extension(conn): Conn,
    h: HeaderMap,
    body: std::result::Result<Bytes, BytesRejection>,
) -> Result<Response> {
    let parsed = (|| {
        media::check_content_type(content_type(&h))
            .map_err(|e| ApiError::new(StatusCode::UNSUPPORTED_MEDIA_TYPE, "not-supported", e.to_string()))?;
        let value = parse_resource(&body_bytes(body)?)?;
        if value.get("resourceType").and_then(Value::as_str) != Some("Bundle") {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid",
                "only a transaction or batch Bundle can be POSTed to the base URL",
            ));
        }
        check_resource(&value)?;
        Ok(parse_request_bundle(value, s.limits.max_bundle_entries)?)
    })();
    let (kind, entries) = checked(&s, &auth, Some("Bundle"), parsed).await?;
    // Entries carry their resources only when asked (Prefer: return=representation).
    let with_bodies =
        h.get_all("prefer").iter().filter_map(|v| v.to_str().ok()).any(|v| v.contains("return=representation"));
    let base = s.base(&h, &conn);
    // ACL-1: one decision per entry through the same policy point as a single request (audited
    // as one when denied); the store then applies the per-resource rights (categories, a
    // patient's compartment) to what each permitted entry touches. AuditEvent reads go to the
    // audit-trail view, as over REST.
    let mut answers: Vec<(usize, Entry)> = Vec::new();
    let mut audit_reads: Vec<(usize, String)> = Vec::new();
    let mut to_store: Vec<RequestEntry> = Vec::with_capacity(entries.len());
    for e in entries {
        let rtype = entry_type(&e.request.url);
        let read = matches!(e.request.method, Method::Get | Method::Head);
        if read && rtype == Some(audit_event_api::TYPE) {
            audit_reads.push((e.index, e.request.url.clone()));
            continue;
        }
        let (op, action) = entry_operation(e.request.method);
        // A PUT may create: update or create rights on some category let it through.
        let permitted = (e.request.method == Method::Put && auth.ctx.rights.any(Operation::Create))
            || auth.permit(&s, op, action, rtype).await.is_ok();
        if permitted {
            to_store.push(e);
        } else if kind == BundleKind::Transaction {
            // All or nothing: nothing has run yet, so nothing changes.
            let mut err = ApiError::forbidden();
            if let Some(issue) = err.outcome.issues.first_mut() {
                issue.diagnostics = format!("transaction refused: entry {} is denied by policy", e.index);
                issue.expression.push(format!("Bundle.entry[{}]", e.index));
            }
            return Err(err);
        } else {
            answers.push((e.index, failed_entry(ApiError::forbidden())));
        }
    }
    // Reads of the audit trail run first: a transaction they fail has then changed nothing.
    for (i, url) in audit_reads {
        let entry = match audit_event_api::entry(&s, &auth, &base, &url).await {
            Ok(e) => e,
            Err(err) if kind == BundleKind::Transaction => return Err(err),
            Err(err) => failed_entry(err),
        };
        answers.push((i, entry));
    }
    let indices: Vec<usize> = to_store.iter().map(|e| e.index).collect();
    if !to_store.is_empty() {
        match s.store.bundle(auth.ctx.clone(), kind, to_store).await? {
            Err(te) => {
                let mut err = ApiError::from(te.error);
                if let Some(issue) = err.outcome.issues.first_mut() {
                    issue.diagnostics = format!("transaction failed at entry {}: {}", te.entry, issue.diagnostics);
                    issue.expression.push(format!("Bundle.entry[{}]", te.entry));
                }
                return Err(err);
            }
            Ok(results) => {
                for (i, r) in indices.into_iter().zip(results) {
                    answers.push((i, bundle_entry(&base, r, with_bodies)?));
                }
            }
        }
    }
    answers.sort_by_key(|(i, _)| *i);
    let kind_name = if kind == BundleKind::Transaction { "transaction-response" } else { "batch-response" };
    let mut bundle = Bundle::new(kind_name, s.now_us());
    bundle.entry = answers.into_iter().map(|(_, e)| e).collect();
    Ok(bundle.into_response(StatusCode::OK))
}

/// The resource type an entry's request URL names, if it names a known one.
fn entry_type(url: &str) -> Option<&str> {
    let t = url.trim_start_matches('/').split(['/', '?']).next()?;
    ResourceType::from_str(t).ok().map(|_| t)
}

/// The operation (and the action a single request would audit) of an entry's method.
fn entry_operation(m: Method) -> (Operation, Action) {
    match m {
        Method::Get | Method::Head => (Operation::View, Action::Read),
        Method::Post => (Operation::Create, Action::Create),
        Method::Put => (Operation::Update, Action::Update),
        Method::Patch => (Operation::Update, Action::Patch),
        Method::Delete => (Operation::Delete, Action::Delete),
    }
}

/// A batch entry answering with an error: its status and OperationOutcome.
pub(crate) fn failed_entry(err: ApiError) -> Entry {
    Entry {
        response: Some(EntryResponse {
            status: status_line(err.status.as_u16()),
            outcome: Some(err.outcome.to_json()),
            ..Default::default()
        }),
        ..Entry::default()
    }
}

fn bundle_entry(base: &str, r: EntryResult, with_body: bool) -> Result<Entry> {
    let full_url = |rec: &mamori_store::VersionRecord| Some(format!("{base}/{}/{}", rec.rtype, rec.id));
    Ok(match r {
        EntryResult::Write(o) => match &o {
            WriteOutcome::Created(rec) | WriteOutcome::Updated(rec) | WriteOutcome::Existing(rec) => Entry {
                full_url: full_url(rec),
                resource: if with_body { raw(rec)? } else { None },
                response: Some(entry_response(o.status(), rec, true)),
                ..Entry::default()
            },
            WriteOutcome::Deleted(_) => Entry {
                response: Some(EntryResponse { status: status_line(204), ..Default::default() }),
                ..Default::default()
            },
        },
        EntryResult::Read(rec) => Entry {
            full_url: full_url(&rec),
            resource: raw(&rec)?,
            response: Some(entry_response(200, &rec, false)),
            ..Entry::default()
        },
        EntryResult::Search { records, total, .. } => {
            let mut inner = Bundle::new("searchset", 0);
            inner.total = Some(total);
            for rec in &records {
                inner.entry.push(Entry {
                    full_url: full_url(rec),
                    resource: raw(rec)?,
                    search: Some(SearchMode { mode: "match" }),
                    ..Entry::default()
                });
            }
            let text = serde_json::to_string(&inner)
                .map_err(|_| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "exception", "encoding failed"))?;
            Entry {
                resource: serde_json::value::RawValue::from_string(text).ok(),
                response: Some(EntryResponse { status: status_line(200), ..Default::default() }),
                ..Entry::default()
            }
        }
        EntryResult::Failed(e) => failed_entry(ApiError::from(e)),
    })
}

pub async fn not_found(State(s): St, Extension(auth): Auth) -> Result<Response> {
    let err = ApiError::new(StatusCode::NOT_FOUND, "not-found", "no FHIR interaction matches this URL and method");
    Err(auth.refuse(&s, err, None).await)
}
