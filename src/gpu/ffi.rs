//! C entry points for the GPU test and benchmark script (scripts/gpu/), which has no Rust: Python calls
//! these through ctypes on tensors PyTorch owns, on PyTorch's stream. The struct layout is exported too,
//! so Python builds its ctypes mirror of `AttnParams` from the library rather than by hand.

use std::cell::RefCell;
use std::ffi::{c_char, c_void, CString};
use std::mem::{offset_of, size_of_val};

use crate::params::AttnParams;

macro_rules! fields {
    ($($f:ident),* $(,)?) => {
        /// (name, offset, size) of every field of `AttnParams`, as Rust lays it out.
        pub fn rust_params_layout() -> Vec<(&'static str, usize, usize)> {
            let p = AttnParams::default();
            vec![$((stringify!($f), offset_of!(AttnParams, $f), size_of_val(&p.$f))),*]
        }
        const FIELD_NAMES: &[&str] = &[$(concat!(stringify!($f), "\0")),*];
    };
}

fields!(
    q_ptr, k_ptr, v_ptr, out_ptr, lse_ptr, mask_ptr, seqlens_ptr, gate_ptr, gate, q_batch_stride, q_head_stride, q_row_stride,
    k_batch_stride, k_head_stride, k_row_stride, v_batch_stride, v_head_stride, v_row_stride, out_batch_stride,
    out_head_stride, out_row_stride, mask_batch_stride, mask_head_stride, mask_row_stride, mask_col_stride, batch,
    heads_q, heads_kv, seq_q, seq_kv, head_dim, head_dim_v, window_left, window_right, mask_kind, dtype,
    has_seqlens, scale, softcap, seqlens_offset, diag_per_batch,
);

extern "C" {
    fn flashattn_cxx_params_size() -> usize;
    fn flashattn_cxx_params_align() -> usize;
    fn flashattn_cxx_params_field_count() -> usize;
    fn flashattn_cxx_params_field(i: usize, offset: *mut usize, size: *mut usize) -> *const c_char;
    fn flashattn_cxx_kv_params_size() -> usize;
    fn flashattn_cxx_kv_params_align() -> usize;
}

/// (size, align) of `KvAppendParams` as C++ sees it (the struct kernels/kv_append.cuh takes).
pub fn cxx_kv_params_layout() -> (usize, usize) {
    unsafe { (flashattn_cxx_kv_params_size(), flashattn_cxx_kv_params_align()) }
}

/// (size, align, fields) of `AttnParams` as C++ sees it through the header cxx generates — the header the
/// CUDA kernels include (compiled in cpp_shim/params_layout.cc).
pub fn cxx_params_layout() -> (usize, usize, Vec<(String, usize, usize)>) {
    unsafe {
        let n = flashattn_cxx_params_field_count();
        let mut fields = Vec::with_capacity(n);
        for i in 0..n {
            let (mut off, mut size) = (0usize, 0usize);
            let name = flashattn_cxx_params_field(i, &mut off, &mut size);
            fields.push((std::ffi::CStr::from_ptr(name).to_string_lossy().into_owned(), off, size));
        }
        (flashattn_cxx_params_size(), flashattn_cxx_params_align(), fields)
    }
}

thread_local! {
    static LAST_ERROR: RefCell<CString> = RefCell::new(CString::default());
}

fn set_error(msg: &str) {
    LAST_ERROR.with(|e| *e.borrow_mut() = CString::new(msg.replace('\0', " ")).unwrap_or_default());
}

/// The message of this thread's last failed call (empty if none).
#[no_mangle]
pub extern "C" fn flashattn_ort_gpu_last_error() -> *const c_char {
    LAST_ERROR.with(|e| e.borrow().as_ptr())
}

/// `sizeof(AttnParams)` as Rust lays it out.
#[no_mangle]
pub extern "C" fn flashattn_ort_params_size() -> usize {
    std::mem::size_of::<AttnParams>()
}

/// Name of field `i` of `AttnParams` (NUL-terminated, static) with its offset and size; null past the end.
///
/// # Safety
/// `offset` and `size` must be writable.
#[no_mangle]
pub unsafe extern "C" fn flashattn_ort_params_field(i: usize, offset: *mut usize, size: *mut usize) -> *const c_char {
    let layout = rust_params_layout();
    match layout.get(i) {
        Some(&(_, off, sz)) => {
            unsafe {
                *offset = off;
                *size = sz;
            }
            FIELD_NAMES[i].as_ptr().cast()
        }
        None => std::ptr::null(),
    }
}

/// Queues FlashAttention forward for `*params` (device addresses inside) on `stream` (a cudaStream_t of the
/// current device's primary context; null = legacy default stream). 0 on success; otherwise nonzero and
/// `flashattn_ort_gpu_last_error()` says why.
///
/// # Safety
/// `params` must point to a valid `AttnParams` whose addresses and strides describe live device memory.
#[no_mangle]
pub unsafe extern "C" fn flashattn_ort_gpu_launch(params: *const AttnParams, stream: *mut c_void) -> i32 {
    if params.is_null() {
        set_error("params is null");
        return 1;
    }
    let p = unsafe { *params };
    match std::panic::catch_unwind(|| super::launch(&p, stream)) {
        Ok(Ok(())) => 0,
        Ok(Err(e)) => {
            set_error(&e.to_string());
            2
        }
        Err(_) => {
            set_error("ai.flashattn::FlashAttention (CUDA): internal error (panic) while launching");
            3
        }
    }
}

/// Like `flashattn_ort_gpu_launch`, with `workspace_bytes` of device memory at `workspace` (16-byte
/// aligned; 0/0 for none) that the split-KV decode kernel may use as scratch until the launch has run on
/// `stream`. Size it with `flashattn_ort_gpu_workspace_size`.
///
/// # Safety
/// As `flashattn_ort_gpu_launch`; `workspace` must be device memory of at least `workspace_bytes` bytes.
#[no_mangle]
pub unsafe extern "C" fn flashattn_ort_gpu_launch_workspace(params: *const AttnParams, stream: *mut c_void, workspace: u64, workspace_bytes: usize) -> i32 {
    if params.is_null() {
        set_error("params is null");
        return 1;
    }
    let p = unsafe { *params };
    let ws = super::decode::Workspace { ptr: workspace, bytes: if workspace == 0 { 0 } else { workspace_bytes } };
    match std::panic::catch_unwind(|| super::launch_with_workspace(&p, stream, ws)) {
        Ok(Ok(())) => 0,
        Ok(Err(e)) => {
            set_error(&e.to_string());
            2
        }
        Err(_) => {
            set_error("ai.flashattn::FlashAttention (CUDA): internal error (panic) while launching");
            3
        }
    }
}

/// Device workspace bytes `flashattn_ort_gpu_launch_workspace` wants for `*params` on `stream`'s device
/// (0: none), written to `*bytes`. 0 on success.
///
/// # Safety
/// `params` must point to a valid `AttnParams`; `bytes` must be writable.
#[no_mangle]
pub unsafe extern "C" fn flashattn_ort_gpu_workspace_size(params: *const AttnParams, stream: *mut c_void, bytes: *mut usize) -> i32 {
    if params.is_null() || bytes.is_null() {
        set_error("params or bytes is null");
        return 1;
    }
    let p = unsafe { *params };
    match std::panic::catch_unwind(|| super::launch::prepare(&p, stream).map(|prepared| prepared.map_or(0, |x| x.workspace_bytes()))) {
        Ok(Ok(n)) => {
            unsafe { *bytes = n };
            0
        }
        Ok(Err(e)) => {
            set_error(&e.to_string());
            2
        }
        Err(_) => {
            set_error("panic");
            3
        }
    }
}

/// Test aid: the split-KV decode kernel's split count. -1: automatic (default); 0: decode kernel off (the
/// prefill kernel serves every problem); n >= 1: exactly n splits (capped at the key tiles) wherever it
/// applies — a launch whose workspace is too small for them then fails instead of running fewer.
#[no_mangle]
pub extern "C" fn flashattn_ort_gpu_set_decode_splits(n: i32) {
    super::decode::set_splits_override(n);
}

/// Test aid: how the decode kernel's splits merge on devices with thread-block clusters. -1: automatic
/// (default); 0: always through the workspace and the combine kernel; 1: in a cluster whenever the split count
/// fits one (automatic counts capped at the largest cluster).
#[no_mangle]
pub extern "C" fn flashattn_ort_gpu_set_decode_cluster(mode: i32) {
    super::decode::set_cluster_override(mode);
}

/// Name of the kernel that would serve `*params` on the current device given the workspace it asks for
/// (for benchmark tables; decode: `flash_decode_… xN splits`), written
/// NUL-terminated into `buf` of `len` bytes. 0 on success.
///
/// # Safety
/// `params` must be valid; `buf` writable for `len` bytes.
#[no_mangle]
pub unsafe extern "C" fn flashattn_ort_gpu_kernel_name(params: *const AttnParams, buf: *mut c_char, len: usize) -> i32 {
    let p = unsafe { *params };
    let r = std::panic::catch_unwind(|| -> Result<String, super::GpuError> {
        // the plan a launch on the current context's default stream would make
        match super::prepare(&p, std::ptr::null_mut())? {
            Some(prepared) => prepared.describe(),
            None => Ok("nothing to compute (an empty dimension)".to_string()),
        }
    });
    match r {
        Ok(Ok(name)) if name.len() < len => {
            unsafe {
                std::ptr::copy_nonoverlapping(name.as_ptr(), buf.cast::<u8>(), name.len());
                *buf.add(name.len()) = 0;
            }
            0
        }
        Ok(Ok(_)) => {
            set_error("buffer too small");
            1
        }
        Ok(Err(e)) => {
            set_error(&e.to_string());
            2
        }
        Err(_) => {
            set_error("panic");
            3
        }
    }
}

/// Benchmarking aid: prefer kernel `name` (NUL-terminated) wherever it fits; null restores the default choice.
///
/// # Safety
/// `name` must be null or a valid C string.
#[no_mangle]
pub unsafe extern "C" fn flashattn_ort_gpu_set_kernel(name: *const c_char) {
    let name = if name.is_null() { None } else { Some(unsafe { std::ffi::CStr::from_ptr(name) }.to_string_lossy().into_owned()) };
    super::dispatch::set_override(name);
}

/// Benchmarking aid: how the Hopper kernel's blocks take tiles (-1 by problem, 0 one block per tile,
/// 1 persistent).
#[no_mangle]
pub extern "C" fn flashattn_ort_gpu_set_persistent(mode: i32) {
    super::launch::set_grid_mode(mode);
}

/// Benchmarking aid: the tensor maps' L2 promotion in bytes (-1 = default, 0 = none, 64, 128, 256).
#[no_mangle]
pub extern "C" fn flashattn_ort_gpu_set_l2_promotion(bytes: i32) {
    super::tensor_map::set_l2_promotion(bytes);
}

/// Test/benchmarking aid: into how many row groups the split-KV decode kernel cuts an MQA step's packed rows
/// (-1 = automatic, 0 or 1 = one group, n = n groups where possible).
#[no_mangle]
pub extern "C" fn flashattn_ort_gpu_set_decode_row_groups(n: i32) {
    super::decode::set_row_groups_override(n);
}

/// Test aid: split-KV of the Hopper prefill kernel (its `_packgqa` and `_split` instances). -1: automatic
/// (default); 0: never; n > 1: n splits wherever a plain Hopper problem can run them (at most one per key block).
#[no_mangle]
pub extern "C" fn flashattn_ort_gpu_set_prefill_splits(n: i32) {
    super::prefill_split::set_override(n);
}

/// Test and benchmarking aid: key-padding masks through the plain kernel gated on a scan of the mask (-1:
/// where it applies and the problem is large enough, the default; 0: never, the masked kernel alone; 1: wherever
/// it applies).
#[no_mangle]
pub extern "C" fn flashattn_ort_gpu_set_key_padding(mode: i32) {
    super::key_padding::set_mode(mode);
}

/// Benchmarking aid: whether the Hopper kernel runs in clusters of two blocks sharing K/V tiles where a
/// cluster form fits (-1 = by problem, 0 = never, 1 = always).
#[no_mangle]
pub extern "C" fn flashattn_ort_gpu_set_prefill_cluster(mode: i32) {
    super::dispatch::set_cluster_mode(mode);
}

/// Benchmarking aid: 0 turns off programmatic dependent launches (decode and its combine step then wait
/// for the kernel before them in the usual way), 1 turns them back on (default; Hopper and newer only).
#[no_mangle]
pub extern "C" fn flashattn_ort_gpu_set_dependent_launch(on: i32) {
    super::driver::set_dependent_launch(on != 0);
}

/// Copies `text` NUL-terminated into `buf` of `len` bytes (truncated to fit); nothing when `buf` is null.
unsafe fn write_text(text: &str, buf: *mut c_char, len: usize) {
    if buf.is_null() || len == 0 {
        return;
    }
    let n = text.len().min(len - 1);
    unsafe {
        std::ptr::copy_nonoverlapping(text.as_ptr(), buf.cast::<u8>(), n);
        *buf.add(n) = 0;
    }
}

/// The device of the calling thread's current context (PyTorch's, in the GPU scripts).
fn current_device() -> Result<i32, super::GpuError> {
    super::driver::available()?;
    let mut dev = 0;
    super::driver::check(unsafe { cudarc::driver::sys::cuCtxGetDevice(&mut dev) }, "cuCtxGetDevice")?;
    Ok(dev)
}

/// Test hook: runs the very self-check the library runs at the first use of a Blackwell device, on the
/// current device, with `candidate` ("sm100", "sm90", or a broken stand-in: "wrong", "nan", "trap") checked
/// against the portable kernel in a private context, and logs its warning if it fails. Returns 1 when the
/// candidate passed, 0 when it was rejected (`report` gets the reason), negative on a bad call. The
/// process's own kernels (primary context) are untouched either way.
///
/// # Safety
/// `candidate` must be a valid C string; `report` writable for `len` bytes (or null).
#[no_mangle]
pub unsafe extern "C" fn flashattn_ort_gpu_selfcheck(candidate: *const c_char, report: *mut c_char, len: usize) -> i32 {
    if candidate.is_null() {
        set_error("candidate is null");
        return -1;
    }
    let name = unsafe { std::ffi::CStr::from_ptr(candidate) }.to_string_lossy().into_owned();
    let Some(c) = super::selfcheck::Candidate::parse(&name) else {
        set_error(&format!("unknown self-check candidate {name:?} (sm100, sm90, wrong, nan, trap)"));
        return -1;
    };
    let r = std::panic::catch_unwind(|| -> Result<super::dispatch::Verdict, super::GpuError> {
        let dev = current_device()?;
        let v = super::selfcheck::run(dev, c);
        super::selfcheck::warn(dev, Some(c), &v);
        Ok(v)
    });
    match r {
        Ok(Ok(v)) => {
            let text = match &v {
                super::dispatch::Verdict::Failed(why) => why.clone(),
                _ => "passed".to_string(),
            };
            unsafe { write_text(&text, report, len) };
            i32::from(!v.failed())
        }
        Ok(Err(e)) => {
            set_error(&e.to_string());
            -2
        }
        Err(_) => {
            set_error("panic in the self-check");
            -3
        }
    }
}

/// The current device's first-use self-check verdict (loading its kernels, and so running the check, if
/// that has not happened yet): 0 not needed, 1 passed, 2 skipped (FLASHATTN_SELFCHECK=0), 3 failed (the
/// portable kernel serves; `report` gets the reason); negative on error.
///
/// # Safety
/// `report` writable for `len` bytes (or null).
#[no_mangle]
pub unsafe extern "C" fn flashattn_ort_gpu_selfcheck_verdict(report: *mut c_char, len: usize) -> i32 {
    use super::dispatch::Verdict;
    let r = std::panic::catch_unwind(|| -> Result<Verdict, super::GpuError> { Ok(super::module::device_kernels(current_device()?)?.verdict.clone()) });
    match r {
        Ok(Ok(v)) => {
            let (code, text) = match v {
                Verdict::NotNeeded => (0, "not needed".to_string()),
                Verdict::Passed => (1, "passed".to_string()),
                Verdict::Skipped => (2, "skipped (FLASHATTN_SELFCHECK=0)".to_string()),
                Verdict::Failed(why) => (3, why),
            };
            unsafe { write_text(&text, report, len) };
            code
        }
        Ok(Err(e)) => {
            set_error(&e.to_string());
            -2
        }
        Err(_) => {
            set_error("panic");
            -3
        }
    }
}
