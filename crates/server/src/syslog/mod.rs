//! AUD-5: forwarding the audit trail to an external audit repository as RFC 5424 syslog over
//! TLS (RFC 5425), the IHE ATNA transport.
//!
//! **The audit database is the spool.** Every entry is committed (durably, before the access
//! it records proceeds) to `audit_event` before the forwarder ever sees it, and rows are never
//! removed, so nothing needs copying into a second queue: the forwarder keeps one number, the
//! *cursor* — the highest `seq` known to be delivered — in a small file written atomically and
//! fsync'd, and reads the rows after it through a read-only connection. A collector outage of
//! any length, or a restart of mamori, loses nothing: forwarding resumes from the cursor.
//!
//! **When the cursor advances.** RFC 5425 has no acknowledgement, and a successful `write` only
//! means the bytes reached our own kernel. The cursor passes an entry only when
//! 1. its frame was written and flushed to the socket, and then
//! 2. the collector's TCP has acknowledged every byte of it: we count the bytes handed to the
//!    socket, and the kernel reports how many of them are still unacknowledged (`tx_queue` in
//!    `/proc/net/tcp{,6}` for this socket's inode, state ESTABLISHED or CLOSE_WAIT), and
//! 3. a non-blocking read afterwards shows no reset or error. (A clean close — FIN or TLS
//!    close_notify — still lets ACKed entries count: a TCP that closes with unread data sends
//!    a reset instead, so a clean close means the collector read everything it acknowledged.)
//!
//! After any failure the connection is dropped and sending restarts from the cursor, so an
//! entry is never lost (at least once); it is sent twice only if it reached the collector but
//! its acknowledgement could not be observed before the failure, and then the collector sees the
//! same `seq` twice. Where `/proc/net/tcp` is unavailable (not Linux) step 2 falls back to time:
//! with `TCP_USER_TIMEOUT` = `ack_timeout` the kernel aborts a connection whose data stays
//! unacknowledged that long, so a connection still healthy 2 × `ack_timeout` after a write has
//! (barring a slowly draining send queue) had it acknowledged. See docs/audit.md.

pub mod format;

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use mamori_audit::AuditEntry;
use mamori_store::audit_log::AuditLogReader;

use crate::cursor::CursorFile;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

pub use format::{Facility, HeaderName, MessageSettings};

/// Entries per write.
const BATCH_ENTRIES: usize = 500;
/// Most batches written but not yet acknowledged; more wait for the acknowledgement.
const MAX_UNACKED_BATCHES: usize = 8;
/// How often an idle forwarder looks for new rows (and checks its connection).
const POLL: Duration = Duration::from_millis(100);
/// How often it looks while waiting for an acknowledgement.
const ACK_POLL: Duration = Duration::from_millis(5);
/// First reconnection delay; doubled after each failure up to `max_retry_interval`.
const FIRST_RETRY: Duration = Duration::from_millis(250);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// While entries stream, the cursor file is rewritten at most this often (and always when the
/// forwarder falls idle, loses its connection or stops): a crash of mamori resends at most this
/// much, identified by seq.
const CURSOR_EVERY: Duration = Duration::from_millis(200);

/// Everything the forwarder needs, checked at start-up.
#[derive(Clone, Debug)]
pub struct ForwarderConfig {
    /// `host:port` of the collector.
    pub address: String,
    /// The name its certificate must be valid for.
    pub server_name: ServerName<'static>,
    pub tls: Arc<rustls::ClientConfig>,
    pub message: MessageSettings,
    /// The audit database (read-only).
    pub audit_db: PathBuf,
    /// The cursor file.
    pub cursor_file: PathBuf,
    /// `TCP_USER_TIMEOUT`: a connection whose data stays unacknowledged this long is dropped.
    pub ack_timeout: Duration,
    /// Longest wait between reconnection attempts.
    pub max_retry_interval: Duration,
}

/// Why forwarding cannot start.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum ForwardError {
    /// The cursor file exists but cannot be read or is not a cursor.
    #[error("syslog cursor file {}: {reason}", path.display())]
    Cursor { path: PathBuf, reason: String },
    /// The cursor names entries the trail does not have (the file belongs to another trail,
    /// or the trail lost entries — run `mamori audit verify`).
    #[error(
        "syslog cursor file {} says entries up to seq {cursor} were delivered, but the trail ends at seq {last}",
        path.display()
    )]
    CursorAhead { path: PathBuf, cursor: u64, last: u64 },
    /// The audit database could not be read.
    #[error("cannot read the audit trail: {0}")]
    Trail(#[from] mamori_store::StoreError),
}

/// The forwarder's state for `/admin/status`.
#[derive(Clone, Debug, Default)]
pub struct ForwarderStatus(Arc<Mutex<StatusInner>>);

#[derive(Debug, Default)]
struct StatusInner {
    address: String,
    connected: bool,
    delivered_seq: u64,
    sent_seq: u64,
    trail_seq: u64,
    connections: u64,
    last_error: Option<String>,
}

impl ForwarderStatus {
    fn update(&self, f: impl FnOnce(&mut StatusInner)) {
        // A poisoned lock only means a panic elsewhere mid-update; the numbers are still usable.
        let mut g = self.0.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut g);
    }

    /// `{"configured": true, "address", "connected", "delivered_seq", "backlog", …}`;
    /// `trail_seq`, the trail's last seq if the caller knows it, makes the backlog exact.
    pub fn snapshot(&self, trail_seq: Option<u64>) -> serde_json::Value {
        let mut g = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(t) = trail_seq {
            g.trail_seq = g.trail_seq.max(t);
        }
        serde_json::json!({
            "configured": true,
            "address": g.address,
            "connected": g.connected,
            "delivered_seq": g.delivered_seq,
            "sent_seq": g.sent_seq,
            "trail_seq": g.trail_seq,
            "backlog": g.trail_seq.saturating_sub(g.delivered_seq),
            "connections": g.connections,
            "last_error": g.last_error,
        })
    }

    /// The highest `seq` known to be delivered.
    pub fn delivered_seq(&self) -> u64 {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).delivered_seq
    }
}

/// The syslog cursor file at `path`.
pub fn cursor_file(path: &Path) -> CursorFile {
    CursorFile { path: path.to_owned(), prefix: "mamori-syslog-cursor/1 delivered-through-seq" }
}

/// Reads the cursor file: `0` when it does not exist yet (forward the whole trail).
pub fn read_cursor(path: &Path) -> Result<u64, ForwardError> {
    cursor_file(path).read().map_err(|e| ForwardError::Cursor { path: e.path, reason: e.reason })
}

/// Checks the cursor against the trail and starts the forwarder task; it runs until `stop`
/// turns true, then sends what the trail holds (bounded by the caller's patience: await the
/// handle with a timeout) and closes the connection.
pub fn spawn(
    cfg: ForwarderConfig,
    stop: watch::Receiver<bool>,
) -> Result<(tokio::task::JoinHandle<()>, ForwarderStatus), ForwardError> {
    let delivered = read_cursor(&cfg.cursor_file)?;
    let reader = AuditLogReader::open(&cfg.audit_db)?;
    let last = reader.last_seq()?;
    if delivered > last {
        return Err(ForwardError::CursorAhead { path: cfg.cursor_file.clone(), cursor: delivered, last });
    }
    let status = ForwarderStatus::default();
    status.update(|s| {
        s.address = cfg.address.clone();
        s.delivered_seq = delivered;
        s.sent_seq = delivered;
        s.trail_seq = last;
    });
    let fwd = Forwarder {
        cfg,
        reader: Arc::new(Mutex::new(reader)),
        status: status.clone(),
        delivered,
        persisted: delivered,
        persisted_at: Instant::now(),
    };
    Ok((tokio::spawn(fwd.run(stop)), status))
}

struct Forwarder {
    cfg: ForwarderConfig,
    reader: Arc<Mutex<AuditLogReader>>,
    status: ForwarderStatus,
    /// Highest seq delivered (in memory; reconnections resend from here).
    delivered: u64,
    /// Highest seq in the cursor file, and when it was written.
    persisted: u64,
    persisted_at: Instant,
}

/// One TLS connection to the collector and what was written on it.
struct Link {
    tls: TlsStream<Counted>,
    /// The socket's inode, to find it in `/proc/net/tcp` (None: use the time rule).
    inode: Option<u64>,
    /// Highest seq written on this connection.
    sent: u64,
    /// Batches written and flushed but not yet acknowledged.
    unacked: VecDeque<InFlight>,
}

struct InFlight {
    /// The batch's last seq.
    seq: u64,
    /// Bytes handed to the socket up to and including the batch (TLS records and all).
    end: u64,
    flushed_at: Instant,
}

/// A TCP stream that counts the bytes handed to the kernel: with the send queue's length this
/// tells how far the collector's TCP has acknowledged.
struct Counted {
    tcp: TcpStream,
    written: u64,
}

impl AsyncRead for Counted {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.tcp).poll_read(cx, buf)
    }
}

impl AsyncWrite for Counted {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.tcp).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = r {
            self.written += n as u64;
        }
        r
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.tcp).poll_write_vectored(cx, bufs);
        if let Poll::Ready(Ok(n)) = r {
            self.written += n as u64;
        }
        r
    }

    fn is_write_vectored(&self) -> bool {
        self.tcp.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.tcp).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.tcp).poll_shutdown(cx)
    }
}

#[derive(Debug, thiserror::Error)]
enum LinkError {
    #[error("the collector closed the connection")]
    Closed,
    #[error("connection failed: {0}")]
    Io(#[from] std::io::Error),
    #[error("write timed out")]
    WriteTimeout,
}

enum Step {
    /// Sent a full batch: go on at once.
    More,
    /// Waiting for acknowledgements.
    AwaitingAck,
    /// Nothing to send.
    Idle,
}

impl Forwarder {
    async fn run(mut self, mut stop: watch::Receiver<bool>) {
        let mut backoff = FIRST_RETRY;
        let mut link: Option<Link> = None;
        loop {
            let stopping = *stop.borrow();
            let l = match link.as_mut() {
                Some(l) => l,
                None => match self.connect().await {
                    Ok(l) => {
                        tracing::info!(target: "security", address = %self.cfg.address, from_seq = self.delivered + 1, "syslog forwarder connected");
                        self.status.update(|s| {
                            s.connected = true;
                            s.connections += 1;
                            s.sent_seq = self.delivered;
                        });
                        link.insert(l)
                    }
                    Err(e) => {
                        self.failed(&e.to_string());
                        if stopping {
                            break;
                        }
                        tracing::warn!(target: "security", address = %self.cfg.address, error = %e, retry_in_ms = backoff.as_millis() as u64, "syslog collector unreachable; audit entries wait in the trail");
                        wait(&mut stop, backoff).await;
                        backoff = (backoff * 2).min(self.cfg.max_retry_interval);
                        continue;
                    }
                },
            };
            let before = self.delivered;
            match self.step(l).await {
                Ok(step) => {
                    if self.delivered > before {
                        backoff = FIRST_RETRY;
                    }
                    match step {
                        Step::More => {}
                        Step::AwaitingAck => wait(&mut stop, ACK_POLL).await,
                        Step::Idle => {
                            self.persist(true).await;
                            if stopping {
                                break;
                            }
                            wait(&mut stop, POLL).await
                        }
                    }
                }
                Err(e) => {
                    tracing::warn!(target: "security", address = %self.cfg.address, error = %e, resend_from_seq = self.delivered + 1, "syslog connection lost");
                    self.failed(&e.to_string());
                    self.persist(true).await;
                    link = None;
                    if stopping {
                        break;
                    }
                    wait(&mut stop, backoff).await;
                    backoff = (backoff * 2).min(self.cfg.max_retry_interval);
                }
            }
        }
        if let Some(mut l) = link {
            let _ = tokio::time::timeout(Duration::from_secs(1), l.tls.shutdown()).await;
        }
        self.persist(true).await;
        self.status.update(|s| s.connected = false);
        tracing::info!(address = %self.cfg.address, delivered_seq = self.delivered, "syslog forwarder stopped");
    }

    fn failed(&self, error: &str) {
        self.status.update(|s| {
            s.connected = false;
            s.sent_seq = self.delivered;
            s.last_error = Some(error.to_owned());
        });
    }

    async fn connect(&self) -> Result<Link, std::io::Error> {
        let timed_out = || std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timed out");
        let tcp = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(&self.cfg.address))
            .await
            .map_err(|_| timed_out())??;
        tcp.set_nodelay(true)?;
        let sock = socket2::SockRef::from(&tcp);
        #[cfg(target_os = "linux")]
        sock.set_tcp_user_timeout(Some(self.cfg.ack_timeout))?;
        sock.set_tcp_keepalive(&socket2::TcpKeepalive::new().with_time(Duration::from_secs(30)))?;
        let inode = socket_inode(&tcp);
        let tls = tokio::time::timeout(
            CONNECT_TIMEOUT,
            TlsConnector::from(Arc::clone(&self.cfg.tls))
                .connect(self.cfg.server_name.clone(), Counted { tcp, written: 0 }),
        )
        .await
        .map_err(|_| timed_out())??;
        Ok(Link { tls, inode, sent: self.delivered, unacked: VecDeque::new() })
    }

    /// One round: note acknowledgements, check the connection, advance the cursor, send.
    async fn step(&mut self, l: &mut Link) -> Result<Step, LinkError> {
        let acked = self.acked(l);
        let alive = check_alive(&mut l.tls).await;
        // A reset voids what looked acknowledged (the collector may have dropped unread data);
        // a clean close does not (see the module docs).
        if let Some(seq) = acked
            && !matches!(alive, Err(LinkError::Io(_)))
        {
            while l.unacked.front().is_some_and(|b| b.seq <= seq) {
                l.unacked.pop_front();
            }
            self.confirm(seq).await;
        }
        alive?;
        if l.unacked.len() >= MAX_UNACKED_BATCHES {
            return Ok(Step::AwaitingAck);
        }
        let (rows, last) = match self.read_after(l.sent).await {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(error = %e, "syslog forwarder cannot read the audit trail; retrying");
                return Ok(Step::Idle);
            }
        };
        self.status.update(|s| s.trail_seq = last);
        let Some(last_row) = rows.last().map(|e| e.seq) else {
            return Ok(if l.unacked.is_empty() { Step::Idle } else { Step::AwaitingAck });
        };
        let mut buf = Vec::with_capacity(rows.len() * 512);
        for e in &rows {
            format::frame_entry(&self.cfg.message, e, &mut buf);
        }
        let write = async {
            l.tls.write_all(&buf).await?;
            l.tls.flush().await
        };
        tokio::time::timeout(self.cfg.ack_timeout * 2, write).await.map_err(|_| LinkError::WriteTimeout)??;
        l.sent = last_row;
        l.unacked.push_back(InFlight { seq: last_row, end: l.tls.get_ref().0.written, flushed_at: Instant::now() });
        self.status.update(|s| s.sent_seq = last_row);
        Ok(if rows.len() == BATCH_ENTRIES { Step::More } else { Step::AwaitingAck })
    }

    /// The highest seq whose bytes the collector's TCP has acknowledged, if any is pending.
    fn acked(&self, l: &Link) -> Option<u64> {
        l.unacked.front()?;
        let queue = l.inode.and_then(kernel_send_queue);
        acked_through(&l.unacked, l.tls.get_ref().0.written, queue, Instant::now(), self.cfg.ack_timeout)
    }

    async fn confirm(&mut self, seq: u64) {
        if seq <= self.delivered {
            return;
        }
        self.delivered = seq;
        self.status.update(|s| s.delivered_seq = seq);
        self.persist(false).await;
    }

    /// Writes the cursor file if it is behind (`force`) or was last written `CURSOR_EVERY` ago.
    async fn persist(&mut self, force: bool) {
        if self.persisted >= self.delivered || !(force || self.persisted_at.elapsed() >= CURSOR_EVERY) {
            return;
        }
        let (file, seq) = (cursor_file(&self.cfg.cursor_file), self.delivered);
        match tokio::task::spawn_blocking(move || file.write(seq)).await {
            Ok(Ok(())) => {
                self.persisted = seq;
                self.persisted_at = Instant::now();
            }
            // The entries were delivered but the file is behind: after a restart they are sent
            // again (identified by seq). Keep going; the next write retries.
            Ok(Err(e)) => tracing::error!(error = %e, "cannot write the syslog cursor file"),
            Err(e) => tracing::error!(error = %e, "cursor write task failed"),
        }
    }

    async fn read_after(&self, after: u64) -> Result<(Vec<AuditEntry>, u64), String> {
        let reader = Arc::clone(&self.reader);
        tokio::task::spawn_blocking(move || {
            let r = reader.lock().unwrap_or_else(|p| p.into_inner());
            let rows = r.entries_after(after, BATCH_ENTRIES)?;
            let last = r.last_seq()?;
            Ok::<_, mamori_store::StoreError>((rows, last))
        })
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())
    }
}

/// The last seq of the newest batch known to be acknowledged. With the kernel's view of the
/// send queue, a batch is acknowledged when its last byte lies below `written − unacked`;
/// without it (not Linux), when the connection has stayed up 2 × `ack_timeout` since the batch
/// was flushed (`TCP_USER_TIMEOUT` would have aborted it otherwise).
fn acked_through(
    in_flight: &VecDeque<InFlight>,
    written: u64,
    queue: Option<SendQueue>,
    now: Instant,
    ack_timeout: Duration,
) -> Option<u64> {
    match queue {
        Some(SendQueue { established: true, bytes: unacked }) => {
            let acked_bytes = written.saturating_sub(unacked);
            in_flight.iter().take_while(|b| b.end <= acked_bytes).last().map(|b| b.seq)
        }
        Some(_) => None,
        None => {
            let horizon = now.checked_sub(ack_timeout * 2)?;
            in_flight.iter().take_while(|b| b.flushed_at <= horizon).last().map(|b| b.seq)
        }
    }
}

/// Sleeps for `d` or until the stop flag changes.
async fn wait(stop: &mut watch::Receiver<bool>, d: Duration) {
    if *stop.borrow() {
        tokio::time::sleep(d.min(ACK_POLL)).await;
        return;
    }
    tokio::select! {
        _ = tokio::time::sleep(d) => {}
        _ = stop.changed() => {}
    }
}

/// Reads without waiting: `Ok` if nothing is there (healthy), `Closed` on EOF or close_notify,
/// `Io` on a reset or any other error. A syslog collector sends nothing; stray bytes are
/// discarded.
async fn check_alive(tls: &mut TlsStream<Counted>) -> Result<(), LinkError> {
    let mut buf = [0u8; 1024];
    for _ in 0..16 {
        let polled = std::future::poll_fn(|cx| {
            let mut rb = ReadBuf::new(&mut buf);
            match Pin::new(&mut *tls).poll_read(cx, &mut rb) {
                Poll::Pending => Poll::Ready(None),
                Poll::Ready(r) => Poll::Ready(Some(r.map(|()| rb.filled().len()))),
            }
        })
        .await;
        match polled {
            None => return Ok(()),
            Some(Ok(0)) => return Err(LinkError::Closed),
            Some(Ok(_)) => continue,
            Some(Err(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Err(LinkError::Closed),
            Some(Err(e)) => return Err(LinkError::Io(e)),
        }
    }
    Ok(())
}

/// The inode of a socket (the number `/proc/net/tcp` lists it under).
fn socket_inode(tcp: &TcpStream) -> Option<u64> {
    use std::os::fd::AsRawFd;
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(format!("/proc/self/fd/{}", tcp.as_raw_fd())).ok().map(|m| m.ino())
}

#[derive(Debug, PartialEq, Eq)]
struct SendQueue {
    /// ESTABLISHED or CLOSE_WAIT (the peer may have closed its side; ours still works).
    established: bool,
    /// Bytes written but not yet acknowledged by the peer (`write_seq - snd_una`).
    bytes: u64,
}

/// The kernel's view of a TCP socket's send queue, from `/proc/net/tcp` and `/proc/net/tcp6`.
/// `None` if neither lists the inode (not Linux, or the socket is gone).
fn kernel_send_queue(inode: u64) -> Option<SendQueue> {
    // procfs reads are served from memory; short enough to do on the async thread.
    ["/proc/net/tcp", "/proc/net/tcp6"]
        .iter()
        .find_map(|p| std::fs::read_to_string(p).ok().and_then(|t| find_socket(&t, inode)))
}

/// Finds the line for `inode` in a `/proc/net/tcp` table:
/// `sl local rem st tx_queue:rx_queue tr:when retrnsmt uid timeout inode …`.
fn find_socket(table: &str, inode: u64) -> Option<SendQueue> {
    table.lines().skip(1).find_map(|line| {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.get(9)?.parse::<u64>().ok()? != inode {
            return None;
        }
        let state = u8::from_str_radix(f.get(3)?, 16).ok()?;
        let (tx, _) = f.get(4)?.split_once(':')?;
        Some(SendQueue { established: matches!(state, 0x01 | 0x08), bytes: u64::from_str_radix(tx, 16).ok()? })
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn proc_net_tcp_lines_are_read_by_inode() {
        let table = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n\
            0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 1111 1 0 100 0 0 10 0\n\
            1: 0100007F:9C40 0100007F:1A0B 01 000001F4:00000000 01:00000014 00000000  1000        0 2222 2 0 20 4 30 10 -1\n\
            2: 0100007F:9C41 0100007F:1A0B 08 00000000:00000000 00:00000000 00000000  1000        0 3333 2 0 20 4 30 10 -1\n";
        assert_eq!(find_socket(table, 2222), Some(SendQueue { established: true, bytes: 500 }));
        assert_eq!(find_socket(table, 3333), Some(SendQueue { established: true, bytes: 0 }));
        assert_eq!(find_socket(table, 1111), Some(SendQueue { established: false, bytes: 0 }));
        assert_eq!(find_socket(table, 4444), None);
    }

    #[test]
    fn a_batch_counts_as_acknowledged_only_when_all_its_bytes_are() {
        let t0 = Instant::now();
        let batches: VecDeque<InFlight> = [(10, 1000), (20, 2000), (30, 3000)]
            .into_iter()
            .map(|(seq, end)| InFlight { seq, end, flushed_at: t0 })
            .collect();
        let ack = Duration::from_secs(10);
        let q = |established, bytes| Some(SendQueue { established, bytes });
        // 3000 bytes written, 1200 still unacknowledged: bytes up to 1800 have arrived.
        assert_eq!(acked_through(&batches, 3000, q(true, 1200), t0, ack), Some(10));
        assert_eq!(acked_through(&batches, 3000, q(true, 1000), t0, ack), Some(20));
        assert_eq!(acked_through(&batches, 3000, q(true, 0), t0, ack), Some(30));
        assert_eq!(acked_through(&batches, 3000, q(true, 2500), t0, ack), None);
        // Any other TCP state (reset, closing): nothing is taken as acknowledged.
        assert_eq!(acked_through(&batches, 3000, q(false, 0), t0, ack), None);
        // No kernel view: the time rule.
        assert_eq!(acked_through(&batches, 3000, None, t0 + Duration::from_secs(19), ack), None);
        assert_eq!(acked_through(&batches, 3000, None, t0 + Duration::from_secs(20), ack), Some(30));
    }

    #[tokio::test]
    async fn a_live_socket_is_found_in_proc_net_tcp() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap()).await.unwrap();
        let (_server, _) = listener.accept().await.unwrap();
        if let Some(inode) = socket_inode(&client)
            && std::path::Path::new("/proc/net/tcp").exists()
        {
            assert_eq!(kernel_send_queue(inode), Some(SendQueue { established: true, bytes: 0 }));
        }
    }
}
