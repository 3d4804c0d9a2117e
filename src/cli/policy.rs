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
        let approval = &policy.approval;
        let four_eyes = if approval.second_operator {
            let roles: Vec<&str> = approval.approvers.iter().map(|r| r.as_str()).collect();
            format!(
                ", second operator ({}) within {} min",
                roles.join("/"),
                approval.ttl_seconds / 60
            )
        } else {
            String::new()
        };
        println!(
            "{:<16} {}{} checks, {} required, min {}, ticket {}{four_eyes}, sha256 {}",
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
