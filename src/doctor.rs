//! What is wrong with a deployment, for `seedvault doctor`: each finding names the problem and
//! its fix. Reads only (every write is refused, nothing is migrated or chmod-ed, see
//! [`Store::open_read_only`]), so it runs beside a live server. Every failure to look is
//! itself a finding, never an error.
//!
//! Not checked: backups (seedvault has none yet; docs/DEPLOY.md says what to copy meanwhile)
//! and whether `origin` matches what the proxy serves (the proxy's configuration is not ours
//! to read).

use std::path::Path;

use crate::audit::verify::{self, VerifyOptions};
use crate::config::Config;
use crate::store::engine::DatabaseUrl;
use crate::store::{self, Store};
use crate::timesync::TimeSyncSource;
use crate::vault::SlotKind;

/// Seeds still escrowed this long after their retention deadline mean no sweep is running:
/// the server's sweeper runs every minute ([`crate::server::spawn_sweeper`]).
pub const SWEEP_GRACE_SECONDS: i64 = 10 * 60;

/// One problem with the deployment and what to do about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// Which check found it: `data-dir`, `vault`, `clock`, `origin`, `policies`,
    /// `development-slot`, `break-glass`, `retention`, `directory` or `audit`.
    pub check: &'static str,
    pub problem: String,
    pub fix: String,
}

impl std::fmt::Display for Finding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {} — fix: {}", self.check, self.problem, self.fix)
    }
}

fn finding(check: &'static str, problem: impl Into<String>, fix: impl Into<String>) -> Finding {
    Finding {
        check,
        problem: problem.into(),
        fix: fix.into(),
    }
}

/// Runs every check against the configured deployment at unix time `now`.
pub async fn examine(config: &Config, time_sync: &dyn TimeSyncSource, now: i64) -> Vec<Finding> {
    let mut findings = Vec::new();
    check_clock(time_sync, &mut findings);
    check_origin(config, &mut findings);
    check_policies(config, &mut findings);
    let opened = match &config.database_url {
        // The data directory's file checks are SQLite's: a PostgreSQL vault's files are the
        // database server's, and its permissions and backups are checked there.
        DatabaseUrl::Postgres(url) => {
            crate::store::postgres::connect_pool(url, config.database_password_file.as_deref(), 2)
                .await
                .map(Store::from_postgres_pool)
        }
        DatabaseUrl::Sqlite => {
            if !check_data_dir(&config.data_dir, &mut findings) {
                return findings;
            }
            Store::open_read_only(&config.data_dir).await
        }
    };
    let store = match opened {
        Ok(store) => store,
        Err(e) => {
            findings.push(finding(
                "vault",
                format!("cannot open the vault's database: {e}"),
                "run doctor as the service's user (or root) with the service's --config",
            ));
            return findings;
        }
    };
    if let Err(e) = check_vault(&store, now, &mut findings).await {
        findings.push(finding(
            "vault",
            format!("cannot read the vault's database: {e}"),
            "check that the server and this binary are the same version (`seedvault --version`)",
        ));
    }
    store.close().await;
    findings
}

fn check_clock(time_sync: &dyn TimeSyncSource, findings: &mut Vec<Finding>) {
    const FIX: &str = "run an NTP client (`apt install chrony` or `systemctl enable --now systemd-timesyncd`) and wait until `timedatectl` shows the clock synchronised";
    match time_sync.read() {
        Ok(state) => {
            if let Some(problem) = state.problem() {
                findings.push(finding("clock", problem, FIX));
            }
        }
        Err(reason) => findings.push(finding(
            "clock",
            format!("cannot read the clock's synchronisation state: {reason}"),
            FIX,
        )),
    }
}

fn check_origin(config: &Config, findings: &mut Vec<Finding>) {
    if !config.origin_is_https() {
        findings.push(finding(
            "origin",
            format!(
                "origin is {}: passkeys then work only in a browser on this machine, and sessions travel without TLS",
                config.origin_header()
            ),
            "put a TLS proxy in front and set origin = \"https://vault.example.org\" (the URL browsers use) in seedvault.toml",
        ));
    }
}

fn check_policies(config: &Config, findings: &mut Vec<Finding>) {
    if let Err(e) = crate::policy::load_configured(&config.policies_dir) {
        findings.push(finding(
            "policies",
            format!("the policies do not load: {e}"),
            format!(
                "correct the file and confirm with `seedvault policy check {}`; the server refuses to start until then",
                config.policies_dir.display()
            ),
        ));
    }
}

/// Checks that the data directory exists and that neither it nor its files are open to other
/// users; false when there is no vault to look into.
fn check_data_dir(dir: &Path, findings: &mut Vec<Finding>) -> bool {
    if !dir.join(store::DATABASE_FILE).is_file() {
        findings.push(finding(
            "vault",
            format!("no vault in {}", dir.display()),
            "create one with `seedvault init --production --recipient age1…` (see docs/DEPLOY.md), or point data_dir at the vault",
        ));
        return false;
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let open_to_others = |path: &Path| {
            std::fs::symlink_metadata(path)
                .map(|m| m.permissions().mode() & 0o077 != 0)
                .unwrap_or(false)
        };
        if open_to_others(dir) {
            findings.push(finding(
                "data-dir",
                format!(
                    "{} is accessible to its group or to other users",
                    dir.display()
                ),
                format!("chmod 700 {}", dir.display()),
            ));
        }
        let mut files: Vec<_> = std::fs::read_dir(dir)
            .map(|entries| {
                entries
                    .filter_map(Result::ok)
                    .map(|e| e.path())
                    .filter(|p| p.is_file())
                    .collect()
            })
            .unwrap_or_default();
        files.sort();
        for file in files.iter().filter(|f| open_to_others(f)) {
            findings.push(finding(
                "data-dir",
                format!(
                    "{} is readable by its group or by other users",
                    file.display()
                ),
                format!("chmod 600 {}", file.display()),
            ));
        }
    }
    true
}

async fn check_vault(
    store: &Store,
    now: i64,
    findings: &mut Vec<Finding>,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let Some(meta) = store::meta::get(store).await? else {
        findings.push(finding(
            "vault",
            "the database holds no vault",
            "create one with `seedvault init --production` (see docs/DEPLOY.md)",
        ));
        return Ok(());
    };

    let slots = store::key_slots::list(store).await?;
    let has = |kind: SlotKind| slots.iter().any(|s| s.kind == kind.as_str());
    if has(SlotKind::Development) {
        findings.push(finding(
            "development-slot",
            "the vault has a development key slot: anyone who can read the data directory can unseal every seed",
            "add a protected slot (`seedvault key add identity --out FILE`) and then `seedvault key remove development`",
        ));
    }
    if !has(SlotKind::Recipient) {
        findings.push(finding(
            "break-glass",
            "no break-glass recipient slot: if the service's key is lost, so is every seed",
            "generate an age key offline (`age-keygen`), keep its secret half in a safe and add the public half with `seedvault key add recipient age1… --label break-glass`",
        ));
    }

    let overdue = store::tokens::overdue(store, now - SWEEP_GRACE_SECONDS, 1_000).await?;
    if !overdue.is_empty() {
        findings.push(finding(
            "retention",
            format!(
                "{}{} escrowed seed(s) more than {} minutes past their retention deadline: no retention sweep is running",
                if overdue.len() == 1_000 { "at least " } else { "" },
                overdue.len(),
                SWEEP_GRACE_SECONDS / 60
            ),
            "start the server (`systemctl start seedvault`), which sweeps every minute, or run `seedvault purge --expired`",
        ));
    }

    for sync in store::directory::syncs(store).await? {
        if sync.outcome != "ok" {
            findings.push(finding(
                "directory",
                format!(
                    "the last {} sync of the directory of record failed: {} — operators see the last good data",
                    sync.source, sync.message
                ),
                match sync.source.as_str() {
                    "ldap" => "fix what the message names in [directory.ldap] or on the server, then run `seedvault directory sync --ldap`",
                    _ => "fix the file as the message says and run `seedvault directory sync FILE.csv` (or upload it on the Directory page)",
                },
            ));
        }
    }

    let key = verify::parse_public_key(&data_encoding::HEXLOWER.encode(&meta.audit_public_key))?;
    let source = store.audit_source()?;
    let vault_id = meta.vault_id.clone();
    let verification = tokio::task::spawn_blocking(move || {
        verify::verify_live(&source, &vault_id, &key, &VerifyOptions::default())
    })
    .await??;
    if let Some(broken) = verification.broken {
        findings.push(finding(
            "audit",
            broken.to_string(),
            "keep the database as it is for investigation, compare with your last anchored head (`seedvault audit verify --expect-head SEQ:HASH`) and see docs/AUDIT.md",
        ));
    }
    Ok(())
}
