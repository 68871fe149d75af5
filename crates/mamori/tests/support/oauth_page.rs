//! Browser-free helpers for the OAuth sign-in page (AUTH-6): form posts with the form token and
//! its cookie, an independent RFC 6238 TOTP, PKCE, and the app's view of the redirect. Used by
//! the patient-interface tests (`patient_oauth.rs`); every helper takes the interface's root URL
//! (`http://host:port`), so the staff flow in `oauth.rs` can use them too.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use crate::support::{DataDir, Server, base32_decode, json, mamori, ok, set_password, totp, unix_now};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Value, json};
use sha2::Digest;

/// The app's registered redirect URI (nothing listens there: the test reads the 303).
pub const REDIRECT: &str = "http://127.0.0.1:9/callback";

/// The password people choose in these tests (after the initial one).
pub const PASSWORD: &str = "Hakone-Maple-42-River";

/// POSTs JSON to `path` under `root` (no credential) and returns the JSON answer.
pub async fn post_at(root: &str, path: &str, body: &Value) -> Value {
    let r = reqwest::Client::new().post(format!("{root}{path}")).json(body).send().await.unwrap();
    json(r).await.1
}

/// Sets an initial password, changes it to [`PASSWORD`], and enrols TOTP through the login API
/// at `root`; returns the TOTP secret and recovery codes.
pub async fn enrol_totp(dir: &DataDir, root: &str, name: &str) -> (Vec<u8>, Vec<String>) {
    let (code, out) = set_password(dir, name, "Initial-Pass-9876!");
    assert_eq!(code, 0, "{out}");
    let r = post_at(root, "/auth/login", &json!({"account": name, "password": "Initial-Pass-9876!"})).await;
    let t = r["password_ticket"].as_str().expect("password change").to_string();
    post_at(root, "/auth/password", &json!({"password_ticket": t, "new_password": PASSWORD})).await;
    let r = post_at(root, "/auth/login", &json!({"account": name, "password": PASSWORD})).await;
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

/// `mamori client add` for a SMART app redirecting to [`REDIRECT`]: (exit code, stdout, stderr).
pub fn add_client(s: &Server, id: &str, scope: &str) -> (i32, String, String) {
    mamori(&[
        "client",
        "add",
        "--data-dir",
        s.dir.arg(),
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

/// A PKCE verifier and its S256 challenge.
pub fn pkce() -> (String, String) {
    let verifier = format!("v{}", uuid::Uuid::new_v4().simple()) + &uuid::Uuid::new_v4().simple().to_string();
    let challenge = URL_SAFE_NO_PAD.encode(sha2::Sha256::digest(verifier.as_bytes()));
    (verifier, challenge)
}

/// `/oauth/authorize` at `root` for `client`, with `aud` = `root/fhir`.
pub fn authorize_at(root: &str, client: &str, scope: &str, challenge: &str) -> String {
    authorize_with(root, client, scope, challenge, &[])
}

/// [`authorize_at`] with `extra` parameters (`launch`, `nonce`).
pub fn authorize_with(root: &str, client: &str, scope: &str, challenge: &str, extra: &[(&str, &str)]) -> String {
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
    let http = no_redirects();
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

/// Signs in on the page at `root` like a browser (password, then the second factor) and
/// returns the redirect's query parameters.
pub async fn sign_in_at(
    root: &str,
    url: &str,
    account: &str,
    password: &str,
    factor: Factor<'_>,
) -> Vec<(String, String)> {
    let resp = password_step(root, url, account, password).await;
    assert_eq!(resp.status().as_u16(), 200);
    let cookie = set_cookie(&resp);
    let html = resp.text().await.unwrap();
    assert!(html.contains("name=\"method\" value=\"totp\""), "{html}");
    let ft = form_token(&html);
    let (method, code) = match factor {
        Factor::Totp(secret, at) => ("totp", totp(secret, at)),
        Factor::Recovery(c) => ("recovery_code", c.to_string()),
    };
    let resp = no_redirects()
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
    let resp = reqwest::Client::new().post(format!("{root}/oauth/token")).form_(form).send().await.unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

/// Exchanges a code for `client` at `root`.
pub async fn exchange_at(root: &str, client: &str, code: &str, verifier: &str) -> (u16, Value) {
    token_at(
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
