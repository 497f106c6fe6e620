//! Launching the forward kernel on a caller's stream (ONNX Runtime's compute stream, or PyTorch's in the
//! test script): no allocation, no host synchronisation, so it can be captured into a CUDA graph.

use std::ffi::c_void;

use cudarc::driver::sys;

use super::decode::{self, Workspace};
use super::dispatch::{self, KernelSpec};
use super::driver::{self, check, CurrentContext, GpuError};
use super::module;
use crate::params::AttnParams;

/// Grid of a launch: x = query blocks, y = query heads, z = batch (kernels/tile_scheduler.cuh).
pub fn grid(k: &KernelSpec, p: &AttnParams) -> Result<(u32, u32, u32), GpuError> {
    let gx = (p.seq_q as i64 + k.bm as i64 - 1) / k.bm as i64;
    if p.heads_q > 65535 || p.batch > 65535 {
        return Err(GpuError::new(format!("batch {} and query heads {} must each be at most 65535 on the GPU", p.batch, p.heads_q)));
    }
    Ok((gx as u32, p.heads_q as u32, p.batch as u32))
}

fn check_params(p: &AttnParams) -> Result<(), GpuError> {
    if p.q_ptr == 0 || p.k_ptr == 0 || p.v_ptr == 0 || p.out_ptr == 0 {
        return Err(GpuError::new("query, key, value and output must have device addresses"));
    }
    if p.mask_kind != 0 && p.mask_ptr == 0 {
        return Err(GpuError::new("input 'attn_mask' is declared but has no device address"));
    }
    if p.has_seqlens != 0 && p.seqlens_ptr == 0 {
        return Err(GpuError::new("input 'key_seqlens' is declared but has no device address"));
    }
    if p.heads_kv <= 0 || p.heads_q % p.heads_kv != 0 {
        return Err(GpuError::new(format!("query heads {} must be a multiple of key/value heads {}", p.heads_q, p.heads_kv)));
    }
    Ok(())
}

/// Runs FlashAttention forward for `p` (device addresses inside) on `stream` (a `CUstream` /
/// `cudaStream_t`; null = the legacy default stream of the current context). Returns once the kernel is
/// queued. Without a workspace, decode-shaped problems run unsplit (see [`launch_with_workspace`]).
pub fn launch(p: &AttnParams, stream: *mut c_void) -> Result<(), GpuError> {
    launch_with_workspace(p, stream, Workspace::default())
}

/// [`launch`] with device scratch memory the split-KV decode kernel may use (its size from
/// [`decode::workspace_size`]; a smaller one means fewer splits). The workspace must stay untouched until
/// the kernels queued on `stream` have run.
pub fn launch_with_workspace(p: &AttnParams, stream: *mut c_void, ws: Workspace) -> Result<(), GpuError> {
    driver::available()?;
    if p.batch == 0 || p.seq_q == 0 || p.heads_q == 0 {
        return Ok(()); // nothing to compute, nothing to write
    }
    check_params(p)?;
    let stream = stream as sys::CUstream;
    let (ctx, dev) = driver::stream_context(stream)?;
    let kernels = module::device_kernels(dev)?;
    if ctx != kernels.ctx {
        return Err(GpuError::new(format!(
            "the compute stream belongs to a non-primary CUDA context of device {dev}; only primary contexts (as ONNX Runtime and PyTorch use) are supported"
        )));
    }
    if let Some(plan) = decode::plan(p, kernels.into(), ws.bytes)? {
        let _cur = CurrentContext::push(ctx)?;
        return decode::launch(&plan, p, kernels, ws, stream);
    }
    let spec = dispatch::select(p, kernels.cc, kernels.max_smem_optin)?;
    let f = kernels.function(&spec)?;
    let (gx, gy, gz) = grid(&spec, p)?;
    let _cur = CurrentContext::push(ctx)?;
    let mut arg = *p;
    let mut args = [(&mut arg as *mut AttnParams).cast::<c_void>()];
    check(
        unsafe { sys::cuLaunchKernel(f, gx, gy, gz, spec.threads(), 1, 1, spec.smem_bytes(), stream, args.as_mut_ptr(), std::ptr::null_mut()) },
        &format!("launching {}", spec.name()),
    )
}
