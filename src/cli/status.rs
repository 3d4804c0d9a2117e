//! `seedvault status`: what this data directory holds. Needs no key; works beside a running
//! server.

use super::{development_warning, Cli};
use crate::clock::{Clock, SystemClock};
use crate::config::Overrides;
use crate::timesync::{KernelTimeSync, TimeSyncSource};

pub async fn run(cli: &Cli) -> anyhow::Result<()> {
    let config = cli.config(Overrides::default())?;
    let store = super::open_store(&config).await?;
    let report = crate::status::collect(&store, SystemClock.now().unix_timestamp()).await?;
    println!("data directory: {}", config.data_dir.display());
    println!("clock: {}", clock_line(&KernelTimeSync));
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
    let post = report.in_transit;
    println!(
        "in the post: {} in transit, {} late (expected date passed), {} reaching retention within 7 days",
        post.in_transit, post.late, post.nearing_retention
    );
    println!("directory of record:");
    for line in crate::directory::status(&store).await?.lines() {
        println!("  {line}");
    }
    for line in super::siem::status_lines(&store, &config.siem).await? {
        println!("{line}");
    }
    if !report.due_soon.is_empty() {
        println!(
            "seeds reaching their retention deadline within 7 days (purged automatically then):"
        );
        for (serial, owner, deadline) in &report.due_soon {
            println!(
                "  {serial:<20} {:<30} {}",
                owner.as_deref().unwrap_or("(unassigned)"),
                format_unix(*deadline)
            );
        }
    }
    if report.slots.iter().any(|s| s.kind == "development") {
        println!("{}", development_warning(&config.data_dir));
    }
    Ok(())
}

/// The clock's synchronisation state in a few words; codes are wrong when it is off.
pub fn clock_line(source: &dyn TimeSyncSource) -> String {
    match source.read() {
        Ok(state) => match state.problem() {
            None => format!(
                "synchronised (estimated error {} ms)",
                state.estimated_error.as_millis()
            ),
            Some(problem) => format!("{problem} (see `seedvault doctor`)"),
        },
        Err(reason) => format!("unknown ({reason})"),
    }
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

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::timesync::{FixedTimeSync, SyncState};

    #[test]
    fn status_says_whether_the_clock_is_synchronised() {
        let line = |synchronised, error_ms| {
            clock_line(&FixedTimeSync(Ok(SyncState {
                synchronised,
                estimated_error: Duration::from_millis(error_ms),
            })))
        };
        assert_eq!(line(true, 250), "synchronised (estimated error 250 ms)");
        assert!(line(false, 0).starts_with("the system clock is not synchronised"));
        assert!(line(true, 9_000).contains("estimated error is 9.0 s"));
        assert_eq!(
            clock_line(&FixedTimeSync(Err("no adjtimex".into()))),
            "unknown (no adjtimex)"
        );
    }
}
