//! Credentials that live in files (Azure and GCP access tokens, AWS credential files,
//! API keys mounted from Kubernetes Secrets) or in environment variables of the Envoy
//! process (the wasm build's way to Secrets): the core names them, the host reads
//! them and hands the contents over, a file again whenever it changes.
//!
//! The store is shared by every stream of a configuration and read on each upstream
//! attempt; the host writes it from wherever it watches files. Values never appear in
//! `Debug` output or messages.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, RwLock};

/// A credential as the configuration gives it.
#[derive(Clone, PartialEq, Eq, Hash)]
pub enum Secret {
    /// The value itself (resolved by the config compiler).
    Inline(Arc<str>),
    /// A file the host reads; surrounding whitespace is trimmed.
    File(String),
    /// An environment variable the host reads once, at load; trimmed too.
    Env(String),
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Secret::Inline(_) => f.write_str("Inline(<redacted>)"),
            Secret::File(path) => f.debug_tuple("File").field(path).finish(),
            Secret::Env(name) => f.debug_tuple("Env").field(name).finish(),
        }
    }
}

/// The current contents of every credential file, by path, and of every
/// credential environment variable, by name.
#[derive(Default)]
pub struct SecretStore {
    files: RwLock<HashMap<String, Arc<str>>>,
    env: RwLock<HashMap<String, Arc<str>>>,
}

impl fmt::Debug for SecretStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.files.read().map(|m| m.len()).unwrap_or(0);
        write!(f, "SecretStore({n} files)")
    }
}

impl SecretStore {
    /// Records what `path` holds now. Returns whether the value changed.
    pub fn set(&self, path: &str, contents: &[u8]) -> bool {
        let text = String::from_utf8_lossy(contents);
        let value: Arc<str> = Arc::from(text.trim());
        let Ok(mut files) = self.files.write() else {
            return false;
        };
        if files.get(path).is_some_and(|old| **old == *value) {
            return false;
        }
        files.insert(path.to_string(), value);
        true
    }

    /// Records the value of environment variable `name`.
    pub fn set_env(&self, name: &str, value: &str) {
        if let Ok(mut env) = self.env.write() {
            env.insert(name.to_string(), Arc::from(value.trim()));
        }
    }

    /// Forgets `path` (the file went away or became unreadable).
    pub fn remove(&self, path: &str) {
        if let Ok(mut files) = self.files.write() {
            files.remove(path);
        }
    }

    /// The value of a secret: inline, or the file's or variable's contents when the
    /// host has read them (and they are not empty).
    pub fn resolve(&self, secret: &Secret) -> Option<Arc<str>> {
        let (map, key) = match secret {
            Secret::Inline(v) => return Some(Arc::clone(v)),
            Secret::File(path) => (&self.files, path),
            Secret::Env(name) => (&self.env, name),
        };
        map.read().ok()?.get(key).filter(|v| !v.is_empty()).cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_resolve_once_read_and_follow_changes() {
        let store = SecretStore::default();
        let file = Secret::File("/run/token".into());
        assert_eq!(store.resolve(&file), None);
        assert!(store.set("/run/token", b"tok-1\n"));
        assert_eq!(store.resolve(&file).as_deref(), Some("tok-1"));
        assert!(!store.set("/run/token", b"tok-1"));
        assert!(store.set("/run/token", b"tok-2"));
        assert_eq!(store.resolve(&file).as_deref(), Some("tok-2"));
        store.set("/run/token", b"  \n");
        assert_eq!(store.resolve(&file), None, "an empty file is no credential");
        store.remove("/run/token");
        assert_eq!(store.resolve(&file), None);
        let inline = Secret::Inline(Arc::from("k"));
        assert_eq!(store.resolve(&inline).as_deref(), Some("k"));
        let env = Secret::Env("OPENAI_KEY".into());
        assert_eq!(store.resolve(&env), None);
        store.set_env("OPENAI_KEY", " sk-env\n");
        assert_eq!(store.resolve(&env).as_deref(), Some("sk-env"));
    }

    #[test]
    fn debug_never_shows_values() {
        let s = Secret::Inline(Arc::from("sk-live-123"));
        assert!(!format!("{s:?}").contains("sk-live"));
        let store = SecretStore::default();
        store.set("/p", b"sk-live-123");
        assert!(!format!("{store:?}").contains("sk-live"));
    }
}
