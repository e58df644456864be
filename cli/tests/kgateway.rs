//! kgateway resources: one error test per rule the seeds state, starting from
//! the valid `golden/kgateway` input and breaking one field; plus the mappings
//! that the golden case does not show (ext_authz, rate limit, basic auth).

use aigw_cli::manifest::parse_yaml;
use aigw_cli::{compile, Manifest};
use serde_json::{json, Value};

mod common;
mod crd;
use common::{edit, push, remove, ErrorCase};

const ROUTE: usize = 0;
const AIB: usize = 1;
const SIM: usize = 2;
const COMPAT: usize = 5;
const TP: usize = 6;
const LP: usize = 7;
const DR: usize = 8;
const GP: usize = 9;
const KEY_SECRET: usize = 10;
const USERS: usize = 11;

fn base() -> Vec<Value> {
    let text = include_str!("golden/kgateway/input.yaml");
    let (ms, diags) = parse_yaml("input.yaml", text);
    assert!(diags.is_empty(), "{diags:?}");
    ms.into_iter().map(common::unredacted).collect()
}

fn manifests(docs: Vec<Value>) -> Vec<Manifest> {
    let text: String = docs
        .iter()
        .map(|d| format!("---\n{}\n", serde_json::to_string(d).unwrap()))
        .collect();
    let (ms, diags) = parse_yaml("t.yaml", &text);
    assert!(diags.is_empty(), "{diags:?}");
    ms
}

/// Sets (`Some`) or removes (`None`) the field at a JSON pointer.
fn extension(spec: Value) -> Value {
    json!({"apiVersion": "gateway.kgateway.dev/v1alpha1", "kind": "GatewayExtension",
           "metadata": {"name": "ext", "namespace": "default"}, "spec": spec})
}

#[test]
fn base_compiles() {
    let out = compile(&manifests(base())).unwrap_or_else(|d| panic!("{d:#?}"));
    let models: Vec<&str> = out.config["models"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    // From the x-ai-eg-model match, then from the backend's configured model.
    assert_eq!(models, ["gpt-4o-mini", "gpt-4o"]);
    assert_eq!(out.config["routes"][0]["backends"][2]["priority"], 1);
    assert_eq!(out.config["routes"][0]["backends"][0]["weight"], 3);
    assert_eq!(out.config["limits"]["maxRequestBodyBytes"], 4_194_304);
    assert!(out.bootstrap_yaml.contains("envoy.filters.http.cors"));
    assert!(out.bootstrap_yaml.contains("name: cors_preflight"));
    assert!(out.bootstrap_yaml.contains("name: aigw_cors"));
    assert!(out.bootstrap_yaml.contains("timeout: 45s"));
    assert!(out
        .bootstrap_yaml
        .contains("per_connection_buffer_limit_bytes: 4194304"));
    // kgateway routes stay out of the Envoy Gateway output.
    assert!(!out.envoy_gateway_yaml.contains("chat"));
}

#[test]
fn each_rule_reports_its_field() {
    let cases: Vec<ErrorCase> = vec![
        // Backend
        (
            remove(SIM, "/spec/type"),
            "Backend",
            "spec.type",
            "is required",
        ),
        (
            edit(SIM, "/spec/type", json!("Lambda")),
            "Backend",
            "spec.type",
            "unsupported value",
        ),
        (
            edit(SIM, "/spec/aws", json!({"region": "r"})),
            "Backend",
            "spec.aws",
            "exactly one of",
        ),
        (
            remove(SIM, "/spec/static"),
            "Backend",
            "spec.static",
            "is required with type Static",
        ),
        (
            edit(SIM, "/spec/static/hosts", json!([])),
            "Backend",
            "spec.static.hosts",
            "at least 1",
        ),
        (
            edit(SIM, "/spec/static/hosts/0/port", json!(70000)),
            "Backend",
            "spec.static.hosts[0].port",
            "between 1 and 65535",
        ),
        (
            remove(SIM, "/spec/static/hosts/0/host"),
            "Backend",
            "spec.static.hosts[0].host",
            "is required",
        ),
        (
            edit(
                SIM,
                "/spec",
                json!({"type": "AWS", "aws": {"region": "us-east-1"}}),
            ),
            "Backend",
            "spec.aws.lambda",
            "is required",
        ),
        (
            edit(SIM, "/spec", json!({"type": "AWS", "aws": {"ec2": {}}})),
            "Backend",
            "spec.aws.ec2",
            "EC2",
        ),
        (
            edit(
                SIM,
                "/spec",
                json!({"type": "AWS", "aws": {"lambda": {"functionName": "a/b"}}}),
            ),
            "Backend",
            "spec.aws.lambda.functionName",
            "function name",
        ),
        (
            edit(
                SIM,
                "/spec",
                json!({"type": "AWS", "aws": {"accountId": "12", "lambda": {"functionName": "f"}}}),
            ),
            "Backend",
            "spec.aws.lambda.accountId",
            "12-digit",
        ),
        (
            edit(
                SIM,
                "/spec",
                json!({"type": "AWS", "aws": {"lambda": {"functionName": "f"}, "auth": {"type": "Secret"}}}),
            ),
            "Backend",
            "spec.aws.auth.secretRef",
            "is required",
        ),
        (
            edit(
                COMPAT,
                "/spec/ai/provider",
                json!({"type": "azure", "azure": {"endpoint": "https://my resource", "deploymentName": "d"}}),
            ),
            "Backend",
            "spec.ai.provider.azure.endpoint",
            "is not a host name",
        ),
        (
            edit(
                COMPAT,
                "/spec/ai/provider",
                json!({"type": "azureopenai", "azureopenai": {"endpoint": "a.openai.azure.com"}}),
            ),
            "Backend",
            "spec.ai.provider.azureopenai.deploymentName",
            "is required",
        ),
        (
            edit(COMPAT, "/spec/ai/provider/type", json!("bedrock")),
            "Backend",
            "spec.ai.provider.type",
            "unsupported value",
        ),
        (
            edit(COMPAT, "/spec/ai/provider/type", json!("anthropic")),
            "Backend",
            "spec.ai.provider.anthropic",
            "is required with type anthropic",
        ),
        (
            edit(
                COMPAT,
                "/spec/ai/provider",
                json!({"type": "vertexai", "vertexai": {"model": "gemini-2.5-pro", "location": "us-central1"}}),
            ),
            "Backend",
            "spec.ai.provider.vertexai.projectId",
            "is required",
        ),
        (
            edit(
                COMPAT,
                "/spec/ai/provider",
                json!({"type": "vertexai", "vertexai": {"projectId": "p", "location": "us-central1", "publisher": "META"}}),
            ),
            "Backend",
            "spec.ai.provider.vertexai.publisher",
            "expected GOOGLE or ANTHROPIC",
        ),
        (
            edit(
                COMPAT,
                "/spec/ai/provider/pathOverride",
                json!({"fullPath": "/v1/responses"}),
            ),
            "Backend",
            "spec.ai.provider.pathOverride.fullPath",
            "ending in /chat/completions",
        ),
        (
            edit(
                COMPAT,
                "/spec/ai/provider",
                json!({"type": "mistral", "mistral": {}, "pathOverride": {"fullPath": "/x/chat/completions"}}),
            ),
            "Backend",
            "spec.ai.provider.pathOverride",
            "only OpenAI backends take a path prefix",
        ),
        (
            edit(
                COMPAT,
                "/spec/ai/provider/openai/authToken",
                json!({"kind": "Inline"}),
            ),
            "Backend",
            "spec.ai.provider.openai.authToken.inline",
            "is required with kind Inline",
        ),
        (
            edit(
                COMPAT,
                "/spec/ai/provider/openai/authToken",
                json!({"kind": "Passthrough", "inline": "x"}),
            ),
            "Backend",
            "spec.ai.provider.openai.authToken.inline",
            "must not be set with kind Passthrough",
        ),
        (
            edit(
                COMPAT,
                "/spec/ai/provider/openai/authToken",
                json!({"kind": "OAuth"}),
            ),
            "Backend",
            "spec.ai.provider.openai.authToken.kind",
            "unsupported value",
        ),
        (
            edit(COMPAT, "/spec/ai/provider/gemini", json!({})),
            "Backend",
            "spec.ai.provider.gemini",
            "exactly one provider",
        ),
        (
            edit(COMPAT, "/spec/ai/provider/openai/model", json!("")),
            "Backend",
            "spec.ai.provider.openai.model",
            "must not be empty",
        ),
        (
            edit(COMPAT, "/spec/ai/provider/hostOverride/port", json!(0)),
            "Backend",
            "spec.ai.provider.hostOverride.port",
            "between 1 and 65535",
        ),
        // AIBackend
        (
            remove(AIB, "/spec/provider"),
            "AIBackend",
            "spec.provider",
            "is required",
        ),
        (
            edit(AIB, "/spec/provider/type", json!("gemini")),
            "AIBackend",
            "spec.provider.openai",
            "exactly one provider",
        ),
        (
            edit(
                AIB,
                "/spec/provider/openai/authToken/secretRef/name",
                json!("gone"),
            ),
            "AIBackend",
            "spec.provider.openai.authToken.secretRef",
            "Secret default/gone is not among the inputs",
        ),
        (
            Box::new(|d: &mut Vec<Value>| {
                d[KEY_SECRET]["stringData"] = json!({"apiKey": "sk-placeholder"});
            }),
            "AIBackend",
            "spec.provider.openai.authToken.secretRef",
            "has no key 'Authorization' (its keys: apiKey)",
        ),
        (
            remove(AIB, "/spec/provider/openai"),
            "AIBackend",
            "spec.provider.openai",
            "is required with type openai",
        ),
        (
            edit(AIB, "/spec/provider/openai/authToken", json!({})),
            "AIBackend",
            "spec.provider.openai.authToken.secretRef",
            "is required",
        ),
        (
            edit(AIB, "/spec/provider/openai/authToken/secretRef", json!({})),
            "AIBackend",
            "spec.provider.openai.authToken.secretRef.name",
            "is required",
        ),
        (
            edit(
                AIB,
                "/spec/groups/0/backends/0/backendRef/name",
                json!("nope"),
            ),
            "AIBackend",
            "spec.groups[0].backends[0].backendRef.name",
            "not found",
        ),
        (
            edit(
                AIB,
                "/spec/groups/1/backends/0/backendRef/name",
                json!("simulator"),
            ),
            "AIBackend",
            "spec.groups[1].backends[0].backendRef.name",
            "already listed",
        ),
        (
            edit(AIB, "/spec/groups/0/backends", json!([])),
            "AIBackend",
            "spec.groups[0].backends",
            "at least 1",
        ),
        (
            edit(AIB, "/spec/groups/0/backends/0/weight", json!(-1)),
            "AIBackend",
            "spec.groups[0].backends[0].weight",
            "between",
        ),
        (
            edit(AIB, "/spec/groups/0/priority", json!(-1)),
            "AIBackend",
            "spec.groups[0].priority",
            "between",
        ),
        (
            remove(AIB, "/spec/groups/0/backends/0/backendRef"),
            "AIBackend",
            "spec.groups[0].backends[0].backendRef",
            "is required",
        ),
        (
            edit(
                SIM,
                "/spec",
                json!({"type": "AWS", "aws": {"region": "r", "lambdaFunctionName": "f"}}),
            ),
            "AIBackend",
            "spec.groups[0].backends[0].backendRef.name",
            "AWS Lambda",
        ),
        // HTTPRoute
        (
            edit(ROUTE, "/spec/rules/1/backendRefs/0/name", json!("nope")),
            "HTTPRoute",
            "spec.rules[1].backendRefs[0].name",
            "not found",
        ),
        (
            edit(
                ROUTE,
                "/spec/rules/1/backendRefs/0/name",
                json!("simulator"),
            ),
            "HTTPRoute",
            "spec.rules[1].backendRefs[0].name",
            "not an AI backend",
        ),
        (
            edit(ROUTE, "/spec/rules/1/backendRefs/0/kind", json!("Service")),
            "HTTPRoute",
            "spec.rules[1].backendRefs[0].kind",
            "unsupported kind",
        ),
        (
            edit(
                ROUTE,
                "/spec/rules/0/backendRefs/1",
                json!({"group": "gateway.kgateway.dev", "kind": "AIBackend", "name": "openai"}),
            ),
            "HTTPRoute",
            "spec.rules[0].backendRefs[1].name",
            "referenced twice",
        ),
        (
            edit(
                ROUTE,
                "/spec/rules/2/filters/0/extensionRef/name",
                json!("nope"),
            ),
            "HTTPRoute",
            "spec.rules[2].filters[0].extensionRef.name",
            "not found",
        ),
        (
            edit(
                ROUTE,
                "/spec/rules/2/backendRefs",
                json!([{"group": "gateway.kgateway.dev", "kind": "Backend", "name": "openai-compatible"}]),
            ),
            "HTTPRoute",
            "spec.rules[2].backendRefs",
            "takes no backendRefs",
        ),
        (
            edit(
                ROUTE,
                "/spec/rules/1/matches",
                json!([{"headers": [{"type": "Exact", "name": "x-ai-eg-model", "value": "gpt-4o-mini"}]}]),
            ),
            "HTTPRoute",
            "spec.rules[1].matches[0].headers[0].value",
            "already routed",
        ),
        (
            remove(COMPAT, "/spec/ai/provider/openai/model"),
            "HTTPRoute",
            "spec.rules[1].matches",
            "needs an Exact",
        ),
        // TrafficPolicy
        (
            remove(TP, "/spec/targetRefs"),
            "TrafficPolicy",
            "spec.targetRefs",
            "is required",
        ),
        (
            edit(TP, "/spec/targetRefs", json!([])),
            "TrafficPolicy",
            "spec.targetRefs",
            "at least 1",
        ),
        (
            edit(TP, "/spec/targetRefs/0/kind", json!("Service")),
            "TrafficPolicy",
            "spec.targetRefs[0].kind",
            "unsupported value",
        ),
        (
            remove(TP, "/spec/targetRefs/0/name"),
            "TrafficPolicy",
            "spec.targetRefs[0].name",
            "is required",
        ),
        (
            edit(TP, "/spec/targetRefs/0/name", json!("nope")),
            "TrafficPolicy",
            "spec.targetRefs[0].name",
            "not found",
        ),
        (
            edit(TP, "/spec/targetRefs/0/group", json!("example.com")),
            "TrafficPolicy",
            "spec.targetRefs[0].group",
            "must be gateway.networking.k8s.io",
        ),
        (
            edit(TP, "/spec/cors/allowOrigins/0/type", json!("Glob")),
            "TrafficPolicy",
            "spec.cors.allowOrigins[0].type",
            "unsupported value",
        ),
        (
            edit(TP, "/spec/cors/allowOrigins", json!([])),
            "TrafficPolicy",
            "spec.cors.allowOrigins",
            "at least 1",
        ),
        (
            edit(TP, "/spec/cors/maxAge", json!("soon")),
            "TrafficPolicy",
            "spec.cors.maxAge",
            "duration",
        ),
        (
            edit(TP, "/spec/timeout/request", json!("5 minutes")),
            "TrafficPolicy",
            "spec.timeout.request",
            "duration",
        ),
        (
            edit(TP, "/spec/retries/attempts", json!(101)),
            "TrafficPolicy",
            "spec.retries.attempts",
            "between 0 and 100",
        ),
        (
            remove(TP, "/spec/retries/attempts"),
            "TrafficPolicy",
            "spec.retries.attempts",
            "is required",
        ),
        (
            edit(TP, "/spec/retries/retryOn", json!("5xx,sometimes")),
            "TrafficPolicy",
            "spec.retries.retryOn",
            "unknown retry condition 'sometimes'",
        ),
        (
            edit(TP, "/spec/retries/backOff/maxInterval", json!("10ms")),
            "TrafficPolicy",
            "spec.retries.backOff.maxInterval",
            "below baseInterval",
        ),
        (
            edit(
                TP,
                "/spec/requestHeaderModifier/set/1",
                json!({"name": "X-Gateway", "value": "b"}),
            ),
            "TrafficPolicy",
            "spec.requestHeaderModifier.set[1].name",
            "set twice",
        ),
        (
            edit(TP, "/spec/responseHeaderModifier/add/0/name", json!("")),
            "TrafficPolicy",
            "spec.responseHeaderModifier.add[0].name",
            "must not be empty",
        ),
        (
            edit(TP, "/spec/requestHeaderModifier/remove", json!([""])),
            "TrafficPolicy",
            "spec.requestHeaderModifier.remove[0]",
            "non-empty",
        ),
        (
            edit(TP, "/spec/extAuth", json!({})),
            "TrafficPolicy",
            "spec.extAuth",
            "exactly one of extensionRef and disable",
        ),
        (
            edit(
                TP,
                "/spec/extProc",
                json!({"extensionRef": {"name": "nope"}}),
            ),
            "TrafficPolicy",
            "spec.extProc.extensionRef.name",
            "not found",
        ),
        (
            Box::new(|d: &mut Vec<Value>| {
                d[TP]["spec"]["extAuth"] = json!({"extensionRef": {"name": "ext"}});
                d.push(extension(json!({"type": "RateLimit", "rateLimit": {"grpcService": {"backendRef": {"name": "simulator"}}}})));
            }),
            "TrafficPolicy",
            "spec.extAuth.extensionRef.name",
            "is not of type ExtAuth",
        ),
        (
            Box::new(|d: &mut Vec<Value>| {
                let mut t = d[TP].clone();
                t["metadata"]["name"] = json!("second");
                d.push(t);
            }),
            "TrafficPolicy",
            "spec.targetRefs",
            "one policy per route",
        ),
        // HTTPListenerPolicy
        (
            edit(LP, "/spec/targetRefs/0/kind", json!("HTTPRoute")),
            "HTTPListenerPolicy",
            "spec.targetRefs[0].kind",
            "targets a Gateway",
        ),
        (
            remove(LP, "/spec/targetRefs"),
            "HTTPListenerPolicy",
            "spec.targetRefs",
            "is required",
        ),
        (
            edit(LP, "/spec/buffer/maxRequestBytes", json!(0)),
            "HTTPListenerPolicy",
            "spec.buffer.maxRequestBytes",
            "between 1",
        ),
        (
            edit(
                LP,
                "/spec/celValidation",
                json!({"rules": [{"expression": "true", "action": "Maybe"}]}),
            ),
            "HTTPListenerPolicy",
            "spec.celValidation.rules[0].action",
            "unsupported value",
        ),
        (
            edit(
                LP,
                "/spec/celValidation",
                json!({"rules": [{"action": "Deny"}]}),
            ),
            "HTTPListenerPolicy",
            "spec.celValidation.rules[0].expression",
            "is required",
        ),
        (
            edit(
                LP,
                "/spec/celValidation",
                json!({"rules": [{"expression": "headers['a'] == 'b'", "action": "Deny"}]}),
            ),
            "HTTPListenerPolicy",
            "spec.celValidation.rules[0].expression",
            "unknown variable(s) headers (known: request)",
        ),
        (
            edit(
                LP,
                "/spec/celValidation",
                json!({"rules": [{"expression": "true"}]}),
            ),
            "HTTPListenerPolicy",
            "spec.celValidation.rules[0].action",
            "is required",
        ),
        (
            edit(LP, "/spec/basicAuth", json!({})),
            "HTTPListenerPolicy",
            "spec.basicAuth.credentialsSecretRef",
            "is required",
        ),
        (
            edit(LP, "/spec/accessLogging", json!("on")),
            "HTTPListenerPolicy",
            "spec.accessLogging",
            "must be an object",
        ),
        // DirectResponse
        (
            edit(DR, "/spec/statusCode", json!(100)),
            "DirectResponse",
            "spec.statusCode",
            "between 200 and 599",
        ),
        (
            edit(DR, "/spec/statusCode", json!(600)),
            "DirectResponse",
            "spec.statusCode",
            "between 200 and 599",
        ),
        (
            remove(DR, "/spec/statusCode"),
            "DirectResponse",
            "spec.status",
            "is required",
        ),
        (
            edit(DR, "/spec/status", json!(418)),
            "DirectResponse",
            "spec.statusCode",
            "not both",
        ),
        (
            Box::new(|d: &mut Vec<Value>| {
                common::set(&mut d[DR], "/spec/statusCode", None);
                common::set(&mut d[DR], "/spec/status", Some(json!(999)));
            }),
            "DirectResponse",
            "spec.status",
            "between 200 and 599",
        ),
        (
            edit(DR, "/spec/bodyFormat", json!({"text": "x"})),
            "DirectResponse",
            "spec.bodyFormat",
            "not compiled",
        ),
        (
            edit(DR, "/spec/body", json!(3)),
            "DirectResponse",
            "spec.body",
            "must be a string",
        ),
        // GatewayExtension
        (
            push(extension(json!({}))),
            "GatewayExtension",
            "spec.type",
            "is required",
        ),
        (
            push(extension(json!({"type": "Auth"}))),
            "GatewayExtension",
            "spec.type",
            "unsupported value",
        ),
        (
            push(extension(json!({"type": "ExtAuth"}))),
            "GatewayExtension",
            "spec.extAuth",
            "is required with type ExtAuth",
        ),
        (
            push(extension(
                json!({"type": "ExtAuth", "extAuth": {"grpcService": {"backendRef": {"name": "simulator"}}}, "extProc": {}}),
            )),
            "GatewayExtension",
            "spec.extProc",
            "exactly one of",
        ),
        (
            push(extension(json!({"type": "ExtProc", "extProc": {}}))),
            "GatewayExtension",
            "spec.extProc.grpcService",
            "is required",
        ),
        (
            push(extension(
                json!({"type": "ExtProc", "extProc": {"grpcService": {"backendRef": {"name": "s", "port": 0}}}}),
            )),
            "GatewayExtension",
            "spec.extProc.grpcService.backendRef.port",
            "between 1 and 65535",
        ),
        (
            push(extension(
                json!({"type": "ExtProc", "extProc": {"grpcService": {"backendRef": {}}}}),
            )),
            "GatewayExtension",
            "spec.extProc.grpcService.backendRef.name",
            "is required",
        ),
        // GatewayParameters
        (
            edit(GP, "/spec/kube/service", json!({"type": "External"})),
            "GatewayParameters",
            "spec.kube.service.type",
            "unsupported value",
        ),
        (
            edit(GP, "/spec/kube/deployment/replicas", json!(-1)),
            "GatewayParameters",
            "spec.kube.deployment.replicas",
            "between",
        ),
        // Any kgateway resource
        (
            Box::new(|d: &mut Vec<Value>| {
                let c = d[DR].clone();
                d.push(c);
            }),
            "DirectResponse",
            "metadata.name",
            "duplicate",
        ),
        (
            edit(DR, "/apiVersion", json!("gateway.kgateway.dev/v1beta1")),
            "DirectResponse",
            "apiVersion",
            "unsupported version",
        ),
        (remove(DR, "/spec"), "DirectResponse", "spec", "is required"),
    ];

    common::assert_error_cases(&cases, base, manifests, "sk-placeholder");
}

fn warning_paths(out: &aigw_cli::Output) -> Vec<(String, String)> {
    out.warnings
        .iter()
        .map(|d| {
            (
                d.resource
                    .as_ref()
                    .map_or(String::new(), |r| r.kind.clone()),
                d.path.clone(),
            )
        })
        .collect()
}

#[test]
fn ext_auth_with_a_static_backend_becomes_an_envoy_filter() {
    let mut docs = base();
    docs[TP]["spec"]["extAuth"] = json!({"extensionRef": {"name": "ext"}});
    docs.push(extension(json!({"type": "ExtAuth", "extAuth": {"grpcService": {"backendRef": {"name": "simulator", "port": 9000}}}})));
    let out = compile(&manifests(docs)).unwrap_or_else(|d| panic!("{d:#?}"));
    assert!(out.bootstrap_yaml.contains("envoy.filters.http.ext_authz"));
    assert!(out
        .bootstrap_yaml
        .contains("cluster_name: kgateway/default/ext"));
    assert!(out.bootstrap_yaml.contains("port_value: 9000"));
}

const DEMO_HASH: &str = "{SHA}oQuzRpAi/RR7QF57VSHLe8d6hsI=";

#[test]
fn basic_auth_is_envoys_filter_first_with_the_secrets_users() {
    let out = compile(&manifests(base())).unwrap_or_else(|d| panic!("{d:#?}"));
    let boot: Value = serde_norway::from_str(&out.bootstrap_yaml).unwrap();
    let filters = boot
        .pointer(
            "/static_resources/listeners/0/filter_chains/0/filters/0/typed_config/http_filters",
        )
        .and_then(Value::as_array)
        .unwrap();
    let names: Vec<&str> = filters
        .iter()
        .map(|f| f["name"].as_str().unwrap())
        .collect();
    let at = |n: &str| names.iter().position(|x| *x == n).unwrap();
    assert!(
        at("envoy.filters.http.basic_auth") < at("aigw"),
        "{names:?}"
    );
    assert_eq!(
        filters[at("envoy.filters.http.basic_auth")]["typed_config"]["users"]["inline_string"],
        format!("demo:{DEMO_HASH}")
    );
    // The hash stays in the bootstrap: not in the filter config, not in any message.
    assert!(!out.config.to_string().contains(DEMO_HASH));
}

#[test]
fn basic_auth_that_cannot_be_enforced_is_an_error() {
    let users = |text: &'static str| edit(USERS, "/stringData/.htpasswd", json!(text));
    let path = "spec.basicAuth.credentialsSecretRef";
    let cases: Vec<ErrorCase> = vec![
        (
            edit(
                LP,
                "/spec/basicAuth/credentialsSecretRef/name",
                json!("nobody"),
            ),
            "HTTPListenerPolicy",
            path,
            "Secret default/nobody is not among the inputs",
        ),
        (
            users("demo:$2y$05$pthxvn2t8b9rF9gF1FhvrutHKik/goGxVx5cOZ2fcXwrJ5Nwz5r\n"),
            "HTTPListenerPolicy",
            path,
            "line 1: user 'demo' has a hash Envoy's basic_auth cannot check",
        ),
        (
            users("# users\ndemo:{SHA}oQuzRpAi/RR7QF57VSHLe8d6hsI=\nops\n"),
            "HTTPListenerPolicy",
            path,
            "line 3: not 'user:hash'",
        ),
        (
            users(
                "demo:{SHA}oQuzRpAi/RR7QF57VSHLe8d6hsI=\ndemo:{SHA}oQuzRpAi/RR7QF57VSHLe8d6hsI=\n",
            ),
            "HTTPListenerPolicy",
            path,
            "user 'demo' is listed twice",
        ),
        (
            users("# nobody yet\n"),
            "HTTPListenerPolicy",
            path,
            "lists no users",
        ),
        (
            Box::new(|d: &mut Vec<Value>| {
                d[USERS]["stringData"] = json!({"a": "demo:x", "b": "demo:y"});
            }),
            "HTTPListenerPolicy",
            path,
            "has no '.htpasswd' key for the htpasswd users (its keys: a, b)",
        ),
        (
            Box::new(|d: &mut Vec<Value>| {
                let mut second = d[LP].clone();
                second["metadata"]["name"] = json!("second");
                d.push(second);
            }),
            "HTTPListenerPolicy",
            path,
            "another HTTPListenerPolicy already sets basicAuth",
        ),
    ];
    common::assert_error_cases(&cases, base, manifests, "oQuzRpAi/RR7QF57VSHLe8d6hsI");
}

#[test]
fn cel_validation_is_the_filters_request_validation() {
    let out = compile(&manifests(base())).unwrap_or_else(|d| panic!("{d:#?}"));
    let rules = &out.config["requestValidation"]["rules"];
    assert_eq!(rules[0]["action"], "Allow");
    assert_eq!(
        rules[1]["expression"],
        "request.url_path.startsWith('/v1/') && 'x-internal-debug' in request.headers"
    );
    assert_eq!(rules.as_array().map(Vec::len), Some(2));
}

#[test]
fn unmapped_features_are_warnings_naming_the_field() {
    let mut docs = base();
    docs[TP]["spec"]["extProc"] = json!({"extensionRef": {"name": "ext"}});
    docs.push(extension(
        json!({"type": "ExtProc", "extProc": {"grpcService": {"backendRef": {"name": "svc"}}}}),
    ));
    docs[LP]["spec"]["accessLogging"] = json!({"fileSink": {"path": "/dev/stdout"}});
    let out = compile(&manifests(docs)).unwrap_or_else(|d| panic!("{d:#?}"));
    let paths = warning_paths(&out);
    for (kind, path) in [
        ("TrafficPolicy", "spec.extProc.extensionRef"),
        ("HTTPListenerPolicy", "spec.accessLogging"),
        ("GatewayParameters", "spec"),
    ] {
        assert!(
            paths.contains(&(kind.to_string(), path.to_string())),
            "{kind} {path}: {paths:?}"
        );
    }
    assert!(!out.bootstrap_yaml.contains("ext_proc"));
}

#[test]
fn gateway_target_applies_to_every_kgateway_route() {
    let mut docs = base();
    docs[TP]["spec"]["targetRefs"] = json!([{"kind": "Gateway", "name": "kgateway"}]);
    let out = compile(&manifests(docs)).unwrap_or_else(|d| panic!("{d:#?}"));
    assert_eq!(out.bootstrap_yaml.matches("timeout: 45s").count(), 2);
}

const KG_MAIN: &str = "kgateway/gateway.kgateway.dev_";
const KG_AI: &str = "kgateway/historical/e575ec754390/gateway.kgateway.dev_backends.yaml";
const KG_LISTENER: &str =
    "kgateway/historical/36a5c7cb50c7/gateway.kgateway.dev_httplistenerpolicies.yaml";

/// Where the seeds (`golden/kgateway` is written in their shapes) and kgateway's
/// CRDs differ, the compiler takes both, to the same result: CORS origins as
/// strings and `maxAge` in integer seconds, DirectResponse `status`,
/// HTTPListenerPolicy targetRefs with `group`, a Backend of type AI as `ai.llm`,
/// TrafficPolicy `timeouts`, `retry` and `headerModifiers`.
/// The CRD-shaped documents are checked against those CRDs (current kgateway,
/// or its last version with the kind or field).
#[test]
fn seed_and_crd_shapes_compile_alike() {
    // kgateway's retry has no maximum back-off interval.
    let seed_docs = || {
        let mut d = base();
        common::set(&mut d[TP], "/spec/retries/backOff/maxInterval", None);
        d
    };
    let seed = compile(&manifests(seed_docs())).unwrap_or_else(|d| panic!("{d:#?}"));
    let mut docs = seed_docs();
    let spec = docs[TP]["spec"].as_object_mut().unwrap();
    for k in [
        "timeout",
        "retries",
        "requestHeaderModifier",
        "responseHeaderModifier",
    ] {
        spec.remove(k);
    }
    spec.insert("timeouts".into(), json!({"request": "45s"}));
    spec.insert(
        "retry".into(),
        json!({"attempts": 2, "perTryTimeout": "20s",
               "retryOn": ["connect-failure", "refused-stream", "5xx"],
               "backoffBaseInterval": "100ms"}),
    );
    spec.insert(
        "headerModifiers".into(),
        json!({"request": {"set": [{"name": "x-gateway", "value": "kgateway"}],
                           "remove": ["x-debug"]},
               "response": {"add": [{"name": "x-served-by", "value": "aigw"}]}}),
    );
    common::set(
        &mut docs[TP],
        "/spec/cors/allowOrigins",
        Some(json!(["https://app.example.com"])),
    );
    common::set(&mut docs[TP], "/spec/cors/maxAge", Some(json!(3600)));
    common::set(&mut docs[DR], "/spec/statusCode", None);
    common::set(&mut docs[DR], "/spec/status", Some(json!(200)));
    common::set(
        &mut docs[LP],
        "/spec/targetRefs/0/group",
        Some(json!("gateway.networking.k8s.io")),
    );
    common::set(
        &mut docs[COMPAT],
        "/spec/ai",
        Some(json!({"llm": {"openai": {"model": "gpt-4o"}, "host": "127.0.0.1", "port": 8081}})),
    );
    let crd_shaped = compile(&manifests(docs.clone())).unwrap_or_else(|d| panic!("{d:#?}"));
    assert_eq!(crd_shaped.config, seed.config);
    assert_eq!(crd_shaped.bootstrap_yaml, seed.bootstrap_yaml);
    assert_eq!(crd_shaped.warnings.len(), seed.warnings.len());

    // The CRD-shaped documents against kgateway's CRDs. The seed's Backend has
    // no authToken, which kgateway requires: Passthrough says the same.
    let crds = crd::crds();
    common::set(
        &mut docs[COMPAT],
        "/spec/ai/llm/openai/authToken",
        Some(json!({"kind": "Passthrough"})),
    );
    // Fields in the seeds' shape only, which kgateway's CRDs do not have (or
    // name otherwise): left out of this check; the compiler reads the seeds'.
    for f in ["buffer", "basicAuth", "celValidation"] {
        docs[LP]["spec"].as_object_mut().unwrap().remove(f);
    }
    let mut errors = Vec::new();
    for (i, file) in [
        (TP, format!("{KG_MAIN}trafficpolicies.yaml")),
        (DR, format!("{KG_MAIN}directresponses.yaml")),
        (GP, format!("{KG_MAIN}gatewayparameters.yaml")),
        (SIM, format!("{KG_MAIN}backends.yaml")),
        (COMPAT, KG_AI.to_string()),
        (LP, KG_LISTENER.to_string()),
    ] {
        let r = crds.check_in(&docs[i], &format!("doc {i}"), Some(&file));
        errors.extend(r.errors);
        errors.extend(r.unevaluable);
    }
    assert!(errors.is_empty(), "{errors:#?}");
}

/// The CRD shapes' own cases: origin strings (`*`, a wildcard subdomain, a bad
/// one), `maxAge` seconds out of range, and `ai.llm` (another provider, host
/// without port, priorityGroups, both shapes at once).
#[test]
fn crd_shapes_map_and_report_their_fields() {
    for (origins, want) in [
        (json!(["*"]), "regex: .*"),
        (
            json!(["https://*.example.com:8443", "http://localhost:3000"]),
            r"regex: https://[^/:]+\.example\.com:8443",
        ),
    ] {
        let mut docs = base();
        common::set(&mut docs[TP], "/spec/cors/allowOrigins", Some(origins));
        let out = compile(&manifests(docs)).unwrap_or_else(|d| panic!("{d:#?}"));
        assert!(out.bootstrap_yaml.contains(want), "{}", out.bootstrap_yaml);
    }
    let mut docs = base();
    common::set(
        &mut docs[COMPAT],
        "/spec/ai",
        Some(
            json!({"llm": {"azureopenai": {"endpoint": "my.openai.azure.com",
            "deploymentName": "gpt-4o", "apiVersion": "2024-10-21",
            "authToken": {"kind": "Passthrough"}}}}),
        ),
    );
    let out = compile(&manifests(docs)).unwrap_or_else(|d| panic!("{d:#?}"));
    assert!(out.config.to_string().contains("my.openai.azure.com"));
    let mut docs = base();
    common::set(&mut docs[TP], "/spec/retries", None);
    common::set(
        &mut docs[TP],
        "/spec/retry",
        Some(json!({"statusCodes": [429, 503]})),
    );
    let out = compile(&manifests(docs)).unwrap_or_else(|d| panic!("{d:#?}"));
    assert!(out
        .bootstrap_yaml
        .contains("retry_on: retriable-status-codes"));
    assert!(
        out.bootstrap_yaml.contains("- 429"),
        "{}",
        out.bootstrap_yaml
    );
    assert!(out.bootstrap_yaml.contains("num_retries: 1"));
    // Priority groups: each provider a backend of the rule, its group's index
    // as priority, equal weights.
    let mut docs = base();
    let member = |name: &str, port: u16| {
        json!({"name": name, "openai": {"model": "gpt-4o", "authToken": {"kind": "Passthrough"}},
               "host": "127.0.0.1", "port": port})
    };
    common::set(
        &mut docs[COMPAT],
        "/spec/ai",
        Some(json!({"priorityGroups": [
            {"providers": [member("a", 8081), member("b", 8082)]},
            {"providers": [member("c", 8083)]}]})),
    );
    let r = crd::crds().check_in(&docs[COMPAT], "priorityGroups", Some(KG_AI));
    assert!(
        r.errors.is_empty() && r.unevaluable.is_empty(),
        "{:#?}",
        r.errors
    );
    let out = compile(&manifests(docs)).unwrap_or_else(|d| panic!("{d:#?}"));
    let route = out.config["routes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["models"] == json!(["gpt-4o"]))
        .unwrap();
    let got: Vec<(String, i64)> = route["backends"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| {
            (
                b["name"].as_str().unwrap().to_string(),
                b["priority"].as_i64().unwrap_or(0),
            )
        })
        .collect();
    assert_eq!(
        got,
        [
            ("openai-compatible.default/a@gpt-4o".to_string(), 0),
            ("openai-compatible.default/b@gpt-4o".to_string(), 0),
            ("openai-compatible.default/c@gpt-4o".to_string(), 1),
        ]
    );
    assert!(out.bootstrap_yaml.contains("port_value: 8083"));
    let llm = |v: Value| edit(COMPAT, "/spec/ai", v);
    let cases: Vec<ErrorCase> = vec![
        (
            edit(
                TP,
                "/spec/cors/allowOrigins",
                json!(["ftp://x.example.com"]),
            ),
            "TrafficPolicy",
            "spec.cors.allowOrigins[0]",
            "not `*` or an http(s) origin",
        ),
        (
            edit(
                TP,
                "/spec/cors/allowOrigins",
                json!(["*", "https://a.example.com"]),
            ),
            "TrafficPolicy",
            "spec.cors.allowOrigins",
            "cannot contain '*' alongside other origins",
        ),
        (
            edit(TP, "/spec/cors/maxAge", json!(0)),
            "TrafficPolicy",
            "spec.cors.maxAge",
            "between 1 and",
        ),
        (
            llm(json!({"llm": {"openai": {"model": "m"}, "host": "h.example.com"}})),
            "Backend",
            "spec.ai.llm",
            "host and port",
        ),
        (
            llm(json!({"llm": {"model": "m"}})),
            "Backend",
            "spec.ai.llm",
            "exactly one of the fields",
        ),
        (
            llm(json!({"priorityGroups": [{"providers": [
                {"name": "a", "openai": {"model": "m"}},
                {"name": "a", "openai": {"model": "m"}}]}]})),
            "Backend",
            "spec.ai.priorityGroups[0].providers[1].name",
            "unique within a group",
        ),
        (
            llm(json!({"priorityGroups": [{"providers": [{"openai": {"model": "m"}}]}]})),
            "Backend",
            "spec.ai.priorityGroups[0].providers[0].name",
            "is required",
        ),
        (
            llm(
                json!({"priorityGroups": [{"providers": [{"name": "a", "gemini": {"model": "m"}, "port": 1}]}]}),
            ),
            "Backend",
            "spec.ai.priorityGroups[0].providers[0]",
            "host and port",
        ),
        (
            llm(json!({"priorityGroups": []})),
            "Backend",
            "spec.ai.priorityGroups",
            "at least 1 item",
        ),
        (
            llm(json!({"llm": {"openai": {}}, "provider": {"type": "openai", "openai": {}}})),
            "Backend",
            "spec.ai.llm",
            "exactly one of provider",
        ),
        (
            edit(TP, "/spec/timeouts", json!({"request": "1s"})),
            "TrafficPolicy",
            "spec.timeouts",
            "not both",
        ),
        (
            Box::new(|d: &mut Vec<Value>| {
                common::set(&mut d[TP], "/spec/retries", None);
                common::set(&mut d[TP], "/spec/retry", Some(json!({"attempts": 1})));
            }),
            "TrafficPolicy",
            "spec.retry.retryOn",
            "retryOn or statusCodes must be set",
        ),
        (
            Box::new(|d: &mut Vec<Value>| {
                common::set(&mut d[TP], "/spec/retries", None);
                common::set(
                    &mut d[TP],
                    "/spec/retry",
                    Some(json!({"retryOn": ["5xx", "sometimes"]})),
                );
            }),
            "TrafficPolicy",
            "spec.retry.retryOn[1]",
            "unknown retry condition",
        ),
        (
            Box::new(|d: &mut Vec<Value>| {
                common::set(&mut d[TP], "/spec/requestHeaderModifier", None);
                common::set(
                    &mut d[TP],
                    "/spec/headerModifiers",
                    Some(json!({"request": {"set": [{"name": "x", "secretRef": {"name": "s"}}]}})),
                );
            }),
            "TrafficPolicy",
            "spec.headerModifiers.request.set[0].secretRef",
            "not compiled",
        ),
        (
            llm(json!({"llm": {"bedrock": {"model": "m"}}})),
            "Backend",
            "spec.ai.llm.bedrock",
            "not compiled",
        ),
    ];
    common::assert_error_cases(&cases, base, manifests, "not-a-real");
}

#[test]
fn lambda_seed_and_crd_shapes_compile_alike() {
    let route = json!({"apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
        "metadata": {"name": "r", "namespace": "ai"},
        "spec": {"parentRefs": [{"name": "kgateway"}], "rules": [{
            "matches": [{"headers": [{"type": "Exact", "name": "x-ai-eg-model", "value": "fn-model"}]}],
            "backendRefs": [{"group": "gateway.kgateway.dev", "kind": "Backend", "name": "fn"}]}]}});
    let backend = |aws: Value| {
        json!({"apiVersion": "gateway.kgateway.dev/v1alpha1", "kind": "Backend",
            "metadata": {"name": "fn", "namespace": "ai",
                         "annotations": {"aigw.io/credentials-file": "/var/run/aws/credentials"}},
            "spec": {"type": "AWS", "aws": aws}})
    };
    let seed = backend(
        json!({"region": "eu-central-1", "lambdaFunctionName": "chat",
        "accountId": "123456789012", "roleArn": "arn:aws:iam::123456789012:role/invoker"}),
    );
    let crd = backend(json!({"region": "eu-central-1",
        "lambda": {"functionName": "chat", "accountId": "123456789012", "payloadTransformMode": "None"},
        "auth": {"type": "AssumeRole", "assumeRole": {"roleArn": "arn:aws:iam::123456789012:role/invoker"}}}));
    let seed = compile(&manifests(vec![route.clone(), seed])).unwrap_or_else(|d| panic!("{d:#?}"));
    let crd = compile(&manifests(vec![route, crd])).unwrap_or_else(|d| panic!("{d:#?}"));
    assert_eq!(seed.config, crd.config);
    assert_eq!(seed.bootstrap_yaml, crd.bootstrap_yaml);
    let b = &crd.config["backends"][0];
    assert_eq!(
        b["lambda"],
        json!({"functionName": "arn:aws:lambda:eu-central-1:123456789012:function:chat"})
    );
    assert_eq!(b["host"], "lambda.eu-central-1.amazonaws.com");
    assert_eq!(
        b["auth"]["awsSigV4"]["assumeRole"]["sts"]["url"],
        "https://sts.eu-central-1.amazonaws.com/"
    );
    assert_eq!(crd.config["routes"][0]["models"], json!(["fn-model"]));
    assert!(
        !crd.warnings.iter().any(|w| w.message.contains("Lambda")),
        "{:?}",
        crd.warnings
    );
    // The filter loads what the compiler wrote.
    aigw_filter::config::Config::from_json(crd.config_json.as_bytes()).unwrap();
}
