//! The load generator: one hyper HTTP/1.1 connection per worker, keep-alive, one request at a
//! time per connection. Deliberately lean, because it shares the machine with the server.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::{self, SendRequest};
use hyper::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE, HOST, HeaderValue};
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use serde::Deserialize;
use tokio::net::TcpStream;
use tokio::task::JoinSet;

use crate::data::Bundle;
use crate::report::Latency;

const FHIR_JSON: &str = "application/fhir+json";

/// Where to send requests and how to authenticate.
#[derive(Clone)]
pub struct Target {
    pub addr: SocketAddr,
    host: HeaderValue,
    bearer: HeaderValue,
}

impl Target {
    pub fn new(addr: SocketAddr, token: &str) -> Result<Target> {
        Ok(Target {
            addr,
            host: HeaderValue::from_str(&addr.to_string())?,
            bearer: HeaderValue::from_str(&format!("Bearer {token}"))?,
        })
    }

    pub(crate) fn request(&self, method: Method, path: &str, body: Bytes) -> Result<Request<Full<Bytes>>> {
        let mut b = Request::builder()
            .method(method)
            .uri(path)
            .header(HOST, self.host.clone())
            .header(AUTHORIZATION, self.bearer.clone())
            .header(ACCEPT, FHIR_JSON);
        if !body.is_empty() {
            b = b.header(CONTENT_TYPE, FHIR_JSON);
        }
        Ok(b.body(Full::new(body))?)
    }
}

pub(crate) type Conn = SendRequest<Full<Bytes>>;

pub(crate) async fn connect(addr: SocketAddr) -> Result<Conn> {
    let stream = TcpStream::connect(addr).await.with_context(|| format!("cannot connect to {addr}"))?;
    stream.set_nodelay(true)?;
    let (sender, conn) = http1::handshake(TokioIo::new(stream)).await.context("HTTP/1.1 handshake failed")?;
    tokio::spawn(async move {
        // Ends when the worker drops its sender or the server closes; nothing to report.
        let _ = conn.await;
    });
    Ok(sender)
}

pub(crate) async fn send(conn: &mut Conn, req: Request<Full<Bytes>>) -> Result<(StatusCode, Bytes)> {
    conn.ready().await.context("connection closed")?;
    let resp = conn.send_request(req).await.context("request failed")?;
    let status = resp.status();
    let body = resp.into_body().collect().await.context("cannot read the response body")?.to_bytes();
    Ok((status, body))
}

pub(crate) fn snippet(body: &[u8]) -> String {
    String::from_utf8_lossy(&body[..body.len().min(400)]).into_owned()
}

/// POSTs one transaction bundle and insists on 200.
async fn post_bundle(conn: &mut Conn, target: &Target, bundle: &Bundle) -> Result<Bytes> {
    let req = target.request(Method::POST, "/fhir", bundle.body.clone())?;
    let (status, body) = send(conn, req).await?;
    if status != StatusCode::OK {
        bail!("bundle POST answered {status}: {}", snippet(&body));
    }
    Ok(body)
}

/// Loads the setup (Organization/Practitioner) bundles before timing starts.
pub async fn load_setup(target: &Target, bundles: &[Bundle]) -> Result<usize> {
    let mut conn = connect(target.addr).await?;
    let mut created = 0;
    for b in bundles {
        let body = post_bundle(&mut conn, target, b).await?;
        created += parse_response(&body, b.entries)?.len();
    }
    Ok(created)
}

/// Outcome of the timed ingest.
pub struct Ingest {
    pub bundles: usize,
    pub resources: usize,
    pub elapsed: Duration,
    /// Per-bundle round-trip latency.
    pub latency: Latency,
    /// `/fhir/Type/id` of every created resource, in bundle and entry order.
    pub paths: Vec<String>,
}

/// POSTs every bundle with `clients` concurrent connections; every answer must be 200 and
/// every entry created.
pub async fn ingest(target: &Target, bundles: Arc<Vec<Bundle>>, clients: usize) -> Result<Ingest> {
    let mut conns = Vec::with_capacity(clients);
    for _ in 0..clients {
        conns.push(connect(target.addr).await?);
    }
    let next = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let mut set = JoinSet::new();
    for mut conn in conns {
        let (target, bundles, next) = (target.clone(), Arc::clone(&bundles), Arc::clone(&next));
        set.spawn(async move {
            let mut done: Vec<(usize, Bytes)> = Vec::new();
            let mut lat = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(b) = bundles.get(i) else { break };
                let t0 = Instant::now();
                let body = post_bundle(&mut conn, &target, b).await.with_context(|| format!("bundle #{i}"))?;
                lat.push(micros(t0.elapsed()));
                done.push((i, body));
            }
            anyhow::Ok((done, lat))
        });
    }
    let mut responses = Vec::with_capacity(bundles.len());
    let mut lats = Vec::new();
    while let Some(r) = set.join_next().await {
        let (done, lat) = r.context("ingest worker panicked")??;
        responses.extend(done);
        lats.push(lat);
    }
    let elapsed = start.elapsed();
    // Bundle order, so `paths` lists the created resources in the order they were sent.
    responses.sort_unstable_by_key(|(i, _)| *i);

    // Parsing the answers happens after the clock stopped, to keep the client lean.
    let mut paths = Vec::new();
    for (i, body) in &responses {
        let b = &bundles[*i];
        paths.extend(parse_response(body, b.entries).with_context(|| format!("bundle #{i}"))?);
    }
    Ok(Ingest {
        bundles: responses.len(),
        resources: paths.len(),
        elapsed,
        latency: Latency::from_samples(lats),
        paths,
    })
}

#[derive(Deserialize)]
struct TxResponse {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    entry: Vec<TxEntry>,
}

#[derive(Deserialize)]
struct TxEntry {
    response: Option<TxStatus>,
}

#[derive(Deserialize)]
struct TxStatus {
    status: String,
    location: Option<String>,
}

/// Checks a transaction-response (every entry `201` with a location) and returns the read
/// paths of the created resources.
pub(crate) fn parse_response(body: &[u8], expected: usize) -> Result<Vec<String>> {
    let r: TxResponse = serde_json::from_slice(body).context("the answer is not a transaction-response")?;
    if r.kind != "transaction-response" {
        bail!("expected a transaction-response, got '{}'", r.kind);
    }
    if r.entry.len() != expected {
        bail!("{} entries sent, {} answered", expected, r.entry.len());
    }
    r.entry
        .iter()
        .map(|e| {
            let resp = e.response.as_ref().context("entry without response")?;
            if !resp.status.starts_with("201") {
                bail!("entry answered '{}', not 201", resp.status);
            }
            let loc = resp.location.as_deref().context("201 without location")?;
            read_path(loc).with_context(|| format!("unexpected location '{loc}'"))
        })
        .collect()
}

/// `Observation/<id>/_history/1` (relative or absolute) → `/fhir/Observation/<id>`.
fn read_path(location: &str) -> Option<String> {
    let without_version = location.split("/_history/").next()?;
    let mut parts = without_version.rsplit('/');
    let id = parts.next().filter(|s| !s.is_empty())?;
    let rtype = parts.next().filter(|s| !s.is_empty())?;
    Some(format!("/fhir/{rtype}/{id}"))
}

/// Outcome of the timed read phase.
pub struct Reads {
    pub requests: usize,
    pub elapsed: Duration,
    pub latency: Latency,
    pub bytes: u64,
}

/// Random single-resource GETs over `clients` keep-alive connections: `warmup` unrecorded,
/// then `measure` recorded. Every answer must be 200.
pub async fn reads(
    target: &Target,
    paths: Arc<Vec<String>>,
    clients: usize,
    warmup: Duration,
    measure: Duration,
) -> Result<Reads> {
    if paths.is_empty() {
        bail!("nothing to read");
    }
    let mut conns = Vec::with_capacity(clients);
    for _ in 0..clients {
        conns.push(connect(target.addr).await?);
    }
    let begin = Instant::now() + warmup;
    let end = begin + measure;
    let mut set = JoinSet::new();
    for (w, mut conn) in conns.into_iter().enumerate() {
        let (target, paths) = (target.clone(), Arc::clone(&paths));
        set.spawn(async move {
            let mut rng = XorShift::new(w as u64);
            let mut lat = Vec::with_capacity(1 << 16);
            let mut bytes = 0u64;
            loop {
                let path = &paths[rng.below(paths.len())];
                let req = target.request(Method::GET, path, Bytes::new())?;
                let t0 = Instant::now();
                let (status, body) = send(&mut conn, req).await?;
                let t1 = Instant::now();
                if status != StatusCode::OK {
                    bail!("GET {path} answered {status}: {}", snippet(&body));
                }
                if t1 >= end {
                    break;
                }
                if t0 >= begin {
                    lat.push(micros(t1 - t0));
                    bytes += body.len() as u64;
                }
            }
            anyhow::Ok((lat, bytes))
        });
    }
    let mut lats = Vec::new();
    let mut bytes = 0;
    while let Some(r) = set.join_next().await {
        let (lat, b) = r.context("read worker panicked")??;
        lats.push(lat);
        bytes += b;
    }
    let latency = Latency::from_samples(lats);
    Ok(Reads { requests: latency.count, elapsed: measure, latency, bytes })
}

pub(crate) fn micros(d: Duration) -> u32 {
    u32::try_from(d.as_micros()).unwrap_or(u32::MAX)
}

/// A small, fast, seedable generator: good enough to pick random ids.
pub struct XorShift(u64);

impl XorShift {
    pub fn new(seed: u64) -> Self {
        XorShift(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    pub fn below(&mut self, n: usize) -> usize {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        (x % n as u64) as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locations_become_read_paths() {
        assert_eq!(read_path("Observation/abc/_history/1").as_deref(), Some("/fhir/Observation/abc"));
        assert_eq!(read_path("http://h:1/fhir/Patient/x/_history/2").as_deref(), Some("/fhir/Patient/x"));
        assert_eq!(read_path("nonsense"), None);
    }
}
