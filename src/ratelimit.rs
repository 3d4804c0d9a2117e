//! Sliding-window rate limits (failed sign-ins, refused delivery links). Time comes from the
//! caller, so tests move it with the injectable clock.
//!
//! Two backings behind one type (issue #20): this process's memory on SQLite (one serving
//! process), and on PostgreSQL the table `transient.rate_events` shared by every instance, so
//! a limit counts the events of all of them. [`RateLimiter::admit`] checks and counts in one
//! step (one transaction under the key's advisory lock there): of attempts racing for the last
//! slot, from any number of instances, exactly one gets it.

use std::collections::{HashMap, VecDeque};
use std::sync::{Mutex, PoisonError};

use sqlx::PgPool;

use crate::store::transient::{self, Window};
use crate::store::StoreError;

/// At most `max` events per `window_seconds` for each key.
pub struct RateLimiter {
    max: usize,
    window_seconds: i64,
    backing: Backing,
}

enum Backing {
    Memory(Mutex<HashMap<String, VecDeque<i64>>>),
    /// Events of limiter `name` in `transient.rate_events`.
    Postgres {
        pool: PgPool,
        name: &'static str,
    },
}

/// An event [`RateLimiter::admit`] counted, to [`RateLimiter::forgive`] if the attempt turns
/// out not to count.
#[derive(Debug)]
pub struct Admitted {
    key: String,
    at: i64,
    /// The event's row on PostgreSQL.
    row: Option<i64>,
}

impl RateLimiter {
    /// A limit kept in this process's memory.
    pub fn new(max: usize, window_seconds: i64) -> Self {
        Self {
            max,
            window_seconds,
            backing: Backing::Memory(Mutex::new(HashMap::new())),
        }
    }

    /// A limit shared by every instance on `pool`, under `name` (one per kind of limit).
    pub fn postgres(pool: PgPool, name: &'static str, max: usize, window_seconds: i64) -> Self {
        Self {
            max,
            window_seconds,
            backing: Backing::Postgres { pool, name },
        }
    }

    fn window(&self) -> Window {
        Window {
            max: i64::try_from(self.max).unwrap_or(i64::MAX),
            window_seconds: self.window_seconds,
        }
    }

    /// `Err(seconds)` until the next event for `key` is allowed, or `Ok(())`.
    pub async fn check(&self, key: &str, now: i64) -> Result<Result<(), u64>, StoreError> {
        match &self.backing {
            Backing::Memory(events) => {
                let mut events = events.lock().unwrap_or_else(PoisonError::into_inner);
                Ok(self.check_queue(events.get_mut(key), now))
            }
            Backing::Postgres { pool, name } => {
                transient::check_rate(pool, name, key, self.window(), now).await
            }
        }
    }

    fn check_queue(&self, queue: Option<&mut VecDeque<i64>>, now: i64) -> Result<(), u64> {
        let Some(queue) = queue else {
            return Ok(());
        };
        while queue
            .front()
            .is_some_and(|t| *t <= now - self.window_seconds)
        {
            queue.pop_front();
        }
        if queue.len() < self.max {
            return Ok(());
        }
        let oldest = queue.front().copied().unwrap_or(now);
        Err(u64::try_from(oldest + self.window_seconds - now)
            .unwrap_or(1)
            .max(1))
    }

    fn record_memory(&self, events: &mut HashMap<String, VecDeque<i64>>, key: &str, now: i64) {
        if events.len() > 100_000 {
            // Bound memory under a flood of distinct keys: drop keys whose window has passed.
            let window = self.window_seconds;
            events.retain(|_, q| q.back().is_some_and(|t| *t > now - window));
        }
        events.entry(key.to_owned()).or_default().push_back(now);
    }

    /// Counts one event for `key`.
    pub async fn record(&self, key: &str, now: i64) -> Result<(), StoreError> {
        match &self.backing {
            Backing::Memory(events) => {
                let mut events = events.lock().unwrap_or_else(PoisonError::into_inner);
                self.record_memory(&mut events, key, now);
                Ok(())
            }
            Backing::Postgres { pool, name } => {
                transient::record_rate(pool, name, key, self.window(), now).await
            }
        }
    }

    /// Checks and counts one event for `key` at once: `Ok` (counted) when allowed, else
    /// `Err(seconds)` until it is. Give the slot back with [`Self::forgive`] when the attempt
    /// turns out not to count.
    pub async fn admit(&self, key: &str, now: i64) -> Result<Result<Admitted, u64>, StoreError> {
        let row = match &self.backing {
            Backing::Memory(events) => {
                let mut events = events.lock().unwrap_or_else(PoisonError::into_inner);
                if let Err(wait) = self.check_queue(events.get_mut(key), now) {
                    return Ok(Err(wait));
                }
                self.record_memory(&mut events, key, now);
                None
            }
            Backing::Postgres { pool, name } => {
                match transient::admit_rate(pool, name, key, self.window(), now).await? {
                    Ok(row) => Some(row),
                    Err(wait) => return Ok(Err(wait)),
                }
            }
        };
        Ok(Ok(Admitted {
            key: key.to_owned(),
            at: now,
            row,
        }))
    }

    /// Un-counts an event [`Self::admit`] counted.
    pub async fn forgive(&self, admitted: Admitted) -> Result<(), StoreError> {
        match (&self.backing, admitted.row) {
            (Backing::Postgres { pool, .. }, Some(row)) => transient::forgive_rate(pool, row).await,
            (Backing::Memory(events), _) => {
                let mut events = events.lock().unwrap_or_else(PoisonError::into_inner);
                if let Some(queue) = events.get_mut(&admitted.key) {
                    if let Some(at) = queue.iter().rposition(|t| *t == admitted.at) {
                        queue.remove(at);
                    }
                }
                Ok(())
            }
            (Backing::Postgres { .. }, None) => Ok(()),
        }
    }

    /// Forgets events that left the window by `now` (the sweeper's minute; memory also does
    /// on each check).
    pub async fn sweep(&self, now: i64) -> Result<(), StoreError> {
        match &self.backing {
            Backing::Memory(events) => {
                let window = self.window_seconds;
                events
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .retain(|_, q| q.back().is_some_and(|t| *t > now - window));
                Ok(())
            }
            Backing::Postgres { pool, name } => {
                transient::sweep_rate(pool, name, self.window(), now).await?;
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[tokio::test]
    async fn the_limit_applies_per_key_within_the_window() {
        let limiter = RateLimiter::new(2, 60);
        limiter.record("a", 100).await.unwrap();
        limiter.record("a", 110).await.unwrap();
        assert_eq!(limiter.check("a", 120).await.unwrap(), Err(40));
        assert_eq!(limiter.check("b", 120).await.unwrap(), Ok(()));
        assert_eq!(limiter.check("a", 160).await.unwrap(), Ok(()));
    }

    #[tokio::test]
    async fn an_admitted_attempt_takes_a_slot_until_it_is_forgiven() {
        let limiter = RateLimiter::new(1, 60);
        let first = limiter.admit("a", 100).await.unwrap().unwrap();
        assert_eq!(limiter.admit("a", 101).await.unwrap().unwrap_err(), 59);
        limiter.forgive(first).await.unwrap();
        assert!(limiter.admit("a", 102).await.unwrap().is_ok());
    }
}

#[cfg(test)]
mod shared_tests {
    #![allow(clippy::unwrap_used)]
    use std::sync::Arc;

    use super::*;

    #[tokio::test]
    async fn at_the_boundary_racing_attempts_from_two_instances_admit_exactly_the_limit() {
        let (a, b) = crate::shared::two_instances().await;
        let a = Arc::new(RateLimiter::postgres(a, "test", 5, 60));
        let b = Arc::new(RateLimiter::postgres(b, "test", 5, 60));
        // Four slots taken already: the race is for the last one, then for none.
        for _ in 0..4 {
            a.record("10.0.0.1", 100).await.unwrap();
        }
        for round in 0..2 {
            let attempts = (0..12).map(|i| {
                let limiter = if i % 2 == 0 { a.clone() } else { b.clone() };
                tokio::spawn(async move { limiter.admit("10.0.0.1", 110).await.unwrap() })
            });
            let mut admitted = 0;
            for attempt in attempts.collect::<Vec<_>>() {
                admitted += usize::from(attempt.await.unwrap().is_ok());
            }
            assert_eq!(admitted, if round == 0 { 1 } else { 0 });
        }
        assert_eq!(b.check("10.0.0.1", 110).await.unwrap(), Err(50));
        // Another client is not limited; the window passes for the first.
        assert_eq!(b.check("10.0.0.2", 110).await.unwrap(), Ok(()));
        assert_eq!(a.check("10.0.0.1", 160).await.unwrap(), Ok(()));
    }

    #[tokio::test]
    async fn events_recorded_on_one_instance_count_on_the_other_until_forgiven_or_past() {
        let (pool_a, pool_b) = crate::shared::two_instances().await;
        let a = RateLimiter::postgres(pool_a, "test", 2, 60);
        let b = RateLimiter::postgres(pool_b.clone(), "test", 2, 60);
        a.record("x", 100).await.unwrap();
        let slot = b.admit("x", 110).await.unwrap().unwrap();
        assert_eq!(a.check("x", 120).await.unwrap(), Err(40));
        assert_eq!(a.admit("x", 120).await.unwrap().unwrap_err(), 40);
        a.forgive(slot).await.unwrap();
        assert_eq!(b.check("x", 120).await.unwrap(), Ok(()));
        // Another limiter's events are its own.
        let other = RateLimiter::postgres(pool_b, "other", 1, 60);
        assert_eq!(other.check("x", 120).await.unwrap(), Ok(()));
        // The sweep deletes what left the window: gone even for a clock that is behind.
        b.record("x", 100).await.unwrap();
        assert_eq!(a.check("x", 120).await.unwrap(), Err(40));
        a.sweep(161).await.unwrap();
        assert_eq!(b.check("x", 120).await.unwrap(), Ok(()));
    }
}
