//! kgateway resources (`gateway.kgateway.dev/v1alpha1`: Backend, AIBackend,
//! TrafficPolicy, HTTPListenerPolicy, DirectResponse, GatewayExtension,
//! GatewayParameters) and the Gateway API `HTTPRoute`s that route to them.
//! Each kind is read in the seeds' shape (the kgateway API description the
//! compiler was written from) and, where kgateway's CRDs differ, in theirs too
//! (`Backend.spec.ai.llm`/`priorityGroups`, CORS origin strings and `maxAge`
//! seconds, `timeouts`, `retry`, `headerModifiers`, DirectResponse `status`):
//! see `cli/README.md` for which version each follows.
//!
//! AI backends become filter backends, and so do AWS Backends (Lambda functions,
//! invoked by the filter: see [`read_aws`] and [`lambda_creds`]); the HTTPRoutes
//! whose backendRefs point at them are the routing source (models from their
//! `x-ai-eg-model` matches, else the backend's configured model). Policies map
//! to native Envoy where Envoy has the feature; every field that is not mapped is
//! named in a warning, never dropped silently.

use std::collections::HashMap;

use serde_json::{json, Map, Value};

use crate::compile::{Plan, PlanBackend, PlanModel, PlanRoute, PlanRouteBackend};
use crate::credentials::{
    authority, Auth, AwsKeys, Callout, SecretSource, Secrets, CREDENTIALS_FILE_ANNOTATION,
};
use crate::diag::{Diagnostic, Reporter, ResourceId, Source};
use crate::manifest::SecretValue;
use crate::read::{at, join, Obj};
use crate::resources::{
    enum_value, is_dns_subdomain, Address, Endpoint, Meta, Tls, KGATEWAY_GROUP, MODEL_HEADER,
};
use crate::units::{envoy_duration, parse_duration};
use aigw_filter::policy::validation::{RequestRules, RuleAction};

const GWAPI_GROUP: &str = "gateway.networking.k8s.io";
/// Provider types: the seed's (`openai`, `azure`, `gemini`, `mistral`) and
/// kgateway's current ones (`azureopenai`, `anthropic`, `vertexai`).
const PROVIDERS: &[&str] = &[
    "openai",
    "azure",
    "azureopenai",
    "anthropic",
    "gemini",
    "mistral",
    "vertexai",
];
/// The Secret key kgateway reads a provider token from.
pub const TOKEN_KEY: &str = "Authorization";
/// Envoy's router retry conditions (`x-envoy-retry-on`).
const RETRY_ON: &[&str] = &[
    "5xx",
    "gateway-error",
    "reset",
    "reset-before-request",
    "connect-failure",
    "envoy-ratelimited",
    "retriable-4xx",
    "refused-stream",
    "retriable-status-codes",
    "retriable-headers",
    "http3-post-connect-failure",
];

/// An upstream host with its TLS settings.
#[derive(Clone, Debug)]
pub struct Host {
    pub endpoint: Endpoint,
    pub tls: Option<Tls>,
}

/// The LLM provider of an AI backend, in the filter's terms.
#[derive(Clone, Debug)]
pub struct Provider {
    /// The filter schema (`OpenAI`, `AzureOpenAI`, `GCPVertexAI`...).
    pub schema: &'static str,
    pub version: Option<String>,
    /// `model` (Azure: `deploymentName`): the backend's model override.
    pub model: Option<String>,
    pub region: Option<String>,
    pub project: Option<String>,
    /// The provider's public host, when it has one.
    pub default_host: Option<String>,
    /// `hostOverride`, else the public host on 443 with TLS.
    pub hosts: Vec<Host>,
    pub token: Option<AuthToken>,
    /// `provider`, its `<type>` object, and the field the model came from.
    pub path: String,
    pub sub_path: String,
    pub model_path: String,
}

/// `authToken`.
#[derive(Clone, Debug)]
pub enum AuthToken {
    Secret(SecretRef),
    Inline(SecretValue),
    /// The client's own credential goes through.
    Passthrough,
}

/// An AWS Lambda function (`Backend` type `AWS`, `spec.aws.lambda`, or the seed's
/// `spec.aws.lambdaFunctionName`), invoked by the filter as a backend of schema
/// OpenAI.
#[derive(Clone, Debug)]
pub struct Lambda {
    pub region: String,
    /// The function's ARN when the account is known, else its name.
    pub function: String,
    pub qualifier: Option<String>,
    /// `Async`, or `None` for Sync.
    pub invocation_mode: Option<String>,
    /// `endpointURL`, else Lambda's public endpoint of the region.
    pub host: Host,
    pub auth: LambdaAuth,
    /// `spec.aws` and the field the function name came from.
    pub path: String,
    pub name_path: String,
}

/// How a Lambda backend's invocations are signed.
#[derive(Clone, Debug)]
pub enum LambdaAuth {
    /// The default credential chain (no `auth`).
    Default,
    /// `auth.secretRef`: keys `accessKey`, `secretKey`, `sessionToken`.
    Secret(SecretRef),
    /// `auth.assumeRole.roleArn` (or the seed's `roleArn`), with the ambient keys.
    AssumeRole { role_arn: String, path: String },
}

#[derive(Debug)]
pub enum BackendKind {
    Static(Vec<Host>),
    /// `None`: refused (already reported).
    Aws(Option<Box<Lambda>>),
    /// `None`: the provider is refused (already reported).
    Ai(Option<Box<Provider>>),
    /// kgateway's CRD `ai.priorityGroups`: providers with their group's index
    /// as priority.
    AiGroups(Vec<GroupProvider>),
}

#[derive(Debug)]
pub struct GroupProvider {
    pub priority: u32,
    pub name: String,
    /// `None`: refused (already reported).
    pub provider: Option<Provider>,
}

#[derive(Debug)]
pub struct Backend {
    pub meta: Meta,
    pub kind: BackendKind,
}

#[derive(Debug)]
pub struct GroupRef {
    pub name: String,
    pub namespace: String,
    pub weight: u32,
    pub priority: u32,
    pub path: String,
}

#[derive(Debug)]
pub struct AiBackend {
    pub meta: Meta,
    pub provider: Option<Provider>,
    pub groups: Vec<GroupRef>,
}

#[derive(Clone, Debug)]
pub struct SecretRef {
    pub namespace: String,
    pub name: String,
    pub path: String,
}

#[derive(Debug)]
pub struct RouteRef {
    pub kind: String,
    pub name: String,
    pub namespace: String,
    pub weight: u32,
    pub path: String,
}

#[derive(Debug)]
pub struct HttpRule {
    pub path: String,
    pub models: Vec<(String, String)>,
    pub prefix: String,
    pub refs: Vec<RouteRef>,
    pub direct: Option<(String, String)>,
}

#[derive(Debug)]
pub struct HttpRoute {
    pub meta: Meta,
    pub rules: Vec<HttpRule>,
    /// Whether any backendRef or filter points at a kgateway resource.
    pub kgateway: bool,
}

#[derive(Debug)]
pub struct Target {
    pub kind: String,
    pub name: String,
    pub path: String,
}

#[derive(Debug)]
pub struct ExtRef {
    /// `extAuth`, `extProc` or `rateLimit`.
    pub field: &'static str,
    pub name: String,
    pub namespace: String,
    pub path: String,
}

#[derive(Debug)]
pub struct TrafficPolicy {
    pub meta: Meta,
    pub targets: Vec<Target>,
    pub extra: RouteExtra,
    pub cors: bool,
    pub ext: Vec<ExtRef>,
    /// `rateLimit.global.descriptors` as the actions of one Envoy rate limit (as
    /// kgateway joins them); `None` for the seed's `rateLimit.extensionRef`,
    /// which names none.
    pub rl_actions: Option<Vec<Value>>,
}

#[derive(Debug)]
pub struct ListenerPolicy {
    pub meta: Meta,
    pub targets: Vec<Target>,
    pub max_request_bytes: Option<u64>,
    pub basic_auth: Option<SecretRef>,
    /// `celValidation.rules`: (expression, action), checked when read.
    pub request_rules: Vec<Value>,
}

#[derive(Debug)]
pub struct DirectResponse {
    pub meta: Meta,
    pub status: u16,
    pub body: Option<String>,
}

#[derive(Debug)]
pub struct Extension {
    pub meta: Meta,
    /// `ExtAuth`, `ExtProc` or `RateLimit`.
    pub kind: Option<String>,
    /// grpcService.backendRef: (namespace, name, port, path).
    pub backend: Option<(String, String, Option<u16>, String)>,
    /// grpcService.backendRef `group`/`kind` other than a core Service (the seed
    /// names neither).
    pub backend_kind: Option<(String, String)>,
    /// `rateLimit.domain`, `failOpen`, `timeout`.
    pub rl_domain: Option<String>,
    pub rl_fail_open: Option<bool>,
    pub rl_timeout_ms: Option<u64>,
}

/// Everything kgateway read from the input.
#[derive(Debug, Default)]
pub struct Inputs {
    pub backends: Vec<Backend>,
    pub ai_backends: Vec<AiBackend>,
    pub http_routes: Vec<HttpRoute>,
    pub traffic: Vec<TrafficPolicy>,
    pub listener: Vec<ListenerPolicy>,
    pub direct: Vec<DirectResponse>,
    pub extensions: Vec<Extension>,
}

/// Route settings from TrafficPolicies, applied to the Envoy route.
#[derive(Clone, Debug, Default)]
pub struct RouteExtra {
    /// A kgateway route: left out of the Envoy Gateway output.
    pub kgateway: bool,
    /// `envoy.filters.http.cors` CorsPolicy.
    pub cors: Option<Value>,
    pub timeout_ms: Option<u64>,
    pub idle_timeout_ms: Option<u64>,
    /// A complete Envoy retry policy.
    pub retry: Option<Value>,
    pub request_add: Vec<Value>,
    pub request_remove: Vec<String>,
    pub response_add: Vec<Value>,
    pub response_remove: Vec<String>,
}

/// Listener-wide additions to the standalone bootstrap.
#[derive(Debug, Default)]
pub struct Listener {
    pub cors: bool,
    /// The CORS policy answering preflights: they carry no model, so they
    /// match no model route (a route of their own).
    pub vhost_cors: Option<Value>,
    /// HTTP filters run before `aigw` (ext_authz, ext_proc).
    pub filters: Vec<Value>,
    pub clusters: Vec<Value>,
    /// Routes with `direct_response`, after the model routes.
    pub direct_routes: Vec<Value>,
    pub buffer_limit: Option<u64>,
    /// `requestValidation.rules` of the filter config, from every
    /// HTTPListenerPolicy's `celValidation`, in input order.
    pub request_rules: Vec<Value>,
}

// ---------------------------------------------------------------- reading

fn host_of(s: &str) -> Address {
    if s.parse::<std::net::IpAddr>().is_ok() {
        Address::Ip(s.to_string())
    } else {
        Address::Fqdn(s.to_string())
    }
}

fn port(o: &Obj<'_, '_>, key: &str, required: bool, r: &mut Reporter<'_>) -> Option<u16> {
    if required && !o.has(key) {
        r.error(o.path(key), "is required");
        return None;
    }
    o.int_opt(key, 1, 65535, r).map(|p| p as u16)
}

fn secret_ref(o: &Obj<'_, '_>, key: &str, ns: &str, r: &mut Reporter<'_>) -> Option<SecretRef> {
    let p = o.path(key);
    let s = Obj::new(o.get(key)?, &p, &["name", "namespace"], r)?;
    Some(SecretRef {
        name: s.str_req("name", r)?.to_string(),
        namespace: s.str_opt("namespace", r).unwrap_or(ns).to_string(),
        path: p.clone(),
    })
}

/// `hosts` of a Static backend or a provider's `hostOverride`.
fn read_host(o: &Obj<'_, '_>, r: &mut Reporter<'_>) -> Option<Host> {
    let host = o.str_req("host", r);
    let port = port(o, "port", true, r);
    let tls = match o.get("tls") {
        Some(v) => {
            let p = o.path("tls");
            let t = Obj::new(v, &p, &["sni", "insecureSkipVerify"], r)?;
            Some(Tls {
                hostname: t.str_opt("sni", r).map(str::to_string),
                insecure: t.bool_opt("insecureSkipVerify", r).unwrap_or(false),
            })
        }
        None => None,
    };
    Some(Host {
        endpoint: Endpoint {
            address: host_of(host?),
            port: port?,
        },
        tls,
    })
}

/// `spec.aws` of a Backend of type AWS: kgateway's CRD (`lambda`, `auth`,
/// deprecated `accountId`) or the seed's (`lambdaFunctionName`, `roleArn`,
/// `accountId`). EC2 discovery is not compiled.
fn read_aws(s: &Obj<'_, '_>, ns: &str, r: &mut Reporter<'_>) -> Option<Lambda> {
    if s.has("ec2") {
        r.error(
            s.path("ec2"),
            "not compiled: EC2 instance discovery is not a model backend; the filter invokes Lambda functions",
        );
        return None;
    }
    let region = s.str_opt("region", r).unwrap_or("us-east-1").to_string();
    if !region
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        || region.is_empty()
    {
        r.error(s.path("region"), "must be an AWS region such as us-east-1");
        return None;
    }
    let mut account = s.str_opt("accountId", r).map(str::to_string);
    let (mut qualifier, mut invocation_mode, mut endpoint) = (None, None, None);
    let (name, name_path) = match (s.get("lambda"), s.has("lambdaFunctionName")) {
        (Some(_), true) => {
            r.error(
                s.path("lambdaFunctionName"),
                "give lambda.functionName or the seed's lambdaFunctionName, not both",
            );
            return None;
        }
        (None, false) => {
            r.error(
                s.path("lambda"),
                "is required (or the seed's lambdaFunctionName)",
            );
            return None;
        }
        (None, true) => (
            s.str_req("lambdaFunctionName", r).map(str::to_string),
            s.path("lambdaFunctionName"),
        ),
        (Some(v), false) => {
            let lp = s.path("lambda");
            let l = Obj::new(
                v,
                &lp,
                &[
                    "functionName",
                    "qualifier",
                    "invocationMode",
                    "endpointURL",
                    "accountId",
                    "payloadTransformMode",
                ],
                r,
            )?;
            let name = l.str_req("functionName", r).map(str::to_string);
            if let Some(a) = l.str_opt("accountId", r) {
                account = Some(a.to_string());
            }
            qualifier = l.str_opt("qualifier", r).map(str::to_string);
            invocation_mode = enum_value(&l, "invocationMode", &["Sync", "Async"], false, r)
                .filter(|m| m == "Async");
            if let Some(url) = l.str_opt("endpointURL", r) {
                match crate::credentials::Callout::parse(url) {
                    Ok(c) => endpoint = Some((c.host, l.path("endpointURL"))),
                    Err(e) => {
                        r.error(l.path("endpointURL"), e);
                        return None;
                    }
                }
            }
            if enum_value(&l, "payloadTransformMode", &["None", "Envoy"], false, r).as_deref()
                != Some("None")
            {
                r.warn(
                    l.path("payloadTransformMode"),
                    "not mapped: the function gets the request's body itself (an OpenAI request) and its payload is the answer, as with payloadTransformMode None",
                );
            }
            (name, l.path("functionName"))
        }
    };
    let name = name?;
    if name.is_empty()
        || name.len() > 140
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        r.error(
            name_path.as_str(),
            "must be a function name: 1 to 140 letters, digits, '-' or '_'",
        );
        return None;
    }
    if let Some(q) = &qualifier {
        let ok = q == "$LATEST"
            || (!q.is_empty()
                && q.len() <= 128
                && q.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
        if !ok {
            r.error(
                s.path("lambda.qualifier"),
                "must be a version, an alias or $LATEST",
            );
            return None;
        }
    }
    let function = match &account {
        Some(a) if a.len() == 12 && a.bytes().all(|b| b.is_ascii_digit()) => {
            let partition = if region.starts_with("cn-") {
                "aws-cn"
            } else if region.starts_with("us-gov-") {
                "aws-us-gov"
            } else {
                "aws"
            };
            format!("arn:{partition}:lambda:{region}:{a}:function:{name}")
        }
        Some(_) => {
            r.error(
                s.path("lambda.accountId"),
                "must be a 12-digit AWS account id",
            );
            return None;
        }
        None => name,
    };
    let host = match endpoint {
        Some((h, _)) => Host {
            endpoint: Endpoint {
                address: host_of(&h.host),
                port: h.port,
            },
            tls: h.tls.then(Tls::default),
        },
        None => Host {
            endpoint: Endpoint {
                address: Address::Fqdn(aigw_filter::translate::lambda::default_host(&region)),
                port: 443,
            },
            tls: Some(Tls::default()),
        },
    };
    let mut auth = LambdaAuth::Default;
    if let Some(role) = s.str_opt("roleArn", r) {
        auth = LambdaAuth::AssumeRole {
            role_arn: role.to_string(),
            path: s.path("roleArn"),
        };
    }
    if let Some(v) = s.get("auth") {
        let ap = s.path("auth");
        let a = Obj::new(v, &ap, &["type", "secretRef", "assumeRole"], r)?;
        if s.has("roleArn") {
            r.error(ap.as_str(), "give auth or the seed's roleArn, not both");
            return None;
        }
        match enum_value(&a, "type", &["Secret", "AssumeRole"], true, r)?.as_str() {
            "Secret" => {
                if !a.has("secretRef") {
                    r.error(a.path("secretRef"), "is required with type Secret");
                    return None;
                }
                auth = LambdaAuth::Secret(secret_ref(&a, "secretRef", ns, r)?);
            }
            _ => {
                let rp = a.path("assumeRole");
                let Some(rv) = a.get("assumeRole") else {
                    r.error(rp, "is required with type AssumeRole");
                    return None;
                };
                let ro = Obj::new(rv, &rp, &["roleArn"], r)?;
                auth = LambdaAuth::AssumeRole {
                    role_arn: ro.str_req("roleArn", r)?.to_string(),
                    path: ro.path("roleArn"),
                };
            }
        }
    }
    Some(Lambda {
        region,
        function,
        qualifier,
        invocation_mode,
        host,
        auth,
        path: s.path("").trim_end_matches('.').to_string(),
        name_path,
    })
}

/// `provider` of an AI backend: `type` plus exactly the matching sub-object.
fn read_provider(o: &Obj<'_, '_>, ns: &str, r: &mut Reporter<'_>) -> Option<Provider> {
    read_provider_at(o, "provider", ns, r)
}

/// kgateway's CRD shape of `Backend.spec.ai` (`gateway.kgateway.dev/v1alpha1`
/// as of kgateway `e575ec75`, the last version with AI backends): `llm`, one
/// provider, or `priorityGroups` (read by [`read_priority_groups`]).
fn read_llm(o: &Obj<'_, '_>, ns: &str, r: &mut Reporter<'_>) -> Option<Provider> {
    if o.has("provider") as u8 + o.has("llm") as u8 + o.has("priorityGroups") as u8 > 1 {
        r.error(
            o.path("llm"),
            "exactly one of provider (the seed's), llm or priorityGroups must be set",
        );
        return None;
    }
    let base = o.path("");
    llm_provider(o.get("llm")?, base.trim_end_matches('.'), "llm", &[], ns, r)
}

/// One kgateway CRD LLM provider (`llm`, or a member of a priority group, whose
/// own fields are `extra`): exactly one of `openai`, `azureopenai`,
/// `anthropic`, `gemini`, `vertexai`, `bedrock`, and `host` + `port`
/// (together), `path.full`, `authHeader`, `routes`. Read as the seed's
/// `provider` with the same fields (`host`/`port` as `hostOverride`, with TLS
/// on port 443; `path.full` as `pathOverride.fullPath`). `base` + `key` is its
/// path.
fn llm_provider(
    v: &Value,
    base: &str,
    key: &str,
    extra: &[&str],
    ns: &str,
    r: &mut Reporter<'_>,
) -> Option<Provider> {
    const LLM: &[&str] = &[
        "openai",
        "azureopenai",
        "anthropic",
        "gemini",
        "vertexai",
        "bedrock",
    ];
    let p = join(base, key);
    let mut known = vec!["host", "port", "path", "authHeader", "routes"];
    known.extend(LLM);
    known.extend(extra);
    let l = Obj::new(v, &p, &known, r)?;
    let set: Vec<&str> = LLM.iter().copied().filter(|k| l.has(k)).collect();
    let [kind] = set[..] else {
        r.error(
            p,
            format!("exactly one of the fields in {LLM:?} must be set, found {set:?}"),
        );
        return None;
    };
    if kind == "bedrock" {
        r.error(
            l.path("bedrock"),
            "not compiled: Bedrock needs AWS credentials; use an Envoy AI Gateway AIServiceBackend",
        );
        return None;
    }
    for k in ["authHeader", "routes"] {
        if l.has(k) {
            r.warn(
                l.path(k),
                "not mapped: the filter sets the provider's own header and routes by the API called",
            );
        }
    }
    let mut provider = Map::new();
    provider.insert("type".into(), json!(kind));
    provider.insert(kind.into(), l.get(kind)?.clone());
    match (l.get("host"), l.get("port")) {
        (None, None) => {}
        (Some(h), Some(port)) => {
            let mut host = json!({"host": h, "port": port});
            if port.as_i64() == Some(443) {
                host["tls"] = json!({});
            }
            provider.insert("hostOverride".into(), host);
        }
        _ => {
            r.error(p, "both host and port must be set together");
            return None;
        }
    }
    if let Some(path) = l.get("path") {
        let pp = l.path("path");
        let po = Obj::new(path, &pp, &["full"], r)?;
        let full = po.str_req("full", r)?;
        provider.insert("pathOverride".into(), json!({"fullPath": full}));
    }
    let mut wrapped = Map::new();
    wrapped.insert(key.to_string(), Value::Object(provider));
    let wrapped = Value::Object(wrapped);
    let w = Obj::new(&wrapped, base, &[key], r)?;
    read_provider_at(&w, key, ns, r)
}

/// kgateway's CRD `Backend.spec.ai.priorityGroups` (kgateway `e575ec75`): groups
/// in priority order (1..32), each 1..32 providers with a `name` unique in the
/// group, balanced with equal weights.
fn read_priority_groups(o: &Obj<'_, '_>, ns: &str, r: &mut Reporter<'_>) -> Vec<GroupProvider> {
    let mut out = Vec::new();
    if o.has("provider") || o.has("llm") {
        r.error(
            o.path("priorityGroups"),
            "exactly one of provider (the seed's), llm or priorityGroups must be set",
        );
        return out;
    }
    let gp = o.path("priorityGroups");
    let groups = o.list_opt("priorityGroups", 32, r).unwrap_or_default();
    if groups.is_empty() {
        r.error(gp.clone(), "must have at least 1 item");
    }
    for (i, g) in groups.iter().enumerate() {
        let ip = at(&gp, i);
        let Some(go) = Obj::new(g, &ip, &["providers"], r) else {
            continue;
        };
        let members = go.list_opt("providers", 32, r).unwrap_or_default();
        if members.is_empty() {
            r.error(go.path("providers"), "must have at least 1 item");
        }
        let mut names: Vec<String> = Vec::new();
        for (j, m) in members.iter().enumerate() {
            let key = format!("providers[{j}]");
            let mp = join(&ip, &key);
            if !m.is_object() {
                r.error(mp, "must be an object");
                continue;
            }
            let Some(name) = m.get("name").and_then(Value::as_str) else {
                r.error(join(&mp, "name"), "is required (a string)");
                continue;
            };
            if names.iter().any(|n| n == name) {
                r.error(
                    join(&mp, "name"),
                    format!("provider names must be unique within a group: '{name}' twice"),
                );
                continue;
            }
            names.push(name.to_string());
            out.push(GroupProvider {
                priority: i as u32,
                name: name.to_string(),
                provider: llm_provider(m, &ip, &key, &["name"], ns, r),
            });
        }
    }
    out
}

/// `provider` (or `key`) of an AI backend: `type` plus exactly the matching
/// sub-object.
fn read_provider_at(
    o: &Obj<'_, '_>,
    key: &str,
    ns: &str,
    r: &mut Reporter<'_>,
) -> Option<Provider> {
    let p = o.path(key);
    let Some(v) = o.get(key) else {
        r.error(p, "is required");
        return None;
    };
    let mut known = vec!["type", "hostOverride", "pathOverride"];
    known.extend(PROVIDERS);
    let pr = Obj::new(v, &p, &known, r)?;
    let kind = enum_value(&pr, "type", PROVIDERS, true, r);
    for other in PROVIDERS {
        if pr.has(other) && kind.as_deref() != Some(other) {
            r.error(
                pr.path(other),
                format!(
                    "exactly one provider: this must match `type` ({})",
                    kind.as_deref().unwrap_or("unset")
                ),
            );
        }
    }
    let kind = kind?;
    let sp = pr.path(&kind);
    let sub_known: &[&str] = match kind.as_str() {
        "azure" | "azureopenai" => &["endpoint", "deploymentName", "apiVersion", "authToken"],
        "anthropic" | "gemini" => &["model", "apiVersion", "authToken"],
        "vertexai" => &[
            "model",
            "apiVersion",
            "projectId",
            "location",
            "publisher",
            "modelPath",
            "authToken",
        ],
        _ => &["model", "authToken"],
    };
    let Some(sv) = pr.get(&kind) else {
        r.error(sp, format!("is required with type {kind}"));
        return None;
    };
    let s = Obj::new(sv, &sp, sub_known, r)?;
    let non_empty = |key: &str, required: bool, r: &mut Reporter<'_>| {
        if required && !s.has(key) {
            r.error(s.path(key), "is required");
            return None;
        }
        match s.str_opt(key, r) {
            Some("") => {
                r.error(s.path(key), "must not be empty");
                None
            }
            v => v.map(str::to_string),
        }
    };
    let mut out = Provider {
        schema: "OpenAI",
        version: None,
        model: None,
        region: None,
        project: None,
        default_host: None,
        hosts: Vec::new(),
        token: None,
        path: p.clone(),
        model_path: s.path("model"),
        sub_path: sp.clone(),
    };
    let mut ok = true;
    match kind.as_str() {
        "azure" | "azureopenai" => {
            out.schema = "AzureOpenAI";
            let endpoint = non_empty("endpoint", true, r);
            // The deployment is the model in Azure's path.
            out.model = non_empty("deploymentName", true, r);
            out.model_path = s.path("deploymentName");
            out.version = non_empty("apiVersion", false, r);
            match endpoint.as_deref().map(azure_host) {
                Some(Ok(h)) => out.default_host = Some(h),
                Some(Err(e)) => {
                    r.error(s.path("endpoint"), e);
                    ok = false;
                }
                None => ok = false,
            }
            ok &= out.model.is_some();
        }
        "vertexai" => {
            out.model = non_empty("model", false, r);
            out.version = non_empty("apiVersion", false, r);
            out.project = non_empty("projectId", true, r);
            out.region = non_empty("location", true, r);
            out.schema = match non_empty("publisher", false, r)
                .map(|p| p.to_ascii_uppercase())
                .as_deref()
            {
                None | Some("GOOGLE") => "GCPVertexAI",
                Some("ANTHROPIC") => "GCPAnthropic",
                Some(other) => {
                    r.error(
                        s.path("publisher"),
                        format!("unsupported publisher '{other}', expected GOOGLE or ANTHROPIC"),
                    );
                    ok = false;
                    "GCPVertexAI"
                }
            };
            if s.has("modelPath") {
                r.warn(
                    s.path("modelPath"),
                    "not mapped: the filter builds the Vertex AI path from the model and the API called",
                );
            }
            match &out.region {
                Some(l) if l == "global" => {
                    out.default_host = Some("aiplatform.googleapis.com".into())
                }
                Some(l) if is_dns_subdomain(l) => {
                    out.default_host = Some(format!("{l}-aiplatform.googleapis.com"))
                }
                Some(l) => {
                    r.error(
                        s.path("location"),
                        format!("'{l}' is not a Google Cloud location"),
                    );
                    ok = false;
                }
                None => ok = false,
            }
            ok &= out.project.is_some();
        }
        other => {
            (out.schema, out.default_host) = match other {
                "anthropic" => ("Anthropic", Some("api.anthropic.com".into())),
                "gemini" => ("Gemini", Some("generativelanguage.googleapis.com".into())),
                "mistral" => ("Mistral", Some("api.mistral.ai".into())),
                _ => ("OpenAI", Some(crate::generic::OPENAI_HOST.into())),
            };
            out.model = non_empty("model", false, r);
            if other != "openai" && other != "mistral" {
                out.version = non_empty("apiVersion", false, r);
            }
        }
    }
    if let Some(a) = s.get("authToken") {
        out.token = read_auth_token(a, &s.path("authToken"), ns, r);
    }
    if let Some(po) = pr.get("pathOverride") {
        let pp = pr.path("pathOverride");
        if let Some(po) = Obj::new(po, &pp, &["fullPath"], r) {
            match po.str_req("fullPath", r) {
                Some(full) if out.schema == "OpenAI" => {
                    match full.strip_suffix("/chat/completions") {
                        // The filter keeps the endpoint's own suffix (chat,
                        // completions, embeddings) after the prefix.
                        Some(prefix) if full.starts_with('/') => {
                            out.version = Some(crate::resources::openai_prefix(prefix))
                        }
                        _ => {
                            r.error(
                                po.path("fullPath"),
                                "must be an absolute path ending in /chat/completions: the filter maps it to a path prefix",
                            );
                            ok = false;
                        }
                    }
                }
                Some(_) => {
                    r.error(
                        pp,
                        format!("is not supported for provider {kind}: only OpenAI backends take a path prefix"),
                    );
                    ok = false;
                }
                None => ok = false,
            }
        }
    }
    if let Some(h) = pr.get("hostOverride") {
        let hp = pr.path("hostOverride");
        if let Some(ho) = Obj::new(h, &hp, &["host", "port", "tls"], r) {
            out.hosts.extend(read_host(&ho, r));
        }
    } else if let Some(h) = &out.default_host {
        out.hosts.push(Host {
            endpoint: Endpoint {
                address: Address::Fqdn(h.clone()),
                port: 443,
            },
            tls: Some(Tls::default()),
        });
    }
    ok.then_some(out)
}

/// An Azure OpenAI `endpoint` (`my-resource.openai.azure.com`, scheme and
/// trailing slash allowed) as a host name.
fn azure_host(endpoint: &str) -> Result<String, String> {
    let h = endpoint
        .strip_prefix("https://")
        .unwrap_or(endpoint)
        .trim_end_matches('/');
    if is_dns_subdomain(&h.to_ascii_lowercase()) {
        Ok(h.to_ascii_lowercase())
    } else {
        Err(format!(
            "'{endpoint}' is not a host name (e.g. my-resource.openai.azure.com)"
        ))
    }
}

/// `authToken`: `kind` Inline, SecretRef or Passthrough (the seed's form, a bare
/// `secretRef`, is SecretRef).
fn read_auth_token(v: &Value, path: &str, ns: &str, r: &mut Reporter<'_>) -> Option<AuthToken> {
    let a = Obj::new(v, path, &["kind", "inline", "secretRef"], r)?;
    let kind = match enum_value(
        &a,
        "kind",
        &["Inline", "SecretRef", "Passthrough"],
        false,
        r,
    ) {
        Some(k) => k,
        None if a.has("kind") => return None,
        None if a.has("inline") => "Inline".to_string(),
        None => "SecretRef".to_string(),
    };
    for (field, for_kind) in [("inline", "Inline"), ("secretRef", "SecretRef")] {
        if a.has(field) && kind != for_kind {
            r.error(a.path(field), format!("must not be set with kind {kind}"));
        }
    }
    match kind.as_str() {
        "Inline" => match a.str_opt("inline", r) {
            Some(v) if !v.trim().is_empty() => {
                Some(AuthToken::Inline(SecretValue::new(strip_bearer(v))))
            }
            Some(_) => {
                r.error(a.path("inline"), "must not be empty");
                None
            }
            None => {
                r.error(a.path("inline"), "is required with kind Inline");
                None
            }
        },
        "SecretRef" => {
            if !a.has("secretRef") {
                r.error(a.path("secretRef"), "is required");
                return None;
            }
            secret_ref(&a, "secretRef", ns, r).map(AuthToken::Secret)
        }
        _ => Some(AuthToken::Passthrough),
    }
}

/// kgateway's token Secrets often hold `Bearer <key>`; the filter adds the scheme.
fn strip_bearer(v: &str) -> &str {
    let t = v.trim();
    match t.get(..7) {
        Some(p) if p.eq_ignore_ascii_case("bearer ") => t[7..].trim(),
        _ => t,
    }
}

fn read_targets(spec: &Obj<'_, '_>, r: &mut Reporter<'_>) -> Vec<Target> {
    let mut out = Vec::new();
    let Some(list) = spec.list_opt("targetRefs", 16, r) else {
        if !spec.has("targetRefs") {
            r.error(spec.path("targetRefs"), "is required");
        }
        return out;
    };
    if list.is_empty() {
        r.error(spec.path("targetRefs"), "must have at least 1 item");
    }
    for (i, v) in list.iter().enumerate() {
        let p = at(&spec.path("targetRefs"), i);
        let Some(t) = Obj::new(
            v,
            &p,
            &["group", "kind", "name", "namespace", "sectionName"],
            r,
        ) else {
            continue;
        };
        if let Some(g) = t.str_opt("group", r) {
            if g != GWAPI_GROUP {
                r.error(t.path("group"), format!("must be {GWAPI_GROUP}"));
            }
        }
        let kind = enum_value(&t, "kind", &["Gateway", "HTTPRoute"], true, r);
        let name = t.str_req("name", r);
        if t.has("namespace") {
            t.str_opt("namespace", r);
        }
        if t.has("sectionName") {
            t.str_opt("sectionName", r);
            r.warn(
                t.path("sectionName"),
                "not mapped: the policy applies to the whole target",
            );
        }
        if let (Some(kind), Some(name)) = (kind, name) {
            out.push(Target {
                kind,
                name: name.to_string(),
                path: p,
            });
        }
    }
    out
}

fn duration(o: &Obj<'_, '_>, key: &str, r: &mut Reporter<'_>) -> Option<u64> {
    let s = o.str_opt(key, r)?;
    match parse_duration(s) {
        Ok(ms) => Some(ms),
        Err(e) => {
            r.error(o.path(key), e);
            None
        }
    }
}

/// A kgateway CRD `allowOrigins` entry as Envoy's origin match: `*` matches
/// any origin, `SCHEME://*.HOST[:PORT]` any subdomain of HOST, anything else
/// exactly (the CRD's pattern: http or https, a host whose labels are letters,
/// digits and `-`, an optional port).
fn cors_origin(origin: &str) -> Result<Value, String> {
    if origin == "*" {
        return Ok(json!({"safe_regex": {"regex": ".*"}}));
    }
    let bad = || format!("'{origin}' is not `*` or an http(s) origin (scheme://host[:port])");
    let (scheme, rest) = origin.split_once("://").ok_or_else(bad)?;
    if scheme != "http" && scheme != "https" {
        return Err(bad());
    }
    let (host, port) = match rest.rsplit_once(':') {
        Some((h, p)) => (h, Some(p)),
        None => (rest, None),
    };
    if port.is_some_and(|p| p.is_empty() || p.len() > 5 || !p.bytes().all(|b| b.is_ascii_digit())) {
        return Err(bad());
    }
    let (wild, host) = match host.strip_prefix("*.") {
        Some(h) => (true, h),
        None => (false, host),
    };
    let label_ok =
        |l: &str| !l.is_empty() && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
    if host != "*" && !host.split('.').all(label_ok) || (wild && host == "*") {
        return Err(bad());
    }
    if host == "*" {
        // `scheme://*` (with an optional port): any host.
        let port = port.map(|p| format!(":{p}")).unwrap_or_default();
        let re = format!("{}://[^/:]+{}", scheme, regex_escape(&port));
        return Ok(json!({"safe_regex": {"regex": re}}));
    }
    if wild {
        let port = port.map(|p| format!(":{p}")).unwrap_or_default();
        let re = format!(
            "{}://[^/:]+\\.{}{}",
            scheme,
            regex_escape(host),
            regex_escape(&port)
        );
        return Ok(json!({"safe_regex": {"regex": re}}));
    }
    Ok(json!({"exact": origin}))
}

/// `s` with RE2's metacharacters escaped.
fn regex_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if "\\.+*?()|[]{}^$".contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// Reads one kgateway resource into `kg`; `r.resource` is set.
pub(crate) fn read(
    kind: &str,
    version: &str,
    meta: Meta,
    spec: Option<Obj<'_, '_>>,
    kg: &mut Inputs,
    r: &mut Reporter<'_>,
) {
    if version != "v1alpha1" {
        r.error(
            "apiVersion",
            format!("unsupported version '{version}', expected v1alpha1"),
        );
        return;
    }
    let ns = meta.id.namespace.clone();
    let Some(spec) = spec else {
        if !matches!(
            kind,
            "Backend"
                | "AIBackend"
                | "TrafficPolicy"
                | "HTTPListenerPolicy"
                | "DirectResponse"
                | "GatewayExtension"
                | "GatewayParameters"
        ) {
            r.warn("", format!("kgateway {kind} is not compiled; ignored"));
        }
        return;
    };
    match kind {
        "Backend" => {
            let Some(o) = Obj::new(
                &Value::Object(spec.map.clone()),
                "spec",
                &["type", "static", "aws", "ai"],
                r,
            )
            .map(|_| spec) else {
                return;
            };
            let t = enum_value(&o, "type", &["Static", "AWS", "AI"], true, r);
            for (k, ty) in [("static", "Static"), ("aws", "AWS"), ("ai", "AI")] {
                if o.has(k) && t.as_deref().is_some_and(|t| t != ty) {
                    r.error(
                        o.path(k),
                        format!(
                            "exactly one of static, aws, ai: must match `type` ({})",
                            t.as_deref().unwrap_or("")
                        ),
                    );
                }
            }
            let Some(t) = t else { return };
            let key = match t.as_str() {
                "Static" => "static",
                "AWS" => "aws",
                _ => "ai",
            };
            let p = o.path(key);
            let Some(sub) = o.get(key) else {
                r.error(p, format!("is required with type {t}"));
                return;
            };
            let kind = match key {
                "static" => {
                    let Some(s) = Obj::new(sub, &p, &["hosts"], r) else {
                        return;
                    };
                    let list = s.list_opt("hosts", 64, r).unwrap_or_default();
                    if list.is_empty() {
                        r.error(s.path("hosts"), "must have at least 1 item");
                    }
                    let mut hosts = Vec::new();
                    for (i, h) in list.iter().enumerate() {
                        let hp = at(&s.path("hosts"), i);
                        if let Some(ho) = Obj::new(h, &hp, &["host", "port", "tls"], r) {
                            hosts.extend(read_host(&ho, r));
                        }
                    }
                    BackendKind::Static(hosts)
                }
                "aws" => {
                    let Some(s) = Obj::new(
                        sub,
                        &p,
                        &[
                            "region",
                            "lambdaFunctionName",
                            "accountId",
                            "roleArn",
                            "lambda",
                            "ec2",
                            "auth",
                        ],
                        r,
                    ) else {
                        return;
                    };
                    BackendKind::Aws(read_aws(&s, &ns, r).map(Box::new))
                }
                _ => {
                    let Some(s) = Obj::new(sub, &p, &["provider", "llm", "priorityGroups"], r)
                    else {
                        return;
                    };
                    // The seed's `provider`, else kgateway's CRD's `llm` or
                    // `priorityGroups`.
                    if s.has("priorityGroups") {
                        BackendKind::AiGroups(read_priority_groups(&s, &ns, r))
                    } else {
                        let provider = if s.has("provider") && !s.has("llm") {
                            read_provider(&s, &ns, r)
                        } else if !s.has("provider") && !s.has("llm") {
                            r.error(s.path("llm"), "is required (or the seed's `provider`)");
                            None
                        } else {
                            read_llm(&s, &ns, r)
                        };
                        BackendKind::Ai(provider.map(Box::new))
                    }
                }
            };
            kg.backends.push(Backend { meta, kind });
        }
        "AIBackend" => {
            let Some(o) = Obj::new(
                &Value::Object(spec.map.clone()),
                "spec",
                &["provider", "groups"],
                r,
            )
            .map(|_| spec) else {
                return;
            };
            let provider = read_provider(&o, &ns, r);
            let mut groups = Vec::new();
            let mut seen: HashMap<(String, String), String> = HashMap::new();
            for (i, g) in o
                .list_opt("groups", 16, r)
                .unwrap_or_default()
                .iter()
                .enumerate()
            {
                let gp = at("spec.groups", i);
                let Some(go) = Obj::new(g, &gp, &["priority", "backends"], r) else {
                    continue;
                };
                let priority = go
                    .int_opt("priority", 0, i64::from(u32::MAX), r)
                    .map_or(i as u32, |p| p as u32);
                let list = go.list_opt("backends", 64, r).unwrap_or_default();
                if list.is_empty() {
                    r.error(go.path("backends"), "must have at least 1 item");
                }
                for (j, b) in list.iter().enumerate() {
                    let bp = at(&go.path("backends"), j);
                    let Some(bo) = Obj::new(b, &bp, &["backendRef", "weight"], r) else {
                        continue;
                    };
                    let weight = bo.int_opt("weight", 0, 1_000_000, r).unwrap_or(1) as u32;
                    let rp = bo.path("backendRef");
                    let Some(rv) = bo.get("backendRef") else {
                        r.error(rp, "is required");
                        continue;
                    };
                    let Some(ro) = Obj::new(rv, &rp, &["name", "namespace"], r) else {
                        continue;
                    };
                    let Some(name) = ro.str_req("name", r) else {
                        continue;
                    };
                    let bns = ro.str_opt("namespace", r).unwrap_or(&ns).to_string();
                    let key = (bns.clone(), name.to_string());
                    if let Some(first) = seen.get(&key) {
                        r.error(
                            ro.path("name"),
                            format!("Backend {bns}/{name} is already listed at {first}"),
                        );
                        continue;
                    }
                    seen.insert(key, rp.clone());
                    groups.push(GroupRef {
                        name: name.to_string(),
                        namespace: bns,
                        weight,
                        priority,
                        path: rp,
                    });
                }
            }
            kg.ai_backends.push(AiBackend {
                meta,
                provider,
                groups,
            });
        }
        "TrafficPolicy" => read_traffic(meta, spec, kg, r),
        "HTTPListenerPolicy" => {
            let Some(o) = Obj::new(
                &Value::Object(spec.map.clone()),
                "spec",
                &[
                    "targetRefs",
                    "accessLogging",
                    "buffer",
                    "celValidation",
                    "basicAuth",
                ],
                r,
            )
            .map(|_| spec) else {
                return;
            };
            let targets = read_targets(&o, r);
            for t in &targets {
                if t.kind != "Gateway" {
                    r.error(
                        format!("{}.kind", t.path),
                        "a listener policy targets a Gateway",
                    );
                }
            }
            if let Some(v) = o.get("accessLogging") {
                if !v.is_object() {
                    r.error(o.path("accessLogging"), "must be an object");
                } else {
                    r.warn(o.path("accessLogging"), "not mapped: the standalone bootstrap always writes its own JSON access log (access_log) with the filter's metadata");
                }
            }
            let mut max_request_bytes = None;
            if let Some(v) = o.get("buffer") {
                let p = o.path("buffer");
                if let Some(b) = Obj::new(v, &p, &["maxRequestBytes"], r) {
                    max_request_bytes = b
                        .int_opt("maxRequestBytes", 1, i64::from(u32::MAX), r)
                        .map(|n| n as u64);
                    if !b.has("maxRequestBytes") {
                        r.error(b.path("maxRequestBytes"), "is required");
                    }
                }
            }
            let mut request_rules = Vec::new();
            if let Some(v) = o.get("celValidation") {
                let p = o.path("celValidation");
                if let Some(c) = Obj::new(v, &p, &["rules"], r) {
                    for (i, rule) in c
                        .list_opt("rules", 64, r)
                        .unwrap_or_default()
                        .iter()
                        .enumerate()
                    {
                        let rp = at(&c.path("rules"), i);
                        let Some(ro) = Obj::new(rule, &rp, &["expression", "action"], r) else {
                            continue;
                        };
                        let expression = ro.str_req("expression", r);
                        let action = enum_value(&ro, "action", &["Deny", "Allow"], true, r);
                        let (Some(expression), Some(action)) = (expression, action) else {
                            continue;
                        };
                        // The filter's own compiler: what it would refuse at load.
                        let kind = if action == "Allow" {
                            RuleAction::Allow
                        } else {
                            RuleAction::Deny
                        };
                        if let Err((_, why)) = RequestRules::compile(&[(expression, kind)]) {
                            r.error(ro.path("expression"), why);
                            continue;
                        }
                        request_rules.push(json!({"expression": expression, "action": action}));
                    }
                }
            }
            let mut basic_auth = None;
            if let Some(v) = o.get("basicAuth") {
                let p = o.path("basicAuth");
                if let Some(b) = Obj::new(v, &p, &["credentialsSecretRef"], r) {
                    if b.has("credentialsSecretRef") {
                        basic_auth = secret_ref(&b, "credentialsSecretRef", &ns, r);
                    } else {
                        r.error(b.path("credentialsSecretRef"), "is required");
                    }
                }
            }
            kg.listener.push(ListenerPolicy {
                meta,
                targets,
                max_request_bytes,
                basic_auth,
                request_rules,
            });
        }
        "DirectResponse" => {
            let Some(o) = Obj::new(
                &Value::Object(spec.map.clone()),
                "spec",
                &["status", "statusCode", "body", "bodyFormat"],
                r,
            )
            .map(|_| spec) else {
                return;
            };
            // kgateway's CRD names the code `status`; the seed, `statusCode`.
            let key = match (o.has("status"), o.has("statusCode")) {
                (true, true) => {
                    r.error(
                        o.path("statusCode"),
                        "set `status` (kgateway's CRD) or `statusCode` (the seed's), not both",
                    );
                    return;
                }
                (true, false) => "status",
                (false, true) => "statusCode",
                (false, false) => {
                    r.error(o.path("status"), "is required");
                    return;
                }
            };
            if o.has("bodyFormat") {
                r.error(
                    o.path("bodyFormat"),
                    "not compiled: give the answer as `body`",
                );
            }
            let status = o.int_opt(key, 200, 599, r);
            let body = o.str_opt("body", r).map(str::to_string);
            if let Some(s) = status {
                kg.direct.push(DirectResponse {
                    meta,
                    status: s as u16,
                    body,
                });
            }
        }
        "GatewayExtension" => {
            let Some(o) = Obj::new(
                &Value::Object(spec.map.clone()),
                "spec",
                &["type", "extAuth", "extProc", "rateLimit"],
                r,
            )
            .map(|_| spec) else {
                return;
            };
            let t = enum_value(&o, "type", &["ExtAuth", "ExtProc", "RateLimit"], true, r);
            let mut backend = None;
            let mut backend_kind = None;
            let (mut rl_domain, mut rl_fail_open, mut rl_timeout_ms) = (None, None, None);
            for (k, ty) in [
                ("extAuth", "ExtAuth"),
                ("extProc", "ExtProc"),
                ("rateLimit", "RateLimit"),
            ] {
                let p = o.path(k);
                match (o.get(k), t.as_deref() == Some(ty)) {
                    (Some(_), false) if t.is_some() => r.error(
                        p,
                        format!(
                            "exactly one of extAuth, extProc, rateLimit: must match `type` ({})",
                            t.as_deref().unwrap_or("")
                        ),
                    ),
                    (None, true) => r.error(p, format!("is required with type {ty}")),
                    (Some(v), true) => {
                        let known: &[&str] = if ty == "RateLimit" {
                            &["grpcService", "domain", "failOpen", "timeout"]
                        } else {
                            &["grpcService"]
                        };
                        let Some(so) = Obj::new(v, &p, known, r) else {
                            continue;
                        };
                        if ty == "RateLimit" {
                            rl_domain = so.str_opt("domain", r).map(str::to_string);
                            if rl_domain.as_deref() == Some("") {
                                r.error(so.path("domain"), "must not be empty");
                            }
                            rl_fail_open = so.bool_opt("failOpen", r);
                            rl_timeout_ms = duration(&so, "timeout", r);
                        }
                        let gp = so.path("grpcService");
                        let Some(g) = so
                            .get("grpcService")
                            .and_then(|v| Obj::new(v, &gp, &["backendRef"], r))
                        else {
                            r.error(gp, "is required");
                            continue;
                        };
                        let bp = g.path("backendRef");
                        let Some(b) = g.get("backendRef").and_then(|v| {
                            Obj::new(v, &bp, &["name", "namespace", "port", "group", "kind"], r)
                        }) else {
                            r.error(bp, "is required");
                            continue;
                        };
                        let name = b.str_req("name", r);
                        let bns = b.str_opt("namespace", r).unwrap_or(&ns).to_string();
                        let port = port(&b, "port", false, r);
                        let group = b.str_opt("group", r).unwrap_or_default();
                        let kind = b.str_opt("kind", r).unwrap_or("Service");
                        if !(group.is_empty() && kind == "Service") {
                            backend_kind = Some((group.to_string(), kind.to_string()));
                        }
                        if let Some(name) = name {
                            backend = Some((bns, name.to_string(), port, bp.clone()));
                        }
                    }
                    _ => {}
                }
            }
            kg.extensions.push(Extension {
                meta,
                kind: t,
                backend,
                backend_kind,
                rl_domain,
                rl_fail_open,
                rl_timeout_ms,
            });
        }
        "GatewayParameters" => {
            if let Some(o) =
                Obj::new(&Value::Object(spec.map.clone()), "spec", &["kube"], r).map(|_| spec)
            {
                if let Some(k) = o.get("kube") {
                    let kp = o.path("kube");
                    if let Some(ko) = Obj::new(
                        k,
                        &kp,
                        &["deployment", "podTemplate", "envoyContainer", "service"],
                        r,
                    ) {
                        if let Some(d) = ko.get("deployment") {
                            let dp = ko.path("deployment");
                            if let Some(dobj) = Obj::new(d, &dp, &["replicas"], r) {
                                dobj.int_opt("replicas", 0, i64::from(i32::MAX), r);
                            }
                        }
                        if let Some(s) = ko.get("service") {
                            let sp = ko.path("service");
                            if let Some(so) = Obj::new(s, &sp, &["type", "extraAnnotations"], r) {
                                enum_value(
                                    &so,
                                    "type",
                                    &["ClusterIP", "NodePort", "LoadBalancer"],
                                    false,
                                    r,
                                );
                            }
                        }
                    }
                }
            }
            r.warn(
                "spec",
                "not mapped: deployment settings have no counterpart in a standalone bootstrap",
            );
        }
        _ => r.warn("", format!("kgateway {kind} is not compiled; ignored")),
    }
}

fn header_mod(
    o: &Obj<'_, '_>,
    key: &str,
    r: &mut Reporter<'_>,
) -> Option<(Vec<Value>, Vec<String>)> {
    let p = o.path(key);
    let h = Obj::new(o.get(key)?, &p, &["set", "add", "remove"], r)?;
    let mut add = Vec::new();
    for (field, action) in [
        ("set", "OVERWRITE_IF_EXISTS_OR_ADD"),
        ("add", "APPEND_IF_EXISTS_OR_ADD"),
    ] {
        let mut names: Vec<String> = Vec::new();
        for (i, v) in h
            .list_opt(field, 64, r)
            .unwrap_or_default()
            .iter()
            .enumerate()
        {
            let ip = at(&h.path(field), i);
            let Some(io) = Obj::new(v, &ip, &["name", "value", "secretRef"], r) else {
                continue;
            };
            // kgateway's CRD may take the value from a Secret.
            if io.has("secretRef") {
                r.error(
                    io.path("secretRef"),
                    "not compiled: give the header's `value`",
                );
                continue;
            }
            let (Some(n), Some(val)) = (io.str_req("name", r), io.str_opt("value", r)) else {
                if !io.has("value") {
                    r.error(io.path("value"), "is required");
                }
                continue;
            };
            let lower = n.to_ascii_lowercase();
            if field == "set" && names.contains(&lower) {
                r.error(io.path("name"), format!("header '{n}' is set twice"));
                continue;
            }
            names.push(lower);
            add.push(json!({"header": {"key": n, "value": val}, "append_action": action}));
        }
    }
    let mut remove = Vec::new();
    for (i, v) in h
        .list_opt("remove", 64, r)
        .unwrap_or_default()
        .iter()
        .enumerate()
    {
        match v.as_str() {
            Some(s) if !s.is_empty() => remove.push(s.to_string()),
            _ => r.error(at(&h.path("remove"), i), "must be a non-empty string"),
        }
    }
    Some((add, remove))
}

fn read_traffic(meta: Meta, spec: Obj<'_, '_>, kg: &mut Inputs, r: &mut Reporter<'_>) {
    let known = [
        "targetRefs",
        "cors",
        "extAuth",
        "extProc",
        "rateLimit",
        "timeout",
        "retries",
        "requestHeaderModifier",
        "responseHeaderModifier",
        "timeouts",
        "retry",
        "headerModifiers",
    ];
    // The seed's field and kgateway's CRD's for the same thing: one of them.
    for (seed, crd) in [
        ("timeout", "timeouts"),
        ("retries", "retry"),
        ("requestHeaderModifier", "headerModifiers"),
        ("responseHeaderModifier", "headerModifiers"),
    ] {
        if spec.has(seed) && spec.has(crd) {
            r.error(
                spec.path(crd),
                format!("set `{crd}` (kgateway's CRD) or `{seed}` (the seed's), not both"),
            );
        }
    }
    for k in spec.map.keys() {
        if !known.contains(&k.as_str()) {
            r.warn(spec.path(k), "unknown field, ignored");
        }
    }
    let ns = meta.id.namespace.clone();
    let targets = read_targets(&spec, r);
    let mut extra = RouteExtra::default();
    let mut cors = false;
    if let Some(v) = spec.get("cors") {
        let p = spec.path("cors");
        if let Some(c) = Obj::new(
            v,
            &p,
            &[
                "allowOrigins",
                "allowMethods",
                "allowHeaders",
                "exposeHeaders",
                "maxAge",
                "allowCredentials",
            ],
            r,
        ) {
            let mut policy = Map::new();
            policy.insert(
                "@type".into(),
                json!("type.googleapis.com/envoy.extensions.filters.http.cors.v3.CorsPolicy"),
            );
            let mut origins = Vec::new();
            for (i, o) in c
                .list_opt("allowOrigins", 64, r)
                .unwrap_or_default()
                .iter()
                .enumerate()
            {
                let op = at(&c.path("allowOrigins"), i);
                // kgateway's CRD: an origin string, `*` or a scheme, host and
                // optional port whose host may start with `*.`.
                if let Some(origin) = o.as_str() {
                    match cors_origin(origin) {
                        Ok(m) => origins.push(m),
                        Err(e) => r.error(op, e),
                    }
                    continue;
                }
                // The seed's: `{type: Exact | Prefix | Regex, value}`.
                let Some(oo) = Obj::new(o, &op, &["type", "value"], r) else {
                    continue;
                };
                let t = enum_value(&oo, "type", &["Exact", "Prefix", "Regex"], false, r)
                    .unwrap_or_else(|| "Exact".into());
                let Some(val) = oo.str_req("value", r) else {
                    continue;
                };
                origins.push(match t.as_str() {
                    "Prefix" => json!({"prefix": val}),
                    "Regex" => json!({"safe_regex": {"regex": val}}),
                    _ => json!({"exact": val}),
                });
            }
            if origins.is_empty() {
                r.error(c.path("allowOrigins"), "must have at least 1 item");
            }
            // kgateway's CRD rule for its string origins.
            let strings = c.get("allowOrigins").and_then(Value::as_array);
            if strings.is_some_and(|l| l.len() > 1 && l.iter().any(|o| o == "*")) {
                r.error(
                    c.path("allowOrigins"),
                    "AllowOrigins cannot contain '*' alongside other origins",
                );
            }
            policy.insert("allow_origin_string_match".into(), Value::Array(origins));
            for (k, envoy) in [
                ("allowMethods", "allow_methods"),
                ("allowHeaders", "allow_headers"),
                ("exposeHeaders", "expose_headers"),
            ] {
                let mut items = Vec::new();
                for (i, v) in c.list_opt(k, 64, r).unwrap_or_default().iter().enumerate() {
                    match v.as_str() {
                        Some(s) if !s.is_empty() => items.push(s),
                        _ => r.error(at(&c.path(k), i), "must be a non-empty string"),
                    }
                }
                if !items.is_empty() {
                    policy.insert(envoy.into(), json!(items.join(",")));
                }
            }
            // kgateway's CRD: integer seconds (1 and up); the seed's: a duration.
            let max_age = match c.get("maxAge") {
                Some(Value::Number(_)) => c
                    .int_opt("maxAge", 1, i64::from(i32::MAX), r)
                    .map(|s| s as u64),
                _ => duration(&c, "maxAge", r).map(|ms| ms / 1000),
            };
            if let Some(secs) = max_age {
                policy.insert("max_age".into(), json!(secs.to_string()));
            }
            if let Some(b) = c.bool_opt("allowCredentials", r) {
                policy.insert("allow_credentials".into(), json!(b));
            }
            extra.cors = Some(Value::Object(policy));
            cors = true;
        }
    }
    let mut ext = Vec::new();
    let mut rl_actions = None;
    for field in ["extAuth", "extProc", "rateLimit"] {
        let p = spec.path(field);
        let crd_shape = field == "rateLimit"
            && spec
                .get(field)
                .and_then(Value::as_object)
                .is_some_and(|o| o.contains_key("global") || o.contains_key("local"));
        if crd_shape {
            if let Some((e, actions)) =
                read_rate_limit(spec.get(field).unwrap_or(&Value::Null), &p, &ns, r)
            {
                ext.push(e);
                rl_actions = Some(actions);
            }
            continue;
        }
        let Some(e) = spec
            .get(field)
            .and_then(|v| Obj::new(v, &p, &["extensionRef", "disable"], r))
        else {
            continue;
        };
        let disable = e.bool_opt("disable", r);
        match (e.get("extensionRef"), disable) {
            (Some(_), Some(true)) | (None, None | Some(false)) => {
                r.error(p.clone(), "exactly one of extensionRef and disable: true");
            }
            (None, Some(true)) => r.warn(
                e.path("disable"),
                "nothing to disable: the standalone bootstrap adds no such filter by default",
            ),
            (Some(v), _) => {
                let rp = e.path("extensionRef");
                if let Some(ro) = Obj::new(v, &rp, &["name", "namespace"], r) {
                    if let Some(name) = ro.str_req("name", r) {
                        ext.push(ExtRef {
                            field,
                            name: name.to_string(),
                            namespace: ro.str_opt("namespace", r).unwrap_or(&ns).to_string(),
                            path: rp.clone(),
                        });
                    }
                }
            }
        }
    }
    if let Some(v) = spec.get("timeout") {
        let p = spec.path("timeout");
        if let Some(t) = Obj::new(v, &p, &["request", "idle"], r) {
            extra.timeout_ms = duration(&t, "request", r);
            extra.idle_timeout_ms = duration(&t, "idle", r);
        }
    }
    // kgateway's CRD: `timeouts.request`, `timeouts.streamIdle`.
    if let Some(v) = spec.get("timeouts").filter(|_| !spec.has("timeout")) {
        let p = spec.path("timeouts");
        if let Some(t) = Obj::new(v, &p, &["request", "streamIdle"], r) {
            extra.timeout_ms = duration(&t, "request", r);
            extra.idle_timeout_ms = duration(&t, "streamIdle", r);
        }
    }
    // kgateway's CRD: `retry` with a list of conditions and status codes.
    if let Some(v) = spec.get("retry").filter(|_| !spec.has("retries")) {
        let p = spec.path("retry");
        if let Some(t) = Obj::new(
            v,
            &p,
            &[
                "attempts",
                "perTryTimeout",
                "retryOn",
                "statusCodes",
                "backoffBaseInterval",
            ],
            r,
        ) {
            extra.retry = read_crd_retry(&t, r).map(Value::Object);
        }
    }
    if let Some(v) = spec.get("retries") {
        let p = spec.path("retries");
        if let Some(t) = Obj::new(
            v,
            &p,
            &["attempts", "perTryTimeout", "backOff", "retryOn"],
            r,
        ) {
            let mut retry = Map::new();
            let attempts = t.int_opt("attempts", 0, 100, r);
            if !t.has("attempts") {
                r.error(t.path("attempts"), "is required");
            }
            let on = match t.str_opt("retryOn", r) {
                Some(s) => {
                    for c in s.split(',').map(str::trim) {
                        if !RETRY_ON.contains(&c) {
                            r.error(
                                t.path("retryOn"),
                                format!(
                                    "unknown retry condition '{c}', expected any of: {}",
                                    RETRY_ON.join(", ")
                                ),
                            );
                        }
                    }
                    s.split(',').map(str::trim).collect::<Vec<_>>().join(",")
                }
                None => "connect-failure,refused-stream,reset,5xx".to_string(),
            };
            retry.insert("retry_on".into(), json!(on));
            retry.insert("num_retries".into(), json!(attempts.unwrap_or(1)));
            if let Some(ms) = duration(&t, "perTryTimeout", r) {
                retry.insert("per_try_timeout".into(), json!(envoy_duration(ms)));
            }
            if let Some(b) = t.get("backOff") {
                let bp = t.path("backOff");
                if let Some(bo) = Obj::new(b, &bp, &["baseInterval", "maxInterval"], r) {
                    let base = duration(&bo, "baseInterval", r);
                    let max = duration(&bo, "maxInterval", r);
                    match (base, max) {
                        (Some(b), Some(m)) if m < b => {
                            r.error(bo.path("maxInterval"), "must not be below baseInterval")
                        }
                        (Some(b), m) if b > 0 => {
                            let mut o = json!({"base_interval": envoy_duration(b)});
                            if let Some(m) = m {
                                o["max_interval"] = json!(envoy_duration(m));
                            }
                            retry.insert("retry_back_off".into(), o);
                        }
                        (None, Some(_)) => {
                            r.error(bo.path("baseInterval"), "is required with maxInterval")
                        }
                        _ => {}
                    }
                }
            }
            extra.retry = Some(Value::Object(retry));
        }
    }
    if let Some((a, rm)) = header_mod(&spec, "requestHeaderModifier", r) {
        extra.request_add = a;
        extra.request_remove = rm;
    }
    if let Some((a, rm)) = header_mod(&spec, "responseHeaderModifier", r) {
        extra.response_add = a;
        extra.response_remove = rm;
    }
    // kgateway's CRD: `headerModifiers.request` / `.response`.
    if let Some(v) = spec.get("headerModifiers") {
        let p = spec.path("headerModifiers");
        if let Some(h) = Obj::new(v, &p, &["request", "response"], r) {
            if !h.has("request") && !h.has("response") {
                r.error(p.clone(), "at least one of request, response must be set");
            }
            if !spec.has("requestHeaderModifier") {
                if let Some((a, rm)) = header_mod(&h, "request", r) {
                    extra.request_add = a;
                    extra.request_remove = rm;
                }
            }
            if !spec.has("responseHeaderModifier") {
                if let Some((a, rm)) = header_mod(&h, "response", r) {
                    extra.response_add = a;
                    extra.response_remove = rm;
                }
            }
        }
    }
    kg.traffic.push(TrafficPolicy {
        meta,
        targets,
        extra,
        cors,
        ext,
        rl_actions,
    });
}

/// Retry conditions kgateway's CRD takes beside [`RETRY_ON`]: gRPC statuses,
/// which Envoy's `retry_on` takes too.
const RETRY_ON_GRPC: &[&str] = &[
    "cancelled",
    "deadline-exceeded",
    "internal",
    "resource-exhausted",
    "unavailable",
];

/// kgateway's CRD `TrafficPolicy.retry` as Envoy's route `retry_policy`:
/// `attempts` (default 1), `retryOn` (a list) and/or `statusCodes` (400..599,
/// one of the two required), `perTryTimeout`, `backoffBaseInterval` (at least
/// 1ms).
fn read_crd_retry(t: &Obj<'_, '_>, r: &mut Reporter<'_>) -> Option<Map<String, Value>> {
    let mut retry = Map::new();
    let attempts = t.int_opt("attempts", 0, 100, r).unwrap_or(1);
    let mut on: Vec<String> = Vec::new();
    for (i, c) in t
        .list_opt("retryOn", 64, r)
        .unwrap_or_default()
        .iter()
        .enumerate()
    {
        match c.as_str() {
            Some(c) if RETRY_ON.contains(&c) || RETRY_ON_GRPC.contains(&c) => {
                if !on.iter().any(|o| o == c) {
                    on.push(c.to_string());
                }
            }
            _ => r.error(
                at(&t.path("retryOn"), i),
                format!(
                    "unknown retry condition {c}, expected any of: {}, {}",
                    RETRY_ON.join(", "),
                    RETRY_ON_GRPC.join(", ")
                ),
            ),
        }
    }
    let mut codes = Vec::new();
    for (i, c) in t
        .list_opt("statusCodes", 64, r)
        .unwrap_or_default()
        .iter()
        .enumerate()
    {
        match c.as_i64() {
            Some(c) if (400..=599).contains(&c) => codes.push(c),
            _ => r.error(
                at(&t.path("statusCodes"), i),
                "must be an integer between 400 and 599",
            ),
        }
    }
    if on.is_empty() && codes.is_empty() {
        r.error(t.path("retryOn"), "retryOn or statusCodes must be set");
        return None;
    }
    if !codes.is_empty() && !on.iter().any(|o| o == "retriable-status-codes") {
        on.push("retriable-status-codes".into());
    }
    retry.insert("retry_on".into(), json!(on.join(",")));
    retry.insert("num_retries".into(), json!(attempts));
    if !codes.is_empty() {
        retry.insert("retriable_status_codes".into(), json!(codes));
    }
    if let Some(ms) = duration(t, "perTryTimeout", r) {
        if ms < 1 {
            r.error(t.path("perTryTimeout"), "must be at least 1ms");
        }
        retry.insert("per_try_timeout".into(), json!(envoy_duration(ms)));
    }
    if let Some(ms) = duration(t, "backoffBaseInterval", r) {
        if ms < 1 {
            r.error(t.path("backoffBaseInterval"), "must be at least 1ms");
        } else {
            retry.insert(
                "retry_back_off".into(),
                json!({"base_interval": envoy_duration(ms)}),
            );
        }
    }
    Some(retry)
}

/// kgateway's `rateLimit` (`global`: descriptors and the GatewayExtension of the
/// rate-limit service; `local`: a token bucket): the extension reference and the
/// descriptors as the actions of one Envoy rate limit, as kgateway translates
/// them (every descriptor's entries in one descriptor).
fn read_rate_limit(
    v: &Value,
    path: &str,
    ns: &str,
    r: &mut Reporter<'_>,
) -> Option<(ExtRef, Vec<Value>)> {
    let o = Obj::new(v, path, &["global", "local"], r)?;
    if o.has("local") {
        r.warn(
            o.path("local"),
            "not mapped: a local token bucket per Envoy is not compiled (the filter's own rateLimit counts per Envoy; the global rate limit counts across the fleet)",
        );
    }
    let gp = o.path("global");
    let g = Obj::new(o.get("global")?, &gp, &["descriptors", "extensionRef"], r)?;
    let mut actions = Vec::new();
    let list = g.list_opt("descriptors", 64, r).unwrap_or_default();
    if list.is_empty() {
        r.error(g.path("descriptors"), "must have at least 1 item");
    }
    for (i, d) in list.iter().enumerate() {
        let dp = at(&g.path("descriptors"), i);
        let Some(d) = Obj::new(d, &dp, &["entries"], r) else {
            continue;
        };
        let entries = d.list_opt("entries", 64, r).unwrap_or_default();
        if entries.is_empty() {
            r.error(d.path("entries"), "must have at least 1 item");
        }
        for (j, e) in entries.iter().enumerate() {
            let ep = at(&d.path("entries"), j);
            let Some(e) = Obj::new(e, &ep, &["type", "generic", "header"], r) else {
                continue;
            };
            let t = enum_value(
                &e,
                "type",
                &["Generic", "Header", "RemoteAddress", "Path"],
                true,
                r,
            );
            let want = match t.as_deref() {
                Some("Generic") => Some("generic"),
                Some("Header") => Some("header"),
                _ => None,
            };
            for k in ["generic", "header"] {
                if e.has(k) && want != Some(k) {
                    r.error(
                        e.path(k),
                        format!("must not be set with type {}", t.as_deref().unwrap_or("")),
                    );
                }
            }
            match t.as_deref() {
                Some("Generic") => {
                    let gp = e.path("generic");
                    let Some(go) = e
                        .get("generic")
                        .and_then(|v| Obj::new(v, &gp, &["key", "value"], r))
                    else {
                        r.error(gp, "is required with type Generic");
                        continue;
                    };
                    if let (Some(k), Some(v)) = (go.str_req("key", r), go.str_req("value", r)) {
                        actions.push(
                            json!({"generic_key": {"descriptor_key": k, "descriptor_value": v}}),
                        );
                    }
                }
                Some("Header") => {
                    if !e.has("header") {
                        r.error(e.path("header"), "is required with type Header");
                    } else if let Some(h) = e.str_req("header", r) {
                        actions.push(
                            json!({"request_headers": {"header_name": h, "descriptor_key": h}}),
                        );
                    }
                }
                Some("RemoteAddress") => actions.push(json!({"remote_address": {}})),
                Some("Path") => actions.push(
                    json!({"request_headers": {"header_name": ":path", "descriptor_key": "path"}}),
                ),
                _ => {}
            }
        }
    }
    let rp = g.path("extensionRef");
    let Some(ro) = g
        .get("extensionRef")
        .and_then(|v| Obj::new(v, &rp, &["name", "namespace"], r))
    else {
        r.error(rp, "is required");
        return None;
    };
    let name = ro.str_req("name", r)?;
    let ext = ExtRef {
        field: "rateLimit",
        name: name.to_string(),
        namespace: ro.str_opt("namespace", r).unwrap_or(ns).to_string(),
        path: rp.clone(),
    };
    Some((ext, actions))
}

/// Reads a Gateway API HTTPRoute: only its kgateway side is compiled.
pub(crate) fn read_http_route(
    meta: Meta,
    spec: Obj<'_, '_>,
    kg: &mut Inputs,
    r: &mut Reporter<'_>,
) {
    let ns = meta.id.namespace.clone();
    let mut rules = Vec::new();
    let mut kgateway = false;
    for (i, v) in spec
        .list_opt("rules", 16, r)
        .unwrap_or_default()
        .iter()
        .enumerate()
    {
        let p = at("spec.rules", i);
        let Some(o) = Obj::new(
            v,
            &p,
            &["name", "matches", "backendRefs", "filters", "timeouts"],
            r,
        ) else {
            continue;
        };
        let mut refs = Vec::new();
        for (j, b) in o
            .list_opt("backendRefs", 16, r)
            .unwrap_or_default()
            .iter()
            .enumerate()
        {
            let bp = at(&o.path("backendRefs"), j);
            let Some(bo) = Obj::new(
                b,
                &bp,
                &[
                    "group",
                    "kind",
                    "name",
                    "namespace",
                    "port",
                    "weight",
                    "filters",
                ],
                r,
            ) else {
                continue;
            };
            let group = bo.str_opt("group", r).unwrap_or("");
            let kind = bo.str_opt("kind", r).unwrap_or("Service");
            if group != KGATEWAY_GROUP {
                continue;
            }
            kgateway = true;
            let Some(name) = bo.str_req("name", r) else {
                continue;
            };
            refs.push(RouteRef {
                kind: kind.to_string(),
                name: name.to_string(),
                namespace: bo.str_opt("namespace", r).unwrap_or(&ns).to_string(),
                weight: bo.int_opt("weight", 0, 1_000_000, r).unwrap_or(1) as u32,
                path: bp,
            });
        }
        let mut direct = None;
        for (j, f) in o
            .list_opt("filters", 16, r)
            .unwrap_or_default()
            .iter()
            .enumerate()
        {
            let fp = at(&o.path("filters"), j);
            let ext = f.get("extensionRef");
            let is_dr =
                ext.and_then(|e| e.get("kind")).and_then(Value::as_str) == Some("DirectResponse");
            match (
                is_dr,
                ext.and_then(|e| e.get("name")).and_then(Value::as_str),
            ) {
                (true, Some(n)) => {
                    kgateway = true;
                    direct = Some((n.to_string(), format!("{fp}.extensionRef.name")));
                }
                _ => r.warn(
                    fp,
                    "not mapped: only kgateway DirectResponse filters are compiled",
                ),
            }
        }
        let mut models = Vec::new();
        let mut prefix = "/".to_string();
        for (j, m) in o
            .list_opt("matches", 8, r)
            .unwrap_or_default()
            .iter()
            .enumerate()
        {
            let mp = at(&o.path("matches"), j);
            let Some(mo) = Obj::new(m, &mp, &["path", "headers", "method", "queryParams"], r)
            else {
                continue;
            };
            for (k, h) in mo
                .list_opt("headers", 16, r)
                .unwrap_or_default()
                .iter()
                .enumerate()
            {
                let hp = at(&mo.path("headers"), k);
                let Some(ho) = Obj::new(h, &hp, &["type", "name", "value"], r) else {
                    continue;
                };
                let t = enum_value(&ho, "type", &["Exact", "RegularExpression"], false, r);
                let (Some(n), Some(v)) = (ho.str_req("name", r), ho.str_req("value", r)) else {
                    continue;
                };
                if n.eq_ignore_ascii_case(MODEL_HEADER) && t.as_deref() != Some("RegularExpression")
                {
                    if !models.iter().any(|(m, _): &(String, String)| m == v) {
                        models.push((v.to_string(), ho.path("value")));
                    }
                } else {
                    r.warn(hp, format!("not mapped: only Exact `{MODEL_HEADER}` matches route kgateway AI backends"));
                }
            }
            if let Some(pv) = mo.get("path") {
                let pp = mo.path("path");
                if let Some(po) = Obj::new(pv, &pp, &["type", "value"], r) {
                    let t = enum_value(
                        &po,
                        "type",
                        &["Exact", "PathPrefix", "RegularExpression"],
                        false,
                        r,
                    );
                    match (t.as_deref(), po.str_opt("value", r)) {
                        (Some("PathPrefix") | None, Some(v)) if v.starts_with('/') => prefix = v.to_string(),
                        (_, Some(_)) => r.warn(pp, "not mapped: only PathPrefix paths are compiled (used by DirectResponse rules)"),
                        _ => {}
                    }
                }
            }
            for k in ["method", "queryParams"] {
                if mo.has(k) {
                    r.warn(mo.path(k), "not mapped: the compiled route ignores it");
                }
            }
        }
        if o.has("timeouts") {
            r.warn(
                o.path("timeouts"),
                "not mapped for kgateway routes: use a TrafficPolicy timeout",
            );
        }
        rules.push(HttpRule {
            path: p,
            models,
            prefix,
            refs,
            direct,
        });
    }
    kg.http_routes.push(HttpRoute {
        meta,
        rules,
        kgateway,
    });
}

// ---------------------------------------------------------------- planning

type Key = (String, String);

fn key(m: &Meta) -> Key {
    (m.id.namespace.clone(), m.id.name.clone())
}

fn index<T>(
    items: &[T],
    meta: impl Fn(&T) -> &Meta,
    diags: &mut Vec<Diagnostic>,
) -> HashMap<Key, usize> {
    let mut map = HashMap::new();
    for (i, item) in items.iter().enumerate() {
        let m = meta(item);
        if let Some(&first) = map.get(&key(m)) {
            let f: &Source = &meta(&items[first]).source;
            crate::compile::reporter(m, diags).error(
                "metadata.name",
                format!("duplicate {} (first defined at {f})", m.id),
            );
        } else {
            map.insert(key(m), i);
        }
    }
    map
}

/// A provider's credential as the filter backend carries it: `auth`, and whether
/// the client's own credential goes through (Passthrough).
type Creds = (Option<Auth>, bool);

/// Resolves a provider's `authToken`; a Secret that is missing or lacks the
/// token key is an error on the resource.
fn provider_creds(
    p: &Provider,
    meta: &Meta,
    secrets: &Secrets<'_>,
    diags: &mut Vec<Diagnostic>,
) -> Creds {
    let auth = |v: SecretValue| {
        let key = SecretSource::Value(v);
        if p.schema.starts_with("GCP") {
            Auth::Bearer(key)
        } else {
            Auth::ApiKey { key, header: None }
        }
    };
    match &p.token {
        None => (None, false),
        Some(AuthToken::Passthrough) => (None, true),
        Some(AuthToken::Inline(v)) => (Some(auth(v.clone())), false),
        Some(AuthToken::Secret(s)) => match secrets.value(&s.namespace, &s.name, TOKEN_KEY) {
            Ok(v) => (
                Some(auth(SecretValue::new(strip_bearer(v.expose())))),
                false,
            ),
            Err(e) => {
                crate::compile::reporter(meta, diags).error(s.path.as_str(), e);
                (None, false)
            }
        },
    }
}

/// How the filter signs a Lambda backend's invocations: keys from the Secret, or
/// a role assumed with base keys from the file the Backend's
/// [`CREDENTIALS_FILE_ANNOTATION`] names (the ambient credentials kgateway would
/// use are not available to the filter: without it, a not-enforced warning).
fn lambda_creds(
    l: &Lambda,
    meta: &Meta,
    secrets: &Secrets<'_>,
    diags: &mut Vec<Diagnostic>,
) -> Option<Auth> {
    let mut r = crate::compile::reporter(meta, diags);
    let file = meta
        .annotations
        .get(CREDENTIALS_FILE_ANNOTATION)
        .map(|path| AwsKeys::File {
            path: path.clone(),
            profile: None,
        });
    let keys = match &l.auth {
        LambdaAuth::Secret(s) => {
            let value = |key: &str| secrets.value(&s.namespace, &s.name, key);
            match (value("accessKey"), value("secretKey")) {
                (Ok(id), Ok(secret)) => AwsKeys::Static {
                    access_key_id: id,
                    secret_access_key: secret,
                    session_token: value("sessionToken").ok(),
                },
                (Err(e), _) | (_, Err(e)) => {
                    r.error(s.path.as_str(), e);
                    return None;
                }
            }
        }
        LambdaAuth::AssumeRole { role_arn, path } => {
            let Some(base) = file else {
                r.warn(path.as_str(), format!("not enforced: the role is assumed with the AWS default credential chain, which is not available to the filter, so invocations of {} are not signed; set the {CREDENTIALS_FILE_ANNOTATION} annotation to a credentials file with the base keys, or auth type Secret", l.function));
                return None;
            };
            let sts = format!("https://sts.{}.amazonaws.com/", l.region);
            match Callout::parse(&sts) {
                Ok(sts) => AwsKeys::AssumeRole {
                    base: Box::new(base),
                    role_arn: role_arn.clone(),
                    sts,
                },
                Err(e) => {
                    r.error(path.as_str(), e);
                    return None;
                }
            }
        }
        LambdaAuth::Default => match file {
            Some(keys) => keys,
            None => {
                r.warn(format!("{}.auth", l.path), format!("not enforced: the AWS default credential chain is not available to the filter, so invocations of {} are not signed; set auth type Secret or the {CREDENTIALS_FILE_ANNOTATION} annotation", l.function));
                return None;
            }
        },
    };
    Some(Auth::AwsSigV4 { region: None, keys })
}

/// A Lambda Backend as a filter backend of schema OpenAI invoking its function.
fn push_lambda(
    plan: &mut Plan,
    name: String,
    l: &Lambda,
    auth: &Option<Auth>,
    origin: &(Source, ResourceId),
) -> usize {
    if let Some(i) = plan.backends.iter().position(|b| b.name == name) {
        return i;
    }
    let h = &l.host;
    let mut b = PlanBackend::new(
        name,
        "OpenAI",
        vec![h.endpoint.clone()],
        h.tls.clone(),
        origin.clone(),
    );
    b.region = Some(l.region.clone());
    b.host = Some(match &h.endpoint.address {
        Address::Fqdn(n) => authority(n, h.endpoint.port, h.tls.is_some()),
        Address::Ip(a) => authority(a, h.endpoint.port, h.tls.is_some()),
    });
    b.auth = auth.clone();
    let mut lambda = json!({"functionName": l.function});
    if let Some(q) = &l.qualifier {
        lambda["qualifier"] = json!(q);
    }
    if let Some(m) = &l.invocation_mode {
        lambda["invocationMode"] = json!(m);
    }
    b.lambda = Some(lambda);
    b.part_origins
        .push(("auth".into(), origin.clone(), format!("{}.auth", l.path)));
    b.part_origins
        .push(("lambda".into(), origin.clone(), l.path.clone()));
    plan.backends.push(b);
    plan.backends.len() - 1
}

fn push_backend(
    plan: &mut Plan,
    name: String,
    p: &Provider,
    hosts: &[Host],
    creds: &Creds,
    origin: &(Source, ResourceId),
) -> usize {
    if let Some(i) = plan.backends.iter().position(|b| b.name == name) {
        return i;
    }
    let tls = hosts.iter().find_map(|h| h.tls.clone());
    let endpoints = hosts.iter().map(|h| h.endpoint.clone()).collect();
    let mut b = PlanBackend::new(name, p.schema, endpoints, tls, origin.clone());
    b.schema_version = p.version.clone();
    b.model_name_override = p.model.clone();
    b.region = p.region.clone();
    b.project = p.project.clone();
    b.host = hosts.iter().find_map(|h| match &h.endpoint.address {
        Address::Fqdn(n) => Some(authority(n, h.endpoint.port, h.tls.is_some())),
        Address::Ip(_) => None,
    });
    (b.auth, b.forward_client_credentials) = creds.clone();
    b.part_origins.push((
        "auth".into(),
        origin.clone(),
        format!("{}.authToken", p.sub_path),
    ));
    b.part_origins
        .push(("schema".into(), origin.clone(), p.path.clone()));
    plan.backends.push(b);
    plan.backends.len() - 1
}

/// Plans kgateway HTTPRoutes into filter routes, backends and Envoy extras.
pub(crate) fn plan(
    kg: &Inputs,
    secrets: &Secrets<'_>,
    plan: &mut Plan,
    model_owner: &mut HashMap<String, String>,
    diags: &mut Vec<Diagnostic>,
) {
    let be_ix = index(&kg.backends, |b| &b.meta, diags);
    let ai_ix = index(&kg.ai_backends, |b| &b.meta, diags);
    let hr_ix = index(&kg.http_routes, |b| &b.meta, diags);
    let dr_ix = index(&kg.direct, |b| &b.meta, diags);
    let ext_ix = index(&kg.extensions, |b| &b.meta, diags);
    let _ = index(&kg.traffic, |b| &b.meta, diags);
    let _ = index(&kg.listener, |b| &b.meta, diags);

    let be_creds: Vec<Creds> = kg
        .backends
        .iter()
        .map(|b| match &b.kind {
            BackendKind::Ai(Some(p)) => provider_creds(p, &b.meta, secrets, diags),
            BackendKind::Aws(Some(l)) => (lambda_creds(l, &b.meta, secrets, diags), false),
            _ => (None, false),
        })
        .collect();
    // The creds of each member of a Backend's priority groups.
    let group_creds: Vec<Vec<Creds>> = kg
        .backends
        .iter()
        .map(|b| match &b.kind {
            BackendKind::AiGroups(members) => members
                .iter()
                .map(|m| match &m.provider {
                    Some(p) => provider_creds(p, &b.meta, secrets, diags),
                    None => (None, false),
                })
                .collect(),
            _ => Vec::new(),
        })
        .collect();
    let ai_creds: Vec<Creds> = kg
        .ai_backends
        .iter()
        .map(|b| match &b.provider {
            Some(p) => provider_creds(p, &b.meta, secrets, diags),
            None => (None, false),
        })
        .collect();
    for b in &kg.ai_backends {
        let mut r = crate::compile::reporter(&b.meta, diags);
        for g in &b.groups {
            match be_ix.get(&(g.namespace.clone(), g.name.clone())) {
                None => r.error(
                    format!("{}.name", g.path),
                    format!(
                        "Backend {KGATEWAY_GROUP}/{}/{} not found among the inputs",
                        g.namespace, g.name
                    ),
                ),
                Some(&i) if matches!(kg.backends[i].kind, BackendKind::Aws(_)) => r.error(
                    format!("{}.name", g.path),
                    "an AWS Lambda backend cannot serve an AI provider group",
                ),
                Some(&i) if matches!(kg.backends[i].kind, BackendKind::AiGroups(_)) => r.error(
                    format!("{}.name", g.path),
                    "a Backend with priorityGroups has its own providers: route to it directly",
                ),
                _ => {}
            }
        }
    }

    let mut route_of: HashMap<Key, Vec<usize>> = HashMap::new();
    let mut used_be = vec![false; kg.backends.len()];
    let mut used_ai = vec![false; kg.ai_backends.len()];
    for hr in kg.http_routes.iter().filter(|h| h.kgateway) {
        let mut r = crate::compile::reporter(&hr.meta, diags);
        let origin = (hr.meta.source.clone(), hr.meta.id.clone());
        for (i, rule) in hr.rules.iter().enumerate() {
            let name = format!("{}/{}/rule/{i}", hr.meta.id.namespace, hr.meta.id.name);
            if let Some((dr, path)) = &rule.direct {
                if !rule.refs.is_empty() {
                    r.error(
                        format!("{}.backendRefs", rule.path),
                        "a rule with a DirectResponse filter takes no backendRefs",
                    );
                    continue;
                }
                let Some(&d) = dr_ix.get(&(hr.meta.id.namespace.clone(), dr.clone())) else {
                    r.error(
                        path.as_str(),
                        format!(
                            "DirectResponse {}/{dr} not found among the inputs",
                            hr.meta.id.namespace
                        ),
                    );
                    continue;
                };
                let d = &kg.direct[d];
                let mut resp = json!({"status": d.status});
                if let Some(b) = &d.body {
                    resp["body"] = json!({"inline_string": b});
                }
                plan.kg.direct_routes.push(json!({"name": name, "match": {"prefix": rule.prefix}, "direct_response": resp}));
                continue;
            }
            let mut backends: Vec<PlanRouteBackend> = Vec::new();
            let mut configured: Vec<(String, String)> = Vec::new();
            for rf in &rule.refs {
                let k = (rf.namespace.clone(), rf.name.clone());
                let mut add = |idx: usize, weight: u32, priority: u32, r: &mut Reporter<'_>| {
                    if backends.iter().any(|b| b.backend == idx) {
                        r.error(
                            format!("{}.name", rf.path),
                            format!(
                                "{} {}/{} is referenced twice in this rule",
                                rf.kind, rf.namespace, rf.name
                            ),
                        );
                        return;
                    }
                    backends.push(PlanRouteBackend {
                        backend: idx,
                        weight: weight.saturating_mul(rf.weight),
                        priority,
                        path: rf.path.clone(),
                    });
                };
                match rf.kind.as_str() {
                    "Backend" => {
                        let Some(&bi) = be_ix.get(&k) else {
                            r.error(
                                format!("{}.name", rf.path),
                                format!(
                                    "Backend {KGATEWAY_GROUP}/{}/{} not found among the inputs",
                                    rf.namespace, rf.name
                                ),
                            );
                            continue;
                        };
                        used_be[bi] = true;
                        let b = &kg.backends[bi];
                        match &b.kind {
                            BackendKind::Ai(Some(p)) => {
                                if let Some(m) = &p.model {
                                    configured.push((m.clone(), p.model_path.clone()));
                                }
                                let bname = format!("{}.{}{}", b.meta.id.name, b.meta.id.namespace, p.model.as_ref().map(|m| format!("@{m}")).unwrap_or_default());
                                let idx = push_backend(plan, bname, p, &p.hosts, &be_creds[bi], &(b.meta.source.clone(), b.meta.id.clone()));
                                add(idx, 1, 0, &mut r);
                            }
                            BackendKind::Ai(None) | BackendKind::Aws(None) => {}
                            BackendKind::Aws(Some(l)) => {
                                // A function serves no named model: the rule's model
                                // matches, else its name.
                                let short = l.function.rsplit(':').next().unwrap_or(&l.function);
                                configured.push((short.to_string(), l.name_path.clone()));
                                let bname = format!("{}.{}", b.meta.id.name, b.meta.id.namespace);
                                let idx = push_lambda(plan, bname, l, &be_creds[bi].0, &(b.meta.source.clone(), b.meta.id.clone()));
                                add(idx, 1, 0, &mut r);
                            }
                            BackendKind::AiGroups(members) => {
                                let origin = (b.meta.source.clone(), b.meta.id.clone());
                                for (j, m) in members.iter().enumerate() {
                                    let Some(p) = &m.provider else { continue };
                                    if let Some(model) = &p.model {
                                        configured.push((model.clone(), p.model_path.clone()));
                                    }
                                    let bname = format!(
                                        "{}.{}/{}{}",
                                        b.meta.id.name,
                                        b.meta.id.namespace,
                                        m.name,
                                        p.model.as_ref().map(|m| format!("@{m}")).unwrap_or_default()
                                    );
                                    let idx = push_backend(plan, bname, p, &p.hosts, &group_creds[bi][j], &origin);
                                    add(idx, 1, m.priority, &mut r);
                                }
                            }
                            _ => r.error(format!("{}.name", rf.path), "not an AI backend: the filter routes by model, so kgateway routes must point at type AI backends or AIBackends"),
                        }
                    }
                    "AIBackend" => {
                        let Some(&ai) = ai_ix.get(&k) else {
                            r.error(
                                format!("{}.name", rf.path),
                                format!(
                                    "AIBackend {}/{} not found among the inputs",
                                    rf.namespace, rf.name
                                ),
                            );
                            continue;
                        };
                        used_ai[ai] = true;
                        let a = &kg.ai_backends[ai];
                        let Some(p) = &a.provider else { continue };
                        if let Some(m) = &p.model {
                            configured.push((m.clone(), p.model_path.clone()));
                        }
                        let suffix = p
                            .model
                            .as_ref()
                            .map(|m| format!("@{m}"))
                            .unwrap_or_default();
                        let origin = (a.meta.source.clone(), a.meta.id.clone());
                        if a.groups.is_empty() {
                            let idx = push_backend(
                                plan,
                                format!("{}.{}{suffix}", a.meta.id.name, a.meta.id.namespace),
                                p,
                                &p.hosts,
                                &ai_creds[ai],
                                &origin,
                            );
                            add(idx, 1, 0, &mut r);
                        }
                        for g in &a.groups {
                            let Some(&bi) = be_ix.get(&(g.namespace.clone(), g.name.clone()))
                            else {
                                continue;
                            };
                            used_be[bi] = true;
                            let b = &kg.backends[bi];
                            let hosts = match &b.kind {
                                BackendKind::Static(h) => h.clone(),
                                BackendKind::Ai(Some(bp)) => bp.hosts.clone(),
                                _ => continue,
                            };
                            let idx = push_backend(
                                plan,
                                format!("{}.{}{suffix}", b.meta.id.name, b.meta.id.namespace),
                                p,
                                &hosts,
                                &ai_creds[ai],
                                &origin,
                            );
                            add(idx, g.weight, g.priority, &mut r);
                        }
                    }
                    other => r.error(
                        format!("{}.kind", rf.path),
                        format!("unsupported kind '{other}', expected Backend or AIBackend"),
                    ),
                }
            }
            if backends.is_empty() {
                continue;
            }
            if rule.prefix != "/" {
                r.warn(
                    format!("{}.matches", rule.path),
                    "path not mapped for AI rules: the filter routes by model",
                );
            }
            let from_matches = !rule.models.is_empty();
            let candidates = if from_matches {
                rule.models.clone()
            } else {
                configured
            };
            let mut models: Vec<(String, String)> = Vec::new();
            for (m, path) in candidates {
                if models.iter().any(|(x, _)| *x == m) {
                    continue;
                }
                if let Some(other) = model_owner.get(&m) {
                    r.error(
                        path.as_str(),
                        format!(
                            "model '{m}' is already routed by {other}: a model maps to one rule"
                        ),
                    );
                    continue;
                }
                model_owner.insert(m.clone(), format!("{} {}", hr.meta.id, rule.path));
                models.push((m, path));
            }
            if models.is_empty() && !from_matches {
                r.error(format!("{}.matches", rule.path), format!("needs an Exact `{MODEL_HEADER}` match, or a backend with a configured model: the filter routes by model"));
                continue;
            }
            for (m, _) in &models {
                plan.models.push(PlanModel {
                    id: m.clone(),
                    owned_by: "kgateway".into(),
                    created: hr.meta.created.unwrap_or(0),
                    route: plan.routes.len(),
                });
            }
            route_of
                .entry(key(&hr.meta))
                .or_default()
                .push(plan.routes.len());
            plan.routes.push(PlanRoute {
                name,
                matches: models
                    .iter()
                    .map(|(m, _)| (m.clone(), Vec::new()))
                    .collect(),
                models,
                backends,
                costs: Vec::new(),
                timeout_ms: crate::compile::DEFAULT_REQUEST_TIMEOUT_MS,
                per_try_timeout_ms: None,
                num_retries: None,
                parents: Vec::new(),
                rule_path: rule.path.clone(),
                origin: origin.clone(),
                extra: RouteExtra {
                    kgateway: true,
                    ..RouteExtra::default()
                },
                rate_limit: None,
                rate_limit_from: None,
                budgets: Vec::new(),
                rl_actions: Vec::new(),
                cache: None,
                metadata: Vec::new(),
                guardrails: Vec::new(),
                least_request: false,
                mirrors: Vec::new(),
            });
        }
    }
    for hr in kg.http_routes.iter().filter(|h| !h.kgateway) {
        crate::compile::reporter(&hr.meta, diags)
            .warn("", "routes to no kgateway backend; ignored");
    }
    if kg.http_routes.iter().any(|h| h.kgateway)
        || !kg.backends.is_empty()
        || !kg.ai_backends.is_empty()
    {
        // Said once: the Envoy Gateway output cannot carry kgateway routes.
        if let Some(hr) = kg.http_routes.iter().find(|h| h.kgateway) {
            crate::compile::reporter(&hr.meta, diags).warn("", "kgateway routes are compiled into the standalone bootstrap only, not into the Envoy Gateway output");
        }
    }
    for (i, b) in kg.backends.iter().enumerate() {
        if !used_be[i] && be_ix.get(&key(&b.meta)) == Some(&i) {
            crate::compile::reporter(&b.meta, diags).warn(
                "",
                "not referenced by any HTTPRoute or AIBackend; not compiled",
            );
        }
    }
    for (i, b) in kg.ai_backends.iter().enumerate() {
        if !used_ai[i] && ai_ix.get(&key(&b.meta)) == Some(&i) {
            crate::compile::reporter(&b.meta, diags)
                .warn("", "not referenced by any HTTPRoute; not compiled");
        }
    }

    // Targets: an HTTPRoute's routes, or with a Gateway every kgateway route.
    let all: Vec<usize> = (0..plan.routes.len())
        .filter(|&i| plan.routes[i].extra.kgateway)
        .collect();
    let targets = |ts: &[Target], r: &mut Reporter<'_>, ns: &str| -> Vec<usize> {
        let mut out = Vec::new();
        for t in ts {
            if t.kind == "Gateway" {
                out.extend(&all);
            } else if let Some(rs) = route_of.get(&(ns.to_string(), t.name.clone())) {
                out.extend(rs);
            } else if hr_ix.contains_key(&(ns.to_string(), t.name.clone())) {
                r.warn(
                    format!("{}.name", t.path),
                    format!(
                        "HTTPRoute {ns}/{} has no compiled AI rule; policy not applied",
                        t.name
                    ),
                );
            } else {
                r.error(
                    format!("{}.name", t.path),
                    format!("HTTPRoute {ns}/{} not found among the inputs", t.name),
                );
            }
        }
        out.sort_unstable();
        out.dedup();
        out
    };
    let mut applied: Vec<Option<String>> = vec![None; plan.routes.len()];
    let mut ext_added: Vec<Key> = Vec::new();
    for tp in &kg.traffic {
        let ns = tp.meta.id.namespace.clone();
        let mut r = crate::compile::reporter(&tp.meta, diags);
        let ids = targets(&tp.targets, &mut r, &ns);
        for &i in &ids {
            if let Some(other) = &applied[i] {
                r.error(
                    "spec.targetRefs",
                    format!(
                        "route {} already has TrafficPolicy {other}: one policy per route",
                        plan.routes[i].name
                    ),
                );
                continue;
            }
            applied[i] = Some(tp.meta.id.to_string());
            let kgflag = plan.routes[i].extra.kgateway;
            plan.routes[i].extra = RouteExtra {
                kgateway: kgflag,
                ..tp.extra.clone()
            };
        }
        if tp.cors {
            plan.kg.cors = true;
            match &plan.kg.vhost_cors {
                None => plan.kg.vhost_cors = tp.extra.cors.clone(),
                Some(c) if Some(c) != tp.extra.cors.as_ref() => r.warn(
                    "spec.cors",
                    "preflight requests (which carry no model) are answered with the first TrafficPolicy's CORS settings",
                ),
                Some(_) => {}
            }
        }
        for e in &tp.ext {
            let Some(&x) = ext_ix.get(&(e.namespace.clone(), e.name.clone())) else {
                r.error(
                    format!("{}.name", e.path),
                    format!(
                        "GatewayExtension {}/{} not found among the inputs",
                        e.namespace, e.name
                    ),
                );
                continue;
            };
            let x = &kg.extensions[x];
            let want = match e.field {
                "extAuth" => "ExtAuth",
                "extProc" => "ExtProc",
                _ => "RateLimit",
            };
            if x.kind.as_deref() != Some(want) {
                r.error(
                    format!("{}.name", e.path),
                    format!("{} is not of type {want}", x.meta.id),
                );
                continue;
            }
            if want == "RateLimit" {
                rate_limit_service(plan, kg, x, &be_ix, tp, e, &ids, &mut r);
                continue;
            }
            // Only a kgateway Static Backend gives the compiler an address.
            let addr = x.backend.as_ref().and_then(|(bns, bn, port, _)| {
                let b = &kg.backends[*be_ix.get(&(bns.clone(), bn.clone()))?];
                match &b.kind {
                    BackendKind::Static(h) => h
                        .first()
                        .map(|h| (h.endpoint.clone(), port.unwrap_or(h.endpoint.port))),
                    _ => None,
                }
            });
            let Some((ep, port)) = addr else {
                r.warn(e.path.as_str(), format!("not mapped: {} does not point at a kgateway Static Backend, so its address is unknown to the compiler", x.meta.id));
                continue;
            };
            if !ids.is_empty() && ids.len() != all.len() {
                r.warn(
                    e.path.as_str(),
                    "applied to the whole listener: the standalone bootstrap has one listener",
                );
            }
            let k = key(&x.meta);
            if ext_added.contains(&k) {
                continue;
            }
            ext_added.push(k);
            let cluster = format!("kgateway/{}/{}", x.meta.id.namespace, x.meta.id.name);
            let (address, dns) = match &ep.address {
                Address::Ip(a) => (a.clone(), false),
                Address::Fqdn(h) => (h.clone(), true),
            };
            plan.kg.clusters.push(json!({
                "name": cluster,
                "type": if dns { "STRICT_DNS" } else { "STATIC" },
                "connect_timeout": "5s",
                "typed_extension_protocol_options": {"envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                    "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                    "explicit_http_config": {"http2_protocol_options": {}}
                }},
                "load_assignment": {"cluster_name": cluster, "endpoints": [{"lb_endpoints": [{"endpoint": {"address": {"socket_address": {"address": address, "port_value": port}}}}]}]},
            }));
            let grpc = json!({"envoy_grpc": {"cluster_name": cluster}});
            plan.kg.filters.push(if want == "ExtAuth" {
                json!({"name": "envoy.filters.http.ext_authz", "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthz",
                    "grpc_service": grpc, "transport_api_version": "V3"}})
            } else {
                json!({"name": "envoy.filters.http.ext_proc", "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.filters.http.ext_proc.v3.ExternalProcessor",
                    "grpc_service": grpc}})
            });
        }
    }
    let mut basic_auth = None;
    for lp in &kg.listener {
        let ns = lp.meta.id.namespace.clone();
        let mut r = crate::compile::reporter(&lp.meta, diags);
        let _ = targets(&lp.targets, &mut r, &ns);
        if let Some(n) = lp.max_request_bytes {
            plan.kg.buffer_limit = Some(plan.kg.buffer_limit.map_or(n, |m| m.min(n)));
        }
        plan.kg
            .request_rules
            .extend(lp.request_rules.iter().cloned());
        if let Some(s) = &lp.basic_auth {
            // An auth setting that cannot be applied is an error: a warning would
            // leave the gateway open.
            match htpasswd_users(secrets, s) {
                Ok(_) if basic_auth.is_some() => r.error(
                    s.path.as_str(),
                    "another HTTPListenerPolicy already sets basicAuth for the gateway (the standalone bootstrap has one listener): keep one",
                ),
                Ok(users) => basic_auth = Some(users),
                Err(e) => r.error(s.path.as_str(), e),
            }
        }
    }
    if let Some(users) = basic_auth {
        // First: a request without valid credentials goes no further.
        plan.kg.filters.insert(
            0,
            json!({"name": "envoy.filters.http.basic_auth", "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.http.basic_auth.v3.BasicAuth",
                "users": {"inline_string": users.expose()},
            }}),
        );
    }
}

/// A TrafficPolicy `rateLimit` whose GatewayExtension `x` is a rate-limit service:
/// fleet mode, with that service (its domain, failure mode and timeout) asked by
/// the standalone bootstrap, and the policy's descriptors (the seed's shape names
/// none: then the route's name, `route=<name>`) asked for each route it targets,
/// besides the routes' own limits. The service's limits for those descriptors are
/// its own configuration.
#[allow(clippy::too_many_arguments)]
fn rate_limit_service(
    plan: &mut Plan,
    kg: &Inputs,
    x: &Extension,
    be_ix: &HashMap<Key, usize>,
    tp: &TrafficPolicy,
    e: &ExtRef,
    ids: &[usize],
    r: &mut Reporter<'_>,
) {
    use crate::quota::{Origin, Quota, Service};
    let here = Origin::field(&tp.meta.source, &tp.meta.id, e.path.clone());
    let q = &mut plan.quota;
    if q.mode == Quota::Embedded && q.mode_from.is_some() {
        r.error(
            e.path.as_str(),
            "a rate-limit service counts in fleet mode, and --quota embedded was given: leave it out or give --quota fleet",
        );
        return;
    }
    q.mode = Quota::Fleet;
    q.mode_from.get_or_insert_with(|| here.clone());
    let Some((bns, bn, port, bpath)) = &x.backend else {
        return; // reported on the extension
    };
    let xo = |path: &str| Origin::field(&x.meta.source, &x.meta.id, path);
    // A kgateway Static Backend gives an address; a Service its cluster DNS name.
    let static_host =
        be_ix
            .get(&(bns.clone(), bn.clone()))
            .and_then(|&i| match &kg.backends[i].kind {
                BackendKind::Static(h) => h.first().cloned(),
                _ => None,
            });
    let service = match (static_host, &x.backend_kind) {
        (Some(h), _) => {
            let host = match &h.endpoint.address {
                Address::Ip(a) | Address::Fqdn(a) => a.clone(),
            };
            Some((host, port.unwrap_or(h.endpoint.port)))
        }
        (None, None) => match port {
            Some(p) => Some((format!("{bn}.{bns}.svc.cluster.local"), *p)),
            None => {
                r.out.push(xo(&format!("{bpath}.port")).error(
                    "is required: the rate-limit service is a Service, reached at its port",
                ));
                None
            }
        },
        (None, Some((g, k))) => {
            r.out.push(xo(bpath).error(format!(
                "a {k} of group '{g}' gives the compiler no address: reference a Service or a kgateway Static Backend"
            )));
            None
        }
    };
    let Some((host, port)) = service else {
        return;
    };
    match &q.service {
        Some(s) if s.origin == Origin::Option("--rate-limit-service") => {
            if (s.host.as_str(), s.port) != (host.as_str(), port) {
                r.out.push(xo(bpath).warning(format!(
                    "the standalone bootstrap asks the rate-limit service at {}:{} (--rate-limit-service) instead of {host}:{port}",
                    s.host, s.port
                )));
            }
        }
        Some(s) if (s.host.as_str(), s.port) != (host.as_str(), port) => r.error(
            e.path.as_str(),
            format!(
                "the standalone bootstrap asks one rate-limit service, and {} names {}:{} already: use one GatewayExtension, or --rate-limit-service",
                s.origin, s.host, s.port
            ),
        ),
        Some(_) => {}
        None => {
            if host.ends_with(".svc.cluster.local") {
                r.out.push(xo(bpath).warning(format!(
                    "the standalone bootstrap reaches the rate-limit service at {host}:{port} (the Service's cluster DNS name): outside the cluster, give --rate-limit-service HOST:PORT"
                )));
            }
            q.service = Some(Service {
                host,
                port,
                origin: here.clone(),
            });
        }
    }
    if let Some(d) = &x.rl_domain {
        match &q.domain_from {
            Some(Origin::Option(_)) => {}
            Some(other) if *d != q.domain => r.error(
                e.path.as_str(),
                format!(
                    "the rate-limit domain is '{}' already ({other}), and {} says '{d}': one domain per bootstrap",
                    q.domain, x.meta.id
                ),
            ),
            _ => {
                q.domain = d.clone();
                q.domain_from = Some(xo("spec.rateLimit.domain"));
            }
        }
    }
    if q.fail_from.is_none() {
        // kgateway's default is to fail open.
        q.fail_closed = x.rl_fail_open == Some(false);
        q.fail_from = Some(xo("spec.rateLimit.failOpen"));
    }
    if let Some(ms) = x.rl_timeout_ms {
        q.timeout_ms = Some(ms);
    }
    let route_key = |name: &str| {
        vec![
            json!({"actions": [{"generic_key": {"descriptor_key": "route", "descriptor_value": name}}]}),
        ]
    };
    for &i in ids {
        let route = &mut plan.routes[i];
        route.rl_actions = match &tp.rl_actions {
            Some(a) if !a.is_empty() => vec![json!({"actions": a})],
            Some(_) => Vec::new(),
            None => route_key(&route.name),
        };
    }
    if tp.rl_actions.is_none() {
        r.warn(
            e.path.as_str(),
            "this rateLimit names no descriptors (kgateway's v2.1 shape): each targeted route asks the rate-limit service with the descriptor route=<route name>, which its own configuration limits (the compiler writes limits for the routes' own rateLimit and budgets only)",
        );
    }
}

/// The Secret keys an htpasswd file is looked up under (Envoy Gateway's, then the
/// usual `htaccess` name); a Secret with one key may name it anything.
const HTPASSWD_KEYS: [&str; 2] = [".htpasswd", ".htaccess"];

/// The users of a basicAuth Secret's htpasswd file, as Envoy's basic_auth filter
/// reads them. That filter checks `{SHA}` hashes only, so any other scheme is
/// refused here rather than failing every login at run time. Errors name lines
/// and users, never hashes.
fn htpasswd_users(secrets: &Secrets<'_>, s: &SecretRef) -> Result<SecretValue, String> {
    let (ns, name) = (&s.namespace, &s.name);
    let key = secrets.key_of(ns, name, &HTPASSWD_KEYS, "htpasswd users")?;
    let key = key.as_str();
    let text = secrets.value(ns, name, key)?;
    let mut users = Vec::new();
    let mut lines = Vec::new();
    for (n, line) in text.expose().lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let at = format!("Secret {ns}/{name} key '{key}' line {}", n + 1);
        let Some((user, hash)) = line.split_once(':') else {
            return Err(format!("{at}: not 'user:hash'"));
        };
        if user.is_empty() {
            return Err(format!("{at}: the user name is empty"));
        }
        let sha1 = hash.strip_prefix("{SHA}").and_then(|h| {
            use base64::Engine as _;
            base64::engine::general_purpose::STANDARD.decode(h).ok()
        });
        if sha1.is_none_or(|d| d.len() != 20) {
            return Err(format!(
                "{at}: user '{user}' has a hash Envoy's basic_auth cannot check: it takes only {{SHA}} (SHA-1) hashes (htpasswd -s)"
            ));
        }
        if users.contains(&user) {
            return Err(format!("{at}: user '{user}' is listed twice"));
        }
        users.push(user);
        lines.push(line);
    }
    if lines.is_empty() {
        return Err(format!("Secret {ns}/{name} key '{key}' lists no users"));
    }
    Ok(SecretValue::new(&lines.join("\n")))
}
