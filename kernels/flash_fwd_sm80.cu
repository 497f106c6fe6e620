// Entry points of the portable (sm_80+) forward kernel, one per (dtype, padded head dim, tile shape).
// Names: flash_fwd_sm80_{f16|bf16}_d{D}_m{BM}n{BN}w{NW}[_plain]; src/gpu/dispatch.rs lists the same set.
// `_plain`: no softcap and no mask tensor (causal/window/key_seqlens still handled), fewer live registers.
#include "mainloop_sm80.cuh"

#define FLASH_FWD_SM80_ENTRY(TNAME, T, D, BM, BN, NW)                                              \
  extern "C" __global__ void __launch_bounds__(NW * 32)                                           \
      flash_fwd_sm80_##TNAME##_d##D##_m##BM##n##BN##w##NW(const flashattn::AttnParams p) {         \
    flashattn::flash_fwd_sm80<T, flashattn::FwdConfig<D, BM, BN, NW>, true>(p);                   \
  }                                                                                               \
  extern "C" __global__ void __launch_bounds__(NW * 32)                                           \
      flash_fwd_sm80_##TNAME##_d##D##_m##BM##n##BN##w##NW##_plain(const flashattn::AttnParams p) { \
    flashattn::flash_fwd_sm80<T, flashattn::FwdConfig<D, BM, BN, NW>, false>(p);                  \
  }

#define FLASH_FWD_SM80_BOTH(D, BM, BN, NW)                    \
  FLASH_FWD_SM80_ENTRY(f16, __half, D, BM, BN, NW)            \
  FLASH_FWD_SM80_ENTRY(bf16, __nv_bfloat16, D, BM, BN, NW)

FLASH_FWD_SM80_BOTH(64, 128, 64, 4)
FLASH_FWD_SM80_BOTH(128, 128, 64, 4)
FLASH_FWD_SM80_BOTH(256, 64, 32, 4)

// The split-KV decode kernels and the KV-cache append step share this fatbin.
#include "flash_decode_sm80.cu"
