//! The command line (clap): one file per command group. Each command loads the config,
//! opens the store and calls into the domain; secrets come from files, stdin or prompts,
//! never from argv.

mod audit;
mod backup;
mod context;
mod directory;
mod doctor;
mod import;
mod init;
mod key;
mod migrate;
mod operator;
mod policy;
mod purge;
mod serve;
mod siem;
mod status;
mod token;
pub mod unlock;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::config::{Config, Overrides};
use crate::store::engine::DatabaseUrl;

/// A database URL as typed on the command line: it may hold a password, so its Debug output
/// shows it redacted. Parsed and checked where it is used, whose refusal shows it redacted too
/// (a clap value parser's error would echo the raw text).
#[derive(Clone)]
pub struct UrlArg(pub String);

impl std::str::FromStr for UrlArg {
    type Err = std::convert::Infallible;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Ok(Self(text.to_owned()))
    }
}

impl std::fmt::Debug for UrlArg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match crate::store::engine::PostgresUrl::parse(&self.0) {
            Ok(url) => write!(f, "{url}"),
            Err(refused) => f.write_str(&refused.shown),
        }
    }
}

#[derive(Debug, Parser)]
#[command(
    name = "seedvault",
    version,
    about = "Seed escrow and helpdesk OTP vault",
    propagate_version = true
)]
pub struct Cli {
    /// Config file (default: ./seedvault.toml when present).
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    #[arg(long, global = true, value_name = "DIR", help = crate::config::flag_help("data_dir"))]
    pub data_dir: Option<PathBuf>,
    #[arg(long, global = true, value_name = "URL", help = crate::config::flag_help("database_url"))]
    pub database_url: Option<UrlArg>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create a vault (a production vault needs a passphrase, recipient or identity slot).
    Init(init::InitArgs),
    /// Run the web server and API.
    Serve(serve::ServeArgs),
    /// Show the data directory, vault id, key slots and token counts.
    Status,
    /// Manage the key slots that unseal the vault.
    #[command(subcommand)]
    Key(key::KeyCommand),
    /// Invite, list and disable operators.
    #[command(subcommand)]
    Operator(operator::OperatorCommand),
    /// Capture and assign tokens.
    #[command(subcommand)]
    Token(token::TokenCommand),
    /// Import a seed file (Entra/Azure MFA CSV, vendor CSV, privacyIDEA CSV, PSKC, otpauth list): all rows or none.
    Import(import::ImportArgs),
    /// Sync the directory of record (owners' phone numbers and managers) from CSV or LDAP.
    #[command(subcommand)]
    Directory(directory::DirectoryCommand),
    /// Purge seeds past their retention deadline.
    Purge(purge::PurgeArgs),
    /// Validate policy files.
    #[command(subcommand)]
    Policy(PolicyCommand),
    /// Verify, anchor and export the audit trail.
    #[command(subcommand)]
    Audit(audit::AuditCommand),
    /// SIEM forwarding: sinks, cursors and lag; reset a sink's cursor.
    #[command(subcommand)]
    Siem(siem::SiemCommand),
    /// Write an age-encrypted backup of the whole vault (works while `serve` runs).
    Backup(backup::BackupArgs),
    /// Restore a backup into an empty data directory, checked before it is put in place.
    Restore(backup::RestoreArgs),
    /// Check the deployment (key slots, origin, permissions, policies, retention sweeps, audit
    /// chain, clock synchronisation, directory syncs): one line per finding and its fix; exit status 1 if any.
    Doctor,
    /// Copy a SQLite vault into an empty PostgreSQL database and verify it there (row counts,
    /// audit chain and head) before committing.
    MigrateToPostgres(migrate::MigrateArgs),
}

#[derive(Debug, Subcommand)]
pub enum PolicyCommand {
    /// Validate the policy files in DIR (default: the configured policies_dir) without starting.
    Check { dir: Option<PathBuf> },
}

impl Cli {
    /// Loads the configuration with this command line's flags on top.
    pub fn config(&self, flags: Overrides) -> anyhow::Result<Config> {
        let flags = Overrides {
            data_dir: self.data_dir.clone(),
            database_url: self.database_url.as_ref().map(|url| url.0.clone()),
            ..flags
        };
        let config = Config::load(
            self.config.as_deref(),
            |name| std::env::var(name).ok(),
            flags,
        )?;
        if let DatabaseUrl::Postgres(url) = &config.database_url {
            if let Some(why) = self.command.refusal_on_postgres() {
                anyhow::bail!("database_url names PostgreSQL ({url}), but {why}");
            }
        }
        Ok(config)
    }
}

impl Command {
    /// Why this command cannot run on a PostgreSQL vault, or `None` when it can.
    fn refusal_on_postgres(&self) -> Option<String> {
        match self {
            Self::Backup(_) | Self::Restore(_) => Some(
                "seedvault's backups are of the SQLite file: back up a PostgreSQL vault with pg_dump -Fc (or pg_basebackup and WAL archiving) and restore it with pg_restore into an empty database; `seedvault key rotate` retires the data key that older dumps' seeds are sealed under".into(),
            ),
            _ => None,
        }
    }
}

/// Opens the store `config.database_url` names: SQLite in the data directory, or the
/// PostgreSQL database (migrated at open, as SQLite is).
pub async fn open_store(config: &crate::config::Config) -> anyhow::Result<crate::store::Store> {
    Ok(match &config.database_url {
        DatabaseUrl::Sqlite => {
            crate::store::Store::open_with(&config.data_dir, config.busy_timeout()).await?
        }
        DatabaseUrl::Postgres(url) => {
            crate::store::Store::open_postgres(
                url,
                config.database_password_file.as_deref(),
                config.database_pool_size,
            )
            .await?
        }
    })
}

/// Runs the parsed command line.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    match &cli.command {
        Command::Init(args) => init::run(&cli, args).await,
        Command::Serve(args) => serve::run(&cli, args).await,
        Command::Status => status::run(&cli).await,
        Command::Key(command) => key::run(&cli, command).await,
        Command::Operator(command) => operator::run(&cli, command).await,
        Command::Token(command) => token::run(&cli, command).await,
        Command::Purge(args) => purge::run(&cli, args).await,
        Command::Directory(command) => directory::run(&cli, command).await,
        Command::Import(args) => import::run(&cli, args).await,
        Command::Policy(PolicyCommand::Check { dir }) => policy::run(&cli, dir.as_ref()),
        Command::Audit(command) => audit::run(&cli, command).await,
        Command::Siem(command) => siem::run(&cli, command).await,
        Command::Backup(args) => backup::run_backup(&cli, args).await,
        Command::Restore(args) => backup::run_restore(&cli, args).await,
        Command::Doctor => doctor::run(&cli).await,
        Command::MigrateToPostgres(args) => migrate::run(&cli, args).await,
    }
}

/// Who a CLI action is recorded as in the audit trail.
pub fn cli_actor() -> String {
    let user = std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .unwrap_or_else(|_| "unknown".into());
    format!("cli:{user}")
}

/// Sets up logging to stderr with the configured filter.
pub fn init_tracing(filter: &str, format: crate::config::LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_new(filter)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    use std::io::IsTerminal;
    let _ = match format {
        crate::config::LogFormat::Text => tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_ansi(std::io::stderr().is_terminal())
            .with_writer(std::io::stderr)
            .try_init(),
        // One JSON object per line; the request span's `request_id` rides on every line
        // logged while a request is handled.
        crate::config::LogFormat::Json => tracing_subscriber::fmt()
            .json()
            .with_current_span(true)
            .with_span_list(false)
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .try_init(),
    };
}

/// The development-slot warning, printed on every start while such a slot exists.
pub fn development_warning(data_dir: &std::path::Path) -> String {
    format!(
        "WARNING: this vault has a development key slot: anyone who can read {} can unseal every seed in it. \
         Use it only to try seedvault. For real seeds add a protected slot (`seedvault key add passphrase`) and remove \
         this one (`seedvault key remove development`), or start over with `seedvault init --production`.",
        data_dir.display()
    )
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use clap::CommandFactory;

    use super::Cli;
    use crate::config::{self, SETTINGS};

    /// Every long flag in the command tree with its help text.
    fn flags(command: &clap::Command, out: &mut Vec<(String, String)>) {
        for arg in command.get_arguments() {
            if let Some(long) = arg.get_long() {
                let help = arg.get_help().map(ToString::to_string).unwrap_or_default();
                out.push((long.to_owned(), help));
            }
        }
        for child in command.get_subcommands() {
            flags(child, out);
        }
    }

    #[test]
    fn each_flag_that_sets_a_setting_is_declared_with_it_and_shows_its_help_and_env_var() {
        let mut all = Vec::new();
        flags(&Cli::command(), &mut all);
        for setting in SETTINGS {
            let Some(flag) = setting.flag else { continue };
            let (_, help) = all
                .iter()
                .find(|(long, _)| long == flag)
                .unwrap_or_else(|| panic!("no --{flag} flag for setting {}", setting.name));
            assert!(
                help.contains(
                    setting
                        .help()
                        .trim_end_matches('.')
                        .replace('`', "")
                        .as_str()
                ) && help.contains(setting.env),
                "--{flag}: {help}"
            );
        }
        for (long, _) in &all {
            if let Some(setting) = config::setting(&long.replace('-', "_")) {
                assert_eq!(setting.flag, Some(long.as_str()), "--{long}");
            }
        }
    }

    #[test]
    fn a_password_in_a_database_url_argument_never_shows_in_the_parsed_arguments_debug_output() {
        let cli = <Cli as clap::Parser>::try_parse_from([
            "seedvault",
            "--database-url",
            "postgres://sv:hunter2-secret@db.example/vault",
            "migrate-to-postgres",
            "--from",
            "/var/lib/seedvault",
            "--to",
            "postgres://sv:hunter2-secret@db.example/vault?sslmode=sometimes",
        ])
        .unwrap();
        let shown = format!("{cli:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("sv:***@db.example/vault"), "{shown}");
    }
}
