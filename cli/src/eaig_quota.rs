//! Envoy AI Gateway's limits, mapped onto the filter's limits where their shape
//! allows:
//!
//! - token rate limits: an Envoy Gateway `BackendTrafficPolicy` whose global
//!   rules charge a cost key of the AIGatewayRoute's `llmRequestCosts`
//!   (`cost.response.from: Metadata`), targeting the route's HTTPRoute (named as
//!   the AIGatewayRoute) or a Gateway it attaches to;
//! - `QuotaPolicy` (`aigateway.envoyproxy.io/v1alpha1`): token quotas of the
//!   AIServiceBackends it targets, for every model or per model.
//!
//! The filter's limits count one-minute windows, per rule, for the route as a
//! whole or per identity (one header), and its token limits count total tokens.
//! What fits becomes the rule's `rateLimit.requestsPerMinute` /
//! `tokensPerMinute` (with `per: identity` and the config's `identity` header for
//! a `Distinct` header selector); everything else is named in a warning with the
//! reason and carried into `not-enforced.json`.

use serde_json::{json, Value};

use crate::compile::{reporter, NotEnforced, Plan, PlanRoute};
use crate::diag::{Diagnostic, Reporter};
use crate::quota::{Identity, Origin, Scope};
use crate::read::{at, Obj};
use crate::resources::{Inputs, Meta};

/// The metadata namespace a cost must be read from.
const NAMESPACE: &str = aigw_filter::METADATA_NAMESPACE;

/// What a mapped rule counts.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Counted {
    Requests,
    /// The cost key a response charges.
    Cost(String),
}

/// A rule or quota the filter can hold: what it counts, its limit per minute, and
/// the identity header (with the field naming it) when it counts per identity.
#[derive(Clone, Debug)]
struct Mapped {
    counted: Counted,
    limit: u64,
    identity: Option<(String, String)>,
}

/// One rule of a BackendTrafficPolicy's `rateLimit.global.rules`, or one quota of
/// a QuotaPolicy: mapped, or why not.
#[derive(Debug)]
pub struct Limit {
    path: String,
    value: Value,
    mapped: Result<Mapped, String>,
}

/// An Envoy Gateway BackendTrafficPolicy (its `rateLimit` only).
#[derive(Debug)]
pub struct TrafficPolicy {
    pub meta: Meta,
    /// (kind, name, field).
    targets: Vec<(String, String, String)>,
    rules: Vec<Limit>,
}

/// An Envoy AI Gateway QuotaPolicy.
#[derive(Debug)]
pub struct QuotaPolicy {
    pub meta: Meta,
    /// AIServiceBackend names (the policy's namespace), with their field.
    targets: Vec<(String, String)>,
    service: Option<Limit>,
    /// (model name, quota).
    per_model: Vec<(String, Limit)>,
}

fn target_refs(
    spec: &Obj<'_, '_>,
    kinds: &[&str],
    r: &mut Reporter<'_>,
) -> Vec<(String, String, String)> {
    let mut out = Vec::new();
    let list = spec.list_opt("targetRefs", 16, r).unwrap_or_default();
    if list.is_empty() {
        r.error(spec.path("targetRefs"), "must have at least 1 item");
    }
    for (i, t) in list.iter().enumerate() {
        let p = at(&spec.path("targetRefs"), i);
        let Some(o) = Obj::new(t, &p, &["group", "kind", "name", "sectionName"], r) else {
            continue;
        };
        let kind = o.str_req("kind", r);
        let name = o.str_req("name", r);
        if let Some(k) = kind.filter(|k| !kinds.contains(k)) {
            r.error(
                o.path("kind"),
                format!("'{k}' is not a target: expected {}", kinds.join(" or ")),
            );
            continue;
        }
        if let (Some(k), Some(n)) = (kind, name) {
            out.push((k.to_string(), n.to_string(), o.path("name")));
        }
    }
    out
}

/// The single `Distinct` header of a rule's client selectors, if that is all they
/// say; `Err` when they say more than the filter can hold.
fn distinct_header(
    o: &Obj<'_, '_>,
    r: &mut Reporter<'_>,
) -> Result<Option<(String, String)>, String> {
    let Some(list) = o.list_opt("clientSelectors", 8, r) else {
        return Ok(None);
    };
    let p = o.path("clientSelectors");
    let more = || {
        "the filter counts a rule for the route as a whole or per value of one header (a single selector with one Distinct header); these client selectors say more".to_string()
    };
    match list {
        [] => Ok(None),
        [one] => {
            let sp = at(&p, 0);
            let Some(s) = one.as_object() else {
                return Err(more());
            };
            if s.keys().any(|k| k != "headers") {
                return Err(more());
            }
            match s
                .get("headers")
                .and_then(Value::as_array)
                .map(Vec::as_slice)
            {
                Some([h]) => {
                    let t = h.get("type").and_then(Value::as_str).unwrap_or("Exact");
                    let name = h.get("name").and_then(Value::as_str).unwrap_or_default();
                    if t == "Distinct"
                        && !name.is_empty()
                        && h.get("value").is_none()
                        && h.get("invert").and_then(Value::as_bool) != Some(true)
                    {
                        Ok(Some((
                            name.to_ascii_lowercase(),
                            format!("{sp}.headers[0].name"),
                        )))
                    } else {
                        Err(more())
                    }
                }
                _ => Err(more()),
            }
        }
        _ => Err(more()),
    }
}

/// `limit` of a quota (`{duration, limit}`): per minute only.
fn per_minute(o: &Obj<'_, '_>, key: &str, r: &mut Reporter<'_>) -> Result<u64, String> {
    let p = o.path(key);
    let Some(q) = o
        .get(key)
        .and_then(|v| Obj::new(v, &p, &["duration", "limit"], r))
    else {
        return Err(format!("{p} is required"));
    };
    let duration = crate::resources::enum_value(&q, "duration", &["1s", "1m", "1h", "1d"], true, r);
    let limit = q.int_opt("limit", 0, i64::MAX, r);
    if !q.has("limit") {
        r.error(q.path("limit"), "is required");
    }
    match (duration.as_deref(), limit) {
        (Some("1m"), Some(0)) => {
            Err("a limit of 0 refuses every request: the filter's limits are at least 1".into())
        }
        (Some("1m"), Some(n)) => Ok(n as u64),
        (Some(d), Some(_)) => Err(format!(
            "the filter's token limits count one-minute windows, and this quota's duration is {d}"
        )),
        _ => Err("invalid".into()),
    }
}

/// `costExpression`: the filter's token limits count total tokens.
fn total_tokens(o: &Obj<'_, '_>, r: &mut Reporter<'_>) -> Result<(), String> {
    match o.str_opt("costExpression", r).map(str::trim) {
        None | Some("total_tokens") => Ok(()),
        Some(e) => Err(format!(
            "the filter's token limits count total tokens, and this quota costs '{e}'"
        )),
    }
}

/// Reads an Envoy Gateway BackendTrafficPolicy for its `rateLimit`.
pub(crate) fn read_traffic_policy(
    meta: Meta,
    spec: Obj<'_, '_>,
    r: &mut Reporter<'_>,
) -> TrafficPolicy {
    let targets = target_refs(&spec, &["Gateway", "HTTPRoute"], r);
    for k in spec.map.keys() {
        if !["targetRefs", "targetRef", "targetSelectors", "rateLimit"].contains(&k.as_str()) {
            r.warn(
                spec.path(k),
                "not compiled: the compiler reads a BackendTrafficPolicy's rateLimit only (the token rate limits of Envoy AI Gateway)",
            );
        }
    }
    let mut rules = Vec::new();
    if let Some(v) = spec.get("rateLimit") {
        let p = spec.path("rateLimit");
        if let Some(rl) = Obj::new(v, &p, &["type", "global", "local"], r) {
            if rl.has("local") {
                r.warn(
                    rl.path("local"),
                    "not compiled: local rate limits (per Envoy, by request count) are Envoy Gateway's own",
                );
            }
            if let Some(g) = rl.get("global") {
                let gp = rl.path("global");
                if let Some(g) = Obj::new(g, &gp, &["rules"], r) {
                    for (i, rule) in g
                        .list_opt("rules", 256, r)
                        .unwrap_or_default()
                        .iter()
                        .enumerate()
                    {
                        let rp = at(&g.path("rules"), i);
                        rules.push(read_rule(rule, &rp, r));
                    }
                }
            }
        }
    }
    TrafficPolicy {
        meta,
        targets,
        rules,
    }
}

fn read_rule(v: &Value, path: &str, r: &mut Reporter<'_>) -> Limit {
    let bad = |m: String| Limit {
        path: path.to_string(),
        value: v.clone(),
        mapped: Err(m),
    };
    let Some(o) = Obj::new(
        v,
        path,
        &[
            "clientSelectors",
            "limit",
            "cost",
            "shadowMode",
            "shared",
            "xRateLimitHeaders",
        ],
        r,
    ) else {
        return bad("not an object".into());
    };
    let identity = match distinct_header(&o, r) {
        Ok(i) => i,
        Err(e) => return bad(e),
    };
    let lp = o.path("limit");
    let Some(limit) = o
        .get("limit")
        .and_then(|l| Obj::new(l, &lp, &["requests", "unit", "fromMetadata"], r))
    else {
        r.error(lp, "is required");
        return bad("no limit".into());
    };
    let requests = limit.int_opt("requests", 0, i64::from(u32::MAX), r);
    let unit = crate::resources::enum_value(
        &limit,
        "unit",
        &["Second", "Minute", "Hour", "Day", "Week", "Month", "Year"],
        true,
        r,
    );
    if limit.has("fromMetadata") {
        return bad("the filter's limits are fixed: a limit from the metadata is not".into());
    }
    if o.bool_opt("shadowMode", r) == Some(true) {
        return bad(
            "the filter's rate limits have no shadow mode (a budget's alert action is one)".into(),
        );
    }
    match unit.as_deref() {
        Some("Minute") => {}
        Some(u) => {
            return bad(format!(
                "the filter's rate limits count one-minute windows, and this rule's unit is {u}"
            ))
        }
        None => return bad("no unit".into()),
    }
    let limit = match requests {
        Some(0) => {
            return bad(
                "a limit of 0 refuses every request: the filter's limits are at least 1".into(),
            )
        }
        Some(n) => n as u64,
        None => return bad("no limit".into()),
    };
    let counted = match o.get("cost") {
        None => Counted::Requests,
        Some(c) => {
            let number = |side: &str| {
                c.get(side)
                    .map(|s| (s.get("from").and_then(Value::as_str), s))
            };
            match (number("request"), number("response")) {
                (Some((Some("Number"), req)), None) if req.get("number").and_then(Value::as_u64) == Some(1) => {
                    Counted::Requests
                }
                (None | Some((Some("Number"), _)), Some((Some("Metadata"), resp)))
                    if c.get("request").is_none_or(|q| q.get("number").and_then(Value::as_u64) == Some(0)) =>
                {
                    let md = &resp["metadata"];
                    match (md["namespace"].as_str(), md["key"].as_str()) {
                        (Some(NAMESPACE), Some(key)) => Counted::Cost(key.to_string()),
                        _ => {
                            return bad(format!(
                                "the filter's token limits charge the answer's tokens, and this rule charges metadata other than a cost key of namespace {NAMESPACE}"
                            ))
                        }
                    }
                }
                _ => {
                    return bad("the filter counts requests (cost 1) or the answer's total tokens (a request cost of 0 and a response cost from a TotalToken cost key); this cost is neither".into())
                }
            }
        }
    };
    Limit {
        path: path.to_string(),
        value: v.clone(),
        mapped: Ok(Mapped {
            counted,
            limit,
            identity,
        }),
    }
}

/// Reads a QuotaPolicy.
pub(crate) fn read_quota_policy(
    meta: Meta,
    spec: Obj<'_, '_>,
    r: &mut Reporter<'_>,
) -> QuotaPolicy {
    let mut targets = Vec::new();
    for k in spec.map.keys() {
        if !["targetRefs", "serviceQuota", "perModelQuotas"].contains(&k.as_str()) {
            r.warn(spec.path(k), "unknown field, ignored");
        }
    }
    let list = spec.list_opt("targetRefs", 16, r).unwrap_or_default();
    for (i, t) in list.iter().enumerate() {
        let p = at(&spec.path("targetRefs"), i);
        let Some(o) = Obj::new(t, &p, &["group", "kind", "name"], r) else {
            continue;
        };
        let group = o.str_req("group", r);
        let kind = o.str_req("kind", r);
        if (group, kind) != (Some(crate::resources::AIGW_GROUP), Some("AIServiceBackend"))
            && group.is_some()
            && kind.is_some()
        {
            r.error(
                p.clone(),
                "targetRefs must reference AIServiceBackend resources",
            );
            continue;
        }
        if let Some(n) = o.str_req("name", r) {
            targets.push((n.to_string(), o.path("name")));
        }
    }
    let service = spec.get("serviceQuota").map(|v| {
        let p = spec.path("serviceQuota");
        let mapped = match Obj::new(v, &p, &["costExpression", "quota"], r) {
            None => Err("not an object".into()),
            Some(o) => total_tokens(&o, r)
                .and_then(|()| per_minute(&o, "quota", r))
                .map(|limit| Mapped {
                    counted: Counted::Cost(String::new()),
                    limit,
                    identity: None,
                }),
        };
        Limit {
            path: p,
            value: v.clone(),
            mapped,
        }
    });
    let mut per_model = Vec::new();
    for (i, m) in spec
        .list_opt("perModelQuotas", 128, r)
        .unwrap_or_default()
        .iter()
        .enumerate()
    {
        let p = at(&spec.path("perModelQuotas"), i);
        let Some(o) = Obj::new(m, &p, &["modelName", "quota"], r) else {
            continue;
        };
        let Some(model) = o.str_req("modelName", r) else {
            continue;
        };
        let qp = o.path("quota");
        let Some(q) = o.get("quota").and_then(|v| {
            Obj::new(
                v,
                &qp,
                &["costExpression", "defaultBucket", "bucketRules", "mode"],
                r,
            )
        }) else {
            r.error(qp, "is required");
            continue;
        };
        crate::resources::enum_value(&q, "mode", &["Shared"], false, r);
        let rules = q.list_opt("bucketRules", 64, r).unwrap_or_default();
        let mapped = total_tokens(&q, r).and_then(|()| match (q.has("defaultBucket"), rules) {
            (true, []) => per_minute(&q, "defaultBucket", r).map(|limit| Mapped {
                counted: Counted::Cost(String::new()),
                limit,
                identity: None,
            }),
            (false, [rule]) => {
                let rp = at(&q.path("bucketRules"), 0);
                match Obj::new(rule, &rp, &["clientSelectors", "quota", "shadowMode"], r) {
                    None => Err("not an object".into()),
                    Some(ro) if ro.bool_opt("shadowMode", r) == Some(true) => {
                        Err("the filter's rate limits have no shadow mode".into())
                    }
                    Some(ro) => match distinct_header(&ro, r) {
                        Ok(Some(id)) => per_minute(&ro, "quota", r).map(|limit| Mapped {
                            counted: Counted::Cost(String::new()),
                            limit,
                            identity: Some(id),
                        }),
                        Ok(None) => Err("a bucket rule without client selectors is the default bucket: the filter maps it from defaultBucket".into()),
                        Err(e) => Err(e),
                    },
                }
            }
            (false, []) => Err("no defaultBucket and no bucketRules: nothing to count".into()),
            _ => Err("the filter holds one token limit per rule: a defaultBucket alone, or one bucket rule per value of a Distinct header; Shared mode across several buckets (a request passes while any of them has quota) is not one".into()),
        });
        per_model.push((
            model.to_string(),
            Limit {
                path: qp.clone(),
                value: o.get("quota").cloned().unwrap_or(Value::Null),
                mapped,
            },
        ));
    }
    QuotaPolicy {
        meta,
        targets,
        service,
        per_model,
    }
}

/// A route compiled from an Envoy AI Gateway AIGatewayRoute rule.
fn is_aigateway_route(r: &PlanRoute) -> bool {
    !r.extra.kgateway && !r.name.starts_with("generic/") && r.origin.1.kind == "AIGatewayRoute"
}

/// Sets limit `m` on route `i`, or says why not; `Ok` on success. Two limits of
/// one kind on a rule keep the lower.
fn apply(plan: &mut Plan, i: usize, m: &Mapped, from: &Origin) -> Result<(), String> {
    let scope = if m.identity.is_some() {
        Scope::Identity
    } else {
        Scope::Route
    };
    let r = &plan.routes[i];
    let field = match &m.counted {
        Counted::Requests => "requestsPerMinute",
        Counted::Cost(key) if key.is_empty() => "tokensPerMinute",
        Counted::Cost(key) => match r.costs.iter().find(|c| c.metadata_key == *key) {
            Some(c) if c.kind == "TotalToken" => "tokensPerMinute",
            Some(c) => {
                return Err(format!(
                    "the filter's token limits count total tokens, and cost key {key} of {} is {}",
                    r.origin.1, c.kind
                ))
            }
            None => {
                return Err(format!(
                    "{} has no llmRequestCosts key {key}, so nothing would charge it",
                    r.origin.1
                ))
            }
        },
    };
    let rl = r.rate_limit.clone().unwrap_or_else(|| json!({}));
    let current = rl
        .get("per")
        .and_then(Value::as_str)
        .and_then(Scope::parse)
        .unwrap_or_default();
    let has_any = rl.as_object().is_some_and(|o| o.keys().any(|k| k != "per"));
    if has_any && current != scope {
        return Err(format!(
            "rule {} already counts per {}, and the filter counts a rule's limits one way",
            r.name,
            current.name()
        ));
    }
    if let Some((header, field)) = &m.identity {
        match &plan.identity {
            Some(id) if id.header != *header => {
                return Err(format!(
                    "the gateway takes identities from one header, {} ({}), and this counts per {header}",
                    id.header, id.origin
                ))
            }
            Some(_) => {}
            None => {
                let origin = match from {
                    Origin::Field {
                        source, resource, ..
                    } => Origin::field(source, resource, field.clone()),
                    o => o.clone(),
                };
                plan.identity = Some(Identity {
                    header: header.clone(),
                    hash: true,
                    origin,
                })
            }
        }
    }
    let r = &mut plan.routes[i];
    let mut rl = rl;
    if rl
        .get(field)
        .and_then(Value::as_u64)
        .is_none_or(|old| m.limit < old)
    {
        rl[field] = json!(m.limit);
    }
    if let Some(o) = rl.as_object_mut() {
        // `per` last, as the other sources write it.
        o.remove("per");
        if scope != Scope::Route {
            o.insert("per".into(), json!(scope.name()));
        }
    }
    r.rate_limit = Some(rl);
    r.rate_limit_from.get_or_insert_with(|| from.clone());
    Ok(())
}

fn not_mapped(plan: &mut Plan, meta: &Meta, l: &Limit, why: &str, diags: &mut Vec<Diagnostic>) {
    reporter(meta, diags).warn(
        l.path.as_str(),
        format!("not enforced: {why}; carried into notEnforced"),
    );
    if !plan
        .not_enforced
        .iter()
        .any(|n| n.resource == meta.id && n.path == l.path)
    {
        plan.not_enforced.push(NotEnforced {
            source: meta.source.clone(),
            resource: meta.id.clone(),
            path: l.path.clone(),
            value: l.value.clone(),
        });
    }
}

/// Maps the inputs' BackendTrafficPolicies and QuotaPolicies onto the rules of
/// the AIGatewayRoutes.
pub(crate) fn plan(inputs: &Inputs, plan: &mut Plan, diags: &mut Vec<Diagnostic>) {
    for p in &inputs.eg_traffic {
        let ns = &p.meta.id.namespace;
        let mut routes: Vec<usize> = Vec::new();
        for (kind, name, field) in &p.targets {
            let found: Vec<usize> = (0..plan.routes.len())
                .filter(|&i| {
                    let r = &plan.routes[i];
                    is_aigateway_route(r)
                        && r.origin.1.namespace == *ns
                        && match kind.as_str() {
                            "HTTPRoute" => r.origin.1.name == *name,
                            _ => r.parents.iter().any(|g| {
                                g.name == *name
                                    && g.namespace.as_deref().unwrap_or(&r.origin.1.namespace) == ns
                            }),
                        }
                })
                .collect();
            if found.is_empty() {
                reporter(&p.meta, diags).warn(
                    field.as_str(),
                    format!("{kind} {ns}/{name}: no AIGatewayRoute among the inputs makes it or attaches to it; its rate limits are not compiled"),
                );
            }
            routes.extend(found);
        }
        routes.sort_unstable();
        routes.dedup();
        if routes.is_empty() {
            continue;
        }
        for l in &p.rules {
            let m = match &l.mapped {
                Ok(m) => m.clone(),
                Err(why) => {
                    not_mapped(plan, &p.meta, l, why, diags);
                    continue;
                }
            };
            let from = Origin::field(&p.meta.source, &p.meta.id, l.path.clone());
            for &i in &routes {
                if let Err(why) = apply(plan, i, &m, &from) {
                    not_mapped(plan, &p.meta, l, &why, diags);
                }
            }
        }
    }

    for q in &inputs.quota_policies {
        let ns = &q.meta.id.namespace;
        for (name, field) in &q.targets {
            let targets: std::collections::HashSet<usize> = (0..plan.backends.len())
                .filter(|&b| {
                    let id = &plan.backends[b].origin.1;
                    id.kind == "AIServiceBackend" && id.namespace == *ns && id.name == *name
                })
                .collect();
            let users: Vec<usize> = (0..plan.routes.len())
                .filter(|&i| is_aigateway_route(&plan.routes[i]))
                .filter(|&i| {
                    plan.routes[i]
                        .backends
                        .iter()
                        .any(|b| targets.contains(&b.backend))
                })
                .collect();
            if users.is_empty() {
                reporter(&q.meta, diags).warn(
                    field.as_str(),
                    format!("AIServiceBackend {ns}/{name} is used by no AIGatewayRoute rule among the inputs; this quota is not compiled"),
                );
                continue;
            }
            // Rules per quota (its path), to say when several share one.
            let mut shared: Vec<(String, Vec<String>)> = Vec::new();
            for &i in &users {
                let r = &plan.routes[i];
                let weighted: Vec<usize> = r
                    .backends
                    .iter()
                    .filter(|b| b.weight > 0)
                    .map(|b| b.backend)
                    .collect();
                let only_target =
                    !weighted.is_empty() && weighted.iter().all(|b| targets.contains(b));
                // A per-model quota applies when every backend of the rule sends
                // that model (modelNameOverride).
                let overrides: Vec<Option<String>> = weighted
                    .iter()
                    .map(|&b| plan.backends[b].model_name_override.clone())
                    .collect();
                let model_quota = q
                    .per_model
                    .iter()
                    .find(|(m, _)| overrides.iter().all(|o| o.as_deref() == Some(m.as_str())));
                let rule = format!("{} {}", r.origin.1, r.rule_path);
                let Some(l) = model_quota.map(|(_, l)| l).or(q.service.as_ref()) else {
                    continue;
                };
                if !only_target {
                    let why = format!(
                        "{rule} also sends to other backends, and the filter counts a rule as a whole: a quota of one of its backends is not its limit"
                    );
                    not_mapped(plan, &q.meta, l, &why, diags);
                    continue;
                }
                let m = match &l.mapped {
                    Ok(m) => m.clone(),
                    Err(why) => {
                        not_mapped(plan, &q.meta, l, why, diags);
                        continue;
                    }
                };
                let from = Origin::field(&q.meta.source, &q.meta.id, l.path.clone());
                match apply(plan, i, &m, &from) {
                    Ok(()) => {
                        let name = plan.routes[i].name.clone();
                        match shared.iter_mut().find(|(p, _)| *p == l.path) {
                            Some((_, rules)) => rules.push(name),
                            None => shared.push((l.path.clone(), vec![name])),
                        }
                    }
                    Err(why) => not_mapped(plan, &q.meta, l, &why, diags),
                }
            }
            for (path, rules) in shared.iter().filter(|(_, r)| r.len() > 1) {
                reporter(&q.meta, diags).warn(
                    path.as_str(),
                    format!(
                        "this quota of AIServiceBackend {ns}/{name} is counted per rule ({}): each may take the whole quota, as the filter counts per route, not per backend",
                        rules.join(", ")
                    ),
                );
            }
        }
        // Per-model quotas no rule took.
        for (model, l) in &q.per_model {
            let used = plan.routes.iter().any(|r| {
                is_aigateway_route(r)
                    && r.backends.iter().any(|b| {
                        let pb = &plan.backends[b.backend];
                        pb.model_name_override.as_deref() == Some(model.as_str())
                            && q.targets.iter().any(|(n, _)| {
                                pb.origin.1.kind == "AIServiceBackend"
                                    && pb.origin.1.name == *n
                                    && pb.origin.1.namespace == *ns
                            })
                    })
            });
            if !used {
                reporter(&q.meta, diags).warn(
                    l.path.as_str(),
                    format!("no rule sends model {model} (a backendRef's modelNameOverride) to the targeted backends; this quota is not compiled"),
                );
            }
        }
    }
}
