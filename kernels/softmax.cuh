// Online softmax over a warp's rows: running max m (raw score units) and thread-partial running sum l per
// row; each new S tile becomes probabilities in place, p = 2^(s*scale*log2e - m*scale*log2e), and the O
// accumulator is rescaled — skipped when no row of the warp raised its max. Rows with no visible key keep
// m = -inf and l = 0 and end as zeros with lse = -inf.
#pragma once
#include "common.cuh"

namespace flashattn {

template <int MT, int NTN, int NTD> struct OnlineSoftmax {
  float m[MT][2];
  float l[MT][2];

  __device__ __forceinline__ void init() {
#pragma unroll
    for (int mt = 0; mt < MT; ++mt)
#pragma unroll
      for (int hf = 0; hf < 2; ++hf) {
        m[mt][hf] = -INFINITY;
        l[mt][hf] = 0.f;
      }
  }

  // Turns a tile of raw scores into probabilities in place, p = 2^(s*scale_log2 - m*scale_log2), folding them
  // into the running sums. corr[mt][hf] is the factor the O accumulator's row must be multiplied by; the
  // result says whether any row of the warp needs it. With RESCALE_THRESHOLD > 0 (FlashAttention-4's
  // conditional rescaling) a row keeps its stale max until the new one exceeds it by more than that many
  // powers of two: p then stays below 2^threshold, O and l share the stale max, so the final
  // normalisation is still exact. EMULATED_EXP2_EVERY = k > 0 computes every k-th 8-column tile's
  // exponentials with a polynomial on the FMA units instead of the special-function unit.
  template <int RESCALE_THRESHOLD = 0, int EMULATED_EXP2_EVERY = 0>
  __device__ __forceinline__ bool exponentiate(float (&s)[MT][NTN][4], float (&corr)[MT][2], float scale_log2) {
    bool rescale = false;
#pragma unroll
    for (int mt = 0; mt < MT; ++mt)
#pragma unroll
      for (int hf = 0; hf < 2; ++hf)
        rescale |= exponentiate_row<RESCALE_THRESHOLD, EMULATED_EXP2_EVERY>(s, corr, scale_log2, mt, hf);
    return rescale;
  }

  // exponentiate for one row (m-tile mt, half hf) of the thread: whether its max moved.
  template <int RESCALE_THRESHOLD = 0, int EMULATED_EXP2_EVERY = 0>
  __device__ __forceinline__ bool exponentiate_row(float (&s)[MT][NTN][4], float (&corr)[MT][2], float scale_log2, int mt,
                                                   int hf) {
    // Reductions over the row's NTN*2 values in NP independent chains (latency, not throughput, bound). The
    // chains start from the row's own values (not from the old max or 0, which would cost an operation per
    // chain); the old max joins once.
    constexpr int NP = NTN >= 4 ? 4 : NTN;
    float pm[NP];
#pragma unroll
    for (int nt = 0; nt < NTN; ++nt) {
      const float v = fmaxf(s[mt][nt][2 * hf], s[mt][nt][2 * hf + 1]);
      pm[nt % NP] = nt < NP ? v : fmaxf(pm[nt % NP], v);
    }
    float mx = pm[0];
#pragma unroll
    for (int i = 1; i < NP; ++i) mx = fmaxf(mx, pm[i]);
    mx = fmaxf(quad_max(mx), m[mt][hf]);
    if (RESCALE_THRESHOLD > 0 && (mx - m[mt][hf]) * scale_log2 <= (float)RESCALE_THRESHOLD) mx = m[mt][hf];
    const float mb = mx == -INFINITY ? 0.f : mx * scale_log2;
    corr[mt][hf] = fast_exp2(m[mt][hf] * scale_log2 - mb);  // m_old = -inf -> 0
    const bool moved = mx != m[mt][hf];
    m[mt][hf] = mx;
    float ps[NP];
#pragma unroll
    for (int nt = 0; nt < NTN; ++nt) {
#pragma unroll
      for (int e = 0; e < 2; ++e) {
        const float x = fmaf(s[mt][nt][2 * hf + e], scale_log2, -mb);
        const bool emulate = EMULATED_EXP2_EVERY > 0 && (nt + 1) % (EMULATED_EXP2_EVERY > 0 ? EMULATED_EXP2_EVERY : 1) == 0;
        const float pr = emulate ? poly_exp2(x) : fast_exp2(x);
        s[mt][nt][2 * hf + e] = pr;
        ps[nt % NP] = nt < NP && e == 0 ? pr : ps[nt % NP] + pr;
      }
    }
    float sum = ps[0];
#pragma unroll
    for (int i = 1; i < NP; ++i) sum += ps[i];
    l[mt][hf] = l[mt][hf] * corr[mt][hf] + sum;
    return moved;
  }

  __device__ __forceinline__ static void rescale(float (&o)[MT][NTD][4], const float (&corr)[MT][2]) {
#pragma unroll
    for (int mt = 0; mt < MT; ++mt)
#pragma unroll
      for (int nd = 0; nd < NTD; ++nd) {
        o[mt][nd][0] *= corr[mt][0];
        o[mt][nd][1] *= corr[mt][0];
        o[mt][nd][2] *= corr[mt][1];
        o[mt][nd][3] *= corr[mt][1];
      }
  }

  // scale_log2 = scale * log2(e); the O rescale is skipped when no row of the warp raised its max.
  __device__ __forceinline__ void update(float (&s)[MT][NTN][4], float (&o)[MT][NTD][4], float scale_log2) {
    float corr[MT][2];
    if (__any_sync(0xffffffffu, exponentiate(s, corr, scale_log2))) rescale(o, corr);
  }

  // Full row sums (across the 4 threads of a row), their inverses, and natural-log lse. A row that saw a key
  // has a sum of at least 1 (its max contributes 2^0, or more against a stale max), far from where the
  // special-function unit's reciprocal and log2 lose accuracy, so they need no IEEE slow paths.
  __device__ __forceinline__ void finalize(float (&inv)[MT][2], float (&lse)[MT][2], float scale) {
#pragma unroll
    for (int mt = 0; mt < MT; ++mt)
#pragma unroll
      for (int hf = 0; hf < 2; ++hf) {
        const float tot = quad_sum(l[mt][hf]);
        const bool any = tot > 0.f;
        inv[mt][hf] = any ? __fdividef(1.f, tot) : 0.f;
        lse[mt][hf] = any ? m[mt][hf] * scale + __log2f(tot) * kLn2 : -INFINITY;
      }
  }
};

}  // namespace flashattn
