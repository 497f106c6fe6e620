//! Build script: (1) generates the C++ header of `AttnParams` from src/params.rs with cxx-build and compiles
//! the small C++ shim in cpp_shim/ against it; (2) compiles the CUDA kernels in kernels/ (all_kernels.cu) with nvcc into one
//! fatbin (sm_80, sm_90a, sm_100a cubins + compute_80 PTX) that src/gpu embeds with include_bytes!.
//!
//! nvcc: $NVCC, else the pinned one in .venv (scripts/setup.sh), else `nvcc` on PATH. Without nvcc the crate
//! builds CPU-only (no `cfg(flashattn_kernels)`) and says so with a cargo warning; so does an nvcc from PATH
//! that fails (too old for sm_100a, say). The pinned nvcc failing, or FLASHATTN_REQUIRE_KERNELS=1, fails
//! the build instead.
//! FLASHATTN_NO_KERNELS=1 skips the kernel build on purpose.

use std::env;
use std::path::{Path, PathBuf};
use std::process::Command;

const KERNEL_DIR: &str = "kernels";
const KERNEL_ENTRY: &str = "kernels/all_kernels.cu";
const FATBIN: &str = "flashattn_kernels.fatbin";

fn main() {
    println!("cargo::rustc-check-cfg=cfg(flashattn_kernels)");
    let manifest = PathBuf::from(env::var("CARGO_MANIFEST_DIR").unwrap());
    let out = PathBuf::from(env::var("OUT_DIR").unwrap());

    // (1) AttnParams header + C++ shim.
    cxx_build::bridge("src/params.rs")
        .file("cpp_shim/params_layout.cc")
        .std("c++17")
        .compile("flashattn_cxx_shim");
    let cxx_include = out.join("cxxbridge").join("include");
    println!("cargo:rerun-if-changed=src/params.rs");
    println!("cargo:rerun-if-changed=cpp_shim");

    // (2) CUDA kernels.
    println!("cargo:rerun-if-changed={KERNEL_DIR}");
    println!("cargo:rerun-if-env-changed=NVCC");
    println!("cargo:rerun-if-env-changed=FLASHATTN_NO_KERNELS");
    println!("cargo:rerun-if-env-changed=FLASHATTN_REQUIRE_KERNELS");
    println!("cargo:rerun-if-env-changed=FLASHATTN_NVCC_FLAGS");
    if env::var_os("FLASHATTN_NO_KERNELS").is_some_and(|v| v != "0") {
        println!("cargo:warning=FLASHATTN_NO_KERNELS set: building without CUDA kernels (CPU only)");
        return;
    }
    let Some(nvcc) = find_nvcc(&manifest) else {
        println!(
            "cargo:warning=nvcc not found (set NVCC or run scripts/setup.sh): building without CUDA kernels, \
             the library will serve the CPU op only"
        );
        return;
    };
    let fatbin = out.join(FATBIN);
    let log = out.join("nvcc.log");
    let threads = env::var("NUM_JOBS").ok().and_then(|j| j.parse::<usize>().ok()).unwrap_or(2).clamp(1, 8);
    let mut cmd = Command::new(&nvcc);
    cmd.arg("--fatbin")
        .arg("-std=c++17")
        .arg("-O3")
        .arg("-Xptxas=-v")
        .arg(format!("--threads={threads}"))
        .arg("-gencode=arch=compute_80,code=sm_80")
        .arg("-gencode=arch=compute_90a,code=sm_90a")
        .arg("-gencode=arch=compute_100a,code=sm_100a")
        .arg("-gencode=arch=compute_80,code=compute_80")
        // Extra flags for experiment builds (a -D switch an experiment adds), whitespace-separated.
        .args(env::var("FLASHATTN_NVCC_FLAGS").unwrap_or_default().split_whitespace())
        .arg("-I")
        .arg(manifest.join(KERNEL_DIR))
        .arg("-I")
        .arg(&cxx_include)
        .arg("-o")
        .arg(&fatbin)
        .arg(manifest.join(KERNEL_ENTRY));
    let started = std::time::Instant::now();
    let output = match cmd.output() {
        Ok(o) => o,
        Err(e) => {
            println!("cargo:warning=could not run {}: {e}; building without CUDA kernels", nvcc.display());
            return;
        }
    };
    let mut text = String::from_utf8_lossy(&output.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&output.stderr));
    std::fs::write(&log, &text).ok();
    if !output.status.success() {
        // With the pinned nvcc (or FLASHATTN_REQUIRE_KERNELS=1) a kernel that does not compile is a bug in this
        // repository: fail loudly. Another nvcc found on PATH may simply be too old for sm_100a: CPU-only build.
        let pinned = nvcc.starts_with(manifest.join(".venv"));
        let required = env::var_os("FLASHATTN_REQUIRE_KERNELS").is_some_and(|v| v != "0");
        if pinned || required {
            panic!("nvcc failed ({}):\n{text}", output.status);
        }
        let first = text.lines().find(|l| l.contains("error")).unwrap_or("").trim().to_string();
        println!("cargo:warning={} could not build the CUDA kernels ({first}); building CPU-only (log: {})", nvcc.display(), log.display());
        return;
    }
    for line in text.lines() {
        if line.contains("bytes spill stores") && !line.contains(" 0 bytes spill stores") {
            println!("cargo:warning=register spills in a kernel: {}", line.trim());
        }
    }
    println!(
        "cargo:warning=CUDA kernels built with {} in {:.0} s (ptxas report: {})",
        nvcc.display(),
        started.elapsed().as_secs_f64(),
        log.display()
    );
    println!("cargo:rustc-cfg=flashattn_kernels");
    println!("cargo:rustc-env=FLASHATTN_NVCC_LOG={}", log.display());
}

fn find_nvcc(manifest: &Path) -> Option<PathBuf> {
    if let Some(p) = env::var_os("NVCC") {
        let p = PathBuf::from(p);
        return p.is_file().then_some(p);
    }
    if let Ok(entries) = std::fs::read_dir(manifest.join(".venv").join("lib")) {
        for e in entries.flatten() {
            let p = e.path().join("site-packages/nvidia/cu13/bin/nvcc");
            if p.is_file() {
                return Some(p);
            }
        }
    }
    let path = env::var_os("PATH")?;
    env::split_paths(&path).map(|d| d.join("nvcc")).find(|p| p.is_file())
}
