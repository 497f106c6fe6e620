"""End-to-end prefill on ONNX Runtime's CUDA execution provider: an exported float16 Llama-style decoder
(head_dim 128, 16 query heads, GQA with --kv-heads 4 or MHA with 16; random weights) timed as users would run
it, all in this one process:
  - original:  the torch.onnx dynamo export (default opset; attention decomposed into MatMul/Softmax),
  - opset23:   the same model exported at opset 23 (ONNX `Attention`, run by ORT's own CUDA kernel; torch
               2.11's exporter emits it for equal query/key heads only, so a GQA model has no such row),
  - optimizer: ORT's transformers optimizer applied to the original export (reports what it fused),
  - ours:      the original export after `flashattn-ort rewrite`, run with libflashattn_ort registered,
  - ours-masked: the same session with the key-padding fast path off (its attention_mask through the masked kernel),
  - ours-norm: the original export after `flashattn-ort rewrite --fuse-rmsnorm` (its written-out fp32 RMSNorms as
               one normalization node each, as the opset-23 export has them),
at prefill lengths 1k..16k, batch 1. Inputs and outputs stay on the GPU (IOBinding); time = median of
CUDA-synchronised runs after warm-up. At each length the models are timed in --rounds alternated rounds and
each reports the median of its rounds: the GPU runs these loads at its power cap and its clock moves ~10%
between timings a second apart (docs/PERF.md), so timing one model after the other would compare clocks.

usage: python3 e2e.py LIB CLI [--kv-heads N] [--seqs 1024,2048,...] [--layers N] [--out FILE.md]"""
import argparse
import ctypes
import os
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np
import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "models"))
from export import make_wrapper  # noqa: E402  (the bundled models' wrapper: input_ids, attention_mask -> hidden)

HIDDEN, HEADS, VOCAB = 2048, 16, 256
HEAD_DIM = HIDDEN // HEADS


def build_model(layers, kv_heads, heads=HEADS):
    import transformers as tf

    hidden = heads * HEAD_DIM
    cfg = tf.LlamaConfig(vocab_size=VOCAB, hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=layers,
                         num_attention_heads=heads, num_key_value_heads=kv_heads, max_position_embeddings=32768,
                         rms_norm_eps=1e-5, tie_word_embeddings=False)
    torch.manual_seed(0)
    model = tf.LlamaModel._from_config(cfg, attn_implementation="sdpa").half().eval()
    return make_wrapper(model, "llama")


def export(wrap, path, opset):
    D = torch.export.Dim.DYNAMIC
    ids = torch.randint(0, VOCAB, (1, 64))
    mask = torch.ones(1, 64, dtype=torch.int64)
    kw = dict(dynamo=True, input_names=["input_ids", "attention_mask"], output_names=["output"], external_data=False,
              dynamic_shapes={"input_ids": {0: D, 1: D}, "attention_mask": {0: D, 1: D}})
    if opset:
        kw["opset_version"] = opset
    with torch.no_grad():
        torch.onnx.export(wrap, (ids, mask), path, **kw)


def optimize(path, out):
    """ORT's transformers optimizer on the original export; returns (path or None, what it fused)."""
    try:
        from onnxruntime.transformers.optimizer import optimize_model

        m = optimize_model(path, model_type="gpt2", num_heads=HEADS, hidden_size=HIDDEN, use_gpu=True,
                           opt_level=0)
        fused = {k: v for k, v in m.get_fused_operator_statistics().items() if v}
        m.save_model_to_file(out)
        return out, fused
    except Exception as e:  # noqa: BLE001
        return None, f"failed: {str(e).splitlines()[0][:160]}"


def session(path, lib=None):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if lib:
        so.register_custom_ops_library(lib)
    return ort.InferenceSession(path, so, providers=["CUDAExecutionProvider"])


def time_session(sess, ids_np, reps):
    import onnxruntime as ort

    seq = ids_np.shape[1]
    ids = ort.OrtValue.ortvalue_from_numpy(ids_np, "cuda", 0)
    mask = ort.OrtValue.ortvalue_from_numpy(np.ones((1, seq), np.int64), "cuda", 0)
    io = sess.io_binding()
    io.bind_ortvalue_input("input_ids", ids)
    io.bind_ortvalue_input("attention_mask", mask)
    io.bind_output("output", "cuda")
    for _ in range(2):
        sess.run_with_iobinding(io)
    times = []
    for _ in range(reps):
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        sess.run_with_iobinding(io)
        torch.cuda.synchronize()
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times), io.copy_outputs_to_cpu()[0]


def kernel_profile(path, lib, ids_np, runs=3, top=12):
    """Where a model's GPU time goes: the CUDA kernels of its prefills by name, GPU time per prefill (ms), from
    torch.profiler (gpu_time.py)."""
    from torch.profiler import ProfilerActivity, profile

    from gpu_time import heaviest, kernel_totals

    sess = session(path, lib)
    time_session(sess, ids_np, 1)  # allocator growth, cuBLAS/cuDNN algorithm choice
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        time_session(sess, ids_np, runs)
    prefills = runs + 2  # time_session's two warm-up runs are inside the profile too
    gpu = kernel_totals(prof)
    total = sum(gpu.values())
    ranked = heaviest(gpu, top)
    return f"{total / prefills / 1e3:.2f} ms of GPU kernels per prefill: " + "; ".join(
        f"{name[:70]} {us / prefills / 1e3:.3f}" for name, us in ranked)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("lib")
    ap.add_argument("cli")
    ap.add_argument("--seqs", default="1024,2048,4096,8192,16384")
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--kv-heads", type=int, default=4)
    ap.add_argument("--reps", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=3, help="alternated rounds per length (each model's median of them)")
    ap.add_argument("--out", default=None)
    ap.add_argument("--profile", type=int, default=0, help="also profile each model's GPU kernels at this prefill length")
    ap.add_argument("--runs", default="ours,ours-norm,ours-masked,opset23,optimizer,original", help="which of these to time; "
                    "ours-masked: ours with the key-padding fast path off (the masked kernel serves the attention_mask)")
    ap.add_argument("--export-only", default=None, help="write the original export (at --heads heads) here and stop")
    ap.add_argument("--heads", type=int, default=HEADS)
    a = ap.parse_args()
    if a.export_only:  # a small twin of the benchmark's model (same head_dim) to debug the rewriter where no GPU is
        export(build_model(a.layers, a.kv_heads, a.heads), a.export_only, None)
        return
    tmp = tempfile.mkdtemp(prefix="e2e-")
    paths = {k: os.path.join(tmp, f"{k}.onnx") for k in ("original", "opset23", "optimizer", "ours", "ours-norm")}
    wrap = build_model(a.layers, a.kv_heads)
    export(wrap, paths["original"], None)
    try:
        export(wrap, paths["opset23"], 23)
    except Exception as e:  # noqa: BLE001
        print(f"opset-23 export failed: {str(e).splitlines()[0][:200]}", flush=True)
        paths["opset23"] = None
    for name, extra in (("ours", []), ("ours-norm", ["--fuse-rmsnorm"])):
        rep = subprocess.run([a.cli, "rewrite", paths["original"], "-o", paths[name], *extra], capture_output=True, text=True)
        print(rep.stdout.strip() or rep.stderr, flush=True)  # the whole report: which layers fused, why any did not
        if rep.returncode != 0:
            sys.exit(f"rewrite failed: {rep.stderr}")
    opt_path, fused = optimize(paths["original"], paths["optimizer"])
    print(f"ORT transformers optimizer fused: {fused}", flush=True)
    # ours first, the decomposed ones last: past 2^31 score elements (16 heads x 16k x 16k) ORT's decomposed
    # MatMul faults, which poisons the CUDA context for whatever runs after it in this process.
    paths["optimizer"] = opt_path
    wanted = a.runs.split(",")
    # the library ORT loaded is this one (dlopen of the same path): its settings reach the op
    op_lib = ctypes.CDLL(a.lib)
    sessions = {k: session(paths[k], a.lib if k.startswith("ours") else None) for k in ("ours", "ours-norm", "opset23", "optimizer", "original")
                if k in wanted and paths[k]}
    if a.profile:  # first: a fault at the longest length would lose the CUDA context for what follows
        ids = np.random.default_rng(a.profile).integers(0, VOCAB, (1, a.profile)).astype(np.int64)
        for name in ("ours", "opset23", "original"):
            if paths[name]:
                try:
                    print(f"profile at {a.profile}, {name}: {kernel_profile(paths[name], a.lib if name == 'ours' else None, ids)}", flush=True)
                except Exception as e:  # noqa: BLE001  (the timing below must still run)
                    print(f"profile at {a.profile}, {name} failed: {' '.join(str(e).split())[:300]}", flush=True)
    rows = []
    for seq in [int(s) for s in a.seqs.split(",")]:
        res, outs = {}, {}
        ids = np.random.default_rng(seq).integers(0, VOCAB, (1, seq)).astype(np.int64)
        timed = list(sessions.items())
        if "ours-masked" in wanted and "ours" in sessions:
            timed.insert(1, ("ours-masked", sessions["ours"]))
        timings = {name: [] for name, _ in timed}
        for name, _ in timed:
            if name in ("original", "optimizer") and HEADS * seq * seq >= 2**31:
                timings[name] = None
                print(f"  {name} at {seq}: skipped (decomposed scores past 2^31 elements fault in ORT's MatMul)", flush=True)
        for _ in range(a.rounds):
            for name, sess in timed:
                if timings[name] is None:
                    continue
                try:
                    op_lib.flashattn_ort_gpu_set_key_padding(0 if name == "ours-masked" else -1)
                    t, outs[name] = time_session(sess, ids, a.reps)
                    timings[name].append(t)
                except Exception as e:  # noqa: BLE001  (e.g. the decomposed export running out of memory)
                    timings[name] = None
                    msg = " ".join(str(e).split())
                    print(f"  {name} at {seq}: {msg if len(msg) < 900 else msg[:450] + ' ... ' + msg[-450:]}", flush=True)
        for name, ts in timings.items():
            res[name] = statistics.median(ts) if ts else None
            if ts and len(ts) > 1:
                print(f"  {name} at {seq}: rounds " + " / ".join(f"{t:.2f}" for t in ts) + " ms", flush=True)
        ref = outs.get("original", outs.get("opset23", outs.get("optimizer")))
        max_diff = lambda name: float(np.abs(outs[name].astype(np.float32) - ref.astype(np.float32)).max())  # noqa: E731
        err = max_diff("ours") if ref is not None and "ours" in outs else None
        if ref is not None and "ours-norm" in outs:
            print(f"  max|ours-norm - reference| {max_diff('ours-norm'):.2e}", flush=True)
        rows.append((seq, res, err))
        print(f"seq {seq}: " + ", ".join(f"{k} {v:.2f} ms" if v else f"{k} —" for k, v in res.items())
              + (f"; max|ours - reference| {err:.2e}" if err is not None else ""), flush=True)
    fmt = lambda v: f"{v:.2f}" if v else "—"  # noqa: E731
    ratio = lambda x, y: f"{x / y:.2f}×" if x and y else "—"  # noqa: E731
    lines = [f"Llama-style fp16 decoder, {a.layers} layers, hidden {HIDDEN}, {HEADS}/{a.kv_heads} heads (d 128), batch 1, "
             f"CUDA EP; ms per prefill (median of {a.rounds} alternated rounds, each the median of {a.reps}); ORT transformers optimizer fused: {fused}", "",
             "| seq | original | opset-23 Attention | optimizer | ours | ours, masked kernel | ours, RMSNorm fused | original/ours "
             "| opset23/ours | optimizer/ours | masked kernel/ours | opset23/ours with RMSNorm fused | max abs diff |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for seq, r, err in rows:
        o = r.get("ours")
        lines.append(f"| {seq} | {fmt(r.get('original'))} | {fmt(r.get('opset23'))} | {fmt(r.get('optimizer'))} | {fmt(o)} | "
                     f"{fmt(r.get('ours-masked'))} | {fmt(r.get('ours-norm'))} | {ratio(r.get('original'), o)} | "
                     f"{ratio(r.get('opset23'), o)} | {ratio(r.get('optimizer'), o)} | {ratio(r.get('ours-masked'), o)} | "
                     f"{ratio(r.get('opset23'), r.get('ours-norm'))} | {'—' if err is None else f'{err:.1e}'} |")
    text = "\n".join(lines)
    print(text)
    if a.out:
        with open(a.out, "w") as f:
            f.write(text + "\n")


if __name__ == "__main__":
    main()
