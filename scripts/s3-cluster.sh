#!/usr/bin/env bash
# A three-node Garage cluster on loopback (replication factor 3, quorum 2): the
# S3 store that tests, CI and `ckptfs bench` use.
#
#   scripts/s3-cluster.sh up        start the cluster (first time: create it, with one
#                                   bucket and one key); prints `export` lines
#   scripts/s3-cluster.sh env       print the `export` lines again
#   scripts/s3-cluster.sh status    which nodes run, and Garage's own view
#   scripts/s3-cluster.sh stop N    stop node N (1–3) cleanly;  kill N: SIGKILL it
#   scripts/s3-cluster.sh start N   start node N again
#   scripts/s3-cluster.sh down      stop every node (the data stays; `up` restarts it)
#   scripts/s3-cluster.sh destroy   stop every node and remove the cluster's directory
#
# Use it from a shell:  eval "$(scripts/s3-cluster.sh up)"
#
# State lives in $CKPTFS_S3_DIR (default /tmp/ckptfs-s3): per node a config, its
# metadata and data, a log and a pid file, and cluster.env. Ports are picked
# free at creation (S3 API, RPC and admin per node), so two clusters in two
# directories can run side by side. Every node serves the S3 API;
# AWS_ENDPOINT_URL names node 1's, CKPTFS_S3_ENDPOINTS all three (kill node 2 or
# 3 to test quorum without losing the endpoint).
#
# Needs the `garage` binary (2.x): `cargo install --locked garage@2.5.0`
# (scripts/test-all.sh installs it when missing) or GARAGE_BIN.
set -euo pipefail

DIR=${CKPTFS_S3_DIR:-/tmp/ckptfs-s3}
GARAGE=${GARAGE_BIN:-$(command -v garage || echo "$HOME/.cargo/bin/garage")}
NODES=(1 2 3)
BUCKET=ckptfs
# How long `up`/`start` wait for the nodes to see each other.
READY_TIMEOUT=${CKPTFS_S3_READY_TIMEOUT:-60}

die() { echo "s3-cluster: $*" >&2; exit 1; }
cfg() { echo "$DIR/node$1/garage.toml"; }
g() { # g N args...: the garage CLI against node N
    local n=$1
    shift
    "$GARAGE" -c "$(cfg "$n")" "$@"
}
pid_of() { # the pid of node N when it runs
    local f="$DIR/node$1/pid" p
    [ -f "$f" ] || return 1
    p=$(cat "$f")
    kill -0 "$p" 2>/dev/null && [ "$(readlink "/proc/$p/exe" 2>/dev/null)" = "$(readlink -f "$GARAGE")" ] &&
        echo "$p"
}
port() { # port N kind(s3|rpc|admin)
    local off
    case $2 in s3) off=0 ;; rpc) off=1 ;; admin) off=2 ;; esac
    echo $((BASE_PORT + 3 * ($1 - 1) + off))
}

# Nine consecutive free loopback ports, starting somewhere in 20000–59000.
pick_ports() {
    python3 - <<'EOF'
import random, socket
for _ in range(200):
    base = random.randrange(20000, 59000)
    socks = []
    try:
        for p in range(base, base + 9):
            s = socket.socket()
            s.bind(("127.0.0.1", p))
            socks.append(s)
    except OSError:
        continue
    finally:
        for s in socks:
            s.close()
    print(base)
    break
else:
    raise SystemExit("no free ports")
EOF
}

write_config() { # write_config N PEERS (a TOML array body)
    local n=$1 peers=$2
    cat >"$(cfg "$n")" <<EOF
# Node $n of the ckptfs test cluster (scripts/s3-cluster.sh).
metadata_dir = "$DIR/node$n/meta"
data_dir = "$DIR/node$n/data"
db_engine = "sqlite"
replication_factor = 3
consistency_mode = "consistent"
rpc_bind_addr = "127.0.0.1:$(port "$n" rpc)"
rpc_public_addr = "127.0.0.1:$(port "$n" rpc)"
rpc_secret = "$RPC_SECRET"
bootstrap_peers = [$peers]

[s3_api]
s3_region = "garage"
api_bind_addr = "127.0.0.1:$(port "$n" s3)"
root_domain = ".s3.garage.localhost"

[admin]
api_bind_addr = "127.0.0.1:$(port "$n" admin)"
admin_token = "$ADMIN_TOKEN"
EOF
    chmod 600 "$(cfg "$n")"
}

start_node() {
    local n=$1 p try
    pid_of "$n" >/dev/null && return 0
    mkdir -p "$DIR/node$n/meta" "$DIR/node$n/data"
    for try in 1 2 3 4 5 6; do
        setsid "$GARAGE" -c "$(cfg "$n")" server >>"$DIR/node$n/log" 2>&1 </dev/null &
        p=$!
        echo "$p" >"$DIR/node$n/pid"
        # `status` goes through the node's RPC listener (`node id` reads the
        # key from disk and answers before the daemon listens).
        for _ in $(seq 1 $((READY_TIMEOUT * 10))); do
            if ! kill -0 "$p" 2>/dev/null; then
                # Garage panics when its ports are still taken: a node
                # killed a moment ago may not have let go of them yet.
                [ "$try" -lt 6 ] && { sleep 1; continue 2; }
                die "node $n exited at start: $(grep -m1 -E 'panicked|Error' "$DIR/node$n/log" | tail -c 300) (log: $DIR/node$n/log)"
            fi
            g "$n" status >/dev/null 2>&1 && { connect_peers "$n"; return 0; }
            sleep 0.1
        done
        die "node $n did not answer within ${READY_TIMEOUT}s (log: $DIR/node$n/log)"
    done
}

# A restarted node finds its peers from its config, but only on its next
# retry round (tens of seconds): connect it at once to the peers that run.
connect_peers() {
    local n=$1 m ids
    [ -n "${NODE_IDS:-}" ] || return 0
    read -r -a ids <<<"$NODE_IDS"
    for m in "${NODES[@]}"; do
        [ "$m" = "$n" ] && continue
        pid_of "$m" >/dev/null || continue
        g "$n" node connect "${ids[$((m - 1))]}@127.0.0.1:$(port "$m" rpc)" >/dev/null 2>>"$DIR/node$n/log" || true
    done
}

stop_node() { # stop_node N SIGNAL
    local n=$1 sig=$2 p
    p=$(pid_of "$n") || return 0
    kill "-$sig" "$p" 2>/dev/null || true
    for _ in $(seq 1 100); do
        # Gone, or a zombie nobody has reaped yet (it holds nothing).
        if ! kill -0 "$p" 2>/dev/null || grep -qs ') Z ' "/proc/$p/stat"; then
            rm -f "$DIR/node$n/pid"
            return 0
        fi
        sleep 0.1
    done
    kill -KILL "$p" 2>/dev/null || true
    rm -f "$DIR/node$n/pid"
}

# wait_connected [N]: waits until node N (default: the first that runs) sees
# every running node connected. A node that was down stays "failed" in its
# peers' view for up to a minute after it is back, while its own view is
# current at once: ask the node that was started.
wait_connected() {
    local want=0 n first=${1:-} deadline
    for n in "${NODES[@]}"; do
        if pid_of "$n" >/dev/null; then
            want=$((want + 1))
            [ -n "$first" ] || first=$n
        fi
    done
    [ "$want" -gt 0 ] || die "no node runs"
    deadline=$(($(date +%s) + READY_TIMEOUT))
    while :; do
        # `garage status` lists the healthy (connected) nodes first, one per line
        # with a 16-hex-digit id, then the failed ones under their own header.
        local healthy
        healthy=$(g "$first" status 2>/dev/null | sed '/FAILED NODES/,$d' | grep -cE '^[0-9a-f]{16} ' || true)
        [ "$healthy" -ge "$want" ] && return 0
        [ "$(date +%s)" -lt "$deadline" ] || die "only $healthy of $want nodes connected after ${READY_TIMEOUT}s"
        sleep 0.5
    done
}

# s3_serves N SECS: a write and a read through node N's S3 API work within
# SECS (each try bounded: a request to a wedged node never returns).
s3_serves() {
    local n=$1 deadline=$(($(date +%s) + $2))
    until timeout 10 python3 - "http://127.0.0.1:$(port "$n" s3)" <<'EOF' >/dev/null 2>&1; do
import os, sys, tensorstore as ts
store = ts.KvStore.open({"driver": "s3", "bucket": os.environ["CKPTFS_S3_BUCKET"],
    "endpoint": sys.argv[1], "aws_region": os.environ["AWS_REGION"],
    "path": ".ckptfs-s3-ready/"}).result()
store.write("probe", b"ok").result()
assert store.read("probe").result().value == b"ok"
EOF
        [ "$(date +%s)" -lt "$deadline" ] || return 1
        sleep 0.5
    done
}

# Waits until the S3 API of every running node serves. A node that came back
# from a stop of every node with its S3 API accepting and never answering
# (seen once with Garage 2.5.0, its log silent from then on) is restarted once.
wait_s3() {
    local n half=$((READY_TIMEOUT / 2))
    . "$DIR/cluster.env"
    for n in "${NODES[@]}"; do
        pid_of "$n" >/dev/null || continue
        s3_serves "$n" "$half" && continue
        echo "node $n's S3 API did not serve within ${half}s: restarting it" >&2
        stop_node "$n" KILL
        start_node "$n"
        wait_connected "$n"
        s3_serves "$n" "$READY_TIMEOUT" || die "node $n's S3 API did not serve within ${READY_TIMEOUT}s, nor after a restart"
    done
}

load_state() {
    [ -f "$DIR/cluster.state" ] || return 1
    . "$DIR/cluster.state"
}

create() {
    mkdir -p "$DIR"
    BASE_PORT=$(pick_ports)
    RPC_SECRET=$(python3 -c 'import secrets; print(secrets.token_hex(32))')
    ADMIN_TOKEN=$(python3 -c 'import secrets; print(secrets.token_hex(32))')
    local key_id key_secret n ids=() peers=""
    key_id=GK$(python3 -c 'import secrets; print(secrets.token_hex(12))')
    key_secret=$(python3 -c 'import secrets; print(secrets.token_hex(32))')
    for n in "${NODES[@]}"; do
        mkdir -p "$DIR/node$n"
        write_config "$n" ""
        start_node "$n"
        ids+=("$(g "$n" node id -q | tr -d '[:space:]' | cut -d@ -f1)")
    done
    for n in 2 3; do
        g 1 node connect "${ids[$((n - 1))]}@127.0.0.1:$(port "$n" rpc)" >/dev/null
    done
    # Every node knows every peer from its config, so a restart of all three
    # (or of one while the others are down) finds the cluster again.
    for n in "${NODES[@]}"; do
        peers=""
        for m in "${NODES[@]}"; do
            [ "$m" = "$n" ] && continue
            peers+="\"${ids[$((m - 1))]}@127.0.0.1:$(port "$m" rpc)\", "
        done
        write_config "$n" "${peers%, }"
    done
    wait_connected
    for n in "${NODES[@]}"; do
        g 1 layout assign -z "dc$n" -c 1G "${ids[$((n - 1))]:0:16}" >/dev/null
    done
    g 1 layout apply --version 1 >/dev/null
    g 1 bucket create "$BUCKET" >/dev/null
    g 1 key import --yes -n ckptfs "$key_id" "$key_secret" >/dev/null
    g 1 bucket allow --read --write --owner "$BUCKET" --key "$key_id" >/dev/null
    cat >"$DIR/cluster.state" <<EOF
BASE_PORT=$BASE_PORT
NODE_IDS="${ids[*]}"
RPC_SECRET=$RPC_SECRET
ADMIN_TOKEN=$ADMIN_TOKEN
EOF
    cat >"$DIR/cluster.env" <<EOF
export AWS_ACCESS_KEY_ID=$key_id
export AWS_SECRET_ACCESS_KEY=$key_secret
export AWS_REGION=garage
export AWS_DEFAULT_REGION=garage
export AWS_ENDPOINT_URL=http://127.0.0.1:$(port 1 s3)
export AWS_ALLOW_HTTP=true
export CKPTFS_S3_BUCKET=$BUCKET
export CKPTFS_S3_ENDPOINTS="http://127.0.0.1:$(port 1 s3) http://127.0.0.1:$(port 2 s3) http://127.0.0.1:$(port 3 s3)"
export CKPTFS_S3_DIR=$DIR
EOF
    chmod 600 "$DIR/cluster.state" "$DIR/cluster.env"
}

cmd=${1:-}
case $cmd in
up)
    [ -x "$GARAGE" ] || die "no garage binary: cargo install --locked garage@2.5.0 (or set GARAGE_BIN)"
    if load_state; then
        for n in "${NODES[@]}"; do start_node "$n"; done
        wait_connected
    else
        create
    fi
    wait_s3
    cat "$DIR/cluster.env"
    ;;
env)
    [ -f "$DIR/cluster.env" ] || die "no cluster in $DIR (run: $0 up)"
    cat "$DIR/cluster.env"
    ;;
status)
    load_state || die "no cluster in $DIR"
    for n in "${NODES[@]}"; do
        if p=$(pid_of "$n"); then echo "node $n: running (pid $p, s3 port $(port "$n" s3))"; else echo "node $n: stopped"; fi
    done
    for n in "${NODES[@]}"; do
        pid_of "$n" >/dev/null && { g "$n" status; break; }
    done
    ;;
stop | kill | start)
    load_state || die "no cluster in $DIR"
    n=${2:-}
    [[ $n =~ ^[123]$ ]] || die "usage: $0 $cmd 1|2|3"
    case $cmd in
    stop) stop_node "$n" TERM ;;
    kill) stop_node "$n" KILL ;;
    start) start_node "$n" && wait_connected "$n" ;;
    esac
    ;;
down)
    load_state || exit 0
    for n in "${NODES[@]}"; do stop_node "$n" TERM; done
    ;;
destroy)
    if load_state; then
        for n in "${NODES[@]}"; do stop_node "$n" KILL; done
    fi
    rm -rf "$DIR"
    ;;
*)
    sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'
    [ -z "$cmd" ] || exit 2
    ;;
esac
