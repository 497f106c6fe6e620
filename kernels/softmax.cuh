// Online softmax over a warp's rows: running max m and (thread-partial) running sum l per row; each new
// S tile is turned into probabilities in place and the O accumulator is rescaled. Rows with no visible key
// keep m = -inf and l = 0 and end as zeros with lse = -inf.
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

  __device__ __forceinline__ void update(float (&s)[MT][NTN][4], float (&o)[MT][NTD][4]) {
#pragma unroll
    for (int mt = 0; mt < MT; ++mt) {
#pragma unroll
      for (int hf = 0; hf < 2; ++hf) {
        float mx = m[mt][hf];
#pragma unroll
        for (int nt = 0; nt < NTN; ++nt) mx = fmaxf(mx, fmaxf(s[mt][nt][2 * hf], s[mt][nt][2 * hf + 1]));
        mx = quad_max(mx);
        const float m_use = mx == -INFINITY ? 0.f : mx;
        const float corr = exp2f((m[mt][hf] - m_use) * kLog2e);
        m[mt][hf] = mx;
        l[mt][hf] *= corr;
#pragma unroll
        for (int nd = 0; nd < NTD; ++nd) {
          o[mt][nd][2 * hf] *= corr;
          o[mt][nd][2 * hf + 1] *= corr;
        }
        const float mb = m_use * kLog2e;
        float sum = 0.f;
#pragma unroll
        for (int nt = 0; nt < NTN; ++nt) {
#pragma unroll
          for (int e = 0; e < 2; ++e) {
            const float pr = exp2f(fmaf(s[mt][nt][2 * hf + e], kLog2e, -mb));
            s[mt][nt][2 * hf + e] = pr;
            sum += pr;
          }
        }
        l[mt][hf] += sum;
      }
    }
  }

  // Full row sums (across the 4 threads of a row) and natural-log lse.
  __device__ __forceinline__ void finalize(float (&inv)[MT][2], float (&lse)[MT][2]) {
#pragma unroll
    for (int mt = 0; mt < MT; ++mt)
#pragma unroll
      for (int hf = 0; hf < 2; ++hf) {
        const float tot = quad_sum(l[mt][hf]);
        const bool any = tot > 0.f;
        inv[mt][hf] = any ? 1.f / tot : 0.f;
        lse[mt][hf] = any ? m[mt][hf] + logf(tot) : -INFINITY;
      }
  }
};

}  // namespace flashattn
