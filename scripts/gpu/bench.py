"""Benchmark table: our CUDA kernel vs PyTorch SDPA (cuDNN and FlashAttention-2 backends) and FlashAttention-4,
bf16 forward, every row timed in this one run. Prefill rows: head_dim 64/128/256, seq 512..16k,
batch*seq = 16k, width (heads*head_dim) 2048, causal and not. Decode rows: 1 query token, GQA 32/8, d 128,
KV 2k..32k. TFLOP/s counts 4*B*H*Sq*Skv*D (half that when causal); ratio = ours / best anchor.

usage: python3 bench.py LIB [--quick] [--out FILE.md]"""
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


def timeit(fn, iters=None, budget_s=0.25):
    """Median of CUDA-event-timed runs (ms), after warm-up."""
    for _ in range(3):
        fn()
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    fn()
    torch.cuda.synchronize()
    one = time.perf_counter() - t0
    n = iters or max(5, min(100, int(budget_s / max(one, 1e-6))))
    times = []
    for _ in range(n):
        s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        s.record()
        fn()
        e.record()
        e.synchronize()
        times.append(s.elapsed_time(e))
    return statistics.median(times)


def sdpa_fn(backend, q, k, v, causal, gqa=False):
    qt, kt, vt = (t.transpose(1, 2) for t in (q, k, v))  # BSNH views -> BNSH

    def f():
        with sdpa_kernel(backend):
            return F.scaled_dot_product_attention(qt, kt, vt, is_causal=causal, enable_gqa=gqa)

    return f


def run_row(lib, B, S, H, D, causal, Hkv=None, Sq=None, rows_out=None):
    Hkv = Hkv or H
    Sq = Sq or S
    q = torch.randn(B, Sq, H, D, device="cuda", dtype=torch.bfloat16)
    k = torch.randn(B, S, Hkv, D, device="cuda", dtype=torch.bfloat16)
    v = torch.randn(B, S, Hkv, D, device="cuda", dtype=torch.bfloat16)
    out = torch.empty(B, Sq, H, D, device="cuda", dtype=torch.bfloat16)
    P = fa_lib.make_params(lib, q, k, v, out, causal=causal)
    flops = 4 * B * H * Sq * S * D * (0.5 if causal and Sq == S else 1.0)
    res = {}
    res["ours"] = timeit(lambda: fa_lib.launch(lib, P))
    for name in VARIANTS:
        if name.startswith("grid="):  # the Hopper kernel's grid: grid=0 one block per tile, grid=1 persistent
            lib.flashattn_ort_gpu_set_persistent(int(name[5:]))
        elif f"_d{D}_" in name:
            lib.flashattn_ort_gpu_set_kernel(name.encode())
        else:
            continue
        t = timeit(lambda: fa_lib.launch(lib, P))
        lib.flashattn_ort_gpu_set_kernel(None)
        lib.flashattn_ort_gpu_set_persistent(-1)
        print(f"    variant {name}: {flops / (t * 1e-3) / 1e12:.0f} TFLOP/s", flush=True)
    gqa = Hkv != H
    for name, be in (("cudnn", SDPBackend.CUDNN_ATTENTION), ("fa2", SDPBackend.FLASH_ATTENTION)):
        try:
            if gqa:
                kk, vv = k.repeat_interleave(H // Hkv, 2), v.repeat_interleave(H // Hkv, 2)
            else:
                kk, vv = k, v
            # decode with causal=False: SDPA's is_causal is top-left aligned, ours bottom-right
            res[name] = timeit(sdpa_fn(be, q, kk, vv, causal and Sq == S))
        except Exception as e:  # noqa: BLE001
            res[name] = None
            print(f"  {name} failed at B{B} S{S} H{H} D{D}: {str(e).splitlines()[0][:120]}", file=sys.stderr)
    if fa4_func is not None:
        try:
            res["fa4"] = timeit(lambda: fa4_func(q, k, v, causal=causal))
        except Exception as e:  # noqa: BLE001
            res["fa4"] = None
            print(f"  fa4 failed at B{B} S{S} H{H} D{D}: {str(e).splitlines()[0][:120]}", file=sys.stderr)
    else:
        res["fa4"] = None
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


def fmt(x, spec="{:.0f}"):
    return "—" if x is None else spec.format(x)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("lib")
    ap.add_argument("--quick", action="store_true", help="d128 only")
    ap.add_argument("--out", default=None)
    ap.add_argument("--dims", default="64,96,128,192,256")
    ap.add_argument("--no-decode", action="store_true")
    ap.add_argument("--variants", default="", help="comma-separated kernel names to time too")
    a = ap.parse_args()
    VARIANTS.extend(v for v in a.variants.split(",") if v)
    lib = fa_lib.load(a.lib)
    dev = torch.cuda.get_device_name()
    rows = []
    dims = [128] if a.quick else [int(d) for d in a.dims.split(",")]
    seqs = [512, 1024, 2048, 4096, 8192, 16384]
    for D in dims:
        H = 2048 // D
        for causal in (False, True):
            for S in seqs:
                r = run_row(lib, 16384 // S, S, H, D, causal, rows_out=rows)
                print(f"d{D} s{S} causal={int(causal)} ours {fmt(r['tf']['ours'])} fa2 {fmt(r['tf']['fa2'])} "
                      f"cudnn {fmt(r['tf']['cudnn'])} fa4 {fmt(r['tf']['fa4'])} TFLOP/s", flush=True)
    drows = []
    for S in ([] if a.no_decode else [2048, 4096, 8192, 16384, 32768]):
        r = run_row(lib, 1, S, 32, 128, False, Hkv=8, Sq=1, rows_out=drows)
        print(f"decode kv{S} ours {r['ms']['ours']*1e3:.1f} us", flush=True)
    lines = [f"Device: {dev}; torch {torch.__version__}; bf16 forward; TFLOP/s (median of CUDA-event timings).", "",
             "| head_dim | seq | batch | heads | causal | ours | SDPA FA2 | SDPA cuDNN | FA4 | ours/FA2 | ours/best | kernel |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        t = r["tf"]
        lines.append(f"| {r['D']} | {r['Skv']} | {r['B']} | {r['H']} | {'yes' if r['causal'] else 'no'} | {fmt(t['ours'])} | "
                     f"{fmt(t['fa2'])} | {fmt(t['cudnn'])} | {fmt(t['fa4'])} | {fmt(r['vs_fa2'], '{:.2f}')} | "
                     f"{fmt(r['ratio'], '{:.2f}')} | `{r['kernel']}` |")
    lines += ["", "Decode (1 query token, 32 query heads / 8 KV heads, d 128, batch 1): time in µs (lower is better).", "",
              "| KV len | ours | SDPA FA2 | SDPA cuDNN | FA4 | best/ours |", "|---|---|---|---|---|---|"]
    for r in drows:
        ms = r["ms"]
        best_ms = min([m for k, m in ms.items() if k != "ours" and m], default=None)
        lines.append(f"| {r['Skv']} | {ms['ours']*1e3:.1f} | {fmt(ms['fa2'] and ms['fa2']*1e3, '{:.1f}')} | "
                     f"{fmt(ms['cudnn'] and ms['cudnn']*1e3, '{:.1f}')} | {fmt(ms['fa4'] and ms['fa4']*1e3, '{:.1f}')} | "
                     f"{fmt(best_ms and best_ms / ms['ours'], '{:.2f}')} |")
    text = "\n".join(lines)
    print(text)
    if a.out:
        with open(a.out, "w") as f:
            f.write(text + "\n")


if __name__ == "__main__":
    main()
