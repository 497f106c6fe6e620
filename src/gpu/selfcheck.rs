//! First-use self-check of a kernel no test here could run: the Blackwell (sm_100a) kernel was compiled and
//! its SASS inspected, but it has not run on Blackwell hardware. On the first use of a compute-capability
//! 10.0 device (module load, at the first Compute), the library runs it on a few small random problems
//! next to the portable kernel on the same device and compares. If any output disagrees beyond tolerance,
//! is NaN, or the candidate faults, fails to launch or hangs, one warning goes to stderr and the device is
//! served by the portable kernel for the life of the process ([`Verdict::Failed`]).
//!
//! The check runs in a private context (`cuCtxCreate`) with its own module, stream and allocations,
//! destroyed afterwards, so the primary context ONNX Runtime and PyTorch use never holds the candidate. That
//! contains wrong results and NaN, not a trap or illegal address: on an H200 (driver 580) a trap in the
//! private context left the process's other contexts failing too. Such a fault is recorded on disk
//! ([`FailureRecord`]) and the warning says to restart the process; later processes read the record and
//! serve the portable kernel without running the faulting kernel again. The thread's stream-capture mode is
//! relaxed for the duration, so a first Compute inside CUDA graph capture can still create the context,
//! allocate and synchronise (none of that touches the captured stream).
//!
//! Environment:
//! - `FLASHATTN_SELFCHECK=0`: no check; the Blackwell kernel is trusted on 10.0 ([`Verdict::Skipped`]).
//! - `FLASHATTN_KERNEL=sm80`: prefer the portable kernel everywhere (dispatch.rs); the check still runs.
//! - `FLASHATTN_SELFCHECK_CANDIDATE=wrong|nan|trap|sm100|sm90` (test aid): run the check at first use on any
//!   device with that candidate instead; a failure then leaves that device to the portable kernel. This is how
//!   scripts/gpu/selfcheck.py proves the mechanism on an H100.
//! - `FLASHATTN_SELFCHECK_CACHE=DIR`: where device-fault records live (default `$XDG_CACHE_HOME/flashattn-ort`
//!   or `~/.cache/flashattn-ort`).

use std::ffi::{c_void, CString};
use std::time::{Duration, Instant};

use cudarc::driver::sys;
use half::{bf16, f16};
use rand::SeedableRng;
use rand_distr::{Distribution, StandardNormal};

use super::dispatch::{self, Family, KernelSpec, Verdict};
use super::driver::{check, describe, device_attribute, GpuError};
use super::launch::{launch_function, SplitLaunch};
use crate::check::round_to;
use crate::params::{AttnParams, DType, MaskKind};
use crate::schema::{self, InputShapes, OpAttributes};

/// The deliberately broken stand-ins of kernels/selfcheck_broken.cu (compiled for every architecture), by
/// the short name the environment and the ffi hook use.
pub const BROKEN_KERNELS: &[(&str, &str)] = &[("wrong", "flash_selfcheck_wrong"), ("nan", "flash_selfcheck_nan"), ("trap", "flash_selfcheck_trap")];

/// What the check runs against the portable kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Candidate {
    /// A family's kernels, each problem on the one dispatch would pick (the Blackwell kernel on 10.0; the
    /// Hopper kernel is a positive control on 9.0).
    Family(Family),
    /// A broken stand-in (entry-point name), launched with the Blackwell kernel's geometry and parameters.
    Broken(&'static str),
}

impl Candidate {
    pub fn parse(name: &str) -> Option<Candidate> {
        if let Some((_, entry)) = BROKEN_KERNELS.iter().find(|(short, _)| *short == name) {
            return Some(Candidate::Broken(entry));
        }
        [Family::Sm100, Family::Sm90].into_iter().find(|f| f.name() == name).map(Candidate::Family)
    }
    pub fn describe(&self) -> String {
        match self {
            Candidate::Family(Family::Sm100) => "the Blackwell (sm_100a) kernel".into(),
            Candidate::Family(f) => format!("the {} kernel", f.name()),
            Candidate::Broken(name) => format!("the deliberately broken test kernel {name}"),
        }
    }
    /// The kernel (spec for geometry and launch parameters, entry point) serving `p` as this candidate.
    fn kernel_for(&self, p: &AttnParams, max_smem: i32) -> Result<(KernelSpec, String), GpuError> {
        let (family, cc) = match self {
            Candidate::Family(Family::Sm90) => (Family::Sm90, 90),
            Candidate::Family(f) => (*f, 100),
            Candidate::Broken(_) => (Family::Sm100, 100),
        };
        let spec = dispatch::select_forced(p, cc, max_smem, &Verdict::Skipped, Some(family.name()))?;
        if spec.family != family {
            return Err(GpuError::new(format!("self-check problem not served by the {} kernel: {p:?}", family.name())));
        }
        let name = match self {
            Candidate::Broken(name) => name.to_string(),
            Candidate::Family(_) => spec.name(),
        };
        Ok((spec, name))
    }
}

/// What to do at the first use of a device of compute capability `cc`, given `FLASHATTN_SELFCHECK_CANDIDATE`
/// and `FLASHATTN_SELFCHECK`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Plan {
    NotNeeded,
    Skip,
    Run(Candidate),
    BadEnvironment(String),
}

pub fn plan(cc: i32, candidate_env: Option<&str>, selfcheck_env: Option<&str>) -> Plan {
    if let Some(name) = candidate_env.filter(|v| !v.is_empty()) {
        return match Candidate::parse(name) {
            Some(c) => Plan::Run(c),
            None => Plan::BadEnvironment(format!("FLASHATTN_SELFCHECK_CANDIDATE={name} is none of wrong, nan, trap, sm100, sm90")),
        };
    }
    // The Blackwell kernel serves 10.0 only (dispatch.rs): elsewhere there is nothing to check.
    if cc != 100 {
        return Plan::NotNeeded;
    }
    if selfcheck_env.is_some_and(|v| v.trim() == "0") {
        return Plan::Skip;
    }
    Plan::Run(Candidate::Family(Family::Sm100))
}

/// The verdict for device `dev` of compute capability `cc` at its first use, from the environment; a failure
/// is logged once (this runs once per device, from module.rs).
pub fn first_use(dev: sys::CUdevice, cc: i32) -> Verdict {
    let env = |k: &str| std::env::var(k).ok();
    match plan(cc, env("FLASHATTN_SELFCHECK_CANDIDATE").as_deref(), env("FLASHATTN_SELFCHECK").as_deref()) {
        Plan::NotNeeded => Verdict::NotNeeded,
        Plan::Skip => Verdict::Skipped,
        Plan::BadEnvironment(msg) => {
            let v = Verdict::Failed(msg);
            warn(dev, None, &v);
            v
        }
        Plan::Run(c) => {
            let record = FailureRecord::for_candidate(c, cc);
            let v = match record.as_ref().and_then(FailureRecord::read) {
                Some(earlier) => Verdict::Failed(format!(
                    "an earlier process's check failed: {earlier} (recorded in {}; delete it to check again)",
                    record.as_ref().map_or(String::new(), |r| r.path.display().to_string())
                )),
                None => match run_classified(dev, c) {
                    (v, Severity::Contained) => v,
                    (Verdict::Failed(why), Severity::DeviceFault) => {
                        let kept = record.as_ref().is_some_and(|r| r.write(&why));
                        Verdict::Failed(format!(
                            "{why}. A device fault cannot be contained: CUDA may be unusable in this process, restart it{}",
                            if kept { "; the failure is recorded, so later processes use the portable kernel without running the check" } else { "" }
                        ))
                    }
                    (v, _) => v,
                },
            };
            warn(dev, Some(c), &v);
            v
        }
    }
}

/// Whether a failed check left the device usable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Severity {
    Contained,
    /// The candidate trapped, faulted or hung. Measured on an H200 (driver 580): a trap in the private
    /// context left the process's other contexts failing too (CUDA_ERROR_LAUNCH_FAILED), so the check cannot
    /// protect this process; it records the failure for the next one.
    DeviceFault,
}

/// A failed check that faulted the device, remembered across processes so a restarted process does not run
/// the faulting kernel again: one small file per (candidate, compute capability, build of the kernels) under
/// `FLASHATTN_SELFCHECK_CACHE`, else `$XDG_CACHE_HOME/flashattn-ort`, else `~/.cache/flashattn-ort`.
struct FailureRecord {
    path: std::path::PathBuf,
}

impl FailureRecord {
    fn for_candidate(c: Candidate, cc: i32) -> Option<Self> {
        let env = |k: &str| std::env::var_os(k).filter(|v| !v.is_empty()).map(std::path::PathBuf::from);
        let dir = env("FLASHATTN_SELFCHECK_CACHE")
            .or_else(|| env("XDG_CACHE_HOME").map(|d| d.join("flashattn-ort")))
            .or_else(|| env("HOME").map(|d| d.join(".cache").join("flashattn-ort")))?;
        Some(Self::in_dir(&dir, c, cc))
    }

    fn in_dir(dir: &std::path::Path, c: Candidate, cc: i32) -> Self {
        let build = super::module::FATBIN.map_or(0, fnv1a);
        let who = match c {
            Candidate::Family(f) => f.name(),
            Candidate::Broken(name) => name,
        };
        FailureRecord { path: dir.join(format!("selfcheck-failed-{who}-cc{cc}-{build:016x}")) }
    }

    fn read(&self) -> Option<String> {
        std::fs::read_to_string(&self.path).ok().map(|s| s.trim().to_string())
    }

    /// Best effort: false when the record could not be written.
    fn write(&self, why: &str) -> bool {
        self.path.parent().is_some_and(|d| std::fs::create_dir_all(d).is_ok()) && std::fs::write(&self.path, why).is_ok()
    }
}

/// FNV-1a of the kernels' fatbin: a new build gets a new record name (and so a fresh check).
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf29ce484222325u64, |h, &b| (h ^ b as u64).wrapping_mul(0x100000001b3))
}

/// The one warning of a failed check (stderr; the library has no other log).
pub fn warn(dev: sys::CUdevice, candidate: Option<Candidate>, v: &Verdict) {
    if let Verdict::Failed(why) = v {
        let what = candidate.map_or("the self-check".to_string(), |c| c.describe());
        eprintln!(
            "flashattn-ort WARNING: {what} failed its self-check on CUDA device {dev} ({why}); this process uses the portable \
             kernel on that device. (FLASHATTN_SELFCHECK=0 skips the check, FLASHATTN_KERNEL=sm80 prefers the portable kernel.)"
        );
    }
}

/// One self-check problem: BSNH tensors, random normal inputs.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Problem {
    pub dtype: DType,
    pub head_dim: i32,
    pub batch: i32,
    pub heads_q: i32,
    pub heads_kv: i32,
    pub seq_q: i32,
    pub seq_kv: i32,
    /// window_left, window_right (-1 = unbounded; (-1, 0) = causal).
    pub window: (i32, i32),
    /// Key row j is scaled by 1 + key_growth * j / seq_kv, with scale 0.5: scores grow from tile to tile,
    /// so row maxima keep moving past the rescale threshold and the O correction runs (with random keys
    /// and the usual scale a max rarely grows by 2^8 after the first tile).
    pub key_growth: f32,
}

/// Small problems that cover both dtypes and head dims, ragged tiles on both axes, GQA, a padded head dim,
/// causal with more keys than queries, a sliding window, and growing scores (the O correction); each runs
/// in well under a millisecond.
pub fn problems() -> Vec<Problem> {
    let p = |dtype, head_dim, batch, heads_q, heads_kv, seq_q, seq_kv, window| Problem { dtype, head_dim, batch, heads_q, heads_kv, seq_q, seq_kv, window, key_growth: 0.0 };
    let growing = |p: Problem| Problem { key_growth: 3.0, ..p };
    vec![
        p(DType::F16, 64, 2, 4, 2, 200, 333, (-1, -1)),
        p(DType::BF16, 64, 1, 2, 2, 256, 256, (-1, 0)),
        p(DType::F16, 128, 1, 2, 1, 130, 700, (-1, 0)),
        p(DType::BF16, 128, 2, 2, 2, 384, 129, (-1, -1)),
        p(DType::BF16, 96, 1, 1, 1, 64, 1000, (-1, -1)),
        p(DType::F16, 64, 1, 2, 2, 300, 300, (100, 0)),
        growing(p(DType::F16, 128, 1, 2, 2, 200, 640, (-1, -1))),
        growing(p(DType::BF16, 64, 1, 2, 1, 256, 512, (-1, 0))),
    ]
}

impl Problem {
    fn elems_q(&self) -> usize {
        (self.batch * self.seq_q * self.heads_q * self.head_dim) as usize
    }
    fn elems_kv(&self) -> usize {
        (self.batch * self.seq_kv * self.heads_kv * self.head_dim) as usize
    }
    fn elems_lse(&self) -> usize {
        (self.batch * self.heads_q * self.seq_q) as usize
    }
    /// Parameters with every address 0 (filled in by the check), derived as the op derives them.
    pub fn params(&self) -> AttnParams {
        let dims = |heads: i32, seq: i32| [self.batch as i64, seq as i64, heads as i64, self.head_dim as i64];
        let (q, kv) = (dims(self.heads_q, self.seq_q), dims(self.heads_kv, self.seq_kv));
        let shapes = InputShapes { query: &q, key: &kv, value: &kv, ..Default::default() };
        let attrs = OpAttributes {
            window_left: self.window.0 as i64,
            window_right: self.window.1 as i64,
            scale: (self.key_growth > 0.0).then_some(0.5),
            ..Default::default()
        };
        schema::plan(&attrs, &shapes, self.dtype, MaskKind::None).expect("the self-check problems are valid BSNH problems").0
    }
}

/// Tolerances of one output type against the portable kernel (both accumulate in fp32 and round P to the
/// input type; they differ in summation order, exp2 and rescaling points, and the output's last bit).
pub fn tolerance(dtype: DType) -> (f32, f32) {
    match dtype {
        DType::BF16 => (2e-2, 2e-2),
        _ => (3e-3, 1e-2),
    }
}

/// `Ok` when every |got - want| <= atol + rtol * |want|; a NaN on either side never passes.
pub fn compare(what: &str, got: &[f32], want: &[f32], atol: f32, rtol: f32) -> Result<(), String> {
    if got.len() != want.len() {
        return Err(format!("{what}: {} values, expected {}", got.len(), want.len()));
    }
    let mut bad = 0usize;
    let mut first = None;
    let mut worst = 0f32;
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        let tol = atol + rtol * w.abs();
        let err = (g - w).abs();
        if !(err <= tol) {
            bad += 1;
            first.get_or_insert((i, g, w));
            worst = if err.is_nan() || worst.is_nan() { f32::NAN } else { worst.max(err) };
        }
    }
    match first {
        None => Ok(()),
        Some((i, g, w)) => Err(format!("{what}: {bad} of {} values off (first at {i}: {g} vs {w}; largest error {worst}; tolerance {atol} + {rtol}*|ref|)", got.len())),
    }
}

/// Runs `candidate` against the portable kernel on device `dev` in a private context. A panic inside (a
/// driver entry point cudarc cannot find, say) is a failed check, not a crash.
pub fn run(dev: sys::CUdevice, candidate: Candidate) -> Verdict {
    run_classified(dev, candidate).0
}

fn run_classified(dev: sys::CUdevice, candidate: Candidate) -> (Verdict, Severity) {
    std::panic::catch_unwind(|| run_unguarded(dev, candidate))
        .unwrap_or_else(|_| (Verdict::Failed("internal error (panic) in the self-check".into()), Severity::Contained))
}

fn run_unguarded(dev: sys::CUdevice, candidate: Candidate) -> (Verdict, Severity) {
    let contained = |why: String| (Verdict::Failed(why), Severity::Contained);
    if let Err(e) = super::driver::available() {
        return contained(e.0);
    }
    let Some(image) = super::module::FATBIN else {
        return contained("this build has no CUDA kernels".into());
    };
    let _relaxed = RelaxedCapture::enter();
    let ctx = match PrivateContext::create(dev) {
        Ok(c) => c,
        Err(e) => return contained(format!("could not set up the check: {}", e.0)),
    };
    let outcome = check_all(&ctx, dev, image, candidate);
    match outcome {
        Ok(()) => (Verdict::Passed, Severity::Contained),
        Err(Failure::Hung(why)) => {
            ctx.leak(); // a kernel still runs in it: destroying it could block forever
            (Verdict::Failed(why), Severity::DeviceFault)
        }
        Err(Failure::Fault(why)) => (Verdict::Failed(why), Severity::DeviceFault),
        Err(Failure::Other(why)) => contained(why),
    }
}

enum Failure {
    Hung(String),
    /// A launch failed on the device (trap, illegal address): the CUDA state is suspect beyond the check.
    Fault(String),
    Other(String),
}

impl From<GpuError> for Failure {
    fn from(e: GpuError) -> Self {
        Failure::Other(e.0)
    }
}

/// The random inputs of problem `n`.
fn seed(n: usize) -> u64 {
    0x5EED + n as u64
}

/// How long a launch pair may take before the candidate is declared hung (the kernels' own mbarrier waits
/// trap long before this).
const DEADLINE: Duration = Duration::from_secs(60);

fn check_all(ctx: &PrivateContext, dev: sys::CUdevice, image: &[u8], candidate: Candidate) -> Result<(), Failure> {
    let max_smem = device_attribute(dev, sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN)?;
    let num_sms = device_attribute(dev, sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT)?;
    let cc = 10 * device_attribute(dev, sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR)?
        + device_attribute(dev, sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR)?;
    let module = ctx.load(image)?;
    for (n, prob) in problems().iter().enumerate() {
        let p0 = prob.params();
        let reference = dispatch::select_forced(&p0, cc, max_smem, &Verdict::NotNeeded, Some("sm80"))?;
        let (spec, name) = candidate.kernel_for(&p0, max_smem)?;
        let f_ref = module.function(&reference.name(), reference.smem_bytes())?;
        let f_cand = module.function(&name, spec.smem_bytes())?;
        let bufs = Buffers::new(prob, seed(n))?;
        let mut p_ref = p0;
        bufs.bind(&mut p_ref, false);
        let mut p_cand = p0;
        bufs.bind(&mut p_cand, true);
        launch_function(f_ref, &reference, &p_ref, ctx.stream, num_sms, SplitLaunch::NONE).map_err(|e| Failure::Other(format!("the portable reference: {}", e.0)))?;
        ctx.wait(&format!("{} (reference)", reference.name()))?;
        launch_function(f_cand, &spec, &p_cand, ctx.stream, num_sms, SplitLaunch::NONE)?;
        ctx.wait(&name)?;
        let (atol, rtol) = tolerance(prob.dtype);
        let case = format!(
            "{name} on {} d{} x{}/{} heads, {} queries x {} keys, window {:?}, key growth {}",
            prob.dtype.name(),
            prob.head_dim,
            prob.heads_q,
            prob.heads_kv,
            prob.seq_q,
            prob.seq_kv,
            prob.window,
            prob.key_growth
        );
        compare(&format!("{case}: output"), &bufs.read_out(prob, true)?, &bufs.read_out(prob, false)?, atol, rtol).map_err(Failure::Other)?;
        compare(&format!("{case}: lse"), &bufs.read_lse(prob, true)?, &bufs.read_lse(prob, false)?, 1e-2, 1e-3).map_err(Failure::Other)?;
    }
    Ok(())
}

/// The thread's stream-capture mode set to relaxed, restored on drop.
struct RelaxedCapture(sys::CUstreamCaptureMode);

impl RelaxedCapture {
    fn enter() -> Self {
        let mut mode = sys::CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_RELAXED;
        unsafe {
            let _ = sys::cuThreadExchangeStreamCaptureMode(&mut mode);
        }
        RelaxedCapture(mode)
    }
}

impl Drop for RelaxedCapture {
    fn drop(&mut self) {
        unsafe {
            let _ = sys::cuThreadExchangeStreamCaptureMode(&mut self.0);
        }
    }
}

/// A context of our own (current on this thread while it lives) with one non-blocking stream; destroyed on
/// drop, with everything allocated or loaded in it, unless leaked.
struct PrivateContext {
    ctx: sys::CUcontext,
    stream: sys::CUstream,
    leaked: std::cell::Cell<bool>,
}

impl PrivateContext {
    fn create(dev: sys::CUdevice) -> Result<Self, GpuError> {
        let mut ctx = std::ptr::null_mut();
        // No creation parameters (no execution affinity, no CIG): a plain context of the device.
        check(unsafe { sys::cuCtxCreate_v4(&mut ctx, std::ptr::null_mut(), 0, dev) }, "cuCtxCreate")?;
        let mut this = PrivateContext { ctx, stream: std::ptr::null_mut(), leaked: std::cell::Cell::new(false) };
        check(unsafe { sys::cuStreamCreate(&mut this.stream, sys::CUstream_flags::CU_STREAM_NON_BLOCKING as u32) }, "cuStreamCreate")?;
        Ok(this)
    }

    fn load(&self, image: &[u8]) -> Result<Module, GpuError> {
        let mut aligned = vec![0u64; image.len().div_ceil(8)];
        unsafe { std::ptr::copy_nonoverlapping(image.as_ptr(), aligned.as_mut_ptr().cast::<u8>(), image.len()) };
        let mut module = std::ptr::null_mut();
        check(unsafe { sys::cuModuleLoadData(&mut module, aligned.as_ptr().cast()) }, "loading the kernels into the self-check context")?;
        Ok(Module(module))
    }

    /// Waits for the stream; a launch error or device fault is the candidate's failure, so is a hang.
    fn wait(&self, what: &str) -> Result<(), Failure> {
        let start = Instant::now();
        loop {
            let r = unsafe { sys::cuStreamQuery(self.stream) };
            match r {
                sys::CUresult::CUDA_SUCCESS => return Ok(()),
                sys::CUresult::CUDA_ERROR_NOT_READY if start.elapsed() < DEADLINE => std::thread::sleep(Duration::from_micros(200)),
                sys::CUresult::CUDA_ERROR_NOT_READY => return Err(Failure::Hung(format!("{what} did not finish within {} s", DEADLINE.as_secs()))),
                e => return Err(Failure::Fault(format!("{what} failed on the device: {}", describe(e)))),
            }
        }
    }

    fn leak(&self) {
        self.leaked.set(true);
    }
}

impl Drop for PrivateContext {
    fn drop(&mut self) {
        unsafe {
            if self.leaked.get() {
                let mut old = std::ptr::null_mut();
                let _ = sys::cuCtxPopCurrent_v2(&mut old);
            } else {
                // Frees its module, stream and memory too; pops it from this thread (it is current).
                let _ = sys::cuCtxDestroy_v2(self.ctx);
            }
        }
    }
}

/// The fatbin loaded in the private context (unloaded with it).
struct Module(sys::CUmodule);

impl Module {
    fn function(&self, name: &str, smem: u32) -> Result<sys::CUfunction, GpuError> {
        let cname = CString::new(name).expect("kernel names have no NUL");
        let mut f = std::ptr::null_mut();
        check(unsafe { sys::cuModuleGetFunction(&mut f, self.0, cname.as_ptr()) }, &format!("finding kernel {name}"))?;
        check(
            unsafe { sys::cuFuncSetAttribute(f, sys::CUfunction_attribute::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES, smem as i32) },
            &format!("raising the shared-memory limit of {name}"),
        )?;
        Ok(f)
    }
}

/// Device buffers of one problem in the private context (freed with it): inputs, and an output and lse for
/// each of the reference and the candidate.
struct Buffers {
    q: u64,
    k: u64,
    v: u64,
    out: [u64; 2],
    lse: [u64; 2],
}

/// The inputs q, k, v of problem `prob` (BSNH), random normal from `seed`, already rounded to its type.
pub fn inputs(prob: &Problem, seed: u64) -> [Vec<f32>; 3] {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    // Key row of element i of K (BSNH): i / (heads_kv * head_dim) % seq_kv.
    let row_width = (prob.heads_kv * prob.head_dim) as usize;
    let mut draw = |n: usize, growth: f32| -> Vec<f32> {
        (0..n)
            .map(|i| {
                let row = (i / row_width) % prob.seq_kv as usize;
                let x: f32 = StandardNormal.sample(&mut rng);
                round_to(prob.dtype, x * (1.0 + growth * row as f32 / prob.seq_kv as f32))
            })
            .collect()
    };
    [draw(prob.elems_q(), 0.0), draw(prob.elems_kv(), prob.key_growth), draw(prob.elems_kv(), 0.0)]
}

impl Buffers {
    fn new(prob: &Problem, seed: u64) -> Result<Self, GpuError> {
        let upload = |values: &[f32]| -> Result<u64, GpuError> {
            let host: Vec<u16> = values.iter().map(|&x| half_bits(prob.dtype, x)).collect();
            let ptr = alloc(host.len() * 2)?;
            check(unsafe { sys::cuMemcpyHtoD_v2(ptr, host.as_ptr().cast::<c_void>(), host.len() * 2) }, "cuMemcpyHtoD")?;
            Ok(ptr)
        };
        let [hq, hk, hv] = inputs(prob, seed);
        let (q, k, v) = (upload(&hq)?, upload(&hk)?, upload(&hv)?);
        // Outputs start as all-ones bytes (NaN in every type): a kernel that writes nothing fails.
        let filled = |bytes: usize| -> Result<u64, GpuError> {
            let ptr = alloc(bytes)?;
            check(unsafe { sys::cuMemsetD8_v2(ptr, 0xFF, bytes) }, "cuMemsetD8")?;
            Ok(ptr)
        };
        let out = [filled(prob.elems_q() * 2)?, filled(prob.elems_q() * 2)?];
        let lse = [filled(prob.elems_lse() * 4)?, filled(prob.elems_lse() * 4)?];
        Ok(Buffers { q, k, v, out, lse })
    }

    fn bind(&self, p: &mut AttnParams, candidate: bool) {
        let i = candidate as usize;
        (p.q_ptr, p.k_ptr, p.v_ptr, p.out_ptr, p.lse_ptr) = (self.q, self.k, self.v, self.out[i], self.lse[i]);
    }

    fn read_out(&self, prob: &Problem, candidate: bool) -> Result<Vec<f32>, GpuError> {
        let mut host = vec![0u16; prob.elems_q()];
        check(unsafe { sys::cuMemcpyDtoH_v2(host.as_mut_ptr().cast(), self.out[candidate as usize], host.len() * 2) }, "cuMemcpyDtoH")?;
        Ok(host.into_iter().map(|b| half_value(prob.dtype, b)).collect())
    }

    fn read_lse(&self, prob: &Problem, candidate: bool) -> Result<Vec<f32>, GpuError> {
        let mut host = vec![0f32; prob.elems_lse()];
        check(unsafe { sys::cuMemcpyDtoH_v2(host.as_mut_ptr().cast(), self.lse[candidate as usize], host.len() * 4) }, "cuMemcpyDtoH")?;
        Ok(host)
    }
}

/// The 16-bit pattern of `x` in `dtype` (float16 or bfloat16), and back.
fn half_bits(dtype: DType, x: f32) -> u16 {
    match dtype {
        DType::BF16 => bf16::from_f32(x).to_bits(),
        _ => f16::from_f32(x).to_bits(),
    }
}

fn half_value(dtype: DType, bits: u16) -> f32 {
    match dtype {
        DType::BF16 => bf16::from_bits(bits).to_f32(),
        _ => f16::from_bits(bits).to_f32(),
    }
}

fn alloc(bytes: usize) -> Result<u64, GpuError> {
    let mut ptr = 0;
    check(unsafe { sys::cuMemAlloc_v2(&mut ptr, bytes) }, "cuMemAlloc")?;
    Ok(ptr)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn comparison_tolerates_rounding_only() {
        let want = [0.5f32, -1.0, 0.0, 2.0];
        assert!(compare("o", &want, &want, 1e-3, 1e-2).is_ok());
        assert!(compare("o", &[0.5005, -1.005, 0.0009, 2.01], &want, 1e-3, 1e-2).is_ok());
        let err = compare("o", &[0.5, -1.0, 0.0, 2.2], &want, 1e-3, 1e-2).unwrap_err();
        assert!(err.contains("1 of 4") && err.contains("first at 3"), "{err}");
        assert!(compare("o", &want[..3], &want, 1e-3, 1e-2).is_err());
    }

    #[test]
    fn a_fault_record_is_named_by_candidate_and_device_and_read_back() {
        let dir = std::env::temp_dir().join(format!("flashattn-selfcheck-test-{}", std::process::id()));
        let trap = FailureRecord::in_dir(&dir, Candidate::parse("trap").unwrap(), 90);
        let sm100 = FailureRecord::in_dir(&dir, Candidate::Family(Family::Sm100), 100);
        assert_ne!(trap.path, sm100.path);
        assert_eq!(trap.read(), None);
        assert!(trap.write("flash_selfcheck_trap failed on the device: launch failed"));
        assert_eq!(trap.read().as_deref(), Some("flash_selfcheck_trap failed on the device: launch failed"));
        assert_eq!(sm100.read(), None);
        let _ = std::fs::remove_dir_all(&dir);
        assert_ne!(fnv1a(b"a"), fnv1a(b"b"));
    }

    #[test]
    fn nan_never_passes() {
        let want = [0.5f32, 1.0];
        assert!(compare("o", &[f32::NAN, 1.0], &want, 1.0, 1.0).is_err());
        assert!(compare("o", &want, &[0.5, f32::NAN], 1.0, 1.0).is_err());
        assert!(compare("o", &[f32::INFINITY, 1.0], &want, 1.0, 1.0).is_err());
        // -inf on both sides (an lse of a row without keys) fails too: the check's problems have no such row.
        assert!(compare("lse", &[f32::NEG_INFINITY], &[f32::NEG_INFINITY], 1.0, 1.0).is_err());
    }

    #[test]
    fn the_broken_kernels_fail_on_the_checked_outputs() {
        // The "wrong" stand-in writes 0.5: far outside tolerance of attention outputs of random inputs.
        let (atol, rtol) = tolerance(DType::BF16);
        assert!(compare("o", &[0.5], &[0.05], atol, rtol).is_err());
    }

    #[test]
    fn plan_from_compute_capability_and_environment() {
        assert_eq!(plan(100, None, None), Plan::Run(Candidate::Family(Family::Sm100)));
        assert_eq!(plan(100, Some(""), Some("1")), Plan::Run(Candidate::Family(Family::Sm100)));
        assert_eq!(plan(100, None, Some("0")), Plan::Skip);
        for cc in [80, 86, 90, 103, 120] {
            assert_eq!(plan(cc, None, None), Plan::NotNeeded, "cc {cc}");
        }
        assert_eq!(plan(90, Some("trap"), None), Plan::Run(Candidate::Broken("flash_selfcheck_trap")));
        assert_eq!(plan(90, Some("trap"), Some("0")), Plan::Run(Candidate::Broken("flash_selfcheck_trap")));
        assert_eq!(plan(90, Some("sm90"), None), Plan::Run(Candidate::Family(Family::Sm90)));
        assert!(matches!(plan(90, Some("bogus"), None), Plan::BadEnvironment(_)));
    }

    /// The O correction only runs when a row max grows past the rescale threshold (2^8) after the first key
    /// tile: the growing problems must make that happen for most rows, on the very inputs the check uses.
    #[test]
    fn the_growing_problems_exercise_the_o_correction() {
        const BN: usize = 128;
        const THRESHOLD: f32 = 8.0;
        for (n, prob) in problems().iter().enumerate().filter(|(_, p)| p.key_growth > 0.0) {
            let [q, k, _] = inputs(prob, seed(n));
            let (d, hq, hk, sq, sk) = (prob.head_dim as usize, prob.heads_q as usize, prob.heads_kv as usize, prob.seq_q as usize, prob.seq_kv as usize);
            let scale_log2 = prob.params().scale * std::f32::consts::LOG2_E;
            let (mut rows, mut corrected) = (0, 0);
            for row in (0..sq).step_by(5) {
                let visible = if prob.window.1 == 0 { row + sk - sq + 1 } else { sk };
                let score = |j: usize| -> f32 { (0..d).map(|c| q[(row * hq) * d + c] * k[(j * hk) * d + c]).sum() };
                let mut m = f32::NEG_INFINITY;
                let mut moved_later = false;
                for (tile, start) in (0..visible).step_by(BN).enumerate() {
                    let mx = (start..visible.min(start + BN)).map(score).fold(m, f32::max);
                    if (mx - m) * scale_log2 > THRESHOLD {
                        moved_later |= tile > 0;
                        m = mx;
                    }
                }
                rows += 1;
                corrected += moved_later as usize;
            }
            assert!(corrected * 2 > rows, "problem {n}: only {corrected} of {rows} rows need an O correction");
        }
    }

    #[test]
    fn every_problem_has_both_kernels() {
        for prob in problems() {
            let mut p = prob.params();
            (p.q_ptr, p.k_ptr, p.v_ptr, p.out_ptr) = (1 << 20, 2 << 20, 3 << 20, 4 << 20);
            let b200 = 227 * 1024;
            for c in [Candidate::Family(Family::Sm100), Candidate::Broken("flash_selfcheck_trap")] {
                let (spec, _) = c.kernel_for(&p, b200).unwrap();
                assert_eq!(spec.family, Family::Sm100);
            }
            assert_eq!(Candidate::Family(Family::Sm90).kernel_for(&p, b200).unwrap().0.family, Family::Sm90);
            assert_eq!(dispatch::select_forced(&p, 90, b200, &Verdict::NotNeeded, Some("sm80")).unwrap().family, Family::Sm80);
        }
        for short in ["wrong", "nan", "trap"] {
            assert!(matches!(Candidate::parse(short), Some(Candidate::Broken(_))));
        }
    }
}
