//! HTTP: the router, its shared state, and the mapping of errors to responses. Handlers are
//! thin: they parse, call the domain, and shape the reply.

pub mod api;
pub mod ceremony;
mod error;
pub mod extract;
pub(crate) mod health;
pub mod middleware;
pub mod prometheus;
pub mod session;
pub mod views;

use std::sync::Arc;

use axum::routing::get;
use axum::Router;
use tower_sessions::cookie::SameSite;
use tower_sessions::{Expiry, SessionManagerLayer};
use webauthn_rs::prelude::Webauthn;
use webauthn_rs::WebauthnBuilder;

pub use error::{AppError, ErrorBody};

use crate::clock::SharedClock;
use crate::config::Config;
use crate::policy::PolicySet;
use crate::ratelimit::RateLimiter;
use crate::shared::Shared;
use crate::store::Store;
use crate::vault::Vault;

/// Name of the session cookie.
pub const SESSION_COOKIE: &str = "seedvault_session";

/// Rate limits shared by all requests (and, on PostgreSQL, by all instances).
pub struct Limits {
    /// Failed sign-ins per client (never per operator name: anyone could lock a name out).
    pub sign_in_by_addr: RateLimiter,
    /// Refused requests to delivery links (guessed, expired, used, wrong codes) per client,
    /// counted like failed sign-ins (same settings): a link cannot be guessed at speed.
    pub delivery_link_by_addr: RateLimiter,
    /// Keys the decoy credential ids `login/start` hands out for names that cannot sign in, so
    /// that the same name gets the same decoy within this process (random per start) or, on
    /// PostgreSQL, from every instance ([`shared_decoy_key`]).
    pub decoy_key: [u8; 32],
}

impl Limits {
    /// The configured sign-in limit (`sign_in_attempts_per_address`,
    /// `sign_in_address_window_minutes`), in memory.
    pub fn new(config: &Config) -> Self {
        Self::with_backing(config, &Shared::Memory)
    }

    /// The configured limits, kept where `shared` says.
    pub fn with_backing(config: &Config, shared: &Shared) -> Self {
        let max = config.sign_in_attempts_per_address as usize;
        let window = i64::from(config.sign_in_address_window_minutes) * 60;
        let limiter = |name: &'static str| match shared {
            Shared::Memory => RateLimiter::new(max, window),
            Shared::Postgres(pool) => RateLimiter::postgres(pool.clone(), name, max, window),
        };
        Self {
            sign_in_by_addr: limiter("sign_in_by_addr"),
            delivery_link_by_addr: limiter("delivery_link_by_addr"),
            decoy_key: rand::random(),
        }
    }

    /// Forgets events that left their windows (the sweeper's minute).
    pub async fn sweep(&self, now: i64) -> Result<(), crate::store::StoreError> {
        self.sign_in_by_addr.sweep(now).await?;
        self.delivery_link_by_addr.sweep(now).await
    }
}

/// The decoy key every instance of one vault derives alike: a hash of the vault's Ed25519
/// audit signature over a fixed label (Ed25519 signs deterministically), which nobody can
/// compute without the vault's key; the signature itself is never shown. It changes when the
/// audit signing key is rotated, like a restart changes the in-memory one.
pub fn shared_decoy_key(vault: &Vault) -> [u8; 32] {
    use sha2::Digest as _;
    sha2::Sha256::digest(vault.sign_audit(b"seedvault: decoy credential ids, v1")).into()
}

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    pub store: Store,
    pub vault: Arc<Vault>,
    pub config: Arc<Config>,
    pub clock: SharedClock,
    pub webauthn: Arc<Webauthn>,
    pub limits: Arc<Limits>,
    pub sessions: session::SessionTable,
    pub policies: Arc<PolicySet>,
    /// Reveals between start and finish (single use, across instances).
    pub reveals: Arc<ceremony::PendingReveals>,
    /// Approvals between start and finish (single use, across instances).
    pub approvals: Arc<ceremony::PendingApprovals>,
    /// Sign-ins between start and finish (single use, across instances, capped).
    pub sign_ins: Arc<ceremony::PendingSignIns>,
    /// Where the state above lives, and the gate of scheduled jobs (`shared::JobLock`).
    pub shared: Shared,
    /// What each SIEM forwarder last saw (filled by `serve` once the forwarders run).
    pub siem: Arc<std::sync::Mutex<std::collections::BTreeMap<String, crate::siem::SinkHealth>>>,
}

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("cannot set up WebAuthn for origin {origin}: {reason} — set origin (SEEDVAULT_ORIGIN) to the URL browsers use")]
    Webauthn { origin: String, reason: String },
    #[error("cannot prepare the session table: {0}")]
    Sessions(String),
    #[error(transparent)]
    Policy(#[from] crate::policy::PolicyError),
}

impl AppState {
    /// Assembles the state: WebAuthn bound to the configured origin, the session table;
    /// ceremonies, limits and job gates in this process's memory (SQLite's one server).
    pub async fn new(
        store: Store,
        vault: Vault,
        config: Config,
        clock: SharedClock,
    ) -> Result<Self, StateError> {
        Self::with_shared(store, vault, config, clock, Shared::Memory).await
    }

    /// [`Self::new`] with the state instances must agree on kept where `shared` says: on
    /// PostgreSQL, sessions, ceremonies in flight and rate limits in its `transient` schema
    /// and scheduled jobs gated by advisory locks, so that any instance can serve any step.
    pub async fn with_shared(
        store: Store,
        vault: Vault,
        config: Config,
        clock: SharedClock,
        shared: Shared,
    ) -> Result<Self, StateError> {
        let origin = config.origin.clone();
        let webauthn_error = |reason: String| StateError::Webauthn {
            origin: origin.to_string(),
            reason,
        };
        let rp_id = origin
            .host_str()
            .ok_or_else(|| webauthn_error("no host".into()))?
            .to_owned();
        let webauthn = WebauthnBuilder::new(&rp_id, &origin)
            .map_err(|e| webauthn_error(e.to_string()))?
            .rp_name("seedvault")
            .build()
            .map_err(|e| webauthn_error(e.to_string()))?;
        let sessions = match &shared {
            Shared::Memory => session::SessionTable::open(&store)
                .await
                .map_err(StateError::Sessions)?,
            Shared::Postgres(pool) => {
                session::SessionTable::postgres(pool.clone()).map_err(StateError::Sessions)?
            }
        };
        let policies = crate::policy::load_configured(&config.policies_dir)?;
        let mut limits = Limits::with_backing(&config, &shared);
        if matches!(shared, Shared::Postgres(_)) {
            // Behind a load balancer, a decoy that differs between instances would tell a
            // name that cannot sign in from a real one (whose credential ids never change).
            limits.decoy_key = shared_decoy_key(&vault);
        }
        let limits = Arc::new(limits);
        let (reveals, approvals, sign_ins) = match &shared {
            Shared::Memory => Default::default(),
            Shared::Postgres(pool) => (
                Arc::new(ceremony::Pending::postgres(pool.clone(), "reveal")),
                Arc::new(ceremony::Pending::postgres(pool.clone(), "approval")),
                Arc::new(ceremony::Pending::postgres(pool.clone(), "sign_in")),
            ),
        };
        crate::telemetry::install();
        Ok(Self {
            store,
            vault: Arc::new(vault),
            config: Arc::new(config),
            clock,
            webauthn: Arc::new(webauthn),
            limits,
            sessions,
            policies: Arc::new(policies),
            reveals,
            approvals,
            sign_ins,
            shared,
            siem: Arc::default(),
        })
    }

    /// What token-level domain functions need, at the current time.
    pub fn env(&self) -> crate::tokens::Env<'_> {
        crate::tokens::Env {
            store: &self.store,
            vault: &self.vault,
            policies: &self.policies,
            retention_days: self.config.retention_days,
            reveal_windows: self.config.reveal_windows(),
            now: self.clock.now(),
        }
    }
}

/// Builds the whole application; `serve` and the tests both call this.
pub fn app(state: AppState) -> Router {
    let session_layer = SessionManagerLayer::new(state.sessions.clone())
        .with_name(SESSION_COOKIE)
        .with_http_only(true)
        .with_same_site(SameSite::Strict)
        // Browsers do not send Secure cookies back over http://localhost.
        .with_secure(state.config.origin_is_https())
        .with_expiry(Expiry::OnInactivity(time::Duration::minutes(i64::from(
            state.config.session_idle_minutes,
        ))));
    Router::new()
        .route("/healthz", get(health::healthz))
        .merge(api::router())
        .merge(views::router())
        // Routes that take uploads switch this off and enforce max_upload_mb themselves.
        .layer(axum::extract::DefaultBodyLimit::max(
            middleware::body_limit::DEFAULT_BODY_LIMIT,
        ))
        .layer(axum::middleware::from_fn(middleware::body_limit::explain))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            middleware::origin::require_same_origin,
        ))
        .layer(session_layer)
        .layer(axum::middleware::from_fn_with_state(
            middleware::security_headers::OriginIsHttps(state.config.origin_is_https()),
            middleware::security_headers::add,
        ))
        .layer(axum::middleware::from_fn(middleware::access_log::log))
        .with_state(state)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::config::Overrides;

    #[test]
    fn instances_of_one_vault_derive_one_decoy_key_and_other_vaults_another() {
        use crate::vault::DataKey;
        use ed25519_dalek::SigningKey;
        let vault = |signer: [u8; 32]| {
            Vault::new(
                "v".into(),
                DataKey::generate(),
                SigningKey::from_bytes(&signer),
                false,
            )
        };
        // Two processes holding the same vault (each with its own copy of the keys).
        assert_eq!(
            shared_decoy_key(&vault([1; 32])),
            shared_decoy_key(&vault([1; 32]))
        );
        assert_ne!(
            shared_decoy_key(&vault([1; 32])),
            shared_decoy_key(&vault([2; 32]))
        );
    }

    #[tokio::test]
    async fn configured_sign_in_limits_count_per_address_over_their_window() {
        let config = Config::validate(Overrides {
            sign_in_attempts_per_address: Some(2),
            ..Default::default()
        })
        .unwrap();
        let limits = Limits::new(&config);
        let limit = &limits.sign_in_by_addr;
        limit.record("10.0.0.1", 1_000).await.unwrap();
        assert_eq!(limit.check("10.0.0.1", 1_000).await.unwrap(), Ok(()));
        limit.record("10.0.0.1", 1_000).await.unwrap();
        assert_eq!(limit.check("10.0.0.1", 1_000).await.unwrap(), Err(900));
    }
}
