#!/usr/bin/env bash
# The prepared GPU run (H200 or any CUDA machine), in two calls of the device tool; the plan, with each
# step's estimate and its arithmetic (machine starts, transfers and idle waits counted), is docs/NOTES.md,
# "Owed on a GPU":
#   call 1 (timeout_s 320): GPU_CHECK_PARTS="tests sanitizers bench profile parity" GPU_CHECK_BUDGET_S=290 \
#                           bash bench/gpu_check.sh
#   call 2 (timeout_s 330): GPU_CHECK_PARTS="parity speed stages" GPU_CHECK_BUDGET_S=300 \
#                           GPU_CHECK_BUDGET_COLD_S=210 bash bench/gpu_check.sh
#   then give the machine back at once.
# Which lst_fast runs: the wheel in .whl/ (GPU_CHECK_WHEEL, default the first .whl/lst_fast-*.whl; built
# beforehand on a machine without a GPU by .ci/build_dist and carried) installed with pip into
# /tmp/lst_wheel; without one, or when its CUDA kernels do not load, a build in place, skipped when
# build/gpu_check.stamp holds the hash of csrc/, setup.py, torch, nvcc and the arch list (modification
# times are not trusted: the copy to the machine need not keep them). GPU_CHECK_SOURCE=1 forces the build.
# Python runs from a copy of tests/ and bench/ in /tmp/lst_gpu_run, so `import lst_fast` takes the chosen
# one and never the source tree by accident. The gate (bench/gpu_gate.py) then runs one op with
# backend="native" on cuda:0 and requires backend_info()'s device check to have let the kernels run; every
# step stops unless it passed (else the rows would time the pure-PyTorch fallback as "native").
#
# Parts (GPU_CHECK_PARTS, in this order whatever the order given):
#   tests       error_repro (the C++ error path), tests/test_cuda.py, tests/test_ops.py and
#               tests/test_row_layout.py -k cuda
#   sanitizers  one probe of compute-sanitizer, then memcheck, initcheck, racecheck (GPU_CHECK_TOOLS) over
#               tests/cuda_sanitizer_probe.py; where the probe is refused, "unavailable here" (not failed)
# Every pytest step runs through bench/pytest_resilient.py (a timeout per test: 60 s, the speed rows with
# torch.compile 150 s; after a crash only the tests without a result rerun).
#   bench       operator bandwidth (bench/test_ops_bandwidth.py -k cuda), the fused step among them
#   profile     bench/profile_lst.py: ResNet-50 bf16 batch 128, Fashion CNN batch 8192 with a CUDA graph
#   parity      bench/test_quality_parity.py -k cuda (bf16 vs exact mode on the shipped models)
#   speed       bench/test_lst_speed.py on CUDA: ResNet-50 in every mode but compile+graph, then the other
#               models in every mode without torch.compile
#   stages      bench/test_eval_stages.py -k "cuda and resnet50" (the leaderboard's pool, LST and
#               triangle stages), run only where that file exists
# Time: the whole command keeps within GPU_CHECK_BUDGET_S seconds (default 300; give the device call a
# timeout_s about 30 s longer). A step starts only when its estimate fits what is left, and runs under a
# cap of twice its estimate plus 15 s, at most what is left (bench/gpu_steps.sh), so one hanging step
# costs that step, the steps after it keep their time, and what no longer fits is reported as skipped.
# GPU_CHECK_BUDGET_COLD_S, when given, replaces the budget on a machine that no earlier gpu_check.sh ran
# on (a fresh machine: its start already cost part of the device time).
# Results go to $OUT (or ./gpu_out) as they are made (each step's output straight into its log, so a step
# cut short keeps its lines), in at most these 7 files (the device tool brings
# back 8): summary.txt (the header, the tables, every step's status), status.txt (one line per step as it
# ends), build.log (wheel install or build), tests.log, sanitizer.log, bench.log (bandwidth, profiles,
# parity, speed, stages) and results.jsonl (one JSON line per benchmark as it is measured, written by
# bench/conftest.py; `python bench/summarize.py results.jsonl` prints the tables).
# GPU_CHECK_TOOLS: the sanitizers (default "memcheck initcheck racecheck"). GPU_SPEED_FILTER: a pytest -k
# expression that narrows both speed steps further. LST_FAST_COMMIT: the commit results are recorded under.
set -uo pipefail
REPO=$PWD
OUT=${OUT:-$PWD/gpu_out}
mkdir -p "$OUT"
export OUT
export TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-9.0} MAX_JOBS=${MAX_JOBS:-16} LST_FAST_CUDA=1
export CUDA_HOME=${CUDA_HOME:-/usr/local/cuda} PYTHONUNBUFFERED=1
# Line numbers in sanitizer reports of an in-place build; the release flags otherwise (no -G).
export LST_FAST_NVCC_FLAGS="${LST_FAST_NVCC_FLAGS:-} -lineinfo"
export LST_BENCH_RESULTS="$OUT/results.jsonl"
export LST_FAST_COMMIT=${LST_FAST_COMMIT:-$(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo unknown)}
PARTS=" ${GPU_CHECK_PARTS:-tests sanitizers bench profile parity speed stages} "
want() { [[ "$PARTS" == *" $1 "* ]]; }
STATUS="$OUT/status.txt"
TABLE=$(mktemp)  # the tables, copied into summary.txt at the end (not a file of its own under $OUT)
: > "$STATUS"

WARM_MARK=/tmp/lst_gpu_check.warm  # on the machine, not in the tree: present when an earlier call ran here
BUDGET=${GPU_CHECK_BUDGET_S:-300}
if [ ! -e "$WARM_MARK" ] && [ -n "${GPU_CHECK_BUDGET_COLD_S:-}" ]; then BUDGET=$GPU_CHECK_BUDGET_COLD_S; fi
MACHINE=$([ -e "$WARM_MARK" ] && echo "warm (an earlier call ran here)" || echo "fresh")
touch "$WARM_MARK"
DEADLINE=$((SECONDS + BUDGET))

# shellcheck source=bench/gpu_steps.sh
source "$REPO/bench/gpu_steps.sh"  # step (each capped at twice its estimate + 15 s), sanitizers

finish() {
  [ -s "$LST_BENCH_RESULTS" ] && (cd "$RUN" && python3 bench/summarize.py "$LST_BENCH_RESULTS") >> "$TABLE" 2>&1
  { cat "$TABLE"; echo; echo "== steps ($((SECONDS)) s of the ${BUDGET} s budget used)"; cat "$STATUS"; } >> "$OUT/summary.txt"
  rm -f "$TABLE"
  echo "== summary"
  cat "$OUT/summary.txt"
  ! grep -qE ": (FAILED|CUT SHORT)" "$STATUS"  # the exit status: 0 only when no step failed
}

{ date -u +%Y-%m-%dT%H:%MZ
  echo "machine: $MACHINE; budget ${BUDGET} s; parts:${PARTS}; commit $LST_FAST_COMMIT"
  nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm --format=csv,noheader
  python3 -c "import torch; p = torch.cuda.get_device_properties(0); print('torch', torch.__version__, 'CUDA', torch.version.cuda, 'SMs', p.multi_processor_count, 'L2 MiB', p.L2_cache_size / 2**20)"
} 2>&1 | tee "$OUT/summary.txt"

# -- which lst_fast: the carried wheel, else an in-place build (skipped on an unchanged hash stamp) -------
RUN=/tmp/lst_gpu_run
rm -rf "$RUN" && mkdir -p "$RUN" && cp -r tests bench pyproject.toml "$RUN"/

kernels_loaded() {  # bench/gpu_gate.py: that lst_fast (the wheel's, or the tree's) ran one op with its CUDA kernels
  (cd "$RUN" && python3 bench/gpu_gate.py "$1")
}

source_stamp() {
  { find csrc -type f | LC_ALL=C sort | xargs sha256sum; sha256sum setup.py
    python3 -c "import torch; print(torch.__version__, torch.version.cuda)"
    "$CUDA_HOME/bin/nvcc" --version | tail -n 1; echo "$TORCH_CUDA_ARCH_LIST $LST_FAST_NVCC_FLAGS"
  } | sha256sum | cut -d' ' -f1
}

build_is_current() {  # the stamp of the last in-place build matches, and its modules are there
  [ "$(cat build/gpu_check.stamp 2>/dev/null)" = "$(source_stamp)" ] \
    && ls lst_fast/_C.abi3.so lst_fast/_C_cuda*.abi3.so >/dev/null 2>&1
}

build_in_place() {
  python3 setup.py build_ext --inplace && mkdir -p build && source_stamp > build/gpu_check.stamp
}
export -f source_stamp build_in_place  # `timeout` runs programs: these run through bash -c

WHEEL=${GPU_CHECK_WHEEL:-$(ls .whl/lst_fast-*.whl 2>/dev/null | head -n 1)}
SOURCE_OF=""
if [ -n "$WHEEL" ] && [ "${GPU_CHECK_SOURCE:-0}" != 1 ]; then
  rm -rf /tmp/lst_wheel
  if step wheel_install build 30 python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/lst_wheel "$WHEEL"; then
    export PYTHONPATH=/tmp/lst_wheel
    kernels_loaded /tmp/lst_wheel 2>&1 | tee -a "$OUT/build.log" | tail -n +2 >> "$OUT/summary.txt"
    [ "${PIPESTATUS[0]}" -eq 0 ] && SOURCE_OF="the wheel $(basename "$WHEEL")"
  fi
  [ -z "$SOURCE_OF" ] && echo "wheel: its CUDA kernels did not load here (build.log); building in place" | tee -a "$STATUS"
fi
if [ -z "$SOURCE_OF" ]; then
  export PYTHONPATH=$REPO
  if build_is_current; then
    echo "build: up to date (build/gpu_check.stamp)" | tee -a "$STATUS"
  else
    step build build 150 bash -c build_in_place
  fi && kernels_loaded "$REPO" 2>&1 | tee -a "$OUT/build.log" | tail -n +2 >> "$OUT/summary.txt" \
    && [ "${PIPESTATUS[0]}" -eq 0 ] && SOURCE_OF="an in-place build of the tree"
fi
if [ -z "$SOURCE_OF" ]; then
  # Nothing below may time the pure-PyTorch fallback (the tests would skip, the speed rows would lie).
  echo "lst_fast: FAILED, no lst_fast with loaded CUDA kernels (see build.log)" | tee -a "$STATUS"
  finish; exit 1
fi
echo "lst_fast: $SOURCE_OF" | tee -a "$STATUS" >> "$OUT/summary.txt"
cd "$RUN"

# -- the parts, in the plan's order; each step's estimate is docs/NOTES.md's -------------------------
if want tests; then  # each test under a timeout of its own; after a crash only the tests without a result rerun
  step error_repro tests 10 python3 tests/native/error_repro.py cuda
  step tests_cuda tests 40 python3 bench/pytest_resilient.py --test-timeout 60 tests/test_cuda.py
  step tests_ops tests 40 python3 bench/pytest_resilient.py --test-timeout 60 tests/test_ops.py tests/test_row_layout.py -k cuda
fi
if want sanitizers; then  # one probe first: where compute-sanitizer refuses the device, "unavailable here"
  sanitizers tests/cuda_sanitizer_probe.py ${GPU_CHECK_TOOLS:-memcheck initcheck racecheck}
fi
if want bench; then  # the fused step on 128 x 3x224x224 among them (goal: >= 80% of the copy's bandwidth)
  step bandwidth bench 30 python3 bench/pytest_resilient.py --test-timeout 60 bench/test_ops_bandwidth.py -k cuda
fi
if want profile; then  # where the time goes, for the goals the speed table misses (tables in bench.log)
  for args in "--model resnet50 --batch 128 --size 224" "--model fashion_cnn --batch 8192 --size 28 --graph"; do
    step "profile $args" bench 20 python3 bench/profile_lst.py --device cuda --precision bf16 $args \
      && grep -h "operators take" "$OUT/bench.log" | tail -n 1 >> "$TABLE"
  done
fi
if want parity; then
  step parity bench 25 python3 bench/pytest_resilient.py --test-timeout 60 bench/test_quality_parity.py -k cuda
fi
if want speed; then  # ResNet-50 first (the goal against the compiled expert loop), then the other models
  FILTER=${GPU_SPEED_FILTER:-test}
  step speed_resnet50 bench 120 python3 bench/pytest_resilient.py --test-timeout 150 bench/test_lst_speed.py \
    -k "cuda and resnet50 and not compile_graph and ($FILTER)"
  step speed_models bench 65 python3 bench/pytest_resilient.py --test-timeout 90 bench/test_lst_speed.py \
    -k "cuda and not resnet50 and not compile and ($FILTER)"
fi
if want stages; then
  if [ -f bench/test_eval_stages.py ]; then
    step stages bench 60 python3 bench/pytest_resilient.py --test-timeout 90 bench/test_eval_stages.py -k "cuda and resnet50"
  else
    echo "stages: not run (bench/test_eval_stages.py is not in this tree)" | tee -a "$STATUS"
  fi
fi
finish
