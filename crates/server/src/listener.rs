//! The accept loop: TCP (optionally TLS) → HTTP/1.1 or HTTP/2 → the axum router.
//!
//! Every request carries a [`ConnInfo`] in its extensions (`Extension<ConnInfo>` in handlers)
//! with the peer address and, over TLS, the negotiated version, suite and client certificate.
//!
//! Connection limits: at most [`ConnLimits::max_connections`] connections are served at once.
//! When the limit is reached the loop stops calling `accept`, so further connections wait in the
//! kernel's listen backlog until a slot frees up (back-pressure) instead of being accepted and
//! dropped; a client that cannot wait that long times out on its own side. Each connection has
//! [`ConnLimits::handshake_timeout`] to complete the TLS handshake and, again, to send its first
//! request, so idle sockets cannot pin slots; HTTP/1 keep-alive connections are closed after
//! 30 s without a new request header (hyper's header read timeout).

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::Router;
use hyper::Request;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;
use tower::Service;

use crate::tls::enum_name;

/// What the server knows about the connection a request arrived on.
#[derive(Clone, Debug)]
pub struct ConnInfo {
    /// The peer's address.
    pub remote: SocketAddr,
    /// Our address the connection was accepted on.
    pub local: SocketAddr,
    /// TLS parameters; `None` for plain TCP. Shared (`Arc`) so cloning per request is cheap.
    pub tls: Option<Arc<TlsInfo>>,
}

/// Negotiated TLS parameters of a connection.
#[derive(Clone, Debug)]
pub struct TlsInfo {
    /// Protocol version as rustls names it: `TLSv1_3` or `TLSv1_2`.
    pub version: String,
    /// Cipher suite IANA name as rustls spells it, e.g. `TLS13_AES_256_GCM_SHA384`.
    pub cipher_suite: String,
    /// DER of the client's leaf certificate, if it presented one (it has then been verified
    /// against the configured client CA).
    pub peer_cert_der: Option<Vec<u8>>,
    /// DER of the intermediate certificates the client sent after its leaf (to tell which
    /// configured CA issued it: zones by issuer, ACL-3).
    pub peer_intermediates_der: Vec<Vec<u8>>,
    /// ALPN protocol agreed on (`h2`, `http/1.1`), if any.
    pub alpn: Option<String>,
}

/// Limits of the accept loop.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConnLimits {
    /// Time allowed for the TLS handshake, and again for the first request to arrive.
    pub handshake_timeout: Duration,
    /// Connections served at once; further ones wait in the listen backlog.
    pub max_connections: usize,
    /// After shutdown is signalled, how long in-flight connections may take to finish before
    /// they are cut.
    pub drain_timeout: Duration,
}

impl Default for ConnLimits {
    fn default() -> Self {
        Self {
            handshake_timeout: Duration::from_secs(10),
            max_connections: 1024,
            drain_timeout: Duration::from_secs(30),
        }
    }
}

/// How long to back off after an accept error such as EMFILE.
const ACCEPT_ERROR_BACKOFF: Duration = Duration::from_millis(100);

/// Shared, read-only state of the loop handed to each connection task.
struct Shared {
    app: Router,
    http: auto::Builder<TokioExecutor>,
    tls: Option<TlsAcceptor>,
    limits: ConnLimits,
    local: SocketAddr,
}

/// Serves `app` on `listener` until `shutdown` resolves, then stops accepting, lets in-flight
/// connections finish (HTTP/1: after the current response; HTTP/2: GOAWAY) for up to
/// `limits.drain_timeout`, cuts whatever is left and returns `Ok(())`.
///
/// Errors on individual connections (failed handshakes, protocol errors, resets) are logged at
/// debug level and never end the loop; only a failure to read the listener's own address is
/// returned as an error.
pub async fn serve(
    listener: TcpListener,
    tls: Option<Arc<rustls::ServerConfig>>,
    app: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
    limits: ConnLimits,
) -> io::Result<()> {
    let local = listener.local_addr()?;
    let mut http = auto::Builder::new(TokioExecutor::new());
    http.http1().timer(TokioTimer::new());
    http.http2().timer(TokioTimer::new());
    let shared = Arc::new(Shared { app, http, tls: tls.map(TlsAcceptor::from), limits, local });
    let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut tasks: JoinSet<()> = JoinSet::new();
    let mut shutdown = std::pin::pin!(shutdown);

    loop {
        tokio::select! {
            biased;
            () = &mut shutdown => break,
            Some(done) = tasks.join_next() => {
                if let Err(e) = done
                    && e.is_panic()
                {
                    tracing::error!("connection task panicked: {e}");
                }
            }
            accepted = accept(&listener, &slots) => match accepted {
                Ok((permit, stream, remote)) => {
                    let shared = Arc::clone(&shared);
                    let stop = stop_rx.clone();
                    tasks.spawn(async move {
                        handle(shared, stream, remote, stop).await;
                        drop(permit);
                    });
                }
                Err(e) if is_per_connection(&e) => {
                    tracing::debug!("accept: {e}");
                }
                Err(e) => {
                    tracing::warn!("accept failed on {local}: {e}; retrying shortly");
                    tokio::select! {
                        biased;
                        () = &mut shutdown => break,
                        () = tokio::time::sleep(ACCEPT_ERROR_BACKOFF) => {}
                    }
                }
            },
        }
    }

    // Closing the listening socket makes new connection attempts fail right away.
    drop(listener);
    let in_flight = tasks.len();
    tracing::info!("shutting down {local}: draining {in_flight} connection(s)");
    // Receivers only ever wait for `true`; a send error means no connection is listening.
    let _ = stop_tx.send(true);
    let drained =
        tokio::time::timeout(limits.drain_timeout, async { while tasks.join_next().await.is_some() {} }).await;
    if drained.is_err() {
        tracing::warn!(
            "{} connection(s) on {local} still open after {:?}; closing them",
            tasks.len(),
            limits.drain_timeout
        );
        tasks.shutdown().await;
    }
    Ok(())
}

/// Waits for a free connection slot, then for a connection.
async fn accept(
    listener: &TcpListener,
    slots: &Arc<Semaphore>,
) -> io::Result<(OwnedSemaphorePermit, TcpStream, SocketAddr)> {
    // The semaphore is never closed, so this only fails if it were; treat that as fatal-ish.
    let permit = Arc::clone(slots).acquire_owned().await.map_err(|_| io::Error::other("connection slots closed"))?;
    let (stream, remote) = listener.accept().await?;
    Ok((permit, stream, remote))
}

/// Accept errors that concern only the one connection (the peer gave up before we accepted).
fn is_per_connection(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused | io::ErrorKind::ConnectionAborted | io::ErrorKind::ConnectionReset
    )
}

/// Serves one accepted connection to completion. Never panics; errors are logged at debug.
async fn handle(shared: Arc<Shared>, stream: TcpStream, remote: SocketAddr, stop: watch::Receiver<bool>) {
    if let Err(e) = stream.set_nodelay(true) {
        tracing::debug!("{remote}: cannot set TCP_NODELAY: {e}");
    }
    let Some(acceptor) = shared.tls.clone() else {
        let info = ConnInfo { remote, local: shared.local, tls: None };
        serve_http(&shared, stream, info, stop).await;
        return;
    };
    let handshake = tokio::time::timeout(shared.limits.handshake_timeout, acceptor.accept(stream)).await;
    let tls_stream = match handshake {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            tracing::debug!("{remote}: TLS handshake failed: {e}");
            return;
        }
        Err(_) => {
            tracing::debug!("{remote}: TLS handshake not completed within {:?}", shared.limits.handshake_timeout);
            return;
        }
    };
    if *stop.borrow() {
        // Shutdown began during the handshake; don't start serving.
        return;
    }
    let info = ConnInfo { remote, local: shared.local, tls: Some(Arc::new(tls_info(tls_stream.get_ref().1))) };
    serve_http(&shared, tls_stream, info, stop).await;
}

fn tls_info(conn: &rustls::ServerConnection) -> TlsInfo {
    TlsInfo {
        version: conn.protocol_version().map(|v| enum_name(v.as_str(), &v)).unwrap_or_default(),
        cipher_suite: conn
            .negotiated_cipher_suite()
            .map(|s| enum_name(s.suite().as_str(), &s.suite()))
            .unwrap_or_default(),
        peer_cert_der: conn.peer_certificates().and_then(|chain| chain.first()).map(|leaf| leaf.as_ref().to_vec()),
        peer_intermediates_der: conn
            .peer_certificates()
            .map(|chain| chain.iter().skip(1).map(|c| c.as_ref().to_vec()).collect())
            .unwrap_or_default(),
        alpn: conn.alpn_protocol().map(|p| String::from_utf8_lossy(p).into_owned()),
    }
}

/// Runs HTTP/1.1 or HTTP/2 (auto-detected) over `io` until the peer closes, an error occurs,
/// the first request does not arrive in time, or shutdown completes.
async fn serve_http<I>(shared: &Shared, io: I, info: ConnInfo, mut stop: watch::Receiver<bool>)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let remote = info.remote;
    let first_request = Arc::new(AtomicBool::new(false));
    let seen = Arc::clone(&first_request);
    let app = shared.app.clone();
    let service = hyper::service::service_fn(move |mut req: Request<Incoming>| {
        req.extensions_mut().insert(info.clone());
        seen.store(true, Ordering::Relaxed);
        // A `Router` clone is one reference-count increment, and a `Router` is always ready,
        // so `call` needs no `poll_ready` first (this is what `axum::serve` does as well).
        app.clone().call(req)
    });
    let conn = shared.http.serve_connection_with_upgrades(TokioIo::new(io), service);
    let mut conn = std::pin::pin!(conn);
    let first_deadline = tokio::time::sleep(shared.limits.handshake_timeout);
    let mut first_deadline = std::pin::pin!(first_deadline);
    let mut waiting_first = true;
    let mut stopping = false;
    let result = loop {
        tokio::select! {
            res = conn.as_mut() => break res,
            _ = stop.wait_for(|s| *s), if !stopping => {
                stopping = true;
                conn.as_mut().graceful_shutdown();
            }
            () = first_deadline.as_mut(), if waiting_first => {
                waiting_first = false;
                if !first_request.load(Ordering::Relaxed) {
                    tracing::debug!(
                        "{remote}: no request within {:?}; closing",
                        shared.limits.handshake_timeout
                    );
                    return;
                }
            }
        }
    };
    if let Err(e) = result {
        tracing::debug!("{remote}: connection error: {e}");
    }
}
