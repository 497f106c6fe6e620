//! The CUDA driver, reached only through `cudarc`'s dynamic loading: every call site first checks
//! [`available`], because cudarc panics when libcuda cannot be loaded.

use std::ffi::CStr;
use std::fmt;
use std::sync::OnceLock;

use cudarc::driver::sys;

/// A failure on the GPU path, worded for the user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GpuError(pub String);

impl fmt::Display for GpuError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ai.flashattn::FlashAttention (CUDA): {}", self.0)
    }
}

impl std::error::Error for GpuError {}

impl GpuError {
    pub fn new(msg: impl Into<String>) -> Self {
        GpuError(msg.into())
    }
}

/// Name and description of a driver error code.
pub fn describe(r: sys::CUresult) -> String {
    let mut name = std::ptr::null();
    let mut text = std::ptr::null();
    unsafe {
        let _ = sys::cuGetErrorName(r, &mut name);
        let _ = sys::cuGetErrorString(r, &mut text);
    }
    let s = |p: *const std::ffi::c_char| if p.is_null() { String::from("?") } else { unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned() };
    format!("{} ({})", s(name), s(text))
}

/// `Ok` on CUDA_SUCCESS, else an error naming the call.
pub fn check(r: sys::CUresult, what: &str) -> Result<(), GpuError> {
    if r == sys::CUresult::CUDA_SUCCESS {
        Ok(())
    } else {
        Err(GpuError(format!("{what} failed: {}", describe(r))))
    }
}

/// Whether libcuda can be loaded and initialised; checked once per process.
pub fn available() -> Result<(), GpuError> {
    static STATE: OnceLock<Result<(), GpuError>> = OnceLock::new();
    STATE
        .get_or_init(|| {
            if !unsafe { sys::is_culib_present() } {
                return Err(GpuError::new("the CUDA driver library (libcuda.so) could not be loaded"));
            }
            // cudarc panics when a symbol is missing (a driver older than CUDA 13.0): keep that inside.
            match std::panic::catch_unwind(|| unsafe { sys::cuInit(0) }) {
                Ok(r) => check(r, "cuInit"),
                Err(_) => Err(GpuError::new("the CUDA driver lacks an entry point this library needs (driver too old for CUDA 13.0?)")),
            }
        })
        .clone()
}

/// Makes a context current for the guard's lifetime (push/pop, so the caller's current context survives).
pub struct CurrentContext(());

impl CurrentContext {
    pub fn push(ctx: sys::CUcontext) -> Result<Self, GpuError> {
        check(unsafe { sys::cuCtxPushCurrent_v2(ctx) }, "cuCtxPushCurrent")?;
        Ok(CurrentContext(()))
    }
}

impl Drop for CurrentContext {
    fn drop(&mut self) {
        let mut old = std::ptr::null_mut();
        unsafe {
            let _ = sys::cuCtxPopCurrent_v2(&mut old);
        }
    }
}

/// The context a stream belongs to (for the legacy/null stream: the current context) and its device.
pub fn stream_context(stream: sys::CUstream) -> Result<(sys::CUcontext, sys::CUdevice), GpuError> {
    let mut ctx = std::ptr::null_mut();
    check(unsafe { sys::cuStreamGetCtx(stream, &mut ctx) }, "cuStreamGetCtx")?;
    if ctx.is_null() {
        return Err(GpuError::new("the compute stream has no CUDA context"));
    }
    let _cur = CurrentContext::push(ctx)?;
    let mut dev: sys::CUdevice = 0;
    check(unsafe { sys::cuCtxGetDevice(&mut dev) }, "cuCtxGetDevice")?;
    Ok((ctx, dev))
}

pub fn device_attribute(dev: sys::CUdevice, attr: sys::CUdevice_attribute) -> Result<i32, GpuError> {
    let mut v = 0;
    check(unsafe { sys::cuDeviceGetAttribute(&mut v, attr, dev) }, "cuDeviceGetAttribute")?;
    Ok(v)
}

/// Whether launches that may overlap the kernel before them (programmatic dependent launch) are used where
/// the device has them. A benchmarking aid (ffi `flashattn_ort_gpu_set_dependent_launch`).
static DEPENDENT_LAUNCH: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(true);

pub fn set_dependent_launch(on: bool) {
    DEPENDENT_LAUNCH.store(on, std::sync::atomic::Ordering::Relaxed);
}

/// One kernel launch: grid, `threads` per block, dynamic shared memory, the kernel's argument pointers, and
/// the blocks along x that form one thread-block cluster (0 or 1: no clusters).
pub struct Launch<'a> {
    pub grid: (u32, u32, u32),
    pub threads: u32,
    pub smem: u32,
    pub args: &'a mut [*mut std::ffi::c_void],
    pub cluster_x: u32,
}

/// The launch attribute that makes every `x` consecutive blocks along x one thread-block cluster.
pub fn cluster_dimension(x: u32) -> sys::CUlaunchAttribute {
    // SAFETY: CUlaunchAttribute is plain data; zeroed is a valid value before the fields are set.
    let mut attr: sys::CUlaunchAttribute = unsafe { std::mem::zeroed() };
    attr.id = sys::CUlaunchAttributeID::CU_LAUNCH_ATTRIBUTE_CLUSTER_DIMENSION;
    attr.value.clusterDim.x = x;
    attr.value.clusterDim.y = 1;
    attr.value.clusterDim.z = 1;
    attr
}

/// Queues `f` on `stream`; every kernel launch of the library goes through here. `dependent`: the kernel
/// calls `dependent_wait()` (kernels/dependent_launch.cuh) before touching memory and the device has
/// compute capability 9.0+, so it may be launched while the kernel before it finishes (programmatic stream
/// serialization), hiding the launch latency between the two.
/// `what` names the launch in an error; it is only formatted when the launch fails.
pub fn launch_kernel(f: sys::CUfunction, l: Launch<'_>, stream: sys::CUstream, dependent: bool, what: &dyn Fn() -> String) -> Result<(), GpuError> {
    let (gx, gy, gz) = l.grid;
    let dependent = dependent && DEPENDENT_LAUNCH.load(std::sync::atomic::Ordering::Relaxed);
    let r = if dependent || l.cluster_x > 1 {
        // SAFETY: CUlaunchAttribute is plain data; zeroed is a valid value before the fields are set.
        let mut attrs: [sys::CUlaunchAttribute; 2] = unsafe { std::mem::zeroed() };
        let mut n = 0;
        if dependent {
            attrs[n].id = sys::CUlaunchAttributeID::CU_LAUNCH_ATTRIBUTE_PROGRAMMATIC_STREAM_SERIALIZATION;
            attrs[n].value.programmaticStreamSerializationAllowed = 1;
            n += 1;
        }
        if l.cluster_x > 1 {
            attrs[n] = cluster_dimension(l.cluster_x);
            n += 1;
        }
        let config = sys::CUlaunchConfig {
            gridDimX: gx,
            gridDimY: gy,
            gridDimZ: gz,
            blockDimX: l.threads,
            blockDimY: 1,
            blockDimZ: 1,
            sharedMemBytes: l.smem,
            hStream: stream,
            attrs: attrs.as_mut_ptr(),
            numAttrs: n as u32,
        };
        unsafe { sys::cuLaunchKernelEx(&config, f, l.args.as_mut_ptr(), std::ptr::null_mut()) }
    } else {
        unsafe { sys::cuLaunchKernel(f, gx, gy, gz, l.threads, 1, 1, l.smem, stream, l.args.as_mut_ptr(), std::ptr::null_mut()) }
    };
    if r == sys::CUresult::CUDA_SUCCESS { Ok(()) } else { check(r, &what()) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_dimension_spans_x_only() {
        let a = cluster_dimension(16);
        assert_eq!(a.id, sys::CUlaunchAttributeID::CU_LAUNCH_ATTRIBUTE_CLUSTER_DIMENSION);
        // SAFETY: the union's clusterDim member is the one cluster_dimension wrote.
        let d = unsafe { a.value.clusterDim };
        assert_eq!((d.x, d.y, d.z), (16, 1, 1));
    }
}
