//! Who is asking: the identity limits and budgets count per, written into the
//! dynamic metadata (`identity`) and the access log.
//!
//! It comes from one request header the gateway is configured with (`identity`):
//! a client's API key or user id, or a claim of a JWT that Envoy's `jwt_authn`
//! filter verified and copied into a header (`claim_to_headers`: the dynamic-module
//! ABI reads only top-level metadata keys, and jwt_authn's payload is a nested
//! struct). Credentials are hashed before they are used as a key, so no key, log or
//! rate-limit service ever holds them. A request without the header has no identity:
//! limits and budgets per identity count it under its route's tenant, else under
//! `anonymous`.

use sha2::{Digest, Sha256};

use crate::host::{Action, Headers};
use crate::machine::pipeline::{Cx, Flow, HeaderStep};

/// What a request without an identity counts as, when its route has no tenant.
pub const ANONYMOUS: &str = "anonymous";

/// Where identities come from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IdentitySource {
    /// Lower-case header name.
    pub header: String,
    /// Hash the value (SHA-256, the first 16 bytes in hex): on unless the header
    /// carries no secret (a user id set by a trusted filter).
    pub hash: bool,
}

impl IdentitySource {
    /// The identity of a request carrying `value` in the header.
    pub fn identify(&self, value: &str) -> Option<String> {
        // A key sent as `Authorization: Bearer <key>` is the key.
        let value = match value.get(..7) {
            Some(p) if p.eq_ignore_ascii_case("bearer ") => value[7..].trim(),
            _ => value.trim(),
        };
        if value.is_empty() {
            return None;
        }
        if !self.hash {
            return Some(value.chars().take(128).collect());
        }
        let digest = Sha256::digest(value.as_bytes());
        Some(hex::encode(&digest[..16]))
    }
}

/// Pipeline step: the request's identity, read while its headers are here (the
/// header may be a credential the upstream work removes later).
pub(crate) struct Identify;

impl HeaderStep for Identify {
    fn on_headers(&self, cx: &mut Cx<'_>, headers: &dyn Headers, _out: &mut Vec<Action>) -> Flow {
        if let Some(source) = &cx.config.identity {
            cx.req.identity = headers
                .get(&source.header)
                .and_then(|v| source.identify(&v));
        }
        Flow::Next
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_are_hashed_and_bearer_is_dropped() {
        let s = IdentitySource {
            header: "authorization".into(),
            hash: true,
        };
        let a = s.identify("Bearer sk-live-123").unwrap();
        assert_eq!(a.len(), 32);
        assert!(!a.contains("sk-live"));
        assert_eq!(s.identify("sk-live-123"), Some(a.clone()));
        assert_ne!(s.identify("sk-live-124"), Some(a));
        assert_eq!(s.identify("  "), None);
        assert_eq!(s.identify("Bearer "), None);
        let plain = IdentitySource {
            header: "x-user-id".into(),
            hash: false,
        };
        assert_eq!(plain.identify(" alice ").as_deref(), Some("alice"));
        assert_eq!(plain.identify(&"x".repeat(500)).unwrap().len(), 128);
    }
}
