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
# and ckptfs on it (a checkpoint saved through a packed mount, then
# `ckptfs publish`ed):
#   publish       safetensors, torch.save, small files and a subdirectory
#                 published; publishing again uploads nothing
#   readers       two read-only s3:// mounts (separate processes and cache
#                 dirs) and one through `mount -t ckptfs`: byte-exact, and the
#                 tensors load with safetensors and torch
#   verify        `ckptfs verify s3://…` is clean, and finds a flipped byte in
#                 a corrupted copy
#   tensorstore   TensorStore's ocdbt-over-s3 reads the published database
#                 key for key as it reads the local one
#   reader-node-killed  node 3 killed: cold reads through a mount still exact
#   new-version   a changed file published again: a mount made before keeps
#                 the old bytes, a new one shows the new
#   readers-all-stopped every node stopped: a cold read fails (EIO) within
#                 S3_FAIL_WITHIN s, the mount still answers; after the restart
#                 the same read is exact and verify is clean
# and ckptfs writing to the store itself (a writer mount of s3://…, which
# publishes each commit; `fsync` waits for the store):
#   writer        safetensors, torch.save and small files saved and fsynced:
#                 a reader mount (own cache dir) has them byte-exact; a second
#                 writer of the same prefix is refused
#   writers-race  a second writer of a held prefix is refused at mount (the
#                 writers' leases), readers see the first one's file; of two
#                 writers started at once on an empty prefix, at most one
#                 comes up
#   store-section endpoint, region and keys from a config's [store] section
#                 (no AWS_* set): the writer publishes, `verify --config`
#                 checks it; a wrong key is refused
#   bench         `ckptfs bench --store`: s3-default and s3-ts-ocdbt rows
#                 verified beside default, s3-passthrough unavailable, the
#                 runs' prefixes deleted after
#   writer-node-killed  node 3 killed in the middle of a 256 MiB save: the
#                 save and its fsync complete, a new reader has it exact
#   writer-killed the writer SIGKILLed in the middle of a save: the store
#                 keeps the last version (the new file absent or empty); a
#                 remount with the same cache dir goes on
#   writer-all-stopped  every node stopped: an fsync fails with EIO within
#                 S3_FAIL_WITHIN s, the mount still answers
#   writer-restarted  after the restart, unmount publishes the rest: a new
#                 reader has every file exact, and verify is clean
# and the deletion of what no kept version uses (a writer keeping one
# version, leases that expire after 6 s):
#   gc-writer     a 32 MiB file saved 5 times: the writer drops the old
#                 copies locally and from the store, which ends with one copy
#   gc-reader-holds a reader of the version before: 3 more saves delete
#                 nothing it reads (sweeps held off, its file exact from the
#                 store); once it unmounts, the store is swept
#   gc-compact    `ckptfs compact s3://…` is refused while a writer holds the
#                 prefix, and while a SIGKILLed writer's lease lives; then it
#                 removes what no kept version references and verify is
#                 clean; the writer remounted on its cache dir reclaims the
#                 killed save's leftovers from the store
#   writer-bounded a writer with --cache-size 100M saves three 48 MiB files:
#                 the oldest is evicted, the local data stays under the
#                 limit, and every file reads back exactly through
#                 it from the store, also after a remount on the same cache
#                 dir, which then goes on saving
#   property      the reference-model property test (tests/write_patterns.rs:
#                 random writes, appends, truncates, renames, unlinks, fsyncs
#                 against an in-memory model) through a writer of s3:// with a
#                 1 MiB local limit, after a remount, and through a reader
# Needs `garage` (cargo install --locked garage@2.5.0), python tensorstore,
# safetensors, torch, and root (FUSE).
. "$(dirname "$0")/lib.sh"

S3_FAIL_WITHIN=${S3_FAIL_WITHIN:-60}
need_cargo garage garage@2.5.0 || { record FAIL s3/install "cargo install garage@2.5.0 failed"; summary s3; exit 1; }

WORK=$(mktemp -d "$WORK_ROOT/ckptfs-s3.XXXXXX")
export CKPTFS_S3_DIR=$WORK/cluster
CLUSTER=$REPO_ROOT/scripts/s3-cluster.sh
TS=$REPO_ROOT/scripts/s3_tensorstore.py
BIN=$(ckptfs_bin) || exit 1
need_root
need_apt curl curl || { record FAIL s3/install "apt-get install curl failed"; summary s3; exit 1; }
trap '_cleanup; bash "$CLUSTER" destroy >/dev/null 2>&1; rm -rf "$WORK"' EXIT

check s3/up bash "$CLUSTER" up || { summary s3; exit 1; }
eval "$(bash "$CLUSTER" env)"

check s3/roundtrip bash -c "python3 '$TS' write roundtrip 1 64 && python3 '$TS' read roundtrip 1 64"

# kill_node3_during PID: node 3 SIGKILLed a second into the save PID,
# which must then complete.
kill_node3_during() {
    sleep 1
    kill -0 "$1" 2>/dev/null || { echo "the save ended before the node was killed: use a larger one"; return 1; }
    bash "$CLUSTER" kill 3 || return 1
    echo "node 3 killed while the save ran"
    wait "$1" || { echo "the save (or its fsync) failed with one node of three down"; return 1; }
}

node_killed() {
    python3 "$TS" write degraded 2 256 &
    kill_node3_during $! || return 1
    python3 "$TS" read degraded 2 256 || return 1
    bash "$CLUSTER" start 3 || return 1
    python3 "$TS" read degraded 2 256
}
check s3/node-killed node_killed

# --- ckptfs: a checkpoint saved locally, published, mounted from the store.
B=$WORK/backing
REF=$WORK/ref
URL=s3://$CKPTFS_S3_BUCKET/ckpt
mkdir -p "$REF"

# s3_mount NAME MNT [ARGS]: a read-only mount of $URL with its own cache dir.
s3_mount() {
    mkdir -p "$2"
    CKPTFS_LOG=warn "$BIN" mount --daemon --read-only --cache-dir "$WORK/cache-$1" "${@:3}" "$URL" "$2" >&2 || return 1
    _MOUNTS+=("$2")
}

# same MNT DIR [SKIP]: every file under DIR (but those named SKIP) is
# byte-exact under MNT.
same() {
    local f n=0
    while IFS= read -r f; do
        [ -n "${3:-}" ] && [ "$(basename "$f")" = "$3" ] && continue
        cmp "$2/$f" "$1/$f" || return 1
        n=$((n + 1))
    done < <(cd "$2" && find . -type f | sort)
    echo "$n files byte-exact under $1"
}

published() {
    mount_layout ts-ocdbt "$B" "$WORK/w" || return 1
    python3 - "$WORK/w" "$REF" <<'PY' || return 1
import os, sys
import numpy as np, torch
from safetensors.numpy import save_file
mnt, ref = sys.argv[1], sys.argv[2]
rng = np.random.default_rng(7)
t = {f"layers.{i}.weight": rng.standard_normal((1024, 2048), dtype=np.float32) for i in range(6)}
t["embed"] = rng.standard_normal((512, 300)).astype(np.float16)
torch_t = {"w": torch.from_numpy(rng.standard_normal((768, 1024), dtype=np.float32)), "step": 12}
for root in (mnt, ref):
    os.makedirs(f"{root}/run/opt", exist_ok=True)
    save_file(t, f"{root}/run/model.safetensors")
    torch.save(torch_t, f"{root}/run/opt/state.pt")
    with open(f"{root}/run/config.json", "w") as f:
        f.write('{"layers": 6}\n')
    with open(f"{root}/cold.bin", "wb") as f:
        f.write(np.random.default_rng(9).bytes(24 << 20))
PY
    unmount "$WORK/w" || return 1
    local out
    out=$("$BIN" publish "$B" "$URL") || return 1
    echo "$out"
    echo "$out" | grep -q "published generation .*: [1-9][0-9]* data files uploaded" || { echo "the first publish uploaded nothing"; return 1; }
    out=$("$BIN" publish "$B" "$URL") || return 1
    echo "$out" | grep -q ": 0 data files uploaded" || { echo "publishing again uploaded data: $out"; return 1; }
    echo "published; again: $out"
}
check s3/publish published

readers() {
    s3_mount a "$WORK/ra" && s3_mount b "$WORK/rb" || return 1
    # $WORK/rb leaves cold.bin unread for readers-all-stopped.
    same "$WORK/ra" "$REF" >/dev/null && same "$WORK/rb" "$REF" cold.bin || return 1
    python3 - "$WORK/rb" "$REF" <<'PY' || return 1
import sys
import numpy as np, torch
from safetensors import safe_open
from safetensors.numpy import load_file
mnt, ref = sys.argv[1], sys.argv[2]
want = load_file(f"{ref}/run/model.safetensors")
with safe_open(f"{mnt}/run/model.safetensors", "np") as f:
    assert sorted(f.keys()) == sorted(want), "tensor names differ"
    for k in f.keys():
        assert np.array_equal(f.get_tensor(k), want[k]), k
got = torch.load(f"{mnt}/run/opt/state.pt", mmap=True)
exp = torch.load(f"{ref}/run/opt/state.pt")
assert got["step"] == exp["step"] and torch.equal(got["w"], exp["w"]), "torch state differs"
print(f"{len(want)} safetensors tensors and the torch state load exactly")
PY
    # As mount(8) and fstab see it.
    ln -sf "$BIN" /sbin/mount.ckptfs || return 1
    mkdir -p "$WORK/rc"
    mount -t ckptfs "$URL" "$WORK/rc" -o "ro,cache_dir=$WORK/cache-c" || { echo "mount -t ckptfs $URL failed"; return 1; }
    _MOUNTS+=("$WORK/rc")
    grep -q "^ckptfs:$URL $WORK/rc fuse" /proc/mounts || { echo "/proc/mounts does not name $URL"; return 1; }
    cmp "$WORK/rc/run/model.safetensors" "$REF/run/model.safetensors" || return 1
    unmount "$WORK/rc" || return 1
    echo "two s3:// mounts and mount -t ckptfs read it exactly"
}
check s3/readers readers

verified() {
    "$BIN" verify "$URL" || return 1
    # A copy with one byte flipped in its largest data file.
    "$BIN" publish "$B" "$URL-corrupt" >/dev/null || return 1
    local f
    f=$(ls -S "$B/d" | head -n 1)
    cp "$B/d/$f" "$WORK/corrupt" || return 1
    python3 - "$WORK/corrupt" <<'PY' || return 1
import os, sys
with open(sys.argv[1], "r+b") as f:
    f.seek(os.path.getsize(sys.argv[1]) // 2)
    b = f.read(1)
    f.seek(-1, 1)
    f.write(bytes([b[0] ^ 0x40]))
PY
    curl -sSf --aws-sigv4 "aws:amz:$AWS_REGION:s3" --user "$AWS_ACCESS_KEY_ID:$AWS_SECRET_ACCESS_KEY" \
        -H "x-amz-content-sha256: UNSIGNED-PAYLOAD" -X PUT --data-binary "@$WORK/corrupt" \
        "$AWS_ENDPOINT_URL/$CKPTFS_S3_BUCKET/ckpt-corrupt/d/$f" >/dev/null || { echo "upload of the corrupted copy failed"; return 1; }
    local out rc
    out=$("$BIN" verify "$URL-corrupt" 2>&1)
    rc=$?
    [ "$rc" -eq 1 ] || { echo "verify of a corrupted copy: exit $rc, not 1: $out"; return 1; }
    echo "$out" | grep -q "^problem:" || { echo "no problem named: $out"; return 1; }
    echo "clean copy verified; corrupted copy: $(echo "$out" | grep -c '^problem:') problems"
}
check s3/verify verified

ts_reads() {
    local here there
    here=$(python3 "$REPO_ROOT/scripts/ocdbt_digest.py" "$B" 2>/dev/null) || { echo "$here"; return 1; }
    there=$(python3 "$REPO_ROOT/scripts/ocdbt_digest.py" "$URL" 2>/dev/null) || { echo "$there"; return 1; }
    [ "$here" = "$there" ] || { echo "local: $here; s3: $there"; return 1; }
    echo "TensorStore reads the same database both ways: $there"
}
check s3/tensorstore ts_reads

reader_node_killed() {
    bash "$CLUSTER" kill 3 || return 1
    # A fresh mount: nothing of it is cached yet; its block cache is kept
    # within 8 MiB while it reads 79 MiB.
    s3_mount d "$WORK/rd" --cache-size 8M || return 1
    drop_caches
    same "$WORK/rd" "$REF" || return 1
    local cached
    cached=$(find "$WORK/cache-d/blocks" -type f -printf '%s\n' | awk '{ n += $1 } END { print n + 0 }')
    [ "$cached" -le $((8 << 20)) ] || { echo "the block cache holds $cached bytes, limit 8 MiB"; return 1; }
    [ "$cached" -gt 0 ] || { echo "the block cache is empty"; return 1; }
    echo "block cache: $cached bytes (limit 8 MiB)"
    unmount "$WORK/rd" || return 1
    bash "$CLUSTER" start 3
}
check s3/reader-node-killed reader_node_killed

new_version() {
    mount_layout ts-ocdbt "$B" "$WORK/w" || return 1
    cp -r "$REF" "$WORK/ref-old" || return 1
    python3 - "$WORK/w" "$REF" <<'PY' || return 1
import sys
import numpy as np
from safetensors.numpy import save_file
t = {"layers.0.weight": np.random.default_rng(11).standard_normal((1024, 2048), dtype=np.float32)}
for root in sys.argv[1:]:
    save_file(t, f"{root}/run/model.safetensors")
    with open(f"{root}/run/config.json", "w") as f:
        f.write('{"layers": 1}\n')
PY
    unmount "$WORK/w" || return 1
    "$BIN" publish "$B" "$URL" || return 1
    cmp -s "$WORK/ref-old/run/model.safetensors" "$REF/run/model.safetensors" && { echo "the new version changed nothing"; return 1; }
    drop_caches
    same "$WORK/ra" "$WORK/ref-old" >/dev/null || { echo "a mount made before the publish changed"; return 1; }
    s3_mount e "$WORK/re" || return 1
    same "$WORK/re" "$REF" || return 1
    unmount "$WORK/re"
}
check s3/new-version new_version

# --- ckptfs writing to the store: a writer mount of $WURL.
WURL=s3://$CKPTFS_S3_BUCKET/live
WREF=$WORK/wref
WCACHE=$WORK/wcache
mkdir -p "$WREF"

s3_writer() {
    mkdir -p "$1"
    CKPTFS_LOG=info "$BIN" mount --daemon --config "$(config_path default)" \
        --cache-dir "$WCACHE" --log "$WORK/writer.log" "$WURL" "$1" >&2 || return 1
    _MOUNTS+=("$1")
}
s3_reader() {
    mkdir -p "$2"
    CKPTFS_LOG=warn "$BIN" mount --daemon --read-only --cache-dir "$WORK/cache-$1" "$WURL" "$2" >&2 || return 1
    _MOUNTS+=("$2")
}

writer() {
    s3_writer "$WORK/wm" || return 1
    python3 - "$WORK/wm" "$WREF" <<'PY' || return 1
import os, sys
import numpy as np, torch
from safetensors.numpy import save_file
def synced(path):
    fd = os.open(path, os.O_RDONLY)
    os.fsync(fd)
    os.close(fd)
rng = np.random.default_rng(21)
t = {f"h.{i}.w": rng.standard_normal((512, 1024), dtype=np.float32) for i in range(4)}
opt = {"m": torch.from_numpy(rng.standard_normal((256, 512), dtype=np.float32)), "step": 3}
for root in sys.argv[1:]:
    os.makedirs(f"{root}/step1", exist_ok=True)
    save_file(t, f"{root}/step1/model.safetensors")
    torch.save(opt, f"{root}/step1/optim.pt")
    with open(f"{root}/step1/meta.json", "w") as f:
        f.write('{"step": 1}\n')
    for name in ("model.safetensors", "optim.pt", "meta.json"):
        synced(f"{root}/step1/{name}")
    fd = os.open(f"{root}/step1", os.O_RDONLY)
    os.fsync(fd)
    os.close(fd)
PY
    # fsync returned: the store has every file.
    s3_reader wa "$WORK/wa" || return 1
    same "$WORK/wa" "$WREF" || return 1
    unmount "$WORK/wa" || return 1
    mkdir -p "$WORK/wm2"
    if CKPTFS_LOG=warn "$BIN" mount --daemon --cache-dir "$WORK/wcache2" "$WURL" "$WORK/wm2" 2>"$WORK/wm2.err"; then
        _MOUNTS+=("$WORK/wm2")
        echo "a second writer of $WURL was let in"
        return 1
    fi
    grep -q "already holds a checkpoint database" "$WORK/wm2.err" || { echo "second writer: $(cat "$WORK/wm2.err")"; return 1; }
    echo "a second writer with another cache dir is refused"
}
check s3/writer writer

writers_race() {
    # One writer per prefix, on a store that ignores conditional PUTs: a
    # second writer of a held prefix is refused at mount (the writers'
    # leases), and of two writers started at once at most one comes up.
    local url=s3://$CKPTFS_S3_BUCKET/race m up=()
    mkdir -p "$WORK/wa1" "$WORK/wb1"
    CKPTFS_LOG=warn "$BIN" mount --daemon --config "$(config_path default)" \
        --cache-dir "$WORK/race-wa1" "$url" "$WORK/wa1" >&2 || return 1
    _MOUNTS+=("$WORK/wa1")
    if CKPTFS_LOG=warn "$BIN" mount --daemon --config "$(config_path default)" \
        --cache-dir "$WORK/race-wb1" "$url" "$WORK/wb1" 2>"$WORK/wb1.err"; then
        _MOUNTS+=("$WORK/wb1")
        echo "a second writer of a held prefix came up"
        return 1
    fi
    grep -q "held by another writer mount" "$WORK/wb1.err" || { echo "refused, but not for the writer: $(cat "$WORK/wb1.err")"; return 1; }
    python3 - "$WORK/wa1/a.txt" <<'PY' || return 1
import os, sys
with open(sys.argv[1], "w") as f:
    f.write(sys.argv[1] + "\n")
    f.flush()
    os.fsync(f.fileno())
PY
    unmount "$WORK/wa1" || return 1
    mkdir -p "$WORK/wr1"
    CKPTFS_LOG=warn "$BIN" mount --daemon --read-only --cache-dir "$WORK/cache-wr1" "$url" "$WORK/wr1" >&2 || return 1
    _MOUNTS+=("$WORK/wr1")
    local shown
    shown=$(cd "$WORK/wr1" && ls -- *.txt 2>/dev/null | tr '\n' ' ')
    unmount "$WORK/wr1"
    [ "$shown" = "a.txt " ] || { echo "the store shows: $shown"; return 1; }
    echo "a second writer was refused at mount; the first one's file is on the store"
    # Two at once, on a new empty prefix: never both.
    for m in wc1 wd1; do
        mkdir -p "$WORK/$m"
        CKPTFS_LOG=warn "$BIN" mount --daemon --config "$(config_path default)" \
            --cache-dir "$WORK/race-$m" "s3://$CKPTFS_S3_BUCKET/race2" "$WORK/$m" >"$WORK/$m.out" 2>&1 &
    done
    wait
    for m in wc1 wd1; do
        if grep -qs " $(realpath -m "$WORK/$m") fuse" /proc/mounts; then
            up+=("$m")
            _MOUNTS+=("$WORK/$m")
        fi
    done
    for m in "${up[@]}"; do unmount "$WORK/$m"; done
    [ "${#up[@]}" -le 1 ] || { echo "two writers of one prefix came up at once"; return 1; }
    echo "two writers started at once: ${#up[@]} came up"
}
check s3/writers-race writers_race

store_section() {
    # Endpoint, region and keys from the config's [store] section, with
    # no AWS_* variable set; a wrong key in it is refused by the store.
    local cfg=$WORK/store.toml bad=$WORK/store-bad.toml url=s3://$CKPTFS_S3_BUCKET/conf
    { cat "$(config_path default)"; printf '\n[store]\nendpoint = "%s"\nregion = "%s"\nallow_http = true\naccess_key_id = "%s"\nsecret_access_key = "%s"\n' \
        "$AWS_ENDPOINT_URL" "$AWS_REGION" "$AWS_ACCESS_KEY_ID" "$AWS_SECRET_ACCESS_KEY"; } > "$cfg"
    sed 's/^secret_access_key = .*/secret_access_key = "wrong"/' "$cfg" > "$bad"
    mkdir -p "$WORK/cs"
    if env -u AWS_ENDPOINT_URL -u AWS_ACCESS_KEY_ID -u AWS_SECRET_ACCESS_KEY -u AWS_REGION -u AWS_DEFAULT_REGION -u AWS_ALLOW_HTTP \
        CKPTFS_LOG=warn "$BIN" mount --daemon --config "$bad" --cache-dir "$WORK/cache-cs" "$url" "$WORK/cs" 2>"$WORK/cs.err"; then
        _MOUNTS+=("$WORK/cs")
        echo "a mount with a wrong secret key in [store] came up"
        return 1
    fi
    grep -q "lacked the necessary privileges" "$WORK/cs.err" || { echo "wrong key: $(cat "$WORK/cs.err")"; return 1; }
    env -u AWS_ENDPOINT_URL -u AWS_ACCESS_KEY_ID -u AWS_SECRET_ACCESS_KEY -u AWS_REGION -u AWS_DEFAULT_REGION -u AWS_ALLOW_HTTP \
        CKPTFS_LOG=warn "$BIN" mount --daemon --config "$cfg" --cache-dir "$WORK/cache-cs" "$url" "$WORK/cs" >&2 || return 1
    _MOUNTS+=("$WORK/cs")
    python3 -c "
import os, sys
with open(sys.argv[1], 'w') as f:
    f.write('from the [store] section\n'); f.flush(); os.fsync(f.fileno())
" "$WORK/cs/note.txt" || return 1
    unmount "$WORK/cs" || return 1
    env -u AWS_ENDPOINT_URL -u AWS_ACCESS_KEY_ID -u AWS_SECRET_ACCESS_KEY -u AWS_REGION -u AWS_DEFAULT_REGION -u AWS_ALLOW_HTTP \
        "$BIN" verify --config "$cfg" "$url" >/dev/null || { echo "verify --config failed"; return 1; }
    mkdir -p "$WORK/cs-r"
    CKPTFS_LOG=warn "$BIN" mount --daemon --read-only --cache-dir "$WORK/cache-cs-r" "$url" "$WORK/cs-r" >&2 || return 1
    _MOUNTS+=("$WORK/cs-r")
    grep -q "from the \[store\] section" "$WORK/cs-r/note.txt" || { echo "the file is not on the store"; return 1; }
    unmount "$WORK/cs-r"
    echo "a writer configured by [store] alone published, verify --config read it back; a wrong key was refused"
}
check s3/store-section store_section

bench_rows() {
    # `ckptfs bench --store`: s3-<config> rows beside the local ones, each
    # run verified, its size read off the store, its prefix deleted after.
    local out=$WORK/bench
    "$BIN" bench --preset tiny --strategies plain,default,s3-default,s3-ts-ocdbt,s3-passthrough \
        --store "s3://$CKPTFS_S3_BUCKET/bench" --runs 1 --out "$out" >"$WORK/bench.log" 2>&1 ||
        { tail -20 "$WORK/bench.log"; return 1; }
    python3 - "$out/results.json" <<'PY' || return 1
import json, os, sys
import tensorstore as ts
r = {s["name"]: s for s in json.load(open(sys.argv[1]))["strategies"]}
for name in ("default", "s3-default", "s3-ts-ocdbt"):
    runs = r[name]["runs"]
    assert runs and all(x["verification"]["passed"] for x in runs), (name, runs)
    assert runs[0]["backing"]["apparent_bytes"] > 8_000_000, (name, runs[0]["backing"])
assert r["s3-default"]["runs"][0]["backing"]["dirs"] == 0
assert r["s3-passthrough"]["status"] == "unavailable", r["s3-passthrough"]["status"]
assert "chunking" in r["s3-passthrough"]["reason"], r["s3-passthrough"]["reason"]
kv = ts.KvStore.open({"driver": "s3", "bucket": os.environ["CKPTFS_S3_BUCKET"],
                      "endpoint": os.environ["AWS_ENDPOINT_URL"],
                      "aws_region": os.environ.get("AWS_REGION", "garage"), "path": "bench/"}).result()
left = kv.list().result()
assert not left, f"{len(left)} objects left under bench/: {left[:3]}"
PY
    grep -q "| s3-default |" "$out/results.md" || { echo "no s3-default row in results.md"; return 1; }
    echo "bench: s3-default and s3-ts-ocdbt rows verified beside default; s3-passthrough unavailable"
}
check s3/bench bench_rows

# big_save FILE... MIB: the same random MIB MiB to each FILE, 4 MiB at a
# time with a pause between (so a fault can land in the middle), each
# fsynced at the end.
big_save() {
    python3 - "$@" <<'PY'
import os, sys, time
import numpy as np
paths, mib = sys.argv[1:-1], int(sys.argv[-1])
files = [open(p, "wb") for p in paths]
rng = np.random.default_rng(mib)
for _ in range(mib // 4):
    block = rng.bytes(4 << 20)
    for f in files:
        f.write(block)
    time.sleep(0.02)
for f in files:
    f.flush()
    os.fsync(f.fileno())
    f.close()
PY
}

writer_node_killed() {
    big_save "$WORK/wm/step1/big.bin" "$WREF/step1/big.bin" 256 &
    kill_node3_during $! || return 1
    s3_reader wb "$WORK/wb" || return 1
    same "$WORK/wb" "$WREF" || return 1
    unmount "$WORK/wb" || return 1
    bash "$CLUSTER" start 3
}
check s3/writer-node-killed writer_node_killed

# kill_writer_during MNT FILE MIB SECS: the writer mounted on MNT is
# SIGKILLed SECS into a save of MIB MiB to FILE, and its mount detached.
kill_writer_during() {
    local pid saver
    pid=$(python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['daemon_pid'])" "$1/.ckptfs/stats") || return 1
    big_save "$2" "$3" &
    saver=$!
    sleep "$4"
    kill -0 "$saver" 2>/dev/null || { echo "the save ended before the kill"; return 1; }
    kill -9 "$pid"
    wait "$saver" 2>/dev/null
    fusermount3 -u -z "$1" 2>/dev/null || umount -l "$1"
    echo "writer (pid $pid) killed ${4} s into a $3 MiB save"
}

writer_killed() {
    kill_writer_during "$WORK/wm" "$WORK/wm/step2.bin" 512 1.5 || return 1
    s3_reader wc "$WORK/wc" || return 1
    same "$WORK/wc" "$WREF" || return 1
    if [ -e "$WORK/wc/step2.bin" ] && [ -s "$WORK/wc/step2.bin" ]; then
        echo "the store shows a part of the interrupted save: $(stat -c %s "$WORK/wc/step2.bin") bytes"
        return 1
    fi
    unmount "$WORK/wc" || return 1
    # The same cache dir: the local dir is recovered and the writer goes on.
    s3_writer "$WORK/wm" || return 1
    same "$WORK/wm" "$WREF" || return 1
    echo "remounted with the same cache dir: the writer goes on"
}
check s3/writer-killed writer_killed

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

readers_all_stopped() {
    # The cluster is down (all-stopped); $WORK/rb never read cold.bin.
    local start rc secs
    start=$(date +%s.%N)
    timeout $((S3_FAIL_WITHIN + 30)) cat "$WORK/rb/cold.bin" >/dev/null 2>"$WORK/cold.err"
    rc=$?
    secs=$(awk -v a="$start" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')
    [ "$rc" -ne 0 ] || { echo "a cold read succeeded with every node stopped"; return 1; }
    [ "$rc" -ne 124 ] || { echo "the read hung for $((S3_FAIL_WITHIN + 30)) s"; return 1; }
    grep -q "Input/output error" "$WORK/cold.err" || { echo "not EIO: $(cat "$WORK/cold.err")"; return 1; }
    awk -v s="$secs" -v l="$S3_FAIL_WITHIN" 'BEGIN { exit !(s <= l) }' ||
        { echo "the read took ${secs}s to fail (limit ${S3_FAIL_WITHIN}s)"; return 1; }
    timeout 10 ls "$WORK/rb/run" >/dev/null || { echo "the mount stopped answering"; return 1; }
    echo "a cold read failed with EIO after ${secs}s; the mount still answers"
}
check s3/readers-all-stopped readers_all_stopped

writer_all_stopped() {
    # The cluster is down (all-stopped); the writer mount was made before.
    local start rc secs
    start=$(date +%s.%N)
    timeout $((S3_FAIL_WITHIN + 30)) python3 - "$WORK/wm/late.json" "$WREF/late.json" <<'PY' 2>"$WORK/late.err"
import errno, os, sys
for p in sys.argv[1:]:
    with open(p, "w") as f:
        f.write('{"late": true}\n')
fd = os.open(sys.argv[1], os.O_RDONLY)
try:
    os.fsync(fd)
except OSError as e:
    print(f"fsync: {e}", file=sys.stderr)
    sys.exit(3 if e.errno == errno.EIO else 4)
sys.exit(0)
PY
    rc=$?
    secs=$(awk -v a="$start" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')
    [ "$rc" -ne 0 ] || { echo "an fsync succeeded with every node stopped"; return 1; }
    [ "$rc" -ne 124 ] || { echo "the fsync hung for $((S3_FAIL_WITHIN + 30)) s"; return 1; }
    [ "$rc" -eq 3 ] || { echo "not EIO: $(cat "$WORK/late.err")"; return 1; }
    awk -v s="$secs" -v l="$S3_FAIL_WITHIN" 'BEGIN { exit !(s <= l) }' ||
        { echo "the fsync took ${secs}s to fail (limit ${S3_FAIL_WITHIN}s)"; return 1; }
    timeout 10 cat "$WORK/wm/late.json" >/dev/null || { echo "the mount stopped answering"; return 1; }
    echo "fsync failed with EIO after ${secs}s; the mount still answers"
}
check s3/writer-all-stopped writer_all_stopped

restarted() {
    bash "$CLUSTER" up >/dev/null || return 1
    python3 "$TS" read roundtrip 1 64 && python3 "$TS" read degraded 2 256
}
check s3/restart restarted

readers_restarted() {
    # $WORK/rb was mounted before new-version: it shows the old files.
    same "$WORK/rb" "$WORK/ref-old" || return 1
    "$BIN" verify "$URL"
}
check s3/readers-restarted readers_restarted

writer_restarted() {
    # The store is back: unmount publishes what the failed fsync could not.
    unmount "$WORK/wm" || return 1
    grep -q "published generation" "$WORK/writer.log" || { echo "no final publish: $(tail -3 "$WORK/writer.log")"; return 1; }
    # The profile says what was published, the failed fsync's publish too.
    local rep
    rep=$("$BIN" report "$WCACHE/checkpoint") || return 1
    echo "$rep" | grep -Eq "published to $WURL: generation [1-9][0-9]*, [1-9][0-9]* publishes \([1-9][0-9]* failed\)" ||
        { echo "report: $(echo "$rep" | tail -3)"; return 1; }
    s3_reader wd "$WORK/wd" || return 1
    same "$WORK/wd" "$WREF" || return 1
    [ ! -s "$WORK/wd/step2.bin" ] || { echo "the interrupted save came back with data"; return 1; }
    unmount "$WORK/wd" || return 1
    "$BIN" verify "$WURL"
}
check s3/writer-restarted writer_restarted

# The deletion of what no kept version uses, on a prefix of its own.
GURL="s3://$CKPTFS_S3_BUCKET/gc"
GCFG=$WORK/gc.toml
GCACHE=$WORK/gcache
printf '[packed]\nkeep_versions = 1\n[store]\nlease_seconds = 6\n' >"$GCFG"
gc_writer_mount() {
    mkdir -p "$WORK/gm"
    CKPTFS_LOG=info "$BIN" mount --daemon --config "$GCFG" --cache-dir "$GCACHE" \
        --log "$WORK/gc-writer.log" "$GURL" "$WORK/gm" >&2 || return 1
    _MOUNTS+=("$WORK/gm")
}
# store_bytes: "<objects> <bytes> <leases>" of the gc prefix, read with
# TensorStore's s3 kvstore (not ckptfs's own client).
store_bytes() {
    python3 - <<'PY'
import os, time
import tensorstore as ts
kv = ts.KvStore.open({"driver": "s3", "bucket": os.environ["CKPTFS_S3_BUCKET"],
                      "endpoint": os.environ["AWS_ENDPOINT_URL"],
                      "aws_region": os.environ.get("AWS_REGION", "garage"), "path": "gc/"}).result()
def retried(f):
    for attempt in range(5):
        try:
            return f()
        except OSError:
            if attempt == 4:
                raise
            time.sleep(0.5)
keys = [k.decode() for k in retried(lambda: kv.list().result())]
data = [k for k in keys if k.startswith("d/")]
# A key deleted since the listing reads as missing: 0 bytes.
size = sum(len(retried(lambda: kv.read(k).result().value)) for k in data)
print(len(data), size, sum(k.startswith("leases/") for k in keys))
PY
}
# wait_store_below MIB SECS: polls until the prefix's data files hold at
# most MIB MiB.
wait_store_below() {
    local i got
    for ((i = 0; i < $2; i++)); do
        # A listing that fails (a connection the store dropped) is retried.
        got=$(store_bytes 2>/dev/null) || { sleep 1; continue; }
        [ "$(echo "$got" | awk '{print $2}')" -le $(($1 << 20)) ] && { echo "$got"; return 0; }
        sleep 1
    done
    echo "after $2 s the store still holds: $got (objects bytes leases)"
    return 1
}
gc_stat() {
    python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['publish'][sys.argv[2]])" "$WORK/gm/.ckptfs/stats" "$1"
}
save32() {
    dd if=/dev/urandom of="$WORK/gm/a.bin" bs=1M count=32 conv=fsync status=none || return 1
    cp "$WORK/gm/a.bin" "$WORK/gc-$1.bin"
}

gc_writer() {
    gc_writer_mount || return 1
    local i got
    for i in 1 2 3 4 5; do save32 "$i" || return 1; done
    got=$(wait_store_below 40 30) || { echo "$got"; return 1; }
    echo "5 saves of a 32 MiB file, one version kept: the store holds $got (objects bytes leases)"
    echo "writer: $(gc_stat dropped_local_files) files dropped locally, $(gc_stat removed_files) removed from the store"
    [ "$(gc_stat removed_files)" -ge 4 ] || return 1
    s3_gc_reader r1 || return 1
    cmp "$WORK/gr-r1/a.bin" "$WORK/gc-5.bin" || return 1
    unmount "$WORK/gr-r1"
}
s3_gc_reader() {
    mkdir -p "$WORK/gr-$1"
    CKPTFS_LOG=warn "$BIN" mount --daemon --read-only --config "$GCFG" --cache-size 0 \
        --cache-dir "$WORK/gcache-$1" "$GURL" "$WORK/gr-$1" >&2 || return 1
    _MOUNTS+=("$WORK/gr-$1")
}
check s3/gc-writer gc_writer

gc_reader_holds() {
    s3_gc_reader r2 || return 1
    local held i
    for i in 6 7 8; do save32 "$i" || return 1; done
    for ((i = 0; i < 20; i++)); do
        held=$(gc_stat sweeps_deferred)
        [ "$held" -ge 1 ] && break
        sleep 1
    done
    [ "$held" -ge 1 ] || { echo "no sweep was held off for the reader"; return 1; }
    echo "sweeps held off: $held, for $(gc_stat deferred_for)"
    # Cold, from the store: the reader's version (save 5) is whole.
    echo 3 >/proc/sys/vm/drop_caches
    cmp "$WORK/gr-r2/a.bin" "$WORK/gc-5.bin" || return 1
    echo "the reader still reads its version exactly: $(store_bytes) (objects bytes leases)"
    unmount "$WORK/gr-r2" || return 1
    local got
    got=$(wait_store_below 40 30) || { echo "$got"; return 1; }
    echo "reader gone: the store holds $got (objects bytes leases)"
}
check s3/gc-reader-holds gc_reader_holds

gc_compact() {
    local out rc
    out=$("$BIN" compact "$GURL" 2>&1)
    rc=$?
    [ "$rc" -eq 1 ] && echo "$out" | grep -q "a writer mount holds it" ||
        { echo "compact beside a writer: rc $rc: $out"; return 1; }
    kill_writer_during "$WORK/gm" "$WORK/gm/big.bin" 768 1.5 || return 1
    echo "the store holds $(store_bytes) (objects bytes leases)"
    out=$("$BIN" compact "$GURL" 2>&1)
    [ $? -eq 1 ] || { echo "compact ran under the killed writer's live lease: $out"; return 1; }
    sleep 9
    "$BIN" compact --dry-run "$GURL" || return 1
    "$BIN" compact "$GURL" || return 1
    out=$("$BIN" compact --dry-run "$GURL") || return 1
    echo "$out" | grep -q "would remove 0 data files (0 bytes) and 0 expired leases" ||
        { echo "compact left garbage: $out"; return 1; }
    "$BIN" verify "$GURL" || return 1
    s3_gc_reader r3 || return 1
    cmp "$WORK/gr-r3/a.bin" "$WORK/gc-8.bin" || return 1
    unmount "$WORK/gr-r3" || return 1
    # The killed save's data may sit in a file the last version still
    # references (its tree's node): the writer's own compaction reclaims it.
    gc_writer_mount || return 1
    save32 9 || return 1
    local got
    got=$(wait_store_below 40 30) || {
        echo "$got"
        python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['publish'])" "$WORK/gm/.ckptfs/stats"
        grep -v "AWS_ERROR\|AuthCred\|common-io" "$WORK/gc-writer.log" | tail -30
        ls -la "$GCACHE/checkpoint/d"
        return 1
    }
    echo "writer: $(gc_stat dropped_local_files) files dropped locally, $(gc_stat removed_files) removed from the store"
    unmount "$WORK/gm" || return 1
    echo "writer remounted: the store holds $(store_bytes) (objects bytes leases)"
    "$BIN" verify "$GURL" || return 1
    s3_gc_reader r4 || return 1
    cmp "$WORK/gr-r4/a.bin" "$WORK/gc-9.bin" || return 1
    [ ! -s "$WORK/gr-r4/big.bin" ] || { echo "the killed save came back with data"; return 1; }
    unmount "$WORK/gr-r4"
}
check s3/gc-compact gc_compact

writer_bounded() {
    local url="s3://$CKPTFS_S3_BUCKET/bounded" cache=$WORK/bcache mnt=$WORK/bm i
    bounded_mount() {
        mkdir -p "$mnt"
        CKPTFS_LOG=info "$BIN" mount --daemon --cache-dir "$cache" --cache-size 100M \
            --log "$WORK/bounded.log" "$url" "$mnt" >&2 || return 1
        _MOUNTS+=("$mnt")
    }
    bounded_mount || return 1
    for i in 1 2 3; do
        dd if=/dev/urandom of="$WORK/b$i.bin" bs=1M count=48 status=none || return 1
        dd if="$WORK/b$i.bin" of="$mnt/b$i.bin" bs=4M conv=fsync status=none || return 1
    done
    local kib stats
    for ((i = 0; i < 20; i++)); do
        kib=$(du -sk "$cache/checkpoint/d" | awk '{print $1}')
        [ "$kib" -le $((100 << 10)) ] && break
        sleep 0.5
    done
    stats=$(python3 -c "import json,sys; p=json.load(open(sys.argv[1]))['publish']; print(p['evicted_files'], p['evicted_bytes'], p['local_bytes'])" "$mnt/.ckptfs/stats")
    echo "144 MiB saved: $((kib >> 10)) MiB of data local; evicted files, bytes, local bytes: $stats"
    [ "$kib" -le $((100 << 10)) ] || { echo "the local copy holds $kib KiB, over 100 MiB"; return 1; }
    [ "$kib" -ge $((48 << 10)) ] || { echo "more than the oldest file was evicted"; return 1; }
    [ "$(echo "$stats" | awk '{print $1}')" -ge 1 ] || return 1
    echo 3 >/proc/sys/vm/drop_caches
    for i in 1 2 3; do cmp "$mnt/b$i.bin" "$WORK/b$i.bin" || return 1; done
    echo "every file reads back exactly through the writer (evicted ones from the store)"
    unmount "$mnt" || return 1
    bounded_mount || return 1
    for i in 1 2 3; do cmp "$mnt/b$i.bin" "$WORK/b$i.bin" || return 1; done
    dd if=/dev/urandom of="$WORK/b4.bin" bs=1M count=8 status=none || return 1
    cp "$WORK/b4.bin" "$mnt/b4.bin" && sync "$mnt/b4.bin" || return 1
    unmount "$mnt" || return 1
    echo "remounted on the same cache dir: every file exact, and a new one saved"
    mkdir -p "$WORK/bnd"
    CKPTFS_LOG=warn "$BIN" mount --daemon --read-only --cache-dir "$WORK/cache-bnd" "$url" "$WORK/bnd" >&2 || return 1
    _MOUNTS+=("$WORK/bnd")
    rm -rf "$WORK/bnd-ref" && mkdir -p "$WORK/bnd-ref" && cp "$WORK"/b[1-4].bin "$WORK/bnd-ref/" || return 1
    same "$WORK/bnd" "$WORK/bnd-ref" || return 1
    unmount "$WORK/bnd" || return 1
    "$BIN" verify "$url"
}
check s3/writer-bounded writer_bounded

property() {
    local log=$WORK/property.log
    CKPTFS_TEST_S3="s3://$CKPTFS_S3_BUCKET/property" CKPTFS_PROPTEST_CASES=${S3_PROPTEST_CASES:-32} \
        cargo test --release --manifest-path "$REPO_ROOT/Cargo.toml" --test write_patterns -- \
        --ignored --exact random_write_patterns_match_the_model_on_an_s3_writer >"$log" 2>&1 ||
        { tail -30 "$log"; return 1; }
    grep -q "test result: ok. 1 passed" "$log" || { tail -5 "$log"; return 1; }
    grep "test result" "$log"
}
check s3/property property

summary s3
