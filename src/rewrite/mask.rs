//! Mask analysis: what do the mask terms applied to the scores compute?
//!
//! Every term is evaluated under the probes (several batch/sequence sizes, random 0/1 patterns in the
//! integer inputs) and compared, cell by cell, with the fast paths of the op:
//! `causal` (bottom-right), `window_left`, a key-padding mask taken from a [B, Skv] 0/1 input, or key
//! lengths from a [B] input. Additive terms count as "masked" where ≤ -1e4 (or -inf) and "attend" where
//! exactly 0; anything else is not binary. If a term's subgraph holds an integer constant as large as the
//! probes' sequence, a probe longer than that constant is added (so a sliding window of 4096 is never
//! mistaken for plain causal); past [`MAX_PROBE_SEQ`] the fast path is not claimed.
//! What cannot be proven this way is passed through unchanged as `attn_mask`.

use std::collections::HashSet;

use super::eval::{bidx, Evaluator};
use super::graph::is_onnx_domain;
use super::probe::{Ctx, MAX_PROBE_SEQ};
use super::tensor::dt;
use super::{MaskSrc, SeqlensSrc};

/// A mask applied to the scores before the softmax.
#[derive(Clone, Debug, PartialEq)]
pub enum Term {
    /// scores + t
    Additive(String),
    /// Where(t, scores, -big): t true = attend.
    Keep(String),
    /// Where(t, -big, scores): t true = masked.
    Drop(String),
}

impl Term {
    pub fn name(&self) -> &str {
        match self {
            Term::Additive(s) | Term::Keep(s) | Term::Drop(s) => s,
        }
    }
}

#[derive(Clone, Debug, Default)]
pub struct Plan {
    pub causal: bool,
    pub window_left: i64,
    pub attn_mask: Option<MaskSrc>,
    pub key_seqlens: Option<SeqlensSrc>,
    pub note: String,
}

/// Below this an additive mask value counts as "masked" (exp underflows to 0 next to any real score).
const MASKED: f64 = -1e4;

#[derive(Clone, Copy, Debug, PartialEq)]
enum Pad<'s> {
    None,
    Keys(&'s str),
    Lengths(&'s str),
}

/// The scores' [B, N, Sq, Skv] under one probe.
pub type ScoresShape<'f> = &'f dyn Fn(&Evaluator) -> Option<Vec<i64>>;

/// Plans the op's mask inputs for `terms` applied to scores of shape `scores` ([B, N, Sq, Skv]).
pub fn plan(ctx: &Ctx, terms: &[Term], scores: ScoresShape) -> Result<Plan, String> {
    if terms.is_empty() {
        return Ok(Plan { window_left: -1, note: "no mask".into(), ..Default::default() });
    }
    let why = match structured(ctx, terms, scores) {
        Ok(p) => return Ok(p),
        Err(why) => why,
    };
    // Binary terms may still give causal/window/lengths while the others (e.g. a relative position
    // bias) are passed through.
    let (binary, other): (Vec<Term>, Vec<Term>) =
        terms.iter().cloned().partition(|t| ctx.evs.iter().all(|e| grid(e, std::slice::from_ref(t), scores).is_ok()));
    if !binary.is_empty() && !other.is_empty() {
        if let (Ok(s), Ok(mut p)) = (structured(ctx, &binary, scores), passthrough(ctx, &other, scores)) {
            if s.attn_mask.is_none() {
                p.causal = s.causal;
                p.window_left = s.window_left;
                p.key_seqlens = s.key_seqlens;
                p.note = format!("{}; other terms passed through as attn_mask", s.note);
                return Ok(p);
            }
        }
    }
    passthrough(ctx, terms, scores).map(|mut p| {
        p.note = format!("attn_mask passed through ({why})");
        p
    })
}

fn passthrough(ctx: &Ctx, terms: &[Term], scores: ScoresShape) -> Result<Plan, String> {
    if terms.len() > 1 {
        // Several additive terms are summed into one additive mask.
        let mut names = vec![];
        let mut maxr = 0;
        for t in terms {
            match t {
                Term::Additive(s) if ctx.evs[0].value(s).map(|v| v.dtype).or_else(|| ctx.gi.elem_type_guess(s)).is_some_and(dt::is_float) => {
                    match ctx.rank(s) {
                        Some(r) if r <= 4 => maxr = maxr.max(r),
                        _ => return Err(format!("rank of mask '{s}' unknown or > 4")),
                    }
                    names.push(s.clone())
                }
                _ => return Err(format!("{} mask terms that are not causal/padding and not all additive", terms.len())),
            }
        }
        return Ok(Plan { window_left: -1, attn_mask: Some(MaskSrc::Sum(names, 4 - maxr)), ..Default::default() });
    }
    let t = &terms[0];
    let r = ctx.rank(t.name()).ok_or_else(|| format!("rank of mask '{}' unknown", t.name()))?;
    let sr = scores(&ctx.evs[0]).ok_or("scores shape unknown")?.len();
    if r > 4 || sr != 4 {
        return Err(format!("mask rank {r} / scores rank {sr}"));
    }
    let et = ctx.evs[0].value(t.name()).map(|v| v.dtype).or_else(|| ctx.gi.elem_type_guess(t.name()));
    let pad = 4 - r;
    let src = match t {
        Term::Additive(s) => {
            if !et.is_some_and(dt::is_float) {
                return Err("additive mask of unknown or non-float type".into());
            }
            if pad == 0 { MaskSrc::Tensor(s.clone()) } else { MaskSrc::ToRank4(s.clone(), pad) }
        }
        Term::Keep(s) => {
            if et != Some(dt::BOOL) {
                return Err("Where condition is not bool".into());
            }
            if pad == 0 { MaskSrc::Tensor(s.clone()) } else { MaskSrc::ToRank4(s.clone(), pad) }
        }
        Term::Drop(s) => {
            if et != Some(dt::BOOL) {
                return Err("Where condition is not bool".into());
            }
            MaskSrc::Not(s.clone(), pad)
        }
    };
    Ok(Plan { window_left: -1, attn_mask: Some(src), ..Default::default() })
}

/// allowed[b][i][j] under one probe, plus (B, Sq, Skv).
struct Grid {
    b: usize,
    sq: usize,
    skv: usize,
    allowed: Vec<bool>,
}

fn grid(ev: &Evaluator, terms: &[Term], scores: ScoresShape) -> Result<Grid, String> {
    let s = scores(ev).ok_or("scores shape not inferable")?;
    if s.len() != 4 {
        return Err("scores are not 4-D".into());
    }
    let (b, sq, skv) = (s[0] as usize, s[2] as usize, s[3] as usize);
    let out = [b, 1, sq, skv];
    let mut allowed = vec![true; b * sq * skv];
    for t in terms {
        let v = ev.value(t.name()).ok_or_else(|| format!("mask '{}' is not computable from shapes, constants and integer inputs", t.name()))?;
        if v.rank() > 4 {
            return Err("mask rank > 4".into());
        }
        let mut vs = v.shape.clone();
        while vs.len() < 4 {
            vs.insert(0, 1);
        }
        if vs[1] != 1 {
            return Err("mask differs per head".into());
        }
        for (k, (&d, &o)) in vs.iter().zip(out.iter()).enumerate() {
            if d != o && d != 1 && k != 1 {
                return Err("mask does not broadcast to the scores".into());
            }
        }
        let idx = bidx(&vs, &out);
        for (cell, &i) in allowed.iter_mut().zip(idx.iter()) {
            let x = v.data[i];
            let ok = match t {
                Term::Additive(_) => {
                    if x == 0.0 {
                        true
                    } else if x <= MASKED {
                        false
                    } else {
                        return Err("additive mask has values other than 0 and large negatives".into());
                    }
                }
                Term::Keep(_) => x != 0.0,
                Term::Drop(_) => x == 0.0,
            };
            *cell &= ok;
        }
    }
    Ok(Grid { b, sq, skv, allowed })
}

fn matches(ev: &Evaluator, g: &Grid, causal: bool, window: Option<i64>, pad: Pad) -> bool {
    let off = g.skv as i64 - g.sq as i64;
    let pv = match pad {
        Pad::None => None,
        Pad::Keys(n) | Pad::Lengths(n) => match ev.probe().values.get(n) {
            Some(v) => Some(v),
            None => return false,
        },
    };
    match (pad, pv) {
        (Pad::Keys(_), Some(v)) if v.shape != [g.b, g.skv] => return false,
        (Pad::Lengths(_), Some(v)) if v.shape != [g.b] => return false,
        _ => {}
    }
    for b in 0..g.b {
        for i in 0..g.sq {
            for j in 0..g.skv {
                let d = i as i64 + off - j as i64; // ≥ 0 on or left of the diagonal
                let mut want = true;
                if causal && d < 0 {
                    want = false;
                }
                if let Some(w) = window {
                    if d > w {
                        want = false;
                    }
                }
                match (pad, pv) {
                    (Pad::Keys(_), Some(v)) if v.data[b * g.skv + j] == 0.0 => want = false,
                    (Pad::Lengths(_), Some(v)) if j as f64 >= v.data[b] => want = false,
                    _ => {}
                }
                if g.allowed[(b * g.sq + i) * g.skv + j] != want {
                    return false;
                }
            }
        }
    }
    true
}

/// The largest integer constant (6 ≤ |c| ≤ 1e7) the terms' subgraphs compute with; sizes enter only
/// through shapes, so a constant this large may be a window length or an offset the probes must exceed.
fn largest_int_constant(ctx: &Ctx, terms: &[Term]) -> i64 {
    let gi = ctx.gi;
    let mut seen = HashSet::new();
    let mut stack: Vec<String> = terms.iter().map(|t| t.name().to_string()).collect();
    let mut best = 0i64;
    let consider = |best: &mut i64, name: &str| {
        if let Some(v) = ctx.evs[0].value(name) {
            if v.numel() <= 16 && !dt::is_float(v.dtype) {
                for &x in &v.data {
                    let a = x.abs();
                    if (6.0..=1e7).contains(&a) {
                        *best = (*best).max(a as i64);
                    }
                }
            }
        }
    };
    while let Some(t) = stack.pop() {
        if !seen.insert(t.clone()) {
            continue;
        }
        if gi.inits.contains_key(t.as_str()) {
            consider(&mut best, &t);
            continue;
        }
        let Some((_, n)) = gi.prod(&t) else { continue };
        if n.op_type == "Constant" {
            consider(&mut best, &t);
            continue;
        }
        if is_onnx_domain(&n.domain) && (n.op_type == "Shape" || n.op_type == "Size") {
            continue;
        }
        for i in &n.input {
            if !i.is_empty() {
                stack.push(i.clone());
            }
        }
    }
    best
}

fn structured(ctx: &Ctx, terms: &[Term], scores: ScoresShape) -> Result<Plan, String> {
    let mut grids = Vec::new();
    for ev in &ctx.evs {
        grids.push(grid(ev, terms, scores)?);
    }
    let big_seq = largest_int_constant(ctx, terms);
    let min_seq = grids.iter().map(|g| g.sq.min(g.skv)).min().unwrap_or(0) as i64;
    let big = if big_seq + 2 > min_seq {
        if big_seq + 2 > MAX_PROBE_SEQ {
            return Err(format!("its subgraph uses the constant {big_seq}, beyond what the probes can cover"));
        }
        let e = ctx.big(big_seq + 2);
        let g = grid(&e, terms, scores)?;
        Some((e, g))
    } else {
        None
    };

    // Candidate padding sources: integer/bool graph inputs of shape [B, Skv] or [B].
    let mut pads = vec![Pad::None];
    for v in &ctx.gi.g.input {
        if let Some(t) = ctx.evs[0].probe().values.get(&v.name) {
            match t.rank() {
                2 => pads.push(Pad::Keys(&v.name)),
                1 => pads.push(Pad::Lengths(&v.name)),
                _ => {}
            }
        }
    }
    let all = |causal: bool, window: Option<i64>, pad: Pad| -> bool {
        ctx.evs.iter().zip(grids.iter()).all(|(e, g)| matches(e, g, causal, window, pad))
            && big.as_ref().is_none_or(|(e, g)| matches(e, g, causal, window, pad))
    };
    // A window candidate: the farthest allowed distance left of the diagonal under the longest probe.
    let window_guess = {
        let (g, _) = match &big {
            Some((_, g)) => (g, ()),
            None => (grids.iter().max_by_key(|g| g.sq).unwrap(), ()),
        };
        let off = g.skv as i64 - g.sq as i64;
        let mut w = -1i64;
        for b in 0..g.b {
            for i in 0..g.sq {
                for j in 0..g.skv {
                    if g.allowed[(b * g.sq + i) * g.skv + j] {
                        w = w.max(i as i64 + off - j as i64);
                    }
                }
            }
        }
        w
    };
    for &pad in &pads {
        for (causal, window) in [(false, None), (true, None), (true, Some(window_guess))] {
            if window.is_some_and(|w| w < 0) {
                continue;
            }
            if !all(causal, window, pad) {
                continue;
            }
            let mut plan = Plan { causal, window_left: window.unwrap_or(-1), ..Default::default() };
            let mut parts = vec![];
            if causal {
                parts.push("causal".to_string());
            }
            if let Some(w) = window {
                parts.push(format!("window_left={w}"));
            }
            match pad {
                Pad::None => {}
                Pad::Keys(n) => {
                    plan.attn_mask = Some(MaskSrc::KeyPadding(n.to_string()));
                    parts.push(format!("key padding from '{n}' → bool attn_mask [B,1,1,Skv]"));
                }
                Pad::Lengths(n) => {
                    plan.key_seqlens = Some(SeqlensSrc::Lengths(n.to_string()));
                    parts.push(format!("key lengths from '{n}' → key_seqlens"));
                }
            }
            if parts.is_empty() {
                parts.push("mask never masks: dropped".into());
            }
            plan.note = parts.join(", ");
            return Ok(plan);
        }
    }
    Err("not causal/window/key-padding".into())
}
