//! The op on ONNX Runtime's CUDA execution provider, driven from Rust (`ort`), the way a Rust service
//! would: a session with the CUDA EP and our library, inputs in host memory, the node placed on the CUDA
//! EP (read from ORT's profile), outputs against the float64 reference. Needs a CUDA GPU and
//! onnxruntime-gpu, so it is ignored in CPU CI; on the GPU machine `scripts/gpu/run.sh rust-ort` runs
//! the carried binary with `--ignored` (ORT_DYLIB_PATH = onnxruntime-gpu's libonnxruntime.so).

use flashattn_ort::check::{self, Case, CaseData, CaseMask};
use flashattn_ort::model;
use flashattn_ort::params::DType;
use flashattn_ort::runtime;
use flashattn_ort::schema::Layout;
use ort::ep::CUDA;

/// GPU tolerance on max|out − ref| relative to max(1, max|ref|): the kernel rounds P to the input type
/// for the PV product on tensor cores (FA2/FA3 do the same), so the error is a few ulps of the type.
fn gpu_tolerance(dtype: DType) -> f64 {
    match dtype {
        DType::F16 => 5e-3,
        DType::BF16 => 4e-2,
        DType::F32 => 1e-4,
    }
}

fn cases() -> Vec<Case> {
    let mut out = vec![];
    for dtype in [DType::F16, DType::BF16] {
        let plain = Case::new(dtype, 2, 8, 2, 200, 333, 128);
        let mut padded = Case::new(dtype, 2, 4, 4, 97, 97, 64);
        padded.mask = CaseMask::Bool([2, 1, 1, 97]);
        padded.seqlens = true;
        padded.causal = true;
        padded.layout = Layout::Bnsh;
        let mut biased = Case::new(dtype, 1, 4, 1, 65, 130, 80);
        biased.mask = CaseMask::Additive([1, 4, 65, 130]);
        biased.softcap = 30.0;
        biased.window = (40, 0);
        // Decode shapes: the split-KV decode kernel, its workspace from ORT's device allocator.
        let mut decode = Case::new(dtype, 2, 8, 2, 1, 3000, 128);
        decode.seqlens = true;
        decode.causal = true;
        let mut multi_token = Case::new(dtype, 1, 32, 1, 2, 5000, 64);
        multi_token.causal = true;
        multi_token.layout = Layout::Bnsh;
        out.extend([plain, padded, biased, decode, multi_token]);
    }
    out
}

/// Which execution provider ran the FlashAttention node, from ORT's profile.
fn provider_of_flash_node(profile: &str) -> Option<String> {
    let events: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(profile).ok()?).ok()?;
    events.as_array()?.iter().find_map(|e| {
        let args = e.get("args")?;
        (args.get("op_name")?.as_str()? == flashattn_ort::OP_NAME).then(|| args.get("provider")?.as_str().map(str::to_string))?
    })
}

#[test]
#[ignore = "needs a CUDA GPU and onnxruntime-gpu (ORT_DYLIB_PATH)"]
fn cuda_ep_sessions_from_rust() {
    runtime::init().expect("ORT_DYLIB_PATH must point at onnxruntime-gpu's libonnxruntime.so");
    let lib = runtime::default_library_path().unwrap();
    let seed = check::test_seed();
    for (i, case) in cases().into_iter().enumerate() {
        let profile = std::env::temp_dir().join(format!("flashattn-gpu-ort-{i}"));
        let mut session = runtime::session_builder(&lib)
            .unwrap()
            .with_execution_providers([CUDA::default().build().error_on_failure()])
            .unwrap()
            .with_profiling(&profile)
            .unwrap()
            .commit_from_memory(&model::to_bytes(&case.model()))
            .unwrap_or_else(|e| panic!("{}: {e}", case.describe()));
        let data = CaseData::generate(&case, seed.wrapping_add(i as u64));
        let (out, lse) = check::run_session(&mut session, &case, check::ort_inputs(&case, &data).unwrap()).unwrap();
        let reference = check::reference(&case, &data).unwrap();
        let c = check::compare(&case, &case.params().unwrap(), &out, lse.as_deref(), &reference);
        assert!(!c.nan, "FLASHATTN_SEED={seed}: NaN in {}", case.describe());
        let scale = reference.0.iter().fold(1.0f64, |m, x| m.max(x.abs()));
        let worst = c.max_abs / scale;
        let tol = gpu_tolerance(case.dtype);
        assert!(worst <= tol, "FLASHATTN_SEED={seed}: {}: error {worst:.2e} > {tol:.0e}", case.describe());
        // compare() reports an infinite lse error when the −inf (no visible key) rows differ.
        assert!(c.lse_max_abs < 1e-2, "FLASHATTN_SEED={seed}: {}: lse error {}", case.describe(), c.lse_max_abs);
        let file = session.end_profiling().unwrap();
        let provider = provider_of_flash_node(&file);
        assert_eq!(provider.as_deref(), Some("CUDAExecutionProvider"), "{}: node placement", case.describe());
        println!("PASS rust-ort {} error {worst:.2e} (tol {tol:.0e}) on {}", case.describe(), provider.unwrap());
    }
}
