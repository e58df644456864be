//! Limits and budgets: every refused input names its field (or the option), in
//! embedded and fleet mode; and what the fleet-mode outputs promise (the service's
//! configuration and the bootstrap's descriptors agree, Limitador gets what it
//! can count).

use aigw_cli::quota::{Quota, Scope};
use aigw_cli::{compile_with, manifest, Diagnostic, Options};

const GENERIC: &str = "
name: chat
modelAlias: chat
backends:
  - provider: openai
    model: gpt-4o-mini
rateLimit:
  requestsPerMinute: 60
  tokensPerMinute: 100000
budget:
  currency: USD
  limit: 200
  period: monthly
";

const KGATEWAY: &str = "
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: chat, namespace: default}
spec:
  rules:
    - matches: [{headers: [{type: Exact, name: x-ai-eg-model, value: gpt-4o-mini}]}]
      backendRefs: [{group: gateway.kgateway.dev, kind: AIBackend, name: openai}]
---
apiVersion: gateway.kgateway.dev/v1alpha1
kind: AIBackend
metadata: {name: openai, namespace: default}
spec:
  provider: {type: openai, openai: {model: gpt-4o-mini}}
---
apiVersion: gateway.kgateway.dev/v1alpha1
kind: GatewayExtension
metadata: {name: rls, namespace: default}
spec:
  type: RateLimit
  rateLimit:
    grpcService: {backendRef: {name: ratelimit, port: 8081}}
---
apiVersion: gateway.kgateway.dev/v1alpha1
kind: TrafficPolicy
metadata: {name: limits, namespace: default}
spec:
  targetRefs: [{group: gateway.networking.k8s.io, kind: HTTPRoute, name: chat}]
  rateLimit:
    global:
      extensionRef: {name: rls}
      descriptors: [{entries: [{type: Header, header: x-api-key}]}]
";

const EAIG: &str = "
apiVersion: aigateway.envoyproxy.io/v1alpha1
kind: AIGatewayRoute
metadata: {name: chat, namespace: default}
spec:
  rules:
    - matches: [{headers: [{type: Exact, name: x-ai-eg-model, value: gpt-4o}]}]
      backendRefs: [{name: openai}]
  llmRequestCosts: [{metadataKey: llm_total_token, type: TotalToken}]
---
apiVersion: aigateway.envoyproxy.io/v1alpha1
kind: AIServiceBackend
metadata: {name: openai, namespace: default}
spec:
  schema: {name: OpenAI}
  backendRef: {name: openai, kind: Backend, group: gateway.envoyproxy.io}
---
apiVersion: gateway.envoyproxy.io/v1alpha1
kind: Backend
metadata: {name: openai, namespace: default}
spec:
  endpoints: [{fqdn: {hostname: api.openai.com, port: 443}}]
";

fn fleet() -> Options {
    Options {
        quota: Some(Quota::Fleet),
        rate_limit_service: Some("127.0.0.1:8081".into()),
        ..Options::default()
    }
}

fn diagnostics(yaml: &str, o: &Options) -> (bool, Vec<Diagnostic>) {
    let (ms, mut diags) = manifest::parse_yaml("input.yaml", yaml);
    assert!(diags.is_empty(), "{diags:?}");
    match compile_with(&ms, o) {
        Ok(out) => {
            diags.extend(out.warnings);
            (true, diags)
        }
        Err(ds) => (false, ds),
    }
}

/// `yaml` with `o` fails with an error of resource `kind` ("" for an option) at
/// `path` whose message holds `fragment`.
fn assert_error(yaml: &str, o: &Options, kind: &str, path: &str, fragment: &str) {
    let (ok, diags) = diagnostics(yaml, o);
    let hit = diags.iter().any(|d| {
        d.is_error()
            && d.path == path
            && d.message.contains(fragment)
            && d.resource.as_ref().map_or("", |r| r.kind.as_str()) == kind
    });
    let got: Vec<String> = diags.iter().map(ToString::to_string).collect();
    assert!(
        !ok && hit,
        "no error {kind} {path} ~ '{fragment}'; got:\n  {}",
        got.join("\n  ")
    );
}

fn with(base: &str, from: &str, to: &str) -> String {
    assert!(base.contains(from), "{from}");
    base.replace(from, to)
}

#[test]
fn fleet_mode_needs_a_rate_limit_service() {
    let o = Options {
        quota: Some(Quota::Fleet),
        ..Options::default()
    };
    assert_error(GENERIC, &o, "", "--rate-limit-service", "fleet mode");
    let bad = Options {
        rate_limit_service: Some("ratelimit".into()),
        ..fleet()
    };
    assert_error(
        GENERIC,
        &bad,
        "",
        "--rate-limit-service",
        "is not HOST:PORT",
    );
    // Without fleet mode the address is only a warning.
    let o = Options {
        rate_limit_service: Some("127.0.0.1:8081".into()),
        ..Options::default()
    };
    let (ok, diags) = diagnostics(GENERIC, &o);
    assert!(ok);
    assert!(diags
        .iter()
        .any(|d| d.path == "--rate-limit-service" && d.message.contains("fleet mode only")));
}

#[test]
fn budget_fields_are_refused_at_their_path() {
    let o = Options::default();
    let cases = [
        (
            "currency: USD",
            "currency: XYZ",
            "budget.currency",
            "not an ISO 4217",
        ),
        (
            "currency: USD",
            "currency: usd",
            "budget.currency",
            "not an ISO 4217",
        ),
        ("  currency: USD\n", "", "budget.currency", "is required"),
        ("limit: 200", "limit: -5", "budget.limit", "above 0"),
        ("limit: 200", "limit: 0", "budget.limit", "above 0"),
        (
            "limit: 200",
            "limit: lots",
            "budget.limit",
            "must be a number",
        ),
        (
            "period: monthly",
            "period: hourly",
            "budget.period",
            "daily, weekly or monthly",
        ),
        (
            "period: monthly",
            "period: quarterly",
            "budget.period",
            "daily, weekly or monthly",
        ),
        (
            "period: monthly",
            "period: monthly\n  action: pray",
            "budget.action",
            "expected one of",
        ),
        (
            "tokensPerMinute: 100000",
            "tokensPerMinute: -1",
            "rateLimit.tokensPerMinute",
            "between 1",
        ),
        (
            "requestsPerMinute: 60",
            "requestsPerMinute: 0",
            "rateLimit.requestsPerMinute",
            "between 1",
        ),
    ];
    for (from, to, path, fragment) in cases {
        let yaml = with(GENERIC, from, to);
        assert_error(&yaml, &o, "AIGatewayRoute", path, fragment);
        assert_error(&yaml, &fleet(), "AIGatewayRoute", path, fragment);
    }
}

#[test]
fn fleet_mode_refuses_what_a_rate_limit_service_cannot_count() {
    // Throttling needs a limit that starts when another is spent.
    let throttle = with(
        GENERIC,
        "period: monthly",
        "period: monthly\n  action: throttle",
    );
    assert!(diagnostics(&throttle, &Options::default()).0);
    assert_error(
        &throttle,
        &fleet(),
        "AIGatewayRoute",
        "budget.action",
        "fleet mode cannot throttle",
    );
    // 32-bit counts: micro-units of a budget, tokens per minute.
    let big = with(GENERIC, "limit: 200", "limit: 5000");
    assert!(diagnostics(&big, &Options::default()).0);
    assert_error(
        &big,
        &fleet(),
        "AIGatewayRoute",
        "budget.limit",
        "micro-units",
    );
    let many = with(
        GENERIC,
        "tokensPerMinute: 100000",
        "tokensPerMinute: 5000000000",
    );
    assert_error(
        &many,
        &fleet(),
        "AIGatewayRoute",
        "rateLimit.tokensPerMinute",
        "32-bit",
    );
}

#[test]
fn identity_options_are_checked() {
    let o = Options {
        limits_per: Scope::Identity,
        ..Options::default()
    };
    assert_error(
        GENERIC,
        &o,
        "",
        "--identity-header",
        "--identity-header NAME",
    );
    let o = Options {
        identity_header: Some("x api key".into()),
        ..Options::default()
    };
    assert_error(GENERIC, &o, "", "--identity-header", "not a header name");
    let o = Options {
        rate_limit_domain: Some("".into()),
        ..fleet()
    };
    assert_error(
        GENERIC,
        &o,
        "",
        "--rate-limit-domain",
        "not a rate-limit domain",
    );
    // Per tenant needs the route's tenant (the filter's own rule).
    let o = Options {
        limits_per: Scope::Tenant,
        ..Options::default()
    };
    assert_error(
        GENERIC,
        &o,
        "AIGatewayRoute",
        "tenant",
        "--limits-per tenant",
    );
}

#[test]
fn kgateway_rate_limit_service_rules() {
    let (ok, diags) = diagnostics(KGATEWAY, &Options::default());
    assert!(ok, "{diags:?}");
    let embedded = Options {
        quota: Some(Quota::Embedded),
        ..Options::default()
    };
    assert_error(
        KGATEWAY,
        &embedded,
        "TrafficPolicy",
        "spec.rateLimit.global.extensionRef",
        "--quota embedded",
    );
    let no_port = with(KGATEWAY, "name: ratelimit, port: 8081", "name: ratelimit");
    assert_error(
        &no_port,
        &Options::default(),
        "GatewayExtension",
        "spec.rateLimit.grpcService.backendRef.port",
        "is required",
    );
    let no_descriptors = with(
        KGATEWAY,
        "descriptors: [{entries: [{type: Header, header: x-api-key}]}]",
        "descriptors: []",
    );
    assert_error(
        &no_descriptors,
        &Options::default(),
        "TrafficPolicy",
        "spec.rateLimit.global.descriptors",
        "at least 1",
    );
    let bad_entry = with(
        KGATEWAY,
        "{type: Header, header: x-api-key}",
        "{type: Header}",
    );
    assert_error(
        &bad_entry,
        &Options::default(),
        "TrafficPolicy",
        "spec.rateLimit.global.descriptors[0].entries[0].header",
        "is required with type Header",
    );
    let other_kind = with(
        KGATEWAY,
        "{name: ratelimit, port: 8081}",
        "{name: ratelimit, port: 8081, group: example.com, kind: Thing}",
    );
    assert_error(
        &other_kind,
        &Options::default(),
        "GatewayExtension",
        "spec.rateLimit.grpcService.backendRef",
        "gives the compiler no address",
    );
    let missing = with(
        KGATEWAY,
        "extensionRef: {name: rls}",
        "extensionRef: {name: nope}",
    );
    assert_error(
        &missing,
        &Options::default(),
        "TrafficPolicy",
        "spec.rateLimit.global.extensionRef.name",
        "not found",
    );
}

#[test]
fn envoy_ai_gateway_limits_are_checked_and_mapped() {
    let btp = |rule: &str| {
        format!(
            "{EAIG}---
apiVersion: gateway.envoyproxy.io/v1alpha1
kind: BackendTrafficPolicy
metadata: {{name: limits, namespace: default}}
spec:
  targetRefs: [{{group: gateway.networking.k8s.io, kind: HTTPRoute, name: chat}}]
  rateLimit:
    type: Global
    global:
      rules: [{rule}]
"
        )
    };
    assert_error(
        &btp("{limit: {requests: 10, unit: Fortnight}}"),
        &Options::default(),
        "BackendTrafficPolicy",
        "spec.rateLimit.global.rules[0].limit.unit",
        "expected one of",
    );
    assert_error(
        &btp("{}"),
        &Options::default(),
        "BackendTrafficPolicy",
        "spec.rateLimit.global.rules[0].limit",
        "is required",
    );
    // A token limit per x-user-id: mapped, the header becomes the identity.
    let tokens = "{clientSelectors: [{headers: [{name: x-user-id, type: Distinct}]}], limit: {requests: 1000, unit: Minute}, cost: {request: {from: Number, number: 0}, response: {from: Metadata, metadata: {namespace: io.envoy.ai_gateway, key: llm_total_token}}}}";
    let (ms, _) = manifest::parse_yaml("input.yaml", &btp(tokens));
    let out = compile_with(&ms, &Options::default()).unwrap();
    assert_eq!(out.config["identity"]["header"], "x-user-id");
    assert_eq!(
        out.config["routes"][0]["rateLimit"],
        serde_json::json!({"tokensPerMinute": 1000, "per": "identity"})
    );
    // ... unless another identity header is configured: not enforced, with a warning.
    let o = Options {
        identity_header: Some("x-api-key".into()),
        ..Options::default()
    };
    let out = compile_with(&ms, &o).unwrap();
    assert!(out.config["routes"][0]["rateLimit"].is_null());
    assert_eq!(out.not_enforced.len(), 1);
    assert!(out
        .warnings
        .iter()
        .any(|d| d.path == "spec.rateLimit.global.rules[0]" && d.message.contains("one header")));

    let quota = |spec: &str| {
        format!(
            "{EAIG}---
apiVersion: aigateway.envoyproxy.io/v1alpha1
kind: QuotaPolicy
metadata: {{name: quota, namespace: default}}
spec:
  targetRefs: [{{group: aigateway.envoyproxy.io, kind: AIServiceBackend, name: openai}}]
{spec}
"
        )
    };
    assert_error(
        &quota("  serviceQuota: {quota: {duration: 1w, limit: 10}}"),
        &Options::default(),
        "QuotaPolicy",
        "spec.serviceQuota.quota.duration",
        "expected one of",
    );
    let wrong_target = with(
        &quota("  serviceQuota: {quota: {duration: 1m, limit: 10}}"),
        "kind: AIServiceBackend, name: openai",
        "kind: Backend, name: openai",
    );
    assert_error(
        &wrong_target,
        &Options::default(),
        "QuotaPolicy",
        "spec.targetRefs[0]",
        "AIServiceBackend",
    );
    let (ms, _) = manifest::parse_yaml(
        "input.yaml",
        &quota("  serviceQuota: {quota: {duration: 1m, limit: 5000}}"),
    );
    let out = compile_with(&ms, &Options::default()).unwrap();
    assert_eq!(
        out.config["routes"][0]["rateLimit"],
        serde_json::json!({"tokensPerMinute": 5000})
    );
    let (ms, _) = manifest::parse_yaml(
        "input.yaml",
        &quota(
            "  serviceQuota: {costExpression: input_tokens, quota: {duration: 1m, limit: 5000}}",
        ),
    );
    let out = compile_with(&ms, &Options::default()).unwrap();
    assert!(out.config["routes"][0]["rateLimit"].is_null());
    assert_eq!(out.not_enforced[0]["field"], "spec.serviceQuota");
}

/// Every descriptor the bootstrap sends for a route's limits has a limit in
/// ratelimit-config.yaml at exactly its depth, and the charges read the keys the
/// filter writes.
#[test]
fn fleet_descriptors_match_the_service_configuration() {
    let yaml = format!(
        "{GENERIC}tenant: team-a\n---\nname: daily\nmodelAlias: daily\nbackends: [{{provider: openai, model: gpt-4o}}]\nbudget: {{currency: EUR, limit: 1.25, period: daily, action: alert}}\ntenant: team-b\n"
    );
    for per in [Scope::Route, Scope::Tenant, Scope::Identity] {
        let o = Options {
            limits_per: per,
            identity_header: Some("x-api-key".into()),
            ..fleet()
        };
        let (ms, _) = manifest::parse_yaml("input.yaml", &yaml);
        let out = compile_with(&ms, &o).unwrap();
        let rls: serde_json::Value =
            serde_norway::from_str(out.ratelimit_config_yaml.as_deref().unwrap()).unwrap();
        assert_eq!(rls["domain"], "aigw");
        let boot: serde_json::Value = serde_norway::from_str(&out.bootstrap_yaml).unwrap();
        let routes = &boot["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]
            ["typed_config"]["route_config"]["virtual_hosts"][0]["routes"];
        let mut checked = 0;
        for r in routes.as_array().unwrap() {
            let Some(limits) = r["typed_per_filter_config"]["envoy.filters.http.ratelimit"]
                ["rate_limits"]
                .as_array()
            else {
                continue;
            };
            for l in limits {
                // Walk the service's tree with the descriptor's keys.
                let mut level = &rls["descriptors"];
                let mut node = &serde_json::Value::Null;
                for a in l["actions"].as_array().unwrap() {
                    let (key, value) = if let Some(g) = a.get("generic_key") {
                        (
                            g["descriptor_key"].as_str().unwrap(),
                            g["descriptor_value"].as_str(),
                        )
                    } else {
                        let m = &a["metadata"];
                        // The route's name is the value of rl_route.
                        let value =
                            (m["descriptor_key"] == "route").then(|| r["name"].as_str().unwrap());
                        (m["descriptor_key"].as_str().unwrap(), value)
                    };
                    node = level
                        .as_array()
                        .unwrap()
                        .iter()
                        .find(|d| {
                            d["key"] == key
                                && (d.get("value").is_none() || d["value"].as_str() == value)
                        })
                        .unwrap_or_else(|| {
                            panic!("{per:?}: no descriptor {key}={value:?} in {level}")
                        });
                    level = &node["descriptors"];
                }
                assert!(
                    node["rate_limit"].is_object(),
                    "{per:?}: {l} ends at {node}"
                );
                if let Some(f) = l["hits_addend"]["format"].as_str() {
                    assert!(
                        f == "%DYNAMIC_METADATA(io.envoy.ai_gateway:rl_tokens)%"
                            || f == "%DYNAMIC_METADATA(io.envoy.ai_gateway:rl_cost)%"
                    );
                    assert_eq!(l["apply_on_stream_done"], true);
                }
                checked += 1;
            }
        }
        // requests; tokens check and charge; two budgets' checks and charges.
        assert_eq!(checked, 7, "{per:?}");
        // Limitador: the requests per minute only, per the scope's entry.
        let lim: serde_json::Value =
            serde_norway::from_str(out.limitador_yaml.as_deref().unwrap()).unwrap();
        assert_eq!(lim.as_array().unwrap().len(), 1);
        assert_eq!(lim[0]["max_value"], 60);
        assert_eq!(
            lim[0]["variables"].as_array().unwrap().len(),
            usize::from(per != Scope::Route)
        );
        assert!(out
            .warnings
            .iter()
            .any(|d| d.message.contains("limitador-limits.yaml leaves out")));
    }
}
