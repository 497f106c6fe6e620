// GQA packing (Hopper kernel): the g = heads_q / heads_kv query heads that share a KV head are computed as one
// head of g times the rows, interleaved: packed row r is query position r >> shift of query head
// first + (r & (g - 1)), g = 1 << shift, `first` the group's first query head. A tile of 128 rows then holds
// 128 / g positions of every head of the group, so short query lengths still fill their tiles and each K/V tile
// loaded serves the whole group. g is a power of two (src/gpu/dispatch.rs packs only then); the Q tile is one
// 5D TMA box (head_dim, g, positions, KV head, batch), src/gpu/tensor_map.rs. Plain problems only: the mask
// tensor and softcap paths index rows by position of one head.
#pragma once
#include "params.cuh"

namespace flashattn {

// log2 of the query heads per KV head.
__device__ __forceinline__ int gqa_row_shift(const AttnParams &p) { return __ffs(p.heads_q / p.heads_kv) - 1; }

// Blocks of bm packed rows per (KV head, batch entry).
__device__ __forceinline__ int packed_query_blocks(const AttnParams &p, int bm) {
  return ((p.seq_q << gqa_row_shift(p)) + bm - 1) / bm;
}

}  // namespace flashattn
