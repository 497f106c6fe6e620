// The KV-cache append step (issue #8), queued before attention on the same stream: writes present_key/
// present_value — a copy of the past (unless present is past's own buffer, the shared-buffer mode bound
// twice), then the new keys/values at each row's past length — and applies rotary embedding to the new keys
// and to the query (into a separate buffer). src/cpu/kv.rs is the CPU twin; src/gpu/kv_append.rs launches it.
// One warp per cache/query row; rows are independent, so one launch covers copy, append and rotation (in
// shared-buffer mode the copy skips the rows the append writes). When there is nothing to copy and the split-KV
// decode kernel serves the problem, it appends (kv_append_owned_rows) and rotates the query in shared memory
// (decode_rows.cuh PackedQRotary) itself, and this step does not run. Out-of-range lengths/positions (the CPU
// refuses them) are clamped here: reading them on the host would need a device sync.
#pragma once
#include "common.cuh"
#include "dependent_launch.cuh"
#include "params.cuh"

namespace flashattn {

__device__ __forceinline__ int kv_past_len(const KvAppendParams &p, int b) {
  if (!p.shared_buffer || p.past_lens_ptr == 0) return p.past_seq;
  int l = reinterpret_cast<const int32_t *>(p.past_lens_ptr)[b];
  const int cap = p.past_seq - p.seq_new;
  return l < 0 ? 0 : (l > cap ? cap : l);
}

__device__ __forceinline__ int kv_position(const KvAppendParams &p, int b, int i, int past_len) {
  long long pos = p.pos_ids_ptr ? reinterpret_cast<const int64_t *>(p.pos_ids_ptr)[(int64_t)b * p.seq_q + i]
                                : (long long)past_len + i;
  if (pos < 0) pos = 0;
  if (pos >= p.rotary_max_pos) pos = p.rotary_max_pos - 1;
  return (int)pos;
}

// Element `col` of `src` after rotary embedding at position `pos`, in f32: the first rotary_dim elements are
// rotated in pairs (2i, 2i+1) when interleaved, else (i, i + rotary_dim/2); the rest pass through.
// Pair (a, b) becomes (a cos - b sin, b cos + a sin).
template <typename T>
__device__ __forceinline__ float kv_rotated(const KvAppendParams &p, const T *src, int col, int pos) {
  const float x = Elem<T>::to_f32(src[col]);
  if (col >= p.rotary_dim) return x;
  const int half = p.rotary_dim / 2;
  const bool second = p.rotary_interleaved ? (col & 1) : col >= half;
  const int i = p.rotary_interleaved ? col >> 1 : (second ? col - half : col);
  const int partner = p.rotary_interleaved ? col ^ 1 : (second ? col - half : col + half);
  const float c = Elem<T>::to_f32(reinterpret_cast<const T *>(p.cos_ptr)[(int64_t)pos * half + i]);
  const float s = Elem<T>::to_f32(reinterpret_cast<const T *>(p.sin_ptr)[(int64_t)pos * half + i]);
  const float y = Elem<T>::to_f32(src[partner]);
  return second ? x * c + y * s : x * c - y * s;
}

// dst[0..dim) = src[0..dim), rotated for `pos` when `rot` (else a plain copy).
template <typename T>
__device__ __forceinline__ void kv_row(const KvAppendParams &p, T *dst, const T *src, int dim, bool rot, int pos,
                                       int lane) {
  for (int i = lane; i < dim; i += 32) dst[i] = rot ? Elem<T>::from_f32(kv_rotated<T>(p, src, i, pos)) : src[i];
}

template <typename T> __device__ __forceinline__ void kv_append(const KvAppendParams &p) {
  allow_dependents();  // the attention launch after it waits for all of it; only its start may overlap
  const int nkv = p.heads_kv;
  const bool copy = p.past_k_ptr != 0;  // 0: no past, or present is past's buffer
  const long long n_copy = copy ? (long long)p.batch * nkv * p.past_seq : 0;
  const long long n_new = (long long)p.batch * nkv * p.seq_new;
  const long long n_q = p.q_rot_ptr ? (long long)p.batch * p.heads_q * p.seq_q : 0;
  const long long total = n_copy + n_new + n_q;
  const int lane = threadIdx.x & 31;
  const long long warps = (long long)gridDim.x * (blockDim.x >> 5);
  T *pk = reinterpret_cast<T *>(p.present_k_ptr);
  T *pv = reinterpret_cast<T *>(p.present_v_ptr);
  for (long long t = (long long)blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5); t < total; t += warps) {
    if (t < n_copy) {
      const int j = (int)(t % p.past_seq);
      const long long bh = t / p.past_seq;
      const int b = (int)(bh / nkv);
      const int pl = kv_past_len(p, b);
      if (p.shared_buffer && j >= pl && j < pl + p.seq_new) continue;  // the append writes this row
      const T *sk = reinterpret_cast<const T *>(p.past_k_ptr) + (bh * p.past_seq + j) * p.head_dim;
      const T *sv = reinterpret_cast<const T *>(p.past_v_ptr) + (bh * p.past_seq + j) * p.head_dim_v;
      kv_row<T>(p, pk + (bh * p.present_seq + j) * p.head_dim, sk, p.head_dim, false, 0, lane);
      kv_row<T>(p, pv + (bh * p.present_seq + j) * p.head_dim_v, sv, p.head_dim_v, false, 0, lane);
    } else if (t < n_copy + n_new) {
      const long long u = t - n_copy;
      const int i = (int)(u % p.seq_new);
      const long long bh = u / p.seq_new;
      const int b = (int)(bh / nkv), h = (int)(bh % nkv);
      const int pl = kv_past_len(p, b);
      const bool rot = p.rotary_dim > 0;
      const int pos = rot ? kv_position(p, b, i, pl) : 0;
      const T *sk = reinterpret_cast<const T *>(p.new_k_ptr) + (int64_t)b * p.new_k_batch_stride +
                    (int64_t)h * p.new_k_head_stride + (int64_t)i * p.new_k_row_stride;
      const T *sv = reinterpret_cast<const T *>(p.new_v_ptr) + (int64_t)b * p.new_v_batch_stride +
                    (int64_t)h * p.new_v_head_stride + (int64_t)i * p.new_v_row_stride;
      kv_row<T>(p, pk + (bh * p.present_seq + pl + i) * p.head_dim, sk, p.head_dim, rot, pos, lane);
      kv_row<T>(p, pv + (bh * p.present_seq + pl + i) * p.head_dim_v, sv, p.head_dim_v, false, 0, lane);
    } else {
      const long long u = t - n_copy - n_new;
      const int i = (int)(u % p.seq_q);
      const long long bh = u / p.seq_q;
      const int b = (int)(bh / p.heads_q), h = (int)(bh % p.heads_q);
      const int64_t at = (int64_t)b * p.q_batch_stride + (int64_t)h * p.q_head_stride + (int64_t)i * p.q_row_stride;
      const int pos = kv_position(p, b, i, kv_past_len(p, b));
      kv_row<T>(p, reinterpret_cast<T *>(p.q_rot_ptr) + at, reinterpret_cast<const T *>(p.q_ptr) + at, p.head_dim, true,
                pos, lane);
    }
  }
}

// The append fused into the split-KV decode kernel (shared-buffer mode or no past: nothing to copy), for the
// new rows of (batch, kv_head) at key positions [key_lo, key_hi): the rows the calling block reads itself (the
// block syncs before loading them), so no other block waits on them.
template <typename T>
__device__ __forceinline__ void kv_append_owned_rows(const KvAppendParams &p, int batch, int kv_head, int key_lo,
                                                     int key_hi, int tid, int threads) {
  const int pl = kv_past_len(p, batch);
  const int first = max(key_lo, pl) - pl, last = min(key_hi, pl + p.seq_new) - pl;  // new rows [first, last)
  if (first >= last) return;
  const int64_t bh = (int64_t)batch * p.heads_kv + kv_head;
  const T *sk = reinterpret_cast<const T *>(p.new_k_ptr) + (int64_t)batch * p.new_k_batch_stride +
                (int64_t)kv_head * p.new_k_head_stride;
  const T *sv = reinterpret_cast<const T *>(p.new_v_ptr) + (int64_t)batch * p.new_v_batch_stride +
                (int64_t)kv_head * p.new_v_head_stride;
  T *pk = reinterpret_cast<T *>(p.present_k_ptr) + (bh * p.present_seq + pl) * p.head_dim;
  T *pv = reinterpret_cast<T *>(p.present_v_ptr) + (bh * p.present_seq + pl) * p.head_dim_v;
  const bool rot = p.rotary_dim > 0;
  const int dk = p.head_dim, width = p.head_dim + p.head_dim_v;
#pragma unroll 1
  for (int idx = first * width + tid; idx < last * width; idx += threads) {
    const int i = idx / width, col = idx % width;
    if (col < dk) {
      const T *src = sk + (int64_t)i * p.new_k_row_stride;
      pk[(int64_t)i * dk + col] =
          rot ? Elem<T>::from_f32(kv_rotated<T>(p, src, col, kv_position(p, batch, i, pl))) : src[col];
    } else {
      pv[(int64_t)i * p.head_dim_v + col - dk] = sv[(int64_t)i * p.new_v_row_stride + col - dk];
    }
  }
}

}  // namespace flashattn
