//! `mamori serve`: listeners, TLS, graceful shutdown.

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
    if dev && let Some(a) = addrs.iter().find(|a| !a.ip().is_loopback()) {
        bail!("--dev serves plain HTTP and is allowed on loopback addresses only; {a} is not one");
    }
    let tls = if dev {
        None
    } else {
        let settings = TlsSettings {
            cert_pem: data_dir.join(&cfg.tls.certificate),
            key_pem: data_dir.join(&cfg.tls.private_key),
            min_version: MinTlsVersion::parse(&cfg.tls.min_version)?,
            client_ca_pem: cfg.tls.client_ca.as_ref().map(|p| data_dir.join(p)),
        };
        Some(server_config(&settings)?)
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
    let login = Arc::new(cfg.login_policy()?);
    // The dummy hash that unknown accounts are verified against, computed before the first login.
    let warm = Arc::clone(&login);
    tokio::task::spawn_blocking(move || warm.hasher.warm_up());
    shared.login = login;
    let router = app(Arc::new(shared));
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut tasks = Vec::new();
    for addr in addrs {
        let listener = TcpListener::bind(addr).await.with_context(|| format!("cannot listen on {addr}"))?;
        let local = listener.local_addr()?;
        let scheme = if tls.is_some() { "https" } else { "http" };
        // Scripts and tests read this line to find the port when listening on port 0.
        println!("mamori listening on {scheme}://{local}/fhir");
        let mut rx = stop_rx.clone();
        let shutdown = async move {
            let _ = rx.wait_for(|stop| *stop).await;
        };
        tasks.push(tokio::spawn(serve(listener, tls.clone(), router.clone(), shutdown, ConnLimits::default())));
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
    store.shutdown();
    tracing::info!("stopped");
    Ok(ExitCode::SUCCESS)
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
