//! Wire framings the gateway decodes and encodes: server-sent events and AWS's
//! binary event stream.

pub mod eventstream;
pub mod sse;
