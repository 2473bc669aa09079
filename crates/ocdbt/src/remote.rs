//! Databases whose files are not in a local directory (an object store):
//! opened read-only, every read goes through a [`Remote`] the caller
//! supplies. Data files there are whole objects that never change once
//! written (a publisher replaces one only by a longer copy of itself), so a
//! reader needs no pin.

use std::fmt::Debug;
use std::io;

/// Reads of a database's files by their key relative to its root
/// (`manifest.ocdbt`, `d/<id>`).
pub trait Remote: Send + Sync + Debug {
    /// The whole object (the manifest).
    fn get(&self, key: &str) -> io::Result<Vec<u8>>;
    /// Fills `buf` with the object's bytes from `offset` on.
    fn read_at(&self, key: &str, offset: u64, buf: &mut [u8]) -> io::Result<()>;
    /// The object's size in bytes.
    fn size(&self, key: &str) -> io::Result<u64>;
    /// Where the database is, for messages (`s3://bucket/prefix`).
    fn describe(&self) -> String;
}
