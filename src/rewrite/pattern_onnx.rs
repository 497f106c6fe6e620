//! The standard ONNX `Attention` op (opset 23/24), without KV cache.
//!
//! Mapping (exact cases only):
//! - 4-D Q/K/V ([B, N, S, H]) → layout BNSH (layout Transposes and repeat_kv chains in front are absorbed);
//!   3-D → `num_heads` = q_num_heads.
//! - `scale` copied (default is the same 1/√head_dim); `softcap` copied only without any mask/causal,
//!   because ONNX applies it *after* the mask while FlashAttention applies it before.
//! - `is_causal` (ONNX: upper-left aligned) → `causal` (bottom-right) only where every probe has Sq = Skv.
//! - `attn_mask` analysed like any mask (causal / key padding / window proven, else passed through, its
//!   last axis required to be Skv); `nonpad_kv_seqlen` (opset 24) → `key_seqlens`.
//! - past_key/past_value, or used present_key/present_value/qk_matmul_output → not fused.

use super::eval::Evaluator;
use super::graph::{attr_f, attr_i, is_onnx_domain, opt_input};
use super::mask::{self, Term};
use super::operand::{self, BNSH};
use super::probe::Ctx;
use super::report::Report;
use super::tensor::dt;
use super::{Fusion, Layout, SeqlensSrc, Src};

const NAME: &str = "onnx-Attention";

pub fn find(ctx: &Ctx, out: &mut Vec<Fusion>, report: &mut Report) {
    for (i, n) in ctx.gi.g.node.iter().enumerate() {
        if n.op_type == "Attention" && is_onnx_domain(&n.domain) {
            match match_at(ctx, i) {
                Ok(f) => out.push(f),
                Err(why) => report.skip(NAME, n.output.first().map(|s| s.as_str()).unwrap_or(""), &why),
            }
        }
    }
}

fn match_at(ctx: &Ctx, i: usize) -> Result<Fusion, String> {
    let gi = ctx.gi;
    let n = gi.node(i);
    if opt_input(n, 4).is_some() || opt_input(n, 5).is_some() {
        return Err("has past_key/past_value (KV cache)".into());
    }
    for k in 1..n.output.len() {
        if !n.output[k].is_empty() && gi.use_count(&n.output[k]) > 0 {
            return Err(format!("output {k} (present key/value or qk_matmul_output) is used"));
        }
    }
    let (q, k, v) = (&n.input[0], &n.input[1], &n.input[2]);
    let rank = ctx.rank(q).ok_or("query shape not inferable")?;
    let causal = attr_i(n, "is_causal").unwrap_or(0) != 0;
    let softcap = attr_f(n, "softcap").unwrap_or(0.0) as f64;
    let mut scale = attr_f(n, "scale").map(|s| s as f64).filter(|&s| s != 0.0);
    let (qs, ks) = (ctx.shapes(q).ok_or("query shape not inferable")?, ctx.shapes(k).ok_or("key shape not inferable")?);
    let (layout, qsrc, ksrc, vsrc, covered) = match rank {
        4 => {
            let tq = operand::trace(ctx, q, BNSH, false);
            let mut tk = operand::trace(ctx, k, BNSH, true);
            let mut tv = operand::trace(ctx, v, BNSH, true);
            if tk.group != tv.group {
                tk = operand::trace(ctx, k, BNSH, false);
                tv = operand::trace(ctx, v, BNSH, false);
            }
            // Absorb only layout/repeat steps; a scale found on Q/K is folded in when the op's own scale
            // is explicit (the default depends on head_dim, which the transposes do not change).
            let sc = tq.scale * tk.scale;
            if sc != 1.0 {
                match scale {
                    Some(s) => scale = Some(s * sc),
                    None => {
                        let h = qs[0][3] as f64;
                        scale = Some(sc / h.sqrt());
                    }
                }
            }
            if tv.scale != 1.0 {
                tv = operand::trace(ctx, v, BNSH, false);
                if tv.scale != 1.0 {
                    return Err("value is scaled".into());
                }
            }
            for t in [&tq, &tk, &tv] {
                if t.casts > 0 {
                    return Err("an input reaches the op through a Cast".into());
                }
                if !operand::is_perm(&t.labels) {
                    return Err("an input reaches the op through an unsupported axis order".into());
                }
            }
            let src = |t: &operand::Traced| t.bnsh_src();
            let cov: Vec<usize> = tq.nodes.iter().chain(tk.nodes.iter()).chain(tv.nodes.iter()).copied().collect();
            (Layout::Bnsh, src(&tq), src(&tk), src(&tv), cov)
        }
        3 => {
            let h = attr_i(n, "q_num_heads").ok_or("3-D inputs without q_num_heads")?;
            (Layout::ThreeD(h), Src::Tensor(q.clone()), Src::Tensor(k.clone()), Src::Tensor(v.clone()), vec![])
        }
        r => return Err(format!("rank-{r} inputs")),
    };
    // [B, Nq, Sq, Skv] under a probe.
    let q_heads_3d = attr_i(n, "q_num_heads").unwrap_or(1);
    let scores = move |e: &Evaluator| -> Option<Vec<i64>> {
        let (a, b) = (e.shape(q)?, e.shape(k)?);
        match (a.len(), b.len()) {
            (4, 4) => Some(vec![a[0], a[1], a[2], b[2]]),
            (3, 3) => Some(vec![a[0], q_heads_3d, a[1], b[1]]),
            _ => None,
        }
    };
    let seq_q_eq_kv = ctx.evs.iter().all(|e| scores(e).is_some_and(|s| s[2] == s[3]));
    let _ = (&qs, &ks);
    if causal && !seq_q_eq_kv {
        return Err("is_causal with query and key lengths that may differ (ONNX aligns top-left)".into());
    }
    let mut terms = vec![];
    if let Some(m) = opt_input(n, 3) {
        let et = ctx.evs[0].value(m).map(|t| t.dtype).or_else(|| gi.elem_type_guess(m));
        // The op's mask must cover all keys.
        for e in &ctx.evs {
            let (Some(ms), Some(ss)) = (e.shape(m), scores(e)) else { return Err("mask shape not inferable".into()) };
            if ms.last() != ss.last() && ms.last() != Some(&1) {
                return Err("attn_mask is shorter than the keys".into());
            }
        }
        terms.push(if et == Some(dt::BOOL) { Term::Keep(m.clone()) } else { Term::Additive(m.clone()) });
    }
    if softcap != 0.0 && (causal || !terms.is_empty()) {
        return Err("softcap together with a mask (ONNX caps after masking; FlashAttention before)".into());
    }
    let plan = mask::plan(ctx, &terms, &scores)?;
    let mut key_seqlens = plan.key_seqlens.clone();
    if let Some(l) = opt_input(n, 6) {
        if key_seqlens.is_some() {
            return Err("both a lengths-like mask and nonpad_kv_seqlen".into());
        }
        key_seqlens = Some(SeqlensSrc::Lengths(l.clone()));
    }
    let causal_all = causal || plan.causal;
    let mut note = plan.note.clone();
    if causal {
        note = format!("is_causal → causal; {note}");
    }
    if opt_input(n, 6).is_some() {
        note += "; nonpad_kv_seqlen → key_seqlens";
    }
    Ok(Fusion {
        pattern: NAME,
        kv: None,
        q: qsrc,
        k: ksrc,
        v: vsrc,
        layout,
        scale,
        softcap,
        causal: causal_all,
        window_left: plan.window_left,
        window_right: if causal_all { 0 } else { -1 },
        attn_mask: plan.attn_mask,
        key_seqlens,
        replaces: i,
        output: n.output[0].clone(),
        out_cast: None,
        prelude: vec![],
        prelude_inits: vec![],
        mask_note: note,
        covered,
    })
}
