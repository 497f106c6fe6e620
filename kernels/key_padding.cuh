// Key-padding masks as key lengths. An exported attention_mask reaches the op as a mask that depends on the key
// only ([batch, 1, 1, keys]), and it nearly always keeps a prefix of each batch entry's keys: all of them, or
// all but right padding. Such a mask is a key length, which the lean plain kernels take (key_seqlens) where the
// masked kernels pay for reading the mask and for their register pressure. Whether it is a prefix is data,
// known on the device only; so the host queues this scan and then two forward launches gated on its result
// (src/gpu/key_padding.rs): the plain one runs when every entry's mask is a prefix, the masked one otherwise.
#pragma once
#include "common.cuh"
#include "params.cuh"

namespace flashattn {

// A mask element's meaning: kept (bool true / additive 0), dropped (bool false / additive -inf), or neither (a
// finite additive bias, which no key length expresses).
__device__ __forceinline__ bool mask_keeps(uint8_t v) { return v != 0; }
__device__ __forceinline__ bool mask_drops(uint8_t v) { return v == 0; }
template <typename T> __device__ __forceinline__ bool mask_keeps(T v) { return Elem<T>::to_f32(v) == 0.f; }
template <typename T> __device__ __forceinline__ bool mask_drops(T v) { return Elem<T>::to_f32(v) == -INFINITY; }

// One block per batch entry b: its length (one past the last key not dropped) into lens[b], and into prefix[b]
// whether every key below that length is kept. The mask's head and row strides are 0 (the host checks).
template <typename M>
__device__ __forceinline__ void scan_key_padding(const AttnParams &p, int32_t *lens, int32_t *prefix) {
  __shared__ int first_not_kept, last_not_dropped;
  if (threadIdx.x == 0) {
    first_not_kept = p.seq_kv;
    last_not_dropped = -1;
  }
  __syncthreads();
  const int b = blockIdx.x;
  const M *row = reinterpret_cast<const M *>(p.mask_ptr) + (int64_t)b * p.mask_batch_stride;
  int fnk = p.seq_kv, lnd = -1;
  // UNROLL loads in flight per thread before any is looked at: one at a time, each would wait for the last.
  constexpr int UNROLL = 8;
  for (int j0 = threadIdx.x; j0 < p.seq_kv; j0 += UNROLL * blockDim.x) {
    M v[UNROLL];
#pragma unroll
    for (int u = 0; u < UNROLL; ++u) {
      const int j = j0 + u * blockDim.x;
      if (j < p.seq_kv) v[u] = row[(int64_t)j * p.mask_col_stride];
    }
#pragma unroll
    for (int u = 0; u < UNROLL; ++u) {
      const int j = j0 + u * blockDim.x;
      if (j >= p.seq_kv) break;
      if (!mask_keeps(v[u]) && fnk == p.seq_kv) fnk = j;  // j grows: a thread's first is its least
      if (!mask_drops(v[u])) lnd = j;                     // and its last the greatest
    }
  }
  fnk = __reduce_min_sync(0xffffffffu, fnk);
  lnd = __reduce_max_sync(0xffffffffu, lnd);
  if ((threadIdx.x & 31) == 0) {
    atomicMin(&first_not_kept, fnk);
    atomicMax(&last_not_dropped, lnd);
  }
  __syncthreads();
  if (threadIdx.x == 0) {
    const int len = last_not_dropped + 1;
    lens[b] = len;
    prefix[b] = first_not_kept >= len;
  }
}

// Whether a forward launch gated by p.gate runs: every block of it reads the scan's verdicts and returns at
// once if the gate is closed (before any barrier or cluster synchronisation, so all blocks agree).
__device__ __forceinline__ bool gate_open(const AttnParams &p) {
  if (p.gate == kGateNone) return true;
  const int32_t *prefix = reinterpret_cast<const int32_t *>(p.gate_ptr);
  int not_prefix = 0;
  for (int b = threadIdx.x; b < p.batch; b += blockDim.x) not_prefix |= prefix[b] == 0;
  const bool some_not_prefix = __syncthreads_or(not_prefix) != 0;
  return p.gate == kGateAllPrefix ? !some_not_prefix : some_not_prefix;
}

}  // namespace flashattn
