//! AUD-2: an HTTP witness. Every signed checkpoint of the audit trail is POSTed, in order of
//! size, to a URL run by another party (another institution, a vendor, a notary service), who
//! keeps it. Whoever later controls the database and the signing key can rewrite the trail and
//! re-sign it, but not the checkpoints already held elsewhere: `mamori audit verify` with a kept
//! checkpoint (`--checkpoint`) exposes the rewrite.
//!
//! Same shape as the syslog forwarder: the `audit_checkpoint` table is the spool, a cursor file
//! holds the size of the last checkpoint the witness accepted (2xx), failures are logged and
//! retried with capped exponential back-off, and nothing here is on the audit write path (the
//! sealer stores checkpoints; this task only reads them).
//!
//! The body is the checkpoint exactly as stored — a C2SP signed note (`text/plain;
//! charset=utf-8`). A witness that accepted a checkpoint but whose answer was lost receives it
//! again; it should treat an identical note as a repeat.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use mamori_store::audit_log::AuditLogReader;
use tokio::sync::watch;

pub use reqwest::Url;

use crate::cursor::CursorFile;

/// How often the witness task looks for new checkpoints.
const POLL: Duration = Duration::from_millis(500);
const FIRST_RETRY: Duration = Duration::from_millis(250);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Settings, checked at start-up.
#[derive(Clone, Debug)]
pub struct WitnessConfig {
    /// Where checkpoints are POSTed.
    pub url: reqwest::Url,
    /// TLS for `https` URLs (trust anchors, optional client certificate).
    pub tls: Option<Arc<rustls::ClientConfig>>,
    pub audit_db: PathBuf,
    pub cursor_file: PathBuf,
    pub max_retry_interval: Duration,
}

/// Why the witness task cannot start.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum WitnessError {
    #[error(transparent)]
    Cursor(#[from] crate::cursor::CursorError),
    #[error("cannot read the audit trail: {0}")]
    Trail(#[from] mamori_store::StoreError),
    #[error("cannot build the HTTP client: {0}")]
    Client(String),
}

/// The URL without user information, query or fragment: safe to log and to show.
pub fn display_url(url: &reqwest::Url) -> String {
    let mut u = url.clone();
    let _ = u.set_username("");
    let _ = u.set_password(None);
    u.set_query(None);
    u.set_fragment(None);
    u.to_string()
}

/// The witness task's state for `/admin/status`.
#[derive(Clone, Debug, Default)]
pub struct WitnessStatus(Arc<Mutex<WitnessInner>>);

#[derive(Debug, Default)]
struct WitnessInner {
    url: String,
    witnessed_size: u64,
    latest_size: u64,
    last_error: Option<String>,
}

impl WitnessStatus {
    fn update(&self, f: impl FnOnce(&mut WitnessInner)) {
        f(&mut self.0.lock().unwrap_or_else(|p| p.into_inner()));
    }

    pub fn snapshot(&self) -> serde_json::Value {
        let g = self.0.lock().unwrap_or_else(|p| p.into_inner());
        serde_json::json!({
            "configured": true,
            "url": g.url,
            "witnessed_size": g.witnessed_size,
            "latest_checkpoint_size": g.latest_size,
            "last_error": g.last_error,
        })
    }
}

/// The witness cursor file at `path`.
pub fn cursor_file(path: &Path) -> CursorFile {
    CursorFile { path: path.to_owned(), prefix: "mamori-http-witness-cursor/1 witnessed-through-size" }
}

/// Starts the witness task; it runs until `stop` turns true, then offers what is pending once.
pub fn spawn(
    cfg: WitnessConfig,
    stop: watch::Receiver<bool>,
) -> Result<(tokio::task::JoinHandle<()>, WitnessStatus), WitnessError> {
    let witnessed = cursor_file(&cfg.cursor_file).read()?;
    let reader = AuditLogReader::open(&cfg.audit_db)?;
    let latest = reader.last_checkpoint_size()?;
    let mut builder = reqwest::Client::builder()
        .timeout(REQUEST_TIMEOUT)
        .connect_timeout(Duration::from_secs(10))
        .redirect(reqwest::redirect::Policy::none());
    if let Some(tls) = &cfg.tls {
        builder = builder.use_preconfigured_tls((**tls).clone());
    }
    let client = builder.build().map_err(|e| WitnessError::Client(e.to_string()))?;
    let status = WitnessStatus::default();
    status.update(|s| {
        s.url = display_url(&cfg.url);
        s.witnessed_size = witnessed;
        s.latest_size = latest;
    });
    let task = Witness { cfg, client, reader: Arc::new(Mutex::new(reader)), status: status.clone(), witnessed };
    Ok((tokio::spawn(task.run(stop)), status))
}

struct Witness {
    cfg: WitnessConfig,
    client: reqwest::Client,
    reader: Arc<Mutex<AuditLogReader>>,
    status: WitnessStatus,
    witnessed: u64,
}

impl Witness {
    async fn run(mut self, mut stop: watch::Receiver<bool>) {
        let mut backoff = FIRST_RETRY;
        loop {
            let stopping = *stop.borrow();
            match self.round().await {
                Ok(()) => {
                    backoff = FIRST_RETRY;
                    if stopping {
                        break;
                    }
                    wait(&mut stop, POLL).await;
                }
                Err(e) => {
                    tracing::warn!(target: "security", url = %display_url(&self.cfg.url), error = %e, witnessed_size = self.witnessed, "checkpoint witness failed; retrying");
                    self.status.update(|s| s.last_error = Some(e.clone()));
                    if stopping {
                        break;
                    }
                    wait(&mut stop, backoff).await;
                    backoff = (backoff * 2).min(self.cfg.max_retry_interval);
                }
            }
        }
        tracing::info!(witnessed_size = self.witnessed, "checkpoint witness stopped");
    }

    /// Offers every checkpoint after the cursor, in order; stops at the first refusal.
    async fn round(&mut self) -> Result<(), String> {
        let (after, reader) = (self.witnessed, Arc::clone(&self.reader));
        let (pending, latest) = tokio::task::spawn_blocking(move || {
            let r = reader.lock().unwrap_or_else(|p| p.into_inner());
            Ok::<_, mamori_store::StoreError>((r.checkpoints_after(after, 100)?, r.last_checkpoint_size()?))
        })
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| format!("cannot read checkpoints: {e}"))?;
        self.status.update(|s| s.latest_size = latest);
        for (size, note) in pending {
            let resp = self
                .client
                .post(self.cfg.url.clone())
                .header(reqwest::header::CONTENT_TYPE, "text/plain; charset=utf-8")
                .body(note)
                .send()
                .await
                .map_err(request_error)?;
            if !resp.status().is_success() {
                return Err(format!("witness answered {}", resp.status()));
            }
            let file = cursor_file(&self.cfg.cursor_file);
            tokio::task::spawn_blocking(move || file.write(size))
                .await
                .map_err(|e| e.to_string())?
                .map_err(|e| format!("cannot write the witness cursor: {e}"))?;
            self.witnessed = size;
            self.status.update(|s| {
                s.witnessed_size = size;
                s.last_error = None;
            });
        }
        Ok(())
    }
}

/// The error and its causes, without the URL (its query may carry a token).
fn request_error(e: reqwest::Error) -> String {
    let e = e.without_url();
    let mut text = format!("request failed: {e}");
    let mut source = std::error::Error::source(&e);
    while let Some(s) = source {
        text.push_str(&format!(": {s}"));
        source = s.source();
    }
    text
}

async fn wait(stop: &mut watch::Receiver<bool>, d: Duration) {
    if *stop.borrow() {
        return;
    }
    tokio::select! {
        _ = tokio::time::sleep(d) => {}
        _ = stop.changed() => {}
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_shown_without_credentials() {
        let u: reqwest::Url = "https://user:secret@w.example.org:8443/add?token=abc#x".parse().unwrap();
        assert_eq!(display_url(&u), "https://w.example.org:8443/add");
    }
}
