// Entry points of the split-KV decode kernel, its combine step and the KV-cache append step (included from
// flash_fwd_sm80.cu, so they land in the same fatbin). Names: flash_decode_sm80_{f16|bf16}_d{D}_r{ROWS}
// with ROWS = 16 * WM packed query rows (decode_config.cuh), flash_decode_cluster_… (the splits merged in a
// cluster), and flash_decode_combine_{f16|bf16}; src/gpu/decode.rs lists the same set. `…_append`: the same
// with the KV append step done by the kernel itself (decode_splitkv.cuh APPEND).
#include "decode_combine.cuh"
#include "decode_splitkv.cuh"
#include "kv_append.cuh"

#define FLASH_DECODE_ENTRY(TNAME, T, D, ROWS)                                                                   \
  extern "C" __global__ void __launch_bounds__(128) flash_decode_sm80_##TNAME##_d##D##_r##ROWS(                \
      const flashattn::AttnParams p, float *o_part, float *lse_part) {                                         \
    flashattn::flash_decode_splitkv<T, flashattn::DecodeConfig<D, ROWS / 16>, false>(p, {}, o_part, lse_part); \
  }                                                                                                            \
  extern "C" __global__ void __launch_bounds__(128) flash_decode_sm80_##TNAME##_d##D##_r##ROWS##_append(       \
      const flashattn::AttnParams p, const flashattn::KvAppendParams append, float *o_part, float *lse_part) {  \
    flashattn::flash_decode_splitkv<T, flashattn::DecodeConfig<D, ROWS / 16>, true>(p, append, o_part, lse_part); \
  }

// The same kernel with its splits merged inside a thread-block cluster (decode_cluster.cuh): a body only where
// clusters exist (sm_90 and newer), d 64 and 128 (d 256's rows do not fit beside its merge buffer).
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
#define FLASH_DECODE_CLUSTER_BODY(T, D, ROWS, APPEND, A) \
  flashattn::flash_decode_splitkv<T, flashattn::DecodeConfig<D, ROWS / 16>, APPEND, true>(p, A, nullptr, nullptr);
#else
#define FLASH_DECODE_CLUSTER_BODY(T, D, ROWS, APPEND, A) __trap();
#endif
#define FLASH_DECODE_CLUSTER_ENTRY(TNAME, T, D, ROWS)                                                            \
  extern "C" __global__ void __launch_bounds__(128, 1) flash_decode_cluster_##TNAME##_d##D##_r##ROWS(             \
      const flashattn::AttnParams p) {                                                                          \
    FLASH_DECODE_CLUSTER_BODY(T, D, ROWS, false, flashattn::KvAppendParams{})                                   \
  }                                                                                                             \
  extern "C" __global__ void __launch_bounds__(128, 1) flash_decode_cluster_##TNAME##_d##D##_r##ROWS##_append(     \
      const flashattn::AttnParams p, const flashattn::KvAppendParams append) {                                  \
    FLASH_DECODE_CLUSTER_BODY(T, D, ROWS, true, append)                                                         \
  }

#define FLASH_DECODE_ROWS(TNAME, T, D) \
  FLASH_DECODE_ENTRY(TNAME, T, D, 16)  \
  FLASH_DECODE_ENTRY(TNAME, T, D, 32)  \
  FLASH_DECODE_ENTRY(TNAME, T, D, 64)
#define FLASH_DECODE_CLUSTER_ROWS(TNAME, T, D) \
  FLASH_DECODE_CLUSTER_ENTRY(TNAME, T, D, 16)  \
  FLASH_DECODE_CLUSTER_ENTRY(TNAME, T, D, 32)  \
  FLASH_DECODE_CLUSTER_ENTRY(TNAME, T, D, 64)

#define FLASH_DECODE_DTYPE(TNAME, T) \
  FLASH_DECODE_ROWS(TNAME, T, 64)    \
  FLASH_DECODE_ROWS(TNAME, T, 128)   \
  FLASH_DECODE_ROWS(TNAME, T, 256)   \
  FLASH_DECODE_CLUSTER_ROWS(TNAME, T, 64)  \
  FLASH_DECODE_CLUSTER_ROWS(TNAME, T, 128) \
  extern "C" __global__ void __launch_bounds__(flashattn::kCombineThreads) flash_decode_combine_##TNAME( \
      const flashattn::AttnParams p, const float *o_part, const float *lse_part, int n_splits,              \
      int rows_per_block) {                                                                                 \
    flashattn::flash_decode_combine<T>(p, o_part, lse_part, n_splits, rows_per_block);                     \
  }

FLASH_DECODE_DTYPE(f16, __half)
FLASH_DECODE_DTYPE(bf16, __nv_bfloat16)

// The KV-cache append step (issue #8), launched before attention by src/gpu/kv_append.rs unless the decode
// kernel does it itself.
// 128 threads per block, one warp per row.
extern "C" __global__ void __launch_bounds__(128) kv_append_f16(const flashattn::KvAppendParams p) {
  flashattn::kv_append<__half>(p);
}
extern "C" __global__ void __launch_bounds__(128) kv_append_bf16(const flashattn::KvAppendParams p) {
  flashattn::kv_append<__nv_bfloat16>(p);
}
