//! Passkey prompts in flight: a reveal (the pending reveal and its WebAuthn challenge state,
//! between `reveal/start` and `reveal/finish`) or an approval (between `approve/start` and
//! `approve/finish`), kept in memory and keyed by the session id; and sign-ins (between
//! `login/start` and `login/finish`), keyed by a random id in their own short-lived cookie,
//! since the caller has no session yet.
//!
//! [`Pending`] is the one seam to this storage, with two backings (issue #20): memory on
//! SQLite (one serving process), and on PostgreSQL the table `transient.pending_ceremonies`
//! shared by every instance, so a ceremony started on one finishes on another. There the state
//! is serialised (MessagePack, webauthn-rs's `danger-allow-state-serialisation`), `take` is a
//! `DELETE … RETURNING` (single use across instances), expired rows are swept on every `put`
//! and by the sweeper, and [`Pending::put_within`]'s cap is counted under an advisory lock.
//! The state is challenge material: bound, never logged, deleted when taken.
//!
//! Why not in the session (the SQLite session store)? Two reasons:
//! - **Single use under concurrency.** tower-sessions loads a copy of the session for every
//!   request and writes it back after the handler; two `finish` requests racing on one session
//!   would both find the ceremony in their copy. Here `take` removes it under a lock, so exactly
//!   one request gets it, however many race.
//! - **No durable write for transient state** (on SQLite). Each session write is a commit that waits for
//!   the disk (`synchronous=FULL`); two per reveal (insert at start, removal at finish) tripled
//!   the disk flushes of the hot path. The ceremony holds no secret and lives at most
//!   [`PENDING_SECONDS`](crate::tokens::reveal::PENDING_SECONDS); losing it in a restart only
//!   means the operator starts the reveal again. For sign-ins this also means an anonymous
//!   caller no longer makes the server write to disk (a session row per `login/start`); their
//!   number in memory is capped instead ([`Pending::put_within`]).

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Mutex, PoisonError};

use serde::de::DeserializeOwned;
use serde::Serialize;
use sqlx::PgPool;
use tower_sessions::session::Id;

use crate::store::{transient, StoreError};
use crate::tokens::approval::StartedApproval;
use crate::tokens::reveal::StartedReveal;

/// A ceremony that stops being answerable at some time.
pub trait Expiring {
    /// Unix time after which it is forgotten.
    fn expires_at(&self) -> i64;
}

impl Expiring for StartedReveal {
    fn expires_at(&self) -> i64 {
        self.pending.expires_at
    }
}

impl Expiring for StartedApproval {
    fn expires_at(&self) -> i64 {
        self.expires_at
    }
}

impl Expiring for crate::web::api::auth::StartedSignIn {
    fn expires_at(&self) -> i64 {
        self.expires_at
    }
}

/// A key of ceremonies in flight, as the shared table stores it.
pub trait PendingKey: Eq + Hash {
    /// The key's text in `transient.pending_ceremonies.key`.
    fn text(&self) -> String;
}

impl PendingKey for Id {
    fn text(&self) -> String {
        self.to_string()
    }
}

impl PendingKey for SignInId {
    fn text(&self) -> String {
        data_encoding::HEXLOWER.encode(self)
    }
}

/// Why [`Pending::put_within_per_client`] refused a ceremony.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Full {
    /// The server-wide limit is reached.
    Server,
    /// This client has its limit in flight; one expires in `retry_after_seconds`.
    Client { retry_after_seconds: u64 },
}

/// Ceremonies of one kind in flight, at most one per key (a session id, by default).
pub struct Pending<T, K = Id>(Backing<T, K>);

enum Backing<T, K> {
    Memory(Mutex<HashMap<K, T>>),
    /// Rows of `kind` in `transient.pending_ceremonies`.
    Postgres {
        pool: PgPool,
        kind: &'static str,
    },
}

impl<T, K> Default for Pending<T, K> {
    /// In this process's memory (SQLite: the only serving process).
    fn default() -> Self {
        Self(Backing::Memory(Mutex::new(HashMap::new())))
    }
}

/// The random id of a sign-in in flight (its cookie's value).
pub type SignInId = [u8; 16];
/// Sign-ins between `login/start` and `login/finish`.
pub type PendingSignIns = Pending<crate::web::api::auth::StartedSignIn, SignInId>;

/// Reveals between `reveal/start` and `reveal/finish`.
pub type PendingReveals = Pending<StartedReveal>;
/// Approvals between `approve/start` and `approve/finish`.
pub type PendingApprovals = Pending<StartedApproval>;

fn encode<T: Serialize>(ceremony: &T) -> Result<Vec<u8>, StoreError> {
    // Named fields, so that a ceremony written by the previous release of a rolling upgrade
    // still reads (`#[serde(default)]` fields).
    rmp_serde::to_vec_named(ceremony)
        .map_err(|e| StoreError::Corrupt(format!("cannot encode a ceremony in flight: {e}")))
}

fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, StoreError> {
    rmp_serde::from_slice(bytes)
        .map_err(|e| StoreError::Corrupt(format!("a stored ceremony in flight does not read: {e}")))
}

impl<T: Expiring + Serialize + DeserializeOwned, K: PendingKey> Pending<T, K> {
    /// Ceremonies of `kind` (a name per ceremony type) shared by every instance on `pool`.
    pub fn postgres(pool: PgPool, kind: &'static str) -> Self {
        Self(Backing::Postgres { pool, kind })
    }

    /// Stores the key's ceremony, replacing an earlier one, and forgets expired ones.
    pub async fn put(&self, key: K, ceremony: T, now: i64) -> Result<(), StoreError> {
        match &self.0 {
            Backing::Memory(map) => {
                let mut map = map.lock().unwrap_or_else(PoisonError::into_inner);
                map.retain(|_, c| c.expires_at() >= now);
                map.insert(key, ceremony);
                Ok(())
            }
            Backing::Postgres { pool, kind } => {
                let state = encode(&ceremony)?;
                transient::put_ceremony(pool, kind, &key.text(), &state, ceremony.expires_at(), now)
                    .await
            }
        }
    }

    /// [`Self::put`] unless `limit` unexpired ceremonies are already in flight (false then):
    /// for ceremonies anyone can start, so that memory (or the table) stays bounded.
    pub async fn put_within(
        &self,
        key: K,
        ceremony: T,
        now: i64,
        limit: usize,
    ) -> Result<bool, StoreError> {
        Ok(self
            .put_within_per_client(key, ceremony, now, limit, usize::MAX, |_| "")
            .await?
            .is_ok())
    }

    /// [`Self::put_within`] that also holds each client to `per_client` unexpired ceremonies
    /// (`client` says whose a ceremony is), so that one client's flood cannot fill the
    /// server-wide `limit` and lock everyone else out until its ceremonies expire. Both caps
    /// hold across instances on PostgreSQL.
    pub async fn put_within_per_client(
        &self,
        key: K,
        ceremony: T,
        now: i64,
        limit: usize,
        per_client: usize,
        client: impl Fn(&T) -> &str,
    ) -> Result<Result<(), Full>, StoreError> {
        let client_full = |oldest: i64| Full::Client {
            // Room for one more once the client's oldest ceremony expires.
            retry_after_seconds: u64::try_from(oldest - now + 1).unwrap_or(1).max(1),
        };
        match &self.0 {
            Backing::Memory(map) => {
                let mut map = map.lock().unwrap_or_else(PoisonError::into_inner);
                if per_client < usize::MAX {
                    let theirs = client(&ceremony);
                    let mut count = 0;
                    let mut oldest = i64::MAX;
                    for c in map.values() {
                        if c.expires_at() >= now && client(c) == theirs {
                            count += 1;
                            oldest = oldest.min(c.expires_at());
                        }
                    }
                    if count >= per_client {
                        return Ok(Err(client_full(oldest)));
                    }
                }
                if map.len() >= limit {
                    map.retain(|_, c| c.expires_at() >= now);
                    if map.len() >= limit {
                        return Ok(Err(Full::Server));
                    }
                }
                map.insert(key, ceremony);
                Ok(Ok(()))
            }
            Backing::Postgres { pool, kind } => {
                let state = encode(&ceremony)?;
                let cap = |n: usize| i64::try_from(n).unwrap_or(i64::MAX);
                let admission = transient::put_ceremony_within(
                    pool,
                    kind,
                    &key.text(),
                    &state,
                    ceremony.expires_at(),
                    now,
                    cap(limit),
                    client(&ceremony),
                    cap(per_client),
                )
                .await?;
                Ok(match admission {
                    transient::Admission::Stored => Ok(()),
                    transient::Admission::KindFull => Err(Full::Server),
                    transient::Admission::ClientFull { oldest_expires_at } => {
                        Err(client_full(oldest_expires_at))
                    }
                })
            }
        }
    }

    /// Takes the key's ceremony out: it can be finished once, on any instance. An expired
    /// one not yet swept is handed out too, so that its finish says it expired (the domain
    /// checks `expires_at` and records the refusal).
    pub async fn take(&self, key: K) -> Result<Option<T>, StoreError> {
        match &self.0 {
            Backing::Memory(map) => Ok(map
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .remove(&key)),
            Backing::Postgres { pool, kind } => {
                match transient::take_ceremony(pool, kind, &key.text()).await? {
                    Some(state) => Ok(Some(decode(&state)?)),
                    None => Ok(None),
                }
            }
        }
    }

    /// Forgets every ceremony that expired before `now` (the sweeper's minute; memory also
    /// forgets them on each `put`).
    pub async fn sweep(&self, now: i64) -> Result<(), StoreError> {
        match &self.0 {
            Backing::Memory(map) => {
                map.lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .retain(|_, c| c.expires_at() >= now);
                Ok(())
            }
            Backing::Postgres { pool, kind } => {
                transient::sweep_ceremonies_of(pool, kind, now).await?;
                Ok(())
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::sync::Arc;

    use super::*;

    #[derive(Debug, PartialEq, Serialize, serde::Deserialize)]
    struct Probe {
        n: u32,
        expires_at: i64,
    }

    impl Expiring for Probe {
        fn expires_at(&self) -> i64 {
            self.expires_at
        }
    }

    type Probes = Pending<Probe, SignInId>;

    /// Each backing as two instances see it: memory is one process (both are the same map);
    /// PostgreSQL is two pools on one database.
    async fn backings() -> Vec<(&'static str, Arc<Probes>, Arc<Probes>)> {
        let memory = Arc::new(Probes::default());
        let (a, b) = crate::shared::two_instances().await;
        vec![
            ("memory", memory.clone(), memory),
            (
                "postgres",
                Arc::new(Probes::postgres(a, "probe")),
                Arc::new(Probes::postgres(b, "probe")),
            ),
        ]
    }

    fn probe(n: u32) -> Probe {
        Probe {
            n,
            expires_at: 1_000,
        }
    }

    #[tokio::test]
    async fn a_ceremony_started_on_one_instance_finishes_once_on_the_other() {
        for (name, a, b) in backings().await {
            a.put([1; 16], probe(7), 100).await.unwrap();
            assert_eq!(b.take([1; 16]).await.unwrap(), Some(probe(7)), "{name}");
            assert_eq!(b.take([1; 16]).await.unwrap(), None, "{name}");
            assert_eq!(a.take([1; 16]).await.unwrap(), None, "{name}");
            // A second start replaces the first: one ceremony per key.
            a.put([2; 16], probe(1), 100).await.unwrap();
            b.put([2; 16], probe(2), 100).await.unwrap();
            assert_eq!(a.take([2; 16]).await.unwrap(), Some(probe(2)), "{name}");
        }
    }

    #[tokio::test]
    async fn of_takes_racing_from_both_instances_exactly_one_gets_the_ceremony() {
        for (name, a, b) in backings().await {
            for round in 0..10u8 {
                a.put([round; 16], probe(u32::from(round)), 100)
                    .await
                    .unwrap();
                let takes = (0..8).map(|i| {
                    let instance = if i % 2 == 0 { a.clone() } else { b.clone() };
                    tokio::spawn(async move { instance.take([round; 16]).await.unwrap() })
                });
                let mut winners = 0;
                for take in takes.collect::<Vec<_>>() {
                    if let Some(got) = take.await.unwrap() {
                        assert_eq!(got, probe(u32::from(round)));
                        winners += 1;
                    }
                }
                assert_eq!(winners, 1, "{name}, round {round}");
            }
        }
    }

    #[tokio::test]
    async fn expired_ceremonies_are_swept_on_every_instance_and_live_ones_kept() {
        for (name, a, b) in backings().await {
            // The sweeper on either instance forgets what expired, and only that.
            a.put([1; 16], probe(1), 100).await.unwrap();
            a.put([2; 16], probe(2), 100).await.unwrap();
            b.sweep(1_000).await.unwrap();
            assert_eq!(b.take([1; 16]).await.unwrap(), Some(probe(1)), "{name}");
            b.sweep(1_001).await.unwrap();
            assert_eq!(a.take([2; 16]).await.unwrap(), None, "{name}");
            // A start on the other instance forgets expired ones too, not its own key's.
            a.put([4; 16], probe(4), 100).await.unwrap();
            b.put([5; 16], probe(5), 1_001).await.unwrap();
            assert_eq!(a.take([4; 16]).await.unwrap(), None, "{name}");
            assert_eq!(a.take([5; 16]).await.unwrap(), Some(probe(5)), "{name}");
            // Expired but not yet swept: handed to its finish, which refuses it by its time.
            a.put([6; 16], probe(6), 100).await.unwrap();
            let late = b.take([6; 16]).await.unwrap().unwrap();
            assert!(late.expires_at() < 1_001, "{name}");
        }
    }

    #[tokio::test]
    async fn the_cap_on_ceremonies_anyone_can_start_holds_across_instances() {
        for (name, a, b) in backings().await {
            let starts = (0..16u8).map(|i| {
                let instance = if i % 2 == 0 { a.clone() } else { b.clone() };
                tokio::spawn(async move {
                    instance
                        .put_within([i; 16], probe(u32::from(i)), 100, 5)
                        .await
                        .unwrap()
                })
            });
            let mut admitted = 0;
            for start in starts.collect::<Vec<_>>() {
                admitted += usize::from(start.await.unwrap());
            }
            assert_eq!(admitted, 5, "{name}");
            // Expired ones leave room.
            assert!(
                a.put_within([99; 16], probe(99), 1_001, 5).await.unwrap(),
                "{name}"
            );
        }
    }

    #[derive(Serialize, serde::Deserialize)]
    struct Started(String, i64);

    impl Expiring for Started {
        fn expires_at(&self) -> i64 {
            self.1
        }
    }

    async fn put(
        instance: &Pending<Started, SignInId>,
        key: u8,
        client: &str,
        now: i64,
    ) -> Result<(), Full> {
        let started = Started(client.to_owned(), now + 300);
        instance
            .put_within_per_client([key; 16], started, now, 10, 3, |s| &s.0)
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn one_client_is_held_to_its_share_and_the_server_to_its_total_on_every_instance() {
        let memory = Arc::new(Pending::<Started, SignInId>::default());
        let (a, b) = crate::shared::two_instances().await;
        let backings = [
            ("memory", memory.clone(), memory),
            (
                "postgres",
                Arc::new(Pending::postgres(a, "per_client_probe")),
                Arc::new(Pending::postgres(b, "per_client_probe")),
            ),
        ];
        for (name, a, b) in backings {
            for key in 0..3u8 {
                let on = if key % 2 == 0 { &a } else { &b };
                assert_eq!(
                    put(on, key, "a", 100 + i64::from(key)).await,
                    Ok(()),
                    "{name}"
                );
            }
            // a's oldest expires at 400: room again one second after.
            assert_eq!(
                put(&b, 3, "a", 110).await,
                Err(Full::Client {
                    retry_after_seconds: 291
                }),
                "{name}"
            );
            for key in 10..17u8 {
                let client = ["b", "c", "d"][usize::from(key) % 3];
                assert_eq!(put(&a, key, client, 110).await, Ok(()), "{name}");
            }
            assert_eq!(put(&b, 20, "e", 110).await, Err(Full::Server), "{name}");
            // Expired ceremonies count for nobody.
            assert_eq!(put(&a, 21, "a", 401).await, Ok(()), "{name}");
        }
    }
}
