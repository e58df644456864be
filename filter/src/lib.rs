//! The host-free core of an AI gateway that runs inside Envoy.
//!
//! This crate does no I/O: it reads no clock, opens no socket, touches no file and
//! calls no Envoy API. A host layer (the dynamic-module binding or the proxy-wasm
//! adapter in `sdk-shim/`) feeds it request and response headers and body chunks,
//! together with the current time, and applies the [`Action`]s it answers with.
//! Because both hosts drive the same [`HttpFilter`], a test of this crate is a test
//! of both builds.
//!
//! One [`Config`] is validated once at load and shared read-only by every request.

pub mod auth;
pub mod codec;
pub mod config;
pub mod date;
pub mod endpoint;
pub mod error;
mod expr;
pub mod host;
pub mod machine;
pub mod metering;
pub mod models;
pub mod policy;
pub mod schema;
pub mod translate;

pub use config::{Config, ConfigError};
pub use error::GatewayError;
pub use host::{Action, Headers, MetadataValue, Status};
pub use machine::{FilterRole, HttpFilter};

/// Dynamic-metadata namespace shared with Envoy AI Gateway, read by access logs and
/// the rate-limit filter.
pub const METADATA_NAMESPACE: &str = "io.envoy.ai_gateway";

/// The routing header: Envoy's route table matches the request's model on it.
pub const MODEL_HEADER: &str = "x-ai-eg-model";

/// Prefix of headers the gateway uses between its own filter instances. The
/// router-level instance removes any a client sends, so none can be spoofed.
pub const INTERNAL_HEADER_PREFIX: &str = "x-aigw-";
