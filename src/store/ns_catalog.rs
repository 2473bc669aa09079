//! The namespace as keys of the packed database: every name is a key
//! `.ns/<path>` whose value is its `Entry`, so each committed version holds
//! the tree as it was. Changes are pending until the database's next
//! commit (a file's commit, an fsync of a directory, the unmount), not one
//! commit per name.

use std::collections::{HashMap, HashSet};
use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use ocdbt::{Change, Db, OcdbtError};

use super::namespace::{
    At, Entry, FoundFile, FoundNode, Namespace, Recovery, Removal, Retired, ScanVisitor,
};
use crate::error::{FsError, FsResult};
use crate::layout::manifest::{parse_node, Attrs, NodeDoc, ZARR_JSON};

/// Where the names live in the database (no file id starts with a dot).
pub const PREFIX: &[u8] = b".ns/";

/// A database error of the catalog, as EIO.
pub fn fail(e: OcdbtError) -> FsError {
    FsError::new(libc::EIO, format!("namespace in the packed index: {e}"))
}

/// The key of a mount-relative path.
pub fn key(path: &[u8]) -> Vec<u8> {
    [PREFIX, path].concat()
}

/// A name's entry as its key's value (JSON).
pub fn encode(e: &Entry) -> FsResult<Vec<u8>> {
    serde_json::to_vec(e).map_err(|e| FsError::new(libc::EIO, format!("namespace entry: {e}")))
}

/// The `.ns/` keys of one writable database.
pub struct Catalog {
    db: Arc<Db>,
}

impl Catalog {
    /// The catalog of `db`'s names.
    pub fn new(db: Arc<Db>) -> Self {
        Catalog { db }
    }

    /// Whether the database's version holds any name (one written before
    /// the namespace was kept in the index holds none).
    pub fn has_names(&self) -> bool {
        self.db
            .first_key_from(PREFIX)
            .is_some_and(|k| k.starts_with(PREFIX))
    }

    /// The database the names are kept in.
    pub fn db(&self) -> &Arc<Db> {
        &self.db
    }

    fn apply(&self, changes: &[Change]) -> FsResult<()> {
        self.db.apply(changes).map_err(fail)
    }

    fn put(&self, path: &[u8], entry: &Entry) -> FsResult<()> {
        self.apply(&[Change::Put(key(path), encode(entry)?)])
    }

    /// The entry of a name, if it has one.
    pub fn entry(&self, path: &[u8]) -> FsResult<Option<Entry>> {
        let Some(v) = self.db.get(&key(path)).map_err(fail)? else {
            return Ok(None);
        };
        serde_json::from_slice(&v)
            .map(Some)
            .map_err(|e| FsError::new(libc::EIO, format!("namespace entry: {e}")))
    }

    /// Forgets a name and everything below it.
    fn remove(&self, path: &[u8]) -> FsResult<()> {
        self.apply(&removal(path))
    }

    /// Makes the changes so far durable (a commit of the database).
    pub fn commit(&self) -> FsResult<()> {
        self.db
            .commit()
            .map(|_| ())
            .map_err(|e| FsError::new(libc::EIO, format!("packed index commit: {e}")))
    }
}

/// The changes that forget a name and everything below it.
fn removal(path: &[u8]) -> Vec<Change> {
    vec![
        Change::Delete(key(path)),
        Change::DeletePrefix(key(&[path, b"/"].concat())),
    ]
}

/// The changes that move a name and everything below it, replacing what
/// `to` held.
fn moving(from: &[u8], to: &[u8]) -> Vec<Change> {
    let mut out = removal(to);
    out.extend([
        Change::Copy(key(from), key(to)),
        Change::Delete(key(from)),
        Change::RenamePrefix(key(&[from, b"/"].concat()), key(&[to, b"/"].concat())),
    ]);
    out
}

/// Reports a file's first name to the visitor; returns whether it did
/// (a file not reported is absent, with all its names).
pub(super) type OnFile<'a> =
    dyn FnMut(&mut dyn ScanVisitor, u64, &OsStr, &str) -> FsResult<bool> + 'a;

impl Catalog {
    /// Reports every name to `visit` in key order (a directory before what
    /// is below it), each file's first name through `on_file`; returns the
    /// keys of the names of files `on_file` left out.
    pub(super) fn walk(
        &self,
        visit: &mut dyn ScanVisitor,
        root: u64,
        rec: &mut Recovery,
        on_file: &mut OnFile,
    ) -> FsResult<Vec<Vec<u8>>> {
        let mut dirs: HashMap<Vec<u8>, u64> = HashMap::from([(Vec::new(), root)]);
        let mut files: HashSet<String> = HashSet::new();
        let mut absent: HashSet<String> = HashSet::new();
        let mut dropped = Vec::new();
        for (k, _) in self.db.list_prefix(PREFIX) {
            let path = &k[PREFIX.len()..];
            let Some(value) = self.db.get(&k).map_err(fail)? else {
                continue;
            };
            let Ok(entry) = serde_json::from_slice::<Entry>(&value) else {
                tracing::warn!(
                    "{}: unreadable namespace entry",
                    String::from_utf8_lossy(path)
                );
                continue;
            };
            if path.is_empty() {
                // The root's own entry (its attributes).
                if let Entry::Dir { attrs } = entry {
                    visit.root(attrs);
                }
                continue;
            }
            let (parent_path, name) = match path.iter().rposition(|b| *b == b'/') {
                Some(i) => (&path[..i], &path[i + 1..]),
                None => (&path[..0], path),
            };
            // Keys sort a directory before what is below it.
            let Some(&parent) = dirs.get(parent_path) else {
                continue;
            };
            let name = OsStr::from_bytes(name);
            match entry {
                Entry::Dir { attrs } => {
                    rec.dirs += 1;
                    dirs.insert(path.to_vec(), visit.dir(parent, name, attrs));
                }
                Entry::File { id } => {
                    if files.contains(&id) {
                        visit.link(parent, name, &id);
                    } else if absent.contains(&id) || !on_file(visit, parent, name, &id)? {
                        absent.insert(id);
                        dropped.push(k.clone());
                    } else {
                        files.insert(id);
                    }
                }
                Entry::Symlink {
                    target,
                    attrs,
                    node,
                } => {
                    let target = PathBuf::from(OsString::from_vec(target));
                    visit.node(parent, name, FoundNode::Symlink { target, attrs }, node);
                }
                Entry::Special { rdev, attrs, node } => {
                    visit.node(parent, name, FoundNode::Special { rdev, attrs }, node);
                }
            }
        }
        Ok(dropped)
    }
}

impl Namespace for Catalog {
    /// The tree of the database's version: a file shows with the manifest
    /// that version holds (one created and never committed in it is left
    /// out, with its names), and has no home. Nothing is removed: a
    /// catalog is scanned for read-only mounts of a version.
    fn scan(&self, visit: &mut dyn ScanVisitor, root: u64, _recover: bool) -> FsResult<Recovery> {
        let mut rec = Recovery::default();
        let db = self.db.clone();
        let mut files = 0;
        self.walk(visit, root, &mut rec, &mut |visit, parent, name, id| {
            let doc = db
                .get(format!("{id}/{ZARR_JSON}").as_bytes())
                .map_err(fail)?;
            let Some(NodeDoc::File(m)) = doc.as_deref().map(parse_node) else {
                return Ok(false);
            };
            files += 1;
            visit.file(parent, name, FoundFile::without_home(m))?;
            Ok(true)
        })?;
        rec.files = files;
        Ok(rec)
    }

    fn create_dir(&self, at: &At, attrs: &Attrs) -> FsResult<()> {
        self.put(&at.key, &Entry::Dir { attrs: *attrs })
    }

    fn create_file(
        &self,
        at: &At,
        id: &str,
        _build: &mut dyn FnMut(&Path) -> FsResult<()>,
    ) -> FsResult<()> {
        self.link_file(at, id)
    }

    fn create_symlink(&self, at: &At, target: &Path, attrs: &Attrs) -> FsResult<()> {
        use std::os::unix::ffi::OsStrExt;
        let target = target.as_os_str().as_bytes().to_vec();
        self.put(
            &at.key,
            &Entry::Symlink {
                target,
                attrs: *attrs,
                node: None,
            },
        )
    }

    fn create_special(&self, at: &At, attrs: &Attrs, rdev: u64) -> FsResult<()> {
        self.put(
            &at.key,
            &Entry::Special {
                rdev,
                attrs: *attrs,
                node: None,
            },
        )
    }

    fn link_file(&self, at: &At, id: &str) -> FsResult<()> {
        self.put(&at.key, &Entry::File { id: id.to_string() })
    }

    /// Both names get `entry` in one step: a commit never holds one of them
    /// without the node's number.
    fn link_node(&self, from: &At, at: &At, entry: &Entry) -> FsResult<()> {
        match self.db.get(&key(&from.key)).map_err(fail)? {
            Some(_) => {
                let value = encode(entry)?;
                self.apply(&[
                    Change::Put(key(&from.key), value.clone()),
                    Change::Put(key(&at.key), value),
                ])
            }
            None => Err(FsError::new(
                libc::EIO,
                "namespace in the packed index: the linked name has no entry",
            )),
        }
    }

    fn remove_name(&self, at: &At, _how: Removal) -> FsResult<Option<Retired>> {
        self.remove(&at.key)?;
        Ok(None)
    }

    fn purge(&self, _retired: Retired) {}

    fn remove_dir(&self, at: &At) -> FsResult<()> {
        self.remove(&at.key)
    }

    fn rename(&self, from: &At, to: &At) -> FsResult<()> {
        self.apply(&moving(&from.key, &to.key))
    }

    fn exchange(&self, a: &At, b: &At) -> FsResult<()> {
        // No name holds a NUL byte: a scratch path no entry can have.
        let scratch = b"\0exchange".as_slice();
        let mut changes = moving(&a.key, scratch);
        changes.extend(moving(&b.key, &a.key));
        changes.extend(moving(scratch, &b.key));
        self.apply(&changes)
    }

    fn set_attrs(&self, names: &[At], entry: &Entry, _chmod: bool, _chown: bool) -> FsResult<()> {
        let value = encode(entry)?;
        let changes: Vec<Change> = names
            .iter()
            .map(|at| Change::Put(key(&at.key), value.clone()))
            .collect();
        self.apply(&changes)
    }

    /// Renames are in the index with its next commit.
    fn sync_names(&self, _names: &[&At]) -> FsResult<()> {
        Ok(())
    }

    fn sync_dir(&self, _dir: &At) -> FsResult<()> {
        self.commit()
    }

    fn statfs(&self) -> FsResult<nix::sys::statvfs::Statvfs> {
        Err(FsError::new(
            libc::ENOSYS,
            "the packed index keeps no space figures of its own",
        ))
    }

    fn keeps_times(&self) -> bool {
        true
    }
}
