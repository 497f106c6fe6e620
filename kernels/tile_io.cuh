// Global <-> shared tile movement. Shared tiles are [ROWS][D] row-major with the 16-byte chunk index XORed
// with (row & 7), so the 8 row addresses of every ldmatrix phase hit 8 different bank groups.
#pragma once
#include "common.cuh"

namespace flashattn {

template <int D> __device__ __forceinline__ int swz(int row, int chunk) {
  return row * D + ((chunk ^ (row & 7)) << 3);
}

// Copies rows [0, ROWS) x cols [0, D) of a tile starting at `g` (row stride `row_stride` elements) into
// shared memory, zero-filling rows >= rows_valid and cols >= cols_valid. `vec`: every row start is 16-byte
// aligned and cols_valid % 8 == 0, so 16-byte cp.async copies are used (asynchronous: commit/wait after);
// otherwise element-wise synchronous copies. `safe` is any valid address (used when nothing is read).
template <typename T, int ROWS, int D, int NT>
__device__ __forceinline__ void load_tile(T *s, const T *g, int64_t row_stride, int rows_valid, int cols_valid,
                                          bool vec, const T *safe, int tid) {
  if (vec) {
    constexpr int CH = D / 8, TOTAL = ROWS * CH;
#pragma unroll
    for (int i = 0; i < (TOTAL + NT - 1) / NT; ++i) {
      const int idx = tid + i * NT;
      if (TOTAL % NT == 0 || idx < TOTAL) {
        const int r = idx / CH, c = idx % CH;
        const bool ok = r < rows_valid && c * 8 < cols_valid;
        const T *src = ok ? g + (int64_t)r * row_stride + c * 8 : safe;
        cp_async_16(smem_u32(s + swz<D>(r, c)), src, ok);
      }
    }
  } else {
    for (int idx = tid; idx < ROWS * D; idx += NT) {
      const int r = idx / D, col = idx % D;
      T v = Elem<T>::from_f32(0.f);
      if (r < rows_valid && col < cols_valid) v = g[(int64_t)r * row_stride + col];
      s[swz<D>(r, col >> 3) + (col & 7)] = v;
    }
  }
}

}  // namespace flashattn
