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
// With GQA packing rows are packed rows, query position row >> row_shift (gqa_pack.cuh; no MASK then).
template <typename T, int MT, int NTN, bool BOUNDS, bool MASK, bool SOFTCAP = true>
__device__ __forceinline__ void apply_score_mods(float (&s)[MT][NTN][4], const AttnParams &p, int b, int h,
                                                 int row_base, int col_base, int kv_len, int lane, int row_shift = 0) {
  static_assert(BOUNDS || !MASK, "mask reads need the bounds check");
  const float scale = p.scale, inv_scale = fast_rcp(p.scale);
  const float softcap = p.softcap;
  const bool has_softcap = SOFTCAP && softcap > 0.f;
  const float inv_softcap = has_softcap ? fast_rcp(softcap) : 0.f;
  const bool additive = MASK && p.mask_kind == kMaskAdditive;
#pragma unroll
  for (int mt = 0; mt < MT; ++mt) {
#pragma unroll
    for (int hf = 0; hf < 2; ++hf) {
      const int row = (row_base + mt * 16 + (lane >> 2) + 8 * hf) >> row_shift;
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

namespace flashattn {

// apply_score_mods for a mask tensor whose one row serves every query row of the tile (mask_row_stride 0:
// key padding [B,1,1,S], a [S] column mask). Each thread loads its columns' mask values once per tile, all
// of them before any is used (two adjacent columns per load where the layout allows), and applies them to
// both of its rows: a key-padding mask then costs loads per tile, not a dependent load per score.
// Returns false, having done nothing, when every entry the warp loaded is neutral (true, or +0): the caller
// then treats the tile as if there were no mask (the common case of a key-padding mask).
template <typename T, int MT, int NTN, bool SOFTCAP = true>
__device__ __forceinline__ bool apply_row_mask_mods(float (&s)[MT][NTN][4], const AttnParams &p, int b, int h,
                                                    int row_base, int col_base, int kv_len, int lane) {
  const float scale = p.scale, inv_scale = fast_rcp(p.scale);
  const bool has_softcap = SOFTCAP && p.softcap > 0.f;
  const float softcap = p.softcap, inv_softcap = has_softcap ? fast_rcp(p.softcap) : 0.f;
  const bool additive = p.mask_kind == kMaskAdditive;
  const int64_t row_off = (int64_t)b * p.mask_batch_stride + (int64_t)h * p.mask_head_stride;
  const uint8_t *bool_row = reinterpret_cast<const uint8_t *>(p.mask_ptr) + row_off;
  const T *add_row = reinterpret_cast<const T *>(p.mask_ptr) + row_off;
  const int col0 = col_base + 2 * (lane & 3);  // the thread's first column in each 8-column tile
  // raw[nt]: the mask entries of columns col0 + 8nt and +1: two bool bytes, or two T bit patterns.
  uint32_t raw[NTN];
  const bool pairs = p.mask_col_stride == 1 && col_base + NTN * 8 <= p.seq_kv &&
                     (additive ? (reinterpret_cast<uintptr_t>(add_row) & 3) == 0
                               : (reinterpret_cast<uintptr_t>(bool_row) & 1) == 0);
  if (pairs) {
#pragma unroll
    for (int nt = 0; nt < NTN; ++nt)
      raw[nt] = additive ? *reinterpret_cast<const uint32_t *>(add_row + col0 + nt * 8)
                         : *reinterpret_cast<const uint16_t *>(bool_row + col0 + nt * 8);
  } else {
#pragma unroll
    for (int nt = 0; nt < NTN; ++nt) {
      raw[nt] = additive ? 0u : 0x0101u;  // columns past seq_kv: no mask entry (bounds hide them anyway)
#pragma unroll
      for (int e = 0; e < 2; ++e) {
        const int col = col0 + nt * 8 + e;
        if (col >= p.seq_kv) continue;
        const int64_t at = (int64_t)col * p.mask_col_stride;
        const uint32_t v = additive ? *reinterpret_cast<const uint16_t *>(add_row + at) : bool_row[at];
        raw[nt] = (raw[nt] & ~((additive ? 0xffffu : 0xffu) << (e * (additive ? 16 : 8)))) |
                  (v << (e * (additive ? 16 : 8)));
      }
    }
  }
  bool neutral = true;
#pragma unroll
  for (int nt = 0; nt < NTN; ++nt)
    neutral &= additive ? raw[nt] == 0u : ((raw[nt] & 0xffu) != 0 && (raw[nt] & 0xff00u) != 0);
  if (__all_sync(0xffffffffu, neutral)) return false;
#pragma unroll
  for (int mt = 0; mt < MT; ++mt) {
    int lo[2], hi[2];
#pragma unroll
    for (int hf = 0; hf < 2; ++hf) {
      const int row = row_base + mt * 16 + (lane >> 2) + 8 * hf;
      visible_cols(p, row, kv_len, lo[hf], hi[hf]);
      if (row >= p.seq_q) hi[hf] = lo[hf];  // rows past the end: never written, keep them masked
    }
#pragma unroll
    for (int nt = 0; nt < NTN; ++nt) {
      const int col = col0 + nt * 8;
      float add[2] = {0.f, 0.f};
      bool keep[2] = {true, true};
      if (additive) {
        const uint16_t lo_bits = raw[nt] & 0xffffu, hi_bits = raw[nt] >> 16;
        add[0] = Elem<T>::to_f32(*reinterpret_cast<const T *>(&lo_bits));
        add[1] = Elem<T>::to_f32(*reinterpret_cast<const T *>(&hi_bits));
      } else {
        keep[0] = (raw[nt] & 0xffu) != 0;
        keep[1] = (raw[nt] & 0xff00u) != 0;
      }
#pragma unroll
      for (int hf = 0; hf < 2; ++hf) {
#pragma unroll
        for (int e = 0; e < 2; ++e) {
          const bool in = col + e >= lo[hf] && col + e < hi[hf];
          float x = s[mt][nt][2 * hf + e];
          if (has_softcap || additive) {
            float y = x * scale;
            if (has_softcap) y = softcap * tanhf(y * inv_softcap);
            y += add[e];
            x = y * inv_scale;
          }
          if (!in || !keep[e]) x = -INFINITY;
          s[mt][nt][2 * hf + e] = x;
        }
      }
    }
  }
  return true;
}

// The modifications one S tile of BN key columns starting at c0 needs: the full path with a mask tensor
// (a cheaper one when one mask row serves all rows, and none beyond the bounds/softcap below where that
// row's entries for the tile are all neutral),
// bounds-only where the tile crosses some row's visible range [lo_max, hi_min) (see BlockWork), softcap
// alone inside it, nothing for the common interior tile.
// row_shift: GQA packing's (plain problems only, MODS false).
template <typename T, int MT, int NTN, bool MODS>
__device__ __forceinline__ void apply_tile_mods(float (&s)[MT][NTN][4], const AttnParams &p, int b, int h, int row_base,
                                                int c0, int kv_len, int lo_max, int hi_min, int lane, int row_shift = 0) {
  constexpr int BN = NTN * 8;
  const bool bounds = c0 < lo_max || c0 + BN > hi_min;
  if (MODS && p.mask_kind != kMaskNone && p.mask_row_stride == 0 &&
      apply_row_mask_mods<T, MT, NTN, MODS>(s, p, b, h, row_base, c0, kv_len, lane))
    return;
  if (MODS && p.mask_kind != kMaskNone && p.mask_row_stride != 0)
    apply_score_mods<T, MT, NTN, true, MODS>(s, p, b, h, row_base, c0, kv_len, lane);
  else if (bounds)
    apply_score_mods<T, MT, NTN, true, false, MODS>(s, p, b, h, row_base, c0, kv_len, lane, row_shift);
  else if (MODS && p.softcap > 0.f)
    apply_score_mods<T, MT, NTN, false, false>(s, p, b, h, row_base, c0, kv_len, lane);
}

}  // namespace flashattn
