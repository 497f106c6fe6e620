//! A KV cache around a decomposed attention (torch.onnx exports of Hugging Face decoders with
//! `past_key_values`): the keys and values the attention reads are `Concat(past, new)` along the sequence axis
//! of [B, N, S, H] tensors, and those concatenations are the model's present outputs. When both are, and
//! nothing but the attention's own operand chains reads them, the op takes them over: `key`/`value` = the new
//! tokens, `past_key`/`past_value` = the past, its `present_key`/`present_value` outputs produce the very
//! tensors the Concats did (concat mode), and the Concats are dropped. Otherwise the fusion is left as it is
//! (attention over the concatenated tensors: still exact).

use super::graph::{attr_i, is_onnx_domain};
use super::probe::Ctx;
use super::{Fusion, KvFusion, Layout, Src};

/// (concat node, past, new) when `t` is a two-input Concat on axis 2 of rank-4 tensors.
fn cache_concat(ctx: &Ctx, t: &str) -> Option<(usize, String, String)> {
    let (i, n) = ctx.gi.prod(t)?;
    if n.op_type != "Concat" || !is_onnx_domain(&n.domain) || n.input.len() != 2 || ctx.rank(t) != Some(4) {
        return None;
    }
    let axis = attr_i(n, "axis")?;
    if axis != 2 && axis != -2 {
        return None;
    }
    Some((i, n.input[0].clone(), n.input[1].clone()))
}

/// Turns `f` into a concat-mode KV fusion where the pattern allows it (see the module doc).
pub fn absorb(ctx: &Ctx, f: &mut Fusion) {
    if f.kv.is_some() || f.layout != Layout::Bnsh {
        return;
    }
    let (Src::Tensor(kt), Src::Tensor(vt)) = (&f.k, &f.v) else { return };
    let (Some((ki, pk, nk)), Some((vi, pv, nv))) = (cache_concat(ctx, kt), cache_concat(ctx, vt)) else { return };
    let gi = ctx.gi;
    // Present = the Concat output: a graph output, otherwise read only by this attention's operand chain.
    for t in [kt, vt] {
        if !gi.outputs.contains(t.as_str()) || gi.users(t).iter().any(|u| !f.covered.contains(u)) {
            return;
        }
    }
    // The past must be a [B, N, P, H] tensor with the new tokens' batch, heads and head size.
    let same = |a: &str, b: &str| {
        ctx.evs.iter().all(|e| match (e.shape(a), e.shape(b)) {
            (Some(x), Some(y)) => x.len() == 4 && y.len() == 4 && x[0] == y[0] && x[1] == y[1] && x[3] == y[3],
            _ => false,
        })
    };
    if !same(&pk, &nk) || !same(&pv, &nv) {
        return;
    }
    f.kv = Some(KvFusion {
        past_key: pk,
        past_value: pv,
        past_lens_from: None,
        cos_cache: None,
        sin_cache: None,
        position_ids: None,
        rotary_interleaved: false,
        present_key: kt.clone(),
        present_value: vt.clone(),
        drop: vec![ki, vi],
    });
    f.k = Src::Tensor(nk);
    f.v = Src::Tensor(nv);
    f.covered.extend([ki, vi]);
    f.mask_note = format!("{}, KV cache: Concat(past, new) → past/present (concat mode)", f.mask_note);
}
