//! A zarrs store rooted at an open directory, with atomic, durable writes.
//!
//! zarrs' own `FilesystemStore` truncates and rewrites keys in place, so a
//! crash can leave a torn chunk. Here every `set` writes a temp file and
//! renames it over the key, so a key always holds a whole old or a whole new
//! value; `barrier` makes everything written so far durable.
//!
//! The store holds an open descriptor on its root and reaches keys through
//! `/proc/self/fd/N/...`: the root can be renamed (a file renamed in the
//! mount) while chunks are in flight, and every write still lands in it.
//!
//! With the packed index, a file's keys live in the OCDBT database under
//! its stable id (`<id>/g3/...`) instead: the directory then keeps only the
//! manifest and staging files, and `seal` is the commit point of the data.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::direct_read::{self, DirectReads};
use super::packed::PackedStore;
/// Temp files, atomic writes and directory syncs are shared with the
/// packed database (recovery must recognise its temp files too).
pub use ocdbt::fsutil::{is_temp, sync_dir, temp_name, write_atomic};
use ocdbt::multi_get::{Buffers, CacheUse};
use ocdbt::{Db, OcdbtError};
use zarrs_storage::byte_range::{ByteRange, ByteRangeIterator, InvalidByteRangeError};
use zarrs_storage::{
    Bytes, ListableStorageTraits, MaybeBytesIterator, ReadableStorageTraits, StorageError,
    StoreKey, StoreKeys, StoreKeysPrefixes, StorePrefix, StorePrefixes, WritableStorageTraits,
};

/// A store whose keys are files under one directory, or keys of the packed
/// database under the file's id.
pub struct DurableStore {
    root: File,
    base: PathBuf,
    packed: Option<PackedStore>,
    direct: DirectReads,
}

impl std::fmt::Debug for DurableStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DurableStore")
            .field("base", &self.base)
            .field("packed", &self.packed.as_ref().map(|p| &p.prefix))
            .finish()
    }
}

fn db_err(e: OcdbtError) -> io::Error {
    match e {
        OcdbtError::Io { source, .. } => source,
        other => io::Error::other(other.to_string()),
    }
}

fn io_err(e: io::Error) -> StorageError {
    StorageError::IOError(Arc::new(e))
}

impl DurableStore {
    /// Opens a store on an existing directory.
    pub fn open(dir: &Path) -> io::Result<Self> {
        let root = File::open(dir)?;
        if !root.metadata()?.is_dir() {
            return Err(io::Error::from_raw_os_error(libc::ENOTDIR));
        }
        let base = PathBuf::from(format!("/proc/self/fd/{}", root.as_raw_fd()));
        Ok(DurableStore {
            root,
            base,
            packed: None,
            direct: DirectReads::default(),
        })
    }

    /// Opens a file directory whose data keys live in `db` under `id/`.
    pub fn open_packed(dir: &Path, db: Arc<Db>, id: &str) -> io::Result<Self> {
        let mut store = Self::open(dir)?;
        store.packed = Some(PackedStore::new(db, format!("{id}/")));
        Ok(store)
    }

    /// The key prefix in the packed database (`<id>/`), if packed.
    pub fn packed_prefix(&self) -> Option<&str> {
        self.packed.as_ref().map(|p| p.prefix.as_str())
    }

    /// Commit point of the data of a packed file: stores the manifest as
    /// `<id>/zarr.json` and commits the database (one group commit shared
    /// with concurrent callers). Nothing to do for a file store, whose data
    /// `barrier` made durable.
    pub fn seal(&self, manifest_json: &[u8]) -> io::Result<()> {
        let Some(p) = &self.packed else {
            return Ok(());
        };
        p.db.put(format!("{}zarr.json", p.prefix).as_bytes(), manifest_json)
            .map_err(db_err)?;
        p.db.commit().map_err(db_err)?;
        Ok(())
    }

    /// Removes generation `gen`'s array (and its plain data file).
    pub fn remove_generation(&self, gen: u64) {
        let _ = fs::remove_dir_all(self.key_path(&format!("g{gen}")));
        if let Some(p) = &self.packed {
            let _ =
                p.db.delete_prefix(format!("{}g{gen}/", p.prefix).as_bytes());
        }
    }

    /// Removes every key of a packed file (it was deleted); durable with
    /// the database's next commit, and recovery removes it after a crash.
    pub fn destroy(&self) {
        if let Some(p) = &self.packed {
            let _ = p.db.delete_prefix(p.prefix.as_bytes());
        }
    }

    /// Path of the root that stays valid across renames of the directory.
    pub fn base(&self) -> &Path {
        &self.base
    }

    /// Filesystem path of a key.
    pub fn key_path(&self, key: &str) -> PathBuf {
        self.base.join(key.trim_start_matches('/'))
    }

    /// Makes everything written to the backing filesystem durable (one
    /// `syncfs` instead of an fsync per chunk file, shared by commits that
    /// ask at the same time: see `group_sync`).
    pub fn barrier(&self) -> io::Result<()> {
        if self.packed.is_some() {
            // Packed data becomes durable with the database commit in `seal`.
            return Ok(());
        }
        let dev = nix::sys::stat::fstat(self.root.as_raw_fd())
            .map_err(|e| io::Error::from_raw_os_error(e as i32))?
            .st_dev;
        super::group_sync::syncfs_shared(dev, self.root.as_raw_fd())
    }

    /// Whole values of `keys`, read for a reader that keeps them: each
    /// value lands in a buffer from `buffers`, neighbouring values of the
    /// packed index come in one read, and with `drop_cache` the kernel's
    /// copy is dropped afterwards (committed data: the reader's cache and
    /// the kernel's cache of the mount already hold it, a third copy only
    /// costs fresh pages). `size_hint` is the expected length of a value
    /// (exact for uncompressed chunks), saving a `stat` per key.
    pub fn read_values(
        &self,
        keys: &[&str],
        size_hint: Option<usize>,
        buffers: &dyn Buffers,
        drop_cache: bool,
    ) -> Vec<io::Result<Option<Bytes>>> {
        if let Some(p) = &self.packed {
            let full: Vec<Vec<u8>> = keys
                .iter()
                .map(|k| format!("{}{k}", p.prefix).into_bytes())
                .collect();
            let cache = if drop_cache {
                CacheUse::DropAfterRead
            } else {
                CacheUse::Keep
            };
            return p
                .db
                .get_many(&full, buffers, cache)
                .into_iter()
                .map(|r| r.map_err(db_err))
                .collect();
        }
        keys.iter()
            .map(|k| self.read_file_value(k, size_hint, buffers, drop_cache))
            .collect()
    }

    fn read_file_value(
        &self,
        key: &str,
        size_hint: Option<usize>,
        buffers: &dyn Buffers,
        drop_cache: bool,
    ) -> io::Result<Option<Bytes>> {
        use nix::fcntl::{openat, OFlag};
        use std::os::fd::FromRawFd;
        let key = key.trim_start_matches('/');
        // A committed value read once for the cache: straight from the
        // disk, unless it is known to be small or the filesystem refuses
        // O_DIRECT. (A value of unknown length is read on the descriptor
        // already open, whatever its length: no second open.)
        if drop_cache
            && self.direct.enabled()
            && size_hint.is_none_or(|n| n >= direct_read::MIN_DIRECT)
        {
            match direct_read::open(&self.root, key, &self.direct) {
                Ok(None) => return Ok(None),
                Ok(Some(file)) => {
                    let len = match size_hint {
                        Some(n) => n,
                        None => file.metadata()?.len() as usize,
                    };
                    match direct_read::read(&file, len, buffers, &self.direct) {
                        Ok(v) => return Ok(Some(v)),
                        Err(e) if self.direct.enabled() => return Err(e),
                        Err(_) => {} // EINVAL: read through the cache
                    }
                }
                Err(e) if self.direct.enabled() => return Err(e),
                Err(_) => {}
            }
        }
        let fd = match openat(
            Some(self.root.as_raw_fd()),
            key,
            OFlag::O_RDONLY | OFlag::O_CLOEXEC,
            nix::sys::stat::Mode::empty(),
        ) {
            Ok(fd) => fd,
            Err(nix::errno::Errno::ENOENT) => return Ok(None),
            Err(e) => return Err(io::Error::from_raw_os_error(e as i32)),
        };
        // SAFETY: `openat` returned a new descriptor that nothing else owns.
        let file = unsafe { File::from_raw_fd(fd) };
        let len = match size_hint {
            Some(n) => n,
            None => file.metadata()?.len() as usize,
        };
        // One byte more than expected tells a longer file apart in the
        // same read.
        let mut buf = buffers.take(len + 1);
        let mut done = 0;
        while done < buf.len() {
            let n = file.read_at(&mut buf[done..], done as u64)?;
            if n == 0 {
                break;
            }
            done += n;
        }
        buf.truncate(done);
        if drop_cache {
            let _ = nix::fcntl::posix_fadvise(
                file.as_raw_fd(),
                0,
                0,
                nix::fcntl::PosixFadviseAdvice::POSIX_FADV_DONTNEED,
            );
        }
        Ok(Some(buffers.share(buf)))
    }

    /// Stores one value under `key` atomically (a whole old or a whole new
    /// value survives a crash): a temp file written and renamed relative
    /// to the open root, with no path walk per chunk. Durable at the next
    /// `barrier` (packed: at the database commit).
    pub fn put_value(&self, key: &str, value: &[u8]) -> io::Result<()> {
        self.put_value_sparse(key, value, value.len() as u64)
    }

    /// `put_value` of `value` followed by zeros up to `len` bytes. A chunk
    /// file is written with only `value` and extended with a hole (the
    /// zeros take no space and no write: a small file in a large chunk
    /// costs its own size); the packed index stores the zeros.
    pub fn put_value_sparse(&self, key: &str, value: &[u8], len: u64) -> io::Result<()> {
        if let Some(p) = &self.packed {
            let key = format!("{}{key}", p.prefix);
            if len == value.len() as u64 {
                return p.db.put(key.as_bytes(), value).map_err(db_err);
            }
            let mut whole = value.to_vec();
            whole.resize(usize::try_from(len).map_err(io::Error::other)?, 0);
            return p.db.put(key.as_bytes(), &whole).map_err(db_err);
        }
        let key = key.trim_start_matches('/');
        let tmp = temp_name(Path::new(key)).to_string_lossy().into_owned();
        let file = match self.create_at(&tmp) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                if let Some((dir, _)) = key.rsplit_once('/') {
                    fs::create_dir_all(self.key_path(dir))?;
                }
                self.create_at(&tmp)?
            }
            other => other?,
        };
        let written = (&file).write_all(value).and_then(|()| {
            if len > value.len() as u64 {
                file.set_len(len)?;
            }
            nix::fcntl::renameat(
                Some(self.root.as_raw_fd()),
                tmp.as_str(),
                Some(self.root.as_raw_fd()),
                key,
            )
            .map_err(|e| io::Error::from_raw_os_error(e as i32))
        });
        if written.is_err() {
            let _ = nix::unistd::unlinkat(
                Some(self.root.as_raw_fd()),
                tmp.as_str(),
                nix::unistd::UnlinkatFlags::NoRemoveDir,
            );
        }
        written
    }

    /// Removes `key` if present.
    pub fn erase_value(&self, key: &str) -> io::Result<()> {
        if let Some(p) = &self.packed {
            return p
                .db
                .delete(format!("{}{key}", p.prefix).as_bytes())
                .map(|_| ())
                .map_err(db_err);
        }
        match nix::unistd::unlinkat(
            Some(self.root.as_raw_fd()),
            key.trim_start_matches('/'),
            nix::unistd::UnlinkatFlags::NoRemoveDir,
        ) {
            Ok(()) | Err(nix::errno::Errno::ENOENT) => Ok(()),
            Err(e) => Err(io::Error::from_raw_os_error(e as i32)),
        }
    }

    fn create_at(&self, rel: &str) -> io::Result<File> {
        use nix::fcntl::{openat, OFlag};
        use std::os::fd::FromRawFd;
        let fd = openat(
            Some(self.root.as_raw_fd()),
            rel,
            OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_CLOEXEC,
            nix::sys::stat::Mode::from_bits_truncate(0o644),
        )
        .map_err(|e| io::Error::from_raw_os_error(e as i32))?;
        // SAFETY: `openat` returned a new descriptor that nothing else owns.
        Ok(unsafe { File::from_raw_fd(fd) })
    }

    /// The open root directory.
    pub fn root(&self) -> &File {
        &self.root
    }

    fn walk(&self, dir: &Path, rel: &str, out: &mut Vec<StoreKey>) -> io::Result<()> {
        let entries = match fs::read_dir(dir) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e),
        };
        for entry in entries {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if is_temp(&name) {
                continue;
            }
            let child = format!("{rel}{name}");
            if entry.file_type()?.is_dir() {
                self.walk(&entry.path(), &format!("{child}/"), out)?;
            } else if let Ok(k) = StoreKey::new(child) {
                out.push(k);
            }
        }
        Ok(())
    }
}

impl ReadableStorageTraits for DurableStore {
    fn get_partial_many<'a>(
        &'a self,
        key: &StoreKey,
        byte_ranges: ByteRangeIterator<'a>,
    ) -> Result<MaybeBytesIterator<'a>, StorageError> {
        if let Some(p) = &self.packed {
            return p.get_partial_many(key, byte_ranges);
        }
        let mut file = match File::open(self.key_path(key.as_str())) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io_err(e)),
        };
        let size = file.metadata().map_err(io_err)?.len();
        let mut out = Vec::new();
        for range in byte_ranges {
            let (start, end) = (range.start(size), range.end(size));
            if end > size || start > end {
                out.push(Err(InvalidByteRangeError::new(range, size).into()));
                continue;
            }
            let mut buf = vec![0u8; (end - start) as usize];
            if matches!(range, ByteRange::FromStart(0, None)) {
                file.seek(SeekFrom::Start(0)).map_err(io_err)?;
                file.read_exact(&mut buf).map_err(io_err)?;
            } else {
                file.read_exact_at(&mut buf, start).map_err(io_err)?;
            }
            out.push(Ok(Bytes::from(buf)));
        }
        Ok(Some(Box::new(out.into_iter())))
    }

    fn size_key(&self, key: &StoreKey) -> Result<Option<u64>, StorageError> {
        if let Some(p) = &self.packed {
            return p.size_key(key);
        }
        match fs::metadata(self.key_path(key.as_str())) {
            Ok(m) => Ok(Some(m.len())),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io_err(e)),
        }
    }

    fn supports_get_partial(&self) -> bool {
        true
    }
}

impl WritableStorageTraits for DurableStore {
    fn set(&self, key: &StoreKey, value: Bytes) -> Result<(), StorageError> {
        if let Some(p) = &self.packed {
            return p.set(key, value);
        }
        let path = self.key_path(key.as_str());
        let write = || write_atomic(&path, &value, false);
        match write() {
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                if let Some(parent) = path.parent() {
                    fs::create_dir_all(parent).map_err(io_err)?;
                }
                write().map_err(io_err)
            }
            other => other.map_err(io_err),
        }
    }

    fn set_partial_many(
        &self,
        key: &StoreKey,
        offset_values: zarrs_storage::OffsetBytesIterator,
    ) -> Result<(), StorageError> {
        if let Some(p) = &self.packed {
            return p.set_partial_many(key, offset_values);
        }
        // Read-modify-write through a temp file keeps the update atomic.
        let path = self.key_path(key.as_str());
        let mut data = match fs::read(&path) {
            Ok(d) => d,
            Err(e) if e.kind() == io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(io_err(e)),
        };
        for (offset, value) in offset_values {
            let offset = usize::try_from(offset)
                .map_err(|_| StorageError::Other("offset exceeds address space".into()))?;
            if data.len() < offset + value.len() {
                data.resize(offset + value.len(), 0);
            }
            data[offset..offset + value.len()].copy_from_slice(&value);
        }
        self.set(key, Bytes::from(data))
    }

    fn erase(&self, key: &StoreKey) -> Result<(), StorageError> {
        if let Some(p) = &self.packed {
            return p.erase(key);
        }
        match fs::remove_file(self.key_path(key.as_str())) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(io_err(e)),
            _ => Ok(()),
        }
    }

    fn erase_prefix(&self, prefix: &StorePrefix) -> Result<(), StorageError> {
        if let Some(p) = &self.packed {
            return p.erase_prefix(prefix);
        }
        let path = self.key_path(prefix.as_str());
        if prefix.as_str().is_empty() {
            return Err(StorageError::Other(
                "refusing to erase the store root".into(),
            ));
        }
        match fs::remove_dir_all(path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(io_err(e)),
            _ => Ok(()),
        }
    }

    fn supports_set_partial(&self) -> bool {
        true
    }
}

impl ListableStorageTraits for DurableStore {
    fn list(&self) -> Result<StoreKeys, StorageError> {
        self.list_prefix(&StorePrefix::root())
    }

    fn list_prefix(&self, prefix: &StorePrefix) -> Result<StoreKeys, StorageError> {
        if let Some(p) = &self.packed {
            return p.list_prefix(prefix);
        }
        let mut out = Vec::new();
        self.walk(&self.key_path(prefix.as_str()), prefix.as_str(), &mut out)
            .map_err(io_err)?;
        out.sort();
        Ok(out)
    }

    fn list_dir(&self, prefix: &StorePrefix) -> Result<StoreKeysPrefixes, StorageError> {
        if let Some(p) = &self.packed {
            return p.list_dir(prefix);
        }
        let mut keys = Vec::new();
        let mut prefixes: StorePrefixes = Vec::new();
        let dir = self.key_path(prefix.as_str());
        match fs::read_dir(&dir) {
            Ok(entries) => {
                for entry in entries {
                    let entry = entry.map_err(io_err)?;
                    let name = entry.file_name().to_string_lossy().into_owned();
                    if is_temp(&name) {
                        continue;
                    }
                    let child = format!("{}{name}", prefix.as_str());
                    if entry.file_type().map_err(io_err)?.is_dir() {
                        prefixes.push(StorePrefix::new(format!("{child}/"))?);
                    } else {
                        keys.push(StoreKey::new(child)?);
                    }
                }
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_err(e)),
        }
        keys.sort();
        prefixes.sort();
        Ok(StoreKeysPrefixes::new(keys, prefixes))
    }

    fn size_prefix(&self, prefix: &StorePrefix) -> Result<u64, StorageError> {
        let mut total = 0;
        for key in self.list_prefix(prefix)? {
            total += self.size_key(&key)?.unwrap_or(0);
        }
        Ok(total)
    }
}

/// Opens a file for appending raw bytes (used by the plain layout).
pub fn open_rw(path: &Path, create: bool) -> io::Result<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(create)
        .truncate(false)
        .open(path)
}

#[cfg(test)]
mod tests {
    use super::*;

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
