// Thread-block cluster primitives (Hopper and newer; a trap or a no-op in older cubins, where no cluster
// launch reaches them): the cluster barrier, addresses in a peer block's shared memory and loads from them, a
// block's rank, and mbarrier arrivals on a peer block's barrier.
#pragma once
#include <stdint.h>

namespace flashattn {

// Every thread of every block of the cluster: writes to shared memory before it are visible to the whole
// cluster after it.
__device__ __forceinline__ void cluster_sync() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("barrier.cluster.arrive.release.aligned;\n\tbarrier.cluster.wait.acquire.aligned;" ::: "memory");
#else
  __trap();
#endif
}

// Every thread of every block of the cluster has arrived, with no memory ordering: for a block's exit while peers
// may still read its shared memory (their loads have completed when they arrive: the values were used). The
// release form puts a GPU-wide memory barrier on the way out, behind the block's last global stores.
__device__ __forceinline__ void cluster_sync_relaxed() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("barrier.cluster.arrive.relaxed.aligned;\n\tbarrier.cluster.wait.aligned;" ::: "memory");
#else
  __trap();
#endif
}

// The address of this block's shared-memory address `addr` in block `rank` of the cluster, and loads from it.
__device__ __forceinline__ uint32_t cluster_peer(uint32_t addr, uint32_t rank) {
  uint32_t peer = 0;
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("mapa.shared::cluster.u32 %0, %1, %2;" : "=r"(peer) : "r"(addr), "r"(rank));
#endif
  return peer;
}
__device__ __forceinline__ float ld_cluster(uint32_t addr) {
  float v = 0.f;
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("ld.shared::cluster.f32 %0, [%1];" : "=f"(v) : "r"(addr) : "memory");
#endif
  return v;
}
__device__ __forceinline__ float4 ld_cluster4(uint32_t addr) {
  float4 v = make_float4(0.f, 0.f, 0.f, 0.f);
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("ld.shared::cluster.v4.f32 {%0, %1, %2, %3}, [%4];"
               : "=f"(v.x), "=f"(v.y), "=f"(v.z), "=f"(v.w)
               : "r"(addr)
               : "memory");
#endif
  return v;
}

// This block's rank in its cluster.
__device__ __forceinline__ uint32_t cluster_rank() {
  uint32_t r = 0;
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("mov.u32 %0, %%cluster_ctarank;" : "=r"(r));
#endif
  return r;
}

// Arrives on the mbarrier at `addr`, an address in the cluster's shared memory (cluster_peer), so that a peer
// block's barrier counts this arrival. The default (CTA-scope) release: the slot it frees was read by wgmma,
// already waited for; the cluster-scope form costs a GPU-wide memory barrier per arrival.
__device__ __forceinline__ void mbar_arrive_cluster(uint32_t addr) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("mbarrier.arrive.shared::cluster.b64 _, [%0];" ::"r"(addr) : "memory");
#endif
}

}  // namespace flashattn
