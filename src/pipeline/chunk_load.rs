//! Loading committed chunks for readers: read the encoded value from the
//! store (one large read for neighbours in the packed index), decode it into
//! a recycled buffer, check its CRC-32C, and publish it in the chunk cache.
//!
//! Chunks are decoded here, not through zarrs: the read path knows each
//! chunk's codec and decoded length from the manifest, and decoding straight
//! into a pooled buffer saves zarrs' intermediate copies and allocations.

use std::sync::Arc;

use bytes::Bytes;

use crate::config::Codec;
use crate::error::{FsError, FsResult};
use crate::layout::{gzip, shuffle};
use crate::store::durable::DurableStore;

use super::buffers::PoolBuffers;
use super::cache::ChunkKey;
use super::Pipeline;

/// One chunk a reader needs.
#[derive(Debug, Clone)]
pub struct ChunkRef {
    /// Its key in the chunk cache.
    pub key: ChunkKey,
    /// Its key in the file's store (`g3/t00001.w/c/0/2`).
    pub store_key: String,
    /// Codec to decode the stored bytes with.
    pub codec: Codec,
    /// Length once decoded (the whole chunk, edges padded).
    pub decoded: usize,
    /// CRC-32C the first `.1` decoded bytes must have.
    pub crc: Option<(u32, usize)>,
}

/// Where chunks come from: the file's store, and whether its data is
/// committed (read once for the cache: the kernel's copy is dropped).
#[derive(Clone)]
pub struct ChunkSource {
    /// The file's store the chunk keys are read from.
    pub store: Arc<DurableStore>,
    /// The data is committed: chunks are read once for the cache and the kernel's page cache copy
    /// is dropped.
    pub committed: bool,
}

fn eio(msg: String) -> FsError {
    FsError::new(libc::EIO, msg)
}

/// Decodes a stored chunk into a pooled buffer of `r.decoded` bytes and
/// checks it. A chunk never stored (all fill value) reads as zeros.
fn decode(pipe: &Pipeline, r: &ChunkRef, stored: Option<Bytes>) -> FsResult<Bytes> {
    let data = match (stored, r.codec) {
        (None, _) => {
            let mut buf = pipe.buffers.take(r.decoded);
            buf.fill(0);
            pipe.buffers.share(buf)
        }
        (Some(raw), Codec::None) => {
            if raw.len() != r.decoded {
                return Err(eio(format!(
                    "chunk {}: {} bytes stored, {} expected",
                    r.store_key,
                    raw.len(),
                    r.decoded
                )));
            }
            raw
        }
        (Some(raw), Codec::Gzip(_)) => {
            let mut buf = pipe.buffers.take(r.decoded);
            let n = gzip::decompress(&raw, &mut buf[..])
                .map_err(|e| eio(format!("chunk {}: {e}", r.store_key)))?;
            if n != r.decoded {
                return Err(eio(format!(
                    "chunk {}: gzip gave {n} bytes, {} expected",
                    r.store_key, r.decoded
                )));
            }
            pipe.buffers.share(buf)
        }
        (Some(raw), Codec::Zstd(_)) => {
            let mut buf = pipe.buffers.take(r.decoded);
            zstd_into(r, &raw, &mut buf[..r.decoded])?;
            pipe.buffers.share(buf)
        }
        (Some(raw), Codec::ZstdShuffled { elem, .. }) => {
            let mut planes = pipe.buffers.take(r.decoded);
            let mut buf = pipe.buffers.take(r.decoded);
            let done = zstd_into(r, &raw, &mut planes[..r.decoded]);
            if done.is_ok() {
                shuffle::unshuffle(&planes[..r.decoded], &mut buf[..r.decoded], elem.into());
            }
            pipe.buffers.give(planes);
            done?;
            pipe.buffers.share(buf)
        }
    };
    if let Some((crc, valid)) = r.crc {
        let got = crc32c::crc32c(&data[..valid.min(data.len())]);
        if got != crc {
            return Err(eio(format!(
                "chunk {}: checksum mismatch (stored {crc:08x}, read {got:08x})",
                r.store_key
            )));
        }
    }
    Ok(data)
}

/// Decodes a zstd frame into `out`, which it must fill exactly.
fn zstd_into(r: &ChunkRef, raw: &[u8], out: &mut [u8]) -> FsResult<()> {
    let n = zstd::bulk::decompress_to_buffer(raw, out)
        .map_err(|e| eio(format!("chunk {}: zstd: {e}", r.store_key)))?;
    if n != out.len() {
        return Err(eio(format!(
            "chunk {}: zstd gave {n} bytes, {} expected",
            r.store_key,
            out.len()
        )));
    }
    Ok(())
}

/// Reads and decodes `refs` (already claimed by the caller).
fn read_decode(pipe: &Pipeline, src: &ChunkSource, refs: &[&ChunkRef]) -> Vec<FsResult<Bytes>> {
    let keys: Vec<&str> = refs.iter().map(|r| r.store_key.as_str()).collect();
    // Uncompressed chunks are exactly their decoded length.
    let hint = refs
        .iter()
        .all(|r| r.codec == Codec::None)
        .then(|| refs.first().map(|r| r.decoded))
        .flatten()
        .filter(|d| refs.iter().all(|r| r.decoded == *d));
    let stored = {
        let mut t = pipe.profiler.stage("store_read");
        let stored = src
            .store
            .read_values(&keys, hint, &PoolBuffers(&pipe.buffers), src.committed);
        t.add_bytes(
            stored
                .iter()
                .map(|v| {
                    v.as_ref()
                        .map_or(0, |b| b.as_ref().map_or(0, |b| b.len() as u64))
                })
                .sum(),
        );
        stored
    };
    let mut t = pipe.profiler.stage("decode");
    let out: Vec<FsResult<Bytes>> = refs
        .iter()
        .zip(stored)
        .map(|(r, got)| {
            let got = got.map_err(|e| FsError::io(&e, format!("read chunk {}", r.store_key)))?;
            if let Some(b) = &got {
                pipe.profiler.add_backend_read(b.len() as u64);
            }
            decode(pipe, r, got)
        })
        .collect();
    t.add_bytes(
        out.iter()
            .map(|d| d.as_ref().map_or(0, |b| b.len() as u64))
            .sum(),
    );
    out
}

/// The chunk, from the cache or loaded now (waiting if another reader or
/// a prefetch job is loading it).
pub fn load(pipe: &Pipeline, src: &ChunkSource, r: &ChunkRef) -> FsResult<Bytes> {
    pipe.cache.get_or_load(r.key, || {
        read_decode(pipe, src, &[r])
            .pop()
            .unwrap_or_else(|| Err(eio("chunk load returned nothing".into())))
    })
}

/// Loads every chunk of `refs` not cached or loading yet, as one batch (the
/// packed index merges neighbours), and leaves them in the cache for the
/// reader, pinned with `pin` (loaded ahead: kept until read). Returns the
/// bytes loaded; a failed chunk is left for the reader's own load to report.
pub fn load_batch(pipe: &Pipeline, src: &ChunkSource, refs: &[ChunkRef], pin: bool) -> u64 {
    let mut claimed = Vec::new();
    let mut guards = Vec::new();
    for r in refs {
        if let Some(g) = pipe.cache.begin(r.key) {
            claimed.push(r);
            guards.push(g);
        }
    }
    if claimed.is_empty() {
        return 0;
    }
    // From an object store many batches are in flight at once (each waits
    // on the network), each held as the response and as the values read
    // out of it: they count against the memory budget until decoded into
    // the cache, which has its own limit.
    let _held = pipe.remote_store.then(|| {
        let decoded: u64 = claimed.iter().map(|r| r.decoded as u64).sum();
        pipe.budget.reserve(2 * decoded)
    });
    let mut bytes = 0;
    for (g, result) in guards.into_iter().zip(read_decode(pipe, src, &claimed)) {
        if let Ok(b) = g.finish(result, pin) {
            bytes += b.len() as u64;
        }
    }
    bytes
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::MountConfig;
    use crate::layout::array::{store_chunk, ByteArraySpec};
    use crate::profile::Profiler;

    #[test]
    fn chunks_written_by_zarrs_decode_here_with_each_codec() {
        let pipe = Pipeline::new(MountConfig::default_config(), Arc::new(Profiler::default()))
            .expect("pipeline");
        for (n, codec) in [
            Codec::None,
            Codec::Gzip(1),
            Codec::Zstd(3),
            Codec::ZstdShuffled { level: 3, elem: 4 },
        ]
        .into_iter()
        .enumerate()
        {
            let dir = tempfile::tempdir().expect("tempdir");
            let store = Arc::new(DurableStore::open(dir.path()).expect("store"));
            let spec = ByteArraySpec {
                chunk_bytes: 100_000,
                codec,
            };
            let arr = spec.handle(&store, "/g1").expect("handle");
            let data: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
            store_chunk(&arr, 2, data.clone()).expect("store");
            let src = ChunkSource {
                store,
                committed: true,
            };
            let r = |index: u64, crc| ChunkRef {
                key: (n as u64, 1, index),
                store_key: format!("g1/c/{index}"),
                codec,
                decoded: 100_000,
                crc,
            };
            let crc = crc32c::crc32c(&data);
            let got = load(&pipe, &src, &r(2, Some((crc, 100_000)))).expect("load");
            assert_eq!(&got[..], &data[..]);
            // Never stored: zeros.
            let zeros = load(&pipe, &src, &r(5, None)).expect("absent");
            assert!(zeros.iter().all(|&b| b == 0) && zeros.len() == 100_000);
            // A wrong checksum is an error, not data.
            pipe.cache.remove(&(n as u64, 1, 2));
            let bad = load(&pipe, &src, &r(2, Some((crc ^ 1, 100_000))));
            assert!(bad.is_err());
        }
    }
}
