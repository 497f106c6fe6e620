// Entry points of the Blackwell (sm_100a) forward kernel, one per (dtype, padded head dim, key tile), plain
// problems only (no mask tensor, no softcap, no key_seqlens): flash_fwd_sm100_{f16|bf16}_d{D}_m128n{BN}w6_plain;
// src/gpu/dispatch.rs lists the same set. Q, K and V arrive as TMA tensor maps (src/gpu/tensor_map.rs), as for
// the Hopper kernel. Compiled into every cubin so the module's symbol table is the same everywhere; only the
// sm_100a cubin has a body, elsewhere it traps (which the self-check of src/gpu/selfcheck.rs reports).
#include "mainloop_sm100.cuh"

#if defined(__CUDA_ARCH__) && defined(__CUDA_ARCH_FEAT_SM100_ALL)
#define FLASH_FWD_SM100_BODY(T, D, BN, STAGES, OPT) \
  flashattn::flash_fwd_sm100<T, flashattn::Sm100Config<D, BN, STAGES>, OPT>(p, &tq, &tk, &tv);
#else
#define FLASH_FWD_SM100_BODY(T, D, BN, STAGES, OPT) __trap();
#endif

// FA4's defaults: a row max is only raised when it grows by more than 2^8; every 4th group of 8 columns
// exponentiates on the FMA units.
using Sm100Default = flashattn::Sm100Options<8, 4>;

#define FLASH_FWD_SM100(TNAME, T, D, BN, STAGES)                                                              \
  extern "C" __global__ void __launch_bounds__(192, 1) flash_fwd_sm100_##TNAME##_d##D##_m128n##BN##w6_plain( \
      const __grid_constant__ flashattn::AttnParams p, const __grid_constant__ CUtensorMap tq,                 \
      const __grid_constant__ CUtensorMap tk, const __grid_constant__ CUtensorMap tv) {                       \
    FLASH_FWD_SM100_BODY(T, D, BN, STAGES, Sm100Default)                                                      \
  }

#define FLASH_FWD_SM100_BOTH(D, BN, STAGES)         \
  FLASH_FWD_SM100(f16, __half, D, BN, STAGES)       \
  FLASH_FWD_SM100(bf16, __nv_bfloat16, D, BN, STAGES)

FLASH_FWD_SM100_BOTH(64, 128, 3)
FLASH_FWD_SM100_BOTH(128, 128, 2)
