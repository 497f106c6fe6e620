"""flashattn_ort.rewrite() from Python on a bundled export, on a path and on an onnx.ModelProto, and the
rewritten model run through ONNX Runtime with the library from get_library_path()."""
import os
import subprocess
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

import flashattn_ort

MODEL = Path(__file__).resolve().parents[2] / "models" / "exported" / "llama_sdpa_dynamo.onnx"
IO = MODEL.with_suffix(".npz")
# The rewritten model against the original and against PyTorch's output (float32 end to end).
ATOL, RTOL = 1e-4, 1e-4


def run(path):
    so = ort.SessionOptions()
    so.register_custom_ops_library(flashattn_ort.get_library_path())
    sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    io = np.load(IO)
    feeds = {i.name: io[i.name] for i in sess.get_inputs()}
    return sess.run(None, feeds)[0]


def fused_nodes(path):
    return sum(n.domain == "ai.flashattn" for n in onnx.load(str(path)).graph.node)


def test_rewrite_a_path_then_run_it_with_the_library(tmp_path):
    out = tmp_path / "llama.flash.onnx"
    report = flashattn_ort.rewrite(MODEL, out)
    assert len(report["report"]["fused"]) > 0
    assert fused_nodes(out) == len(report["report"]["fused"])
    assert not any(n.op_type == "Softmax" for n in onnx.load(str(out)).graph.node)
    original, rewritten = run(MODEL), run(out)
    np.testing.assert_allclose(rewritten, original, atol=ATOL, rtol=RTOL)
    np.testing.assert_allclose(rewritten, np.load(IO)["ref:output"], atol=ATOL, rtol=RTOL)


def test_rewrite_a_model_proto(tmp_path):
    out = tmp_path / "from_proto.onnx"
    report = flashattn_ort.rewrite(onnx.load(str(MODEL)), str(out))
    assert len(report["report"]["fused"]) > 0
    assert fused_nodes(out) == len(report["report"]["fused"])
    np.testing.assert_allclose(run(out), run(MODEL), atol=ATOL, rtol=RTOL)


def test_rewrite_with_verify(tmp_path):
    report = flashattn_ort.rewrite(MODEL, tmp_path / "verified.onnx", verify=True)
    assert report["verify"]["passed"]
    assert report["verify"]["fused_nodes"] > 0


def test_rewrite_with_fused_rmsnorm(tmp_path):
    out = tmp_path / "llama.norms.onnx"
    report = flashattn_ort.rewrite(MODEL, out, fuse_rmsnorm=True)
    assert report["report"]["rmsnorms_fused"] == 5
    assert sum(n.op_type == "SimplifiedLayerNormalization" for n in onnx.load(str(out)).graph.node) == 5
    np.testing.assert_allclose(run(out), run(MODEL), atol=ATOL, rtol=RTOL)


def test_bad_input_raises_with_the_clis_message(tmp_path):
    with pytest.raises(flashattn_ort.RewriteError) as e:
        flashattn_ort.rewrite(tmp_path / "missing.onnx", tmp_path / "out.onnx")
    assert e.value.returncode == 2
    assert "missing.onnx" in str(e.value)
    assert not (tmp_path / "out.onnx").exists()


def test_the_console_script_rewrites_and_verifies(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("ORT_DYLIB_PATH", "FLASHATTN_ORT_LIB")}
    out = tmp_path / "cli.onnx"
    done = subprocess.run(["flashattn-ort", "rewrite", str(MODEL), "-o", str(out), "--verify"], capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "PASSED" in done.stdout
    assert fused_nodes(out) > 0
