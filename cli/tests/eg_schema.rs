//! Checks every generated Envoy Gateway manifest (each golden case and example
//! that compiles, both variants) against the upstream Envoy Gateway / Gateway API
//! CRDs in `tests/crds/` (their OpenAPI schemas and CEL rules, see `crd/mod.rs`),
//! and the references between the generated documents.

use std::collections::HashSet;
use std::path::Path;

use aigw_cli::units::parse_duration;
use aigw_cli::{compile_with, manifest, Options};
use serde_json::{json, Value};

mod common;
mod crd;

/// Schema, CEL and cross-document checks of one output variant.
fn validate(docs: &[Value]) -> Vec<String> {
    validate_report(docs, &mut crd::Report::default())
}

/// [`validate`], adding what the CRD checks found (the CEL rules evaluated) to
/// `report`. A CEL rule the evaluator could not evaluate is an error.
fn validate_report(docs: &[Value], report: &mut crd::Report) -> Vec<String> {
    let crds = crd::crds();
    let mut errs = Vec::new();
    let mut present: HashSet<(String, String, String)> = HashSet::new();
    let mut modules: HashSet<String> = HashSet::new();
    // Local paths of the allow-listed modules.
    let mut module_paths: HashSet<String> = HashSet::new();
    // Files the EnvoyProxy mounts into the envoy container (mount path/key), and
    // the environment variables it sets there.
    let mut mounted: HashSet<String> = HashSet::new();
    let mut env_set: HashSet<String> = HashSet::new();
    for (i, d) in docs.iter().enumerate() {
        let key = format!(
            "{} {}",
            d["apiVersion"].as_str().unwrap_or(""),
            d["kind"].as_str().unwrap_or("")
        );
        let p = format!("doc[{i}] {key}");
        let r = crds.check(d, &p);
        errs.extend(r.errors.iter().cloned());
        errs.extend(
            r.unevaluable
                .iter()
                .map(|u| format!("CEL rule not evaluated: {u}")),
        );
        report.merge(r);
        let ns = d["metadata"]["namespace"]
            .as_str()
            .unwrap_or("")
            .to_string();
        let name = d["metadata"]["name"].as_str().unwrap_or("").to_string();
        present.insert((d["kind"].as_str().unwrap_or("").to_string(), ns, name));
        for m in d["spec"]["dynamicModules"].as_array().into_iter().flatten() {
            modules.insert(m["name"].as_str().unwrap_or("").to_string());
            if let Some(path) = m["source"]["local"]["path"].as_str() {
                module_paths.insert(path.to_string());
            }
        }
        if d["kind"] == "EnvoyProxy" {
            let deployment = &d["spec"]["provider"]["kubernetes"]["envoyDeployment"];
            let volumes = deployment["pod"]["volumes"].as_array().cloned();
            let volumes = volumes.unwrap_or_default();
            let mut names = HashSet::new();
            for v in &volumes {
                let name = v["name"].as_str().unwrap_or("");
                if !names.insert(name) {
                    errs.push(format!("{p}: volume {name} listed twice"));
                }
                // The CRD takes any string; the Deployment Envoy Gateway makes
                // from it is refused unless it is a DNS-1123 label.
                let label = !name.is_empty()
                    && name.len() <= 63
                    && name
                        .bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                    && !name.starts_with('-')
                    && !name.ends_with('-');
                if !label {
                    errs.push(format!(
                        "{p}: volume {name}: a pod volume name must be a DNS-1123 label"
                    ));
                }
            }
            for m in deployment["container"]["volumeMounts"]
                .as_array()
                .into_iter()
                .flatten()
            {
                let Some(v) = volumes.iter().find(|v| v["name"] == m["name"]) else {
                    errs.push(format!("{p}: volumeMount {} names no volume", m["name"]));
                    continue;
                };
                if m["readOnly"] != true || m.get("subPath").is_some() {
                    errs.push(format!(
                        "{p}: volumeMount {} must be read-only and without subPath (a subPath mount misses Secret updates)",
                        m["name"]
                    ));
                }
                let dir = m["mountPath"].as_str().unwrap_or("");
                for item in v["secret"]["items"].as_array().into_iter().flatten() {
                    mounted.insert(format!("{dir}/{}", item["path"].as_str().unwrap_or("")));
                }
            }
            for e in deployment["container"]["env"]
                .as_array()
                .into_iter()
                .flatten()
            {
                let name = e["name"].as_str().unwrap_or("").to_string();
                if e["valueFrom"]["secretKeyRef"].is_null() {
                    errs.push(format!("{p}: env {name} does not come from a Secret"));
                }
                if !env_set.insert(name.clone()) {
                    errs.push(format!("{p}: env {name} set twice"));
                }
            }
        }
    }
    // Every cluster a filter config's credential exchanges call exists on each
    // Gateway that config runs on.
    let added = added_clusters(docs);
    for (config, gateways) in configs_by_gateway(docs) {
        for c in auth_clusters(&config) {
            for (gns, g) in &gateways {
                if !added.contains(&(gns.clone(), g.clone(), c.clone())) {
                    errs.push(format!(
                        "cluster {c}, which a filter config calls, is not added to Gateway {gns}/{g} by an EnvoyPatchPolicy"
                    ));
                }
            }
        }
    }
    for (i, d) in docs.iter().enumerate() {
        let p = format!("doc[{i}] {}", d["kind"].as_str().unwrap_or(""));
        let ns = d["metadata"]["namespace"].as_str().unwrap_or("");
        let has = |kind: &str, name: &str| {
            present.contains(&(kind.to_string(), ns.to_string(), name.to_string()))
        };
        // Policies attach to resources of their own namespace that exist here.
        for t in d["spec"]["targetRefs"].as_array().into_iter().flatten() {
            let (kind, name) = (t["kind"].as_str().unwrap(), t["name"].as_str().unwrap());
            if !has(kind, name) {
                errs.push(format!(
                    "{p}: targets {kind} {ns}/{name}, which is not generated"
                ));
            }
        }
        // A dynamic module must be allow-listed in the EnvoyProxy.
        for m in d["spec"]["dynamicModule"].as_array().into_iter().flatten() {
            let name = m["name"].as_str().unwrap_or("");
            if !modules.contains(name) {
                errs.push(format!(
                    "{p}: module '{name}' is not allow-listed in an EnvoyProxy"
                ));
            }
            // The filter config must be one the filter loads, and every credential
            // file it names under the mount directory must be mounted.
            if let Err(e) = aigw_filter::Config::from_json(m["config"].to_string().as_bytes()) {
                errs.push(format!("{p}: filter config refused: {e}"));
            }
            for f in credential_files(&m["config"]) {
                if f.starts_with("/etc/aigw/credentials/") && !mounted.contains(&f) {
                    errs.push(format!(
                        "{p}: credential file {f} is not mounted by the EnvoyProxy"
                    ));
                }
            }
        }
        for m in d["spec"]["wasm"].as_array().into_iter().flatten() {
            if let Some(f) = credential_files(&m["config"]).first() {
                errs.push(format!(
                    "{p}: the wasm config names file {f}, which the wasm build cannot read"
                ));
            }
            // Every credential variable reaches the VM: set on the container and
            // passed in by the wasm entry.
            let keys: Vec<&str> = m["env"]["hostKeys"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .collect();
            match aigw_filter::Config::from_json(m["config"].to_string().as_bytes()) {
                Err(e) => errs.push(format!("{p}: filter config refused: {e}")),
                Ok(c) => {
                    for var in c.secret_env() {
                        if !keys.contains(&var) {
                            errs.push(format!(
                                "{p}: env {var} is not among the wasm entry's env.hostKeys"
                            ));
                        }
                        if !env_set.contains(var) {
                            errs.push(format!("{p}: env {var} is not set by the EnvoyProxy"));
                        }
                    }
                }
            }
        }
        for m in d["spec"]["dynamicModule"]
            .as_array()
            .into_iter()
            .flatten()
            .chain(d["spec"]["wasm"].as_array().into_iter().flatten())
        {
            if m["config"]["routerOnly"] != true {
                errs.push(format!("{p}: the filter config lacks routerOnly: true (Envoy Gateway attaches no upstream instance)"));
            }
        }
        if d["kind"] == "EnvoyPatchPolicy" {
            check_patch_policy(d, docs, &module_paths, &mounted, &p, &mut errs);
        }
        if d["spec"]["rateLimit"].is_object() {
            check_rate_limit(d, docs, &p, &mut errs);
        }
        if d["kind"] == "HTTPRoute" {
            let rules = d["spec"]["rules"].as_array().cloned().unwrap_or_default();
            let total: usize = rules
                .iter()
                .map(|r| r["matches"].as_array().map_or(1, Vec::len))
                .sum();
            if total > 128 {
                errs.push(format!("{p}: {total} matches, at most 128 per HTTPRoute"));
            }
            for (j, r) in rules.iter().enumerate() {
                let t = &r["timeouts"];
                if let (Some(req), Some(be)) = (t["request"].as_str(), t["backendRequest"].as_str())
                {
                    let (req, be) = (parse_duration(req), parse_duration(be));
                    if matches!((req, be), (Ok(req), Ok(be)) if req != 0 && be > req) {
                        errs.push(format!(
                            "{p}.rules[{j}]: backendRequest longer than request"
                        ));
                    }
                }
                for f in r["filters"].as_array().into_iter().flatten() {
                    let e = &f["extensionRef"];
                    if e.is_object()
                        && !has(e["kind"].as_str().unwrap(), e["name"].as_str().unwrap())
                    {
                        errs.push(format!("{p}.rules[{j}]: extensionRef {e} is not generated"));
                    }
                }
                let responds = r["filters"].as_array().is_some_and(|f| {
                    f.iter()
                        .any(|f| f["extensionRef"]["name"] == "aigw-route-not-found")
                });
                if r["backendRefs"].as_array().is_none_or(Vec::is_empty) && !responds {
                    errs.push(format!(
                        "{p}.rules[{j}]: no backendRefs and no direct response"
                    ));
                }
            }
        }
    }
    errs
}

/// A BackendTrafficPolicy's global rate limits: the CRD's CEL rules (a client
/// selector selects something; a Distinct header has no value and is not
/// inverted; a cost is a number or metadata, not both; a response cost only in
/// global rules), and what the charges rely on: each metadata cost is a key the
/// filter writes (`rl_tokens`, `rl_cost`, namespace `io.envoy.ai_gateway`) and the
/// filter config attached to every targeted HTTPRoute is in fleet mode (else it
/// writes no such key), with an `identity` header when a rule counts per value of
/// a header other than the model's.
fn check_rate_limit(d: &Value, docs: &[Value], p: &str, errs: &mut Vec<String>) {
    let rl = &d["spec"]["rateLimit"];
    if rl["type"] != "Global" || !rl["global"].is_object() {
        errs.push(format!(
            "{p}: rateLimit must be of type Global with global rules"
        ));
    }
    let mut distinct = Vec::new();
    for (i, rule) in rl["global"]["rules"]
        .as_array()
        .into_iter()
        .flatten()
        .enumerate()
    {
        let q = format!("{p}.rateLimit.global.rules[{i}]");
        for (j, s) in rule["clientSelectors"]
            .as_array()
            .into_iter()
            .flatten()
            .enumerate()
        {
            let any = ["headers", "methods", "path", "sourceCIDR", "queryParams"]
                .iter()
                .any(|k| s.get(*k).is_some());
            if !any {
                errs.push(format!("{q}.clientSelectors[{j}]: at least one of headers, methods, path, sourceCIDR or queryParams must be specified"));
            }
            for h in s["headers"].as_array().into_iter().flatten() {
                if h["type"] == "Distinct" {
                    if h.get("value").is_some() || h.get("invert").is_some() {
                        errs.push(format!(
                            "{q}: a Distinct header takes no value and no invert"
                        ));
                    }
                    distinct.push(h["name"].as_str().unwrap_or("").to_string());
                } else if h.get("value").is_none() {
                    errs.push(format!("{q}: header {} needs a value", h["name"]));
                }
            }
        }
        for side in ["request", "response"] {
            let c = &rule["cost"][side];
            if c.get("number").is_some() && c.get("metadata").is_some() {
                errs.push(format!(
                    "{q}.cost.{side}: only one of number or metadata can be specified"
                ));
            }
            let from = c["from"].as_str();
            if (from == Some("Metadata")) != c.get("metadata").is_some() {
                errs.push(format!(
                    "{q}.cost.{side}: metadata is set exactly when from is Metadata"
                ));
            }
            if let Some(md) = c.get("metadata") {
                let key = md["key"].as_str().unwrap_or("");
                if md["namespace"] != "io.envoy.ai_gateway"
                    || !["rl_tokens", "rl_cost"].contains(&key)
                {
                    errs.push(format!("{q}.cost.{side}: metadata {md} is not a charge the filter writes (io.envoy.ai_gateway rl_tokens or rl_cost)"));
                }
            }
        }
    }
    // The filter configs attached to the targeted HTTPRoutes.
    let ns = &d["metadata"]["namespace"];
    for t in d["spec"]["targetRefs"].as_array().into_iter().flatten() {
        let configs: Vec<&Value> = docs
            .iter()
            .filter(|e| e["kind"] == "EnvoyExtensionPolicy" && e["metadata"]["namespace"] == *ns)
            .filter(|e| {
                e["spec"]["targetRefs"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .any(|r| r["kind"] == "HTTPRoute" && r["name"] == t["name"])
            })
            .flat_map(|e| {
                e["spec"]["dynamicModule"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .chain(e["spec"]["wasm"].as_array().into_iter().flatten())
                    .map(|m| &m["config"])
            })
            .collect();
        if configs.is_empty() {
            errs.push(format!(
                "{p}: HTTPRoute {} runs no filter to write the charges",
                t["name"]
            ));
        }
        for c in configs {
            if c["quota"]["mode"] != "fleet" {
                errs.push(format!("{p}: the filter config on HTTPRoute {} is not in fleet mode, so it writes no rl_tokens or rl_cost", t["name"]));
            }
            for h in &distinct {
                if c["identity"]["header"].as_str() != Some(h.as_str()) {
                    errs.push(format!("{p}: a rule counts per header {h}, which is not the filter config's identity header"));
                }
            }
        }
    }
}

/// An EnvoyPatchPolicy against the documents it relies on: it targets a Gateway
/// of its own namespace that a generated HTTPRoute attaches to; each operation
/// adds to the cluster Envoy Gateway makes for a rule of such an HTTPRoute
/// (`httproute/<ns>/<name>/rule/<i>`, one with several backendRefs), whose
/// HTTPRoute a BackendTrafficPolicy gives the idle timeout that makes Envoy Gateway
/// write the cluster's HttpProtocolOptions; the upstream filters load an
/// allow-listed module with a config the filter accepts (not routerOnly, its
/// credential files mounted), codec last; endpoint metadata names a backend of
/// that config, on a locality the rule has.
fn check_patch_policy(
    d: &Value,
    docs: &[Value],
    module_paths: &HashSet<String>,
    mounted: &HashSet<String>,
    p: &str,
    errs: &mut Vec<String>,
) {
    let ns = d["metadata"]["namespace"].as_str().unwrap_or("");
    let t = &d["spec"]["targetRef"];
    if t["group"] != "gateway.networking.k8s.io" || t["kind"] != "Gateway" {
        errs.push(format!("{p}: targetRef {t} is not a Gateway"));
    }
    let gateway = t["name"].as_str().unwrap_or("");
    let attaches = |hr: &Value| {
        let hr_ns = hr["metadata"]["namespace"].as_str().unwrap_or("");
        hr["spec"]["parentRefs"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|r| r["name"] == gateway && r["namespace"].as_str().unwrap_or(hr_ns) == ns)
    };
    if !docs.iter().any(|x| x["kind"] == "HTTPRoute" && attaches(x)) {
        errs.push(format!(
            "{p}: no generated HTTPRoute attaches to Gateway {ns}/{gateway}"
        ));
    }
    // Cluster name → backends of its upstream filter config.
    let mut configs: std::collections::HashMap<String, Vec<String>> = Default::default();
    for (k, op) in d["spec"]["jsonPatches"]
        .as_array()
        .into_iter()
        .flatten()
        .enumerate()
    {
        let q = format!("{p}.jsonPatches[{k}]");
        let name = op["name"].as_str().unwrap_or("");
        let kind = op["type"].as_str().unwrap_or("");
        let path = op["operation"]["path"].as_str().unwrap_or("");
        let value = &op["operation"]["value"];
        if op["operation"]["op"] != "add" {
            errs.push(format!("{q}: only add operations are generated"));
        }
        if path.is_empty() {
            check_token_cluster(op, docs, gateway, ns, &q, errs);
            continue;
        }
        let parts: Vec<&str> = name.split('/').collect();
        let rule = match parts.as_slice() {
            ["httproute", hr_ns, hr_name, "rule", i] => docs
                .iter()
                .find(|x| {
                    x["kind"] == "HTTPRoute"
                        && x["metadata"]["namespace"] == *hr_ns
                        && x["metadata"]["name"] == *hr_name
                        && attaches(x)
                })
                .and_then(|hr| hr["spec"]["rules"].get(i.parse::<usize>().ok()?)),
            _ => None,
        };
        let Some(rule) = rule else {
            errs.push(format!(
                "{q}: {name} is not the cluster of a generated HTTPRoute rule attached to Gateway {ns}/{gateway}"
            ));
            continue;
        };
        let refs: Vec<&Value> = rule["backendRefs"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|r| r["weight"].as_u64() != Some(0))
            .collect();
        if refs.len() < 2 {
            errs.push(format!("{q}: {name} has fewer than two backends"));
        }
        let (hr_ns, hr_name) = (parts[1], parts[2]);
        let idle = docs.iter().any(|x| {
            x["kind"] == "BackendTrafficPolicy"
                && x["metadata"]["namespace"] == hr_ns
                && x["spec"]["timeout"]["http"]["connectionIdleTimeout"].is_string()
                && x["spec"]["targetRefs"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .any(|t| t["kind"] == "HTTPRoute" && t["name"] == hr_name)
        });
        if !idle {
            errs.push(format!(
                "{q}: no BackendTrafficPolicy gives HTTPRoute {hr_ns}/{hr_name} an upstream idle timeout, so Envoy Gateway may write no HttpProtocolOptions to add the filters to"
            ));
        }
        let cluster_type = "type.googleapis.com/envoy.config.cluster.v3.Cluster";
        if path
            == "/typed_extension_protocol_options/envoy.extensions.upstreams.http.v3.HttpProtocolOptions/http_filters"
        {
            if kind != cluster_type {
                errs.push(format!("{q}: the upstream filters go to the Cluster"));
            }
            let filters = value.as_array().cloned().unwrap_or_default();
            let codec = filters.last().map(|f| &f["typed_config"]["@type"]);
            if codec.and_then(Value::as_str)
                != Some("type.googleapis.com/envoy.extensions.filters.http.upstream_codec.v3.UpstreamCodec")
            {
                errs.push(format!("{q}: the last upstream filter must be the upstream codec"));
            }
            let dm = filters
                .iter()
                .map(|f| &f["typed_config"])
                .find(|c| c["filter_name"] == "aigw_upstream");
            let Some(dm) = dm else {
                errs.push(format!("{q}: no aigw_upstream filter"));
                continue;
            };
            let file = dm["dynamic_module_config"]["module"]["local"]["filename"]
                .as_str()
                .unwrap_or("");
            if !module_paths.contains(file) {
                errs.push(format!(
                    "{q}: module file '{file}' is not allow-listed in an EnvoyProxy"
                ));
            }
            let config: Value = dm["filter_config"]["value"]
                .as_str()
                .and_then(|s| serde_json::from_str(s).ok())
                .unwrap_or(Value::Null);
            if let Err(e) = aigw_filter::Config::from_json(config.to_string().as_bytes()) {
                errs.push(format!("{q}: upstream filter config refused: {e}"));
            }
            if config.get("routerOnly").is_some_and(|v| v != false) {
                errs.push(format!("{q}: the upstream filter config must not be routerOnly"));
            }
            for f in credential_files(&config) {
                if f.starts_with("/etc/aigw/credentials/") && !mounted.contains(&f) {
                    errs.push(format!(
                        "{q}: credential file {f} is not mounted by the EnvoyProxy"
                    ));
                }
            }
            let names = config["backends"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|b| b["name"].as_str().map(str::to_string))
                .collect();
            configs.insert(name.to_string(), names);
            continue;
        }
        let (want, rest) = if let Some(r) = path.strip_prefix("/load_assignment/endpoints/") {
            (cluster_type, r)
        } else if let Some(r) = path.strip_prefix("/endpoints/") {
            (
                "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment",
                r,
            )
        } else {
            errs.push(format!("{q}: unexpected path {path}"));
            continue;
        };
        if kind != want {
            errs.push(format!("{q}: {path} is not a path of a {kind}"));
        }
        let locality = rest.split('/').next().and_then(|i| i.parse::<usize>().ok());
        if locality.is_none_or(|l| l >= refs.len()) {
            errs.push(format!(
                "{q}: {path} names a locality the rule does not have ({} backends take traffic)",
                refs.len()
            ));
        }
        if rest.ends_with("/metadata/filter_metadata/io.envoy.ai_gateway") {
            let backend = value["backend"].as_str().unwrap_or("");
            let known = configs
                .get(name)
                .is_some_and(|c| c.iter().any(|b| b == backend));
            if !known {
                errs.push(format!(
                    "{q}: backend '{backend}' is not in the upstream filter config of {name}"
                ));
            }
        } else if !(rest.ends_with("/priority") && value.is_u64()) {
            errs.push(format!("{q}: unexpected operation on {path}"));
        }
    }
}

/// The credential files a filter config names (keys, credentials files, and the
/// secrets of credential exchanges: any `file` or `credentialsFile` under `auth`).
fn credential_files(config: &Value) -> Vec<String> {
    fn walk(v: &Value, out: &mut Vec<String>) {
        match v {
            Value::Object(m) => {
                for (k, x) in m {
                    match (k.as_str(), x) {
                        ("file" | "credentialsFile", Value::String(f)) => out.push(f.clone()),
                        _ => walk(x, out),
                    }
                }
            }
            Value::Array(a) => a.iter().for_each(|x| walk(x, out)),
            _ => {}
        }
    }
    let mut out = Vec::new();
    for b in config["backends"].as_array().into_iter().flatten() {
        walk(&b["auth"], &mut out);
    }
    out
}

/// The Envoy clusters a filter config's credential exchanges call (every
/// `cluster` under a backend's `auth`).
fn auth_clusters(config: &Value) -> Vec<String> {
    fn walk(v: &Value, out: &mut Vec<String>) {
        match v {
            Value::Object(m) => {
                for (k, x) in m {
                    match (k.as_str(), x) {
                        ("cluster", Value::String(c)) => out.push(c.clone()),
                        _ => walk(x, out),
                    }
                }
            }
            Value::Array(a) => a.iter().for_each(|x| walk(x, out)),
            _ => {}
        }
    }
    let mut out = Vec::new();
    for b in config["backends"].as_array().into_iter().flatten() {
        walk(&b["auth"], &mut out);
    }
    out
}

/// The filter configs of the generated documents, each with the Gateways
/// (namespace, name) whose Envoy runs it: an EnvoyExtensionPolicy's (dynamic
/// module or wasm) on the Gateways its HTTPRoutes attach to, an EnvoyPatchPolicy's
/// upstream filter config on its Gateway.
fn configs_by_gateway(docs: &[Value]) -> Vec<(Value, Vec<(String, String)>)> {
    let mut out = Vec::new();
    for d in docs {
        let ns = d["metadata"]["namespace"].as_str().unwrap_or("");
        if d["kind"] == "EnvoyExtensionPolicy" {
            let mut gateways = Vec::new();
            for t in d["spec"]["targetRefs"].as_array().into_iter().flatten() {
                let hr = docs.iter().find(|x| {
                    x["kind"] == "HTTPRoute"
                        && x["metadata"]["namespace"] == ns
                        && x["metadata"]["name"] == t["name"]
                });
                for p in hr
                    .and_then(|hr| hr["spec"]["parentRefs"].as_array())
                    .into_iter()
                    .flatten()
                {
                    let g = (
                        p["namespace"].as_str().unwrap_or(ns).to_string(),
                        p["name"].as_str().unwrap_or("").to_string(),
                    );
                    if !gateways.contains(&g) {
                        gateways.push(g);
                    }
                }
            }
            for m in d["spec"]["dynamicModule"]
                .as_array()
                .into_iter()
                .flatten()
                .chain(d["spec"]["wasm"].as_array().into_iter().flatten())
            {
                out.push((m["config"].clone(), gateways.clone()));
            }
        }
        if d["kind"] == "EnvoyPatchPolicy" {
            let gw = (
                ns.to_string(),
                d["spec"]["targetRef"]["name"]
                    .as_str()
                    .unwrap_or("")
                    .to_string(),
            );
            for op in d["spec"]["jsonPatches"].as_array().into_iter().flatten() {
                for f in op["operation"]["value"].as_array().into_iter().flatten() {
                    let c = &f["typed_config"]["filter_config"]["value"];
                    if let Some(c) = c.as_str().and_then(|c| serde_json::from_str(c).ok()) {
                        out.push((c, vec![gw.clone()]));
                    }
                }
            }
        }
    }
    out
}

/// The token clusters EnvoyPatchPolicies add: (Gateway namespace, Gateway, cluster).
fn added_clusters(docs: &[Value]) -> HashSet<(String, String, String)> {
    let mut out = HashSet::new();
    for d in docs.iter().filter(|d| d["kind"] == "EnvoyPatchPolicy") {
        let ns = d["metadata"]["namespace"].as_str().unwrap_or("");
        let gw = d["spec"]["targetRef"]["name"].as_str().unwrap_or("");
        for op in d["spec"]["jsonPatches"].as_array().into_iter().flatten() {
            if op["operation"]["path"] == "" {
                let name = op["operation"]["value"]["name"].as_str().unwrap_or("");
                out.insert((ns.to_string(), gw.to_string(), name.to_string()));
            }
        }
    }
    out
}

/// An operation adding a whole cluster (a token service's): a Cluster resource
/// named as the operation says, reaching one host (TLS with SNI when by name),
/// called by a filter config that runs on this Gateway, added once per Gateway.
fn check_token_cluster(
    op: &Value,
    docs: &[Value],
    gateway: &str,
    ns: &str,
    q: &str,
    errs: &mut Vec<String>,
) {
    let c = &op["operation"]["value"];
    let name = op["name"].as_str().unwrap_or("");
    if op["type"] != "type.googleapis.com/envoy.config.cluster.v3.Cluster" {
        errs.push(format!("{q}: a whole resource is added only as a Cluster"));
    }
    if c["name"] != name || !name.starts_with("aigw_token_") {
        errs.push(format!(
            "{q}: the added cluster must be named '{name}', an aigw_token_* name"
        ));
    }
    if c["load_assignment"]["cluster_name"] != c["name"] {
        errs.push(format!(
            "{q}: load_assignment.cluster_name differs from the cluster's name"
        ));
    }
    let endpoints = c["load_assignment"]["endpoints"][0]["lb_endpoints"]
        .as_array()
        .map_or(0, Vec::len);
    let kind = c["type"].as_str().unwrap_or("");
    if endpoints != 1 || !["LOGICAL_DNS", "STATIC"].contains(&kind) {
        errs.push(format!(
            "{q}: a token cluster reaches one host (LOGICAL_DNS or STATIC)"
        ));
    }
    let host = &c["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]
        ["socket_address"]["address"];
    let tls = &c["transport_socket"]["typed_config"];
    if kind == "LOGICAL_DNS" && !tls.is_null() && tls["sni"] != *host {
        errs.push(format!("{q}: the TLS SNI must be the host, {host}"));
    }
    let called = configs_by_gateway(docs).iter().any(|(config, gateways)| {
        gateways.iter().any(|(gns, g)| gns == ns && g == gateway)
            && auth_clusters(config).iter().any(|x| x == name)
    });
    if !called {
        errs.push(format!(
            "{q}: no filter config running on Gateway {ns}/{gateway} calls cluster {name}"
        ));
    }
    let times = docs
        .iter()
        .filter(|d| {
            d["kind"] == "EnvoyPatchPolicy"
                && d["metadata"]["namespace"] == ns
                && d["spec"]["targetRef"]["name"] == gateway
        })
        .flat_map(|d| {
            d["spec"]["jsonPatches"]
                .as_array()
                .cloned()
                .unwrap_or_default()
        })
        .filter(|o| o["operation"]["path"] == "" && o["name"] == name)
        .count();
    if times != 1 {
        errs.push(format!(
            "{q}: cluster {name} is added {times} times to Gateway {ns}/{gateway} (Envoy refuses a cluster twice)"
        ));
    }
}

fn options(dir: &Path) -> Options {
    common::options(dir)
}

/// Every input set this crate's tests compile: the golden cases and the
/// examples under `envoy-configs/examples/` (each folder's YAML files in name
/// order), with their options.
fn inputs() -> Vec<(String, Vec<aigw_cli::Manifest>, Options)> {
    let mut out = Vec::new();
    for dir in common::golden_cases() {
        let text = std::fs::read_to_string(dir.join("input.yaml")).unwrap();
        let (ms, _) = manifest::parse_yaml("input.yaml", &text);
        out.push((dir.display().to_string(), ms, options(&dir)));
    }
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../envoy-configs/examples");
    let mut dirs: Vec<_> = std::fs::read_dir(&examples)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir())
        .collect();
    dirs.sort();
    assert!(!dirs.is_empty(), "no examples under {}", examples.display());
    for dir in dirs {
        let mut files: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
            .collect();
        files.sort();
        let mut ms = Vec::new();
        for f in files {
            let text = std::fs::read_to_string(&f).unwrap();
            ms.extend(manifest::parse_yaml(&f.display().to_string(), &text).0);
        }
        out.push((dir.display().to_string(), ms, Options::default()));
    }
    out
}

#[test]
fn generated_manifests_match_the_crd_schemas() {
    let mut checked = 0;
    let mut wasm_checked = 0;
    let mut report = crd::Report::default();
    for (name, ms, opts) in inputs() {
        let Ok(out) = compile_with(&ms, &opts) else {
            continue;
        };
        let errs = validate_report(&out.envoy_gateway, &mut report);
        assert!(errs.is_empty(), "{name}:\n{}", errs.join("\n"));
        // The YAML file holds exactly these documents.
        let (back, diags) = manifest::parse_yaml("eg.yaml", &out.envoy_gateway_yaml);
        assert!(diags.is_empty());
        assert_eq!(
            back.iter().map(|m| &m.value).collect::<Vec<_>>(),
            out.envoy_gateway.iter().collect::<Vec<_>>()
        );
        checked += 1;
        if let Some(w) = &out.envoy_gateway_wasm {
            let errs = validate_report(w, &mut report);
            assert!(errs.is_empty(), "{name} (wasm):\n{}", errs.join("\n"));
            // Its EnvoyProxy, if any, only sets credential variables.
            for proxy in w.iter().filter(|d| d["kind"] == "EnvoyProxy") {
                let deployment = &proxy["spec"]["provider"]["kubernetes"]["envoyDeployment"];
                assert!(proxy["spec"]["dynamicModules"].is_null());
                assert!(
                    deployment["pod"].is_null()
                        && deployment["container"]["volumeMounts"].is_null()
                );
                assert!(deployment["container"]["env"].is_array());
            }
            assert!(w.iter().any(|d| d["spec"]["wasm"][0]["rootID"] == "aigw"));
            wasm_checked += 1;
        }
    }
    assert!(
        checked >= 2 && wasm_checked >= 1,
        "{checked} {wasm_checked}"
    );
    // The CEL rules that apply to the generated manifests, each evaluated at
    // least once: `tests/crds/rules-evaluated.txt` lists them (UPDATE_GOLDEN=1
    // rewrites it), so that a change in what applies shows in review.
    let mut listing = String::from(
        "# CEL rules (x-kubernetes-validations) of the upstream CRDs on nodes present in the\n\
         # generated Envoy Gateway manifests, all evaluated by tests/eg_schema.rs with the cel\n\
         # crate: FILE KIND SCHEMA.PATH: RULE ([] an item, {} a map value). Written by\n\
         # UPDATE_GOLDEN=1 cargo test -p aigw-cli --test eg_schema.\n",
    );
    for r in &report.evaluated {
        listing.push_str(r);
        listing.push('\n');
    }
    if !report.transition.is_empty() {
        listing.push_str("# transition rules (oldSelf), which do not apply to a create:\n");
        for r in &report.transition {
            listing.push_str("# ");
            listing.push_str(r);
            listing.push('\n');
        }
    }
    let file = crd::dir().join("rules-evaluated.txt");
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&file, &listing).unwrap();
    }
    assert_eq!(
        std::fs::read_to_string(&file).unwrap_or_default(),
        listing,
        "{} is stale: UPDATE_GOLDEN=1 rewrites it",
        file.display()
    );
}

type Breaker = Box<dyn Fn(&mut Vec<Value>)>;

/// A copy of valid manifests `base`, broken by `broken`, fails the checker with an
/// error containing `want`.
fn assert_rejected(base: &[Value], want: &str, broken: &Breaker) {
    let mut d = base.to_vec();
    broken(&mut d);
    let errs = validate(&d);
    assert!(
        errs.iter().any(|e| e.contains(want)),
        "want '{want}', got {errs:#?}"
    );
}

/// The checker itself finds what it must: each broken copy of a valid output
/// fails for the reason it was broken.
#[test]
fn the_checker_rejects_broken_manifests() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/multi");
    let text = std::fs::read_to_string(dir.join("input.yaml")).unwrap();
    let (ms, _) = manifest::parse_yaml("input.yaml", &text);
    let out = compile_with(&ms, &options(&dir)).unwrap();
    let docs = out.envoy_gateway;
    let cases: Vec<(&str, Breaker)> = vec![
        (
            "spec.dynamicModule[0].filterName: 1 is not of type \"string\"",
            Box::new(move |d| {
                let i = d
                    .iter()
                    .position(|d| d["kind"] == "EnvoyExtensionPolicy")
                    .unwrap();
                d[i]["spec"]["dynamicModule"][0]["filterName"] = json!(1);
            }),
        ),
        (
            "spec.dynamicModules[0]: Additional properties are not allowed ('nme' was unexpected)",
            Box::new(move |d| {
                let m = d[0]["spec"]["dynamicModules"][0].as_object_mut().unwrap();
                let v = m.remove("name").unwrap();
                m.insert("nme".into(), v);
            }),
        ),
        (
            "is not allow-listed",
            Box::new(move |d| {
                d[0]["spec"]["dynamicModules"][0]["name"] = json!("other");
            }),
        ),
        (
            "spec.dynamicModules[0].source: If type is Remote, remote field needs to be set. (rule: self.type == 'Remote' ? has(self.remote) : !has(self.remote))",
            Box::new(move |d| {
                d[0]["spec"]["dynamicModules"][0]["source"]["type"] = json!("Remote");
            }),
        ),
        (
            "spec.rules[0].timeouts.request: \"2 minutes\" does not match",
            Box::new(move |d| {
                let i = d.iter().position(|d| d["kind"] == "HTTPRoute").unwrap();
                d[i]["spec"]["rules"][0]["timeouts"]["request"] = json!("2 minutes");
            }),
        ),
        (
            "backendRequest longer than request",
            Box::new(move |d| {
                let i = d.iter().position(|d| d["kind"] == "HTTPRoute").unwrap();
                d[i]["spec"]["rules"][0]["timeouts"]["backendRequest"] = json!("1h");
            }),
        ),
        (
            "more than 16 items",
            Box::new(move |d| {
                let i = d.iter().position(|d| d["kind"] == "HTTPRoute").unwrap();
                let r = d[i]["spec"]["rules"][0].clone();
                d[i]["spec"]["rules"] = json!(vec![r; 17]);
            }),
        ),
        (
            "targets HTTPRoute team-a/nope",
            Box::new(move |d| {
                let i = d
                    .iter()
                    .position(|d| d["kind"] == "BackendTrafficPolicy")
                    .unwrap();
                d[i]["spec"]["targetRefs"][0]["name"] = json!("nope");
            }),
        ),
        (
            "spec.retry.retryOn.triggers[0]: \"5xxx\" is not one of",
            Box::new(move |d| {
                let i = d
                    .iter()
                    .position(|d| d["kind"] == "BackendTrafficPolicy")
                    .unwrap();
                d[i]["spec"]["retry"]["retryOn"]["triggers"][0] = json!("5xxx");
            }),
        ),
        (
            "filter config refused",
            Box::new(move |d| {
                let i = d
                    .iter()
                    .position(|d| d["kind"] == "EnvoyExtensionPolicy")
                    .unwrap();
                d[i]["spec"]["dynamicModule"][0]["config"]["version"] = json!("v0");
            }),
        ),
        (
            "extensionRef",
            Box::new(move |d| {
                d.retain(|d| d["kind"] != "HTTPRouteFilter");
            }),
        ),
    ];
    assert_eq!(docs[0]["kind"], "EnvoyProxy");
    assert!(validate(&docs).is_empty());
    for (want, broken) in &cases {
        assert_rejected(&docs, want, broken);
    }
}

/// The same for the rate limits of fleet mode.
#[test]
fn the_checker_rejects_broken_rate_limits() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/quota-fleet");
    let text = std::fs::read_to_string(dir.join("input.yaml")).unwrap();
    let (ms, _) = manifest::parse_yaml("input.yaml", &text);
    let docs = compile_with(&ms, &options(&dir)).unwrap().envoy_gateway;
    fn btp(d: &mut [Value]) -> &mut Value {
        d.iter_mut()
            .find(|d| d["kind"] == "BackendTrafficPolicy" && d["spec"]["rateLimit"].is_object())
            .unwrap()
    }
    fn rule(d: &mut [Value]) -> &mut Value {
        &mut btp(d)["spec"]["rateLimit"]["global"]["rules"][0]
    }
    let cases: Vec<(&str, Breaker)> = vec![
        (
            "limit.unit: \"Fortnight\" is not one of",
            Box::new(|d| rule(d)["limit"]["unit"] = json!("Fortnight")),
        ),
        (
            "limit.requests: 4294967296 is greater than the maximum of 4294967295",
            Box::new(|d| rule(d)["limit"]["requests"] = json!(4294967296u64)),
        ),
        (
            "a Distinct header takes no value",
            Box::new(|d| rule(d)["clientSelectors"][0]["headers"][1]["value"] = json!("x")),
        ),
        (
            "at least one of headers",
            Box::new(|d| rule(d)["clientSelectors"][0] = json!({})),
        ),
        (
            "only one of number or metadata",
            Box::new(|d| rule(d)["cost"]["response"]["number"] = json!(1)),
        ),
        (
            "not a charge the filter writes",
            Box::new(|d| rule(d)["cost"]["response"]["metadata"]["key"] = json!("llm_total_token")),
        ),
        (
            "not in fleet mode",
            Box::new(|d| {
                for e in d.iter_mut().filter(|e| e["kind"] == "EnvoyExtensionPolicy") {
                    e["spec"]["dynamicModule"][0]["config"]
                        .as_object_mut()
                        .unwrap()
                        .remove("quota");
                }
            }),
        ),
        (
            "not the filter config's identity header",
            Box::new(|d| rule(d)["clientSelectors"][0]["headers"][1]["name"] = json!("x-user")),
        ),
        (
            "Additional properties are not allowed ('lmit' was unexpected)",
            Box::new(|d| {
                let r = rule(d).as_object_mut().unwrap();
                let v = r.remove("limit").unwrap();
                r.insert("lmit".into(), v);
            }),
        ),
    ];
    assert!(validate(&docs).is_empty(), "{:?}", validate(&docs));
    for (want, broken) in &cases {
        assert_rejected(&docs, want, broken);
    }
}

/// The same for what routerOnly and the credential mounts add: each broken copy
/// of a valid output fails for the reason it was broken.
#[test]
fn the_checker_rejects_broken_mounts_and_router_only_configs() {
    let compiled = |case: &str| {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/golden")
            .join(case);
        let text = std::fs::read_to_string(dir.join("input.yaml")).unwrap();
        let (ms, _) = manifest::parse_yaml("input.yaml", &text);
        compile_with(&ms, &options(&dir)).unwrap()
    };
    let out = compiled("envoy-gateway-router-only");
    let docs = out.envoy_gateway;
    let wasm = out.envoy_gateway_wasm.unwrap();
    let generic = compiled("generic").envoy_gateway;
    let policy = |d: &[Value]| {
        d.iter()
            .position(|d| d["kind"] == "EnvoyExtensionPolicy")
            .unwrap()
    };
    let cases: Vec<(&str, &Vec<Value>, Breaker)> = vec![
        (
            "is not mounted by the EnvoyProxy",
            &docs,
            Box::new(|d| {
                let v = &mut d[0]["spec"]["provider"]["kubernetes"]["envoyDeployment"]["pod"]
                    ["volumes"][0]["secret"]["items"][0]["path"];
                *v = json!("other");
            }),
        ),
        (
            "must be read-only and without subPath",
            &docs,
            Box::new(|d| {
                let m = &mut d[0]["spec"]["provider"]["kubernetes"]["envoyDeployment"]["container"]
                    ["volumeMounts"][0];
                m["subPath"] = json!("apiKey");
            }),
        ),
        (
            "names no volume",
            &docs,
            Box::new(|d| {
                let m = &mut d[0]["spec"]["provider"]["kubernetes"]["envoyDeployment"]["container"]
                    ["volumeMounts"][0];
                m["name"] = json!("nope");
            }),
        ),
        (
            "volume aigw.key: a pod volume name must be a DNS-1123 label",
            &docs,
            Box::new(|d| {
                let deployment = &mut d[0]["spec"]["provider"]["kubernetes"]["envoyDeployment"];
                deployment["pod"]["volumes"][0]["name"] = json!("aigw.key");
                deployment["container"]["volumeMounts"][0]["name"] = json!("aigw.key");
            }),
        ),
        (
            "lacks routerOnly: true",
            &docs,
            Box::new(move |d| {
                let i = policy(d);
                d[i]["spec"]["dynamicModule"][0]["config"]
                    .as_object_mut()
                    .unwrap()
                    .remove("routerOnly");
            }),
        ),
        (
            "which the wasm build cannot read",
            &wasm,
            Box::new(move |d| {
                let i = policy(d);
                d[i]["spec"]["wasm"][0]["config"]["backends"][0]["auth"] =
                    json!({"apiKey": {"file": "/etc/aigw/credentials/ai/openai-key/apiKey"}});
            }),
        ),
        (
            "is not among the wasm entry's env.hostKeys",
            &wasm,
            Box::new(move |d| {
                let i = policy(d);
                d[i]["spec"]["wasm"][0]["env"]["hostKeys"] = json!([]);
            }),
        ),
        (
            "is not set by the EnvoyProxy",
            &wasm,
            Box::new(|d| {
                let env = &mut d[0]["spec"]["provider"]["kubernetes"]["envoyDeployment"]
                    ["container"]["env"];
                *env = json!([]);
            }),
        ),
        (
            "does not come from a Secret",
            &wasm,
            Box::new(|d| {
                let e = &mut d[0]["spec"]["provider"]["kubernetes"]["envoyDeployment"]["container"]
                    ["env"][0];
                e.as_object_mut().unwrap().remove("valueFrom");
                e["value"] = json!("sk-in-plain-sight");
            }),
        ),
        (
            "spec.validation: must specify either CACertificateRefs or WellKnownCACertificates",
            &generic,
            Box::new(|d| {
                let i = d
                    .iter()
                    .position(|d| d["kind"] == "BackendTLSPolicy")
                    .unwrap();
                d[i]["spec"]["validation"]
                    .as_object_mut()
                    .unwrap()
                    .remove("wellKnownCACertificates");
            }),
        ),
    ];
    for d in [&docs, &wasm, &generic] {
        assert!(validate(d).is_empty(), "{:#?}", validate(d));
    }
    for (want, base, broken) in &cases {
        assert_rejected(base, want, broken);
    }
}

/// The same for the EnvoyPatchPolicy of rules with several backends: each broken
/// copy fails for the reason it was broken.
#[test]
fn the_checker_rejects_broken_patch_policies() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/envoy-gateway-patch");
    let text = std::fs::read_to_string(dir.join("input.yaml")).unwrap();
    let (ms, _) = manifest::parse_yaml("input.yaml", &text);
    let docs = compile_with(&ms, &options(&dir)).unwrap().envoy_gateway;
    fn epp(d: &[Value]) -> usize {
        d.iter()
            .position(|d| d["kind"] == "EnvoyPatchPolicy")
            .unwrap()
    }
    // Edits the upstream filter config (a JSON string) of the first operation.
    fn upstream(d: &mut [Value], edit: &dyn Fn(&mut Value)) {
        let i = epp(d);
        let c = &mut d[i]["spec"]["jsonPatches"][0]["operation"]["value"][0]["typed_config"]
            ["filter_config"]["value"];
        let mut config: Value = serde_json::from_str(c.as_str().unwrap()).unwrap();
        edit(&mut config);
        *c = json!(config.to_string());
    }
    let cases: Vec<(&str, Breaker)> = vec![
        (
            "spec.jsonPatches[1].operation.op: \"merge\" is not one of",
            Box::new(move |d| {
                let i = epp(d);
                d[i]["spec"]["jsonPatches"][1]["operation"]["op"] = json!("merge");
            }),
        ),
        (
            "unexpected path load_assignment",
            Box::new(move |d| {
                let i = epp(d);
                d[i]["spec"]["jsonPatches"][1]["operation"]["path"] = json!("load_assignment");
            }),
        ),
        (
            "spec.targetRef: \"name\" is a required property",
            Box::new(move |d| {
                let i = epp(d);
                d[i]["spec"]["targetRef"]
                    .as_object_mut()
                    .unwrap()
                    .remove("name");
            }),
        ),
        (
            "is not a Gateway",
            Box::new(move |d| {
                let i = epp(d);
                d[i]["spec"]["targetRef"]["kind"] = json!("GatewayClass");
            }),
        ),
        (
            "no generated HTTPRoute attaches to Gateway ai/other",
            Box::new(move |d| {
                let i = epp(d);
                d[i]["spec"]["targetRef"]["name"] = json!("other");
            }),
        ),
        (
            "is not the cluster of a generated HTTPRoute rule",
            Box::new(move |d| {
                let i = epp(d);
                d[i]["spec"]["jsonPatches"][2]["name"] = json!("httproute/ai/llm/rule/9");
            }),
        ),
        (
            "has fewer than two backends",
            Box::new(move |d| {
                let i = epp(d);
                d[i]["spec"]["jsonPatches"][2]["name"] = json!("httproute/ai/llm/rule/0");
            }),
        ),
        (
            "the last upstream filter must be the upstream codec",
            Box::new(move |d| {
                let i = epp(d);
                let f = d[i]["spec"]["jsonPatches"][0]["operation"]["value"]
                    .as_array_mut()
                    .unwrap();
                f.pop();
            }),
        ),
        (
            "is not allow-listed in an EnvoyProxy",
            Box::new(move |d| {
                let i = epp(d);
                d[i]["spec"]["jsonPatches"][0]["operation"]["value"][0]["typed_config"]
                    ["dynamic_module_config"]["module"]["local"]["filename"] =
                    json!("/opt/libaigw.so");
            }),
        ),
        (
            "must not be routerOnly",
            Box::new(move |d| upstream(d, &|c| c["routerOnly"] = json!(true))),
        ),
        (
            "upstream filter config refused",
            Box::new(move |d| upstream(d, &|c| c["version"] = json!("v0"))),
        ),
        (
            "is not mounted by the EnvoyProxy",
            Box::new(move |d| {
                upstream(d, &|c| {
                    c["backends"][0]["auth"]["apiKey"]["file"] =
                        json!("/etc/aigw/credentials/ai/other/apiKey")
                })
            }),
        ),
        (
            "is not in the upstream filter config",
            Box::new(move |d| {
                let i = epp(d);
                d[i]["spec"]["jsonPatches"][1]["operation"]["value"]["backend"] = json!("nope");
            }),
        ),
        (
            "names a locality the rule does not have",
            Box::new(move |d| {
                let i = epp(d);
                d[i]["spec"]["jsonPatches"][1]["operation"]["path"] = json!(
                    "/load_assignment/endpoints/2/lb_endpoints/0/metadata/filter_metadata/io.envoy.ai_gateway"
                );
            }),
        ),
        (
            "is not a path of a",
            Box::new(move |d| {
                let i = epp(d);
                d[i]["spec"]["jsonPatches"][1]["type"] =
                    json!("type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment");
            }),
        ),
        (
            "an upstream idle timeout",
            Box::new(move |d| {
                let i = d
                    .iter()
                    .position(|d| d["kind"] == "BackendTrafficPolicy")
                    .unwrap();
                d[i]["spec"].as_object_mut().unwrap().remove("timeout");
            }),
        ),
    ];
    assert!(validate(&docs).is_empty(), "{:#?}", validate(&docs));
    assert_eq!(
        docs.iter()
            .filter(|d| d["kind"] == "EnvoyPatchPolicy")
            .count(),
        2
    );
    for (want, broken) in &cases {
        assert_rejected(&docs, want, broken);
    }
}

/// The same for the EnvoyPatchPolicies adding the token services' clusters: each
/// broken copy fails for the reason it was broken.
#[test]
fn the_checker_rejects_broken_token_clusters() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/aigateway-token-exchange");
    let text = std::fs::read_to_string(dir.join("input.yaml")).unwrap();
    let (ms, _) = manifest::parse_yaml("input.yaml", &text);
    let out = compile_with(&ms, &options(&dir)).unwrap();
    let docs = out.envoy_gateway;
    let wasm = out.envoy_gateway_wasm.unwrap();
    fn tokens(d: &[Value]) -> usize {
        d.iter()
            .position(|d| {
                d["kind"] == "EnvoyPatchPolicy"
                    && d["metadata"]["name"]
                        .as_str()
                        .unwrap()
                        .ends_with("-aigw-token-clusters")
            })
            .unwrap()
    }
    fn eep(d: &[Value]) -> usize {
        d.iter()
            .position(|d| d["kind"] == "EnvoyExtensionPolicy")
            .unwrap()
    }
    let cases: Vec<(&str, &Vec<Value>, Breaker)> = vec![
        (
            "is not added to Gateway ai/gw by an EnvoyPatchPolicy",
            &docs,
            Box::new(|d| {
                let i = tokens(d);
                d.remove(i);
            }),
        ),
        (
            "is not added to Gateway infra/edge by an EnvoyPatchPolicy",
            &wasm,
            Box::new(|d| {
                d.retain(|d| d["metadata"]["name"] != "edge-aigw-token-clusters");
            }),
        ),
        (
            "is not added to Gateway ai/gw",
            &docs,
            Box::new(|d| {
                let i = eep(d);
                d[i]["spec"]["dynamicModule"][0]["config"]["backends"][0]["auth"]["azureEntraId"]
                    ["token"]["cluster"] = json!("aigw_token_elsewhere");
            }),
        ),
        (
            "an aigw_token_* name",
            &docs,
            Box::new(|d| {
                let i = tokens(d);
                d[i]["spec"]["jsonPatches"][0]["operation"]["value"]["name"] = json!("other");
            }),
        ),
        (
            "added 2 times",
            &docs,
            Box::new(|d| {
                let i = tokens(d);
                let op = d[i]["spec"]["jsonPatches"][0].clone();
                d[i]["spec"]["jsonPatches"].as_array_mut().unwrap().push(op);
            }),
        ),
        (
            "the TLS SNI must be the host",
            &docs,
            Box::new(|d| {
                let i = tokens(d);
                d[i]["spec"]["jsonPatches"][0]["operation"]["value"]["transport_socket"]
                    ["typed_config"]["sni"] = json!("example.com");
            }),
        ),
        (
            "reaches one host",
            &docs,
            Box::new(|d| {
                let i = tokens(d);
                d[i]["spec"]["jsonPatches"][0]["operation"]["value"]["type"] = json!("EDS");
            }),
        ),
        (
            "calls cluster aigw_token_unused",
            &docs,
            Box::new(|d| {
                let i = tokens(d);
                let mut op = d[i]["spec"]["jsonPatches"][0].clone();
                op["name"] = json!("aigw_token_unused");
                op["operation"]["value"]["name"] = json!("aigw_token_unused");
                op["operation"]["value"]["load_assignment"]["cluster_name"] =
                    json!("aigw_token_unused");
                d[i]["spec"]["jsonPatches"].as_array_mut().unwrap().push(op);
            }),
        ),
        (
            "is not mounted by the EnvoyProxy",
            &docs,
            Box::new(|d| {
                let i = eep(d);
                d[i]["spec"]["dynamicModule"][0]["config"]["backends"][3]["auth"]
                    ["gcpServiceAccount"]["key"]["file"] =
                    json!("/etc/aigw/credentials/ai/gcp-sa/other.json");
            }),
        ),
        (
            "which the wasm build cannot read",
            &wasm,
            Box::new(|d| {
                let i = eep(d);
                d[i]["spec"]["wasm"][0]["config"]["backends"][0]["auth"]["azureEntraId"]
                    ["clientSecret"] =
                    json!({"file": "/etc/aigw/credentials/ai/azure-client/client-secret"});
            }),
        ),
    ];
    for d in [&docs, &wasm] {
        assert!(validate(d).is_empty(), "{:#?}", validate(d));
        // One policy per Gateway the route attaches to.
        let names: Vec<&str> = d
            .iter()
            .filter(|d| d["kind"] == "EnvoyPatchPolicy")
            .filter_map(|d| d["metadata"]["name"].as_str())
            .filter(|n| n.ends_with("-aigw-token-clusters"))
            .collect();
        assert_eq!(
            names,
            ["gw-aigw-token-clusters", "edge-aigw-token-clusters"]
        );
    }
    for (want, base, broken) in &cases {
        assert_rejected(base, want, broken);
    }
}

/// The CRD checker's own Kubernetes semantics: defaults applied before the CEL
/// rules, reserved property names escaped (`namespace` is `__namespace__` to CEL),
/// list types, metadata, and a rule the evaluator cannot evaluate reported.
#[test]
fn the_crd_checker_follows_the_api_server() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/multi");
    let text = std::fs::read_to_string(dir.join("input.yaml")).unwrap();
    let (ms, _) = manifest::parse_yaml("input.yaml", &text);
    let docs = compile_with(&ms, &options(&dir)).unwrap().envoy_gateway;
    let crds = crd::crds();
    let errors = |d: &Value| {
        let r = crds.check(d, "doc");
        assert!(r.unevaluable.is_empty(), "{:#?}", r.unevaluable);
        r.errors
    };
    let proxy = docs.iter().find(|d| d["kind"] == "EnvoyProxy").unwrap();
    assert_eq!(errors(proxy), Vec::<String>::new());
    // `source.type` defaults to Local, whose rule then wants `local`.
    let mut p = proxy.clone();
    let source = p["spec"]["dynamicModules"][0]["source"]
        .as_object_mut()
        .unwrap();
    source.remove("type");
    assert_eq!(errors(&p), Vec::<String>::new());
    p["spec"]["dynamicModules"][0]["source"]
        .as_object_mut()
        .unwrap()
        .remove("local");
    let e = errors(&p);
    assert!(
        e.iter()
            .any(|e| e.contains("self.type != 'Local' || has(self.local)")),
        "{e:#?}"
    );
    // An int32 field beyond its Go type's range.
    let mut btp = docs
        .iter()
        .find(|d| d["kind"] == "BackendTrafficPolicy")
        .unwrap()
        .clone();
    assert_eq!(errors(&btp), Vec::<String>::new());
    btp["spec"]["retry"]["numRetries"] = json!(3_000_000_000u64);
    let e = errors(&btp);
    assert!(e.iter().any(|e| e.contains("is not a int32")), "{e:#?}");
    // A list of type map with a repeated key.
    let mut p = proxy.clone();
    let m = p["spec"]["dynamicModules"][0].clone();
    p["spec"]["dynamicModules"].as_array_mut().unwrap().push(m);
    let e = errors(&p);
    assert!(
        e.iter().any(|e| e.contains("in a list of type map")),
        "{e:#?}"
    );
    // Two parentRefs that differ only in their namespace are distinct: the rule
    // reads `__namespace__`, which must be the field.
    let mut route = docs
        .iter()
        .find(|d| d["kind"] == "HTTPRoute")
        .unwrap()
        .clone();
    let mut other = route["spec"]["parentRefs"][0].clone();
    other["namespace"] = json!("elsewhere");
    route["spec"]["parentRefs"]
        .as_array_mut()
        .unwrap()
        .push(other);
    assert_eq!(errors(&route), Vec::<String>::new());
    let same = route["spec"]["parentRefs"][0].clone();
    route["spec"]["parentRefs"]
        .as_array_mut()
        .unwrap()
        .push(same);
    let e = errors(&route);
    assert!(e.iter().any(|e| e.contains("spec.parentRefs: ")), "{e:#?}");
    // Metadata the CRD leaves open.
    let mut route2 = docs
        .iter()
        .find(|d| d["kind"] == "HTTPRoute")
        .unwrap()
        .clone();
    route2["metadata"]["name"] = json!("Not_A_Name");
    route2["metadata"]["labels"] = json!({"app": "-x"});
    let e = errors(&route2);
    assert!(
        e.iter().any(|e| e.contains("not a DNS-1123 subdomain")),
        "{e:#?}"
    );
    assert!(
        e.iter().any(|e| e.contains("is not a label value")),
        "{e:#?}"
    );
    // Integers and strings where the schema says int-or-string; a kind no CRD
    // here serves.
    assert!(crd::eval("self.size() == 2", &json!({}), &json!({"a": 1, "b": "x"})).unwrap());
    let unknown = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}});
    assert!(errors(&unknown)[0].contains("no CRD here serves v1 Pod"));
    // A rule the evaluator cannot evaluate is an error, not a pass.
    assert!(crd::eval("self.noSuchFunction()", &json!({}), &json!("x")).is_err());
    assert!(crd::eval("self.size(", &json!({}), &json!("x")).is_err());
}

/// `tests/crds/` holds verbatim copies of the files of the shared reference
/// folder (`../shared/crds` beside the repository), when that folder is there.
#[test]
fn the_crd_copies_are_verbatim() {
    let shared = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/crds");
    if !shared.is_dir() {
        eprintln!("{} not found: copies not compared", shared.display());
        return;
    }
    for f in crd::FILES {
        let ours = std::fs::read(crd::dir().join(f)).unwrap();
        let theirs = std::fs::read(shared.join(f)).unwrap();
        assert!(ours == theirs, "{f} differs from {}", shared.display());
    }
}

/// The inputs of every golden case and example that compiles, against the
/// upstream CRDs of their kinds (see [`crd::Crds::check_input_doc`]). Only the
/// differences listed in `crd::OLDER_FIELDS` and `crd::OLDER_VALUES` are
/// allowed, and each is seen at least once.
#[test]
fn inputs_match_the_upstream_crds() {
    let crds = crd::crds();
    let mut check = crd::InputCheck::default();
    for (name, ms, opts) in inputs() {
        if compile_with(&ms, &opts).is_err() {
            continue;
        }
        for (i, m) in ms.iter().enumerate() {
            let d = common::unredacted(m.clone());
            crds.check_input_doc(&d, &format!("{name}#{i}"), &mut check);
        }
    }
    assert!(check.errors.is_empty(), "{}", check.errors.join("\n"));
    for (j, f) in crd::OLDER_FIELDS.iter().enumerate() {
        assert!(
            check.seen.contains(&j),
            "no input has {f:?} any more: drop it"
        );
    }
    for (j, v) in crd::OLDER_VALUES.iter().enumerate() {
        assert!(
            check.seen.contains(&(j + crd::OLDER_FIELDS.len())),
            "no input has {v:?} any more: drop it"
        );
    }
    // Every input kind but the seed's AIBackend (and the generic routes, which
    // are no Kubernetes resources) has a CRD here, or is a Secret.
    let no_crd: Vec<_> = check
        .kinds
        .iter()
        .filter(|k| k.starts_with("no CRD"))
        .collect();
    assert!(
        no_crd.iter().all(|k| k.ends_with(" AIBackend")),
        "{no_crd:#?}"
    );
    assert!(check.kinds.len() >= 15, "{:#?}", check.kinds);
}
