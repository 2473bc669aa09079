//! The virtual files under `.ckptfs/` at the mount root: reserved inode
//! numbers, never stored in the backing dir.
//!
//! - `stats`: a JSON snapshot of every counter and histogram, taken at open;
//! - `accesslog`: one line per operation, streamed while it is open
//!   (profile level `full`);
//! - `config`: the effective mount config.

use std::sync::Arc;

use fuser::{FileAttr, FileType};

use super::attr::fuse_attr;
use crate::profile::accesslog::Reader;

/// Inode of the `.ckptfs` directory; the control inodes sit at the top of the range, far above any
/// the tree hands out.
pub const DIR: u64 = 0xFFFF_FFFF_0000_0001;
/// Inode of `.ckptfs/stats`.
pub const STATS: u64 = DIR + 1;
/// Inode of `.ckptfs/accesslog`.
pub const ACCESSLOG: u64 = DIR + 2;
/// Inode of `.ckptfs/config`.
pub const CONFIG: u64 = DIR + 3;

/// The entries of `.ckptfs`, by name.
pub const ENTRIES: [(&str, u64); 3] = [
    ("stats", STATS),
    ("accesslog", ACCESSLOG),
    ("config", CONFIG),
];

/// Whether `ino` is the control directory or one of its files.
pub fn is_control(ino: u64) -> bool {
    (DIR..=CONFIG).contains(&ino)
}

/// The inode of a `.ckptfs` entry by name.
pub fn lookup(name: &std::ffi::OsStr) -> Option<u64> {
    ENTRIES.iter().find(|(n, _)| name == *n).map(|(_, i)| *i)
}

/// Attributes of a control inode, owned by root and timed at mount start:
/// a read-only directory, or a read-only file of size 0 (its length is only
/// known when read); the access log is readable by its owner only.
pub fn attr(ino: u64, started_ns: i64) -> FileAttr {
    if ino == DIR {
        fuse_attr(
            ino,
            FileType::Directory,
            0,
            0o555,
            2,
            0,
            0,
            started_ns,
            started_ns,
            started_ns,
        )
    } else {
        let perm = if ino == ACCESSLOG { 0o400 } else { 0o444 };
        fuse_attr(
            ino,
            FileType::RegularFile,
            0,
            perm,
            1,
            0,
            0,
            started_ns,
            started_ns,
            started_ns,
        )
    }
}

/// An open control file.
pub enum ControlHandle {
    /// Bytes fixed at open (stats, config).
    Snapshot(Vec<u8>),
    Log(Arc<Reader>),
}

impl ControlHandle {
    /// Up to `size` bytes: of a snapshot, at `offset`; of the access log, the next lines not yet
    /// read (the offset is ignored: it is a stream).
    pub fn read(&self, offset: u64, size: u32) -> Vec<u8> {
        match self {
            ControlHandle::Snapshot(b) => {
                let start = (offset as usize).min(b.len());
                let end = (start + size as usize).min(b.len());
                b[start..end].to_vec()
            }
            ControlHandle::Log(r) => r.read(size as usize),
        }
    }
}
