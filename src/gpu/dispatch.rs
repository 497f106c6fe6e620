//! Which kernel serves a problem: by compute capability (sm_80+ portable kernel today; the Hopper kernel
//! plugs in here), element type, and head dimension rounded up to a compiled padded size.
//!
//! The table below must list exactly the entry points of kernels/flash_fwd_sm80.cu; the names spell the
//! tile shape, so a mismatch fails loudly at module load ("named symbol not found"), and the kernel traps
//! if launched with less shared memory than its shape needs.

use crate::params::{AttnParams, DType};

use super::driver::GpuError;

/// One compiled forward kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KernelSpec {
    pub family: Family,
    pub dtype: DType,
    /// Padded head dim (covers both head_dim and head_dim_v).
    pub d: i32,
    /// Query rows per block, key rows per step, warps per block.
    pub bm: i32,
    pub bn: i32,
    pub warps: i32,
    /// The lean instance for problems with no softcap and no mask tensor (name suffix `_plain`).
    pub plain: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    /// mma.sync + cp.async + ldmatrix: any GPU of compute capability 8.0 or newer.
    Sm80,
}

impl KernelSpec {
    pub fn name(&self) -> String {
        let t = match self.dtype {
            DType::F16 => "f16",
            DType::BF16 => "bf16",
            DType::F32 => "f32",
        };
        let fam = match self.family {
            Family::Sm80 => "sm80",
        };
        let suffix = if self.plain { "_plain" } else { "" };
        format!("flash_fwd_{fam}_{t}_d{}_m{}n{}w{}{suffix}", self.d, self.bm, self.bn, self.warps)
    }
    pub fn threads(&self) -> u32 {
        self.warps as u32 * 32
    }
    /// Dynamic shared memory: Q tile + double-buffered K and V tiles, 2-byte elements
    /// (kernels/config.cuh, FwdConfig::SMEM_BYTES).
    pub fn smem_bytes(&self) -> u32 {
        ((self.bm + 2 * 2 * self.bn) * self.d * 2) as u32
    }
}

const fn sm80(dtype: DType, d: i32, bm: i32, bn: i32, warps: i32) -> KernelSpec {
    KernelSpec { family: Family::Sm80, dtype, d, bm, bn, warps, plain: false }
}

/// Every tile shape in the fatbin (each compiled twice: full, and `_plain`); for each (dtype, d) the first
/// listed that fits the device is the default. Tried on H100 and dropped (docs/PERF.md): 128x32x4 warps and
/// 128x64x8 warps at d 64/128 (8-15% and 15-20% slower than 128x64x4 warps); 128x32x8 warps and 64x64x4
/// warps at d 256 (4-20% and 20-25% slower than 64x32x4 warps).
pub const KERNELS: &[KernelSpec] = &[
    sm80(DType::F16, 64, 128, 64, 4),
    sm80(DType::BF16, 64, 128, 64, 4),
    sm80(DType::F16, 128, 128, 64, 4),
    sm80(DType::BF16, 128, 128, 64, 4),
    sm80(DType::F16, 256, 64, 32, 4),
    sm80(DType::BF16, 256, 64, 32, 4),
];

static OVERRIDE: std::sync::RwLock<Option<String>> = std::sync::RwLock::new(None);

/// Every entry point of the fatbin: each shape of [`KERNELS`], full and plain.
pub fn all_kernels() -> impl Iterator<Item = KernelSpec> {
    KERNELS.iter().flat_map(|k| [*k, KernelSpec { plain: true, ..*k }])
}

/// Benchmarking aid: prefer the kernel of this name whenever it can serve a problem (None: the default).
pub fn set_override(name: Option<String>) {
    *OVERRIDE.write().unwrap_or_else(|e| e.into_inner()) = name;
}

/// The best kernel for `p` on a device of compute capability `cc` (major*10 + minor) whose blocks may use
/// up to `max_smem` bytes of shared memory.
pub fn select(p: &AttnParams, cc: i32, max_smem: i32) -> Result<KernelSpec, GpuError> {
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
    let fits = |k: &KernelSpec| {
        k.family == Family::Sm80 && k.dtype == dtype && k.d >= need && k.smem_bytes() as i64 <= max_smem as i64 && (!k.plain || plain_ok)
    };
    if let Some(name) = OVERRIDE.read().unwrap_or_else(|e| e.into_inner()).as_deref() {
        if let Some(k) = all_kernels().filter(fits).find(|k| k.name() == name) {
            return Ok(k);
        }
    }
    // The smallest padded head dim that covers the problem; among those, the first listed; plain if allowed.
    let d = KERNELS.iter().filter(|k| fits(k)).map(|k| k.d).min();
    KERNELS
        .iter()
        .filter(|k| fits(k))
        .find(|k| Some(k.d) == d)
        .map(|k| KernelSpec { plain: plain_ok, ..*k })
        .ok_or_else(|| GpuError::new(format!("no compiled kernel fits head_dim {need} in {max_smem} bytes of shared memory")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(dtype: DType, d: i32, dv: i32) -> AttnParams {
        AttnParams { dtype: dtype as i32, head_dim: d, head_dim_v: dv, ..Default::default() }
    }

    #[test]
    fn picks_smallest_padded_head_dim() {
        let h100 = 227 * 1024;
        assert_eq!(select(&params(DType::BF16, 64, 64), 90, h100).unwrap().d, 64);
        assert_eq!(select(&params(DType::BF16, 17, 17), 90, h100).unwrap().d, 64);
        assert_eq!(select(&params(DType::F16, 80, 128), 80, h100).unwrap().d, 128);
        assert_eq!(select(&params(DType::F16, 129, 64), 86, 99 * 1024).unwrap().d, 256);
        assert_eq!(select(&params(DType::F16, 256, 256), 86, 99 * 1024).unwrap().name(), "flash_fwd_sm80_f16_d256_m64n32w4_plain");
        assert_eq!(select(&params(DType::BF16, 256, 256), 90, h100).unwrap().name(), "flash_fwd_sm80_bf16_d256_m64n32w4_plain");
        let masked = AttnParams { mask_kind: 1, ..params(DType::BF16, 128, 128) };
        assert_eq!(select(&masked, 90, h100).unwrap().name(), "flash_fwd_sm80_bf16_d128_m128n64w4");
        let capped = AttnParams { softcap: 30.0, ..params(DType::BF16, 128, 128) };
        assert!(!select(&capped, 90, h100).unwrap().plain);
    }

    #[test]
    fn refuses_what_has_no_kernel() {
        assert!(select(&params(DType::F32, 64, 64), 90, 1 << 20).unwrap_err().0.contains("float32"));
        assert!(select(&params(DType::F16, 64, 64), 75, 1 << 20).unwrap_err().0.contains("8.0"));
        assert!(select(&params(DType::F16, 300, 64), 90, 1 << 20).is_err());
        assert!(select(&params(DType::F16, 256, 256), 90, 48 * 1024).unwrap_err().0.contains("shared memory"));
    }

    #[test]
    fn every_kernel_is_listed_once() {
        let mut names: Vec<String> = all_kernels().map(|k| k.name()).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), 2 * KERNELS.len());
    }
}
