// Entry points of the key-padding scan (key_padding.cuh), one per mask element type: flash_key_padding_scan_{bool|f16|bf16}
// (src/gpu/key_padding.rs lists the same names). One block per batch entry.
#include "key_padding.cuh"

#define KEY_PADDING_SCAN_ENTRY(TNAME, M)                                                                     \
  extern "C" __global__ void __launch_bounds__(512) flash_key_padding_scan_##TNAME(const flashattn::AttnParams p, \
                                                                              int32_t *lens, int32_t *prefix) { \
    flashattn::scan_key_padding<M>(p, lens, prefix);                                                        \
  }
KEY_PADDING_SCAN_ENTRY(bool, uint8_t)
KEY_PADDING_SCAN_ENTRY(f16, __half)
KEY_PADDING_SCAN_ENTRY(bf16, __nv_bfloat16)
