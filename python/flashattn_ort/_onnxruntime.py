import importlib.util
from pathlib import Path
from typing import Optional


def onnxruntime_library() -> Optional[str]:
    """libonnxruntime.so of the `onnxruntime` package this interpreter imports (without importing it)."""
    spec = importlib.util.find_spec("onnxruntime")
    if spec is None or not spec.submodule_search_locations:
        return None
    for package in spec.submodule_search_locations:
        libs = sorted((Path(package) / "capi").glob("libonnxruntime.so*"))
        if libs:
            return str(libs[-1])
    return None
