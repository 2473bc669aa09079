//! Small durable-file helpers shared with the filesystem above: temp files
//! that recovery recognises, atomic replacement, directory syncs.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

static TEMP_SEQ: AtomicU64 = AtomicU64::new(0);

/// Name for a temp file next to `path`; never a valid chunk or metadata key
/// name, so listing skips it and recovery can remove it.
pub fn temp_name(path: &Path) -> PathBuf {
    use std::os::unix::ffi::{OsStrExt, OsStringExt};
    let n = TEMP_SEQ.fetch_add(1, Ordering::Relaxed);
    let suffix = format!(".ckptfs-tmp.{}.{n}", std::process::id());
    // The temp name must fit NAME_MAX (255) even when the name already does.
    let base = path.file_name().unwrap_or_default().as_bytes();
    let keep = base.len().min(255usize.saturating_sub(suffix.len()));
    let mut name = base[..keep].to_vec();
    name.extend_from_slice(suffix.as_bytes());
    path.with_file_name(std::ffi::OsString::from_vec(name))
}

/// Opens `path` for reading and writing, never truncating it; `create`
/// creates it if missing.
pub fn open_rw(path: &Path, create: bool) -> io::Result<File> {
    fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(create)
        .truncate(false)
        .open(path)
}

/// Whether a directory entry is one of our temp files.
pub fn is_temp(name: &str) -> bool {
    name.contains(".ckptfs-tmp.")
}

/// Writes `data` to `path` atomically: temp file, optional fsync, rename.
pub fn write_atomic(path: &Path, data: &[u8], sync: bool) -> io::Result<()> {
    let tmp = temp_name(path);
    let result = (|| {
        let mut f = File::create(&tmp)?;
        f.write_all(data)?;
        if sync {
            f.sync_data()?;
        }
        fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// fsyncs a directory so that renames and creations in it are durable.
pub fn sync_dir(path: &Path) -> io::Result<()> {
    File::open(path)?.sync_all()
}

/// Starts writeback of `file`'s dirty pages without waiting for it
/// (`sync_file_range(SYNC_FILE_RANGE_WRITE)`): a save's data goes to the
/// disk while the save goes on, so the barrier at its commit finds little
/// left to write. Durability still comes from the barrier; this is a hint,
/// and its errors are ignored.
pub fn start_writeback(file: &File) {
    use std::os::fd::AsRawFd;
    // SAFETY: a plain system call on a descriptor `file` keeps open for
    // the call; it touches no memory of ours (nix has no wrapper for it).
    let _ = unsafe { libc::sync_file_range(file.as_raw_fd(), 0, 0, libc::SYNC_FILE_RANGE_WRITE) };
}

/// Alignment of the buffer, offset and length of an `O_DIRECT` read (the
/// logical block size of every common device divides it).
pub const DIRECT_ALIGN: usize = 4096;

/// Fills `buf` (aligned to [`DIRECT_ALIGN`], as is `offset`) from `file`,
/// opened with `O_DIRECT`, stopping early at the end of the file (a read
/// that comes back empty or ends off a block boundary). Returns the bytes
/// read; `EINVAL` means the device refused the alignment.
pub fn read_direct_at(file: &File, offset: u64, buf: &mut [u8]) -> io::Result<usize> {
    use std::os::unix::fs::FileExt;
    let mut done = 0;
    while done < buf.len() {
        let n = match file.read_at(&mut buf[done..], offset + done as u64) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        done += n;
        if n == 0 || done % DIRECT_ALIGN != 0 {
            break;
        }
    }
    Ok(done)
}
