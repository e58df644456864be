//! The OIDC token an exchange starts from, when the gateway gets it itself: a
//! client-credentials grant at the OIDC provider, whose `access_token` is the token
//! exchanged (as Envoy AI Gateway's `oidcExchangeToken` does), with the provider's
//! token endpoint found in its discovery document when only the issuer is given.

use std::time::Duration;

use super::{form, json_answer, post, ClientCredentials, Endpoint, ExchangeError};
use crate::host::{Callout, CalloutResult};

/// `GET <issuer>/.well-known/openid-configuration`.
pub(super) fn discovery(issuer: &Endpoint, timeout: Duration) -> Callout {
    let path = format!(
        "{}/.well-known/openid-configuration",
        issuer.path.trim_end_matches('/')
    );
    super::get(&issuer.with_path(path), timeout)
}

/// The discovery document's `token_endpoint`, which must be on the issuer's host.
pub(super) fn token_endpoint(
    issuer: &Endpoint,
    result: &CalloutResult,
) -> Result<Endpoint, ExchangeError> {
    let what = format!("the OIDC discovery document of {}", issuer.authority);
    let doc = json_answer(result, &what)?;
    let url = doc["token_endpoint"]
        .as_str()
        .ok_or_else(|| ExchangeError::new(format!("{what} has no token_endpoint")))?;
    let endpoint = Endpoint::parse(&issuer.cluster, url)
        .map_err(|e| ExchangeError::new(format!("{what}: token_endpoint {e}")))?;
    if !endpoint.authority.eq_ignore_ascii_case(&issuer.authority) {
        return Err(ExchangeError::new(format!(
            "{what} names a token endpoint on another host ({}); configure it as tokenUrl with its own cluster",
            endpoint.authority
        )));
    }
    Ok(endpoint)
}

/// The client-credentials grant (`client_secret_post`).
pub(super) fn token_request(
    endpoint: &Endpoint,
    cc: &ClientCredentials,
    secret: &str,
    timeout: Duration,
) -> Callout {
    let scope = cc.scopes.join(" ");
    let mut fields = vec![
        ("grant_type", "client_credentials"),
        ("client_id", cc.client_id.as_str()),
        ("client_secret", secret),
    ];
    if !scope.is_empty() {
        fields.push(("scope", scope.as_str()));
    }
    post(
        endpoint,
        "application/x-www-form-urlencoded",
        form(&fields).into_bytes(),
        Vec::new(),
        timeout,
    )
}

/// The `access_token` of the provider's answer.
pub(super) fn access_token(result: &CalloutResult) -> Result<String, ExchangeError> {
    let v = json_answer(result, "the OIDC provider")?;
    v["access_token"]
        .as_str()
        .filter(|t| !t.is_empty())
        .map(str::to_string)
        .ok_or_else(|| ExchangeError::new("the OIDC provider answered without access_token"))
}
