#!/usr/bin/env python3
"""Export tiny random-weight Hugging Face models to ONNX, the way users do, for the rewriter's tests.

Needs torch + transformers (+ onnxscript for the dynamo exporter); they are NOT part of CI. Run it where
they are installed:

    python3 models/export.py --out DIR [--jobs 8] [--only bert,gpt2]

For every (architecture, attn_implementation, exporter) it writes into DIR:
    NAME.onnx   the exported model (single file, no external data)
    NAME.npz    the example inputs (keyed by ONNX input name) and PyTorch's output under "ref:output"
    NAME.io.json  the same as JSON (for the Rust tests)
and DIR/export_log.json with what worked, what failed and why, versions, and ORT-vs-PyTorch error.

NAME = {arch}_{impl}_{exporter}; exporter is "dynamo" (torch.onnx dynamo exporter, its default opset),
"dynamo23" (dynamo at opset 23) or "ts" (the TorchScript exporter, dynamo=False, opset 17).
Each job runs in its own process and a failing job is logged and skipped.
"""
import argparse
import json
import os
import sys
import time
import traceback
from concurrent.futures import ProcessPoolExecutor, as_completed

BATCH, SEQ = 2, 8
VOCAB = 128
# Larger than HF's 0.02 so that random attention is peaked (softmax far from uniform), which makes the
# rewriter's tests sensitive to a wrong mask, scale or head mapping.
INIT_RANGE = 0.2


def make_config(arch, impl):
    import transformers as tf

    common = dict(vocab_size=VOCAB, initializer_range=INIT_RANGE)
    if arch == "bert":
        cfg = tf.BertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
                            max_position_embeddings=64, hidden_dropout_prob=0.0,
                            attention_probs_dropout_prob=0.0, **common)
        cls = tf.BertModel
    elif arch == "gpt2":
        cfg = tf.GPT2Config(n_embd=32, n_layer=2, n_head=4, n_positions=64, resid_pdrop=0.0, embd_pdrop=0.0,
                            attn_pdrop=0.0, **common)
        cls = tf.GPT2Model
    elif arch == "llama":
        cfg = tf.LlamaConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                             num_key_value_heads=2, max_position_embeddings=64, **common)
        cls = tf.LlamaModel
    elif arch == "mistral":
        cfg = tf.MistralConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                               num_key_value_heads=1, max_position_embeddings=64, sliding_window=4, head_dim=8,
                               **common)
        cls = tf.MistralModel
    elif arch == "gemma2":
        cfg = tf.Gemma2Config(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                              num_key_value_heads=2, head_dim=8, max_position_embeddings=64, sliding_window=4,
                              attn_logit_softcapping=50.0, final_logit_softcapping=None,
                              query_pre_attn_scalar=8, **common)
        cls = tf.Gemma2Model
    elif arch == "t5enc":
        cfg = tf.T5Config(d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=4, relative_attention_num_buckets=8,
                          dropout_rate=0.0, **common)
        cls = tf.T5EncoderModel
    elif arch == "bart":
        cfg = tf.BartConfig(d_model=32, encoder_layers=1, decoder_layers=1, encoder_attention_heads=4,
                            decoder_attention_heads=4, encoder_ffn_dim=64, decoder_ffn_dim=64,
                            max_position_embeddings=64, init_std=INIT_RANGE, dropout=0.0, attention_dropout=0.0,
                            vocab_size=VOCAB)
        cls = tf.BartModel
    elif arch == "llamafp16":
        cfg, cls = make_config("llama", impl)
    elif arch == "vit":
        cfg = tf.ViTConfig(image_size=32, patch_size=8, num_channels=3, hidden_size=32, num_hidden_layers=2,
                           num_attention_heads=4, intermediate_size=64, hidden_dropout_prob=0.0,
                           attention_probs_dropout_prob=0.0, initializer_range=INIT_RANGE)
        cls = tf.ViTModel
    else:
        raise ValueError(arch)
    return cfg, cls


def build_model(arch, impl):
    import torch

    cfg, cls = make_config(arch, impl)
    torch.manual_seed(0)
    try:
        model = cls._from_config(cfg, attn_implementation=impl)
    except Exception:
        cfg._attn_implementation = impl
        model = cls(cfg) if arch != "vit" else cls(cfg, add_pooling_layer=False)
    if arch.endswith("fp16"):
        model = model.half()
    model.eval()
    got = getattr(model.config, "_attn_implementation", None)
    if got != impl:
        raise RuntimeError(f"asked for attn_implementation={impl}, model has {got}")
    return model


def example_inputs(arch):
    import torch

    g = torch.Generator().manual_seed(1)
    if arch == "vit":
        return {"pixel_values": torch.randn(BATCH, 3, 32, 32, generator=g)}
    ids = torch.randint(0, VOCAB, (BATCH, SEQ), generator=g)
    mask = torch.ones(BATCH, SEQ, dtype=torch.int64)
    mask[1, SEQ - 3:] = 0  # right padding in the second sequence
    if arch == "bart":  # a decoder shorter than the encoder: cross-attention has Sq != Skv
        dec = torch.randint(0, VOCAB, (BATCH, SEQ - 3), generator=g)
        return {"input_ids": ids, "attention_mask": mask, "decoder_input_ids": dec}
    return {"input_ids": ids, "attention_mask": mask}


def make_wrapper(model, arch):
    import torch

    class Wrap(torch.nn.Module):
        def __init__(self, m):
            super().__init__()
            self.m = m

    if arch == "vit":
        class W(Wrap):
            def forward(self, pixel_values):
                return self.m(pixel_values=pixel_values, return_dict=False)[0]
    elif arch == "bart":
        class W(Wrap):
            def forward(self, input_ids, attention_mask, decoder_input_ids):
                return self.m(input_ids=input_ids, attention_mask=attention_mask,
                              decoder_input_ids=decoder_input_ids, use_cache=False, return_dict=False)[0]
    elif arch in ("bert", "t5enc"):
        class W(Wrap):
            def forward(self, input_ids, attention_mask):
                return self.m(input_ids=input_ids, attention_mask=attention_mask, return_dict=False)[0]
    else:
        class W(Wrap):
            def forward(self, input_ids, attention_mask):
                return self.m(input_ids=input_ids, attention_mask=attention_mask, use_cache=False,
                              return_dict=False)[0]
    return W(model).eval()


def export_one(job):
    arch, impl, exporter, out_dir = job
    os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")
    import numpy as np
    import torch

    torch.set_num_threads(1)
    name = f"{arch}_{impl}_{exporter}"
    rec = {"name": name, "arch": arch, "impl": impl, "exporter": exporter, "ok": False}
    t0 = time.time()
    try:
        model = build_model(arch, impl)
        wrap = make_wrapper(model, arch)
        inputs = example_inputs(arch)
        names = list(inputs)
        args = tuple(inputs[n] for n in names)
        with torch.no_grad():
            ref = wrap(*args).float().numpy()
        path = os.path.join(out_dir, name + ".onnx")
        dyn_note = "dynamic"
        if exporter.startswith("dynamo"):
            opset = 23 if exporter == "dynamo23" else None
            D = torch.export.Dim.DYNAMIC
            dyn = {n: ({0: D} if n == "pixel_values" else {0: D, 1: D}) for n in names}
            kw = dict(dynamo=True, input_names=names, output_names=["output"], external_data=False)
            if opset:
                kw["opset_version"] = opset
            try:
                with torch.no_grad():
                    torch.onnx.export(wrap, args, path, dynamic_shapes=dyn, **kw)
            except Exception as e:  # fall back to static shapes
                rec["dynamic_error"] = f"{type(e).__name__}: {e}"[:2000]
                dyn_note = "static"
                with torch.no_grad():
                    torch.onnx.export(wrap, args, path, **kw)
        else:
            seq = lambda n: "decoder_sequence" if n.startswith("decoder") else "sequence"
            dyn = {n: ({0: "batch"} if n == "pixel_values" else {0: "batch", 1: seq(n)}) for n in names}
            try:
                with torch.no_grad():
                    torch.onnx.export(wrap, args, path, dynamo=False, opset_version=17, input_names=names,
                                      output_names=["output"], dynamic_axes=dyn)
            except Exception as e:
                rec["dynamic_error"] = f"{type(e).__name__}: {e}"[:2000]
                dyn_note = "static"
                with torch.no_grad():
                    torch.onnx.export(wrap, args, path, dynamo=False, opset_version=17, input_names=names,
                                      output_names=["output"])
        rec["shapes"] = dyn_note
        import onnx

        m = onnx.load(path)
        rec["opset"] = {o.domain or "ai.onnx": o.version for o in m.opset_import}
        rec["ir_version"] = m.ir_version
        rec["onnx_inputs"] = [i.name for i in m.graph.input]
        ops = {}
        for n in m.graph.node:
            ops[n.op_type] = ops.get(n.op_type, 0) + 1
        rec["ops"] = ops
        rec["bytes"] = os.path.getsize(path)
        feeds = {n: inputs[n].numpy() for n in names if n in rec["onnx_inputs"]}
        np.savez(os.path.join(out_dir, name + ".npz"), **feeds, **{"ref:output": ref})
        # The same as JSON for the Rust tests: {"inputs": {name: {dtype, shape, data}}, "output": {...}}.
        enc = lambda a: {"dtype": str(a.dtype), "shape": list(a.shape), "data": a.reshape(-1).tolist()}
        with open(os.path.join(out_dir, name + ".io.json"), "w") as f:
            json.dump({"inputs": {k: enc(v) for k, v in feeds.items()}, "output": enc(ref.astype(np.float32))}, f)
        try:
            import onnxruntime as ort

            sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
            got = sess.run(None, feeds)[0]
            rec["ort_max_abs_err"] = float(np.abs(got.astype(np.float64) - ref).max())
        except Exception as e:
            rec["ort_error"] = f"{type(e).__name__}: {e}"[:2000]
        rec["ok"] = True
    except Exception as e:
        rec["error"] = f"{type(e).__name__}: {e}"[:3000]
        rec["traceback"] = traceback.format_exc()[-4000:]
        for ext in (".onnx", ".npz", ".io.json", ".onnx.data"):
            p = os.path.join(out_dir, name + ext)
            if os.path.exists(p):
                os.remove(p)
    rec["seconds"] = round(time.time() - t0, 1)
    return rec


JOBS = [
    ("bert", ["eager", "sdpa"], ["dynamo", "ts"]),
    ("gpt2", ["eager", "sdpa"], ["dynamo", "ts"]),
    ("llama", ["eager", "sdpa"], ["dynamo", "ts"]),
    ("vit", ["eager", "sdpa"], ["dynamo", "ts"]),
    ("llama", ["sdpa"], ["dynamo23"]),
    # Beyond the four required architectures: sliding window (mistral), softcap + alternating window
    # (gemma2), relative position bias (t5).
    ("mistral", ["sdpa"], ["dynamo", "ts"]),
    ("t5enc", ["eager"], ["ts"]),
    ("gemma2", ["eager"], ["dynamo"]),
    # Encoder-decoder with cross-attention (query and key lengths differ); a float16 export.
    ("bart", ["sdpa"], ["dynamo", "ts"]),
    ("llamafp16", ["sdpa"], ["dynamo", "ts"]),
]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True)
    ap.add_argument("--jobs", type=int, default=8)
    ap.add_argument("--only", default="", help="comma-separated architectures")
    ap.add_argument("--deadline", type=float, default=400.0, help="seconds; unfinished jobs are abandoned")
    a = ap.parse_args()
    os.makedirs(a.out, exist_ok=True)
    only = set(filter(None, a.only.split(",")))
    jobs = [(arch, impl, ex, a.out) for arch, impls, exs in JOBS if not only or arch in only
            for impl in impls for ex in exs]
    log = {"jobs": []}
    try:
        import torch, transformers  # noqa: E401

        log["versions"] = {"torch": torch.__version__, "transformers": transformers.__version__}
        for mod in ("onnx", "onnxscript", "onnxruntime"):
            try:
                log["versions"][mod] = __import__(mod).__version__
            except Exception as e:
                log["versions"][mod] = f"missing: {e}"
    except Exception as e:
        log["versions"] = f"import failed: {e}"
    t0 = time.time()
    import multiprocessing as mp

    with ProcessPoolExecutor(max_workers=a.jobs, mp_context=mp.get_context("spawn")) as pool:
        futs = {pool.submit(export_one, j): j for j in jobs}
        try:
            for f in as_completed(futs, timeout=a.deadline):
                try:
                    rec = f.result()
                except Exception as e:
                    j = futs[f]
                    rec = {"name": f"{j[0]}_{j[1]}_{j[2]}", "ok": False, "error": f"worker died: {e}"}
                log["jobs"].append(rec)
                status = "ok " if rec.get("ok") else "FAIL"
                print(f"[{time.time() - t0:6.1f}s] {status} {rec['name']} {rec.get('shapes', '')} "
                      f"{rec.get('ort_max_abs_err', rec.get('ort_error', rec.get('error', '')))}"[:400], flush=True)
        except Exception as e:
            log["deadline"] = f"stopped waiting: {e}"
            for f, j in futs.items():
                if not f.done():
                    log["jobs"].append({"name": f"{j[0]}_{j[1]}_{j[2]}", "ok": False, "error": "deadline"})
            pool.shutdown(wait=False, cancel_futures=True)
    log["seconds"] = round(time.time() - t0, 1)
    log["jobs"].sort(key=lambda r: r["name"])
    with open(os.path.join(a.out, "export_log.json"), "w") as f:
        json.dump(log, f, indent=1)
    print(f"done: {sum(r.get('ok', False) for r in log['jobs'])}/{len(jobs)} ok in {log['seconds']}s")


if __name__ == "__main__":
    sys.exit(main())
