//! The store of one file: its backing directory (manifest, staging, the
//! plain layout's data file) and its chunk store (`ChunkStore`: files in
//! that directory for the `files` index, keys of the packed database under
//! the file's stable id for the `packed` index), behind zarrs' storage
//! traits. Every write is atomic (a key holds a whole old or a whole new
//! value); `barrier` makes what was written durable and `seal` is the
//! commit point of the data.
//!
//! The store holds an open descriptor on its directory and reaches it
//! through `/proc/self/fd/N/...`: the directory can be renamed (a file
//! renamed in the mount) while chunks are in flight, and every write still
//! lands in it.

use std::fs::{self, File};
use std::io;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::chunks::ChunkStore;
use super::dir_chunks::DirChunks;
use super::packed::PackedStore;
/// Temp files, atomic writes and directory syncs are shared with the
/// packed database (recovery must recognise its temp files too).
pub use ocdbt::fsutil::{is_temp, open_rw, sync_dir, temp_name, write_atomic};
use ocdbt::multi_get::Buffers;
use ocdbt::Db;
use zarrs_storage::byte_range::ByteRangeIterator;
use zarrs_storage::{
    Bytes, ListableStorageTraits, MaybeBytesIterator, OffsetBytesIterator, ReadableStorageTraits,
    StorageError, StoreKey, StoreKeys, StoreKeysPrefixes, StorePrefix, WritableStorageTraits,
};

/// A file's directory and the chunk store its arrays live in.
pub struct DurableStore {
    root: Arc<File>,
    base: PathBuf,
    chunks: Box<dyn ChunkStore>,
}

impl std::fmt::Debug for DurableStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DurableStore")
            .field("base", &self.base)
            .field("packed", &self.chunks.shared_prefix())
            .finish()
    }
}

fn open_dir(dir: &Path) -> io::Result<Arc<File>> {
    let root = File::open(dir)?;
    if !root.metadata()?.is_dir() {
        return Err(io::Error::from_raw_os_error(libc::ENOTDIR));
    }
    Ok(Arc::new(root))
}

impl DurableStore {
    /// Opens a store on an existing directory, its arrays in it.
    pub fn open(dir: &Path) -> io::Result<Self> {
        let root = open_dir(dir)?;
        let chunks = Box::new(DirChunks::new(root.clone()));
        Ok(Self::with_chunks(root, chunks))
    }

    /// Opens a file directory whose arrays live in `db` under `id/`.
    pub fn open_packed(dir: &Path, db: Arc<Db>, id: &str) -> io::Result<Self> {
        let root = open_dir(dir)?;
        let chunks = Box::new(PackedStore::new(db, format!("{id}/")));
        Ok(Self::with_chunks(root, chunks))
    }

    fn with_chunks(root: Arc<File>, chunks: Box<dyn ChunkStore>) -> Self {
        let base = PathBuf::from(format!("/proc/self/fd/{}", root.as_raw_fd()));
        DurableStore { root, base, chunks }
    }

    /// The key prefix in the packed database (`<id>/`), if packed.
    pub fn packed_prefix(&self) -> Option<&str> {
        self.chunks.shared_prefix()
    }

    /// Commit point of the file's data (see `ChunkStore::seal`).
    pub fn seal(&self, manifest_json: &[u8]) -> io::Result<()> {
        self.chunks.seal(manifest_json)
    }

    /// Removes generation `gen`'s arrays, and its staging or plain data
    /// file in the directory.
    pub fn remove_generation(&self, gen: u64) {
        let _ = fs::remove_dir_all(self.key_path(&format!("g{gen}")));
        self.chunks.erase_generation(gen);
    }

    /// Removes the file's data kept outside its directory (it was
    /// deleted; see `ChunkStore::erase_file`).
    pub fn destroy(&self) {
        self.chunks.erase_file();
    }

    /// Path of the root that stays valid across renames of the directory.
    pub fn base(&self) -> &Path {
        &self.base
    }

    /// Filesystem path of a key in the directory.
    pub fn key_path(&self, key: &str) -> PathBuf {
        self.base.join(key.trim_start_matches('/'))
    }

    /// The manifest in the file's home (for a packed file, its home copy).
    pub fn read_home_manifest(&self) -> io::Result<Vec<u8>> {
        std::fs::read(self.key_path(crate::layout::manifest::ZARR_JSON))
    }

    /// Makes a value kept in the file's own directory (a plain array's
    /// metadata) and its name durable.
    pub fn sync_local(&self, key: &str) -> io::Result<()> {
        let path = self.key_path(key);
        File::open(&path)?.sync_all()?;
        match path.parent() {
            Some(dir) => sync_dir(dir),
            None => Ok(()),
        }
    }

    /// Runs `op` (work in the file's home), making room in the chunk store
    /// and trying again on a full disk (see `packed::with_room`).
    pub fn with_room(
        &self,
        op: &mut dyn FnMut() -> crate::error::FsResult<()>,
    ) -> crate::error::FsResult<()> {
        super::packed::with_room(&|drop_history| self.chunks.make_room(drop_history), op)
    }

    /// Makes everything written to the chunk store durable.
    pub fn barrier(&self) -> io::Result<()> {
        self.chunks.barrier()
    }

    /// Whole values of `keys` (see `ChunkStore::read_values`).
    pub fn read_values(
        &self,
        keys: &[&str],
        size_hint: Option<usize>,
        buffers: &dyn Buffers,
        drop_cache: bool,
    ) -> Vec<io::Result<Option<Bytes>>> {
        self.chunks
            .read_values(keys, size_hint, buffers, drop_cache)
    }

    /// Stores one value under `key` atomically. Durable at the next
    /// `barrier` (packed: at `seal`).
    pub fn put_value(&self, key: &str, value: &[u8]) -> io::Result<()> {
        self.chunks.put_sparse(key, value, value.len() as u64)
    }

    /// `put_value` of `value` followed by zeros up to `len` bytes (a hole
    /// in a chunk file: a small file in a large chunk costs its own size).
    pub fn put_value_sparse(&self, key: &str, value: &[u8], len: u64) -> io::Result<()> {
        self.chunks.put_sparse(key, value, len)
    }

    /// Stores several whole values (written together where the store can).
    pub fn put_values(&self, items: &[(&str, &[u8])]) -> io::Result<()> {
        self.chunks.put_many(items)
    }

    /// Removes `key` if present.
    pub fn erase_value(&self, key: &str) -> io::Result<()> {
        self.chunks.erase_value(key)
    }

    /// The open root directory.
    pub fn root(&self) -> &File {
        &self.root
    }
}

impl ReadableStorageTraits for DurableStore {
    fn get_partial_many<'a>(
        &'a self,
        key: &StoreKey,
        byte_ranges: ByteRangeIterator<'a>,
    ) -> Result<MaybeBytesIterator<'a>, StorageError> {
        self.chunks.get_partial_many(key, byte_ranges)
    }

    fn size_key(&self, key: &StoreKey) -> Result<Option<u64>, StorageError> {
        self.chunks.size_key(key)
    }

    fn supports_get_partial(&self) -> bool {
        self.chunks.supports_get_partial()
    }
}

impl WritableStorageTraits for DurableStore {
    fn set(&self, key: &StoreKey, value: Bytes) -> Result<(), StorageError> {
        self.chunks.set(key, value)
    }

    fn set_partial_many(
        &self,
        key: &StoreKey,
        offset_values: OffsetBytesIterator,
    ) -> Result<(), StorageError> {
        self.chunks.set_partial_many(key, offset_values)
    }

    fn erase(&self, key: &StoreKey) -> Result<(), StorageError> {
        self.chunks.erase(key)
    }

    fn erase_prefix(&self, prefix: &StorePrefix) -> Result<(), StorageError> {
        self.chunks.erase_prefix(prefix)
    }

    fn supports_set_partial(&self) -> bool {
        self.chunks.supports_set_partial()
    }
}

impl ListableStorageTraits for DurableStore {
    fn list(&self) -> Result<StoreKeys, StorageError> {
        self.chunks.list()
    }

    fn list_prefix(&self, prefix: &StorePrefix) -> Result<StoreKeys, StorageError> {
        self.chunks.list_prefix(prefix)
    }

    fn list_dir(&self, prefix: &StorePrefix) -> Result<StoreKeysPrefixes, StorageError> {
        self.chunks.list_dir(prefix)
    }

    fn size_prefix(&self, prefix: &StorePrefix) -> Result<u64, StorageError> {
        self.chunks.size_prefix(prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use zarrs_storage::byte_range::ByteRange;

    #[test]
    fn temp_names_of_a_255_byte_name_fit_name_max_and_are_recognised() {
        let long = "a".repeat(255);
        let tmp = temp_name(&Path::new("/x").join(&long));
        let name = tmp
            .file_name()
            .expect("name")
            .to_string_lossy()
            .into_owned();
        assert!(name.len() <= 255, "{} bytes", name.len());
        assert!(is_temp(&name));
        assert_ne!(temp_name(&tmp), tmp);
        let short = temp_name(Path::new("/x/model.bin"));
        assert!(short
            .to_string_lossy()
            .starts_with("/x/model.bin.ckptfs-tmp."));
    }

    #[test]
    fn set_get_list_erase_round_trip() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = DurableStore::open(dir.path()).expect("open");
        let key = StoreKey::new("g1/c/0").expect("key");
        store.set(&key, Bytes::from_static(b"hello")).expect("set");
        let got = store.get(&key).expect("get").expect("present");
        assert_eq!(&got[..], b"hello");
        let part = store
            .get_partial(&key, ByteRange::FromStart(1, Some(3)))
            .expect("partial")
            .expect("present");
        assert_eq!(&part[..], b"ell");
        assert_eq!(store.list().expect("list"), vec![key.clone()]);
        // A rename of the root does not strand the store.
        let moved = dir.path().with_extension("moved");
        fs::rename(dir.path(), &moved).expect("rename");
        store
            .set(&key, Bytes::from_static(b"world"))
            .expect("set after rename");
        assert_eq!(fs::read(moved.join("g1/c/0")).expect("read"), b"world");
        store.erase(&key).expect("erase");
        assert!(store.get(&key).expect("get").is_none());
        fs::rename(&moved, dir.path()).expect("rename back");
    }
}
