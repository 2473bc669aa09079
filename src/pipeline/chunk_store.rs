//! Encoding and storing one chunk of a save: the configured codec applied
//! here (the same byte streams zarrs writes: `bytes` little endian, then
//! gzip or zstd), the result stored under the chunk's key. A chunk of zeros
//! (the arrays' fill value) is not stored, as zarrs does with
//! `store_empty_chunks = false`; a key it replaces is removed.
//!
//! Going around zarrs here saves its per-chunk work (its fill-value check
//! runs element by element for 16-bit floats: 3× the time of the whole
//! store for `ts-float16`) and lets chunk buffers come from the pool.

use std::io::Write;

use crate::config::Codec;
use crate::error::{FsError, FsResult};
use crate::store::durable::DurableStore;

use super::Pipeline;

/// Encodes `data` (a whole chunk) and stores it under `key`; the buffer
/// goes back to the pool. Returns the bytes stored.
pub fn store(
    pipe: &Pipeline,
    store: &DurableStore,
    key: &str,
    codec: Codec,
    data: Vec<u8>,
) -> FsResult<u64> {
    let io = |e: std::io::Error| FsError::io(&e, format!("store chunk {key}"));
    if is_zero(&data) {
        pipe.buffers.give(data);
        store.erase_value(key).map_err(io)?;
        return Ok(0);
    }
    let stored = match codec {
        Codec::None => {
            store.put_value(key, &data).map_err(io)?;
            data.len()
        }
        Codec::Gzip(level) => {
            let mut out = pipe.buffers.take(data.len() / 2 + 4096);
            out.clear();
            let mut enc = flate2::write::GzEncoder::new(out, flate2::Compression::new(level));
            enc.write_all(&data).map_err(io)?;
            let out = enc.finish().map_err(io)?;
            store.put_value(key, &out).map_err(io)?;
            let n = out.len();
            pipe.buffers.give(out);
            n
        }
        Codec::Zstd(level) => {
            let mut out = pipe
                .buffers
                .take(zstd::zstd_safe::compress_bound(data.len()));
            let n = zstd::bulk::compress_to_buffer(&data, &mut out[..], level).map_err(io)?;
            store.put_value(key, &out[..n]).map_err(io)?;
            pipe.buffers.give(out);
            n
        }
    };
    pipe.buffers.give(data);
    Ok(stored as u64)
}

/// Whether every byte is zero (a word at a time).
fn is_zero(data: &[u8]) -> bool {
    let mut words = data.chunks_exact(8);
    let zero_words = words
        .by_ref()
        .all(|c| <[u8; 8]>::try_from(c).is_ok_and(|w| u64::from_ne_bytes(w) == 0));
    zero_words && words.remainder().iter().all(|&b| b == 0)
}

/// Store key of a chunk of an array at `path` (`/g3/t00001.w`).
pub fn chunk_key(path: &str, coords: &[u64]) -> String {
    use std::fmt::Write;
    let mut key = format!("{}/c", path.trim_start_matches('/'));
    for c in coords {
        let _ = write!(key, "/{c}");
    }
    key
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::MountConfig;
    use crate::layout::array::{retrieve_chunk, ByteArraySpec};
    use crate::profile::Profiler;
    use std::sync::Arc;

    #[test]
    fn chunks_stored_here_read_back_through_zarrs_with_each_codec() {
        let pipe = Pipeline::new(MountConfig::default_config(), Arc::new(Profiler::default()))
            .expect("pipeline");
        for codec in [Codec::None, Codec::Gzip(1), Codec::Zstd(3)] {
            let dir = tempfile::tempdir().expect("tempdir");
            let st = Arc::new(DurableStore::open(dir.path()).expect("store"));
            let spec = ByteArraySpec {
                chunk_bytes: 70_000,
                codec,
            };
            let data: Vec<u8> = (0..70_000u32).map(|i| (i % 253) as u8).collect();
            store(&pipe, &st, &chunk_key("/g1", &[4]), codec, data.clone()).expect("store");
            let arr = spec.handle(&st, "/g1").expect("handle");
            assert_eq!(retrieve_chunk(&arr, 4).expect("read"), data);
            // Zeros replace it by absence.
            store(
                &pipe,
                &st,
                &chunk_key("/g1", &[4]),
                codec,
                vec![0u8; 70_000],
            )
            .expect("zeros");
            assert!(!dir.path().join("g1/c/4").exists());
            assert_eq!(retrieve_chunk(&arr, 4).expect("read"), vec![0u8; 70_000]);
        }
        assert!(is_zero(&[0u8; 17]) && !is_zero(&[0, 0, 0, 0, 0, 0, 0, 0, 0, 1]));
        assert_eq!(chunk_key("/g2/t00001.w", &[0, 3]), "g2/t00001.w/c/0/3");
    }
}
