//! Envoy Gateway output: the manifests that run the compiled routes on a
//! Kubernetes Gateway managed by Envoy Gateway.
//!
//! Per AIGatewayRoute (namespace `NS`, name `R`):
//! - `HTTPRoute` `R` (and `R-1`, `R-2`... past Gateway API's 16 rules): one rule
//!   per AIGatewayRoute rule matching the `x-ai-eg-model` header, with
//!   `backendRefs` to Envoy Gateway `Backend`s, the rule's timeouts and a host
//!   rewrite to the backend's name; plus, in the first HTTPRoute, a catch-all rule
//!   answering 404. The catch-all is what makes the filter run at all: Envoy
//!   Gateway enables a policy's filter per route, so a request must match a route
//!   of this HTTPRoute *before* the filter has written the model header; the
//!   filter then clears the route cache and the model rule is picked.
//! - `EnvoyExtensionPolicy` `R-aigw` targeting those HTTPRoutes: the filter as a
//!   `dynamicModule` (or `wasm`), with this route's part of the filter config.
//! - `BackendTrafficPolicy` `R-aigw` when a rule has fallback backends or
//!   retries: retries, and passive health checks so that failed primaries are
//!   ejected and traffic moves to the fallback Backends; and when a rule is
//!   patched (below), an upstream connection idle timeout equal to Envoy's
//!   default, so that Envoy Gateway writes the cluster options the patch extends.
//! - `EnvoyPatchPolicy` per Gateway the route attaches to (in that Gateway's
//!   namespace), when rules with several backends need upstream work: the
//!   `aigw_upstream` instance on those rules' clusters, the backend name on
//!   their endpoints, the backendRef priorities on their localities (see
//!   [`crate::eg_patch`]).
//!
//! Per Gateway the routes attach to, when their configs exchange credentials
//! (Entra ID, Google, AWS STS): `EnvoyPatchPolicy` `<gateway>-aigw-token-clusters`
//! adding the clusters of the token services the filter calls, once per Gateway
//! (in both variants). A route whose configs need them and that names no Gateway
//! is an error: nothing could add them.
//!
//! Per namespace: `HTTPRouteFilter`s `aigw-host-rewrite` and
//! `aigw-route-not-found`. Once: the `EnvoyProxy` `aigw` whose
//! `spec.dynamicModules` allow-lists the module (the wasm variant needs none).
//!
//! An EnvoyExtensionPolicy attaches only the router-level filter, so its config
//! sets `routerOnly: true`: the router-level instance does the upstream work
//! (model override, schema translation, credentials, request mutations) itself,
//! before routing, for every rule with one backend. For a rule with several
//! backends it does none (it only removes the client's credential headers, as
//! the upstream instance would too): fallback across providers needs the work
//! done per attempt, by the upstream instance the EnvoyPatchPolicy adds to the
//! rule's cluster with its own config (not `routerOnly`; this rule's backends).
//! A rule the patch cannot cover (Backends mixing host names and IP addresses,
//! no Gateway to target) is routed and metered but not translated, and each of
//! its backendRefs that needs upstream work gets a warning; so is every such
//! rule in the wasm variant, which has no patch.
//!
//! The filter rewrites `:path` before Envoy picks the route again: the generated
//! rules match any path (`PathPrefix /`) and the model header, so they still
//! match. It leaves the Host to each rule's rewrite (a Gateway API `URLRewrite`
//! to the host it signs for, without a port, which the config's `host` then is
//! too), so a Gateway listener may set a `hostname`. Patched rules rewrite no
//! Host: their upstream instance sets and signs it per attempt.
//!
//! Credentials never go into a custom resource as values. A credential read from
//! a Secret in the Envoy proxy's namespace (`--envoy-proxy-namespace`) is mounted
//! into the envoy container by the generated EnvoyProxy at
//! `/etc/aigw/credentials/<namespace>/<name>/<key>`, and the config names that
//! file (`apiKey.file`, `awsSigV4.credentialsFile`), which the native module reads
//! and re-reads when the kubelet updates it. A Secret in another namespace cannot
//! be mounted into the proxy's pod (warning: no credential on Envoy Gateway). The
//! wasm build reads no files: in its variant the EnvoyProxy sets an environment
//! variable of the envoy container from the Secret key (`AIGW_<SECRET>_<KEY>`),
//! the wasm entry passes it to the VM (`env.hostKeys`) and the config names it
//! (`apiKey.env`, `awsSigV4.credentialsEnv`); the filter reads it at load, so a
//! rotated Secret takes effect when the pods restart.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{json, Map, Value};

use crate::compile::{
    config_document, filter_view, generated_error, host_without_port, token_clusters,
    touched_matches, with_router_only, Options, Plan, PlanBackend, PlanRoute,
};
use crate::credentials::{Auth, SecretOrigin, TokenHost};
use crate::diag::{Diagnostic, ResourceId, Severity, Source};
use crate::eg_patch::{self, Endpoints, RulePatch};
use crate::resources::{is_dns_subdomain, Address, EG_GROUP, GWAPI_GROUP, MODEL_HEADER};
use crate::units::gwapi_duration;

/// Gateway API limits (HTTPRoute v1 CRD).
pub const MAX_RULES: usize = 16;
pub const MAX_MATCHES_PER_RULE: usize = 64;
pub const MAX_MATCHES_PER_ROUTE: usize = 128;
pub const MAX_BACKEND_REFS: usize = 16;
/// Envoy Gateway: `EnvoyProxy` name and per-namespace filter names.
pub const ENVOY_PROXY_NAME: &str = "aigw";
pub const HOST_REWRITE_FILTER: &str = "aigw-host-rewrite";
pub const NOT_FOUND_FILTER: &str = "aigw-route-not-found";
/// Retry triggers: the failures a second provider can fix.
const RETRY_TRIGGERS: &[&str] = &[
    "connect-failure",
    "refused-stream",
    "reset",
    "retriable-status-codes",
];
const RETRY_STATUS_CODES: &[u16] = &[429, 500, 502, 503, 504];
const LABELS: (&str, &str) = ("app.kubernetes.io/managed-by", "aigw");
/// Where the generated EnvoyProxy mounts credential Secrets in the envoy
/// container: `<dir>/<namespace>/<name>/<key>`.
pub const CREDENTIALS_DIR: &str = "/etc/aigw/credentials";

/// The file a Secret key is mounted at in the Envoy proxy.
pub fn credential_path(s: &SecretOrigin) -> String {
    format!("{CREDENTIALS_DIR}/{}/{}/{}", s.namespace, s.name, s.key)
}

/// Secret keys the Envoy proxy mounts: (namespace, name) → keys.
type Mounts = BTreeMap<(String, String), BTreeSet<String>>;
/// The wasm variant's credential variables: name → (Secret, key), Secrets of the
/// Envoy proxy's namespace, set on the envoy container from the Secret.
type EnvVars = BTreeMap<String, (String, String)>;

pub(crate) struct EgManifests {
    pub dynamic: Vec<Value>,
    pub wasm: Option<Vec<Value>>,
}

const HEADER: &str = "# Generated by aigw from Kubernetes resources; do not edit.\n\
# Envoy Gateway manifests. The EnvoyProxy must be referenced by the GatewayClass\n\
# (spec.parametersRef) or the Gateway (spec.infrastructure.parametersRef), and\n\
# its module path must exist in the Envoy proxy image; the Envoy proxies must run\n\
# in its namespace to mount the credential Secrets it lists. EnvoyPatchPolicies\n\
# (the upstream filter of rules with several backends, the clusters of the token\n\
# services the filter exchanges credentials at) take effect only when the\n\
# EnvoyGateway configuration sets extensionApis.enableEnvoyPatchPolicy: true.\n";
const WASM_HEADER: &str = "# Generated by aigw from Kubernetes resources; do not edit.\n\
# Envoy Gateway manifests loading the filter as proxy-wasm (rootID aigw).\n\
# Credentials from Secrets come in as environment variables of the envoy container\n\
# (set by the EnvoyProxy, when there is one; read when the filter loads: restart\n\
# the proxies after a Secret rotation). EnvoyPatchPolicies adding the clusters of\n\
# the token services the filter exchanges credentials at take effect only when the\n\
# EnvoyGateway configuration sets extensionApis.enableEnvoyPatchPolicy: true.\n";

fn render(docs: &[Value], header: &str) -> Result<String, String> {
    let mut out = header.to_string();
    for d in docs {
        let y = serde_norway::to_string(d)
            .map_err(|e| format!("cannot serialise the Envoy Gateway manifests: {e}"))?;
        out.push_str("---\n");
        out.push_str(&y);
    }
    Ok(out)
}

impl EgManifests {
    pub fn dynamic_yaml(&self) -> Result<String, String> {
        render(&self.dynamic, HEADER)
    }

    pub fn wasm_yaml(&self) -> Result<Option<String>, String> {
        self.wasm
            .as_ref()
            .map(|w| render(w, WASM_HEADER))
            .transpose()
    }
}

fn option_error(message: String) -> Diagnostic {
    Diagnostic {
        severity: Severity::Error,
        source: Source {
            file: "<options>".into(),
            document: 0,
        },
        resource: None,
        path: String::new(),
        message,
    }
}

fn check_options(o: &Options, diags: &mut Vec<Diagnostic>) -> Option<(String, String)> {
    if !o.module_path.starts_with('/') || o.module_path.len() > 4096 {
        diags.push(option_error(format!(
            "module path '{}' must be an absolute path (Envoy Gateway loads Local modules by absolute path)",
            o.module_path
        )));
    }
    if !is_eg_name(&o.module_name) {
        diags.push(option_error(format!(
            "module name '{}' is not a valid Envoy Gateway dynamic module name",
            o.module_name
        )));
    }
    if !is_dns_label(&o.envoy_proxy_namespace) {
        diags.push(option_error(format!(
            "EnvoyProxy namespace '{}' is not a valid namespace",
            o.envoy_proxy_namespace
        )));
    }
    match (&o.wasm_url, &o.wasm_sha256) {
        (None, None) => None,
        (Some(url), Some(sha)) => {
            let mut ok = true;
            let host = url
                .strip_prefix("https://")
                .or_else(|| url.strip_prefix("http://"));
            if host.is_none_or(|h| h.is_empty() || h.starts_with('/')) {
                diags.push(option_error(format!(
                    "wasm URL '{url}' must be an http:// or https:// URL"
                )));
                ok = false;
            }
            if sha.len() != 64 || !sha.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
                diags.push(option_error(
                    "wasm SHA-256 must be 64 lowercase hexadecimal digits".into(),
                ));
                ok = false;
            }
            ok.then(|| (url.clone(), sha.clone()))
        }
        _ => {
            diags.push(option_error(
                "the wasm variant needs both the module URL and its SHA-256".into(),
            ));
            None
        }
    }
}

/// Envoy Gateway's dynamic module name pattern `^[a-z0-9]([a-z0-9.-]*[a-z0-9])?$`.
pub fn is_eg_name(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 253
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'.' || *c == b'-')
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
}

/// RFC 1123 label (namespaces).
pub fn is_dns_label(s: &str) -> bool {
    s.len() <= 63 && !s.contains('.') && is_dns_subdomain(s)
}

fn warn(diags: &mut Vec<Diagnostic>, r: &PlanRoute, path: String, message: String) {
    diags.push(Diagnostic {
        severity: Severity::Warning,
        source: r.origin.0.clone(),
        resource: Some(r.origin.1.clone()),
        path,
        message,
    });
}

fn error(diags: &mut Vec<Diagnostic>, r: &PlanRoute, path: String, message: String) {
    diags.push(Diagnostic {
        severity: Severity::Error,
        source: r.origin.0.clone(),
        resource: Some(r.origin.1.clone()),
        path,
        message,
    });
}

fn metadata(name: &str, namespace: &str) -> Value {
    json!({"name": name, "namespace": namespace, "labels": {LABELS.0: LABELS.1}})
}

/// The filter attachment of one EnvoyExtensionPolicy.
enum Attach<'a> {
    Dynamic { module: &'a str },
    Wasm { url: &'a str, sha256: &'a str },
}

fn extension_policy(
    name: &str,
    namespace: &str,
    targets: &[String],
    config: &Value,
    how: &Attach<'_>,
    host_env: &[String],
) -> Value {
    let target_refs: Vec<Value> = targets
        .iter()
        .map(|t| json!({"group": GWAPI_GROUP, "kind": "HTTPRoute", "name": t}))
        .collect();
    let mut spec = Map::new();
    spec.insert("targetRefs".into(), Value::Array(target_refs));
    match how {
        Attach::Dynamic { module } => {
            spec.insert(
                "dynamicModule".into(),
                json!([{"name": module, "filterName": "aigw", "config": config}]),
            );
        }
        Attach::Wasm { url, sha256 } => {
            let mut entry = json!({
                "name": "aigw",
                "rootID": "aigw",
                "code": {"type": "HTTP", "http": {"url": url, "sha256": sha256}},
                "config": config,
            });
            if !host_env.is_empty() {
                // The VM sees only the variables listed here.
                entry["env"] = json!({"hostKeys": host_env});
            }
            spec.insert("wasm".into(), json!([entry]));
        }
    }
    json!({
        "apiVersion": format!("{EG_GROUP}/v1alpha1"),
        "kind": "EnvoyExtensionPolicy",
        "metadata": metadata(name, namespace),
        "spec": Value::Object(spec),
    })
}

/// One AIGatewayRoute's generated documents, before the filter attachment.
struct RouteDocs {
    namespace: String,
    name: String,
    http_routes: Vec<String>,
    /// The filter config of the dynamic module (credentials as mounted files)
    /// and of the wasm variant (credentials from environment variables), with
    /// the variables it reads.
    config: Value,
    config_wasm: Value,
    env_wasm: Vec<String>,
    /// Backends (generated ones), HTTPRoutes.
    before: Vec<Value>,
    /// BackendTrafficPolicy, if any, of the dynamic module and the wasm variant
    /// (which has no patch, so no idle timeout for one).
    after: Vec<Value>,
    after_wasm: Vec<Value>,
    /// EnvoyPatchPolicies (dynamic module variant only).
    patches: Vec<Value>,
    /// The Gateways (namespace, name) the route attaches to, and the token
    /// services its configs' credential exchanges call, by cluster name, in the
    /// dynamic module variant and in the wasm variant.
    gateways: Vec<(String, String)>,
    tokens: BTreeMap<String, TokenHost>,
    tokens_wasm: BTreeMap<String, TokenHost>,
}

pub(crate) fn manifests(plan: &Plan, o: &Options, diags: &mut Vec<Diagnostic>) -> EgManifests {
    let wasm = check_options(o, diags);

    // Consecutive plan routes of one resource form one group.
    let mut groups: Vec<Vec<usize>> = Vec::new();
    for (i, r) in plan.routes.iter().enumerate() {
        if r.extra.kgateway {
            continue;
        }
        match groups.last_mut() {
            Some(g) if plan.routes[g[0]].origin.1 == r.origin.1 => g.push(i),
            _ => groups.push(vec![i]),
        }
    }

    let mut namespaces: BTreeSet<String> = BTreeSet::new();
    let mut routes = Vec::new();
    let mut mounts = Mounts::new();
    let mut env_vars = EnvVars::new();
    for g in &groups {
        let creds = Creds {
            mounts: &mut mounts,
            env: &mut env_vars,
        };
        if let Some(docs) = route_docs(plan, g, o, wasm.is_some(), creds, diags) {
            namespaces.insert(docs.namespace.clone());
            routes.push(docs);
        }
    }

    rate_limit_notes(plan, &routes, diags);

    // Policy names carry the route's and the Gateway's: two routes must not make
    // the same one (kubectl apply would keep only the last).
    let mut policy_names: BTreeMap<(String, String), String> = BTreeMap::new();
    for r in &routes {
        for p in &r.patches {
            let key = (
                p["metadata"]["namespace"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
                p["metadata"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
            );
            let owner = format!("{}/{}", r.namespace, r.name);
            if let Some(other) = policy_names.insert(key.clone(), owner.clone()) {
                diags.push(generated_error(format!(
                    "the EnvoyPatchPolicies of AIGatewayRoutes {other} and {owner} would both be named {}/{}: rename one of the routes",
                    key.0, key.1
                )));
            }
        }
    }

    // The token clusters, once per Gateway (two policies adding one cluster
    // would give Envoy the cluster twice), for each variant.
    let token_policies = |wasm: bool| -> Vec<Value> {
        let mut by_gateway: BTreeMap<(String, String), BTreeMap<String, TokenHost>> =
            BTreeMap::new();
        for r in &routes {
            let tokens = if wasm { &r.tokens_wasm } else { &r.tokens };
            for g in &r.gateways {
                by_gateway
                    .entry(g.clone())
                    .or_default()
                    .extend(tokens.iter().map(|(k, v)| (k.clone(), v.clone())));
            }
        }
        let labels = json!({LABELS.0: LABELS.1});
        by_gateway
            .iter()
            .filter(|(_, t)| !t.is_empty())
            .map(|((ns, gw), tokens)| {
                let clusters = crate::bootstrap::token_clusters(tokens, eg_patch::TRUST_BUNDLE);
                eg_patch::policy(
                    &eg_patch::token_policy_name(gw),
                    ns,
                    gw,
                    &labels,
                    &eg_patch::add_clusters(&clusters),
                )
            })
            .collect()
    };
    let tokens_dynamic = token_policies(false);
    let tokens_wasm = token_policies(true);
    for p in tokens_dynamic.iter().chain(&tokens_wasm) {
        let (ns, name) = (
            p["metadata"]["namespace"].as_str().unwrap_or_default(),
            p["metadata"]["name"].as_str().unwrap_or_default(),
        );
        if !is_dns_subdomain(name) {
            diags.push(generated_error(format!(
                "the EnvoyPatchPolicy adding the token clusters to Gateway {ns}/{} would be named '{name}', which is not a valid Kubernetes name (at most 253 characters): shorten the Gateway's name",
                p["spec"]["targetRef"]["name"].as_str().unwrap_or_default()
            )));
        }
    }

    let mut shared = Vec::new();
    for ns in &namespaces {
        shared.push(json!({
            "apiVersion": format!("{EG_GROUP}/v1alpha1"),
            "kind": "HTTPRouteFilter",
            "metadata": metadata(HOST_REWRITE_FILTER, ns),
            "spec": {"urlRewrite": {"hostname": {"type": "Backend"}}},
        }));
        shared.push(json!({
            "apiVersion": format!("{EG_GROUP}/v1alpha1"),
            "kind": "HTTPRouteFilter",
            "metadata": metadata(NOT_FOUND_FILTER, ns),
            "spec": {"directResponse": {
                "contentType": "application/json",
                "statusCode": 404,
                "body": {"type": "Inline", "inline": "{\"error\":{\"message\":\"No route matches this request\",\"type\":\"invalid_request_error\",\"code\":\"route_not_found\"}}"},
            }},
        }));
    }

    let build = |how: &Attach<'_>, proxy: Option<Value>| {
        let mut docs: Vec<Value> = proxy.into_iter().collect();
        docs.extend(shared.iter().cloned());
        for r in &routes {
            docs.extend(r.before.iter().cloned());
            let (config, env) = match how {
                Attach::Dynamic { .. } => (&r.config, &[][..]),
                Attach::Wasm { .. } => (&r.config_wasm, &r.env_wasm[..]),
            };
            docs.push(extension_policy(
                &format!("{}-aigw", r.name),
                &r.namespace,
                &r.http_routes,
                config,
                how,
                env,
            ));
            match how {
                Attach::Dynamic { .. } => {
                    docs.extend(r.after.iter().cloned());
                    docs.extend(r.patches.iter().cloned());
                }
                Attach::Wasm { .. } => docs.extend(r.after_wasm.iter().cloned()),
            }
        }
        match how {
            Attach::Dynamic { .. } => docs.extend(tokens_dynamic.iter().cloned()),
            Attach::Wasm { .. } => docs.extend(tokens_wasm.iter().cloned()),
        }
        docs
    };

    let mut proxy_spec = Map::new();
    if let Some(deployment) = credential_mounts(&mounts) {
        proxy_spec.insert(
            "provider".into(),
            json!({"type": "Kubernetes", "kubernetes": {"envoyDeployment": deployment}}),
        );
    }
    proxy_spec.insert(
        "dynamicModules".into(),
        json!([{
            "name": o.module_name,
            "source": {"type": "Local", "local": {"path": o.module_path}},
        }]),
    );
    let proxy = json!({
        "apiVersion": format!("{EG_GROUP}/v1alpha1"),
        "kind": "EnvoyProxy",
        "metadata": metadata(ENVOY_PROXY_NAME, &o.envoy_proxy_namespace),
        "spec": Value::Object(proxy_spec),
    });
    let dynamic = build(
        &Attach::Dynamic {
            module: &o.module_name,
        },
        Some(proxy),
    );
    // The wasm variant's EnvoyProxy only sets the credential variables.
    let wasm_proxy = (!env_vars.is_empty()).then(|| {
        let env: Vec<Value> = env_vars
            .iter()
            .map(|(var, (secret, key))| {
                json!({"name": var, "valueFrom": {"secretKeyRef": {"name": secret, "key": key}}})
            })
            .collect();
        json!({
            "apiVersion": format!("{EG_GROUP}/v1alpha1"),
            "kind": "EnvoyProxy",
            "metadata": metadata(ENVOY_PROXY_NAME, &o.envoy_proxy_namespace),
            "spec": {"provider": {"type": "Kubernetes", "kubernetes": {
                "envoyDeployment": {"container": {"env": env}}}}},
        })
    });
    let wasm = wasm.map(|(url, sha256)| {
        build(
            &Attach::Wasm {
                url: &url,
                sha256: &sha256,
            },
            wasm_proxy,
        )
    });
    EgManifests { dynamic, wasm }
}

/// The envoy Deployment's credential volumes: one read-only Secret volume per
/// Secret, holding only the keys the filter reads, mounted as a directory (not
/// `subPath`, so that the kubelet's updates of a rotated Secret reach the files
/// the filter watches).
fn credential_mounts(mounts: &Mounts) -> Option<Value> {
    if mounts.is_empty() {
        return None;
    }
    let mut used: BTreeSet<String> = BTreeSet::new();
    let mut volumes = Vec::new();
    let mut volume_mounts = Vec::new();
    for ((ns, name), keys) in mounts {
        let base = volume_name(name);
        let mut vname = base.clone();
        let mut n = 1;
        while !used.insert(vname.clone()) {
            n += 1;
            let suffix = format!("-{n}");
            let mut b = base.clone();
            b.truncate(63 - suffix.len());
            vname = format!("{}{suffix}", b.trim_end_matches('-'));
        }
        let items: Vec<Value> = keys.iter().map(|k| json!({"key": k, "path": k})).collect();
        volumes.push(json!({
            "name": vname,
            "secret": {"secretName": name, "items": items},
        }));
        volume_mounts.push(json!({
            "name": vname,
            "mountPath": format!("{CREDENTIALS_DIR}/{ns}/{name}"),
            "readOnly": true,
        }));
    }
    Some(json!({
        "pod": {"volumes": volumes},
        "container": {"volumeMounts": volume_mounts},
    }))
}

/// A pod volume name (an RFC 1123 label) for the Secret `name`.
fn volume_name(name: &str) -> String {
    let mut s = format!("aigw-{}", name.replace('.', "-"));
    s.truncate(63);
    s.trim_end_matches('-').to_string()
}

/// Splits a route's rules into HTTPRoutes within Gateway API's limits; the
/// first HTTPRoute keeps room for the catch-all rule.
fn chunks(plan: &Plan, group: &[usize]) -> Vec<Vec<usize>> {
    let mut out: Vec<Vec<usize>> = vec![Vec::new()];
    let mut matches = 1; // the catch-all
    let mut rules = 1;
    for &i in group {
        let m = plan.routes[i].matches.len().max(1);
        if rules + 1 > MAX_RULES || matches + m > MAX_MATCHES_PER_ROUTE {
            out.push(Vec::new());
            matches = 0;
            rules = 0;
        }
        if let Some(last) = out.last_mut() {
            last.push(i);
        }
        matches += m;
        rules += 1;
    }
    out
}

/// How a rule's upstream work is done on Envoy Gateway.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum RuleMode {
    /// One backend: the router-level instance (`routerOnly`).
    Single,
    /// Several backends: the upstream instance an EnvoyPatchPolicy adds to the
    /// rule's cluster, whose endpoints Envoy Gateway delivers this way.
    Patched(Endpoints),
    /// Several backends and no upstream instance; why, when some backend needs
    /// upstream work.
    Unpatched(Option<&'static str>),
}

const NO_GATEWAY: &str =
    "no EnvoyPatchPolicy can add it: such a policy targets a Gateway, and the route names none";
const MIXED_ADDRESSES: &str = "no EnvoyPatchPolicy adds it: the rule's Backends mix host names and IP addresses, so Envoy Gateway makes a cluster per backendRef";

/// What the upstream instance does for backend `b` that nothing else does.
fn upstream_work(b: &PlanBackend) -> Vec<String> {
    let mut work = Vec::new();
    if b.model_name_override.is_some() {
        work.push("the model override".to_string());
    }
    if b.schema_name != "OpenAI" {
        work.push(format!("translation to schema {}", b.schema_name));
    }
    if b.auth.is_some() || b.credential_override.is_some() {
        work.push("upstream credentials".to_string());
    }
    if !b.mutations.is_empty() {
        work.push("header and body mutations".to_string());
    }
    work
}

fn rule_mode(plan: &Plan, r: &PlanRoute, attached: bool) -> RuleMode {
    if r.backends.len() == 1 {
        return RuleMode::Single;
    }
    let needed = r
        .backends
        .iter()
        .any(|rb| !upstream_work(&plan.backends[rb.backend]).is_empty());
    if !needed {
        return RuleMode::Unpatched(None);
    }
    if !attached {
        return RuleMode::Unpatched(Some(NO_GATEWAY));
    }
    match eg_patch::endpoints_of(r, &plan.backends) {
        Some(e) => RuleMode::Patched(e),
        None => RuleMode::Unpatched(Some(MIXED_ADDRESSES)),
    }
}

/// The Gateways (namespace, name) the route's resource attaches to.
fn gateways(r: &PlanRoute, namespace: &str) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    for p in &r.parents {
        let g = (
            p.namespace.clone().unwrap_or_else(|| namespace.to_string()),
            p.name.clone(),
        );
        if !out.contains(&g) {
            out.push(g);
        }
    }
    out
}

/// The upstream instance's config for rule `r`: the backends that take traffic,
/// with their credentials as on Envoy Gateway, and the router-level config's
/// limits.
fn upstream_config(
    plan: &Plan,
    r: &PlanRoute,
    auth: &BTreeMap<usize, Value>,
    router: &Value,
) -> Value {
    let mut seen = BTreeSet::new();
    let backends: Vec<Value> = r
        .backends
        .iter()
        .filter(|rb| rb.weight > 0 && seen.insert(rb.backend))
        .map(|rb| plan.backends[rb.backend].config_json(auth.get(&rb.backend).cloned()))
        .collect();
    let mut doc = json!({"version": aigw_filter::config::CONFIG_VERSION, "backends": backends});
    if let Some(l) = router.get("limits") {
        doc["limits"] = l.clone();
    }
    doc
}

fn route_docs(
    plan: &Plan,
    group: &[usize],
    o: &Options,
    wasm: bool,
    creds: Creds<'_>,
    diags: &mut Vec<Diagnostic>,
) -> Option<RouteDocs> {
    let first = &plan.routes[group[0]];
    let namespace = first.origin.1.namespace.clone();
    let name = first.origin.1.name.clone();
    let errors_before = diags.iter().filter(|d| d.is_error()).count();
    let gateways = gateways(first, &namespace);
    let modes: BTreeMap<usize, RuleMode> = group
        .iter()
        .map(|&i| (i, rule_mode(plan, &plan.routes[i], !gateways.is_empty())))
        .collect();

    // The router-level instance does the upstream work for rules with one
    // backend; the patched upstream instance for the backends of patched rules.
    // Both get their credentials as mounted files.
    let single: BTreeSet<usize> = group
        .iter()
        .filter_map(|&i| match plan.routes[i].backends.as_slice() {
            [only] => Some(only.backend),
            _ => None,
        })
        .collect();
    let patched: BTreeSet<usize> = group
        .iter()
        .filter(|i| matches!(modes[i], RuleMode::Patched(_)))
        .flat_map(|&i| plan.routes[i].backends.iter())
        .filter(|rb| rb.weight > 0)
        .map(|rb| rb.backend)
        .collect();
    let mut auth: BTreeMap<usize, Value> = BTreeMap::new();
    let mut auth_wasm: BTreeMap<usize, Value> = BTreeMap::new();
    let Creds { mounts, env } = creds;
    for &bi in single.union(&patched) {
        // The wasm variant has no patch: its own warning says what patched
        // rules lose there, credentials included.
        let wasm_here = wasm && single.contains(&bi);
        let (a, w) = eg_auth(&plan.backends[bi], o, wasm_here, mounts, env, diags);
        auth.extend(a.map(|a| (bi, a)));
        auth_wasm.extend(w.map(|w| (bi, w)));
    }
    // The token services those credentials are exchanged at: clusters the
    // Gateway's Envoy must have, which an EnvoyPatchPolicy on each Gateway adds.
    let mut tokens = BTreeMap::new();
    let mut tokens_wasm = BTreeMap::new();
    for (a, t) in [(&auth, &mut tokens), (&auth_wasm, &mut tokens_wasm)] {
        match token_clusters(a.keys().map(|&bi| &plan.backends[bi])) {
            Ok(found) => *t = found,
            Err(e) => diags.push(generated_error(e)),
        }
    }
    if !tokens.is_empty() {
        let exchanging: Vec<&str> = auth
            .keys()
            .map(|&bi| &plan.backends[bi])
            .filter(|b| b.auth.as_ref().is_some_and(|a| !a.token_hosts().is_empty()))
            .map(|b| b.name.as_str())
            .collect();
        let clusters: Vec<&str> = tokens.keys().map(String::as_str).collect();
        if gateways.is_empty() {
            // The standalone bootstrap has the clusters; only the Envoy Gateway
            // output lacks them, so this does not block the others.
            warn(
                diags,
                first,
                "spec.parentRefs".into(),
                format!(
                    "the Envoy Gateway manifests lack the token clusters {1} the credential exchanges of {0} call (the compiler adds them with an EnvoyPatchPolicy on the route's Gateway, and the route names no Gateway), so on Envoy Gateway those backends' requests are answered 503: name the Gateway it attaches to in spec.parentRefs (v1alpha1: spec.targetRefs); the standalone bootstrap has them",
                    exchanging.join(", "),
                    clusters.join(", ")
                ),
            );
        } else {
            let names: Vec<String> = gateways
                .iter()
                .map(|(ns, gw)| format!("{ns}/{}", eg_patch::token_policy_name(gw)))
                .collect();
            warn(
                diags,
                first,
                String::new(),
                format!(
                    "the credential exchanges of {} call Envoy clusters {}, added by EnvoyPatchPolicy {} (one per Gateway) in the Envoy Gateway manifests: Envoy Gateway applies EnvoyPatchPolicies only when its EnvoyGateway configuration sets extensionApis.enableEnvoyPatchPolicy: true; without it the exchanges fail and those backends' requests are answered 503",
                    exchanging.join(", "),
                    clusters.join(", "),
                    names.join(", ")
                ),
            );
        }
    }
    let keep = |i: usize| group.contains(&i);
    let router_auth = |auth: &BTreeMap<usize, Value>, bi: usize| {
        single
            .contains(&bi)
            .then(|| auth.get(&bi).cloned())
            .flatten()
    };
    let mut config = with_router_only(config_document(plan, &keep, &|bi| router_auth(&auth, bi)).0);
    let mut config_wasm =
        with_router_only(config_document(plan, &keep, &|bi| router_auth(&auth_wasm, bi)).0);
    for c in [&mut config, &mut config_wasm] {
        rewritten_hosts(plan, c);
    }
    let mut env_wasm = Vec::new();
    for (c, is_wasm) in [(&config, false), (&config_wasm, true)] {
        match aigw_filter::Config::from_json(c.to_string().as_bytes()) {
            Ok(loaded) if is_wasm => {
                env_wasm = loaded
                    .secret_env()
                    .into_iter()
                    .map(str::to_string)
                    .collect()
            }
            Ok(_) => {}
            Err(e) => diags.push(generated_error(format!(
                "the filter config for {} is refused by the filter: {e}",
                first.origin.1
            ))),
        }
    }

    let parent_refs: Vec<Value> = first
        .parents
        .iter()
        .map(|p| {
            let mut m = Map::new();
            m.insert("group".into(), json!(GWAPI_GROUP));
            m.insert("kind".into(), json!("Gateway"));
            m.insert("name".into(), json!(p.name));
            if let Some(ns) = &p.namespace {
                m.insert("namespace".into(), json!(ns));
            }
            if let Some(s) = &p.section_name {
                m.insert("sectionName".into(), json!(s));
            }
            if let Some(port) = p.port {
                m.insert("port".into(), json!(port));
            }
            Value::Object(m)
        })
        .collect();

    let hr_name = |k: usize| {
        if k == 0 {
            name.clone()
        } else {
            format!("{name}-{k}")
        }
    };
    let mut generated: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    let mut retries: Vec<(u32, &PlanRoute)> = Vec::new();
    let mut any_fallback = false;
    let mut rules_by_chunk = Vec::new();
    let mut rule_patches = Vec::new();
    for (k, chunk) in chunks(plan, group).into_iter().enumerate() {
        let mut rules = Vec::new();
        for (j, &i) in chunk.iter().enumerate() {
            let r = &plan.routes[i];
            let mode = modes[&i];
            let (rule, fallback) = rule_doc(plan, r, mode, wasm, &namespace, &mut generated, diags);
            any_fallback |= fallback;
            if let Some(n) = r.num_retries.or(fallback.then_some(1)) {
                retries.push((n, r));
            }
            if let RuleMode::Patched(endpoints) = mode {
                let upstream = upstream_config(plan, r, &auth, &config);
                if let Err(e) = aigw_filter::Config::from_json(upstream.to_string().as_bytes()) {
                    diags.push(generated_error(format!(
                        "the upstream filter config for {} ({}) is refused by the filter: {e}",
                        first.origin.1, r.rule_path
                    )));
                }
                rule_patches.push(RulePatch {
                    cluster: eg_patch::cluster_name(&namespace, &hr_name(k), j),
                    endpoints,
                    localities: eg_patch::localities(r, &plan.backends),
                    config: upstream,
                });
            }
            rules.push(rule);
        }
        rules_by_chunk.push(rules);
    }
    if let Some(first_rules) = rules_by_chunk.first_mut() {
        first_rules.push(json!({
            "matches": [{"path": {"type": "PathPrefix", "value": "/"}}],
            "filters": [{"type": "ExtensionRef", "extensionRef": {
                "group": EG_GROUP, "kind": "HTTPRouteFilter", "name": NOT_FOUND_FILTER,
            }}],
        }));
    }

    let mut before: Vec<Value> = generated.into_values().flatten().collect();
    let mut http_routes = Vec::new();
    for (k, rules) in rules_by_chunk.into_iter().enumerate() {
        let hr_name = hr_name(k);
        let mut spec = Map::new();
        if !parent_refs.is_empty() {
            spec.insert("parentRefs".into(), Value::Array(parent_refs.clone()));
        }
        spec.insert("rules".into(), Value::Array(rules));
        before.push(json!({
            "apiVersion": format!("{GWAPI_GROUP}/v1"),
            "kind": "HTTPRoute",
            "metadata": metadata(&hr_name, &namespace),
            "spec": Value::Object(spec),
        }));
        http_routes.push(hr_name);
    }
    if http_routes.len() > 1 {
        warn(
            diags,
            first,
            "spec.rules".into(),
            format!(
                "split into {} HTTPRoutes for Envoy Gateway (Gateway API allows {MAX_RULES} rules and {MAX_MATCHES_PER_ROUTE} matches per HTTPRoute)",
                http_routes.len()
            ),
        );
    }

    let mut after = Vec::new();
    let mut after_wasm = Vec::new();
    let rl_rules = rate_limit_rules(plan, group, diags);
    let retry = retries.iter().max_by_key(|(n, _)| *n).map(|&(n, _)| n);
    if let Some(n) = retry {
        if retries.iter().any(|(m, _)| *m != n) || retries.len() < group.len() {
            warn(
                diags,
                first,
                "spec.rules".into(),
                format!("Envoy Gateway applies one retry policy per HTTPRoute: every rule gets {n} retries"),
            );
        }
    }
    if retry.is_some() || !rule_patches.is_empty() || !rl_rules.is_empty() {
        let targets: Vec<Value> = http_routes
            .iter()
            .map(|t| json!({"group": GWAPI_GROUP, "kind": "HTTPRoute", "name": t}))
            .collect();
        let mut spec = Map::new();
        spec.insert("targetRefs".into(), Value::Array(targets));
        if let Some(n) = retry {
            spec.insert(
                "retry".into(),
                json!({
                    "numRetries": n,
                    "retryOn": {"triggers": RETRY_TRIGGERS, "httpStatusCodes": RETRY_STATUS_CODES},
                }),
            );
        }
        if any_fallback {
            // Envoy's outlier detection defaults, except that every primary may be
            // ejected: that is what sends traffic to the fallback Backends.
            spec.insert(
                "healthCheck".into(),
                json!({"passive": {
                    "consecutive5XxErrors": 5,
                    "interval": "10s",
                    "baseEjectionTime": "30s",
                    "maxEjectionPercent": 100,
                }}),
            );
        }
        if !rl_rules.is_empty() {
            spec.insert(
                "rateLimit".into(),
                json!({"type": "Global", "global": {"rules": rl_rules}}),
            );
        }
        let btp = |spec: Map<String, Value>| {
            json!({
                "apiVersion": format!("{EG_GROUP}/v1alpha1"),
                "kind": "BackendTrafficPolicy",
                "metadata": metadata(&format!("{name}-aigw"), &namespace),
                "spec": Value::Object(spec),
            })
        };
        // The wasm build writes its charges into filter state, which a response
        // cost (from Metadata) cannot read: the wasm variant keeps the rules
        // that count requests only.
        let mut wasm_spec = spec.clone();
        let counted: Vec<Value> = rl_rules
            .iter()
            .filter(|r| r.get("cost").is_none())
            .cloned()
            .collect();
        if counted.len() < rl_rules.len() && wasm {
            warn(
                diags,
                first,
                String::new(),
                "envoy-gateway-wasm.yaml leaves out the token limits and budgets of this route: the wasm build writes the charges (rl_tokens, rl_cost) into filter state, and Envoy Gateway's response cost reads dynamic metadata only (envoy-gateway.yaml has them)".into(),
            );
        }
        if counted.is_empty() {
            wasm_spec.remove("rateLimit");
        } else {
            wasm_spec.insert(
                "rateLimit".into(),
                json!({"type": "Global", "global": {"rules": counted}}),
            );
        }
        if retry.is_some() || wasm_spec.contains_key("rateLimit") {
            after_wasm.push(btp(wasm_spec));
        }
        if !rule_patches.is_empty() {
            // Envoy's default idle timeout of upstream connections: it changes
            // nothing, but makes Envoy Gateway write the cluster's
            // HttpProtocolOptions, where the patch adds the upstream filters.
            spec.insert(
                "timeout".into(),
                json!({"http": {"connectionIdleTimeout": eg_patch::IDLE_TIMEOUT}}),
            );
        }
        after.push(btp(spec));
    }

    let mut patches = Vec::new();
    if !rule_patches.is_empty() {
        let operations = eg_patch::json_patches(&rule_patches, &o.module_path);
        let labels = json!({LABELS.0: LABELS.1});
        let mut names = Vec::new();
        for (gw_ns, gw) in &gateways {
            let policy = eg_patch::policy_name(&namespace, &name, gw_ns, gw);
            if !is_dns_subdomain(&policy) {
                error(
                    diags,
                    first,
                    String::new(),
                    format!("the EnvoyPatchPolicy for Gateway {gw_ns}/{gw} would be named '{policy}', which is not a valid Kubernetes name (at most 253 characters): shorten the route's or the Gateway's name"),
                );
                continue;
            }
            names.push(format!("{gw_ns}/{policy}"));
            patches.push(eg_patch::policy(&policy, gw_ns, gw, &labels, &operations));
        }
        let rules: Vec<&str> = group
            .iter()
            .filter(|i| matches!(modes[i], RuleMode::Patched(_)))
            .map(|&i| plan.routes[i].rule_path.as_str())
            .filter(|p| !p.is_empty())
            .collect();
        let which = if rules.is_empty() {
            "its backends".to_string()
        } else {
            rules.join(", ")
        };
        warn(
            diags,
            first,
            String::new(),
            format!(
                "the upstream filter of {which} (several backends) is added by EnvoyPatchPolicy {} in envoy-gateway.yaml: Envoy Gateway applies EnvoyPatchPolicies only when its EnvoyGateway configuration sets extensionApis.enableEnvoyPatchPolicy: true; without it those rules are routed and metered but not translated or authenticated",
                names.join(", ")
            ),
        );
    }

    let errors_after = diags.iter().filter(|d| d.is_error()).count();
    (errors_after == errors_before).then_some(RouteDocs {
        namespace,
        name,
        http_routes,
        config,
        config_wasm,
        env_wasm,
        before,
        after,
        after_wasm,
        patches,
        gateways,
        tokens,
        tokens_wasm,
    })
}

/// Envoy Gateway allows this many global rate-limit rules per BackendTrafficPolicy.
const MAX_RATE_LIMIT_RULES: usize = 256;

/// Fleet mode: the global rate-limit rules of a route's BackendTrafficPolicy
/// (see [`crate::quota::eg_rules`]), at most Envoy Gateway's 256.
fn rate_limit_rules(plan: &Plan, group: &[usize], diags: &mut Vec<Diagnostic>) -> Vec<Value> {
    if !plan.quota.fleet() {
        return Vec::new();
    }
    let mut rules = Vec::new();
    let mut left_out = Vec::new();
    for &i in group {
        let r = &plan.routes[i];
        let these = crate::quota::eg_rules(plan, r, diags);
        if rules.len() + these.len() > MAX_RATE_LIMIT_RULES {
            left_out.push(r.name.clone());
        } else {
            rules.extend(these);
        }
    }
    let first = &plan.routes[group[0]];
    if !left_out.is_empty() {
        warn(
            diags,
            first,
            "spec.rules".into(),
            format!(
                "Envoy Gateway takes at most {MAX_RATE_LIMIT_RULES} rate-limit rules per BackendTrafficPolicy: the limits of {} are left out of the Envoy Gateway output (the standalone bootstrap has them)",
                left_out.join(", ")
            ),
        );
    }
    rules
}

/// Fleet mode, once: what the Envoy Gateway output's rate-limit rules rely on.
fn rate_limit_notes(plan: &Plan, routes: &[RouteDocs], diags: &mut Vec<Diagnostic>) {
    let with_rules: Vec<String> = routes
        .iter()
        .filter(|r| r.after.iter().any(|d| d["spec"]["rateLimit"].is_object()))
        .map(|r| format!("{}/{}-aigw", r.namespace, r.name))
        .collect();
    if with_rules.is_empty() {
        return;
    }
    let at = plan
        .quota
        .mode_from
        .clone()
        .unwrap_or(crate::quota::Origin::Option("--quota"));
    diags.push(at.warning(format!(
        "on Envoy Gateway the limits and budgets are global rate-limit rules of BackendTrafficPolicies {}, counted by Envoy Gateway's own rate-limit service: its EnvoyGateway configuration must set rateLimit (a Redis backend), else they are not enforced there",
        with_rules.join(", ")
    )));
    let per_identity = plan.routes.iter().any(|r| {
        let l = crate::quota::limits(r);
        (l.per == crate::quota::Scope::Identity
            && (l.requests_per_minute.is_some() || l.tokens_per_minute.is_some()))
            || l.budgets
                .iter()
                .any(|b| b.per == crate::quota::Scope::Identity)
    });
    if let (true, Some(id)) = (per_identity, &plan.identity) {
        if id.hash {
            diags.push(id.origin.warning(format!(
                "on Envoy Gateway the limits per identity count each value of header {} as Envoy Gateway's rate-limit service receives it, unhashed (the filter hashes it, Envoy Gateway's Distinct selector cannot): counting per a header that carries a credential puts the credential in that service's keys",
                id.header
            )));
        }
    }
}

/// Where the credentials of the generated configs come from, collected over routes.
struct Creds<'a> {
    mounts: &'a mut Mounts,
    env: &'a mut EnvVars,
}

/// One HTTPRoute rule; also says whether it has fallback backends.
fn rule_doc(
    plan: &Plan,
    r: &PlanRoute,
    mode: RuleMode,
    wasm: bool,
    namespace: &str,
    generated: &mut BTreeMap<String, Vec<Value>>,
    diags: &mut Vec<Diagnostic>,
) -> (Value, bool) {
    for m in &r.mirrors {
        warn(
            diags,
            r,
            m.path.clone(),
            format!(
                "not mirrored on Envoy Gateway: backend {} gets no copy of the requests there (the standalone bootstrap mirrors them)",
                plan.backends[m.backend].name
            ),
        );
    }
    if r.matches.len() > MAX_MATCHES_PER_RULE {
        error(
            diags,
            r,
            format!("{}.matches", r.rule_path),
            format!(
                "Envoy Gateway's HTTPRoute allows at most {MAX_MATCHES_PER_RULE} matches per rule, found {}",
                r.matches.len()
            ),
        );
    }
    if r.backends.len() > MAX_BACKEND_REFS {
        error(
            diags,
            r,
            format!("{}.backendRefs", r.rule_path),
            format!(
                "Envoy Gateway's HTTPRoute allows at most {MAX_BACKEND_REFS} backendRefs per rule, found {}",
                r.backends.len()
            ),
        );
    }
    let matches: Vec<Value> = r
        .matches
        .iter()
        .map(|(model, extra)| {
            let mut headers = vec![json!({"type": "Exact", "name": MODEL_HEADER, "value": model})];
            headers.extend(
                extra
                    .iter()
                    .map(|(n, v)| json!({"type": "Exact", "name": n, "value": v})),
            );
            json!({"path": {"type": "PathPrefix", "value": "/"}, "headers": headers})
        })
        .collect();

    let levels = r.priority_levels();
    let primary = levels.first().copied().unwrap_or(0);
    let patched = matches!(mode, RuleMode::Patched(_));
    // A patched rule's localities get the backendRefs' priorities from the patch;
    // otherwise a Backend's spec.fallback decides, on two levels.
    if levels.len() > 2 && !patched {
        warn(
            diags,
            r,
            format!("{}.backendRefs", r.rule_path),
            format!(
                "Envoy Gateway has two levels (primary and fallback Backends): priorities {} are all fallback there",
                levels
                    .iter()
                    .skip(1)
                    .map(u32::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        );
    }

    let mut refs = Vec::new();
    let mut fallback = false;
    if mode == RuleMode::Single {
        router_only_checks(plan, r, diags);
    }
    if patched {
        patched_rule_checks(plan, r, wasm, diags);
    }
    for rb in &r.backends {
        let b = &plan.backends[rb.backend];
        let wants_fallback = rb.weight > 0 && rb.priority > primary;
        fallback |= wants_fallback;
        let work = upstream_work(b);
        if let (RuleMode::Unpatched(Some(why)), false) = (mode, work.is_empty()) {
            warn(
                diags,
                r,
                rb.path.clone(),
                format!(
                    "not applied on Envoy Gateway: {} (this rule has several backends, so that work needs the upstream filter on the rule's cluster, and {why}; the standalone bootstrap applies them)",
                    work.join(", ")
                ),
            );
        }
        let (ns, name) = match &b.eg_backend {
            Some((ns, name)) => {
                if b.eg_fallback != wants_fallback && rb.weight > 0 && !patched {
                    let msg = if wants_fallback {
                        format!("priority {}: on Envoy Gateway a fallback is a Backend with spec.fallback: true; Backend {ns}/{name} has not, so it takes traffic as a primary", rb.priority)
                    } else {
                        format!("Backend {ns}/{name} has spec.fallback: true, so on Envoy Gateway it takes traffic only when the primaries fail, although this backendRef is a primary")
                    };
                    warn(diags, r, format!("{}.priority", rb.path), msg);
                }
                (ns.clone(), name.clone())
            }
            None => {
                let name = generated_backend_name(&b.name);
                generated
                    .entry(name.clone())
                    .or_insert_with(|| generated_backend(b, &name, namespace, wants_fallback));
                (namespace.to_string(), name)
            }
        };
        let mut m = Map::new();
        m.insert("group".into(), json!(EG_GROUP));
        m.insert("kind".into(), json!("Backend"));
        m.insert("name".into(), json!(name));
        if ns != namespace {
            m.insert("namespace".into(), json!(ns));
            warn(
                diags,
                r,
                format!("{}.name", rb.path),
                format!("the HTTPRoute in namespace {namespace} references Backend {ns}/{name}: Envoy Gateway needs a ReferenceGrant in namespace {ns}"),
            );
        }
        m.insert("weight".into(), json!(rb.weight));
        refs.push(Value::Object(m));
    }

    let mut timeouts = Map::new();
    timeouts.insert("request".into(), json!(gwapi_duration(r.timeout_ms)));
    if let Some(ms) = r.per_try_timeout_ms {
        timeouts.insert("backendRequest".into(), json!(gwapi_duration(ms)));
    }
    let mut rule = Map::new();
    rule.insert("matches".into(), json!(matches));
    // The Host: where the router-level instance does the upstream work it signs
    // for the backend's host and leaves Host to the route, which rewrites it to
    // that host, whatever the Backend holds (an IP address has no host name for
    // Envoy Gateway's `Backend` rewrite). Where the patched upstream instance
    // does it, it sets and signs Host per attempt: no rewrite, which Envoy could
    // apply after it. Otherwise nothing is signed: the Backend's host name.
    let filter = match mode {
        RuleMode::Single => route_host(&plan.backends[r.backends[0].backend])
            .map(|h| json!({"type": "URLRewrite", "urlRewrite": {"hostname": h}})),
        RuleMode::Patched(_) => None,
        RuleMode::Unpatched(_) => Some(json!({"type": "ExtensionRef", "extensionRef": {
            "group": EG_GROUP, "kind": "HTTPRouteFilter", "name": HOST_REWRITE_FILTER,
        }})),
    };
    if let Some(f) = filter {
        rule.insert("filters".into(), json!([f]));
    }
    rule.insert("backendRefs".into(), json!(refs));
    rule.insert("timeouts".into(), Value::Object(timeouts));
    (Value::Object(rule), fallback)
}

/// The Host a route with backend `b` alone rewrites to: the host the filter
/// signs for, without a port (Gateway API's `URLRewrite` takes a host name
/// only); `None` when there is none or it is not a host name Gateway API takes.
fn route_host(b: &PlanBackend) -> Option<String> {
    let host = crate::compile::signed_host(b)?;
    let name = host_without_port(&host).to_ascii_lowercase();
    let ok = !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        });
    ok.then_some(name)
}

/// A `routerOnly` config's backends sign for the Host their route rewrites to
/// ([`route_host`]): the same host, without the port the route cannot send.
fn rewritten_hosts(plan: &Plan, config: &mut Value) {
    for b in config["backends"].as_array_mut().into_iter().flatten() {
        let name = b["name"].as_str().unwrap_or_default();
        let Some(pb) = plan.backends.iter().find(|pb| pb.name == name) else {
            continue;
        };
        if let Some(h) = route_host(pb) {
            b["host"] = json!(h);
        }
    }
}

/// Where backend `b`'s credential was configured: the resource and field that
/// name the Secret or file (the policy's annotation for a credentials file).
fn auth_origin(b: &PlanBackend) -> (Source, ResourceId, String) {
    let (from, path) = b
        .part_origins
        .iter()
        .find(|(f, _, _)| f == "auth")
        .map(|(_, from, path)| (from.clone(), path.clone()))
        .unwrap_or_else(|| (b.origin.clone(), "spec".into()));
    let path = match (&b.auth_secret, b.auth.as_ref().and_then(Auth::file)) {
        (_, Some(_)) if from.1.kind == "BackendSecurityPolicy" => format!(
            "metadata.annotations.{}",
            crate::credentials::CREDENTIALS_FILE_ANNOTATION
        ),
        (Some(s), None) => s.field.clone(),
        _ => path,
    };
    (from.0, from.1, path)
}

/// Backend `b`'s `auth` on Envoy Gateway, in the dynamic module's config and in
/// the wasm variant's. A key of a Secret in the Envoy proxy's namespace becomes
/// the file the generated EnvoyProxy mounts it at (recorded in `mounts`), and
/// for wasm, which reads no files, the environment variable the wasm variant's
/// EnvoyProxy sets from it (recorded in `env`); a credentials file stays (not in
/// wasm); anything else is left out, with a warning.
fn eg_auth(
    b: &PlanBackend,
    o: &Options,
    wasm: bool,
    mounts: &mut Mounts,
    env: &mut EnvVars,
    diags: &mut Vec<Diagnostic>,
) -> (Option<Value>, Option<Value>) {
    let Some(auth) = b.auth.as_ref() else {
        return (None, None);
    };
    let (source, resource, path) = auth_origin(b);
    let mut warn_here = |message: String| {
        diags.push(Diagnostic {
            severity: Severity::Warning,
            source: source.clone(),
            resource: Some(resource.clone()),
            path: path.clone(),
            message,
        })
    };
    let proxy_ns = &o.envoy_proxy_namespace;
    let on_eg = match (auth.file(), &b.auth_secret) {
        (Some(f), _) => {
            warn_here(format!(
                "on Envoy Gateway the filter reads {f} in the Envoy proxy's container, which the generated EnvoyProxy does not provide: add a volume with it to the EnvoyProxy (an API key, an AWS credentials file or the secret of a credential exchange from a Secret in namespace {proxy_ns} is mounted for you when the policy names the Secret without this annotation)"
            ));
            auth.clone()
        }
        (None, Some(s)) if s.namespace == *proxy_ns => {
            mounts
                .entry((s.namespace.clone(), s.name.clone()))
                .or_default()
                .insert(s.key.clone());
            let in_wasm = wasm.then(|| {
                let var = env_var(env, &s.name, &s.key);
                auth.from_env(&var, s.profile.as_deref()).to_json()
            });
            return (
                Some(
                    auth.from_file(&credential_path(s), s.profile.as_deref())
                        .to_json(),
                ),
                in_wasm,
            );
        }
        (None, Some(s)) => {
            warn_here(format!(
                "backend {} gets no credential on Envoy Gateway: Secret {}/{} cannot be mounted into the Envoy proxy, which runs in namespace {proxy_ns} (--envoy-proxy-namespace), and a pod mounts only Secrets of its own namespace; reference a Secret in {proxy_ns}, or run the proxies in namespace {} and pass --envoy-proxy-namespace {}",
                b.name, s.namespace, s.name, s.namespace, s.namespace
            ));
            return (None, None);
        }
        (None, None) => {
            warn_here(format!(
                "backend {} gets no credential on Envoy Gateway: it does not come from a Secret the Envoy proxy could mount, and a credential value does not belong in a custom resource",
                b.name
            ));
            return (None, None);
        }
    };
    if wasm {
        warn_here(format!(
            "backend {} gets no credential in envoy-gateway-wasm.yaml: the wasm build reads no files (envoy-gateway.yaml names the file, which no Secret gives the compiler to pass as an environment variable)",
            b.name
        ));
    }
    (Some(on_eg.to_json()), None)
}

/// The environment variable for key `key` of Secret `secret` (in the Envoy
/// proxy's namespace), added to `env` if new: `AIGW_<SECRET>_<KEY>`, upper case,
/// other characters as `_`, a number appended if two keys would share a name.
fn env_var(env: &mut EnvVars, secret: &str, key: &str) -> String {
    let origin = (secret.to_string(), key.to_string());
    if let Some((name, _)) = env.iter().find(|(_, o)| **o == origin) {
        return name.clone();
    }
    let base: String = format!("AIGW_{secret}_{key}")
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_uppercase()
            } else {
                '_'
            }
        })
        .collect();
    let mut name = base.clone();
    let mut n = 1;
    while env.contains_key(&name) {
        n += 1;
        name = format!("{base}_{n}");
    }
    env.insert(name.clone(), origin);
    name
}

/// A rule with one backend: the filter edits the request before Envoy picks the
/// route again. Header matches on a header it may change can stop matching.
fn router_only_checks(plan: &Plan, r: &PlanRoute, diags: &mut Vec<Diagnostic>) {
    let rb = &r.backends[0];
    let b = &plan.backends[rb.backend];
    let Some((_, touched)) = filter_view(b) else {
        return;
    };
    for (j, name) in touched_matches(r, &touched) {
        let path = if r.rule_path.is_empty() {
            "matchers".to_string()
        } else {
            format!("{}.matches[{j}].headers", r.rule_path)
        };
        warn(
            diags,
            r,
            path,
            format!("on Envoy Gateway the filter may set or remove request header '{name}' (the upstream work for backend {}) before Envoy picks the route again, so such requests no longer match this rule (they get the catch-all 404)", b.name),
        );
    }
}

/// A rule whose upstream work the patched upstream instance does; the wasm
/// variant has no patch.
fn patched_rule_checks(plan: &Plan, r: &PlanRoute, wasm: bool, diags: &mut Vec<Diagnostic>) {
    if wasm {
        let lost: BTreeSet<String> = r
            .backends
            .iter()
            .flat_map(|rb| upstream_work(&plan.backends[rb.backend]))
            .collect();
        let path = if r.rule_path.is_empty() {
            "backends".to_string()
        } else {
            format!("{}.backendRefs", r.rule_path)
        };
        warn(
            diags,
            r,
            path,
            format!(
                "not applied in envoy-gateway-wasm.yaml: {} (the upstream filter of this rule with several backends comes from an EnvoyPatchPolicy loading the native module, in envoy-gateway.yaml only); there the priorities come from the Backends' spec.fallback",
                lost.into_iter().collect::<Vec<_>>().join(", ")
            ),
        );
    }
}

/// A Kubernetes name for a backend the compiler generates (`route-0@gpt-4o`
/// → `route-0-gpt-4o`...), kept within 63 characters.
fn generated_backend_name(backend: &str) -> String {
    let mut s: String = backend
        .to_ascii_lowercase()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    while s.contains("--") {
        s = s.replace("--", "-");
    }
    let mut s = s.trim_matches('-').to_string();
    s.truncate(63);
    let s = s.trim_end_matches('-').to_string();
    if s.is_empty() {
        "aigw-backend".into()
    } else {
        s
    }
}

/// A Backend the compiler makes (generic routes reach providers directly), and
/// for a verified TLS endpoint with a host name the BackendTLSPolicy that gives
/// Envoy Gateway its SNI and the name to check the certificate against: the
/// provider's host, which is also the `:authority` the filter sends.
fn generated_backend(
    b: &crate::compile::PlanBackend,
    name: &str,
    namespace: &str,
    fallback: bool,
) -> Vec<Value> {
    let endpoints: Vec<Value> = b
        .endpoints
        .iter()
        .map(|e| match &e.address {
            Address::Fqdn(h) => json!({"fqdn": {"hostname": h, "port": e.port}}),
            Address::Ip(a) => json!({"ip": {"address": a, "port": e.port}}),
        })
        .collect();
    let mut spec = Map::new();
    spec.insert("endpoints".into(), Value::Array(endpoints));
    let mut tls_policy = None;
    if let Some(t) = &b.tls {
        let host = t.hostname.clone().or_else(|| {
            b.endpoints.iter().find_map(|e| match &e.address {
                Address::Fqdn(h) => Some(h.clone()),
                Address::Ip(_) => None,
            })
        });
        match (t.insecure, host) {
            (true, _) => {
                spec.insert("tls".into(), json!({"insecureSkipVerify": true}));
            }
            (false, Some(host)) => {
                tls_policy = Some(json!({
                    "apiVersion": format!("{GWAPI_GROUP}/v1"),
                    "kind": "BackendTLSPolicy",
                    "metadata": metadata(name, namespace),
                    "spec": {
                        "targetRefs": [{"group": EG_GROUP, "kind": "Backend", "name": name}],
                        "validation": {"hostname": host, "wellKnownCACertificates": "System"},
                    },
                }));
            }
            (false, None) => {
                spec.insert("tls".into(), json!({"wellKnownCACertificates": "System"}));
            }
        }
    }
    if fallback {
        spec.insert("fallback".into(), json!(true));
    }
    let backend = json!({
        "apiVersion": format!("{EG_GROUP}/v1alpha1"),
        "kind": "Backend",
        "metadata": metadata(name, namespace),
        "spec": Value::Object(spec),
    });
    std::iter::once(backend).chain(tls_policy).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(is_eg_name("aigw"));
        assert!(is_eg_name("a.b-c"));
        assert!(!is_eg_name("-a"));
        assert!(!is_eg_name("A"));
        assert!(is_dns_label("envoy-gateway-system"));
        assert!(!is_dns_label("a.b"));
        assert_eq!(
            generated_backend_name("primary@gpt-4o_x"),
            "primary-gpt-4o-x"
        );
        assert_eq!(generated_backend_name("@@"), "aigw-backend");
        assert_eq!(generated_backend_name(&"a".repeat(80)).len(), 63);
    }

    #[test]
    fn options_are_checked() {
        let mut d = Vec::new();
        let o = Options {
            module_path: "libaigw.so".into(),
            wasm_url: Some("ftp://x".into()),
            wasm_sha256: Some("ABC".into()),
            ..Options::default()
        };
        assert!(check_options(&o, &mut d).is_none());
        assert_eq!(d.len(), 3, "{d:?}");
        let mut d = Vec::new();
        let o = Options {
            wasm_url: Some("https://example.com/aigw.wasm".into()),
            ..Options::default()
        };
        assert!(check_options(&o, &mut d).is_none());
        assert_eq!(d.len(), 1);
        let mut d = Vec::new();
        let o = Options {
            wasm_url: Some("https://example.com/aigw.wasm".into()),
            wasm_sha256: Some("0".repeat(64)),
            ..Options::default()
        };
        assert!(check_options(&o, &mut d).is_some());
        assert!(d.is_empty());
    }
}
