"""FlashAttention for ONNX Runtime: the `ai.flashattn::FlashAttention` custom-op library and its graph rewriter.

    import onnxruntime as ort, flashattn_ort
    flashattn_ort.rewrite("model.onnx", "model.flash.onnx")
    so = ort.SessionOptions()
    so.register_custom_ops_library(flashattn_ort.get_library_path())
    sess = ort.InferenceSession("model.flash.onnx", so)
"""
from importlib.metadata import version as _version

from ._cli import cli_path
from ._library import get_library_path
from ._rewrite import RewriteError, rewrite

__version__ = _version("flashattn_ort")
__all__ = ["__version__", "cli_path", "get_library_path", "rewrite", "RewriteError"]
