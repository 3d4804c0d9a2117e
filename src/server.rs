//! Running the HTTP server: bind, serve the router, stop gracefully on Ctrl-C or SIGTERM.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::Router;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::Request;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tower::ServiceExt;
use tower_http::timeout::RequestBodyTimeoutLayer;

use crate::web::{app, AppState};

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("cannot listen on {addr}: {reason} — stop the other process using it or choose another address with --bind / SEEDVAULT_BIND")]
    Bind { addr: SocketAddr, reason: String },
    #[error("the server stopped with an error: {0}")]
    Io(#[from] std::io::Error),
}

/// Binds `addr`, reporting a taken port clearly.
pub async fn bind(addr: SocketAddr) -> Result<TcpListener, ServeError> {
    TcpListener::bind(addr).await.map_err(|e| ServeError::Bind {
        addr,
        reason: match e.kind() {
            std::io::ErrorKind::AddrInUse => "the address is already in use".into(),
            std::io::ErrorKind::PermissionDenied => {
                "permission denied (ports below 1024 need privileges)".into()
            }
            _ => e.to_string(),
        },
    })
}

/// Limits that keep slow or hostile clients from holding the server: every connection costs a
/// file descriptor and a task, so an attacker who opens many and sends nothing (slowloris) must
/// not exhaust either.
#[derive(Debug, Clone, Copy)]
pub struct ConnectionLimits {
    /// A request's header must arrive within this time, counted from the connection's first
    /// byte or from the end of the previous response; it also closes idle keep-alive
    /// connections.
    pub header_read: Duration,
    /// A request body must arrive in full within this time: a client that sends half a body
    /// and goes silent gets an error answer and loses the connection.
    pub body_read: Duration,
    /// At most this many connections are served at once; more wait in the listen backlog.
    pub max_connections: usize,
    /// After a shutdown signal, requests in flight get this long before the process exits.
    pub shutdown_grace: Duration,
}

impl ConnectionLimits {
    /// Header and idle timeout 10 s (hyper's default is 30 s; a browser sends its headers in
    /// one packet), 60 s for a body (a large seed file over a slow link still fits), a
    /// connection cap below the open-file limit (see [`raise_open_file_limit`]), and 10 s of
    /// grace at shutdown.
    pub fn for_open_file_limit(open_files: u64) -> Self {
        Self {
            header_read: Duration::from_secs(10),
            body_read: Duration::from_secs(60),
            max_connections: connection_cap(open_files),
            shutdown_grace: Duration::from_secs(10),
        }
    }
}

/// File descriptors kept free for the database (the file, its WAL and shm, per pooled
/// connection), the listener, logs and the CLI-like work inside the server.
const RESERVED_FILES: u64 = 128;

/// Connections served at once for an open-file limit: the limit less [`RESERVED_FILES`], at
/// least 16.
pub fn connection_cap(open_files: u64) -> usize {
    usize::try_from(open_files.saturating_sub(RESERVED_FILES).max(16)).unwrap_or(usize::MAX)
}

/// Raises the soft open-file limit to the hard limit (systemd's default soft limit of 1,024 is
/// far below what a server may need) and returns the limit in force.
pub fn raise_open_file_limit() -> u64 {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) => limit,
        Err(e) => {
            tracing::warn!(error = %e, "cannot raise the open-file limit; keeping the current one");
            rlimit::getrlimit(rlimit::Resource::NOFILE).map_or(1024, |(soft, _)| soft)
        }
    }
}

/// Serves until `shutdown` completes, then lets in-flight requests finish for at most
/// `limits.shutdown_grace`.
pub async fn run(
    state: AppState,
    listener: TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    limits: ConnectionLimits,
) -> Result<(), ServeError> {
    // Stopped with the server: it follows key rotations only while requests may need them.
    let _follower = AbortOnDrop(spawn_key_follower(state.clone()));
    let https = state.config.origin_is_https();
    serve(app(state), listener, shutdown, limits, https).await
}

/// The accept loop behind both listeners (the vault's and `metrics_bind`'s).
///
/// A loop of our own rather than `axum::serve`, for the limits it does not offer: a header
/// read timeout (a client that trickles its header, or opens a connection and stays silent, is
/// disconnected), a body read timeout, a cap on concurrent connections, a bounded graceful
/// shutdown, and a refused body read away before the answer (see [`drain_unread`]).
///
/// `https`: whether the origin is https, for `Strict-Transport-Security` on the responses hyper
/// writes itself (see [`HyperErrorHeaders`]).
pub async fn serve(
    router: Router,
    listener: TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    limits: ConnectionLimits,
    https: bool,
) -> Result<(), ServeError> {
    let error_headers = crate::web::middleware::security_headers::as_lines(https);
    let router = router.layer(RequestBodyTimeoutLayer::new(limits.body_read));
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    let graceful = GracefulShutdown::new();
    // HTTP/1.1 only: browsers reach the vault through a TLS proxy (or on localhost), and
    // HTTP/2 would add the h2 crate for no gain here.
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read);
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            permit = permits.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => break,
            },
            () = shutdown.as_mut() => break,
        };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // EMFILE and friends: the error is about this one connection attempt (or a
                    // momentary shortage), never a reason to stop serving the others.
                    tracing::warn!(error = %e, "cannot accept a connection; retrying");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = shutdown.as_mut() => break,
        };
        let router = router.clone();
        let drain_within = limits.body_read;
        let service = hyper::service::service_fn(move |request: Request<Incoming>| {
            let router = router.clone();
            async move {
                let (parts, body) = request.into_parts();
                let body = SharedBody::new(body);
                let mut request = Request::from_parts(parts, Body::new(body.clone()));
                request.extensions_mut().insert(ConnectInfo(peer));
                let response = router.oneshot(request).await;
                drain_unread(body.take(), drain_within).await;
                response
            }
        });
        let io = TokioIo::new(HyperErrorHeaders::new(stream, error_headers));
        let connection = builder.serve_connection(io, service);
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, %peer, "connection ended with an error");
            }
            drop(permit);
        });
    }
    drop(listener);
    tokio::select! {
        () = graceful.shutdown() => {}
        () = tokio::time::sleep(limits.shutdown_grace) => {
            tracing::warn!(grace = ?limits.shutdown_grace, "requests still in flight at the end of the shutdown grace period; closing them");
        }
    }
    Ok(())
}

/// At most this much of a request body the handler left unread (a body over the route's
/// limit, or one the route does not take) is read away before the answer; a larger rest
/// closes the connection instead. Twice axum's default body limit, and far below what a
/// connection may send anyway within [`ConnectionLimits::body_read`].
pub const DRAIN_LIMIT: u64 = 16 * 1024 * 1024;

/// The request body, shared between the router (which reads what it wants) and the
/// connection (which reads away the rest, see [`drain_unread`]): hyper itself only drains what
/// has already arrived and then closes, so a client still sending a refused body got a
/// connection reset instead of the answer saying why.
#[derive(Clone)]
struct SharedBody(Arc<std::sync::Mutex<Option<Incoming>>>);

impl SharedBody {
    fn new(body: Incoming) -> Self {
        Self(Arc::new(std::sync::Mutex::new(Some(body))))
    }

    /// The body's unread rest, taken from whatever still holds a clone.
    fn take(&self) -> Option<Incoming> {
        self.slot().take()
    }

    fn slot(&self) -> std::sync::MutexGuard<'_, Option<Incoming>> {
        // A panic while polling leaves nothing half-changed in an Option: keep using it.
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl hyper::body::Body for SharedBody {
    type Data = hyper::body::Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Self::Data>, Self::Error>>> {
        match self.slot().as_mut() {
            Some(body) => std::pin::Pin::new(body).poll_frame(cx),
            None => std::task::Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.slot()
            .as_ref()
            .is_none_or(hyper::body::Body::is_end_stream)
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.slot().as_ref().map_or_else(
            || hyper::body::SizeHint::with_exact(0),
            hyper::body::Body::size_hint,
        )
    }
}

/// Reads a request body's unread rest and drops it, at most [`DRAIN_LIMIT`] bytes within
/// `within`, so that a client still sending (a JSON body over the limit, say) reads the 413
/// instead of a reset (RFC 9112 §9.6: close only after the client has stopped sending). A rest
/// declared larger, or one that does not arrive in time, is left: the connection then closes.
async fn drain_unread(body: Option<Incoming>, within: Duration) {
    use http_body_util::BodyExt;
    use hyper::body::Body as _;
    let Some(mut body) = body else { return };
    if body.is_end_stream() || body.size_hint().lower() > DRAIN_LIMIT {
        return;
    }
    let drained = tokio::time::timeout(within, async move {
        let mut read: u64 = 0;
        while let Some(frame) = body.frame().await {
            let Ok(frame) = frame else { return };
            if let Some(data) = frame.data_ref() {
                read = read.saturating_add(data.len() as u64);
                if read > DRAIN_LIMIT {
                    return;
                }
            }
        }
    })
    .await;
    if drained.is_err() {
        tracing::debug!("an unread request body did not arrive in time; closing the connection");
    }
}

/// Completes on Ctrl-C or SIGTERM. The handlers are installed when this is called (not when
/// first polled), so a signal sent right after start-up is not lost.
pub fn shutdown_signal() -> impl std::future::Future<Output = ()> + Send + 'static {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let interrupt = signal(SignalKind::interrupt());
        let terminate = signal(SignalKind::terminate());
        async move {
            match (interrupt, terminate) {
                (Ok(mut interrupt), Ok(mut terminate)) => {
                    tokio::select! {
                        _ = interrupt.recv() => {},
                        _ = terminate.recv() => {},
                    }
                }
                _ => std::future::pending::<()>().await,
            }
            tracing::info!("shutting down: finishing requests in flight");
        }
    }
    #[cfg(not(unix))]
    async {
        let _ = tokio::signal::ctrl_c().await;
        tracing::info!("shutting down: finishing requests in flight");
    }
}

/// Keeps the server's keys in step with `seedvault key rotate` run beside it: every second it
/// learns a rotation's new key (so reveals never wait for it) and, once a rotation finished,
/// drops the old key from memory.
pub fn spawn_key_follower(state: AppState) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut every_second = tokio::time::interval(std::time::Duration::from_secs(1));
        let mut warned = false;
        loop {
            every_second.tick().await;
            match crate::vault::rotate::follow(&state.store, &state.vault).await {
                Ok(()) => warned = false,
                Err(e) if !warned => {
                    warned = true;
                    tracing::error!(error = %e, "cannot follow the data key rotation");
                }
                Err(_) => {}
            }
        }
    })
}

/// Aborts a background task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Expires and purges overdue seeds, deletes the rows of imports that never committed, records
/// approvals whose time ran out, and deletes expired sessions, ceremonies and rate-limit events,
/// once at start and then every minute; on PostgreSQL only on the instance holding the job's
/// lock (`shared::JobLock`).
pub fn spawn_sweeper(state: AppState) {
    tokio::spawn(async move {
        let mut every_minute = tokio::time::interval(std::time::Duration::from_secs(60));
        let mut lock = state.shared.job_lock("retention-sweep");
        loop {
            every_minute.tick().await;
            if !lock.may_run().await {
                continue;
            }
            let env = state.env();
            let swept = crate::tokens::lifecycle::purge_expired_paced(
                &env,
                "system",
                crate::tokens::lifecycle::SweepPace::Yielding,
            );
            match swept.await {
                Ok(purged) if !purged.is_empty() => {
                    tracing::info!(count = purged.len(), "purged expired seeds")
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::error!(error = %e, "retention sweep failed; will retry in a minute")
                }
            }
            if let Err(e) = crate::tokens::import::discard_abandoned(&state.store).await {
                tracing::error!(error = %e, "could not delete an abandoned import's rows; will retry in a minute");
            }
            match crate::tokens::approval::expire_overdue(&state.env()).await {
                Ok(0) => {}
                Ok(count) => tracing::info!(count, "expired approval requests"),
                Err(e) => {
                    tracing::error!(error = %e, "approval expiry sweep failed; will retry in a minute")
                }
            }
            if let Err(e) = state.sessions.delete_expired().await {
                tracing::warn!(error = %e, "could not delete expired sessions");
            }
            if let Err(e) = sweep_transient(&state).await {
                tracing::warn!(error = %e, "could not forget expired ceremonies and limit events");
            }
        }
    });
}

/// Forgets ceremonies in flight and rate-limit events whose time passed.
async fn sweep_transient(state: &AppState) -> Result<(), crate::store::StoreError> {
    let now = state.clock.unix();
    state.reveals.sweep(now).await?;
    state.approvals.sweep(now).await?;
    state.sign_ins.sweep(now).await?;
    state.limits.sweep(now).await
}

/// Syncs the directory from `[directory.ldap]` at start and every `sync_interval_minutes`
/// (nothing when LDAP is not configured or the interval is 0). A failed sync is recorded
/// (dashboard, `status`, audit) and the last good data kept; the next tick tries again.
pub fn spawn_directory_sync(state: AppState) {
    let Some(settings) = state.config.directory.clone() else {
        return;
    };
    if settings.sync_interval_minutes == 0 {
        return;
    }
    tokio::spawn(async move {
        let period = std::time::Duration::from_secs(u64::from(settings.sync_interval_minutes) * 60);
        let mut ticks = tokio::time::interval(period);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut lock = state.shared.job_lock("directory-sync");
        loop {
            ticks.tick().await;
            if !lock.may_run().await {
                continue;
            }
            let env = crate::directory::SyncEnv {
                store: &state.store,
                vault: &state.vault,
                now: state.clock.now(),
            };
            match crate::directory::sync_ldap(&env, "system", &settings, false).await {
                Ok(report) => {
                    tracing::info!(counts = %report.counts(), total = report.total, "directory synced from LDAP")
                }
                Err(e) => {
                    tracing::error!(error = %e, "directory sync from LDAP failed; the last good data is kept")
                }
            }
        }
    });
}

/// Drains the metrics' histogram buffers every 5 seconds, so that memory stays flat however
/// rarely `/metrics` is scraped.
pub fn spawn_metrics_upkeep() {
    tokio::spawn(async {
        let mut every = tokio::time::interval(Duration::from_secs(5));
        loop {
            every.tick().await;
            crate::telemetry::upkeep();
        }
    });
}

/// Connections the `metrics_bind` listener serves at once: a scraper needs one or two, and
/// these come out of the same open-file budget as the vault's own connections.
pub const METRICS_CONNECTIONS: usize = 16;

/// Serves `GET /metrics` (and nothing else) on the `metrics_bind` listener, through the same
/// accept loop as the vault's listener ([`serve`]): header and body timeouts and a cap of
/// [`METRICS_CONNECTIONS`], so a client of the metrics port cannot hold the process's files
/// either. Stops when the returned task is aborted.
pub fn spawn_metrics_listener(
    state: AppState,
    listener: TcpListener,
    limits: ConnectionLimits,
) -> tokio::task::JoinHandle<()> {
    let https = state.config.origin_is_https();
    let app = crate::web::prometheus::listener_app(state);
    let limits = ConnectionLimits {
        max_connections: limits.max_connections.min(METRICS_CONNECTIONS),
        ..limits
    };
    tokio::spawn(async move {
        if let Err(e) = serve(app, listener, std::future::pending(), limits, https).await {
            tracing::error!(error = %e, "the metrics listener stopped");
        }
    })
}

/// The security headers on the responses hyper writes by itself, before any router sees the
/// request: 400 for a request it cannot parse, 431 for a header too large, 414 for a URI too
/// long. hyper builds those heads with no headers of its own choosing and offers no hook to
/// add any (`Server::on_error` in hyper's `proto/h1/role.rs`), so the connection's writer adds
/// them: a response head that starts with `HTTP/1.1 4` and carries no
/// `content-security-policy` cannot have come from the router (whose every answer has one,
/// see `web::middleware::security_headers`), and gets the same headers inserted after its
/// status line.
struct HyperErrorHeaders<IO> {
    inner: IO,
    /// The header lines to insert, each ending in CRLF.
    lines: &'static [u8],
    /// A rewritten head not yet written: it goes out before anything else.
    pending: Vec<u8>,
}

impl<IO> HyperErrorHeaders<IO> {
    fn new(inner: IO, lines: &'static [u8]) -> Self {
        Self {
            inner,
            lines,
            pending: Vec::new(),
        }
    }

    /// The head to write instead of the start of `buf`, and how many bytes of `buf` it
    /// replaces; `None` for everything but hyper's own error heads.
    fn rewrite(&self, buf: &[u8]) -> Option<(Vec<u8>, usize)> {
        if !(buf.starts_with(b"HTTP/1.1 4") || buf.starts_with(b"HTTP/1.0 4")) {
            return None;
        }
        let head_len = memchr::memmem::find(buf, b"\r\n\r\n")? + 4;
        let head = &buf[..head_len];
        if memchr::memmem::find(&head.to_ascii_lowercase(), b"\ncontent-security-policy:").is_some()
        {
            return None;
        }
        let status_end = memchr::memmem::find(head, b"\r\n")? + 2;
        let mut rewritten = Vec::with_capacity(head_len + self.lines.len());
        rewritten.extend_from_slice(&head[..status_end]);
        rewritten.extend_from_slice(self.lines);
        rewritten.extend_from_slice(&head[status_end..]);
        Some((rewritten, head_len))
    }
}

impl<IO: AsyncWrite + Unpin> HyperErrorHeaders<IO> {
    /// Writes what is pending; ready once nothing is.
    fn poll_pending(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        while !self.pending.is_empty() {
            let written = std::task::ready!(
                std::pin::Pin::new(&mut self.inner).poll_write(cx, &self.pending)
            )?;
            if written == 0 {
                return std::task::Poll::Ready(Err(std::io::ErrorKind::WriteZero.into()));
            }
            self.pending.drain(..written);
        }
        std::task::Poll::Ready(Ok(()))
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for HyperErrorHeaders<IO> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for HyperErrorHeaders<IO> {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::task::ready!(self.poll_pending(cx))?;
        if let Some((rewritten, replaced)) = self.rewrite(buf) {
            // The rewritten head counts as written in full; it goes out on the next write,
            // flush or shutdown, before anything else.
            self.pending = rewritten;
            return std::task::Poll::Ready(Ok(replaced));
        }
        std::pin::Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::task::ready!(self.poll_pending(cx))?;
        if let Some((rewritten, replaced)) = bufs.first().and_then(|first| self.rewrite(first)) {
            self.pending = rewritten;
            return std::task::Poll::Ready(Ok(replaced));
        }
        std::pin::Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::ready!(self.poll_pending(cx))?;
        std::pin::Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::ready!(self.poll_pending(cx))?;
        std::pin::Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn rewrite(head: &[u8]) -> Option<String> {
        let io = HyperErrorHeaders::new((), b"x-a: 1\r\n");
        io.rewrite(head).map(|(rewritten, replaced)| {
            assert_eq!(replaced, head.len());
            String::from_utf8(rewritten).unwrap()
        })
    }

    #[test]
    fn hypers_own_error_head_gets_the_header_lines_after_its_status_line() {
        let head = b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-length: 0\r\n\r\n";
        assert_eq!(
            rewrite(head).unwrap(),
            "HTTP/1.1 431 Request Header Fields Too Large\r\nx-a: 1\r\ncontent-length: 0\r\n\r\n"
        );
    }

    #[test]
    fn the_routers_answers_and_successes_are_written_unchanged() {
        assert_eq!(
            rewrite(
                b"HTTP/1.1 404 Not Found\r\ncontent-security-policy: default-src 'none'\r\n\r\n"
            ),
            None
        );
        assert_eq!(
            rewrite(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n"),
            None
        );
        // A head that does not end in this write is never touched.
        assert_eq!(rewrite(b"HTTP/1.1 400 Bad Request\r\ncontent-le"), None);
    }
}
