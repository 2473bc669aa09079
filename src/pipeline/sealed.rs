//! Readers of a committed file's data that need no lock: the chunk layout
//! of a committed generation never changes, so any number of FUSE reads and
//! prefetch jobs use one reader at once. A write to the file replaces the
//! reader; one still in use keeps its own view (its chunks are cached under
//! a key of its own, so a newer reader never sees them).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bytes::Bytes;

use crate::error::{FsError, FsResult};
use crate::layout::array::parse_codec;
use crate::layout::manifest::FileManifest;
use crate::store::durable::DurableStore;

use super::chunk_load::{self, ChunkRef, ChunkSource};
use super::Pipeline;

/// A committed file's bytes, by chunk.
pub trait SealedRead: Send + Sync {
    /// Fills all of `out` with the file's bytes at `offset` (zeros where no
    /// data was ever written).
    fn read(&self, pipe: &Pipeline, offset: u64, out: &mut [u8]) -> FsResult<()>;
    /// The bytes `[offset, offset + len)` as a slice of one loaded chunk,
    /// when they lie inside one stored as the file holds them: the reply
    /// is then sent from the cache without a copy. `None`: use `read`.
    fn read_shared(&self, _pipe: &Pipeline, _offset: u64, _len: usize) -> FsResult<Option<Bytes>> {
        Ok(None)
    }
    /// The chunks holding bytes `[start, end)`, in file order.
    fn chunks(&self, start: u64, end: u64, out: &mut Vec<ChunkRef>);
    fn source(&self) -> &ChunkSource;
    /// A typical chunk's decoded size (the prefetcher's first step).
    fn chunk_hint(&self) -> u64;
}

/// Cache-key namespaces of readers start here, far above any generation
/// number (the write path's cache keys use the generation).
static NEXT_EPOCH: AtomicU64 = AtomicU64::new(1 << 48);

/// A cache-key namespace no other reader uses.
pub fn next_epoch() -> u64 {
    NEXT_EPOCH.fetch_add(1, Ordering::Relaxed)
}

/// A committed file of the `bytes` layout: a 1-D array of equal chunks.
pub struct ByteReader {
    ino: u64,
    epoch: u64,
    prefix: String,
    chunk: u64,
    codec: crate::config::Codec,
    crcs: Vec<Option<u32>>,
    size: u64,
    src: ChunkSource,
}

impl ByteReader {
    /// The reader of the committed generation `m` names.
    pub fn open(store: &Arc<DurableStore>, ino: u64, m: &FileManifest) -> FsResult<Self> {
        if m.layout.chunk_bytes == 0 {
            return Err(FsError::new(libc::EIO, "manifest: chunk size 0"));
        }
        Ok(ByteReader {
            ino,
            epoch: next_epoch(),
            prefix: format!("g{}/c/", m.generation),
            chunk: m.layout.chunk_bytes,
            codec: parse_codec(&m.layout.codec)?,
            crcs: m.chunks.clone(),
            size: m.size,
            src: ChunkSource {
                store: store.clone(),
                committed: true,
            },
        })
    }

    fn chunk_ref(&self, index: u64) -> ChunkRef {
        let start = index * self.chunk;
        let valid = self.size.min(start + self.chunk).saturating_sub(start) as usize;
        ChunkRef {
            key: (self.ino, self.epoch, index),
            store_key: format!("{}{index}", self.prefix),
            codec: self.codec,
            decoded: self.chunk as usize,
            crc: self
                .crcs
                .get(index as usize)
                .copied()
                .flatten()
                .map(|c| (c, valid)),
        }
    }
}

impl SealedRead for ByteReader {
    fn read(&self, pipe: &Pipeline, offset: u64, out: &mut [u8]) -> FsResult<()> {
        let mut pos = 0usize;
        while pos < out.len() {
            let at = offset + pos as u64;
            let index = at / self.chunk;
            let within = (at - index * self.chunk) as usize;
            let n = (self.chunk as usize - within).min(out.len() - pos);
            let dst = &mut out[pos..pos + n];
            if at >= self.size {
                dst.fill(0);
            } else {
                let data = chunk_load::load(pipe, &self.src, &self.chunk_ref(index))?;
                let have = data.len().saturating_sub(within).min(n);
                dst[..have].copy_from_slice(&data[within..within + have]);
                dst[have..].fill(0);
                // Past the committed size inside the last chunk: zeros.
                let valid = (self.size - at).min(n as u64) as usize;
                dst[valid..].fill(0);
            }
            pos += n;
        }
        Ok(())
    }

    fn read_shared(&self, pipe: &Pipeline, offset: u64, len: usize) -> FsResult<Option<Bytes>> {
        let index = offset / self.chunk;
        let within = (offset - index * self.chunk) as usize;
        let end = offset + len as u64;
        if len == 0 || end > self.size || within + len > self.chunk as usize {
            return Ok(None);
        }
        let data = chunk_load::load(pipe, &self.src, &self.chunk_ref(index))?;
        Ok((within + len <= data.len()).then(|| data.slice(within..within + len)))
    }

    fn chunks(&self, start: u64, end: u64, out: &mut Vec<ChunkRef>) {
        let end = end.min(self.size);
        if start >= end {
            return;
        }
        for index in start / self.chunk..end.div_ceil(self.chunk) {
            out.push(self.chunk_ref(index));
        }
    }

    fn source(&self) -> &ChunkSource {
        &self.src
    }

    fn chunk_hint(&self) -> u64 {
        self.chunk
    }
}
