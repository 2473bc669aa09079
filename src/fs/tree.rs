//! The namespace: inodes, directories and their children, loaded from the
//! backing directory at mount (which is also when a crash is recovered
//! from: half-made entries and unreferenced generations are removed).

use std::collections::{BTreeMap, HashMap};
use std::ffi::{OsStr, OsString};
use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::Mutex;

use crate::error::{enoent, FsResult, IoContext};
use crate::layout::manifest::{read_node, NodeDoc, ZARR_JSON};
use crate::store::durable::{is_temp, DurableStore};

use super::file::FileNode;
use super::names::{from_backing, to_backing, RESERVED};

pub const ROOT: u64 = 1;

pub enum Kind {
    Dir(BTreeMap<OsString, u64>),
    File(Arc<Mutex<FileNode>>),
    Symlink(PathBuf),
    /// A fifo, socket or device node (`mknod`), kept as a node of the same
    /// type in the backing dir; the value is its device number.
    Special(u64),
}

/// Attributes of directories and symlinks (files keep theirs in FileNode).
#[derive(Debug, Clone, Copy)]
pub struct NodeAttrs {
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub atime_ns: i64,
    pub mtime_ns: i64,
    pub ctime_ns: i64,
}

pub struct Node {
    pub parent: u64,
    pub name: OsString,
    pub kind: Kind,
    pub attrs: NodeAttrs,
}

pub struct Tree {
    pub nodes: HashMap<u64, Node>,
    next_ino: u64,
    pub backing: PathBuf,
}

/// What recovery found and removed, for the log.
#[derive(Debug, Default)]
pub struct Recovery {
    pub files: u64,
    pub dirs: u64,
    pub removed: u64,
}

fn attrs_of(meta: &fs::Metadata) -> NodeAttrs {
    NodeAttrs {
        mode: meta.mode(),
        uid: meta.uid(),
        gid: meta.gid(),
        atime_ns: meta.atime() * 1_000_000_000 + meta.atime_nsec(),
        mtime_ns: meta.mtime() * 1_000_000_000 + meta.mtime_nsec(),
        ctime_ns: meta.ctime() * 1_000_000_000 + meta.ctime_nsec(),
    }
}

fn remove_any(path: &Path) {
    let _ = fs::remove_dir_all(path).or_else(|_| fs::remove_file(path));
}

/// Removes everything in a file directory but its manifest and live array.
fn clean_file_dir(dir: &Path, live: &str, rec: &mut Recovery) -> std::io::Result<()> {
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        if name == ZARR_JSON || name == live {
            continue;
        }
        remove_any(&entry.path());
        rec.removed += 1;
    }
    Ok(())
}

impl Tree {
    /// Loads the tree under `backing`, recovering from any interrupted work.
    pub fn load(backing: &Path) -> FsResult<(Self, Recovery)> {
        let meta = fs::metadata(backing).ctx(format!("backing dir {}", backing.display()))?;
        let mut tree = Tree {
            nodes: HashMap::new(),
            next_ino: ROOT + 1,
            backing: backing.to_path_buf(),
        };
        tree.nodes.insert(
            ROOT,
            Node {
                parent: ROOT,
                name: OsString::new(),
                kind: Kind::Dir(BTreeMap::new()),
                attrs: attrs_of(&meta),
            },
        );
        let mut rec = Recovery::default();
        tree.load_dir(backing, ROOT, &mut rec)?;
        Ok((tree, rec))
    }

    fn load_dir(&mut self, dir: &Path, ino: u64, rec: &mut Recovery) -> FsResult<()> {
        let entries = fs::read_dir(dir).ctx(format!("read {}", dir.display()))?;
        for entry in entries {
            let entry = entry.ctx("read dir entry")?;
            let bname = entry.file_name();
            let path = entry.path();
            if ino == ROOT && bname == RESERVED {
                continue;
            }
            let meta = fs::symlink_metadata(&path).ctx(format!("stat {}", path.display()))?;
            let ft = meta.file_type();
            if ft.is_file() {
                // Ours: the group document, or a temp file a crash left.
                if bname != ZARR_JSON {
                    remove_any(&path);
                    rec.removed += 1;
                }
                continue;
            }
            if is_temp(&bname.to_string_lossy()) {
                remove_any(&path);
                rec.removed += 1;
                continue;
            }
            let name = from_backing(&bname);
            let child = if ft.is_symlink() {
                let target = fs::read_link(&path).ctx("readlink")?;
                self.insert(ino, &name, Kind::Symlink(target), attrs_of(&meta))
            } else if ft.is_fifo() || ft.is_socket() || ft.is_block_device() || ft.is_char_device()
            {
                self.insert(ino, &name, Kind::Special(meta.rdev()), attrs_of(&meta))
            } else if ft.is_dir() {
                match read_node(&path) {
                    NodeDoc::File(m) => {
                        let live = if m.generation == 0 {
                            String::new()
                        } else {
                            format!("g{}", m.generation)
                        };
                        clean_file_dir(&path, &live, rec).ctx("clean file dir")?;
                        let store = Arc::new(
                            DurableStore::open(&path).ctx(format!("open {}", path.display()))?,
                        );
                        let new_ino = self.next_ino;
                        let file = FileNode::load(store, new_ino, &name.to_string_lossy(), *m);
                        rec.files += 1;
                        self.insert(
                            ino,
                            &name,
                            Kind::File(Arc::new(Mutex::new(file))),
                            attrs_of(&meta),
                        )
                    }
                    NodeDoc::Dir | NodeDoc::Unknown => {
                        rec.dirs += 1;
                        let child =
                            self.insert(ino, &name, Kind::Dir(BTreeMap::new()), attrs_of(&meta));
                        self.load_dir(&path, child, rec)?;
                        child
                    }
                }
            } else {
                continue;
            };
            let _ = child;
        }
        Ok(())
    }

    /// Adds a node under `parent` and returns its inode number.
    pub fn insert(&mut self, parent: u64, name: &OsStr, kind: Kind, attrs: NodeAttrs) -> u64 {
        let ino = self.next_ino;
        self.next_ino += 1;
        if let Some(Node {
            kind: Kind::Dir(children),
            ..
        }) = self.nodes.get_mut(&parent)
        {
            children.insert(name.to_os_string(), ino);
        }
        self.nodes.insert(
            ino,
            Node {
                parent,
                name: name.to_os_string(),
                kind,
                attrs,
            },
        );
        ino
    }

    /// The inode number the next insert will use.
    pub fn peek_ino(&self) -> u64 {
        self.next_ino
    }

    pub fn get(&self, ino: u64) -> FsResult<&Node> {
        self.nodes
            .get(&ino)
            .ok_or_else(|| enoent(format!("inode {ino}")))
    }

    pub fn get_mut(&mut self, ino: u64) -> FsResult<&mut Node> {
        self.nodes
            .get_mut(&ino)
            .ok_or_else(|| enoent(format!("inode {ino}")))
    }

    pub fn children(&self, ino: u64) -> FsResult<&BTreeMap<OsString, u64>> {
        match &self.get(ino)?.kind {
            Kind::Dir(c) => Ok(c),
            _ => Err(crate::error::FsError::new(libc::ENOTDIR, "not a directory")),
        }
    }

    pub fn lookup(&self, parent: u64, name: &OsStr) -> FsResult<u64> {
        self.children(parent)?
            .get(name)
            .copied()
            .ok_or_else(|| enoent(format!("{}", name.to_string_lossy())))
    }

    /// Backing path of a node.
    pub fn path(&self, ino: u64) -> FsResult<PathBuf> {
        let mut parts = Vec::new();
        let mut cur = ino;
        while cur != ROOT {
            let node = self.get(cur)?;
            parts.push(to_backing(&node.name));
            cur = node.parent;
        }
        let mut p = self.backing.clone();
        for part in parts.iter().rev() {
            p.push(part);
        }
        Ok(p)
    }

    /// Detaches a node from its parent (the node itself stays until dropped).
    pub fn unlink(&mut self, parent: u64, name: &OsStr) -> Option<u64> {
        match self.nodes.get_mut(&parent) {
            Some(Node {
                kind: Kind::Dir(children),
                ..
            }) => children.remove(name),
            _ => None,
        }
    }

    /// Whether `ino` is `ancestor` or lies below it.
    pub fn is_within(&self, mut ino: u64, ancestor: u64) -> bool {
        loop {
            if ino == ancestor {
                return true;
            }
            if ino == ROOT {
                return false;
            }
            match self.nodes.get(&ino) {
                Some(n) => ino = n.parent,
                None => return false,
            }
        }
    }

    /// Number of subdirectories (for a directory's link count).
    pub fn subdirs(&self, ino: u64) -> u32 {
        self.children(ino)
            .map(|c| {
                c.values()
                    .filter(|i| matches!(self.nodes.get(i).map(|n| &n.kind), Some(Kind::Dir(_))))
                    .count() as u32
            })
            .unwrap_or(0)
    }

    /// All files, for committing at unmount.
    pub fn files(&self) -> Vec<Arc<Mutex<FileNode>>> {
        self.nodes
            .values()
            .filter_map(|n| match &n.kind {
                Kind::File(f) => Some(f.clone()),
                _ => None,
            })
            .collect()
    }
}
