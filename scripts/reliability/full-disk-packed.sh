#!/usr/bin/env bash
# The full-disk suite (full-disk.sh) on the packed index: one OCDBT database
# holds every file's chunks, so a deleted or failed file's bytes are garbage
# inside shared data files until they are punched out (on ENOSPC) or
# compacted. The same checks: ENOSPC (never EIO), the mount stays up,
# deleting makes room at once, and everything committed survives.
FULL_DISK_LAYOUT=${FULL_DISK_PACKED_LAYOUT:-ts-ocdbt} FULL_DISK_TAG=full-disk-packed \
    exec bash "$(dirname "$0")/full-disk.sh" "$@"
