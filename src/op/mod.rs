//! ONNX Runtime glue: the op's signature and shape inference, its kernels, and `RegisterCustomOps`.

pub mod attributes;
pub mod cpu;
pub mod cuda;
pub mod operator;
pub mod ort_pool;
pub mod register;
pub mod signature;

use std::panic::{catch_unwind, AssertUnwindSafe};

/// Runs an ORT callback body: a panic becomes an ORT error instead of unwinding into ORT (which aborts).
pub fn guard<R>(what: &str, f: impl FnOnce() -> ort::Result<R>) -> ort::Result<R> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(r) => r,
        Err(panic) => {
            let msg = panic
                .downcast_ref::<String>()
                .map(String::as_str)
                .or_else(|| panic.downcast_ref::<&str>().copied())
                .unwrap_or("unknown panic");
            Err(ort::Error::new(format!("ai.flashattn::FlashAttention: internal error in {what}: {msg}")))
        }
    }
}

/// A schema violation as an ORT error (status code INVALID_ARGUMENT).
pub fn invalid(e: impl std::fmt::Display) -> ort::Error {
    ort::Error::new_with_code(ort::ErrorCode::InvalidArgument, e.to_string())
}
