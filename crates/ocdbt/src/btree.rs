//! B+tree nodes: a height byte, a data-file table, then column-wise entries
//! with keys prefix-compressed against the previous key.
//!
//! Keys in a node are relative to an implicit prefix fixed by the path from
//! the root: an interior entry's child holds keys relative to the parent's
//! prefix plus the first `subtree_common_prefix_len` bytes of the entry key.

use super::codec::{capped, put_varint, Reader};
use super::data_file_table::{self, DataFilePath};
use super::envelope::{self, Compression, BTREE_NODE_MAGIC};
use super::error::{corrupt, Result};

/// Longest key the format allows.
pub const MAX_KEY_LEN: u64 = 65535;
/// Most entries in one node.
pub const MAX_NODE_ARITY: u64 = 1 << 20;
/// Longest value stored inline in a leaf.
pub const MAX_INLINE_VALUE_LEN: u64 = 1 << 20;

/// Where a value or node lives: an index into the record's data-file table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Location {
    /// Index into the enclosing record's data-file table.
    pub file: usize,
    /// Byte offset in that data file.
    pub offset: u64,
    /// Length in bytes.
    pub length: u64,
}

/// Subtree statistics carried by every node reference.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Keys in the subtree.
    pub num_keys: u64,
    /// Encoded bytes of every node in the subtree, this one included.
    pub num_tree_bytes: u64,
    /// Bytes of the values in the subtree stored out of line (in data files rather than in leaves).
    pub num_indirect_value_bytes: u64,
}

impl Stats {
    /// Adds `o`'s counts to these (saturating).
    pub fn add(&mut self, o: &Stats) {
        self.num_keys = self.num_keys.saturating_add(o.num_keys);
        self.num_tree_bytes = self.num_tree_bytes.saturating_add(o.num_tree_bytes);
        self.num_indirect_value_bytes = self
            .num_indirect_value_bytes
            .saturating_add(o.num_indirect_value_bytes);
    }
}

/// A leaf's value: held in the node, or stored out of line in a data file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LeafValue {
    Inline(Vec<u8>),
    Indirect(Location),
}

/// One key and its value in a leaf node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeafEntry {
    /// Key relative to the node's implicit prefix.
    pub key: Vec<u8>,
    /// The value, inline or out of line.
    pub value: LeafValue,
}

/// One child reference in an interior node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InteriorEntry {
    /// Inclusive lower bound of the child's keys, relative to this node.
    pub key: Vec<u8>,
    /// Bytes of `key` that every key of the child shares; the child's keys are relative to them.
    pub subtree_common_prefix_len: usize,
    /// Where the child node is stored.
    pub child: Location,
    /// Statistics of the child's subtree.
    pub stats: Stats,
}

/// A node's entries: key/value pairs (height 0) or child references.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Entries {
    Leaf(Vec<LeafEntry>),
    Interior(Vec<InteriorEntry>),
}

/// A decoded B+tree node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BtreeNode {
    /// 0 for a leaf; one more per level above.
    pub height: u8,
    /// The data files its entries' locations index into.
    pub files: Vec<DataFilePath>,
    /// The node's entries, in key order.
    pub entries: Entries,
}

impl BtreeNode {
    /// Number of entries.
    pub fn len(&self) -> usize {
        match &self.entries {
            Entries::Leaf(e) => e.len(),
            Entries::Interior(e) => e.len(),
        }
    }

    /// Whether the node has no entries.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Writes the key prefix-length and suffix-length columns.
fn write_keys<'a>(out: &mut Vec<u8>, keys: impl Iterator<Item = &'a [u8]> + Clone) {
    let mut prev: &[u8] = &[];
    let mut prefixes = Vec::new();
    for (i, k) in keys.clone().enumerate() {
        let p = if i > 0 {
            super::codec::common_prefix(prev, k)
        } else {
            0
        };
        if i > 0 {
            put_varint(out, p as u64);
        }
        prefixes.push(p);
        prev = k;
    }
    for (k, p) in keys.zip(&prefixes) {
        put_varint(out, (k.len() - p) as u64);
    }
}

/// Writes the concatenated key suffixes.
fn write_suffixes<'a>(out: &mut Vec<u8>, keys: impl Iterator<Item = &'a [u8]>) {
    let mut prev: &[u8] = &[];
    for (i, k) in keys.enumerate() {
        let p = if i > 0 {
            super::codec::common_prefix(prev, k)
        } else {
            0
        };
        out.extend_from_slice(&k[p..]);
        prev = k;
    }
}

/// Encodes a node into an envelope. Keys must be strictly increasing and the
/// data-file table must hold plain relative paths, sorted.
pub fn encode(node: &BtreeNode, compression: Compression) -> Result<Vec<u8>> {
    let mut body = Vec::new();
    body.push(node.height);
    let paths = data_file_table::pairs(&node.files);
    data_file_table::encode(&mut body, &paths);
    put_varint(&mut body, node.len() as u64);
    match &node.entries {
        Entries::Leaf(entries) => {
            let keys = entries.iter().map(|e| e.key.as_slice());
            write_keys(&mut body, keys.clone());
            write_suffixes(&mut body, keys);
            for e in entries {
                let len = match &e.value {
                    LeafValue::Inline(v) => v.len() as u64,
                    LeafValue::Indirect(l) => l.length,
                };
                put_varint(&mut body, len);
            }
            for e in entries {
                body.push(matches!(e.value, LeafValue::Indirect(_)) as u8);
            }
            for e in entries {
                if let LeafValue::Indirect(l) = &e.value {
                    put_varint(&mut body, l.file as u64);
                }
            }
            for e in entries {
                if let LeafValue::Indirect(l) = &e.value {
                    put_varint(&mut body, l.offset);
                }
            }
            for e in entries {
                if let LeafValue::Inline(v) = &e.value {
                    body.extend_from_slice(v);
                }
            }
        }
        Entries::Interior(entries) => {
            let keys = entries.iter().map(|e| e.key.as_slice());
            write_keys(&mut body, keys.clone());
            for e in entries {
                put_varint(&mut body, e.subtree_common_prefix_len as u64);
            }
            write_suffixes(&mut body, keys);
            for e in entries {
                put_varint(&mut body, e.child.file as u64);
            }
            for e in entries {
                put_varint(&mut body, e.child.offset);
            }
            for e in entries {
                put_varint(&mut body, e.child.length);
            }
            for e in entries {
                put_varint(&mut body, e.stats.num_keys);
            }
            for e in entries {
                put_varint(&mut body, e.stats.num_tree_bytes);
            }
            for e in entries {
                put_varint(&mut body, e.stats.num_indirect_value_bytes);
            }
        }
    }
    envelope::encode(BTREE_NODE_MAGIC, compression, &body)
}

/// Reads the key columns; `with_scp` adds the interior-only column.
fn read_keys(r: &mut Reader, n: usize, with_scp: bool) -> Result<(Vec<Vec<u8>>, Vec<usize>)> {
    let mut prefix = vec![0u64; n];
    for p in prefix.iter_mut().skip(1) {
        *p = r.varint_max(MAX_KEY_LEN, "key prefix length")?;
    }
    let mut suffix = Vec::with_capacity(n);
    for _ in 0..n {
        suffix.push(r.varint_max(MAX_KEY_LEN, "key suffix length")?);
    }
    let mut scp = Vec::new();
    if with_scp {
        for _ in 0..n {
            scp.push(r.varint_max(MAX_KEY_LEN, "subtree common prefix length")? as usize);
        }
    }
    let mut keys: Vec<Vec<u8>> = Vec::with_capacity(n);
    for i in 0..n {
        let prev: &[u8] = if i > 0 { &keys[i - 1] } else { &[] };
        if prefix[i] > prev.len() as u64 {
            return Err(corrupt(format!("key {i}: prefix longer than previous key")));
        }
        if prefix[i] + suffix[i] > MAX_KEY_LEN {
            return Err(corrupt(format!("key {i} longer than {MAX_KEY_LEN}")));
        }
        let mut key = Vec::with_capacity((prefix[i] + suffix[i]) as usize);
        key.extend_from_slice(&prev[..prefix[i] as usize]);
        key.extend_from_slice(r.bytes(suffix[i])?);
        if i > 0 && key.as_slice() <= prev {
            return Err(corrupt("keys out of order"));
        }
        if with_scp && scp[i] > key.len() {
            return Err(corrupt(format!(
                "key {i}: subtree common prefix longer than the key"
            )));
        }
        keys.push(key);
    }
    Ok((keys, scp))
}

fn read_file_id(r: &mut Reader, files: usize) -> Result<usize> {
    let id = r.varint()?;
    if id >= files as u64 {
        return Err(corrupt(format!(
            "data file id {id} outside table of {files}"
        )));
    }
    Ok(id as usize)
}

/// Rejects offset/length pairs whose end overflows a signed 64-bit offset.
pub fn check_range(offset: u64, length: u64) -> Result<()> {
    match offset.checked_add(length) {
        Some(end) if end <= i64::MAX as u64 => Ok(()),
        _ => Err(corrupt(format!("invalid offset/length {offset}+{length}"))),
    }
}

/// Decodes a node. `transitive` is the prefix its data file resolved
/// against; `max_body` bounds the decompressed size.
pub fn decode(data: &[u8], transitive: &str, max_body: usize) -> Result<BtreeNode> {
    let body = envelope::decode(data, BTREE_NODE_MAGIC, max_body)?;
    let mut r = Reader::new(&body);
    let height = r.byte()?;
    let files = data_file_table::decode(&mut r, transitive)?;
    let n = r.varint_max(MAX_NODE_ARITY, "node arity")?;
    if n == 0 {
        return Err(corrupt("empty B+tree node"));
    }
    // Every entry needs at least two bytes of columns.
    if n > r.remaining() as u64 {
        return Err(corrupt("entry count exceeds the node's size"));
    }
    let n = n as usize;
    let entries = if height == 0 {
        let (keys, _) = read_keys(&mut r, n, false)?;
        let mut lens = Vec::with_capacity(n);
        for _ in 0..n {
            lens.push(r.varint()?);
        }
        let mut kinds = Vec::with_capacity(n);
        for (i, len) in lens.iter().enumerate() {
            let k = r.byte()?;
            if k > 1 {
                return Err(corrupt(format!("value_kind[{i}]={k}")));
            }
            if k == 0 && *len > MAX_INLINE_VALUE_LEN {
                return Err(corrupt(format!("inline value {i} too long")));
            }
            kinds.push(k);
        }
        let mut ids = vec![0usize; n];
        for i in (0..n).filter(|i| kinds[*i] == 1) {
            ids[i] = read_file_id(&mut r, files.len())?;
        }
        let mut offsets = vec![0u64; n];
        for i in (0..n).filter(|i| kinds[*i] == 1) {
            offsets[i] = r.varint()?;
            check_range(offsets[i], lens[i])?;
        }
        let mut out = Vec::with_capacity(n);
        for (i, key) in keys.into_iter().enumerate() {
            let value = if kinds[i] == 0 {
                LeafValue::Inline(r.bytes(lens[i])?.to_vec())
            } else {
                LeafValue::Indirect(Location {
                    file: ids[i],
                    offset: offsets[i],
                    length: lens[i],
                })
            };
            out.push(LeafEntry { key, value });
        }
        Entries::Leaf(out)
    } else {
        let (keys, scp) = read_keys(&mut r, n, true)?;
        let mut ids = Vec::with_capacity(n);
        for _ in 0..n {
            ids.push(read_file_id(&mut r, files.len())?);
        }
        let mut cols = [vec![], vec![], vec![], vec![], vec![]];
        for col in cols.iter_mut() {
            col.reserve(capped(n as u64, r.remaining()));
            for _ in 0..n {
                col.push(r.varint()?);
            }
        }
        let mut out = Vec::with_capacity(n);
        for (i, key) in keys.into_iter().enumerate() {
            check_range(cols[0][i], cols[1][i])?;
            out.push(InteriorEntry {
                key,
                subtree_common_prefix_len: scp[i],
                child: Location {
                    file: ids[i],
                    offset: cols[0][i],
                    length: cols[1][i],
                },
                stats: Stats {
                    num_keys: cols[2][i],
                    num_tree_bytes: cols[3][i],
                    num_indirect_value_bytes: cols[4][i],
                },
            });
        }
        Entries::Interior(out)
    };
    if !r.is_empty() {
        return Err(corrupt(format!("{} trailing bytes in node", r.remaining())));
    }
    Ok(BtreeNode {
        height,
        files,
        entries,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(p: &str) -> DataFilePath {
        DataFilePath {
            full: p.into(),
            transitive: String::new(),
        }
    }

    pub(crate) fn sample_leaf() -> BtreeNode {
        BtreeNode {
            height: 0,
            files: vec![file("d/aa"), file("d/bb")],
            entries: Entries::Leaf(vec![
                LeafEntry {
                    key: b"a/c/0".to_vec(),
                    value: LeafValue::Inline(b"xyz".to_vec()),
                },
                LeafEntry {
                    key: b"a/c/1".to_vec(),
                    value: LeafValue::Indirect(Location {
                        file: 1,
                        offset: 77,
                        length: 4096,
                    }),
                },
                LeafEntry {
                    key: b"a/zarr.json".to_vec(),
                    value: LeafValue::Inline(vec![]),
                },
            ]),
        }
    }

    #[test]
    fn leaf_and_interior_round_trip() {
        let leaf = sample_leaf();
        for c in [Compression::None, Compression::Zstd(0)] {
            let enc = encode(&leaf, c).unwrap();
            assert_eq!(decode(&enc, "", 1 << 20).unwrap(), leaf);
        }
        let interior = BtreeNode {
            height: 2,
            files: vec![file("d/aa")],
            entries: Entries::Interior(vec![
                InteriorEntry {
                    key: b"a/".to_vec(),
                    subtree_common_prefix_len: 2,
                    child: Location {
                        file: 0,
                        offset: 0,
                        length: 100,
                    },
                    stats: Stats {
                        num_keys: 3,
                        num_tree_bytes: 100,
                        num_indirect_value_bytes: 4096,
                    },
                },
                InteriorEntry {
                    key: b"b".to_vec(),
                    subtree_common_prefix_len: 0,
                    child: Location {
                        file: 0,
                        offset: 100,
                        length: 50,
                    },
                    stats: Stats::default(),
                },
            ]),
        };
        let enc = encode(&interior, Compression::None).unwrap();
        assert_eq!(decode(&enc, "", 1 << 20).unwrap(), interior);
    }

    /// Re-wraps a hand-made body in a valid envelope, so the body checks
    /// (not the CRC) are what must reject it.
    fn wrap(body: &[u8]) -> Vec<u8> {
        envelope::encode(BTREE_NODE_MAGIC, Compression::None, body).unwrap()
    }

    #[test]
    fn hostile_bodies_are_rejected_without_panic() {
        // Huge arity.
        let mut b = vec![0u8, 0];
        put_varint(&mut b, 1 << 30);
        assert!(decode(&wrap(&b), "", 1 << 20).is_err());
        // Unsorted keys.
        let b = [0u8, 0, 2, 0, 1, 1, b'b', b'a', 0, 0, 0, 0];
        assert!(decode(&wrap(&b), "", 1 << 20).is_err());
        // Indirect value pointing at a file the table does not have.
        let b = [0u8, 0, 1, 1, b'k', 5, 1, 0, 0];
        assert!(decode(&wrap(&b), "", 1 << 20).is_err());
        // Every truncation of a valid body.
        let enc = encode(&sample_leaf(), Compression::None).unwrap();
        let body = envelope::decode(&enc, BTREE_NODE_MAGIC, 1 << 20).unwrap();
        for n in 0..body.len() {
            assert!(decode(&wrap(&body[..n]), "", 1 << 20).is_err(), "len {n}");
        }
        // Random corruptions of the body: errors or values, never panics.
        let mut seed = 12345u64;
        for _ in 0..2000 {
            let mut b = body.clone();
            seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1);
            let i = (seed >> 33) as usize % b.len();
            b[i] = (seed >> 20) as u8;
            let _ = decode(&wrap(&b), "", 1 << 20);
        }
    }
}
