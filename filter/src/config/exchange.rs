//! The configuration of credentials the gateway exchanges itself (Azure Entra ID,
//! Google service accounts and workload identity, AWS STS): the document's form and
//! its validation into an [`ExchangeSpec`].

use std::time::Duration;

use serde::Deserialize;

use super::backend::{err, secret, AwsCredentials, RawSecret};
use crate::auth::exchange::{
    AzureCredential, ClientCredentials, Endpoint, ExchangeSpec, IdpEndpoint, Impersonation, Kind,
    Subject, DEFAULT_TIMEOUT,
};
use crate::config::ConfigError;

/// Scope of Azure OpenAI tokens.
pub const AZURE_OPENAI_SCOPE: &str = "https://cognitiveservices.azure.com/.default";
/// Scope of Vertex AI tokens.
pub const GOOGLE_CLOUD_SCOPE: &str = "https://www.googleapis.com/auth/cloud-platform";
/// Session name of assumed AWS roles when none is configured.
pub const DEFAULT_SESSION_NAME: &str = "aigw";

/// A URL the gateway calls and the Envoy cluster that reaches it.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(crate) struct RawEndpoint {
    cluster: String,
    #[serde(default)]
    url: Option<String>,
}

impl RawEndpoint {
    fn compile(self, default_url: &str, p: &str) -> Result<Endpoint, ConfigError> {
        if self.cluster.is_empty() {
            return Err(err(format!("{p}.cluster"), "must not be empty"));
        }
        let (url, field) = match &self.url {
            Some(u) => (u.as_str(), "url"),
            None => (default_url, "cluster"),
        };
        Endpoint::parse(&self.cluster, url).map_err(|e| err(format!("{p}.{field}"), e))
    }
}

/// Where an OIDC token comes from: exactly one of the token itself (`value`,
/// `file`, `env`) or a client-credentials grant.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(crate) struct RawSubject {
    #[serde(default)]
    value: Option<String>,
    #[serde(default)]
    file: Option<String>,
    #[serde(default)]
    env: Option<String>,
    #[serde(default)]
    client_credentials: Option<RawClientCredentials>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(crate) struct RawClientCredentials {
    cluster: String,
    #[serde(default)]
    token_url: Option<String>,
    #[serde(default)]
    issuer: Option<String>,
    client_id: String,
    client_secret: RawSecret,
    #[serde(default)]
    scopes: Vec<String>,
}

impl RawSubject {
    fn compile(self, p: &str) -> Result<Subject, ConfigError> {
        let Some(cc) = self.client_credentials else {
            return secret(self.value, self.file, self.env, p).map(Subject::Token);
        };
        if self.value.is_some() || self.file.is_some() || self.env.is_some() {
            return Err(err(
                p,
                "give the token ('value', 'file' or 'env') or 'clientCredentials', not both",
            ));
        }
        let cp = format!("{p}.clientCredentials");
        let endpoint = |url: &str, field: &str| {
            Endpoint::parse(&cc.cluster, url).map_err(|e| err(format!("{cp}.{field}"), e))
        };
        if cc.cluster.is_empty() {
            return Err(err(format!("{cp}.cluster"), "must not be empty"));
        }
        let endpoint = match (&cc.token_url, &cc.issuer) {
            (Some(t), None) => IdpEndpoint::Token(endpoint(t, "tokenUrl")?),
            (None, Some(i)) => IdpEndpoint::Issuer(endpoint(i, "issuer")?),
            _ => {
                return Err(err(
                    cp,
                    "exactly one of 'tokenUrl' or 'issuer' (its discovery document names the token endpoint) is required",
                ))
            }
        };
        if cc.client_id.is_empty() {
            return Err(err(format!("{cp}.clientId"), "must not be empty"));
        }
        let client_secret = cc.client_secret.compile(&format!("{cp}.clientSecret"))?;
        Ok(Subject::ClientCredentials(ClientCredentials {
            endpoint,
            client_id: cc.client_id,
            client_secret,
            scopes: cc.scopes,
        }))
    }
}

fn timeout(ms: Option<u64>, p: &str) -> Result<Duration, ConfigError> {
    match ms {
        None => Ok(DEFAULT_TIMEOUT),
        Some(0) => Err(err(format!("{p}.timeoutMs"), "must be at least 1")),
        Some(ms) => Ok(Duration::from_millis(ms)),
    }
}

fn required(v: String, p: &str) -> Result<String, ConfigError> {
    if v.trim().is_empty() {
        return Err(err(p, "must not be empty"));
    }
    Ok(v)
}

/// `auth.azureEntraId`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(crate) struct RawAzure {
    tenant_id: String,
    client_id: String,
    #[serde(default)]
    client_secret: Option<RawSecret>,
    #[serde(default)]
    federated_token: Option<RawSubject>,
    #[serde(default)]
    scope: Option<String>,
    token: RawEndpoint,
    #[serde(default)]
    timeout_ms: Option<u64>,
}

impl RawAzure {
    pub(crate) fn compile(self, p: &str) -> Result<ExchangeSpec, ConfigError> {
        let tenant = required(self.tenant_id, &format!("{p}.tenantId"))?;
        if !tenant
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.'))
        {
            return Err(err(
                format!("{p}.tenantId"),
                "must be a tenant id or domain name",
            ));
        }
        let client_id = required(self.client_id, &format!("{p}.clientId"))?;
        let credential = match (self.client_secret, self.federated_token) {
            (Some(s), None) => {
                AzureCredential::ClientSecret(s.compile(&format!("{p}.clientSecret"))?)
            }
            (None, Some(t)) => {
                AzureCredential::Federated(t.compile(&format!("{p}.federatedToken"))?)
            }
            _ => {
                return Err(err(
                    p,
                    "exactly one of 'clientSecret' or 'federatedToken' is required",
                ))
            }
        };
        let default_url = format!("https://login.microsoftonline.com/{tenant}/oauth2/v2.0/token");
        let token = self.token.compile(&default_url, &format!("{p}.token"))?;
        let kind = Kind::Azure {
            tenant,
            client_id,
            credential,
            scope: self.scope.unwrap_or_else(|| AZURE_OPENAI_SCOPE.into()),
            token,
        };
        Ok(ExchangeSpec::new(kind, timeout(self.timeout_ms, p)?))
    }
}

/// `auth.gcpServiceAccount`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(crate) struct RawGoogleServiceAccount {
    key: RawSecret,
    #[serde(default)]
    scope: Option<String>,
    token: RawEndpoint,
    #[serde(default)]
    timeout_ms: Option<u64>,
}

impl RawGoogleServiceAccount {
    pub(crate) fn compile(self, p: &str) -> Result<ExchangeSpec, ConfigError> {
        let key = self.key.compile(&format!("{p}.key"))?;
        let tp = format!("{p}.token");
        if self.token.cluster.is_empty() {
            return Err(err(format!("{tp}.cluster"), "must not be empty"));
        }
        let token_url = match &self.token.url {
            Some(u) => Some(
                Endpoint::parse(&self.token.cluster, u).map_err(|e| err(format!("{tp}.url"), e))?,
            ),
            None => None,
        };
        let kind = Kind::GoogleServiceAccount {
            key,
            scope: self.scope.unwrap_or_else(|| GOOGLE_CLOUD_SCOPE.into()),
            cluster: self.token.cluster,
            token_url,
        };
        Ok(ExchangeSpec::new(kind, timeout(self.timeout_ms, p)?))
    }
}

/// `auth.gcpWorkloadIdentity`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(crate) struct RawGoogleWorkloadIdentity {
    audience: String,
    subject_token: RawSubject,
    #[serde(default)]
    scope: Option<String>,
    sts: RawEndpoint,
    #[serde(default)]
    impersonate: Option<RawImpersonate>,
    #[serde(default)]
    timeout_ms: Option<u64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(crate) struct RawImpersonate {
    service_account: String,
    iam: RawEndpoint,
}

impl RawGoogleWorkloadIdentity {
    pub(crate) fn compile(self, p: &str) -> Result<ExchangeSpec, ConfigError> {
        let audience = required(self.audience, &format!("{p}.audience"))?;
        if !audience.starts_with("//iam.googleapis.com/") {
            return Err(err(
                format!("{p}.audience"),
                "must be the provider's full name: //iam.googleapis.com/projects/NUMBER/locations/global/workloadIdentityPools/POOL/providers/PROVIDER",
            ));
        }
        let subject = self.subject_token.compile(&format!("{p}.subjectToken"))?;
        let sts = self
            .sts
            .compile("https://sts.googleapis.com/v1/token", &format!("{p}.sts"))?;
        let impersonate = match self.impersonate {
            None => None,
            Some(i) => {
                let ip = format!("{p}.impersonate");
                let service_account = required(i.service_account, &format!("{ip}.serviceAccount"))?;
                if !service_account.contains('@') || service_account.contains(['/', ' ']) {
                    return Err(err(
                        format!("{ip}.serviceAccount"),
                        "must be a service account's e-mail address",
                    ));
                }
                Some(Impersonation {
                    service_account,
                    endpoint: i.iam.compile(
                        "https://iamcredentials.googleapis.com",
                        &format!("{ip}.iam"),
                    )?,
                })
            }
        };
        let kind = Kind::GoogleWorkloadIdentity {
            audience,
            subject,
            scope: self.scope.unwrap_or_else(|| GOOGLE_CLOUD_SCOPE.into()),
            sts,
            impersonate,
        };
        Ok(ExchangeSpec::new(kind, timeout(self.timeout_ms, p)?))
    }
}

/// `auth.awsSigV4.webIdentity`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(crate) struct RawWebIdentity {
    role_arn: String,
    #[serde(default)]
    session_name: Option<String>,
    token: RawSubject,
    #[serde(default)]
    duration_seconds: Option<u32>,
    sts: RawEndpoint,
    #[serde(default)]
    timeout_ms: Option<u64>,
}

/// `auth.awsSigV4.assumeRole`: signed with the `awsSigV4` block's own credentials.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(crate) struct RawAssumeRole {
    role_arn: String,
    #[serde(default)]
    session_name: Option<String>,
    #[serde(default)]
    external_id: Option<String>,
    #[serde(default)]
    duration_seconds: Option<u32>,
    sts: RawEndpoint,
    #[serde(default)]
    timeout_ms: Option<u64>,
}

fn role_arn(arn: String, p: &str) -> Result<String, ConfigError> {
    let arn = required(arn, p)?;
    if !arn.starts_with("arn:aws") || !arn.contains(":role/") {
        return Err(err(
            p,
            "must be an IAM role ARN (arn:aws:iam::ACCOUNT:role/NAME)",
        ));
    }
    Ok(arn)
}

fn session_name(name: Option<String>, p: &str) -> Result<String, ConfigError> {
    let name = name.unwrap_or_else(|| DEFAULT_SESSION_NAME.into());
    let ok = (2..=64).contains(&name.len())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_+=,.@-".contains(c));
    if !ok {
        return Err(err(
            p,
            "must be 2-64 characters of letters, digits and _+=,.@-",
        ));
    }
    Ok(name)
}

fn duration(d: Option<u32>, p: &str) -> Result<Option<u32>, ConfigError> {
    match d {
        Some(d) if !(900..=43_200).contains(&d) => {
            Err(err(p, "must be between 900 and 43200 seconds"))
        }
        d => Ok(d),
    }
}

/// STS of `region`, and the region it is signed for (the global endpoint's is
/// us-east-1).
fn sts_default(region: &str) -> String {
    format!("https://sts.{region}.amazonaws.com/")
}

fn sts_region(endpoint: &Endpoint, region: &str) -> String {
    let host = endpoint.authority.split(':').next().unwrap_or_default();
    match host
        .strip_prefix("sts.")
        .and_then(|h| h.strip_suffix(".amazonaws.com"))
    {
        Some(r) if !r.is_empty() => r.to_string(),
        _ if host == "sts.amazonaws.com" => "us-east-1".into(),
        _ => region.to_string(),
    }
}

impl RawWebIdentity {
    pub(crate) fn compile(self, region: &str, p: &str) -> Result<ExchangeSpec, ConfigError> {
        let kind = Kind::AwsWebIdentity {
            role_arn: role_arn(self.role_arn, &format!("{p}.roleArn"))?,
            session_name: session_name(self.session_name, &format!("{p}.sessionName"))?,
            subject: self.token.compile(&format!("{p}.token"))?,
            duration_seconds: duration(self.duration_seconds, &format!("{p}.durationSeconds"))?,
            sts: self
                .sts
                .compile(&sts_default(region), &format!("{p}.sts"))?,
        };
        Ok(ExchangeSpec::new(kind, timeout(self.timeout_ms, p)?))
    }
}

impl RawAssumeRole {
    pub(crate) fn compile(
        self,
        base: AwsCredentials,
        region: &str,
        p: &str,
    ) -> Result<ExchangeSpec, ConfigError> {
        let sts = self
            .sts
            .compile(&sts_default(region), &format!("{p}.sts"))?;
        let kind = Kind::AwsAssumeRole {
            role_arn: role_arn(self.role_arn, &format!("{p}.roleArn"))?,
            session_name: session_name(self.session_name, &format!("{p}.sessionName"))?,
            external_id: self.external_id.filter(|e| !e.is_empty()),
            duration_seconds: duration(self.duration_seconds, &format!("{p}.durationSeconds"))?,
            region: sts_region(&sts, region),
            base,
            sts,
        };
        Ok(ExchangeSpec::new(kind, timeout(self.timeout_ms, p)?))
    }
}

#[cfg(test)]
mod tests {
    use serde_json::{json, Value};

    use crate::config::Config;

    /// The error of a config whose only backend has `auth`.
    fn refused(auth: Value) -> String {
        let doc = json!({
            "version": "v1",
            "backends": [{"name": "b", "schema": {"name": "AWSBedrock"}, "region": "us-east-1",
                          "auth": auth}],
            "routes": [{"name": "r", "models": ["m"], "backends": [{"name": "b"}]}]
        });
        Config::from_json(doc.to_string().as_bytes())
            .map(|_| "accepted".to_string())
            .unwrap_or_else(|e| e.to_string())
    }

    #[test]
    fn good_exchanges_are_accepted() {
        for auth in [
            json!({"azureEntraId": {"tenantId": "t", "clientId": "c",
                   "clientSecret": {"env": "AZ_SECRET"}, "token": {"cluster": "entra"}}}),
            json!({"azureEntraId": {"tenantId": "contoso.onmicrosoft.com", "clientId": "c",
                   "federatedToken": {"file": "/var/run/secrets/azure/token"},
                   "token": {"cluster": "entra", "url": "http://127.0.0.1:9/t/oauth2/v2.0/token"}}}),
            json!({"gcpServiceAccount": {"key": {"file": "/k.json"}, "token": {"cluster": "google"}}}),
            json!({"gcpWorkloadIdentity": {
                "audience": "//iam.googleapis.com/projects/1/locations/global/workloadIdentityPools/p/providers/x",
                "subjectToken": {"clientCredentials": {"cluster": "idp", "issuer": "https://idp.example",
                                 "clientId": "gw", "clientSecret": {"value": "s"}}},
                "sts": {"cluster": "gsts"},
                "impersonate": {"serviceAccount": "sa@p.iam.gserviceaccount.com", "iam": {"cluster": "iam"}}}}),
            json!({"awsSigV4": {"webIdentity": {"roleArn": "arn:aws:iam::1:role/r",
                   "token": {"file": "/t"}, "sts": {"cluster": "sts"}}}}),
            json!({"awsSigV4": {"accessKeyId": "AKID", "secretAccessKey": "s",
                   "assumeRole": {"roleArn": "arn:aws:iam::1:role/r", "sts": {"cluster": "sts"},
                                  "durationSeconds": 900}}}),
        ] {
            assert_eq!(refused(auth.clone()), "accepted", "{auth}");
        }
    }

    #[test]
    fn bad_exchanges_name_the_field() {
        for (auth, path, why) in [
            (
                json!({"azureEntraId": {"tenantId": "t", "clientId": "c", "token": {"cluster": "e"}}}),
                "backends[0].auth.azureEntraId",
                "exactly one of 'clientSecret' or 'federatedToken'",
            ),
            (
                json!({"azureEntraId": {"tenantId": "t", "clientId": "c", "clientSecret": {"value": "s"},
                    "federatedToken": {"file": "/t"}, "token": {"cluster": "e"}}}),
                "backends[0].auth.azureEntraId",
                "exactly one of",
            ),
            (
                json!({"azureEntraId": {"tenantId": "t/../x", "clientId": "c",
                    "clientSecret": {"value": "s"}, "token": {"cluster": "e"}}}),
                "backends[0].auth.azureEntraId.tenantId",
                "tenant id or domain",
            ),
            (
                json!({"azureEntraId": {"tenantId": "t", "clientId": "", "clientSecret": {"value": "s"},
                    "token": {"cluster": "e"}}}),
                "backends[0].auth.azureEntraId.clientId",
                "must not be empty",
            ),
            (
                json!({"azureEntraId": {"tenantId": "t", "clientId": "c", "clientSecret": {"value": "s"}}}),
                "backends[0].auth.azureEntraId",
                "missing field `token`",
            ),
            (
                json!({"azureEntraId": {"tenantId": "t", "clientId": "c", "clientSecret": {"value": "s"},
                    "token": {"cluster": "e", "url": "login.microsoftonline.com/t"}}}),
                "backends[0].auth.azureEntraId.token.url",
                "must start with https://",
            ),
            (
                json!({"azureEntraId": {"tenantId": "t", "clientId": "c", "clientSecret": {"value": "s"},
                    "token": {"cluster": ""}}}),
                "backends[0].auth.azureEntraId.token.cluster",
                "must not be empty",
            ),
            (
                json!({"gcpServiceAccount": {"key": {}, "token": {"cluster": "g"}}}),
                "backends[0].auth.gcpServiceAccount.key",
                "exactly one of 'value', 'file' or 'env'",
            ),
            (
                json!({"gcpWorkloadIdentity": {"audience": "projects/1/pools/p", "subjectToken": {"file": "/t"},
                    "sts": {"cluster": "s"}}}),
                "backends[0].auth.gcpWorkloadIdentity.audience",
                "//iam.googleapis.com/",
            ),
            (
                json!({"gcpWorkloadIdentity": {"audience": "//iam.googleapis.com/x", "subjectToken": {"file": "/t",
                    "clientCredentials": {"cluster": "i", "tokenUrl": "https://i/t", "clientId": "c",
                    "clientSecret": {"value": "s"}}}, "sts": {"cluster": "s"}}}),
                "backends[0].auth.gcpWorkloadIdentity.subjectToken",
                "not both",
            ),
            (
                json!({"gcpWorkloadIdentity": {"audience": "//iam.googleapis.com/x", "subjectToken": {
                    "clientCredentials": {"cluster": "i", "clientId": "c", "clientSecret": {"value": "s"}}},
                    "sts": {"cluster": "s"}}}),
                "backends[0].auth.gcpWorkloadIdentity.subjectToken.clientCredentials",
                "'tokenUrl' or 'issuer'",
            ),
            (
                json!({"gcpWorkloadIdentity": {"audience": "//iam.googleapis.com/x", "subjectToken": {"file": "/t"},
                    "sts": {"cluster": "s"}, "impersonate": {"serviceAccount": "nobody", "iam": {"cluster": "i"}}}}),
                "backends[0].auth.gcpWorkloadIdentity.impersonate.serviceAccount",
                "e-mail address",
            ),
            (
                json!({"awsSigV4": {"webIdentity": {"roleArn": "r", "token": {"file": "/t"}, "sts": {"cluster": "s"}}}}),
                "backends[0].auth.awsSigV4.webIdentity.roleArn",
                "IAM role ARN",
            ),
            (
                json!({"awsSigV4": {"webIdentity": {"roleArn": "arn:aws:iam::1:role/r", "sessionName": "a b",
                    "token": {"file": "/t"}, "sts": {"cluster": "s"}}}}),
                "backends[0].auth.awsSigV4.webIdentity.sessionName",
                "2-64 characters",
            ),
            (
                json!({"awsSigV4": {"webIdentity": {"roleArn": "arn:aws:iam::1:role/r", "durationSeconds": 60,
                    "token": {"file": "/t"}, "sts": {"cluster": "s"}}}}),
                "backends[0].auth.awsSigV4.webIdentity.durationSeconds",
                "between 900 and 43200",
            ),
            (
                json!({"awsSigV4": {"accessKeyId": "A", "secretAccessKey": "s", "webIdentity": {
                    "roleArn": "arn:aws:iam::1:role/r", "token": {"file": "/t"}, "sts": {"cluster": "s"}}}}),
                "backends[0].auth.awsSigV4.webIdentity",
                "takes no other credentials",
            ),
            (
                json!({"awsSigV4": {"assumeRole": {"roleArn": "arn:aws:iam::1:role/r", "sts": {"cluster": "s"}}}}),
                "backends[0].auth.awsSigV4",
                "give either accessKeyId and secretAccessKey",
            ),
            (
                json!({"awsSigV4": {"accessKeyId": "A", "secretAccessKey": "s",
                    "assumeRole": {"roleArn": "arn:aws:iam::1:role/r", "sts": {"cluster": "s"}, "timeoutMs": 0}}}),
                "backends[0].auth.awsSigV4.assumeRole.timeoutMs",
                "at least 1",
            ),
        ] {
            let e = refused(auth.clone());
            assert!(
                e.contains(&format!("`{path}`")) && e.contains(why),
                "{auth}\n{e}"
            );
        }
    }

    #[test]
    fn the_compiled_exchange_has_the_defaults() {
        let doc = json!({"version": "v1",
            "backends": [{"name": "b", "schema": {"name": "AWSBedrock"}, "region": "eu-west-1",
                "auth": {"awsSigV4": {"accessKeyId": "A", "secretAccessKey": "s",
                    "assumeRole": {"roleArn": "arn:aws:iam::1:role/r", "sts": {"cluster": "sts"}}}}}],
            "routes": [{"name": "r", "models": ["m"], "backends": [{"name": "b"}]}]});
        let config = Config::from_json(doc.to_string().as_bytes()).unwrap();
        let spec = config.backends[0].exchange().unwrap();
        let crate::auth::exchange::Kind::AwsAssumeRole {
            sts,
            region,
            session_name,
            ..
        } = &spec.kind
        else {
            panic!("{spec:?}")
        };
        assert_eq!(sts.authority, "sts.eu-west-1.amazonaws.com");
        assert_eq!(region, "eu-west-1");
        assert_eq!(session_name, "aigw");
        assert!(config.any_exchange());
        assert!(config.exchange_slot(0).is_some());
    }
}
