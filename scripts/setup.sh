#!/usr/bin/env bash
# Provision the project-local toolchain in .venv (gitignored), pinned, from PyPI only.
# Idempotent: a stamp file records the pinned set; a second run with the same pins returns at once.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
venv="$root/.venv"
pins=(
  onnxruntime==1.31.1
  numpy==2.3.5
  onnx==1.19.1
  nvidia-cuda-nvcc==13.0.88
  nvidia-nvvm==13.0.88
  nvidia-cuda-crt==13.0.88
  "nvidia-cuda-runtime==13.0.*"
  "nvidia-cuda-cccl==13.0.*"
  nvidia-cutlass==4.2.0.0
)
stamp="$venv/.flashattn-pins"
want=$(printf '%s\n' "${pins[@]}")
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then exit 0; fi
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
"$venv/bin/python" -m pip install -q --disable-pip-version-check "${pins[@]}"
printf '%s\n' "$want" > "$stamp"
