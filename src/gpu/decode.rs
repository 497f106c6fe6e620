//! Split-KV decode (FlashDecoding, kernels/decode_splitkv.cuh + decode_combine.cuh): when it serves a
//! problem, how many key splits, the workspace the splits need, and the launches.
//!
//! It serves problems with few query rows per KV head (seq_q * heads_q/heads_kv <= 64: decode steps,
//! speculative/multi-token decode): all query heads of a GQA group are packed into one tile's rows, so every
//! K/V tile is read once per KV head, and the keys are split across blocks so that a batch with few KV heads
//! still streams the cache on every SM. With more than one split each split writes normalised partial O
//! (f32) and lse into a caller-provided device workspace and a combine kernel merges them; one split writes
//! the outputs directly and needs no workspace. On Hopper and newer, up to 16 splits may instead be the blocks
//! of one thread-block cluster that merge their rows through distributed shared memory
//! (kernels/decode_cluster.cuh): no workspace, no combine launch. No allocation and no host synchronisation
//! here.

use std::ffi::c_void;
use std::sync::atomic::{AtomicI32, Ordering};

use cudarc::driver::sys;

use super::driver::{launch_kernel, GpuError, Launch};
use super::module::DeviceKernels;
use crate::params::{AttnParams, DType, KvAppendParams};

/// Keys per pipeline stage (DecodeConfig::BN).
pub const BLOCK_KEYS: i64 = 64;
/// Most packed rows (query tokens x heads of a group) one block holds.
pub const MAX_ROWS: i32 = 64;
/// Most key splits: past this the combine step costs more than the extra blocks gain (H200, MQA batch 1 at
/// 32k keys: 17.2 µs with 128 splits, 21.1 µs with 256; docs/PERF.md).
pub const MAX_SPLITS: i32 = 128;
/// Splits of more than 16 packed rows (MQA-like groups) read at least two key tiles each unless that leaves
/// fewer than this many: one-tile splits of many rows write more partials than their extra blocks gain (H200,
/// MQA at 8k keys: 64 two-tile splits 1.14x / 1.34x the time of 128 / 256 one-tile ones at batch 1 / 2, while
/// 64 one-tile splits stay the best at 4k; docs/PERF.md).
const MANY_ROWS_MIN_SPLITS: i64 = 64;
/// Cluster sizes whose residency the plan knows (ClusterResidency); 16 needs the driver's non-portable sizes.
pub const CLUSTER_SIZES: [i32; 4] = [2, 4, 8, 16];
pub const THREADS: u32 = 128;
/// Threads of a combine kernel block (kCombineThreads) and the splits each of its threads loads at once
/// (kCombineBatch).
const COMBINE_THREADS: u32 = 256;
const COMBINE_BATCH: u32 = 8;
const PADDED_DIMS: [i32; 3] = [64, 128, 256];
/// Padded head dims with cluster entries (d 256's rows do not fit beside its merge buffer).
const CLUSTER_DIMS: [i32; 2] = [64, 128];
/// The automatic plan merges in a cluster when each split then reads at most this many key tiles: short caches,
/// where the step is latency-bound and the combine launch is a large share of it. Longer splits lose more to
/// the fewer blocks streaming the cache than the combine costs (H200 sweep, docs/PERF.md).
const CLUSTER_MAX_TILES_PER_SPLIT: i64 = 2;
/// ... or at most this many, when the clusters still hold CLUSTER_MANY_BLOCKS blocks in all: with that many
/// blocks streaming, a smaller cluster's cheaper merge gains more than its longer splits cost (H200: clusters of
/// 8 ran 1.06x / 1.15x the speed of clusters of 16 at batch-1 GQA / batch-8 MQA with 2k keys; batch-1 MQA, with
/// 8-16 blocks, keeps 16).
const CLUSTER_MANY_BLOCKS_MAX_TILES_PER_SPLIT: i64 = 4;
const CLUSTER_MANY_BLOCKS: i64 = 64;
/// A plan of 2-4 splits (batches that nearly fill the GPU) merges in clusters of 2 instead, when its splits then
/// read at most this many key tiles: the combine launch and the workspace round trip cost more than the halved
/// block count (H200, batch 8 / 16 GQA and batch 64 MQA at 2k-4k keys: 1.07-1.14x). At 8k keys (64 tiles a
/// split) it measured 0.91-1.06x, so longer splits keep the combine (docs/PERF.md).
const CLUSTER_PAIR_MAX_TILES_PER_SPLIT: i64 = 32;
const PADDED_ROWS: [i32; 3] = [16, 32, 64];
/// The lse part of the workspace starts at this alignment after the O part.
const WORKSPACE_ALIGN: usize = 256;

/// One compiled decode kernel: element type, padded head dim, packed rows, and whether its splits merge in a
/// thread-block cluster (else through the workspace and the combine kernel).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DecodeSpec {
    pub dtype: DType,
    pub d: i32,
    pub rows: i32,
    pub cluster: bool,
}

fn type_tag(dtype: DType) -> &'static str {
    match dtype {
        DType::F16 => "f16",
        DType::BF16 => "bf16",
        DType::F32 => "f32",
    }
}

impl DecodeSpec {
    pub fn name(&self) -> String {
        let family = if self.cluster { "cluster" } else { "sm80" };
        format!("flash_decode_{family}_{}_d{}_r{}", type_tag(self.dtype), self.d, self.rows)
    }
    /// The entry that also does the KV append step (kernels/decode_splitkv.cuh APPEND).
    pub fn append_name(&self) -> String {
        format!("{}_append", self.name())
    }
    pub fn combine_name(&self) -> String {
        combine_name(self.dtype)
    }
    /// kernels/decode_config.cuh: 3 stages up to d 128, 2 at d 256.
    pub fn stages(&self) -> i32 {
        if self.d <= 128 {
            3
        } else {
            2
        }
    }
    /// Dynamic shared memory: packed Q tile + STAGES K and V tiles, 2-byte elements (DecodeConfig::SMEM_BYTES).
    pub fn smem_bytes(&self) -> u32 {
        ((self.rows + 2 * self.stages() * BLOCK_KEYS as i32) * self.d * 2) as u32
    }
}

fn combine_name(dtype: DType) -> String {
    format!("flash_decode_combine_{}", type_tag(dtype))
}

/// Every decode entry point of the fatbin with its dynamic shared memory (kernels/flash_decode_sm80.cu).
pub fn entry_points() -> Vec<(String, u32)> {
    let mut v = Vec::new();
    for dtype in [DType::F16, DType::BF16] {
        for cluster in [false, true] {
            for d in PADDED_DIMS.into_iter().filter(|d| !cluster || CLUSTER_DIMS.contains(d)) {
                for rows in PADDED_ROWS {
                    let s = DecodeSpec { dtype, d, rows, cluster };
                    v.push((s.name(), s.smem_bytes()));
                    v.push((s.append_name(), s.smem_bytes()));
                }
            }
        }
        v.push((combine_name(dtype), 0));
    }
    v
}

/// Whether `name` is one of the cluster entries (launched with a cluster dimension).
pub fn is_cluster_entry(name: &str) -> bool {
    name.starts_with("flash_decode_cluster_")
}

/// -1: automatic; 0: decode kernel off (the prefill kernel serves everything); n >= 1: exactly n splits
/// (capped at the key tiles) wherever the decode kernel applies. A test/benchmark aid (ffi).
static SPLITS_OVERRIDE: AtomicI32 = AtomicI32::new(-1);

pub fn set_splits_override(n: i32) {
    SPLITS_OVERRIDE.store(n.max(-1), Ordering::Relaxed);
}

/// How splits merge where clusters are available. -1: automatic (the rule in `plan`); 0: never in a cluster
/// (workspace and combine kernel); 1: in a cluster whenever the split count fits one, automatic split counts
/// capped at the device's largest cluster. A test/benchmark aid (ffi).
static CLUSTER_OVERRIDE: AtomicI32 = AtomicI32::new(-1);

pub fn set_cluster_override(mode: i32) {
    CLUSTER_OVERRIDE.store(mode.clamp(-1, 1), Ordering::Relaxed);
}

/// Into how many row groups a single KV head's packed rows are cut, each group its own blocks (see
/// [`grouped`]). -1: automatic ([`row_groups_for`]); 0 or 1: one group; n: n groups wherever that is
/// possible. A test/benchmark aid (ffi).
static ROW_GROUPS_OVERRIDE: AtomicI32 = AtomicI32::new(-1);

pub fn set_row_groups_override(n: i32) {
    ROW_GROUPS_OVERRIDE.store(n.max(-1), Ordering::Relaxed);
}

/// `p` with its one KV head's query heads cut into `groups` groups, as if there were `groups` KV heads that
/// all read the same keys and values (head stride 0): each block then holds a group's rows, so an MQA step
/// with few blocks runs more, shorter ones (K/V tiles are read once per group, from L2 after the first).
/// Query head `kv_head * group + g` of the grouped problem is the same query head as before.
pub fn grouped(p: &AttnParams, groups: i32) -> AttnParams {
    if groups <= 1 {
        return *p;
    }
    AttnParams { heads_kv: p.heads_kv * groups, k_head_stride: 0, v_head_stride: 0, ..*p }
}

/// Whether `p`'s rows may be cut into `g` row groups: one KV head (a shared K/V head stride of 0 stands for
/// all groups), more than 16 packed rows, and a group count that divides the query heads.
fn row_groups_possible(p: &AttnParams, g: i32) -> bool {
    p.heads_kv == 1 && g >= 2 && p.heads_q % g == 0 && packed_rows(p) > 16
}

/// Row groups forced by `mode` (ROW_GROUPS_OVERRIDE), where possible.
fn row_groups_for(p: &AttnParams, mode: i32) -> i32 {
    if mode >= 2 && row_groups_possible(p, mode) { mode } else { 1 }
}

/// The automatic choice, given the block count of the plan without groups: a plan of fewer than a quarter as
/// many blocks as SMs (the step is latency-bound: each block's rows and key tiles are a long serial chain)
/// takes the most groups (4, else 2) that keep it within half the SMs. H200, batch-1 MQA (32 rows) at 2k keys,
/// 16 blocks: 4 groups 1.19x, 2 groups 1.16x; plans of 64 and more blocks (batch-1 MQA at 8k, batch 8 and 64)
/// ran 0.58-0.98x with groups (docs/PERF.md).
fn auto_row_groups(p: &AttnParams, blocks: i64, num_sms: i32) -> i32 {
    if blocks * 4 >= num_sms as i64 {
        return 1;
    }
    [4, 2].into_iter().find(|&g| row_groups_possible(p, g) && blocks * g as i64 * 2 <= num_sms as i64).unwrap_or(1)
}

/// How many clusters of each size in CLUSTER_SIZES the device holds at once, per cluster shape (padded head
/// dim in CLUSTER_DIMS x packed rows in PADDED_ROWS); 0 where none fits or the device has no clusters. Less
/// than blocks-per-SM x SMs / size: clusters are placed within one GPC (H200, d128 x 16 rows: 132, 62, 30, 14).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ClusterResidency([[i32; 4]; 6]);

impl ClusterResidency {
    /// Asks `resident(entry name, cluster size)` for every cluster shape (the smaller answer of its plain and
    /// append entries; bf16's, whose shared memory the f16 entries share).
    pub fn query(resident: impl Fn(&str, i32) -> i32) -> Self {
        let mut t = [[0; 4]; 6];
        for (di, d) in CLUSTER_DIMS.into_iter().enumerate() {
            for (ri, rows) in PADDED_ROWS.into_iter().enumerate() {
                let spec = DecodeSpec { dtype: DType::BF16, d, rows, cluster: true };
                for (ci, c) in CLUSTER_SIZES.into_iter().enumerate() {
                    t[di * 3 + ri][ci] = resident(&spec.name(), c).min(resident(&spec.append_name(), c));
                }
            }
        }
        ClusterResidency(t)
    }
    /// The same answer for every shape (tests).
    pub const fn uniform(per_size: [i32; 4]) -> Self {
        ClusterResidency([per_size; 6])
    }
    fn row(&self, spec: &DecodeSpec) -> Option<[i32; 4]> {
        let di = CLUSTER_DIMS.iter().position(|&d| d == spec.d)?;
        let ri = PADDED_ROWS.iter().position(|&r| r == spec.rows)?;
        Some(self.0[di * 3 + ri])
    }
    /// Clusters of `size` (one of CLUSTER_SIZES) the device holds at once for `spec`.
    pub fn resident(&self, spec: &DecodeSpec, size: i32) -> i32 {
        let ci = CLUSTER_SIZES.iter().position(|&c| c == size);
        self.row(spec).zip(ci).map_or(0, |(r, ci)| r[ci])
    }
    /// The largest cluster `spec` runs in (0: none).
    pub fn max_size(&self, spec: &DecodeSpec) -> i32 {
        CLUSTER_SIZES.into_iter().filter(|&c| self.resident(spec, c) >= 1).max().unwrap_or(0)
    }
}

/// What a plan needs to know about the device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Device {
    pub cc: i32,
    pub max_smem_optin: i32,
    pub num_sms: i32,
    pub clusters: ClusterResidency,
}

impl From<&DeviceKernels> for Device {
    fn from(k: &DeviceKernels) -> Self {
        Device { cc: k.cc, max_smem_optin: k.max_smem_optin, num_sms: k.num_sms, clusters: k.clusters }
    }
}

/// How a problem runs on the decode kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DecodePlan {
    pub spec: DecodeSpec,
    pub splits: i32,
    /// Row groups of the one KV head ([`grouped`]): the launches run the grouped problem.
    pub row_groups: i32,
    /// Device bytes the launch needs (0 with one split).
    pub workspace_bytes: usize,
}

/// Packed rows per (batch, KV head) block.
fn packed_rows(p: &AttnParams) -> i64 {
    p.seq_q as i64 * (p.heads_q / p.heads_kv.max(1)) as i64
}

/// The decode kernel for `p`, if one is compiled for it (element type, packed rows, head dims).
pub fn spec_for(p: &AttnParams) -> Option<DecodeSpec> {
    let dtype = match p.dtype {
        1 => DType::F16,
        2 => DType::BF16,
        _ => return None,
    };
    if p.heads_kv <= 0 || p.heads_q % p.heads_kv != 0 || p.heads_kv > 65535 || p.batch > 65535 {
        return None;
    }
    let rows = packed_rows(p);
    let need = p.head_dim.max(p.head_dim_v);
    if rows < 1 || need < 1 {
        return None;
    }
    let rows = PADDED_ROWS.into_iter().find(|&r| r as i64 >= rows)?;
    let d = PADDED_DIMS.into_iter().find(|&d| d >= need)?;
    Some(DecodeSpec { dtype, d, rows, cluster: false })
}

/// Resident blocks per SM that shared memory allows (an SM has the per-block opt-in limit plus the 1 KiB
/// the driver reserves per block: 228 KiB on H100, 164 KiB on A100), at most 16 (2048 threads).
pub fn blocks_per_sm(smem_bytes: u32, max_smem_optin: i32) -> i32 {
    let per_sm = max_smem_optin as i64 + 1024;
    (per_sm / (smem_bytes as i64 + 1024)).clamp(0, 16) as i32
}

/// Key tiles (BLOCK_KEYS keys) the rows of one block may see at most (key_seqlens can only shrink it).
pub fn key_tiles(p: &AttnParams) -> i64 {
    p.visible_key_blocks(BLOCK_KEYS)
}

/// Splits for `blocks` (batch x KV heads) blocks of `tiles` key tiles each: as many as fill one wave of
/// resident blocks (more would only add a tail wave and combine work), down to one tile per split (the
/// combine step reads every split at once, so a one-tile split costs less than an idle SM: H200, batch 1,
/// 2k keys, 32 one-tile splits 10.1 µs against 13.6 µs for 8 four-tile ones; docs/PERF.md), except for
/// blocks of many `rows` (MANY_ROWS_MIN_SPLITS), then evened out so no split is left empty. 1 when the batch
/// alone fills the GPU.
pub fn choose_splits(blocks: i64, tiles: i64, rows: i64, num_sms: i32, blocks_per_sm: i32) -> i32 {
    let wave = num_sms.max(1) as i64 * blocks_per_sm.max(1) as i64;
    let by_wave = (wave / blocks.max(1)).max(1);
    let by_rows = if rows > 16 { (tiles / 2).max(MANY_ROWS_MIN_SPLITS) } else { MAX_SPLITS as i64 };
    even_splits(tiles, by_wave.min(by_rows).min(MAX_SPLITS as i64))
}

/// The automatic choice of a cluster merge, among clusters whose `blocks` (batch x KV heads) the device holds at
/// once (a second wave of clusters would double the step: H200, batch 8, 64 clusters of 4 with 62 resident,
/// 0.70x the combine's time): the smallest whose splits read at most CLUSTER_MANY_BLOCKS_MAX_TILES_PER_SPLIT key
/// tiles in at least CLUSTER_MANY_BLOCKS blocks, else the smallest whose splits read at most
/// CLUSTER_MAX_TILES_PER_SPLIT, else pairs for a combine plan of 2-4 splits (CLUSTER_PAIR_MAX_TILES_PER_SPLIT).
fn cluster_size(spec: &DecodeSpec, clusters: &ClusterResidency, tiles: i64, blocks: i64, planned: i32) -> Option<i32> {
    let per_split = |c: i32| (tiles + c as i64 - 1) / c as i64;
    let resident = |c: i32| blocks <= clusters.resident(spec, c) as i64;
    let many = |c: &i32| {
        per_split(*c) <= CLUSTER_MANY_BLOCKS_MAX_TILES_PER_SPLIT
            && blocks * even_splits(tiles, *c as i64) as i64 >= CLUSTER_MANY_BLOCKS
            && resident(*c)
    };
    let short = |c: &i32| per_split(*c) <= CLUSTER_MAX_TILES_PER_SPLIT && resident(*c);
    let pair = |c: &i32| (2..=4).contains(&planned) && per_split(*c) <= CLUSTER_PAIR_MAX_TILES_PER_SPLIT && resident(*c);
    CLUSTER_SIZES.into_iter().find(many).or_else(|| CLUSTER_SIZES.into_iter().find(short)).or(Some(2).filter(pair))
}

/// At most `splits` splits of `tiles` key tiles, evened out so that none is left empty.
fn even_splits(tiles: i64, splits: i64) -> i32 {
    let splits = splits.min(tiles.max(1)).max(1);
    let per_split = (tiles.max(1) + splits - 1) / splits;
    ((tiles.max(1) + per_split - 1) / per_split) as i32
}

/// Packed rows per combine block (kernels/decode_combine.cuh): a row takes one thread per column unit
/// (float4s of head_dim_v, or floats when head_dim_v % 4 != 0) for each share of COMBINE_BATCH splits it
/// walks side by side; a block holds as many rows (a power of two) as leave every row those threads.
pub fn combine_rows_per_block(head_dim_v: i32, splits: i32) -> u32 {
    let units = if head_dim_v % 4 == 0 { head_dim_v / 4 } else { head_dim_v }.max(1) as u32;
    let need = units * (splits.max(1) as u32).div_ceil(COMBINE_BATCH);
    let mut rows = 1;
    while 2 * rows * need.min(COMBINE_THREADS) <= COMBINE_THREADS {
        rows *= 2;
    }
    rows
}

/// Workspace layout for `splits`: O parts [batch, heads_kv, splits, rows, head_dim_v] f32, then (aligned)
/// lse parts [batch, heads_kv, splits, rows] f32. Returns (total bytes, lse offset); (0, 0) for one split.
pub fn workspace_layout(p: &AttnParams, splits: i32) -> (usize, usize) {
    if splits <= 1 {
        return (0, 0);
    }
    let rows = p.batch as usize * p.heads_kv as usize * splits as usize * packed_rows(p) as usize;
    let o_bytes = rows * p.head_dim_v as usize * 4;
    let lse_off = o_bytes.div_ceil(WORKSPACE_ALIGN) * WORKSPACE_ALIGN;
    (lse_off + rows * 4, lse_off)
}

/// The decode plan for `p` on `dev` with `available` workspace bytes (usize::MAX when sizing), or None
/// when the prefill kernel serves `p`. Automatic plans shrink to the splits the workspace holds; a forced
/// split count that does not fit is an error (a test asked for a path it would not get).
pub fn plan(p: &AttnParams, dev: Device, available: usize) -> Result<Option<DecodePlan>, GpuError> {
    let mode = ROW_GROUPS_OVERRIDE.load(Ordering::Relaxed);
    if mode != -1 {
        return plan_grouped(p, dev, available, row_groups_for(p, mode));
    }
    let Some(whole) = plan_grouped(p, dev, available, 1)? else { return Ok(None) };
    let blocks = whole.splits as i64 * p.heads_kv as i64 * p.batch as i64;
    match auto_row_groups(p, blocks, dev.num_sms) {
        1 => Ok(Some(whole)),
        g => plan_grouped(p, dev, available, g),
    }
}

/// [`plan`] for `p` cut into `row_groups` row groups.
fn plan_grouped(p: &AttnParams, dev: Device, available: usize, row_groups: i32) -> Result<Option<DecodePlan>, GpuError> {
    let forced = SPLITS_OVERRIDE.load(Ordering::Relaxed);
    if forced == 0 || dev.cc < 80 || spec_for(p).is_none() {
        return Ok(None);
    }
    let p = &grouped(p, row_groups);
    let Some(spec) = spec_for(p) else { return Ok(None) };
    let bps = blocks_per_sm(spec.smem_bytes(), dev.max_smem_optin);
    if bps < 1 {
        return Ok(None); // does not fit this GPU's shared memory: the prefill kernel serves it
    }
    let tiles = key_tiles(p);
    let blocks = p.batch as i64 * p.heads_kv as i64;
    let mut splits = if forced > 0 {
        forced.min(tiles.clamp(1, MAX_SPLITS as i64) as i32)
    } else {
        choose_splits(blocks, tiles, packed_rows(p), dev.num_sms, bps)
    };
    let cluster_spec = DecodeSpec { cluster: true, ..spec };
    let cluster_limit = dev.clusters.max_size(&cluster_spec);
    let cluster_mode = CLUSTER_OVERRIDE.load(Ordering::Relaxed);
    if cluster_limit >= 2 && cluster_mode != 0 && splits >= 2 {
        let in_cluster = if forced > 0 {
            Some(splits).filter(|&s| s <= cluster_limit)
        } else if cluster_mode == 1 {
            Some(even_splits(tiles, splits.min(cluster_limit) as i64))
        } else {
            cluster_size(&cluster_spec, &dev.clusters, tiles, blocks, splits).map(|c| even_splits(tiles, c as i64))
        };
        if let Some(splits) = in_cluster.filter(|&s| s >= 2) {
            return Ok(Some(DecodePlan { spec: cluster_spec, splits, row_groups, workspace_bytes: 0 }));
        }
    }
    let mut bytes = workspace_layout(p, splits).0;
    if bytes > available {
        if forced > 0 {
            return Err(GpuError::new(format!(
                "decode with {splits} forced splits needs {bytes} bytes of workspace, {available} given (query flashattn_ort_gpu_workspace_size)"
            )));
        }
        let per_split = workspace_layout(p, 2).0 / 2 + WORKSPACE_ALIGN;
        splits = (available / per_split).min(splits as usize) as i32;
        if splits < 2 {
            splits = 1;
        }
        bytes = workspace_layout(p, splits).0;
        if bytes > available {
            splits = 1;
            bytes = 0;
        }
    }
    Ok(Some(DecodePlan { spec, splits, row_groups, workspace_bytes: bytes }))
}

/// For a cluster plan: how many of its clusters the device holds at once, and how many it launches.
pub fn resident_clusters(plan: &DecodePlan, p: &AttnParams, kernels: &DeviceKernels) -> Result<Option<(i32, i64)>, GpuError> {
    if !plan.spec.cluster {
        return Ok(None);
    }
    let f = kernels.named(&plan.spec.name())?;
    let p = &grouped(p, plan.row_groups);
    let grid = (plan.splits as u32, p.heads_kv as u32, p.batch as u32);
    let resident = super::module::max_active_clusters(f, grid, plan.splits as u32, THREADS, plan.spec.smem_bytes())?;
    Ok(Some((resident, p.heads_kv as i64 * p.batch as i64)))
}

/// Device memory a launch may use as scratch: address and size in bytes (0/0: none).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Workspace {
    pub ptr: u64,
    pub bytes: usize,
}

impl Workspace {
    /// Whether it can take `bytes` of split partials (or key-padding scan results): present, 16-byte aligned,
    /// large enough. Launches that can do without it run without it otherwise.
    pub fn holds(&self, bytes: usize) -> bool {
        self.ptr != 0 && self.ptr % 16 == 0 && self.bytes >= bytes
    }
}

/// Queues the decode kernel (and, with splits merged through the workspace, the combine kernel) for `plan` on
/// `stream`. The caller has made the stream's context current. `append`: the KV append step for the decode kernel to do itself
/// (nothing to copy: kernels/kv_append.cuh `kv_append_owned_rows`); `p.q_ptr` is then the unrotated query.
pub fn launch(plan: &DecodePlan, p: &AttnParams, append: Option<&KvAppendParams>, kernels: &DeviceKernels, ws: Workspace, stream: sys::CUstream) -> Result<(), GpuError> {
    let name = if append.is_some() { plan.spec.append_name() } else { plan.spec.name() };
    if append.is_some() && plan.row_groups > 1 {
        return Err(GpuError::new("internal: a KV append handed to a decode launch in row groups (their blocks would each append)"));
    }
    let f = kernels.named(&name)?;
    let p = &grouped(p, plan.row_groups);
    let mut arg = *p;
    let mut append_arg = append.copied().unwrap_or_default();
    // Both launches may overlap the kernel before them (the KV append, then the decode kernel) on Hopper and
    // newer: each waits for it in-kernel before touching memory (kernels/dependent_launch.cuh).
    let dependent = kernels.cc >= 90;
    let grid = (plan.splits as u32, p.heads_kv as u32, p.batch as u32);
    if plan.spec.cluster {
        let (params, append_params) = ((&mut arg as *mut AttnParams).cast(), (&mut append_arg as *mut KvAppendParams).cast());
        let mut with_append = [params, append_params];
        let mut plain = [params];
        let args: &mut [*mut c_void] = if append.is_some() { &mut with_append } else { &mut plain };
        let l = Launch { grid, threads: THREADS, smem: plan.spec.smem_bytes(), args, cluster_x: plan.splits as u32 };
        return launch_kernel(f, l, stream, dependent, &|| format!("launching {name} in clusters of {}", plan.splits));
    }
    let (mut o_part, mut lse_part) = (0u64, 0u64);
    if plan.splits > 1 {
        let (bytes, lse_off) = workspace_layout(p, plan.splits);
        if ws.ptr == 0 || ws.bytes < bytes {
            return Err(GpuError::new(format!("decode workspace of {bytes} bytes needed, {} given", ws.bytes)));
        }
        if ws.ptr % 16 != 0 {
            return Err(GpuError::new("the decode workspace must be 16-byte aligned"));
        }
        o_part = ws.ptr;
        lse_part = ws.ptr + lse_off as u64;
    }
    {
        let (params, append_params, o_arg, lse_arg) = (
            (&mut arg as *mut AttnParams).cast(),
            (&mut append_arg as *mut KvAppendParams).cast(),
            (&mut o_part as *mut u64).cast(),
            (&mut lse_part as *mut u64).cast(),
        );
        let mut with_append = [params, append_params, o_arg, lse_arg];
        let mut plain = [params, o_arg, lse_arg];
        let args: &mut [*mut c_void] = if append.is_some() { &mut with_append } else { &mut plain };
        let l = Launch { grid, threads: THREADS, smem: plan.spec.smem_bytes(), args, cluster_x: 0 };
        launch_kernel(f, l, stream, dependent, &|| format!("launching {name}"))?;
    }
    if plan.splits > 1 {
        launch_combine(p, plan.splits, o_part, lse_part, kernels, stream)?;
    }
    Ok(())
}

/// Queues the combine kernel: merges `splits` partial results per packed row of `p` (workspace layout of
/// [`workspace_layout`], O parts at `o_part`, lse parts at `lse_part`) into its outputs. It waits in-kernel
/// for the kernel before it (a dependent launch on Hopper and newer).
pub fn launch_combine(p: &AttnParams, splits: i32, o_part: u64, lse_part: u64, kernels: &DeviceKernels, stream: sys::CUstream) -> Result<(), GpuError> {
    let dtype = match p.dtype {
        1 => DType::F16,
        2 => DType::BF16,
        d => return Err(GpuError::new(format!("no combine kernel for dtype code {d}"))),
    };
    let name = combine_name(dtype);
    let fc = kernels.named(&name)?;
    let rows = p.batch as u64 * p.heads_kv as u64 * packed_rows(p) as u64;
    if rows > i32::MAX as u64 {
        return Err(GpuError::new(format!("{rows} packed rows exceed one combine launch")));
    }
    let (mut arg, mut o_part, mut lse_part, mut n_splits) = (*p, o_part, lse_part, splits);
    let mut rows_per_block = combine_rows_per_block(p.head_dim_v, splits) as i32;
    let blocks = rows.div_ceil(rows_per_block as u64) as u32;
    let mut args: [*mut c_void; 5] = [
        (&mut arg as *mut AttnParams).cast(),
        (&mut o_part as *mut u64).cast(),
        (&mut lse_part as *mut u64).cast(),
        (&mut n_splits as *mut i32).cast(),
        (&mut rows_per_block as *mut i32).cast(),
    ];
    let l = Launch { grid: (blocks, 1, 1), threads: COMBINE_THREADS, smem: 0, args: &mut args, cluster_x: 0 };
    launch_kernel(fc, l, stream, kernels.cc >= 90, &|| format!("launching {name}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Clusters of 2, 4, 8, 16 resident on an H200 (d128 x 16 rows, `run.sh cluster-sweep`).
    const HOPPER_CLUSTERS: ClusterResidency = ClusterResidency::uniform([132, 62, 30, 14]);
    const H100: Device = Device { cc: 90, max_smem_optin: 227 * 1024, num_sms: 132, clusters: HOPPER_CLUSTERS };
    const A100: Device = Device { cc: 80, max_smem_optin: 163 * 1024, num_sms: 108, clusters: ClusterResidency::uniform([0; 4]) };
    const SM86: Device = Device { cc: 86, max_smem_optin: 99 * 1024, num_sms: 84, clusters: ClusterResidency::uniform([0; 4]) };

    fn decode(batch: i32, hq: i32, hkv: i32, sq: i32, skv: i32, d: i32) -> AttnParams {
        AttnParams { dtype: 2, batch, heads_q: hq, heads_kv: hkv, seq_q: sq, seq_kv: skv, head_dim: d, head_dim_v: d, window_left: -1, window_right: -1, ..Default::default() }
    }

    // The override is process-wide: tests that read plans hold this lock.
    static OVERRIDE_LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());

    #[test]
    fn row_groups_cut_one_kv_heads_rows_and_keep_query_heads() {
        let mqa = AttnParams { batch: 1, heads_q: 32, heads_kv: 1, seq_q: 1, seq_kv: 2048, k_head_stride: 128, v_head_stride: 128, ..Default::default() };
        assert_eq!(row_groups_for(&mqa, 2), 2);
        assert_eq!(row_groups_for(&mqa, 4), 4);
        assert_eq!(row_groups_for(&mqa, 3), 1); // 32 heads do not split in 3
        assert_eq!(row_groups_for(&mqa, 1), 1);
        assert_eq!(row_groups_for(&AttnParams { heads_kv: 2, ..mqa }, 2), 1); // two KV heads: strides differ
        assert_eq!(row_groups_for(&AttnParams { heads_q: 16, ..mqa }, 2), 1); // 16 rows fit one block already
        let g = grouped(&mqa, 2);
        assert_eq!((g.heads_kv, g.k_head_stride, g.v_head_stride, packed_rows(&g)), (2, 0, 0, 16));
        // query head kv_head * group + i of the grouped problem is query head kv_head * 16 + i
        assert_eq!(g.heads_q / g.heads_kv, 16);
        assert_eq!(grouped(&mqa, 1), mqa);
        // automatic: only plans of fewer blocks than a quarter of the SMs, as many groups as half the SMs hold
        assert_eq!(auto_row_groups(&mqa, 16, 132), 4);
        assert_eq!(auto_row_groups(&mqa, 32, 132), 2);
        assert_eq!(auto_row_groups(&mqa, 33, 132), 1);
        assert_eq!(auto_row_groups(&mqa, 64, 132), 1);
        assert_eq!(auto_row_groups(&AttnParams { heads_kv: 8, heads_q: 256, ..mqa }, 8, 132), 1);
    }

    #[test]
    fn applies_to_few_packed_rows_only() {
        assert_eq!(spec_for(&decode(1, 32, 8, 1, 4096, 128)), Some(DecodeSpec { dtype: DType::BF16, d: 128, rows: 16, cluster: false }));
        assert_eq!(spec_for(&decode(1, 32, 1, 1, 4096, 128)).unwrap().rows, 32); // MQA: 32 heads in one tile
        assert_eq!(spec_for(&decode(1, 32, 8, 16, 4096, 128)).unwrap().rows, 64); // 16 tokens x 4 heads
        assert_eq!(spec_for(&decode(1, 32, 8, 17, 4096, 128)), None);
        assert_eq!(spec_for(&decode(1, 8, 8, 64, 64, 64)).unwrap().rows, 64);
        assert_eq!(spec_for(&AttnParams { head_dim_v: 200, ..decode(1, 4, 4, 1, 10, 17) }).unwrap().d, 256);
        assert_eq!(spec_for(&decode(1, 4, 4, 1, 10, 300)), None);
        assert_eq!(spec_for(&AttnParams { dtype: 0, ..decode(1, 4, 4, 1, 10, 64) }), None);
        assert_eq!(spec_for(&decode(1, 6, 4, 1, 10, 64)), None);
    }

    #[test]
    fn shared_memory_matches_the_kernel_config() {
        // (rows*D + 2*STAGES*64*D) * 2 bytes
        assert_eq!(DecodeSpec { dtype: DType::F16, d: 128, rows: 16, cluster: false }.smem_bytes(), (16 * 128 + 2 * 3 * 64 * 128) * 2);
        assert_eq!(DecodeSpec { dtype: DType::F16, d: 256, rows: 64, cluster: false }.smem_bytes(), (64 * 256 + 2 * 2 * 64 * 256) * 2);
        // two d128 blocks per H100 SM (two 64 KiB stages in flight each), one on A100
        assert_eq!(blocks_per_sm(DecodeSpec { dtype: DType::F16, d: 128, rows: 64, cluster: false }.smem_bytes(), H100.max_smem_optin), 2);
        assert_eq!(blocks_per_sm(DecodeSpec { dtype: DType::F16, d: 128, rows: 16, cluster: false }.smem_bytes(), A100.max_smem_optin), 1);
        assert_eq!(blocks_per_sm(DecodeSpec { dtype: DType::F16, d: 256, rows: 64, cluster: false }.smem_bytes(), SM86.max_smem_optin), 0);
        // per dtype: 9 shapes and 6 cluster shapes (d 64/128), each plain and with the append, and the combine
        assert_eq!(entry_points().len(), 2 * (2 * 9 + 2 * 6 + 1));
        assert_eq!(entry_points().iter().filter(|(n, _)| is_cluster_entry(n)).count(), 2 * 2 * 6);
    }

    #[test]
    fn splits_fill_one_wave_and_stay_even() {
        // batch 1, 8 KV heads: 264 resident blocks on an H100 -> 33 per (batch, head), capped by tiles
        assert_eq!(choose_splits(8, 32, 4, 132, 2), 32); // 2k keys: one tile per split
        assert_eq!(choose_splits(8, 128, 4, 132, 2), 32); // 8k: 33 wanted, 4 tiles each -> 32 splits
        assert_eq!(choose_splits(8, 512, 4, 132, 2), 32); // 32k: 16 tiles each
        assert_eq!(choose_splits(64, 512, 4, 132, 2), 4); // batch 8
        assert_eq!(choose_splits(512, 512, 4, 132, 2), 1); // batch 64 fills the GPU alone
        assert_eq!(choose_splits(1, 512, 32, 132, 2), 128); // MQA batch 1: capped
        assert_eq!(choose_splits(1, 64, 32, 132, 2), 64); // MQA 4k: one tile per split, 64 splits
        assert_eq!(choose_splits(1, 128, 32, 132, 2), 64); // MQA 8k: two tiles per split, not 128 of one
        assert_eq!(choose_splits(1, 128, 16, 132, 2), 128); // 16 rows (GQA 16/1): one tile per split
        assert_eq!(choose_splits(2, 128, 32, 132, 2), 64); // MQA batch 2
        assert_eq!(choose_splits(8, 128, 32, 132, 2), 32); // MQA batch 8: the wave decides
        assert_eq!(choose_splits(1, 100, 4, 132, 2), 100);
        assert_eq!(choose_splits(8, 0, 4, 132, 2), 1);
        assert_eq!(choose_splits(8, 1, 4, 132, 2), 1);
        for (blocks, rows) in [1, 3, 8, 64, 200].into_iter().flat_map(|b| [(b, 4), (b, 32)]) {
            for tiles in [1, 2, 7, 31, 32, 33, 100, 513] {
                let s = choose_splits(blocks, tiles, rows, 132, 2) as i64;
                let per = (tiles + s - 1) / s;
                assert!(s >= 1 && s <= tiles.max(1) && s <= MAX_SPLITS as i64);
                assert!(s * blocks <= 264 || s == 1, "more than one wave: {blocks} blocks, {tiles} tiles, {s} splits");
                assert!((s - 1) * per < tiles, "empty split: blocks {blocks} tiles {tiles} splits {s}");
            }
        }
    }

    #[test]
    fn key_tiles_follow_the_visible_range() {
        assert_eq!(key_tiles(&decode(1, 8, 8, 1, 4096, 64)), 64);
        assert_eq!(key_tiles(&decode(1, 8, 8, 1, 4097, 64)), 65);
        // causal, bottom-right aligned: the last query sees every key
        assert_eq!(key_tiles(&AttnParams { window_right: 0, ..decode(1, 8, 8, 4, 4096, 64) }), 64);
        // sliding window of 100 keys left of the diagonal: [3995, 4096) spans tiles 62..64
        assert_eq!(key_tiles(&AttnParams { window_left: 100, window_right: 0, ..decode(1, 8, 8, 1, 4096, 64) }), 2);
        assert_eq!(key_tiles(&AttnParams { window_right: 0, ..decode(1, 8, 8, 4, 2, 64) }), 1);
    }

    #[test]
    fn combine_gives_every_row_a_thread_per_column_unit() {
        assert_eq!(combine_rows_per_block(128, 32), 2); // 32 float4 units x 4 shares of 8 splits
        assert_eq!(combine_rows_per_block(128, 4), 8); // one share: a warp per row
        assert_eq!(combine_rows_per_block(128, 128), 1); // 16 shares wanted, 8 fit
        assert_eq!(combine_rows_per_block(256, 2), 4);
        assert_eq!(combine_rows_per_block(17, 3), 8); // floats: 17 threads a row
        assert_eq!(combine_rows_per_block(200, 128), 1);
        assert_eq!(combine_rows_per_block(255, 2), 1); // 255 float units: the whole block
        for dv in 1..=256 {
            for splits in [1, 2, 3, 8, 9, 64, 128] {
                let rpb = combine_rows_per_block(dv, splits);
                let units = if dv % 4 == 0 { dv / 4 } else { dv } as u32;
                assert!(rpb.is_power_of_two() && COMBINE_THREADS / rpb >= units, "dv {dv} splits {splits}: {rpb}");
            }
        }
    }

    #[test]
    fn workspace_holds_every_split_row() {
        let p = decode(2, 32, 8, 3, 8192, 128);
        assert_eq!(workspace_layout(&p, 1), (0, 0));
        let rows = 2 * 8 * 5 * (3 * 4);
        let (bytes, lse_off) = workspace_layout(&p, 5);
        assert_eq!(lse_off, (rows * 128 * 4usize).div_ceil(256) * 256);
        assert_eq!(bytes, lse_off + rows * 4);
    }

    #[test]
    fn plans() {
        let _g = OVERRIDE_LOCK.lock().unwrap();
        set_splits_override(-1);
        set_cluster_override(0);
        let p = decode(1, 32, 8, 1, 8192, 128);
        let pl = plan(&p, H100, usize::MAX).unwrap().unwrap();
        assert_eq!((pl.spec.name().as_str(), pl.splits), ("flash_decode_sm80_bf16_d128_r16", 32));
        assert_eq!(pl.workspace_bytes, workspace_layout(&p, 32).0);
        // no workspace: one split, straight to the outputs
        let pl0 = plan(&p, H100, 0).unwrap().unwrap();
        assert_eq!((pl0.splits, pl0.workspace_bytes), (1, 0));
        // a workspace for 5 splits
        let five = workspace_layout(&p, 5).0;
        let pl5 = plan(&p, H100, five).unwrap().unwrap();
        assert!(pl5.splits >= 2 && pl5.splits <= 5 && pl5.workspace_bytes <= five, "{pl5:?}");
        // batch 64 fills the GPU: no workspace
        assert_eq!(plan(&decode(64, 32, 8, 1, 8192, 128), H100, usize::MAX).unwrap().unwrap().workspace_bytes, 0);
        // prefill-shaped and pre-Ampere problems are not decode
        assert_eq!(plan(&decode(1, 32, 8, 512, 8192, 128), H100, usize::MAX).unwrap(), None);
        assert_eq!(plan(&p, Device { cc: 75, ..H100 }, usize::MAX).unwrap(), None);
        // d256 x 64 rows does not fit a 100 KiB SM: prefill kernel
        assert_eq!(plan(&decode(1, 8, 8, 8, 1000, 256), SM86, usize::MAX).unwrap(), None);

        set_splits_override(0);
        assert_eq!(plan(&p, H100, usize::MAX).unwrap(), None);
        set_splits_override(7);
        assert_eq!(plan(&p, H100, usize::MAX).unwrap().unwrap().splits, 7);
        assert!(plan(&p, H100, 100).unwrap_err().0.contains("workspace"));
        assert_eq!(plan(&decode(1, 32, 8, 1, 100, 128), H100, usize::MAX).unwrap().unwrap().splits, 2); // capped by tiles
        set_splits_override(1);
        assert_eq!(plan(&p, H100, 0).unwrap().unwrap().splits, 1);
        set_splits_override(-1);
        set_cluster_override(-1);
    }

    #[test]
    fn cluster_plans() {
        let _g = OVERRIDE_LOCK.lock().unwrap();
        set_splits_override(-1);
        set_cluster_override(-1);
        let cluster = |p: &AttnParams, dev: Device| plan(p, dev, usize::MAX).unwrap().map(|pl| (pl.spec.cluster, pl.splits, pl.workspace_bytes));
        // batch 1, 8 KV heads, 2k keys (32 tiles): 8 splits of 4 tiles in 8 clusters (64 blocks), no workspace
        let short = decode(1, 32, 8, 1, 2048, 128);
        assert_eq!(cluster(&short, H100), Some((true, 8, 0)));
        assert_eq!(plan(&short, H100, 0).unwrap().unwrap().spec.name(), "flash_decode_cluster_bf16_d128_r16");
        // 1k keys: clusters of 4 would be 32 blocks, 8 give 2 tiles a split; 3 tiles: 2 splits
        assert_eq!(cluster(&decode(1, 32, 8, 1, 1024, 128), H100), Some((true, 8, 0)));
        assert_eq!(cluster(&decode(1, 32, 8, 1, 150, 128), H100), Some((true, 2, 0)));
        // 3k and 4k keys: 16 splits of 3-4 tiles (128 blocks)
        assert_eq!(cluster(&decode(1, 32, 8, 1, 3072, 128), H100), Some((true, 16, 0)));
        assert_eq!(cluster(&decode(1, 32, 8, 1, 4096, 128), H100), Some((true, 16, 0)));
        // MQA batch 1 at 2k: 16 blocks at most, so 2-tile splits (clusters of 16); at 3k: the combine
        assert_eq!(cluster(&decode(1, 32, 1, 1, 2048, 128), H100), Some((true, 16, 0)));
        assert_eq!(cluster(&decode(1, 32, 1, 1, 3072, 128), H100).unwrap().0, false);
        // MQA batch 8 at 2k: clusters of 8 (64 blocks)
        assert_eq!(cluster(&decode(8, 32, 1, 1, 2048, 128), H100), Some((true, 8, 0)));
        // longer splits or more clusters than fit at once: workspace and combine
        let b1 = decode(1, 32, 8, 1, 8192, 128);
        assert_eq!(cluster(&b1, H100).unwrap().0, false);
        assert_eq!(cluster(&decode(4, 32, 8, 1, 2048, 128), H100).unwrap().0, false); // 32 clusters of 16, 14 resident
        // a plan of 2-4 splits: pairs, up to 32 tiles a split (batch 8 and 16 GQA, batch 64 MQA)
        assert_eq!(cluster(&decode(8, 32, 8, 1, 2048, 128), H100), Some((true, 2, 0)));
        assert_eq!(cluster(&decode(16, 32, 8, 1, 2048, 128), H100), Some((true, 2, 0)));
        assert_eq!(cluster(&decode(64, 32, 1, 1, 4096, 128), H100), Some((true, 2, 0)));
        assert_eq!(cluster(&decode(64, 32, 1, 1, 8192, 128), H100).unwrap().0, false); // 64 tiles a split
        assert_eq!(cluster(&decode(32, 32, 1, 1, 2048, 128), H100).unwrap().0, false); // a plan of 8 splits
        assert_eq!(cluster(&decode(8, 32, 8, 1, 2048, 128), Device { clusters: ClusterResidency::uniform([63, 62, 30, 14]), ..H100 }).unwrap().0, false);
        assert_eq!(cluster(&decode(1, 32, 8, 1, 2048, 128), Device { clusters: ClusterResidency::uniform([132, 62, 0, 0]), ..H100 }).unwrap().0, false);
        // mode 1: always, automatic counts capped at the largest cluster
        set_cluster_override(1);
        assert_eq!(cluster(&b1, H100), Some((true, 16, 0)));
        assert_eq!(cluster(&b1, Device { clusters: ClusterResidency::uniform([132, 62, 30, 0]), ..H100 }), Some((true, 8, 0)));
        assert_eq!(cluster(&decode(1, 32, 8, 1, 300, 128), H100), Some((true, 5, 0))); // 5 tiles: 5 splits
        set_splits_override(32); // a forced count past the largest cluster: combine
        assert_eq!(cluster(&b1, H100).unwrap().0, false);
        set_splits_override(7);
        assert_eq!(cluster(&b1, H100), Some((true, 7, 0)));
        set_splits_override(-1);
        set_cluster_override(-1);
        // no clusters: before Hopper, at d 256, with one split, or turned off
        assert_eq!(cluster(&short, A100).unwrap().0, false);
        assert_eq!(cluster(&decode(1, 8, 8, 1, 2048, 256), H100).unwrap().0, false);
        assert_eq!(cluster(&decode(64, 32, 8, 1, 8192, 128), H100), Some((false, 1, 0)));
        set_cluster_override(0);
        assert_eq!(cluster(&short, H100).unwrap().0, false);
        set_cluster_override(-1);
        // the table: per shape and size, 0 for shapes without cluster entries
        let t = ClusterResidency::query(|name, c| if name.contains("_d64_") { 100 / c } else { 50 / c });
        let spec = |d, rows| DecodeSpec { dtype: DType::F16, d, rows, cluster: true };
        assert_eq!((t.resident(&spec(64, 32), 4), t.resident(&spec(128, 64), 16), t.resident(&spec(256, 16), 2)), (25, 3, 0));
        assert_eq!((t.max_size(&spec(128, 16)), t.max_size(&spec(256, 16))), (16, 0));
    }
}
