//! `mamori.toml`: one file, every key documented, secure defaults, unknown keys refused.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use mamori_access::login::{Lockout, SessionPolicy};
use mamori_access::password::{Argon2Params, PasswordHasher, PasswordPolicy};
use mamori_access::webauthn::{RelyingParty, UserVerification};
use mamori_access::{LoginPolicy, Role};
use serde::Deserialize;

pub const FILE_NAME: &str = "mamori.toml";

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub server: ServerSection,
    pub tls: TlsSection,
    #[serde(default)]
    pub storage: StorageSection,
    pub keys: KeysSection,
    #[serde(default)]
    pub tokens: TokensSection,
    #[serde(default)]
    pub audit: AuditSection,
    #[serde(default)]
    pub passwords: PasswordsSection,
    #[serde(default)]
    pub login: LoginSection,
    /// `[policy]`: zones, information categories and grants over the built-in default
    /// (`crates/access/src/default-policy.toml`; docs/access-control.md).
    #[serde(default)]
    pub policy: mamori_access::PolicyConfig,
    #[serde(default)]
    pub lifecycle: LifecycleSection,
    /// `[patient_portal]`: the patient interface's own listener (ACL-4); off unless configured.
    pub patient_portal: Option<PatientPortalSection>,
    #[serde(default)]
    pub oauth: OAuthSection,
    /// `[webauthn]`: the WebAuthn relying party (AUTH-2); WebAuthn is off without it.
    pub webauthn: Option<WebauthnSection>,
}

/// `[patient_portal]`: a listener separate from the internal one, serving the FHIR API and the
/// login endpoints to patient accounts only (ACL-4).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PatientPortalSection {
    /// Addresses of the patient interface; none may also be in `server.listen`.
    pub listen: Vec<SocketAddr>,
    /// Certificate chain and key of the patient interface (default: `[tls]`'s).
    pub certificate: Option<PathBuf>,
    pub private_key: Option<PathBuf>,
    /// Public base URL of the patient interface's FHIR endpoint (default: from the Host header).
    pub base_url: Option<String>,
}

/// `[oauth]`: OAuth 2.0 / SMART on FHIR (AUTH-6); docs/oauth.md.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OAuthSection {
    /// Public base URL of the server (`https://emr.example.jp`): the issuer and the base of the
    /// endpoint URLs; client assertions must name `<issuer>/oauth/token` as their audience.
    /// Unset: derived from each request's Host header.
    pub issuer: Option<String>,
    /// Lifetime of an access token (1m-1h).
    pub access_token_lifetime: String,
    /// A refresh token's own limit; the login session's idle and absolute limits apply too.
    pub refresh_token_lifetime: String,
}

impl Default for OAuthSection {
    fn default() -> Self {
        OAuthSection { issuer: None, access_token_lifetime: "5m".into(), refresh_token_lifetime: "10h".into() }
    }
}

impl OAuthSection {
    pub fn settings(&self) -> anyhow::Result<mamori_server::oauth_api::OAuthSettings> {
        let access = parse_duration(&self.access_token_lifetime)?;
        let refresh = parse_duration(&self.refresh_token_lifetime)?;
        if access < time::Duration::minutes(1) || access > time::Duration::hours(1) {
            bail!("oauth.access_token_lifetime must be between 1m and 1h");
        }
        if refresh < access {
            bail!("oauth.refresh_token_lifetime must not be shorter than oauth.access_token_lifetime");
        }
        if let Some(i) = &self.issuer {
            let host = i.strip_prefix("https://").unwrap_or("");
            if host.is_empty() || host.contains(['/', '?', '#', ' ']) {
                bail!("oauth.issuer must be an https:// URL without a path, such as https://emr.example.jp");
            }
        }
        Ok(mamori_server::oauth_api::OAuthSettings {
            issuer: self.issuer.clone(),
            lifetimes: mamori_store::oauth::Lifetimes { access, refresh },
            // Loaded from the store by `serve` (generated at the first start).
            id_token_key: None,
        })
    }
}

/// `[webauthn]`: who this server is to authenticators and browsers (AUTH-2).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebauthnSection {
    /// The RP ID: the host name (or a parent domain of it) users reach the server by.
    pub rp_id: String,
    /// Origins the browser may report, `https://host[:port]` within the RP ID.
    pub origins: Vec<String>,
    #[serde(default = "default_rp_name")]
    pub rp_name: String,
    /// `required`, `preferred` or `discouraged`.
    #[serde(default = "default_user_verification")]
    pub user_verification: String,
    /// How long a registration or login challenge may be answered.
    #[serde(default = "default_challenge_ttl")]
    pub challenge_ttl: String,
}

fn default_rp_name() -> String {
    "mamori".into()
}
fn default_user_verification() -> String {
    "preferred".into()
}
fn default_challenge_ttl() -> String {
    "2m".into()
}

/// `[lifecycle]`: account lifecycle (AUTH-7).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LifecycleSection {
    /// Accounts that approve role requests; empty: every administrator.
    pub approvers: Vec<String>,
    /// Accounts unused this many days are disabled automatically; 0: never.
    pub disable_after_days: u32,
    /// Undecided role requests expire after this long.
    pub request_ttl: String,
    /// How often `serve` runs the lifecycle sweep.
    pub sweep_interval: String,
}

impl Default for LifecycleSection {
    fn default() -> Self {
        LifecycleSection {
            approvers: Vec::new(),
            disable_after_days: 90,
            request_ttl: "14d".into(),
            sweep_interval: "1h".into(),
        }
    }
}

/// `[passwords]`: hashing cost and the password rules (AUTH-3, AUTH-4).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PasswordsSection {
    pub argon2_memory_kib: u32,
    pub argon2_iterations: u32,
    pub argon2_parallelism: u32,
    pub min_length: usize,
    pub min_length_with_second_factor: usize,
    pub min_classes: usize,
    pub min_strength: u8,
    pub min_strength_with_second_factor: u8,
    pub history: usize,
}

impl Default for PasswordsSection {
    fn default() -> Self {
        let p = mamori_access::password::PasswordPolicy::default();
        let a = Argon2Params::FLOOR;
        PasswordsSection {
            argon2_memory_kib: a.memory_kib,
            argon2_iterations: a.iterations,
            argon2_parallelism: a.parallelism,
            min_length: p.min_length,
            min_length_with_second_factor: p.min_length_with_second_factor,
            min_classes: p.min_classes,
            min_strength: p.min_strength,
            min_strength_with_second_factor: p.min_strength_with_second_factor,
            history: p.history,
        }
    }
}

/// `[login]`: two factors, lockout, sessions (AUTH-2, AUTH-5, AUTH-6, AUTH-8).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LoginSection {
    pub two_factor_required: Vec<String>,
    pub max_failures_per_account: u32,
    pub max_failures_per_source: u32,
    pub lockout: String,
    pub session_idle_timeout: String,
    pub session_lifetime: String,
    pub max_sessions_per_account: u32,
    pub ticket_ttl: String,
    pub temporary_credential_ttl: String,
    pub totp_issuer: String,
    /// `[login.password_only_from]`: zone → roles of `two_factor_required` that may log in
    /// with a password alone from that zone.
    pub password_only_from: std::collections::BTreeMap<String, Vec<String>>,
}

impl Default for LoginSection {
    fn default() -> Self {
        LoginSection {
            two_factor_required: Role::ALL.iter().map(|r| r.as_str().to_string()).collect(),
            max_failures_per_account: 5,
            max_failures_per_source: 20,
            lockout: "15m".into(),
            session_idle_timeout: "30m".into(),
            session_lifetime: "10h".into(),
            max_sessions_per_account: 3,
            ticket_ttl: "5m".into(),
            temporary_credential_ttl: "24h".into(),
            totp_issuer: "mamori".into(),
            password_only_from: std::collections::BTreeMap::new(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditSection {
    #[serde(default = "default_signing_key")]
    pub signing_key: PathBuf,
    #[serde(default = "default_verifier_key")]
    pub verifier_key: PathBuf,
    #[serde(default = "default_witness")]
    pub witness_file: PathBuf,
    #[serde(default = "default_cp_entries")]
    pub checkpoint_every_entries: u64,
    #[serde(default = "default_cp_interval")]
    pub checkpoint_interval: String,
    /// Forwarding to a syslog collector (AUD-5); off unless configured.
    pub syslog: Option<SyslogSection>,
    /// Checkpoints POSTed to another party (AUD-2); off unless configured.
    pub http_witness: Option<HttpWitnessSection>,
}

/// `[audit.http_witness]`: every signed checkpoint is POSTed to a URL of another party.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpWitnessSection {
    /// `https://…` (plain `http://` only to a loopback address).
    pub url: String,
    /// PEM trust anchor(s) for the witness's certificate (required for https).
    pub ca_file: Option<PathBuf>,
    /// Client certificate chain and key (PEM, key mode 0600) for mutual TLS.
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
    /// Size of the last checkpoint the witness accepted.
    #[serde(default = "default_witness_cursor")]
    pub cursor_file: PathBuf,
    #[serde(default = "default_max_retry")]
    pub max_retry_interval: String,
}

fn default_witness_cursor() -> PathBuf {
    "audit/http-witness.cursor".into()
}

impl HttpWitnessSection {
    /// The URL, checked: https (or http to loopback), no user information.
    pub fn parsed_url(&self) -> anyhow::Result<mamori_server::witness::Url> {
        let url: mamori_server::witness::Url =
            self.url.parse().map_err(|e| anyhow::anyhow!("audit.http_witness.url is not a URL: {e}"))?;
        if !url.username().is_empty() || url.password().is_some() {
            bail!("audit.http_witness.url must not contain user information");
        }
        let loopback = match url.host_str() {
            Some("localhost") => true,
            Some(h) => h
                .trim_start_matches('[')
                .trim_end_matches(']')
                .parse::<std::net::IpAddr>()
                .is_ok_and(|a| a.is_loopback()),
            None => false,
        };
        match url.scheme() {
            "https" => {}
            "http" if loopback => {}
            "http" => bail!("audit.http_witness.url must use https (plain http only to a loopback address)"),
            other => bail!("audit.http_witness.url: unsupported scheme {other:?}"),
        }
        Ok(url)
    }

    fn validate(&self) -> anyhow::Result<()> {
        let url = self.parsed_url()?;
        if self.cert_file.is_some() != self.key_file.is_some() {
            bail!("audit.http_witness: cert_file and key_file go together (mutual TLS needs both)");
        }
        if url.scheme() == "https" && self.ca_file.is_none() {
            bail!("audit.http_witness: an https URL needs ca_file (the trust anchor for the witness's certificate)");
        }
        if url.scheme() == "http" && (self.ca_file.is_some() || self.cert_file.is_some()) {
            bail!("audit.http_witness: ca_file, cert_file and key_file apply to https URLs only");
        }
        parse_duration(&self.max_retry_interval).context("audit.http_witness.max_retry_interval")?;
        Ok(())
    }
}

/// `[audit.syslog]`: RFC 5424 messages over TLS (RFC 5425) to an audit repository.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SyslogSection {
    /// `host:port` of the collector (6514 is the registered syslog-tls port).
    pub address: String,
    /// Name the collector's certificate must be valid for; default: the host of `address`.
    pub server_name: Option<String>,
    /// PEM trust anchor(s) for the collector's certificate.
    pub ca_file: PathBuf,
    /// Client certificate chain and key (PEM, key mode 0600) for mutual TLS.
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
    #[serde(default = "default_facility")]
    pub facility: String,
    /// HOSTNAME in every message; default: the machine's host name.
    pub hostname: Option<String>,
    #[serde(default = "default_app_name")]
    pub app_name: String,
    /// IANA private enterprise number of the SD-ID `mamori@<n>`.
    #[serde(default = "default_enterprise_number")]
    pub enterprise_number: u32,
    /// Highest audit seq delivered (written atomically, fsync'd).
    #[serde(default = "default_cursor_file")]
    pub cursor_file: PathBuf,
    /// Unacknowledged data older than this drops the connection (TCP_USER_TIMEOUT).
    #[serde(default = "default_ack_timeout")]
    pub ack_timeout: String,
    /// Longest wait between reconnection attempts (they start at 250 ms and double).
    #[serde(default = "default_max_retry")]
    pub max_retry_interval: String,
}

fn default_facility() -> String {
    "authpriv".into()
}
fn default_app_name() -> String {
    "mamori".into()
}
fn default_enterprise_number() -> u32 {
    32473
}
fn default_cursor_file() -> PathBuf {
    "audit/syslog.cursor".into()
}
fn default_ack_timeout() -> String {
    "10s".into()
}
fn default_max_retry() -> String {
    "30s".into()
}

impl SyslogSection {
    /// `(host, port)` of `address`; IPv6 literals in brackets (`[2001:db8::1]:6514`).
    pub fn host_port(&self) -> anyhow::Result<(String, u16)> {
        let bad = || {
            anyhow::anyhow!("audit.syslog.address {:?} is not host:port (e.g. \"audit.example.jp:6514\")", self.address)
        };
        let (host, port) = self.address.rsplit_once(':').ok_or_else(bad)?;
        let host = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(host);
        let port: u16 = port.parse().map_err(|_| bad())?;
        if host.is_empty() || port == 0 || host.contains(char::is_whitespace) {
            return Err(bad());
        }
        Ok((host.to_string(), port))
    }

    fn validate(&self) -> anyhow::Result<()> {
        self.host_port()?;
        if self.cert_file.is_some() != self.key_file.is_some() {
            bail!("audit.syslog: cert_file and key_file go together (mutual TLS needs both)");
        }
        if mamori_server::syslog::Facility::parse(&self.facility).is_none() {
            bail!("audit.syslog.facility must be auth, authpriv, audit or local0..local7");
        }
        if mamori_server::syslog::HeaderName::new(&self.app_name, 48).is_none() {
            bail!("audit.syslog.app_name must be 1-48 printable ASCII characters without spaces");
        }
        if let Some(h) = &self.hostname
            && mamori_server::syslog::HeaderName::new(h, 255).is_none()
        {
            bail!("audit.syslog.hostname must be 1-255 printable ASCII characters without spaces");
        }
        if self.enterprise_number == 0 {
            bail!("audit.syslog.enterprise_number must be an IANA private enterprise number");
        }
        let ack = parse_duration(&self.ack_timeout).context("audit.syslog.ack_timeout")?;
        if ack > time::Duration::minutes(10) {
            bail!("audit.syslog.ack_timeout must be at most 10m");
        }
        parse_duration(&self.max_retry_interval).context("audit.syslog.max_retry_interval")?;
        Ok(())
    }
}

impl Default for AuditSection {
    fn default() -> Self {
        AuditSection {
            signing_key: default_signing_key(),
            verifier_key: default_verifier_key(),
            witness_file: default_witness(),
            checkpoint_every_entries: default_cp_entries(),
            checkpoint_interval: default_cp_interval(),
            syslog: None,
            http_witness: None,
        }
    }
}

fn default_signing_key() -> PathBuf {
    "keys/audit-signing.key".into()
}
fn default_verifier_key() -> PathBuf {
    "audit-signing.vkey".into()
}
fn default_witness() -> PathBuf {
    "audit/checkpoints.log".into()
}
fn default_cp_entries() -> u64 {
    1000
}
fn default_cp_interval() -> String {
    "10s".into()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerSection {
    pub listen: Vec<SocketAddr>,
    pub base_url: Option<String>,
    #[serde(default = "default_max_body")]
    pub max_body_bytes: usize,
    #[serde(default = "default_max_entries")]
    pub max_bundle_entries: usize,
    #[serde(default = "default_page")]
    pub default_page_size: usize,
    #[serde(default = "default_max_page")]
    pub max_page_size: usize,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsSection {
    pub certificate: PathBuf,
    pub private_key: PathBuf,
    #[serde(default = "default_tls_min")]
    pub min_version: String,
    pub client_ca: Option<PathBuf>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StorageSection {
    #[serde(default = "default_db")]
    pub database: PathBuf,
    #[serde(default = "default_audit_db")]
    pub audit_database: PathBuf,
    #[serde(default = "default_sync")]
    pub synchronous: String,
    /// MiB of sealed (still encrypted) version rows kept in memory for every reader; 0 turns
    /// the cache off.
    #[serde(default = "default_version_cache_mib")]
    pub version_cache_mib: u64,
}

fn default_version_cache_mib() -> u64 {
    mamori_store::VERSION_CACHE_DEFAULT_BYTES / (1024 * 1024)
}

impl Default for StorageSection {
    fn default() -> Self {
        StorageSection {
            database: default_db(),
            audit_database: default_audit_db(),
            synchronous: default_sync(),
            version_cache_mib: default_version_cache_mib(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeysSection {
    pub master_key: PathBuf,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokensSection {
    #[serde(default = "default_ttl")]
    pub default_ttl: String,
    #[serde(default = "default_max_ttl")]
    pub max_ttl: String,
}

impl Default for TokensSection {
    fn default() -> Self {
        TokensSection { default_ttl: default_ttl(), max_ttl: default_max_ttl() }
    }
}

fn default_max_body() -> usize {
    32 * 1024 * 1024
}
fn default_max_entries() -> usize {
    10_000
}
fn default_page() -> usize {
    50
}
fn default_max_page() -> usize {
    1000
}
fn default_tls_min() -> String {
    "1.3".into()
}
fn default_db() -> PathBuf {
    "mamori.db".into()
}
fn default_audit_db() -> PathBuf {
    "mamori-audit.db".into()
}
fn default_sync() -> String {
    "full".into()
}
fn default_ttl() -> String {
    "8h".into()
}
fn default_max_ttl() -> String {
    "30d".into()
}

/// The file `mamori init` writes: every key present and explained; the argon2 cost is what
/// init calibrated on this machine.
pub fn initial_file(argon2: Argon2Params) -> String {
    INITIAL
        .replace("@MEMORY@", &argon2.memory_kib.to_string())
        .replace("@ITERATIONS@", &argon2.iterations.to_string())
        .replace("@PARALLELISM@", &argon2.parallelism.to_string())
}

const INITIAL: &str = r#"# mamori configuration. Paths are relative to this data directory.
# Unknown keys are refused at start-up, so a typo cannot silently weaken a setting.

[server]
# Addresses to listen on. mamori opens nothing else (NET-1). The default is loopback only:
# add the address of the internal network interface when the server should be reachable.
listen = ["127.0.0.1:8443"]
# Public base URL of the FHIR endpoint, used in Location headers and Bundle links.
# When unset it is derived from each request's Host header.
# base_url = "https://emr.example.jp/fhir"
# Largest request body accepted, in bytes (NET-2).
max_body_bytes = 33554432
# Most entries accepted in one transaction or batch Bundle.
max_bundle_entries = 10000
# Page size of searches and histories when the client gives no _count, and the most it may ask for.
default_page_size = 50
max_page_size = 1000

[tls]
# Certificate chain and private key (PEM). init writes a self-signed pair; replace it with one
# from your institution's CA. The key file must be readable by its owner only (mode 0600).
certificate = "tls/cert.pem"
private_key = "tls/key.pem"
# Lowest TLS version accepted: "1.3" (default) or "1.2" (ENC-3). Only AES-GCM suites are offered.
min_version = "1.3"
# CA whose client certificates are verified and shown to the access policy (mutual TLS).
# client_ca = "tls/client-ca.pem"

[storage]
# The embedded SQLite databases: records (resources, keys, search index, accounts) and the
# audit trail, kept in its own file so that recording reads does not slow reading records.
database = "mamori.db"
audit_database = "mamori-audit.db"
# "full": a write is on disk before the client hears back (survives power loss).
# "normal": survives a crash of mamori, not of the machine; faster.
synchronous = "full"

[keys]
# The master key that wraps every data key. Keep it outside backups of the database and
# readable by the mamori user only (mode 0600); without it the records cannot be read (ENC-1).
master_key = "keys/master.key"

[audit]
# Ed25519 key that signs the audit trail's checkpoints (AUD-2), mode 0600, and its public
# verifier key, which auditors use with `mamori audit verify` (give them a copy).
signing_key = "keys/audit-signing.key"
verifier_key = "audit-signing.vkey"
# Every checkpoint is also appended here, outside the database. Point it at storage the
# database administrator cannot rewrite (another machine's share, a WORM volume).
witness_file = "audit/checkpoints.log"
# A checkpoint is signed after this many audit entries or this much time, whichever is first.
checkpoint_every_entries = 1000
checkpoint_interval = "10s"

# Forwarding of every audit entry to an external audit repository (AUD-5, IHE ATNA): RFC 5424
# messages over TLS (RFC 5425). The trail itself is the spool: while the collector is down
# entries wait in the database and are sent, in order, when it is back. See docs/audit.md.
# [audit.syslog]
# address = "audit.example.jp:6514"
# server_name = "audit.example.jp"          # default: the host of address
# ca_file = "tls/syslog-ca.pem"             # trust anchor for the collector's certificate
# cert_file = "tls/syslog-client.pem"       # client certificate for mutual TLS (optional)
# key_file = "tls/syslog-client.key"        #   and its key, mode 0600
# facility = "authpriv"                     # auth, authpriv, audit, local0..local7
# hostname = "emr1.clinic.example.jp"       # default: this machine's host name
# app_name = "mamori"
# enterprise_number = 32473                 # your IANA PEN, for the SD-ID mamori@<n>
# cursor_file = "audit/syslog.cursor"       # highest seq delivered
# ack_timeout = "10s"                       # unacknowledged data this old drops the connection
# max_retry_interval = "30s"                # reconnection back-off cap

# A second witness outside this machine (AUD-2): every signed checkpoint is POSTed (the signed
# note, text/plain) to a URL run by another party, who keeps it. Failures are logged and
# retried; serving never waits for it. See docs/audit.md.
# [audit.http_witness]
# url = "https://witness.example.org/mamori/checkpoints"
# ca_file = "tls/witness-ca.pem"            # trust anchor for the witness's certificate
# cert_file = "tls/witness-client.pem"      # client certificate for mutual TLS (optional)
# key_file = "tls/witness-client.key"       #   and its key, mode 0600
# cursor_file = "audit/http-witness.cursor" # size of the last checkpoint accepted
# max_retry_interval = "30s"

[tokens]
# Lifetime of API tokens from `mamori token create` when --ttl is not given, and the longest allowed.
default_ttl = "8h"
max_ttl = "30d"

[passwords]
# argon2id cost of password hashes (AUTH-3), calibrated by `mamori init` to take about
# --password-hash-ms on this machine. Never below 19456 KiB / 2 iterations (refused). After a
# change, each password is re-hashed with the new cost at its owner's next successful login.
argon2_memory_kib = @MEMORY@
argon2_iterations = @ITERATIONS@
argon2_parallelism = @PARALLELISM@
# The MHLW guideline's Q&A: at least 13 characters mixing character classes, or at least 8 when
# the account has a second factor. Weaker values are refused.
min_length = 13
min_length_with_second_factor = 8
# Classes to mix, of: upper-case, lower-case, digits, symbols (3 or 4).
min_classes = 3
# Strength estimate (zxcvbn score 0-4; the account name counts as a guessable word). 3 means
# about 10^10 guesses; with a second factor 2 (10^8) suffices, as an 8-character password can
# score no higher.
min_strength = 3
min_strength_with_second_factor = 2
# A new password may not be any of this many previous ones (1-24).
history = 5

[login]
# Roles that cannot log in with a password alone (AUTH-2). Accounts of these roles without a
# second factor are led through enrolment at their first login.
two_factor_required = ["physician", "nurse", "pharmacist", "clerk", "administrator", "auditor", "maintenance", "patient"]
# Failed login steps within `lockout` that lock the account, and the source address (AUTH-5).
# A lock lasts `lockout` (fixed, not growing) or until `mamori user unlock NAME`.
max_failures_per_account = 5
max_failures_per_source = 20
lockout = "15m"
# Sessions (AUTH-6): end after this long unused, and this long after login whatever their use.
session_idle_timeout = "30m"
session_lifetime = "10h"
# Sessions one account may hold at once; a new login ends the oldest beyond this.
max_sessions_per_account = 3
# How long a login step (second factor, password change, enrolment) may take.
ticket_ttl = "5m"
# Lifetime of a temporary credential from `mamori user temp-credential NAME` (AUTH-8).
temporary_credential_ttl = "24h"
# Issuer name shown in authenticator apps.
totp_issuer = "mamori"
# Exceptions per network zone (zones of [policy]): roles of two_factor_required that may log in
# with a password alone from that zone, e.g. clerks on the internal HIS network only. A
# session opened that way is not accepted from any other zone. Unknown zones or roles are refused.
# [login.password_only_from]
# his = ["clerk"]

# WebAuthn / passkeys as a second factor (AUTH-2); off unless this section is present. See
# docs/two-factor.md.
# [webauthn]
# rp_id = "emr.example.jp"                  # the host name users reach mamori by (or a parent domain)
# origins = ["https://emr.example.jp"]      # origins browsers report: https://host[:port] within rp_id
# rp_name = "mamori"                        # shown by the browser
# user_verification = "preferred"           # required | preferred | discouraged (PIN/biometrics on the device)
# challenge_ttl = "2m"                      # how long a challenge may be answered (at most 10m)

[oauth]
# OAuth 2.0 / SMART on FHIR (AUTH-6; docs/oauth.md). Public base URL of this server, the issuer
# and base of /oauth/authorize, /oauth/token, /oauth/revoke; backend services sign their client
# assertions for "<issuer>/oauth/token". Unset: taken from each request's Host header.
# issuer = "https://emr.example.jp"
# Access tokens are short-lived (1m-1h).
access_token_lifetime = "5m"
# A refresh token's own limit; the sign-in session behind it (idle and absolute limits, the
# per-account session limit) ends it sooner.
refresh_token_lifetime = "10h"

# The access policy (ACL-1..3, ACL-5): who may do what with which information category, from
# which network zone, for which purpose. Without this section the built-in default applies (see
# docs/access-control.md). Each list given here (`zone`, `category`, `grant`) replaces the
# default's list of that name; anything not granted is denied. For example, to make a HIS subnet
# and a VPN range known (the default knows only loopback as the HIS):
#
# [[policy.zone]]
# name = "his"
# addresses = ["127.0.0.0/8", "::1/128", "192.168.10.0/24"]
# [[policy.zone]]
# name = "vpn"
# addresses = ["10.8.0.0/24"]
# [[policy.zone]]
# name = "internet"
#
# Administrators and auditors (account review and management, audit review, status) work only
# from these zones; the default is the HIS and the VPN, never the internet:
# [policy]
# administration_zones = ["his", "vpn"]

[lifecycle]
# Account lifecycle (AUTH-7). Roles change only when a manager approves a request
# (`mamori user request-role`, `mamori user approve`). Managers: the accounts listed here, or
# every administrator when the list is empty. No one approves their own request or a role for
# their own account.
approvers = []
# Accounts with no login and no token or session use for this many days are disabled
# automatically (audited); 0 turns this off. `mamori user enable NAME` re-enables.
disable_after_days = 90
# Role requests not decided within this long expire and change nothing.
request_ttl = "14d"
# How often `serve` checks for unused accounts and expired requests.
sweep_interval = "1h"

# The patient interface (ACL-4): a listener of its own where patients (accounts made with
# `mamori patient-account add NAME --patient ID`) sign in and read their own records, and where
# no staff credential works. Off unless this section is present. What patients may do there is
# [policy.patient] (default: read-only; psychiatric entries withheld).
# [patient_portal]
# listen = ["0.0.0.0:9443"]
# certificate = "tls/portal-cert.pem"   # default: [tls]'s certificate and key
# private_key = "tls/portal-key.pem"
# base_url = "https://portal.example.jp/fhir"
"#;

impl Config {
    pub fn load(data_dir: &Path) -> anyhow::Result<Config> {
        let path = data_dir.join(FILE_NAME);
        let text = std::fs::read_to_string(&path).with_context(|| {
            format!("cannot read {} (run `mamori init --data-dir {}` first)", path.display(), data_dir.display())
        })?;
        let cfg: Config =
            toml::from_str(&text).with_context(|| format!("invalid configuration in {}", path.display()))?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Refuses insecure or contradictory settings rather than warning about them.
    fn validate(&self) -> anyhow::Result<()> {
        if self.server.listen.is_empty() {
            bail!("server.listen is empty: name at least one address");
        }
        if self.server.default_page_size == 0 || self.server.default_page_size > self.server.max_page_size {
            bail!("server.default_page_size must be between 1 and server.max_page_size");
        }
        if self.server.max_bundle_entries == 0 || self.server.max_body_bytes < 1024 {
            bail!("server.max_bundle_entries and server.max_body_bytes must allow at least one small resource");
        }
        if !matches!(self.storage.synchronous.as_str(), "full" | "normal") {
            bail!("storage.synchronous must be \"full\" or \"normal\"");
        }
        if self.storage.version_cache_mib > 64 * 1024 {
            bail!("storage.version_cache_mib is at most 65536 (64 GiB)");
        }
        if !matches!(self.tls.min_version.as_str(), "1.2" | "1.3") {
            bail!("tls.min_version must be \"1.2\" or \"1.3\" (older versions are not allowed)");
        }
        if let Some(p) = &self.patient_portal {
            if p.listen.is_empty() {
                bail!("patient_portal.listen is empty: name at least one address, or remove [patient_portal]");
            }
            if let Some(a) = p.listen.iter().find(|a| self.server.listen.contains(a)) {
                bail!("{a} is in both server.listen and patient_portal.listen: the patient interface needs its own");
            }
            if p.certificate.is_some() != p.private_key.is_some() {
                bail!("patient_portal.certificate and patient_portal.private_key go together");
            }
        }
        if let Some(s) = &self.audit.syslog {
            s.validate()?;
        }
        if let Some(w) = &self.audit.http_witness {
            w.validate()?;
        }
        self.token_policy()?;
        let login = self.login_policy()?;
        let access = self.access_policy()?;
        for (zone, _) in &login.password_only_from {
            if access.zone_named(zone).is_none() {
                let known: Vec<&str> = access.zone_names().collect();
                bail!("login.password_only_from: unknown zone {zone:?} (the policy's zones: {})", known.join(", "));
            }
        }
        self.lifecycle_policy()?;
        self.oauth.settings()?;
        Ok(())
    }

    /// The access policy: `[policy]` over the built-in default, validated (a contradictory or
    /// unknown policy refuses start-up).
    pub fn access_policy(&self) -> anyhow::Result<mamori_access::Policy> {
        let policy = mamori_access::Policy::from_config(&self.policy)?;
        // ACL-3: a zone bound to a listener names one of ours.
        let ours = |a: &SocketAddr| {
            self.server.listen.contains(a) || self.patient_portal.as_ref().is_some_and(|p| p.listen.contains(a))
        };
        if let Some((zone, a)) = policy.zone_listeners().find(|(_, a)| !ours(a)) {
            bail!("policy zone '{zone}': listener {a} is not in server.listen or patient_portal.listen");
        }
        if policy.client_issuers().next().is_some() && self.tls.client_ca.is_none() {
            bail!("policy zones name client certificate issuers, but tls.client_ca is not set");
        }
        Ok(policy)
    }

    /// The login policy of the patient interface (ACL-4): the same rules, for patient accounts.
    pub fn patient_login_policy(&self) -> anyhow::Result<LoginPolicy> {
        let mut p = self.login_policy()?;
        p.audience = mamori_access::Audience::Patient;
        Ok(p)
    }

    /// API token lifetimes (`[tokens]`): the default and the longest allowed.
    pub fn token_policy(&self) -> anyhow::Result<mamori_store::accounts::TokenPolicy> {
        let (d, m) = (parse_duration(&self.tokens.default_ttl)?, parse_duration(&self.tokens.max_ttl)?);
        if d > m {
            bail!("tokens.default_ttl is longer than tokens.max_ttl");
        }
        Ok(mamori_store::accounts::TokenPolicy { default_ttl: d, max_ttl: m })
    }

    /// The lifecycle rules from `[lifecycle]` (AUTH-7).
    pub fn lifecycle_policy(&self) -> anyhow::Result<mamori_store::lifecycle::LifecyclePolicy> {
        let l = &self.lifecycle;
        for a in &l.approvers {
            mamori_store::AccountName::parse(a).with_context(|| format!("lifecycle.approvers: {a:?}"))?;
        }
        if l.disable_after_days > 3650 {
            bail!("lifecycle.disable_after_days must be between 0 (off) and 3650");
        }
        let request_ttl = parse_duration(&l.request_ttl).context("lifecycle.request_ttl")?;
        if request_ttl > time::Duration::days(90) {
            bail!("lifecycle.request_ttl must be at most 90d");
        }
        let sweep = parse_duration(&l.sweep_interval).context("lifecycle.sweep_interval")?;
        if sweep < time::Duration::minutes(1) || sweep > time::Duration::days(1) {
            bail!("lifecycle.sweep_interval must be between 1m and 1d");
        }
        Ok(mamori_store::lifecycle::LifecyclePolicy {
            approvers: l.approvers.clone(),
            request_ttl,
            disable_after: (l.disable_after_days > 0).then(|| time::Duration::days(i64::from(l.disable_after_days))),
        })
    }

    /// The login policy from `[passwords]` and `[login]`, refusing anything weaker than the
    /// guideline.
    pub fn login_policy(&self) -> anyhow::Result<LoginPolicy> {
        let p = &self.passwords;
        let argon2 = Argon2Params {
            memory_kib: p.argon2_memory_kib,
            iterations: p.argon2_iterations,
            parallelism: p.argon2_parallelism,
        };
        if !argon2.is_at_least_floor() {
            bail!("passwords.argon2_*: below the floor of 19456 KiB, 2 iterations, 1-16 lanes");
        }
        if p.min_length < 13 || p.min_length_with_second_factor < 8 || p.min_length_with_second_factor > p.min_length {
            bail!("passwords.min_length must be at least 13 and min_length_with_second_factor 8..=min_length");
        }
        if !(3..=4).contains(&p.min_classes) {
            bail!("passwords.min_classes must be 3 or 4");
        }
        if !(3..=4).contains(&p.min_strength) || !(2..=4).contains(&p.min_strength_with_second_factor) {
            bail!("passwords.min_strength must be 3 or 4, min_strength_with_second_factor 2 to 4");
        }
        if !(1..=24).contains(&p.history) {
            bail!("passwords.history must be between 1 and 24");
        }
        let l = &self.login;
        let mut roles = Vec::new();
        for r in &l.two_factor_required {
            roles.push(r.parse::<Role>().with_context(|| "in login.two_factor_required")?);
        }
        if l.max_failures_per_account == 0 || l.max_failures_per_source == 0 || l.max_failures_per_account > 100 {
            bail!("login.max_failures_per_account (1-100) and max_failures_per_source (1 or more) must be set");
        }
        let lockout = parse_duration(&l.lockout)?;
        let idle = parse_duration(&l.session_idle_timeout)?;
        let lifetime = parse_duration(&l.session_lifetime)?;
        if idle > lifetime || lifetime > time::Duration::days(1) {
            bail!("login.session_idle_timeout must not exceed session_lifetime, which is at most 1d");
        }
        if l.max_sessions_per_account == 0 {
            bail!("login.max_sessions_per_account must be at least 1");
        }
        let ticket_ttl = parse_duration(&l.ticket_ttl)?;
        let temp_ttl = parse_duration(&l.temporary_credential_ttl)?;
        if ticket_ttl > time::Duration::minutes(30) || temp_ttl > time::Duration::days(7) {
            bail!("login.ticket_ttl is at most 30m and login.temporary_credential_ttl at most 7d");
        }
        if l.totp_issuer.is_empty() || l.totp_issuer.contains(':') {
            bail!("login.totp_issuer must be a non-empty name without ':'");
        }
        let mut policy = LoginPolicy::with_hasher(PasswordHasher::new(argon2)?);
        policy.passwords = PasswordPolicy {
            min_length: p.min_length,
            min_length_with_second_factor: p.min_length_with_second_factor,
            min_classes: p.min_classes,
            min_strength: p.min_strength,
            min_strength_with_second_factor: p.min_strength_with_second_factor,
            history: p.history,
        };
        policy.account_lockout = Lockout { threshold: l.max_failures_per_account, period: lockout };
        policy.source_lockout = Lockout { threshold: l.max_failures_per_source, period: lockout };
        policy.sessions = SessionPolicy { idle_timeout: idle, lifetime, max_per_account: l.max_sessions_per_account };
        policy.two_factor_roles = roles;
        policy.ticket_ttl = ticket_ttl;
        policy.temporary_credential_ttl = temp_ttl;
        policy.totp_issuer = l.totp_issuer.clone();
        for (zone, names) in &l.password_only_from {
            let mut roles = Vec::new();
            for r in names {
                let role = r.parse::<Role>().with_context(|| format!("in login.password_only_from.{zone}"))?;
                if !policy.two_factor_roles.contains(&role) {
                    bail!(
                        "login.password_only_from.{zone}: {r} is not in login.two_factor_required (it needs no exception)"
                    );
                }
                roles.push(role);
            }
            policy.password_only_from.push((zone.clone(), roles));
        }
        if let Some(w) = &self.webauthn {
            let uv = UserVerification::parse(&w.user_verification)
                .context("webauthn.user_verification must be required, preferred or discouraged")?;
            let ttl = parse_duration(&w.challenge_ttl).context("webauthn.challenge_ttl")?;
            let rp = RelyingParty::new(&w.rp_id, &w.rp_name, &w.origins, uv, ttl)
                .map_err(|e| anyhow::anyhow!("[webauthn]: {e}"))?;
            policy.webauthn = Some(rp);
        }
        Ok(policy)
    }
}

/// Durations such as `90s`, `15m`, `8h`, `30d`.
pub fn parse_duration(raw: &str) -> anyhow::Result<time::Duration> {
    // One parser for the configuration and the admin API's token lifetimes.
    mamori_store::accounts::parse_duration(raw).map_err(|e| anyhow::anyhow!("{e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_initial_file_parses_and_validates() {
        let cfg: Config = toml::from_str(&initial_file(Argon2Params::FLOOR)).unwrap();
        cfg.validate().unwrap();
        let policy = cfg.login_policy().unwrap();
        assert_eq!(policy.two_factor_roles, Role::ALL.to_vec(), "secure default: two factors for every role");
        assert_eq!(cfg.tls.min_version, "1.3");
        assert_eq!(cfg.storage.synchronous, "full");
        assert!(cfg.server.listen.iter().all(|a| a.ip().is_loopback()), "secure default: loopback only");
    }

    #[test]
    fn unknown_keys_and_weak_tls_are_refused() {
        let typo = initial_file(Argon2Params::FLOOR).replace("min_version", "minversion");
        assert!(toml::from_str::<Config>(&typo).is_err());
        let weak: Config = toml::from_str(
            &initial_file(Argon2Params::FLOOR).replace("min_version = \"1.3\"", "min_version = \"1.0\""),
        )
        .unwrap();
        assert!(weak.validate().is_err());
        for (from, to) in [
            ("min_length = 13", "min_length = 8"),
            ("argon2_iterations = 2", "argon2_iterations = 1"),
            ("history = 5", "history = 0"),
            (
                "two_factor_required = [\"physician\", \"nurse\", \"pharmacist\", \"clerk\", \"administrator\", \"auditor\", \"maintenance\", \"patient\"]",
                "two_factor_required = [\"root\"]",
            ),
            ("session_idle_timeout = \"30m\"", "session_idle_timeout = \"12h\""),
            ("disable_after_days = 90", "disable_after_days = 99999"),
            ("approvers = []", "approvers = [\"Not A Name\"]"),
            ("request_ttl = \"14d\"", "request_ttl = \"365d\""),
        ] {
            let text = initial_file(Argon2Params::FLOOR).replace(from, to);
            assert_ne!(text, initial_file(Argon2Params::FLOOR), "{from}");
            let weak: Config = toml::from_str(&text).unwrap();
            assert!(weak.validate().is_err(), "{to} accepted");
        }
    }

    #[test]
    fn aud5_syslog_settings_are_checked() {
        let with = |extra: &str| {
            let text = initial_file(Argon2Params::FLOOR).replace(
                "[tokens]",
                &format!(
                    "[audit.syslog]\naddress = \"audit.example.jp:6514\"\nca_file = \"ca.pem\"\n{extra}\n[tokens]"
                ),
            );
            toml::from_str::<Config>(&text).map_err(anyhow::Error::from).and_then(|c| c.validate().map(|()| c))
        };
        let ok = with("").unwrap();
        let s = ok.audit.syslog.unwrap();
        assert_eq!(s.host_port().unwrap(), ("audit.example.jp".to_string(), 6514));
        assert_eq!((s.facility.as_str(), s.enterprise_number), ("authpriv", 32473));
        for bad in [
            "adress = \"x:1\"",
            "cert_file = \"c.pem\"",
            "facility = \"kern\"",
            "app_name = \"two words\"",
            "ack_timeout = \"1w\"",
            "enterprise_number = 0",
        ] {
            assert!(with(bad).is_err(), "{bad}");
        }
        let text = initial_file(Argon2Params::FLOOR)
            .replace("[tokens]", "[audit.syslog]\naddress = \"nohost\"\nca_file = \"ca.pem\"\n[tokens]");
        let err = toml::from_str::<Config>(&text).unwrap().validate().unwrap_err();
        assert!(err.to_string().contains("host:port"), "{err}");
    }

    #[test]
    fn aud2_http_witness_urls_are_checked() {
        let with = |body: &str| {
            let text = initial_file(Argon2Params::FLOOR)
                .replace("[tokens]", &format!("[audit.http_witness]\n{body}\n[tokens]"));
            toml::from_str::<Config>(&text).map_err(anyhow::Error::from).and_then(|c| c.validate().map(|()| c))
        };
        assert!(with("url = \"http://127.0.0.1:9/cp\"").is_ok());
        assert!(with("url = \"https://w.example.org/cp\"\nca_file = \"ca.pem\"").is_ok());
        for bad in [
            "url = \"http://w.example.org/cp\"",
            "url = \"https://w.example.org/cp\"",
            "url = \"https://u:p@w.example.org/cp\"\nca_file = \"ca.pem\"",
            "url = \"ftp://127.0.0.1/cp\"",
            "url = \"http://127.0.0.1/cp\"\nca_file = \"ca.pem\"",
            "url = \"http://127.0.0.1/cp\"\ncolour = \"blue\"",
        ] {
            assert!(with(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn auth2_webauthn_and_zone_exceptions_are_checked() {
        let with = |extra: &str| {
            let text = initial_file(Argon2Params::FLOOR).replace("[lifecycle]", &format!("{extra}\n[lifecycle]"));
            toml::from_str::<Config>(&text).map_err(anyhow::Error::from).and_then(|c| c.validate().map(|()| c))
        };
        let ok = with("[webauthn]\nrp_id = \"emr.example.jp\"\norigins = [\"https://emr.example.jp\"]\n").unwrap();
        let rp = ok.login_policy().unwrap().webauthn.unwrap();
        assert_eq!((rp.id.as_str(), rp.user_verification), ("emr.example.jp", UserVerification::Preferred));
        let ok = with("[login.password_only_from]\nhis = [\"clerk\"]\n").unwrap();
        let p = ok.login_policy().unwrap();
        assert!(!p.requires_two_factors_from(Role::Clerk, Some("his")));
        assert!(p.requires_two_factors_from(Role::Clerk, Some("vpn")));
        for bad in [
            "[webauthn]\nrp_id = \"emr.example.jp\"\norigins = [\"http://emr.example.jp\"]\n",
            "[webauthn]\nrp_id = \"emr.example.jp\"\norigins = [\"https://other.example.jp\"]\n",
            "[webauthn]\nrp_id = \"emr.example.jp\"\norigins = []\n",
            "[webauthn]\nrp_id = \"emr.example.jp\"\norigins = [\"https://emr.example.jp\"]\nuser_verification = \"maybe\"\n",
            "[login.password_only_from]\nmars = [\"clerk\"]\n",
            "[login.password_only_from]\nhis = [\"janitor\"]\n",
        ] {
            assert!(with(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("8h").unwrap(), time::Duration::hours(8));
        assert_eq!(parse_duration("30d").unwrap(), time::Duration::days(30));
        for bad in ["", "8", "h", "-1h", "0m", "8w"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }
}
