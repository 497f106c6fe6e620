// Entry points of the Hopper (sm_90a) forward kernel, one per (dtype, padded head dim, query tile, key tile):
// flash_fwd_sm90_{f16|bf16}_d{D}_m{BM}n{BN}w{WARPS}[_plain], BM = 128 with two consumer warpgroups (12 warps)
// or 192 with three (16 warps); src/gpu/dispatch.rs lists the same set. Q, K, V and the output
// arrive as TMA tensor maps (4D: head_dim, row, head, batch) built by src/gpu/tensor_map.rs. Compiled into
// every cubin so the module's symbol table is the same everywhere; only the sm_90a cubin has a body.
#include "mainloop_sm90.cuh"

#if defined(__CUDA_ARCH__) && defined(__CUDA_ARCH_FEAT_SM90_ALL)
// d256's masked form stores O directly: with O staged over its V stages it spills in the main loop.
#define FLASH_FWD_SM90_BODY(T, D, BN, STAGES, C, CL, OPT, MODS)                                              \
  flashattn::flash_fwd_sm90<T, flashattn::Sm90Config<D, BN, STAGES, C, CL, !(D == 256 && MODS)>, OPT, MODS>( \
      p, &tq, &tk, &tv, flashattn::SplitParts{nullptr, nullptr, 1}, o_tma ? &to : nullptr);
#else
#define FLASH_FWD_SM90_BODY(T, D, BN, STAGES, C, CL, OPT, MODS) __trap();
#endif

// C: consumer warpgroups (the block has C + 1 warpgroups); CL: blocks per cluster (the launch sets it).
// to: the output's tensor map (boxes of one panel x 64 rows), used where the instance has room to stage O in
// shared memory (Sm90Config::STAGE_O) and o_tma is set (TMA can address the output).
#define FLASH_FWD_SM90_ENTRY_CL(NAME, T, D, BN, STAGES, C, CL, OPT, MODS)                             \
  extern "C" __global__ void __launch_bounds__(128 * (C + 1), 1)                                      \
      NAME(const __grid_constant__ flashattn::AttnParams p, const __grid_constant__ CUtensorMap tq,   \
           const __grid_constant__ CUtensorMap tk, const __grid_constant__ CUtensorMap tv,            \
           const __grid_constant__ CUtensorMap to, int o_tma) {                                       \
    FLASH_FWD_SM90_BODY(T, D, BN, STAGES, C, CL, OPT, MODS)                                           \
  }
#define FLASH_FWD_SM90_ENTRY_C(NAME, T, D, BN, STAGES, C, OPT, MODS) \
  FLASH_FWD_SM90_ENTRY_CL(NAME, T, D, BN, STAGES, C, 1, OPT, MODS)
#define FLASH_FWD_SM90_ENTRY(NAME, T, D, BN, STAGES, OPT, MODS) FLASH_FWD_SM90_ENTRY_C(NAME, T, D, BN, STAGES, 2, OPT, MODS)

// Default options: ping-pong on, O rescaled at every step (in one block with P's conversions), MUFU exp2 only,
// the previous PV waited for after the softmax's first row (ptxas sinks the second below the wait; the
// SOFTMAX_FIRST option keeps it above). FLASHATTN_SM90_ALWAYS_RESCALE=0
// (FLASHATTN_NVCC_FLAGS) builds the previous default, O rescaled only when a row max moved, for A/B runs.
#ifndef FLASHATTN_SM90_ALWAYS_RESCALE
#define FLASHATTN_SM90_ALWAYS_RESCALE 1
#endif
constexpr bool kAlwaysRescale = FLASHATTN_SM90_ALWAYS_RESCALE != 0;
using Sm90Default = flashattn::Sm90Options<true, 0, 0, false, false, kAlwaysRescale>;
// The previous default, kept where it measured faster (docs/PERF.md, 2026-12-02): d192's 112-key tiles (long
// bounds-free problems), and d64 with three consumer warpgroups (3-4% at 4k-16k keys; Sm90D64Rows192 below).
using Sm90ConditionalRescale = flashattn::Sm90Options<true, 0, 0>;
// d64 with three consumer warpgroups, where the special-function unit has as much work as the tensor cores: the
// conditional rescale, and every exponential of a step before the previous PV's wait (SOFTMAX_FIRST; 0-4% at
// 2k-16k keys, H200, 2026-12-03; slower at d96-d192 and with two consumers: docs/PERF.md).
using Sm90D64Rows192 = flashattn::Sm90Options<true, 0, 0, false, false, false, true>;

#define FLASH_FWD_SM90(TNAME, T, D, BN, STAGES)                                                          \
  FLASH_FWD_SM90_ENTRY(flash_fwd_sm90_##TNAME##_d##D##_m128n##BN##w12, T, D, BN, STAGES, Sm90Default, true) \
  FLASH_FWD_SM90_ENTRY(flash_fwd_sm90_##TNAME##_d##D##_m128n##BN##w12_plain, T, D, BN, STAGES, Sm90Default, false)

#define FLASH_FWD_SM90_BOTH(D, BN, STAGES)            \
  FLASH_FWD_SM90(f16, __half, D, BN, STAGES)          \
  FLASH_FWD_SM90(bf16, __nv_bfloat16, D, BN, STAGES)

// Shapes compiled in their plain form only, for plain problems (their full form would spill registers); BM, C
// (consumer warpgroups) and WARPS spell one choice: 128, 2, 12 or 192, 3, 16.
#define FLASH_FWD_SM90_PLAIN_ONLY(TNAME, T, D, BM, BN, C, WARPS, OPT) \
  FLASH_FWD_SM90_ENTRY_C(flash_fwd_sm90_##TNAME##_d##D##_m##BM##n##BN##w##WARPS##_plain, T, D, BN, 2, C, OPT, false)
#define FLASH_FWD_SM90_PLAIN_ONLY_BOTH(D, BM, BN, C, WARPS, OPT)           \
  FLASH_FWD_SM90_PLAIN_ONLY(f16, __half, D, BM, BN, C, WARPS, OPT)         \
  FLASH_FWD_SM90_PLAIN_ONLY(bf16, __nv_bfloat16, D, BM, BN, C, WARPS, OPT)

FLASH_FWD_SM90_BOTH(64, 128, 2)
FLASH_FWD_SM90_BOTH(96, 128, 2)
// Three consumer warpgroups (192 query rows) for the small head dims, whose softmax weighs most per MMA: more
// warps hide it, and each K/V tile serves more rows. They replaced 128x192 tiles (d64, d96), which lost to
// them at every length they were chosen for (docs/PERF.md).
FLASH_FWD_SM90_PLAIN_ONLY_BOTH(64, 192, 128, 3, 16, Sm90D64Rows192)
FLASH_FWD_SM90_PLAIN_ONLY_BOTH(96, 192, 112, 3, 16, Sm90Default)
FLASH_FWD_SM90_BOTH(128, 128, 2)
FLASH_FWD_SM90_BOTH(128, 176, 2)
FLASH_FWD_SM90_BOTH(192, 96, 2)
FLASH_FWD_SM90_BOTH(256, 80, 2)

// Clusters of two blocks sharing each K/V tile (multicast), for problems without causal/window bounds:
// flash_fwd_sm90_{f16|bf16}_d{D}_m128n{BN}w12c2[_plain].
#define FLASH_FWD_SM90_CLUSTER2(TNAME, T, D, BN)                                                                  \
  FLASH_FWD_SM90_ENTRY_CL(flash_fwd_sm90_##TNAME##_d##D##_m128n##BN##w12c2, T, D, BN, 2, 2, 2, Sm90Default, true) \
  FLASH_FWD_SM90_ENTRY_CL(flash_fwd_sm90_##TNAME##_d##D##_m128n##BN##w12c2_plain, T, D, BN, 2, 2, 2, Sm90Default, false)
#define FLASH_FWD_SM90_CLUSTER2_BOTH(D, BN)      \
  FLASH_FWD_SM90_CLUSTER2(f16, __half, D, BN)    \
  FLASH_FWD_SM90_CLUSTER2(bf16, __nv_bfloat16, D, BN)
FLASH_FWD_SM90_CLUSTER2_BOTH(128, 128)
FLASH_FWD_SM90_ENTRY_CL(flash_fwd_sm90_f16_d128_m128n176w12c2_plain, __half, 128, 176, 2, 2, 2, Sm90Default, false)
FLASH_FWD_SM90_ENTRY_CL(flash_fwd_sm90_bf16_d128_m128n176w12c2_plain, __nv_bfloat16, 128, 176, 2, 2, 2, Sm90Default, false)
FLASH_FWD_SM90_CLUSTER2_BOTH(192, 96)
// Longer key tiles in clusters, the default for long bounds-free problems (dispatch.rs Scope::ClusterLong): d128
// with 176 keys (above), d192 with 112 (FlashAttention-4's d192 shape; its single-block form is a measured variant).
FLASH_FWD_SM90_ENTRY_C(flash_fwd_sm90_bf16_d192_m128n112w12_plain, __nv_bfloat16, 192, 112, 2, 2, Sm90ConditionalRescale, false)
FLASH_FWD_SM90_ENTRY_CL(flash_fwd_sm90_f16_d192_m128n112w12c2_plain, __half, 192, 112, 2, 2, 2, Sm90ConditionalRescale, false)
FLASH_FWD_SM90_ENTRY_CL(flash_fwd_sm90_bf16_d192_m128n112w12c2_plain, __nv_bfloat16, 192, 112, 2, 2, 2, Sm90ConditionalRescale, false)
FLASH_FWD_SM90_CLUSTER2_BOTH(256, 80)
FLASH_FWD_SM90_ENTRY_CL(flash_fwd_sm90_f16_d96_m192n112w16c2_plain, __half, 96, 112, 2, 3, 2, Sm90Default, false)
FLASH_FWD_SM90_ENTRY_CL(flash_fwd_sm90_bf16_d96_m192n112w16c2_plain, __nv_bfloat16, 96, 112, 2, 3, 2, Sm90Default, false)

// GQA-packed plain forms of the 128-row shapes (dispatch.rs: query heads per KV head a power of two, where
// packing fills tiles that one head's rows leave part-empty, or where split-KV pays):
// flash_fwd_sm90_{f16|bf16}_d{D}_m128n{BN}w12_plain_packgqa; tq is the 5D packed query map.
// They also run split-KV: each tile's keys cut into n_splits ranges, partial results to the workspace (o_part,
// lse_part; the decode combine kernel merges them); n_splits == 1 writes the outputs directly. The same shapes
// unpacked with split keys, for groups that are not a power of two: …_plain_split.
#if defined(__CUDA_ARCH__) && defined(__CUDA_ARCH_FEAT_SM90_ALL)
#define FLASH_FWD_SM90_SPLIT_BODY(T, D, BN, PACK)                                                           \
  flashattn::flash_fwd_sm90<T, flashattn::Sm90Config<D, BN, 2, 2, 1, false>, Sm90Default, false, PACK>(    \
      p, &tq, &tk, &tv, flashattn::SplitParts{o_part, lse_part, n_splits});
#else
#define FLASH_FWD_SM90_SPLIT_BODY(T, D, BN, PACK) __trap();
#endif
#define FLASH_FWD_SM90_SPLIT_ENTRY(NAME, T, D, BN, PACK)                                                   \
  extern "C" __global__ void __launch_bounds__(384, 1)                                                     \
      NAME(const __grid_constant__ flashattn::AttnParams p, const __grid_constant__ CUtensorMap tq,        \
           const __grid_constant__ CUtensorMap tk, const __grid_constant__ CUtensorMap tv, float *o_part,  \
           float *lse_part, int n_splits) {                                                                \
    FLASH_FWD_SM90_SPLIT_BODY(T, D, BN, PACK)                                                              \
  }
#define FLASH_FWD_SM90_PACKED_BOTH(D, BN)                                                                        \
  FLASH_FWD_SM90_SPLIT_ENTRY(flash_fwd_sm90_f16_d##D##_m128n##BN##w12_plain_packgqa, __half, D, BN, true)        \
  FLASH_FWD_SM90_SPLIT_ENTRY(flash_fwd_sm90_bf16_d##D##_m128n##BN##w12_plain_packgqa, __nv_bfloat16, D, BN, true) \
  FLASH_FWD_SM90_SPLIT_ENTRY(flash_fwd_sm90_f16_d##D##_m128n##BN##w12_plain_split, __half, D, BN, false)         \
  FLASH_FWD_SM90_SPLIT_ENTRY(flash_fwd_sm90_bf16_d##D##_m128n##BN##w12_plain_split, __nv_bfloat16, D, BN, false)
FLASH_FWD_SM90_PACKED_BOTH(64, 128)
FLASH_FWD_SM90_PACKED_BOTH(96, 128)
FLASH_FWD_SM90_PACKED_BOTH(128, 128)
FLASH_FWD_SM90_PACKED_BOTH(192, 96)
FLASH_FWD_SM90_PACKED_BOTH(256, 80)

// Variants that measure one option each against the default (src/gpu/dispatch.rs Variant; docs/PERF.md); rt8
// is a form of the conditional rescale, so it keeps that.
#define FLASH_FWD_SM90_VARIANT(D, BN, SUFFIX, OPT)                                                             \
  FLASH_FWD_SM90_ENTRY(flash_fwd_sm90_bf16_d##D##_m128n##BN##w12##SUFFIX, __nv_bfloat16, D, BN, 2, OPT, true) \
  FLASH_FWD_SM90_ENTRY(flash_fwd_sm90_bf16_d##D##_m128n##BN##w12_plain##SUFFIX, __nv_bfloat16, D, BN, 2, OPT, false)

using Sm90NoPingpong = flashattn::Sm90Options<false, 0, 0, false, false, kAlwaysRescale>;
using Sm90RescaleThreshold8 = flashattn::Sm90Options<true, 8, 0>;
using Sm90EmulatedExp2 = flashattn::Sm90Options<true, 0, 4, false, false, kAlwaysRescale>;
using Sm90SplitPvWait = flashattn::Sm90Options<true, 0, 0, true, false, kAlwaysRescale>;
using Sm90StagedP = flashattn::Sm90Options<true, 0, 0, false, true, kAlwaysRescale>;
using Sm90SoftmaxFirst = flashattn::Sm90Options<true, 0, 0, false, false, kAlwaysRescale, true>;
FLASH_FWD_SM90_VARIANT(128, 128, _nopp, Sm90NoPingpong)
FLASH_FWD_SM90_VARIANT(128, 128, _rt8, Sm90RescaleThreshold8)
FLASH_FWD_SM90_VARIANT(128, 128, _emu4, Sm90EmulatedExp2)
FLASH_FWD_SM90_VARIANT(64, 128, _emu4, Sm90EmulatedExp2)
FLASH_FWD_SM90_VARIANT(128, 128, _spw, Sm90SplitPvWait)
FLASH_FWD_SM90_VARIANT(128, 128, _sp, Sm90StagedP)
FLASH_FWD_SM90_VARIANT(128, 128, _cr, Sm90ConditionalRescale)
// Every exponential of a step before the previous PV's wait: the d64 192-row default since 2026-12-03; slower
// here (2-6% at 2k-16k keys) and at d96/d192, mixed at d256 (docs/PERF.md).
FLASH_FWD_SM90_VARIANT(128, 128, _fs, Sm90SoftmaxFirst)
// d64 with three consumers is as much special-function-unit work as tensor work per step: exp2 emulation there.
FLASH_FWD_SM90_ENTRY_C(flash_fwd_sm90_bf16_d64_m192n128w16_plain_emu4, __nv_bfloat16, 64, 128, 2, 3, Sm90EmulatedExp2, false)
