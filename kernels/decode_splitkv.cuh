// Split-KV decode kernel (FlashDecoding) for few query rows per sequence: block (split, kv_head, batch)
// streams key tiles [t0, t1) of its split once for all packed rows of the GQA group (decode_rows.cuh)
// through a STAGES-deep cp.async pipeline. S = Q K^T and O += P V run on mma.sync m16n8k16 as in the
// prefill kernel (mainloop_sm80.cuh); each warp takes a slice of every tile's keys, and the slices are
// merged by their running max at the end.
//
// APPEND (the `_append` entries): the KV append fused in (shared-buffer mode, nothing to copy): the query is
// rotated in shared memory once it has landed, and each new key/value row is appended by the block whose split
// reads its tile, before that block loads anything, so no separate append kernel runs before attention. Its
// own instances: in the plain ones the extra prologue code reshuffled the main loop (1-8% slower at batch 1-8
// on an H200).
//
// Output: with one split (o_part == nullptr) the normalised O and lse go straight to the outputs;
// otherwise each split writes its normalised O (f32) and lse to the workspace, indexed
// ((batch * heads_kv + kv_head) * n_splits + split) * rows + r, and decode_combine.cuh merges them.
// CLUSTER (the `flash_decode_cluster_…` entries, Hopper): the splits are the blocks of one thread-block cluster
// and merge their rows through distributed shared memory instead (decode_cluster.cuh).
#pragma once
#include "common.cuh"
#include "decode_cluster.cuh"
#include "decode_config.cuh"
#include "decode_rows.cuh"
#include "dependent_launch.cuh"
#include "kv_append.cuh"
#include "mainloop_sm80.cuh"
#include "params.cuh"
#include "softmax.cuh"
#include "tile_io.cuh"
#include "tile_scheduler.cuh"

namespace flashattn {

template <typename T, class Cfg, bool APPEND, bool CLUSTER = false>
__device__ __forceinline__ void flash_decode_splitkv(const AttnParams &p, const KvAppendParams &a, float *o_part,
                                                     float *lse_part) {
  constexpr int D = Cfg::D, WM = Cfg::WM, WN = Cfg::WN, BN = Cfg::BN, KW = Cfg::KW, NT = Cfg::NT,
                NTN = Cfg::NTN, NTD = Cfg::NTD, STAGES = Cfg::STAGES, ROWS = Cfg::ROWS;
  extern __shared__ __align__(128) unsigned char smem_raw[];
  require_dynamic_smem(Cfg::SMEM_BYTES);
  dependent_wait();  // q, the cache and key_seqlens may come from the kernel just before (the KV append)
  T *sQ = reinterpret_cast<T *>(smem_raw);
  T *sK = sQ + ROWS * D;
  T *sV = sK + STAGES * BN * D;

  constexpr bool COMPACT = D <= 128;  // the prologue below rolled, the key-slice merge spread over the warps
  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
  const int warp_m = warp % WM, warp_n = warp / WM;
  const int split = blockIdx.x, n_splits = gridDim.x, kv_head = blockIdx.y, batch = blockIdx.z;
  const int group = p.heads_q / p.heads_kv;
  const int rows = p.seq_q * group;
  if (rows > ROWS) __trap();  // the launcher picked a tile with too few packed rows

  // This split's share of the key tiles every row of the block may see (even shares, in whole tiles).
  const KeyRange kr = key_range<BN>(p, batch, 0, p.seq_q - 1);
  const int per_split = (kr.n_end - kr.n_begin + n_splits - 1) / n_splits;
  const int t0 = min(kr.n_begin + split * per_split, kr.n_end);
  const int t1 = min(t0 + per_split, kr.n_end);
  const int n_tiles = t1 - t0;

  // The new rows this block appends: those of its own tiles; the first split also takes any before the
  // visible range and the last non-empty split any after it (rows nobody reads).
  if constexpr (APPEND) {
    const int total = kr.n_end - kr.n_begin, last_split = total > 0 ? (total + per_split - 1) / per_split - 1 : 0;
    if (split <= last_split) {
      const int lo = split == 0 ? INT_MIN : t0 * BN, hi = split == last_split ? INT_MAX : t1 * BN;
      kv_append_owned_rows<T>(a, batch, kv_head, lo, hi, tid, NT);
    }
    __syncthreads();  // the rows are read back by this block's own tile loads below
  }

  PackedRow prow[2];  // this thread's two rows, set once the first loads are in flight
  // Warps whose 16 rows are all padding only help load.
  const bool active = warp_m * 16 < rows;

  float o[1][NTD][4];
#pragma unroll
  for (int nd = 0; nd < NTD; ++nd)
#pragma unroll
    for (int e = 0; e < 4; ++e) o[0][nd][e] = 0.f;
  OnlineSoftmax<1, NTN, NTD> sm;
  sm.init();
  const float scale_log2 = p.scale * kLog2e;

  {  // (a split without tiles loads only Q)
    const T *k_head = reinterpret_cast<const T *>(p.k_ptr) + (int64_t)batch * p.k_batch_stride +
                      (int64_t)kv_head * p.k_head_stride;
    const T *v_head = reinterpret_cast<const T *>(p.v_ptr) + (int64_t)batch * p.v_batch_stride +
                      (int64_t)kv_head * p.v_head_stride;
    const bool q_vec = vec_ok(p.q_ptr, p.q_batch_stride, p.q_head_stride, p.q_row_stride, p.head_dim);
    const bool k_vec = vec_ok(p.k_ptr, p.k_batch_stride, p.k_head_stride, p.k_row_stride, p.head_dim);
    const bool v_vec = vec_ok(p.v_ptr, p.v_batch_stride, p.v_head_stride, p.v_row_stride, p.head_dim_v);
    // Code size and issue count matter here: a split streams few tiles with little compute each, so its
    // blocks run mostly cold in the instruction cache (ncu: "no instruction" was the top stall) and issue-bound.
    // The streamers carry each thread's copy addresses from tile to tile; the prologue below is not unrolled
    // (COMPACT), so the loader is emitted twice in all. (Rolling the QK^T k-loop as well cost 30-40% at
    // 8k-32k keys: the mma chains lose their overlap.) Where the streamers serve, rows that are not 16-byte
    // aligned take element-wise copies.
    // STREAM: the streamers' registers would spill d 256's 64-row tile, which keeps load_tile.
    constexpr bool STREAM = COMPACT || ROWS < 64;
    const bool kv_vec = k_vec && v_vec;
    TileStreamer<T, BN, D, NT> k_stream(k_head, p.k_row_stride, t0 * BN, kr.kv_len, p.head_dim, tid);
    TileStreamer<T, BN, D, NT> v_stream(v_head, p.v_row_stride, t0 * BN, kr.kv_len, p.head_dim_v, tid);
    auto load_kv = [&](int tile, int stage) {  // called for t0, t0 + 1, ... in turn
      const int r = tile * BN;
      if (STREAM && kv_vec) {
        k_stream.load_next(smem_u32(sK + stage * BN * D));
        v_stream.load_next(smem_u32(sV + stage * BN * D));
      } else {
        load_tile<T, BN, D, NT>(sK + stage * BN * D, k_head + (int64_t)r * p.k_row_stride, p.k_row_stride,
                                kr.kv_len - r, p.head_dim, !STREAM && k_vec, k_head, tid);
        load_tile<T, BN, D, NT>(sV + stage * BN * D, v_head + (int64_t)r * p.v_row_stride, p.v_row_stride,
                                kr.kv_len - r, p.head_dim_v, !STREAM && v_vec, v_head, tid);
      }
    };

    // Prologue: Q with the first tile, then up to STAGES-1 tiles in flight (one commit group each, empty
    // groups past the end keep the wait count uniform).
    load_packed_q<T, ROWS, D, NT>(sQ, p, batch, kv_head, group, q_vec, tid);
    PackedQRotary q_rotary;
    const bool rotate_q = APPEND && a.rotary_dim > 0;
    if (rotate_q) q_rotary.start<T>(a, batch, rows, group, tid);
#pragma unroll(COMPACT ? 1 : STAGES - 1)
    for (int st = 0; st < STAGES - 1; ++st) {
      if (st < n_tiles) load_kv(t0 + st, st);
      cp_async_commit();
    }
    // The rows' geometry (integer divisions, the visible range) under the loads' latency rather than before them.
#pragma unroll
    for (int hf = 0; hf < 2; ++hf)
      prow[hf] = packed_row(p, warp_m * 16 + (lane >> 2) + 8 * hf, batch, kv_head, group, kr.kv_len);

    const int q_row = warp_m * 16 + (lane & 15), q_ch = lane >> 4;               // A from Q
    const int k_row = (lane & 7) + ((lane >> 4) << 3), k_ch = (lane >> 3) & 1;  // B from K
    const int v_row = lane & 15, v_ch = lane >> 4;                               // B from V (trans)
    const int key0 = warp_n * KW;  // this warp's keys inside a tile
    const bool has_mask = p.mask_kind != kMaskNone;
    const bool has_softcap = p.softcap > 0.f;

    for (int i = 0; i < n_tiles; ++i) {
      {
        const int ahead = i + STAGES - 1;
        if (ahead < n_tiles) load_kv(t0 + ahead, ahead % STAGES);
        cp_async_commit();
      }
      cp_async_wait<STAGES - 1>();
      __syncthreads();
      if (rotate_q && i == 0) {  // Q has landed with the first tile
        q_rotary.rotate<T, D, NT>(sQ, a, batch, tid);
        __syncthreads();
      }
      const int stage = i % STAGES;
      const T *sKs = sK + stage * BN * D;
      const T *sVs = sV + stage * BN * D;

      if (active) {
        // S = Q K^T over this warp's KW keys
        float s[1][NTN][4];
#pragma unroll
        for (int nt = 0; nt < NTN; ++nt)
#pragma unroll
          for (int e = 0; e < 4; ++e) s[0][nt][e] = 0.f;
#pragma unroll
        for (int kk = 0; kk < D / 16; ++kk) {
          uint32_t qa[4];
          ldmatrix_x4(qa, smem_u32(sQ + swz<D>(q_row, kk * 2 + q_ch)));
#pragma unroll
          for (int n2 = 0; n2 < KW / 16; ++n2) {
            uint32_t kb[4];
            ldmatrix_x4(kb, smem_u32(sKs + swz<D>(key0 + n2 * 16 + k_row, kk * 2 + k_ch)));
            Elem<T>::mma(s[0][2 * n2], qa, kb[0], kb[1]);
            Elem<T>::mma(s[0][2 * n2 + 1], qa, kb[2], kb[3]);
          }
        }

        const int c0 = (t0 + i) * BN;
        const bool bounds = c0 < kr.lo_max || c0 + BN > kr.hi_min;
        if (has_mask || has_softcap || bounds)
          apply_packed_score_mods<T, NTN>(s, p, prow, c0 + key0, has_mask, has_softcap, lane);

        sm.update(s, o, scale_log2);

        // O += P V
#pragma unroll
        for (int kk = 0; kk < KW / 16; ++kk) {
          uint32_t pa[4];
          pa[0] = Elem<T>::pack2(s[0][2 * kk][0], s[0][2 * kk][1]);
          pa[1] = Elem<T>::pack2(s[0][2 * kk][2], s[0][2 * kk][3]);
          pa[2] = Elem<T>::pack2(s[0][2 * kk + 1][0], s[0][2 * kk + 1][1]);
          pa[3] = Elem<T>::pack2(s[0][2 * kk + 1][2], s[0][2 * kk + 1][3]);
#pragma unroll
          for (int d2 = 0; d2 < D / 16; ++d2) {
            uint32_t vb[4];
            ldmatrix_x4_trans(vb, smem_u32(sVs + swz<D>(key0 + kk * 16 + v_row, d2 * 2 + v_ch)));
            Elem<T>::mma(o[0][2 * d2], pa, vb[0], vb[1]);
            Elem<T>::mma(o[0][2 * d2 + 1], pa, vb[2], vb[3]);
          }
        }
      }
      __syncthreads();  // this stage is overwritten by the load issued next iteration
    }
    cp_async_wait<0>();  // only empty groups can remain; drain them before the stages are reused
  }
  allow_dependents();  // the combine step may take its SM slots now: every K/V load has landed

  // Merge the WN key slices of each m-tile through shared memory (same lane <-> same rows and columns).
  // SPREAD: every warp stores its slice (O fragments, row max, partial sums), then finishes SHARE of the NTD
  // column tiles from all slices and stores them, so the merge and the stores are spread over the warps (a
  // one-tile split's block spends a good part of its life here). At d 256 that pushed the main loop into
  // spills, so there warp_n == 0 merges the other slices into its own and stores everything.
  constexpr bool SPREAD = WN > 1 && COMPACT;
  static_assert(!CLUSTER || COMPACT, "the cluster merge needs every warp to reach its barriers");
  constexpr int SHARE = SPREAD ? NTD / WN : NTD;
  static_assert(NTD % WN == 0, "the column tiles must split evenly over the key-slice warps");
  float *red = reinterpret_cast<float *>(sK);
  auto slot = [&](int w, int j) -> float & { return red[(w * (NTD * 4 + 4) + j) * 32 + lane]; };
  float f[WN][2];  // SPREAD: each slice's rescale factor per row half
  if constexpr (WN > 1) {
    __syncthreads();
    if (SPREAD || warp_n > 0) {
#pragma unroll
      for (int nd = 0; nd < NTD; ++nd)
#pragma unroll
        for (int e = 0; e < 4; ++e) slot(warp, nd * 4 + e) = o[0][nd][e];
#pragma unroll
      for (int hf = 0; hf < 2; ++hf) {
        slot(warp, NTD * 4 + hf) = sm.m[0][hf];
        slot(warp, NTD * 4 + 2 + hf) = sm.l[0][hf];
      }
    }
    __syncthreads();
  }
  if constexpr (SPREAD) {
#pragma unroll
    for (int hf = 0; hf < 2; ++hf) {
      float mx = -INFINITY;
#pragma unroll
      for (int wn = 0; wn < WN; ++wn) mx = fmaxf(mx, slot(warp_m + wn * WM, NTD * 4 + hf));
      const float mb = mx == -INFINITY ? 0.f : mx * scale_log2;
      float l = 0.f;
#pragma unroll
      for (int wn = 0; wn < WN; ++wn) {
        f[wn][hf] = fast_exp2(slot(warp_m + wn * WM, NTD * 4 + hf) * scale_log2 - mb);  // -inf -> 0
        l += slot(warp_m + wn * WM, NTD * 4 + 2 + hf) * f[wn][hf];
      }
      sm.m[0][hf] = mx;
      sm.l[0][hf] = l;
    }
  } else if constexpr (WN > 1) {
    if (warp_n != 0) return;
#pragma unroll
    for (int wn = 1; wn < WN; ++wn) {
      const int other = warp + wn * WM;
      float f_self[2], f_other[2];
#pragma unroll
      for (int hf = 0; hf < 2; ++hf) {
        const float m_other = slot(other, NTD * 4 + hf);
        const float mx = fmaxf(sm.m[0][hf], m_other);
        const float mb = mx == -INFINITY ? 0.f : mx * scale_log2;
        f_self[hf] = fast_exp2(sm.m[0][hf] * scale_log2 - mb);  // -inf -> 0
        f_other[hf] = fast_exp2(m_other * scale_log2 - mb);
        sm.m[0][hf] = mx;
        sm.l[0][hf] = sm.l[0][hf] * f_self[hf] + slot(other, NTD * 4 + 2 + hf) * f_other[hf];
      }
#pragma unroll
      for (int nd = 0; nd < NTD; ++nd)
#pragma unroll
        for (int e = 0; e < 4; ++e)
          o[0][nd][e] = o[0][nd][e] * f_self[e / 2] + slot(other, nd * 4 + e) * f_other[e / 2];
    }
  }
  // Element e of this warp's column tile j, merged over the slices (read where it is stored, so no second
  // copy of the accumulators stays live).
  auto merged = [&](int j, int e) -> float {
    if constexpr (!SPREAD) {
      return o[0][j][e];
    } else {
      float acc = 0.f;
#pragma unroll
      for (int wn = 0; wn < WN; ++wn) acc += slot(warp_m + wn * WM, (warp_n * SHARE + j) * 4 + e) * f[wn][e / 2];
      return acc;
    }
  };

  float inv[1][2], lse[1][2];
  sm.finalize(inv, lse, p.scale);
  const int dv = p.head_dim_v;
  const bool lse_writer = warp_n == 0;
  float *cluster_rows = nullptr;  // CLUSTER: where this block leaves its rows for the cluster merge
  if constexpr (CLUSTER) cluster_rows = red + ClusterRows<Cfg>::OFFSET;
#pragma unroll
  for (int hf = 0; hf < 2; ++hf) {
    const PackedRow &pr = prow[hf];
    if (!pr.valid) continue;
    const int r = warp_m * 16 + (lane >> 2) + 8 * hf;
    if constexpr (CLUSTER) {
      float *xrow = cluster_rows + r * ClusterRows<Cfg>::XD;
#pragma unroll
      for (int j = 0; j < SHARE; ++j) {
        const int col = (warp_n * SHARE + j) * 8 + 2 * (lane & 3);
        *reinterpret_cast<float2 *>(xrow + col) = make_float2(merged(j, 2 * hf) * inv[0][hf], merged(j, 2 * hf + 1) * inv[0][hf]);
      }
      if (lse_writer && (lane & 3) == 0) cluster_rows[ROWS * ClusterRows<Cfg>::XD + r] = lse[0][hf];
    } else if (o_part == nullptr) {
      T *orow = reinterpret_cast<T *>(p.out_ptr) + (int64_t)batch * p.out_batch_stride +
                (int64_t)pr.head * p.out_head_stride + (int64_t)pr.token * p.out_row_stride;
      const bool pairs = ((p.out_ptr & 3) == 0) && ((p.out_batch_stride | p.out_head_stride | p.out_row_stride) & 1) == 0;
#pragma unroll
      for (int j = 0; j < SHARE; ++j) {
        const int col = (warp_n * SHARE + j) * 8 + 2 * (lane & 3);
        const float v0 = merged(j, 2 * hf) * inv[0][hf], v1 = merged(j, 2 * hf + 1) * inv[0][hf];
        if (pairs && col + 1 < dv) {
          *reinterpret_cast<uint32_t *>(orow + col) = Elem<T>::pack2(v0, v1);
        } else {
          if (col < dv) orow[col] = Elem<T>::from_f32(v0);
          if (col + 1 < dv) orow[col + 1] = Elem<T>::from_f32(v1);
        }
      }
      if (lse_writer && p.lse_ptr != 0 && (lane & 3) == 0)
        reinterpret_cast<float *>(p.lse_ptr)[((int64_t)batch * p.heads_q + pr.head) * p.seq_q + pr.token] = lse[0][hf];
    } else {
      const int64_t prow_idx = (((int64_t)batch * p.heads_kv + kv_head) * n_splits + split) * rows + r;
      float *orow = o_part + prow_idx * dv;
#pragma unroll
      for (int j = 0; j < SHARE; ++j) {
        const int col = (warp_n * SHARE + j) * 8 + 2 * (lane & 3);
        const float v0 = merged(j, 2 * hf) * inv[0][hf], v1 = merged(j, 2 * hf + 1) * inv[0][hf];
        if ((dv & 1) == 0 && col + 1 < dv) {
          *reinterpret_cast<float2 *>(orow + col) = make_float2(v0, v1);
        } else {
          if (col < dv) orow[col] = v0;
          if (col + 1 < dv) orow[col + 1] = v1;
        }
      }
      if (lse_writer && (lane & 3) == 0) lse_part[prow_idx] = lse[0][hf];
    }
  }
  if constexpr (CLUSTER) {
    cluster_sync();  // every split's rows are in its shared memory
    cluster_merge_rows<T, Cfg>(p, smem_u32(cluster_rows), rows, split, n_splits, batch, kv_head, group, tid);
    cluster_sync_relaxed();  // no block leaves while another still reads its rows
  }
}

}  // namespace flashattn
