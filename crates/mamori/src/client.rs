//! `mamori client …`: the OAuth client registry (AUTH-6). There is no dynamic registration: an
//! operator registers each SMART app (exact redirect URIs) and each backend service (JWK Set of
//! public keys, job type); every change is audited.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::Subcommand;
use mamori_access::client_assertion::ClientKeys;
use mamori_store::oauth::{ClientKind, ClientRegistration, OAuth as _};

use crate::commands::{open_store, operator_ctx};
use crate::config::Config;

#[derive(Subcommand)]
pub enum ClientCommand {
    /// Register a client. An app used by people gives --redirect-uri (one or more); a backend
    /// service gives --jwks (a file with its public JWK Set) and --role (the job type it acts as).
    Add {
        #[arg(long)]
        data_dir: PathBuf,
        /// The client id the app will send (letters, digits, '.', '_', '-').
        #[arg(long)]
        id: String,
        /// A human-readable name, shown on the sign-in page.
        #[arg(long)]
        name: String,
        /// The scopes the client may ever be granted, e.g. "user/*.rs offline_access" (a staff
        /// app), "patient/*.rs offline_access" (a patients' app, signed in to at the patient
        /// interface) or "system/Observation.rs".
        #[arg(long)]
        scope: String,
        /// An exact redirect URI of a SMART app (repeatable).
        #[arg(long)]
        redirect_uri: Vec<String>,
        /// A file holding the backend service's public JWK Set (ES384 / RS384 keys).
        #[arg(long)]
        jwks: Option<PathBuf>,
        /// The job type a backend service acts as under the access policy.
        #[arg(long)]
        role: Option<String>,
    },
    /// List the registered clients.
    List {
        #[arg(long)]
        data_dir: PathBuf,
    },
    /// Remove a client; its tokens stop working at once.
    Remove {
        #[arg(long)]
        data_dir: PathBuf,
        #[arg(long)]
        id: String,
    },
}

pub async fn run(cmd: ClientCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        ClientCommand::Add { data_dir, id, name, scope, redirect_uri, jwks, role } => {
            add(&data_dir, id, name, &scope, redirect_uri, jwks.as_deref(), role.as_deref()).await
        }
        ClientCommand::List { data_dir } => list(&data_dir).await,
        ClientCommand::Remove { data_dir, id } => {
            let cfg = Config::load(&data_dir)?;
            let store = open_store(&data_dir, &cfg)?;
            let r = store.remove_client(operator_ctx(), id.clone()).await;
            store.shutdown();
            let revoked = r?;
            eprintln!("client {id} removed; its tokens no longer work ({revoked} token famil(ies) revoked)");
            Ok(ExitCode::SUCCESS)
        }
    }
}

async fn add(
    data_dir: &Path,
    id: String,
    name: String,
    scope: &str,
    redirect_uris: Vec<String>,
    jwks: Option<&Path>,
    role: Option<&str>,
) -> anyhow::Result<ExitCode> {
    let cfg = Config::load(data_dir)?;
    let jwks = match jwks {
        Some(path) => Some(std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?),
        None => None,
    };
    // The same registration rules as `POST /admin/clients` (mamori_store::oauth).
    let registration = ClientRegistration {
        client_id: id.clone(),
        name,
        scope: scope.to_string(),
        redirect_uris,
        jwks,
        role: role.map(str::to_string),
    };
    let store = open_store(data_dir, &cfg)?;
    let r = store.register_oauth_client(operator_ctx(), registration).await;
    store.shutdown();
    if let ClientKind::System { jwks, .. } = &r?.kind {
        eprintln!("{} public key(s) accepted", ClientKeys::parse(jwks).map(|k| k.len()).unwrap_or(0));
    }
    eprintln!("client {id} registered");
    Ok(ExitCode::SUCCESS)
}

async fn list(data_dir: &Path) -> anyhow::Result<ExitCode> {
    let cfg = Config::load(data_dir)?;
    let store = open_store(data_dir, &cfg)?;
    let r = store.list_clients(operator_ctx()).await;
    store.shutdown();
    for c in r? {
        let detail = match &c.kind {
            ClientKind::Public { redirect_uris } => redirect_uris.join(" "),
            ClientKind::System { role, .. } => format!("role {role}"),
        };
        println!("{}\t{}\t{}\t{}\t{}", c.client_id, c.kind.as_str(), c.name, c.scope, detail);
    }
    Ok(ExitCode::SUCCESS)
}
