//! The data path between FUSE requests and the store: chunk assembly, the
//! encoder pool, the memory budget, the decoded-chunk cache and read-ahead.

pub mod budget;
pub mod buffers;
pub mod cache;
pub mod chunk_load;
pub mod chunk_store;
pub mod chunked;
pub mod format_data;
pub mod format_read;
pub mod format_write;
pub mod inflight;
pub mod plain;
pub mod pool;
pub mod prefetch;
pub mod sealed;
pub mod staging;

use std::sync::Arc;

use crate::config::{Chunking, MountConfig};
use crate::layout::array::ByteArraySpec;
use crate::profile::Profiler;

/// Everything the data path of a mount shares.
pub struct Pipeline {
    /// The mount's config, as loaded.
    pub config: MountConfig,
    /// Bounds the chunk data held by writers at once.
    pub budget: Arc<MemoryBudget>,
    /// Encodes and stores chunks of saves.
    pub pool: pool::WorkerPool,
    /// Loads chunks ahead of readers (apart from the save pool, so a save
    /// never waits behind read-ahead, nor a reader behind a save).
    pub read_pool: pool::WorkerPool,
    /// Decoded chunks for readers, shared by all files.
    pub cache: cache::ChunkCache,
    /// Recycled chunk buffers (see `buffers`).
    pub buffers: Arc<buffers::BufferPool>,
    /// The mount's profiler: counters, histograms and the access log.
    pub profiler: Arc<Profiler>,
    /// Chunks come from an object store, where every store read is a
    /// round trip: a read loads what no read-ahead window queued as one
    /// batch instead of chunk by chunk.
    pub remote_store: bool,
}

pub use budget::MemoryBudget;

impl Pipeline {
    /// The data path of a mount with `config`: budget, worker pools, cache and buffer pool sized
    /// from it.
    pub fn new(config: MountConfig, profiler: Arc<Profiler>) -> std::io::Result<Arc<Self>> {
        Self::build(config, profiler, false)
    }

    /// [`Pipeline::new`] for a mount whose chunks are on an object store.
    pub fn new_remote(config: MountConfig, profiler: Arc<Profiler>) -> std::io::Result<Arc<Self>> {
        Self::build(config, profiler, true)
    }

    fn build(
        config: MountConfig,
        profiler: Arc<Profiler>,
        remote_store: bool,
    ) -> std::io::Result<Arc<Self>> {
        crate::store::direct_write::configure(config.io.direct_chunk_writes, encoders(&config));
        Ok(Arc::new(Pipeline {
            remote_store,
            budget: MemoryBudget::new(config.io.memory_budget),
            pool: pool::WorkerPool::new(encoders(&config), "ckptfs-worker")?,
            read_pool: pool::WorkerPool::new(config.io.read_concurrency, "ckptfs-reader")?,
            cache: cache::ChunkCache::new(config.io.cache),
            buffers: buffers::BufferPool::new(buffers_limit(&config)),
            profiler,
            config,
        }))
    }

    /// Whether new generations are one plain chunk.
    pub fn plain_layout(&self) -> bool {
        self.config.layout.chunking == Chunking::None
    }

    /// Encoding of new chunked generations.
    pub fn byte_spec(&self) -> ByteArraySpec {
        ByteArraySpec {
            chunk_bytes: self.config.layout.raw_chunk_bytes,
            codec: self.config.layout.codec,
        }
    }
}

/// Threads that encode and store chunks: `io.concurrency`, and with a
/// compressor at least one per core (the codec, not the disk, is then what
/// a save waits on; `io.concurrency = 1` must not leave cores idle).
fn encoders(config: &MountConfig) -> usize {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    match config.layout.codec {
        crate::config::Codec::None => config.io.concurrency,
        _ => config.io.concurrency.max(cores),
    }
}

/// Free buffers kept for reuse: enough for the chunks in flight to cycle
/// through resident memory, and no more than the 64 MiB a mount may hold
/// beside its budget and its cache (a t5x mount with 64 MiB chunks peaked
/// at 1.2 GiB with a pool four chunks deep).
fn buffers_limit(config: &MountConfig) -> u64 {
    (64u64 << 20).min(config.io.memory_budget / 2)
}

/// CRC-32C of `data` followed by `zeros` zero bytes.
pub fn crc_with_zeros(crc: u32, data: &[u8], mut zeros: u64) -> u32 {
    static ZERO: [u8; 65536] = [0; 65536];
    let mut crc = crc32c::crc32c_append(crc, data);
    while zeros > 0 {
        let n = zeros.min(ZERO.len() as u64) as usize;
        crc = crc32c::crc32c_append(crc, &ZERO[..n]);
        zeros -= n as u64;
    }
    crc
}
