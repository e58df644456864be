//! Host layers for the AI gateway core (`aigw_filter`): they move headers and body
//! bytes between a host and the core's per-request machine, and apply the actions it
//! answers with. Nothing else happens here.
//!
//! - Native build: `libaigw.so`, an Envoy dynamic module. `abi` is our binding over
//!   Envoy's C ABI (all `unsafe` lives there); `native` exports the hooks Envoy calls.
//! - wasm32 build: `aigw.wasm`, a proxy-wasm filter.

#[cfg(not(target_arch = "wasm32"))]
mod abi;
#[cfg(not(target_arch = "wasm32"))]
mod native;
mod secret_env;
#[cfg(not(target_arch = "wasm32"))]
mod secret_files;
#[cfg(not(target_arch = "wasm32"))]
mod timers;

#[cfg(target_arch = "wasm32")]
mod wasm;
