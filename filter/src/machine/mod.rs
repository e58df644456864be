//! The two per-request machines both hosts drive: the router-level instance before
//! Envoy's router, and the upstream instance in a backend cluster, once per attempt.

pub mod router;
pub mod upstream;

pub use router::{FilterRole, HttpFilter};
