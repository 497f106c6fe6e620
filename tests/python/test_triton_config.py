"""docs/USAGE.md's Triton `config.pbtxt` is a valid Triton ModelConfig (parsed with Triton's own compiled
model_config.proto, from tritonclient in .venv/tritonclient, made by scripts/setup.sh) that names our
library in `model_operations` and describes the bundled model it names once rewritten: inputs and outputs
by name, type and shape."""
import importlib.util
import re
import subprocess

import onnx
from google.protobuf import text_format
from onnx import TensorProto

from test_op import LIB, ROOT

MODEL_CONFIG_PB2 = ROOT / ".venv" / "tritonclient" / "tritonclient" / "grpc" / "model_config_pb2.py"
USAGE = ROOT / "docs" / "USAGE.md"
MODEL = ROOT / "models" / "exported" / "llama_sdpa_dynamo.onnx"
TRITON_TYPES = {TensorProto.INT64: "TYPE_INT64", TensorProto.FLOAT: "TYPE_FP32", TensorProto.FLOAT16: "TYPE_FP16"}


def triton_model_config():
    assert MODEL_CONFIG_PB2.is_file(), "scripts/setup.sh installs tritonclient into .venv/tritonclient"
    spec = importlib.util.spec_from_file_location("model_config_pb2", MODEL_CONFIG_PB2)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def usage_config(pb2):
    block = re.search(r"```text\n(.*?)```", USAGE.read_text(), re.S).group(1)
    return text_format.Parse(block, pb2.ModelConfig())


def declared(value_info):
    dims = [d.dim_value if d.HasField("dim_value") else -1 for d in value_info.type.tensor_type.shape.dim]
    return value_info.name, TRITON_TYPES[value_info.type.tensor_type.elem_type], dims


def test_usage_config_pbtxt_serves_the_rewritten_bundled_model(tmp_path):
    pb2 = triton_model_config()
    config = usage_config(pb2)
    assert config.backend == "onnxruntime"
    assert [p.rsplit("/", 1)[-1] for p in config.model_operations.op_library_filename] == ["libflashattn_ort.so"]
    assert "models/exported/llama_sdpa_dynamo.onnx" in USAGE.read_text()
    out = tmp_path / "model.onnx"
    cli = ROOT / "target" / "release" / "flashattn-ort"
    done = subprocess.run([str(cli), "rewrite", str(MODEL), "-o", str(out), "--library", LIB], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    model = onnx.load(str(out))
    assert any(n.domain == "ai.flashattn" for n in model.graph.node)
    config_io = [(t.name, pb2.DataType.Name(t.data_type), list(t.dims)) for t in [*config.input, *config.output]]
    model_io = [declared(v) for v in [*model.graph.input, *model.graph.output]]
    assert config_io == model_io
