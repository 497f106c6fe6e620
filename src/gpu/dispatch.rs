//! Which kernel serves a problem: by compute capability (the Hopper kernel on 9.0 and the Blackwell kernel on
//! 10.0 when TMA can address the tensors, else the portable sm_80+ kernel), element type, and head dimension
//! rounded up to a compiled padded size. The Blackwell kernel has never run on hardware here: it serves a
//! device only once the first-use self-check (selfcheck.rs) passed there, or when that check is switched off
//! (`FLASHATTN_SELFCHECK=0`); a failed check leaves the device to the portable kernel.
//!
//! The table below must list exactly the entry points of kernels/flash_fwd_sm80.cu,
//! kernels/flash_fwd_sm90.cu and kernels/flash_fwd_sm100.cu; the names spell the tile shape, so a mismatch fails loudly at module load
//! ("named symbol not found"), and the kernels trap if launched with less shared memory than their shape
//! needs.

use crate::params::{AttnParams, DType};

use super::driver::GpuError;

/// One compiled forward kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KernelSpec {
    pub family: Family,
    pub dtype: DType,
    /// Padded head dim (covers both head_dim and head_dim_v).
    pub d: i32,
    /// Query rows per block, key rows per step, warps per block, K/V pipeline stages.
    pub bm: i32,
    pub bn: i32,
    pub warps: i32,
    pub stages: i32,
    /// The lean instance for problems with no softcap and no mask tensor (name suffix `_plain`).
    pub plain: bool,
    /// A Hopper instance with other pipeline/softmax options, compiled to measure them (docs/PERF.md);
    /// only chosen when forced by name.
    pub variant: Variant,
    /// Which problems the default choice may give it (a kernel forced by name serves whatever it fits).
    pub scope: Scope,
    /// Blocks per thread-block cluster (Hopper): 2 = pairs of blocks computing neighbouring query tiles of one
    /// head share each K/V tile, loaded from L2 once and multicast (name `…w12c2`); problems without
    /// causal/window bounds only.
    pub cluster: i32,
    /// GQA packing (kernels/gqa_pack.cuh, name suffix `_packgqa`, plain only): a tile holds the rows of every
    /// query head that shares a KV head; chosen where [`packing_pays`].
    pub pack_gqa: bool,
    /// Takes split-KV workspace parameters (the packed instances, and the unpacked `_split` ones, plain only):
    /// chosen by prefill_split.rs where splitting the keys pays.
    pub split_kv: bool,
}

/// The problems a kernel may get by default. Kernels narrower than `All` exist in their plain form only:
/// their full form would spill registers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    All,
    /// Plain (no mask tensor, no softcap; causal and windows allowed) over at least [`LONG_MIN_KEYS`] keys.
    PlainLong,
    /// As `PlainLong`, and also plain problems of any length without causal/window bounds.
    PlainLongOrUnbounded,
    /// Plain, without causal/window bounds, over at least [`CLUSTER_MIN_KEYS`] keys, with query tiles that pair
    /// up (an even count per head, or enough that the one without a partner is a small share): where clusters
    /// of two blocks sharing K/V tiles pay.
    ClusterLong,
}

/// From this many keys on the three-warpgroup (192-row) tiles beat the two-warpgroup ones at d64 and d96, by
/// 2-18% (H200, 2026-11-30, docs/PERF.md); below it, with few key blocks per tile, they lose up to 19% (d96,
/// and causal d64), but win 2-8% at d64 without causal/window bounds.
pub const LONG_MIN_KEYS: i32 = 2048;

/// From this many keys on, d128 and d192 problems without causal/window bounds run faster in clusters of two
/// blocks sharing longer K/V tiles (d128: 176 keys, d192: 112): 1.02-1.05x at 8k and 16k keys, 0.92-0.98x at
/// 512-4k (H200, 2026-11-30, docs/PERF.md). Clusters with the usual tiles, and at d96/d256, measured within
/// noise (0.99-1.02x) at 8k-16k: not used there.
pub const CLUSTER_MIN_KEYS: i32 = 8192;

/// Whether the query tiles of `bm` rows of `p` pair up with little waste: an even count per head, or at
/// least 15 (the last cluster's second block, which has no rows, is then at most 1/16 of the blocks).
fn query_tiles_pair_up(p: &AttnParams, bm: i32) -> bool {
    let tiles = (p.seq_q as i64 + bm as i64 - 1) / bm as i64;
    tiles % 2 == 0 || tiles >= 15
}

/// Whether GQA packing can run `p` in tiles of `bm` rows: a power-of-two group of 1..=bm query heads per KV
/// head (a tile holds whole groups; a group of one is MHA, which the packed kernels serve for their split-KV),
/// packed rows countable in 32 bits, a query TMA can step head by head.
pub fn packing_possible(p: &AttnParams, bm: i32) -> bool {
    let g = if p.heads_kv > 0 && p.heads_q % p.heads_kv == 0 { p.heads_q / p.heads_kv } else { 0 };
    g >= 1 && g <= bm && (g as u32).is_power_of_two() && (p.seq_q as i64) * (g as i64) < i32::MAX as i64 - bm as i64
        && super::tensor_map::packed_tma_compatible(p)
}

/// Whether packing the query heads of a group into shared tiles pays for `p`: when it leaves at least 10%
/// fewer tiles than one head per tile does (query lengths that leave one head's last tile part-empty).
pub fn packing_pays(p: &AttnParams, bm: i32) -> bool {
    let g = (p.heads_q / p.heads_kv.max(1)) as i64;
    let tiles = |rows: i64| (rows + bm as i64 - 1) / bm as i64;
    let (own, packed) = (tiles(p.seq_q as i64) * g, tiles(p.seq_q as i64 * g));
    packed * 10 <= own * 9
}

/// Options of a Hopper instance (kernels/flash_fwd_sm90.cu, Sm90Options).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Variant {
    /// Ping-pong between the consumer warpgroups, O rescaled at every step (in one block with P's conversions,
    /// FlashAttention-4's choice; d64's 192-row and d192's 112-key instances keep the conditional rescale, which
    /// measured faster there, and d64's 192-row one runs every exponential before the PV wait), exp2 on the MUFU.
    Default,
    /// No ping-pong barriers: both consumers issue their GEMMs whenever ready.
    NoPingpong,
    /// FlashAttention-4's conditional rescaling: a row max is only raised when it grows by more than 2^8.
    RescaleThreshold8,
    /// FlashAttention-4's software exp2 on the FMA units for every 4th 8-column tile.
    EmulatedExp2,
    /// The previous PV waited for after the first of a thread's two rows is exponentiated, so P's conversion
    /// and the O rescale run among the second row's exponentials (FlashAttention-4's Hopper order).
    SplitPvWait,
    /// P converted into a second register buffer among the exponentials and copied over after the PV wait.
    StagedP,
    /// O rescaled only at steps where a row max of the warp moved (the default until 2026-12-02).
    ConditionalRescale,
    /// Every exponential of a step computed before the previous PV is waited for (elsewhere ptxas sinks the
    /// second of a thread's two rows below that wait); the d64 192-row default's order.
    SoftmaxFirst,
}

impl Variant {
    fn suffix(self) -> &'static str {
        match self {
            Variant::Default => "",
            Variant::NoPingpong => "_nopp",
            Variant::RescaleThreshold8 => "_rt8",
            Variant::EmulatedExp2 => "_emu4",
            Variant::SplitPvWait => "_spw",
            Variant::StagedP => "_sp",
            Variant::ConditionalRescale => "_cr",
            Variant::SoftmaxFirst => "_fs",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    /// mma.sync + cp.async + ldmatrix: any GPU of compute capability 8.0 or newer.
    Sm80,
    /// TMA + wgmma + warp specialization (kernels/mainloop_sm90.cuh): compute capability 9.0 only.
    Sm90,
    /// TMA + tcgen05.mma with accumulators in Tensor Memory (kernels/mainloop_sm100.cuh): compute capability
    /// 10.0 only (the sm_100a cubin), plain problems without key_seqlens, head_dim <= 128.
    Sm100,
}

/// What the first-use self-check (selfcheck.rs) found on a device; it decides whether the kernels that have
/// not been validated on hardware here may serve it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// No check was needed (no unvalidated kernel serves this device).
    NotNeeded,
    /// The unvalidated kernel agreed with the portable one.
    Passed,
    /// `FLASHATTN_SELFCHECK=0`: the unvalidated kernel is trusted without a check.
    Skipped,
    /// It disagreed, faulted or failed to launch: only the portable kernel serves this device.
    Failed(String),
}

impl Verdict {
    /// Whether the Blackwell kernel may serve.
    pub fn trusts_sm100(&self) -> bool {
        matches!(self, Verdict::Passed | Verdict::Skipped)
    }
    pub fn failed(&self) -> bool {
        matches!(self, Verdict::Failed(_))
    }
}

impl Family {
    pub fn name(self) -> &'static str {
        match self {
            Family::Sm80 => "sm80",
            Family::Sm90 => "sm90",
            Family::Sm100 => "sm100",
        }
    }
    /// Families whose kernels are compiled only in their `_plain` form.
    pub fn plain_only(self) -> bool {
        self == Family::Sm100
    }
}

impl KernelSpec {
    pub fn name(&self) -> String {
        let t = match self.dtype {
            DType::F16 => "f16",
            DType::BF16 => "bf16",
            DType::F32 => "f32",
        };
        let fam = self.family.name();
        let suffix = match (self.plain, self.pack_gqa, self.split_kv) {
            (true, true, _) => "_plain_packgqa",
            (true, false, true) => "_plain_split",
            (true, false, false) => "_plain",
            (false, _, _) => "",
        };
        let cluster = if self.cluster > 1 { format!("c{}", self.cluster) } else { String::new() };
        format!("flash_fwd_{fam}_{t}_d{}_m{}n{}w{}{cluster}{suffix}{}", self.d, self.bm, self.bn, self.warps, self.variant.suffix())
    }
    /// Columns of one shared-memory panel and TMA box of the TMA families (kernels/config_sm90.cuh
    /// PANEL_COLS): 64, swizzled over 128 bytes, where the padded head dim is a multiple of 64; else 32,
    /// swizzled over 64 bytes.
    pub fn panel_cols(&self) -> u32 {
        if self.d % 64 == 0 {
            64
        } else {
            32
        }
    }
    /// Query tiles of `p` (every batch entry): of packed rows per KV head for the GQA-packed kernels, else of
    /// one query head's rows (not rounded to clusters).
    pub fn query_tiles(&self, p: &AttnParams) -> i64 {
        let (rows, heads) = if self.pack_gqa {
            (p.seq_q as i64 * (p.heads_q / p.heads_kv.max(1)) as i64, p.heads_kv as i64)
        } else {
            (p.seq_q as i64, p.heads_q as i64)
        };
        (rows + self.bm as i64 - 1) / self.bm as i64 * heads * p.batch as i64
    }
    pub fn threads(&self) -> u32 {
        self.warps as u32 * 32
    }
    /// Whether a Hopper instance writes O through shared memory and a TMA store (kernels/config_sm90.cuh
    /// Sm90Config::STAGE_O): the two-consumer instances that write the outputs directly (not the GQA-packed and
    /// split ones), into an O tile of their own where it fits beside the Q and K/V tiles, else (single blocks)
    /// over the V stages.
    pub fn stages_o(&self) -> bool {
        self.o_own() || self.o_in_v()
    }
    fn writes_outputs_directly(&self) -> bool {
        // d256's masked form keeps direct stores (kernels/flash_fwd_sm90.cu: it spills with O staged)
        let d256_masked = self.d == 256 && !self.plain;
        self.family == Family::Sm90 && self.bm == 128 && !self.pack_gqa && !self.split_kv && !d256_masked
    }
    /// Sm90Config::O_OWN: an O tile beside the ring.
    fn o_own(&self) -> bool {
        self.writes_outputs_directly() && self.sm90_smem_bytes(true, false) <= SM90_MAX_DYNAMIC_SMEM
    }
    /// Sm90Config::O_IN_V: O over the V stages (one more mbarrier).
    fn o_in_v(&self) -> bool {
        let v_stages = (self.stages * self.bn * self.d * 2) as u32;
        self.writes_outputs_directly() && self.cluster <= 1 && !self.o_own() && self.o_tile_bytes() <= v_stages
    }
    fn tiles_bytes(&self) -> u32 {
        ((self.bm + 2 * self.stages * self.bn) * self.d * 2) as u32
    }
    fn o_tile_bytes(&self) -> u32 {
        (self.bm * self.d * 2) as u32
    }
    /// kernels/config_sm90.cuh Sm90Config::SMEM_BYTES: the tiles, an O tile (`o_tile`), the mbarriers (q_full,
    /// q_empty, four per stage, and `o_read`) and 1 KiB of alignment slack.
    fn sm90_smem_bytes(&self, o_tile: bool, o_read: bool) -> u32 {
        let barriers = 2 + 4 * self.stages as u32 + o_read as u32;
        self.tiles_bytes() + if o_tile { self.o_tile_bytes() } else { 0 } + barriers * 8 + 1024
    }
    /// Dynamic shared memory: Q tile + `stages` K and V tiles, 2-byte elements (kernels/config.cuh
    /// FwdConfig::SMEM_BYTES; kernels/config_sm90.cuh Sm90Config::SMEM_BYTES adds the O tile where it stages
    /// O, its mbarriers and 1 KiB of alignment slack).
    pub fn smem_bytes(&self) -> u32 {
        let tiles = self.tiles_bytes();
        match self.family {
            Family::Sm80 => tiles,
            Family::Sm90 => self.sm90_smem_bytes(self.o_own(), self.o_in_v()),
            // kernels/config_sm100.cuh: + mbarriers, the Tensor Memory address slot, alignment slack.
            Family::Sm100 => tiles + (1 + 4 * self.stages as u32 + 7) * 8 + 16 + 1024,
        }
    }
}

/// Dynamic shared memory one block may opt into on sm_90 (kernels/config_sm90.cuh kSm90MaxDynamicSmem).
const SM90_MAX_DYNAMIC_SMEM: u32 = 227 * 1024;

const fn sm80(dtype: DType, d: i32, bm: i32, bn: i32, warps: i32) -> KernelSpec {
    KernelSpec { family: Family::Sm80, dtype, d, bm, bn, warps, stages: 2, plain: false, variant: Variant::Default, scope: Scope::All, cluster: 1, pack_gqa: false, split_kv: false }
}

/// A Hopper instance: 128 query rows, a producer and two consumer warpgroups.
const fn sm90(dtype: DType, d: i32, bn: i32, stages: i32) -> KernelSpec {
    KernelSpec { family: Family::Sm90, dtype, d, bm: 128, bn, warps: 12, stages, plain: false, variant: Variant::Default, scope: Scope::All, cluster: 1, pack_gqa: false, split_kv: false }
}

/// A Hopper instance with three consumer warpgroups: 192 query rows, 16 warps (plain problems, `scope` says
/// which).
const fn sm90_m192(dtype: DType, d: i32, bn: i32, scope: Scope) -> KernelSpec {
    KernelSpec { bm: 192, warps: 16, scope, ..sm90(dtype, d, bn, 2) }
}

/// A Blackwell instance: 128 query rows, 128 keys per step, a load warp, an MMA warp and a softmax warpgroup.
const fn sm100(dtype: DType, d: i32, stages: i32) -> KernelSpec {
    KernelSpec { family: Family::Sm100, dtype, d, bm: 128, bn: 128, warps: 6, stages, plain: true, variant: Variant::Default, scope: Scope::All, cluster: 1, pack_gqa: false, split_kv: false }
}

/// `k` run by clusters of two blocks that share each K/V tile.
const fn cluster2(k: KernelSpec) -> KernelSpec {
    KernelSpec { cluster: 2, ..k }
}

/// `k` with GQA packing (and split-KV).
const fn packed(k: KernelSpec) -> KernelSpec {
    KernelSpec { pack_gqa: true, split_kv: true, ..k }
}

/// `k` unpacked with split-KV.
const fn split(k: KernelSpec) -> KernelSpec {
    KernelSpec { split_kv: true, ..k }
}

const fn sm90_variant(d: i32, bn: i32, variant: Variant) -> KernelSpec {
    KernelSpec { variant, ..sm90(DType::BF16, d, bn, 2) }
}

/// Every tile shape in the fatbin (each compiled twice: full, and `_plain`); for each (dtype, d) the first
/// listed that fits the device is the default. Tried on H100 and dropped (docs/PERF.md): 128x32x4 warps and
/// 128x64x8 warps at d 64/128 (8-15% and 15-20% slower than 128x64x4 warps); 128x32x8 warps and 64x64x4
/// warps at d 256 (4-20% and 20-25% slower than 64x32x4 warps).
pub const KERNELS: &[KernelSpec] = &[
    // Listed first: where packing pays they are the choice (for plain problems only, as they exist plain).
    packed(sm90(DType::F16, 64, 128, 2)),
    packed(sm90(DType::BF16, 64, 128, 2)),
    packed(sm90(DType::F16, 96, 128, 2)),
    packed(sm90(DType::BF16, 96, 128, 2)),
    packed(sm90(DType::F16, 128, 128, 2)),
    packed(sm90(DType::BF16, 128, 128, 2)),
    packed(sm90(DType::F16, 192, 96, 2)),
    packed(sm90(DType::BF16, 192, 96, 2)),
    packed(sm90(DType::F16, 256, 80, 2)),
    packed(sm90(DType::BF16, 256, 80, 2)),
    split(sm90(DType::F16, 64, 128, 2)),
    split(sm90(DType::BF16, 64, 128, 2)),
    split(sm90(DType::F16, 96, 128, 2)),
    split(sm90(DType::BF16, 96, 128, 2)),
    split(sm90(DType::F16, 128, 128, 2)),
    split(sm90(DType::BF16, 128, 128, 2)),
    split(sm90(DType::F16, 192, 96, 2)),
    split(sm90(DType::BF16, 192, 96, 2)),
    split(sm90(DType::F16, 256, 80, 2)),
    split(sm90(DType::BF16, 256, 80, 2)),
    sm80(DType::F16, 64, 128, 64, 4),
    sm80(DType::BF16, 64, 128, 64, 4),
    sm80(DType::F16, 128, 128, 64, 4),
    sm80(DType::BF16, 128, 128, 64, 4),
    sm80(DType::F16, 256, 64, 32, 4),
    sm80(DType::BF16, 256, 64, 32, 4),
    sm90_m192(DType::F16, 64, 128, Scope::PlainLongOrUnbounded),
    sm90_m192(DType::BF16, 64, 128, Scope::PlainLongOrUnbounded),
    sm90(DType::F16, 64, 128, 2),
    sm90(DType::BF16, 64, 128, 2),
    sm90_m192(DType::F16, 96, 112, Scope::PlainLong),
    sm90_m192(DType::BF16, 96, 112, Scope::PlainLong),
    sm90(DType::F16, 96, 128, 2),
    sm90(DType::BF16, 96, 128, 2),
    cluster2(KernelSpec { scope: Scope::ClusterLong, ..sm90(DType::F16, 128, 176, 2) }),
    cluster2(KernelSpec { scope: Scope::ClusterLong, ..sm90(DType::BF16, 128, 176, 2) }),
    sm90(DType::F16, 128, 128, 2),
    sm90(DType::BF16, 128, 128, 2),
    sm90(DType::F16, 128, 176, 2),
    sm90(DType::BF16, 128, 176, 2),
    cluster2(KernelSpec { scope: Scope::ClusterLong, ..sm90(DType::F16, 192, 112, 2) }),
    cluster2(KernelSpec { scope: Scope::ClusterLong, ..sm90(DType::BF16, 192, 112, 2) }),
    sm90(DType::F16, 192, 96, 2),
    sm90(DType::BF16, 192, 96, 2),
    sm90(DType::F16, 256, 80, 2),
    sm90(DType::BF16, 256, 80, 2),
    cluster2(sm90(DType::F16, 128, 128, 2)),
    cluster2(sm90(DType::BF16, 128, 128, 2)),
    cluster2(sm90(DType::F16, 192, 96, 2)),
    cluster2(sm90(DType::BF16, 192, 96, 2)),
    KernelSpec { scope: Scope::PlainLongOrUnbounded, ..sm90(DType::BF16, 192, 112, 2) },
    cluster2(sm90(DType::F16, 256, 80, 2)),
    cluster2(sm90(DType::BF16, 256, 80, 2)),
    cluster2(sm90_m192(DType::F16, 96, 112, Scope::PlainLong)),
    cluster2(sm90_m192(DType::BF16, 96, 112, Scope::PlainLong)),
    sm90_variant(128, 128, Variant::NoPingpong),
    sm90_variant(128, 128, Variant::RescaleThreshold8),
    sm90_variant(128, 128, Variant::EmulatedExp2),
    sm90_variant(64, 128, Variant::EmulatedExp2),
    KernelSpec { variant: Variant::EmulatedExp2, ..sm90_m192(DType::BF16, 64, 128, Scope::PlainLongOrUnbounded) },
    sm90_variant(128, 128, Variant::SplitPvWait),
    sm90_variant(128, 128, Variant::StagedP),
    sm90_variant(128, 128, Variant::ConditionalRescale),
    sm90_variant(128, 128, Variant::SoftmaxFirst),
    sm100(DType::F16, 64, 3),
    sm100(DType::BF16, 64, 3),
    sm100(DType::F16, 128, 2),
    sm100(DType::BF16, 128, 2),
];

/// Whether the Hopper kernel runs in clusters of two blocks sharing K/V tiles: -1 = where the table's
/// choice does ([`Scope::ClusterLong`]), 0 = never, 1 = wherever a cluster form of the chosen shape fits. A
/// benchmarking aid (ffi `flashattn_ort_gpu_set_prefill_cluster`).
static CLUSTER_MODE: std::sync::atomic::AtomicI32 = std::sync::atomic::AtomicI32::new(-1);

pub fn set_cluster_mode(mode: i32) {
    CLUSTER_MODE.store(mode.clamp(-1, 1), std::sync::atomic::Ordering::Relaxed);
}

/// A forced choice: a kernel's full name, or a family name ("sm80", "sm90") to prefer wherever it can serve.
/// Initialised from the environment variable `FLASHATTN_KERNEL`; the GPU scripts set it through ffi.
static OVERRIDE: std::sync::RwLock<Option<Option<String>>> = std::sync::RwLock::new(None);

/// Every entry point of the fatbin: each shape of [`KERNELS`], full and plain (plain only for
/// [`Family::plain_only`], for a [`Scope`] narrower than `All` and for the split-KV instances).
pub fn all_kernels() -> impl Iterator<Item = KernelSpec> {
    KERNELS.iter().flat_map(|k| {
        let full = (!k.family.plain_only() && k.scope == Scope::All && !k.split_kv).then_some(KernelSpec { plain: false, ..*k });
        full.into_iter().chain([KernelSpec { plain: true, ..*k }])
    })
}

/// Prefers a kernel (its full name) or a family ("sm80", "sm90", "sm100") wherever it can serve a problem; None
/// restores the default choice.
pub fn set_override(name: Option<String>) {
    *OVERRIDE.write().unwrap_or_else(|e| e.into_inner()) = Some(name);
}

fn override_name() -> Option<String> {
    if let Some(set) = OVERRIDE.read().unwrap_or_else(|e| e.into_inner()).as_ref() {
        return set.clone();
    }
    let from_env = std::env::var("FLASHATTN_KERNEL").ok().filter(|v| !v.is_empty());
    OVERRIDE.write().unwrap_or_else(|e| e.into_inner()).get_or_insert(from_env).clone()
}

/// Which families can run `p` on a device of compute capability `cc` whose self-check said `verdict`.
fn family_serves(family: Family, p: &AttnParams, cc: i32, verdict: &Verdict) -> bool {
    match family {
        Family::Sm80 => cc >= 80,
        // The sm_90a cubin runs on 9.0 only; TMA needs 16-byte aligned bases and strides.
        Family::Sm90 => cc == 90 && !verdict.failed() && super::tensor_map::tma_compatible(p),
        // The sm_100a cubin runs on 10.0 only (10.3 and 12.x would get the trapping stand-in); first scope:
        // no mask tensor, no softcap (the plain kernels), no key_seqlens (V rows past a key length would
        // need zeroing).
        Family::Sm100 => {
            cc == 100
                && verdict.trusts_sm100()
                && p.softcap <= 0.0
                && p.mask_kind == 0
                && p.has_seqlens == 0
                && super::tensor_map::tma_compatible(p)
        }
    }
}

/// The best kernel for `p` on a device of compute capability `cc` (major*10 + minor) whose blocks may use
/// up to `max_smem` bytes of shared memory and whose self-check said `verdict`, honouring a forced kernel or
/// family ([`set_override`]).
pub fn select(p: &AttnParams, cc: i32, max_smem: i32, verdict: &Verdict) -> Result<KernelSpec, GpuError> {
    select_forced(p, cc, max_smem, verdict, override_name().as_deref())
}

/// [`select`] without the kernels that run in clusters.
pub fn select_single_block(p: &AttnParams, cc: i32, max_smem: i32, verdict: &Verdict) -> Result<KernelSpec, GpuError> {
    select_in(p, cc, max_smem, verdict, override_name().as_deref(), 0)
}

pub(crate) fn select_forced(p: &AttnParams, cc: i32, max_smem: i32, verdict: &Verdict, forced: Option<&str>) -> Result<KernelSpec, GpuError> {
    select_in(p, cc, max_smem, verdict, forced, CLUSTER_MODE.load(std::sync::atomic::Ordering::Relaxed))
}

/// [`select_forced`] with cluster mode `cluster_mode` (see [`set_cluster_mode`]).
fn select_in(p: &AttnParams, cc: i32, max_smem: i32, verdict: &Verdict, forced: Option<&str>, cluster_mode: i32) -> Result<KernelSpec, GpuError> {
    let dtype = match p.dtype {
        1 => DType::F16,
        2 => DType::BF16,
        0 => return Err(GpuError::new("float32 inputs have no CUDA kernel (use float16 or bfloat16; float32 runs on the CPU kernel)")),
        d => return Err(GpuError::new(format!("unknown dtype code {d}"))),
    };
    if cc < 80 {
        return Err(GpuError::new(format!("the CUDA kernels need compute capability 8.0 or newer, this GPU has {}.{}", cc / 10, cc % 10)));
    }
    let need = p.head_dim.max(p.head_dim_v);
    if need < 1 || need > 256 {
        return Err(GpuError::new(format!("head_dim {} / value head_dim {} outside 1..=256", p.head_dim, p.head_dim_v)));
    }
    let plain_ok = p.softcap <= 0.0 && p.mask_kind == 0;
    let forced_family = forced.and_then(|f| [Family::Sm80, Family::Sm90, Family::Sm100].into_iter().find(|fam| fam.name() == f));
    // (A kernel's name is built only where a name is forced: built for every candidate, the names cost the
    // selection ~10 µs of host time per call.)
    let is_forced = |k: &KernelSpec| forced.is_some_and(|f| k.name() == f);
    let fits = |k: &KernelSpec| {
        k.dtype == dtype
            && k.d >= need
            && k.smem_bytes() as i64 <= max_smem as i64
            && (!k.plain || plain_ok)
            && (k.variant == Variant::Default || is_forced(k))
            && (k.cluster == 1 || (cluster_mode != 0 && p.window_left < 0 && p.window_right < 0))
            && (!k.pack_gqa || (plain_ok && packing_possible(p, k.bm) && (is_forced(k) || packing_pays(p, k.bm))))
            && (!k.split_kv || k.pack_gqa || (plain_ok && is_forced(k)))
            // (a narrower scope's kernel exists in plain form only: a forced full name of it matches nothing)
            && ((is_forced(k) && (k.plain || k.scope == Scope::All))
                || match k.scope {
                    Scope::All => true,
                    Scope::PlainLong => plain_ok && p.seq_kv >= LONG_MIN_KEYS,
                    Scope::PlainLongOrUnbounded => {
                        plain_ok && (p.seq_kv >= LONG_MIN_KEYS || (p.window_left < 0 && p.window_right < 0))
                    }
                    Scope::ClusterLong => plain_ok && p.seq_kv >= CLUSTER_MIN_KEYS && query_tiles_pair_up(p, k.bm),
                })
            && family_serves(k.family, p, cc, verdict)
    };
    if let Some(name) = forced {
        if let Some(k) = all_kernels().filter(fits).find(|k| k.name() == name) {
            return Ok(k);
        }
    }
    // The preferred family that can serve (a forced family first); in it the smallest padded head dim that
    // covers the problem; among those, the first listed; plain if allowed.
    let family = forced_family.into_iter().chain([Family::Sm100, Family::Sm90, Family::Sm80]).find(|f| KERNELS.iter().any(|k| k.family == *f && fits(k)));
    let d = KERNELS.iter().filter(|k| Some(k.family) == family && fits(k)).map(|k| k.d).min();
    let chosen = KERNELS
        .iter()
        .filter(|k| Some(k.family) == family && fits(k))
        .find(|k| Some(k.d) == d)
        .map(|k| KernelSpec { plain: plain_ok, ..*k })
        .ok_or_else(|| GpuError::new(format!("no compiled kernel fits head_dim {need} in {max_smem} bytes of shared memory")))?;
    // The same shape run by clusters, where one is compiled and fits (listed after the single-block shapes, it
    // is never the first fit).
    let clustered = KernelSpec { cluster: 2, ..chosen };
    if chosen.cluster == 1 && cluster_mode == 1 && all_kernels().filter(fits).any(|k| k == clustered) {
        return Ok(clustered);
    }
    Ok(chosen)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pick(p: &AttnParams, cc: i32, max_smem: i32, forced: Option<&str>) -> Result<KernelSpec, GpuError> {
        select_forced(p, cc, max_smem, &Verdict::NotNeeded, forced)
    }

    fn params(dtype: DType, d: i32, dv: i32) -> AttnParams {
        AttnParams { dtype: dtype as i32, head_dim: d, head_dim_v: dv, ..Default::default() }
    }

    /// A BSNH problem with 16-byte aligned tensors (TMA can address it), no causal/window bounds
    /// (`AttnParams::default()` has window bounds 0, a one-key window).
    fn aligned(dtype: DType, d: i32, dv: i32) -> AttnParams {
        let (h, s) = (8, 1024);
        AttnParams {
            window_left: -1,
            window_right: -1,
            q_ptr: 1 << 20, k_ptr: 2 << 20, v_ptr: 3 << 20, batch: 2, heads_q: h, heads_kv: h, seq_q: s, seq_kv: s,
            q_row_stride: (h * d) as i64, q_head_stride: d as i64, q_batch_stride: (s * h * d) as i64,
            k_row_stride: (h * d) as i64, k_head_stride: d as i64, k_batch_stride: (s * h * d) as i64,
            v_row_stride: (h * dv) as i64, v_head_stride: dv as i64, v_batch_stride: (s * h * dv) as i64,
            ..params(dtype, d, dv)
        }
    }

    #[test]
    fn hopper_serves_aligned_problems_on_9_0_only() {
        let h100 = 227 * 1024;
        let k = pick(&aligned(DType::BF16, 128, 128), 90, h100, None).unwrap();
        assert_eq!(k.name(), "flash_fwd_sm90_bf16_d128_m128n128w12_plain");
        assert!(k.smem_bytes() as i32 <= h100);
        // d64 and d96: three consumer warpgroups for plain problems over many keys, causal or not; else two
        let long96 = AttnParams { seq_q: LONG_MIN_KEYS, seq_kv: LONG_MIN_KEYS, ..aligned(DType::F16, 96, 96) };
        let d96 = pick(&long96, 90, h100, None).unwrap();
        assert_eq!((d96.name().as_str(), d96.panel_cols(), d96.threads()), ("flash_fwd_sm90_f16_d96_m192n112w16_plain", 32, 512));
        let short96 = AttnParams { seq_kv: LONG_MIN_KEYS - 1, ..long96 };
        assert_eq!(pick(&short96, 90, h100, None).unwrap().name(), "flash_fwd_sm90_f16_d96_m128n128w12_plain");
        assert_eq!(pick(&AttnParams { head_dim: 80, head_dim_v: 64, ..long96 }, 90, h100, None).unwrap().name(), "flash_fwd_sm90_f16_d96_m192n112w16_plain");
        let masked96 = AttnParams { softcap: 30.0, ..long96 };
        assert_eq!(pick(&masked96, 90, h100, None).unwrap().name(), "flash_fwd_sm90_f16_d96_m128n128w12");
        let long = AttnParams { seq_q: LONG_MIN_KEYS, seq_kv: LONG_MIN_KEYS, ..aligned(DType::BF16, 64, 64) };
        assert_eq!(pick(&long, 90, h100, None).unwrap().name(), "flash_fwd_sm90_bf16_d64_m192n128w16_plain");
        let causal = AttnParams { window_right: 0, ..long };
        assert_eq!(pick(&causal, 90, h100, None).unwrap().name(), "flash_fwd_sm90_bf16_d64_m192n128w16_plain");
        assert_eq!(pick(&aligned(DType::BF16, 64, 64), 90, h100, None).unwrap().name(), "flash_fwd_sm90_bf16_d64_m192n128w16_plain");
        let short_causal = AttnParams { window_right: 0, ..aligned(DType::BF16, 64, 64) };
        assert_eq!(pick(&short_causal, 90, h100, None).unwrap().name(), "flash_fwd_sm90_bf16_d64_m128n128w12_plain");
        let masked = AttnParams { mask_kind: 2, ..long };
        assert_eq!(pick(&masked, 90, h100, None).unwrap().name(), "flash_fwd_sm90_bf16_d64_m128n128w12");
        // a forced 192-row kernel serves what it fits, and has no full form
        let m192 = "flash_fwd_sm90_bf16_d64_m192n128w16_plain";
        assert_eq!(pick(&short_causal, 90, h100, Some(m192)).unwrap().name(), m192);
        assert_eq!(pick(&masked, 90, h100, Some("flash_fwd_sm90_bf16_d64_m192n128w16")).unwrap().name(), "flash_fwd_sm90_bf16_d64_m128n128w12");
        assert_eq!(pick(&aligned(DType::BF16, 128, 128), 90, h100, None).unwrap().panel_cols(), 64);
        assert_eq!(pick(&aligned(DType::BF16, 192, 128), 90, h100, None).unwrap().d, 192);
        assert_eq!(pick(&aligned(DType::BF16, 256, 256), 90, h100, None).unwrap().name(), "flash_fwd_sm90_bf16_d256_m128n80w12_plain");
        for cc in [80, 86, 89, 100, 120] {
            assert_eq!(pick(&aligned(DType::BF16, 128, 128), cc, h100, None).unwrap().family, Family::Sm80, "cc {cc}");
        }
        let odd_stride = AttnParams { k_row_stride: 8 * 128 + 4, ..aligned(DType::BF16, 128, 128) };
        assert_eq!(pick(&odd_stride, 90, h100, None).unwrap().family, Family::Sm80);
        // O leaves through shared memory and a TMA store where a two-consumer tile has room for it
        let d128 = pick(&aligned(DType::BF16, 128, 128), 90, h100, None).unwrap();
        assert!(d128.stages_o() && pick(&masked96, 90, h100, None).unwrap().stages_o());
        assert_eq!(d128.smem_bytes(), (32 + 4 * 32 + 32) * 1024 + 10 * 8 + 1024);
        assert!(!pick(&long, 90, h100, None).unwrap().stages_o()); // 192 rows
        // no room for an O tile: O over the V stages, single blocks only
        let d256 = pick(&aligned(DType::BF16, 256, 256), 90, h100, None).unwrap();
        assert!(d256.stages_o() && d256.o_in_v() && !d256.o_own());
        assert!(!KernelSpec { plain: false, ..d256 }.stages_o());
        assert_eq!(d256.smem_bytes(), (64 + 4 * 40) * 1024 + 11 * 8 + 1024);
        assert!(!KernelSpec { pack_gqa: true, ..d128 }.stages_o() && !KernelSpec { split_kv: true, ..d128 }.stages_o());
        assert!(KernelSpec { bn: 176, ..d128 }.o_in_v() && !KernelSpec { bn: 176, cluster: 2, ..d128 }.stages_o());
        for k in KERNELS.iter().filter(|k| k.family == Family::Sm90) {
            assert!(k.smem_bytes() as i32 <= h100, "{} needs {} bytes", k.name(), k.smem_bytes());
        }
    }

    #[test]
    fn a_forced_family_or_kernel_wins_where_it_fits() {
        let h100 = 227 * 1024;
        let p = aligned(DType::BF16, 128, 128);
        assert_eq!(pick(&p, 90, h100, Some("sm80")).unwrap().name(), "flash_fwd_sm80_bf16_d128_m128n64w4_plain");
        assert_eq!(pick(&p, 90, h100, Some("sm90")).unwrap().family, Family::Sm90);
        // A family that cannot serve is a preference only: the default choice stands.
        assert_eq!(pick(&p, 80, h100, Some("sm90")).unwrap().family, Family::Sm80);
        assert_eq!(pick(&p, 90, h100, Some("flash_fwd_sm80_bf16_d256_m64n32w4")).unwrap().name(), "flash_fwd_sm80_bf16_d256_m64n32w4");
    }

    #[test]
    fn clusters_serve_bounds_free_problems_when_asked() {
        let h100 = 227 * 1024;
        let pick_c = |p: &AttnParams, mode: i32, forced: Option<&str>| select_in(p, 90, h100, &Verdict::NotNeeded, forced, mode).unwrap().name();
        let p = aligned(DType::BF16, 128, 128);
        assert_eq!(pick_c(&p, 1, None), "flash_fwd_sm90_bf16_d128_m128n128w12c2_plain");
        assert_eq!(pick_c(&p, 0, None), "flash_fwd_sm90_bf16_d128_m128n128w12_plain");
        assert_eq!(pick_c(&AttnParams { mask_kind: 2, ..p }, 1, None), "flash_fwd_sm90_bf16_d128_m128n128w12c2");
        assert_eq!(pick_c(&aligned(DType::F16, 256, 256), 1, None), "flash_fwd_sm90_f16_d256_m128n80w12c2_plain");
        let long96 = AttnParams { seq_q: LONG_MIN_KEYS, seq_kv: LONG_MIN_KEYS, ..aligned(DType::F16, 96, 96) };
        assert_eq!(pick_c(&long96, 1, None), "flash_fwd_sm90_f16_d96_m192n112w16c2_plain");
        // no cluster form: d64 (one 64-column panel to share), the 128-row d96 tile
        assert_eq!(pick_c(&aligned(DType::BF16, 64, 64), 1, None), "flash_fwd_sm90_bf16_d64_m192n128w16_plain");
        assert_eq!(pick_c(&aligned(DType::F16, 96, 96), 1, None), "flash_fwd_sm90_f16_d96_m128n128w12_plain");
        // causal or windowed: tiles of a cluster would need different keys
        for (wl, wr) in [(-1, 0), (100, -1), (-1, 5)] {
            let bounded = AttnParams { window_left: wl, window_right: wr, ..p };
            assert_eq!(pick_c(&bounded, 1, None), "flash_fwd_sm90_bf16_d128_m128n128w12_plain");
            let forced = "flash_fwd_sm90_bf16_d128_m128n128w12c2_plain";
            assert_eq!(pick_c(&bounded, 1, Some(forced)), "flash_fwd_sm90_bf16_d128_m128n128w12_plain");
        }
        // on other GPUs nothing changes
        assert_eq!(select_in(&p, 80, h100, &Verdict::NotNeeded, None, 1).unwrap().family, Family::Sm80);
        // by default: d128 plain bounds-free problems over >= CLUSTER_MIN_KEYS keys whose query tiles pair up
        let long = AttnParams { seq_q: 2048, seq_kv: CLUSTER_MIN_KEYS, ..p };
        assert_eq!(pick_c(&long, -1, None), "flash_fwd_sm90_bf16_d128_m128n176w12c2_plain");
        assert_eq!(pick_c(&long, 1, None), "flash_fwd_sm90_bf16_d128_m128n176w12c2_plain");
        assert_eq!(pick_c(&long, 0, None), "flash_fwd_sm90_bf16_d128_m128n128w12_plain");
        assert_eq!(pick_c(&AttnParams { seq_kv: CLUSTER_MIN_KEYS - 1, ..long }, -1, None), "flash_fwd_sm90_bf16_d128_m128n128w12_plain");
        assert_eq!(pick_c(&AttnParams { window_right: 0, ..long }, -1, None), "flash_fwd_sm90_bf16_d128_m128n128w12_plain");
        assert_eq!(pick_c(&AttnParams { mask_kind: 1, ..long }, -1, None), "flash_fwd_sm90_bf16_d128_m128n128w12");
        // 3 query tiles: one of the two clusters would carry a block without rows
        assert_eq!(pick_c(&AttnParams { seq_q: 300, ..long }, -1, None), "flash_fwd_sm90_bf16_d128_m128n128w12_plain");
        assert_eq!(pick_c(&AttnParams { seq_q: 15 * 128, ..long }, -1, None), "flash_fwd_sm90_bf16_d128_m128n176w12c2_plain");
        assert_eq!(pick_c(&AttnParams { seq_q: 14 * 128 - 5, ..long }, -1, None), "flash_fwd_sm90_bf16_d128_m128n176w12c2_plain");
        assert_eq!(pick_c(&AttnParams { seq_q: 13 * 128, ..long }, -1, None), "flash_fwd_sm90_bf16_d128_m128n128w12_plain");
        assert_eq!(pick_c(&AttnParams { dtype: DType::F16 as i32, ..long }, -1, None), "flash_fwd_sm90_f16_d128_m128n176w12c2_plain");
        let long192 = AttnParams { seq_q: 2048, seq_kv: CLUSTER_MIN_KEYS, ..aligned(DType::F16, 192, 128) };
        assert_eq!(pick_c(&long192, -1, None), "flash_fwd_sm90_f16_d192_m128n112w12c2_plain");
        assert_eq!(pick_c(&AttnParams { seq_kv: 4096, ..long192 }, -1, None), "flash_fwd_sm90_f16_d192_m128n96w12_plain");
        assert_eq!(pick_c(&AttnParams { seq_kv: 4096, ..long192 }, 1, None), "flash_fwd_sm90_f16_d192_m128n96w12c2_plain");
        let long256 = AttnParams { seq_q: 2048, seq_kv: CLUSTER_MIN_KEYS, ..aligned(DType::BF16, 256, 256) };
        assert_eq!(pick_c(&long256, -1, None), "flash_fwd_sm90_bf16_d256_m128n80w12_plain");
    }

    #[test]
    fn picks_smallest_padded_head_dim() {
        let h100 = 227 * 1024;
        assert_eq!(select(&params(DType::BF16, 64, 64), 90, h100, &Verdict::NotNeeded).unwrap().d, 64);
        assert_eq!(select(&params(DType::BF16, 17, 17), 90, h100, &Verdict::NotNeeded).unwrap().d, 64);
        assert_eq!(select(&params(DType::F16, 80, 128), 80, h100, &Verdict::NotNeeded).unwrap().d, 128);
        assert_eq!(select(&params(DType::F16, 129, 64), 86, 99 * 1024, &Verdict::NotNeeded).unwrap().d, 256);
        assert_eq!(select(&params(DType::F16, 256, 256), 86, 99 * 1024, &Verdict::NotNeeded).unwrap().name(), "flash_fwd_sm80_f16_d256_m64n32w4_plain");
        assert_eq!(select(&params(DType::BF16, 256, 256), 90, h100, &Verdict::NotNeeded).unwrap().name(), "flash_fwd_sm80_bf16_d256_m64n32w4_plain");
        let masked = AttnParams { mask_kind: 1, ..params(DType::BF16, 128, 128) };
        assert_eq!(select(&masked, 90, h100, &Verdict::NotNeeded).unwrap().name(), "flash_fwd_sm80_bf16_d128_m128n64w4");
        let capped = AttnParams { softcap: 30.0, ..params(DType::BF16, 128, 128) };
        assert!(!select(&capped, 90, h100, &Verdict::NotNeeded).unwrap().plain);
    }

    #[test]
    fn refuses_what_has_no_kernel() {
        assert!(select(&params(DType::F32, 64, 64), 90, 1 << 20, &Verdict::NotNeeded).unwrap_err().0.contains("float32"));
        assert!(select(&params(DType::F16, 64, 64), 75, 1 << 20, &Verdict::NotNeeded).unwrap_err().0.contains("8.0"));
        assert!(select(&params(DType::F16, 300, 64), 90, 1 << 20, &Verdict::NotNeeded).is_err());
        assert!(select(&params(DType::F16, 256, 256), 90, 48 * 1024, &Verdict::NotNeeded).unwrap_err().0.contains("shared memory"));
    }

    #[test]
    fn every_kernel_is_listed_once() {
        let mut names: Vec<String> = all_kernels().map(|k| k.name()).collect();
        names.sort();
        names.dedup();
        let plain_only = KERNELS.iter().filter(|k| k.family.plain_only() || k.scope != Scope::All || k.split_kv).count();
        assert_eq!(names.len(), 2 * KERNELS.len() - plain_only);
    }

    #[test]
    fn gqa_packing_serves_plain_groups_whose_tiles_it_fills() {
        // 32 query heads over 8 KV heads: 4 per group
        let gqa = |sq: i32, skv: i32| AttnParams { heads_q: 32, heads_kv: 8, seq_q: sq, seq_kv: skv, ..aligned(DType::BF16, 128, 128) };
        let packed = pick(&gqa(40, 4096), 90, 227 * 1024, None).unwrap();
        assert!(packed.pack_gqa && packed.plain, "{}", packed.name());
        assert_eq!(packed.name(), "flash_fwd_sm90_bf16_d128_m128n128w12_plain_packgqa");
        // 1024 rows fill their tiles either way: no packing
        assert!(!pick(&gqa(1024, 1024), 90, 227 * 1024, None).unwrap().pack_gqa);
        // 200 rows: 2 tiles a head (8 a group) against 7 packed
        assert!(pick(&gqa(200, 4096), 90, 227 * 1024, None).unwrap().pack_gqa);
        // causal and windows stay packed (rows map to positions)
        assert!(pick(&AttnParams { window_left: -1, window_right: 0, ..gqa(40, 4096) }, 90, 227 * 1024, None).unwrap().pack_gqa);
        // a mask tensor or softcap: the full kernel, unpacked
        assert!(!pick(&AttnParams { softcap: 30.0, ..gqa(40, 4096) }, 90, 227 * 1024, None).unwrap().pack_gqa);
        assert!(!pick(&AttnParams { mask_kind: 1, ..gqa(40, 4096) }, 90, 227 * 1024, None).unwrap().pack_gqa);
        // groups that are not a power of two are never packed, even when forced; MHA only when forced
        let name = "flash_fwd_sm90_bf16_d128_m128n128w12_plain_packgqa";
        assert!(!pick(&AttnParams { heads_q: 24, ..gqa(40, 4096) }, 90, 227 * 1024, Some(name)).unwrap().pack_gqa);
        assert!(!pick(&AttnParams { heads_kv: 32, ..gqa(40, 4096) }, 90, 227 * 1024, None).unwrap().pack_gqa);
        assert!(pick(&AttnParams { heads_kv: 32, ..gqa(40, 4096) }, 90, 227 * 1024, Some(name)).unwrap().pack_gqa);
        // forced by name where it is possible but would not pay
        assert_eq!(pick(&gqa(1024, 1024), 90, 227 * 1024, Some(name)).unwrap().name(), name);
        // a query whose head stride TMA cannot step (72 bytes) is not packed
        let odd_heads = AttnParams { q_head_stride: 36, ..gqa(40, 4096) };
        assert!(!packing_possible(&odd_heads, 128));
        // never on the portable family
        assert!(!pick(&gqa(40, 4096), 80, 163 * 1024, None).unwrap().pack_gqa);
    }

    #[test]
    fn blackwell_serves_10_0_only_after_its_self_check_passed_or_was_skipped() {
        let b200 = 227 * 1024;
        let p = aligned(DType::BF16, 128, 128);
        let pick_v = |p: &AttnParams, cc: i32, v: &Verdict, forced: Option<&str>| select_forced(p, cc, b200, v, forced).unwrap();
        for v in [Verdict::Passed, Verdict::Skipped] {
            assert_eq!(pick_v(&p, 100, &v, None).name(), "flash_fwd_sm100_bf16_d128_m128n128w6_plain");
            let causal = AttnParams { window_right: 0, ..aligned(DType::F16, 64, 64) };
            assert_eq!(pick_v(&causal, 100, &v, None).name(), "flash_fwd_sm100_f16_d64_m128n128w6_plain");
            assert_eq!(pick_v(&aligned(DType::F16, 80, 80), 100, &v, None).d, 128);
            assert!(pick_v(&p, 100, &v, None).smem_bytes() as i32 <= b200);
            // A forced portable family or kernel still wins.
            assert_eq!(pick_v(&p, 100, &v, Some("sm80")).family, Family::Sm80);
        }
        // Not checked (yet), or rejected by the check: the portable kernel.
        for v in [Verdict::NotNeeded, Verdict::Failed("disagreed".into())] {
            assert_eq!(pick_v(&p, 100, &v, None).family, Family::Sm80, "{v:?}");
            assert_eq!(pick_v(&p, 100, &v, Some("sm100")).family, Family::Sm80, "{v:?}");
            assert_eq!(pick_v(&p, 100, &v, Some("flash_fwd_sm100_bf16_d128_m128n128w6_plain")).family, Family::Sm80, "{v:?}");
        }
        // Never on another compute capability, whatever the verdict or the preference.
        for cc in [80, 86, 89, 90, 103, 110, 120] {
            for v in [Verdict::NotNeeded, Verdict::Passed, Verdict::Skipped] {
                assert_ne!(pick_v(&p, cc, &v, Some("sm100")).family, Family::Sm100, "cc {cc} {v:?}");
            }
        }
        // What the first scope does not cover goes to the portable kernel on 10.0.
        let trusted = Verdict::Passed;
        let masked = AttnParams { mask_kind: 1, mask_ptr: 1 << 24, ..p };
        let capped = AttnParams { softcap: 30.0, ..p };
        let ragged = AttnParams { has_seqlens: 1, seqlens_ptr: 1 << 24, ..p };
        let odd_stride = AttnParams { k_row_stride: 8 * 128 + 4, ..p };
        for q in [masked, capped, ragged, odd_stride, aligned(DType::BF16, 192, 192), aligned(DType::BF16, 256, 256)] {
            assert_eq!(pick_v(&q, 100, &trusted, None).family, Family::Sm80, "{q:?}");
        }
    }

    #[test]
    fn a_failed_self_check_leaves_only_the_portable_kernel() {
        let h100 = 227 * 1024;
        let p = aligned(DType::BF16, 128, 128);
        assert_eq!(select_forced(&p, 90, h100, &Verdict::Passed, None).unwrap().family, Family::Sm90);
        assert_eq!(select_forced(&p, 90, h100, &Verdict::Failed("trap".into()), None).unwrap().family, Family::Sm80);
        assert_eq!(select_forced(&p, 90, h100, &Verdict::Failed("trap".into()), Some("sm90")).unwrap().family, Family::Sm80);
    }
}
