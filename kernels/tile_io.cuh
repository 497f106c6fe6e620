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

// Streams the successive ROWS x D tiles of one matrix (row stride `row_stride` elements), first to last,
// into shared tiles laid out as load_tile's, by 16-byte cp.async, with the address arithmetic done once per
// thread: thread tid always copies chunk column tid % CH of rows tid / CH + i * RSTEP of a tile, so its source
// only moves on by a tile's rows from one tile to the next. Needs load_tile's `vec` conditions. (Where a
// tile feeds little compute, as in decode, recomputing the addresses per tile was half of a step's
// instructions.)
template <typename T, int ROWS, int D, int NT> struct TileStreamer {
  static constexpr int CH = D / 8, RSTEP = NT / CH, PER = ROWS / RSTEP;
  // RSTEP % 4 == 0: row0 + i * RSTEP has the swizzle bits (row0 & 7) ^ ((i * RSTEP) & 7) (no carry into them).
  static_assert(NT % CH == 0 && RSTEP % 4 == 0 && ROWS % RSTEP == 0, "whole row steps of 4k rows per thread");
  const T *safe;       // any valid address (the matrix itself), read by nothing
  const T *next;       // this thread's first chunk of the next tile
  int64_t step;        // RSTEP rows, in elements
  int rows_left;       // rows of the matrix from this thread's first row of the next tile on
  uint32_t dst_row;    // byte offset of this thread's first row inside a tile
  uint32_t dst_chunk;  // its swizzled chunk in that row, in elements
  bool col_ok;

  // Starts at row first_row of a matrix of `rows` rows.
  __device__ __forceinline__ TileStreamer(const T *matrix, int64_t row_stride, int first_row, int rows, int cols_valid,
                                          int tid) {
    const int c = tid % CH, row0 = tid / CH;
    safe = matrix;
    next = matrix + (int64_t)(first_row + row0) * row_stride + c * 8;
    step = (int64_t)RSTEP * row_stride;
    rows_left = rows - first_row - row0;
    dst_row = row0 * D * (uint32_t)sizeof(T);
    dst_chunk = (c ^ (row0 & 7)) << 3;  // swz<D>(row0, c) - row0 * D
    col_ok = c * 8 < cols_valid;
  }
  // The next tile into the shared tile at s, rows past the matrix's end zero-filled.
  __device__ __forceinline__ void load_next(uint32_t s) {
    const T *g = next;
#pragma unroll
    for (int i = 0; i < PER; ++i) {
      const bool ok = col_ok && i * RSTEP < rows_left;
      const uint32_t chunk = dst_chunk ^ (((i * RSTEP) & 7) << 3);
      cp_async_16(s + dst_row + (i * RSTEP * D + chunk) * (uint32_t)sizeof(T), ok ? g : safe, ok);
      g += step;
    }
    next = g;
    rows_left -= ROWS;
  }
};

}  // namespace flashattn
