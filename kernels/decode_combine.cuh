// Merges the splits of the decode kernel (decode_splitkv.cuh): one block per packed row; each split s
// holds normalised O_s (f32) and lse_s, so lse = log sum_s exp(lse_s) and O = sum_s w_s O_s with
// w_s = exp(lse_s - lse). Rows whose splits all saw no key (lse_s = -inf everywhere) get O = 0 and
// lse = -inf. Each thread takes one column unit of a share of the splits and merges them by a running max
// as it loads them, so all loads are in flight at once whatever the split count; the shares are merged
// through shared memory.
#pragma once
#include "common.cuh"
#include "dependent_launch.cuh"
#include "params.cuh"

namespace flashattn {

constexpr int kCombineThreads = 256;  // src/gpu/decode.rs COMBINE_THREADS
constexpr int kCombineMaxDv = 256;
constexpr int kBatch = 8;  // splits a thread loads before merging them

// max that keeps a NaN (fmaxf drops it): a NaN partial must reach the output, not vanish.
__device__ __forceinline__ float nan_max(float a, float b) { return a != a ? a : ((b != b || b > a) ? b : a); }

__device__ __forceinline__ float4 fma4(float w, float4 x, float4 acc) {
  return make_float4(fmaf(w, x.x, acc.x), fmaf(w, x.y, acc.y), fmaf(w, x.z, acc.z), fmaf(w, x.w, acc.w));
}

// One packed row (blockIdx.x). VEC: float4 column units (head_dim_v % 4 == 0, so workspace rows stay
// 16-byte aligned), else floats; a separate instantiation so a block runs (and fetches) one of them only.
template <typename T, bool VEC>
__device__ __forceinline__ void combine_row(const AttnParams &p, const float *o_part, const float *lse_part, int n_splits,
                                            float4 *part, float *run_max, float *run_sum) {
  const int tid = threadIdx.x;
  const int group = p.heads_q / p.heads_kv;
  const int rows = p.seq_q * group;
  const int64_t bk = blockIdx.x / rows;  // batch * heads_kv + kv_head
  const int r = (int)(blockIdx.x % rows);
  const int batch = (int)(bk / p.heads_kv), kv_head = (int)(bk % p.heads_kv);
  const int token = r / group, head = kv_head * group + r % group;
  const int dv = p.head_dim_v;
  // Split s of this row: index (bk * n_splits + s) * rows + r.
  const float *lse_s = lse_part + bk * n_splits * rows + r;
  const float *o_s = o_part + (bk * n_splits * rows + r) * dv;
  const int64_t split_stride = rows;

  // Column units: `per` threads cover a row's units (two each past kCombineThreads), `shares` groups of them walk the splits side by side,
  // each merging its splits by a running max (lse and O loaded together).
  constexpr bool vec = VEC;
  const int units = vec ? dv / 4 : dv;
  const int per = units < kCombineThreads ? units : kCombineThreads;
  const int shares = kCombineThreads / per;
  const int share = tid / per, c = tid % per;
  float m = -INFINITY, l = 0.f;
  float4 acc[2] = {make_float4(0.f, 0.f, 0.f, 0.f), make_float4(0.f, 0.f, 0.f, 0.f)};
  if (share < shares) {
    // Batches of kBatch splits: every load of a batch is issued before any of them is used (the merge has no
    // branch to hold them back), so a row costs one round trip per batch, not one per split.
    for (int s0 = share; s0 < n_splits; s0 += kBatch * shares) {
      float ls[kBatch];
      float4 x[kBatch][2];
#pragma unroll
      for (int k = 0; k < kBatch; ++k) {
        const int s = s0 + k * shares;
        const bool ok = s < n_splits;
        ls[k] = ok ? lse_s[s * split_stride] : -INFINITY;
        const float *os = o_s + (ok ? s : 0) * split_stride * dv;
#pragma unroll
        for (int j = 0; j < 2; ++j) {
          const int u = c + j * per;
          x[k][j] = make_float4(0.f, 0.f, 0.f, 0.f);
          if (ok && u < units) {
            if constexpr (vec)
              x[k][j] = *reinterpret_cast<const float4 *>(os + 4 * u);
            else
              x[k][j].x = os[u];
          }
        }
      }
#pragma unroll
      for (int k = 0; k < kBatch; ++k) {
        const float mn = nan_max(m, ls[k]);
        const bool none = mn == -INFINITY;  // no key in any split so far (O_s of such splits is 0)
        const float a = none ? 0.f : __expf(m - mn), b = none ? 0.f : __expf(ls[k] - mn);
        l = l * a + b;
#pragma unroll
        for (int j = 0; j < 2; ++j)
          acc[j] = make_float4(acc[j].x * a + b * x[k][j].x, acc[j].y * a + b * x[k][j].y,
                               acc[j].z * a + b * x[k][j].z, acc[j].w * a + b * x[k][j].w);
        m = mn;
      }
    }
  }
  part[tid] = acc[0];
  part[kCombineThreads + tid] = acc[1];
  run_max[tid] = m;
  run_sum[tid] = l;
  __syncthreads();
  if (tid >= per) return;

  // Merge the shares of column unit c: rescale each to the largest max.
  float mx = -INFINITY;
  for (int sh = 0; sh < shares; ++sh) mx = nan_max(mx, run_max[sh * per + c]);
  float total = 0.f;
  float4 sum[2] = {make_float4(0.f, 0.f, 0.f, 0.f), make_float4(0.f, 0.f, 0.f, 0.f)};
  if (mx != -INFINITY) {
    for (int sh = 0; sh < shares; ++sh) {
      const int t = sh * per + c;
      const float f = __expf(run_max[t] - mx);
      total += f * run_sum[t];
#pragma unroll
      for (int j = 0; j < 2; ++j) sum[j] = fma4(f, part[j * kCombineThreads + t], sum[j]);
    }
  }
  const float inv = total == 0.f ? 0.f : 1.f / total;  // total >= 1 when any split saw a key (or NaN)
  const float lse = total == 0.f ? -INFINITY : mx + logf(total);

  T *orow = reinterpret_cast<T *>(p.out_ptr) + (int64_t)batch * p.out_batch_stride + (int64_t)head * p.out_head_stride +
            (int64_t)token * p.out_row_stride;
#pragma unroll
  for (int j = 0; j < 2; ++j) {
    const int u = c + j * per;
    if (u >= units) continue;
    if constexpr (vec) {
      orow[4 * u] = Elem<T>::from_f32(sum[j].x * inv);
      orow[4 * u + 1] = Elem<T>::from_f32(sum[j].y * inv);
      orow[4 * u + 2] = Elem<T>::from_f32(sum[j].z * inv);
      orow[4 * u + 3] = Elem<T>::from_f32(sum[j].w * inv);
    } else {
      orow[u] = Elem<T>::from_f32(sum[j].x * inv);
    }
  }
  if (p.lse_ptr != 0 && tid == 0)
    reinterpret_cast<float *>(p.lse_ptr)[((int64_t)batch * p.heads_q + head) * p.seq_q + token] = lse;
}

template <typename T>
__device__ __forceinline__ void flash_decode_combine(const AttnParams &p, const float *o_part, const float *lse_part,
                                                     int n_splits) {
  __shared__ float4 part[2 * kCombineThreads];
  __shared__ float run_max[kCombineThreads], run_sum[kCombineThreads];
  dependent_wait();  // the partials come from the decode kernel just before
  if (p.head_dim_v > kCombineMaxDv) __trap();  // the decode kernels stop at 256
  if ((p.head_dim_v & 3) == 0)
    combine_row<T, true>(p, o_part, lse_part, n_splits, part, run_max, run_sum);
  else
    combine_row<T, false>(p, o_part, lse_part, n_splits, part, run_max, run_sum);
}

}  // namespace flashattn
