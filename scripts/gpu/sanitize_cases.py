"""Our kernels alone (prefill, split-KV decode and its combine step; no cuBLAS references, which
compute-sanitizer's racecheck cannot follow on Hopper) over a small random case matrix, for compute-sanitizer
memcheck/racecheck/synccheck: python3 sanitize_cases.py LIB N. Cases cycle through: prefill preferring the
Hopper kernel, prefill on the portable kernel, decode-shaped (split count auto/forced/off).
FA_SANITIZE_SM90=NAME: the Hopper cases prefer that kernel (a variant) where it serves, instead of the family."""
import os
import random
import sys

import torch

import fa_lib
from numerics import key_padding_mask, make_tensor, rand_case, rand_decode_case, splits_code

lib = fa_lib.load(sys.argv[1])
n = int(sys.argv[2]) if len(sys.argv) > 2 else 8
SM90 = os.environ.get("FA_SANITIZE_SM90", "sm90").encode()
seed = random.SystemRandom().randrange(1 << 30)
rng = random.Random(seed)
gen = torch.Generator(device="cuda")
gen.manual_seed(seed)
bad = 0
served = {}
for i in range(n):
    lib.flashattn_ort_gpu_set_kernel(b"sm80" if i % 3 == 1 and i not in (4, 7, 13) else SM90)
    c = rand_decode_case(rng, True) if i % 3 == 2 else rand_case(rng, True)
    if i == 4:  # a key-padding mask keeping a prefix: the scan, the plain kernel gated on it with split keys and
        # its gated combine, the masked kernel gated off
        c.update(d=128, dv=128, sq=17, skv=9000, b=2, hq=32, hkv=8, causal=True, window_left=-1, window_right=-1,
                 seqlens=False, strided=False, mask="bool", mask_shape="col", keypad="prefix", softcap=0.0)
    if i == 10:  # and a kept prefix on the portable kernel (the gate in its one-block-per-tile grid)
        c.update(d=64, dv=64, sq=500, skv=700, b=3, hq=8, hkv=2, causal=True, window_left=-1, window_right=-1,
                 seqlens=False, strided=False, mask="bool", mask_shape="col", keypad="prefix", softcap=0.0)
    if i == 7:  # and one with left padding: the plain kernel gated off, the masked one runs
        c.update(d=64, dv=64, sq=300, skv=1000, b=2, hq=8, hkv=2, seqlens=False, mask="additive", mask_shape="col",
                 keypad="left", softcap=0.0)
    if i == 0:  # always one Hopper case on 64-byte panels (d96), with a V tail to zero
        c.update(d=96, dv=96, seqlens=True, strided=False)
    if i == 3:  # and one on three consumer warpgroups (plain, >= 2048 keys), with a V tail to zero
        c.update(d=64, dv=64, sq=300, skv=2100, seqlens=True, mask=None, softcap=0.0, b=1, strided=False)
    if i == 6:  # and one with more tiles than SMs (192), so persistent blocks walk several
        c.update(d=64, dv=64, sq=700, skv=700, b=1, hq=32, hkv=8, causal=True, strided=False)
    if i == 9:  # and one in clusters sharing K/V tiles (the default at d128 over >= 8192 keys), 15 query tiles
        # per head (the last cluster's second block has no rows), more tiles than SMs, ragged key lengths
        c.update(d=128, dv=128, sq=1900, skv=8200, b=1, hq=16, hkv=4, causal=False, window_left=-1, window_right=-1,
                 seqlens=True, strided=False, mask=None, softcap=0.0, prefill_cluster=-1)
    if i == 12:  # and the d192 cluster shape (112-key tiles)
        c.update(d=192, dv=192, sq=1024, skv=8300, b=1, hq=8, hkv=8, causal=False, window_left=-1, window_right=-1,
                 seqlens=True, strided=False, mask=None, softcap=0.0, prefill_cluster=-1)
    if i == 15:  # and split keys in the unpacked kernel (3 query heads per KV head: no packing), causal, ragged key
        # lengths (memcheck; random cases split the packed kernel)
        c.update(d=128, dv=128, sq=40, skv=3000, b=2, hq=6, hkv=2, causal=True, window_left=-1, window_right=-1,
                 seqlens=True, strided=False, mask=None, softcap=0.0, prefill_splits=4)
    if i == 11:  # and O written over the V stages (d256), more tiles than SMs: a block's next tile loads V only once
        # the previous tile's O stores have read them; random key lengths (V tails to zero)
        c.update(d=256, dv=256, sq=1100, skv=600, b=2, hq=16, hkv=4, causal=False, window_left=-1, window_right=-1,
                 seqlens=True, strided=False, mask=None, softcap=0.0, layout="BSNH")
    if i == 13:  # and the d192 shape of it, causal, value head_dim below the query's
        c.update(d=192, dv=128, sq=1300, skv=1300, b=2, hq=16, hkv=16, causal=True, window_left=-1, window_right=-1,
                 seqlens=False, strided=False, mask=None, softcap=0.0, layout="BSNH")
    B, Hq, Hkv, Sq, Skv, D, Dv, dt = c["b"], c["hq"], c["hkv"], c["sq"], c["skv"], c["d"], c["dv"], c["dtype"]
    bsnh = c["layout"] == "BSNH"
    shp = lambda s, h, d: (B, s, h, d) if bsnh else (B, h, s, d)  # noqa: E731
    q, k, v = make_tensor(shp(Sq, Hq, D), dt, c["strided"], gen), make_tensor(shp(Skv, Hkv, D), dt, c["strided"], gen), make_tensor(shp(Skv, Hkv, Dv), dt, c["strided"], gen)
    mask = None
    if c.get("keypad") in ("prefix", "left"):
        mask = key_padding_mask(c, [B, 1, 1, Skv], gen)
    elif c["mask"] == "bool":
        mask = torch.rand(B, 1, Sq, Skv, device="cuda", generator=gen) < 0.8
    elif c["mask"] == "additive":
        mask = torch.randn(1, Hq, Sq, Skv, device="cuda", generator=gen).to(dt)
    seqlens = torch.randint(0, Skv + 1, (B,), device="cuda", dtype=torch.int32, generator=gen) if c["seqlens"] else None
    out = torch.full(shp(Sq, Hq, Dv), float("nan"), dtype=dt, device="cuda")
    lse = torch.empty(B, Hq, Sq, device="cuda")
    P = fa_lib.make_params(lib, q, k, v, out, lse, mask=mask, seqlens=seqlens, layout=c["layout"], causal=c["causal"],
                           scale=c["scale"], softcap=c["softcap"], window_left=c["window_left"], window_right=c["window_right"])
    fa_lib.set_decode_splits(lib, splits_code(c))
    fa_lib.set_decode_cluster(lib, c.get("cluster", -1))
    fa_lib.set_decode_row_groups(lib, c.get("row_groups", -1))
    lib.flashattn_ort_gpu_set_prefill_cluster(c.get("prefill_cluster", -1))
    fa_lib.set_prefill_splits(lib, c.get("prefill_splits", -1))
    fa_lib.set_key_padding(lib, 1 if c.get("keypad") else -1)  # the gated launches even where they would not pay
    kernel = fa_lib.kernel_name(lib, P)
    served[kernel] = served.get(kernel, 0) + 1
    fa_lib.launch(lib, P)
    torch.cuda.synchronize()
    fa_lib.set_decode_splits(lib, -1)
    fa_lib.set_decode_cluster(lib, -1)
    fa_lib.set_decode_row_groups(lib, -1)
    lib.flashattn_ort_gpu_set_prefill_cluster(-1)
    fa_lib.set_prefill_splits(lib, -1)
    fa_lib.set_key_padding(lib, -1)
    if torch.isnan(out).any():
        bad += 1
        print("NaN/unwritten output in case", c)
print(f"sanitize cases: seed {seed}, {n - bad}/{n} clean outputs; kernels: {served}")
sys.exit(1 if bad else 0)
