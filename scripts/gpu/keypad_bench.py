"""Key-padding masks (a bool [B,1,1,S] over keys alone: what the rewriter maps an exported attention_mask to)
against no mask and against key lengths (the plain launch alone), our kernel alone, in alternated rounds: the plain
kernel gated on the mask's scan (the default where the problem is large enough),
the masked kernel (fast path off: fa_lib.set_key_padding(0)), and PyTorch SDPA given the same mask (its choice
of backend) as the anchor. Masks: all keys kept, right padding (batch entry b keeps all but b * 5% of its keys),
holes (every 7th key dropped: the scan says no, the masked kernel runs).
python3 keypad_bench.py LIB [--out FILE] [--rounds N]"""
import argparse
import statistics

import torch
import torch.nn.functional as F

import fa_lib
from bench import gpu_time

ap = argparse.ArgumentParser()
ap.add_argument("lib")
ap.add_argument("--out", default=None)
ap.add_argument("--rounds", type=int, default=5)
ap.add_argument("--family", default=None, help="prefer this kernel family (sm80: the portable kernel)")
a = ap.parse_args()
lib = fa_lib.load(a.lib)
if a.family:
    lib.flashattn_ort_gpu_set_kernel(a.family.encode())
D = 128
rows = []
# (batch, heads, kv heads, seq, causal): the e2e model's attention (GQA 16/4, batch 1) and batch 4 MHA
shapes = [(1, 16, 4, s, True) for s in (1024, 2048, 4096, 8192, 16384)] + [(4, 16, 16, s, c) for s in (1024, 4096) for c in (False, True)]
for B, H, Hkv, S, causal in shapes:
    q = torch.randn(B, H, S, D, device="cuda", dtype=torch.float16)
    k = torch.randn(B, Hkv, S, D, device="cuda", dtype=torch.float16)
    v = torch.randn(B, Hkv, S, D, device="cuda", dtype=torch.float16)
    out = torch.full((B, H, S, D), float("nan"), device="cuda", dtype=torch.float16)
    cols = torch.arange(S, device="cuda")
    masks = {
        "all kept": torch.ones(B, 1, 1, S, device="cuda", dtype=torch.bool),
        "right padding": (cols.view(1, S) < torch.tensor([S - b * S // 20 for b in range(B)], device="cuda").view(B, 1)).view(B, 1, 1, S),
        "holes": (cols % 7 != 3).view(1, 1, 1, S).expand(B, 1, 1, S).contiguous(),
    }
    flops = 4 * B * H * S * S * D / (2 if causal else 1)
    fns, names = {}, {}
    P0 = fa_lib.make_params(lib, q, k, v, out, layout="BNSH", causal=causal)
    fns["ours, no mask"] = lambda P=P0: fa_lib.launch(lib, P)
    # the plain launch alone, as the fast path makes it (key lengths, here all S): the rest is the scan's and gates' cost
    lens = torch.full((B,), S, device="cuda", dtype=torch.int32)
    P1 = fa_lib.make_params(lib, q, k, v, out, seqlens=lens, layout="BNSH", causal=causal)
    fns["ours, key lengths"] = lambda P=P1: fa_lib.launch(lib, P)
    for mname, m in masks.items():
        P = fa_lib.make_params(lib, q, k, v, out, mask=m, layout="BNSH", causal=causal)
        ws = fa_lib.workspace(lib, P)
        names[mname] = fa_lib.kernel_name(lib, P)
        fns[f"ours, {mname}"] = lambda P=P, ws=ws: fa_lib.launch(lib, P, ws=ws)

        def masked_only(P=P, ws=ws):
            fa_lib.set_key_padding(lib, 0)
            fa_lib.launch(lib, P, ws=ws)
            fa_lib.set_key_padding(lib, -1)
        fns[f"masked kernel, {mname}"] = masked_only
        kr, vr = (k.repeat_interleave(H // Hkv, 1), v.repeat_interleave(H // Hkv, 1))
        # SDPA: a bool mask cannot be combined with is_causal, so causal rows get the combined mask
        sm = m & torch.ones(S, S, device="cuda", dtype=torch.bool).tril() if causal else m
        fns[f"sdpa, {mname}"] = lambda sm=sm, kr=kr, vr=vr: F.scaled_dot_product_attention(q, kr, vr, attn_mask=sm)
        # correctness of the fast path against SDPA (float32 reference on the same mask), rows that see a key
        out.fill_(float("nan"))
        fa_lib.launch(lib, P, ws=ws)
        ref = F.scaled_dot_product_attention(q.float(), kr.float(), vr.float(), attn_mask=sm)
        err = (out.float() - ref).abs().max().item()
        assert not torch.isnan(out).any() and err < 2e-2, f"{mname}: NaN or max err {err}"
    times = {n: [] for n in fns}
    for _ in range(a.rounds):
        for n, f in fns.items():
            times[n].append(gpu_time(f))
    med = {n: statistics.median(t) for n, t in times.items()}
    base, with_lens = med["ours, no mask"], med["ours, key lengths"]
    for mname in masks:
        fast, slow, sd = med[f"ours, {mname}"], med[f"masked kernel, {mname}"], med[f"sdpa, {mname}"]
        row = (B, H, Hkv, S, "yes" if causal else "no", mname, f"{base:.3f}", f"{with_lens:.3f}", f"{fast:.3f}", f"{slow:.3f}", f"{sd:.3f}",
               f"{slow / fast:.2f}", f"{fast / base:.2f}", f"{sd / fast:.2f}", f"{flops / fast / 1e9:.0f}", names[mname])
        rows.append(row)
        print(" | ".join(str(x) for x in row), flush=True)
head = ("| batch | heads | kv heads | seq | causal | mask | no mask ms | key lengths ms | ours ms | masked kernel ms | SDPA ms "
        "| masked / ours | ours / no mask | SDPA / ours | ours TFLOP/s | plan |")
text = head + "\n|" + "---|" * 16 + "\n" + "\n".join("| " + " | ".join(str(x) for x in r) + " |" for r in rows) + "\n"
print(text)
if a.out:
    open(a.out, "w").write(text)
