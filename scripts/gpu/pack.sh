#!/usr/bin/env bash
# Here (the build machine): put what a GPU run needs into .gpu/ (git-ignored via .git/info/exclude):
# the stripped library, and optionally one staged wheel part.   usage: scripts/gpu/pack.sh [PART_DIR]
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
grep -qx '/.gpu/' "$root/.git/info/exclude" || echo '/.gpu/' >> "$root/.git/info/exclude"
rm -rf "$root/.gpu" && mkdir -p "$root/.gpu/stage"
objcopy --strip-debug "$root/target/release/libflashattn_ort.so" "$root/.gpu/libflashattn_ort.so"
if [ -n "${1:-}" ]; then cp "$1"/* "$root/.gpu/stage/"; fi
du -sh "$root/.gpu"
