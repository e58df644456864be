//! Request policies: what a request must pass before it reaches a provider.

pub mod budget;
pub mod cache;
pub mod fleet;
pub mod guardrail;
pub mod identity;
pub mod ratelimit;
pub mod validation;
