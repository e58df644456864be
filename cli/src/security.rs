//! Envoy AI Gateway's BackendSecurityPolicy applied to one AIServiceBackend: what
//! goes into the filter backend's `auth`, `region`, `project`,
//! `credentialOverride` and `forwardClientCredentials`.
//!
//! API keys and AWS keys are resolved from the input's Secrets (or, with the
//! [`CREDENTIALS_FILE_ANNOTATION`], left to a file the filter reads). Credentials
//! a cloud's token service issues are exchanged by the filter itself, as Envoy AI
//! Gateway's controller does: Azure Entra ID (client secret, or an OIDC token as
//! federated credential) → `azureEntraId`; a GCP service-account key →
//! `gcpServiceAccount`; GCP workload identity federation → `gcpWorkloadIdentity`;
//! AWS OIDC → STS → `awsSigV4.webIdentity`. Each OIDC token comes from a
//! client-credentials grant at the policy's OIDC provider. The secret each of them
//! needs (client secret, key file) is resolved like an API key; the token
//! services are reached through Envoy clusters named after their hosts
//! ([`crate::credentials::TokenHost::cluster`]), which the outputs define. The
//! AWS default credential chain and GCP application default credentials stay
//! warnings (`not enforced`).

use serde_json::Value;

use crate::credentials::{
    aws_profile, is_header_name, reserved_header, Auth, AwsKeys, AzureCredential, Callout,
    ClientCredentials, Exchange, SecretOrigin, SecretSource, Secrets, TokenHost, WebIdentity,
    CREDENTIALS_FILE_ANNOTATION,
};
use crate::diag::Reporter;
use crate::manifest::SecretValue;
use crate::resources::{
    AwsOidc, BackendSecurityPolicy, ClientId, GcpWorkloadIdentity, OidcGrant, PolicyCredential,
    SecretUse,
};

/// Entra ID's token endpoint for tenant `t` (the filter's default too).
fn azure_token_url(t: &str) -> String {
    format!("https://login.microsoftonline.com/{t}/oauth2/v2.0/token")
}
/// Where service-account keys without a `token_uri` get their tokens (the
/// filter's default too).
const GOOGLE_TOKEN_URI: &str = "https://oauth2.googleapis.com/token";
/// Google's STS and IAM credentials endpoints (the filter's defaults too).
const GOOGLE_STS_URL: &str = "https://sts.googleapis.com/v1/token";
const GOOGLE_IAM_URL: &str = "https://iamcredentials.googleapis.com";
/// AWS STS of `region` (the filter's default too).
fn aws_sts_url(region: &str) -> String {
    format!("https://sts.{region}.amazonaws.com/")
}

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

/// The key and value Secret use `s` names: its key, or for a key file that a
/// Secret with one key may name otherwise, that key. The error never holds a value.
pub(crate) fn secret_value(
    s: &SecretUse,
    secrets: &Secrets<'_>,
) -> Result<(String, SecretValue), String> {
    let key = if s.any_only_key {
        secrets.key_of(&s.namespace, &s.name, &[s.key], "key file")?
    } else {
        s.key.to_string()
    };
    let value = secrets.value(&s.namespace, &s.name, &key)?;
    Ok((key, value))
}

/// The STS session name of the policy's role sessions, as Envoy AI Gateway names
/// them (`ai-gateway-<policy name>`), cut to STS's 64 characters of
/// `[A-Za-z0-9_+=,.@-]`.
pub(crate) fn session_name(policy: &str) -> String {
    let mut s: String = format!("ai-gateway-{policy}")
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "_+=,.@-".contains(c) {
                c
            } else {
                '-'
            }
        })
        .collect();
    s.truncate(64);
    s
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
    // Secret use `i`: its value, and where it came from.
    let read = |i: usize, r: &mut Reporter<'_>| -> Option<(SecretValue, SecretOrigin)> {
        let s = &p.secrets[i];
        match secret_value(s, secrets) {
            Ok((key, v)) => Some((
                v,
                SecretOrigin {
                    namespace: s.namespace.clone(),
                    name: s.name.clone(),
                    key,
                    profile: None,
                    field: s.path.clone(),
                },
            )),
            Err(e) => {
                r.error(s.path.as_str(), e);
                None
            }
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
                (None, Some(i)) => read(*i, r).map(|(v, origin)| {
                    out.secret = Some(origin);
                    SecretSource::Value(v)
                }),
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
                (None, Some((Some(i), profile))) => read(*i, r).and_then(|(text, mut origin)| {
                    origin.profile = Some(profile.clone()).filter(|prof| prof != "default");
                    out.secret = Some(origin);
                    match aws_profile(text.expose(), profile) {
                        Ok(k) => Some(k),
                        Err(e) => {
                            let s = &p.secrets[*i];
                            r.error(
                                "spec.awsCredentials.credentialsFile.profile",
                                format!("Secret {}/{} key 'credentials' {e}", s.namespace, s.name),
                            );
                            None
                        }
                    }
                }),
                (None, Some((None, _))) => None,
                (None, None) => match oidc {
                    Some(o) => web_identity(o, region.as_deref(), &p.meta.id.name, &read, r).map(
                        |(w, origin)| {
                            out.secret = Some(origin);
                            AwsKeys::WebIdentity(Box::new(w))
                        },
                    ),
                    None => {
                        r.warn(
                            "spec.awsCredentials",
                            format!("not enforced: the AWS default credential chain is not available to the filter, so requests to {backend} are not signed; set credentialsFile, oidcExchangeToken or the {CREDENTIALS_FILE_ANNOTATION} annotation"),
                        );
                        None
                    }
                },
            };
            out.auth = keys.map(|keys| Auth::AwsSigV4 { region: None, keys });
        }
        Some(PolicyCredential::Azure {
            tenant_id,
            client_id,
            client_secret,
            oidc,
        }) => {
            out.path = "spec.azureCredentials";
            if let Some(f) = file {
                out.auth = Some(Auth::Bearer(SecretSource::File(f)));
            } else {
                let credential = match (client_secret, oidc) {
                    (Some(i), None) => read(*i, r).map(|(v, origin)| {
                        out.secret = Some(origin);
                        AzureCredential::ClientSecret(SecretSource::Value(v))
                    }),
                    (None, Some(g)) => grant(g, &read, r).map(|(c, origin)| {
                        out.secret = Some(origin);
                        AzureCredential::Federated(c)
                    }),
                    // Reported when read.
                    _ => None,
                };
                let token = tenant_id
                    .as_deref()
                    .and_then(|t| Callout::parse(&azure_token_url(t)).ok());
                if let (Some(tenant_id), Some(client_id), Some(credential), Some(token)) =
                    (tenant_id, client_id, credential, token)
                {
                    out.auth = Some(Auth::Exchange(Box::new(Exchange::Azure {
                        tenant_id: tenant_id.clone(),
                        client_id: client_id.clone(),
                        credential,
                        token,
                    })));
                }
            }
        }
        Some(PolicyCredential::Gcp {
            project,
            region,
            passthrough,
            key,
            workload_identity,
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
                for (set, field) in [
                    (key.is_some(), "spec.gcpCredentials.credentialsFile"),
                    (
                        workload_identity.is_some(),
                        "spec.gcpCredentials.workloadIdentityFederationConfig",
                    ),
                ] {
                    if set {
                        r.warn(
                            field,
                            "ignored: isPassthrough sends the client's own credentials",
                        );
                    }
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
            } else if let Some(i) = key {
                out.auth = read(*i, r).and_then(|(v, origin)| {
                    let host = match key_token_host(v.expose()) {
                        Ok(h) => h,
                        Err(why) => {
                            r.error(
                                p.secrets[*i].path.as_str(),
                                format!(
                                    "Secret {}/{} key '{}' {why}",
                                    origin.namespace, origin.name, origin.key
                                ),
                            );
                            return None;
                        }
                    };
                    out.secret = Some(origin);
                    Some(Auth::Exchange(Box::new(Exchange::GcpServiceAccount {
                        key: SecretSource::Value(v),
                        token: host,
                    })))
                });
            } else if let Some(w) = workload_identity {
                out.auth =
                    gcp_workload_identity(w, project.as_deref(), &read, r).map(|(x, origin)| {
                        out.secret = Some(origin);
                        Auth::Exchange(Box::new(x))
                    });
            } else {
                r.warn(
                    "spec.gcpCredentials",
                    format!("not enforced: GCP application default credentials are not available to the filter, so requests to {backend} carry no credential; set credentialsFile, workloadIdentityFederationConfig or the {CREDENTIALS_FILE_ANNOTATION} annotation"),
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

/// Reads Secret use `i`: its value and origin (errors reported).
type Read<'a> = dyn Fn(usize, &mut Reporter<'_>) -> Option<(SecretValue, SecretOrigin)> + 'a;

/// An OIDC client-credentials grant, with the origin of its client secret;
/// `None` when a part is missing (reported when read) or a Secret cannot be read.
fn grant(
    g: &OidcGrant,
    read: &Read<'_>,
    r: &mut Reporter<'_>,
) -> Option<(ClientCredentials, SecretOrigin)> {
    let idp = g.idp.clone()?;
    let client_id = match g.client_id.as_ref()? {
        ClientId::Given(c) => c.clone(),
        // An identifier, not a secret: compiled in as given.
        ClientId::Secret(i) => read(*i, r)?.0.expose().to_string(),
    };
    let (secret, origin) = read(g.client_secret?, r)?;
    Some((
        ClientCredentials {
            idp,
            client_id,
            client_secret: SecretSource::Value(secret),
            scopes: g.scopes.clone(),
        },
        origin,
    ))
}

/// `awsCredentials.oidcExchangeToken` → `awsSigV4.webIdentity` at the STS of the
/// policy's region.
fn web_identity(
    o: &AwsOidc,
    region: Option<&str>,
    policy: &str,
    read: &Read<'_>,
    r: &mut Reporter<'_>,
) -> Option<(WebIdentity, SecretOrigin)> {
    let (token, origin) = grant(&o.grant, read, r)?;
    let sts = Callout::parse(&aws_sts_url(region?)).ok()?;
    Some((
        WebIdentity {
            role_arn: o.role_arn.clone()?,
            session_name: session_name(policy),
            token,
            sts,
        },
        origin,
    ))
}

/// `gcpCredentials.workloadIdentityFederationConfig` → `gcpWorkloadIdentity`;
/// the impersonated service account is `<name>@<projectName>.iam.gserviceaccount.com`,
/// as Envoy AI Gateway makes it.
fn gcp_workload_identity(
    w: &GcpWorkloadIdentity,
    project: Option<&str>,
    read: &Read<'_>,
    r: &mut Reporter<'_>,
) -> Option<(Exchange, SecretOrigin)> {
    let (subject, origin) = grant(w.grant.as_ref()?, read, r)?;
    let impersonate = match &w.service_account {
        None => None,
        Some(name) => Some((
            format!("{name}@{}.iam.gserviceaccount.com", project?),
            Callout::parse(GOOGLE_IAM_URL).ok()?,
        )),
    };
    Some((
        Exchange::GcpWorkloadIdentity {
            audience: w.audience.clone()?,
            subject,
            sts: Callout::parse(GOOGLE_STS_URL).ok()?,
            impersonate,
        },
        origin,
    ))
}

/// The host of a service-account key file's `token_uri` (the filter's default
/// when it has none), after the checks the filter makes when it uses the key;
/// the error says what is wrong without quoting the key.
fn key_token_host(key_json: &str) -> Result<TokenHost, &'static str> {
    let key: Value = serde_json::from_str(key_json)
        .map_err(|_| "is not JSON: it must hold a service-account key file")?;
    if !key.is_object() {
        return Err("is not a service-account key file (a JSON object)");
    }
    if key.get("type").is_some_and(|t| t != "service_account") {
        return Err("is not a service-account key file (its type is not service_account)");
    }
    for field in ["client_email", "private_key"] {
        if key[field].as_str().is_none_or(str::is_empty) {
            return Err(
                "lacks client_email or private_key: it must hold a service-account key file",
            );
        }
    }
    let uri = match key.get("token_uri") {
        None => GOOGLE_TOKEN_URI,
        Some(u) => u.as_str().ok_or("has a token_uri that is not a string")?,
    };
    Callout::parse(uri)
        .map(|c| c.host)
        .map_err(|_| "has a token_uri that is not an https:// URL")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_names_follow_sts_rules() {
        assert_eq!(session_name("bedrock"), "ai-gateway-bedrock");
        let long = session_name(&"x".repeat(80));
        assert_eq!(long.len(), 64);
        assert!(long.starts_with("ai-gateway-xxx"));
        assert_eq!(session_name("a/b c"), "ai-gateway-a-b-c");
    }

    #[test]
    fn key_files_are_checked_without_quoting_them() {
        let ok = r#"{"type": "service_account", "client_email": "sa@p.iam.gserviceaccount.com",
                     "private_key": "-----BEGIN PRIVATE KEY-----\nX\n-----END PRIVATE KEY-----\n",
                     "token_uri": "https://oauth2.googleapis.com/token"}"#;
        let h = key_token_host(ok).unwrap();
        assert_eq!(h.cluster(), "aigw_token_oauth2_googleapis_com");
        let no_uri = r#"{"client_email": "a@b", "private_key": "k"}"#;
        assert_eq!(
            key_token_host(no_uri).unwrap().host,
            "oauth2.googleapis.com"
        );
        for (bad, why) in [
            ("secret-text", "is not JSON"),
            ("[1]", "a JSON object"),
            (
                r#"{"type": "authorized_user", "client_email": "a", "private_key": "k"}"#,
                "type",
            ),
            (r#"{"client_email": "a@b"}"#, "lacks"),
            (
                r#"{"client_email": "a", "private_key": "k", "token_uri": "ftp://x"}"#,
                "https://",
            ),
        ] {
            let e = key_token_host(bad).unwrap_err();
            assert!(e.contains(why), "{bad}: {e}");
            assert!(!e.contains("secret-text"));
        }
    }
}
