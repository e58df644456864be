//! Per-route rate limits, enforced where the request is seen: requests and tokens
//! per minute (one-minute windows of the host's clock) and requests in flight.
//!
//! The counts live in a [`CountStore`] the config holds: by default its own memory,
//! which every worker of the native module shares (one process); the wasm build,
//! whose workers each run their own VM, puts in the host's shared data instead, so
//! the limits hold for the Envoy process in both builds. Tokens are counted when an
//! answer's usage is known, so a request is admitted while the window's tokens are
//! under the limit, and the last one admitted may take the window over it.

use std::collections::HashMap;
use std::fmt;
use std::sync::Mutex;
use std::time::Duration;

use crate::error::GatewayError;
use crate::host::{Action, Counter};
use crate::machine::pipeline::{BodyStep, Cx, Flow, ResponseStep};

/// Counts shared by every stream of a config, each kept with the window it counts.
pub trait CountStore: Send + Sync + fmt::Debug {
    /// Count `name` as kept for `window` (0 if kept for another).
    fn get(&self, name: &str, window: u64) -> u64;

    /// Reads count `name` (0 if it was kept for a window other than `window`), lets
    /// `next` decide its new value, and stores it for `window`. `None` from `next`
    /// stores nothing. Returns what was stored. `next` may run more than once (a
    /// store may retry on a concurrent change); it must not have side effects.
    fn update(&self, name: &str, window: u64, next: &dyn Fn(u64) -> Option<u64>) -> Option<u64>;

    /// Makes count `name` exist before any request updates it (a store whose
    /// compare-and-swap cannot guard a count's creation); keeps an existing one.
    fn prepare(&self, _name: &str) {}
}

/// A store in this process's memory.
#[derive(Debug, Default)]
pub struct LocalCounts {
    counts: Mutex<HashMap<String, (u64, u64)>>,
}

impl CountStore for LocalCounts {
    fn get(&self, name: &str, window: u64) -> u64 {
        match self.counts.lock().ok().and_then(|c| c.get(name).copied()) {
            Some((w, n)) if w == window => n,
            _ => 0,
        }
    }

    fn update(&self, name: &str, window: u64, next: &dyn Fn(u64) -> Option<u64>) -> Option<u64> {
        let mut counts = self.counts.lock().ok()?;
        let current = match counts.get(name) {
            Some(&(w, n)) if w == window => n,
            _ => 0,
        };
        let new = next(current)?;
        match counts.get_mut(name) {
            Some(slot) => *slot = (window, new),
            None => {
                counts.insert(name.to_string(), (window, new));
            }
        }
        Some(new)
    }
}

/// A route's limits (`None`: not limited).
#[derive(Debug, Default)]
pub struct RateLimit {
    pub requests_per_minute: Option<u64>,
    pub tokens_per_minute: Option<u64>,
    pub concurrency: Option<u64>,
    /// Count names: `<route>/requests`, `/tokens`, `/in-flight`.
    names: [String; 3],
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

/// The window of counts that never expire (requests in flight).
const ALWAYS: u64 = u64::MAX;

impl RateLimit {
    pub fn new(
        route: &str,
        requests_per_minute: Option<u64>,
        tokens_per_minute: Option<u64>,
        concurrency: Option<u64>,
    ) -> Self {
        RateLimit {
            requests_per_minute,
            tokens_per_minute,
            concurrency,
            names: ["requests", "tokens", "in-flight"].map(|k| format!("{route}/{k}")),
        }
    }

    /// The names of the counts this route's limits use.
    pub fn count_names(&self) -> impl Iterator<Item = &str> {
        let used = [
            self.requests_per_minute.is_some(),
            self.tokens_per_minute.is_some(),
            self.concurrency.is_some(),
        ];
        self.names
            .iter()
            .zip(used)
            .filter(|(_, u)| *u)
            .map(|(n, _)| n.as_str())
    }

    pub fn is_unlimited(&self) -> bool {
        self.requests_per_minute.is_none()
            && self.tokens_per_minute.is_none()
            && self.concurrency.is_none()
    }

    /// Admits a request now, or says which limit refuses it. An admitted request
    /// must be [`RateLimit::release`]d when its stream ends if `concurrency` is set.
    pub fn admit(&self, store: &dyn CountStore, now: Duration) -> Result<(), Refusal> {
        let secs = now.as_secs();
        let window = secs / 60;
        let retry_after = 60 - secs % 60;
        let [requests, tokens, in_flight] = &self.names;
        if let Some(max) = self.tokens_per_minute {
            if store.get(tokens, window) >= max {
                return Err(Refusal {
                    limit: Limit::TokensPerMinute,
                    value: max,
                    retry_after,
                });
            }
        }
        if let Some(max) = self.requests_per_minute {
            if store
                .update(requests, window, &|n| (n < max).then_some(n + 1))
                .is_none()
            {
                return Err(Refusal {
                    limit: Limit::RequestsPerMinute,
                    value: max,
                    retry_after,
                });
            }
        }
        if let Some(max) = self.concurrency {
            if store
                .update(in_flight, ALWAYS, &|n| (n < max).then_some(n + 1))
                .is_none()
            {
                if self.requests_per_minute.is_some() {
                    // Refused after all: the request does not count.
                    store.update(requests, window, &|n| Some(n.saturating_sub(1)));
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
    pub fn release(&self, store: &dyn CountStore) {
        if self.concurrency.is_some() {
            store.update(&self.names[2], ALWAYS, &|n| Some(n.saturating_sub(1)));
        }
    }

    /// Counts an answer's tokens in the current window.
    pub fn record_tokens(&self, store: &dyn CountStore, now: Duration, tokens: u64) {
        if self.tokens_per_minute.is_some() {
            let window = now.as_secs() / 60;
            store.update(&self.names[1], window, &|n| Some(n.saturating_add(tokens)));
        }
    }
}

/// Pipeline step: admits a request under its route's limits (429 otherwise), and
/// counts the tokens of its answer when it ends. The request in flight is released
/// when the request's machine goes.
pub(crate) struct RateLimitStep;

impl BodyStep for RateLimitStep {
    fn on_body(&self, cx: &mut Cx<'_>, out: &mut Vec<Action>) -> Flow {
        let Some(index) = cx.req.route else {
            return Flow::Next;
        };
        let limit = &cx.config.routes[index].rate_limit;
        if limit.is_unlimited() {
            return Flow::Next;
        }
        match limit.admit(cx.config.counts(), cx.now) {
            Ok(()) => {
                cx.req.admitted = Some(index);
                Flow::Next
            }
            Err(refusal) => {
                out.push(Action::Count(Counter::RateLimited));
                Flow::Reply(GatewayError::RateLimited(refusal))
            }
        }
    }
}

impl ResponseStep for RateLimitStep {
    fn on_end(&self, cx: &mut Cx<'_>, _complete: bool, _out: &mut Vec<Action>) {
        let (Some(route), Some(meter)) = (cx.route(), cx.resp.meter.as_ref()) else {
            return;
        };
        if let Some(usage) = meter.usage() {
            route
                .rate_limit
                .record_tokens(cx.config.counts(), cx.now, usage.total_tokens);
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
        let (rl, s) = (
            RateLimit::new("r", Some(2), None, None),
            LocalCounts::default(),
        );
        assert!(rl.admit(&s, at(60)).is_ok());
        assert!(rl.admit(&s, at(61)).is_ok());
        assert_eq!(
            rl.admit(&s, at(100)),
            Err(Refusal {
                limit: Limit::RequestsPerMinute,
                value: 2,
                retry_after: 20
            })
        );
        // Refused requests do not count; the next minute starts over.
        assert!(rl.admit(&s, at(119)).is_err());
        assert!(rl.admit(&s, at(120)).is_ok());
        assert!(rl.admit(&s, at(121)).is_ok());
        assert!(rl.admit(&s, at(122)).is_err());
    }

    #[test]
    fn tokens_per_minute_admit_until_the_window_is_spent() {
        let (rl, s) = (
            RateLimit::new("r", None, Some(100), None),
            LocalCounts::default(),
        );
        assert!(rl.admit(&s, at(0)).is_ok());
        rl.record_tokens(&s, at(1), 60);
        assert!(rl.admit(&s, at(2)).is_ok());
        rl.record_tokens(&s, at(3), 60);
        let refused = rl.admit(&s, at(4)).unwrap_err();
        assert_eq!(
            (refused.limit, refused.retry_after),
            (Limit::TokensPerMinute, 56)
        );
        assert!(rl.admit(&s, at(60)).is_ok());
        // Tokens of an answer that ends in the next window count there.
        rl.record_tokens(&s, at(61), 100);
        assert!(rl.admit(&s, at(62)).is_err());
    }

    #[test]
    fn concurrency_until_released() {
        let (rl, s) = (
            RateLimit::new("r", Some(10), None, Some(1)),
            LocalCounts::default(),
        );
        assert!(rl.admit(&s, at(0)).is_ok());
        let refused = rl.admit(&s, at(0)).unwrap_err();
        assert_eq!(refused.limit, Limit::Concurrency);
        rl.release(&s);
        assert!(rl.admit(&s, at(0)).is_ok());
        rl.release(&s);
        rl.release(&s);
        // The refusal took back its request count: 2 of 10 used; none in flight.
        assert_eq!(s.get("r/requests", 0), 2);
        assert_eq!(s.get("r/in-flight", ALWAYS), 0);
    }

    #[test]
    fn routes_count_apart_and_stores_are_shared_across_threads() {
        let s = std::sync::Arc::new(LocalCounts::default());
        let other = RateLimit::new("other", Some(1), None, None);
        assert!(other.admit(&*s, at(5)).is_ok());
        let handles: Vec<_> = (0..4)
            .map(|_| {
                let s = s.clone();
                std::thread::spawn(move || {
                    let rl = RateLimit::new("r", Some(1000), None, None);
                    (0..400).filter(|_| rl.admit(&*s, at(5)).is_ok()).count()
                })
            })
            .collect();
        let admitted: usize = handles.into_iter().map(|h| h.join().unwrap_or(0)).sum();
        assert_eq!(admitted, 1000);
        assert!(other.admit(&*s, at(5)).is_err());
    }
}
