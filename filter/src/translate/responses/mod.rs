//! OpenAI's Responses API as a client API: its requests to the hub, the hub's
//! answers (whole or streamed) back into its response object and events. Backends
//! that speak it themselves (OpenAI, Azure OpenAI) get the client's body instead.

mod request;
mod response;
mod stream;

pub use request::client_request;
pub use response::client_response;
pub use stream::ClientStream;

#[cfg(test)]
mod tests;
