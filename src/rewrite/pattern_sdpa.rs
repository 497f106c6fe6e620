//! Decomposed attention, as the torch.onnx exporters (dynamo and TorchScript) emit it for eager and SDPA
//! attention: `MatMul(Q, Kᵀ)` → scale (Mul/Div by a constant, or √scale on Q and K) → optional softcap
//! (`c·tanh(x/c)`) → masks (Add, Where) → `Softmax(-1)` → (NaN→0 guard, identity Cast/Dropout) →
//! `MatMul(·, V)` → optional output Transpose. Anchored on each Softmax; matched on structure, constants
//! and shapes only.

use super::graph::{attr_i, is_onnx_domain};
use super::mask::{self, Term};
use super::operand::{self, scalar_operand, Traced, BNHS, BNSH, BSNH};
use super::probe::Ctx;
use super::report::Report;
use super::tensor::dt;
use super::{Fusion, Layout, MaskSrc, Src};

const NAME: &str = "decomposed";

pub fn find(ctx: &Ctx, out: &mut Vec<Fusion>, report: &mut Report) {
    let gi = ctx.gi;
    for (si, s) in gi.g.node.iter().enumerate() {
        if s.op_type != "Softmax" || !is_onnx_domain(&s.domain) {
            continue;
        }
        match match_at(ctx, si) {
            Ok(f) => out.push(f),
            Err(why) => report.skip(NAME, &s.output[0], &why),
        }
    }
}

/// What lies between MatMul(Q, Kᵀ) and the Softmax.
#[derive(Default, Debug)]
struct Scores {
    qk: usize,
    scale: f64,
    softcap: f64,
    terms: Vec<Term>,
    nodes: Vec<usize>,
    casts: usize,
}

fn match_at(ctx: &Ctx, si: usize) -> Result<Fusion, String> {
    let gi = ctx.gi;
    let s = gi.node(si);
    let rank = ctx.rank(&s.input[0]);
    let axis = attr_i(s, "axis").unwrap_or(if gi.opset < 13 { 1 } else { -1 });
    if !(axis == -1 || rank.is_some_and(|r| axis == r as i64 - 1)) {
        return Err(format!("Softmax over axis {axis}, not the last"));
    }

    // Downward: the probabilities feed MatMul(probs, V).
    let mut probs = s.output[0].clone();
    let mut covered = vec![si];
    let mut casts = 0;
    let pv = loop {
        let users = gi.users(&probs);
        if gi.outputs.contains(probs.as_str()) {
            return Err("attention probabilities are a graph output".into());
        }
        // The NaN guard `Where(IsNaN(p), 0, p)` (fully masked rows → 0) may sit beside the main user.
        let main: Vec<usize> = users.iter().copied().filter(|&u| gi.node(u).op_type != "IsNaN").collect();
        if main.len() != 1 {
            return Err(format!("attention probabilities have {} users", main.len()));
        }
        let (ui, u) = (main[0], gi.node(main[0]));
        if !is_onnx_domain(&u.domain) {
            return Err(format!("probabilities go to {}::{}", u.domain, u.op_type));
        }
        match u.op_type.as_str() {
            "MatMul" if u.input[0] == probs => break ui,
            // Casts between float types (mixed-precision softmax); the types are checked below.
            "Cast" if gi.elem_type_guess(&u.output[0]).is_some_and(dt::is_float) => casts += 1,
            "Identity" => {}
            "Dropout" if u.output.len() < 2 || u.output[1].is_empty() || gi.use_count(&u.output[1]) == 0 => {
                let training = u.input.get(2).filter(|t| !t.is_empty()).map(|t| ctx.const_scalar(t));
                if !matches!(training, None | Some(Some(0.0))) {
                    return Err("Dropout in training mode".into());
                }
            }
            "Where" if is_nan_guard(ctx, u, &probs) => {
                covered.push(gi.prod(&u.input[0]).unwrap().0);
            }
            op => return Err(format!("probabilities go to {op}")),
        }
        covered.push(ui);
        probs = u.output[0].clone();
    };
    covered.push(pv);
    let pvn = gi.node(pv);

    // Upward: scores.
    let sc = parse_scores(ctx, &s.input[0], 0).ok_or("no MatMul(Q, Kᵀ) → scale/softcap/mask chain above the Softmax")?;
    covered.extend(sc.nodes.iter().copied());
    let qkn = gi.node(sc.qk);
    let scores = qkn.output[0].clone();
    if ctx.rank(&scores) != Some(4) {
        return Err("scores are not 4-D (or their shape is not inferable)".into());
    }
    for t in [&qkn.input[0], &qkn.input[1], &pvn.input[1]] {
        if ctx.rank(t) != Some(4) {
            return Err("Q/K/V operands are not 4-D".into());
        }
    }

    // Operands.
    let q = operand::trace(ctx, &qkn.input[0], BNSH, false);
    let mut k = operand::trace(ctx, &qkn.input[1], BNHS, true);
    let mut v = operand::trace(ctx, &pvn.input[1], BNSH, true);
    if k.group != v.group {
        k = operand::trace(ctx, &qkn.input[1], BNHS, false);
        v = operand::trace(ctx, &pvn.input[1], BNSH, false);
    }
    for (what, t) in [("query", &q), ("key", &k), ("value", &v)] {
        if !operand::is_perm(&t.labels) {
            return Err(format!("{what} reaches the MatMul through an unsupported axis order"));
        }
    }
    // One element type for q, k, v (the op accumulates in f32 whatever casts the export did around the
    // softmax); the output is cast back when the original attention produced another type.
    let types: Vec<Option<i32>> = [&q.base, &k.base, &v.base].iter().map(|t| gi.elem_type_guess(t)).collect();
    let out_type = gi.elem_type_guess(&pvn.output[0]);
    let absorbed_casts = casts + sc.casts + q.casts + k.casts + v.casts;
    let unknown = types[0].is_none() || out_type.is_none();
    if types.iter().any(|t| *t != types[0]) || (unknown && absorbed_casts > 0) {
        return Err(format!("query/key/value element types differ or are unknown: {types:?}"));
    }
    let out_cast = out_type.filter(|&o| Some(o) != types[0] && types[0].is_some());
    // Shapes must agree with the op's view: same batch, kv heads dividing q heads, same head_dim for q/k.
    check_shapes(ctx, &q, &k, &v)?;
    let scale = sc.scale * q.scale * k.scale;
    let out_scale = v.scale;
    if out_scale != 1.0 {
        // A factor on V scales the output; it cannot be folded into the op.
        v = operand::trace(ctx, &pvn.input[1], BNSH, false);
        if v.scale != 1.0 {
            return Err("value is scaled".into());
        }
    }
    covered.extend(q.nodes.iter().chain(k.nodes.iter()).chain(v.nodes.iter()).copied());

    let plan = mask::plan(ctx, &sc.terms, &|e: &super::eval::Evaluator| e.shape(&scores))?;
    // A mask passed through keeps its element type, which must be the scores' (bool masks aside).
    let passed: Vec<&String> = match &plan.attn_mask {
        Some(MaskSrc::Tensor(m) | MaskSrc::ToRank4(m, _)) => vec![m],
        Some(MaskSrc::Sum(ms, _)) => ms.iter().collect(),
        _ => vec![],
    };
    let t0 = types[0];
    if passed.iter().any(|m| gi.elem_type_guess(m).is_some_and(|e| e != dt::BOOL && Some(e) != t0)) {
        return Err("the mask passed through has another element type than the scores".into());
    }

    // Layout: BSNH when all three come from BSNH tensors and the output is transposed back to BSNH.
    let out_t = &pvn.output[0];
    let out_transpose = (!gi.outputs.contains(out_t.as_str()) && gi.users(out_t).len() == 1)
        .then(|| gi.users(out_t)[0])
        .filter(|&u| {
            let n = gi.node(u);
            n.op_type == "Transpose" && is_onnx_domain(&n.domain) && super::graph::attr_ints(n, "perm") == Some(vec![0, 2, 1, 3])
        });
    let all_bsnh = [&q, &k, &v].iter().all(|t| t.labels == BSNH);
    let (layout, replaces, output) = match out_transpose {
        Some(u) if all_bsnh => (Layout::Bsnh, u, gi.node(u).output[0].clone()),
        _ => (Layout::Bnsh, pv, out_t.clone()),
    };
    let src = |t: &Traced| -> Src {
        match layout {
            Layout::Bsnh => Src::Tensor(t.base.clone()),
            _ => t.bnsh_src(),
        }
    };
    if replaces != pv {
        covered.push(pv);
    }
    Ok(Fusion {
        pattern: NAME,
        kv: None,
        q: src(&q),
        k: src(&k),
        v: src(&v),
        layout,
        scale: Some(scale),
        softcap: sc.softcap,
        causal: plan.causal,
        window_left: plan.window_left,
        window_right: if plan.causal { 0 } else { -1 },
        attn_mask: plan.attn_mask,
        key_seqlens: plan.key_seqlens,
        replaces,
        output,
        out_cast,
        prelude: vec![],
        prelude_inits: vec![],
        mask_note: plan.note,
        covered,
    })
}

fn is_nan_guard(ctx: &Ctx, w: &onnx_protobuf::NodeProto, p: &str) -> bool {
    let gi = ctx.gi;
    w.input.len() == 3
        && w.input[2] == p
        && gi.prod_op(&w.input[0], "IsNaN").is_some_and(|(_, n)| n.input[0] == p)
        && ctx.const_scalar(&w.input[1]) == Some(0.0)
}

fn check_shapes(ctx: &Ctx, q: &Traced, k: &Traced, v: &Traced) -> Result<(), String> {
    let (qs, ks, vs) = (ctx.shapes(&q.base), ctx.shapes(&k.base), ctx.shapes(&v.base));
    let (Some(qs), Some(ks), Some(vs)) = (qs, ks, vs) else {
        return Err("Q/K/V shapes not inferable".into());
    };
    let dims = |s: &[i64], l: &[u8; 4]| -> [i64; 4] {
        // Returns [B, N, S, H] whatever the order.
        let mut o = [0; 4];
        for (i, c) in l.iter().enumerate() {
            o["BNSH".find(*c as char).unwrap()] = s[i];
        }
        o
    };
    for p in 0..qs.len() {
        if qs[p].len() != 4 || ks[p].len() != 4 || vs[p].len() != 4 {
            return Err("Q/K/V are not 4-D".into());
        }
        let (a, b, c) = (dims(&qs[p], &q.labels), dims(&ks[p], &k.labels), dims(&vs[p], &v.labels));
        if a[0] != b[0] || b[0] != c[0] {
            return Err("batch differs between Q, K, V (broadcast batch is not supported)".into());
        }
        if b[1] != c[1] || b[2] != c[2] {
            return Err("key and value differ in heads or length".into());
        }
        if b[1] <= 0 || a[1] % b[1] != 0 {
            return Err("query heads are not a multiple of key/value heads".into());
        }
        if a[3] != b[3] || a[3] > 256 || c[3] > 256 {
            return Err("head_dim mismatch or > 256".into());
        }
    }
    Ok(())
}

/// Walks up from the Softmax input. Order (from the MatMul outward): scale factors, optional softcap,
/// then masks.
fn parse_scores(ctx: &Ctx, t: &str, depth: usize) -> Option<Scores> {
    if depth > 12 {
        return None;
    }
    let gi = ctx.gi;
    let (idx, n) = gi.prod(t)?;
    if !is_onnx_domain(&n.domain) {
        return None;
    }
    let mut r = match n.op_type.as_str() {
        "MatMul" => {
            return Some(Scores { qk: idx, scale: 1.0, softcap: 0.0, terms: vec![], nodes: vec![idx], casts: 0 });
        }
        "Add" => {
            let mut found = None;
            for (a, b) in [(0, 1), (1, 0)] {
                if let Some(mut sc) = parse_scores(ctx, &n.input[a], depth + 1) {
                    sc.terms.push(Term::Additive(n.input[b].clone()));
                    found = Some(sc);
                    break;
                }
            }
            found?
        }
        "Where" => {
            let fill_ok = |f: &str| ctx.const_scalar(f).is_some_and(|v| v <= -1e4);
            if fill_ok(&n.input[2]) {
                let mut sc = parse_scores(ctx, &n.input[1], depth + 1)?;
                sc.terms.push(Term::Keep(n.input[0].clone()));
                sc
            } else if fill_ok(&n.input[1]) {
                let mut sc = parse_scores(ctx, &n.input[2], depth + 1)?;
                sc.terms.push(Term::Drop(n.input[0].clone()));
                sc
            } else {
                return None;
            }
        }
        "Mul" | "Div" => {
            let (x, c) = scalar_operand(ctx, n)?;
            // softcap: c · tanh(x / c)
            if n.op_type == "Mul" {
                if let Some((ti, tn)) = gi.prod_op(&x, "Tanh") {
                    let (inner, ii) = gi.prod(&tn.input[0]).filter(|(_, m)| m.op_type == "Div" || m.op_type == "Mul").map(|(i, m)| (m, i))?;
                    let (y, d) = scalar_operand(ctx, inner)?;
                    let div = if inner.op_type == "Div" { d } else { 1.0 / d };
                    if c > 0.0 && ((div - c) / c).abs() < 1e-6 {
                        let mut sc = parse_scores(ctx, &y, depth + 1)?;
                        if sc.softcap != 0.0 || !sc.terms.is_empty() {
                            return None;
                        }
                        sc.softcap = c;
                        sc.nodes.extend([idx, ti, ii]);
                        return Some(sc);
                    }
                    return None;
                }
            }
            let mut sc = parse_scores(ctx, &x, depth + 1)?;
            if sc.softcap != 0.0 || !sc.terms.is_empty() {
                return None; // a factor after the softcap or the masks is not expressible
            }
            if c == 0.0 || !c.is_finite() {
                return None;
            }
            sc.scale *= if n.op_type == "Mul" { c } else { 1.0 / c };
            sc
        }
        "Cast" | "Identity" => {
            if n.op_type == "Cast"
                && !(gi.elem_type_guess(&n.output[0]).is_some_and(dt::is_float) && gi.elem_type_guess(&n.input[0]).is_some_and(dt::is_float))
            {
                return None;
            }
            let mut sc = parse_scores(ctx, &n.input[0], depth + 1)?;
            sc.casts += (n.op_type == "Cast") as usize;
            sc
        }
        _ => return None,
    };
    r.nodes.push(idx);
    Some(r)
}

