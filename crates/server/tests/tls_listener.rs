//! Integration tests of the TLS policy (`mamori_server::tls`) and the accept loop
//! (`mamori_server::listener`): real sockets, real rustls clients, raw HTTP/1.1.

// Test helpers outside `#[test]` functions fail loudly by design.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::routing::get;
use axum::{Extension, Router};
use mamori_server::listener::{ConnInfo, ConnLimits, serve};
use mamori_server::tls::{MinTlsVersion, TlsError, TlsSettings, describe, generate_self_signed, server_config};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose,
};
use rustls::crypto::aws_lc_rs::cipher_suite as cs;
use rustls::crypto::{CryptoProvider, aws_lc_rs};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, RootCertStore, SupportedCipherSuite, SupportedProtocolVersion};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, oneshot};
use tokio::task::JoinHandle;
use tokio_rustls::TlsConnector;

// ---------------------------------------------------------------------------------------------
// Test PKI

struct Pki {
    dir: tempfile::TempDir,
    server_ca: CertificateDer<'static>,
    client_cert: CertificateDer<'static>,
    client_key: PrivateKeyDer<'static>,
    rogue_cert: CertificateDer<'static>,
    rogue_key: PrivateKeyDer<'static>,
}

fn ca(cn: &str) -> (CertificateDer<'static>, String, Issuer<'static, KeyPair>) {
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.distinguished_name.push(DnType::CommonName, cn);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    let cert = params.self_signed(&key).unwrap();
    let der = cert.der().clone();
    let pem = cert.pem();
    (der, pem, Issuer::new(params, key))
}

fn leaf(
    issuer: &Issuer<'_, KeyPair>,
    sans: &[&str],
    cn: &str,
    eku: ExtendedKeyUsagePurpose,
) -> (CertificateDer<'static>, String, KeyPair) {
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let mut params = CertificateParams::new(sans.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>()).unwrap();
    params.distinguished_name.push(DnType::CommonName, cn);
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![eku];
    let cert = params.signed_by(&key, issuer).unwrap();
    (cert.der().clone(), cert.pem(), key)
}

fn write_secret(path: &Path, contents: &str, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, contents).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

fn pki() -> Pki {
    let dir = tempfile::tempdir().unwrap();
    let (server_ca, _, server_issuer) = ca("mamori test server CA");
    let (_, server_pem, server_key) =
        leaf(&server_issuer, &["localhost", "127.0.0.1"], "localhost", ExtendedKeyUsagePurpose::ServerAuth);
    std::fs::write(dir.path().join("server.crt"), server_pem).unwrap();
    write_secret(&dir.path().join("server.key"), &server_key.serialize_pem(), 0o600);

    let (_, client_ca_pem, client_issuer) = ca("mamori test client CA");
    std::fs::write(dir.path().join("client-ca.crt"), client_ca_pem).unwrap();
    let (client_cert, _, client_key) = leaf(&client_issuer, &[], "doctor-1", ExtendedKeyUsagePurpose::ClientAuth);

    let (_, _, rogue_issuer) = ca("not the client CA");
    let (rogue_cert, _, rogue_key) = leaf(&rogue_issuer, &[], "intruder", ExtendedKeyUsagePurpose::ClientAuth);

    Pki {
        dir,
        server_ca,
        client_cert,
        client_key: PrivateKeyDer::Pkcs8(client_key.serialize_der().into()),
        rogue_cert,
        rogue_key: PrivateKeyDer::Pkcs8(rogue_key.serialize_der().into()),
    }
}

impl Pki {
    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn settings(&self, min_version: MinTlsVersion, client_ca: bool) -> TlsSettings {
        TlsSettings {
            cert_pem: self.path("server.crt"),
            key_pem: self.path("server.key"),
            min_version,
            client_ca_pem: client_ca.then(|| self.path("client-ca.crt")),
        }
    }

    fn server(&self, min_version: MinTlsVersion, client_ca: bool) -> Arc<rustls::ServerConfig> {
        server_config(&self.settings(min_version, client_ca)).unwrap()
    }

    fn roots(&self) -> RootCertStore {
        let mut roots = RootCertStore::empty();
        roots.add(self.server_ca.clone()).unwrap();
        roots
    }
}

// ---------------------------------------------------------------------------------------------
// Clients

static TLS13: &[&SupportedProtocolVersion] = &[&rustls::version::TLS13];
static TLS12: &[&SupportedProtocolVersion] = &[&rustls::version::TLS12];

fn client(
    pki: &Pki,
    versions: &[&'static SupportedProtocolVersion],
    suites: &[SupportedCipherSuite],
    auth: Option<(CertificateDer<'static>, PrivateKeyDer<'static>)>,
) -> TlsConnector {
    let provider = CryptoProvider { cipher_suites: suites.to_vec(), ..aws_lc_rs::default_provider() };
    let builder = ClientConfig::builder_with_provider(Arc::new(provider))
        .with_protocol_versions(versions)
        .unwrap()
        .with_root_certificates(pki.roots());
    let mut cfg = match auth {
        None => builder.with_no_client_auth(),
        Some((cert, key)) => builder.with_client_auth_cert(vec![cert], key).unwrap(),
    };
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    TlsConnector::from(Arc::new(cfg))
}

fn default13(pki: &Pki) -> TlsConnector {
    client(pki, TLS13, aws_lc_rs::DEFAULT_CIPHER_SUITES, None)
}

/// Reads until EOF; an error after some bytes arrived (e.g. a reset after the response) still
/// yields those bytes.
async fn read_all(mut r: impl AsyncRead + Unpin) -> io::Result<String> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        match r.read(&mut chunk).await {
            Ok(0) => break,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) if buf.is_empty() => return Err(e),
            Err(_) => break,
        }
    }
    Ok(String::from_utf8_lossy(&buf).into_owned())
}

fn request(path: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
}

/// One HTTPS request; `Err` if the handshake fails or the server closes without answering.
async fn https_get(addr: SocketAddr, connector: &TlsConnector, path: &str) -> io::Result<String> {
    let tcp = TcpStream::connect(addr).await?;
    let name = ServerName::try_from("localhost").unwrap();
    let mut tls = connector.connect(name, tcp).await?;
    tls.write_all(request(path).as_bytes()).await?;
    tls.flush().await?;
    let text = tokio::time::timeout(Duration::from_secs(10), read_all(tls))
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "no response"))??;
    if text.is_empty() {
        return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "empty response"));
    }
    Ok(text)
}

async fn http_get(addr: SocketAddr, path: &str) -> io::Result<String> {
    let mut tcp = TcpStream::connect(addr).await?;
    tcp.write_all(request(path).as_bytes()).await?;
    tokio::time::timeout(Duration::from_secs(10), read_all(tcp))
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "no response"))?
}

fn field<'a>(response: &'a str, name: &str) -> &'a str {
    let prefix = format!("{name}=");
    response
        .lines()
        .find_map(|l| l.strip_prefix(prefix.as_str()))
        .unwrap_or_else(|| panic!("no {name} in response:\n{response}"))
}

fn ok(response: &str) -> bool {
    response.starts_with("HTTP/1.1 200")
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

// ---------------------------------------------------------------------------------------------
// Server

async fn show(Extension(info): Extension<ConnInfo>) -> String {
    let tls = info.tls.as_deref();
    format!(
        "remote={}\nlocal={}\ntls_version={}\ncipher_suite={}\nalpn={}\npeer_cert={}\n",
        info.remote,
        info.local,
        tls.map_or("none", |t| t.version.as_str()),
        tls.map_or("none", |t| t.cipher_suite.as_str()),
        tls.and_then(|t| t.alpn.as_deref()).unwrap_or("none"),
        tls.and_then(|t| t.peer_cert_der.as_deref()).map_or_else(|| "none".to_owned(), hex),
    )
}

/// Signals that it started, then takes `SLOW` to answer.
async fn slow(Extension(started): Extension<Arc<Notify>>) -> &'static str {
    started.notify_one();
    tokio::time::sleep(SLOW).await;
    "slow done"
}

/// Never answers within a test's lifetime.
async fn stuck() -> &'static str {
    tokio::time::sleep(Duration::from_secs(3600)).await;
    "never"
}

const SLOW: Duration = Duration::from_millis(500);

struct Running {
    addr: SocketAddr,
    started: Arc<Notify>,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<io::Result<()>>,
}

impl Running {
    fn shutdown(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
    }
}

async fn start(tls: Option<Arc<rustls::ServerConfig>>, limits: ConnLimits) -> Running {
    let started = Arc::new(Notify::new());
    let app = Router::new()
        .route("/", get(show))
        .route("/slow", get(slow))
        .route("/stuck", get(stuck))
        .layer(Extension(Arc::clone(&started)));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = oneshot::channel::<()>();
    let task = tokio::spawn(serve(
        listener,
        tls,
        app,
        async move {
            let _ = rx.await;
        },
        limits,
    ));
    Running { addr, started, stop: Some(tx), task }
}

// ---------------------------------------------------------------------------------------------
// Protocol policy

#[tokio::test]
async fn tls13_handshake_reports_version_and_suite() {
    let pki = pki();
    let srv = start(Some(pki.server(MinTlsVersion::default(), false)), ConnLimits::default()).await;
    let res = https_get(srv.addr, &default13(&pki), "/").await.unwrap();
    assert!(ok(&res), "{res}");
    assert_eq!(field(&res, "tls_version"), "TLSv1_3");
    // Server order wins: AES-256-GCM although the client lists AES-128 too.
    assert_eq!(field(&res, "cipher_suite"), "TLS13_AES_256_GCM_SHA384");
    assert_eq!(field(&res, "alpn"), "http/1.1");
    assert_eq!(field(&res, "peer_cert"), "none");
    assert_eq!(field(&res, "local"), srv.addr.to_string());
    assert!(field(&res, "remote").starts_with("127.0.0.1:"));

    // A client that only offers AES-128-GCM gets it.
    let aes128 = client(&pki, TLS13, &[cs::TLS13_AES_128_GCM_SHA256], None);
    let res = https_get(srv.addr, &aes128, "/").await.unwrap();
    assert_eq!(field(&res, "cipher_suite"), "TLS13_AES_128_GCM_SHA256");
}

#[tokio::test]
async fn tls12_ecdhe_aes_gcm_accepted_only_when_min_is_12() {
    let pki = pki();
    let tls12_client = client(&pki, TLS12, &[cs::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256], None);

    let srv12 = start(Some(pki.server(MinTlsVersion::Tls12, false)), ConnLimits::default()).await;
    let res = https_get(srv12.addr, &tls12_client, "/").await.unwrap();
    assert!(ok(&res), "{res}");
    assert_eq!(field(&res, "tls_version"), "TLSv1_2");
    assert_eq!(field(&res, "cipher_suite"), "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256");
    // 1.3 still preferred when the client can do both.
    let both =
        client(&pki, &[&rustls::version::TLS13, &rustls::version::TLS12], aws_lc_rs::DEFAULT_CIPHER_SUITES, None);
    let res = https_get(srv12.addr, &both, "/").await.unwrap();
    assert_eq!(field(&res, "tls_version"), "TLSv1_3");

    let srv13 = start(Some(pki.server(MinTlsVersion::Tls13, false)), ConnLimits::default()).await;
    let err = https_get(srv13.addr, &tls12_client, "/").await;
    assert!(err.is_err(), "TLS 1.2 client must be refused: {err:?}");
    // The server is unaffected.
    assert!(ok(&https_get(srv13.addr, &default13(&pki), "/").await.unwrap()));
}

#[tokio::test]
async fn chacha20_only_clients_are_refused() {
    let pki = pki();
    let srv = start(Some(pki.server(MinTlsVersion::Tls12, false)), ConnLimits::default()).await;
    let chacha12 = client(&pki, TLS12, &[cs::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256], None);
    let err = https_get(srv.addr, &chacha12, "/").await;
    assert!(err.is_err(), "TLS 1.2 CHACHA20 must be refused: {err:?}");
    let chacha13 = client(&pki, TLS13, &[cs::TLS13_CHACHA20_POLY1305_SHA256], None);
    let err = https_get(srv.addr, &chacha13, "/").await;
    assert!(err.is_err(), "TLS 1.3 CHACHA20 must be refused: {err:?}");
    assert!(ok(&https_get(srv.addr, &default13(&pki), "/").await.unwrap()));
}

#[tokio::test]
async fn plain_http_on_tls_port_gets_no_http_response() {
    let pki = pki();
    let srv = start(Some(pki.server(MinTlsVersion::default(), false)), ConnLimits::default()).await;
    match http_get(srv.addr, "/").await {
        Ok(text) => assert!(!text.contains("HTTP/"), "got an HTTP answer: {text:?}"),
        Err(e) => assert_ne!(e.kind(), io::ErrorKind::TimedOut, "connection left hanging"),
    }
    let res = https_get(srv.addr, &default13(&pki), "/").await.unwrap();
    assert!(ok(&res), "{res}");
}

#[tokio::test]
async fn stalled_handshake_is_cut_and_server_keeps_serving() {
    let pki = pki();
    let limits = ConnLimits { handshake_timeout: Duration::from_millis(200), ..ConnLimits::default() };
    let srv = start(Some(pki.server(MinTlsVersion::default(), false)), limits).await;
    let silent = TcpStream::connect(srv.addr).await.unwrap();
    let t0 = Instant::now();
    let text = tokio::time::timeout(Duration::from_secs(5), read_all(silent))
        .await
        .expect("silent connection must be closed by the server");
    assert!(text.map_or(true, |t| t.is_empty()));
    assert!(t0.elapsed() >= Duration::from_millis(150));
    assert!(ok(&https_get(srv.addr, &default13(&pki), "/").await.unwrap()));
}

#[tokio::test]
async fn connection_without_a_request_is_closed_after_handshake_timeout() {
    let pki = pki();
    let limits = ConnLimits { handshake_timeout: Duration::from_millis(300), ..ConnLimits::default() };
    let srv = start(Some(pki.server(MinTlsVersion::default(), false)), limits).await;
    let tcp = TcpStream::connect(srv.addr).await.unwrap();
    let tls = default13(&pki).connect(ServerName::try_from("localhost").unwrap(), tcp).await.unwrap();
    let res = tokio::time::timeout(Duration::from_secs(5), read_all(tls))
        .await
        .expect("idle TLS connection must be closed by the server");
    assert!(res.map_or(true, |t| t.is_empty()));
}

// ---------------------------------------------------------------------------------------------
// Mutual TLS

#[tokio::test]
async fn client_certificate_is_exposed_to_handlers() {
    let pki = pki();
    let srv = start(Some(pki.server(MinTlsVersion::default(), true)), ConnLimits::default()).await;

    let with_cert = client(
        &pki,
        TLS13,
        aws_lc_rs::DEFAULT_CIPHER_SUITES,
        Some((pki.client_cert.clone(), pki.client_key.clone_key())),
    );
    let res = https_get(srv.addr, &with_cert, "/").await.unwrap();
    assert!(ok(&res), "{res}");
    assert_eq!(field(&res, "peer_cert"), hex(pki.client_cert.as_ref()));

    // No certificate: still served, handler sees none.
    let res = https_get(srv.addr, &default13(&pki), "/").await.unwrap();
    assert!(ok(&res), "{res}");
    assert_eq!(field(&res, "peer_cert"), "none");

    // A certificate from another CA is rejected (TLS 1.3: after the client's Finished, so the
    // failure shows up when reading).
    let rogue = client(
        &pki,
        TLS13,
        aws_lc_rs::DEFAULT_CIPHER_SUITES,
        Some((pki.rogue_cert.clone(), pki.rogue_key.clone_key())),
    );
    if let Ok(text) = https_get(srv.addr, &rogue, "/").await {
        assert!(!text.contains("HTTP/1.1 200"), "rogue cert accepted: {text}");
    }
    assert!(ok(&https_get(srv.addr, &default13(&pki), "/").await.unwrap()));
}

#[tokio::test]
async fn without_client_ca_no_certificate_is_requested() {
    let pki = pki();
    let srv = start(Some(pki.server(MinTlsVersion::default(), false)), ConnLimits::default()).await;
    let with_cert = client(
        &pki,
        TLS13,
        aws_lc_rs::DEFAULT_CIPHER_SUITES,
        Some((pki.client_cert.clone(), pki.client_key.clone_key())),
    );
    let res = https_get(srv.addr, &with_cert, "/").await.unwrap();
    assert_eq!(field(&res, "peer_cert"), "none");
}

// ---------------------------------------------------------------------------------------------
// Configuration

#[test]
fn key_readable_by_others_is_refused_with_its_path() {
    use std::os::unix::fs::PermissionsExt;
    let pki = pki();
    let key = pki.path("server.key");
    for mode in [0o644, 0o640, 0o604, 0o660] {
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(mode)).unwrap();
        let err = server_config(&pki.settings(MinTlsVersion::default(), false)).unwrap_err();
        assert!(matches!(err, TlsError::KeyPermissions { .. }), "{err:?}");
        let msg = err.to_string();
        assert!(msg.contains(&key.display().to_string()), "{msg}");
        assert!(msg.contains("chmod 600"), "{msg}");
        assert!(!msg.contains("PRIVATE KEY"), "{msg}");
    }
    for mode in [0o600, 0o400] {
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(mode)).unwrap();
        server_config(&pki.settings(MinTlsVersion::default(), false)).unwrap();
    }
}

#[test]
fn bad_files_are_reported_by_path_without_contents() {
    let pki = pki();
    let mut s = pki.settings(MinTlsVersion::default(), false);

    s.cert_pem = pki.path("missing.crt");
    let msg = server_config(&s).unwrap_err().to_string();
    assert!(msg.contains("missing.crt"), "{msg}");

    // A key file whose base64 is corrupt: the message must not echo the file.
    let bad_key = pki.path("bad.key");
    write_secret(&bad_key, "-----BEGIN PRIVATE KEY-----\nc2VjcmV0LXNlY3JldA@@@\n-----END PRIVATE KEY-----\n", 0o600);
    let s = TlsSettings { key_pem: bad_key.clone(), ..pki.settings(MinTlsVersion::default(), false) };
    let msg = server_config(&s).unwrap_err().to_string();
    assert!(msg.contains("bad.key"), "{msg}");
    assert!(!msg.contains("c2VjcmV0"), "{msg}");

    // A certificate file given as the key: no key found.
    let not_a_key = pki.path("not-a-key.pem");
    write_secret(&not_a_key, &std::fs::read_to_string(pki.path("server.crt")).unwrap(), 0o600);
    let s = TlsSettings { key_pem: not_a_key, ..pki.settings(MinTlsVersion::default(), false) };
    let msg = server_config(&s).unwrap_err().to_string();
    assert!(msg.contains("not-a-key.pem") && msg.contains("PRIVATE KEY"), "{msg}");

    // Key that does not match the certificate.
    let other = generate_self_signed(&["localhost".to_owned()], time::OffsetDateTime::UNIX_EPOCH).unwrap();
    let other_key = pki.path("other.key");
    write_secret(&other_key, &other.key_pem, 0o600);
    let s = TlsSettings { key_pem: other_key, ..pki.settings(MinTlsVersion::default(), false) };
    let err = server_config(&s).unwrap_err();
    assert!(matches!(err, TlsError::Config { .. }), "{err:?}");
}

#[test]
fn min_version_parsing() {
    assert_eq!(MinTlsVersion::parse("1.2").unwrap(), MinTlsVersion::Tls12);
    assert_eq!(MinTlsVersion::parse("1.3").unwrap(), MinTlsVersion::Tls13);
    assert_eq!(MinTlsVersion::parse(" TLSv1.3 ").unwrap(), MinTlsVersion::Tls13);
    assert_eq!(MinTlsVersion::parse("tls1.2").unwrap(), MinTlsVersion::Tls12);
    assert_eq!(MinTlsVersion::default(), MinTlsVersion::Tls13);
    for bad in ["1.1", "1.0", "", "2", "SSLv3"] {
        assert!(matches!(MinTlsVersion::parse(bad), Err(TlsError::BadMinVersion(_))), "{bad:?}");
    }
}

#[tokio::test]
async fn self_signed_certificate_serves_and_describe_lists_policy() {
    let dir = tempfile::tempdir().unwrap();
    // The client below checks validity against the real clock.
    #[allow(clippy::disallowed_methods)]
    let not_before = time::OffsetDateTime::now_utc() - time::Duration::hours(1);
    let ss = generate_self_signed(&["localhost".to_owned(), "127.0.0.1".to_owned()], not_before).unwrap();
    assert!(!format!("{ss:?}").contains("PRIVATE KEY"));
    assert!(generate_self_signed(&[], not_before).is_err());
    std::fs::write(dir.path().join("c.pem"), &ss.cert_pem).unwrap();
    write_secret(&dir.path().join("k.pem"), &ss.key_pem, 0o600);
    let mut settings = TlsSettings {
        cert_pem: dir.path().join("c.pem"),
        key_pem: dir.path().join("k.pem"),
        min_version: MinTlsVersion::Tls13,
        client_ca_pem: None,
    };

    let cfg13 = server_config(&settings).unwrap();
    let d = describe(&cfg13);
    assert!(d.starts_with("TLS 1.3;"), "{d}");
    assert!(!d.contains("1.2") && !d.contains("ECDHE"), "{d}");
    assert!(d.contains("TLS13_AES_256_GCM_SHA384, TLS13_AES_128_GCM_SHA256"), "{d}");
    assert!(d.contains("X25519") && d.contains("secp256r1"), "{d}");
    assert!(d.contains("ALPN h2, http/1.1"), "{d}");
    assert!(!d.contains("CHACHA"), "{d}");

    settings.min_version = MinTlsVersion::Tls12;
    let cfg12 = server_config(&settings).unwrap();
    let d = describe(&cfg12);
    assert!(d.starts_with("TLS 1.3, TLS 1.2;"), "{d}");
    assert!(d.contains("TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256"), "{d}");
    assert!(d.contains("TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384"), "{d}");
    assert!(!d.contains("CHACHA") && !d.contains("CBC"), "{d}");

    // The generated certificate verifies for its SAN.
    let mut roots = RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(ss.cert_pem.as_bytes()) {
        roots.add(c.unwrap()).unwrap();
    }
    let cfg = ClientConfig::builder_with_provider(Arc::new(aws_lc_rs::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let srv = start(Some(cfg13), ConnLimits::default()).await;
    let res = https_get(srv.addr, &TlsConnector::from(Arc::new(cfg)), "/").await.unwrap();
    assert!(ok(&res), "{res}");
}

// ---------------------------------------------------------------------------------------------
// Accept loop

#[tokio::test]
async fn plain_tcp_has_no_tls_info() {
    let srv = start(None, ConnLimits::default()).await;
    let res = http_get(srv.addr, "/").await.unwrap();
    assert!(ok(&res), "{res}");
    assert_eq!(field(&res, "tls_version"), "none");
}

#[tokio::test]
async fn keep_alive_serves_several_requests_on_one_connection() {
    let pki = pki();
    let srv = start(Some(pki.server(MinTlsVersion::default(), false)), ConnLimits::default()).await;
    let tcp = TcpStream::connect(srv.addr).await.unwrap();
    let mut tls = default13(&pki).connect(ServerName::try_from("localhost").unwrap(), tcp).await.unwrap();
    let keep = "GET / HTTP/1.1\r\nHost: localhost\r\n\r\n";
    tls.write_all(format!("{keep}{keep}{}", request("/")).as_bytes()).await.unwrap();
    let text = tokio::time::timeout(Duration::from_secs(5), read_all(tls)).await.unwrap().unwrap();
    assert_eq!(text.matches("HTTP/1.1 200").count(), 3, "{text}");
}

#[tokio::test]
async fn graceful_shutdown_finishes_in_flight_and_refuses_new() {
    let pki = pki();
    let mut srv = start(Some(pki.server(MinTlsVersion::default(), false)), ConnLimits::default()).await;
    let addr = srv.addr;
    let connector = default13(&pki);
    let started = srv.started.notified();
    let in_flight = tokio::spawn({
        let connector = connector.clone();
        async move { https_get(addr, &connector, "/slow").await }
    });
    tokio::time::timeout(Duration::from_secs(5), started).await.unwrap();
    let t0 = Instant::now();
    srv.shutdown();

    // New connections are refused once the loop has seen the signal.
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        if TcpStream::connect(addr).await.is_err() {
            break;
        }
        assert!(Instant::now() < deadline, "still accepting after shutdown");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    let res = in_flight.await.unwrap().unwrap();
    assert!(ok(&res) && res.ends_with("slow done"), "{res}");
    tokio::time::timeout(Duration::from_secs(5), &mut srv.task).await.unwrap().unwrap().unwrap();
    assert!(t0.elapsed() < Duration::from_secs(5));
}

#[tokio::test]
async fn drain_timeout_cuts_stuck_connections() {
    let limits = ConnLimits { drain_timeout: Duration::from_millis(300), ..ConnLimits::default() };
    let mut srv = start(None, limits).await;
    let addr = srv.addr;
    let stuck = tokio::spawn(async move { http_get(addr, "/stuck").await });
    // Let the request reach the handler.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let t0 = Instant::now();
    srv.shutdown();
    tokio::time::timeout(Duration::from_secs(5), &mut srv.task)
        .await
        .expect("serve must return after the drain timeout")
        .unwrap()
        .unwrap();
    assert!(t0.elapsed() >= Duration::from_millis(250));
    // The client sees its connection closed without an answer.
    let res = tokio::time::timeout(Duration::from_secs(5), stuck).await.unwrap().unwrap();
    assert!(res.map_or(true, |t| !t.contains("HTTP/1.1 200")));
}

#[tokio::test]
async fn max_connections_makes_extra_connections_wait() {
    let limits = ConnLimits { max_connections: 1, ..ConnLimits::default() };
    let srv = start(None, limits).await;
    let addr = srv.addr;
    let started = srv.started.notified();
    let first = tokio::spawn(async move { http_get(addr, "/slow").await });
    tokio::time::timeout(Duration::from_secs(5), started).await.unwrap();
    let slow_started = Instant::now();
    // The second connection is queued in the backlog until the first one ends, which is no
    // sooner than SLOW after its handler started (unlimited, it would be answered at once).
    let second = http_get(addr, "/").await;
    let waited = slow_started.elapsed();
    let first = first.await.unwrap();
    assert!(ok(&first.unwrap()));
    assert!(ok(&second.unwrap()));
    assert!(
        waited >= SLOW - Duration::from_millis(50),
        "second connection served after {waited:?} while the only slot was taken"
    );
}
