"""GPU numerics of the CUDA kernel (through libflashattn_ort's C entry point) over a randomized shape/feature
matrix, against a float64 reference. Tolerance, FA3 style: max|ours - ref64| <= 2 * max|naive - ref64| + floor,
where `naive` is the same math in the input precision. Outputs are poisoned with NaN first (every element
must be written); any NaN fails; rows with no visible key must be exactly 0 with lse = -inf.

With key_seqlens, the key/value rows past each batch entry's length are filled with NaN (what an unused KV-cache
tail may hold): they must not reach the output.

usage: python3 numerics.py LIB [--cases N] [--seed S] [--small] [--family sm80|sm90]
  --small: the sanitizer matrix; --family: prefer that kernel family wherever it can serve (the summary counts
  the cases each kernel served)"""
import argparse
import random
import sys

import torch

import fa_lib

FLOOR = {torch.float16: 2e-3, torch.bfloat16: 1e-2}


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
    c["mask_shape"] = rng.choice(["full", "bcast_b", "row", "col", "2d"])
    c["seqlens"] = rng.random() < 0.25
    c["strided"] = rng.random() < 0.2  # q/k/v as views into wider buffers
    c["lse"] = rng.random() < 0.8
    return c


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
        shape = {"full": full, "bcast_b": [1, Hq, Sq, Skv], "row": [B, 1, Sq, 1], "col": [B, 1, 1, Skv], "2d": [Sq, Skv]}[c["mask_shape"]]
        if c["mask"] == "bool":
            mask = torch.rand(shape, device="cuda", generator=gen) < 0.8
        else:
            mask = (torch.randn(shape, device="cuda", generator=gen) * 2).to(dt)
            # some -inf entries: fully masked rows must stay NaN-free
            mask = mask.masked_fill(torch.rand(shape, device="cuda", generator=gen) < 0.1, float("-inf"))
    seqlens = None
    k_in, v_in = k, v
    if c["seqlens"]:
        seqlens = torch.randint(0, Skv + 1, (B,), device="cuda", dtype=torch.int32, generator=gen)
        k_in, v_in = poison_tail(k, seqlens, c["layout"]), poison_tail(v, seqlens, c["layout"])
    out = torch.full(os_, float("nan"), dtype=dt, device="cuda")
    lse = torch.full((B, Hq, Sq), float("nan"), dtype=torch.float32, device="cuda") if c["lse"] else None
    kw = dict(mask=mask, seqlens=seqlens, layout=c["layout"], causal=c["causal"], scale=c["scale"],
              softcap=c["softcap"], window_left=c["window_left"], window_right=c["window_right"])
    P = fa_lib.make_params(lib, q, k_in, v_in, out, lse, **kw)
    kernel = fa_lib.kernel_name(lib, P)
    fa_lib.launch(lib, P)
    torch.cuda.synchronize()
    ref, ref_lse = fa_lib.reference(q, k, v, **kw)
    naive, _ = fa_lib.reference(q, k, v, dtype=dt, **kw)
    problems = []
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
    return err, tol, problems, kernel


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
    cases.append(dict(base, dtype=torch.float16, d=192, dv=128, sq=777, skv=1500, seqlens=True))
    cases.append(dict(base, d=128, dv=128, sq=4096, skv=4096, causal=True, hq=8, hkv=2))
    cases.append(dict(base, d=64, dv=64, sq=3000, skv=3000, window_left=200, window_right=0))
    cases.append(dict(base, dtype=torch.float16, d=256, dv=256, sq=1025, skv=2049, mask="additive", mask_shape="col"))
    cases.append(dict(base, d=128, dv=128, sq=300, skv=5000, seqlens=True, causal=True, strided=True))
    return cases


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("lib")
    ap.add_argument("--cases", type=int, default=150)
    ap.add_argument("--seed", type=int, default=None)
    ap.add_argument("--small", action="store_true")
    ap.add_argument("--family", default=None, help="prefer this kernel family (sm80, sm90)")
    a = ap.parse_args()
    seed = a.seed if a.seed is not None else random.SystemRandom().randrange(1 << 30)
    print(f"numerics: seed {seed}, {a.cases} random cases + fixed edge cases", flush=True)
    rng = random.Random(seed)
    gen = torch.Generator(device="cuda")
    gen.manual_seed(seed)
    lib = fa_lib.load(a.lib)
    if a.family:
        lib.flashattn_ort_gpu_set_kernel(a.family.encode())
    cases = ([] if a.small else fixed_cases()) + [rand_case(rng, a.small) for _ in range(a.cases)]
    fails = 0
    worst = 0.0
    served = {}
    for i, c in enumerate(cases):
        try:
            err, tol, problems, kernel = run_case(lib, c, gen)
            worst = max(worst, err / tol)
            family = kernel.split("_")[2]
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
