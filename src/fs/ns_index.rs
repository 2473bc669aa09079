//! The namespace in the packed index: every name of the tree is a key
//! `.ns/<path>` whose value says what the name is (a directory, a file by
//! its id, a symlink, a special node), so each committed version holds the
//! tree as it was. `ckptfs mount --version N` builds its tree from these
//! keys: files renamed since show under their old names, deleted files are
//! there, the names of one file, symlink or special node are one node (a
//! file's by its id, the others' by the number their entries carry).
//!
//! The backing dir stays the record of the live tree. The keys
//! (`store::ns_catalog`) follow it op by op, pending until the database's
//! next commit, and are brought in line with it here at every mount, which
//! also covers a crash between an op and the next commit.

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;

use crate::error::FsResult;
use crate::ocdbt::Db;
use crate::store::namespace::{At, Entry};
use crate::store::ns_catalog::{encode, fail, key, PREFIX};

use super::tree::{Kind, Tree, ROOT};

/// The mount-relative path of a node's first name (raw bytes, `/`-joined).
fn rel_path(tree: &Tree, ino: u64) -> FsResult<Vec<u8>> {
    let mut parts = Vec::new();
    let mut cur = ino;
    while cur != ROOT {
        let node = tree.get(cur)?;
        parts.push(node.name.as_bytes().to_vec());
        cur = node.parent;
    }
    parts.reverse();
    Ok(parts.join(&b'/'))
}

/// The path of the name `name` in directory `parent`.
pub fn name_path(tree: &Tree, parent: u64, name: &OsStr) -> FsResult<Vec<u8>> {
    let mut p = rel_path(tree, parent)?;
    if !p.is_empty() {
        p.push(b'/');
    }
    p.extend_from_slice(name.as_bytes());
    Ok(p)
}

/// Where the name `name` in directory `parent` is, for the namespace.
pub fn at(tree: &Tree, parent: u64, name: &OsStr) -> FsResult<At> {
    Ok(At {
        backing: if tree.backing_names {
            tree.child_path(parent, name)?
        } else {
            PathBuf::new()
        },
        key: name_path(tree, parent, name)?,
    })
}

/// Where the first name of `ino` is.
pub fn at_node(tree: &Tree, ino: u64) -> FsResult<At> {
    Ok(At {
        backing: if tree.backing_names {
            tree.path(ino)?
        } else {
            PathBuf::new()
        },
        key: rel_path(tree, ino)?,
    })
}

/// Where every name of `ino` is, the first one first.
pub fn names_of(tree: &Tree, ino: u64) -> FsResult<Vec<At>> {
    let node = tree.get(ino)?;
    let mut out = vec![at_node(tree, ino)?];
    for (parent, name) in &node.links {
        out.push(at(tree, *parent, name)?);
    }
    Ok(out)
}

/// What the node `ino` is, as its names record it. The names of a
/// symlink or special node with several carry its inode number, which is
/// unique within the mount, and rewritten at each mount (`reconcile`).
pub fn entry_of(tree: &Tree, ino: u64) -> FsResult<Entry> {
    entry_with_node(tree, ino, (tree.nlink(ino) > 1).then_some(ino))
}

/// What the node `ino` is, its names carrying the number `shared`.
pub fn entry_with_node(tree: &Tree, ino: u64, shared: Option<u64>) -> FsResult<Entry> {
    let node = tree.get(ino)?;
    Ok(match &node.kind {
        Kind::Dir(_) => Entry::Dir { attrs: node.attrs },
        Kind::File(f) => Entry::File {
            id: f.lock().manifest().id.clone(),
        },
        Kind::Symlink(t) => Entry::Symlink {
            target: t.as_os_str().as_bytes().to_vec(),
            attrs: node.attrs,
            node: shared,
        },
        Kind::Special(rdev) => Entry::Special {
            rdev: *rdev,
            attrs: node.attrs,
            node: shared,
        },
    })
}

/// Every name of the live tree with its entry.
fn full(tree: &Tree) -> FsResult<BTreeMap<Vec<u8>, Vec<u8>>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![(ROOT, Vec::new())];
    while let Some((dir, path)) = stack.pop() {
        for (name, &ino) in tree.children(dir)? {
            let mut p = path.clone();
            if !p.is_empty() {
                p.push(b'/');
            }
            p.extend_from_slice(name.as_bytes());
            if matches!(tree.get(ino)?.kind, Kind::Dir(_)) {
                stack.push((ino, p.clone()));
            }
            out.insert(key(&p), encode(&entry_of(tree, ino)?)?);
        }
    }
    Ok(out)
}

/// How the keys differ from the live tree: keys to delete, and keys to
/// put with their values.
pub struct Drift {
    pub stale: Vec<Vec<u8>>,
    pub missing: Vec<(Vec<u8>, Vec<u8>)>,
}

impl Drift {
    /// Whether the keys match the tree.
    pub fn is_empty(&self) -> bool {
        self.stale.is_empty() && self.missing.is_empty()
    }
}

/// Compares the keys with the live tree (changes nothing).
pub fn drift(tree: &Tree, db: &Db) -> FsResult<Drift> {
    let mut want = full(tree)?;
    let mut stale = Vec::new();
    for (k, _) in db.list_prefix(PREFIX) {
        // The root's own entry (its mode and owner, set by a chmod or
        // chown of the root) is no name.
        if k == PREFIX {
            continue;
        }
        match want.get(&k) {
            None => stale.push(k),
            Some(v) => {
                if db.get(&k).map_err(fail)?.as_deref() == Some(v.as_slice()) {
                    want.remove(&k);
                }
            }
        }
    }
    Ok(Drift {
        stale,
        missing: want.into_iter().collect(),
    })
}

/// Brings the keys in line with the live tree; returns whether anything
/// changed (the caller commits).
pub fn reconcile(tree: &Tree, db: &Db) -> FsResult<bool> {
    let d = drift(tree, db)?;
    for k in &d.stale {
        db.delete(k).map_err(fail)?;
    }
    for (k, v) in &d.missing {
        db.put(k, v).map_err(fail)?;
    }
    Ok(!d.is_empty())
}
