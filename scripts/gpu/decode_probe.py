"""Where a decode step's GPU time goes: our split-KV decode at forced split counts (CUDA-graph time per step)
and the GPU time of each kernel it launches (torch.profiler), next to SDPA cuDNN's. Used to choose the split
heuristic and to see decode vs combine time; `run.sh decode-probe`. With --cluster-sweep: graph time per step of
the splits merged in a thread-block cluster of each size against the automatic plan through the combine kernel,
alternated in rounds (to choose when the cluster merge serves). With --split-sweep: graph time per step of the
combine path at forced split counts against the automatic plan, alternated in rounds (to choose the split rule).
With --memset-cost: what a stream-ordered memset of a few counters ahead of each step would cost (a fused
combine's arrival counters, zeroed per launch), against the combine kernel's share of the step's timeline.

usage: python3 decode_probe.py LIB [SPLITS,...] | python3 decode_probe.py LIB --cluster-sweep | --split-sweep | --memset-cost"""
import ctypes
import statistics
import sys

import torch
import torch.nn.functional as F
from torch.autograd import DeviceType
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.profiler import ProfilerActivity, profile

import fa_lib
from bench import decode_step_tensors, time_step
from gpu_time import heaviest, kernel_totals


SPLITS = [-1, 4, 8, 16, 32, 64, 128, 256]


def kernel_times(fn, reps=20):
    """GPU µs per call of each kernel `fn` launches."""
    for _ in range(3):
        fn()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(reps):
            fn()
        torch.cuda.synchronize()
    return "; ".join(f"{k} {v / reps:.1f}" for k, v in heaviest(kernel_totals(prof, name_width=48)))


def timeline(fn, calls=4):
    """Start offset and duration (µs) of each kernel of the last two of `calls` back-to-back calls captured
    in one CUDA graph: the gaps between kernels are what a step pays beyond their work."""
    g = torch.cuda.CUDAGraph()
    fn()
    torch.cuda.synchronize()
    with torch.cuda.graph(g):
        for _ in range(calls):
            fn()
    g.replay()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        g.replay()
        torch.cuda.synchronize()
    ev = sorted((e for e in prof.events() if e.device_type == DeviceType.CUDA), key=lambda e: e.time_range.start)
    ev = [e for e in ev if "emcpy" not in e.name and "emset" not in e.name]
    if not ev:
        return "no kernel events"
    per = len(ev) // calls
    tail = ev[-2 * per:]
    t0 = tail[0].time_range.start
    return " | ".join(f"{e.name[:28]} @{e.time_range.start - t0:.1f} +{e.time_range.end - e.time_range.start:.1f}" for e in tail)


CLUSTER_SIZES = [2, 3, 4, 6, 8, 12, 16]
SWEEP_SHAPES = ((1, 8, 1024), (1, 8, 2048), (1, 8, 2112), (1, 8, 3072), (1, 8, 4096), (1, 8, 8192), (1, 1, 2048),
                (1, 1, 3072), (1, 1, 8192), (2, 8, 4096), (4, 8, 2048), (8, 8, 2048), (8, 8, 4096), (8, 8, 8192),
                (16, 8, 2048), (8, 1, 2048), (8, 1, 3072), (8, 1, 8192), (16, 1, 2048), (32, 1, 2048), (64, 1, 2048),
                (64, 1, 4096), (64, 1, 8192))


def sweep(lib, tag, shapes, setups_for, rounds=3):
    """Graph time per step of each setup (name, split count, cluster mode) of setups_for(keys) on each shape,
    alternated in rounds; speeds relative to the first setup."""
    H, D = 32, 128
    for B, Hkv, S in shapes:
        q, k, v, out = decode_step_tensors(B, S, H, Hkv, D)
        P = fa_lib.make_params(lib, q, k, v, out)
        setups = setups_for(S)
        times = {name: [] for name, _, _ in setups}
        names = {}
        for _ in range(rounds):
            for name, splits, mode in setups:
                fa_lib.set_decode_splits(lib, splits)
                fa_lib.set_decode_cluster(lib, mode)
                ws = fa_lib.workspace(lib, P)
                names[name] = fa_lib.kernel_name(lib, P).split(" x")[1]
                times[name].append(time_step(lambda: fa_lib.launch(lib, P, ws=ws))[0] * 1e3)
        fa_lib.set_decode_splits(lib, -1)
        fa_lib.set_decode_cluster(lib, -1)
        base = statistics.median(times[setups[0][0]])
        cells = [f"{name}: {statistics.median(t):.1f} us ({base / statistics.median(t):.2f}x; {names[name]})"
                 for name, t in times.items()]
        print(f"{tag} B{B} Hkv{Hkv} kv{S}: " + " | ".join(cells), flush=True)
        del q, k, v, out
        torch.cuda.empty_cache()


def cluster_sweep(lib):
    sweep(lib, "sweep", SWEEP_SHAPES,
          lambda S: [("combine", -1, 0)] + [(f"cluster {c}", c, 1) for c in CLUSTER_SIZES if c <= S // 64])


SPLIT_SWEEP = [8, 16, 24, 32, 48, 64, 128]
SPLIT_SHAPES = ((1, 1, 4096), (1, 1, 8192), (1, 1, 16384), (1, 1, 32768), (2, 1, 8192), (4, 1, 8192), (4, 1, 32768),
                (1, 8, 4096), (1, 8, 8192), (1, 8, 16384), (1, 8, 32768), (2, 8, 8192), (2, 8, 32768), (8, 1, 8192),
                (8, 1, 32768))


def split_sweep(lib):
    sweep(lib, "splits", SPLIT_SHAPES, lambda S: [("auto", -1, 0)] + [(str(n), n, 0) for n in SPLIT_SWEEP])


MEMSET_SHAPES = ((1, 8, 2048), (1, 8, 8192), (1, 8, 32768), (1, 1, 8192), (1, 1, 32768), (8, 1, 8192))


def memset_cost(lib, rounds=3):
    """Graph time per step of ours alone, of a 64-word cuMemsetD32Async (a memset node, as the library would
    queue) before each step, and of that memset alone, alternated in rounds; and the step's kernel timeline."""
    cuda = ctypes.CDLL("libcuda.so.1")
    cuda.cuMemsetD32Async.argtypes = [ctypes.c_uint64, ctypes.c_uint, ctypes.c_size_t, ctypes.c_void_p]
    counters = torch.empty(64, device="cuda", dtype=torch.int32)

    def memset():
        rc = cuda.cuMemsetD32Async(counters.data_ptr(), 0, 64, ctypes.c_void_p(torch.cuda.current_stream().cuda_stream))
        assert rc == 0, f"cuMemsetD32Async: {rc}"

    H, D = 32, 128
    for B, Hkv, S in MEMSET_SHAPES:
        q, k, v, out = decode_step_tensors(B, S, H, Hkv, D)
        P = fa_lib.make_params(lib, q, k, v, out)
        ws = fa_lib.workspace(lib, P)

        def step():
            fa_lib.launch(lib, P, ws=ws)

        def memset_step():
            memset()
            step()

        runs = {"step": step, "memset+step": memset_step, "memset": memset}
        times = {name: [] for name in runs}
        for _ in range(rounds):
            for name, fn in runs.items():
                times[name].append(time_step(fn)[0] * 1e3)
        med = {name: statistics.median(t) for name, t in times.items()}
        print(f"memset B{B} Hkv{Hkv} kv{S} ({fa_lib.kernel_name(lib, P)}): step {med['step']:.2f} us, memset+step "
              f"{med['memset+step']:.2f} us (+{med['memset+step'] - med['step']:.2f}), memset alone {med['memset']:.2f} us",
              flush=True)
        print(f"  timeline: {timeline(step)}", flush=True)
        del q, k, v, out
        torch.cuda.empty_cache()


def main():
    lib = fa_lib.load(sys.argv[1])
    if sys.argv[2:3] == ["--memset-cost"]:
        memset_cost(lib)
        return
    if sys.argv[2:3] == ["--cluster-sweep"]:
        cluster_sweep(lib)
        return
    if sys.argv[2:3] == ["--split-sweep"]:
        split_sweep(lib)
        return
    global SPLITS
    if len(sys.argv) > 2:
        SPLITS = [int(x) for x in sys.argv[2].split(",")]
    H, D = 32, 128
    for B, Hkv, S in ((1, 8, 2048), (1, 8, 8192), (1, 8, 32768), (1, 1, 8192), (1, 1, 32768), (8, 8, 8192), (8, 1, 8192)):
        q, k, v, out = decode_step_tensors(B, S, H, Hkv, D)
        P = fa_lib.make_params(lib, q, k, v, out)
        qt, kt, vt = (t.transpose(1, 2) for t in (q, k, v))

        def cudnn():
            with sdpa_kernel(SDPBackend.CUDNN_ATTENTION):
                return F.scaled_dot_product_attention(qt, kt, vt, enable_gqa=Hkv != H)

        t_cudnn, _ = time_step(cudnn)
        print(f"== B{B} Hkv{Hkv} kv{S}: cuDNN {t_cudnn * 1e3:.1f} us graph | kernels: {kernel_times(cudnn)}", flush=True)
        for splits in SPLITS:
            fa_lib.set_decode_splits(lib, splits)
            ws = fa_lib.workspace(lib, P)
            t, how = time_step(lambda: fa_lib.launch(lib, P, ws=ws))
            ks = kernel_times(lambda: fa_lib.launch(lib, P, ws=ws))
            print(f"  splits {'auto' if splits < 0 else splits:>4} ({fa_lib.kernel_name(lib, P)}): {t * 1e3:.1f} us {how} "
                  f"= {t_cudnn / t:.2f}x cuDNN | kernels: {ks}", flush=True)
        fa_lib.set_decode_splits(lib, -1)
        fa_lib.set_dependent_launch(lib, False)
        t, how = time_step(lambda: fa_lib.launch(lib, P, ws=ws))
        print(f"  splits auto, no dependent launch: {t * 1e3:.1f} us {how}", flush=True)
        print(f"  timeline, no dependent launch: {timeline(lambda: fa_lib.launch(lib, P, ws=ws))}", flush=True)
        fa_lib.set_dependent_launch(lib, True)
        print(f"  timeline, dependent launch: {timeline(lambda: fa_lib.launch(lib, P, ws=ws))}", flush=True)
        print(f"  timeline, cuDNN: {timeline(cudnn)}", flush=True)
        del q, k, v, out
        torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
