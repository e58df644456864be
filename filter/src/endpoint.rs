//! Which API a request path is, decided once from `:path`.

/// The endpoints the gateway understands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Endpoint {
    /// `GET /v1/models`, answered locally.
    Models,
    ChatCompletions,
    Completions,
    Embeddings,
    /// Anthropic's Messages API, `POST /anthropic/v1/messages`.
    Messages,
    /// OpenAI's Responses API, `POST /v1/responses` (stateless use and OpenAI-schema
    /// backends for now).
    Responses,
}

impl Endpoint {
    /// Classifies a request path (query string ignored). `None`: not an AI endpoint;
    /// the gateway lets it through untouched.
    pub fn classify(path: &str) -> Option<Endpoint> {
        let path = path.split(['?', '#']).next().unwrap_or(path);
        let path = path.strip_suffix('/').unwrap_or(path);
        match path {
            "/v1/models" => Some(Endpoint::Models),
            "/v1/chat/completions" => Some(Endpoint::ChatCompletions),
            "/v1/completions" => Some(Endpoint::Completions),
            "/v1/embeddings" => Some(Endpoint::Embeddings),
            "/anthropic/v1/messages" => Some(Endpoint::Messages),
            "/v1/responses" => Some(Endpoint::Responses),
            _ => None,
        }
    }

    /// The canonical path, for messages.
    pub fn path(self) -> &'static str {
        match self {
            Endpoint::Models => "/v1/models",
            Endpoint::ChatCompletions => "/v1/chat/completions",
            Endpoint::Completions => "/v1/completions",
            Endpoint::Embeddings => "/v1/embeddings",
            Endpoint::Messages => "/anthropic/v1/messages",
            Endpoint::Responses => "/v1/responses",
        }
    }

    /// Whether responses of this endpoint can be streamed as SSE.
    pub fn can_stream(self) -> bool {
        matches!(
            self,
            Endpoint::ChatCompletions
                | Endpoint::Completions
                | Endpoint::Messages
                | Endpoint::Responses
        )
    }

    /// The API schema its clients speak (and get errors in).
    pub fn client_schema(self) -> crate::error::ClientSchema {
        match self {
            Endpoint::Messages => crate::error::ClientSchema::Anthropic,
            _ => crate::error::ClientSchema::OpenAI,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classification() {
        assert_eq!(
            Endpoint::classify("/v1/chat/completions"),
            Some(Endpoint::ChatCompletions)
        );
        assert_eq!(
            Endpoint::classify("/v1/chat/completions?x=1"),
            Some(Endpoint::ChatCompletions)
        );
        assert_eq!(Endpoint::classify("/v1/models/"), Some(Endpoint::Models));
        assert_eq!(
            Endpoint::classify("/v1/embeddings"),
            Some(Endpoint::Embeddings)
        );
        assert_eq!(
            Endpoint::classify("/v1/completions"),
            Some(Endpoint::Completions)
        );
        assert_eq!(
            Endpoint::classify("/anthropic/v1/messages"),
            Some(Endpoint::Messages)
        );
        assert_eq!(
            Endpoint::classify("/v1/responses/"),
            Some(Endpoint::Responses)
        );
        // Retrieving a stored response is not an AI endpoint the gateway serves.
        assert_eq!(Endpoint::classify("/v1/responses/resp_1"), None);
        assert_eq!(Endpoint::classify("/v1/messages"), None);
        assert_eq!(Endpoint::classify("/v1/chat/completionsX"), None);
        assert_eq!(Endpoint::classify("/healthz"), None);
    }
}
