//! Parsed Kubernetes manifests: one [`Manifest`] per resource, with where it came from.
//!
//! Parsing text is pure; reading files and folders is `main.rs`'s job. Values of
//! `Secret` data are dropped here, at the door: the compiler needs only which keys
//! a Secret has, and a value that is never held can never be printed.

use serde::Deserialize;
use serde_json::Value;

use crate::diag::{Diagnostic, Severity, Source};

/// One resource as read from the input.
#[derive(Clone, Debug, PartialEq)]
pub struct Manifest {
    pub source: Source,
    pub value: Value,
}

impl Manifest {
    /// Wraps a parsed value, dropping Secret values (keys are kept).
    pub fn new(source: Source, mut value: Value) -> Manifest {
        if value.get("kind").and_then(Value::as_str) == Some("Secret") {
            redact_secret(&mut value);
        }
        Manifest { source, value }
    }
}

fn redact_secret(value: &mut Value) {
    for field in ["data", "stringData"] {
        if let Some(map) = value.get_mut(field).and_then(Value::as_object_mut) {
            for v in map.values_mut() {
                *v = Value::String(String::new());
            }
        } else if let Some(v) = value.get_mut(field) {
            // Not a map: nothing a key could be read from; drop it whole.
            *v = Value::Null;
        }
    }
}

fn file_error(file: &str, document: usize, message: String) -> Diagnostic {
    Diagnostic {
        severity: Severity::Error,
        source: Source {
            file: file.to_string(),
            document,
        },
        resource: None,
        path: String::new(),
        message,
    }
}

/// Reads every YAML document of `text` (JSON is YAML too). Empty documents are
/// skipped; `kind: *List` documents are expanded into their items.
pub fn parse_yaml(file: &str, text: &str) -> (Vec<Manifest>, Vec<Diagnostic>) {
    let mut out = Vec::new();
    let mut diags = Vec::new();
    for (i, doc) in serde_norway::Deserializer::from_str(text).enumerate() {
        let document = i + 1;
        match Value::deserialize(doc) {
            Ok(v) => push_value(file, document, v, &mut out, &mut diags),
            Err(e) => {
                diags.push(file_error(file, document, format!("invalid YAML: {e}")));
                // The parser cannot resynchronise after a syntax error.
                break;
            }
        }
    }
    (out, diags)
}

/// Reads a JSON file: one object (possibly a `List`) or an array of objects.
pub fn parse_json(file: &str, text: &str) -> (Vec<Manifest>, Vec<Diagnostic>) {
    let mut out = Vec::new();
    let mut diags = Vec::new();
    match serde_json::from_str::<Value>(text) {
        Ok(Value::Array(items)) => {
            for (i, v) in items.into_iter().enumerate() {
                push_value(file, i + 1, v, &mut out, &mut diags);
            }
        }
        Ok(v) => push_value(file, 1, v, &mut out, &mut diags),
        Err(e) => diags.push(file_error(file, 0, format!("invalid JSON: {e}"))),
    }
    (out, diags)
}

fn push_value(
    file: &str,
    document: usize,
    v: Value,
    out: &mut Vec<Manifest>,
    diags: &mut Vec<Diagnostic>,
) {
    let source = Source {
        file: file.to_string(),
        document,
    };
    match v {
        Value::Null => {}
        Value::Object(ref map) => {
            let is_list = map
                .get("kind")
                .and_then(Value::as_str)
                .is_some_and(|k| k.ends_with("List"));
            if is_list {
                if let Some(Value::Array(items)) = map.get("items") {
                    for item in items {
                        if !item.is_null() {
                            out.push(Manifest::new(source.clone(), item.clone()));
                        }
                    }
                    return;
                }
            }
            out.push(Manifest::new(source, v));
        }
        _ => diags.push(file_error(
            file,
            document,
            "a document must be a Kubernetes object (a mapping with apiVersion and kind)".into(),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn multi_document_yaml_skips_empty_and_expands_lists() {
        let text = "---\napiVersion: v1\nkind: Secret\nmetadata: {name: s}\nstringData: {apiKey: sk-very-secret}\n---\n---\nkind: List\nitems:\n- {kind: A}\n- {kind: B}\n";
        let (ms, diags) = parse_yaml("f.yaml", text);
        assert!(diags.is_empty(), "{diags:?}");
        assert_eq!(ms.len(), 3);
        assert_eq!(ms[0].source.document, 1);
        assert_eq!(ms[0].value["stringData"]["apiKey"], "");
        assert!(!format!("{ms:?}").contains("sk-very-secret"));
        assert_eq!(ms[1].value["kind"], "A");
        assert_eq!(ms[2].source.document, 3);
    }

    #[test]
    fn syntax_error_names_file_and_document() {
        let (ms, diags) = parse_yaml("bad.yaml", "kind: A\n---\nkind: [\n");
        assert_eq!(ms.len(), 1);
        assert_eq!(diags.len(), 1);
        assert_eq!(diags[0].source.document, 2);
        assert!(diags[0].message.starts_with("invalid YAML"), "{}", diags[0]);
    }

    #[test]
    fn scalar_document_is_an_error() {
        let (_, diags) = parse_yaml("x.yaml", "just text\n");
        assert_eq!(diags.len(), 1);
        let (_, diags) = parse_json("x.json", "[{\"kind\": \"A\"}, 3]");
        assert_eq!(diags[0].source.document, 2);
    }
}
