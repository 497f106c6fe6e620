//! RMSNorm as exports write it out — x · 1/√(mean(x²) + ε) · w, usually with x upcast to float32 around the
//! normalization — replaced by one normalization node: ONNX `RMSNormalization` where the model imports opset
//! ≥ 23, else ONNX Runtime's `SimplifiedLayerNormalization` (default domain; what ORT's own transformers optimizer
//! emits). Both compute in float32 (`stash_type` 1) and round once, where the export rounds the normalized value
//! to x's type before multiplying by w: results differ by about one unit in the last place of x's type. Where
//! the export normalizes a float32 x into a narrower output type, x is cast to that type first (one more
//! rounding of the same size).
//!
//! Opt-in (`rewrite --fuse-rmsnorm`): it changes the model outside attention. At short prefills the written-out
//! form's seven or eight kernels per norm cost as much GPU time as the attention itself (docs/PERF.md).

use std::collections::HashSet;

use onnx_protobuf::{GraphProto, NodeProto};

use super::emit::{a_float, a_int, node};
use super::graph::{attr_i, attr_ints, is_onnx_domain};
use super::probe::Ctx;
use super::tensor::dt;

/// One written-out RMSNorm to replace.
#[derive(Clone, Debug)]
pub struct NormFusion {
    /// The normalized tensor as the model has it (before any upcast).
    pub x: String,
    /// The weight: a rank-1 tensor over x's last axis, of the output's element type.
    pub scale: String,
    pub epsilon: f32,
    /// The node producing the norm's output (the weight's Mul); the fused node takes over its output.
    pub replaces: usize,
    pub output: String,
    /// Where x is not of the output's type (a float32 residual stream normalized into a float16 model: x is
    /// upcast, normalized, cast down, weighted), the export's downcast node (index, its output, the type),
    /// reused to cast x, so that x, the weight and the output share a type as ONNX Runtime's kernels want.
    pub recast: Option<(usize, String, i32)>,
}

/// Every RMSNorm in the graph whose weight Mul no attention fusion claimed.
pub fn find(ctx: &Ctx, claimed: &HashSet<usize>) -> Vec<NormFusion> {
    let gi = ctx.gi;
    (0..gi.g.node.len())
        .filter(|&i| is_onnx_domain(&gi.node(i).domain) && gi.node(i).op_type == "ReduceMean")
        .filter_map(|i| match_from_mean(ctx, i))
        .filter(|f| !claimed.contains(&f.replaces))
        .collect()
}

/// The single node reading `t` when it is a default-domain `op` (and `t` is no graph output).
fn sole_user<'a>(ctx: &Ctx<'_, 'a>, t: &str, op: &str) -> Option<(usize, &'a NodeProto)> {
    let gi = ctx.gi;
    if gi.use_count(t) != 1 {
        return None;
    }
    let i = *gi.users(t).first()?;
    let n = gi.node(i);
    (n.op_type == op && is_onnx_domain(&n.domain)).then_some((i, n))
}

/// The other input of a two-input node, given one of them.
fn other_input<'n>(n: &'n NodeProto, one: &str) -> Option<&'n String> {
    match (n.input.first(), n.input.get(1)) {
        (Some(a), Some(b)) if a == one => Some(b),
        (Some(a), Some(b)) if b == one => Some(a),
        _ => None,
    }
}

/// ReduceMean(x², last axis, keepdims) → + ε → √ → (1/· then ·x, or x/·) [→ Cast back] → ·w.
fn match_from_mean(ctx: &Ctx, mean_i: usize) -> Option<NormFusion> {
    let gi = ctx.gi;
    let mean = gi.node(mean_i);
    if attr_i(mean, "keepdims").unwrap_or(1) != 1 {
        return None;
    }
    let squares = mean.input.first()?;
    let xf = squared_input(ctx, squares)?;
    let rank = ctx.rank(xf)? as i64;
    let axes = match attr_ints(mean, "axes") {
        Some(a) => a,
        None => const_ints(ctx, mean.input.get(1)?)?,
    };
    if axes.len() != 1 || !(axes[0] == -1 || axes[0] == rank - 1) {
        return None;
    }
    let (_, add) = sole_user(ctx, &mean.output[0], "Add")?;
    let epsilon = ctx.const_scalar(other_input(add, &mean.output[0])?)?;
    if !(0.0..1.0).contains(&epsilon) {
        return None;
    }
    let (_, sqrt) = sole_user(ctx, &add.output[0], "Sqrt")?;
    // x before an upcast to float32, if xf is one.
    let upcast_from = gi.prod_op(xf, "Cast").filter(|(_, up)| attr_i(up, "to") == Some(dt::FLOAT as i64)).and_then(|(_, up)| up.input.first());
    // T5 multiplies x itself (not its upcast) by the inverse root.
    let x_or_upcast: Vec<&str> = std::iter::once(xf).chain(upcast_from).map(String::as_str).collect();
    let normalized = normalized_output(ctx, &sqrt.output[0], &x_or_upcast)?;
    // An upcast x is cast down (to x's type, or another) before the weight.
    let (x, before_weight, recast) = match upcast_from {
        Some(x) => {
            let x = x.clone();
            match sole_user(ctx, &normalized, "Cast") {
                Some((down_i, down)) => {
                    let to = attr_i(down, "to")? as i32;
                    let recast = (gi.elem_type_guess(&x) != Some(to)).then(|| (down_i, down.output[0].clone(), to));
                    (x, down.output[0].clone(), recast)
                }
                // no downcast: weighted in float32 (x then is float32: the upcast was a no-op)
                None => (x, normalized, None),
            }
        }
        None => (xf.to_string(), normalized, None),
    };
    let x_type = match &recast {
        Some((_, _, to)) => *to,
        None => gi.elem_type_guess(&x)?,
    };
    if ![dt::FLOAT, dt::FLOAT16, dt::BFLOAT16, dt::DOUBLE].contains(&x_type) {
        return None;
    }
    let (mul_i, mul) = sole_user(ctx, &before_weight, "Mul")?;
    // The weight: any tensor of shape [x's last axis] (an initializer, or an Identity of one where an export
    // shared equal weights) of x's type.
    let scale = other_input(mul, &before_weight)?;
    let (x_shapes, w_shapes) = (ctx.shapes(&x)?, ctx.shapes(scale)?);
    if gi.elem_type_guess(scale)? != x_type || x_shapes.iter().zip(&w_shapes).any(|(xs, ws)| ws.len() != 1 || xs.last() != ws.first()) {
        return None;
    }
    Some(NormFusion { x, scale: scale.clone(), epsilon: epsilon as f32, replaces: mul_i, output: mul.output[0].clone(), recast })
}

/// x for x² written as Pow(x, 2) or Mul(x, x).
fn squared_input<'a>(ctx: &Ctx<'_, 'a>, t: &str) -> Option<&'a String> {
    let gi = ctx.gi;
    if let Some((_, p)) = gi.prod_op(t, "Pow") {
        return (ctx.const_scalar(p.input.get(1)?)? == 2.0).then(|| &p.input[0]);
    }
    let (_, m) = gi.prod_op(t, "Mul")?;
    (m.input.len() == 2 && m.input[0] == m.input[1]).then(|| &m.input[0])
}

/// x / √(…) as the export wrote it: Mul(x, Reciprocal(√)), Mul(x, Div(1, √)) or Div(x, √), x one of `xs`.
fn normalized_output(ctx: &Ctx, root: &str, xs: &[&str]) -> Option<String> {
    let gi = ctx.gi;
    let i = *gi.users(root).first().filter(|_| gi.use_count(root) == 1)?;
    let n = gi.node(i);
    if !is_onnx_domain(&n.domain) {
        return None;
    }
    let inverse = match n.op_type.as_str() {
        "Div" if n.input.first().is_some_and(|t| xs.contains(&t.as_str())) => return Some(n.output[0].clone()),
        "Reciprocal" => &n.output[0],
        "Div" if n.input.first().and_then(|t| ctx.const_scalar(t)) == Some(1.0) => &n.output[0],
        _ => return None,
    };
    let (_, mul) = sole_user(ctx, inverse, "Mul")?;
    xs.contains(&other_input(mul, inverse)?.as_str()).then(|| mul.output[0].clone())
}

/// Integer constant values of `t`, the same under every probe.
fn const_ints(ctx: &Ctx, t: &str) -> Option<Vec<i64>> {
    let first = ctx.evs.first()?.value(t)?.as_i64();
    ctx.evs.iter().all(|e| e.value(t).is_some_and(|v| v.as_i64() == first)).then_some(first)
}

/// Replaces each norm's weight Mul, in place, by the normalization node (its other nodes are left for the
/// dead-node cleanup). Node indices do not move.
pub fn apply(g: &mut GraphProto, norms: &[NormFusion], opset: i64) {
    for f in norms {
        let x = match &f.recast {
            Some((at, name, to)) => {
                g.node[*at] = node("Cast", "", format!("{name}_rmsnorm_input"), vec![f.x.clone()], vec![name.clone()], vec![a_int("to", *to as i64)]);
                name.clone()
            }
            None => f.x.clone(),
        };
        let op = if opset >= 23 { "RMSNormalization" } else { "SimplifiedLayerNormalization" };
        let attrs = vec![a_int("axis", -1), a_float("epsilon", f.epsilon), a_int("stash_type", 1)];
        g.node[f.replaces] = node(op, "", format!("{}_rmsnorm", f.output), vec![x, f.scale.clone()], vec![f.output.clone()], attrs);
    }
}
