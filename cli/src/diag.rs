//! Diagnostics: what is wrong, in which file, in which resource, at which field.
//!
//! Messages are built from names, paths and static text only. Secret values never
//! reach them: they are dropped when a `Secret` manifest is read (see
//! [`crate::manifest`]).

use std::fmt;

/// How bad a diagnostic is. Any error stops the run before anything is written.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    Error,
    Warning,
}

/// Where a manifest came from: a file and the 1-based index of its YAML document.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Source {
    pub file: String,
    /// 1-based; 0 when the whole file is meant (e.g. a YAML syntax error).
    pub document: usize,
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.document == 0 {
            write!(f, "{}", self.file)
        } else {
            write!(f, "{}#{}", self.file, self.document)
        }
    }
}

/// A Kubernetes resource by kind, namespace and name.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ResourceId {
    pub kind: String,
    pub namespace: String,
    pub name: String,
}

impl fmt::Display for ResourceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}/{}", self.kind, self.namespace, self.name)
    }
}

/// One finding about the input.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Diagnostic {
    pub severity: Severity,
    pub source: Source,
    /// The resource the finding is about; `None` for file-level problems.
    pub resource: Option<ResourceId>,
    /// Field path inside the resource, e.g. `spec.rules[0].backendRefs[1].name`;
    /// empty for the resource (or file) as a whole.
    pub path: String,
    pub message: String,
}

impl Diagnostic {
    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let level = match self.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        write!(f, "{level}: {}", self.source)?;
        if let Some(r) = &self.resource {
            write!(f, ": {r}")?;
        }
        if !self.path.is_empty() {
            write!(f, ": {}", self.path)?;
        }
        write!(f, ": {}", self.message)
    }
}

/// Collects diagnostics about one resource.
#[derive(Debug)]
pub(crate) struct Reporter<'a> {
    pub source: &'a Source,
    pub resource: Option<ResourceId>,
    pub out: &'a mut Vec<Diagnostic>,
}

impl Reporter<'_> {
    pub fn error(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.push(Severity::Error, path.into(), message.into());
    }

    pub fn warn(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.push(Severity::Warning, path.into(), message.into());
    }

    fn push(&mut self, severity: Severity, path: String, message: String) {
        self.out.push(Diagnostic {
            severity,
            source: self.source.clone(),
            resource: self.resource.clone(),
            path,
            message,
        });
    }
}

/// Renders diagnostics one per line, errors and warnings in input order.
pub fn render(diags: &[Diagnostic]) -> String {
    let mut s = String::new();
    for d in diags {
        s.push_str(&d.to_string());
        s.push('\n');
    }
    s
}
