#!/usr/bin/env bash
# The README's test command: provisions the pinned toolchain, builds, runs every CPU test
# (Rust unit + integration tests, Python tests against the built library). GPU tests run on a GPU
# machine through scripts/gpu/run.sh (docs/GPU.md).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
bash scripts/setup.sh
cargo build --release --locked
cargo test --release --locked
FLASHATTN_ORT_LIB="$root/target/release/libflashattn_ort.so" .venv/bin/python -m pytest -q tests/python
