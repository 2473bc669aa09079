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

use ocdbt::{Db, OcdbtError};

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

    fn put(&self, path: &[u8], entry: &Entry) -> FsResult<()> {
        self.db.put(&key(path), &encode(entry)?).map_err(fail)
    }

    /// Forgets a name and everything below it.
    fn remove(&self, path: &[u8]) -> FsResult<()> {
        self.db.delete(&key(path)).map_err(fail)?;
        self.db
            .delete_prefix(&key(&[path, b"/"].concat()))
            .map_err(fail)?;
        Ok(())
    }

    /// Moves a name and everything below it, replacing what `to` held.
    fn move_keys(&self, from: &[u8], to: &[u8]) -> FsResult<()> {
        self.remove(to)?;
        if let Some(v) = self.db.get(&key(from)).map_err(fail)? {
            self.db.put(&key(to), &v).map_err(fail)?;
            self.db.delete(&key(from)).map_err(fail)?;
        }
        self.db
            .rename_prefix(&key(&[from, b"/"].concat()), &key(&[to, b"/"].concat()))
            .map_err(fail)?;
        Ok(())
    }
}

impl Namespace for Catalog {
    /// The tree of the database's version: a file shows with the manifest
    /// that version holds (one created and never committed in it is left
    /// out, with its names), and has no home. Nothing is removed: a
    /// catalog is scanned for read-only mounts of a version.
    fn scan(&self, visit: &mut dyn ScanVisitor, root: u64, _recover: bool) -> FsResult<Recovery> {
        let mut rec = Recovery::default();
        let mut dirs: HashMap<Vec<u8>, u64> = HashMap::from([(Vec::new(), root)]);
        let mut files: HashSet<String> = HashSet::new();
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
                        continue;
                    }
                    let doc = self
                        .db
                        .get(format!("{id}/{ZARR_JSON}").as_bytes())
                        .map_err(fail)?;
                    let Some(NodeDoc::File(m)) = doc.as_deref().map(parse_node) else {
                        continue;
                    };
                    rec.files += 1;
                    let attrs = m.attrs;
                    visit.file(
                        parent,
                        name,
                        FoundFile {
                            home: None,
                            manifest: m,
                            noted: None,
                            attrs,
                        },
                    )?;
                    files.insert(id);
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

    fn link_node(&self, from: &At, at: &At) -> FsResult<()> {
        match self.db.get(&key(&from.key)).map_err(fail)? {
            Some(v) => self.db.put(&key(&at.key), &v).map_err(fail),
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
        self.move_keys(&from.key, &to.key)
    }

    fn exchange(&self, a: &At, b: &At) -> FsResult<()> {
        // No name holds a NUL byte: a scratch path no entry can have.
        let scratch = b"\0exchange".as_slice();
        self.move_keys(&a.key, scratch)?;
        self.move_keys(&b.key, &a.key)?;
        self.move_keys(scratch, &b.key)
    }

    fn set_attrs(&self, names: &[At], entry: &Entry, _chmod: bool, _chown: bool) -> FsResult<()> {
        for at in names {
            self.put(&at.key, entry)?;
        }
        Ok(())
    }

    /// Renames are in the index with its next commit.
    fn sync_names(&self, _names: &[&At]) -> FsResult<()> {
        Ok(())
    }

    fn sync_dir(&self, _dir: &At) -> FsResult<()> {
        self.db
            .commit()
            .map(|_| ())
            .map_err(|e| FsError::new(libc::EIO, format!("packed index commit: {e}")))
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
