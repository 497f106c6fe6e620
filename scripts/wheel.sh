#!/usr/bin/env bash
# Builds the Python wheel into target/wheels/ from the release build, compiling nothing twice: the
# custom-op library from `cargo build --release` is staged, stripped (debug info, local symbols), into
# python/flashattn_ort/ (gitignored); maturin (`bin` bindings, pyproject.toml) re-links only the
# `flashattn-ort` executable, stripped, in the same target dir and profile, and packs both. maturin checks
# the executable against the manylinux policies and tags the wheel; auditwheel then checks every ELF file
# in it, the library included, and the tag must promise no older glibc than they need.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
bash scripts/setup.sh
cargo build --release --locked
strip --strip-unneeded -o python/flashattn_ort/libflashattn_ort.so target/release/libflashattn_ort.so
rm -f target/wheels/flashattn_ort-*.whl
.venv/bin/maturin build --release --locked --out target/wheels
wheel=$(ls target/wheels/flashattn_ort-*.whl)
audit=$(.venv/bin/auditwheel show "$wheel" | tr -s ' \n' ' ')
echo "$audit"
# The glibc the wheel's tag promises must cover what every ELF file in it needs.
needs=$(sed -n 's/.*consistent with the following platform tag: "manylinux_2_\([0-9]*\)_x86_64".*/\1/p' <<<"$audit")
tagged=$(sed -n 's/.*-manylinux_2_\([0-9]*\)_x86_64\.whl$/\1/p' <<<"$wheel")
if [ -z "$needs" ] || [ -z "$tagged" ] || [ "$tagged" -lt "$needs" ]; then
  echo "wheel.sh: $wheel is tagged for glibc 2.${tagged:-?} but its ELF files need manylinux_2_${needs:-?}" >&2
  exit 1
fi
echo "wheel: $wheel ($(du -h "$wheel" | cut -f1))"
