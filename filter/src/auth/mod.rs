//! Upstream credentials: which headers a request to a backend carries, computed on
//! each attempt over the request as it will be sent (SigV4 signs the translated
//! body, path and host).
//!
//! Errors name the backend and the file at most, never a value.

pub mod exchange;
pub mod secrets;
pub mod sigv4;

use std::fmt;

use crate::auth::exchange::Token;
use crate::auth::secrets::Secret;
use crate::auth::secrets::SecretStore;
use crate::config::backend::{Auth, AwsCredentials, Backend, KeyHeader};
use sigv4::{Credentials, SignableRequest, SigningParams};

/// The request being authenticated, as it leaves the gateway.
#[derive(Clone, Copy, Debug)]
pub struct Outgoing<'a> {
    pub method: &'a str,
    /// `:authority`, as sent.
    pub authority: &'a str,
    /// `:path` with its query string, as sent.
    pub path: &'a str,
    pub content_type: Option<&'a str>,
    /// Further headers SigV4 signs, as sent (Lambda's `x-amz-invocation-type`).
    pub signed: &'a [(&'a str, &'a str)],
    pub body: &'a [u8],
    /// Wall-clock time, seconds since the Unix epoch (SigV4).
    pub unix_seconds: u64,
}

/// Why no credential could be attached.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AuthError {
    /// The backend takes credentials only per request, and this one brought none (401).
    Missing { header: String },
    /// A credential file or environment variable has not been read (missing,
    /// unreadable or empty) (503). `source` says which.
    Unavailable { source: String },
    /// The AWS credentials file has no usable profile (503).
    BadCredentialsFile { source: String, profile: String },
    /// The request could not be signed (500).
    Signing(sigv4::SigningError),
    /// The credential the gateway exchanges for itself is not available: the
    /// exchange failed (503). The message names no secret.
    Exchange { message: String },
}

impl AuthError {
    pub fn status(&self) -> u16 {
        match self {
            AuthError::Missing { .. } => 401,
            AuthError::Unavailable { .. }
            | AuthError::BadCredentialsFile { .. }
            | AuthError::Exchange { .. } => 503,
            AuthError::Signing(_) => 500,
        }
    }
}

impl fmt::Display for AuthError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AuthError::Missing { header } => write!(
                f,
                "this model's provider needs a credential in the '{header}' request header"
            ),
            AuthError::Unavailable { source } => {
                write!(f, "the credential {source} could not be read")
            }
            AuthError::BadCredentialsFile { source, profile } => write!(
                f,
                "the AWS credentials file in {source} has no complete profile '{profile}'"
            ),
            AuthError::Signing(e) => write!(f, "{e}"),
            AuthError::Exchange { message } => write!(
                f,
                "the gateway could not obtain a credential for this model's provider: {message}"
            ),
        }
    }
}

/// The headers that authenticate `req` to `backend`: from the client's override
/// header (`override_value`) when the backend allows one and it was sent, else from
/// the backend's configured auth (`exchanged`: the credential of its exchange, when
/// it has one and the caller holds it). Empty when the backend needs none.
pub fn headers(
    backend: &Backend,
    secrets: &SecretStore,
    exchanged: Option<&Token>,
    override_value: Option<&str>,
    req: &Outgoing<'_>,
) -> Result<Vec<(String, String)>, AuthError> {
    if let Some(value) = override_value.map(str::trim).filter(|v| !v.is_empty()) {
        return Ok(vec![key_header(&backend.override_header(), value)]);
    }
    let Some(auth) = &backend.auth else {
        return match &backend.credential_override {
            Some(header) => Err(AuthError::Missing {
                header: header.clone(),
            }),
            None => Ok(Vec::new()),
        };
    };
    match auth {
        Auth::ApiKey { key, header } => {
            let value = secrets.resolve(key).ok_or_else(|| unavailable(key))?;
            Ok(vec![key_header(header, bare_key(&value))])
        }
        Auth::BearerToken(token) => {
            let value = secrets.resolve(token).ok_or_else(|| unavailable(token))?;
            Ok(vec![key_header(&KeyHeader::Bearer, &value)])
        }
        Auth::Exchanged(_) => {
            match exchanged.ok_or_else(|| exchange_error("no credential has been obtained yet"))? {
                Token::Bearer(value) => Ok(vec![key_header(&KeyHeader::Bearer, value)]),
                Token::Aws(_) => Err(exchange_error("the exchange gave AWS keys, not a token")),
            }
        }
        Auth::AwsSigV4 {
            region,
            service,
            credentials,
        } => {
            let creds = match credentials {
                AwsCredentials::Static(c) => c.clone(),
                AwsCredentials::File { source, profile } => {
                    let text = secrets.resolve(source).ok_or_else(|| unavailable(source))?;
                    aws_profile(&text, profile).map_err(|_| AuthError::BadCredentialsFile {
                        source: describe(source),
                        profile: profile.clone(),
                    })?
                }
                AwsCredentials::Exchanged(_) => match exchanged
                    .ok_or_else(|| exchange_error("no credential has been obtained yet"))?
                {
                    Token::Aws(c) => (**c).clone(),
                    Token::Bearer(_) => {
                        return Err(exchange_error("the exchange gave a token, not AWS keys"))
                    }
                },
            };
            let (path, query) = req.path.split_once('?').unwrap_or((req.path, ""));
            let mut signed = vec![("host", req.authority)];
            if let Some(ct) = req.content_type {
                signed.push(("content-type", ct));
            }
            signed.extend_from_slice(req.signed);
            let out = sigv4::sign(
                &SignableRequest {
                    method: req.method,
                    path,
                    query,
                    headers: &signed,
                    body: req.body,
                },
                &SigningParams {
                    credentials: &creds,
                    region,
                    service,
                    unix_seconds: req.unix_seconds,
                    content_sha256_header: false,
                },
            )
            .map_err(AuthError::Signing)?;
            Ok(out
                .headers
                .into_iter()
                .map(|(n, v)| (n.to_string(), v))
                .collect())
        }
    }
}

fn exchange_error(message: &str) -> AuthError {
    AuthError::Exchange {
        message: message.to_string(),
    }
}

fn unavailable(secret: &Secret) -> AuthError {
    AuthError::Unavailable {
        source: describe(secret),
    }
}

/// Where a credential comes from, for messages (never its value).
pub(crate) fn describe(secret: &Secret) -> String {
    match secret {
        Secret::File(path) => format!("file {path}"),
        Secret::Env(name) => format!("environment variable {name}"),
        Secret::Inline(_) => "(inline)".into(),
    }
}

/// A key as stored, without a `Bearer ` prefix some Secrets carry (kgateway's
/// `Authorization` key): the header decides the scheme.
fn bare_key(value: &str) -> &str {
    match value.get(..7) {
        Some(p) if p.eq_ignore_ascii_case("bearer ") => value[7..].trim_start(),
        _ => value,
    }
}

fn key_header(header: &KeyHeader, value: &str) -> (String, String) {
    match header {
        KeyHeader::Bearer => ("authorization".into(), format!("Bearer {value}")),
        KeyHeader::Named(name) => (name.clone(), value.to_string()),
    }
}

/// Why a profile could not be read from an AWS credentials file. Never quotes it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProfileError {
    /// No `[name]` or `[profile name]` section.
    Missing,
    /// The section lacks the key id or the secret.
    Incomplete,
}

/// One profile of an AWS shared credentials (or config) file: `[name]` or
/// `[profile name]` sections of `key = value` lines.
pub fn aws_profile(text: &str, profile: &str) -> Result<Credentials, ProfileError> {
    let mut in_section = false;
    let mut found = false;
    let (mut id, mut secret, mut token) = (None, None, None);
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            let name = name.trim();
            let name = name.strip_prefix("profile ").map_or(name, str::trim);
            in_section = name == profile;
            found |= in_section;
            continue;
        }
        if !in_section {
            continue;
        }
        if let Some((k, v)) = line.split_once('=') {
            let v = v.trim().to_string();
            match k.trim().to_ascii_lowercase().as_str() {
                "aws_access_key_id" => id = Some(v),
                "aws_secret_access_key" => secret = Some(v),
                "aws_session_token" | "aws_security_token" => token = Some(v),
                _ => {}
            }
        }
    }
    match (id, secret) {
        _ if !found => Err(ProfileError::Missing),
        (Some(id), Some(secret)) if !id.is_empty() && !secret.is_empty() => {
            Ok(Credentials::new(id, secret, token))
        }
        _ => Err(ProfileError::Incomplete),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn backend(json: serde_json::Value) -> (Config, Backend) {
        let doc = serde_json::json!({"version": "v1", "backends": [json]});
        let c = Config::from_json(&serde_json::to_vec(&doc).unwrap()).unwrap();
        let b = c.backends[0].clone();
        (c, b)
    }

    fn req(body: &[u8]) -> Outgoing<'_> {
        Outgoing {
            method: "POST",
            authority: "bedrock-runtime.us-east-1.amazonaws.com",
            path: "/model/m/converse",
            content_type: Some("application/json"),
            signed: &[],
            body,
            unix_seconds: 1_700_000_000,
        }
    }

    #[test]
    fn api_keys_go_in_the_schema_header() {
        for (schema, header, value) in [
            ("OpenAI", "authorization", "Bearer k1"),
            ("AzureOpenAI", "api-key", "k1"),
            ("Anthropic", "x-api-key", "k1"),
            ("Gemini", "x-goog-api-key", "k1"),
        ] {
            let (c, b) = backend(serde_json::json!({
                "name": "b", "schema": {"name": schema}, "auth": {"apiKey": {"value": "k1"}}
            }));
            let h = headers(&b, c.secrets(), None, None, &req(b"{}")).unwrap();
            assert_eq!(h, vec![(header.to_string(), value.to_string())], "{schema}");
        }
    }

    #[test]
    fn a_stored_bearer_prefix_is_not_doubled() {
        let (c, b) = backend(serde_json::json!({
            "name": "b", "schema": {"name": "OpenAI"}, "auth": {"apiKey": {"file": "/k"}}
        }));
        c.secrets().set("/k", b"Bearer sk-123\n");
        let h = headers(&b, c.secrets(), None, None, &req(b"{}")).unwrap();
        assert_eq!(h[0].1, "Bearer sk-123");
        let (c, b) = backend(serde_json::json!({
            "name": "b", "schema": {"name": "Anthropic"}, "auth": {"apiKey": {"value": "bearer sk-ant"}}
        }));
        assert_eq!(
            headers(&b, c.secrets(), None, None, &req(b"{}")).unwrap()[0].1,
            "sk-ant"
        );
    }

    #[test]
    fn override_header_wins_and_missing_one_is_401() {
        let (c, b) = backend(serde_json::json!({
            "name": "b", "schema": {"name": "Anthropic"},
            "credentialOverride": {"header": "x-provider-key"}
        }));
        let h = headers(&b, c.secrets(), None, Some("client-key"), &req(b"{}")).unwrap();
        assert_eq!(h, vec![("x-api-key".into(), "client-key".into())]);
        let e = headers(&b, c.secrets(), None, None, &req(b"{}")).unwrap_err();
        assert_eq!(e.status(), 401);
        assert!(e.to_string().contains("x-provider-key"));
        // With a configured key, no override falls back to it.
        let (c, b) = backend(serde_json::json!({
            "name": "b", "schema": {"name": "OpenAI"},
            "auth": {"apiKey": {"value": "conf"}},
            "credentialOverride": {"header": "x-provider-key"}
        }));
        let h = headers(&b, c.secrets(), None, Some("  "), &req(b"{}")).unwrap();
        assert_eq!(h[0].1, "Bearer conf");
    }

    #[test]
    fn token_files_are_read_through_the_store() {
        let (c, b) = backend(serde_json::json!({
            "name": "b", "schema": {"name": "GCPVertexAI"}, "project": "p", "region": "us-central1",
            "auth": {"bearerToken": {"file": "/var/run/token"}}
        }));
        assert_eq!(c.secret_files(), vec!["/var/run/token"]);
        let e = headers(&b, c.secrets(), None, None, &req(b"{}")).unwrap_err();
        assert_eq!(e.status(), 503);
        c.secrets().set("/var/run/token", b"ya29.one\n");
        let h = headers(&b, c.secrets(), None, None, &req(b"{}")).unwrap();
        assert_eq!(h[0].1, "Bearer ya29.one");
        c.secrets().set("/var/run/token", b"ya29.two");
        let h = headers(&b, c.secrets(), None, None, &req(b"{}")).unwrap();
        assert_eq!(h[0].1, "Bearer ya29.two");
    }

    #[test]
    fn environment_variables_are_read_through_the_store() {
        let (c, b) = backend(serde_json::json!({
            "name": "b", "schema": {"name": "Anthropic"}, "auth": {"apiKey": {"env": "ANTHROPIC_KEY"}}
        }));
        assert_eq!(c.secret_env(), ["ANTHROPIC_KEY"]);
        let e = headers(&b, c.secrets(), None, None, &req(b"{}")).unwrap_err();
        assert_eq!(
            e.to_string(),
            "the credential environment variable ANTHROPIC_KEY could not be read"
        );
        c.secrets().set_env("ANTHROPIC_KEY", "sk-ant-env\n");
        let h = headers(&b, c.secrets(), None, None, &req(b"{}")).unwrap();
        assert_eq!(h, [("x-api-key".to_string(), "sk-ant-env".to_string())]);

        // An AWS shared credentials file's text, in one variable.
        let (c, b) = backend(serde_json::json!({
            "name": "b", "schema": {"name": "AWSBedrock"}, "region": "us-east-1",
            "auth": {"awsSigV4": {"credentialsEnv": "AWS_CREDS", "profile": "bedrock"}}
        }));
        assert_eq!(c.secret_env(), ["AWS_CREDS"]);
        c.secrets().set_env(
            "AWS_CREDS",
            "[default]\naws_access_key_id=A0\naws_secret_access_key=S0\n",
        );
        let e = headers(&b, c.secrets(), None, None, &req(b"{}")).unwrap_err();
        assert!(e
            .to_string()
            .contains("environment variable AWS_CREDS has no complete profile 'bedrock'"));
        c.secrets().set_env(
            "AWS_CREDS",
            "[bedrock]\naws_access_key_id=AKIDENV\naws_secret_access_key=S1\n",
        );
        let h = headers(&b, c.secrets(), None, None, &req(b"{}")).unwrap();
        assert!(h
            .iter()
            .any(|(n, v)| n == "authorization" && v.contains("Credential=AKIDENV/")));

        let bad = |auth: serde_json::Value| {
            let doc = serde_json::json!({"version": "v1", "backends": [
                {"name": "b", "schema": {"name": "AWSBedrock"}, "region": "us-east-1", "auth": auth}]});
            Config::from_json(&serde_json::to_vec(&doc).unwrap())
                .unwrap_err()
                .path
        };
        assert_eq!(
            bad(serde_json::json!({"apiKey": {"env": "1KEY"}})),
            "backends[0].auth.apiKey.env"
        );
        assert_eq!(
            bad(serde_json::json!({"apiKey": {"env": "K", "value": "v"}})),
            "backends[0].auth.apiKey"
        );
        assert_eq!(
            bad(serde_json::json!({"awsSigV4": {"credentialsEnv": "K", "credentialsFile": "/f"}})),
            "backends[0].auth.awsSigV4"
        );
    }

    #[test]
    fn sigv4_signs_the_outgoing_request() {
        let (c, b) = backend(serde_json::json!({
            "name": "b", "schema": {"name": "AWSBedrock"}, "region": "us-east-1",
            "auth": {"awsSigV4": {"accessKeyId": "AKIDEXAMPLE", "secretAccessKey": "s3cr3t", "sessionToken": "tok"}}
        }));
        let h = headers(&b, c.secrets(), None, None, &req(b"{\"a\":1}")).unwrap();
        let names: Vec<_> = h.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            names,
            ["x-amz-date", "x-amz-security-token", "authorization"]
        );
        let auth = &h[2].1;
        assert!(auth.starts_with(
            "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20231114/us-east-1/bedrock/aws4_request"
        ));
        assert!(auth.contains("SignedHeaders=content-type;host;x-amz-date;x-amz-security-token"));
        // Another body, another signature.
        let h2 = headers(&b, c.secrets(), None, None, &req(b"{\"a\":2}")).unwrap();
        assert_ne!(h2[2].1, h[2].1);
        assert!(!format!("{b:?}").contains("s3cr3t"));
    }

    #[test]
    fn aws_credentials_files_by_profile() {
        let text = "[default]\naws_access_key_id = A1\naws_secret_access_key = S1\n\n\
                    [profile prod]\naws_access_key_id=A2\naws_secret_access_key=S2\naws_session_token=T2\n";
        assert_eq!(aws_profile(text, "default").unwrap().access_key_id(), "A1");
        let prod = aws_profile(text, "prod").unwrap();
        assert_eq!(
            (
                prod.access_key_id(),
                prod.secret_access_key(),
                prod.session_token()
            ),
            ("A2", "S2", Some("T2"))
        );
        assert_eq!(aws_profile(text, "dev"), Err(ProfileError::Missing));
        assert_eq!(
            aws_profile("[default]\naws_access_key_id=A\n", "default"),
            Err(ProfileError::Incomplete)
        );

        let (c, b) = backend(serde_json::json!({
            "name": "b", "schema": {"name": "AWSBedrock"}, "region": "eu-west-1",
            "auth": {"awsSigV4": {"credentialsFile": "/aws/credentials", "profile": "prod"}}
        }));
        c.secrets().set("/aws/credentials", text.as_bytes());
        let h = headers(&b, c.secrets(), None, None, &req(b"{}")).unwrap();
        assert!(h
            .iter()
            .any(|(n, v)| n == "x-amz-security-token" && v == "T2"));
        assert!(h[2].1.contains("Credential=A2/"));
    }
}
