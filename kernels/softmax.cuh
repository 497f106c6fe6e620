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

  // scale_log2 = scale * log2(e)
  __device__ __forceinline__ void update(float (&s)[MT][NTN][4], float (&o)[MT][NTD][4], float scale_log2) {
    float corr[MT][2];
    bool rescale = false;
#pragma unroll
    for (int mt = 0; mt < MT; ++mt) {
#pragma unroll
      for (int hf = 0; hf < 2; ++hf) {
        // Reductions over the row's NTN*2 values in NP independent chains (latency, not throughput, bound).
        constexpr int NP = NTN >= 4 ? 4 : NTN;
        float pm[NP];
#pragma unroll
        for (int i = 0; i < NP; ++i) pm[i] = m[mt][hf];
#pragma unroll
        for (int nt = 0; nt < NTN; ++nt) pm[nt % NP] = fmaxf(pm[nt % NP], fmaxf(s[mt][nt][2 * hf], s[mt][nt][2 * hf + 1]));
        float mx = pm[0];
#pragma unroll
        for (int i = 1; i < NP; ++i) mx = fmaxf(mx, pm[i]);
        mx = quad_max(mx);
        const float mb = mx == -INFINITY ? 0.f : mx * scale_log2;
        corr[mt][hf] = fast_exp2(m[mt][hf] * scale_log2 - mb);  // m_old = -inf -> 0
        rescale |= mx != m[mt][hf];
        m[mt][hf] = mx;
        float ps[NP];
#pragma unroll
        for (int i = 0; i < NP; ++i) ps[i] = 0.f;
#pragma unroll
        for (int nt = 0; nt < NTN; ++nt) {
#pragma unroll
          for (int e = 0; e < 2; ++e) {
            const float pr = fast_exp2(fmaf(s[mt][nt][2 * hf + e], scale_log2, -mb));
            s[mt][nt][2 * hf + e] = pr;
            ps[nt % NP] += pr;
          }
        }
        float sum = ps[0];
#pragma unroll
        for (int i = 1; i < NP; ++i) sum += ps[i];
        l[mt][hf] = l[mt][hf] * corr[mt][hf] + sum;
      }
    }
    if (__any_sync(0xffffffffu, rescale)) {
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
  }

  // Full row sums (across the 4 threads of a row), their inverses, and natural-log lse.
  __device__ __forceinline__ void finalize(float (&inv)[MT][2], float (&lse)[MT][2], float scale) {
#pragma unroll
    for (int mt = 0; mt < MT; ++mt)
#pragma unroll
      for (int hf = 0; hf < 2; ++hf) {
        const float tot = quad_sum(l[mt][hf]);
        const bool any = tot > 0.f;
        inv[mt][hf] = any ? 1.f / tot : 0.f;
        lse[mt][hf] = any ? m[mt][hf] * scale + logf(tot) : -INFINITY;
      }
  }
};

}  // namespace flashattn
