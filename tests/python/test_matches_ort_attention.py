"""Our op against ONNX Runtime's own standard `Attention` (opset 23) on the same inputs: the order of
softcap and additive mask, and causal masking where both alignments agree (seq_q = seq_kv)."""
import numpy as np
import onnxruntime as ort
from onnx import TensorProto, helper

from test_op import LIB, SEED


def run(op, domain, opset, inputs, attrs):
    names = list(inputs)
    node = helper.make_node(op, names, ["y"], domain=domain, **attrs)
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info(n, TensorProto.FLOAT, a.shape) for n, a in inputs.items()],
                              [helper.make_empty_tensor_value_info("y")])
    opsets = [helper.make_opsetid("", opset)] + ([helper.make_opsetid(domain, 1)] if domain else [])
    model = helper.make_model(graph, opset_imports=opsets, ir_version=10)
    so = ort.SessionOptions()
    so.register_custom_ops_library(LIB)
    return ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"]).run(None, inputs)[0]


def test_softcap_then_additive_mask_like_onnx_attention():
    rng = np.random.default_rng(SEED)
    q, k, v = (rng.standard_normal((2, 4, 7, 16)).astype(np.float32) * 3 for _ in range(3))
    mask = rng.uniform(-3, 3, (7, 7)).astype(np.float32)
    theirs = run("Attention", "", 23, {"Q": q, "K": k, "V": v, "M": mask}, {"softcap": 2.0})
    ours = run("FlashAttention", "ai.flashattn", 17, {"query": q, "key": k, "value": v, "attn_mask": mask}, {"softcap": 2.0, "layout": "BNSH"})
    assert np.abs(ours - theirs).max() < 1e-5


def test_causal_like_onnx_attention_when_lengths_match():
    rng = np.random.default_rng(SEED)
    q, k, v = (rng.standard_normal((1, 2, 9, 8)).astype(np.float32) for _ in range(3))
    theirs = run("Attention", "", 23, {"Q": q, "K": k, "V": v}, {"is_causal": 1})
    ours = run("FlashAttention", "ai.flashattn", 17, {"query": q, "key": k, "value": v}, {"causal": 1, "layout": "BNSH"})
    assert np.abs(ours - theirs).max() < 1e-5
