//! The plain layout: a generation is one file (`g<N>/c/0`, the single chunk
//! of an uncompressed 1-D `uint8` array) written in place by `pwrite`.
//!
//! The bytes of the committed version, `[0, protected)`, are never written in
//! place: a write or truncate that touches them first copies the file into a
//! new generation (copy-on-write), so a crash leaves the old version whole.
//! Appends beyond it go straight into the committed file, which keeps an
//! fsync after every block cheap.

use std::fs::{self, File};
use std::io;
use std::os::unix::fs::FileExt;
use std::sync::Arc;

use crate::error::{FsResult, IoContext};
use crate::store::durable::{open_rw, DurableStore};

/// A file's generation in the plain layout: one data file, written in place.
pub struct PlainData {
    /// The generation whose data file this is.
    pub gen: u64,
    file: Arc<File>,
    /// Bytes that belong to the committed version.
    protected: u64,
    /// CRC-32C of `[0, crc_len)` while writes stay sequential.
    crc: Option<(u64, u32)>,
    /// Kernel passthrough writers share the data file: never switch to a
    /// new generation under them (they would keep writing the old one).
    in_place: bool,
}

/// Path of a generation's data file, relative to the file directory.
pub fn data_key(gen: u64) -> String {
    format!("g{gen}/c/0")
}

fn create_gen_file(store: &DurableStore, gen: u64) -> io::Result<File> {
    let path = store.key_path(&data_key(gen));
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent)?;
    }
    let f = open_rw(&path, true)?;
    f.set_len(0)?;
    Ok(f)
}

impl PlainData {
    /// A new, empty generation.
    pub fn create(store: &DurableStore, gen: u64) -> FsResult<Self> {
        let file = create_gen_file(store, gen).ctx(format!("create g{gen}"))?;
        Ok(PlainData {
            gen,
            file: Arc::new(file),
            protected: 0,
            crc: Some((0, 0)),
            in_place: false,
        })
    }

    /// The committed generation of a file, opened for reading and appending.
    pub fn open(store: &DurableStore, gen: u64, size: u64, crc: Option<u32>) -> FsResult<Self> {
        let path = store.key_path(&data_key(gen));
        let file = match open_rw(&path, false) {
            Ok(f) => f,
            // An empty file never wrote its chunk.
            Err(e) if e.kind() == io::ErrorKind::NotFound && size == 0 => {
                create_gen_file(store, gen).ctx(format!("create g{gen}"))?
            }
            Err(e) => return Err(crate::error::FsError::io(&e, format!("open g{gen}"))),
        };
        Ok(PlainData {
            gen,
            file: Arc::new(file),
            protected: size,
            crc: crc.map(|c| (size, c)),
            in_place: false,
        })
    }

    /// Copies `[0, size)` into generation `new_gen` and switches to it.
    fn copy_on_write(&mut self, store: &DurableStore, size: u64, new_gen: u64) -> FsResult<()> {
        let new = create_gen_file(store, new_gen).ctx(format!("create g{new_gen}"))?;
        copy_range(&self.file, &new, size).ctx("copy-on-write")?;
        self.file = Arc::new(new);
        self.gen = new_gen;
        self.protected = 0;
        Ok(())
    }

    /// Writes at `offset`, first copying the file to a new generation when the write would touch
    /// committed bytes (unless passthrough writers share the file).
    pub fn write(
        &mut self,
        store: &DurableStore,
        offset: u64,
        data: &[u8],
        size: u64,
        new_gen: impl FnOnce() -> u64,
    ) -> FsResult<()> {
        if offset < self.protected && !self.in_place {
            self.copy_on_write(store, size, new_gen())?;
        }
        self.file.write_all_at(data, offset).ctx("write data")?;
        self.crc = match self.crc {
            Some((len, crc)) if len == offset => {
                Some((len + data.len() as u64, crc32c::crc32c_append(crc, data)))
            }
            _ => None,
        };
        Ok(())
    }

    /// Sets the size, first copying the file to a new generation when it would cut committed bytes
    /// (unless passthrough writers share the file).
    pub fn truncate(
        &mut self,
        store: &DurableStore,
        new_size: u64,
        size: u64,
        new_gen: impl FnOnce() -> u64,
    ) -> FsResult<()> {
        if new_size < self.protected && !self.in_place {
            self.copy_on_write(store, size.min(new_size), new_gen())?;
        }
        self.file.set_len(new_size).ctx("truncate data")?;
        if matches!(self.crc, Some((len, _)) if len > new_size) {
            self.crc = None;
        }
        Ok(())
    }

    /// Reads at `offset` up to the data file's end; returns the bytes read.
    pub fn read(&self, offset: u64, buf: &mut [u8]) -> FsResult<usize> {
        read_full(&self.file, offset, buf)
    }

    /// Makes `[0, size)` durable and returns its CRC-32C. After this the
    /// whole file belongs to the committed version.
    pub fn sync(&mut self, size: u64) -> FsResult<u32> {
        let (len, crc) = self.crc.unwrap_or((0, 0));
        let (start, seed) = if len <= size { (len, crc) } else { (0, 0) };
        let crc = if size - start < PARALLEL_MIN {
            self.file.sync_data().ctx("fsync data")?;
            crc_of_range(&self.file, start, size, seed).ctx("checksum data")?
        } else {
            // Bytes the daemon never saw (kernel passthrough writes): the
            // checksum reads them back from the page cache while the fsync
            // writes them to disk, instead of one after the other.
            let file = &*self.file;
            let (synced, crc) = std::thread::scope(|s| {
                let sync = s.spawn(|| file.sync_data());
                let crc = crc_parallel(file, start, size, seed);
                (sync.join(), crc)
            });
            synced
                .unwrap_or_else(|_| Err(io::Error::other("fsync thread panicked")))
                .ctx("fsync data")?;
            crc.ctx("checksum data")?
        };
        self.crc = Some((size, crc));
        self.protected = size;
        Ok(crc)
    }

    /// The generation array's path in the file's store (`/g<N>`).
    pub fn gen_path(&self) -> String {
        format!("/g{}", self.gen)
    }

    /// The data file, for reads that run without the file's lock.
    pub fn shared_file(&self) -> Arc<File> {
        self.file.clone()
    }

    /// Whether the generation holds committed bytes.
    pub fn is_protected(&self) -> bool {
        self.protected > 0
    }

    /// Copies the committed bytes into generation `gen`'s data file and
    /// makes it durable, for the manifest to name while this file is
    /// changed in place (it is shared with kernel passthrough opens).
    /// Returns the committed size; this file holds no committed bytes after.
    pub fn copy_aside(&mut self, store: &DurableStore, gen: u64) -> FsResult<u64> {
        let size = self.protected;
        let copy = create_gen_file(store, gen).ctx(format!("create g{gen}"))?;
        copy_range(&self.file, &copy, size).ctx("copy committed version aside")?;
        copy.sync_all().ctx("fsync copied version")?;
        self.protected = 0;
        Ok(size)
    }

    /// Kernel passthrough opens use this data file: changes stay in it
    /// (never a new generation under them).
    pub fn set_shared(&mut self, on: bool) {
        self.in_place = on;
    }

    /// Others (kernel passthrough writers) change the file: the running
    /// checksum no longer covers it.
    pub fn forget_crc(&mut self) {
        self.crc = None;
    }

    /// Length and modification time of the data file (ns).
    pub fn file_state(&self) -> std::io::Result<(u64, i64)> {
        use std::os::unix::fs::MetadataExt;
        let m = self.file.metadata()?;
        Ok((m.len(), m.mtime() * 1_000_000_000 + m.mtime_nsec()))
    }
}

/// Reads until `buf` is full or the file ends.
pub fn read_full(file: &File, offset: u64, buf: &mut [u8]) -> FsResult<usize> {
    let mut done = 0;
    while done < buf.len() {
        let n = file
            .read_at(&mut buf[done..], offset + done as u64)
            .ctx("read data")?;
        if n == 0 {
            break;
        }
        done += n;
    }
    Ok(done)
}

/// Fills `buf` from `offset`; bytes past the end of the file read as zeros
/// (a sparse staging file shorter than the logical size).
pub fn read_or_zeros(file: &File, offset: u64, buf: &mut [u8]) -> FsResult<()> {
    let n = read_full(file, offset, buf)?;
    buf[n..].fill(0);
    Ok(())
}

fn copy_range(from: &File, to: &File, len: u64) -> io::Result<()> {
    let mut off_in: i64 = 0;
    let mut off_out: i64 = 0;
    while (off_in as u64) < len {
        let want = (len - off_in as u64).min(1 << 30) as usize;
        let n = nix::fcntl::copy_file_range(from, Some(&mut off_in), to, Some(&mut off_out), want)?;
        if n == 0 {
            // Source shorter than its recorded size: the rest is a hole.
            break;
        }
    }
    to.set_len(len)
}

/// Ranges at least this long are checksummed beside their fsync, in parts.
const PARALLEL_MIN: u64 = 16 << 20;

/// `crc_of_range` of `[start, end)` in up to one part per core (at least
/// 16 MiB each), combined in order.
fn crc_parallel(file: &File, start: u64, end: u64, seed: u32) -> io::Result<u32> {
    crc_in_parts(file, start, end, seed, 16 << 20)
}

fn crc_in_parts(file: &File, start: u64, end: u64, seed: u32, min_part: u64) -> io::Result<u32> {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as u64;
    let parts = ((end - start) / min_part).clamp(1, cores.clamp(2, 8));
    let step = (end - start).div_ceil(parts);
    let bounds: Vec<(u64, u64)> = (0..parts)
        .map(|i| (start + i * step, (start + (i + 1) * step).min(end)))
        .filter(|(a, b)| a < b)
        .collect();
    let crcs: Vec<io::Result<u32>> = std::thread::scope(|s| {
        let handles: Vec<_> = bounds
            .iter()
            .map(|&(a, b)| s.spawn(move || crc_of_range(file, a, b, 0)))
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(io::Error::other("checksum thread panicked")))
            })
            .collect()
    });
    let mut crc = seed;
    for ((a, b), part) in bounds.iter().zip(crcs) {
        crc = crc32c::crc32c_combine(crc, part?, (b - a) as usize);
    }
    Ok(crc)
}

fn crc_of_range(file: &File, start: u64, end: u64, mut crc: u32) -> io::Result<u32> {
    let mut buf = vec![0u8; 1 << 20];
    let mut pos = start;
    while pos < end {
        let want = ((end - pos) as usize).min(buf.len());
        let n = file.read_at(&mut buf[..want], pos)?;
        if n == 0 {
            // Past the end of the data file: a hole of zeros.
            crc = super::crc_with_zeros(crc, &[], end - pos);
            break;
        }
        crc = crc32c::crc32c_append(crc, &buf[..n]);
        pos += n as u64;
    }
    Ok(crc)
}

/// Reads a committed plain generation for `verify`.
pub fn checksum_file(store: &Arc<DurableStore>, gen: u64, size: u64) -> io::Result<u32> {
    let f = File::open(store.key_path(&data_key(gen)))?;
    crc_parallel(&f, 0, size, 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_checksum_in_parts_equals_the_whole_one_with_a_seed_and_a_hole() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("data");
        let data: Vec<u8> = (0..5_000_000u32).map(|i| (i * 7 + i / 3) as u8).collect();
        std::fs::write(&path, &data).expect("write");
        let f = File::open(&path).expect("open");
        // Past the file's end up to 6 MB reads as zeros.
        let mut whole = data.clone();
        whole.resize(6_000_000, 0);
        for start in [0u64, 1, 999_999] {
            let seed = crc32c::crc32c(&whole[..start as usize]);
            let want = crc32c::crc32c(&whole);
            for min_part in [1u64 << 20, 1 << 19, 1 << 30] {
                let got = crc_in_parts(&f, start, 6_000_000, seed, min_part).expect("crc");
                assert_eq!(got, want, "start {start}, parts of {min_part}");
            }
        }
    }
}
