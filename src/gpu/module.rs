//! The kernels' fatbin, embedded in the library at build time, and its per-device loaded form: loaded
//! lazily, once per device (thread-safe), into the device's primary context — the one ONNX Runtime's CUDA
//! execution provider (and PyTorch) use.

use std::collections::HashMap;
use std::sync::OnceLock;

use cudarc::driver::sys;

use super::dispatch::{all_kernels, Family, KernelSpec, Verdict};
use super::driver::{check, cluster_dimension, device_attribute, CurrentContext, GpuError};

/// The fatbin (sm_80, sm_90a, sm_100a cubins + compute_80 PTX) built by build.rs.
#[cfg(flashattn_kernels)]
pub static FATBIN: Option<&[u8]> = Some(include_bytes!(concat!(env!("OUT_DIR"), "/flashattn_kernels.fatbin")));
#[cfg(not(flashattn_kernels))]
pub static FATBIN: Option<&[u8]> = None;

/// The most devices one process is served on.
pub const MAX_DEVICES: usize = 64;

/// One device's loaded kernels.
pub struct DeviceKernels {
    pub ordinal: i32,
    /// The primary context the module lives in.
    pub ctx: sys::CUcontext,
    /// major*10 + minor.
    pub cc: i32,
    pub max_smem_optin: i32,
    pub num_sms: i32,
    /// How many clusters of the decode kernel's cluster entries the device holds at once (all 0 before compute
    /// capability 9.0).
    pub clusters: super::decode::ClusterResidency,
    /// The first-use self-check's verdict (selfcheck.rs): whether the Blackwell kernel may serve, or only
    /// the portable one.
    pub verdict: Verdict,
    functions: HashMap<String, sys::CUfunction>,
    /// How many blocks of each forward kernel that runs in clusters the device holds at once.
    fwd_cluster_blocks: HashMap<String, i32>,
}

/// How a forward (prefill) problem runs on a device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ForwardPlan {
    pub spec: KernelSpec,
    /// How many of its blocks run at once (see `launch::grid`).
    pub resident: i32,
    /// Key splits of each tile (the Hopper kernels' split-KV instances; 1: none).
    pub splits: i32,
}

impl ForwardPlan {
    /// Workspace bytes the split partial results need (0 without splits).
    pub fn workspace_bytes(&self, p: &crate::params::AttnParams) -> usize {
        super::decode::workspace_layout(p, self.splits).0
    }
}

// CUfunction/CUcontext handles are plain driver handles, usable from any thread.
unsafe impl Send for DeviceKernels {}
unsafe impl Sync for DeviceKernels {}

impl DeviceKernels {
    pub fn function(&self, k: &KernelSpec) -> Result<sys::CUfunction, GpuError> {
        self.named(&k.name())
    }
    /// How many blocks of forward kernel `k` run at once: one per SM, or for a kernel that runs in clusters
    /// what the device holds of its clusters (GPCs whose SM count the cluster size does not divide leave SMs
    /// idle); 0 when the device holds none (or could not say).
    fn resident_blocks(&self, k: &KernelSpec) -> i32 {
        if k.cluster > 1 {
            self.fwd_cluster_blocks.get(&k.name()).copied().unwrap_or(0)
        } else {
            self.num_sms
        }
    }

    /// The forward kernel for `p` on this device: dispatch's choice, or its single-block form where the device
    /// holds none of the clusters the choice would run in, or the GQA-packed kernel with split keys where
    /// splitting pays (prefill_split.rs).
    pub fn forward_kernel(&self, p: &crate::params::AttnParams) -> Result<ForwardPlan, GpuError> {
        let mut k = super::dispatch::select(p, self.cc, self.max_smem_optin, &self.verdict)?;
        if k.cluster > 1 && self.resident_blocks(&k) < k.cluster {
            k = super::dispatch::select_single_block(p, self.cc, self.max_smem_optin, &self.verdict)?;
        }
        let (spec, splits) = super::prefill_split::plan(p, k, self.num_sms);
        Ok(ForwardPlan { spec, resident: self.resident_blocks(&spec), splits })
    }
    pub fn named(&self, name: &str) -> Result<sys::CUfunction, GpuError> {
        self.functions
            .get(name)
            .copied()
            .ok_or_else(|| GpuError::new(format!("kernel {name} is not usable on device {} (compute capability {}.{})", self.ordinal, self.cc / 10, self.cc % 10)))
    }
}

/// Every entry point of the fatbin with its dynamic shared memory: the forward kernels of the dispatch
/// table, the self-check's broken stand-ins (launched with the Blackwell kernel's shared memory), the split-KV
/// decode kernels and the KV-cache append step.
pub fn entry_points() -> Vec<(String, u32)> {
    let sm100_smem = all_kernels().filter(|k| k.family == Family::Sm100).map(|k| k.smem_bytes()).max().unwrap_or(0);
    all_kernels()
        .map(|k| (k.name(), k.smem_bytes()))
        .chain(super::selfcheck::BROKEN_KERNELS.iter().map(|(_, n)| (n.to_string(), sm100_smem)))
        .chain(super::decode::entry_points())
        .chain(super::kv_append::KERNEL_NAMES.iter().map(|n| (n.to_string(), 0)))
        .chain(super::key_padding::KERNEL_NAMES.iter().map(|n| (n.to_string(), 0)))
        .collect()
}

static DEVICES: [OnceLock<Result<DeviceKernels, GpuError>>; MAX_DEVICES] = [const { OnceLock::new() }; MAX_DEVICES];

/// The kernels of device `dev`, loading them on first use.
pub fn device_kernels(dev: sys::CUdevice) -> Result<&'static DeviceKernels, GpuError> {
    let slot = DEVICES.get(dev as usize).ok_or_else(|| GpuError::new(format!("device ordinal {dev} beyond the supported {MAX_DEVICES}")))?;
    slot.get_or_init(|| load(dev)).as_ref().map_err(Clone::clone)
}

/// The context of `stream` and its device's kernels. Only a primary context holds them (the modules are
/// loaded there), as ONNX Runtime and PyTorch use; a stream of another context is refused.
pub fn stream_kernels(stream: sys::CUstream) -> Result<(sys::CUcontext, &'static DeviceKernels), GpuError> {
    let (ctx, dev) = super::driver::stream_context(stream)?;
    let kernels = device_kernels(dev)?;
    if ctx != kernels.ctx {
        return Err(GpuError::new(format!(
            "the compute stream belongs to a non-primary CUDA context of device {dev}; only primary contexts (as ONNX Runtime and PyTorch use) are supported"
        )));
    }
    Ok((ctx, kernels))
}

fn load(dev: sys::CUdevice) -> Result<DeviceKernels, GpuError> {
    let Some(image) = FATBIN else {
        return Err(GpuError::new("this build of libflashattn_ort has no CUDA kernels (nvcc was not found when it was built)"));
    };
    let major = device_attribute(dev, sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR)?;
    let minor = device_attribute(dev, sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR)?;
    let max_smem_optin = device_attribute(dev, sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN)?;
    let num_sms = device_attribute(dev, sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT)?;
    let cc = major * 10 + minor;
    if cc < 80 {
        return Err(GpuError::new(format!("device {dev} has compute capability {major}.{minor}; the CUDA kernels need 8.0 or newer")));
    }
    let mut ctx = std::ptr::null_mut();
    check(unsafe { sys::cuDevicePrimaryCtxRetain(&mut ctx, dev) }, "cuDevicePrimaryCtxRetain")?;
    // The primary context is retained for the life of the process (modules live in it).
    let _cur = CurrentContext::push(ctx)?;
    // The fatbin must be 8-byte aligned for the loader: copy it into an aligned buffer.
    let mut aligned = vec![0u64; image.len().div_ceil(8)];
    unsafe { std::ptr::copy_nonoverlapping(image.as_ptr(), aligned.as_mut_ptr().cast::<u8>(), image.len()) };
    let mut module = std::ptr::null_mut();
    check(unsafe { sys::cuModuleLoadData(&mut module, aligned.as_ptr().cast()) }, "loading the CUDA kernels (cuModuleLoadData)")?;
    let mut functions = HashMap::new();
    for (kname, smem) in entry_points() {
        let name = std::ffi::CString::new(kname.as_str()).expect("kernel names have no NUL");
        let mut f = std::ptr::null_mut();
        check(unsafe { sys::cuModuleGetFunction(&mut f, module, name.as_ptr()) }, &format!("finding kernel {kname}"))?;
        if smem as i64 > max_smem_optin as i64 {
            continue; // dispatch never picks it on this device
        }
        check(
            unsafe { sys::cuFuncSetAttribute(f, sys::CUfunction_attribute::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES, smem as i32) },
            &format!("raising the shared-memory limit of {kname}"),
        )?;
        functions.insert(kname, f);
    }
    let clusters = if cc >= 90 { decode_cluster_residency(&functions) } else { Default::default() };
    let fwd_cluster_blocks = all_kernels()
        .filter(|k| k.cluster > 1 && cc >= 90)
        .filter_map(|k| {
            let f = *functions.get(&k.name())?;
            let c = k.cluster as u32;
            // a grid of one cluster: the answer is the device's capacity, not the grid's
            let clusters = max_active_clusters(f, (c, 1, 1), c, k.threads(), k.smem_bytes()).ok()?;
            Some((k.name(), clusters * k.cluster))
        })
        .collect();
    // Runs the kernel no test here could run against the portable one, in a private context (10.0 only,
    // or where FLASHATTN_SELFCHECK_CANDIDATE asks).
    let verdict = super::selfcheck::first_use(dev, cc);
    Ok(DeviceKernels { ordinal: dev, ctx, cc, max_smem_optin, num_sms, clusters, verdict, functions, fwd_cluster_blocks })
}

/// The decode kernel's cluster residency table (decode::ClusterResidency). Its cluster entries first get the
/// non-portable cluster sizes (16 on Hopper; refused elsewhere, and the table then says 0 for 16) and the
/// largest shared-memory carveout (the table the automatic plan was measured with assumes it; no speed
/// difference was seen without it).
fn decode_cluster_residency(functions: &HashMap<String, sys::CUfunction>) -> super::decode::ClusterResidency {
    let entries: HashMap<&str, (sys::CUfunction, u32)> = super::decode::entry_points()
        .iter()
        .filter_map(|(n, smem)| functions.get_key_value(n.as_str()).map(|(k, f)| (k.as_str(), (*f, *smem))))
        .filter(|(n, _)| super::decode::is_cluster_entry(n))
        .collect();
    for (f, _) in entries.values() {
        let _ = unsafe { sys::cuFuncSetAttribute(*f, sys::CUfunction_attribute::CU_FUNC_ATTRIBUTE_NON_PORTABLE_CLUSTER_SIZE_ALLOWED, 1) };
        let _ = unsafe { sys::cuFuncSetAttribute(*f, sys::CUfunction_attribute::CU_FUNC_ATTRIBUTE_PREFERRED_SHARED_MEMORY_CARVEOUT, 100) };
    }
    super::decode::ClusterResidency::query(|name, size| {
        let Some(&(f, smem)) = entries.get(name) else { return 0 };
        // a grid of one cluster: the answer is the device's capacity, not the grid's
        max_active_clusters(f, (size as u32, 1, 1), size as u32, super::decode::THREADS, smem).unwrap_or(0)
    })
}

/// How many clusters of `cluster` blocks (along x) of `f` the device holds at once for a launch of `grid`.
pub fn max_active_clusters(f: sys::CUfunction, grid: (u32, u32, u32), cluster: u32, threads: u32, smem: u32) -> Result<i32, GpuError> {
    let mut attr = cluster_dimension(cluster);
    // SAFETY: CUlaunchConfig is plain data; zeroed is valid before the fields are set.
    let mut config: sys::CUlaunchConfig = unsafe { std::mem::zeroed() };
    (config.gridDimX, config.gridDimY, config.gridDimZ) = grid;
    (config.blockDimX, config.blockDimY, config.blockDimZ) = (threads, 1, 1);
    config.sharedMemBytes = smem;
    config.attrs = &mut attr;
    config.numAttrs = 1;
    let mut clusters = 0;
    check(unsafe { sys::cuOccupancyMaxActiveClusters(&mut clusters, f, &config) }, "cuOccupancyMaxActiveClusters")?;
    Ok(clusters)
}
