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

    /// Takes the key's ceremony out: it can be finished once.
    pub fn take(&self, key: K) -> Option<T> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&key)
    }
}
