//! Readers of a kept version pin the bytes it reads. A `Db::open_version`
//! holds a shared `flock` on [`READERS_FILE`] for as long as the `Db`
//! lives; compaction (which deletes data files) and hole punching (which
//! zeroes unreferenced ranges) are the only steps that take bytes away from
//! a version once it is written, and they run only while they hold that
//! lock exclusively. So a version mount keeps reading whole values while a
//! writer goes on committing (and drops the version from its list): space
//! is reclaimed once the last reader is gone. A reader that dies releases
//! its lock with its process.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::path::Path;

use nix::fcntl::FlockArg;

use super::error::{io_at, Result};
use super::fsutil::open_rw;

/// The lock file, beside the manifest (and named like it, so tools that
/// pass over the database's own entries pass over this one too).
pub const READERS_FILE: &str = "manifest.ocdbt.readers";

#[allow(deprecated)] // `Flock` panics on drop when an unlock fails.
fn flock(file: &File, arg: FlockArg) -> nix::Result<()> {
    nix::fcntl::flock(file.as_raw_fd(), arg)
}

fn open(dir: &Path) -> io::Result<File> {
    let path = dir.join(READERS_FILE);
    open_rw(&path, true).or_else(|e| match e.raw_os_error() {
        // Read-only media or no write permission: a shared lock needs
        // only a read descriptor.
        Some(libc::EROFS | libc::EACCES | libc::EPERM) => File::open(&path),
        _ => Err(e),
    })
}

/// Creates the lock file if there is none.
pub(crate) fn ensure(dir: &Path) -> Result<()> {
    open(dir).map(drop).map_err(io_at(&dir.join(READERS_FILE)))
}

/// Takes a reader's pin, waiting for a compaction under way to finish.
/// `None` where the lock file can be neither created nor opened (read-only
/// media that never had a writer): nothing can take bytes away there.
pub(crate) fn pin(dir: &Path) -> Result<Option<File>> {
    let file = match open(dir) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_at(&dir.join(READERS_FILE))(e)),
    };
    loop {
        match flock(&file, FlockArg::LockShared) {
            Ok(()) => return Ok(Some(file)),
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(io_at(&dir.join(READERS_FILE))(e.into())),
        }
    }
}

/// The right to take bytes away from old versions: `None` while readers
/// hold versions.
pub(crate) fn exclusive(dir: &Path) -> Result<Option<File>> {
    let file = open(dir).map_err(io_at(&dir.join(READERS_FILE)))?;
    match flock(&file, FlockArg::LockExclusiveNonblock) {
        Ok(()) => Ok(Some(file)),
        Err(nix::errno::Errno::EWOULDBLOCK) => Ok(None),
        Err(e) => Err(io_at(&dir.join(READERS_FILE))(e.into())),
    }
}

/// Whether readers hold versions now (a version mount, a verify of old
/// versions): what compaction would wait for.
pub fn present(dir: &Path) -> Result<bool> {
    if !dir.join(READERS_FILE).exists() {
        return Ok(false);
    }
    Ok(exclusive(dir)?.is_none())
}
