//! Wire framings the gateway decodes and encodes: server-sent events, AWS's binary
//! event stream, and the form bodies of uploads.

pub mod eventstream;
pub mod multipart;
pub mod sse;
