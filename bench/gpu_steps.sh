# The step runner of bench/gpu_check.sh, sourced by it (and by tests/test_gpu_tooling.py, which runs these
# functions on the CPU). The caller sets OUT (the results folder), STATUS (one line per step), BUDGET (s)
# and DEADLINE (a value of $SECONDS); STEP_MARGIN_S (default 15) is the margin of each step's cap.

# step_cap ESTIMATE LEFT: a step's timeout: twice its estimate plus the margin, at most what is left, so
# one hang costs that step and leaves the steps after it their time.
step_cap() {
  local cap=$((2 * $1 + ${STEP_MARGIN_S:-15}))
  echo $((cap < $2 ? cap : $2))
}

# step NAME LOG ESTIMATE_S COMMAND...: run COMMAND if ESTIMATE_S fits the budget left, under a timeout of
# step_cap; its output goes straight to $OUT/LOG.log as it comes (a cut-short step keeps it); one status
# line. Returns 99 when skipped, else COMMAND's status (124 or 137: cut short).
step() {
  local name=$1 log=$2 estimate=$3; shift 3
  local left=$((DEADLINE - SECONDS)) t0=$SECONDS
  if [ "$estimate" -gt "$left" ]; then
    echo "$name: SKIPPED (estimated ${estimate} s, ${left} s of the ${BUDGET} s budget left)" | tee -a "$STATUS"
    return 99
  fi
  local cap
  cap=$(step_cap "$estimate" "$left")
  echo "=== $name (estimated ${estimate} s, cap ${cap} s, ${left} s left): $*" >> "$OUT/$log.log"
  timeout -k 10 "$cap" "$@" >> "$OUT/$log.log" 2>&1
  local rc=$?
  local words="ok"
  [ $rc -ne 0 ] && words="FAILED (rc=$rc)"
  if [ $rc -eq 124 ] || [ $rc -eq 137 ]; then
    words="CUT SHORT at its cap of ${cap} s (rc=$rc)"
    [ "$cap" -eq "$left" ] && words="CUT SHORT at the budget (rc=$rc)"
  fi
  echo "$name: $words in $((SECONDS - t0)) s (estimated ${estimate} s)" | tee -a "$STATUS"
  [ $rc -ne 0 ] && tail -n 25 "$OUT/$log.log"
  return $rc
}

# sanitizer_refusal: nothing when compute-sanitizer runs a CUDA allocation here; else one line saying why
# not (some sandboxed machines refuse the device: "Device not supported", then error 999). Probed once,
# under SANITIZER_PROBE_S (default 40) seconds, at most what is left of the budget.
sanitizer_refusal() {
  if ! command -v compute-sanitizer > /dev/null; then
    echo "compute-sanitizer is not installed"
    return
  fi
  local said rc limit=${SANITIZER_PROBE_S:-40} left=$((DEADLINE - SECONDS))
  [ "$left" -lt "$limit" ] && limit=$left
  if [ "$limit" -lt 5 ]; then
    echo "no time was left to probe it"
    return
  fi
  said=$(timeout -k 5 "$limit" compute-sanitizer --tool memcheck python3 -c \
    "import torch; torch.zeros(1, device='cuda'); torch.cuda.synchronize()" 2>&1)
  rc=$?
  if grep -qE "Device not supported|error 999" <<< "$said"; then
    echo "it refused the device: $(grep -m 1 -E "Device not supported|error 999" <<< "$said" | sed 's/^=* *//')"
  elif [ $rc -eq 124 ] || [ $rc -eq 137 ]; then
    echo "its probe (one CUDA allocation) did not finish in ${limit} s"
  fi
}

# sanitizers PROBE TOOLS...: each compute-sanitizer tool over the probe program PROBE (a path), after one
# probe of the sanitizer itself; where it is refused, every tool's step is "unavailable here" (not failed)
# and its time stays with the steps after it.
sanitizers() {
  local probe=$1; shift
  local refusal
  refusal=$(sanitizer_refusal)
  echo "=== compute-sanitizer probe: ${refusal:-it runs here}" >> "$OUT/sanitizer.log"
  for tool in "$@"; do
    if [ -n "$refusal" ]; then
      echo "sanitizer_$tool: unavailable here ($refusal)" | tee -a "$STATUS"
      continue
    fi
    # No caching allocator under memcheck, so overruns inside a cached block show (the probe then skips
    # its CUDA-graph walk: capture needs the caching allocator); racecheck runs the op calls only.
    case $tool in
      memcheck) PYTORCH_NO_CUDA_MEMORY_CACHING=1 step sanitizer_memcheck sanitizer 25 compute-sanitizer \
                  --tool memcheck --error-exitcode 1 python3 "$probe" ;;
      racecheck) step sanitizer_racecheck sanitizer 30 compute-sanitizer --tool racecheck --error-exitcode 1 \
                   python3 "$probe" --ops-only ;;
      *) step "sanitizer_$tool" sanitizer 25 compute-sanitizer --tool "$tool" --error-exitcode 1 python3 "$probe" ;;
    esac
  done
}
