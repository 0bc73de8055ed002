#!/usr/bin/env bash
# The one prepared GPU run (H200 or any CUDA machine): build lst_fast against the machine's torch, run
# the CUDA tests, compute-sanitizer (memcheck, racecheck, initcheck) over a probe of every kernel path,
# the bandwidth benchmarks, and the LST speed benchmarks with bf16 quality parity; print short tables at
# the end. Logs go to $OUT (or ./gpu_out): at most 8 files (summary.txt, status.txt, build.log, tests.log,
# bench.log, sanitizer.log, bench.json, speed.json), what the device tool brings back.
#   bash bench/gpu_check.sh            (from the repository root)
# GPU_CHECK_PARTS picks parts (default all but stages): standalone tests bench speed sanitizers stages. The build always
# runs first (a no-op when the modules are up to date), so any part works after a cold restart.
# GPU_CHECK_TOOLS picks the sanitizers after memcheck (default "racecheck initcheck").
# GPU_SPEED_FILTER is a pytest -k expression for the speed benchmarks (default: all models and methods;
# "not compile" skips every method that runs torch.compile, the expert loop included).
# Expected times on an H200 (16 cores), measured parts in docs/NOTES.md: build 2-3 min (one .cu per job),
# standalone 1 min, tests 1-2 min, bench 1 min, speed 4-6 min without compile, sanitizers 2-3 min.
set -uo pipefail
OUT=${OUT:-$PWD/gpu_out}
mkdir -p "$OUT"
export TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-9.0} MAX_JOBS=${MAX_JOBS:-16} LST_FAST_CUDA=1
export CUDA_HOME=${CUDA_HOME:-/usr/local/cuda} PYTHONUNBUFFERED=1 PYTHONPATH=$PWD:${PYTHONPATH:-}
# Line numbers in sanitizer reports; the release flags otherwise (no -G: that would time other code).
export LST_FAST_NVCC_FLAGS="${LST_FAST_NVCC_FLAGS:-} -lineinfo"
TABLE=$(mktemp)  # the tables, copied into summary.txt at the end (not a file of its own under $OUT)
STATUS="$OUT/status.txt"  # one ok/FAILED line per step, appended as each ends, so a killed run keeps them
: > "$STATUS"
PARTS=" ${GPU_CHECK_PARTS:-standalone tests bench speed sanitizers} "
want() { [[ "$PARTS" == *" $1 "* ]]; }

step() {  # step NAME LOG COMMAND...: run, append to $OUT/LOG.log (few files come back), note the outcome
  local name=$1 log=$2; shift 2
  local t0=$SECONDS
  echo "=== $name: $*" >> "$OUT/$log.log"
  "$@" >> "$OUT/$log.log" 2>&1
  local rc=$?
  echo "$name: $([ $rc -eq 0 ] && echo ok || echo "FAILED (rc=$rc)") in $((SECONDS - t0)) s" >> "$STATUS"
  tail -n $([ $rc -eq 0 ] && echo 3 || echo 25) "$OUT/$log.log"
  return $rc
}

finish() {
  echo "== summary"
  cat "$TABLE" "$STATUS" >> "$OUT/summary.txt"
  rm -f "$TABLE"
  cat "$OUT/summary.txt"
}

# pytest that survives a crashing test: on a fatal signal, deselect the test that was running (the last
# one named in the verbose log) and go on, at most 3 times; the crash stays in the log and the exit code.
pytest_resilient() {
  local log=$1; shift
  local deselect=() rc=0 crashed=0
  for attempt in 1 2 3 4; do
    python3 -X faulthandler -m pytest -v -p no:cacheprovider "$@" "${deselect[@]}" > /tmp/pytest_run.log 2>&1
    rc=$?
    cat /tmp/pytest_run.log >> "$OUT/$log.log"
    [ $rc -lt 128 ] && break
    crashed=1
    local last
    last=$(grep -oE '^tests/[^ ]+::[^ ]+' /tmp/pytest_run.log | tail -n 1)
    echo "!!! signal $((rc - 128)) while running $last" | tee -a "$OUT/$log.log"
    [ -z "$last" ] && break
    deselect+=(--deselect "$last")
  done
  tail -n 3 /tmp/pytest_run.log
  [ $crashed -eq 1 ] && return 139
  return $rc
}

{ date -u +%Y-%m-%dT%H:%MZ; nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm --format=csv,noheader
  python3 -c "import torch; p = torch.cuda.get_device_properties(0); print('torch', torch.__version__, 'CUDA', torch.version.cuda, 'SMs', p.multi_processor_count, 'L2 MiB', p.L2_cache_size / 2**20)"; } | tee "$OUT/summary.txt"

step build build python3 setup.py build_ext --inplace || { finish; exit 1; }
# Everything below must time our CUDA kernels, never the pure-PyTorch fallback (the tests would skip and
# the speed rows would silently measure the fallback): stop unless they loaded.
python3 -c "import lst_fast, sys; i = lst_fast.backend_info(); print('backend:', i); sys.exit(i['cuda'] != 'native')" \
  | tee -a "$OUT/summary.txt"
if [ "${PIPESTATUS[0]}" -ne 0 ]; then
  echo "backend: FAILED, the CUDA kernels did not load (see backend_info above)" >> "$STATUS"; finish; exit 1
fi
# The C++ error path first (seconds): each argument error of each op and of the kernels' own guards must be
# a Python exception; a crash here would also take down the test run below.
step error_repro tests timeout -k 10 60 python3 tests/native/error_repro.py cuda
# Standalone kernel harness (no torch): bit-exact checks at many sizes (register-row and chunked rows),
# misaligned buffers, graph capture. The four .cu files compile in parallel, then link.
standalone() {
  local dir=/tmp/lst_standalone pids=() f
  mkdir -p "$dir"
  for f in csrc/cuda/orthogonal_step_kernel.cu csrc/cuda/confidence_accept_kernel.cu \
           csrc/cuda/simplex_points_kernel.cu tests/native/test_kernels.cu; do
    nvcc -std=c++17 -O3 -arch=sm_90 --fmad=false -lineinfo -Xcompiler -ffp-contract=off -Icsrc/cuda \
      -c "$f" -o "$dir/$(basename "$f" .cu).o" & pids+=($!)
  done
  for p in "${pids[@]}"; do wait "$p" || return 1; done
  nvcc -arch=sm_90 "$dir"/*.o -o "$dir/test_kernels" && "$dir/test_kernels"
}
want standalone && step standalone build standalone
if want tests; then
  step tests_cuda tests pytest_resilient tests tests/test_cuda.py
  # The cross-backend operator tests on CUDA only (the CPU-only files ran in CI already).
  step tests_ops tests pytest_resilient tests tests/test_ops.py -k cuda
fi
if want bench; then
  step bench bench python3 -m pytest -q bench/test_ops_bandwidth.py -k cuda -p no:cacheprovider \
    --benchmark-json="$OUT/bench.json"
  python3 bench/summarize.py "$OUT/bench.json" | tee -a "$TABLE"
fi
if want speed; then
  step speed bench python3 -m pytest -q bench/test_lst_speed.py bench/test_quality_parity.py -p no:cacheprovider \
    -k "cuda and (${GPU_SPEED_FILTER:-test})" --benchmark-json="$OUT/speed.json"
  python3 bench/summarize.py "$OUT/speed.json" | tee -a "$TABLE"
  # Where the time goes, for the goals the table misses (full tables in bench.log).
  for args in "--model resnet50 --batch 128 --size 224" "--model fashion_cnn --batch 8192 --size 28 --graph"; do
    step "profile $args" bench python3 bench/profile_lst.py --device cuda --precision bf16 $args
    grep -h "operators take" "$OUT/bench.log" | tail -n 1 >> "$TABLE"
  done
fi
# An evaluation's stages (pool scan, JPEG decode with 0-16 workers, LST, triangles, a whole evaluation on
# files): opt-in, GPU_CHECK_PARTS=stages (about 5 min; its JSON replaces bench.json's slot, so 8 files).
if want stages; then
  step stages bench python3 -m pytest -q bench/test_eval_stages.py -k cuda -p no:cacheprovider \
    --benchmark-json="$OUT/bench.json"
fi
# Sanitizers last (slowest). No caching allocator under memcheck, so overruns inside a cached block show
# (the probe then skips its CUDA-graph walk: capture needs the caching allocator); racecheck and initcheck
# run the whole probe, graph walk included.
if want sanitizers; then
  PYTORCH_NO_CUDA_MEMORY_CACHING=1 step sanitizer_memcheck sanitizer timeout -k 10 200 compute-sanitizer --tool memcheck \
    --error-exitcode 1 python3 tests/cuda_sanitizer_probe.py
  for tool in ${GPU_CHECK_TOOLS:-racecheck initcheck}; do
    step "sanitizer_$tool" sanitizer timeout -k 10 200 compute-sanitizer --tool "$tool" --error-exitcode 1 python3 tests/cuda_sanitizer_probe.py
  done
fi
finish
