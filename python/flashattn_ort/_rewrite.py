import json
import os
import subprocess
import tempfile
from pathlib import Path
from typing import Any, Dict, Optional, Union

from ._cli import cli_path
from ._library import get_library_path
from ._onnxruntime import onnxruntime_library

PROTOBUF_LIMIT = 2**31 - 1


class RewriteError(RuntimeError):
    """`flashattn-ort rewrite` failed: bad input (returncode 2, `report` None) or, with verify, outputs
    beyond tolerance (returncode 1, `report` holds the verification; the output was written)."""

    def __init__(self, message: str, returncode: int, report: Optional[Dict[str, Any]] = None):
        super().__init__(message)
        self.returncode = returncode
        self.report = report


def rewrite(input: Union[str, os.PathLike, "onnx.ModelProto"], output: Union[str, os.PathLike], verify: bool = False,
            fuse_rmsnorm: bool = False) -> Dict[str, Any]:
    """Fuses the attention of `input` (a path, or an `onnx.ModelProto`) into ai.flashattn::FlashAttention
    and writes `output`; `verify` also runs both models in ONNX Runtime and compares them; `fuse_rmsnorm` also
    replaces written-out RMSNorms by one normalization node each (`--fuse-rmsnorm`). Returns what
    `flashattn-ort rewrite --json` prints. Runs the CLI: the rewriter is the Rust one, not a copy."""
    if isinstance(input, (str, os.PathLike)):
        return _run_cli(Path(input), Path(output), verify, fuse_rmsnorm)
    with tempfile.TemporaryDirectory(prefix="flashattn-ort-") as tmp:
        path = Path(tmp) / "input.onnx"
        _save(input, path)
        return _run_cli(path, Path(output), verify, fuse_rmsnorm)


def _save(model, path: Path) -> None:
    import onnx

    large = model.ByteSize() > PROTOBUF_LIMIT
    onnx.save_model(model, str(path), save_as_external_data=large, location=path.name + ".data" if large else None)


def _run_cli(input: Path, output: Path, verify: bool, fuse_rmsnorm: bool) -> Dict[str, Any]:
    args = [cli_path(), "rewrite", str(input), "-o", str(output), "--json", "--library", get_library_path()]
    if fuse_rmsnorm:
        args.append("--fuse-rmsnorm")
    env = dict(os.environ)
    if verify:
        args.append("--verify")
        ort = onnxruntime_library()
        if ort and not env.get("ORT_DYLIB_PATH"):
            env["ORT_DYLIB_PATH"] = ort
    done = subprocess.run(args, capture_output=True, text=True, env=env)
    report = json.loads(done.stdout) if done.stdout.strip().startswith("{") else None
    if done.returncode != 0:
        reason = done.stderr.strip() or "verification beyond tolerance"
        raise RewriteError(f"flashattn-ort rewrite {input}: {reason}", done.returncode, report)
    return report
