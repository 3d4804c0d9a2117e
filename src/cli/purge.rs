//! `seedvault purge --expired`: the retention sweep from the command line.

use clap::Args;

use super::context::Unsealed;
use super::unlock::UnlockArgs;
use super::{cli_actor, Cli};
use crate::tokens::lifecycle;

#[derive(Debug, Args)]
pub struct PurgeArgs {
    /// Purge every escrowed seed past its retention deadline.
    #[arg(long, required = true)]
    expired: bool,
    #[command(flatten)]
    unlock: UnlockArgs,
}

pub async fn run(cli: &Cli, args: &PurgeArgs) -> anyhow::Result<()> {
    let vault = Unsealed::open(cli, &args.unlock).await?;
    let purged = lifecycle::purge_expired(&vault.env(), &cli_actor()).await?;
    for serial in &purged {
        println!("purged {serial} (retention deadline passed)");
    }
    println!("{} expired seed(s) purged", purged.len());
    Ok(())
}
