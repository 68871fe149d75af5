//! `mamori serve`: listeners, TLS, graceful shutdown.

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, bail};
use mamori_server::listener::{ConnLimits, serve};
use mamori_server::tls::{MinTlsVersion, TlsSettings, server_config};
use mamori_server::{HttpLimits, Shared, app};
use mamori_store::clock::SystemClock;
use mamori_store::{PageLimits, Store};
use tokio::net::TcpListener;

use crate::commands::open_store;
use crate::config::Config;

pub async fn run(data_dir: &Path, listen_override: Vec<SocketAddr>, dev: bool) -> anyhow::Result<ExitCode> {
    let cfg = Config::load(data_dir)?;
    let addrs = if listen_override.is_empty() { cfg.server.listen.clone() } else { listen_override };
    let portal_addrs = cfg.patient_portal.as_ref().map(|p| p.listen.clone()).unwrap_or_default();
    if dev && let Some(a) = addrs.iter().chain(&portal_addrs).find(|a| !a.ip().is_loopback()) {
        bail!("--dev serves plain HTTP and is allowed on loopback addresses only; {a} is not one");
    }
    let tls_settings = |cert: &Path, key: &Path| -> anyhow::Result<_> {
        let settings = TlsSettings {
            cert_pem: data_dir.join(cert),
            key_pem: data_dir.join(key),
            min_version: MinTlsVersion::parse(&cfg.tls.min_version)?,
            client_ca_pem: cfg.tls.client_ca.as_ref().map(|p| data_dir.join(p)),
        };
        Ok(server_config(&settings)?)
    };
    let tls = if dev { None } else { Some(tls_settings(&cfg.tls.certificate, &cfg.tls.private_key)?) };
    let portal_tls = match &cfg.patient_portal {
        Some(p) if !dev => match (&p.certificate, &p.private_key) {
            (Some(c), Some(k)) => Some(tls_settings(c, k)?),
            _ => tls.clone(),
        },
        _ => None,
    };
    let store = open_store(data_dir, &cfg)?;
    // AUD-3: record whether the clock the trail runs on is synchronised.
    let ntp = crate::clock::ntp_status();
    if ntp != crate::clock::NtpStatus::Synchronized {
        tracing::warn!(target: "security", status = %ntp, "the system clock is not known to be NTP-synchronised");
    }
    store
        .record_operator_action(
            crate::commands::operator_ctx(),
            mamori_store::AuditEvent::new(mamori_store::Action::ClockStatus, 200).with_detail(format!("ntp={ntp}")),
        )
        .await?;
    let mut shared = Shared::new(
        Arc::new(store.clone()) as Arc<dyn Store>,
        HttpLimits { max_body_bytes: cfg.server.max_body_bytes, max_bundle_entries: cfg.server.max_bundle_entries },
        PageLimits { default_count: cfg.server.default_page_size, max_count: cfg.server.max_page_size },
        cfg.server.base_url.clone(),
        Arc::new(SystemClock),
    );
    shared.clock_status = ntp.to_string();
    shared.policy = Arc::new(cfg.access_policy()?);
    // ACL-3: zones by client-certificate issuer name CAs of the client-CA bundle.
    if let Some(ca) = &cfg.tls.client_ca
        && shared.policy.client_issuers().next().is_some()
    {
        let issuers = mamori_server::tls::ClientIssuers::load(&data_dir.join(ca))?;
        for (zone, fp) in shared.policy.client_issuers() {
            if !issuers.fingerprints().any(|f| f == fp) {
                bail!(
                    "policy zone '{zone}': no CA certificate in tls.client_ca has the SHA-256 fingerprint {}",
                    fp.iter().map(|b| format!("{b:02x}")).collect::<String>()
                );
            }
        }
        shared.client_issuers = Arc::new(issuers);
    }
    shared.oauth = cfg.oauth.settings()?;
    shared.tokens = cfg.token_policy()?;
    // AUTH-6: the OpenID Connect ID token signing key, generated (and audited) at the first start.
    shared.oauth.id_token_key = Some(Arc::new(store.id_token_key(crate::commands::operator_ctx()).await?));
    let login = Arc::new(cfg.login_policy()?);
    // The dummy hash that unknown accounts are verified against, computed before the first login.
    let warm = Arc::clone(&login);
    tokio::task::spawn_blocking(move || warm.hasher.warm_up());
    shared.login = login;
    // AUD-5: forward the trail to the syslog collector, if one is configured.
    let (fwd_stop, fwd_stop_rx) = tokio::sync::watch::channel(false);
    let forwarder = match syslog_forwarder(data_dir, &cfg, &ntp)? {
        Some(fc) => {
            let address = fc.address.clone();
            let (task, status) = mamori_server::syslog::spawn(fc, fwd_stop_rx)
                .with_context(|| format!("cannot start audit forwarding to {address}"))?;
            shared.forwarding = Some(status);
            Some(task)
        }
        None => None,
    };
    // AUD-2: offer every signed checkpoint to the HTTP witness, if one is configured.
    let witness = match http_witness(data_dir, &cfg)? {
        Some(wc) => {
            let url = mamori_server::witness::display_url(&wc.url);
            let (task, status) = mamori_server::witness::spawn(wc, fwd_stop.subscribe())
                .with_context(|| format!("cannot start the checkpoint witness {url}"))?;
            shared.witness = Some(status);
            Some(task)
        }
        None => None,
    };
    // AUTH-7: the lifecycle sweep (inactive accounts, expired role requests), now and periodically.
    let lifecycle = cfg.lifecycle_policy()?;
    let every = crate::config::parse_duration(&cfg.lifecycle.sweep_interval)?;
    shared.lifecycle = Arc::new(lifecycle.clone());
    let sweeper = {
        let store = store.clone();
        let every = std::time::Duration::from_secs(every.whole_seconds().unsigned_abs());
        tokio::spawn(async move {
            loop {
                match store.lifecycle_sweep(crate::commands::sweep_ctx(), &lifecycle).await {
                    Ok(out) => {
                        for (name, _) in &out.disabled {
                            tracing::warn!(target: "security", account = %name, "account disabled: unused too long");
                        }
                    }
                    Err(e) => tracing::error!(error = %e, "lifecycle sweep failed"),
                }
                tokio::time::sleep(every).await;
            }
        })
    };
    // ACL-4: the patient interface shares the store and the policy; its login policy has the
    // patient audience, so only its own sessions (of patient accounts) work there.
    let portal = match &cfg.patient_portal {
        Some(p) => {
            let mut portal = shared.patient_portal(Arc::new(cfg.patient_login_policy()?));
            portal.base_url = p.base_url.as_ref().map(|b| b.trim_end_matches('/').to_string());
            Some(mamori_server::patient_app(Arc::new(portal)))
        }
        None => None,
    };
    let router = app(Arc::new(shared));
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut tasks = Vec::new();
    for addr in addrs {
        tasks.push(listen(addr, "mamori", tls.clone(), router.clone(), stop_rx.clone()).await?);
    }
    if let Some(portal) = portal {
        for addr in portal_addrs {
            tasks.push(
                listen(addr, "mamori patient portal", portal_tls.clone(), portal.clone(), stop_rx.clone()).await?,
            );
        }
    }
    if dev {
        tracing::warn!("development mode: plain HTTP on loopback");
    }
    wait_for_signal().await;
    tracing::info!("shutting down: finishing in-flight requests");
    let _ = stop_tx.send(true);
    for t in tasks {
        match t.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::error!(error = %e, "listener failed"),
            Err(e) => tracing::error!(error = %e, "listener task failed"),
        }
    }
    sweeper.abort();
    let _ = sweeper.await;
    store.shutdown();
    // Every entry (and the final checkpoint) is committed now; the forwarder and the witness
    // send what they can of them, then stop. What they cannot send stays in the database and
    // goes out after the next start (from their cursors).
    let _ = fwd_stop.send(true);
    let deadline = tokio::time::Instant::now() + FORWARD_FLUSH_LIMIT;
    for (what, task) in [("syslog forwarder", forwarder), ("checkpoint witness", witness)] {
        if let Some(task) = task
            && tokio::time::timeout_at(deadline, task).await.is_err()
        {
            tracing::warn!("{what} did not finish within {FORWARD_FLUSH_LIMIT:?}; the rest is sent after restart");
        }
    }
    tracing::info!("stopped");
    Ok(ExitCode::SUCCESS)
}

/// Binds `addr` and serves `router` there until `stop` turns true. Prints
/// `<label> listening on <scheme>://<address>/fhir`: scripts and tests read this line to find the
/// port when listening on port 0.
async fn listen(
    addr: SocketAddr,
    label: &str,
    tls: Option<Arc<rustls::ServerConfig>>,
    router: mamori_server::Router,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> anyhow::Result<tokio::task::JoinHandle<std::io::Result<()>>> {
    let listener = TcpListener::bind(addr).await.with_context(|| format!("cannot listen on {addr}"))?;
    let local = listener.local_addr()?;
    let scheme = if tls.is_some() { "https" } else { "http" };
    // Not println!: a closed stdout (a supervisor that stopped reading) must not stop the server.
    let _ = writeln!(std::io::stdout(), "{label} listening on {scheme}://{local}/fhir");
    let shutdown = async move {
        let _ = stop.wait_for(|stop| *stop).await;
    };
    Ok(tokio::spawn(serve(listener, tls, router, shutdown, ConnLimits::default())))
}

/// How long shutdown waits for the syslog forwarder to deliver the last entries.
const FORWARD_FLUSH_LIMIT: std::time::Duration = std::time::Duration::from_secs(10);

/// The forwarder's settings from `[audit.syslog]`, with its certificates loaded (so a bad file
/// stops start-up with a clear message).
fn syslog_forwarder(
    data_dir: &Path,
    cfg: &Config,
    ntp: &crate::clock::NtpStatus,
) -> anyhow::Result<Option<mamori_server::syslog::ForwarderConfig>> {
    use mamori_server::syslog::{Facility, ForwarderConfig, HeaderName, MessageSettings};
    let Some(s) = &cfg.audit.syslog else { return Ok(None) };
    let (host, _) = s.host_port()?;
    let name = s.server_name.clone().unwrap_or(host);
    let server_name = rustls::pki_types::ServerName::try_from(name.clone())
        .map_err(|_| anyhow::anyhow!("audit.syslog.server_name {name:?} is not a DNS name or IP address"))?;
    let identity = match (&s.cert_file, &s.key_file) {
        (Some(c), Some(k)) => Some((data_dir.join(c), data_dir.join(k))),
        _ => None,
    };
    let tls = mamori_server::tls::client_config(
        &data_dir.join(&s.ca_file),
        identity.as_ref().map(|(c, k)| (c.as_path(), k.as_path())),
    )
    .context("audit.syslog: TLS settings")?;
    let hostname = s.hostname.clone().unwrap_or_else(system_hostname);
    let message = MessageSettings {
        facility: Facility::parse(&s.facility).context("audit.syslog.facility")?,
        hostname: HeaderName::new(&hostname, 255).or_else(|| HeaderName::new("-", 1)).context("hostname")?,
        app_name: HeaderName::new(&s.app_name, 48).context("audit.syslog.app_name")?,
        procid: std::process::id(),
        enterprise_number: s.enterprise_number,
        time_synced: match ntp {
            crate::clock::NtpStatus::Synchronized => Some(true),
            crate::clock::NtpStatus::Unsynchronized => Some(false),
            crate::clock::NtpStatus::Unknown(_) => None,
        },
    };
    let secs = |d: time::Duration| std::time::Duration::from_secs(d.whole_seconds().unsigned_abs());
    Ok(Some(ForwarderConfig {
        address: s.address.clone(),
        server_name,
        tls,
        message,
        audit_db: data_dir.join(&cfg.storage.audit_database),
        cursor_file: data_dir.join(&s.cursor_file),
        ack_timeout: secs(crate::config::parse_duration(&s.ack_timeout)?),
        max_retry_interval: secs(crate::config::parse_duration(&s.max_retry_interval)?),
    }))
}

/// The HTTP witness's settings from `[audit.http_witness]`, certificates loaded.
fn http_witness(data_dir: &Path, cfg: &Config) -> anyhow::Result<Option<mamori_server::witness::WitnessConfig>> {
    let Some(w) = &cfg.audit.http_witness else { return Ok(None) };
    let tls = match &w.ca_file {
        Some(ca) => {
            let identity = match (&w.cert_file, &w.key_file) {
                (Some(c), Some(k)) => Some((data_dir.join(c), data_dir.join(k))),
                _ => None,
            };
            let tls = mamori_server::tls::client_config(
                &data_dir.join(ca),
                identity.as_ref().map(|(c, k)| (c.as_path(), k.as_path())),
            )
            .context("audit.http_witness: TLS settings")?;
            Some(tls)
        }
        None => None,
    };
    let d = crate::config::parse_duration(&w.max_retry_interval)?;
    Ok(Some(mamori_server::witness::WitnessConfig {
        url: w.parsed_url()?,
        tls,
        audit_db: data_dir.join(&cfg.storage.audit_database),
        cursor_file: data_dir.join(&w.cursor_file),
        max_retry_interval: std::time::Duration::from_secs(d.whole_seconds().unsigned_abs()),
    }))
}

/// The kernel's host name (Linux), or the NILVALUE.
fn system_hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "-".to_string())
}

async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        }
        _ => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
