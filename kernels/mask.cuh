// Score modifications, in the schema's order: s = scale*q.k; s = softcap*tanh(s/softcap) if softcap > 0;
// s += additive mask; then boolean mask, causal/window (bottom-right aligned) and key_seqlens/bounds to -inf.
//
// Scores stay in raw units (q.k, before `scale`) in the main loop, so the common no-mask tile costs no
// per-element work here; scale is folded into the softmax's exponent (softmax.cuh). Tiles that need
// softcap or an additive mask go to natural units and back (x*scale ... /scale).
#pragma once
#include "common.cuh"
#include "params.cuh"

namespace flashattn {

// Keys that exist for batch entry b: seq_kv, or key_seqlens / a shared KV cache's past lengths plus
// seqlens_offset (the new tokens), clamped to [0, seq_kv]. Every kernel takes its kv_len from here (through
// schedule_block or directly) and passes it to visible_cols. AttnParams::kv_len is the Rust twin.
__device__ __forceinline__ int batch_kv_len(const AttnParams &p, int b) {
  if (!p.has_seqlens) return p.seq_kv;
  const int sl = reinterpret_cast<const int32_t *>(p.seqlens_ptr)[b] + p.seqlens_offset;
  return sl < 0 ? 0 : (sl < p.seq_kv ? sl : p.seq_kv);
}

// Key columns [lo, hi) that query `row` may see under window/causal and key-length limits alone. `kv_len` is
// the batch entry's own key count (schedule_block's w.kv_len). The diagonal is bottom-right aligned to seq_kv,
// or, with p.diag_per_batch (a ragged KV cache), to the entry's own kv_len.
__device__ __forceinline__ void visible_cols(const AttnParams &p, int row, int kv_len, int &lo, int &hi) {
  const long long diag = (long long)row + (p.diag_per_batch ? kv_len : p.seq_kv) - p.seq_q;
  long long l = 0, h = kv_len;
  if (p.window_left >= 0) l = diag - p.window_left > 0 ? diag - p.window_left : 0;
  if (p.window_right >= 0 && diag + p.window_right + 1 < h) h = diag + p.window_right + 1;
  if (l > kv_len) l = kv_len;
  if (h < l) h = l;
  lo = (int)l;
  hi = (int)h;
}

// Applies softcap, the additive/bool mask tensor (MASK) and the per-row visible range (BOUNDS) to a warp's
// S fragment (raw units) in place.
// s[mt][nt][e]: row = row_base + mt*16 + lane/4 + 8*(e/2), col = col_base + nt*8 + 2*(lane%4) + (e%2).
template <typename T, int MT, int NTN, bool BOUNDS, bool MASK, bool SOFTCAP = true>
__device__ __forceinline__ void apply_score_mods(float (&s)[MT][NTN][4], const AttnParams &p, int b, int h,
                                                 int row_base, int col_base, int kv_len, int lane) {
  static_assert(BOUNDS || !MASK, "mask reads need the bounds check");
  const float scale = p.scale, inv_scale = 1.f / p.scale;
  const float softcap = p.softcap;
  const bool has_softcap = SOFTCAP && softcap > 0.f;
  const float inv_softcap = has_softcap ? 1.f / softcap : 0.f;
  const bool additive = MASK && p.mask_kind == kMaskAdditive;
#pragma unroll
  for (int mt = 0; mt < MT; ++mt) {
#pragma unroll
    for (int hf = 0; hf < 2; ++hf) {
      const int row = row_base + mt * 16 + (lane >> 2) + 8 * hf;
      int lo = 0, hi = 0;
      int64_t mrow = 0;
      if (BOUNDS) {
        visible_cols(p, row, kv_len, lo, hi);
        if (row >= p.seq_q) hi = lo;  // rows past the end: never written, keep them masked
      }
      if (MASK)
        mrow = (int64_t)b * p.mask_batch_stride + (int64_t)h * p.mask_head_stride + (int64_t)row * p.mask_row_stride;
#pragma unroll
      for (int nt = 0; nt < NTN; ++nt) {
#pragma unroll
        for (int e = 0; e < 2; ++e) {
          const int col = col_base + nt * 8 + 2 * (lane & 3) + e;
          const bool in = !BOUNDS || (col >= lo && col < hi);
          float x = s[mt][nt][2 * hf + e];
          if (has_softcap || additive) {
            float y = x * scale;
            if (has_softcap) y = softcap * tanhf(y * inv_softcap);
            if (additive && in)
              y += Elem<T>::to_f32(reinterpret_cast<const T *>(p.mask_ptr)[mrow + (int64_t)col * p.mask_col_stride]);
            x = y * inv_scale;
          }
          if (MASK && !additive && in &&
              reinterpret_cast<const uint8_t *>(p.mask_ptr)[mrow + (int64_t)col * p.mask_col_stride] == 0)
            x = -INFINITY;
          if (!in) x = -INFINITY;
          s[mt][nt][2 * hf + e] = x;
        }
      }
    }
  }
}

}  // namespace flashattn
