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
    /// OpenAI's Responses API, `POST /v1/responses`.
    Responses,
    /// Image generation, `POST /v1/images/generations` (JSON).
    ImagesGenerations,
    /// Image edits, `POST /v1/images/edits` (a form upload, or JSON).
    ImagesEdits,
    /// Text to speech, `POST /v1/audio/speech` (JSON in, audio out).
    AudioSpeech,
    /// Speech to text, `POST /v1/audio/transcriptions` (a form upload).
    AudioTranscriptions,
    /// Speech to English text, `POST /v1/audio/translations` (a form upload).
    AudioTranslations,
    /// Cohere's rerank API, `POST /v1/rerank` (also `/v2/rerank`, Cohere's own path,
    /// and `/cohere/v2/rerank`, Envoy AI Gateway's).
    Rerank,
    /// Anthropic's token counting, `POST /anthropic/v1/messages/count_tokens`: no
    /// tokens generated, none metered or reserved.
    CountTokens,
    /// Any other path a route passes to its backend (`routes[].passthrough`): found
    /// from the configuration, never from the path alone.
    Passthrough,
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
            "/v1/images/generations" => Some(Endpoint::ImagesGenerations),
            "/v1/images/edits" => Some(Endpoint::ImagesEdits),
            "/v1/audio/speech" => Some(Endpoint::AudioSpeech),
            "/v1/audio/transcriptions" => Some(Endpoint::AudioTranscriptions),
            "/v1/audio/translations" => Some(Endpoint::AudioTranslations),
            "/v1/rerank" | "/v2/rerank" | "/cohere/v2/rerank" => Some(Endpoint::Rerank),
            "/anthropic/v1/messages/count_tokens" => Some(Endpoint::CountTokens),
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
            Endpoint::ImagesGenerations => "/v1/images/generations",
            Endpoint::ImagesEdits => "/v1/images/edits",
            Endpoint::AudioSpeech => "/v1/audio/speech",
            Endpoint::AudioTranscriptions => "/v1/audio/transcriptions",
            Endpoint::AudioTranslations => "/v1/audio/translations",
            Endpoint::Rerank => "/v1/rerank",
            Endpoint::CountTokens => "/anthropic/v1/messages/count_tokens",
            Endpoint::Passthrough => "passthrough",
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
                | Endpoint::ImagesGenerations
                | Endpoint::ImagesEdits
                | Endpoint::AudioTranscriptions
        )
    }

    /// Whether the body may be a `multipart/form-data` upload.
    pub fn takes_forms(self) -> bool {
        matches!(
            self,
            Endpoint::ImagesEdits | Endpoint::AudioTranscriptions | Endpoint::AudioTranslations
        )
    }

    /// Whether answers carry generated tokens: the ones limits reserve and budgets
    /// estimate before the answer (a passthrough's are counted only once reported).
    pub fn generates_tokens(self) -> bool {
        !matches!(self, Endpoint::CountTokens | Endpoint::Passthrough)
    }

    /// The API schema its clients speak (and get errors in).
    pub fn client_schema(self) -> crate::error::ClientSchema {
        match self {
            Endpoint::Messages | Endpoint::CountTokens => crate::error::ClientSchema::Anthropic,
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
        assert_eq!(
            Endpoint::classify("/v1/audio/transcriptions"),
            Some(Endpoint::AudioTranscriptions)
        );
        assert_eq!(
            Endpoint::classify("/v1/images/generations?x=1"),
            Some(Endpoint::ImagesGenerations)
        );
        assert_eq!(Endpoint::classify("/v2/rerank"), Some(Endpoint::Rerank));
        assert_eq!(
            Endpoint::classify("/anthropic/v1/messages/count_tokens"),
            Some(Endpoint::CountTokens)
        );
        // Retrieving a stored response is not an AI endpoint the gateway serves.
        assert_eq!(Endpoint::classify("/v1/responses/resp_1"), None);
        assert_eq!(Endpoint::classify("/v1/messages"), None);
        assert_eq!(Endpoint::classify("/v1/chat/completionsX"), None);
        assert_eq!(Endpoint::classify("/healthz"), None);
    }
}
