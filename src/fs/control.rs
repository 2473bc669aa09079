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

pub const DIR: u64 = 0xFFFF_FFFF_0000_0001;
pub const STATS: u64 = DIR + 1;
pub const ACCESSLOG: u64 = DIR + 2;
pub const CONFIG: u64 = DIR + 3;

pub const ENTRIES: [(&str, u64); 3] = [
    ("stats", STATS),
    ("accesslog", ACCESSLOG),
    ("config", CONFIG),
];

pub fn is_control(ino: u64) -> bool {
    (DIR..=CONFIG).contains(&ino)
}

pub fn lookup(name: &std::ffi::OsStr) -> Option<u64> {
    ENTRIES.iter().find(|(n, _)| name == *n).map(|(_, i)| *i)
}

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
