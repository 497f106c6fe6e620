"""Our kernel alone at the e2e benchmark's shapes (GQA 16/4, d128, fp16, BNSH, causal), with and without the
key-padding bool mask [B,1,1,S] the rewriter maps an attention_mask to: no NaN, and the time each costs.
python3 probe16k.py LIB"""
import sys

import torch

import fa_lib
from bench import timeit

lib = fa_lib.load(sys.argv[1])
B, H, Hkv, D = 1, 16, 4, 128
for S in (8192, 16384):
    q = torch.randn(B, H, S, D, device="cuda", dtype=torch.float16)
    k = torch.randn(B, Hkv, S, D, device="cuda", dtype=torch.float16)
    v = torch.randn(B, Hkv, S, D, device="cuda", dtype=torch.float16)
    out = torch.full((B, H, S, D), float("nan"), device="cuda", dtype=torch.float16)
    mask = torch.ones(B, 1, 1, S, device="cuda", dtype=torch.bool)
    flops = 4 * B * H * S * S * D / 2
    for name, m in (("no mask", None), ("key-padding mask", mask)):
        P = fa_lib.make_params(lib, q, k, v, out, mask=m, layout="BNSH", causal=True)
        fa_lib.launch(lib, P)
        torch.cuda.synchronize()
        nan = int(torch.isnan(out).sum())
        t = timeit(lambda: fa_lib.launch(lib, P))
        print(f"S {S} {name}: {t:.3f} ms, {flops / t / 1e9:.0f} TFLOP/s, NaN outputs {nan}, {fa_lib.kernel_name(lib, P)}",
              flush=True)
