//! Online-softmax arithmetic on one row of scores: a vectorisable exp, the running max/sum update,
//! and softcap. Written as plain lane loops so LLVM vectorises them; `multiversion` adds AVX2+FMA clones.

use multiversion::multiversion;

// 16 lanes: one zmm register under AVX-512, two ymm under AVX2.
const LANES: usize = 16;

/// exp(x) for f32, ~1 ulp on [-87, 88]; exactly 0 below -87 (so -inf → 0), NaN stays NaN.
/// Range reduction x = n·ln2 + r with a degree-6 polynomial for e^r; 2^n is built from the exponent bits.
#[inline(always)]
pub fn exp_f32(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    const ROUND: f32 = 12_582_912.0; // 1.5·2^23: adding it rounds to an integer
    // Comparisons are false for NaN, so NaN flows through unclamped.
    let xc = if x < -87.0 { -87.0 } else if x > 88.0 { 88.0 } else { x };
    let t = xc * LOG2E + ROUND;
    let n = t - ROUND;
    // t's low mantissa bits hold n: integer arithmetic on them vectorises, a float→int cast does not.
    let n_bits = t.to_bits().wrapping_sub(ROUND.to_bits());
    let r = xc - n * LN2_HI - n * LN2_LO;
    let mut p = 1.987_569_1e-4f32;
    p = p * r + 1.398_199_9e-3;
    p = p * r + 8.333_452e-3;
    p = p * r + 4.166_579_6e-2;
    p = p * r + 1.666_666_5e-1;
    p = p * r + 5.000_000_1e-1;
    let er = p * r * r + r + 1.0;
    let two_n = f32::from_bits(n_bits.wrapping_add(127) << 23);
    let y = er * two_n;
    if x < -87.0 { 0.0 } else { y }
}

/// tanh through exp: 1 − 2/(e^{2x}+1), clamped where tanh is ±1 in f32.
#[inline(always)]
fn tanh_f32(x: f32) -> f32 {
    let xc = if x < -9.0 { -9.0 } else if x > 9.0 { 9.0 } else { x };
    1.0 - 2.0 / (exp_f32(2.0 * xc) + 1.0)
}

/// s ← cap·tanh(s/cap).
#[multiversion(targets("x86_64+avx512f+avx512vl+avx2+fma", "x86_64+avx2+fma", "aarch64+neon"))]
pub fn softcap(row: &mut [f32], cap: f32) {
    let inv = 1.0 / cap;
    for s in row.iter_mut() {
        *s = cap * tanh_f32(*s * inv);
    }
}

/// Maximum of the row (NaN-ignoring; NaN still poisons the exp that follows).
#[multiversion(targets("x86_64+avx512f+avx512vl+avx2+fma", "x86_64+avx2+fma", "aarch64+neon"))]
pub fn row_max(row: &[f32]) -> f32 {
    let mut lanes = [f32::NEG_INFINITY; LANES];
    let chunks = row.chunks_exact(LANES);
    let tail = chunks.remainder();
    for c in chunks {
        for i in 0..LANES {
            lanes[i] = if c[i] > lanes[i] { c[i] } else { lanes[i] };
        }
    }
    let mut m = lanes.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    for &x in tail {
        m = m.max(x);
    }
    m
}

/// row ← exp(row − max), returns the sum of the new row.
#[multiversion(targets("x86_64+avx512f+avx512vl+avx2+fma", "x86_64+avx2+fma", "aarch64+neon"))]
pub fn exp_sub_sum(row: &mut [f32], max: f32) -> f32 {
    let mut lanes = [0.0f32; LANES];
    let mut chunks = row.chunks_exact_mut(LANES);
    for c in &mut chunks {
        for i in 0..LANES {
            let e = exp_f32(c[i] - max);
            c[i] = e;
            lanes[i] += e;
        }
    }
    let mut sum: f32 = lanes.iter().sum();
    for x in chunks.into_remainder() {
        *x = exp_f32(*x - max);
        sum += *x;
    }
    sum
}

/// row ← row·alpha
#[multiversion(targets("x86_64+avx512f+avx512vl+avx2+fma", "x86_64+avx2+fma", "aarch64+neon"))]
pub fn scale_row(row: &mut [f32], alpha: f32) {
    for x in row.iter_mut() {
        *x *= alpha;
    }
}

/// Running statistics of one query row across key tiles.
#[derive(Debug, Clone, Copy)]
pub struct RowState {
    pub max: f32,
    pub sum: f32,
}

impl RowState {
    pub const EMPTY: RowState = RowState { max: f32::NEG_INFINITY, sum: 0.0 };

    /// Folds a tile of masked scores into the state: scores become probabilities relative to the new
    /// running max. Returns the factor the row's output accumulator must be multiplied by, or None
    /// when the max did not move (FA4's conditional rescaling: skip the multiply).
    pub fn absorb(&mut self, scores: &mut [f32]) -> Option<f32> {
        let tile_max = row_max(scores);
        if tile_max == f32::NEG_INFINITY {
            // Every key in this tile is masked: contributes nothing.
            scores.fill(0.0);
            return None;
        }
        let new_max = if tile_max > self.max { tile_max } else { self.max };
        let tile_sum = exp_sub_sum(scores, new_max);
        let rescale = if new_max != self.max && self.max != f32::NEG_INFINITY {
            let alpha = exp_f32(self.max - new_max);
            self.sum *= alpha;
            Some(alpha)
        } else {
            None
        };
        self.max = new_max;
        self.sum += tile_sum;
        rescale
    }

    /// log-sum-exp of the row's scores; -inf for a row that saw no key.
    pub fn lse(&self) -> f32 {
        if self.sum > 0.0 { self.max + self.sum.ln() } else { f32::NEG_INFINITY }
    }

    /// Factor that normalises the accumulated output; 0 for a row that saw no key (output zeros).
    pub fn inv_sum(&self) -> f32 {
        if self.sum > 0.0 { 1.0 / self.sum } else { 0.0 }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_matches_std() {
        let mut worst = 0.0f64;
        let mut x = -87.0f32;
        while x < 88.0 {
            let got = exp_f32(x) as f64;
            let want = (x as f64).exp();
            worst = worst.max(((got - want) / want).abs());
            x += 0.013;
        }
        assert!(worst < 4e-7, "relative error {worst}");
        assert_eq!(exp_f32(f32::NEG_INFINITY), 0.0);
        assert!(exp_f32(f32::NAN).is_nan());
    }

    #[test]
    fn tanh_matches_std() {
        for i in -2000..2000 {
            let x = i as f32 * 0.01;
            assert!((tanh_f32(x) - x.tanh()).abs() < 2e-6, "{x}");
        }
    }

    #[test]
    fn absorb_rescales_only_when_max_moves() {
        let mut st = RowState::EMPTY;
        let mut masked = [f32::NEG_INFINITY; 3];
        assert_eq!(st.absorb(&mut masked), None);
        assert_eq!(masked, [0.0; 3]);
        assert_eq!(st.lse(), f32::NEG_INFINITY);
        assert_eq!(st.inv_sum(), 0.0);
        assert_eq!(st.absorb(&mut [1.0, 2.0]), None, "first tile: nothing accumulated to rescale");
        assert!(st.absorb(&mut [0.0, 1.5]).is_none());
        let alpha = st.absorb(&mut [4.0]).expect("max moved");
        assert!((alpha as f64 - (-2.0f64).exp()).abs() < 1e-7);
        let want = (1.0f64.exp() + 2.0f64.exp() + 1.0 + 1.5f64.exp() + 4.0f64.exp()).ln();
        assert!((st.lse() as f64 - want).abs() < 1e-6);
    }
}
