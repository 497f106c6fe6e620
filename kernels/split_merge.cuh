// Merging key splits of one query row (FlashDecoding): split s holds its normalised O_s and lse_s (natural
// log), so lse = log sum_s exp(lse_s) and O = sum_s w_s O_s with w_s = exp(lse_s - lse). Folded in one split at
// a time by a running max; rows whose splits all saw no key (lse_s = -inf everywhere) end with O = 0 and
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

  __device__ __forceinline__ void add(float lse_s, float4 o_s) {
    const float mn = nan_max(m, lse_s);
    const bool none = mn == -INFINITY;  // no key in any split so far (O_s of such splits is 0)
    const float a = none ? 0.f : __expf(m - mn), b = none ? 0.f : __expf(lse_s - mn);
    l = l * a + b;
    acc = make_float4(acc.x * a + b * o_s.x, acc.y * a + b * o_s.y, acc.z * a + b * o_s.z, acc.w * a + b * o_s.w);
    m = mn;
  }
  // 1 / the weights' sum (0 when no split saw a key: the sum is >= 1 otherwise, or NaN) and the merged lse.
  __device__ __forceinline__ float inverse() const { return l == 0.f ? 0.f : 1.f / l; }
  __device__ __forceinline__ float lse() const { return l == 0.f ? -INFINITY : m + logf(l); }
};

}  // namespace flashattn
