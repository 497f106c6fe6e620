"""The library loads into the oldest ONNX Runtime we support (1.17, ORT C API 17) and computes the
op correctly there. ORT 1.17.3 and a numpy it was built against live in .venv/ort-1.17 (made by
scripts/setup.sh); they run in a child interpreter so they never mix with the main environment."""
import os
import pathlib
import subprocess
import sys
import textwrap

import numpy as np
from onnx import TensorProto, helper

from test_op import LIB, ROOT, SEED, reference

OLD_ORT = ROOT / ".venv" / "ort-1.17"

CHILD = textwrap.dedent("""
    import sys
    sys.path.insert(0, sys.argv[1])
    import numpy as np, onnxruntime as ort
    assert ort.__version__ == "1.17.3", ort.__version__
    so = ort.SessionOptions()
    so.register_custom_ops_library(sys.argv[2])
    s = ort.InferenceSession(sys.argv[3], so, providers=["CPUExecutionProvider"])
    feeds = dict(np.load(sys.argv[4]))
    out, lse = s.run(None, feeds)
    np.savez(sys.argv[5], out=out, lse=lse)
""")


def test_op_runs_in_onnxruntime_1_17(tmp_path):
    assert (OLD_ORT / "onnxruntime").is_dir(), "run scripts/setup.sh: it installs ORT 1.17.3 into .venv/ort-1.17"
    rng = np.random.default_rng(SEED)
    B, S, N, NKV, D = 2, 37, 4, 2, 32
    q = rng.standard_normal((B, S, N, D)).astype(np.float16)
    k = rng.standard_normal((B, S, NKV, D)).astype(np.float16)
    v = rng.standard_normal((B, S, NKV, D)).astype(np.float16)
    lens = np.array([37, 11], np.int32)
    mask = rng.random((B, 1, S, S)) > 0.2
    # ORT < 1.24 crashes in its own shape inference on a skipped ("") optional input of a custom op,
    # so this node passes every input (README, "Supported ONNX Runtime versions").
    node = helper.make_node("FlashAttention", ["query", "key", "value", "attn_mask", "key_seqlens"], ["output", "softmax_lse"], domain="ai.flashattn", causal=1)
    vi = lambda n, t, s: helper.make_tensor_value_info(n, t, s)
    graph = helper.make_graph([node], "g", [vi("query", TensorProto.FLOAT16, q.shape), vi("key", TensorProto.FLOAT16, k.shape), vi("value", TensorProto.FLOAT16, v.shape), vi("attn_mask", TensorProto.BOOL, mask.shape), vi("key_seqlens", TensorProto.INT32, lens.shape)],
                              [helper.make_empty_tensor_value_info("output"), helper.make_empty_tensor_value_info("softmax_lse")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("ai.flashattn", 1)], ir_version=8)
    (tmp_path / "m.onnx").write_bytes(model.SerializeToString())
    np.savez(tmp_path / "in.npz", query=q, key=k, value=v, attn_mask=mask, key_seqlens=lens)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    subprocess.run([sys.executable, "-I", "-c", CHILD, str(OLD_ORT), LIB, str(tmp_path / "m.onnx"), str(tmp_path / "in.npz"), str(tmp_path / "out.npz")], check=True, env=env)
    got = np.load(tmp_path / "out.npz")
    t = lambda x: x.astype(np.float64).transpose(0, 2, 1, 3)
    want, want_lse = reference(t(q), t(k), t(v), scale=1 / np.sqrt(D), bool_mask=mask, causal=True, seqlens=lens)
    err = np.abs(t(got["out"]) - want)
    assert (err <= 1e-4 + 1e-3 * np.abs(want)).all(), f"seed {SEED}: max err {err.max()}"
    lse = got["lse"]
    assert np.array_equal(np.isneginf(lse), np.isneginf(want_lse)), "rows without a visible key must have lse = -inf"
    fin = np.isfinite(want_lse)
    assert np.abs(lse[fin] - want_lse[fin]).max() < 1e-3
