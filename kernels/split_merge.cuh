// Merging key splits of one query row (FlashDecoding): split s holds its normalised O_s and lse_s (natural
// log), so lse = log sum_s exp(lse_s) and O = sum_s w_s O_s with w_s = exp(lse_s - lse). Folded in by batches
// of splits against a running max; rows whose splits all saw no key (lse_s = -inf everywhere) end with O = 0 and
// lse = -inf. Used by the combine kernel (decode_combine.cuh) and by the in-cluster merge (decode_cluster.cuh).
#pragma once
#include "common.cuh"

namespace flashattn {

// max that keeps a NaN (fmaxf drops it): a NaN partial must reach the output, not vanish.
__device__ __forceinline__ float nan_max(float a, float b) { return a != a ? a : ((b != b || b > a) ? b : a); }

__device__ __forceinline__ float4 fma4(float w, float4 x, float4 acc) {
  return make_float4(fmaf(w, x.x, acc.x), fmaf(w, x.y, acc.y), fmaf(w, x.z, acc.z), fmaf(w, x.w, acc.w));
}

// Running merge of four columns of one row: m the largest lse so far, l the sum of exp(lse_s - m), acc the
// sum of exp(lse_s - m) O_s.
struct SplitMerge {
  float m = -INFINITY, l = 0.f;
  float4 acc = make_float4(0.f, 0.f, 0.f, 0.f);

  // Folds in N splits (those past the end: lse_s = -inf, O_s = 0): their largest lse first, then every weight
  // independently, so a batch costs one exponential's latency, not a chain of N.
  template <int N> __device__ __forceinline__ void add_batch(const float (&lse_s)[N], const float4 (&o_s)[N]) {
    float mn = m;
#pragma unroll
    for (int k = 0; k < N; ++k) mn = nan_max(mn, lse_s[k]);
    if (mn == -INFINITY) return;  // no key in any split so far
    const float a = __expf(m - mn);
    l *= a;
    acc = make_float4(acc.x * a, acc.y * a, acc.z * a, acc.w * a);
#pragma unroll
    for (int k = 0; k < N; ++k) {
      const float b = __expf(lse_s[k] - mn);
      l += b;
      acc = fma4(b, o_s[k], acc);
    }
    m = mn;
  }
  // 1 / the weights' sum (0 when no split saw a key: the sum is >= 1 otherwise, or NaN) and the merged lse.
  __device__ __forceinline__ float inverse() const { return l == 0.f ? 0.f : fast_rcp(l); }
  __device__ __forceinline__ float lse() const { return l == 0.f ? -INFINITY : m + logf(l); }
};

}  // namespace flashattn
