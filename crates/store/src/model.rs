//! What the store hands back and what callers tell it about themselves.

use mamori_access::{Principal, Rights, Role};
use mamori_fhir::resource_type::ResourceType;

/// One version of one resource, decrypted and authenticated.
#[derive(Clone, Debug)]
pub struct VersionRecord {
    pub rtype: ResourceType,
    pub id: String,
    pub version: u64,
    pub last_updated_us: i64,
    pub deleted: bool,
    /// Logical ids of the patients whose compartment this version is in (for the audit trail).
    pub patients: Vec<String>,
    /// The resource JSON exactly as stored (id and meta filled in); `None` for a deletion.
    pub body: Option<Vec<u8>>,
}

impl VersionRecord {
    /// `Type/id/_history/version`: the FHIR version-specific reference.
    pub fn versioned_ref(&self) -> String {
        format!("{}/{}/_history/{}", self.rtype, self.id, self.version)
    }
}

/// Who is acting. Every store call takes one, and every store call writes an audit row with it.
#[derive(Clone, Debug)]
pub enum Actor {
    /// An authenticated person (API token today, interactive login later).
    Person(Principal),
    /// The local operator running a `mamori` command with access to the data directory.
    Operator(String),
    /// Authentication failed or was absent.
    Anonymous,
}

/// The request as the audit trail sees it: who, from where, under which request id.
#[derive(Clone, Debug)]
pub struct AccessContext {
    pub request_id: String,
    pub actor: Actor,
    /// Remote address of the client (or "local" for operator commands).
    pub source: String,
    /// What the request may do with clinical data, per operation and information category,
    /// decided once by the policy (ACL-1..3); the store applies it to every resource it would
    /// disclose or change.
    pub rights: Rights,
    /// Break-glass (purpose `emergency`): the stated reason, recorded with every audit row.
    pub emergency: Option<String>,
    /// The OAuth client the request came through (AUTH-6), recorded with every audit row: for a
    /// user's token the actor is the person and this names the app; for a system client both
    /// name the client.
    pub client: Option<String>,
}

impl AccessContext {
    /// A context with no clinical rights (refusals, logins) from `source`.
    pub fn anonymous(request_id: impl Into<String>, source: impl Into<String>) -> AccessContext {
        AccessContext {
            request_id: request_id.into(),
            actor: Actor::Anonymous,
            source: source.into(),
            rights: Rights::none(),
            emergency: None,
            client: None,
        }
    }

    /// The local operator: unrestricted (they hold the data directory and its key anyway).
    pub fn operator(request_id: impl Into<String>, name: impl Into<String>) -> AccessContext {
        AccessContext {
            request_id: request_id.into(),
            actor: Actor::Operator(name.into()),
            source: "local".into(),
            rights: Rights::unrestricted(),
            emergency: None,
            client: None,
        }
    }

    pub fn actor_name(&self) -> Option<&str> {
        match &self.actor {
            Actor::Person(p) => Some(&p.account),
            Actor::Operator(name) => Some(name),
            Actor::Anonymous => None,
        }
    }

    pub fn role(&self) -> Option<Role> {
        match &self.actor {
            Actor::Person(p) => Some(p.role),
            _ => None,
        }
    }
}

/// The interaction an audit row records.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    Read,
    Vread,
    Search,
    Create,
    Update,
    Patch,
    Delete,
    HistoryInstance,
    HistoryType,
    HistorySystem,
    Transaction,
    Batch,
    Capabilities,
    /// A request refused before it reached storage (authentication, authorisation, bad input).
    Refused,
    AccountCreate,
    AccountList,
    TokenCreate,
    /// Someone listed an account's API tokens (never their secrets).
    TokenList,
    /// An API token was revoked; it stopped working at once.
    TokenRevoke,
    Initialise,
    IntegrityCheck,
    AuditReview,
    /// The audit trail was exported for an auditor (it names accounts and patient ids).
    AuditExport,
    /// The system clock stepped back (AUD-3).
    ClockStep,
    /// The operating system's clock-synchronisation status, recorded at start-up (AUD-3).
    ClockStatus,
    /// Someone read the server status.
    Status,
    /// A person logged in (a step of it: password, second factor, temporary credential).
    Login,
    /// A login step failed (AUTH-5); the detail says why, the answer to the client did not.
    LoginFailure,
    /// An account or a source address was locked out after repeated failures (AUTH-5).
    Lockout,
    /// An administrator lifted a lockout.
    Unlock,
    Logout,
    /// A session was ended because the account reached its session limit (AUTH-6).
    SessionEvict,
    /// An administrator set an initial password (must be changed at first login).
    PasswordSet,
    /// A person changed their own password.
    PasswordChange,
    /// A TOTP second factor was enrolled (pending, then active on proof of a code).
    TotpEnrol,
    /// A WebAuthn challenge was issued (registration or the second step of a login).
    WebauthnChallenge,
    /// A WebAuthn credential was registered (or its registration refused).
    WebauthnEnrol,
    /// A WebAuthn credential was removed (by its holder or an administrator).
    WebauthnRemove,
    /// Someone listed an account's WebAuthn credentials.
    WebauthnList,
    /// An assertion's signature counter did not increase: possibly a cloned authenticator.
    WebauthnCloneSuspected,
    /// Recovery codes were issued (AUTH-8).
    RecoveryCodesIssue,
    /// An administrator invalidated an account's unused recovery codes (AUTH-8).
    RecoveryCodesRevoke,
    /// A lifecycle sweep was run on request (its changes have rows of their own).
    AccountSweep,
    /// A recovery code was used instead of the second factor (AUTH-8).
    RecoveryCodeUse,
    /// An administrator issued a temporary credential (AUTH-8).
    TemporaryCredentialIssue,
    /// A temporary credential (or the setup secret) was used.
    TemporaryCredentialUse,
    /// An account was disabled; its sessions ended at once (AUTH-7).
    AccountDisable,
    /// A disabled account was enabled again (AUTH-7).
    AccountEnable,
    /// A role was requested for an account (AUTH-7).
    RoleRequest,
    /// A manager approved a role request: the account's role changed (AUTH-7).
    RoleApprove,
    /// A manager rejected a role request: nothing changed (AUTH-7).
    RoleReject,
    /// A role request expired undecided: nothing changed (AUTH-7).
    RoleRequestExpire,
    /// Someone listed role requests.
    RoleRequestList,
    /// Someone produced the account review report (AUTH-7).
    AccountReport,
    /// An OAuth client was registered (AUTH-6).
    OAuthClientRegister,
    /// An OAuth client was removed; its tokens stopped working.
    OAuthClientRemove,
    /// Someone listed the OAuth clients.
    OAuthClientList,
    /// An authorisation code was issued to an app after a person signed in.
    OAuthAuthorize,
    /// Tokens were issued (code exchange or client credentials).
    OAuthToken,
    /// A refresh token was exchanged for new tokens (rotation).
    OAuthRefresh,
    /// Tokens were revoked (by the client, or on reuse of a code or refresh token).
    OAuthRevoke,
    /// A token request was refused; the detail says why.
    OAuthFailure,
    /// An EHR asked for a launch context for a patient (SMART `launch`, AUTH-6).
    OAuthLaunch,
    /// An account was linked to its Practitioner (the ID token's `fhirUser`).
    PractitionerLink,
    /// A server key kept in the database was generated (the ID token signing key).
    ServerKeyCreate,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Read => "read",
            Action::Vread => "vread",
            Action::Search => "search-type",
            Action::Create => "create",
            Action::Update => "update",
            Action::Patch => "patch",
            Action::Delete => "delete",
            Action::HistoryInstance => "history-instance",
            Action::HistoryType => "history-type",
            Action::HistorySystem => "history-system",
            Action::Transaction => "transaction",
            Action::Batch => "batch",
            Action::Capabilities => "capabilities",
            Action::Refused => "refused",
            Action::AccountCreate => "account-create",
            Action::AccountList => "account-list",
            Action::TokenCreate => "token-create",
            Action::TokenList => "token-list",
            Action::TokenRevoke => "token-revoke",
            Action::Initialise => "initialise",
            Action::IntegrityCheck => "integrity-check",
            Action::AuditReview => "audit-review",
            Action::AuditExport => "audit-export",
            Action::ClockStep => "clock-step",
            Action::ClockStatus => "clock-status",
            Action::Status => "status",
            Action::Login => "login",
            Action::LoginFailure => "login-failure",
            Action::Lockout => "lockout",
            Action::Unlock => "unlock",
            Action::Logout => "logout",
            Action::SessionEvict => "session-evict",
            Action::PasswordSet => "password-set",
            Action::PasswordChange => "password-change",
            Action::TotpEnrol => "totp-enrol",
            Action::WebauthnChallenge => "webauthn-challenge",
            Action::WebauthnEnrol => "webauthn-enrol",
            Action::WebauthnRemove => "webauthn-remove",
            Action::WebauthnList => "webauthn-list",
            Action::WebauthnCloneSuspected => "webauthn-clone-suspected",
            Action::RecoveryCodesIssue => "recovery-codes-issue",
            Action::RecoveryCodeUse => "recovery-code-use",
            Action::RecoveryCodesRevoke => "recovery-codes-revoke",
            Action::AccountSweep => "account-sweep",
            Action::TemporaryCredentialIssue => "temporary-credential-issue",
            Action::TemporaryCredentialUse => "temporary-credential-use",
            Action::AccountDisable => "account-disable",
            Action::AccountEnable => "account-enable",
            Action::RoleRequest => "role-request",
            Action::RoleApprove => "role-approve",
            Action::RoleReject => "role-reject",
            Action::RoleRequestExpire => "role-request-expire",
            Action::RoleRequestList => "role-request-list",
            Action::AccountReport => "account-report",
            Action::OAuthClientRegister => "oauth-client-register",
            Action::OAuthClientRemove => "oauth-client-remove",
            Action::OAuthClientList => "oauth-client-list",
            Action::OAuthAuthorize => "oauth-authorize",
            Action::OAuthToken => "oauth-token",
            Action::OAuthRefresh => "oauth-refresh",
            Action::OAuthRevoke => "oauth-revoke",
            Action::OAuthFailure => "oauth-failure",
            Action::OAuthLaunch => "oauth-launch",
            Action::PractitionerLink => "practitioner-link",
            Action::ServerKeyCreate => "server-key-create",
        }
    }
}

/// One audit row as the request path hands it over; the store adds the trusted time.
#[derive(Clone, Debug)]
pub struct AuditEvent {
    pub action: Action,
    pub rtype: Option<String>,
    pub rid: Option<String>,
    pub version: Option<u64>,
    pub patients: Vec<String>,
    /// HTTP-style status of the outcome (200, 201, 404, 412, 500…).
    pub outcome: u16,
    /// A short machine-readable reason (FHIR issue code); never resource content.
    pub detail: Option<String>,
}

impl AuditEvent {
    pub fn new(action: Action, outcome: u16) -> Self {
        AuditEvent { action, rtype: None, rid: None, version: None, patients: Vec::new(), outcome, detail: None }
    }

    pub fn of_record(action: Action, outcome: u16, r: &VersionRecord) -> Self {
        AuditEvent {
            action,
            rtype: Some(r.rtype.to_string()),
            rid: Some(r.id.clone()),
            version: Some(r.version),
            patients: r.patients.clone(),
            outcome,
            detail: None,
        }
    }

    pub fn with_target(mut self, rtype: impl Into<String>, rid: Option<String>) -> Self {
        self.rtype = Some(rtype.into());
        self.rid = rid;
        self
    }

    pub fn with_detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = Some(detail.into());
        self
    }
}
