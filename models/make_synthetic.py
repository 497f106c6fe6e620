#!/usr/bin/env python3
"""Builds small models around fused attention ops (no torch needed: onnx.helper + onnxruntime):

- onnx_attention_gqa_causal: ONNX Attention (opset 23), 4-D BNSH, 4 query / 2 kv heads, is_causal=1, fed by
  a projection + Reshape + Transpose;
- onnx_attention_3d_mask: ONNX Attention (opset 23), 3-D inputs with q_num_heads/kv_num_heads and a bool
  key-padding mask built from an int64 attention_mask input;
- ms_mha_padding: com.microsoft MultiHeadAttention, unidirectional, key_padding_mask int32 [B, S];
- ms_gqa: com.microsoft GroupQueryAttention (prompt, no cache), seqlens_k / total_sequence_length inputs;
- ms_attention_packed: com.microsoft Attention (packed QKV weights + bias, 2-D mask_index), as ONNX Runtime's
  transformer optimizer emits for BERT.

Each gets NAME.onnx and NAME.io.json/NAME.npz with inputs and ONNX Runtime's output as the reference
(these ops are defined by their ONNX Runtime implementation).

    python models/make_synthetic.py --out models/synthetic
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

B, S, D, NQ, NKV, HD = 2, 8, 32, 4, 2, 8
rng = np.random.default_rng(0)


def init(name, shape, scale=0.3):
    return nh.from_array((rng.standard_normal(shape) * scale).astype(np.float32), name)


def proj(x, name, out_dim, nodes, inits):
    inits.append(init(f"W_{name}", [D, out_dim]))
    nodes.append(h.make_node("MatMul", [x, f"W_{name}"], [name]))
    return name


def save(out, name, model, feeds):
    onnx.checker.check_model(model)
    path = os.path.join(out, name + ".onnx")
    onnx.save(model, path)
    sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    ref = sess.run(None, feeds)[0].astype(np.float32)
    np.savez(os.path.join(out, name + ".npz"), **feeds, **{"ref:output": ref})
    enc = lambda a: {"dtype": str(a.dtype), "shape": list(a.shape), "data": a.reshape(-1).tolist()}
    with open(os.path.join(out, name + ".io.json"), "w") as f:
        json.dump({"inputs": {k: enc(v) for k, v in feeds.items()}, "output": enc(ref)}, f)
    print("wrote", path)


def padding_mask():
    m = np.ones((B, S), np.int64)
    m[1, S - 3:] = 0
    return m


def onnx_attention_gqa_causal(out):
    nodes, inits = [], []
    q = proj("x", "q", NQ * HD, nodes, inits)
    k = proj("x", "k", NKV * HD, nodes, inits)
    v = proj("x", "v", NKV * HD, nodes, inits)
    for t, heads in ((q, NQ), (k, NKV), (v, NKV)):
        inits.append(nh.from_array(np.array([0, 0, heads, HD], np.int64), f"shape_{t}"))
        nodes.append(h.make_node("Reshape", [t, f"shape_{t}"], [f"{t}4"]))
        nodes.append(h.make_node("Transpose", [f"{t}4"], [f"{t}_bnsh"], perm=[0, 2, 1, 3]))
    nodes.append(h.make_node("Attention", ["q_bnsh", "k_bnsh", "v_bnsh"], ["attn"], is_causal=1))
    nodes.append(h.make_node("Transpose", ["attn"], ["attn_bsnh"], perm=[0, 2, 1, 3]))
    inits.append(nh.from_array(np.array([0, 0, NQ * HD], np.int64), "shape_out"))
    nodes.append(h.make_node("Reshape", ["attn_bsnh", "shape_out"], ["output"]))
    g = h.make_graph(nodes, "g", [h.make_tensor_value_info("x", T.FLOAT, ["batch", "seq", D])],
                     [h.make_tensor_value_info("output", T.FLOAT, ["batch", "seq", NQ * HD])], inits)
    m = h.make_model(g, opset_imports=[h.make_opsetid("", 23)], ir_version=10)
    save(out, "onnx_attention_gqa_causal", m, {"x": rng.standard_normal((B, S, D)).astype(np.float32)})


def onnx_attention_3d_mask(out):
    nodes, inits = [], []
    q = proj("x", "q", NQ * HD, nodes, inits)
    k = proj("x", "k", NKV * HD, nodes, inits)
    v = proj("x", "v", NKV * HD, nodes, inits)
    # ONNX Runtime wants the mask's query axis spelled out: a bool [B, 1, S, S] input, passed through.
    nodes.append(h.make_node("Attention", [q, k, v, "attn_mask"], ["output"], q_num_heads=NQ, kv_num_heads=NKV,
                             scale=0.3))
    g = h.make_graph(nodes, "g", [h.make_tensor_value_info("x", T.FLOAT, ["batch", "seq", D]),
                                  h.make_tensor_value_info("attn_mask", T.BOOL, ["batch", 1, "seq", "seq"])],
                     [h.make_tensor_value_info("output", T.FLOAT, ["batch", "seq", NQ * HD])], inits)
    m = h.make_model(g, opset_imports=[h.make_opsetid("", 23)], ir_version=10)
    mask = np.broadcast_to(padding_mask().astype(bool)[:, None, None, :], (B, 1, S, S)).copy()
    save(out, "onnx_attention_3d_mask", m, {"x": rng.standard_normal((B, S, D)).astype(np.float32),
                                            "attn_mask": mask})


def ms_mha_padding(out):
    nodes, inits = [], []
    q = proj("x", "q", NQ * HD, nodes, inits)
    k = proj("x", "k", NQ * HD, nodes, inits)
    v = proj("x", "v", NQ * HD, nodes, inits)
    nodes.append(h.make_node("Cast", ["attention_mask"], ["kpm"], to=T.INT32))
    nodes.append(h.make_node("MultiHeadAttention", [q, k, v, "", "kpm"], ["output"], domain="com.microsoft",
                             num_heads=NQ, unidirectional=1))
    g = h.make_graph(nodes, "g", [h.make_tensor_value_info("x", T.FLOAT, ["batch", "seq", D]),
                                  h.make_tensor_value_info("attention_mask", T.INT64, ["batch", "seq"])],
                     [h.make_tensor_value_info("output", T.FLOAT, ["batch", "seq", NQ * HD])], inits)
    m = h.make_model(g, opset_imports=[h.make_opsetid("", 17), h.make_opsetid("com.microsoft", 1)], ir_version=8)
    save(out, "ms_mha_padding", m, {"x": rng.standard_normal((B, S, D)).astype(np.float32),
                                    "attention_mask": padding_mask()})


def ms_gqa(out):
    nodes, inits = [], []
    q = proj("x", "q", NQ * HD, nodes, inits)
    k = proj("x", "k", NKV * HD, nodes, inits)
    v = proj("x", "v", NKV * HD, nodes, inits)
    nodes.append(h.make_node("GroupQueryAttention", [q, k, v, "", "", "seqlens_k", "total_sequence_length"],
                             ["output"], domain="com.microsoft", num_heads=NQ, kv_num_heads=NKV))
    g = h.make_graph(nodes, "g", [h.make_tensor_value_info("x", T.FLOAT, ["batch", "seq", D]),
                                  h.make_tensor_value_info("seqlens_k", T.INT32, ["batch"]),
                                  h.make_tensor_value_info("total_sequence_length", T.INT32, [])],
                     [h.make_tensor_value_info("output", T.FLOAT, ["batch", "seq", NQ * HD])], inits)
    m = h.make_model(g, opset_imports=[h.make_opsetid("", 17), h.make_opsetid("com.microsoft", 1)], ir_version=8)
    save(out, "ms_gqa", m, {"x": rng.standard_normal((B, S, D)).astype(np.float32),
                            "seqlens_k": np.full((B,), S - 1, np.int32),
                            "total_sequence_length": np.array(S, np.int32)})


def ms_attention_packed(out):
    # The packed form ONNX Runtime's transformer optimizer emits for BERT: projection weights inside the op.
    inits = [init("W_qkv", [D, 3 * NQ * HD]), init("b_qkv", [3 * NQ * HD], 0.1)]
    nodes = [h.make_node("Cast", ["attention_mask"], ["mask_index"], to=T.INT32),
             h.make_node("Attention", ["x", "W_qkv", "b_qkv", "mask_index"], ["output"], domain="com.microsoft",
                         num_heads=NQ)]
    g = h.make_graph(nodes, "g", [h.make_tensor_value_info("x", T.FLOAT, ["batch", "seq", D]),
                                  h.make_tensor_value_info("attention_mask", T.INT64, ["batch", "seq"])],
                     [h.make_tensor_value_info("output", T.FLOAT, ["batch", "seq", NQ * HD])], inits)
    m = h.make_model(g, opset_imports=[h.make_opsetid("", 17), h.make_opsetid("com.microsoft", 1)], ir_version=8)
    save(out, "ms_attention_packed", m, {"x": rng.standard_normal((B, S, D)).astype(np.float32),
                                         "attention_mask": padding_mask()})


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "synthetic"))
    a = ap.parse_args()
    os.makedirs(a.out, exist_ok=True)
    for f in (onnx_attention_gqa_causal, onnx_attention_3d_mask, ms_mha_padding, ms_gqa, ms_attention_packed):
        try:
            f(a.out)
        except Exception as e:  # keep going; report what failed
            print(f"FAILED {f.__name__}: {type(e).__name__}: {e}")


if __name__ == "__main__":
    main()
