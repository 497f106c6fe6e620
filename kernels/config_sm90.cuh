// Tile shapes and shared-memory layout of the Hopper (sm_90a) forward kernel. The entry-point names in
// flash_fwd_sm90.cu spell D, BM, BN and the warps (…_d{D}_m{BM}n{BN}w{4 * (CONSUMERS + 1)}); src/gpu/dispatch.rs
// builds the same names and computes the same shared-memory size.
#pragma once
#include <stdint.h>

namespace flashattn {

// Dynamic shared memory one block may opt into on sm_90 (227 KiB).
constexpr int kSm90MaxDynamicSmem = 227 * 1024;

template <int D_, int BN_, int STAGES_, int CONSUMERS_ = 2, int CLUSTER_ = 1, bool STAGE_O_ = true> struct Sm90Config {
  static constexpr int D = D_;    // padded head dim (q/k and v): a multiple of 32
  static constexpr int BN = BN_;  // key rows per main-loop step
  static constexpr int STAGES = STAGES_;
  static constexpr int CONSUMERS = CONSUMERS_;  // math warpgroups, 64 query rows each
  // Blocks per thread-block cluster: the blocks of a cluster compute neighbouring query tiles of one head and
  // share each K/V tile, loaded once from L2 and multicast (tma_kv_ring.cuh); problems without causal/window
  // bounds only, where such tiles read the same keys.
  static constexpr int CLUSTER = CLUSTER_;
  static constexpr int BM = 64 * CONSUMERS;      // query rows per block
  static constexpr int THREADS = 128 * (CONSUMERS + 1);  // + the producer warpgroup
  // Registers per thread after reallocation (setmaxnreg), the whole block within the SM's 64K: the producer
  // needs few, the consumers hold S, P and O.
  static constexpr int PRODUCER_REGS = CONSUMERS == 2 ? 24 : 32;
  static constexpr int CONSUMER_REGS = CONSUMERS == 2 ? 240 : 160;
  // Tiles are stored as panels of PANEL_COLS columns, rows of PANEL_BYTES swizzled over PANEL_BYTES (the layout
  // TMA writes and wgmma reads): 128-byte panels where D is a multiple of 64, else 64-byte ones (d96 runs
  // unpadded as three).
  static constexpr int PANEL_COLS = D % 64 == 0 ? 64 : 32;
  static constexpr int PANEL_BYTES = PANEL_COLS * 2;
  static constexpr int PANELS = D / PANEL_COLS;
  static constexpr int Q_BYTES = BM * D * 2;
  static constexpr int KV_BYTES = BN * D * 2;  // one K or V stage
  // Q, then K stages, then V stages (each 1024-byte aligned, as swizzling needs), then the O tile where it fits
  // (O_OWN), then barriers. The epilogue writes O into the O tile and stores it with TMA (STAGE_O,
  // epilogue_sm90.cuh). Where no O tile fits (d192, d256, 176-key d128), O is written over the V stages instead
  // (O_IN_V, FlashAttention-3's layout): the consumers first wait for each other's last PV, and the producer loads
  // no V of the next tile until the stores have read O (the o_read barrier); K of the next tile still streams.
  // Two-consumer instances only: the three-consumer ones (d64/d96, 192 rows) ran 2-5% slower with an O tile from
  // 2048 keys on, with the same main loop; and single blocks for O_IN_V (a cluster's peers load V into this
  // block too) (docs/PERF.md).
  static constexpr int K_OFFSET = Q_BYTES;
  static constexpr int V_OFFSET = K_OFFSET + STAGES * KV_BYTES;
  static constexpr int O_BYTES = BM * D * 2;
  static constexpr int RING_END = V_OFFSET + STAGES * KV_BYTES;
  static constexpr bool O_OWN =
      STAGE_O_ && CONSUMERS == 2 && RING_END + O_BYTES + (2 + 4 * STAGES) * 8 + 1024 <= kSm90MaxDynamicSmem;
  static constexpr bool O_IN_V = STAGE_O_ && CONSUMERS == 2 && CLUSTER == 1 && !O_OWN && O_BYTES <= STAGES * KV_BYTES;
  static constexpr bool STAGE_O = O_OWN || O_IN_V;
  static constexpr int O_OFFSET = O_OWN ? RING_END : V_OFFSET;
  // q_full, q_empty, k_full[], k_empty[], v_full[], v_empty[], and with O_IN_V o_read
  static constexpr int BARRIERS = 2 + 4 * STAGES + (O_IN_V ? 1 : 0);
  static constexpr int BAR_OFFSET = RING_END + (O_OWN ? O_BYTES : 0);
  // +1024: slack for aligning the base to 1024 bytes. The Hopper kernel declares its dynamic shared memory
  // 1024-aligned (as it is on sm_90: no static shared memory precedes it) and traps if it is not, so that the
  // main loop's addresses fold into constants instead of being realigned at each use.
  static constexpr int SMEM_BYTES = BAR_OFFSET + BARRIERS * 8 + 1024;
  static_assert(D % 32 == 0 && D <= 256, "D: multiple of 32 up to 256");
  static_assert(BN % 16 == 0 && BN <= 256, "BN: multiple of 16 up to 256");
  static_assert(KV_BYTES % 1024 == 0 && Q_BYTES % 1024 == 0, "tiles must keep 1024-byte alignment");
  static_assert(CONSUMERS == 2 || CONSUMERS == 3, "two or three consumer warpgroups");
  static_assert(CLUSTER == 1 || (CLUSTER == 2 && PANELS >= 2), "clusters of two blocks, each loading whole panels");
  static_assert(128 * PRODUCER_REGS + 128 * CONSUMERS * CONSUMER_REGS <= 65536, "registers of one SM");
};

}  // namespace flashattn
