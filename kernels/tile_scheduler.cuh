// Which (query block, head, batch) a thread block computes, and which key blocks it must visit.
// Grid: x = query blocks, y = query heads, z = batch. With a causal/left-bounded window the last query
// blocks carry the most keys, so they are scheduled first (x reversed) to even out the tail.
#pragma once
#include "mask.cuh"
#include "params.cuh"

namespace flashattn {

struct BlockWork {
  int m_block, head, batch, kv_head;
  int kv_len;          // keys that exist for this batch entry (key_seqlens / past lengths applied)
  int n_begin, n_end;  // key blocks [n_begin, n_end) holding every key some row of the block may see
  int lo_max, hi_min;  // a key tile [c0, c1) with c0 >= lo_max and c1 <= hi_min is visible to all rows
};

template <int BM, int BN> __device__ __forceinline__ BlockWork schedule_block(const AttnParams &p) {
  BlockWork w;
  const bool heavy_last = p.window_right >= 0;
  w.m_block = heavy_last ? (int)(gridDim.x - 1 - blockIdx.x) : (int)blockIdx.x;
  w.head = blockIdx.y;
  w.batch = blockIdx.z;
  w.kv_head = w.head / (p.heads_q / p.heads_kv);
  const int kv_len = batch_kv_len(p, w.batch);
  w.kv_len = kv_len;
  const int row_first = w.m_block * BM;
  const int row_last = min(row_first + BM, p.seq_q) - 1;
  int lo_first, hi_first, lo_last, hi_last;
  visible_cols(p, row_first, kv_len, lo_first, hi_first);
  visible_cols(p, row_last, kv_len, lo_last, hi_last);
  const int lo = lo_first, hi = hi_last;  // lo and hi grow with the row
  w.lo_max = lo_last;
  w.hi_min = hi_first;
  if (hi <= lo) {
    w.n_begin = w.n_end = 0;
  } else {
    w.n_begin = lo / BN;
    w.n_end = (hi + BN - 1) / BN;
  }
  return w;
}

}  // namespace flashattn
