#!/usr/bin/env bash
# Fuzzing (cargo fuzz, libFuzzer): the safetensors header parser and planner,
# every decoder of a backing store (OCDBT records, data-file table, file
# manifests),
# the torch zip planner, the pickle reader and the mount config parser, each
# for FUZZ_SECONDS (default 60) from the seeds in fuzz/corpus/<target>/.
# The planners get the file cut into write requests the way the filesystem
# gets it (fuzz/src/lib.rs). Prints each target's executions (libFuzzer's
# final stats); any crash, panic, timeout or leak is a FAIL and its input is
# kept under $LOG_DIR (reproduce: cargo +nightly fuzz run TARGET FILE).
. "$(dirname "$0")/lib.sh"

FUZZ_SECONDS=${FUZZ_SECONDS:-60}
TARGETS=(safetensors torch_zip pickle config store)

if ! rustup run nightly rustc --version >/dev/null 2>&1; then
    log "installing the nightly toolchain (cargo fuzz needs it)"
    rustup toolchain install nightly --profile minimal >&2 ||
        { record FAIL fuzz/toolchain "rustup toolchain install nightly failed"; summary fuzz; exit 1; }
fi
need_cargo cargo-fuzz cargo-fuzz ||
    { record FAIL fuzz/install "cargo install cargo-fuzz failed"; summary fuzz; exit 1; }

cd "$REPO_ROOT/fuzz" || exit 2
check fuzz/build cargo +nightly fuzz build || { summary fuzz; exit 1; }

for t in "${TARGETS[@]}"; do
    # A scratch corpus: libFuzzer adds what it finds to the first directory,
    # the seeds in the repo stay as they are.
    scratch=$(mktemp -d "$WORK_ROOT/ckptfs-fuzz-$t.XXXXXX")
    logf="$LOG_DIR/fuzz-$t.log"
    start=$(date +%s)
    # The binary `fuzz build` made (`fuzz run` would rebuild on any change to the tree).
    "target/x86_64-unknown-linux-gnu/release/$t" "$scratch" "corpus/$t" \
        -max_total_time="$FUZZ_SECONDS" -timeout=10 -rss_limit_mb=2048 \
        -print_final_stats=1 -artifact_prefix="$LOG_DIR/fuzz-$t-" >"$logf" 2>&1
    rc=$?
    secs=$(($(date +%s) - start))
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$logf" | tail -n 1)
    corpus=$(find "$scratch" -type f | wc -l)
    rm -rf "$scratch"
    if [ $rc -eq 0 ] && [ -n "$execs" ] && [ "$execs" -gt 0 ]; then
        record PASS "fuzz/$t" "${execs:-0} executions in ${secs}s, $corpus new corpus inputs"
    else
        crash=$(ls "$LOG_DIR"/fuzz-"$t"-* 2>/dev/null | head -n 1)
        why=$(grep -m1 -E "panicked at|ERROR: libFuzzer|SUMMARY" "$logf" | cut -c1-200)
        record FAIL "fuzz/$t" "rc=$rc after ${secs}s, ${execs:-0} executions: ${why:-see $logf}${crash:+ (input: $crash)}"
        tail -n 30 "$logf" | sed 's/^/    /' >&2
    fi
done
summary fuzz
exit $?
