//! flashattn-ort: FlashAttention as an ONNX Runtime custom-op library (`ai.flashattn::FlashAttention`).
//!
//! The cdylib exports `RegisterCustomOps`; the same crate builds the `flashattn-ort` CLI.

pub mod check;
pub mod cli;
pub mod cpu;
pub mod gpu;
pub mod kv_schema;
pub mod model;
pub mod op;
pub mod params;
pub mod rewrite;
pub mod runtime;
pub mod schema;

pub use op::register::RegisterCustomOps;

/// docs/USAGE.md: its Rust example compiles as a doctest, so it stays true to the `ort` API.
#[cfg(doctest)]
#[doc = include_str!("../docs/USAGE.md")]
pub struct UsageDoc;

/// The custom-op domain and op name, as they appear in ONNX graphs.
pub const DOMAIN: &str = "ai.flashattn";
pub const OP_NAME: &str = "FlashAttention";
pub const OP_VERSION: i64 = 1;
