//! The standalone Envoy bootstrap: a listener whose HTTP connection manager runs
//! the router-level filter instance (`aigw`) before Envoy's router, one route per
//! (rule, match) keyed on the `x-ai-eg-model` header, a catch-all, and one
//! cluster per rule.
//!
//! One cluster per rule rather than per backend: Envoy's priorities (fallback) and
//! retries only span the endpoints of one cluster, and a retry must be able to land
//! on another provider. Each backend is its own locality in the rule's cluster,
//! weighted by its backendRef weight at its backendRef priority, and each endpoint
//! names its backend in host metadata (`io.envoy.ai_gateway: {backend: ...}`),
//! where the upstream filter instance (`aigw_upstream`) reads it on every attempt.
//!
//! A rule with one backend has no other provider to retry on: when every such rule
//! allows it ([`crate::compile::inline_single_backend_rules`]), the config says
//! `routerOnly` and the router-level instance does their upstream work before
//! routing, so their clusters run no upstream instance (one filter instance and
//! one request parse fewer per request), and their routes rewrite Host to the
//! backend's host, the one the filter signed for. Routes to clusters with the
//! upstream instance leave Host to it: it sets and signs it per attempt.
//! TLS differs per backend, so it is chosen per endpoint with
//! `transport_socket_matches`.
//!
//! Credentials the filter exchanges itself (Entra ID, Google, AWS STS, OIDC
//! providers) are fetched through HTTP callouts to named clusters: one more
//! cluster per token host the config calls ([`token_clusters`]).

use std::collections::BTreeMap;

use serde_json::{json, Map, Value};

use crate::compile::{
    priority_levels, Options, Plan, PlanRoute, PlanRouteBackend, FILTER_METADATA_KEYS,
};
use crate::credentials::TokenHost;
use crate::diag::{Diagnostic, Severity};
use crate::quota;
use crate::resources::{Address, MODEL_HEADER};
use crate::units::envoy_duration;

const METADATA_NAMESPACE: &str = aigw_filter::METADATA_NAMESPACE;
/// Endpoint metadata key the upstream instance reads the backend name from.
const BACKEND_KEY: &str = "backend";
/// `envoy.transport_socket_match` key selecting a backend's TLS settings.
const TLS_MATCH_KEY: &str = "aigw_backend";
/// Retry triggers and codes: the failures another provider can fix (5xx answers,
/// resets, refused connections, and rate limiting).
const RETRY_ON: &str = "5xx,reset,connect-failure,refused-stream,retriable-status-codes";
const RETRY_STATUS_CODES: [u16; 1] = [429];
/// Envoy's default connection buffer limit, which the wasm build must raise.
const ENVOY_DEFAULT_BUFFER: u64 = 1024 * 1024;
/// Room above the body limit, so the filter (not Envoy) sees the chunk that
/// crosses it and answers its own JSON 413.
const BUFFER_HEADROOM: u64 = 1024 * 1024;

pub(crate) fn bootstrap(
    plan: &Plan,
    config_json: &str,
    inline: bool,
    tokens: &BTreeMap<String, TokenHost>,
    o: &Options,
    diags: &mut Vec<Diagnostic>,
) -> Value {
    let filter = |filter_name: &str| {
        json!({
            "@type": "type.googleapis.com/envoy.extensions.filters.http.dynamic_modules.v3.DynamicModuleFilter",
            "dynamic_module_config": {"name": o.module_name},
            "filter_name": filter_name,
            "filter_config": {
                "@type": "type.googleapis.com/google.protobuf.StringValue",
                "value": config_json,
            },
        })
    };

    let mut routes: Vec<Value> = plan
        .routes
        .iter()
        .flat_map(|r| envoy_routes(plan, r, inline))
        .collect();
    routes.extend(preflight_route(plan));
    routes.extend(plan.kg.direct_routes.iter().cloned());
    routes.push(json!({
        "name": "catch_all",
        "match": {"prefix": "/"},
        "direct_response": {
            "status": 404,
            "body": {"inline_string": "{\"error\":{\"message\":\"No route matches this request\",\"type\":\"invalid_request_error\",\"code\":\"route_not_found\"}}"},
        },
        "response_headers_to_add": [
            {"header": {"key": "content-type", "value": "application/json"}, "append_action": "OVERWRITE_IF_EXISTS_OR_ADD"}
        ],
    }));

    let mut hcm = json!({
        "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
        "stat_prefix": "aigw",
        "preserve_external_request_id": true,
        "stream_idle_timeout": "300s",
        "access_log": [access_log(plan, o, diags)],
        "http_filters": http_filters(plan, filter("aigw")),
        "route_config": {
            "name": "aigw",
            "virtual_hosts": [{"name": "aigw", "domains": ["*"], "routes": routes}],
        },
    });
    if plan.quota.fleet() {
        // The rate-limit filter's own answers in the client's schema.
        hcm["local_reply_config"] = quota::local_reply_config();
    }

    let upstream_filter = filter("aigw_upstream");
    let mut clusters: Vec<Value> = plan
        .routes
        .iter()
        .flat_map(|r| {
            let upstream = !(inline && r.backends.len() == 1);
            rule_clusters(
                plan,
                r,
                upstream.then_some(&upstream_filter),
                &upstream_filter,
                o,
            )
        })
        .collect();
    clusters.extend(plan.kg.clusters.iter().cloned());
    clusters.extend(token_clusters(tokens, &o.ca_bundle));
    if let (true, Some(s)) = (plan.quota.fleet(), &plan.quota.service) {
        clusters.push(quota::cluster(s));
    }
    let mut listener = json!({
        "name": "aigw",
        "address": {"socket_address": {"address": o.listen_address, "port_value": o.listen_port}},
        "filter_chains": [{"filters": [{
            "name": "envoy.filters.network.http_connection_manager",
            "typed_config": hcm,
        }]}],
    });
    if let Some(n) = plan.kg.buffer_limit {
        listener["per_connection_buffer_limit_bytes"] = json!(n);
    }

    let mut root = Map::new();
    if let Some(port) = o.admin_port {
        root.insert(
            "admin".into(),
            json!({"address": {"socket_address": {"address": "127.0.0.1", "port_value": port}}}),
        );
    }
    root.insert(
        "static_resources".into(),
        json!({
            "listeners": [listener],
            "clusters": clusters,
        }),
    );
    Value::Object(root)
}

/// The same bootstrap loading `aigw.wasm` (proxy-wasm) instead of the dynamic
/// module: both filter instances become `envoy.filters.http.wasm` with the role in
/// `root_id`, access-log fields read filter state (proxy-wasm cannot write
/// dynamic metadata), and the listener and the backend clusters get a connection
/// buffer limit above the body limit (proxy-wasm cannot raise the per-stream one,
/// and past Envoy's 1 MiB default Envoy would answer 413 itself).
pub(crate) fn wasm_variant(
    native: &Value,
    config_json: &str,
    host_env: &[String],
    body_limit: u64,
    o: &Options,
) -> Value {
    let wasm = |root_id: &str| {
        let mut vm = json!({
            "vm_id": "aigw",
            "runtime": "envoy.wasm.runtime.v8",
            "code": {"local": {"filename": o.wasm_path}},
        });
        if !host_env.is_empty() {
            // The VM sees only the variables listed here: the credentials.
            vm["environment_variables"] = json!({"host_env_keys": host_env});
        }
        json!({
            "@type": "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm",
            "config": {
                "name": root_id,
                "root_id": root_id,
                // Without it a pause on request headers becomes StopAllIteration
                // and the body hook never runs (Envoy 1.35 and later).
                "allow_on_headers_stop_iteration": true,
                "vm_config": vm,
                "configuration": {
                    "@type": "type.googleapis.com/google.protobuf.StringValue",
                    "value": config_json,
                },
            },
        })
    };
    let buffer = body_limit.max(ENVOY_DEFAULT_BUFFER) + BUFFER_HEADROOM;
    let swap = |filters: &mut Value, name: &str| -> bool {
        let mut found = false;
        for f in filters.as_array_mut().into_iter().flatten() {
            if f["name"] == json!(name) {
                f["typed_config"] = wasm(name);
                found = true;
            }
        }
        found
    };
    let mut boot = native.clone();
    let resources = &mut boot["static_resources"];
    for l in resources["listeners"].as_array_mut().into_iter().flatten() {
        l["per_connection_buffer_limit_bytes"] = json!(buffer);
        let hcm = &mut l["filter_chains"][0]["filters"][0]["typed_config"];
        swap(&mut hcm["http_filters"], "aigw");
        let fields = &mut hcm["access_log"][0]["typed_config"]["log_format"]["json_format"];
        for v in fields
            .as_object_mut()
            .into_iter()
            .flat_map(|m| m.values_mut())
        {
            if let Some(key) = v
                .as_str()
                .and_then(|s| s.strip_prefix(&format!("%DYNAMIC_METADATA({METADATA_NAMESPACE}:")))
                .and_then(|s| s.strip_suffix(")%"))
            {
                *v = json!(format!(
                    "%FILTER_STATE(wasm.{METADATA_NAMESPACE}.{key}:PLAIN)%"
                ));
            }
        }
        // Fleet mode: the descriptors and charges, from filter state too.
        for vh in hcm["route_config"]["virtual_hosts"]
            .as_array_mut()
            .into_iter()
            .flatten()
        {
            for route in vh["routes"].as_array_mut().into_iter().flatten() {
                let path = format!(
                    "/typed_per_filter_config/{}/rate_limits",
                    quota::RATELIMIT_FILTER
                );
                let limits = route.pointer_mut(&path).and_then(Value::as_array_mut);
                for l in limits.into_iter().flatten() {
                    quota::wasm_rate_limit(l);
                }
            }
        }
    }
    for c in resources["clusters"].as_array_mut().into_iter().flatten() {
        let filters = c
            .pointer_mut("/typed_extension_protocol_options/envoy.extensions.upstreams.http.v3.HttpProtocolOptions/http_filters");
        if filters.is_some_and(|f| swap(f, "aigw_upstream")) {
            c["per_connection_buffer_limit_bytes"] = json!(buffer);
        }
    }
    boot
}

/// One Envoy route per match of the rule: Gateway API ORs matches, ANDs headers.
fn envoy_routes(plan: &Plan, r: &PlanRoute, inline: bool) -> Vec<Value> {
    // Where the router-level instance did the upstream work, it signed for the
    // backend's host but left the Host header to the route (Envoy picked the route
    // on the client's Host): the route rewrites it to that host, whatever the
    // endpoint is (an IP address has no host name to rewrite to). Where the
    // cluster's upstream instance does the work, it sets `:authority` per attempt,
    // for the backend that attempt reaches, and signs over it: the route must
    // leave it alone (Envoy's `auto_host_rewrite` applies the endpoint's host
    // name, port-less, when the connection is ready, which can be after the
    // upstream instance has set and signed it).
    let inline_backend = match r.backends.as_slice() {
        [only] if inline => Some(&plan.backends[only.backend]),
        _ => None,
    };
    let signed_host = inline_backend.and_then(crate::compile::signed_host);
    r.matches
        .iter()
        .map(|(model, extra)| {
            let mut headers = vec![json!({"name": MODEL_HEADER, "string_match": {"exact": model}})];
            headers.extend(
                extra
                    .iter()
                    .map(|(n, v)| json!({"name": n, "string_match": {"exact": v}})),
            );
            let mut action = Map::new();
            action.insert("cluster".into(), json!(r.name));
            action.insert("timeout".into(), json!(envoy_duration(r.timeout_ms)));
            if !r.mirrors.is_empty() {
                // Every request, copied; the mirrors' answers are dropped.
                let mirrors: Vec<Value> = (0..r.mirrors.len())
                    .map(|i| json!({"cluster": mirror_cluster(r, i)}))
                    .collect();
                action.insert("request_mirror_policies".into(), Value::Array(mirrors));
            }
            match (&signed_host, inline_backend) {
                (Some(h), _) => {
                    action.insert("host_rewrite_literal".into(), json!(h));
                }
                // No host the filter signs for (no endpoint at all): the endpoint's.
                (None, Some(_)) => {
                    action.insert("auto_host_rewrite".into(), json!(true));
                }
                (None, None) => {}
            }
            let mut retry = Map::new();
            if let Some(ms) = r.per_try_timeout_ms {
                // Without retry_on there are no retries, only the per-attempt bound.
                retry.insert("per_try_timeout".into(), json!(envoy_duration(ms)));
            }
            let levels = r.priority_levels().len();
            // Fallback backends are tried on failure: one retry per lower level
            // unless the resource says how many.
            let retries = r
                .num_retries
                .or((levels > 1).then(|| levels as u32 - 1))
                .filter(|&n| n > 0);
            if let Some(n) = retries {
                retry.insert("retry_on".into(), json!(RETRY_ON));
                retry.insert("retriable_status_codes".into(), json!(RETRY_STATUS_CODES));
                retry.insert("num_retries".into(), json!(n));
            }
            if let Some(Value::Object(kg)) = &r.extra.retry {
                retry = kg.clone();
            }
            if retry.contains_key("retry_on") {
                // Another host, and with priorities the next level: a retry is
                // meant to land on another provider.
                retry.entry("retry_host_predicate").or_insert_with(|| {
                    json!([{"name": "envoy.retry_host_predicates.previous_hosts", "typed_config": {
                        "@type": "type.googleapis.com/envoy.extensions.retry.host.previous_hosts.v3.PreviousHostsPredicate"
                    }}])
                });
                retry
                    .entry("host_selection_retry_max_attempts")
                    .or_insert(json!(5));
                if levels > 1 {
                    retry.entry("retry_priority").or_insert_with(|| {
                        json!({"name": "envoy.retry_priorities.previous_priorities", "typed_config": {
                            "@type": "type.googleapis.com/envoy.extensions.retry.priority.previous_priorities.v3.PreviousPrioritiesConfig",
                            "update_frequency": 1
                        }})
                    });
                }
            }
            if !retry.is_empty() {
                action.insert("retry_policy".into(), Value::Object(retry));
            }
            if let Some(ms) = r.extra.timeout_ms {
                action.insert("timeout".into(), json!(envoy_duration(ms)));
            }
            if let Some(ms) = r.extra.idle_timeout_ms {
                action.insert("idle_timeout".into(), json!(envoy_duration(ms)));
            }
            let mut route = json!({
                "name": r.name,
                "match": {"prefix": "/", "headers": headers},
                "route": Value::Object(action),
            });
            apply_extra(&mut route, &r.extra);
            if plan.quota.fleet() {
                let rate_limits = quota::route_rate_limits(r);
                if !rate_limits.is_empty() {
                    route["typed_per_filter_config"][quota::RATELIMIT_FILTER] = json!({
                        "@type": "type.googleapis.com/envoy.extensions.filters.http.ratelimit.v3.RateLimitPerRoute",
                        "rate_limits": rate_limits,
                    });
                }
            }
            route
        })
        .collect()
}

/// Rule `r`'s cluster and one per backend it mirrors requests to.
fn rule_clusters(
    plan: &Plan,
    r: &PlanRoute,
    upstream_filter: Option<&Value>,
    upstream: &Value,
    o: &Options,
) -> Vec<Value> {
    let mut out = vec![cluster(
        plan,
        &r.name,
        &r.backends,
        r.least_request,
        upstream_filter,
        o,
    )];
    for (i, m) in r.mirrors.iter().enumerate() {
        // A mirror gets the client's request: its own upstream instance translates.
        let only = std::slice::from_ref(m);
        out.push(cluster(
            plan,
            &mirror_cluster(r, i),
            only,
            false,
            Some(upstream),
            o,
        ));
    }
    out
}

/// The cluster of rule `r`'s `i`th mirror backend.
fn mirror_cluster(r: &PlanRoute, i: usize) -> String {
    format!("{}/mirror/{i}", r.name)
}

fn cluster(
    plan: &Plan,
    name: &str,
    backends: &[PlanRouteBackend],
    least_request: bool,
    upstream_filter: Option<&Value>,
    o: &Options,
) -> Value {
    // Envoy wants priorities 0..N without gaps; keep their order.
    let levels = priority_levels(backends);
    let level = |p: u32| levels.iter().position(|&l| l == p).unwrap_or(0);

    let mut localities = Vec::new();
    let mut tls_matches = Vec::new();
    let mut dns = false;
    for rb in backends {
        // Weight 0 means no traffic (Gateway API); Envoy refuses a zero locality weight.
        if rb.weight == 0 {
            continue;
        }
        let b = &plan.backends[rb.backend];
        // SNI is per endpoint (the TLS hostname, else the endpoint's own name):
        // one socket per distinct name, keyed by the backend when it has one.
        let snis: Vec<Option<&str>> = b
            .endpoints
            .iter()
            .map(|e| match &e.address {
                Address::Fqdn(h) => Some(h.as_str()),
                Address::Ip(_) => None,
            })
            .map(|h| b.tls.as_ref().and_then(|t| t.hostname.as_deref()).or(h))
            .collect();
        let one_name = snis.iter().all(|n| *n == snis[0]);
        let match_key = |sni: Option<&str>| match (one_name, sni) {
            (false, Some(n)) => format!("{}|{n}", b.name),
            _ => b.name.clone(),
        };
        let lb_endpoints: Vec<Value> = b
            .endpoints
            .iter()
            .zip(&snis)
            .map(|(e, sni)| {
                let (address, hostname) = match &e.address {
                    Address::Fqdn(h) => {
                        dns = true;
                        (h.as_str(), Some(h.as_str()))
                    }
                    Address::Ip(a) => (a.as_str(), None),
                };
                let mut md = Map::new();
                md.insert(METADATA_NAMESPACE.into(), json!({BACKEND_KEY: b.name}));
                if let Some(t) = &b.tls {
                    let key = match_key(*sni);
                    if !tls_matches.iter().any(|m: &Value| m["name"] == json!(key)) {
                        tls_matches.push(json!({
                            "name": key,
                            "match": {TLS_MATCH_KEY: key},
                            "transport_socket": tls_socket(*sni, t, &o.ca_bundle),
                        }));
                    }
                    md.insert(
                        "envoy.transport_socket_match".into(),
                        json!({TLS_MATCH_KEY: key}),
                    );
                }
                let mut endpoint = Map::new();
                endpoint.insert(
                    "address".into(),
                    json!({"socket_address": {"address": address, "port_value": e.port}}),
                );
                if let Some(h) = hostname {
                    endpoint.insert("hostname".into(), json!(h));
                }
                json!({
                    "endpoint": Value::Object(endpoint),
                    "metadata": {"filter_metadata": Value::Object(md)},
                })
            })
            .collect();
        localities.push(json!({
            "locality": {"sub_zone": b.name},
            "priority": level(rb.priority),
            "load_balancing_weight": rb.weight,
            "lb_endpoints": lb_endpoints,
        }));
    }

    let mut c = Map::new();
    c.insert("name".into(), json!(name));
    c.insert(
        "type".into(),
        json!(if dns { "STRICT_DNS" } else { "STATIC" }),
    );
    if dns {
        c.insert("dns_lookup_family".into(), json!("V4_PREFERRED"));
    }
    c.insert("connect_timeout".into(), json!("10s"));
    let lb = if least_request {
        "LEAST_REQUEST"
    } else {
        "ROUND_ROBIN"
    };
    c.insert("lb_policy".into(), json!(lb));
    c.insert(
        "common_lb_config".into(),
        json!({"locality_weighted_lb_config": {}}),
    );
    c.insert(
        "load_assignment".into(),
        json!({"cluster_name": name, "endpoints": localities}),
    );
    if !tls_matches.is_empty() {
        c.insert("transport_socket_matches".into(), Value::Array(tls_matches));
    }
    let mut options = json!({
        "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
        "explicit_http_config": {"http_protocol_options": {}},
    });
    if let Some(f) = upstream_filter {
        options["http_filters"] = upstream_http_filters(f.clone());
    }
    c.insert(
        "typed_extension_protocol_options".into(),
        json!({"envoy.extensions.upstreams.http.v3.HttpProtocolOptions": options}),
    );
    Value::Object(c)
}

/// The clusters through which the filter's credential exchanges reach the token
/// services (Entra ID, Google OAuth/STS/IAM credentials, AWS STS, OIDC
/// providers), one per host, named as the filter config names them: a host name
/// resolved as a logical DNS name, an IP address as a static endpoint; with TLS,
/// SNI and the certificate's name are the host's, checked against `ca_bundle`.
pub(crate) fn token_clusters(tokens: &BTreeMap<String, TokenHost>, ca_bundle: &str) -> Vec<Value> {
    tokens
        .iter()
        .map(|(name, h)| {
            let ip = h.is_ip();
            let mut c = Map::new();
            c.insert("name".into(), json!(name));
            c.insert(
                "type".into(),
                json!(if ip { "STATIC" } else { "LOGICAL_DNS" }),
            );
            if !ip {
                c.insert("dns_lookup_family".into(), json!("V4_PREFERRED"));
            }
            c.insert("connect_timeout".into(), json!("10s"));
            c.insert("lb_policy".into(), json!("ROUND_ROBIN"));
            let mut endpoint = json!({"address": {"socket_address": {"address": h.host, "port_value": h.port}}});
            if !ip {
                endpoint["hostname"] = json!(h.host);
            }
            c.insert(
                "load_assignment".into(),
                json!({"cluster_name": name, "endpoints": [{"lb_endpoints": [{"endpoint": endpoint}]}]}),
            );
            if h.tls {
                let sni = (!ip).then_some(h.host.as_str());
                c.insert(
                    "transport_socket".into(),
                    tls_socket(sni, &crate::resources::Tls::default(), ca_bundle),
                );
            }
            Value::Object(c)
        })
        .collect()
}

/// A cluster's upstream HTTP filters: the upstream instance (`typed_config`: the
/// module filter with its config), then the codec Envoy requires last.
pub(crate) fn upstream_http_filters(typed_config: Value) -> Value {
    json!([
        {"name": "aigw_upstream", "typed_config": typed_config},
        {"name": "envoy.filters.http.upstream_codec", "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.upstream_codec.v3.UpstreamCodec"
        }},
    ])
}

/// Upstream TLS with SNI `sni`, verified against the system CAs and `sni` as the
/// certificate's name (unless verification is off).
fn tls_socket(sni: Option<&str>, t: &crate::resources::Tls, ca_bundle: &str) -> Value {
    let mut common = Map::new();
    if !t.insecure {
        let mut validation = Map::new();
        validation.insert("trusted_ca".into(), json!({"filename": ca_bundle}));
        if let Some(h) = sni {
            validation.insert(
                "match_typed_subject_alt_names".into(),
                json!([{"san_type": "DNS", "matcher": {"exact": h}}]),
            );
        }
        common.insert("validation_context".into(), Value::Object(validation));
    }
    let mut ctx = Map::new();
    ctx.insert(
        "@type".into(),
        json!("type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext"),
    );
    if let Some(h) = sni {
        ctx.insert("sni".into(), json!(h));
    }
    ctx.insert("common_tls_context".into(), Value::Object(common));
    json!({"name": "envoy.transport_sockets.tls", "typed_config": Value::Object(ctx)})
}

fn access_log(plan: &Plan, o: &Options, diags: &mut Vec<Diagnostic>) -> Value {
    let mut fields = Map::new();
    for (k, v) in [
        ("start_time", "%START_TIME%"),
        ("request_id", "%REQ(X-REQUEST-ID)%"),
        ("method", "%REQ(:METHOD)%"),
        ("path", "%REQ(:PATH)%"),
        ("status", "%RESPONSE_CODE%"),
        ("response_code_details", "%RESPONSE_CODE_DETAILS%"),
        ("response_flags", "%RESPONSE_FLAGS%"),
        ("upstream_cluster", "%UPSTREAM_CLUSTER%"),
        ("upstream_host", "%UPSTREAM_HOST%"),
        ("duration_ms", "%DURATION%"),
        ("routed_model", "%REQ(X-AI-EG-MODEL)%"),
    ] {
        fields.insert(k.into(), json!(v));
    }
    let costs = plan
        .routes
        .iter()
        .flat_map(|r| r.costs.iter().map(move |c| (r, c)));
    let mut keys: Vec<(String, Option<(&PlanRoute, String)>)> = FILTER_METADATA_KEYS
        .iter()
        .map(|k| (k.to_string(), None))
        .collect();
    for (r, c) in costs {
        if !keys.iter().any(|(k, _)| *k == c.metadata_key) {
            keys.push((c.metadata_key.clone(), Some((r, c.path.clone()))));
        }
    }
    // A route's fixed metadata (a generic route's tenant).
    for r in &plan.routes {
        for (k, _) in &r.metadata {
            if !keys.iter().any(|(have, _)| have == k) {
                keys.push((k.clone(), None));
            }
        }
    }
    for (key, from) in keys {
        let usable = !key.contains([':', '(', ')', '%']);
        if !usable || fields.contains_key(&key) {
            if let Some((r, path)) = from {
                diags.push(Diagnostic {
                    severity: Severity::Warning,
                    source: r.origin.0.clone(),
                    resource: Some(r.origin.1.clone()),
                    path: format!("{path}.metadataKey"),
                    message: format!("metadata key '{key}' is left out of the access log (name clash or unusable characters)"),
                });
            }
            continue;
        }
        fields.insert(
            key.clone(),
            json!(format!("%DYNAMIC_METADATA({METADATA_NAMESPACE}:{key})%")),
        );
    }
    json!({
        "name": "envoy.access_loggers.file",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog",
            "path": o.access_log_path,
            "log_format": {"json_format": Value::Object(fields)},
        },
    })
}

/// ext_authz and ext_proc (from kgateway policies) run before the filter, so a
/// denied request never reaches it. CORS runs twice: before the filter to answer
/// preflights (they carry no model; see [`preflight_route`]), and after it, once
/// the model has picked the route, to add the response headers. Envoy's CORS
/// filter skips routes without a route entry, such as the catch-all.
fn http_filters(plan: &Plan, aigw: Value) -> Vec<Value> {
    let cors = |name: &str| {
        json!({"name": name, "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.cors.v3.Cors"
        }})
    };
    let mut out = Vec::new();
    if plan.kg.cors {
        out.push(cors(CORS_FILTER));
    }
    out.extend(plan.kg.filters.iter().cloned());
    out.push(json!({"name": "aigw", "typed_config": aigw}));
    if plan.quota.fleet() {
        // After the filter: it holds the request until it has routed it and
        // written the descriptors' values, and the rate-limit filter asks when
        // the request goes on.
        out.push(quota::http_filter(&plan.quota));
    }
    if plan.kg.cors {
        out.push(cors(CORS_AFTER_FILTER));
    }
    out.push(
        json!({"name": "envoy.filters.http.router", "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"
        }}),
    );
    out
}

const CORS_FILTER: &str = "envoy.filters.http.cors";
const CORS_AFTER_FILTER: &str = "aigw_cors";

/// A route for CORS preflights (OPTIONS with `access-control-request-method`),
/// which carry no model: the first CORS policy answers them in the CORS filter
/// before `aigw`; the cluster is never reached when the origin is allowed.
fn preflight_route(plan: &Plan) -> Option<Value> {
    let policy = plan.kg.vhost_cors.as_ref()?;
    let cluster = plan.routes.iter().find(|r| r.extra.cors.is_some())?;
    Some(json!({
        "name": "cors_preflight",
        "match": {"prefix": "/", "headers": [
            {"name": ":method", "string_match": {"exact": "OPTIONS"}},
            {"name": "access-control-request-method", "present_match": true},
        ]},
        "route": {"cluster": cluster.name},
        "typed_per_filter_config": {CORS_FILTER: policy},
    }))
}

/// kgateway TrafficPolicy settings on an Envoy route: CORS and header changes.
fn apply_extra(route: &mut Value, x: &crate::kgateway::RouteExtra) {
    if let Some(c) = &x.cors {
        route["typed_per_filter_config"] = json!({CORS_FILTER: c, CORS_AFTER_FILTER: c});
    }
    for (key, v) in [
        ("request_headers_to_add", &x.request_add),
        ("response_headers_to_add", &x.response_add),
    ] {
        if !v.is_empty() {
            route[key] = json!(v);
        }
    }
    for (key, v) in [
        ("request_headers_to_remove", &x.request_remove),
        ("response_headers_to_remove", &x.response_remove),
    ] {
        if !v.is_empty() {
            route[key] = json!(v);
        }
    }
}
