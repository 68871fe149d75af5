//! OAuth 2.0 for SMART on FHIR (AUTH-6): the authorisation page, the token and revocation
//! endpoints, and SMART discovery.
//!
//! ```text
//! GET  /oauth/authorize   validate client, redirect URI, PKCE S256, scopes → sign-in page
//! POST /oauth/authorize   form steps: password → second factor (TOTP, WebAuthn or recovery code)
//!                         → 303 to the app's redirect URI with code and state
//! POST /oauth/token       authorization_code (+code_verifier) | refresh_token (rotation)
//!                         | client_credentials (private_key_jwt)
//! POST /oauth/revoke      RFC 7009
//! GET  /fhir/.well-known/smart-configuration
//! ```
//!
//! EHR launch (`launch`, the `/oauth/launch` endpoint) is `oauth_launch`; OpenID Connect ID
//! tokens, the JWK Set and OpenID discovery are `oidc`.
//!
//! Both interfaces serve these (ACL-4). At the staff interface people sign in with the staff
//! login policy and apps get `user/` scopes (`system/` for backend services); at the patient
//! interface patients sign in with the patient login policy, apps get `patient/` scopes only,
//! and the token response names the signed-in patient's Patient (`patient`), the compartment the
//! scopes apply to. Which interface a request is at is `Shared::login.audience`.
//!
//! The page reuses the store's login operations (`Identity::login_password_from`,
//! `login_second_factor`): lockouts, the uniform "invalid credentials", forced password change
//! and the two-factor rules per role and zone apply exactly as for `/auth/login` (the tokens
//! carry the sign-in's factors and zone: `oauth_zone`); WebAuthn uses the store's
//! `Webauthn` steps (`oauth_webauthn` renders the page part). Its state (which app, which
//! step, the second-factor ticket) stays on the server, keyed by a random form token that is
//! both a hidden field and a `SameSite=Strict` cookie (double submit against CSRF).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use mamori_access::Audience;
use mamori_access::TokenHash;
use mamori_access::client_assertion::{self, ClientKeys};
use mamori_access::scope::ScopeSet;
use mamori_access::secret::{IssuedSecret, SecretKind, presented};
use mamori_store::identity::{LoginOutcome, SecondFactor};
use mamori_store::oauth::{ClientKind, CodeExchange, CodeGrant, RefreshRequest, Refusal, SIGN_IN_TOO_WEAK, Tokens};
use mamori_store::oauth_launch::CodeContext;
use mamori_store::webauthn::RequestOptions;
use mamori_store::{AccessContext, StoreError};
use serde_json::json;
use zeroize::Zeroizing;

use crate::Shared;
use crate::auth::{request_id, with_request_id};
use crate::listener::ConnInfo;
use crate::oauth_webauthn;
use crate::oauth_zone::zone_name_of;

type St = State<Arc<Shared>>;

/// Form and token request bodies are small.
const MAX_FORM_BODY: usize = 16 * 1024;
/// How long a sign-in page stays usable.
const PENDING_TTL_US: i64 = 10 * 60 * 1_000_000;
/// Sign-ins in progress at once (older ones are dropped first).
const MAX_PENDING: usize = 10_000;
const COOKIE: &str = "mamori_oauth";

/// OAuth settings from `[oauth]`.
#[derive(Clone, Debug, Default)]
pub struct OAuthSettings {
    /// Public base URL of the server (`https://emr.example.jp`): the issuer, and the base of the
    /// endpoint URLs (the token endpoint URL is the `aud` of client assertions). Derived from
    /// the request when unset.
    pub issuer: Option<String>,
    pub lifetimes: mamori_store::oauth::Lifetimes,
    /// The OpenID Connect ID token signing key; `None`: no ID tokens (`openid` is not offered).
    pub id_token_key: Option<Arc<mamori_access::oidc::IdTokenKey>>,
}

/// Which step a sign-in is at.
enum Step {
    Password,
    /// The password was right; the ticket for the second factor never leaves the server.
    SecondFactor {
        ticket: Zeroizing<String>,
        account: String,
    },
}

struct Pending {
    client_id: String,
    client_name: String,
    redirect_uri: String,
    state: Option<String>,
    challenge: String,
    scope: ScopeSet,
    /// The EHR launch value and OpenID Connect nonce, for the code.
    context: CodeContext,
    expires_us: i64,
    step: Step,
}

/// Sign-ins in progress, by the SHA-256 of their form token.
#[derive(Default)]
pub struct PendingRequests(Mutex<HashMap<[u8; 32], Pending>>);

impl PendingRequests {
    fn insert(&self, key: TokenHash, p: Pending, now: i64) {
        let Ok(mut m) = self.0.lock() else { return };
        m.retain(|_, v| v.expires_us > now);
        if m.len() >= MAX_PENDING
            && let Some(oldest) = m.iter().min_by_key(|(_, v)| v.expires_us).map(|(k, _)| *k)
        {
            m.remove(&oldest);
        }
        m.insert(key.0, p);
    }

    fn take(&self, key: TokenHash, now: i64) -> Option<Pending> {
        let mut m = self.0.lock().ok()?;
        m.remove(&key.0).filter(|p| p.expires_us > now)
    }
}

// ---- helpers ---------------------------------------------------------------------------------

/// Parses `application/x-www-form-urlencoded`; a parameter given twice is refused (RFC 6749 §3.1).
fn form_pairs(raw: &[u8]) -> Result<HashMap<String, String>, &'static str> {
    let mut out = HashMap::new();
    for (k, v) in form_urlencoded::parse(raw) {
        if out.insert(k.into_owned(), v.into_owned()).is_some() {
            return Err("a parameter is given more than once");
        }
    }
    Ok(out)
}

fn html_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// `scheme://host[:port]` of an absolute URL (for the page's `form-action`), if it has one.
fn origin_of(url: &str) -> Option<String> {
    let (scheme, rest) = url.split_once("://")?;
    let host = rest.split(['/', '?', '#']).next()?;
    let ok = scheme.bytes().all(|b| b.is_ascii_alphanumeric() || b"+-.".contains(&b))
        && host.bytes().all(|b| b.is_ascii_alphanumeric() || b".-:[]".contains(&b))
        && !host.is_empty();
    ok.then(|| format!("{scheme}://{host}"))
}

/// Server root (`https://host`) for endpoint URLs.
pub(crate) fn root(s: &Shared, h: &HeaderMap, conn: Option<&ConnInfo>) -> String {
    if let Some(i) = &s.oauth.issuer {
        return i.trim_end_matches('/').to_string();
    }
    if let Some(b) = &s.base_url {
        return b.trim_end_matches("/fhir").to_string();
    }
    let scheme = if conn.is_some_and(|c| c.tls.is_some()) { "https" } else { "http" };
    let host = h
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .filter(|h| h.bytes().all(|b| b.is_ascii_alphanumeric() || b".-:[]".contains(&b)))
        .map(str::to_string)
        .or_else(|| conn.map(|c| c.local.to_string()))
        .unwrap_or_default();
    format!("{scheme}://{host}")
}

fn page(status: StatusCode, title: &str, body: &str, form_action: Option<&str>) -> Response {
    page_with_script(status, title, body, form_action, None)
}

/// [`page`] whose CSP also allows one inline script, by its hash source (`'sha256-…'`).
fn page_with_script(
    status: StatusCode,
    title: &str,
    body: &str,
    form_action: Option<&str>,
    script: Option<&str>,
) -> Response {
    let html = format!(
        "<!DOCTYPE html>\n<html lang=\"ja\"><head><meta charset=\"utf-8\"><title>{t} - mamori</title>\
         <meta name=\"viewport\" content=\"width=device-width\"></head>\n<body><main><h1>{t}</h1>\n{body}</main></body></html>\n",
        t = html_escape(title)
    );
    let mut resp = (status, html).into_response();
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8"));
    // The form may post only here, and the redirect after it may go only to the app.
    let extra = form_action.and_then(origin_of).map(|o| format!(" {o}")).unwrap_or_default();
    let script = script.map(|h| format!("; script-src {h}")).unwrap_or_default();
    if let Ok(v) = HeaderValue::from_str(&format!(
        "default-src 'none'; form-action 'self'{extra}; frame-ancestors 'none'; base-uri 'none'{script}"
    )) {
        h.insert(header::CONTENT_SECURITY_POLICY, v);
    }
    h.insert("x-frame-options", HeaderValue::from_static("DENY"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    resp
}

fn error_page(status: StatusCode, message: &str) -> Response {
    page(status, "Sign-in not possible", &format!("<p>{}</p>", html_escape(message)), None)
}

fn password_form(p: &Pending, form_token: &str, notice: Option<&str>) -> String {
    let notice =
        notice.map(|n| format!("<p role=\"alert\"><strong>{}</strong></p>\n", html_escape(n))).unwrap_or_default();
    format!(
        "<p>Sign in to allow <strong>{app}</strong> to access: <code>{scope}</code></p>\n{notice}\
         <form method=\"post\" action=\"/oauth/authorize\">\n\
         <input type=\"hidden\" name=\"form_token\" value=\"{ft}\">\n\
         <input type=\"hidden\" name=\"step\" value=\"password\">\n\
         <label>Account <input name=\"account\" autocomplete=\"username\" required></label>\n\
         <label>Password <input name=\"password\" type=\"password\" autocomplete=\"current-password\" required></label>\n\
         <button type=\"submit\">Next</button>\n\
         <button type=\"submit\" name=\"step\" value=\"cancel\" formnovalidate>Cancel</button>\n</form>\n",
        app = html_escape(&p.client_name),
        scope = html_escape(&p.scope.to_string()),
        ft = html_escape(form_token),
    )
}

/// The second-factor step: one form per method the account can use (`methods` of the login
/// outcome). Each form names its `method`; WebAuthn (with the request options for this sign-in)
/// is shown by its script only, so without JavaScript the code forms remain.
fn second_factor_form(form_token: &str, methods: &[&str], webauthn: Option<&RequestOptions>) -> String {
    let ft = html_escape(form_token);
    let mut out = String::new();
    if let Some(options) = webauthn {
        out.push_str(&oauth_webauthn::form(&ft, options));
    }
    if methods.contains(&"totp") {
        out.push_str(&totp_form(&ft));
    } else if webauthn.is_some() {
        out.push_str("<noscript><p>Signing in with a security key needs JavaScript.</p></noscript>\n");
    }
    out.push_str(&recovery_form(&ft));
    out
}

fn totp_form(ft: &str) -> String {
    format!(
        "<p>Enter the code from your authenticator app.</p>\n\
         <form method=\"post\" action=\"/oauth/authorize\">\n\
         <input type=\"hidden\" name=\"form_token\" value=\"{ft}\">\n\
         <input type=\"hidden\" name=\"step\" value=\"second-factor\">\n\
         <input type=\"hidden\" name=\"method\" value=\"totp\">\n\
         <label>Code <input name=\"code\" inputmode=\"numeric\" autocomplete=\"one-time-code\" required></label>\n\
         <button type=\"submit\">Sign in</button>\n</form>\n"
    )
}

fn recovery_form(ft: &str) -> String {
    format!(
        "<p>Lost your device? Use a recovery code instead.</p>\n\
         <form method=\"post\" action=\"/oauth/authorize\">\n\
         <input type=\"hidden\" name=\"form_token\" value=\"{ft}\">\n\
         <input type=\"hidden\" name=\"step\" value=\"second-factor\">\n\
         <input type=\"hidden\" name=\"method\" value=\"recovery_code\">\n\
         <label>Recovery code <input name=\"code\" autocomplete=\"off\" required></label>\n\
         <button type=\"submit\">Sign in</button>\n</form>\n"
    )
}

/// The second factor a form step carries, by its `method`.
fn second_factor_of(method: &str, code: String) -> Option<SecondFactor> {
    match method {
        "totp" => Some(SecondFactor::Totp(code)),
        "recovery_code" => Some(SecondFactor::RecoveryCode(Zeroizing::new(code))),
        _ => None,
    }
}

fn with_cookie(mut resp: Response, token: &str, tls: bool) -> Response {
    let secure = if tls { "; Secure" } else { "" };
    if let Ok(v) =
        HeaderValue::from_str(&format!("{COOKIE}={token}; Path=/oauth/authorize; HttpOnly; SameSite=Strict{secure}"))
    {
        resp.headers_mut().append(header::SET_COOKIE, v);
    }
    resp
}

fn cookie_of(h: &HeaderMap) -> Option<String> {
    h.get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().split_once('='))
        .find(|(k, _)| *k == COOKIE)
        .map(|(_, v)| v.to_string())
}

/// 303 to the app's (registered, exactly matched) redirect URI with the given parameters.
fn redirect(uri: &str, params: &[(&str, &str)]) -> Response {
    let mut ser = form_urlencoded::Serializer::new(String::new());
    for (k, v) in params {
        ser.append_pair(k, v);
    }
    let sep = if uri.contains('?') { '&' } else { '?' };
    let location = format!("{uri}{sep}{}", ser.finish());
    let mut resp = StatusCode::SEE_OTHER.into_response();
    match HeaderValue::from_str(&location) {
        Ok(v) => {
            resp.headers_mut().insert(header::LOCATION, v);
        }
        Err(_) => return error_page(StatusCode::BAD_REQUEST, "the redirect URI cannot be used"),
    }
    resp.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

/// RFC 6749 §4.1.2.1: an error sent back to the (already validated) redirect URI.
fn redirect_error(uri: &str, error: &str, description: &str, state: Option<&str>) -> Response {
    let mut p = vec![("error", error), ("error_description", description)];
    if let Some(s) = state {
        p.push(("state", s));
    }
    redirect(uri, &p)
}

async fn body_of(req: Request) -> Result<(HeaderMap, Option<ConnInfo>, Bytes), Response> {
    let conn = req.extensions().get::<ConnInfo>().cloned();
    let (parts, body) = req.into_parts();
    match axum::body::to_bytes(body, MAX_FORM_BODY).await {
        Ok(b) => Ok((parts.headers, conn, b)),
        Err(_) => Err(token_error(StatusCode::PAYLOAD_TOO_LARGE, "invalid_request", "the request body is too large")),
    }
}

fn ctx_of(conn: Option<&ConnInfo>, client: Option<&str>) -> AccessContext {
    let source = conn.map(|c| c.remote.ip().to_string()).unwrap_or_else(|| "unknown".to_string());
    AccessContext { client: client.map(str::to_string), ..AccessContext::anonymous(request_id(), source) }
}

// ---- /oauth/authorize ------------------------------------------------------------------------

pub(crate) async fn authorize_get(State(s): St, req: Request) -> Response {
    let conn = req.extensions().get::<ConnInfo>().cloned();
    let headers = req.headers().clone();
    let q = form_pairs(req.uri().query().unwrap_or("").as_bytes());
    let Ok(q) = q else { return error_page(StatusCode::BAD_REQUEST, "a parameter is given more than once") };
    let get = |k: &str| q.get(k).map(String::as_str).filter(|v| !v.is_empty());
    // Until the client and its redirect URI are known good, errors are shown here, never
    // redirected (RFC 6749 §4.1.2.1).
    let Some(client_id) = get("client_id") else {
        return error_page(StatusCode::BAD_REQUEST, "the request names no client (client_id)");
    };
    let client = match s.store.oauth_client(client_id.to_string()).await {
        Ok(c) => c,
        Err(_) => return error_page(StatusCode::INTERNAL_SERVER_ERROR, "the server could not look up the app"),
    };
    let Some(client) = client else {
        let _ = s.store.oauth_failure(ctx_of(conn.as_ref(), None), None, "authorize: unknown client".into()).await;
        return error_page(StatusCode::BAD_REQUEST, "this app is not registered with this server");
    };
    let ClientKind::Public { redirect_uris } = &client.kind else {
        return error_page(StatusCode::BAD_REQUEST, "this client is a backend service and cannot sign people in");
    };
    let Some(redirect_uri) = get("redirect_uri").filter(|u| redirect_uris.iter().any(|r| r == u)) else {
        let ctx = ctx_of(conn.as_ref(), Some(client_id));
        let _ =
            s.store.oauth_failure(ctx, Some(client_id.into()), "authorize: redirect_uri not registered".into()).await;
        return error_page(StatusCode::BAD_REQUEST, "the redirect URI is not one registered for this app");
    };
    let state = get("state");
    if state.is_some_and(|st| st.len() > 512) {
        return redirect_error(redirect_uri, "invalid_request", "state is too long", None);
    }
    let fail = |e: &str, d: &str| redirect_error(redirect_uri, e, d, state);
    if get("response_type") != Some("code") {
        return fail("unsupported_response_type", "only response_type=code is supported");
    }
    if get("code_challenge_method") != Some("S256") {
        return fail("invalid_request", "PKCE is required with code_challenge_method=S256");
    }
    let Some(challenge) = get("code_challenge")
        .filter(|c| c.len() == 43 && c.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'))
    else {
        return fail("invalid_request", "code_challenge must be BASE64URL(SHA-256(code_verifier))");
    };
    let fhir_base = format!("{}/fhir", root(&s, &headers, conn.as_ref()));
    if let Some(aud) = get("aud")
        && aud.trim_end_matches('/') != fhir_base
    {
        return fail("invalid_request", "aud is not this FHIR server's base URL");
    }
    let requested: ScopeSet = match get("scope").unwrap_or("").parse() {
        Ok(sc) => sc,
        Err(e) => {
            let ctx = ctx_of(conn.as_ref(), Some(client_id));
            let _ = s.store.oauth_failure(ctx, Some(client_id.into()), format!("authorize: invalid_scope: {e}")).await;
            return fail("invalid_scope", &e.to_string());
        }
    };
    let launch = get("launch");
    if let Err((error, why)) = crate::oauth_launch::scopes_fit(s.login.audience, &requested, launch.is_some()) {
        let ctx = ctx_of(conn.as_ref(), Some(client_id));
        let _ = s.store.oauth_failure(ctx, Some(client_id.into()), format!("authorize: {error}: {why}")).await;
        return fail(error, why);
    }
    let mut scope = requested.intersect(&client.scope);
    if scope.clinical.is_empty() && !scope.openid {
        return fail("invalid_scope", "none of the requested scopes is registered for this app");
    }
    if requested.launch && !scope.launch {
        return fail("invalid_scope", "this app is not registered for EHR launch (scope launch)");
    }
    if let Some(l) = launch
        && !matches!(s.store.launch_usable(Zeroizing::new(l.to_string()), client_id.to_string()).await, Ok(true))
    {
        let ctx = ctx_of(conn.as_ref(), Some(client_id));
        let why = "authorize: launch unknown, expired, used or for another app".to_string();
        let _ = s.store.oauth_failure(ctx, Some(client_id.into()), why).await;
        return fail(
            "invalid_request",
            "the launch context is unknown, expired or already used; start the app again from the EHR",
        );
    }
    if !crate::oidc::enabled(&s) {
        scope.openid = false;
        scope.fhir_user = false;
    }
    let nonce = get("nonce");
    if nonce.is_some_and(|n| !crate::oidc::nonce_ok(n)) {
        return fail("invalid_request", "nonce must be at most 512 printable ASCII characters");
    }
    let context = CodeContext {
        launch: launch.map(|l| Zeroizing::new(l.to_string())),
        nonce: nonce.filter(|_| scope.openid).map(str::to_string),
    };
    let now = s.now_us();
    let pending = Pending {
        client_id: client.client_id.clone(),
        client_name: client.name.clone(),
        redirect_uri: redirect_uri.to_string(),
        state: state.map(str::to_string),
        challenge: challenge.to_string(),
        scope,
        context,
        expires_us: now + PENDING_TTL_US,
        step: Step::Password,
    };
    let token = IssuedSecret::generate(SecretKind::FormToken);
    let body = password_form(&pending, token.text(), None);
    let resp = page(StatusCode::OK, "Sign in", &body, Some(redirect_uri));
    s.oauth_pending.insert(token.hash(), pending, now);
    with_cookie(resp, token.text(), conn.as_ref().is_some_and(|c| c.tls.is_some()))
}

pub(crate) async fn authorize_post(State(s): St, req: Request) -> Response {
    let (headers, conn, body) = match body_of(req).await {
        Ok(t) => t,
        Err(_) => return error_page(StatusCode::PAYLOAD_TOO_LARGE, "the form is too large"),
    };
    let Ok(mut f) = form_pairs(&body) else { return error_page(StatusCode::BAD_REQUEST, "malformed form") };
    let now = s.now_us();
    // Double submit: the hidden field and the SameSite=Strict cookie must agree.
    let form_token = f.remove("form_token").unwrap_or_default();
    let cookie = cookie_of(&headers).unwrap_or_default();
    let key = presented(SecretKind::FormToken, &form_token).filter(|_| cookie == form_token);
    let Some(key) = key else {
        let _ = s
            .store
            .oauth_failure(ctx_of(conn.as_ref(), None), None, "authorize: form token mismatch (CSRF)".into())
            .await;
        return error_page(
            StatusCode::FORBIDDEN,
            "this form was not sent from the sign-in page; start again from the app",
        );
    };
    let Some(mut p) = s.oauth_pending.take(key, now) else {
        return error_page(StatusCode::BAD_REQUEST, "this sign-in has expired; start again from the app");
    };
    let tls = conn.as_ref().is_some_and(|c| c.tls.is_some());
    let ctx = ctx_of(conn.as_ref(), Some(&p.client_id));
    let again = |s: &Shared, p: Pending, status: StatusCode, notice: &str| {
        let token = IssuedSecret::generate(SecretKind::FormToken);
        let resp = page(status, "Sign in", &password_form(&p, token.text(), Some(notice)), Some(&p.redirect_uri));
        s.oauth_pending.insert(token.hash(), p, now);
        with_cookie(resp, token.text(), tls)
    };
    let step = f.remove("step").unwrap_or_default();
    let outcome = match (step.as_str(), &p.step) {
        ("cancel", _) => {
            return redirect_error(
                &p.redirect_uri,
                "access_denied",
                "the person cancelled the sign-in",
                p.state.as_deref(),
            );
        }
        ("password", Step::Password) => {
            let account = f.remove("account").unwrap_or_default();
            let password = Zeroizing::new(f.remove("password").unwrap_or_default());
            // Two factors or a password alone, by role and the zone of this request (AUTH-2).
            let zone = zone_name_of(&s, conn.as_ref());
            let r =
                s.store.login_password_from(ctx.clone(), zone, account.clone(), password, Arc::clone(&s.login)).await;
            r.map(|o| (o, account))
        }
        ("second-factor", Step::SecondFactor { .. }) => {
            let Step::SecondFactor { ticket, account } = std::mem::replace(&mut p.step, Step::Password) else {
                return error_page(StatusCode::BAD_REQUEST, "unexpected step");
            };
            let method = f.remove("method").unwrap_or_default();
            let r = if method == "webauthn" && s.login.webauthn.is_some() {
                // The same store step as `/auth/login/second-factor`; a field that is not an
                // assertion at all is audited here and answered the same way.
                match oauth_webauthn::assertion_of(&f.remove("assertion").unwrap_or_default()) {
                    Some(a) => s.store.webauthn_login_finish(ctx.clone(), ticket, a, Arc::clone(&s.login)).await,
                    None => {
                        let why = "authorize: malformed WebAuthn assertion".to_string();
                        let _ = s.store.oauth_failure(ctx.clone(), Some(p.client_id.clone()), why).await;
                        Err(StoreError::InvalidCredentials)
                    }
                }
            } else {
                let code = f.remove("code").unwrap_or_default();
                let Some(factor) = second_factor_of(&method, code) else {
                    return error_page(StatusCode::BAD_REQUEST, "unknown second-factor method");
                };
                s.store.login_second_factor(ctx.clone(), ticket, factor, Arc::clone(&s.login)).await
            };
            r.map(|o| (o, account))
        }
        _ => return error_page(StatusCode::BAD_REQUEST, "unexpected step; start again from the app"),
    };
    match outcome {
        Ok((LoginOutcome::Session { token, .. }, account)) => {
            let grant = CodeGrant {
                session: TokenHash::of(&token),
                account,
                client_id: p.client_id.clone(),
                redirect_uri: p.redirect_uri.clone(),
                challenge: p.challenge.clone(),
                scope: p.scope.clone(),
                zone: zone_name_of(&s, conn.as_ref()),
                context: p.context.clone(),
            };
            drop(token);
            match s.store.issue_code(ctx, grant).await {
                Ok(code) => {
                    let mut params = vec![("code", code.as_str())];
                    if let Some(st) = &p.state {
                        params.push(("state", st.as_str()));
                    }
                    redirect(&p.redirect_uri, &params)
                }
                // The launch context could not be used (the store audited why).
                Err(StoreError::Invalid { .. }) => redirect_error(
                    &p.redirect_uri,
                    "access_denied",
                    "the launch context is expired, already used, or was issued to another person; start the app \
                     again from the EHR",
                    p.state.as_deref(),
                ),
                Err(_) => error_page(StatusCode::INTERNAL_SERVER_ERROR, "the sign-in could not be completed"),
            }
        }
        Ok((LoginOutcome::SecondFactorRequired { ticket, methods, .. }, account)) => {
            // A WebAuthn challenge bound to this sign-in's ticket, as the JSON API issues it.
            let options = if methods.contains(&"webauthn") && s.login.webauthn.is_some() {
                s.store.webauthn_login_begin(ctx.clone(), ticket.clone(), Arc::clone(&s.login)).await.ok()
            } else {
                None
            };
            p.step = Step::SecondFactor { ticket, account };
            let token = IssuedSecret::generate(SecretKind::FormToken);
            let body = second_factor_form(token.text(), &methods, options.as_ref());
            let script = options.is_some().then(oauth_webauthn::script_source);
            let resp = page_with_script(StatusCode::OK, "Second factor", &body, Some(&p.redirect_uri), script);
            s.oauth_pending.insert(token.hash(), p, now);
            with_cookie(resp, token.text(), tls)
        }
        Ok((LoginOutcome::PasswordChangeRequired { .. }, _)) => error_page(
            StatusCode::FORBIDDEN,
            "your password must be changed before you can sign in to apps; change it first, then start again from the app",
        ),
        Ok((LoginOutcome::EnrolmentRequired { .. }, _)) => error_page(
            StatusCode::FORBIDDEN,
            "your account needs a second factor to sign in to apps from this network; enrol one first, then start again \
             from the app",
        ),
        // The same answer whatever went wrong; the audit trail has the reason.
        Err(StoreError::InvalidCredentials) => again(&s, p, StatusCode::UNAUTHORIZED, "Invalid credentials"),
        Err(_) => error_page(StatusCode::INTERNAL_SERVER_ERROR, "the sign-in could not be completed"),
    }
}

// ---- /oauth/token and /oauth/revoke ----------------------------------------------------------

pub(crate) fn token_json(status: StatusCode, v: serde_json::Value) -> Response {
    let mut resp = (status, serde_json::to_vec(&v).unwrap_or_default()).into_response();
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    resp
}

/// RFC 6749 §5.2.
pub(crate) fn token_error(status: StatusCode, error: &str, description: &str) -> Response {
    let status = if error == "invalid_client" { StatusCode::UNAUTHORIZED } else { status };
    token_json(status, json!({"error": error, "error_description": description}))
}

fn refusal(r: Refusal) -> Response {
    let description = match r.error {
        "invalid_grant" if r.reason == SIGN_IN_TOO_WEAK => {
            "the sign-in behind this grant used a password alone, which is not enough from this network zone: \
             sign in again with a second factor"
        }
        "invalid_grant" => "the grant is invalid, expired, revoked or was issued to another client",
        "invalid_client" => "client authentication failed",
        "invalid_scope" => "the requested scope exceeds the grant",
        _ => "the request was refused",
    };
    token_error(StatusCode::BAD_REQUEST, r.error, description)
}

fn tokens_json(t: Tokens, patient: Option<String>, id_token: Option<String>) -> Response {
    let mut v = json!({
        "access_token": t.access_token.as_str(),
        "token_type": "Bearer",
        "expires_in": t.expires_in,
        "scope": t.scope.to_string(),
    });
    if let Some(r) = &t.refresh_token {
        v["refresh_token"] = json!(r.as_str());
    }
    // SMART launch context: the Patient whose compartment the patient/ scopes apply to.
    if let Some(p) = patient {
        v["patient"] = json!(p);
    }
    if let Some(id) = id_token {
        v["id_token"] = json!(id);
    }
    token_json(StatusCode::OK, v)
}

/// Audits a refusal made before the store was reached, and answers it.
async fn refused(s: &Shared, conn: Option<&ConnInfo>, client: Option<&str>, error: &str, why: &str) -> Response {
    let ctx = ctx_of(conn, client);
    let _ = s.store.oauth_failure(ctx, client.map(str::to_string), format!("token: {error}: {why}")).await;
    token_error(StatusCode::BAD_REQUEST, error, why)
}

/// A system client authenticated by `private_key_jwt`; returns its id and the assertion's
/// replay-cache entry.
async fn assertion_client(
    s: &Shared,
    f: &HashMap<String, String>,
    token_url: &str,
) -> Result<(String, mamori_store::oauth::Client, client_assertion::VerifiedAssertion), (Option<String>, String)> {
    if f.get("client_assertion_type").map(String::as_str) != Some(client_assertion::ASSERTION_TYPE) {
        return Err((None, "client_assertion_type must be jwt-bearer".into()));
    }
    let assertion = f.get("client_assertion").map(String::as_str).unwrap_or("");
    let client_id =
        client_assertion::claimed_client(assertion).ok_or((None, "malformed client assertion".to_string()))?;
    if f.get("client_id").is_some_and(|c| *c != client_id) {
        return Err((Some(client_id), "client_id differs from the assertion's issuer".into()));
    }
    let client = match s.store.oauth_client(client_id.clone()).await {
        Ok(Some(c)) => c,
        _ => return Err((Some(client_id), "unknown client".into())),
    };
    let ClientKind::System { jwks, .. } = &client.kind else {
        return Err((Some(client_id), "not a system client".into()));
    };
    let keys = ClientKeys::parse(jwks).map_err(|e| (Some(client_id.clone()), e.to_string()))?;
    let now_s = s.now_us().div_euclid(1_000_000);
    match client_assertion::verify(assertion, &keys, &client_id, token_url, now_s) {
        Ok(v) => Ok((client_id, client, v)),
        Err(e) => Err((Some(client_id), e.to_string())),
    }
}

pub(crate) async fn token(State(s): St, req: Request) -> Response {
    let id = request_id();
    let (headers, conn, body) = match body_of(req).await {
        Ok(t) => t,
        Err(resp) => return resp,
    };
    let conn = conn.as_ref();
    let Ok(f) = form_pairs(&body) else {
        return refused(&s, conn, None, "invalid_request", "a parameter is given more than once").await;
    };
    let get = |k: &str| f.get(k).map(String::as_str).filter(|v| !v.is_empty());
    let resp = match get("grant_type") {
        Some("authorization_code") => {
            let (Some(client_id), Some(code), Some(redirect_uri)) =
                (get("client_id"), get("code"), get("redirect_uri"))
            else {
                return refused(
                    &s,
                    conn,
                    get("client_id"),
                    "invalid_request",
                    "client_id, code and redirect_uri are required",
                )
                .await;
            };
            match s.store.oauth_client(client_id.to_string()).await {
                Ok(Some(c)) if matches!(c.kind, ClientKind::Public { .. }) => {}
                _ => return refused(&s, conn, Some(client_id), "invalid_client", "unknown client").await,
            }
            // A missing verifier is an empty one: the code is spent and the exchange refused.
            let verifier = Zeroizing::new(get("code_verifier").unwrap_or("").to_string());
            let r = s
                .store
                .exchange_code(
                    ctx_of(conn, Some(client_id)),
                    CodeExchange {
                        client_id: client_id.to_string(),
                        code: Zeroizing::new(code.to_string()),
                        redirect_uri: redirect_uri.to_string(),
                        verifier,
                        zone: zone_name_of(&s, conn),
                    },
                    Arc::clone(&s.login),
                    s.oauth.lifetimes,
                )
                .await;
            let issuer = root(&s, &headers, conn);
            answer_person(&s, r, Some((client_id, &issuer))).await
        }
        Some("refresh_token") => {
            let (Some(client_id), Some(rt)) = (get("client_id"), get("refresh_token")) else {
                return refused(
                    &s,
                    conn,
                    get("client_id"),
                    "invalid_request",
                    "client_id and refresh_token are required",
                )
                .await;
            };
            let scope = match get("scope").map(str::parse::<ScopeSet>).transpose() {
                Ok(sc) => sc,
                Err(e) => return refused(&s, conn, Some(client_id), "invalid_scope", &e.to_string()).await,
            };
            let r = s
                .store
                .refresh(
                    ctx_of(conn, Some(client_id)),
                    RefreshRequest {
                        client_id: client_id.to_string(),
                        refresh_token: Zeroizing::new(rt.to_string()),
                        scope,
                        zone: zone_name_of(&s, conn),
                    },
                    Arc::clone(&s.login),
                    s.oauth.lifetimes,
                )
                .await;
            answer_person(&s, r, None).await
        }
        Some("client_credentials") if s.login.audience == Audience::Patient => {
            refused(&s, conn, get("client_id"), "unsupported_grant_type", "backend services use the staff interface")
                .await
        }
        Some("client_credentials") => {
            let token_url = format!("{}/oauth/token", root(&s, &headers, conn));
            let (client_id, client, verified) = match assertion_client(&s, &f, &token_url).await {
                Ok(t) => t,
                Err((client, why)) => return refused(&s, conn, client.as_deref(), "invalid_client", &why).await,
            };
            let requested: ScopeSet = match get("scope").unwrap_or("").parse() {
                Ok(sc) => sc,
                Err(e) => return refused(&s, conn, Some(&client_id), "invalid_scope", &e.to_string()).await,
            };
            let scope = requested.intersect(&client.scope);
            if scope.clinical.is_empty() {
                return refused(
                    &s,
                    conn,
                    Some(&client_id),
                    "invalid_scope",
                    "no requested scope is registered for this client",
                )
                .await;
            }
            let r = s
                .store
                .client_credentials(
                    ctx_of(conn, Some(&client_id)),
                    client_id.clone(),
                    verified.jti,
                    verified.exp,
                    scope,
                    s.oauth.lifetimes,
                )
                .await;
            answer(r)
        }
        Some(_) => refused(&s, conn, get("client_id"), "unsupported_grant_type", "grant_type is not supported").await,
        None => refused(&s, conn, get("client_id"), "invalid_request", "grant_type is required").await,
    };
    with_request_id(resp, &id)
}

/// A person's tokens with their launch context: at the patient interface the signed-in
/// patient's Patient (the tokens work only while that link exists: `patient::require_patient`),
/// at the staff interface the EHR launch's Patient, if any. `id_token_for` (client id, issuer):
/// a code exchange, which carries an ID token when `openid` was granted.
async fn answer_person(
    s: &Shared,
    r: Result<Result<Tokens, Refusal>, StoreError>,
    id_token_for: Option<(&str, &str)>,
) -> Response {
    let server_error =
        || token_error(StatusCode::INTERNAL_SERVER_ERROR, "server_error", "the request could not be completed");
    let t = match r {
        Ok(Ok(t)) => t,
        r => return answer(r),
    };
    let patient = match (s.login.audience, &t.account) {
        (Audience::Patient, Some(account)) => match s.store.patient_of(account.clone()).await {
            Ok(p) => p,
            Err(_) => return server_error(),
        },
        _ => t.patient.clone(),
    };
    let id_token = match id_token_for {
        Some((client_id, issuer)) => match crate::oidc::id_token(s, &t, client_id, issuer).await {
            Ok(id) => id,
            Err(()) => return server_error(),
        },
        None => None,
    };
    tokens_json(t, patient, id_token)
}

fn answer(r: Result<Result<Tokens, Refusal>, StoreError>) -> Response {
    match r {
        Ok(Ok(t)) => tokens_json(t, None, None),
        Ok(Err(refusal_)) => refusal(refusal_),
        Err(_) => token_error(StatusCode::INTERNAL_SERVER_ERROR, "server_error", "the request could not be completed"),
    }
}

pub(crate) async fn revoke(State(s): St, req: Request) -> Response {
    let (headers, conn, body) = match body_of(req).await {
        Ok(t) => t,
        Err(resp) => return resp,
    };
    let conn = conn.as_ref();
    let Ok(f) = form_pairs(&body) else {
        return refused(&s, conn, None, "invalid_request", "a parameter is given more than once").await;
    };
    let Some(token) = f.get("token").filter(|t| !t.is_empty()) else {
        return refused(&s, conn, None, "invalid_request", "token is required").await;
    };
    // Public clients name themselves; system clients authenticate with an assertion.
    let client_id = if f.contains_key("client_assertion") {
        let token_url = format!("{}/oauth/token", root(&s, &headers, conn));
        match assertion_client(&s, &f, &token_url).await {
            Ok((id, _, _)) => id,
            Err((client, why)) => return refused(&s, conn, client.as_deref(), "invalid_client", &why).await,
        }
    } else {
        match f.get("client_id") {
            Some(c) if matches!(s.store.oauth_client(c.clone()).await, Ok(Some(_))) => c.clone(),
            c => return refused(&s, conn, c.map(String::as_str), "invalid_client", "unknown client").await,
        }
    };
    let ctx = ctx_of(conn, Some(&client_id));
    match s.store.revoke_token(ctx, client_id, Zeroizing::new(token.clone())).await {
        Ok(()) => token_json(StatusCode::OK, json!({})),
        Err(_) => token_error(StatusCode::SERVICE_UNAVAILABLE, "server_error", "the token could not be revoked"),
    }
}

// ---- discovery ---------------------------------------------------------------------------------

/// `GET /fhir/.well-known/smart-configuration` (SMART App Launch 2.x). Lists only what works.
pub(crate) async fn smart_configuration(State(s): St, req: Request) -> Response {
    let conn = req.extensions().get::<ConnInfo>().cloned();
    let root = root(&s, req.headers(), conn.as_ref());
    let mut resp = token_json(StatusCode::OK, smart_document(&s, &root));
    resp.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    resp
}

/// The discovery document of the staff interface (`Audience::Staff`: staff apps with `user/`
/// scopes, EHR launch with `patient/` scopes confined to the launch patient, backend services with
/// `system/`) or the patient interface (`Audience::Patient`: patients' apps, standalone launch
/// with the signed-in patient as the context, `patient/` scopes, no backend services). OpenID
/// Connect (`openid fhirUser`, `sso-openid-connect`) when the server has its ID token key.
pub(crate) fn smart_document(s: &Shared, root: &str) -> serde_json::Value {
    let audience = s.login.audience;
    let oidc = crate::oidc::enabled(s);
    let (grants, auth_methods, mut scopes, mut capabilities) = match audience {
        Audience::Staff => (
            json!(["authorization_code", "refresh_token", "client_credentials"]),
            json!(["none", "private_key_jwt"]),
            vec![
                "user/*.cruds",
                "user/*.rs",
                "patient/*.cruds",
                "patient/*.rs",
                "system/*.cruds",
                "system/*.rs",
                "launch",
            ],
            vec![
                "launch-standalone",
                "launch-ehr",
                "client-public",
                "client-confidential-asymmetric",
                "context-ehr-patient",
                "permission-user",
                "permission-patient",
            ],
        ),
        Audience::Patient => (
            json!(["authorization_code", "refresh_token"]),
            json!(["none"]),
            vec!["patient/*.cruds", "patient/*.rs", "launch/patient"],
            vec!["launch-standalone", "client-public", "context-standalone-patient", "permission-patient"],
        ),
    };
    if oidc {
        scopes.extend(["openid", "fhirUser"]);
        capabilities.push("sso-openid-connect");
    }
    scopes.extend(["offline_access", "online_access"]);
    capabilities.extend(["permission-offline", "permission-online", "permission-v1", "permission-v2"]);
    let mut doc = json!({
        "issuer": root,
        "authorization_endpoint": format!("{root}/oauth/authorize"),
        "token_endpoint": format!("{root}/oauth/token"),
        "revocation_endpoint": format!("{root}/oauth/revoke"),
        "grant_types_supported": grants,
        "response_types_supported": ["code"],
        "code_challenge_methods_supported": ["S256"],
        "token_endpoint_auth_methods_supported": auth_methods,
        "scopes_supported": scopes,
        "capabilities": capabilities
    });
    if audience == Audience::Staff {
        doc["token_endpoint_auth_signing_alg_values_supported"] = json!(client_assertion::ALGORITHMS);
    }
    if oidc {
        doc["jwks_uri"] = json!(format!("{root}/oauth/jwks"));
    }
    doc
}

/// The SMART OAuth URIs and capabilities extensions for the CapabilityStatement's security
/// section: the same endpoints and capabilities as the SMART configuration.
pub(crate) fn capability_security(s: &Shared, root: &str) -> serde_json::Value {
    let smart = smart_document(s, root);
    let capabilities: Vec<serde_json::Value> = smart["capabilities"]
        .as_array()
        .map(|c| {
            c.iter()
                .map(|v| json!({"url": "http://fhir-registry.smarthealthit.org/StructureDefinition/capabilities", "valueCode": v}))
                .collect()
        })
        .unwrap_or_default();
    let mut extension = vec![json!({
        "url": "http://fhir-registry.smarthealthit.org/StructureDefinition/oauth-uris",
        "extension": [
            {"url": "authorize", "valueUri": format!("{root}/oauth/authorize")},
            {"url": "token", "valueUri": format!("{root}/oauth/token")},
            {"url": "revoke", "valueUri": format!("{root}/oauth/revoke")}
        ]
    })];
    extension.extend(capabilities);
    json!({
        "cors": false,
        "service": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/restful-security-service", "code": "SMART-on-FHIR"}]}],
        "extension": extension,
        "description": "Bearer tokens: SMART on FHIR OAuth 2.0 (authorization code with PKCE for apps, standalone or launched from the EHR, OpenID Connect ID tokens, client credentials with private_key_jwt for backend services), login sessions, or API tokens from `mamori token create`; scopes narrow the access policy, never widen it; every access is audited."
    })
}
