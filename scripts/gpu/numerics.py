"""GPU numerics of the CUDA kernel (through libflashattn_ort's C entry point) over a randomized shape/feature
matrix, against a float64 reference. Tolerance, FA3 style: max|ours - ref64| <= 2 * max|naive - ref64| + floor,
where `naive` is the same math in the input precision. Outputs are poisoned with NaN first (every element
must be written); any NaN fails; rows with no visible key must be exactly 0 with lse = -inf.

With key_seqlens, the key/value rows past each batch entry's length are filled with NaN (what an unused KV-cache
tail may hold): they must not reach the output.

Every prefill case also picks how the Hopper kernel's blocks take their tiles (`grid`: auto = by problem, 0 = one
block per tile, 1 = persistent blocks walking a fixed share); fixed cases with more tiles than SMs pin each, so
a persistent block walks several tiles, some without keys. And whether it runs in clusters of two blocks
sharing K/V tiles where a cluster form fits (`prefill_cluster`: auto, 0 never, 1 always; bounds-free problems).

GQA packing (the Hopper kernel computing a KV head's group of query heads in one tile): fixed cases where the
library packs by itself (`packed`: the kernel name must say so) and where a packed kernel is forced by name
(`force`), over group sizes 2..128, causal, windows, ragged key lengths, both layouts, strided views.

Decode-shaped cases (seq_q * group <= 64) also pin the split-KV decode kernel's split count (auto, off, forced
n) and check from the kernel name that the decode kernel served them.

usage: python3 numerics.py LIB [--cases N] [--decode-cases N] [--seed S] [--small] [--family sm80|sm90|sm100]
  --small: the sanitizer matrix; --family: prefer that prefill kernel family wherever it can serve (the summary
  counts the cases each kernel family served)"""
import argparse
import random
import sys

import torch

import fa_lib

FLOOR = {torch.float16: 2e-3, torch.bfloat16: 1e-2}
FAMILY = None  # the kernel family main() prefers (restored after a case that forces a kernel)


def rand_case(rng, small):
    dtype = rng.choice([torch.float16, torch.bfloat16])
    layout = rng.choice(["BSNH", "BNSH"])
    d = rng.choice([8, 16, 17, 32, 40, 64, 80, 96, 128, 128, 160, 192, 256] if not small else [16, 17, 64, 96, 128, 192, 256])
    dv = d if rng.random() < 0.75 else rng.choice([8, 24, 64, 128, 256])
    seqs = [1, 2, 17, 64, 128, 129, 255, 500, 1000] if small else [1, 2, 17, 64, 128, 129, 255, 500, 1000, 1537, 2048]
    sq, skv = rng.choice(seqs), rng.choice(seqs)
    if rng.random() < 0.3:
        skv = sq
    hkv = rng.choice([1, 2, 3, 4])
    hq = hkv * rng.choice([1, 2, 4])
    b = rng.choice([1, 2, 3])
    c = dict(dtype=dtype, layout=layout, b=b, hq=hq, hkv=hkv, sq=sq, skv=skv, d=d, dv=dv)
    c["causal"] = rng.random() < 0.35
    c["window_left"] = rng.choice([-1, -1, 0, 3, 64, 300]) if rng.random() < 0.3 else -1
    c["window_right"] = rng.choice([-1, 0, 5, 100]) if rng.random() < 0.2 else -1
    c["softcap"] = rng.choice([0.0, 0.0, 5.0, 30.0]) if rng.random() < 0.3 else 0.0
    c["scale"] = rng.choice([None, None, 0.05, 0.3])
    c["mask"] = rng.choice([None, None, "bool", "additive"])
    c["mask_shape"] = rng.choice(["full", "bcast_b", "row", "col", "col", "2d"])
    # masks over keys alone (key padding): random holes, a kept prefix of random length, or left padding
    c["keypad"] = rng.choice([None, "prefix", "prefix", "left"]) if c["mask_shape"] == "col" else None
    c["seqlens"] = rng.random() < 0.25
    c["strided"] = rng.random() < 0.2  # q/k/v as views into wider buffers
    c["lse"] = rng.random() < 0.8
    c["grid"] = rng.choice(GRID_MODES)
    c["prefill_cluster"] = rng.choice(PREFILL_CLUSTER)
    c["prefill_splits"] = rng.choice(PREFILL_SPLITS)
    return c


# How the Hopper kernel's blocks take tiles (flashattn_ort_gpu_set_persistent): -1 by problem, 0 one block per
# tile, 1 a fixed share per persistent block.
GRID_MODES = [-1, -1, 0, 1]
# Split-KV of the Hopper prefill kernel (fa_lib.set_prefill_splits): -1 automatic, 0 never, n forced (the GQA-packed
# kernel then serves every plain problem with a power-of-two group, MHA included; other groups the `_split` one).
PREFILL_SPLITS = [-1, -1, 0, 3]
# Whether it runs in clusters of two blocks sharing K/V tiles (flashattn_ort_gpu_set_prefill_cluster).
PREFILL_CLUSTER = [-1, 0, 1, 1]


# Split-KV decode kernel settings a case may ask for: "auto" (the library's choice), "off" (prefill kernel),
# or a forced split count (1 = the unsplit path that writes the outputs directly, no workspace).
DECODE_SPLITS = ["auto", "auto", "off", 1, 2, 3, 16, 128]
# How the splits merge on Hopper (fa_lib.set_decode_cluster): -1 the library's choice, 0 workspace and combine
# kernel, 1 in a thread-block cluster whenever the split count fits one.
DECODE_CLUSTER = [-1, -1, 0, 1]
# Row groups of an MQA step's packed rows (fa_lib.set_decode_row_groups): -1 automatic, 0 one group, 2 or 4 groups.
DECODE_ROW_GROUPS = [-1, -1, 0, 2, 4]


def rand_decode_case(rng, small=False):
    """Few query rows per KV head (seq_q * group <= 64): the split-KV decode kernel's shapes."""
    dtype = rng.choice([torch.float16, torch.bfloat16])
    group = rng.choice([1, 4, 4, 8, 32])
    sq = rng.choice([q for q in (1, 1, 1, 2, 3, 4, 7, 8, 16) if q * group <= 64])
    hkv = rng.choice([1, 2, 8]) if group < 32 else rng.choice([1, 2])
    d = rng.choice([128, 128, 64, 256, 80, 17, 40, 96])
    dv = d if rng.random() < 0.75 else rng.choice([64, 128, 24, 256])
    long = [1, 63, 64, 65, 700, 2048, 4097] if small else [1, 63, 64, 65, 700, 2048, 4097, 8192, 32768]
    skv = rng.choice(long)
    b = rng.choice([1, 2, 3])
    if b * hkv * group * skv * max(d, dv) > 2**26:  # keep the float64 reference's K/V near 0.5 GB each
        b, hkv = 1, 1
        if group * skv * max(d, dv) > 2**26:
            skv = 8192
    c = dict(dtype=dtype, layout=rng.choice(["BSNH", "BNSH"]), b=b, hq=hkv * group, hkv=hkv, sq=sq, skv=skv, d=d, dv=dv)
    c["causal"] = rng.random() < 0.5
    c["window_left"] = rng.choice([0, 3, 100, 1000]) if rng.random() < 0.2 else -1
    c["window_right"] = rng.choice([0, 2]) if rng.random() < 0.1 else -1
    c["softcap"] = rng.choice([5.0, 30.0]) if rng.random() < 0.2 else 0.0
    c["scale"] = rng.choice([None, None, 0.05, 0.3])
    c["mask"] = rng.choice([None, None, None, "bool", "additive"])
    c["mask_shape"] = rng.choice(["full", "bcast_b", "row", "col", "2d"])
    c["seqlens"] = rng.random() < 0.4
    c["strided"] = rng.random() < 0.2
    c["lse"] = rng.random() < 0.8
    c["splits"] = rng.choice(DECODE_SPLITS)
    c["cluster"] = rng.choice(DECODE_CLUSTER)
    c["row_groups"] = rng.choice(DECODE_ROW_GROUPS)
    return c


def decode_expected(c):
    """Whether the split-KV decode kernel should serve case c (H100: every compiled shape fits)."""
    return c.get("splits", "auto") != "off" and c["sq"] * (c["hq"] // c["hkv"]) <= 64


def splits_code(c):
    s = c.get("splits", "auto")
    return -1 if s == "auto" else (0 if s == "off" else int(s))


def make_tensor(shape, dtype, strided, gen):
    if strided:
        wide = list(shape)
        wide[-1] += 8  # padded rows: non-contiguous view, head_dim still contiguous
        t = torch.randn(wide, dtype=torch.float32, device="cuda", generator=gen).to(dtype)
        return t[..., : shape[-1]]
    return torch.randn(shape, dtype=torch.float32, device="cuda", generator=gen).to(dtype)


def run_case(lib, c, gen):
    B, Hq, Hkv, Sq, Skv, D, Dv = c["b"], c["hq"], c["hkv"], c["sq"], c["skv"], c["d"], c["dv"]
    dt = c["dtype"]
    if c["layout"] == "BSNH":
        qs, ks, vs, os_ = (B, Sq, Hq, D), (B, Skv, Hkv, D), (B, Skv, Hkv, Dv), (B, Sq, Hq, Dv)
    else:
        qs, ks, vs, os_ = (B, Hq, Sq, D), (B, Hkv, Skv, D), (B, Hkv, Skv, Dv), (B, Hq, Sq, Dv)
    q = make_tensor(qs, dt, c["strided"], gen)
    k = make_tensor(ks, dt, c["strided"], gen)
    v = make_tensor(vs, dt, c["strided"], gen)
    mask = None
    if c["mask"]:
        full = [B, Hq, Sq, Skv]
        shape = {"full": full, "bcast_b": [1, Hq, Sq, Skv], "row": [B, 1, Sq, 1], "col": [B, 1, 1, Skv],
                 "col1": [1, 1, 1, Skv], "2d": [Sq, Skv]}[c["mask_shape"]]
        if c.get("keypad") in ("prefix", "left"):
            mask = key_padding_mask(c, shape, gen)
        elif c["mask"] == "bool":
            mask = torch.rand(shape, device="cuda", generator=gen) < 0.8
        else:
            mask = (torch.randn(shape, device="cuda", generator=gen) * 2).to(dt)
            # some -inf entries: fully masked rows must stay NaN-free
            mask = mask.masked_fill(torch.rand(shape, device="cuda", generator=gen) < 0.1, float("-inf"))
    seqlens = None
    k_in, v_in = k, v
    if c["seqlens"]:
        seqlens = torch.randint(0, Skv + 1, (B,), device="cuda", dtype=torch.int32, generator=gen)
        if c.get("zero_len"):
            seqlens[0] = 0
        k_in, v_in = poison_tail(k, seqlens, c["layout"]), poison_tail(v, seqlens, c["layout"])
    out = torch.full(os_, float("nan"), dtype=dt, device="cuda")
    lse = torch.full((B, Hq, Sq), float("nan"), dtype=torch.float32, device="cuda") if c["lse"] else None
    kw = dict(mask=mask, seqlens=seqlens, layout=c["layout"], causal=c["causal"], scale=c["scale"],
              softcap=c["softcap"], window_left=c["window_left"], window_right=c["window_right"])
    P = fa_lib.make_params(lib, q, k_in, v_in, out, lse, **kw)
    fa_lib.set_decode_splits(lib, splits_code(c))
    fa_lib.set_decode_cluster(lib, c.get("cluster", -1))
    fa_lib.set_decode_row_groups(lib, c.get("row_groups", -1))
    lib.flashattn_ort_gpu_set_persistent(c.get("grid", -1))
    lib.flashattn_ort_gpu_set_prefill_cluster(c.get("prefill_cluster", -1))
    fa_lib.set_prefill_splits(lib, c.get("prefill_splits", -1))
    fa_lib.set_key_padding(lib, c.get("keypad_mode", -1))
    if c.get("force"):
        lib.flashattn_ort_gpu_set_kernel(c["force"].encode())
    try:
        kname = fa_lib.kernel_name(lib, P)
        ws = fa_lib.workspace(lib, P)
        fa_lib.launch(lib, P, ws=ws)
        torch.cuda.synchronize()
    finally:
        fa_lib.set_decode_splits(lib, -1)
        fa_lib.set_decode_cluster(lib, -1)
        fa_lib.set_decode_row_groups(lib, -1)
        lib.flashattn_ort_gpu_set_persistent(-1)
        lib.flashattn_ort_gpu_set_prefill_cluster(-1)
        fa_lib.set_prefill_splits(lib, -1)
        fa_lib.set_key_padding(lib, -1)
        if c.get("force"):
            lib.flashattn_ort_gpu_set_kernel(FAMILY.encode() if FAMILY else None)
    ref, ref_lse = fa_lib.reference(q, k, v, **kw)
    naive, _ = fa_lib.reference(q, k, v, dtype=dt, **kw)
    problems = []
    if "packed" in c and FAMILY != "sm80" and ("_packgqa" in kname) != c["packed"]:
        problems.append(f"ran {kname}, GQA packing expected: {c['packed']}")
    if "split" in c and FAMILY != "sm80" and (" splits" in kname and kname.startswith("flash_fwd_sm90")) != c["split"]:
        problems.append(f"ran {kname}, prefill split-KV expected: {c['split']}")
    if "keypad_planned" in c and ("key padding:" in kname) != c["keypad_planned"]:
        problems.append(f"ran {kname}, key-padding fast path expected: {c['keypad_planned']}")
    if "key padding:" in kname:
        problems += key_padding_scan_problems(mask, B, ws)
    if kname.startswith("flash_decode") != decode_expected(c):
        problems.append(f"ran {kname}, decode kernel expected: {decode_expected(c)}")
    if torch.isnan(out).any():
        problems.append(f"{int(torch.isnan(out).sum())} NaN/unwritten outputs")
    err = (out.double() - ref).abs().max().item()
    naive_err = (naive.double() - ref).abs().max().item()
    tol = 2 * naive_err + FLOOR[dt]
    if not err <= tol:
        problems.append(f"max err {err:.3e} > tol {tol:.3e} (naive {naive_err:.3e})")
    if lse is not None:
        fin = torch.isfinite(ref_lse)
        if torch.isnan(lse).any():
            problems.append("NaN/unwritten lse")
        elif not torch.equal(torch.isfinite(lse), fin) or (lse[~fin] != float("-inf")).any():
            problems.append("lse -inf pattern differs")
        elif fin.any():
            lerr = (lse.double()[fin] - ref_lse[fin]).abs().max().item()
            if lerr > 1e-3 + 1e-4 * ref_lse[fin].abs().max().item():
                problems.append(f"lse err {lerr:.3e}")
    return err, tol, problems, kname


def key_padding_mask(c, shape, gen):
    """A mask over keys alone (shape [B or 1, 1, 1, Skv]): `prefix` keeps each entry's first keys (random lengths,
    the first entry none with zero_len, the last all of them), `left` drops each entry's first keys instead.
    Bool, or additive 0 / -inf."""
    rows, skv = shape[0], shape[-1]
    lens = torch.randint(0, skv + 1, (rows,), device="cuda", generator=gen).cpu()
    lens[-1] = skv
    if c.get("zero_len"):
        lens[0] = 0
    cols = torch.arange(skv).view(1, skv)
    keep = cols < lens.view(rows, 1) if c["keypad"] == "prefix" else cols >= (skv - lens).view(rows, 1)
    keep = keep.view(shape).cuda()
    if c["mask"] == "bool":
        return keep
    return torch.zeros(shape, device="cuda").masked_fill(~keep, float("-inf")).to(c["dtype"])


def key_padding_scan_problems(mask, B, ws):
    """The key-padding scan's lengths and prefix verdicts at the head of the workspace, against the mask."""
    if ws is None:
        return ["key-padding fast path planned but no workspace asked for"]
    got = ws[: 8 * B].view(torch.int32).cpu()
    m = mask.expand(B, *mask.shape[1:]).reshape(B, -1)
    keep = m if m.dtype == torch.bool else m == 0
    drop = ~m if m.dtype == torch.bool else m == float("-inf")
    problems = []
    for b in range(B):
        nd = torch.nonzero(~drop[b]).flatten()
        length = int(nd[-1]) + 1 if len(nd) else 0
        prefix = bool(keep[b, :length].all())
        if (int(got[b]), bool(got[B + b])) != (length, prefix):
            problems.append(f"scan of entry {b}: length {int(got[b])} prefix {int(got[B + b])}, expected {length} {prefix}")
    return problems


def poison_tail(t, seqlens, layout):
    """A copy of k or v with NaN in every row at or past its batch entry's key length."""
    t = t.clone()
    for b, n in enumerate(seqlens.tolist()):
        if layout == "BSNH":
            t[b, n:] = float("nan")
        else:
            t[b, :, n:] = float("nan")
    return t


def fixed_cases():
    base = dict(dtype=torch.bfloat16, layout="BSNH", b=2, hq=4, hkv=2, sq=129, skv=129, d=64, dv=64, causal=False,
                window_left=-1, window_right=-1, softcap=0.0, scale=None, mask=None, mask_shape="full", seqlens=False,
                strided=False, lse=True)
    cases = []
    cases.append(dict(base, causal=True, sq=200, skv=50))            # rows before the diagonal: no visible key
    cases.append(dict(base, causal=True, sq=1, skv=1000))            # decode
    cases.append(dict(base, window_left=0, window_right=0))          # exactly one key per row
    cases.append(dict(base, mask="bool", mask_shape="row"))          # whole rows masked by the bool mask
    cases.append(dict(base, dtype=torch.float16, d=256, dv=256, sq=300, skv=700, causal=True))
    cases.append(dict(base, d=1, dv=1, sq=5, skv=3))
    cases.append(dict(base, hq=8, hkv=1, sq=1000, skv=1000, d=128, dv=128, seqlens=True))  # MQA
    cases.append(dict(base, layout="BNSH", d=128, dv=64, sq=2048, skv=2048, causal=True, softcap=20.0))
    # shapes the Hopper kernel serves: padded head dims, long causal, windows, ragged lengths, GQA, masks
    cases.append(dict(base, d=96, dv=96, sq=1000, skv=1000, causal=True))
    cases.append(dict(base, d=96, dv=64, sq=700, skv=1300, seqlens=True))  # 64-byte panels, V tail zeroed
    # three consumer warpgroups (plain d64/d96 over >= 2048 keys): causal, ragged lengths (V tail), GQA, odd rows
    cases.append(dict(base, d=64, dv=64, sq=2100, skv=2100, causal=True, hq=8, hkv=2))
    cases.append(dict(base, d=96, dv=96, sq=333, skv=2500, seqlens=True, b=3))
    cases.append(dict(base, dtype=torch.float16, d=80, dv=64, sq=1000, skv=4100, window_left=700, window_right=50))
    cases.append(dict(base, dtype=torch.float16, d=80, dv=96, sq=513, skv=900, mask="bool", mask_shape="col",
                      softcap=10.0, strided=True))
    cases.append(dict(base, dtype=torch.float16, d=192, dv=128, sq=777, skv=1500, seqlens=True))
    cases.append(dict(base, d=128, dv=128, sq=4096, skv=4096, causal=True, hq=8, hkv=2))
    cases.append(dict(base, d=64, dv=64, sq=3000, skv=3000, window_left=200, window_right=0))
    cases.append(dict(base, dtype=torch.float16, d=256, dv=256, sq=1025, skv=2049, mask="additive", mask_shape="col"))
    cases.append(dict(base, d=128, dv=128, sq=300, skv=5000, seqlens=True, causal=True, strided=True))
    # last key blocks that a consumer's rows see only in part: the causal diagonal (d64 128-row tiles, d192 96-key
    # blocks), a last block of 40 keys (d128, non-causal), ragged key lengths (d256, 80-key blocks)
    cases.append(dict(base, sq=512, skv=512, causal=True, hq=8, hkv=8))
    cases.append(dict(base, d=192, dv=192, sq=700, skv=700, causal=True, hq=4, hkv=4))
    cases.append(dict(base, d=128, dv=128, sq=300, skv=128 * 5 + 40))
    cases.append(dict(base, d=256, dv=256, sq=400, skv=900, seqlens=True, b=4))
    # more tiles than SMs, so persistent blocks walk several: causal (tiles of every length), ragged key lengths
    # with an empty batch entry (tiles without keys), under each schedule
    many = dict(base, b=2, hq=32, hkv=8, sq=1100, skv=1100, d=128, dv=128, causal=True)
    for grid in (-1, 0, 1):
        cases.append(dict(many, grid=grid))
        cases.append(dict(many, grid=grid, causal=False, seqlens=True, zero_len=True, d=64, dv=64))
        cases.append(dict(many, grid=grid, causal=False, hq=16, d=64, dv=64, sq=2100, skv=2100))  # 192-row tiles
        # O written over the V stages (d192/d256 single blocks): a block's next tile loads V only once the previous
        # tile's O stores have read them; tiles without keys (the empty entry) have no epilogue
        cases.append(dict(many, grid=grid, causal=False, d=256, dv=256, hq=16, seqlens=True, zero_len=True))
        cases.append(dict(many, grid=grid, dtype=torch.float16, d=192, dv=128, hq=16, hkv=16))
        # clusters of two blocks sharing K/V tiles: an odd count of query tiles per head (the last cluster's
        # second block has no rows), ragged and empty key lengths, a mask tensor, each shape with a cluster form
        pair = dict(many, grid=grid, causal=False, prefill_cluster=1)
        cases.append(dict(pair, sq=1100, seqlens=True, zero_len=True))
        cases.append(dict(pair, d=256, dv=256, sq=900, skv=700, mask="additive", mask_shape="col"))
        cases.append(dict(pair, dtype=torch.float16, d=192, dv=192, hq=16, hkv=16, sq=1300, skv=999, strided=True))
        cases.append(dict(pair, d=96, dv=96, hq=16, sq=2100, skv=2100, seqlens=True))  # 192-row tiles
    # the default cluster shapes (>= 8192 keys; d128: 176-key tiles, d192: 112): 15 query tiles per head, ragged
    # lengths, value head_dim != query's
    long_pair = dict(base, b=2, hq=8, hkv=2, sq=1900, skv=8200, d=128, dv=128, seqlens=True, zero_len=True)
    cases.append(long_pair)
    cases.append(dict(long_pair, dtype=torch.float16, b=1, sq=256, skv=9000, seqlens=False, layout="BNSH"))
    cases.append(dict(long_pair, d=192, dv=160, hq=4))
    cases.append(dict(long_pair, dtype=torch.float16, d=176, dv=192, b=1, sq=640, skv=8192, seqlens=False))
    # GQA packing: a group's query heads in one tile (automatic where it fills tiles: the names must say so)
    gq = dict(base, b=2, hq=32, hkv=8, sq=40, skv=3000, d=128, dv=128, causal=True, packed=True)
    cases.append(gq)
    cases.append(dict(gq, hq=16, hkv=2, d=256, dv=256, sq=24, skv=1000, b=3, window_left=50, window_right=0,
                      seqlens=True, zero_len=True))                               # 8 heads a group, window, ragged
    cases.append(dict(gq, layout="BNSH", d=96, dv=64, sq=33, skv=777, seqlens=True, strided=True, causal=False))
    cases.append(dict(gq, dtype=torch.float16, hq=32, hkv=2, d=192, dv=128, sq=20, skv=2000))  # 16 heads a group
    cases.append(dict(gq, hq=4, hkv=2, d=64, dv=64, sq=50, skv=5000, causal=False, lse=False))
    cases.append(dict(gq, hq=128, hkv=1, d=64, dv=64, sq=3, skv=3000, b=1))        # 128 heads: one position a tile
    cases.append(dict(gq, hq=128, hkv=1, d=128, dv=128, sq=1, skv=700, b=1, causal=False))
    cases.append(dict(gq, sq=20, skv=20, causal=True))                            # first row sees one key
    cases.append(dict(gq, hq=24, hkv=8, packed=False))                            # 3 heads a group: never packed
    cases.append(dict(gq, mask="bool", mask_shape="full", packed=False))          # a mask tensor: unpacked
    # forced where it would not pay: long causal (tiles of every length) under each schedule, Sq != Skv
    for grid in (-1, 0, 1):
        cases.append(dict(gq, sq=1100, skv=1100, grid=grid, force="flash_fwd_sm90_bf16_d128_m128n128w12_plain_packgqa"))
    cases.append(dict(gq, dtype=torch.float16, sq=700, skv=2500, hq=8, hkv=4, causal=False, seqlens=True,
                      force="flash_fwd_sm90_f16_d128_m128n128w12_plain_packgqa"))
    # Split-KV of the prefill kernel (GQA-packed): automatic for few tiles over many keys (17 tokens x 4 heads,
    # just past the decode kernel's 64 rows; a new chat turn of 100 tokens at batch 1; MHA through the packed
    # kernel), forced with causal, windows, ragged and empty key lengths (splits without keys), BNSH, f16, d256
    sp = dict(base, b=2, hq=32, hkv=8, sq=17, skv=20000, d=128, dv=128, causal=True, split=True)
    cases.append(sp)
    cases.append(dict(sp, b=1, sq=100, skv=9000, seqlens=True, zero_len=False, lse=True))
    cases.append(dict(sp, b=1, hq=16, hkv=16, sq=70, skv=12000, causal=False))   # MHA: a group of one
    cases.append(dict(sp, b=3, sq=40, skv=3000, seqlens=True, zero_len=True, prefill_splits=5))
    cases.append(dict(sp, dtype=torch.float16, d=256, dv=256, sq=30, skv=4000, window_left=900, window_right=0,
                      prefill_splits=7, layout="BNSH"))
    cases.append(dict(sp, d=96, dv=64, hq=16, hkv=2, sq=33, skv=5000, strided=True, prefill_splits=4))
    cases.append(dict(sp, sq=300, skv=300, prefill_splits=6))                    # Sq = Skv causal, forced
    cases.append(dict(sp, prefill_splits=0, split=False))                        # off: one pass per tile
    # groups that are not a power of two (3, 5, 6, 7 query heads per KV head): the unpacked `_split` kernel
    cases.append(dict(sp, b=1, hq=24, hkv=8, sq=30, skv=20000))
    cases.append(dict(sp, b=2, hq=28, hkv=4, sq=20, skv=9000, seqlens=True, zero_len=True))
    cases.append(dict(sp, dtype=torch.float16, d=192, dv=192, hq=10, hkv=2, sq=40, skv=4000, window_left=500,
                      layout="BNSH", prefill_splits=3))
    cases.append(dict(sp, d=96, dv=64, hq=12, hkv=2, sq=50, skv=3000, strided=True, seqlens=True, prefill_splits=4))
    # Key-padding masks (over keys alone) through the plain kernel gated on the mask's scan: kept prefixes (all
    # keys, right padding, an entry with none), causal, additive 0/-inf, one row for every entry, the 192-row and
    # cluster shapes, GQA-packed and split plain launches (the combine gated too); and the masked kernel where
    # the scan finds holes or left padding (the plain launch, and a split one's combine, gated off). Forced on
    # (keypad_mode 1) below the size where it is automatic; automatic above it and below.
    kp = dict(base, b=3, hq=8, hkv=2, sq=700, skv=1500, d=128, dv=128, mask="bool", mask_shape="col", keypad="prefix",
              keypad_planned=True, keypad_mode=1)
    cases.append(kp)
    cases.append(dict(kp, keypad_mode=-1))                                                     # 2^31.5: automatic
    cases.append(dict(kp, keypad_mode=-1, b=1, keypad_planned=False))                          # 2^30: masked alone
    cases.append(dict(kp, causal=True, zero_len=True))
    cases.append(dict(kp, dtype=torch.float16, mask="additive", layout="BNSH", strided=True))
    cases.append(dict(kp, mask_shape="col1", d=64, dv=64, sq=2100, skv=2100))                  # 192-row tiles
    cases.append(dict(kp, b=2, sq=1900, skv=8200, causal=False))                               # clusters
    cases.append(dict(kp, dtype=torch.float16, d=256, dv=256, sq=300, skv=900, causal=True, window_left=100))
    cases.append(dict(kp, b=2, hq=32, hkv=8, sq=40, skv=3000, causal=True))                   # GQA-packed
    cases.append(dict(kp, b=2, hq=32, hkv=8, sq=17, skv=20000, causal=True, zero_len=True))   # split keys
    cases.append(dict(kp, keypad="left"))                                                      # not a prefix
    cases.append(dict(kp, keypad=None, causal=True))                                           # holes
    cases.append(dict(kp, keypad=None, mask="additive", b=2, hq=32, hkv=8, sq=17, skv=20000))  # holes, split plan
    cases.append(dict(kp, mask_shape="row", keypad=None, keypad_planned=False))                # per query row
    cases.append(dict(kp, softcap=30.0, keypad_planned=False))                                 # no plain kernel
    cases.append(dict(kp, seqlens=True, keypad_planned=False))                                 # lengths given too
    cases.append(dict(kp, sq=1, hq=8, hkv=2, keypad_planned=False, splits="auto"))             # decode kernel
    # Split-KV decode: the split path (auto and forced), the one-split path (straight to the outputs), off.
    dec = dict(base, b=1, hq=32, hkv=8, sq=1, skv=32768, d=128, dv=128, splits="auto")
    cases.append(dec)                                                       # GQA 32/8, long cache, split
    cases.append(dict(dec, splits=1))                                      # same, one split, no workspace
    cases.append(dict(dec, dtype=torch.float16, hkv=1, skv=8192, b=3, seqlens=True))  # MQA, ragged lengths
    cases.append(dict(dec, b=3, skv=3000, seqlens=True, zero_len=True, splits=16))  # a batch entry with 0 keys
    cases.append(dict(dec, layout="BNSH", sq=16, skv=1000, causal=True, splits=3))  # 16 tokens x 4 heads = 64 rows
    cases.append(dict(dec, sq=4, skv=2, causal=True, splits=2))            # first rows see no key: zeros, -inf
    cases.append(dict(dec, skv=5000, window_left=100, causal=True, splits=8))  # window inside a few splits
    cases.append(dict(dec, skv=3000, mask="bool", mask_shape="row", splits="auto"))  # fully masked rows
    cases.append(dict(dec, skv=3000, mask="additive", mask_shape="full", softcap=30.0, d=80, dv=64, splits=5))
    cases.append(dict(dec, dtype=torch.float16, sq=16, skv=2000, d=256, dv=256, causal=True, splits=4))
    cases.append(dict(dec, hq=8, hkv=8, sq=8, skv=777, d=17, dv=17, strided=True, splits=3))  # unaligned rows
    cases.append(dict(dec, hq=4, hkv=4, sq=64, skv=4096, d=64, dv=64, b=2, splits=128))  # MHA, 64 tokens = 64 rows
    cases.append(dict(dec, hq=32, hkv=1, sq=2, skv=8192, causal=True, splits="auto"))  # MQA 2 tokens: 64 rows
    cases.append(dict(dec, splits="off"))                                  # the prefill kernel on the same shape
    # Splits merged in a thread-block cluster (Hopper): capped automatic counts, ragged and empty batch entries,
    # more rows than splits (MQA: 32 rows over 4 blocks), fewer (4 rows over 16), 64 rows, and the same forced
    # counts through the combine kernel.
    cases.append(dict(dec, cluster=1))                                      # 16 splits of 32 tiles
    cases.append(dict(dec, dtype=torch.float16, hkv=1, skv=8192, b=3, seqlens=True, cluster=1))
    cases.append(dict(dec, b=3, skv=3000, seqlens=True, zero_len=True, splits=16, cluster=1))
    cases.append(dict(dec, b=3, skv=3000, seqlens=True, zero_len=True, splits=16, cluster=0))
    cases.append(dict(dec, hkv=1, skv=700, splits=4, cluster=1, d=64, dv=64))
    cases.append(dict(dec, layout="BNSH", sq=16, skv=1000, causal=True, splits=3, cluster=1))
    cases.append(dict(dec, skv=3000, mask="additive", mask_shape="full", softcap=30.0, d=80, dv=64, splits=5, cluster=1))
    cases.append(dict(dec, b=8, skv=8192, cluster=-1))                      # the automatic choice at batch 8
    # MQA rows cut into row groups (one block per group, K/V shared): clusters and combine, ragged, 2 tokens
    cases.append(dict(dec, hkv=1, skv=2048, row_groups=2, cluster=1))
    cases.append(dict(dec, hkv=1, skv=3000, b=3, seqlens=True, zero_len=True, row_groups=4, cluster=0))
    cases.append(dict(dec, hkv=1, sq=2, skv=5000, causal=True, row_groups=2, splits="auto"))
    return cases


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("lib")
    ap.add_argument("--cases", type=int, default=150)
    ap.add_argument("--seed", type=int, default=None)
    ap.add_argument("--small", action="store_true")
    ap.add_argument("--family", default=None, help="prefer this prefill kernel family (sm80, sm90, sm100)")
    ap.add_argument("--decode-cases", type=int, default=40, help="random split-KV decode cases")
    a = ap.parse_args()
    seed = a.seed if a.seed is not None else random.SystemRandom().randrange(1 << 30)
    print(f"numerics: seed {seed}, {a.cases} random cases + fixed edge cases", flush=True)
    rng = random.Random(seed)
    gen = torch.Generator(device="cuda")
    gen.manual_seed(seed)
    lib = fa_lib.load(a.lib)
    global FAMILY
    FAMILY = a.family
    if a.family:
        lib.flashattn_ort_gpu_set_kernel(a.family.encode())
    cases = ([] if a.small else fixed_cases()) + [rand_case(rng, a.small) for _ in range(a.cases)]
    cases += [rand_decode_case(rng, a.small) for _ in range(a.decode_cases)]
    fails = 0
    worst = 0.0
    served = {}
    for i, c in enumerate(cases):
        try:
            err, tol, problems, kernel = run_case(lib, c, gen)
            worst = max(worst, err / tol)
            family = "_".join(kernel.split("_")[1:3]) + ("_c2" if "w12c2" in kernel or "w16c2" in kernel else "")
            served[family] = served.get(family, 0) + 1
        except Exception as e:  # noqa: BLE001
            problems = [f"exception: {e}"]
        if problems:
            fails += 1
            desc = {k: (str(v).replace("torch.", "") if k == "dtype" else v) for k, v in c.items()}
            print(f"FAIL case {i}: {desc}: {'; '.join(problems)}", flush=True)
    print(f"numerics ({a.family or 'default'} preferred): {len(cases) - fails}/{len(cases)} passed, worst err/tol "
          f"{worst:.3f}, cases served by family: {served}", flush=True)
    sys.exit(1 if fails else 0)


if __name__ == "__main__":
    main()
