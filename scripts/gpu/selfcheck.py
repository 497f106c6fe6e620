"""Proves the first-use self-check (src/gpu/selfcheck.rs) on any GPU, an H100 included, with deliberately
broken stand-ins for the Blackwell kernel (kernels/selfcheck_broken.cu: wrong values, NaN, __trap()):

  python3 selfcheck.py LIB

runs each scenario in a fresh process (the check runs once per process and device) and checks its exit
status and stderr:
  direct      the ffi hook runs the very same check routine with each candidate: the Hopper kernel (positive
              control on 9.0) must pass; wrong and nan must be rejected with one warning each; after every check
              the process's own kernels must still give correct results and PyTorch must still work;
  first-use:X FLASHATTN_SELFCHECK_CANDIDATE=X makes the library's first use of the device run the check with X:
              wrong/nan -> one warning, verdict "failed", the portable kernel serves (correctly); X=sm90 -> passed,
              the Hopper kernel keeps serving;
  first-use:trap  a kernel that traps: one warning that says to restart (a device fault is not contained in
              this process) and a failure record on disk;
  first-use:trap-again  the restarted process: verdict "failed" from the record, the trapping kernel is not
              run again, one warning, the portable kernel serves (correctly).
The real Blackwell kernel traps on anything but 10.0 (its body is compiled for sm_100a only), so it is
checked only there.
On a compute-capability 10.0 device the direct scenario also reports (without asserting) whether the real
Blackwell kernel passes, and the first-use:none scenario shows the verdict the library reached by itself."""
import ctypes
import os
import subprocess
import sys
import tempfile

import torch

import fa_lib

WARNING = "flashattn-ort WARNING"


def load(path):
    lib = fa_lib.load(path)
    lib.flashattn_ort_gpu_selfcheck.restype = ctypes.c_int
    lib.flashattn_ort_gpu_selfcheck.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_size_t]
    lib.flashattn_ort_gpu_selfcheck_verdict.restype = ctypes.c_int
    lib.flashattn_ort_gpu_selfcheck_verdict.argtypes = [ctypes.c_char_p, ctypes.c_size_t]
    return lib


# (dtype, batch, heads_q, heads_kv, seq_q, seq_kv, head_dim, causal): TMA-aligned plain problems, the ones the
# Hopper/Blackwell kernels serve when trusted.
PROBLEMS = [
    (torch.float16, 2, 4, 2, 300, 517, 64, False),
    (torch.bfloat16, 1, 8, 8, 1024, 1024, 128, True),
    (torch.float16, 1, 2, 1, 200, 900, 128, True),
]


def kernels_still_correct(lib, tag):
    """Our kernels in the primary context, against the float64 reference; and a PyTorch op."""
    gen = torch.Generator(device="cuda")
    gen.manual_seed(7)
    served = []
    for dt, b, hq, hkv, sq, skv, d, causal in PROBLEMS:
        q = torch.randn(b, sq, hq, d, device="cuda", dtype=dt, generator=gen)
        k = torch.randn(b, skv, hkv, d, device="cuda", dtype=dt, generator=gen)
        v = torch.randn(b, skv, hkv, d, device="cuda", dtype=dt, generator=gen)
        out = torch.full_like(q, float("nan"))
        lse = torch.empty(b, hq, sq, device="cuda")
        P = fa_lib.make_params(lib, q, k, v, out, lse, causal=causal)
        served.append(fa_lib.kernel_name(lib, P))
        fa_lib.launch(lib, P)
        torch.cuda.synchronize()
        ref, ref_lse = fa_lib.reference(q, k, v, causal=causal)
        err = (out.double() - ref).abs().max().item()
        lse_err = (lse.double() - ref_lse).abs().max().item()
        tol = 1e-2 if dt == torch.float16 else 4e-2
        if not (err <= tol and lse_err <= 1e-2):
            print(f"  [{tag}] WRONG after the check: {served[-1]} max error {err:.3g} (tolerance {tol}), lse {lse_err:.3g}")
            return False, served
    x = torch.randn(256, 256, device="cuda")
    torch.cuda.synchronize()
    assert torch.allclose(x @ torch.eye(256, device="cuda"), x)
    print(f"  [{tag}] our kernels still correct in this process: {served}")
    return True, served


def child_direct(lib):
    cc = torch.cuda.get_device_capability()
    ok, _ = kernels_still_correct(lib, "before")
    expect = {"wrong": 0, "nan": 0}  # trapping candidates poison the process: first-use:trap covers them
    if cc == (9, 0):
        expect["sm90"] = 1  # positive control: a correct kernel passes the same check
    if cc == (10, 0):
        expect["sm100"] = None  # the real Blackwell kernel: reported, not asserted
    for cand, want in expect.items():
        buf = ctypes.create_string_buffer(2048)
        rc = lib.flashattn_ort_gpu_selfcheck(cand.encode(), buf, len(buf))
        verdict = {1: "PASSED", 0: "REJECTED"}.get(rc, f"ERROR {rc}: {lib.flashattn_ort_gpu_last_error().decode()}")
        print(f"self-check candidate {cand}: {verdict} ({buf.value.decode()})")
        if want is not None and rc != want:
            print(f"  expected {'pass' if want else 'rejection'}")
            ok = False
        good, _ = kernels_still_correct(lib, f"after {cand}")
        ok = ok and good
    return ok


def child_first_use(lib, candidate):
    torch.zeros(1, device="cuda")  # the primary context current on this thread, as in an ORT Compute
    torch.cuda.synchronize()
    buf = ctypes.create_string_buffer(4096)
    code = lib.flashattn_ort_gpu_selfcheck_verdict(buf, len(buf))
    names = {0: "not needed", 1: "passed", 2: "skipped", 3: "failed"}
    report = buf.value.decode()
    print(f"first-use verdict with FLASHATTN_SELFCHECK_CANDIDATE={candidate}: {names.get(code, code)} ({report})")
    if candidate == "trap":  # the process's CUDA state is lost: only the verdict and its advice can be checked
        return code == 3 and "restart" in report and "recorded" in report
    if candidate == "trap-again":
        if not (code == 3 and "earlier process" in report):
            return False
    good, served = kernels_still_correct(lib, "first use")
    if candidate in ("wrong", "nan", "trap-again"):
        portable = all(s.startswith("flash_fwd_sm80_") for s in served)
        print(f"  portable kernel serves after the failed check: {portable}")
        return good and code == 3 and portable
    if candidate == "sm90":
        return good and code == 1 and all(s.startswith("flash_fwd_sm90_") for s in served)
    return good


def main():
    lib_path = sys.argv[1]
    if len(sys.argv) > 2 and sys.argv[2] == "--child":
        lib = load(lib_path)
        scenario = sys.argv[3]
        ok = child_direct(lib) if scenario == "direct" else child_first_use(lib, scenario.split(":", 1)[1])
        sys.exit(0 if ok else 1)

    cc = torch.cuda.get_device_capability()
    print(f"device: {torch.cuda.get_device_name()} (compute capability {cc[0]}.{cc[1]})")
    # warnings expected: wrong, nan, trap, and sm100 off 10.0 (on 10.0 the real kernel's verdict is reported only)
    scenarios = [("direct", None, 2 if cc != (10, 0) else None)]
    scenarios += [(f"first-use:{c}", c, 1) for c in ("wrong", "nan", "trap", "trap-again")]
    if cc == (9, 0):
        scenarios.append(("first-use:sm90", "sm90", 0))
    if cc == (10, 0):
        scenarios.append(("first-use:none", None, None))  # the library's own check of the Blackwell kernel
    failed = []
    records = tempfile.mkdtemp(prefix="flashattn-selfcheck-")  # fault records of this run only
    for name, candidate, warnings in scenarios:
        env = dict(os.environ)
        env.pop("FLASHATTN_SELFCHECK_CANDIDATE", None)
        env["FLASHATTN_SELFCHECK_CACHE"] = records
        if candidate:
            env["FLASHATTN_SELFCHECK_CANDIDATE"] = candidate.replace("-again", "")
        print(f"== {name}")
        r = subprocess.run([sys.executable, __file__, lib_path, "--child", name], env=env, capture_output=True, text=True, timeout=900)
        sys.stdout.write(r.stdout)
        for line in r.stderr.splitlines():
            print(f"  stderr: {line}")
        n_warn = r.stderr.count(WARNING)
        ok = r.returncode == 0 and (warnings is None or n_warn == warnings)
        print(f"== {name}: {'OK' if ok else 'FAILED'} (exit {r.returncode}, {n_warn} warning(s), expected {warnings})")
        if not ok:
            failed.append(name)
    print(f"selfcheck: {len(scenarios) - len(failed)}/{len(scenarios)} scenarios as expected" + (f"; failed: {failed}" if failed else ""))
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
