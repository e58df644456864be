//! Envoy AI Gateway's BackendSecurityPolicy applied to one AIServiceBackend: what
//! goes into the filter backend's `auth`, `region`, `project`,
//! `credentialOverride` and `forwardClientCredentials`.
//!
//! API keys and AWS keys are resolved from the input's Secrets (or, with the
//! [`CREDENTIALS_FILE_ANNOTATION`], left to a file the filter reads). Mechanisms
//! that need a token exchange with a cloud provider (Azure Entra ID, GCP service
//! accounts and workload identity, AWS OIDC → STS) cannot be compiled offline:
//! without the annotation they are warnings naming the field, and requests go out
//! without credentials.

use crate::credentials::{
    aws_profile, is_header_name, reserved_header, Auth, AwsKeys, SecretOrigin, SecretSource,
    Secrets, CREDENTIALS_FILE_ANNOTATION,
};
use crate::diag::Reporter;
use crate::resources::{BackendSecurityPolicy, PolicyCredential};

/// What a policy gives one backend.
#[derive(Clone, Debug, Default)]
pub(crate) struct Applied {
    pub auth: Option<Auth>,
    pub region: Option<String>,
    pub project: Option<String>,
    pub forward_client_credentials: bool,
    pub credential_override: Option<String>,
    /// The Secret key `auth`'s value was read from (not with a credentials file).
    pub secret: Option<SecretOrigin>,
    /// The policy field the credential came from (`spec.apiKey`...).
    pub path: &'static str,
    /// Index of the policy among the inputs (set by the caller).
    pub policy: Option<usize>,
}

fn annotation_path() -> String {
    format!("metadata.annotations.{CREDENTIALS_FILE_ANNOTATION}")
}

/// Applies policy `p` to a backend of schema `schema` (AIServiceBackend `backend`,
/// named in messages). Problems are reported on the policy.
pub(crate) fn apply(
    p: &BackendSecurityPolicy,
    schema: &str,
    backend: &str,
    secrets: &Secrets<'_>,
    r: &mut Reporter<'_>,
) -> Applied {
    let mut out = Applied::default();
    let file = p.credentials_file.clone();
    let secret = |i: usize, r: &mut Reporter<'_>| {
        let s = &p.secrets[i];
        match secrets.value(&s.namespace, &s.name, s.key) {
            Ok(v) => Some(v),
            Err(e) => {
                r.error(s.path.as_str(), e);
                None
            }
        }
    };
    let origin = |i: usize, profile: Option<String>| {
        let s = &p.secrets[i];
        SecretOrigin {
            namespace: s.namespace.clone(),
            name: s.name.clone(),
            key: s.key.to_string(),
            profile,
            field: s.path.clone(),
        }
    };
    let kind = p.kind.as_deref().unwrap_or_default();
    match &p.credential {
        None => {}
        Some(PolicyCredential::ApiKey { secret: s, header }) => {
            out.path = match kind {
                "AzureAPIKey" => "spec.azureAPIKey",
                "AnthropicAPIKey" => "spec.anthropicAPIKey",
                _ => "spec.apiKey",
            };
            let key = match (file, s) {
                (Some(f), _) => Some(SecretSource::File(f)),
                (None, Some(i)) => {
                    out.secret = Some(origin(*i, None));
                    secret(*i, r).map(SecretSource::Value)
                }
                (None, None) => None,
            };
            out.auth = key.map(|key| Auth::ApiKey {
                key,
                header: Some(header.to_string()),
            });
        }
        Some(PolicyCredential::Aws {
            region,
            file: creds,
            oidc,
        }) => {
            out.path = "spec.awsCredentials";
            out.region = region.clone();
            let keys = match (file, creds) {
                (Some(f), c) => Some(AwsKeys::File {
                    path: f,
                    profile: c
                        .as_ref()
                        .map(|(_, prof)| prof.clone())
                        .filter(|prof| prof != "default"),
                }),
                (None, Some((Some(i), profile))) => {
                    let named = Some(profile.clone()).filter(|prof| prof != "default");
                    out.secret = Some(origin(*i, named));
                    secret(*i, r).and_then(|text| match aws_profile(text.expose(), profile) {
                        Ok(k) => Some(k),
                        Err(e) => {
                            let s = &p.secrets[*i];
                            r.error(
                                "spec.awsCredentials.credentialsFile.profile",
                                format!("Secret {}/{} key 'credentials' {e}", s.namespace, s.name),
                            );
                            None
                        }
                    })
                }
                (None, Some((None, _))) => None,
                (None, None) if *oidc => {
                    r.warn(
                        "spec.awsCredentials.oidcExchangeToken",
                        format!("not enforced: the OIDC to AWS STS exchange cannot be done by the compiler, so requests to {backend} are not signed; give a credentials file kept fresh by another process with the {CREDENTIALS_FILE_ANNOTATION} annotation"),
                    );
                    None
                }
                (None, None) => {
                    r.warn(
                        "spec.awsCredentials",
                        format!("not enforced: the AWS default credential chain is not available to the filter, so requests to {backend} are not signed; set credentialsFile or the {CREDENTIALS_FILE_ANNOTATION} annotation"),
                    );
                    None
                }
            };
            out.auth = keys.map(|keys| Auth::AwsSigV4 { region: None, keys });
        }
        Some(PolicyCredential::Token { field }) => {
            out.path = field;
            match file {
                Some(f) => out.auth = Some(Auth::Bearer(SecretSource::File(f))),
                None => r.warn(
                    *field,
                    format!("not enforced: the exchange for an access token cannot be done by the compiler, so requests to {backend} carry no credential; give a token file kept fresh by another process with the {CREDENTIALS_FILE_ANNOTATION} annotation"),
                ),
            }
        }
        Some(PolicyCredential::Gcp {
            project,
            region,
            passthrough,
        }) => {
            out.path = "spec.gcpCredentials";
            out.project = project.clone();
            out.region = region.clone();
            if *passthrough {
                out.forward_client_credentials = true;
                if file.is_some() {
                    r.warn(
                        annotation_path(),
                        "ignored: isPassthrough sends the client's own credentials",
                    );
                }
                if matches!(schema, "GCPVertexAI" | "GCPAnthropic")
                    && (project.is_none() || region.is_none())
                {
                    r.error(
                        "spec.gcpCredentials",
                        format!("projectName and region are needed for {backend} (schema {schema}): the filter does not take them from per-request headers"),
                    );
                }
            } else if let Some(f) = file {
                out.auth = Some(Auth::Bearer(SecretSource::File(f)));
            } else {
                r.warn(
                    "spec.gcpCredentials",
                    format!("not enforced: the exchange for a GCP access token (service account or workload identity) cannot be done by the compiler, so requests to {backend} carry no credential; give a token file kept fresh by another process with the {CREDENTIALS_FILE_ANNOTATION} annotation"),
                );
            }
        }
    }

    if let Some(o) = &p.credential_override {
        let default = match kind {
            "APIKey" => Some("x-aigw-api-key"),
            "AnthropicAPIKey" => Some("x-aigw-anthropic-api-key"),
            "AzureAPIKey" => Some("x-aigw-azure-api-key"),
            "AzureCredentials" => Some("x-aigw-azure-access-token"),
            "GCPCredentials" => Some("x-aigw-gcp-access-token"),
            _ => None,
        };
        let hp = format!("{}.header", o.path);
        let header = o.header.as_deref().or(default).map(str::to_ascii_lowercase);
        if kind == "AWSCredentials" {
            r.error(
                o.path.as_str(),
                "is not supported with AWSCredentials: the filter cannot replace SigV4 signing with a per-request credential",
            );
        } else if let Some(h) = header {
            if !is_header_name(&h) {
                r.error(hp, format!("'{h}' is not a valid header name"));
            } else if reserved_header(&h) {
                let why = if o.header.is_none() {
                    format!("the default header '{h}' is reserved by the filter (x-aigw-*): set header to another name")
                } else {
                    format!("'{h}' is reserved by the filter")
                };
                r.error(
                    if o.header.is_none() {
                        o.path.clone()
                    } else {
                        hp
                    },
                    why,
                );
            } else {
                if !o.fallback {
                    if kind == "AzureCredentials" && schema == "AzureOpenAI" {
                        r.error(
                            format!("{}.fallbackToConfigured", o.path),
                            format!("false is not supported for {backend}: without a configured token the filter would send the per-request token as an api-key"),
                        );
                    }
                    // No configured credential: the filter answers 401 without the header.
                    out.auth = None;
                    out.secret = None;
                }
                out.credential_override = Some(h);
            }
        }
    }
    out
}
