// The Hopper (sm_90a) forward kernel body, FlashAttention-3 style. Blocks are persistent (one per SM):
// each walks the tiles of BM query rows of one (batch, head) that persistent_tile hands it (or, GQA-packed, of
// one (batch, KV head)'s group of query heads: gqa_pack.cuh), with a producer
// and two or three consumer warpgroups (BM = 128 or 192):
//   - the producer (warpgroup 0, one thread) streams Q once and K/V tiles through a STAGES-deep ring with
//     TMA, each load completing on a "full" mbarrier; consumers hand stages back on "empty" mbarriers,
//     and Q back as soon as their last QK^T of a tile is done, so the next tile's Q loads under the epilogue;
//   - the consumers (64 query rows each) compute S = Q K^T with wgmma from shared memory and O += P V with
//     P from registers. Inside a consumer, the next tile's QK^T and the current PV run on the tensor cores
//     while the softmax of the tile in between runs on the other units; across consumers, named barriers
//     make their GEMM issue take turns (ping-pong), so one warpgroup's softmax hides behind the others' GEMMs.
// With Cfg::CLUSTER == 2 the two blocks of a cluster walk neighbouring query tiles of one head in step and share
// every K/V tile: each producer loads its panels into both blocks (multicast), and a ring slot is free once
// both blocks' consumers released it.
// Scores stay in raw units (scale folded into the exponent), masking and the online softmax are the ones
// the portable kernel uses (mask.cuh, softmax.cuh), on wgmma's accumulator layout, which per warp is the
// mma.sync m16n8 layout.
#pragma once
#include "cluster.cuh"
#include "common.cuh"
#include "config_sm90.cuh"
#include "dependent_launch.cuh"
#include "epilogue.cuh"
#include "epilogue_sm90.cuh"
#include "key_padding.cuh"
#include "mask.cuh"
#include "params.cuh"
#include "sm90_ptx.cuh"
#include "tma_kv_ring.cuh"
#include "softmax.cuh"
#include "tile_scheduler.cuh"
#include "wgmma.cuh"

namespace flashattn {

// Tunables of one Hopper instance (their effect is measured in docs/PERF.md).
// SPLIT_PV_WAIT: wait for the previous PV after the first of a thread's two rows is exponentiated (not after
// both), so the new P's conversion and the O rescale run among the second row's exponentials (FlashAttention-4's
// Hopper order) instead of after them. Measured 1-5% slower at d64-d128 and even at d192/d256: not the default.
// STAGED_P: P is converted into a second register buffer among the exponentials, while the previous PV still
// reads the first, and copied over after that PV's wait (alternating two buffers instead made ptxas wait for
// the PV before the softmax). Measured 1-7% slower at d128 (the copies cost more than the overlap gains).
// (FlashAttention-3's order, O rescaled after the next QK^T is issued and before the next PV, was measured too
// and lost 0.2-8% at d128; at d192/d256, where FlashAttention-4 uses it, it gained nothing with the ping-pong
// turn (0.96-1.03x) and lost up to 11% without it. Also slower: two of FlashAttention-4's Hopper choices, a
// tile's first QK^T and last PV issued without the ping-pong turn (1-10%) and V waited for between the QK^T and
// PV issue (0-9% but for one row), and its d64 order, a thread's first row exponentiated before the PV wait and
// the second after it (a removed variant that held the first row above the wait; 1-6% at d64, 13-30% at d128):
// docs/PERF.md.)
// ALWAYS_RESCALE: O rescaled at every step (FlashAttention-4's choice), in the same block as P's conversions,
// which can then interleave with the multiplies instead of issuing in a burst (ncu, docs/PERF.md).
// SOFTMAX_FIRST: every exponential of the step computed before the previous PV is waited for. Without it ptxas
// sinks the second of a thread's two rows below the wait (the never-taken branch that keeps P live does not read
// them), so the O rescale and P's conversion interleave with that row's exponentials.
template <bool PINGPONG_, int RESCALE_THRESHOLD_, int EMULATED_EXP2_EVERY_, bool SPLIT_PV_WAIT_ = false,
          bool STAGED_P_ = false, bool ALWAYS_RESCALE_ = false, bool SOFTMAX_FIRST_ = false>
struct Sm90Options {
  static constexpr bool PINGPONG = PINGPONG_;
  static constexpr int RESCALE_THRESHOLD = RESCALE_THRESHOLD_;
  static constexpr int EMULATED_EXP2_EVERY = EMULATED_EXP2_EVERY_;
  static constexpr bool SPLIT_PV_WAIT = SPLIT_PV_WAIT_;
  static constexpr bool STAGED_P = STAGED_P_;
  static constexpr bool ALWAYS_RESCALE = ALWAYS_RESCALE_;
  static constexpr bool SOFTMAX_FIRST = SOFTMAX_FIRST_;
};

namespace sm90 {

// Named barrier ids (0 is __syncthreads): one per consumer for the ping-pong turn (up to three), one for all
// consumers.
constexpr int kBarTurn0 = 1;
constexpr int kBarConsumers = 4;

// The block's mbarriers, 8 bytes each from Cfg::BAR_OFFSET: q_full, q_empty, then k_full, k_empty, v_full and
// v_empty of each stage, and with O written over the V stages (Cfg::O_IN_V) o_read: the tile's O stores have read
// it (slot indices below; the consumers address them as 32-bit shared addresses).
template <class Cfg> struct Barriers {
  static constexpr int Q_FULL = 0, Q_EMPTY = 1, K_FULL = 2, K_EMPTY = K_FULL + Cfg::STAGES,
                       V_FULL = K_EMPTY + Cfg::STAGES, V_EMPTY = V_FULL + Cfg::STAGES, O_READ = V_EMPTY + Cfg::STAGES;
  static_assert(O_READ + (Cfg::O_IN_V ? 1 : 0) == Cfg::BARRIERS, "Sm90Config::BARRIERS counts these");
  uint64_t *q_full, *q_empty, *k_full, *k_empty, *v_full, *v_empty, *o_read;
  __device__ __forceinline__ explicit Barriers(unsigned char *base) {
    uint64_t *b = reinterpret_cast<uint64_t *>(base + Cfg::BAR_OFFSET);
    q_full = b + Q_FULL;
    q_empty = b + Q_EMPTY;
    k_full = b + K_FULL;
    k_empty = b + K_EMPTY;
    v_full = b + V_FULL;
    v_empty = b + V_EMPTY;
    o_read = b + O_READ;
  }
};

template <typename T, class Cfg, bool PACK>
__device__ __forceinline__ void produce(const AttnParams &p, unsigned char *smem, const CUtensorMap *tq,
                                        const CUtensorMap *tk, const CUtensorMap *tv, int n_splits, bool o_in_v) {
  constexpr int BM = Cfg::BM, BN = Cfg::BN, STAGES = Cfg::STAGES, CLUSTER = Cfg::CLUSTER;
  Barriers<Cfg> bar(smem);
  prefetch_tensor_map(tq);
  prefetch_tensor_map(tk);
  prefetch_tensor_map(tv);
  const uint32_t rank = CLUSTER > 1 ? cluster_rank() : 0;
  const int tiles = persistent_tiles<CLUSTER, PACK>(p, BM) * n_splits;
  int ring = 0, loaded = 0;  // K/V ring steps and Q tiles so far, counted alike by the consumers
  for (int k = 0, t; (t = persistent_tile_index<CLUSTER>(k)) < tiles; ++k) {
    const BlockWork w = persistent_split_tile<BM, BN, CLUSTER, PACK>(p, t, n_splits);
    const int n_blocks = w.n_end - w.n_begin;
    if (n_blocks <= 0) continue;
    mbar_wait(bar.q_empty, (uint32_t)(loaded & 1) ^ 1u);
    mbar_expect_tx(bar.q_full, Cfg::Q_BYTES);
    if constexpr (PACK)
      tma_load_packed_q<Cfg>(smem, tq, bar.q_full, w.m_block * BM, gqa_row_shift(p), w.kv_head, w.batch, kEvictFirst);
    else
      tma_load_tile<Cfg>(smem, BM, tq, bar.q_full, w.m_block * BM, w.head, w.batch, kEvictFirst);
    ++loaded;
    for (int i = 0; i < n_blocks; ++i, ++ring) {
      const int st = stage_of<STAGES>(ring);
      const uint32_t ph = phase_of<STAGES>(ring);
      // With O written over the V stages, a tile's first V waits until the previous tile's O stores read them.
      const bool after_o = o_in_v && i == 0 && loaded > 1;
      tma_load_kv_block<Cfg, CLUSTER>(smem, bar, st, ph, (w.n_begin + i) * BN, w.kv_head, w.batch, tk, tv,
                                      [&](uint64_t *b, uint32_t parity) {
                                        if (after_o && b == &bar.v_empty[st]) mbar_wait(bar.o_read, (uint32_t)(loaded & 1));
                                        mbar_wait(b, parity);
                                      },
                                      rank);
    }
  }
  // Every load of the block is issued: a kernel launched after this one as a programmatic dependent may take
  // the SMs that blocks leave from here on (it waits in dependent_wait for this whole grid to finish).
  allow_dependents();
  if constexpr (CLUSTER > 1) {
    // The peer blocks' consumers still arrive on this block's "empty" barriers after its own consumers are
    // done: the block (its shared memory) must outlive those arrivals, so wait for the last use of each slot
    // to be released by every block.
    for (int j = 0; j < STAGES; ++j, ++ring) {
      mbar_wait(&bar.k_empty[stage_of<STAGES>(ring)], phase_of<STAGES>(ring) ^ 1u);
      mbar_wait(&bar.v_empty[stage_of<STAGES>(ring)], phase_of<STAGES>(ring) ^ 1u);
    }
  }
}

// The dynamic shared memory, 1024-byte aligned (128-byte swizzled tiles need it). FOLD: through a symbol declared
// 1024-aligned (it is on sm_90, with no static shared memory before it; a launch where it is not traps), so
// that shared addresses fold into constants: the d128 main loop issues ~25 instructions fewer per step than with
// the base aligned at run time. d256's masked form keeps run-time alignment: with folded addresses it spills
// around its out-of-line calls.
template <bool FOLD> __device__ __forceinline__ unsigned char *dynamic_smem_1024() {
  if constexpr (FOLD) {
    extern __shared__ __align__(1024) unsigned char smem_aligned[];
    if (smem_u32(smem_aligned) & 1023) __trap();
    return smem_aligned;
  } else {
    extern __shared__ unsigned char smem_raw[];
    return align_1024(smem_raw);
  }
}

// Key rows [kv_len, seq_kv) of a V tile hold whatever the caller's buffer holds there (a KV cache's unused
// tail, say); P is 0 on them but 0 * NaN is not, so they are zeroed before the PV GEMM reads the tile.
// The consumers share the tile: each zeroes a share of the rows, then they meet. Not inlined: it is rare, and
// inlined its index arithmetic gets hoisted into every main-loop step.
template <typename T, class Cfg>
__device__ __noinline__ void zero_v_tail(uint32_t v_tile_addr, int first_row, int end_row, int consumer_tid) {
  unsigned char *v_tile = static_cast<unsigned char *>(__cvta_shared_to_generic(v_tile_addr));
  constexpr int CHUNKS = Cfg::D / 8, PANEL_CHUNKS = Cfg::PANEL_COLS / 8;  // 16-byte chunks per row: all, per panel
  const int rows = end_row - first_row;
  for (int idx = consumer_tid; idx < rows * CHUNKS; idx += 128 * Cfg::CONSUMERS) {
    const int r = first_row + idx / CHUNKS, c = idx % CHUNKS;
    const int pn = c / PANEL_CHUNKS, chunk = c % PANEL_CHUNKS;
    // Any permutation of the 16-byte chunks of a row is fine here: every chunk of the row is zeroed.
    *reinterpret_cast<uint4 *>(v_tile + (pn * Cfg::BN + r) * Cfg::PANEL_BYTES + chunk * 16) = make_uint4(0, 0, 0, 0);
  }
  fence_proxy_async();
  named_barrier_sync(kBarConsumers, 128 * Cfg::CONSUMERS);
}

// A main-loop step's kind (consume_tile): EDGE steps may need the tile's score mods, the V tail zeroed or Q
// released; interior steps need none, and their copy of the step carries none of those checks.
template <bool EDGE_> struct StepKind {
  static constexpr bool EDGE = EDGE_;
};

// The turn of the ping-pong: a consumer waits for it before issuing its GEMMs and passes it on after, to the
// next consumer in a ring (each barrier joins the waiting warpgroup and the one passing to it).
template <class Opt, int CONSUMERS> struct Turn {
  int consumer;
  __device__ __forceinline__ void wait() const {
    if (Opt::PINGPONG) named_barrier_sync(kBarTurn0 + consumer, 256);
  }
  __device__ __forceinline__ void pass() const {
    if (Opt::PINGPONG) named_barrier_arrive(kBarTurn0 + (consumer + 1 == CONSUMERS ? 0 : consumer + 1), 256);
  }
};

// The packed rows of tile w's partial results (PartialRows): GQA-packed tiles (PACK) hold packed rows already.
template <bool PACK>
__device__ __forceinline__ PartialRows partial_rows(const AttnParams &p, const BlockWork &w, int row_shift) {
  const int g = p.heads_q / p.heads_kv;
  if constexpr (PACK) return PartialRows{p.seq_q << row_shift, 1, 0, p.seq_q << row_shift};
  return PartialRows{p.seq_q, g, w.head % g, p.seq_q * g};
}

// A warp's finished rows of tile w: to the outputs, or with split keys (parts.n > 1) to the split's partials.
// Where O leaves through shared memory (`to`, the output's tensor map, given: flash_fwd_sm90 decides), the consumer
// warpgroup's rows go through it with one TMA store (epilogue_sm90.cuh).
template <typename T, class Cfg, int NTD, bool PACK>
__device__ __forceinline__ void store_rows(const AttnParams &p, const BlockWork &w, const float (&o)[1][NTD][4],
                                           const float (&inv)[1][2], const float (&lse)[1][2], int row_base, int lane,
                                           int row_shift, const SplitParts &parts, const CUtensorMap *to,
                                           uint32_t sbase, int consumer) {
  if constexpr (Cfg::STAGE_O && !PACK) {
    if (to != nullptr) {
      // O over the V stages: every consumer's last PV has read them first.
      if constexpr (Cfg::O_IN_V) named_barrier_sync(kBarConsumers, 128 * Cfg::CONSUMERS);
      const uint32_t o_read = Cfg::O_IN_V ? sbase + Cfg::BAR_OFFSET + 8 * Barriers<Cfg>::O_READ : 0;
      store_output_tma<T, Cfg, NTD>(p, o, inv, lse, to, sbase + Cfg::O_OFFSET + consumer * 64 * Cfg::D * 2, w.batch,
                                    w.head, w.m_block * Cfg::BM + consumer * 64, consumer, o_read);
      return;
    }
  }
  if (parts.n > 1)
    store_partial<1, NTD>(p, o, inv, lse, parts, w.batch, w.kv_head, w.split, partial_rows<PACK>(p, w, row_shift), row_base, lane);
  else
    store_output<T, 1, NTD>(p, o, inv, lse, w.batch, w.head, row_base, lane, row_shift);
}

// One tile of a consumer: `ring` is the K/V ring step of its first key block, `loaded` the count of Q
// tiles before it; row_shift: GQA packing's (gqa_pack.cuh), 0 without; parts: where split partials go; to: the
// output's tensor map where O leaves through shared memory (store_rows), else null.
template <typename T, class Cfg, class Opt, bool MODS, bool PACK>
__device__ __forceinline__ void consume_tile(const AttnParams &p, const BlockWork &w, unsigned char *smem,
                                             int consumer, int ring, int loaded, const Turn<Opt, Cfg::CONSUMERS> &turn,
                                             int row_shift, const SplitParts &parts, const CUtensorMap *to) {
  constexpr int BM = Cfg::BM, BN = Cfg::BN, D = Cfg::D, STAGES = Cfg::STAGES;
  constexpr int NTN = BN / 8, NTD = D / 8, KQ = D / 16, KP = BN / 16;
  constexpr int PB = Cfg::PANEL_BYTES, KQ_PER_PANEL = Cfg::PANEL_COLS / 16;
  // 32-bit shared-memory addresses of the tiles and of the barriers (a stage's barrier 8 bytes past the
  // previous one's). Derived from the base and Barriers' slot indices rather than converted from its pointers:
  // d256's masked form has no register to spare for the conversions.
  using Bar = Barriers<Cfg>;
  const uint32_t sbase = smem_u32(smem), bars = sbase + Cfg::BAR_OFFSET;
  const uint32_t q_full = bars + 8 * Bar::Q_FULL, q_empty = bars + 8 * Bar::Q_EMPTY, k_full = bars + 8 * Bar::K_FULL,
                 k_empty = bars + 8 * Bar::K_EMPTY, v_full = bars + 8 * Bar::V_FULL, v_empty = bars + 8 * Bar::V_EMPTY;
  const int lane = threadIdx.x & 31, warp_in_group = (threadIdx.x / 32) & 3;
  const int row_base = w.m_block * BM + consumer * 64 + warp_in_group * 16;
  const int n_blocks = w.n_end - w.n_begin;
  const float scale_log2 = p.scale * kLog2e;
  const bool zero_tail = p.has_seqlens && w.kv_len < p.seq_kv;

  float s[1][NTN][4], o[1][NTD][4];
  uint32_t pa[KP][4], p_staged[Opt::STAGED_P ? KP : 1][4];
  uint32_t(&pa_flat)[KP * 4] = reinterpret_cast<uint32_t(&)[KP * 4]>(pa);
  float(&s_flat)[BN / 2] = reinterpret_cast<float(&)[BN / 2]>(s);
  float(&o_flat)[D / 2] = reinterpret_cast<float(&)[D / 2]>(o);  // first written by the tile's first PV
  OnlineSoftmax<1, NTN, NTD> sm;
  sm.init();

  // Q rows of this consumer: rows [64*consumer, +64) of every panel. The k-steps' Q descriptors are the same at
  // every main-loop step: up to d192 they are computed once per tile (else each step pays an add with carry per
  // k-step); d256's sixteen would take 32 registers that its masked form does not have.
  constexpr bool HOIST_Q = KQ <= 12;
  const uint64_t q_base = smem_desc_sw<PB>(sbase + consumer * 64 * PB, 1);
  auto q_off = [](int kk) -> uint32_t { return (kk / KQ_PER_PANEL) * BM * PB + (kk % KQ_PER_PANEL) * 32; };
  uint64_t q_desc[HOIST_Q ? KQ : 1];
#pragma unroll
  for (int kk = 0; kk < (HOIST_Q ? KQ : 1); ++kk) q_desc[kk] = desc_advance(q_base, q_off(kk));
  auto issue_qk = [&](int st) {
    const uint64_t k_desc = smem_desc_sw<PB>(sbase + Cfg::K_OFFSET + st * Cfg::KV_BYTES, 1);
#pragma unroll
    for (int kk = 0; kk < KQ; ++kk) {
      const uint32_t off_k = (kk / KQ_PER_PANEL) * BN * PB + (kk % KQ_PER_PANEL) * 32;
      const uint64_t qd = HOIST_Q ? q_desc[HOIST_Q ? kk : 0] : desc_advance(q_base, q_off(kk));
      Wgmma<T, BN>::ss(s_flat, qd, desc_advance(k_desc, off_k), kk > 0);
    }
  };
  // The tile's first PV overwrites O instead of adding to it, so O needs no zeroing.
  auto issue_pv = [&](int st, bool first) {
    const uint64_t v_desc = smem_desc_sw<PB>(sbase + Cfg::V_OFFSET + st * Cfg::KV_BYTES, BN * PB);
#pragma unroll
    for (int kk = 0; kk < KP; ++kk)
      Wgmma<T, D>::rs(o_flat, pa[kk], desc_advance(v_desc, kk * 16 * PB), kk > 0 || !first);
  };
  auto release = [&](uint32_t b) {
    if (lane == 0) mbar_arrive(b);
  };
  // A K/V slot is free once the consumers of every block of the cluster are done with it (the loads into it
  // are multicast): lane r of each warp arrives on block r's barrier.
  auto release_kv = [&](uint32_t b) {
    if constexpr (Cfg::CLUSTER == 1) {
      release(b);
    } else {
      if (lane < Cfg::CLUSTER) mbar_arrive_cluster(cluster_peer(b, lane));
    }
  };
  auto score_mods = [&](int i) {
    apply_tile_mods<T, 1, NTN, MODS>(s, p, w.batch, w.head, row_base, (w.n_begin + i) * BN, w.kv_len, w.lo_max,
                                     w.hi_min, lane, row_shift);
  };
  auto to_p = [&](uint32_t(&dst)[KP][4]) {
#pragma unroll
    for (int kk = 0; kk < KP; ++kk) {
      dst[kk][0] = Elem<T>::pack2(s[0][2 * kk][0], s[0][2 * kk][1]);
      dst[kk][1] = Elem<T>::pack2(s[0][2 * kk][2], s[0][2 * kk][3]);
      dst[kk][2] = Elem<T>::pack2(s[0][2 * kk + 1][0], s[0][2 * kk + 1][1]);
      dst[kk][3] = Elem<T>::pack2(s[0][2 * kk + 1][2], s[0][2 * kk + 1][3]);
    }
  };
  auto to_pa = [&] { to_p(pa); };
  // Key blocks from zero_from on reach past kv_len (block j does when (j + 1) * BN > kv_len).
  const int zero_from = zero_tail ? w.kv_len / BN - w.n_begin : n_blocks;
  auto prepare_v = [&](int i, int st) {
    if (i >= zero_from) {
      const int c0 = (w.n_begin + i) * BN;
      const int end = min(BN, p.seq_kv - c0);
      zero_v_tail<T, Cfg>(sbase + Cfg::V_OFFSET + st * Cfg::KV_BYTES, max(w.kv_len - c0, 0), end, threadIdx.x - 128);
    }
  };
  auto release_q_after = [&](int i) {
    if (i == n_blocks - 1) release(q_empty);  // the tile's last QK^T is done: Q may be overwritten
  };

  mbar_wait(q_full, (uint32_t)(loaded & 1));

  // Step 0: S_0 = Q K_0^T, P_0.
  RingPos<STAGES> cur(ring);
  mbar_wait(k_full + 8 * cur.stage, cur.phase);
  turn.wait();
  wgmma_fence();
  issue_qk(cur.stage);
  wgmma_commit();
  turn.pass();
  wgmma_wait<0>();
  fence_regs(s_flat);
  release_kv(k_empty + 8 * cur.stage);
  release_q_after(0);
  score_mods(0);
  {
    float corr[1][2];
    sm.template exponentiate<Opt::RESCALE_THRESHOLD, Opt::EMULATED_EXP2_EVERY>(s, corr, scale_log2);
  }
  to_pa();

  // Step i: S_i = Q K_i^T and O += P_{i-1} V_{i-1} in flight together; softmax of S_i while PV runs. An interior
  // step (kind EDGE false) skips the checks only edge steps need: score mods, V-tail zeroing, Q's release.
  auto step = [&](int i, auto kind) {
    constexpr bool EDGE = decltype(kind)::EDGE;
    const RingPos<STAGES> prev = cur;
    cur.advance();
    const int st = cur.stage, pst = prev.stage;
    mbar_wait(k_full + 8 * st, cur.phase);
    mbar_wait(v_full + 8 * pst, prev.phase);
    if constexpr (EDGE) prepare_v(i - 1, pst);
    turn.wait();
    wgmma_fence();
    issue_qk(st);
    wgmma_commit();
    issue_pv(pst, i == 1);
    wgmma_commit();
    turn.pass();
    wgmma_wait<1>();
    fence_regs(s_flat);
    release_kv(k_empty + 8 * st);
    if constexpr (EDGE) {
      release_q_after(i);
      score_mods(i);
    }
    float corr[1][2];
    // The softmax runs while PV_{i-1} does: P stays live until the wait (else ptxas reuses its registers for
    // the softmax and waits for PV first), and the branch in keep_live ends the basic block, so ptxas cannot
    // hoist the wait above the softmax. It does sink the second row's exponentials below it unless S is kept
    // live too (SOFTMAX_FIRST); with SPLIT_PV_WAIT the wait comes after the first row by design.
    auto wait_pv = [&] {
      fence_regs(s_flat);
      if constexpr (Opt::SOFTMAX_FIRST && !Opt::SPLIT_PV_WAIT)
        keep_live(pa_flat, s_flat, sbase, p.seq_q < 0);
      else
        keep_live(pa_flat, sbase, p.seq_q < 0);
      wgmma_wait<0>();
      fence_regs(o_flat);
      release_kv(v_empty + 8 * pst);
    };
    // O follows a moved row max (any row of the warp), or every step with ALWAYS_RESCALE.
    auto rescale_o = [&](bool moved) {
      if (Opt::ALWAYS_RESCALE || __any_sync(0xffffffffu, moved)) OnlineSoftmax<1, NTN, NTD>::rescale(o, corr);
    };
    bool rescale;
    if constexpr (Opt::SPLIT_PV_WAIT) {
      rescale = sm.template exponentiate_row<Opt::RESCALE_THRESHOLD, Opt::EMULATED_EXP2_EVERY>(s, corr, scale_log2, 0, 0);
      wait_pv();
      rescale |= sm.template exponentiate_row<Opt::RESCALE_THRESHOLD, Opt::EMULATED_EXP2_EVERY>(s, corr, scale_log2, 0, 1);
      to_pa();
      rescale_o(rescale);
    } else {
      rescale = sm.template exponentiate<Opt::RESCALE_THRESHOLD, Opt::EMULATED_EXP2_EVERY>(s, corr, scale_log2);
      if constexpr (Opt::STAGED_P) to_p(p_staged);
      wait_pv();
      rescale_o(rescale);
      if constexpr (Opt::STAGED_P) {
#pragma unroll
        for (int kk = 0; kk < KP; ++kk)
#pragma unroll
          for (int e = 0; e < 4; ++e) pa[kk][e] = p_staged[kk][e];
      } else {
        to_pa();
      }
    }
  };
  // The leading steps whose key block lies inside every row's visible range (no score mods), whose previous V
  // block needs no zeroing and that are not the last (which releases Q) run as interior steps: plain instances
  // only (a mask tensor or softcap touches every tile).
  int interior_end = 1;
  if constexpr (!MODS) {
    if (w.lo_max <= (w.n_begin + 1) * BN)
      interior_end = max(1, min(min(w.hi_min / BN - w.n_begin, zero_from + 1), n_blocks - 1));
  }
  int i = 1;
  for (; i < interior_end; ++i) step(i, StepKind<false>{});
  for (; i < n_blocks; ++i) step(i, StepKind<true>{});

  // Last PV.
  const int lst = cur.stage;
  mbar_wait(v_full + 8 * lst, cur.phase);
  prepare_v(n_blocks - 1, lst);
  turn.wait();
  wgmma_fence();
  issue_pv(lst, n_blocks == 1);
  wgmma_commit();
  turn.pass();
  wgmma_wait<0>();
  fence_regs(o_flat);
  release_kv(v_empty + 8 * lst);

  float inv[1][2], lse[1][2];
  sm.finalize(inv, lse, p.scale);
  store_rows<T, Cfg, NTD, PACK>(p, w, o, inv, lse, row_base, lane, row_shift, parts, to, sbase, consumer);
}

// Rows of a block that sees no key at all: zeros and lse = -inf, as the main loop would give them.
template <typename T, class Cfg, bool PACK>
__device__ __forceinline__ void store_empty(const AttnParams &p, const BlockWork &w, int consumer, int row_shift,
                                            const SplitParts &parts) {
  constexpr int NTD = Cfg::D / 8;
  const int lane = threadIdx.x & 31, warp_in_group = (threadIdx.x / 32) & 3;
  float o[1][NTD][4] = {};
  const float inv[1][2] = {{0.f, 0.f}}, lse[1][2] = {{-INFINITY, -INFINITY}};
  store_rows<T, Cfg, NTD, PACK>(p, w, o, inv, lse, w.m_block * Cfg::BM + consumer * 64 + warp_in_group * 16, lane,
                                row_shift, parts, nullptr, 0, consumer);
}

}  // namespace sm90

// PACK: GQA packing (gqa_pack.cuh), plain single-block instances only. Split-KV `parts` (n > 1: each tile's keys
// cut into n ranges, partial results to the workspace for the decode combine kernel to merge) are taken by the
// packed instances and the `_split` ones; every other instance leaves them at n = 1, a constant. `to`: the
// output's tensor map where TMA can address the output, else null.
template <typename T, class Cfg, class Opt, bool MODS, bool PACK = false>
__device__ __forceinline__ void flash_fwd_sm90(const AttnParams &p, const CUtensorMap *tq, const CUtensorMap *tk,
                                               const CUtensorMap *tv, const SplitParts parts = SplitParts{nullptr, nullptr, 1},
                                               const CUtensorMap *to = nullptr) {
  using namespace sm90;
  static_assert(!PACK || (!MODS && Cfg::CLUSTER == 1), "GQA packing: plain problems, single blocks");
  // Launched as a programmatic dependent (src/gpu/launch.rs): the kernel before it on the stream may still be
  // running; everything below reads or writes memory it may touch (the key-padding gate reads the scan's result).
  dependent_wait();
  if (!gate_open(p)) return;  // the key-padding fast path's other launch serves this problem
  require_dynamic_smem(Cfg::SMEM_BYTES);
  unsigned char *smem = dynamic_smem_1024<!(Cfg::D == 256 && MODS)>();
  const int group = threadIdx.x / 128;
  Barriers<Cfg> bar(smem);
  if (threadIdx.x == 0) {
    mbar_init(bar.q_full, 1);
    mbar_init(bar.q_empty, 4 * Cfg::CONSUMERS);  // one arrive per consumer warp
    for (int st = 0; st < Cfg::STAGES; ++st) {
      mbar_init(&bar.k_full[st], 1);
      mbar_init(&bar.v_full[st], 1);
      mbar_init(&bar.k_empty[st], 4 * Cfg::CONSUMERS * Cfg::CLUSTER);  // every consumer warp of the cluster
      mbar_init(&bar.v_empty[st], 4 * Cfg::CONSUMERS * Cfg::CLUSTER);
    }
    if (Cfg::O_IN_V) mbar_init(bar.o_read, Cfg::CONSUMERS);  // one arrival per consumer warpgroup
    asm volatile("fence.mbarrier_init.release.cluster;" ::: "memory");
  }
  if constexpr (Cfg::CLUSTER > 1) {
    // A cluster's blocks share key tiles, which only bounds-free problems allow (dispatch.rs guarantees it).
    if (p.window_left >= 0 || p.window_right >= 0) __trap();
    cluster_sync();  // the peers' barriers are initialised before any load or arrival reaches them
  } else {
    __syncthreads();
  }
  // Where O leaves through shared memory and a TMA store: the instance stages O, TMA can address the output and
  // the tiles write outputs, not split partials. The producer (with O over the V stages) and the consumers'
  // epilogue must agree on it, so it is decided once, here.
  const CUtensorMap *o_map = Cfg::STAGE_O && !PACK && parts.n == 1 ? to : nullptr;
  if (group == 0) {
    regs_dealloc<Cfg::PRODUCER_REGS>();
    if (threadIdx.x == 0) produce<T, Cfg, PACK>(p, smem, tq, tk, tv, parts.n, Cfg::O_IN_V && o_map != nullptr);
    return;
  }
  regs_alloc<Cfg::CONSUMER_REGS>();
  // Broadcast from lane 0 so that the compiler knows it is warp-uniform: the descriptors and barrier addresses
  // derived from it then live in uniform registers instead of being moved there before every wgmma.
  const int consumer = __shfl_sync(0xffffffffu, group - 1, 0);
  const Turn<Opt, Cfg::CONSUMERS> turn{consumer};
  // The consumers' GEMM issue takes turns over the whole run, tile after tile: consumer 0 starts, and the
  // last consumer's very last pass is taken by consumer 0 at the end.
  if (consumer == Cfg::CONSUMERS - 1) turn.pass();
  const int tiles = persistent_tiles<Cfg::CLUSTER, PACK>(p, Cfg::BM) * parts.n;
  const int row_shift = PACK ? gqa_row_shift(p) : 0;
  int ring = 0, loaded = 0;
  for (int k = 0, t; (t = persistent_tile_index<Cfg::CLUSTER>(k)) < tiles; ++k) {
    const BlockWork w = persistent_split_tile<Cfg::BM, Cfg::BN, Cfg::CLUSTER, PACK>(p, t, parts.n);
    const int n_blocks = w.n_end - w.n_begin;
    if (n_blocks <= 0) {
      store_empty<T, Cfg, PACK>(p, w, consumer, row_shift, parts);
      continue;
    }
    consume_tile<T, Cfg, Opt, MODS, PACK>(p, w, smem, consumer, ring, loaded, turn, row_shift, parts, o_map);
    ring += n_blocks;
    ++loaded;
  }
  if (consumer == 0) turn.wait();
  // (O over the V stages: each store was waited for already, before the producer could load V again.)
  if (Cfg::O_OWN && o_map != nullptr) finish_output_tma();
}

}  // namespace flashattn
