//! AUD-2: signed checkpoints are offered to an HTTP witness run by another party. The witness
//! refuses for a while (503); mamori keeps serving and retries; once it accepts, it holds every
//! checkpoint of the database exactly once, in order, byte for byte.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::json;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// A minimal HTTP/1.1 witness: keeps the body of every POST it accepts.
struct Witness {
    port: u16,
    accepting: Arc<AtomicBool>,
    kept: Arc<Mutex<Vec<String>>>,
    refused: Arc<AtomicUsize>,
}

impl Witness {
    async fn start() -> Witness {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let accepting = Arc::new(AtomicBool::new(false));
        let kept: Arc<Mutex<Vec<String>>> = Arc::default();
        let refused = Arc::new(AtomicUsize::new(0));
        let (a, k, r) = (Arc::clone(&accepting), Arc::clone(&kept), Arc::clone(&refused));
        tokio::spawn(async move {
            loop {
                let Ok((mut tcp, _)) = listener.accept().await else { return };
                let (a, k, r) = (Arc::clone(&a), Arc::clone(&k), Arc::clone(&r));
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 8192];
                    loop {
                        // One request: headers, then Content-Length bytes of body.
                        let (head_end, len) = loop {
                            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                                let head = String::from_utf8_lossy(&buf[..i]).to_ascii_lowercase();
                                assert!(head.starts_with("post /checkpoints?token=not-for-logs "), "{head}");
                                assert!(head.contains("content-type: text/plain; charset=utf-8"), "{head}");
                                let len = head
                                    .lines()
                                    .find_map(|l| l.strip_prefix("content-length:"))
                                    .map(|v| v.trim().parse::<usize>().unwrap())
                                    .unwrap();
                                break (i + 4, len);
                            }
                            match tcp.read(&mut chunk).await {
                                Ok(0) | Err(_) => return,
                                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                            }
                        };
                        while buf.len() < head_end + len {
                            match tcp.read(&mut chunk).await {
                                Ok(0) | Err(_) => return,
                                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                            }
                        }
                        let body = String::from_utf8(buf[head_end..head_end + len].to_vec()).unwrap();
                        buf.drain(..head_end + len);
                        let answer: &[u8] = if a.load(Ordering::SeqCst) {
                            k.lock().unwrap().push(body);
                            b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n"
                        } else {
                            r.fetch_add(1, Ordering::SeqCst);
                            b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\n\r\n"
                        };
                        if tcp.write_all(answer).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        Witness { port, accepting, kept, refused }
    }
}

fn stored_checkpoints(dir: &DataDir) -> Vec<String> {
    let c = rusqlite::Connection::open_with_flags(dir.audit_db(), rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY).unwrap();
    let mut stmt = c.prepare("SELECT note FROM audit_checkpoint ORDER BY size").unwrap();
    stmt.query_map([], |r| r.get(0)).unwrap().collect::<Result<_, _>>().unwrap()
}

async fn until(what: &str, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < Duration::from_secs(60), "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn traffic(s: &Server, n: usize) {
    for _ in 0..n {
        let resp = s.post_json("Patient", &json!({"resourceType": "Patient", "gender": "other"})).send().await.unwrap();
        assert_eq!(resp.status(), 201);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aud2_every_checkpoint_reaches_the_http_witness_exactly_once_despite_refusals() {
    let witness = Witness::start().await;
    let dir = DataDir::init();
    let token = dir.user_with_token("dr.test", "physician");
    let cfg = dir.path.join("mamori.toml");
    let text = std::fs::read_to_string(&cfg)
        .unwrap()
        .replace("checkpoint_every_entries = 1000", "checkpoint_every_entries = 4");
    std::fs::write(
        &cfg,
        format!(
            "{text}\n[audit.http_witness]\nurl = \"http://127.0.0.1:{}/checkpoints?token=not-for-logs\"\nmax_retry_interval = \"1s\"\n",
            witness.port
        ),
    )
    .unwrap();
    let s = Server::start_in(dir, token);

    // The witness refuses: checkpoints pile up, serving goes on.
    traffic(&s, 10).await;
    until("refused offers", || witness.refused.load(Ordering::SeqCst) >= 2).await;
    assert!(witness.kept.lock().unwrap().is_empty());
    let auditor = s.dir.user_with_token("audit.a", "auditor");
    let url = format!("{}/admin/status", s.base.trim_end_matches("/fhir"));
    let (_, st) = json(s.http.get(&url).bearer_auth(&auditor).send().await.unwrap()).await;
    let w = &st["witness"]["http"];
    assert_eq!(w["configured"], true, "{st}");
    assert_eq!(w["witnessed_size"], 0, "{st}");
    assert!(w["last_error"].as_str().unwrap().contains("503"), "{st}");
    assert!(!w.to_string().contains("not-for-logs"), "the URL's query is not shown: {w}");

    // It accepts: the backlog, then new checkpoints as they are signed.
    witness.accepting.store(true, Ordering::SeqCst);
    traffic(&s, 6).await;
    let dir = s.stop(); // signs a final checkpoint and offers it before exiting
    let stored = stored_checkpoints(&dir);
    assert!(stored.len() >= 4, "{}", stored.len());
    assert_eq!(*witness.kept.lock().unwrap(), stored, "every checkpoint, once, in order, byte for byte");
    let cursor = std::fs::read_to_string(dir.path.join("audit/http-witness.cursor")).unwrap();
    let last_size = dir.audit_i64("SELECT max(size) FROM audit_checkpoint");
    assert!(cursor.trim().ends_with(&format!(" {last_size}")), "{cursor}");
}
