//! `seedvault status`: what this data directory holds. Needs no key; works beside a running
//! server.

use super::{development_warning, Cli};
use crate::config::Overrides;
use crate::store::Store;
use crate::vault::open;

pub async fn run(cli: &Cli) -> anyhow::Result<()> {
    let config = cli.config(Overrides::default())?;
    let store = Store::open(&config.data_dir).await?;
    let report = crate::status::collect(&store).await?;
    println!("data directory: {}", config.data_dir.display());
    let Some(vault_id) = report.vault_id else {
        println!("vault: none yet (run `seedvault init` or `seedvault serve`)");
        return Ok(());
    };
    println!("vault id: {vault_id}");
    println!("key slots:");
    for slot in &report.slots {
        println!(
            "  {:<20} {:<12} created {}",
            slot.label,
            slot.kind,
            format_unix(slot.created_at)
        );
    }
    println!("tokens:");
    for (state, count) in &report.tokens_by_state {
        println!("  {state:<10} {count}");
    }
    println!("audit events: {}", report.audit_events);
    if report.slots.iter().any(|s| s.kind == "development") {
        println!("{}", development_warning(&config.data_dir));
    }
    let _ = open::existing_vault_id;
    Ok(())
}

/// A unix time as RFC 3339 (UTC), for listings.
pub fn format_unix(seconds: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(seconds)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| seconds.to_string())
}
