//! Per-route rate limits, enforced where the request is seen: requests and tokens
//! per minute (one-minute windows of the host's clock) and requests in flight.
//!
//! The counters belong to the compiled config, which every worker of the native
//! module shares (one process): the limits hold for the Envoy process. Each wasm VM
//! (one per worker) compiles its own config, so there they hold per worker. A new
//! config starts from zero. Tokens are counted when an answer's usage is known, so
//! a request is admitted while the window's tokens are under the limit, and the
//! last one admitted may take the window over it. Counting is lock-free and can
//! be off by a request or two at a window's edge.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// A route's limits (`None`: not limited) and their counters.
#[derive(Debug, Default)]
pub struct RateLimit {
    pub requests_per_minute: Option<u64>,
    pub tokens_per_minute: Option<u64>,
    pub concurrency: Option<u64>,
    /// The minute (host clock seconds / 60) the two counters below are for.
    window: AtomicU64,
    requests: AtomicU64,
    tokens: AtomicU64,
    in_flight: AtomicU64,
}

/// Which limit refused a request, and when to try again.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Refusal {
    pub limit: Limit,
    pub value: u64,
    /// Seconds until the window ends (0 for concurrency: any time).
    pub retry_after: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Limit {
    RequestsPerMinute,
    TokensPerMinute,
    Concurrency,
}

impl RateLimit {
    pub fn new(
        requests_per_minute: Option<u64>,
        tokens_per_minute: Option<u64>,
        concurrency: Option<u64>,
    ) -> Self {
        RateLimit {
            requests_per_minute,
            tokens_per_minute,
            concurrency,
            ..RateLimit::default()
        }
    }

    pub fn is_unlimited(&self) -> bool {
        self.requests_per_minute.is_none()
            && self.tokens_per_minute.is_none()
            && self.concurrency.is_none()
    }

    /// Admits a request now, or says which limit refuses it. An admitted request
    /// must be [`RateLimit::release`]d when its stream ends if `concurrency` is set.
    pub fn admit(&self, now: Duration) -> Result<(), Refusal> {
        let secs = now.as_secs();
        self.roll(secs / 60);
        let retry_after = 60 - secs % 60;
        if let Some(max) = self.tokens_per_minute {
            if self.tokens.load(Ordering::Acquire) >= max {
                return Err(Refusal {
                    limit: Limit::TokensPerMinute,
                    value: max,
                    retry_after,
                });
            }
        }
        if let Some(max) = self.requests_per_minute {
            if self.requests.fetch_add(1, Ordering::AcqRel) >= max {
                self.requests.fetch_sub(1, Ordering::AcqRel);
                return Err(Refusal {
                    limit: Limit::RequestsPerMinute,
                    value: max,
                    retry_after,
                });
            }
        }
        if let Some(max) = self.concurrency {
            if self.in_flight.fetch_add(1, Ordering::AcqRel) >= max {
                self.in_flight.fetch_sub(1, Ordering::AcqRel);
                if self.requests_per_minute.is_some() {
                    self.requests.fetch_sub(1, Ordering::AcqRel);
                }
                return Err(Refusal {
                    limit: Limit::Concurrency,
                    value: max,
                    retry_after: 0,
                });
            }
        }
        Ok(())
    }

    /// An admitted request's stream ended.
    pub fn release(&self) {
        if self.concurrency.is_some() {
            // Never below zero, whatever a host's call order.
            let _ = self
                .in_flight
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1));
        }
    }

    /// Counts an answer's tokens in the current window.
    pub fn record_tokens(&self, now: Duration, tokens: u64) {
        if self.tokens_per_minute.is_some() {
            self.roll(now.as_secs() / 60);
            self.tokens.fetch_add(tokens, Ordering::AcqRel);
        }
    }

    /// Starts a new window's counts when the minute changed.
    fn roll(&self, minute: u64) {
        let current = self.window.load(Ordering::Acquire);
        if current != minute
            && self
                .window
                .compare_exchange(current, minute, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
        {
            self.requests.store(0, Ordering::Release);
            self.tokens.store(0, Ordering::Release);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: u64) -> Duration {
        Duration::from_secs(secs)
    }

    #[test]
    fn requests_per_minute_per_window() {
        let rl = RateLimit::new(Some(2), None, None);
        assert!(rl.admit(at(60)).is_ok());
        assert!(rl.admit(at(61)).is_ok());
        assert_eq!(
            rl.admit(at(100)),
            Err(Refusal {
                limit: Limit::RequestsPerMinute,
                value: 2,
                retry_after: 20
            })
        );
        // Refused requests do not count; the next minute starts over.
        assert!(rl.admit(at(119)).is_err());
        assert!(rl.admit(at(120)).is_ok());
        assert!(rl.admit(at(121)).is_ok());
        assert!(rl.admit(at(122)).is_err());
    }

    #[test]
    fn tokens_per_minute_admit_until_the_window_is_spent() {
        let rl = RateLimit::new(None, Some(100), None);
        assert!(rl.admit(at(0)).is_ok());
        rl.record_tokens(at(1), 60);
        assert!(rl.admit(at(2)).is_ok());
        rl.record_tokens(at(3), 60);
        let refused = rl.admit(at(4)).unwrap_err();
        assert_eq!(
            (refused.limit, refused.retry_after),
            (Limit::TokensPerMinute, 56)
        );
        assert!(rl.admit(at(60)).is_ok());
        // Tokens of an answer that ends in the next window count there.
        rl.record_tokens(at(61), 100);
        assert!(rl.admit(at(62)).is_err());
    }

    #[test]
    fn concurrency_until_released() {
        let rl = RateLimit::new(Some(10), None, Some(1));
        assert!(rl.admit(at(0)).is_ok());
        let refused = rl.admit(at(0)).unwrap_err();
        assert_eq!(refused.limit, Limit::Concurrency);
        rl.release();
        assert!(rl.admit(at(0)).is_ok());
        rl.release();
        rl.release();
        // The refusal took back its request count: 2 of 10 used.
        assert_eq!(rl.requests.load(Ordering::Acquire), 2);
        assert_eq!(rl.in_flight.load(Ordering::Acquire), 0);
    }

    #[test]
    fn shared_across_threads() {
        let rl = std::sync::Arc::new(RateLimit::new(Some(1000), None, None));
        let handles: Vec<_> = (0..4)
            .map(|_| {
                let rl = rl.clone();
                std::thread::spawn(move || (0..400).filter(|_| rl.admit(at(5)).is_ok()).count())
            })
            .collect();
        let admitted: usize = handles.into_iter().map(|h| h.join().unwrap_or(0)).sum();
        assert_eq!(admitted, 1000);
    }
}
