//! Per-route rate limits, enforced where the request is seen: requests and tokens
//! per minute (one-minute windows of the host's clock) and requests in flight, for
//! the route as a whole, per tenant or per identity.
//!
//! The counts live in a [`CountStore`] the config holds: by default its own memory,
//! which every worker of the native module shares (one process); the wasm build,
//! whose workers each run their own VM, puts in the host's shared data instead, so
//! the limits hold for the Envoy process in both builds. A token limit reserves an
//! estimate of a request's tokens when it is admitted (its prompt at about four bytes
//! a token, and its `max_tokens`) and the answer's real count replaces it, so a burst
//! of concurrent requests takes a window over its limit by at most one request's
//! estimate. In fleet mode the rate-limit service counts
//! ([`crate::policy::fleet`]).

use std::collections::HashMap;
use std::fmt;
use std::sync::Mutex;
use std::time::Duration;

use crate::error::GatewayError;
use crate::host::{Action, Counter};
use crate::machine::pipeline::{BodyStep, Cx, Flow, ResponseStep};
use crate::policy::budget::{scope_value, Scope};

/// Counts shared by every stream of a config, each kept with the window it counts.
pub trait CountStore: Send + Sync + fmt::Debug {
    /// Count `name` as kept for `window` (0 if kept for another).
    fn get(&self, name: &str, window: u64) -> u64;

    /// Reads count `name` (0 if it was kept for a window other than `window`), lets
    /// `next` decide its new value, and stores it for `window`. `None` from `next`
    /// stores nothing. Returns what was stored. `next` may run more than once (a
    /// store may retry on a concurrent change); it must not have side effects.
    fn update(&self, name: &str, window: u64, next: &dyn Fn(u64) -> Option<u64>) -> Option<u64>;

    /// Adds `delta` to count `name` (a negative one subtracts, down to 0) if the
    /// count is kept for `window`; a count kept for another window (a later one:
    /// the answer came after its window ended) is left as it is.
    fn adjust(&self, name: &str, window: u64, delta: i64);

    /// Makes count `name` exist before any request updates it (a store whose
    /// compare-and-swap cannot guard a count's creation); keeps an existing one.
    fn prepare(&self, _name: &str) {}
}

/// `count + delta`, within `0..=u64::MAX`.
pub fn add_signed(count: u64, delta: i64) -> u64 {
    if delta < 0 {
        count.saturating_sub(delta.unsigned_abs())
    } else {
        count.saturating_add(delta as u64)
    }
}

/// `to - from` as a count change, within `i64`'s range.
pub fn change(from: u64, to: u64) -> i64 {
    let d = i128::from(to) - i128::from(from);
    d.clamp(i128::from(i64::MIN), i128::from(i64::MAX)) as i64
}

/// How many counts [`LocalCounts`] keeps before it forgets the least recently used
/// half (counts per identity grow with the clients).
pub const LOCAL_CAPACITY: usize = if cfg!(test) { 1_000 } else { 200_000 };

/// A store in this process's memory.
#[derive(Debug, Default)]
pub struct LocalCounts {
    counts: Mutex<Local>,
}

#[derive(Debug, Default)]
struct Local {
    /// Name → (window, count, last use).
    map: HashMap<String, (u64, u64, u64)>,
    clock: u64,
}

impl Local {
    fn touch(&mut self) -> u64 {
        self.clock += 1;
        self.clock
    }

    /// Room for one more count: past the capacity, the least recently used half
    /// goes (counts of windows long gone, identities no longer seen).
    fn make_room(&mut self) {
        if self.map.len() < LOCAL_CAPACITY {
            return;
        }
        let mut uses: Vec<u64> = self.map.values().map(|v| v.2).collect();
        let (_, median, _) = uses.select_nth_unstable(LOCAL_CAPACITY / 2);
        let median = *median;
        self.map.retain(|_, v| v.2 > median);
    }
}

impl CountStore for LocalCounts {
    fn get(&self, name: &str, window: u64) -> u64 {
        match self
            .counts
            .lock()
            .ok()
            .and_then(|c| c.map.get(name).copied())
        {
            Some((w, n, _)) if w == window => n,
            _ => 0,
        }
    }

    fn update(&self, name: &str, window: u64, next: &dyn Fn(u64) -> Option<u64>) -> Option<u64> {
        let mut counts = self.counts.lock().ok()?;
        let current = match counts.map.get(name) {
            Some(&(w, n, _)) if w == window => n,
            _ => 0,
        };
        let new = next(current)?;
        let used = counts.touch();
        match counts.map.get_mut(name) {
            Some(slot) => *slot = (window, new, used),
            None => {
                counts.make_room();
                counts.map.insert(name.to_string(), (window, new, used));
            }
        }
        Some(new)
    }

    fn adjust(&self, name: &str, window: u64, delta: i64) {
        let Ok(mut counts) = self.counts.lock() else {
            return;
        };
        let used = counts.touch();
        if let Some(slot) = counts.map.get_mut(name) {
            if slot.0 == window {
                *slot = (window, add_signed(slot.1, delta), used);
            }
        }
    }
}

/// A route's limits (`None`: not limited).
#[derive(Debug, Default)]
pub struct RateLimit {
    pub requests_per_minute: Option<u64>,
    pub tokens_per_minute: Option<u64>,
    pub concurrency: Option<u64>,
    /// What the limits count per.
    pub per: Scope,
    route: String,
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

/// What an admitted request holds of its route's limits, until its answer ends
/// (tokens reserved) and its stream goes (a request in flight).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Admission {
    /// The counts' names: `<route>/<scope>/...`.
    base: String,
    /// The window tokens were reserved in, and how many.
    tokens: Option<(u64, u64)>,
    in_flight: bool,
}

impl RateLimit {
    pub fn new(
        route: &str,
        requests_per_minute: Option<u64>,
        tokens_per_minute: Option<u64>,
        concurrency: Option<u64>,
        per: Scope,
    ) -> Self {
        RateLimit {
            requests_per_minute,
            tokens_per_minute,
            concurrency,
            per,
            route: route.to_string(),
        }
    }

    /// The names of the counts this route's limits use when they count the route as
    /// a whole (per tenant or identity, names are made as requests come).
    pub fn count_names(&self) -> Vec<String> {
        if self.per != Scope::Route {
            return Vec::new();
        }
        let base = format!("{}/", self.route);
        [
            (self.requests_per_minute, "requests"),
            (self.tokens_per_minute, "tokens"),
            (self.concurrency, "in-flight"),
        ]
        .into_iter()
        .filter(|(v, _)| v.is_some())
        .map(|(_, k)| format!("{base}/{k}"))
        .collect()
    }

    pub fn is_unlimited(&self) -> bool {
        self.requests_per_minute.is_none()
            && self.tokens_per_minute.is_none()
            && self.concurrency.is_none()
    }

    /// Admits a request of scope value `scope` now, reserving `estimate` tokens, or
    /// says which limit refuses it. What it holds goes back with
    /// [`RateLimit::settle`] (tokens) and [`RateLimit::release`] (in flight).
    pub fn admit(
        &self,
        store: &dyn CountStore,
        now: Duration,
        scope: &str,
        estimate: u64,
    ) -> Result<Admission, Refusal> {
        self.admit_some(store, now, scope, estimate, false)
    }

    /// As [`RateLimit::admit`]; `in_flight_only`: fleet mode, where a rate-limit
    /// service counts requests and tokens but requests in flight stay per process
    /// (the service only adds).
    pub fn admit_some(
        &self,
        store: &dyn CountStore,
        now: Duration,
        scope: &str,
        estimate: u64,
        in_flight_only: bool,
    ) -> Result<Admission, Refusal> {
        if in_flight_only {
            let per_process = RateLimit {
                requests_per_minute: None,
                tokens_per_minute: None,
                concurrency: self.concurrency,
                per: self.per,
                route: self.route.clone(),
            };
            return per_process.admit(store, now, scope, estimate);
        }
        let secs = now.as_secs();
        let window = secs / 60;
        let retry_after = 60 - secs % 60;
        let base = format!("{}/{scope}", self.route);
        let (requests, tokens, in_flight) = (
            format!("{base}/requests"),
            format!("{base}/tokens"),
            format!("{base}/in-flight"),
        );
        // Checked and reserved in one update (one round trip to a shared store); a
        // refusal by a later limit gives the reservation back.
        if let Some(max) = self.tokens_per_minute {
            if store
                .update(&tokens, window, &|n| {
                    (n < max).then(|| n.saturating_add(estimate))
                })
                .is_none()
            {
                return Err(Refusal {
                    limit: Limit::TokensPerMinute,
                    value: max,
                    retry_after,
                });
            }
        }
        let give_back_tokens = || {
            if self.tokens_per_minute.is_some() {
                store.adjust(&tokens, window, change(estimate, 0));
            }
        };
        if let Some(max) = self.requests_per_minute {
            if store
                .update(&requests, window, &|n| (n < max).then_some(n + 1))
                .is_none()
            {
                give_back_tokens();
                return Err(Refusal {
                    limit: Limit::RequestsPerMinute,
                    value: max,
                    retry_after,
                });
            }
        }
        if let Some(max) = self.concurrency {
            if store
                .update(&in_flight, ALWAYS, &|n| (n < max).then_some(n + 1))
                .is_none()
            {
                if self.requests_per_minute.is_some() {
                    // Refused after all: the request does not count.
                    store.adjust(&requests, window, -1);
                }
                give_back_tokens();
                return Err(Refusal {
                    limit: Limit::Concurrency,
                    value: max,
                    retry_after: 0,
                });
            }
        }
        let tokens = self.tokens_per_minute.map(|_| (window, estimate));
        Ok(Admission {
            base,
            tokens,
            in_flight: self.concurrency.is_some(),
        })
    }

    /// An admitted request's answer ended with `tokens` (`None`: unknown; the
    /// reservation stays as its count).
    pub fn settle(&self, store: &dyn CountStore, admission: &mut Admission, tokens: Option<u64>) {
        if let (Some((window, reserved)), Some(actual)) = (admission.tokens.take(), tokens) {
            if actual == reserved {
                return;
            }
            let name = format!("{}/tokens", admission.base);
            store.adjust(&name, window, change(reserved, actual));
        }
    }

    /// An admitted request's stream ended.
    pub fn release(&self, store: &dyn CountStore, admission: &mut Admission) {
        if std::mem::take(&mut admission.in_flight) {
            store.adjust(&format!("{}/in-flight", admission.base), ALWAYS, -1);
        }
    }
}

/// Pipeline step: admits a request under its route's limits (429 otherwise), and
/// settles the tokens its answer used when it ends. The request in flight is
/// released when the request's machine goes.
pub(crate) struct RateLimitStep;

impl BodyStep for RateLimitStep {
    fn on_body(&self, cx: &mut Cx<'_>, out: &mut Vec<Action>) -> Flow {
        let Some(index) = cx.req.route else {
            return Flow::Next;
        };
        let route = &cx.config.routes[index];
        let limit = &route.rate_limit;
        if limit.is_unlimited() || cx.config.fleet_mode() {
            return Flow::Next;
        }
        let scope = scope_value(
            limit.per,
            route.tenant.as_deref(),
            cx.req.identity.as_deref(),
        );
        let estimate = cx.req.token_estimate();
        match limit.admit(cx.config.counts(), cx.now, scope, estimate) {
            Ok(admission) => {
                cx.req.admitted = Some((index, admission));
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
        let tokens = cx
            .resp
            .meter
            .as_ref()
            .and_then(|m| m.usage())
            .map(|u| u.total_tokens);
        if let Some((route, admission)) = cx.req.admitted.as_mut() {
            let limit = &cx.config.routes[*route].rate_limit;
            limit.settle(cx.config.counts(), admission, tokens);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: u64) -> Duration {
        Duration::from_secs(secs)
    }

    fn limit(rpm: Option<u64>, tpm: Option<u64>, conc: Option<u64>) -> RateLimit {
        RateLimit::new("r", rpm, tpm, conc, Scope::Route)
    }

    #[test]
    fn requests_per_minute_per_window() {
        let (rl, s) = (limit(Some(2), None, None), LocalCounts::default());
        assert!(rl.admit(&s, at(60), "", 0).is_ok());
        assert!(rl.admit(&s, at(61), "", 0).is_ok());
        assert_eq!(
            rl.admit(&s, at(100), "", 0),
            Err(Refusal {
                limit: Limit::RequestsPerMinute,
                value: 2,
                retry_after: 20
            })
        );
        // Refused requests do not count; the next minute starts over.
        assert!(rl.admit(&s, at(119), "", 0).is_err());
        assert!(rl.admit(&s, at(120), "", 0).is_ok());
        assert!(rl.admit(&s, at(121), "", 0).is_ok());
        assert!(rl.admit(&s, at(122), "", 0).is_err());
    }

    #[test]
    fn tokens_are_reserved_then_settled() {
        let (rl, s) = (limit(None, Some(100), None), LocalCounts::default());
        // A reservation of 60 counts at once: the window is not spent yet.
        let mut a = rl.admit(&s, at(0), "", 60).unwrap();
        assert_eq!(s.get("r//tokens", 0), 60);
        let mut b = rl.admit(&s, at(1), "", 60).unwrap();
        // 120 reserved: the next is refused before any answer came back.
        let refused = rl.admit(&s, at(2), "", 60).unwrap_err();
        assert_eq!(
            (refused.limit, refused.retry_after),
            (Limit::TokensPerMinute, 58)
        );
        // The answers used fewer: their counts replace the reservations.
        rl.settle(&s, &mut a, Some(10));
        rl.settle(&s, &mut b, Some(20));
        assert_eq!(s.get("r//tokens", 0), 30);
        assert!(rl.admit(&s, at(3), "", 0).is_ok());
        // An answer with no usage keeps its reservation; settling twice does nothing.
        let mut c = rl.admit(&s, at(4), "", 50).unwrap();
        rl.settle(&s, &mut c, None);
        rl.settle(&s, &mut c, Some(0));
        assert_eq!(s.get("r//tokens", 0), 80);
        // An answer that ends in the next window leaves that window alone.
        let mut d = rl.admit(&s, at(59), "", 10).unwrap();
        assert!(rl.admit(&s, at(60), "", 100).is_ok());
        rl.settle(&s, &mut d, Some(1000));
        assert_eq!(s.get("r//tokens", 1), 100);
    }

    #[test]
    fn concurrency_until_released() {
        let (rl, s) = (limit(Some(10), None, Some(1)), LocalCounts::default());
        let mut a = rl.admit(&s, at(0), "", 0).unwrap();
        let refused = rl.admit(&s, at(0), "", 0).unwrap_err();
        assert_eq!(refused.limit, Limit::Concurrency);
        rl.release(&s, &mut a);
        let mut b = rl.admit(&s, at(0), "", 0).unwrap();
        rl.release(&s, &mut b);
        rl.release(&s, &mut b);
        // The refusal took back its request count: 2 of 10 used; none in flight.
        assert_eq!(s.get("r//requests", 0), 2);
        assert_eq!(s.get("r//in-flight", ALWAYS), 0);
    }

    #[test]
    fn a_request_refused_by_another_limit_reserves_no_tokens() {
        let (rl, s) = (limit(Some(1), Some(1000), Some(1)), LocalCounts::default());
        let mut a = rl.admit(&s, at(0), "", 40).unwrap();
        // Refused by requests per minute, then (a new minute) by requests in flight.
        assert_eq!(
            rl.admit(&s, at(1), "", 50).unwrap_err().limit,
            Limit::RequestsPerMinute
        );
        assert_eq!(s.get("r//tokens", 0), 40);
        assert_eq!(
            rl.admit(&s, at(60), "", 70).unwrap_err().limit,
            Limit::Concurrency
        );
        assert_eq!(s.get("r//tokens", 1), 0);
        assert_eq!(s.get("r//requests", 1), 0);
        rl.release(&s, &mut a);
    }

    #[test]
    fn scopes_count_apart() {
        let s = LocalCounts::default();
        let rl = RateLimit::new("r", Some(1), None, None, Scope::Identity);
        assert!(rl.admit(&s, at(0), "alice", 0).is_ok());
        assert!(rl.admit(&s, at(0), "alice", 0).is_err());
        assert!(rl.admit(&s, at(0), "bob", 0).is_ok());
        assert!(rl.count_names().is_empty());
        assert_eq!(limit(Some(1), Some(1), None).count_names().len(), 2);
    }

    #[test]
    fn routes_count_apart_and_stores_are_shared_across_threads() {
        let s = std::sync::Arc::new(LocalCounts::default());
        let other = RateLimit::new("other", Some(1), None, None, Scope::Route);
        assert!(other.admit(&*s, at(5), "", 0).is_ok());
        let handles: Vec<_> = (0..4)
            .map(|_| {
                let s = s.clone();
                std::thread::spawn(move || {
                    let rl = limit(Some(1000), None, None);
                    (0..400)
                        .filter(|_| rl.admit(&*s, at(5), "", 0).is_ok())
                        .count()
                })
            })
            .collect();
        let admitted: usize = handles.into_iter().map(|h| h.join().unwrap_or(0)).sum();
        assert_eq!(admitted, 1000);
        assert!(other.admit(&*s, at(5), "", 0).is_err());
    }

    #[test]
    fn local_counts_forget_the_least_recently_used_past_capacity() {
        let s = LocalCounts::default();
        for i in 0..LOCAL_CAPACITY {
            s.update(&format!("n{i}"), 0, &|n| Some(n + 1));
        }
        s.update("n0", 0, &|n| Some(n + 1)); // used again: kept
        s.update("new", 0, &|n| Some(n + 1));
        assert_eq!(s.get("n0", 0), 2);
        assert_eq!(s.get("new", 0), 1);
        assert_eq!(s.get("n1", 0), 0, "forgotten");
        assert!(s.counts.lock().unwrap().map.len() <= LOCAL_CAPACITY / 2 + 2);
    }
}
