//! Errors of the OCDBT layer: a corrupt or hostile encoding, an I/O failure,
//! or a request the database refuses.

use std::io;

/// Everything that can go wrong reading or writing an OCDBT database.
#[derive(Debug, thiserror::Error)]
pub enum OcdbtError {
    /// The bytes do not decode: truncated, flipped, oversized or out of range.
    #[error("corrupt OCDBT data: {0}")]
    Corrupt(String),
    /// A valid encoding of something this implementation does not handle.
    #[error("unsupported OCDBT feature: {0}")]
    Unsupported(String),
    /// The caller asked for something invalid (key too long, read-only db...).
    #[error("invalid request: {0}")]
    Invalid(String),
    #[error("I/O error on {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: io::Error,
    },
}

/// Result of an OCDBT operation.
pub type Result<T> = std::result::Result<T, OcdbtError>;

/// Shorthand for a decode failure.
pub(crate) fn corrupt(msg: impl Into<String>) -> OcdbtError {
    OcdbtError::Corrupt(msg.into())
}

/// Attaches the path to an I/O error.
pub(crate) fn io_at(path: impl AsRef<std::path::Path>) -> impl FnOnce(io::Error) -> OcdbtError {
    let path = path.as_ref().display().to_string();
    move |source| OcdbtError::Io { path, source }
}
