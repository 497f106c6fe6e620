//! Launching the KV-cache append step (kernels/kv_append.cuh) on a caller's stream, before attention:
//! present written, rotary applied to the new keys and (into `q_rot_ptr`) to the query. No allocation, no
//! host synchronisation. The kernels live in the same fatbin as attention; this module resolves its two
//! entry points itself (its own module handle per device, loaded once into the primary context).

use std::ffi::c_void;
use std::sync::OnceLock;

use cudarc::driver::sys;

use super::driver::{self, check, CurrentContext, GpuError};
use super::module::{FATBIN, MAX_DEVICES};
use crate::params::{DType, KvAppendParams};

const THREADS: u32 = 128;

/// The append step's entry points in the fatbin (kernels/kv_append.cuh).
pub const KERNEL_NAMES: [&str; 2] = ["kv_append_f16", "kv_append_bf16"];

struct AppendKernels {
    ctx: sys::CUcontext,
    f16: sys::CUfunction,
    bf16: sys::CUfunction,
}
// Plain driver handles, usable from any thread.
unsafe impl Send for AppendKernels {}
unsafe impl Sync for AppendKernels {}

static DEVICES: [OnceLock<Result<AppendKernels, GpuError>>; MAX_DEVICES] = [const { OnceLock::new() }; MAX_DEVICES];

fn load(dev: sys::CUdevice) -> Result<AppendKernels, GpuError> {
    let Some(image) = FATBIN else {
        return Err(GpuError::new("this build of libflashattn_ort has no CUDA kernels (nvcc was not found when it was built)"));
    };
    let mut ctx = std::ptr::null_mut();
    check(unsafe { sys::cuDevicePrimaryCtxRetain(&mut ctx, dev) }, "cuDevicePrimaryCtxRetain")?;
    let _cur = CurrentContext::push(ctx)?;
    let mut aligned = vec![0u64; image.len().div_ceil(8)];
    unsafe { std::ptr::copy_nonoverlapping(image.as_ptr(), aligned.as_mut_ptr().cast::<u8>(), image.len()) };
    let mut module = std::ptr::null_mut();
    check(unsafe { sys::cuModuleLoadData(&mut module, aligned.as_ptr().cast()) }, "loading the CUDA kernels (cuModuleLoadData)")?;
    let get = |name: &str| -> Result<sys::CUfunction, GpuError> {
        let c = std::ffi::CString::new(name).expect("no NUL");
        let mut f = std::ptr::null_mut();
        check(unsafe { sys::cuModuleGetFunction(&mut f, module, c.as_ptr()) }, &format!("finding kernel {name}"))?;
        Ok(f)
    };
    Ok(AppendKernels { ctx, f16: get(KERNEL_NAMES[0])?, bf16: get(KERNEL_NAMES[1])? })
}

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
    let (ctx, dev) = driver::stream_context(stream)?;
    let slot = DEVICES.get(dev as usize).ok_or_else(|| GpuError::new(format!("device ordinal {dev} beyond the supported {MAX_DEVICES}")))?;
    let k = slot.get_or_init(|| load(dev)).as_ref().map_err(Clone::clone)?;
    if ctx != k.ctx {
        return Err(GpuError::new("the compute stream belongs to a non-primary CUDA context; only primary contexts are supported"));
    }
    let f = match p.dtype {
        x if x == DType::F16 as i32 => k.f16,
        x if x == DType::BF16 as i32 => k.bf16,
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
    check(
        unsafe { sys::cuLaunchKernel(f, blocks, 1, 1, THREADS, 1, 1, 0, stream, args.as_mut_ptr(), std::ptr::null_mut()) },
        "launching kv_append",
    )
}
