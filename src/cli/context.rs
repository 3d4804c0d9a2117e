//! What commands that act on tokens need: config, store, policies and the unsealed vault.

use super::unlock::{unlock_vault, UnlockArgs};
use super::Cli;
use crate::clock::{Clock, SystemClock};
use crate::config::{Config, Overrides};
use crate::policy::PolicySet;
use crate::store::Store;
use crate::tokens::Env;
use crate::vault::Vault;

pub struct Unsealed {
    pub config: Config,
    pub store: Store,
    pub policies: PolicySet,
    pub vault: Vault,
}

impl Unsealed {
    /// Loads config and policies, opens the store and unseals the vault.
    pub async fn open(cli: &Cli, unlock: &UnlockArgs) -> anyhow::Result<Self> {
        let config = cli.config(Overrides::default())?;
        let store = super::open_store(&config).await?;
        let policies = crate::policy::load_configured(&config.policies_dir)?;
        let vault = unlock_vault(&store, unlock).await?;
        Ok(Self {
            config,
            store,
            policies,
            vault,
        })
    }

    /// The token domain's environment, at the current time.
    pub fn env(&self) -> Env<'_> {
        Env {
            store: &self.store,
            vault: &self.vault,
            policies: &self.policies,
            retention_days: self.config.retention_days,
            reveal_windows: self.config.reveal_windows(),
            now: SystemClock.now(),
        }
    }
}
