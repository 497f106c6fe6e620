//! Running the CPU kernel's tasks on the session's intra-op thread pool (so `intra_op_num_threads`
//! governs us as it governs ORT's own kernels).

use std::ffi::c_void;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};

use ort::operator::ComputeContext;
use ort::AsPointer;

use crate::cpu::Parallel;

pub struct OrtPool<'a> {
    pub ctx: &'a ComputeContext,
    pub panicked: AtomicBool,
}

struct Job<'a> {
    task: &'a (dyn Fn(usize) + Sync),
    panicked: &'a AtomicBool,
}

unsafe extern "C" fn trampoline(data: *mut c_void, i: usize) {
    let job = unsafe { &*(data as *const Job) };
    // A panic must not unwind through ORT's C++ frames: record it and report after the loop.
    if catch_unwind(AssertUnwindSafe(|| (job.task)(i))).is_err() {
        job.panicked.store(true, Ordering::Relaxed);
    }
}

impl Parallel for OrtPool<'_> {
    fn run(&self, n: usize, task: &(dyn Fn(usize) + Sync)) {
        let job = Job { task, panicked: &self.panicked };
        let status = unsafe {
            (ort::api().KernelContext_ParallelFor)(self.ctx.ptr(), trampoline, n, n, &job as *const Job as *mut c_void)
        };
        if !status.0.is_null() {
            // The pool refused: run inline.
            unsafe { (ort::api().ReleaseStatus)(status.0) };
            (0..n).for_each(task);
        }
    }
}
