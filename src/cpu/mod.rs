//! The CPU kernel: tiled FlashAttention forward (online softmax, no S×S matrix), f32 accumulation,
//! float/float16/bfloat16 storage, parallel over (batch, kv head, query tile).

pub mod element;
pub mod kv;
pub mod mask;
pub mod reference;
pub mod softmax;
pub mod tile;

use std::sync::atomic::{AtomicUsize, Ordering};

pub use element::Element;
pub use mask::MaskData;

use crate::params::AttnParams;
use crate::schema::{self, SchemaError};
use mask::RowMasker;
use tile::{SharedOut, TileInputs};

/// Runs `n` independent tasks, possibly in parallel.
pub trait Parallel {
    fn run(&self, n: usize, task: &(dyn Fn(usize) + Sync));
}

/// rayon's global pool.
pub struct Rayon;

impl Parallel for Rayon {
    fn run(&self, n: usize, task: &(dyn Fn(usize) + Sync)) {
        use rayon::prelude::*;
        (0..n).into_par_iter().for_each(task);
    }
}

/// One thread.
pub struct Serial;

impl Parallel for Serial {
    fn run(&self, n: usize, task: &(dyn Fn(usize) + Sync)) {
        (0..n).for_each(task);
    }
}

/// The inputs of one call, as typed slices laid out as `AttnParams` describes.
pub struct Inputs<'a, T> {
    pub q: &'a [T],
    pub k: &'a [T],
    pub v: &'a [T],
    pub mask: MaskData<'a, T>,
    pub seqlens: Option<&'a [i32]>,
}

fn extent(batch: i32, bs: i64, heads: i32, hs: i64, rows: i32, rs: i64, w: i32) -> usize {
    ((batch as i64 - 1) * bs + (heads as i64 - 1) * hs + (rows as i64 - 1) * rs + w as i64) as usize
}

/// FlashAttention forward on the CPU. `out` is laid out as `p`'s out strides; `lse` is [B, Nq, Sq].
pub fn attention<T: Element>(p: &AttnParams, inp: &Inputs<T>, out: &mut [T], lse: Option<&mut [f32]>, par: &dyn Parallel) -> Result<(), SchemaError> {
    let need = |name: &str, len: usize, want: usize| {
        if len < want {
            Err(SchemaError(format!("input '{name}' holds {len} elements, {want} needed")))
        } else {
            Ok(())
        }
    };
    need("query", inp.q.len(), extent(p.batch, p.q_batch_stride, p.heads_q, p.q_head_stride, p.seq_q, p.q_row_stride, p.head_dim))?;
    need("key", inp.k.len(), extent(p.batch, p.k_batch_stride, p.heads_kv, p.k_head_stride, p.seq_kv, p.k_row_stride, p.head_dim))?;
    need("value", inp.v.len(), extent(p.batch, p.v_batch_stride, p.heads_kv, p.v_head_stride, p.seq_kv, p.v_row_stride, p.head_dim_v))?;
    need("output", out.len(), extent(p.batch, p.out_batch_stride, p.heads_q, p.out_head_stride, p.seq_q, p.out_row_stride, p.head_dim_v))?;
    let mask_len = match inp.mask {
        MaskData::None => None,
        MaskData::Bool(m) => Some(m.len()),
        MaskData::Additive(m) => Some(m.len()),
    };
    if let Some(len) = mask_len {
        let last = (p.batch as i64 - 1) * p.mask_batch_stride
            + (p.heads_q as i64 - 1) * p.mask_head_stride
            + (p.seq_q as i64 - 1) * p.mask_row_stride
            + (p.seq_kv as i64 - 1) * p.mask_col_stride
            + 1;
        need("attn_mask", len, last as usize)?;
    }
    if let Some(lens) = inp.seqlens {
        need("key_seqlens", lens.len(), p.batch as usize)?;
        schema::check_seqlens(&lens[..p.batch as usize], p.seq_kv)?;
    }
    let lse_ptr = match lse {
        Some(l) => {
            need("softmax_lse", l.len(), (p.batch * p.heads_q * p.seq_q) as usize)?;
            Some(SharedOut(l.as_mut_ptr()))
        }
        None => None,
    };
    let tiles = TileInputs { q: inp.q, k: inp.k, v: inp.v, masker: RowMasker { mask: inp.mask, seqlens: inp.seqlens, p } };
    let out_ptr = SharedOut(out.as_mut_ptr());
    let shape = tile::tile_shape(p);
    let items = tile::work_items(p, shape);
    // Workers pull items from a shared counter: causal tiles differ in cost, so static splits idle.
    let next = AtomicUsize::new(0);
    let workers = items.min(256);
    par.run(workers, &|_| loop {
        let item = next.fetch_add(1, Ordering::Relaxed);
        if item >= items {
            break;
        }
        tile::run_item(p, shape, &tiles, out_ptr, lse_ptr, item);
    });
    Ok(())
}
