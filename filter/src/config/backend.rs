//! A backend: one provider endpoint, the API schema it speaks, how to authenticate to
//! it, and the edits its requests get. Parsed from the `backends[]` of the
//! configuration document and validated there (see [`crate::config`]).

use std::sync::Arc;

use serde::Deserialize;
use serde_json::Value;

use crate::auth::exchange::ExchangeSpec;
use crate::auth::secrets::Secret;
use crate::auth::sigv4::Credentials;
use crate::config::exchange::{
    RawAssumeRole, RawAzure, RawGoogleServiceAccount, RawGoogleWorkloadIdentity, RawWebIdentity,
};
use crate::config::quota::RawPrice;
use crate::config::ConfigError;
use crate::metering::prices::ModelPrice;

/// The wire schema a backend speaks, with what its paths need.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum BackendSchema {
    /// OpenAI's API or any server compatible with it. `prefix` replaces `/v1` in the
    /// client's path (`schema.version`, default `v1`).
    OpenAI { prefix: String },
    /// Mistral's API: OpenAI-compatible under `/v1`.
    Mistral,
    /// Azure OpenAI: `/openai/deployments/{model}/...?api-version=`.
    AzureOpenAI { api_version: String },
    /// AWS Bedrock Converse (any model Bedrock serves; embeddings with Titan).
    AwsBedrock,
    /// Anthropic models on AWS Bedrock through InvokeModel (Messages bodies).
    AwsAnthropic { version: Option<String> },
    /// Anthropic's own API.
    Anthropic { version: Option<String> },
    /// Anthropic models on GCP Vertex AI (rawPredict).
    GcpAnthropic {
        project: String,
        region: String,
        version: Option<String>,
    },
    /// Gemini on GCP Vertex AI.
    GcpVertexAi {
        project: String,
        region: String,
        version: Option<String>,
    },
    /// Gemini on Google AI Studio (`generativelanguage.googleapis.com`).
    Gemini { version: Option<String> },
    /// Cohere's own API (`api.cohere.com`): rerank, `/{version}/rerank` (default `v2`).
    Cohere { version: String },
}

/// The schema names a configuration may use.
pub const SCHEMA_NAMES: &[&str] = &[
    "OpenAI",
    "Mistral",
    "AzureOpenAI",
    "AWSBedrock",
    "AWSAnthropic",
    "Anthropic",
    "GCPAnthropic",
    "GCPVertexAI",
    "Gemini",
    "Cohere",
];

/// Default Azure OpenAI `api-version` (a GA version).
pub const DEFAULT_AZURE_API_VERSION: &str = "2024-10-21";

impl BackendSchema {
    /// Whether the backend speaks OpenAI's wire format (requests pass through).
    pub fn is_openai_family(&self) -> bool {
        matches!(
            self,
            BackendSchema::OpenAI { .. }
                | BackendSchema::Mistral
                | BackendSchema::AzureOpenAI { .. }
        )
    }

    /// Whether the backend speaks Anthropic's Messages format.
    pub fn is_anthropic_family(&self) -> bool {
        matches!(
            self,
            BackendSchema::Anthropic { .. }
                | BackendSchema::AwsAnthropic { .. }
                | BackendSchema::GcpAnthropic { .. }
        )
    }

    /// The provider's public host, when it has one fixed host (or one per region).
    fn default_host(&self, region: Option<&str>) -> Option<String> {
        match self {
            BackendSchema::Mistral => Some("api.mistral.ai".into()),
            BackendSchema::AwsBedrock | BackendSchema::AwsAnthropic { .. } => {
                region.map(|r| format!("bedrock-runtime.{r}.amazonaws.com"))
            }
            BackendSchema::Anthropic { .. } => Some("api.anthropic.com".into()),
            BackendSchema::GcpAnthropic { region, .. }
            | BackendSchema::GcpVertexAi { region, .. } => Some(if region == "global" {
                "aiplatform.googleapis.com".into()
            } else {
                format!("{region}-aiplatform.googleapis.com")
            }),
            BackendSchema::Gemini { .. } => Some("generativelanguage.googleapis.com".into()),
            BackendSchema::Cohere { .. } => Some("api.cohere.com".into()),
            BackendSchema::OpenAI { .. } | BackendSchema::AzureOpenAI { .. } => None,
        }
    }

    /// The header an API key travels in for this schema.
    fn api_key_header(&self) -> KeyHeader {
        match self {
            BackendSchema::AzureOpenAI { .. } => KeyHeader::Named("api-key".into()),
            BackendSchema::Anthropic { .. } => KeyHeader::Named("x-api-key".into()),
            BackendSchema::Gemini { .. } => KeyHeader::Named("x-goog-api-key".into()),
            _ => KeyHeader::Bearer,
        }
    }
}

/// Where an API key goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KeyHeader {
    /// `authorization: Bearer <key>`.
    Bearer,
    /// `<name>: <key>`.
    Named(String),
}

/// AWS credentials: given, read from a credentials file (INI, one profile), or
/// temporary ones from STS.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum AwsCredentials {
    Static(Credentials),
    /// A shared credentials file's text, from a file or an environment variable.
    File {
        source: Secret,
        profile: String,
    },
    /// From an STS exchange the gateway makes (web identity, assume role).
    Exchanged(Arc<ExchangeSpec>),
}

/// How the gateway authenticates to a backend.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Auth {
    ApiKey {
        key: Secret,
        header: KeyHeader,
    },
    /// An OAuth access token (Azure Entra ID, GCP), `authorization: Bearer`.
    BearerToken(Secret),
    /// An OAuth access token the gateway exchanges for itself (Azure Entra ID,
    /// Google), `authorization: Bearer`.
    Exchanged(Arc<ExchangeSpec>),
    AwsSigV4 {
        region: String,
        service: String,
        credentials: AwsCredentials,
    },
}

/// Header edits applied to every request sent to the backend.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HeaderMutation {
    pub set: Vec<(String, String)>,
    pub remove: Vec<String>,
}

/// Top-level field edits of the body sent to the backend (after translation).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct BodyMutation {
    pub set: Vec<(String, Value)>,
    pub remove: Vec<String>,
}

impl BodyMutation {
    pub fn is_empty(&self) -> bool {
        self.set.is_empty() && self.remove.is_empty()
    }
}

/// An AWS Lambda function a backend's requests invoke (`backends[].lambda`): the
/// function gets the request body for the backend's schema and answers for it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LambdaFunction {
    /// A name, a partial ARN (`123456789012:function:name`) or a full ARN.
    pub function_name: String,
    /// A version or alias (`Qualifier` query parameter).
    pub qualifier: Option<String>,
    pub invocation: InvocationMode,
}

/// How a Lambda function is invoked (`X-Amz-Invocation-Type`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InvocationMode {
    /// `RequestResponse`: the function's answer is the client's.
    Sync,
    /// `Event`: queued; the client gets Lambda's 202 with no body.
    Async,
}

/// One provider endpoint the gateway can send a request to.
#[derive(Clone, Debug, PartialEq)]
pub struct Backend {
    pub name: String,
    pub schema: BackendSchema,
    /// Replaces the request's `model` before it goes upstream.
    pub model_name_override: Option<String>,
    /// The `:authority` requests carry upstream (a provider's default when unset).
    pub host: Option<String>,
    pub auth: Option<Auth>,
    /// A client header whose value, when present, is used as this request's
    /// credential instead of the configured one.
    pub credential_override: Option<String>,
    /// Let the client's own credential headers through to the provider.
    pub forward_client_credentials: bool,
    pub header_mutation: HeaderMutation,
    pub body_mutation: BodyMutation,
    /// What its answers cost, before the document's and the catalog's prices.
    pub prices: Vec<ModelPrice>,
    /// Reached by invoking this AWS Lambda function (SigV4, service `lambda`).
    pub lambda: Option<LambdaFunction>,
}

impl Backend {
    /// Files the host must read for this backend's credentials.
    pub fn secret_files(&self) -> Vec<&str> {
        self.secret_sources()
            .into_iter()
            .filter_map(|s| match s {
                Secret::File(p) => Some(p.as_str()),
                _ => None,
            })
            .collect()
    }

    /// Environment variables the host must read for this backend's credentials.
    pub fn secret_env(&self) -> Vec<&str> {
        self.secret_sources()
            .into_iter()
            .filter_map(|s| match s {
                Secret::Env(name) => Some(name.as_str()),
                _ => None,
            })
            .collect()
    }

    fn secret_sources(&self) -> Vec<&Secret> {
        match &self.auth {
            Some(Auth::ApiKey { key: s, .. })
            | Some(Auth::BearerToken(s))
            | Some(Auth::AwsSigV4 {
                credentials: AwsCredentials::File { source: s, .. },
                ..
            }) => vec![s],
            Some(Auth::Exchanged(spec))
            | Some(Auth::AwsSigV4 {
                credentials: AwsCredentials::Exchanged(spec),
                ..
            }) => spec.secrets(),
            _ => Vec::new(),
        }
    }

    /// The exchange the gateway makes for this backend's credential, if any.
    pub fn exchange(&self) -> Option<&Arc<ExchangeSpec>> {
        match &self.auth {
            Some(Auth::Exchanged(spec))
            | Some(Auth::AwsSigV4 {
                credentials: AwsCredentials::Exchanged(spec),
                ..
            }) => Some(spec),
            _ => None,
        }
    }

    /// The header a per-request credential (override) goes in, by schema.
    pub fn override_header(&self) -> KeyHeader {
        match &self.auth {
            Some(Auth::ApiKey { header, .. }) => header.clone(),
            Some(Auth::BearerToken(_) | Auth::Exchanged(_)) => KeyHeader::Bearer,
            _ => self.schema.api_key_header(),
        }
    }
}

// ---------------------------------------------------------------------------------
// The document's form.

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(crate) struct RawBackend {
    pub name: String,
    schema: RawSchema,
    #[serde(default)]
    model_name_override: Option<String>,
    #[serde(default)]
    host: Option<String>,
    #[serde(default)]
    region: Option<String>,
    #[serde(default)]
    project: Option<String>,
    #[serde(default)]
    auth: Option<RawAuth>,
    #[serde(default)]
    credential_override: Option<RawCredentialOverride>,
    #[serde(default)]
    forward_client_credentials: bool,
    #[serde(default)]
    header_mutation: Option<RawHeaderMutation>,
    #[serde(default)]
    body_mutation: Option<RawBodyMutation>,
    #[serde(default)]
    prices: Vec<RawPrice>,
    #[serde(default)]
    lambda: Option<RawLambda>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawLambda {
    function_name: String,
    #[serde(default)]
    qualifier: Option<String>,
    #[serde(default)]
    invocation_mode: Option<String>,
}

impl RawLambda {
    fn compile(self, p: &str) -> Result<LambdaFunction, ConfigError> {
        // Lambda's own limits: a name of letters, digits, '-' and '_', up to 64
        // characters, or an ARN (':'-separated) of one, up to 170 in all.
        let name = &self.function_name;
        let ok = !name.is_empty()
            && name.len() <= 170
            && name.split(':').all(|part| {
                !part.is_empty() && part.bytes().all(lambda_name_byte) || part == "$LATEST"
            });
        if !ok {
            return Err(err(
                format!("{p}.functionName"),
                "must be a function name (letters, digits, '-', '_') or its ARN",
            ));
        }
        let qualifier = match self.qualifier {
            None => None,
            Some(q) => {
                let ok = q == "$LATEST"
                    || (!q.is_empty() && q.len() <= 128 && q.bytes().all(lambda_name_byte));
                if !ok {
                    return Err(err(
                        format!("{p}.qualifier"),
                        "must be a version, an alias (letters, digits, '-', '_') or $LATEST",
                    ));
                }
                Some(q)
            }
        };
        let invocation = match self.invocation_mode.as_deref() {
            None | Some("Sync") => InvocationMode::Sync,
            Some("Async") => InvocationMode::Async,
            Some(other) => {
                return Err(err(
                    format!("{p}.invocationMode"),
                    format!("unsupported mode '{other}', expected Sync or Async"),
                ))
            }
        };
        Ok(LambdaFunction {
            function_name: self.function_name,
            qualifier,
            invocation,
        })
    }
}

/// A Lambda backend's invocation type is the gateway's to set (`invocationMode`),
/// and is signed with the request.
fn lambda_owned(lambda: bool, name: &str, path: &str) -> Result<(), ConfigError> {
    if lambda && name == crate::translate::lambda::INVOCATION_TYPE_HEADER {
        return Err(err(
            path,
            format!(
                "'{name}' is set by the gateway for a Lambda backend: use lambda.invocationMode"
            ),
        ));
    }
    Ok(())
}

fn lambda_name_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'-' || b == b'_'
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawSchema {
    name: String,
    #[serde(default)]
    version: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawAuth {
    #[serde(default)]
    api_key: Option<RawApiKey>,
    #[serde(default)]
    bearer_token: Option<RawSecret>,
    #[serde(default)]
    aws_sig_v4: Option<RawSigV4>,
    #[serde(default)]
    azure_entra_id: Option<RawAzure>,
    #[serde(default)]
    gcp_service_account: Option<RawGoogleServiceAccount>,
    #[serde(default)]
    gcp_workload_identity: Option<RawGoogleWorkloadIdentity>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(crate) struct RawSecret {
    #[serde(default)]
    value: Option<String>,
    #[serde(default)]
    file: Option<String>,
    #[serde(default)]
    env: Option<String>,
}

impl RawSecret {
    pub(crate) fn compile(self, path: &str) -> Result<Secret, ConfigError> {
        secret(self.value, self.file, self.env, path)
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawApiKey {
    #[serde(default)]
    value: Option<String>,
    #[serde(default)]
    file: Option<String>,
    #[serde(default)]
    env: Option<String>,
    /// Header name; `authorization` means `Bearer <key>`.
    #[serde(default)]
    header: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawSigV4 {
    #[serde(default)]
    region: Option<String>,
    #[serde(default)]
    service: Option<String>,
    #[serde(default)]
    access_key_id: Option<String>,
    #[serde(default)]
    secret_access_key: Option<String>,
    #[serde(default)]
    session_token: Option<String>,
    #[serde(default)]
    credentials_file: Option<String>,
    /// An environment variable holding a shared credentials file's text.
    #[serde(default)]
    credentials_env: Option<String>,
    #[serde(default)]
    profile: Option<String>,
    /// Temporary keys from STS for an OIDC token.
    #[serde(default)]
    web_identity: Option<RawWebIdentity>,
    /// Temporary keys from STS for a role, signed with the keys above.
    #[serde(default)]
    assume_role: Option<RawAssumeRole>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawCredentialOverride {
    header: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawHeaderMutation {
    #[serde(default)]
    set: Vec<RawHeader>,
    #[serde(default)]
    remove: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawHeader {
    name: String,
    value: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawBodyMutation {
    #[serde(default)]
    set: Vec<RawField>,
    #[serde(default)]
    remove: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawField {
    field: String,
    value: Value,
}

pub(crate) fn err(path: impl Into<String>, message: impl Into<String>) -> ConfigError {
    ConfigError {
        path: path.into(),
        message: message.into(),
    }
}

/// Headers the gateway owns: a mutation may not touch them.
pub fn reserved_header(name: &str) -> bool {
    name.starts_with(':')
        || name.starts_with(crate::INTERNAL_HEADER_PREFIX)
        || matches!(
            name,
            crate::MODEL_HEADER | "host" | "content-length" | "transfer-encoding"
        )
}

/// Whether `name` is a header name as HTTP allows it (token characters).
pub fn is_header_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// A header name as HTTP allows it, lower-cased.
fn header_name(name: &str, path: &str) -> Result<String, ConfigError> {
    if !is_header_name(name) {
        return Err(err(path, format!("'{name}' is not a valid header name")));
    }
    Ok(name.to_ascii_lowercase())
}

fn header_value(value: &str, path: &str) -> Result<(), ConfigError> {
    if value.bytes().any(|b| b == b'\r' || b == b'\n' || b == 0) {
        return Err(err(path, "a header value may not contain CR, LF or NUL"));
    }
    Ok(())
}

fn non_empty(v: Option<String>, path: &str, what: &str) -> Result<String, ConfigError> {
    match v {
        Some(s) if !s.trim().is_empty() => Ok(s),
        Some(_) => Err(err(path, "must not be empty")),
        None => Err(err(path, format!("is required for {what}"))),
    }
}

pub(crate) fn secret(
    value: Option<String>,
    file: Option<String>,
    env: Option<String>,
    path: &str,
) -> Result<Secret, ConfigError> {
    match (value, file, env) {
        (Some(v), None, None) if !v.is_empty() => Ok(Secret::Inline(Arc::from(v.trim()))),
        (None, Some(f), None) if !f.is_empty() => Ok(Secret::File(f)),
        (None, None, Some(e)) => env_name(&e, &format!("{path}.env")).map(|_| Secret::Env(e)),
        (Some(_), None, None) => Err(err(format!("{path}.value"), "must not be empty")),
        (None, Some(_), None) => Err(err(format!("{path}.file"), "must not be empty")),
        _ => Err(err(
            path,
            "exactly one of 'value', 'file' or 'env' is required",
        )),
    }
}

/// An environment variable's name, as a shell would take it.
fn env_name(name: &str, path: &str) -> Result<(), ConfigError> {
    let ok = name
        .bytes()
        .next()
        .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(err(
            path,
            "must be an environment variable name (letters, digits, '_'; not starting with a digit)",
        ))
    }
}

impl RawBackend {
    pub(crate) fn compile(self, p: &str) -> Result<Backend, ConfigError> {
        if self.name.is_empty() {
            return Err(err(format!("{p}.name"), "must not be empty"));
        }
        let version = self.schema.version.filter(|v| !v.is_empty());
        let sp = format!("{p}.schema.name");
        let region = self.region.filter(|r| !r.is_empty());
        let schema = match self.schema.name.as_str() {
            "OpenAI" => {
                let prefix = version.unwrap_or_else(|| "v1".into());
                let prefix = format!("/{}", prefix.trim_matches('/'));
                BackendSchema::OpenAI {
                    prefix: if prefix == "/" { String::new() } else { prefix },
                }
            }
            "Mistral" => BackendSchema::Mistral,
            "Cohere" => BackendSchema::Cohere {
                version: version.map_or_else(|| "v2".into(), |v| v.trim_matches('/').to_string()),
            },
            "AzureOpenAI" => BackendSchema::AzureOpenAI {
                api_version: version.unwrap_or_else(|| DEFAULT_AZURE_API_VERSION.into()),
            },
            "AWSBedrock" => BackendSchema::AwsBedrock,
            "AWSAnthropic" => BackendSchema::AwsAnthropic { version },
            "Anthropic" => BackendSchema::Anthropic { version },
            "GCPAnthropic" | "GCPVertexAI" => {
                let project = non_empty(self.project, &format!("{p}.project"), &self.schema.name)?;
                let region = non_empty(region.clone(), &format!("{p}.region"), &self.schema.name)?;
                if self.schema.name == "GCPAnthropic" {
                    BackendSchema::GcpAnthropic {
                        project,
                        region,
                        version,
                    }
                } else {
                    BackendSchema::GcpVertexAi {
                        project,
                        region,
                        version,
                    }
                }
            }
            "Gemini" => BackendSchema::Gemini { version },
            other => {
                return Err(err(
                    sp,
                    format!(
                        "unsupported schema '{other}', expected one of: {}",
                        SCHEMA_NAMES.join(", ")
                    ),
                ))
            }
        };
        if matches!(&self.model_name_override, Some(m) if m.is_empty()) {
            return Err(err(format!("{p}.modelNameOverride"), "must not be empty"));
        }
        if let Some(h) = &self.host {
            let bad = h.is_empty() || h.bytes().any(|b| b.is_ascii_whitespace() || b == b'/');
            if bad {
                return Err(err(
                    format!("{p}.host"),
                    "must be a host name, optionally with :port",
                ));
            }
        }
        let lambda = match self.lambda {
            None => None,
            Some(l) => {
                let lp = format!("{p}.lambda");
                if !matches!(
                    schema,
                    BackendSchema::OpenAI { .. } | BackendSchema::Anthropic { .. }
                ) {
                    return Err(err(
                        sp,
                        "a Lambda function is given the request of an OpenAI or Anthropic schema: use one of those",
                    ));
                }
                Some(l.compile(&lp)?)
            }
        };
        let auth = match self.auth {
            None => None,
            Some(a) => Some(compile_auth(
                a,
                &schema,
                region.as_deref(),
                if lambda.is_some() {
                    "lambda"
                } else {
                    "bedrock"
                },
                &format!("{p}.auth"),
            )?),
        };
        let host = match (self.host, &lambda) {
            (Some(h), _) => Some(h),
            (None, Some(_)) => {
                // The signing region, else the backend's.
                let signing = match &auth {
                    Some(Auth::AwsSigV4 { region, .. }) => Some(region.as_str()),
                    _ => None,
                };
                signing
                    .or(region.as_deref())
                    .map(crate::translate::lambda::default_host)
            }
            (None, None) => schema.default_host(region.as_deref()),
        };
        if lambda.is_some() {
            if matches!(&auth, Some(a) if !matches!(a, Auth::AwsSigV4 { .. })) {
                return Err(err(
                    format!("{p}.auth"),
                    "a Lambda backend is signed with SigV4: use awsSigV4",
                ));
            }
            if host.is_none() {
                return Err(err(
                    format!("{p}.region"),
                    "a Lambda backend needs 'region' (or 'host') to know where to send requests",
                ));
            }
            if self.credential_override.is_some() {
                return Err(err(
                    format!("{p}.credentialOverride"),
                    "a per-request credential cannot invoke a Lambda function",
                ));
            }
        }
        if matches!(
            schema,
            BackendSchema::AwsBedrock | BackendSchema::AwsAnthropic { .. }
        ) && host.is_none()
        {
            return Err(err(
                format!("{p}.region"),
                "an AWS backend needs 'region' (or 'host') to know where to send requests",
            ));
        }
        let credential_override = match self.credential_override {
            None => None,
            Some(o) => {
                let path = format!("{p}.credentialOverride.header");
                let name = header_name(&o.header, &path)?;
                if reserved_header(&name) {
                    return Err(err(path, format!("'{name}' is reserved for the gateway")));
                }
                if matches!(auth, Some(Auth::AwsSigV4 { .. })) {
                    return Err(err(
                        path,
                        "a per-request credential cannot replace SigV4 signing",
                    ));
                }
                Some(name)
            }
        };
        let mut header_mutation = HeaderMutation::default();
        if let Some(m) = self.header_mutation {
            for (i, h) in m.set.into_iter().enumerate() {
                let path = format!("{p}.headerMutation.set[{i}]");
                let name = header_name(&h.name, &format!("{path}.name"))?;
                if reserved_header(&name) {
                    return Err(err(
                        format!("{path}.name"),
                        format!("'{name}' is set by the gateway itself"),
                    ));
                }
                header_value(&h.value, &format!("{path}.value"))?;
                lambda_owned(lambda.is_some(), &name, &format!("{path}.name"))?;
                header_mutation.set.push((name, h.value));
            }
            for (i, h) in m.remove.into_iter().enumerate() {
                let path = format!("{p}.headerMutation.remove[{i}]");
                let name = header_name(&h, &path)?;
                if reserved_header(&name) {
                    return Err(err(path, format!("'{name}' is needed by the gateway")));
                }
                lambda_owned(lambda.is_some(), &name, &path)?;
                header_mutation.remove.push(name);
            }
        }
        let mut body_mutation = BodyMutation::default();
        if let Some(m) = self.body_mutation {
            for (i, f) in m.set.into_iter().enumerate() {
                if f.field.is_empty() {
                    return Err(err(
                        format!("{p}.bodyMutation.set[{i}].field"),
                        "must not be empty",
                    ));
                }
                body_mutation.set.push((f.field, f.value));
            }
            for (i, f) in m.remove.into_iter().enumerate() {
                if f.is_empty() {
                    return Err(err(
                        format!("{p}.bodyMutation.remove[{i}]"),
                        "must not be empty",
                    ));
                }
                body_mutation.remove.push(f);
            }
        }
        let mut prices = Vec::with_capacity(self.prices.len());
        for (i, raw) in self.prices.into_iter().enumerate() {
            prices.push(raw.compile(false, &format!("{p}.prices[{i}]"))?);
        }
        Ok(Backend {
            name: self.name,
            schema,
            model_name_override: self.model_name_override,
            host,
            auth,
            credential_override,
            forward_client_credentials: self.forward_client_credentials,
            header_mutation,
            body_mutation,
            prices,
            lambda,
        })
    }
}

fn compile_auth(
    a: RawAuth,
    schema: &BackendSchema,
    region: Option<&str>,
    default_service: &str,
    p: &str,
) -> Result<Auth, ConfigError> {
    let given = [
        a.api_key.is_some(),
        a.bearer_token.is_some(),
        a.aws_sig_v4.is_some(),
        a.azure_entra_id.is_some(),
        a.gcp_service_account.is_some(),
        a.gcp_workload_identity.is_some(),
    ];
    if given.iter().filter(|g| **g).count() != 1 {
        return Err(err(
            p,
            "exactly one of 'apiKey', 'bearerToken', 'awsSigV4', 'azureEntraId', 'gcpServiceAccount' or 'gcpWorkloadIdentity' is required",
        ));
    }
    if let Some(a) = a.azure_entra_id {
        let spec = a.compile(&format!("{p}.azureEntraId"))?;
        return Ok(Auth::Exchanged(Arc::new(spec)));
    }
    if let Some(g) = a.gcp_service_account {
        let spec = g.compile(&format!("{p}.gcpServiceAccount"))?;
        return Ok(Auth::Exchanged(Arc::new(spec)));
    }
    if let Some(g) = a.gcp_workload_identity {
        let spec = g.compile(&format!("{p}.gcpWorkloadIdentity"))?;
        return Ok(Auth::Exchanged(Arc::new(spec)));
    }
    if let Some(k) = a.api_key {
        let path = format!("{p}.apiKey");
        let key = secret(k.value, k.file, k.env, &path)?;
        let header = match k.header {
            None => schema.api_key_header(),
            Some(h) => {
                let name = header_name(&h, &format!("{path}.header"))?;
                if name == "authorization" {
                    KeyHeader::Bearer
                } else if reserved_header(&name) {
                    return Err(err(
                        format!("{path}.header"),
                        format!("'{name}' is reserved for the gateway"),
                    ));
                } else {
                    KeyHeader::Named(name)
                }
            }
        };
        return Ok(Auth::ApiKey { key, header });
    }
    if let Some(t) = a.bearer_token {
        return Ok(Auth::BearerToken(secret(
            t.value,
            t.file,
            t.env,
            &format!("{p}.bearerToken"),
        )?));
    }
    let Some(s) = a.aws_sig_v4 else {
        return Err(err(p, "no credentials"));
    };
    let path = format!("{p}.awsSigV4");
    let region = match s
        .region
        .filter(|r| !r.is_empty())
        .or(region.map(str::to_string))
    {
        Some(r) => r,
        None => {
            return Err(err(
                format!("{path}.region"),
                "is required (here or as the backend's 'region')",
            ))
        }
    };
    let service = s
        .service
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| default_service.into());
    let shared = match (s.credentials_file, s.credentials_env) {
        (Some(f), None) if !f.is_empty() => Some(Secret::File(f)),
        (Some(_), None) => return Err(err(format!("{path}.credentialsFile"), "must not be empty")),
        (None, Some(e)) => {
            env_name(&e, &format!("{path}.credentialsEnv"))?;
            Some(Secret::Env(e))
        }
        (Some(_), Some(_)) => {
            return Err(err(
                path,
                "give credentialsFile or credentialsEnv, not both",
            ))
        }
        (None, None) => None,
    };
    if let Some(w) = s.web_identity {
        let wp = format!("{path}.webIdentity");
        if s.access_key_id.is_some() || s.secret_access_key.is_some() || shared.is_some() {
            return Err(err(
                wp,
                "takes no other credentials: the role's temporary keys are used",
            ));
        }
        if s.assume_role.is_some() {
            return Err(err(path, "give webIdentity or assumeRole, not both"));
        }
        let spec = w.compile(&region, &wp)?;
        return Ok(Auth::AwsSigV4 {
            region,
            service,
            credentials: AwsCredentials::Exchanged(Arc::new(spec)),
        });
    }
    let assume_role = s.assume_role;
    let credentials =
        match (s.access_key_id, s.secret_access_key, shared) {
            (Some(id), Some(secret), None) => {
                if id.is_empty() {
                    return Err(err(format!("{path}.accessKeyId"), "must not be empty"));
                }
                if secret.is_empty() {
                    return Err(err(format!("{path}.secretAccessKey"), "must not be empty"));
                }
                AwsCredentials::Static(Credentials::new(id, secret, s.session_token))
            }
            (None, None, Some(source)) => {
                if s.session_token.is_some() {
                    return Err(err(
                        format!("{path}.sessionToken"),
                        "goes in the credentials file when one is used",
                    ));
                }
                AwsCredentials::File {
                    source,
                    profile: s
                        .profile
                        .filter(|p| !p.is_empty())
                        .unwrap_or_else(|| "default".into()),
                }
            }
            (Some(_), None, None) => {
                return Err(err(
                    format!("{path}.secretAccessKey"),
                    "is required with accessKeyId",
                ))
            }
            (None, Some(_), None) => {
                return Err(err(
                    format!("{path}.accessKeyId"),
                    "is required with secretAccessKey",
                ))
            }
            _ => return Err(err(
                path,
                "give either accessKeyId and secretAccessKey, or credentialsFile or credentialsEnv",
            )),
        };
    let credentials = match assume_role {
        None => credentials,
        Some(a) => {
            let spec = a.compile(credentials, &region, &format!("{path}.assumeRole"))?;
            AwsCredentials::Exchanged(Arc::new(spec))
        }
    };
    Ok(Auth::AwsSigV4 {
        region,
        service,
        credentials,
    })
}
