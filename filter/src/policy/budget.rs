//! Spend budgets: a limit in money per calendar period (`daily`, `weekly` from
//! Monday, `monthly` from the 1st, at 00:00 of a configured UTC offset), per route,
//! per tenant or per identity, and what happens once it is spent: `block` (429),
//! `throttle` (a low request rate instead of a refusal) or `alert` (the request
//! passes; a counter, a metadata key and a response header say so, from a
//! threshold that may be below 100%).
//!
//! Embedded mode counts in the config's [`CountStore`] (one Envoy process). A
//! request reserves an estimate of its cost when it is admitted (its prompt's size
//! and its `max_tokens`, at the model's price) and the real cost replaces the
//! estimate when its answer ends, so a burst of concurrent requests overshoots a
//! budget by at most one request's estimate. In fleet mode the rate-limit service
//! counts ([`crate::policy::fleet`]).

use std::fmt;

use crate::date::{civil_from_days, days_from_civil};
use crate::error::GatewayError;
use crate::host::{Action, Counter, Headers, MetadataValue, Status};
use crate::machine::pipeline::{BodyStep, Cx, Flow, ResponseStep};
use crate::policy::identity::ANONYMOUS;
use crate::policy::ratelimit::{change, CountStore};

/// A calendar period.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Period {
    Daily,
    Weekly,
    Monthly,
}

/// One period of a [`Period`], at some time.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeriodAt {
    /// Counts from the epoch: a new index is a new count.
    pub index: u64,
    /// Its name, as a rate-limit descriptor value: `2026-12-07`, `2026-W50`, `2026-12`.
    pub key: String,
    /// When it ends (the next one starts), Unix seconds.
    pub ends: u64,
}

impl Period {
    pub fn name(self) -> &'static str {
        match self {
            Period::Daily => "day",
            Period::Weekly => "week",
            Period::Monthly => "month",
        }
    }

    /// The period holding Unix time `unix_secs`, in a calendar `offset_secs` east
    /// of UTC.
    pub fn at(self, unix_secs: u64, offset_secs: i64) -> PeriodAt {
        let local = (unix_secs as i64 + offset_secs).max(0) as u64;
        let day = local / 86_400;
        let utc = |local_day: u64| (local_day * 86_400) as i64 - offset_secs;
        match self {
            Period::Daily => {
                let (y, m, d) = civil_from_days(day);
                PeriodAt {
                    index: day,
                    key: format!("{y:04}-{m:02}-{d:02}"),
                    ends: utc(day + 1).max(0) as u64,
                }
            }
            Period::Weekly => {
                // 1970-01-01 was a Thursday: Monday-based weeks start 3 days later.
                let monday = day - (day + 3) % 7;
                let thursday = monday + 3;
                let (year, _, _) = civil_from_days(thursday);
                let jan1 = days_from_civil(year, 1, 1).unwrap_or(0);
                let week = (thursday - jan1) / 7 + 1;
                PeriodAt {
                    index: (day + 3) / 7,
                    key: format!("{year:04}-W{week:02}"),
                    ends: utc(monday + 7).max(0) as u64,
                }
            }
            Period::Monthly => {
                let (y, m, _) = civil_from_days(day);
                let (ny, nm) = if m == 12 { (y + 1, 1) } else { (y, m + 1) };
                let next = days_from_civil(ny, nm, 1).unwrap_or(day + 31);
                PeriodAt {
                    index: y * 12 + (m - 1),
                    key: format!("{y:04}-{m:02}"),
                    ends: utc(next).max(0) as u64,
                }
            }
        }
    }
}

/// What counts one budget: the route, its tenant, or each identity.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Scope {
    #[default]
    Route,
    Tenant,
    Identity,
}

/// What happens once a budget is spent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BudgetAction {
    Block,
    /// At most this many requests per minute (per budget scope) while spent.
    Throttle {
        requests_per_minute: u64,
    },
    /// The request passes; at each threshold (percent of the limit) it is flagged.
    Alert {
        at_percent: Vec<u32>,
    },
}

/// One budget of a route.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Budget {
    pub name: String,
    /// Micro-units of `currency`.
    pub limit: u64,
    pub currency: String,
    pub period: Period,
    /// East of UTC; the period starts at local midnight.
    pub utc_offset_secs: i64,
    pub action: BudgetAction,
    pub scope: Scope,
}

/// Money in micro-units, written with cents (more digits under a cent).
pub struct Money<'a>(pub u64, pub &'a str);

impl fmt::Display for Money<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let units = self.0 / 1_000_000;
        let micro = self.0 % 1_000_000;
        if self.0 != 0 && self.0 < 10_000 {
            write!(f, "{units}.{micro:06} {}", self.1)
        } else {
            write!(f, "{units}.{:02} {}", micro / 10_000, self.1)
        }
    }
}

/// A budget refusing a request (block, or throttle past its rate).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BudgetRefusal {
    pub budget: String,
    pub limit: u64,
    pub currency: String,
    pub period: Period,
    /// When the period ends, Unix seconds, and how long until then.
    pub resets_at: u64,
    pub retry_after: u64,
    /// Throttled (over its low rate), rather than blocked.
    pub throttled: bool,
}

impl BudgetRefusal {
    pub fn message(&self) -> String {
        let resets = crate::date::format_rfc3339(self.resets_at);
        let spent = format!(
            "Budget '{}' of {} per {} is spent",
            self.budget,
            Money(self.limit, &self.currency),
            self.period.name()
        );
        if self.throttled {
            format!(
                "{spent}: requests are throttled until it resets at {resets}; try again in {} s",
                self.retry_after
            )
        } else {
            format!("{spent}; it resets at {resets}")
        }
    }
}

/// A request's reservation against one budget, settled when its answer ends.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Reservation {
    budget: usize,
    name: String,
    window: u64,
    reserved: u64,
}

impl Budget {
    /// The count name of this budget for a request of `route` (scope value as
    /// given).
    fn count(&self, route: &str, scope: &str) -> String {
        format!("budget/{route}/{}/{scope}", self.name)
    }
}

/// What to reserve for a request before its answer: its input at about four
/// bytes a token, and at most `max_output` tokens out (the default when the request
/// names no maximum).
pub const DEFAULT_MAX_OUTPUT_TOKENS: u64 = 4096;

/// Pipeline step (embedded mode): every budget of the route admits the request or
/// refuses it, reserving its estimated cost.
pub(crate) struct BudgetStep;

impl BodyStep for BudgetStep {
    fn on_body(&self, cx: &mut Cx<'_>, out: &mut Vec<Action>) -> Flow {
        let config = cx.config;
        let Some(route) = cx.req.route.map(|i| &config.routes[i]) else {
            return Flow::Next;
        };
        if route.budgets.is_empty() || config.fleet_mode() {
            return Flow::Next;
        }
        let now = cx.unix_ms / 1000;
        let price = config.request_price(route, &cx.req.model);
        let (input, output) = cx.req.token_estimate_parts();
        let store = config.counts();
        let scope =
            |b: &Budget| scope_value(b.scope, route.tenant.as_deref(), cx.req.identity.as_deref());
        let mut reserved = Vec::new();
        let mut alerts = Vec::new();
        for (i, b) in route.budgets.iter().enumerate() {
            let estimate = match price {
                Some(p) if p.currency == b.currency => p.estimate(input, output),
                _ => 0,
            };
            let at = b.period.at(now, b.utc_offset_secs);
            let name = b.count(&route.name, scope(b));
            let refusal = |throttled: bool, retry_after: u64| BudgetRefusal {
                budget: b.name.clone(),
                limit: b.limit,
                currency: b.currency.clone(),
                period: b.period,
                resets_at: at.ends,
                retry_after,
                throttled,
            };
            let admitted = match &b.action {
                BudgetAction::Block => store.update(&name, at.index, &|spent| {
                    (spent < b.limit).then(|| spent.saturating_add(estimate))
                }),
                BudgetAction::Throttle {
                    requests_per_minute,
                } => {
                    if store.get(&name, at.index) >= b.limit {
                        let minute = now / 60;
                        let rate = format!("{name}/throttle");
                        let max = *requests_per_minute;
                        if store
                            .update(&rate, minute, &|n| (n < max).then_some(n + 1))
                            .is_none()
                        {
                            release(store, &reserved);
                            out.push(Action::Count(Counter::BudgetThrottled));
                            let r = refusal(true, 60 - now % 60);
                            return Flow::Reply(GatewayError::BudgetSpent(r));
                        }
                        out.push(Action::Count(Counter::BudgetThrottled));
                    }
                    store.update(&name, at.index, &|spent| {
                        Some(spent.saturating_add(estimate))
                    })
                }
                BudgetAction::Alert { at_percent } => {
                    let spent = store
                        .update(&name, at.index, &|spent| {
                            Some(spent.saturating_add(estimate))
                        })
                        .unwrap_or(0);
                    let before = spent.saturating_sub(estimate);
                    if let Some(pct) = at_percent.iter().rev().find(|&&pct| {
                        before.saturating_mul(100) >= b.limit.saturating_mul(u64::from(pct))
                    }) {
                        alerts.push(format!("{}:{pct}%", b.name));
                        out.push(Action::Count(Counter::BudgetAlert));
                    }
                    Some(spent)
                }
            };
            if admitted.is_none() {
                release(store, &reserved);
                out.push(Action::Count(Counter::BudgetBlocked));
                let r = refusal(false, at.ends.saturating_sub(now).max(1));
                return Flow::Reply(GatewayError::BudgetSpent(r));
            }
            reserved.push(Reservation {
                budget: i,
                name,
                window: at.index,
                reserved: estimate,
            });
        }
        cx.req.cost_estimate = price.map(|p| p.estimate(input, output));
        cx.req.reservations = reserved;
        cx.req.budget_alerts = alerts;
        Flow::Next
    }
}

/// Gives back what a refused request reserved.
fn release(store: &dyn CountStore, reserved: &[Reservation]) {
    for r in reserved {
        store.adjust(&r.name, r.window, change(r.reserved, 0));
    }
}

/// The value a budget of scope `scope` counts a request under.
pub(crate) fn scope_value<'a>(
    scope: Scope,
    tenant: Option<&'a str>,
    identity: Option<&'a str>,
) -> &'a str {
    match scope {
        Scope::Route => "",
        Scope::Tenant => tenant.unwrap_or(ANONYMOUS),
        Scope::Identity => identity.or(tenant).unwrap_or(ANONYMOUS),
    }
}

impl ResponseStep for BudgetStep {
    fn on_headers(
        &self,
        cx: &mut Cx<'_>,
        _headers: &dyn Headers,
        _end_of_stream: bool,
        out: &mut Vec<Action>,
    ) -> Status {
        if !cx.req.budget_alerts.is_empty() {
            out.push(Action::SetHeader {
                name: BUDGET_ALERT_HEADER.into(),
                value: cx.req.budget_alerts.join(", "),
            });
        }
        Status::Continue
    }

    /// The real cost replaces the estimate; a failed answer costs nothing; with no
    /// cost known (the stream ended early, no usage, no price) the estimate stays as
    /// the charge.
    fn on_end(&self, cx: &mut Cx<'_>, _complete: bool, out: &mut Vec<Action>) {
        let reservations = std::mem::take(&mut cx.req.reservations);
        let Some(route) = cx.route() else { return };
        for r in &reservations {
            let budget = &route.budgets[r.budget];
            let actual = match &cx.resp.cost {
                _ if cx.resp.failed() => 0,
                Some(c) if c.currency == budget.currency => c.micro,
                Some(_) | None => continue,
            };
            if actual != r.reserved {
                let delta = change(r.reserved, actual);
                cx.config.counts().adjust(&r.name, r.window, delta);
            }
        }
        if !cx.req.budget_alerts.is_empty() {
            out.push(Action::SetMetadata {
                key: "budget_alert".into(),
                value: MetadataValue::String(cx.req.budget_alerts.join(", ")),
            });
        }
    }
}

/// The response header naming the budgets whose alert threshold a request reached.
pub const BUDGET_ALERT_HEADER: &str = "x-aigw-budget-alert";

#[cfg(test)]
mod tests {
    use super::*;

    const DEC_7_2026: u64 = 1_796_644_800; // 2026-12-07T12:00:00Z, a Monday

    #[test]
    fn periods_follow_the_calendar() {
        let d = Period::Daily.at(DEC_7_2026, 0);
        assert_eq!(d.key, "2026-12-07");
        assert_eq!(d.ends, DEC_7_2026 + 12 * 3600);
        let m = Period::Monthly.at(DEC_7_2026, 0);
        assert_eq!(m.key, "2026-12");
        assert_eq!(crate::date::format_rfc3339(m.ends), "2027-01-01T00:00:00Z");
        let w = Period::Weekly.at(DEC_7_2026, 0);
        assert_eq!(w.key, "2026-W50");
        assert_eq!(crate::date::format_rfc3339(w.ends), "2026-12-14T00:00:00Z");
        // 2026-01-01 is a Thursday: ISO week 1; 2027-01-01 (a Friday) is in 2026-W53.
        let jan1 = crate::date::parse_rfc3339_utc("2027-01-01T10:00:00Z").unwrap();
        assert_eq!(Period::Weekly.at(jan1, 0).key, "2026-W53");
        assert_eq!(Period::Monthly.at(jan1, 0).key, "2027-01");
        // 23:30 UTC on the 31st is already January at +02:00.
        let late = crate::date::parse_rfc3339_utc("2026-12-31T23:30:00Z").unwrap();
        assert_eq!(Period::Monthly.at(late, 0).key, "2026-12");
        let east = Period::Monthly.at(late, 2 * 3600);
        assert_eq!(east.key, "2027-01");
        assert_eq!(
            crate::date::format_rfc3339(east.ends),
            "2027-01-31T22:00:00Z"
        );
        // A new period is a new count.
        assert_ne!(
            Period::Monthly.at(late, 0).index,
            Period::Monthly.at(jan1, 0).index
        );
    }

    #[test]
    fn money_is_written_with_cents() {
        assert_eq!(Money(500_000_000, "USD").to_string(), "500.00 USD");
        assert_eq!(Money(1_234_567, "EUR").to_string(), "1.23 EUR");
        assert_eq!(Money(3_300, "USD").to_string(), "0.003300 USD");
        assert_eq!(Money(0, "USD").to_string(), "0.00 USD");
    }
}
