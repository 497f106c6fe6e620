// The Hopper (sm_90a) instructions the warp-specialized kernel is built from: mbarriers, TMA tile loads and stores,
// wgmma fences and shared-memory matrix descriptors, register reallocation and named barriers.
#pragma once
#include <cuda.h>
#include <stdint.h>

#include "common.cuh"

namespace flashattn {
namespace sm90 {

// ---- mbarrier ----
__device__ __forceinline__ void mbar_init(uint64_t *bar, int count) {
  asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;" ::"r"(smem_u32(bar)), "r"(count));
}
__device__ __forceinline__ void mbar_expect_tx(uint64_t *bar, uint32_t bytes) {
  asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;" ::"r"(smem_u32(bar)), "r"(bytes) : "memory");
}
// Arrive and wait take the barrier's shared-memory address (the main loop keeps 32-bit addresses: generic
// pointers into the dynamic shared memory cost a conversion at each use) or a pointer.
__device__ __forceinline__ void mbar_arrive(uint32_t bar) {
  asm volatile("mbarrier.arrive.shared::cta.b64 _, [%0];" ::"r"(bar) : "memory");
}
__device__ __forceinline__ void mbar_arrive(uint64_t *bar) { mbar_arrive(smem_u32(bar)); }
// Blocks until the phase with parity `parity` has completed.
__device__ __forceinline__ void mbar_wait(uint32_t bar, uint32_t parity) {
  asm volatile(
      "{\n.reg .pred done;\n"
      "WAIT_%=:\n"
      "mbarrier.try_wait.parity.shared::cta.b64 done, [%0], %1;\n"
      "@!done bra WAIT_%=;\n}\n" ::"r"(bar),
      "r"(parity)
      : "memory");
}
__device__ __forceinline__ void mbar_wait(uint64_t *bar, uint32_t parity) { mbar_wait(smem_u32(bar), parity); }

// ---- TMA: a 4D tile (col, row, head, batch) into shared memory, completing on an mbarrier ----
__device__ __forceinline__ void tma_load_4d(void *dst, const CUtensorMap *map, uint64_t *bar, int c0, int c1, int c2,
                                            int c3, uint64_t cache_hint) {
  asm volatile(
      "cp.async.bulk.tensor.4d.shared::cluster.global.tile.mbarrier::complete_tx::bytes.L2::cache_hint"
      " [%0], [%1, {%3, %4, %5, %6}], [%2], %7;" ::"r"(smem_u32(dst)),
      "l"(reinterpret_cast<uint64_t>(map)), "r"(smem_u32(bar)), "r"(c0), "r"(c1), "r"(c2), "r"(c3), "l"(cache_hint)
      : "memory");
}
// A 5D box (the GQA-packed Q tile: head_dim, head in group, position, KV head, batch).
__device__ __forceinline__ void tma_load_5d(void *dst, const CUtensorMap *map, uint64_t *bar, int c0, int c1, int c2,
                                            int c3, int c4, uint64_t cache_hint) {
  asm volatile(
      "cp.async.bulk.tensor.5d.shared::cluster.global.tile.mbarrier::complete_tx::bytes.L2::cache_hint"
      " [%0], [%1, {%3, %4, %5, %6, %7}], [%2], %8;" ::"r"(smem_u32(dst)),
      "l"(reinterpret_cast<uint64_t>(map)), "r"(smem_u32(bar)), "r"(c0), "r"(c1), "r"(c2), "r"(c3), "r"(c4),
      "l"(cache_hint)
      : "memory");
}
// The same load issued by one block of a cluster, landing at the same shared-memory offset in every block of
// `cta_mask` and completing on the mbarrier at the same offset in each of them.
__device__ __forceinline__ void tma_load_4d_multicast(void *dst, const CUtensorMap *map, uint64_t *bar, int c0, int c1,
                                                      int c2, int c3, uint16_t cta_mask, uint64_t cache_hint) {
  asm volatile(
      "cp.async.bulk.tensor.4d.shared::cluster.global.tile.mbarrier::complete_tx::bytes.multicast::cluster.L2::cache_hint"
      " [%0], [%1, {%3, %4, %5, %6}], [%2], %7, %8;" ::"r"(smem_u32(dst)),
      "l"(reinterpret_cast<uint64_t>(map)), "r"(smem_u32(bar)), "r"(c0), "r"(c1), "r"(c2), "r"(c3), "h"(cta_mask),
      "l"(cache_hint)
      : "memory");
}
// ---- TMA: a 4D tile from shared memory to global (bulk async group; rows and columns out of range are skipped) ----
__device__ __forceinline__ void tma_store_4d(const CUtensorMap *map, uint32_t src, int c0, int c1, int c2, int c3) {
  asm volatile("cp.async.bulk.tensor.4d.global.shared::cta.bulk_group [%0, {%2, %3, %4, %5}], [%1];" ::"l"(
                   reinterpret_cast<uint64_t>(map)),
               "r"(src), "r"(c0), "r"(c1), "r"(c2), "r"(c3)
               : "memory");
}
__device__ __forceinline__ void bulk_commit_group() { asm volatile("cp.async.bulk.commit_group;" ::: "memory"); }
// Blocks until every committed bulk store of this thread has read its shared-memory source.
__device__ __forceinline__ void bulk_wait_read_all() { asm volatile("cp.async.bulk.wait_group.read 0;" ::: "memory"); }

// ---- stmatrix: four 8x8 16-bit matrices from the mma accumulator layout to shared memory ----
// Register i is this thread's pair of matrix i (row lane / 4, columns 2 * (lane % 4) + {0, 1}); lane l gives the
// address of row l % 8 of matrix l / 8.
__device__ __forceinline__ void stmatrix_x4(uint32_t addr, uint32_t r0, uint32_t r1, uint32_t r2, uint32_t r3) {
  asm volatile("stmatrix.sync.aligned.m8n8.x4.shared.b16 [%0], {%1, %2, %3, %4};" ::"r"(addr), "r"(r0), "r"(r1), "r"(r2),
               "r"(r3)
               : "memory");
}

// L2 cache policies (createpolicy encodings used by CUTLASS's TMA::CacheHintSm90).
constexpr uint64_t kEvictNormal = 0x1000000000000000ull;
constexpr uint64_t kEvictFirst = 0x12F0000000000000ull;
constexpr uint64_t kEvictLast = 0x14F0000000000000ull;

__device__ __forceinline__ void prefetch_tensor_map(const CUtensorMap *map) {
  asm volatile("prefetch.tensormap [%0];" ::"l"(reinterpret_cast<uint64_t>(map)) : "memory");
}

// ---- wgmma ----
__device__ __forceinline__ void wgmma_fence() { asm volatile("wgmma.fence.sync.aligned;" ::: "memory"); }
__device__ __forceinline__ void wgmma_commit() { asm volatile("wgmma.commit_group.sync.aligned;" ::: "memory"); }
template <int N> __device__ __forceinline__ void wgmma_wait() {
  asm volatile("wgmma.wait_group.sync.aligned %0;" ::"n"(N) : "memory");
}
// Keeps the compiler from moving reads/writes of accumulator registers across wgmma issue/wait points.
template <int N> __device__ __forceinline__ void fence_regs(float (&r)[N]) {
#pragma unroll
  for (int i = 0; i < N; ++i) asm volatile("" : "+f"(r[i])::"memory");
}
template <int N> __device__ __forceinline__ void fence_regs(uint32_t (&r)[N]) {
#pragma unroll
  for (int i = 0; i < N; ++i) asm volatile("" : "+r"(r[i])::"memory");
}
// An empty asm (fence_regs) orders code for the compiler but never reaches ptxas, which treats a wgmma's
// register A operand as dead once the wgmma is issued: it then reuses those registers and waits for the
// wgmma before the first reuse. A store that never runs (`never` is false at run time, which ptxas cannot
// see) keeps the registers live up to this point; the trap after it keeps ptxas from predicating the store
// instead of branching around it, so the branch also ends a basic block: ptxas does not hoist a wgmma wait
// placed after the call above it (but it may sink code the branch does not read below it: the overload below).
// The sink is a shared-memory address (a generic pointer would stay live in registers through the main loop).
template <int N> __device__ __forceinline__ void store_never(const uint32_t (&r)[N], uint32_t sink) {
  static_assert(N % 4 == 0, "whole 16-byte stores");
#pragma unroll
  for (int i = 0; i < N; i += 4)
    asm volatile("st.shared.v4.u32 [%0], {%1, %2, %3, %4};" ::"r"(sink + 4 * i), "r"(r[i]), "r"(r[i + 1]), "r"(r[i + 2]),
                 "r"(r[i + 3])
                 : "memory");
}
template <int N> __device__ __forceinline__ void store_never(const float (&r)[N], uint32_t sink) {
  uint32_t bits[N];
#pragma unroll
  for (int i = 0; i < N; ++i) bits[i] = __float_as_uint(r[i]);
  store_never(bits, sink);
}
template <int N> __device__ __forceinline__ void keep_live(const uint32_t (&r)[N], uint32_t sink, bool never) {
  if (never) {
    store_never(r, sink);
    __trap();
  }
}
// keep_live for two register arrays: ptxas sinks code whose results the never-taken branch does not read below
// it (into the one successor that continues), so values that must be computed before a wait placed after the
// call are passed here too.
template <int N, int M>
__device__ __forceinline__ void keep_live(const uint32_t (&r)[N], const float (&also)[M], uint32_t sink, bool never) {
  if (never) {
    store_never(r, sink);
    store_never(also, sink + 4 * N);
    __trap();
  }
}

// The fields Hopper's and Blackwell's shared-memory matrix descriptors have in common, for an operand swizzled
// over SWIZZLE bytes (128: panels of 64 16-bit columns; 64: panels of 32), rows of SWIZZLE bytes, 8-row groups
// 8 * SWIZZLE bytes apart: start address, `lbo` (for K-major operands unused; for MN-major operands the
// distance between MN panels) and `sbo` = the 8-row group stride. The layout and version bits differ between
// the two and are added by each.
template <int SWIZZLE> __device__ __forceinline__ uint64_t smem_desc_fields(uint32_t base, uint32_t lbo_bytes) {
  static_assert(SWIZZLE == 128 || SWIZZLE == 64, "128- or 64-byte swizzle");
  const uint64_t addr = base;
  uint64_t d = 0;
  d |= (addr & 0x3FFFF) >> 4;
  d |= (uint64_t)((lbo_bytes >> 4) & 0x3FFF) << 16;
  d |= (uint64_t)(8 * SWIZZLE >> 4) << 32;
  return d;
}
template <int SWIZZLE> __device__ __forceinline__ uint64_t smem_desc_fields(const void *base, uint32_t lbo_bytes) {
  return smem_desc_fields<SWIZZLE>(smem_u32(base), lbo_bytes);
}
// Hopper (wgmma) descriptor of the operand at shared-memory address `base`: the swizzle is the layout in bits
// 62-63 (1: 128 bytes, 2: 64 bytes).
template <int SWIZZLE> __device__ __forceinline__ uint64_t smem_desc_sw(uint32_t base, uint32_t lbo_bytes) {
  return smem_desc_fields<SWIZZLE>(base, lbo_bytes) | (uint64_t)(SWIZZLE == 128 ? 1 : 2) << 62;
}
// Advancing a descriptor's start address by `bytes` (a multiple of 16) keeps its other fields.
__device__ __forceinline__ uint64_t desc_advance(uint64_t desc, uint32_t bytes) { return desc + (bytes >> 4); }

// ---- warp-group roles ----
template <int REGS> __device__ __forceinline__ void regs_dealloc() {
  asm volatile("setmaxnreg.dec.sync.aligned.u32 %0;" ::"n"(REGS));
}
template <int REGS> __device__ __forceinline__ void regs_alloc() {
  asm volatile("setmaxnreg.inc.sync.aligned.u32 %0;" ::"n"(REGS));
}
__device__ __forceinline__ void named_barrier_sync(int id, int threads) {
  asm volatile("bar.sync %0, %1;" ::"r"(id), "r"(threads) : "memory");
}
__device__ __forceinline__ void named_barrier_arrive(int id, int threads) {
  asm volatile("bar.arrive %0, %1;" ::"r"(id), "r"(threads) : "memory");
}
// Ordinary shared-memory stores made visible to the async proxy (TMA, wgmma) that reads them next.
__device__ __forceinline__ void fence_proxy_async() { asm volatile("fence.proxy.async.shared::cta;" ::: "memory"); }

__device__ __forceinline__ bool elect_one_lane() { return (threadIdx.x & 31) == 0; }

}  // namespace sm90
}  // namespace flashattn
