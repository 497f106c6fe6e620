//! The KV-cache part of the op's contract (issue #8): `past_key`/`past_value` in, `present_key`/
//! `present_value` out, the shared-buffer mode (`past_seqlens`) and rotary embedding (`cos_cache`,
//! `sin_cache`, `position_ids`). Shape checks (also run by shape inference, so dimensions may be -1),
//! the data checks of the lengths and positions, and the append step's parameters.
//!
//! Caches are always `[batch, heads_kv, seq, head_dim]` (as ORT's MultiHeadAttention/GroupQueryAttention).
//! - concat mode (no `past_seqlens`): present = past ++ new, seq_kv = past_seq + seq_new;
//! - shared-buffer mode (`past_seqlens` [batch]): past_seq is the capacity; row b's new keys are written
//!   at [past_seqlens[b], past_seqlens[b] + seq_new) — in place when the caller binds present to past's
//!   buffer — and row b attends to its first past_seqlens[b] + seq_new keys, causal aligned to that end.

use crate::params::{DType, KvAppendParams};
use crate::schema::{bail, compatible, fmt_shape, known, merge, strides, Geometry, InputShapes, KvGeometry, Layout, OpAttributes, SchemaError};

fn rank4(name: &str, s: &[i64], what: &str) -> Result<(i64, i64, i64, i64), SchemaError> {
    if s.len() != 4 {
        bail!("input '{name}' must be 4D {what}, got {}", fmt_shape(s));
    }
    Ok((s[0], s[1], s[2], s[3]))
}

/// Checks the cache inputs' shapes against the attention geometry `g` (whose seq_kv holds the new
/// tokens on entry) and updates `g`: seq_kv becomes the keys attention sees, unknown sizes are merged.
pub fn kv_geometry(shapes: &InputShapes, g: &mut Geometry) -> Result<KvGeometry, SchemaError> {
    let mut kv = KvGeometry { seq_new: g.seq_kv, ..Default::default() };
    match (shapes.past_key, shapes.past_value) {
        (None, None) => {}
        (Some(_), None) | (None, Some(_)) => bail!("inputs 'past_key' and 'past_value' must be given together"),
        (Some(pk), Some(pv)) => {
            let (bk, nk, sk, dk) = rank4("past_key", pk, "[batch, heads_kv, past_seq, head_dim]")?;
            let (bv, nv, sv, dv) = rank4("past_value", pv, "[batch, heads_kv, past_seq, head_dim_v]")?;
            for (name, b) in [("past_key", bk), ("past_value", bv)] {
                if !compatible(b, g.batch) {
                    bail!("input '{name}' has batch {b} but 'query' has batch {}", g.batch);
                }
            }
            for (name, n) in [("past_key", nk), ("past_value", nv)] {
                if !compatible(n, g.heads_kv) {
                    bail!("input '{name}' has {n} heads but 'key'/'value' have {} key/value heads", g.heads_kv);
                }
            }
            if !compatible(dk, g.head_dim) {
                bail!("input 'past_key' has head_dim {dk} but 'key' has {}", g.head_dim);
            }
            if !compatible(dv, g.head_dim_v) {
                bail!("input 'past_value' has head_dim {dv} but 'value' has {}", g.head_dim_v);
            }
            if !compatible(sk, sv) {
                bail!("inputs 'past_key' and 'past_value' must have the same sequence length, got {sk} and {sv}");
            }
            g.batch = merge(merge(g.batch, bk), bv);
            g.heads_kv = merge(merge(g.heads_kv, nk), nv);
            g.head_dim = merge(g.head_dim, dk);
            g.head_dim_v = merge(g.head_dim_v, dv);
            kv.has_past = true;
            kv.past_seq = merge(sk, sv);
        }
    }
    if let Some(s) = shapes.past_seqlens {
        if !kv.has_past {
            bail!("input 'past_seqlens' (shared-buffer mode) needs 'past_key' and 'past_value' (the shared cache buffers)");
        }
        if s.len() != 1 || !compatible(s[0], g.batch) {
            bail!("input 'past_seqlens' must be 1D [batch] = [{}], got {}", g.batch, fmt_shape(s));
        }
        if shapes.key_seqlens.is_some() {
            bail!("inputs 'key_seqlens' and 'past_seqlens' cannot be combined: with 'past_seqlens' row b attends to its past_seqlens[b] + new keys");
        }
        kv.shared = true;
        if known(kv.past_seq) && known(kv.seq_new) && kv.past_seq < kv.seq_new {
            bail!("the cache is too small: 'past_key' holds {} positions (its capacity in shared-buffer mode) but {} new tokens must fit", kv.past_seq, kv.seq_new);
        }
    }
    match (shapes.cos_cache, shapes.sin_cache) {
        (None, None) => {}
        (Some(_), None) | (None, Some(_)) => bail!("inputs 'cos_cache' and 'sin_cache' must be given together"),
        (Some(c), Some(s)) => {
            if c.len() != 2 || s.len() != 2 {
                bail!("inputs 'cos_cache' and 'sin_cache' must be 2D [max_position, rotary_dim/2], got {} and {}", fmt_shape(c), fmt_shape(s));
            }
            if !compatible(c[0], s[0]) || !compatible(c[1], s[1]) {
                bail!("inputs 'cos_cache' {} and 'sin_cache' {} must have the same shape", fmt_shape(c), fmt_shape(s));
            }
            let (rows, half) = (merge(c[0], s[0]), merge(c[1], s[1]));
            if rows == 0 || half == 0 {
                bail!("inputs 'cos_cache'/'sin_cache' {} must not be empty", fmt_shape(c));
            }
            if known(half) && known(g.head_dim) && 2 * half > g.head_dim {
                bail!("rotary dimension 2*{half} from 'cos_cache' {} exceeds head_dim {}", fmt_shape(c), g.head_dim);
            }
            if known(g.seq_q) && known(kv.seq_new) && g.seq_q != kv.seq_new {
                bail!("rotary ('cos_cache') needs as many new keys as queries: 'key' has {} tokens, 'query' {}", kv.seq_new, g.seq_q);
            }
            kv.rotary_dim = if known(half) { 2 * half } else { -1 };
            kv.rotary_max_pos = rows;
        }
    }
    if let Some(p) = shapes.position_ids {
        if shapes.cos_cache.is_none() {
            bail!("input 'position_ids' needs the rotary caches 'cos_cache' and 'sin_cache'");
        }
        if p.len() != 2 || !compatible(p[0], g.batch) || !compatible(p[1], g.seq_q) {
            bail!("input 'position_ids' must be 2D [batch, seq_q] = [{}, {}], got {}", g.batch, g.seq_q, fmt_shape(p));
        }
    }
    if kv.has_past && !kv.shared {
        g.seq_kv = if known(kv.past_seq) && known(kv.seq_new) { kv.past_seq + kv.seq_new } else { -1 };
    } else if kv.shared {
        g.seq_kv = kv.past_seq;
    }
    Ok(kv)
}

/// Checks the lengths and positions (data, so only at compute time): a shared-buffer row must fit
/// its new tokens, and every rotary position must have a row in the cos/sin caches.
pub fn check_data(kv: &KvGeometry, batch: usize, seq_q: usize, past_seqlens: Option<&[i32]>, position_ids: Option<&[i64]>) -> Result<(), SchemaError> {
    let past_len = |b: usize| past_seqlens.map_or(kv.past_seq, |l| l[b] as i64);
    if let Some(lens) = past_seqlens {
        for (b, &len) in lens.iter().enumerate().take(batch) {
            if len < 0 {
                bail!("input 'past_seqlens'[{b}] = {len} is negative");
            }
            if len as i64 + kv.seq_new > kv.past_seq {
                bail!(
                    "the cache is too small: 'past_seqlens'[{b}] = {len} plus {} new tokens exceeds the capacity {} of 'past_key'/'past_value'",
                    kv.seq_new,
                    kv.past_seq
                );
            }
        }
    }
    if kv.rotary_dim > 0 {
        for b in 0..batch {
            for i in 0..seq_q {
                let (pos, what) = match position_ids {
                    Some(p) => (p[b * seq_q + i], format!("input 'position_ids'[{b}, {i}]")),
                    None => (past_len(b) + i as i64, format!("the position of new token {i} of row {b} (past length + {i})")),
                };
                if pos < 0 || pos >= kv.rotary_max_pos {
                    bail!("{what} = {pos} is outside [0, {}): the rows of 'cos_cache'/'sin_cache'", kv.rotary_max_pos);
                }
            }
        }
    }
    Ok(())
}

/// The append step's parameters (pointers left 0) for concrete shapes.
pub fn append_params(attrs: &OpAttributes, shapes: &InputShapes, g: &Geometry, dtype: DType) -> KvAppendParams {
    let layout = if shapes.query.len() == 3 { Layout::Bsnh } else { attrs.layout };
    let (qb, qh, qr) = strides(layout, g.heads_q, g.seq_q, g.head_dim);
    let (kb, kh, kr) = strides(layout, g.heads_kv, g.kv.seq_new, g.head_dim);
    let (vb, vh, vr) = strides(layout, g.heads_kv, g.kv.seq_new, g.head_dim_v);
    KvAppendParams {
        q_batch_stride: qb,
        q_head_stride: qh,
        q_row_stride: qr,
        new_k_batch_stride: kb,
        new_k_head_stride: kh,
        new_k_row_stride: kr,
        new_v_batch_stride: vb,
        new_v_head_stride: vh,
        new_v_row_stride: vr,
        batch: g.batch as i32,
        heads_q: g.heads_q as i32,
        heads_kv: g.heads_kv as i32,
        seq_q: g.seq_q as i32,
        seq_new: g.kv.seq_new as i32,
        past_seq: g.kv.past_seq as i32,
        present_seq: g.seq_kv as i32,
        head_dim: g.head_dim as i32,
        head_dim_v: g.head_dim_v as i32,
        rotary_dim: g.kv.rotary_dim.max(0) as i32,
        rotary_interleaved: attrs.rotary_interleaved as i32,
        rotary_max_pos: g.kv.rotary_max_pos as i32,
        dtype: dtype as i32,
        shared_buffer: g.kv.shared as i32,
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::params::MaskKind;
    use crate::schema::{geometry, plan, plan_kv};

    fn base<'a>(q: &'a [i64], pk: &'a [i64]) -> InputShapes<'a> {
        InputShapes { query: q, key: q, value: q, past_key: Some(pk), past_value: Some(pk), ..Default::default() }
    }

    #[test]
    fn concat_mode_reads_present() {
        let (q, pk) = ([2, 3, 4, 8], [2, 4, 5, 8]);
        let s = base(&q, &pk);
        let (p, kp, out) = plan_kv(&OpAttributes::default(), &s, DType::F32, MaskKind::None, true).unwrap();
        assert_eq!((p.seq_kv, p.k_batch_stride, p.k_head_stride, p.k_row_stride), (8, 4 * 8 * 8, 8 * 8, 8));
        assert_eq!(out.present_key, vec![2, 4, 8, 8]);
        let kp = kp.unwrap();
        assert_eq!((kp.past_seq, kp.present_seq, kp.seq_new, kp.shared_buffer), (5, 8, 3, 0));
        assert_eq!((p.has_seqlens, p.diag_per_batch), (0, 0));
    }

    #[test]
    fn shared_mode_per_row_lengths() {
        let (q, pk, l) = ([2, 1, 4, 8], [2, 4, 16, 8], [2]);
        let s = InputShapes { past_seqlens: Some(&l), ..base(&q, &pk) };
        let (p, _, out) = plan_kv(&OpAttributes { causal: true, ..Default::default() }, &s, DType::F16, MaskKind::None, true).unwrap();
        assert_eq!(out.present_key, vec![2, 4, 16, 8]);
        assert_eq!((p.seq_kv, p.has_seqlens, p.seqlens_offset, p.diag_per_batch), (16, 1, 1, 1));
        // row with 6 past keys: 7 keys, the query (last new token) sees all of them
        let lens = [6, 0];
        assert_eq!(p.kv_len(Some(&lens), 0), 7);
        assert_eq!(p.visible_keys_in(0, 7), (0, 7));
        assert_eq!(p.kv_len(Some(&lens), 1), 1);
        assert_eq!(p.visible_keys_in(0, 1), (0, 1));
    }

    #[test]
    fn cache_errors_name_the_input() {
        let (q, pk) = ([2, 5, 4, 8], [2, 4, 4, 8]);
        let l = [2];
        let e = geometry(&OpAttributes::default(), &InputShapes { past_seqlens: Some(&l), ..base(&q, &pk) }).unwrap_err();
        assert!(e.0.contains("cache is too small"), "{e}");
        let e = plan_kv(&OpAttributes::default(), &base(&q, &pk), DType::F32, MaskKind::None, false).unwrap_err();
        assert!(e.0.contains("'present_key' and 'present_value' are required"), "{e}");
        let kv = KvGeometry { has_past: true, shared: true, seq_new: 2, past_seq: 4, ..Default::default() };
        assert!(check_data(&kv, 2, 2, Some(&[2, 3]), None).unwrap_err().0.contains("'past_seqlens'[1] = 3"));
        let kv = KvGeometry { rotary_dim: 4, rotary_max_pos: 3, seq_new: 1, past_seq: 2, ..Default::default() };
        assert!(check_data(&kv, 1, 1, None, None).is_ok());
        assert!(check_data(&kv, 1, 1, None, Some(&[3])).unwrap_err().0.contains("'position_ids'[0, 0] = 3"));
        // no cache: plan is unchanged
        let (p, _) = plan(&OpAttributes::default(), &InputShapes { query: &q, key: &q, value: &q, ..Default::default() }, DType::F32, MaskKind::None).unwrap();
        assert_eq!(p.k_row_stride, 4 * 8);
    }
}
