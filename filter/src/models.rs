//! `GET /v1/models`, answered by the gateway from its configuration in OpenAI's
//! list shape.

use serde_json::json;

use crate::config::ModelInfo;

/// The JSON body listing `models`.
pub fn list_body(models: &[ModelInfo]) -> Vec<u8> {
    let data: Vec<_> = models
        .iter()
        .map(|m| {
            json!({
                "id": m.id,
                "object": "model",
                "created": m.created,
                "owned_by": m.owned_by,
            })
        })
        .collect();
    serde_json::to_vec(&json!({ "object": "list", "data": data })).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn openai_list_shape() {
        let body = list_body(&[ModelInfo {
            id: "gpt-4o-mini".into(),
            owned_by: "openai".into(),
            created: 1_700_000_000,
        }]);
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["object"], "list");
        assert_eq!(v["data"][0]["id"], "gpt-4o-mini");
        assert_eq!(v["data"][0]["object"], "model");
        assert_eq!(v["data"][0]["created"], 1_700_000_000);
        assert_eq!(v["data"][0]["owned_by"], "openai");
    }
}
