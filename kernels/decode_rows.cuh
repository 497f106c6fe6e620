// Packed query rows of the decode kernel: row r of a (batch, KV head) block is query token r / group of
// query head kv_head * group + r % group, so the heads sharing one KV head share every K/V tile. Each
// thread owns two rows of its warp's m-tile (lane/4 and lane/4 + 8); their geometry is computed once.
#pragma once
#include "common.cuh"
#include "kv_append.cuh"
#include "mask.cuh"
#include "params.cuh"
#include "tile_io.cuh"

namespace flashattn {

struct PackedRow {
  bool valid;        // r < seq_q * group
  int token, head;   // query token and query head
  int lo, hi;        // visible key columns [lo, hi) (empty for invalid rows)
  int64_t mask_off;  // offset of (batch, head, token, col 0) in the mask tensor
};

__device__ __forceinline__ PackedRow packed_row(const AttnParams &p, int r, int batch, int kv_head, int group,
                                                int kv_len) {
  PackedRow pr;
  pr.valid = r < p.seq_q * group;
  pr.token = pr.valid ? r / group : 0;
  pr.head = kv_head * group + (pr.valid ? r - pr.token * group : 0);  // one division per row
  visible_cols(p, pr.token, kv_len, pr.lo, pr.hi);
  if (!pr.valid) pr.hi = pr.lo;
  pr.mask_off = (int64_t)batch * p.mask_batch_stride + (int64_t)pr.head * p.mask_head_stride +
                (int64_t)pr.token * p.mask_row_stride;
  return pr;
}

// The fused KV append's query rotation (decode_splitkv.cuh APPEND), in place in shared memory once the packed
// Q tile has landed. Each thread rotates whole pairs (2i, 2i+1) or (i, i + rotary_dim/2) of valid rows, so no
// thread reads what another writes. Pair j is row j / half, index j % half; the cos/sin of a thread's first pair
// are loaded when the kernel starts (start), so their latency hides under the first K/V tile's, and a decode
// step (one token, half dividing the block's threads) needs no other. (Rotating while copying Q from global
// memory cost more: one element at a time the dependent loads serialise; batched, the code grew enough to run
// slower cold in the instruction cache.)
struct PackedQRotary {
  int rows, group, past_len;
  int key;     // token * half + index of the pair whose cos/sin are held, -1: none
  float c, s;  // their cos and sin

  template <typename T>
  __device__ __forceinline__ void start(const KvAppendParams &a, int batch, int rows_, int group_, int tid) {
    rows = rows_;
    group = group_;
    past_len = kv_past_len(a, batch);
    key = -1;
    const int half = a.rotary_dim / 2;
    if (tid < rows * half) load<T>(a, batch, (tid / half) / group, tid % half);
  }

  template <typename T> __device__ __forceinline__ void load(const KvAppendParams &a, int batch, int token, int i) {
    const int half = a.rotary_dim / 2;
    const int64_t at = (int64_t)kv_position(a, batch, token, past_len) * half + i;
    c = Elem<T>::to_f32(reinterpret_cast<const T *>(a.cos_ptr)[at]);
    s = Elem<T>::to_f32(reinterpret_cast<const T *>(a.sin_ptr)[at]);
    key = token * half + i;
  }

  template <typename T, int D, int NT>
  __device__ __forceinline__ void rotate(T *sq, const KvAppendParams &a, int batch, int tid) {
    const int half = a.rotary_dim / 2;
#pragma unroll 1
    for (int j = tid; j < rows * half; j += NT) {
      const int r = j / half, i = j % half, token = r / group;
      if (token * half + i != key) load<T>(a, batch, token, i);
      const int ca = a.rotary_interleaved ? 2 * i : i, cb = a.rotary_interleaved ? 2 * i + 1 : i + half;
      T &xa = sq[swz<D>(r, ca >> 3) + (ca & 7)], &xb = sq[swz<D>(r, cb >> 3) + (cb & 7)];
      const float fa = Elem<T>::to_f32(xa), fb = Elem<T>::to_f32(xb);
      xa = Elem<T>::from_f32(fa * c - fb * s);
      xb = Elem<T>::from_f32(fb * c + fa * s);
    }
  }
};

// Q rows of the packed tile into shared memory ([ROWS][D], swizzled like tile_io.cuh), zero-filled past
// the valid rows and head_dim. `vec`: 16-byte cp.async (commit/wait after), else element-wise copies.
template <typename T, int ROWS, int D, int NT>
__device__ __forceinline__ void load_packed_q(T *s, const AttnParams &p, int batch, int kv_head, int group, bool vec,
                                              int tid) {
  const T *q = reinterpret_cast<const T *>(p.q_ptr) + (int64_t)batch * p.q_batch_stride;
  const int rows = p.seq_q * group;
  auto row_ptr = [&](int r) {
    return q + (int64_t)(kv_head * group + r % group) * p.q_head_stride + (int64_t)(r / group) * p.q_row_stride;
  };
  // Rolled: a few rows each, and unrolled copies of the divisions by `group` only grow the cold prologue.
  if (vec) {
    constexpr int CH = D / 8;
#pragma unroll 1
    for (int idx = tid; idx < ROWS * CH; idx += NT) {
      const int r = idx / CH, c = idx % CH;
      const bool ok = r < rows && c * 8 < p.head_dim;
      cp_async_16(smem_u32(s + swz<D>(r, c)), ok ? row_ptr(r) + c * 8 : q, ok);
    }
  } else {
#pragma unroll 1
    for (int idx = tid; idx < ROWS * D; idx += NT) {
      const int r = idx / D, col = idx % D;
      T v = Elem<T>::from_f32(0.f);
      if (r < rows && col < p.head_dim) v = row_ptr(r)[col];
      s[swz<D>(r, col >> 3) + (col & 7)] = v;
    }
  }
}

// apply_score_mods (mask.cuh) for packed rows: the same order and semantics (softcap, additive mask, bool
// mask, visible range), with each row's token/head taken from `rows` instead of a contiguous row block.
// s[0][nt][e]: row = rows[e / 2], col = col_base + nt*8 + 2*(lane%4) + (e%2). Raw units in and out.
template <typename T, int NTN>
__device__ __forceinline__ void apply_packed_score_mods(float (&s)[1][NTN][4], const AttnParams &p,
                                                        const PackedRow (&rows)[2], int col_base, bool mask,
                                                        bool softcap_on, int lane) {
  const float scale = p.scale, inv_scale = fast_rcp(p.scale);
  const float softcap = p.softcap;
  const float inv_softcap = softcap_on ? fast_rcp(softcap) : 0.f;
  const bool additive = mask && p.mask_kind == kMaskAdditive;
#pragma unroll
  for (int hf = 0; hf < 2; ++hf) {
    const PackedRow &pr = rows[hf];
#pragma unroll
    for (int nt = 0; nt < NTN; ++nt) {
#pragma unroll
      for (int e = 0; e < 2; ++e) {
        const int col = col_base + nt * 8 + 2 * (lane & 3) + e;
        const bool in = col >= pr.lo && col < pr.hi;
        float x = s[0][nt][2 * hf + e];
        if (softcap_on || additive) {
          float y = x * scale;
          if (softcap_on) y = softcap * tanhf(y * inv_softcap);
          if (additive && in)
            y += Elem<T>::to_f32(reinterpret_cast<const T *>(p.mask_ptr)[pr.mask_off + (int64_t)col * p.mask_col_stride]);
          x = y * inv_scale;
        }
        if (mask && !additive && in &&
            reinterpret_cast<const uint8_t *>(p.mask_ptr)[pr.mask_off + (int64_t)col * p.mask_col_stride] == 0)
          x = -INFINITY;
        if (!in) x = -INFINITY;
        s[0][nt][2 * hf + e] = x;
      }
    }
  }
}

}  // namespace flashattn
