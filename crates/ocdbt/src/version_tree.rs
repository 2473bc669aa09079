//! Versions: the references to B+tree roots (one per generation) that the
//! manifest keeps inline, and the version-tree nodes that hold older ones.
//!
//! Generations are grouped in buckets of `2^arity_log2`: a leaf (or the
//! manifest's inline list) holds only generations of the newest bucket, a
//! height-`h` node holds children covering `2^(arity_log2*h)` generations.

use super::btree::{check_range, Location, Stats};
use super::codec::{put_varint, Reader};
use super::data_file_table::{self, DataFilePath};
use super::envelope::{self, Compression, VERSION_NODE_MAGIC};
use super::error::{corrupt, Result};

/// Largest `version_tree_arity_log2` the format allows.
pub const MAX_ARITY_LOG2: u8 = 16;

/// One version: a B+tree root and its statistics.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VersionRef {
    /// Commit counter of the version, from 1.
    pub generation: u64,
    /// Height of its B+tree's root node (0: a leaf).
    pub root_height: u8,
    /// `None` for an empty tree (stored as offset = length = u64::MAX).
    pub root: Option<Location>,
    /// Statistics of its whole tree.
    pub stats: Stats,
    /// When it was committed, nanoseconds since the Unix epoch.
    pub commit_time_ns: u64,
}

/// A reference to a version-tree node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VersionNodeRef {
    /// Latest generation in the subtree.
    pub generation: u64,
    /// Where the node is stored.
    pub location: Location,
    /// Generations the subtree covers.
    pub num_generations: u64,
    /// Earliest commit time in the subtree.
    pub commit_time: u64,
    /// Height of the node (0: its entries are versions).
    pub height: u8,
}

/// A version-tree node's entries: versions (height 0) or references to lower nodes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum VersionEntries {
    Leaf(Vec<VersionRef>),
    Interior(Vec<VersionNodeRef>),
}

/// A decoded version-tree node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VersionTreeNode {
    /// Base-2 log of the tree's arity, as the manifest's config has it.
    pub arity_log2: u8,
    /// 0 for a leaf; one more per level above.
    pub height: u8,
    /// The data files its entries' locations index into.
    pub files: Vec<DataFilePath>,
    /// The node's entries, oldest generation first.
    pub entries: VersionEntries,
}

/// Highest version-tree node height for an arity.
pub fn max_height(arity_log2: u8) -> u8 {
    (63 / arity_log2.max(1)).saturating_sub(1)
}

/// First generation of the leaf bucket that holds `generation`.
pub fn bucket_start(arity_log2: u8, generation: u64) -> u64 {
    generation - (generation - 1) % (1u64 << arity_log2)
}

const MISSING: u64 = u64::MAX;

/// Appends a list of versions in the format's column order; `file_of` maps each location's file
/// index to its index in the record's table.
pub fn write_version_refs(out: &mut Vec<u8>, v: &[VersionRef], file_of: impl Fn(usize) -> usize) {
    put_varint(out, v.len() as u64);
    for e in v {
        put_varint(out, e.generation);
    }
    for e in v {
        out.push(e.root_height);
    }
    // An empty tree still names a data file (TensorStore uses file 0).
    for e in v {
        put_varint(out, e.root.map_or(0, |l| file_of(l.file)) as u64);
    }
    for e in v {
        put_varint(out, e.root.map_or(MISSING, |l| l.offset));
    }
    for e in v {
        put_varint(out, e.root.map_or(MISSING, |l| l.length));
    }
    for e in v {
        put_varint(out, e.stats.num_keys);
    }
    for e in v {
        put_varint(out, e.stats.num_tree_bytes);
    }
    for e in v {
        put_varint(out, e.stats.num_indirect_value_bytes);
    }
    for e in v {
        out.extend_from_slice(&e.commit_time_ns.to_le_bytes());
    }
}

/// A column of `n` varints.
fn read_varints(r: &mut Reader, n: usize) -> Result<Vec<u64>> {
    (0..n).map(|_| r.varint()).collect()
}

/// A column of `n` data-file ids, each inside a table of `files`.
fn read_file_ids(r: &mut Reader, n: usize, files: usize) -> Result<Vec<usize>> {
    (0..n)
        .map(|_| {
            let id = r.varint()?;
            if id >= files as u64 {
                return Err(corrupt(format!(
                    "data file id {id} outside table of {files}"
                )));
            }
            Ok(id as usize)
        })
        .collect()
}

/// Reads a list of versions as `write_version_refs` writes it: at most one leaf bucket
/// (`2^arity_log2`) of them, never empty, their file ids below `files`.
pub fn read_version_refs(r: &mut Reader, arity_log2: u8, files: usize) -> Result<Vec<VersionRef>> {
    let n = r.varint_max(1u64 << arity_log2, "version count")? as usize;
    if n == 0 {
        return Err(corrupt("version list is empty"));
    }
    let gens = read_varints(r, n)?;
    let mut heights = Vec::with_capacity(n);
    for _ in 0..n {
        heights.push(r.byte()?);
    }
    let ids = read_file_ids(r, n, files)?;
    let mut cols = [vec![], vec![], vec![], vec![], vec![]];
    for col in cols.iter_mut() {
        *col = read_varints(r, n)?;
    }
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let (offset, length) = (cols[0][i], cols[1][i]);
        let stats = Stats {
            num_keys: cols[2][i],
            num_tree_bytes: cols[3][i],
            num_indirect_value_bytes: cols[4][i],
        };
        let root = if offset == MISSING && length == MISSING {
            if heights[i] != 0 || stats != Stats::default() {
                return Err(corrupt("empty version with a height or statistics"));
            }
            None
        } else {
            check_range(offset, length)?;
            Some(Location {
                file: ids[i],
                offset,
                length,
            })
        };
        out.push(VersionRef {
            generation: gens[i],
            root_height: heights[i],
            root,
            stats,
            commit_time_ns: 0,
        });
    }
    for e in out.iter_mut() {
        e.commit_time_ns = r.u64_le()?;
    }
    for (i, e) in out.iter().enumerate() {
        if e.generation == 0 || (i > 0 && e.generation <= out[i - 1].generation) {
            return Err(corrupt("version generations not strictly increasing"));
        }
    }
    let last = out[n - 1].generation;
    if out[0].generation < bucket_start(arity_log2, last) {
        return Err(corrupt("versions span more than one version-tree leaf"));
    }
    Ok(out)
}

/// Appends a list of version-node references in the format's column order; `with_height`: each
/// reference carries its node's height (the manifest's list does, a node's own list does not), and
/// `file_of` maps file indices as for `write_version_refs`.
pub fn write_node_refs(
    out: &mut Vec<u8>,
    v: &[VersionNodeRef],
    with_height: bool,
    file_of: impl Fn(usize) -> usize,
) {
    put_varint(out, v.len() as u64);
    for e in v {
        put_varint(out, e.generation);
    }
    for e in v {
        put_varint(out, file_of(e.location.file) as u64);
    }
    for e in v {
        put_varint(out, e.location.offset);
    }
    for e in v {
        put_varint(out, e.location.length);
    }
    for e in v {
        put_varint(out, e.num_generations);
    }
    for e in v {
        out.extend_from_slice(&e.commit_time.to_le_bytes());
    }
    if with_height {
        for e in v {
            out.push(e.height);
        }
    }
}

/// Reads interior entries; `height` is `Some(parent height)` inside a node
/// (children are one lower) or `None` in the manifest (heights are stored).
pub fn read_node_refs(
    r: &mut Reader,
    max_entries: u64,
    height: Option<u8>,
    files: usize,
) -> Result<Vec<VersionNodeRef>> {
    let n = r.varint_max(max_entries, "version node count")? as usize;
    let gens = read_varints(r, n)?;
    let ids = read_file_ids(r, n, files)?;
    let mut cols = [vec![], vec![], vec![]];
    for col in cols.iter_mut() {
        *col = read_varints(r, n)?;
    }
    let mut times = Vec::with_capacity(n);
    for _ in 0..n {
        times.push(r.u64_le()?);
    }
    let mut heights = vec![height.unwrap_or(1).saturating_sub(1); n];
    if height.is_none() {
        for h in heights.iter_mut() {
            *h = r.byte()?;
        }
    }
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        check_range(cols[0][i], cols[1][i])?;
        if gens[i] == 0 || (i > 0 && gens[i] <= gens[i - 1]) {
            return Err(corrupt("version node generations not increasing"));
        }
        if height.is_none() && i > 0 && heights[i] >= heights[i - 1] {
            return Err(corrupt("manifest version node heights not decreasing"));
        }
        out.push(VersionNodeRef {
            generation: gens[i],
            location: Location {
                file: ids[i],
                offset: cols[0][i],
                length: cols[1][i],
            },
            num_generations: cols[2][i],
            commit_time: times[i],
            height: heights[i],
        });
    }
    Ok(out)
}

/// Encodes a version-tree node into an envelope.
pub fn encode(node: &VersionTreeNode, compression: Compression) -> Result<Vec<u8>> {
    let mut body = vec![node.arity_log2, node.height];
    let paths = data_file_table::pairs(&node.files);
    data_file_table::encode(&mut body, &paths);
    match &node.entries {
        VersionEntries::Leaf(v) => write_version_refs(&mut body, v, |f| f),
        VersionEntries::Interior(v) => write_node_refs(&mut body, v, false, |f| f),
    }
    envelope::encode(VERSION_NODE_MAGIC, compression, &body)
}

/// Decodes a version-tree node, checking it against the manifest's arity.
pub fn decode(data: &[u8], transitive: &str, arity_log2: u8) -> Result<VersionTreeNode> {
    let body = envelope::decode(data, VERSION_NODE_MAGIC, 64 << 20)?;
    let mut r = Reader::new(&body);
    let a = r.byte()?;
    if a != arity_log2 {
        return Err(corrupt(format!(
            "version node arity {a} differs from the manifest's {arity_log2}"
        )));
    }
    let height = r.byte()?;
    if height > max_height(a) {
        return Err(corrupt(format!("version node height {height} too large")));
    }
    let files = data_file_table::decode(&mut r, transitive)?;
    let entries = if height == 0 {
        VersionEntries::Leaf(read_version_refs(&mut r, a, files.len())?)
    } else {
        let v = read_node_refs(&mut r, 1u64 << a, Some(height), files.len())?;
        if v.is_empty() {
            return Err(corrupt("empty version node"));
        }
        VersionEntries::Interior(v)
    };
    if !r.is_empty() {
        return Err(corrupt("trailing bytes in version node"));
    }
    Ok(VersionTreeNode {
        arity_log2: a,
        height,
        files,
        entries,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_nodes_round_trip() {
        let files = vec![DataFilePath {
            full: "d/x".into(),
            transitive: String::new(),
        }];
        let leaf = VersionTreeNode {
            arity_log2: 4,
            height: 0,
            files: files.clone(),
            entries: VersionEntries::Leaf(vec![
                VersionRef {
                    generation: 14,
                    root_height: 0,
                    root: None,
                    stats: Stats::default(),
                    commit_time_ns: 5,
                },
                VersionRef {
                    generation: 16,
                    root_height: 1,
                    root: Some(Location {
                        file: 0,
                        offset: 3,
                        length: 9,
                    }),
                    stats: Stats {
                        num_keys: 1,
                        num_tree_bytes: 2,
                        num_indirect_value_bytes: 3,
                    },
                    commit_time_ns: 6,
                },
            ]),
        };
        let enc = encode(&leaf, Compression::Zstd(0)).unwrap();
        assert_eq!(decode(&enc, "", 4).unwrap(), leaf);
        assert!(decode(&enc, "", 5).is_err());
        let interior = VersionTreeNode {
            arity_log2: 4,
            height: 1,
            files,
            entries: VersionEntries::Interior(vec![VersionNodeRef {
                generation: 16,
                location: Location {
                    file: 0,
                    offset: 0,
                    length: 10,
                },
                num_generations: 2,
                commit_time: 5,
                height: 0,
            }]),
        };
        let enc = encode(&interior, Compression::None).unwrap();
        assert_eq!(decode(&enc, "", 4).unwrap(), interior);
    }

    #[test]
    fn versions_outside_one_bucket_are_rejected() {
        let v: Vec<VersionRef> = [15u64, 17]
            .iter()
            .map(|g| VersionRef {
                generation: *g,
                root_height: 0,
                root: None,
                stats: Stats::default(),
                commit_time_ns: 0,
            })
            .collect();
        let mut out = Vec::new();
        write_version_refs(&mut out, &v, |f| f);
        assert!(read_version_refs(&mut Reader::new(&out), 4, 1).is_err());
    }
}
