# Shared helpers for the reliability suites (scripts/reliability/*.sh).
#
# Source it from a suite script:
#   . "$(dirname "$0")/lib.sh"
#
# Conventions (scripts/test-all.sh relies on them):
#   RESULTS      file the caller names; every check appends one line to it:
#                  PASS name detail
#                  FAIL name detail
#                Defaults to a fresh temp file when unset, so a suite runs alone.
#   check NAME cmd...   runs cmd, records PASS/FAIL NAME with the last line of its
#                output and its duration as detail; returns cmd's status.
#   record PASS|FAIL NAME DETAIL   records a verdict computed by the caller.
#   summary SUITE       prints "SUITE: N passed, N failed" for this script's checks
#                and returns 1 when any failed (use: `summary fsx; exit $?`).
#   ckptfs_bin   path of the binary: ${CKPTFS_BIN:-target/release/ckptfs}, built
#                with `cargo build --release` when missing.
#   mount_layout CONFIG BACKING MNT   mounts BACKING on MNT with CONFIG (a path, a
#                name in mount-configs/, or "" for the embedded default), daemonized.
#   unmount MNT  commits and unmounts (`ckptfs umount`), detaching a dead mount.
#   Every mount made with mount_layout, and every tmpfs made with mount_tmpfs, is
#   undone on exit.
#   LOG_DIR      where suites keep their logs (default: a temp dir, printed).

set -u

RELIABILITY_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_ROOT=$(cd "$RELIABILITY_DIR/../.." && pwd)
cd "$REPO_ROOT" || exit 2

export PATH="$HOME/.cargo/bin:$PATH"

WORK_ROOT=${WORK_ROOT:-/tmp}
if [ -z "${RESULTS:-}" ]; then
    RESULTS=$(mktemp "$WORK_ROOT/ckptfs-results.XXXXXX")
fi
touch "$RESULTS"
if [ -z "${LOG_DIR:-}" ]; then
    LOG_DIR=$(mktemp -d "$WORK_ROOT/ckptfs-logs.XXXXXX")
fi
mkdir -p "$LOG_DIR"

CHECKS_PASSED=0
CHECKS_FAILED=0
_MOUNTS=()
_TMPFS=()

log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

# record PASS|FAIL NAME DETAIL...
record() {
    local verdict=$1 name=$2
    shift 2
    local detail="$*"
    detail=${detail//$'\n'/ }
    printf '%s %s %s\n' "$verdict" "$name" "$detail" >>"$RESULTS"
    printf '%s %s %s\n' "$verdict" "$name" "$detail"
    if [ "$verdict" = PASS ]; then
        CHECKS_PASSED=$((CHECKS_PASSED + 1))
    else
        CHECKS_FAILED=$((CHECKS_FAILED + 1))
    fi
}

# check NAME cmd...: the command's output goes to $LOG_DIR/NAME.log.
check() {
    local name=$1
    shift
    local logf="$LOG_DIR/${name//\//_}.log"
    local start rc end last
    start=$(date +%s.%N)
    "$@" >"$logf" 2>&1
    rc=$?
    end=$(date +%s.%N)
    last=$(grep -v '^[[:space:]]*$' "$logf" | tail -n 1 | cut -c1-200)
    local secs
    secs=$(awk -v a="$start" -v b="$end" 'BEGIN { printf "%.1f", b - a }')
    if [ $rc -eq 0 ]; then
        record PASS "$name" "${secs}s: $last"
    else
        record FAIL "$name" "rc=$rc ${secs}s: $last (log: $logf)"
        tail -n 20 "$logf" | sed 's/^/    /' >&2
    fi
    return $rc
}

summary() {
    local suite=$1
    echo "$suite: $CHECKS_PASSED passed, $CHECKS_FAILED failed (results: $RESULTS, logs: $LOG_DIR)"
    [ "$CHECKS_FAILED" -eq 0 ]
}

need_root() {
    if [ "$(id -u)" -ne 0 ]; then
        echo "this suite needs root (FUSE mounts, tmpfs, user switching)" >&2
        exit 2
    fi
}

ckptfs_bin() {
    local bin=${CKPTFS_BIN:-target/release/ckptfs}
    case $bin in
    /*) ;;
    *) bin="$REPO_ROOT/$bin" ;;
    esac
    if [ ! -x "$bin" ]; then
        log "building $bin"
        cargo build --release >&2 || return 1
    fi
    echo "$bin"
}

# need_apt COMMAND PACKAGE...: installs the packages when COMMAND is missing.
need_apt() {
    local cmd=$1
    shift
    if ! command -v "$cmd" >/dev/null 2>&1; then
        log "installing $* (apt-get)"
        DEBIAN_FRONTEND=noninteractive apt-get install -y "$@" >&2 ||
            { apt-get update >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y "$@" >&2; } ||
            return 1
    fi
}

# need_dpkg PACKAGE...: installs Debian packages that provide no command.
need_dpkg() {
    local missing=()
    local p
    for p in "$@"; do
        dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
    done
    if [ ${#missing[@]} -gt 0 ]; then
        log "installing ${missing[*]} (apt-get)"
        DEBIAN_FRONTEND=noninteractive apt-get install -y "${missing[@]}" >&2 ||
            { apt-get update >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y "${missing[@]}" >&2; } ||
            return 1
    fi
}

# need_cargo BINARY CRATE: `cargo install --locked CRATE` unless BINARY is on PATH
# (~/.cargo/bin included).
need_cargo() {
    local bin=$1 crate=$2
    if ! command -v "$bin" >/dev/null 2>&1; then
        log "installing $crate (cargo install --locked, a few minutes)"
        cargo install --locked "$crate" >&2 || return 1
    fi
}

# The layout config for NAME: a path as given, else mount-configs/NAME.toml.
config_path() {
    case $1 in
    "") echo "" ;;
    */* | *.toml) echo "$1" ;;
    *) echo "$REPO_ROOT/mount-configs/$1.toml" ;;
    esac
}

# Lossless layouts: every mount-configs/*.toml this build accepts whose stored
# dtype is "keep" (lossy layouts round floats, which byte-exact tools reject).
lossless_layouts() {
    local bin f name out
    bin=$(ckptfs_bin) || return 1
    for f in "$REPO_ROOT"/mount-configs/*.toml; do
        name=$(basename "$f" .toml)
        if ! out=$("$bin" check-config "$f" 2>&1); then
            log "layout $name skipped: $(echo "$out" | head -n 1)"
            continue
        fi
        if ! echo "$out" | grep -q '"dtype": "keep"'; then
            log "layout $name skipped: lossy (stored dtype $(echo "$out" | sed -n 's/.*"dtype": "\(.*\)".*/\1/p'))"
            continue
        fi
        echo "$name"
    done
}

# mount_layout CONFIG BACKING MNT
mount_layout() {
    local config bin
    config=$(config_path "$1")
    local backing=$2 mnt=$3
    bin=$(ckptfs_bin) || return 1
    mkdir -p "$backing" "$mnt"
    local args=(mount --daemon)
    [ -n "$config" ] && args+=(--config "$config")
    if ! CKPTFS_LOG=${CKPTFS_LOG:-warn} "$bin" "${args[@]}" "$backing" "$mnt" >&2; then
        log "mount of $backing on $mnt (config '${1}') failed"
        return 1
    fi
    _MOUNTS+=("$mnt")
}

# unmount MNT: commit and unmount; a dead mount is detached. Status of `ckptfs umount`.
unmount() {
    local mnt=$1 bin rc
    bin=$(ckptfs_bin) || return 1
    "$bin" umount "$mnt" >&2
    rc=$?
    if [ $rc -ne 0 ] && grep -qs " $(realpath -m "$mnt") fuse" /proc/mounts; then
        fusermount3 -u -z "$mnt" 2>/dev/null || umount -l "$mnt" 2>/dev/null
    fi
    local kept=() m
    for m in "${_MOUNTS[@]}"; do
        [ "$m" != "$mnt" ] && kept+=("$m")
    done
    _MOUNTS=("${kept[@]}")
    return $rc
}

# is_mounted MNT: a live FUSE mount answers at MNT.
is_mounted() {
    mountpoint -q "$1" && stat "$1" >/dev/null 2>&1
}

# mount_tmpfs DIR SIZE: a private tmpfs (e.g. size=64m) undone on exit.
mount_tmpfs() {
    mkdir -p "$1"
    mount -t tmpfs -o "size=$2" tmpfs "$1" || return 1
    _TMPFS+=("$1")
}

drop_caches() {
    sync
    echo 3 >/proc/sys/vm/drop_caches 2>/dev/null || log "could not drop caches"
}

_cleanup() {
    local m
    for m in "${_MOUNTS[@]}"; do
        unmount "$m" 2>/dev/null
    done
    for m in "${_TMPFS[@]}"; do
        umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null
    done
}
trap _cleanup EXIT
trap 'exit 130' INT TERM
