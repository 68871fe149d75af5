//! TLS configuration for the HTTPS listener (MHLW guideline, ENC-3).
//!
//! The policy is fixed in code rather than left to configuration so that it cannot be weakened
//! by accident:
//!
//! * TLS 1.3 only by default; TLS 1.2 only when explicitly asked for (`min_version = "1.2"`).
//! * Cipher suites limited to AEAD AES-GCM (CRYPTREC "high security" list); under TLS 1.2 only
//!   the ECDHE key exchanges, so every session has forward secrecy. CHACHA20-POLY1305, CBC and
//!   static-RSA suites are never offered.
//! * Key exchange groups: X25519MLKEM768 (hybrid post-quantum), X25519, secp256r1, secp384r1.
//! * ALPN: `h2`, then `http/1.1`.
//! * Client certificates (mutual TLS) are optional: when a client CA is configured, a presented
//!   certificate must chain to it, but clients without one are still let in so that handlers
//!   can decide (the leaf certificate is exposed through [`crate::listener::TlsInfo`]).
//!
//! The private key file must not be readable by group or other (mode `0600` or stricter);
//! [`server_config`] refuses it otherwise. No error message ever contains key material.

use std::fmt;
use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::crypto::{CryptoProvider, SupportedKxGroup, aws_lc_rs};
use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig, SupportedCipherSuite, SupportedProtocolVersion};

/// Where the server certificate and key live, and how strict the handshake is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsSettings {
    /// PEM file with the server certificate chain, leaf first.
    pub cert_pem: PathBuf,
    /// PEM file with the private key (PKCS#8, SEC1 or PKCS#1); must be mode 0600 or stricter.
    pub key_pem: PathBuf,
    /// Lowest protocol version accepted.
    pub min_version: MinTlsVersion,
    /// PEM file with the CA certificate(s) client certificates must chain to. `None` disables
    /// client certificate requests entirely.
    pub client_ca_pem: Option<PathBuf>,
}

/// Lowest TLS version the server accepts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum MinTlsVersion {
    /// TLS 1.2 and 1.3 (1.2 restricted to ECDHE + AES-GCM).
    Tls12,
    /// TLS 1.3 only.
    #[default]
    Tls13,
}

impl MinTlsVersion {
    /// Parses `"1.2"` or `"1.3"` (as written in the configuration file). A leading `TLS`/`TLSv`
    /// (any case) is tolerated: `"TLSv1.3"`, `"tls1.2"`.
    pub fn parse(s: &str) -> Result<Self, TlsError> {
        let t = s.trim();
        let lower = t.to_ascii_lowercase();
        let v = lower.strip_prefix("tlsv").or_else(|| lower.strip_prefix("tls")).unwrap_or(&lower).trim();
        match v {
            "1.2" => Ok(Self::Tls12),
            "1.3" => Ok(Self::Tls13),
            _ => Err(TlsError::BadMinVersion(t.to_owned())),
        }
    }

    /// `"1.2"` or `"1.3"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Tls12 => "1.2",
            Self::Tls13 => "1.3",
        }
    }
}

impl fmt::Display for MinTlsVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TLS {}", self.as_str())
    }
}

impl std::str::FromStr for MinTlsVersion {
    type Err = TlsError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

/// Why a TLS configuration could not be built. Messages name the file involved but never
/// include its contents.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// `min_version` was neither "1.2" nor "1.3".
    #[error("unsupported minimum TLS version {0:?} (expected \"1.2\" or \"1.3\")")]
    BadMinVersion(String),
    /// A file could not be opened or read.
    #[error("cannot read {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// The private key file is readable or writable by group/other.
    #[error(
        "private key file {} has mode {mode:04o}, which lets group/other access it; \
         restrict it to the owner (chmod 600 {})",
        path.display(),
        path.display()
    )]
    KeyPermissions {
        /// The key file.
        path: PathBuf,
        /// Its permission bits (`mode & 0o7777`).
        mode: u32,
    },
    /// A PEM file was malformed or contained nothing of the expected kind.
    #[error("{}: {what}", path.display())]
    Pem {
        /// The file.
        path: PathBuf,
        /// What was wrong (never file contents).
        what: String,
    },
    /// A client CA certificate could not be used as a trust anchor.
    #[error("{}: unusable client CA certificate: {reason}", path.display())]
    ClientCa {
        /// The CA file.
        path: PathBuf,
        /// The reason from the verifier.
        reason: String,
    },
    /// A CA certificate for verifying a server we connect to could not be used as a trust anchor.
    #[error("{}: unusable CA certificate: {reason}", path.display())]
    TrustAnchor {
        /// The CA file.
        path: PathBuf,
        /// The reason from the verifier.
        reason: String,
    },
    /// rustls rejected the certificate/key pair or the protocol set (e.g. the key does not
    /// match the certificate).
    #[error("TLS configuration rejected ({} / {}): {reason}", cert.display(), key.display())]
    Config {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
        /// The reason from rustls.
        reason: String,
    },
    /// Self-signed certificate generation failed.
    #[error("cannot generate self-signed certificate: {0}")]
    Generate(String),
}

/// TLS 1.3 suites, in server preference order.
static TLS13_SUITES: [SupportedCipherSuite; 2] =
    [aws_lc_rs::cipher_suite::TLS13_AES_256_GCM_SHA384, aws_lc_rs::cipher_suite::TLS13_AES_128_GCM_SHA256];

/// TLS 1.2 suites (ECDHE + AES-GCM only), in server preference order.
static TLS12_SUITES: [SupportedCipherSuite; 4] = [
    aws_lc_rs::cipher_suite::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
    aws_lc_rs::cipher_suite::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
    aws_lc_rs::cipher_suite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
    aws_lc_rs::cipher_suite::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
];

static TLS13_ONLY: [&SupportedProtocolVersion; 1] = [&rustls::version::TLS13];
static TLS13_AND_12: [&SupportedProtocolVersion; 2] = [&rustls::version::TLS13, &rustls::version::TLS12];

/// The aws-lc-rs provider restricted to the allowed suites and groups.
fn provider(min: MinTlsVersion) -> CryptoProvider {
    let mut cipher_suites: Vec<SupportedCipherSuite> = TLS13_SUITES.to_vec();
    if min == MinTlsVersion::Tls12 {
        cipher_suites.extend_from_slice(&TLS12_SUITES);
    }
    let kx_groups: Vec<&'static dyn SupportedKxGroup> = vec![
        aws_lc_rs::kx_group::X25519MLKEM768,
        aws_lc_rs::kx_group::X25519,
        aws_lc_rs::kx_group::SECP256R1,
        aws_lc_rs::kx_group::SECP384R1,
    ];
    CryptoProvider { cipher_suites, kx_groups, ..aws_lc_rs::default_provider() }
}

/// Builds the server-side rustls configuration from `s` (see the module docs for the policy).
pub fn server_config(s: &TlsSettings) -> Result<Arc<ServerConfig>, TlsError> {
    let key = load_key(&s.key_pem)?;
    let certs = load_certs(&s.cert_pem)?;
    let provider = Arc::new(provider(s.min_version));
    let versions: &[&SupportedProtocolVersion] = match s.min_version {
        MinTlsVersion::Tls12 => &TLS13_AND_12,
        MinTlsVersion::Tls13 => &TLS13_ONLY,
    };
    let config_err =
        |e: rustls::Error| TlsError::Config { cert: s.cert_pem.clone(), key: s.key_pem.clone(), reason: e.to_string() };
    let builder = ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_protocol_versions(versions)
        .map_err(config_err)?;
    let builder = match &s.client_ca_pem {
        None => builder.with_no_client_auth(),
        Some(ca_path) => {
            let mut roots = RootCertStore::empty();
            for ca in load_certs(ca_path)? {
                roots.add(ca).map_err(|e| TlsError::ClientCa { path: ca_path.clone(), reason: e.to_string() })?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .allow_unauthenticated()
                .build()
                .map_err(|e| TlsError::ClientCa { path: ca_path.clone(), reason: e.to_string() })?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut cfg = builder.with_single_cert(certs, key).map_err(config_err)?;
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    // Our suite order (AES-256 first) rather than the client's.
    cfg.ignore_client_order = true;
    Ok(Arc::new(cfg))
}

/// The CA certificates of the client-CA bundle, each with a verifier of its own, to tell which
/// one issued a client certificate (ACL-3: zones by issuer). A certificate is attributed to a CA
/// only if it verifies against that CA alone (signature, validity, client-auth usage), so the
/// attribution is as strong as the handshake's own check.
pub struct ClientIssuers {
    cas: Vec<([u8; 32], Arc<dyn rustls::server::danger::ClientCertVerifier>)>,
}

impl fmt::Debug for ClientIssuers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ClientIssuers({} CA)", self.cas.len())
    }
}

impl ClientIssuers {
    /// None configured: no certificate is attributed to any issuer.
    pub fn none() -> ClientIssuers {
        ClientIssuers { cas: Vec::new() }
    }

    /// Every CA certificate in the PEM bundle `path`, with its SHA-256 fingerprint.
    pub fn load(path: &Path) -> Result<ClientIssuers, TlsError> {
        use sha2::{Digest, Sha256};
        let provider = Arc::new(provider(MinTlsVersion::Tls12));
        let mut cas = Vec::new();
        for ca in load_certs(path)? {
            let fp: [u8; 32] = Sha256::digest(ca.as_ref()).into();
            let mut roots = RootCertStore::empty();
            roots.add(ca).map_err(|e| TlsError::ClientCa { path: path.to_owned(), reason: e.to_string() })?;
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), Arc::clone(&provider))
                .build()
                .map_err(|e| TlsError::ClientCa { path: path.to_owned(), reason: e.to_string() })?;
            cas.push((fp, verifier));
        }
        Ok(ClientIssuers { cas })
    }

    /// SHA-256 fingerprints of the bundle's CA certificates.
    pub fn fingerprints(&self) -> impl Iterator<Item = &[u8; 32]> {
        self.cas.iter().map(|(fp, _)| fp)
    }

    /// The fingerprint of the bundle CA that issued the client certificate `leaf_der` (given
    /// with the intermediates the client sent), if one does.
    pub fn issuer_of(&self, leaf_der: &[u8], intermediates: &[Vec<u8>], now: time::OffsetDateTime) -> Option<[u8; 32]> {
        if self.cas.is_empty() {
            return None;
        }
        let secs = u64::try_from(now.unix_timestamp()).ok()?;
        let leaf = CertificateDer::from(leaf_der);
        let chain: Vec<CertificateDer<'_>> = intermediates.iter().map(|c| CertificateDer::from(c.as_slice())).collect();
        let now = rustls::pki_types::UnixTime::since_unix_epoch(std::time::Duration::from_secs(secs));
        self.cas.iter().find(|(_, v)| v.verify_client_cert(&leaf, &chain, now).is_ok()).map(|(fp, _)| *fp)
    }
}

/// The client side of an outgoing TLS connection (the syslog forwarder, RFC 5425): the peer
/// must present a certificate chaining to `ca_pem` and valid for the server name dialled; TLS
/// 1.2 (ECDHE + AES-GCM only) or 1.3 with the same suites and groups as the listener. With
/// `client_identity` (certificate chain, key) the connection is mutually authenticated (IHE
/// ATNA node authentication); the key file must be mode 0600 or stricter.
pub fn client_config(
    ca_pem: &Path,
    client_identity: Option<(&Path, &Path)>,
) -> Result<Arc<rustls::ClientConfig>, TlsError> {
    let mut roots = RootCertStore::empty();
    for ca in load_certs(ca_pem)? {
        roots.add(ca).map_err(|e| TlsError::TrustAnchor { path: ca_pem.to_owned(), reason: e.to_string() })?;
    }
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(provider(MinTlsVersion::Tls12)))
        .with_protocol_versions(&TLS13_AND_12)
        .map_err(|e| TlsError::TrustAnchor { path: ca_pem.to_owned(), reason: e.to_string() })?
        .with_root_certificates(roots);
    let cfg = match client_identity {
        None => builder.with_no_client_auth(),
        Some((cert, key)) => {
            let (chain, key_der) = (load_certs(cert)?, load_key(key)?);
            builder.with_client_auth_cert(chain, key_der).map_err(|e| TlsError::Config {
                cert: cert.to_owned(),
                key: key.to_owned(),
                reason: e.to_string(),
            })?
        }
    };
    Ok(Arc::new(cfg))
}

/// Reads all certificates of a PEM file; at least one is required.
fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let file = File::open(path).map_err(|source| TlsError::Read { path: path.to_owned(), source })?;
    let certs = CertificateDer::pem_reader_iter(file).collect::<Result<Vec<_>, _>>().map_err(|e| pem_error(path, e))?;
    if certs.is_empty() {
        return Err(TlsError::Pem { path: path.to_owned(), what: "no CERTIFICATE section found".to_owned() });
    }
    Ok(certs)
}

/// Opens the key file, checks its permissions on the opened handle (no check-then-open race),
/// then parses the first private key in it.
fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let read_err = |source| TlsError::Read { path: path.to_owned(), source };
    let file = File::open(path).map_err(read_err)?;
    check_key_permissions(path, &file)?;
    // Keys are small; a generous cap keeps a wrong path (e.g. a device) from exhausting memory.
    let reader = file.take(1 << 20);
    PrivateKeyDer::from_pem_reader(reader).map_err(|e| match e {
        pem::Error::NoItemsFound => {
            TlsError::Pem { path: path.to_owned(), what: "no PRIVATE KEY section found".to_owned() }
        }
        other => pem_error(path, other),
    })
}

#[cfg(unix)]
fn check_key_permissions(path: &Path, file: &File) -> Result<(), TlsError> {
    use std::os::unix::fs::PermissionsExt;
    let meta = file.metadata().map_err(|source| TlsError::Read { path: path.to_owned(), source })?;
    let mode = meta.permissions().mode() & 0o7777;
    if mode & 0o077 != 0 {
        return Err(TlsError::KeyPermissions { path: path.to_owned(), mode });
    }
    Ok(())
}

#[cfg(not(unix))]
fn check_key_permissions(_path: &Path, _file: &File) -> Result<(), TlsError> {
    // No POSIX mode bits; access is governed by ACLs the operator manages.
    Ok(())
}

/// Maps a PEM parse error to a message that never quotes file contents (the decoder's own
/// messages may echo lines of the file, which for a key file would leak key material).
fn pem_error(path: &Path, e: pem::Error) -> TlsError {
    let what = match e {
        pem::Error::Io(source) => {
            return TlsError::Read { path: path.to_owned(), source };
        }
        pem::Error::MissingSectionEnd { .. } => "malformed PEM: a section has no END line",
        pem::Error::IllegalSectionStart { .. } => "malformed PEM: invalid BEGIN line",
        pem::Error::Base64Decode(_) => "malformed PEM: invalid base64 content",
        pem::Error::NoItemsFound => "no PEM section of the expected kind found",
        pem::Error::SectionTooLarge => "malformed PEM: section too large",
        _ => "malformed PEM",
    };
    TlsError::Pem { path: path.to_owned(), what: what.to_owned() }
}

/// A generated certificate and its private key, both PEM.
#[derive(Clone)]
pub struct SelfSigned {
    /// The certificate (PEM).
    pub cert_pem: String,
    /// The PKCS#8 private key (PEM). Write it with mode 0600.
    pub key_pem: String,
}

impl fmt::Debug for SelfSigned {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SelfSigned").field("cert_pem", &self.cert_pem).field("key_pem", &"<redacted>").finish()
    }
}

/// Generates a self-signed ECDSA P-256 server certificate for the given subject alternative
/// names (DNS names or IP addresses; at least one), valid from `not_before` for 365 days.
/// Meant for first start-up and tests; production deployments should use a CA-issued
/// certificate.
pub fn generate_self_signed(
    subject_alt_names: &[String],
    not_before: time::OffsetDateTime,
) -> Result<SelfSigned, TlsError> {
    let gen_err = |e: rcgen::Error| TlsError::Generate(e.to_string());
    let Some(first) = subject_alt_names.first() else {
        return Err(TlsError::Generate("at least one subject alternative name is required".to_owned()));
    };
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(gen_err)?;
    let mut params = rcgen::CertificateParams::new(subject_alt_names.to_vec()).map_err(gen_err)?;
    let mut dn = rcgen::DistinguishedName::new();
    dn.push(rcgen::DnType::CommonName, first.as_str());
    dn.push(rcgen::DnType::OrganizationName, "mamori (self-signed)");
    params.distinguished_name = dn;
    params.not_before = not_before;
    params.not_after = not_before + time::Duration::days(365);
    params.is_ca = rcgen::IsCa::ExplicitNoCa;
    params.key_usages = vec![rcgen::KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
    let cert = params.self_signed(&key).map_err(gen_err)?;
    Ok(SelfSigned { cert_pem: cert.pem(), key_pem: key.serialize_pem() })
}

/// One-line summary of a server configuration for status/compliance output, e.g.
/// `TLS 1.3; suites TLS13_AES_256_GCM_SHA384, TLS13_AES_128_GCM_SHA256; groups X25519MLKEM768,
/// X25519, secp256r1, secp384r1; ALPN h2, http/1.1`.
///
/// Versions are derived from the suites the provider carries (the enabled version list itself
/// is not public in rustls); with [`server_config`] the two always agree.
pub fn describe(cfg: &ServerConfig) -> String {
    let provider = cfg.crypto_provider();
    let has12 = provider.cipher_suites.iter().any(|s| matches!(s, SupportedCipherSuite::Tls12(_)));
    let has13 = provider.cipher_suites.iter().any(|s| matches!(s, SupportedCipherSuite::Tls13(_)));
    let versions = match (has13, has12) {
        (true, true) => "TLS 1.3, TLS 1.2",
        (true, false) => "TLS 1.3",
        (false, true) => "TLS 1.2",
        (false, false) => "none",
    };
    let suites =
        provider.cipher_suites.iter().map(|s| enum_name(s.suite().as_str(), &s.suite())).collect::<Vec<_>>().join(", ");
    let groups =
        provider.kx_groups.iter().map(|g| enum_name(g.name().as_str(), &g.name())).collect::<Vec<_>>().join(", ");
    let alpn =
        cfg.alpn_protocols.iter().map(|p| String::from_utf8_lossy(p).into_owned()).collect::<Vec<_>>().join(", ");
    format!("{versions}; suites {suites}; groups {groups}; ALPN {alpn}")
}

/// Registered name of a rustls enum value, or its debug form for unknown values.
pub(crate) fn enum_name(name: Option<&'static str>, value: &dyn fmt::Debug) -> String {
    match name {
        Some(n) => n.to_owned(),
        None => format!("{value:?}"),
    }
}
