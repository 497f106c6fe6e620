// The key splits of one (batch, KV head) merged inside a thread-block cluster (Hopper and newer): the C blocks
// of a cluster are the C splits of the decode kernel (decode_splitkv.cuh CLUSTER). Each block leaves its
// normalised rows (O in f32, and lse) in its own shared memory; after a cluster barrier block `split` merges
// rows split, split + C, ... from every block's copy through distributed shared memory and writes the outputs.
// No workspace and no combine launch: what the combine kernel (decode_combine.cuh) costs at batch 1 and 8
// (a launch, and the partials' round trip through memory) is what this saves.
#pragma once
#include "cluster.cuh"
#include "common.cuh"
#include "params.cuh"
#include "split_merge.cuh"

namespace flashattn {

// Where a block leaves its rows: Cfg::ROWS rows of XD floats (O), then ROWS lse values, placed in the K/V
// stages after the cross-warp merge buffer (which is still being read while the rows are written).
template <class Cfg> struct ClusterRows {
  static constexpr int XD = Cfg::D + 8;  // row stride: a warp's eight rows of one store land on four banks, not one
  static constexpr int OFFSET = Cfg::RED_FLOATS;  // floats from the start of the K/V stages
  static constexpr int FLOATS = Cfg::ROWS * (XD + 1);
  static_assert(OFFSET % 4 == 0 && XD % 4 == 0, "rows must stay 16-byte aligned");
  static_assert((OFFSET + FLOATS) * 4 <= 2 * Cfg::STAGES * Cfg::BN * Cfg::D * 2, "the rows must fit the K/V stages");
};

// Block `split` of `n_splits` merges packed rows split, split + n_splits, ... < rows of every block's
// ClusterRows at shared-memory address `rows_addr`, and stores O (and lse) of those rows. Each thread takes
// four columns of one row; every split's loads (a cluster holds at most 16) are issued before any is merged.
template <typename T, class Cfg>
__device__ __forceinline__ void cluster_merge_rows(const AttnParams &p, uint32_t rows_addr, int rows, int split,
                                                   int n_splits, int batch, int kv_head, int group, int tid) {
  using X = ClusterRows<Cfg>;
  constexpr int UNITS = Cfg::D / 4, ROWS_PER_PASS = Cfg::NT / UNITS, BATCH = 16;
  const int mine = split < rows ? (rows - split + n_splits - 1) / n_splits : 0;
  const int dv = p.head_dim_v, c = tid % UNITS;
  for (int k = tid / UNITS; k < mine; k += ROWS_PER_PASS) {
    const int r = split + k * n_splits;
    const uint32_t o_addr = rows_addr + (r * X::XD + 4 * c) * 4, lse_addr = rows_addr + (Cfg::ROWS * X::XD + r) * 4;
    SplitMerge mg;
    for (int s0 = 0; s0 < n_splits; s0 += BATCH) {
      float ls[BATCH];
      float4 x[BATCH];
#pragma unroll
      for (int j = 0; j < BATCH; ++j) {
        const bool ok = s0 + j < n_splits;
        ls[j] = ok ? ld_cluster(cluster_peer(lse_addr, s0 + j)) : -INFINITY;
        x[j] = ok ? ld_cluster4(cluster_peer(o_addr, s0 + j)) : make_float4(0.f, 0.f, 0.f, 0.f);
      }
      mg.add_batch(ls, x);
    }
    const float inv = mg.inverse();
    const int token = r / group, head = kv_head * group + r % group;
    T *orow = reinterpret_cast<T *>(p.out_ptr) + (int64_t)batch * p.out_batch_stride + (int64_t)head * p.out_head_stride +
              (int64_t)token * p.out_row_stride;
    const float v[4] = {mg.acc.x * inv, mg.acc.y * inv, mg.acc.z * inv, mg.acc.w * inv};
#pragma unroll
    for (int e = 0; e < 4; ++e)
      if (4 * c + e < dv) orow[4 * c + e] = Elem<T>::from_f32(v[e]);
    if (p.lse_ptr != 0 && c == 0)
      reinterpret_cast<float *>(p.lse_ptr)[((int64_t)batch * p.heads_q + head) * p.seq_q + token] = mg.lse();
  }
}

}  // namespace flashattn
