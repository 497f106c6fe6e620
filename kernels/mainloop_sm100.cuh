// The Blackwell (sm_100a) forward kernel body, FlashAttention-4 style, first scope: one block per tile of 128
// query rows of one (batch, head); no mask tensor, no softcap, no key_seqlens (causal and windows are
// handled). Warp roles (config_sm100.cuh):
//   - load warp (one thread): Q once, then K/V tiles through a STAGES-deep ring with TMA, each completing on a
//     "full" mbarrier; stages come back on "empty" mbarriers the MMA warp's tcgen05.commit arrives on;
//   - MMA warp (one thread): S_i = Q K_i^T into one of two Tensor Memory S buffers, and O += P_i V_i with
//     P_i read from Tensor Memory; S_{i+1} is issued before waiting for P_i, so the tensor cores compute it
//     while the softmax works on S_i;
//   - softmax warpgroup (thread t = query row t = Tensor Memory lane t): loads its row of S_i, masks, keeps
//     the running max and sum in registers (no shuffles: a thread holds the whole row), writes P_i as 16-bit
//     pairs back to Tensor Memory. It also does FA4's correction (rescaling O in Tensor Memory when a row's
//     max moved by more than the threshold; skipped otherwise) and the epilogue. FA4 gives correction and
//     epilogue their own warps and runs two softmax warpgroups on two Q tiles; this kernel does not (yet).
// Scores stay in raw units (scale folded into the exponent), as in the other kernels; exp2 runs on the MUFU
// except for every EMU-th group of 8 columns, which uses poly_exp2 on the FMA units (FA4's partial emulation).
#pragma once
#include "common.cuh"
#include "config_sm100.cuh"
#include "mask.cuh"
#include "params.cuh"
#include "sm100_ptx.cuh"
#include "sm90_ptx.cuh"
#include "tma_kv_ring.cuh"
#include "tile_scheduler.cuh"

namespace flashattn {

// Tunables of one Blackwell instance.
template <int RESCALE_THRESHOLD_, int EMULATED_EXP2_EVERY_> struct Sm100Options {
  static constexpr int RESCALE_THRESHOLD = RESCALE_THRESHOLD_;
  static constexpr int EMULATED_EXP2_EVERY = EMULATED_EXP2_EVERY_;
};

namespace sm100 {

template <class Cfg> struct Barriers {
  uint64_t *q_full, *k_full, *k_empty, *v_full, *v_empty, *s_full, *s_free, *p_full, *o_done;
  __device__ __forceinline__ explicit Barriers(unsigned char *base) {
    uint64_t *b = reinterpret_cast<uint64_t *>(base + Cfg::BAR_OFFSET);
    q_full = b;
    k_full = b + 1;
    k_empty = k_full + Cfg::STAGES;
    v_full = k_empty + Cfg::STAGES;
    v_empty = v_full + Cfg::STAGES;
    s_full = v_empty + Cfg::STAGES;
    s_free = s_full + 2;
    p_full = s_free + 2;
    o_done = p_full + 2;
  }
  __device__ __forceinline__ void init() {
    sm90::mbar_init(q_full, 1);
    for (int st = 0; st < Cfg::STAGES; ++st) {
      sm90::mbar_init(&k_full[st], 1);
      sm90::mbar_init(&v_full[st], 1);
      sm90::mbar_init(&k_empty[st], 1);  // tcgen05.commit arrives once
      sm90::mbar_init(&v_empty[st], 1);
    }
    for (int b = 0; b < 2; ++b) {
      sm90::mbar_init(&s_full[b], 1);
      sm90::mbar_init(&s_free[b], Cfg::SOFTMAX_WARPS);  // one arrive per softmax warp
      sm90::mbar_init(&p_full[b], Cfg::SOFTMAX_WARPS);
    }
    sm90::mbar_init(o_done, 1);
  }
};

// Main-loop step i uses K/V stage stage_of<STAGES>(i) and S/P buffer i % 2 (tma_kv_ring.cuh's ring
// positions, the S/P buffers as a 2-deep ring).

template <class Cfg>
__device__ __forceinline__ void load_warp(const BlockWork &w, unsigned char *smem, const CUtensorMap *tq,
                                          const CUtensorMap *tk, const CUtensorMap *tv) {
  using namespace sm90;
  constexpr int BM = Cfg::BM, BN = Cfg::BN, STAGES = Cfg::STAGES;
  Barriers<Cfg> bar(smem);
  prefetch_tensor_map(tq);
  prefetch_tensor_map(tk);
  prefetch_tensor_map(tv);
  mbar_expect_tx(bar.q_full, Cfg::Q_BYTES);
  tma_load_tile<Cfg>(smem, BM, tq, bar.q_full, w.m_block * BM, w.head, w.batch, kEvictFirst);
  const int n_blocks = w.n_end - w.n_begin;
  for (int i = 0; i < n_blocks; ++i) {
    const int st = stage_of<STAGES>(i);
    const uint32_t ph = phase_of<STAGES>(i);
    tma_load_kv_block<Cfg>(smem, bar, st, ph, (w.n_begin + i) * BN, w.kv_head, w.batch, tk, tv,
                           [](uint64_t *b, uint32_t parity) { mbar_wait_or_trap(b, parity); });
  }
}

template <typename T, class Cfg>
__device__ __forceinline__ void mma_warp(const BlockWork &w, unsigned char *smem, uint32_t tmem) {
  constexpr int BM = Cfg::BM, BN = Cfg::BN, D = Cfg::D, STAGES = Cfg::STAGES;
  Barriers<Cfg> bar(smem);
  constexpr uint32_t idesc_qk = idesc_f16<T, BM, BN, false, false>();  // Q and K both K-major (head_dim inner)
  constexpr uint32_t idesc_pv = idesc_f16<T, BM, D, false, true>();    // P K-major; V MN-major (head_dim inner)
  const uint64_t q_desc = smem_desc_sw128(smem, 16);
  const int n_blocks = w.n_end - w.n_begin;

  auto issue_qk = [&](int i) {
    const int st = stage_of<STAGES>(i), sb = i & 1;
    if (i >= 2) mbar_wait_or_trap(&bar.s_free[sb], phase_of<2>(i - 2));  // S_{i-2} read by the softmax
    mbar_wait_or_trap(&bar.k_full[st], phase_of<STAGES>(i));
    fence_after_sync();
    const uint64_t k_desc = smem_desc_sw128(smem + Cfg::K_OFFSET + st * Cfg::KV_BYTES, 16);
#pragma unroll
    for (int kk = 0; kk < D / 16; ++kk) {
      const uint32_t off_q = (kk / 4) * BM * 128 + (kk % 4) * 32, off_k = (kk / 4) * BN * 128 + (kk % 4) * 32;
      mma_ss(tmem + Cfg::TMEM_S + sb * BN, desc_advance(q_desc, off_q), desc_advance(k_desc, off_k), idesc_qk, kk > 0);
    }
    commit(&bar.s_full[sb]);
    commit(&bar.k_empty[st]);
  };

  mbar_wait_or_trap(bar.q_full, 0);
  issue_qk(0);
  for (int i = 0; i < n_blocks; ++i) {
    if (i + 1 < n_blocks) issue_qk(i + 1);
    const int st = stage_of<STAGES>(i), pb = i & 1;
    mbar_wait_or_trap(&bar.p_full[pb], phase_of<2>(i));  // P_i written (and O corrected) by the softmax
    mbar_wait_or_trap(&bar.v_full[st], phase_of<STAGES>(i));
    fence_after_sync();
    const uint64_t v_desc = smem_desc_sw128(smem + Cfg::V_OFFSET + st * Cfg::KV_BYTES, BN * 128);
#pragma unroll
    for (int kk = 0; kk < BN / 16; ++kk)
      mma_ts(tmem + Cfg::TMEM_O, tmem + Cfg::TMEM_P + pb * (BN / 2) + kk * 8, desc_advance(v_desc, kk * 16 * 128),
             idesc_pv, i > 0 || kk > 0);
    commit(&bar.v_empty[st]);
    commit(bar.o_done);
  }
}

// The softmax warpgroup: thread t owns row t of the tile (Tensor Memory lane t).
template <typename T, class Cfg, class Opt>
__device__ __forceinline__ void softmax_warps(const AttnParams &p, const BlockWork &w, unsigned char *smem,
                                              uint32_t tmem) {
  constexpr int BN = Cfg::BN, D = Cfg::D;
  Barriers<Cfg> bar(smem);
  const int t = threadIdx.x, lane = t & 31;
  const uint32_t lane_addr = tmem + ((uint32_t)(t & ~31) << 16);  // this warp's 32 lanes
  const int row = w.m_block * Cfg::BM + t;
  const int n_blocks = w.n_end - w.n_begin;
  const float scale_log2 = p.scale * kLog2e;
  int lo, hi;
  visible_cols(p, row, w.kv_len, lo, hi);
  if (row >= p.seq_q) hi = lo;  // rows past the end: never written, keep them masked

  float m = -INFINITY, l = 0.f;
  auto warp_arrive = [&](uint64_t *b) {
    fence_before_sync();
    __syncwarp();
    if (lane == 0) sm90::mbar_arrive(b);
  };

  for (int i = 0; i < n_blocks; ++i) {
    const int sb = i & 1, c0 = (w.n_begin + i) * BN;
    mbar_wait_or_trap(&bar.s_full[sb], phase_of<2>(i));
    fence_after_sync();
    __syncwarp();  // tcgen05.ld/st are warp-wide (.sync.aligned): the warp must be converged
    uint32_t raw[BN];
#pragma unroll
    for (int c = 0; c < BN; c += 16) tmem_ld16(lane_addr + Cfg::TMEM_S + sb * BN + c, *reinterpret_cast<uint32_t(*)[16]>(&raw[c]));
    wait_ld();
    fence_regs(raw);
    warp_arrive(&bar.s_free[sb]);  // S_i is in registers: the buffer may take S_{i+2}

    float s[BN];
    const bool inside = c0 >= lo && c0 + BN <= hi;
#pragma unroll
    for (int j = 0; j < BN; ++j) {
      s[j] = __uint_as_float(raw[j]);
      if (!inside && (c0 + j < lo || c0 + j >= hi)) s[j] = -INFINITY;
    }
    // Row max in 4 independent chains, then FA4's conditional rescaling: the stale max is kept unless the
    // new one exceeds it by more than 2^RESCALE_THRESHOLD (P then stays below that power of two; O and l
    // share the stale max, so the final normalisation is exact).
    float pm[4] = {m, m, m, m};
#pragma unroll
    for (int j = 0; j < BN; ++j) pm[j % 4] = fmaxf(pm[j % 4], s[j]);
    float mx = fmaxf(fmaxf(pm[0], pm[1]), fmaxf(pm[2], pm[3]));
    if (Opt::RESCALE_THRESHOLD > 0 && (mx - m) * scale_log2 <= (float)Opt::RESCALE_THRESHOLD) mx = m;
    const float mb = mx == -INFINITY ? 0.f : mx * scale_log2;
    const float corr = fast_exp2(m * scale_log2 - mb);  // m = -inf -> 0
    const bool moved = mx != m;
    m = mx;

    float ps[4] = {0.f, 0.f, 0.f, 0.f};
    uint32_t pk[BN / 2];
#pragma unroll
    for (int j = 0; j < BN; j += 2) {
      constexpr int EVERY = Opt::EMULATED_EXP2_EVERY > 0 ? Opt::EMULATED_EXP2_EVERY : 1;
      const bool emulate = Opt::EMULATED_EXP2_EVERY > 0 && (j / 8 + 1) % EVERY == 0;
      const float x0 = fmaf(s[j], scale_log2, -mb), x1 = fmaf(s[j + 1], scale_log2, -mb);
      const float p0 = emulate ? poly_exp2(x0) : fast_exp2(x0);
      const float p1 = emulate ? poly_exp2(x1) : fast_exp2(x1);
      ps[(j / 2) % 4] += p0 + p1;
      pk[j / 2] = Elem<T>::pack2(p0, p1);
    }
    l = l * corr + ((ps[0] + ps[1]) + (ps[2] + ps[3]));

    // P_{i-2} (same buffer) was consumed by PV_{i-2}, whose completion step i-1 waited for.
    __syncwarp();
#pragma unroll
    for (int c = 0; c < BN / 2; c += 16)
      tmem_st16(lane_addr + Cfg::TMEM_P + sb * (BN / 2) + c, *reinterpret_cast<const uint32_t(*)[16]>(&pk[c]));
    // Correction: O must hold PV_{i-1} before it is rescaled (and before PV_i adds to it).
    if (i > 0) {
      mbar_wait_or_trap(bar.o_done, (uint32_t)(i - 1) & 1u);
      fence_after_sync();
      if (__any_sync(0xffffffffu, moved)) {
#pragma unroll
        for (int c = 0; c < D; c += 16) {
          uint32_t o[16];
          tmem_ld16(lane_addr + Cfg::TMEM_O + c, o);
          wait_ld();
          fence_regs(o);
#pragma unroll
          for (int e = 0; e < 16; ++e) o[e] = __float_as_uint(__uint_as_float(o[e]) * corr);
          tmem_st16(lane_addr + Cfg::TMEM_O + c, o);
        }
      }
    }
    wait_st();
    warp_arrive(&bar.p_full[sb]);
  }

  // Epilogue: O / l to global memory (this thread's row, 16 columns at a time), natural-log lse.
  const bool any = l > 0.f;
  const float inv = any ? 1.f / l : 0.f;
  if (n_blocks > 0) {
    mbar_wait_or_trap(bar.o_done, (uint32_t)(n_blocks - 1) & 1u);
    fence_after_sync();
  }
  T *out = reinterpret_cast<T *>(p.out_ptr) + (int64_t)w.batch * p.out_batch_stride +
           (int64_t)w.head * p.out_head_stride + (int64_t)row * p.out_row_stride;
  const int dv = p.head_dim_v;
  const bool vec = ((p.out_ptr & 15) == 0) && ((p.out_batch_stride | p.out_head_stride | p.out_row_stride) & 7) == 0;
#pragma unroll
  for (int c = 0; c < D; c += 16) {
    uint32_t o[16];
    __syncwarp();  // tcgen05.ld is warp-wide (.sync.aligned): reconverge after the previous chunk's skips
    if (n_blocks > 0) {
      tmem_ld16(lane_addr + Cfg::TMEM_O + c, o);  // warp-wide: every thread loads, in-range or not
      wait_ld();
      fence_regs(o);
    } else {
#pragma unroll
      for (int e = 0; e < 16; ++e) o[e] = 0u;
    }
    if (row >= p.seq_q || c >= dv) continue;
    uint32_t packed[8];
#pragma unroll
    for (int e = 0; e < 8; ++e)
      packed[e] = Elem<T>::pack2(__uint_as_float(o[2 * e]) * inv, __uint_as_float(o[2 * e + 1]) * inv);
    if (vec && c + 16 <= dv) {
      uint4 *dst = reinterpret_cast<uint4 *>(out + c);
      dst[0] = make_uint4(packed[0], packed[1], packed[2], packed[3]);
      dst[1] = make_uint4(packed[4], packed[5], packed[6], packed[7]);
    } else {
#pragma unroll
      for (int e = 0; e < 16; ++e)
        if (c + e < dv) out[c + e] = Elem<T>::from_f32(__uint_as_float(o[e]) * inv);
    }
  }
  if (p.lse_ptr != 0 && row < p.seq_q)
    reinterpret_cast<float *>(p.lse_ptr)[((int64_t)w.batch * p.heads_q + w.head) * p.seq_q + row] =
        any ? m * p.scale + logf(l) : -INFINITY;
}

}  // namespace sm100

template <typename T, class Cfg, class Opt>
__device__ __forceinline__ void flash_fwd_sm100(const AttnParams &p, const CUtensorMap *tq, const CUtensorMap *tk,
                                                const CUtensorMap *tv) {
  using namespace sm100;
  extern __shared__ unsigned char smem_raw[];
  require_dynamic_smem(Cfg::SMEM_BYTES);
  unsigned char *smem = align_1024(smem_raw);
  uint32_t *tmem_slot = reinterpret_cast<uint32_t *>(smem + Cfg::TMEM_SLOT_OFFSET);
  const int warp = threadIdx.x / 32;
  Barriers<Cfg> bar(smem);
  if (threadIdx.x == 0) {
    bar.init();
    asm volatile("fence.mbarrier_init.release.cluster;" ::: "memory");
  }
  if (warp == Cfg::MMA_WARP) {
    tmem_alloc<Cfg::TMEM_COLS>(tmem_slot);
    tmem_relinquish_alloc_permit();
  }
  fence_before_sync();
  __syncthreads();
  fence_after_sync();
  const uint32_t tmem = *tmem_slot;

  const BlockWork w = persistent_tile<Cfg::BM, Cfg::BN>(p, blockIdx.x);
  const bool has_keys = w.n_end > w.n_begin;
  if (warp == Cfg::LOAD_WARP) {
    if (has_keys && sm90::elect_one_lane()) load_warp<Cfg>(w, smem, tq, tk, tv);
  } else if (warp == Cfg::MMA_WARP) {
    if (has_keys && sm90::elect_one_lane()) mma_warp<T, Cfg>(w, smem, tmem);
  } else {
    softmax_warps<T, Cfg, Opt>(p, w, smem, tmem);
  }
  // Every MMA has completed (the softmax waited for the last one) and every Tensor Memory read is done.
  fence_before_sync();
  __syncthreads();
  if (warp == Cfg::MMA_WARP) {
    __syncwarp();  // lane 0 issued the MMAs alone: reconverge for the warp-wide dealloc
    fence_after_sync();
    tmem_dealloc<Cfg::TMEM_COLS>(tmem);
  }
}

}  // namespace flashattn
