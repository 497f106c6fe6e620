#!/usr/bin/env bash
# Provisions the project-local toolchain in .venv (gitignored), pinned, from PyPI only:
#   - ONNX Runtime 1.31.1 (its libonnxruntime.so serves the Rust side through `ort`, the Python
#     package serves the Python tests), onnx and numpy for building test models, pytest;
#   - ONNX Runtime 1.17.3 + numpy 1.26.4 in .venv/ort-1.17, the oldest runtime we support (tests);
#   - nvcc 13.0.88 and the CUTLASS/CuTe headers, with which build.rs compiles the CUDA kernels;
#   - maturin, which builds the Python wheel (scripts/wheel.sh), and auditwheel, which checks it;
#   - tritonclient, without its dependencies, in .venv/tritonclient: Triton's compiled model_config.proto,
#     against which a test checks docs/USAGE.md's config.pbtxt.
# Idempotent: a stamp records the pinned set; a second run with the same pins returns at once.
# .venv/ort-1.17 and .venv/tritonclient are rebuilt only when their own pins are not the ones installed there.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
venv="$root/.venv"
pins=(
  onnxruntime==1.31.1
  numpy==2.3.5
  onnx==1.19.1
  ml_dtypes==0.6.0
  pytest==8.4.2
  nvidia-cuda-nvcc==13.0.88
  nvidia-nvvm==13.0.88
  nvidia-cuda-crt==13.0.88
  "nvidia-cuda-runtime==13.0.*"
  "nvidia-cuda-cccl==13.0.*"
  nvidia-cutlass==4.2.0.0
  maturin==1.16.0
  auditwheel==6.8.2
)
oldest=(onnxruntime==1.17.3 numpy==1.26.4)
triton=(tritonclient==2.73.0)
stamp="$venv/.flashattn-pins"
want=$(printf '%s\n' "${pins[@]}")
installed_in() {  # DIR PIN...: every pin's dist-info is in DIR
  local dir=$1 pin
  shift
  for pin; do [ -d "$dir/${pin/==/-}.dist-info" ] || return 1; done
}
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && installed_in "$venv/ort-1.17" "${oldest[@]}" &&
  installed_in "$venv/tritonclient" "${triton[@]}"; then
  exit 0
fi
echo "setup: installing the pinned toolchain into $venv" >&2
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
"$venv/bin/python" -m pip install -q --disable-pip-version-check "${pins[@]}"
if ! installed_in "$venv/ort-1.17" "${oldest[@]}"; then
  rm -rf "$venv/ort-1.17"
  "$venv/bin/python" -m pip install -q --disable-pip-version-check --no-deps --target "$venv/ort-1.17" "${oldest[@]}"
fi
if ! installed_in "$venv/tritonclient" "${triton[@]}"; then
  rm -rf "$venv/tritonclient"
  "$venv/bin/python" -m pip install -q --disable-pip-version-check --no-deps --target "$venv/tritonclient" "${triton[@]}"
fi
printf '%s\n' "$want" > "$stamp"
