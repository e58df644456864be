//! Compiles Envoy AI Gateway Kubernetes resources (AIGatewayRoute, AIServiceBackend,
//! BackendSecurityPolicy, with Envoy Gateway `Backend`, Gateway API
//! `BackendTLSPolicy` and `Secret`, the generic AIGatewayRoute, and kgateway
//! resources with their HTTPRoutes) into the aigw
//! filter's JSON config, a standalone Envoy bootstrap and Envoy Gateway manifests.
//!
//! [`compile`] is pure: manifests in, documents or diagnostics out. Reading files,
//! folders and Secrets is the binary's job (`main.rs`); parsing their text into
//! [`Manifest`]s is [`manifest::parse_yaml`] / [`manifest::parse_json`].

mod bootstrap;
pub mod compile;
pub mod credentials;
pub mod diag;
mod eaig_quota;
mod eg_patch;
mod envoy_gateway;
pub mod generic;
pub mod kgateway;
pub mod manifest;
pub mod quota;
mod read;
pub mod resources;
mod security;
pub mod units;

pub use compile::{compile, compile_with, Options, Output, SecretFile};
pub use diag::{Diagnostic, ResourceId, Severity, Source};
pub use manifest::{Manifest, SecretValue};
