//! AUD-5: the audit trail is forwarded to an external audit repository as RFC 5424 syslog over
//! TLS (RFC 5425). A local collector (tokio-rustls, certificates from rcgen, mutual TLS) parses
//! the octet-counted frames independently of mamori's formatter; it goes down and comes back
//! while the real server keeps serving, and every audit entry arrives exactly once, in order,
//! with the fields of its database row.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mamori_audit::AuditEntry;
use mamori_store::audit_log::AuditLogReader;
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serde_json::json;
use support::*;
use tokio::io::AsyncReadExt;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// One message as the collector understood it.
#[derive(Clone, Debug)]
struct Received {
    pri: u16,
    timestamp: String,
    hostname: String,
    app_name: String,
    msgid: String,
    /// SD-ID → params in order (escapes undone).
    sd: BTreeMap<String, Vec<(String, String)>>,
    msg: String,
    /// Which TLS connection (1, 2, …) carried it.
    connection: usize,
}

impl Received {
    fn params(&self) -> &[(String, String)] {
        &self.sd["mamori@32473"]
    }
    fn one(&self, name: &str) -> Option<String> {
        let mut it = self.params().iter().filter(|(k, _)| k == name);
        let v = it.next().map(|(_, v)| v.clone());
        assert!(it.next().is_none(), "{name} repeated");
        v
    }
    fn seq(&self) -> u64 {
        self.one("seq").unwrap().parse().unwrap()
    }
}

/// Parses one SYSLOG-MSG (RFC 5424 §6): header, structured data, MSG.
fn parse_syslog(m: &str, connection: usize) -> Received {
    let (pri, rest) = m.strip_prefix('<').unwrap().split_once(">1 ").unwrap();
    let mut f = rest.splitn(6, ' ');
    let mut next = || f.next().unwrap().to_string();
    let (timestamp, hostname, app_name, _procid, msgid) = (next(), next(), next(), next(), next());
    let rest = next();
    let mut sd = BTreeMap::new();
    let mut chars = rest.chars().peekable();
    while chars.peek() == Some(&'[') {
        chars.next();
        let id: String = std::iter::from_fn(|| chars.next_if(|c| *c != ' ' && *c != ']')).collect();
        let mut params = Vec::new();
        while chars.next() == Some(' ') {
            let name: String = std::iter::from_fn(|| chars.next_if(|c| *c != '=')).collect();
            assert_eq!(chars.next(), Some('='));
            assert_eq!(chars.next(), Some('"'));
            let mut value = String::new();
            loop {
                match chars.next().unwrap() {
                    '\\' => value.push(chars.next().unwrap()),
                    '"' => break,
                    c => value.push(c),
                }
            }
            params.push((name, value));
        }
        sd.insert(id, params);
    }
    let msg: String = chars.collect();
    let msg = msg.strip_prefix(" \u{feff}").expect("MSG is UTF-8 with a BOM").to_string();
    Received { pri: pri.parse().unwrap(), timestamp, hostname, app_name, msgid, sd, msg, connection }
}

/// Certificates for the collector (server) and for mamori (client), from one test CA.
struct Pki {
    collector: Arc<rustls::ServerConfig>,
}

fn pki(data: &Path) -> Pki {
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.distinguished_name.push(DnType::CommonName, "test audit CA");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::DigitalSignature];
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
    let leaf = |name: &str, eku: ExtendedKeyUsagePurpose| {
        let key = KeyPair::generate().unwrap();
        let mut p = CertificateParams::new(vec![name.to_string()]).unwrap();
        p.distinguished_name.push(DnType::CommonName, name);
        p.extended_key_usages = vec![eku];
        (p.signed_by(&key, &ca).unwrap().pem(), key.serialize_pem())
    };
    let (server_cert, server_key) = leaf("localhost", ExtendedKeyUsagePurpose::ServerAuth);
    let (client_cert, client_key) = leaf("emr-test.clinic", ExtendedKeyUsagePurpose::ClientAuth);
    let tls = data.join("tls");
    std::fs::write(tls.join("syslog-ca.pem"), ca.pem()).unwrap();
    std::fs::write(tls.join("syslog-client.pem"), client_cert).unwrap();
    let key_path = tls.join("syslog-client.key");
    std::fs::write(&key_path, client_key).unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&key_path, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    // The collector only talks to clients with a certificate from the CA (mutual TLS).
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.der().clone()).unwrap();
    let verifier = rustls::server::WebPkiClientVerifier::builder(Arc::new(roots)).build().unwrap();
    let chain = vec![CertificateDer::from_pem_slice(server_cert.as_bytes()).unwrap()];
    let key = PrivateKeyDer::from_pem_slice(server_key.as_bytes()).unwrap();
    let collector =
        rustls::ServerConfig::builder().with_client_cert_verifier(verifier).with_single_cert(chain, key).unwrap();
    Pki { collector: Arc::new(collector) }
}

/// A syslog-over-TLS collector: octet-counted frames (RFC 5425 §4.3), every message kept.
struct Collector {
    port: u16,
    received: Arc<Mutex<Vec<Received>>>,
    connections: Arc<Mutex<usize>>,
    tasks: Arc<Mutex<Vec<JoinHandle<()>>>>,
}

impl Collector {
    async fn start(port: u16, tls: Arc<rustls::ServerConfig>, previous: Option<&Collector>) -> Collector {
        let listener = TcpListener::bind(("127.0.0.1", port)).await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let received = previous.map(|p| Arc::clone(&p.received)).unwrap_or_default();
        let connections = previous.map(|p| Arc::clone(&p.connections)).unwrap_or_default();
        let tasks: Arc<Mutex<Vec<JoinHandle<()>>>> = Arc::default();
        let acceptor = tokio_rustls::TlsAcceptor::from(tls);
        let (rx, cx, tx) = (Arc::clone(&received), Arc::clone(&connections), Arc::clone(&tasks));
        let accept = tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else { return };
                let (acceptor, received) = (acceptor.clone(), Arc::clone(&rx));
                let n = {
                    let mut c = cx.lock().unwrap();
                    *c += 1;
                    *c
                };
                tx.lock().unwrap().push(tokio::spawn(async move {
                    let Ok(mut tls) = acceptor.accept(tcp).await else { return };
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 16384];
                    loop {
                        match tls.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(k) => buf.extend_from_slice(&chunk[..k]),
                        }
                        // Every complete frame: MSG-LEN SP SYSLOG-MSG.
                        while let Some(sp) = buf.iter().position(|b| *b == b' ') {
                            let len: usize = std::str::from_utf8(&buf[..sp]).unwrap().parse().unwrap();
                            if buf.len() < sp + 1 + len {
                                break;
                            }
                            let msg = std::str::from_utf8(&buf[sp + 1..sp + 1 + len]).unwrap().to_string();
                            received.lock().unwrap().push(parse_syslog(&msg, n));
                            buf.drain(..sp + 1 + len);
                        }
                    }
                }));
            }
        });
        tasks.lock().unwrap().push(accept);
        Collector { port, received, connections, tasks }
    }

    /// The outage: the listener and every connection close.
    async fn stop(&self) {
        for t in self.tasks.lock().unwrap().drain(..) {
            t.abort();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    fn seqs(&self) -> Vec<u64> {
        self.received.lock().unwrap().iter().map(Received::seq).collect()
    }
}

fn last_seq(dir: &DataDir) -> u64 {
    dir.audit_i64("SELECT COALESCE(max(seq), 0) FROM audit_event") as u64
}

async fn until(what: &str, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < Duration::from_secs(60), "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn configure_forwarding(dir: &DataDir, port: u16, extra: &str) {
    let path = dir.path.join("mamori.toml");
    let mut cfg = std::fs::read_to_string(&path).unwrap();
    cfg.push_str(&format!(
        "\n[audit.syslog]\naddress = \"127.0.0.1:{port}\"\nserver_name = \"localhost\"\n\
         ca_file = \"tls/syslog-ca.pem\"\ncert_file = \"tls/syslog-client.pem\"\nkey_file = \"tls/syslog-client.key\"\n\
         hostname = \"emr-test\"\nack_timeout = \"2s\"\nmax_retry_interval = \"1s\"\n{extra}"
    ));
    std::fs::write(path, cfg).unwrap();
}

async fn some_traffic(s: &Server, n: usize) {
    for i in 0..n {
        let (code, p) =
            json(s.post_json("Patient", &json!({"resourceType": "Patient", "gender": "female"})).send().await.unwrap())
                .await;
        assert_eq!(code, 201, "{p}");
        let id = p["id"].as_str().unwrap();
        assert_eq!(s.get(&format!("Patient/{id}")).send().await.unwrap().status(), 200);
        // A refusal and a failed login are forwarded too.
        assert_eq!(s.get(&format!("Patient/missing-{i}")).send().await.unwrap().status(), 404);
        let anonymous = s.http.get(s.url("Patient")).bearer_auth("not-a-token").send().await.unwrap();
        assert_eq!(anonymous.status(), 401);
    }
}

async fn status(s: &Server, token: &str) -> serde_json::Value {
    let url = format!("{}/admin/status", s.base.trim_end_matches("/fhir"));
    let (code, body) = json(s.http.get(url).bearer_auth(token).send().await.unwrap()).await;
    assert_eq!(code, 200, "{body}");
    body["forwarding"]["syslog"].clone()
}

/// Compares every received message with its database row.
fn assert_matches_rows(got: &[Received], rows: &[AuditEntry]) {
    assert_eq!(got.len(), rows.len());
    for (m, e) in got.iter().zip(rows) {
        assert_eq!(m.seq(), e.seq);
        let ctx = format!("seq {}: {m:?}", e.seq);
        assert_eq!(m.one("requestId").as_ref(), Some(&e.request_id), "{ctx}");
        assert_eq!(m.one("actor"), e.actor, "{ctx}");
        assert_eq!(m.one("role"), e.role, "{ctx}");
        assert_eq!(m.one("source").as_ref(), Some(&e.source), "{ctx}");
        assert_eq!(m.one("action").as_ref(), Some(&e.action), "{ctx}");
        assert_eq!(m.msgid, e.action, "{ctx}");
        assert_eq!(m.one("type"), e.rtype, "{ctx}");
        assert_eq!(m.one("id"), e.rid, "{ctx}");
        assert_eq!(m.one("version"), e.version.map(|v| v.to_string()), "{ctx}");
        let patients: Vec<String> = m.params().iter().filter(|(k, _)| k == "patient").map(|(_, v)| v.clone()).collect();
        assert_eq!(patients, e.patients, "{ctx}");
        assert_eq!(m.one("outcome"), Some(e.outcome.to_string()), "{ctx}");
        assert_eq!(m.one("detail"), e.detail, "{ctx}");
        let t = time::OffsetDateTime::parse(&m.timestamp, &time::format_description::well_known::Rfc3339).unwrap();
        assert_eq!(t.unix_timestamp_nanos() / 1000, i128::from(e.recorded_us), "{ctx}");
        assert_eq!(m.pri / 8, 10, "facility authpriv: {ctx}");
        let severity = m.pri % 8;
        match e.outcome {
            401 | 403 => assert_eq!(severity, 4, "{ctx}"),
            0..=399 => assert_eq!(severity, 6, "{ctx}"),
            _ => {}
        }
        assert_eq!((m.hostname.as_str(), m.app_name.as_str()), ("emr-test", "mamori"));
        assert_eq!(m.sd["meta"], vec![("sequenceId".to_string(), e.seq.to_string())]);
        assert!(m.msg.contains(&e.action) && m.msg.ends_with(&format!("-> {}", e.outcome)), "{ctx}");
    }
}

fn rows(dir: &DataDir) -> Vec<AuditEntry> {
    let mut out = Vec::new();
    AuditLogReader::open(&dir.audit_db()).unwrap().for_each_entry(|e| out.push(e)).unwrap();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aud5_syslog_forwarder_delivers_every_entry_exactly_once_across_a_collector_outage() {
    let dir = DataDir::init();
    let token = dir.user_with_token("dr.test", "physician");
    let auditor = dir.user_with_token("audit.a", "auditor");
    let pki = pki(&dir.path);
    let collector = Collector::start(0, Arc::clone(&pki.collector), None).await;
    configure_forwarding(&dir, collector.port, "");
    let s = Server::start_in(dir, token);

    // 1. Connected: the entries of init/user/token and of this traffic arrive.
    some_traffic(&s, 3).await;
    let target = last_seq(&s.dir);
    until("the first entries at the collector", || collector.seqs().last() >= Some(&target)).await;
    assert_eq!(*collector.connections.lock().unwrap(), 1);

    // 2. The collector goes away. mamori keeps serving; entries wait in the trail.
    collector.stop().await;
    let down_since = last_seq(&s.dir);
    some_traffic(&s, 4).await;
    let st = status(&s, &auditor).await;
    assert_eq!(st["configured"], true, "{st}");
    assert!(st["backlog"].as_u64().unwrap() > 0, "{st}");
    tokio::time::sleep(Duration::from_millis(2500)).await; // several failed reconnections
    let st = status(&s, &auditor).await;
    assert_eq!(st["connected"], false, "{st}");
    assert!(st["delivered_seq"].as_u64().unwrap() <= down_since, "{st}");
    assert!(st["last_error"].as_str().is_some(), "{st}");
    assert!(collector.seqs().iter().all(|s| *s <= down_since), "nothing arrives while the collector is down");

    // 3. The collector comes back on the same port: the backlog, then new entries.
    let collector = Collector::start(collector.port, Arc::clone(&pki.collector), Some(&collector)).await;
    some_traffic(&s, 2).await;
    let target = last_seq(&s.dir);
    until("the backlog at the collector", || collector.seqs().last() >= Some(&target)).await;
    // The cursor follows the collector's TCP acknowledgements, not a timer (that would take
    // 2 × ack_timeout = 4 s).
    let arrived = Instant::now();
    let cursor_file = s.dir.path.join("audit/syslog.cursor");
    until("the cursor", || {
        let text = std::fs::read_to_string(&cursor_file).unwrap_or_default();
        text.split_whitespace().last().and_then(|n| n.parse::<u64>().ok()) >= Some(target)
    })
    .await;
    assert!(arrived.elapsed() < Duration::from_millis(1500), "{:?}", arrived.elapsed());
    let st = status(&s, &auditor).await;
    assert_eq!(st["connected"], true, "{st}");

    // 4. Shutdown forwards the last entries (the status reads above, the stop itself).
    let dir = s.stop();
    let all = rows(&dir);
    let want: Vec<u64> = (1..=all.len() as u64).collect();
    assert_eq!(collector.seqs(), want, "every entry exactly once, in order");
    assert_matches_rows(&collector.received.lock().unwrap(), &all);
    let conns: Vec<usize> = collector.received.lock().unwrap().iter().map(|m| m.connection).collect();
    assert!(conns.windows(2).all(|w| w[0] <= w[1]) && *conns.last().unwrap() >= 2, "{conns:?}");
    let cursor = std::fs::read_to_string(dir.path.join("audit/syslog.cursor")).unwrap();
    assert!(cursor.trim().ends_with(&format!(" {}", all.len())), "{cursor}");

    // 5. A restart resumes from the cursor: nothing is sent twice.
    let token = dir.token("dr.test");
    let s = Server::start_in(dir, token);
    some_traffic(&s, 1).await;
    let dir = s.stop();
    let all = rows(&dir);
    let want: Vec<u64> = (1..=all.len() as u64).collect();
    assert_eq!(collector.seqs(), want, "still exactly once after a restart");
    assert_matches_rows(&collector.received.lock().unwrap(), &all);
    // `mamori check` reports how far forwarding got (its own entry waits for the next start).
    let out = ok(&["check", "--data-dir", dir.arg()]);
    let n = all.len();
    assert!(out.contains(&format!("delivered through seq {n} of {} (1 waiting)", n + 1)), "{out}");
    collector.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aud5_syslog_misconfiguration_stops_serve_with_a_clear_message() {
    let dir = DataDir::init();
    let _ = pki(&dir.path);
    let cfg_path = dir.path.join("mamori.toml");
    let original = std::fs::read_to_string(&cfg_path).unwrap();
    let cases = [
        ("colour = \"blue\"", "unknown field"),
        ("cursor_file = 12", "cursor_file"),
        ("facility = \"kern\"", "facility"),
    ];
    for (extra, expect) in cases {
        std::fs::write(&cfg_path, &original).unwrap();
        configure_forwarding(&dir, 6514, extra);
        let (code, _, err) = mamori(&["serve", "--data-dir", dir.arg(), "--listen", "127.0.0.1:0", "--dev"]);
        assert_ne!(code, 0, "{extra}");
        assert!(err.contains(expect), "{extra}: {err}");
    }
    // Files that are missing, or a key others can read, are named; the key is never printed.
    std::fs::write(&cfg_path, &original).unwrap();
    configure_forwarding(&dir, 6514, "");
    let text = std::fs::read_to_string(&cfg_path).unwrap();
    std::fs::write(&cfg_path, text.replace("tls/syslog-ca.pem", "tls/nope.pem")).unwrap();
    let (code, _, err) = mamori(&["serve", "--data-dir", dir.arg(), "--listen", "127.0.0.1:0", "--dev"]);
    assert_ne!(code, 0);
    assert!(err.contains("nope.pem") && err.contains("audit.syslog"), "{err}");
    std::fs::write(&cfg_path, text.clone()).unwrap();
    let key = dir.path.join("tls/syslog-client.key");
    let key_text = std::fs::read_to_string(&key).unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    }
    let (code, _, err) = mamori(&["serve", "--data-dir", dir.arg(), "--listen", "127.0.0.1:0", "--dev"]);
    assert_ne!(code, 0);
    assert!(err.contains("syslog-client.key") && err.contains("chmod 600"), "{err}");
    let body = key_text.lines().nth(1).unwrap();
    assert!(!err.contains(body), "no key material in errors");
    // A cursor beyond the trail (a file from another installation) is refused, not trusted.
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    std::fs::create_dir_all(dir.path.join("audit")).unwrap();
    std::fs::write(dir.path.join("audit/syslog.cursor"), "mamori-syslog-cursor/1 delivered-through-seq 999999\n")
        .unwrap();
    let (code, _, err) = mamori(&["serve", "--data-dir", dir.arg(), "--listen", "127.0.0.1:0", "--dev"]);
    assert_ne!(code, 0);
    assert!(err.contains("999999") && err.contains("trail ends at seq"), "{err}");
}

/// Measurement, not a check: how fast a backlog drains to a local collector after an outage.
/// `cargo test --release -p mamori --test audit_forwarding -- --ignored --nocapture`
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore]
async fn measure_backlog_drain() {
    let dir = DataDir::init();
    let token = dir.user_with_token("dr.test", "physician");
    let pki = pki(&dir.path);
    let collector = Collector::start(0, Arc::clone(&pki.collector), None).await;
    let port = collector.port;
    collector.stop().await;
    configure_forwarding(&dir, port, "");
    let s = Arc::new(Server::start_in(dir, token));
    let n: usize = std::env::var("ENTRIES").ok().and_then(|v| v.parse().ok()).unwrap_or(20_000);
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let s = Arc::clone(&s);
        tasks.push(tokio::spawn(async move {
            for _ in 0..n / 8 {
                assert_eq!(s.get("Patient/missing").send().await.unwrap().status(), 404);
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let target = last_seq(&s.dir);
    let collector = Collector::start(port, Arc::clone(&pki.collector), Some(&collector)).await;
    // From the first message (the reconnection back-off is not part of the drain).
    until("the first message", || !collector.received.lock().unwrap().is_empty()).await;
    let started = Instant::now();
    until("the backlog", || collector.seqs().len() as u64 >= target).await;
    let took = started.elapsed();
    println!("drained {target} entries in {took:?}: {:.0} entries/s", target as f64 / took.as_secs_f64());
    assert_eq!(collector.seqs(), (1..=target).collect::<Vec<_>>());
}
