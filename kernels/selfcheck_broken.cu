// Deliberately broken stand-ins for the Blackwell kernel, compiled for every architecture, so the self-check
// (src/gpu/selfcheck.rs) can be proven on any GPU: it must reject each of them, log a warning and leave the
// process's kernels working. Same parameters and launch geometry as flash_fwd_sm100_* (one block of 192
// threads per 128-row tile, tensor maps unused).
#include <cuda.h>

#include "params.cuh"
#include "tile_scheduler.cuh"

namespace flashattn {
// Writes `value` to every output element (and 0 to lse) of the block's tile: plausible-looking, wrong.
__device__ __forceinline__ void selfcheck_fill(const AttnParams &p, float value) {
  const BlockWork w = persistent_tile<128, 128>(p, blockIdx.x);
  for (int idx = threadIdx.x; idx < 128 * p.head_dim_v; idx += blockDim.x) {
    const int row = w.m_block * 128 + idx / p.head_dim_v, col = idx % p.head_dim_v;
    if (row >= p.seq_q) continue;
    const int64_t at = (int64_t)w.batch * p.out_batch_stride + (int64_t)w.head * p.out_head_stride +
                       (int64_t)row * p.out_row_stride + col;
    if (p.dtype == kDtypeBF16)
      reinterpret_cast<__nv_bfloat16 *>(p.out_ptr)[at] = __float2bfloat16_rn(value);
    else
      reinterpret_cast<__half *>(p.out_ptr)[at] = __float2half_rn(value);
    if (col == 0 && p.lse_ptr != 0)
      reinterpret_cast<float *>(p.lse_ptr)[((int64_t)w.batch * p.heads_q + w.head) * p.seq_q + row] = 0.f;
  }
}
}  // namespace flashattn

#define FLASH_SELFCHECK_BROKEN(NAME, BODY)                                                                  \
  extern "C" __global__ void __launch_bounds__(192) NAME(                                                  \
      const __grid_constant__ flashattn::AttnParams p, const __grid_constant__ CUtensorMap tq,             \
      const __grid_constant__ CUtensorMap tk, const __grid_constant__ CUtensorMap tv) {                    \
    BODY;                                                                                                   \
  }

FLASH_SELFCHECK_BROKEN(flash_selfcheck_wrong, flashattn::selfcheck_fill(p, 0.5f))
FLASH_SELFCHECK_BROKEN(flash_selfcheck_nan, flashattn::selfcheck_fill(p, __int_as_float(0x7fc00000)))
FLASH_SELFCHECK_BROKEN(flash_selfcheck_trap, __trap())
