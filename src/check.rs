//! End-to-end checks of the op: a problem description (`Case`), fresh random inputs for it, the ONNX
//! model that runs it, ORT execution through our library, and comparison with the float64 reference.
//! Used by the tests, the demo and `bench`.

use std::path::Path;

use anyhow::{anyhow, Context, Result};
use half::{bf16, f16};
use onnx_protobuf::tensor_proto::DataType;
use onnx_protobuf::ModelProto;
use ort::session::Session;
use ort::value::{DynValue, Tensor};
use rand::{Rng, SeedableRng};
use rand_distr::{Distribution, StandardNormal};

use crate::cpu::{self, reference, Element, MaskData};
use crate::model::{self, Attr, Dim, FlashNode};
use crate::params::{AttnParams, DType, MaskKind};
use crate::schema::{self, InputShapes, Layout, OpAttributes};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CaseMask {
    None,
    /// Boolean mask of this shape (numpy-broadcast to [B, Nq, Sq, Skv]).
    Bool([i64; 4]),
    Additive([i64; 4]),
}

/// One attention problem and the op's attributes for it.
#[derive(Debug, Clone)]
pub struct Case {
    pub dtype: DType,
    pub batch: i64,
    pub heads_q: i64,
    pub heads_kv: i64,
    pub seq_q: i64,
    pub seq_kv: i64,
    pub head_dim: i64,
    pub head_dim_v: i64,
    pub layout: Layout,
    /// [batch, seq, heads·head_dim] inputs with `num_heads`.
    pub three_d: bool,
    pub causal: bool,
    pub scale: Option<f32>,
    pub softcap: f32,
    pub window: (i64, i64),
    pub mask: CaseMask,
    /// Mask rank actually fed (trailing dims of `mask`'s shape), 1..=4.
    pub mask_rank: usize,
    pub seqlens: bool,
    pub with_lse: bool,
}

impl Case {
    pub fn new(dtype: DType, batch: i64, heads_q: i64, heads_kv: i64, seq_q: i64, seq_kv: i64, head_dim: i64) -> Case {
        Case {
            dtype,
            batch,
            heads_q,
            heads_kv,
            seq_q,
            seq_kv,
            head_dim,
            head_dim_v: head_dim,
            layout: Layout::Bsnh,
            three_d: false,
            causal: false,
            scale: None,
            softcap: 0.0,
            window: (-1, -1),
            mask: CaseMask::None,
            mask_rank: 4,
            seqlens: false,
            with_lse: true,
        }
    }

    pub fn describe(&self) -> String {
        let mut s = format!(
            "{} B={} Nq={} Nkv={} Sq={} Skv={} D={} Dv={} {}",
            self.dtype.name(),
            self.batch,
            self.heads_q,
            self.heads_kv,
            self.seq_q,
            self.seq_kv,
            self.head_dim,
            self.head_dim_v,
            if self.three_d { "3D" } else if self.layout == Layout::Bsnh { "BSNH" } else { "BNSH" }
        );
        if self.causal {
            s += " causal";
        }
        if self.window != (-1, -1) {
            s += &format!(" window={:?}", self.window);
        }
        if self.softcap > 0.0 {
            s += &format!(" softcap={}", self.softcap);
        }
        if let Some(sc) = self.scale {
            s += &format!(" scale={sc}");
        }
        match self.mask {
            CaseMask::None => {}
            CaseMask::Bool(m) => s += &format!(" bool_mask={:?}", self.mask_dims_of(m)),
            CaseMask::Additive(m) => s += &format!(" add_mask={:?}", self.mask_dims_of(m)),
        }
        if self.seqlens {
            s += " key_seqlens";
        }
        s
    }

    fn mask_dims_of(&self, m: [i64; 4]) -> Vec<i64> {
        m[4 - self.mask_rank..].to_vec()
    }

    pub fn mask_dims(&self) -> Option<Vec<i64>> {
        match self.mask {
            CaseMask::None => None,
            CaseMask::Bool(m) | CaseMask::Additive(m) => Some(self.mask_dims_of(m)),
        }
    }

    fn dims(&self, heads: i64, seq: i64, dim: i64) -> Vec<i64> {
        if self.three_d {
            vec![self.batch, seq, heads * dim]
        } else {
            match self.layout {
                Layout::Bsnh => vec![self.batch, seq, heads, dim],
                Layout::Bnsh => vec![self.batch, heads, seq, dim],
            }
        }
    }

    pub fn query_dims(&self) -> Vec<i64> {
        self.dims(self.heads_q, self.seq_q, self.head_dim)
    }
    pub fn key_dims(&self) -> Vec<i64> {
        self.dims(self.heads_kv, self.seq_kv, self.head_dim)
    }
    pub fn value_dims(&self) -> Vec<i64> {
        self.dims(self.heads_kv, self.seq_kv, self.head_dim_v)
    }

    pub fn attributes(&self) -> OpAttributes {
        OpAttributes {
            layout: self.layout,
            num_heads: self.three_d.then_some(self.heads_q),
            causal: self.causal,
            scale: self.scale,
            softcap: self.softcap,
            window_left: self.window.0,
            window_right: self.window.1,
            ..Default::default()
        }
    }

    /// The node attributes (only those that differ from the defaults, as a user would write them).
    pub fn node_attributes(&self) -> Vec<(&'static str, Attr)> {
        let mut a = vec![];
        if self.three_d {
            a.push(("num_heads", Attr::Int(self.heads_q)));
        } else if self.layout == Layout::Bnsh {
            a.push(("layout", Attr::Str("BNSH".into())));
        }
        if self.causal {
            a.push(("causal", Attr::Int(1)));
        }
        if let Some(s) = self.scale {
            a.push(("scale", Attr::Float(s)));
        }
        if self.softcap > 0.0 {
            a.push(("softcap", Attr::Float(self.softcap)));
        }
        if self.window.0 != -1 {
            a.push(("window_left", Attr::Int(self.window.0)));
        }
        if self.window.1 != -1 {
            a.push(("window_right", Attr::Int(self.window.1)));
        }
        a
    }

    pub fn mask_kind(&self) -> MaskKind {
        match self.mask {
            CaseMask::None => MaskKind::None,
            CaseMask::Bool(_) => MaskKind::Bool,
            CaseMask::Additive(_) => MaskKind::Additive,
        }
    }

    pub fn params(&self) -> Result<AttnParams> {
        let (q, k, v, m) = (self.query_dims(), self.key_dims(), self.value_dims(), self.mask_dims());
        let seqlens = [self.batch];
        let shapes = InputShapes { query: &q, key: &k, value: &v, attn_mask: m.as_deref(), key_seqlens: self.seqlens.then_some(&seqlens[..]), ..Default::default() };
        Ok(schema::plan(&self.attributes(), &shapes, self.dtype, self.mask_kind())?.0)
    }

    /// A model with one FlashAttention node whose inputs are fixed-shape graph inputs.
    pub fn model(&self) -> ModelProto {
        let t = model::onnx_type(self.dtype);
        let fixed = |d: Vec<i64>| d.into_iter().map(Dim::Fixed).collect::<Vec<_>>();
        let mut inputs = vec![("query", t, fixed(self.query_dims())), ("key", t, fixed(self.key_dims())), ("value", t, fixed(self.value_dims()))];
        match (self.mask, self.mask_dims()) {
            (CaseMask::Bool(_), Some(d)) => inputs.push(("attn_mask", DataType::BOOL, fixed(d))),
            (CaseMask::Additive(_), Some(d)) => inputs.push(("attn_mask", t, fixed(d))),
            _ if self.seqlens => inputs.push(("", t, vec![])),
            _ => {}
        }
        if self.seqlens {
            inputs.push(("key_seqlens", DataType::INT32, vec![Dim::Fixed(self.batch)]));
        }
        model::flash_attention_model(&FlashNode { inputs, attrs: self.node_attributes(), with_lse: self.with_lse })
    }
}

fn numel(d: &[i64]) -> usize {
    d.iter().product::<i64>() as usize
}

/// Random inputs for a case, already rounded to its dtype (so the reference sees exactly what the
/// kernel sees), stored as f32.
pub struct CaseData {
    pub q: Vec<f32>,
    pub k: Vec<f32>,
    pub v: Vec<f32>,
    pub mask_bool: Vec<bool>,
    pub mask_add: Vec<f32>,
    pub seqlens: Vec<i32>,
}

/// `x` rounded to `dtype` (as stored in a tensor of that type), back in f32.
pub(crate) fn round_to(dtype: DType, x: f32) -> f32 {
    match dtype {
        DType::F32 => x,
        DType::F16 => f16::from_f32(x).to_f32(),
        DType::BF16 => bf16::from_f32(x).to_f32(),
    }
}

impl CaseData {
    pub fn generate(case: &Case, seed: u64) -> CaseData {
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let mut normal = |n: usize, sd: f32| -> Vec<f32> {
            (0..n)
                .map(|_| {
                    let x: f32 = StandardNormal.sample(&mut rng);
                    round_to(case.dtype, sd * x)
                })
                .collect()
        };
        let q = normal(numel(&case.query_dims()), 1.0);
        let k = normal(numel(&case.key_dims()), 1.0);
        let v = normal(numel(&case.value_dims()), 1.0);
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed ^ 0x5eed);
        let mask_n = case.mask_dims().map_or(0, |d| numel(&d));
        let (mask_bool, mask_add) = match case.mask {
            CaseMask::None => (vec![], vec![]),
            // ~25% hidden keys, so some rows of small cases are fully masked.
            CaseMask::Bool(_) => ((0..mask_n).map(|_| rng.random::<f32>() > 0.25).collect(), vec![]),
            // Mix of soft biases and -inf (hidden) entries, as padding masks are.
            CaseMask::Additive(_) => (
                vec![],
                (0..mask_n)
                    .map(|_| if rng.random::<f32>() < 0.2 { f32::NEG_INFINITY } else { round_to(case.dtype, rng.random_range(-2.0..2.0)) })
                    .collect(),
            ),
        };
        let seqlens = if case.seqlens { (0..case.batch).map(|_| rng.random_range(0..=case.seq_kv as i32)).collect() } else { vec![] };
        CaseData { q, k, v, mask_bool, mask_add, seqlens }
    }
}

/// Per-dtype tolerance for |out − ref| ≤ atol + rtol·|ref| against the float64 reference.
/// Inputs are exact in the dtype, the kernel accumulates in f32, so the error is the output's final
/// rounding (half an ulp: 2^-11 for f16, 2^-8 for bf16, relative) plus f32 accumulation and the
/// polynomial exp/tanh (~1e-6 relative, scaled by softcap); the bounds allow 2× that.
pub fn tolerance(dtype: DType) -> (f64, f64) {
    match dtype {
        DType::F32 => (1e-4, 1e-4),
        DType::F16 => (1e-4, 2.0 * 4.9e-4),
        DType::BF16 => (1e-4, 2.0 * 3.9e-3),
    }
}

/// How far an output is from the reference.
#[derive(Debug, Clone, Copy)]
pub struct Comparison {
    pub max_abs: f64,
    pub max_rel: f64,
    /// Largest |err| / (atol + rtol·|ref|): ≤ 1 passes.
    pub worst_ratio: f64,
    pub lse_max_abs: f64,
    pub nan: bool,
}

impl Comparison {
    pub fn passed(&self) -> bool {
        !self.nan && self.worst_ratio <= 1.0 && self.lse_max_abs <= 1e-3
    }
}

/// The float64 reference for a case: output [B, Nq, Sq, Dv], lse [B, Nq, Sq].
pub fn reference(case: &Case, data: &CaseData) -> Result<(Vec<f64>, Vec<f64>)> {
    let p = case.params()?;
    let mask = match case.mask {
        CaseMask::None => MaskData::None,
        CaseMask::Bool(_) => MaskData::Bool(&data.mask_bool),
        CaseMask::Additive(_) => MaskData::Additive(&data.mask_add),
    };
    let seqlens = case.seqlens.then_some(&data.seqlens[..]);
    Ok(reference::attention_f64::<f32>(&p, &data.q, &data.k, &data.v, mask, seqlens))
}

/// Compares an output in the op's layout (described by `p`) with the reference.
pub fn compare(case: &Case, p: &AttnParams, out: &[f32], lse: Option<&[f32]>, reference: &(Vec<f64>, Vec<f64>)) -> Comparison {
    let (atol, rtol) = tolerance(case.dtype);
    let (ref_out, ref_lse) = reference;
    let mut c = Comparison { max_abs: 0.0, max_rel: 0.0, worst_ratio: 0.0, lse_max_abs: 0.0, nan: false };
    let dv = p.head_dim_v as usize;
    for b in 0..p.batch as usize {
        for h in 0..p.heads_q as usize {
            for i in 0..p.seq_q as usize {
                let at = b as i64 * p.out_batch_stride + h as i64 * p.out_head_stride + i as i64 * p.out_row_stride;
                let r0 = ((b * p.heads_q as usize + h) * p.seq_q as usize + i) * dv;
                for x in 0..dv {
                    let got = out[at as usize + x] as f64;
                    let want = ref_out[r0 + x];
                    if got.is_nan() {
                        c.nan = true;
                        continue;
                    }
                    let err = (got - want).abs();
                    c.max_abs = c.max_abs.max(err);
                    c.max_rel = c.max_rel.max(err / want.abs().max(1e-6));
                    c.worst_ratio = c.worst_ratio.max(err / (atol + rtol * want.abs()));
                }
                if let Some(lse) = lse {
                    let li = (b * p.heads_q as usize + h) * p.seq_q as usize + i;
                    let (got, want) = (lse[li] as f64, ref_lse[li]);
                    if got.is_nan() {
                        c.nan = true;
                    } else if want == f64::NEG_INFINITY || got == f64::NEG_INFINITY {
                        if got != want {
                            c.lse_max_abs = f64::INFINITY;
                        }
                    } else {
                        c.lse_max_abs = c.lse_max_abs.max((got - want).abs());
                    }
                }
            }
        }
    }
    c
}

/// Runs the CPU kernel directly (no ORT) on a case; the output is poisoned with NaN first so an
/// unwritten element fails the comparison.
pub fn run_cpu_kernel(case: &Case, data: &CaseData, par: &dyn cpu::Parallel) -> Result<(Vec<f32>, Vec<f32>)> {
    fn typed<T: Element>(case: &Case, data: &CaseData, par: &dyn cpu::Parallel) -> Result<(Vec<f32>, Vec<f32>)> {
        let p = case.params()?;
        let conv = |x: &[f32]| x.iter().map(|v| T::from_f32(*v)).collect::<Vec<T>>();
        let (q, k, v, madd) = (conv(&data.q), conv(&data.k), conv(&data.v), conv(&data.mask_add));
        let mask = match case.mask {
            CaseMask::None => MaskData::None,
            CaseMask::Bool(_) => MaskData::Bool(&data.mask_bool),
            CaseMask::Additive(_) => MaskData::Additive(&madd),
        };
        let n_out = (p.batch * p.heads_q * p.seq_q * p.head_dim_v) as usize;
        let mut out = vec![T::from_f32(f32::NAN); n_out];
        let mut lse = vec![f32::NAN; (p.batch * p.heads_q * p.seq_q) as usize];
        let inputs = cpu::Inputs { q: &q, k: &k, v: &v, mask, seqlens: case.seqlens.then_some(&data.seqlens[..]) };
        cpu::attention(&p, &inputs, &mut out, Some(&mut lse), par)?;
        Ok((out.iter().map(|x| x.to_f32()).collect(), lse))
    }
    match case.dtype {
        DType::F32 => typed::<f32>(case, data, par),
        DType::F16 => typed::<f16>(case, data, par),
        DType::BF16 => typed::<bf16>(case, data, par),
    }
}

fn tensor_of(dtype: DType, dims: &[i64], data: &[f32]) -> Result<DynValue> {
    let shape = dims.to_vec();
    Ok(match dtype {
        DType::F32 => Tensor::from_array((shape, data.to_vec()))?.into_dyn(),
        DType::F16 => Tensor::from_array((shape, data.iter().map(|x| f16::from_f32(*x)).collect::<Vec<_>>()))?.into_dyn(),
        DType::BF16 => Tensor::from_array((shape, data.iter().map(|x| bf16::from_f32(*x)).collect::<Vec<_>>()))?.into_dyn(),
    })
}

/// The ORT inputs of a case, by graph input name.
pub fn ort_inputs(case: &Case, data: &CaseData) -> Result<Vec<(String, DynValue)>> {
    let mut v = vec![
        ("query".to_string(), tensor_of(case.dtype, &case.query_dims(), &data.q)?),
        ("key".to_string(), tensor_of(case.dtype, &case.key_dims(), &data.k)?),
        ("value".to_string(), tensor_of(case.dtype, &case.value_dims(), &data.v)?),
    ];
    if let Some(d) = case.mask_dims() {
        let t = match case.mask {
            CaseMask::Bool(_) => Tensor::from_array((d, data.mask_bool.clone()))?.into_dyn(),
            _ => tensor_of(case.dtype, &d, &data.mask_add)?,
        };
        v.push(("attn_mask".to_string(), t));
    }
    if case.seqlens {
        v.push(("key_seqlens".to_string(), Tensor::from_array((vec![case.batch], data.seqlens.clone()))?.into_dyn()));
    }
    Ok(v)
}

/// A CPU session over the case's model with our library registered.
pub fn session(case: &Case, library: &Path, threads: Option<usize>) -> Result<Session> {
    let mut b = crate::runtime::session_builder(library)?;
    if let Some(t) = threads {
        b = b.with_intra_threads(t).map_err(|e| anyhow!("{e}"))?;
    }
    b.commit_from_memory(&model::to_bytes(&case.model())).map_err(|e| anyhow!("{e}"))
}

/// Runs a session and returns (output, lse) as f32.
pub fn run_session(session: &mut Session, case: &Case, inputs: Vec<(String, DynValue)>) -> Result<(Vec<f32>, Option<Vec<f32>>)> {
    let outputs = session.run(inputs).map_err(|e| anyhow!("{e}"))?;
    let out = &outputs["output"];
    let out = match case.dtype {
        DType::F32 => out.try_extract_tensor::<f32>()?.1.to_vec(),
        DType::F16 => out.try_extract_tensor::<f16>()?.1.iter().map(|x| x.to_f32()).collect(),
        DType::BF16 => out.try_extract_tensor::<bf16>()?.1.iter().map(|x| x.to_f32()).collect(),
    };
    let lse = if case.with_lse { Some(outputs["softmax_lse"].try_extract_tensor::<f32>().context("softmax_lse")?.1.to_vec()) } else { None };
    Ok((out, lse))
}

/// Builds, runs and checks a case through ORT. Returns the comparison.
pub fn check_through_ort(case: &Case, library: &Path, seed: u64) -> Result<Comparison> {
    let data = CaseData::generate(case, seed);
    let mut s = session(case, library, None)?;
    let (out, lse) = run_session(&mut s, case, ort_inputs(case, &data)?)?;
    let p = case.params()?;
    Ok(compare(case, &p, &out, lse.as_deref(), &reference(case, &data)?))
}

/// A random case over the whole schema: odd sizes, Sq ≠ Skv, GQA/MQA, every mask kind and
/// broadcast, causal, window, softcap, scale, both layouts, 3D, key_seqlens, all dtypes.
/// `max_seq` bounds the sequence lengths (the f64 reference is O(S²)).
pub fn random_case(rng: &mut impl Rng, max_seq: i64) -> Case {
    let dtype = [DType::F32, DType::F16, DType::BF16][rng.random_range(0..3)];
    let seqs: Vec<i64> = [1, 2, 17, 64, 129, 255, 1000].into_iter().filter(|s| *s <= max_seq).collect();
    let heads_kv = [1, 2, 3][rng.random_range(0..3)];
    let group = [1, 2, 4][rng.random_range(0..3)];
    let head_dim = [8, 16, 40, 64, 80, 128, 256][rng.random_range(0..7)];
    let batch = rng.random_range(1..=2);
    let seq_q = seqs[rng.random_range(0..seqs.len())];
    let seq_kv = if rng.random_bool(0.5) { seq_q } else { seqs[rng.random_range(0..seqs.len())] };
    let mut c = Case::new(dtype, batch, heads_kv * group, heads_kv, seq_q, seq_kv, head_dim);
    if rng.random_bool(0.2) {
        c.head_dim_v = [8, 32, 64][rng.random_range(0..3)];
    }
    c.three_d = rng.random_bool(0.2);
    c.layout = if c.three_d || rng.random_bool(0.5) { Layout::Bsnh } else { Layout::Bnsh };
    c.causal = rng.random_bool(0.4);
    if rng.random_bool(0.25) {
        c.window = (rng.random_range(-1..20), rng.random_range(-1..5));
    }
    if rng.random_bool(0.25) {
        c.softcap = rng.random_range(5.0..50.0);
    }
    if rng.random_bool(0.25) {
        c.scale = Some(rng.random_range(0.01..0.5));
    }
    let full = [batch, c.heads_q, seq_q, seq_kv];
    // Each axis is either full or broadcast (1); a random number of leading axes dropped.
    let mut shape = full.map(|d| if rng.random_bool(0.5) { d } else { 1 });
    let rank = rng.random_range(1..=4);
    for d in shape.iter_mut().take(4 - rank) {
        *d = 1;
    }
    c.mask_rank = rank;
    c.mask = match rng.random_range(0..3) {
        0 => CaseMask::None,
        1 => CaseMask::Bool(shape),
        _ => CaseMask::Additive(shape),
    };
    c.seqlens = rng.random_bool(0.25);
    c.with_lse = rng.random_bool(0.7);
    c
}

/// The seed for a randomized test: FLASHATTN_SEED if set (to replay a failure), else fresh.
pub fn test_seed() -> u64 {
    std::env::var("FLASHATTN_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64)
    })
}
