"""KV-cache checks (issue #8) of the op on the CUDA EP, called by ort_cuda.py: past/present in concat mode,
the shared-buffer mode (past and present bound to one device buffer: in place, ragged per-row lengths) and
a separate present buffer, rotary (half-split / interleaved / explicit position_ids), fp16 and bf16, against
a float64 reference computed here with torch (fa_lib.reference per batch row). Unused cache capacity is
poisoned with NaN, outputs too. Then greedy generation through the bundled float16 KV-cache decoders, original
vs rewritten, on the CUDA EP (run by ort_cuda.py; results in docs/PERF.md)."""
import math
import os
import pathlib
import sys

import numpy as np
import torch
from onnx import TensorProto, helper

import fa_lib

INPUTS = ["query", "key", "value", "attn_mask", "key_seqlens", "past_key", "past_value", "past_seqlens", "cos_cache", "sin_cache", "position_ids"]
TT = {torch.float16: TensorProto.FLOAT16, torch.bfloat16: TensorProto.BFLOAT16}


def kv_model(dtype, present_inputs, attrs):
    last = max(INPUTS.index(n) for n in present_inputs)
    ins = [n if n in present_inputs else "" for n in INPUTS[: last + 1]]
    outs = ["output", "softmax_lse", "present_key", "present_value"]
    node = helper.make_node("FlashAttention", ins, outs, domain="ai.flashattn", **attrs)
    t = TT[dtype]
    types = {"past_seqlens": TensorProto.INT32, "position_ids": TensorProto.INT64}
    vi = [helper.make_tensor_value_info(n, types.get(n, t), None) for n in present_inputs]
    ov = [helper.make_tensor_value_info(o, TensorProto.FLOAT if o == "softmax_lse" else t, None) for o in outs]
    m = helper.make_model(helper.make_graph([node], "kv", vi, ov), opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("ai.flashattn", 1)])
    m.ir_version = 9
    return m.SerializeToString()


def bind(binding, name, t, output=False):
    et = {torch.float16: np.float16, torch.float32: np.float32, torch.int32: np.int32, torch.int64: np.int64}.get(t.dtype, TensorProto.BFLOAT16)
    (binding.bind_output if output else binding.bind_input)(name, "cuda", 0, et, list(t.shape), t.data_ptr())


def rotate(x, cos, sin, pos, interleaved):
    """x [B, N, S, D] float64, cos/sin [P, R/2] float64, pos [B, S] long."""
    half = cos.shape[1]
    c, s = cos[pos][:, None], sin[pos][:, None]
    out = x.clone()
    if interleaved:
        a, b = x[..., 0 : 2 * half : 2], x[..., 1 : 2 * half : 2]
        out[..., 0 : 2 * half : 2] = a * c - b * s
        out[..., 1 : 2 * half : 2] = b * c + a * s
    else:
        a, b = x[..., :half], x[..., half : 2 * half]
        out[..., :half] = a * c - b * s
        out[..., half : 2 * half] = b * c + a * s
    return out


def cache_matches(got, expected):
    """A cache written by the op against its float64 model: equal within one rounding of the cache's type (2^-7
    relative), NaN exactly where the model has NaN (unused capacity must stay untouched)."""
    g = got.double()
    same = (torch.isnan(g) & torch.isnan(expected)) | ((g - expected).abs() <= 2 ** -7 * expected.abs() + 1e-6)
    return bool(same.all().item())


def one_case(session, check, dtype, mode, rotary, S_new, D=64, B=2, Nq=8, Nkv=2, cap=300, past=100, first_len=37):
    name = f"kv {str(dtype)[6:]} {mode} rotary={rotary} S_new={S_new} D={D}" + (f" cap={cap} first_len={first_len}" if (cap, first_len) != (300, 37) else "")
    dev = "cuda"
    q = torch.randn(B, S_new, Nq, D, device=dev).to(dtype)
    k = torch.randn(B, S_new, Nkv, D, device=dev).to(dtype)
    v = torch.randn(B, S_new, Nkv, D, device=dev).to(dtype)
    shared = mode.startswith("shared")
    lens = torch.tensor([first_len, cap - S_new] if shared else [past, past], device=dev)
    ps = cap if shared else past
    pk = torch.randn(B, Nkv, ps, D, device=dev).to(dtype)
    pv = torch.randn(B, Nkv, ps, D, device=dev).to(dtype)
    if shared:
        for b in range(B):
            pk[b, :, lens[b]:] = float("nan")
            pv[b, :, lens[b]:] = float("nan")
    feeds = {"query": q, "key": k, "value": v, "past_key": pk, "past_value": pv}
    attrs = {"causal": 1}
    if shared:
        feeds["past_seqlens"] = lens.to(torch.int32)
    pos = lens.view(-1, 1) + torch.arange(S_new, device=dev).view(1, -1)
    qr, kr = q.double().transpose(1, 2), k.double().transpose(1, 2)
    if rotary:
        P = cap + 8
        ang = torch.rand(P, D // 4, device=dev, dtype=torch.float64) * 2 * math.pi
        cos, sin = ang.cos().to(dtype), ang.sin().to(dtype)
        feeds["cos_cache"], feeds["sin_cache"] = cos, sin
        if rotary == "position_ids":
            pos = torch.randint(0, P, (B, S_new), device=dev)
            feeds["position_ids"] = pos.to(torch.int64)
        inter = rotary != "half"
        attrs["rotary_interleaved"] = int(inter)
        qr = rotate(qr, cos.double(), sin.double(), pos, inter).to(dtype).double()
        kr = rotate(kr, cos.double(), sin.double(), pos, inter).to(dtype).double()
    vr = v.double().transpose(1, 2)
    if shared:
        ek, ev = pk.double().clone(), pv.double().clone()
        for b in range(B):
            ek[b, :, lens[b] : lens[b] + S_new] = kr[b]
            ev[b, :, lens[b] : lens[b] + S_new] = vr[b]
    else:
        ek, ev = torch.cat([pk.double(), kr], 2), torch.cat([pv.double(), vr], 2)
    sess = session(kv_model(dtype, list(feeds), attrs))
    binding = sess.io_binding()
    for n, t in feeds.items():
        if mode == "shared_inplace" and n in ("past_key", "past_value"):
            continue
        bind(binding, n, t)
    out = torch.full((B, S_new, Nq, D), float("nan"), dtype=dtype, device=dev)
    lse = torch.full((B, Nq, S_new), float("nan"), device=dev)
    if mode == "shared_inplace":
        present_k, present_v = pk.clone(), pv.clone()
        bind(binding, "past_key", present_k)
        bind(binding, "past_value", present_v)
    else:
        present_k = torch.full(ek.shape, float("nan"), dtype=dtype, device=dev)
        present_v = torch.full(ev.shape, float("nan"), dtype=dtype, device=dev)
    bind(binding, "output", out, True)
    bind(binding, "softmax_lse", lse, True)
    bind(binding, "present_key", present_k, True)
    bind(binding, "present_value", present_v, True)
    try:
        binding.synchronize_inputs()
        sess.run_with_iobinding(binding)
        binding.synchronize_outputs()
        torch.cuda.synchronize()
    except Exception as e:  # noqa: BLE001
        check(name, False, f"exception {str(e)[:300]}")
        return
    ok_present = cache_matches(present_k, ek) and cache_matches(present_v, ev)
    errs, ok = [], ok_present
    for b in range(B):
        n = int(lens[b]) + S_new if shared else ek.shape[2]
        qb = qr[b : b + 1].to(dtype)
        kb, vb = ek[b : b + 1, :, :n].to(dtype), ev[b : b + 1, :, :n].to(dtype)
        ref, ref_lse = fa_lib.reference(qb, kb, vb, layout="BNSH", causal=True)
        naive, _ = fa_lib.reference(qb, kb, vb, layout="BNSH", causal=True, dtype=dtype)
        got = out[b : b + 1].double().transpose(1, 2)
        err = (got - ref).abs().max().item()
        tol = 2 * (naive.double() - ref).abs().max().item() + (1e-2 if dtype == torch.bfloat16 else 2e-3)
        errs.append(err)
        ok = ok and not torch.isnan(got).any().item() and err <= tol
        ok = ok and (lse[b : b + 1].double() - ref_lse).abs().max().item() < 1e-3 * max(1.0, ref_lse.abs().max().item())
    check(name, ok, f"max err {max(errs):.2e}, present {'ok' if ok_present else 'WRONG'}")


def no_past_case(session, check, dtype, S_new, rotary=True, D=128, B=2, Nq=8, Nkv=2):
    """A first step without past inputs: present = the new keys/values (rotated with rotary, positions 0…).
    With rotary attention reads present, so the decode kernel appends it itself (nothing to copy)."""
    name = f"kv {str(dtype)[6:]} no past rotary={rotary} S_new={S_new} D={D}"
    dev = "cuda"
    q = torch.randn(B, S_new, Nq, D, device=dev).to(dtype)
    k = torch.randn(B, S_new, Nkv, D, device=dev).to(dtype)
    v = torch.randn(B, S_new, Nkv, D, device=dev).to(dtype)
    feeds = {"query": q, "key": k, "value": v}
    qr, kr = q.double().transpose(1, 2), k.double().transpose(1, 2)
    if rotary:
        ang = torch.rand(S_new + 4, D // 2, device=dev, dtype=torch.float64) * 2 * math.pi
        cos, sin = ang.cos().to(dtype), ang.sin().to(dtype)
        feeds["cos_cache"], feeds["sin_cache"] = cos, sin
        pos = torch.arange(S_new, device=dev).view(1, -1).expand(B, -1)
        qr = rotate(qr, cos.double(), sin.double(), pos, False).to(dtype).double()
        kr = rotate(kr, cos.double(), sin.double(), pos, False).to(dtype).double()
    vr = v.double().transpose(1, 2)
    try:
        sess = session(kv_model(dtype, list(feeds), {"causal": 1}))
        binding = sess.io_binding()
        for n, t in feeds.items():
            bind(binding, n, t)
        out = torch.full((B, S_new, Nq, D), float("nan"), dtype=dtype, device=dev)
        lse = torch.full((B, Nq, S_new), float("nan"), device=dev)
        present_k = torch.full((B, Nkv, S_new, D), float("nan"), dtype=dtype, device=dev)
        present_v = torch.full((B, Nkv, S_new, D), float("nan"), dtype=dtype, device=dev)
        for n, t, o in (("output", out, True), ("softmax_lse", lse, True), ("present_key", present_k, True), ("present_value", present_v, True)):
            bind(binding, n, t, o)
        sess.run_with_iobinding(binding)
        torch.cuda.synchronize()
        ref, _ = fa_lib.reference(qr.to(dtype), kr.to(dtype), vr.to(dtype), layout="BNSH", causal=True)
        got = out.double().transpose(1, 2)
        err = (got - ref).abs().max().item()
        ok = not torch.isnan(got).any().item() and err <= 2e-2
        ok = ok and cache_matches(present_k, kr) and cache_matches(present_v, vr)
        check(name, ok, f"max err {err:.2e}")
    except Exception as e:  # noqa: BLE001
        check(name, False, f"exception {str(e)[:300]}")


def graph_decode_loop(session, check, dtype=torch.float16, B=2, Nq=8, Nkv=2, D=128, cap=512, steps=5):
    """GenAI's decode loop under ORT's CUDA graphs: one buffer per cache bound as past and present, the lengths
    in a device tensor advanced in place, rotary in the op; every bound address fixed, so ORT captures the first
    run and replays it. Each step's output and the cache contents are checked against a float64 model of the
    cache kept here."""
    name = f"kv CUDA graph decode loop {str(dtype)[6:]} (shared buffer, rotary, {steps} steps)"
    dev = "cuda"
    try:
        lens = torch.tensor([37, 300], device=dev, dtype=torch.int32)[:B]
        pk = torch.randn(B, Nkv, cap, D, device=dev).to(dtype)
        pv = torch.randn(B, Nkv, cap, D, device=dev).to(dtype)
        for b in range(B):
            pk[b, :, int(lens[b]):] = float("nan")
            pv[b, :, int(lens[b]):] = float("nan")
        ek, ev = pk.double().clone(), pv.double().clone()
        P = cap + 8
        ang = torch.rand(P, D // 2, device=dev, dtype=torch.float64) * 2 * math.pi
        cos, sin = ang.cos().to(dtype), ang.sin().to(dtype)
        q = torch.empty(B, 1, Nq, D, device=dev, dtype=dtype)
        k = torch.empty(B, 1, Nkv, D, device=dev, dtype=dtype)
        v = torch.empty(B, 1, Nkv, D, device=dev, dtype=dtype)
        feeds = {"query": q, "key": k, "value": v, "past_key": pk, "past_value": pv, "past_seqlens": lens,
                 "cos_cache": cos, "sin_cache": sin}
        sess = session(kv_model(dtype, list(feeds), {"causal": 1, "rotary_interleaved": 0}), {"enable_cuda_graph": "1"})
        binding = sess.io_binding()
        for n, t in feeds.items():
            bind(binding, n, t)
        out = torch.full((B, 1, Nq, D), float("nan"), dtype=dtype, device=dev)
        lse = torch.full((B, Nq, 1), float("nan"), device=dev)
        bind(binding, "output", out, True)
        bind(binding, "softmax_lse", lse, True)
        bind(binding, "present_key", pk, True)
        bind(binding, "present_value", pv, True)
        ok, err = True, 0.0
        for step in range(steps):
            for t in (q, k, v):
                t.copy_(torch.randn(t.shape, device=dev).to(dtype))
            pos = lens.long().view(-1, 1)
            qr = rotate(q.double().transpose(1, 2), cos.double(), sin.double(), pos, False).to(dtype).double()
            kr = rotate(k.double().transpose(1, 2), cos.double(), sin.double(), pos, False).to(dtype).double()
            for b in range(B):
                ek[b, :, int(lens[b])] = kr[b, :, 0]
                ev[b, :, int(lens[b])] = v[b, 0].double()
            torch.cuda.synchronize()
            sess.run_with_iobinding(binding)
            torch.cuda.synchronize()
            for b in range(B):
                n = int(lens[b]) + 1
                kb, vb = ek[b : b + 1, :, :n].to(dtype), ev[b : b + 1, :, :n].to(dtype)
                ref, _ = fa_lib.reference(qr[b : b + 1].to(dtype), kb, vb, layout="BNSH", causal=True)
                got = out[b : b + 1].double().transpose(1, 2)
                e = (got - ref).abs().max().item()
                err = max(err, e)
                ok = ok and not torch.isnan(got).any().item() and e <= 2e-2
            ok = ok and cache_matches(pk, ek) and cache_matches(pv, ev)
            lens += 1  # in place: the captured graph reads the same device tensor
        check(name, ok, f"max err {err:.2e}")
    except Exception as e:  # noqa: BLE001
        check(name, False, f"exception {str(e)[:300]}")


def generation_checks(lib, check):
    """Greedy generation (prefill + 32 steps, batch 2 ragged) through the bundled float16 decoders on the CUDA
    EP: ORT's GroupQueryAttention/MultiHeadAttention vs the rewritten model (carried in .gpu/kv/ by pack.sh),
    GQA in both cache modes with device buffers (shared: one buffer bound as past and present)."""
    root = pathlib.Path(__file__).resolve().parents[2]
    sys.path.insert(0, str(root / "tests" / "python"))
    import kv_generation as kg

    prov = ["CUDAExecutionProvider", "CPUExecutionProvider"]
    for name, modes in (("genai_gqa_decoder_fp16", ("shared", "copy")), ("ort_mha_decoder_fp16", ("concat",))):
        flash = root / ".gpu" / "kv" / f"{name}.flash.onnx"
        if not flash.exists():
            check(f"generation {name}", False, f"{flash} missing (run scripts/gpu/pack.sh)")
            continue
        for mode in modes:
            try:
                s0, s1 = kg.session(kg.KV_DIR / f"{name}.onnx", None, prov), kg.session(flash, lib, prov)
                if mode == "concat":
                    prompt = kg.prompts(6, left_pad=True)
                    t0, l0 = kg.generate_concat(s0, prompt)
                    t1, l1 = kg.generate_concat(s1, prompt)
                else:
                    prompt = kg.prompts(5, left_pad=False)
                    t0, l0 = kg.generate_buffer(s0, mode, prompt, device="cuda")
                    t1, l1 = kg.generate_buffer(s1, mode, prompt, device="cuda")
                why = kg.compare(t0, l0, t1, l1, 5e-2)
                check(f"generation {name} {mode} (CUDA EP)", why is None, why or f"{t0.shape[1]} tokens equal")
            except Exception as e:  # noqa: BLE001
                check(f"generation {name} {mode} (CUDA EP)", False, f"exception {str(e)[:300]}")


def kv_checks(session, check, lib=None, shared_only=False):
    """shared_only: the in-place shared-buffer cases of one dtype only (those the decode kernel appends itself)."""
    for dtype in (torch.float16,) if shared_only else (torch.float16, torch.bfloat16):
        for mode in ("shared_inplace",) if shared_only else ("concat", "shared_inplace", "shared_copy"):
            for rotary in (None, "half", "interleaved", "position_ids"):
                for S_new in (1, 7):
                    one_case(session, check, dtype, mode, rotary, S_new)
    one_case(session, check, torch.float16, "shared_inplace", "half", 1, D=128)
    # In shared-buffer mode the split-KV decode kernel appends the new rows itself, each by the block whose
    # split reads its 64-key tile: new rows across a tile boundary (60..66), and long caches (many splits).
    for rotary in (None, "interleaved", "position_ids"):
        one_case(session, check, torch.bfloat16, "shared_inplace", rotary, 7, D=128, first_len=60)
        one_case(session, check, torch.float16, "shared_inplace", rotary, 1, D=128, cap=4100, first_len=2047)
        one_case(session, check, torch.bfloat16, "shared_inplace", rotary, 16, D=128, Nq=8, Nkv=2, cap=9000, first_len=4090)
    # A 40-token turn over a long ragged cache (160 packed rows): the Hopper prefill kernel, GQA-packed with split
    # keys, each batch row's diagonal at its own length; its append runs as a separate step first.
    for rotary in (None, "half"):
        one_case(session, check, torch.bfloat16, "shared_inplace", rotary, 40, D=128, Nq=8, Nkv=2, cap=9000, first_len=4090)
        one_case(session, check, torch.float16, "concat", rotary, 40, D=128, Nq=8, Nkv=2, past=5000, cap=5048)
    for S_new in (1, 7):
        no_past_case(session, check, torch.float16, S_new)
        no_past_case(session, check, torch.bfloat16, S_new, rotary=False)
    graph_decode_loop(session, check)
    if lib:
        generation_checks(lib, check)
