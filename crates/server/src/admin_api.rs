//! The administration API. Today: the audit trail's review views (AUD-4), for auditors only
//! (ACL-5). Same request path as FHIR: authenticated by the middleware, decided by the policy,
//! and the review itself is audited by the store.

use std::sync::Arc;

use axum::Extension;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use mamori_access::Operation;
use mamori_store::Action;
use mamori_store::audit_log::{Period, ReviewQuery, WorkingHours};
use mamori_store::query::{parse_instant, parse_instant_end, parse_query_string};

use crate::Shared;
use crate::auth::Authenticated;
use crate::error::ApiError;

type Result<T> = std::result::Result<T, ApiError>;

/// `from` / `to` as FHIR instants or dates; a date as `to` means the end of that day.
fn period(query: &Option<String>) -> Result<(Period, Vec<(String, String)>)> {
    let pairs = parse_query_string(query.as_deref().unwrap_or(""));
    let mut p = Period::ALL;
    for (k, v) in &pairs {
        match k.as_str() {
            "from" => p.from_us = parse_instant(v)?,
            "to" => p.to_us = parse_instant_end(v)?,
            "max_patients_per_hour" | "hours" | "utc_offset" => {}
            other => {
                return Err(ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "not-supported",
                    format!(
                        "unknown parameter '{}' (supported: from, to, max_patients_per_hour)",
                        other.chars().take(40).collect::<String>()
                    ),
                ));
            }
        }
    }
    Ok((p, pairs))
}

async fn review(s: &Shared, auth: &Authenticated, parsed: Result<ReviewQuery>) -> Result<Response> {
    let query = match parsed {
        Ok(q) => q,
        Err(e) => return Err(auth.refuse(s, e, Some("audit")).await),
    };
    let ctx = auth.permit(s, Operation::AuditReview, Action::AuditReview, Some("audit")).await?;
    let body = s.store.review(ctx, query).await?;
    let mut resp = (StatusCode::OK, serde_json::to_vec(&body).unwrap_or_default()).into_response();
    resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    Ok(resp)
}

pub async fn account(
    State(s): State<Arc<Shared>>,
    Extension(auth): Extension<Authenticated>,
    Path(account): Path<String>,
    RawQuery(q): RawQuery,
) -> Result<Response> {
    let parsed = period(&q).map(|(period, _)| ReviewQuery::Account { account, period });
    review(&s, &auth, parsed).await
}

pub async fn patient(
    State(s): State<Arc<Shared>>,
    Extension(auth): Extension<Authenticated>,
    Path(patient): Path<String>,
    RawQuery(q): RawQuery,
) -> Result<Response> {
    let parsed = period(&q).map(|(period, _)| ReviewQuery::Patient { patient, period });
    review(&s, &auth, parsed).await
}

pub async fn patient_counts(
    State(s): State<Arc<Shared>>,
    Extension(auth): Extension<Authenticated>,
    RawQuery(q): RawQuery,
) -> Result<Response> {
    let parsed = period(&q).map(|(period, _)| ReviewQuery::PatientCounts { period });
    review(&s, &auth, parsed).await
}

/// Every access to patients flagged VIP or staff (AUD-4).
pub async fn flagged(
    State(s): State<Arc<Shared>>,
    Extension(auth): Extension<Authenticated>,
    RawQuery(q): RawQuery,
) -> Result<Response> {
    let parsed = period(&q).map(|(period, _)| ReviewQuery::Flagged { period, flagged: Vec::new() });
    review(&s, &auth, parsed).await
}

/// Every break-glass (emergency purpose) entry with its reason (AUD-4).
pub async fn emergency(
    State(s): State<Arc<Shared>>,
    Extension(auth): Extension<Authenticated>,
    RawQuery(q): RawQuery,
) -> Result<Response> {
    let parsed = period(&q).map(|(period, _)| ReviewQuery::Emergency { period });
    review(&s, &auth, parsed).await
}

pub async fn anomalies(
    State(s): State<Arc<Shared>>,
    Extension(auth): Extension<Authenticated>,
    RawQuery(q): RawQuery,
) -> Result<Response> {
    let parsed = period(&q).and_then(|(period, pairs)| {
        let limit = match pairs.iter().find(|(k, _)| k == "max_patients_per_hour") {
            Some((_, v)) => v.parse().map_err(|_| {
                ApiError::new(StatusCode::BAD_REQUEST, "invalid", "max_patients_per_hour must be a whole number")
            })?,
            None => 50,
        };
        Ok(ReviewQuery::ManyPatients { period, limit })
    });
    review(&s, &auth, parsed).await
}

/// Accesses to patients' data outside working hours: `hours=07:00-20:00&utc_offset=+09:00`
/// (those are the defaults).
pub async fn outside_hours(
    State(s): State<Arc<Shared>>,
    Extension(auth): Extension<Authenticated>,
    RawQuery(q): RawQuery,
) -> Result<Response> {
    let parsed = period(&q).and_then(|(period, pairs)| {
        let get = |k: &str, default: &'static str| {
            pairs.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone()).unwrap_or_else(|| default.to_string())
        };
        let hours = WorkingHours::parse(&get("hours", "07:00-20:00"), &get("utc_offset", "+09:00"))?;
        Ok(ReviewQuery::OutsideHours { period, hours })
    });
    review(&s, &auth, parsed).await
}

/// Operational status for administrators and auditors: software version, the clock's
/// synchronisation status (AUD-3), how much of the audit trail checkpoints cover, and the
/// state of forwarding to the syslog collector (AUD-5).
pub async fn status(State(s): State<Arc<Shared>>, Extension(auth): Extension<Authenticated>) -> Result<Response> {
    let ctx = auth.permit(&s, Operation::ViewStatus, Action::Status, None).await?;
    let audit = s.store.audit_status(ctx).await?;
    let body = serde_json::json!({
        "software": {"name": "mamori", "version": env!("CARGO_PKG_VERSION")},
        "clock": {"ntp": s.clock_status, "now": mamori_store::clock::fhir_instant(s.now_us())},
        "audit": audit,
        "forwarding": {
            "syslog": s.forwarding.as_ref().map(|f| f.snapshot(audit["entries"].as_u64())).unwrap_or(serde_json::json!({"configured": false})),
        },
        "witness": {
            "http": s.witness.as_ref().map(|w| w.snapshot()).unwrap_or(serde_json::json!({"configured": false})),
        },
    });
    let mut resp = (StatusCode::OK, serde_json::to_vec(&body).unwrap_or_default()).into_response();
    resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    Ok(resp)
}
