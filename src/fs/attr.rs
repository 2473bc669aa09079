//! Attribute helpers: clocks, and turning our attributes into FUSE's.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fuser::{FileAttr, FileType, INodeNo};

/// The current time in nanoseconds since the Unix epoch (0 if the clock is before it).
pub fn now_ns() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0)
}

/// Nanoseconds since the epoch (negative: before it) as a `SystemTime`.
pub fn to_time(ns: i64) -> SystemTime {
    if ns >= 0 {
        UNIX_EPOCH + Duration::from_nanos(ns as u64)
    } else {
        UNIX_EPOCH - Duration::from_nanos(ns.unsigned_abs())
    }
}

/// A `SystemTime` as nanoseconds since the epoch, negative before it.
pub fn from_time(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => d.as_nanos() as i64,
        Err(e) => -(e.duration().as_nanos() as i64),
    }
}

/// Builds a FUSE attribute record.
#[allow(clippy::too_many_arguments)]
pub fn fuse_attr(
    ino: u64,
    kind: FileType,
    size: u64,
    perm: u32,
    nlink: u32,
    uid: u32,
    gid: u32,
    atime: i64,
    mtime: i64,
    ctime: i64,
) -> FileAttr {
    FileAttr {
        ino: INodeNo(ino),
        size,
        blocks: size.div_ceil(512),
        atime: to_time(atime),
        mtime: to_time(mtime),
        ctime: to_time(ctime),
        crtime: to_time(ctime),
        kind,
        perm: (perm & 0o7777) as u16,
        nlink,
        uid,
        gid,
        rdev: 0,
        blksize: 1 << 20,
        flags: 0,
    }
}
