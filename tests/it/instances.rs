//! Two instances of one vault on one PostgreSQL database (issue #20): the vault's tables,
//! sessions, passkey prompts in flight, rate limits and decoys hold across them. Both serve
//! the same vault and origin (as behind one reverse proxy), each with its own store and pool on
//! the shared database, as two `seedvault serve` processes would.

use std::sync::Arc;

use reqwest::StatusCode;
use serde_json::json;

use crate::common::passkey::Operator;
use crate::common::postgres::Database;
use crate::common::{self, TestServer};
use seedvault::config::Overrides;
use seedvault::shared::Shared;
use seedvault::web::AppState;

const SECRET: &str = "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP";

/// The second instance: the first one's vault, configuration and clock, its own listener and
/// its own pool on the shared database.
struct Instance {
    base: String,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl Instance {
    async fn beside(first: &TestServer, url: &str) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let url = seedvault::store::engine::PostgresUrl::parse(url).unwrap();
        let store = seedvault::store::Store::open_postgres(&url, None, 8)
            .await
            .unwrap();
        let pool = store.postgres_pool().unwrap().clone();
        let vault =
            seedvault::vault::open::unlock(&store, &seedvault::vault::Unlocker::Development)
                .await
                .unwrap();
        let state = AppState::with_shared(
            store,
            vault,
            (*first.state.config).clone(),
            Arc::new(first.clock.clone()),
            Shared::Postgres(pool),
        )
        .await
        .unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let serving = seedvault::server::run(
            state,
            listener,
            async {
                let _ = stopped.await;
            },
            seedvault::server::ConnectionLimits::for_open_file_limit(1024),
        );
        let task = tokio::spawn(async move { serving.await.unwrap() });
        Self {
            base: format!("http://localhost:{port}"),
            stop: Some(stop),
            task,
        }
    }

    async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let _ = self.task.await;
    }
}

/// Two instances on one fresh PostgreSQL database, the vault on it too.
async fn two_instances(settings: Overrides) -> (TestServer, Instance) {
    let db = Database::fresh().await;
    let url = db.url();
    let shared = db.pool().await;
    seedvault::store::postgres::MIGRATOR
        .run(&shared)
        .await
        .unwrap();
    let settings = Overrides {
        database_url: Some(url.clone()),
        ..settings
    };
    let first = TestServer::start_sharing(settings, shared).await;
    // Where the CLI run on the first's directory finds the database (`cli::seedvault`).
    std::fs::write(first.dir.path().join(common::DATABASE_URL_FILE), &url).unwrap();
    let second = Instance::beside(&first, &url).await;
    (first, second)
}

/// Points `op` at the instance at `base` (the cookie jar is per host, so the cookies go too).
fn through(op: &mut Operator, base: &str) {
    op.base = base.to_owned();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reveal_started_on_one_instance_finishes_once_on_the_other() {
    let (first, second) = two_instances(Overrides::default()).await;
    let provisioner = first.operator("pat", "provisioner").await;
    let mut helpdesk = first.operator("hal", "helpdesk").await;
    let (status, body) =
        common::capture(&provisioner, "ada@example.org", "E-1", SECRET, json!({})).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");

    // Signed in through the first, the session holds on the second.
    through(&mut helpdesk, &second.base);
    let (status, body) = helpdesk.get("/api/v1/approvals").await;
    assert_eq!(status, StatusCode::OK, "{body}");

    let start = json!({ "checks": ["callback", "video-id"], "ticket": "INC-1" });
    let (status, challenge) = helpdesk
        .post("/api/v1/tokens/E-1/reveal/start", start)
        .await;
    assert_eq!(status, StatusCode::OK, "{challenge}");
    let assertion = helpdesk.assert(challenge);
    through(&mut helpdesk, &first.base);
    // `send`, not `post`: the one response allowed to carry the code is not recorded.
    let (status, body) = helpdesk
        .send(
            reqwest::Method::POST,
            "/api/v1/tokens/E-1/reveal/finish",
            Some(assertion.clone()),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let code = body["code"].as_str().unwrap();
    helpdesk
        .canary
        .watch_code("code revealed across instances", code);
    assert_eq!(code.len(), 6);

    // Used: the same assertion finishes nothing on either instance.
    for base in [&second.base, &first.base] {
        through(&mut helpdesk, base);
        let (status, body) = helpdesk
            .post("/api/v1/tokens/E-1/reveal/finish", assertion.clone())
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    }

    // Signed out on the second: signed out on the first.
    through(&mut helpdesk, &second.base);
    let (status, _) = helpdesk.post("/api/v1/auth/logout", json!({})).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    through(&mut helpdesk, &first.base);
    let (status, _) = helpdesk.get("/api/v1/approvals").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    // A sign-in started on the first finishes on the second, and holds on the first.
    let (status, challenge) = helpdesk.login_start().await;
    assert_eq!(status, StatusCode::OK, "{challenge}");
    let assertion = helpdesk.assert(challenge);
    through(&mut helpdesk, &second.base);
    let (status, body) = helpdesk.post("/api/v1/auth/login/finish", assertion).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    through(&mut helpdesk, &first.base);
    let (status, body) = helpdesk.get("/api/v1/approvals").await;
    assert_eq!(status, StatusCode::OK, "{body}");

    second.stop().await;
    first.stop_and_check().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_sign_ins_count_against_one_limit_on_every_instance_and_decoys_agree() {
    let (first, second) = two_instances(Overrides {
        sign_in_attempts_per_address: Some(3),
        ..Default::default()
    })
    .await;
    let mut caller = first.operator("hal", "helpdesk").await;
    let bases = [first.base.clone(), second.base.clone()];

    // A name that cannot sign in gets the same decoy credential from either instance.
    let mut decoys = Vec::new();
    for base in &bases {
        through(&mut caller, base);
        let (status, challenge) = caller
            .post("/api/v1/auth/login/start", json!({ "username": "nobody" }))
            .await;
        assert_eq!(status, StatusCode::OK, "{challenge}");
        decoys.push(challenge["publicKey"]["allowCredentials"].clone());
    }
    assert_eq!(decoys[0], decoys[1]);
    assert!(decoys[0][0]["id"].is_string(), "{}", decoys[0]);

    // Three failures, started on one instance and failed on the other, alternating.
    for attempt in 0..3 {
        through(&mut caller, &bases[attempt % 2]);
        let (status, body) = caller.login_start().await;
        assert_eq!(status, StatusCode::OK, "attempt {attempt}: {body}");
        through(&mut caller, &bases[(attempt + 1) % 2]);
        let (status, body) = caller
            .post(
                "/api/v1/auth/login/finish",
                json!({ "not": "an assertion" }),
            )
            .await;
        assert!(
            status.is_client_error(),
            "attempt {attempt}: {status} {body}"
        );
    }
    // The limit holds on both.
    for base in &bases {
        through(&mut caller, base);
        let (status, body) = caller.login_start().await;
        assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{base}: {body}");
    }

    second.stop().await;
    first.stop_and_check().await;
}

/// Reveals through both instances at once, then one instance stopped (its requests in flight
/// answered first, as a graceful shutdown or a drained proxy backend): the other keeps serving
/// every client, those signed in through the stopped one too; every code a client received has its grant in the one audit chain, no
/// limit was passed, and the chain verifies with no fork or gap (`audit verify`, the CLI on the
/// same database).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reveals_through_both_instances_and_on_after_one_stops_leave_one_verified_chain() {
    let (first, second) = two_instances(Overrides::default()).await;
    let provisioner = first.operator("pat", "provisioner").await;
    const DESKS: usize = 4;
    for i in 0..DESKS {
        let (status, body) = common::capture(
            &provisioner,
            "ada@example.org",
            &format!("HA-{i}"),
            SECRET,
            json!({}),
        )
        .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
    }
    let mut desks = Vec::new();
    for i in 0..DESKS {
        desks.push(first.operator(&format!("hal{i}"), "helpdesk").await);
    }
    // Round one: every desk at once, half through each instance.
    let reveal_all = |desks: Vec<Operator>, bases: Vec<String>| async move {
        let tasks = desks.into_iter().enumerate().map(|(i, mut desk)| {
            let base = bases[i % bases.len()].clone();
            tokio::spawn(async move {
                through(&mut desk, &base);
                let (status, body) = desk
                    .reveal(&format!("HA-{i}"), &["callback", "video-id"], Some("INC-9"))
                    .await;
                (desk, status, body)
            })
        });
        let mut back = Vec::new();
        for task in tasks.collect::<Vec<_>>() {
            back.push(task.await.unwrap());
        }
        back
    };
    let mut codes = Vec::new();
    let mut round = reveal_all(desks, vec![first.base.clone(), second.base.clone()]).await;
    // The second instance goes away (its requests in flight finished); the first serves on,
    // sessions and all, for the clients that were on the second.
    second.stop().await;
    let mut desks = Vec::new();
    for (desk, status, body) in round.drain(..) {
        assert_eq!(status, StatusCode::OK, "{body}");
        codes.push(body["code"].as_str().unwrap().to_owned());
        desks.push(desk);
    }
    for (_, status, body) in reveal_all(desks, vec![first.base.clone()]).await {
        assert_eq!(status, StatusCode::OK, "{body}");
        codes.push(body["code"].as_str().unwrap().to_owned());
    }
    assert_eq!(codes.len(), 2 * DESKS);

    // One grant per code handed out, each token at 2 of its 3 a day: no limit passed.
    let actions = first.audit_actions().await;
    let grants: Vec<_> = actions
        .iter()
        .filter(|(action, _, _)| action == "reveal.granted")
        .collect();
    assert_eq!(grants.len(), codes.len(), "{actions:?}");
    for i in 0..DESKS {
        let target = format!("token:HA-{i}");
        assert_eq!(
            grants.iter().filter(|(_, t, _)| *t == target).count(),
            2,
            "{target}"
        );
    }

    let dir = first.dir.path().to_path_buf();
    let verified = tokio::task::spawn_blocking(move || {
        crate::cli::seedvault(&dir)
            .args(["--data-dir", "data", "audit", "verify", "--all-signatures"])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(
        verified.status.success(),
        "{}{}",
        crate::cli::text(&verified.stdout),
        crate::cli::text(&verified.stderr)
    );
    first.stop_and_check().await;
}
