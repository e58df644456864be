//! Fleet mode: limits and budgets that hold across Envoy replicas, counted by a
//! rate-limit service (Envoy's RLS v3 API, backed by Redis) that Envoy's own
//! rate-limit filter asks. The gateway only says what to count: it writes the
//! descriptors' values into the dynamic metadata before the request is routed, and
//! the charges (tokens, cost in micro-units) when the answer ends; the rate-limit
//! filter's per-route rate limits (written by `aigw compile`) read them as
//! `metadata` descriptor actions and as `hits_addend` with `apply_on_stream_done`,
//! checking with a zero charge when the request arrives.
//!
//! Metadata keys (namespace `io.envoy.ai_gateway`):
//!
//! | key | when | value |
//! | --- | --- | --- |
//! | `rl_route` | request | the route's name |
//! | `rl_identity` | request | the identity, else the tenant, else `anonymous` |
//! | `rl_tenant` | request | the route's tenant, else `anonymous` |
//! | `rl_period_<budget>` | request | the budget's calendar period (`2026-12`) |
//! | `rl_tokens` | end | the answer's total tokens (an estimate when unknown; 0 for a failed answer) |
//! | `rl_cost` | end | its cost in micro-units (likewise) |
//!
//! | `rl_unchecked` | end | `true` when the answer carries no verdict of the service |
//!
//! The rate-limit filter (compiled with `enable_x_ratelimit_headers`) puts
//! `x-ratelimit-limit` on every answer the service gave a verdict for; an answer
//! without it passed unchecked (the service could not be asked and the filter fails
//! open, or it knows no limit for the descriptors): that is counted
//! (`aigw_fleet_unchecked`), flagged in the metadata and logged, at most one line per
//! ten seconds.
//!
//! The rate-limit service cannot take a charge back, so a request's charge is its
//! real cost, made when its answer ends; a burst of concurrent requests arriving
//! while a limit is nearly reached all pass the request-time check (in embedded mode
//! a reservation bounds that overshoot to one request).

use std::sync::atomic::{AtomicU64, Ordering};

use crate::host::{Action, Counter, Headers, LogLevel, MetadataValue, Status};
use crate::machine::pipeline::{BodyStep, Cx, Flow, ResponseStep};
use crate::policy::budget::{scope_value, Scope};

/// Pipeline step (fleet mode): the descriptors' values.
pub(crate) struct FleetDescriptors;

fn set(out: &mut Vec<Action>, key: impl Into<String>, value: MetadataValue) {
    out.push(Action::SetMetadata {
        key: key.into(),
        value,
    });
}

impl BodyStep for FleetDescriptors {
    fn on_body(&self, cx: &mut Cx<'_>, out: &mut Vec<Action>) -> Flow {
        let Some(route) = cx.route() else {
            return Flow::Next;
        };
        if !cx.config.fleet_mode() || (route.rate_limit.is_unlimited() && route.budgets.is_empty())
        {
            return Flow::Next;
        }
        let tenant = route.tenant.as_deref();
        let identity = cx.req.identity.as_deref();
        set(out, "rl_route", MetadataValue::String(route.name.clone()));
        set(
            out,
            "rl_identity",
            MetadataValue::String(scope_value(Scope::Identity, tenant, identity).into()),
        );
        set(
            out,
            "rl_tenant",
            MetadataValue::String(scope_value(Scope::Tenant, tenant, identity).into()),
        );
        let now = cx.unix_ms / 1000;
        for b in &route.budgets {
            let at = b.period.at(now, b.utc_offset_secs);
            set(
                out,
                format!("rl_period_{}", b.name),
                MetadataValue::String(at.key),
            );
        }
        let (input, output) = cx.req.token_estimate_parts();
        cx.req.cost_estimate = cx
            .config
            .request_price(route, &cx.req.model)
            .map(|p| p.estimate(input, output));
        cx.req.fleet = true;
        Flow::Next
    }
}

/// The header Envoy's rate-limit filter adds to an answer the service gave a verdict
/// for (`enable_x_ratelimit_headers: DRAFT_VERSION_03`).
const VERDICT_HEADER: &str = "x-ratelimit-limit";

/// When the last "unchecked" line was logged (Unix seconds).
static LAST_UNCHECKED_LOG: AtomicU64 = AtomicU64::new(0);
const UNCHECKED_LOG_EVERY_SECS: u64 = 10;

impl ResponseStep for FleetDescriptors {
    fn on_headers(
        &self,
        cx: &mut Cx<'_>,
        headers: &dyn Headers,
        _end_of_stream: bool,
        _out: &mut Vec<Action>,
    ) -> Status {
        if cx.req.fleet && headers.get(VERDICT_HEADER).is_none() {
            cx.resp.fleet_unchecked = true;
        }
        Status::Continue
    }

    /// The charges: the answer's real tokens and cost, else the estimates.
    fn on_end(&self, cx: &mut Cx<'_>, _complete: bool, out: &mut Vec<Action>) {
        if !cx.req.fleet {
            return;
        }
        if cx.resp.fleet_unchecked {
            unchecked(cx, out);
        }
        // A failed answer (the rate-limit service's own 429 among them) costs
        // nothing: a zero charge counts nothing.
        let failed = cx.resp.failed();
        let estimate = cx.req.token_estimate();
        let tokens = match cx.resp.meter.as_ref().and_then(|m| m.usage()) {
            _ if failed => 0,
            Some(u) => u.total_tokens,
            None => estimate,
        };
        set(out, "rl_tokens", MetadataValue::Number(tokens as f64));
        let cost = match &cx.resp.cost {
            _ if failed => 0,
            Some(c) => c.micro,
            None => cx.req.cost_estimate.unwrap_or(0),
        };
        set(out, "rl_cost", MetadataValue::Number(cost as f64));
    }
}

fn unchecked(cx: &Cx<'_>, out: &mut Vec<Action>) {
    set(out, "rl_unchecked", MetadataValue::String("true".into()));
    out.push(Action::Count(Counter::FleetUnchecked));
    let now = cx.unix_ms / 1000;
    let last = LAST_UNCHECKED_LOG.load(Ordering::Relaxed);
    if now >= last + UNCHECKED_LOG_EVERY_SECS
        && LAST_UNCHECKED_LOG
            .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
    {
        let route = cx.route().map(|r| r.name.as_str()).unwrap_or("-");
        out.push(Action::Log {
            level: LogLevel::Warn,
            message: format!(
                "fleet mode: an answer on route {route} has no verdict of the rate-limit \
                 service ({VERDICT_HEADER} absent): it was not checked against its limits and \
                 its charge is likely lost (is the service up, and does its configuration \
                 match?); counted in aigw_fleet_unchecked, logged at most every \
                 {UNCHECKED_LOG_EVERY_SECS}s"
            ),
        });
    }
}
