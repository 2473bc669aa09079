//! The `files` index's chunk store: a file's arrays are files under its
//! backing directory (`g3/zarr.json`, `g3/c/0`, ...), reached relative to
//! an open descriptor of that directory, so the directory can be renamed
//! (a rename in the mount) while chunks are in flight.
//!
//! zarrs' own `FilesystemStore` truncates and rewrites keys in place, so a
//! crash can leave a torn chunk. Here every write goes to a temp file that
//! is renamed over the key, so a key always holds a whole old or a whole
//! new value; `barrier` makes everything written so far durable.

use std::fs::{self, File};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use ocdbt::fsutil::{is_temp, start_writeback, temp_name, write_atomic};
use ocdbt::multi_get::Buffers;
use zarrs_storage::byte_range::{ByteRange, ByteRangeIterator, InvalidByteRangeError};
use zarrs_storage::{
    Bytes, ListableStorageTraits, MaybeBytesIterator, ReadableStorageTraits, StorageError,
    StoreKey, StoreKeys, StoreKeysPrefixes, StorePrefix, StorePrefixes, WritableStorageTraits,
};

use super::chunks::ChunkStore;
use super::direct_read::{self, DirectReads};
use super::direct_write;

fn io_err(e: io::Error) -> StorageError {
    StorageError::IOError(Arc::new(e))
}

/// A file's arrays as files under its directory.
pub struct DirChunks {
    /// Shared with the `DurableStore` of the same directory.
    root: Arc<File>,
    base: PathBuf,
    direct: DirectReads,
}

impl DirChunks {
    /// The chunks under the open directory `root`.
    pub fn new(root: Arc<File>) -> Self {
        let base = PathBuf::from(format!("/proc/self/fd/{}", root.as_raw_fd()));
        DirChunks {
            root,
            base,
            direct: DirectReads::default(),
        }
    }

    fn key_path(&self, key: &str) -> PathBuf {
        self.base.join(key.trim_start_matches('/'))
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

    fn create_at(&self, rel: &str, direct: bool) -> io::Result<File> {
        use nix::fcntl::{openat, OFlag};
        use std::os::fd::FromRawFd;
        let mut flags = OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_CLOEXEC;
        if direct {
            flags |= OFlag::O_DIRECT;
        }
        let fd = openat(
            Some(self.root.as_raw_fd()),
            rel,
            flags,
            nix::sys::stat::Mode::from_bits_truncate(0o644),
        )
        .map_err(|e| io::Error::from_raw_os_error(e as i32))?;
        // SAFETY: `openat` returned a new descriptor that nothing else owns.
        Ok(unsafe { File::from_raw_fd(fd) })
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

/// Chunk files at least this large start their writeback once written
/// (smaller ones are left to the commit's barrier, which writes them
/// together).
const EARLY_WRITEBACK_MIN: usize = 256 << 10;

impl ChunkStore for DirChunks {
    fn read_values(
        &self,
        keys: &[&str],
        size_hint: Option<usize>,
        buffers: &dyn Buffers,
        drop_cache: bool,
    ) -> Vec<io::Result<Option<Bytes>>> {
        keys.iter()
            .map(|k| self.read_file_value(k, size_hint, buffers, drop_cache))
            .collect()
    }

    fn put_sparse(&self, key: &str, value: &[u8], len: u64) -> io::Result<()> {
        let key = key.trim_start_matches('/');
        let tmp = temp_name(Path::new(key)).to_string_lossy().into_owned();
        let mut direct = direct_write::wanted(value.len());
        let create = |direct: bool| match self.create_at(&tmp, direct) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                if let Some((dir, _)) = key.rsplit_once('/') {
                    fs::create_dir_all(self.key_path(dir))?;
                }
                self.create_at(&tmp, direct)
            }
            other => other,
        };
        let file = match create(direct) {
            Err(e) if direct && e.raw_os_error() == Some(libc::EINVAL) => {
                // No O_DIRECT on this filesystem.
                direct_write::disable();
                direct = false;
                create(false)?
            }
            other => other?,
        };
        let write = || -> io::Result<()> {
            if direct {
                match direct_write::write(&file, value) {
                    Ok(true) => return Ok(()),
                    Ok(false) => {}
                    // A device whose blocks are larger than the alignment:
                    // buffered from now on, this value written again.
                    Err(e) if e.raw_os_error() == Some(libc::EINVAL) => direct_write::disable(),
                    Err(e) => return Err(e),
                }
                direct_write::buffered(&file)?;
            }
            (&file).write_all(value)?;
            if value.len() >= EARLY_WRITEBACK_MIN {
                start_writeback(&file);
            }
            Ok(())
        };
        let written = write().and_then(|()| {
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

    fn erase_value(&self, key: &str) -> io::Result<()> {
        match nix::unistd::unlinkat(
            Some(self.root.as_raw_fd()),
            key.trim_start_matches('/'),
            nix::unistd::UnlinkatFlags::NoRemoveDir,
        ) {
            Ok(()) | Err(nix::errno::Errno::ENOENT) => Ok(()),
            Err(e) => Err(io::Error::from_raw_os_error(e as i32)),
        }
    }

    /// One `syncfs` instead of an fsync per chunk file, shared by commits
    /// that ask at the same time (see `group_sync`).
    fn barrier(&self) -> io::Result<()> {
        let dev = nix::sys::stat::fstat(self.root.as_raw_fd())
            .map_err(|e| io::Error::from_raw_os_error(e as i32))?
            .st_dev;
        super::group_sync::syncfs_shared(dev, self.root.as_raw_fd())
    }

    /// The data is durable after `barrier`; the manifest's own commit is
    /// the commit point.
    fn seal(&self, _manifest_json: &[u8]) -> io::Result<()> {
        Ok(())
    }

    fn erase_generation(&self, gen: u64) {
        let _ = fs::remove_dir_all(self.key_path(&format!("g{gen}")));
    }

    /// The directory goes with the file's name.
    fn erase_file(&self) {}

    fn shared_prefix(&self) -> Option<&str> {
        None
    }
}

impl ReadableStorageTraits for DirChunks {
    fn get_partial_many<'a>(
        &'a self,
        key: &StoreKey,
        byte_ranges: ByteRangeIterator<'a>,
    ) -> Result<MaybeBytesIterator<'a>, StorageError> {
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

impl WritableStorageTraits for DirChunks {
    fn set(&self, key: &StoreKey, value: Bytes) -> Result<(), StorageError> {
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
        match fs::remove_file(self.key_path(key.as_str())) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(io_err(e)),
            _ => Ok(()),
        }
    }

    fn erase_prefix(&self, prefix: &StorePrefix) -> Result<(), StorageError> {
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

impl ListableStorageTraits for DirChunks {
    fn list(&self) -> Result<StoreKeys, StorageError> {
        self.list_prefix(&StorePrefix::root())
    }

    fn list_prefix(&self, prefix: &StorePrefix) -> Result<StoreKeys, StorageError> {
        let mut out = Vec::new();
        self.walk(&self.key_path(prefix.as_str()), prefix.as_str(), &mut out)
            .map_err(io_err)?;
        out.sort();
        Ok(out)
    }

    fn list_dir(&self, prefix: &StorePrefix) -> Result<StoreKeysPrefixes, StorageError> {
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
