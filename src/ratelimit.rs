//! Rate limiting of issuance: a token bucket per API token, so that one client cannot exhaust the
//! service. And of warnings: a failure that repeats (an outage) is logged once a minute.

use parking_lot::Mutex;
use std::collections::HashMap;
use std::time::Instant;

pub struct RateLimiter {
    /// Tokens per second; 0 means unlimited.
    rate: f64,
    burst: f64,
    buckets: Mutex<HashMap<String, (f64, Instant)>>,
}

impl RateLimiter {
    /// `per_minute` issuances a minute on average, with bursts of up to that many.
    pub fn per_minute(per_minute: u32) -> Self {
        Self {
            rate: f64::from(per_minute) / 60.0,
            burst: f64::from(per_minute),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// `Err(seconds to wait)` when `subject` has no token left.
    pub fn check(&self, subject: &str, now: Instant) -> Result<(), u64> {
        if self.rate == 0.0 {
            return Ok(());
        }
        let mut buckets = self.buckets.lock();
        if buckets.len() > 100_000 {
            // Forget full buckets: a subject idle long enough is back at its burst anyway.
            let (rate, burst) = (self.rate, self.burst);
            buckets.retain(|_, (tokens, at)| *tokens + now.duration_since(*at).as_secs_f64() * rate < burst);
        }
        let (tokens, at) = buckets.entry(subject.to_string()).or_insert((self.burst, now));
        *tokens = (*tokens + now.duration_since(*at).as_secs_f64() * self.rate).min(self.burst);
        *at = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            Ok(())
        } else {
            Err(((1.0 - *tokens) / self.rate).ceil() as u64)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_subject_gets_its_burst_then_waits() {
        let limiter = RateLimiter::per_minute(3);
        let start = Instant::now();
        for _ in 0..3 {
            assert!(limiter.check("a", start).is_ok());
        }
        assert_eq!(limiter.check("a", start), Err(20));
        assert!(limiter.check("b", start).is_ok(), "subjects are limited separately");
        assert!(limiter.check("a", start + Duration::from_secs(20)).is_ok());
    }

    #[test]
    fn zero_means_unlimited() {
        let limiter = RateLimiter::per_minute(0);
        for _ in 0..1000 {
            assert!(limiter.check("a", Instant::now()).is_ok());
        }
    }
}

/// A warning that repeats is logged at most once a minute, with how many were held back since.
#[derive(Debug, Default)]
pub struct WarnEvery {
    last: Option<Instant>,
    suppressed: u64,
}

impl WarnEvery {
    const EVERY: std::time::Duration = std::time::Duration::from_secs(60);

    /// `Some(suppressed)` when this occurrence is to be logged, `None` when it is held back.
    pub fn due(&mut self) -> Option<u64> {
        let now = Instant::now();
        if self.last.is_none_or(|at| now.duration_since(at) >= Self::EVERY) {
            self.last = Some(now);
            Some(std::mem::take(&mut self.suppressed))
        } else {
            self.suppressed += 1;
            None
        }
    }
}
