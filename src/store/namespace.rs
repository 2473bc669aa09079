//! The namespace: the record of the tree's names (directories, files by
//! their id, symlinks, special nodes) and their attributes. The POSIX core
//! changes names only through this trait; file data is keyed by the file's
//! id in its chunk store, so a rename touches names only.
//!
//! Two implementations: the backing directory (`DirNamespace`, the record
//! of the live tree) and the packed database's `.ns/` keys (`Catalog`,
//! which every committed version keeps). `Mirrored` applies each change to
//! the first and then the second.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::FsResult;
use crate::layout::manifest::{Attrs, FileManifest};

/// Where a name is, in the terms of every implementation: its backing
/// path (possibly below an open ancestor, for very deep trees) and its
/// mount-relative path (raw bytes, `/`-joined).
#[derive(Debug, Clone)]
pub struct At {
    pub backing: PathBuf,
    pub key: Vec<u8>,
}

/// What one name is.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "t", rename_all = "snake_case")]
pub enum Entry {
    Dir {
        attrs: Attrs,
    },
    /// A file's attributes and data are its manifest's (`<id>/zarr.json`).
    File {
        id: String,
    },
    Symlink {
        target: Vec<u8>,
        attrs: Attrs,
        /// Shared by every name of a symlink with hard links (see `Node`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        node: Node,
    },
    Special {
        rdev: u64,
        attrs: Attrs,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        node: Node,
    },
}

/// Which names of a version are one symlink or special node: `None` for a
/// node with one name, else a number all its names carry and no other
/// node's do (a file's names share its id instead).
pub type Node = Option<u64>;

/// How a non-directory name goes.
#[derive(Clone, Copy)]
pub enum Removal<'a> {
    /// A symlink's or special node's name.
    Node,
    /// A file's last name: its home leaves the tree (see `Retired`).
    LastName,
    /// One of several names of a file. `heir` is the next name, when this
    /// one holds the file's home (which then moves there).
    FurtherName { heir: Option<&'a At> },
}

/// A file's home after its last name went: kept while the file is open,
/// then `purge`d.
#[derive(Debug)]
pub struct Retired(pub PathBuf);

/// What a scan found, and what its recovery removed, for the log.
#[derive(Debug, Default)]
pub struct Recovery {
    pub files: u64,
    pub dirs: u64,
    pub removed: u64,
}

/// A file's first name, as a scan finds it.
pub struct FoundFile<'a> {
    /// The file's home (manifest, staging, data), valid during the call;
    /// `None` where the namespace keeps none (a version's catalog).
    pub home: Option<&'a Path>,
    pub manifest: Box<FileManifest>,
    /// Attribute changes noted beside the manifest since its commit.
    pub noted: Option<Attrs>,
    /// The attributes of the name itself.
    pub attrs: Attrs,
}

impl FoundFile<'_> {
    /// A file known only from the database's copy of its manifest: no
    /// home, no note, the manifest's attributes.
    pub fn without_home(manifest: Box<FileManifest>) -> Self {
        let attrs = manifest.attrs;
        FoundFile {
            home: None,
            manifest,
            noted: None,
            attrs,
        }
    }
}

/// A symlink's or special node's name, as a scan finds it.
pub enum FoundNode {
    Symlink { target: PathBuf, attrs: Attrs },
    Special { rdev: u64, attrs: Attrs },
}

/// Receives what [`Namespace::scan`] finds: every directory before what is
/// in it, and a file's further names after its first.
pub trait ScanVisitor {
    /// The root directory's own attributes, where the namespace keeps them.
    fn root(&mut self, _attrs: Attrs) {}

    /// A directory; returns the number its entries get as their parent.
    fn dir(&mut self, parent: u64, name: &OsStr, attrs: Attrs) -> u64;

    /// A file's first name (its home, if any, is valid for the call).
    fn file(&mut self, parent: u64, name: &OsStr, found: FoundFile) -> FsResult<()>;

    /// A further name of the file `id`.
    fn link(&mut self, parent: u64, name: &OsStr, id: &str);

    /// A symlink or special node; the names of one node with several share
    /// their `Node` number.
    fn node(&mut self, parent: u64, name: &OsStr, found: FoundNode, node: Node);
}

/// The record of the tree's names. Existence checks are the caller's (it
/// holds the tree); each method changes one name or one pair of names.
pub trait Namespace: Send + Sync {
    /// Reports every name to `visit`, the root's entries with parent
    /// `root`. With `recover` (nothing is open yet, and the backing may
    /// change) what a crash left is removed on the way: half-made names,
    /// files never committed, generations no manifest names, names of
    /// files that are gone.
    fn scan(&self, visit: &mut dyn ScanVisitor, root: u64, recover: bool) -> FsResult<Recovery>;

    /// A new directory.
    fn create_dir(&self, at: &At, attrs: &Attrs) -> FsResult<()>;

    /// A new file with id `id`: `build` fills its home (a directory not yet
    /// in the tree), which is then published under `at` in one step.
    fn create_file(
        &self,
        at: &At,
        id: &str,
        build: &mut dyn FnMut(&Path) -> FsResult<()>,
    ) -> FsResult<()>;

    fn create_symlink(&self, at: &At, target: &Path, attrs: &Attrs) -> FsResult<()>;

    /// A fifo, socket or device node (`attrs.mode` carries its type).
    fn create_special(&self, at: &At, attrs: &Attrs, rdev: u64) -> FsResult<()>;

    /// A further name for the file `id`, durable on return.
    fn link_file(&self, at: &At, id: &str) -> FsResult<()>;

    /// A further name for the symlink or special node at `from`, durable on
    /// return; `entry` is what both names record now (with the node's
    /// number, see `Node`).
    fn link_node(&self, from: &At, at: &At, entry: &Entry) -> FsResult<()>;

    /// Removes a non-directory name.
    fn remove_name(&self, at: &At, how: Removal) -> FsResult<Option<Retired>>;

    /// Frees a retired file home.
    fn purge(&self, retired: Retired);

    /// Removes an empty directory (for a caller replacing it: one whose
    /// name another entry now holds, so it may hold that entry's record).
    fn remove_dir(&self, at: &At) -> FsResult<()>;

    /// Moves a name (the target does not exist).
    fn rename(&self, from: &At, to: &At) -> FsResult<()>;

    /// Swaps two existing names atomically.
    fn exchange(&self, a: &At, b: &At) -> FsResult<()>;

    /// A directory's, symlink's or special node's new attributes; `names`
    /// are all its names, the first one first. `chmod`/`chown` say which
    /// attributes changed.
    fn set_attrs(&self, names: &[At], entry: &Entry, chmod: bool, chown: bool) -> FsResult<()>;

    /// Makes the latest changes to these names durable.
    fn sync_names(&self, names: &[&At]) -> FsResult<()>;

    /// fsync of a directory: the names in it are durable on return.
    fn sync_dir(&self, dir: &At) -> FsResult<()>;

    /// Space and inode figures of the store.
    fn statfs(&self) -> FsResult<nix::sys::statvfs::Statvfs>;

    /// Whether `set_attrs` keeps times (a caller recording each time
    /// change need not work out names and entries for a namespace that
    /// keeps none).
    fn keeps_times(&self) -> bool;
}

/// A namespace and a mirror that follows it: the first is the record (its
/// errors are the caller's), the mirror is brought in line at every mount,
/// so its errors are logged. Only `sync_dir`, which promises durability of
/// both, returns the mirror's errors too.
pub struct Mirrored<A, B> {
    pub record: A,
    pub mirror: Option<B>,
}

impl<A: Namespace, B: Namespace> Mirrored<A, B> {
    fn follow(&self, change: impl FnOnce(&B) -> FsResult<()>) {
        if let Some(m) = &self.mirror {
            if let Err(e) = change(m) {
                tracing::warn!("{e}");
            }
        }
    }
}

impl<A: Namespace, B: Namespace> Namespace for Mirrored<A, B> {
    /// The record's names: the mirror is brought in line with them.
    fn scan(&self, visit: &mut dyn ScanVisitor, root: u64, recover: bool) -> FsResult<Recovery> {
        self.record.scan(visit, root, recover)
    }

    fn create_dir(&self, at: &At, attrs: &Attrs) -> FsResult<()> {
        self.record.create_dir(at, attrs)?;
        self.follow(|m| m.create_dir(at, attrs));
        Ok(())
    }

    fn create_file(
        &self,
        at: &At,
        id: &str,
        build: &mut dyn FnMut(&Path) -> FsResult<()>,
    ) -> FsResult<()> {
        self.record.create_file(at, id, build)?;
        self.follow(|m| m.create_file(at, id, &mut |_| Ok(())));
        Ok(())
    }

    fn create_symlink(&self, at: &At, target: &Path, attrs: &Attrs) -> FsResult<()> {
        self.record.create_symlink(at, target, attrs)?;
        self.follow(|m| m.create_symlink(at, target, attrs));
        Ok(())
    }

    fn create_special(&self, at: &At, attrs: &Attrs, rdev: u64) -> FsResult<()> {
        self.record.create_special(at, attrs, rdev)?;
        self.follow(|m| m.create_special(at, attrs, rdev));
        Ok(())
    }

    fn link_file(&self, at: &At, id: &str) -> FsResult<()> {
        self.record.link_file(at, id)?;
        self.follow(|m| m.link_file(at, id));
        Ok(())
    }

    fn link_node(&self, from: &At, at: &At, entry: &Entry) -> FsResult<()> {
        self.record.link_node(from, at, entry)?;
        self.follow(|m| m.link_node(from, at, entry));
        Ok(())
    }

    fn remove_name(&self, at: &At, how: Removal) -> FsResult<Option<Retired>> {
        let retired = self.record.remove_name(at, how)?;
        self.follow(|m| m.remove_name(at, how).map(|_| ()));
        Ok(retired)
    }

    fn purge(&self, retired: Retired) {
        self.record.purge(retired);
    }

    fn remove_dir(&self, at: &At) -> FsResult<()> {
        self.record.remove_dir(at)?;
        self.follow(|m| m.remove_dir(at));
        Ok(())
    }

    fn rename(&self, from: &At, to: &At) -> FsResult<()> {
        self.record.rename(from, to)?;
        self.follow(|m| m.rename(from, to));
        Ok(())
    }

    fn exchange(&self, a: &At, b: &At) -> FsResult<()> {
        self.record.exchange(a, b)?;
        self.follow(|m| m.exchange(a, b));
        Ok(())
    }

    fn set_attrs(&self, names: &[At], entry: &Entry, chmod: bool, chown: bool) -> FsResult<()> {
        self.record.set_attrs(names, entry, chmod, chown)?;
        self.follow(|m| m.set_attrs(names, entry, chmod, chown));
        Ok(())
    }

    fn sync_names(&self, names: &[&At]) -> FsResult<()> {
        self.record.sync_names(names)?;
        self.follow(|m| m.sync_names(names));
        Ok(())
    }

    fn sync_dir(&self, dir: &At) -> FsResult<()> {
        if let Some(m) = &self.mirror {
            m.sync_dir(dir)?;
        }
        self.record.sync_dir(dir)
    }

    fn statfs(&self) -> FsResult<nix::sys::statvfs::Statvfs> {
        self.record.statfs()
    }

    fn keeps_times(&self) -> bool {
        self.record.keeps_times() || self.mirror.as_ref().is_some_and(|m| m.keeps_times())
    }
}
