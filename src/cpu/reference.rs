//! A naive float64 attention with the op's exact semantics: the oracle for tests and `verify`.

use super::element::Element;
use super::mask::MaskData;
use crate::params::AttnParams;

/// Returns (output [B, Nq, Sq, Dv] row-major, lse [B, Nq, Sq]) in f64.
pub fn attention_f64<T: Element>(p: &AttnParams, q: &[T], k: &[T], v: &[T], mask: MaskData<T>, seqlens: Option<&[i32]>) -> (Vec<f64>, Vec<f64>) {
    let (bn, nq, sq, skv) = (p.batch as usize, p.heads_q as usize, p.seq_q as usize, p.seq_kv as usize);
    let (d, dv) = (p.head_dim as usize, p.head_dim_v as usize);
    let group = p.group_size() as usize;
    let mut out = vec![0.0f64; bn * nq * sq * dv];
    let mut lse = vec![f64::NEG_INFINITY; bn * nq * sq];
    let mut s = vec![0.0f64; skv];
    for b in 0..bn {
        for h in 0..nq {
            let hk = h / group;
            for i in 0..sq {
                let qa = (b as i64 * p.q_batch_stride + h as i64 * p.q_head_stride + i as i64 * p.q_row_stride) as usize;
                let (lo, hi) = p.visible_keys_in(i as i64, p.kv_len(seqlens, b));
                for (j, sj) in s.iter_mut().enumerate() {
                    let ka = (b as i64 * p.k_batch_stride + hk as i64 * p.k_head_stride + j as i64 * p.k_row_stride) as usize;
                    let mut dot = 0.0f64;
                    for x in 0..d {
                        dot += q[qa + x].to_f32() as f64 * k[ka + x].to_f32() as f64;
                    }
                    let mut x = dot * p.scale as f64;
                    if p.softcap > 0.0 {
                        x = p.softcap as f64 * (x / p.softcap as f64).tanh();
                    }
                    let ma = (b as i64 * p.mask_batch_stride + h as i64 * p.mask_head_stride + i as i64 * p.mask_row_stride + j as i64 * p.mask_col_stride) as usize;
                    match mask {
                        MaskData::None => {}
                        MaskData::Additive(m) => x += m[ma].to_f32() as f64,
                        MaskData::Bool(m) => {
                            if !m[ma] {
                                x = f64::NEG_INFINITY
                            }
                        }
                    }
                    if (j as i64) < lo || (j as i64) >= hi {
                        x = f64::NEG_INFINITY;
                    }
                    *sj = x;
                }
                let m = s.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                if m == f64::NEG_INFINITY {
                    continue; // no visible key: zeros, lse = -inf
                }
                let sum: f64 = s.iter().map(|x| (x - m).exp()).sum();
                lse[(b * nq + h) * sq + i] = m + sum.ln();
                let o = &mut out[((b * nq + h) * sq + i) * dv..][..dv];
                for (j, sj) in s.iter().enumerate() {
                    let w = (sj - m).exp() / sum;
                    if w == 0.0 {
                        continue;
                    }
                    let va = (b as i64 * p.v_batch_stride + hk as i64 * p.v_head_stride + j as i64 * p.v_row_stride) as usize;
                    for x in 0..dv {
                        o[x] += w * v[va + x].to_f32() as f64;
                    }
                }
            }
        }
    }
    (out, lse)
}
