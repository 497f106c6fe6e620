//! Tracing a MatMul operand of the attention (Q, Kᵀ or V) back to the tensor the fused op should read:
//! through layout Transposes, scalar scale factors (Mul/Div by a constant, e.g. √scale applied to Q and K
//! separately) and the GQA `repeat_kv` chain (Unsqueeze → Expand → Reshape, or a Gather that repeats
//! heads), recording what was absorbed.

use super::graph::{attr_i, attr_ints, is_onnx_domain};
use super::probe::Ctx;
use super::tensor::dt;

/// The meaning of each axis of a 4-D tensor: B(atch), N (heads), S (sequence), H (head dim).
pub type Labels = [u8; 4];
pub const BNSH: Labels = *b"BNSH";
pub const BSNH: Labels = *b"BSNH";
pub const BNHS: Labels = *b"BNHS";

#[derive(Clone, Debug)]
pub struct Traced {
    /// The earliest tensor reached and the meaning of its axes.
    pub base: String,
    pub labels: Labels,
    /// A tensor on the path holding exactly the base's data in BNSH order (no scale/repeat after it).
    pub bnsh: Option<String>,
    /// Product of the absorbed scalar factors.
    pub scale: f64,
    /// Heads repeat factor absorbed (1 = none).
    pub group: i64,
    /// Float Casts absorbed.
    pub casts: usize,
    /// Nodes the trace walked through.
    pub nodes: Vec<usize>,
}

impl Traced {
    /// The op's input in BNSH order: an existing tensor, or the base transposed.
    pub fn bnsh_src(&self) -> super::Src {
        match &self.bnsh {
            Some(b) => super::Src::Tensor(b.clone()),
            None => super::Src::Transposed(self.base.clone(), to_bnsh(&self.labels)),
        }
    }
}

/// The Transpose perm taking a tensor whose axes mean `l` to BNSH order.
pub fn to_bnsh(l: &Labels) -> Vec<i64> {
    BNSH.iter().map(|c| l.iter().position(|x| x == c).unwrap() as i64).collect()
}

/// Whether `l` is an order of B, N, S, H.
pub fn is_perm(l: &Labels) -> bool {
    BNSH.iter().all(|c| l.contains(c))
}

/// Walks up from `t`, whose axes mean `labels`.
pub fn trace(ctx: &Ctx, t: &str, labels: Labels, absorb_repeat: bool) -> Traced {
    let gi = ctx.gi;
    let mut cur = t.to_string();
    let mut lab = labels;
    let mut scale = 1.0;
    let mut group = 1;
    let mut casts = 0;
    let mut nodes = vec![];
    let mut bnsh = (lab == BNSH).then(|| cur.clone());
    for _ in 0..16 {
        let Some((idx, n)) = gi.prod(&cur) else { break };
        if !is_onnx_domain(&n.domain) {
            break;
        }
        match n.op_type.as_str() {
            "Transpose" => {
                let Some(p) = attr_ints(n, "perm") else { break };
                if p.len() != 4 {
                    break;
                }
                let mut nl = [0u8; 4];
                for i in 0..4 {
                    nl[p[i] as usize] = lab[i];
                }
                lab = nl;
                cur = n.input[0].clone();
            }
            "Mul" | "Div" => {
                let Some((x, c)) = scalar_operand(ctx, n) else { break };
                if c == 0.0 || !c.is_finite() {
                    break;
                }
                scale *= if n.op_type == "Mul" { c } else { 1.0 / c };
                cur = x;
                bnsh = None;
            }
            "Reshape" if swap_last_two(ctx, &cur).is_some() => {
                let (x, mut ns) = swap_last_two(ctx, &cur).unwrap();
                lab.swap(2, 3);
                nodes.append(&mut ns);
                cur = x;
            }
            "Reshape" | "Gather" if absorb_repeat && lab == BNSH => match repeat_kv(ctx, &cur) {
                Some((x, g, mut ns)) => {
                    group *= g;
                    nodes.append(&mut ns);
                    cur = x;
                    bnsh = None;
                }
                None => break,
            },
            "Identity" => cur = n.input[0].clone(),
            // Casts between float types (an fp16 tensor upcast for the attention math): absorbed; the
            // caller checks that q, k and v end up in one type.
            "Cast" if gi.elem_type_guess(&n.output[0]).is_some_and(dt::is_float)
                && gi.elem_type_guess(&n.input[0]).is_some_and(dt::is_float) =>
            {
                cur = n.input[0].clone();
                bnsh = None;
                casts += 1;
            }
            _ => break,
        }
        nodes.push(idx);
        if lab == BNSH && bnsh.is_none() {
            bnsh = Some(cur.clone());
        }
    }
    Traced { base: cur, labels: lab, bnsh, scale, group, casts, nodes }
}

/// Recognizes `t` = Reshape(Transpose(Reshape(x, [a·b, c, d]), [0, 2, 1]), [a, b, d, c]), i.e. x with its
/// last two axes swapped (how the dynamo exporter transposes K for SDPA). Returns (x, nodes).
fn swap_last_two(ctx: &Ctx, t: &str) -> Option<(String, Vec<usize>)> {
    let gi = ctx.gi;
    let (r2i, r2) = gi.prod_op(t, "Reshape")?;
    let (ti, tr) = gi.prod_op(&r2.input[0], "Transpose")?;
    if attr_ints(tr, "perm")? != [0, 2, 1] {
        return None;
    }
    let (r1i, r1) = gi.prod_op(&tr.input[0], "Reshape")?;
    let x = &r1.input[0];
    let (sx, s1, s2) = (ctx.shapes(x)?, ctx.shapes(&r1.output[0])?, ctx.shapes(t)?);
    for k in 0..sx.len() {
        let (x4, m3, o4) = (&sx[k], &s1[k], &s2[k]);
        if x4.len() != 4 || m3.len() != 3 || o4.len() != 4 {
            return None;
        }
        if m3[..] != [x4[0] * x4[1], x4[2], x4[3]] || o4[..] != [x4[0], x4[1], x4[3], x4[2]] {
            return None;
        }
    }
    Some((x.clone(), vec![r2i, ti, r1i]))
}

/// Recognizes `t` = repeat of the heads axis of some x [B, Nkv, S, H] so that head h of `t` is head
/// h / g of x. Returns (x, g, nodes). Checked on every probe's shapes.
fn repeat_kv(ctx: &Ctx, t: &str) -> Option<(String, i64, Vec<usize>)> {
    let gi = ctx.gi;
    let (ri, r) = gi.prod(t)?;
    if r.op_type == "Gather" {
        // x[:, idx] with idx = [0,0,..,1,1,..] (repeat_interleave).
        if attr_i(r, "axis").unwrap_or(0) != 1 {
            return None;
        }
        let idx = ctx.evs[0].value(&r.input[1])?;
        if idx.rank() != 1 || ctx.evs.iter().any(|e| e.value(&r.input[1]).as_deref() != Some(&*idx)) {
            return None;
        }
        let x = &r.input[0];
        let nkv = ctx.shapes(x)?[0].get(1).copied()?;
        let n = idx.numel() as i64;
        if nkv <= 0 || n % nkv != 0 {
            return None;
        }
        let g = n / nkv;
        if idx.data.iter().enumerate().any(|(i, &v)| v as i64 != i as i64 / g) {
            return None;
        }
        return Some((x.clone(), g, vec![ri]));
    }
    // Reshape(Expand(Unsqueeze(x, 2), [B, Nkv, g, S, H]), [B, Nkv·g, S, H])
    let (ei, e) = gi.prod_op(&r.input[0], "Expand")?;
    let (ui, u) = gi.prod_op(&e.input[0], "Unsqueeze")?;
    let x = &u.input[0];
    let (sx, st) = (ctx.shapes(x)?, ctx.shapes(t)?);
    let (su, se) = (ctx.shapes(&e.input[0])?, ctx.shapes(&r.input[0])?);
    let mut g = None;
    for k in 0..sx.len() {
        let (x4, u5, e5, t4) = (&sx[k], &su[k], &se[k], &st[k]);
        if x4.len() != 4 || u5.len() != 5 || e5.len() != 5 || t4.len() != 4 {
            return None;
        }
        let ok_u = u5[..2] == x4[..2] && u5[2] == 1 && u5[3..] == x4[2..];
        let ok_e = e5[..2] == x4[..2] && e5[3..] == x4[2..];
        let ok_t = t4[0] == x4[0] && t4[1] == x4[1] * e5[2] && t4[2..] == x4[2..];
        if !(ok_u && ok_e && ok_t) {
            return None;
        }
        if *g.get_or_insert(e5[2]) != e5[2] {
            return None;
        }
    }
    Some((x.clone(), g?, vec![ri, ei, ui]))
}

/// For a binary Mul/Div node with one operand a constant one-element tensor of rank ≤ 4 (so it cannot
/// change the 4-D shape of the other), returns (other operand, constant). For Div the constant must be
/// the divisor.
pub fn scalar_operand(ctx: &Ctx, n: &onnx_protobuf::NodeProto) -> Option<(String, f64)> {
    if n.input.len() != 2 {
        return None;
    }
    let small = |t: &str| ctx.evs[0].value(t).is_some_and(|v| v.rank() <= 4);
    if let Some(c) = ctx.const_scalar(&n.input[1]).filter(|_| small(&n.input[1])) {
        return Some((n.input[0].clone(), c));
    }
    if n.op_type == "Mul" {
        if let Some(c) = ctx.const_scalar(&n.input[0]).filter(|_| small(&n.input[0])) {
            return Some((n.input[1].clone(), c));
        }
    }
    None
}
