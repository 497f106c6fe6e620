// The Blackwell (sm_100a) instructions of the tcgen05 kernel: Tensor Memory allocation, single-thread
// tcgen05.mma (operands from shared memory or A from Tensor Memory, accumulator in Tensor Memory), its
// completion signalled on an mbarrier (tcgen05.commit), warp-wide Tensor Memory loads/stores, and the
// thread-sync fences that order them. mbarriers and TMA are Hopper's (sm90_ptx.cuh).
//
// Tensor Memory addresses: lane (= accumulator row for M = 128) in bits 31:16, 32-bit column in 15:0.
// Warp w of a CTA may only touch lanes [32 * (w % 4), +32).
#pragma once
#include <stdint.h>

#include "common.cuh"
#include "sm90_ptx.cuh"

namespace flashattn {
namespace sm100 {

// ---- Tensor Memory allocation (one warp, .sync.aligned) ----
// Allocates `COLS` columns (a power of two >= 32) and writes the base address to shared memory at `slot`.
template <int COLS> __device__ __forceinline__ void tmem_alloc(uint32_t *slot) {
  asm volatile("tcgen05.alloc.cta_group::1.sync.aligned.shared::cta.b32 [%0], %1;" ::"r"(smem_u32(slot)), "n"(COLS)
               : "memory");
}
__device__ __forceinline__ void tmem_relinquish_alloc_permit() {
  asm volatile("tcgen05.relinquish_alloc_permit.cta_group::1.sync.aligned;" ::: "memory");
}
template <int COLS> __device__ __forceinline__ void tmem_dealloc(uint32_t taddr) {
  asm volatile("tcgen05.dealloc.cta_group::1.sync.aligned.b32 %0, %1;" ::"r"(taddr), "n"(COLS) : "memory");
}

// ---- ordering of tcgen05 operations around thread synchronisation (barriers, mbarriers) ----
__device__ __forceinline__ void fence_before_sync() { asm volatile("tcgen05.fence::before_thread_sync;" ::: "memory"); }
__device__ __forceinline__ void fence_after_sync() { asm volatile("tcgen05.fence::after_thread_sync;" ::: "memory"); }

// ---- descriptors ----
// Shared-memory matrix descriptor of a 128-byte-swizzled operand (Blackwell layout: version 1 in bits
// 46-47, layout type SWIZZLE_128B = 2 in bits 61-63; address, lbo and sbo as Hopper's). K-major: 8-row groups
// `sbo` = 1024 bytes apart, `lbo` unused (16 bytes). MN-major: `lbo` = distance between 64-element MN panels.
__device__ __forceinline__ uint64_t smem_desc_sw128(const void *base, uint32_t lbo_bytes) {
  return sm90::smem_desc_fields<128>(base, lbo_bytes) | (uint64_t)1 << 46  // descriptor version (Blackwell)
         | (uint64_t)2 << 61;                                                // SWIZZLE_128B
}
// The start address sits in the low bits as in Hopper's descriptor: advancing is the same.
using sm90::desc_advance;

// Instruction descriptor of kind::f16 (fp16/bf16 inputs, fp32 accumulator), M x N, A and B major-ness.
template <typename T> struct InputFormat;
template <> struct InputFormat<__half> { static constexpr uint32_t value = 0; };
template <> struct InputFormat<__nv_bfloat16> { static constexpr uint32_t value = 1; };
template <typename T, int M, int N, bool A_MN_MAJOR, bool B_MN_MAJOR> __device__ __forceinline__ constexpr uint32_t idesc_f16() {
  static_assert(M == 128, "M = 128 (one CTA, one accumulator row per Tensor Memory lane)");
  static_assert(N % 16 == 0 && N >= 16 && N <= 256, "N: multiple of 16 in [16, 256] for M = 128");
  return (1u << 4)                                      // accumulator F32
         | (InputFormat<T>::value << 7)                  // A format
         | (InputFormat<T>::value << 10)                 // B format
         | ((A_MN_MAJOR ? 1u : 0u) << 15) | ((B_MN_MAJOR ? 1u : 0u) << 16)
         | ((uint32_t)(N >> 3) << 17) | ((uint32_t)(M >> 4) << 24);
}

// ---- MMA (issued by one thread) ----
// D[tmem] (+)= A[smem] * B[smem]; `accumulate` = 0 overwrites D.
__device__ __forceinline__ void mma_ss(uint32_t d_tmem, uint64_t a_desc, uint64_t b_desc, uint32_t idesc,
                                       uint32_t accumulate) {
  asm volatile(
      "{\n.reg .pred p;\n"
      "setp.ne.b32 p, %4, 0;\n"
      "tcgen05.mma.cta_group::1.kind::f16 [%0], %1, %2, %3, p;\n}\n" ::"r"(d_tmem),
      "l"(a_desc), "l"(b_desc), "r"(idesc), "r"(accumulate)
      : "memory");
}
// D[tmem] (+)= A[tmem] * B[smem]: A is K-major in Tensor Memory (row = lane, two 16-bit elements per column).
__device__ __forceinline__ void mma_ts(uint32_t d_tmem, uint32_t a_tmem, uint64_t b_desc, uint32_t idesc,
                                       uint32_t accumulate) {
  asm volatile(
      "{\n.reg .pred p;\n"
      "setp.ne.b32 p, %4, 0;\n"
      "tcgen05.mma.cta_group::1.kind::f16 [%0], [%1], %2, %3, p;\n}\n" ::"r"(d_tmem),
      "r"(a_tmem), "l"(b_desc), "r"(idesc), "r"(accumulate)
      : "memory");
}
// Arrives (once) on `bar` when every tcgen05 operation this thread issued before has completed.
__device__ __forceinline__ void commit(uint64_t *bar) {
  asm volatile("tcgen05.commit.cta_group::1.mbarrier::arrive::one.shared::cluster.b64 [%0];" ::"r"(smem_u32(bar))
               : "memory");
}

// ---- Tensor Memory <-> registers (warp-wide; shape 32x32b: thread t of the warp <-> lane base + t) ----
// 16 consecutive 32-bit columns of the thread's lane. Values are valid only after wait_ld().
__device__ __forceinline__ void tmem_ld16(uint32_t taddr, uint32_t (&r)[16]) {
  asm volatile(
      "tcgen05.ld.sync.aligned.32x32b.x16.b32 {%0,%1,%2,%3,%4,%5,%6,%7,%8,%9,%10,%11,%12,%13,%14,%15}, [%16];"
      : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3]), "=r"(r[4]), "=r"(r[5]), "=r"(r[6]), "=r"(r[7]), "=r"(r[8]),
        "=r"(r[9]), "=r"(r[10]), "=r"(r[11]), "=r"(r[12]), "=r"(r[13]), "=r"(r[14]), "=r"(r[15])
      : "r"(taddr)
      : "memory");
}
__device__ __forceinline__ void tmem_st16(uint32_t taddr, const uint32_t (&r)[16]) {
  asm volatile(
      "tcgen05.st.sync.aligned.32x32b.x16.b32 [%0], {%1,%2,%3,%4,%5,%6,%7,%8,%9,%10,%11,%12,%13,%14,%15,%16};" ::"r"(
          taddr),
      "r"(r[0]), "r"(r[1]), "r"(r[2]), "r"(r[3]), "r"(r[4]), "r"(r[5]), "r"(r[6]), "r"(r[7]), "r"(r[8]), "r"(r[9]),
      "r"(r[10]), "r"(r[11]), "r"(r[12]), "r"(r[13]), "r"(r[14]), "r"(r[15])
      : "memory");
}
__device__ __forceinline__ void wait_ld() { asm volatile("tcgen05.wait::ld.sync.aligned;" ::: "memory"); }
__device__ __forceinline__ void wait_st() { asm volatile("tcgen05.wait::st.sync.aligned;" ::: "memory"); }

// The registers of a tcgen05.ld become valid at wait_ld(): fencing them there (Hopper's register fence)
// keeps the compiler from reading them earlier.
using sm90::fence_regs;

// An mbarrier wait that traps instead of hanging forever: a kernel that has never run on hardware must fail
// loudly, so the self-check (src/gpu/selfcheck.rs) sees an error rather than a hang. The bound is time, not
// polls (how long one try_wait may suspend is up to the hardware): 10 s, while every legitimate wait here
// lasts at most one tile's work (microseconds).
__device__ __forceinline__ uint64_t global_timer_ns() {
  uint64_t t;
  asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t));
  return t;
}
__device__ __forceinline__ void mbar_wait_or_trap(uint64_t *bar, uint32_t parity) {
  constexpr uint64_t kLimitNs = 10ull * 1000 * 1000 * 1000;
  uint64_t start = 0;
  for (;;) {
    uint32_t done;
    asm volatile(
        "{\n.reg .pred p;\n"
        "mbarrier.try_wait.parity.shared::cta.b64 p, [%1], %2;\n"
        "selp.u32 %0, 1, 0, p;\n}\n"
        : "=r"(done)
        : "r"(smem_u32(bar)), "r"(parity)
        : "memory");
    if (done) return;
    const uint64_t now = global_timer_ns();
    if (start == 0) start = now;
    else if (now - start > kLimitNs) __trap();
  }
}

}  // namespace sm100
}  // namespace flashattn
