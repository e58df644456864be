//! Limits and budgets: what the compiler writes for them besides the filter config.
//!
//! In embedded mode (the default) the filter counts in the Envoy process, and the
//! filter config (`routes[].rateLimit`, `routes[].budgets`, `identity`) is all there
//! is. In fleet mode (`quota.mode: fleet`) the filter only writes the descriptors'
//! values into the dynamic metadata (`rl_route`, `rl_identity`, `rl_tenant`,
//! `rl_period_<budget>`, and `rl_tokens`, `rl_cost` when the answer ends; see
//! `filter/src/policy/fleet.rs`), and a rate-limit service counts. The compiler
//! then writes:
//!
//! - in the standalone bootstrap, Envoy's `envoy.filters.http.ratelimit` after the
//!   filter (the filter holds the request until it has read and routed it; the
//!   rate-limit filter asks when the request goes on, so the metadata is there), a
//!   cluster `aigw_rate_limit_service` (HTTP/2) and, per route,
//!   `RateLimitPerRoute.rate_limits` ([`route_rate_limits`]): only there does
//!   Envoy 1.40 send each descriptor's `hits_addend`, which is how a check counts
//!   nothing (`number: 0`) and a charge counts the answer's tokens or cost
//!   (`format` of `rl_tokens` / `rl_cost`, `apply_on_stream_done`). Local-reply
//!   mappers answer the rate-limit filter's 429 (and, failing closed, the 503 of a
//!   service error) in the client's schema;
//! - the service's own configuration: `ratelimit-config.yaml` for
//!   envoyproxy/ratelimit ([`ratelimit_config`]) and `limitador-limits.yaml` for
//!   Kuadrant's Limitador ([`limitador_limits`]);
//! - on Envoy Gateway, global rate-limit rules in the route's BackendTrafficPolicy
//!   ([`eg_rules`]), as Envoy AI Gateway writes them for token limits.
//!
//! Descriptors (domain `--rate-limit-domain`, default `aigw`), each a list of
//! entries:
//!
//! | limit | entries | charge |
//! | --- | --- | --- |
//! | requests per minute | `aigw=requests`, `route`, scope | 1 at the request |
//! | tokens per minute | `aigw=tokens`, `route`, scope | 0 at the request (check), `rl_tokens` when the answer ends |
//! | budget `B` | `aigw=budget_B`, `route`, scope, `period` | 0 at the request, `rl_cost` (micro-units) when the answer ends |
//!
//! where scope is nothing (per route), `tenant` (`rl_tenant`) or `identity`
//! (`rl_identity`).

use serde_json::{json, Map, Value};

use crate::compile::{Plan, PlanRoute};
use crate::diag::{Diagnostic, ResourceId, Severity, Source};

/// The filter's dynamic metadata namespace.
pub const NAMESPACE: &str = aigw_filter::METADATA_NAMESPACE;
/// The Envoy cluster the rate-limit filter reaches the service through.
pub const RLS_CLUSTER: &str = "aigw_rate_limit_service";
/// Envoy's rate-limit filter (name and per-route config key).
pub const RATELIMIT_FILTER: &str = "envoy.filters.http.ratelimit";
/// The default rate-limit domain.
pub const DEFAULT_DOMAIN: &str = "aigw";
/// The largest limit envoyproxy/ratelimit (`requests_per_unit`, a uint32) and
/// Envoy Gateway (`limit.requests`) can hold.
pub const RLS_MAX: u64 = u32::MAX as u64;
/// How long the rate-limit filter waits for the service (Envoy's default is 20 ms,
/// short next to answers that take seconds; a timeout counts as a service error).
pub const RLS_TIMEOUT: &str = "1s";

/// How limits and budgets are counted (`--quota`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Quota {
    /// In the Envoy process.
    #[default]
    Embedded,
    /// By a rate-limit service.
    Fleet,
}

/// What a limit or budget counts per.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Scope {
    #[default]
    Route,
    Tenant,
    Identity,
}

impl Scope {
    pub fn parse(s: &str) -> Option<Scope> {
        match s {
            "route" => Some(Scope::Route),
            "tenant" => Some(Scope::Tenant),
            "identity" => Some(Scope::Identity),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Scope::Route => "route",
            Scope::Tenant => "tenant",
            Scope::Identity => "identity",
        }
    }

    /// The descriptor entry of the scope: key and metadata key.
    fn entry(self) -> Option<(&'static str, &'static str)> {
        match self {
            Scope::Route => None,
            Scope::Tenant => Some(("tenant", "rl_tenant")),
            Scope::Identity => Some(("identity", "rl_identity")),
        }
    }
}

/// Where a setting came from: a command-line option, or a resource's field.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Origin {
    Option(&'static str),
    Field {
        source: Source,
        resource: ResourceId,
        path: String,
    },
}

impl Origin {
    pub fn field(source: &Source, resource: &ResourceId, path: impl Into<String>) -> Origin {
        Origin::Field {
            source: source.clone(),
            resource: resource.clone(),
            path: path.into(),
        }
    }

    pub fn diagnostic(&self, severity: Severity, message: impl Into<String>) -> Diagnostic {
        match self {
            Origin::Option(name) => Diagnostic {
                severity,
                source: Source {
                    file: "<options>".into(),
                    document: 0,
                },
                resource: None,
                path: (*name).to_string(),
                message: message.into(),
            },
            Origin::Field {
                source,
                resource,
                path,
            } => Diagnostic {
                severity,
                source: source.clone(),
                resource: Some(resource.clone()),
                path: path.clone(),
                message: message.into(),
            },
        }
    }

    /// The field `key` of this one (an option is its own field).
    pub fn child(&self, key: &str) -> Origin {
        match self {
            Origin::Field {
                source,
                resource,
                path,
            } => Origin::Field {
                source: source.clone(),
                resource: resource.clone(),
                path: crate::read::join(path, key),
            },
            o => o.clone(),
        }
    }

    pub fn error(&self, message: impl Into<String>) -> Diagnostic {
        self.diagnostic(Severity::Error, message)
    }

    pub fn warning(&self, message: impl Into<String>) -> Diagnostic {
        self.diagnostic(Severity::Warning, message)
    }
}

impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Origin::Option(name) => write!(f, "option {name}"),
            Origin::Field { resource, path, .. } if path.is_empty() => write!(f, "{resource}"),
            Origin::Field { resource, path, .. } => write!(f, "{resource} {path}"),
        }
    }
}

/// The config's `identity`: the header identities come from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    /// Lower-case.
    pub header: String,
    pub hash: bool,
    pub origin: Origin,
}

/// The rate-limit service the standalone bootstrap asks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Service {
    pub host: String,
    pub port: u16,
    pub origin: Origin,
}

impl Service {
    fn is_ip(&self) -> bool {
        self.host.parse::<std::net::IpAddr>().is_ok()
    }
}

/// Parses `HOST:PORT` (`[v6]:PORT` for an IPv6 address).
pub fn parse_address(s: &str) -> Result<(String, u16), String> {
    let bad = || format!("'{s}' is not HOST:PORT");
    let (host, port) = s.rsplit_once(':').ok_or_else(bad)?;
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    let port: u16 = port.parse().map_err(|_| bad())?;
    if port == 0 || host.is_empty() || host.contains(['/', ' ', '[', ']']) {
        return Err(bad());
    }
    if host.contains(':') && host.parse::<std::net::Ipv6Addr>().is_err() {
        return Err(bad());
    }
    Ok((host.to_string(), port))
}

/// How the plan counts: the mode and, in fleet mode, the service.
#[derive(Clone, Debug, Default)]
pub struct QuotaPlan {
    pub mode: Quota,
    /// Why fleet mode (the option, or the resource that asked for it).
    pub mode_from: Option<Origin>,
    pub service: Option<Service>,
    pub domain: String,
    /// Who set `domain` and `fail_closed` (`None`: the defaults).
    pub domain_from: Option<Origin>,
    pub fail_closed: bool,
    pub fail_from: Option<Origin>,
    pub timeout_ms: Option<u64>,
}

impl QuotaPlan {
    pub fn fleet(&self) -> bool {
        self.mode == Quota::Fleet
    }
}

/// The plan's identity and counting mode from the command-line options.
pub(crate) fn plan_options(
    o: &crate::compile::Options,
    plan: &mut Plan,
    diags: &mut Vec<Diagnostic>,
) {
    match &o.identity_header {
        Some(h) => {
            let header = h.trim().to_ascii_lowercase();
            let ok = !header.is_empty()
                && header
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
            if ok {
                plan.identity = Some(Identity {
                    header,
                    hash: o.identity_hash,
                    origin: Origin::Option("--identity-header"),
                });
            } else {
                diags.push(
                    Origin::Option("--identity-header")
                        .error(format!("'{h}' is not a header name")),
                );
            }
        }
        None if !o.identity_hash => diags.push(
            Origin::Option("--identity-no-hash")
                .warning("ignored: no --identity-header names where identities come from"),
        ),
        None => {}
    }
    let domain = o.rate_limit_domain.as_deref().unwrap_or(DEFAULT_DOMAIN);
    if domain.is_empty() || domain.chars().any(|c| c.is_whitespace() || c.is_control()) {
        diags.push(Origin::Option("--rate-limit-domain").error(format!(
            "'{domain}' is not a rate-limit domain (a non-empty name)"
        )));
    }
    plan.quota.domain = domain.to_string();
    if o.rate_limit_domain.is_some() {
        plan.quota.domain_from = Some(Origin::Option("--rate-limit-domain"));
    }
    if let Some(q) = o.quota {
        plan.quota.mode = q;
        plan.quota.mode_from = Some(Origin::Option("--quota"));
    }
    if let Some(s) = &o.rate_limit_service {
        match parse_address(s) {
            Ok((host, port)) => {
                plan.quota.service = Some(Service {
                    host,
                    port,
                    origin: Origin::Option("--rate-limit-service"),
                })
            }
            Err(e) => diags.push(Origin::Option("--rate-limit-service").error(e)),
        }
    }
    if let Some(closed) = o.rate_limit_fail_closed {
        plan.quota.fail_closed = closed;
        plan.quota.fail_from = Some(Origin::Option("--rate-limit-failure"));
    }
}

/// Checks once every source had its say: fleet mode has a service whose counts
/// hold the limits, and limits per identity have an identity.
pub(crate) fn finish(plan: &Plan, diags: &mut Vec<Diagnostic>) {
    let q = &plan.quota;
    if q.fleet() {
        if q.service.is_none() {
            let why = q
                .mode_from
                .as_ref()
                .map(|o| format!(" (asked by {o})"))
                .unwrap_or_default();
            diags.push(Origin::Option("--rate-limit-service").error(format!(
                "fleet mode{why} needs the rate-limit service the bootstrap asks: --rate-limit-service HOST:PORT"
            )));
        }
        check_service_range(plan, diags);
    } else if let Some(s) = &q.service {
        diags.push(
            s.origin.warning(
                "ignored: a rate-limit service is asked in fleet mode only (--quota fleet)",
            ),
        );
    }
    if plan.identity.is_none() {
        for r in &plan.routes {
            let l = limits(r);
            let per_identity = (l.per == Scope::Identity
                && (l.requests_per_minute.is_some() || l.tokens_per_minute.is_some()))
                || l.budgets.iter().any(|b| b.per == Scope::Identity)
                || r.rate_limit
                    .as_ref()
                    .is_some_and(|rl| scope_of(rl) == Scope::Identity);
            if per_identity {
                diags.push(Origin::Option("--identity-header").error(format!(
                    "route {} counts per identity (--limits-per identity), which needs the header identities come from: --identity-header NAME",
                    r.name
                )));
                break;
            }
        }
    }
}

// ---------------------------------------------------------------- a route's limits

/// A calendar period of a budget.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Period {
    Daily,
    Weekly,
    Monthly,
}

impl Period {
    pub fn parse(s: &str) -> Option<Period> {
        match s {
            "daily" => Some(Period::Daily),
            "weekly" => Some(Period::Weekly),
            "monthly" => Some(Period::Monthly),
            _ => None,
        }
    }
}

/// One budget of a route, as the filter config states it.
#[derive(Clone, Debug, PartialEq)]
pub struct BudgetLimit {
    pub name: String,
    /// Micro-units of `currency`.
    pub micro: u64,
    pub currency: String,
    pub period: Period,
    /// `utcOffset` other than UTC.
    pub offset: bool,
    pub alert: bool,
    pub per: Scope,
    /// The resource field it came from.
    pub from: Origin,
}

/// A route's limits that a rate-limit service counts (not `concurrency`, which
/// stays per process).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Limits {
    pub requests_per_minute: Option<u64>,
    pub tokens_per_minute: Option<u64>,
    pub per: Scope,
    pub budgets: Vec<BudgetLimit>,
}

impl Limits {
    pub fn is_empty(&self) -> bool {
        self.requests_per_minute.is_none()
            && self.tokens_per_minute.is_none()
            && self.budgets.is_empty()
    }
}

fn scope_of(v: &Value) -> Scope {
    v.get("per")
        .and_then(Value::as_str)
        .and_then(Scope::parse)
        .unwrap_or_default()
}

/// Micro-units of an amount (as the filter rounds it).
pub fn micro(amount: f64) -> u64 {
    (amount * 1_000_000.0).round() as u64
}

/// The limits of route `r` (read from the config parts the compiler made, which
/// the filter has validated).
pub fn limits(r: &PlanRoute) -> Limits {
    let mut l = Limits::default();
    if let Some(rl) = &r.rate_limit {
        l.requests_per_minute = rl.get("requestsPerMinute").and_then(Value::as_u64);
        l.tokens_per_minute = rl.get("tokensPerMinute").and_then(Value::as_u64);
        l.per = scope_of(rl);
    }
    for (b, from) in &r.budgets {
        let (Some(name), Some(amount), Some(period)) = (
            b.get("name").and_then(Value::as_str),
            b.get("limit").and_then(Value::as_f64),
            b.get("period")
                .and_then(Value::as_str)
                .and_then(Period::parse),
        ) else {
            continue;
        };
        l.budgets.push(BudgetLimit {
            name: name.to_string(),
            micro: micro(amount),
            currency: b
                .get("currency")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string(),
            period,
            offset: b
                .get("utcOffset")
                .and_then(Value::as_str)
                .is_some_and(|o| !matches!(o, "UTC" | "Z" | "+00:00" | "-00:00")),
            alert: b.get("action").and_then(Value::as_str) == Some("alert"),
            per: scope_of(b),
            from: from.clone(),
        });
    }
    l
}

/// Fleet mode: the limits a rate-limit service cannot hold (32-bit counts).
/// Where route `r`'s `rateLimit` came from: its own field, a policy's, else the
/// rule.
fn rate_limit_origin(r: &PlanRoute) -> Origin {
    r.rate_limit_from
        .clone()
        .unwrap_or_else(|| Origin::field(&r.origin.0, &r.origin.1, r.rule_path.clone()))
}

pub fn check_service_range(plan: &Plan, diags: &mut Vec<Diagnostic>) {
    for r in &plan.routes {
        let l = limits(r);
        for (v, field) in [
            (l.requests_per_minute, "requestsPerMinute"),
            (l.tokens_per_minute, "tokensPerMinute"),
        ] {
            if let Some(n) = v.filter(|&n| n > RLS_MAX) {
                let at = match &r.rate_limit_from {
                    // The route's own rateLimit: its field; a policy's rule: the rule.
                    Some(o) if r.rate_limit_from_route() => o.child(field),
                    _ => rate_limit_origin(r),
                };
                diags.push(at.error(format!(
                    "{n} is more than a rate-limit service counts in one window ({RLS_MAX}: envoyproxy/ratelimit's requests_per_unit and Envoy Gateway's limit.requests are 32-bit)"
                )));
            }
        }
        for b in &l.budgets {
            if b.micro > RLS_MAX {
                diags.push(b.from.child("limit").error(format!(
                    "{} {} is {} micro-units, more than a rate-limit service counts in one window ({RLS_MAX}: 32-bit): fleet mode counts budgets in micro-units, so it holds at most 4294.967295 {}",
                    b.micro as f64 / 1e6,
                    b.currency,
                    b.micro,
                    b.currency
                )));
            }
        }
    }
}

// ---------------------------------------------------------------- descriptors

fn generic(value: &str) -> Value {
    json!({"generic_key": {"descriptor_key": "aigw", "descriptor_value": value}})
}

fn metadata(descriptor_key: &str, key: &str) -> Value {
    json!({"metadata": {
        "descriptor_key": descriptor_key,
        "metadata_key": {"key": NAMESPACE, "path": [{"key": key}]},
    }})
}

fn actions(kind: &str, per: Scope, period: Option<&str>) -> Vec<Value> {
    let mut a = vec![generic(kind), metadata("route", "rl_route")];
    if let Some((key, md)) = per.entry() {
        a.push(metadata(key, md));
    }
    if let Some(budget) = period {
        a.push(metadata("period", &format!("rl_period_{budget}")));
    }
    a
}

fn charge(key: &str) -> Value {
    json!({"format": format!("%DYNAMIC_METADATA({NAMESPACE}:{key})%")})
}

/// Route `r`'s `RateLimitPerRoute.rate_limits`: the request-time entries first
/// (requests, then the zero checks, then the route's other descriptors), the
/// stream-done charges last. Empty when the route has nothing to ask.
pub fn route_rate_limits(r: &PlanRoute) -> Vec<Value> {
    let l = limits(r);
    let mut now = Vec::new();
    let mut done = Vec::new();
    if l.requests_per_minute.is_some() {
        now.push(
            json!({"actions": actions("requests", l.per, None), "hits_addend": {"number": 1}}),
        );
    }
    if l.tokens_per_minute.is_some() {
        let a = actions("tokens", l.per, None);
        now.push(json!({"actions": a, "hits_addend": {"number": 0}}));
        done.push(
            json!({"actions": a, "hits_addend": charge("rl_tokens"), "apply_on_stream_done": true}),
        );
    }
    for b in &l.budgets {
        let a = actions(&format!("budget_{}", b.name), b.per, Some(&b.name));
        now.push(json!({"actions": a, "hits_addend": {"number": 0}}));
        done.push(
            json!({"actions": a, "hits_addend": charge("rl_cost"), "apply_on_stream_done": true}),
        );
    }
    now.extend(r.rl_actions.iter().cloned());
    now.extend(done);
    now
}

/// The wasm build cannot write dynamic metadata: the filter's keys are the
/// filter-state objects `wasm.io.envoy.ai_gateway.KEY` (text). Rate limit `l`
/// (of [`route_rate_limits`]) rewritten to read them: each `metadata` action as a
/// CEL descriptor (`envoy.rate_limit_descriptors.expr`) of that object, which,
/// like a missing metadata key, skips the rate limit when it is absent; each
/// charge as `%FILTER_STATE(...:PLAIN)%`.
pub fn wasm_rate_limit(l: &mut Value) {
    for a in l["actions"].as_array_mut().into_iter().flatten() {
        let md = &a["metadata"];
        if md["metadata_key"]["key"] != NAMESPACE {
            continue;
        }
        let (Some(descriptor_key), Some(key)) = (
            md["descriptor_key"].as_str(),
            md["metadata_key"]["path"][0]["key"].as_str(),
        ) else {
            continue;
        };
        *a = json!({"extension": {
            "name": "envoy.rate_limit_descriptors.expr",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.rate_limit_descriptors.expr.v3.Descriptor",
                "descriptor_key": descriptor_key,
                "text": format!("filter_state['wasm.{NAMESPACE}.{key}']"),
            },
        }});
    }
    if let Some(f) = l["hits_addend"]["format"].as_str() {
        let prefix = format!("%DYNAMIC_METADATA({NAMESPACE}:");
        if let Some(key) = f.strip_prefix(&prefix).and_then(|k| k.strip_suffix(")%")) {
            l["hits_addend"]["format"] =
                json!(format!("%FILTER_STATE(wasm.{NAMESPACE}.{key}:PLAIN)%"));
        }
    }
}

// ---------------------------------------------------------------- bootstrap

/// The standalone bootstrap's rate-limit filter, after `aigw`.
pub fn http_filter(q: &QuotaPlan) -> Value {
    let timeout = q
        .timeout_ms
        .map_or_else(|| RLS_TIMEOUT.to_string(), crate::units::envoy_duration);
    json!({"name": RATELIMIT_FILTER, "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.filters.http.ratelimit.v3.RateLimit",
        "domain": q.domain,
        "timeout": timeout,
        "failure_mode_deny": q.fail_closed,
        "status_on_error": {"code": "ServiceUnavailable"},
        "enable_x_ratelimit_headers": "DRAFT_VERSION_03",
        "rate_limit_service": {
            "grpc_service": {"envoy_grpc": {"cluster_name": RLS_CLUSTER}},
            "transport_api_version": "V3",
        },
    }})
}

/// The cluster reaching the rate-limit service (gRPC: HTTP/2, no TLS).
pub fn cluster(s: &Service) -> Value {
    let ip = s.is_ip();
    let mut c = Map::new();
    c.insert("name".into(), json!(RLS_CLUSTER));
    c.insert(
        "type".into(),
        json!(if ip { "STATIC" } else { "STRICT_DNS" }),
    );
    if !ip {
        c.insert("dns_lookup_family".into(), json!("V4_PREFERRED"));
    }
    c.insert("connect_timeout".into(), json!("1s"));
    c.insert(
        "typed_extension_protocol_options".into(),
        json!({"envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
            "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
            "explicit_http_config": {"http2_protocol_options": {}},
        }}),
    );
    c.insert(
        "load_assignment".into(),
        json!({"cluster_name": RLS_CLUSTER, "endpoints": [{"lb_endpoints": [{"endpoint": {
            "address": {"socket_address": {"address": s.host, "port_value": s.port}}
        }}]}]}),
    );
    Value::Object(c)
}

/// Anthropic clients: the Messages API under `/anthropic/`.
const ANTHROPIC_PREFIX: &str = "/anthropic/";
const RATE_LIMITED: &str = "Rate limit exceeded: a limit or budget of this route is reached; try again after the number of seconds in retry-after";
const SERVICE_ERROR: &str = "The rate-limit service could not be asked; try again later";

/// The HTTP connection manager's `local_reply_config`: the rate-limit filter's 429
/// (response flag `RL`) and, failing closed, its 503 for a service error (`RLSE`)
/// get a JSON body in the client's schema (Anthropic for `/anthropic/` paths, else
/// OpenAI); the 429 gets `retry-after` from the filter's `x-ratelimit-reset`.
pub fn local_reply_config() -> Value {
    let openai = |message: &str, kind: &str, code: &str| {
        json!({"error": {"message": message, "type": kind, "param": null, "code": code}})
            .to_string()
    };
    let anthropic = |message: &str, kind: &str| {
        json!({"type": "error", "error": {"type": kind, "message": message}}).to_string()
    };
    let flag = |f: &str| json!({"response_flag_filter": {"flags": [f]}});
    let anthropic_path = json!({"header_filter": {"header": {
        "name": ":path", "string_match": {"prefix": ANTHROPIC_PREFIX},
    }}});
    let mapper = |f: &str, anthropic_client: bool, status: u16, body: String| {
        let filter = if anthropic_client {
            json!({"and_filter": {"filters": [flag(f), anthropic_path.clone()]}})
        } else {
            flag(f)
        };
        let mut m = json!({
            "filter": filter,
            "status_code": status,
            "body": {"inline_string": body},
            "body_format_override": {
                "text_format_source": {"inline_string": "%LOCAL_REPLY_BODY%"},
                "content_type": "application/json",
            },
        });
        if f == "RL" {
            m["headers_to_add"] = json!([{
                "header": {"key": "retry-after", "value": "%RESP(x-ratelimit-reset)%"},
                "append_action": "OVERWRITE_IF_EXISTS_OR_ADD",
            }]);
        }
        m
    };
    json!({"mappers": [
        mapper("RL", true, 429, anthropic(RATE_LIMITED, "rate_limit_error")),
        mapper("RL", false, 429, openai(RATE_LIMITED, "requests", "rate_limit_exceeded")),
        mapper("RLSE", true, 503, anthropic(SERVICE_ERROR, "overloaded_error")),
        mapper("RLSE", false, 503, openai(SERVICE_ERROR, "server_error", "rate_limit_service_unavailable")),
    ]})
}

// ---------------------------------------------------------------- envoyproxy/ratelimit

/// envoyproxy/ratelimit's unit for a budget: its windows are fixed lengths counted
/// from the Unix epoch (`day` = UTC days, `week` from Thursday, `month` = 30 days,
/// `year` = 365 days), and the descriptor's `period` entry starts a new count
/// each calendar period. A window ending inside a period restarts its count, so a
/// daily budget in UTC takes `day` (its windows are the periods) and any other the
/// longest unit, `year` (at most one restart a year).
pub fn budget_unit(b: &BudgetLimit) -> &'static str {
    if b.period == Period::Daily && !b.offset {
        "day"
    } else {
        "year"
    }
}

/// One nesting level of the service's descriptor tree.
#[derive(Default)]
struct Tree {
    /// (key, value) → node, in insertion order.
    children: Vec<((String, Option<String>), Tree)>,
    limit: Option<(String, u64)>,
    shadow: bool,
}

impl Tree {
    fn child(&mut self, key: &str, value: Option<&str>) -> &mut Tree {
        let k = (key.to_string(), value.map(str::to_string));
        let i = match self.children.iter().position(|(c, _)| *c == k) {
            Some(i) => i,
            None => {
                self.children.push((k, Tree::default()));
                self.children.len() - 1
            }
        };
        &mut self.children[i].1
    }

    fn to_json(&self) -> Vec<Value> {
        self.children
            .iter()
            .map(|((key, value), node)| {
                let mut o = Map::new();
                o.insert("key".into(), json!(key));
                if let Some(v) = value {
                    o.insert("value".into(), json!(v));
                }
                if let Some((unit, n)) = &node.limit {
                    o.insert(
                        "rate_limit".into(),
                        json!({"unit": unit, "requests_per_unit": n}),
                    );
                }
                if node.shadow {
                    o.insert("shadow_mode".into(), json!(true));
                }
                if !node.children.is_empty() {
                    o.insert("descriptors".into(), Value::Array(node.to_json()));
                }
                Value::Object(o)
            })
            .collect()
    }
}

/// The envoyproxy/ratelimit configuration (one domain) of the plan's limits.
pub fn ratelimit_config(plan: &Plan) -> Value {
    let mut root = Tree::default();
    let mut put =
        |kind: &str, route: &str, per: Scope, period: bool, limit: (&str, u64), shadow: bool| {
            let mut node = root.child("aigw", Some(kind)).child("route", Some(route));
            if let Some((key, _)) = per.entry() {
                node = node.child(key, None);
            }
            if period {
                node = node.child("period", None);
            }
            node.limit = Some((limit.0.to_string(), limit.1));
            node.shadow = shadow;
        };
    for r in &plan.routes {
        let l = limits(r);
        if let Some(n) = l.requests_per_minute {
            put("requests", &r.name, l.per, false, ("minute", n), false);
        }
        if let Some(n) = l.tokens_per_minute {
            put("tokens", &r.name, l.per, false, ("minute", n), false);
        }
        for b in &l.budgets {
            put(
                &format!("budget_{}", b.name),
                &r.name,
                b.per,
                true,
                (budget_unit(b), b.micro),
                b.alert,
            );
        }
    }
    json!({"domain": plan.quota.domain, "descriptors": root.to_json()})
}

// ---------------------------------------------------------------- Limitador

/// A CEL string literal.
fn cel_str(s: &str) -> String {
    format!("'{}'", s.replace('\\', "\\\\").replace('\'', "\\'"))
}

/// Kuadrant Limitador's limits file (a list of limits, namespace = domain) of the
/// plan's limits it can count, and what it leaves out.
///
/// Limitador's Envoy RLS endpoint reads the request's `hits_addend`, where 0 counts
/// as one, and not each descriptor's, which is all Envoy's rate-limit filter sets:
/// every call counts one. Requests per minute count right: their descriptor is the
/// first of the request-time call (`descriptors[0]`). A token limit or a budget
/// would count calls instead of tokens or micro-units, so they are left out.
pub fn limitador_limits(plan: &Plan) -> (Vec<Value>, Vec<String>) {
    let mut out = Vec::new();
    let mut left_out = Vec::new();
    for r in &plan.routes {
        let l = limits(r);
        if let Some(n) = l.requests_per_minute {
            let mut variables = Vec::new();
            if let Some((key, _)) = l.per.entry() {
                variables.push(json!(format!("descriptors[0][{}]", cel_str(key))));
            }
            out.push(json!({
                "namespace": plan.quota.domain,
                "name": format!("{} requests per minute", r.name),
                "max_value": n,
                "seconds": 60,
                "conditions": [
                    format!("descriptors[0]['aigw'] == 'requests'"),
                    format!("descriptors[0]['route'] == {}", cel_str(&r.name)),
                ],
                "variables": variables,
            }));
        }
        if l.tokens_per_minute.is_some() {
            left_out.push(format!("{}: tokens per minute", r.name));
        }
        for b in &l.budgets {
            left_out.push(format!("{}: budget {}", r.name, b.name));
        }
    }
    (out, left_out)
}

// ---------------------------------------------------------------- Envoy Gateway

/// A RE2 regular expression matching exactly one of `values`.
fn alternatives(values: &[&str]) -> String {
    let escaped: Vec<String> = values
        .iter()
        .map(|v| {
            let mut s = String::new();
            for c in v.chars() {
                if "\\.+*?()|[]{}^$".contains(c) {
                    s.push('\\');
                }
                s.push(c);
            }
            s
        })
        .collect();
    format!("^(?:{})$", escaped.join("|"))
}

/// Envoy Gateway's unit for a budget (fixed windows of its rate-limit service).
fn eg_budget_unit(p: Period) -> &'static str {
    match p {
        Period::Daily => "Day",
        Period::Weekly => "Week",
        Period::Monthly => "Month",
    }
}

/// Global rate-limit rules of a BackendTrafficPolicy for route `r` of an HTTPRoute
/// (fleet mode): each selects the route's models (`x-ai-eg-model`, which the
/// filter sets before Envoy Gateway's rate-limit filter runs) and, per identity,
/// each value of the identity header (`Distinct`). Token limits and budgets check
/// with a request cost of 0 and charge `rl_tokens` / `rl_cost` from the metadata
/// when the answer ends, as Envoy AI Gateway does with its cost keys. What Envoy
/// Gateway cannot say (calendar periods, hashed identities, per-rule counts of a
/// rule with several models) is approximated with a warning.
pub fn eg_rules(plan: &Plan, r: &PlanRoute, diags: &mut Vec<Diagnostic>) -> Vec<Value> {
    let l = limits(r);
    if l.is_empty() {
        return Vec::new();
    }
    let at = Origin::field(&r.origin.0, &r.origin.1, r.rule_path.clone());
    let models: Vec<&str> = r.models.iter().map(|(m, _)| m.as_str()).collect();
    let model_match = match models.as_slice() {
        [one] => json!({"name": crate::resources::MODEL_HEADER, "type": "Exact", "value": one}),
        many => {
            json!({"name": crate::resources::MODEL_HEADER, "type": "RegularExpression", "value": alternatives(many)})
        }
    };
    if models.len() > 1 {
        diags.push(at.warning(format!(
            "on Envoy Gateway the limits of {} count each of its {} models apart (Envoy Gateway counts per route match; the standalone bootstrap counts the rule as a whole)",
            r.name,
            models.len()
        )));
    }
    // Per tenant is per route: a route has one tenant.
    let selectors = |per: Scope| -> Value {
        let mut headers = vec![model_match.clone()];
        if let (Scope::Identity, Some(id)) = (per, &plan.identity) {
            headers.push(json!({"name": id.header, "type": "Distinct"}));
        }
        json!([{"headers": headers}])
    };
    let cost = |key: &str| {
        json!({
            "request": {"from": "Number", "number": 0},
            "response": {"from": "Metadata", "metadata": {"namespace": NAMESPACE, "key": key}},
        })
    };
    let mut rules = Vec::new();
    if let Some(n) = l.requests_per_minute {
        rules.push(json!({
            "clientSelectors": selectors(l.per),
            "limit": {"requests": n, "unit": "Minute"},
        }));
    }
    if let Some(n) = l.tokens_per_minute {
        rules.push(json!({
            "clientSelectors": selectors(l.per),
            "limit": {"requests": n, "unit": "Minute"},
            "cost": cost("rl_tokens"),
        }));
    }
    for b in &l.budgets {
        let mut rule = json!({
            "clientSelectors": selectors(b.per),
            "limit": {"requests": b.micro, "unit": eg_budget_unit(b.period)},
            "cost": cost("rl_cost"),
        });
        if b.alert {
            rule["shadowMode"] = json!(true);
        }
        rules.push(rule);
        let window = match b.period {
            Period::Daily => "UTC days",
            Period::Weekly => "weeks of 7 days from Thursday 00:00 UTC",
            Period::Monthly => "30-day windows from the Unix epoch",
        };
        if b.period != Period::Daily || b.offset {
            diags.push(b.from.warning(format!(
                "on Envoy Gateway budget {} of {} counts in fixed windows of its rate-limit service ({window}), not in calendar periods{}: Envoy Gateway cannot put the period (rl_period_{}) in a descriptor; the standalone bootstrap counts calendar periods",
                b.name,
                r.name,
                if b.offset { ", and without its utcOffset" } else { "" },
                b.name
            )));
        }
    }
    rules
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses() {
        assert_eq!(
            parse_address("rls.example:8081"),
            Ok(("rls.example".into(), 8081))
        );
        assert_eq!(parse_address("[::1]:81"), Ok(("::1".into(), 81)));
        for bad in ["rls", "rls:0", "rls:x", ":81", "a:b:81", "h/x:1"] {
            assert!(parse_address(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn regex_alternatives_are_escaped() {
        assert_eq!(alternatives(&["gpt-4.1", "a+b"]), "^(?:gpt-4\\.1|a\\+b)$");
    }

    #[test]
    fn budgets_take_a_unit_whose_windows_never_split_a_period_more_than_yearly() {
        let b = |period, offset| BudgetLimit {
            name: "b".into(),
            micro: 1,
            currency: "USD".into(),
            period,
            offset,
            alert: false,
            per: Scope::Route,
            from: Origin::Option("--quota"),
        };
        assert_eq!(budget_unit(&b(Period::Daily, false)), "day");
        assert_eq!(budget_unit(&b(Period::Daily, true)), "year");
        assert_eq!(budget_unit(&b(Period::Weekly, false)), "year");
        assert_eq!(budget_unit(&b(Period::Monthly, false)), "year");
    }

    #[test]
    fn the_wasm_build_reads_filter_state() {
        let mut l = json!({
            "actions": [generic("tokens"), metadata("route", "rl_route"), {"remote_address": {}}],
            "hits_addend": charge("rl_tokens"),
            "apply_on_stream_done": true,
        });
        wasm_rate_limit(&mut l);
        assert_eq!(l["actions"][0], generic("tokens"));
        assert_eq!(
            l["actions"][1]["extension"]["typed_config"]["text"],
            "filter_state['wasm.io.envoy.ai_gateway.rl_route']"
        );
        assert_eq!(l["actions"][2], json!({"remote_address": {}}));
        assert_eq!(
            l["hits_addend"]["format"],
            "%FILTER_STATE(wasm.io.envoy.ai_gateway.rl_tokens:PLAIN)%"
        );
    }

    #[test]
    fn local_replies_are_json_in_the_clients_schema() {
        let c = local_reply_config();
        let mappers = c["mappers"].as_array().unwrap();
        assert_eq!(mappers.len(), 4);
        for m in mappers {
            let body: Value =
                serde_json::from_str(m["body"]["inline_string"].as_str().unwrap()).unwrap();
            let anthropic = m["filter"].get("and_filter").is_some();
            assert_eq!(body["type"] == "error", anthropic, "{body}");
            assert_eq!(
                m["body_format_override"]["content_type"],
                "application/json"
            );
        }
        assert_eq!(mappers[1]["status_code"], 429);
        assert_eq!(mappers[3]["status_code"], 503);
    }

    #[test]
    fn cel_strings_are_quoted() {
        assert_eq!(cel_str("a'b\\c"), "'a\\'b\\\\c'");
    }
}
