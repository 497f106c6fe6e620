// Merges the splits of the decode kernel (decode_splitkv.cuh): one warp per packed row; each split s
// holds normalised O_s (f32) and lse_s, so lse = log sum_s exp(lse_s) and O = sum_s exp(lse_s - lse) O_s.
// Rows whose splits all saw no key (lse_s = -inf everywhere) get O = 0 and lse = -inf.
#pragma once
#include "common.cuh"
#include "params.cuh"

namespace flashattn {

constexpr int kCombineWarps = 4;
constexpr int kCombineMaxDv = 256;

template <typename T>
__device__ __forceinline__ void flash_decode_combine(const AttnParams &p, const float *o_part, const float *lse_part,
                                                     int n_splits) {
  constexpr int PER_LANE = kCombineMaxDv / 32;
  const int lane = threadIdx.x & 31;
  const int group = p.heads_q / p.heads_kv;
  const int rows = p.seq_q * group;
  const int64_t gr = (int64_t)blockIdx.x * kCombineWarps + (threadIdx.x >> 5);
  if (gr >= (int64_t)p.batch * p.heads_kv * rows) return;
  const int64_t bk = gr / rows;  // batch * heads_kv + kv_head
  const int r = (int)(gr % rows);
  const int batch = (int)(bk / p.heads_kv), kv_head = (int)(bk % p.heads_kv);
  const int token = r / group, head = kv_head * group + r % group;
  const int dv = p.head_dim_v;
  // Split s of this row: index (bk * n_splits + s) * rows + r.
  const float *lse_s = lse_part + bk * n_splits * rows + r;
  const float *o_s = o_part + (bk * n_splits * rows + r) * dv;
  const int64_t split_stride = (int64_t)rows;

  float mx = -INFINITY;
  for (int s = lane; s < n_splits; s += 32) mx = fmaxf(mx, lse_s[s * split_stride]);
#pragma unroll
  for (int off = 16; off > 0; off >>= 1) mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, off));
  float lse = -INFINITY;
  if (mx != -INFINITY) {
    float sum = 0.f;
    for (int s = lane; s < n_splits; s += 32) sum += expf(lse_s[s * split_stride] - mx);
#pragma unroll
    for (int off = 16; off > 0; off >>= 1) sum += __shfl_xor_sync(0xffffffffu, sum, off);
    lse = mx + logf(sum);  // sum >= 1: the max term is exp(0)
  }

  float acc[PER_LANE];
#pragma unroll
  for (int j = 0; j < PER_LANE; ++j) acc[j] = 0.f;
  if (lse != -INFINITY) {
    for (int s = 0; s < n_splits; ++s) {
      const float w = expf(lse_s[s * split_stride] - lse);  // warp-uniform; 0 for empty splits
      if (w == 0.f) continue;
      const float *os = o_s + s * split_stride * dv;
#pragma unroll
      for (int j = 0; j < PER_LANE; ++j) {
        const int col = lane + 32 * j;
        if (col < dv) acc[j] = fmaf(w, os[col], acc[j]);
      }
    }
  }
  T *orow = reinterpret_cast<T *>(p.out_ptr) + (int64_t)batch * p.out_batch_stride + (int64_t)head * p.out_head_stride +
            (int64_t)token * p.out_row_stride;
#pragma unroll
  for (int j = 0; j < PER_LANE; ++j) {
    const int col = lane + 32 * j;
    if (col < dv) orow[col] = Elem<T>::from_f32(acc[j]);
  }
  if (p.lse_ptr != 0 && lane == 0)
    reinterpret_cast<float *>(p.lse_ptr)[((int64_t)batch * p.heads_q + head) * p.seq_q + token] = lse;
}

}  // namespace flashattn
