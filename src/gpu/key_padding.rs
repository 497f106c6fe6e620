//! Key-padding masks served by the plain kernels (kernels/key_padding.cuh). A mask tensor that depends on the
//! key only — an exported `attention_mask`, which the rewriter passes as a bool `[batch, 1, 1, keys]` — nearly
//! always keeps a prefix of each batch entry's keys, and is then a key length. Whether it is, is data on the
//! device; so instead of the masked Hopper kernel, a launch queues:
//! 1. the scan: per batch entry, the length (one past the last key not dropped) and whether every key below it
//!    is kept, into the workspace;
//! 2. the plain kernel with those lengths as `key_seqlens`, gated to run when every entry's mask is a prefix;
//! 3. the masked kernel as dispatch chose it, gated to run otherwise.
//!
//! The Hopper and the portable kernels check the gate, so it serves every GPU those run on.
//!
//! The closed launch's blocks return at their first instructions. Without workspace (or with the fast path
//! switched off) the masked kernel runs alone, as before.

use std::ffi::c_void;
use std::sync::atomic::{AtomicI32, Ordering};

use cudarc::driver::sys;

use super::dispatch::Family;
use super::driver::{launch_kernel, GpuError, Launch};
use super::module::{DeviceKernels, ForwardPlan};
use crate::params::{AttnParams, DType, Gate, MaskKind};

pub const KERNEL_NAMES: [&str; 3] = ["flash_key_padding_scan_bool", "flash_key_padding_scan_f16", "flash_key_padding_scan_bf16"];
const SCAN_THREADS: u32 = 512;
/// The split partials (if any) start this far into the workspace.
const ALIGN: usize = 256;

/// -1 automatic (problems of at least [`MIN_WORK`]), 0 never (the masked kernel alone), 1 wherever it applies: a
/// benchmarking and test aid (ffi `flashattn_ort_gpu_set_key_padding`).
static MODE: AtomicI32 = AtomicI32::new(-1);

pub fn set_mode(mode: i32) {
    MODE.store(mode.clamp(-1, 1), Ordering::Relaxed);
}

/// Multiply-adds of QKᵀ (half under causal bounds) below which the masked kernel runs alone: there the scan and
/// the second launch cost what the plain kernel saves. H200, 2026-12-01 (docs/PERF.md): 2^30 (GQA 16/4 at 1k keys,
/// causal) ran 0.98–0.99× with kept prefixes and 0.81× with holes; 2^32 (the same at 2k, and batch 4 MHA at 1k)
/// 1.19–1.44× and 0.86–0.93×.
const MIN_WORK: f64 = (1u64 << 31) as f64;

/// [`MIN_WORK`]'s measure of `p`.
fn work(p: &AttnParams) -> f64 {
    let full = p.batch as f64 * p.heads_q as f64 * p.seq_q as f64 * p.seq_kv as f64 * p.head_dim as f64;
    if p.window_right >= 0 {
        full / 2.0
    } else {
        full
    }
}

/// The two gated forward launches of a key-padding problem.
#[derive(Debug, Clone, Copy)]
pub struct KeyPaddingPlan {
    /// The problem without its mask, key lengths from the scan (addresses filled in at launch).
    plain_params: AttnParams,
    pub plain: ForwardPlan,
    pub masked: ForwardPlan,
}

/// Whether `p`'s mask depends on the key only and nothing else asks for key lengths: what the scan can turn
/// into lengths.
pub fn is_key_padding(p: &AttnParams) -> bool {
    p.mask_kind() != MaskKind::None && p.mask_head_stride == 0 && p.mask_row_stride == 0 && p.has_seqlens == 0 && p.softcap <= 0.0
}

/// Whether a forward kernel of `family` checks the gate (the Hopper and portable ones; the Blackwell kernel
/// serves neither launch: it takes no mask tensor and no key lengths).
fn honours_gate(family: Family) -> bool {
    matches!(family, Family::Sm90 | Family::Sm80)
}

/// `p` without its mask, with per-entry key lengths instead (their address is the workspace's, set at launch).
fn plain_problem(p: &AttnParams) -> AttnParams {
    AttnParams {
        mask_kind: MaskKind::None as i32,
        mask_ptr: 0,
        mask_batch_stride: 0,
        mask_head_stride: 0,
        mask_row_stride: 0,
        mask_col_stride: 0,
        has_seqlens: 1,
        seqlens_ptr: 0,
        seqlens_offset: 0,
        diag_per_batch: 0,
        ..*p
    }
}

/// The plan for `p` on these kernels, where a plain kernel would serve `p` without its mask.
pub fn plan(p: &AttnParams, kernels: &DeviceKernels, masked: ForwardPlan) -> Result<Option<KeyPaddingPlan>, GpuError> {
    let mode = MODE.load(Ordering::Relaxed);
    if mode == 0 || (mode < 0 && work(p) < MIN_WORK) || !is_key_padding(p) || !honours_gate(masked.spec.family) {
        return Ok(None);
    }
    let plain_params = plain_problem(p);
    let plain = kernels.forward_kernel(&plain_params)?;
    if !honours_gate(plain.spec.family) || !plain.spec.plain {
        return Ok(None);
    }
    Ok(Some(KeyPaddingPlan { plain_params, plain, masked }))
}

impl KeyPaddingPlan {
    /// Bytes of the lengths and verdicts (int32 [batch] each), aligned for the split partials after them.
    fn scan_bytes(&self) -> usize {
        (2 * 4 * self.plain_params.batch.max(0) as usize).div_ceil(ALIGN) * ALIGN
    }

    /// Workspace of the fast path: the scan's results, then the plain launch's split partials.
    pub fn workspace_bytes(&self) -> usize {
        self.scan_bytes() + self.plain.workspace_bytes(&self.plain_params).max(self.masked.workspace_bytes(&self.plain_params))
    }

    /// Where the scan leaves its results in workspace `ws`: the lengths, then the verdicts (int32 [batch] each).
    fn scan_outputs(p: &AttnParams, ws: u64) -> (u64, u64) {
        (ws, ws + 4 * p.batch as u64)
    }

    /// The plain and masked problems gated on the scan's results in `ws` (`p`: the masked problem as the caller
    /// has it, addresses inside), and where their split partials go.
    pub fn gated(&self, p: &AttnParams, ws: u64) -> (AttnParams, AttnParams, u64) {
        let (lens, prefix) = Self::scan_outputs(p, ws);
        let plain = AttnParams {
            seqlens_ptr: lens,
            gate_ptr: prefix,
            gate: Gate::AllPrefix as i64,
            q_ptr: p.q_ptr,
            k_ptr: p.k_ptr,
            v_ptr: p.v_ptr,
            out_ptr: p.out_ptr,
            lse_ptr: p.lse_ptr,
            ..self.plain_params
        };
        let masked = AttnParams { gate_ptr: prefix, gate: Gate::SomeNotPrefix as i64, ..*p };
        (plain, masked, ws + self.scan_bytes() as u64)
    }

    /// Queues the scan of `p`'s mask into `ws` (the caller has made the stream's context current).
    pub fn launch_scan(&self, p: &AttnParams, ws: u64, kernels: &DeviceKernels, stream: sys::CUstream) -> Result<(), GpuError> {
        let name = match (p.mask_kind(), p.dtype) {
            (MaskKind::Bool, _) => KERNEL_NAMES[0],
            (_, d) if d == DType::F16 as i32 => KERNEL_NAMES[1],
            (_, d) if d == DType::BF16 as i32 => KERNEL_NAMES[2],
            _ => return Err(GpuError::new("the key-padding scan serves bool, float16 and bfloat16 masks")),
        };
        let f = kernels.named(name)?;
        let (mut lens, mut prefix) = Self::scan_outputs(p, ws);
        let mut arg = *p;
        let mut args: [*mut c_void; 3] = [(&mut arg as *mut AttnParams).cast(), (&mut lens as *mut u64).cast(), (&mut prefix as *mut u64).cast()];
        let l = Launch { grid: (p.batch as u32, 1, 1), threads: SCAN_THREADS, smem: 0, args: &mut args, cluster_x: 0 };
        launch_kernel(f, l, stream, false, &|| format!("launching {name}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_masks_over_keys_alone_are_key_padding() {
        let p = AttnParams { mask_kind: MaskKind::Bool as i32, mask_batch_stride: 512, mask_col_stride: 1, ..Default::default() };
        assert!(is_key_padding(&p));
        assert!(is_key_padding(&AttnParams { mask_batch_stride: 0, ..p })); // one row for every entry
        assert!(!is_key_padding(&AttnParams { mask_row_stride: 512, ..p })); // per query row
        assert!(!is_key_padding(&AttnParams { mask_head_stride: 512, ..p })); // per head
        assert!(!is_key_padding(&AttnParams { has_seqlens: 1, ..p })); // key lengths given as well
        assert!(!is_key_padding(&AttnParams { softcap: 30.0, ..p })); // no plain kernel for softcap
        assert!(!is_key_padding(&AttnParams { mask_kind: 0, ..p }));
    }

    #[test]
    fn gated_launches_read_the_scan_and_keep_the_callers_addresses() {
        let spec = super::super::dispatch::KERNELS.iter().copied().find(|k| k.family == Family::Sm90 && k.d == 128).unwrap();
        let fwd = ForwardPlan { spec, resident: 132, splits: 1 };
        let p = AttnParams {
            batch: 3, heads_q: 8, heads_kv: 2, seq_q: 700, seq_kv: 1500, head_dim: 128, head_dim_v: 128, window_left: -1, window_right: 0,
            mask_kind: MaskKind::Bool as i32, mask_ptr: 0x5000, mask_batch_stride: 1500, mask_col_stride: 1,
            q_ptr: 0x1000, k_ptr: 0x2000, v_ptr: 0x3000, out_ptr: 0x4000, ..Default::default()
        };
        let plan = KeyPaddingPlan { plain_params: plain_problem(&p), plain: fwd, masked: fwd };
        let rotated = AttnParams { q_ptr: 0x9000, ..p }; // the caller may point the query elsewhere after planning
        let (plain, masked, rest) = plan.gated(&rotated, 0x10000);
        // the plain launch: no mask, the scan's lengths (at the workspace's start), gated on its verdicts (after them)
        assert_eq!((plain.mask_kind, plain.mask_ptr, plain.mask_col_stride), (0, 0, 0));
        assert_eq!((plain.has_seqlens, plain.seqlens_ptr, plain.seqlens_offset, plain.diag_per_batch), (1, 0x10000, 0, 0));
        assert_eq!((plain.gate_ptr, plain.gate), (0x10000 + 12, Gate::AllPrefix as i64));
        assert_eq!((plain.q_ptr, plain.k_ptr, plain.out_ptr, plain.window_right), (0x9000, 0x2000, 0x4000, 0));
        // the masked launch: the caller's problem, gated the other way
        assert_eq!((masked.mask_ptr, masked.has_seqlens, masked.q_ptr), (0x5000, 0, 0x9000));
        assert_eq!((masked.gate_ptr, masked.gate), (0x10000 + 12, Gate::SomeNotPrefix as i64));
        // 24 bytes of lengths and verdicts, then (aligned) the split partials, none here
        assert_eq!((rest, plan.workspace_bytes()), (0x10000 + 256, 256));
    }

    #[test]
    fn small_problems_keep_the_masked_kernel_alone() {
        let gqa = |seq: i32, batch: i32, heads_q: i32| AttnParams { batch, heads_q, seq_q: seq, seq_kv: seq, head_dim: 128, window_left: -1, window_right: 0, ..Default::default() };
        assert!(work(&gqa(1024, 1, 16)) < MIN_WORK);
        assert!(work(&gqa(2048, 1, 16)) >= MIN_WORK);
        assert!(work(&gqa(1024, 4, 16)) >= MIN_WORK);
    }
}
