//! The store's table modules on both engines: each scenario is written once against a
//! [`Store`] and runs on a SQLite store and on a PostgreSQL store (a fresh database on the
//! throwaway cluster, [`super::pg_cluster`]); the answers must be the same. Plus what only
//! PostgreSQL needs proving: statement sequences ([`Inline`]) inside a transaction, and one
//! audit chain when two instances append at once.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use time::OffsetDateTime;

use super::engine::PostgresUrl;
use super::{
    approvals, audit, delivery_links, directory, imports, key_slots, meta, operators, outbox,
    pg_cluster, siem, token_pages, tokens, Store, StoreError,
};

/// A SQLite store and a PostgreSQL store, both empty and migrated.
async fn both() -> (tempfile::TempDir, Store, Store) {
    let dir = tempfile::tempdir().unwrap();
    let sqlite = Store::open(dir.path()).await.unwrap();
    (dir, sqlite, postgres_store().await)
}

async fn postgres_store() -> Store {
    let url = PostgresUrl::parse(&pg_cluster::fresh_database().await.unwrap()).unwrap();
    Store::open_postgres(&url, None, 4).await.unwrap()
}

/// Runs one SQL statement on either engine (fixtures the product never writes this way).
async fn raw(store: &Store, sql: &str) -> Result<(), StoreError> {
    on_either!(store, |conn| {
        sqlx::query(sql).execute(&mut *conn).await?;
    });
    Ok(())
}

/// Every value of a one-column text query, on either engine.
async fn texts(store: &Store, sql: &str) -> Result<Vec<String>, StoreError> {
    Ok(on_either!(store, |conn| sqlx::query_scalar(sql)
        .fetch_all(&mut *conn)
        .await?))
}

/// A purged token row (no seed) to hang approvals and delivery links on: `tokens` itself is
/// not ported yet, and a purged row needs no sealed seed.
async fn token_row(store: &Store, serial: &str) -> i64 {
    raw(
        store,
        &format!(
            "INSERT INTO tokens (token_id, serial, owner, algorithm, digits, period, policy, state, \
             captured_by, captured_at, retention_deadline, purged_at, purge_reason) VALUES \
             ('id-{serial}', '{serial}', 'ada@example.org', 'SHA1', 6, 30, 'standard', 'purged', \
             'test', 0, 0, 0, 'cancelled')"
        ),
    )
    .await
    .unwrap();
    let id = texts(
        store,
        &format!("SELECT CAST(id AS TEXT) FROM tokens WHERE serial = '{serial}'"),
    )
    .await
    .unwrap();
    id[0].parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vault_meta_and_rotation_read_and_write_alike_on_both_engines() {
    async fn scenario(store: &Store) -> impl PartialEq + std::fmt::Debug {
        let before = meta::get(store).await.unwrap();
        let mut tx = store.begin_write().await.unwrap();
        meta::insert(
            &mut tx,
            &meta::VaultMetaRow {
                vault_id: "v-1".into(),
                created_at: 7,
                key_check: vec![1, 2],
                audit_signing_key: vec![3],
                audit_public_key: vec![4, 5],
                key_generation: 0,
            },
        )
        .await
        .unwrap();
        meta::set_signing_key(&mut tx, &[6, 6], &[7, 7])
            .await
            .unwrap();
        meta::insert_rotation(
            &mut tx,
            &meta::RotationRow {
                generation: 1,
                next_key: vec![9; 4],
                started_at: 8,
                started_by: "hal".into(),
            },
        )
        .await
        .unwrap();
        let keys = tx
            .inline(|c| {
                let sealed = meta::signing_key_on(c)?.map(|k| (k.sealed, k.public));
                Ok::<_, StoreError>((sealed, meta::signing_public_key_on(c)?))
            })
            .await
            .unwrap()
            .unwrap();
        tx.commit().await.unwrap();
        let rotating = meta::rotation(store).await.unwrap();
        let mut tx = store.begin_write().await.unwrap();
        meta::finish_rotation(&mut tx, 1, &[8], &[9]).await.unwrap();
        tx.commit().await.unwrap();
        (
            before,
            keys,
            rotating,
            meta::rotation(store).await.unwrap(),
            meta::get(store).await.unwrap(),
        )
    }
    let (_dir, sqlite, pg) = both().await;
    let on_sqlite = scenario(&sqlite).await;
    assert_eq!(on_sqlite, scenario(&pg).await);
    assert!(format!("{on_sqlite:?}").contains("key_generation: 1"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_slots_are_added_listed_rewrapped_and_removed_alike_on_both_engines() {
    async fn scenario(store: &Store) -> impl PartialEq + std::fmt::Debug {
        let slot = |label| key_slots::NewKeySlot {
            kind: "passphrase",
            label,
            recipient: None,
            wrapped_key: b"wrapped",
            development_identity: None,
            created_at: 5,
        };
        let first = key_slots::insert(store, &slot("one")).await.unwrap();
        let second = key_slots::insert(store, &slot("two")).await.unwrap();
        let third = key_slots::insert(store, &slot("three")).await.unwrap();
        assert_eq!((first, second, third), (1, 2, 3));
        let duplicate = key_slots::insert(store, &slot("one")).await.unwrap_err();
        assert!(duplicate.is_unique_violation(), "{duplicate}");
        let mut tx = store.begin_write().await.unwrap();
        key_slots::set_wrapped(&mut tx, second, b"again")
            .await
            .unwrap();
        key_slots::delete_id(&mut tx, third).await.unwrap();
        tx.commit().await.unwrap();
        (
            (first, second, third),
            duplicate.is_unique_violation(),
            key_slots::label_exists(store, "two").await.unwrap(),
            key_slots::delete(store, "one").await.unwrap(),
            key_slots::delete(store, "one").await.unwrap(),
            key_slots::list(store).await.unwrap(),
        )
    }
    let (_dir, sqlite, pg) = both().await;
    let on_sqlite = scenario(&sqlite).await;
    assert_eq!(on_sqlite, scenario(&pg).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operators_credentials_and_invites_behave_alike_on_both_engines() {
    type Op = Option<(i64, String, String, String, bool, i64)>;
    fn op(row: Option<operators::OperatorRow>) -> Op {
        row.map(|o| {
            (
                o.id,
                o.name,
                o.user_handle,
                o.roles,
                o.disabled,
                o.created_at,
            )
        })
    }
    async fn scenario(store: &Store) -> impl PartialEq + std::fmt::Debug {
        // Inserted out of order: the list is by name, bytewise (capitals first).
        let zed = operators::insert_operator(store, "zed", "h-z", "admin", 1)
            .await
            .unwrap();
        let amy = operators::insert_operator(store, "amy", "h-a", "helpdesk", 2)
            .await
            .unwrap();
        let bob = operators::insert_operator(store, "Bob", "h-b", "auditor", 3)
            .await
            .unwrap();
        operators::set_roles(store, amy, "helpdesk,approver")
            .await
            .unwrap();
        operators::set_disabled(store, bob, true).await.unwrap();
        let listed: Vec<Op> = operators::list_operators(store)
            .await
            .unwrap()
            .into_iter()
            .map(|o| op(Some(o)))
            .collect();
        let names: Vec<_> = listed.iter().flatten().map(|o| o.1.as_str()).collect();
        assert_eq!(names, ["Bob", "amy", "zed"]);
        let held = store
            .inline(|c| operators::operator_by_id_on(c, amy).map(op))
            .await
            .unwrap()
            .unwrap();
        let credential = operators::insert_credential(store, amy, b"cred-1", "key", "{}", 4)
            .await
            .unwrap();
        operators::insert_credential(store, amy, b"cred-2", "spare", "{}", 4)
            .await
            .unwrap();
        operators::insert_credential(store, zed, b"cred-3", "key", "{}", 4)
            .await
            .unwrap();
        operators::update_credential_use(store, credential, "{\"counter\":2}", 9)
            .await
            .unwrap();
        let deleted = (
            operators::delete_credential(store, zed, credential)
                .await
                .unwrap(),
            operators::delete_credential(store, amy, credential)
                .await
                .unwrap(),
        );
        let mut counts = operators::credential_counts(store).await.unwrap();
        counts.sort();
        let credentials: Vec<_> = operators::credentials_of(store, amy)
            .await
            .unwrap()
            .into_iter()
            .map(|c| (c.id, c.credential_id, c.label, c.passkey, c.last_used_at))
            .collect();
        let invite = operators::insert_invite(store, b"hash", "cy", "helpdesk", "zed", 10, 100)
            .await
            .unwrap();
        let found = operators::invite_by_hash(store, b"hash")
            .await
            .unwrap()
            .map(|i| (i.id, i.name, i.roles, i.expires_at, i.used_at));
        let open = operators::open_invite_for(store, "cy", 50).await.unwrap();
        let consumed = (
            operators::consume_invite(store, invite, amy, 60)
                .await
                .unwrap(),
            operators::consume_invite(store, invite, amy, 61)
                .await
                .unwrap(),
        );
        assert_eq!(consumed, (true, false), "an invite is consumed once");
        operators::insert_invite(store, b"hash-2", "dee", "helpdesk", "zed", 10, 100)
            .await
            .unwrap();
        operators::expire_open_invites(store, "dee", 70)
            .await
            .unwrap();
        (
            (
                operators::count_operators(store).await.unwrap(),
                listed,
                held,
            ),
            (
                op(operators::operator_by_name(store, "zed").await.unwrap()),
                op(operators::operator_by_handle(store, "h-b").await.unwrap()),
                op(operators::operator_by_id(store, 99).await.unwrap()),
            ),
            (deleted, counts, credentials),
            (
                found,
                open,
                consumed,
                operators::open_invite_for(store, "dee", 70).await.unwrap(),
            ),
        )
    }
    let (_dir, sqlite, pg) = both().await;
    let on_sqlite = scenario(&sqlite).await;
    assert_eq!(on_sqlite, scenario(&pg).await);
}

/// An audit row as a test forges it (the product appends through `audit::append`).
fn forged(seq: i64, target: &str, time: &str) -> audit::AuditRow {
    audit::AuditRow {
        seq,
        time: time.into(),
        actor: "operator:hal".into(),
        action: "token.reveal".into(),
        target: target.into(),
        outcome: if seq % 3 == 0 { "denied" } else { "success" }.into(),
        details: "{}".into(),
        prev_hash: vec![seq as u8; 32],
        hash: vec![seq as u8 + 1; 32],
        sig: vec![0; 64],
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_audit_trail_is_read_paged_and_filtered_alike_on_both_engines() {
    async fn scenario(store: &Store) -> impl PartialEq + std::fmt::Debug {
        let empty = (
            audit::head(store).await.unwrap(),
            audit::page(store, &audit::AuditFilter::default(), None, 5)
                .await
                .unwrap()
                .rows
                .len(),
        );
        let mut tx = store.begin_write().await.unwrap();
        for seq in 1..=12 {
            let target = if seq % 2 == 0 { "token:A" } else { "token:B" };
            let time = format!("2026-12-01T00:00:{seq:02}Z");
            audit::insert(&mut tx, &forged(seq, target, &time))
                .await
                .unwrap();
        }
        let head_in_tx = tx.inline(audit::head_on).await.unwrap().unwrap();
        tx.commit().await.unwrap();
        let seqs = |rows: Vec<audit::AuditRow>| rows.iter().map(|r| r.seq).collect::<Vec<_>>();
        let filter = audit::AuditFilter {
            target: Some("token:A".into()),
            since: Some("2026-12-01T00:00:03Z".into()),
            until: Some("2026-12-01T00:00:11Z".into()),
            ..Default::default()
        };
        let denied = audit::AuditFilter {
            outcome: Some("denied".into()),
            ..Default::default()
        };
        let first = audit::page(store, &filter, None, 2).await.unwrap();
        let older = audit::page(store, &filter, Some(audit::AuditCursor::Older(8)), 2)
            .await
            .unwrap();
        let newer = audit::page(store, &filter, Some(audit::AuditCursor::Newer(4)), 2)
            .await
            .unwrap();
        assert_eq!(
            (seqs(first.rows.clone()), first.has_newer, first.has_older),
            (vec![10, 8], false, true)
        );
        let rows = audit::page_after(store, 10, 5).await.unwrap();
        (
            empty,
            head_in_tx,
            audit::head(store).await.unwrap(),
            audit::count(store).await.unwrap(),
            (
                audit::count_matching(store, &filter, 12).await.unwrap(),
                audit::count_matching(store, &denied, 9).await.unwrap(),
            ),
            seqs(audit::for_target(store, "token:B").await.unwrap()),
            (
                seqs(rows.clone()),
                rows.iter().map(|r| r.hash.clone()).collect::<Vec<_>>(),
            ),
            (seqs(first.rows), first.has_newer, first.has_older),
            (seqs(older.rows), older.has_newer, older.has_older),
            (seqs(newer.rows), newer.has_newer, newer.has_older),
        )
    }
    let (_dir, sqlite, pg) = both().await;
    let on_sqlite = scenario(&sqlite).await;
    assert_eq!(on_sqlite, scenario(&pg).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn approvals_are_requested_decided_used_and_counted_alike_on_both_engines() {
    async fn scenario(store: &Store) -> impl PartialEq + std::fmt::Debug {
        let token = token_row(store, "T-1").await;
        let requester = operators::insert_operator(store, "hal", "h-1", "helpdesk", 0)
            .await
            .unwrap();
        let approver = operators::insert_operator(store, "ann", "h-2", "approver", 0)
            .await
            .unwrap();
        let request = |policy, binding| approvals::NewApproval {
            token_row: token,
            requester_id: requester,
            policy,
            policy_hash: "sha",
            checks: "[\"callback\"]",
            ticket: Some("INC-1"),
            note: None,
            binding,
            created_at: 100,
            expires_at: 200,
        };
        let mut tx = store.begin_write().await.unwrap();
        let ids = tx
            .inline(|c| {
                Ok::<_, StoreError>((
                    approvals::insert_on(c, &request("standard", "b-1"))?,
                    approvals::insert_on(c, &request("vip", "b-2"))?,
                    approvals::insert_on(c, &request("other", "b-3"))?,
                ))
            })
            .await
            .unwrap()
            .unwrap();
        tx.commit().await.unwrap();
        let policies = vec!["standard".to_owned(), "vip".to_owned()];
        let pending: Vec<i64> = approvals::pending(store, &policies, approver, 150)
            .await
            .unwrap()
            .iter()
            .map(|a| a.id)
            .collect();
        assert_eq!(pending, vec![ids.0, ids.1], "other policies are not listed");
        let counted = (
            approvals::count_pending(store, &policies, approver, 150)
                .await
                .unwrap(),
            approvals::count_pending(store, &policies, requester, 150)
                .await
                .unwrap(),
        );
        let mut tx = store.begin_write().await.unwrap();
        let steps = tx
            .inline(|c| {
                let decided = approvals::decide_on(
                    c,
                    &approvals::Decision {
                        id: ids.0,
                        by: approver,
                        approved: true,
                        at: 160,
                        reason: Some("ok"),
                        expires_at: 300,
                    },
                )?;
                Ok::<_, StoreError>((
                    decided,
                    approvals::use_on(c, ids.0, "wrong binding", 170)?,
                    approvals::use_on(c, ids.0, "b-1", 170)?,
                    approvals::use_on(c, ids.0, "b-1", 171)?,
                    approvals::void_on(c, ids.1)?,
                    approvals::expire_on(c, ids.2, 250)?,
                    approvals::approved_by_since_on(c, approver, 0)?.count,
                    approvals::by_id_on(c, ids.0)?.map(|a| (a.status, a.used_at)),
                ))
            })
            .await
            .unwrap()
            .unwrap();
        tx.commit().await.unwrap();
        assert_eq!(
            (steps.1, steps.2, steps.3),
            (false, true, false),
            "used once, and only by the reveal it is bound to"
        );
        let window = approvals::approved_by_since(store, approver, 0)
            .await
            .unwrap();
        let row = approvals::by_id(store, ids.0).await.unwrap().unwrap();
        (
            ids,
            pending,
            counted,
            steps,
            (window.count, window.oldest),
            format!("{row:?}"),
            approvals::overdue(store, 1_000).await.unwrap().len(),
        )
    }
    let (_dir, sqlite, pg) = both().await;
    let on_sqlite = scenario(&sqlite).await;
    assert_eq!(on_sqlite, scenario(&pg).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_directory_syncs_and_finds_owners_in_any_case_alike_on_both_engines() {
    fn entry(owner: &str, source: &str) -> directory::EntryRow {
        directory::EntryRow {
            owner: owner.into(),
            display_name: Some(owner.to_uppercase()),
            phones: vec!["+41 1".into(), "+41 2".into()],
            manager: None,
            manager_phone: None,
            department: Some("IT".into()),
            mail: None,
            source: source.into(),
            synced_at: 5,
        }
    }
    async fn scenario(store: &Store) -> impl PartialEq + std::fmt::Debug {
        let mut tx = store.begin_write().await.unwrap();
        tx.inline(|c| {
            directory::replace_source_on(
                c,
                "ldap",
                &[
                    entry("b@example.org", "ldap"),
                    entry("Ann@example.org", "ldap"),
                ],
            )?;
            directory::replace_source_on(c, "csv", &[entry("zoe@example.org", "csv")])?;
            directory::record_sync_on(c, "ldap", true, "2 entries", 5)?;
            directory::record_sync_on(c, "csv", true, "1 entry", 5)
        })
        .await
        .unwrap()
        .unwrap();
        tx.commit().await.unwrap();
        let mut tx = store.begin_write().await.unwrap();
        tx.inline(|c| {
            // The CSV now claims Ann (another case) and drops Zoe; LDAP's next sync fails.
            directory::replace_source_on(c, "csv", &[entry("ANN@example.org", "csv")])?;
            directory::record_sync_on(c, "ldap", false, "unreachable", 9)
        })
        .await
        .unwrap()
        .unwrap();
        tx.commit().await.unwrap();
        let ann = directory::by_owner(store, "ann@EXAMPLE.org").await.unwrap();
        assert_eq!(
            ann.as_ref().map(|e| (e.owner.as_str(), e.source.as_str())),
            Some(("ANN@example.org", "csv"))
        );
        let syncs = directory::syncs(store).await.unwrap();
        assert_eq!(
            syncs[1].last_ok_at,
            Some(5),
            "a failed sync keeps the last good time"
        );
        (
            ann,
            directory::by_owner(store, "zoe@example.org").await.unwrap(),
            directory::all(store).await.unwrap(),
            directory::syncs(store).await.unwrap(),
            directory::counts(store).await.unwrap(),
        )
    }
    let (_dir, sqlite, pg) = both().await;
    let on_sqlite = scenario(&sqlite).await;
    assert_eq!(on_sqlite, scenario(&pg).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notices_are_queued_attempted_and_counted_alike_on_both_engines() {
    async fn scenario(store: &Store) -> impl PartialEq + std::fmt::Debug {
        let notice = |serial| outbox::NewNotice {
            kind: "reveal",
            serial,
            owner: "ada@example.org",
            notify_manager: serial == "S2",
            facts: r#"{"operator":"hal","link":"https://vault.example.org/deliver/x"}"#,
            created_at: 10,
        };
        let empty = outbox::last_id(store).await.unwrap();
        let mut tx = store.begin_write().await.unwrap();
        tx.inline(|c| outbox::insert_on(c, &notice("S1")))
            .await
            .unwrap()
            .unwrap();
        tx.commit().await.unwrap();
        for serial in ["S2", "S3", "S4"] {
            outbox::insert(store, &notice(serial)).await.unwrap();
        }
        let due: Vec<_> = outbox::due(store, 10, 10)
            .await
            .unwrap()
            .into_iter()
            .map(|n| (n.id, n.serial, n.notify_manager, n.attempts, n.facts))
            .collect();
        outbox::record_attempt(
            store,
            1,
            11,
            outbox::Attempt::Sent {
                recipients: "ada@example.org",
                facts: "{}",
            },
        )
        .await
        .unwrap();
        outbox::record_attempt(
            store,
            2,
            11,
            outbox::Attempt::Retry {
                error: "421",
                retry_at: 40,
            },
        )
        .await
        .unwrap();
        outbox::record_attempt(store, 3, 11, outbox::Attempt::Failed { error: "550" })
            .await
            .unwrap();
        outbox::record_attempt(store, 4, 11, outbox::Attempt::Unsent { reason: "no smtp" })
            .await
            .unwrap();
        let link_kept: Vec<bool> = texts(store, "SELECT facts FROM outbox ORDER BY id")
            .await
            .unwrap()
            .iter()
            .map(|facts| facts.contains("/deliver/"))
            .collect();
        assert_eq!(link_kept, [false, true, false, false]);
        let rows: Vec<_> = outbox::for_serial(store, "S2")
            .await
            .unwrap()
            .into_iter()
            .map(|n| {
                (
                    n.id,
                    n.kind,
                    n.state,
                    n.attempts,
                    n.last_error,
                    n.recipients,
                )
            })
            .collect();
        (
            empty,
            due,
            link_kept,
            rows,
            outbox::due(store, 39, 10).await.unwrap().len(),
            outbox::due(store, 40, 10).await.unwrap().len(),
            outbox::counts(store).await.unwrap(),
            outbox::last_id(store).await.unwrap(),
        )
    }
    let (_dir, sqlite, pg) = both().await;
    let on_sqlite = scenario(&sqlite).await;
    assert_eq!(on_sqlite, scenario(&pg).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delivery_links_are_replaced_counted_locked_and_used_alike_on_both_engines() {
    async fn scenario(store: &Store) -> impl PartialEq + std::fmt::Debug {
        let token = token_row(store, "T-9").await;
        let mut tx = store.begin_write().await.unwrap();
        let voided = (
            delivery_links::replace(&mut tx, token, b"h1", "hal", 1, 100)
                .await
                .unwrap(),
            delivery_links::replace(&mut tx, token, b"h2", "hal", 2, 100)
                .await
                .unwrap(),
        );
        tx.commit().await.unwrap();
        assert_eq!(voided, (0, 1), "a new link voids the open one");
        let second = delivery_links::by_hash(store, b"h2")
            .await
            .unwrap()
            .unwrap();
        let counts = (
            delivery_links::count_wrong_code(store, second.id, 2)
                .await
                .unwrap(),
            delivery_links::count_wrong_code(store, second.id, 2)
                .await
                .unwrap(),
        );
        assert_eq!(counts, (1, 2));
        delivery_links::mark_used(store, 1).await.unwrap();
        (
            voided,
            counts,
            delivery_links::by_hash(store, b"h1").await.unwrap(),
            delivery_links::by_hash(store, b"h2").await.unwrap(),
            delivery_links::by_hash(store, b"none").await.unwrap(),
        )
    }
    let (_dir, sqlite, pg) = both().await;
    let on_sqlite = scenario(&sqlite).await;
    assert_eq!(on_sqlite, scenario(&pg).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grouped_jobs_commit_and_roll_back_alike_on_both_engines() {
    async fn scenario(store: &Store) -> impl PartialEq + std::fmt::Debug {
        let jobs = (1..=12).map(|n| async move {
            let mut job = store.begin_grouped().await.unwrap();
            siem::set(&mut *job, &format!("sink-{n:02}"), n, n)
                .await
                .unwrap();
            if n % 3 == 0 {
                job.rollback().await;
            } else {
                job.commit().await.unwrap();
            }
        });
        futures::future::join_all(jobs).await;
        let kept = siem::list(store).await.unwrap();
        assert_eq!(kept.len(), 8, "the rolled back jobs left nothing");
        kept
    }
    let (_dir, sqlite, pg) = both().await;
    let on_sqlite = scenario(&sqlite).await;
    assert_eq!(on_sqlite, scenario(&pg).await);
}

/// `Inline` on PostgreSQL: a closure's reads see its own writes, and the transaction decides
/// whether they stay.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statement_sequences_run_inside_a_postgres_transaction_and_roll_back_or_commit_with_it() {
    let store = postgres_store().await;
    let row = forged(1, "token:A", "2026-12-01T00:00:00Z");
    let work = |c: &super::Inline<'_>| -> Result<_, StoreError> {
        audit::insert_on(c, &row)?;
        outbox::insert_on(
            c,
            &outbox::NewNotice {
                kind: "reveal",
                serial: "S1",
                owner: "ada@example.org",
                notify_manager: false,
                facts: "{}",
                created_at: 1,
            },
        )?;
        directory::record_sync_on(c, "ldap", true, "ok", 1)?;
        Ok((
            audit::head_on(c)?.map(|(seq, _)| seq),
            directory::all_on(c)?.len(),
        ))
    };
    let mut tx = store.begin_write().await.unwrap();
    assert_eq!(tx.inline(work).await.unwrap().unwrap(), (Some(1), 0));
    drop(tx);
    assert_eq!(audit::head(&store).await.unwrap(), None, "rolled back");
    assert_eq!(outbox::last_id(&store).await.unwrap(), None);
    assert!(directory::syncs(&store).await.unwrap().is_empty());

    let mut tx = store.begin_write().await.unwrap();
    assert_eq!(tx.inline(work).await.unwrap().unwrap(), (Some(1), 0));
    tx.commit().await.unwrap();
    assert_eq!(audit::count(&store).await.unwrap(), 1);
    assert_eq!(outbox::counts(&store).await.unwrap().pending, 1);
    assert_eq!(directory::syncs(&store).await.unwrap().len(), 1);
}

/// Without tokio's multi-threaded runtime `block_in_place` would panic: the store says why
/// instead.
#[test]
fn statement_sequences_on_postgres_refuse_a_current_thread_runtime_with_a_clear_error() {
    let url = std::thread::spawn(|| {
        tokio::runtime::Runtime::new()
            .unwrap()
            .block_on(pg_cluster::fresh_database())
            .unwrap()
    })
    .join()
    .unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let store = Store::open_postgres(&PostgresUrl::parse(&url).unwrap(), None, 2)
            .await
            .unwrap();
        let refused = audit::head(&store).await.unwrap_err().to_string();
        assert!(refused.contains("multi-threaded runtime"), "{refused}");
        // Plain async queries need no such thing.
        assert_eq!(audit::count(&store).await.unwrap(), 0);
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_only_operations_on_postgres_name_the_alternative_instead_of_panicking() {
    let store = postgres_store().await;
    for (refused, names) in [
        (store.pool().err(), "pass the store itself"),
        (store.writer().err(), "Store::begin_write"),
        (store.path().err(), "pg_dump"),
        (
            super::snapshot::vacuum_into(&store, std::path::Path::new("x"))
                .await
                .err(),
            "pg_dump",
        ),
    ] {
        let refused = refused.map(|e| e.to_string()).unwrap_or_default();
        assert!(refused.contains(names), "{refused}");
    }
    assert_eq!(store.recorded_vault_id().unwrap(), None);
    store.ping().await.unwrap();
    store
        .readiness(std::time::Duration::from_secs(5))
        .await
        .unwrap();
}

/// Two instances (two pools on one database) append at once, many tasks each: one chain, no
/// fork and no gap, every link and signature checked by the verifier `migrate-to-postgres`
/// uses.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_appends_from_two_instances_make_one_chain_without_fork_or_gap() {
    const TASKS: usize = 16;
    const APPENDS: usize = 10;
    let url = PostgresUrl::parse(&pg_cluster::fresh_database().await.unwrap()).unwrap();
    let a = Store::open_postgres(&url, None, 4).await.unwrap();
    let b = Store::open_postgres(&url, None, 4).await.unwrap();
    let vault = Arc::new(
        crate::vault::open::create(
            &a,
            OffsetDateTime::UNIX_EPOCH,
            "test",
            vec![("dev".into(), crate::vault::open::SlotRequest::Development)],
        )
        .await
        .unwrap(),
    );
    let tasks = (0..TASKS).map(|task| {
        let store = if task % 2 == 0 { a.clone() } else { b.clone() };
        let vault = vault.clone();
        tokio::spawn(async move {
            for n in 0..APPENDS {
                let mut tx = store.begin_write().await.unwrap();
                let event = crate::audit::NewEvent::new(
                    format!("operator:{task}"),
                    "test.event",
                    format!("token:T{n}"),
                );
                crate::audit::append(&mut tx, &vault, OffsetDateTime::UNIX_EPOCH, event)
                    .await
                    .unwrap();
                // Another statement between the append and the commit, as an action has.
                tokio::task::yield_now().await;
                tx.commit().await.unwrap();
            }
        })
    });
    for task in futures::future::join_all(tasks).await {
        task.unwrap();
    }
    let rows = audit::page_after(&b, 0, 1_000_000).await.unwrap();
    let expected = 1 + TASKS * APPENDS;
    assert_eq!(rows.len(), expected);
    let mut verifier = crate::audit::verify::StreamVerifier::new(vault.id());
    for row in &rows {
        assert!(verifier.push(&row.as_ref()), "chain broken at {}", row.seq);
    }
    let verdict = verifier.finish(&vault.audit_public_key());
    assert!(
        verdict.broken.is_none(),
        "{:?}",
        verdict.broken.map(|b| b.reason)
    );
    assert_eq!(verdict.events, expected as u64);
    assert_eq!(
        verdict.head.map(|h| h.seq),
        audit::head(&a).await.unwrap().map(|(seq, _)| seq)
    );
    a.close().await;
    b.close().await;
}

#[test]
fn the_placeholder_translation_numbers_bare_placeholders_and_keeps_numbered_ones() {
    assert_eq!(
        super::dollars("a = ? AND b = ? AND c = ?12"),
        "a = $1 AND b = $2 AND c = $12"
    );
    assert_eq!(super::dollars("x = ?1 OR y = ?1"), "x = $1 OR y = $1");
}

/// `store::sessions` against the table tower-sessions keeps (its SQLite store's, created by
/// `web::session::SessionTable`; on PostgreSQL the same columns, made here until the session
/// store moves there).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signed_in_session_is_written_replaced_and_read_with_its_operator_alike_on_both_engines()
{
    async fn scenario(store: &Store) -> impl PartialEq + std::fmt::Debug {
        let operator = operators::insert_operator(store, "hal", "h-1", "helpdesk", 0)
            .await
            .unwrap();
        let expiry = OffsetDateTime::from_unix_timestamp(2_000_000_000).unwrap();
        let row = |id: &str, replaces: Option<&str>| super::sessions::SessionRow {
            id: id.into(),
            data: operator.to_be_bytes().to_vec(),
            expiry,
            replaces: replaces.map(str::to_owned),
        };
        let mut tx = store.begin_write().await.unwrap();
        super::sessions::insert(&mut tx, &row("s-1", None))
            .await
            .unwrap();
        tx.commit().await.unwrap();
        let mut tx = store.begin_write().await.unwrap();
        super::sessions::insert(&mut tx, &row("s-2", Some("s-1")))
            .await
            .unwrap();
        tx.commit().await.unwrap();
        let read = |id: &'static str| async move {
            super::sessions::with_operator(store, id, |data| {
                Some(i64::from_be_bytes(data.try_into().ok()?))
            })
            .await
            .unwrap()
            .map(|(data, operator)| (data, operator.map(|o| (o.id, o.name))))
        };
        let replaced = read("s-1").await;
        assert_eq!(replaced, None, "the replaced session is gone");
        (replaced, read("s-2").await)
    }
    let dir = tempfile::tempdir().unwrap();
    let sqlite = Store::open(dir.path()).await.unwrap();
    raw(
        &sqlite,
        "CREATE TABLE sessions (id TEXT PRIMARY KEY NOT NULL, data BLOB NOT NULL, expiry_date INTEGER NOT NULL)",
    )
    .await
    .unwrap();
    let pg = postgres_store().await;
    raw(
        &pg,
        "CREATE TABLE sessions (id TEXT PRIMARY KEY NOT NULL, data BYTEA NOT NULL, expiry_date TIMESTAMPTZ NOT NULL)",
    )
    .await
    .unwrap();
    let on_sqlite = scenario(&sqlite).await;
    assert_eq!(on_sqlite, scenario(&pg).await);
}

/// A new escrowed token's row for the token scenarios.
fn new_token<'a>(
    serial: &'a str,
    owner: Option<&'a str>,
    seed: &'a [u8],
) -> tokens::NewTokenRow<'a> {
    tokens::NewTokenRow {
        token_id: serial,
        serial,
        owner,
        display_name: None,
        manufacturer: Some("Token2"),
        model: None,
        algorithm: "SHA1",
        digits: 6,
        period: 30,
        policy: "standard",
        sealed_seed: seed,
        captured_by: "cli:test",
        captured_at: 10,
        retention_deadline: 1_000,
    }
}

/// Serials of a list of rows, in order.
fn serials_of(rows: &[tokens::TokenRow]) -> Vec<String> {
    rows.iter().map(|r| r.serial.clone()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_is_captured_programmed_shipped_revealed_and_purged_alike_on_both_engines() {
    async fn scenario(store: &Store) -> impl PartialEq + std::fmt::Debug {
        let mut tx = store.begin_write().await.unwrap();
        for (i, (serial, owner)) in [
            ("AB-100", Some("Ada@Example.org")),
            ("ab-200", Some("bob@example.org")),
            ("Zed-1", None),
            ("x-9", Some("abe@example.org")),
        ]
        .into_iter()
        .enumerate()
        {
            let mut row = new_token(serial, owner, b"sealed-seed");
            row.captured_at = 10 + i as i64;
            row.retention_deadline = 1_000 - i as i64;
            if serial == "Zed-1" {
                row.display_name = Some("Abacus desk");
            }
            tokens::insert(&mut tx, &row).await.unwrap();
        }
        tx.commit().await.unwrap();
        let duplicate = tokens::insert(store, &new_token("AB-100", None, b"s"))
            .await
            .unwrap_err()
            .is_unique_violation();
        let ab = tokens::by_serial(store, "AB-100").await.unwrap().unwrap();
        let by_id = tokens::by_id(store, ab.id).await.unwrap().map(|r| r.serial);

        // Search: case-insensitive prefixes of serial, owner or display name.
        let search = |query: &str, state: Option<&str>, owner: Option<&str>, due: Option<i64>| {
            tokens::TokenFilter {
                query: Some(query.to_owned()),
                state: state.map(str::to_owned),
                owner: owner.map(str::to_owned),
                due_before: due,
                limit: 10,
            }
        };
        let mut found = Vec::new();
        for filter in [
            search("ab", None, None, None),
            search("AB-1", None, None, None),
            search("abe", None, None, None),
            search("nobody", None, None, None),
            search("", Some("escrowed"), Some("bob@example.org"), None),
            search("", None, None, Some(999)),
        ] {
            found.push(serials_of(&tokens::search(store, &filter).await.unwrap()));
        }
        assert_eq!(
            found[0],
            ["x-9", "Zed-1", "ab-200", "AB-100"],
            "serial, display name or owner starting with `ab` in any case, newest first"
        );
        assert!(duplicate, "a second AB-100 is a unique violation");
        tokens::update_fields(store, ab.id, Some("ada@example.org"), Some("Ada"), "vip")
            .await
            .unwrap();

        // A generated token: shown once, then programmed.
        let mut tx = store.begin_write().await.unwrap();
        let generated =
            tokens::insert_programming(&mut tx, &new_token("GEN-1", None, b"gen"), None)
                .await
                .unwrap();
        let shown = (
            tokens::mark_seed_shown(&mut tx, generated, "someone else", 20)
                .await
                .unwrap(),
            tokens::mark_seed_shown(&mut tx, generated, "cli:test", 20)
                .await
                .unwrap(),
            tokens::mark_seed_shown(&mut tx, generated, "cli:test", 21)
                .await
                .unwrap(),
        );
        let programmed = (
            tokens::finish_programming(&mut tx, generated, 1)
                .await
                .unwrap(),
            tokens::finish_programming(&mut tx, generated, 1)
                .await
                .unwrap(),
        );
        let verified = tokens::record_verified(&mut tx, ab.id, -1, 30, "hal")
            .await
            .unwrap();
        let shipped = tokens::record_shipment(
            &mut tx,
            &tokens::ShipmentRow {
                id: ab.id,
                at: 31,
                by: "hal",
                carrier: Some("DHL"),
                tracking: Some("JD1"),
                expected: Some("2026-12-01"),
            },
        )
        .await
        .unwrap();
        tx.commit().await.unwrap();
        let in_post = (
            tokens::in_transit(store, "2026-12-02", 1_000)
                .await
                .unwrap(),
            tokens::in_transit(store, "2026-11-30", 500).await.unwrap(),
        );
        let mut existing = tokens::existing_serials(store, &["AB-100", "ab-100", "GEN-1", "none"])
            .await
            .unwrap();
        existing.sort();

        // Seeds: read, re-sealed under a new header, read with the row.
        let seed = tokens::sealed_seed(store, ab.id).await.unwrap();
        let batch = tokens::sealed_not_under(store, b"sealed", 0, 10)
            .await
            .unwrap();
        let batch: Vec<(String, Vec<u8>)> = batch
            .into_iter()
            .map(|r| (r.serial, r.sealed_seed))
            .collect();
        let mut tx = store.begin_write().await.unwrap();
        let resealed = tokens::reseal(
            &mut tx,
            &[
                (ab.id, b"sealed-seed", b"v2-seed"),
                (ab.id, b"stale", b"v3"),
            ],
        )
        .await
        .unwrap();
        tx.commit().await.unwrap();

        // Reveals and their windows; wrong delivery codes.
        let hal = operators::insert_operator(store, "hal", "h-1", "helpdesk", 0)
            .await
            .unwrap();
        let mut tx = store.begin_write().await.unwrap();
        let granted = tx
            .inline(|c| {
                let with_seed = tokens::by_serial_with_seed_on(c, "AB-100")?
                    .map(|t| (t.row.serial, t.sealed_seed));
                let missing = tokens::by_serial_with_seed_on(c, "nope")?.is_none();
                tokens::insert_reveal_on(c, ab.id, hal, 40)?;
                tokens::insert_reveal_on(c, ab.id, hal, 41)?;
                let (token, operator) = tokens::reveal_windows_on(c, ab.id, 40, hal, 0)?;
                let on = tokens::by_serial_on(c, "x-9")?.map(|r| r.owner);
                Ok::<_, StoreError>((with_seed, missing, token, operator, on))
            })
            .await
            .unwrap()
            .unwrap();
        tx.commit().await.unwrap();
        tokens::insert_delivery_attempt(store, ab.id, 50)
            .await
            .unwrap();
        tokens::insert_delivery_attempt(store, ab.id, 52)
            .await
            .unwrap();
        let attempts = tokens::delivery_attempts_since(store, ab.id, 50)
            .await
            .unwrap();
        let recent = tokens::recent_reveals(store, 5).await.unwrap();

        // Figures, the sweeper's view, and the purge.
        let before = (
            tokens::count_by_state(store).await.unwrap(),
            tokens::escrowed_and_overdue(store, 998).await.unwrap(),
            serials_of(&tokens::overdue(store, 999, 10).await.unwrap()),
            token_pages::counts(store).await.unwrap(),
        );
        let mut tx = store.begin_write().await.unwrap();
        let purge = |id, by| tokens::PurgeRow {
            id,
            reason: "delivered",
            at: 60,
            delivered_by: by,
            drift_steps: Some(2),
        };
        let purged = (
            tokens::purge(&mut tx, &purge(ab.id, Some("hal")))
                .await
                .unwrap(),
            tokens::purge(&mut tx, &purge(ab.id, Some("hal")))
                .await
                .unwrap(),
        );
        tx.commit().await.unwrap();
        let after = (
            tokens::sealed_seed(store, ab.id).await.unwrap(),
            format!("{:?}", tokens::by_id(store, ab.id).await.unwrap()),
            tokens::count_by_state(store).await.unwrap(),
        );
        (
            duplicate,
            by_id,
            found,
            (shown, programmed, verified, shipped, in_post, existing),
            (seed, batch, resealed),
            format!("{granted:?}"),
            (attempts, recent),
            before,
            purged,
            after,
        )
    }
    let (_dir, sqlite, pg) = both().await;
    let on_sqlite = scenario(&sqlite).await;
    assert_eq!(on_sqlite, scenario(&pg).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_pages_sort_page_and_search_alike_on_both_engines() {
    async fn scenario(store: &Store) -> impl PartialEq + std::fmt::Debug {
        let mut tx = store.begin_write().await.unwrap();
        let owners = [
            "amy@x.org",
            "Bea@x.org",
            "carl@x.org",
            "_dan@x.org",
            "bea@x.org",
        ];
        for i in 0..12i64 {
            let serial = format!("{}-{:02}", ["Ab", "ab", "B", "a_"][i as usize % 4], i);
            let mut row = new_token(&serial, None, b"seed");
            let owner = owners[i as usize % owners.len()];
            row.owner = (i != 7).then_some(owner);
            row.captured_at = 100 + i % 5;
            row.retention_deadline = 2_000 + i % 3;
            row.policy = ["standard", "vip", "Vip"][i as usize % 3];
            tokens::insert(&mut tx, &row).await.unwrap();
        }
        tx.commit().await.unwrap();
        let mut shipping = store.begin_write().await.unwrap();
        for serial in ["Ab-00", "B-02"] {
            let row = tokens::by_serial(&mut shipping, serial)
                .await
                .unwrap()
                .unwrap();
            tokens::record_shipment(
                &mut shipping,
                &tokens::ShipmentRow {
                    id: row.id,
                    at: 1,
                    by: "hal",
                    carrier: None,
                    tracking: None,
                    expected: Some(if serial == "B-02" {
                        "2026-01-01"
                    } else {
                        "2027-01-01"
                    }),
                },
            )
            .await
            .unwrap();
        }
        shipping.commit().await.unwrap();
        let mut pages = Vec::new();
        for sort in token_pages::TokenSort::ALL {
            for descending in [false, true] {
                for query in [None, Some("AB"), Some("bea"), Some("a_")] {
                    // Walk forwards to the end, then one page back.
                    let mut cursor = None;
                    let mut walk = Vec::new();
                    loop {
                        let page = token_pages::page(
                            store,
                            &token_pages::PageRequest {
                                query: query.map(str::to_owned),
                                sort,
                                descending,
                                cursor: cursor.clone(),
                                limit: 4,
                                ..Default::default()
                            },
                        )
                        .await
                        .unwrap();
                        walk.push((serials_of(&page.rows), page.has_previous, page.has_next));
                        match page.rows.last() {
                            Some(last) if page.has_next => {
                                cursor = Some(token_pages::Cursor::After(last.serial.clone()))
                            }
                            _ => {
                                if let Some(first) = page.rows.first() {
                                    let back = token_pages::page(
                                        store,
                                        &token_pages::PageRequest {
                                            query: query.map(str::to_owned),
                                            sort,
                                            descending,
                                            cursor: Some(token_pages::Cursor::Before(
                                                first.serial.clone(),
                                            )),
                                            limit: 4,
                                            ..Default::default()
                                        },
                                    )
                                    .await
                                    .unwrap();
                                    walk.push((
                                        serials_of(&back.rows),
                                        back.has_previous,
                                        back.has_next,
                                    ));
                                }
                                break;
                            }
                        }
                    }
                    pages.push((sort, descending, query, walk));
                }
            }
        }
        let mut filtered = Vec::new();
        for (state, policy, in_post) in [
            (Some("escrowed"), Some("Vip"), None),
            (None, None, Some(token_pages::InPost::InTransit)),
            (
                None,
                None,
                Some(token_pages::InPost::Late {
                    today: "2026-06-01".into(),
                }),
            ),
            (
                None,
                None,
                Some(token_pages::InPost::NearingRetention { soon: 2_001 }),
            ),
        ] {
            let page = token_pages::page(
                store,
                &token_pages::PageRequest {
                    state: state.map(str::to_owned),
                    policy: policy.map(str::to_owned),
                    in_post,
                    sort: token_pages::TokenSort::Serial,
                    limit: 20,
                    ..Default::default()
                },
            )
            .await
            .unwrap();
            filtered.push(serials_of(&page.rows));
        }
        let (_, _, _, first_walk) = &pages[0];
        assert_eq!(
            first_walk
                .iter()
                .map(|(rows, ..)| rows.len())
                .sum::<usize>(),
            12 + 4,
            "three pages of four, then the last page again backwards"
        );
        (pages, filtered, token_pages::counts(store).await.unwrap())
    }
    let (_dir, sqlite, pg) = both().await;
    let on_sqlite = scenario(&sqlite).await;
    assert_eq!(on_sqlite, scenario(&pg).await);
}

/// Past [`tokens::PG_ROWS_PER_INSERT`] rows a chunk is several multi-row inserts on
/// PostgreSQL, and past 10,000 matches the search reads the list's order instead of
/// collecting candidates: both are crossed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chunked_import_is_invisible_until_committed_and_refuses_duplicates_alike_on_both_engines(
) {
    async fn scenario(store: &Store) -> impl PartialEq + std::fmt::Debug {
        let begin = |store: &Store| {
            let store = store.clone();
            async move {
                let mut tx = store.begin_write().await.unwrap();
                let id = imports::begin(
                    &mut tx,
                    &imports::NewImport {
                        actor: "cli:test",
                        file: "f.csv",
                        started_at: 1,
                        pid: 1,
                        pid_start: 1,
                    },
                )
                .await
                .unwrap();
                tx.commit().await.unwrap();
                id
            }
        };
        let import = begin(store).await;
        let serials: Vec<String> = (0..10_050).map(|i| format!("Bulk-{i:05}")).collect();
        let mut tx = store.begin_write().await.unwrap();
        let inserted = tokens::insert_bulk(&mut tx, import, |sink| {
            for serial in &serials {
                sink.insert(&new_token(serial, Some("Owner@x.org"), b"sealed"))?;
            }
            Ok::<_, StoreError>(serials.len())
        })
        .await
        .unwrap()
        .unwrap();
        tx.commit().await.unwrap();
        let request = token_pages::PageRequest {
            query: Some("bulk".into()),
            sort: token_pages::TokenSort::Serial,
            descending: true,
            limit: 3,
            ..Default::default()
        };
        let unseen = (
            tokens::by_serial(store, "Bulk-00001")
                .await
                .unwrap()
                .is_none(),
            tokens::count_by_state(store).await.unwrap(),
            tokens::existing_serials(store, &["Bulk-00001"])
                .await
                .unwrap(),
            token_pages::page(store, &request).await.unwrap().rows.len(),
        );
        let mut tx = store.begin_write().await.unwrap();
        assert!(imports::mark_committed(&mut tx, import, 3).await.unwrap());
        tx.commit().await.unwrap();
        let broad = token_pages::page(store, &request).await.unwrap();
        let seen = (
            tokens::count_by_state(store).await.unwrap(),
            tokens::existing_serials(store, &["Bulk-00001"])
                .await
                .unwrap(),
            serials_of(&broad.rows),
            broad.has_next,
            serials_of(
                &tokens::search(
                    store,
                    &tokens::TokenFilter {
                        query: Some("OWNER".into()),
                        limit: 2,
                        ..Default::default()
                    },
                )
                .await
                .unwrap(),
            ),
        );

        // A duplicate serial (here in the chunk's last, partial insert on PostgreSQL) is a
        // unique violation, reported by the sink or by insert_bulk, and nothing is kept.
        let second = begin(store).await;
        let mut tx = store.begin_write().await.unwrap();
        let result = tokens::insert_bulk(&mut tx, second, |sink| {
            sink.insert(&new_token("New-1", None, b"s"))?;
            sink.insert(&new_token("Bulk-00007", None, b"s"))
        })
        .await;
        let violated = match result {
            Err(e) | Ok(Err(e)) => e.is_unique_violation(),
            Ok(Ok(())) => false,
        };
        drop(tx);
        let kept = tokens::existing_serials(store, &["New-1"]).await.unwrap();
        assert!(violated && kept.is_empty());
        assert_eq!(seen.2, ["Bulk-10049", "Bulk-10048", "Bulk-10047"]);
        (inserted, unseen, seen, violated, kept)
    }
    let (_dir, sqlite, pg) = both().await;
    let on_sqlite = scenario(&sqlite).await;
    assert_eq!(on_sqlite, scenario(&pg).await);
}

/// On PostgreSQL an update writes a new row version: the purged seed's old versions stay as
/// dead tuples until vacuumed, which the purge's commit does. `pageinspect` shows every
/// tuple of the table, live or dead.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_purge_on_postgres_leaves_no_row_version_holding_the_sealed_bytes() {
    let store = postgres_store().await;
    raw(&store, "CREATE EXTENSION IF NOT EXISTS pageinspect")
        .await
        .unwrap();
    const MARKER: &[u8] = b"SEALED-MARKER-0123456789abcdef";
    let holding = |store: Store| async move {
        let n: Result<i64, StoreError> = async {
            Ok(on_either!(&store, |conn| sqlx::query_scalar(
            "SELECT COUNT(*) FROM generate_series(0, (pg_relation_size('tokens') / 8192)::int - 1) AS b, \
             heap_page_items(get_raw_page('tokens', b)) WHERE position($1 in t_data) > 0",
        )
            .bind(MARKER)
            .fetch_one(&mut *conn)
            .await?))
        }
        .await;
        n.unwrap()
    };
    tokens::insert(&store, &new_token("P-1", None, MARKER))
        .await
        .unwrap();
    let id = tokens::by_serial(&store, "P-1").await.unwrap().unwrap().id;
    assert_eq!(holding(store.clone()).await, 1);
    let mut tx = store.begin_write().await.unwrap();
    assert!(tokens::purge(
        &mut tx,
        &tokens::PurgeRow {
            id,
            reason: "cancelled",
            at: 5,
            delivered_by: None,
            drift_steps: None,
        },
    )
    .await
    .unwrap());
    // Before the commit the old version is still there (what the VACUUM is for).
    assert_eq!(holding(store.clone()).await, 1);
    tx.commit().await.unwrap();
    assert_eq!(holding(store.clone()).await, 0);
    assert_eq!(tokens::sealed_seed(&store, id).await.unwrap(), None);
}

/// BENCHMARKS.md, "PostgreSQL": a 100,000-row bulk import in 1,000-row chunks (the domain's
/// chunking), one transaction each, on the throwaway cluster. Run with
/// `cargo test --release --lib both_engines::bulk_import_of_100000_rows -- --ignored --nocapture`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement, not a check"]
async fn bulk_import_of_100000_rows_timed_on_both_engines() {
    let (_dir, sqlite, pg) = both().await;
    let serials: Vec<String> = (0..100_000).map(|i| format!("SN-{i:07}")).collect();
    let seed = [7u8; 60];
    for (name, store) in [("sqlite", &sqlite), ("postgres", &pg)] {
        let mut tx = store.begin_write().await.unwrap();
        let import = imports::begin(
            &mut tx,
            &imports::NewImport {
                actor: "bench",
                file: "f.csv",
                started_at: 1,
                pid: 1,
                pid_start: 1,
            },
        )
        .await
        .unwrap();
        tx.commit().await.unwrap();
        let started = std::time::Instant::now();
        for chunk in serials.chunks(1_000) {
            let mut tx = store.begin_write().await.unwrap();
            tokens::insert_bulk(&mut tx, import, |sink| {
                for serial in chunk {
                    sink.insert(&new_token(serial, Some("someone@example.org"), &seed))?;
                }
                Ok::<_, StoreError>(())
            })
            .await
            .unwrap()
            .unwrap();
            tx.commit().await.unwrap();
        }
        println!("{name}: 100,000 rows in {:?}", started.elapsed());
    }
}

/// The bulk reader behind verify, export, the SIEM forwarder and `doctor`
/// ([`audit::AuditReader`]) answers alike on both engines: the same trail (made on SQLite,
/// copied event by event to PostgreSQL) verifies to the same verdict, exports to the same bytes
/// in both formats, and a forged event breaks it at the same place.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_trail_verifies_and_exports_alike_on_both_engines() {
    use crate::audit::export::{self, ExportFilter, Format};
    use crate::audit::verify::{verify_live, AnchoredHead, VerifyOptions};

    let (_dir, sqlite, vault) = crate::vault::open::temporary().await;
    let vault = Arc::new(vault);
    let at = OffsetDateTime::from_unix_timestamp(1_800_000_000).unwrap();
    for n in 0..40 {
        let mut tx = sqlite.begin_write().await.unwrap();
        let event = crate::audit::NewEvent::new(
            format!("operator:op{}", n % 3),
            "test.event",
            format!("token:T{}", n % 4),
        )
        .details(serde_json::json!({ "n": n, "text": "a,\"quoted\"\nline" }));
        crate::audit::append(&mut tx, &vault, at, event)
            .await
            .unwrap();
        tx.commit().await.unwrap();
    }
    let postgres = postgres_store().await;
    for row in audit::page_after(&sqlite, 0, 1_000).await.unwrap() {
        audit::insert(&postgres, &row).await.unwrap();
    }

    async fn verdicts(store: &Store, vault: &crate::vault::Vault) -> Vec<String> {
        let source = store.audit_source().unwrap();
        let head = audit::head(store).await.unwrap().unwrap();
        let anchored = |seq: i64| AnchoredHead {
            seq,
            hash: head.1.clone().try_into().unwrap(),
        };
        let mut out = Vec::new();
        for options in [
            VerifyOptions::default(),
            VerifyOptions {
                all_signatures: true,
                threads: 3,
                ..Default::default()
            },
            VerifyOptions {
                expect_head: Some(anchored(head.0)),
                ..Default::default()
            },
            VerifyOptions {
                expect_head: Some(anchored(head.0 + 5)),
                ..Default::default()
            },
        ] {
            let source = source.clone();
            let (id, key) = (vault.id().to_owned(), vault.audit_public_key());
            let verdict = tokio::task::spawn_blocking(move || {
                verify_live(&source, &id, &key, &options).unwrap()
            })
            .await
            .unwrap();
            out.push(format!("{verdict:?}"));
        }
        out
    }

    async fn exported(store: &Store, vault: &Arc<crate::vault::Vault>) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        for (format, filter) in [
            (Format::Jsonl, ExportFilter::default()),
            (
                Format::Csv,
                ExportFilter {
                    token: Some("T1".into()),
                    actor: Some("operator:op2".into()),
                    ..Default::default()
                },
            ),
        ] {
            let at = OffsetDateTime::from_unix_timestamp(1_800_000_100).unwrap();
            let plan = export::begin(store, vault, at, "cli:test", format, &filter)
                .await
                .unwrap();
            let source = store.audit_source().unwrap();
            let vault = vault.clone();
            let bytes = tokio::task::spawn_blocking(move || {
                let mut bytes = Vec::new();
                export::write(
                    &source,
                    &plan,
                    &vault,
                    |chunk| {
                        bytes.extend_from_slice(&chunk);
                        Ok(())
                    },
                    |_| {},
                )
                .unwrap();
                bytes
            })
            .await
            .unwrap();
            out.push(bytes);
        }
        out
    }

    let sound = verdicts(&sqlite, &vault).await;
    assert!(sound[0].contains("broken: None"), "{sound:?}");
    assert!(sound[3].contains("truncated"), "{sound:?}");
    assert_eq!(sound, verdicts(&postgres, &vault).await);

    let exports = exported(&sqlite, &vault).await;
    assert!(exports[0].len() > 40 * 300, "{}", exports[0].len());
    assert_eq!(exports, exported(&postgres, &vault).await);

    // A forged event after the head (a link to nothing) breaks both trails at its seq.
    let (head, _) = audit::head(&sqlite).await.unwrap().unwrap();
    let mut forged = forged(head + 1, "token:T9", "2027-01-15T08:00:00.000Z");
    forged.prev_hash = vec![7; 32];
    audit::insert(&sqlite, &forged).await.unwrap();
    audit::insert(&postgres, &forged).await.unwrap();
    let broken = verdicts(&sqlite, &vault).await;
    assert!(
        broken[0].contains(&format!("seq: {}", head + 1)),
        "{broken:?}"
    );
    assert_eq!(broken, verdicts(&postgres, &vault).await);
    postgres.close().await;
}

/// Serials whose order under a locale differs from their byte order.
const LOCALE_SENSITIVE: [&str; 10] = ["a-1", "A0", "a_2", "B", "b", "a", "A-0", "a.1", "Z", "_x"];

/// Text keys the lists order and page by compare bytewise on a PostgreSQL database whose
/// collation is not "C" (as on a Debian cluster initialised under `en_US.UTF-8`), as on SQLite:
/// the token list in every direction with no row skipped or repeated across pages, operators
/// and SIEM sinks; and the serial keyset walks the serial index instead of sorting the table.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn text_keys_order_and_page_bytewise_on_a_database_whose_collation_is_not_c() {
    async fn scenario(store: &Store) -> Vec<Vec<String>> {
        let mut tx = store.begin_write().await.unwrap();
        for serial in LOCALE_SENSITIVE {
            tokens::insert(&mut tx, &new_token(serial, None, b"seed"))
                .await
                .unwrap();
        }
        tx.commit().await.unwrap();
        let mut walks = Vec::new();
        for descending in [false, true] {
            let request = |cursor| token_pages::PageRequest {
                sort: token_pages::TokenSort::Serial,
                descending,
                cursor,
                limit: 3,
                ..Default::default()
            };
            // Forwards to the end, then backwards to the start.
            let (mut forwards, mut cursor) = (Vec::new(), None);
            loop {
                let page = token_pages::page(store, &request(cursor)).await.unwrap();
                forwards.extend(serials_of(&page.rows));
                match page.rows.last() {
                    Some(last) if page.has_next => {
                        cursor = Some(token_pages::Cursor::After(last.serial.clone()))
                    }
                    _ => break,
                }
            }
            let mut backwards = Vec::new();
            let mut cursor = forwards.last().cloned().map(token_pages::Cursor::Before);
            loop {
                let page = token_pages::page(store, &request(cursor)).await.unwrap();
                backwards.splice(0..0, serials_of(&page.rows));
                match page.rows.first() {
                    Some(first) if page.has_previous => {
                        cursor = Some(token_pages::Cursor::Before(first.serial.clone()))
                    }
                    _ => break,
                }
            }
            backwards.extend(forwards.last().cloned());
            walks.push(forwards);
            walks.push(backwards);
        }
        for (i, name) in LOCALE_SENSITIVE.iter().enumerate() {
            operators::insert_operator(store, name, &format!("h{i}"), "helpdesk", 1)
                .await
                .unwrap();
            siem::set(store, name, 1, 1).await.unwrap();
        }
        let names = operators::list_operators(store).await.unwrap();
        walks.push(names.into_iter().map(|o| o.name).collect());
        let sinks = siem::list(store).await.unwrap();
        walks.push(sinks.into_iter().map(|c| c.sink).collect());
        walks
    }

    let url =
        PostgresUrl::parse(&pg_cluster::fresh_database_in_locale_order().await.unwrap()).unwrap();
    let pg = Store::open_postgres(&url, None, 4).await.unwrap();
    let mut bytewise: Vec<String> = LOCALE_SENSITIVE.map(str::to_owned).to_vec();
    bytewise.sort();
    // The premise: this database's own order is not the byte order.
    let values = LOCALE_SENSITIVE.map(|s| format!("('{s}')")).join(", ");
    let own = texts(
        &pg,
        &format!("SELECT x FROM (VALUES {values}) AS v(x) ORDER BY x"),
    )
    .await
    .unwrap();
    assert_ne!(own, bytewise, "the test database orders text bytewise");

    let dir = tempfile::tempdir().unwrap();
    let sqlite = Store::open(dir.path()).await.unwrap();
    let on_sqlite = scenario(&sqlite).await;
    let mut descending = bytewise.clone();
    descending.reverse();
    assert_eq!(
        on_sqlite,
        [
            vec![bytewise.clone(); 2],
            vec![descending; 2],
            vec![bytewise; 2]
        ]
        .concat()
    );
    assert_eq!(scenario(&pg).await, on_sqlite);

    // A page after a cursor is a range of the serial index, not a sort of every row.
    let pool = pg.postgres_pool().unwrap();
    let mut conn = pool.acquire().await.unwrap();
    sqlx::query("SET enable_seqscan = off")
        .execute(&mut *conn)
        .await
        .unwrap();
    let plan: Vec<String> = sqlx::query_scalar(
        "EXPLAIN SELECT id FROM tokens WHERE serial COLLATE \"C\" > 'a' \
         ORDER BY serial COLLATE \"C\" LIMIT 3",
    )
    .fetch_all(&mut *conn)
    .await
    .unwrap();
    let plan = plan.join("\n");
    assert!(
        plan.contains("tokens_serial_key") && !plan.contains("Sort"),
        "{plan}"
    );
}
