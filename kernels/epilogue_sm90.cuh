// The Hopper kernel's epilogue where its instance has room for an O tile in shared memory (Sm90Config::STAGE_O)
// and TMA can address the output: each consumer warpgroup writes its 64 normalised rows there with stmatrix, in
// the swizzled panel layout TMA reads, and one of its threads stores them with TMA. The store drains while
// the warpgroup starts its next tile; with direct 4-byte stores (store_output) the warpgroup waited for its
// stores to leave, a fifth of the stall samples of a 512-key tile (docs/PERF.md). Before writing the buffer
// again, that thread waits until the previous store has read it. Where O is written over the V stages
// (Sm90Config::O_IN_V), that thread waits right after the store and then lets the producer load V again.
#pragma once
#include "common.cuh"
#include "epilogue.cuh"
#include "params.cuh"
#include "sm90_ptx.cuh"

namespace flashattn {
namespace sm90 {

// Named barrier of consumer warpgroup c's epilogue: kBarEpilogue0 + c (after the ping-pong turns and the
// consumers' barrier, mainloop_sm90.cuh).
constexpr int kBarEpilogue0 = 5;

// Byte offset of 16-byte chunk `chunk` of row `row` in a panel of Cfg::PANEL_BYTES-byte rows, swizzled as TMA
// swizzles it (128-byte rows: chunk ^ row % 8; 64-byte rows: chunk ^ (row / 2) % 4).
template <class Cfg> __device__ __forceinline__ uint32_t swizzled_chunk(int row, int chunk) {
  const int pattern = Cfg::PANEL_BYTES == 128 ? (row & 7) : ((row >> 1) & 3);
  return row * Cfg::PANEL_BYTES + ((chunk ^ pattern) << 4);
}

// A consumer warpgroup's 64 rows of O (rows row0.., query head h, batch entry b) through `o_tile` (its panels
// of 64 rows) to the output map `to` (boxes of one panel x 64 rows), and their lse. `o_read` (O written over the
// V stages, Sm90Config::O_IN_V; else 0): the caller has synchronised the consumers, and the mbarrier this
// warpgroup arrives on once its stores have read the tile, which the producer waits for before loading V again.
template <typename T, class Cfg, int NTD>
__device__ __forceinline__ void store_output_tma(const AttnParams &p, const float (&o)[1][NTD][4], const float (&inv)[1][2],
                                                 const float (&lse)[1][2], const CUtensorMap *to, uint32_t o_tile, int b,
                                                 int h, int row0, int consumer, uint32_t o_read) {
  static_assert(NTD % 2 == 0 && Cfg::PANEL_COLS % 16 == 0, "pairs of 8-column blocks, within one panel");
  constexpr int CHUNKS = Cfg::PANEL_COLS / 8, PANEL_TILE = 64 * Cfg::PANEL_BYTES;
  const int lane = threadIdx.x & 31, warp_in_group = (threadIdx.x / 32) & 3;
  const bool leader = (threadIdx.x & 127) == 0;
  if (!Cfg::O_IN_V) {
    if (leader) bulk_wait_read_all();
    named_barrier_sync(kBarEpilogue0 + consumer, 128);
  }
  // Matrix i of a pair of 8-column blocks (2j, 2j + 1): rows 8 * (i & 1).. of block 2j + (i >> 1); lane l
  // addresses row l % 8 of matrix l / 8.
  const int i = lane >> 3, row = warp_in_group * 16 + (i & 1) * 8 + (lane & 7);
#pragma unroll
  for (int j = 0; j < NTD / 2; ++j) {
    const int panel = 2 * j / CHUNKS, chunk = 2 * j % CHUNKS + (i >> 1);
    stmatrix_x4(o_tile + panel * PANEL_TILE + swizzled_chunk<Cfg>(row, chunk),
                Elem<T>::pack2(o[0][2 * j][0] * inv[0][0], o[0][2 * j][1] * inv[0][0]),
                Elem<T>::pack2(o[0][2 * j][2] * inv[0][1], o[0][2 * j][3] * inv[0][1]),
                Elem<T>::pack2(o[0][2 * j + 1][0] * inv[0][0], o[0][2 * j + 1][1] * inv[0][0]),
                Elem<T>::pack2(o[0][2 * j + 1][2] * inv[0][1], o[0][2 * j + 1][3] * inv[0][1]));
  }
  fence_proxy_async();
  named_barrier_sync(kBarEpilogue0 + consumer, 128);
  if (leader) {
#pragma unroll
    for (int pn = 0; pn < Cfg::PANELS; ++pn) tma_store_4d(to, o_tile + pn * PANEL_TILE, pn * Cfg::PANEL_COLS, row0, h, b);
    bulk_commit_group();
    if (Cfg::O_IN_V) {
      bulk_wait_read_all();
      mbar_arrive(o_read);
    }
  }
#pragma unroll
  for (int hf = 0; hf < 2; ++hf) {
    const int row = row0 + warp_in_group * 16 + (lane >> 2) + 8 * hf;
    if (row < p.seq_q) store_lse_row(p, lse[0][hf], b, h, 0, row, lane);
  }
}

// At the end of a consumer's run with an O tile of its own: its last store has read the buffer (the block's shared
// memory is released at exit).
__device__ __forceinline__ void finish_output_tma() {
  if ((threadIdx.x & 127) == 0) bulk_wait_read_all();
}

}  // namespace sm90
}  // namespace flashattn
