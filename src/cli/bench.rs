//! `flashattn-ort bench`: CPU, fp32, ai.flashattn::FlashAttention vs ORT's own
//! com.microsoft::MultiHeadAttention on the same inputs in the same process, as a table of ratios.

use std::process::ExitCode;
use std::time::Instant;

use anyhow::{anyhow, Result};
use clap::Args;
use onnx_protobuf::tensor_proto::DataType;
use ort::session::{Session, SessionInputValue};
use ort::value::DynValue;

use crate::check::{self, Case, CaseData};
use crate::model::{self, Attr, Dim};
use crate::params::DType;

#[derive(Args)]
pub struct BenchArgs {
    /// Sequence lengths (query = key).
    #[arg(long, value_delimiter = ',', default_value = "128,256,512,1024,2048,4096")]
    pub seqs: Vec<i64>,
    #[arg(long, default_value_t = 1)]
    pub batch: i64,
    #[arg(long, default_value_t = 8)]
    pub heads: i64,
    #[arg(long, default_value_t = 64)]
    pub head_dim: i64,
    /// Intra-op threads for both sessions (default: ORT's choice, one per core).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Minimum timed runs per row (more for short rows, up to ~1 s of timing).
    #[arg(long, default_value_t = 5)]
    pub reps: usize,
    /// The custom-op library (default: libflashattn_ort.so next to this executable).
    #[arg(long)]
    pub library: Option<std::path::PathBuf>,
}

fn mha_session(case: &Case, threads: Option<usize>) -> Result<Session> {
    let dims = |d: Vec<i64>| d.into_iter().map(Dim::Fixed).collect::<Vec<_>>();
    let n = model::node("MultiHeadAttention", "com.microsoft", &["query", "key", "value"], &["output"], &[("num_heads", Attr::Int(case.heads_q))]);
    let m = model::model(
        vec![n],
        vec![
            model::value_info("query", DataType::FLOAT, &dims(case.query_dims())),
            model::value_info("key", DataType::FLOAT, &dims(case.key_dims())),
            model::value_info("value", DataType::FLOAT, &dims(case.value_dims())),
        ],
        vec![model::value_info("output", DataType::FLOAT, &[])],
        &[("com.microsoft", 1)],
    );
    let mut b = Session::builder(crate::runtime::environment()?).map_err(|e| anyhow!("{e}"))?;
    if let Some(t) = threads {
        b = b.with_intra_threads(t).map_err(|e| anyhow!("{e}"))?;
    }
    b.commit_from_memory(&model::to_bytes(&m)).map_err(|e| anyhow!("{e}"))
}

/// Median seconds of `run` after one warm-up.
fn time(reps: usize, mut run: impl FnMut() -> Result<()>) -> Result<f64> {
    run()?;
    let mut times = vec![];
    let start = Instant::now();
    while times.len() < reps || (start.elapsed().as_secs_f64() < 1.0 && times.len() < 200) {
        let t = Instant::now();
        run()?;
        times.push(t.elapsed().as_secs_f64());
    }
    times.sort_by(f64::total_cmp);
    Ok(times[times.len() / 2])
}


pub fn run(args: BenchArgs) -> Result<ExitCode> {
    let lib = match args.library {
        Some(l) => l,
        None => crate::runtime::default_library_path()?,
    };
    crate::runtime::init()?;
    println!(
        "CPU fp32 attention, batch {} heads {} head_dim {}, non-causal, 3D inputs; threads {}",
        args.batch,
        args.heads,
        args.head_dim,
        args.threads.map_or("ORT default".into(), |t| t.to_string())
    );
    println!("| seq | FlashAttention ms | MultiHeadAttention ms | speedup | GFLOP/s (ours) | max |diff| |");
    println!("|---:|---:|---:|---:|---:|---:|");
    for &s in &args.seqs {
        let mut case = Case::new(DType::F32, args.batch, args.heads, args.heads, s, s, args.head_dim);
        case.three_d = true;
        case.with_lse = false;
        let data = CaseData::generate(&case, s as u64);
        let mut ours = check::session(&case, &lib, args.threads)?;
        let mut mha = mha_session(&case, args.threads)?;
        // Both sessions read the same input tensors, created once.
        let inputs: Vec<(String, DynValue)> = check::ort_inputs(&case, &data)?;
        let feed = || inputs.iter().map(|(n, v)| (n.as_str(), SessionInputValue::from(v))).collect::<Vec<_>>();
        let t_ours = time(args.reps, || {
            ours.run(feed()).map_err(|e| anyhow!("{e}"))?;
            Ok(())
        })?;
        let t_mha = time(args.reps, || {
            mha.run(feed()).map_err(|e| anyhow!("{e}"))?;
            Ok(())
        })?;
        let out_ours = ours.run(feed()).map_err(|e| anyhow!("{e}"))?["output"].try_extract_tensor::<f32>()?.1.to_vec();
        let out_mha = mha.run(feed()).map_err(|e| anyhow!("{e}"))?["output"].try_extract_tensor::<f32>()?.1.to_vec();
        let diff = out_ours.iter().zip(&out_mha).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
        let flops = 4.0 * (args.batch * args.heads * s * s * args.head_dim) as f64;
        println!("| {s} | {:.3} | {:.3} | {:.2}x | {:.1} | {:.1e} |", t_ours * 1e3, t_mha * 1e3, t_mha / t_ours, flops / t_ours / 1e9, diff);
    }
    Ok(ExitCode::SUCCESS)
}
