//! `seedvault purge --expired`: the retention sweep from the command line.

use clap::Args;

use super::unlock::{unlock_vault, UnlockArgs};
use super::{cli_actor, Cli};
use crate::clock::{Clock, SystemClock};
use crate::config::Overrides;
use crate::store::Store;
use crate::tokens::{lifecycle, Env};

#[derive(Debug, Args)]
pub struct PurgeArgs {
    /// Purge every escrowed seed past its retention deadline.
    #[arg(long, required = true)]
    expired: bool,
    #[command(flatten)]
    unlock: UnlockArgs,
}

pub async fn run(cli: &Cli, args: &PurgeArgs) -> anyhow::Result<()> {
    let config = cli.config(Overrides::default())?;
    let store = Store::open(&config.data_dir).await?;
    let policies = crate::policy::load_configured(&config.policies_dir)?;
    let vault = unlock_vault(&store, &args.unlock).await?;
    let env = Env {
        store: &store,
        vault: &vault,
        policies: &policies,
        retention_days: config.retention_days,
        now: SystemClock.now(),
    };
    let purged = lifecycle::purge_expired(&env, &cli_actor()).await?;
    for serial in &purged {
        println!("purged {serial} (retention deadline passed)");
    }
    println!("{} expired seed(s) purged", purged.len());
    Ok(())
}
