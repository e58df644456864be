//! Wire schemas the gateway reads and writes, one module per API.
//!
//! Structs name only the fields the gateway looks at; a flattened `rest` map keeps
//! every other field, so a body parsed and written back loses nothing, and a field a
//! provider adds tomorrow passes through untouched.

pub mod anthropic;
pub mod openai;
