"""Our op's kernel alone at the e2e benchmark's 16k shape (GQA 16/4, d128, fp16, BNSH, causal, key-padding
bool mask): python3 probe16k.py LIB"""
import sys

import torch

import fa_lib

lib = fa_lib.load(sys.argv[1])
B, H, Hkv, S, D = 1, 16, 4, 16384, 128
q = torch.randn(B, H, S, D, device="cuda", dtype=torch.float16)
k = torch.randn(B, Hkv, S, D, device="cuda", dtype=torch.float16)
v = torch.randn(B, Hkv, S, D, device="cuda", dtype=torch.float16)
out = torch.full((B, H, S, D), float("nan"), device="cuda", dtype=torch.float16)
mask = torch.ones(B, 1, 1, S, device="cuda", dtype=torch.bool)
for m in (None, mask):
    P = fa_lib.make_params(lib, q, k, v, out, mask=m, layout="BNSH", causal=True)
    fa_lib.launch(lib, P)
    torch.cuda.synchronize()
    print(fa_lib.kernel_name(lib, P), "NaN outputs:", int(torch.isnan(out).sum()), flush=True)
