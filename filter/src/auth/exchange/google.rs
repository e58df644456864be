//! Google's token exchanges: a service-account key's signed JWT for an access token
//! (RFC 7523 at the OAuth token endpoint), and workload identity federation (an OIDC
//! token exchanged at Google's STS, RFC 8693, then, optionally, for a service
//! account's token at the IAM credentials API).

use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};

use super::{
    bearer_answer, json_answer, jwt, post, post_form, Endpoint, ExchangeError, Impersonation, Token,
};
use crate::host::{Callout, CalloutResult};

const JWT_BEARER_GRANT: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";
const TOKEN_EXCHANGE_GRANT: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
const ACCESS_TOKEN_TYPE: &str = "urn:ietf:params:oauth:token-type:access_token";
const JWT_TOKEN_TYPE: &str = "urn:ietf:params:oauth:token-type:jwt";
/// Where keys without a `token_uri` get their tokens.
pub const DEFAULT_TOKEN_URI: &str = "https://oauth2.googleapis.com/token";
/// The longest a service-account JWT may live.
const JWT_LIFETIME_SECS: u64 = 3600;

/// `POST <token_uri>` with a JWT signed by the key (`key_json`: the key file).
pub(super) fn oauth_request(
    key_json: &str,
    scope: &str,
    cluster: &str,
    token_url: Option<&Endpoint>,
    now_secs: u64,
    timeout: Duration,
) -> Result<Callout, ExchangeError> {
    let key: Value = serde_json::from_str(key_json)
        .map_err(|_| ExchangeError::new("the service-account key is not JSON"))?;
    let field = |name: &str| {
        key[name]
            .as_str()
            .filter(|s| !s.is_empty())
            .ok_or_else(|| ExchangeError::new(format!("the service-account key has no {name}")))
    };
    let email = field("client_email")?;
    let pem = field("private_key")?;
    let token_uri = key["token_uri"].as_str().unwrap_or(DEFAULT_TOKEN_URI);
    let (endpoint, audience) = match token_url {
        Some(e) => (e.clone(), format!("https://{}{}", e.authority, e.path)),
        None => (
            Endpoint::parse(cluster, token_uri).map_err(|e| {
                ExchangeError::new(format!("the service-account key's token_uri {e}"))
            })?,
            token_uri.to_string(),
        ),
    };
    let mut header = json!({"alg": "RS256", "typ": "JWT"});
    if let Some(kid) = key["private_key_id"].as_str() {
        header["kid"] = kid.into();
    }
    let claims = json!({
        "iss": email,
        "scope": scope,
        "aud": audience,
        "iat": now_secs,
        "exp": now_secs + JWT_LIFETIME_SECS,
    });
    let assertion = jwt::rs256(&header, &claims, pem)?;
    Ok(post_form(
        &endpoint,
        &[("grant_type", JWT_BEARER_GRANT), ("assertion", &assertion)],
        Vec::new(),
        timeout,
    ))
}

pub(super) fn oauth_token(
    result: &CalloutResult,
    now_ms: u64,
) -> Result<(Token, u64), ExchangeError> {
    let v = json_answer(result, "Google's OAuth token endpoint")?;
    bearer_answer(&v, "Google's OAuth token endpoint", now_ms)
}

/// `POST https://sts.googleapis.com/v1/token`: the OIDC token for a federated
/// access token. No `authorization` header: STS refuses one.
pub(super) fn sts_request(
    sts: &Endpoint,
    audience: &str,
    scope: &str,
    subject: &str,
    timeout: Duration,
) -> Callout {
    post_form(
        sts,
        &[
            ("grant_type", TOKEN_EXCHANGE_GRANT),
            ("audience", audience),
            ("scope", scope),
            ("requested_token_type", ACCESS_TOKEN_TYPE),
            ("subject_token", subject),
            ("subject_token_type", JWT_TOKEN_TYPE),
        ],
        Vec::new(),
        timeout,
    )
}

pub(super) fn sts_token(
    result: &CalloutResult,
    now_ms: u64,
) -> Result<(Token, u64), ExchangeError> {
    let v = json_answer(result, "Google's STS")?;
    bearer_answer(&v, "Google's STS", now_ms)
}

/// `generateAccessToken` for the service account, with the federated token.
pub(super) fn impersonation_request(
    imp: &Impersonation,
    scope: &str,
    federated: &Arc<str>,
    timeout: Duration,
) -> Callout {
    let path = format!(
        "{}/v1/projects/-/serviceAccounts/{}:generateAccessToken",
        imp.endpoint.path.trim_end_matches('/'),
        imp.service_account
    );
    let body = json!({"scope": [scope], "lifetime": format!("{JWT_LIFETIME_SECS}s")});
    post(
        &imp.endpoint.with_path(path),
        "application/json",
        body.to_string().into_bytes(),
        vec![("authorization".into(), format!("Bearer {federated}"))],
        timeout,
    )
}

/// `{"accessToken", "expireTime": RFC 3339}`.
pub(super) fn impersonated_token(result: &CalloutResult) -> Result<(Token, u64), ExchangeError> {
    let what = "Google's IAM credentials API";
    let v = json_answer(result, what)?;
    let token = v["accessToken"]
        .as_str()
        .filter(|t| !t.is_empty())
        .ok_or_else(|| ExchangeError::new(format!("{what} answered without accessToken")))?;
    let expires = v["expireTime"]
        .as_str()
        .and_then(crate::date::parse_rfc3339_utc)
        .ok_or_else(|| ExchangeError::new(format!("{what} answered without a valid expireTime")))?;
    Ok((
        Token::Bearer(Arc::from(token)),
        expires.saturating_mul(1000),
    ))
}
