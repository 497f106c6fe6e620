// Tile shapes, warp roles, Tensor Memory columns and shared-memory layout of the Blackwell (sm_100a) forward
// kernel. The entry-point names in flash_fwd_sm100.cu spell D and BN (…_d{D}_m128n{BN}w6_plain);
// src/gpu/dispatch.rs builds the same names and computes the same shared-memory size.
#pragma once
#include <stdint.h>

namespace flashattn {

template <int D_, int BN_, int STAGES_> struct Sm100Config {
  static constexpr int D = D_;    // padded head dim (q/k and v): 64 or 128, one 128-byte-swizzled panel per 64
  static constexpr int BN = BN_;  // key rows per main-loop step
  static constexpr int BM = 128;  // query rows per block = Tensor Memory lanes = MMA M
  static constexpr int STAGES = STAGES_;
  // Warps 0-3: softmax (+ O correction, + epilogue); thread t owns query row t of the tile, the Tensor Memory
  // lane the accumulators put it in. Warp 4: TMA loads. Warp 5: Tensor Memory allocation and MMA issue.
  static constexpr int SOFTMAX_WARPS = 4;
  static constexpr int LOAD_WARP = 4;
  static constexpr int MMA_WARP = 5;
  static constexpr int THREADS = 32 * 6;
  static constexpr int PANEL_COLS = 64;  // 128-byte-swizzled panels (see Sm90Config)
  static constexpr int PANEL_BYTES = 128;
  static constexpr int PANELS = D / PANEL_COLS;
  // Tensor Memory columns (32-bit): two S buffers (fp32, BN each), two P buffers (16-bit pairs, BN/2 each),
  // then O (fp32, D). S_{i+1} is computed while the softmax turns S_i into P_i.
  static constexpr int TMEM_S = 0;
  static constexpr int TMEM_P = 2 * BN;
  static constexpr int TMEM_O = TMEM_P + BN;
  static constexpr int TMEM_COLS_USED = TMEM_O + D;
  static constexpr int TMEM_COLS = TMEM_COLS_USED <= 256 ? 256 : 512;  // allocations are powers of two
  static constexpr int Q_BYTES = BM * D * 2;
  static constexpr int KV_BYTES = BN * D * 2;  // one K or V stage
  static constexpr int K_OFFSET = Q_BYTES;
  static constexpr int V_OFFSET = K_OFFSET + STAGES * KV_BYTES;
  static constexpr int BAR_OFFSET = V_OFFSET + STAGES * KV_BYTES;
  // q_full, k_full[], k_empty[], v_full[], v_empty[], s_full[2], s_free[2], p_full[2], o_done
  static constexpr int BARRIERS = 1 + 4 * STAGES + 7;
  static constexpr int TMEM_SLOT_OFFSET = BAR_OFFSET + BARRIERS * 8;
  // +16: the Tensor Memory base address slot (and padding); +1024: the base is aligned up to 1024 bytes.
  static constexpr int SMEM_BYTES = TMEM_SLOT_OFFSET + 16 + 1024;
  static_assert(D == 64 || D == 128, "D: 64 or 128 (O must fit next to two S and two P buffers in 512 columns)");
  static_assert(BN % 32 == 0 && BN <= 256, "BN: multiple of 32 up to 256");
  static_assert(TMEM_COLS_USED <= 512, "Tensor Memory has 512 columns");
  static_assert(KV_BYTES % 1024 == 0 && Q_BYTES % 1024 == 0, "tiles must keep 1024-byte alignment");
};

}  // namespace flashattn
