//! Sliding-window rate limits kept in memory (failed sign-ins, wrong delivery codes). Time
//! comes from the caller, so tests move it with the injectable clock.

use std::collections::{HashMap, VecDeque};
use std::sync::{Mutex, PoisonError};

/// At most `max` events per `window_seconds` for each key.
pub struct RateLimiter {
    max: usize,
    window_seconds: i64,
    events: Mutex<HashMap<String, VecDeque<i64>>>,
}

impl RateLimiter {
    pub fn new(max: usize, window_seconds: i64) -> Self {
        Self {
            max,
            window_seconds,
            events: Mutex::new(HashMap::new()),
        }
    }

    /// `Err(seconds)` until the next event for `key` is allowed, or `Ok(())`.
    pub fn check(&self, key: &str, now: i64) -> Result<(), u64> {
        let mut events = self.events.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(queue) = events.get_mut(key) else {
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

    /// Counts one event for `key`.
    pub fn record(&self, key: &str, now: i64) {
        let mut events = self.events.lock().unwrap_or_else(PoisonError::into_inner);
        if events.len() > 100_000 {
            // Bound memory under a flood of distinct keys: drop keys whose window has passed.
            let window = self.window_seconds;
            events.retain(|_, q| q.back().is_some_and(|t| *t > now - window));
        }
        events.entry(key.to_owned()).or_default().push_back(now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_limit_applies_per_key_within_the_window() {
        let limiter = RateLimiter::new(2, 60);
        limiter.record("a", 100);
        limiter.record("a", 110);
        assert_eq!(limiter.check("a", 120), Err(40));
        assert_eq!(limiter.check("b", 120), Ok(()));
        assert_eq!(limiter.check("a", 160), Ok(()));
    }
}
