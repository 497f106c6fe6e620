//! Split-KV for the Hopper prefill kernel. A short query over many keys at small batch (a prompt chunk or a new
//! chat turn over a long KV cache, speculative verification past the decode kernel's 64 packed rows) has few
//! query tiles: one block per tile leaves most SMs idle while each streams the whole cache. Its GQA-packed
//! instances (kernels/gqa_pack.cuh), or for groups that are not a power of two its unpacked `_split` ones, then
//! cut each tile's keys into splits and write partial results in the decode kernel's workspace layout, which the
//! decode combine kernel merges (`decode::launch_combine`).

use std::sync::atomic::{AtomicI32, Ordering};

use super::dispatch::{packing_possible, Family, KernelSpec, KERNELS};
use crate::params::AttnParams;

/// At most this many splits of one tile.
pub const MAX_SPLITS: i32 = 32;
/// A split reads at least this many key blocks (fewer: its fixed cost, a Q load and the combine's share,
/// outweighs the keys).
const MIN_BLOCKS_PER_SPLIT: i64 = 4;
/// Tiles over fewer key blocks (4096 keys at 128 a block) run whole: at 1024 keys two splits measured 0.86–0.97×,
/// at 2048 keys four 0.80× and 1.25× in two calls (times of a few µs, host-bound), at 4096 keys eight 1.66–1.72×
/// (H200, docs/PERF.md).
const MIN_KEY_BLOCKS: i64 = 32;

/// -1 automatic, 0 never, n > 1 forced (wherever a plain Hopper problem can run a split-KV instance; at most one
/// split per key block): a test aid
/// (ffi `flashattn_ort_gpu_set_prefill_splits`).
static OVERRIDE: AtomicI32 = AtomicI32::new(-1);

pub fn set_override(n: i32) {
    OVERRIDE.store(n.max(-1), Ordering::Relaxed);
}

/// The kernel and split count for `p`, given dispatch's `chosen` kernel on a device of `num_sms` SMs: `chosen`
/// and 1 unless splitting pays (or is forced), then the Hopper kernel of the same head dim that splits — the
/// GQA-packed one where packing is possible, else the unpacked `_split` one — and the split count.
pub fn plan(p: &AttnParams, chosen: KernelSpec, num_sms: i32) -> (KernelSpec, i32) {
    let forced = OVERRIDE.load(Ordering::Relaxed);
    let plain_default = chosen.family == Family::Sm90 && chosen.plain && chosen.variant == super::dispatch::Variant::Default;
    if forced == 0 || !plain_default {
        return (chosen, 1);
    }
    let same_shape = |pack: bool| KERNELS.iter().find(|k| k.split_kv && k.pack_gqa == pack && k.dtype == chosen.dtype && k.d == chosen.d);
    let Some(kernel) = same_shape(true).filter(|k| packing_possible(p, k.bm)).or_else(|| same_shape(false)) else {
        return (chosen, 1);
    };
    let kernel = KernelSpec { plain: true, ..*kernel };
    let blocks = p.visible_key_blocks(kernel.bn as i64);
    let splits = if forced > 0 { (forced as i64).min(blocks.max(1)) as i32 } else { auto_splits(kernel.query_tiles(p), blocks, num_sms) };
    if splits >= 2 {
        (kernel, splits)
    } else {
        (chosen, 1)
    }
}

/// Splits that fill the SMs once without leaving a split fewer than MIN_BLOCKS_PER_SPLIT key blocks; 1 when
/// the tiles already fill half the SMs or see fewer than MIN_KEY_BLOCKS key blocks.
fn auto_splits(tiles: i64, key_blocks: i64, num_sms: i32) -> i32 {
    if tiles * 2 > num_sms as i64 || key_blocks < MIN_KEY_BLOCKS {
        return 1;
    }
    (num_sms as i64 / tiles.max(1)).min(key_blocks / MIN_BLOCKS_PER_SPLIT).clamp(1, MAX_SPLITS as i64) as i32
}


#[cfg(test)]
mod tests {
    use super::*;
    use crate::params::DType;

    fn chunk(batch: i32, sq: i32, skv: i32, hq: i32, hkv: i32) -> AttnParams {
        let d = 128;
        AttnParams {
            window_left: -1, window_right: 0, dtype: DType::BF16 as i32, head_dim: d, head_dim_v: d,
            q_ptr: 1 << 20, k_ptr: 2 << 20, v_ptr: 3 << 20, batch, heads_q: hq, heads_kv: hkv, seq_q: sq, seq_kv: skv,
            q_row_stride: (hq * d) as i64, q_head_stride: d as i64, q_batch_stride: (sq * hq * d) as i64,
            k_row_stride: (hkv * d) as i64, k_head_stride: d as i64, k_batch_stride: (skv * hkv * d) as i64,
            v_row_stride: (hkv * d) as i64, v_head_stride: d as i64, v_batch_stride: (skv * hkv * d) as i64,
            ..Default::default()
        }
    }

    fn pick(p: &AttnParams) -> (KernelSpec, i32) {
        let chosen = super::super::dispatch::select_forced(p, 90, 227 * 1024, &super::super::dispatch::Verdict::NotNeeded, None).unwrap();
        plan(p, chosen, 132)
    }

    #[test]
    fn short_queries_over_long_caches_split_their_keys() {
        // 17 tokens x 4 heads over 32k keys at batch 2: 16 tiles on 132 SMs
        let (k, s) = pick(&chunk(2, 17, 32768, 32, 8));
        assert!(k.pack_gqa);
        assert_eq!(s, 8);
        // MHA too (a group of one), through the packed kernel
        let (k, s) = pick(&chunk(1, 100, 16384, 32, 32));
        assert!(k.pack_gqa && s == 4, "{} {s}", k.name());
        // enough tiles already: no split
        assert_eq!(pick(&chunk(16, 128, 32768, 32, 8)).1, 1);
        // few keys: splits would read fewer than 4 blocks each
        assert_eq!(pick(&chunk(1, 40, 512, 32, 8)).1, 1);
        // long prompts fill the GPU: no split
        assert_eq!(pick(&chunk(1, 4096, 4096, 32, 8)).1, 1);
        // a group of 3 (Qwen-style 28/4 is 7): unpacked, 24 tiles of one head's 30 rows each
        let (k, s) = pick(&chunk(1, 30, 32768, 24, 8));
        assert!(!k.pack_gqa && k.split_kv && s == 5, "{} {s}", k.name());
        assert_eq!(k.name(), "flash_fwd_sm90_bf16_d128_m128n128w12_plain_split");
        // never with a mask tensor
        assert_eq!(pick(&AttnParams { mask_kind: 1, mask_ptr: 4 << 20, ..chunk(2, 17, 32768, 32, 8) }).1, 1);
    }

    #[test]
    fn splits_fill_the_sms_once() {
        assert_eq!(auto_splits(16, 256, 132), 8);
        assert_eq!(auto_splits(1, 1000, 132), MAX_SPLITS);
        assert_eq!(auto_splits(66, 1000, 132), 2);
        assert_eq!(auto_splits(67, 1000, 132), 1);
        assert_eq!(auto_splits(4, 32, 132), 8);
        assert_eq!(auto_splits(4, 31, 132), 1); // fewer than 32 key blocks: whole tiles
    }

    #[test]
    fn key_blocks_cover_the_visible_range() {
        assert_eq!(chunk(1, 17, 32768, 32, 8).visible_key_blocks(128), 256);
        assert_eq!(chunk(1, 17, 1000, 32, 8).visible_key_blocks(128), 8);
        let window = AttnParams { window_left: 300, ..chunk(1, 17, 32768, 32, 8) };
        assert_eq!(window.visible_key_blocks(128), 3); // keys 32451..32768
    }
}
