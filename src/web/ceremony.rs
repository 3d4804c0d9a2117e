//! Passkey prompts in flight: a reveal (the pending reveal and its WebAuthn challenge state,
//! between `reveal/start` and `reveal/finish`) or an approval (between `approve/start` and
//! `approve/finish`), kept in memory and keyed by the session id.
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
//!   means the operator starts the reveal again.

use std::collections::HashMap;
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

/// Ceremonies of one kind in flight, at most one per session.
pub struct Pending<T>(Mutex<HashMap<Id, T>>);

impl<T> Default for Pending<T> {
    fn default() -> Self {
        Self(Mutex::new(HashMap::new()))
    }
}

/// Reveals between `reveal/start` and `reveal/finish`.
pub type PendingReveals = Pending<StartedReveal>;
/// Approvals between `approve/start` and `approve/finish`.
pub type PendingApprovals = Pending<StartedApproval>;

impl<T: Expiring> Pending<T> {
    /// Stores the session's ceremony, replacing an earlier one, and forgets expired ones.
    pub fn put(&self, session: Id, ceremony: T, now: i64) {
        let mut map = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        map.retain(|_, c| c.expires_at() >= now);
        map.insert(session, ceremony);
    }

    /// Takes the session's ceremony out: it can be finished once.
    pub fn take(&self, session: Id) -> Option<T> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&session)
    }
}
