//! `mamori client …`: the OAuth client registry (AUTH-6). There is no dynamic registration: an
//! operator registers each SMART app (exact redirect URIs) and each backend service (JWK Set of
//! public keys, job type); every change is audited.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::Subcommand;
use mamori_access::Role;
use mamori_access::client_assertion::ClientKeys;
use mamori_access::scope::ScopeSet;
use mamori_store::oauth::ClientKind;

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
            r?;
            eprintln!("client {id} removed; its tokens no longer work");
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// A redirect URI must be absolute, without a fragment; plain http only for loopback (RFC 8252).
fn check_redirect_uri(u: &str) -> anyhow::Result<()> {
    let Some((scheme, rest)) = u.split_once(':') else { bail!("redirect URI '{u}' is not absolute") };
    if u.contains('#') || u.chars().any(|c| c.is_whitespace() || c.is_control()) || u.len() > 512 {
        bail!("redirect URI '{u}' must have no fragment or spaces and be at most 512 characters");
    }
    if scheme == "http" {
        let host = rest.trim_start_matches("//").split(['/', ':', '?']).next().unwrap_or("");
        if !matches!(host, "127.0.0.1" | "localhost") && !rest.starts_with("//[::1]") {
            bail!("redirect URI '{u}': plain http is allowed for loopback addresses only; use https");
        }
    }
    Ok(())
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
    let scope: ScopeSet = scope.parse().context("--scope")?;
    if scope.clinical.is_empty() {
        bail!("--scope names no resource scope (such as user/*.rs, patient/*.rs or system/Observation.rs)");
    }
    let kind = match (redirect_uris.is_empty(), jwks, role) {
        (false, None, None) => {
            for u in &redirect_uris {
                check_redirect_uri(u)?;
            }
            ClientKind::Public { redirect_uris }
        }
        (true, Some(path), Some(role)) => {
            let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
            let keys = ClientKeys::parse(&text)?;
            let role: Role = role.parse()?;
            if role == Role::Patient {
                bail!("a backend service acts as a staff job type; patients sign in at the patient interface (ACL-4)");
            }
            eprintln!("{} public key(s) accepted", keys.len());
            ClientKind::System { jwks: text, role }
        }
        _ => bail!("give --redirect-uri for an app used by people, or --jwks and --role for a backend service"),
    };
    let store = open_store(data_dir, &cfg)?;
    let r = store.register_client(operator_ctx(), id.clone(), name, kind, scope).await;
    store.shutdown();
    r?;
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
