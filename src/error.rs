//! Errors that carry the errno the filesystem answers with.
//!
//! Every failure on a path a user or a disk can reach becomes an `FsError`
//! with context; the FUSE adapter logs it once and replies with its errno.

use std::fmt;
use std::io;

/// An error with the errno to report and a human-readable reason.
#[derive(Debug, Clone)]
pub struct FsError {
    /// The errno the filesystem call answers with.
    pub errno: i32,
    /// What failed, for the log.
    pub context: String,
}

/// Result of an operation that answers with an errno.
pub type FsResult<T> = Result<T, FsError>;

impl FsError {
    /// An error with this errno and reason.
    pub fn new(errno: i32, context: impl Into<String>) -> Self {
        FsError {
            errno,
            context: context.into(),
        }
    }

    /// Wraps an I/O error, keeping its errno (ENOSPC stays ENOSPC).
    pub fn io(e: &io::Error, context: impl fmt::Display) -> Self {
        let errno = e.raw_os_error().unwrap_or(match e.kind() {
            io::ErrorKind::NotFound => libc::ENOENT,
            io::ErrorKind::AlreadyExists => libc::EEXIST,
            io::ErrorKind::PermissionDenied => libc::EACCES,
            io::ErrorKind::StorageFull => libc::ENOSPC,
            _ => libc::EIO,
        });
        FsError::new(errno, format!("{context}: {e}"))
    }

    /// Whether this error is routine (ENOENT on lookup) rather than a fault.
    pub fn is_routine(&self) -> bool {
        matches!(
            self.errno,
            libc::ENOENT | libc::EEXIST | libc::ENOTEMPTY | libc::ENOTDIR | libc::EISDIR
        )
    }
}

impl fmt::Display for FsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (errno {})", self.context, self.errno)
    }
}

impl std::error::Error for FsError {}

/// Shorthands for the common errnos.
pub fn enoent(what: impl Into<String>) -> FsError {
    FsError::new(libc::ENOENT, what)
}
/// EIO: data unreadable, corrupt or inconsistent.
pub fn eio(what: impl Into<String>) -> FsError {
    FsError::new(libc::EIO, what)
}
/// EINVAL: an argument or request the filesystem does not accept.
pub fn einval(what: impl Into<String>) -> FsError {
    FsError::new(libc::EINVAL, what)
}

/// Attaches context to an `io::Result`.
pub trait IoContext<T> {
    fn ctx(self, what: impl fmt::Display) -> FsResult<T>;
}

impl<T> IoContext<T> for io::Result<T> {
    fn ctx(self, what: impl fmt::Display) -> FsResult<T> {
        self.map_err(|e| FsError::io(&e, what))
    }
}

/// Maps a zarrs storage error back to an errno, recovering the I/O error
/// when there is one.
pub fn from_storage(e: &zarrs_storage::StorageError, what: impl fmt::Display) -> FsError {
    match e {
        zarrs_storage::StorageError::IOError(io) => FsError::io(io, what),
        other => eio(format!("{what}: {other}")),
    }
}

/// Maps a zarrs array error, keeping an I/O errno found in it.
///
/// zarrs' wrappers are `#[error(transparent)]`: their `source()` skips the
/// wrapped error itself, so the storage and codec variants are matched
/// directly (a full disk must answer ENOSPC, not EIO).
pub fn from_array(e: &zarrs::array::ArrayError, what: impl fmt::Display) -> FsError {
    use zarrs::array::{ArrayError, CodecError};
    match e {
        ArrayError::StorageError(st) => return from_storage(st, what),
        ArrayError::CodecError(CodecError::StorageError(st)) => return from_storage(st, what),
        ArrayError::CodecError(CodecError::IOError(io)) => return FsError::io(io, what),
        _ => {}
    }
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(s) = source {
        if let Some(io) = s.downcast_ref::<io::Error>() {
            return FsError::io(io, what);
        }
        if let Some(st) = s.downcast_ref::<zarrs_storage::StorageError>() {
            return from_storage(st, what);
        }
        source = s.source();
    }
    eio(format!("{what}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use zarrs::array::{ArrayError, CodecError};
    use zarrs_storage::StorageError;

    fn enospc() -> io::Error {
        io::Error::from_raw_os_error(libc::ENOSPC)
    }

    #[test]
    fn full_disk_in_a_store_error_answers_enospc_not_eio() {
        let e = ArrayError::StorageError(StorageError::from(enospc()));
        assert_eq!(from_array(&e, "store chunk 0").errno, libc::ENOSPC);
    }

    #[test]
    fn full_disk_inside_a_codec_error_answers_enospc() {
        let e = ArrayError::CodecError(CodecError::StorageError(StorageError::from(enospc())));
        assert_eq!(from_array(&e, "store chunk 0").errno, libc::ENOSPC);
        let e = ArrayError::CodecError(CodecError::from(enospc()));
        assert_eq!(from_array(&e, "store chunk 0").errno, libc::ENOSPC);
    }

    #[test]
    fn other_array_errors_stay_eio() {
        let e = ArrayError::Other("bad".into());
        assert_eq!(from_array(&e, "x").errno, libc::EIO);
    }
}
