//! Typed views of the input resources, read from manifests with every field checked
//! against the rules the CRDs state (required fields, enums, ranges, exactly-one-of).
//!
//! Reading never stops at the first problem: a resource with errors is still
//! returned with what could be read, so references to it resolve and the user
//! gets each problem once, at its own path.

use serde_json::Value;

use crate::diag::{Diagnostic, Reporter, ResourceId, Source};
use crate::manifest::Manifest;
use crate::read::{at, Obj};
use crate::units::{parse_duration, parse_rfc3339};

/// Envoy AI Gateway's API group.
pub const AIGW_GROUP: &str = "aigateway.envoyproxy.io";
/// Envoy Gateway's API group (its `Backend`).
pub const EG_GROUP: &str = "gateway.envoyproxy.io";
/// Gateway API's group (`BackendTLSPolicy`).
pub const GWAPI_GROUP: &str = "gateway.networking.k8s.io";
/// kgateway's API group: recognised, not compiled yet.
pub const KGATEWAY_GROUP: &str = "gateway.kgateway.dev";

/// The routing header the filter writes the model into.
pub const MODEL_HEADER: &str = aigw_filter::MODEL_HEADER;

/// Identity and origin of a resource.
#[derive(Clone, Debug)]
pub struct Meta {
    pub id: ResourceId,
    pub source: Source,
    /// `metadata.creationTimestamp`, Unix seconds.
    pub created: Option<i64>,
    /// `metadata.annotations` with string values.
    pub annotations: std::collections::BTreeMap<String, String>,
}

#[derive(Debug)]
pub struct HeaderMatch {
    pub name: String,
    pub value: String,
    pub path: String,
}

#[derive(Debug)]
pub struct RuleMatch {
    pub headers: Vec<HeaderMatch>,
}

#[derive(Debug)]
pub struct BackendRef {
    pub name: String,
    pub namespace: Option<String>,
    pub weight: u32,
    pub priority: u32,
    pub model_name_override: Option<String>,
    /// `headerMutation`, `bodyMutation` (v1beta1).
    pub mutations: crate::credentials::Mutations,
    pub path: String,
}

#[derive(Debug)]
pub struct Rule {
    pub path: String,
    pub matches: Vec<RuleMatch>,
    pub backend_refs: Vec<BackendRef>,
    pub request_timeout_ms: Option<u64>,
    pub backend_request_timeout_ms: Option<u64>,
    pub owned_by: Option<String>,
    pub created_at: Option<i64>,
}

#[derive(Clone, Debug)]
pub struct Cost {
    pub metadata_key: String,
    pub kind: String,
    pub cel: Option<String>,
    pub path: String,
}

/// A Gateway the route attaches to (from `targetRefs` or `parentRefs`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParentRef {
    pub name: String,
    pub namespace: Option<String>,
    pub section_name: Option<String>,
    pub port: Option<u16>,
}

#[derive(Debug)]
pub struct AiGatewayRoute {
    pub meta: Meta,
    pub parents: Vec<ParentRef>,
    pub rules: Vec<Rule>,
    pub costs: Vec<Cost>,
}

#[derive(Debug)]
pub struct AiServiceBackend {
    pub meta: Meta,
    pub schema_name: Option<String>,
    pub schema_version: Option<String>,
    /// Envoy Gateway `Backend` (namespace, name).
    pub backend: Option<(String, String)>,
    pub security_policy: Option<String>,
    /// `headerMutation`, `bodyMutation` (current release).
    pub mutations: crate::credentials::Mutations,
}

/// A Secret key a policy needs, and where it is asked for.
#[derive(Debug)]
pub struct SecretUse {
    pub namespace: String,
    pub name: String,
    pub key: &'static str,
    pub path: String,
    /// A Secret with one key may name it otherwise (a key file's name).
    pub any_only_key: bool,
}

/// An OIDC client ID: given, or the `client-id` of a Secret (index in
/// `secrets`).
#[derive(Debug)]
pub enum ClientId {
    Given(String),
    Secret(usize),
}

/// `oidcExchangeToken.oidc` (Envoy Gateway's OIDC type) as Envoy AI Gateway uses
/// it: a client-credentials grant at the provider, whose access token is
/// exchanged. `None`s were reported.
#[derive(Debug)]
pub struct OidcGrant {
    /// `provider.tokenEndpoint`, else `provider.issuer`.
    pub idp: Option<crate::credentials::IdpUrl>,
    pub client_id: Option<ClientId>,
    /// The `client-secret` of a Secret (index in `secrets`).
    pub client_secret: Option<usize>,
    pub scopes: Vec<String>,
}

/// `awsCredentials.oidcExchangeToken`.
#[derive(Debug)]
pub struct AwsOidc {
    pub role_arn: Option<String>,
    pub grant: OidcGrant,
}

/// `gcpCredentials.workloadIdentityFederationConfig`.
#[derive(Debug)]
pub struct GcpWorkloadIdentity {
    /// `//iam.googleapis.com/projects/ID/locations/global/workloadIdentityPools/POOL/providers/PROVIDER`.
    pub audience: Option<String>,
    pub grant: Option<OidcGrant>,
    /// `serviceAccountImpersonation.serviceAccountName`.
    pub service_account: Option<String>,
}

/// What a BackendSecurityPolicy's mechanism gives the compiler to work with.
#[derive(Debug)]
pub enum PolicyCredential {
    /// `apiKey`, `azureAPIKey`, `anthropicAPIKey`: a Secret's `apiKey` (index in
    /// `secrets`) sent in `header`.
    ApiKey {
        secret: Option<usize>,
        header: &'static str,
    },
    /// `awsCredentials`: `file` is the credentials file Secret (index in `secrets`)
    /// and profile.
    Aws {
        region: Option<String>,
        file: Option<(Option<usize>, String)>,
        oidc: Option<AwsOidc>,
    },
    /// `azureCredentials`: a client secret (`client-secret` of a Secret, index in
    /// `secrets`) or an OIDC token for Entra ID.
    Azure {
        tenant_id: Option<String>,
        client_id: Option<String>,
        client_secret: Option<usize>,
        oidc: Option<OidcGrant>,
    },
    /// `gcpCredentials`: where Vertex AI backends are, whether the client's own
    /// credentials go through, and a service-account key (a Secret's, index in
    /// `secrets`) or workload identity federation.
    Gcp {
        project: Option<String>,
        region: Option<String>,
        passthrough: bool,
        key: Option<usize>,
        workload_identity: Option<GcpWorkloadIdentity>,
    },
}

/// `credentialOverride.fromRequestHeaders`.
#[derive(Debug)]
pub struct CredentialOverride {
    pub header: Option<String>,
    pub fallback: bool,
    pub path: String,
}

#[derive(Debug)]
pub struct BackendSecurityPolicy {
    pub meta: Meta,
    pub kind: Option<String>,
    /// v1beta1 `targetRefs`: AIServiceBackend names in the policy's namespace.
    pub targets: Vec<(String, String)>,
    /// Secret keys the mechanism names.
    pub secrets: Vec<SecretUse>,
    pub credential: Option<PolicyCredential>,
    /// The [`crate::credentials::CREDENTIALS_FILE_ANNOTATION`] annotation.
    pub credentials_file: Option<String>,
    pub credential_override: Option<CredentialOverride>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Address {
    Fqdn(String),
    Ip(String),
}

#[derive(Clone, Debug)]
pub struct Endpoint {
    pub address: Address,
    pub port: u16,
}

/// Upstream TLS for a Backend.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Tls {
    /// SNI and the name the certificate must carry; defaults to the FQDN.
    pub hostname: Option<String>,
    /// Skip certificate verification (Backend `tls.insecureSkipVerify`).
    pub insecure: bool,
}

#[derive(Debug)]
pub struct EgBackend {
    pub meta: Meta,
    pub endpoints: Vec<Endpoint>,
    pub tls: Option<Tls>,
    /// `spec.fallback`: Envoy Gateway's only notion of priority (used by the
    /// Envoy Gateway output; the standalone bootstrap uses backendRef priorities).
    pub fallback: bool,
}

#[derive(Debug)]
pub struct BackendTlsPolicy {
    pub meta: Meta,
    /// Envoy Gateway Backend names (same namespace) this policy applies to.
    pub backends: Vec<(String, String)>,
    pub hostname: Option<String>,
}

#[derive(Debug)]
pub struct Secret {
    pub meta: Meta,
    /// Values by key (`Debug` redacts them).
    pub values: crate::manifest::SecretData,
}

/// Everything read from the input, in input order.
#[derive(Debug, Default)]
pub struct Inputs {
    pub routes: Vec<AiGatewayRoute>,
    pub service_backends: Vec<AiServiceBackend>,
    pub security_policies: Vec<BackendSecurityPolicy>,
    pub backends: Vec<EgBackend>,
    pub tls_policies: Vec<BackendTlsPolicy>,
    pub secrets: Vec<Secret>,
    pub generic_routes: Vec<crate::generic::GenericRoute>,
    pub kg: crate::kgateway::Inputs,
    /// Envoy Gateway BackendTrafficPolicies (their `rateLimit`) and Envoy AI
    /// Gateway QuotaPolicies.
    pub eg_traffic: Vec<crate::eaig_quota::TrafficPolicy>,
    pub quota_policies: Vec<crate::eaig_quota::QuotaPolicy>,
}

const METADATA_FIELDS: &[&str] = &["apiVersion", "kind", "metadata", "spec", "status"];

/// Reads every manifest into [`Inputs`], reporting into `diags`.
pub fn read_all(manifests: &[Manifest], diags: &mut Vec<Diagnostic>) -> Inputs {
    let mut inputs = Inputs::default();
    for m in manifests {
        read_one(m, &mut inputs, diags);
    }
    inputs
}

fn read_one(m: &Manifest, inputs: &mut Inputs, diags: &mut Vec<Diagnostic>) {
    let mut r = Reporter {
        source: &m.source,
        resource: None,
        out: diags,
    };
    let Some(top) = m.value.as_object() else {
        r.error("", "a resource must be an object");
        return;
    };
    if crate::generic::is_generic(&m.value) {
        if let Some(g) = crate::generic::read(&m.value, &m.source, &mut r) {
            inputs.generic_routes.push(g);
        }
        return;
    }
    let top = Obj { map: top, path: "" };
    let (Some(api_version), Some(kind)) = (
        top.str_req("apiVersion", &mut r),
        top.str_req("kind", &mut r),
    ) else {
        return;
    };
    let (group, version) = match api_version.split_once('/') {
        Some((g, v)) => (g, v),
        None => ("", api_version),
    };
    let Some(meta) = read_meta(&top, kind, &m.source, &mut r) else {
        return;
    };
    r.resource = Some(meta.id.clone());

    let aigw_version_ok = matches!(version, "v1alpha1" | "v1beta1");
    match (group, kind) {
        (AIGW_GROUP, "AIGatewayRoute" | "AIServiceBackend" | "BackendSecurityPolicy")
            if !aigw_version_ok =>
        {
            r.error(
                "apiVersion",
                format!("unsupported version '{version}', expected v1alpha1 or v1beta1"),
            );
        }
        (AIGW_GROUP, "AIGatewayRoute") => {
            check_top(&top, &[], &mut r);
            if let Some(spec) = spec(&top, &mut r) {
                inputs.routes.push(read_route(meta, spec, &mut r));
            }
        }
        (AIGW_GROUP, "AIServiceBackend") => {
            check_top(&top, &[], &mut r);
            if let Some(spec) = spec(&top, &mut r) {
                inputs
                    .service_backends
                    .push(read_service_backend(meta, spec, &mut r));
            }
        }
        (AIGW_GROUP, "BackendSecurityPolicy") => {
            check_top(&top, &[], &mut r);
            if let Some(spec) = spec(&top, &mut r) {
                inputs
                    .security_policies
                    .push(read_security_policy(meta, spec, &mut r));
            }
        }
        (EG_GROUP, "BackendTrafficPolicy") => {
            check_top(&top, &[], &mut r);
            if let Some(spec) = spec(&top, &mut r) {
                inputs
                    .eg_traffic
                    .push(crate::eaig_quota::read_traffic_policy(meta, spec, &mut r));
            }
        }
        (AIGW_GROUP, "QuotaPolicy") if version != "v1alpha1" => {
            r.error(
                "apiVersion",
                format!("unsupported version '{version}', expected v1alpha1"),
            );
        }
        (AIGW_GROUP, "QuotaPolicy") => {
            check_top(&top, &[], &mut r);
            if let Some(spec) = spec(&top, &mut r) {
                inputs
                    .quota_policies
                    .push(crate::eaig_quota::read_quota_policy(meta, spec, &mut r));
            }
        }
        (EG_GROUP, "Backend") => {
            check_top(&top, &[], &mut r);
            if let Some(spec) = spec(&top, &mut r) {
                inputs.backends.push(read_eg_backend(meta, spec, &mut r));
            }
        }
        (GWAPI_GROUP, "BackendTLSPolicy") => {
            check_top(&top, &[], &mut r);
            if let Some(spec) = spec(&top, &mut r) {
                inputs
                    .tls_policies
                    .push(read_tls_policy(meta, spec, &mut r));
            }
        }
        ("", "Secret") => {
            check_top(&top, &["data", "stringData", "type", "immutable"], &mut r);
            inputs
                .secrets
                .push(read_secret(meta, &top, m.secret.clone(), &mut r));
        }
        (KGATEWAY_GROUP, _) => {
            check_top(&top, &[], &mut r);
            let spec = spec(&top, &mut r);
            crate::kgateway::read(kind, version, meta, spec, &mut inputs.kg, &mut r);
        }
        (GWAPI_GROUP, "HTTPRoute") => {
            check_top(&top, &[], &mut r);
            if let Some(spec) = spec(&top, &mut r) {
                crate::kgateway::read_http_route(meta, spec, &mut inputs.kg, &mut r);
            }
        }
        (AIGW_GROUP, _) => r.warn("", format!("{kind} is not compiled yet; ignored")),
        _ => r.warn(
            "",
            format!("{api_version} {kind} is not used by the compiler; ignored"),
        ),
    }
}

fn check_top(top: &Obj<'_, '_>, extra: &[&str], r: &mut Reporter<'_>) {
    for k in top.map.keys() {
        if !METADATA_FIELDS.contains(&k.as_str()) && !extra.contains(&k.as_str()) {
            r.warn(k.as_str(), "unknown field, ignored");
        }
    }
}

fn spec<'v>(top: &Obj<'v, '_>, r: &mut Reporter<'_>) -> Option<Obj<'v, 'static>> {
    let Some(v) = top.get("spec") else {
        r.error("spec", "is required");
        return None;
    };
    let Value::Object(map) = v else {
        r.error("spec", "must be an object");
        return None;
    };
    Some(Obj { map, path: "spec" })
}

fn read_meta(top: &Obj<'_, '_>, kind: &str, source: &Source, r: &mut Reporter<'_>) -> Option<Meta> {
    let Some(v) = top.get("metadata") else {
        r.error("metadata", "is required");
        return None;
    };
    let Value::Object(map) = v else {
        r.error("metadata", "must be an object");
        return None;
    };
    // Metadata carries many server-set fields; only the ones used are checked.
    let md = Obj {
        map,
        path: "metadata",
    };
    let name = md.str_req("name", r)?;
    let namespace = md
        .str_opt("namespace", r)
        .filter(|s| !s.is_empty())
        .unwrap_or("default");
    r.resource = Some(ResourceId {
        kind: kind.to_string(),
        namespace: namespace.to_string(),
        name: name.to_string(),
    });
    if !is_dns_subdomain(name) {
        r.error(
            "metadata.name",
            format!("'{name}' is not a valid Kubernetes name (lowercase RFC 1123 subdomain)"),
        );
    }
    if !is_dns_subdomain(namespace) {
        r.error(
            "metadata.namespace",
            format!("'{namespace}' is not a valid Kubernetes namespace"),
        );
    }
    let created = md
        .str_opt("creationTimestamp", r)
        .and_then(|s| match parse_rfc3339(s) {
            Ok(t) => Some(t),
            Err(e) => {
                r.error("metadata.creationTimestamp", e);
                None
            }
        });
    let mut annotations = std::collections::BTreeMap::new();
    if let Some(a) = md.get("annotations") {
        match a.as_object() {
            Some(map) => {
                for (k, v) in map {
                    match v.as_str() {
                        Some(v) => {
                            annotations.insert(k.clone(), v.to_string());
                        }
                        None => r.error(format!("metadata.annotations.{k}"), "must be a string"),
                    }
                }
            }
            None => r.error("metadata.annotations", "must be a map of strings"),
        }
    }
    Some(Meta {
        id: ResourceId {
            kind: kind.to_string(),
            namespace: namespace.to_string(),
            name: name.to_string(),
        },
        source: source.clone(),
        created,
        annotations,
    })
}

/// Lowercase RFC 1123 subdomain, as Kubernetes requires of most names.
pub fn is_dns_subdomain(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|label| {
            !label.is_empty()
                && label
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

/// Iterates a list's object items with their paths; non-objects are reported.
fn objects<'v>(
    list: &'v [Value],
    path: &str,
    known: &[&str],
    r: &mut Reporter<'_>,
    mut f: impl FnMut(Obj<'v, '_>, &mut Reporter<'_>),
) {
    for (i, v) in list.iter().enumerate() {
        let p = at(path, i);
        if let Some(o) = Obj::new(v, &p, known, r) {
            f(o, r);
        }
    }
}

fn sub<'v, 'p>(
    parent: &Obj<'v, '_>,
    key: &str,
    path: &'p str,
    known: &[&str],
    r: &mut Reporter<'_>,
) -> Option<Obj<'v, 'p>> {
    Obj::new(parent.get(key)?, path, known, r)
}

pub(crate) fn enum_value(
    o: &Obj<'_, '_>,
    key: &str,
    allowed: &[&str],
    required: bool,
    r: &mut Reporter<'_>,
) -> Option<String> {
    let v = if required {
        o.str_req(key, r)?
    } else {
        o.str_opt(key, r)?
    };
    if !allowed.contains(&v) {
        r.error(
            o.path(key),
            format!(
                "unsupported value '{v}', expected one of: {}",
                allowed.join(", ")
            ),
        );
        return None;
    }
    Some(v.to_string())
}

fn unsupported(o: &Obj<'_, '_>, keys: &[&str], r: &mut Reporter<'_>) {
    for k in keys {
        if o.has(k) {
            r.error(o.path(k), "is not supported by the compiler yet");
        }
    }
}

// ---------------------------------------------------------------- AIGatewayRoute

fn read_route(meta: Meta, spec: Obj<'_, '_>, r: &mut Reporter<'_>) -> AiGatewayRoute {
    let known = [
        "targetRefs",
        "parentRefs",
        "schema",
        "rules",
        "filterConfig",
        "llmRequestCosts",
    ];
    for k in spec.map.keys() {
        if !known.contains(&k.as_str()) {
            r.warn(spec.path(k), "unknown field, ignored");
        }
    }

    let target_refs = spec.list_opt("targetRefs", 128, r);
    if target_refs.is_some_and(<[Value]>::is_empty) {
        r.error("spec.targetRefs", "must have at least 1 item");
    }
    let mut parents = Vec::new();
    objects(
        target_refs.unwrap_or_default(),
        "spec.targetRefs",
        &["group", "kind", "name", "sectionName"],
        r,
        |o, r| {
            let section_name = o.str_opt("sectionName", r).map(str::to_string);
            if let Some(name) = o.str_req("name", r) {
                parents.push(ParentRef {
                    name: name.to_string(),
                    namespace: None,
                    section_name,
                    port: None,
                });
            }
        },
    );
    let parent_refs = spec.list_opt("parentRefs", 16, r);
    objects(
        parent_refs.unwrap_or_default(),
        "spec.parentRefs",
        &["group", "kind", "namespace", "name", "sectionName", "port"],
        r,
        |o, r| {
            if let Some(k) = o.str_opt("kind", r) {
                if k != "Gateway" {
                    r.error(o.path("kind"), "only Gateway is supported");
                }
            }
            let namespace = o
                .str_opt("namespace", r)
                .filter(|s| !s.is_empty())
                .map(str::to_string);
            let section_name = o.str_opt("sectionName", r).map(str::to_string);
            let port = o.int_opt("port", 1, 65535, r).map(|p| p as u16);
            if let Some(name) = o.str_req("name", r) {
                parents.push(ParentRef {
                    name: name.to_string(),
                    namespace,
                    section_name,
                    port,
                });
            }
        },
    );
    if target_refs.is_none() && parent_refs.is_none() {
        r.warn("spec", "no targetRefs or parentRefs: attached to no Gateway in Kubernetes (the standalone bootstrap serves it)");
    }

    if let Some(schema) = sub(&spec, "schema", "spec.schema", &["name", "version"], r) {
        if let Some(name) = schema.str_req("name", r) {
            if name != "OpenAI" {
                r.error(
                    "spec.schema.name",
                    format!("the input schema must be OpenAI, found '{name}'"),
                );
            }
        }
        schema.str_opt("version", r);
    }

    if let Some(fc) = sub(
        &spec,
        "filterConfig",
        "spec.filterConfig",
        &["type", "externalProcessor"],
        r,
    ) {
        enum_value(
            &fc,
            "type",
            &["ExternalProcessor", "DynamicModule"],
            false,
            r,
        );
    }

    let mut costs = Vec::new();
    objects(
        spec.list_opt("llmRequestCosts", 36, r).unwrap_or_default(),
        "spec.llmRequestCosts",
        &["metadataKey", "type", "cel"],
        r,
        |o, r| {
            if let Some(c) = read_cost(&o, r) {
                costs.push(c);
            }
        },
    );
    let mut seen = std::collections::HashMap::new();
    for c in &costs {
        if let Some(first) = seen.insert(c.metadata_key.clone(), c.path.clone()) {
            r.error(
                format!("{}.metadataKey", c.path),
                format!(
                    "duplicate metadata key '{}' (also at {first})",
                    c.metadata_key
                ),
            );
        }
    }

    let mut rules = Vec::new();
    match spec.list_opt("rules", 128, r) {
        None if !spec.has("rules") => r.error("spec.rules", "is required"),
        None => {}
        Some([]) => r.warn("spec.rules", "no rules: this route serves nothing"),
        Some(list) => objects(
            list,
            "spec.rules",
            &[
                "backendRefs",
                "matches",
                "timeouts",
                "modelsOwnedBy",
                "modelsCreatedAt",
                "name",
            ],
            r,
            |o, r| rules.push(read_rule(&o, r)),
        ),
    }
    AiGatewayRoute {
        meta,
        parents,
        rules,
        costs,
    }
}

const COST_TYPES: &[&str] = &["OutputToken", "InputToken", "TotalToken", "CEL"];

fn read_cost(o: &Obj<'_, '_>, r: &mut Reporter<'_>) -> Option<Cost> {
    let key = o.str_req("metadataKey", r);
    let kind = enum_value(o, "type", COST_TYPES, true, r);
    let cel = o.str_opt("cel", r);
    match (kind.as_deref(), cel) {
        (Some("CEL"), None) => r.error(o.path("cel"), "is required when type is CEL"),
        (Some("CEL"), Some("")) => r.error(o.path("cel"), "must not be empty"),
        (Some(k), Some(_)) if k != "CEL" => {
            r.warn(o.path("cel"), format!("ignored: type is {k}, not CEL"))
        }
        _ => {}
    }
    let cel = cel
        .filter(|_| kind.as_deref() == Some("CEL"))
        .map(str::to_string);
    Some(Cost {
        metadata_key: key?.to_string(),
        kind: kind?,
        cel,
        path: o.path.to_string(),
    })
}

fn read_rule(o: &Obj<'_, '_>, r: &mut Reporter<'_>) -> Rule {
    let mut matches = Vec::new();
    objects(
        o.list_opt("matches", 128, r).unwrap_or_default(),
        &o.path("matches"),
        &["headers", "path", "queryParams", "method"],
        r,
        |m, r| {
            unsupported(&m, &["path", "queryParams", "method"], r);
            let mut headers: Vec<HeaderMatch> = Vec::new();
            objects(
                m.list_opt("headers", 16, r).unwrap_or_default(),
                &m.path("headers"),
                &["type", "name", "value"],
                r,
                |h, r| {
                    if let Some(t) =
                        enum_value(&h, "type", &["Exact", "RegularExpression"], false, r)
                    {
                        if t == "RegularExpression" {
                            r.error(h.path("type"), "only Exact header matches are supported");
                        }
                    }
                    let (Some(name), Some(value)) = (h.str_req("name", r), h.str_req("value", r))
                    else {
                        return;
                    };
                    if headers.iter().any(|x| x.name.eq_ignore_ascii_case(name)) {
                        r.error(
                            h.path("name"),
                            format!("duplicate header '{name}' in one match"),
                        );
                        return;
                    }
                    headers.push(HeaderMatch {
                        name: name.to_ascii_lowercase(),
                        value: value.to_string(),
                        path: h.path("value"),
                    });
                },
            );
            matches.push(RuleMatch { headers });
        },
    );

    let mut backend_refs = Vec::new();
    let refs = o.list_opt("backendRefs", 128, r);
    if refs.is_none_or(<[Value]>::is_empty) {
        r.error(
            o.path("backendRefs"),
            "must list at least one backend (a rule without backends cannot serve requests)",
        );
    }
    objects(
        refs.unwrap_or_default(),
        &o.path("backendRefs"),
        &[
            "name",
            "namespace",
            "group",
            "kind",
            "weight",
            "priority",
            "modelNameOverride",
            "headerMutation",
            "bodyMutation",
        ],
        r,
        |b, r| {
            let mutations = crate::credentials::read_mutations(&b, r);
            if b.has("group") || b.has("kind") {
                r.error(
                    b.path("kind"),
                    "only AIServiceBackend references are supported (InferencePool is not yet)",
                );
            }
            let name = b.str_req("name", r);
            let namespace = b.str_opt("namespace", r).filter(|s| !s.is_empty());
            let weight = b.int_opt("weight", 0, 1_000_000, r).unwrap_or(1) as u32;
            let priority = b
                .int_opt("priority", 0, i64::from(u32::MAX), r)
                .unwrap_or(0) as u32;
            let model_name_override = match b.str_opt("modelNameOverride", r) {
                Some("") | None => None,
                Some(m) => Some(m.to_string()),
            };
            if let Some(name) = name {
                backend_refs.push(BackendRef {
                    name: name.to_string(),
                    namespace: namespace.map(str::to_string),
                    weight,
                    priority,
                    model_name_override,
                    mutations,
                    path: b.path.to_string(),
                });
            }
        },
    );

    let (mut request_timeout_ms, mut backend_request_timeout_ms) = (None, None);
    let tpath = o.path("timeouts");
    if let Some(t) = sub(o, "timeouts", &tpath, &["request", "backendRequest"], r) {
        let dur = |key: &str, r: &mut Reporter<'_>| {
            t.str_opt(key, r).and_then(|s| match parse_duration(s) {
                Ok(ms) => Some(ms),
                Err(e) => {
                    r.error(t.path(key), e);
                    None
                }
            })
        };
        request_timeout_ms = dur("request", r);
        backend_request_timeout_ms = dur("backendRequest", r);
        if let (Some(req), Some(be)) = (request_timeout_ms, backend_request_timeout_ms) {
            if req != 0 && (be == 0 || be > req) {
                r.error(
                    t.path("backendRequest"),
                    "must not be longer than timeouts.request",
                );
            }
        }
    }

    let owned_by = o.str_opt("modelsOwnedBy", r).map(str::to_string);
    let created_at = o
        .str_opt("modelsCreatedAt", r)
        .and_then(|s| match parse_rfc3339(s) {
            Ok(t) => Some(t),
            Err(e) => {
                r.error(o.path("modelsCreatedAt"), e);
                None
            }
        });
    o.str_opt("name", r);

    Rule {
        path: o.path.to_string(),
        matches,
        backend_refs,
        request_timeout_ms,
        backend_request_timeout_ms,
        owned_by,
        created_at,
    }
}

// ---------------------------------------------------------------- AIServiceBackend

/// Every schema name Envoy AI Gateway knows (v1alpha1 and the current release).
const SCHEMAS: &[&str] = &[
    "OpenAI",
    "Cohere",
    "AWSBedrock",
    "AzureOpenAI",
    "GCPVertexAI",
    "GCPAnthropic",
    "Anthropic",
    "AWSAnthropic",
];

/// An OpenAI path prefix as the filter's `schema.version` takes it: without
/// surrounding slashes, `/` for none (an empty version means the default `v1`).
pub(crate) fn openai_prefix(p: &str) -> String {
    match p.trim_matches('/') {
        "" => "/".to_string(),
        t => t.to_string(),
    }
}

fn read_service_backend(meta: Meta, spec: Obj<'_, '_>, r: &mut Reporter<'_>) -> AiServiceBackend {
    let known = [
        "schema",
        "backendRef",
        "backendSecurityPolicyRef",
        "timeouts",
        "headerMutation",
        "bodyMutation",
        "responseBodyMutation",
    ];
    for k in spec.map.keys() {
        if !known.contains(&k.as_str()) {
            r.warn(spec.path(k), "unknown field, ignored");
        }
    }
    let mutations = crate::credentials::read_mutations(&spec, r);
    if spec.has("responseBodyMutation") {
        r.warn(
            "spec.responseBodyMutation",
            "not enforced: the filter does not edit response bodies",
        );
    }
    if spec.has("timeouts") {
        r.warn(
            "spec.timeouts",
            "deprecated and ignored: set timeouts on the AIGatewayRoute rule",
        );
    }

    let (mut schema_name, mut schema_version) = (None, None);
    match sub(
        &spec,
        "schema",
        "spec.schema",
        &["name", "version", "prefix"],
        r,
    ) {
        None if !spec.has("schema") => r.error("spec.schema", "is required"),
        None => {}
        Some(s) => {
            schema_name = enum_value(&s, "name", SCHEMAS, true, r);
            let version = s.str_opt("version", r).filter(|v| !v.is_empty());
            let prefix = s.str_opt("prefix", r).filter(|v| !v.is_empty());
            schema_version = match schema_name.as_deref() {
                // The version acts as the prefix (v1alpha1); `prefix` wins.
                Some("OpenAI") => {
                    if prefix.is_some() && version.is_some() {
                        r.warn("spec.schema.version", "ignored: prefix is set");
                    }
                    prefix.or(version).map(openai_prefix)
                }
                Some(n @ ("AzureOpenAI" | "AWSAnthropic" | "GCPAnthropic" | "Cohere")) => {
                    if prefix.is_some() {
                        r.warn("spec.schema.prefix", format!("ignored for schema {n}"));
                    }
                    version.map(str::to_string)
                }
                Some(n) => {
                    if prefix.is_some() {
                        r.error(
                            "spec.schema.prefix",
                            format!("is not supported by the filter for schema {n} (only OpenAI takes a path prefix)"),
                        );
                    }
                    if version.is_some() {
                        r.warn(
                            "spec.schema.version",
                            format!("ignored for schema {n}, as Envoy AI Gateway ignores it"),
                        );
                    }
                    None
                }
                None => None,
            };
        }
    }

    let mut backend = None;
    match sub(
        &spec,
        "backendRef",
        "spec.backendRef",
        &["group", "kind", "name", "namespace", "port"],
        r,
    ) {
        None if !spec.has("backendRef") => r.error("spec.backendRef", "is required"),
        None => {}
        Some(b) => {
            let group = b.str_opt("group", r).unwrap_or("");
            let kind = b.str_opt("kind", r).unwrap_or("Service");
            if group != EG_GROUP || kind != "Backend" {
                r.error(
                    "spec.backendRef",
                    format!("must reference an Envoy Gateway Backend (group {EG_GROUP}, kind Backend), found kind '{kind}' in group '{group}'"),
                );
            }
            if b.has("port") {
                r.warn(
                    "spec.backendRef.port",
                    "ignored: a Backend's endpoints carry their ports",
                );
            }
            let ns = b
                .str_opt("namespace", r)
                .filter(|s| !s.is_empty())
                .unwrap_or(&meta.id.namespace);
            if let Some(name) = b.str_req("name", r) {
                backend = Some((ns.to_string(), name.to_string()));
            }
        }
    }

    let mut security_policy = None;
    if let Some(p) = sub(
        &spec,
        "backendSecurityPolicyRef",
        "spec.backendSecurityPolicyRef",
        &["group", "kind", "name"],
        r,
    ) {
        let group = p.str_opt("group", r).unwrap_or(AIGW_GROUP);
        let kind = p.str_opt("kind", r).unwrap_or("BackendSecurityPolicy");
        if group != AIGW_GROUP || kind != "BackendSecurityPolicy" {
            r.error(
                "spec.backendSecurityPolicyRef",
                format!("must reference a BackendSecurityPolicy of {AIGW_GROUP}"),
            );
        }
        security_policy = p.str_req("name", r).map(str::to_string);
    }

    AiServiceBackend {
        meta,
        schema_name,
        schema_version,
        backend,
        security_policy,
        mutations,
    }
}

// ---------------------------------------------------------------- BackendSecurityPolicy

/// Policy types and the spec field each one requires.
const POLICY_TYPES: &[(&str, &str)] = &[
    ("APIKey", "apiKey"),
    ("AWSCredentials", "awsCredentials"),
    ("AzureCredentials", "azureCredentials"),
    ("AzureAPIKey", "azureAPIKey"),
    ("AnthropicAPIKey", "anthropicAPIKey"),
    ("GCPCredentials", "gcpCredentials"),
];

fn read_security_policy(
    meta: Meta,
    spec: Obj<'_, '_>,
    r: &mut Reporter<'_>,
) -> BackendSecurityPolicy {
    let mut known: Vec<&str> = POLICY_TYPES.iter().map(|(_, f)| *f).collect();
    known.extend(["type", "targetRefs", "credentialOverride"]);
    for k in spec.map.keys() {
        if !known.contains(&k.as_str()) {
            r.warn(spec.path(k), "unknown field, ignored");
        }
    }
    let names: Vec<&str> = POLICY_TYPES.iter().map(|(t, _)| *t).collect();
    let kind = enum_value(&spec, "type", &names, true, r);
    let ns = meta.id.namespace.clone();
    let mut secrets = Vec::new();

    // Exactly the mechanism named by `type`, and no other.
    for (t, field) in POLICY_TYPES {
        let wanted = kind.as_deref() == Some(*t);
        match (wanted, spec.has(field)) {
            (true, false) => r.error(spec.path(field), format!("is required when type is {t}")),
            (false, true) if kind.is_some() => r.error(
                spec.path(field),
                format!(
                    "must not be set when type is {}: only one mechanism per policy",
                    kind.as_deref().unwrap_or_default()
                ),
            ),
            _ => {}
        }
    }

    let mut secret_ref = |o: &Obj<'_, '_>,
                          key: &str,
                          secret_key: &'static str,
                          required: bool,
                          any_only_key: bool,
                          r: &mut Reporter<'_>|
     -> Option<usize> {
        let path = o.path(key);
        match sub(o, key, &path, &["group", "kind", "name", "namespace"], r) {
            None if required && !o.has(key) => {
                r.error(path, "is required");
                None
            }
            None => None,
            Some(s) => {
                if let Some(k) = s.str_opt("kind", r) {
                    if k != "Secret" {
                        r.error(s.path("kind"), "must be Secret");
                    }
                }
                let sns = s
                    .str_opt("namespace", r)
                    .filter(|s| !s.is_empty())
                    .unwrap_or(&ns)
                    .to_string();
                let name = s.str_req("name", r)?;
                secrets.push(SecretUse {
                    namespace: sns,
                    name: name.to_string(),
                    key: secret_key,
                    path: path.clone(),
                    any_only_key,
                });
                Some(secrets.len() - 1)
            }
        }
    };

    let mut credential = None;
    for (field, header) in [
        ("apiKey", "authorization"),
        ("azureAPIKey", "api-key"),
        ("anthropicAPIKey", "x-api-key"),
    ] {
        let path = spec.path(field);
        if let Some(o) = sub(&spec, field, &path, &["secretRef"], r) {
            let secret = secret_ref(&o, "secretRef", "apiKey", true, false, r);
            credential = Some(PolicyCredential::ApiKey { secret, header });
        }
    }
    if let Some(aws) = sub(
        &spec,
        "awsCredentials",
        "spec.awsCredentials",
        &["region", "credentialsFile", "oidcExchangeToken"],
        r,
    ) {
        let region = aws.str_req("region", r).map(str::to_string);
        if aws.has("credentialsFile") && aws.has("oidcExchangeToken") {
            r.error(
                "spec.awsCredentials",
                "only one of credentialsFile or oidcExchangeToken may be set",
            );
        }
        let mut file = None;
        if let Some(cf) = sub(
            &aws,
            "credentialsFile",
            "spec.awsCredentials.credentialsFile",
            &["secretRef", "profile"],
            r,
        ) {
            let secret = secret_ref(&cf, "secretRef", "credentials", true, false, r);
            let profile = cf
                .str_opt("profile", r)
                .filter(|p| !p.is_empty())
                .unwrap_or("default")
                .to_string();
            file = Some((secret, profile));
        }
        let p = "spec.awsCredentials.oidcExchangeToken";
        let mut oidc = None;
        if let Some(o) = sub(
            &aws,
            "oidcExchangeToken",
            p,
            &["oidc", "grantType", "aud", "awsRoleArn"],
            r,
        ) {
            let grant = read_oidc(&o, &mut secret_ref, r);
            let role_arn = o.str_req("awsRoleArn", r).map(str::to_string);
            if let Some(a) = role_arn.as_deref().filter(|a| !is_role_arn(a)) {
                r.error(
                    o.path("awsRoleArn"),
                    format!("'{a}' is not an IAM role ARN (arn:aws:iam::ACCOUNT:role/NAME)"),
                );
            }
            if let Some(reg) = region.as_deref().filter(|reg| !is_region(reg)) {
                r.error(
                    "spec.awsCredentials.region",
                    format!("'{reg}' is not an AWS region name (the STS host sts.REGION.amazonaws.com is made of it)"),
                );
            }
            oidc = grant.map(|grant| AwsOidc { role_arn, grant });
        }
        credential = Some(PolicyCredential::Aws { region, file, oidc });
    }
    if let Some(az) = sub(
        &spec,
        "azureCredentials",
        "spec.azureCredentials",
        &[
            "clientID",
            "tenantID",
            "clientSecretRef",
            "oidcExchangeToken",
        ],
        r,
    ) {
        let client_id = az.str_req("clientID", r).map(str::to_string);
        let tenant_id = az.str_req("tenantID", r).map(str::to_string);
        if let Some(t) = tenant_id.as_deref() {
            if !t
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.'))
            {
                r.error(
                    "spec.azureCredentials.tenantID",
                    format!("'{t}' is not a tenant ID or domain name (it goes into the Entra ID token URL)"),
                );
            }
        }
        if az.has("clientSecretRef") == az.has("oidcExchangeToken") {
            r.error(
                "spec.azureCredentials",
                "exactly one of clientSecretRef or oidcExchangeToken must be specified",
            );
        }
        let client_secret = secret_ref(&az, "clientSecretRef", "client-secret", false, false, r);
        let p = "spec.azureCredentials.oidcExchangeToken";
        let mut oidc = None;
        if let Some(o) = sub(
            &az,
            "oidcExchangeToken",
            p,
            &["oidc", "grantType", "aud"],
            r,
        ) {
            oidc = read_oidc(&o, &mut secret_ref, r);
        }
        credential = Some(PolicyCredential::Azure {
            tenant_id,
            client_id,
            client_secret,
            oidc,
        });
    }
    if let Some(gcp) = sub(
        &spec,
        "gcpCredentials",
        "spec.gcpCredentials",
        &[
            "projectName",
            "region",
            "credentialsFile",
            "workloadIdentityFederationConfig",
            "isPassthrough",
        ],
        r,
    ) {
        let passthrough = gcp.bool_opt("isPassthrough", r).unwrap_or(false);
        let opt = |key: &str, r: &mut Reporter<'_>| match gcp.str_opt(key, r) {
            Some("") => {
                r.error(gcp.path(key), "must not be empty");
                None
            }
            v => v.map(str::to_string),
        };
        let project = opt("projectName", r);
        let region = opt("region", r);
        if !passthrough && (project.is_none() || region.is_none()) {
            r.error(
                "spec.gcpCredentials",
                "projectName and region are required unless isPassthrough is true",
            );
        }
        if gcp.has("credentialsFile") && gcp.has("workloadIdentityFederationConfig") {
            r.error(
                "spec.gcpCredentials",
                "at most one of credentialsFile or workloadIdentityFederationConfig may be specified",
            );
        }
        let mut key = None;
        if let Some(cf) = sub(
            &gcp,
            "credentialsFile",
            "spec.gcpCredentials.credentialsFile",
            &["secretRef"],
            r,
        ) {
            key = secret_ref(&cf, "secretRef", GCP_KEY_FILE, true, true, r);
        }
        let wp = "spec.gcpCredentials.workloadIdentityFederationConfig";
        let mut workload_identity = None;
        if let Some(w) = sub(
            &gcp,
            "workloadIdentityFederationConfig",
            wp,
            &[
                "projectID",
                "workloadIdentityPoolName",
                "workloadIdentityProviderName",
                "serviceAccountImpersonation",
                "oidcExchangeToken",
            ],
            r,
        ) {
            // Parts of the provider's resource name: no '/' of their own.
            let part = |key: &str, r: &mut Reporter<'_>| {
                let v = w.str_req(key, r)?;
                if v.contains(['/', ' ', '?', '#']) {
                    r.error(
                        w.path(key),
                        format!("'{v}' must not contain '/', spaces, '?' or '#': it is part of the workload identity provider's resource name"),
                    );
                    return None;
                }
                Some(v.to_string())
            };
            let (id, pool, provider) = (
                part("projectID", r),
                part("workloadIdentityPoolName", r),
                part("workloadIdentityProviderName", r),
            );
            let audience = match (id, pool, provider) {
                (Some(id), Some(pool), Some(provider)) => Some(format!(
                    "//iam.googleapis.com/projects/{id}/locations/global/workloadIdentityPools/{pool}/providers/{provider}"
                )),
                _ => None,
            };
            let ip = format!("{wp}.serviceAccountImpersonation");
            let service_account = sub(&w, "serviceAccountImpersonation", &ip, &["serviceAccountName"], r)
                .and_then(|i| {
                    let n = i.str_req("serviceAccountName", r)?;
                    if n.contains(['@', '/', ' ']) {
                        r.error(
                            i.path("serviceAccountName"),
                            format!("'{n}' must be the service account's name, without '@', '/' or spaces (its address is NAME@PROJECT.iam.gserviceaccount.com, PROJECT being projectName)"),
                        );
                        return None;
                    }
                    Some(n.to_string())
                });
            let op = format!("{wp}.oidcExchangeToken");
            let grant = match sub(
                &w,
                "oidcExchangeToken",
                &op,
                &["oidc", "grantType", "aud"],
                r,
            ) {
                Some(o) => read_oidc(&o, &mut secret_ref, r),
                None => {
                    if !w.has("oidcExchangeToken") {
                        r.error(op, "is required");
                    }
                    None
                }
            };
            workload_identity = Some(GcpWorkloadIdentity {
                audience,
                grant,
                service_account,
            });
        }
        credential = Some(PolicyCredential::Gcp {
            project,
            region,
            passthrough,
            key,
            workload_identity,
        });
    }

    let mut credential_override = None;
    if let Some(co) = sub(
        &spec,
        "credentialOverride",
        "spec.credentialOverride",
        &["fromRequestHeaders", "fromDynamicMetadata"],
        r,
    ) {
        let (h, m) = (co.has("fromRequestHeaders"), co.has("fromDynamicMetadata"));
        if h == m {
            r.error(
                "spec.credentialOverride",
                "exactly one of fromRequestHeaders or fromDynamicMetadata must be specified",
            );
        }
        if m {
            r.error(
                "spec.credentialOverride.fromDynamicMetadata",
                "is not supported: the filter takes a per-request credential from a request header only",
            );
        }
        let p = "spec.credentialOverride.fromRequestHeaders";
        if let Some(f) = sub(
            &co,
            "fromRequestHeaders",
            p,
            &["header", "fallbackToConfigured"],
            r,
        ) {
            let header = f.str_opt("header", r).filter(|h| !h.is_empty());
            let fallback = f.bool_opt("fallbackToConfigured", r).unwrap_or(true);
            credential_override = Some(CredentialOverride {
                header: header.map(str::to_string),
                fallback,
                path: p.to_string(),
            });
        }
    }

    let mut targets = Vec::new();
    objects(
        spec.list_opt("targetRefs", 16, r).unwrap_or_default(),
        "spec.targetRefs",
        &["group", "kind", "name"],
        r,
        |t, r| {
            let kind = t.str_opt("kind", r).unwrap_or("AIServiceBackend");
            if kind != "AIServiceBackend" {
                r.error(t.path("kind"), "must be AIServiceBackend");
            }
            if let Some(name) = t.str_req("name", r) {
                targets.push((name.to_string(), t.path("name")));
            }
        },
    );

    let credentials_file = meta
        .annotations
        .get(crate::credentials::CREDENTIALS_FILE_ANNOTATION)
        .cloned();
    if let Some(f) = &credentials_file {
        if let Err(e) = crate::credentials::check_file_path(f) {
            r.error(
                format!(
                    "metadata.annotations.{}",
                    crate::credentials::CREDENTIALS_FILE_ANNOTATION
                ),
                e,
            );
        }
    }

    BackendSecurityPolicy {
        meta,
        kind,
        targets,
        secrets,
        credential,
        credentials_file,
        credential_override,
    }
}

/// The Secret key Envoy AI Gateway reads a GCP service-account key file from
/// (a Secret with one key may name it otherwise).
pub const GCP_KEY_FILE: &str = "service_account.json";

/// A Secret reference reader: (object, field, Secret key, required, whether a
/// Secret with one key may name it otherwise, reporter) → index in `secrets`.
type SecretRefReader<'a> = dyn FnMut(&Obj<'_, '_>, &str, &'static str, bool, bool, &mut Reporter<'_>) -> Option<usize>
    + 'a;

/// Fields of Envoy Gateway's OIDC type that only its browser login uses; a
/// client-credentials grant has no use for them (Envoy AI Gateway ignores them
/// too).
const OIDC_LOGIN_FIELDS: &[&str] = &[
    "cookieConfig",
    "cookieDomain",
    "cookieNames",
    "csrfTokenTTL",
    "defaultRefreshTokenTTL",
    "defaultTokenTTL",
    "denyRedirect",
    "disableTokenEncryption",
    "forwardAccessToken",
    "forwardIDToken",
    "logoutPath",
    "passThroughAuthHeader",
    "redirectURL",
    "refreshToken",
    "resources",
];

/// An `oidcExchangeToken` (`o`): its `oidc` as a client-credentials grant.
fn read_oidc(
    o: &Obj<'_, '_>,
    secret_ref: &mut SecretRefReader<'_>,
    r: &mut Reporter<'_>,
) -> Option<OidcGrant> {
    o.str_opt("grantType", r);
    o.str_opt("aud", r);
    let op = o.path("oidc");
    let mut known = vec![
        "provider",
        "clientID",
        "clientIDRef",
        "clientSecret",
        "scopes",
    ];
    known.extend(OIDC_LOGIN_FIELDS);
    let Some(oidc) = sub(o, "oidc", &op, &known, r) else {
        if !o.has("oidc") {
            r.error(op, "is required");
        }
        return None;
    };
    let pp = oidc.path("provider");
    let provider = sub(
        &oidc,
        "provider",
        &pp,
        &[
            "issuer",
            "tokenEndpoint",
            "authorizationEndpoint",
            "endSessionEndpoint",
            "backendRef",
            "backendRefs",
            "backendSettings",
        ],
        r,
    );
    let idp = match &provider {
        None => {
            if !oidc.has("provider") {
                r.error(pp.clone(), "is required");
            }
            None
        }
        Some(p) => {
            for k in ["backendRef", "backendRefs", "backendSettings"] {
                if p.has(k) {
                    r.warn(
                        p.path(k),
                        "ignored: the gateway calls the token endpoint's host directly, through an Envoy cluster of its own (see the bootstrap's aigw_token_* clusters)",
                    );
                }
            }
            let url = |key: &str, r: &mut Reporter<'_>| {
                let u = p.str_opt(key, r).filter(|u| !u.is_empty())?;
                match crate::credentials::Callout::parse(u) {
                    Ok(c) => Some(c),
                    Err(e) => {
                        r.error(p.path(key), e);
                        None
                    }
                }
            };
            // The issuer is required by the CRD even when the token endpoint is
            // given (then only the token endpoint is called).
            let issuer = p.str_req("issuer", r).and_then(|_| url("issuer", r));
            match url("tokenEndpoint", r) {
                Some(t) => Some(crate::credentials::IdpUrl::Token(t)),
                None if p.has("tokenEndpoint") => None,
                None => issuer.map(crate::credentials::IdpUrl::Issuer),
            }
        }
    };
    let client_id = match (oidc.has("clientID"), oidc.has("clientIDRef")) {
        (true, false) => oidc
            .str_req("clientID", r)
            .map(|c| ClientId::Given(c.to_string())),
        (false, true) => {
            secret_ref(&oidc, "clientIDRef", "client-id", true, false, r).map(ClientId::Secret)
        }
        _ => {
            r.error(
                op.clone(),
                "exactly one of clientID or clientIDRef must be specified",
            );
            None
        }
    };
    let client_secret = secret_ref(&oidc, "clientSecret", "client-secret", true, false, r);
    let mut scopes = Vec::new();
    let sp = oidc.path("scopes");
    for (i, v) in oidc
        .list_opt("scopes", 64, r)
        .unwrap_or_default()
        .iter()
        .enumerate()
    {
        match v.as_str() {
            Some(s) if !s.is_empty() && !s.contains(' ') => scopes.push(s.to_string()),
            _ => r.error(
                at(&sp, i),
                "must be a scope name (a non-empty string without spaces)",
            ),
        }
    }
    Some(OidcGrant {
        idp,
        client_id,
        client_secret,
        scopes,
    })
}

/// An IAM role ARN as STS takes it (the filter's rule).
fn is_role_arn(a: &str) -> bool {
    a.starts_with("arn:aws") && a.contains(":role/")
}

/// An AWS region name: lowercase letters, digits and `-`.
fn is_region(r: &str) -> bool {
    !r.is_empty()
        && r.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

// ---------------------------------------------------------------- Envoy Gateway Backend

fn read_eg_backend(meta: Meta, spec: Obj<'_, '_>, r: &mut Reporter<'_>) -> EgBackend {
    let known = ["type", "endpoints", "appProtocols", "fallback", "tls"];
    for k in spec.map.keys() {
        if !known.contains(&k.as_str()) {
            r.warn(spec.path(k), "unknown field, ignored");
        }
    }
    if let Some(t) = enum_value(&spec, "type", &["Endpoints", "DynamicResolver"], false, r) {
        if t == "DynamicResolver" {
            r.error(
                "spec.type",
                "DynamicResolver backends are not supported yet",
            );
        }
    }
    if spec.has("appProtocols") {
        r.warn(
            "spec.appProtocols",
            "ignored: upstream connections use HTTP/1.1",
        );
    }
    // The standalone bootstrap follows backendRef priorities; the Envoy Gateway
    // output checks this flag against them.
    let fallback = spec.bool_opt("fallback", r).unwrap_or(false);

    let mut endpoints = Vec::new();
    let list = spec.list_opt("endpoints", 64, r);
    if list.is_none_or(<[Value]>::is_empty) {
        r.error("spec.endpoints", "must have at least 1 item");
    }
    objects(
        list.unwrap_or_default(),
        "spec.endpoints",
        &["fqdn", "ip", "unix", "hostname", "zone"],
        r,
        |e, r| {
            let set: Vec<&str> = ["fqdn", "ip", "unix"]
                .into_iter()
                .filter(|k| e.has(k))
                .collect();
            if set.len() != 1 {
                r.error(e.path, "exactly one of fqdn, ip or unix must be specified");
            }
            if e.has("unix") {
                r.error(
                    e.path("unix"),
                    "unix domain socket endpoints are not supported yet",
                );
            }
            let port = |o: &Obj<'_, '_>, r: &mut Reporter<'_>| {
                if !o.has("port") {
                    r.error(o.path("port"), "is required");
                }
                o.int_opt("port", 1, 65535, r).map(|p| p as u16)
            };
            let fpath = e.path("fqdn");
            if let Some(f) = sub(&e, "fqdn", &fpath, &["hostname", "port"], r) {
                let host = f.str_req("hostname", r);
                if let Some(h) = host.filter(|h| !is_dns_subdomain(h)) {
                    r.error(
                        f.path("hostname"),
                        format!("'{h}' is not a valid lowercase DNS name"),
                    );
                }
                if let (Some(h), Some(p)) = (host, port(&f, r)) {
                    endpoints.push(Endpoint {
                        address: Address::Fqdn(h.to_string()),
                        port: p,
                    });
                }
            }
            let ipath = e.path("ip");
            if let Some(i) = sub(&e, "ip", &ipath, &["address", "port"], r) {
                let addr = i.str_req("address", r);
                if let Some(a) = addr.filter(|a| a.parse::<std::net::IpAddr>().is_err()) {
                    r.error(i.path("address"), format!("'{a}' is not an IP address"));
                }
                if let (Some(a), Some(p)) = (addr, port(&i, r)) {
                    endpoints.push(Endpoint {
                        address: Address::Ip(a.to_string()),
                        port: p,
                    });
                }
            }
        },
    );
    let fqdns = endpoints
        .iter()
        .filter(|e| matches!(e.address, Address::Fqdn(_)))
        .count();
    if fqdns != 0 && fqdns != endpoints.len() {
        r.error(
            "spec.endpoints",
            "fqdn addresses cannot be mixed with other address types",
        );
    }

    let mut tls = None;
    if let Some(t) = sub(
        &spec,
        "tls",
        "spec.tls",
        &[
            "caCertificateRefs",
            "wellKnownCACertificates",
            "insecureSkipVerify",
        ],
        r,
    ) {
        let insecure = t.bool_opt("insecureSkipVerify", r).unwrap_or(false);
        let well_known = enum_value(&t, "wellKnownCACertificates", &["System"], false, r);
        let ca_refs = t
            .list_opt("caCertificateRefs", 8, r)
            .is_some_and(|l| !l.is_empty());
        if ca_refs {
            r.error(
                "spec.tls.caCertificateRefs",
                "is not supported yet: use wellKnownCACertificates: System",
            );
        }
        if ca_refs && well_known.is_some() {
            r.error(
                "spec.tls",
                "must not contain both caCertificateRefs and wellKnownCACertificates",
            );
        }
        if insecure && (ca_refs || well_known.is_some()) {
            r.error("spec.tls", "must not contain caCertificateRefs or wellKnownCACertificates when insecureSkipVerify is enabled");
        }
        if !insecure && !ca_refs && well_known.is_none() {
            r.error("spec.tls", "one of caCertificateRefs or wellKnownCACertificates must be specified (or insecureSkipVerify)");
        }
        tls = Some(Tls {
            hostname: None,
            insecure,
        });
    }
    EgBackend {
        meta,
        endpoints,
        tls,
        fallback,
    }
}

// ---------------------------------------------------------------- BackendTLSPolicy

fn read_tls_policy(meta: Meta, spec: Obj<'_, '_>, r: &mut Reporter<'_>) -> BackendTlsPolicy {
    for k in spec.map.keys() {
        if !["targetRefs", "validation", "options"].contains(&k.as_str()) {
            r.warn(spec.path(k), "unknown field, ignored");
        }
    }
    let mut backends = Vec::new();
    let list = spec.list_opt("targetRefs", 16, r);
    if list.is_none_or(<[Value]>::is_empty) {
        r.error("spec.targetRefs", "must have at least 1 item");
    }
    objects(
        list.unwrap_or_default(),
        "spec.targetRefs",
        &["group", "kind", "name", "sectionName"],
        r,
        |t, r| {
            let group = t.str_opt("group", r).unwrap_or("");
            let kind = t.str_opt("kind", r).unwrap_or("");
            let name = t.str_req("name", r);
            if let (EG_GROUP, "Backend", Some(n)) = (group, kind, name) {
                backends.push((n.to_string(), t.path("name")));
            }
        },
    );
    let mut hostname = None;
    match sub(
        &spec,
        "validation",
        "spec.validation",
        &[
            "caCertificateRefs",
            "wellKnownCACertificates",
            "hostname",
            "subjectAltNames",
        ],
        r,
    ) {
        None if !spec.has("validation") => r.error("spec.validation", "is required"),
        None => {}
        Some(v) => {
            hostname = v.str_req("hostname", r).map(str::to_string);
            let well_known = enum_value(&v, "wellKnownCACertificates", &["System"], false, r);
            let ca_refs = v
                .list_opt("caCertificateRefs", 8, r)
                .is_some_and(|l| !l.is_empty());
            if ca_refs {
                r.error(
                    "spec.validation.caCertificateRefs",
                    "is not supported yet: use wellKnownCACertificates: System",
                );
            } else if well_known.is_none() {
                r.error(
                    "spec.validation",
                    "exactly one of caCertificateRefs or wellKnownCACertificates must be specified",
                );
            }
            if v.has("subjectAltNames") {
                r.warn(
                    "spec.validation.subjectAltNames",
                    "ignored: the certificate is checked against hostname",
                );
            }
        }
    }
    BackendTlsPolicy {
        meta,
        backends,
        hostname,
    }
}

// ---------------------------------------------------------------- Secret

fn read_secret(
    meta: Meta,
    top: &Obj<'_, '_>,
    values: Option<crate::manifest::SecretData>,
    r: &mut Reporter<'_>,
) -> Secret {
    for field in ["data", "stringData"] {
        match top.get(field) {
            None | Some(Value::Object(_)) => {}
            // Never echo the value: it may be the secret itself.
            Some(_) => r.error(field, "must be a map of keys to values"),
        }
    }
    let values = values.unwrap_or_default();
    for (k, v) in &values {
        if let crate::manifest::SecretEntry::Unreadable { field, why } = v {
            r.error(format!("{field}.{k}"), *why);
        }
    }
    Secret { meta, values }
}
