//! Request policies: what a request must pass before it reaches a provider.

pub mod cache;
pub mod ratelimit;
pub mod validation;
