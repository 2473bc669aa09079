//! The record envelope shared by manifests, B+tree nodes and version-tree
//! nodes: magic (u32 BE), total length (u64 LE), version and compression
//! varints, the (optionally zstd-compressed) body, CRC-32C (u32 LE) of all
//! the bytes before it.

use std::io::Read;

use super::codec::{put_varint, Reader};
use super::error::{corrupt, OcdbtError, Result};

/// Magic number of a manifest record.
pub const MANIFEST_MAGIC: u32 = 0x0cdb_3a2a;
/// Magic number of a B+tree node record.
pub const BTREE_NODE_MAGIC: u32 = 0x0cdb_20de;
/// Magic number of a version-tree node record.
pub const VERSION_NODE_MAGIC: u32 = 0x0cdb_1234;

/// Header (magic + length) and footer (CRC) sizes.
const FIXED_OVERHEAD: usize = 4 + 8 + 4;

/// How a record body (and the database's tree nodes) is compressed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Compression {
    None,
    /// A zstd level; TensorStore's default is `Zstd(0)` (zstd's own default).
    Zstd(i32),
}

/// Wraps `body` in an envelope.
pub fn encode(magic: u32, compression: Compression, body: &[u8]) -> Result<Vec<u8>> {
    let mut out = Vec::with_capacity(body.len() + 32);
    out.extend_from_slice(&magic.to_be_bytes());
    out.extend_from_slice(&[0u8; 8]);
    put_varint(&mut out, 0);
    match compression {
        Compression::None => {
            put_varint(&mut out, 0);
            out.extend_from_slice(body);
        }
        Compression::Zstd(level) => {
            put_varint(&mut out, 1);
            let packed = zstd::bulk::compress(body, level)
                .map_err(|e| OcdbtError::Invalid(format!("zstd compression failed: {e}")))?;
            out.extend_from_slice(&packed);
        }
    }
    let len = (out.len() + 4) as u64;
    out[4..12].copy_from_slice(&len.to_le_bytes());
    let crc = crc32c::crc32c(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    Ok(out)
}

/// Checks an envelope and returns its decompressed body, refusing bodies
/// that would decompress past `max_body` bytes (a zstd bomb).
pub fn decode(data: &[u8], magic: u32, max_body: usize) -> Result<Vec<u8>> {
    if data.len() < FIXED_OVERHEAD {
        return Err(corrupt(format!(
            "record of {} bytes is too short",
            data.len()
        )));
    }
    let (covered, crc) = data.split_at(data.len() - 4);
    let mut r = Reader::new(covered);
    let got_magic = u32::from_be_bytes([data[0], data[1], data[2], data[3]]);
    if got_magic != magic {
        return Err(corrupt(format!(
            "expected magic {magic:08x}, found {got_magic:08x}"
        )));
    }
    r.bytes(4)?;
    let len = r.u64_le()?;
    if len != data.len() as u64 {
        return Err(corrupt(format!(
            "length field {len} does not match the record's {} bytes",
            data.len()
        )));
    }
    let want = u32::from_le_bytes([crc[0], crc[1], crc[2], crc[3]]);
    let have = crc32c::crc32c(covered);
    if want != have {
        return Err(corrupt(format!(
            "CRC-32C mismatch: stored {want:08x}, computed {have:08x}"
        )));
    }
    let version = r.varint()?;
    if version != 0 {
        return Err(OcdbtError::Unsupported(format!("format version {version}")));
    }
    let compression = r.varint()?;
    let rest = r.bytes(r.remaining() as u64)?;
    match compression {
        0 => {
            if rest.len() > max_body {
                return Err(corrupt(format!(
                    "body of {} bytes exceeds limit",
                    rest.len()
                )));
            }
            Ok(rest.to_vec())
        }
        1 => {
            let dec = zstd::stream::read::Decoder::new(rest)
                .map_err(|e| corrupt(format!("zstd: {e}")))?;
            let mut body = Vec::new();
            dec.take(max_body as u64 + 1)
                .read_to_end(&mut body)
                .map_err(|e| corrupt(format!("zstd: {e}")))?;
            if body.len() > max_body {
                return Err(corrupt(format!(
                    "decompressed body exceeds limit of {max_body} bytes"
                )));
            }
            Ok(body)
        }
        c => Err(OcdbtError::Unsupported(format!("compression format {c}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelope_round_trips_both_compressions() {
        let body: Vec<u8> = (0..5000u32).map(|i| (i % 7) as u8).collect();
        for c in [
            Compression::None,
            Compression::Zstd(0),
            Compression::Zstd(5),
        ] {
            let enc = encode(BTREE_NODE_MAGIC, c, &body).unwrap();
            assert_eq!(decode(&enc, BTREE_NODE_MAGIC, 1 << 20).unwrap(), body);
            assert!(decode(&enc, MANIFEST_MAGIC, 1 << 20).is_err());
        }
    }

    #[test]
    fn envelope_rejects_every_flipped_byte_and_every_truncation() {
        let body = b"hello ocdbt body".repeat(10);
        for c in [Compression::None, Compression::Zstd(1)] {
            let enc = encode(VERSION_NODE_MAGIC, c, &body).unwrap();
            for i in 0..enc.len() {
                let mut bad = enc.clone();
                bad[i] ^= 0x10;
                assert!(
                    decode(&bad, VERSION_NODE_MAGIC, 1 << 20).is_err(),
                    "byte {i}"
                );
            }
            for n in 0..enc.len() {
                assert!(decode(&enc[..n], VERSION_NODE_MAGIC, 1 << 20).is_err());
            }
        }
    }

    #[test]
    fn envelope_refuses_a_decompression_bomb() {
        let body = vec![0u8; 1 << 20];
        let enc = encode(BTREE_NODE_MAGIC, Compression::Zstd(3), &body).unwrap();
        assert!(enc.len() < 4096);
        assert!(decode(&enc, BTREE_NODE_MAGIC, 1000).is_err());
    }
}
