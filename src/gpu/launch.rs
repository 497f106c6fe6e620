//! Launching the forward kernel on a caller's stream (ONNX Runtime's compute stream, or PyTorch's in the
//! test script): no allocation, no host synchronisation, so it can be captured into a CUDA graph.

use std::ffi::c_void;
use std::sync::atomic::{AtomicI32, Ordering};

use cudarc::driver::sys;

use super::decode::{self, Workspace};
use super::dispatch::{Family, KernelSpec};
use super::key_padding::{self, KeyPaddingPlan};
use super::driver::{self, CurrentContext, GpuError};
use super::module;
use super::tensor_map::Operand;
use crate::params::{AttnParams, KvAppendParams};

/// How the Hopper kernel's blocks take their tiles: -1 = by problem ([`persistent`]), 0 = one block per
/// tile (the hardware hands tiles out as blocks finish), 1 = persistent (one block per SM walking a fixed
/// share). A benchmarking aid (ffi `flashattn_ort_gpu_set_persistent`).
static GRID_MODE: AtomicI32 = AtomicI32::new(-1);

pub fn set_grid_mode(mode: i32) {
    GRID_MODE.store(mode.clamp(-1, 1), Ordering::Relaxed);
}

/// Up to this many keys persistent blocks also serve causal / right-bounded problems: their tiles are short,
/// and a block per tile pays its start-up per tile (H200, 2026-11-30, docs/PERF.md: +6 to +36% at 512-4096
/// keys over d64-d256, one row -3%; at 8192 keys -16 to +3%, at 16384 -13 to -32%).
pub const PERSISTENT_BOUNDED_MAX_KEYS: i32 = 4096;

/// Whether the Hopper kernel runs persistent blocks for `p`. With causal or right-bounded windows over many
/// keys tiles differ much in work, and the hardware handing out one-tile blocks as others finish balances
/// that better than a fixed share.
pub fn persistent(p: &AttnParams) -> bool {
    match GRID_MODE.load(Ordering::Relaxed) {
        0 => false,
        1 => true,
        _ => p.window_right < 0 || p.seq_kv <= PERSISTENT_BOUNDED_MAX_KEYS,
    }
}

/// Grid of a launch (kernels/tile_scheduler.cuh): the portable kernel runs one block per tile (x = query
/// blocks, y = query heads, z = batch); the Hopper kernel walks a linear tile order, with one block per tile
/// or persistent blocks (at most `resident` at once: one per SM, or what the device holds of its clusters)
/// that take several, a cluster of blocks taking `cluster` neighbouring tiles at a time; the Blackwell kernel
/// runs one block per tile of that linear order.
pub fn grid(k: &KernelSpec, p: &AttnParams, resident: i32, splits: i32) -> Result<(u32, u32, u32), GpuError> {
    let gx = (p.seq_q as i64 + k.bm as i64 - 1) / k.bm as i64;
    if k.pack_gqa {
        // tiles of packed rows (kernels/gqa_pack.cuh), each `splits` times
        let tiles = k.query_tiles(p) * splits.max(1) as i64;
        if tiles > i32::MAX as i64 {
            return Err(GpuError::new(format!("{tiles} tiles of packed query rows exceed the kernel's 2^31 limit")));
        }
        let blocks = if persistent(p) { tiles.min(resident.max(1) as i64) } else { tiles };
        return Ok((blocks as u32, 1, 1));
    }
    if p.heads_q > 65535 || p.batch > 65535 {
        return Err(GpuError::new(format!("batch {} and query heads {} must each be at most 65535 on the GPU", p.batch, p.heads_q)));
    }
    match k.family {
        Family::Sm80 => Ok((gx as u32, p.heads_q as u32, p.batch as u32)),
        Family::Sm90 | Family::Sm100 => {
            let tiles = gx * p.heads_q as i64 * p.batch as i64;
            if tiles > i32::MAX as i64 {
                return Err(GpuError::new(format!("{tiles} tiles of 128 query rows exceed the kernel's 2^31 limit")));
            }
            let cluster = k.cluster.max(1) as i64;
            let units = (gx + cluster - 1) / cluster * p.heads_q as i64 * p.batch as i64 * splits.max(1) as i64;
            let units = if k.family == Family::Sm90 && persistent(p) { units.min((resident as i64 / cluster).max(1)) } else { units };
            if units * cluster > i32::MAX as i64 {
                return Err(GpuError::new(format!("{} blocks exceed the kernel's 2^31 limit", units * cluster)));
            }
            Ok(((units * cluster) as u32, 1, 1))
        }
    }
}

fn check_dims(p: &AttnParams) -> Result<(), GpuError> {
    let dims = [("batch", p.batch), ("query heads", p.heads_q), ("key/value heads", p.heads_kv), ("query length", p.seq_q), ("key length", p.seq_kv), ("head_dim", p.head_dim), ("value head_dim", p.head_dim_v)];
    match dims.iter().find(|(_, n)| *n < 0) {
        Some((what, n)) => Err(GpuError::new(format!("{what} {n} is negative"))),
        None => Ok(()),
    }
}

fn check_params(p: &AttnParams) -> Result<(), GpuError> {
    if p.q_ptr == 0 || p.k_ptr == 0 || p.v_ptr == 0 || p.out_ptr == 0 {
        return Err(GpuError::new("query, key, value and output must have device addresses"));
    }
    if p.mask_kind != 0 && p.mask_ptr == 0 {
        return Err(GpuError::new("input 'attn_mask' is declared but has no device address"));
    }
    if p.has_seqlens != 0 && p.seqlens_ptr == 0 {
        return Err(GpuError::new("input 'key_seqlens' is declared but has no device address"));
    }
    if p.heads_kv <= 0 || p.heads_q % p.heads_kv != 0 {
        return Err(GpuError::new(format!("query heads {} must be a multiple of key/value heads {}", p.heads_q, p.heads_kv)));
    }
    Ok(())
}

/// Runs FlashAttention forward for `p` (device addresses inside) on `stream` (a `CUstream` /
/// `cudaStream_t`; null = the legacy default stream of the current context). Returns once the kernel is
/// queued. Without a workspace, decode-shaped problems run unsplit (see [`launch_with_workspace`]).
pub fn launch(p: &AttnParams, stream: *mut c_void) -> Result<(), GpuError> {
    launch_with_workspace(p, stream, Workspace::default())
}

/// [`launch`] with device scratch memory the split-KV decode kernel may use (its size from
/// [`Prepared::workspace_bytes`]; a smaller one means fewer splits). The workspace must stay untouched until
/// the kernels queued on `stream` have run.
pub fn launch_with_workspace(p: &AttnParams, stream: *mut c_void, ws: Workspace) -> Result<(), GpuError> {
    prepare(p, stream)?.map_or(Ok(()), |prepared| prepared.launch(ws))
}

/// A launch of a problem on a stream, looked up once: the stream's context, the device's kernels and, where
/// the split-KV decode kernel serves the problem, its plan for a full workspace. The CUDA op sizes the
/// workspace from it and then launches it, instead of looking all of it up twice per call.
pub struct Prepared {
    p: AttnParams,
    stream: sys::CUstream,
    ctx: sys::CUcontext,
    kernels: &'static module::DeviceKernels,
    decode: Option<decode::DecodePlan>,
    /// The prefill kernel's plan, where the decode kernel does not serve.
    forward: Option<module::ForwardPlan>,
    /// Where `p`'s mask is a key-padding mask: the plain kernel gated on the mask's scan (key_padding.rs).
    key_padding: Option<KeyPaddingPlan>,
    append: Option<KvAppendParams>,
}

/// Prepares a launch of `p` on `stream` (a `CUstream` / `cudaStream_t`; null = the legacy default stream of
/// the current context); None when there is nothing to compute (an empty dimension).
pub fn prepare(p: &AttnParams, stream: *mut c_void) -> Result<Option<Prepared>, GpuError> {
    driver::available()?;
    check_dims(p)?;
    if p.batch == 0 || p.seq_q == 0 || p.heads_q == 0 {
        return Ok(None); // nothing to compute, nothing to write (empty tensors may have no address)
    }
    check_params(p)?;
    let stream = stream as sys::CUstream;
    let (ctx, kernels) = module::stream_kernels(stream)?;
    let decode = decode::plan(p, kernels.into(), usize::MAX)?;
    let forward = if decode.is_none() { Some(kernels.forward_kernel(p)?) } else { None };
    let key_padding = match forward {
        Some(masked) => key_padding::plan(p, kernels, masked)?,
        None => None,
    };
    Ok(Some(Prepared { p: *p, stream, ctx, kernels, decode, forward, key_padding, append: None }))
}

impl Prepared {
    /// Device bytes of workspace the launch would use (0: none).
    pub fn workspace_bytes(&self) -> usize {
        match (&self.decode, &self.forward) {
            (Some(plan), _) => plan.workspace_bytes,
            (None, Some(plan)) => self.key_padding.map_or_else(|| plan.workspace_bytes(&self.p), |k| k.workspace_bytes()),
            (None, None) => 0,
        }
    }

    /// The stream's device ordinal (where the workspace must be allocated).
    pub fn device(&self) -> i32 {
        self.kernels.ordinal
    }

    /// Hands the KV append step `kp` (present's device addresses filled in) to the split-KV decode kernel, which
    /// then appends the new rows and rotates the query itself instead of a separate kernel running first: when
    /// that kernel serves the problem and nothing needs copying (shared-buffer mode, or no past). False: the
    /// caller launches the append step ([`super::kv_append::launch_append`]) first.
    pub fn fuse_append(&mut self, kp: &KvAppendParams) -> bool {
        let no_copy = kp.past_k_ptr == 0 && kp.past_v_ptr == 0;
        let reads_present = self.p.k_ptr == kp.present_k_ptr && self.p.v_ptr == kp.present_v_ptr;
        let grouped = self.decode.is_some_and(|plan| plan.row_groups > 1);
        if self.decode.is_none() || grouped || !no_copy || !reads_present || kp.present_k_ptr == 0 || kp.new_k_ptr == 0 {
            return false;
        }
        if kp.rotary_dim > 0 && (kp.cos_ptr == 0 || kp.sin_ptr == 0) {
            return false; // launch_append reports it
        }
        self.append = Some(*kp);
        true
    }

    /// Points the launch at another query buffer (the rotated copy the append step writes).
    pub fn set_query(&mut self, q_ptr: u64) {
        self.p.q_ptr = q_ptr;
    }

    /// Queues the kernels with workspace `ws`. Returns once they are queued.
    pub fn launch(&self, ws: Workspace) -> Result<(), GpuError> {
        let (p, stream) = (&self.p, self.stream);
        if let Some(full) = self.decode {
            // A smaller workspace than asked for: plan again for the splits it holds.
            let plan = if ws.bytes >= full.workspace_bytes { Some(full) } else { decode::plan(p, self.kernels.into(), ws.bytes)? };
            if let Some(plan) = plan {
                let _cur = CurrentContext::push(self.ctx)?;
                return decode::launch(&plan, p, self.append.as_ref(), self.kernels, ws, stream);
            }
        }
        if self.append.is_some() {
            return Err(GpuError::new("internal: the KV append was handed to a decode launch that did not run"));
        }
        let _cur = CurrentContext::push(self.ctx)?;
        if let Some(kp) = self.key_padding.filter(|k| ws.holds(k.workspace_bytes())) {
            kp.launch_scan(p, ws.ptr, self.kernels, stream)?;
            let (plain, masked, rest) = kp.gated(p, ws.ptr);
            let rest = Workspace { ptr: rest, bytes: ws.bytes - (rest - ws.ptr) as usize };
            self.launch_forward(&kp.plain, &plain, rest)?;
            return self.launch_forward(&kp.masked, &masked, rest);
        }
        let plan = match self.forward {
            Some(plan) => plan,
            None => self.kernels.forward_kernel(p)?,
        };
        self.launch_forward(&plan, p, ws)
    }

    /// What the launch runs, for test and benchmark tables: the decode kernel with its splits (row groups,
    /// clusters), or the prefill kernel with its splits, and beside it for a key-padding mask the gated plain
    /// launch (`… | key padding: …`).
    pub fn describe(&self) -> Result<String, GpuError> {
        if let Some(plan) = self.decode {
            let groups = if plan.row_groups > 1 { format!(" in {} row groups", plan.row_groups) } else { String::new() };
            return Ok(match decode::resident_clusters(&plan, &self.p, self.kernels)? {
                Some((resident, launched)) => format!("{} x{} splits{groups}, {launched} clusters ({resident} resident)", plan.spec.name(), plan.splits),
                None => format!("{} x{} splits{groups}", plan.spec.name(), plan.splits),
            });
        }
        let name = |plan: &module::ForwardPlan| if plan.splits > 1 { format!("{} x{} splits", plan.spec.name(), plan.splits) } else { plan.spec.name() };
        let Some(forward) = self.forward else {
            return Err(GpuError::new("internal: a prepared launch with neither a decode nor a forward plan"));
        };
        Ok(match &self.key_padding {
            Some(kp) => format!("{} | key padding: {}", name(&forward), name(&kp.plain)),
            None => name(&forward),
        })
    }

    /// Queues forward plan `plan` for `p` (the caller has made the stream's context current), with its split
    /// partial results in `ws`; with less workspace than they ask for the tiles run whole.
    fn launch_forward(&self, plan: &module::ForwardPlan, p: &AttnParams, ws: Workspace) -> Result<(), GpuError> {
        let (bytes, lse_off) = decode::workspace_layout(p, plan.splits);
        let split = if plan.splits > 1 && ws.holds(bytes) {
            SplitLaunch { o_part: ws.ptr, lse_part: ws.ptr + lse_off as u64, splits: plan.splits }
        } else {
            SplitLaunch::NONE
        };
        let f = self.kernels.function(&plan.spec)?;
        launch_function(f, &plan.spec, p, self.stream, plan.resident, split)?;
        if split.splits > 1 {
            decode::launch_combine(p, split.splits, split.o_part, split.lse_part, self.kernels, self.stream)?;
        }
        Ok(())
    }
}

/// Where a split-KV Hopper launch (the `_packgqa` and `_split` instances) leaves its partial results
/// (kernels/epilogue.cuh SplitParts): workspace addresses and the split count (1: none, the kernel writes the
/// outputs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SplitLaunch {
    pub o_part: u64,
    pub lse_part: u64,
    pub splits: i32,
}

impl SplitLaunch {
    pub const NONE: SplitLaunch = SplitLaunch { o_part: 0, lse_part: 0, splits: 1 };
}

/// Queues kernel `f` with the geometry and parameters of `spec` (its grid, block, shared memory, and for the
/// TMA families the Q/K/V tensor maps) on `stream` of the current context; `resident`: how many of its blocks
/// the device runs at once (see [`grid`]); `split`: the split-KV instances' extra parameters.
/// The self-check launches its candidates through here too, so a broken stand-in gets exactly the launch the
/// real kernel would.
pub fn launch_function(f: sys::CUfunction, spec: &KernelSpec, p: &AttnParams, stream: sys::CUstream, resident: i32, split: SplitLaunch) -> Result<(), GpuError> {
    let (gx, gy, gz) = grid(spec, p, resident, split.splits)?;
    let mut arg = *p;
    let launch = |args: &mut [*mut c_void]| {
        let l = driver::Launch { grid: (gx, gy, gz), threads: spec.threads(), smem: spec.smem_bytes(), args, cluster_x: spec.cluster.max(1) as u32 };
        // The Hopper kernel waits for the kernel before it in-kernel (dependent_wait), so it may be launched while
        // that one finishes: its launch latency and start-up then overlap the other's tail.
        driver::launch_kernel(f, l, stream, spec.family == Family::Sm90, &|| format!("launching {}", spec.name()))
    };
    match spec.family {
        Family::Sm80 => launch(&mut [(&mut arg as *mut AttnParams).cast()]),
        Family::Sm90 | Family::Sm100 => {
            let cols = spec.panel_cols();
            let q = if spec.pack_gqa { Operand::packed_query(p) } else { Operand::query(p) };
            let mut tq = q.encode(p.dtype, cols, spec.bm as u32)?;
            let mut tk = Operand::key(p).encode(p.dtype, cols, spec.bn as u32)?;
            let mut tv = Operand::value(p).encode(p.dtype, cols, spec.bn as u32)?;
            let maps: [*mut c_void; 4] = [(&mut arg as *mut AttnParams).cast(), (&mut tq as *mut sys::CUtensorMap).cast(), (&mut tk as *mut sys::CUtensorMap).cast(), (&mut tv as *mut sys::CUtensorMap).cast()];
            if spec.split_kv {
                let (mut o_part, mut lse_part, mut splits) = (split.o_part, split.lse_part, split.splits);
                let extra: [*mut c_void; 3] = [(&mut o_part as *mut u64).cast(), (&mut lse_part as *mut u64).cast(), (&mut splits as *mut i32).cast()];
                launch(&mut [maps[0], maps[1], maps[2], maps[3], extra[0], extra[1], extra[2]])
            } else if spec.family == Family::Sm90 {
                // The output's map, for the instances that store O with TMA (KernelSpec::stages_o); a zeroed
                // map and o_tma = 0 keep the direct stores (the map is not read then).
                let out = Operand::output(p);
                let o_tma = spec.stages_o() && out.tma_compatible();
                let mut to = if o_tma { out.encode(p.dtype, cols, 64)? } else { sys::CUtensorMap { opaque: [0; 16] } };
                let mut o_tma = o_tma as i32;
                launch(&mut [maps[0], maps[1], maps[2], maps[3], (&mut to as *mut sys::CUtensorMap).cast(), (&mut o_tma as *mut i32).cast()])
            } else {
                launch(&mut { maps })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn causal_blocks_are_persistent_up_to_4096_keys() {
        let p = AttnParams { window_left: -1, window_right: 0, seq_q: 4096, seq_kv: 4096, ..Default::default() };
        assert!(persistent(&p));
        assert!(!persistent(&AttnParams { seq_kv: 4097, ..p }));
        assert!(persistent(&AttnParams { seq_kv: 100_000, window_right: -1, ..p }));
    }

    #[test]
    fn clusters_take_pairs_of_query_tiles() {
        let spec = super::super::dispatch::KERNELS.iter().copied().find(|k| k.cluster == 2 && k.d == 128 && k.bn == 128).unwrap();
        let single = KernelSpec { cluster: 1, ..spec };
        // 9 query tiles of 128 rows per head: 5 pairs, the last one's second block without rows
        let p = AttnParams { window_left: -1, window_right: -1, batch: 2, heads_q: 3, seq_q: 1100, seq_kv: 1100, ..Default::default() };
        assert_eq!(grid(&single, &p, 132, 1).unwrap(), (54, 1, 1));
        assert_eq!(grid(&spec, &p, 132, 1).unwrap(), (60, 1, 1));
        // persistent: as many pairs as the device holds at once, whole clusters
        let big = AttnParams { batch: 8, heads_q: 32, ..p };
        assert_eq!(grid(&spec, &big, 130, 1).unwrap(), (130, 1, 1));
        assert_eq!(grid(&spec, &big, 131, 1).unwrap(), (130, 1, 1));
        assert_eq!(grid(&single, &big, 131, 1).unwrap(), (131, 1, 1));
    }

    #[test]
    fn refuses_negative_dimensions() {
        let ok = AttnParams { batch: 1, heads_q: 4, heads_kv: 2, seq_q: 0, seq_kv: 8, head_dim: 64, head_dim_v: 64, ..Default::default() };
        assert!(check_dims(&ok).is_ok());
        let bad = AttnParams { seq_q: -300, ..ok };
        assert!(check_dims(&bad).unwrap_err().to_string().ends_with("query length -300 is negative"));
        let bad = AttnParams { head_dim_v: -1, ..ok };
        assert!(check_dims(&bad).unwrap_err().to_string().contains("value head_dim -1"));
    }
}
