//! `seedvault siem status` and `seedvault siem reset`: what each configured SIEM sink has
//! acknowledged and how far behind it is; moving a cursor after a restore. Works beside a
//! running server (reads the store; the reset is one audited write).

use clap::{Args, Subcommand};

use super::unlock::{unlock_vault, UnlockArgs};
use super::Cli;
use crate::clock::{Clock, SystemClock};
use crate::config::Overrides;
use crate::store::Store;

#[derive(Debug, Subcommand)]
pub enum SiemCommand {
    /// List the configured sinks with their cursor (last acknowledged seq) and lag.
    Status,
    /// Move a sink's cursor (default: to the audit head), e.g. after restoring a backup left
    /// it ahead of the head; audited as siem.cursor_reset.
    Reset(ResetArgs),
}

#[derive(Debug, Args)]
pub struct ResetArgs {
    /// The sink's name, as in its [[siem]] table.
    sink: String,
    /// The seq the sink counts as acknowledged; the next event it receives is the one after.
    #[arg(long)]
    to: Option<i64>,
    #[command(flatten)]
    unlock: UnlockArgs,
}

pub async fn run(cli: &Cli, command: &SiemCommand) -> anyhow::Result<()> {
    let config = cli.config(Overrides::default())?;
    let store = super::open_store(&config).await?;
    match command {
        SiemCommand::Status => {
            for line in status_lines(&store, &config.siem).await? {
                println!("{line}");
            }
        }
        SiemCommand::Reset(args) => {
            let vault = unlock_vault(&store, &args.unlock).await?;
            let to = crate::siem::reset(
                &store,
                &vault,
                &config.siem,
                &super::cli_actor(),
                &args.sink,
                args.to,
                SystemClock.now(),
            )
            .await?;
            println!(
                "sink {}: cursor set to {to}; forwarding resumes with event {}",
                args.sink,
                to + 1
            );
        }
    }
    store.close().await;
    Ok(())
}

/// One line per configured sink, for `siem status` and `status`.
pub async fn status_lines(
    store: &Store,
    sinks: &[crate::siem::Sink],
) -> anyhow::Result<Vec<String>> {
    if sinks.is_empty() {
        return Ok(vec![
            "SIEM forwarding: no [[siem]] sink configured".to_owned()
        ]);
    }
    let lags = crate::siem::lag(store, sinks, SystemClock.now()).await?;
    let mut lines = vec![format!(
        "{:<16} {:<11} {:>12} {:>12} {:>10}  endpoint",
        "sink", "kind", "cursor", "lag events", "lag s"
    )];
    for (sink, lag) in sinks.iter().zip(&lags) {
        lines.push(format!(
            "{:<16} {:<11} {:>12} {:>12} {:>10.0}  {}",
            sink.name,
            sink.kind.as_str(),
            lag.acked_seq,
            lag.events,
            lag.seconds,
            sink.endpoint()
        ));
        if lag.cursor_ahead {
            lines.push(format!(
                "  ! cursor {} is ahead of the audit head {}: this vault was restored from an older backup and forwarding to {} is stopped — run `seedvault siem reset {}` (see docs/OBSERVABILITY.md)",
                lag.acked_seq, lag.head_seq, sink.name, sink.name
            ));
        }
    }
    Ok(lines)
}
