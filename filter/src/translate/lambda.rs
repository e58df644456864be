//! AWS Lambda as a transport: a backend with `lambda` sends the request its schema
//! would send (an OpenAI or Anthropic body) as the payload of an `Invoke` call, and
//! the function's payload is the provider's answer.
//!
//! - Request: `POST /2015-03-31/functions/{name}/invocations[?Qualifier=q]` on
//!   `lambda.{region}.amazonaws.com`, `X-Amz-Invocation-Type: RequestResponse`
//!   (`Event` for asynchronous invocation), SigV4 for service `lambda` (signed by
//!   [`crate::auth`] over what [`invoke`] returns).
//! - Answer: Lambda answers 200 with the function's payload, which is read as the
//!   backend's schema's answer; a function that failed is still a 200, with
//!   `X-Amz-Function-Error` and `{"errorType", "errorMessage", "stackTrace"}`:
//!   that becomes a 502 naming the error type (never the message or the trace, which
//!   may show the function's code or data). Lambda's own errors (4xx/5xx with
//!   `x-amzn-ErrorType` and `{"Type", "Message"}`) get a mapped status.
//! - A function answers whole: a streamed request is refused with a 422 before
//!   anything is sent. An asynchronous invocation answers 202 with no body, which the
//!   client gets as it is (nothing to meter).

use serde::Deserialize;

use crate::auth::sigv4::encode_path_segment;
use crate::config::backend::{InvocationMode, LambdaFunction};
use crate::host::Headers;
use crate::translate::bedrock::{common_exception_status, exception_name};
use crate::translate::openai::{clip, plain_reason, MAX_MESSAGE_CHARS};
use crate::translate::plan::Prepared;
use crate::translate::{ProviderError, TranslateError};

/// The response header of a function that failed (`Unhandled`, or `Handled`).
pub const FUNCTION_ERROR_HEADER: &str = "x-amz-function-error";
/// The request header saying how the function is invoked.
pub const INVOCATION_TYPE_HEADER: &str = "x-amz-invocation-type";
/// Request headers of Lambda's Invoke a client may not choose: `X-Amz-Log-Type:
/// Tail` would return the function's log to the client, `X-Amz-Client-Context`
/// would hand the function data it did not ask the gateway for.
pub const CLIENT_HEADERS_REMOVED: [&str; 2] = ["x-amz-log-type", "x-amz-client-context"];

/// Lambda's public endpoint in `region`.
pub fn default_host(region: &str) -> String {
    format!("lambda.{region}.amazonaws.com")
}

/// The Invoke path of `f`, query included.
pub fn invoke_path(f: &LambdaFunction) -> String {
    let mut path = format!(
        "/2015-03-31/functions/{}/invocations",
        encode_path_segment(&f.function_name)
    );
    if let Some(q) = &f.qualifier {
        path.push_str("?Qualifier=");
        path.push_str(&encode_path_segment(q));
    }
    path
}

/// `X-Amz-Invocation-Type`'s value for a mode.
pub fn invocation_type(mode: InvocationMode) -> &'static str {
    match mode {
        InvocationMode::Sync => "RequestResponse",
        InvocationMode::Async => "Event",
    }
}

/// The request the schema would send, as an invocation of `f`: same body, the
/// Invoke path, the invocation type. A stream is refused: a function answers whole.
pub fn invoke(f: &LambdaFunction, mut prepared: Prepared) -> Result<Prepared, TranslateError> {
    if prepared.response.is_stream() {
        return Err(TranslateError::unsupported(
            "stream",
            "this model is served by an AWS Lambda function, which answers whole: send the request with stream set to false",
        ));
    }
    prepared.path = invoke_path(f);
    prepared
        .headers
        .retain(|(n, _)| *n != "content-type" && *n != INVOCATION_TYPE_HEADER);
    prepared
        .headers
        .push(("content-type", "application/json".into()));
    prepared
        .headers
        .push((INVOCATION_TYPE_HEADER, invocation_type(f.invocation).into()));
    prepared.response.via_lambda();
    Ok(prepared)
}

/// Whether a 2xx answer is a failed function's.
pub fn is_function_error(headers: &dyn Headers) -> bool {
    headers.get(FUNCTION_ERROR_HEADER).is_some()
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct FunctionError {
    #[serde(default)]
    error_type: Option<String>,
}

#[derive(Deserialize)]
struct ServiceError {
    #[serde(default, alias = "message")]
    #[serde(rename = "Message")]
    message: Option<String>,
    #[serde(default, rename = "__type")]
    kind: Option<String>,
}

/// An error answer of an invocation, for the client: the function's failure
/// (`status` 2xx with [`FUNCTION_ERROR_HEADER`]) or Lambda's own error.
pub fn error(status: u16, headers: &dyn Headers, body: &[u8]) -> ProviderError {
    if (200..300).contains(&status) || is_function_error(headers) {
        return function_error(body);
    }
    service_error(status, headers, body)
}

/// A failed function: 502 naming its error type, nothing of its message or trace.
fn function_error(body: &[u8]) -> ProviderError {
    let kind = serde_json::from_slice::<FunctionError>(body)
        .ok()
        .and_then(|e| e.error_type)
        .map(|t| {
            t.chars()
                .filter(|c| !c.is_control())
                .take(100)
                .collect::<String>()
        })
        .filter(|t| !t.is_empty());
    let message = match &kind {
        Some(t) => format!("the model's AWS Lambda function failed ({t})"),
        None => "the model's AWS Lambda function failed".to_string(),
    };
    ProviderError::new(502, Some("lambda_function_error".into()), message)
}

/// Lambda's own error: its exception's status, mapped for clients.
fn service_error(status: u16, headers: &dyn Headers, body: &[u8]) -> ProviderError {
    let parsed = serde_json::from_slice::<ServiceError>(body).ok();
    let name = headers
        .get("x-amzn-errortype")
        .map(|t| exception_name(&t))
        .or_else(|| {
            parsed
                .as_ref()
                .and_then(|p| p.kind.as_deref())
                .map(exception_name)
        })
        .filter(|n| !n.is_empty());
    let message = parsed
        .and_then(|p| p.message)
        .map(|m| clip(&m, MAX_MESSAGE_CHARS))
        .filter(|m| !m.is_empty())
        .unwrap_or_else(|| {
            let mut m = format!("AWS Lambda returned HTTP {status}");
            if let Some(n) = &name {
                m.push_str(&format!(" ({n})"));
            }
            if let Some(reason) = plain_reason(body) {
                m.push_str(": ");
                m.push_str(reason);
            }
            m
        });
    let mapped = name
        .as_deref()
        .and_then(exception_status)
        .unwrap_or(match status {
            400..=499 | 503 | 504 => status,
            _ => 502,
        });
    ProviderError::new(mapped, name, message)
}

/// The client's status for a Lambda exception; `None` keeps Lambda's (4xx) or makes
/// it a 502 (5xx).
///
/// - Credential failures (Lambda: 403) are 401, as for Bedrock; `AccessDenied`
///   stays 403.
/// - A function that cannot run (`EC2*`, `ENI*`, `KMS*`, `Subnet*`, invalid
///   runtime or package, `ServiceException`; Lambda: 500/502) is a 502.
/// - A function not ready yet or being updated (`ResourceNotReadyException`,
///   `ResourceConflictException`) and `EC2ThrottledException` ask to come back
///   later: 503.
/// - `TooManyRequestsException` (concurrency or rate) is a 429.
/// - A payload Lambda refuses (`RequestTooLargeException`, 413) keeps its status.
fn exception_status(name: &str) -> Option<u16> {
    let lower = name.to_ascii_lowercase();
    if let Some(status) = common_exception_status(&lower) {
        return Some(status);
    }
    Some(match lower.as_str() {
        "resourcenotfoundexception" => 404,
        "requesttoolargeexception" => 413,
        "toomanyrequestsexception" => 429,
        "resourcenotreadyexception" | "resourceconflictexception" | "ec2throttledexception" => 503,
        "invalidrequestcontentexception"
        | "invalidparametervalueexception"
        | "unsupportedmediatypeexception" => 400,
        _ if lower.starts_with("ec2")
            || lower.starts_with("eni")
            || lower.starts_with("kms")
            || lower.starts_with("subnet")
            || lower.starts_with("efs")
            || lower.starts_with("snapstart")
            || lower.starts_with("invalid")
            || lower == "serviceexception" =>
        {
            502
        }
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    fn function(name: &str, qualifier: Option<&str>) -> LambdaFunction {
        LambdaFunction {
            function_name: name.into(),
            qualifier: qualifier.map(str::to_string),
            invocation: InvocationMode::Sync,
        }
    }

    #[test]
    fn paths_encode_the_name_and_the_qualifier() {
        assert_eq!(
            invoke_path(&function("chat-fn", None)),
            "/2015-03-31/functions/chat-fn/invocations"
        );
        assert_eq!(
            invoke_path(&function(
                "arn:aws:lambda:us-east-1:123456789012:function:chat-fn",
                Some("$LATEST")
            )),
            "/2015-03-31/functions/arn%3Aaws%3Alambda%3Aus-east-1%3A123456789012%3Afunction%3Achat-fn/invocations?Qualifier=%24LATEST"
        );
        assert_eq!(
            invoke_path(&function("f", Some("prod"))),
            "/2015-03-31/functions/f/invocations?Qualifier=prod"
        );
        assert_eq!(default_host("eu-west-1"), "lambda.eu-west-1.amazonaws.com");
        assert_eq!(invocation_type(InvocationMode::Async), "Event");
    }

    #[test]
    fn a_failed_function_is_a_502_naming_its_error_type_only() {
        let h = [(FUNCTION_ERROR_HEADER, "Unhandled")];
        let body = br#"{"errorMessage":"secret-ish detail","errorType":"ValueError","stackTrace":["  File \"/var/task/app.py\", line 3"]}"#;
        let e = error(200, &h, body);
        assert_eq!(
            (e.status, e.code.as_deref()),
            (502, Some("lambda_function_error"))
        );
        assert!(e.message.contains("ValueError"), "{}", e.message);
        assert!(!e.message.contains("secret-ish") && !e.message.contains("app.py"));
        let v: Value = serde_json::from_slice(&e.openai_body()).unwrap();
        assert_eq!(v["error"]["type"], "server_error");
        let v: Value = serde_json::from_slice(&e.anthropic_body()).unwrap();
        assert_eq!(v["error"]["type"], "api_error");
        // A payload that is not the usual shape still says the function failed.
        let e = error(200, &h, b"oops");
        assert_eq!(e.status, 502);
        assert_eq!(e.message, "the model's AWS Lambda function failed");
    }

    #[test]
    fn lambda_errors_get_mapped_statuses() {
        let cases: [(u16, &str, &[u8], u16); 7] = [
            (404, "ResourceNotFoundException", br#"{"Type":"User","Message":"Function not found: arn:aws:lambda:us-east-1:123456789012:function:x"}"#, 404),
            (429, "TooManyRequestsException", br#"{"Reason":"ReservedFunctionConcurrentInvocationLimitExceeded","Type":"User","message":"Rate Exceeded."}"#, 429),
            (403, "InvalidSignatureException", br#"{"message":"The request signature we calculated does not match"}"#, 401),
            (403, "AccessDeniedException", br#"{"Message":"not authorized to perform: lambda:InvokeFunction"}"#, 403),
            (502, "EC2UnexpectedException", br#"{"Message":"x"}"#, 502),
            (409, "ResourceConflictException", br#"{"Message":"The operation cannot be performed at this time."}"#, 503),
            (500, "ServiceException", b"", 502),
        ];
        for (status, name, body, want) in cases {
            let h = [("x-amzn-errortype", name)];
            let e = error(status, &h, body);
            assert_eq!(e.status, want, "{name}");
            assert_eq!(e.code.as_deref(), Some(name));
            assert!(!e.message.is_empty());
        }
        let e = error(
            404,
            &[("x-amzn-errortype", "ResourceNotFoundException")],
            br#"{"Message":"Function not found"}"#,
        );
        assert_eq!(e.message, "Function not found");
        let v: Value = serde_json::from_slice(&e.anthropic_body()).unwrap();
        assert_eq!(v["error"]["type"], "not_found_error");
        // No type and no body: the status alone.
        let none: [(&str, &str); 0] = [];
        let e = error(500, &none, b"");
        assert_eq!(
            (e.status, e.message.as_str()),
            (502, "AWS Lambda returned HTTP 500")
        );
    }
}
