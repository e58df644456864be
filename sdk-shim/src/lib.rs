//! Host layers for the AI gateway core (placeholder; see native.rs / wasm.rs).
