//! `flashattn-ort info`: what this build contains and what the machine offers.

use std::process::ExitCode;

use anyhow::Result;

pub fn run() -> Result<ExitCode> {
    println!("flashattn-ort {}", env!("CARGO_PKG_VERSION"));
    println!("op: {}::{} (since version {})", crate::DOMAIN, crate::OP_NAME, crate::OP_VERSION);
    println!("ORT C API version requested: {} (ONNX Runtime >= 1.{})", crate::runtime::ORT_API_VERSION, crate::runtime::ORT_API_VERSION);
    match crate::runtime::init() {
        Ok(p) => println!("ONNX Runtime: {} ({})", p.display(), crate::runtime::version()?),
        Err(e) => println!("ONNX Runtime: not found ({e})"),
    }
    match crate::runtime::default_library_path() {
        Ok(p) => println!("custom-op library: {}", p.display()),
        Err(e) => println!("custom-op library: {e}"),
    }
    let kernels = crate::gpu::dispatch::all_kernels().count();
    println!(
        "CUDA kernels embedded: {} ({} entry points, sm_80 / sm_90a / sm_100a fatbin); CUDA driver: {}",
        if crate::gpu::kernels_built() { "yes" } else { "no (built without nvcc)" },
        kernels,
        match crate::gpu::driver::available() {
            Ok(()) => "available".to_string(),
            Err(e) => format!("not usable here ({e})"),
        }
    );
    #[cfg(target_arch = "x86_64")]
    println!(
        "CPU: {} threads, avx2={} fma={} f16c={}",
        rayon::current_num_threads(),
        is_x86_feature_detected!("avx2"),
        is_x86_feature_detected!("fma"),
        is_x86_feature_detected!("f16c")
    );
    Ok(ExitCode::SUCCESS)
}
