//! TMA tensor maps for the Hopper kernel: Q, K and V each described to the Tensor Memory Accelerator as a
//! 4D tensor (head_dim, row, head, batch) with the caller's strides, loaded in boxes of one swizzle panel
//! (64 columns with 128-byte swizzling, or 32 with 64-byte swizzling) × a tile's rows: the layout wgmma
//! reads. Columns past head_dim and rows past the
//! sequence are zero-filled by the hardware, so padded head dims and ragged tiles need no special case.
//! Encoded on the host for each launch (a driver call, no GPU work) and passed by value as
//! `__grid_constant__` kernel parameters, so CUDA graph capture records them.
//!
//! With GQA packing (kernels/gqa_pack.cuh) the query is 5D (head_dim, head in group, row, KV head, batch) and a
//! box holds g heads x bm / g rows: packed rows in the order the kernel computes them.

use std::sync::atomic::{AtomicI32, Ordering};

use cudarc::driver::sys;

use super::driver::{check, GpuError};
use crate::params::AttnParams;

/// The L2 promotion of every tensor map (how much L2 fetches around a missed request): -1 = the default
/// (256 bytes), else 0 (none), 64, 128 or 256. A benchmarking aid (ffi `flashattn_ort_gpu_set_l2_promotion`).
static L2_PROMOTION: AtomicI32 = AtomicI32::new(-1);

pub fn set_l2_promotion(bytes: i32) {
    L2_PROMOTION.store(if matches!(bytes, 0 | 64 | 128 | 256) { bytes } else { -1 }, Ordering::Relaxed);
}

fn l2_promotion() -> sys::CUtensorMapL2promotion {
    use sys::CUtensorMapL2promotion as P;
    match L2_PROMOTION.load(Ordering::Relaxed) {
        0 => P::CU_TENSOR_MAP_L2_PROMOTION_NONE,
        64 => P::CU_TENSOR_MAP_L2_PROMOTION_L2_64B,
        128 => P::CU_TENSOR_MAP_L2_PROMOTION_L2_128B,
        _ => P::CU_TENSOR_MAP_L2_PROMOTION_L2_256B,
    }
}

/// One operand's geometry in elements.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Operand {
    pub addr: u64,
    pub cols: i64,
    /// A GQA-packed query: its `group` heads per KV head (`group_stride` apart) are an axis between columns and
    /// rows (5D, also for a group of one); else 4D with group 1.
    pub packed: bool,
    pub group: i64,
    pub group_stride: i64,
    pub rows: i64,
    pub heads: i64,
    pub batch: i64,
    pub row_stride: i64,
    pub head_stride: i64,
    pub batch_stride: i64,
}

impl Operand {
    /// A 4D operand (columns, rows, heads, batch) with the caller's element strides (row, head, batch).
    fn unpacked(addr: u64, cols: i32, rows: i32, heads: i32, batch: i32, strides: [i64; 3]) -> Self {
        let [row_stride, head_stride, batch_stride] = strides;
        Operand { addr, cols: cols as i64, packed: false, group: 1, group_stride: 0, rows: rows as i64, heads: heads as i64, batch: batch as i64, row_stride, head_stride, batch_stride }
    }
    pub fn query(p: &AttnParams) -> Self {
        Operand::unpacked(p.q_ptr, p.head_dim, p.seq_q, p.heads_q, p.batch, [p.q_row_stride, p.q_head_stride, p.q_batch_stride])
    }
    /// The query as GQA packing reads it: the heads of a KV head's group as an axis of their own.
    pub fn packed_query(p: &AttnParams) -> Self {
        let g = (p.heads_q / p.heads_kv.max(1)) as i64;
        Operand { packed: true, group: g, group_stride: p.q_head_stride, heads: p.heads_kv as i64, head_stride: p.q_head_stride * g, ..Operand::query(p) }
    }
    /// The output, as the Hopper kernel's TMA store writes it (kernels/epilogue_sm90.cuh).
    pub fn output(p: &AttnParams) -> Self {
        Operand::unpacked(p.out_ptr, p.head_dim_v, p.seq_q, p.heads_q, p.batch, [p.out_row_stride, p.out_head_stride, p.out_batch_stride])
    }
    pub fn key(p: &AttnParams) -> Self {
        Operand::unpacked(p.k_ptr, p.head_dim, p.seq_kv, p.heads_kv, p.batch, [p.k_row_stride, p.k_head_stride, p.k_batch_stride])
    }
    pub fn value(p: &AttnParams) -> Self {
        Operand::unpacked(p.v_ptr, p.head_dim_v, p.seq_kv, p.heads_kv, p.batch, [p.v_row_stride, p.v_head_stride, p.v_batch_stride])
    }

    /// Extents (innermost first) and byte strides of the outer axes (the group axis only when packed), in
    /// arrays of the largest rank (no allocation: dispatch asks for every Hopper kernel it considers). An
    /// axis of extent 1 is never stepped along, so its stride is replaced by a packed one the encoder accepts
    /// whatever the caller's was.
    fn axes(&self) -> Axes {
        let (rank, dims, strides) = if self.packed {
            (5, [self.cols, self.group, self.rows, self.heads, self.batch], [self.group_stride, self.row_stride, self.head_stride, self.batch_stride])
        } else {
            (4, [self.cols, self.rows, self.heads, self.batch, 1], [self.row_stride, self.head_stride, self.batch_stride, 0])
        };
        let dims = dims.map(|d| d as u64);
        let mut strides = strides.map(|s| (s * 2) as u64);
        let mut packed = (self.cols as u64 * 2).next_multiple_of(16);
        for (i, stride) in strides[..rank - 1].iter_mut().enumerate() {
            if dims[i + 1] == 1 {
                *stride = packed;
            }
            packed = stride.saturating_mul(dims[i + 1]);
        }
        Axes { rank, dims, strides }
    }

    /// Whether TMA can address this operand: a 16-byte aligned base, byte strides that are multiples of 16
    /// (below 2^40) on every axis that is stepped along.
    pub fn tma_compatible(&self) -> bool {
        let a = self.axes();
        self.addr % 16 == 0 && a.dims().iter().all(|&d| d >= 1 && d <= 1 << 32) && a.strides().iter().all(|&s| s % 16 == 0 && s > 0 && s < 1 << 40)
    }

    /// The tensor map for boxes of `box_cols` columns (a swizzle panel: 64 or 32 16-bit elements, swizzled
    /// over 128 or 64 bytes) and `box_rows` rows (a tile's height; of packed rows when packed: a multiple of
    /// the group).
    pub fn encode(&self, dtype: i32, box_cols: u32, box_rows: u32) -> Result<sys::CUtensorMap, GpuError> {
        let axes = self.axes();
        let data_type = match dtype {
            1 => sys::CUtensorMapDataType::CU_TENSOR_MAP_DATA_TYPE_FLOAT16,
            2 => sys::CUtensorMapDataType::CU_TENSOR_MAP_DATA_TYPE_BFLOAT16,
            d => return Err(GpuError::new(format!("no tensor map for dtype code {d}"))),
        };
        let swizzle = match box_cols {
            64 => sys::CUtensorMapSwizzle::CU_TENSOR_MAP_SWIZZLE_128B,
            32 => sys::CUtensorMapSwizzle::CU_TENSOR_MAP_SWIZZLE_64B,
            c => return Err(GpuError::new(format!("no swizzle for boxes of {c} columns"))),
        };
        let boxes: [u32; 5] = if self.packed {
            let g = self.group as u32;
            if box_rows % g != 0 {
                return Err(GpuError::new(format!("a packed query tile of {box_rows} rows does not hold whole groups of {g} heads")));
            }
            [box_cols, g, box_rows / g, 1, 1]
        } else {
            [box_cols, box_rows, 1, 1, 1]
        };
        let element_strides = [1u32; 5];
        let mut map = std::mem::MaybeUninit::<sys::CUtensorMap>::zeroed();
        check(
            unsafe {
                sys::cuTensorMapEncodeTiled(
                    map.as_mut_ptr(),
                    data_type,
                    axes.rank as u32,
                    self.addr as *mut std::ffi::c_void,
                    axes.dims.as_ptr(),
                    axes.strides.as_ptr(),
                    boxes.as_ptr(),
                    element_strides.as_ptr(),
                    sys::CUtensorMapInterleave::CU_TENSOR_MAP_INTERLEAVE_NONE,
                    swizzle,
                    l2_promotion(),
                    sys::CUtensorMapFloatOOBfill::CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE,
                )
            },
            "encoding a TMA tensor map (cuTensorMapEncodeTiled)",
        )?;
        Ok(unsafe { map.assume_init() })
    }
}

/// An operand's axes as the encoder takes them: `rank` extents and the `rank - 1` outer byte strides.
struct Axes {
    rank: usize,
    dims: [u64; 5],
    strides: [u64; 4],
}

impl Axes {
    fn dims(&self) -> &[u64] {
        &self.dims[..self.rank]
    }
    fn strides(&self) -> &[u64] {
        &self.strides[..self.rank - 1]
    }
}

/// Whether the Hopper kernel's loads can serve `p` (else the portable kernel does).
pub fn tma_compatible(p: &AttnParams) -> bool {
    [Operand::query(p), Operand::key(p), Operand::value(p)].iter().all(Operand::tma_compatible)
}

/// Whether the GQA-packed query load can serve `p` too (its heads' stride is stepped along).
pub fn packed_tma_compatible(p: &AttnParams) -> bool {
    Operand::packed_query(p).tma_compatible()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bsnh(b: i32, s: i32, h: i32, d: i32) -> AttnParams {
        let (rs, hs, bs) = ((h * d) as i64, d as i64, (s * h * d) as i64);
        AttnParams {
            q_ptr: 1 << 20, k_ptr: 2 << 20, v_ptr: 3 << 20, batch: b, heads_q: h, heads_kv: h, seq_q: s, seq_kv: s, head_dim: d, head_dim_v: d,
            q_row_stride: rs, q_head_stride: hs, q_batch_stride: bs, k_row_stride: rs, k_head_stride: hs, k_batch_stride: bs,
            v_row_stride: rs, v_head_stride: hs, v_batch_stride: bs, dtype: 2, ..Default::default()
        }
    }

    #[test]
    fn aligned_layouts_are_compatible() {
        assert!(tma_compatible(&bsnh(2, 1000, 16, 128)));
        assert!(tma_compatible(&bsnh(1, 1, 32, 64))); // one row: its stride is never used
        assert!(tma_compatible(&bsnh(3, 77, 5, 96)));
    }

    #[test]
    fn misaligned_layouts_fall_back() {
        assert!(!tma_compatible(&bsnh(2, 100, 3, 36))); // row stride 108 elements = 216 bytes
        let odd_base = AttnParams { k_ptr: (2 << 20) + 8, ..bsnh(2, 64, 4, 64) };
        assert!(!tma_compatible(&odd_base));
    }

    #[test]
    fn packed_query_steps_heads_within_and_across_groups() {
        let p = AttnParams { heads_kv: 4, ..bsnh(2, 100, 16, 128) };
        let q = Operand::packed_query(&p);
        let axes = q.axes();
        assert_eq!(axes.dims(), &[128, 4, 100, 4, 2]);
        // bytes: next head, next row, next group (4 heads), next batch entry
        assert_eq!(axes.strides(), &[256, 16 * 256, 4 * 256, 100 * 16 * 256]);
        assert!(packed_tma_compatible(&p));
        // a head stride of 36 elements (72 bytes) cannot be stepped by TMA
        let odd = AttnParams { q_head_stride: 36, q_row_stride: 16 * 64, q_batch_stride: 100 * 16 * 64, ..p };
        assert!(!packed_tma_compatible(&odd));
    }

    #[test]
    fn unit_axes_get_packed_strides() {
        let p = AttnParams { q_batch_stride: 3, ..bsnh(1, 64, 4, 64) };
        let axes = Operand::query(&p).axes();
        let strides = axes.strides();
        assert_eq!(strides.len(), 3);
        assert_eq!(&strides[..2], &[512, 128]);
        assert_eq!(strides[2] % 16, 0);
        assert!(Operand::query(&p).tma_compatible());
    }
}
