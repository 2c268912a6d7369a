#!/usr/bin/env bash
# `make fuzz`: runs each fuzz target (all, or those named) for FUZZ_SECONDS under libFuzzer
# (cargo-fuzz, nightly), then prints executions and crashes per target. Exits non-zero when a
# target crashed or did not run.
#
#   FUZZ_SECONDS   seconds per target (default 60)
#   FUZZ_SANITIZER none (default: the code under test is safe Rust; faster) or address
#
# Each run starts from fuzz/corpus/<target> (grown by earlier runs, not committed), the
# hand-made seeds/<target> and the regressions/<target>; libFuzzer writes a failing input to
# fuzz/artifacts/<target>/, and its log to fuzz/logs/<target>.log.
set -uo pipefail
cd "$(dirname "$0")/.."

seconds=${FUZZ_SECONDS:-60}
sanitizer=${FUZZ_SANITIZER:-none}
if [ $# -gt 0 ]; then
  targets=("$@")
else
  targets=()
  for file in fuzz/fuzz_targets/*.rs; do targets+=("$(basename "$file" .rs)"); done
fi
fuzz=(cargo +nightly fuzz)
build_flags=(--features libfuzzer --sanitizer "$sanitizer")
# Thin LTO (the workspace's release profile) only slows the instrumented build down.
export CARGO_PROFILE_RELEASE_LTO=false

echo "building the fuzz targets (nightly, sanitizer: $sanitizer; the first build takes ~10 min)"
"${fuzz[@]}" build "${build_flags[@]}" 2>&1 | tail -n 3
[ "${PIPESTATUS[0]}" -eq 0 ] || { echo "fuzz build failed"; exit 1; }
# The binaries are run directly (what `cargo fuzz run` does after building), so every target
# runs the code built once here, and its time is fuzzing only.
bin_dir="${CARGO_TARGET_DIR:-target}/$(rustc +nightly -vV | awk '/^host:/ {print $2}')/release"
export ASAN_OPTIONS="${ASAN_OPTIONS:+$ASAN_OPTIONS:}detect_odr_violation=0"

mkdir -p fuzz/logs
rows=()
failed=0
for target in "${targets[@]}"; do
  mkdir -p "fuzz/corpus/$target" "fuzz/artifacts/$target" "fuzz/regressions/$target"
  dict=()
  [ -f "fuzz/dicts/$target.dict" ] && dict=("-dict=fuzz/dicts/$target.dict")
  log="fuzz/logs/$target.log"
  before=$(find "fuzz/artifacts/$target" -type f | wc -l)
  echo "fuzzing $target for ${seconds}s"
  started=$(date +%s)
  "$bin_dir/$target" -artifact_prefix="fuzz/artifacts/$target/" \
    -max_total_time="$seconds" -timeout=10 -print_final_stats=1 "${dict[@]}" \
    "fuzz/corpus/$target" "fuzz/seeds/$target" "fuzz/regressions/$target" >"$log" 2>&1
  status=$?
  # libFuzzer's own time ("Done N runs in T second(s)"); the wall time when it crashed first.
  elapsed=$(grep -oE '^Done [0-9]+ runs in [0-9]+ second' "$log" | tail -n 1 | awk '{print $5}')
  [ -n "$elapsed" ] || elapsed=$(( $(date +%s) - started ))
  # libFuzzer's final stats; `#N DONE` (or the last `#N` status line) when they are missing.
  execs=$(grep -oE 'stat::number_of_executed_units: *[0-9]+' "$log" | tail -n 1 | grep -oE '[0-9]+$')
  [ -n "$execs" ] || execs=$(grep -oE '^#[0-9]+' "$log" | tail -n 1 | tr -d '#')
  crashes=$(( $(find "fuzz/artifacts/$target" -type f | wc -l) - before ))
  corpus=$(find "fuzz/corpus/$target" -type f | wc -l)
  outcome=ok
  if [ "$crashes" -gt 0 ]; then
    outcome="CRASH: see fuzz/artifacts/$target, $log"
    failed=1
  elif [ "$status" -ne 0 ]; then
    outcome="FAILED (exit $status): see $log"
    failed=1
  fi
  rows+=("$(printf '%-18s %14s %10s %8s %9s  %s' "$target" "${execs:-?}" \
    "$(( ${execs:-0} / (elapsed > 0 ? elapsed : 1) ))" "$crashes" "$corpus" "$outcome")")
done

echo
printf '%-18s %14s %10s %8s %9s  %s\n' target executions "execs/s" crashes corpus result
for row in "${rows[@]}"; do echo "$row"; done
echo "(${seconds}s per target, sanitizer: $sanitizer)"
exit "$failed"
