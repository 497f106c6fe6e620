"""ONNX Runtime CUDA EP sessions with libflashattn_ort (SessionOptions.register_custom_ops_library), on the
GPU machine with onnxruntime-gpu: node placement on the CUDA EP (read from ORT's profile), results vs a
float64 reference (fp16 and bf16, masks, key_seqlens, lse; decode steps on the split-KV kernel with its
workspace from ORT's allocator), float32 falling back to the CPU kernel, CUDA graph capture and replay (prefill
and a split-KV decode step), two sessions on two threads, a bad input refused with a clear message, and the KV
cache (kv_cuda.py: concat, shared buffer in place, rotary).

usage: python3 ort_cuda.py LIB"""
import ctypes
import json
import os
import sys
import tempfile
import threading

import numpy as np
import torch  # first: its CUDA 13 / cuDNN libraries are then already loaded for ORT's CUDA EP
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper

if hasattr(ort, "preload_dlls"):
    try:
        ort.preload_dlls()
    except Exception as e:  # noqa: BLE001
        print("preload_dlls:", e)

import fa_lib

LIB = sys.argv[1]
FAILS = []
TT = {torch.float16: TensorProto.FLOAT16, torch.bfloat16: TensorProto.BFLOAT16, torch.float32: TensorProto.FLOAT}
NP = {torch.float16: np.float16, torch.float32: np.float32, torch.int32: np.int32, torch.bool: np.bool_}


def check(name, ok, detail=""):
    print(f"{'PASS' if ok else 'FAIL'} {name}{': ' + detail if detail else ''}", flush=True)
    if not ok:
        FAILS.append(name)


def model(dtype, mask=None, seqlens=False, lse=True, **attrs):
    ins = ["query", "key", "value", "attn_mask" if mask else "", "key_seqlens" if seqlens else ""]
    while ins and ins[-1] == "":
        ins.pop()
    outs = ["output", "softmax_lse"] if lse else ["output"]
    node = helper.make_node("FlashAttention", ins, outs, domain="ai.flashattn", **attrs)
    t = TT[dtype]
    vi = [helper.make_tensor_value_info(n, t, ["B", s, "H" if n == "query" else "Hkv", "D"]) for n, s in
          (("query", "Sq"), ("key", "Skv"), ("value", "Skv"))]
    if mask:
        vi.append(helper.make_tensor_value_info("attn_mask", TensorProto.BOOL if mask == "bool" else t, None))
    if seqlens:
        vi.append(helper.make_tensor_value_info("key_seqlens", TensorProto.INT32, ["B"]))
    ov = [helper.make_tensor_value_info("output", t, None)]
    if lse:
        ov.append(helper.make_tensor_value_info("softmax_lse", TensorProto.FLOAT, None))
    g = helper.make_graph([node], "fa", vi, ov)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("ai.flashattn", 1)])
    m.ir_version = 9
    return m.SerializeToString()


def session(model_bytes, cuda_opts=None, profile=False):
    so = ort.SessionOptions()
    so.register_custom_ops_library(LIB)
    so.log_severity_level = 3
    if profile:
        so.enable_profiling = True
        so.profile_file_prefix = os.path.join(tempfile.mkdtemp(), "prof")
    return ort.InferenceSession(model_bytes, so, providers=[("CUDAExecutionProvider", cuda_opts or {}), "CPUExecutionProvider"])


def node_providers(sess):
    path = sess.end_profiling()
    ev = json.load(open(path))
    return {e["args"].get("provider") for e in ev if e.get("cat") == "Node" and "FlashAttention" in e["args"].get("op_name", "")}


def bind_torch(binding, name, t):
    et = {torch.float16: np.float16, torch.float32: np.float32, torch.int32: np.int32, torch.bool: np.bool_}.get(t.dtype)
    if t.dtype == torch.bfloat16:
        et = TensorProto.BFLOAT16  # ORT >= 1.20 accepts a TensorProto type code here
    binding.bind_input(name, "cuda", 0, et, list(t.shape), t.data_ptr())


def bind_out(binding, name, t):
    et = {torch.float16: np.float16, torch.float32: np.float32}.get(t.dtype, TensorProto.BFLOAT16)
    binding.bind_output(name, "cuda", 0, et, list(t.shape), t.data_ptr())


def inputs(dtype, B=2, Sq=77, Skv=130, H=4, Hkv=2, D=64, mask=None, seqlens=False):
    q = torch.randn(B, Sq, H, D, device="cuda").to(dtype)
    k = torch.randn(B, Skv, Hkv, D, device="cuda").to(dtype)
    v = torch.randn(B, Skv, Hkv, D, device="cuda").to(dtype)
    feeds = {"query": q, "key": k, "value": v}
    if mask == "bool":
        feeds["attn_mask"] = torch.rand(B, 1, Sq, Skv, device="cuda") < 0.8
    elif mask in ("keypad", "keypad_holes"):
        feeds["attn_mask"] = key_padding(B, Skv, holes=mask == "keypad_holes")
    elif mask == "additive":
        feeds["attn_mask"] = torch.randn(1, H, Sq, Skv, device="cuda").to(dtype)
    if seqlens:
        feeds["key_seqlens"] = torch.randint(0, Skv + 1, (B,), dtype=torch.int32, device="cuda")
    return feeds


def set_key_padding(mode):
    """The library's key-padding path: -1 automatic, 1 wherever it applies (fa_lib.set_key_padding)."""
    ctypes.CDLL(LIB).flashattn_ort_gpu_set_key_padding(mode)


def key_padding(B, Skv, holes=False):
    """A bool key-padding mask [B, 1, 1, Skv] (an exported attention_mask): entry b keeps its first keys (random
    lengths, the last entry all), or with `holes` also drops every 5th key (the scan sends it to the masked kernel)."""
    lens = torch.randint(1, Skv + 1, (B,), device="cuda")
    lens[-1] = Skv
    keep = torch.arange(Skv, device="cuda").view(1, Skv) < lens.view(B, 1)
    if holes:
        keep &= (torch.arange(Skv, device="cuda") % 5 != 2).view(1, Skv)
    return keep.view(B, 1, 1, Skv)


def run_bound(sess, feeds, out_shape, dtype, lse=True):
    b = sess.io_binding()
    for n, t in feeds.items():
        bind_torch(b, n, t)
    out = torch.full(out_shape, float("nan"), dtype=dtype, device="cuda")
    bind_out(b, "output", out)
    l = None
    if lse:
        l = torch.full(out_shape[:1] + (out_shape[2], out_shape[1]), float("nan"), device="cuda")
        bind_out(b, "softmax_lse", l)
    b.synchronize_inputs()
    sess.run_with_iobinding(b)
    b.synchronize_outputs()
    return out, l


def compare(name, feeds, out, lse, dtype, **kw):
    ref, ref_lse = fa_lib.reference(feeds["query"], feeds["key"], feeds["value"], mask=feeds.get("attn_mask"),
                                    seqlens=feeds.get("key_seqlens"), **kw)
    naive, _ = fa_lib.reference(feeds["query"], feeds["key"], feeds["value"], mask=feeds.get("attn_mask"),
                                seqlens=feeds.get("key_seqlens"), dtype=dtype, **kw)
    err = (out.double() - ref).abs().max().item()
    tol = 2 * (naive.double() - ref).abs().max().item() + (1e-2 if dtype == torch.bfloat16 else 2e-3)
    ok = not torch.isnan(out).any().item() and err <= tol
    if lse is not None:
        fin = torch.isfinite(ref_lse)
        ok = ok and torch.equal(torch.isfinite(lse), fin) and (
            not fin.any() or (lse.double()[fin] - ref_lse[fin]).abs().max().item() < 1e-3 * max(1.0, ref_lse[fin].abs().max().item()))
    check(name, ok, f"max err {err:.2e} (tol {tol:.2e})")


def kv_only():
    """The shared-buffer KV-cache checks alone (the decode kernel appending in place), for `run.sh kv-sanitize`
    under compute-sanitizer. The reference runs on the CPU: under racecheck, cuBLAS's kernels after ours hit
    "Internal Sanitizer Error: failed to handle a hardware exception" (2026-11-30, H200), with ours clean."""
    import kv_cuda

    reference = fa_lib.reference
    fa_lib.reference = lambda *a, **k: tuple(x.cuda() for x in reference(*[t.cpu() for t in a], **k))
    torch.manual_seed(0)
    kv_cuda.kv_checks(session, check, shared_only=True)
    print(f"ort kv: {len(FAILS)} failed" + (f": {FAILS}" if FAILS else ""), flush=True)
    sys.exit(1 if FAILS else 0)


def graph_check(name, dtype, causal, shape, mask=None):
    """ORT's CUDA graph of one node: warm-up, capture, replays, each after new data was written in place into
    the bound inputs; every run must match the reference of its inputs. With mask="keypad" the key-padding mask
    alternates between kept prefixes and holes, so the replays take each of the gated launches in turn."""
    try:
        sess = session(model(dtype, mask="bool" if mask else None, causal=int(causal)), cuda_opts={"enable_cuda_graph": "1"})
        feeds = inputs(dtype, mask=mask, **shape)
        B, Sq, H = feeds["query"].shape[0], feeds["query"].shape[1], shape.get("H", 4)
        b = sess.io_binding()
        for n, t in feeds.items():
            bind_torch(b, n, t)
        out = torch.full((B, Sq, H, feeds["value"].shape[-1]), float("nan"), dtype=dtype, device="cuda")
        lse = torch.empty(B, H, Sq, device="cuda")
        bind_out(b, "output", out)
        bind_out(b, "softmax_lse", lse)
        ok = True
        for it in range(6 if mask else 4):  # ORT warms up, captures, then replays
            for n, t in feeds.items():
                if n == "attn_mask":
                    t.copy_(key_padding(B, t.shape[-1], holes=it % 2 == 1))
                else:
                    t.copy_(torch.randn(t.shape, device="cuda").to(t.dtype))
            torch.cuda.synchronize()
            sess.run_with_iobinding(b)
            torch.cuda.synchronize()
            ref, _ = fa_lib.reference(feeds["query"], feeds["key"], feeds["value"], mask=feeds.get("attn_mask"), causal=causal)
            err = (out.double() - ref).abs().max().item()
            ok = ok and err < 2e-2
        check(name, ok, f"last err {err:.2e}")
    except Exception as e:  # noqa: BLE001
        check(name, False, f"exception {e}")


def main():
    if "--kv-only" in sys.argv:
        kv_only()
    print("onnxruntime", ort.__version__, ort.get_available_providers(), flush=True)
    torch.manual_seed(0)
    # 1. numerics through ORT, CUDA EP, fp16 and bf16, feature mix; node placement from the profile.
    for dtype in (torch.float16, torch.bfloat16):
        for mask, seqlens, causal in ((None, False, False), ("bool", True, True), ("additive", False, True)):
            name = f"cuda-ep {str(dtype)[6:]} mask={mask} seqlens={seqlens} causal={causal}"
            try:
                sess = session(model(dtype, mask=mask, seqlens=seqlens, causal=int(causal)), profile=True)
                feeds = inputs(dtype, mask=mask, seqlens=seqlens)
                out, lse = run_bound(sess, feeds, (2, 77, 4, 64), dtype)
                compare(name, feeds, out, lse, dtype, causal=causal)
                prov = node_providers(sess)
                check(name + " placed on CUDA EP", prov == {"CUDAExecutionProvider"}, str(prov))
            except Exception as e:  # noqa: BLE001
                check(name, False, f"exception {e}")
    # 1b. decode shapes: the split-KV decode kernel, its workspace taken from ORT's device allocator; 1c. a short
    # query over many keys: the Hopper prefill kernel with split keys (GQA-packed), its workspace from ORT too.
    # 1d. key-padding masks: the mask's scan and the gated plain kernel (kept prefixes) or masked one (holes),
    # their workspace from ORT; with split keys (40 tokens over 8192 keys) the combine gated too. These shapes are
    # below the size where the library takes that path by itself: it is forced (the library ORT loaded is this
    # one, dlopen of the same path, so its setting reaches the op), and reset before the other checks.
    set_key_padding(1)
    for what, shape, mask in (("decode (split-KV, workspace from ORT)", dict(B=2, Sq=1, Skv=4096), None),
                              ("prefill of 40 tokens over 8192 keys (split-KV on Hopper, workspace from ORT)", dict(B=1, Sq=40, Skv=8192), None),
                              ("key-padding mask, kept prefixes (gated plain kernel)", dict(B=3, Sq=300, Skv=700), "keypad"),
                              ("key-padding mask with holes (gated masked kernel)", dict(B=3, Sq=300, Skv=700), "keypad_holes"),
                              ("key-padding mask, 40 tokens over 8192 keys (gated split plain kernel)", dict(B=2, Sq=40, Skv=8192), "keypad")):
        for dtype in (torch.float16, torch.bfloat16):
            name = f"cuda-ep {str(dtype)[6:]} {what}"
            try:
                sess = session(model(dtype, mask="bool" if mask else None, seqlens=not mask, causal=1), profile=True)
                feeds = inputs(dtype, H=8, Hkv=2, D=128, seqlens=not mask, mask=mask, **shape)
                out, lse = run_bound(sess, feeds, (shape["B"], shape["Sq"], 8, 128), dtype)
                compare(name, feeds, out, lse, dtype, causal=True)
            except Exception as e:  # noqa: BLE001
                check(name, False, f"exception {e}")
    set_key_padding(-1)
    # 2. float32: no CUDA kernel; ORT runs the CPU kernel.
    try:
        sess = session(model(torch.float32, lse=False), profile=True)
        f = {k: v.cpu().numpy() for k, v in inputs(torch.float32).items()}
        out = sess.run(None, f)[0]
        ref, _ = fa_lib.reference(*(torch.from_numpy(f[n]) for n in ("query", "key", "value")))
        err = np.abs(out - ref.numpy()).max()
        prov = node_providers(sess)
        check("float32 runs on the CPU kernel", err < 1e-4 and prov == {"CPUExecutionProvider"}, f"err {err:.1e}, {prov}")
    except Exception as e:  # noqa: BLE001
        check("float32 runs on the CPU kernel", False, f"exception {e}")
    # 3. CUDA graph capture: fixed bindings, new data written in place, replays must follow it. A causal
    # prefill; a split-KV decode step (workspace allocated inside the captured run); a prefill long enough for
    # the Hopper kernel's clusters (d128, >= 8192 keys, no causal bounds).
    graph_check("CUDA graph capture + replay follows new inputs", torch.float16, True, dict(Sq=128, Skv=128))
    graph_check("CUDA graph capture + replay of a split-KV decode step", torch.bfloat16, False,
                dict(B=1, Sq=1, Skv=2048, H=8, Hkv=2, D=128))
    graph_check("CUDA graph capture + replay of a prefill over 8192 keys (clusters on Hopper)", torch.bfloat16, False,
                dict(B=1, Sq=256, Skv=8192, H=4, Hkv=2, D=128))
    graph_check("CUDA graph capture + replay of a short prefill with split keys (Hopper)", torch.float16, True,
                dict(B=1, Sq=40, Skv=8192, H=8, Hkv=2, D=128))
    set_key_padding(1)
    graph_check("CUDA graph capture + replays of a key-padding mask, prefixes and holes in turn (gated launches)",
                torch.bfloat16, True, dict(B=2, Sq=300, Skv=1000, H=8, Hkv=2, D=128), mask="keypad")
    set_key_padding(-1)
    # 4. Two sessions on two threads.
    try:
        dtype = torch.bfloat16
        m = model(dtype, causal=1)
        sessions = [session(m), session(m)]
        errs = [None, None]

        def work(i):
            worst = 0.0
            for _ in range(10):
                feeds = inputs(dtype, B=1, Sq=300, Skv=300)
                out, l = run_bound(sessions[i], feeds, (1, 300, 4, 64), dtype)
                ref, _ = fa_lib.reference(feeds["query"], feeds["key"], feeds["value"], causal=True)
                worst = max(worst, (out.double() - ref).abs().max().item())
            errs[i] = worst

        th = [threading.Thread(target=work, args=(i,)) for i in range(2)]
        [t.start() for t in th]
        [t.join() for t in th]
        check("two sessions on two threads", all(e is not None and e < 3e-2 for e in errs), f"errs {errs}")
    except Exception as e:  # noqa: BLE001
        check("two sessions on two threads", False, f"exception {e}")
    # 5. A bad input: a clear error naming the input, and the session keeps working.
    try:
        dtype = torch.float16
        sess = session(model(dtype, lse=False))
        bad = inputs(dtype)
        bad["key"] = torch.randn(2, 130, 3, 64, device="cuda").to(dtype)  # 4 query heads, 3 kv heads
        bad["value"] = torch.randn(2, 130, 3, 64, device="cuda").to(dtype)
        try:
            run_bound(sess, bad, (2, 77, 4, 64), dtype, lse=False)
            check("bad input refused", False, "no error")
        except Exception as e:  # noqa: BLE001
            msg = str(e)
            check("bad input refused with a clear message", "FlashAttention" in msg and "head" in msg, msg.splitlines()[0][:200])
        good = inputs(dtype)
        out, _ = run_bound(sess, good, (2, 77, 4, 64), dtype, lse=False)
        compare("session survives a bad input", good, out, None, dtype)
    except Exception as e:  # noqa: BLE001
        check("bad input", False, f"exception {e}")
    # 6. TensorRT listed first, CUDA second: the custom op still runs on the CUDA EP.
    try:
        dtype = torch.float16
        so = ort.SessionOptions()
        so.register_custom_ops_library(LIB)
        so.log_severity_level = 3
        so.enable_profiling = True
        so.profile_file_prefix = os.path.join(tempfile.mkdtemp(), "prof")
        sess = ort.InferenceSession(model(dtype, causal=1), so, providers=["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"])
        feeds = inputs(dtype)
        out, lse = run_bound(sess, feeds, (2, 77, 4, 64), dtype)
        compare("TensorRT-first session", feeds, out, lse, dtype, causal=True)
        prov = node_providers(sess)
        check("TensorRT-first session: op on CUDA EP", prov == {"CUDAExecutionProvider"}, f"{prov}; session providers {sess.get_providers()}")
    except Exception as e:  # noqa: BLE001
        check("TensorRT-first session", False, f"exception {str(e)[:300]}")
    # KV cache (#8): past/present, shared buffer in place, rotary (scripts/gpu/kv_cuda.py).
    try:
        import kv_cuda

        kv_cuda.kv_checks(session, check, LIB)
    except Exception as e:  # noqa: BLE001
        check("kv cache checks", False, f"exception {str(e)[:300]}")
    print(f"ort: {len(FAILS)} failed" + (f": {FAILS}" if FAILS else ""), flush=True)
    sys.exit(1 if FAILS else 0)


if __name__ == "__main__":
    main()
