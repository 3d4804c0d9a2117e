//! Bulk imports written in chunks (issue #27): nobody sees an import's rows before it commits,
//! then everybody sees all of them; a failed import leaves nothing behind, an import whose
//! process died is deleted, and the CLI imports beside a running server.

use crate::common;

use std::sync::{mpsc, Arc, Mutex};

use common::{capture, TestServer};
use reqwest::StatusCode;
use seedvault::import::{self, ImportOptions};
use seedvault::store::tokens as rows;
use seedvault::tokens::import::{store, ImportReport};
use seedvault::tokens::TokenError;

/// An Entra CSV of `count` rows with serials `{prefix}-000000`… and distinct 160-bit secrets.
fn entra_csv(prefix: &str, count: usize) -> Vec<u8> {
    let mut csv = String::from("upn,serial number,secret key,time interval,manufacturer,model\n");
    for i in 0..count {
        let mut seed = [0x3cu8; 20];
        seed[..8].copy_from_slice(&(i as u64).to_be_bytes());
        seed[8] = prefix.len() as u8;
        let secret = data_encoding::BASE32_NOPAD.encode(&seed);
        csv.push_str(&format!(
            "u{i}@example.org,{prefix}-{i:06},{secret},30,Token2,C202\n"
        ));
    }
    csv.into_bytes()
}

fn serial(prefix: &str, i: usize) -> String {
    format!("{prefix}-{i:06}")
}

/// An import through the library (as the API and the CLI run it) that stops after each
/// stored chunk until the test lets it go on: `stored` says how many rows are stored so far,
/// a send on `go_on` continues.
struct PausedImport {
    task: tokio::task::JoinHandle<Result<ImportReport, TokenError>>,
    stored: mpsc::Receiver<usize>,
    go_on: mpsc::Sender<()>,
}

impl PausedImport {
    fn start(srv: &TestServer, csv: Vec<u8>) -> Self {
        let (stored_tx, stored) = mpsc::channel();
        let (go_on, go_on_rx) = mpsc::channel::<()>();
        let go_on_rx = Arc::new(Mutex::new(go_on_rx));
        let state = srv.state.clone();
        let task = tokio::spawn(async move {
            let parsed = import::parse(&csv, &ImportOptions::default());
            let progress = move |done: usize, _total: usize| {
                let _ = stored_tx.send(done);
                // Blocking in place hands this worker's other tasks to the other worker.
                tokio::task::block_in_place(|| {
                    let _ = go_on_rx.lock().unwrap().recv();
                });
            };
            store(
                &state.env(),
                "test:importer",
                "chunked.csv",
                parsed,
                None,
                false,
                std::time::Duration::ZERO,
                &progress,
            )
            .await
        });
        Self {
            task,
            stored,
            go_on,
        }
    }

    /// Lets the import go on past the chunk it stopped after.
    fn go_on(&self) {
        self.go_on.send(()).unwrap();
    }

    /// Waits until the next chunk is stored (and committed).
    async fn next_chunk(&mut self) -> usize {
        let stored = std::mem::replace(&mut self.stored, mpsc::channel().1);
        let (done, stored) = tokio::task::spawn_blocking(move || {
            let done = stored.recv().unwrap();
            (done, stored)
        })
        .await
        .unwrap();
        self.stored = stored;
        done
    }

    /// Lets the import run to its end.
    async fn finish(self) -> Result<ImportReport, TokenError> {
        // Every remaining chunk may go on; sends beyond the last are not received.
        for _ in 0..100 {
            let _ = self.go_on.send(());
        }
        self.task.await.unwrap()
    }
}

/// (visible, stored but not visible) among `serials`.
async fn seen(srv: &TestServer, serials: &[String]) -> (usize, usize) {
    let serials: Vec<&str> = serials.iter().map(String::as_str).collect();
    let found = rows::existing_serials(&srv.state.store, &serials)
        .await
        .unwrap();
    (
        found.iter().filter(|(_, visible)| *visible).count(),
        found.iter().filter(|(_, visible)| !*visible).count(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_reader_sees_an_import_before_it_commits_and_every_reader_sees_all_of_it_after() {
    let srv = TestServer::start().await;
    let op = srv.operator("chunky", "provisioner,helpdesk").await;
    let all: Vec<String> = (0..2500).map(|i| serial("VIS", i)).collect();
    let mut import = PausedImport::start(&srv, entra_csv("VIS", 2500));
    assert_eq!(import.next_chunk().await, 1000);
    import.go_on();
    assert_eq!(import.next_chunk().await, 2000);
    // Two chunks are committed to the file, and nobody can see them.
    assert_eq!(seen(&srv, &all).await, (0, 2000));
    assert!(rows::by_serial(&srv.state.store, &all[0])
        .await
        .unwrap()
        .is_none());
    assert!(rows::count_by_state(&srv.state.store)
        .await
        .unwrap()
        .is_empty());
    let (status, list) = op.get("/api/v1/tokens?q=VIS").await;
    assert_eq!(status, StatusCode::OK, "{list}");
    assert!(!list.to_string().contains("VIS-"), "{list}");
    let (status, token) = op.get(&format!("/api/v1/tokens/{}", all[0])).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{token}");
    // A capture of a serial being imported is refused, saying why.
    let (status, body) = capture(
        &op,
        "x@example.org",
        &all[1],
        "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP",
        serde_json::json!({}),
    )
    .await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert!(
        body["message"].as_str().unwrap().contains("being imported"),
        "{body}"
    );
    // So is a second import of the same serials, row by row.
    let parsed = import::parse(&entra_csv("VIS", 3), &ImportOptions::default());
    let second = store(
        &srv.state.env(),
        "test:second",
        "again.csv",
        parsed,
        None,
        false,
        std::time::Duration::ZERO,
        &|_, _| {},
    )
    .await
    .unwrap();
    assert_eq!(second.imported, 0);
    assert_eq!(second.errors.len(), 3);
    assert!(
        second.errors[0].reason.contains("being imported"),
        "{:?}",
        second.errors[0]
    );
    let report = import.finish().await.unwrap();
    assert_eq!(report.imported, 2500);
    // All of it at once, through every door.
    assert_eq!(seen(&srv, &all).await, (2500, 0));
    assert_eq!(
        rows::count_by_state(&srv.state.store).await.unwrap(),
        [("escrowed".to_owned(), 2500)]
    );
    let (status, token) = op.get(&format!("/api/v1/tokens/{}", all[2499])).await;
    assert_eq!(status, StatusCode::OK, "{token}");
    let imported = srv
        .audit_actions()
        .await
        .into_iter()
        .filter(|(action, _, _)| action == "token.imported")
        .count();
    assert_eq!(imported, 1, "one audit event per import, as before");
    // Now a second import of the same serials is the usual duplicate.
    let parsed = import::parse(&entra_csv("VIS", 1), &ImportOptions::default());
    let again = store(
        &srv.state.env(),
        "test:again",
        "again.csv",
        parsed,
        None,
        false,
        std::time::Duration::ZERO,
        &|_, _| {},
    )
    .await
    .unwrap();
    assert!(
        again.errors[0]
            .reason
            .contains("already exists in the vault"),
        "{:?}",
        again.errors
    );
    srv.stop_and_check().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_import_that_fails_half_way_leaves_none_of_its_rows_behind() {
    let srv = TestServer::start().await;
    let op = srv.operator("halfway", "provisioner").await;
    let all: Vec<String> = (0..2500).map(|i| serial("FAIL", i)).collect();
    let mut import = PausedImport::start(&srv, entra_csv("FAIL", 2500));
    assert_eq!(import.next_chunk().await, 1000);
    // A serial of the third chunk is captured meanwhile: that chunk will hit it.
    let (status, body) = capture(
        &op,
        "x@example.org",
        &all[2400],
        "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP",
        serde_json::json!({}),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let failed = import.finish().await.unwrap_err();
    assert!(
        matches!(failed, TokenError::Duplicate(_)),
        "{failed}: the same clear duplicate error as before"
    );
    // The captured token stays; every row the import stored is gone, not merely hidden.
    assert_eq!(seen(&srv, &all).await, (1, 0));
    let actions = srv.audit_actions().await;
    assert!(!actions.iter().any(|(a, _, _)| a == "token.imported"));
    srv.stop_and_check().await;
}

/// The test server's database for a CLI run beside it: its PostgreSQL URL when the suite runs
/// there (on SQLite the data directory says it all).
fn database_env(srv: &TestServer) -> Vec<(&'static str, String)> {
    crate::common::database_url_of(srv.dir.path())
        .map(|url| ("SEEDVAULT_DATABASE_URL", url))
        .into_iter()
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_import_whose_process_was_killed_is_deleted_at_start_and_its_serials_are_free() {
    let srv = TestServer::start().await;
    let data = srv.dir.path().join("data");
    let file = srv.dir.path().join("killed.csv");
    std::fs::write(&file, entra_csv("KILL", 30_000)).unwrap();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_seedvault"))
        .envs(database_env(&srv))
        .arg("--data-dir")
        .arg(&data)
        .arg("import")
        .arg(&file)
        .env_remove("SEEDVAULT_DATA_DIR")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let all: Vec<String> = (0..30_000).map(|i| serial("KILL", i)).collect();
    // Killed once some of its rows are stored (and before it could commit them all).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let (visible, hidden) = seen(&srv, &all).await;
        assert_eq!(visible, 0, "seen before the import committed");
        if hidden > 0 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the CLI stored nothing"
        );
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let (visible, hidden) = seen(&srv, &all).await;
    assert_eq!(visible, 0);
    assert!(hidden > 0 && hidden < 30_000, "{hidden}");
    // What the sweeper runs at start (and every minute): the dead process's rows go.
    let discarded = seedvault::tokens::import::discard_abandoned(&srv.state.store)
        .await
        .unwrap();
    assert_eq!(discarded, 1);
    assert_eq!(seen(&srv, &all).await, (0, 0));
    // Its serials are free again: the same file imports in full.
    let parsed = import::parse(&entra_csv("KILL", 30_000), &ImportOptions::default());
    let report = store(
        &srv.state.env(),
        "test:retry",
        "killed.csv",
        parsed,
        None,
        false,
        std::time::Duration::ZERO,
        &|_, _| {},
    )
    .await
    .unwrap();
    assert_eq!(report.imported, 30_000, "{:?}", report.errors);
    assert_eq!(seen(&srv, &all).await, (30_000, 0));
    srv.stop_and_check().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_imports_beside_a_running_server_which_keeps_writing_meanwhile() {
    let srv = TestServer::start().await;
    let op = srv.operator("beside", "provisioner").await;
    let data = srv.dir.path().join("data");
    let file = srv.dir.path().join("beside.csv");
    std::fs::write(&file, entra_csv("CLI", 20_000)).unwrap();
    let database = database_env(&srv);
    let cli = tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_seedvault"))
            .envs(database)
            .arg("--data-dir")
            .arg(&data)
            .arg("import")
            .arg(&file)
            .env_remove("SEEDVAULT_DATA_DIR")
            .output()
            .unwrap()
    });
    let all: Vec<String> = (0..20_000).map(|i| serial("CLI", i)).collect();
    // While the CLI writes its chunks, the server's own writes go through.
    let mut captured = 0;
    while !cli.is_finished() {
        let (status, body) = capture(
            &op,
            "x@example.org",
            &format!("BESIDE-{captured}"),
            "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP",
            serde_json::json!({}),
        )
        .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        captured += 1;
        let (visible, _) = seen(&srv, &all).await;
        assert!(visible == 0 || visible == 20_000, "{visible} seen: partial");
    }
    let output = cli.await.unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(String::from_utf8_lossy(&output.stdout).contains("imported 20000 token(s)"));
    assert!(captured > 1, "the server wrote only {captured} time(s)");
    assert_eq!(seen(&srv, &all).await, (20_000, 0));
    srv.stop_and_check().await;
}
