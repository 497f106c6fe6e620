#!/usr/bin/env bash
# The README's test command: provisions the pinned toolchain, builds, runs every CPU test
# (Rust unit + integration tests, Python tests against the built library), then builds the wheel,
# installs it into a fresh virtual environment as a new user would and runs the wheel's tests through
# it. GPU tests run on a GPU machine through scripts/gpu/run.sh (docs/GPU.md).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
bash scripts/setup.sh
cargo build --release --locked
cargo test --release --locked
FLASHATTN_ORT_LIB="$root/target/release/libflashattn_ort.so" .venv/bin/python -m pytest -q tests/python
bash scripts/wheel.sh
fresh="$root/.venv-wheel"
rm -rf "$fresh"
python3 -m venv "$fresh"
"$fresh/bin/python" -m pip install -q --disable-pip-version-check target/wheels/flashattn_ort-*.whl -r tests/wheel/requirements.txt
(unset ORT_DYLIB_PATH FLASHATTN_ORT_LIB; PATH="$fresh/bin:$PATH" "$fresh/bin/python" -m pytest -q tests/wheel)
