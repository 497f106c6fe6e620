//! The CPU mainloop for one work item: a tile of query rows of one key/value head, swept over key tiles
//! with the online softmax. Query heads that share a key/value head (GQA/MQA) are packed into the
//! tile's rows, so each key/value tile is loaded once for the whole group.

use std::cell::RefCell;

use gemm::{gemm, Parallelism};

use super::element::Element;
use super::mask::RowMasker;
use super::softmax::{scale_row, softcap, RowState};
use crate::params::{AttnParams, DType};

/// Query rows per tile (packed over the GQA group) and keys per tile. Tall tiles amortise the GEMMs'
/// packing of each key/value tile (on a 2-core Zen 4, fp32 d64: 512×256 ran ~155 GFLOP/s, 256×256 ~137,
/// 128×256 ~126, 64×256 ~50 before AVX-512); they shrink when that would leave fewer than 4 tiles per core.
pub fn tile_shape(p: &AttnParams) -> (usize, usize) {
    let packed_rows = (p.seq_q as usize) * (p.group_size() as usize);
    let cores = cores();
    let heads = p.batch as usize * p.heads_kv as usize;
    let mut br = 512;
    while br > 32 && heads * packed_rows.div_ceil(br) < 4 * cores {
        br /= 2;
    }
    let br = br.min(packed_rows);
    let bc = if p.head_dim <= 128 { 256 } else { 128 };
    (br, bc)
}

/// The machine's cores, read once: `available_parallelism` reads cgroup files on every call (~25 µs on
/// Linux), which a decode step's tiny problem would pay per node.
fn cores() -> usize {
    static CORES: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *CORES.get_or_init(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}

/// Tiles of `br` packed query rows: the work items.
pub fn work_items(p: &AttnParams, (br, _): (usize, usize)) -> usize {
    let packed_rows = (p.seq_q as usize) * (p.group_size() as usize);
    p.batch as usize * p.heads_kv as usize * packed_rows.div_ceil(br)
}

/// Raw output pointer shared by the workers; each item writes a disjoint set of rows.
#[derive(Clone, Copy)]
pub struct SharedOut<T>(pub *mut T);
unsafe impl<T> Send for SharedOut<T> {}
unsafe impl<T> Sync for SharedOut<T> {}

pub struct TileInputs<'a, T> {
    pub q: &'a [T],
    pub k: &'a [T],
    pub v: &'a [T],
    pub masker: RowMasker<'a, T>,
}

thread_local! {
    static SCRATCH: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// One query row of the tile: which head and position it is.
#[derive(Clone, Copy)]
struct Row {
    head: usize,
    pos: usize,
}

/// `shape` is [`tile_shape`]'s answer, computed once per call: worker threads may see fewer cores
/// (ORT pins them), so recomputing it here could disagree with the item count.
pub fn run_item<T: Element>(p: &AttnParams, (br, bc): (usize, usize), inp: &TileInputs<T>, out: SharedOut<T>, lse: Option<SharedOut<f32>>, item: usize) {
    let group = p.group_size() as usize;
    let (d, dv) = (p.head_dim as usize, p.head_dim_v as usize);
    let packed_rows = p.seq_q as usize * group;
    let tiles = packed_rows.div_ceil(br);
    let (bh, t) = (item / tiles, item % tiles);
    let (b, hk) = (bh / p.heads_kv as usize, bh % p.heads_kv as usize);
    let r0 = t * br;
    let rn = br.min(packed_rows - r0);
    let rows: Vec<Row> = (r0..r0 + rn).map(|pr| Row { head: hk * group + pr % group, pos: pr / group }).collect();

    SCRATCH.with_borrow_mut(|scratch| {
        let need = br * d + br * bc + bc * d + bc * dv + br * dv;
        if scratch.len() < need {
            scratch.resize(need, 0.0);
        }
        let (qs, rest) = scratch.split_at_mut(br * d);
        let (s, rest) = rest.split_at_mut(br * bc);
        let (ks, rest) = rest.split_at_mut(bc * d);
        let (vs, rest) = rest.split_at_mut(bc * dv);
        let o = &mut rest[..br * dv];

        for (r, row) in rows.iter().enumerate() {
            let at = (b as i64 * p.q_batch_stride + row.head as i64 * p.q_head_stride + row.pos as i64 * p.q_row_stride) as usize;
            let dst = &mut qs[r * d..(r + 1) * d];
            T::widen(&inp.q[at..at + d], dst);
            scale_row(dst, p.scale);
        }
        o[..rn * dv].fill(0.0);
        let mut states = vec![RowState::EMPTY; rn];

        // Keys any row of the tile may see; rows outside their own band are masked per row below.
        let (lo, hi) = rows.iter().fold((usize::MAX, 0), |(lo, hi), row| {
            let (l, h) = inp.masker.band(b, row.pos);
            if h > l { (lo.min(l), hi.max(h)) } else { (lo, hi) }
        });

        let k_base = (b as i64 * p.k_batch_stride + hk as i64 * p.k_head_stride) as usize;
        let v_base = (b as i64 * p.v_batch_stride + hk as i64 * p.v_head_stride) as usize;
        let (k_rs, v_rs) = (p.k_row_stride as usize, p.v_row_stride as usize);
        let mut c0 = lo;
        while c0 < hi {
            let cn = bc.min(hi - c0);
            let (k_ptr, k_stride) = tile_rows(inp.k, k_base + c0 * k_rs, k_rs, cn, d, ks);
            let s = &mut s[..rn * cn];
            // S = Q·Kᵀ
            unsafe {
                gemm(
                    rn, cn, d,
                    s.as_mut_ptr(), 1, cn as isize, false,
                    qs.as_ptr(), 1, d as isize,
                    k_ptr, k_stride as isize, 1,
                    0.0, 1.0, false, false, false, Parallelism::None,
                );
            }
            for (r, row) in rows.iter().enumerate() {
                let sr = &mut s[r * cn..(r + 1) * cn];
                if p.softcap > 0.0 {
                    softcap(sr, p.softcap);
                }
                inp.masker.apply(sr, b, row.head, row.pos, c0);
                if let Some(alpha) = states[r].absorb(sr) {
                    scale_row(&mut o[r * dv..(r + 1) * dv], alpha);
                }
            }
            let (v_ptr, v_stride) = tile_rows(inp.v, v_base + c0 * v_rs, v_rs, cn, dv, vs);
            // O += P·V
            unsafe {
                gemm(
                    rn, dv, cn,
                    o.as_mut_ptr(), 1, dv as isize, true,
                    s.as_ptr(), 1, cn as isize,
                    v_ptr, 1, v_stride as isize,
                    1.0, 1.0, false, false, false, Parallelism::None,
                );
            }
            c0 += cn;
        }

        for (r, row) in rows.iter().enumerate() {
            let orow = &mut o[r * dv..(r + 1) * dv];
            scale_row(orow, states[r].inv_sum());
            let at = (b as i64 * p.out_batch_stride + row.head as i64 * p.out_head_stride + row.pos as i64 * p.out_row_stride) as usize;
            // SAFETY: (b, head, pos) rows are owned by exactly one work item.
            let dst = unsafe { std::slice::from_raw_parts_mut(out.0.add(at), dv) };
            T::narrow(orow, dst);
            if let Some(lse) = lse {
                let at = (b * p.heads_q as usize + row.head) * p.seq_q as usize + row.pos;
                unsafe { *lse.0.add(at) = states[r].lse() };
            }
        }
    });
}

/// `n` rows of width `w` starting at `start` with row stride `stride`, as f32: float32 storage is read
/// in place; half types are widened into `buf`. Returns the pointer and its row stride.
fn tile_rows<T: Element>(src: &[T], start: usize, stride: usize, n: usize, w: usize, buf: &mut [f32]) -> (*const f32, usize) {
    let last = start + (n - 1) * stride + w;
    assert!(last <= src.len(), "tile out of bounds");
    if T::DTYPE == DType::F32 {
        // SAFETY: T is f32 (checked through its DTYPE).
        return (unsafe { (src.as_ptr() as *const f32).add(start) }, stride);
    }
    for j in 0..n {
        T::widen(&src[start + j * stride..start + j * stride + w], &mut buf[j * w..(j + 1) * w]);
    }
    (buf.as_ptr(), w)
}
