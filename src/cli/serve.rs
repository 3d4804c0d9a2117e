//! `seedvault serve`: unseal (creating a development vault on a fresh data directory), then
//! serve HTTP until Ctrl-C or SIGTERM.

use std::sync::Arc;

use clap::Args;

use super::unlock::{unlock_vault, UnlockArgs};
use super::{development_warning, init_tracing, Cli};
use crate::clock::{Clock, SystemClock};
use crate::config::Overrides;
use crate::operators::{self, NewInvite, Role, Roles};
use crate::vault::open::{self, SlotRequest};
use crate::vault::VaultError;
use crate::web::AppState;

#[derive(Debug, Args)]
pub struct ServeArgs {
    #[arg(long, value_name = "IP:PORT", help = crate::config::flag_help("bind"))]
    bind: Option<String>,
    #[arg(long, value_name = "URL", help = crate::config::flag_help("origin"))]
    origin: Option<String>,
    /// Refuse to run with a development key slot or without a vault.
    #[arg(long)]
    production: bool,
    #[command(flatten)]
    unlock: UnlockArgs,
}

pub async fn run(cli: &Cli, args: &ServeArgs) -> anyhow::Result<()> {
    let config = cli.config(Overrides {
        bind: args.bind.clone(),
        origin: args.origin.clone(),
        ..Default::default()
    })?;
    init_tracing(&config.log, config.log_format);
    let clock = Arc::new(SystemClock);
    let store = super::open_store(&config).await?;

    if open::existing_vault_id(&store).await?.is_none() {
        if args.production {
            anyhow::bail!(
                "no vault exists in {} — create one first with `seedvault init --production --passphrase-file FILE` (or --recipient age1…)",
                config.data_dir.display()
            );
        }
        let vault = open::create(
            &store,
            clock.now(),
            "system",
            vec![("development".into(), SlotRequest::Development)],
        )
        .await?;
        tracing::info!(vault_id = vault.id(), data_dir = %config.data_dir.display(), "created a new vault with a development key slot");
    }
    let vault = unlock_vault(&store, &args.unlock).await?;
    if vault.has_development_slot() {
        if args.production {
            return Err(VaultError::DevelopmentSlotInProduction.into());
        }
        // In JSON mode stderr carries only JSON lines; the warning goes through the log.
        if config.log_format == crate::config::LogFormat::Text {
            eprintln!("{}", development_warning(&config.data_dir));
            tracing::warn!("running with a development key slot");
        } else {
            tracing::warn!(warning = %development_warning(&config.data_dir), "running with a development key slot");
        }
    }

    // Checked before listening: a bad template or an unreadable SMTP password stops start-up.
    let sender =
        crate::notices::sender::Sender::from_config(store.clone(), clock.clone(), &config)?;
    if !sender.sends() {
        tracing::warn!("no SMTP server configured ([smtp] host): notices to token owners are recorded, not sent");
    }
    let shutdown = crate::server::shutdown_signal();
    let limits = crate::server::ConnectionLimits::for_open_file_limit(
        crate::server::raise_open_file_limit(),
    );
    let listener = crate::server::bind(config.bind).await?;
    let metrics_listener = match config.metrics_bind {
        Some(addr) => Some(crate::server::bind(addr).await?),
        None => None,
    };
    // On PostgreSQL the state instances must agree on (sessions, ceremonies in flight, rate
    // limits, which instance runs a scheduled job) lives in the same database.
    let shared = crate::shared::Shared::for_store(&store);
    let mut state =
        AppState::with_shared(store.clone(), vault, config.clone(), clock.clone(), shared).await?;
    // Started before the first request: a restart resumes each sink at its cursor.
    let forwarding = crate::siem::forward::spawn_with(&store, &config.siem, &state.shared);
    state.siem = forwarding.health_table();
    for sink in &config.siem {
        tracing::info!(sink = %sink.name, kind = sink.kind.as_str(), endpoint = %sink.endpoint(), "forwarding the audit trail");
    }
    tracing::info!(vault_id = state.vault.id(), "vault unsealed");
    if operators::count(&store).await? == 0 {
        let roles = Roles::new([Role::Admin]);
        let invite = operators::create_invite(
            &store,
            &state.vault,
            clock.now(),
            "system",
            NewInvite {
                name: "admin",
                roles: &roles,
                ttl_hours: config.invite_ttl_hours,
                replace_pending: true,
            },
        )
        .await?;
        println!(
            "No operator exists yet. Open this one-time admin invite within {} hours to register your passkey:\n\n    {}\n",
            config.invite_ttl_hours,
            invite.url(&config.origin_header())
        );
    }
    crate::server::spawn_sweeper(state.clone());
    crate::server::spawn_directory_sync(state.clone());
    let sending = sender.spawn_gated(state.shared.job_lock("notice-sender"));
    crate::server::spawn_metrics_upkeep();
    let metrics = metrics_listener.map(|listener| {
        let at = listener
            .local_addr()
            .map_or_else(|_| String::from("?"), |a| a.to_string());
        println!("metrics on http://{at}/metrics");
        crate::server::spawn_metrics_listener(state.clone(), listener, limits)
    });
    let bound = listener
        .local_addr()
        .map_or_else(|_| config.bind.to_string(), |a| a.to_string());
    println!(
        "seedvault {} listening on {bound} (open {})",
        env!("CARGO_PKG_VERSION"),
        config.origin_header()
    );
    crate::server::run(state, listener, shutdown, limits).await?;
    if let Some(metrics) = metrics {
        metrics.abort();
    }
    sending.abort();
    forwarding.stop().await;
    store.close().await;
    Ok(())
}
