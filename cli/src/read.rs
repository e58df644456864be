//! Path-aware reading of manifest values.
//!
//! Manifests are walked by hand rather than deserialized into structs so that every
//! problem in a resource is reported in one run, each at its own field path, and
//! unknown fields (typos) become warnings instead of silently vanishing.

use serde_json::{Map, Value};

use crate::diag::Reporter;

pub(crate) fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

pub(crate) fn at(path: &str, i: usize) -> String {
    format!("{path}[{i}]")
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

/// An object being read, with its path.
#[derive(Clone, Copy)]
pub(crate) struct Obj<'v, 'p> {
    pub map: &'v Map<String, Value>,
    pub path: &'p str,
}

impl<'v, 'p> Obj<'v, 'p> {
    /// Reads `v` as an object whose fields are `known`; other fields are warned
    /// about and ignored.
    pub fn new(
        v: &'v Value,
        path: &'p str,
        known: &[&str],
        r: &mut Reporter<'_>,
    ) -> Option<Obj<'v, 'p>> {
        let Value::Object(map) = v else {
            r.error(path, format!("must be an object, found {}", type_name(v)));
            return None;
        };
        for k in map.keys() {
            if !known.contains(&k.as_str()) {
                r.warn(join(path, k), "unknown field, ignored");
            }
        }
        Some(Obj { map, path })
    }

    pub fn path(&self, key: &str) -> String {
        join(self.path, key)
    }

    /// The field's value; an explicit `null` counts as absent, as in Kubernetes.
    pub fn get(&self, key: &str) -> Option<&'v Value> {
        self.map.get(key).filter(|v| !v.is_null())
    }

    pub fn has(&self, key: &str) -> bool {
        self.get(key).is_some()
    }

    pub fn str_opt(&self, key: &str, r: &mut Reporter<'_>) -> Option<&'v str> {
        match self.get(key)? {
            Value::String(s) => Some(s),
            v => {
                r.error(
                    self.path(key),
                    format!("must be a string, found {}", type_name(v)),
                );
                None
            }
        }
    }

    /// A required, non-empty string.
    pub fn str_req(&self, key: &str, r: &mut Reporter<'_>) -> Option<&'v str> {
        if !self.has(key) {
            r.error(self.path(key), "is required");
            return None;
        }
        let s = self.str_opt(key, r)?;
        if s.is_empty() {
            r.error(self.path(key), "must not be empty");
            return None;
        }
        Some(s)
    }

    /// An optional integer within `min..=max`.
    pub fn int_opt(&self, key: &str, min: i64, max: i64, r: &mut Reporter<'_>) -> Option<i64> {
        let v = self.get(key)?;
        let Some(n) = v.as_i64() else {
            let what = if v.is_number() {
                "an integer".to_string()
            } else {
                format!("an integer, found {}", type_name(v))
            };
            r.error(self.path(key), format!("must be {what}"));
            return None;
        };
        if n < min || n > max {
            r.error(
                self.path(key),
                format!("must be between {min} and {max}, found {n}"),
            );
            return None;
        }
        Some(n)
    }

    pub fn bool_opt(&self, key: &str, r: &mut Reporter<'_>) -> Option<bool> {
        match self.get(key)? {
            Value::Bool(b) => Some(*b),
            v => {
                r.error(
                    self.path(key),
                    format!("must be a boolean, found {}", type_name(v)),
                );
                None
            }
        }
    }

    /// An optional list of at most `max_items`; a longer list is reported and
    /// still returned, so its items are checked too.
    pub fn list_opt(
        &self,
        key: &str,
        max_items: usize,
        r: &mut Reporter<'_>,
    ) -> Option<&'v [Value]> {
        match self.get(key)? {
            Value::Array(items) => {
                if items.len() > max_items {
                    r.error(
                        self.path(key),
                        format!("must have at most {max_items} items, found {}", items.len()),
                    );
                }
                Some(items)
            }
            v => {
                r.error(
                    self.path(key),
                    format!("must be a list, found {}", type_name(v)),
                );
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::diag::{Diagnostic, Source};
    use serde_json::json;

    fn with<R>(f: impl FnOnce(&mut Reporter<'_>) -> R) -> (R, Vec<Diagnostic>) {
        let src = Source::default();
        let mut out = Vec::new();
        let mut r = Reporter {
            source: &src,
            resource: None,
            out: &mut out,
        };
        let v = f(&mut r);
        (v, out)
    }

    #[test]
    fn reports_types_ranges_and_unknown_fields() {
        let v = json!({"a": "x", "n": 7, "b": "no", "typo": 1, "nul": null});
        let (_, d) = with(|r| {
            let o = Obj::new(&v, "spec", &["a", "n", "b", "nul", "missing"], r).unwrap();
            assert_eq!(o.str_req("a", r), Some("x"));
            assert_eq!(o.str_req("missing", r), None);
            assert_eq!(o.str_req("nul", r), None);
            assert_eq!(o.int_opt("n", 0, 5, r), None);
            assert_eq!(o.bool_opt("b", r), None);
        });
        let got: Vec<_> = d.iter().map(|d| (d.path.as_str(), d.is_error())).collect();
        assert_eq!(
            got,
            [
                ("spec.typo", false),
                ("spec.missing", true),
                ("spec.nul", true),
                ("spec.n", true),
                ("spec.b", true)
            ]
        );
    }

    #[test]
    fn non_object_is_an_error() {
        let v = json!([1]);
        let (o, d) = with(|r| Obj::new(&v, "spec", &[], r).is_none());
        assert!(o);
        assert_eq!(d[0].message, "must be an object, found a list");
    }
}
