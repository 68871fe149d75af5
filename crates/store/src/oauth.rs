//! OAuth 2.0 for SMART on FHIR (AUTH-6): the client registry, authorisation codes (PKCE S256),
//! access and refresh tokens, revocation and the `private_key_jwt` replay cache.
//!
//! Every secret (code, access token, refresh token) is random, shown once, and stored as its
//! SHA-256 only. Tokens belong to a *family*: the tokens issued from one code (or one client
//! credentials grant) and every rotation of them. A family of a person's app is bound to the
//! login session the person created on the authorisation page, so the session's idle and
//! absolute timeouts, the per-account session limit, logout, password change and account
//! disabling end the app's tokens too. Reusing a spent code or a rotated refresh token revokes
//! the whole family (OAuth 2.0 Security BCP §4.14).
//!
//! A family also records how the person signed in (`factors`: a password alone, or with which
//! second factor) and the network zone of the sign-in page (ACL-3). The per-zone two-factor rule
//! of login sessions (AUTH-2, `LoginPolicy::factors_suffice`) applies to the family's tokens at
//! the zone of every request, code exchange and refresh: a password-only sign-in where that was
//! allowed (a clerk on the HIS network) does not carry over to a zone where the role needs two
//! factors.
//!
//! Protocol refusals (`invalid_grant`, …) are the inner error of [`Refusal`]; they are audited
//! as `oauth-failure` rows with the reason, while the client only learns the RFC 6749 code.

use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use mamori_access::scope::ScopeSet;
use mamori_access::secret::{IssuedSecret, SecretKind, presented};
use mamori_access::{Principal, Role, SharedLoginPolicy, TokenHash};
use rusqlite::{Connection, OptionalExtension, params};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use crate::identity::{Events, Kept, dur_us, person};
use crate::model::{AccessContext, Action, AuditEvent};
use crate::writes::Tx;
use crate::{SqliteStore, StoreError, StoreFuture};

/// Schema of the OAuth tables, appended to the records database's migration chain.
pub(crate) const MIGRATION: &str = r#"
-- Registered clients (no dynamic registration): 'public' SMART apps with exact redirect URIs,
-- 'system' backend services with a JWK Set of public keys and a job type for the policy.
CREATE TABLE oauth_client (
    client_id     TEXT PRIMARY KEY,
    kind          TEXT    NOT NULL,
    name          TEXT    NOT NULL,
    redirect_uris TEXT    NOT NULL,
    scope         TEXT    NOT NULL,
    jwks          TEXT,
    role          TEXT,
    created_us    INTEGER NOT NULL
) WITHOUT ROWID;
-- Authorisation codes: single use, short-lived, bound to client, redirect URI, PKCE challenge
-- and the login session. family: the tokens the code was exchanged for (revoked on replay).
CREATE TABLE oauth_code (
    hash         BLOB PRIMARY KEY,
    client_id    TEXT    NOT NULL,
    account      TEXT    NOT NULL,
    session      BLOB    NOT NULL,
    redirect_uri TEXT    NOT NULL,
    challenge    TEXT    NOT NULL,
    scope        TEXT    NOT NULL,
    expires_us   INTEGER NOT NULL,
    used_us      INTEGER,
    family       TEXT
) WITHOUT ROWID;
-- Token families: one grant and its rotations. account/session NULL for system clients.
CREATE TABLE oauth_family (
    id         TEXT PRIMARY KEY,
    client_id  TEXT    NOT NULL,
    account    TEXT,
    session    BLOB,
    scope      TEXT    NOT NULL,
    created_us INTEGER NOT NULL,
    revoked_us INTEGER
) WITHOUT ROWID;
CREATE INDEX oauth_family_by_client ON oauth_family (client_id);
-- Access and refresh tokens (SHA-256). used_us: a refresh token's rotation.
CREATE TABLE oauth_token (
    hash       BLOB PRIMARY KEY,
    family     TEXT    NOT NULL REFERENCES oauth_family(id),
    kind       TEXT    NOT NULL,
    scope      TEXT    NOT NULL,
    created_us INTEGER NOT NULL,
    expires_us INTEGER NOT NULL,
    used_us    INTEGER
) WITHOUT ROWID;
CREATE INDEX oauth_token_by_family ON oauth_token (family);
-- private_key_jwt replay cache: a jti is refused until its assertion has expired.
CREATE TABLE oauth_jti (
    client_id  TEXT    NOT NULL,
    jti        TEXT    NOT NULL,
    expires_us INTEGER NOT NULL,
    PRIMARY KEY (client_id, jti)
) WITHOUT ROWID;
"#;

/// AUTH-2/ACL-3: the sign-in behind a family (factors, zone of the sign-in page) and the zone of
/// the page on each code. Families from before this have their session's factors.
pub(crate) const SIGN_IN_MIGRATION: &str = r#"
ALTER TABLE oauth_code ADD COLUMN zone TEXT;
ALTER TABLE oauth_family ADD COLUMN factors TEXT;
ALTER TABLE oauth_family ADD COLUMN zone TEXT;
UPDATE oauth_family SET factors = (SELECT s.factors FROM login_session s WHERE s.hash = oauth_family.session)
 WHERE session IS NOT NULL;
"#;

/// How long an authorisation code may be exchanged.
pub const CODE_TTL_US: i64 = 60_000_000;

/// Token lifetimes, from `[oauth]` in the configuration.
#[derive(Clone, Copy, Debug)]
pub struct Lifetimes {
    pub access: time::Duration,
    /// A refresh token's own limit; the login session's idle and absolute limits apply as well.
    pub refresh: time::Duration,
}

impl Default for Lifetimes {
    fn default() -> Self {
        Lifetimes { access: time::Duration::minutes(5), refresh: time::Duration::hours(10) }
    }
}

/// A registered client.
#[derive(Clone, Debug)]
pub struct Client {
    pub client_id: String,
    pub kind: ClientKind,
    pub name: String,
    pub scope: ScopeSet,
    pub created_us: i64,
}

#[derive(Clone, Debug)]
pub enum ClientKind {
    /// A SMART app used by people: authorisation code + PKCE, exact redirect URIs.
    Public { redirect_uris: Vec<String> },
    /// A backend service: client credentials with `private_key_jwt`; acts with `role`.
    System { jwks: String, role: Role },
}

impl ClientKind {
    pub fn as_str(&self) -> &'static str {
        match self {
            ClientKind::Public { .. } => "public",
            ClientKind::System { .. } => "system",
        }
    }
}

/// A client registration as an operator or administrator writes it (CLI flags or the admin API's
/// JSON), parsed and checked by [`ClientRegistration::parse`] — one set of rules for both.
#[derive(Clone, Debug, Default)]
pub struct ClientRegistration {
    pub client_id: String,
    pub name: String,
    /// Space-separated scopes the client may ever be granted.
    pub scope: String,
    /// An app used by people: its exact redirect URIs.
    pub redirect_uris: Vec<String>,
    /// A backend service: its public JWK Set (`{"keys": […]}`) or one public JWK.
    pub jwks: Option<String>,
    /// A backend service: the staff job type it acts as.
    pub role: Option<String>,
}

impl ClientRegistration {
    /// The client's kind and scopes, or why the registration is refused.
    pub fn parse(&self) -> Result<(ClientKind, ScopeSet), StoreError> {
        let bad = |m: String| StoreError::invalid("invalid", m);
        let scope: ScopeSet = self.scope.parse().map_err(|e| bad(format!("scope: {e}")))?;
        if scope.clinical.is_empty() {
            return Err(bad(
                "the scope names no resource scope (such as user/*.rs, patient/*.rs or system/Observation.rs)".into(),
            ));
        }
        let kind = match (self.redirect_uris.is_empty(), &self.jwks, &self.role) {
            (false, None, None) => {
                if self.redirect_uris.len() > 10 {
                    return Err(bad("at most 10 redirect URIs".into()));
                }
                for u in &self.redirect_uris {
                    check_redirect_uri(u)?;
                }
                ClientKind::Public { redirect_uris: self.redirect_uris.clone() }
            }
            (true, Some(jwks), Some(role)) => {
                let jwks = key_set(jwks)?;
                mamori_access::client_assertion::ClientKeys::parse(&jwks).map_err(|e| bad(e.to_string()))?;
                let role: Role = role.parse().map_err(|e| bad(format!("role: {e}")))?;
                // The rules of the kind itself (a staff job type, scopes of its kind) are
                // `check_registration`'s, applied to every registration.
                ClientKind::System { jwks, role }
            }
            _ => {
                return Err(bad(
                    "give redirect URIs for an app used by people, or a JWK Set and a role for a backend service"
                        .into(),
                ));
            }
        };
        Ok((kind, scope))
    }
}

/// A JWK Set as stored: a single JWK (an object with `kty`) is wrapped as `{"keys": [jwk]}`.
fn key_set(raw: &str) -> Result<String, StoreError> {
    match serde_json::from_str::<serde_json::Value>(raw) {
        Ok(v) if v.get("kty").is_some() && v.get("keys").is_none() => Ok(serde_json::json!({"keys": [v]}).to_string()),
        _ => Ok(raw.to_string()),
    }
}

/// A redirect URI must be absolute, without a fragment; plain http only for loopback (RFC 8252).
pub fn check_redirect_uri(u: &str) -> Result<(), StoreError> {
    let shown: String = u.chars().take(80).collect();
    let bad = |m: &str| StoreError::invalid("invalid", format!("redirect URI '{shown}' {m}"));
    let Some((scheme, rest)) = u.split_once(':') else { return Err(bad("is not absolute")) };
    if u.contains('#') || u.chars().any(|c| c.is_whitespace() || c.is_control()) || u.len() > 512 {
        return Err(bad("must have no fragment or spaces and be at most 512 characters"));
    }
    if scheme.is_empty() || !scheme.bytes().all(|b| b.is_ascii_alphanumeric() || b"+-.".contains(&b)) {
        return Err(bad("is not absolute"));
    }
    if scheme == "http" {
        let host = rest.trim_start_matches("//").split(['/', ':', '?']).next().unwrap_or("");
        if !matches!(host, "127.0.0.1" | "localhost") && !rest.starts_with("//[::1]") {
            return Err(bad("uses plain http, which is allowed for loopback addresses only; use https"));
        }
    }
    Ok(())
}

/// What an authorisation code binds.
pub struct CodeGrant {
    /// The login session the person created on the authorisation page.
    pub session: TokenHash,
    pub account: String,
    pub client_id: String,
    pub redirect_uri: String,
    /// PKCE S256 challenge: BASE64URL(SHA-256(verifier)).
    pub challenge: String,
    pub scope: ScopeSet,
    /// The network zone of the sign-in page's request (recorded with the tokens).
    pub zone: Option<String>,
    /// EHR launch value and OpenID Connect nonce (`oauth_launch`).
    pub context: crate::oauth_launch::CodeContext,
}

/// A token request with an authorisation code (RFC 6749 §4.1.3, RFC 7636 §4.5).
pub struct CodeExchange {
    pub client_id: String,
    pub code: Zeroizing<String>,
    pub redirect_uri: String,
    pub verifier: Zeroizing<String>,
    /// The network zone of the token request: the sign-in must be strong enough there.
    pub zone: Option<String>,
}

/// A token request with a refresh token (RFC 6749 §6).
pub struct RefreshRequest {
    pub client_id: String,
    pub refresh_token: Zeroizing<String>,
    /// Narrower scopes, if asked for.
    pub scope: Option<ScopeSet>,
    /// The network zone of the token request: the sign-in must be strong enough there.
    pub zone: Option<String>,
}

/// Tokens handed to a client (RFC 6749 §5.1).
pub struct Tokens {
    pub access_token: Zeroizing<String>,
    pub expires_in: i64,
    pub refresh_token: Option<Zeroizing<String>>,
    pub scope: ScopeSet,
    /// The person, for user tokens.
    pub account: Option<String>,
    /// The EHR launch context's Patient: the compartment the tokens are confined to.
    pub patient: Option<String>,
    /// The OpenID Connect nonce of the authorisation request (code exchange only).
    pub nonce: Option<String>,
}

/// A protocol refusal: the RFC 6749 §5.2 error code, and the reason for the audit trail (not
/// shown to the client beyond a generic description).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    pub error: &'static str,
    pub reason: &'static str,
}

impl Refusal {
    fn grant(reason: &'static str) -> Refusal {
        Refusal { error: "invalid_grant", reason }
    }
}

/// What an access token stands for at request time.
#[derive(Clone, Debug)]
pub struct OAuthGrant {
    /// The person, or for a system client `client:<id>` with the client's job type.
    pub principal: Principal,
    pub client_id: String,
    pub scope: ScopeSet,
    /// How the person signed in; `None` for a system client (no person, no sign-in).
    pub sign_in: Option<SignIn>,
    /// The EHR launch context's Patient: the request is confined to its compartment.
    pub patient: Option<String>,
}

/// How the person behind a token signed in, and whether that is strong enough for the zone of
/// the request at hand (AUTH-2 per zone, ACL-3).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SignIn {
    /// As the login session records them: `password`, `password+totp`, `password+webauthn`,
    /// `password+recovery-code`.
    pub factors: String,
    /// The zone of the sign-in page.
    pub zone: Option<String>,
    /// `LoginPolicy::factors_suffice` for the person's role at the request's zone. A token whose
    /// sign-in is not strong enough must be refused (the store does not count its use).
    pub suffices: bool,
}

impl SignIn {
    /// For the audit trail: why this sign-in is refused from `here`.
    pub fn refusal_detail(&self, here: Option<&str>) -> String {
        format!(
            "sign-in with {} in zone {} is not enough from zone {}: two factors required",
            self.factors,
            self.zone.as_deref().unwrap_or("?"),
            here.unwrap_or("?")
        )
    }
}

/// The reason (and RFC 6749 `invalid_grant` refusal) when a code or refresh token is presented
/// from a zone where the person's sign-in is not strong enough.
pub const SIGN_IN_TOO_WEAK: &str = "the sign-in is not strong enough for this network zone";

/// The principal name a system client acts under: account names cannot contain ':', so it
/// never collides with a person.
pub fn client_principal_name(client_id: &str) -> String {
    format!("client:{client_id}")
}

/// Client ids: short and plain, like account names.
pub fn check_client_id(raw: &str) -> Result<(), StoreError> {
    let ok = (1..=64).contains(&raw.len())
        && raw.as_bytes()[0].is_ascii_alphanumeric()
        && raw.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(StoreError::invalid(
            "invalid",
            "client ids are 1-64 characters: letters, digits, '.', '_' or '-', starting with a letter or digit",
        ))
    }
}

/// PKCE S256: BASE64URL(SHA-256(ASCII(verifier))) (RFC 7636 §4.2). Verifiers are 43-128
/// unreserved characters (§4.1).
pub fn pkce_s256(verifier: &str) -> Option<String> {
    let ok = (43..=128).contains(&verifier.len())
        && verifier.bytes().all(|b| b.is_ascii_alphanumeric() || b"-._~".contains(&b));
    ok.then(|| URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes())))
}

/// The OAuth operations; each is audited.
pub trait OAuth: Send + Sync {
    /// A client by id (no audit: used to validate a request before anything is issued).
    fn oauth_client(&self, client_id: String) -> StoreFuture<'_, Option<Client>>;
    fn issue_code(&self, ctx: AccessContext, grant: CodeGrant) -> StoreFuture<'_, Zeroizing<String>>;
    fn exchange_code(
        &self,
        ctx: AccessContext,
        req: CodeExchange,
        policy: SharedLoginPolicy,
        lifetimes: Lifetimes,
    ) -> StoreFuture<'_, Result<Tokens, Refusal>>;
    fn refresh(
        &self,
        ctx: AccessContext,
        req: RefreshRequest,
        policy: SharedLoginPolicy,
        lifetimes: Lifetimes,
    ) -> StoreFuture<'_, Result<Tokens, Refusal>>;
    /// Issues a system client's token after its assertion was verified; `jti` until `jti_exp_s`
    /// is remembered and refused if seen again.
    fn client_credentials(
        &self,
        ctx: AccessContext,
        client_id: String,
        jti: String,
        jti_exp_s: i64,
        scope: ScopeSet,
        lifetimes: Lifetimes,
    ) -> StoreFuture<'_, Result<Tokens, Refusal>>;
    /// RFC 7009: revokes an access token, or a refresh token and its whole family. Unknown
    /// tokens are not an error (the answer is the same).
    fn revoke_token(&self, ctx: AccessContext, client_id: String, token: Zeroizing<String>) -> StoreFuture<'_, ()>;
    /// Records a refused token request (bad client, bad assertion, bad parameters).
    fn oauth_failure(&self, ctx: AccessContext, client_id: Option<String>, reason: String) -> StoreFuture<'_, ()>;
    /// Resolves an access token: unexpired, family not revoked, client registered, and for a
    /// person's token the login session alive (idle and absolute limits) and the account enabled.
    /// For a person's token, [`SignIn::suffices`] says whether the sign-in is strong enough for
    /// the request's network `zone`; if not, the use does not count as use of the session.
    fn authenticate_oauth(
        &self,
        token: TokenHash,
        zone: Option<String>,
        policy: SharedLoginPolicy,
    ) -> StoreFuture<'_, Option<OAuthGrant>>;
    /// Registers a client (administration; audited, refusals too).
    fn register_oauth_client(&self, ctx: AccessContext, registration: ClientRegistration) -> StoreFuture<'_, Client>;
    /// Every registered client (audited).
    fn oauth_clients(&self, ctx: AccessContext) -> StoreFuture<'_, Vec<Client>>;
    /// Removes a client; its tokens stop working at once. Returns the token families revoked.
    fn remove_oauth_client(&self, ctx: AccessContext, client_id: String) -> StoreFuture<'_, usize>;
}

fn client_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Option<Client>> {
    let client_id: String = r.get(0)?;
    let kind: String = r.get(1)?;
    let name: String = r.get(2)?;
    let uris: String = r.get(3)?;
    let scope: String = r.get(4)?;
    let jwks: Option<String> = r.get(5)?;
    let role: Option<String> = r.get(6)?;
    let created_us: i64 = r.get(7)?;
    let Ok(scope) = scope.parse::<ScopeSet>() else { return Ok(None) };
    let kind = match (kind.as_str(), jwks, role.and_then(|r| r.parse::<Role>().ok())) {
        ("public", _, _) => ClientKind::Public { redirect_uris: serde_json::from_str(&uris).unwrap_or_default() },
        ("system", Some(jwks), Some(role)) => ClientKind::System { jwks, role },
        _ => return Ok(None),
    };
    Ok(Some(Client { client_id, kind, name, scope, created_us }))
}

const CLIENT_COLUMNS: &str = "client_id, kind, name, redirect_uris, scope, jwks, role, created_us";

pub(crate) fn load_client(c: &Connection, client_id: &str) -> Result<Option<Client>, StoreError> {
    Ok(c.prepare_cached(&format!("SELECT {CLIENT_COLUMNS} FROM oauth_client WHERE client_id = ?1"))?
        .query_row([client_id], client_from_row)
        .optional()?
        .flatten())
}

fn client_ctx(ctx: &AccessContext, client_id: &str) -> AccessContext {
    AccessContext { client: Some(client_id.to_string()), ..ctx.clone() }
}

fn refusal_event(reason: &str) -> AuditEvent {
    AuditEvent::new(Action::OAuthFailure, 400).with_detail(reason.to_string())
}

/// Whether a login session is alive now: present, issued for the interface `policy` serves
/// (ACL-4: a token of a patient's sign-in works only at the patient interface, a staff one only
/// at the staff interface), within its absolute and idle limits, and its account enabled and
/// admitted there.
fn session_alive(
    c: &Connection,
    session: &[u8],
    now: i64,
    policy: &mamori_access::LoginPolicy,
) -> Result<Option<LiveSession>, StoreError> {
    let row: Option<(String, String, i64, i64, String)> = c
        .prepare_cached(
            "SELECT s.account, a.role, s.last_used_us, s.expires_us, s.factors FROM login_session s \
             JOIN account a ON a.name = s.account WHERE s.hash = ?1 AND a.disabled_us IS NULL \
             AND s.audience = ?2",
        )?
        .query_row(params![session, policy.audience.as_str()], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
        })
        .optional()?;
    let Some((account, role, last_used, expires, factors)) = row else { return Ok(None) };
    if now >= expires || now >= last_used + dur_us(policy.sessions.idle_timeout) {
        return Ok(None);
    }
    let role = role.parse::<Role>().ok().filter(|r| policy.admits(*r));
    Ok(role.map(|role| LiveSession { account, role, last_used, factors }))
}

/// A login session that is alive, and what it records.
struct LiveSession {
    account: String,
    role: Role,
    last_used: i64,
    /// How the person signed in (`password`, `password+totp`, …).
    factors: String,
}

/// A refresh token's row: family, scope, expiry, rotation, client, account, session, revocation.
type RefreshRow = (String, String, i64, Option<i64>, String, Option<String>, Option<Vec<u8>>, Option<i64>);
/// A family's sign-in: factors and zone of the sign-in page.
type SignInRow = (Option<String>, Option<String>);

/// The sign-in recorded with a family, judged for `role` at the request's zone `here`. A family
/// without recorded factors counts as a password alone (fail closed).
fn sign_in_at(
    factors: Option<String>,
    zone: Option<String>,
    role: Role,
    here: Option<&str>,
    policy: &mamori_access::LoginPolicy,
) -> SignIn {
    let factors = factors.unwrap_or_else(|| mamori_access::login::PASSWORD_ONLY.to_string());
    let suffices = policy.factors_suffice(role, &factors, here);
    SignIn { factors, zone, suffices }
}

struct Issued {
    access: Zeroizing<String>,
    refresh: Option<Zeroizing<String>>,
}

fn issue_tokens(
    c: &Connection,
    family: &str,
    scope: &ScopeSet,
    now: i64,
    lifetimes: Lifetimes,
    with_refresh: bool,
) -> Result<Issued, StoreError> {
    let scope_s = scope.to_string();
    let a = IssuedSecret::generate(SecretKind::OAuthAccess);
    let mut ins = c.prepare_cached(
        "INSERT INTO oauth_token (hash, family, kind, scope, created_us, expires_us, used_us) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, NULL)",
    )?;
    ins.execute(params![&a.hash().0[..], family, "access", scope_s, now, now + dur_us(lifetimes.access)])?;
    let refresh = if with_refresh {
        let r = IssuedSecret::generate(SecretKind::OAuthRefresh);
        ins.execute(params![&r.hash().0[..], family, "refresh", scope_s, now, now + dur_us(lifetimes.refresh)])?;
        Some(Zeroizing::new(r.text().to_string()))
    } else {
        None
    };
    Ok(Issued { access: Zeroizing::new(a.text().to_string()), refresh })
}

/// Revokes a family (every token in it stops working at once); returns whether it was live.
fn revoke_family(c: &Connection, family: &str, now: i64) -> Result<bool, StoreError> {
    let n = c.execute(
        "UPDATE oauth_family SET revoked_us = ?1 WHERE id = ?2 AND revoked_us IS NULL",
        params![now, family],
    )?;
    Ok(n == 1)
}

/// The rules every registration meets, whoever makes it.
fn check_registration(client_id: &str, name: &str, kind: &ClientKind, scope: &ScopeSet) -> Result<(), StoreError> {
    use mamori_access::scope::Context;
    check_client_id(client_id)?;
    if name.trim().is_empty() || name.chars().count() > 100 || name.chars().any(char::is_control) {
        return Err(StoreError::invalid("invalid", "the client name must be 1-100 printable characters"));
    }
    let refusal = match kind {
        ClientKind::Public { redirect_uris } if redirect_uris.is_empty() => {
            "a public (SMART app) client needs at least one redirect URI"
        }
        ClientKind::Public { .. } if scope.has_context(Context::System) => "system/ scopes are for system clients",
        ClientKind::System { .. } if scope.has_context(Context::User) => "user/ scopes are for apps used by people",
        ClientKind::System { .. } if scope.has_context(Context::Patient) => {
            "patient/ scopes are for apps used by patients"
        }
        // AUTH-6: launch contexts and ID tokens come with a person's sign-in.
        ClientKind::System { .. } if scope.launch || scope.launch_patient || scope.openid || scope.fhir_user => {
            "launch, launch/patient, openid and fhirUser are for apps used by people; a backend service has no sign-in"
        }
        // ACL-4: an app is either for staff (user/ scopes, or patient/ scopes with EHR launch at
        // the staff interface) or for patients (patient/ scopes, patient interface); one
        // registration is never both.
        ClientKind::Public { .. } if scope.has_context(Context::User) && scope.has_context(Context::Patient) => {
            "a client is for staff (user/ scopes) or for patients (patient/ scopes), not both: register two"
        }
        ClientKind::Public { .. } if scope.launch && scope.launch_patient => {
            "a client is for staff (EHR launch: launch) or for patients (launch/patient), not both: register two"
        }
        // AUTH-6: a launch context is a patient context, which only patient/ scopes use (an
        // EHR-launched token is confined to the launch patient; user/ scopes are not).
        ClientKind::Public { .. } if (scope.launch || scope.launch_patient) && !scope.has_context(Context::Patient) => {
            "launch and launch/patient give a patient context, which only patient/ scopes use: register patient/ scopes \
             with them"
        }
        // A backend service acts as a staff job type (ACL-4), whoever registers it.
        ClientKind::System { role: Role::Patient, .. } => {
            "a backend service acts as a staff job type; patients sign in at the patient interface (ACL-4)"
        }
        _ => return Ok(()),
    };
    Err(StoreError::invalid("invalid", refusal))
}

impl SqliteStore {
    // ---- operator actions (CLI), audited ----------------------------------------------------

    /// Registers a client. The scopes are what the client may ever be granted.
    pub async fn register_client(
        &self,
        ctx: AccessContext,
        client_id: String,
        name: String,
        kind: ClientKind,
        scope: ScopeSet,
    ) -> Result<(), StoreError> {
        if let Err(e) = check_registration(&client_id, &name, &kind, &scope) {
            let ev = AuditEvent::new(Action::OAuthClientRegister, e.status())
                .with_target("oauth-client", check_client_id(&client_id).is_ok().then_some(client_id))
                .with_detail(crate::lifecycle::failure_detail(&e));
            self.audit(ctx, ev).await?;
            return Err(e);
        }
        let (uris, jwks, role) = match &kind {
            ClientKind::Public { redirect_uris } => {
                (serde_json::to_string(redirect_uris).map_err(StoreError::internal)?, None, None)
            }
            ClientKind::System { jwks, role } => ("[]".to_string(), Some(jwks.clone()), Some(role.as_str())),
        };
        let kind_s = kind.as_str();
        let scope_s = scope.to_string();
        self.identity_job(move |tx, ev| {
            let exists: bool = tx.conn.query_row(
                "SELECT EXISTS (SELECT 1 FROM oauth_client WHERE client_id = ?1)",
                [&client_id],
                |r| r.get(0),
            )?;
            if exists {
                let e = StoreError::PreconditionFailed(format!("client '{client_id}' already exists"));
                ev.push(
                    &ctx,
                    AuditEvent::new(Action::OAuthClientRegister, e.status())
                        .with_target("oauth-client", Some(client_id.clone()))
                        .with_detail("refused: already registered"),
                );
                return Ok(Err(e));
            }
            tx.conn.execute(
                "INSERT INTO oauth_client (client_id, kind, name, redirect_uris, scope, jwks, role, created_us) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                params![client_id, kind_s, name, uris, scope_s, jwks, role, tx.now_us],
            )?;
            ev.push(
                &ctx,
                AuditEvent::new(Action::OAuthClientRegister, 201)
                    .with_target("oauth-client", Some(client_id.clone()))
                    .with_detail(format!("{kind_s}; scope {scope_s}")),
            );
            Ok(Ok(()))
        })
        .await
    }

    /// Removes a client: every token it holds stops working at once. Returns the token families
    /// revoked.
    pub async fn remove_client(&self, ctx: AccessContext, client_id: String) -> Result<usize, StoreError> {
        if let Err(e) = check_client_id(&client_id) {
            let ev = AuditEvent::new(Action::OAuthClientRemove, e.status())
                .with_target("oauth-client", None)
                .with_detail(crate::lifecycle::failure_detail(&e));
            self.audit(ctx, ev).await?;
            return Err(e);
        }
        self.identity_job(move |tx, ev| {
            let n = tx.conn.execute("DELETE FROM oauth_client WHERE client_id = ?1", [&client_id])?;
            if n == 0 {
                ev.push(
                    &ctx,
                    AuditEvent::new(Action::OAuthClientRemove, 404)
                        .with_target("oauth-client", Some(client_id.clone()))
                        .with_detail("refused: no such client"),
                );
                return Ok(Err(StoreError::NotFound(format!("client '{client_id}'"))));
            }
            let revoked = tx.conn.execute(
                "UPDATE oauth_family SET revoked_us = ?1 WHERE client_id = ?2 AND revoked_us IS NULL",
                params![tx.now_us, client_id],
            )?;
            tx.conn.execute("DELETE FROM oauth_code WHERE client_id = ?1", [&client_id])?;
            ev.push(
                &ctx,
                AuditEvent::new(Action::OAuthClientRemove, 200)
                    .with_target("oauth-client", Some(client_id.clone()))
                    .with_detail(format!("{revoked} token famil(ies) revoked")),
            );
            Ok(Ok(revoked))
        })
        .await
    }

    /// Every registered client.
    pub async fn list_clients(&self, ctx: AccessContext) -> Result<Vec<Client>, StoreError> {
        let clients = self.inner.engine.read_now(|c| {
            let mut stmt = c.prepare(&format!("SELECT {CLIENT_COLUMNS} FROM oauth_client ORDER BY client_id"))?;
            let rows = stmt.query_map([], client_from_row)?;
            let mut out = Vec::new();
            for r in rows {
                if let Some(cl) = r? {
                    out.push(cl);
                }
            }
            Ok(out)
        })?;
        self.audit(ctx, AuditEvent::new(Action::OAuthClientList, 200)).await?;
        Ok(clients)
    }

    // ---- protocol ---------------------------------------------------------------------------

    async fn exchange_code_now(
        &self,
        ctx: AccessContext,
        req: CodeExchange,
        policy: SharedLoginPolicy,
        lifetimes: Lifetimes,
    ) -> Result<Result<Tokens, Refusal>, StoreError> {
        let ctx = client_ctx(&ctx, &req.client_id);
        self.identity_job(move |tx, ev| Ok(Ok(exchange(tx, ev, &ctx, &req, &policy, lifetimes)?))).await
    }
}

/// A code's row; the last three: the zone of its sign-in page, its launch Patient and OpenID
/// Connect nonce.
type Row = (
    String,
    String,
    Vec<u8>,
    String,
    String,
    String,
    i64,
    Option<i64>,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
);

fn exchange(
    tx: &Tx<'_>,
    ev: &mut Events,
    ctx: &AccessContext,
    req: &CodeExchange,
    policy: &mamori_access::LoginPolicy,
    lifetimes: Lifetimes,
) -> Result<Result<Tokens, Refusal>, StoreError> {
    let (client_id, code, redirect_uri, verifier) =
        (req.client_id.as_str(), req.code.as_str(), req.redirect_uri.as_str(), req.verifier.as_str());
    let now = tx.now_us;
    let refuse = |reason: &'static str, ev: &mut Events| -> Result<Result<Tokens, Refusal>, StoreError> {
        ev.push(ctx, refusal_event(reason));
        Ok(Err(Refusal::grant(reason)))
    };
    let Some(hash) = presented(SecretKind::OAuthCode, code) else { return refuse("malformed code", ev) };
    let row: Option<Row> = tx
        .conn
        .prepare_cached(
            "SELECT client_id, account, session, redirect_uri, challenge, scope, expires_us, used_us, family, zone, \
             patient, nonce FROM oauth_code WHERE hash = ?1",
        )?
        .query_row([&hash.0[..]], |r| Row::try_from(r))
        .optional()?;
    let Some((
        code_client,
        account,
        session,
        code_redirect,
        challenge,
        scope,
        expires,
        used,
        family,
        signed_in_zone,
        patient,
        nonce,
    )) = row
    else {
        return refuse("unknown code", ev);
    };
    if used.is_some() {
        // A replayed code: whatever it was exchanged for is revoked (RFC 6749 §4.1.2).
        if let Some(f) = &family
            && revoke_family(tx.conn, f, now)?
        {
            tracing::warn!(target: "security", client = %code_client, "authorisation code replayed; its tokens revoked");
            ev.push(
                ctx,
                AuditEvent::new(Action::OAuthRevoke, 200)
                    .with_target("account", Some(account.clone()))
                    .with_detail("code replayed: tokens issued for it revoked"),
            );
        }
        return refuse("code replayed", ev);
    }
    if code_client != client_id {
        return refuse("code issued to another client", ev);
    }
    if now >= expires {
        return refuse("code expired", ev);
    }
    if code_redirect != redirect_uri {
        return refuse("redirect_uri differs from the authorisation request", ev);
    }
    // The code is spent on any further attempt, right or wrong (no verifier guessing).
    tx.conn.execute("UPDATE oauth_code SET used_us = ?1 WHERE hash = ?2", params![now, &hash.0[..]])?;
    if pkce_s256(verifier).as_deref() != Some(challenge.as_str()) {
        return refuse("PKCE code_verifier does not match", ev);
    }
    let Some(LiveSession { account: acct, role, factors, .. }) = session_alive(tx.conn, &session, now, policy)? else {
        return refuse("the login session has ended", ev);
    };
    // AUTH-2/ACL-3: no tokens to a zone where this sign-in would not be accepted.
    let sign_in = sign_in_at(Some(factors), signed_in_zone, role, req.zone.as_deref(), policy);
    if !sign_in.suffices {
        ev.push(&person(ctx, &acct, role), refusal_event(&sign_in.refusal_detail(req.zone.as_deref())));
        return Ok(Err(Refusal::grant(SIGN_IN_TOO_WEAK)));
    }
    let Ok(scope) = scope.parse::<ScopeSet>() else { return refuse("stored scope unreadable", ev) };
    let family = uuid::Uuid::new_v4().to_string();
    tx.conn.execute(
        "INSERT INTO oauth_family (id, client_id, account, session, scope, created_us, revoked_us, factors, zone, \
         patient) VALUES (?1, ?2, ?3, ?4, ?5, ?6, NULL, ?7, ?8, ?9)",
        params![family, client_id, acct, session, scope.to_string(), now, sign_in.factors, sign_in.zone, patient],
    )?;
    tx.conn.execute("UPDATE oauth_code SET family = ?1 WHERE hash = ?2", params![family, &hash.0[..]])?;
    let with_refresh = scope.offline_access || scope.online_access;
    let issued = issue_tokens(tx.conn, &family, &scope, now, lifetimes, with_refresh)?;
    let who = person(ctx, &acct, role);
    let mut event =
        AuditEvent::new(Action::OAuthToken, 200).with_target("account", Some(acct.clone())).with_detail(format!(
            "authorization_code; scope {scope}; signed in with {} in zone {}",
            sign_in.factors,
            sign_in.zone.as_deref().unwrap_or("?")
        ));
    event.patients = patient.iter().cloned().collect();
    ev.push(&who, event);
    Ok(Ok(Tokens {
        access_token: issued.access,
        expires_in: lifetimes.access.whole_seconds(),
        refresh_token: issued.refresh,
        scope,
        account: Some(acct),
        patient,
        nonce,
    }))
}

impl OAuth for SqliteStore {
    fn oauth_client(&self, client_id: String) -> StoreFuture<'_, Option<Client>> {
        Box::pin(async move { self.inner.engine.read_now(move |c| load_client(c, &client_id)) })
    }

    fn register_oauth_client(&self, ctx: AccessContext, registration: ClientRegistration) -> StoreFuture<'_, Client> {
        Box::pin(async move {
            let client_id = registration.client_id.clone();
            let (kind, scope) = match registration.parse() {
                Ok(parsed) => parsed,
                Err(e) => {
                    let ev = AuditEvent::new(Action::OAuthClientRegister, e.status())
                        .with_target("oauth-client", check_client_id(&client_id).is_ok().then(|| client_id.clone()))
                        .with_detail(crate::lifecycle::failure_detail(&e));
                    self.audit(ctx, ev).await?;
                    return Err(e);
                }
            };
            self.register_client(ctx, client_id.clone(), registration.name, kind, scope).await?;
            self.inner
                .engine
                .read_now(move |c| load_client(c, &client_id))?
                .ok_or_else(|| StoreError::internal("a client just registered cannot be read back"))
        })
    }

    fn oauth_clients(&self, ctx: AccessContext) -> StoreFuture<'_, Vec<Client>> {
        Box::pin(self.list_clients(ctx))
    }

    fn remove_oauth_client(&self, ctx: AccessContext, client_id: String) -> StoreFuture<'_, usize> {
        Box::pin(self.remove_client(ctx, client_id))
    }

    fn issue_code(&self, ctx: AccessContext, grant: CodeGrant) -> StoreFuture<'_, Zeroizing<String>> {
        Box::pin(async move {
            let ctx = client_ctx(&ctx, &grant.client_id);
            self.identity_job(move |tx, ev| {
                let now = tx.now_us;
                tx.conn.execute("DELETE FROM oauth_code WHERE expires_us <= ?1 AND used_us IS NULL", [now])?;
                let patient = match crate::oauth_launch::patient_for_code(
                    tx,
                    ev,
                    &ctx,
                    &grant.context,
                    &grant.client_id,
                    &grant.account,
                )? {
                    Ok(p) => p,
                    Err(e) => return Ok(Err(e)),
                };
                let code = IssuedSecret::generate(SecretKind::OAuthCode);
                let scope = grant.scope.to_string();
                tx.conn.execute(
                    "INSERT INTO oauth_code (hash, client_id, account, session, redirect_uri, challenge, scope, \
                     expires_us, used_us, family, zone, patient, nonce) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, NULL, NULL, ?9, ?10, ?11)",
                    params![
                        &code.hash().0[..],
                        grant.client_id,
                        grant.account,
                        &grant.session.0[..],
                        grant.redirect_uri,
                        grant.challenge,
                        scope,
                        now + CODE_TTL_US,
                        grant.zone,
                        patient,
                        grant.context.nonce
                    ],
                )?;
                let mut event = AuditEvent::new(Action::OAuthAuthorize, 200)
                    .with_target("account", Some(grant.account.clone()))
                    .with_detail(format!("code issued; scope {scope}"));
                if let Some(p) = patient {
                    event.detail = Some(format!("code issued; scope {scope}; EHR launch"));
                    event.patients = vec![p];
                }
                ev.push(&ctx, event);
                Ok(Ok(Zeroizing::new(code.text().to_string())))
            })
            .await
        })
    }

    fn exchange_code(
        &self,
        ctx: AccessContext,
        req: CodeExchange,
        policy: SharedLoginPolicy,
        lifetimes: Lifetimes,
    ) -> StoreFuture<'_, Result<Tokens, Refusal>> {
        Box::pin(self.exchange_code_now(ctx, req, policy, lifetimes))
    }

    fn refresh(
        &self,
        ctx: AccessContext,
        req: RefreshRequest,
        policy: SharedLoginPolicy,
        lifetimes: Lifetimes,
    ) -> StoreFuture<'_, Result<Tokens, Refusal>> {
        let RefreshRequest { client_id, refresh_token, scope, zone } = req;
        let ctx = client_ctx(&ctx, &client_id);
        Box::pin(self.identity_job(move |tx, ev| {
            let now = tx.now_us;
            let refuse = |reason: &'static str, ev: &mut Events| -> Result<Kept<Result<Tokens, Refusal>>, StoreError> {
                ev.push(&ctx, refusal_event(reason));
                Ok(Ok(Err(Refusal::grant(reason))))
            };
            let Some(hash) = presented(SecretKind::OAuthRefresh, &refresh_token) else {
                return refuse("malformed refresh token", ev);
            };
            let row: Option<(RefreshRow, SignInRow, Option<String>)> = tx
                .conn
                .prepare_cached(
                    "SELECT t.family, t.scope, t.expires_us, t.used_us, f.client_id, f.account, f.session, f.revoked_us, \
                     f.factors, f.zone, f.patient \
                     FROM oauth_token t JOIN oauth_family f ON f.id = t.family WHERE t.hash = ?1 AND t.kind = 'refresh'",
                )?
                .query_row([&hash.0[..]], |r| {
                    Ok((
                        (r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?, r.get(6)?, r.get(7)?),
                        (r.get(8)?, r.get(9)?),
                        r.get(10)?,
                    ))
                })
                .optional()?;
            let Some((
                (family, tscope, expires, used, fclient, account, session, revoked),
                (factors, signed_in_zone),
                patient,
            )) = row
            else {
                return refuse("unknown refresh token", ev);
            };
            if fclient != client_id {
                return refuse("refresh token issued to another client", ev);
            }
            if revoked.is_some() {
                return refuse("token family revoked", ev);
            }
            if used.is_some() {
                // Reuse of a rotated refresh token: someone holds a copy. End the whole family.
                revoke_family(tx.conn, &family, now)?;
                tracing::warn!(target: "security", client = %client_id, "rotated refresh token reused; token family revoked");
                ev.push(
                    &ctx,
                    AuditEvent::new(Action::OAuthRevoke, 200)
                        .with_target("account", account.clone())
                        .with_detail("refresh token reused: token family revoked"),
                );
                return refuse("refresh token reused", ev);
            }
            if now >= expires {
                return refuse("refresh token expired", ev);
            }
            let (Some(account), Some(session)) = (account, session) else {
                return refuse("not a person's token", ev);
            };
            // AUTH-6: the login session behind the app must still be alive.
            let Some(LiveSession { account: acct, role, .. }) = session_alive(tx.conn, &session, now, &policy)? else {
                return refuse("the login session has ended", ev);
            };
            if acct != account {
                return refuse("session belongs to another account", ev);
            }
            // AUTH-2/ACL-3: the sign-in must be strong enough where the refresh is asked for; the
            // refresh token is not spent, so the app can still refresh from a zone where it is.
            let sign_in = sign_in_at(factors, signed_in_zone, role, zone.as_deref(), &policy);
            if !sign_in.suffices {
                ev.push(&person(&ctx, &acct, role), refusal_event(&sign_in.refusal_detail(zone.as_deref())));
                return Ok(Ok(Err(Refusal::grant(SIGN_IN_TOO_WEAK))));
            }
            let Ok(current) = tscope.parse::<ScopeSet>() else { return refuse("stored scope unreadable", ev) };
            let scope = match scope {
                Some(s) if !s.within(&current) => {
                    ev.push(&ctx, refusal_event("refresh asked for scopes beyond the grant"));
                    return Ok(Ok(Err(Refusal { error: "invalid_scope", reason: "scope beyond the grant" })));
                }
                Some(s) => ScopeSet { offline_access: current.offline_access, online_access: current.online_access, ..s },
                None => current,
            };
            tx.conn.execute("UPDATE oauth_token SET used_us = ?1 WHERE hash = ?2", params![now, &hash.0[..]])?;
            // A refresh is use of the session (its idle timeout restarts).
            tx.conn.execute("UPDATE login_session SET last_used_us = ?1 WHERE hash = ?2", params![now, session])?;
            let issued = issue_tokens(tx.conn, &family, &scope, now, lifetimes, true)?;
            let who = person(&ctx, &acct, role);
            ev.push(
                &who,
                AuditEvent::new(Action::OAuthRefresh, 200)
                    .with_target("account", Some(acct.clone()))
                    .with_detail(format!("rotated; scope {scope}")),
            );
            Ok(Ok(Ok(Tokens {
                access_token: issued.access,
                expires_in: lifetimes.access.whole_seconds(),
                refresh_token: issued.refresh,
                scope,
                account: Some(acct),
                patient,
                nonce: None,
            })))
        }))
    }

    fn client_credentials(
        &self,
        ctx: AccessContext,
        client_id: String,
        jti: String,
        jti_exp_s: i64,
        scope: ScopeSet,
        lifetimes: Lifetimes,
    ) -> StoreFuture<'_, Result<Tokens, Refusal>> {
        let ctx = client_ctx(&ctx, &client_id);
        Box::pin(self.identity_job(move |tx, ev| {
            let now = tx.now_us;
            let Some(client) = load_client(tx.conn, &client_id)? else {
                ev.push(&ctx, refusal_event("unknown client"));
                return Ok(Ok(Err(Refusal { error: "invalid_client", reason: "unknown client" })));
            };
            let ClientKind::System { role, .. } = client.kind else {
                ev.push(&ctx, refusal_event("not a system client"));
                return Ok(Ok(Err(Refusal { error: "unauthorized_client", reason: "not a system client" })));
            };
            tx.conn.execute("DELETE FROM oauth_jti WHERE expires_us <= ?1", [now])?;
            let fresh = tx.conn.execute(
                "INSERT OR IGNORE INTO oauth_jti (client_id, jti, expires_us) VALUES (?1, ?2, ?3)",
                params![client_id, jti, jti_exp_s.saturating_mul(1_000_000)],
            )?;
            if fresh == 0 {
                ev.push(&ctx, refusal_event("client assertion replayed (jti seen before)"));
                return Ok(Ok(Err(Refusal { error: "invalid_client", reason: "assertion replayed" })));
            }
            let family = uuid::Uuid::new_v4().to_string();
            tx.conn.execute(
                "INSERT INTO oauth_family (id, client_id, account, session, scope, created_us, revoked_us) \
                 VALUES (?1, ?2, NULL, NULL, ?3, ?4, NULL)",
                params![family, client_id, scope.to_string(), now],
            )?;
            let issued = issue_tokens(tx.conn, &family, &scope, now, lifetimes, false)?;
            let who = person(&ctx, &client_principal_name(&client_id), role);
            ev.push(
                &who,
                AuditEvent::new(Action::OAuthToken, 200)
                    .with_target("oauth-client", Some(client_id.clone()))
                    .with_detail(format!("client_credentials; scope {scope}")),
            );
            Ok(Ok(Ok(Tokens {
                access_token: issued.access,
                expires_in: lifetimes.access.whole_seconds(),
                refresh_token: None,
                scope,
                account: None,
                patient: None,
                nonce: None,
            })))
        }))
    }

    fn revoke_token(&self, ctx: AccessContext, client_id: String, token: Zeroizing<String>) -> StoreFuture<'_, ()> {
        let ctx = client_ctx(&ctx, &client_id);
        Box::pin(self.identity_job(move |tx, ev| {
            let now = tx.now_us;
            let hash =
                presented(SecretKind::OAuthRefresh, &token).or_else(|| presented(SecretKind::OAuthAccess, &token));
            let row: Option<(String, String, String, Option<String>)> = match hash {
                Some(h) => tx
                    .conn
                    .prepare_cached(
                        "SELECT t.family, t.kind, f.client_id, f.account FROM oauth_token t \
                         JOIN oauth_family f ON f.id = t.family WHERE t.hash = ?1",
                    )?
                    .query_row([&h.0[..]], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
                    .optional()?,
                None => None,
            };
            let (Some(h), Some((family, kind, fclient, account))) = (hash, row) else {
                ev.push(
                    &ctx,
                    AuditEvent::new(Action::OAuthRevoke, 200).with_detail("unknown token: nothing to revoke"),
                );
                return Ok(Ok(()));
            };
            if fclient != client_id {
                // RFC 7009 §2.1: a client may only revoke its own tokens; the answer does not say.
                ev.push(&ctx, refusal_event("revocation of another client's token refused"));
                return Ok(Ok(()));
            }
            let detail = if kind == "refresh" {
                revoke_family(tx.conn, &family, now)?;
                "refresh token: token family revoked"
            } else {
                tx.conn.execute("UPDATE oauth_token SET expires_us = ?1 WHERE hash = ?2", params![now, &h.0[..]])?;
                "access token revoked"
            };
            ev.push(
                &ctx,
                AuditEvent::new(Action::OAuthRevoke, 200).with_target("account", account).with_detail(detail),
            );
            Ok(Ok(()))
        }))
    }

    fn oauth_failure(&self, ctx: AccessContext, client_id: Option<String>, reason: String) -> StoreFuture<'_, ()> {
        let ctx = AccessContext { client: client_id, ..ctx };
        Box::pin(async move { self.audit(ctx, AuditEvent::new(Action::OAuthFailure, 400).with_detail(reason)).await })
    }

    fn authenticate_oauth(
        &self,
        token: TokenHash,
        zone: Option<String>,
        policy: SharedLoginPolicy,
    ) -> StoreFuture<'_, Option<OAuthGrant>> {
        Box::pin(async move {
            let now = self.now_us();
            type R = (String, String, Option<String>, Option<Vec<u8>>, Option<String>, String, Option<String>);
            let p = Arc::clone(&policy);
            let found = self.inner.engine.read_now(move |c| {
                let row: Option<(R, SignInRow)> = c
                    .prepare_cached(
                        "SELECT t.scope, f.client_id, f.account, f.session, cl.role, cl.kind, f.patient, f.factors, \
                         f.zone FROM oauth_token t \
                         JOIN oauth_family f ON f.id = t.family JOIN oauth_client cl ON cl.client_id = f.client_id \
                         WHERE t.hash = ?1 AND t.kind = 'access' AND t.expires_us > ?2 AND f.revoked_us IS NULL",
                    )?
                    .query_row(params![&token.0[..], now], |r| {
                        Ok((
                            (r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?, r.get(6)?),
                            (r.get(7)?, r.get(8)?),
                        ))
                    })
                    .optional()?;
                let Some(((scope, client_id, account, session, role, kind, patient), (factors, signed_in_zone))) = row
                else {
                    return Ok(None);
                };
                let Ok(scope) = scope.parse::<ScopeSet>() else { return Ok(None) };
                match (kind.as_str(), account, session, role) {
                    ("public", Some(account), Some(session), _) => {
                        let Some(live) = session_alive(c, &session, now, &p)? else {
                            return Ok(None);
                        };
                        if live.account != account {
                            return Ok(None);
                        }
                        let role = live.role;
                        let sign_in = sign_in_at(factors, signed_in_zone, role, zone.as_deref(), &p);
                        // A refused use is no use of the session (its idle timeout runs on).
                        let touch = (sign_in.suffices && now - live.last_used >= crate::identity::TOUCH_EVERY_US)
                            .then_some(session);
                        let principal = Principal { account, role };
                        let grant = OAuthGrant { principal, client_id, scope, sign_in: Some(sign_in), patient };
                        Ok(Some((grant, touch)))
                    }
                    ("system", None, None, Some(role)) => {
                        let Ok(role) = role.parse::<Role>() else { return Ok(None) };
                        let principal = Principal { account: client_principal_name(&client_id), role };
                        Ok(Some((OAuthGrant { principal, client_id, scope, sign_in: None, patient: None }, None)))
                    }
                    _ => Ok(None),
                }
            })?;
            let Some((grant, touch)) = found else { return Ok(None) };
            // Using the app is use of the login session behind it (idle timeout), at most once a minute.
            if let Some(session) = touch {
                let account = grant.principal.account.clone();
                self.inner
                    .engine
                    .write(move |c| {
                        c.prepare_cached("UPDATE login_session SET last_used_us = ?1 WHERE hash = ?2")?
                            .execute(params![now, session])?;
                        c.prepare_cached("UPDATE account SET last_used_us = ?1 WHERE name = ?2")?
                            .execute(params![now, account])?;
                        Ok(())
                    })
                    .await?;
            }
            Ok(Some(grant))
        })
    }
}
