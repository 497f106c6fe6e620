//! `flashattn-ort demo`: the op in an ORT session on bundled example problems, checked against the
//! float64 reference, with timings.

use std::process::ExitCode;
use std::time::Instant;

use std::path::PathBuf;

use anyhow::Result;
use clap::{Args, Parser};

use crate::check::{self, Case, CaseData, CaseMask};
use crate::params::DType;
use crate::schema::Layout;

#[derive(Args)]
pub struct DemoArgs {
    /// The custom-op library (default: libflashattn_ort.so next to this executable).
    #[arg(long)]
    pub library: Option<std::path::PathBuf>,
    /// The exported model the demo rewrites, verifies and runs.
    #[arg(long, default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/models/exported/llama_sdpa_dynamo.onnx"))]
    pub model: PathBuf,
}

/// `rewrite MODEL -o OUT --verify`, exactly as a user types it.
#[derive(clap::Parser)]
struct RewriteCommand {
    #[command(flatten)]
    args: super::rewrite::RewriteArgs,
}

fn rewrite_and_verify(model: &std::path::Path, lib: &std::path::Path) -> Result<bool> {
    let out = std::env::temp_dir().join(format!("flashattn-demo-{}.onnx", std::process::id()));
    // Sequence 512 for the generated inputs: long enough that attention, not per-node overhead, decides the time.
    println!("$ flashattn-ort rewrite {} -o {} --verify --seq 512", model.display(), out.display());
    let cmd = RewriteCommand::try_parse_from([
        "rewrite".as_ref(),
        model.as_os_str(),
        "-o".as_ref(),
        out.as_os_str(),
        "--verify".as_ref(),
        "--seq".as_ref(),
        "512".as_ref(),
        "--library".as_ref(),
        lib.as_os_str(),
    ])?;
    let code = super::rewrite::run(cmd.args)?;
    let _ = std::fs::remove_file(&out);
    Ok(code == ExitCode::SUCCESS)
}

/// The bundled examples: a GQA causal decoder layer, a padded encoder, a softcapped 3D layer.
pub fn examples() -> Vec<(&'static str, Case)> {
    let mut decoder = Case::new(DType::F32, 1, 8, 2, 512, 512, 64);
    decoder.causal = true;
    let mut encoder = Case::new(DType::F16, 2, 4, 4, 128, 128, 64);
    encoder.layout = Layout::Bnsh;
    encoder.mask = CaseMask::Bool([2, 1, 1, 128]);
    let mut capped = Case::new(DType::BF16, 1, 4, 4, 256, 256, 128);
    capped.three_d = true;
    capped.softcap = 30.0;
    capped.window = (64, 0);
    vec![("GQA causal decoder (fp32)", decoder), ("padded encoder (fp16, bool mask)", encoder), ("3D sliding window + softcap (bf16)", capped)]
}

pub fn run(args: DemoArgs) -> Result<ExitCode> {
    let lib = match args.library {
        Some(l) => l,
        None => crate::runtime::default_library_path()?,
    };
    let ort_path = crate::runtime::init()?;
    println!("ONNX Runtime {} from {}", crate::runtime::version()?, ort_path.display());
    println!("custom-op library {}\n", lib.display());
    let mut ok = rewrite_and_verify(&args.model, &lib)?;
    println!("\nThe op on example problems, against a float64 reference:");
    for (i, (name, case)) in examples().into_iter().enumerate() {
        let data = CaseData::generate(&case, 1000 + i as u64);
        let mut session = check::session(&case, &lib, None)?;
        let inputs = check::ort_inputs(&case, &data)?;
        let _ = check::run_session(&mut session, &case, check::ort_inputs(&case, &data)?)?; // warm-up
        let t = Instant::now();
        let (out, lse) = check::run_session(&mut session, &case, inputs)?;
        let ms = t.elapsed().as_secs_f64() * 1e3;
        let c = check::compare(&case, &case.params()?, &out, lse.as_deref(), &check::reference(&case, &data)?);
        ok &= c.passed();
        println!("{name}\n  {}\n  max |err| vs float64 reference {:.2e} (tolerance ratio {:.2}), lse err {:.1e}, {:.2} ms  {}", case.describe(), c.max_abs, c.worst_ratio, c.lse_max_abs, ms, if c.passed() { "OK" } else { "FAIL" });
    }
    Ok(if ok { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}
