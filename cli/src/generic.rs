//! The generic AIGatewayRoute (seed `004`: a provider-neutral JSON Schema with
//! `name`, `modelAlias`, `matchers`, `backends`, `strategy`, `cache`,
//! `rateLimit`, `budget`, `guardrails`, `retries`, `observability`, `tenant`).
//!
//! It is recognised as a document without `apiVersion` that has `backends`. What
//! the filter and Envoy can do today is mapped (models, header matches, backends
//! of the providers in [`PROVIDERS`] with weight, priority, a per-backend model
//! and an API key from the `credentialRef` Secret, fallback and load-balance
//! strategies, retries, rate limits, a spend budget (named after the route;
//! `--limits-per` says what both count per), an exact cache, the tenant as
//! metadata); every other field is carried into the
//! output's `notEnforced` list with a warning naming it, never dropped silently.

use serde_json::{json, Map, Value};

use crate::diag::{Reporter, ResourceId};
use crate::read::{at, Obj};
use crate::resources::{is_dns_subdomain, Meta};
use crate::units::parse_duration;

/// Where the `openai` provider is reached.
pub const OPENAI_HOST: &str = "api.openai.com";

/// A provider slug the generic schema can name: the filter schema it speaks and
/// the public host it is reached at (port 443, TLS).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Provider {
    pub slug: &'static str,
    pub schema: &'static str,
    pub host: &'static str,
}

/// Providers reachable with what the generic schema says (a slug and a model).
/// Azure OpenAI, Bedrock and Vertex AI need an endpoint, a region or a project,
/// which the schema has no field for.
pub const PROVIDERS: &[Provider] = &[
    Provider {
        slug: "openai",
        schema: "OpenAI",
        host: OPENAI_HOST,
    },
    Provider {
        slug: "anthropic",
        schema: "Anthropic",
        host: "api.anthropic.com",
    },
    Provider {
        slug: "mistral",
        schema: "Mistral",
        host: "api.mistral.ai",
    },
    Provider {
        slug: "gemini",
        schema: "Gemini",
        host: "generativelanguage.googleapis.com",
    },
];

/// The Secret key a `credentialRef` Secret holds the API key in.
pub const CREDENTIAL_KEY: &str = "apiKey";

#[derive(Debug)]
pub struct GenericBackend {
    pub provider: Provider,
    pub model: String,
    pub weight: u32,
    pub priority: u32,
    /// `credentialRef`: a Secret in namespace `default` whose `apiKey` is sent.
    pub credential: Option<String>,
    pub path: String,
}

#[derive(Debug)]
pub struct GenericRoute {
    pub meta: Meta,
    /// Models routed here, each with the field it came from.
    pub models: Vec<(String, String)>,
    /// Header matches ANDed with the model (name lowercased, value).
    pub headers: Vec<(String, String)>,
    pub backends: Vec<GenericBackend>,
    pub num_retries: Option<u32>,
    pub per_try_timeout_ms: Option<u64>,
    /// Fields carried as not enforced: (path, value).
    pub not_enforced: Vec<(String, Value)>,
    /// `rateLimit`, as the filter route's `rateLimit`.
    pub rate_limit: Option<Value>,
    /// `cache` in exact mode, as the filter route's `cache`.
    pub cache: Option<Value>,
    /// `budget`, as a filter route budget without its name and scope (`limit`,
    /// `currency`, `period`, `action`).
    pub budget: Option<Value>,
    /// `tenant`, written as the route's `tenant` metadata.
    pub tenant: Option<String>,
    /// `strategy: latency-optimized`: least-request balancing.
    pub least_request: bool,
    /// `strategy: shadow`: the first backend answers, the others get copies.
    pub shadow: bool,
    /// `guardrails[]`: the policy (`policyRef`, else `name`), the stage and the
    /// field the policy came from.
    pub guardrails: Vec<(String, String, String)>,
}

/// Whether a document is a generic AIGatewayRoute.
pub fn is_generic(v: &Value) -> bool {
    v.get("apiVersion").is_none() && v.get("backends").is_some()
}

const FIELDS: &[&str] = &[
    "name",
    "modelAlias",
    "matchers",
    "backends",
    "strategy",
    "cache",
    "rateLimit",
    "budget",
    "guardrails",
    "retries",
    "observability",
    "tenant",
    "kind",
];
const MATCHER_TYPES: &[&str] = &["header", "model", "path", "identity", "time", "content"];
const STRATEGIES: &[&str] = &[
    "fallback",
    "load-balance",
    "fanout",
    "shadow",
    "cost-optimized",
    "latency-optimized",
];

/// An optional string field that must be one of `allowed`.
fn enum_opt(o: &Obj<'_, '_>, key: &str, allowed: &[&str], r: &mut Reporter<'_>) -> Option<String> {
    crate::resources::enum_value(o, key, allowed, false, r)
}

/// `budget`: a spend cap in a currency per calendar period. Every field the
/// filter needs is checked here, so each problem names its own field.
fn read_budget(b: &Obj<'_, '_>, r: &mut Reporter<'_>) -> Option<Value> {
    let currency = b.str_req("currency", r).and_then(|c| {
        let known = aigw_filter::metering::prices::CURRENCIES
            .binary_search(&c)
            .is_ok();
        if !known {
            r.error(
                b.path("currency"),
                format!(
                    "'{c}' is not an ISO 4217 currency code the gateway knows (USD, EUR, GBP, ...)"
                ),
            );
        }
        known.then_some(c)
    });
    let limit = match b.get("limit") {
        None => {
            r.error(b.path("limit"), "is required");
            None
        }
        Some(v) => match v.as_f64() {
            Some(n) if n.is_finite() && n > 0.0 => Some(v.clone()),
            Some(n) => {
                r.error(
                    b.path("limit"),
                    format!("must be an amount above 0, found {n}"),
                );
                None
            }
            None => {
                r.error(b.path("limit"), "must be a number");
                None
            }
        },
    };
    let period = match b.str_req("period", r) {
        Some(p @ ("daily" | "weekly" | "monthly")) => Some(p),
        Some(p) => {
            r.error(
                b.path("period"),
                format!("'{p}' is not a period the gateway counts: daily, weekly or monthly (calendar periods, in the filter and in the rate-limit service)"),
            );
            None
        }
        None => None,
    };
    let action = enum_opt(b, "action", &["alert", "throttle", "block"], r);
    if b.has("action") && action.is_none() {
        return None;
    }
    let mut o = Map::new();
    o.insert("limit".into(), limit?);
    o.insert("currency".into(), json!(currency?));
    o.insert("period".into(), json!(period?));
    if let Some(a) = action {
        o.insert("action".into(), json!(a));
    }
    Some(Value::Object(o))
}

fn number_opt(o: &Obj<'_, '_>, key: &str, r: &mut Reporter<'_>) {
    if let Some(v) = o.get(key) {
        if !v.is_number() {
            r.error(o.path(key), "must be a number");
        }
    }
}

/// Reads a generic route; `r.resource` is set here.
pub(crate) fn read(
    v: &Value,
    source: &crate::diag::Source,
    r: &mut Reporter<'_>,
) -> Option<GenericRoute> {
    let top = Obj::new(v, "", FIELDS, r)?;
    if let Some(k) = top.str_opt("kind", r) {
        if k != "AIGatewayRoute" {
            r.error("kind", format!("a document without apiVersion must be a generic AIGatewayRoute, found kind '{k}'"));
        }
    }
    let name = top.str_req("name", r)?;
    let id = ResourceId {
        kind: "AIGatewayRoute".into(),
        namespace: "default".into(),
        name: name.to_string(),
    };
    r.resource = Some(id.clone());
    if !is_dns_subdomain(name) {
        r.error(
            "name",
            format!("'{name}' must be a lowercase RFC 1123 name: it names the generated Envoy and Kubernetes resources"),
        );
    }
    let mut not_enforced: Vec<(String, Value)> = Vec::new();
    let mut rate_limit = None;
    let mut cache = None;
    let mut carry = |path: String, value: &Value, why: &str, r: &mut Reporter<'_>| {
        r.warn(
            path.as_str(),
            format!("not enforced: {why}; carried into notEnforced"),
        );
        not_enforced.push((path, value.clone()));
    };

    let mut models: Vec<(String, String)> = Vec::new();
    if let Some(alias) = top.str_opt("modelAlias", r) {
        if alias.is_empty() {
            r.error("modelAlias", "must not be empty");
        } else {
            models.push((alias.to_string(), "modelAlias".into()));
        }
    }
    let mut headers: Vec<(String, String)> = Vec::new();
    for (i, m) in top
        .list_opt("matchers", 64, r)
        .unwrap_or_default()
        .iter()
        .enumerate()
    {
        let p = at("matchers", i);
        let Some(o) = Obj::new(m, &p, &["type", "key", "value"], r) else {
            continue;
        };
        let kind = if o.has("type") {
            enum_opt(&o, "type", MATCHER_TYPES, r)
        } else {
            r.error(o.path("type"), "is required");
            None
        };
        let key = o.str_opt("key", r);
        let value = o.str_opt("value", r);
        match kind.as_deref() {
            Some("model") => match value {
                Some(v) if !v.is_empty() => {
                    if !models.iter().any(|(m, _)| m == v) {
                        models.push((v.to_string(), o.path("value")));
                    }
                }
                _ => r.error(o.path("value"), "is required for a model matcher"),
            },
            Some("header") => match (key, value) {
                (Some(k), Some(v)) if !k.is_empty() => {
                    let k = k.to_ascii_lowercase();
                    if k == crate::resources::MODEL_HEADER {
                        r.error(
                            o.path("key"),
                            "the model header is set by the gateway: use a model matcher",
                        );
                    } else {
                        headers.push((k, v.to_string()));
                    }
                }
                (k, _) => r.error(
                    o.path(if k.is_none_or(str::is_empty) {
                        "key"
                    } else {
                        "value"
                    }),
                    "is required for a header matcher",
                ),
            },
            Some(t) => carry(
                p.clone(),
                m,
                &format!("{t} matchers are not supported by the filter"),
                r,
            ),
            None => {}
        }
    }
    if models.is_empty() {
        r.error(
            "modelAlias",
            "needs a modelAlias or a model matcher: the filter routes by model",
        );
    }

    let strategy = enum_opt(&top, "strategy", STRATEGIES, r);
    if let Some(s) = strategy
        .as_deref()
        .filter(|s| !["fallback", "load-balance", "latency-optimized", "shadow"].contains(s))
    {
        carry(
            "strategy".into(),
            &Value::String(s.into()),
            "only fallback, load-balance, latency-optimized and shadow are done (by Envoy: weights, priorities, least-request balancing, request mirroring)",
            r,
        );
    }
    let shadow = strategy.as_deref() == Some("shadow");
    // Envoy's least-request balancing: a slower backend holds more requests in
    // flight, so it is picked less.
    let least_request = strategy.as_deref() == Some("latency-optimized");

    let mut backends = Vec::new();
    let list = top.list_opt("backends", 64, r);
    if list.is_none_or(<[Value]>::is_empty) && top.has("backends") {
        r.error("backends", "must have at least 1 item");
    }
    let any_priority = list
        .unwrap_or_default()
        .iter()
        .any(|b| b.get("priority").is_some());
    for (i, b) in list.unwrap_or_default().iter().enumerate() {
        let p = at("backends", i);
        let Some(o) = Obj::new(
            b,
            &p,
            &["provider", "model", "weight", "priority", "credentialRef"],
            r,
        ) else {
            continue;
        };
        let provider = o.str_req("provider", r).and_then(|slug| {
            let p = PROVIDERS.iter().find(|p| p.slug == slug).copied();
            if p.is_none() {
                let known: Vec<&str> = PROVIDERS.iter().map(|p| p.slug).collect();
                r.error(
                    o.path("provider"),
                    format!("provider '{slug}' is not supported (supported: {}; Azure OpenAI, Bedrock and Vertex AI need an endpoint, region or project, which this schema has no field for)", known.join(", ")),
                );
            }
            p
        });
        let model = o.str_req("model", r);
        let weight = o.int_opt("weight", 0, 1_000_000, r).unwrap_or(1) as u32;
        let priority = o.int_opt("priority", 0, i64::from(u32::MAX), r);
        // `fallback` without priorities: the list order is the fallback order.
        let priority = match (priority, strategy.as_deref()) {
            (Some(p), _) => p as u32,
            (None, Some("fallback")) if !any_priority => i as u32,
            (None, _) => 0,
        };
        let credential = match o.str_opt("credentialRef", r) {
            Some(c) if !is_dns_subdomain(c) => {
                r.error(
                    o.path("credentialRef"),
                    format!(
                        "'{c}' must name a Secret (a lowercase RFC 1123 name) in namespace default"
                    ),
                );
                None
            }
            c => c.map(str::to_string),
        };
        if let (Some(provider), Some(model)) = (provider, model) {
            backends.push(GenericBackend {
                provider,
                model: model.to_string(),
                weight,
                priority,
                credential,
                path: p.clone(),
            });
        }
    }
    if !top.has("backends") {
        r.error("backends", "is required");
    }

    // Typed checks of the carried objects, so a typo is still an error.
    let sub = |key: &str, known: &[&str], r: &mut Reporter<'_>| -> Option<Obj<'_, 'static>> {
        let v = top.get(key)?;
        let path: &'static str = match key {
            "cache" => "cache",
            "rateLimit" => "rateLimit",
            "budget" => "budget",
            "retries" => "retries",
            _ => "observability",
        };
        Obj::new(v, path, known, r)
    };
    if let Some(c) = sub("cache", &["mode", "ttlSeconds", "similarityThreshold"], r) {
        let mode = enum_opt(&c, "mode", &["off", "exact", "semantic"], r);
        let ttl = c.int_opt("ttlSeconds", 1, i64::MAX, r);
        number_opt(&c, "similarityThreshold", r);
        if let Some(t) = c.get("similarityThreshold").and_then(Value::as_f64) {
            if !(0.0..=1.0).contains(&t) {
                r.error(
                    c.path("similarityThreshold"),
                    "must be between 0 and 1 (a cosine similarity)",
                );
            }
        }
        // No mode: exact, the one the filter has.
        match mode.as_deref().unwrap_or("exact") {
            "off" => {}
            "exact" => match ttl {
                Some(ttl) => {
                    cache = Some(json!({"ttlSeconds": ttl}));
                    if c.has("similarityThreshold") {
                        r.warn(
                            c.path("similarityThreshold"),
                            "ignored: only a semantic cache compares by similarity",
                        );
                    }
                }
                None if !c.has("ttlSeconds") => {
                    r.error(c.path("ttlSeconds"), "is required for an exact cache")
                }
                None => {}
            },
            _ => carry(
                "cache".into(),
                top.map.get("cache").unwrap_or(&Value::Null),
                "the filter caches exact matches only (a semantic cache needs embeddings of every prompt)",
                r,
            ),
        }
    }
    if let Some(rl) = sub(
        "rateLimit",
        &["requestsPerMinute", "tokensPerMinute", "concurrency"],
        r,
    ) {
        let mut limits = Map::new();
        for k in ["requestsPerMinute", "tokensPerMinute", "concurrency"] {
            if let Some(n) = rl.int_opt(k, 1, i64::MAX, r) {
                limits.insert(k.into(), json!(n));
            }
        }
        if !limits.is_empty() {
            rate_limit = Some(Value::Object(limits));
        }
    }
    let mut budget = None;
    if let Some(b) = sub("budget", &["currency", "limit", "period", "action"], r) {
        budget = read_budget(&b, r);
    }
    let mut guardrails = Vec::new();
    if let Some(list) = top.list_opt("guardrails", 64, r) {
        for (i, g) in list.iter().enumerate() {
            let p = at("guardrails", i);
            let Some(o) = Obj::new(g, &p, &["name", "stage", "policyRef"], r) else {
                continue;
            };
            let name = o.str_req("name", r).map(str::to_string);
            let stage = if o.has("stage") {
                enum_opt(&o, "stage", &["request", "response", "both"], r)
            } else {
                r.error(o.path("stage"), "is required");
                None
            };
            let policy = match o.str_opt("policyRef", r) {
                Some(p) => Some((p.to_string(), o.path("policyRef"))),
                None => name.map(|n| (n, o.path("name"))),
            };
            if let (Some(stage), Some((policy, path))) = (stage, policy) {
                guardrails.push((policy, stage, path));
            }
        }
    }
    let (mut num_retries, mut per_try_timeout_ms) = (None, None);
    if let Some(rt) = sub("retries", &["attempts", "perTryTimeout"], r) {
        // `attempts` counts the first try too.
        num_retries = rt.int_opt("attempts", 1, 100, r).map(|a| a as u32 - 1);
        if let Some(s) = rt.str_opt("perTryTimeout", r) {
            match parse_duration(s) {
                Ok(ms) => per_try_timeout_ms = Some(ms),
                Err(e) => r.error(rt.path("perTryTimeout"), e),
            }
        }
    }
    if let Some(ob) = sub(
        "observability",
        &["openTelemetry", "langfuse", "logRequestBody"],
        r,
    ) {
        for k in ["openTelemetry", "langfuse", "logRequestBody"] {
            ob.bool_opt(k, r);
        }
        carry("observability".into(), top.map.get("observability").unwrap_or(&Value::Null), "telemetry sinks are not configured by the compiler (the access log and dynamic metadata are always on)", r);
    }
    let tenant = top.str_opt("tenant", r).map(str::to_string);

    Some(GenericRoute {
        meta: Meta {
            id,
            source: source.clone(),
            created: None,
            annotations: Default::default(),
        },
        models,
        headers,
        backends,
        num_retries,
        per_try_timeout_ms,
        not_enforced,
        rate_limit,
        cache,
        budget,
        tenant,
        least_request,
        shadow,
        guardrails,
    })
}
