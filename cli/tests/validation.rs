//! One error test per rule the CRDs state: start from a valid set of resources,
//! break one field, and check the error names that resource and field path.

use aigw_cli::{compile, Manifest, Source};
use serde_json::{json, Value};

mod common;
mod crd;
use common::{edit, push, remove, set, Edit, ErrorCase};

/// A valid input: route, backend, policy, Envoy Gateway Backend, TLS policy, Secret.
fn base() -> Vec<Value> {
    vec![
        json!({
            "apiVersion": "aigateway.envoyproxy.io/v1alpha1", "kind": "AIGatewayRoute",
            "metadata": {"name": "route", "namespace": "ns"},
            "spec": {
                "targetRefs": [{"name": "gw", "kind": "Gateway", "group": "gateway.networking.k8s.io"}],
                "schema": {"name": "OpenAI"},
                "rules": [{
                    "matches": [{"headers": [{"type": "Exact", "name": "x-ai-eg-model", "value": "m1"}]}],
                    "backendRefs": [{"name": "asb", "weight": 2, "priority": 0}],
                    "timeouts": {"request": "30s", "backendRequest": "10s"},
                    "modelsCreatedAt": "2024-05-21T10:00:00Z"
                }, {
                    "matches": [{"headers": [{"name": "x-ai-eg-model", "value": "m2"}]}],
                    "backendRefs": [{"name": "asb"}]
                }],
                "llmRequestCosts": [
                    {"metadataKey": "in", "type": "InputToken"},
                    {"metadataKey": "cel", "type": "CEL", "cel": "input_tokens * 2"}
                ]
            }
        }),
        json!({
            "apiVersion": "aigateway.envoyproxy.io/v1alpha1", "kind": "AIServiceBackend",
            "metadata": {"name": "asb", "namespace": "ns"},
            "spec": {
                "schema": {"name": "OpenAI"},
                "backendRef": {"name": "be", "kind": "Backend", "group": "gateway.envoyproxy.io"},
                "backendSecurityPolicyRef": {"name": "bsp", "kind": "BackendSecurityPolicy", "group": "aigateway.envoyproxy.io"}
            }
        }),
        json!({
            "apiVersion": "aigateway.envoyproxy.io/v1alpha1", "kind": "BackendSecurityPolicy",
            "metadata": {"name": "bsp", "namespace": "ns"},
            "spec": {"type": "APIKey", "apiKey": {"secretRef": {"name": "key"}}}
        }),
        json!({
            "apiVersion": "gateway.envoyproxy.io/v1alpha1", "kind": "Backend",
            "metadata": {"name": "be", "namespace": "ns"},
            "spec": {"endpoints": [{"fqdn": {"hostname": "api.example.com", "port": 443}}]}
        }),
        json!({
            "apiVersion": "gateway.networking.k8s.io/v1alpha3", "kind": "BackendTLSPolicy",
            "metadata": {"name": "tls", "namespace": "ns"},
            "spec": {
                "targetRefs": [{"group": "gateway.envoyproxy.io", "kind": "Backend", "name": "be"}],
                "validation": {"wellKnownCACertificates": "System", "hostname": "api.example.com"}
            }
        }),
        json!({
            "apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": "key", "namespace": "ns"},
            "stringData": {"apiKey": "sk-test-value"}
        }),
    ]
}

const ROUTE: usize = 0;
const ASB: usize = 1;
const BSP: usize = 2;
const BE: usize = 3;
const TLS: usize = 4;
const SECRET: usize = 5;

fn manifests(docs: Vec<Value>) -> Vec<Manifest> {
    docs.into_iter()
        .enumerate()
        .map(|(i, v)| {
            Manifest::new(
                Source {
                    file: "t.yaml".into(),
                    document: i + 1,
                },
                v,
            )
        })
        .collect()
}

#[test]
fn base_compiles() {
    let out = compile(&manifests(base())).unwrap_or_else(|d| panic!("{d:#?}"));
    assert_eq!(out.config["routes"][0]["backends"][0]["weight"], 2);
    assert_eq!(out.config["models"][0]["created"], 1_716_285_600);
    assert!(out.bootstrap_yaml.contains("per_try_timeout: 10s"));
    assert!(out.bootstrap_yaml.contains("sni: api.example.com"));
    // The key is kept apart: a file the native config names, a variable the wasm
    // bootstrap reads; never in the config, the bootstraps or the Envoy Gateway
    // manifests.
    assert_eq!(out.secrets.len(), 1);
    let s = &out.secrets[0];
    assert_eq!(s.value.expose(), "sk-test-value");
    assert_eq!(
        out.config["backends"][0]["auth"],
        json!({"apiKey": {"file": format!("/etc/aigw/secrets/{}", s.name), "header": "authorization"}})
    );
    let wasm = out.bootstrap_wasm_yaml.as_deref().unwrap();
    assert!(wasm.contains(&format!("\"env\":\"{}\"", s.env)), "{wasm}");
    assert!(wasm.contains("host_env_keys"));
    assert!(out
        .secrets_env
        .as_deref()
        .unwrap()
        .contains(&format!("{}='sk-test-value'", s.env)));
    for text in [
        &out.config_json,
        &out.bootstrap_yaml,
        wasm,
        &out.envoy_gateway_yaml,
    ] {
        assert!(!text.contains("sk-test-value"));
    }
    // The Secret is not in the Envoy proxy's namespace: no credential on Envoy
    // Gateway, said once on the policy.
    assert_eq!(out.warnings.len(), 1, "{:#?}", out.warnings);
    let w = &out.warnings[0];
    assert_eq!(w.resource.as_ref().unwrap().kind, "BackendSecurityPolicy");
    assert_eq!(w.path, "spec.apiKey.secretRef");
    assert!(w.message.contains("cannot be mounted"), "{w}");
}

fn eg_config(out: &aigw_cli::Output) -> &Value {
    let eep = out
        .envoy_gateway
        .iter()
        .find(|d| d["kind"] == "EnvoyExtensionPolicy")
        .unwrap();
    &eep["spec"]["dynamicModule"][0]["config"]
}

/// On Envoy Gateway (routerOnly) a key of a Secret in the proxy's namespace is
/// mounted by the EnvoyProxy and named as a file; in the wasm variant it is an
/// environment variable the EnvoyProxy sets from the Secret and the wasm entry
/// passes to the VM; rules with several backends stay untranslated (warnings).
#[test]
fn envoy_gateway_mounts_credentials_and_runs_router_only() {
    let options = aigw_cli::Options {
        envoy_proxy_namespace: "ns".into(),
        wasm_url: Some("https://example.com/aigw.wasm".into()),
        wasm_sha256: Some("0".repeat(64)),
        ..aigw_cli::Options::default()
    };
    let out =
        aigw_cli::compile_with(&manifests(base()), &options).unwrap_or_else(|d| panic!("{d:#?}"));
    let config = eg_config(&out);
    assert_eq!(config["routerOnly"], true);
    assert_eq!(
        config["backends"][0]["auth"],
        json!({"apiKey": {"file": "/etc/aigw/credentials/ns/key/apiKey", "header": "authorization"}})
    );
    let proxy = &out.envoy_gateway[0];
    assert_eq!(proxy["kind"], "EnvoyProxy");
    let deployment = &proxy["spec"]["provider"]["kubernetes"]["envoyDeployment"];
    assert_eq!(
        deployment["pod"]["volumes"],
        json!([{"name": "aigw-key", "secret": {"secretName": "key", "items": [{"key": "apiKey", "path": "apiKey"}]}}])
    );
    assert_eq!(
        deployment["container"]["volumeMounts"],
        json!([{"name": "aigw-key", "mountPath": "/etc/aigw/credentials/ns/key", "readOnly": true}])
    );
    assert!(!out.envoy_gateway_yaml.contains("sk-test-value"));
    let wasm = out.envoy_gateway_wasm.as_ref().unwrap();
    let eep = wasm
        .iter()
        .find(|d| d["kind"] == "EnvoyExtensionPolicy")
        .unwrap();
    let wasm_config = &eep["spec"]["wasm"][0]["config"];
    assert_eq!(wasm_config["routerOnly"], true);
    assert_eq!(
        wasm_config["backends"][0]["auth"],
        json!({"apiKey": {"env": "AIGW_KEY_APIKEY", "header": "authorization"}})
    );
    assert_eq!(
        eep["spec"]["wasm"][0]["env"],
        json!({"hostKeys": ["AIGW_KEY_APIKEY"]})
    );
    let wasm_proxy = &wasm[0];
    assert_eq!(
        wasm_proxy["spec"]["provider"]["kubernetes"]["envoyDeployment"],
        json!({"container": {"env": [{"name": "AIGW_KEY_APIKEY",
            "valueFrom": {"secretKeyRef": {"name": "key", "key": "apiKey"}}}]}})
    );
    assert!(!out
        .envoy_gateway_wasm_yaml
        .as_deref()
        .unwrap_or("")
        .contains("sk-test-value"));
    assert!(out.warnings.is_empty(), "{:#?}", out.warnings);

    // A second backend in rule 0: an EnvoyPatchPolicy gives that rule's cluster
    // the upstream filter, with its own config (both backends, not routerOnly);
    // the router-level config leaves it alone (no credential for asb2 there) and
    // still does rule 1.
    let mut docs = base();
    let mut asb2 = docs[ASB].clone();
    asb2["metadata"]["name"] = json!("asb2");
    asb2["spec"]["schema"]["name"] = json!("Anthropic");
    docs.push(asb2);
    set(
        &mut docs[ROUTE],
        "/spec/rules/0/backendRefs/1",
        Some(json!({"name": "asb2", "priority": 1})),
    );
    let out = aigw_cli::compile_with(&manifests(docs.clone()), &options).unwrap();
    let config = eg_config(&out);
    let names: Vec<&str> = config["backends"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["asb.ns", "asb2.ns"]);
    assert!(config["backends"][0]["auth"].is_object());
    assert!(config["backends"][1].get("auth").is_none());
    let epp: Vec<&Value> = out
        .envoy_gateway
        .iter()
        .filter(|d| d["kind"] == "EnvoyPatchPolicy")
        .collect();
    assert_eq!(epp.len(), 1);
    assert_eq!(epp[0]["metadata"]["name"], "route-gw-aigw");
    assert_eq!(epp[0]["metadata"]["namespace"], "ns");
    assert_eq!(epp[0]["spec"]["targetRef"]["name"], "gw");
    let ops = epp[0]["spec"]["jsonPatches"].as_array().unwrap();
    assert!(ops.iter().all(|o| o["name"] == "httproute/ns/route/rule/0"));
    let filters = &ops[0]["operation"]["value"];
    let upstream: Value = serde_json::from_str(
        filters[0]["typed_config"]["filter_config"]["value"]
            .as_str()
            .unwrap(),
    )
    .unwrap();
    assert!(upstream.get("routerOnly").is_none());
    assert_eq!(upstream["backends"][0]["name"], "asb.ns");
    assert_eq!(upstream["backends"][1]["name"], "asb2.ns");
    // asb2 shares asb's policy: its key is mounted for the upstream filter too.
    assert_eq!(
        upstream["backends"][1]["auth"]["apiKey"]["file"],
        "/etc/aigw/credentials/ns/key/apiKey"
    );
    assert_eq!(
        ops[4]["operation"]["path"],
        "/load_assignment/endpoints/1/priority"
    );
    assert_eq!(ops[4]["operation"]["value"], 1);
    // Not in the wasm variant, which says what the rule loses there.
    let wasm = out.envoy_gateway_wasm.as_ref().unwrap();
    assert!(!wasm.iter().any(|d| d["kind"] == "EnvoyPatchPolicy"));
    assert!(wasm
        .iter()
        .filter(|d| d["kind"] == "BackendTrafficPolicy")
        .all(|d| d["spec"].get("timeout").is_none()));
    let btp = out
        .envoy_gateway
        .iter()
        .find(|d| d["kind"] == "BackendTrafficPolicy")
        .unwrap();
    assert_eq!(
        btp["spec"]["timeout"]["http"]["connectionIdleTimeout"],
        "1h"
    );
    assert!(out
        .warnings
        .iter()
        .any(|w| w.path == "spec.rules[0].backendRefs"
            && w.message.contains("not applied in envoy-gateway-wasm.yaml")
            && w.message.contains("translation to schema Anthropic")));
    assert!(out.warnings.iter().any(|w| w.path.is_empty()
        && w.message.contains("EnvoyPatchPolicy ns/route-gw-aigw")
        && w.message
            .contains("extensionApis.enableEnvoyPatchPolicy: true")));
    assert!(!out.warnings.iter().any(
        |w| w.message.contains("not applied on Envoy Gateway") || w.path.ends_with(".priority")
    ));
    assert!(!out
        .warnings
        .iter()
        .any(|w| w.path.starts_with("spec.rules[1]")));

    // A per-request key in a client credential header: the router level leaves it
    // for the upstream instance (filter test router_only_leaves_a_per_request_...).
    let mut with_override = docs.clone();
    set(
        &mut with_override[BSP],
        "/spec/credentialOverride",
        Some(json!({"fromRequestHeaders": {"header": "x-api-key"}})),
    );
    let out = aigw_cli::compile_with(&manifests(with_override), &options).unwrap();
    assert!(
        !out.warnings
            .iter()
            .any(|w| w.path.starts_with("spec.rules[0].backendRefs[0]")),
        "{:#?}",
        out.warnings
    );

    // Backends mixing a host name and an IP address: Envoy Gateway makes a
    // cluster per backendRef, which is not patched; the old warnings stay.
    let mut mixed = docs.clone();
    let mut be2 = mixed[BE].clone();
    be2["metadata"]["name"] = json!("be2");
    be2["spec"]["endpoints"] = json!([{"ip": {"address": "10.1.2.3", "port": 8000}}]);
    mixed.push(be2);
    let last = mixed.len() - 2;
    set(
        &mut mixed[last],
        "/spec/backendRef/name",
        Some(json!("be2")),
    );
    let out = aigw_cli::compile_with(&manifests(mixed), &options).unwrap();
    assert!(!out
        .envoy_gateway
        .iter()
        .any(|d| d["kind"] == "EnvoyPatchPolicy"));
    assert!(out
        .warnings
        .iter()
        .any(|w| w.path == "spec.rules[0].backendRefs[1]"
            && w.message.contains("not applied on Envoy Gateway")
            && w.message.contains("mix host names and IP addresses")));
    assert!(out
        .warnings
        .iter()
        .any(|w| w.path == "spec.rules[0].backendRefs[1].priority"));

    // No Gateway to target: no patch either.
    let mut detached = docs;
    set(&mut detached[ROUTE], "/spec/targetRefs", None);
    let out = aigw_cli::compile_with(&manifests(detached), &options).unwrap();
    assert!(!out
        .envoy_gateway
        .iter()
        .any(|d| d["kind"] == "EnvoyPatchPolicy"));
    assert!(out
        .warnings
        .iter()
        .any(|w| w.path == "spec.rules[0].backendRefs[1]"
            && w.message.contains("the route names none")));
}

/// What the filter changes before Envoy picks the route again is checked
/// against the rule: header matches it may touch, SigV4 over a port.
#[test]
fn envoy_gateway_router_only_checks_are_warnings() {
    let mut docs = base();
    set(
        &mut docs[ROUTE],
        "/spec/rules/1/matches/0/headers/1",
        Some(json!({"name": "Authorization", "value": "Bearer x"})),
    );
    let out = compile(&manifests(docs)).unwrap_or_else(|d| panic!("{d:#?}"));
    assert!(
        out.warnings
            .iter()
            .any(|w| w.path == "spec.rules[1].matches[0].headers"
                && w.message.contains("'authorization'")
                && w.message.contains("catch-all 404")),
        "{:#?}",
        out.warnings
    );

    let mut docs = base();
    set(
        &mut docs[BSP],
        "/spec",
        Some(
            json!({"type": "AWSCredentials", "awsCredentials": {"region": "us-east-1",
            "credentialsFile": {"secretRef": {"name": "aws"}}}}),
        ),
    );
    docs.push(secret(
        "aws",
        json!({"credentials": "[default]\naws_access_key_id = AKID\naws_secret_access_key = S\n"}),
    ));
    set(
        &mut docs[ASB],
        "/spec/schema/name",
        Some(json!("AWSBedrock")),
    );
    set(
        &mut docs[BE],
        "/spec/endpoints/0/fqdn/port",
        Some(json!(8443)),
    );
    set(&mut docs[ROUTE], "/spec/rules/1", None);
    let out = compile(&manifests(docs)).unwrap_or_else(|d| panic!("{d:#?}"));
    // The route rewrites Host to the host name, without the port Gateway API's
    // URLRewrite cannot carry, and the config signs for exactly that host.
    assert!(
        !out.warnings.iter().any(|w| w.message.contains("8443")),
        "{:#?}",
        out.warnings
    );
    let policy = out
        .envoy_gateway
        .iter()
        .find(|d| d["kind"] == "EnvoyExtensionPolicy")
        .unwrap();
    assert_eq!(
        policy["spec"]["dynamicModule"][0]["config"]["backends"][0]["host"],
        "api.example.com"
    );
    assert!(out
        .envoy_gateway_yaml
        .contains("type: URLRewrite\n      urlRewrite:\n        hostname: api.example.com\n"));
    // The standalone bootstrap sends and signs the port.
    assert_eq!(out.config["backends"][0]["host"], "api.example.com:8443");
    assert!(out
        .bootstrap_yaml
        .contains("host_rewrite_literal: api.example.com:8443"));
}

#[test]
fn each_rule_reports_its_field() {
    let many = |n: usize, item: Value| Value::Array(vec![item; n]);
    let cost = json!({"metadataKey": "k", "type": "InputToken"});
    let header = json!({"name": "x-ai-eg-model", "value": "m1"});
    // (edit, kind, path, message fragment)
    let cases: Vec<ErrorCase> = vec![
        // AIGatewayRoute
        (
            remove(ROUTE, "/spec"),
            "AIGatewayRoute",
            "spec",
            "is required",
        ),
        (
            edit(ROUTE, "/apiVersion", json!("aigateway.envoyproxy.io/v2")),
            "AIGatewayRoute",
            "apiVersion",
            "unsupported version",
        ),
        (
            edit(ROUTE, "/metadata/name", json!("Bad_Name")),
            "AIGatewayRoute",
            "metadata.name",
            "not a valid Kubernetes name",
        ),
        (
            edit(ROUTE, "/spec/targetRefs", json!([])),
            "AIGatewayRoute",
            "spec.targetRefs",
            "at least 1",
        ),
        (
            edit(ROUTE, "/spec/targetRefs/0", json!({"kind": "Gateway"})),
            "AIGatewayRoute",
            "spec.targetRefs[0].name",
            "is required",
        ),
        (
            edit(
                ROUTE,
                "/spec/parentRefs",
                json!([{"name": "x", "kind": "Service"}]),
            ),
            "AIGatewayRoute",
            "spec.parentRefs[0].kind",
            "only Gateway",
        ),
        (
            edit(ROUTE, "/spec/schema/name", json!("AWSBedrock")),
            "AIGatewayRoute",
            "spec.schema.name",
            "must be OpenAI",
        ),
        (
            edit(ROUTE, "/spec/filterConfig", json!({"type": "Wasm"})),
            "AIGatewayRoute",
            "spec.filterConfig.type",
            "unsupported value",
        ),
        (
            remove(ROUTE, "/spec/rules"),
            "AIGatewayRoute",
            "spec.rules",
            "is required",
        ),
        (
            edit(ROUTE, "/spec/rules", many(129, json!({}))),
            "AIGatewayRoute",
            "spec.rules",
            "at most 128",
        ),
        (
            edit(
                ROUTE,
                "/spec/rules/0/matches/0/headers/0/type",
                json!("RegularExpression"),
            ),
            "AIGatewayRoute",
            "spec.rules[0].matches[0].headers[0].type",
            "only Exact",
        ),
        (
            edit(
                ROUTE,
                "/spec/rules/0/matches/0/headers/0/type",
                json!("Prefix"),
            ),
            "AIGatewayRoute",
            "spec.rules[0].matches[0].headers[0].type",
            "unsupported value",
        ),
        (
            remove(ROUTE, "/spec/rules/0/matches/0/headers/0/name"),
            "AIGatewayRoute",
            "spec.rules[0].matches[0].headers[0].name",
            "is required",
        ),
        (
            edit(ROUTE, "/spec/rules/0/matches/0/headers/0/value", json!("")),
            "AIGatewayRoute",
            "spec.rules[0].matches[0].headers[0].value",
            "must not be empty",
        ),
        (
            edit(
                ROUTE,
                "/spec/rules/0/matches/0/headers",
                many(2, header.clone()),
            ),
            "AIGatewayRoute",
            "spec.rules[0].matches[0].headers[1].name",
            "duplicate header",
        ),
        (
            edit(ROUTE, "/spec/rules/0/matches/0/headers", many(17, header)),
            "AIGatewayRoute",
            "spec.rules[0].matches[0].headers",
            "at most 16",
        ),
        (
            edit(
                ROUTE,
                "/spec/rules/0/matches/0/path",
                json!({"value": "/v1"}),
            ),
            "AIGatewayRoute",
            "spec.rules[0].matches[0].path",
            "not supported",
        ),
        (
            edit(
                ROUTE,
                "/spec/rules/0/matches/0/headers/0/name",
                json!("x-other"),
            ),
            "AIGatewayRoute",
            "spec.rules[0].matches[0].headers",
            "x-ai-eg-model",
        ),
        (
            remove(ROUTE, "/spec/rules/0/matches"),
            "AIGatewayRoute",
            "spec.rules[0].matches",
            "x-ai-eg-model",
        ),
        (
            edit(
                ROUTE,
                "/spec/rules/1/matches/0/headers/0/value",
                json!("m1"),
            ),
            "AIGatewayRoute",
            "spec.rules[1].matches[0].headers[0].value",
            "already routed",
        ),
        (
            edit(ROUTE, "/spec/rules/0/backendRefs/0/name", json!("")),
            "AIGatewayRoute",
            "spec.rules[0].backendRefs[0].name",
            "must not be empty",
        ),
        (
            edit(ROUTE, "/spec/rules/0/backendRefs/0/name", json!("nope")),
            "AIGatewayRoute",
            "spec.rules[0].backendRefs[0].name",
            "not found",
        ),
        (
            edit(
                ROUTE,
                "/spec/rules/0/backendRefs/0/namespace",
                json!("other"),
            ),
            "AIGatewayRoute",
            "spec.rules[0].backendRefs[0].name",
            "other/asb not found",
        ),
        (
            edit(ROUTE, "/spec/rules/0/backendRefs/0/weight", json!(-1)),
            "AIGatewayRoute",
            "spec.rules[0].backendRefs[0].weight",
            "between 0 and",
        ),
        (
            edit(ROUTE, "/spec/rules/0/backendRefs/0/weight", json!("2")),
            "AIGatewayRoute",
            "spec.rules[0].backendRefs[0].weight",
            "must be an integer",
        ),
        (
            edit(ROUTE, "/spec/rules/0/backendRefs/0/priority", json!(-1)),
            "AIGatewayRoute",
            "spec.rules[0].backendRefs[0].priority",
            "between 0 and",
        ),
        (
            edit(
                ROUTE,
                "/spec/rules/0/backendRefs/0/kind",
                json!("InferencePool"),
            ),
            "AIGatewayRoute",
            "spec.rules[0].backendRefs[0].kind",
            "InferencePool",
        ),
        (
            edit(ROUTE, "/spec/rules/0/backendRefs/1", json!({"name": "asb"})),
            "AIGatewayRoute",
            "spec.rules[0].backendRefs[1].name",
            "referenced twice",
        ),
        (
            edit(ROUTE, "/spec/rules/0/backendRefs", json!([])),
            "AIGatewayRoute",
            "spec.rules[0].backendRefs",
            "at least one backend",
        ),
        (
            edit(
                ROUTE,
                "/spec/rules/0/backendRefs/0/headerMutation",
                json!({"set": [{"name": "x-ai-eg-model", "value": "m9"}]}),
            ),
            "AIGatewayRoute",
            "spec.rules[0].backendRefs[0].headerMutation.set[0].name",
            "reserved",
        ),
        (
            edit(
                ROUTE,
                "/spec/rules/0/backendRefs/0/bodyMutation",
                json!({"set": [{"path": "service_tier", "value": "flex"}]}),
            ),
            "AIGatewayRoute",
            "spec.rules[0].backendRefs[0].bodyMutation.set[0].value",
            "must be JSON text",
        ),
        (
            edit(ROUTE, "/spec/rules/0/timeouts/request", json!("10x")),
            "AIGatewayRoute",
            "spec.rules[0].timeouts.request",
            "not a Gateway API duration",
        ),
        (
            edit(ROUTE, "/spec/rules/0/timeouts/backendRequest", json!("1m")),
            "AIGatewayRoute",
            "spec.rules[0].timeouts.backendRequest",
            "longer than",
        ),
        (
            edit(
                ROUTE,
                "/spec/rules/0/modelsCreatedAt",
                json!("2024-02-30T00:00:00Z"),
            ),
            "AIGatewayRoute",
            "spec.rules[0].modelsCreatedAt",
            "RFC 3339",
        ),
        (
            edit(ROUTE, "/spec/rules/0/modelsOwnedBy", json!(3)),
            "AIGatewayRoute",
            "spec.rules[0].modelsOwnedBy",
            "must be a string",
        ),
        (
            remove(ROUTE, "/spec/llmRequestCosts/0/metadataKey"),
            "AIGatewayRoute",
            "spec.llmRequestCosts[0].metadataKey",
            "is required",
        ),
        (
            edit(ROUTE, "/spec/llmRequestCosts/0/type", json!("Banana")),
            "AIGatewayRoute",
            "spec.llmRequestCosts[0].type",
            "unsupported value",
        ),
        (
            remove(ROUTE, "/spec/llmRequestCosts/1/cel"),
            "AIGatewayRoute",
            "spec.llmRequestCosts[1].cel",
            "required when type is CEL",
        ),
        (
            edit(ROUTE, "/spec/llmRequestCosts/1/metadataKey", json!("in")),
            "AIGatewayRoute",
            "spec.llmRequestCosts[1].metadataKey",
            "duplicate metadata key",
        ),
        (
            edit(
                ROUTE,
                "/spec/llmRequestCosts/0/metadataKey",
                json!("backend_name"),
            ),
            "AIGatewayRoute",
            "spec.llmRequestCosts[0].metadataKey",
            "reserved",
        ),
        (
            edit(ROUTE, "/spec/llmRequestCosts", many(37, cost)),
            "AIGatewayRoute",
            "spec.llmRequestCosts",
            "at most 36",
        ),
        (
            push(base()[ROUTE].clone()),
            "AIGatewayRoute",
            "metadata.name",
            "duplicate AIGatewayRoute ns/route",
        ),
        // AIServiceBackend
        (
            remove(ASB, "/spec/schema"),
            "AIServiceBackend",
            "spec.schema",
            "is required",
        ),
        (
            edit(ASB, "/spec/schema/name", json!("Carrier")),
            "AIServiceBackend",
            "spec.schema.name",
            "unsupported value",
        ),
        (
            remove(ASB, "/spec/backendRef"),
            "AIServiceBackend",
            "spec.backendRef",
            "is required",
        ),
        (
            remove(ASB, "/spec/backendRef/name"),
            "AIServiceBackend",
            "spec.backendRef.name",
            "is required",
        ),
        (
            edit(ASB, "/spec/backendRef/kind", json!("Service")),
            "AIServiceBackend",
            "spec.backendRef",
            "Envoy Gateway Backend",
        ),
        (
            edit(ASB, "/spec/backendRef/name", json!("gone")),
            "AIServiceBackend",
            "spec.backendRef.name",
            "not found",
        ),
        (
            edit(ASB, "/spec/backendSecurityPolicyRef/name", json!("gone")),
            "AIServiceBackend",
            "spec.backendSecurityPolicyRef.name",
            "not found",
        ),
        (
            edit(ASB, "/spec/headerMutation", json!({"remove": ["Host"]})),
            "AIServiceBackend",
            "spec.headerMutation.remove[0]",
            "reserved",
        ),
        (
            push(base()[ASB].clone()),
            "AIServiceBackend",
            "metadata.name",
            "duplicate",
        ),
        // BackendSecurityPolicy
        (
            remove(BSP, "/spec/type"),
            "BackendSecurityPolicy",
            "spec.type",
            "is required",
        ),
        (
            edit(BSP, "/spec/type", json!("Password")),
            "BackendSecurityPolicy",
            "spec.type",
            "unsupported value",
        ),
        (
            edit(BSP, "/spec/type", json!("AWSCredentials")),
            "BackendSecurityPolicy",
            "spec.awsCredentials",
            "is required when type is AWSCredentials",
        ),
        (
            edit(BSP, "/spec/type", json!("AWSCredentials")),
            "BackendSecurityPolicy",
            "spec.apiKey",
            "only one mechanism",
        ),
        (
            remove(BSP, "/spec/apiKey/secretRef"),
            "BackendSecurityPolicy",
            "spec.apiKey.secretRef",
            "is required",
        ),
        (
            edit(BSP, "/spec/apiKey/secretRef/name", json!("")),
            "BackendSecurityPolicy",
            "spec.apiKey.secretRef.name",
            "must not be empty",
        ),
        (
            edit(SECRET, "/stringData", json!({"other": "x"})),
            "BackendSecurityPolicy",
            "spec.apiKey.secretRef",
            "has no key 'apiKey'",
        ),
        (
            edit(
                BSP,
                "/spec",
                json!({"type": "AWSCredentials", "awsCredentials": {"region": ""}}),
            ),
            "BackendSecurityPolicy",
            "spec.awsCredentials.region",
            "must not be empty",
        ),
        (
            edit(
                BSP,
                "/spec",
                json!({"type": "AWSCredentials", "awsCredentials": {"region": "us-east-1",
                "credentialsFile": {"secretRef": {"name": "key"}}, "oidcExchangeToken": {"oidc": {}, "awsRoleArn": "arn"}}}),
            ),
            "BackendSecurityPolicy",
            "spec.awsCredentials",
            "only one of credentialsFile or oidcExchangeToken",
        ),
        (
            edit(
                BSP,
                "/spec",
                json!({"type": "AWSCredentials", "awsCredentials": {"region": "us-east-1", "oidcExchangeToken": {"oidc": {}}}}),
            ),
            "BackendSecurityPolicy",
            "spec.awsCredentials.oidcExchangeToken.awsRoleArn",
            "is required",
        ),
        (
            edit(
                BSP,
                "/spec",
                json!({"type": "AzureCredentials", "azureCredentials": {"clientID": "c", "tenantID": "t"}}),
            ),
            "BackendSecurityPolicy",
            "spec.azureCredentials",
            "exactly one of clientSecretRef or oidcExchangeToken",
        ),
        (
            edit(
                BSP,
                "/spec",
                json!({"type": "AzureCredentials", "azureCredentials": {"clientID": "c", "tenantID": "t",
                "clientSecretRef": {"name": "key"}, "oidcExchangeToken": {"oidc": {}}}}),
            ),
            "BackendSecurityPolicy",
            "spec.azureCredentials",
            "exactly one of clientSecretRef or oidcExchangeToken",
        ),
        (
            edit(
                BSP,
                "/spec",
                json!({"type": "AzureCredentials", "azureCredentials": {"tenantID": "t", "clientSecretRef": {"name": "key"}}}),
            ),
            "BackendSecurityPolicy",
            "spec.azureCredentials.clientID",
            "is required",
        ),
        (
            edit(BSP, "/spec/targetRefs", json!([{"name": "ghost"}])),
            "BackendSecurityPolicy",
            "spec.targetRefs[0].name",
            "not found",
        ),
        // Envoy Gateway Backend
        (
            remove(BE, "/spec/endpoints"),
            "Backend",
            "spec.endpoints",
            "at least 1",
        ),
        (
            edit(
                BE,
                "/spec/endpoints/0/ip",
                json!({"address": "10.0.0.1", "port": 80}),
            ),
            "Backend",
            "spec.endpoints[0]",
            "exactly one of fqdn, ip or unix",
        ),
        (
            edit(BE, "/spec/endpoints/0", json!({})),
            "Backend",
            "spec.endpoints[0]",
            "exactly one of fqdn, ip or unix",
        ),
        (
            edit(BE, "/spec/endpoints/0/fqdn/port", json!(0)),
            "Backend",
            "spec.endpoints[0].fqdn.port",
            "between 1 and 65535",
        ),
        (
            remove(BE, "/spec/endpoints/0/fqdn/port"),
            "Backend",
            "spec.endpoints[0].fqdn.port",
            "is required",
        ),
        (
            edit(
                BE,
                "/spec/endpoints/0/fqdn/hostname",
                json!("API.example.com"),
            ),
            "Backend",
            "spec.endpoints[0].fqdn.hostname",
            "lowercase DNS",
        ),
        (
            edit(
                BE,
                "/spec/endpoints/1",
                json!({"ip": {"address": "10.0.0.300", "port": 80}}),
            ),
            "Backend",
            "spec.endpoints[1].ip.address",
            "not an IP",
        ),
        (
            edit(
                BE,
                "/spec/endpoints/1",
                json!({"ip": {"address": "10.0.0.3", "port": 80}}),
            ),
            "Backend",
            "spec.endpoints",
            "cannot be mixed",
        ),
        (
            edit(BE, "/spec/endpoints/0", json!({"unix": {"path": "/s"}})),
            "Backend",
            "spec.endpoints[0].unix",
            "not supported",
        ),
        (
            edit(BE, "/spec/type", json!("DynamicResolver")),
            "Backend",
            "spec.type",
            "not supported",
        ),
        (
            edit(
                BE,
                "/spec/tls",
                json!({"wellKnownCACertificates": "System", "insecureSkipVerify": true}),
            ),
            "Backend",
            "spec.tls",
            "insecureSkipVerify",
        ),
        (
            edit(BE, "/spec/tls", json!({})),
            "Backend",
            "spec.tls",
            "one of caCertificateRefs or wellKnownCACertificates",
        ),
        (
            edit(
                BE,
                "/spec/tls",
                json!({"caCertificateRefs": [{"name": "ca"}]}),
            ),
            "Backend",
            "spec.tls.caCertificateRefs",
            "not supported",
        ),
        // BackendTLSPolicy
        (
            remove(TLS, "/spec/validation/hostname"),
            "BackendTLSPolicy",
            "spec.validation.hostname",
            "is required",
        ),
        (
            remove(TLS, "/spec/validation/wellKnownCACertificates"),
            "BackendTLSPolicy",
            "spec.validation",
            "exactly one of",
        ),
        (
            push({
                let mut t = base()[TLS].clone();
                t["metadata"]["name"] = json!("tls2");
                t
            }),
            "BackendTLSPolicy",
            "spec.targetRefs[0].name",
            "already has a BackendTLSPolicy",
        ),
        // Any resource
        (
            edit(SECRET, "/metadata", json!({})),
            "",
            "metadata.name",
            "is required",
        ),
        (remove(ROUTE, "/kind"), "", "kind", "is required"),
    ];

    common::assert_error_cases(&cases, base, manifests, "sk-test-value");
}

/// A BackendSecurityPolicy of type `t` with mechanism `field`, targeting `asb`.
fn policy(t: &str, field: &str, mechanism: Value) -> Value {
    json!({
        "apiVersion": "aigateway.envoyproxy.io/v1beta1", "kind": "BackendSecurityPolicy",
        "metadata": {"name": "bsp", "namespace": "ns"},
        "spec": {"type": t, field: mechanism}
    })
}

/// A Secret `name` in namespace `ns` with `stringData`.
fn secret(name: &str, data: Value) -> Value {
    json!({"apiVersion": "v1", "kind": "Secret",
           "metadata": {"name": name, "namespace": "ns"}, "stringData": data})
}

const AWS_FILE: &str =
    "[default]\naws_access_key_id = AKID\naws_secret_access_key = sk-test-value\n";

/// Credentials, schemas and request edits: each rule names its resource and field.
#[test]
fn credential_and_mutation_rules_report_their_field() {
    fn aws(profile: &str) -> Value {
        policy(
            "AWSCredentials",
            "awsCredentials",
            json!({"region": "us-east-1", "credentialsFile": {"secretRef": {"name": "aws"}, "profile": profile}}),
        )
    }
    let cases: Vec<ErrorCase> = vec![
        // Secrets the config needs.
        (
            remove(SECRET, "/stringData"),
            "BackendSecurityPolicy",
            "spec.apiKey.secretRef",
            "has no key 'apiKey' (its keys: none)",
        ),
        (
            edit(SECRET, "/metadata/name", json!("other")),
            "BackendSecurityPolicy",
            "spec.apiKey.secretRef",
            "Secret ns/key is not among the inputs",
        ),
        (
            edit(SECRET, "/stringData/apiKey", json!("  ")),
            "BackendSecurityPolicy",
            "spec.apiKey.secretRef",
            "key 'apiKey' is empty",
        ),
        (
            edit(SECRET, "/data", json!({"apiKey": "%%%"})),
            "Secret",
            "data.apiKey",
            "not valid base64",
        ),
        (
            Box::new(|docs: &mut Vec<Value>| {
                docs[BSP] = aws("prod");
                docs[SECRET] = secret("aws", json!({"credentials": AWS_FILE}));
            }),
            "BackendSecurityPolicy",
            "spec.awsCredentials.credentialsFile.profile",
            "has no profile 'prod'",
        ),
        (
            Box::new(|docs: &mut Vec<Value>| {
                docs[BSP] = aws("default");
                docs[SECRET] = secret(
                    "aws",
                    json!({"credentials": "[default]\naws_access_key_id = AKID\n"}),
                );
            }),
            "BackendSecurityPolicy",
            "spec.awsCredentials.credentialsFile.profile",
            "lacks aws_access_key_id or aws_secret_access_key",
        ),
        (
            Box::new(|docs: &mut Vec<Value>| {
                docs[BSP] = aws("default");
                docs[SECRET] = secret("aws", json!({"config": AWS_FILE}));
            }),
            "BackendSecurityPolicy",
            "spec.awsCredentials.credentialsFile.secretRef",
            "has no key 'credentials'",
        ),
        (
            edit(
                BSP,
                "/metadata/annotations",
                json!({"aigw.io/credentials-file": "keys/openai"}),
            ),
            "BackendSecurityPolicy",
            "metadata.annotations.aigw.io/credentials-file",
            "must be an absolute file path",
        ),
        // Per-request credentials.
        (
            edit(
                BSP,
                "/spec/credentialOverride",
                json!({"fromRequestHeaders": {}}),
            ),
            "BackendSecurityPolicy",
            "spec.credentialOverride.fromRequestHeaders",
            "the default header 'x-aigw-api-key' is reserved",
        ),
        (
            edit(
                BSP,
                "/spec/credentialOverride",
                json!({"fromDynamicMetadata": {"namespace": "envoy.filters.http.ext_authz"}}),
            ),
            "BackendSecurityPolicy",
            "spec.credentialOverride.fromDynamicMetadata",
            "from a request header only",
        ),
        (
            Box::new(|docs: &mut Vec<Value>| {
                docs[BSP] = aws("default");
                docs[BSP]["spec"]["credentialOverride"] =
                    json!({"fromRequestHeaders": {"header": "x-tenant-key"}});
                docs[SECRET] = secret("aws", json!({"credentials": AWS_FILE}));
            }),
            "BackendSecurityPolicy",
            "spec.credentialOverride.fromRequestHeaders",
            "cannot replace SigV4",
        ),
        (
            Box::new(|docs: &mut Vec<Value>| {
                docs[ASB]["spec"]["schema"] = json!({"name": "AzureOpenAI"});
                docs[BSP] = policy(
                    "AzureCredentials",
                    "azureCredentials",
                    json!({"clientID": "c", "tenantID": "t", "clientSecretRef": {"name": "key"}}),
                );
                docs[BSP]["spec"]["credentialOverride"] = json!({"fromRequestHeaders":
                    {"header": "x-tenant-token", "fallbackToConfigured": false}});
            }),
            "BackendSecurityPolicy",
            "spec.credentialOverride.fromRequestHeaders.fallbackToConfigured",
            "as an api-key",
        ),
        // What schemas need.
        (
            edit(ASB, "/spec/schema/name", json!("GCPVertexAI")),
            "AIServiceBackend",
            "spec.schema.name",
            "needs the projectName and region of a GCPCredentials",
        ),
        (
            Box::new(|docs: &mut Vec<Value>| {
                docs[ASB]["spec"]["schema"]["name"] = json!("AWSBedrock");
                docs[BE]["spec"]["endpoints"] =
                    json!([{"ip": {"address": "10.0.0.1", "port": 443}}]);
                docs[TLS]["spec"]["targetRefs"][0]["name"] = json!("other");
            }),
            "AIServiceBackend",
            "spec.schema.name",
            "needs the region of an AWSCredentials",
        ),
        (
            Box::new(|docs: &mut Vec<Value>| {
                docs[ASB]["spec"]["schema"]["name"] = json!("GCPAnthropic");
                docs[BSP] = policy(
                    "GCPCredentials",
                    "gcpCredentials",
                    json!({"isPassthrough": true, "region": "us-east5"}),
                );
            }),
            "BackendSecurityPolicy",
            "spec.gcpCredentials",
            "not take them from per-request headers",
        ),
        (
            edit(
                BSP,
                "/spec",
                json!({"type": "GCPCredentials", "gcpCredentials": {"region": "us-east5"}}),
            ),
            "BackendSecurityPolicy",
            "spec.gcpCredentials",
            "projectName and region are required unless isPassthrough",
        ),
        (
            edit(
                ASB,
                "/spec/schema",
                json!({"name": "Anthropic", "prefix": "/anthropic/v1"}),
            ),
            "AIServiceBackend",
            "spec.schema.prefix",
            "only OpenAI takes a path prefix",
        ),
        // Request edits.
        (
            edit(
                ASB,
                "/spec/headerMutation",
                json!({"set": [{"name": "bad header", "value": "v"}]}),
            ),
            "AIServiceBackend",
            "spec.headerMutation.set[0].name",
            "not a valid header name",
        ),
        (
            edit(
                ASB,
                "/spec/headerMutation",
                json!({"set": [{"name": "x-a", "value": "v\r\nx-b: 1"}]}),
            ),
            "AIServiceBackend",
            "spec.headerMutation.set[0].value",
            "CR, LF or NUL",
        ),
        (
            edit(
                ASB,
                "/spec/headerMutation",
                json!({"set": [{"name": "X-A", "value": "1"}, {"name": "x-a", "value": "2"}]}),
            ),
            "AIServiceBackend",
            "spec.headerMutation.set[1].name",
            "set twice",
        ),
        (
            edit(
                ASB,
                "/spec/headerMutation",
                json!({"set": [{"name": "x-a"}]}),
            ),
            "AIServiceBackend",
            "spec.headerMutation.set[0].value",
            "is required",
        ),
        (
            edit(
                ASB,
                "/spec/headerMutation",
                json!({"remove": vec![json!("x-a"); 17]}),
            ),
            "AIServiceBackend",
            "spec.headerMutation.remove",
            "at most 16",
        ),
        (
            edit(ASB, "/spec/bodyMutation", json!({"set": [{"value": "1"}]})),
            "AIServiceBackend",
            "spec.bodyMutation.set[0].path",
            "is required",
        ),
        (
            edit(ASB, "/spec/bodyMutation", json!({"remove": [""]})),
            "AIServiceBackend",
            "spec.bodyMutation.remove[0]",
            "must not be empty",
        ),
    ];
    common::assert_error_cases(&cases, base, manifests, "sk-test-value");
}

/// An OIDC client-credentials grant as the CRD spells it (`oidcExchangeToken`).
fn oidc_token(extra: Value) -> Value {
    let mut o = json!({"oidc": {
        "provider": {"issuer": "https://idp.example.com"},
        "clientID": "aigw",
        "clientSecret": {"name": "idp"}
    }});
    for (k, v) in extra.as_object().unwrap() {
        o[k] = v.clone();
    }
    o
}

/// A GCP service-account key file whose private key is the test's secret value.
const GCP_KEY: &str = r#"{"type": "service_account", "client_email": "sa@p.iam.gserviceaccount.com", "private_key": "-----BEGIN PRIVATE KEY-----\nsk-test-value\n-----END PRIVATE KEY-----\n"}"#;

/// A policy, its Secrets, the backend's schema, where in `auth` the secret value
/// lands, and the token clusters the config names.
type ExchangeCase = (
    Value,
    Vec<Value>,
    &'static str,
    &'static str,
    Vec<&'static str>,
);

/// Each token exchange a policy asks for: the backend's `auth` (policy, Secrets,
/// schema) → the `auth` kind the filter gets and the token hosts it calls.
fn exchange_cases() -> Vec<ExchangeCase> {
    vec![
        (
            policy(
                "AzureCredentials",
                "azureCredentials",
                json!({"clientID": "c", "tenantID": "t", "clientSecretRef": {"name": "az"}}),
            ),
            vec![secret("az", json!({"client-secret": "sk-test-value"}))],
            "AzureOpenAI",
            "/azureEntraId/clientSecret/value",
            vec!["aigw_token_login_microsoftonline_com"],
        ),
        (
            policy(
                "AzureCredentials",
                "azureCredentials",
                json!({"clientID": "c", "tenantID": "t", "oidcExchangeToken": oidc_token(json!({}))}),
            ),
            vec![secret("idp", json!({"client-secret": "sk-test-value"}))],
            "AzureOpenAI",
            "/azureEntraId/federatedToken/clientCredentials/clientSecret/value",
            vec![
                "aigw_token_idp_example_com",
                "aigw_token_login_microsoftonline_com",
            ],
        ),
        (
            policy(
                "AWSCredentials",
                "awsCredentials",
                json!({"region": "eu-central-1", "oidcExchangeToken": oidc_token(
                    json!({"awsRoleArn": "arn:aws:iam::1:role/r"}))}),
            ),
            vec![secret("idp", json!({"client-secret": "sk-test-value"}))],
            "AWSBedrock",
            "/awsSigV4/webIdentity/token/clientCredentials/clientSecret/value",
            vec![
                "aigw_token_idp_example_com",
                "aigw_token_sts_eu-central-1_amazonaws_com",
            ],
        ),
        (
            policy(
                "GCPCredentials",
                "gcpCredentials",
                json!({"projectName": "p", "region": "us-east5",
                       "credentialsFile": {"secretRef": {"name": "sa"}}}),
            ),
            vec![secret("sa", json!({"service_account.json": GCP_KEY}))],
            "GCPVertexAI",
            "/gcpServiceAccount/key/value",
            vec!["aigw_token_oauth2_googleapis_com"],
        ),
        (
            policy(
                "GCPCredentials",
                "gcpCredentials",
                json!({"projectName": "p", "region": "us-east5",
                       "workloadIdentityFederationConfig": {
                           "projectID": "42", "workloadIdentityPoolName": "pool",
                           "workloadIdentityProviderName": "prov",
                           "serviceAccountImpersonation": {"serviceAccountName": "caller"},
                           "oidcExchangeToken": oidc_token(json!({}))}}),
            ),
            vec![secret("idp", json!({"client-secret": "sk-test-value"}))],
            "GCPVertexAI",
            "/gcpWorkloadIdentity/subjectToken/clientCredentials/clientSecret/value",
            vec![
                "aigw_token_iamcredentials_googleapis_com",
                "aigw_token_idp_example_com",
                "aigw_token_sts_googleapis_com",
            ],
        ),
    ]
}

/// Token exchanges compile into the filter's own exchanges: the secret each needs
/// is compiled in, every token host gets a cluster in the bootstrap under the
/// name the config gives, nothing is "not enforced", and the secret is in no
/// message; with the annotation the filter reads a token file instead.
#[test]
fn token_exchanges_compile_into_filter_exchanges() {
    for (bsp, secrets, schema, value_at, clusters) in exchange_cases() {
        let mut docs = base();
        docs[ASB]["spec"]["schema"] = json!({"name": schema});
        docs[BSP] = bsp;
        docs.truncate(SECRET);
        docs.extend(secrets);
        let out = compile(&manifests(docs.clone())).unwrap_or_else(|d| panic!("{d:#?}"));
        let auth = &out.config["backends"][0]["auth"];
        let want = if value_at.ends_with("/key/value") {
            GCP_KEY
        } else {
            "sk-test-value"
        };
        // Kept apart: the config names the file holding it.
        let file_at = format!("{}/file", value_at.strip_suffix("/value").unwrap());
        let file = auth
            .pointer(&file_at)
            .and_then(Value::as_str)
            .unwrap_or_else(|| panic!("{auth:#}"));
        let secret = out
            .secrets
            .iter()
            .find(|s| file.ends_with(&format!("/{}", s.name)))
            .unwrap();
        assert_eq!(secret.value.expose(), want, "{auth:#}");
        // The clusters the config names, and the bootstrap defines, are these.
        let mut named: Vec<String> = Vec::new();
        fn walk(v: &Value, out: &mut Vec<String>) {
            match v {
                Value::Object(m) => m.iter().for_each(|(k, x)| match (k.as_str(), x) {
                    ("cluster", Value::String(c)) => out.push(c.clone()),
                    _ => walk(x, out),
                }),
                Value::Array(a) => a.iter().for_each(|x| walk(x, out)),
                _ => {}
            }
        }
        walk(auth, &mut named);
        named.sort();
        named.dedup();
        assert_eq!(named, clusters, "{auth:#}");
        let boot: Value = serde_norway::from_str(&out.bootstrap_yaml).unwrap();
        let defined: Vec<&str> = boot["static_resources"]["clusters"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|c| c["name"].as_str())
            .filter(|n| n.starts_with("aigw_token_"))
            .collect();
        assert_eq!(defined, clusters);
        assert!(out.bootstrap_wasm_yaml.is_some());
        assert!(out.holds_credentials);
        for w in &out.warnings {
            assert!(!w.message.contains("not enforced"), "{w}");
            assert!(!w.message.contains("sk-test-value"), "{w}");
        }
        assert!(!out.envoy_gateway_yaml.contains("sk-test-value"));

        // With the annotation, the token (or AWS credentials) file instead.
        docs[BSP]["metadata"]["annotations"] =
            json!({"aigw.io/credentials-file": "/run/cloud/token"});
        let out = compile(&manifests(docs)).unwrap_or_else(|d| panic!("{d:#?}"));
        let auth = &out.config["backends"][0]["auth"];
        assert!(
            auth == &json!({"bearerToken": {"file": "/run/cloud/token"}})
                || auth["awsSigV4"]["credentialsFile"] == "/run/cloud/token",
            "{auth}"
        );
        assert!(out.bootstrap_wasm_yaml.is_none());
        assert!(!out.holds_credentials);
        assert!(!out.bootstrap_yaml.contains("aigw_token_"));
    }
}

/// What the filter's exchanges need from a policy: each missing or unusable
/// field is an error at its path, and no message holds the secret.
#[test]
fn token_exchange_rules_report_their_field() {
    fn azure(mechanism: Value) -> Edit {
        Box::new(move |docs: &mut Vec<Value>| {
            docs[ASB]["spec"]["schema"] = json!({"name": "AzureOpenAI"});
            docs[BSP] = policy("AzureCredentials", "azureCredentials", mechanism.clone());
            docs[SECRET] = secret(
                "idp",
                json!({"client-secret": "sk-test-value", "client-id": "aigw"}),
            );
        })
    }
    fn azure_oidc(oidc: Value) -> Edit {
        azure(json!({"clientID": "c", "tenantID": "t", "oidcExchangeToken": {"oidc": oidc}}))
    }
    fn aws(oidc: Value) -> Edit {
        Box::new(move |docs: &mut Vec<Value>| {
            docs[ASB]["spec"]["schema"] = json!({"name": "AWSBedrock"});
            docs[BSP] = policy(
                "AWSCredentials",
                "awsCredentials",
                json!({"region": "us-east-1", "oidcExchangeToken": oidc.clone()}),
            );
            docs[SECRET] = secret("idp", json!({"client-secret": "sk-test-value"}));
        })
    }
    fn gcp(mechanism: Value, data: Value) -> Edit {
        Box::new(move |docs: &mut Vec<Value>| {
            docs[ASB]["spec"]["schema"] = json!({"name": "GCPVertexAI"});
            let mut g = json!({"projectName": "p", "region": "us-east5"});
            for (k, v) in mechanism.as_object().unwrap() {
                g[k] = v.clone();
            }
            docs[BSP] = policy("GCPCredentials", "gcpCredentials", g);
            docs[SECRET] = secret("sa", data.clone());
        })
    }
    fn wif(edit: &'static str, v: Option<Value>) -> Edit {
        Box::new(move |docs: &mut Vec<Value>| {
            let mut w = json!({
                "projectID": "42", "workloadIdentityPoolName": "pool",
                "workloadIdentityProviderName": "prov",
                "serviceAccountImpersonation": {"serviceAccountName": "caller"},
                "oidcExchangeToken": {"oidc": {"provider": {"issuer": "https://idp.example.com"},
                    "clientID": "aigw", "clientSecret": {"name": "sa"}}}
            });
            set(&mut w, edit, v.clone());
            gcp(
                json!({"workloadIdentityFederationConfig": w}),
                json!({"client-secret": "sk-test-value"}),
            )(docs);
        })
    }
    let issuer = json!({"issuer": "https://idp.example.com"});
    let oidc_path = "spec.azureCredentials.oidcExchangeToken.oidc";
    let cases: Vec<ErrorCase> = vec![
        // Azure.
        (
            azure(json!({"clientID": "c", "clientSecretRef": {"name": "idp"}})),
            "BackendSecurityPolicy",
            "spec.azureCredentials.tenantID",
            "is required",
        ),
        (
            azure(json!({"tenantID": "t", "clientSecretRef": {"name": "idp"}})),
            "BackendSecurityPolicy",
            "spec.azureCredentials.clientID",
            "is required",
        ),
        (
            azure(json!({"clientID": "c", "tenantID": "t/../common", "clientSecretRef": {"name": "idp"}})),
            "BackendSecurityPolicy",
            "spec.azureCredentials.tenantID",
            "not a tenant ID or domain name",
        ),
        (
            azure(json!({"clientID": "c", "tenantID": "t", "clientSecretRef": {"name": "idp"},
                         "oidcExchangeToken": {"oidc": {}}})),
            "BackendSecurityPolicy",
            "spec.azureCredentials",
            "exactly one of clientSecretRef or oidcExchangeToken",
        ),
        (
            azure(json!({"clientID": "c", "tenantID": "t", "clientSecretRef": {"name": "other"}})),
            "BackendSecurityPolicy",
            "spec.azureCredentials.clientSecretRef",
            "Secret ns/other is not among the inputs",
        ),
        (
            Box::new(|docs: &mut Vec<Value>| {
                azure(json!({"clientID": "c", "tenantID": "t", "clientSecretRef": {"name": "idp"}}))(docs);
                docs[SECRET]["stringData"] = json!({"clientSecret": "sk-test-value"});
            }),
            "BackendSecurityPolicy",
            "spec.azureCredentials.clientSecretRef",
            "has no key 'client-secret'",
        ),
        (
            azure(json!({"clientID": "c", "tenantID": "t", "oidcExchangeToken": {"aud": "x"}})),
            "BackendSecurityPolicy",
            oidc_path,
            "is required",
        ),
        // The OIDC provider and client.
        (
            azure_oidc(json!({"clientID": "aigw", "clientSecret": {"name": "idp"}})),
            "BackendSecurityPolicy",
            "spec.azureCredentials.oidcExchangeToken.oidc.provider",
            "is required",
        ),
        (
            azure_oidc(json!({"provider": {"tokenEndpoint": "https://idp.example.com/token"},
                              "clientID": "aigw", "clientSecret": {"name": "idp"}})),
            "BackendSecurityPolicy",
            "spec.azureCredentials.oidcExchangeToken.oidc.provider.issuer",
            "is required",
        ),
        (
            azure_oidc(json!({"provider": {"issuer": "idp.example.com"},
                              "clientID": "aigw", "clientSecret": {"name": "idp"}})),
            "BackendSecurityPolicy",
            "spec.azureCredentials.oidcExchangeToken.oidc.provider.issuer",
            "must start with https://",
        ),
        (
            azure_oidc(json!({"provider": {"issuer": "https://idp.example.com", "tokenEndpoint": "https:///token"},
                              "clientID": "aigw", "clientSecret": {"name": "idp"}})),
            "BackendSecurityPolicy",
            "spec.azureCredentials.oidcExchangeToken.oidc.provider.tokenEndpoint",
            "no usable host",
        ),
        (
            azure_oidc(json!({"provider": issuer, "clientSecret": {"name": "idp"}})),
            "BackendSecurityPolicy",
            oidc_path,
            "exactly one of clientID or clientIDRef",
        ),
        (
            azure_oidc(json!({"provider": issuer, "clientID": "aigw", "clientIDRef": {"name": "idp"},
                              "clientSecret": {"name": "idp"}})),
            "BackendSecurityPolicy",
            oidc_path,
            "exactly one of clientID or clientIDRef",
        ),
        (
            azure_oidc(json!({"provider": issuer, "clientID": "aigw"})),
            "BackendSecurityPolicy",
            "spec.azureCredentials.oidcExchangeToken.oidc.clientSecret",
            "is required",
        ),
        (
            Box::new(|docs: &mut Vec<Value>| {
                azure_oidc(json!({"provider": {"issuer": "https://idp.example.com"},
                                  "clientIDRef": {"name": "idp"}, "clientSecret": {"name": "idp"}}))(docs);
                docs[SECRET]["stringData"] = json!({"client-secret": "sk-test-value"});
            }),
            "BackendSecurityPolicy",
            "spec.azureCredentials.oidcExchangeToken.oidc.clientIDRef",
            "has no key 'client-id'",
        ),
        (
            azure_oidc(json!({"provider": issuer, "clientID": "aigw", "clientSecret": {"name": "idp"},
                              "scopes": ["a b"]})),
            "BackendSecurityPolicy",
            "spec.azureCredentials.oidcExchangeToken.oidc.scopes[0]",
            "must be a scope name",
        ),
        // AWS.
        (
            aws(json!({"oidc": {"provider": issuer, "clientID": "aigw", "clientSecret": {"name": "idp"}}})),
            "BackendSecurityPolicy",
            "spec.awsCredentials.oidcExchangeToken.awsRoleArn",
            "is required",
        ),
        (
            aws(json!({"awsRoleArn": "bedrock-role",
                       "oidc": {"provider": issuer, "clientID": "aigw", "clientSecret": {"name": "idp"}}})),
            "BackendSecurityPolicy",
            "spec.awsCredentials.oidcExchangeToken.awsRoleArn",
            "not an IAM role ARN",
        ),
        (
            aws(json!({"awsRoleArn": "arn:aws:iam::1:role/r",
                       "oidc": {"clientID": "aigw", "clientSecret": {"name": "idp"}}})),
            "BackendSecurityPolicy",
            "spec.awsCredentials.oidcExchangeToken.oidc.provider",
            "is required",
        ),
        (
            Box::new(|docs: &mut Vec<Value>| {
                aws(json!({"awsRoleArn": "arn:aws:iam::1:role/r",
                           "oidc": {"provider": {"issuer": "https://idp.example.com"},
                                    "clientID": "aigw", "clientSecret": {"name": "idp"}}}))(docs);
                docs[BSP]["spec"]["awsCredentials"]["region"] = json!("US East");
            }),
            "BackendSecurityPolicy",
            "spec.awsCredentials.region",
            "not an AWS region name",
        ),
        // GCP key file.
        (
            gcp(
                json!({"credentialsFile": {"secretRef": {"name": "sa"}}}),
                json!({"a.json": GCP_KEY, "b.json": GCP_KEY}),
            ),
            "BackendSecurityPolicy",
            "spec.gcpCredentials.credentialsFile.secretRef",
            "has no 'service_account.json' key for the key file (its keys: a.json, b.json)",
        ),
        (
            gcp(
                json!({"credentialsFile": {"secretRef": {"name": "sa"}}}),
                json!({"service_account.json": "sk-test-value"}),
            ),
            "BackendSecurityPolicy",
            "spec.gcpCredentials.credentialsFile.secretRef",
            "is not JSON",
        ),
        (
            gcp(
                json!({"credentialsFile": {"secretRef": {"name": "sa"}}}),
                json!({"key.json": r#"{"client_email": "sk-test-value"}"#}),
            ),
            "BackendSecurityPolicy",
            "spec.gcpCredentials.credentialsFile.secretRef",
            "Secret ns/sa key 'key.json' lacks client_email or private_key",
        ),
        // GCP workload identity federation.
        (
            wif("/projectID", None),
            "BackendSecurityPolicy",
            "spec.gcpCredentials.workloadIdentityFederationConfig.projectID",
            "is required",
        ),
        (
            wif("/workloadIdentityPoolName", None),
            "BackendSecurityPolicy",
            "spec.gcpCredentials.workloadIdentityFederationConfig.workloadIdentityPoolName",
            "is required",
        ),
        (
            wif("/workloadIdentityProviderName", Some(json!("a/b"))),
            "BackendSecurityPolicy",
            "spec.gcpCredentials.workloadIdentityFederationConfig.workloadIdentityProviderName",
            "must not contain '/'",
        ),
        (
            wif("/oidcExchangeToken", None),
            "BackendSecurityPolicy",
            "spec.gcpCredentials.workloadIdentityFederationConfig.oidcExchangeToken",
            "is required",
        ),
        (
            wif("/oidcExchangeToken/oidc/provider", None),
            "BackendSecurityPolicy",
            "spec.gcpCredentials.workloadIdentityFederationConfig.oidcExchangeToken.oidc.provider",
            "is required",
        ),
        (
            wif("/serviceAccountImpersonation", Some(json!({}))),
            "BackendSecurityPolicy",
            "spec.gcpCredentials.workloadIdentityFederationConfig.serviceAccountImpersonation.serviceAccountName",
            "is required",
        ),
        (
            wif(
                "/serviceAccountImpersonation/serviceAccountName",
                Some(json!("caller@p.iam.gserviceaccount.com")),
            ),
            "BackendSecurityPolicy",
            "spec.gcpCredentials.workloadIdentityFederationConfig.serviceAccountImpersonation.serviceAccountName",
            "without '@'",
        ),
    ];
    common::assert_error_cases(&cases, base, manifests, "sk-test-value");
}

/// On Envoy Gateway the token clusters need a Gateway to patch: without one the
/// Envoy Gateway output lacks them (a warning naming them); the standalone bootstrap
/// has them.
#[test]
fn token_clusters_without_a_gateway_are_a_warning() {
    let mut docs = base();
    docs[ASB]["spec"]["schema"] = json!({"name": "AzureOpenAI"});
    docs[BSP] = policy(
        "AzureCredentials",
        "azureCredentials",
        json!({"clientID": "c", "tenantID": "t",
               "clientSecretRef": {"name": "az", "namespace": "envoy-gateway-system"}}),
    );
    docs[SECRET] = json!({"apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "az", "namespace": "envoy-gateway-system"},
        "stringData": {"client-secret": "sk-test-value"}});
    set(&mut docs[ROUTE], "/spec/targetRefs", None);
    let out = compile(&manifests(docs)).unwrap_or_else(|d| panic!("{d:#?}"));
    let w = out
        .warnings
        .iter()
        .find(|d| d.path == "spec.parentRefs")
        .expect("a warning at spec.parentRefs");
    assert!(
        w.message.contains("aigw_token_login_microsoftonline_com")
            && w.message.contains("answered 503"),
        "{}",
        w.message
    );
    assert!(!w.message.contains("sk-test-value"));
    assert!(out
        .bootstrap_yaml
        .contains("aigw_token_login_microsoftonline_com"));
}

#[test]
fn warnings_do_not_block_and_unknown_fields_are_named() {
    let mut docs = base();
    docs[ROUTE]["spec"]["ruels"] = json!([]);
    docs.push(json!({"apiVersion": "gateway.kgateway.dev/v1alpha1", "kind": "GatewayParameters", "metadata": {"name": "tp"}, "spec": {}}));
    let out = compile(&manifests(docs)).unwrap_or_else(|d| panic!("{d:#?}"));
    let paths: Vec<(&str, &str)> = out
        .warnings
        .iter()
        .map(|d| {
            (
                d.resource.as_ref().map_or("", |r| r.kind.as_str()),
                d.path.as_str(),
            )
        })
        .collect();
    assert!(
        paths.contains(&("AIGatewayRoute", "spec.ruels")),
        "{paths:?}"
    );
    assert!(paths.contains(&("GatewayParameters", "spec")), "{paths:?}");
}

#[test]
fn a_cohere_backend_compiles_with_its_path_version() {
    let mut docs = base();
    docs[ASB]["spec"]["schema"] = json!({"name": "Cohere", "version": "v2"});
    let out = compile(&manifests(docs)).unwrap_or_else(|d| panic!("{d:#?}"));
    assert_eq!(
        out.config["backends"][0]["schema"],
        json!({"name": "Cohere", "version": "v2"})
    );
}

#[test]
fn all_errors_are_reported_in_one_run() {
    let mut docs = base();
    docs[ROUTE]["spec"]["rules"][0]["backendRefs"][0]["weight"] = json!(-5);
    docs[ASB]["spec"]["schema"]["name"] = json!("Carrier");
    docs[BE]["spec"]["endpoints"][0]["fqdn"]["port"] = json!(99999);
    let diags = compile(&manifests(docs)).unwrap_err();
    let errors: Vec<&str> = diags
        .iter()
        .filter(|d| d.is_error())
        .map(|d| d.path.as_str())
        .collect();
    assert_eq!(
        errors,
        [
            "spec.rules[0].backendRefs[0].weight",
            "spec.schema.name",
            "spec.endpoints[0].fqdn.port"
        ]
    );
}

#[test]
fn weight_zero_backend_gets_no_traffic_and_priorities_are_compacted() {
    let mut docs = base();
    for (name, host) in [("b2", "two.example.com"), ("b3", "three.example.com")] {
        let mut a = docs[ASB].clone();
        a["metadata"]["name"] = json!(name);
        a["spec"]["backendRef"]["name"] = json!(name);
        docs.push(a);
        let mut b = docs[BE].clone();
        b["metadata"]["name"] = json!(name);
        b["spec"]["endpoints"][0]["fqdn"]["hostname"] = json!(host);
        docs.push(b);
    }
    docs[ROUTE]["spec"]["rules"][0]["backendRefs"] = json!([
        {"name": "asb", "priority": 5},
        {"name": "b2", "weight": 0},
        {"name": "b3", "priority": 9}
    ]);
    let out = compile(&manifests(docs)).unwrap_or_else(|d| panic!("{d:#?}"));
    // The filter config keeps the user's numbers...
    let rbs = &out.config["routes"][0]["backends"];
    assert_eq!(rbs[0]["priority"], 5);
    assert_eq!(rbs[1]["weight"], 0);
    // ...Envoy gets contiguous priorities and no zero-weight locality.
    let boot: Value = serde_norway::from_str(&out.bootstrap_yaml).unwrap();
    let eps = &boot["static_resources"]["clusters"][0]["load_assignment"]["endpoints"];
    let got: Vec<(String, u64)> = eps
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            (
                l["locality"]["sub_zone"].as_str().unwrap().to_string(),
                l["priority"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(got, [("asb.ns".to_string(), 0), ("b3.ns".to_string(), 1)]);
}

/// Envoy Gateway output rules: Gateway API's per-rule limits and the options.
#[test]
fn envoy_gateway_limits_and_options_are_errors() {
    let mut docs = base();
    let refs: Vec<Value> = (0..17)
        .map(|i| json!({"name": "asb", "weight": 1, "modelNameOverride": format!("m{i}")}))
        .collect();
    set(
        &mut docs[ROUTE],
        "/spec/rules/0/backendRefs",
        Some(Value::Array(refs)),
    );
    let errs = compile(&manifests(docs)).unwrap_err();
    let e: Vec<_> = errs.iter().filter(|d| d.is_error()).collect();
    assert_eq!(e.len(), 1, "{errs:#?}");
    assert_eq!(e[0].path, "spec.rules[0].backendRefs");
    assert!(e[0].message.contains("at most 16 backendRefs"), "{}", e[0]);

    let mut docs = base();
    let matches: Vec<Value> = (0..65)
        .map(|i| json!({"headers": [{"name": "x-ai-eg-model", "value": format!("x{i}")}]}))
        .collect();
    set(
        &mut docs[ROUTE],
        "/spec/rules/0/matches",
        Some(Value::Array(matches)),
    );
    let errs = compile(&manifests(docs)).unwrap_err();
    assert!(
        errs.iter().any(|d| d.is_error()
            && d.path == "spec.rules[0].matches"
            && d.message.contains("64 matches")),
        "{errs:#?}"
    );

    let o = aigw_cli::Options {
        module_path: "relative/libaigw.so".into(),
        wasm_sha256: Some("f".repeat(64)),
        ..aigw_cli::Options::default()
    };
    let errs = aigw_cli::compile_with(&manifests(base()), &o).unwrap_err();
    let msgs: Vec<_> = errs
        .iter()
        .filter(|d| d.is_error())
        .map(|d| d.to_string())
        .collect();
    assert_eq!(msgs.len(), 2, "{msgs:#?}");
    assert!(msgs[0].starts_with("error: <options>") && msgs[0].contains("absolute path"));
    assert!(msgs[1].contains("needs both"));
}

/// Many rules are split across HTTPRoutes; one catch-all, one policy for all.
#[test]
fn envoy_gateway_splits_large_routes() {
    let mut docs = base();
    let rules: Vec<Value> = (0..40)
        .map(|i| {
            json!({
                "matches": [{"headers": [{"name": "x-ai-eg-model", "value": format!("m{i}")}]}],
                "backendRefs": [{"name": "asb"}]
            })
        })
        .collect();
    set(&mut docs[ROUTE], "/spec/rules", Some(Value::Array(rules)));
    let out = compile(&manifests(docs)).unwrap_or_else(|d| panic!("{d:#?}"));
    let routes: Vec<&Value> = out
        .envoy_gateway
        .iter()
        .filter(|d| d["kind"] == "HTTPRoute")
        .collect();
    assert_eq!(routes.len(), 3);
    let names: Vec<&str> = routes
        .iter()
        .map(|r| r["metadata"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["route", "route-1", "route-2"]);
    let counts: Vec<usize> = routes
        .iter()
        .map(|r| r["spec"]["rules"].as_array().unwrap().len())
        .collect();
    assert_eq!(counts, [16, 16, 9]); // 15 + the catch-all, 16, 9
    let eep = out
        .envoy_gateway
        .iter()
        .find(|d| d["kind"] == "EnvoyExtensionPolicy")
        .unwrap();
    assert_eq!(eep["spec"]["targetRefs"].as_array().unwrap().len(), 3);
    assert_eq!(
        eep["spec"]["dynamicModule"][0]["config"]["routes"]
            .as_array()
            .unwrap()
            .len(),
        40
    );
    assert!(out
        .warnings
        .iter()
        .any(|w| w.message.contains("split into 3 HTTPRoutes")));
}

/// Rules with one backend get their upstream work from the router-level instance
/// (`routerOnly`, no upstream filter on their clusters), unless one of them matches
/// on a header that work changes: Envoy picks the route again after it.
#[test]
fn single_backend_rules_run_inline_unless_a_match_reads_a_header_the_filter_sets() {
    let out = compile(&manifests(base())).unwrap_or_else(|d| panic!("{d:#?}"));
    assert_eq!(out.config["routerOnly"], true);
    assert!(!out.bootstrap_yaml.contains("aigw_upstream"));
    // The routes rewrite Host to the host the filter signed for.
    assert!(!out.bootstrap_yaml.contains("auto_host_rewrite"));
    assert!(out.bootstrap_yaml.contains("host_rewrite_literal:"));

    let mut docs = base();
    docs[0]["spec"]["rules"][1]["matches"][0]["headers"]
        .as_array_mut()
        .unwrap()
        .push(json!({"name": "x-api-key", "value": "team-a"}));
    let out = compile(&manifests(docs)).unwrap_or_else(|d| panic!("{d:#?}"));
    assert!(out.config.get("routerOnly").is_none());
    assert!(out.bootstrap_yaml.contains("aigw_upstream"));
    // The upstream instance sets and signs Host per attempt: no route rewrites it.
    assert!(!out.bootstrap_yaml.contains("auto_host_rewrite"));
    assert!(!out.bootstrap_yaml.contains("host_rewrite_literal"));
}

/// The base input and the Envoy Gateway manifests it compiles to, against the
/// upstream CRDs (as `tests/eg_schema.rs` checks the golden cases).
#[test]
fn base_and_its_manifests_match_the_crds() {
    let docs = base();
    let out = compile(&manifests(docs.clone())).unwrap_or_else(|d| panic!("{d:#?}"));
    let crds = crd::crds();
    let mut check = crd::InputCheck::default();
    for (i, d) in docs.iter().enumerate() {
        crds.check_input_doc(d, &format!("input#{i}"), &mut check);
    }
    let mut errors = check.errors;
    for (i, d) in out.envoy_gateway.iter().enumerate() {
        let r = crds.check(d, &format!("output#{i}"));
        errors.extend(r.errors);
        errors.extend(r.unevaluable);
    }
    assert!(!out.envoy_gateway.is_empty());
    assert!(errors.is_empty(), "{errors:#?}");
}
