//! Operator commands other than `serve`.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::Path;
use std::process::ExitCode;

use anyhow::{Context, bail};
use mamori_access::Role;
use mamori_store::clock::{Clock, SystemClock, to_micros};
use mamori_store::keys::MasterKey;
use mamori_store::lifecycle::Lifecycle as _;
use mamori_store::oidc::OpenId as _;
use mamori_store::{
    AccessContext, AccountName, Action, AuditEvent, PageLimits, SealingConfig, SqliteStore, StoreConfig,
};
use rand::Rng;

use crate::config::{self, Config};

/// The operator, as the audit trail names them: the OS account running the command.
pub fn operator_ctx() -> AccessContext {
    use std::os::unix::fs::MetadataExt;
    let who = std::env::var("USER").or_else(|_| std::env::var("LOGNAME")).unwrap_or_else(|_| {
        match std::fs::metadata("/proc/self") {
            Ok(m) => format!("uid={}", m.uid()),
            Err(_) => "unknown".into(),
        }
    });
    AccessContext::operator(uuid_like(), format!("operator:{who}"))
}

fn uuid_like() -> String {
    let b: [u8; 16] = rand::rng().random();
    b.iter().map(|x| format!("{x:02x}")).collect()
}

pub fn open_store(data_dir: &Path, cfg: &Config) -> anyhow::Result<SqliteStore> {
    let master = MasterKey::load_file(&data_dir.join(&cfg.keys.master_key))?;
    let mut sc = StoreConfig::new(data_dir.join(&cfg.storage.database));
    sc.audit_path = data_dir.join(&cfg.storage.audit_database);
    sc.sealing = Some(SealingConfig {
        key: crate::audit::load_signing_key(&data_dir.join(&cfg.audit.signing_key))?,
        witness: Some(data_dir.join(&cfg.audit.witness_file)),
        every_entries: cfg.audit.checkpoint_every_entries,
        interval: config::parse_duration(&cfg.audit.checkpoint_interval)?,
    });
    sc.synchronous_full = cfg.storage.synchronous == "full";
    sc.version_cache_bytes = cfg.storage.version_cache_mib * 1024 * 1024;
    sc.policy = std::sync::Arc::new(cfg.access_policy()?);
    sc.page_limits = PageLimits { default_count: cfg.server.default_page_size, max_count: cfg.server.max_page_size };
    Ok(SqliteStore::open(sc, &master)?)
}

/// A one-time secret, easy to read aloud and type: 24 symbols of a 32-letter alphabet (120 bits).
fn setup_secret() -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHJKLMNPQRSTUVWXYZ23456789";
    let mut rng = rand::rng();
    let symbols: Vec<char> = (0..24).map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char).collect();
    symbols.chunks(4).map(|c| c.iter().collect::<String>()).collect::<Vec<_>>().join("-")
}

pub(crate) fn write_private(path: &Path, contents: &[u8], mode: u32) -> anyhow::Result<()> {
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .with_context(|| format!("cannot create {}", path.display()))?;
    f.write_all(contents)?;
    f.sync_all()?;
    Ok(())
}

pub async fn init(data_dir: &Path, admin: &str, password_hash_ms: u64) -> anyhow::Result<ExitCode> {
    let admin = AccountName::parse(admin)?;
    if data_dir.join(config::FILE_NAME).exists() {
        bail!("{} is already initialised; refusing to touch it", data_dir.display());
    }
    if data_dir.exists() && fs::read_dir(data_dir)?.next().is_some() {
        bail!("{} exists and is not empty; give a new or empty directory", data_dir.display());
    }
    let mut dirs = fs::DirBuilder::new();
    dirs.recursive(true).mode(0o700);
    for d in [data_dir.to_path_buf(), data_dir.join("keys"), data_dir.join("tls"), data_dir.join("audit")] {
        dirs.create(&d).with_context(|| format!("cannot create {}", d.display()))?;
    }
    // AUTH-3: argon2id cost calibrated to this machine, stored in the configuration.
    let argon2 = mamori_access::password::Argon2Params::calibrate(std::time::Duration::from_millis(password_hash_ms))?;
    let cfg_text = config::initial_file(argon2);
    let cfg: Config = toml::from_str(&cfg_text)?;
    MasterKey::create_file(&data_dir.join(&cfg.keys.master_key))?;
    let now = SystemClock.now();
    let sans = vec!["localhost".to_string(), "127.0.0.1".to_string(), "::1".to_string()];
    let pair = mamori_server::tls::generate_self_signed(&sans, now)?;
    write_private(&data_dir.join(&cfg.tls.private_key), pair.key_pem.as_bytes(), 0o600)?;
    write_private(&data_dir.join(&cfg.tls.certificate), pair.cert_pem.as_bytes(), 0o644)?;
    write_private(&data_dir.join(config::FILE_NAME), cfg_text.as_bytes(), 0o600)?;
    let vkey = crate::audit::create_signing_key(
        &data_dir.join(&cfg.audit.signing_key),
        &data_dir.join(&cfg.audit.verifier_key),
    )?;

    let store = open_store(data_dir, &cfg)?;
    let ctx = operator_ctx();
    store.record_operator_action(ctx.clone(), AuditEvent::new(Action::Initialise, 200)).await?;
    let secret = setup_secret();
    // SHA-256 suffices for a 120-bit random secret; a slow hash is for human-chosen passwords.
    store.create_account(ctx, &admin, Role::Administrator, Some(mamori_access::TokenHash::of(&secret).0)).await?;
    store.shutdown();
    println!("Initialised {}.", data_dir.display());
    println!("Administrator account: {admin}");
    println!("One-time setup secret (shown once, not stored in clear): {secret}");
    println!(
        "The administrator uses it for the first login (POST /auth/login with \"temporary_credential\") and must then set a password and enrol a second factor."
    );
    println!("Keys are in {}: keep them out of database backups.", data_dir.join("keys").display());
    println!("Audit verifier key (give it to your auditors): {vkey}");
    println!(
        "Password hashing: argon2id, {} KiB, {} iterations (calibrated to about {password_hash_ms} ms).",
        argon2.memory_kib, argon2.iterations
    );
    Ok(ExitCode::SUCCESS)
}

pub async fn user_add(
    data_dir: &Path,
    name: &str,
    role: &str,
    practitioner: Option<String>,
) -> anyhow::Result<ExitCode> {
    let cfg = Config::load(data_dir)?;
    let name = AccountName::parse(name)?;
    let role: Role = role.parse()?;
    let store = open_store(data_dir, &cfg)?;
    let linked = practitioner.as_ref().map(|p| format!(", Practitioner/{p}")).unwrap_or_default();
    let result = store.create_staff_account(operator_ctx(), &name, role, None, practitioner).await;
    store.shutdown();
    result?;
    println!("Added account {name} ({role}{linked}).");
    Ok(ExitCode::SUCCESS)
}

pub async fn user_practitioner(data_dir: &Path, name: &str, practitioner: &str) -> anyhow::Result<ExitCode> {
    let cfg = Config::load(data_dir)?;
    let name = AccountName::parse(name)?;
    let store = open_store(data_dir, &cfg)?;
    let result = store.link_practitioner(operator_ctx(), name.clone(), practitioner.to_string()).await;
    store.shutdown();
    result?;
    println!("Linked account {name} to Practitioner/{practitioner}.");
    Ok(ExitCode::SUCCESS)
}

pub async fn patient_account_add(data_dir: &Path, name: &str, patient: &str) -> anyhow::Result<ExitCode> {
    let cfg = Config::load(data_dir)?;
    let name = AccountName::parse(name)?;
    let store = open_store(data_dir, &cfg)?;
    let result = store.create_patient_account(operator_ctx(), &name, patient).await;
    store.shutdown();
    result?;
    println!("Added patient account {name} for Patient/{patient}.");
    Ok(ExitCode::SUCCESS)
}

pub async fn user_list(data_dir: &Path) -> anyhow::Result<ExitCode> {
    let cfg = Config::load(data_dir)?;
    let store = open_store(data_dir, &cfg)?;
    for a in store.list_accounts(operator_ctx()).await? {
        println!("{}\t{}\t{}", a.name, a.role, if a.disabled { "disabled" } else { "enabled" });
    }
    store.shutdown();
    Ok(ExitCode::SUCCESS)
}

pub async fn token_create(data_dir: &Path, user: &str, ttl: Option<&str>) -> anyhow::Result<ExitCode> {
    let cfg = Config::load(data_dir)?;
    let name = AccountName::parse(user)?;
    let ttl = ttl.map(config::parse_duration).transpose()?;
    let policy = cfg.token_policy()?;
    let store = open_store(data_dir, &cfg)?;
    let r = store.issue_token(operator_ctx(), &name, ttl, policy).await;
    store.shutdown();
    let (token, expires_us) = r?;
    // The token alone on stdout, so scripts can capture it; the rest goes to stderr.
    println!("{}", token.secret());
    eprintln!(
        "token {} for {name} expires at {}",
        token.hash().public_id(),
        mamori_store::clock::fhir_instant(expires_us)
    );
    Ok(ExitCode::SUCCESS)
}

/// `mamori token list --user NAME`: ids and dates, never secrets (audited).
pub async fn token_list(data_dir: &Path, user: &str) -> anyhow::Result<ExitCode> {
    let cfg = Config::load(data_dir)?;
    let name = AccountName::parse(user)?;
    let store = open_store(data_dir, &cfg)?;
    let r = store.list_tokens(operator_ctx(), &name).await;
    store.shutdown();
    for t in r? {
        let state = if t.expired { "expired" } else { "valid" };
        let last = t.last_used.unwrap_or_else(|| "never".into());
        println!("{}\t{state}\tcreated {}\texpires {}\tlast used {last}", t.id, t.created, t.expires);
    }
    Ok(ExitCode::SUCCESS)
}

/// `mamori token revoke --user NAME ID`: the token stops working at once (audited).
pub async fn token_revoke(data_dir: &Path, user: &str, id: &str) -> anyhow::Result<ExitCode> {
    let cfg = Config::load(data_dir)?;
    let name = AccountName::parse(user)?;
    let store = open_store(data_dir, &cfg)?;
    let r = store.revoke_token(operator_ctx(), &name, id).await;
    store.shutdown();
    r?;
    println!("Revoked token {id} of {name}.");
    Ok(ExitCode::SUCCESS)
}

pub async fn check(data_dir: &Path) -> anyhow::Result<ExitCode> {
    let cfg = Config::load(data_dir)?;
    let store = open_store(data_dir, &cfg)?;
    let started = to_micros(SystemClock.now());
    let report = store.check_integrity(operator_ctx()).await?;
    store.shutdown();
    let took_ms = (to_micros(SystemClock.now()) - started) / 1000;
    println!("checked {} versions of {} resources in {took_ms} ms", report.versions_checked, report.resources_checked);
    if let Some(s) = &cfg.audit.syslog {
        // AUD-5: how far forwarding has got (informational; the trail itself is the spool).
        let delivered = mamori_server::syslog::read_cursor(&data_dir.join(&s.cursor_file))?;
        let last =
            mamori_store::audit_log::AuditLogReader::open(&data_dir.join(&cfg.storage.audit_database))?.last_seq()?;
        println!(
            "audit forwarding to {}: delivered through seq {delivered} of {last} ({} waiting)",
            s.address,
            last.saturating_sub(delivered)
        );
    }
    if report.is_clean() {
        println!("integrity: OK");
        Ok(ExitCode::SUCCESS)
    } else {
        for p in &report.problems {
            println!("PROBLEM: {p}");
        }
        println!("integrity: {} problem(s) found", report.problems.len());
        Ok(ExitCode::from(2))
    }
}

/// Reads one line (a password) from standard input, without echoing it anywhere else.
fn read_secret_line() -> anyhow::Result<zeroize::Zeroizing<String>> {
    let mut line = zeroize::Zeroizing::new(String::new());
    std::io::stdin().read_line(&mut line).context("cannot read the password from standard input")?;
    let trimmed = zeroize::Zeroizing::new(line.trim_end_matches(['\r', '\n']).to_string());
    if trimmed.is_empty() {
        bail!("no password on standard input (give it as the first line)");
    }
    Ok(trimmed)
}

fn login_policy(cfg: &Config) -> anyhow::Result<mamori_access::SharedLoginPolicy> {
    Ok(std::sync::Arc::new(cfg.login_policy()?))
}

/// `mamori user password NAME`: an administrator sets an initial password (first line of
/// standard input); the person must change it at first login (AUTH-3).
pub async fn user_password(data_dir: &Path, name: &str) -> anyhow::Result<ExitCode> {
    let cfg = Config::load(data_dir)?;
    let name = AccountName::parse(name)?;
    let password = read_secret_line()?;
    let policy = login_policy(&cfg)?;
    let store = open_store(data_dir, &cfg)?;
    let r = store.set_initial_password(operator_ctx(), &name, password, policy).await;
    store.shutdown();
    r?;
    println!("Initial password set for {name}; it must be changed at the first login.");
    Ok(ExitCode::SUCCESS)
}

/// `mamori user recovery-codes NAME`: new one-time recovery codes, printed once (AUTH-8); with
/// `--revoke`, the account's unused codes are invalidated instead.
pub async fn user_recovery_codes(data_dir: &Path, name: &str, count: usize, revoke: bool) -> anyhow::Result<ExitCode> {
    if !(1..=20).contains(&count) {
        bail!("--count must be between 1 and 20");
    }
    let cfg = Config::load(data_dir)?;
    let name = AccountName::parse(name)?;
    let store = open_store(data_dir, &cfg)?;
    if revoke {
        let r = store.revoke_recovery_codes(operator_ctx(), &name).await;
        store.shutdown();
        println!("Revoked {} unused recovery code(s) of {name}.", r?);
        return Ok(ExitCode::SUCCESS);
    }
    let r = store.issue_recovery_codes(operator_ctx(), &name, count).await;
    store.shutdown();
    for code in r? {
        println!("{}", code.as_str());
    }
    eprintln!("{count} recovery codes for {name}; each works once; earlier codes no longer work.");
    Ok(ExitCode::SUCCESS)
}

/// `mamori user unlock NAME` (AUTH-5).
pub async fn user_unlock(data_dir: &Path, name: &str) -> anyhow::Result<ExitCode> {
    let cfg = Config::load(data_dir)?;
    let name = AccountName::parse(name)?;
    let store = open_store(data_dir, &cfg)?;
    let r = store.unlock_account(operator_ctx(), &name).await;
    store.shutdown();
    if r? {
        println!("Unlocked {name}.");
    } else {
        println!("{name} was not locked; its failure count is reset.");
    }
    Ok(ExitCode::SUCCESS)
}

/// `mamori user temp-credential NAME`: a one-time credential for a person who lost their
/// second factor or password (AUTH-8); printed once.
pub async fn user_temp_credential(data_dir: &Path, name: &str) -> anyhow::Result<ExitCode> {
    let cfg = Config::load(data_dir)?;
    let name = AccountName::parse(name)?;
    let policy = login_policy(&cfg)?;
    let store = open_store(data_dir, &cfg)?;
    let r = store.issue_temporary_credential(operator_ctx(), &name, policy).await;
    store.shutdown();
    let (credential, expires_us) = r?;
    println!("{}", credential.as_str());
    eprintln!(
        "temporary credential for {name}: one use, until {}; it resets the second factor and requires a new password",
        mamori_store::clock::fhir_instant(expires_us)
    );
    Ok(ExitCode::SUCCESS)
}

/// `mamori user webauthn list NAME` (AUTH-2; audited).
pub async fn user_webauthn_list(data_dir: &Path, name: &str) -> anyhow::Result<ExitCode> {
    let cfg = Config::load(data_dir)?;
    let name = AccountName::parse(name)?;
    let store = open_store(data_dir, &cfg)?;
    let r = store.list_webauthn(operator_ctx(), &name).await;
    store.shutdown();
    let list = r?;
    if list.is_empty() {
        eprintln!("{name} has no WebAuthn credentials.");
    }
    for c in list {
        println!(
            "{}\t{}\talg {}\t{}\tcreated {}\tlast used {}",
            c.id,
            c.label,
            c.alg,
            c.attestation,
            mamori_store::clock::fhir_instant(c.created_us),
            c.last_used_us.map(mamori_store::clock::fhir_instant).unwrap_or_else(|| "never".into())
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// `mamori user webauthn remove NAME CREDENTIAL` (AUTH-2; audited).
pub async fn user_webauthn_remove(data_dir: &Path, name: &str, credential: &str) -> anyhow::Result<ExitCode> {
    let cfg = Config::load(data_dir)?;
    let name = AccountName::parse(name)?;
    let policy = login_policy(&cfg)?;
    let store = open_store(data_dir, &cfg)?;
    let r = store.remove_webauthn(operator_ctx(), &name, credential, policy).await;
    store.shutdown();
    r?;
    println!("Removed WebAuthn credential {credential} of {name}.");
    Ok(ExitCode::SUCCESS)
}

/// `mamori user disable NAME [--reason …]`: immediate; sessions and API tokens stop working (AUTH-7).
pub async fn user_disable(data_dir: &Path, name: &str, reason: Option<&str>) -> anyhow::Result<ExitCode> {
    let cfg = Config::load(data_dir)?;
    let name = AccountName::parse(name)?;
    let store = open_store(data_dir, &cfg)?;
    let r = store.disable_account_because(operator_ctx(), name.clone(), reason.unwrap_or_default().to_string()).await;
    store.shutdown();
    let ended = r?;
    println!("Disabled {name}; {ended} session(s) ended.");
    Ok(ExitCode::SUCCESS)
}

/// `mamori user enable NAME`: a disabled account works again; inactivity counts from now.
pub async fn user_enable(data_dir: &Path, name: &str) -> anyhow::Result<ExitCode> {
    let cfg = Config::load(data_dir)?;
    let name = AccountName::parse(name)?;
    let store = open_store(data_dir, &cfg)?;
    let r = store.enable_account(operator_ctx(), name.clone()).await;
    store.shutdown();
    r?;
    println!("Enabled {name}.");
    Ok(ExitCode::SUCCESS)
}

/// `mamori user request-role NAME ROLE --reason …` (AUTH-7): the role changes only on approval.
pub async fn user_request_role(data_dir: &Path, name: &str, role: &str, reason: &str) -> anyhow::Result<ExitCode> {
    let cfg = Config::load(data_dir)?;
    let name = AccountName::parse(name)?;
    let role: Role = role.parse()?;
    let store = open_store(data_dir, &cfg)?;
    let r = store.request_role(operator_ctx(), name, role, reason.to_string()).await;
    store.shutdown();
    let req = r?;
    println!("{}", req.id);
    eprintln!(
        "role request {} for {} ({}) awaits a manager's approval: mamori user approve {}",
        req.id, req.account, req.role, req.id
    );
    Ok(ExitCode::SUCCESS)
}

/// `mamori user approve ID` / `mamori user reject ID` (AUTH-7), as the operator.
pub async fn user_decide(data_dir: &Path, id: i64, approve: bool, note: Option<&str>) -> anyhow::Result<ExitCode> {
    let cfg = Config::load(data_dir)?;
    let policy = std::sync::Arc::new(cfg.lifecycle_policy()?);
    let store = open_store(data_dir, &cfg)?;
    let r = store.decide_role_request(operator_ctx(), id, approve, note.map(str::to_string), policy).await;
    store.shutdown();
    let req = r?;
    match req.previous_role {
        Some(prev) => println!("Approved request {id}: {} is now {} (was {prev}).", req.account, req.role),
        None => println!("Rejected request {id}: {} keeps its role.", req.account),
    }
    Ok(ExitCode::SUCCESS)
}

/// `mamori user requests [--all]`: role requests as JSON.
pub async fn user_requests(data_dir: &Path, all: bool) -> anyhow::Result<ExitCode> {
    let cfg = Config::load(data_dir)?;
    let store = open_store(data_dir, &cfg)?;
    let r = store.role_requests(operator_ctx(), !all).await;
    store.shutdown();
    println!("{}", serde_json::to_string_pretty(&serde_json::json!({ "requests": r? }))?);
    Ok(ExitCode::SUCCESS)
}

/// `mamori user report [--format json|csv]`: the review report of every account (AUTH-7).
pub async fn user_report(data_dir: &Path, format: &str) -> anyhow::Result<ExitCode> {
    if !matches!(format, "json" | "csv") {
        bail!("--format must be json or csv");
    }
    let cfg = Config::load(data_dir)?;
    let store = open_store(data_dir, &cfg)?;
    let r = store.account_report(operator_ctx()).await;
    store.shutdown();
    let mut rows = r?;
    mamori_store::lifecycle::fill_zones(&mut rows, &cfg.access_policy()?);
    if format == "csv" {
        print!("{}", mamori_store::lifecycle::report_csv(&rows));
    } else {
        let body = serde_json::json!({
            "generated": mamori_store::clock::fhir_instant(to_micros(SystemClock.now())),
            "accounts": rows,
        });
        println!("{}", serde_json::to_string_pretty(&body)?);
    }
    Ok(ExitCode::SUCCESS)
}

/// The context of the automatic lifecycle sweep in the audit trail.
pub fn sweep_ctx() -> AccessContext {
    AccessContext::operator(uuid_like(), "system:lifecycle")
}

/// `mamori user sweep`: the lifecycle sweep `serve` runs periodically, for cron when not serving.
pub async fn user_sweep(data_dir: &Path) -> anyhow::Result<ExitCode> {
    let cfg = Config::load(data_dir)?;
    let policy = std::sync::Arc::new(cfg.lifecycle_policy()?);
    let store = open_store(data_dir, &cfg)?;
    // The same operation as `POST /admin/accounts/sweep`: each change and the sweep are audited.
    let r = store.sweep(sweep_ctx(), policy).await;
    store.shutdown();
    let out = r?;
    for (name, last) in &out.disabled {
        println!("disabled {name}: unused since {}", mamori_store::clock::fhir_instant(*last));
    }
    for id in &out.expired {
        println!("expired role request {id}");
    }
    println!("{} account(s) disabled, {} request(s) expired", out.disabled.len(), out.expired.len());
    Ok(ExitCode::SUCCESS)
}
