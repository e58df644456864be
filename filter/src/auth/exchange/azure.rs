//! Entra ID (Microsoft identity platform v2.0) client-credentials grant: a client
//! secret, or an OIDC token as the client assertion (workload identity federation).

use std::time::Duration;

use super::{bearer_answer, json_answer, post_form, Endpoint, ExchangeError, Token};
use crate::host::{Callout, CalloutResult};

/// `client_assertion_type` of a federated credential.
const JWT_BEARER: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

/// How the application proves itself.
pub(super) enum Proof<'a> {
    Secret(&'a str),
    Assertion(&'a str),
}

/// `POST /{tenant}/oauth2/v2.0/token`.
pub(super) fn token_request(
    endpoint: &Endpoint,
    client_id: &str,
    scope: &str,
    proof: Proof<'_>,
    timeout: Duration,
) -> Callout {
    let mut fields = vec![
        ("grant_type", "client_credentials"),
        ("client_id", client_id),
        ("scope", scope),
    ];
    match proof {
        Proof::Secret(s) => fields.push(("client_secret", s)),
        Proof::Assertion(a) => {
            fields.push(("client_assertion_type", JWT_BEARER));
            fields.push(("client_assertion", a));
        }
    }
    post_form(endpoint, &fields, Vec::new(), timeout)
}

pub(super) fn token(result: &CalloutResult, now_ms: u64) -> Result<(Token, u64), ExchangeError> {
    let v = json_answer(result, "Entra ID")?;
    bearer_answer(&v, "Entra ID", now_ms)
}
