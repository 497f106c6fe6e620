//! Launching the KV-cache append step (kernels/kv_append.cuh) on a caller's stream, before attention:
//! present written, rotary applied to the new keys and (into `q_rot_ptr`) to the query. No allocation, no
//! host synchronisation. The kernels live in the same fatbin (and loaded module) as attention.

use std::ffi::c_void;

use cudarc::driver::sys;

use super::driver::{self, CurrentContext, GpuError};
use super::module;
use crate::params::{DType, KvAppendParams};

const THREADS: u32 = 128;

/// The append step's entry points in the fatbin (kernels/kv_append.cuh).
pub const KERNEL_NAMES: [&str; 2] = ["kv_append_f16", "kv_append_bf16"];

/// Queues the append step for `p` (device addresses inside) on `stream`.
pub fn launch_append(p: &KvAppendParams, stream: *mut c_void) -> Result<(), GpuError> {
    driver::available()?;
    if p.present_k_ptr == 0 || p.present_v_ptr == 0 || p.new_k_ptr == 0 || p.new_v_ptr == 0 {
        return Err(GpuError::new("present_key, present_value, key and value must have device addresses"));
    }
    if p.rotary_dim > 0 && (p.cos_ptr == 0 || p.sin_ptr == 0) {
        return Err(GpuError::new("rotary needs device addresses of cos_cache and sin_cache"));
    }
    let stream = stream as sys::CUstream;
    let (ctx, k) = module::stream_kernels(stream)?;
    let f = match p.dtype {
        x if x == DType::F16 as i32 => k.named(KERNEL_NAMES[0])?,
        x if x == DType::BF16 as i32 => k.named(KERNEL_NAMES[1])?,
        _ => return Err(GpuError::new("the CUDA KV append serves float16 and bfloat16 only")),
    };
    let copy_rows = if p.past_k_ptr != 0 { p.batch as i64 * p.heads_kv as i64 * p.past_seq as i64 } else { 0 };
    let rows = copy_rows + p.batch as i64 * p.heads_kv as i64 * p.seq_new as i64 + if p.q_rot_ptr != 0 { p.batch as i64 * p.heads_q as i64 * p.seq_q as i64 } else { 0 };
    if rows == 0 {
        return Ok(());
    }
    let warps_per_block = (THREADS / 32) as i64;
    let blocks = ((rows + warps_per_block - 1) / warps_per_block).min(65535) as u32;
    let _cur = CurrentContext::push(ctx)?;
    let mut arg = *p;
    let mut args = [(&mut arg as *mut KvAppendParams).cast::<c_void>()];
    driver::launch_kernel(f, driver::Launch { grid: (blocks, 1, 1), threads: THREADS, smem: 0, args: &mut args, cluster_x: 0 }, stream, false, &|| "launching kv_append".into())
}
