//! The KV-cache append step on the CPU (the CUDA twin is kernels/kv_append.cuh): present = past ++ new
//! (concat mode) or new written in place at each row's own length (shared-buffer mode), with rotary
//! embedding applied to the new keys and to the query. Runs before attention, which then reads its
//! keys/values from present.

use super::element::Element;
use crate::params::KvAppendParams;

/// Rotary tables and positions of one call.
pub struct Rotary<'a, T> {
    /// [max_pos, rotary_dim / 2] each.
    pub cos: &'a [T],
    pub sin: &'a [T],
    /// [batch, seq_q]; None = past length + token index.
    pub position_ids: Option<&'a [i64]>,
}

impl<T: Element> Rotary<'_, T> {
    /// Rotates the first `kp.rotary_dim` elements of `x` for position `pos` (checked by
    /// `kv_schema::check_data`), in f32, rounding the result to T.
    pub fn apply(&self, kp: &KvAppendParams, x: &mut [T], pos: i64) {
        let half = (kp.rotary_dim / 2) as usize;
        let row = pos as usize * half;
        for i in 0..half {
            let (c, s) = (self.cos[row + i].to_f32(), self.sin[row + i].to_f32());
            let (a, b) = if kp.rotary_interleaved != 0 { (2 * i, 2 * i + 1) } else { (i, i + half) };
            let (xa, xb) = (x[a].to_f32(), x[b].to_f32());
            x[a] = T::from_f32(xa * c - xb * s);
            x[b] = T::from_f32(xb * c + xa * s);
        }
    }

    fn position(&self, kp: &KvAppendParams, past_len: i64, b: usize, i: usize) -> i64 {
        match self.position_ids {
            Some(p) => p[b * kp.seq_q as usize + i],
            None => past_len + i as i64,
        }
    }
}

/// Where new token 0 of row `b` goes: the past length of that row.
pub fn past_len(kp: &KvAppendParams, past_lens: Option<&[i32]>, b: usize) -> i64 {
    match past_lens {
        Some(l) if kp.shared_buffer != 0 => l[b] as i64,
        _ => kp.past_seq as i64,
    }
}

/// A copy of the query (q's layout) with rotary applied to every head.
pub fn rotate_query<T: Element>(kp: &KvAppendParams, q: &[T], rot: &Rotary<T>, past_lens: Option<&[i32]>) -> Vec<T> {
    let mut out = q.to_vec();
    let d = kp.head_dim as usize;
    for b in 0..kp.batch as usize {
        let pl = past_len(kp, past_lens, b);
        for h in 0..kp.heads_q as usize {
            for i in 0..kp.seq_q as usize {
                let at = (b as i64 * kp.q_batch_stride + h as i64 * kp.q_head_stride + i as i64 * kp.q_row_stride) as usize;
                rot.apply(kp, &mut out[at..at + d], rot.position(kp, pl, b, i));
            }
        }
    }
    out
}

/// One cache (keys or values): past → present where they are different buffers, then the new rows.
pub struct Cache<'a, T> {
    /// [batch, heads_kv, past_seq, dim]; may be the same memory as `present` (shared buffer bound twice).
    pub past: Option<*const T>,
    /// [batch, heads_kv, present_seq, dim].
    pub present: &'a mut [T],
    /// The new rows, strided as (batch, head, row).
    pub new: &'a [T],
    pub strides: (i64, i64, i64),
    pub dim: usize,
}

/// Writes one present cache. Lengths were checked (`kv_schema::check_data`).
///
/// # Safety
/// `cache.past`, when given, must point to `batch*heads_kv*past_seq*dim` readable elements, either
/// disjoint from `cache.present` or exactly its start (in place).
pub unsafe fn append<T: Element>(kp: &KvAppendParams, cache: Cache<T>, past_lens: Option<&[i32]>, rot: Option<&Rotary<T>>) {
    let (nb, nh) = (kp.batch as usize, kp.heads_kv as usize);
    let (ps, cs, d) = (kp.past_seq as usize, kp.present_seq as usize, cache.dim);
    let present = cache.present;
    if let Some(past) = cache.past {
        if past != present.as_ptr() {
            for bh in 0..nb * nh {
                // Concat: the past rows; shared buffer: the whole capacity (present has the same shape).
                let src = unsafe { std::slice::from_raw_parts(past.add(bh * ps * d), ps * d) };
                present[bh * cs * d..bh * cs * d + ps * d].copy_from_slice(src);
            }
        }
    }
    let (sb, sh, sr) = cache.strides;
    for b in 0..nb {
        let pl = past_len(kp, past_lens, b);
        for h in 0..nh {
            for i in 0..kp.seq_new as usize {
                let src = (b as i64 * sb + h as i64 * sh + i as i64 * sr) as usize;
                let dst = ((b * nh + h) * cs + pl as usize + i) * d;
                let row = &mut present[dst..dst + d];
                row.copy_from_slice(&cache.new[src..src + d]);
                if let Some(r) = rot {
                    r.apply(kp, row, r.position(kp, pl, b, i));
                }
            }
        }
    }
}
