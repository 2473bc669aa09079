#!/usr/bin/env bash
# The crash loop (crash-loop.sh) on the packed index alone: every kill -9
# lands while checkpoints, an fsync-per-block fio job and a committed file
# share one OCDBT database (ts-ocdbt: tensorstore-basic's chunks, packed).
# After each kill `ckptfs verify` checks every node, reference and chunk
# checksum; at the end a byte flipped inside a committed file's chunk (a
# value in a data file under d/) must make it exit 1.
CRASH_LAYOUTS=${CRASH_PACKED_LAYOUTS:-ts-ocdbt} CRASH_TAG=crash-loop-packed \
    exec bash "$(dirname "$0")/crash-loop.sh" "$@"
