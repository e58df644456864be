//! AWS STS (query API, version 2011-06-15): `AssumeRoleWithWebIdentity`, unsigned,
//! for an OIDC token, and `AssumeRole`, SigV4-signed with other credentials. Both
//! answer temporary keys. JSON is asked for (`accept: application/json`, as Envoy's
//! own AWS credential providers do); the documented XML answer is read too.

use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;

use super::{error_code, form, post, xml_text, Endpoint, ExchangeError, Token};
use crate::auth::sigv4::{self, Credentials, SignableRequest, SigningParams};
use crate::config::backend::AwsCredentials;
use crate::host::{Callout, CalloutResult};

const VERSION: &str = "2011-06-15";

/// `AssumeRole`'s parameters.
pub(super) struct AssumeRole<'a> {
    pub role_arn: &'a str,
    pub session_name: &'a str,
    pub external_id: Option<&'a str>,
    pub duration_seconds: Option<u32>,
}

pub(super) fn web_identity_request(
    sts: &Endpoint,
    role_arn: &str,
    session_name: &str,
    token: &str,
    duration_seconds: Option<u32>,
    timeout: Duration,
) -> Callout {
    let duration = duration_seconds.map(|d| d.to_string());
    let mut fields = vec![
        ("Action", "AssumeRoleWithWebIdentity"),
        ("Version", VERSION),
        ("RoleArn", role_arn),
        ("RoleSessionName", session_name),
        ("WebIdentityToken", token),
    ];
    if let Some(d) = &duration {
        fields.push(("DurationSeconds", d));
    }
    super::post_form(sts, &fields, Vec::new(), timeout)
}

/// The keys `AssumeRole` is signed with: given, or a profile of a credentials
/// file's text (`text`).
pub(super) fn base_credentials(
    base: &AwsCredentials,
    text: &str,
) -> Result<Credentials, ExchangeError> {
    match base {
        AwsCredentials::Static(c) => Ok(c.clone()),
        AwsCredentials::File { profile, .. } => {
            crate::auth::aws_profile(text, profile).map_err(|_| {
                ExchangeError::new(format!(
                    "the AWS credentials file for AssumeRole has no complete profile '{profile}'"
                ))
            })
        }
        AwsCredentials::Exchanged(_) => Err(ExchangeError::new(
            "AssumeRole cannot be signed with exchanged credentials",
        )),
    }
}

pub(super) fn assume_role_request(
    sts: &Endpoint,
    region: &str,
    creds: &Credentials,
    p: AssumeRole<'_>,
    now_secs: u64,
    timeout: Duration,
) -> Result<Callout, ExchangeError> {
    let duration = p.duration_seconds.map(|d| d.to_string());
    let mut fields = vec![
        ("Action", "AssumeRole"),
        ("Version", VERSION),
        ("RoleArn", p.role_arn),
        ("RoleSessionName", p.session_name),
    ];
    if let Some(d) = &duration {
        fields.push(("DurationSeconds", d));
    }
    if let Some(e) = p.external_id {
        fields.push(("ExternalId", e));
    }
    let body = form(&fields);
    let content_type = "application/x-www-form-urlencoded";
    let (path, query) = sts.path.split_once('?').unwrap_or((&sts.path, ""));
    let signed = sigv4::sign(
        &SignableRequest {
            method: "POST",
            path,
            query,
            headers: &[("host", &sts.authority), ("content-type", content_type)],
            body: body.as_bytes(),
        },
        &SigningParams {
            credentials: creds,
            region,
            service: "sts",
            unix_seconds: now_secs,
            content_sha256_header: false,
        },
    )
    .map_err(|e| ExchangeError::new(format!("signing AssumeRole failed: {e}")))?;
    let extra = signed
        .headers
        .into_iter()
        .map(|(n, v)| (n.to_string(), v))
        .collect();
    Ok(post(sts, content_type, body.into_bytes(), extra, timeout))
}

/// The temporary keys of an `AssumeRole*` answer and their expiry (Unix ms).
pub(super) fn credentials(result: &CalloutResult) -> Result<(Token, u64), ExchangeError> {
    let (status, body) = match result {
        CalloutResult::Failed(why) => {
            return Err(ExchangeError::new(format!(
                "the call to AWS STS failed ({why})"
            )))
        }
        CalloutResult::Response { status, body, .. } => (*status, body),
    };
    if !(200..300).contains(&status) {
        let code = error_code(body)
            .map(|c| format!(" ({c})"))
            .unwrap_or_default();
        return Err(ExchangeError::new(format!(
            "AWS STS answered {status}{code}"
        )));
    }
    let keys = match serde_json::from_slice::<Value>(body) {
        Ok(v) => from_json(&v),
        Err(_) => from_xml(&String::from_utf8_lossy(body)),
    }
    .ok_or_else(|| ExchangeError::new("AWS STS answered without complete Credentials"))?;
    let (id, secret, session, expires_secs) = keys;
    Ok((
        Token::Aws(Arc::new(Credentials::new(id, secret, Some(session)))),
        expires_secs.saturating_mul(1000),
    ))
}

type Keys = (String, String, String, u64);

/// `{"<Action>Response": {"<Action>Result": {"Credentials": {...}}}}`, with
/// `Expiration` in epoch seconds (a number, often in scientific notation).
fn from_json(v: &Value) -> Option<Keys> {
    let response = v.as_object()?.values().next()?;
    let result = response
        .as_object()?
        .iter()
        .find(|(k, _)| k.ends_with("Result"))?
        .1;
    let c = &result["Credentials"];
    let text = |k: &str| c[k].as_str().filter(|s| !s.is_empty()).map(str::to_string);
    let expires = match &c["Expiration"] {
        Value::Number(n) => n.as_f64().filter(|f| *f > 0.0).map(|f| f as u64),
        Value::String(s) => crate::date::parse_rfc3339_utc(s),
        _ => None,
    }?;
    Some((
        text("AccessKeyId")?,
        text("SecretAccessKey")?,
        text("SessionToken")?,
        expires,
    ))
}

/// The documented XML answer; `Expiration` in ISO 8601 (UTC).
fn from_xml(xml: &str) -> Option<Keys> {
    let creds = &xml[xml.find("<Credentials>")?..];
    let text = |tag: &str| xml_text(creds, tag).filter(|s| !s.is_empty());
    Some((
        text("AccessKeyId")?,
        text("SecretAccessKey")?,
        text("SessionToken")?,
        crate::date::parse_rfc3339_utc(&text("Expiration")?)?,
    ))
}
