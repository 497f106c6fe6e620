//! ONNX Runtime's `com.microsoft` attention ops, where the mapping is exact:
//!
//! - `MultiHeadAttention` with separate 3-D query/key/value, no bias (KV cache: below): `num_heads`, `scale`
//!   copied; `unidirectional` → `causal` (only where every probe has Sq = Skv); `key_padding_mask` [B]
//!   (key lengths) → `key_seqlens`, [B, Skv] (1 = keep) → bool `attn_mask`; `attention_bias` → additive
//!   `attn_mask` (not together with a [B, Skv] key_padding_mask).
//! - `Attention` (the packed form ONNX Runtime's transformer optimizer produces) without past or
//!   in-op rotary: its projection is unpacked (`MatMul` + bias `Add` + `Split` by `qkv_hidden_sizes`) in
//!   front of the op; `unidirectional` → `causal`; `mask_index` [B] (key lengths) → `key_seqlens`,
//!   [B, S] (1 = keep) → bool `attn_mask`; `attention_bias` → additive `attn_mask`.
//! - `MultiHeadAttention` with past_key/past_value (3-D query/key/value, no past_sequence_length): the op's
//!   concat mode, present outputs taken over;
//! - `GroupQueryAttention` without smooth softmax, head sink or bias, and with `local_window_size` = -1:
//!   causal, `scale`/`softcap` copied; packed QKV (key/value absent) split in front of the op; without KV cache `key_seqlens` = seqlens_k + 1; with past_key/
//!   past_value the op's shared-buffer mode (past_seqlens = max(seqlens_k + 1 − new, 0), present outputs
//!   taken over), rotary (`do_rotary`, cos/sin caches, position_ids, interleaving) inside the op.
//!
//! MultiHeadAttention masks by adding `mask_filter_value` (-10000) while FlashAttention excludes keys
//! exactly; both agree on every row that has at least one visible key.

use super::graph::{attr_f, attr_i, opt_input};
use super::probe::Ctx;
use super::report::Report;
use super::tensor::dt;
use super::{Fusion, KvFusion, Layout, MaskSrc, SeqlensSrc, Src};

pub fn find(ctx: &Ctx, out: &mut Vec<Fusion>, report: &mut Report) {
    for (i, n) in ctx.gi.g.node.iter().enumerate() {
        if n.domain != "com.microsoft" {
            continue;
        }
        let r = match n.op_type.as_str() {
            "MultiHeadAttention" => mha(ctx, i),
            "GroupQueryAttention" => gqa(ctx, i),
            "Attention" => ms_attention(ctx, i),
            _ => continue,
        };
        let pat = match n.op_type.as_str() {
            "MultiHeadAttention" => "ms-MultiHeadAttention",
            "GroupQueryAttention" => "ms-GroupQueryAttention",
            _ => "ms-Attention",
        };
        match r {
            Ok(f) => out.push(f),
            Err(why) => report.skip(pat, n.output.first().map(|s| s.as_str()).unwrap_or(""), &why),
        }
    }
}

fn extra_outputs_unused(ctx: &Ctx, n: &onnx_protobuf::NodeProto) -> Result<(), String> {
    for k in 1..n.output.len() {
        if !n.output[k].is_empty() && ctx.gi.use_count(&n.output[k]) > 0 {
            return Err(format!("output {k} (present key/value or qk output) is used"));
        }
    }
    Ok(())
}

fn same_len(ctx: &Ctx, q: &str, k: &str) -> bool {
    ctx.evs.iter().all(|e| match (e.shape(q), e.shape(k)) {
        (Some(a), Some(b)) => a.len() == 3 && b.len() == 3 && a[1] == b[1],
        _ => false,
    })
}

/// [`base_fusion`] for a node whose key/value inputs may be absent (set them afterwards).
fn base_fusion_q(pattern: &'static str, ctx: &Ctx, i: usize, heads: i64) -> Fusion {
    let n = ctx.gi.node(i);
    let q = Src::Tensor(n.input[0].clone());
    Fusion { q: q.clone(), k: q.clone(), v: q, ..base_fusion_any(pattern, ctx, i, heads) }
}

fn base_fusion(pattern: &'static str, ctx: &Ctx, i: usize, heads: i64) -> Fusion {
    let n = ctx.gi.node(i);
    Fusion { k: Src::Tensor(n.input[1].clone()), v: Src::Tensor(n.input[2].clone()), ..base_fusion_any(pattern, ctx, i, heads) }
}

fn base_fusion_any(pattern: &'static str, ctx: &Ctx, i: usize, heads: i64) -> Fusion {
    let n = ctx.gi.node(i);
    Fusion {
        pattern,
        kv: None,
        q: Src::Tensor(n.input[0].clone()),
        k: Src::Tensor(n.input[0].clone()),
        v: Src::Tensor(n.input[0].clone()),
        layout: Layout::ThreeD(heads),
        scale: attr_f(n, "scale").map(|s| s as f64).filter(|&s| s != 0.0),
        softcap: 0.0,
        causal: false,
        window_left: -1,
        window_right: -1,
        attn_mask: None,
        key_seqlens: None,
        replaces: i,
        output: n.output[0].clone(),
        out_cast: None,
        prelude: vec![],
        prelude_inits: vec![],
        mask_note: String::new(),
        covered: vec![],
    }
}

fn mha(ctx: &Ctx, i: usize) -> Result<Fusion, String> {
    let n = ctx.gi.node(i);
    let heads = attr_i(n, "num_heads").ok_or("no num_heads")?;
    if opt_input(n, 1).is_none() || opt_input(n, 2).is_none() {
        return Err("packed QKV / KV input".into());
    }
    if opt_input(n, 3).is_some() {
        return Err("has a projection bias input".into());
    }
    if opt_input(n, 8).is_some() || opt_input(n, 9).is_some() {
        return Err("past_sequence_length / cache_indirection (shared buffer, beam search) inputs".into());
    }
    let past = match (opt_input(n, 6), opt_input(n, 7)) {
        (None, None) => None,
        (Some(k), Some(v)) => Some((k.clone(), v.clone())),
        _ => return Err("only one of past_key/past_value".into()),
    };
    if past.is_none() {
        extra_outputs_unused(ctx, n)?;
    } else if n.output.get(3).is_some_and(|o| !o.is_empty() && ctx.gi.use_count(o) > 0) {
        return Err("qk output is used".into());
    }
    for t in 0..3 {
        if ctx.rank(&n.input[t]) != Some(3) {
            return Err("query/key/value are not all 3-D".into());
        }
    }
    let mut f = base_fusion("ms-MultiHeadAttention", ctx, i, heads);
    let mut notes = vec![];
    if attr_i(n, "unidirectional").unwrap_or(0) != 0 {
        if !same_len(ctx, &n.input[0], &n.input[1]) {
            return Err("unidirectional with query and key lengths that may differ".into());
        }
        f.causal = true;
        f.window_right = 0;
        notes.push("unidirectional → causal".to_string());
    }
    if let Some(m) = opt_input(n, 4) {
        let r = ctx.rank(m).ok_or("key_padding_mask shape unknown")?;
        let et = ctx.gi.elem_type_guess(m);
        match (r, et) {
            (1, Some(dt::INT32)) => {
                f.key_seqlens = Some(SeqlensSrc::Lengths(m.clone()));
                notes.push("key_padding_mask [B] → key_seqlens".into());
            }
            (2, Some(dt::INT32)) => {
                f.attn_mask = Some(MaskSrc::KeyPadding(m.clone()));
                notes.push("key_padding_mask [B, Skv] → bool attn_mask".into());
            }
            _ => return Err("key_padding_mask of a form other than int32 [B] or [B, Skv]".into()),
        }
    }
    if let Some(b) = opt_input(n, 5) {
        if f.attn_mask.is_some() {
            return Err("attention_bias together with a [B, Skv] key_padding_mask".into());
        }
        let r = ctx.rank(b).ok_or("attention_bias shape unknown")?;
        f.attn_mask = Some(if r == 4 { MaskSrc::Tensor(b.clone()) } else { MaskSrc::ToRank4(b.clone(), 4 - r) });
        notes.push("attention_bias → additive attn_mask".into());
    }
    if let Some((past_key, past_value)) = past {
        // present = past ++ new over [B, N, S, H]: the op's concat mode; the mask covers past + new keys.
        let out = |k: usize| n.output.get(k).filter(|o| !o.is_empty()).cloned().unwrap_or_default();
        f.kv = Some(KvFusion {
            past_key,
            past_value,
            past_lens_from: None,
            cos_cache: None,
            sin_cache: None,
            position_ids: None,
            rotary_interleaved: false,
            present_key: out(1),
            present_value: out(2),
            drop: vec![],
        });
        notes.push("KV cache: past ++ new → present (concat mode)".into());
    }
    f.mask_note = if notes.is_empty() { "no mask".into() } else { notes.join(", ") };
    Ok(f)
}

/// GroupQueryAttention's packed form (query = [B, S, (heads + 2·kv_heads)·H], key/value absent, as ORT
/// GenAI's model builder emits): a `Split` along the last axis in front of the op. Returns the prelude and
/// the q/k/v tensor names.
fn unpack_qkv(ctx: &Ctx, n: &onnx_protobuf::NodeProto, heads: i64) -> Result<(Vec<onnx_protobuf::NodeProto>, Vec<onnx_protobuf::TensorProto>, [String; 3]), String> {
    use onnx_protobuf::{attribute_proto::AttributeType, AttributeProto, NodeProto};
    let gi = ctx.gi;
    let kv_heads = attr_i(n, "kv_num_heads").ok_or("packed QKV without kv_num_heads")?;
    let shapes = ctx.shapes(&n.input[0]).ok_or("packed QKV shape unknown")?;
    let w = shapes[0].last().copied().unwrap_or(-1);
    if shapes.iter().any(|s| s.len() != 3 || s[2] != w) || w <= 0 || w % (heads + 2 * kv_heads) != 0 {
        return Err("packed QKV width unknown or not (num_heads + 2·kv_num_heads)·head_size".into());
    }
    let hd = w / (heads + 2 * kv_heads);
    let base = format!("{}/flashattn_qkv", n.output[0]);
    let taken = |t: &str| gi.producer.contains_key(t) || gi.inits.contains_key(t) || gi.inputs.contains_key(t);
    let name = |suffix: &str| -> Result<String, String> {
        let t = format!("{base}/{suffix}");
        if taken(&t) { Err(format!("tensor name {t} already in use")) } else { Ok(t) }
    };
    let (sizes, q, k, v) = (name("split_sizes")?, name("q")?, name("k")?, name("v")?);
    let mut axis = AttributeProto::new();
    axis.name = "axis".into();
    axis.type_ = AttributeType::INT.into();
    axis.i = 2;
    let mut split = NodeProto::new();
    split.op_type = "Split".into();
    split.name = format!("{base}/Split");
    split.input = vec![n.input[0].clone(), sizes.clone()];
    split.output = vec![q.clone(), k.clone(), v.clone()];
    split.attribute = vec![axis];
    let init = super::tensor::make_i64(&sizes, &[3], &[heads * hd, kv_heads * hd, kv_heads * hd]);
    Ok((vec![split], vec![init], [q, k, v]))
}

fn gqa(ctx: &Ctx, i: usize) -> Result<Fusion, String> {
    let n = ctx.gi.node(i);
    let heads = attr_i(n, "num_heads").ok_or("no num_heads")?;
    let packed = match (opt_input(n, 1), opt_input(n, 2)) {
        (Some(_), Some(_)) => false,
        (None, None) => true,
        _ => return Err("only one of key/value".into()),
    };
    let past = match (opt_input(n, 3), opt_input(n, 4)) {
        (None, None) => None,
        (Some(k), Some(v)) => Some((k.clone(), v.clone())),
        _ => return Err("only one of past_key/past_value".into()),
    };
    let rotary = attr_i(n, "do_rotary").unwrap_or(0) != 0;
    if past.is_none() && (rotary || opt_input(n, 7).is_some() || opt_input(n, 9).is_some()) {
        return Err("rotary embedding inside the op without a KV cache".into());
    }
    if attr_i(n, "smooth_softmax").unwrap_or(0) != 0 || opt_input(n, 11).is_some() {
        return Err("smooth softmax / head sink".into());
    }
    if opt_input(n, 10).is_some() {
        return Err("attention_bias".into());
    }
    if attr_i(n, "local_window_size").unwrap_or(-1) != -1 {
        return Err("local_window_size (sliding window) is not mapped".into());
    }
    if past.is_none() {
        extra_outputs_unused(ctx, n)?;
    } else if n.output.get(3).is_some_and(|o| !o.is_empty() && ctx.gi.use_count(o) > 0) {
        return Err("output_qk is used".into());
    }
    if !packed && !same_len(ctx, &n.input[0], &n.input[1]) {
        return Err("query and key lengths may differ".into());
    }
    let seqlens = opt_input(n, 5).ok_or("no seqlens_k")?;
    let mut f = if packed {
        let (prelude, inits, [q, k, v]) = unpack_qkv(ctx, n, heads)?;
        let mut f = Fusion { k: Src::Tensor(String::new()), v: Src::Tensor(String::new()), ..base_fusion_q("ms-GroupQueryAttention", ctx, i, heads) };
        (f.q, f.k, f.v) = (Src::Tensor(q), Src::Tensor(k), Src::Tensor(v));
        f.prelude = prelude;
        f.prelude_inits = inits;
        f
    } else {
        base_fusion("ms-GroupQueryAttention", ctx, i, heads)
    };
    f.causal = true;
    f.window_right = 0;
    f.softcap = attr_f(n, "softcap").unwrap_or(0.0) as f64;
    let Some((past_key, past_value)) = past else {
        f.key_seqlens = Some(SeqlensSrc::LengthsMinusOne(seqlens.clone()));
        f.mask_note = "causal, seqlens_k + 1 → key_seqlens".into();
        return Ok(f);
    };
    // With past: GQA's seqlens_k + 1 is each row's total; the new tokens go at total − new (0 on the first
    // prompt, whose right padding only later pad rows see). That is the op's shared-buffer mode, exact when
    // past is a buffer of capacity ≥ total (ORT GenAI's past_present_share_buffer).
    let (cos, sin) = if rotary {
        let c = opt_input(n, 7).ok_or("do_rotary without cos_cache")?;
        let s = opt_input(n, 8).ok_or("do_rotary without sin_cache")?;
        (Some(c.clone()), Some(s.clone()))
    } else {
        (None, None)
    };
    let out = |k: usize| n.output.get(k).filter(|o| !o.is_empty()).cloned().unwrap_or_default();
    f.kv = Some(KvFusion {
        past_key,
        past_value,
        past_lens_from: Some((seqlens.clone(), n.input[0].clone())),
        cos_cache: cos,
        sin_cache: sin,
        position_ids: if rotary { opt_input(n, 9).cloned() } else { None },
        rotary_interleaved: attr_i(n, "rotary_interleaved").unwrap_or(0) != 0,
        present_key: out(1),
        present_value: out(2),
        drop: vec![],
    });
    f.mask_note = format!(
        "causal, KV cache in shared-buffer mode: past_seqlens = max(seqlens_k + 1 − new, 0){}",
        if rotary { ", rotary inside the op" } else { "" }
    );
    Ok(f)
}

fn ms_attention(ctx: &Ctx, i: usize) -> Result<Fusion, String> {
    use onnx_protobuf::{attribute_proto::AttributeType, AttributeProto, NodeProto};
    let gi = ctx.gi;
    let n = gi.node(i);
    let heads = attr_i(n, "num_heads").ok_or("no num_heads")?;
    if opt_input(n, 4).is_some() || opt_input(n, 6).is_some() {
        return Err("has past state".into());
    }
    if attr_i(n, "do_rotary").unwrap_or(0) != 0 {
        return Err("rotary embedding inside the op".into());
    }
    extra_outputs_unused(ctx, n)?;
    let (x, w) = (&n.input[0], &n.input[1]);
    if ctx.rank(x) != Some(3) {
        return Err("input is not 3-D".into());
    }
    let ws = ctx.shapes(w).ok_or("weights shape unknown")?;
    if ws[0].len() != 2 {
        return Err("weights are not 2-D".into());
    }
    let total = ws[0][1];
    let sizes = match super::graph::attr_ints(n, "qkv_hidden_sizes") {
        Some(s) if s.len() == 3 => s,
        Some(_) => return Err("qkv_hidden_sizes does not have 3 entries".into()),
        None if total % 3 == 0 => vec![total / 3; 3],
        None => return Err("weights width not divisible by 3".into()),
    };
    if sizes.iter().sum::<i64>() != total || sizes[0] != sizes[1] || sizes[0] % heads != 0 || sizes[2] % heads != 0 {
        return Err("qkv_hidden_sizes inconsistent with the weights / num_heads".into());
    }
    // Fresh, unused tensor names for the unpacked projection.
    let base = format!("{}/flashattn_qkv", n.output[0]);
    let taken = |t: &str| gi.producer.contains_key(t) || gi.inits.contains_key(t) || gi.inputs.contains_key(t);
    let name = |suffix: &str| -> Result<String, String> {
        let t = format!("{base}/{suffix}");
        if taken(&t) { Err(format!("tensor name {t} already in use")) } else { Ok(t) }
    };
    let mk = |op: &str, ins: Vec<String>, outs: Vec<String>, attrs: Vec<AttributeProto>| {
        let mut m = NodeProto::new();
        m.op_type = op.into();
        m.name = format!("{}/{op}", base);
        m.input = ins;
        m.output = outs;
        m.attribute = attrs;
        m
    };
    let mut prelude = vec![mk("MatMul", vec![x.clone(), w.clone()], vec![name("proj")?], vec![])];
    let mut packed = name("proj")?;
    if let Some(b) = opt_input(n, 2) {
        prelude.push(mk("Add", vec![packed.clone(), b.clone()], vec![name("proj_bias")?], vec![]));
        packed = name("proj_bias")?;
    }
    let split_sizes = name("split_sizes")?;
    let (q, k, v) = (name("q")?, name("k")?, name("v")?);
    let mut axis = AttributeProto::new();
    axis.name = "axis".into();
    axis.type_ = AttributeType::INT.into();
    axis.i = 2;
    prelude.push(mk("Split", vec![packed, split_sizes.clone()], vec![q.clone(), k.clone(), v.clone()], vec![axis]));
    let inits = vec![super::tensor::make_i64(&split_sizes, &[3], &sizes)];

    let mut f = base_fusion("ms-Attention", ctx, i, heads);
    f.q = Src::Tensor(q);
    f.k = Src::Tensor(k);
    f.v = Src::Tensor(v);
    f.prelude = prelude;
    f.prelude_inits = inits;
    let mut notes = vec!["QKV projection unpacked".to_string()];
    if attr_i(n, "unidirectional").unwrap_or(0) != 0 {
        f.causal = true;
        f.window_right = 0;
        notes.push("unidirectional → causal".into());
    }
    if let Some(m) = opt_input(n, 3) {
        let r = ctx.rank(m).ok_or("mask_index shape unknown")?;
        let batch_ok = ctx.evs.iter().all(|e| match (e.shape(m), e.shape(x)) {
            (Some(ms), Some(xs)) => ms[0] == xs[0] && (r != 2 || ms[1] == xs[1]),
            _ => false,
        });
        match (r, gi.elem_type_guess(m)) {
            (1, Some(dt::INT32)) if batch_ok => {
                f.key_seqlens = Some(SeqlensSrc::Lengths(m.clone()));
                notes.push("mask_index [B] → key_seqlens".into());
            }
            (2, Some(dt::INT32)) if batch_ok => {
                f.attn_mask = Some(MaskSrc::KeyPadding(m.clone()));
                notes.push("mask_index [B, S] → bool attn_mask".into());
            }
            _ => return Err("mask_index of a form other than int32 [B] or [B, S]".into()),
        }
    }
    if let Some(b) = opt_input(n, 5) {
        if f.attn_mask.is_some() {
            return Err("attention_bias together with a 2-D mask_index".into());
        }
        let r = ctx.rank(b).ok_or("attention_bias shape unknown")?;
        f.attn_mask = Some(if r == 4 { MaskSrc::Tensor(b.clone()) } else { MaskSrc::ToRank4(b.clone(), 4 - r) });
        notes.push("attention_bias → additive attn_mask".into());
    }
    f.mask_note = notes.join(", ");
    Ok(f)
}
