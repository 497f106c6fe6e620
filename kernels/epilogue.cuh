// Writes O (normalised) and lse for a warp's rows; rows >= seq_q and cols >= head_dim_v are skipped. With GQA
// packing (row_shift > 0, gqa_pack.cuh) rows are packed rows and h is the group's first query head.
#pragma once
#include "common.cuh"
#include "params.cuh"

namespace flashattn {

// lse of query row `row` of head h + head_in_group, batch entry b (the lanes of a quad hold the same value: the first
// one writes).
__device__ __forceinline__ void store_lse_row(const AttnParams &p, float lse, int b, int h, int head_in_group, int row,
                                              int lane) {
  if (p.lse_ptr != 0 && (lane & 3) == 0)
    reinterpret_cast<float *>(p.lse_ptr)[((int64_t)b * p.heads_q + h + head_in_group) * p.seq_q + row] = lse;
}

template <typename T, int MT, int NTD>
__device__ __forceinline__ void store_output(const AttnParams &p, const float (&o)[MT][NTD][4],
                                             const float (&inv)[MT][2], const float (&lse)[MT][2], int b,
                                             int h, int row_base, int lane, int row_shift = 0) {
  T *out = reinterpret_cast<T *>(p.out_ptr) + (int64_t)b * p.out_batch_stride + (int64_t)h * p.out_head_stride;
  const int dv = p.head_dim_v;
  // Pairs of elements can be stored as one 4-byte word when every row start is 4-byte aligned; when also every
  // column of the tile exists (the common case), without a check per pair.
  const bool pairs = ((p.out_ptr & 3) == 0) && ((p.out_batch_stride | p.out_head_stride | p.out_row_stride) & 1) == 0;
  const bool whole_rows = pairs && dv >= NTD * 8;
#pragma unroll
  for (int mt = 0; mt < MT; ++mt) {
#pragma unroll
    for (int hf = 0; hf < 2; ++hf) {
      const int packed = row_base + mt * 16 + (lane >> 2) + 8 * hf;
      const int row = packed >> row_shift, head_in_group = packed & ((1 << row_shift) - 1);
      if (row >= p.seq_q) continue;
      T *orow = out + (int64_t)row * p.out_row_stride + (int64_t)head_in_group * p.out_head_stride;
      if (whole_rows) {
#pragma unroll
        for (int nd = 0; nd < NTD; ++nd)
          *reinterpret_cast<uint32_t *>(orow + nd * 8 + 2 * (lane & 3)) =
              Elem<T>::pack2(o[mt][nd][2 * hf] * inv[mt][hf], o[mt][nd][2 * hf + 1] * inv[mt][hf]);
      } else {
#pragma unroll
        for (int nd = 0; nd < NTD; ++nd) {
          const int col = nd * 8 + 2 * (lane & 3);
          const float v0 = o[mt][nd][2 * hf] * inv[mt][hf];
          const float v1 = o[mt][nd][2 * hf + 1] * inv[mt][hf];
          if (pairs && col + 1 < dv) {
            *reinterpret_cast<uint32_t *>(orow + col) = Elem<T>::pack2(v0, v1);
          } else {
            if (col < dv) orow[col] = Elem<T>::from_f32(v0);
            if (col + 1 < dv) orow[col + 1] = Elem<T>::from_f32(v1);
          }
        }
      }
      store_lse_row(p, lse[mt][hf], b, h, head_in_group, row, lane);
    }
  }
}

// Where split-KV partial results go (the Hopper kernels' `_packgqa` and `_split` instances; n == 1: no split,
// straight to the outputs): split s of packed row r (query position t of head j of a KV head's group: r = t * g +
// j) of (batch b, KV head h) at ((b * heads_kv + h) * n + s) * seq_q * g + r, O normalised (f32, head_dim_v per
// row) and lse: the decode kernel's workspace layout, which its combine kernel merges.
struct SplitParts {
  float *o, *lse;
  int n;
};

// How a tile's rows map to packed rows: row r (< valid) is packed row r * mul + add; `packed` rows per KV head.
// GQA-packed tiles: r itself; a tile of one query head h: position r of head h % g.
struct PartialRows {
  int valid, mul, add, packed;
};

// A warp's rows of one split: normalised O and lse into `parts`.
template <int MT, int NTD>
__device__ __forceinline__ void store_partial(const AttnParams &p, const float (&o)[MT][NTD][4], const float (&inv)[MT][2],
                                              const float (&lse)[MT][2], const SplitParts &parts, int b, int kv_head,
                                              int split, const PartialRows &rows, int row_base, int lane) {
  const int dv = p.head_dim_v;
#pragma unroll
  for (int mt = 0; mt < MT; ++mt) {
#pragma unroll
    for (int hf = 0; hf < 2; ++hf) {
      const int r = row_base + mt * 16 + (lane >> 2) + 8 * hf;
      if (r >= rows.valid) continue;
      const int64_t at = (((int64_t)b * p.heads_kv + kv_head) * parts.n + split) * rows.packed + r * rows.mul + rows.add;
      float *orow = parts.o + at * dv;
#pragma unroll
      for (int nd = 0; nd < NTD; ++nd) {
        const int col = nd * 8 + 2 * (lane & 3);
        const float v0 = o[mt][nd][2 * hf] * inv[mt][hf], v1 = o[mt][nd][2 * hf + 1] * inv[mt][hf];
        if ((dv & 1) == 0 && col + 1 < dv) {
          *reinterpret_cast<float2 *>(orow + col) = make_float2(v0, v1);
        } else {
          if (col < dv) orow[col] = v0;
          if (col + 1 < dv) orow[col + 1] = v1;
        }
      }
      if ((lane & 3) == 0) parts.lse[at] = lse[mt][hf];
    }
  }
}

}  // namespace flashattn
