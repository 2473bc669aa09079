//! Mapping between names in the mount and names in the backing directory.
//!
//! A mounted directory's backing directory also holds its `zarr.json`, so a
//! mounted entry called `zarr.json` is stored as `%zarr.json`, and names that
//! start with `%` gain one more `%`. At the root, `.ckptfs` is reserved for
//! the filesystem's own state and virtual files, and `d` and
//! `manifest.ocdbt` (the packed index's data files and manifest, where
//! TensorStore's ocdbt driver expects them) are stored as `%d` and
//! `%manifest.ocdbt`.

use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::PathBuf;

/// Backing paths longer than this are reached through an open descriptor
/// of an ancestor directory (`/proc/self/fd/N/rest`): the kernel refuses
/// paths of PATH_MAX bytes, and a mount path of nearly that length is
/// longer still under the backing dir.
pub const LONG_PATH: usize = 3072;

/// How `/proc/self/fd` names an open directory.
pub fn fd_path(dir: &std::fs::File) -> PathBuf {
    use std::os::fd::AsRawFd;
    PathBuf::from(format!("/proc/self/fd/{}", dir.as_raw_fd()))
}

/// The reserved root entry.
pub const RESERVED: &str = ".ckptfs";

/// Whether a backing root entry belongs to the packed index (its data
/// files, manifest, or the manifest's temp file).
pub fn is_packed_root_entry(name: &OsStr) -> bool {
    let b = name.as_bytes();
    b == b"d" || b.starts_with(b"manifest.ocdbt")
}

/// The backing name of a mounted name in a directory (`at_root`: the root).
pub fn to_backing_in(name: &OsStr, at_root: bool) -> OsString {
    // Every name the packed index may use at the root (`manifest.ocdbt`
    // and its temp and lock files too), so no mounted name can take one.
    if at_root && is_packed_root_entry(name) {
        let mut v = b"%".to_vec();
        v.extend_from_slice(name.as_bytes());
        return OsString::from_vec(v);
    }
    to_backing(name)
}

/// The backing name of a mounted name below the root: `zarr.json` and names starting with `%` gain
/// a leading `%`.
pub fn to_backing(name: &OsStr) -> OsString {
    let b = name.as_bytes();
    if b == b"zarr.json" || b.first() == Some(&b'%') {
        let mut v = Vec::with_capacity(b.len() + 1);
        v.push(b'%');
        v.extend_from_slice(b);
        OsString::from_vec(v)
    } else {
        name.to_os_string()
    }
}

/// The mounted name of a backing name: one leading `%` removed.
pub fn from_backing(name: &OsStr) -> OsString {
    match name.as_bytes().strip_prefix(b"%") {
        Some(rest) => OsStr::from_bytes(rest).to_os_string(),
        None => name.to_os_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping_round_trips() {
        for n in ["zarr.json", "%x", "%%", "a", "g1", "zarr.json2"] {
            let b = to_backing(OsStr::new(n));
            assert_ne!(b, "zarr.json");
            assert_eq!(from_backing(&b), n);
        }
        for n in ["d", "manifest.ocdbt", "manifest.ocdbt.readers"] {
            let b = to_backing_in(OsStr::new(n), true);
            assert!(!is_packed_root_entry(&b), "{n}");
            assert_eq!(from_backing(&b), n);
            assert_eq!(to_backing_in(OsStr::new(n), false), n);
        }
    }
}
