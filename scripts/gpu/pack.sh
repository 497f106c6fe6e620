#!/usr/bin/env bash
# Here (the build machine): put what a GPU run needs into .gpu/ (git-ignored via .git/info/exclude):
# the stripped library and CLI, the Rust CUDA EP test, and optionally one staged wheel part.
#   usage: scripts/gpu/pack.sh [PART_DIR]
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
exclude=$(cd "$root" && git rev-parse --git-path info/exclude)  # also right in a git worktree
case "$exclude" in /*) ;; *) exclude="$root/$exclude" ;; esac
mkdir -p "$(dirname "$exclude")"
grep -qx '/.gpu/' "$exclude" 2>/dev/null || echo '/.gpu/' >> "$exclude"
rm -rf "$root/.gpu" && mkdir -p "$root/.gpu/stage"
# The Rust CUDA EP test (tests/gpu_ort.rs), run there by `run.sh rust-ort`.
exe=$(cd "$root" && cargo test --release --test gpu_ort --no-run --message-format=json 2>/dev/null |
  python3 -c "import json,sys; print([j['executable'] for j in map(json.loads, sys.stdin) if j.get('executable') and j['target']['name'] == 'gpu_ort'][-1])")
objcopy --strip-debug "$exe" "$root/.gpu/gpu_ort"
objcopy --strip-debug "$root/target/release/libflashattn_ort.so" "$root/.gpu/libflashattn_ort.so"
# The CLI rewrites the end-to-end benchmark's exports there (`run.sh e2e`).
objcopy --strip-all "$root/target/release/flashattn-ort" "$root/.gpu/flashattn-ort"
# The float16 KV-cache decoders rewritten here (no Rust there), for kv_cuda.py's generation check.
mkdir -p "$root/.gpu/kv"
for m in "$root"/models/kv/*_fp16.onnx; do
  "$root/target/release/flashattn-ort" rewrite "$m" -o "$root/.gpu/kv/$(basename "${m%.onnx}").flash.onnx" >/dev/null
done

if [ -n "${1:-}" ]; then cp "$1"/* "$root/.gpu/stage/"; fi
du -sh "$root/.gpu"
