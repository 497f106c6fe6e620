"""What a prefill call costs the host, against what it costs the GPU.

    python3 host_cost.py LIB [D SEQ CAUSAL]...   # bf16, batch*seq = 16k, width 2048; default d128 512 non-causal
    python3 host_cost.py LIB --gpu D SEQ CAUSAL...  # graph against queued GPU time only, in alternated rounds

Per problem and implementation: the GPU time per call with no host in the way (calls captured in a CUDA graph),
the time per call queued back to back as bench.py times prefill rows (gpu_time: the larger of the GPU's and the
host's cost per call), and the host's time to enqueue one call (perf_counter over queued calls, nothing waited
for). For ours also its parts: the library's launch entry point alone (stream and workspace given), and its
workspace-size query alone.
"""
import ctypes
import statistics
import sys
import time

import torch

import bench
import fa_lib
from torch.nn.attention import SDPBackend


def host_us(fn, calls=100, reps=5):
    """Median over reps of the host time (µs) to enqueue one call, `calls` calls queued without waiting."""
    out = []
    for _ in range(reps):
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        for _ in range(calls):
            fn()
        out.append((time.perf_counter() - t0) / calls * 1e6)
        torch.cuda.synchronize()
    return statistics.median(out)


def gpu_rounds(lib, fns, rounds=3):
    """GPU time per call of each fn, graph-captured and queued, alternated over `rounds` rounds, each timing
    stamped with the wall clock (to be read against a clock/power log such as nvidia-smi's)."""
    for r in range(rounds):
        for name, (fn, dep) in fns.items():
            fa_lib.set_dependent_launch(lib, dep)
            t0 = time.time()
            graph = bench.time_graph(fn, 20)
            t1 = time.time()
            queued = bench.gpu_time(fn)
            t2 = time.time()
            fa_lib.set_dependent_launch(lib, True)
            print(f"  round {r} {name:18s} graph {graph * 1e3:7.1f} us/call [{t0:.2f}-{t1:.2f}], "
                  f"queued {queued * 1e3:7.1f} us/call [{t1:.2f}-{t2:.2f}]")
            sys.stdout.flush()


def main():
    lib = fa_lib.load(sys.argv[1])
    if sys.argv[2:3] == ["--gpu"]:  # graph against queued only, alternated
        probs = [int(x) for x in sys.argv[3:]]
        for i in range(0, len(probs), 3):
            D, S, causal = probs[i], probs[i + 1], bool(probs[i + 2])
            B, H = 16384 // S, 2048 // D
            q, k, v = (torch.randn(B, S, H, D, device="cuda", dtype=torch.bfloat16) for _ in range(3))
            out = torch.empty_like(q)
            P = fa_lib.make_params(lib, q, k, v, out, causal=causal)
            print(f"== d{D} seq {S} {'causal' if causal else 'non-causal'}: {fa_lib.kernel_name(lib, P)}")
            gpu_rounds(lib, {"ours": (lambda: fa_lib.launch(lib, P), True),
                             "ours, not dependent": (lambda: fa_lib.launch(lib, P), False),
                             "SDPA cuDNN": (bench.sdpa_fn(SDPBackend.CUDNN_ATTENTION, q, k, v, causal), True)})
        return
    probs = [int(x) for x in sys.argv[2:]] or [128, 512, 0]
    for i in range(0, len(probs), 3):
        D, S, causal = probs[i], probs[i + 1], bool(probs[i + 2])
        B, H = 16384 // S, 2048 // D
        q, k, v = (torch.randn(B, S, H, D, device="cuda", dtype=torch.bfloat16) for _ in range(3))
        out = torch.empty_like(q)
        P = fa_lib.make_params(lib, q, k, v, out, causal=causal)
        stream = torch.cuda.current_stream().cuda_stream
        ws = fa_lib.workspace(lib, P)
        wptr, wn = (ws.data_ptr(), ws.numel()) if ws is not None else (0, 0)
        n = ctypes.c_size_t()
        parts = {
            "ours (bench's call)": lambda: fa_lib.launch(lib, P),
            "ours, launch entry only": lambda: lib.flashattn_ort_gpu_launch_workspace(
                ctypes.byref(P), ctypes.c_void_p(stream), ctypes.c_uint64(wptr), ctypes.c_size_t(wn)),
            "ours, workspace query only": lambda: lib.flashattn_ort_gpu_workspace_size(
                ctypes.byref(P), ctypes.c_void_p(stream), ctypes.byref(n)),
            "SDPA cuDNN": bench.sdpa_fn(SDPBackend.CUDNN_ATTENTION, q, k, v, causal),
            "torch add (a small kernel)": lambda: torch.add(out[:1], 1.0),
        }
        print(f"== d{D} seq {S} {'causal' if causal else 'non-causal'} (batch {B}, heads {H}): "
              f"{fa_lib.kernel_name(lib, P)}")
        for name, fn in parts.items():
            fn()
            torch.cuda.synchronize()
            host = host_us(fn)
            if name in ("ours (bench's call)", "SDPA cuDNN"):
                graph = bench.time_graph(fn, 20)
                queued = bench.gpu_time(fn)
                print(f"  {name:28s} host {host:7.1f} us/call, GPU (graph) {graph * 1e3:7.1f} us/call, "
                      f"queued (bench) {queued * 1e3:7.1f} us/call")
            else:
                print(f"  {name:28s} host {host:7.1f} us/call")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
