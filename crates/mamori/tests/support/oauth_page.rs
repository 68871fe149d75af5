//! Browser-free helpers for the OAuth sign-in page (AUTH-6): form posts with the form token and
//! its cookie, an independent RFC 6238 TOTP, PKCE, and the app's view of the redirect. Used by
//! the patient-interface tests (`patient_oauth.rs`) and the zone tests (`oauth_zones.rs`); every
//! helper takes the interface's root URL (`http://host:port`), so the staff flow in `oauth.rs`
//! can use them too. The `…_with` forms take the HTTP client, e.g. one whose connections come
//! from a chosen source address ([`browser_from`]), for zones by source address.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use crate::support::{DataDir, Server, base32_decode, json, mamori, ok, set_password, totp, unix_now};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Value, json};
use sha2::Digest;

/// The app's registered redirect URI (nothing listens there: the test reads the 303).
pub const REDIRECT: &str = "http://127.0.0.1:9/callback";

/// The password people of these tests choose at their first login.
pub const PASSWORD: &str = "Hakone-Maple-42-River";

/// Registers the public app `id` (redirect URI [`REDIRECT`]) with the CLI: (exit code, stdout,
/// stderr).
pub fn add_app(dir: &DataDir, id: &str, scope: &str) -> (i32, String, String) {
    mamori(&[
        "client",
        "add",
        "--data-dir",
        dir.arg(),
        "--id",
        id,
        "--name",
        id,
        "--scope",
        scope,
        "--redirect-uri",
        REDIRECT,
    ])
}

/// POSTs JSON to `path` under `root` (from 127.0.0.1) and returns the JSON answer.
pub async fn post_at(root: &str, path: &str, body: &Value) -> Value {
    let r = reqwest::Client::new().post(format!("{root}{path}")).json(body).send().await.unwrap();
    json(r).await.1
}

/// Sets an initial password with the CLI and changes it to [`PASSWORD`] through the login API
/// at `root`; returns the answer of the next login with it (a session, a second-factor step or
/// an enrolment ticket, as the login policy decides).
pub async fn own_password(dir: &DataDir, root: &str, name: &str) -> Value {
    let (code, out) = set_password(dir, name, "Initial-Pass-9876!");
    assert_eq!(code, 0, "{out}");
    let r = post_at(root, "/auth/login", &json!({"account": name, "password": "Initial-Pass-9876!"})).await;
    let t = r["password_ticket"].as_str().expect("password change").to_string();
    post_at(root, "/auth/password", &json!({"password_ticket": t, "new_password": PASSWORD})).await;
    post_at(root, "/auth/login", &json!({"account": name, "password": PASSWORD})).await
}

/// [`own_password`], then enrols TOTP with the enrolment ticket that login gives; returns the
/// TOTP secret and recovery codes.
pub async fn enrol_totp(dir: &DataDir, root: &str, name: &str) -> (Vec<u8>, Vec<String>) {
    let r = own_password(dir, root, name).await;
    let enrol = r["enrol_ticket"].as_str().expect("TOTP enrolment").to_string();
    let r = post_at(root, "/auth/totp", &json!({"enrol_ticket": enrol})).await;
    let secret = base32_decode(r["secret"].as_str().unwrap());
    let r =
        post_at(root, "/auth/totp/confirm", &json!({"enrol_ticket": enrol, "code": totp(&secret, unix_now())})).await;
    assert_eq!(r["status"], "second-factor-active", "{r}");
    let out = ok(&["user", "recovery-codes", "--data-dir", dir.arg(), name]);
    (secret, out.lines().map(str::trim).filter(|l| l.len() == 19).map(str::to_string).collect())
}

/// A server with a patient interface (`[patient_portal]`) and a physician's API token; returns it
/// with the staff and the patient interface's root URLs.
pub fn server_with_portal() -> (Server, String, String) {
    let dir = DataDir::init();
    let cfg = std::fs::read_to_string(dir.path.join("mamori.toml")).unwrap();
    std::fs::write(dir.path.join("mamori.toml"), format!("{cfg}\n[patient_portal]\nlisten = [\"127.0.0.1:0\"]\n"))
        .unwrap();
    let api = dir.user_with_token("dr.test", "physician");
    let (s, bases) = Server::start_with(dir, api, &["--dev"], 2);
    let (staff, portal) =
        (bases[0].trim_end_matches("/fhir").to_string(), bases[1].trim_end_matches("/fhir").to_string());
    (s, staff, portal)
}

/// `application/x-www-form-urlencoded` bodies, as a browser or an OAuth client sends them.
pub trait FormExt {
    fn form_(self, pairs: &[(&str, &str)]) -> Self;
}

impl FormExt for reqwest::RequestBuilder {
    fn form_(self, pairs: &[(&str, &str)]) -> Self {
        let mut ser = form_urlencoded::Serializer::new(String::new());
        for (k, v) in pairs {
            ser.append_pair(k, v);
        }
        self.header("content-type", "application/x-www-form-urlencoded").body(ser.finish())
    }
}

pub fn no_redirects() -> reqwest::Client {
    reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap()
}

/// A browser (no redirects followed) whose connections come from `local`, a loopback address
/// of the test machine (127.0.0.2, …): the server puts it in the zone of that address.
pub fn browser_from(local: &str) -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .local_address(local.parse::<std::net::IpAddr>().unwrap())
        .build()
        .unwrap()
}

/// A PKCE verifier and its S256 challenge.
pub fn pkce() -> (String, String) {
    let verifier = format!("v{}", uuid::Uuid::new_v4().simple()) + &uuid::Uuid::new_v4().simple().to_string();
    let challenge = URL_SAFE_NO_PAD.encode(sha2::Sha256::digest(verifier.as_bytes()));
    (verifier, challenge)
}

/// `/oauth/authorize` at `root` for `client`, with `aud` = `root/fhir`.
pub fn authorize_at(root: &str, client: &str, scope: &str, challenge: &str) -> String {
    authorize_params(root, client, scope, challenge, &[])
}

/// [`authorize_at`] with `extra` parameters (`launch`, `nonce`).
pub fn authorize_params(root: &str, client: &str, scope: &str, challenge: &str, extra: &[(&str, &str)]) -> String {
    let mut q = form_urlencoded::Serializer::new(String::new());
    q.append_pair("response_type", "code")
        .append_pair("client_id", client)
        .append_pair("redirect_uri", REDIRECT)
        .append_pair("scope", scope)
        .append_pair("state", "st-42")
        .append_pair("aud", &format!("{root}/fhir"))
        .append_pair("code_challenge", challenge)
        .append_pair("code_challenge_method", "S256");
    for (k, v) in extra {
        q.append_pair(k, v);
    }
    format!("{root}/oauth/authorize?{}", q.finish())
}

/// The hidden form token of a page and the cookie that must come with it.
pub fn form_token(html: &str) -> String {
    let at = html.find("name=\"form_token\" value=\"").expect("form token field") + 25;
    html[at..].split('"').next().unwrap().to_string()
}

pub fn set_cookie(resp: &reqwest::Response) -> String {
    let c = resp.headers().get("set-cookie").expect("cookie").to_str().unwrap();
    c.split(';').next().unwrap().to_string()
}

/// Opens the sign-in page at `url` (checking its anti-framing, CSP and caching headers) and
/// posts the password step; returns the response.
pub async fn password_step(root: &str, url: &str, account: &str, password: &str) -> reqwest::Response {
    password_step_with(&no_redirects(), root, url, account, password).await
}

/// [`password_step`] with the browser `http`.
pub async fn password_step_with(
    http: &reqwest::Client,
    root: &str,
    url: &str,
    account: &str,
    password: &str,
) -> reqwest::Response {
    let resp = http.get(url).send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 200, "{url}");
    let h = resp.headers();
    assert_eq!(h["x-frame-options"], "DENY");
    assert!(h["content-security-policy"].to_str().unwrap().contains("form-action 'self' http://127.0.0.1:9"));
    assert_eq!(h["cache-control"], "no-store");
    let cookie = set_cookie(&resp);
    let ft = form_token(&resp.text().await.unwrap());
    http.post(format!("{root}/oauth/authorize"))
        .header("cookie", &cookie)
        .form_(&[("form_token", ft.as_str()), ("step", "password"), ("account", account), ("password", password)])
        .send()
        .await
        .unwrap()
}

/// A second factor for the sign-in page.
pub enum Factor<'a> {
    /// A TOTP code for this Unix time (a code's 30 s step works once per account).
    Totp(&'a [u8], u64),
    Recovery(&'a str),
}

/// Signs in on the page at `root` with the browser `http` (password, then the second factor)
/// and returns the redirect's query parameters.
pub async fn sign_in_with(
    http: &reqwest::Client,
    root: &str,
    url: &str,
    account: &str,
    password: &str,
    factor: Factor<'_>,
) -> Vec<(String, String)> {
    let resp = password_step_with(http, root, url, account, password).await;
    assert_eq!(resp.status().as_u16(), 200);
    let cookie = set_cookie(&resp);
    let html = resp.text().await.unwrap();
    assert!(html.contains("name=\"method\" value=\"totp\""), "{html}");
    let ft = form_token(&html);
    let (method, code) = match factor {
        Factor::Totp(secret, at) => ("totp", totp(secret, at)),
        Factor::Recovery(c) => ("recovery_code", c.to_string()),
    };
    let resp = http
        .post(format!("{root}/oauth/authorize"))
        .header("cookie", &cookie)
        .form_(&[("form_token", ft.as_str()), ("step", "second-factor"), ("method", method), ("code", code.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 303, "{:?}", resp.text().await);
    redirect_params(&resp)
}

/// The query parameters of a 303 to the app's redirect URI.
pub fn redirect_params(resp: &reqwest::Response) -> Vec<(String, String)> {
    let loc = resp.headers()["location"].to_str().unwrap().to_string();
    let (base, q) = loc.split_once('?').unwrap();
    assert_eq!(base, REDIRECT);
    form_urlencoded::parse(q.as_bytes()).into_owned().collect()
}

pub fn param<'a>(p: &'a [(String, String)], k: &str) -> Option<&'a str> {
    p.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str())
}

/// `POST /oauth/token` at `root`.
pub async fn token_at(root: &str, form: &[(&str, &str)]) -> (u16, Value) {
    token_with(&reqwest::Client::new(), root, form).await
}

/// [`token_at`] with the client `http`.
pub async fn token_with(http: &reqwest::Client, root: &str, form: &[(&str, &str)]) -> (u16, Value) {
    let resp = http.post(format!("{root}/oauth/token")).form_(form).send().await.unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

/// Exchanges a code for `client` at `root`.
pub async fn exchange_at(root: &str, client: &str, code: &str, verifier: &str) -> (u16, Value) {
    exchange_with(&reqwest::Client::new(), root, client, code, verifier).await
}

/// [`exchange_at`] with the client `http`.
pub async fn exchange_with(
    http: &reqwest::Client,
    root: &str,
    client: &str,
    code: &str,
    verifier: &str,
) -> (u16, Value) {
    token_with(
        http,
        root,
        &[
            ("grant_type", "authorization_code"),
            ("client_id", client),
            ("code", code),
            ("redirect_uri", REDIRECT),
            ("code_verifier", verifier),
        ],
    )
    .await
}
