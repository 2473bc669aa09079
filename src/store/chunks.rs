//! The chunk store: where one file's arrays (its generations' chunks and
//! array documents) live, behind zarrs' storage traits plus what a commit
//! needs. One implementation per index: files under the file's directory
//! (`DirChunks`, the `files` index) and keys of the packed database under
//! the file's stable id (`PackedStore`). `DurableStore` reaches its data
//! only through this trait, so another backend (an object store) is one
//! more implementation.

use std::io;

use ocdbt::multi_get::Buffers;
use zarrs_storage::{Bytes, ListableStorageTraits, ReadableStorageTraits, WritableStorageTraits};

/// Where a file's arrays are kept.
pub trait ChunkStore:
    ReadableStorageTraits + WritableStorageTraits + ListableStorageTraits + Send + Sync
{
    /// Whole values of `keys`, each in a buffer from `buffers`; `size_hint`
    /// is the expected length of a value, `drop_cache` asks to keep no
    /// kernel copy of what was read.
    fn read_values(
        &self,
        keys: &[&str],
        size_hint: Option<usize>,
        buffers: &dyn Buffers,
        drop_cache: bool,
    ) -> Vec<io::Result<Option<Bytes>>>;

    /// Stores `value` followed by zeros up to `len` bytes under `key`,
    /// atomically (a whole old or a whole new value survives a crash).
    fn put_sparse(&self, key: &str, value: &[u8], len: u64) -> io::Result<()>;

    /// Stores several whole values, each as `put_sparse` with no zeros
    /// after it; a store that can write them together does.
    fn put_many(&self, items: &[(&str, &[u8])]) -> io::Result<()> {
        for (key, value) in items {
            self.put_sparse(key, value, value.len() as u64)?;
        }
        Ok(())
    }

    /// Removes `key` if present.
    fn erase_value(&self, key: &str) -> io::Result<()>;

    /// Makes everything stored so far durable.
    fn barrier(&self) -> io::Result<()>;

    /// The commit point of the file's data, given its manifest document:
    /// after it returns, the data the manifest names is durable.
    fn seal(&self, manifest_json: &[u8]) -> io::Result<()>;

    /// Removes generation `gen`'s arrays.
    fn erase_generation(&self, gen: u64);

    /// Removes everything of the file (it was deleted).
    fn erase_file(&self);

    /// The file's key prefix (`<id>/`) when its data lives in a database
    /// shared with other files.
    fn shared_prefix(&self) -> Option<&str>;

    /// On a full disk shared with the store: gives back what the store
    /// holds for nothing (then, with `drop_history`, its history); false
    /// where it has nothing to give.
    fn make_room(&self, _drop_history: bool) -> bool {
        false
    }
}
