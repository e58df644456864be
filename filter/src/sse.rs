//! Server-sent events: a push parser that takes what arrived and returns complete
//! events, keeping only the unfinished tail.
//!
//! INTERFACE STUB (to be implemented).
