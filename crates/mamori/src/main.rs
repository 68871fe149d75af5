//! `mamori`: the one binary. Operator commands act on a data directory they can read the keys of;
//! every one of them is audited like a request.
#![forbid(unsafe_code)]

mod audit;
mod client;
mod clock;
mod commands;
mod config;
mod serve;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "mamori", version, about = "FHIR R4 medical-record server with security built in")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Create a data directory: configuration, keys, database, TLS certificate, first administrator.
    Init {
        #[arg(long)]
        data_dir: PathBuf,
        /// Name of the first administrator account.
        #[arg(long, default_value = "admin")]
        admin: String,
        /// Target time of one password hash in milliseconds; argon2id's cost is calibrated to it
        /// (never below the floor of 19 MiB, 2 iterations).
        #[arg(long, default_value_t = 250)]
        password_hash_ms: u64,
    },
    /// Run the server.
    Serve {
        #[arg(long)]
        data_dir: PathBuf,
        /// Listen here instead of the configured addresses (repeatable).
        #[arg(long)]
        listen: Vec<std::net::SocketAddr>,
        /// Plain HTTP for development; allowed on loopback addresses only.
        #[arg(long)]
        dev: bool,
    },
    /// Manage accounts.
    User {
        #[command(subcommand)]
        command: UserCommand,
    },
    /// Patient accounts (ACL-4): sign in only at the patient interface, see only their own records.
    PatientAccount {
        #[command(subcommand)]
        command: PatientAccountCommand,
    },
    /// Manage API tokens.
    Token {
        #[command(subcommand)]
        command: TokenCommand,
    },
    /// Manage OAuth clients: SMART apps and backend services (AUTH-6; docs/oauth.md).
    Client {
        #[command(subcommand)]
        command: client::ClientCommand,
    },
    /// The tamper-evident audit trail: verify and export (AUD-2).
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
    /// Verify every stored record against its seal and its version chain (REC-6).
    Check {
        #[arg(long)]
        data_dir: PathBuf,
    },
}

#[derive(Subcommand)]
enum WebauthnCommand {
    /// List an account's WebAuthn credentials (id, label, algorithm, last use).
    List {
        #[arg(long)]
        data_dir: PathBuf,
        name: String,
    },
    /// Remove one credential (by the id `list` shows). The last second factor of a role that
    /// needs two factors is not removed: issue a temporary credential instead.
    Remove {
        #[arg(long)]
        data_dir: PathBuf,
        name: String,
        credential: String,
    },
}

#[derive(Subcommand)]
enum UserCommand {
    /// Add an account for one person.
    Add {
        #[arg(long)]
        data_dir: PathBuf,
        #[arg(long)]
        name: String,
        /// Job type: physician, nurse, pharmacist, clerk, administrator, auditor or maintenance.
        #[arg(long)]
        role: String,
        /// The person's Practitioner resource (logical id; it must exist): the `fhirUser` of
        /// their OpenID Connect ID tokens.
        #[arg(long)]
        practitioner: Option<String>,
    },
    /// Link a staff account to the person's Practitioner resource (the ID token's `fhirUser`).
    Practitioner {
        #[arg(long)]
        data_dir: PathBuf,
        name: String,
        /// The Practitioner's logical id (it must exist).
        practitioner: String,
    },
    /// List accounts.
    List {
        #[arg(long)]
        data_dir: PathBuf,
    },
    /// Set an initial password (read from the first line of standard input); it must be changed
    /// at the first login.
    Password {
        #[arg(long)]
        data_dir: PathBuf,
        name: String,
    },
    /// Issue new one-time recovery codes (printed once; earlier codes stop working), or with
    /// --revoke invalidate the unused ones.
    RecoveryCodes {
        #[arg(long)]
        data_dir: PathBuf,
        name: String,
        #[arg(long, default_value_t = 10)]
        count: usize,
        /// Invalidate the account's unused codes instead of issuing new ones.
        #[arg(long, conflicts_with = "count")]
        revoke: bool,
    },
    /// Lift a lockout after repeated login failures.
    Unlock {
        #[arg(long)]
        data_dir: PathBuf,
        name: String,
    },
    /// List or remove an account's WebAuthn credentials (passkeys, security keys).
    Webauthn {
        #[command(subcommand)]
        command: WebauthnCommand,
    },
    /// Issue a one-time temporary credential for a person who lost a factor (printed once).
    TempCredential {
        #[arg(long)]
        data_dir: PathBuf,
        name: String,
    },
    /// Disable an account at once: its sessions end and its tokens stop working.
    Disable {
        #[arg(long)]
        data_dir: PathBuf,
        name: String,
        /// Why (kept with the account and shown in the review report).
        #[arg(long)]
        reason: Option<String>,
    },
    /// Enable a disabled account again (its inactivity counts from now).
    Enable {
        #[arg(long)]
        data_dir: PathBuf,
        name: String,
    },
    /// Request a role for an account; it changes only when a manager approves (AUTH-7).
    /// Prints the request's id.
    RequestRole {
        #[arg(long)]
        data_dir: PathBuf,
        name: String,
        /// physician, administrator or auditor.
        role: String,
        #[arg(long)]
        reason: String,
    },
    /// Approve a role request (a manager; not the requester nor the account concerned).
    Approve {
        #[arg(long)]
        data_dir: PathBuf,
        id: i64,
        #[arg(long)]
        note: Option<String>,
    },
    /// Reject a role request (nothing changes).
    Reject {
        #[arg(long)]
        data_dir: PathBuf,
        id: i64,
        #[arg(long)]
        note: Option<String>,
    },
    /// List role requests (pending ones unless --all), as JSON.
    Requests {
        #[arg(long)]
        data_dir: PathBuf,
        #[arg(long)]
        all: bool,
    },
    /// Review report of every account: roles, last login and use, two factors, state, pending
    /// requests (AUTH-7).
    Report {
        #[arg(long)]
        data_dir: PathBuf,
        /// json or csv.
        #[arg(long, default_value = "json")]
        format: String,
    },
    /// Disable accounts unused for lifecycle.disable_after_days and expire old role requests
    /// (serve does this every lifecycle.sweep_interval).
    Sweep {
        #[arg(long)]
        data_dir: PathBuf,
    },
}

#[derive(Subcommand)]
enum PatientAccountCommand {
    /// Add an account for a patient, linked to their Patient resource. Set its initial password
    /// with `mamori user password NAME`; the patient changes it (and enrols a second factor, if
    /// login.two_factor_required names "patient") at the first login on the patient interface.
    Add {
        #[arg(long)]
        data_dir: PathBuf,
        name: String,
        /// The logical id of the patient's Patient resource.
        #[arg(long)]
        patient: String,
    },
}

#[derive(Subcommand)]
enum AuditCommand {
    /// Verify the audit trail offline: an export FILE, or a data directory's database, its
    /// checkpoints and witness file. Needs no database server and no secret key.
    Verify {
        /// An export written by `mamori audit export`.
        file: Option<PathBuf>,
        #[arg(long, conflicts_with = "file")]
        data_dir: Option<PathBuf>,
        /// The verifier key (`audit-signing.vkey`), obtained independently of the export.
        #[arg(long)]
        key: Option<PathBuf>,
        /// Extra signed checkpoints kept elsewhere (repeatable): they must agree with the log.
        #[arg(long)]
        checkpoint: Vec<PathBuf>,
    },
    /// Review views for auditors (AUD-4): one account's entries, one patient's accessors,
    /// per-patient counts, or accounts touching many patients per hour. Printed as JSON.
    Review {
        #[arg(long)]
        data_dir: PathBuf,
        #[arg(long, group = "view")]
        account: Option<String>,
        #[arg(long, group = "view")]
        patient: Option<String>,
        #[arg(long, group = "view")]
        counts: bool,
        /// Flag accounts that touched more than this many distinct patients in one hour.
        #[arg(long, group = "view")]
        max_patients_per_hour: Option<u64>,
        /// Accesses to patients' data outside these working hours (local time), e.g. 07:00-20:00.
        #[arg(long, group = "view")]
        outside_hours: Option<String>,
        /// UTC offset of the working hours.
        #[arg(long, default_value = "+09:00")]
        utc_offset: String,
        /// Every access to patients flagged VIP (meta.security CELEB) or staff (EMP).
        #[arg(long, group = "view")]
        flagged: bool,
        /// Every break-glass (emergency purpose) entry with its stated reason.
        #[arg(long, group = "view")]
        emergency: bool,
        /// Start of the period (FHIR instant or date).
        #[arg(long)]
        from: Option<String>,
        /// End of the period (FHIR instant, or a date meaning the end of that day).
        #[arg(long)]
        to: Option<String>,
    },
    /// Write entries, signed checkpoints and consistency proofs to FILE (JSON lines).
    Export {
        #[arg(long)]
        data_dir: PathBuf,
        #[arg(long)]
        out: PathBuf,
    },
}

#[derive(Subcommand)]
enum TokenCommand {
    /// Issue a bearer token for an account; it is printed once.
    Create {
        #[arg(long)]
        data_dir: PathBuf,
        #[arg(long)]
        user: String,
        /// Lifetime such as 30m, 8h or 7d (default from the configuration).
        #[arg(long)]
        ttl: Option<String>,
    },
    /// List an account's tokens: id, validity, dates (never the secret, which is not stored).
    List {
        #[arg(long)]
        data_dir: PathBuf,
        #[arg(long)]
        user: String,
    },
    /// Revoke one token by the id `list` shows; it stops working at once.
    Revoke {
        #[arg(long)]
        data_dir: PathBuf,
        #[arg(long)]
        user: String,
        id: String,
    },
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        match cli.command {
            Command::Init { data_dir, admin, password_hash_ms } => {
                commands::init(&data_dir, &admin, password_hash_ms).await
            }
            Command::Serve { data_dir, listen, dev } => serve::run(&data_dir, listen, dev).await,
            Command::User { command: UserCommand::Add { data_dir, name, role, practitioner } } => {
                commands::user_add(&data_dir, &name, &role, practitioner).await
            }
            Command::User { command: UserCommand::Practitioner { data_dir, name, practitioner } } => {
                commands::user_practitioner(&data_dir, &name, &practitioner).await
            }
            Command::User { command: UserCommand::List { data_dir } } => commands::user_list(&data_dir).await,
            Command::User { command: UserCommand::Password { data_dir, name } } => {
                commands::user_password(&data_dir, &name).await
            }
            Command::User { command: UserCommand::RecoveryCodes { data_dir, name, count, revoke } } => {
                commands::user_recovery_codes(&data_dir, &name, count, revoke).await
            }
            Command::User { command: UserCommand::Unlock { data_dir, name } } => {
                commands::user_unlock(&data_dir, &name).await
            }
            Command::User { command: UserCommand::Webauthn { command: WebauthnCommand::List { data_dir, name } } } => {
                commands::user_webauthn_list(&data_dir, &name).await
            }
            Command::User {
                command: UserCommand::Webauthn { command: WebauthnCommand::Remove { data_dir, name, credential } },
            } => commands::user_webauthn_remove(&data_dir, &name, &credential).await,
            Command::User { command: UserCommand::TempCredential { data_dir, name } } => {
                commands::user_temp_credential(&data_dir, &name).await
            }
            Command::User { command: UserCommand::Disable { data_dir, name, reason } } => {
                commands::user_disable(&data_dir, &name, reason.as_deref()).await
            }
            Command::User { command: UserCommand::Enable { data_dir, name } } => {
                commands::user_enable(&data_dir, &name).await
            }
            Command::User { command: UserCommand::RequestRole { data_dir, name, role, reason } } => {
                commands::user_request_role(&data_dir, &name, &role, &reason).await
            }
            Command::User { command: UserCommand::Approve { data_dir, id, note } } => {
                commands::user_decide(&data_dir, id, true, note.as_deref()).await
            }
            Command::User { command: UserCommand::Reject { data_dir, id, note } } => {
                commands::user_decide(&data_dir, id, false, note.as_deref()).await
            }
            Command::User { command: UserCommand::Requests { data_dir, all } } => {
                commands::user_requests(&data_dir, all).await
            }
            Command::User { command: UserCommand::Report { data_dir, format } } => {
                commands::user_report(&data_dir, &format).await
            }
            Command::User { command: UserCommand::Sweep { data_dir } } => commands::user_sweep(&data_dir).await,
            Command::PatientAccount { command: PatientAccountCommand::Add { data_dir, name, patient } } => {
                commands::patient_account_add(&data_dir, &name, &patient).await
            }
            Command::Token { command: TokenCommand::Create { data_dir, user, ttl } } => {
                commands::token_create(&data_dir, &user, ttl.as_deref()).await
            }
            Command::Token { command: TokenCommand::List { data_dir, user } } => {
                commands::token_list(&data_dir, &user).await
            }
            Command::Token { command: TokenCommand::Revoke { data_dir, user, id } } => {
                commands::token_revoke(&data_dir, &user, &id).await
            }
            Command::Client { command } => client::run(command).await,
            Command::Check { data_dir } => commands::check(&data_dir).await,
            Command::Audit { command: AuditCommand::Verify { file, data_dir, key, checkpoint } } => {
                match (file, data_dir) {
                    (Some(f), None) => audit::verify_export(&f, key.as_deref(), &checkpoint),
                    (None, Some(d)) => audit::verify_data_dir(&d, &checkpoint),
                    _ => Err(anyhow::anyhow!("give an export FILE or --data-dir DIR")),
                }
            }
            Command::Audit { command: AuditCommand::Export { data_dir, out } } => audit::export(&data_dir, &out).await,
            Command::Audit {
                command:
                    AuditCommand::Review {
                        data_dir,
                        account,
                        patient,
                        counts,
                        max_patients_per_hour,
                        outside_hours,
                        utc_offset,
                        flagged,
                        emergency,
                        from,
                        to,
                    },
            } => {
                let view = audit::ReviewView {
                    account,
                    patient,
                    counts,
                    max_patients_per_hour,
                    outside_hours,
                    utc_offset,
                    flagged,
                    emergency,
                };
                audit::review(&data_dir, view, from, to).await
            }
        }
    });
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
