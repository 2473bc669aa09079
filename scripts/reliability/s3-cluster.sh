#!/usr/bin/env bash
# The S3 test cluster (scripts/s3-cluster.sh: three Garage nodes on loopback,
# replication factor 3) and what a checkpoint store needs of it, driven with
# TensorStore's own `ocdbt`-over-`s3` kvstore (scripts/s3_tensorstore.py):
#   up            a new cluster serves S3 on every node
#   roundtrip     a 64 MiB array written and read back exactly
#   node-killed   node 3 SIGKILLed in the middle of a 256 MiB save: the save
#                 completes (quorum 2 of 3) and reads back exactly, also after
#                 the node returns
#   all-stopped   every node stopped: a save fails within S3_FAIL_WITHIN s
#                 (default 60) instead of hanging
#   restart       the cluster comes back (`up` on its directory): every array
#                 committed before reads back exactly
# Needs `garage` (cargo install --locked garage@2.5.0) and python tensorstore.
. "$(dirname "$0")/lib.sh"

S3_FAIL_WITHIN=${S3_FAIL_WITHIN:-60}
need_cargo garage garage@2.5.0 || { record FAIL s3/install "cargo install garage@2.5.0 failed"; summary s3; exit 1; }

WORK=$(mktemp -d "$WORK_ROOT/ckptfs-s3.XXXXXX")
export CKPTFS_S3_DIR=$WORK/cluster
CLUSTER=$REPO_ROOT/scripts/s3-cluster.sh
TS=$REPO_ROOT/scripts/s3_tensorstore.py
trap 'bash "$CLUSTER" destroy >/dev/null 2>&1; rm -rf "$WORK"' EXIT

check s3/up bash "$CLUSTER" up || { summary s3; exit 1; }
eval "$(bash "$CLUSTER" env)"

check s3/roundtrip bash -c "python3 '$TS' write roundtrip 1 64 && python3 '$TS' read roundtrip 1 64"

node_killed() {
    python3 "$TS" write degraded 2 256 &
    local writer=$!
    sleep 1
    kill -0 "$writer" 2>/dev/null || { echo "the save ended before the node was killed: use a larger one"; return 1; }
    bash "$CLUSTER" kill 3 || return 1
    echo "node 3 killed while the save ran"
    wait "$writer" || { echo "the save failed with one node of three down"; return 1; }
    python3 "$TS" read degraded 2 256 || return 1
    bash "$CLUSTER" start 3 || return 1
    python3 "$TS" read degraded 2 256
}
check s3/node-killed node_killed

all_stopped() {
    bash "$CLUSTER" down || return 1
    local start rc secs
    start=$(date +%s.%N)
    timeout $((S3_FAIL_WITHIN + 30)) python3 "$TS" write refused 3 4
    rc=$?
    secs=$(awk -v a="$start" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')
    [ "$rc" -ne 0 ] || { echo "a save succeeded with every node stopped"; return 1; }
    [ "$rc" -ne 124 ] || { echo "the save hung for $((S3_FAIL_WITHIN + 30)) s"; return 1; }
    awk -v s="$secs" -v l="$S3_FAIL_WITHIN" 'BEGIN { exit !(s <= l) }' ||
        { echo "the save took ${secs}s to fail (limit ${S3_FAIL_WITHIN}s)"; return 1; }
    echo "the save failed after ${secs}s with every node stopped"
}
check s3/all-stopped all_stopped

restarted() {
    bash "$CLUSTER" up >/dev/null || return 1
    python3 "$TS" read roundtrip 1 64 && python3 "$TS" read degraded 2 256
}
check s3/restart restarted

summary s3
