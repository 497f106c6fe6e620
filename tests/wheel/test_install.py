"""The installed wheel, as a new user meets it: the package imports from site-packages, its library
registers with ONNX Runtime and carries the CUDA kernels, and the `flashattn-ort` executable is on PATH."""
import os
import re
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import flashattn_ort

ROOT = Path(__file__).resolve().parents[2]
SITE_PACKAGES = Path(sysconfig.get_paths()["platlib"]).resolve()
FATBIN_MAGIC = (0xBA55ED50).to_bytes(4, "little")


def test_the_package_is_the_installed_wheel_not_the_source_tree():
    assert Path(flashattn_ort.__file__).resolve().is_relative_to(SITE_PACKAGES)


def test_version_is_the_crate_version():
    cargo = (ROOT / "Cargo.toml").read_text()
    assert flashattn_ort.__version__ == re.search(r'^version = "(.+)"', cargo, re.M).group(1)


def test_a_new_user_registers_the_library():
    code = "import flashattn_ort, onnxruntime as ort; so = ort.SessionOptions(); so.register_custom_ops_library(flashattn_ort.get_library_path())"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_the_library_lies_in_the_package_and_embeds_the_cuda_kernels():
    lib = Path(flashattn_ort.get_library_path())
    assert lib.parent == Path(flashattn_ort.__file__).resolve().parent
    if os.environ.get("FLASHATTN_NO_KERNELS", "0") == "0":
        assert FATBIN_MAGIC in lib.read_bytes(), "no CUDA fatbin in the library"


def test_the_cli_is_on_path():
    exe = shutil.which("flashattn-ort")
    assert exe is not None
    assert Path(exe).resolve() == Path(flashattn_ort.cli_path())
    done = subprocess.run(["flashattn-ort", "--help"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "rewrite" in done.stdout


def test_the_cli_finds_the_environments_onnxruntime_and_the_packages_library():
    env = {k: v for k, v in os.environ.items() if k not in ("ORT_DYLIB_PATH", "FLASHATTN_ORT_LIB")}
    done = subprocess.run(["flashattn-ort", "info"], capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr
    ort_line = next(l for l in done.stdout.splitlines() if l.startswith("ONNX Runtime:"))
    lib_line = next(l for l in done.stdout.splitlines() if l.startswith("custom-op library:"))
    assert str(SITE_PACKAGES / "onnxruntime" / "capi") in ort_line, ort_line
    assert "(1.31.1)" in ort_line, ort_line
    assert flashattn_ort.get_library_path() in lib_line, lib_line
