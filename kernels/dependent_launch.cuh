// Programmatic dependent launch (Hopper and newer): a kernel launched with the programmatic-serialization
// attribute (src/gpu/driver.rs launch_kernel) may start while the kernel before it on the stream finishes.
// It must call dependent_wait() before it reads anything that kernel wrote or writes anything it may still
// read; the kernel before it calls allow_dependents() once its remaining work no longer needs the SM slots
// a dependent would take. Both are no-ops before sm_90 and when the launch had no such attribute.
#pragma once

namespace flashattn {

__device__ __forceinline__ void dependent_wait() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.wait;" ::: "memory");
#endif
}

__device__ __forceinline__ void allow_dependents() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
#endif
}

}  // namespace flashattn
