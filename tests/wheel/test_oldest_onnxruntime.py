"""The wheel's library in the oldest ONNX Runtime it supports (1.17.3, from scripts/setup.sh's
.venv/ort-1.17, run in a child interpreter) computes what it computes in the environment's 1.31.1."""
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import onnxruntime as ort
from onnx import TensorProto, helper

import flashattn_ort

OLD_ORT = Path(__file__).resolve().parents[2] / ".venv" / "ort-1.17"

CHILD = textwrap.dedent("""
    import sys
    sys.path.insert(0, sys.argv[1])
    import numpy as np, onnxruntime as ort, flashattn_ort
    assert ort.__version__ == "1.17.3", ort.__version__
    so = ort.SessionOptions()
    so.register_custom_ops_library(flashattn_ort.get_library_path())
    s = ort.InferenceSession(sys.argv[2], so, providers=["CPUExecutionProvider"])
    np.save(sys.argv[4], s.run(None, dict(np.load(sys.argv[3])))[0])
""")


def causal_gqa_model(path):
    q = helper.make_tensor_value_info("query", TensorProto.FLOAT, [1, 16, 4, 32])
    kv = [helper.make_tensor_value_info(n, TensorProto.FLOAT, [1, 16, 2, 32]) for n in ("key", "value")]
    node = helper.make_node("FlashAttention", ["query", "key", "value"], ["output"], domain="ai.flashattn", causal=1)
    graph = helper.make_graph([node], "g", [q, *kv], [helper.make_empty_tensor_value_info("output")])
    opsets = [helper.make_opsetid("", 17), helper.make_opsetid("ai.flashattn", 1)]
    path.write_bytes(helper.make_model(graph, opset_imports=opsets, ir_version=8).SerializeToString())


def test_the_library_runs_in_onnxruntime_1_17(tmp_path):
    assert (OLD_ORT / "onnxruntime").is_dir(), "scripts/setup.sh installs ORT 1.17.3 into .venv/ort-1.17"
    model, feeds, out = tmp_path / "fa.onnx", tmp_path / "in.npz", tmp_path / "out.npy"
    causal_gqa_model(model)
    rng = np.random.default_rng(0)
    inputs = {n: rng.standard_normal(s).astype(np.float32) for n, s in (("query", (1, 16, 4, 32)), ("key", (1, 16, 2, 32)), ("value", (1, 16, 2, 32)))}
    np.savez(feeds, **inputs)
    done = subprocess.run([sys.executable, "-c", CHILD, str(OLD_ORT), str(model), str(feeds), str(out)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    so = ort.SessionOptions()
    so.register_custom_ops_library(flashattn_ort.get_library_path())
    current = ort.InferenceSession(str(model), so, providers=["CPUExecutionProvider"]).run(None, inputs)[0]
    np.testing.assert_allclose(np.load(out), current, atol=1e-6, rtol=1e-6)
    assert np.isfinite(current).all() and np.abs(current).max() > 0
