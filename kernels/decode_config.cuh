// Tile shape of the split-KV decode kernel (decode_splitkv.cuh). A block owns one (batch, KV head, key
// split) and all ROWS = 16*WM packed query rows (query token x query head of the GQA group) of it.
// The 4 warps form a WM x WN grid: WM 16-row m-tiles times WN slices of each BN-key tile, so every warp
// holds one 16 x D accumulator whatever the row count; the WN slices are merged through shared memory at
// the end. Entry names (flash_decode_sm80_{t}_d{D}_r{ROWS}) and the shared-memory size are mirrored in
// src/gpu/decode.rs.
#pragma once

namespace flashattn {

template <int D_, int WM_> struct DecodeConfig {
  static constexpr int D = D_;    // padded head dim (q/k and v): a multiple of 64
  static constexpr int WM = WM_;  // warps along rows = 16-row m-tiles
  static constexpr int NW = 4;
  static constexpr int NT = NW * 32;
  static constexpr int WN = NW / WM;  // warps along the keys of a tile
  static constexpr int ROWS = 16 * WM;
  static constexpr int BN = 64;         // keys per pipeline stage
  static constexpr int KW = BN / WN;    // keys per warp per stage
  static constexpr int NTN = KW / 8;    // 8-column n-tiles of S per warp
  static constexpr int NTD = D / 8;     // 8-column n-tiles of O per warp
  // 3 stages keep two K/V tiles in flight while one is consumed; at d <= 128 two blocks fit an H100 SM
  // (2 x 64 KiB in flight per SM). d 256 tiles are twice the size: 2 stages.
  static constexpr int STAGES = D <= 128 ? 3 : 2;
  static constexpr int SMEM_ELEMS = ROWS * D + 2 * STAGES * BN * D;
  static constexpr int SMEM_BYTES = SMEM_ELEMS * 2;
  // Cross-warp merge buffer (reuses the K/V stages): O fragments, running max and partial sums per lane.
  static constexpr int RED_FLOATS = NW * 32 * (NTD * 4 + 4);
  static_assert(D % 64 == 0, "D must be a multiple of 64 (swizzle needs >= 8 chunks per row)");
  static_assert(WM == 1 || WM == 2 || WM == 4, "WM must divide the 4 warps");
  static_assert(KW % 16 == 0, "each warp needs whole 16-key k-steps for P V");
  static_assert(RED_FLOATS * 4 <= 2 * STAGES * BN * D * 2, "merge buffer must fit the K/V stages");
};

}  // namespace flashattn
