// Tile shapes and shared-memory layout of the Hopper (sm_90a) forward kernel. The entry-point names in
// flash_fwd_sm90.cu spell D and BN (…_d{D}_m128n{BN}w12); src/gpu/dispatch.rs builds the same names and
// computes the same shared-memory size.
#pragma once
#include <stdint.h>

namespace flashattn {

template <int D_, int BN_, int STAGES_> struct Sm90Config {
  static constexpr int D = D_;    // padded head dim (q/k and v): a multiple of 64, one 128-byte-swizzled panel per 64
  static constexpr int BN = BN_;  // key rows per main-loop step
  static constexpr int STAGES = STAGES_;
  static constexpr int CONSUMERS = 2;          // math warpgroups, 64 query rows each
  static constexpr int BM = 64 * CONSUMERS;    // query rows per block
  static constexpr int THREADS = 128 * (CONSUMERS + 1);  // + the producer warpgroup
  static constexpr int PANELS = D / 64;
  static constexpr int Q_BYTES = BM * D * 2;
  static constexpr int KV_BYTES = BN * D * 2;  // one K or V stage
  // Q, then K stages, then V stages (each 1024-byte aligned, as 128-byte swizzling needs), then barriers.
  static constexpr int K_OFFSET = Q_BYTES;
  static constexpr int V_OFFSET = K_OFFSET + STAGES * KV_BYTES;
  static constexpr int BAR_OFFSET = V_OFFSET + STAGES * KV_BYTES;
  static constexpr int BARRIERS = 2 + 4 * STAGES;  // q_full, q_empty, k_full[], k_empty[], v_full[], v_empty[]
  // +1024: the dynamic shared-memory base is aligned up to 1024 bytes inside the kernel.
  static constexpr int SMEM_BYTES = BAR_OFFSET + BARRIERS * 8 + 1024;
  static_assert(D % 64 == 0 && D <= 256, "D: multiple of 64 up to 256");
  static_assert(BN % 16 == 0 && BN <= 256, "BN: multiple of 16 up to 256");
  static_assert(KV_BYTES % 1024 == 0 && Q_BYTES % 1024 == 0, "tiles must keep 1024-byte alignment");
};

}  // namespace flashattn
