//! Encoding and storing one chunk of a save: the configured codec applied
//! here (the same byte streams zarrs writes: `bytes` little endian, then
//! gzip or zstd), the result stored under the chunk's key. A chunk of zeros
//! (the arrays' fill value) is not stored, as zarrs does with
//! `store_empty_chunks = false`; a key it replaces is removed.
//!
//! Going around zarrs here saves its per-chunk work (its fill-value check
//! runs element by element for 16-bit floats: 3× the time of the whole
//! store for `ts-float16`) and lets chunk buffers come from the pool.

use crate::config::Codec;
use crate::error::{FsError, FsResult};
use crate::layout::{gzip, shuffle};
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
            // The zero tail of a last or only chunk (a file smaller than a
            // chunk, a tensor's edge) is left as a hole.
            // (The packed index stores whole values: no hole to gain.)
            let keep = nonzero_prefix(&data);
            if store.packed_prefix().is_none() && data.len() - keep >= SPARSE_MIN_TAIL {
                store
                    .put_value_sparse(key, &data[..keep], data.len() as u64)
                    .map_err(io)?;
                keep
            } else {
                store.put_value(key, &data).map_err(io)?;
                data.len()
            }
        }
        Codec::Gzip(_) | Codec::Zstd(_) | Codec::ZstdShuffled { .. } => {
            let (out, n) = compress(pipe, codec, &data).map_err(io)?;
            store.put_value(key, &out[..n]).map_err(io)?;
            pipe.buffers.give(out);
            n
        }
    };
    pipe.buffers.give(data);
    Ok(stored as u64)
}

/// Encodes and stores several whole chunks of `chunk_len` bytes, laid
/// side by side in `data`, under `keys`: the store writes them together
/// (the packed index appends them with one write). Zero chunks are not
/// stored (their keys removed). Returns the bytes stored for each.
pub fn store_many(
    pipe: &Pipeline,
    store: &DurableStore,
    keys: &[String],
    codec: Codec,
    data: &[u8],
    chunk_len: usize,
) -> FsResult<Vec<u64>> {
    let io = |e: std::io::Error| FsError::io(&e, format!("store {} chunks", keys.len()));
    let mut kept: Vec<(&str, &[u8], Option<Encoded>)> = Vec::with_capacity(keys.len());
    let mut sizes = Vec::with_capacity(keys.len());
    for (key, chunk) in keys.iter().zip(data.chunks(chunk_len.max(1))) {
        if is_zero(chunk) {
            store.erase_value(key).map_err(io)?;
            sizes.push(0);
            continue;
        }
        let enc = match codec {
            Codec::None => None,
            _ => Some(compress(pipe, codec, chunk).map_err(io)?),
        };
        sizes.push(enc.as_ref().map_or(chunk.len(), |(_, n)| *n) as u64);
        kept.push((key, chunk, enc));
    }
    let items: Vec<(&str, &[u8])> = kept
        .iter()
        .map(|(k, chunk, enc)| (*k, enc.as_ref().map_or(*chunk, |(out, n)| &out[..*n])))
        .collect();
    if !items.is_empty() {
        store.put_values(&items).map_err(io)?;
    }
    for (out, _) in kept.into_iter().filter_map(|(_, _, enc)| enc) {
        pipe.buffers.give(out);
    }
    Ok(sizes)
}

/// A compressed chunk: a pooled buffer and the length of the stream in it.
type Encoded = (Vec<u8>, usize);

/// Compresses `data` with `codec` (gzip, zstd, or shuffle then zstd) into
/// a pooled buffer.
fn compress(pipe: &Pipeline, codec: Codec, data: &[u8]) -> std::io::Result<Encoded> {
    match codec {
        Codec::Gzip(level) => {
            let mut out = pipe.buffers.take(gzip::bound(level, data.len())?);
            let n = gzip::compress(level, data, &mut out[..])?;
            Ok((out, n))
        }
        Codec::Zstd(level) => {
            let mut out = pipe
                .buffers
                .take(zstd::zstd_safe::compress_bound(data.len()));
            let n = zstd::bulk::compress_to_buffer(data, &mut out[..], level)?;
            Ok((out, n))
        }
        Codec::ZstdShuffled { level, elem } => {
            let mut planes = pipe.buffers.take(data.len());
            shuffle::shuffle(data, &mut planes[..data.len()], usize::from(elem));
            let r = compress(pipe, Codec::Zstd(level), &planes[..data.len()]);
            pipe.buffers.give(planes);
            r
        }
        Codec::None => Err(std::io::Error::other("no codec to compress with")),
    }
}

/// A zero tail shorter than this is written (a hole saves too little).
const SPARSE_MIN_TAIL: usize = 64 << 10;

/// Stores a chunk of `chunk_len` bytes given as its first bytes `data`
/// (zeros after: a file's last, partial chunk). Uncompressed, only `data`
/// is written, without building the padded chunk; a codec gets it padded.
pub fn store_partial(
    pipe: &Pipeline,
    store: &DurableStore,
    key: &str,
    codec: Codec,
    data: &[u8],
    chunk_len: usize,
) -> FsResult<u64> {
    if !matches!(codec, Codec::None) || data.len() > chunk_len || store.packed_prefix().is_some() {
        let mut padded = pipe.buffers.take(chunk_len.max(data.len()));
        padded[..data.len()].copy_from_slice(data);
        padded[data.len()..].fill(0);
        return self::store(pipe, store, key, codec, padded);
    }
    let io = |e: std::io::Error| FsError::io(&e, format!("store chunk {key}"));
    let keep = nonzero_prefix(data);
    if keep == 0 {
        store.erase_value(key).map_err(io)?;
        return Ok(0);
    }
    store
        .put_value_sparse(key, &data[..keep], chunk_len as u64)
        .map_err(io)?;
    Ok(keep as u64)
}

/// Length of `data` without its run of trailing zeros (scanned from the
/// end a word at a time, so it costs the tail's length).
fn nonzero_prefix(data: &[u8]) -> usize {
    let mut end = data.len();
    while !end.is_multiple_of(8) {
        if data[end - 1] != 0 {
            return end;
        }
        end -= 1;
    }
    while end >= 8 {
        let w = u64::from_ne_bytes(data[end - 8..end].try_into().unwrap_or([1; 8]));
        if w != 0 {
            break;
        }
        end -= 8;
    }
    while end > 0 && data[end - 1] == 0 {
        end -= 1;
    }
    end
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
        for codec in [
            Codec::None,
            Codec::Gzip(1),
            Codec::Zstd(3),
            Codec::ZstdShuffled { level: 3, elem: 4 },
        ] {
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

    #[test]
    fn a_zero_tail_is_stored_as_a_hole_and_reads_back_as_zeros() {
        use std::os::unix::fs::MetadataExt;
        let pipe = Pipeline::new(MountConfig::default_config(), Arc::new(Profiler::default()))
            .expect("pipeline");
        let dir = tempfile::tempdir().expect("tempdir");
        let st = Arc::new(DurableStore::open(dir.path()).expect("store"));
        let spec = ByteArraySpec {
            chunk_bytes: 1 << 20,
            codec: Codec::None,
        };
        let mut data = vec![0u8; 1 << 20];
        for (i, b) in data[..100_001].iter_mut().enumerate() {
            *b = (i % 251) as u8 | 1;
        }
        let n = store(
            &pipe,
            &st,
            &chunk_key("/g1", &[0]),
            Codec::None,
            data.clone(),
        )
        .expect("store");
        assert_eq!(n, 100_001);
        let meta = std::fs::metadata(dir.path().join("g1/c/0")).expect("chunk file");
        assert_eq!(meta.len(), 1 << 20, "the chunk keeps its full length");
        assert!(
            meta.blocks() * 512 < 200_000,
            "{} bytes allocated",
            meta.blocks() * 512
        );
        let arr = spec.handle(&st, "/g1").expect("handle");
        assert_eq!(retrieve_chunk(&arr, 0).expect("read"), data);
        // The same chunk given as its first bytes only, and a zero one.
        let key = chunk_key("/g1", &[1]);
        let n = store_partial(&pipe, &st, &key, Codec::None, &data[..150_000], 1 << 20)
            .expect("partial");
        assert_eq!(n, 100_001);
        assert_eq!(retrieve_chunk(&arr, 1).expect("read"), data);
        store_partial(&pipe, &st, &key, Codec::None, &[0u8; 10], 1 << 20).expect("zeros");
        assert!(!dir.path().join("g1/c/1").exists());
        for codec in [Codec::Gzip(1), Codec::Zstd(1)] {
            let spec = ByteArraySpec {
                chunk_bytes: 1 << 20,
                codec,
            };
            let key = chunk_key("/g2", &[0]);
            store_partial(&pipe, &st, &key, codec, &data[..150_000], 1 << 20).expect("codec");
            let arr = spec.handle(&st, "/g2").expect("handle");
            assert_eq!(retrieve_chunk(&arr, 0).expect("read"), data);
        }
    }

    #[test]
    fn nonzero_prefix_finds_the_last_nonzero_byte() {
        for len in [0usize, 1, 7, 8, 9, 63, 64, 65, 4099] {
            for last in 0..len.min(70) {
                let mut v = vec![0u8; len];
                v[last] = 3;
                assert_eq!(nonzero_prefix(&v), last + 1, "len {len} last {last}");
                let at = len - 1 - last;
                let mut v = vec![0u8; len];
                v[at] = 1;
                assert_eq!(nonzero_prefix(&v), at + 1, "len {len} at {at}");
            }
            assert_eq!(nonzero_prefix(&vec![0u8; len]), 0);
        }
    }
}
