//! Parsed Kubernetes manifests: one [`Manifest`] per resource, with where it came from.
//!
//! Parsing text is pure; reading files and folders is `main.rs`'s job. Values of
//! `Secret` data are taken out of the parsed document here, at the door, into
//! [`SecretValue`]s, which print as `<redacted>`: the document walked by the
//! compiler (and quoted by no message) keeps only the keys, and a value reaches
//! nothing but the filter config it is compiled into.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use base64::Engine;
use serde::Deserialize;
use serde_json::Value;

use crate::diag::{Diagnostic, Severity, Source};

/// A credential read from a Secret (or given inline in a resource). `Debug` shows
/// no part of it and there is no `Display`: the only way out is
/// [`SecretValue::expose`], called where the filter config is written.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretValue(Arc<str>);

impl SecretValue {
    pub fn new(s: &str) -> SecretValue {
        SecretValue(Arc::from(s))
    }

    /// The value itself, for the filter config only.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for SecretValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretValue(<redacted>)")
    }
}

/// One key of a Secret: its value, or why it has none.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SecretEntry {
    Value(SecretValue),
    /// `data.KEY` that is not base64, or decodes to bytes that are not UTF-8 text.
    Unreadable {
        field: &'static str,
        why: &'static str,
    },
}

/// The values of a `Secret` manifest by key (`stringData` over `data`, as the API
/// server merges them).
pub type SecretData = BTreeMap<String, SecretEntry>;

/// One resource as read from the input.
#[derive(Clone, Debug, PartialEq)]
pub struct Manifest {
    pub source: Source,
    /// The document; a Secret's values are blanked here (keys kept).
    pub value: Value,
    /// A Secret's values, taken out of `value`.
    pub secret: Option<SecretData>,
}

impl Manifest {
    /// Wraps a parsed value; a Secret's values move into [`Manifest::secret`].
    pub fn new(source: Source, mut value: Value) -> Manifest {
        let mut secret = None;
        if value.get("kind").and_then(Value::as_str) == Some("Secret") {
            secret = Some(secret_data(&value));
            redact_secret(&mut value);
        }
        Manifest {
            source,
            value,
            secret,
        }
    }
}

fn secret_data(value: &Value) -> SecretData {
    let mut out = SecretData::new();
    if let Some(map) = value.get("data").and_then(Value::as_object) {
        for (k, v) in map {
            let entry = match v.as_str().map(decode_data) {
                Some(Ok(s)) => SecretEntry::Value(SecretValue::new(&s)),
                Some(Err(why)) => SecretEntry::Unreadable { field: "data", why },
                None => SecretEntry::Unreadable {
                    field: "data",
                    why: "must be a base64 string",
                },
            };
            out.insert(k.clone(), entry);
        }
    }
    if let Some(map) = value.get("stringData").and_then(Value::as_object) {
        for (k, v) in map {
            // An unreadable `data` value stays an error: the API server refuses it.
            if matches!(out.get(k), Some(SecretEntry::Unreadable { .. })) {
                continue;
            }
            let entry = match v.as_str() {
                Some(s) => SecretEntry::Value(SecretValue::new(s)),
                None => SecretEntry::Unreadable {
                    field: "stringData",
                    why: "must be a string",
                },
            };
            out.insert(k.clone(), entry);
        }
    }
    out
}

/// `data` values are base64 (whitespace allowed, as in folded YAML).
fn decode_data(s: &str) -> Result<String, &'static str> {
    let compact: String = s.chars().filter(|c| !c.is_ascii_whitespace()).collect();
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(compact.as_bytes())
        .map_err(|_| "is not valid base64")?;
    String::from_utf8(bytes).map_err(|_| "does not decode to UTF-8 text")
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
        let data = ms[0].secret.as_ref().unwrap();
        match &data["apiKey"] {
            SecretEntry::Value(v) => assert_eq!(v.expose(), "sk-very-secret"),
            other => panic!("{other:?}"),
        }
        assert_eq!(ms[1].value["kind"], "A");
        assert_eq!(ms[2].source.document, 3);
    }

    #[test]
    fn secret_data_is_decoded_and_string_data_wins() {
        // "c2stZGF0YQ==" is "sk-data"; "//79" is not UTF-8.
        let text = "kind: Secret\nmetadata: {name: s}\ndata: {a: c2stZGF0YQ==, b: c2stZGF0YQ==, bad: '!!', bin: //79}\nstringData: {b: sk-string}\n";
        let (ms, _) = parse_yaml("f.yaml", text);
        let data = ms[0].secret.as_ref().unwrap();
        let value = |k: &str| match &data[k] {
            SecretEntry::Value(v) => v.expose().to_string(),
            SecretEntry::Unreadable { why, .. } => why.to_string(),
        };
        assert_eq!(value("a"), "sk-data");
        assert_eq!(value("b"), "sk-string");
        assert_eq!(value("bad"), "is not valid base64");
        assert_eq!(value("bin"), "does not decode to UTF-8 text");
        assert_eq!(ms[0].value["data"]["a"], "");
        assert!(!format!("{ms:?}").contains("sk-"));
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
