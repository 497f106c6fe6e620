//! GPU path (issue #3): the CUDA kernels built by build.rs (kernels/), loaded through the CUDA driver API
//! with `cudarc`'s dynamic loading — the library links neither libcuda nor libcudart, so it loads and serves
//! the CPU op on machines without a GPU.
//!
//! - [`driver`]: is a usable libcuda there, error type, context guard;
//! - [`module`]: the embedded fatbin, loaded lazily once per device;
//! - [`decode`]: split-KV decode kernel for few query rows: applicability, split count, workspace, launch;
//! - [`dispatch`]: which kernel serves a problem on a device (compute capability, dtype, head_dim);
//! - [`key_padding`]: key-only masks (exported attention_mask) served by the plain kernels where they keep a
//!   prefix of the keys, decided on the device;
//! - [`prefill_split`]: split-KV for the Hopper prefill kernel (short queries over long caches);
//! - [`launch`]: grid/shared-memory set-up and the launch on a caller's stream;
//! - [`selfcheck`]: first-use check of the Blackwell kernel (never run on hardware here) against the
//!   portable kernel, in a private context; a failure leaves the device to the portable kernel;
//! - [`tensor_map`]: TMA descriptors of Q/K/V for the Hopper kernel;
//! - [`kv_append`]: the KV-cache append step (present, rotary) queued before attention;
//! - [`ffi`]: `extern "C"` entry points the GPU test/benchmark script drives through ctypes.

pub mod decode;
pub mod dispatch;
pub mod driver;
pub mod ffi;
pub mod key_padding;
pub mod kv_append;
pub mod launch;
pub mod module;
pub mod prefill_split;
pub mod selfcheck;
pub mod tensor_map;

pub use driver::GpuError;
pub use launch::{launch, launch_with_workspace, prepare, Prepared};

/// True when this build embeds CUDA kernels (nvcc was found at build time).
pub const fn kernels_built() -> bool {
    cfg!(flashattn_kernels)
}
