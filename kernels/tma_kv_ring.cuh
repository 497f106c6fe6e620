// The TMA loads and K/V ring of the Hopper and Blackwell kernels: a tile into its swizzle panels, ring
// positions, and the producer step they share, one key block into the ring (tma_load_kv_block below):
// wait until the consumers freed ring slot `st` (parity `ph`), then load K, then V, each with one 4D TMA load
// per panel that completes on the slot's "full" mbarrier. `wait` is the kernel's own mbarrier wait
// (the Blackwell kernel traps on a hang instead of spinning).
#pragma once
#include "sm90_ptx.cuh"

namespace flashattn {

// Ring position of step i of a STAGES-deep ring: its stage, and the parity of that stage's use (the phase its
// mbarriers are waited on).
template <int STAGES> __device__ __forceinline__ int stage_of(int i) { return i % STAGES; }
template <int STAGES> __device__ __forceinline__ uint32_t phase_of(int i) { return (uint32_t)(i / STAGES) & 1u; }

// A ring position carried from step to step, so that a main loop does not divide the step count anew.
template <int STAGES> struct RingPos {
  int stage;
  uint32_t phase;
  __device__ __forceinline__ explicit RingPos(int step) : stage(stage_of<STAGES>(step)), phase(phase_of<STAGES>(step)) {}
  __device__ __forceinline__ void advance() {
    if (++stage == STAGES) {
      stage = 0;
      phase ^= 1u;
    }
  }
};

// A tile of `rows` rows (a Q tile, or one K or V stage) into its panels at `tile`: one 4D TMA load per panel,
// each completing on `full` (whose expected bytes the caller has set).
template <class Cfg>
__device__ __forceinline__ void tma_load_tile(unsigned char *tile, int rows, const CUtensorMap *map, uint64_t *full,
                                              int row, int head, int batch, uint64_t evict) {
#pragma unroll
  for (int pn = 0; pn < Cfg::PANELS; ++pn)
    sm90::tma_load_4d(tile + pn * rows * Cfg::PANEL_BYTES, map, full, pn * Cfg::PANEL_COLS, row, head, batch, evict);
}

// A GQA-packed Q tile (gqa_pack.cuh) of BM packed rows from packed row `row` (a multiple of the group size
// g = 1 << shift) of KV head `kv_head`: per panel one 5D box of g heads x BM / g positions.
template <class Cfg>
__device__ __forceinline__ void tma_load_packed_q(unsigned char *tile, const CUtensorMap *map, uint64_t *full, int row,
                                                  int shift, int kv_head, int batch, uint64_t evict) {
#pragma unroll
  for (int pn = 0; pn < Cfg::PANELS; ++pn)
    sm90::tma_load_5d(tile + pn * Cfg::BM * Cfg::PANEL_BYTES, map, full, pn * Cfg::PANEL_COLS, 0, row >> shift, kv_head,
                      batch, evict);
}

// A K or V tile shared by the CLUSTER blocks of a cluster (which compute query tiles of the same head over the
// same keys): block `rank` loads panels rank, rank + CLUSTER, ... and multicasts each into every block, so the
// tile is read from L2 once per cluster instead of once per block. Every block expects the whole tile's bytes
// on its own `full` barrier. CLUSTER == 1 is the plain load.
template <class Cfg, int CLUSTER>
__device__ __forceinline__ void tma_load_shared_tile(unsigned char *tile, const CUtensorMap *map, uint64_t *full, int row,
                                                     int head, int batch, uint32_t rank) {
  if constexpr (CLUSTER == 1) {
    tma_load_tile<Cfg>(tile, Cfg::BN, map, full, row, head, batch, sm90::kEvictLast);
  } else {
    static_assert(Cfg::PANELS >= CLUSTER, "every block of the cluster loads at least one panel");
#pragma unroll
    for (int pn = 0; pn < Cfg::PANELS; ++pn)
      if (pn % CLUSTER == (int)rank)
        sm90::tma_load_4d_multicast(tile + pn * Cfg::BN * Cfg::PANEL_BYTES, map, full, pn * Cfg::PANEL_COLS, row, head,
                                    batch, (uint16_t)((1u << CLUSTER) - 1), sm90::kEvictLast);
  }
}

template <class Cfg, int CLUSTER = 1, class Bar, class Wait>
__device__ __forceinline__ void tma_load_kv_block(unsigned char *smem, Bar &bar, int st, uint32_t ph, int row, int kv_head,
                                                  int batch, const CUtensorMap *tk, const CUtensorMap *tv, Wait wait,
                                                  uint32_t rank = 0) {
  unsigned char *k_tile = smem + Cfg::K_OFFSET + st * Cfg::KV_BYTES;
  unsigned char *v_tile = smem + Cfg::V_OFFSET + st * Cfg::KV_BYTES;
  wait(&bar.k_empty[st], ph ^ 1u);
  sm90::mbar_expect_tx(&bar.k_full[st], Cfg::KV_BYTES);
  tma_load_shared_tile<Cfg, CLUSTER>(k_tile, tk, &bar.k_full[st], row, kv_head, batch, rank);
  wait(&bar.v_empty[st], ph ^ 1u);
  sm90::mbar_expect_tx(&bar.v_full[st], Cfg::KV_BYTES);
  tma_load_shared_tile<Cfg, CLUSTER>(v_tile, tv, &bar.v_full[st], row, kv_head, batch, rank);
}

}  // namespace flashattn
