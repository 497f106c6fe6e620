#!/usr/bin/env python3
"""Export tiny random-weight Hugging Face causal LMs WITH a KV cache to ONNX the way users do (torch.onnx dynamo
exporter): inputs input_ids [B, S], attention_mask [B, past + S], past_key_values.{i}.key/value
[B, kv_heads, past, head_dim]; outputs logits and present.{i}.key/value. Needs torch + transformers + onnxscript
(NOT part of CI); the pinned set is installed into .venv-export by:

    python3.11 -m venv .venv-export && .venv-export/bin/pip install torch==2.11.0 transformers==5.17.0 \
        onnxscript==0.7.2 onnx==1.19.1 onnxruntime==1.31.1 numpy
    .venv-export/bin/python models/export_kv.py --out models/kv [--only llama,qwen2]

For each architecture it writes NAME.onnx (NAME = {arch}_kv_dynamo), NAME.npz / NAME.io.json (one decode step:
a past of PAST tokens, S_NEW new ones, left-padded second row; PyTorch's logits under "ref:output") and
appends to kv_export_log.json.
"""
import argparse
import json
import os
import sys
import time
import traceback

B, S_NEW, PAST, VOCAB = 2, 2, 5, 128
INIT_RANGE = 0.2


def make_model(arch):
    import torch
    import transformers as tf

    common = dict(vocab_size=VOCAB, initializer_range=INIT_RANGE, max_position_embeddings=128)
    small = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4)
    if arch == "llama":
        cfg, cls = tf.LlamaConfig(num_key_value_heads=2, **small, **common), tf.LlamaForCausalLM
    elif arch == "qwen2":
        cfg, cls = tf.Qwen2Config(num_key_value_heads=2, **small, **common), tf.Qwen2ForCausalLM
    elif arch == "mistral":
        # A window shorter than past + new tokens, so that the export carries a sliding-window mask that binds.
        cfg, cls = tf.MistralConfig(num_key_value_heads=1, head_dim=8, sliding_window=4, **small, **common), tf.MistralForCausalLM
    elif arch == "phi3":
        cfg, cls = tf.Phi3Config(num_key_value_heads=2, pad_token_id=0, **small, **common), tf.Phi3ForCausalLM
    elif arch == "gpt2":
        cfg = tf.GPT2Config(n_embd=32, n_layer=2, n_head=4, n_positions=128, vocab_size=VOCAB, initializer_range=INIT_RANGE,
                            resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
        cls = tf.GPT2LMHeadModel
    else:
        raise ValueError(arch)
    torch.manual_seed(0)
    m = cls._from_config(cfg, attn_implementation="sdpa").eval()
    return m


def kv_heads_dim(m):
    c = m.config
    heads = getattr(c, "num_attention_heads", None) or c.n_head
    kvh = getattr(c, "num_key_value_heads", None) or heads
    hidden = getattr(c, "hidden_size", None) or c.n_embd
    return kvh, getattr(c, "head_dim", None) or hidden // heads


class Wrap:
    pass


def make_wrapper(model):
    import torch
    from transformers import DynamicCache

    n_layers = model.config.num_hidden_layers

    class W(torch.nn.Module):
        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, input_ids, attention_mask, *past):
            # A sliding-window model's cache, built from its config, keeps only the window (cropping with a
            # data-dependent length that torch.export cannot trace); ORT GenAI and GroupQueryAttention keep the
            # whole past and mask it. So does this export: present = past followed by the new tokens.
            sliding = getattr(self.m.config, "sliding_window", None) is not None
            cache = DynamicCache() if sliding else DynamicCache(config=self.m.config)
            for i in range(n_layers):
                cache.update(past[2 * i], past[2 * i + 1], i)
            out = self.m(input_ids=input_ids, attention_mask=attention_mask, past_key_values=cache, use_cache=True,
                         return_dict=True)
            pk = out.past_key_values
            flat = []
            for i in range(n_layers):
                flat += [pk.layers[i].keys, pk.layers[i].values]
            return (out.logits, *flat)

    return W(model).eval()


def example(model, seed=1):
    import torch

    g = torch.Generator().manual_seed(seed)
    kvh, hd = kv_heads_dim(model)
    ids = torch.randint(1, VOCAB, (B, S_NEW), generator=g)
    mask = torch.ones(B, PAST + S_NEW, dtype=torch.int64)
    mask[1, :2] = 0  # left padding in the second row
    past = []
    for _ in range(model.config.num_hidden_layers):
        past += [torch.randn(B, kvh, PAST, hd, generator=g), torch.randn(B, kvh, PAST, hd, generator=g)]
    return ids, mask, past


def export_one(arch, out_dir):
    import numpy as np
    import torch

    name = f"{arch}_kv_dynamo"
    rec = {"name": name, "arch": arch, "ok": False}
    t0 = time.time()
    try:
        model = make_model(arch)
        wrap = make_wrapper(model)
        ids, mask, past = example(model)
        L = model.config.num_hidden_layers
        in_names = ["input_ids", "attention_mask"] + [f"past_key_values.{i}.{kv}" for i in range(L) for kv in ("key", "value")]
        out_names = ["logits"] + [f"present.{i}.{kv}" for i in range(L) for kv in ("key", "value")]
        args = (ids, mask, *past)
        with torch.no_grad():
            ref = [t.float().numpy() for t in wrap(*args)]
        D = torch.export.Dim.DYNAMIC
        dyn = ({0: D, 1: D}, {0: D, 1: D}, tuple({0: D, 2: D} for _ in past))
        path = os.path.join(out_dir, name + ".onnx")
        with torch.no_grad():
            torch.onnx.export(wrap, args, path, dynamo=True, input_names=in_names, output_names=out_names,
                              dynamic_shapes=dyn, external_data=False)
        feeds = {n: a.numpy() for n, a in zip(in_names, args)}
        np.savez(os.path.join(out_dir, name + ".npz"), **feeds, **{"ref:output": ref[0]})
        enc = lambda a: {"dtype": str(a.dtype), "shape": list(a.shape), "data": a.reshape(-1).tolist()}
        with open(os.path.join(out_dir, name + ".io.json"), "w") as f:
            json.dump({"inputs": {k: enc(v) for k, v in feeds.items()}, "output": enc(ref[0])}, f)
        import onnxruntime as ort

        sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
        got = sess.run(None, feeds)
        rec["ort_max_abs_err"] = max(float(np.abs(g.astype(np.float64) - r).max()) for g, r in zip(got, ref))
        rec["ok"] = True
    except Exception as e:
        rec["error"] = f"{type(e).__name__}: {e}"[:3000]
        rec["traceback"] = traceback.format_exc()[-4000:]
    rec["seconds"] = round(time.time() - t0, 1)
    return rec


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "kv"))
    ap.add_argument("--only", default="llama,qwen2,mistral,gpt2,phi3")
    a = ap.parse_args()
    os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")
    import torch
    import transformers

    torch.set_num_threads(1)
    log_path = os.path.join(a.out, "kv_export_log.json")
    log = {"versions": {"torch": torch.__version__, "transformers": transformers.__version__}, "jobs": []}
    if os.path.exists(log_path):  # keep the records of the architectures not exported this time
        with open(log_path) as f:
            old = json.load(f)
        if old.get("versions") == log["versions"]:
            log["jobs"] = [j for j in old.get("jobs", []) if j.get("arch") not in a.only.split(",")]
    for arch in a.only.split(","):
        rec = export_one(arch, a.out)
        print(("ok   " if rec["ok"] else "FAIL ") + rec["name"], rec.get("ort_max_abs_err", rec.get("error", ""))[:300] if isinstance(rec.get("ort_max_abs_err", rec.get("error", "")), str) else rec.get("ort_max_abs_err"), flush=True)
        log["jobs"].append(rec)
    with open(log_path, "w") as f:
        json.dump(log, f, indent=1)


if __name__ == "__main__":
    sys.exit(main())
