//! The filter's configuration document: parsed, validated and compiled once at load
//! into an immutable [`Config`] that every request borrows.
//!
//! The document is versioned JSON, described by `filter/config.schema.json`. A bad
//! document is refused whole with a [`ConfigError`] naming the field by its path
//! (`routes[0].llmRequestCosts[1].cel`), never half-applied.

pub mod backend;
mod exchange;
mod guardrail;
pub mod quota;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;

use crate::auth::exchange::{Registry, Slot};
use crate::auth::secrets::SecretStore;
use crate::config::backend::RawBackend;
pub use crate::config::backend::{Backend, BackendSchema};
use crate::metering::cost::RequestCost;
use crate::metering::prices::{self, ModelPrice, Price};
use crate::policy::budget::Budget;
use crate::policy::cache::{self, AnswerCache};
use crate::policy::guardrail::{GuardrailPolicy, RouteGuardrail};
use crate::policy::identity::IdentitySource;
use crate::policy::ratelimit::{CountStore, LocalCounts, RateLimit};
use crate::policy::validation::{RequestRules, RuleAction};
use quota::{QuotaMode, RawBudget, RawIdentity, RawPrice, RawQuota};

/// The only document version this build reads.
pub const CONFIG_VERSION: &str = "v1";

/// Default request body limit: large enough for image inputs as base64.
pub const DEFAULT_MAX_REQUEST_BODY_BYTES: u64 = 8 * 1024 * 1024;

/// Default limit of a non-streamed response body buffered to read its usage.
pub const DEFAULT_MAX_RESPONSE_BODY_BYTES: u64 = 16 * 1024 * 1024;

/// Default `streamIdleTimeout`: how long a streamed answer may go without a byte from
/// the provider before the gateway ends it with an error event. Half the route timeout
/// `aigw compile` (and Envoy AI Gateway) give a rule by default (60 s), so a stall in
/// the first half of such an answer still ends with an error event the client can
/// read, not with Envoy's reset at the route timeout; and long enough for the quiet
/// spells of a model that reasons before it writes.
pub const DEFAULT_STREAM_IDLE_TIMEOUT: Duration = Duration::from_secs(30);

/// The dynamic metadata keys the gateway writes (besides costs and fleet mode's
/// `rl_period_<budget>`).
pub const GATEWAY_METADATA_KEYS: [&str; 19] = [
    "route_name",
    "request_model",
    "response_model",
    "backend_name",
    "model_name_override",
    "token_latency_ttft",
    "token_latency_itl",
    "cache",
    "identity",
    "llm_cost",
    "llm_cost_currency",
    "budget_alert",
    "rl_route",
    "rl_identity",
    "rl_tenant",
    "rl_tokens",
    "rl_cost",
    "rl_unchecked",
    crate::policy::guardrail::METADATA_KEY,
];

/// A refused configuration: where, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError {
    /// Path of the offending field, e.g. `routes[0].backends[1].name`; empty for the
    /// document itself.
    pub path: String,
    pub message: String,
}

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.path.is_empty() {
            write!(f, "invalid config: {}", self.message)
        } else {
            write!(f, "invalid config at `{}`: {}", self.path, self.message)
        }
    }
}

impl std::error::Error for ConfigError {}

fn err(path: impl Into<String>, message: impl Into<String>) -> ConfigError {
    ConfigError {
        path: path.into(),
        message: message.into(),
    }
}

/// A model as listed by `GET /v1/models`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ModelInfo {
    pub id: String,
    pub owned_by: String,
    pub created: i64,
}

/// A backend a route sends to; Envoy does the weighted and prioritised picking.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RouteBackend {
    pub name: String,
    pub weight: u32,
    pub priority: u32,
}

/// A set of models served by the same backends and metered by the same costs.
#[derive(Debug)]
pub struct Route {
    pub name: String,
    pub models: Vec<String>,
    pub backends: Vec<RouteBackend>,
    /// Global costs, then this route's own; a route cost replaces a global one with
    /// the same metadata key.
    pub costs: Vec<RequestCost>,
    pub rate_limit: RateLimit,
    pub cache: Option<AnswerCache>,
    /// Fixed dynamic metadata of the route's requests (a tenant, a team).
    pub metadata: Vec<(String, String)>,
    /// A backend of the route sends the client's own credentials to the provider
    /// (forwarded, or as a per-request override): they are part of a cache key.
    pub client_credentials_reach_provider: bool,
    /// Spend budgets.
    pub budgets: Vec<Budget>,
    /// The route's tenant (its `metadata.tenant`), which limits and budgets may
    /// count per.
    pub tenant: Option<String>,
    /// How long a streamed answer may go without a byte from the provider (the
    /// route's `streamIdleTimeout`, else the document's, else the default); `None`:
    /// no limit (`0s`).
    pub stream_idle_timeout: Option<Duration>,
    /// The guardrail policies the route runs, in order.
    pub guardrails: Vec<RouteGuardrail>,
    /// Path prefixes of other APIs the route passes to its backend as they are, with
    /// the backend's credentials (`passthrough`).
    pub passthrough: Vec<String>,
}

/// Size limits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    pub max_request_body_bytes: u64,
    pub max_response_body_bytes: u64,
}

/// The validated, compiled configuration.
#[derive(Debug)]
pub struct Config {
    pub models: Vec<ModelInfo>,
    pub backends: Vec<Backend>,
    pub routes: Vec<Route>,
    pub limits: Limits,
    /// `GET /v1/models` answer, built once.
    models_body: Vec<u8>,
    model_to_route: HashMap<String, usize>,
    /// No route passes other paths (the common case: nothing to look up).
    passthrough_none: bool,
    backend_index: HashMap<String, usize>,
    /// Contents of credential files, written by the host.
    secrets: SecretStore,
    /// Request headers an upstream attempt may change (saved for the next attempt).
    touched_headers: Vec<String>,
    /// No upstream instance runs (Envoy Gateway): the router-level instance does the
    /// upstream work for routes with one backend.
    pub router_only: bool,
    /// Checked on every request's headers before anything else.
    pub request_rules: RequestRules,
    /// Some route caches answers: requests note their credentials.
    pub any_cache: bool,
    /// Where the routes' rate-limit counts live (see [`Config::use_count_store`]).
    counts: Arc<dyn CountStore>,
    /// The slot of each backend's exchanged credential (by backend index), in the
    /// registry of [`Config::share_exchanges`] (a private one until then).
    exchange_slots: Vec<Option<Arc<Slot>>>,
    exchanges: Arc<Registry>,
    /// Where identities come from.
    pub identity: Option<IdentitySource>,
    /// How limits and budgets are counted.
    pub quota: QuotaMode,
    /// The document's prices, then the built-in catalog (normalized names).
    prices: Vec<(String, Price)>,
    /// The document's `streamIdleTimeout` (else the default), for routes that set
    /// none; `None`: no limit.
    pub stream_idle_timeout: Option<Duration>,
    /// Guardrail policies; a route's [`Route::guardrails`] point into them.
    pub guardrails: Vec<GuardrailPolicy>,
}

impl Config {
    /// Parses and validates a configuration document.
    pub fn from_json(bytes: &[u8]) -> Result<Config, ConfigError> {
        let de = &mut serde_json::Deserializer::from_slice(bytes);
        let raw: RawConfig = serde_path_to_error::deserialize(&mut *de).map_err(|e| {
            let path = e.path().to_string();
            let path = if path == "." { String::new() } else { path };
            err(path, e.into_inner().to_string())
        })?;
        // Nothing but whitespace may follow the document.
        de.end().map_err(|e| err("", e.to_string()))?;
        raw.compile()
    }

    /// The route serving `model`, if any.
    pub fn route_for_model(&self, model: &str) -> Option<&Route> {
        self.route_index(model).map(|i| &self.routes[i])
    }

    /// Index in [`Config::routes`] of the route serving `model`.
    pub fn route_index(&self, model: &str) -> Option<usize> {
        self.model_to_route.get(model).copied()
    }

    /// The route that passes `path` (query ignored) to its backend: the first whose
    /// `passthrough` has a prefix of it, ending at a `/` or the path's end.
    pub fn passthrough_route(&self, path: &str) -> Option<usize> {
        if self.passthrough_none {
            return None;
        }
        let path = path.split(['?', '#']).next().unwrap_or(path);
        if !is_plain_path(path) {
            // `/v1/files/../admin` must not carry the backend's credentials elsewhere.
            return None;
        }
        self.routes.iter().position(|r| {
            r.passthrough.iter().any(|prefix| {
                path.strip_prefix(prefix.as_str()).is_some_and(|rest| {
                    rest.is_empty() || rest.starts_with('/') || prefix.ends_with('/')
                })
            })
        })
    }

    /// The backend named `name`, if configured.
    pub fn backend(&self, name: &str) -> Option<&Backend> {
        self.backend_index(name).map(|i| &self.backends[i])
    }

    /// Index in [`Config::backends`] of the backend named `name`.
    pub fn backend_index(&self, name: &str) -> Option<usize> {
        self.backend_index.get(name).copied()
    }

    /// The JSON body of `GET /v1/models`.
    pub fn models_body(&self) -> &[u8] {
        &self.models_body
    }

    /// Credential files, for the host to read into [`Config::secrets`] and watch.
    pub fn secret_files(&self) -> Vec<&str> {
        let mut files: Vec<&str> = self
            .backends
            .iter()
            .flat_map(|b| b.secret_files())
            .collect();
        files.sort_unstable();
        files.dedup();
        files
    }

    /// Environment variables holding credentials, for the host to read into
    /// [`Config::secrets`] at load.
    pub fn secret_env(&self) -> Vec<&str> {
        let mut names: Vec<&str> = self.backends.iter().flat_map(|b| b.secret_env()).collect();
        names.sort_unstable();
        names.dedup();
        names
    }

    /// Keeps the rate-limit counts in `store` (a host's process-wide store, for
    /// builds whose workers do not share this config's memory). Call before use.
    pub fn use_count_store(&mut self, store: Arc<dyn CountStore>) {
        for r in &self.routes {
            r.rate_limit
                .count_names()
                .iter()
                .for_each(|n| store.prepare(n));
        }
        self.counts = store;
    }

    /// Keeps exchanged credentials in `registry` (the host's process-wide one, so
    /// every worker and both filter instances share them). Call before use.
    pub fn share_exchanges(&mut self, registry: &Arc<Registry>) {
        self.exchanges = Arc::clone(registry);
        self.exchange_slots = self
            .backends
            .iter()
            .map(|b| b.exchange().map(|spec| registry.slot(spec)))
            .collect();
    }

    /// Whether a rate-limit service counts limits and budgets (see
    /// [`crate::policy::fleet`]).
    pub fn fleet_mode(&self) -> bool {
        self.quota == QuotaMode::Fleet
    }

    /// The price of an answer of `backend` (by name), for the first of `models`
    /// (the answer's model, the model sent, the model asked for) a price is known:
    /// the backend's own prices, the document's, the catalog.
    pub fn price(&self, backend: Option<&str>, models: &[&str]) -> Option<&Price> {
        let own = backend
            .and_then(|b| self.backend(b))
            .map_or(&[][..], |b| b.prices.as_slice());
        for model in models.iter().filter(|m| !m.is_empty()) {
            let named = own
                .iter()
                .filter_map(|mp| mp.model.as_deref().map(|n| (n, &mp.price)));
            if let Some(p) = prices::lookup(named, model) {
                return Some(p);
            }
        }
        if let Some(any) = own.iter().find(|mp| mp.model.is_none()) {
            return Some(&any.price);
        }
        models
            .iter()
            .filter(|m| !m.is_empty())
            .find_map(|m| prices::lookup(self.prices.iter().map(|(n, p)| (n.as_str(), p)), m))
    }

    /// The price a request to `route` for `model` is estimated at, before it is
    /// routed: its first backend's.
    pub fn request_price(&self, route: &Route, model: &str) -> Option<&Price> {
        let first = route.backends.first().map(|b| b.name.as_str());
        let sent = first
            .and_then(|b| self.backend(b))
            .and_then(|b| b.model_name_override.as_deref())
            .unwrap_or(model);
        self.price(first, &[sent, model])
    }

    /// The registry exchanged credentials live in.
    pub fn exchanges(&self) -> &Arc<Registry> {
        &self.exchanges
    }

    /// Whether some backend's credential is exchanged by the gateway.
    pub fn any_exchange(&self) -> bool {
        self.exchange_slots.iter().any(Option::is_some)
    }

    /// The slot of backend `index`'s exchanged credential, if it has one.
    pub fn exchange_slot(&self, index: usize) -> Option<&Arc<Slot>> {
        self.exchange_slots.get(index)?.as_ref()
    }

    pub fn counts(&self) -> &dyn CountStore {
        &*self.counts
    }

    pub fn secrets(&self) -> &SecretStore {
        &self.secrets
    }

    /// Every request header an upstream attempt may set or remove.
    pub fn touched_headers(&self) -> &[String] {
        &self.touched_headers
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawConfig {
    version: String,
    #[serde(default)]
    models: Option<Vec<RawModel>>,
    #[serde(default)]
    backends: Vec<RawBackend>,
    #[serde(default)]
    routes: Vec<RawRoute>,
    #[serde(default)]
    llm_request_costs: Vec<RawCost>,
    #[serde(default)]
    limits: RawLimits,
    #[serde(default)]
    router_only: bool,
    #[serde(default)]
    request_validation: Option<RawValidation>,
    #[serde(default)]
    identity: Option<RawIdentity>,
    #[serde(default)]
    prices: Vec<RawPrice>,
    #[serde(default)]
    quota: Option<RawQuota>,
    #[serde(default)]
    stream_idle_timeout: Option<String>,
    #[serde(default)]
    guardrails: Vec<guardrail::RawGuardrail>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawValidation {
    rules: Vec<RawRule>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawRule {
    expression: String,
    action: RawRuleAction,
}

#[derive(Deserialize, Clone, Copy)]
enum RawRuleAction {
    Allow,
    Deny,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawModel {
    id: String,
    #[serde(default)]
    owned_by: Option<String>,
    #[serde(default)]
    created: Option<i64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawRoute {
    name: String,
    models: Vec<String>,
    #[serde(default)]
    backends: Vec<RawRouteBackend>,
    #[serde(default)]
    llm_request_costs: Vec<RawCost>,
    #[serde(default)]
    rate_limit: Option<RawRateLimit>,
    #[serde(default)]
    cache: Option<RawCache>,
    #[serde(default)]
    metadata: std::collections::BTreeMap<String, String>,
    #[serde(default)]
    budgets: Vec<RawBudget>,
    #[serde(default)]
    stream_idle_timeout: Option<String>,
    #[serde(default)]
    guardrails: Vec<guardrail::RawRouteGuardrail>,
    #[serde(default)]
    passthrough: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawCache {
    ttl_seconds: u64,
    #[serde(default)]
    max_entries: Option<usize>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawRateLimit {
    #[serde(default)]
    requests_per_minute: Option<u64>,
    #[serde(default)]
    tokens_per_minute: Option<u64>,
    #[serde(default)]
    concurrency: Option<u64>,
    #[serde(default)]
    per: Option<String>,
}

impl RawRateLimit {
    fn compile(&self, route: &str, path: &str) -> Result<RateLimit, ConfigError> {
        for (field, v) in [
            ("requestsPerMinute", self.requests_per_minute),
            ("tokensPerMinute", self.tokens_per_minute),
            ("concurrency", self.concurrency),
        ] {
            if v == Some(0) {
                return Err(err(
                    format!("{path}.{field}"),
                    "must be at least 1 (leave it out for no limit)",
                ));
            }
        }
        Ok(RateLimit::new(
            route,
            self.requests_per_minute,
            self.tokens_per_minute,
            self.concurrency,
            quota::scope(self.per.as_deref(), &format!("{path}.per"))?,
        ))
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawRouteBackend {
    name: String,
    #[serde(default = "default_weight")]
    weight: u32,
    #[serde(default)]
    priority: u32,
}

/// A path with no dot segments, encoded dots or slashes, or backslashes: one that
/// names the same resource before and after any server normalizes it.
fn is_plain_path(path: &str) -> bool {
    let lower = path.to_ascii_lowercase();
    !(lower.contains("%2e")
        || lower.contains("%2f")
        || lower.contains("%5c")
        || path.contains('\\'))
        && path.split('/').all(|seg| seg != "." && seg != "..")
}

/// A route's passthrough prefixes: absolute paths, not one of the gateway's own
/// endpoints, not already passed by an earlier route.
fn compile_passthrough(
    prefixes: Vec<String>,
    earlier: &[Route],
    p: &str,
) -> Result<Vec<String>, ConfigError> {
    for (j, prefix) in prefixes.iter().enumerate() {
        let fp = format!("{p}[{j}]");
        // A prefix no plain path can have would never match: refused, not kept.
        let well_formed = prefix.starts_with('/')
            && prefix.len() > 1
            && !prefix.contains(['?', '#', ' '])
            && is_plain_path(prefix);
        if !well_formed {
            return Err(err(
                fp,
                "must be an absolute path prefix such as /v1/files (no query, no dot segments, encoded dots or slashes, or backslashes)",
            ));
        }
        if let Some(e) = crate::endpoint::Endpoint::classify(prefix) {
            return Err(err(
                fp,
                format!("{} is an endpoint the gateway serves itself", e.path()),
            ));
        }
        if let Some(r) = earlier.iter().find(|r| r.passthrough.contains(prefix)) {
            return Err(err(
                fp,
                format!("route '{}' already passes {prefix}", r.name),
            ));
        }
    }
    Ok(prefixes)
}

fn default_weight() -> u32 {
    1
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawCost {
    metadata_key: String,
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    cel: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawLimits {
    #[serde(default)]
    max_request_body_bytes: Option<u64>,
    #[serde(default)]
    max_response_body_bytes: Option<u64>,
}

impl RawCost {
    fn compile(&self, path: &str) -> Result<RequestCost, ConfigError> {
        if self.metadata_key.is_empty() {
            return Err(err(format!("{path}.metadataKey"), "must not be empty"));
        }
        RequestCost::compile(&self.metadata_key, &self.kind, self.cel.as_deref())
            .map_err(|e| err(format!("{path}.{}", e.field), e.message))
    }
}

fn compile_costs(raw: &[RawCost], path: &str) -> Result<Vec<RequestCost>, ConfigError> {
    let mut seen = HashMap::new();
    let mut out = Vec::with_capacity(raw.len());
    for (i, cost) in raw.iter().enumerate() {
        let p = format!("{path}[{i}]");
        if let Some(first) = seen.insert(cost.metadata_key.as_str(), i) {
            return Err(err(
                format!("{p}.metadataKey"),
                format!(
                    "duplicate metadata key '{}' (also at {path}[{first}])",
                    cost.metadata_key
                ),
            ));
        }
        out.push(cost.compile(&p)?);
    }
    Ok(out)
}

impl RawConfig {
    fn compile(self) -> Result<Config, ConfigError> {
        if self.version != CONFIG_VERSION {
            return Err(err(
                "version",
                format!(
                    "unsupported version '{}', expected '{CONFIG_VERSION}'",
                    self.version
                ),
            ));
        }

        let limits = Limits {
            max_request_body_bytes: positive(
                self.limits.max_request_body_bytes,
                DEFAULT_MAX_REQUEST_BODY_BYTES,
                "limits.maxRequestBodyBytes",
            )?,
            max_response_body_bytes: positive(
                self.limits.max_response_body_bytes,
                DEFAULT_MAX_RESPONSE_BODY_BYTES,
                "limits.maxResponseBodyBytes",
            )?,
        };

        let stream_idle_timeout = match &self.stream_idle_timeout {
            Some(d) => idle_timeout(d, "streamIdleTimeout")?,
            None => Some(DEFAULT_STREAM_IDLE_TIMEOUT),
        };
        let identity = match self.identity {
            Some(i) => Some(i.compile("identity")?),
            None => None,
        };
        let quota = match self.quota {
            Some(q) => q.compile("quota")?,
            None => QuotaMode::Embedded,
        };
        let mut prices: Vec<(String, Price)> = Vec::new();
        for (i, raw) in self.prices.into_iter().enumerate() {
            let ModelPrice { model, price } = raw.compile(true, &format!("prices[{i}]"))?;
            prices.push((model.unwrap_or_default(), price));
        }
        prices.extend(prices::catalog());

        let mut backends = Vec::with_capacity(self.backends.len());
        let mut backend_index = HashMap::new();
        for (i, b) in self.backends.into_iter().enumerate() {
            let p = format!("backends[{i}]");
            let b = b.compile(&p)?;
            if backend_index.insert(b.name.clone(), i).is_some() {
                return Err(err(
                    format!("{p}.name"),
                    format!("duplicate backend name '{}'", b.name),
                ));
            }
            backends.push(b);
        }

        let global_costs = compile_costs(&self.llm_request_costs, "llmRequestCosts")?;
        let request_rules = match &self.request_validation {
            None => RequestRules::default(),
            Some(v) => {
                let rules: Vec<(&str, RuleAction)> = v
                    .rules
                    .iter()
                    .map(|r| {
                        let action = match r.action {
                            RawRuleAction::Allow => RuleAction::Allow,
                            RawRuleAction::Deny => RuleAction::Deny,
                        };
                        (r.expression.as_str(), action)
                    })
                    .collect();
                RequestRules::compile(&rules).map_err(|(i, message)| {
                    err(format!("requestValidation.rules[{i}].expression"), message)
                })?
            }
        };

        let (guardrails, guardrail_index) = guardrail::compile_policies(self.guardrails)?;

        let mut routes = Vec::with_capacity(self.routes.len());
        let mut model_to_route: HashMap<String, usize> = HashMap::new();
        let mut route_names = HashMap::new();
        for (i, r) in self.routes.into_iter().enumerate() {
            let p = format!("routes[{i}]");
            if r.name.is_empty() {
                return Err(err(format!("{p}.name"), "must not be empty"));
            }
            if let Some(first) = route_names.insert(r.name.clone(), i) {
                return Err(err(
                    format!("{p}.name"),
                    format!("duplicate route name '{}' (also routes[{first}])", r.name),
                ));
            }
            if r.models.is_empty() {
                return Err(err(format!("{p}.models"), "must list at least one model"));
            }
            for (j, m) in r.models.iter().enumerate() {
                if m.is_empty() {
                    return Err(err(format!("{p}.models[{j}]"), "must not be empty"));
                }
                if let Some(other) = model_to_route.insert(m.clone(), i) {
                    return Err(err(
                        format!("{p}.models[{j}]"),
                        format!("model '{m}' is already served by routes[{other}]"),
                    ));
                }
            }
            let mut rbs = Vec::with_capacity(r.backends.len());
            for (j, rb) in r.backends.into_iter().enumerate() {
                if !backend_index.contains_key(&rb.name) {
                    return Err(err(
                        format!("{p}.backends[{j}].name"),
                        format!("unknown backend '{}'", rb.name),
                    ));
                }
                rbs.push(RouteBackend {
                    name: rb.name,
                    weight: rb.weight,
                    priority: rb.priority,
                });
            }
            let own = compile_costs(&r.llm_request_costs, &format!("{p}.llmRequestCosts"))?;
            let mut costs: Vec<RequestCost> = global_costs
                .iter()
                .filter(|g| own.iter().all(|o| o.metadata_key != g.metadata_key))
                .cloned()
                .collect();
            costs.extend(own);
            let rate_limit = match &r.rate_limit {
                Some(rl) => rl.compile(&r.name, &format!("{p}.rateLimit"))?,
                None => RateLimit::default(),
            };
            let cache = match &r.cache {
                None => None,
                Some(c) if c.ttl_seconds == 0 => {
                    return Err(err(
                        format!("{p}.cache.ttlSeconds"),
                        "must be at least 1 (leave cache out for none)",
                    ))
                }
                Some(c) if c.max_entries == Some(0) => {
                    return Err(err(format!("{p}.cache.maxEntries"), "must be at least 1"))
                }
                Some(c) => Some(AnswerCache::new(
                    Duration::from_secs(c.ttl_seconds),
                    c.max_entries.unwrap_or(cache::DEFAULT_MAX_ENTRIES),
                )),
            };
            let client_credentials_reach_provider = rbs.iter().any(|rb| {
                backend_index
                    .get(&rb.name)
                    .map(|&i| &backends[i])
                    .is_some_and(|b: &Backend| {
                        b.forward_client_credentials || b.credential_override.is_some()
                    })
            });
            for key in r.metadata.keys() {
                let clash = GATEWAY_METADATA_KEYS.contains(&key.as_str())
                    || costs.iter().any(|c| c.metadata_key == *key);
                if key.is_empty() || clash {
                    return Err(err(
                        format!("{p}.metadata.{key}"),
                        "must name a key the gateway does not write itself (route_name, request_model, ..., a cost's metadataKey)",
                    ));
                }
            }
            let fleet = matches!(quota, QuotaMode::Fleet);
            let mut budgets: Vec<Budget> = Vec::with_capacity(r.budgets.len());
            for (i, b) in r.budgets.into_iter().enumerate() {
                let bp = format!("{p}.budgets[{i}]");
                let budget = b.compile(fleet, &bp)?;
                if budgets.iter().any(|o| o.name == budget.name) {
                    return Err(err(
                        format!("{bp}.name"),
                        format!("duplicate budget '{}' on this route", budget.name),
                    ));
                }
                budgets.push(budget);
            }
            let tenant = r.metadata.get("tenant").cloned();
            let route_idle = match &r.stream_idle_timeout {
                Some(d) => idle_timeout(d, &format!("{p}.streamIdleTimeout"))?,
                None => stream_idle_timeout,
            };
            let per = [rate_limit.per]
                .into_iter()
                .chain(budgets.iter().map(|b| b.scope));
            if tenant.is_none()
                && per
                    .clone()
                    .any(|s| s == crate::policy::budget::Scope::Tenant)
            {
                return Err(err(
                    format!("{p}.metadata.tenant"),
                    "is required: a limit or budget of this route counts per tenant",
                ));
            }
            if identity.is_none()
                && per
                    .clone()
                    .any(|s| s == crate::policy::budget::Scope::Identity)
            {
                return Err(err(
                    "identity",
                    format!(
                        "is required: a limit or budget of route '{}' counts per identity",
                        r.name
                    ),
                ));
            }
            let route_guardrails = guardrail::compile_route(
                &r.guardrails,
                &guardrail_index,
                &format!("{p}.guardrails"),
            )?;
            let passthrough =
                compile_passthrough(r.passthrough, &routes, &format!("{p}.passthrough"))?;
            if !passthrough.is_empty() {
                // Another path to Lambda's API, signed with the gateway's keys, would
                // be any call a client likes (list, update, invoke another function).
                if let Some(rb) = rbs
                    .iter()
                    .find(|rb| backends[backend_index[&rb.name]].lambda.is_some())
                {
                    return Err(err(
                        format!("{p}.passthrough"),
                        format!(
                            "backend '{}' is an AWS Lambda function: it takes invocations only",
                            rb.name
                        ),
                    ));
                }
            }
            routes.push(Route {
                name: r.name,
                models: r.models,
                backends: rbs,
                costs,
                rate_limit,
                cache,
                metadata: r.metadata.into_iter().collect(),
                client_credentials_reach_provider,
                budgets,
                tenant,
                stream_idle_timeout: route_idle,
                guardrails: route_guardrails,
                passthrough,
            });
        }

        let models = match self.models {
            Some(list) => {
                let mut seen = HashMap::new();
                let mut out = Vec::with_capacity(list.len());
                for (i, m) in list.into_iter().enumerate() {
                    let p = format!("models[{i}]");
                    if m.id.is_empty() {
                        return Err(err(format!("{p}.id"), "must not be empty"));
                    }
                    if seen.insert(m.id.clone(), i).is_some() {
                        return Err(err(
                            format!("{p}.id"),
                            format!("duplicate model '{}'", m.id),
                        ));
                    }
                    if !model_to_route.contains_key(&m.id) {
                        return Err(err(
                            format!("{p}.id"),
                            format!("model '{}' is listed but no route serves it", m.id),
                        ));
                    }
                    out.push(ModelInfo {
                        id: m.id,
                        owned_by: m.owned_by.unwrap_or_else(default_owner),
                        created: m.created.unwrap_or(0),
                    });
                }
                out
            }
            None => routes
                .iter()
                .flat_map(|r| r.models.iter())
                .map(|id| ModelInfo {
                    id: id.clone(),
                    owned_by: default_owner(),
                    created: 0,
                })
                .collect(),
        };
        let models_body = crate::models::list_body(&models);
        let mut touched_headers: Vec<String> = crate::machine::upstream::TOUCHED_HEADERS
            .iter()
            .map(|h| h.to_string())
            .collect();
        for b in &backends {
            let m = &b.header_mutation;
            let own = m
                .set
                .iter()
                .map(|(n, _)| n)
                .chain(&m.remove)
                .chain(&b.credential_override);
            for name in own {
                if !touched_headers.contains(name) {
                    touched_headers.push(name.clone());
                }
            }
        }

        let any_cache = routes.iter().any(|r| r.cache.is_some());
        let passthrough_none = routes.iter().all(|r| r.passthrough.is_empty());
        let mut config = Config {
            models,
            backends,
            routes,
            limits,
            models_body,
            model_to_route,
            passthrough_none,
            backend_index,
            secrets: SecretStore::default(),
            touched_headers,
            router_only: self.router_only,
            request_rules,
            any_cache,
            counts: Arc::new(LocalCounts::default()),
            exchange_slots: Vec::new(),
            exchanges: Registry::new(),
            identity,
            quota,
            stream_idle_timeout,
            prices,
            guardrails,
        };
        config.share_exchanges(&Registry::new());
        Ok(config)
    }
}

fn default_owner() -> String {
    "Envoy AI Gateway".to_string()
}

/// A `streamIdleTimeout`: a Gateway API duration (GEP-2257, as in the CRDs: one to
/// four `<1-5 digits><h|m|s|ms>` groups, `30s`, `1m30s`, `500ms`); `0s` turns the
/// limit off (`None`).
fn idle_timeout(value: &str, path: &str) -> Result<Option<Duration>, ConfigError> {
    let d = parse_duration(value).ok_or_else(|| {
        err(
            path,
            format!(
                "'{}' is not a duration (e.g. 30s, 1m30s, 500ms; 0s for no limit)",
                crate::error::clip_quoted(value, 64)
            ),
        )
    })?;
    Ok((!d.is_zero()).then_some(d))
}

/// Parses a Gateway API duration (GEP-2257): one to four `<1-5 digits><h|m|s|ms>`
/// groups.
pub fn parse_duration(s: &str) -> Option<Duration> {
    let b = s.as_bytes();
    let (mut i, mut groups, mut ms) = (0usize, 0usize, 0u64);
    while i < b.len() {
        let start = i;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        if i == start || i - start > 5 {
            return None;
        }
        let n: u64 = s[start..i].parse().ok()?;
        let unit = if b[i..].starts_with(b"ms") {
            i += 1;
            1
        } else {
            match b.get(i)? {
                b'h' => 3_600_000,
                b'm' => 60_000,
                b's' => 1_000,
                _ => return None,
            }
        };
        i += 1;
        ms += n * unit;
        groups += 1;
    }
    (1..=4).contains(&groups).then(|| Duration::from_millis(ms))
}

fn positive(value: Option<u64>, default: u64, path: &str) -> Result<u64, ConfigError> {
    match value {
        None => Ok(default),
        Some(0) => Err(err(path, "must be greater than 0")),
        Some(v) => Ok(v),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(v: serde_json::Value) -> Result<Config, ConfigError> {
        Config::from_json(&serde_json::to_vec(&v).unwrap())
    }

    fn base() -> serde_json::Value {
        serde_json::json!({
            "version": "v1",
            "backends": [{"name": "openai", "schema": {"name": "OpenAI"}}],
            "routes": [{"name": "r0", "models": ["gpt-4o-mini"], "backends": [{"name": "openai"}]}],
            "llmRequestCosts": [{"metadataKey": "in", "type": "InputToken"}]
        })
    }

    #[test]
    fn passthrough_prefixes_are_checked_at_load() {
        let with = |first: serde_json::Value, second: serde_json::Value| {
            let mut v = base();
            v["routes"][0]["passthrough"] = first;
            v["routes"]
                .as_array_mut()
                .unwrap()
                .push(serde_json::json!({"name": "r1", "models": ["m1"],
                    "backends": [{"name": "openai"}], "passthrough": second}));
            Config::from_json(&serde_json::to_vec(&v).unwrap())
        };
        let ok = with(
            serde_json::json!(["/v1/files", "/v1/batches/"]),
            serde_json::json!(["/v1/fim"]),
        )
        .unwrap();
        assert_eq!(ok.passthrough_route("/v1/fim/completions"), Some(1));
        for (first, second, path) in [
            (
                serde_json::json!(["v1/files"]),
                serde_json::json!([]),
                "routes[0].passthrough[0]",
            ),
            (
                serde_json::json!(["/v1/chat/completions"]),
                serde_json::json!([]),
                "routes[0].passthrough[0]",
            ),
            (
                serde_json::json!(["/v1/files/../x"]),
                serde_json::json!([]),
                "routes[0].passthrough[0]",
            ),
            (
                serde_json::json!(["/v1/%2E%2E/x"]),
                serde_json::json!([]),
                "routes[0].passthrough[0]",
            ),
            (
                serde_json::json!(["/v1/files?x=1"]),
                serde_json::json!([]),
                "routes[0].passthrough[0]",
            ),
            (
                serde_json::json!(["/v1/files"]),
                serde_json::json!(["/v1/x", "/v1/files"]),
                "routes[1].passthrough[1]",
            ),
        ] {
            let e = with(first.clone(), second).expect_err(&first.to_string());
            assert_eq!(e.path, path, "{e}");
        }
    }

    /// Fuzzing (config_json): a document followed by more bytes loaded, the rest
    /// ignored.
    #[test]
    fn fuzz_config_json_trailing_bytes_after_the_document_are_refused() {
        let doc = serde_json::to_string(&base()).unwrap();
        for tail in [" x", "\0", "}", " {\"version\": \"v1\"}"] {
            let e = Config::from_json(format!("{doc}{tail}").as_bytes()).unwrap_err();
            assert!(e.message.contains("trailing"), "{tail:?}: {e:?}");
        }
        assert!(Config::from_json(format!("{doc} \n").as_bytes()).is_ok());
    }

    #[test]
    fn valid_document_loads() {
        let c = load(base()).unwrap();
        assert_eq!(c.route_for_model("gpt-4o-mini").unwrap().name, "r0");
        assert!(c.route_for_model("other").is_none());
        assert_eq!(c.models[0].id, "gpt-4o-mini");
        assert_eq!(
            c.limits.max_request_body_bytes,
            DEFAULT_MAX_REQUEST_BODY_BYTES
        );
    }

    #[test]
    fn syntax_error_is_refused() {
        let e = Config::from_json(b"{\"version\": ").unwrap_err();
        assert!(e.message.contains("EOF"), "{e}");
    }

    #[test]
    fn lambda_backends_are_checked_at_load() {
        let lambda = |extra: serde_json::Value| {
            let mut b = serde_json::json!({"name": "fn", "schema": {"name": "OpenAI"},
                "region": "us-east-1", "lambda": {"functionName": "chat-fn"}});
            for (k, v) in extra.as_object().unwrap() {
                b[k] = v.clone();
            }
            let doc = serde_json::json!({"version": "v1", "backends": [b]});
            Config::from_json(&serde_json::to_vec(&doc).unwrap())
        };
        let c = lambda(serde_json::json!({
            "auth": {"awsSigV4": {"accessKeyId": "a", "secretAccessKey": "s"}}}))
        .unwrap();
        let b = &c.backends[0];
        assert_eq!(b.host.as_deref(), Some("lambda.us-east-1.amazonaws.com"));
        assert!(
            matches!(&b.auth, Some(crate::config::backend::Auth::AwsSigV4 { service, .. }) if service == "lambda")
        );
        let f = b.lambda.as_ref().unwrap();
        assert_eq!(f.invocation, crate::config::backend::InvocationMode::Sync);
        let bad: Vec<(serde_json::Value, &str)> = vec![
            (
                serde_json::json!({"lambda": {"functionName": "a/b"}}),
                "backends[0].lambda.functionName",
            ),
            (
                serde_json::json!({"lambda": {"functionName": ""}}),
                "backends[0].lambda.functionName",
            ),
            (
                serde_json::json!({"lambda": {"functionName": "f", "qualifier": "v 1"}}),
                "backends[0].lambda.qualifier",
            ),
            (
                serde_json::json!({"lambda": {"functionName": "f", "invocationMode": "Later"}}),
                "backends[0].lambda.invocationMode",
            ),
            (
                serde_json::json!({"lambda": {"functionName": "f", "extra": 1}}),
                "backends[0].lambda.extra",
            ),
            (
                serde_json::json!({"schema": {"name": "AWSBedrock"}}),
                "backends[0].schema.name",
            ),
            (serde_json::json!({"region": null}), "backends[0].region"),
            (
                serde_json::json!({"auth": {"apiKey": {"value": "k"}}}),
                "backends[0].auth",
            ),
            (
                serde_json::json!({"credentialOverride": {"header": "x-key"}}),
                "backends[0].credentialOverride",
            ),
            (
                serde_json::json!({"headerMutation": {"set": [{"name": "X-Amz-Invocation-Type", "value": "Event"}]}}),
                "backends[0].headerMutation.set[0].name",
            ),
        ];
        for (extra, path) in bad {
            let e = lambda(extra.clone()).unwrap_err();
            assert_eq!(e.path, path, "{extra}: {e}");
        }
        // No passthrough of other paths to Lambda's API.
        let doc = serde_json::json!({"version": "v1",
            "backends": [{"name": "fn", "schema": {"name": "OpenAI"}, "region": "us-east-1",
                          "lambda": {"functionName": "f"}}],
            "routes": [{"name": "r", "models": ["m"], "backends": [{"name": "fn"}],
                        "passthrough": ["/v2/things"]}]});
        let e = Config::from_json(&serde_json::to_vec(&doc).unwrap()).unwrap_err();
        assert_eq!(e.path, "routes[0].passthrough", "{e}");
        // ARNs, aliases, $LATEST and asynchronous invocation are fine.
        let c = lambda(serde_json::json!({"lambda": {
            "functionName": "arn:aws:lambda:us-east-1:123456789012:function:chat-fn",
            "qualifier": "$LATEST", "invocationMode": "Async"}}))
        .unwrap();
        assert_eq!(
            c.backends[0].lambda.as_ref().unwrap().invocation,
            crate::config::backend::InvocationMode::Async
        );
    }

    #[test]
    fn error_paths_name_the_field() {
        let cases: Vec<(serde_json::Value, &str)> = vec![
            (serde_json::json!({"version": "v9"}), "version"),
            (
                {
                    let mut v = base();
                    v["routes"][0]["backends"][0]["name"] = "nope".into();
                    v
                },
                "routes[0].backends[0].name",
            ),
            (
                {
                    let mut v = base();
                    v["backends"][0]["schema"]["name"] = "Carrier-Pigeon".into();
                    v
                },
                "backends[0].schema.name",
            ),
            (
                {
                    let mut v = base();
                    v["llmRequestCosts"][0]["type"] = "Banana".into();
                    v
                },
                "llmRequestCosts[0].type",
            ),
            (
                {
                    let mut v = base();
                    v["routes"][0]["llmRequestCosts"] = serde_json::json!([{"metadataKey": "c", "type": "CEL", "cel": "input_tokens +"}]);
                    v
                },
                "routes[0].llmRequestCosts[0].cel",
            ),
            (
                {
                    let mut v = base();
                    v["routes"][0]["extra"] = 1.into();
                    v
                },
                "routes[0].extra",
            ),
            (
                {
                    let mut v = base();
                    v["routes"][0]["models"] = serde_json::json!(["a", 3]);
                    v
                },
                "routes[0].models[1]",
            ),
            (
                {
                    let mut v = base();
                    v["limits"] = serde_json::json!({"maxRequestBodyBytes": 0});
                    v
                },
                "limits.maxRequestBodyBytes",
            ),
            (
                {
                    let mut v = base();
                    v["models"] = serde_json::json!([{"id": "not-routed"}]);
                    v
                },
                "models[0].id",
            ),
            (
                {
                    let mut v = base();
                    let first = v["backends"][0].clone();
                    v["backends"].as_array_mut().unwrap().push(first);
                    v
                },
                "backends[1].name",
            ),
            (
                {
                    let mut v = base();
                    let first = v["llmRequestCosts"][0].clone();
                    v["llmRequestCosts"].as_array_mut().unwrap().push(first);
                    v
                },
                "llmRequestCosts[1].metadataKey",
            ),
            (
                {
                    let mut v = base();
                    v["routes"]
                        .as_array_mut()
                        .unwrap()
                        .push(serde_json::json!({"name": "r1", "models": ["gpt-4o-mini"]}));
                    v
                },
                "routes[1].models[0]",
            ),
        ];
        for (doc, path) in cases {
            let e = load(doc.clone()).expect_err(&doc.to_string());
            assert_eq!(e.path, path, "{e} for {doc}");
        }
    }

    #[test]
    fn route_costs_override_global_ones_by_key() {
        let mut v = base();
        v["llmRequestCosts"] = serde_json::json!([
            {"metadataKey": "in", "type": "InputToken"},
            {"metadataKey": "out", "type": "OutputToken"}
        ]);
        v["routes"][0]["llmRequestCosts"] =
            serde_json::json!([{"metadataKey": "in", "type": "TotalToken"}]);
        let c = load(v).unwrap();
        let keys: Vec<_> = c.routes[0]
            .costs
            .iter()
            .map(|c| c.metadata_key.as_str())
            .collect();
        assert_eq!(keys, ["out", "in"]);
    }
}
