#!/usr/bin/env python3
"""Builds a tiny random-weight KV-cache decoder in the form ONNX Runtime GenAI's model builder emits (no torch
needed: onnx.helper + onnxruntime): token embedding, 2 layers of com.microsoft GroupQueryAttention with
past_key/past_value inputs, present outputs and rotary inside the op (do_rotary=1, cos/sin cache
initializers), seqlens_k = ReduceSum(attention_mask) - 1 and total_sequence_length = attention_mask's width,
a small MLP, an LM head. Graph interface as GenAI's: input_ids, attention_mask, past_key_values.{i}.key/value
-> logits, present.{i}.key/value; caches [batch, kv_heads, seq, head_dim].

Also genai_gqa_packed_decoder.onnx: the same with one packed QKV projection (GQA's key/value inputs absent, the
model builder's default) and interleaved rotary.

Also ort_mha_decoder.onnx: the same decoder with com.microsoft MultiHeadAttention with past (as ONNX Runtime's
transformer optimizer emits for GPT-2-style decoders): unidirectional, key_padding_mask int32 [batch,
past + new] from attention_mask, past/present growing by concatenation (no rotary, no position embedding:
the causal mask alone orders tokens in this toy).

Also float16 twins (*_fp16.onnx) for the CUDA EP generation check. Writes genai_gqa_decoder.onnx and .io.json/.npz: one prefill step of a right-padded batch of 2 prompts into a
cache buffer of capacity CAP (the shared-buffer form GenAI uses), with ONNX Runtime's logits as reference.

    python models/make_kv_decoder.py --out models/kv
"""
import argparse
import json
import os

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto as T
from onnx import helper as h
from onnx import numpy_helper as nh

VOCAB, D, NQ, NKV, HD, LAYERS, MAX_POS, CAP = 64, 32, 4, 2, 16, 2, 256, 48
rng = np.random.default_rng(8)


def init(name, shape, scale):
    return nh.from_array((rng.standard_normal(shape) * scale).astype(np.float32), name)


def build(packed=False, interleaved=0, name="genai_gqa_decoder"):
    nodes, inits = [], []
    inits.append(init("embed", [VOCAB, D], 1.0))
    # GenAI's seqlens_k / total_sequence_length from the attention mask.
    inits.append(nh.from_array(np.array([1], np.int64), "axes1"))
    inits.append(nh.from_array(np.array(1, np.int64), "one64"))
    inits.append(nh.from_array(np.array(1, np.int64), "idx1"))
    nodes += [
        h.make_node("ReduceSum", ["attention_mask", "axes1"], ["mask_sum"], keepdims=0),
        h.make_node("Sub", ["mask_sum", "one64"], ["seqlens_m1"]),
        h.make_node("Cast", ["seqlens_m1"], ["seqlens_k"], to=T.INT32),
        h.make_node("Shape", ["attention_mask"], ["mask_shape"]),
        h.make_node("Gather", ["mask_shape", "idx1"], ["total64"], axis=0),
        h.make_node("Cast", ["total64"], ["total_sequence_length"], to=T.INT32),
        h.make_node("Gather", ["embed", "input_ids"], ["x0"], axis=0),
    ]
    ang = np.arange(MAX_POS)[:, None] / (10000.0 ** (np.arange(HD // 2) * 2 / HD))[None]
    inits.append(nh.from_array(np.cos(ang).astype(np.float32), "cos_cache"))
    inits.append(nh.from_array(np.sin(ang).astype(np.float32), "sin_cache"))
    ins = [h.make_tensor_value_info("input_ids", T.INT64, ["batch", "seq"]),
           h.make_tensor_value_info("attention_mask", T.INT64, ["batch", "total"])]
    outs = [h.make_tensor_value_info("logits", T.FLOAT, ["batch", "seq", VOCAB])]
    x = "x0"
    for l in range(LAYERS):
        p = f"layers.{l}"
        if packed:  # one QKV projection, the packed GQA input (key/value absent)
            inits.append(init(f"{p}.qkv_proj", [D, (NQ + 2 * NKV) * HD], 0.4))
            nodes.append(h.make_node("MatMul", [x, f"{p}.qkv_proj"], [f"{p}.qkv"]))
            qkv = [f"{p}.qkv", "", ""]
        else:
            for n, w in (("q", NQ * HD), ("k", NKV * HD), ("v", NKV * HD)):
                inits.append(init(f"{p}.{n}_proj", [D, w], 0.4))
                nodes.append(h.make_node("MatMul", [x, f"{p}.{n}_proj"], [f"{p}.{n}"]))
            qkv = [f"{p}.q", f"{p}.k", f"{p}.v"]
        pk, pv = f"past_key_values.{l}.key", f"past_key_values.{l}.value"
        ck, cv = f"present.{l}.key", f"present.{l}.value"
        for n in (pk, pv):
            ins.append(h.make_tensor_value_info(n, T.FLOAT, ["batch", NKV, "past_seq", HD]))
        for n in (ck, cv):
            outs.append(h.make_tensor_value_info(n, T.FLOAT, ["batch", NKV, "present_seq", HD]))
        nodes.append(h.make_node("GroupQueryAttention",
                                 qkv + [pk, pv, "seqlens_k", "total_sequence_length", "cos_cache", "sin_cache"],
                                 [f"{p}.attn", ck, cv], domain="com.microsoft", name=f"/model/{p}/attn/GroupQueryAttention",
                                 num_heads=NQ, kv_num_heads=NKV, do_rotary=1, rotary_interleaved=interleaved, scale=HD ** -0.5))
        inits.append(init(f"{p}.o_proj", [NQ * HD, D], 0.3))
        inits.append(init(f"{p}.up", [D, 2 * D], 0.3))
        inits.append(init(f"{p}.down", [2 * D, D], 0.3))
        nodes += [
            h.make_node("MatMul", [f"{p}.attn", f"{p}.o_proj"], [f"{p}.o"]),
            h.make_node("Add", [x, f"{p}.o"], [f"{p}.h"]),
            h.make_node("MatMul", [f"{p}.h", f"{p}.up"], [f"{p}.u"]),
            h.make_node("Tanh", [f"{p}.u"], [f"{p}.a"]),
            h.make_node("MatMul", [f"{p}.a", f"{p}.down"], [f"{p}.m"]),
            h.make_node("Add", [f"{p}.h", f"{p}.m"], [f"{p}.out"]),
        ]
        x = f"{p}.out"
    inits.append(init("lm_head", [D, VOCAB], 0.5))
    nodes.append(h.make_node("MatMul", [x, "lm_head"], ["logits"]))
    g = h.make_graph(nodes, name, ins, outs, inits)
    m = h.make_model(g, opset_imports=[h.make_opsetid("", 17), h.make_opsetid("com.microsoft", 1)], ir_version=8)
    onnx.checker.check_model(m)
    return m


def build_mha():
    nodes, inits = [], []
    inits.append(init("embed", [VOCAB, D], 1.0))
    nodes += [
        h.make_node("Cast", ["attention_mask"], ["key_padding_mask"], to=T.INT32),
        h.make_node("Gather", ["embed", "input_ids"], ["x0"], axis=0),
    ]
    ins = [h.make_tensor_value_info("input_ids", T.INT64, ["batch", "seq"]),
           h.make_tensor_value_info("attention_mask", T.INT64, ["batch", "total"])]
    outs = [h.make_tensor_value_info("logits", T.FLOAT, ["batch", "seq", VOCAB])]
    x = "x0"
    for l in range(LAYERS):
        p = f"layers.{l}"
        for n in ("q", "k", "v"):
            inits.append(init(f"{p}.{n}_proj", [D, NQ * HD], 0.4))
            nodes.append(h.make_node("MatMul", [x, f"{p}.{n}_proj"], [f"{p}.{n}"]))
        pk, pv = f"past_key_values.{l}.key", f"past_key_values.{l}.value"
        ck, cv = f"present.{l}.key", f"present.{l}.value"
        for n in (pk, pv):
            ins.append(h.make_tensor_value_info(n, T.FLOAT, ["batch", NQ, "past_seq", HD]))
        for n in (ck, cv):
            outs.append(h.make_tensor_value_info(n, T.FLOAT, ["batch", NQ, "present_seq", HD]))
        nodes.append(h.make_node("MultiHeadAttention", [f"{p}.q", f"{p}.k", f"{p}.v", "", "key_padding_mask", "", pk, pv],
                                 [f"{p}.attn", ck, cv], domain="com.microsoft", name=f"/{p}/attn/MultiHeadAttention",
                                 num_heads=NQ, unidirectional=1))
        inits.append(init(f"{p}.o_proj", [NQ * HD, D], 0.3))
        inits.append(init(f"{p}.up", [D, 2 * D], 0.3))
        inits.append(init(f"{p}.down", [2 * D, D], 0.3))
        nodes += [
            h.make_node("MatMul", [f"{p}.attn", f"{p}.o_proj"], [f"{p}.o"]),
            h.make_node("Add", [x, f"{p}.o"], [f"{p}.h"]),
            h.make_node("MatMul", [f"{p}.h", f"{p}.up"], [f"{p}.u"]),
            h.make_node("Tanh", [f"{p}.u"], [f"{p}.a"]),
            h.make_node("MatMul", [f"{p}.a", f"{p}.down"], [f"{p}.m"]),
            h.make_node("Add", [f"{p}.h", f"{p}.m"], [f"{p}.out"]),
        ]
        x = f"{p}.out"
    inits.append(init("lm_head", [D, VOCAB], 0.5))
    nodes.append(h.make_node("MatMul", [x, "lm_head"], ["logits"]))
    g = h.make_graph(nodes, "ort_mha_decoder", ins, outs, inits)
    m = h.make_model(g, opset_imports=[h.make_opsetid("", 17), h.make_opsetid("com.microsoft", 1)], ir_version=8)
    onnx.checker.check_model(m)
    return m


def prefill_feeds(lens=(7, 4)):
    B, S = len(lens), max(lens)
    ids = rng.integers(0, VOCAB, (B, S)).astype(np.int64)
    mask = np.zeros((B, S), np.int64)
    for b, n in enumerate(lens):
        mask[b, :n] = 1
        ids[b, n:] = 0
    feeds = {"input_ids": ids, "attention_mask": mask}
    for l in range(LAYERS):
        for kv in ("key", "value"):
            feeds[f"past_key_values.{l}.{kv}"] = np.zeros((B, NKV, CAP, HD), np.float32)
    return feeds


def mha_prefill_feeds(lens=(7, 4)):
    """Left-padded prompts (the concat-mode form: the key padding mask covers the whole cache)."""
    B, S = len(lens), max(lens)
    ids = rng.integers(0, VOCAB, (B, S)).astype(np.int64)
    mask = np.zeros((B, S), np.int64)
    for b, n in enumerate(lens):
        mask[b, S - n:] = 1
        ids[b, : S - n] = 0
    feeds = {"input_ids": ids, "attention_mask": mask}
    for l in range(LAYERS):
        for kv in ("key", "value"):
            feeds[f"past_key_values.{l}.{kv}"] = np.zeros((B, NQ, 0, HD), np.float32)
    return feeds


def save(out, name, m, feeds):
    path = os.path.join(out, name + ".onnx")
    onnx.save(m, path)
    sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    ref = sess.run(["logits"], feeds)[0].astype(np.float32)
    # Padded rows: only the real positions are defined (the original and the fused op differ on the pads).
    ref = np.where(feeds["attention_mask"][..., None] == 1, ref, 0.0).astype(np.float32)
    np.savez(os.path.join(out, name + ".npz"), **feeds, **{"ref:output": ref})
    enc = lambda x: {"dtype": str(x.dtype), "shape": list(x.shape), "data": x.reshape(-1).tolist()}
    with open(os.path.join(out, name + ".io.json"), "w") as f:
        json.dump({"inputs": {k: enc(v) for k, v in feeds.items()}, "output": enc(ref), "valid_rows": "attention_mask"}, f)
    print("wrote", path)


def to_fp16(m):
    """The same model in float16 end to end (weights, caches, logits), for the CUDA EP (our CUDA kernel and
    ORT's GroupQueryAttention serve float16)."""
    m = onnx.ModelProto.FromString(m.SerializeToString())
    for t in m.graph.initializer:
        if t.data_type == T.FLOAT:
            t.CopyFrom(nh.from_array(nh.to_array(t).astype(np.float16), t.name))
    for v in list(m.graph.input) + list(m.graph.output):
        if v.type.tensor_type.elem_type == T.FLOAT:
            v.type.tensor_type.elem_type = T.FLOAT16
    m.graph.name += "_fp16"
    onnx.checker.check_model(m)
    return m


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "kv"))
    a = ap.parse_args()
    gqa, mha = build(), build_mha()
    save(a.out, "genai_gqa_decoder", gqa, prefill_feeds())
    save(a.out, "ort_mha_decoder", mha, mha_prefill_feeds())
    # float16 twins for the GPU generation check (scripts/gpu/kv_cuda.py); ORT's CPU EP lacks some float16
    # kernels (Tanh), so they have no CPU reference here.
    onnx.save(to_fp16(gqa), os.path.join(a.out, "genai_gqa_decoder_fp16.onnx"))
    onnx.save(to_fp16(mha), os.path.join(a.out, "ort_mha_decoder_fp16.onnx"))
    # The model builder's default packed-QKV form, with interleaved rotary.
    save(a.out, "genai_gqa_packed_decoder", build(packed=True, interleaved=1, name="genai_gqa_packed_decoder"), prefill_feeds())


if __name__ == "__main__":
    main()
