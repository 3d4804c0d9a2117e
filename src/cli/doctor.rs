//! `seedvault doctor`: one line per problem with the deployment and its fix; exits non-zero
//! when there is any. Reads only and needs no key, so it runs beside a running server.

use super::Cli;
use crate::clock::{Clock, SystemClock};
use crate::config::Overrides;
use crate::timesync::KernelTimeSync;

pub async fn run(cli: &Cli) -> anyhow::Result<()> {
    let config = cli.config(Overrides::default())?;
    let findings =
        crate::doctor::examine(&config, &KernelTimeSync, SystemClock.now().unix_timestamp()).await;
    for finding in &findings {
        println!("{finding}");
    }
    if findings.is_empty() {
        println!(
            "no findings for {} (backups are not checked: seedvault does not make them yet)",
            config.data_dir.display()
        );
        return Ok(());
    }
    anyhow::bail!(
        "{} finding(s) for {}",
        findings.len(),
        config.data_dir.display()
    )
}
