//! Test kit: every integration test drives the real `mamori` binary: `init`, `user add`,
//! `token create`, then `serve` on an ephemeral loopback port, over HTTP. No test touches the
//! store except through the server (or, to play an insider, the database file itself).
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;

pub mod authenticator;
pub mod otp;
pub mod synthea;

#[allow(unused_imports)] // not every test binary plays the authenticator app
pub use otp::{base32_decode, totp, unix_now};

pub const BIN: &str = env!("CARGO_BIN_EXE_mamori");

pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().unwrap()
}

/// Runs a mamori command and returns (exit code, stdout, stderr).
pub fn mamori(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(BIN).args(args).env("RUST_LOG", "warn").output().expect("run mamori");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `mamori user password NAME` with the password on standard input: (exit code, output).
pub fn set_password(dir: &DataDir, name: &str, password: &str) -> (i32, String) {
    let mut child = Command::new(BIN)
        .args(["user", "password", "--data-dir", dir.arg(), name])
        .env("RUST_LOG", "warn")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(format!("{password}\n").as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)),
    )
}

pub fn ok(args: &[&str]) -> String {
    let (code, out, err) = mamori(args);
    assert_eq!(code, 0, "mamori {args:?} failed: {err}");
    out
}

pub struct DataDir {
    _tmp: tempfile::TempDir,
    pub path: PathBuf,
}

impl DataDir {
    /// `mamori init` in a fresh temporary directory.
    pub fn init() -> DataDir {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("data");
        ok(&["init", "--data-dir", path.to_str().unwrap()]);
        DataDir { _tmp: tmp, path }
    }

    /// A data directory initialised by the test itself (to read what `init` printed).
    pub fn from_path(tmp: tempfile::TempDir, path: PathBuf) -> DataDir {
        DataDir { _tmp: tmp, path }
    }

    pub fn arg(&self) -> &str {
        self.path.to_str().unwrap()
    }

    /// Adds an account and returns a fresh bearer token for it.
    pub fn user_with_token(&self, name: &str, role: &str) -> String {
        ok(&["user", "add", "--data-dir", self.arg(), "--name", name, "--role", role]);
        self.token(name)
    }

    pub fn token(&self, name: &str) -> String {
        ok(&["token", "create", "--data-dir", self.arg(), "--user", name]).trim().to_string()
    }

    pub fn db(&self) -> PathBuf {
        self.path.join("mamori.db")
    }

    /// The audit trail's database file.
    pub fn audit_db(&self) -> PathBuf {
        self.path.join("mamori-audit.db")
    }

    /// A read-only look at the records database, as an auditor of the test would take.
    pub fn query_i64(&self, sql: &str) -> i64 {
        let c = rusqlite::Connection::open_with_flags(self.db(), rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY).unwrap();
        c.query_row(sql, [], |r| r.get(0)).unwrap()
    }

    /// A read-only look at the audit database.
    pub fn audit_i64(&self, sql: &str) -> i64 {
        let c =
            rusqlite::Connection::open_with_flags(self.audit_db(), rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY).unwrap();
        c.query_row(sql, [], |r| r.get(0)).unwrap()
    }
}

pub struct Server {
    pub dir: DataDir,
    child: Option<Child>,
    pub base: String,
    pub token: String,
    pub http: reqwest::Client,
}

impl Server {
    /// Initialises a data directory with a physician account and starts the server.
    pub fn start() -> Server {
        let dir = DataDir::init();
        let token = dir.user_with_token("dr.test", "physician");
        Server::start_in(dir, token)
    }

    pub fn start_in(dir: DataDir, token: String) -> Server {
        Server::start_with(dir, token, &["--dev"], 1).0
    }

    /// Starts the server with extra `serve` arguments and returns the base URLs of the first
    /// `listeners` lines it prints (the internal listener first, then e.g. the patient portal).
    pub fn start_with(dir: DataDir, token: String, extra: &[&str], listeners: usize) -> (Server, Vec<String>) {
        let mut child = Command::new(BIN)
            .args(["serve", "--data-dir", dir.arg(), "--listen", "127.0.0.1:0"])
            .args(extra)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn mamori serve");
        let stdout = child.stdout.take().unwrap();
        let mut reader = BufReader::new(stdout);
        let mut bases = Vec::new();
        for _ in 0..listeners {
            let mut line = String::new();
            reader.read_line(&mut line).unwrap();
            let base = line
                .trim()
                .split_once(" listening on ")
                .map(|(_, b)| b.to_string())
                .unwrap_or_else(|| panic!("unexpected line from serve: {line:?}"));
            bases.push(base);
        }
        let base = bases[0].clone();
        // The server closes a keep-alive connection that sends no request head for 30 s (hyper's
        // header-read timeout); a client must not reuse connections idle that long, or a request
        // can race the close (seen as IncompleteMessage on a loaded machine).
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(120))
            .pool_idle_timeout(Duration::from_secs(20))
            .build()
            .unwrap();
        (Server { dir, child: Some(child), base, token, http }, bases)
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}/{}", self.base, path.trim_start_matches('/'))
    }

    pub fn get(&self, path: &str) -> reqwest::RequestBuilder {
        self.http.get(self.url(path)).bearer_auth(&self.token)
    }

    pub fn post_json(&self, path: &str, body: &Value) -> reqwest::RequestBuilder {
        self.http
            .post(self.url(path))
            .bearer_auth(&self.token)
            .header("content-type", "application/fhir+json")
            .body(serde_json::to_vec(body).unwrap())
    }

    pub fn put_json(&self, path: &str, body: &Value) -> reqwest::RequestBuilder {
        self.http
            .put(self.url(path))
            .bearer_auth(&self.token)
            .header("content-type", "application/fhir+json")
            .body(serde_json::to_vec(body).unwrap())
    }

    pub fn delete(&self, path: &str) -> reqwest::RequestBuilder {
        self.http.delete(self.url(path)).bearer_auth(&self.token)
    }

    /// Stops the server with SIGTERM and waits for a clean exit (graceful shutdown).
    pub fn stop(mut self) -> DataDir {
        let mut child = self.child.take().unwrap();
        let status = Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
        assert!(status.success());
        let exit = child.wait().unwrap();
        assert!(exit.success(), "serve exited with {exit:?}");
        let tmp = tempfile::tempdir().unwrap();
        let placeholder = DataDir { path: tmp.path().to_path_buf(), _tmp: tmp };
        std::mem::replace(&mut self.dir, placeholder)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// The server's root URL (where `/auth/…` and `/admin/…` are).
pub fn root(s: &Server) -> String {
    s.base.trim_end_matches("/fhir").to_string()
}

/// POSTs JSON to a path under the root, with an optional bearer: (status, JSON body).
pub async fn post(s: &Server, path: &str, body: &Value, bearer: Option<&str>) -> (u16, Value) {
    let mut r = s.http.post(format!("{}{path}", root(s))).json(body);
    if let Some(b) = bearer {
        r = r.bearer_auth(b);
    }
    json(r.send().await.unwrap()).await
}

/// Creates `resource` (as the server's API token user) and returns its logical id.
pub async fn create_resource(s: &Server, resource: Value) -> String {
    let t = resource["resourceType"].as_str().unwrap().to_string();
    let (status, body) = json(s.post_json(&t, &resource).send().await.unwrap()).await;
    assert_eq!(status, 201, "{body}");
    body["id"].as_str().unwrap().to_string()
}

/// POSTs JSON whose answer carries a secret shown once: asserts it is never cached, and returns
/// (status, JSON body).
pub async fn post_secret(s: &Server, path: &str, body: &Value, bearer: &str) -> (u16, Value) {
    let resp = s.http.post(format!("{}{path}", root(s))).bearer_auth(bearer).json(body).send().await.unwrap();
    assert_eq!(resp.headers()["cache-control"], "no-store", "{path}");
    json(resp).await
}

/// The ids of the resources in a Bundle's entries, in order.
pub fn ids(bundle: &Value) -> Vec<String> {
    bundle["entry"]
        .as_array()
        .map(|es| es.iter().filter_map(|e| e["resource"]["id"].as_str().map(str::to_string)).collect())
        .unwrap_or_default()
}

/// Status and parsed JSON body of a response.
pub async fn json(resp: reqwest::Response) -> (u16, Value) {
    let status = resp.status().as_u16();
    let bytes = resp.bytes().await.unwrap();
    let v = if bytes.is_empty() { Value::Null } else { serde_json::from_slice(&bytes).unwrap_or(Value::Null) };
    (status, v)
}

/// Asserts an OperationOutcome error with this status whose diagnostics mention `needle`.
pub async fn expect_outcome(resp: reqwest::Response, status: u16, needle: &str) -> Value {
    let (got, body) = json(resp).await;
    assert_eq!(got, status, "unexpected status; body: {body}");
    assert_eq!(body["resourceType"], "OperationOutcome", "{body}");
    let diag = body["issue"][0]["diagnostics"].as_str().unwrap_or("");
    assert!(diag.to_lowercase().contains(&needle.to_lowercase()), "diagnostics {diag:?} lack {needle:?}");
    body
}

/// Removes server-assigned parts (id, meta.versionId, meta.lastUpdated) for comparison.
pub fn strip_server_fields(v: &Value) -> Value {
    let mut v = v.clone();
    if let Some(o) = v.as_object_mut() {
        o.remove("id");
        let empty_meta = match o.get_mut("meta").and_then(Value::as_object_mut) {
            Some(m) => {
                m.remove("versionId");
                m.remove("lastUpdated");
                m.is_empty()
            }
            None => false,
        };
        if empty_meta {
            o.remove("meta");
        }
    }
    v
}

/// `[webauthn]` for the relying party `emr.example.jp` that `authenticator::Authenticator` speaks to.
pub const WEBAUTHN_CONFIG: &str = "\n[webauthn]\nrp_id = \"emr.example.jp\"\norigins = [\"https://emr.example.jp\"]\n";

/// A server with WebAuthn configured (and lockout thresholds high enough for the refusal tests),
/// plus `extra` configuration.
pub fn server_with_webauthn(extra: &str) -> Server {
    let dir = DataDir::init();
    let cfg = dir.path.join("mamori.toml");
    let text = std::fs::read_to_string(&cfg)
        .unwrap()
        .replace("max_failures_per_account = 5", "max_failures_per_account = 50")
        .replace("max_failures_per_source = 20", "max_failures_per_source = 200");
    std::fs::write(&cfg, format!("{text}{WEBAUTHN_CONFIG}{extra}")).unwrap();
    let token = dir.user_with_token("dr.test", "physician");
    Server::start_in(dir, token)
}
