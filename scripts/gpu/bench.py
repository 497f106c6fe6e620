"""Benchmark table: our CUDA kernel vs PyTorch SDPA (cuDNN and FlashAttention-2 backends) and FlashAttention-4,
bf16 forward, every row timed in this one run. Prefill rows: head_dim 64/128/256, seq 512..16k,
batch*seq = 16k, width (heads*head_dim) 2048, causal and not. Decode rows: 1 query token, 32 query heads over
8 KV heads (GQA) and 1 (MQA), d 128, batch 1/8/64, KV 2k/8k/32k, timed through CUDA graphs. TFLOP/s counts 4*B*H*Sq*Skv*D (half that when causal); ratio = ours / best anchor.

--gqa: instead, GQA prefill rows (query heads sharing a KV head; short query chunks over long caches, and long
prompts), each with our Hopper kernel packed (a group's heads in one tile) and unpacked timed as variants in the
same rounds; SDPA gets K/V repeated per query head, and for causal rows with fewer queries than keys SDPA runs
non-causal (its causal mask is top-left aligned), FA4 causal bottom-right like ours.

usage: python3 bench.py LIB [--quick] [--no-prefill] [--no-decode] [--gqa] [--out FILE.md]"""
import argparse
import math
import statistics
import sys
import time

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

import fa_lib

try:
    from flash_attn.cute import flash_attn_func as fa4_func
except Exception as e:  # noqa: BLE001
    fa4_func = None
    print(f"FA4 unavailable: {e}", file=sys.stderr)


VARIANTS = []
ROUNDS = 3
SYNCED = False  # --synced: prefill rows timed call by call (timeit), host launch cost included
# Seconds of untimed calls before each prefill timing (--settle): the clock under the power cap follows the load of
# the last ~tens of ms, and a short row's timing (~30 ms at 512 keys) otherwise runs at the clock the previous
# contestant left (a null variant, the default itself, read 0.89-0.95x at short d128 rows, docs/PERF.md).
SETTLE_S = 0.15
OTHER = None  # another build of the library (--other-lib): variant "lib" of prefill rows, a time ratio on decode rows


def warm_up(fn):
    """Runs fn a few times; returns the wall time (s) of one more call, waited for."""
    for _ in range(3):
        fn()
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    fn()
    torch.cuda.synchronize()
    return time.perf_counter() - t0


def event_time(fn, calls=1):
    """CUDA-event time (ms) of `calls` calls queued back to back, waited for."""
    s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    s.record()
    for _ in range(calls):
        fn()
    e.record()
    e.synchronize()
    return s.elapsed_time(e)


def timeit(fn, iters=None, budget_s=0.25):
    """Median of CUDA-event-timed runs (ms), each waited for, after warm-up."""
    one = warm_up(fn)
    n = iters or max(5, min(100, int(budget_s / max(one, 1e-6))))
    return statistics.median(event_time(fn) for _ in range(n))


def gpu_time(fn, budget_s=0.25, batches=5):
    """GPU time per call (ms): calls queued back to back between two CUDA events, the median of `batches` such
    batches, after warm-up. The host's cost of a launch (ours through ctypes and the tensor-map encoding, the
    anchors' through PyTorch or CuTe's Python) then overlaps the previous call's GPU time, where `timeit`, which
    waits for each call, adds it to every call's time: at d128 over 512 keys about 25 µs for ours, 40 µs for SDPA
    cuDNN and 90 µs for FlashAttention-4, on kernels of 135-175 µs (docs/PERF.md)."""
    one = warm_up(fn)
    n = max(3, min(50, int(budget_s / batches / max(one, 1e-6))))
    return statistics.median(event_time(fn, n) / n for _ in range(batches))


def settle(fn, seconds):
    """Runs fn back to back for about `seconds` (untimed), in batches of ~10 ms waited for."""
    one = warm_up(fn)
    batch = max(1, int(0.01 / max(one, 1e-6)))
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        for _ in range(batch):
            fn()
        torch.cuda.synchronize()


def prefill_time(fn):
    """How prefill rows are timed: after SETTLE_S of untimed calls, gpu_time, or with --synced each call waited
    for (the tables before 2026-12-01's twelfth session)."""
    if SETTLE_S > 0:
        settle(fn, SETTLE_S)
    return timeit(fn) if SYNCED else gpu_time(fn)


def sdpa_fn(backend, q, k, v, causal, gqa=False):
    qt, kt, vt = (t.transpose(1, 2) for t in (q, k, v))  # BSNH views -> BNSH

    def f():
        with sdpa_kernel(backend):
            return F.scaled_dot_product_attention(qt, kt, vt, is_causal=causal, enable_gqa=gqa)

    return f


def time_graph(fn, calls):
    """GPU time per call (ms) of `calls` back-to-back calls captured into one CUDA graph (no host launch
    overhead: decode steps are microseconds); None when capture fails."""
    try:
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(2):
                fn()
        torch.cuda.current_stream().wait_stream(side)
        g = torch.cuda.CUDAGraph()
        with torch.cuda.graph(g):
            for _ in range(calls):
                fn()
        return timeit(g.replay) / calls
    except Exception as e:  # noqa: BLE001
        print(f"  graph capture failed: {str(e).splitlines()[0][:120]}", file=sys.stderr)
        return None


def time_step(fn):
    """(ms per call, how): CUDA-graph time when capture works, else eager."""
    eager = timeit(fn)
    calls = max(1, min(20, int(0.5 / max(eager, 1e-3))))  # ~0.5 ms of work per graph replay
    g = time_graph(fn, calls)
    return (g, "graph") if g is not None else (eager, "eager")


def decode_step_tensors(B, S, H, Hkv, D=128):
    """q, k, v (random) and out of one bf16 decode step: 1 query token over S keys, BSNH."""
    q = torch.randn(B, 1, H, D, device="cuda", dtype=torch.bfloat16)
    k = torch.randn(B, S, Hkv, D, device="cuda", dtype=torch.bfloat16)
    v = torch.randn(B, S, Hkv, D, device="cuda", dtype=torch.bfloat16)
    return q, k, v, torch.empty(B, 1, H, D, device="cuda", dtype=torch.bfloat16)


def decode_row(lib, B, S, H, Hkv, D=128):
    """One decode step (1 query token), bf16: ours vs SDPA FA2/cuDNN (GQA through enable_gqa, else K/V
    repeated outside the timing) and FA4. KV GB/s = bytes of K and V read / time."""
    q, k, v, out = decode_step_tensors(B, S, H, Hkv, D)
    P = fa_lib.make_params(lib, q, k, v, out)
    ws = fa_lib.workspace(lib, P)
    kv_bytes = 2 * B * S * Hkv * D * 2
    res, how = {}, {}
    res["ours"], how["ours"] = time_step(lambda: fa_lib.launch(lib, P, ws=ws))
    ours_eager = timeit(lambda: fa_lib.launch(lib, P, ws=ws))  # with host launch overhead, as the old table
    other = None
    if OTHER:  # the other build, alternated with ours: (ours, other) graph times of three rounds each
        P_other = fa_lib.make_params(OTHER, q, k, v, out)
        ws_other = fa_lib.workspace(OTHER, P_other)
        pairs = [(time_step(lambda: fa_lib.launch(lib, P, ws=ws))[0], time_step(lambda: fa_lib.launch(OTHER, P_other, ws=ws_other))[0])
                 for _ in range(3)]
        other = statistics.median(o for _, o in pairs) / statistics.median(u for u, _ in pairs)
    for name, be in (("cudnn", SDPBackend.CUDNN_ATTENTION), ("fa2", SDPBackend.FLASH_ATTENTION)):
        res[name] = None
        try:
            res[name], how[name] = time_step(sdpa_fn(be, q, k, v, False, gqa=Hkv != H))
        except Exception:  # noqa: BLE001
            if kv_bytes * (H // Hkv) > 40e9:
                print(f"  {name}: no GQA support and repeated K/V too large at B{B} S{S} Hkv{Hkv}", file=sys.stderr)
                continue
            try:
                kk, vv = k.repeat_interleave(H // Hkv, 2), v.repeat_interleave(H // Hkv, 2)
                res[name], how[name] = time_step(sdpa_fn(be, q, kk, vv, False))
                how[name] += ", K/V repeated"
                del kk, vv
            except Exception as e:  # noqa: BLE001
                print(f"  {name} failed at B{B} S{S} Hkv{Hkv}: {str(e).splitlines()[0][:120]}", file=sys.stderr)
    res["fa4"] = None
    if fa4_func is not None:
        try:
            res["fa4"], how["fa4"] = time_step(lambda: fa4_func(q, k, v, causal=False))
        except Exception as e:  # noqa: BLE001
            print(f"  fa4 failed at B{B} S{S} Hkv{Hkv}: {str(e).splitlines()[0][:120]}", file=sys.stderr)
    best = min([t for n, t in res.items() if n != "ours" and t], default=None)
    row = dict(B=B, S=S, H=H, Hkv=Hkv, ms=res, how=how, ours_eager=ours_eager, gbs=kv_bytes / (res["ours"] * 1e-3) / 1e9,
               best_gbs=(kv_bytes / (best * 1e-3) / 1e9) if best else None, speedup=(best / res["ours"]) if best else None,
               kernel=fa_lib.kernel_name(lib, P), other=other)
    del q, k, v, out, ws
    torch.cuda.empty_cache()
    return row


SETTINGS = ("grid=", "cluster=", "splits=", "decode=", "l2promo=")


def apply_variant(lib, name):
    """Sets up variant `name` of our kernel: parts joined by '+', each a kernel name (or family) to prefer or a
    setting — grid=0|1 (the Hopper kernel's blocks: one per tile / persistent), cluster=0|1 (clusters of two
    never / wherever a cluster form fits), splits=N (prefill split-KV: 0 never, n forced), decode=0 (the decode
    kernel off), l2promo=N (the tensor maps' L2 promotion: 0, 64, 128, 256 bytes). "default" restores every setting."""
    lib.flashattn_ort_gpu_set_kernel(None)
    lib.flashattn_ort_gpu_set_persistent(-1)
    lib.flashattn_ort_gpu_set_prefill_cluster(-1)
    fa_lib.set_prefill_splits(lib, -1)
    fa_lib.set_decode_splits(lib, -1)
    fa_lib.set_l2_promotion(lib, -1)
    if name == "default":
        return
    for part in name.split("+"):
        key, _, value = part.partition("=")
        if part.startswith("grid="):
            lib.flashattn_ort_gpu_set_persistent(int(value))
        elif part.startswith("cluster="):
            lib.flashattn_ort_gpu_set_prefill_cluster(int(value))
        elif part.startswith("splits="):
            fa_lib.set_prefill_splits(lib, int(value))
        elif part.startswith("decode="):
            fa_lib.set_decode_splits(lib, -1 if int(value) else 0)
        elif part.startswith("l2promo="):
            fa_lib.set_l2_promotion(lib, int(value))
        else:
            lib.flashattn_ort_gpu_set_kernel(part.encode())


def run_row(lib, B, S, H, D, causal, Hkv=None, Sq=None, rows_out=None):
    Hkv = Hkv or H
    Sq = Sq or S
    q = torch.randn(B, Sq, H, D, device="cuda", dtype=torch.bfloat16)
    k = torch.randn(B, S, Hkv, D, device="cuda", dtype=torch.bfloat16)
    v = torch.randn(B, S, Hkv, D, device="cuda", dtype=torch.bfloat16)
    out = torch.empty(B, Sq, H, D, device="cuda", dtype=torch.bfloat16)
    P = fa_lib.make_params(lib, q, k, v, out, causal=causal)
    flops = 4 * B * H * Sq * S * D * (0.5 if causal and Sq == S else 1.0)
    # Ours, its variants and the anchors are timed in rounds, alternated (the median of each over ROUNDS rounds):
    # the H200 runs these loads at its power cap (700 W, clock 1.5-1.98 GHz as the load and temperature go), so
    # two timings of one kernel a second apart differ by up to ~9%; anchors timed once after ours would compare
    # different clocks. Grid variants (how the Hopper kernel's blocks take tiles) run on every row, kernel
    # variants on their head dim (a family name, e.g. sm80, on every row).
    variants = [v for v in VARIANTS if v.startswith(SETTINGS) or f"_d{D}_" in v or "_" not in v] + (["lib"] if OTHER else [])
    P_other = fa_lib.make_params(OTHER, q, k, v, out, causal=causal) if OTHER else None
    gqa = Hkv != H
    kk, vv = (k.repeat_interleave(H // Hkv, 2), v.repeat_interleave(H // Hkv, 2)) if gqa else (k, v)
    fns = {name: (lambda: fa_lib.launch(lib, P)) for name in ["default"] + variants}
    if OTHER:
        fns["lib"] = lambda: fa_lib.launch(OTHER, P_other)
    # decode with causal=False: SDPA's is_causal is top-left aligned, ours bottom-right
    fns["cudnn"] = sdpa_fn(SDPBackend.CUDNN_ATTENTION, q, kk, vv, causal and Sq == S)
    fns["fa2"] = sdpa_fn(SDPBackend.FLASH_ATTENTION, q, kk, vv, causal and Sq == S)
    if fa4_func is not None:
        fns["fa4"] = lambda: fa4_func(q, k, v, causal=causal)
    times = {name: [] for name in fns}
    for rnd in range(ROUNDS):
        # each round starts with the next contestant, so none always follows the same one
        order = list(fns.items())
        order = order[rnd % len(order):] + order[:rnd % len(order)]
        for name, fn in order:
            if times[name] is None:
                continue  # failed in an earlier round
            apply_variant(lib, name if name in variants and name != "lib" else "default")
            try:
                times[name].append(prefill_time(fn))
            except Exception as e:  # noqa: BLE001
                times[name] = None
                print(f"  {name} failed at B{B} S{S} H{H} D{D}: {str(e).splitlines()[0][:120]}", file=sys.stderr)
            apply_variant(lib, "default")
    res = {name: (statistics.median(t) if t else None) for name, t in times.items()}
    res.setdefault("fa4", None)
    for name in variants:
        t = res[name]
        if t is None or res["default"] is None:
            continue
        print(f"    variant {name}: {flops / (t * 1e-3) / 1e12:.0f} TFLOP/s (ratio to the default in the same rounds: "
              f"{res['default'] / t:.3f})", flush=True)
    res["ours"] = res.pop("default")
    for name in variants:
        res.pop(name)
    kname = fa_lib.kernel_name(lib, P)
    tf = {k: (flops / (t * 1e-3) / 1e12 if t else None) for k, t in res.items()}
    anchors = [tf[k] for k in ("cudnn", "fa2", "fa4") if tf[k]]
    best = max(anchors) if anchors else None
    row = dict(B=B, Sq=Sq, Skv=S, H=H, Hkv=Hkv, D=D, causal=causal, ms=res, tf=tf, best=best, kernel=kname,
               vs_fa2=(tf["ours"] / tf["fa2"]) if tf.get("fa2") else None,
               ratio=(tf["ours"] / best) if best else None)
    if rows_out is not None:
        rows_out.append(row)
    return row


# (batch, query length, key length, query heads, KV heads, head_dim, causal)
GQA_ROWS = [
    (8, 40, 4096, 32, 8, 128, True),
    (16, 32, 2048, 32, 8, 128, True),
    (8, 100, 8192, 32, 8, 128, True),
    (4, 200, 16384, 32, 8, 128, False),
    (2, 17, 32768, 32, 8, 128, True),
    (1, 100, 32768, 32, 8, 128, True),
    (1, 256, 16384, 32, 8, 128, True),
    (1, 64, 16384, 32, 32, 128, True),
    (4, 30, 8192, 32, 8, 128, True),
    (1, 40, 32768, 28, 4, 128, True),
    (1, 100, 16384, 12, 2, 128, True),
    (8, 48, 4096, 32, 4, 64, True),
    (8, 24, 8192, 64, 8, 128, True),
    (4, 2048, 2048, 32, 8, 64, True),
    (1, 4096, 4096, 32, 8, 128, True),
    (2, 8192, 8192, 32, 8, 128, False),
    (1, 16384, 16384, 32, 8, 128, True),
]


def gqa_table(lib, spec=None):
    """GQA prefill rows with the packed and unpacked Hopper kernels as variants (see the module docstring), or
    other variants where --variants names some; `spec` replaces the rows: "B:Sq:Skv:H:Hkv:D:causal;..."."""
    table = [tuple(int(x) for x in r.split(":")) for r in spec.split(";")] if spec else GQA_ROWS
    if not VARIANTS:
        for D in sorted({r[5] for r in table}):
            VARIANTS.extend([f"flash_fwd_sm90_bf16_d{D}_m128n128w12_plain_packgqa", f"flash_fwd_sm90_bf16_d{D}_m128n128w12_plain"])
        VARIANTS.append("splits=0")
    rows = []
    for B, Sq, Skv, H, Hkv, D, causal in table:
        causal = bool(causal)
        r = run_row(lib, B, Skv, H, D, causal, Hkv=Hkv, Sq=Sq, rows_out=rows)
        print(f"gqa B{B} q{Sq} kv{Skv} {H}/{Hkv} d{D} causal={int(causal)}: ours {fmt(r['tf']['ours'])} fa2 "
              f"{fmt(r['tf']['fa2'])} cudnn {fmt(r['tf']['cudnn'])} fa4 {fmt(r['tf']['fa4'])} TFLOP/s ({r['kernel']})", flush=True)
    lines = ["| batch | query len | key len | heads q/kv | d | causal | ours µs | SDPA FA2 µs | SDPA cuDNN µs | FA4 µs | ours/best | kernel |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        us = lambda n: fmt(r["ms"].get(n) and r["ms"][n] * 1e3, "{:.1f}")  # noqa: E731
        lines.append(f"| {r['B']} | {r['Sq']} | {r['Skv']} | {r['H']}/{r['Hkv']} | {r['D']} | {'yes' if r['causal'] else 'no'} | "
                     f"{us('ours')} | {us('fa2')} | {us('cudnn')} | {us('fa4')} | {fmt(r['ratio'], '{:.2f}')} | `{r['kernel']}` |")
    return lines


def fmt(x, spec="{:.0f}"):
    return "—" if x is None else spec.format(x)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("lib")
    ap.add_argument("--quick", action="store_true", help="d128 only")
    ap.add_argument("--out", default=None)
    ap.add_argument("--dims", default="64,96,128,192,256")
    ap.add_argument("--causal", default="0,1", help="prefill rows: non-causal (0), causal (1) or both")
    ap.add_argument("--no-decode", action="store_true")
    ap.add_argument("--no-prefill", action="store_true")
    ap.add_argument("--gqa", action="store_true", help="GQA prefill rows, packed and unpacked (nothing else)")
    ap.add_argument("--gqa-rows", default=None, help="--gqa's rows instead of the built-in ones: B:Sq:Skv:H:Hkv:D:causal;...")
    ap.add_argument("--variants", default="", help="comma-separated kernel names to time too")
    ap.add_argument("--rounds", type=int, default=3, help="prefill rows: rounds of ours, its variants and the anchors, "
                    "alternated (each the median of its rounds)")
    ap.add_argument("--other-lib", default=None, help="another build of the library, timed as variant 'lib' in the same rounds")
    ap.add_argument("--cluster", type=int, default=-1, help="decode splits merged in a cluster: -1 auto, 0 never, 1 whenever they fit")
    ap.add_argument("--other-cluster", type=int, default=-1, help="the same for --other-lib (a copy of the same build at "
                    "another path compares two settings)")
    ap.add_argument("--row-groups", type=int, default=-1, help="decode: row groups of an MQA step's rows in ours "
                    "(-1 auto, 1 one group, n groups)")
    ap.add_argument("--synced", action="store_true", help="prefill rows: wait for each call (host launch cost "
                    "included, as the tables before 2026-12-01's twelfth session) instead of queueing calls")
    ap.add_argument("--settle", type=float, default=0.15, help="prefill rows: seconds of untimed calls before "
                    "each timing, so each runs at the clock its own load sets (0: none, as before 2026-12-02)")
    ap.add_argument("--other-kernel", default=None, help="the kernel or family (sm80, sm90) --other-lib prefers, so a "
                    "variant of ours can be compared with the same kernel of the other build")
    a = ap.parse_args()
    VARIANTS.extend(v for v in a.variants.split(",") if v)
    global ROUNDS, SYNCED, SETTLE_S
    SYNCED = a.synced
    SETTLE_S = max(0.0, a.settle)
    ROUNDS = max(1, a.rounds)
    lib = fa_lib.load(a.lib)
    fa_lib.set_decode_cluster(lib, a.cluster)
    fa_lib.set_decode_row_groups(lib, a.row_groups)
    global OTHER
    if a.other_lib:
        OTHER = fa_lib.load(a.other_lib)
        fa_lib.set_decode_cluster(OTHER, a.other_cluster)
        if a.other_kernel:
            OTHER.flashattn_ort_gpu_set_kernel(a.other_kernel.encode())
    dev = torch.cuda.get_device_name()
    if a.gqa:
        text = "\n".join([f"Device: {dev}; torch {torch.__version__}; bf16 forward, GQA prefill.", ""] + gqa_table(lib, a.gqa_rows))
        print(text)
        if a.out:
            with open(a.out, "w") as f:
                f.write(text + "\n")
        return
    rows = []
    dims = [128] if a.quick else [int(d) for d in a.dims.split(",")]
    seqs = [512, 1024, 2048, 4096, 8192, 16384]
    for D in ([] if a.no_prefill else dims):
        H = 2048 // D
        for causal in [c == "1" for c in a.causal.split(",")]:
            for S in seqs:
                r = run_row(lib, 16384 // S, S, H, D, causal, rows_out=rows)
                print(f"d{D} s{S} causal={int(causal)} ours {fmt(r['tf']['ours'])} fa2 {fmt(r['tf']['fa2'])} "
                      f"cudnn {fmt(r['tf']['cudnn'])} fa4 {fmt(r['tf']['fa4'])} TFLOP/s", flush=True)
    drows = []
    for Hkv in ([] if a.no_decode else (8, 1)):
        for B in (1, 8, 64):
            for S in (2048, 8192, 32768):
                r = decode_row(lib, B, S, 32, Hkv)
                drows.append(r)
                print(f"decode B{B} Hkv{Hkv} kv{S}: ours {r['ms']['ours']*1e3:.1f} us {r['gbs']:.0f} GB/s, best/ours "
                      f"{fmt(r['speedup'], '{:.2f}')} ({r['kernel']})"
                      + (f"; other lib time / ours {r['other']:.3f}" if r["other"] else ""), flush=True)
    timing = "each call waited for, host launch cost included" if SYNCED else "calls queued back to back, GPU time per call"
    lines = [f"Device: {dev}; torch {torch.__version__}; bf16 forward; TFLOP/s (median of CUDA-event timings: {timing}).", "",
             "| head_dim | seq | batch | heads | causal | ours | SDPA FA2 | SDPA cuDNN | FA4 | ours/FA2 | ours/best | kernel |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        t = r["tf"]
        lines.append(f"| {r['D']} | {r['Skv']} | {r['B']} | {r['H']} | {'yes' if r['causal'] else 'no'} | {fmt(t['ours'])} | "
                     f"{fmt(t['fa2'])} | {fmt(t['cudnn'])} | {fmt(t['fa4'])} | {fmt(r['vs_fa2'], '{:.2f}')} | "
                     f"{fmt(r['ratio'], '{:.2f}')} | `{r['kernel']}` |")
    us = lambda m: fmt(m and m * 1e3, "{:.1f}")  # noqa: E731
    lines += ["", "Decode step (1 query token, 32 query heads, d 128, bf16): µs per step, GPU time from CUDA graphs of "
              "back-to-back steps (eager where capture failed: see `how`). KV GB/s = bytes of K and V / time "
              "(copy ceilings: H100 ≈ 3000, H200 unmeasured; the best anchors reach ≈ 4400 on it). best/ours > 1: ours faster.", "",
              "| batch | KV heads | KV len | ours µs | ours KV GB/s | SDPA FA2 µs | SDPA cuDNN µs | FA4 µs | best KV GB/s | best/ours | ours eager µs | kernel | how |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in drows:
        ms = r["ms"]
        hows = "; ".join(f"{k}: {v}" for k, v in r["how"].items() if v != "graph") or "graph"
        lines.append(f"| {r['B']} | {r['Hkv']} | {r['S']} | {us(ms['ours'])} | {r['gbs']:.0f} | {us(ms['fa2'])} | "
                     f"{us(ms['cudnn'])} | {us(ms['fa4'])} | {fmt(r['best_gbs'])} | {fmt(r['speedup'], '{:.2f}')} | "
                     f"{us(r['ours_eager'])} | `{r['kernel']}` | {hows} |")
    text = "\n".join(lines)
    print(text)
    if a.out:
        with open(a.out, "w") as f:
            f.write(text + "\n")


if __name__ == "__main__":
    main()
