//! Data files (`d/<32 hex>`): append-only logs of out-of-line values and
//! encoded nodes. Appends reserve their range with one atomic add, so many
//! threads `pwrite` into the same file at once.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use super::error::{corrupt, io_at, OcdbtError, Result};
use super::remote::Remote;

/// Directory, relative to the database root, of the files we create.
pub const DATA_DIR: &str = "d";

/// One open data file.
#[derive(Debug)]
pub struct DataFile {
    /// Path relative to the database root.
    pub path: String,
    /// Prefix that nodes stored in this file resolve their own tables
    /// against (TensorStore's base path; empty for our files).
    pub transitive: String,
    io: Io,
    /// Bytes reserved so far (the file's logical length).
    len: AtomicU64,
    /// Set when a finished local file's bytes were handed to a copy
    /// elsewhere that holds the same bytes (`evict`): reads go there.
    evicted: OnceLock<Arc<dyn Remote>>,
    /// Local reads hold it shared; `evict` holds it alone while it frees
    /// the local blocks, so no read sees the hole.
    gate: parking_lot::RwLock<()>,
    /// Written since the last `fdatasync`.
    dirty: AtomicBool,
    /// Bytes written since writeback was last started.
    unkicked: AtomicU64,
}

pub use crate::fsutil::DIRECT_ALIGN;

/// Where a data file's bytes are.
#[derive(Debug)]
enum Io {
    Local {
        file: File,
        /// Where the file is, for the direct-read descriptor opened on first use.
        full: PathBuf,
        /// A second descriptor opened with `O_DIRECT` (`None`: the filesystem
        /// refused it, and reads go through the page cache).
        direct: OnceLock<Option<File>>,
        /// Set when the device refused a direct read's alignment.
        direct_refused: AtomicBool,
    },
    /// An object of a read-only database elsewhere (see `remote`).
    Remote(Arc<dyn Remote>),
}

impl Io {
    fn local(file: File, full: PathBuf) -> Self {
        Io::Local {
            file,
            full,
            direct: OnceLock::new(),
            direct_refused: AtomicBool::new(false),
        }
    }
}

/// Writeback of a data file is started each time this many bytes landed.
const WRITEBACK_STEP: u64 = 8 << 20;

/// The extended attribute that marks a local data file whose blocks were
/// freed by `evict`: it is a hole of its old length, and its bytes are in
/// the database's copy elsewhere.
const EVICTED_XATTR: &str = "user.ocdbt.evicted";

/// Whether `file` was evicted (see [`DataFile::evict`]); a filesystem
/// without extended attributes has none evicted.
pub fn is_evicted(file: &File) -> bool {
    use xattr::FileExt;
    matches!(file.get_xattr(EVICTED_XATTR), Ok(Some(_)))
}

fn mark_evicted(file: &File) -> std::io::Result<()> {
    use xattr::FileExt;
    file.set_xattr(EVICTED_XATTR, b"1")
}

impl DataFile {
    /// Creates a new, empty file with a random 128-bit name.
    pub fn create(root: &Path) -> Result<Self> {
        let mut id = [0u8; 16];
        random_bytes(&mut id)?;
        let name: String = id.iter().map(|b| format!("{b:02x}")).collect();
        let path = format!("{DATA_DIR}/{name}");
        let full = root.join(&path);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&full)
            .map_err(io_at(&full))?;
        Ok(Self {
            path,
            transitive: String::new(),
            io: Io::local(file, full),
            len: AtomicU64::new(0),
            evicted: OnceLock::new(),
            gate: parking_lot::RwLock::new(()),
            dirty: AtomicBool::new(true),
            unkicked: AtomicU64::new(0),
        })
    }

    /// Opens an existing file read-only (we never append to old files).
    pub fn open(root: &Path, path: &str, transitive: &str) -> Result<Self> {
        Self::open_with(root, path, transitive, None)
    }

    /// [`DataFile::open`], reading an evicted file from `copy`; an error
    /// for an evicted one without it (its local bytes are a hole).
    pub fn open_with(
        root: &Path,
        path: &str,
        transitive: &str,
        copy: Option<&Arc<dyn Remote>>,
    ) -> Result<Self> {
        check_path(path)?;
        let full = root.join(path);
        let file = File::open(&full).map_err(io_at(&full))?;
        let len = file.metadata().map_err(io_at(&full))?.len();
        let evicted = is_evicted(&file);
        let f = Self::opened(path, transitive, Io::local(file, full), len);
        if evicted {
            let Some(copy) = copy else {
                return Err(OcdbtError::Invalid(format!(
                    "{path} was evicted to the database's copy elsewhere (an object store): open it with that copy (mount the s3:// location)"
                )));
            };
            let _ = f.evicted.set(copy.clone());
        }
        Ok(f)
    }

    /// Hands this finished file's bytes to `copy`, which holds the same
    /// bytes (the object store a writer published it to): reads go there
    /// from now on, the file is marked (so a later open does the same) and
    /// its local blocks are freed, its length kept. Returns the bytes
    /// freed. Never for a file still appended to.
    pub fn evict(&self, copy: Arc<dyn Remote>) -> Result<u64> {
        use std::os::fd::AsRawFd;
        use std::os::unix::fs::MetadataExt;
        let Io::Local { file, .. } = &self.io else {
            return Ok(0);
        };
        let _alone = self.gate.write();
        if self.evicted.get().is_some() {
            return Ok(0);
        }
        let held = file.metadata().map_err(io_at(&self.path))?.blocks() * 512;
        // The mark is durable before any byte goes: after a crash the
        // file is either whole, or marked and read from the copy.
        mark_evicted(file).map_err(io_at(&self.path))?;
        file.sync_all().map_err(io_at(&self.path))?;
        let _ = self.evicted.set(copy);
        // Whole blocks, the last partial one too (the length is kept).
        let len = i64::try_from(self.len().next_multiple_of(4096))
            .map_err(|_| corrupt("data file too large"))?;
        nix::fcntl::fallocate(
            file.as_raw_fd(),
            nix::fcntl::FallocateFlags::FALLOC_FL_PUNCH_HOLE
                | nix::fcntl::FallocateFlags::FALLOC_FL_KEEP_SIZE,
            0,
            len,
        )
        .map_err(|e| io_at(&self.path)(std::io::Error::from_raw_os_error(e as i32)))?;
        Ok(held)
    }

    /// Whether reads of this file go to a copy elsewhere (see `evict`).
    pub fn is_evicted(&self) -> bool {
        self.evicted.get().is_some()
    }

    /// Opens an object of a database elsewhere (read-only, like `open`).
    pub fn open_remote(remote: Arc<dyn Remote>, path: &str, transitive: &str) -> Result<Self> {
        check_path(path)?;
        let len = remote.size(path).map_err(remote_err(&*remote, path))?;
        Ok(Self::opened(path, transitive, Io::Remote(remote), len))
    }

    fn opened(path: &str, transitive: &str, io: Io, len: u64) -> Self {
        Self {
            path: path.to_string(),
            transitive: transitive.to_string(),
            io,
            len: AtomicU64::new(len),
            evicted: OnceLock::new(),
            gate: parking_lot::RwLock::new(()),
            dirty: AtomicBool::new(false),
            unkicked: AtomicU64::new(0),
        }
    }

    /// Bytes reserved so far: the logical length, which may run ahead of what has landed.
    pub fn len(&self) -> u64 {
        self.len.load(Ordering::Acquire)
    }

    /// Whether nothing has been reserved.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Reserves `n` bytes at the end, returning their offset.
    pub fn reserve(&self, n: u64) -> u64 {
        self.len.fetch_add(n, Ordering::AcqRel)
    }

    /// Writes `data` at `offset` (a range `reserve` handed out) and marks the file for the next
    /// `sync`.
    pub fn write_at(&self, offset: u64, data: &[u8]) -> Result<()> {
        let file = self.local_file()?;
        let r = file.write_all_at(data, offset).map_err(io_at(&self.path));
        // Marked after the write lands: a concurrent `sync` that clears the
        // flag either covers this write or leaves the flag set for the next.
        self.dirty.store(true, Ordering::Release);
        let n = data.len() as u64;
        if self.unkicked.fetch_add(n, Ordering::Relaxed) + n >= WRITEBACK_STEP {
            self.unkicked.store(0, Ordering::Relaxed);
            crate::fsutil::start_writeback(file);
        }
        r
    }

    /// Reads exactly `len` bytes, refusing ranges past the file's end.
    pub fn read_at(&self, offset: u64, len: u64) -> Result<Vec<u8>> {
        let end = offset
            .checked_add(len)
            .ok_or_else(|| corrupt("reference range overflows"))?;
        if end > self.len() {
            return Err(corrupt(format!(
                "reference {offset}+{len} past the end of {} ({} bytes)",
                self.path,
                self.len()
            )));
        }
        let n = usize::try_from(len).map_err(|_| corrupt("reference too large"))?;
        let mut buf = vec![0u8; n];
        self.read_exact(offset, &mut buf)?;
        Ok(buf)
    }

    /// Fills `buf` from `offset`, refusing ranges past the file's end.
    pub fn read_into(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        self.check_range(offset, buf.len() as u64)?;
        self.read_exact(offset, buf)
    }

    fn read_exact(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        let remote = |r: &Arc<dyn Remote>, buf: &mut [u8]| {
            r.read_at(&self.path, offset, buf)
                .map_err(remote_err(&**r, &self.path))
        };
        match &self.io {
            Io::Local { file, .. } => {
                let shared = self.gate.read();
                if let Some(r) = self.evicted.get() {
                    drop(shared);
                    return remote(r, buf);
                }
                file.read_exact_at(buf, offset).map_err(io_at(&self.path))
            }
            Io::Remote(r) => remote(r, buf),
        }
    }

    /// The local file, or an error for an object elsewhere (read-only).
    fn local_file(&self) -> Result<&File> {
        match &self.io {
            Io::Local { file, .. } => Ok(file),
            Io::Remote(r) => Err(OcdbtError::Invalid(format!(
                "{} in {} is read-only",
                self.path,
                r.describe()
            ))),
        }
    }

    fn check_range(&self, offset: u64, len: u64) -> Result<()> {
        let end = offset
            .checked_add(len)
            .ok_or_else(|| corrupt("reference range overflows"))?;
        if end > self.len() {
            return Err(corrupt(format!(
                "reference {offset}+{len} past the end of {} ({} bytes)",
                self.path,
                self.len()
            )));
        }
        Ok(())
    }

    /// Reads `offset..offset + len` with `O_DIRECT`, from the disk into
    /// `buf` (which must hold `len` + 3 × [`DIRECT_ALIGN`] bytes), without
    /// passing through the page cache; returns where in `buf` the range
    /// starts. `Ok(None)`: this filesystem does not do direct reads (read
    /// through the cache instead). Pages of the range still dirty in the
    /// cache are written back by the kernel before it reads.
    pub fn read_direct(&self, offset: u64, len: u64, buf: &mut [u8]) -> Result<Option<usize>> {
        self.check_range(offset, len)?;
        let _shared = self.gate.read();
        if self.evicted.get().is_some() {
            return Ok(None);
        }
        let Some(file) = self.direct_file() else {
            return Ok(None);
        };
        let align = DIRECT_ALIGN as u64;
        let lo = offset - offset % align;
        let hi = (offset + len).next_multiple_of(align);
        let span = usize::try_from(hi - lo).map_err(|_| corrupt("reference too large"))?;
        let start = buf.as_ptr().align_offset(DIRECT_ALIGN);
        if start + span > buf.len() {
            return Err(corrupt("direct read buffer too small"));
        }
        let need =
            usize::try_from(offset + len - lo).map_err(|_| corrupt("reference too large"))?;
        let done = match crate::fsutil::read_direct_at(file, lo, &mut buf[start..start + span]) {
            Ok(n) => n,
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                // Alignment the device does not accept: stop trying.
                if let Io::Local { direct_refused, .. } = &self.io {
                    direct_refused.store(true, Ordering::Relaxed);
                }
                return Ok(None);
            }
            Err(e) => return Err(io_at(&self.path)(e)),
        };
        if done < need {
            return Err(io_at(&self.path)(std::io::Error::from(
                std::io::ErrorKind::UnexpectedEof,
            )));
        }
        Ok(Some(start + (offset - lo) as usize))
    }

    fn direct_file(&self) -> Option<&File> {
        let Io::Local {
            full,
            direct,
            direct_refused,
            ..
        } = &self.io
        else {
            return None;
        };
        if direct_refused.load(Ordering::Relaxed) {
            return None;
        }
        direct
            .get_or_init(|| {
                use std::os::unix::fs::OpenOptionsExt;
                OpenOptions::new()
                    .read(true)
                    .custom_flags(libc::O_DIRECT)
                    .open(full)
                    .ok()
            })
            .as_ref()
    }

    /// Asks the kernel to drop its cached pages of a range that was read
    /// once for a reader that keeps its own copy (a hint: errors ignored).
    pub fn drop_cached(&self, offset: u64, len: u64) {
        use std::os::fd::AsRawFd;
        let Io::Local { file, .. } = &self.io else {
            return;
        };
        let (Ok(off), Ok(len)) = (i64::try_from(offset), i64::try_from(len)) else {
            return;
        };
        let _ = nix::fcntl::posix_fadvise(
            file.as_raw_fd(),
            off,
            len,
            nix::fcntl::PosixFadviseAdvice::POSIX_FADV_DONTNEED,
        );
    }

    /// `fdatasync` if anything was written since the last one.
    pub fn sync(&self) -> Result<()> {
        if self.dirty.swap(false, Ordering::AcqRel) {
            if let Err(e) = self.local_file()?.sync_data() {
                self.dirty.store(true, Ordering::Release);
                return Err(io_at(&self.path)(e));
            }
        }
        Ok(())
    }
}

pub(crate) fn check_path(path: &str) -> Result<()> {
    if path.split('/').any(|c| c == ".." || c.is_empty()) || path.starts_with('/') {
        return Err(corrupt(format!(
            "data file path {path:?} leaves the database"
        )));
    }
    Ok(())
}

fn remote_err<'a>(
    r: &'a dyn Remote,
    path: &'a str,
) -> impl FnOnce(std::io::Error) -> OcdbtError + 'a {
    move |source| OcdbtError::Io {
        path: format!("{}/{path}", r.describe()),
        source,
    }
}

/// All data files the database knows, by a small process-local id.
#[derive(Debug, Default)]
pub struct FileTable {
    files: Vec<Option<Arc<DataFile>>>,
    by_path: HashMap<String, u32>,
}

impl FileTable {
    /// The file with id `id`, unless it was removed.
    pub fn get(&self, id: u32) -> Option<&Arc<DataFile>> {
        self.files.get(id as usize).and_then(|f| f.as_ref())
    }

    /// The id of the file at `path` (relative to the database root).
    pub fn id_of(&self, path: &str) -> Option<u32> {
        self.by_path.get(path).copied()
    }

    /// Adds a file under the next unused id and returns that id.
    pub fn insert(&mut self, f: Arc<DataFile>) -> u32 {
        let id = self.files.len() as u32;
        self.by_path.insert(f.path.clone(), id);
        self.files.push(Some(f));
        id
    }

    /// Forgets a file (after compaction); open handles stay valid.
    pub fn remove(&mut self, id: u32) -> Option<Arc<DataFile>> {
        let f = self.files.get_mut(id as usize)?.take()?;
        self.by_path.remove(&f.path);
        Some(f)
    }

    /// Every file still in the table, with its id.
    pub fn iter(&self) -> impl Iterator<Item = (u32, &Arc<DataFile>)> {
        self.files
            .iter()
            .enumerate()
            .filter_map(|(i, f)| f.as_ref().map(|f| (i as u32, f)))
    }
}

fn random_bytes(buf: &mut [u8]) -> Result<()> {
    let mut filled = 0;
    while filled < buf.len() {
        // SAFETY: the pointer and length describe the unfilled tail of `buf`.
        let n =
            unsafe { libc::getrandom(buf[filled..].as_mut_ptr().cast(), buf.len() - filled, 0) };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(io_at("getrandom")(e));
        }
        filled += n as usize;
    }
    Ok(())
}

/// A fresh random database uuid.
pub fn random_uuid() -> Result<[u8; 16]> {
    let mut id = [0u8; 16];
    random_bytes(&mut id)?;
    Ok(id)
}
