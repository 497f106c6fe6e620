"""Launch one forward problem a few times (for ncu / compute-sanitizer): python3 profile_one.py LIB [D] [SEQ] [causal]"""
import sys

import torch

import fa_lib

lib = fa_lib.load(sys.argv[1])
D = int(sys.argv[2]) if len(sys.argv) > 2 else 128
S = int(sys.argv[3]) if len(sys.argv) > 3 else 4096
causal = len(sys.argv) > 4 and sys.argv[4] == "1"
B, H = 16384 // S, 2048 // D
q, k, v = (torch.randn(B, S, H, D, device="cuda", dtype=torch.bfloat16) for _ in range(3))
out = torch.empty_like(q)
P = fa_lib.make_params(lib, q, k, v, out, causal=causal)
for _ in range(3):
    fa_lib.launch(lib, P)
torch.cuda.synchronize()
print("kernel", fa_lib.kernel_name(lib, P))
