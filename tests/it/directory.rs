//! The directory of record: CSV syncs through the page and the library, LDAP syncs from a real
//! OpenLDAP server (Debian's `slapd`, started here in a temporary directory on a free loopback
//! port), what the reveal shows beside the checklist, and the high-risk policy's checks that
//! need the record.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use reqwest::StatusCode;
use seedvault::config::{DirectorySection, LdapSection, Overrides};
use seedvault::directory::ldap::{AttributeMap, LdapSettings};
use seedvault::directory::{self, DirectoryError, SyncEnv};
use seedvault::store::directory::EntryRow;
use serde_json::json;

use crate::common::{self, Desk, Operator, TestServer};

const SEED: &str = "7GIYCPFAMKVZ2CIPUBR42BBLN573O7R2";

fn data(name: &str) -> Vec<u8> {
    std::fs::read(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/data")
            .join(name),
    )
    .unwrap()
}

fn env(srv: &TestServer) -> SyncEnv<'_> {
    use seedvault::clock::Clock;
    SyncEnv {
        store: &srv.state.store,
        vault: &srv.state.vault,
        now: srv.clock.now(),
    }
}

async fn entries(srv: &TestServer) -> Vec<EntryRow> {
    seedvault::store::directory::all(&srv.state.store)
        .await
        .unwrap()
}

fn entry<'e>(all: &'e [EntryRow], owner: &str) -> &'e EntryRow {
    all.iter().find(|e| e.owner == owner).unwrap()
}

/// A page as `op` sees it.
async fn page(op: &Operator, path: &str) -> (StatusCode, String) {
    let response = op
        .http
        .get(format!("{}{path}", op.base))
        .send()
        .await
        .unwrap();
    let status = response.status();
    let text = response.text().await.unwrap();
    op.canary.record_response(path, text.as_bytes());
    (status, text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_high_risk_reveal_is_refused_until_the_owner_has_a_number_of_record_which_the_reveal_then_shows(
) {
    let Desk {
        srv,
        provisioner,
        mut helpdesk,
    } = Desk::start().await;
    let admin = srv.operator("ada", "admin").await;
    let (status, body) = common::capture(
        &provisioner,
        "alice@example.org",
        "D-1",
        SEED,
        json!({ "policy": "high-risk" }),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let checks = ["callback", "video-id", "manager"];
    let start = json!({ "checks": checks, "ticket": "INC-7" });

    let (status, body) = helpdesk
        .post("/api/v1/tokens/D-1/reveal/start", start.clone())
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    let message = body["message"].as_str().unwrap();
    assert!(
        message.contains("check 'callback' relies on the directory of record, but alice@example.org has no phone number of record")
            && message.contains("sync the directory"),
        "{message}"
    );
    let (_, reveal_page) = page(&helpdesk, "/tokens/D-1/reveal").await;
    assert!(
        reveal_page.contains("no directory record for alice@example.org"),
        "{reveal_page}"
    );

    // The admin previews the HR export: the diff, a confirm button, nothing applied yet.
    let (status, preview) = common::post_form(
        &admin,
        "/directory",
        common::multipart(
            "directory.csv",
            &[("file", &data("directory.csv")), ("dry_run", b"true")],
        ),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{preview}");
    assert!(
        preview.contains("added 2, changed 0, removed 0, unchanged 0"),
        "{preview}"
    );
    assert!(preview.contains("Apply these changes"), "{preview}");
    assert!(entries(&srv).await.is_empty(), "a preview changes nothing");
    let (status, applied) = common::post_form(
        &admin,
        "/directory",
        common::multipart(
            "directory.csv",
            &[
                ("csv", &data("directory.csv")),
                ("file_name", b"directory.csv"),
                ("dry_run", b"false"),
            ],
        ),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{applied}");
    assert!(applied.contains("Synced from directory.csv"), "{applied}");
    let synced: Vec<_> = srv
        .audit_actions()
        .await
        .into_iter()
        .filter(|(action, _, _)| action == "directory.synced")
        .collect();
    assert_eq!(
        synced,
        [(
            "directory.synced".to_owned(),
            "directory:csv".to_owned(),
            "success".to_owned()
        )]
    );

    // Now the reveal starts. high-risk is a four-eyes policy: a second operator approves, and
    // the requester's own start then carries the numbers of record beside the challenge.
    let (status, body) = helpdesk
        .post("/api/v1/tokens/D-1/reveal/start", start.clone())
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let approval = body["approval"]["id"].as_i64().unwrap();
    let mut approver = srv.operator("bea", "helpdesk").await;
    let (status, challenge) = approver
        .post(
            &format!("/api/v1/approvals/{approval}/approve/start"),
            json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{challenge}");
    let assertion = approver.assert(challenge);
    let (status, body) = approver
        .post(
            &format!("/api/v1/approvals/{approval}/approve/finish"),
            assertion,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let mut with_approval = start.clone();
    with_approval["approval"] = json!(approval);
    let (status, body) = helpdesk
        .post("/api/v1/tokens/D-1/reveal/start", with_approval)
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let record = &body["directory"];
    assert_eq!(record["found"], true);
    assert_eq!(record["phones"], json!(["+15550100001", "+15550100002"]));
    assert_eq!(record["manager"], "bob@example.org");
    assert_eq!(record["manager_phone"], "+442079460100");
    assert_eq!(record["source"], "csv");
    assert!(record["synced_at"].as_str().unwrap().starts_with("2025-"));
    assert!(body["publicKey"]["challenge"].is_string());
    let assertion = helpdesk.assert(body);
    let (status, body) = helpdesk
        .post("/api/v1/tokens/D-1/reveal/finish", assertion)
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(body["code"].is_string(), "{body}");

    let (_, reveal_page) = page(&helpdesk, "/tokens/D-1/reveal").await;
    for shown in [
        "Directory of record",
        "+15550100001",
        "+15550100002",
        "bob@example.org",
        "+442079460100",
    ] {
        assert!(reveal_page.contains(shown), "{shown}: {reveal_page}");
    }
    srv.stop_and_check().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_directory_rows_are_named_by_line_and_an_empty_file_keeps_the_old_data() {
    let srv = TestServer::start().await;
    let admin = srv.operator("ada", "admin").await;
    directory::sync_csv(
        &env(&srv),
        "test",
        "directory.csv",
        &data("directory.csv"),
        false,
    )
    .await
    .unwrap();
    let before = entries(&srv).await;

    let bad = "owner,phone,manager\n\
               carl@example.org,+1 555 010 0100,\n\
               carl@example.org,+1 555 010 0101,\n\
               dina@example.org,+1 555 CALL-NOW,\n\
               erin@example.org,+1 555 010 0103,zed@example.org\n\
               fay@example.org,+1 555 010 0104,bob@example.org\n";
    let err = directory::sync_csv(&env(&srv), "test", "bad.csv", bad.as_bytes(), false)
        .await
        .unwrap_err();
    let DirectoryError::Rows { errors, .. } = &err else {
        panic!("{err}");
    };
    let lines: Vec<String> = errors.iter().map(|e| e.to_line()).collect();
    assert_eq!(lines.len(), 3, "{lines:?}");
    assert!(lines[0].starts_with("line 3, owner: 'carl@example.org' is also on line 2"));
    assert!(lines[1].starts_with("line 4, phone: '+1 555 CALL-NOW' holds letters"));
    assert!(lines[2].starts_with(
        "line 5, manager: manager 'zed@example.org' is neither in this file nor in the directory"
    ));
    assert_eq!(entries(&srv).await, before, "nothing changed");

    let err = directory::sync_csv(&env(&srv), "test", "empty.csv", b"owner,phone\n", false)
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("empty.csv holds no directory entries — refusing to remove all 2 csv entries; the old data is kept"),
        "{err}"
    );
    assert_eq!(entries(&srv).await, before, "nothing changed");

    // The page says the same, by line, with 422; the dashboard says the last sync failed.
    let (status, html) = common::post_form(
        &admin,
        "/directory",
        common::multipart("bad.csv", &[("file", bad.as_bytes()), ("dry_run", b"true")]),
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(html.contains("Nothing was changed") && html.contains("is also on line 2"));
    let (_, dashboard) = page(&admin, "/").await;
    assert!(
        dashboard.contains("The last directory sync failed"),
        "{dashboard}"
    );
    let status = directory::status(&srv.state.store).await.unwrap();
    assert!(
        status.lines()[0].starts_with("csv: 2 entries; last sync FAILED")
            && status.lines()[0].contains("the last good data (synced"),
        "{:?}",
        status.lines()
    );
    let findings = seedvault::doctor::examine(
        &srv.state.config,
        &seedvault::timesync::FixedTimeSync(Err("not asked".into())),
        srv.clock_unix(),
    )
    .await;
    assert!(
        findings.iter().any(|f| f.check == "directory"
            && f.problem
                .starts_with("the last csv sync of the directory of record failed")),
        "{findings:?}"
    );
    let failures = srv
        .audit_actions()
        .await
        .into_iter()
        .filter(|(a, _, outcome)| a == "directory.synced" && outcome == "failure")
        .count();
    assert_eq!(
        failures, 2,
        "each refused sync is audited (the preview is not)"
    );
    srv.stop_and_check().await;
}

/// A throwaway OpenLDAP server holding `tests/data/directory.ldif`; stopped on drop.
struct Slapd {
    dir: tempfile::TempDir,
    port: u16,
}

impl Slapd {
    const ROOT_DN: &'static str = "cn=admin,dc=example,dc=org";
    const ROOT_PW: &'static str = "ldap-test-secret";

    fn start() -> Self {
        let slapd = ["/usr/sbin/slapd", "/usr/bin/slapd"]
            .into_iter()
            .find(|p| Path::new(p).exists())
            .expect("slapd is not installed: apt-get install slapd ldap-utils (see .ci/run)");
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().display();
        std::fs::create_dir(dir.path().join("db")).unwrap();
        std::fs::write(
            dir.path().join("slapd.conf"),
            format!(
                "include /etc/ldap/schema/core.schema\n\
                 include /etc/ldap/schema/cosine.schema\n\
                 include /etc/ldap/schema/inetorgperson.schema\n\
                 modulepath /usr/lib/ldap\nmoduleload back_mdb\n\
                 pidfile {d}/slapd.pid\n\
                 database mdb\nmaxsize 10485760\n\
                 suffix \"dc=example,dc=org\"\n\
                 rootdn \"{}\"\nrootpw {}\n\
                 directory {d}/db\n",
                Self::ROOT_DN,
                Self::ROOT_PW
            ),
        )
        .unwrap();
        std::fs::write(dir.path().join("password"), format!("{}\n", Self::ROOT_PW)).unwrap();
        let port = free_port();
        let status = Command::new(slapd)
            .arg("-f")
            .arg(dir.path().join("slapd.conf"))
            .arg("-h")
            .arg(format!("ldap://127.0.0.1:{port}/"))
            .status()
            .unwrap();
        assert!(status.success(), "slapd did not start");
        let server = Self { dir, port };
        for _ in 0..100 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let added = Command::new("ldapadd")
            .args([
                "-x",
                "-H",
                &server.url(),
                "-D",
                Self::ROOT_DN,
                "-w",
                Self::ROOT_PW,
                "-f",
            ])
            .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/directory.ldif"))
            .output()
            .expect("ldapadd is not installed: apt-get install ldap-utils (see .ci/run)");
        assert!(
            added.status.success(),
            "ldapadd: {}",
            String::from_utf8_lossy(&added.stderr)
        );
        server
    }

    fn url(&self) -> String {
        format!("ldap://127.0.0.1:{}", self.port)
    }

    fn password_file(&self) -> PathBuf {
        self.dir.path().join("password")
    }

    fn settings(&self) -> LdapSettings {
        LdapSettings {
            url: self.url().parse().unwrap(),
            starttls: false,
            bind_dn: Some(Self::ROOT_DN.into()),
            bind_password_file: Some(self.password_file()),
            base_dn: "ou=people,dc=example,dc=org".into(),
            filter: "(objectClass=inetOrgPerson)".into(),
            attributes: AttributeMap::default(),
            sync_interval_minutes: 0,
            timeout: Duration::from_secs(5),
        }
    }
}

impl Drop for Slapd {
    fn drop(&mut self) {
        if let Ok(pid) = std::fs::read_to_string(self.dir.path().join("slapd.pid")) {
            let _ = Command::new("kill").arg(pid.trim()).status();
        }
    }
}

/// A loopback port nobody listens on (bound, then released).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ldap_sync_reads_the_numbers_and_managers_of_record_and_a_failed_one_keeps_the_last_good_data(
) {
    let ldap = Slapd::start();
    let srv = TestServer::start().await;
    // A CSV sync first: LDAP then takes these owners over.
    directory::sync_csv(
        &env(&srv),
        "test",
        "directory.csv",
        &data("directory.csv"),
        false,
    )
    .await
    .unwrap();

    let preview = directory::sync_ldap(&env(&srv), "test", &ldap.settings(), true)
        .await
        .unwrap();
    assert_eq!((preview.added.len(), preview.changed.len()), (0, 2));
    assert!(entries(&srv).await.iter().all(|e| e.source == "csv"));

    let report = directory::sync_ldap(&env(&srv), "test", &ldap.settings(), false)
        .await
        .unwrap();
    assert_eq!(report.total, 2, "{report:?}");
    let all = entries(&srv).await;
    let alice = entry(&all, "alice@example.org");
    assert_eq!(alice.phones, ["+15550100001", "+15550100002"]);
    assert_eq!(alice.manager.as_deref(), Some("bob@example.org"));
    assert_eq!(alice.manager_phone.as_deref(), Some("+442079460100"));
    assert_eq!(alice.display_name.as_deref(), Some("Alice Example"));
    assert_eq!(alice.department.as_deref(), Some("Finance"));
    assert_eq!(alice.source, "ldap");
    // Bob's manager is outside the base DN: read through the manager DN itself.
    let bob = entry(&all, "bob@example.org");
    assert_eq!(bob.manager.as_deref(), Some("carol@example.org"));
    assert_eq!(bob.manager_phone.as_deref(), Some("+442079460000"));
    assert_eq!(
        bob.display_name.as_deref(),
        Some("Bob Manager"),
        "cn when no displayName"
    );

    // The CSV may no longer name owners LDAP holds.
    let err = directory::sync_csv(
        &env(&srv),
        "test",
        "directory.csv",
        &data("directory.csv"),
        false,
    )
    .await
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("line 2, owner: 'alice@example.org' comes from the LDAP directory"),
        "{err}"
    );

    // Failures: a filter that matches nobody, a refused bind, no server, TLS against a
    // plain port. Each is reported; the last good data stays.
    let good = entries(&srv).await;
    let mut nobody = ldap.settings();
    nobody.filter = "(uid=nobody)".into();
    let wrong_password = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(wrong_password.path(), "not-the-password\n").unwrap();
    let mut refused = ldap.settings();
    refused.bind_password_file = Some(wrong_password.path().to_owned());
    let mut unreachable = ldap.settings();
    unreachable.url = format!("ldap://127.0.0.1:{}", free_port()).parse().unwrap();
    let mut tls = ldap.settings();
    tls.url = format!("ldaps://127.0.0.1:{}", ldap.port).parse().unwrap();
    for (settings, expected) in [
        (&nobody, "holds no directory entries — refusing to remove all 2 ldap entries; the old data is kept"),
        (&refused, "refused the bind as cn=admin,dc=example,dc=org (invalid credentials)"),
        (&unreachable, "cannot reach the server"),
        (&tls, "TLS failed"),
    ] {
        let err = directory::sync_ldap(&env(&srv), "test", settings, false)
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains(expected), "{} → {err}", settings.url);
        assert_eq!(entries(&srv).await, good, "{}: the last good data is kept", settings.url);
    }
    let lines = directory::status(&srv.state.store).await.unwrap().lines();
    let ldap_line = lines.iter().find(|l| l.starts_with("ldap:")).unwrap();
    assert!(
        ldap_line.starts_with("ldap: 2 entries; last sync FAILED")
            && ldap_line.contains("the last good data (synced"),
        "{ldap_line}"
    );
    srv.stop_and_check().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_syncs_the_directory_from_ldap_on_its_schedule() {
    let ldap = Slapd::start();
    let srv = TestServer::start_with(Overrides {
        directory: Some(DirectorySection {
            ldap: Some(LdapSection {
                url: ldap.url(),
                starttls: false,
                bind_dn: Some(Slapd::ROOT_DN.into()),
                bind_password_file: Some(ldap.password_file()),
                base_dn: "ou=people,dc=example,dc=org".into(),
                filter: None,
                sync_interval_minutes: Some(60),
                timeout_seconds: Some(5),
                attributes: None,
            }),
        }),
        ..Default::default()
    })
    .await;
    seedvault::server::spawn_directory_sync(srv.state.clone());
    let mut synced = Vec::new();
    for _ in 0..100 {
        synced = entries(&srv).await;
        if !synced.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(synced.len(), 2, "the first sync runs at start");
    assert!(srv.audit_actions().await.contains(&(
        "directory.synced".into(),
        "directory:ldap".into(),
        "success".into()
    )));
    srv.stop_and_check().await;
}
