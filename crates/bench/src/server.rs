//! The real HTTP server, started in-process on a loopback port for one configuration.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, Result};
use mamori_access::Role;
use mamori_server::listener::ConnLimits;
use mamori_server::{HttpLimits, Shared};
use mamori_store::clock::SystemClock;
use mamori_store::keys::MasterKey;
use mamori_store::{AccessContext, AccountName, PageLimits, SqliteStore, StoreConfig};
use tempfile::TempDir;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// Which store the server runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// The shipped configuration: encryption and audit on, `synchronous=FULL`.
    Mamori,
    /// As shipped but without sealing the audit trail (to measure the sealer's cost).
    MamoriUnsealed,
    /// Encryption and audit off (bench-only constructor); everything else identical.
    Baseline,
}

impl Mode {
    pub fn name(self) -> &'static str {
        match self {
            Mode::Mamori => "mamori",
            Mode::MamoriUnsealed => "mamori-unsealed",
            Mode::Baseline => "baseline",
        }
    }
}

/// A server listening on loopback; [`Running::stop`] shuts it down and removes its database.
pub struct Running {
    pub addr: SocketAddr,
    pub token: String,
    store: SqliteStore,
    shared: Arc<Shared>,
    stop: oneshot::Sender<()>,
    task: JoinHandle<std::io::Result<()>>,
    dir: TempDir,
}

fn operator_ctx() -> AccessContext {
    AccessContext::operator(uuid::Uuid::new_v4().to_string(), "bench")
}

/// Opens a fresh store under `tmp_parent`, issues a token and starts serving. Must run inside
/// the server's runtime (the accept loop is spawned onto it).
pub async fn start(mode: Mode, tmp_parent: &Path) -> Result<Running> {
    let dir = tempfile::Builder::new()
        .prefix(&format!("mamori-bench-{}-", mode.name()))
        .tempdir_in(tmp_parent)
        .with_context(|| format!("cannot create a temporary directory in {}", tmp_parent.display()))?;
    let mut cfg = StoreConfig::new(dir.path().join("mamori.db"));
    // As shipped: the audit trail is sealed (Merkle tree, signed checkpoints, witness file).
    if mode == Mode::Mamori {
        cfg.sealing = Some(mamori_store::SealingConfig {
            key: mamori_audit::SigningKey::generate("mamori-audit-bench")?,
            witness: Some(dir.path().join("checkpoints.log")),
            every_entries: 1000,
            interval: time::Duration::seconds(10),
        });
    }
    let store = match mode {
        Mode::Mamori | Mode::MamoriUnsealed => SqliteStore::open(cfg, &MasterKey::ephemeral()),
        Mode::Baseline => SqliteStore::open_unprotected_baseline(cfg),
    }
    .with_context(|| format!("cannot open the {} store", mode.name()))?;

    let name = AccountName::parse("bench")?;
    store
        .create_account(operator_ctx(), &name, Role::Physician, None)
        .await
        .context("cannot create the bench account")?;
    let (token, _expires) =
        store.create_token(operator_ctx(), &name, time::Duration::hours(24)).await.context("cannot issue a token")?;

    let shared =
        Shared::new(Arc::new(store.clone()), HttpLimits::default(), PageLimits::default(), None, Arc::new(SystemClock));
    let shared = Arc::new(shared);
    let app = mamori_server::app(Arc::clone(&shared));
    let listener = TcpListener::bind("127.0.0.1:0").await.context("cannot bind a loopback port")?;
    let addr = listener.local_addr()?;
    let (stop, stopped) = oneshot::channel::<()>();
    let shutdown = async move {
        // Either a stop message or a dropped sender ends the server.
        let _ = stopped.await;
    };
    let task = tokio::spawn(mamori_server::listener::serve(listener, None, app, shutdown, ConnLimits::default()));
    Ok(Running { addr, token: token.secret().to_string(), store, shared, stop, task, dir })
}

impl Running {
    /// A token for a second account of job type `role` (the bench account is a physician).
    pub async fn token_for(&self, account: &str, role: Role) -> Result<String> {
        let name = AccountName::parse(account)?;
        self.store.create_account(operator_ctx(), &name, role, None).await.context("cannot create an account")?;
        let (token, _) = self.store.create_token(operator_ctx(), &name, time::Duration::hours(24)).await?;
        Ok(token.secret().to_string())
    }

    /// The server's access policy.
    pub fn policy(&self) -> Arc<mamori_access::Policy> {
        Arc::clone(&self.shared.policy)
    }

    /// Switches the policy decision off (every request unrestricted) or back on.
    pub fn set_policy_bypass(&self, on: bool) {
        self.shared.policy_bypass.store(on, std::sync::atomic::Ordering::Relaxed);
    }

    /// The records database file.
    pub fn db_path(&self) -> std::path::PathBuf {
        self.dir.path().join("mamori.db")
    }

    /// Bytes on disk (database, WAL and shared memory files).
    pub fn disk_bytes(&self) -> u64 {
        std::fs::read_dir(self.dir.path())
            .map(|entries| entries.filter_map(|e| e.ok()?.metadata().ok()).map(|m| m.len()).sum())
            .unwrap_or(0)
    }

    /// Stops accepting, waits for the accept loop, returns the store (to shut down off the
    /// runtime) and the directory (removed when dropped).
    pub async fn stop(self) -> Result<(SqliteStore, TempDir)> {
        let _ = self.stop.send(());
        self.task.await.context("server task failed")?.context("server stopped with an error")?;
        Ok((self.store, self.dir))
    }
}
