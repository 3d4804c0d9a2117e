//! Running the HTTP server: bind, serve the router, stop gracefully on Ctrl-C or SIGTERM.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::Request;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
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
///
/// A loop of our own rather than `axum::serve`, for the limits it does not offer: a header
/// read timeout (a client that trickles its header, or opens a connection and stays silent, is
/// disconnected), a cap on concurrent connections, and a bounded graceful shutdown.
pub async fn run(
    state: AppState,
    listener: TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    limits: ConnectionLimits,
) -> Result<(), ServeError> {
    // Stopped with the server: it follows key rotations only while requests may need them.
    let _follower = AbortOnDrop(spawn_key_follower(state.clone()));
    let router = app(state).layer(RequestBodyTimeoutLayer::new(limits.body_read));
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
        let service = hyper::service::service_fn(move |mut request: Request<Incoming>| {
            request.extensions_mut().insert(ConnectInfo(peer));
            router.clone().oneshot(request.map(Body::new))
        });
        let connection = builder.serve_connection(TokioIo::new(stream), service);
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

/// Expires and purges overdue seeds, records approvals whose time ran out, and deletes expired
/// sessions, once at start and then every minute.
pub fn spawn_sweeper(state: AppState) {
    tokio::spawn(async move {
        let mut every_minute = tokio::time::interval(std::time::Duration::from_secs(60));
        loop {
            every_minute.tick().await;
            match crate::tokens::lifecycle::purge_expired(&state.env(), "system").await {
                Ok(purged) if !purged.is_empty() => {
                    tracing::info!(count = purged.len(), "purged expired seeds")
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::error!(error = %e, "retention sweep failed; will retry in a minute")
                }
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
        }
    });
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
        loop {
            ticks.tick().await;
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

/// Serves `GET /metrics` (and nothing else) on the `metrics_bind` listener.
pub fn spawn_metrics_listener(state: AppState, listener: TcpListener) {
    let app = crate::web::prometheus::listener_app(state);
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(error = %e, "the metrics listener stopped");
        }
    });
}
