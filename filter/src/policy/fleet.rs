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
//! The rate-limit service cannot take a charge back, so a request's charge is its
//! real cost, made when its answer ends; a burst of concurrent requests arriving
//! while a limit is nearly reached all pass the request-time check (in embedded mode
//! a reservation bounds that overshoot to one request).

use crate::host::{Action, MetadataValue};
use crate::machine::pipeline::{BodyStep, Cx, Flow, ResponseStep};
use crate::policy::budget::{scope_value, Scope};
use crate::policy::ratelimit::estimate_tokens;

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
        let estimate = cx.req.token_estimate();
        let output = cx
            .req
            .max_output_tokens
            .unwrap_or(crate::policy::budget::DEFAULT_MAX_OUTPUT_TOKENS);
        cx.req.cost_estimate = cx
            .config
            .request_price(route, &cx.req.model)
            .map(|p| p.estimate(estimate.saturating_sub(output), output));
        cx.req.fleet = true;
        Flow::Next
    }
}

impl ResponseStep for FleetDescriptors {
    /// The charges: the answer's real tokens and cost, else the estimates.
    fn on_end(&self, cx: &mut Cx<'_>, _complete: bool, out: &mut Vec<Action>) {
        if !cx.req.fleet {
            return;
        }
        // A failed answer (the rate-limit service's own 429 among them) costs
        // nothing: a zero charge counts nothing.
        let failed = cx.resp.failed();
        let estimate = estimate_tokens(cx.req.body_len, cx.req.max_output_tokens);
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
