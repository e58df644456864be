//! OpenAI-schema backends (OpenAI, Azure OpenAI, Mistral, vLLM and other compatible
//! servers) read back into hub values, for clients that speak another API.
//!
//! The hub is OpenAI's own schema, so requests need no translation here; answers do
//! need reading, and compatible servers differ in small ways this module evens out:
//! missing `object`/`created`/`index` fields, tool-call pieces without `index`,
//! `content` sent as a list of parts (Mistral: text, `thinking`, `reference`),
//! reasoning under `reasoning` instead of `reasoning_content`, usage on the last
//! content chunk instead of a usage-only chunk, and no `[DONE]` at the end.
//!
//! Answers and errors are read in `response`, streams in `stream`.

mod response;
mod stream;
#[cfg(test)]
mod tests;

pub use response::{chat_response, error};
pub(crate) use response::{clip, plain_reason, MAX_MESSAGE_CHARS};
pub use stream::ChatStream;
