//! Which keys a query row may see: the additive and boolean `attn_mask`, the causal/window band and
//! `key_seqlens`, applied to one row of a score tile in the op's order (additive first, then the rest).

use super::element::Element;
use crate::params::AttnParams;

/// A strided view of `attn_mask` broadcast over [batch, head, q_row, k_col].
#[derive(Clone, Copy)]
pub enum MaskData<'a, T> {
    None,
    /// true = attend.
    Bool(&'a [bool]),
    Additive(&'a [T]),
}

pub struct RowMasker<'a, T> {
    pub mask: MaskData<'a, T>,
    pub seqlens: Option<&'a [i32]>,
    pub p: &'a AttnParams,
}

impl<T: Element> RowMasker<'_, T> {
    /// Keys [lo, hi) row `row` of batch `b` may see before `attn_mask` is consulted.
    pub fn band(&self, b: usize, row: usize) -> (usize, usize) {
        let (lo, hi) = self.p.visible_keys_in(row as i64, self.p.kv_len(self.seqlens, b));
        (lo as usize, hi as usize)
    }

    /// Masks `scores` (keys col0 .. col0+len of row `row`) in place: -inf where the key is hidden.
    pub fn apply(&self, scores: &mut [f32], b: usize, h: usize, row: usize, col0: usize) {
        let p = self.p;
        let base = b as i64 * p.mask_batch_stride + h as i64 * p.mask_head_stride + row as i64 * p.mask_row_stride;
        let cs = p.mask_col_stride as usize;
        let n = scores.len();
        match self.mask {
            MaskData::None => {}
            MaskData::Additive(m) => {
                let start = base as usize + col0 * cs;
                if cs == 1 {
                    for (s, x) in scores.iter_mut().zip(&m[start..start + n]) {
                        *s += x.to_f32();
                    }
                } else {
                    let x = m[start].to_f32();
                    scores.iter_mut().for_each(|s| *s += x);
                }
            }
            MaskData::Bool(m) => {
                let start = base as usize + col0 * cs;
                if cs == 1 {
                    for (s, &keep) in scores.iter_mut().zip(&m[start..start + n]) {
                        if !keep {
                            *s = f32::NEG_INFINITY;
                        }
                    }
                } else if !m[start] {
                    scores.fill(f32::NEG_INFINITY);
                }
            }
        }
        let (lo, hi) = self.band(b, row);
        let lo = lo.saturating_sub(col0).min(n);
        let hi = hi.saturating_sub(col0).min(n).max(lo);
        scores[..lo].fill(f32::NEG_INFINITY);
        scores[hi..].fill(f32::NEG_INFINITY);
    }
}
