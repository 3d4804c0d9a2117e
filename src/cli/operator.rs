//! `seedvault operator invite|list|disable`: works beside a running server (SQLite's busy
//! timeout serialises the writes); each change is audited.

use clap::Subcommand;

use super::unlock::{unlock_vault, UnlockArgs};
use super::{cli_actor, Cli};
use crate::clock::{Clock, SystemClock};
use crate::config::Overrides;
use crate::operators::{self, NewInvite, OperatorChange, Roles};

#[derive(Debug, Subcommand)]
pub enum OperatorCommand {
    /// Make a one-time invite URL for a new operator.
    Invite {
        name: String,
        /// Roles, comma-separated: admin, provisioner, helpdesk, auditor.
        #[arg(long, value_name = "ROLE[,ROLE…]", required = true)]
        role: String,
        #[command(flatten)]
        unlock: UnlockArgs,
    },
    /// List operators with their roles and state.
    List,
    /// Disable an operator; their sessions end at once.
    Disable {
        name: String,
        #[command(flatten)]
        unlock: UnlockArgs,
    },
}

pub async fn run(cli: &Cli, command: &OperatorCommand) -> anyhow::Result<()> {
    let config = cli.config(Overrides::default())?;
    let store = super::open_store(&config).await?;
    match command {
        OperatorCommand::Invite { name, role, unlock } => {
            let roles = Roles::parse_list(role)?;
            let vault = unlock_vault(&store, unlock).await?;
            let invite = operators::create_invite(
                &store,
                &vault,
                SystemClock.now(),
                &cli_actor(),
                NewInvite {
                    name,
                    roles: &roles,
                    ttl_hours: config.invite_ttl_hours,
                    replace_pending: false,
                },
            )
            .await?;
            println!(
                "invite for {} ({}), valid for {} hours, works once:",
                invite.name,
                roles.to_stored(),
                config.invite_ttl_hours
            );
            println!("{}", invite.url(&config.origin_header()));
        }
        OperatorCommand::List => {
            let all = operators::list(&store).await?;
            if all.is_empty() {
                println!("no operators yet");
            }
            for (op, credentials) in all {
                println!(
                    "{:<24} {:<36} {:<9} passkeys: {}",
                    op.name,
                    op.roles.to_stored(),
                    if op.disabled { "disabled" } else { "enabled" },
                    credentials
                );
            }
        }
        OperatorCommand::Disable { name, unlock } => {
            let vault = unlock_vault(&store, unlock).await?;
            let change = OperatorChange {
                disabled: Some(true),
                ..Default::default()
            };
            operators::update(
                &store,
                &vault,
                SystemClock.now(),
                &cli_actor(),
                None,
                name,
                change,
            )
            .await?;
            println!("disabled {name}; their sessions have ended");
        }
    }
    Ok(())
}
