// One key block into the K/V ring through TMA: the producer step the Hopper and Blackwell kernels share.
// Wait until the consumers freed ring slot `st` (parity `ph`), then load K, then V, each with one 4D TMA load
// per 64-column panel that completes on the slot's "full" mbarrier. `wait` is the kernel's own mbarrier wait
// (the Blackwell kernel traps on a hang instead of spinning).
#pragma once
#include "sm90_ptx.cuh"

namespace flashattn {

template <class Cfg, class Bar, class Wait>
__device__ __forceinline__ void tma_load_kv_block(unsigned char *smem, Bar &bar, int st, uint32_t ph, int row, int kv_head,
                                                  int batch, const CUtensorMap *tk, const CUtensorMap *tv, Wait wait) {
  unsigned char *k_tile = smem + Cfg::K_OFFSET + st * Cfg::KV_BYTES;
  unsigned char *v_tile = smem + Cfg::V_OFFSET + st * Cfg::KV_BYTES;
  wait(&bar.k_empty[st], ph ^ 1u);
  sm90::mbar_expect_tx(&bar.k_full[st], Cfg::KV_BYTES);
#pragma unroll
  for (int pn = 0; pn < Cfg::PANELS; ++pn)
    sm90::tma_load_4d(k_tile + pn * Cfg::BN * 128, tk, &bar.k_full[st], pn * 64, row, kv_head, batch, sm90::kEvictLast);
  wait(&bar.v_empty[st], ph ^ 1u);
  sm90::mbar_expect_tx(&bar.v_full[st], Cfg::KV_BYTES);
#pragma unroll
  for (int pn = 0; pn < Cfg::PANELS; ++pn)
    sm90::tma_load_4d(v_tile + pn * Cfg::BN * 128, tv, &bar.v_full[st], pn * 64, row, kv_head, batch, sm90::kEvictLast);
}

}  // namespace flashattn
