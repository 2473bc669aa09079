//! Reading committed state: walking a version's B+tree in key order and
//! collecting the versions a manifest references (inline and through
//! version-tree nodes). Every node is bounds-, CRC- and order-checked.

use std::sync::Arc;

use super::btree::{self, Entries, LeafValue, Stats};
use super::data_file::DataFile;
use super::error::{corrupt, Result};
use super::manifest::Manifest;
use super::version_tree::{self, VersionEntries, VersionNodeRef, VersionRef};

/// Something that hands out data files by path (the database's file table,
/// or verify's own cache).
pub trait FileSource {
    fn file(&self, path: &str, transitive: &str) -> Result<Arc<DataFile>>;
}

/// A stored range: a file and a byte range in it.
#[derive(Clone, Debug)]
pub struct FileRange {
    /// The data file.
    pub file: Arc<DataFile>,
    /// Byte offset in it.
    pub offset: u64,
    /// Length in bytes.
    pub length: u64,
}

impl FileRange {
    /// Whether both name the same bytes: same file path, offset and length.
    pub fn same_place(&self, o: &FileRange) -> bool {
        self.file.path == o.file.path && self.offset == o.offset && self.length == o.length
    }
}

/// One version, with its root resolved to a file.
#[derive(Clone, Debug)]
pub struct Version {
    /// Commit counter of the version, from 1.
    pub generation: u64,
    /// Height of the root node (0: a leaf).
    pub root_height: u8,
    /// The root node; `None` for an empty tree.
    pub root: Option<FileRange>,
    /// Statistics of the whole tree.
    pub stats: Stats,
    /// When the version was committed, nanoseconds since the Unix epoch.
    pub commit_time_ns: u64,
}

/// What a tree walk reports, in key order.
pub enum Visit<'a> {
    Node(&'a FileRange),
    Entry {
        key: &'a [u8],
        inline: Option<&'a [u8]>,
        indirect: Option<FileRange>,
    },
}

/// Most levels we follow; a tree of 2^20-ary nodes never needs more.
const MAX_TREE_HEIGHT: u8 = 32;

/// Walks every node and entry of `version`'s tree.
pub fn walk_tree(
    src: &dyn FileSource,
    version: &Version,
    max_node_bytes: usize,
    visit: &mut dyn FnMut(Visit) -> Result<()>,
) -> Result<()> {
    let Some(root) = &version.root else {
        return Ok(());
    };
    if version.root_height > MAX_TREE_HEIGHT {
        return Err(corrupt(format!("tree height {}", version.root_height)));
    }
    let mut last = None;
    walk_node(
        src,
        root,
        version.root_height,
        &[],
        &[],
        max_node_bytes,
        &mut last,
        visit,
    )
}

#[allow(clippy::too_many_arguments)]
fn walk_node(
    src: &dyn FileSource,
    at: &FileRange,
    height: u8,
    prefix: &[u8],
    min_key: &[u8],
    max_node_bytes: usize,
    last: &mut Option<Vec<u8>>,
    visit: &mut dyn FnMut(Visit) -> Result<()>,
) -> Result<()> {
    visit(Visit::Node(at))?;
    let bytes = at.file.read_at(at.offset, at.length)?;
    let node = btree::decode(&bytes, &at.file.transitive, max_node_bytes)
        .map_err(|e| corrupt(format!("node at {}+{}: {e}", at.file.path, at.offset)))?;
    if node.height != height {
        return Err(corrupt(format!(
            "node at {}+{} has height {}, expected {height}",
            at.file.path, at.offset, node.height
        )));
    }
    let mut files = Vec::with_capacity(node.files.len());
    for f in &node.files {
        files.push(src.file(&f.full, &f.transitive));
    }
    let file = |i: usize| -> Result<Arc<DataFile>> {
        match &files[i] {
            Ok(f) => Ok(f.clone()),
            Err(e) => Err(corrupt(format!("data file {}: {e}", node.files[i].full))),
        }
    };
    match &node.entries {
        Entries::Leaf(entries) => {
            for e in entries {
                let mut key = Vec::with_capacity(prefix.len() + e.key.len());
                key.extend_from_slice(prefix);
                key.extend_from_slice(&e.key);
                if key.as_slice() < min_key || last.as_ref().is_some_and(|l| key <= *l) {
                    return Err(corrupt(format!(
                        "key {:?} out of order in node at {}+{}",
                        String::from_utf8_lossy(&key),
                        at.file.path,
                        at.offset
                    )));
                }
                match &e.value {
                    LeafValue::Inline(v) => visit(Visit::Entry {
                        key: &key,
                        inline: Some(v),
                        indirect: None,
                    })?,
                    LeafValue::Indirect(l) => visit(Visit::Entry {
                        key: &key,
                        inline: None,
                        indirect: Some(FileRange {
                            file: file(l.file)?,
                            offset: l.offset,
                            length: l.length,
                        }),
                    })?,
                }
                *last = Some(key);
            }
        }
        Entries::Interior(entries) => {
            for e in entries {
                let mut child_min = prefix.to_vec();
                child_min.extend_from_slice(&e.key);
                let child_prefix = &child_min[..prefix.len() + e.subtree_common_prefix_len];
                let child = FileRange {
                    file: file(e.child.file)?,
                    offset: e.child.offset,
                    length: e.child.length,
                };
                walk_node(
                    src,
                    &child,
                    height - 1,
                    child_prefix,
                    &child_min,
                    max_node_bytes,
                    last,
                    visit,
                )?;
            }
        }
    }
    Ok(())
}

fn resolve_version(v: &VersionRef, files: &[Arc<DataFile>]) -> Version {
    Version {
        generation: v.generation,
        root_height: v.root_height,
        root: v.root.map(|l| FileRange {
            file: files[l.file].clone(),
            offset: l.offset,
            length: l.length,
        }),
        stats: v.stats,
        commit_time_ns: v.commit_time_ns,
    }
}

/// Opens every file a table names, in order.
fn open_all(
    src: &dyn FileSource,
    table: &[super::data_file_table::DataFilePath],
    needed: impl Fn(usize) -> bool,
) -> Result<Vec<Option<Arc<DataFile>>>> {
    let mut out = Vec::with_capacity(table.len());
    for (i, f) in table.iter().enumerate() {
        out.push(if needed(i) {
            Some(src.file(&f.full, &f.transitive)?)
        } else {
            None
        });
    }
    Ok(out)
}

/// All versions a manifest references, oldest first.
pub fn manifest_versions(src: &dyn FileSource, m: &Manifest) -> Result<Vec<Version>> {
    let used = |i: usize| {
        m.versions
            .iter()
            .any(|v| v.root.is_some_and(|l| l.file == i))
            || m.version_nodes.iter().any(|n| n.location.file == i)
    };
    let opened = open_all(src, &m.files, used)?;
    let files: Vec<Arc<DataFile>> = opened.iter().flatten().cloned().collect();
    // Map table index -> position among opened files.
    let mut index = vec![usize::MAX; opened.len()];
    let mut k = 0;
    for (i, f) in opened.iter().enumerate() {
        if f.is_some() {
            index[i] = k;
            k += 1;
        }
    }
    let remap = |l: btree::Location| btree::Location {
        file: index[l.file],
        ..l
    };
    let mut out = Vec::new();
    for n in &m.version_nodes {
        let n = VersionNodeRef {
            location: remap(n.location),
            ..n.clone()
        };
        collect_node(src, &n, &files, m.config.version_tree_arity_log2, &mut out)?;
    }
    for v in &m.versions {
        let v = VersionRef {
            root: v.root.map(remap),
            ..v.clone()
        };
        out.push(resolve_version(&v, &files));
    }
    out.sort_by_key(|v| v.generation);
    out.dedup_by_key(|v| v.generation);
    Ok(out)
}

fn collect_node(
    src: &dyn FileSource,
    n: &VersionNodeRef,
    files: &[Arc<DataFile>],
    arity: u8,
    out: &mut Vec<Version>,
) -> Result<()> {
    let f = &files[n.location.file];
    let bytes = f.read_at(n.location.offset, n.location.length)?;
    let node = version_tree::decode(&bytes, &f.transitive, arity)?;
    if node.height != n.height {
        return Err(corrupt(format!(
            "version node height {} where {} expected",
            node.height, n.height
        )));
    }
    // Only files something points at: an empty generation names a
    // placeholder file (often the empty path) that must not be opened.
    let used = |i: usize| match &node.entries {
        VersionEntries::Leaf(v) => v.iter().any(|e| e.root.is_some_and(|l| l.file == i)),
        VersionEntries::Interior(c) => c.iter().any(|e| e.location.file == i),
    };
    let opened = open_all(src, &node.files, used)?;
    let pick = |i: usize| -> Result<Arc<DataFile>> {
        opened
            .get(i)
            .and_then(|f| f.clone())
            .ok_or_else(|| corrupt("version node references an unopened file"))
    };
    match &node.entries {
        VersionEntries::Leaf(v) => {
            for e in v {
                out.push(Version {
                    generation: e.generation,
                    root_height: e.root_height,
                    root: match e.root {
                        Some(l) => Some(FileRange {
                            file: pick(l.file)?,
                            offset: l.offset,
                            length: l.length,
                        }),
                        None => None,
                    },
                    stats: e.stats,
                    commit_time_ns: e.commit_time_ns,
                });
            }
        }
        VersionEntries::Interior(children) => {
            let mut depth_files = Vec::with_capacity(children.len());
            for c in children {
                depth_files.push(pick(c.location.file)?);
            }
            for (i, c) in children.iter().enumerate() {
                let child = VersionNodeRef {
                    location: btree::Location {
                        file: i,
                        ..c.location
                    },
                    ..c.clone()
                };
                collect_node(src, &child, &depth_files, arity, out)?;
            }
        }
    }
    Ok(())
}
