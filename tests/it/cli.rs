//! The binary as an operator uses it: start-up on a fresh directory, production rules,
//! unsealing, key slots, and the one-line errors for bad input.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

pub(crate) fn seedvault(dir: &Path) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_seedvault"));
    command.current_dir(dir).stdin(Stdio::null());
    for (name, _) in std::env::vars() {
        if name.starts_with("SEEDVAULT_") {
            command.env_remove(name);
        }
    }
    // A test server's directory on PostgreSQL: its database goes with it.
    if let Some(url) = crate::common::database_url_of(dir) {
        command.env("SEEDVAULT_DATABASE_URL", url);
    }
    command
}

pub(crate) fn run(dir: &Path, args: &[&str]) -> Output {
    seedvault(dir).args(args).output().unwrap()
}

pub(crate) fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Starts `serve` on a free port, returns the child and the address it printed.
pub(crate) fn start_serve(
    dir: &Path,
    extra: &[&str],
    env: &[(&str, &str)],
) -> (std::process::Child, String) {
    let mut command = seedvault(dir);
    command
        .args(["serve", "--bind", "127.0.0.1:0"])
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in env {
        command.env(k, v);
    }
    let mut child = command.spawn().unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        let Some(Ok(line)) = lines.next() else { break };
        if let Some(rest) = line.split(" listening on ").nth(1) {
            let addr = rest.split_whitespace().next().unwrap().to_owned();
            std::thread::spawn(move || for _ in lines {});
            return (child, addr);
        }
    }
    let _ = child.kill();
    let output = child.wait_with_output().unwrap();
    panic!("serve did not start: {}", text(&output.stderr));
}

pub(crate) fn stop(mut child: std::process::Child) -> Output {
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if child.try_wait().unwrap().is_some() {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    child.wait_with_output().unwrap()
}

fn http_get(addr: &str, path: &str) -> String {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    response
}

#[test]
fn serve_on_a_fresh_directory_creates_a_development_vault_warns_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let (child, addr) = start_serve(dir.path(), &[], &[]);
    let health = http_get(&addr, "/healthz");
    assert!(health.starts_with("HTTP/1.1 200"), "{health}");
    assert!(health.contains("\"status\":\"ok\""), "{health}");
    let output = stop(child);
    assert!(
        output.status.success(),
        "graceful stop: {:?}",
        output.status
    );
    let stderr = text(&output.stderr);
    assert!(stderr.contains("development key slot"), "{stderr}");
    assert!(dir.path().join("seedvault-data/seedvault.db").exists());

    // The warning comes back on every start.
    let (child, _) = start_serve(dir.path(), &[], &[]);
    assert!(text(&stop(child).stderr).contains("development"));

    let status = run(dir.path(), &["status"]);
    let out = text(&status.stdout);
    assert!(status.status.success());
    assert!(
        out.contains("vault id: ") && out.contains("development") && out.contains("escrowed   0"),
        "{out}"
    );
    assert_eq!(
        out.matches("WARNING").count(),
        1,
        "status warns about the development slot once: {out}"
    );
}

#[test]
fn serve_prints_a_one_time_admin_invite_while_no_operator_exists() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = seedvault(dir.path())
        .args(["serve", "--bind", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let invite = lines
        .by_ref()
        .map_while(Result::ok)
        .find(|l| l.contains("/invite/"))
        .unwrap();
    std::thread::spawn(move || for _ in lines {});
    let token = invite
        .trim()
        .strip_prefix("http://localhost:8080/invite/")
        .unwrap();
    assert!(token.len() >= 22, "at least 128 bits: {token}");
    assert!(token
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'));
    stop(child);
    let db = std::fs::read(dir.path().join("seedvault-data/seedvault.db")).unwrap();
    assert!(
        !db.windows(token.len()).any(|w| w == token.as_bytes()),
        "only the hash is stored"
    );
}

#[test]
fn production_mode_refuses_a_development_slot_and_a_missing_vault() {
    let dir = tempfile::tempdir().unwrap();
    let output = run(
        dir.path(),
        &["serve", "--production", "--bind", "127.0.0.1:0"],
    );
    assert!(!output.status.success());
    assert!(
        text(&output.stderr).contains("seedvault init --production"),
        "{}",
        text(&output.stderr)
    );

    assert!(run(dir.path(), &["init"]).status.success());
    let output = run(
        dir.path(),
        &["serve", "--production", "--bind", "127.0.0.1:0"],
    );
    assert!(!output.status.success());
    let stderr = text(&output.stderr);
    assert!(
        stderr.contains("development key slot") && stderr.contains("--production"),
        "{stderr}"
    );
    assert_eq!(stderr.trim().lines().count(), 1, "one-line error: {stderr}");
}

#[test]
fn a_production_vault_unseals_with_its_identity_and_refuses_a_wrong_key() {
    let dir = tempfile::tempdir().unwrap();
    let identity = dir.path().join("id.age");
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
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(&identity).unwrap().permissions(),
    );
    assert_eq!(mode & 0o077, 0, "identity file is private");

    // No key supplied and no terminal: a clear refusal.
    let output = run(
        dir.path(),
        &["serve", "--production", "--bind", "127.0.0.1:0"],
    );
    assert!(!output.status.success());
    assert!(
        text(&output.stderr).contains("--identity"),
        "{}",
        text(&output.stderr)
    );

    // A stranger's identity.
    let stranger = dir.path().join("stranger.age");
    std::fs::write(
        &stranger,
        "AGE-SECRET-KEY-1GFPYYSJZGFPYYSJZGFPYYSJZGFPYYSJZGFPYYSJZGFPYYSJZGFPQ4EGAEX\n",
    )
    .unwrap();
    let output = run(
        dir.path(),
        &[
            "serve",
            "--production",
            "--bind",
            "127.0.0.1:0",
            "--identity",
            stranger.to_str().unwrap(),
        ],
    );
    assert!(!output.status.success());
    let stderr = text(&output.stderr);
    assert!(stderr.contains("none of the key slots opens"), "{stderr}");

    // A missing identity file.
    let output = run(
        dir.path(),
        &["serve", "--production", "--identity", "/nonexistent/id.age"],
    );
    assert!(!output.status.success());
    assert!(
        text(&output.stderr).contains("cannot read identity file /nonexistent/id.age"),
        "{}",
        text(&output.stderr)
    );

    // The right one.
    let (child, addr) = start_serve(
        dir.path(),
        &["--production", "--identity", identity.to_str().unwrap()],
        &[],
    );
    assert!(http_get(&addr, "/healthz").starts_with("HTTP/1.1 200"));
    let output = stop(child);
    assert!(!text(&output.stderr).contains("development key slot"));
}

#[test]
fn a_passphrase_slot_unseals_from_the_environment_and_a_wrong_passphrase_exits_non_zero() {
    let dir = tempfile::tempdir().unwrap();
    let pass = dir.path().join("pass");
    std::fs::write(&pass, "correct horse battery staple\n").unwrap();
    let output = run(
        dir.path(),
        &[
            "init",
            "--production",
            "--passphrase-file",
            pass.to_str().unwrap(),
        ],
    );
    assert!(output.status.success(), "{}", text(&output.stderr));

    let output = seedvault(dir.path())
        .args(["serve", "--production", "--bind", "127.0.0.1:0"])
        .env("SEEDVAULT_PASSPHRASE", "wrong horse")
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(
        text(&output.stderr).contains("check the passphrase"),
        "{}",
        text(&output.stderr)
    );

    let (child, _) = start_serve(
        dir.path(),
        &["--production"],
        &[("SEEDVAULT_PASSPHRASE", "correct horse battery staple")],
    );
    // The running server no longer carries the passphrase in its environment, not even in the
    // block the kernel shows other readers.
    #[cfg(target_os = "linux")]
    {
        let environ = std::fs::read(format!("/proc/{}/environ", child.id())).unwrap();
        assert!(
            !String::from_utf8_lossy(&environ).contains("correct horse"),
            "the passphrase is still in /proc/PID/environ"
        );
    }
    assert!(stop(child).status.success());
}

#[cfg(target_os = "linux")]
#[test]
fn the_ldap_bind_password_is_gone_from_the_servers_environment_once_it_started() {
    let dir = tempfile::tempdir().unwrap();
    assert!(run(dir.path(), &["init"]).status.success());
    let (child, _) = start_serve(
        dir.path(),
        &[],
        &[(
            "SEEDVAULT_DIRECTORY_LDAP_BIND_PASSWORD",
            "ldap-bind-secret-4711",
        )],
    );
    let environ = std::fs::read(format!("/proc/{}/environ", child.id())).unwrap();
    let environ = String::from_utf8_lossy(&environ).into_owned();
    assert!(stop(child).status.success());
    assert!(
        !environ.contains("ldap-bind-secret-4711"),
        "the LDAP bind password is still in /proc/PID/environ"
    );
}

#[test]
fn key_slots_are_added_listed_and_removed_but_never_the_last_one() {
    let dir = tempfile::tempdir().unwrap();
    assert!(run(dir.path(), &["init"]).status.success());
    let identity = dir.path().join("id.age");
    let output = run(
        dir.path(),
        &[
            "key",
            "add",
            "identity",
            "--out",
            identity.to_str().unwrap(),
        ],
    );
    assert!(output.status.success(), "{}", text(&output.stderr));
    let output = run(
        dir.path(),
        &[
            "key",
            "add",
            "recipient",
            "age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p",
            "--label",
            "break-glass",
        ],
    );
    assert!(output.status.success(), "{}", text(&output.stderr));
    let output = run(dir.path(), &["key", "add", "recipient", "age1nope"]);
    assert!(!output.status.success());
    assert!(text(&output.stderr).contains("age1…"));

    let list = text(&run(dir.path(), &["key", "list"]).stdout);
    for label in ["development", "identity", "break-glass"] {
        assert!(list.contains(label), "{list}");
    }
    assert!(
        !list.contains("AGE-SECRET-KEY"),
        "key list never prints key material"
    );

    let output = run(dir.path(), &["key", "remove", "development"]);
    assert!(output.status.success(), "{}", text(&output.stderr));
    let output = run(
        dir.path(),
        &[
            "key",
            "remove",
            "break-glass",
            "--identity",
            identity.to_str().unwrap(),
        ],
    );
    assert!(output.status.success(), "{}", text(&output.stderr));
    let output = run(
        dir.path(),
        &[
            "key",
            "remove",
            "identity",
            "--identity",
            identity.to_str().unwrap(),
        ],
    );
    assert!(!output.status.success());
    assert!(
        text(&output.stderr).contains("last key slot"),
        "{}",
        text(&output.stderr)
    );
    // The development identity is gone from every database file.
    let status = text(&run(dir.path(), &["status"]).stdout);
    assert!(!status.contains("WARNING"), "{status}");
}

#[test]
fn bad_configuration_and_environment_stop_start_up_with_the_setting_named() {
    let dir = tempfile::tempdir().unwrap();
    let output = seedvault(dir.path())
        .args(["status"])
        .env("SEEDVAULT_ORIGIN", "http://vault.example.org")
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(
        text(&output.stderr).contains("origin = 'http://vault.example.org' is invalid"),
        "{}",
        text(&output.stderr)
    );

    std::fs::write(dir.path().join("seedvault.toml"), "bind = \"nowhere\"\n").unwrap();
    let output = run(dir.path(), &["serve"]);
    assert!(!output.status.success());
    assert!(
        text(&output.stderr).contains("bind = 'nowhere' is invalid"),
        "{}",
        text(&output.stderr)
    );
}

#[test]
fn an_unusable_data_directory_or_a_taken_port_is_reported_with_the_fix() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("not-a-dir"), "x").unwrap();
    let output = run(dir.path(), &["--data-dir", "not-a-dir", "status"]);
    assert!(!output.status.success());
    assert!(
        text(&output.stderr).contains("cannot use data directory not-a-dir"),
        "{}",
        text(&output.stderr)
    );

    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let output = run(dir.path(), &["serve", "--bind", &addr]);
    assert!(!output.status.success());
    let stderr = text(&output.stderr);
    assert!(
        stderr.contains(&format!(
            "cannot listen on {addr}: the address is already in use"
        )),
        "{stderr}"
    );
}

fn run_with_stdin(dir: &Path, args: &[&str], stdin: &str) -> Output {
    use std::io::Write;
    let mut child = seedvault(dir)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

#[test]
fn tokens_are_added_from_stdin_cancelled_and_delivered_from_the_command_line() {
    let dir = tempfile::tempdir().unwrap();
    assert!(run(dir.path(), &["init"]).status.success());
    let secret = "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ";
    let output = run_with_stdin(
        dir.path(),
        &[
            "token",
            "add",
            "--serial",
            "C-1",
            "--owner",
            "u@example.org",
        ],
        secret,
    );
    assert!(output.status.success(), "{}", text(&output.stderr));
    assert!(!text(&output.stdout).contains(secret) && !text(&output.stderr).contains(secret));
    let output = run_with_stdin(dir.path(), &["token", "add", "--serial", "C-1"], secret);
    assert!(!output.status.success());
    assert!(
        text(&output.stderr).contains("already exists"),
        "{}",
        text(&output.stderr)
    );
    let output = run_with_stdin(
        dir.path(),
        &["token", "add", "--serial", "C-2"],
        "not base32 at all!",
    );
    assert!(!output.status.success());
    assert!(
        text(&output.stderr).contains("secret:"),
        "{}",
        text(&output.stderr)
    );

    let output = run(dir.path(), &["token", "deliver", "C-1", "--code", "000000"]);
    assert!(!output.status.success());
    assert!(
        text(&output.stderr).contains("does not match"),
        "{}",
        text(&output.stderr)
    );
    let output = run(
        dir.path(),
        &["token", "cancel", "C-1", "--reason", "lost in the post"],
    );
    assert!(output.status.success(), "{}", text(&output.stderr));
    let status = text(&run(dir.path(), &["status"]).stdout);
    assert!(status.contains("purged     1"), "{status}");
    let output = run(dir.path(), &["purge", "--expired"]);
    assert!(output.status.success());
    assert!(text(&output.stdout).contains("0 expired seed(s) purged"));
}

/// The same rules as the API and the pages (tests/delivery.rs, tests/pages.rs,
/// tests/import.rs): an owner is optional, a blank code is not an unverified delivery, a
/// cancellation needs a reason, import options are read alike — with the same messages.
#[test]
fn the_cli_reads_capture_delivery_cancel_and_import_input_by_the_same_rules_as_the_api() {
    let dir = tempfile::tempdir().unwrap();
    assert!(run(dir.path(), &["init"]).status.success());
    let secret = "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ";
    let output = run_with_stdin(dir.path(), &["token", "add", "--serial", "R-1"], secret);
    assert!(output.status.success(), "{}", text(&output.stderr));
    assert!(
        text(&output.stderr).contains("no owner: the token is escrowed unassigned"),
        "{}",
        text(&output.stderr)
    );
    for (args, expected) in [
        (
            &[
                "token",
                "deliver",
                "R-1",
                "--code",
                "",
                "--reason",
                "no display",
            ][..],
            "code: enter the code the user reads from the token",
        ),
        (
            &[
                "token", "deliver", "R-1", "--code", "123456", "--reason", "x",
            ][..],
            "reason: only a delivery confirmed without a code takes a reason",
        ),
        (
            &["token", "cancel", "R-1", "--reason", "  "][..],
            "reason: a reason is required",
        ),
        (
            &["import", "seeds.csv", "--format", "xml"][..],
            "format: unknown import format 'xml'",
        ),
    ] {
        let output = run(dir.path(), args);
        assert!(!output.status.success(), "{args:?}");
        assert!(
            text(&output.stderr).contains(expected),
            "{args:?}: {}",
            text(&output.stderr)
        );
    }
    let status = text(&run(dir.path(), &["status"]).stdout);
    assert!(status.contains("escrowed   1"), "{status}");
}

#[test]
fn policy_check_names_the_file_and_line_of_a_bad_policy() {
    let dir = tempfile::tempdir().unwrap();
    let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("policies");
    let output = run(dir.path(), &["policy", "check", shipped.to_str().unwrap()]);
    assert!(output.status.success(), "{}", text(&output.stderr));
    assert!(text(&output.stdout).contains("2 policies OK"));

    let bad = dir.path().join("bad");
    std::fs::create_dir(&bad).unwrap();
    let text_of_standard = std::fs::read_to_string(shipped.join("standard.toml")).unwrap();
    std::fs::write(
        bad.join("standard.toml"),
        text_of_standard.replace("min_checks = 2", "min_checks = 7"),
    )
    .unwrap();
    let output = run(dir.path(), &["policy", "check", bad.to_str().unwrap()]);
    assert!(!output.status.success());
    let stderr = text(&output.stderr);
    assert!(
        stderr.contains("standard.toml:")
            && stderr.contains("min_checks = 7 but the policy has only 3 checks"),
        "{stderr}"
    );

    // The server refuses to start with it, naming the same.
    let output = seedvault(dir.path())
        .args(["serve", "--bind", "127.0.0.1:0"])
        .env("SEEDVAULT_POLICIES_DIR", &bad)
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(
        text(&output.stderr).contains("standard.toml:"),
        "{}",
        text(&output.stderr)
    );
}

/// What a command does to the audit trail: nothing (it only reads), or these actions.
fn cli_audit_rule(command: &str) -> Option<&'static [&'static str]> {
    Some(match command {
        "status" | "key list" | "operator list" | "policy check" | "audit verify"
        | "audit head" | "audit public-key" | "doctor" | "siem status" => &[],
        "siem reset" => &["siem.cursor_reset"],
        "init" => &["vault.init"],
        // On a vault without operators serve prints the bootstrap invite; every other change
        // it makes goes through the API routes walked in tests/audit_completeness.rs.
        "serve" => &["invite.created"],
        "key add passphrase" | "key add recipient" | "key add identity" => &["key.slot_added"],
        "key remove" => &["key.slot_removed"],
        "key rotate" => &["key.rotation_started", "key.rotated"],
        "operator invite" => &["invite.created"],
        "operator disable" => &["operator.disabled"],
        "token add" => &["token.captured"],
        "token generate" => &["token.generated"],
        "token programmed" => &["token.programmed"],
        "token assign" => &["token.updated"],
        "token verify" => &["token.verified"],
        "token ship" => &["token.shipped"],
        "token deliver" => &["token.delivered"],
        "token cancel" => &["token.cancelled"],
        "import" => &["token.imported"],
        "directory sync" => &["directory.synced"],
        "purge" => &["token.expired"],
        "audit export" => &["audit.exported"],
        "backup" => &["backup.created"],
        "audit rotate-signing-key" => &["audit.signing_key_rotated"],
        // Writes a new data directory, never the vault it runs beside.
        "restore" => &[],
        // Only reads the vault: its audit head must stay put while it is copied and verified
        // (the copy's trail is the vault's own, event for event).
        "migrate-to-postgres" => &[],
        _ => return None,
    })
}

/// Every leaf command of the CLI, as the words a user types ("key add identity").
fn cli_leaves(command: &clap::Command, prefix: &str, out: &mut Vec<String>) {
    let mut children = command
        .get_subcommands()
        .filter(|c| c.get_name() != "help")
        .peekable();
    if children.peek().is_none() {
        out.push(prefix.trim().to_owned());
    }
    for child in children {
        cli_leaves(child, &format!("{prefix} {}", child.get_name()), out);
    }
}

/// The database of the default data directory under `dir`.
fn vault_db(dir: &Path) -> std::path::PathBuf {
    dir.join("seedvault-data/seedvault.db")
}

/// The actions appended to the vault in `dir` after `seq`, and the newest seq.
fn audit_actions_after(dir: &Path, seq: i64) -> (Vec<String>, i64) {
    let db = rusqlite::Connection::open_with_flags(
        vault_db(dir),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )
    .unwrap();
    let mut statement = db
        .prepare("SELECT seq, action FROM audit_events WHERE seq > ? ORDER BY seq")
        .unwrap();
    let rows: Vec<(i64, String)> = statement
        .query_map([seq], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let last = rows.last().map_or(seq, |r| r.0);
    (rows.into_iter().map(|r| r.1).collect(), last)
}

#[test]
fn every_cli_command_that_changes_the_vault_appends_its_audit_event() {
    use clap::CommandFactory;
    let mut leaves = Vec::new();
    cli_leaves(&seedvault::cli::Cli::command(), "", &mut leaves);
    for leaf in &leaves {
        assert!(
            cli_audit_rule(leaf).is_some(),
            "`seedvault {leaf}` has no audit rule: decide whether it changes the vault"
        );
    }

    let dir = tempfile::tempdir().unwrap();
    let path = |name: &str| dir.path().join(name).to_str().unwrap().to_owned();
    let secret = "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ";
    std::fs::write(
        dir.path().join("pass.txt"),
        "correct horse battery staple\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("seeds.csv"),
        format!(
            "upn,serial number,secret key,time interval,manufacturer,model\n\
             i@example.org,CLI-3,{secret},30,Token2,C202\n"
        ),
    )
    .unwrap();
    let mut seq = 0;
    let mut walked = std::collections::BTreeSet::new();
    let mut step = |leaf: &str, args: &[&str], stdin: Option<&str>| {
        let output = match (leaf, stdin) {
            ("serve", _) => {
                let (child, _) = start_serve(dir.path(), &[], &[]);
                stop(child)
            }
            (_, Some(input)) => run_with_stdin(dir.path(), args, input),
            (_, None) => run(dir.path(), args),
        };
        // doctor exits 1 on findings, and this development vault has some.
        assert!(
            output.status.success() || leaf == "doctor",
            "seedvault {}: {}",
            args.join(" "),
            text(&output.stderr)
        );
        let (actions, last) = audit_actions_after(dir.path(), seq);
        seq = last;
        let expected = cli_audit_rule(leaf).unwrap();
        assert_eq!(actions, expected, "seedvault {}", args.join(" "));
        walked.insert(leaf.to_owned());
        output
    };

    step("init", &["init"], None);
    step("serve", &["serve"], None);
    step("status", &["status"], None);
    step("key list", &["key", "list"], None);
    step(
        "key add passphrase",
        &[
            "key",
            "add",
            "passphrase",
            "--new-passphrase-file",
            &path("pass.txt"),
        ],
        None,
    );
    step(
        "key add identity",
        &["key", "add", "identity", "--out", &path("id.age")],
        None,
    );
    step(
        "key add recipient",
        &[
            "key",
            "add",
            "recipient",
            "age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p",
            "--label",
            "break-glass",
        ],
        None,
    );
    step("key remove", &["key", "remove", "break-glass"], None);
    step(
        "key rotate",
        &["key", "rotate", "--slot-passphrase-file", &path("pass.txt")],
        None,
    );
    step(
        "operator invite",
        &["operator", "invite", "bob", "--role", "helpdesk"],
        None,
    );
    step("operator list", &["operator", "list"], None);
    // Registration needs a passkey ceremony over HTTP (walked in tests/audit_completeness.rs);
    // here bob's row is written as registration would leave it.
    rusqlite::Connection::open(vault_db(dir.path()))
        .unwrap()
        .execute(
            "INSERT INTO operators (name, user_handle, roles, created_at) \
             VALUES ('bob', '0b0b0b0b-0000-4000-8000-000000000000', 'helpdesk', 0)",
            [],
        )
        .unwrap();
    step("operator disable", &["operator", "disable", "bob"], None);
    step(
        "policy check",
        &[
            "policy",
            "check",
            concat!(env!("CARGO_MANIFEST_DIR"), "/policies"),
        ],
        None,
    );
    step(
        "token add",
        &["token", "add", "--serial", "CLI-1"],
        Some(secret),
    );
    step(
        "token assign",
        &["token", "assign", "CLI-1", "a@example.org"],
        None,
    );
    step(
        "token deliver",
        &[
            "token",
            "deliver",
            "CLI-1",
            "--unverified",
            "--reason",
            "user on a call, token display broken",
        ],
        None,
    );
    step(
        "token add",
        &[
            "token",
            "add",
            "--serial",
            "CLI-2",
            "--owner",
            "b@example.org",
        ],
        Some(secret),
    );
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let seed = data_encoding::BASE32_NOPAD
        .decode(secret.as_bytes())
        .unwrap();
    let device_code = crate::common::totp::totp(&seed, "SHA1", 6, 30, now);
    step(
        "token verify",
        &["token", "verify", "CLI-2", "--code", &device_code],
        None,
    );
    step(
        "token ship",
        &["token", "ship", "CLI-2", "--carrier", "DHL"],
        None,
    );
    step(
        "token cancel",
        &["token", "cancel", "CLI-2", "--reason", "lost in the post"],
        None,
    );
    let uri = format!("otpauth://totp/Contoso:q@example.org?secret={secret}&issuer=Contoso");
    std::fs::write(
        dir.path().join("qr.png"),
        crate::common::qr::screenshot(&uri),
    )
    .unwrap();
    step(
        "token add",
        &["token", "add", "--serial", "CLI-Q", "--qr", &path("qr.png")],
        None,
    );
    let generated = step(
        "token generate",
        &[
            "token",
            "generate",
            "--serial",
            "CLI-G",
            "--owner",
            "g@example.org",
        ],
        None,
    );
    // The text is printed once, on a line of its own, under the QR code.
    let stdout = text(&generated.stdout);
    let b32 = stdout
        .lines()
        .map(str::trim)
        .find(|l| {
            l.len() == 32
                && l.bytes()
                    .all(|b| b.is_ascii_uppercase() || (b'2'..=b'7').contains(&b))
        })
        .unwrap_or_else(|| panic!("no base32 seed in: {stdout}"));
    let seed = data_encoding::BASE32_NOPAD.decode(b32.as_bytes()).unwrap();
    assert!(
        stdout.contains('█') || stdout.contains('▀'),
        "a QR code is drawn: {stdout}"
    );
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let code = crate::common::totp::totp(&seed, "SHA1", 6, 30, now);
    step(
        "token programmed",
        &["token", "programmed", "CLI-G", "--code", &code],
        None,
    );
    step("import", &["import", &path("seeds.csv")], None);
    std::fs::write(
        dir.path().join("people.csv"),
        "owner,phone,manager\na@example.org,+1 555 010 0001,m@example.org\nm@example.org,+1 555 010 0002,\n",
    )
    .unwrap();
    step(
        "directory sync",
        &["directory", "sync", &path("people.csv")],
        None,
    );
    let dry = run(
        dir.path(),
        &["directory", "sync", &path("people.csv"), "--dry-run"],
    );
    assert!(
        text(&dry.stdout).contains("dry run: added 0, changed 0, removed 0, unchanged 2"),
        "{}",
        text(&dry.stdout)
    );
    let status = run(dir.path(), &["status"]);
    assert!(
        text(&status.stdout).contains("csv: 2 entries; last sync ok"),
        "{}",
        text(&status.stdout)
    );
    // CLI-3's retention deadline passes (edited in the file: the CLI runs on the real clock).
    rusqlite::Connection::open(vault_db(dir.path()))
        .unwrap()
        .execute(
            "UPDATE tokens SET retention_deadline = 0 WHERE serial = 'CLI-3'",
            [],
        )
        .unwrap();
    step("purge", &["purge", "--expired"], None);
    step("audit verify", &["audit", "verify"], None);
    step("audit head", &["audit", "head"], None);
    step("audit public-key", &["audit", "public-key"], None);
    step("doctor", &["doctor"], None);
    step(
        "audit export",
        &[
            "audit",
            "export",
            "--format",
            "jsonl",
            "-o",
            &path("trail.jsonl"),
        ],
        None,
    );
    // A sink (never reached: no server runs from here on) for the SIEM commands.
    std::fs::write(
        dir.path().join("seedvault.toml"),
        "[[siem]]\nname = \"webhook\"\nkind = \"http\"\nurl = \"http://127.0.0.1:9/ingest\"\n",
    )
    .unwrap();
    step("siem status", &["siem", "status"], None);
    step("siem reset", &["siem", "reset", "webhook"], None);
    step(
        "audit rotate-signing-key",
        &["audit", "rotate-signing-key"],
        None,
    );
    step(
        "audit verify",
        &["audit", "verify", "--all-signatures"],
        None,
    );
    step("backup", &["backup", "--out", &path("vault.age")], None);
    let target = tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(crate::common::postgres::Database::fresh())
        .url();
    step(
        "migrate-to-postgres",
        &[
            "migrate-to-postgres",
            "--from",
            &path("seedvault-data"),
            "--to",
            &target,
        ],
        None,
    );
    step(
        "restore",
        &[
            "--data-dir",
            &path("restored"),
            "restore",
            &path("vault.age"),
            "--identity",
            &path("id.age"),
        ],
        None,
    );

    let doc = include_str!("../../docs/AUDIT.md");
    for leaf in &leaves {
        for action in cli_audit_rule(leaf).unwrap() {
            assert!(
                doc.contains(&format!("`{action}`")),
                "docs/AUDIT.md lacks {action}"
            );
        }
    }
    let missing: Vec<_> = leaves.iter().filter(|l| !walked.contains(*l)).collect();
    assert!(missing.is_empty(), "commands never run: {missing:?}");
    let trail = std::fs::read_to_string(dir.path().join("trail.jsonl")).unwrap();
    assert!(!trail.contains(secret), "the export carries no seed");
}

#[cfg(unix)]
fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o777
}

#[cfg(unix)]
#[test]
fn the_database_the_vault_marker_and_an_audit_export_are_readable_by_the_owner_only() {
    let dir = tempfile::tempdir().unwrap();
    assert!(run(dir.path(), &["init"]).status.success());
    let data = dir.path().join("seedvault-data");
    assert_eq!(mode(&data), 0o700);
    assert_eq!(mode(&vault_db(dir.path())), 0o600);
    assert_eq!(mode(&data.join("vault-id")), 0o600);
    let export = dir.path().join("trail.jsonl");
    let output = run(
        dir.path(),
        &[
            "audit",
            "export",
            "--format",
            "jsonl",
            "-o",
            export.to_str().unwrap(),
        ],
    );
    assert!(output.status.success(), "{}", text(&output.stderr));
    assert_eq!(mode(&export), 0o600);
    for suffix in ["-wal", "-shm"] {
        let file = data.join(format!("seedvault.db{suffix}"));
        if file.exists() {
            assert_eq!(mode(&file), 0o600, "{}", file.display());
        }
    }
}

#[test]
fn a_data_directory_whose_database_was_lost_refuses_to_bootstrap_a_new_vault() {
    let dir = tempfile::tempdir().unwrap();
    assert!(run(dir.path(), &["init"]).status.success());
    let data = dir.path().join("seedvault-data");
    // A crash followed by a deleted WAL, or a replaced database file: the vault's rows are gone.
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(data.join(format!("seedvault.db{suffix}")));
    }
    let output = run(dir.path(), &["serve", "--bind", "127.0.0.1:0"]);
    assert!(!output.status.success());
    let stderr = text(&output.stderr);
    assert!(stderr.contains("held vault"), "{stderr}");
    assert!(stderr.contains("restore"), "{stderr}");
    assert!(
        !text(&output.stdout).contains("/invite/"),
        "a new admin invite was printed"
    );
    let output = run(dir.path(), &["init"]);
    assert!(!output.status.success());
    assert!(text(&output.stderr).contains("held vault"));
}
