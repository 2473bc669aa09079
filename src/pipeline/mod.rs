//! The data path between FUSE requests and the store: chunk assembly, the
//! encoder pool, the memory budget, the decoded-chunk cache and read-ahead.

pub mod budget;
pub mod cache;
pub mod chunked;
pub mod format_data;
pub mod format_read;
pub mod format_write;
pub mod inflight;
pub mod plain;
pub mod pool;

use std::sync::Arc;

use crate::config::{Chunking, MountConfig};
use crate::layout::array::ByteArraySpec;
use crate::profile::Profiler;

/// Everything the data path of a mount shares.
pub struct Pipeline {
    pub config: MountConfig,
    pub budget: Arc<MemoryBudget>,
    pub pool: pool::WorkerPool,
    pub cache: cache::ChunkCache,
    pub profiler: Arc<Profiler>,
}

pub use budget::MemoryBudget;

impl Pipeline {
    pub fn new(config: MountConfig, profiler: Arc<Profiler>) -> std::io::Result<Arc<Self>> {
        Ok(Arc::new(Pipeline {
            budget: MemoryBudget::new(config.io.memory_budget),
            pool: pool::WorkerPool::new(config.io.concurrency)?,
            cache: cache::ChunkCache::new(config.io.cache),
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
