//! `flashattn-ort verify ORIGINAL.onnx REWRITTEN.onnx`: both models in ONNX Runtime (CPU, with our
//! custom-op library) on the same generated inputs; reports max abs/rel error per output; exit 1 beyond
//! tolerance.
//!
//! Inputs respect the model: element types and declared shapes (symbolic dims get `--batch` on axis 0
//! and `--seq` elsewhere); integer inputs used as Gather indices stay below the gathered table's size;
//! `*mask*` inputs are 0/1 right-padded masks (first row full); position-like inputs are ranges.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{anyhow, bail, Context, Result};
use half::f16;
use onnx_protobuf::ModelProto;
use ort::value::{DynValue, Tensor};
use serde::Serialize;

use crate::rewrite::graph::{attr_i, Dim, GraphIndex};
use crate::rewrite::tensor::dt;

#[derive(clap::Args, Debug, Clone)]
pub struct Tolerance {
    /// Absolute tolerance (passes when max|a−b| ≤ atol + rtol·max|reference|).
    #[arg(long, default_value_t = 1e-3)]
    pub atol: f64,
    /// Relative tolerance (at least 4 machine epsilons for fp16 and bf16 outputs: 3.9e-3 and 3.1e-2).
    #[arg(long, default_value_t = 1e-3)]
    pub rtol: f64,
    /// Size given to a symbolic batch dimension (axis 0).
    #[arg(long, default_value_t = 2)]
    pub batch: i64,
    /// Size given to other symbolic dimensions.
    #[arg(long, default_value_t = 16)]
    pub seq: i64,
    /// Random seed for the generated inputs.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// The custom-op library (default: libflashattn_ort.so next to this executable).
    #[arg(long)]
    pub library: Option<PathBuf>,
}

#[derive(clap::Args, Debug, Clone)]
pub struct VerifyArgs {
    pub original: PathBuf,
    pub rewritten: PathBuf,
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub tol: Tolerance,
}

#[derive(Debug, Clone, Serialize)]
pub struct OutputError {
    pub name: String,
    pub max_abs: f64,
    pub max_rel: f64,
    pub max_ref: f64,
    pub passed: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct Verification {
    pub outputs: Vec<OutputError>,
    pub inputs: Vec<String>,
    pub original_ms: f64,
    pub rewritten_ms: f64,
    pub fused_nodes: usize,
    pub passed: bool,
}

impl Verification {
    pub fn human(&self) -> String {
        let mut s = format!("  verify on generated inputs: {}\n", self.inputs.join(", "));
        for o in &self.outputs {
            s += &format!(
                "    output {:<20} max abs err {:.3e}  max rel err {:.3e}  {}\n",
                o.name,
                o.max_abs,
                o.max_rel,
                if o.passed { "ok" } else { "BEYOND TOLERANCE" }
            );
        }
        s += &format!(
            "    time: original {:.2} ms, rewritten {:.2} ms ({} FlashAttention nodes) → {}\n",
            self.original_ms,
            self.rewritten_ms,
            self.fused_nodes,
            if self.passed { "PASSED" } else { "FAILED" }
        );
        s
    }
}

pub fn run(args: VerifyArgs) -> Result<ExitCode> {
    let v = compare_models(&args.original, &args.rewritten, &args.tol)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        print!("{}", v.human());
    }
    Ok(if v.passed { ExitCode::SUCCESS } else { ExitCode::from(1) })
}

/// A host-side tensor for feeding/reading ORT.
#[derive(Debug, Clone)]
pub struct HostTensor {
    pub dtype: i32,
    pub shape: Vec<i64>,
    pub data: Vec<f64>,
}

impl HostTensor {
    pub fn to_ort(&self) -> Result<DynValue> {
        let s = self.shape.clone();
        let d = &self.data;
        Ok(match self.dtype {
            dt::FLOAT => Tensor::from_array((s, d.iter().map(|&x| x as f32).collect::<Vec<_>>()))?.into_dyn(),
            dt::DOUBLE => Tensor::from_array((s, d.clone()))?.into_dyn(),
            dt::FLOAT16 => Tensor::from_array((s, d.iter().map(|&x| f16::from_f64(x)).collect::<Vec<_>>()))?.into_dyn(),
            dt::INT64 => Tensor::from_array((s, d.iter().map(|&x| x as i64).collect::<Vec<_>>()))?.into_dyn(),
            dt::INT32 => Tensor::from_array((s, d.iter().map(|&x| x as i32).collect::<Vec<_>>()))?.into_dyn(),
            dt::BOOL => Tensor::from_array((s, d.iter().map(|&x| x != 0.0).collect::<Vec<_>>()))?.into_dyn(),
            t => bail!("input element type {} is not supported by verify", dt::name(t)),
        })
    }
}

fn extract(v: &DynValue) -> Result<Vec<f64>> {
    if let Ok((_, d)) = v.try_extract_tensor::<f32>() {
        return Ok(d.iter().map(|&x| x as f64).collect());
    }
    if let Ok((_, d)) = v.try_extract_tensor::<f64>() {
        return Ok(d.to_vec());
    }
    if let Ok((_, d)) = v.try_extract_tensor::<f16>() {
        return Ok(d.iter().map(|x| x.to_f64()).collect());
    }
    if let Ok((_, d)) = v.try_extract_tensor::<half::bf16>() {
        return Ok(d.iter().map(|x| x.to_f64()).collect());
    }
    if let Ok((_, d)) = v.try_extract_tensor::<i64>() {
        return Ok(d.iter().map(|&x| x as f64).collect());
    }
    if let Ok((_, d)) = v.try_extract_tensor::<i32>() {
        return Ok(d.iter().map(|&x| x as f64).collect());
    }
    if let Ok((_, d)) = v.try_extract_tensor::<bool>() {
        return Ok(d.iter().map(|&x| x as i32 as f64).collect());
    }
    bail!("output of an unsupported element type")
}

struct Lcg(u64);
impl Lcg {
    fn next(&mut self) -> f64 {
        self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (self.0 >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Inputs for `m` respecting its declared types, shapes and index ranges.
pub fn generate_inputs(m: &ModelProto, tol: &Tolerance) -> Result<Vec<(String, HostTensor)>> {
    let g = m.graph.as_ref().ok_or_else(|| anyhow!("model has no graph"))?;
    let gi = GraphIndex::new(g, crate::rewrite::onnx_opset(m).unwrap_or(0));
    let mut rng = Lcg(tol.seed.wrapping_add(0x5DEECE66D));
    // A KV-cache export (a float input of rank 4 with a symbolic axis 2, the past): its padding mask spans
    // past + new positions, so a [B, S] mask input gets twice the sequence size (past and new get `seq` each).
    let kv_cache = crate::rewrite::probe::has_kv_cache_inputs(&gi);
    let mut out = vec![];
    for v in &g.input {
        if gi.inits.contains_key(v.name.as_str()) {
            continue;
        }
        let et = gi.elem_type(&v.name).ok_or_else(|| anyhow!("input '{}' has no tensor type", v.name))?;
        let decl = gi.declared_shape(&v.name).ok_or_else(|| anyhow!("input '{}' has no shape", v.name))?;
        let lname = v.name.to_lowercase();
        let past_and_new = kv_cache && decl.len() == 2 && !dt::is_float(et) && lname.contains("mask");
        let shape: Vec<i64> = decl
            .iter()
            .enumerate()
            .map(|(k, d)| match d {
                Dim::Known(x) if *x >= 0 => *x,
                _ if k == 0 => tol.batch,
                _ if past_and_new => 2 * tol.seq,
                _ => tol.seq,
            })
            .collect();
        let n: usize = shape.iter().product::<i64>().max(0) as usize;
        // Upper bound for integer inputs used as Gather indices (embedding tables).
        let bound = gi
            .users(&v.name)
            .iter()
            .map(|&u| gi.node(u))
            .filter(|u| u.op_type == "Gather" && u.input.get(1) == Some(&v.name))
            .filter_map(|u| {
                let axis = attr_i(u, "axis").unwrap_or(0);
                let d = gi.declared_shape(&u.input[0])?;
                let ax = if axis < 0 { axis + d.len() as i64 } else { axis } as usize;
                match d.get(ax)? {
                    Dim::Known(x) => Some(*x),
                    _ => None,
                }
            })
            .min();
        // Inputs feeding com.microsoft GroupQueryAttention's seqlens_k / total_sequence_length: a full prompt.
        let gqa_slot = gi
            .users(&v.name)
            .iter()
            .map(|&u| gi.node(u))
            .filter(|u| u.domain == "com.microsoft" && u.op_type == "GroupQueryAttention")
            .find_map(|u| u.input.iter().position(|i| *i == v.name));
        let data: Vec<f64> = if let Some(slot @ (5 | 6)) = gqa_slot {
            vec![if slot == 5 { tol.seq - 1 } else { tol.seq } as f64; n]
        } else if dt::is_float(et) {
            (0..n).map(|_| rng.next() * 2.0 - 1.0).collect()
        } else if lname.contains("mask") || et == dt::BOOL {
            // Right padding: row b keeps its first len_b positions (row 0 all of them).
            let cols = *shape.last().unwrap_or(&1) as usize;
            let rows = if cols == 0 { 0 } else { n / cols };
            let mut d = Vec::with_capacity(n);
            for r in 0..rows {
                let len = if r == 0 { cols } else { 1 + (rng.next() * cols as f64) as usize % cols.max(1) };
                d.extend((0..cols).map(|c| (c < len) as i32 as f64));
            }
            d
        } else if lname.contains("position") && !shape.is_empty() {
            let cols = *shape.last().unwrap() as usize;
            (0..n).map(|i| (i % cols.max(1)) as f64).collect()
        } else if lname.contains("seqlen") || lname.contains("length") {
            (0..n).map(|_| 1.0 + ((rng.next() * tol.seq as f64) as i64 % tol.seq) as f64).collect()
        } else {
            let hi = bound.unwrap_or(2).max(1) as f64;
            (0..n).map(|_| (rng.next() * hi).floor().min(hi - 1.0)).collect()
        };
        out.push((v.name.clone(), HostTensor { dtype: et, shape, data }));
    }
    Ok(out)
}

/// Runs a model on the given inputs; returns its outputs (name, values) and the time of the timed run.
pub fn run_model(path: &Path, library: &Path, inputs: &[(String, HostTensor)]) -> Result<(Vec<(String, Vec<f64>)>, f64)> {
    let mut session = crate::runtime::session_builder(library)?
        .commit_from_file(path)
        .map_err(|e| anyhow!("ONNX Runtime cannot load {}: {e}", path.display()))?;
    let names: Vec<String> = session.outputs().iter().map(|o| o.name().to_string()).collect();
    let feed = |inputs: &[(String, HostTensor)]| -> Result<Vec<(String, DynValue)>> {
        inputs.iter().map(|(n, t)| Ok((n.clone(), t.to_ort()?))).collect()
    };
    // One warm-up run, then a timed one.
    session.run(feed(inputs)?).map_err(|e| anyhow!("running {}: {e}", path.display()))?;
    let t0 = Instant::now();
    let outs = session.run(feed(inputs)?).map_err(|e| anyhow!("running {}: {e}", path.display()))?;
    let ms = t0.elapsed().as_secs_f64() * 1e3;
    let mut res = vec![];
    for n in names {
        let v = extract(&outs[n.as_str()]).with_context(|| format!("output '{n}'"))?;
        res.push((n, v));
    }
    Ok((res, ms))
}

pub fn library_path(tol: &Tolerance) -> Result<PathBuf> {
    match &tol.library {
        Some(p) => Ok(p.clone()),
        None => crate::runtime::default_library_path(),
    }
}

/// The relative tolerance an output of ONNX element type `elem_type` gets at least: 4 machine epsilons of a
/// 16-bit float type (fp16 2⁻¹⁰, bf16 2⁻⁷), since any change in the order of its roundings (a fused attention, a
/// fused norm) moves such outputs by a few units in the last place; float32 and wider keep `--rtol` as given.
fn rtol_floor(elem_type: i32) -> f64 {
    use crate::rewrite::tensor::dt;
    match elem_type {
        dt::FLOAT16 => 4.0 * 2f64.powi(-10),
        dt::BFLOAT16 => 4.0 * 2f64.powi(-7),
        _ => 0.0,
    }
}

/// Max abs/rel error of `got` against `want`, an output of ONNX element type `elem_type`.
pub fn errors(name: &str, got: &[f64], want: &[f64], elem_type: i32, tol: &Tolerance) -> OutputError {
    let mut max_abs: f64 = if got.len() == want.len() { 0.0 } else { f64::INFINITY };
    let mut max_ref: f64 = 0.0;
    for (a, b) in got.iter().zip(want.iter()) {
        let e = if a.is_nan() != b.is_nan() { f64::INFINITY } else if a.is_nan() { 0.0 } else { (a - b).abs() };
        max_abs = max_abs.max(e);
        if b.is_finite() {
            max_ref = max_ref.max(b.abs());
        }
    }
    let max_rel = if max_ref > 0.0 { max_abs / max_ref } else { max_abs };
    let rtol = tol.rtol.max(rtol_floor(elem_type));
    OutputError { name: name.into(), max_abs, max_rel, max_ref, passed: max_abs <= tol.atol + rtol * max_ref }
}

pub fn compare_models(original: &Path, rewritten: &Path, tol: &Tolerance) -> Result<Verification> {
    let mo = crate::rewrite::io::load(original)?;
    let mr = crate::rewrite::io::load(rewritten)?;
    let in_o: Vec<&str> = mo.graph.input.iter().map(|v| v.name.as_str()).collect();
    let in_r: Vec<&str> = mr.graph.input.iter().map(|v| v.name.as_str()).collect();
    if in_o != in_r {
        bail!("the models' inputs differ: {in_o:?} vs {in_r:?}");
    }
    let fused_nodes = mr.graph.node.iter().filter(|n| n.domain == crate::DOMAIN).count();
    let lib = library_path(tol)?;
    let inputs = generate_inputs(&mo, tol)?;
    let (oa, ta) = run_model(original, &lib, &inputs)?;
    let (ob, tb) = run_model(rewritten, &lib, &inputs)?;
    let mut outputs = vec![];
    for (name, want) in &oa {
        let got = ob.iter().find(|(n, _)| n == name).map(|(_, v)| v).ok_or_else(|| anyhow!("rewritten model lacks output '{name}'"))?;
        let elem_type = mo.graph.output.iter().find(|o| &o.name == name).map_or(0, |o| o.type_.tensor_type().elem_type);
        outputs.push(errors(name, got, want, elem_type, tol));
    }
    let passed = outputs.iter().all(|o| o.passed);
    Ok(Verification {
        inputs: inputs.iter().map(|(n, t)| format!("{n}{:?}", t.shape)).collect(),
        outputs,
        original_ms: ta,
        rewritten_ms: tb,
        fused_nodes,
        passed,
    })
}
