//! The Zarr v3 array that holds one generation of a file's bytes.
//!
//! Opaque bytes are a 1-D `uint8` array with the little-endian `bytes` codec
//! written out explicitly, then the configured compressor. While a file is
//! being written its final size is unknown, so chunks go through a handle
//! built with an open-ended shape; the array's `zarr.json` is written with
//! the real shape at commit.

use std::sync::Arc;

use zarrs::array::codec::{BytesCodec, GzipCodec, ShuffleCodec, ZstdCodec};
use zarrs::array::{
    data_type, Array, ArrayBuilder, ArrayBytes, BytesToBytesCodecTraits, CodecOptions,
};
use zarrs_storage::StorageError;

use crate::config::Codec;
use crate::error::{eio, from_array, from_storage, FsResult};
use crate::store::durable::DurableStore;

/// Shape used for a generation whose size is not yet known.
const OPEN_ENDED: u64 = 1 << 52;

/// A generation's byte array, opened over the file's durable store.
pub type ByteArray = Array<DurableStore>;

/// Describes how a generation array is encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ByteArraySpec {
    /// Length of each chunk, in bytes.
    pub chunk_bytes: u64,
    /// Compressor applied after the `bytes` codec.
    pub codec: Codec,
}

impl ByteArraySpec {
    fn builder(&self, shape: u64) -> FsResult<ArrayBuilder> {
        let mut b = ArrayBuilder::new(
            vec![shape],
            vec![self.chunk_bytes.max(1)],
            data_type::uint8(),
            0u8,
        );
        b.array_to_bytes_codec(Arc::new(BytesCodec::little()));
        b.bytes_to_bytes_codecs(bytes_codecs(self.codec)?);
        b.dimension_names(Some(["byte"]));
        Ok(b)
    }

    /// A handle for writing and reading chunks of a generation at `path`.
    pub fn handle(&self, store: &Arc<DurableStore>, path: &str) -> FsResult<ByteArray> {
        self.builder(OPEN_ENDED)?
            .build(store.clone(), path)
            .map_err(|e| eio(format!("build array {path}: {e}")))
    }

    /// Writes the array's `zarr.json` with its final shape.
    pub fn store_metadata(
        &self,
        store: &Arc<DurableStore>,
        path: &str,
        size: u64,
        attributes: serde_json::Map<String, serde_json::Value>,
    ) -> FsResult<()> {
        let mut b = self.builder(size)?;
        b.attributes(attributes);
        let array = b
            .build(store.clone(), path)
            .map_err(|e| eio(format!("build array {path}: {e}")))?;
        array
            .store_metadata()
            .map_err(|e: StorageError| from_storage(&e, format!("store {path}/zarr.json")))
    }
}

/// The Zarr bytes-to-bytes codecs that encode like `codec` does.
pub fn bytes_codecs(codec: Codec) -> FsResult<Vec<Arc<dyn BytesToBytesCodecTraits>>> {
    let zstd = |level| Arc::new(ZstdCodec::new(level, false)) as Arc<dyn BytesToBytesCodecTraits>;
    Ok(match codec {
        Codec::None => vec![],
        Codec::Gzip(level) => {
            vec![Arc::new(
                GzipCodec::new(level).map_err(|e| eio(format!("gzip codec: {e}")))?,
            )]
        }
        Codec::Zstd(level) => vec![zstd(level)],
        Codec::ZstdShuffled { level, elem } => {
            vec![Arc::new(ShuffleCodec::new(usize::from(elem))), zstd(level)]
        }
    })
}

fn options() -> CodecOptions {
    // One chunk is one task: parallelism comes from our worker pool, not
    // from zarrs splitting a chunk's codecs across rayon threads.
    CodecOptions::default()
        .with_concurrent_target(1)
        .with_store_empty_chunks(false)
}

/// Encodes and stores chunk `index` (exactly `chunk_bytes` long).
pub fn store_chunk(array: &ByteArray, index: u64, data: Vec<u8>) -> FsResult<()> {
    array
        .store_chunk_opt(&[index], ArrayBytes::new_flen(data), &options())
        .map_err(|e| from_array(&e, format!("store chunk {index}")))
}

/// Reads and decodes chunk `index`; a chunk never stored reads as zeros.
pub fn retrieve_chunk(array: &ByteArray, index: u64) -> FsResult<Vec<u8>> {
    let bytes: ArrayBytes = array
        .retrieve_chunk_opt(&[index], &options())
        .map_err(|e| from_array(&e, format!("read chunk {index}")))?;
    let raw = bytes
        .into_fixed()
        .map_err(|e| eio(format!("chunk {index}: {e}")))?;
    Ok(raw.into_owned())
}

/// Parses the codec recorded in a manifest: `none`, `gzip(L)`, `zstd(L)`,
/// or `shuffle(E)+zstd(L)`.
pub fn parse_codec(text: &str) -> FsResult<Codec> {
    if let Some((filter, rest)) = text.split_once('+') {
        let elem = filter
            .strip_prefix("shuffle(")
            .and_then(|e| e.strip_suffix(')'))
            .and_then(|e| e.parse::<u8>().ok())
            .filter(|e| *e >= 2);
        return match (elem, parse_codec(rest)?) {
            (Some(elem), Codec::Zstd(level)) => Ok(Codec::ZstdShuffled { level, elem }),
            _ => Err(eio(format!("unknown codec `{text}` in manifest"))),
        };
    }
    let level = |s: &str| -> Option<i64> {
        s.split_once('(')
            .and_then(|(_, rest)| rest.strip_suffix(')'))
            .and_then(|n| n.parse().ok())
    };
    if text == "none" {
        Ok(Codec::None)
    } else if text.starts_with("gzip") {
        Ok(Codec::Gzip(level(text).unwrap_or(1) as u32))
    } else if text.starts_with("zstd") {
        Ok(Codec::Zstd(level(text).unwrap_or(1) as i32))
    } else {
        Err(eio(format!("unknown codec `{text}` in manifest")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunk_round_trip_with_each_codec() {
        for codec in [
            Codec::None,
            Codec::Gzip(1),
            Codec::Zstd(3),
            Codec::ZstdShuffled { level: 3, elem: 4 },
        ] {
            let dir = tempfile::tempdir().expect("tempdir");
            let store = Arc::new(DurableStore::open(dir.path()).expect("store"));
            let spec = ByteArraySpec {
                chunk_bytes: 1000,
                codec,
            };
            let arr = spec.handle(&store, "/g1").expect("handle");
            let data: Vec<u8> = (0..1000u32).map(|i| (i % 251) as u8).collect();
            store_chunk(&arr, 3, data.clone()).expect("store");
            assert_eq!(retrieve_chunk(&arr, 3).expect("read"), data);
            assert_eq!(retrieve_chunk(&arr, 2).expect("absent"), vec![0u8; 1000]);
            spec.store_metadata(&store, "/g1", 3500, Default::default())
                .expect("meta");
            let text = std::fs::read_to_string(dir.path().join("g1/zarr.json")).expect("json");
            assert!(text.contains("\"little\""), "{text}");
            assert_eq!(parse_codec(&codec.to_string()).expect("codec"), codec);
        }
    }

    #[test]
    fn manifest_codecs_parse_and_unknown_ones_are_refused() {
        assert_eq!(
            parse_codec("shuffle(2)+zstd(5)").expect("codec"),
            Codec::ZstdShuffled { level: 5, elem: 2 }
        );
        for bad in [
            "shuffle(4)+gzip(1)",
            "shuffle(1)+zstd(1)",
            "shuffle(x)+zstd(1)",
            "lz4",
        ] {
            assert!(parse_codec(bad).is_err(), "{bad}");
        }
    }
}
