//! A staging file: a file's whole content, sparse, beside its generations
//! (`g<N>.staging` in its directory), where writes that cannot stream into
//! chunks go (holes, overwrites, truncation) until the next commit encodes
//! it into generation N. Both the chunked and the checkpoint layouts stage
//! through this one type.

use std::fs::{self, File, OpenOptions};
use std::os::unix::fs::FileExt;

use crate::error::{FsResult, IoContext};
use crate::store::durable::DurableStore;

/// One file's sparse staging file: writes that cannot stream into chunks
/// wait here until the next commit encodes them.
pub struct Staging {
    file: File,
    key: String,
    /// The generation the staged content is to be committed as.
    pub gen: u64,
}

/// The key of generation `gen`'s staging file.
pub fn staging_key(gen: u64) -> String {
    format!("g{gen}.staging")
}

impl Staging {
    /// A new, empty staging file for generation `gen` (any left from an
    /// earlier attempt is truncated).
    pub fn create(store: &DurableStore, gen: u64) -> FsResult<Self> {
        let key = staging_key(gen);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(store.key_path(&key))
            .ctx("create staging file")?;
        Ok(Staging { file, key, gen })
    }

    /// Writes `data` at `offset` of the staged bytes.
    pub fn write_at(&self, data: &[u8], offset: u64) -> FsResult<()> {
        self.file
            .write_all_at(data, offset)
            .ctx("write staging file")
    }

    /// Sets the content's length (a hole when it grows).
    pub fn set_len(&self, len: u64) -> FsResult<()> {
        self.file.set_len(len).ctx("size staging file")
    }

    /// Fills `out` from `offset`; past the end it reads zeros.
    pub fn read_at(&self, offset: u64, out: &mut [u8]) -> FsResult<()> {
        super::plain::read_or_zeros(&self.file, offset, out)
    }

    /// Whether any byte of `[start, end)` was written (a hole is a chunk
    /// never written, which a commit leaves absent).
    pub fn has_data(&self, start: u64, end: u64) -> bool {
        use std::os::fd::AsRawFd;
        let Ok(off) = libc::off_t::try_from(start) else {
            return true;
        };
        match nix::unistd::lseek(self.file.as_raw_fd(), off, nix::unistd::Whence::SeekData) {
            Ok(next) => (next as u64) < end,
            // ENXIO: no data at or after `start`.
            Err(e) => e != nix::errno::Errno::ENXIO,
        }
    }

    /// Removes the staging file (its content is committed or dropped).
    pub fn remove(&self, store: &DurableStore) {
        let _ = fs::remove_file(store.key_path(&self.key));
    }
}
