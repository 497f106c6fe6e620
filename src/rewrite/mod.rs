//! Graph rewriter (issue #4): finds attention in exported ONNX models and replaces it with
//! `ai.flashattn::FlashAttention`, only where the replacement is exact.
//!
//! One concept per file:
//! - [`io`]: reading/writing models (external data included) safely;
//! - [`graph`]: the def-use index; [`tensor`]: constants; [`eval`]: probing evaluator (values/shapes);
//! - [`pattern_sdpa`]: decomposed MatMul→scale→mask→Softmax→MatMul (dynamo and TorchScript exports);
//!   [`pattern_onnx`]: the standard ONNX `Attention` op; [`pattern_contrib`]: `com.microsoft` ops;
//! - [`operand`]: tracing Q/K/V through layout Transposes, scalar scales and GQA repeat_kv chains;
//! - [`mask`]: proving masks causal / sliding-window / key-padding, or passing them through;
//! - [`emit`]: building the fused nodes; [`cleanup`]: removing dead nodes; [`report`]: what happened;
//! - [`pattern_rmsnorm`]: written-out RMSNorm as one normalization node (opt-in, outside attention).

pub mod cleanup;
pub mod emit;
pub mod kv_concat;
pub mod eval;
pub mod graph;
pub mod io;
pub mod mask;
pub mod operand;
pub mod pattern_contrib;
pub mod pattern_onnx;
pub mod pattern_rmsnorm;
pub mod pattern_sdpa;
pub mod probe;
pub mod report;
pub mod tensor;

use anyhow::{bail, Result};
use onnx_protobuf::{ModelProto, OperatorSetIdProto};

pub use report::{Report, Skip};

/// Layout of the fused op's q/k/v inputs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Layout {
    Bsnh,
    Bnsh,
    /// [batch, seq, heads·head_dim] with `num_heads`.
    ThreeD(i64),
}

/// Where one of q/k/v comes from: an existing tensor, or one that must be transposed first.
#[derive(Clone, Debug, PartialEq)]
pub enum Src {
    Tensor(String),
    Transposed(String, Vec<i64>),
}

/// What feeds the fused op's `attn_mask` input.
#[derive(Clone, Debug, PartialEq)]
pub enum MaskSrc {
    /// Used as is (bool: true = attend, or float additive), already broadcastable to [B, N, Sq, Skv].
    Tensor(String),
    /// Unsqueezed to rank 4 first (leading axes).
    ToRank4(String, usize),
    /// Logical negation of a bool tensor (a "true = masked" condition), brought to rank 4.
    Not(String, usize),
    /// The sum of several additive masks (each of rank ≤ 4), brought to rank 4.
    Sum(Vec<String>, usize),
    /// A [B, Skv] 0/1 (int or bool) key-padding tensor: `Cast(bool)` then `Unsqueeze([1, 2])`.
    KeyPadding(String),
}

/// What feeds `key_seqlens`.
#[derive(Clone, Debug, PartialEq)]
pub enum SeqlensSrc {
    /// An integer [B] tensor of key lengths (cast to int32 if needed).
    Lengths(String),
    /// An integer [B] tensor holding lengths minus one (com.microsoft GroupQueryAttention's seqlens_k).
    LengthsMinusOne(String),
}

/// The KV cache of a fused attention (com.microsoft GroupQueryAttention with past): the op's cache inputs
/// and its present outputs, which take over the replaced node's present outputs.
#[derive(Clone, Debug, PartialEq)]
pub struct KvFusion {
    pub past_key: String,
    pub past_value: String,
    /// Shared-buffer mode: past lengths max(seqlens_k + 1 − new tokens, 0), from GQA's seqlens_k and the
    /// query (whose axis 1 counts the new tokens).
    pub past_lens_from: Option<(String, String)>,
    pub cos_cache: Option<String>,
    pub sin_cache: Option<String>,
    pub position_ids: Option<String>,
    pub rotary_interleaved: bool,
    pub present_key: String,
    pub present_value: String,
    /// Nodes whose outputs the op's present outputs take over (the `Concat(past, new)` of an export).
    pub drop: Vec<usize>,
}

/// One attention to replace.
#[derive(Clone, Debug)]
pub struct Fusion {
    pub pattern: &'static str,
    pub q: Src,
    pub k: Src,
    pub v: Src,
    pub layout: Layout,
    pub scale: Option<f64>,
    pub softcap: f64,
    pub causal: bool,
    pub window_left: i64,
    pub window_right: i64,
    pub attn_mask: Option<MaskSrc>,
    pub key_seqlens: Option<SeqlensSrc>,
    /// The node whose (first) output the fused node produces from now on; it is removed.
    pub replaces: usize,
    pub output: String,
    /// Cast the op's output to this element type (when the original attention upcast to compute).
    pub out_cast: Option<i32>,
    /// Nodes (and initializers) to place before the fused node, e.g. the QKV projection unpacked from
    /// com.microsoft Attention. Their output names are chosen unused by the pattern.
    pub prelude: Vec<onnx_protobuf::NodeProto>,
    pub prelude_inits: Vec<onnx_protobuf::TensorProto>,
    /// Human-readable mask mapping, for the report.
    pub mask_note: String,
    /// Nodes the match covered (for overlap checks and the report).
    pub covered: Vec<usize>,
    /// KV cache inputs/outputs (None: no cache).
    pub kv: Option<KvFusion>,
}

#[derive(Clone, Debug, Default)]
pub struct Options {
    /// Only analyse; the model is left unchanged.
    pub dry_run: bool,
    /// Also replace written-out RMSNorms by one normalization node ([`pattern_rmsnorm`]).
    pub fuse_rmsnorm: bool,
}

/// The default-domain opset the model imports (`None` if it imports none).
pub fn onnx_opset(m: &ModelProto) -> Option<i64> {
    m.opset_import.iter().find(|o| graph::is_onnx_domain(&o.domain)).map(|o| o.version)
}

/// Checks that the model is one the rewriter understands.
pub fn check_supported(m: &ModelProto) -> Result<()> {
    if m.graph.as_ref().is_none() {
        bail!("the model has no graph");
    }
    if m.ir_version < 3 || m.ir_version > 12 {
        bail!("unsupported ONNX IR version {} (supported: 3 to 12)", m.ir_version);
    }
    match onnx_opset(m) {
        None => bail!("the model imports no default-domain (ai.onnx) opset"),
        Some(v) if !(13..=24).contains(&v) => {
            bail!("unsupported ai.onnx opset {v} (supported: 13 to 24; re-export with opset ≥ 13)")
        }
        _ => {}
    }
    if let Some(o) = m.opset_import.iter().find(|o| o.domain == crate::DOMAIN) {
        if o.version != crate::OP_VERSION {
            bail!("the model imports {} version {}, this build provides version {}", crate::DOMAIN, o.version, crate::OP_VERSION);
        }
    }
    Ok(())
}

/// Rewrites `model` in place (unless `opts.dry_run`) and reports what was found.
/// `model_dir` is where external data is read from.
pub fn rewrite_model(model: &mut ModelProto, model_dir: Option<&std::path::Path>, opts: &Options) -> Result<Report> {
    check_supported(model)?;
    let t0 = std::time::Instant::now();
    let opset = onnx_opset(model).unwrap_or(0);
    let reader = io::external_reader(model_dir);
    let mut report = Report::default();
    let (fusions, norms) = {
        let g = model.graph.as_ref().unwrap();
        let gi = graph::GraphIndex::new(g, opset);
        let ctx = probe::Ctx::new(&gi, &reader);
        report.batch1_only = ctx.batch1_only();
        let mut found = Vec::new();
        pattern_sdpa::find(&ctx, &mut found, &mut report);
        for f in found.iter_mut() {
            kv_concat::absorb(&ctx, f);
        }
        pattern_onnx::find(&ctx, &mut found, &mut report);
        pattern_contrib::find(&ctx, &mut found, &mut report);
        // Never let two matches claim the same node.
        let mut claimed = std::collections::HashSet::new();
        let mut kept = Vec::new();
        for f in found {
            if f.covered.iter().any(|c| claimed.contains(c)) || claimed.contains(&f.replaces) {
                report.skip(f.pattern, &f.output, "overlaps another match");
                continue;
            }
            claimed.extend(f.covered.iter().copied());
            claimed.insert(f.replaces);
            kept.push(f);
        }
        let norms = if opts.fuse_rmsnorm { pattern_rmsnorm::find(&ctx, &claimed) } else { Vec::new() };
        (kept, norms)
    };
    report.rmsnorms_fused = norms.len();
    for f in &fusions {
        report.fused(f);
    }
    report.nodes_before = model.graph.node.len();
    if !opts.dry_run && !(fusions.is_empty() && norms.is_empty()) {
        let g = model.graph.as_mut().unwrap();
        let dead_before = cleanup::dead_names(g);
        pattern_rmsnorm::apply(g, &norms, opset);
        emit::apply(g, &fusions, opset)?;
        report.removed_dead = cleanup::remove_dead(g, &dead_before);
        if !model.opset_import.iter().any(|o| o.domain == crate::DOMAIN) {
            let mut o = OperatorSetIdProto::new();
            o.domain = crate::DOMAIN.to_string();
            o.version = crate::OP_VERSION;
            model.opset_import.push(o);
        }
    }
    report.nodes_after = model.graph.node.len();
    report.seconds = t0.elapsed().as_secs_f64();
    Ok(report)
}
