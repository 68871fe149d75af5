//! The operator CLI: init, no default credentials, integrity check (REC-6), TLS serving (ENC-3),
//! development mode limits (NET-1) and graceful shutdown.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::os::unix::fs::PermissionsExt;

use serde_json::json;
use support::*;

fn mode(p: &std::path::Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

#[test]
fn init_writes_private_key_material_and_refuses_an_initialised_dir() {
    let dir = DataDir::init();
    for private in ["keys/master.key", "tls/key.pem", "mamori.toml", "mamori.db"] {
        assert_eq!(mode(&dir.path.join(private)), 0o600, "{private}");
    }
    assert_eq!(mode(&dir.path), 0o700);
    let (code, _, err) = mamori(&["init", "--data-dir", dir.arg()]);
    assert_ne!(code, 0);
    assert!(err.contains("already initialised"), "{err}");
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(tmp.path().join("other"), "x").unwrap();
    let (code, _, err) = mamori(&["init", "--data-dir", tmp.path().to_str().unwrap()]);
    assert_ne!(code, 0);
    assert!(err.contains("not empty"), "{err}");
}

#[test]
fn auth4_no_default_credentials_the_admin_gets_a_one_time_setup_secret() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("d");
    let out = ok(&["init", "--data-dir", path.to_str().unwrap()]);
    let secret_line = out.lines().find(|l| l.contains("setup secret")).unwrap();
    let secret = secret_line.rsplit(' ').next().unwrap();
    assert_eq!(secret.len(), 29, "24 symbols in groups of four: {secret}");
    let other = tempfile::tempdir().unwrap();
    let out2 = ok(&["init", "--data-dir", other.path().join("d").to_str().unwrap()]);
    assert!(!out2.contains(secret), "every installation gets its own secret");
    // The secret is not stored in clear anywhere under the data directory.
    for entry in walk(&path) {
        let bytes = std::fs::read(&entry).unwrap();
        assert!(!bytes.windows(secret.len()).any(|w| w == secret.as_bytes()), "{}", entry.display());
    }
    // And no account has a token until an operator issues one.
    let dir = path.to_str().unwrap();
    let c = rusqlite::Connection::open(path.join("mamori.db")).unwrap();
    let tokens: i64 = c.query_row("SELECT count(*) FROM api_token", [], |r| r.get(0)).unwrap();
    assert_eq!(tokens, 0);
    let (code, _, err) = mamori(&["user", "add", "--data-dir", dir, "--name", "x", "--role", "superuser"]);
    assert_ne!(code, 0);
    assert!(err.contains("unknown role"), "{err}");
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() { out.extend(walk(&p)) } else { out.push(p) }
    }
    out
}

#[test]
fn net1_dev_mode_refuses_non_loopback_addresses() {
    let dir = DataDir::init();
    let (code, _, err) = mamori(&["serve", "--data-dir", dir.arg(), "--listen", "0.0.0.0:0", "--dev"]);
    assert_ne!(code, 0);
    assert!(err.contains("loopback"), "{err}");
}

#[test]
fn master_key_file_must_be_private_and_match_the_database() {
    let dir = DataDir::init();
    let key = dir.path.join("keys/master.key");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let (code, _, err) = mamori(&["check", "--data-dir", dir.arg()]);
    assert_ne!(code, 0);
    assert!(err.contains("chmod 600"), "{err}");
    std::fs::remove_file(&key).unwrap();
    std::fs::write(&key, [7u8; 32]).unwrap();
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    let (code, _, err) = mamori(&["check", "--data-dir", dir.arg()]);
    assert_ne!(code, 0);
    assert!(err.contains("does not match"), "{err}");
}

#[tokio::test]
async fn rec6_check_detects_records_altered_outside_the_application() {
    let s = Server::start();
    let mut ids = Vec::new();
    for family in ["A", "B", "C", "D"] {
        let (_, p) = json(
            s.post_json("Patient", &json!({"resourceType": "Patient", "name": [{"family": family}]}))
                .send()
                .await
                .unwrap(),
        )
        .await;
        let id = p["id"].as_str().unwrap().to_string();
        s.put_json(&format!("Patient/{id}"), &json!({"resourceType": "Patient", "id": id, "gender": "other"}))
            .send()
            .await
            .unwrap();
        ids.push(id);
    }
    let dir = s.stop();
    let out = ok(&["check", "--data-dir", dir.arg()]);
    assert!(out.contains("integrity: OK"), "{out}");
    assert!(out.contains("checked 8 versions of 4 resources"), "{out}");

    // An insider with database access drops the guards and edits rows directly.
    let c = rusqlite::Connection::open(dir.db()).unwrap();
    c.execute_batch(&format!(
        "DROP TRIGGER resource_version_no_update; DROP TRIGGER resource_version_no_delete;
         UPDATE resource_version SET body = randomblob(length(body)) WHERE id = '{a}' AND version = 1;
         UPDATE resource_version SET deleted = 1 WHERE id = '{b}' AND version = 2;
         DELETE FROM resource_version WHERE id = '{c}' AND version = 1;
         UPDATE resource_current SET version = 1 WHERE id = '{d}';",
        a = ids[0],
        b = ids[1],
        c = ids[2],
        d = ids[3]
    ))
    .unwrap();
    drop(c);
    let (code, out, _) = mamori(&["check", "--data-dir", dir.arg()]);
    assert_eq!(code, 2, "{out}");
    let line = |needle: &str| out.lines().any(|l| l.starts_with("PROBLEM") && l.contains(needle));
    assert!(line(&format!("Patient/{}/_history/1: body or row metadata was altered", ids[0])), "{out}");
    assert!(line(&format!("Patient/{}/_history/2: body or row metadata was altered", ids[1])), "{out}");
    assert!(line(&format!("Patient/{}: version 2 follows version 0", ids[2])), "{out}");
    assert!(line(&format!("Patient/{}: current pointer (version 1, deleted false)", ids[3])), "{out}");
    // Flipping B's deleted flag also leaves its current pointer disagreeing with the row.
    assert!(line(&format!("Patient/{}: current pointer (version 2, deleted false) does not match", ids[1])), "{out}");
    assert!(out.contains("integrity: 5 problem(s) found"), "{out}");
}

#[tokio::test]
async fn rec6_a_tampered_record_is_refused_not_served() {
    let s = Server::start();
    let (_, p) =
        json(s.post_json("Patient", &json!({"resourceType": "Patient", "gender": "male"})).send().await.unwrap()).await;
    let id = p["id"].as_str().unwrap().to_string();
    let c = rusqlite::Connection::open(s.dir.db()).unwrap();
    c.busy_timeout(std::time::Duration::from_secs(10)).unwrap();
    c.execute_batch(&format!(
        "DROP TRIGGER resource_version_no_update;
         UPDATE resource_version SET patients = 'someone-else' WHERE id = '{id}';"
    ))
    .unwrap();
    let body = expect_outcome(s.get(&format!("Patient/{id}")).send().await.unwrap(), 500, "integrity").await;
    assert!(!body.to_string().contains("male"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enc3_serve_speaks_tls13_with_the_generated_certificate_and_stops_on_sigterm() {
    let dir = DataDir::init();
    let token = dir.user_with_token("dr.tls", "physician");
    let mut child = std::process::Command::new(BIN)
        .args(["serve", "--data-dir", dir.arg(), "--listen", "127.0.0.1:0"])
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(child.stdout.take().unwrap()), &mut line).unwrap();
    let base = line.trim().strip_prefix("mamori listening on ").unwrap().to_string();
    assert!(base.starts_with("https://127.0.0.1:"), "{base}");
    let cert = reqwest::Certificate::from_pem(&std::fs::read(dir.path.join("tls/cert.pem")).unwrap()).unwrap();
    let client = reqwest::Client::builder()
        .tls_certs_only([cert])
        .tls_version_min(reqwest::tls::Version::TLS_1_3)
        .build()
        .unwrap();
    let resp = client.get(format!("{base}/metadata")).bearer_auth(&token).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["strict-transport-security"], "max-age=31536000");
    // A TLS 1.2-only client is refused under the default minimum (1.3).
    let cert = reqwest::Certificate::from_pem(&std::fs::read(dir.path.join("tls/cert.pem")).unwrap()).unwrap();
    let old = reqwest::Client::builder()
        .tls_certs_only([cert])
        .tls_version_max(reqwest::tls::Version::TLS_1_2)
        .build()
        .unwrap();
    assert!(old.get(format!("{base}/metadata")).send().await.is_err());
    // Closing our side lets the server's graceful shutdown finish at once.
    drop((client, old));
    let kill = std::process::Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    assert!(kill.success());
    assert!(child.wait().unwrap().success(), "graceful exit on SIGTERM");
}

#[test]
fn aud1_every_operator_command_is_audited() {
    let dir = DataDir::init();
    dir.user_with_token("dr.ops", "physician");
    ok(&["user", "list", "--data-dir", dir.arg()]);
    ok(&["check", "--data-dir", dir.arg()]);
    let out = dir.path.join("export.jsonl");
    ok(&["audit", "export", "--data-dir", dir.arg(), "--out", out.to_str().unwrap()]);
    let c = rusqlite::Connection::open(dir.audit_db()).unwrap();
    let actions: Vec<String> = c
        .prepare("SELECT action FROM audit_event WHERE actor LIKE 'operator:%' ORDER BY seq")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(
        actions,
        [
            "initialise",
            "account-create",
            "account-create",
            "token-create",
            "account-list",
            "integrity-check",
            "audit-export"
        ]
    );
}
