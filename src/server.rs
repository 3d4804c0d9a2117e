//! Running the HTTP server: bind, serve the router, stop gracefully on Ctrl-C or SIGTERM.

use std::net::SocketAddr;

use tokio::net::TcpListener;

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

/// Serves until `shutdown` completes, then lets in-flight requests finish.
pub async fn run(
    state: AppState,
    listener: TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    let router = app(state).into_make_service_with_connect_info::<SocketAddr>();
    axum::serve(listener, router)
        .with_graceful_shutdown(shutdown)
        .await?;
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

/// Expires and purges overdue seeds, and deletes expired sessions, once at start and then
/// every minute.
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
            if let Err(e) = state.sessions.delete_expired().await {
                tracing::warn!(error = %e, "could not delete expired sessions");
            }
        }
    });
}
