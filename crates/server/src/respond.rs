//! Building FHIR responses: single resources with their headers, and Bundles whose entries embed
//! stored resource JSON as-is (no re-parsing of bodies on the way out).

use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use mamori_fhir::outcome::OperationOutcome;
use mamori_store::VersionRecord;
use mamori_store::clock::{fhir_instant, from_micros};
use serde::Serialize;
use serde_json::value::RawValue;

use crate::error::{ApiError, FHIR_JSON};

/// What the client asked for with `Prefer: return=…`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReturnPref {
    Minimal,
    Representation,
    OperationOutcome,
}

impl ReturnPref {
    pub fn from_headers(h: &HeaderMap) -> ReturnPref {
        let prefer = h.get_all("prefer").iter().filter_map(|v| v.to_str().ok()).collect::<Vec<_>>().join(",");
        for part in prefer.split([',', ';']) {
            match part.trim() {
                "return=minimal" => return ReturnPref::Minimal,
                "return=OperationOutcome" => return ReturnPref::OperationOutcome,
                "return=representation" => return ReturnPref::Representation,
                _ => {}
            }
        }
        ReturnPref::Representation
    }
}

pub fn lenient(h: &HeaderMap) -> bool {
    h.get_all("prefer").iter().filter_map(|v| v.to_str().ok()).any(|v| v.contains("handling=lenient"))
}

pub fn etag(version: u64) -> String {
    format!("W/\"{version}\"")
}

pub fn http_date(us: i64) -> String {
    httpdate::fmt_http_date(std::time::SystemTime::from(from_micros(us)))
}

pub fn json_response(status: StatusCode, body: Vec<u8>) -> Response {
    let mut resp = (status, body).into_response();
    resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(FHIR_JSON));
    resp
}

/// A single resource version with ETag, Last-Modified and (for creates) Location.
pub fn resource_response(
    status: StatusCode,
    rec: &VersionRecord,
    base: &str,
    location: bool,
    pref: ReturnPref,
) -> Response {
    let body = match pref {
        ReturnPref::Representation => rec.body.clone().unwrap_or_default(),
        ReturnPref::Minimal => Vec::new(),
        ReturnPref::OperationOutcome => serde_json::to_vec(
            &OperationOutcome::information("informational", format!("{} {}", status.as_u16(), rec.versioned_ref()))
                .to_json(),
        )
        .unwrap_or_default(),
    };
    let mut resp = if body.is_empty() { status.into_response() } else { json_response(status, body) };
    let h = resp.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&etag(rec.version)) {
        h.insert(header::ETAG, v);
    }
    if let Ok(v) = HeaderValue::from_str(&http_date(rec.last_updated_us)) {
        h.insert(header::LAST_MODIFIED, v);
    }
    if location && let Ok(v) = HeaderValue::from_str(&format!("{base}/{}", rec.versioned_ref())) {
        h.insert(header::LOCATION, v);
    }
    resp
}

pub fn raw(rec: &VersionRecord) -> Result<Option<Box<RawValue>>, ApiError> {
    match &rec.body {
        None => Ok(None),
        Some(b) => {
            let s = String::from_utf8(b.clone()).map_err(|_| internal())?;
            RawValue::from_string(s).map(Some).map_err(|_| internal())
        }
    }
}

fn internal() -> ApiError {
    ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "exception", "a stored resource could not be encoded")
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Bundle {
    pub resource_type: &'static str,
    pub id: String,
    pub meta: BundleMeta,
    #[serde(rename = "type")]
    pub kind: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub total: Option<u64>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub link: Vec<Link>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub entry: Vec<Entry>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct BundleMeta {
    pub last_updated: String,
}

#[derive(Serialize)]
pub struct Link {
    pub relation: &'static str,
    pub url: String,
}

#[derive(Serialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct Entry {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub full_url: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resource: Option<Box<RawValue>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub search: Option<SearchMode>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request: Option<EntryRequest>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub response: Option<EntryResponse>,
}

#[derive(Serialize)]
pub struct SearchMode {
    pub mode: &'static str,
}

#[derive(Serialize)]
pub struct EntryRequest {
    pub method: &'static str,
    pub url: String,
}

#[derive(Serialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct EntryResponse {
    pub status: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub location: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub etag: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_modified: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub outcome: Option<serde_json::Value>,
}

impl Bundle {
    pub fn new(kind: &'static str, now_us: i64) -> Bundle {
        Bundle {
            resource_type: "Bundle",
            id: uuid::Uuid::new_v4().to_string(),
            meta: BundleMeta { last_updated: fhir_instant(now_us) },
            kind,
            total: None,
            link: Vec::new(),
            entry: Vec::new(),
        }
    }

    pub fn into_response(self, status: StatusCode) -> Response {
        match serde_json::to_vec(&self) {
            Ok(body) => json_response(status, body),
            Err(_) => internal().into_response(),
        }
    }
}

pub fn status_line(code: u16) -> String {
    let reason = StatusCode::from_u16(code).ok().and_then(|s| s.canonical_reason()).unwrap_or("");
    format!("{code} {reason}").trim_end().to_string()
}

/// The `response` part of a Bundle entry for a stored version.
pub fn entry_response(code: u16, rec: &VersionRecord, location: bool) -> EntryResponse {
    EntryResponse {
        status: status_line(code),
        location: location.then(|| rec.versioned_ref()),
        etag: Some(etag(rec.version)),
        last_modified: Some(fhir_instant(rec.last_updated_us)),
        outcome: None,
    }
}
