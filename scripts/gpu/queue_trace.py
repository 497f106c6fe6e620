"""Where the time of queued prefill calls goes: kernel time against the gaps between kernels.

    python3 queue_trace.py LIB [D SEQ CAUSAL]... [--who ours,ours-nodep,cudnn,fa4] [--calls N]

For each problem (bf16, batch*seq = 16k, width 2048; default d128 512 keys non-causal) and each implementation,
N calls are queued back to back (as bench.py's gpu_time times them) under the PyTorch profiler, whose CUPTI trace
gives every kernel's start and end on the GPU. Printed per implementation: calls, median kernel time, median gap
from one call's last kernel end to the next call's first kernel start (negative: the next kernel started before
the previous one ended, as a programmatic dependent launch may), and the span per call (first start to last end
over the calls), and the host's time to enqueue one call (above the kernel time, the GPU waits for the host).
`ours-nodep`: ours with programmatic dependent launches off.
"""
import argparse
import json
import os
import statistics
import sys
import tempfile
import time

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.profiler import ProfilerActivity, profile

import fa_lib


def make_fn(who, lib, q, k, v, causal):
    if who in ("ours", "ours-nodep"):
        out = torch.empty_like(q)
        P = fa_lib.make_params(lib, q, k, v, out, causal=causal)
        ws = fa_lib.workspace(lib, P)
        return lambda: fa_lib.launch(lib, P, ws=ws), fa_lib.kernel_name(lib, P)
    if who == "cudnn":
        qt, kt, vt = (t.transpose(1, 2) for t in (q, k, v))

        def f():
            with sdpa_kernel(SDPBackend.CUDNN_ATTENTION):
                return F.scaled_dot_product_attention(qt, kt, vt, is_causal=causal)

        return f, "SDPA cuDNN"
    if who == "fa4":
        from flash_attn.cute import flash_attn_func

        return lambda: flash_attn_func(q, k, v, causal=causal), "FlashAttention-4"
    raise SystemExit(f"unknown implementation {who}")


def kernels_of(fn, calls):
    """(name, start µs, end µs) of every GPU kernel of `calls` queued calls, in start order."""
    for _ in range(5):
        fn()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        t0 = time.perf_counter()
        for _ in range(calls):
            fn()
        host = (time.perf_counter() - t0) / calls * 1e6
        torch.cuda.synchronize()
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as f:
        path = f.name
    prof.export_chrome_trace(path)
    with open(path) as f:
        trace = json.load(f)
    os.unlink(path)
    ks = [(e["name"], float(e["ts"]), float(e["ts"]) + float(e["dur"]))
          for e in trace.get("traceEvents", []) if e.get("cat") == "kernel"]
    return sorted(ks, key=lambda x: x[1]), host


def summarise(ks, host, calls):
    if not ks:
        return "no kernels traced"
    per_call = len(ks) // calls if len(ks) % calls == 0 else None
    if not per_call:
        return f"{len(ks)} kernels for {calls} calls: cannot group them into calls"
    groups = [ks[i * per_call:(i + 1) * per_call] for i in range(calls)]
    busy = [sum(e - s for _, s, e in g) for g in groups]
    gaps = [groups[i + 1][0][1] - groups[i][-1][2] for i in range(calls - 1)]
    span = (groups[-1][-1][2] - groups[0][0][1]) / calls
    names = sorted({n[:60] for n, _, _ in ks})
    return (f"{per_call} kernel(s)/call, kernel time median {statistics.median(busy):.1f} us "
            f"(min {min(busy):.1f}, max {max(busy):.1f}), gap median {statistics.median(gaps):+.1f} us "
            f"(min {min(gaps):+.1f}, max {max(gaps):+.1f}), span/call {span:.1f} us, host enqueue/call {host:.1f} us; "
            f"{', '.join(names)}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("lib")
    ap.add_argument("problem", nargs="*", type=int)
    ap.add_argument("--who", default="ours,ours-nodep,cudnn,fa4")
    ap.add_argument("--calls", type=int, default=40)
    a = ap.parse_args()
    lib = fa_lib.load(a.lib)
    probs = a.problem or [128, 512, 0]
    if len(probs) % 3:
        raise SystemExit("problems are triples: D SEQ CAUSAL")
    for i in range(0, len(probs), 3):
        D, S, causal = probs[i], probs[i + 1], bool(probs[i + 2])
        B, H = 16384 // S, 2048 // D
        q, k, v = (torch.randn(B, S, H, D, device="cuda", dtype=torch.bfloat16) for _ in range(3))
        print(f"== d{D} seq {S} {'causal' if causal else 'non-causal'} (batch {B}, heads {H})")
        for who in a.who.split(","):
            try:
                fa_lib.set_dependent_launch(lib, who != "ours-nodep")
                fn, name = make_fn(who, lib, q, k, v, causal)
                print(f"  {who:10s} {summarise(*kernels_of(fn, a.calls), a.calls)}  [{name}]")
            except Exception as e:  # noqa: BLE001
                print(f"  {who:10s} failed: {str(e).splitlines()[0][:160]}")
            finally:
                fa_lib.set_dependent_launch(lib, True)
        sys.stdout.flush()


if __name__ == "__main__":
    main()
