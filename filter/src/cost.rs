//! LLM request costs: what each configured `metadataKey` is worth for one request.
//!
//! INTERFACE STUB (to be implemented): token-typed costs read one counter from
//! [`TokenUsage`]; CEL costs are compiled once at config load and evaluated per request.

use crate::usage::TokenUsage;

/// A cost compile error; `field` is relative to the cost entry (`type` or `cel`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CostConfigError {
    pub field: &'static str,
    pub message: String,
}

/// Why a cost was not written for a request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CostError {
    /// The CEL expression failed at evaluation time.
    Eval(String),
    /// The result is negative, fractional or not a number.
    NotANonNegativeInteger(String),
}

/// What a CEL cost expression can see.
#[derive(Clone, Copy, Debug)]
pub struct CostInputs<'a> {
    pub model: &'a str,
    pub backend: &'a str,
    pub route_name: &'a str,
    pub usage: &'a TokenUsage,
}

/// One configured cost.
#[derive(Clone, Debug)]
pub struct RequestCost {
    pub metadata_key: String,
}

impl RequestCost {
    /// Compiles a cost entry. `kind` is one of InputToken, OutputToken, TotalToken,
    /// CachedInputToken, CacheCreationInputToken, ReasoningToken, CEL; `cel` is
    /// required for CEL and refused otherwise.
    pub fn compile(
        metadata_key: &str,
        kind: &str,
        cel: Option<&str>,
    ) -> Result<RequestCost, CostConfigError> {
        let _ = (kind, cel);
        Ok(RequestCost {
            metadata_key: metadata_key.to_string(),
        })
    }

    /// The cost of one request.
    pub fn evaluate(&self, inputs: &CostInputs<'_>) -> Result<u64, CostError> {
        Ok(inputs.usage.input_tokens)
    }
}
