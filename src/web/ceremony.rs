//! Passkey prompts in flight: a reveal (the pending reveal and its WebAuthn challenge state,
//! between `reveal/start` and `reveal/finish`) or an approval (between `approve/start` and
//! `approve/finish`), kept in memory and keyed by the session id; and sign-ins (between
//! `login/start` and `login/finish`), keyed by a random id in their own short-lived cookie,
//! since the caller has no session yet.
//!
//! [`Pending`] is the one seam to this storage: a later change can keep ceremonies in the
//! database (several instances) behind the same `put`/`take`.
//!
//! Why not in the session (the SQLite session store)? Two reasons:
//! - **Single use under concurrency.** tower-sessions loads a copy of the session for every
//!   request and writes it back after the handler; two `finish` requests racing on one session
//!   would both find the ceremony in their copy. Here `take` removes it under a lock, so exactly
//!   one request gets it, however many race.
//! - **No durable write for transient state.** Each session write is a commit that waits for
//!   the disk (`synchronous=FULL`); two per reveal (insert at start, removal at finish) tripled
//!   the disk flushes of the hot path. The ceremony holds no secret and lives at most
//!   [`PENDING_SECONDS`](crate::tokens::reveal::PENDING_SECONDS); losing it in a restart only
//!   means the operator starts the reveal again. For sign-ins this also means an anonymous
//!   caller no longer makes the server write to disk (a session row per `login/start`); their
//!   number in memory is capped instead ([`Pending::put_within`]).

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Mutex, PoisonError};

use tower_sessions::session::Id;

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

/// Why [`Pending::put_within_per_client`] refused a ceremony.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Full {
    /// The server-wide limit is reached.
    Server,
    /// This client has its limit in flight; one expires in `retry_after_seconds`.
    Client { retry_after_seconds: u64 },
}

/// Ceremonies of one kind in flight, at most one per key (a session id, by default).
pub struct Pending<T, K = Id>(Mutex<HashMap<K, T>>);

impl<T, K> Default for Pending<T, K> {
    fn default() -> Self {
        Self(Mutex::new(HashMap::new()))
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

impl<T: Expiring, K: Eq + Hash> Pending<T, K> {
    /// Stores the key's ceremony, replacing an earlier one, and forgets expired ones.
    pub fn put(&self, key: K, ceremony: T, now: i64) {
        let mut map = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        map.retain(|_, c| c.expires_at() >= now);
        map.insert(key, ceremony);
    }

    /// [`Self::put`] unless `limit` unexpired ceremonies are already in flight (false then):
    /// for ceremonies anyone can start, so that memory stays bounded.
    pub fn put_within(&self, key: K, ceremony: T, now: i64, limit: usize) -> bool {
        let mut map = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        if map.len() >= limit {
            map.retain(|_, c| c.expires_at() >= now);
            if map.len() >= limit {
                return false;
            }
        }
        map.insert(key, ceremony);
        true
    }

    /// [`Self::put_within`] that also holds each client to `per_client` unexpired ceremonies
    /// (`client` says whose a ceremony is), so that one client's flood cannot fill the
    /// server-wide `limit` and lock everyone else out until its ceremonies expire.
    pub fn put_within_per_client(
        &self,
        key: K,
        ceremony: T,
        now: i64,
        limit: usize,
        per_client: usize,
        client: impl Fn(&T) -> &str,
    ) -> Result<(), Full> {
        let mut map = self.0.lock().unwrap_or_else(PoisonError::into_inner);
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
            // Room for one more once the client's oldest ceremony expires.
            return Err(Full::Client {
                retry_after_seconds: (oldest - now + 1).max(1) as u64,
            });
        }
        if map.len() >= limit {
            map.retain(|_, c| c.expires_at() >= now);
            if map.len() >= limit {
                return Err(Full::Server);
            }
        }
        map.insert(key, ceremony);
        Ok(())
    }

    /// Takes the key's ceremony out: it can be finished once.
    pub fn take(&self, key: K) -> Option<T> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Started(&'static str, i64);

    impl Expiring for Started {
        fn expires_at(&self) -> i64 {
            self.1
        }
    }

    fn put(
        pending: &Pending<Started, u32>,
        key: u32,
        client: &'static str,
        now: i64,
    ) -> Result<(), Full> {
        pending.put_within_per_client(key, Started(client, now + 300), now, 10, 3, |s| s.0)
    }

    #[test]
    fn one_client_is_held_to_its_share_and_the_server_to_its_total() {
        let pending = Pending::<Started, u32>::default();
        for key in 0..3 {
            assert_eq!(put(&pending, key, "a", 100 + i64::from(key)), Ok(()));
        }
        // a's oldest expires at 400: room again one second after.
        assert_eq!(
            put(&pending, 3, "a", 110),
            Err(Full::Client {
                retry_after_seconds: 291
            })
        );
        for key in 10..17 {
            assert_eq!(
                put(&pending, key, ["b", "c", "d"][key as usize % 3], 110),
                Ok(())
            );
        }
        assert_eq!(put(&pending, 20, "e", 110), Err(Full::Server));
        // Expired ceremonies count for nobody.
        assert_eq!(put(&pending, 21, "a", 401), Ok(()));
    }
}
