#!/usr/bin/env python3
"""The SASS check before a kernel change spends device time (docs/GPU.md): per sm_90a / sm_100a entry point of
the built fatbin, its tensor-core and TMA instructions, local-memory traffic (LDL/STL) and the main-loop steps
(instruction, HGMMA and LDL/STL counts), from cuobjdump -sass.

  python3 scripts/sass.py [FATBIN_OR_LIB] [--kernels SUBSTRING] [--dump DIR]

The main loop: the innermost loops that issue HGMMA (a step each). The script fails if any of them touches local
memory. FATBIN_OR_LIB: the fatbin build.rs wrote (default: the newest under target/release/build), or a library with
it embedded (cut out at the fatbin magic). cuobjdump and nvdisasm come from their pinned pip packages, installed on
first use into .venv/sass-tools (no CUDA toolkit here).
"""
import argparse
import glob
import os
import re
import struct
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOOLS = os.environ.get('SASS_TOOLS', os.path.join(ROOT, '.venv', 'sass-tools'))
PINS = ["nvidia-cuda-cuobjdump==13.2.86", "nvidia-cuda-nvdisasm==13.2.86"]  # cuobjdump -sass runs nvdisasm
FATBIN_MAGIC = 0xBA55ED50


def cuobjdump():
    bin_dir = os.path.join(TOOLS, "nvidia", "cu13", "bin")
    if not all(os.path.exists(os.path.join(bin_dir, t)) for t in ("cuobjdump", "nvdisasm")):
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--upgrade", "--target", TOOLS, *PINS], check=True)
    return os.path.join(bin_dir, "cuobjdump")


def fatbin_path(arg):
    if arg is None:
        found = glob.glob(os.path.join(ROOT, "target", "release", "build", "flashattn-ort-*", "out", "flashattn_kernels.fatbin"))
        if not found:
            sys.exit("no fatbin under target/release/build: build with nvcc first (scripts/setup.sh, cargo build --release)")
        return max(found, key=os.path.getmtime)
    data = open(arg, "rb").read()
    if struct.unpack_from("<I", data, 0)[0] == FATBIN_MAGIC:
        return arg
    at = data.find(struct.pack("<I", FATBIN_MAGIC))
    if at < 0:
        sys.exit(f"{arg}: no embedded fatbin (a CPU-only build?)")
    size = struct.unpack_from("<Q", data, at + 8)[0]
    out = tempfile.NamedTemporaryFile(suffix=".fatbin", delete=False)
    out.write(data[at : at + 16 + size])
    out.close()
    return out.name


def functions(sass):
    """(arch, name, lines) per function of cuobjdump -sass output."""
    arch, name, lines = None, None, []
    for line in sass.splitlines():
        m = re.match(r"\s*arch = (sm_\w+)", line)
        if m:
            arch = m.group(1)
        m = re.match(r"\s*Function : (\S+)", line)
        if m:
            if name:
                yield arch, name, lines
            name, lines = m.group(1), []
            continue
        if name and re.match(r"\s*/\*[0-9a-f]{4,}\*/", line):
            lines.append(line)
    if name:
        yield arch, name, lines


def hgmma_loops(lines):
    """The main-loop steps: loops (backward branches) whose body issues HGMMA and holds no smaller such loop, at
    most twice the smallest's size. (instructions, HGMMA, LDL/STL) per loop."""
    addr = []
    for line in lines:
        m = re.match(r"\s*/\*([0-9a-f]+)\*/\s*(.*)", line)
        addr.append((int(m.group(1), 16), m.group(2)))
    index = {a: i for i, (a, _) in enumerate(addr)}
    spans = []
    for i, (a, text) in enumerate(addr):
        m = re.search(r"BRA[^;]*?0x([0-9a-f]+)", text)
        if m and int(m.group(1), 16) < a and int(m.group(1), 16) in index:
            first = index[int(m.group(1), 16)]
            if any("HGMMA" in t for _, t in addr[first : i + 1]):
                spans.append((first, i))
    inner = [(b, e) for b, e in spans if not any(b <= b2 and e2 <= e and (b2, e2) != (b, e) for b2, e2 in spans)]
    # Out-of-line slow paths (an mbarrier wait's retry) branch back across half the kernel; a step is at most
    # twice the smallest loop.
    if inner:
        smallest = min(e - b for b, e in inner)
        inner = [(b, e) for b, e in inner if e - b <= 2 * smallest]
    loops = []
    for b, e in sorted(set(inner)):
        body = [t for _, t in addr[b : e + 1]]
        loops.append((len(body), sum("HGMMA" in t for t in body), sum(bool(re.search(r"\b(LDL|STL)\b", t)) for t in body)))
    return loops


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("fatbin", nargs="?")
    ap.add_argument("--kernels", default="flash_fwd_sm90", help="substring of the entry points to report")
    ap.add_argument("--dump", help="write each reported function's SASS to DIR/NAME.sass")
    a = ap.parse_args()
    sass = subprocess.run([cuobjdump(), "-sass", fatbin_path(a.fatbin)], check=True, capture_output=True, text=True).stdout
    bad = 0
    for arch, name, lines in functions(sass):
        if a.kernels not in name or arch not in ("sm_90a", "sm_100a") or len(lines) < 64:
            continue  # (another target's stub of an arch-specific kernel: a trap)
        count = lambda pat: sum(bool(re.search(pat, l)) for l in lines)
        local = count(r"\b(LDL|STL)\b")
        loops = hgmma_loops(lines) if arch == "sm_90a" else []
        loop_local = sum(l[2] for l in loops)
        bad += loop_local > 0
        utc = count(r"UTC\w*MMA")
        print(f"{name} [{arch}] {len(lines)} instr, HGMMA {count('HGMMA')}, UTMALDG {count('UTMALDG')}, "
              f"UTMASTG {count('UTMASTG')}, UTC*MMA {utc}, LDL/STL {local} ({loop_local} in the main loop); "
              f"main-loop steps (instr/HGMMA/local) {loops}")
        if a.dump:
            os.makedirs(a.dump, exist_ok=True)
            open(os.path.join(a.dump, name + ".sass"), "w").write("\n".join(lines) + "\n")
    if bad:
        sys.exit(f"{bad} entry points with local-memory traffic in their main loop")


if __name__ == "__main__":
    main()
