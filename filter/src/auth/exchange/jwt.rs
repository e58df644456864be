//! RS256 JSON Web Tokens (RFC 7515 compact form), for Google service-account
//! assertions.
//!
//! Signing is RSASSA-PKCS1-v1_5 with SHA-256 by the `rsa` crate, without blinding
//! (no random source is assumed in the wasm build). Its timing could in theory leak
//! key bits to someone who measures many signatures; here a signature is made once
//! per token lifetime (an hour), over claims the gateway chooses, at a time a client
//! cannot trigger, so there is nothing to measure.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use rsa::pkcs1::DecodeRsaPrivateKey;
use rsa::pkcs8::DecodePrivateKey;
use rsa::sha2::Sha256;
use serde_json::Value;

use super::ExchangeError;

/// `header.claims.signature`, signed with the PEM key (PKCS#8 `PRIVATE KEY` as
/// Google issues them, or PKCS#1 `RSA PRIVATE KEY`).
pub(super) fn rs256(header: &Value, claims: &Value, pem: &str) -> Result<String, ExchangeError> {
    let key = rsa::PrivateKey::from_pkcs8_pem(pem)
        .or_else(|_| rsa::PrivateKey::from_pkcs1_pem(pem))
        .map_err(|_| {
            ExchangeError::new("the service-account key's private_key is not an RSA PEM key")
        })?;
    let mut out = URL_SAFE_NO_PAD.encode(header.to_string());
    out.push('.');
    out.push_str(&URL_SAFE_NO_PAD.encode(claims.to_string()));
    let signature = key
        .pkcs1v15_sign::<Sha256>(out.as_bytes())
        .map_err(|_| ExchangeError::new("signing the service-account JWT failed"))?;
    out.push('.');
    out.push_str(&URL_SAFE_NO_PAD.encode(signature));
    Ok(out)
}
