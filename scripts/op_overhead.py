"""Per-call cost of one attention node at a tiny shape (the compute is negligible, so this is the host work a
decode step pays per layer): our FlashAttention against ONNX Runtime's own MultiHeadAttention and an Identity
node (the session's own floor), each alone in a session, timed back to back in one process.

usage: python3 scripts/op_overhead.py LIB [--provider cpu|cuda] [--runs N]
(cuda: float16 tensors bound on the device with IOBinding; needs onnxruntime-gpu)"""
import argparse
import time

import numpy as np
import onnxruntime as ort
from onnx import TensorProto, helper

B, S, H, D = 1, 1, 2, 8


def model(op, domain, dtype):
    ins = ["q", "k", "v"] if op != "Identity" else ["q"]
    attrs = {"num_heads": H} if op != "Identity" else {}
    g = helper.make_graph([helper.make_node(op, ins, ["o"], domain=domain, **attrs)], "g",
                          [helper.make_tensor_value_info(n, dtype, [B, S, H * D]) for n in ins],
                          [helper.make_tensor_value_info("o", dtype, None)])
    opsets = [helper.make_opsetid("", 17)] + ([helper.make_opsetid(domain, 1)] if domain else [])
    m = helper.make_model(g, opset_imports=opsets)
    m.ir_version = 8  # onnxruntime 1.17+ reads it (newer onnx packages write IR versions ORT does not read yet)
    return m, ins


def per_call_us(lib, op, domain, provider, runs):
    dtype, np_t = (TensorProto.FLOAT16, np.float16) if provider == "cuda" else (TensorProto.FLOAT, np.float32)
    m, ins = model(op, domain, dtype)
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.register_custom_ops_library(lib)
    providers = ["CUDAExecutionProvider"] if provider == "cuda" else ["CPUExecutionProvider"]
    sess = ort.InferenceSession(m.SerializeToString(), so, providers=providers)
    x = np.random.default_rng(0).random((B, S, H * D)).astype(np_t)
    if provider == "cuda":
        io = sess.io_binding()
        for n in ins:
            io.bind_ortvalue_input(n, ort.OrtValue.ortvalue_from_numpy(x, "cuda", 0))
        io.bind_output("o", "cuda")
        call = lambda: sess.run_with_iobinding(io)  # noqa: E731
        sync = io.synchronize_outputs
    else:
        feeds = {n: x for n in ins}
        call = lambda: sess.run(None, feeds)  # noqa: E731
        sync = lambda: None  # noqa: E731
    for _ in range(200):
        call()
    sync()
    t = time.perf_counter()
    for _ in range(runs):
        call()
    sync()
    return (time.perf_counter() - t) / runs * 1e6


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("lib")
    ap.add_argument("--provider", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--runs", type=int, default=20000)
    a = ap.parse_args()
    rows = [(name, per_call_us(a.lib, op, dom, a.provider, a.runs)) for name, op, dom in
            (("Identity (session floor)", "Identity", ""), ("ORT MultiHeadAttention", "MultiHeadAttention", "com.microsoft"),
             ("ours (ai.flashattn FlashAttention)", "FlashAttention", "ai.flashattn"))]
    print(f"provider {a.provider}, [batch {B}, seq {S}, {H} heads x d {D}], {a.runs} runs each:")
    for name, us in rows:
        print(f"  {name}: {us:.1f} us per call")


if __name__ == "__main__":
    main()
