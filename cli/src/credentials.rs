//! Upstream credentials and request edits, in the terms of the filter config's
//! `backends[]` (`auth`, `credentialOverride`, `forwardClientCredentials`,
//! `headerMutation`, `bodyMutation`; see `filter/src/config/backend.rs`).
//!
//! Secret values are looked up here, from the `Secret` manifests of the input, and
//! only as [`SecretValue`]s: every message names the Secret, the key and the field
//! that asked for it, never the value.

use std::collections::HashMap;

use serde_json::{json, Map, Value};

use crate::diag::Reporter;
use crate::manifest::{SecretEntry, SecretValue};
use crate::read::{at, Obj};
use crate::resources::Secret;

/// Annotation on a credential-bearing resource (BackendSecurityPolicy) naming a
/// file the filter reads the credential from at run time instead of a value the
/// compiler resolves: an API key, an access token kept fresh by another process
/// (Azure, GCP), or an AWS shared credentials file. The native build re-reads it
/// when it changes; the wasm build cannot read files.
pub const CREDENTIALS_FILE_ANNOTATION: &str = "aigw.io/credentials-file";

/// A credential: a value compiled into the config, or a file or an environment
/// variable read by the filter.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SecretSource {
    Value(SecretValue),
    File(String),
    Env(String),
}

impl SecretSource {
    fn to_json(&self) -> Map<String, Value> {
        let mut m = Map::new();
        match self {
            SecretSource::Value(v) => m.insert("value".into(), json!(v.expose())),
            SecretSource::File(f) => m.insert("file".into(), json!(f)),
            SecretSource::Env(e) => m.insert("env".into(), json!(e)),
        };
        m
    }
}

/// The Secret key a credential value was read from. On Envoy Gateway the value
/// stays in the Secret: the Secret is mounted into the Envoy proxy and the filter
/// reads the key as a file ([`Auth::from_file`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SecretOrigin {
    pub namespace: String,
    pub name: String,
    pub key: String,
    /// AWS: the profile of the shared credentials file the key holds (`None`:
    /// `default`).
    pub profile: Option<String>,
    /// The field of the resource that names the Secret.
    pub field: String,
}

/// AWS keys for SigV4.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AwsKeys {
    Static {
        access_key_id: SecretValue,
        secret_access_key: SecretValue,
        session_token: Option<SecretValue>,
    },
    /// A shared credentials file and the profile to read from it.
    File {
        path: String,
        profile: Option<String>,
    },
    /// An environment variable holding a shared credentials file's text.
    Env {
        name: String,
        profile: Option<String>,
    },
    /// Temporary keys the filter obtains from STS for an OIDC token
    /// (`webIdentity`).
    WebIdentity(Box<WebIdentity>),
    /// Temporary keys the filter obtains from STS `AssumeRole` for `role_arn`,
    /// signed with `base` (static keys, a file or a variable; `assumeRole`).
    AssumeRole {
        base: Box<AwsKeys>,
        role_arn: String,
        sts: Callout,
    },
}

impl AwsKeys {
    /// The keys' fields of an `awsSigV4` block, into `m`.
    fn write_json(&self, m: &mut Map<String, Value>) {
        match self {
            AwsKeys::Static {
                access_key_id,
                secret_access_key,
                session_token,
            } => {
                m.insert("accessKeyId".into(), json!(access_key_id.expose()));
                m.insert("secretAccessKey".into(), json!(secret_access_key.expose()));
                if let Some(t) = session_token {
                    m.insert("sessionToken".into(), json!(t.expose()));
                }
            }
            AwsKeys::File { path, profile } => {
                m.insert("credentialsFile".into(), json!(path));
                if let Some(p) = profile {
                    m.insert("profile".into(), json!(p));
                }
            }
            AwsKeys::Env { name, profile } => {
                m.insert("credentialsEnv".into(), json!(name));
                if let Some(p) = profile {
                    m.insert("profile".into(), json!(p));
                }
            }
            AwsKeys::WebIdentity(w) => {
                m.insert(
                    "webIdentity".into(),
                    json!({
                        "roleArn": w.role_arn,
                        "sessionName": w.session_name,
                        "token": w.token.to_json(),
                        "sts": w.sts.to_json(),
                    }),
                );
            }
            AwsKeys::AssumeRole {
                base,
                role_arn,
                sts,
            } => {
                base.write_json(m);
                m.insert(
                    "assumeRole".into(),
                    json!({"roleArn": role_arn, "sts": sts.to_json()}),
                );
            }
        }
    }
}

/// `awsSigV4.webIdentity`: STS `AssumeRoleWithWebIdentity` with a token from an
/// OIDC provider's client-credentials grant.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WebIdentity {
    pub role_arn: String,
    pub session_name: String,
    pub token: ClientCredentials,
    pub sts: Callout,
}

/// The host of a URL the filter calls itself (a token endpoint), which Envoy
/// reaches through a cluster of its own ([`TokenHost::cluster`]).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TokenHost {
    pub host: String,
    pub port: u16,
    /// `https`.
    pub tls: bool,
}

impl TokenHost {
    /// The Envoy cluster for this host: `aigw_token_` and the host name with
    /// characters other than letters, digits and `-` as `_`, then `_PORT` for a
    /// port other than the scheme's (`aigw_token_http_...` without TLS), e.g.
    /// `aigw_token_login_microsoftonline_com`.
    pub fn cluster(&self) -> String {
        let host: String = self
            .host
            .chars()
            .map(|c| match c.to_ascii_lowercase() {
                c @ ('a'..='z' | '0'..='9' | '-') => c,
                _ => '_',
            })
            .collect();
        let scheme = if self.tls { "" } else { "http_" };
        let default_port = if self.tls { 443 } else { 80 };
        if self.port == default_port {
            format!("aigw_token_{scheme}{host}")
        } else {
            format!("aigw_token_{scheme}{host}_{}", self.port)
        }
    }

    /// Whether the host is an IP address (a static endpoint, no SNI).
    pub fn is_ip(&self) -> bool {
        self.host.parse::<std::net::IpAddr>().is_ok()
    }
}

/// A URL the filter calls (`https://host[:port]/path`) and the host it reaches.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Callout {
    pub url: String,
    pub host: TokenHost,
}

impl Callout {
    /// `url`, checked as the filter checks the URLs of its exchanges; the error
    /// says what is wrong with it.
    pub fn parse(url: &str) -> Result<Callout, String> {
        let tls = if url.starts_with("https://") {
            true
        } else if url.starts_with("http://") {
            false
        } else {
            return Err(format!("'{url}' must start with https://"));
        };
        let e = aigw_filter::auth::exchange::Endpoint::parse("cluster", url)
            .map_err(|e| format!("'{url}' {e}"))?;
        let a = e.authority.as_str();
        let (host, port) = match a.strip_prefix('[') {
            // [v6]:port
            Some(rest) => match rest.split_once(']') {
                Some((h, "")) => (h, None),
                Some((h, p)) => (h, Some(p.strip_prefix(':').unwrap_or(p))),
                None => return Err(format!("'{url}' has no usable host")),
            },
            None => match a.rsplit_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (a, None),
            },
        };
        let port = match port {
            None => {
                if tls {
                    443
                } else {
                    80
                }
            }
            Some(p) => match p.parse::<u16>() {
                Ok(p) if p > 0 => p,
                _ => return Err(format!("'{url}' has an invalid port")),
            },
        };
        let bracketed = a.starts_with('[');
        if host.is_empty()
            || (bracketed && host.parse::<std::net::Ipv6Addr>().is_err())
            || (!bracketed && host.contains([':', '\\', '[', ']']))
        {
            return Err(format!("'{url}' has no usable host"));
        }
        Ok(Callout {
            url: url.to_string(),
            host: TokenHost {
                host: host.to_ascii_lowercase(),
                port,
                tls,
            },
        })
    }

    /// `{cluster, url}`, as the filter's exchange endpoints take it.
    fn to_json(&self) -> Value {
        json!({"cluster": self.host.cluster(), "url": self.url})
    }
}

/// Where an OIDC provider's token endpoint is: given, or named by the discovery
/// document of its issuer (on the same host).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum IdpUrl {
    Token(Callout),
    Issuer(Callout),
}

/// A client-credentials grant at an OIDC provider; its access token is the OIDC
/// token the filter exchanges (Envoy AI Gateway's `oidcExchangeToken`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientCredentials {
    pub idp: IdpUrl,
    pub client_id: String,
    pub client_secret: SecretSource,
    pub scopes: Vec<String>,
}

impl ClientCredentials {
    /// The filter's OIDC token object: `{clientCredentials: {...}}`.
    fn to_json(&self) -> Value {
        let (field, at) = match &self.idp {
            IdpUrl::Token(c) => ("tokenUrl", c),
            IdpUrl::Issuer(c) => ("issuer", c),
        };
        let mut m = Map::new();
        m.insert("cluster".into(), json!(at.host.cluster()));
        m.insert(field.into(), json!(at.url));
        m.insert("clientId".into(), json!(self.client_id));
        m.insert(
            "clientSecret".into(),
            Value::Object(self.client_secret.to_json()),
        );
        if !self.scopes.is_empty() {
            m.insert("scopes".into(), json!(self.scopes));
        }
        json!({"clientCredentials": m})
    }

    fn host(&self) -> &TokenHost {
        match &self.idp {
            IdpUrl::Token(c) | IdpUrl::Issuer(c) => &c.host,
        }
    }

    fn with_secret(&self, s: SecretSource) -> ClientCredentials {
        ClientCredentials {
            client_secret: s,
            ..self.clone()
        }
    }
}

/// How an Azure application proves itself to Entra ID.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AzureCredential {
    ClientSecret(SecretSource),
    /// Workload identity federation: an OIDC token as the client assertion.
    Federated(ClientCredentials),
}

/// A credential the filter obtains itself from a cloud's token service, with
/// one secret of its own (a client secret or a key).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Exchange {
    /// `azureEntraId`.
    Azure {
        tenant_id: String,
        client_id: String,
        credential: AzureCredential,
        token: Callout,
    },
    /// `gcpServiceAccount`: `key` is the key file's JSON; the filter calls its
    /// `token_uri`, on host `token`.
    GcpServiceAccount { key: SecretSource, token: TokenHost },
    /// `gcpWorkloadIdentity`; `impersonate` is the service account's e-mail
    /// address and the IAM credentials endpoint.
    GcpWorkloadIdentity {
        audience: String,
        subject: ClientCredentials,
        sts: Callout,
        impersonate: Option<(String, Callout)>,
    },
}

impl Exchange {
    fn to_json(&self) -> Value {
        match self {
            Exchange::Azure {
                tenant_id,
                client_id,
                credential,
                token,
            } => {
                let mut m = Map::new();
                m.insert("tenantId".into(), json!(tenant_id));
                m.insert("clientId".into(), json!(client_id));
                match credential {
                    AzureCredential::ClientSecret(s) => {
                        m.insert("clientSecret".into(), Value::Object(s.to_json()))
                    }
                    AzureCredential::Federated(c) => m.insert("federatedToken".into(), c.to_json()),
                };
                m.insert("token".into(), token.to_json());
                json!({"azureEntraId": m})
            }
            // The key's own token_uri (also the JWT's audience): only the cluster.
            Exchange::GcpServiceAccount { key, token } => json!({"gcpServiceAccount": {
                "key": key.to_json(),
                "token": {"cluster": token.cluster()},
            }}),
            Exchange::GcpWorkloadIdentity {
                audience,
                subject,
                sts,
                impersonate,
            } => {
                let mut m = Map::new();
                m.insert("audience".into(), json!(audience));
                m.insert("subjectToken".into(), subject.to_json());
                m.insert("sts".into(), sts.to_json());
                if let Some((account, iam)) = impersonate {
                    m.insert(
                        "impersonate".into(),
                        json!({"serviceAccount": account, "iam": iam.to_json()}),
                    );
                }
                json!({"gcpWorkloadIdentity": m})
            }
        }
    }

    /// Its one secret.
    fn secret(&self) -> &SecretSource {
        match self {
            Exchange::Azure {
                credential: AzureCredential::ClientSecret(s),
                ..
            }
            | Exchange::GcpServiceAccount { key: s, .. } => s,
            Exchange::Azure {
                credential: AzureCredential::Federated(c),
                ..
            }
            | Exchange::GcpWorkloadIdentity { subject: c, .. } => &c.client_secret,
        }
    }

    /// The same with its secret read from `s`.
    fn with_secret(&self, s: SecretSource) -> Exchange {
        let mut out = self.clone();
        match &mut out {
            Exchange::Azure {
                credential: AzureCredential::ClientSecret(x),
                ..
            }
            | Exchange::GcpServiceAccount { key: x, .. } => *x = s,
            Exchange::Azure {
                credential: AzureCredential::Federated(c),
                ..
            }
            | Exchange::GcpWorkloadIdentity { subject: c, .. } => *c = c.with_secret(s),
        }
        out
    }

    fn hosts(&self) -> Vec<&TokenHost> {
        match self {
            Exchange::Azure {
                credential, token, ..
            } => {
                let mut h = vec![&token.host];
                if let AzureCredential::Federated(c) = credential {
                    h.push(c.host());
                }
                h
            }
            Exchange::GcpServiceAccount { token, .. } => vec![token],
            Exchange::GcpWorkloadIdentity {
                subject,
                sts,
                impersonate,
                ..
            } => {
                let mut h = vec![subject.host(), &sts.host];
                h.extend(impersonate.iter().map(|(_, iam)| &iam.host));
                h
            }
        }
    }
}

/// `backends[].auth`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Auth {
    /// `apiKey`; `header` `None` is the schema's own header.
    ApiKey {
        key: SecretSource,
        header: Option<String>,
    },
    /// `bearerToken` (Azure Entra ID or GCP access tokens).
    Bearer(SecretSource),
    /// `awsSigV4`; `region` `None` is the backend's.
    AwsSigV4 {
        region: Option<String>,
        keys: AwsKeys,
    },
    /// An access token the filter obtains itself (`azureEntraId`,
    /// `gcpServiceAccount`, `gcpWorkloadIdentity`).
    Exchange(Box<Exchange>),
}

impl Auth {
    pub fn to_json(&self) -> Value {
        match self {
            Auth::ApiKey { key, header } => {
                let mut m = key.to_json();
                if let Some(h) = header {
                    m.insert("header".into(), json!(h));
                }
                json!({"apiKey": m})
            }
            Auth::Bearer(s) => json!({"bearerToken": s.to_json()}),
            Auth::AwsSigV4 { region, keys } => {
                let mut m = Map::new();
                if let Some(r) = region {
                    m.insert("region".into(), json!(r));
                }
                keys.write_json(&mut m);
                json!({"awsSigV4": m})
            }
            Auth::Exchange(x) => x.to_json(),
        }
    }

    /// The hosts the filter calls to obtain this credential (token endpoints),
    /// each reached through its own Envoy cluster.
    pub fn token_hosts(&self) -> Vec<&TokenHost> {
        match self {
            Auth::Exchange(x) => x.hosts(),
            Auth::AwsSigV4 {
                keys: AwsKeys::WebIdentity(w),
                ..
            } => vec![w.token.host(), &w.sts.host],
            Auth::AwsSigV4 {
                keys: AwsKeys::AssumeRole { sts, .. },
                ..
            } => vec![&sts.host],
            _ => Vec::new(),
        }
    }

    /// The same credential read by the filter from `path` (where the Secret key
    /// it came from is mounted) instead of compiled in; `profile` is the AWS
    /// profile to read.
    pub fn from_file(&self, path: &str, profile: Option<&str>) -> Auth {
        self.read_from(SecretSource::File(path.to_string()), profile)
    }

    /// The same credential read by the filter from environment variable `name`
    /// (which the Envoy container takes from the Secret key it came from).
    pub fn from_env(&self, name: &str, profile: Option<&str>) -> Auth {
        self.read_from(SecretSource::Env(name.to_string()), profile)
    }

    /// This credential read by the filter from `source` (a file or a variable).
    fn read_from(&self, source: SecretSource, profile: Option<&str>) -> Auth {
        let profile = profile.map(str::to_string);
        match self {
            Auth::ApiKey { header, .. } => Auth::ApiKey {
                key: source,
                header: header.clone(),
            },
            Auth::Bearer(_) => Auth::Bearer(source),
            Auth::Exchange(x) => Auth::Exchange(Box::new(x.with_secret(source))),
            // The exchange's one secret (the OIDC client secret), not a key file.
            Auth::AwsSigV4 {
                region,
                keys: AwsKeys::WebIdentity(w),
            } => Auth::AwsSigV4 {
                region: region.clone(),
                keys: AwsKeys::WebIdentity(Box::new(WebIdentity {
                    token: w.token.with_secret(source),
                    ..(**w).clone()
                })),
            },
            Auth::AwsSigV4 { region, keys } => {
                let read = match source {
                    SecretSource::Env(name) => AwsKeys::Env { name, profile },
                    SecretSource::File(path) => AwsKeys::File { path, profile },
                    // Not a place the filter reads from: keep the keys as they were.
                    SecretSource::Value(_) => return self.clone(),
                };
                Auth::AwsSigV4 {
                    region: region.clone(),
                    keys: match keys {
                        // The role's base keys are what is read.
                        AwsKeys::AssumeRole { role_arn, sts, .. } => AwsKeys::AssumeRole {
                            base: Box::new(read),
                            role_arn: role_arn.clone(),
                            sts: sts.clone(),
                        },
                        _ => read,
                    },
                }
            }
        }
    }

    /// The text of the one secret compiled in as a value, as the filter reads it
    /// from a file or a variable (an AWS shared credentials file for static AWS
    /// keys, profile `default`); `None` when it has none or reads it already.
    pub fn secret_text(&self) -> Option<SecretValue> {
        let value = |s: &SecretSource| match s {
            SecretSource::Value(v) => Some(v.clone()),
            _ => None,
        };
        match self {
            Auth::ApiKey { key, .. } => value(key),
            Auth::Bearer(s) => value(s),
            Auth::Exchange(x) => value(x.secret()),
            Auth::AwsSigV4 {
                keys: AwsKeys::WebIdentity(w),
                ..
            } => value(&w.token.client_secret),
            Auth::AwsSigV4 {
                keys: AwsKeys::AssumeRole { base, .. },
                region,
            } => Auth::AwsSigV4 {
                region: region.clone(),
                keys: (**base).clone(),
            }
            .secret_text(),
            Auth::AwsSigV4 {
                keys:
                    AwsKeys::Static {
                        access_key_id,
                        secret_access_key,
                        session_token,
                    },
                ..
            } => {
                let mut text = format!(
                    "[default]\naws_access_key_id = {}\naws_secret_access_key = {}\n",
                    access_key_id.expose(),
                    secret_access_key.expose()
                );
                if let Some(t) = session_token {
                    text.push_str(&format!("aws_session_token = {}\n", t.expose()));
                }
                Some(SecretValue::new(&text))
            }
            Auth::AwsSigV4 { .. } => None,
        }
    }

    /// The file the filter must read, if any.
    pub fn file(&self) -> Option<&str> {
        match self {
            Auth::ApiKey {
                key: SecretSource::File(f),
                ..
            }
            | Auth::Bearer(SecretSource::File(f))
            | Auth::AwsSigV4 {
                keys: AwsKeys::File { path: f, .. },
                ..
            } => Some(f),
            Auth::AwsSigV4 {
                keys: AwsKeys::AssumeRole { base, .. },
                ..
            } => match &**base {
                AwsKeys::File { path, .. } => Some(path),
                _ => None,
            },
            Auth::Exchange(x) => match x.secret() {
                SecretSource::File(f) => Some(f),
                _ => None,
            },
            Auth::AwsSigV4 {
                keys: AwsKeys::WebIdentity(w),
                ..
            } => match &w.token.client_secret {
                SecretSource::File(f) => Some(f),
                _ => None,
            },
            _ => None,
        }
    }
}

/// Looks up Secret values by namespace, name and key.
pub struct Secrets<'a> {
    pub index: &'a HashMap<(String, String), usize>,
    pub secrets: &'a [Secret],
}

impl Secrets<'_> {
    /// The trimmed value of `key` in Secret `ns/name`; the error says what is
    /// missing, for the field that asked.
    pub fn value(&self, ns: &str, name: &str, key: &str) -> Result<SecretValue, String> {
        let Some(&i) = self.index.get(&(ns.to_string(), name.to_string())) else {
            return Err(format!(
                "Secret {ns}/{name} is not among the inputs: its '{key}' is compiled into the filter config, so the Secret must be given (or use the {CREDENTIALS_FILE_ANNOTATION} annotation where the resource allows it)"
            ));
        };
        match self.secrets[i].values.get(key) {
            None => {
                let keys: Vec<&str> = self.secrets[i].values.keys().map(String::as_str).collect();
                Err(format!(
                    "Secret {ns}/{name} has no key '{key}' (its keys: {})",
                    if keys.is_empty() {
                        "none".to_string()
                    } else {
                        keys.join(", ")
                    }
                ))
            }
            Some(SecretEntry::Unreadable { field, why }) => {
                Err(format!("Secret {ns}/{name}: {field}.{key} {why}"))
            }
            Some(SecretEntry::Value(v)) => {
                let t = v.expose().trim();
                if t.is_empty() {
                    Err(format!("Secret {ns}/{name}: key '{key}' is empty"))
                } else {
                    Ok(SecretValue::new(t))
                }
            }
        }
    }
}

impl Secrets<'_> {
    /// The key of Secret `ns/name` that holds a value: the first of `preferred`
    /// it has, else its only key; the error says what is missing.
    pub fn key_of(
        &self,
        ns: &str,
        name: &str,
        preferred: &[&str],
        what: &str,
    ) -> Result<String, String> {
        let Some(&i) = self.index.get(&(ns.to_string(), name.to_string())) else {
            return Err(format!(
                "Secret {ns}/{name} is not among the inputs: it must be given, since the compiler reads its {what}"
            ));
        };
        let keys: Vec<&str> = self.secrets[i].values.keys().map(String::as_str).collect();
        if let Some(k) = preferred.iter().find(|k| keys.contains(k)) {
            return Ok(k.to_string());
        }
        match keys.as_slice() {
            [only] => Ok(only.to_string()),
            _ => Err(format!(
                "Secret {ns}/{name} has no '{}' key for the {what} (its keys: {})",
                preferred.first().copied().unwrap_or_default(),
                if keys.is_empty() {
                    "none".to_string()
                } else {
                    keys.join(", ")
                }
            )),
        }
    }
}

/// The keys of one profile of an AWS shared credentials file, read as the filter
/// reads it. Errors never quote the text.
pub fn aws_profile(text: &str, profile: &str) -> Result<AwsKeys, String> {
    use aigw_filter::auth::ProfileError;
    match aigw_filter::auth::aws_profile(text, profile) {
        Ok(c) => Ok(AwsKeys::Static {
            access_key_id: SecretValue::new(c.access_key_id()),
            secret_access_key: SecretValue::new(c.secret_access_key()),
            session_token: c.session_token().map(SecretValue::new),
        }),
        Err(ProfileError::Missing) => Err(format!("has no profile '{profile}'")),
        Err(ProfileError::Incomplete) => Err(format!(
            "profile '{profile}' lacks aws_access_key_id or aws_secret_access_key"
        )),
    }
}

/// Headers the gateway owns, and header names as HTTP allows them: the filter's rules.
pub use aigw_filter::config::backend::{is_header_name, reserved_header};

/// Request edits for one backend: header `set`/`remove`, top-level body field
/// `set`/`remove`, applied by the upstream filter instance.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Mutations {
    pub headers_set: Vec<(String, String)>,
    pub headers_remove: Vec<String>,
    pub body_set: Vec<(String, Value)>,
    pub body_remove: Vec<String>,
}

impl Mutations {
    pub fn is_empty(&self) -> bool {
        self.headers_set.is_empty()
            && self.headers_remove.is_empty()
            && self.body_set.is_empty()
            && self.body_remove.is_empty()
    }

    /// `self` (a backend's own edits) under `over` (a route's), which wins where
    /// both touch the same header or field.
    pub fn overlaid(&self, over: &Mutations) -> Mutations {
        let mut out = over.clone();
        let header_taken = |n: &str, o: &Mutations| {
            o.headers_set.iter().any(|(x, _)| x == n) || o.headers_remove.iter().any(|x| x == n)
        };
        for (n, v) in &self.headers_set {
            if !header_taken(n, over) {
                out.headers_set.push((n.clone(), v.clone()));
            }
        }
        for n in &self.headers_remove {
            if !header_taken(n, over) {
                out.headers_remove.push(n.clone());
            }
        }
        let field_taken = |n: &str, o: &Mutations| {
            o.body_set.iter().any(|(x, _)| x == n) || o.body_remove.iter().any(|x| x == n)
        };
        for (n, v) in &self.body_set {
            if !field_taken(n, over) {
                out.body_set.push((n.clone(), v.clone()));
            }
        }
        for n in &self.body_remove {
            if !field_taken(n, over) {
                out.body_remove.push(n.clone());
            }
        }
        out
    }

    pub fn header_json(&self) -> Option<Value> {
        if self.headers_set.is_empty() && self.headers_remove.is_empty() {
            return None;
        }
        let set: Vec<Value> = self
            .headers_set
            .iter()
            .map(|(n, v)| json!({"name": n, "value": v}))
            .collect();
        Some(json!({"set": set, "remove": self.headers_remove}))
    }

    pub fn body_json(&self) -> Option<Value> {
        if self.body_set.is_empty() && self.body_remove.is_empty() {
            return None;
        }
        let set: Vec<Value> = self
            .body_set
            .iter()
            .map(|(f, v)| json!({"field": f, "value": v}))
            .collect();
        Some(json!({"set": set, "remove": self.body_remove}))
    }
}

/// Envoy AI Gateway's `headerMutation` and `bodyMutation` (on an AIServiceBackend
/// or a route's backendRef), read from object `o`.
pub(crate) fn read_mutations(o: &Obj<'_, '_>, r: &mut Reporter<'_>) -> Mutations {
    let mut m = Mutations::default();
    let hp = o.path("headerMutation");
    if let Some(h) = o
        .get("headerMutation")
        .and_then(|v| Obj::new(v, &hp, &["set", "remove"], r))
    {
        let sp = h.path("set");
        for (i, v) in h
            .list_opt("set", 16, r)
            .unwrap_or_default()
            .iter()
            .enumerate()
        {
            let ip = at(&sp, i);
            let Some(s) = Obj::new(v, &ip, &["name", "value"], r) else {
                continue;
            };
            let (Some(name), value) = (header(&s, "name", r), s.str_opt("value", r)) else {
                continue;
            };
            if !s.has("value") {
                r.error(s.path("value"), "is required");
                continue;
            }
            let value = value.unwrap_or_default();
            if value.bytes().any(|b| matches!(b, b'\r' | b'\n' | 0)) {
                r.error(
                    s.path("value"),
                    "a header value may not contain CR, LF or NUL",
                );
                continue;
            }
            if m.headers_set.iter().any(|(n, _)| *n == name) {
                r.error(s.path("name"), format!("header '{name}' is set twice"));
                continue;
            }
            m.headers_set.push((name, value.to_string()));
        }
        let rp = h.path("remove");
        for (i, v) in h
            .list_opt("remove", 16, r)
            .unwrap_or_default()
            .iter()
            .enumerate()
        {
            let ip = at(&rp, i);
            match v.as_str() {
                Some(n) => match header_name(n, &ip, r) {
                    Some(n) if m.headers_remove.contains(&n) => {
                        r.error(ip, format!("header '{n}' is listed twice"))
                    }
                    Some(n) => m.headers_remove.push(n),
                    None => {}
                },
                None => r.error(ip, "must be a string"),
            }
        }
    }
    let bp = o.path("bodyMutation");
    if let Some(b) = o
        .get("bodyMutation")
        .and_then(|v| Obj::new(v, &bp, &["set", "remove"], r))
    {
        let sp = b.path("set");
        for (i, v) in b
            .list_opt("set", 16, r)
            .unwrap_or_default()
            .iter()
            .enumerate()
        {
            let ip = at(&sp, i);
            let Some(s) = Obj::new(v, &ip, &["path", "value"], r) else {
                continue;
            };
            let (Some(path), Some(text)) = (s.str_req("path", r), s.str_opt("value", r)) else {
                if !s.has("value") {
                    r.error(s.path("value"), "is required");
                }
                continue;
            };
            // The CRD carries the value as JSON text.
            let value = match serde_json::from_str::<Value>(text) {
                Ok(v) => v,
                Err(e) => {
                    r.error(
                        s.path("value"),
                        format!("must be JSON text (e.g. \"\\\"scale\\\"\", 42, true): {e}"),
                    );
                    continue;
                }
            };
            if m.body_set.iter().any(|(f, _)| f == path) {
                r.error(s.path("path"), format!("field '{path}' is set twice"));
                continue;
            }
            m.body_set.push((path.to_string(), value));
        }
        let rp = b.path("remove");
        for (i, v) in b
            .list_opt("remove", 16, r)
            .unwrap_or_default()
            .iter()
            .enumerate()
        {
            let ip = at(&rp, i);
            match v.as_str() {
                Some("") => r.error(ip, "must not be empty"),
                Some(f) if m.body_remove.iter().any(|x| x == f) => {
                    r.error(ip, format!("field '{f}' is listed twice"))
                }
                Some(f) => m.body_remove.push(f.to_string()),
                None => r.error(ip, "must be a string"),
            }
        }
    }
    m
}

fn header(o: &Obj<'_, '_>, key: &str, r: &mut Reporter<'_>) -> Option<String> {
    let n = o.str_req(key, r)?;
    header_name(n, &o.path(key), r)
}

/// A header name a mutation may touch, lower-cased; reports why not.
fn header_name(n: &str, path: &str, r: &mut Reporter<'_>) -> Option<String> {
    let lower = n.to_ascii_lowercase();
    if !is_header_name(n) {
        r.error(path, format!("'{n}' is not a valid header name"));
        None
    } else if reserved_header(&lower) {
        r.error(
            path,
            format!("'{lower}' is reserved: the gateway sets it (or needs it) itself"),
        );
        None
    } else {
        Some(lower)
    }
}

/// A file path given in an annotation or field: absolute, so that what the
/// filter reads does not depend on Envoy's working directory.
pub fn check_file_path(path: &str) -> Result<(), String> {
    if path.starts_with('/') && !path.contains('\0') {
        Ok(())
    } else {
        Err(format!(
            "'{path}' must be an absolute file path (the filter reads it at run time)"
        ))
    }
}

/// The `host:port` the `:authority` of a request to `host` carries (the port only
/// when it is not the scheme's default).
pub fn authority(host: &str, port: u16, tls: bool) -> String {
    if (tls && port == 443) || (!tls && port == 80) {
        host.to_string()
    } else {
        format!("{host}:{port}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(k: &AwsKeys) -> (String, String, Option<String>) {
        match k {
            AwsKeys::Static {
                access_key_id,
                secret_access_key,
                session_token,
            } => (
                access_key_id.expose().into(),
                secret_access_key.expose().into(),
                session_token.as_ref().map(|t| t.expose().into()),
            ),
            _ => panic!("not static keys"),
        }
    }

    #[test]
    fn aws_profiles() {
        let text = "[default]\naws_access_key_id = AKID\naws_secret_access_key=SECRET\n\n# x\n[profile ci]\naws_access_key_id=A2\naws_secret_access_key=S2\naws_session_token = T2\n[half]\naws_access_key_id=A3\n";
        assert_eq!(
            keys(&aws_profile(text, "default").unwrap()),
            ("AKID".into(), "SECRET".into(), None)
        );
        assert_eq!(
            keys(&aws_profile(text, "ci").unwrap()),
            ("A2".into(), "S2".into(), Some("T2".into()))
        );
        let e = aws_profile(text, "half").unwrap_err();
        assert!(e.contains("lacks"), "{e}");
        assert!(!e.contains("A3"));
        assert!(aws_profile(text, "nope")
            .unwrap_err()
            .contains("no profile"));
    }

    #[test]
    fn route_mutations_win_over_backend_ones() {
        let backend = Mutations {
            headers_set: vec![("a".into(), "1".into()), ("b".into(), "1".into())],
            headers_remove: vec!["c".into(), "d".into()],
            body_set: vec![("x".into(), json!(1))],
            body_remove: vec!["y".into()],
        };
        let route = Mutations {
            headers_set: vec![("c".into(), "2".into())],
            headers_remove: vec!["a".into()],
            body_set: vec![("y".into(), json!(2))],
            body_remove: vec![],
        };
        let m = backend.overlaid(&route);
        assert_eq!(
            m.headers_set,
            vec![("c".to_string(), "2".to_string()), ("b".into(), "1".into())]
        );
        assert_eq!(m.headers_remove, vec!["a".to_string(), "d".into()]);
        assert_eq!(
            m.body_set,
            vec![("y".to_string(), json!(2)), ("x".into(), json!(1))]
        );
        assert!(m.body_remove.is_empty());
    }

    #[test]
    fn token_hosts_name_their_clusters() {
        let c = |url: &str| Callout::parse(url).map(|c| c.host.cluster());
        assert_eq!(
            c("https://login.microsoftonline.com/t/oauth2/v2.0/token").unwrap(),
            "aigw_token_login_microsoftonline_com"
        );
        assert_eq!(
            c("https://STS.eu-west-1.amazonaws.com/").unwrap(),
            "aigw_token_sts_eu-west-1_amazonaws_com"
        );
        assert_eq!(
            c("https://idp.example.com:8443/realms/x").unwrap(),
            "aigw_token_idp_example_com_8443"
        );
        assert_eq!(
            c("http://127.0.0.1:8089/token").unwrap(),
            "aigw_token_http_127_0_0_1_8089"
        );
        assert_eq!(c("http://[::1]/t").unwrap(), "aigw_token_http___1");
        let h = Callout::parse("http://[::1]:9000/t").unwrap().host;
        assert_eq!(
            (h.host.as_str(), h.port, h.tls, h.is_ip()),
            ("::1", 9000, false, true)
        );
        for (bad, why) in [
            ("idp.example.com/token", "must start with https://"),
            ("https:///token", "no usable host"),
            ("https://idp.example.com:0/t", "invalid port"),
            ("https://idp.example.com:99999/t", "invalid port"),
            ("https://a:b:c/t", "invalid port"),
            ("https://[zz]/t", "no usable host"),
        ] {
            let e = c(bad).unwrap_err();
            assert!(e.contains(why), "{bad}: {e}");
        }
    }

    #[test]
    fn exchanges_read_their_one_secret_from_a_file_or_variable() {
        let cc = ClientCredentials {
            idp: IdpUrl::Issuer(Callout::parse("https://idp.example.com").unwrap()),
            client_id: "gw".into(),
            client_secret: SecretSource::Value(SecretValue::new("s3cret")),
            scopes: vec![],
        };
        let auth = Auth::AwsSigV4 {
            region: None,
            keys: AwsKeys::WebIdentity(Box::new(WebIdentity {
                role_arn: "arn:aws:iam::1:role/r".into(),
                session_name: "ai-gateway-p".into(),
                token: cc.clone(),
                sts: Callout::parse("https://sts.us-east-1.amazonaws.com/").unwrap(),
            })),
        };
        let on_file = auth.from_file("/etc/aigw/credentials/ns/idp/client-secret", None);
        assert_eq!(
            on_file.file(),
            Some("/etc/aigw/credentials/ns/idp/client-secret")
        );
        let j = auth.from_env("AIGW_IDP_CLIENT_SECRET", None).to_json();
        assert_eq!(
            j["awsSigV4"]["webIdentity"]["token"]["clientCredentials"]["clientSecret"],
            json!({"env": "AIGW_IDP_CLIENT_SECRET"})
        );
        assert_eq!(
            j["awsSigV4"]["webIdentity"]["sts"]["cluster"],
            "aigw_token_sts_us-east-1_amazonaws_com"
        );
        let hosts: Vec<String> = auth.token_hosts().iter().map(|h| h.cluster()).collect();
        assert_eq!(
            hosts,
            [
                "aigw_token_idp_example_com",
                "aigw_token_sts_us-east-1_amazonaws_com"
            ]
        );

        let azure = Auth::Exchange(Box::new(Exchange::Azure {
            tenant_id: "t".into(),
            client_id: "c".into(),
            credential: AzureCredential::Federated(cc),
            token: Callout::parse("https://login.microsoftonline.com/t/oauth2/v2.0/token").unwrap(),
        }));
        assert!(azure.file().is_none());
        let j = azure.from_file("/s", None).to_json();
        assert_eq!(
            j["azureEntraId"]["federatedToken"]["clientCredentials"]["clientSecret"],
            json!({"file": "/s"})
        );
        assert_eq!(j["azureEntraId"]["clientId"], "c");
        let key = Auth::Exchange(Box::new(Exchange::GcpServiceAccount {
            key: SecretSource::Value(SecretValue::new("{}")),
            token: Callout::parse("https://oauth2.googleapis.com/token")
                .unwrap()
                .host,
        }));
        assert_eq!(
            key.from_env("K", None).to_json(),
            json!({"gcpServiceAccount": {"key": {"env": "K"}, "token": {"cluster": "aigw_token_oauth2_googleapis_com"}}})
        );
    }

    #[test]
    fn authorities() {
        assert_eq!(authority("api.openai.com", 443, true), "api.openai.com");
        assert_eq!(authority("llm.local", 8443, true), "llm.local:8443");
        assert_eq!(authority("llm.local", 80, false), "llm.local");
        assert_eq!(authority("llm.local", 443, false), "llm.local:443");
    }
}
