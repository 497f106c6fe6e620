// Which (query block, head, batch) a thread block computes, and which key blocks it must visit.
// One block per tile (portable kernel): grid x = query blocks, y = query heads, z = batch. With a causal or
// right-bounded window the last query blocks carry the most keys, so they are scheduled first (x reversed)
// to even out the tail. Persistent blocks (Hopper kernel) walk a linear tile order instead.
#pragma once
#include "gqa_pack.cuh"
#include "mask.cuh"
#include "params.cuh"

namespace flashattn {

// The keys a run of query rows [row_first, row_last] of batch entry `batch` needs, in BN-key blocks.
struct KeyRange {
  int kv_len;          // keys that exist for this batch entry (key_seqlens / past lengths applied)
  int n_begin, n_end;  // key blocks [n_begin, n_end) holding every key some row may see
  int lo_max, hi_min;  // a key tile [c0, c1) with c0 >= lo_max and c1 <= hi_min is visible to all rows
};

template <int BN> __device__ __forceinline__ KeyRange key_range(const AttnParams &p, int batch, int row_first, int row_last) {
  KeyRange r;
  r.kv_len = batch_kv_len(p, batch);
  int lo_first, hi_first, lo_last, hi_last;
  visible_cols(p, row_first, r.kv_len, lo_first, hi_first);
  visible_cols(p, row_last, r.kv_len, lo_last, hi_last);
  const int lo = lo_first, hi = hi_last;  // lo and hi grow with the row
  r.lo_max = lo_last;
  r.hi_min = hi_first;
  if (hi <= lo) {
    r.n_begin = r.n_end = 0;
  } else {
    r.n_begin = lo / BN;
    r.n_end = (hi + BN - 1) / BN;
  }
  return r;
}

struct BlockWork {
  int m_block, head, batch, kv_head;
  int split;           // the key split this block computes (split-KV, persistent_split_tile), else 0
  int kv_len;          // keys that exist for this batch entry (key_seqlens / past lengths applied)
  int n_begin, n_end;  // key blocks [n_begin, n_end) holding every key some row of the block may see
  int lo_max, hi_min;  // a key tile [c0, c1) with c0 >= lo_max and c1 <= hi_min is visible to all rows
};

// With GQA packing (row_shift > 0, gqa_pack.cuh) `head` is the group's first query head and rows are packed rows.
template <int BM, int BN>
__device__ __forceinline__ BlockWork block_work(const AttnParams &p, int m_block, int head, int batch, int row_shift = 0) {
  BlockWork w;
  w.m_block = m_block;
  w.head = head;
  w.batch = batch;
  w.split = 0;
  w.kv_head = w.head / (p.heads_q / p.heads_kv);
  const int row_first = w.m_block * BM;
  const int row_last = min(row_first + BM, p.seq_q << row_shift) - 1;
  const KeyRange r = key_range<BN>(p, w.batch, row_first >> row_shift, row_last >> row_shift);
  w.kv_len = r.kv_len;
  w.n_begin = r.n_begin;
  w.n_end = r.n_end;
  w.lo_max = r.lo_max;
  w.hi_min = r.hi_min;
  return w;
}

template <int BM, int BN> __device__ __forceinline__ BlockWork schedule_block(const AttnParams &p) {
  const bool heavy_last = p.window_right >= 0;
  const int m_block = heavy_last ? (int)(gridDim.x - 1 - blockIdx.x) : (int)blockIdx.x;
  return block_work<BM, BN>(p, m_block, blockIdx.y, blockIdx.z);
}

__device__ __forceinline__ int query_blocks(const AttnParams &p, int bm) { return (p.seq_q + bm - 1) / bm; }

// The k-th tile of this block in a persistent launch: rounds of gridDim.x tiles, walked forwards in even
// rounds and backwards in odd ones, so a block that drew a heavy tile in one round draws a light one in the
// next (tiles are ordered heaviest first). With one block per tile it is simply blockIdx.x. With clusters of
// CLUSTER blocks (along x) the unit handed out is a cluster's tile: CLUSTER neighbouring query tiles.
template <int CLUSTER = 1> __device__ __forceinline__ int persistent_tile_index(int k) {
  const int g = gridDim.x / CLUSTER, c = blockIdx.x / CLUSTER;
  return k * g + ((k & 1) ? g - 1 - c : c);
}

// Units of the Hopper kernel's linear tile order: query blocks (rounded up to whole clusters) x heads x batch;
// with GQA packing (PACK) blocks of packed rows x KV heads x batch.
template <int CLUSTER = 1, bool PACK = false> __device__ __forceinline__ int persistent_tiles(const AttnParams &p, int bm) {
  if constexpr (PACK) return packed_query_blocks(p, bm) * p.heads_kv * p.batch;
  return (query_blocks(p, bm) + CLUSTER - 1) / CLUSTER * p.heads_q * p.batch;
}

// Tile t of the Hopper kernel's linear tile order. A head's query blocks are consecutive, so the blocks running
// at once share that head's K/V in L2 (and consecutive heads of a GQA group share theirs too); with a
// causal/right-bounded window they come heaviest first. Block r of a cluster takes query block
// CLUSTER * unit + r, which may lie past the last one (rows past seq_q: computed on zeros, never stored) so
// that it still loads its share of the cluster's K/V tiles.
template <int BM, int BN, int CLUSTER = 1, bool PACK = false>
__device__ __forceinline__ BlockWork persistent_tile(const AttnParams &p, int t) {
  if constexpr (PACK) {
    static_assert(CLUSTER == 1, "GQA packing runs single blocks");
    // Within a batch entry, the same query block of every KV head next to each other (heaviest first with a
    // causal / right-bounded window). A KV head has g times the query blocks of a query head, about a persistent
    // round of them on an H100/H200: walked head by head, the rounds' forward/backward pairing gave some blocks
    // two heavy causal tiles per pair of rounds (0.64-0.79x at 2k-8k keys, H200, docs/PERF.md).
    const int units = packed_query_blocks(p, BM), shift = gqa_row_shift(p);
    const int per_batch = units * p.heads_kv, r = t % per_batch, m = r / p.heads_kv;
    return block_work<BM, BN>(p, p.window_right >= 0 ? units - 1 - m : m, (r % p.heads_kv) << shift, t / per_batch, shift);
  }
  const int units = (query_blocks(p, BM) + CLUSTER - 1) / CLUSTER;
  const int m = t % units, rest = t / units;
  const int unit = p.window_right >= 0 ? units - 1 - m : m;
  return block_work<BM, BN>(p, unit * CLUSTER + (int)(blockIdx.x % CLUSTER), rest % p.heads_q, rest / p.heads_q);
}

// Unit t of a Hopper launch whose tiles are each cut into n_splits key ranges (the split-KV instances):
// tile t / n_splits, keys of split t % n_splits (an even share of its key blocks, possibly none).
template <int BM, int BN, int CLUSTER = 1, bool PACK = false>
__device__ __forceinline__ BlockWork persistent_split_tile(const AttnParams &p, int t, int n_splits) {
  BlockWork w = persistent_tile<BM, BN, CLUSTER, PACK>(p, t / n_splits);
  if (n_splits > 1) {
    w.split = t % n_splits;
    const int blocks = w.n_end - w.n_begin, per = (blocks + n_splits - 1) / n_splits;
    w.n_begin += min(w.split * per, blocks);
    w.n_end = min(w.n_begin + per, w.n_end);
  }
  return w;
}

}  // namespace flashattn
