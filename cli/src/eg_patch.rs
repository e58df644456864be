//! `EnvoyPatchPolicy`: the upstream filter instance for Envoy Gateway rules with
//! several backendRefs, and the clusters of the token services the filter
//! exchanges credentials at.
//!
//! An `EnvoyExtensionPolicy` attaches an HTTP filter to the HTTP connection manager
//! only; Envoy Gateway has no API for a cluster's upstream HTTP filters. What it does
//! have is `EnvoyPatchPolicy` (`gateway.envoyproxy.io/v1alpha1`, off unless the
//! EnvoyGateway configuration sets `extensionApis.enableEnvoyPatchPolicy: true`):
//! RFC 6902 operations applied to the xDS resources it generated. For each rule
//! whose backends need upstream work, the compiler patches that rule's cluster the
//! way the standalone bootstrap builds it: the `aigw_upstream` instance (with a
//! config holding this rule's backends, credentials as mounted files) and
//! `envoy.filters.http.upstream_codec` as the cluster's upstream HTTP filters, and
//! on every endpoint the metadata `io.envoy.ai_gateway: {backend: NAME}` the
//! instance reads to know which backend an attempt goes to. It also sets each
//! locality's priority from the backendRef's `priority`, so a retry or an
//! ejection moves to the next provider as the AIGatewayRoute says.
//!
//! What the patches rely on, read in the source of `envoyproxy/gateway` (its main
//! branch as stored in the project's reference library, newer than v1.7; the
//! names and the patch semantics are the same in the older snapshots seen):
//!
//! - Names (`internal/gatewayapi/helpers.go`): a rule's cluster is
//!   `irRouteDestinationName` = `httproute/<namespace>/<httproute>/rule/<rule
//!   index>`, its xDS routes `httproute/<ns>/<name>/rule/<i>/match/<j>`, and each
//!   backendRef a destination setting `<cluster>/backend/<backendRef index>`;
//!   listeners and their route configurations are `<gateway ns>/<gateway>/<listener>`
//!   (`irListenerName`). The patches need the cluster names only. With the
//!   opt-in `mergeBackends` of newer releases, weighted rules without a fallback
//!   Backend may be moved to shared per-backend clusters (`irBackendClusterName`):
//!   it must stay off for these routes.
//! - One cluster per rule (`internal/gatewayapi/route.go`
//!   `processHTTPRouteRules`; `internal/xds/translator/translator.go`): the rule's
//!   destination settings, in backendRef order, with zero-weight backendRefs left
//!   out, become one cluster unless the rule needs a cluster per setting
//!   (per-backendRef filters, invalid settings, zone-aware routing, or backends of
//!   different address types: `NeedsClusterPerSetting`), in which case the route
//!   takes weighted clusters named after the settings. The compiler never writes
//!   per-backendRef filters; a rule mixing host names and IP addresses is not
//!   patched (warning).
//! - Localities and endpoints (`internal/xds/translator/cluster.go`
//!   `buildXdsClusterLoadAssignment`, `buildWeightedLocalities`): one locality
//!   per destination setting, in order, `locality.region` = the setting's name,
//!   weight = the backendRef's, priority 1 when the Backend has `fallback: true`
//!   (`processBackendDestinationSetting`), one `lb_endpoint` per entry of the
//!   Backend's `spec.endpoints`, in order. Endpoint metadata is only
//!   `envoy.transport_socket_match: {name: <cluster>/tls/<i>}` when the backend has
//!   TLS: nothing that names the backend, so the patch adds it.
//! - Where the endpoints are (`addXdsCluster`): host names make a `STRICT_DNS`
//!   cluster with the endpoints inline (`load_assignment`); IP addresses an `EDS`
//!   cluster whose `ClusterLoadAssignment` (named after the cluster) comes over
//!   ADS. The metadata and priority patches target one or the other.
//! - The upstream HTTP filters live in the cluster's
//!   `typed_extension_protocol_options["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"]`,
//!   which Envoy Gateway writes only when something needs it
//!   (`buildTypedExtensionProtocolOptions`: TLS, HTTP/2, timeouts...). The
//!   generated BackendTrafficPolicy therefore sets
//!   `timeout.http.connectionIdleTimeout: 1h` (Envoy's own default, so nothing
//!   changes) on these routes: with it the options, and the upstream protocol
//!   choice Envoy Gateway makes there, are always present, and the patch only adds
//!   `http_filters`.
//! - How patches apply (`internal/xds/translator/jsonpatch.go`
//!   `processJSONPatches`): after translation, each operation on its own against
//!   the protojson form (proto field names) of the named resource, with
//!   `EnsurePathExistsOnAdd`, so an `add` creates missing parent objects (endpoint
//!   metadata of a backend without TLS); the result is unmarshalled and validated
//!   before it replaces the resource. An operation that fails leaves the resource
//!   as it was and marks the policy's status.
//! - The policy (`api/v1alpha1/envoypatchpolicy_types.go`): `spec.type:
//!   JSONPatch`, `spec.targetRef` a Gateway in the policy's own namespace,
//!   `spec.jsonPatches[]` of `{type: <xDS type URL>, name: <resource name>,
//!   operation: {op, path, value}}`.
//! - The module is loaded as Envoy Gateway loads it for an EnvoyExtensionPolicy
//!   (`internal/xds/translator/dynamicmodule.go`): `dynamic_module_config.module`
//!   from the EnvoyProxy's Local path, the config as a `StringValue`.
//!
//! Token services: Envoy Gateway has no API for a cluster that no route uses, and
//! the filter's HTTP callouts (credential exchanges) name their cluster. An `add`
//! operation at the empty path adds a whole resource (`processJSONPatches`: the
//! value is unmarshalled into the operation's type, validated and appended), so
//! one policy per Gateway adds each token cluster once ([`add_clusters`]): the
//! releases that append added resources would otherwise give Envoy a cluster name
//! twice, and Envoy refuses such an update. TLS is checked against Envoy Gateway's own trust
//! bundle path in the proxy image ([`TRUST_BUNDLE`]).
//!
//! Retries: Envoy Gateway's retry policy (`internal/xds/translator/route.go`
//! `buildRetryPolicy`) has the `previous_hosts` predicate and no
//! `previous_priorities`, so a retry moves to another endpoint of the same
//! priority (weighted rules: another provider), and a fallback priority takes
//! traffic once passive health checks have ejected the primaries (the generated
//! BackendTrafficPolicy's `healthCheck.passive`). The standalone bootstrap moves
//! every retry to the next priority.

use serde_json::{json, Map, Value};

use crate::compile::{PlanBackend, PlanRoute};
use crate::resources::Address;

pub const CLUSTER_TYPE: &str = "type.googleapis.com/envoy.config.cluster.v3.Cluster";
pub const CLA_TYPE: &str = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment";
/// The cluster's typed extension protocol options key holding the upstream filters.
pub const HTTP_OPTIONS: &str = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions";
/// Upstream connection idle timeout the BackendTrafficPolicy sets so that Envoy
/// Gateway writes `HTTP_OPTIONS`: Envoy's own default for upstream connections.
pub const IDLE_TIMEOUT: &str = "1h";

/// How Envoy Gateway delivers a cluster's endpoints.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Endpoints {
    /// Host names: `STRICT_DNS`, endpoints in the Cluster's `load_assignment`.
    Dns,
    /// IP addresses: `EDS`, endpoints in a `ClusterLoadAssignment` named after the
    /// cluster.
    Eds,
}

/// The endpoint kind Envoy Gateway gives a rule's cluster, from the backends that
/// take traffic (weight > 0); `None` when they mix host names and IP addresses
/// (Envoy Gateway then makes one cluster per backendRef, which is not patched).
pub fn endpoints_of(r: &PlanRoute, backends: &[PlanBackend]) -> Option<Endpoints> {
    let mut kinds = r
        .backends
        .iter()
        .filter(|rb| rb.weight > 0)
        .flat_map(|rb| backends[rb.backend].endpoints.iter())
        .map(|e| match e.address {
            Address::Fqdn(_) => Endpoints::Dns,
            Address::Ip(_) => Endpoints::Eds,
        });
    let first = kinds.next()?;
    kinds.all(|k| k == first).then_some(first)
}

/// One backendRef that takes traffic: its locality in the rule's cluster.
#[derive(Debug)]
pub struct Locality {
    /// The filter's backend name, written into each endpoint's metadata.
    pub backend: String,
    /// Entries of the Backend's `spec.endpoints` (one `lb_endpoint` each).
    pub endpoints: usize,
    /// Envoy priority (the backendRef priorities compacted to 0..N).
    pub priority: usize,
}

/// The patches of one rule's cluster.
#[derive(Debug)]
pub struct RulePatch {
    /// `httproute/<ns>/<httproute>/rule/<index>`.
    pub cluster: String,
    pub endpoints: Endpoints,
    pub localities: Vec<Locality>,
    /// The upstream instance's filter config (this rule's backends).
    pub config: Value,
}

/// Envoy Gateway's cluster name for rule `index` of HTTPRoute `namespace/name`.
pub fn cluster_name(namespace: &str, httproute: &str, index: usize) -> String {
    format!("httproute/{namespace}/{httproute}/rule/{index}")
}

/// The localities of rule `r`'s cluster as Envoy Gateway lays them out: one per
/// backendRef with weight > 0, in order.
pub fn localities(r: &PlanRoute, backends: &[PlanBackend]) -> Vec<Locality> {
    let levels: Vec<u32> = r.priority_levels().into_iter().collect();
    r.backends
        .iter()
        .filter(|rb| rb.weight > 0)
        .map(|rb| Locality {
            backend: backends[rb.backend].name.clone(),
            endpoints: backends[rb.backend].endpoints.len(),
            priority: levels.iter().position(|l| *l == rb.priority).unwrap_or(0),
        })
        .collect()
}

/// The cluster's upstream HTTP filters: the module's upstream instance on
/// `config`, then the codec Envoy requires last.
fn upstream_filters(config: &Value, module_path: &str) -> Value {
    crate::bootstrap::upstream_http_filters(json!({
        "@type": "type.googleapis.com/envoy.extensions.filters.http.dynamic_modules.v3.DynamicModuleFilter",
        "dynamic_module_config": {"module": {"local": {"filename": module_path}}},
        "filter_name": "aigw_upstream",
        "filter_config": {
            "@type": "type.googleapis.com/google.protobuf.StringValue",
            "value": config.to_string(),
        },
    }))
}

/// A JSON Pointer token (RFC 6901).
fn token(s: &str) -> String {
    s.replace('~', "~0").replace('/', "~1")
}

fn add(kind: &str, name: &str, path: String, value: Value) -> Value {
    json!({"type": kind, "name": name, "operation": {"op": "add", "path": path, "value": value}})
}

/// The `spec.jsonPatches` of the rules' clusters.
pub fn json_patches(rules: &[RulePatch], module_path: &str) -> Vec<Value> {
    let mut out = Vec::new();
    for r in rules {
        out.push(add(
            CLUSTER_TYPE,
            &r.cluster,
            format!(
                "/typed_extension_protocol_options/{}/http_filters",
                token(HTTP_OPTIONS)
            ),
            upstream_filters(&r.config, module_path),
        ));
        let (kind, prefix) = match r.endpoints {
            Endpoints::Dns => (CLUSTER_TYPE, "/load_assignment/endpoints"),
            Endpoints::Eds => (CLA_TYPE, "/endpoints"),
        };
        for (k, l) in r.localities.iter().enumerate() {
            for m in 0..l.endpoints {
                out.push(add(
                    kind,
                    &r.cluster,
                    format!(
                        "{prefix}/{k}/lb_endpoints/{m}/metadata/filter_metadata/{}",
                        token(aigw_filter::METADATA_NAMESPACE)
                    ),
                    json!({"backend": l.backend}),
                ));
            }
            out.push(add(
                kind,
                &r.cluster,
                format!("{prefix}/{k}/priority"),
                json!(l.priority),
            ));
        }
    }
    out
}

/// The CA bundle of Envoy Gateway's proxy image, as Envoy Gateway names it for
/// its own TLS to well-known CAs (`envoyTrustBundle` in `internal/xds/translator`).
pub const TRUST_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";

/// Operations adding whole clusters (the token services' clusters): an `add` at
/// the empty path makes the value a new resource of its type
/// (`processJSONPatches`), validated like any other; `name` is the cluster's.
pub fn add_clusters(clusters: &[Value]) -> Vec<Value> {
    clusters
        .iter()
        .map(|c| {
            add(
                CLUSTER_TYPE,
                c["name"].as_str().unwrap_or_default(),
                String::new(),
                c.clone(),
            )
        })
        .collect()
}

/// The name of the policy adding the token clusters to `gateway` (one per
/// Gateway, in its namespace: a cluster added twice would reach Envoy twice).
pub fn token_policy_name(gateway: &str) -> String {
    format!("{gateway}-aigw-token-clusters")
}

/// An EnvoyPatchPolicy in the Gateway's namespace (the API requires it) targeting
/// that Gateway.
pub fn policy(
    name: &str,
    namespace: &str,
    gateway: &str,
    labels: &Value,
    patches: &[Value],
) -> Value {
    let mut metadata = Map::new();
    metadata.insert("name".into(), json!(name));
    metadata.insert("namespace".into(), json!(namespace));
    metadata.insert("labels".into(), labels.clone());
    json!({
        "apiVersion": format!("{}/v1alpha1", crate::resources::EG_GROUP),
        "kind": "EnvoyPatchPolicy",
        "metadata": Value::Object(metadata),
        "spec": {
            "targetRef": {"group": crate::resources::GWAPI_GROUP, "kind": "Gateway", "name": gateway},
            "type": "JSONPatch",
            "jsonPatches": patches,
        },
    })
}

/// The policy's name: the route's, with the Gateway's, and the route's namespace
/// first when the policy lives in another (the Gateway's) namespace.
pub fn policy_name(route_ns: &str, route: &str, gateway_ns: &str, gateway: &str) -> String {
    if route_ns == gateway_ns {
        format!("{route}-{gateway}-aigw")
    } else {
        format!("{route_ns}.{route}-{gateway}-aigw")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(endpoints: Endpoints) -> RulePatch {
        RulePatch {
            cluster: "httproute/ai/llm/rule/1".into(),
            endpoints,
            localities: vec![
                Locality {
                    backend: "openai.ai".into(),
                    endpoints: 2,
                    priority: 0,
                },
                Locality {
                    backend: "anthropic.ai@claude".into(),
                    endpoints: 1,
                    priority: 1,
                },
            ],
            config: json!({"version": "v1"}),
        }
    }

    #[test]
    fn patches_address_the_cluster_and_every_endpoint() {
        let p = json_patches(&[rule(Endpoints::Dns)], "/lib/libaigw.so");
        let paths: Vec<(&str, &str)> = p
            .iter()
            .map(|o| {
                (
                    o["type"].as_str().unwrap(),
                    o["operation"]["path"].as_str().unwrap(),
                )
            })
            .collect();
        assert_eq!(
            paths,
            [
                (
                    CLUSTER_TYPE,
                    "/typed_extension_protocol_options/envoy.extensions.upstreams.http.v3.HttpProtocolOptions/http_filters"
                ),
                (
                    CLUSTER_TYPE,
                    "/load_assignment/endpoints/0/lb_endpoints/0/metadata/filter_metadata/io.envoy.ai_gateway"
                ),
                (
                    CLUSTER_TYPE,
                    "/load_assignment/endpoints/0/lb_endpoints/1/metadata/filter_metadata/io.envoy.ai_gateway"
                ),
                (CLUSTER_TYPE, "/load_assignment/endpoints/0/priority"),
                (
                    CLUSTER_TYPE,
                    "/load_assignment/endpoints/1/lb_endpoints/0/metadata/filter_metadata/io.envoy.ai_gateway"
                ),
                (CLUSTER_TYPE, "/load_assignment/endpoints/1/priority"),
            ]
        );
        assert!(p
            .iter()
            .all(|o| o["name"] == "httproute/ai/llm/rule/1" && o["operation"]["op"] == "add"));
        assert_eq!(
            p[4]["operation"]["value"],
            json!({"backend": "anthropic.ai@claude"})
        );
        assert_eq!(p[5]["operation"]["value"], json!(1));
        let filters = p[0]["operation"]["value"].as_array().unwrap();
        assert_eq!(filters.len(), 2);
        let dm = &filters[0]["typed_config"];
        assert_eq!(dm["filter_name"], "aigw_upstream");
        assert_eq!(
            dm["dynamic_module_config"]["module"]["local"]["filename"],
            "/lib/libaigw.so"
        );
        assert_eq!(dm["filter_config"]["value"], r#"{"version":"v1"}"#);
        assert!(filters[1]["typed_config"]["@type"]
            .as_str()
            .unwrap()
            .ends_with("UpstreamCodec"));

        // IP endpoints come over EDS: the endpoint patches go to the
        // ClusterLoadAssignment of the same name, the filters still to the Cluster.
        let p = json_patches(&[rule(Endpoints::Eds)], "/lib/libaigw.so");
        assert_eq!(p[0]["type"], CLUSTER_TYPE);
        assert!(p[1..].iter().all(|o| o["type"] == CLA_TYPE));
        assert_eq!(
            p[1]["operation"]["path"],
            "/endpoints/0/lb_endpoints/0/metadata/filter_metadata/io.envoy.ai_gateway"
        );
    }

    #[test]
    fn whole_clusters_are_added_at_the_empty_path() {
        let ops = add_clusters(&[json!({"name": "aigw_token_a", "type": "LOGICAL_DNS"})]);
        assert_eq!(
            ops,
            [
                json!({"type": CLUSTER_TYPE, "name": "aigw_token_a", "operation": {
                "op": "add", "path": "", "value": {"name": "aigw_token_a", "type": "LOGICAL_DNS"}}})
            ]
        );
        assert_eq!(token_policy_name("gw"), "gw-aigw-token-clusters");
    }

    #[test]
    fn pointer_tokens_and_names() {
        assert_eq!(token("a/b~c"), "a~1b~0c");
        assert_eq!(cluster_name("ai", "llm-1", 3), "httproute/ai/llm-1/rule/3");
        assert_eq!(policy_name("ai", "llm", "ai", "gw"), "llm-gw-aigw");
        assert_eq!(policy_name("ai", "llm", "infra", "gw"), "ai.llm-gw-aigw");
    }
}
