//! The compiler proper: manifests in, filter config and Envoy bootstrap out.
//!
//! [`compile`] is a pure function: it reads no file, no environment and no clock.
//! It validates every resource and every reference first and reports all problems
//! at once; only a clean input is turned into a [`Plan`], the one model both
//! outputs are generated from. The generated filter config is then loaded with
//! the filter's own validator, so whatever the compiler writes, the filter loads.

use std::collections::HashMap;

use serde_json::{json, Map, Value};

use crate::bootstrap;
use crate::credentials::{authority, Secrets, TokenHost};
use crate::diag::{Diagnostic, Reporter, ResourceId, Severity, Source};
use crate::envoy_gateway;
use crate::manifest::Manifest;
use crate::quota::{self, Quota, Scope};
use crate::resources::{
    self, Address, AiServiceBackend, Cost, EgBackend, Endpoint, Inputs, Meta, ParentRef, Tls,
    MODEL_HEADER,
};
use crate::security::{self, Applied};

/// Route timeout when a rule sets none: LLM answers are slow, and Envoy's own
/// default (15s) cuts many of them off. Envoy AI Gateway uses the same default.
pub const DEFAULT_REQUEST_TIMEOUT_MS: u64 = 60_000;

/// Metadata keys the filter writes itself; a cost must not overwrite them.
pub use aigw_filter::config::GATEWAY_METADATA_KEYS as FILTER_METADATA_KEYS;

/// Settings of the generated bootstrap that do not come from the resources.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Options {
    pub listen_address: String,
    pub listen_port: u16,
    /// Admin interface on 127.0.0.1; `None` leaves it out.
    pub admin_port: Option<u16>,
    /// CA bundle used for backends verified against the system's CAs.
    pub ca_bundle: String,
    /// Name the dynamic module is loaded by (`lib<name>.so`).
    pub module_name: String,
    /// Where Envoy writes the JSON access log.
    pub access_log_path: String,
    /// Envoy Gateway output: absolute path of `lib<module_name>.so` inside the
    /// Envoy proxy image, allow-listed in the generated `EnvoyProxy`.
    pub module_path: String,
    /// Envoy Gateway output: namespace of the generated `EnvoyProxy`.
    pub envoy_proxy_namespace: String,
    /// Envoy Gateway wasm variant: where Envoy downloads `aigw.wasm` from, and its
    /// SHA-256 (64 lowercase hex digits). The variant is produced only with both.
    pub wasm_url: Option<String>,
    pub wasm_sha256: Option<String>,
    /// Standalone wasm bootstrap: the `aigw.wasm` file Envoy loads.
    pub wasm_path: String,
    /// Standalone outputs: the folder holding the credential files the native
    /// config names (`file`, `credentialsFile`); `aigw compile -o DIR` makes it
    /// `DIR/secrets`, absolute.
    pub secrets_dir: String,
    /// The config's `identity`: the request header identities come from
    /// (`--identity-header`), hashed unless `identity_hash` is false
    /// (`--identity-no-hash`).
    pub identity_header: Option<String>,
    pub identity_hash: bool,
    /// How limits and budgets are counted (`--quota`); `None`: embedded, unless a
    /// resource names a rate-limit service (a kgateway TrafficPolicy `rateLimit`).
    pub quota: Option<Quota>,
    /// Fleet mode: the rate-limit service the standalone bootstrap asks
    /// (`--rate-limit-service HOST:PORT`).
    pub rate_limit_service: Option<String>,
    /// Fleet mode: the rate-limit domain (`--rate-limit-domain`, default `aigw`).
    pub rate_limit_domain: Option<String>,
    /// Fleet mode: refuse requests (503) when the service cannot be asked
    /// (`--rate-limit-failure closed`); `None`: open, unless a resource says.
    pub rate_limit_fail_closed: Option<bool>,
    /// What the generic routes' `rateLimit` and `budget` count per (`--limits-per`).
    pub limits_per: Scope,
    /// Guardrail policies in the filter's `guardrails[]` shape (`--guardrails FILE`),
    /// which generic routes' `guardrails[].policyRef` name.
    pub guardrails: Vec<Value>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            listen_address: "0.0.0.0".into(),
            listen_port: 1975,
            admin_port: Some(9901),
            ca_bundle: "/etc/ssl/certs/ca-certificates.crt".into(),
            module_name: "aigw".into(),
            access_log_path: "/dev/stdout".into(),
            module_path: "/usr/local/lib/envoy/libaigw.so".into(),
            envoy_proxy_namespace: "envoy-gateway-system".into(),
            wasm_url: None,
            wasm_sha256: None,
            wasm_path: "/usr/local/lib/envoy/aigw.wasm".into(),
            secrets_dir: "/etc/aigw/secrets".into(),
            identity_header: None,
            identity_hash: true,
            quota: None,
            rate_limit_service: None,
            rate_limit_domain: None,
            rate_limit_fail_closed: None,
            limits_per: Scope::Route,
            guardrails: Vec::new(),
        }
    }
}

/// What a successful compilation produces.
#[derive(Debug)]
pub struct Output {
    /// The filter's configuration document.
    pub config: Value,
    /// `config`, pretty-printed, as written to `config.json`.
    pub config_json: String,
    /// A standalone Envoy bootstrap loading the filter with `config`.
    pub bootstrap_yaml: String,
    /// The same loading `aigw.wasm`; `None` when the config names credential
    /// files, which the wasm build cannot read (a warning says so).
    pub bootstrap_wasm_yaml: Option<String>,
    /// Whether credentials were kept apart ([`Output::secrets`]).
    pub holds_credentials: bool,
    /// The credentials of the standalone outputs, apart from them: the native
    /// config and bootstrap name each as a file in [`Options::secrets_dir`], the
    /// wasm bootstrap as an environment variable (listed in its
    /// `host_env_keys`). No value is in `config`, nor in either bootstrap.
    pub secrets: Vec<SecretFile>,
    /// `secrets` as a shell-sourceable environment file (`NAME='value'` lines)
    /// for the wasm bootstrap; `None` when there is none.
    pub secrets_env: Option<String>,
    /// Envoy Gateway manifests (EnvoyProxy allow-list, HTTPRoutes,
    /// HTTPRouteFilters, EnvoyExtensionPolicies with `dynamicModule`,
    /// BackendTrafficPolicies, generated Backends), in apply order.
    pub envoy_gateway: Vec<Value>,
    /// `envoy_gateway` as one multi-document YAML file.
    pub envoy_gateway_yaml: String,
    /// The same with the filter loaded as wasm (`wasm` instead of
    /// `dynamicModule`, no EnvoyProxy allow-list); only when
    /// [`Options::wasm_url`] and [`Options::wasm_sha256`] are set.
    pub envoy_gateway_wasm: Option<Vec<Value>>,
    pub envoy_gateway_wasm_yaml: Option<String>,
    /// Fleet mode: the rate-limit service's configuration for envoyproxy/ratelimit
    /// (`ratelimit-config.yaml`) and for Kuadrant's Limitador
    /// (`limitador-limits.yaml`); `None` in embedded mode.
    pub ratelimit_config_yaml: Option<String>,
    pub limitador_yaml: Option<String>,
    /// Input fields the gateway does not enforce, one object per field
    /// (`resource`, `source`, `field`, `value`); each also has a warning.
    pub not_enforced: Vec<Value>,
    /// Findings that did not stop compilation.
    pub warnings: Vec<Diagnostic>,
}

/// One credential of the standalone outputs, kept apart from them.
#[derive(Clone, Debug)]
pub struct SecretFile {
    /// The file's name in [`Options::secrets_dir`].
    pub name: String,
    /// The environment variable the wasm bootstrap reads it from.
    pub env: String,
    /// Its text, as the filter reads it (an AWS shared credentials file for AWS
    /// keys).
    pub value: crate::manifest::SecretValue,
}

/// The credentials compiled in as values, kept apart: one [`SecretFile`] per
/// distinct credential, and for each backend the index of its own.
fn secrets_apart(plan: &Plan) -> (Vec<SecretFile>, Vec<Option<usize>>) {
    let mut files: Vec<SecretFile> = Vec::new();
    let mut bases: Vec<String> = Vec::new();
    let mut of_backend = Vec::new();
    let used = used_backends(plan);
    for (i, b) in plan.backends.iter().enumerate() {
        let value = used
            .contains(&i)
            .then(|| b.auth.as_ref().and_then(|a| a.secret_text()))
            .flatten();
        let Some(value) = value else {
            of_backend.push(None);
            continue;
        };
        let base = match &b.auth_secret {
            Some(o) => {
                let mut n = format!("{}-{}-{}", o.namespace, o.name, o.key);
                if let Some(p) = o.profile.as_deref().filter(|p| *p != "default") {
                    n = format!("{n}-{p}");
                }
                n
            }
            None => b.name.clone(),
        };
        let base: String = base
            .chars()
            .map(|c| match c {
                'a'..='z' | 'A'..='Z' | '0'..='9' | '.' | '-' | '_' => c,
                _ => '_',
            })
            .collect();
        if let Some(i) = files
            .iter()
            .zip(&bases)
            .position(|(f, b)| f.value == value && *b == base)
        {
            of_backend.push(Some(i));
            continue;
        }
        let env_of = |n: &str| -> String {
            let upper: String = n
                .chars()
                .map(|c| {
                    if c.is_ascii_alphanumeric() {
                        c.to_ascii_uppercase()
                    } else {
                        '_'
                    }
                })
                .collect();
            format!("AIGW_SECRET_{upper}")
        };
        let mut name = base.clone();
        let mut n = 1;
        while files
            .iter()
            .any(|f| f.name == name || f.env == env_of(&name))
        {
            n += 1;
            name = format!("{base}-{n}");
        }
        bases.push(base);
        files.push(SecretFile {
            env: env_of(&name),
            name,
            value,
        });
        of_backend.push(Some(files.len() - 1));
    }
    (files, of_backend)
}

/// `secrets` as a file a shell sources (`set -a; . ./secrets.env; set +a`):
/// `NAME='value'` lines, values single-quoted (AWS credentials files span lines).
fn secrets_env_file(secrets: &[SecretFile]) -> String {
    let mut out = String::from(
        "# Generated by aigw: the credentials of bootstrap-wasm.yaml, read by the filter from\n# Envoy's environment. Keep private. Load with: set -a; . ./secrets.env; set +a\n",
    );
    for s in secrets {
        let quoted = s.value.expose().replace('\'', "'\\''");
        out.push_str(&format!("{}='{quoted}'\n", s.env));
    }
    out
}

/// Compiles with default [`Options`].
pub fn compile(manifests: &[Manifest]) -> Result<Output, Vec<Diagnostic>> {
    compile_with(manifests, &Options::default())
}

/// Compiles `manifests`; on any error returns every diagnostic (errors and
/// warnings), in input order.
pub fn compile_with(manifests: &[Manifest], options: &Options) -> Result<Output, Vec<Diagnostic>> {
    let mut diags = Vec::new();
    let inputs = resources::read_all(manifests, &mut diags);
    let plan = plan(&inputs, options, &mut diags);
    let fail = |mut diags: Vec<Diagnostic>| {
        diags.sort_by(|a, b| a.source.cmp(&b.source));
        dedup(&mut diags);
        diags
    };
    if diags.iter().any(Diagnostic::is_error) {
        return Err(fail(diags));
    }

    // Credentials apart from the config: files for the native build, variables
    // for the wasm build.
    let (secrets, secret_of) = secrets_apart(&plan);
    let apart = |i: usize, wasm: bool| {
        let a = plan.backends[i].auth.as_ref()?;
        Some(match secret_of[i].map(|k| &secrets[k]) {
            Some(f) if wasm => a.from_env(&f.env, None).to_json(),
            Some(f) => a
                .from_file(
                    &format!("{}/{}", options.secrets_dir.trim_end_matches('/'), f.name),
                    None,
                )
                .to_json(),
            None => a.to_json(),
        })
    };
    let (config, origins) = config_document(&plan, &|_| true, &|i| apart(i, false));
    let (config_wasm, _) = config_document(&plan, &|_| true, &|i| apart(i, true));
    let inline = inline_single_backend_rules(&plan);
    let (config, config_wasm) = if inline {
        (with_router_only(config), with_router_only(config_wasm))
    } else {
        (config, config_wasm)
    };
    let config_json = match serde_json::to_string_pretty(&config) {
        Ok(s) => s + "\n",
        Err(e) => {
            diags.push(generated_error(format!(
                "cannot serialise the filter config: {e}"
            )));
            return Err(fail(diags));
        }
    };
    if let Err(e) = aigw_filter::Config::from_json(config_json.as_bytes()) {
        diags.push(map_filter_error(&e, &origins));
        return Err(fail(diags));
    }
    let compact_wasm = config_wasm.to_string();
    let host_env: Vec<String> = match aigw_filter::Config::from_json(compact_wasm.as_bytes()) {
        Ok(c) => c.secret_env().into_iter().map(str::to_string).collect(),
        Err(e) => {
            diags.push(map_filter_error(&e, &origins));
            return Err(fail(diags));
        }
    };

    // The token services the config's credential exchanges call.
    let used = used_backends(&plan);
    let tokens = match token_clusters(used.iter().map(|&i| &plan.backends[i])) {
        Ok(t) => t,
        Err(e) => {
            diags.push(generated_error(e));
            return Err(fail(diags));
        }
    };

    // Compact in the bootstrap, where it appears twice; pretty in config.json.
    let compact = config.to_string();
    let boot = bootstrap::bootstrap(&plan, &compact, inline, &tokens, options, &mut diags);
    let to_yaml = |boot: &Value, diags: &mut Vec<Diagnostic>| match serde_norway::to_string(boot) {
        Ok(s) => Some(format!(
            "# Generated by aigw from Kubernetes resources; do not edit.\n{s}"
        )),
        Err(e) => {
            diags.push(generated_error(format!(
                "cannot serialise the bootstrap: {e}"
            )));
            None
        }
    };
    let Some(bootstrap_yaml) = to_yaml(&boot, &mut diags) else {
        return Err(fail(diags));
    };
    let files = credential_files(&plan);
    let bootstrap_wasm_yaml = if files.is_empty() {
        let limit = plan
            .kg
            .buffer_limit
            .unwrap_or(aigw_filter::config::DEFAULT_MAX_REQUEST_BODY_BYTES);
        let wasm = bootstrap::wasm_variant(&boot, &compact_wasm, &host_env, limit, options);
        match to_yaml(&wasm, &mut diags) {
            Some(y) => Some(y),
            None => return Err(fail(diags)),
        }
    } else {
        for (b, file) in files {
            let (from, mut path) = b
                .part_origins
                .iter()
                .find(|(f, _, _)| f == "auth")
                .map(|(_, from, path)| (from.clone(), path.clone()))
                .unwrap_or_else(|| (b.origin.clone(), "spec".into()));
            if from.1.kind == "BackendSecurityPolicy" {
                // The file comes from the annotation.
                path = format!(
                    "metadata.annotations.{}",
                    crate::credentials::CREDENTIALS_FILE_ANNOTATION
                );
            }
            diags.push(Diagnostic {
                severity: Severity::Warning,
                source: from.0,
                resource: Some(from.1),
                path,
                message: format!("bootstrap-wasm.yaml is not written: backend {} reads its credential from {file}, and the wasm build cannot read files", b.name),
            });
        }
        None
    };
    let holds_credentials = !secrets.is_empty();
    let secrets_env = holds_credentials.then(|| secrets_env_file(&secrets));

    let eg = envoy_gateway::manifests(&plan, options, &mut diags);
    if diags.iter().any(Diagnostic::is_error) {
        return Err(fail(diags));
    }
    let envoy_gateway_yaml = match eg.dynamic_yaml() {
        Ok(s) => s,
        Err(e) => {
            diags.push(generated_error(e));
            return Err(fail(diags));
        }
    };
    let envoy_gateway_wasm_yaml = match eg.wasm_yaml() {
        Ok(s) => s,
        Err(e) => {
            diags.push(generated_error(e));
            return Err(fail(diags));
        }
    };
    let not_enforced = plan
        .not_enforced
        .iter()
        .map(|n| {
            json!({
                "resource": n.resource.to_string(),
                "source": n.source.to_string(),
                "field": n.path,
                "value": n.value,
            })
        })
        .collect();

    let (ratelimit_config_yaml, limitador_yaml) = if plan.quota.fleet() {
        match service_configs(&plan, &mut diags) {
            Ok(y) => (Some(y.0), Some(y.1)),
            Err(e) => {
                diags.push(generated_error(e));
                return Err(fail(diags));
            }
        }
    } else {
        (None, None)
    };

    let mut warnings = diags;
    warnings.sort_by(|a, b| a.source.cmp(&b.source));
    dedup(&mut warnings);
    Ok(Output {
        config,
        config_json,
        bootstrap_yaml,
        bootstrap_wasm_yaml,
        holds_credentials,
        secrets,
        secrets_env,
        envoy_gateway: eg.dynamic,
        envoy_gateway_yaml,
        envoy_gateway_wasm: eg.wasm,
        envoy_gateway_wasm_yaml,
        ratelimit_config_yaml,
        limitador_yaml,
        not_enforced,
        warnings,
    })
}

/// The rate-limit service's configuration files (fleet mode):
/// `ratelimit-config.yaml` and `limitador-limits.yaml`.
fn service_configs(plan: &Plan, diags: &mut Vec<Diagnostic>) -> Result<(String, String), String> {
    let yaml = |v: &Value| {
        serde_norway::to_string(v)
            .map_err(|e| format!("cannot serialise the rate-limit service configuration: {e}"))
    };
    let rls = format!(
        "# Generated by aigw from Kubernetes resources; do not edit.\n\
         # envoyproxy/ratelimit configuration (domain {domain}) of the gateway's limits and\n\
         # budgets in fleet mode: the descriptors Envoy's rate-limit filter sends (see\n\
         # bootstrap.yaml). Budgets count micro-units of their currency; a daily budget in\n\
         # UTC counts in day windows, every other budget in year windows (the service's\n\
         # windows are fixed lengths from the Unix epoch, so no shorter unit matches a\n\
         # calendar period; the period entry starts a new count each period). Alert\n\
         # budgets are in shadow_mode.\n{}",
        yaml(&quota::ratelimit_config(plan))?,
        domain = plan.quota.domain,
    );
    let (limits, left_out) = quota::limitador_limits(plan);
    let mut lim = format!(
        "# Generated by aigw from Kubernetes resources; do not edit.\n\
         # Kuadrant Limitador limits file (namespace {domain}) of the gateway's requests-per-\n\
         # minute limits in fleet mode. Limitador's Envoy RLS endpoint counts each call with\n\
         # the request's hits_addend (1) and ignores the per-descriptor hits_addend Envoy's\n\
         # rate-limit filter sends, so token limits and budgets (checked with 0, charged with\n\
         # the answer's tokens or cost) cannot be counted by it and are left out.\n",
        domain = plan.quota.domain,
    );
    for l in &left_out {
        lim.push_str(&format!("# left out: {l}\n"));
    }
    if !left_out.is_empty() {
        let at = plan
            .quota
            .mode_from
            .clone()
            .unwrap_or(quota::Origin::Option("--quota"));
        diags.push(at.warning(format!(
            "limitador-limits.yaml leaves out {} (Limitador counts every call as 1 and ignores the per-descriptor hits_addend Envoy's rate-limit filter sends for checks and charges): use envoyproxy/ratelimit (ratelimit-config.yaml) for token limits and budgets",
            left_out.join(", ")
        )));
    }
    lim.push_str(&if limits.is_empty() {
        "[]\n".to_string()
    } else {
        yaml(&Value::Array(limits))?
    });
    Ok((rls, lim))
}

/// Backends of the config that read a credential file, with the file.
fn credential_files(plan: &Plan) -> Vec<(&PlanBackend, &str)> {
    let used = used_backends(plan);
    plan.backends
        .iter()
        .enumerate()
        .filter(|(i, _)| used.contains(i))
        .filter_map(|(_, b)| Some((b, b.auth.as_ref()?.file()?)))
        .collect()
}

/// The backends the routes send to (or mirror to), by index.
fn used_backends(plan: &Plan) -> std::collections::BTreeSet<usize> {
    plan.routes
        .iter()
        .flat_map(|r| r.backends.iter().chain(&r.mirrors).map(|b| b.backend))
        .collect()
}

/// The token services the credential exchanges of `backends` call, by the name
/// of the Envoy cluster that reaches each; two hosts whose names would clash are
/// an error.
pub(crate) fn token_clusters<'a>(
    backends: impl Iterator<Item = &'a PlanBackend>,
) -> Result<std::collections::BTreeMap<String, TokenHost>, String> {
    let mut out = std::collections::BTreeMap::new();
    for h in backends
        .filter_map(|b| b.auth.as_ref())
        .flat_map(|a| a.token_hosts())
    {
        match out.insert(h.cluster(), h.clone()) {
            Some(other) if other != *h => {
                return Err(format!(
                "the token services {}:{} and {}:{} would both be reached through Envoy cluster {}",
                other.host,
                other.port,
                h.host,
                h.port,
                h.cluster()
            ))
            }
            _ => {}
        }
    }
    Ok(out)
}

pub(crate) fn generated_error(message: String) -> Diagnostic {
    Diagnostic {
        severity: Severity::Error,
        source: Source {
            file: "<generated config>".into(),
            document: 0,
        },
        resource: None,
        path: String::new(),
        message,
    }
}

// ---------------------------------------------------------------- plan

/// A backend as the filter and Envoy see it: one AIServiceBackend (or kgateway
/// or generic provider), possibly with a model override or request edits from
/// the route's backendRef.
#[derive(Debug)]
pub struct PlanBackend {
    /// `<name>.<namespace>` (the form Envoy AI Gateway's CEL `backend` uses), plus
    /// `@<model>` for a backendRef's modelNameOverride and `#<n>` for a
    /// backendRef's own request edits.
    pub name: String,
    pub schema_name: String,
    pub schema_version: Option<String>,
    pub model_name_override: Option<String>,
    /// The `:authority` the filter sends; `None` leaves it to the filter (the
    /// provider's host, else the endpoint's).
    pub host: Option<String>,
    pub region: Option<String>,
    pub project: Option<String>,
    pub auth: Option<crate::credentials::Auth>,
    /// The Secret key `auth`'s value came from, when it is a value read from a
    /// Secret (Envoy Gateway mounts that key instead of carrying the value).
    pub auth_secret: Option<crate::credentials::SecretOrigin>,
    pub credential_override: Option<String>,
    pub forward_client_credentials: bool,
    pub mutations: crate::credentials::Mutations,
    /// `lambda`: the AWS Lambda function the backend invokes.
    pub lambda: Option<Value>,
    pub endpoints: Vec<Endpoint>,
    pub tls: Option<Tls>,
    /// The Envoy Gateway `Backend` (namespace, name) the endpoints come from, and
    /// its `spec.fallback`; `None` when the compiler makes the Backend itself.
    pub eg_backend: Option<(String, String)>,
    pub eg_fallback: bool,
    pub origin: (Source, ResourceId),
    /// Where parts of the backend's config came from: (field of the config's
    /// backend, resource, field path), to point filter errors at them.
    pub part_origins: Vec<(String, (Source, ResourceId), String)>,
}

impl PlanBackend {
    pub fn new(
        name: String,
        schema_name: &str,
        endpoints: Vec<Endpoint>,
        tls: Option<Tls>,
        origin: (Source, ResourceId),
    ) -> PlanBackend {
        PlanBackend {
            name,
            schema_name: schema_name.to_string(),
            schema_version: None,
            model_name_override: None,
            host: None,
            region: None,
            project: None,
            auth: None,
            auth_secret: None,
            credential_override: None,
            forward_client_credentials: false,
            mutations: Default::default(),
            lambda: None,
            endpoints,
            tls,
            eg_backend: None,
            eg_fallback: false,
            origin,
            part_origins: Vec::new(),
        }
    }

    /// The backend's entry of the filter config, with `auth` as given (the
    /// backend's own for config.json; another form, or none, for Envoy Gateway).
    pub fn config_json(&self, auth: Option<Value>) -> Value {
        let mut schema = Map::new();
        schema.insert("name".into(), json!(self.schema_name));
        if let Some(v) = &self.schema_version {
            schema.insert("version".into(), json!(v));
        }
        let mut o = Map::new();
        o.insert("name".into(), json!(self.name));
        o.insert("schema".into(), Value::Object(schema));
        if let Some(m) = &self.model_name_override {
            o.insert("modelNameOverride".into(), json!(m));
        }
        for (k, v) in [
            ("host", &self.host),
            ("region", &self.region),
            ("project", &self.project),
        ] {
            if let Some(v) = v {
                o.insert(k.into(), json!(v));
            }
        }
        if let Some(a) = auth {
            o.insert("auth".into(), a);
        }
        if let Some(h) = &self.credential_override {
            o.insert("credentialOverride".into(), json!({"header": h}));
        }
        if self.forward_client_credentials {
            o.insert("forwardClientCredentials".into(), json!(true));
        }
        if let Some(h) = self.mutations.header_json() {
            o.insert("headerMutation".into(), h);
        }
        if let Some(b) = self.mutations.body_json() {
            o.insert("bodyMutation".into(), b);
        }
        if let Some(l) = &self.lambda {
            o.insert("lambda".into(), l.clone());
        }
        Value::Object(o)
    }
}

#[derive(Debug)]
pub struct PlanRouteBackend {
    pub backend: usize,
    pub weight: u32,
    pub priority: u32,
    pub path: String,
}

/// One AIGatewayRoute rule.
#[derive(Debug)]
pub struct PlanRoute {
    /// `<namespace>/<route>/rule/<index>`: the filter route, Envoy route and
    /// cluster name.
    pub name: String,
    pub models: Vec<(String, String)>,
    /// Each match's extra (non-model) headers, in match order, with its model.
    pub matches: Vec<(String, Vec<(String, String)>)>,
    pub backends: Vec<PlanRouteBackend>,
    pub costs: Vec<Cost>,
    pub timeout_ms: u64,
    /// Per-attempt bound (`timeouts.backendRequest`).
    pub per_try_timeout_ms: Option<u64>,
    /// Retries after the first attempt, on connect failures, resets and
    /// 429/5xx answers; `None` leaves Envoy's default (no retry).
    pub num_retries: Option<u32>,
    /// Gateways the route's resource attaches to.
    pub parents: Vec<ParentRef>,
    pub rule_path: String,
    pub origin: (Source, ResourceId),
    /// kgateway TrafficPolicy settings (and whether this is a kgateway route).
    pub extra: crate::kgateway::RouteExtra,
    /// The filter route's `rateLimit`, `cache` and `metadata` (generic routes).
    pub rate_limit: Option<Value>,
    /// The resource field `rate_limit` came from (the route's own, or a policy's).
    pub rate_limit_from: Option<quota::Origin>,
    /// The filter route's `budgets`, each with the resource field it came from.
    pub budgets: Vec<(Value, quota::Origin)>,
    /// Fleet mode: more request-time entries of the route's
    /// `RateLimitPerRoute.rate_limits` (a kgateway TrafficPolicy's descriptors).
    pub rl_actions: Vec<Value>,
    pub cache: Option<Value>,
    pub metadata: Vec<(String, String)>,
    /// The filter route's `guardrails` (generic routes).
    pub guardrails: Vec<Value>,
    /// Balance the rule's cluster by least requests (else round robin).
    pub least_request: bool,
    /// Backends that get a copy of each request, their answers dropped (a generic
    /// route's `shadow` strategy; standalone bootstrap only).
    pub mirrors: Vec<PlanRouteBackend>,
}

impl PlanRoute {
    /// Whether `rate_limit_from` is a field of the route's own resource.
    pub fn rate_limit_from_route(&self) -> bool {
        matches!(&self.rate_limit_from, Some(quota::Origin::Field { resource, .. }) if *resource == self.origin.1)
    }

    /// The distinct priorities of the backends that take traffic (weight > 0), in order.
    pub fn priority_levels(&self) -> std::collections::BTreeSet<u32> {
        priority_levels(&self.backends)
    }
}

/// The distinct priorities of `backends` that take traffic (weight > 0), in order.
pub(crate) fn priority_levels(backends: &[PlanRouteBackend]) -> std::collections::BTreeSet<u32> {
    backends
        .iter()
        .filter(|b| b.weight > 0)
        .map(|b| b.priority)
        .collect()
}

#[derive(Debug)]
pub struct PlanModel {
    pub id: String,
    pub owned_by: String,
    pub created: i64,
    pub route: usize,
}

/// An input field the gateway does not enforce, carried to the output.
#[derive(Debug)]
pub struct NotEnforced {
    pub source: Source,
    pub resource: ResourceId,
    pub path: String,
    pub value: Value,
}

#[derive(Debug, Default)]
pub struct Plan {
    pub backends: Vec<PlanBackend>,
    pub routes: Vec<PlanRoute>,
    pub models: Vec<PlanModel>,
    pub not_enforced: Vec<NotEnforced>,
    /// Listener-wide additions from kgateway policies.
    pub kg: crate::kgateway::Listener,
    /// How limits and budgets are counted.
    pub quota: quota::QuotaPlan,
    /// The config's `identity`.
    pub identity: Option<quota::Identity>,
    /// The config's `guardrails` policies (`--guardrails`).
    pub guardrails: Vec<Value>,
}

pub(crate) fn reporter<'a>(meta: &'a Meta, out: &'a mut Vec<Diagnostic>) -> Reporter<'a> {
    Reporter {
        source: &meta.source,
        resource: Some(meta.id.clone()),
        out,
    }
}

type Key = (String, String);

/// Indexes resources of one kind by (namespace, name), reporting duplicates.
fn index<T>(
    items: &[T],
    meta: impl Fn(&T) -> &Meta,
    diags: &mut Vec<Diagnostic>,
) -> HashMap<Key, usize> {
    let mut map: HashMap<Key, usize> = HashMap::new();
    for (i, item) in items.iter().enumerate() {
        let m = meta(item);
        let key = (m.id.namespace.clone(), m.id.name.clone());
        if let Some(&first) = map.get(&key) {
            let f = &meta(&items[first]).source;
            reporter(m, diags).error(
                "metadata.name",
                format!("duplicate {} (first defined at {f})", m.id),
            );
        } else {
            map.insert(key, i);
        }
    }
    map
}

fn plan(inputs: &Inputs, options: &Options, diags: &mut Vec<Diagnostic>) -> Plan {
    let _ = index(&inputs.routes, |r| &r.meta, diags);
    let asb_ix = index(&inputs.service_backends, |r| &r.meta, diags);
    let bsp_ix = index(&inputs.security_policies, |r| &r.meta, diags);
    let eg_ix = index(&inputs.backends, |r| &r.meta, diags);
    let _ = index(&inputs.tls_policies, |r| &r.meta, diags);
    let secret_ix = index(&inputs.secrets, |r| &r.meta, diags);

    let secrets = Secrets {
        index: &secret_ix,
        secrets: &inputs.secrets,
    };

    // BackendTLSPolicy → Backend hostnames.
    let mut tls_host: HashMap<Key, (String, String)> = HashMap::new();
    for p in &inputs.tls_policies {
        let mut r = reporter(&p.meta, diags);
        for (name, path) in &p.backends {
            let key = (p.meta.id.namespace.clone(), name.clone());
            if !eg_ix.contains_key(&key) {
                r.warn(
                    path.as_str(),
                    format!(
                        "Backend {}/{name} is not among the inputs; policy not applied",
                        key.0
                    ),
                );
                continue;
            }
            let Some(host) = &p.hostname else { continue };
            if let Some((_, other)) = tls_host.get(&key) {
                r.error(
                    path.as_str(),
                    format!(
                        "Backend {}/{name} already has a BackendTLSPolicy ({other})",
                        key.0
                    ),
                );
                continue;
            }
            tls_host.insert(key, (host.clone(), p.meta.id.to_string()));
        }
    }

    // Security policies: references, and Secrets the compiler does not read.
    // Credentials are applied per AIServiceBackend, when a route uses it.
    let mut attached: HashMap<Key, Vec<String>> = HashMap::new();
    for p in &inputs.security_policies {
        let mut r = reporter(&p.meta, diags);
        for (name, path) in &p.targets {
            let key = (p.meta.id.namespace.clone(), name.clone());
            if asb_ix.contains_key(&key) {
                attached
                    .entry(key)
                    .or_default()
                    .push(p.meta.id.name.clone());
            } else {
                r.error(
                    path.as_str(),
                    format!(
                        "AIServiceBackend {}/{name} not found among the inputs",
                        key.0
                    ),
                );
            }
        }
        // Keys compiled into the config must be there even when no route uses
        // the policy (it is applied in Kubernetes too). With the credentials-file
        // annotation no Secret is read, nor with GCP pass-through.
        let passthrough = matches!(
            p.credential,
            Some(resources::PolicyCredential::Gcp {
                passthrough: true,
                ..
            })
        );
        if p.credentials_file.is_none() && !passthrough {
            for s in &p.secrets {
                if let Err(e) = security::secret_value(s, &secrets) {
                    r.error(s.path.as_str(), e);
                }
            }
        }
    }

    // AIServiceBackends: their Backend and policy must resolve.
    for b in &inputs.service_backends {
        let mut r = reporter(&b.meta, diags);
        if let Some((ns, name)) = &b.backend {
            if !eg_ix.contains_key(&(ns.clone(), name.clone())) {
                r.error(
                    "spec.backendRef.name",
                    format!(
                        "Backend {EG}/{ns}/{name} not found among the inputs",
                        EG = resources::EG_GROUP
                    ),
                );
            }
        }
        if let Some(p) = &b.security_policy {
            let key = (b.meta.id.namespace.clone(), p.clone());
            if !bsp_ix.contains_key(&key) {
                r.error(
                    "spec.backendSecurityPolicyRef.name",
                    format!(
                        "BackendSecurityPolicy {}/{p} not found among the inputs",
                        key.0
                    ),
                );
            }
            let key = (b.meta.id.namespace.clone(), b.meta.id.name.clone());
            if let Some(others) = attached.get(&key).filter(|o| o.iter().any(|o| o != p)) {
                r.error(
                    "spec.backendSecurityPolicyRef",
                    format!(
                        "also targeted by BackendSecurityPolicy {}: a backend takes one policy",
                        others.join(", ")
                    ),
                );
            }
        } else if let Some(ps) =
            attached.get(&(b.meta.id.namespace.clone(), b.meta.id.name.clone()))
        {
            if ps.len() > 1 {
                r.error(
                    "",
                    format!(
                        "targeted by several BackendSecurityPolicies ({}): a backend takes one",
                        ps.join(", ")
                    ),
                );
            }
        }
    }

    let mut plan = Plan::default();
    quota::plan_options(options, &mut plan, diags);
    let mut variants: HashMap<(usize, Option<String>, String), usize> = HashMap::new();
    let mut applied_policy: HashMap<usize, Applied> = HashMap::new();
    // Backend names with request edits of a backendRef's own, numbered.
    let mut edits: HashMap<String, usize> = HashMap::new();
    let mut used = vec![false; inputs.service_backends.len()];
    let mut model_owner: HashMap<String, String> = HashMap::new();

    for route in &inputs.routes {
        let ns = route.meta.id.namespace.clone();
        let origin = (route.meta.source.clone(), route.meta.id.clone());
        let mut r = reporter(&route.meta, diags);
        for c in &route.costs {
            if FILTER_METADATA_KEYS.contains(&c.metadata_key.as_str()) {
                r.error(
                    format!("{}.metadataKey", c.path),
                    format!(
                        "'{}' is reserved: the filter writes it itself",
                        c.metadata_key
                    ),
                );
            }
        }
        for (i, rule) in route.rules.iter().enumerate() {
            let name = format!("{ns}/{}/rule/{i}", route.meta.id.name);
            let mut models: Vec<(String, String)> = Vec::new();
            let mut matches = Vec::new();
            if rule.matches.is_empty() {
                r.error(
                    format!("{}.matches", rule.path),
                    format!("needs a match on the `{MODEL_HEADER}` header: the filter routes by model (catch-all rules are not supported yet)"),
                );
            }
            for (j, m) in rule.matches.iter().enumerate() {
                let model = m.headers.iter().find(|h| h.name == MODEL_HEADER);
                let Some(model) = model else {
                    r.error(
                        format!("{}.matches[{j}].headers", rule.path),
                        format!("needs an Exact match on the `{MODEL_HEADER}` header: the filter routes by model"),
                    );
                    continue;
                };
                let extra = m
                    .headers
                    .iter()
                    .filter(|h| h.name != MODEL_HEADER)
                    .map(|h| (h.name.clone(), h.value.clone()))
                    .collect();
                matches.push((model.value.clone(), extra));
                if models.iter().any(|(m, _)| *m == model.value) {
                    continue;
                }
                let here = format!("{} {}", route.meta.id, rule.path);
                if let Some(other) = model_owner.get(&model.value) {
                    r.error(
                        model.path.as_str(),
                        format!(
                            "model '{}' is already routed by {other}: a model maps to one rule",
                            model.value
                        ),
                    );
                    continue;
                }
                model_owner.insert(model.value.clone(), here);
                models.push((model.value.clone(), model.path.clone()));
            }

            let mut backends: Vec<PlanRouteBackend> = Vec::new();
            for b in &rule.backend_refs {
                let bns = b.namespace.clone().unwrap_or_else(|| ns.clone());
                let Some(&ai) = asb_ix.get(&(bns.clone(), b.name.clone())) else {
                    r.error(
                        format!("{}.name", b.path),
                        format!(
                            "AIServiceBackend {bns}/{} not found among the inputs",
                            b.name
                        ),
                    );
                    continue;
                };
                used[ai] = true;
                let asb = &inputs.service_backends[ai];
                let Some(eg) = asb
                    .backend
                    .as_ref()
                    .and_then(|k| eg_ix.get(k))
                    .map(|&i| &inputs.backends[i])
                else {
                    continue; // reported on the AIServiceBackend
                };
                let mutations = asb.mutations.overlaid(&b.mutations);
                let vkey = (
                    ai,
                    b.model_name_override.clone(),
                    serde_json::to_string(&(mutations.header_json(), mutations.body_json()))
                        .unwrap_or_default(),
                );
                let idx = match variants.get(&vkey) {
                    Some(&idx) => idx,
                    None => {
                        let applied = applied_policy
                            .entry(ai)
                            .or_insert_with(|| {
                                asb_credentials(inputs, ai, &bsp_ix, &attached, &secrets, r.out)
                            })
                            .clone();
                        let egkey = (eg.meta.id.namespace.clone(), eg.meta.id.name.clone());
                        let tls_name = tls_host.get(&egkey).map(|(h, _)| h.clone());
                        let mut tls = eg.tls.clone();
                        if tls.as_ref().is_some_and(|t| !t.insecure) && tls_name.is_none() {
                            warn_no_sni(eg, r.out);
                        }
                        if let Some(host) = &tls_name {
                            tls.get_or_insert_with(Tls::default).hostname = Some(host.clone());
                        }
                        let base = format!("{}.{}", asb.meta.id.name, asb.meta.id.namespace);
                        let mut bname = match &b.model_name_override {
                            Some(m) => format!("{base}@{m}"),
                            None => base,
                        };
                        if !b.mutations.is_empty() {
                            let n = edits.entry(bname.clone()).or_insert(0);
                            *n += 1;
                            bname = format!("{bname}#{n}");
                        }
                        let asb_origin = (asb.meta.source.clone(), asb.meta.id.clone());
                        let mut pb = PlanBackend::new(
                            bname,
                            asb.schema_name.as_deref().unwrap_or_default(),
                            eg.endpoints.clone(),
                            tls,
                            asb_origin.clone(),
                        );
                        pb.schema_version = asb.schema_version.clone();
                        pb.model_name_override = b.model_name_override.clone();
                        pb.host = eg_authority(eg, tls_name.as_deref(), &mut r, &b.path);
                        pb.eg_backend = Some(egkey);
                        pb.eg_fallback = eg.fallback;
                        pb.region = applied.region.clone();
                        pb.project = applied.project.clone();
                        pb.auth = applied.auth.clone();
                        pb.auth_secret = applied.secret.clone();
                        pb.credential_override = applied.credential_override.clone();
                        pb.forward_client_credentials = applied.forward_client_credentials;
                        pb.mutations = mutations;
                        pb.part_origins.push((
                            "schema".into(),
                            asb_origin.clone(),
                            "spec.schema".into(),
                        ));
                        if let Some(pi) = applied.policy {
                            let path = applied.path;
                            let pol = &inputs.security_policies[pi];
                            let from = (pol.meta.source.clone(), pol.meta.id.clone());
                            for f in ["auth", "region", "project", "credentialOverride"] {
                                pb.part_origins.push((f.into(), from.clone(), path.into()));
                            }
                        }
                        if !b.mutations.is_empty() {
                            for f in ["headerMutation", "bodyMutation"] {
                                pb.part_origins.push((
                                    f.into(),
                                    origin.clone(),
                                    format!("{}.{f}", b.path),
                                ));
                            }
                        }
                        check_schema_needs(&pb, asb, r.out);
                        plan.backends.push(pb);
                        variants.insert(vkey, plan.backends.len() - 1);
                        plan.backends.len() - 1
                    }
                };
                if backends.iter().any(|x| x.backend == idx) {
                    r.error(
                        format!("{}.name", b.path),
                        format!(
                            "AIServiceBackend {bns}/{} is referenced twice in this rule",
                            b.name
                        ),
                    );
                    continue;
                }
                backends.push(PlanRouteBackend {
                    backend: idx,
                    weight: b.weight,
                    priority: b.priority,
                    path: b.path.clone(),
                });
            }
            warn_if_no_weight(&backends, format!("{}.backendRefs", rule.path), &mut r);

            let created = rule.created_at.or(route.meta.created).unwrap_or(0);
            let owned_by = rule
                .owned_by
                .clone()
                .unwrap_or_else(|| "Envoy AI Gateway".to_string());
            for (m, _) in &models {
                plan.models.push(PlanModel {
                    id: m.clone(),
                    owned_by: owned_by.clone(),
                    created,
                    route: plan.routes.len(),
                });
            }
            plan.routes.push(PlanRoute {
                name,
                models,
                matches,
                backends,
                costs: route.costs.clone(),
                timeout_ms: rule
                    .request_timeout_ms
                    .unwrap_or(DEFAULT_REQUEST_TIMEOUT_MS),
                per_try_timeout_ms: rule.backend_request_timeout_ms,
                num_retries: None,
                parents: route.parents.clone(),
                rule_path: rule.path.clone(),
                origin: origin.clone(),
                extra: Default::default(),
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

    plan_generic(
        inputs,
        &secrets,
        options,
        &mut plan,
        &mut model_owner,
        diags,
    );
    crate::kgateway::plan(&inputs.kg, &secrets, &mut plan, &mut model_owner, diags);
    for b in &mut plan.backends {
        address_as_host(b);
    }
    crate::eaig_quota::plan(inputs, &mut plan, diags);
    quota::finish(&plan, diags);
    plan.guardrails = options.guardrails.clone();

    for (i, b) in inputs.service_backends.iter().enumerate() {
        let key = (b.meta.id.namespace.clone(), b.meta.id.name.clone());
        // A duplicate is reported as such, not also as unused.
        if !used[i] && asb_ix.get(&key) == Some(&i) {
            reporter(&b.meta, diags).warn("", "not referenced by any AIGatewayRoute; not compiled");
        }
    }
    plan
}

/// The credentials AIServiceBackend `ai` gets from its BackendSecurityPolicy
/// (referenced, or targeting it); problems are reported on the policy.
fn asb_credentials(
    inputs: &Inputs,
    ai: usize,
    bsp_ix: &HashMap<Key, usize>,
    attached: &HashMap<Key, Vec<String>>,
    secrets: &Secrets<'_>,
    diags: &mut Vec<Diagnostic>,
) -> Applied {
    let asb = &inputs.service_backends[ai];
    let ns = &asb.meta.id.namespace;
    let name = match &asb.security_policy {
        Some(p) => Some(p.clone()),
        None => attached
            .get(&(ns.clone(), asb.meta.id.name.clone()))
            .filter(|v| v.len() == 1)
            .map(|v| v[0].clone()),
    };
    let Some(&pi) = name.and_then(|n| bsp_ix.get(&(ns.clone(), n))) else {
        return Applied::default();
    };
    let p = &inputs.security_policies[pi];
    let mut r = reporter(&p.meta, diags);
    let schema = asb.schema_name.as_deref().unwrap_or_default();
    let mut a = security::apply(p, schema, &asb.meta.id.to_string(), secrets, &mut r);
    a.policy = Some(pi);
    a
}

/// The `:authority` for an Envoy Gateway Backend: its FQDN (with a port other
/// than the scheme's), else the BackendTLSPolicy's hostname.
fn eg_authority(
    eg: &EgBackend,
    tls_name: Option<&str>,
    r: &mut Reporter<'_>,
    ref_path: &str,
) -> Option<String> {
    let fqdns: Vec<(&str, u16)> = eg
        .endpoints
        .iter()
        .filter_map(|e| match &e.address {
            Address::Fqdn(h) => Some((h.as_str(), e.port)),
            Address::Ip(_) => None,
        })
        .collect();
    let tls = eg.tls.is_some() || tls_name.is_some();
    match fqdns.first() {
        Some(&(h, port)) => {
            if fqdns.iter().any(|(x, _)| *x != h) {
                r.warn(
                    format!("{ref_path}.name"),
                    format!(
                        "the endpoints of Backend {} have different host names: the filter sends one :authority per backend ({h})",
                        eg.meta.id
                    ),
                );
            }
            Some(authority(h, port, tls))
        }
        None => tls_name.map(str::to_string),
    }
}

/// A backend reached by IP address whose schema has no provider host of its own
/// (OpenAI-compatible servers, Azure OpenAI without a host name) sends its first
/// endpoint's address as `:authority`, not the client's Host: what a client of
/// that server would send, and one fixed host the route can rewrite to.
fn address_as_host(b: &mut PlanBackend) {
    if b.host.is_some() || signed_host(b).is_some() {
        return;
    }
    let tls = b.tls.is_some();
    if let Some(e) = b.endpoints.first() {
        if let Address::Ip(ip) = &e.address {
            let ip = if ip.contains(':') {
                format!("[{ip}]")
            } else {
                ip.clone()
            };
            b.host = Some(authority(&ip, e.port, tls));
        }
    }
}

/// The `:authority` the filter sends backend `b`'s requests with, and signs
/// them for: its `host`, else the provider's public host (the filter's default).
/// Every path a request takes to `b` must leave it as it is: the route rewrites
/// Host to it where the router-level instance did the upstream work, and does not
/// rewrite it where the upstream instance sets it per attempt.
pub(crate) fn signed_host(b: &PlanBackend) -> Option<String> {
    filter_view(b).and_then(|(host, _)| host)
}

/// `host` without its port (`[v6]:port` keeps the brackets' content).
pub(crate) fn host_without_port(host: &str) -> &str {
    if let Some(rest) = host.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    match host.rsplit_once(':') {
        Some((h, p)) if !h.contains(':') && p.bytes().all(|c| c.is_ascii_digit()) => h,
        _ => host,
    }
}

/// An Envoy Gateway Backend with verified TLS and no BackendTLSPolicy hostname:
/// Envoy Gateway takes the upstream SNI from a BackendTLSPolicy's
/// `validation.hostname` only (the standalone bootstrap sends the endpoint's host
/// name).
fn warn_no_sni(eg: &EgBackend, diags: &mut Vec<Diagnostic>) {
    let host = eg
        .endpoints
        .iter()
        .find_map(|e| match &e.address {
            Address::Fqdn(h) => Some(h.as_str()),
            Address::Ip(_) => None,
        })
        .unwrap_or("the provider's host name");
    reporter(&eg.meta, diags).warn(
        "spec.tls",
        format!("on Envoy Gateway the TLS handshake with this Backend names no server (no SNI), which a provider behind a shared front end refuses: Envoy Gateway takes the SNI from a BackendTLSPolicy's validation.hostname, and none names this Backend; add one with hostname {host} (the standalone bootstrap sends it already)"),
    );
}

/// What a schema needs besides the AIServiceBackend: GCP backends a project and
/// region, AWS backends a region (or a host to send to).
fn check_schema_needs(b: &PlanBackend, asb: &AiServiceBackend, diags: &mut Vec<Diagnostic>) {
    let mut r = reporter(&asb.meta, diags);
    match b.schema_name.as_str() {
        s @ ("GCPVertexAI" | "GCPAnthropic") if b.project.is_none() || b.region.is_none() => {
            r.error(
                "spec.schema.name",
                format!("schema {s} needs the projectName and region of a GCPCredentials BackendSecurityPolicy"),
            )
        }
        s @ ("AWSBedrock" | "AWSAnthropic") if b.region.is_none() && b.host.is_none() => r.error(
            "spec.schema.name",
            format!("schema {s} needs the region of an AWSCredentials BackendSecurityPolicy (or a Backend with an fqdn endpoint)"),
        ),
        _ => {}
    }
}

/// Drops repeated diagnostics (a policy shared by several backends is reported once).
fn dedup(diags: &mut Vec<Diagnostic>) {
    let mut seen = std::collections::HashSet::new();
    diags.retain(|d| seen.insert(d.to_string()));
}

/// Generic AIGatewayRoutes: one route each, providers reached directly at their
/// public hosts.
fn plan_generic(
    inputs: &Inputs,
    secrets: &Secrets<'_>,
    options: &Options,
    plan: &mut Plan,
    model_owner: &mut HashMap<String, String>,
    diags: &mut Vec<Diagnostic>,
) {
    let mut names: HashMap<String, Source> = HashMap::new();
    for g in &inputs.generic_routes {
        let mut r = reporter(&g.meta, diags);
        let origin = (g.meta.source.clone(), g.meta.id.clone());
        if let Some(first) = names.get(&g.meta.id.name) {
            r.error(
                "name",
                format!("duplicate generic route (first defined at {first})"),
            );
            continue;
        }
        names.insert(g.meta.id.name.clone(), g.meta.source.clone());
        if options.limits_per == Scope::Tenant
            && g.tenant.is_none()
            && (g.rate_limit.is_some() || g.budget.is_some())
        {
            r.error(
                "tenant",
                "is required: --limits-per tenant counts this route's rateLimit and budget per tenant",
            );
        }
        r.warn(
            "",
            "names no Gateway: the generated HTTPRoute has no parentRefs (add them before applying it; the standalone bootstrap serves the route as is)",
        );
        let mut models = Vec::new();
        for (m, path) in &g.models {
            if let Some(other) = model_owner.get(m) {
                r.error(
                    path.as_str(),
                    format!("model '{m}' is already routed by {other}: a model maps to one rule"),
                );
                continue;
            }
            model_owner.insert(m.clone(), g.meta.id.to_string());
            models.push((m.clone(), path.clone()));
        }
        let mut backends = Vec::new();
        for b in &g.backends {
            let name = format!("{}.{}@{}", g.meta.id.name, b.provider.slug, b.model);
            let idx = match plan.backends.iter().position(|x| x.name == name) {
                Some(i) => i,
                None => {
                    let mut pb = PlanBackend::new(
                        name,
                        b.provider.schema,
                        vec![Endpoint {
                            address: resources::Address::Fqdn(b.provider.host.into()),
                            port: 443,
                        }],
                        Some(Tls::default()),
                        origin.clone(),
                    );
                    pb.model_name_override = Some(b.model.clone());
                    pb.host = Some(b.provider.host.into());
                    if let Some(c) = &b.credential {
                        let path = format!("{}.credentialRef", b.path);
                        match secrets.value("default", c, crate::generic::CREDENTIAL_KEY) {
                            Ok(v) => {
                                pb.auth = Some(crate::credentials::Auth::ApiKey {
                                    key: crate::credentials::SecretSource::Value(v),
                                    header: None,
                                });
                                pb.auth_secret = Some(crate::credentials::SecretOrigin {
                                    namespace: "default".into(),
                                    name: c.clone(),
                                    key: crate::generic::CREDENTIAL_KEY.into(),
                                    profile: None,
                                    field: path.clone(),
                                });
                                pb.part_origins.push(("auth".into(), origin.clone(), path));
                            }
                            Err(e) => r.error(path, e),
                        }
                    }
                    plan.backends.push(pb);
                    plan.backends.len() - 1
                }
            };
            if backends.iter().any(|x: &PlanRouteBackend| x.backend == idx) {
                r.error(
                    format!("{}.model", b.path),
                    format!(
                        "model '{}' is listed twice for provider {}",
                        b.model, b.provider.slug
                    ),
                );
                continue;
            }
            backends.push(PlanRouteBackend {
                backend: idx,
                weight: b.weight,
                priority: b.priority,
                path: b.path.clone(),
            });
        }
        warn_if_no_weight(&backends, "backends".to_string(), &mut r);
        // `shadow`: the first backend (by priority, then as listed) answers; the
        // others get a copy of each request.
        let mirrors = if g.shadow && backends.len() > 1 {
            let first = (0..backends.len())
                .min_by_key(|&i| (backends[i].priority, i))
                .unwrap_or(0);
            let primary = backends.remove(first);
            std::mem::replace(&mut backends, vec![primary])
        } else {
            Vec::new()
        };
        for (path, value) in &g.not_enforced {
            plan.not_enforced.push(NotEnforced {
                source: g.meta.source.clone(),
                resource: g.meta.id.clone(),
                path: path.clone(),
                value: value.clone(),
            });
        }
        for (m, _) in &models {
            plan.models.push(PlanModel {
                id: m.clone(),
                owned_by: "aigw".into(),
                created: 0,
                route: plan.routes.len(),
            });
        }
        let matches = models
            .iter()
            .map(|(m, _)| (m.clone(), g.headers.clone()))
            .collect();
        plan.routes.push(PlanRoute {
            name: format!("generic/{}", g.meta.id.name),
            models,
            matches,
            backends,
            costs: Vec::new(),
            timeout_ms: DEFAULT_REQUEST_TIMEOUT_MS,
            per_try_timeout_ms: g.per_try_timeout_ms,
            num_retries: g.num_retries,
            parents: Vec::new(),
            rule_path: String::new(),
            origin,
            extra: Default::default(),
            rate_limit: g.rate_limit.clone().map(|mut rl| {
                if options.limits_per != Scope::Route {
                    rl["per"] = json!(options.limits_per.name());
                }
                rl
            }),
            rate_limit_from: Some(quota::Origin::field(
                &g.meta.source,
                &g.meta.id,
                "rateLimit",
            )),
            budgets: g
                .budget
                .iter()
                .map(|b| {
                    // Named after the route: a generic route has one budget.
                    let mut o = Map::new();
                    o.insert("name".into(), json!(g.meta.id.name));
                    if let Value::Object(fields) = b {
                        o.extend(fields.clone());
                    }
                    if options.limits_per != Scope::Route {
                        o.insert("per".into(), json!(options.limits_per.name()));
                    }
                    (
                        Value::Object(o),
                        quota::Origin::field(&g.meta.source, &g.meta.id, "budget"),
                    )
                })
                .collect(),
            rl_actions: Vec::new(),
            cache: g.cache.clone(),
            metadata: g
                .tenant
                .iter()
                .map(|t| ("tenant".to_string(), t.clone()))
                .collect(),
            guardrails: route_guardrails(g, options, &mut r),
            least_request: g.least_request,
            mirrors,
        });
    }
}

// ---------------------------------------------------------------- filter config

/// Where a part of the generated config came from, to map filter errors back.
#[derive(Debug)]
pub(crate) struct Origin {
    config_path: String,
    source: Source,
    resource: ResourceId,
    path: String,
}
/// A generic route's guardrails as the filter route's: each names a policy of
/// `--guardrails`.
fn route_guardrails(
    g: &crate::generic::GenericRoute,
    options: &Options,
    r: &mut crate::diag::Reporter<'_>,
) -> Vec<Value> {
    let known: Vec<&str> = options
        .guardrails
        .iter()
        .filter_map(|p| p.get("name")?.as_str())
        .collect();
    let mut out = Vec::new();
    for (policy, stage, path) in &g.guardrails {
        if known.contains(&policy.as_str()) {
            out.push(json!({"policy": policy, "stage": stage}));
        } else if options.guardrails.is_empty() {
            r.error(
                path.as_str(),
                format!(
                    "names guardrail policy '{policy}': give the policies with --guardrails FILE"
                ),
            );
        } else {
            r.error(
                path.as_str(),
                format!("names guardrail policy '{policy}', which --guardrails does not define"),
            );
        }
    }
    out
}

/// A filter config with `routerOnly: true` (after `version`): the router-level
/// instance does the upstream work of the routes with one backend.
pub(crate) fn with_router_only(doc: Value) -> Value {
    let Value::Object(fields) = doc else {
        return doc;
    };
    let mut out = Map::new();
    for (k, v) in fields {
        let after_version = k == "version";
        out.insert(k, v);
        if after_version {
            out.insert("routerOnly".into(), json!(true));
        }
    }
    Value::Object(out)
}

/// The filter's own view of backend `b` alone, as the router-level instance uses
/// it for a route with one backend (`routerOnly`): the `:authority` it sends and
/// the request headers its upstream work may set or remove.
pub(crate) fn filter_view(b: &PlanBackend) -> Option<(Option<String>, Vec<String>)> {
    let doc = json!({
        "version": aigw_filter::config::CONFIG_VERSION,
        "routerOnly": true,
        "backends": [b.config_json(None)],
        "routes": [{"name": "r", "models": ["m"], "backends": [{"name": b.name}]}],
    });
    let c = aigw_filter::Config::from_json(doc.to_string().as_bytes()).ok()?;
    let host = c.backend(&b.name)?.host.clone();
    Some((host, c.touched_headers().to_vec()))
}

/// Whether the standalone gateway can let the router-level instance do the upstream
/// work of every rule with one backend (`routerOnly`), so that only the clusters of
/// rules with several backends need the upstream instance: it saves a filter
/// instance and a second parse of the request per request. Not when a rule with one
/// backend matches on a header that work may change, since Envoy picks the route
/// again after it.
pub(crate) fn inline_single_backend_rules(plan: &Plan) -> bool {
    // A mirrored request must leave as the client sent it, for each mirror's
    // upstream instance to translate: no router-level upstream work anywhere.
    if plan.routes.iter().any(|r| !r.mirrors.is_empty()) {
        return false;
    }
    plan.routes
        .iter()
        .filter(|r| r.backends.len() == 1)
        .all(|r| {
            filter_view(&plan.backends[r.backends[0].backend])
                .is_some_and(|(_, touched)| touched_matches(r, &touched).next().is_none())
        })
}

/// The header matches of rule `r` on a header in `touched` (the headers its upstream
/// work may set or remove): the match's index and the header's name.
pub(crate) fn touched_matches<'r>(
    r: &'r PlanRoute,
    touched: &'r [String],
) -> impl Iterator<Item = (usize, &'r str)> + 'r {
    r.matches
        .iter()
        .enumerate()
        .flat_map(move |(j, (_, extra))| {
            extra
                .iter()
                .filter(|(name, _)| touched.iter().any(|t| t.eq_ignore_ascii_case(name)))
                .map(move |(name, _)| (j, name.as_str()))
        })
}

/// The filter config for the routes `keep` selects (all of them for
/// `config.json`; one AIGatewayRoute's for its EnvoyExtensionPolicy), with only
/// the models and backends those routes use; `auth` gives each backend's `auth`
/// (by index in `plan.backends`): its credential for config.json, a mounted file
/// or nothing for Envoy Gateway (a Kubernetes policy is no place for a key).
pub(crate) fn config_document(
    plan: &Plan,
    keep: &dyn Fn(usize) -> bool,
    auth: &dyn Fn(usize) -> Option<Value>,
) -> (Value, Vec<Origin>) {
    let mut origins = Vec::new();
    let mut origin =
        |config_path: String, (source, resource): &(Source, ResourceId), path: &str| {
            origins.push(Origin {
                config_path,
                source: source.clone(),
                resource: resource.clone(),
                path: path.to_string(),
            })
        };

    let mut models = Vec::new();
    for (i, m) in plan.models.iter().filter(|m| keep(m.route)).enumerate() {
        let r = &plan.routes[m.route];
        origin(format!("models[{i}]"), &r.origin, &r.rule_path);
        models.push(json!({"id": m.id, "ownedBy": m.owned_by, "created": m.created}));
    }

    let used: std::collections::HashSet<usize> = (0..plan.routes.len())
        .filter(|&i| keep(i))
        .flat_map(|i| {
            let r = &plan.routes[i];
            r.backends.iter().chain(&r.mirrors).map(|b| b.backend)
        })
        .collect();
    let mut backends = Vec::new();
    let kept_backends = (0..plan.backends.len()).filter(|i| used.contains(i));
    for (i, bi) in kept_backends.enumerate() {
        let b = &plan.backends[bi];
        origin(format!("backends[{i}]"), &b.origin, "spec");
        for (field, from, path) in &b.part_origins {
            origin(format!("backends[{i}].{field}"), from, path);
        }
        backends.push(b.config_json(auth(bi)));
    }

    let mut routes = Vec::new();
    let kept_routes = (0..plan.routes.len()).filter(|&i| keep(i));
    for (i, r) in kept_routes.map(|i| &plan.routes[i]).enumerate() {
        let p = format!("routes[{i}]");
        origin(p.clone(), &r.origin, &r.rule_path);
        for (j, (_, path)) in r.models.iter().enumerate() {
            origin(format!("{p}.models[{j}]"), &r.origin, path);
        }
        let mut o = Map::new();
        o.insert("name".into(), json!(r.name));
        o.insert(
            "models".into(),
            json!(r.models.iter().map(|(m, _)| m).collect::<Vec<_>>()),
        );
        let mut rbs = Vec::new();
        for (j, b) in r.backends.iter().enumerate() {
            origin(format!("{p}.backends[{j}]"), &r.origin, &b.path);
            rbs.push(json!({
                "name": plan.backends[b.backend].name,
                "weight": b.weight,
                "priority": b.priority,
            }));
        }
        o.insert("backends".into(), Value::Array(rbs));
        if !r.costs.is_empty() {
            let mut costs = Vec::new();
            for (j, c) in r.costs.iter().enumerate() {
                origin(format!("{p}.llmRequestCosts[{j}]"), &r.origin, &c.path);
                let mut co = Map::new();
                co.insert("metadataKey".into(), json!(c.metadata_key));
                co.insert("type".into(), json!(c.kind));
                if let Some(cel) = &c.cel {
                    co.insert("cel".into(), json!(cel));
                }
                costs.push(Value::Object(co));
            }
            o.insert("llmRequestCosts".into(), Value::Array(costs));
        }
        if let Some(rl) = &r.rate_limit {
            if let Some(quota::Origin::Field {
                source,
                resource,
                path,
            }) = &r.rate_limit_from
            {
                origin(
                    format!("{p}.rateLimit"),
                    &(source.clone(), resource.clone()),
                    path,
                );
            }
            o.insert("rateLimit".into(), rl.clone());
        }
        if !r.budgets.is_empty() {
            for (j, (_, from)) in r.budgets.iter().enumerate() {
                if let quota::Origin::Field {
                    source,
                    resource,
                    path,
                } = from
                {
                    origin(
                        format!("{p}.budgets[{j}]"),
                        &(source.clone(), resource.clone()),
                        path,
                    );
                }
            }
            let budgets = r.budgets.iter().map(|(b, _)| b.clone()).collect();
            o.insert("budgets".into(), Value::Array(budgets));
        }
        if let Some(c) = &r.cache {
            o.insert("cache".into(), c.clone());
        }
        if !r.guardrails.is_empty() {
            o.insert("guardrails".into(), Value::Array(r.guardrails.clone()));
        }
        if let Some(ms) = stream_idle_timeout_ms(r) {
            o.insert("streamIdleTimeout".into(), json!(format!("{ms}ms")));
        }
        if !r.metadata.is_empty() {
            let m: Map<String, Value> = r
                .metadata
                .iter()
                .map(|(k, v)| (k.clone(), json!(v)))
                .collect();
            o.insert("metadata".into(), Value::Object(m));
        }
        routes.push(Value::Object(o));
    }

    let mut doc = json!({
        "version": aigw_filter::config::CONFIG_VERSION,
        "models": models,
        "backends": backends,
        "routes": routes,
    });
    if let Some(n) = plan.kg.buffer_limit {
        // kgateway HTTPListenerPolicy buffer: the filter buffers bodies too.
        doc["limits"] = json!({"maxRequestBodyBytes": n});
    }
    if !plan.kg.request_rules.is_empty() {
        // kgateway HTTPListenerPolicy celValidation: the filter runs CEL.
        doc["requestValidation"] = json!({"rules": plan.kg.request_rules});
    }
    if let Some(id) = &plan.identity {
        let mut o = Map::new();
        o.insert("header".into(), json!(id.header));
        if !id.hash {
            o.insert("hash".into(), json!(false));
        }
        doc["identity"] = Value::Object(o);
    }
    if plan.quota.fleet() {
        doc["quota"] = json!({"mode": "fleet"});
    }
    if !plan.guardrails.is_empty() {
        doc["guardrails"] = Value::Array(plan.guardrails.clone());
    }
    (doc, origins)
}

/// The filter ends a stream whose provider went quiet with an error event only if
/// it does so before Envoy's route timeout or stream idle timeout resets the stream:
/// a route whose shortest timeout is under twice the filter's default gets half of it.
fn stream_idle_timeout_ms(r: &PlanRoute) -> Option<u64> {
    let route = r.extra.timeout_ms.unwrap_or(r.timeout_ms);
    let shortest = [Some(route), r.extra.idle_timeout_ms]
        .into_iter()
        .flatten()
        .filter(|&ms| ms > 0)
        .min()?;
    let default = aigw_filter::config::DEFAULT_STREAM_IDLE_TIMEOUT.as_millis() as u64;
    (shortest / 2 < default).then_some((shortest / 2).max(1))
}

/// Points a filter validation error at the resource field it came from.
fn map_filter_error(e: &aigw_filter::ConfigError, origins: &[Origin]) -> Diagnostic {
    let best = origins
        .iter()
        .filter(|o| {
            e.path == o.config_path
                || e.path
                    .strip_prefix(&o.config_path)
                    .is_some_and(|rest| rest.starts_with('.') || rest.starts_with('['))
        })
        .max_by_key(|o| o.config_path.len());
    match best {
        Some(o) => {
            let rest = &e.path[o.config_path.len()..];
            // The fields of costs, backend refs and schemas are named alike in
            // both documents; names of the config's own making are not.
            let path = match rest {
                ".name" if o.path == "spec" => "metadata.name".to_string(),
                _ => format!("{}{rest}", o.path),
            };
            Diagnostic {
                severity: Severity::Error,
                source: o.source.clone(),
                resource: Some(o.resource.clone()),
                path,
                message: format!("refused by the filter ({}): {}", e.path, e.message),
            }
        }
        None => generated_error(format!("refused by the filter: {e}")),
    }
}

/// Backends that all have weight 0 take no traffic: Envoy answers 503.
fn warn_if_no_weight(backends: &[PlanRouteBackend], path: String, r: &mut Reporter<'_>) {
    if !backends.is_empty() && backends.iter().all(|b| b.weight == 0) {
        r.warn(path, "every backend has weight 0: requests get 503");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn origin(config_path: &str, path: &str) -> Origin {
        Origin {
            config_path: config_path.into(),
            source: Source {
                file: "f.yaml".into(),
                document: 2,
            },
            resource: ResourceId {
                kind: "AIGatewayRoute".into(),
                namespace: "ns".into(),
                name: "r".into(),
            },
            path: path.into(),
        }
    }

    #[test]
    fn filter_errors_point_at_the_resource_field() {
        let origins = [
            origin("routes[0]", "spec.rules[0]"),
            origin("routes[0].llmRequestCosts[1]", "spec.llmRequestCosts[1]"),
            origin("routes[10]", "spec.rules[10]"),
            origin("backends[0]", "spec"),
        ];
        let err = |path: &str| aigw_filter::ConfigError {
            path: path.into(),
            message: "bad".into(),
        };
        let d = map_filter_error(&err("routes[0].llmRequestCosts[1].cel"), &origins);
        assert_eq!(d.path, "spec.llmRequestCosts[1].cel");
        assert_eq!(d.source.document, 2);
        assert!(
            d.message.contains("routes[0].llmRequestCosts[1].cel"),
            "{d}"
        );
        // `routes[1...` must not match the `routes[10]` prefix and vice versa.
        assert_eq!(
            map_filter_error(&err("routes[10].name"), &origins).path,
            "spec.rules[10].name"
        );
        assert_eq!(
            map_filter_error(&err("backends[0].name"), &origins).path,
            "metadata.name"
        );
        assert_eq!(
            map_filter_error(&err("backends[0].schema.name"), &origins).path,
            "spec.schema.name"
        );
        let d = map_filter_error(&err("routes[1]"), &origins);
        assert!(d.resource.is_none() && d.is_error(), "{d}");
    }
}
