//! A committed file's later attribute changes (chmod, chown, utimens after
//! its last commit), kept as an extended attribute of its manifest.
//!
//! As on a local filesystem, such a change is durable at the file's next
//! fsync (or any `syncfs` of the backing), not at once: `rsync` and `tar`
//! set times and modes on files they have closed, and a manifest rewrite
//! with its two flushes per change cost more than the file's own commit.
//! Setting an xattr is one atomic metadata change of the manifest's inode,
//! so a crash leaves the old attributes or the new, never a torn manifest;
//! the next commit replaces the manifest (a new inode, attributes inside),
//! which drops the note with it.

use std::io;
use std::path::Path;

use crate::layout::manifest::{Attrs, ZARR_JSON};

const NAME: &str = "user.ckptfs.attrs";

/// Records `attrs` on the manifest in `dir`. `Unsupported` where the
/// backing filesystem keeps no user xattrs (the caller then commits).
pub fn write(dir: &Path, attrs: &Attrs) -> io::Result<()> {
    let value = serde_json::to_vec(attrs).map_err(io::Error::other)?;
    xattr::set(dir.join(ZARR_JSON), NAME, &value).map_err(|e| {
        if e.raw_os_error() == Some(libc::ENOTSUP) {
            io::Error::new(io::ErrorKind::Unsupported, e)
        } else {
            e
        }
    })
}

/// The attributes recorded on the manifest in `dir` since its commit, if
/// any. A note that cannot be read or parsed is ignored: the manifest's own
/// attributes are the last committed ones.
pub fn read(dir: &Path) -> Option<Attrs> {
    let value = xattr::get(dir.join(ZARR_JSON), NAME).ok()??;
    match serde_json::from_slice(&value) {
        Ok(a) => Some(a),
        Err(e) => {
            tracing::warn!("{}: unreadable attribute note ignored: {e}", dir.display());
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_note_reads_back_and_goes_with_a_replaced_manifest() {
        // Beside the build, on the disk the project lives on (a tmpfs
        // before Linux 6.6 keeps no user xattrs).
        let dir = tempfile::tempdir_in(env!("CARGO_MANIFEST_DIR")).expect("tempdir");
        std::fs::write(dir.path().join(ZARR_JSON), b"{}").expect("manifest");
        assert_eq!(read(dir.path()), None);
        let a = Attrs::new(libc::S_IFREG | 0o600, 7, 8, 1_234);
        write(dir.path(), &a).expect("write note");
        assert_eq!(read(dir.path()), Some(a));
        crate::store::durable::write_atomic(&dir.path().join(ZARR_JSON), b"{}", false)
            .expect("replace manifest");
        assert_eq!(read(dir.path()), None);
    }
}
