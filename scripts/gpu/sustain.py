"""Sustained prefill calls with the GPU's clock and power sampled: is a gap cycles, or clock?

    python3 sustain.py LIB [D SEQ CAUSAL]... [--seconds S] [--who ours,cudnn,fa4]

The H200 runs attention at its power cap (700 W): the SM clock then follows each kernel's own power draw, so two
kernels that take the same cycles can run at different speeds. Per problem (bf16, batch*seq = 16k, width 2048)
and implementation, calls are queued back to back for S seconds (in chunks, waited for at each chunk's end) while
nvidia-smi samples the SM clock and board power every 20 ms. Printed: TFLOP/s over the run, the median clock and
power over its samples, and megacycles per call (time per call x median clock: the clock-free cost).
"""
import argparse
import datetime
import os
import statistics
import subprocess
import sys
import tempfile
import time

import torch

import bench
import fa_lib
from torch.nn.attention import SDPBackend


def samples(path):
    out = []
    for line in open(path):
        p = [x.strip() for x in line.split(",")]
        try:
            t = datetime.datetime.strptime(p[0], "%Y/%m/%d %H:%M:%S.%f").timestamp()
            out.append((t, float(p[1].split()[0]), float(p[2].split()[0])))
        except (ValueError, IndexError):
            continue
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("lib")
    ap.add_argument("problem", nargs="*", type=int)
    ap.add_argument("--seconds", type=float, default=2.0)
    ap.add_argument("--who", default="ours,cudnn,fa4")
    a = ap.parse_args()
    lib = fa_lib.load(a.lib)
    probs = a.problem or [64, 8192, 0]
    log = tempfile.NamedTemporaryFile(suffix=".csv", delete=False).name
    smi = subprocess.Popen(["nvidia-smi", "--query-gpu=timestamp,clocks.sm,power.draw", "--format=csv,noheader",
                            "-lms", "20"], stdout=open(log, "w"), stderr=subprocess.DEVNULL)
    time.sleep(1.0)
    windows = []
    try:
        for i in range(0, len(probs), 3):
            D, S, causal = probs[i], probs[i + 1], bool(probs[i + 2])
            B, H = 16384 // S, 2048 // D
            q, k, v = (torch.randn(B, S, H, D, device="cuda", dtype=torch.bfloat16) for _ in range(3))
            out = torch.empty_like(q)
            P = fa_lib.make_params(lib, q, k, v, out, causal=causal)
            flops = 4 * B * H * S * S * D * (0.5 if causal else 1.0)
            fns = {"ours": lambda: fa_lib.launch(lib, P),
                   "cudnn": bench.sdpa_fn(SDPBackend.CUDNN_ATTENTION, q, k, v, causal)}
            if bench.fa4_func is not None:
                fns["fa4"] = lambda: bench.fa4_func(q, k, v, causal=causal)
            for who in a.who.split(","):
                if who not in fns:
                    continue
                fn = fns[who]
                one = bench.warm_up(fn)
                chunk = max(1, int(0.1 / max(one, 1e-5)))
                calls, t0 = 0, time.time()
                while time.time() - t0 < a.seconds:
                    for _ in range(chunk):
                        fn()
                    torch.cuda.synchronize()
                    calls += chunk
                t1 = time.time()
                windows.append((f"d{D} s{S} {'causal' if causal else 'non-causal'}", who, t0, t1, calls, flops))
                time.sleep(0.5)  # a gap between windows in the clock log
    finally:
        time.sleep(0.3)
        smi.terminate()
        smi.wait()
    smp = samples(log)
    os.unlink(log)
    for prob, who, t0, t1, calls, flops in windows:
        # skip the first 0.3 s of a window: the clock settles to the new load
        inside = [(c, p) for t, c, p in smp if t0 + 0.3 <= t <= t1]
        per_call = (t1 - t0) / calls
        if not inside:
            print(f"{prob} {who:6s} {flops / per_call / 1e12:6.0f} TFLOP/s, no clock samples")
            continue
        clk = statistics.median(c for c, _ in inside)
        pw = statistics.median(p for _, p in inside)
        print(f"{prob} {who:6s} {flops / per_call / 1e12:6.0f} TFLOP/s, clock {clk:6.0f} MHz, power {pw:5.0f} W, "
              f"{per_call * clk:8.3f} Mcycles/call ({len(inside)} samples)")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
