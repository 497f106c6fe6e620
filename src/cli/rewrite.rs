//! `flashattn-ort rewrite INPUT.onnx -o OUTPUT.onnx [--verify] [--dry-run] [--json] [--fuse-rmsnorm]`

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{bail, Result};

use crate::rewrite::{self, io, Options};

#[derive(clap::Args, Debug, Clone)]
pub struct RewriteArgs {
    /// The exported model to rewrite (never modified).
    pub input: PathBuf,
    /// Where to write the rewritten model (must differ from the input).
    #[arg(short, long)]
    pub output: Option<PathBuf>,
    /// Also run the original and the rewritten model in ONNX Runtime (CPU) on generated inputs and
    /// compare; exit non-zero when the error is beyond tolerance.
    #[arg(long)]
    pub verify: bool,
    /// Report what would be fused; write nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Print the report as JSON on stdout.
    #[arg(long)]
    pub json: bool,
    /// Also replace written-out RMSNorms (x·1/√(mean(x²)+ε)·w, float32 inside) by one normalization node:
    /// ONNX RMSNormalization at opset ≥ 23, else ONNX Runtime's SimplifiedLayerNormalization.
    #[arg(long)]
    pub fuse_rmsnorm: bool,
    #[command(flatten)]
    pub tol: super::verify::Tolerance,
}

/// Models at least this large get a progress spinner on a terminal (loading/writing dominate there).
const PROGRESS_BYTES: u64 = 64 << 20;

fn progress(input: &std::path::Path) -> Option<indicatif::ProgressBar> {
    use std::io::IsTerminal;
    let big = std::fs::metadata(input).map(|m| m.len() >= PROGRESS_BYTES).unwrap_or(false);
    if !big || !std::io::stderr().is_terminal() {
        return None;
    }
    let pb = indicatif::ProgressBar::new(4);
    pb.set_style(indicatif::ProgressStyle::with_template("{spinner} [{bar:20}] {pos}/{len} {msg} ({elapsed})").unwrap());
    pb.enable_steady_tick(std::time::Duration::from_millis(120));
    Some(pb)
}

pub fn run(args: RewriteArgs) -> Result<ExitCode> {
    let t0 = Instant::now();
    let pb = progress(&args.input);
    let step = |msg: &str| {
        if let Some(p) = &pb {
            p.set_message(msg.to_string());
            p.inc(1);
        }
    };
    step("loading");
    let output = match (&args.output, args.dry_run) {
        (Some(o), _) => Some(o.clone()),
        (None, true) => None,
        (None, false) => bail!("missing -o OUTPUT.onnx (or use --dry-run)"),
    };
    if args.verify && args.dry_run {
        bail!("--verify needs a written output; drop --dry-run");
    }
    let mut model = io::load(&args.input)?;
    if let Some(o) = &output {
        io::check_paths(&args.input, o, &model)?;
    }
    let t_load = t0.elapsed().as_secs_f64();
    step("matching attention");
    let in_dir = args.input.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(std::path::Path::new(".")).to_path_buf();
    let report = rewrite::rewrite_model(&mut model, Some(&in_dir), &Options { dry_run: args.dry_run, fuse_rmsnorm: args.fuse_rmsnorm })?;
    let t1 = Instant::now();
    step("writing");
    if let (Some(o), false) = (&output, args.dry_run) {
        io::save(&model, &in_dir, o)?;
    }
    let t_save = t1.elapsed().as_secs_f64();
    step("verifying");

    let verification = match (&output, args.verify) {
        (Some(o), true) => {
            // An export that only runs at batch 1 is verified at batch 1.
            let tol = super::verify::Tolerance { batch: if report.batch1_only { 1 } else { args.tol.batch }, ..args.tol.clone() };
            Some(super::verify::compare_models(&args.input, o, &tol)?)
        }
        _ => None,
    };
    if let Some(p) = &pb {
        p.finish_and_clear();
    }
    let ok = verification.as_ref().is_none_or(|v| v.passed);
    if args.json {
        let j = serde_json::json!({
            "input": args.input,
            "output": output,
            "dry_run": args.dry_run,
            "report": report,
            "timing_s": {"load": t_load, "rewrite": report.seconds, "save": t_save, "total": t0.elapsed().as_secs_f64()},
            "verify": verification,
        });
        println!("{}", serde_json::to_string_pretty(&j)?);
    } else {
        println!("{}: {} attention layer(s) fused{}", args.input.display(), report.fused.len(), if args.dry_run { " (dry run: nothing written)" } else { "" });
        print!("{}", report.human());
        if let (Some(o), false) = (&output, args.dry_run) {
            println!("  wrote {} (load {:.3} s, rewrite {:.3} s, save {:.3} s)", o.display(), t_load, report.seconds, t_save);
        }
        if let Some(v) = &verification {
            print!("{}", v.human());
        }
    }
    Ok(if ok { ExitCode::SUCCESS } else { ExitCode::from(1) })
}
