"""Launch one problem a few times (for ncu / compute-sanitizer):
    python3 profile_one.py LIB [D] [SEQ] [causal] [fa4|cudnn]  # prefill, batch*seq = 16k, width 2048 (fa4: FA4
                                                                # instead, cudnn: SDPA's cuDNN backend)
    python3 profile_one.py LIB decode BATCH KV_HEADS KV_LEN [cudnn]  # one decode step, 32 query heads, d 128
                                                                      # (cudnn: SDPA's cuDNN backend instead)
FA_GRID=0|1 in the environment: the Hopper kernel's blocks one per tile / persistent (default: the library's choice);
FA_L2PROMO=0|64|128|256: the tensor maps' L2 promotion; FLASHATTN_KERNEL=NAME forces a kernel."""
import os
import sys

import torch

import fa_lib

lib = fa_lib.load(sys.argv[1])
if os.environ.get("FA_GRID"):
    lib.flashattn_ort_gpu_set_persistent(int(os.environ["FA_GRID"]))
if os.environ.get("FA_L2PROMO"):
    fa_lib.set_l2_promotion(lib, int(os.environ["FA_L2PROMO"]))
if len(sys.argv) > 2 and sys.argv[2] == "decode":
    B, Hkv, S = (int(x) for x in sys.argv[3:6])
    q = torch.randn(B, 1, 32, 128, device="cuda", dtype=torch.bfloat16)
    k, v = (torch.randn(B, S, Hkv, 128, device="cuda", dtype=torch.bfloat16) for _ in range(2))
else:
    D = int(sys.argv[2]) if len(sys.argv) > 2 else 128
    S = int(sys.argv[3]) if len(sys.argv) > 3 else 4096
    B, H = 16384 // S, 2048 // D
    q, k, v = (torch.randn(B, S, H, D, device="cuda", dtype=torch.bfloat16) for _ in range(3))
causal = len(sys.argv) > 4 and sys.argv[2] != "decode" and sys.argv[4] == "1"
if sys.argv[-1] == "cudnn":  # the same problem through SDPA's cuDNN backend (GQA by enable_gqa)
    from torch.nn.attention import SDPBackend, sdpa_kernel

    qt, kt, vt = (t.transpose(1, 2) for t in (q, k, v))
    for _ in range(3):
        with sdpa_kernel(SDPBackend.CUDNN_ATTENTION):
            torch.nn.functional.scaled_dot_product_attention(qt, kt, vt, is_causal=causal,
                                                             enable_gqa=kt.shape[1] != qt.shape[1])
    torch.cuda.synchronize()
    print("kernel SDPA cuDNN")
    sys.exit(0)
if sys.argv[-1] == "fa4":  # the same problem through FlashAttention-4, to profile side by side
    from flash_attn.cute import flash_attn_func

    for _ in range(3):
        flash_attn_func(q, k, v, causal=causal)
    torch.cuda.synchronize()
    print("kernel FlashAttention-4")
    sys.exit(0)
out = torch.empty_like(q)
P = fa_lib.make_params(lib, q, k, v, out, causal=causal)
for _ in range(3):
    fa_lib.launch(lib, P)
torch.cuda.synchronize()
print("kernel", fa_lib.kernel_name(lib, P))
