//! `RegisterCustomOps`: the entry point ORT calls when a session loads the library.

use std::ffi::CString;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::ptr;
use std::sync::OnceLock;

use half::{bf16, f16};
use ort::operator::OperatorDomain;
use ort::sys::{OrtApi, OrtApiBase, OrtErrorCode, OrtSessionOptions, OrtStatus};
use ort::AsPointer;

use super::cpu::Cpu;
use super::cuda::Cuda;
use super::operator::FlashAttentionOp;
use super::signature::MaskType;

/// The ORT C API version the library asks for: ORT 1.17 is the oldest runtime it loads into.
pub const API_VERSION: u32 = ort::sys::ORT_API_VERSION;

/// (major, minor) of the ONNX Runtime that loaded the library, read in `RegisterCustomOps`.
static RUNTIME_VERSION: OnceLock<(u32, u32)> = OnceLock::new();

/// Whether the hosting ORT is at least `major.minor` (false before registration).
pub fn runtime_at_least(major: u32, minor: u32) -> bool {
    RUNTIME_VERSION.get().is_some_and(|v| *v >= (major, minor))
}

fn parse_version(s: &str) -> Option<(u32, u32)> {
    let mut it = s.split('.').map(|p| p.parse::<u32>().ok());
    Some((it.next()??, it.next()??))
}

/// The op's domain with every kernel variant this build has.
pub fn domain() -> ort::Result<OperatorDomain> {
    let mut d = OperatorDomain::new(crate::DOMAIN)?;
    for mask in [MaskType::Bool, MaskType::Additive] {
        d = d
            .add(FlashAttentionOp::<f32, Cpu>::new(mask))?
            .add(FlashAttentionOp::<f16, Cpu>::new(mask))?
            .add(FlashAttentionOp::<bf16, Cpu>::new(mask))?;
        // CUDA EP kernels (#3): float16 and bfloat16 only; float32 nodes stay on the CPU kernel.
        d = d.add(FlashAttentionOp::<f16, Cuda>::new(mask))?.add(FlashAttentionOp::<bf16, Cuda>::new(mask))?;
    }
    Ok(d)
}

fn status(api: &OrtApi, msg: &str) -> *mut OrtStatus {
    let msg = CString::new(msg.replace('\0', " ")).unwrap_or_default();
    unsafe { (api.CreateStatus)(OrtErrorCode::ORT_FAIL, msg.as_ptr()).0 }
}

/// Called by ORT (`SessionOptions.register_custom_ops_library` / `RegisterCustomOpsLibrary_V2`).
///
/// # Safety
/// `options` and `api_base` must be the pointers ORT passes.
#[no_mangle]
pub unsafe extern "C" fn RegisterCustomOps(options: *mut OrtSessionOptions, api_base: *const OrtApiBase) -> *mut OrtStatus {
    if api_base.is_null() || options.is_null() {
        return ptr::null_mut();
    }
    let api = unsafe { ((*api_base).GetApi)(API_VERSION) };
    if api.is_null() {
        // Too old a runtime for us: say so with the oldest API table every ORT has.
        let v1 = unsafe { ((*api_base).GetApi)(1) };
        if v1.is_null() {
            return ptr::null_mut();
        }
        return status(unsafe { &*v1 }, &format!("libflashattn_ort needs ONNX Runtime 1.{API_VERSION} or newer"));
    }
    let api: &OrtApi = unsafe { &*api };
    let version = unsafe { std::ffi::CStr::from_ptr(((*api_base).GetVersionString)()) };
    if let Some(v) = parse_version(&version.to_string_lossy()) {
        let _ = RUNTIME_VERSION.set(v);
    }
    ort::set_api(unsafe { ptr::read(api) });
    let result = catch_unwind(AssertUnwindSafe(|| -> ort::Result<()> {
        let domain = domain()?;
        let st = unsafe { (api.AddCustomOpDomain)(options, domain.ptr().cast_mut()) };
        if !st.0.is_null() {
            let msg = unsafe { std::ffi::CStr::from_ptr((api.GetErrorMessage)(st.0)) }.to_string_lossy().into_owned();
            unsafe { (api.ReleaseStatus)(st.0) };
            return Err(ort::Error::new(msg));
        }
        // ORT keeps pointers into the domain for the sessions' lifetime and never frees it.
        std::mem::forget(domain);
        Ok(())
    }));
    match result {
        Ok(Ok(())) => ptr::null_mut(),
        Ok(Err(e)) => status(api, &format!("ai.flashattn: registering custom ops failed: {e}")),
        Err(_) => status(api, "ai.flashattn: registering custom ops panicked"),
    }
}
