//! `seedvault policy check [DIR]`: validate policy files without starting the server.

use std::path::PathBuf;

use super::Cli;
use crate::config::Overrides;

pub fn run(cli: &Cli, dir: Option<&PathBuf>) -> anyhow::Result<()> {
    let dir = match dir {
        Some(dir) => dir.clone(),
        None => cli.config(Overrides::default())?.policies_dir,
    };
    let set = crate::policy::load_dir(&dir)?;
    for policy in set.all() {
        println!(
            "{:<16} {}{} checks, {} required, min {}, ticket {}, sha256 {}",
            policy.name,
            if policy.default { "(default) " } else { "" },
            policy.checks.len(),
            policy.checks.iter().filter(|c| c.required).count(),
            policy.min_checks,
            if policy.ticket_required {
                "required"
            } else {
                "optional"
            },
            &policy.content_hash[..16]
        );
    }
    println!("{}: {} policies OK", dir.display(), set.all().len());
    Ok(())
}
