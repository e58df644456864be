//! Helpers shared by the compiler's tests: edit a known-good set of resources one
//! field at a time and check that exactly that field is reported; find the golden
//! cases.

// Each test file is its own crate and uses only some of these.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use aigw_cli::manifest::SecretEntry;
use aigw_cli::quota::{Quota, Scope};
use aigw_cli::{compile, Manifest, Options};
use serde_json::Value;

/// The document of a parsed manifest with its Secret values put back (as
/// `stringData`), for tests that edit documents and compile them again.
pub fn unredacted(m: Manifest) -> Value {
    let mut v = m.value;
    if let Some(data) = m.secret {
        let mut string_data = serde_json::Map::new();
        for (k, e) in data {
            if let SecretEntry::Value(s) = e {
                string_data.insert(k, Value::String(s.expose().to_string()));
            }
        }
        if let Some(o) = v.as_object_mut() {
            o.remove("data");
            o.insert("stringData".into(), Value::Object(string_data));
        }
    }
    v
}

/// Sets (`Some`; one past a list's end appends) or removes (`None`) the field at
/// a JSON pointer.
pub fn set(v: &mut Value, pointer: &str, new: Option<Value>) {
    let (parent, key) = pointer.rsplit_once('/').unwrap();
    let p = v.pointer_mut(parent).unwrap_or_else(|| panic!("{parent}"));
    match (p, new) {
        (Value::Object(m), Some(n)) => {
            m.insert(key.to_string(), n);
        }
        (Value::Object(m), None) => {
            m.remove(key);
        }
        (Value::Array(a), Some(n)) => {
            let i = key.parse::<usize>().unwrap();
            if i == a.len() {
                a.push(n);
            } else {
                a[i] = n;
            }
        }
        (Value::Array(a), None) => {
            a.remove(key.parse::<usize>().unwrap());
        }
        _ => panic!("{pointer}"),
    }
}

/// One change to the documents of a test case.
pub type Edit = Box<dyn Fn(&mut Vec<Value>)>;

pub fn edit(doc: usize, pointer: &'static str, v: Value) -> Edit {
    Box::new(move |docs| set(&mut docs[doc], pointer, Some(v.clone())))
}

pub fn remove(doc: usize, pointer: &'static str) -> Edit {
    Box::new(move |docs| set(&mut docs[doc], pointer, None))
}

pub fn push(v: Value) -> Edit {
    Box::new(move |docs| docs.push(v.clone()))
}

/// An edit, and the error it must give: resource kind ("" for none), field path and
/// a fragment of the message.
pub type ErrorCase = (Edit, &'static str, &'static str, &'static str);

/// Applies each case to a fresh `base()`, compiles, and checks that the expected error
/// is among the diagnostics and that `secret` appears in none of them. Reports every
/// failing case at once.
pub fn assert_error_cases(
    cases: &[ErrorCase],
    base: impl Fn() -> Vec<Value>,
    manifests: impl Fn(Vec<Value>) -> Vec<Manifest>,
    secret: &str,
) {
    let mut failures = Vec::new();
    for (i, (edit, kind, path, fragment)) in cases.iter().enumerate() {
        let mut docs = base();
        edit(&mut docs);
        let diags = match compile(&manifests(docs)) {
            Ok(_) => {
                failures.push(format!("case {i} ({path}): compiled without error"));
                continue;
            }
            Err(d) => d,
        };
        let hit = diags.iter().any(|d| {
            d.is_error()
                && d.path == *path
                && d.message.contains(fragment)
                && d.resource.as_ref().map_or("", |r| r.kind.as_str()) == *kind
        });
        if !hit {
            let got: Vec<String> = diags.iter().map(|d| d.to_string()).collect();
            failures.push(format!(
                "case {i}: no error {kind} {path} ~ '{fragment}'; got:\n  {}",
                got.join("\n  ")
            ));
        }
        for d in &diags {
            assert!(!d.message.contains(secret), "{d}");
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// The golden case folders (`tests/golden/<case>/input.yaml`), in name order.
pub fn golden_cases() -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden");
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(&root)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.join("input.yaml").is_file())
        .collect();
    dirs.sort();
    assert!(!dirs.is_empty(), "no golden cases under {}", root.display());
    dirs
}

/// A golden case's compile options: `options.txt` in `dir`, `key=value` lines.
pub fn options(dir: &Path) -> Options {
    let mut o = Options::default();
    let Ok(text) = std::fs::read_to_string(dir.join("options.txt")) else {
        return o;
    };
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let (k, v) = line.split_once('=').unwrap();
        let v = v.trim();
        match k.trim() {
            "wasm_url" => o.wasm_url = Some(v.into()),
            "wasm_sha256" => o.wasm_sha256 = Some(v.into()),
            "module_path" => o.module_path = v.into(),
            "wasm_path" => o.wasm_path = v.into(),
            "envoy_proxy_namespace" => o.envoy_proxy_namespace = v.into(),
            "identity_header" => o.identity_header = Some(v.into()),
            "identity_no_hash" => o.identity_hash = v != "true",
            "limits_per" => o.limits_per = Scope::parse(v).unwrap(),
            "quota" => {
                o.quota = Some(match v {
                    "fleet" => Quota::Fleet,
                    "embedded" => Quota::Embedded,
                    _ => panic!("{}: quota {v}", dir.display()),
                })
            }
            "rate_limit_service" => o.rate_limit_service = Some(v.into()),
            "rate_limit_domain" => o.rate_limit_domain = Some(v.into()),
            "rate_limit_failure" => o.rate_limit_fail_closed = Some(v == "closed"),
            "guardrails" => {
                let text = std::fs::read_to_string(dir.join(v)).unwrap();
                let doc: serde_json::Value = serde_norway::from_str(&text).unwrap();
                o.guardrails = doc.as_array().unwrap().clone();
            }
            other => panic!("{}: unknown option {other}", dir.display()),
        }
    }
    o
}
