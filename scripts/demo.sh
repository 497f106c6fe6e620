#!/usr/bin/env bash
# The README's demo command: provisions, builds, and runs the demo.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
bash scripts/setup.sh
cargo build --release --locked
./target/release/flashattn-ort demo "$@"
