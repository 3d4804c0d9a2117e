//! Deployment: `seedvault doctor`'s findings (with a faked clock-synchronisation state),
//! unsealing from a systemd credential, and the Debian package installed for real.

use std::path::{Path, PathBuf};
use std::time::Duration;

use seedvault::config::{Config, Overrides};
use seedvault::doctor;
use seedvault::store::Store;
use seedvault::timesync::{FixedTimeSync, SyncState};
use seedvault::vault::open::{self, SlotRequest};
use seedvault::vault::SlotKind;
use tempfile::TempDir;

use crate::cli::{run, seedvault, start_serve, stop, text};

/// A unix time after everything the fixtures create.
fn now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

fn synchronised() -> FixedTimeSync {
    FixedTimeSync(Ok(SyncState {
        synchronised: true,
        estimated_error: Duration::from_millis(12),
    }))
}

fn recipient(kind: SlotKind) -> SlotRequest {
    SlotRequest::Recipient {
        recipient: age::x25519::Identity::generate().to_public().to_string(),
        kind,
    }
}

/// A vault as DEPLOY.md sets one up: an identity slot for the service and an offline
/// break-glass recipient, an https origin, the shipped policies.
fn well_deployed() -> Vec<(String, SlotRequest)> {
    vec![
        ("service".into(), recipient(SlotKind::Identity)),
        ("break-glass".into(), recipient(SlotKind::Recipient)),
    ]
}

struct Deployment {
    _dir: TempDir,
    data: PathBuf,
    config: Config,
}

impl Deployment {
    async fn with_slots(slots: Vec<(String, SlotRequest)>) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let store = Store::open(&data).await.unwrap();
        open::create(&store, time::OffsetDateTime::now_utc(), "system", slots)
            .await
            .unwrap();
        store.close().await;
        let config = Config::validate(Overrides {
            data_dir: Some(data.clone()),
            origin: Some("https://vault.example.org".into()),
            policies_dir: Some(Path::new(env!("CARGO_MANIFEST_DIR")).join("policies")),
            ..Default::default()
        })
        .unwrap();
        Self {
            _dir: dir,
            data,
            config,
        }
    }

    async fn findings_with(&self, sync: &FixedTimeSync) -> Vec<doctor::Finding> {
        doctor::examine(&self.config, sync, now()).await
    }

    /// The checks that found something, in the order doctor prints them.
    async fn checks(&self) -> Vec<&'static str> {
        self.findings_with(&synchronised())
            .await
            .into_iter()
            .map(|f| f.check)
            .collect()
    }

    fn db(&self) -> rusqlite::Connection {
        rusqlite::Connection::open(self.data.join("seedvault.db")).unwrap()
    }
}

#[tokio::test]
async fn a_vault_deployed_as_the_guide_says_has_no_findings() {
    let deployment = Deployment::with_slots(well_deployed()).await;
    let findings = deployment.findings_with(&synchronised()).await;
    assert!(findings.is_empty(), "{findings:?}");
}

#[tokio::test]
async fn doctor_flags_a_development_slot_and_a_vault_without_a_break_glass_recipient() {
    let development =
        Deployment::with_slots(vec![("development".into(), SlotRequest::Development)]).await;
    assert_eq!(
        development.checks().await,
        ["development-slot", "break-glass"]
    );

    let no_break_glass =
        Deployment::with_slots(vec![("service".into(), recipient(SlotKind::Identity))]).await;
    let findings = no_break_glass.findings_with(&synchronised()).await;
    assert_eq!(findings.len(), 1, "{findings:?}");
    assert_eq!(findings[0].check, "break-glass");
    assert!(findings[0].fix.contains("seedvault key add recipient"));
}

#[tokio::test]
async fn doctor_flags_an_origin_that_is_not_https() {
    let mut deployment = Deployment::with_slots(well_deployed()).await;
    deployment.config.origin = "http://localhost:8080".parse().unwrap();
    let findings = deployment.findings_with(&synchronised()).await;
    assert_eq!(findings.len(), 1, "{findings:?}");
    assert_eq!(findings[0].check, "origin");
    assert!(findings[0].problem.contains("http://localhost:8080"));
    assert!(findings[0].fix.contains("origin = \"https://"));
}

#[cfg(unix)]
#[tokio::test]
async fn doctor_flags_a_data_directory_or_file_open_to_others_and_leaves_the_modes_alone() {
    use std::os::unix::fs::PermissionsExt;
    let deployment = Deployment::with_slots(well_deployed()).await;
    let db = deployment.data.join("seedvault.db");
    std::fs::set_permissions(&deployment.data, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(&db, std::fs::Permissions::from_mode(0o644)).unwrap();

    let findings = deployment.findings_with(&synchronised()).await;
    let fixes: Vec<&str> = findings.iter().map(|f| f.fix.as_str()).collect();
    assert_eq!(
        fixes,
        [
            format!("chmod 700 {}", deployment.data.display()),
            format!("chmod 600 {}", db.display()),
        ],
        "{findings:?}"
    );
    // Read-only: it reports and does not repair, and leaves no file behind (a WAL or shm
    // made by root would lock the service's user out of its own database).
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&deployment.data), 0o755);
    assert_eq!(mode(&db), 0o644);
    // (sqlx finishes closing a connection on its worker thread: give it a moment.)
    let leftovers = || {
        ["seedvault.db-wal", "seedvault.db-shm"]
            .iter()
            .any(|f| deployment.data.join(f).exists())
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while leftovers() && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(!leftovers(), "doctor left the WAL or shm behind");
    assert_eq!(deployment.findings_with(&synchronised()).await, findings);
}

#[tokio::test]
async fn doctor_flags_policies_that_do_not_load() {
    let mut deployment = Deployment::with_slots(well_deployed()).await;
    let policies = deployment._dir.path().join("policies");
    std::fs::create_dir(&policies).unwrap();
    std::fs::write(
        policies.join("standard.toml"),
        "name = \"standard\"\nchecks = 3\n",
    )
    .unwrap();
    deployment.config.policies_dir = policies;
    let findings = deployment.findings_with(&synchronised()).await;
    assert_eq!(findings.len(), 1, "{findings:?}");
    assert_eq!(findings[0].check, "policies");
    assert!(
        findings[0].problem.contains("standard.toml"),
        "{findings:?}"
    );
    assert!(findings[0].fix.contains("seedvault policy check"));
}

#[tokio::test]
async fn doctor_flags_seeds_left_past_their_retention_deadline_as_a_sweep_that_is_not_running() {
    let deployment = Deployment::with_slots(well_deployed()).await;
    let store = Store::open(&deployment.data).await.unwrap();
    let token =
        |serial: &'static str, retention_deadline: i64| seedvault::store::tokens::NewTokenRow {
            token_id: serial,
            serial,
            owner: None,
            display_name: None,
            manufacturer: None,
            model: None,
            algorithm: "SHA1",
            digits: 6,
            period: 30,
            policy: "standard",
            sealed_seed: &[0; 48],
            captured_by: "test",
            captured_at: now() - 40 * 86_400,
            retention_deadline,
        };
    // Due a minute ago: the next sweep (every minute) takes it; not a finding yet.
    seedvault::store::tokens::insert(store.pool().unwrap(), &token("DUE-1", now() - 60))
        .await
        .unwrap();
    assert!(deployment.checks().await.is_empty());

    seedvault::store::tokens::insert(store.pool().unwrap(), &token("LATE-1", now() - 3_600))
        .await
        .unwrap();
    store.close().await;
    let findings = deployment.findings_with(&synchronised()).await;
    assert_eq!(findings.len(), 1, "{findings:?}");
    assert_eq!(findings[0].check, "retention");
    assert!(
        findings[0].problem.starts_with("1 escrowed seed"),
        "{findings:?}"
    );
    assert!(findings[0].fix.contains("seedvault purge --expired"));
}

#[tokio::test]
async fn doctor_flags_an_audit_chain_that_no_longer_verifies() {
    let deployment = Deployment::with_slots(well_deployed()).await;
    let db = deployment.db();
    db.execute_batch(
        "DROP TRIGGER audit_events_no_update;
         UPDATE audit_events SET actor = 'someone-else' WHERE seq = 1;",
    )
    .unwrap();
    drop(db);
    let findings = deployment.findings_with(&synchronised()).await;
    assert_eq!(findings.len(), 1, "{findings:?}");
    assert_eq!(findings[0].check, "audit");
    assert!(findings[0].problem.contains("seq 1"), "{findings:?}");
}

#[tokio::test]
async fn doctor_flags_an_unsynchronised_or_imprecise_clock_and_one_it_cannot_read() {
    let deployment = Deployment::with_slots(well_deployed()).await;
    let cases = [
        (
            FixedTimeSync(Ok(SyncState {
                synchronised: false,
                estimated_error: Duration::ZERO,
            })),
            "not synchronised",
        ),
        (
            FixedTimeSync(Ok(SyncState {
                synchronised: true,
                estimated_error: Duration::from_secs(8),
            })),
            "estimated error is 8.0 s",
        ),
        (
            FixedTimeSync(Err("adjtimex failed: EPERM".into())),
            "cannot read the clock's synchronisation state",
        ),
    ];
    for (sync, expected) in cases {
        let findings = deployment.findings_with(&sync).await;
        assert_eq!(findings.len(), 1, "{findings:?}");
        assert_eq!(findings[0].check, "clock");
        assert!(findings[0].problem.contains(expected), "{findings:?}");
        assert!(findings[0].fix.contains("chrony"));
    }
}

#[tokio::test]
async fn doctor_reports_a_missing_vault_without_creating_one() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("nowhere");
    let config = Config::validate(Overrides {
        data_dir: Some(data.clone()),
        origin: Some("https://vault.example.org".into()),
        policies_dir: Some(Path::new(env!("CARGO_MANIFEST_DIR")).join("policies")),
        ..Default::default()
    })
    .unwrap();
    let findings = doctor::examine(&config, &synchronised(), now()).await;
    assert_eq!(findings.len(), 1, "{findings:?}");
    assert_eq!(findings[0].check, "vault");
    assert!(findings[0].fix.contains("seedvault init --production"));
    assert!(!data.exists(), "doctor created {}", data.display());
}

#[test]
fn the_doctor_command_prints_one_line_per_finding_with_its_fix_and_exits_1() {
    let dir = tempfile::tempdir().unwrap();
    assert!(run(dir.path(), &["init"]).status.success());
    let output = run(dir.path(), &["doctor"]);
    assert_eq!(output.status.code(), Some(1), "{}", text(&output.stderr));
    let stdout = text(&output.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    // The clock line depends on the machine running the test; the vault's are fixed.
    for check in ["origin", "development-slot", "break-glass"] {
        assert!(
            lines.iter().any(|l| l.starts_with(&format!("{check}: "))),
            "{check}: {stdout}"
        );
    }
    assert!(lines.iter().all(|l| l.contains(" — fix: ")), "{stdout}");
    assert!(
        text(&output.stderr).contains(&format!("{} finding(s)", lines.len())),
        "{}",
        text(&output.stderr)
    );

    // `status` reports the clock too, whatever its state on this machine.
    let status = text(&run(dir.path(), &["status"]).stdout);
    assert!(status.lines().any(|l| l.starts_with("clock: ")), "{status}");
}

#[test]
fn serve_unseals_with_the_identity_systemd_hands_over_as_a_credential() {
    let dir = tempfile::tempdir().unwrap();
    let credentials = dir.path().join("credentials");
    std::fs::create_dir(&credentials).unwrap();
    let identity = credentials.join("seedvault.identity");
    let output = run(
        dir.path(),
        &[
            "init",
            "--production",
            "--identity-out",
            identity.to_str().unwrap(),
        ],
    );
    assert!(output.status.success(), "{}", text(&output.stderr));

    let (child, _) = start_serve(
        dir.path(),
        &["--production"],
        &[("CREDENTIALS_DIRECTORY", credentials.to_str().unwrap())],
    );
    let output = stop(child);
    assert!(output.status.success(), "{}", text(&output.stderr));

    // Without the credential there is nothing to unseal with.
    let output = seedvault(dir.path())
        .args(["serve", "--production", "--bind", "127.0.0.1:0"])
        .env("CREDENTIALS_DIRECTORY", dir.path().join("empty"))
        .output()
        .unwrap();
    assert!(!output.status.success());
}

/// The exposure score docs/DEPLOY.md states is what `systemd-analyze security` computes for the
/// unit (lower is better): a weakened unit, or a doc that claims too much, fails here.
#[test]
fn the_units_exposure_score_is_no_worse_than_deploy_md_states() {
    let unit = concat!(env!("CARGO_MANIFEST_DIR"), "/packaging/seedvault.service");
    let Ok(output) = std::process::Command::new("systemd-analyze")
        .args(["security", "--offline=true", unit])
        .output()
    else {
        return eprintln!("SKIPPED the exposure score test: systemd-analyze is not installed");
    };
    let report = format!("{}{}", text(&output.stdout), text(&output.stderr));
    let Some(score) = report
        .split("Overall exposure level for seedvault.service: ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|score| score.parse::<f64>().ok())
    else {
        return eprintln!(
            "SKIPPED the exposure score test: this systemd-analyze cannot rate a unit file offline: {report}"
        );
    };
    let doc = include_str!("../../docs/DEPLOY.md");
    let stated: f64 = doc
        .split("rates the unit **")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|score| score.parse().ok())
        .expect("docs/DEPLOY.md states the score as 'rates the unit **N.N OK**'");
    assert!(
        score <= stated,
        "systemd-analyze security rates the unit {score}, DEPLOY.md says {stated}:\n{report}"
    );
}

/// Installs `target/debian/seedvault_VERSION_ARCH.deb` (built by `.ci/run` with `cargo deb`)
/// with dpkg, checks what it put where, and purges it again. Needs root and dpkg, and refuses
/// to touch a machine where seedvault is already installed.
#[test]
fn the_debian_package_installs_a_verified_unit_its_user_and_conffiles_and_purges_cleanly() {
    let skip = |why: &str| eprintln!("SKIPPED the Debian package test: {why}");
    let target = Path::new(env!("CARGO_BIN_EXE_seedvault"))
        .parent()
        .and_then(Path::parent)
        .unwrap()
        .to_path_buf();
    let deb = target.join(format!(
        "debian/seedvault_{}_{}.deb",
        env!("CARGO_PKG_VERSION"),
        dpkg_architecture()
    ));
    if !is_root() {
        return skip("not running as root (dpkg -i needs it; .ci/run runs as root)");
    }
    if !command_succeeds("dpkg", &["--version"]) {
        return skip("dpkg is not installed");
    }
    if !deb.is_file() {
        return skip(&format!(
            "{} is missing: build it first with `cargo deb` (.ci/run does)",
            deb.display()
        ));
    }
    if command_succeeds("dpkg", &["-s", "seedvault"]) {
        return skip("a seedvault package is already installed on this machine");
    }

    let install = std::process::Command::new("dpkg")
        .arg("-i")
        .arg(&deb)
        .output()
        .unwrap();
    let purge = Purge;
    assert!(install.status.success(), "{}", text(&install.stderr));

    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let mode = |p: &str| std::fs::metadata(p).unwrap().permissions().mode() & 0o7777;
    assert_eq!(mode("/usr/bin/seedvault"), 0o755);
    assert_eq!(mode("/usr/lib/systemd/system/seedvault.service"), 0o644);
    assert_eq!(mode("/etc/seedvault/seedvault.toml"), 0o644);
    for policy in ["standard", "high-risk"] {
        assert_eq!(
            mode(&format!("/etc/seedvault/policies/{policy}.toml")),
            0o644
        );
    }
    // The service user owns the data directory, alone.
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap();
    let uid: u32 = passwd
        .lines()
        .find_map(|l| l.strip_prefix("seedvault:"))
        .and_then(|rest| rest.split(':').nth(1))
        .expect("the package creates the seedvault user")
        .parse()
        .unwrap();
    let data = std::fs::metadata("/var/lib/seedvault").unwrap();
    assert!(data.is_dir());
    assert_eq!(data.permissions().mode() & 0o7777, 0o700);
    assert_eq!(data.uid(), uid);

    let conffiles = command_output("dpkg-query", &["-W", "-f=${Conffiles}", "seedvault"]);
    for file in [
        "/etc/seedvault/seedvault.toml",
        "/etc/seedvault/policies/standard.toml",
        "/etc/seedvault/policies/high-risk.toml",
    ] {
        assert!(
            conffiles.contains(file),
            "{file} is a conffile: {conffiles}"
        );
    }

    let version = command_output("/usr/bin/seedvault", &["--version"]);
    assert_eq!(
        version.trim(),
        format!("seedvault {}", env!("CARGO_PKG_VERSION"))
    );
    // The shipped config points at the shipped policies, and they load.
    let check = command_output(
        "/usr/bin/seedvault",
        &[
            "--config",
            "/etc/seedvault/seedvault.toml",
            "policy",
            "check",
        ],
    );
    assert!(
        check.contains("/etc/seedvault/policies: 2 policies OK"),
        "{check}"
    );

    if command_succeeds("systemd-analyze", &["--version"]) {
        let verify = std::process::Command::new("systemd-analyze")
            .args(["verify", "/usr/lib/systemd/system/seedvault.service"])
            .output()
            .unwrap();
        assert!(
            verify.status.success() && !text(&verify.stderr).contains("seedvault"),
            "systemd-analyze verify: {}{}",
            text(&verify.stdout),
            text(&verify.stderr)
        );
    } else {
        skip("systemd-analyze is not installed: the unit was not verified");
    }

    drop(purge);
    assert!(!Path::new("/usr/bin/seedvault").exists());
    assert!(
        !Path::new("/etc/seedvault").exists(),
        "purge removes conffiles"
    );
    assert!(!command_succeeds("dpkg", &["-s", "seedvault"]));
}

/// Purges the package however the test ends, so a failed assertion leaves no install behind.
struct Purge;

impl Drop for Purge {
    fn drop(&mut self) {
        let _ = std::process::Command::new("dpkg")
            .args(["--purge", "seedvault"])
            .output();
        // The data directory is kept on purge (it would hold a vault); this one is empty.
        let _ = std::fs::remove_dir("/var/lib/seedvault");
    }
}

fn is_root() -> bool {
    command_output("id", &["-u"]).trim() == "0"
}

fn dpkg_architecture() -> String {
    let arch = command_output("dpkg", &["--print-architecture"]);
    if arch.trim().is_empty() {
        "amd64".into()
    } else {
        arch.trim().to_owned()
    }
}

fn command_succeeds(program: &str, args: &[&str]) -> bool {
    std::process::Command::new(program)
        .args(args)
        .output()
        .is_ok_and(|o| o.status.success())
}

fn command_output(program: &str, args: &[&str]) -> String {
    std::process::Command::new(program)
        .args(args)
        .output()
        .map(|o| text(&o.stdout))
        .unwrap_or_default()
}
