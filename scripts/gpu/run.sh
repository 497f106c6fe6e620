#!/usr/bin/env bash
# The GPU test and benchmark loop, run ON the GPU machine (see docs/GPU.md). No Rust there: the library is
# built here and carried in .gpu/ (scripts/gpu/pack.sh), with staged wheel parts.
#
#   bash scripts/gpu/run.sh stage [DIR...]     # copy this call's wheel parts (.gpu/stage/*, or DIRs) to /tmp/fa-stage
#   bash scripts/gpu/run.sh [STEPS...]         # steps: numerics sanitize ort rust-ort bench bench-quick bench-prefill bench-gqa bench-keypad bench-decode decode-probe cluster-sweep split-sweep memset-cost e2e e2e-profile e2e-memcheck gen-bench kv-sanitize profile profile-vs queue-trace host-cost sustain profile-source profile-decode profile-decode-source selfcheck
#                                              # (default: numerics sanitize ort rust-ort bench)
#
# Logs and the benchmark table go to $OUT (or /tmp/fa-out). Exit status: nonzero if any step failed.
set -uo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
lib=${FA_LIB:-$root/.gpu/libflashattn_ort.so}
out=${OUT:-/tmp/fa-out}
stage=/tmp/fa-stage
mkdir -p "$out" "$stage"
export PYTHONUNBUFFERED=1

if [ "${1:-}" = stage ]; then
  shift
  dirs=("$@"); [ ${#dirs[@]} -eq 0 ] && dirs=("$root/.gpu/stage")
  for d in "${dirs[@]}"; do cp -r "$d"/. "$stage"/; done
  ls "$stage" | wc -l | xargs echo "staged files now:"
  exit 0
fi

steps=("$@")
[ ${#steps[@]} -eq 0 ] && steps=(numerics sanitize ort rust-ort bench)

# Reassemble and install whatever wheels have been staged (onnxruntime-gpu, flash-attn-4).
# Only once every part is there: FA_INSTALL=1 on the call after the last part arrived.
if [ "${FA_INSTALL:-0}" = 1 ] && ls "$stage"/*.whl* >/dev/null 2>&1; then
  (cd "$stage" && for f in *.part0; do [ -e "$f" ] || continue; b=${f%.part0}; cat "$b".part* > "$b" && rm "$b".part*; done)
  mkdir -p /tmp/site; touch /tmp/site/.installed
  new=(); for w in "$stage"/*.whl; do grep -qxF "$(basename "$w")" /tmp/site/.installed || new+=("$w"); done
  if [ ${#new[@]} -gt 0 ]; then
    python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site "${new[@]}" &&
      for w in "${new[@]}"; do basename "$w" >> /tmp/site/.installed; done
  fi
  export PYTHONPATH=/tmp/site:/tmp/site/nvidia_cutlass_dsl/dsl_packages${PYTHONPATH:+:$PYTHONPATH}
  cudnn=$(python3 -c "import nvidia.cudnn,os;print(os.path.dirname(nvidia.cudnn.__file__)+'/lib')" 2>/dev/null || true)
  [ -n "$cudnn" ] && export LD_LIBRARY_PATH=$cudnn:${LD_LIBRARY_PATH:-}
fi

# ncu's issue-stall reasons (per issued instruction) for the profile steps.
stall_metrics=$(printf 'smsp__average_warps_issue_stalled_%s_per_issue_active.ratio,' long_scoreboard barrier short_scoreboard \
  wait math_pipe_throttle mio_throttle lg_throttle not_selected selected no_instruction dispatch_stall membar \
  branch_resolving sleeping drain)

nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.mem,temperature.gpu --format=csv,noheader | tee "$out/device.txt"
cd "$root/scripts/gpu"
status=0
declare -A result
for s in "${steps[@]}"; do
  t0=$(date +%s)
  case "$s" in
    numerics)
      # every case on each kernel family in turn (the Hopper one serves what TMA can address)
      { python3 numerics.py "$lib" --cases "${FA_CASES:-150}" --family sm90 &&
        python3 numerics.py "$lib" --cases "${FA_CASES:-150}" --decode-cases 0 --family sm80; } 2>&1 | tee "$out/numerics.log" ;;
    sanitize)
      { compute-sanitizer --tool memcheck --kernel-name kns=flash_ --error-exitcode 9 python3 sanitize_cases.py "$lib" 18 &&
        compute-sanitizer --tool racecheck --kernel-name kns=flash_ --error-exitcode 9 python3 sanitize_cases.py "$lib" 12 &&
        compute-sanitizer --tool synccheck --kernel-name kns=flash_ --error-exitcode 9 python3 sanitize_cases.py "$lib" 12; } 2>&1 |
        grep -v "^========= COMPUTE-SANITIZER$" | tee "$out/sanitize.log" ;;
    ort) python3 ort_cuda.py "$lib" 2>&1 | tee "$out/ort.log" ;;
    rust-ort)
      # The carried Rust test binary (tests/gpu_ort.rs) on onnxruntime-gpu's C library; the CUDA EP needs
      # the CUDA libraries of the pip-installed nvidia packages on the loader path.
      nvlibs=$(python3 -c "import nvidia,os; print(':'.join(os.path.join(p,d,'lib') for p in nvidia.__path__ for d in sorted(os.listdir(p)) if os.path.isdir(os.path.join(p,d,'lib'))))")
      ORT_DYLIB_PATH=$(ls /tmp/site/onnxruntime/capi/libonnxruntime.so.* | head -n 1) LD_LIBRARY_PATH=$nvlibs:${LD_LIBRARY_PATH:-} \
        FLASHATTN_ORT_LIB="$lib" "$root/.gpu/gpu_ort" --ignored --test-threads 1 --nocapture 2>&1 | tee "$out/rust-ort.log" ;;
    bench) python3 bench.py "$lib" --out "$out/bench.md" 2>&1 | tee "$out/bench.log" ;;
    bench-prefill)
      # FA_OTHER_LIB: another build, timed in the same rounds as variant "lib" (an A/B inside one process);
      # FA_OTHER_KERNEL: the kernel or family it prefers (FA_VARIANTS=sm80 FA_OTHER_KERNEL=sm80: portable vs portable)
      # FA_CAUSAL: 0 or 1 for only non-causal or only causal rows; FA_SYNCED=1: each call waited for (bench.py --synced)
      python3 bench.py "$lib" --no-decode ${FA_DIMS:+--dims "$FA_DIMS"} ${FA_CAUSAL:+--causal "$FA_CAUSAL"} --variants "${FA_VARIANTS:-}" \
        ${FA_SYNCED:+--synced} ${FA_SETTLE:+--settle "$FA_SETTLE"} \
        ${FA_OTHER_LIB:+--other-lib "$FA_OTHER_LIB"} ${FA_OTHER_KERNEL:+--other-kernel "$FA_OTHER_KERNEL"} \
        --out "$out/bench-prefill.md" 2>&1 | tee "$out/bench-prefill.log" ;;
    bench-keypad)
      # key-padding masks (exported attention_mask) through the gated plain kernel vs the masked kernel vs SDPA
      # FA_FAMILY=sm80: the portable kernel
      python3 keypad_bench.py "$lib" ${FA_FAMILY:+--family "$FA_FAMILY"} --out "$out/bench-keypad${FA_FAMILY:+-$FA_FAMILY}.md" 2>&1 |
        tee "$out/bench-keypad${FA_FAMILY:+-$FA_FAMILY}.log" ;;
    bench-gqa)
      # GQA prefill rows, our kernel packed and unpacked as variants (bench.py --gqa)
      # FA_GQA_ROWS: other rows (bench.py --gqa-rows); FA_VARIANTS: other variants (NAME or NAME+grid=0|1)
      python3 bench.py "$lib" --gqa ${FA_GQA_ROWS:+--gqa-rows "$FA_GQA_ROWS"} --variants "${FA_VARIANTS:-}" \
        --out "$out/bench-gqa.md" 2>&1 | tee "$out/bench-gqa.log" ;;
    bench-decode)
      # FA_CLUSTER / FA_OTHER_CLUSTER: how decode splits merge in ours / in FA_OTHER_LIB (bench.py --cluster)
      # FA_ROW_GROUPS: row groups of MQA steps in ours (bench.py --row-groups)
      python3 bench.py "$lib" --no-prefill ${FA_OTHER_LIB:+--other-lib "$FA_OTHER_LIB"} --cluster "${FA_CLUSTER:--1}" \
        --row-groups "${FA_ROW_GROUPS:--1}" \
        --other-cluster "${FA_OTHER_CLUSTER:--1}" --out "$out/bench-decode${FA_TAG:-}.md" 2>&1 | tee "$out/bench-decode${FA_TAG:-}.log" ;;
    decode-probe) python3 decode_probe.py "$lib" ${FA_SPLITS:-} 2>&1 | tee "$out/decode-probe.log" ;;
    cluster-sweep) python3 decode_probe.py "$lib" --cluster-sweep 2>&1 | tee "$out/cluster-sweep.log" ;;
    split-sweep) python3 decode_probe.py "$lib" --split-sweep 2>&1 | tee "$out/split-sweep.log" ;;
    memset-cost) python3 decode_probe.py "$lib" --memset-cost 2>&1 | tee "$out/memset-cost.log" ;;
    e2e)
      # FA_E2E: which models, "gqa mha" by default (GQA 16/4; MHA 16/16, which also has the opset-23 twin)
      for m in ${FA_E2E:-gqa mha}; do
        case $m in
          gqa) python3 e2e.py "$lib" "$root/.gpu/flashattn-ort" --kv-heads 4 --out "$out/e2e-gqa.md" ;;
          mha) python3 e2e.py "$lib" "$root/.gpu/flashattn-ort" --kv-heads 16 --profile 4096 --out "$out/e2e-mha.md" ;;
          *) echo "FA_E2E: unknown model $m"; false ;;
        esac || exit 1
      done 2>&1 | grep -v "^\[torch.onnx\]\|Warning\|return cls\|^ *warnings.warn" | tee "$out/e2e.log" ;;
    e2e-profile)
      # where the rewritten model's GPU time goes against ORT's own opset-23 Attention at the short prefills
      # where it is still behind (GPU time by kernel, torch.profiler)
      python3 e2e.py "$lib" "$root/.gpu/flashattn-ort" --kv-heads 16 --seqs 1024,2048 --runs ours,opset23 --profile 2048 2>&1 |
        grep -v "^\[torch.onnx\]\|Warning\|return cls\|^ *warnings.warn" | tee "$out/e2e-profile.log" ;;
    kv-sanitize)
      # the shared-buffer KV-cache checks through ORT (the decode kernel appending in place, rotary) under
      # memcheck, racecheck and synccheck, our decode kernels only
      for tool in memcheck racecheck synccheck; do
        compute-sanitizer --tool $tool --kernel-name kns=flash_decode --print-limit 5 \
          python3 ort_cuda.py "$lib" --kv-only 2>&1 | grep -E "^FAIL|SUMMARY|ort kv|rror" | tail -8
      done > "$out/kv-sanitize.log" 2>&1
      cat "$out/kv-sanitize.log"
      # an `if`, not `[ … ] && ! grep`: the loop reads PIPESTATUS, which a negated grep leaves at grep's own status
      if [ "$(grep -c 'ort kv: 0 failed' "$out/kv-sanitize.log")" = 3 ] && ! grep -qE "SUMMARY: [1-9]" "$out/kv-sanitize.log"; then
        true
      else
        false
      fi ;;
    e2e-memcheck)
      # the rewritten model alone at 16k under compute-sanitizer (every kernel: ours and ORT's)
      compute-sanitizer --tool memcheck --print-limit 5 python3 e2e.py "$lib" "$root/.gpu/flashattn-ort" --kv-heads 4 --seqs 16384 \
        --runs ours --reps 1 2>&1 | grep -v "^\[torch.onnx\]\|Warning\|return cls\|^ *warnings.warn" | tail -60 | tee "$out/e2e-memcheck.log" ;;
    gen-bench)
      python3 gen_bench.py "$lib" "$root/.gpu/flashattn-ort" --out "$out/gen-bench.md" ${FA_GEN_ARGS:-} 2>&1 |
        grep -v "^\[torch.onnx\]\|Warning\|return cls\|^ *warnings.warn" | tee "$out/gen-bench.log" ;;
    queue-trace)
      # queued prefill calls under the PyTorch profiler (CUPTI): kernel time against the gaps between calls, ours
      # (with and without dependent launches), SDPA cuDNN and FA4 (FA_PROFILE: "D SEQ CAUSAL" triples)
      python3 queue_trace.py "$lib" ${FA_PROFILE:-128 512 0 128 1024 0 64 512 0 64 8192 0} --who "${FA_WHO:-ours,ours-nodep,cudnn,fa4}" 2>&1 |
        grep -v "Warning\|warn" | tee "$out/queue-trace.log" ;;
    host-cost)
      # the host's cost of a prefill call against its GPU time (FA_PROFILE: "D SEQ CAUSAL" triples)
      python3 host_cost.py "$lib" ${FA_PROFILE:-128 512 0 64 512 1 128 2048 0} 2>&1 | grep -v "Warning\|warn" | tee "$out/host-cost.log" ;;
    sustain)
      # sustained calls with the SM clock and power sampled: a gap in cycles, or in clock under the power cap
      # (FA_PROFILE: "D SEQ CAUSAL" triples; FA_WHO: ours,cudnn,fa4)
      python3 sustain.py "$lib" ${FA_PROFILE:-64 8192 0 128 16384 0 128 4096 1} --who "${FA_WHO:-ours,cudnn,fa4}" 2>&1 |
        grep -v "Warning\|warn\|exe_args" | tee "$out/sustain.log" ;;
    profile)
      # ncu on the rows below the goal: where the Hopper kernel's time goes (one launch each)
      for cfg in "64 8192 0" "128 8192 0" "128 2048 1"; do
        echo "== profile d/seq/causal: $cfg"
        ncu --clock-control none -k regex:flash_fwd -c 1 --section SpeedOfLight --section WarpStateStats \
          --section ComputeWorkloadAnalysis python3 profile_one.py "$lib" $cfg
      done 2>&1 | grep -E "^== |^kernel|Duration|Throughput|Stall|Issued|Eligible|Active Warps|Pipe" | tee "$out/profile.log" ;;
    profile-vs)
      # ours and FlashAttention-4 (FA_WHO="ours fa4 cudnn": any of them) side by side on one prefill problem
      # (FA_PROFILE="D SEQ CAUSAL", default d128 s8192 non-causal): tensor-pipe use, issue stalls and
      # instruction counts of one launch each
      gmma=$(ncu --query-metrics --chip gh100 2>/dev/null | grep -o "sm__pipe_tensor_op_gmma_cycles_active\|sm__inst_executed_pipe_tensor_op_gmma" | sort -u |
        sed 's/$/.avg.pct_of_peak_sustained_active/' | paste -sd, -)
      for who in ${FA_WHO:-ours fa4}; do
        echo "== profile $who: ${FA_PROFILE:-128 8192 0}"
        ncu --clock-control none -k regex:"flash_fwd|sdpa|fprop|cudnn" -c 1 --section SpeedOfLight --section WarpStateStats \
          --section InstructionStats --section SchedulerStats --section LaunchStats \
          --metrics "${stall_metrics}${gmma:+$gmma,}sm__inst_executed_pipe_xu.avg.pct_of_peak_sustained_active,smsp__inst_executed.sum,sm__cycles_elapsed.avg,lts__t_bytes.sum,dram__bytes_read.sum" \
          python3 profile_one.py "$lib" ${FA_PROFILE:-128 8192 0} $who
      done 2>&1 | grep -E "^== |^kernel|\)x\(|Duration|Throughput|stalled|inst_executed|cycles|Issued|Eligible|Active Warps|gmma|pipe|Grid Size|Block Size|Registers Per|Shared Memory Config|Dynamic Shared|Waves|bytes|==ERR|rror" | tee "$out/profile-vs${FA_TAG:-}.log" ;;
    profile-source)
      # per-SASS-instruction executed counts and stall samples of our kernel, or FlashAttention-4's (FA_WHO=fa4),
      # on one prefill problem (FA_PROFILE="D SEQ CAUSAL"): where a tile's instructions and waits go, as CSV
      # (source-ours.csv / source-fa4.csv) for reading here
      who=${FA_WHO:-ours}
      ncu --clock-control none -k regex:flash_fwd -c 1 --section SourceCounters --section WarpStateStats -f \
        -o "$out/source" python3 profile_one.py "$lib" ${FA_PROFILE:-128 512 0} $who 2>&1 | tail -3
      ncu --import "$out/source.ncu-rep" --page source --csv --print-source sass > "$out/source-$who.csv" 2> "$out/source.err"
      rc_src=$?; rm -f "$out/source.ncu-rep"; wc -l "$out/source-$who.csv" "$out/source.err"; ( exit $rc_src ) ;;
    profile-decode-source)
      # per-SASS-instruction counts and stall samples of one decode step (FA_PROFILE="BATCH KV_HEADS KV_LEN",
      # default the batch-1 MQA step at 2k keys; FA_WHO=cudnn: SDPA cuDNN's kernels instead), as CSV, with each
      # kernel's duration, launch shape and warp states (source-decode-$who.csv, details-decode-$who.txt)
      who=${FA_WHO:-ours}; filter=regex:flash_decode; [ "$who" = cudnn ] && filter=regex:.
      ncu --clock-control none -k "$filter" -c 4 --section SourceCounters --section WarpStateStats --section LaunchStats \
        --section SpeedOfLight --metrics smsp__inst_executed.sum,sm__cycles_elapsed.avg -f -o "$out/dsrc" \
        python3 profile_one.py "$lib" decode ${FA_PROFILE:-1 1 2048} $([ "$who" = cudnn ] && echo cudnn) 2>&1 | tail -3
      ncu --import "$out/dsrc.ncu-rep" --page details > "$out/details-decode-$who.txt" 2>&1
      ncu --import "$out/dsrc.ncu-rep" --page source --csv --print-source sass > "$out/source-decode-$who.csv" 2> "$out/dsrc.err"
      rc_src=$?; rm -f "$out/dsrc.ncu-rep"; wc -l "$out/source-decode-$who.csv"; ( exit $rc_src ) ;;
    profile-decode)
      # ncu on batch-1 decode steps (GQA 32/8 at 2k and 8k keys, MQA at 32k): the decode kernel and its combine
      for cfg in "1 8 2048" "1 8 8192" "1 1 32768"; do
        echo "== profile decode batch/kv_heads/kv_len: $cfg"
        ncu --clock-control none -k regex:flash_decode -c 2 --section SpeedOfLight --section Occupancy \
          --metrics "${stall_metrics}smsp__inst_executed.sum,sm__cycles_elapsed.avg" \
          python3 profile_one.py "$lib" decode $cfg
      done 2>&1 | grep -E "^== |^kernel|flash_decode|Duration|Throughput|stalled|inst_executed|cycles_elapsed|Achieved" | tee "$out/profile-decode.log" ;;
    selfcheck)
      # the first-use self-check of the Blackwell kernel, proven with broken stand-ins (wrong values, NaN, trap):
      # each rejected with one warning, the process's kernels still correct afterwards, the portable kernel serving
      python3 selfcheck.py "$lib" 2>&1 | tee "$out/selfcheck.log" ;;
    bench-quick) python3 bench.py "$lib" --quick --variants "${FA_VARIANTS:-}" --out "$out/bench.md" 2>&1 | tee "$out/bench.log" ;;
    *) echo "unknown step $s"; false ;;
  esac
  rc=${PIPESTATUS[0]}
  result[$s]="rc=$rc $(( $(date +%s) - t0 ))s"
  [ "$rc" -ne 0 ] && status=1
done
echo "== summary =="
for s in "${steps[@]}"; do echo "$s: ${result[$s]}"; done
exit $status
