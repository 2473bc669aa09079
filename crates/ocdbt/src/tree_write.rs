//! Writing a whole B+tree from sorted entries: leaves packed up to the node
//! size limit, then interior levels until one root remains.
//!
//! Each non-root node stores its keys relative to the common prefix of its
//! own first and last key (the parent records that length as the child's
//! `subtree_common_prefix_len`); the root stores full keys.

use std::collections::BTreeMap;

use bytes::Bytes;

use super::btree::{
    self, BtreeNode, Entries, InteriorEntry, LeafEntry, LeafValue, Location, Stats,
};
use super::codec::common_prefix;
use super::data_file_table::DataFilePath;
use super::envelope::Compression;
use super::error::Result;
use super::tree_read::FileRange;

/// A value as the index holds it.
#[derive(Clone, Debug)]
pub enum Value {
    Inline(Bytes),
    Indirect(FileRange),
}

impl Value {
    /// Length of the value in bytes.
    pub fn len(&self) -> u64 {
        match self {
            Value::Inline(b) => b.len() as u64,
            Value::Indirect(r) => r.length,
        }
    }

    /// Whether the value has no bytes.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A written tree: its root, height and statistics.
#[derive(Clone, Debug)]
pub struct WrittenTree {
    /// Where the root node was written.
    pub root: FileRange,
    /// Height of the root node (0: a leaf).
    pub height: u8,
    /// Statistics of the whole tree.
    pub stats: Stats,
}

struct Child {
    first: Vec<u8>,
    last: Vec<u8>,
    at: FileRange,
    stats: Stats,
}

/// Generous upper bound of an entry's encoded size beyond its key and
/// inline bytes (six varints and a kind byte).
const ENTRY_OVERHEAD: usize = 64;
/// Upper bound of one data-file table entry beyond its path.
const FILE_OVERHEAD: usize = 32;

/// Splits `n` items into consecutive groups whose estimated size stays
/// under `limit`, with at least `min` items per group (except a short tail
/// that cannot be helped).
fn group<'a>(
    n: usize,
    limit: usize,
    min: usize,
    size: impl Fn(usize) -> (usize, Option<&'a str>),
) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut used = 64;
    let mut paths: Vec<&'a str> = Vec::new();
    for i in 0..n {
        let (s, path) = size(i);
        let mut extra = s;
        let new_path = path.filter(|p| !paths.contains(p));
        if let Some(p) = new_path {
            extra += p.len() + FILE_OVERHEAD;
        }
        let count = i - start;
        if count >= min && (used + extra > limit || count as u64 >= btree::MAX_NODE_ARITY) {
            out.push((start, i));
            start = i;
            used = 64;
            paths.clear();
            extra = s + path.map_or(0, |p| p.len() + FILE_OVERHEAD);
        }
        if let Some(p) = path {
            if !paths.contains(&p) {
                paths.push(p);
            }
        }
        used += extra;
    }
    if start < n {
        out.push((start, n));
    }
    out
}

/// Builds the data-file table of a node from the files it references.
fn table<'a>(
    files: impl Iterator<Item = &'a FileRange>,
) -> (Vec<DataFilePath>, BTreeMap<String, usize>) {
    let mut paths: BTreeMap<String, usize> = BTreeMap::new();
    for f in files {
        paths.entry(f.file.path.clone()).or_insert(0);
    }
    let mut out = Vec::with_capacity(paths.len());
    for (i, (p, idx)) in paths.iter_mut().enumerate() {
        *idx = i;
        out.push(DataFilePath {
            full: p.clone(),
            transitive: String::new(),
        });
    }
    (out, paths)
}

/// Writes the tree of `entries` (sorted, distinct keys) through `append`,
/// which stores encoded node bytes and says where. `None` for no entries.
pub fn write_tree(
    entries: &[(&[u8], &Value)],
    max_node_bytes: usize,
    compression: Compression,
    append: &dyn Fn(&[u8]) -> Result<FileRange>,
) -> Result<Option<WrittenTree>> {
    if entries.is_empty() {
        return Ok(None);
    }
    let limit = (max_node_bytes - max_node_bytes / 8).max(1024);
    let groups = group(entries.len(), limit, 1, |i| {
        let (k, v) = entries[i];
        match v {
            Value::Inline(b) => (k.len() + b.len() + ENTRY_OVERHEAD, None),
            Value::Indirect(r) => (k.len() + ENTRY_OVERHEAD, Some(r.file.path.as_str())),
        }
    });
    let single = groups.len() == 1;
    let mut level = Vec::with_capacity(groups.len());
    for (s, e) in groups {
        let part = &entries[s..e];
        let first = part[0].0.to_vec();
        let last = part[part.len() - 1].0.to_vec();
        let cut = if single {
            0
        } else {
            common_prefix(&first, &last)
        };
        let (files, index) = table(part.iter().filter_map(|(_, v)| match v {
            Value::Indirect(r) => Some(r),
            Value::Inline(_) => None,
        }));
        let mut stats = Stats {
            num_keys: part.len() as u64,
            ..Stats::default()
        };
        let leaf: Vec<LeafEntry> = part
            .iter()
            .map(|(k, v)| LeafEntry {
                key: k[cut..].to_vec(),
                value: match v {
                    Value::Inline(b) => LeafValue::Inline(b.to_vec()),
                    Value::Indirect(r) => {
                        stats.num_indirect_value_bytes += r.length;
                        LeafValue::Indirect(Location {
                            file: index[&r.file.path],
                            offset: r.offset,
                            length: r.length,
                        })
                    }
                },
            })
            .collect();
        let node = BtreeNode {
            height: 0,
            files,
            entries: Entries::Leaf(leaf),
        };
        let bytes = btree::encode(&node, compression)?;
        stats.num_tree_bytes = bytes.len() as u64;
        level.push(Child {
            first,
            last,
            at: append(&bytes)?,
            stats,
        });
    }
    let mut height = 0u8;
    while level.len() > 1 {
        height += 1;
        let groups = group(level.len(), limit, 2, |i| {
            let c = &level[i];
            (
                c.first.len() + ENTRY_OVERHEAD,
                Some(c.at.file.path.as_str()),
            )
        });
        let single = groups.len() == 1;
        let mut next = Vec::with_capacity(groups.len());
        for (s, e) in groups {
            let part = &level[s..e];
            let first = part[0].first.clone();
            let last = part[part.len() - 1].last.clone();
            let cut = if single {
                0
            } else {
                common_prefix(&first, &last)
            };
            let (files, index) = table(part.iter().map(|c| &c.at));
            let mut stats = Stats::default();
            let interior: Vec<InteriorEntry> = part
                .iter()
                .map(|c| {
                    stats.add(&c.stats);
                    // Children are never roots, so each was cut at the
                    // common prefix of its own first and last key.
                    let child_cut = common_prefix(&c.first, &c.last);
                    InteriorEntry {
                        key: c.first[cut..].to_vec(),
                        subtree_common_prefix_len: child_cut - cut,
                        child: Location {
                            file: index[&c.at.file.path],
                            offset: c.at.offset,
                            length: c.at.length,
                        },
                        stats: c.stats,
                    }
                })
                .collect();
            let node = BtreeNode {
                height,
                files,
                entries: Entries::Interior(interior),
            };
            let bytes = btree::encode(&node, compression)?;
            stats.num_tree_bytes += bytes.len() as u64;
            next.push(Child {
                first,
                last,
                at: append(&bytes)?,
                stats,
            });
        }
        level = next;
    }
    let Some(root) = level.pop() else {
        return Ok(None);
    };
    Ok(Some(WrittenTree {
        root: root.at,
        height,
        stats: root.stats,
    }))
}
