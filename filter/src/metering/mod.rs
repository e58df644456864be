//! Metering: token usage read from answers, and the costs computed from it.

pub mod cost;
pub mod usage;
