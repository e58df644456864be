//! Anthropic's token counting (`/anthropic/v1/messages/count_tokens`) on each
//! flavor: the native API's `/v1/messages/count_tokens`, Vertex AI's `count-tokens`
//! publisher model, and Bedrock's `CountTokens`, which takes the InvokeModel body
//! base64-encoded and answers in its own shape.

use base64::Engine as _;
use serde_json::{json, Map, Value};

use super::{Flavor, Target};
use crate::auth::sigv4::encode_path_segment;
use crate::translate::{TranslateError, UpstreamRequest};

/// `max_tokens` Bedrock's InvokeModel body requires; counting ignores it.
const BEDROCK_MAX_TOKENS: u64 = 1;

/// The client's count request for the flavor (`target.stream` is not read).
pub fn count_tokens_request(
    body: &[u8],
    target: &Target<'_>,
) -> Result<UpstreamRequest, TranslateError> {
    let mut map: Map<String, Value> = crate::translate::plan::read_json(body)?;
    map.shift_remove("stream");
    let headers = target.headers();
    let model = target.model;
    let (path, body) = match target.flavor {
        Flavor::Native => {
            map.insert("model".into(), Value::String(model.to_string()));
            ("/v1/messages/count_tokens".to_string(), to_vec(&map)?)
        }
        // Vertex counts with a publisher model of its own; the body names the model.
        Flavor::Vertex { project, region } => {
            map.insert("model".into(), Value::String(model.to_string()));
            target.set_body_version(&mut map);
            let path = format!(
                "/v1/projects/{}/locations/{}/publishers/anthropic/models/count-tokens:rawPredict",
                encode_path_segment(project),
                encode_path_segment(region),
            );
            (path, to_vec(&map)?)
        }
        Flavor::Bedrock => {
            map.shift_remove("model");
            target.set_body_version(&mut map);
            map.entry("max_tokens")
                .or_insert_with(|| Value::from(BEDROCK_MAX_TOKENS));
            let invoke = base64::engine::general_purpose::STANDARD.encode(to_vec(&map)?);
            let wrapped = json!({"input": {"invokeModel": {"body": invoke}}});
            let path = format!("/model/{}/count-tokens", encode_path_segment(model));
            (path, to_vec(&wrapped)?)
        }
    };
    Ok(UpstreamRequest {
        path,
        body,
        headers,
    })
}

/// Bedrock's answer (`{"inputTokens": n}`) in Anthropic's shape.
pub fn bedrock_count_response(body: &[u8]) -> Result<Vec<u8>, TranslateError> {
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Counted {
        input_tokens: u64,
    }
    let c: Counted = serde_json::from_slice(body).map_err(|e| {
        TranslateError::BadResponse(format!("Bedrock's CountTokens answer is not readable: {e}"))
    })?;
    Ok(json!({"input_tokens": c.input_tokens})
        .to_string()
        .into_bytes())
}

fn to_vec(v: &impl serde::Serialize) -> Result<Vec<u8>, TranslateError> {
    serde_json::to_vec(v).map_err(|e| TranslateError::invalid("body", e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(flavor: Flavor<'_>) -> Target<'_> {
        Target {
            flavor,
            model: "claude-sonnet-4@20250514",
            stream: false,
            include_usage: false,
            version: None,
        }
    }

    const BODY: &[u8] =
        br#"{"model":"claude","system":"be brief","messages":[{"role":"user","content":"hi"}]}"#;

    #[test]
    fn native_and_vertex_name_the_model_in_the_body() {
        let up = count_tokens_request(BODY, &target(Flavor::Native)).unwrap();
        assert_eq!(up.path, "/v1/messages/count_tokens");
        let v: Value = serde_json::from_slice(&up.body).unwrap();
        assert_eq!(v["model"], "claude-sonnet-4@20250514");
        assert!(v.get("anthropic_version").is_none());
        assert!(up.headers.iter().any(|(n, _)| *n == "anthropic-version"));

        let vertex = Flavor::Vertex {
            project: "p",
            region: "us-east5",
        };
        let up = count_tokens_request(BODY, &target(vertex)).unwrap();
        assert_eq!(
            up.path,
            "/v1/projects/p/locations/us-east5/publishers/anthropic/models/count-tokens:rawPredict"
        );
        let v: Value = serde_json::from_slice(&up.body).unwrap();
        assert_eq!(v["model"], "claude-sonnet-4@20250514");
        assert_eq!(v["anthropic_version"], "vertex-2023-10-16");
    }

    #[test]
    fn bedrock_wraps_the_invoke_body_and_its_answer_is_read_back() {
        let up = count_tokens_request(BODY, &target(Flavor::Bedrock)).unwrap();
        assert_eq!(up.path, "/model/claude-sonnet-4%4020250514/count-tokens");
        let v: Value = serde_json::from_slice(&up.body).unwrap();
        let inner = base64::engine::general_purpose::STANDARD
            .decode(v["input"]["invokeModel"]["body"].as_str().unwrap())
            .unwrap();
        let inner: Value = serde_json::from_slice(&inner).unwrap();
        assert!(inner.get("model").is_none());
        assert_eq!(inner["anthropic_version"], "bedrock-2023-05-31");
        assert_eq!(inner["max_tokens"], 1);
        assert_eq!(inner["system"], "be brief");

        let answer = bedrock_count_response(br#"{"inputTokens":42}"#).unwrap();
        assert_eq!(answer, br#"{"input_tokens":42}"#);
        assert!(bedrock_count_response(b"{}").is_err());
    }
}
