//! Mapping between names in the mount and names in the backing directory.
//!
//! A mounted directory's backing directory also holds its `zarr.json`, so a
//! mounted entry called `zarr.json` is stored as `%zarr.json`, and names that
//! start with `%` gain one more `%`. At the root, `.ckptfs` is reserved for
//! the filesystem's own state and virtual files.

use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::{OsStrExt, OsStringExt};

/// The reserved root entry.
pub const RESERVED: &str = ".ckptfs";

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
    }
}
