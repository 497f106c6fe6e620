//! The op's contract: attributes, input shapes, and how they become one validated [`AttnParams`].
//!
//! Shared by every kernel (CPU, CUDA) and by ORT shape inference, so a shape error reads the same
//! wherever it is caught. Dimensions may be -1 (unknown) during shape inference; checks that need a
//! value skip unknown dimensions.

use std::fmt;

use crate::params::{AttnParams, DType, KvAppendParams, MaskKind};

pub const MAX_HEAD_DIM: i64 = 256;

/// Input indices, in the op's declared order.
pub const QUERY: usize = 0;
pub const KEY: usize = 1;
pub const VALUE: usize = 2;
pub const ATTN_MASK: usize = 3;
pub const KEY_SEQLENS: usize = 4;
pub const PAST_KEY: usize = 5;
pub const PAST_VALUE: usize = 6;
pub const PAST_SEQLENS: usize = 7;
pub const COS_CACHE: usize = 8;
pub const SIN_CACHE: usize = 9;
pub const POSITION_IDS: usize = 10;
pub const NUM_INPUTS: usize = 11;
pub const INPUT_NAMES: [&str; NUM_INPUTS] =
    ["query", "key", "value", "attn_mask", "key_seqlens", "past_key", "past_value", "past_seqlens", "cos_cache", "sin_cache", "position_ids"];
/// Output indices.
pub const OUTPUT: usize = 0;
pub const SOFTMAX_LSE: usize = 1;
pub const PRESENT_KEY: usize = 2;
pub const PRESENT_VALUE: usize = 3;
pub const OUTPUT_NAMES: [&str; 4] = ["output", "softmax_lse", "present_key", "present_value"];

/// A contract violation, worded for the user: it names the input or attribute and the problem.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SchemaError(pub String);

impl fmt::Display for SchemaError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ai.flashattn::FlashAttention: {}", self.0)
    }
}

impl std::error::Error for SchemaError {}

macro_rules! bail_ {
    ($($arg:tt)*) => { return Err($crate::schema::SchemaError(format!($($arg)*))) };
}
pub(crate) use bail_ as bail;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// [batch, seq, heads, head_dim]
    Bsnh,
    /// [batch, heads, seq, head_dim]
    Bnsh,
}

/// Where attributes are read from: ORT's kernel info at kernel creation, or the shape-inference
/// context. `None` means the attribute is absent from the node.
pub trait AttributeSource {
    fn int(&self, name: &str) -> Option<i64>;
    fn float(&self, name: &str) -> Option<f32>;
    fn string(&self, name: &str) -> Option<String>;
}

#[derive(Debug, Clone, PartialEq)]
pub struct OpAttributes {
    pub layout: Layout,
    pub num_heads: Option<i64>,
    pub causal: bool,
    pub scale: Option<f32>,
    pub softcap: f32,
    pub window_left: i64,
    pub window_right: i64,
    /// Rotary embedding pairs (x[2i], x[2i+1]) instead of halves (x[i], x[i + rotary_dim/2]).
    pub rotary_interleaved: bool,
}

impl Default for OpAttributes {
    fn default() -> Self {
        OpAttributes {
            layout: Layout::Bsnh,
            num_heads: None,
            causal: false,
            scale: None,
            softcap: 0.0,
            window_left: -1,
            window_right: -1,
            rotary_interleaved: false,
        }
    }
}

impl OpAttributes {
    pub fn read(src: &dyn AttributeSource) -> Result<Self, SchemaError> {
        let layout = match src.string("layout").as_deref() {
            None | Some("BSNH") => Layout::Bsnh,
            Some("BNSH") => Layout::Bnsh,
            Some(other) => bail!("attribute 'layout' must be \"BSNH\" or \"BNSH\", got {other:?}"),
        };
        let num_heads = src.int("num_heads");
        if let Some(n) = num_heads {
            if n <= 0 {
                bail!("attribute 'num_heads' must be positive, got {n}");
            }
        }
        let causal = match src.int("causal").unwrap_or(0) {
            0 => false,
            1 => true,
            c => bail!("attribute 'causal' must be 0 or 1, got {c}"),
        };
        let scale = src.float("scale");
        if let Some(s) = scale {
            if !(s.is_finite() && s > 0.0) {
                bail!("attribute 'scale' must be a positive finite number, got {s}");
            }
        }
        let softcap = src.float("softcap").unwrap_or(0.0);
        if !(softcap.is_finite() && softcap >= 0.0) {
            bail!("attribute 'softcap' must be 0 (off) or a positive finite number, got {softcap}");
        }
        let window_left = src.int("window_left").unwrap_or(-1);
        let window_right = src.int("window_right").unwrap_or(-1);
        for (name, w) in [("window_left", window_left), ("window_right", window_right)] {
            if w < -1 || w > i32::MAX as i64 {
                bail!("attribute '{name}' must be -1 (unbounded) or a non-negative key count, got {w}");
            }
        }
        let rotary_interleaved = match src.int("rotary_interleaved").unwrap_or(0) {
            0 => false,
            1 => true,
            c => bail!("attribute 'rotary_interleaved' must be 0 or 1, got {c}"),
        };
        Ok(OpAttributes { layout, num_heads, causal, scale, softcap, window_left, window_right, rotary_interleaved })
    }

    /// window_right with `causal` folded in (causal = nothing to the right of the diagonal).
    pub fn effective_window_right(&self) -> i64 {
        match (self.causal, self.window_right) {
            (false, w) => w,
            (true, -1) => 0,
            (true, w) => w.min(0),
        }
    }
}

/// The problem's sizes; -1 where unknown (shape inference only).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Geometry {
    pub batch: i64,
    pub heads_q: i64,
    pub heads_kv: i64,
    pub seq_q: i64,
    pub seq_kv: i64,
    pub head_dim: i64,
    pub head_dim_v: i64,
    /// The KV cache: how the keys attention sees (`seq_kv`) are made of past and new ones.
    pub kv: KvGeometry,
}

/// KV-cache geometry. Without a cache, seq_kv = seq_new and past_seq = 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct KvGeometry {
    /// past_key is given.
    pub has_past: bool,
    /// Shared-buffer mode (past_seqlens given): past_seq is the capacity, present aliases past.
    pub shared: bool,
    /// Keys/values in the `key`/`value` inputs.
    pub seq_new: i64,
    /// past_key's sequence axis (0 without past).
    pub past_seq: i64,
    /// 0 = no rotary.
    pub rotary_dim: i64,
    /// Rows of cos_cache/sin_cache.
    pub rotary_max_pos: i64,
}

/// The output shapes that follow from the inputs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutputShapes {
    pub output: Vec<i64>,
    pub softmax_lse: Vec<i64>,
    /// [batch, heads_kv, present_seq, head_dim] and [.., head_dim_v].
    pub present_key: Vec<i64>,
    pub present_value: Vec<i64>,
}

/// Shapes of the present inputs.
#[derive(Debug, Clone, Copy, Default)]
pub struct InputShapes<'a> {
    pub query: &'a [i64],
    pub key: &'a [i64],
    pub value: &'a [i64],
    pub attn_mask: Option<&'a [i64]>,
    pub key_seqlens: Option<&'a [i64]>,
    pub past_key: Option<&'a [i64]>,
    pub past_value: Option<&'a [i64]>,
    pub past_seqlens: Option<&'a [i64]>,
    pub cos_cache: Option<&'a [i64]>,
    pub sin_cache: Option<&'a [i64]>,
    pub position_ids: Option<&'a [i64]>,
}

impl<'a> InputShapes<'a> {
    /// From per-input shapes in the op's input order (absent = None); None when query, key or value
    /// is unknown.
    pub fn from_slots(slots: [Option<&'a [i64]>; NUM_INPUTS]) -> Option<Self> {
        let [Some(query), Some(key), Some(value), attn_mask, key_seqlens, past_key, past_value, past_seqlens, cos_cache, sin_cache, position_ids] = slots else {
            return None;
        };
        Some(InputShapes { query, key, value, attn_mask, key_seqlens, past_key, past_value, past_seqlens, cos_cache, sin_cache, position_ids })
    }

    /// Whether attention reads its keys/values from the present cache (past, rotary or present asked for).
    pub fn uses_cache(&self) -> bool {
        self.past_key.is_some() || self.cos_cache.is_some()
    }
}

pub(crate) fn known(d: i64) -> bool {
    d >= 0
}

/// Equal, or one side unknown.
pub(crate) fn compatible(a: i64, b: i64) -> bool {
    !known(a) || !known(b) || a == b
}

pub(crate) fn merge(a: i64, b: i64) -> i64 {
    if known(a) { a } else { b }
}

pub(crate) fn fmt_shape(s: &[i64]) -> String {
    let dims: Vec<String> = s.iter().map(|d| if *d < 0 { "?".into() } else { d.to_string() }).collect();
    format!("[{}]", dims.join(", "))
}

/// [batch, seq, heads, head_dim] of a 4D input in the given layout.
fn split4(s: &[i64], layout: Layout) -> (i64, i64, i64, i64) {
    match layout {
        Layout::Bsnh => (s[0], s[1], s[2], s[3]),
        Layout::Bnsh => (s[0], s[2], s[1], s[3]),
    }
}

fn layout_name(layout: Layout) -> &'static str {
    match layout {
        Layout::Bsnh => "[batch, seq, heads, head_dim] (layout BSNH)",
        Layout::Bnsh => "[batch, heads, seq, head_dim] (layout BNSH)",
    }
}

/// Validates the input shapes against the attributes and derives the problem's geometry.
pub fn geometry(attrs: &OpAttributes, shapes: &InputShapes) -> Result<Geometry, SchemaError> {
    let (q, k, v) = (shapes.query, shapes.key, shapes.value);
    let rank = q.len();
    if rank != 3 && rank != 4 {
        bail!("input 'query' must be 4D {} or 3D [batch, seq, heads*head_dim], got rank {rank} {}", layout_name(attrs.layout), fmt_shape(q));
    }
    for (name, s) in [("key", k), ("value", v)] {
        if s.len() != rank {
            bail!("input '{name}' must have the same rank as 'query' ({rank}), got rank {} {}", s.len(), fmt_shape(s));
        }
    }
    for (name, s) in [("query", q), ("key", k), ("value", v)] {
        if let Some(d) = s.iter().find(|d| **d == 0) {
            bail!("input '{name}' has an empty dimension ({d}) in shape {}: every dimension must be at least 1", fmt_shape(s));
        }
    }
    let mut g = if rank == 4 {
        let (bq, sq, nq, dq) = split4(q, attrs.layout);
        let (bk, sk, nk, dk) = split4(k, attrs.layout);
        let (bv, sv, nv, dv) = split4(v, attrs.layout);
        if !compatible(bq, bk) || !compatible(bq, bv) {
            bail!("batch sizes differ: query {}, key {}, value {} (shapes {} {} {})", bq, bk, bv, fmt_shape(q), fmt_shape(k), fmt_shape(v));
        }
        if !compatible(sk, sv) {
            bail!("inputs 'key' and 'value' must have the same sequence length, got {sk} and {sv}");
        }
        if !compatible(nk, nv) {
            bail!("inputs 'key' and 'value' must have the same number of heads, got {nk} and {nv}");
        }
        if !compatible(dq, dk) {
            bail!("head_dim of 'key' ({dk}) must equal head_dim of 'query' ({dq})");
        }
        Geometry {
            batch: merge(merge(bq, bk), bv),
            heads_q: nq,
            heads_kv: merge(nk, nv),
            seq_q: sq,
            seq_kv: merge(sk, sv),
            head_dim: merge(dq, dk),
            head_dim_v: dv,
            kv: KvGeometry::default(),
        }
    } else {
        let Some(nq) = attrs.num_heads else {
            bail!("3D inputs [batch, seq, heads*head_dim] need the attribute 'num_heads'");
        };
        if attrs.layout != Layout::Bsnh {
            bail!("attribute 'layout' applies to 4D inputs only; 3D inputs are always [batch, seq, heads*head_dim]");
        }
        let (bq, sq, wq) = (q[0], q[1], q[2]);
        let (bk, sk, wk) = (k[0], k[1], k[2]);
        let (bv, sv, wv) = (v[0], v[1], v[2]);
        if !compatible(bq, bk) || !compatible(bq, bv) {
            bail!("batch sizes differ: query {}, key {}, value {}", bq, bk, bv);
        }
        if !compatible(sk, sv) {
            bail!("inputs 'key' and 'value' must have the same sequence length, got {sk} and {sv}");
        }
        if known(wq) && wq % nq != 0 {
            bail!("width of 'query' ({wq}) is not divisible by num_heads ({nq})");
        }
        let d = if known(wq) { wq / nq } else { -1 };
        let nk = if known(wk) && known(d) {
            if wk % d != 0 {
                bail!("width of 'key' ({wk}) is not a multiple of head_dim ({d} = query width {wq} / num_heads {nq})");
            }
            wk / d
        } else {
            -1
        };
        let dv = if known(wv) && known(nk) {
            if wv % nk != 0 {
                bail!("width of 'value' ({wv}) is not divisible by the number of key/value heads ({nk})");
            }
            wv / nk
        } else {
            -1
        };
        Geometry { batch: merge(merge(bq, bk), bv), heads_q: nq, heads_kv: nk, seq_q: sq, seq_kv: merge(sk, sv), head_dim: d, head_dim_v: dv, kv: KvGeometry::default() }
    };
    if known(g.heads_q) && known(g.heads_kv) && g.heads_q % g.heads_kv != 0 {
        bail!("query heads ({}) must be a multiple of key/value heads ({})", g.heads_q, g.heads_kv);
    }
    for (what, d) in [("head_dim of 'query'/'key'", g.head_dim), ("head_dim of 'value'", g.head_dim_v)] {
        if known(d) && d > MAX_HEAD_DIM {
            bail!("{what} is {d}; at most {MAX_HEAD_DIM} is supported");
        }
    }
    g.kv = crate::kv_schema::kv_geometry(shapes, &mut g)?;
    if let Some(m) = shapes.attn_mask {
        check_mask_shape(m, &g)?;
    }
    if let Some(s) = shapes.key_seqlens {
        if s.len() != 1 || !compatible(s[0], g.batch) {
            bail!("input 'key_seqlens' must be 1D [batch] = [{}], got {}", g.batch, fmt_shape(s));
        }
    }
    Ok(g)
}

fn check_mask_shape(m: &[i64], g: &Geometry) -> Result<(), SchemaError> {
    let target = [g.batch, g.heads_q, g.seq_q, g.seq_kv];
    if m.is_empty() || m.len() > 4 {
        bail!("input 'attn_mask' must have rank 1 to 4 (broadcastable to [batch, heads, seq_q, seq_kv] = {}), got {}", fmt_shape(&target), fmt_shape(m));
    }
    let offset = 4 - m.len();
    for (i, &d) in m.iter().enumerate() {
        let t = target[offset + i];
        if known(d) && d != 1 && !compatible(d, t) {
            bail!(
                "input 'attn_mask' of shape {} does not broadcast to [batch, heads, seq_q, seq_kv] = {}",
                fmt_shape(m),
                fmt_shape(&target)
            );
        }
    }
    Ok(())
}

/// Output shapes; query's layout, value's head_dim.
pub fn output_shapes(shapes: &InputShapes, g: &Geometry, attrs: &OpAttributes) -> OutputShapes {
    let q = shapes.query;
    let output = if q.len() == 3 {
        let w = if known(g.heads_q) && known(g.head_dim_v) { g.heads_q * g.head_dim_v } else { -1 };
        vec![q[0], q[1], w]
    } else {
        let _ = attrs;
        vec![q[0], q[1], q[2], g.head_dim_v]
    };
    OutputShapes {
        output,
        softmax_lse: vec![g.batch, g.heads_q, g.seq_q],
        present_key: vec![g.batch, g.heads_kv, g.seq_kv, g.head_dim],
        present_value: vec![g.batch, g.heads_kv, g.seq_kv, g.head_dim_v],
    }
}

/// Row-major strides of a 4D tensor in `layout` ([batch, head, row] for head_dim-contiguous data).
pub(crate) fn strides(layout: Layout, heads: i64, seq: i64, dim: i64) -> (i64, i64, i64) {
    match layout {
        Layout::Bsnh => (seq * heads * dim, dim, heads * dim),
        Layout::Bnsh => (heads * seq * dim, seq * dim, dim),
    }
}

/// Broadcast strides of the mask over [batch, heads, seq_q, seq_kv]; 0 on broadcast axes.
fn mask_strides(m: &[i64], g: &Geometry) -> [i64; 4] {
    let target = [g.batch, g.heads_q, g.seq_q, g.seq_kv];
    let offset = 4 - m.len();
    let mut out = [0i64; 4];
    let mut stride = 1;
    for i in (0..m.len()).rev() {
        out[offset + i] = if m[i] == 1 && target[offset + i] != 1 { 0 } else { stride };
        stride *= m[i];
    }
    out
}

/// Everything a kernel needs, from concrete (all-known) shapes. Pointers are left 0.
pub fn plan(attrs: &OpAttributes, shapes: &InputShapes, dtype: DType, mask_kind: MaskKind) -> Result<(AttnParams, OutputShapes), SchemaError> {
    if shapes.attn_mask.is_none() && mask_kind != MaskKind::None {
        bail!("internal: mask kind without a mask");
    }
    let g = geometry(attrs, shapes)?;
    let dims = [g.batch, g.heads_q, g.heads_kv, g.seq_q, g.seq_kv, g.head_dim, g.head_dim_v, g.kv.past_seq, g.kv.rotary_max_pos];
    if dims.iter().any(|d| !known(*d)) || dims.iter().any(|d| *d > i32::MAX as i64) {
        bail!("input shapes must be concrete and fit in 32 bits, got query {} key {} value {}", fmt_shape(shapes.query), fmt_shape(shapes.key), fmt_shape(shapes.value));
    }
    // 3D inputs are BSNH with heads folded into the width: same strides as 4D BSNH.
    let layout = if shapes.query.len() == 3 { Layout::Bsnh } else { attrs.layout };
    let (qb, qh, qr) = strides(layout, g.heads_q, g.seq_q, g.head_dim);
    // With a cache, attention reads keys/values from present ([batch, heads_kv, seq_kv, dim]).
    let kv_layout = if shapes.uses_cache() { Layout::Bnsh } else { layout };
    let (kb, kh, kr) = strides(kv_layout, g.heads_kv, g.seq_kv, g.head_dim);
    let (vb, vh, vr) = strides(kv_layout, g.heads_kv, g.seq_kv, g.head_dim_v);
    let (ob, oh, or) = strides(layout, g.heads_q, g.seq_q, g.head_dim_v);
    let ms = shapes.attn_mask.map(|m| mask_strides(m, &g)).unwrap_or([0; 4]);
    let scale = attrs.scale.unwrap_or(1.0 / (g.head_dim as f32).sqrt());
    let params = AttnParams {
        q_batch_stride: qb,
        q_head_stride: qh,
        q_row_stride: qr,
        k_batch_stride: kb,
        k_head_stride: kh,
        k_row_stride: kr,
        v_batch_stride: vb,
        v_head_stride: vh,
        v_row_stride: vr,
        out_batch_stride: ob,
        out_head_stride: oh,
        out_row_stride: or,
        mask_batch_stride: ms[0],
        mask_head_stride: ms[1],
        mask_row_stride: ms[2],
        mask_col_stride: ms[3],
        batch: g.batch as i32,
        heads_q: g.heads_q as i32,
        heads_kv: g.heads_kv as i32,
        seq_q: g.seq_q as i32,
        seq_kv: g.seq_kv as i32,
        head_dim: g.head_dim as i32,
        head_dim_v: g.head_dim_v as i32,
        window_left: attrs.window_left as i32,
        window_right: attrs.effective_window_right() as i32,
        mask_kind: mask_kind as i32,
        dtype: dtype as i32,
        // Shared buffer: row b has past_seqlens[b] + seq_new keys, causal aligned to that row's end.
        has_seqlens: (shapes.key_seqlens.is_some() || g.kv.shared) as i32,
        seqlens_offset: if g.kv.shared { g.kv.seq_new as i32 } else { 0 },
        diag_per_batch: g.kv.shared as i32,
        scale,
        softcap: attrs.softcap,
        ..Default::default()
    };
    Ok((params, output_shapes(shapes, &g, attrs)))
}

/// [`plan`] plus the KV append step (None when the call has no cache input and asks for no present).
pub fn plan_kv(attrs: &OpAttributes, shapes: &InputShapes, dtype: DType, mask_kind: MaskKind, present: bool) -> Result<(AttnParams, Option<KvAppendParams>, OutputShapes), SchemaError> {
    let (params, out) = plan(attrs, shapes, dtype, mask_kind)?;
    if shapes.uses_cache() && !present {
        bail!("outputs 'present_key' and 'present_value' are required with 'past_key' or rotary ('cos_cache'): attention reads the keys from them");
    }
    let kv = if present { Some(crate::kv_schema::append_params(attrs, shapes, &geometry(attrs, shapes)?, dtype)) } else { None };
    Ok((params, kv, out))
}

/// Checks `key_seqlens` values (they are data, so only known at compute time).
pub fn check_seqlens(seqlens: &[i32], seq_kv: i32) -> Result<(), SchemaError> {
    for (b, &len) in seqlens.iter().enumerate() {
        if len < 0 || len > seq_kv {
            bail!("input 'key_seqlens'[{b}] = {len} is outside [0, {seq_kv}] (the key sequence length)");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shapes<'a>(q: &'a [i64], k: &'a [i64], v: &'a [i64]) -> InputShapes<'a> {
        InputShapes { query: q, key: k, value: v, attn_mask: None, key_seqlens: None, ..Default::default() }
    }

    #[test]
    fn gqa_bnsh_strides_and_output() {
        let attrs = OpAttributes { layout: Layout::Bnsh, ..Default::default() };
        let (p, out) = plan(&attrs, &shapes(&[2, 8, 5, 64], &[2, 2, 7, 64], &[2, 2, 7, 32]), DType::F32, MaskKind::None).unwrap();
        assert_eq!((p.heads_q, p.heads_kv, p.seq_q, p.seq_kv, p.head_dim_v), (8, 2, 5, 7, 32));
        assert_eq!((p.q_batch_stride, p.q_head_stride, p.q_row_stride), (8 * 5 * 64, 5 * 64, 64));
        assert_eq!(out.output, vec![2, 8, 5, 32]);
        assert_eq!(out.softmax_lse, vec![2, 8, 5]);
        assert!((p.scale - 0.125).abs() < 1e-7);
    }

    #[test]
    fn three_d_derives_kv_heads() {
        let attrs = OpAttributes { num_heads: Some(4), ..Default::default() };
        let g = geometry(&attrs, &shapes(&[1, 3, 64], &[1, 9, 32], &[1, 9, 48])).unwrap();
        assert_eq!((g.heads_q, g.head_dim, g.heads_kv, g.head_dim_v), (4, 16, 2, 24));
    }

    #[test]
    fn mask_broadcast_strides() {
        let attrs = OpAttributes::default();
        let m = [2, 1, 1, 7];
        let s = InputShapes { attn_mask: Some(&m), ..shapes(&[2, 5, 4, 8], &[2, 7, 4, 8], &[2, 7, 4, 8]) };
        let (p, _) = plan(&attrs, &s, DType::F32, MaskKind::Bool).unwrap();
        assert_eq!([p.mask_batch_stride, p.mask_head_stride, p.mask_row_stride, p.mask_col_stride], [7, 0, 0, 1]);
        let bad = [3, 7];
        let s = InputShapes { attn_mask: Some(&bad), ..s };
        assert!(geometry(&attrs, &s).unwrap_err().0.contains("attn_mask"));
    }

    #[test]
    fn unknown_dims_pass_inference() {
        let attrs = OpAttributes::default();
        let g = geometry(&attrs, &shapes(&[-1, -1, 4, 8], &[-1, -1, 2, 8], &[-1, -1, 2, 8])).unwrap();
        assert_eq!(g.batch, -1);
        assert_eq!(g.heads_kv, 2);
    }

    #[test]
    fn causal_folds_into_window() {
        let a = OpAttributes { causal: true, ..Default::default() };
        assert_eq!(a.effective_window_right(), 0);
        let a = OpAttributes { causal: true, window_right: 3, ..Default::default() };
        assert_eq!(a.effective_window_right(), 0);
    }

    #[test]
    fn errors_name_the_input() {
        let attrs = OpAttributes::default();
        let e = geometry(&attrs, &shapes(&[1, 2, 3, 8], &[1, 2, 2, 8], &[1, 2, 2, 8])).unwrap_err();
        assert!(e.0.contains("multiple of key/value heads"), "{e}");
        let e = geometry(&attrs, &shapes(&[1, 2, 4, 8], &[1, 2, 2, 16], &[1, 2, 2, 8])).unwrap_err();
        assert!(e.0.contains("head_dim of 'key'"), "{e}");
        let e = geometry(&attrs, &shapes(&[1, 2, 4, 512], &[1, 2, 2, 512], &[1, 2, 2, 8])).unwrap_err();
        assert!(e.0.contains("at most 256"), "{e}");
        let e = geometry(&attrs, &shapes(&[1, 0, 4, 8], &[1, 2, 2, 8], &[1, 2, 2, 8])).unwrap_err();
        assert!(e.0.contains("empty dimension"), "{e}");
        let e = geometry(&attrs, &shapes(&[1, 4, 8], &[1, 2, 2, 8], &[1, 2, 2, 8])).unwrap_err();
        assert!(e.0.contains("same rank"), "{e}");
    }
}
