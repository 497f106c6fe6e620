// Merges the splits of the decode kernel (decode_splitkv.cuh) from the workspace, a few packed rows per block
// (split_merge.cuh says how). Each thread takes one column unit of a share of the splits and merges them in batches
// as it loads them, so all loads are in flight at once whatever the split count; the shares are merged
// through shared memory.
#pragma once
#include "common.cuh"
#include "dependent_launch.cuh"
#include "key_padding.cuh"
#include "params.cuh"
#include "split_merge.cuh"

namespace flashattn {

constexpr int kCombineThreads = 256;  // src/gpu/decode.rs COMBINE_THREADS
constexpr int kCombineMaxDv = 256;
constexpr int kCombineBatch = 8;  // splits a thread loads before merging them

// rows_per_block packed rows per block (the launcher's choice, src/gpu/decode.rs combine_rows_per_block),
// kCombineThreads / rows_per_block threads each: one column unit per thread (at least as many threads as
// units), the threads left over walking other shares of the splits side by side. VEC: float4 column
// units (head_dim_v % 4 == 0, so workspace rows stay 16-byte aligned), else floats; a separate
// instantiation so a block runs (and fetches) one of them only.
template <typename T, bool VEC>
__device__ __forceinline__ void combine_rows(const AttnParams &p, const float *o_part, const float *lse_part, int n_splits,
                                             int rows_per_block, float4 *part, float *run_max, float *run_sum) {
  const int dv = p.head_dim_v;
  const int units = VEC ? dv / 4 : dv;
  const int tpr = kCombineThreads / rows_per_block;
  if (tpr < units) __trap();  // the launcher gives every row a thread per column unit
  const int slot = threadIdx.x / tpr, lt = threadIdx.x % tpr;
  const int group = p.heads_q / p.heads_kv;
  const int rows = p.seq_q * group;
  const int total_rows = p.batch * p.heads_kv * rows;  // < 2^31: the launcher checks
  const int gr = blockIdx.x * rows_per_block + slot;
  const bool valid = gr < total_rows;  // threads of rows past the end still take part in the barrier
  const int bk = valid ? gr / rows : 0;  // batch * heads_kv + kv_head
  const int r = valid ? gr % rows : 0;
  // Split s of this row: index (bk * n_splits + s) * rows + r.
  const float *lse_s = lse_part + ((int64_t)bk * n_splits * rows + r);
  const float *o_s = o_part + ((int64_t)bk * n_splits * rows + r) * dv;
  const int64_t split_stride = rows;

  const int shares = tpr / units;
  const int share = lt / units, c = lt % units;
  const int batch = bk / p.heads_kv, kv_head = bk % p.heads_kv;
  const int token = r / group, head = kv_head * group + r % group;
  // Under a dependent launch the block gets here while the decode kernel still runs: the index arithmetic
  // above is done by then, the loads below must wait for its partials.
  dependent_wait();
  SplitMerge mg;
  if (valid && share < shares) {
    // Batches of kCombineBatch splits: every load of a batch is issued before any of them is used (the merge has no
    // branch to hold them back), so a row costs one round trip per batch, not one per split.
    for (int s0 = share; s0 < n_splits; s0 += kCombineBatch * shares) {
      float ls[kCombineBatch];
      float4 x[kCombineBatch];
#pragma unroll
      for (int k = 0; k < kCombineBatch; ++k) {
        const int s = s0 + k * shares;
        const bool ok = s < n_splits;
        ls[k] = ok ? lse_s[s * split_stride] : -INFINITY;
        const float *os = o_s + (ok ? s : 0) * split_stride * dv;
        x[k] = make_float4(0.f, 0.f, 0.f, 0.f);
        if (ok) {
          if constexpr (VEC)
            x[k] = *reinterpret_cast<const float4 *>(os + 4 * c);
          else
            x[k].x = os[c];
        }
      }
      mg.add_batch(ls, x);
    }
  }
  part[threadIdx.x] = mg.acc;
  run_max[threadIdx.x] = mg.m;
  run_sum[threadIdx.x] = mg.l;
  __syncthreads();
  if (!valid || lt >= units) return;

  // Merge the shares of column unit c: rescale each to the largest max.
  const int base = slot * tpr + c;
  float mx = -INFINITY;
  for (int sh = 0; sh < shares; ++sh) mx = nan_max(mx, run_max[base + sh * units]);
  SplitMerge all{mx};  // the shares' merged state: all.l >= 1 when any split saw a key (or NaN)
  if (mx != -INFINITY) {
    for (int sh = 0; sh < shares; ++sh) {
      const int t = base + sh * units;
      const float f = __expf(run_max[t] - mx);
      all.l += f * run_sum[t];
      all.acc = fma4(f, part[t], all.acc);
    }
  }
  const float inv = all.inverse(), lse = all.lse();
  const float4 sum = all.acc;

  T *orow = reinterpret_cast<T *>(p.out_ptr) + (int64_t)batch * p.out_batch_stride + (int64_t)head * p.out_head_stride +
            (int64_t)token * p.out_row_stride;
  if constexpr (VEC) {
    orow[4 * c] = Elem<T>::from_f32(sum.x * inv);
    orow[4 * c + 1] = Elem<T>::from_f32(sum.y * inv);
    orow[4 * c + 2] = Elem<T>::from_f32(sum.z * inv);
    orow[4 * c + 3] = Elem<T>::from_f32(sum.w * inv);
  } else {
    orow[c] = Elem<T>::from_f32(sum.x * inv);
  }
  if (p.lse_ptr != 0 && c == 0)
    reinterpret_cast<float *>(p.lse_ptr)[((int64_t)batch * p.heads_q + head) * p.seq_q + token] = lse;
}

template <typename T>
__device__ __forceinline__ void flash_decode_combine(const AttnParams &p, const float *o_part, const float *lse_part,
                                                     int n_splits, int rows_per_block) {
  __shared__ float4 part[kCombineThreads];
  __shared__ float run_max[kCombineThreads], run_sum[kCombineThreads];
  if (p.head_dim_v > kCombineMaxDv) __trap();  // the decode kernels stop at 256
  if (!gate_open(p)) return;  // the split prefill launch it merges was gated off (key_padding.cuh)
  if ((p.head_dim_v & 3) == 0)
    combine_rows<T, true>(p, o_part, lse_part, n_splits, rows_per_block, part, run_max, run_sum);
  else
    combine_rows<T, false>(p, o_part, lse_part, n_splits, rows_per_block, part, run_max, run_sum);
}

}  // namespace flashattn
