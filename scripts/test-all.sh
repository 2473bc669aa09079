#!/usr/bin/env bash
# The whole test suite: installs what is missing, builds, runs `cargo test
# --release`, then every reliability suite (scripts/reliability/*.sh), and ends
# with one line: "N passed, N failed" (cargo tests + suite checks). Exit status
# 1 when anything failed. A suite that cannot run counts as failed.
#
# Installs when missing: apt diffutils fonts-dejavu-core fio stress-ng
# libacl1-dev acl; pip numpy safetensors tensorstore zarr torch transformers; the nightly
# toolchain (cargo fuzz); `cargo install --locked fsx pjdfstest cargo-fuzz
# garage@2.5.0` (Garage: the S3 test cluster, scripts/s3-cluster.sh).
# Needs root and /dev/fuse. Logs: $LOG_DIR (printed). `--install-only`: just
# the installs.
set -uo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
export CARGO_TERM_COLOR=never

WORK_ROOT=${WORK_ROOT:-/tmp}
RESULTS=$(mktemp "$WORK_ROOT/ckptfs-results.XXXXXX")
LOG_DIR=${LOG_DIR:-$(mktemp -d "$WORK_ROOT/ckptfs-logs.XXXXXX")}
export RESULTS LOG_DIR WORK_ROOT
mkdir -p "$LOG_DIR"
echo "logs: $LOG_DIR"

TIMES=()
# stage NAME cmd...: runs cmd, prints and keeps its duration.
stage() {
    local name=$1 start rc
    shift
    echo "== $name"
    start=$(date +%s)
    "$@"
    rc=$?
    TIMES+=("$(printf '%-28s %5ds%s' "$name" $(($(date +%s) - start)) "$([ $rc -ne 0 ] && echo "  (exit $rc)")")")
    return $rc
}
fail() { # fail NAME DETAIL: a check that could not run
    printf 'FAIL %s %s\n' "$1" "$2" | tee -a "$RESULTS"
}

install() {
    local apt=() p
    for p in diffutils fonts-dejavu-core fio stress-ng libacl1-dev acl; do
        dpkg -s "$p" >/dev/null 2>&1 || apt+=("$p")
    done
    if [ ${#apt[@]} -gt 0 ]; then
        { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${apt[@]}"; } \
            >"$LOG_DIR/apt.log" 2>&1 || fail install/apt "apt-get install ${apt[*]} failed (log: $LOG_DIR/apt.log)"
    fi
    if ! python3 -c "import numpy, safetensors, torch, tensorstore, zarr, transformers" 2>/dev/null; then
        python3 -m pip install -q --disable-pip-version-check numpy safetensors tensorstore zarr torch transformers \
            >"$LOG_DIR/pip.log" 2>&1 || fail install/pip "pip install failed (log: $LOG_DIR/pip.log)"
    fi
    if ! rustup run nightly rustc --version >/dev/null 2>&1; then
        rustup toolchain install nightly --profile minimal >"$LOG_DIR/nightly.log" 2>&1 ||
            fail install/nightly "rustup toolchain install nightly failed"
    fi
    local bin crate
    for crate in fsx pjdfstest cargo-fuzz garage@2.5.0; do
        bin=${crate%@*}
        [ -x "$HOME/.cargo/bin/$bin" ] && continue
        cargo install --locked "$crate" >"$LOG_DIR/install-$crate.log" 2>&1 ||
            fail "install/$crate" "cargo install --locked $crate failed (log: $LOG_DIR/install-$crate.log)"
    done
    [ -e /dev/fuse ] || fail install/fuse "/dev/fuse is missing"
}

build() {
    cargo build --release >"$LOG_DIR/build.log" 2>&1 ||
        { fail build "cargo build --release failed (log: $LOG_DIR/build.log)"; return 1; }
}

CARGO_PASSED=0
CARGO_FAILED=0
cargo_tests() {
    local logf="$LOG_DIR/cargo-test.log" rc
    cargo test --release >"$logf" 2>&1
    rc=$?
    read -r CARGO_PASSED CARGO_FAILED < <(awk '/^test result:/ {
        for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i }
    } END { print p + 0, f + 0 }' "$logf")
    grep -E '^test result:|^failures:|^    [a-z_:]+$' "$logf" | head -n 60
    if [ $rc -ne 0 ] && [ "$CARGO_FAILED" -eq 0 ]; then
        # It did not get to run every test (a build error, a crash): one failure.
        fail cargo-test "exit $rc without a failed test line (log: $logf)"
    fi
    echo "cargo test: $CARGO_PASSED passed, $CARGO_FAILED failed"
    return $rc
}

suite() { # suite SCRIPT
    local name rc before after
    name=$(basename "$1" .sh)
    before=$(grep -c '^FAIL ' "$RESULTS")
    bash "$1" 2>&1 | tee "$LOG_DIR/suite-$name.log" | grep -E '^(PASS|FAIL) |passed, .* failed'
    rc=${PIPESTATUS[0]}
    after=$(grep -c '^FAIL ' "$RESULTS")
    if [ "$rc" -ne 0 ] && [ "$after" -eq "$before" ]; then
        fail "$name/suite" "exited $rc without recording a failure (log: $LOG_DIR/suite-$name.log)"
    fi
    return "$rc"
}

total_start=$(date +%s)
stage install install
if [ "${1:-}" = --install-only ]; then
    ! grep -q '^FAIL ' "$RESULTS"
    exit $?
fi
stage build build
stage "cargo test" cargo_tests
for s in scripts/reliability/*.sh; do
    [ "$(basename "$s")" = lib.sh ] && continue
    stage "$(basename "$s" .sh)" suite "$s"
done

echo "== durations"
printf '%s\n' "${TIMES[@]}"
printf '%-28s %5ds\n' total $(($(date +%s) - total_start))
grep '^FAIL ' "$RESULTS" || true
suite_passed=$(grep -c '^PASS ' "$RESULTS")
suite_failed=$(grep -c '^FAIL ' "$RESULTS")
passed=$((CARGO_PASSED + suite_passed))
failed=$((CARGO_FAILED + suite_failed))
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
