//! CPU-side checks of the GPU build: the kernels were compiled and embedded (when nvcc was there), the
//! fatbin holds every kernel the dispatch and decode tables name for every target, and the library's GPU entry point
//! fails cleanly (no panic, no crash) on a machine without a usable GPU.

use flashattn_ort::gpu::{self, kv_append, module::entry_points};
use flashattn_ort::params::{AttnParams, KvAppendParams};

#[test]
fn kernels_are_embedded_when_nvcc_was_found() {
    let log = option_env!("FLASHATTN_NVCC_LOG");
    assert_eq!(gpu::kernels_built(), log.is_some());
    if std::env::var_os("FLASHATTN_REQUIRE_KERNELS").is_some_and(|v| v != "0") {
        assert!(gpu::kernels_built(), "FLASHATTN_REQUIRE_KERNELS set but the build has no CUDA kernels");
    }
    if gpu::kernels_built() {
        let fatbin = gpu::module::FATBIN.unwrap();
        assert!(fatbin.len() > 100_000, "fatbin suspiciously small: {} bytes", fatbin.len());
    }
}

#[test]
fn every_dispatched_kernel_was_compiled_for_every_target() {
    let Some(log) = option_env!("FLASHATTN_NVCC_LOG") else { return };
    let text = std::fs::read_to_string(log).expect("nvcc log");
    let names: Vec<String> = entry_points().into_iter().map(|(n, _)| n).collect();
    let mut compiled = 0;
    for line in text.lines().filter(|l| l.contains("Compiling entry function")) {
        compiled += 1;
        assert!(names.iter().any(|n| line.contains(&format!("'{n}'"))), "kernel not in the dispatch/decode tables: {line}");
    }
    for n in &names {
        for arch in ["sm_80", "sm_90a", "sm_100a"] {
            let needle = format!("'{n}' for '{arch}'");
            assert!(text.contains(&needle), "{n} was not compiled for {arch}");
        }
    }
    assert_eq!(compiled, names.len() * 3);
}

#[test]
fn launch_without_gpu_is_a_clean_error() {
    if gpu::driver::available().is_ok() {
        return; // a real GPU: covered by scripts/gpu/run.sh
    }
    let p = AttnParams { batch: 1, heads_q: 1, heads_kv: 1, seq_q: 1, seq_kv: 1, head_dim: 64, head_dim_v: 64, dtype: 2, q_ptr: 16, k_ptr: 16, v_ptr: 16, out_ptr: 16, ..Default::default() };
    let err = gpu::launch(&p, std::ptr::null_mut()).unwrap_err();
    assert!(err.to_string().contains("CUDA"), "{err}");
    let rc = unsafe { gpu::ffi::flashattn_ort_gpu_launch(&p, std::ptr::null_mut()) };
    assert_ne!(rc, 0);
    let kp = KvAppendParams { batch: 1, heads_q: 1, heads_kv: 1, seq_q: 1, seq_new: 1, present_seq: 1, head_dim: 64, head_dim_v: 64, dtype: 1, new_k_ptr: 16, new_v_ptr: 16, present_k_ptr: 16, present_v_ptr: 16, ..Default::default() };
    let err = kv_append::launch_append(&kp, std::ptr::null_mut()).unwrap_err();
    assert!(err.to_string().contains("CUDA"), "{err}");
}

#[test]
fn self_check_without_gpu_is_a_clean_failure() {
    use flashattn_ort::gpu::dispatch::{Family, Verdict};
    use flashattn_ort::gpu::selfcheck::{self, Candidate};
    if gpu::driver::available().is_ok() {
        return; // a real GPU: scripts/gpu/selfcheck.py (run.sh selfcheck)
    }
    for c in [Candidate::Family(Family::Sm100), Candidate::Broken("flash_selfcheck_trap")] {
        assert!(matches!(selfcheck::run(0, c), Verdict::Failed(why) if why.contains("CUDA")), "{c:?}");
    }
    let mut buf = [0 as std::ffi::c_char; 256];
    let rc = unsafe { gpu::ffi::flashattn_ort_gpu_selfcheck(c"trap".as_ptr(), buf.as_mut_ptr(), buf.len()) };
    assert!(rc < 0, "no device: an error, not a verdict ({rc})");
    let rc = unsafe { gpu::ffi::flashattn_ort_gpu_selfcheck(c"bogus".as_ptr(), buf.as_mut_ptr(), buf.len()) };
    assert_eq!(rc, -1);
    let rc = unsafe { gpu::ffi::flashattn_ort_gpu_selfcheck_verdict(buf.as_mut_ptr(), buf.len()) };
    assert!(rc < 0);
}

/// The Blackwell kernel cannot be run here, so what ptxas says about it is checked on every build: compiled
/// for sm_100a with no stack frame and no spills (no local-memory traffic at all).
#[test]
fn blackwell_kernels_compile_without_local_memory() {
    let Some(log) = option_env!("FLASHATTN_NVCC_LOG") else { return };
    let text = std::fs::read_to_string(log).expect("nvcc log");
    let lines: Vec<&str> = text.lines().collect();
    let mut seen = 0;
    for (i, line) in lines.iter().enumerate() {
        if line.contains("Compiling entry function 'flash_fwd_sm100_") && line.contains("for 'sm_100a'") {
            seen += 1;
            let props = lines[i + 1..].iter().find(|l| l.contains("stack frame")).expect("ptxas properties line");
            assert!(props.contains(" 0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads"), "{line}: {props}");
        }
    }
    assert_eq!(seen, 4, "sm100 entry points compiled for sm_100a");
}
