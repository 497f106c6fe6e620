// Tile shapes of the sm_80+ forward kernel. The entry-point names in flash_fwd_sm80.cu spell these numbers
// (…_d{D}_m{BM}n{BN}w{NW}); src/gpu/dispatch.rs builds the same names and the same shared-memory size.
#pragma once

namespace flashattn {

template <int D_, int BM_, int BN_, int NW_> struct FwdConfig {
  static constexpr int D = D_;    // padded head dim (q/k and v): a multiple of 64
  static constexpr int BM = BM_;  // query rows per block
  static constexpr int BN = BN_;  // key rows per main-loop step
  static constexpr int NW = NW_;  // warps per block
  static constexpr int NT = NW * 32;
  static constexpr int MT = BM / (16 * NW);  // 16-row m-tiles per warp
  static constexpr int NTN = BN / 8;         // 8-column n-tiles of S per warp
  static constexpr int NTD = D / 8;          // 8-column n-tiles of O per warp
  static constexpr int STAGES = 2;           // K/V double buffer
  static constexpr int SMEM_ELEMS = BM * D + 2 * STAGES * BN * D;
  static constexpr int SMEM_BYTES = SMEM_ELEMS * 2;
  static_assert(D % 64 == 0, "D must be a multiple of 64 (swizzle needs >= 8 chunks per row)");
  static_assert(BM % (16 * NW) == 0, "BM must be a multiple of 16 * warps");
  static_assert(BN % 16 == 0, "BN must be a multiple of 16");
};

}  // namespace flashattn
