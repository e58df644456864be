//! The upstream CustomResourceDefinitions in `tests/crds/` (copied verbatim, see
//! its README), and a checker of Kubernetes documents against them, as the API
//! server would check a create:
//!
//! - the served version's `openAPIV3Schema`, turned into a JSON Schema (draft 4,
//!   which OpenAPI 3.0's schema objects follow) and checked with the `jsonschema`
//!   crate. Kubernetes' extensions: an object with `properties` and without
//!   `x-kubernetes-preserve-unknown-fields: true` gets `additionalProperties:
//!   false` (the API server prunes unknown fields, which would silently drop what
//!   the compiler wrote: here it is an error, as `kubectl apply
//!   --validate=strict` makes it); `x-kubernetes-int-or-string` takes an integer
//!   or a string; `nullable` adds `null`; `int32`/`int64` formats are range checks;
//! - structural defaults (`default`) applied first, as the API server does;
//! - `x-kubernetes-list-type: map` (unique keys) and `set` (unique items);
//! - every `x-kubernetes-validations` rule whose node is present, evaluated with
//!   the `cel` crate with Kubernetes' strings extension (`self` is the node's
//!   value). A rule the evaluator cannot evaluate (parse or runtime error) is
//!   reported, never passed. Transition rules (`oldSelf`) do not apply to a
//!   create and are only counted;
//! - `metadata`, which the CRDs leave open (`type: object`): name, namespace,
//!   labels and annotations only, with the API server's formats.

// Each test file is its own crate and uses only some of these.
#![allow(dead_code)]

use std::collections::{BTreeSet, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use serde::Deserialize;
use serde_json::{json, Map, Value};

/// The CRD files under `tests/crds/`.
pub const FILES: &[&str] = &[
    "envoy-gateway/gateway.envoyproxy.io_backends.yaml",
    "envoy-gateway/gateway.envoyproxy.io_backendtrafficpolicies.yaml",
    "envoy-gateway/gateway.envoyproxy.io_envoyextensionpolicies.yaml",
    "envoy-gateway/gateway.envoyproxy.io_envoypatchpolicies.yaml",
    "envoy-gateway/gateway.envoyproxy.io_envoyproxies.yaml",
    "envoy-gateway/gateway.envoyproxy.io_httproutefilters.yaml",
    "gateway-api/standard/gateway.networking.k8s.io_httproutes.yaml",
    "gateway-api/standard/gateway.networking.k8s.io_backendtlspolicies.yaml",
    "gateway-api/experimental/gateway.networking.k8s.io_httproutes.yaml",
    "gateway-api/experimental/gateway.networking.k8s.io_backendtlspolicies.yaml",
    "envoy-ai-gateway/aigateway.envoyproxy.io_aigatewayroutes.yaml",
    "envoy-ai-gateway/aigateway.envoyproxy.io_aiservicebackends.yaml",
    "envoy-ai-gateway/aigateway.envoyproxy.io_backendsecuritypolicies.yaml",
    "envoy-ai-gateway/aigateway.envoyproxy.io_quotapolicies.yaml",
    "kgateway/gateway.kgateway.dev_backends.yaml",
    "kgateway/gateway.kgateway.dev_directresponses.yaml",
    "kgateway/gateway.kgateway.dev_gatewayextensions.yaml",
    "kgateway/gateway.kgateway.dev_gatewayparameters.yaml",
    "kgateway/gateway.kgateway.dev_trafficpolicies.yaml",
    "kgateway/historical/36a5c7cb50c7/gateway.kgateway.dev_httplistenerpolicies.yaml",
    "kgateway/historical/e575ec754390/gateway.kgateway.dev_backends.yaml",
];

pub fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/crds")
}

/// One served version of one CRD.
pub struct Schema {
    /// The CRD file, relative to `tests/crds/`.
    pub file: String,
    /// The `openAPIV3Schema` as the CRD has it.
    pub root: Value,
    validator: jsonschema::Validator,
}

pub struct Crds {
    /// (apiVersion, kind) → the schemas of every file serving it (Gateway API's
    /// standard and experimental channels both).
    by_kind: HashMap<(String, String), Vec<Schema>>,
}

/// What checking some documents found.
#[derive(Default)]
pub struct Report {
    pub errors: Vec<String>,
    /// CEL rules on present nodes that the evaluator could not evaluate.
    pub unevaluable: Vec<String>,
    /// Rules evaluated (to true or false): `FILE KIND SCHEMA.PATH: RULE`.
    pub evaluated: BTreeSet<String>,
    /// Transition rules on present nodes, which do not apply to a create.
    pub transition: BTreeSet<String>,
}

impl Report {
    pub fn merge(&mut self, other: Report) {
        self.errors.extend(other.errors);
        self.unevaluable.extend(other.unevaluable);
        self.evaluated.extend(other.evaluated);
        self.transition.extend(other.transition);
    }
}

pub fn crds() -> &'static Crds {
    static CRDS: OnceLock<Crds> = OnceLock::new();
    CRDS.get_or_init(load)
}

fn load() -> Crds {
    let mut by_kind: HashMap<(String, String), Vec<Schema>> = HashMap::new();
    for file in FILES {
        let text = std::fs::read_to_string(dir().join(file)).unwrap();
        for doc in serde_norway::Deserializer::from_str(&text) {
            let crd = Value::deserialize(doc).unwrap();
            if crd.is_null() {
                continue;
            }
            assert_eq!(crd["kind"], "CustomResourceDefinition", "{file}");
            let group = crd["spec"]["group"].as_str().unwrap();
            let kind = crd["spec"]["names"]["kind"].as_str().unwrap();
            for v in crd["spec"]["versions"].as_array().unwrap() {
                if v["served"] != true {
                    continue;
                }
                let root = v["schema"]["openAPIV3Schema"].clone();
                assert_cel_only_structural(&root, file);
                let validator = jsonschema::options()
                    .with_draft(jsonschema::Draft::Draft4)
                    .should_validate_formats(true)
                    // Formats the API server checks that draft 4 does not know.
                    .with_format("byte", |s: &str| {
                        use base64::Engine;
                        base64::engine::general_purpose::STANDARD.decode(s).is_ok()
                    })
                    .with_format("cidr", cidr)
                    .build(&to_json_schema(&root))
                    .unwrap_or_else(|e| panic!("{file}: {e}"));
                by_kind
                    .entry((
                        format!("{group}/{}", v["name"].as_str().unwrap()),
                        kind.to_string(),
                    ))
                    .or_default()
                    .push(Schema {
                        file: file.to_string(),
                        root,
                        validator,
                    });
            }
        }
    }
    Crds { by_kind }
}

/// Kubernetes allows CEL rules only where the walk below looks (properties,
/// items, additionalProperties): none inside allOf/anyOf/oneOf/not.
fn assert_cel_only_structural(node: &Value, file: &str) {
    fn inside(node: &Value) -> bool {
        match node {
            Value::Object(o) => {
                o.contains_key("x-kubernetes-validations") || o.values().any(inside)
            }
            Value::Array(a) => a.iter().any(inside),
            _ => false,
        }
    }
    let Some(o) = node.as_object() else { return };
    for k in ["allOf", "anyOf", "oneOf", "not"] {
        if let Some(v) = o.get(k) {
            assert!(!inside(v), "{file}: a CEL rule inside {k}");
        }
    }
    for (k, v) in o {
        match k.as_str() {
            "properties" => v
                .as_object()
                .unwrap()
                .values()
                .for_each(|p| assert_cel_only_structural(p, file)),
            "items" | "additionalProperties" => assert_cel_only_structural(v, file),
            _ => {}
        }
    }
}

/// A Kubernetes structural schema as a JSON Schema (see the module's doc).
pub fn to_json_schema(node: &Value) -> Value {
    let Some(o) = node.as_object() else {
        return node.clone();
    };
    let mut out = Map::new();
    for (k, v) in o {
        let v = match k.as_str() {
            "description" | "default" | "example" | "nullable" => continue,
            k if k.starts_with("x-kubernetes-") => continue,
            "properties" => Value::Object(
                v.as_object()
                    .unwrap()
                    .iter()
                    .map(|(k, p)| (k.clone(), to_json_schema(p)))
                    .collect(),
            ),
            "items" | "not" => to_json_schema(v),
            "additionalProperties" if v.is_object() => to_json_schema(v),
            "allOf" | "anyOf" | "oneOf" => {
                Value::Array(v.as_array().unwrap().iter().map(to_json_schema).collect())
            }
            _ => v.clone(),
        };
        out.insert(k.clone(), v);
    }
    if o.contains_key("properties")
        && o.get("x-kubernetes-preserve-unknown-fields") != Some(&Value::Bool(true))
        && !o.contains_key("additionalProperties")
    {
        out.insert("additionalProperties".into(), json!(false));
    }
    if o.get("x-kubernetes-int-or-string") == Some(&Value::Bool(true)) {
        out.remove("type");
        let either = json!({"anyOf": [{"type": "integer"}, {"type": "string"}]});
        match out.remove("allOf") {
            Some(Value::Array(mut a)) => {
                a.push(either);
                out.insert("allOf".into(), Value::Array(a));
            }
            _ => {
                out.insert("allOf".into(), json!([either]));
            }
        }
    }
    if o.get("nullable") == Some(&Value::Bool(true)) {
        if let Some(Value::String(t)) = out.get("type").cloned() {
            out.insert("type".into(), json!([t, "null"]));
        }
    }
    Value::Object(out)
}

impl Crds {
    /// Whether a CRD here serves this apiVersion and kind.
    pub fn serves(&self, api_version: &str, kind: &str) -> bool {
        self.by_kind
            .contains_key(&(api_version.to_string(), kind.to_string()))
    }

    pub fn schemas(&self, api_version: &str, kind: &str) -> &[Schema] {
        self.by_kind
            .get(&(api_version.to_string(), kind.to_string()))
            .map_or(&[], Vec::as_slice)
    }

    /// Checks one document (`label` names it in messages) against every CRD
    /// serving its apiVersion and kind.
    pub fn check(&self, doc: &Value, label: &str) -> Report {
        self.check_in(doc, label, None)
    }

    /// [`Crds::check`] against the CRD of one file only (`tests/crds/` path),
    /// where several versions of a project serve the same kind.
    pub fn check_in(&self, doc: &Value, label: &str, file: Option<&str>) -> Report {
        self.check_doc(doc, label, file, false)
    }

    /// [`Crds::check_in`] for a document read back from a cluster (an input):
    /// the fields the API server sets in `metadata` are allowed.
    pub fn check_input(&self, doc: &Value, label: &str, file: Option<&str>) -> Report {
        self.check_doc(doc, label, file, true)
    }

    fn check_doc(&self, doc: &Value, label: &str, file: Option<&str>, input: bool) -> Report {
        let mut rep = Report::default();
        let api_version = doc["apiVersion"].as_str().unwrap_or("");
        let kind = doc["kind"].as_str().unwrap_or("");
        let schemas: Vec<&Schema> = self
            .schemas(api_version, kind)
            .iter()
            .filter(|s| file.is_none_or(|f| s.file == f))
            .collect();
        if schemas.is_empty() {
            rep.errors
                .push(format!("{label}: no CRD here serves {api_version} {kind}"));
            return rep;
        }
        if input {
            let mut m = doc["metadata"].clone();
            if let Some(o) = m.as_object_mut() {
                for k in SERVER_SET {
                    o.remove(*k);
                }
            }
            check_metadata(&m, label, &mut rep.errors);
        } else {
            check_metadata(&doc["metadata"], label, &mut rep.errors);
        }
        for s in schemas {
            let mut d = doc.clone();
            let mut walk = Walk {
                file: &s.file,
                kind,
                label,
                rep: &mut rep,
            };
            walk.node(&s.root, &mut d, "", "");
            for e in s.validator.iter_errors(&d) {
                rep.errors.push(format!(
                    "{label} ({}): {}: {e}",
                    s.file,
                    dotted(&e.instance_path().to_string())
                ));
            }
        }
        rep
    }
}

/// ObjectMeta fields the API server sets, which `kubectl get -o yaml` shows.
const SERVER_SET: &[&str] = &[
    "creationTimestamp",
    "generation",
    "resourceVersion",
    "uid",
    "managedFields",
    "selfLink",
];

/// An IPv4 or IPv6 CIDR (`ADDRESS/PREFIX`), as Go's `net.ParseCIDR` takes it.
fn cidr(s: &str) -> bool {
    let Some((ip, bits)) = s.split_once('/') else {
        return false;
    };
    let Ok(bits) = bits.parse::<u8>() else {
        return false;
    };
    match ip.parse::<std::net::IpAddr>() {
        Ok(std::net::IpAddr::V4(_)) => bits <= 32,
        Ok(std::net::IpAddr::V6(_)) => bits <= 128,
        Err(_) => false,
    }
}

fn dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

fn dns_subdomain(s: &str) -> bool {
    s.len() <= 253 && s.split('.').all(dns_label)
}

/// A label or annotation key: an optional DNS subdomain prefix and `/`, then a
/// name of up to 63 alphanumerics, `-`, `_`, `.`, starting and ending with an
/// alphanumeric.
fn qualified_name(k: &str) -> bool {
    let (prefix, name) = match k.split_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, k),
    };
    let name_ok = !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
        && name.as_bytes()[0].is_ascii_alphanumeric()
        && name.as_bytes()[name.len() - 1].is_ascii_alphanumeric();
    name_ok && prefix.is_none_or(dns_subdomain)
}

/// ObjectMeta as the API server checks it on a create of a namespaced resource.
pub fn check_metadata(m: &Value, label: &str, errs: &mut Vec<String>) {
    let Some(o) = m.as_object() else {
        errs.push(format!("{label}: metadata is not an object"));
        return;
    };
    for (k, v) in o {
        match k.as_str() {
            "name" => {
                if !v.as_str().is_some_and(dns_subdomain) {
                    errs.push(format!(
                        "{label}: metadata.name {v} is not a DNS-1123 subdomain"
                    ));
                }
            }
            "namespace" => {
                if !v.as_str().is_some_and(dns_label) {
                    errs.push(format!(
                        "{label}: metadata.namespace {v} is not a DNS-1123 label"
                    ));
                }
            }
            "labels" | "annotations" => {
                let Some(map) = v.as_object() else {
                    errs.push(format!("{label}: metadata.{k} is not a map"));
                    continue;
                };
                for (key, val) in map {
                    if !qualified_name(key) {
                        errs.push(format!("{label}: metadata.{k} key '{key}' is not valid"));
                    }
                    let Some(s) = val.as_str() else {
                        errs.push(format!("{label}: metadata.{k}.{key} is not a string"));
                        continue;
                    };
                    let label_value = s.is_empty()
                        || (s.len() <= 63
                            && s.bytes()
                                .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
                            && s.as_bytes()[0].is_ascii_alphanumeric()
                            && s.as_bytes()[s.len() - 1].is_ascii_alphanumeric());
                    if k == "labels" && !label_value {
                        errs.push(format!(
                            "{label}: metadata.labels.{key} '{s}' is not a label value"
                        ));
                    }
                }
            }
            other => errs.push(format!(
                "{label}: metadata.{other}: not something a manifest to apply sets"
            )),
        }
    }
    if !o.contains_key("name") {
        errs.push(format!("{label}: metadata.name is required"));
    }
}

struct Walk<'a> {
    file: &'a str,
    kind: &'a str,
    label: &'a str,
    rep: &'a mut Report,
}

impl Walk<'_> {
    /// Applies the defaults under `node` to `v`, then checks list types and CEL
    /// rules, children first. `path` is the value's path (with indices),
    /// `spath` the schema's (`[]` for items, `{}` for map values).
    fn node(&mut self, node: &Value, v: &mut Value, path: &str, spath: &str) {
        if let (Some(props), Some(map)) = (
            node.get("properties").and_then(Value::as_object),
            v.as_object_mut(),
        ) {
            for (k, p) in props {
                if let (false, Some(d)) = (map.contains_key(k), p.get("default")) {
                    map.insert(k.clone(), d.clone());
                }
            }
            for (k, x) in map.iter_mut() {
                if let Some(p) = props.get(k) {
                    self.node(p, x, &format!("{path}.{k}"), &format!("{spath}.{k}"));
                }
            }
        }
        if let (Some(ap), Some(map)) = (
            node.get("additionalProperties").filter(|a| a.is_object()),
            v.as_object_mut(),
        ) {
            for (k, x) in map.iter_mut() {
                self.node(ap, x, &format!("{path}.{k}"), &format!("{spath}{{}}"));
            }
        }
        if let (Some(items), Some(list)) = (node.get("items"), v.as_array_mut()) {
            for (i, x) in list.iter_mut().enumerate() {
                self.node(items, x, &format!("{path}[{i}]"), &format!("{spath}[]"));
            }
        }
        if let Some(list) = v.as_array() {
            self.list_type(node, list, path);
        }
        // Integer formats: the Go field's range.
        if let (Some(f), Some(n)) = (node["format"].as_str(), v.as_number()) {
            let fits = match f {
                "int32" => n.as_i64().is_some_and(|i| i32::try_from(i).is_ok()),
                "uint32" => n.as_u64().is_some_and(|i| u32::try_from(i).is_ok()),
                "int64" => n.as_i64().is_some(),
                _ => true,
            };
            if !fits {
                self.rep.errors.push(format!(
                    "{}: {}: {n} is not a {f}",
                    self.label,
                    display(path)
                ));
            }
        }
        for rule in node["x-kubernetes-validations"]
            .as_array()
            .into_iter()
            .flatten()
        {
            self.rule(node, rule, v, path, spath);
        }
    }

    fn list_type(&mut self, node: &Value, list: &[Value], path: &str) {
        match node["x-kubernetes-list-type"].as_str() {
            Some("set") => {
                for (i, x) in list.iter().enumerate() {
                    if list[..i].contains(x) {
                        self.rep.errors.push(format!(
                            "{}: spec{path}[{i}]: duplicate item {x} in a list of type set",
                            self.label
                        ));
                    }
                }
            }
            Some("map") => {
                let keys: Vec<&str> = node["x-kubernetes-list-map-keys"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|k| k.as_str().unwrap())
                    .collect();
                let mut seen = HashSet::new();
                for (i, x) in list.iter().enumerate() {
                    let key: Vec<String> = keys.iter().map(|k| x[k].to_string()).collect();
                    if !seen.insert(key.clone()) {
                        self.rep.errors.push(format!(
                            "{}: spec{path}[{i}]: duplicate key {keys:?}={key:?} in a list of type map",
                            self.label
                        ));
                    }
                }
            }
            _ => {}
        }
    }

    fn rule(&mut self, node: &Value, rule: &Value, v: &Value, path: &str, spath: &str) {
        let src = rule["rule"].as_str().unwrap();
        let id = format!("{} {} {}: {src}", self.file, self.kind, display(spath));
        if src.contains("oldSelf") {
            self.rep.transition.insert(id);
            return;
        }
        match eval(src, node, v) {
            Ok(true) => {
                self.rep.evaluated.insert(id);
            }
            Ok(false) => {
                self.rep.evaluated.insert(id);
                let message = rule["message"]
                    .as_str()
                    .or(rule["messageExpression"].as_str())
                    .unwrap_or("failed rule");
                self.rep.errors.push(format!(
                    "{} ({}): {}: {message} (rule: {src})",
                    self.label,
                    self.file,
                    display(path)
                ));
            }
            Err(e) => {
                self.rep
                    .unevaluable
                    .push(format!("{} at {}: {id}: {e}", self.label, display(path)))
            }
        }
    }
}

/// A JSON pointer as a dotted path with indices: `spec.rules[0].name`.
fn dotted(pointer: &str) -> String {
    let mut out = String::new();
    for seg in pointer.split('/').skip(1) {
        let seg = seg.replace("~1", "/").replace("~0", "~");
        if !seg.is_empty() && seg.bytes().all(|b| b.is_ascii_digit()) {
            out.push_str(&format!("[{seg}]"));
        } else {
            if !out.is_empty() {
                out.push('.');
            }
            out.push_str(&seg);
        }
    }
    if out.is_empty() {
        "(root)".into()
    } else {
        out
    }
}

fn display(path: &str) -> String {
    if path.is_empty() {
        "(root)".into()
    } else {
        path.trim_start_matches('.').to_string()
    }
}

fn env() -> Arc<cel::Env> {
    static ENV: OnceLock<Arc<cel::Env>> = OnceLock::new();
    ENV.get_or_init(|| {
        let mut env = cel::Env::stdlib();
        // Kubernetes' CEL environment has cel-go's strings extension.
        env.add_extension(cel::extensions::strings).unwrap();
        Arc::new(env)
    })
    .clone()
}

/// CEL's reserved words: Kubernetes exposes a property so named as `__NAME__`.
const RESERVED: &[&str] = &[
    "true",
    "false",
    "null",
    "in",
    "as",
    "break",
    "const",
    "continue",
    "else",
    "for",
    "function",
    "if",
    "import",
    "let",
    "loop",
    "package",
    "namespace",
    "return",
    "var",
];

/// A property name as Kubernetes exposes it to CEL: reserved words as
/// `__WORD__`; `__`, `.`, `-` and `/` as `__underscores__`, `__dot__`,
/// `__dash__` and `__slash__`.
pub fn escape(name: &str) -> String {
    if RESERVED.contains(&name) {
        return format!("__{name}__");
    }
    name.replace("__", "__underscores__")
        .replace('.', "__dot__")
        .replace('-', "__dash__")
        .replace('/', "__slash__")
}

/// A JSON value as CEL sees it in Kubernetes, under schema `node`: integers as
/// `int`, other numbers as `double`, objects with `properties` as objects whose
/// field names are escaped ([`escape`]), other objects (`additionalProperties`,
/// preserved unknown fields) as maps with their keys as they are.
pub fn to_cel(node: &Value, v: &Value) -> cel::Value {
    use cel::objects::{Key, Map as CelMap};
    match v {
        Value::Null => cel::Value::Null,
        Value::Bool(b) => cel::Value::Bool(*b),
        Value::Number(n) => match n.as_i64() {
            Some(i) => cel::Value::Int(i),
            None => cel::Value::Float(n.as_f64().unwrap()),
        },
        Value::String(s) => cel::Value::String(Arc::new(s.clone())),
        Value::Array(a) => cel::Value::List(Arc::new(
            a.iter().map(|x| to_cel(&node["items"], x)).collect(),
        )),
        Value::Object(o) => {
            let props = node.get("properties").and_then(Value::as_object);
            let map = o
                .iter()
                .map(|(k, x)| match props {
                    Some(p) => (
                        Key::String(Arc::new(escape(k))),
                        to_cel(p.get(k).unwrap_or(&Value::Null), x),
                    ),
                    None => (
                        Key::String(Arc::new(k.clone())),
                        to_cel(&node["additionalProperties"], x),
                    ),
                })
                .collect();
            cel::Value::Map(CelMap { map: Arc::new(map) })
        }
    }
}

/// Evaluates a rule with `self` bound to `v`; an error is anything but a bool.
pub fn eval(src: &str, node: &Value, v: &Value) -> Result<bool, String> {
    let env = env();
    let program = env.compile(src).map_err(|e| format!("parse: {e}"))?;
    let mut ctx = cel::Context::with_env(env);
    ctx.add_variable_from_value("self", to_cel(node, v));
    match program.execute(&ctx) {
        Ok(cel::Value::Bool(b)) => Ok(b),
        Ok(other) => Err(format!("not a bool: {other:?}")),
        Err(e) => Err(format!("evaluation: {e}")),
    }
}

/// Input fields that the upstream CRDs here do not have, and why: the shapes
/// of the seeds the compiler was written from (kgateway's API description;
/// Envoy AI Gateway v0.2's v1alpha1 Go API), which the compiler reads beside the
/// current ones. (kind, schema path, field).
pub const OLDER_FIELDS: &[(&str, &str, &str, &str)] = &[
    (
        "AIServiceBackend",
        "spec",
        "backendSecurityPolicyRef",
        "Envoy AI Gateway v0.2 (v1.1.0: the policy's targetRefs)",
    ),
    (
        "AIGatewayRoute",
        "spec",
        "schema",
        "Envoy AI Gateway v0.2 (v1.1.0: no route schema)",
    ),
    (
        "AIGatewayRoute",
        "spec",
        "targetRefs",
        "Envoy AI Gateway v0.2 (v1.1.0: parentRefs)",
    ),
    (
        "BackendSecurityPolicy",
        "spec.gcpCredentials",
        "isPassthrough",
        "not in Envoy AI Gateway v1.1.0",
    ),
    (
        "Backend",
        "spec.ai",
        "provider",
        "the seed's AI Backend (kgateway e575ec75: ai.llm)",
    ),
    (
        "Backend",
        "spec.static.hosts[]",
        "tls",
        "the seed's static host TLS",
    ),
    (
        "TrafficPolicy",
        "spec",
        "timeout",
        "the seed's TrafficPolicy",
    ),
    (
        "TrafficPolicy",
        "spec",
        "retries",
        "the seed's TrafficPolicy",
    ),
    (
        "TrafficPolicy",
        "spec",
        "requestHeaderModifier",
        "the seed's TrafficPolicy",
    ),
    (
        "TrafficPolicy",
        "spec",
        "responseHeaderModifier",
        "the seed's TrafficPolicy",
    ),
    (
        "TrafficPolicy",
        "spec.rateLimit",
        "extensionRef",
        "the seed's rate limit",
    ),
    (
        "HTTPListenerPolicy",
        "spec",
        "buffer",
        "the seed's HTTPListenerPolicy",
    ),
    (
        "HTTPListenerPolicy",
        "spec",
        "basicAuth",
        "the seed's HTTPListenerPolicy",
    ),
    (
        "HTTPListenerPolicy",
        "spec",
        "celValidation",
        "the seed's HTTPListenerPolicy",
    ),
    (
        "DirectResponse",
        "spec",
        "statusCode",
        "the seed's DirectResponse (kgateway: status)",
    ),
];

/// Other differences the seeds' shapes make: (kind, schema path, message part).
pub const OLDER_VALUES: &[(&str, &str, &str)] = &[
    (
        "Backend",
        "spec.ai",
        "exactly one of the fields in [llm priorityGroups]",
    ),
    (
        "TrafficPolicy",
        "spec.cors.allowOrigins[]",
        "is not of type \"string\"",
    ),
    (
        "TrafficPolicy",
        "spec.cors.maxAge",
        "is not of type \"integer\"",
    ),
    (
        "HTTPListenerPolicy",
        "spec.targetRefs[]",
        "\"group\" is a required property",
    ),
    (
        "DirectResponse",
        "spec",
        "\"status\" is a required property",
    ),
];

/// An error of [`Crds::check_input`] as (schema path, fields) for an
/// unknown-fields error, else (schema path, message).
fn parse_error(e: &str) -> (String, Vec<String>, String) {
    // "LABEL (FILE): PATH: MESSAGE" or "LABEL (FILE) ...: PATH: MESSAGE (rule: ...)"
    let rest = e.split_once("): ").map_or(e, |(_, r)| r);
    let (path, msg) = rest.split_once(": ").unwrap_or(("", rest));
    let mut spath = String::new();
    let mut in_index = false;
    for c in path.chars() {
        match c {
            '[' => {
                in_index = true;
                spath.push_str("[]");
            }
            ']' => in_index = false,
            _ if in_index => {}
            c => spath.push(c),
        }
    }
    let fields = msg
        .strip_prefix("Additional properties are not allowed (")
        .map(|l| {
            l.split(" was unexpected")
                .next()
                .unwrap()
                .split(" were unexpected")
                .next()
                .unwrap()
                .split(", ")
                .map(|f| f.trim_matches('\'').to_string())
                .collect()
        })
        .unwrap_or_default();
    (spath, fields, msg.to_string())
}

/// What checking inputs found: errors the differences above do not explain,
/// the differences seen (indices: `OLDER_FIELDS`, then `OLDER_VALUES`), the
/// kinds checked.
#[derive(Default)]
pub struct InputCheck {
    pub errors: Vec<String>,
    pub seen: HashSet<usize>,
    pub kinds: BTreeSet<String>,
}

impl Crds {
    /// An input document (Secrets with their values, see
    /// `common::unredacted`) against the CRD of its kind: kgateway's AI Backends
    /// against its last version with them, its other Backends against `main`;
    /// a Secret, a core kind, by its fields.
    pub fn check_input_doc(&self, d: &Value, label: &str, out: &mut InputCheck) {
        const KG_AI: &str = "kgateway/historical/e575ec754390/gateway.kgateway.dev_backends.yaml";
        const KG_BACKEND: &str = "kgateway/gateway.kgateway.dev_backends.yaml";
        let (Some(av), Some(kind)) = (d["apiVersion"].as_str(), d["kind"].as_str()) else {
            return;
        };
        let label = format!("{label} {kind}");
        if (av, kind) == ("v1", "Secret") {
            check_metadata(&d["metadata"], &label, &mut out.errors);
            for (k, x) in d.as_object().unwrap() {
                let ok = match k.as_str() {
                    "apiVersion" | "kind" | "metadata" => true,
                    "type" => x.is_string(),
                    "immutable" => x.is_boolean(),
                    "stringData" | "data" => x
                        .as_object()
                        .is_some_and(|o| o.values().all(Value::is_string)),
                    _ => false,
                };
                if !ok {
                    out.errors
                        .push(format!("{label}: {k}: not a Secret field of that type"));
                }
            }
            out.kinds.insert("v1 Secret".to_string());
            return;
        }
        if !self.serves(av, kind) {
            out.kinds.insert(format!("no CRD: {av} {kind}"));
            return;
        }
        out.kinds.insert(format!("{av} {kind}"));
        let file = match (av, kind) {
            ("gateway.kgateway.dev/v1alpha1", "Backend") if d["spec"].get("ai").is_some() => {
                Some(KG_AI)
            }
            ("gateway.kgateway.dev/v1alpha1", "Backend") => Some(KG_BACKEND),
            _ => None,
        };
        let r = self.check_input(d, &label, file);
        out.errors.extend(r.unevaluable);
        for e in r.errors {
            let (spath, fields, msg) = parse_error(&e);
            let known = if fields.is_empty() {
                OLDER_VALUES
                    .iter()
                    .position(|(k, p, m)| *k == kind && *p == spath && msg.contains(m))
                    .map(|j| vec![j + OLDER_FIELDS.len()])
            } else {
                fields
                    .iter()
                    .map(|f| {
                        OLDER_FIELDS
                            .iter()
                            .position(|(k, p, g, _)| *k == kind && *p == spath && g == f)
                    })
                    .collect::<Option<Vec<usize>>>()
            };
            match known {
                Some(js) => out.seen.extend(js),
                None => out.errors.push(e),
            }
        }
    }
}
