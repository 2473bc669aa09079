//! The filesystem core: every operation as a method returning `FsResult`.
//! The FUSE adapter (`fs::fuse`) only decodes requests and sends replies.
//!
//! Locking: the namespace is one `RwLock<Tree>`; each file has its own
//! mutex. The tree lock is always taken before a file's, never after, and
//! data reads and writes take only the file's.

use std::ffi::OsStr;
use std::fs;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use dashmap::DashMap;
use fuser::{FileAttr, FileType};
use parking_lot::{Mutex, RwLock};

use crate::error::{enoent, FsError, FsResult, IoContext};
use crate::layout::manifest::Attrs;
use crate::pipeline::prefetch::Prefetcher;
use crate::pipeline::Pipeline;
use crate::store::durable::DurableStore;
use crate::store::namespace::{At, Entry, Namespace, Removal, Retired};
use crate::store::upstream::Upstream;

use super::attr::{from_time, fuse_attr, now_ns};
use super::control::{self, ControlHandle};
use super::file::FileNode;
use super::io_mode::{BackingToken, Choice, IoPath, Passthrough, PassthroughUse};
use super::ns_index::{self, entry_of, names_of};
use super::tree::{Kind, Tree, ROOT};
use crate::store::dir_names::RESERVED;

/// An open file.
pub struct Handle {
    pub ino: u64,
    /// The file's name at open, for per-file profiles.
    pub label: Arc<str>,
    /// The process that opened it: only its close commits (a forked child
    /// that execs closes inherited descriptors, which must not publish a
    /// half-written file).
    pub pid: u32,
    pub file: Arc<Mutex<FileNode>>,
    pub writable: bool,
    /// Read-ahead of this handle's sequential reads.
    pub prefetch: Arc<Prefetcher>,
    /// How the kernel serves this open.
    pub path: IoPath,
}

/// How the FUSE adapter answers an open.
pub enum OpenReply {
    /// Through the kernel's page cache; `keep_cache` keeps what it holds.
    Cached { keep_cache: bool },
    /// Every read and write reaches the daemon.
    Direct,
    /// Kernel passthrough to the registered backing file.
    Passthrough(BackingToken),
}

/// What a read gave.
pub enum ReadReply {
    /// The bytes are in the caller's buffer.
    Filled,
    /// The bytes are a slice of a cached chunk, sent as they are.
    Shared(bytes::Bytes),
}

/// Registers a backing file with the kernel for passthrough.
pub type RegisterBacking<'a> = &'a dyn Fn(&fs::File) -> std::io::Result<BackingToken>;

/// Opens of each kind since the mount started.
#[derive(Default)]
pub struct OpenCounts {
    pub cached: AtomicU64,
    pub direct: AtomicU64,
    pub passthrough: AtomicU64,
    pub passthrough_failed: AtomicU64,
}

/// The POSIX core: every operation of the mount as a method returning an
/// errno-carrying result, over the in-memory tree, its files and the
/// namespace that records them (`fs/fuse.rs` only decodes and replies).
pub struct CkptFs {
    pub pipe: Arc<Pipeline>,
    pub tree: RwLock<Tree>,
    /// The record of the names; the core changes names only through it.
    ns: Box<dyn Namespace>,
    handles: DashMap<u64, Handle>,
    next_fh: AtomicU64,
    /// Where each unlinked-but-open file's home waits.
    orphans: DashMap<u64, Retired>,
    controls: DashMap<u64, ControlHandle>,
    started_ns: i64,
    /// What kernel passthrough this mount uses (the config's choice, once
    /// the kernel granted it at init).
    passthrough: parking_lot::RwLock<(PassthroughUse, String)>,
    pub opens: OpenCounts,
    /// A copy of the packed database that `fsync` waits for (a writer
    /// mount of `s3://…`).
    upstream: std::sync::OnceLock<Arc<dyn Upstream>>,
}

/// Time fields a setattr may change.
pub struct SetTimes {
    pub atime: Option<i64>,
    pub mtime: Option<i64>,
}

fn name_check(name: &OsStr) -> FsResult<()> {
    if name.len() > 255 {
        return Err(FsError::new(libc::ENAMETOOLONG, "name too long"));
    }
    Ok(())
}

fn file_kind(mode: u32) -> FileType {
    match mode & libc::S_IFMT {
        libc::S_IFDIR => FileType::Directory,
        libc::S_IFLNK => FileType::Symlink,
        libc::S_IFIFO => FileType::NamedPipe,
        libc::S_IFSOCK => FileType::Socket,
        libc::S_IFCHR => FileType::CharDevice,
        libc::S_IFBLK => FileType::BlockDevice,
        _ => FileType::RegularFile,
    }
}

impl CkptFs {
    /// The core over a loaded tree and the namespace that keeps it (both
    /// from `Tree::load`).
    pub fn new(pipe: Arc<Pipeline>, tree: Tree, ns: Box<dyn Namespace>) -> FsResult<Self> {
        Ok(CkptFs {
            pipe,
            tree: RwLock::new(tree),
            ns,
            handles: DashMap::new(),
            next_fh: AtomicU64::new(1),
            orphans: DashMap::new(),
            controls: DashMap::new(),
            started_ns: now_ns(),
            passthrough: parking_lot::RwLock::new((
                PassthroughUse::Off,
                "not negotiated with the kernel yet".into(),
            )),
            opens: OpenCounts::default(),
            upstream: std::sync::OnceLock::new(),
        })
    }

    /// Makes `fsync` and `fsyncdir` wait for `up` (set once, at mount).
    pub fn set_upstream(&self, up: Arc<dyn Upstream>) {
        let _ = self.upstream.set(up);
    }

    /// What the upstream copy reports of itself (`None`: there is none).
    pub fn upstream_status(&self) -> Option<serde_json::Value> {
        self.upstream.get().map(|up| up.status())
    }

    /// Waits for the upstream copy to hold the database's newest commit.
    fn sync_upstream(&self) -> FsResult<()> {
        let Some(up) = self.upstream.get() else {
            return Ok(());
        };
        let db = self.tree.read().db.clone();
        match db {
            Some(db) => up.sync(db.generation()),
            None => Ok(()),
        }
    }

    fn attr_of(&self, tree: &Tree, ino: u64) -> FsResult<FileAttr> {
        let node = tree.get(ino)?;
        Ok(match &node.kind {
            Kind::File(f) => {
                // 0 when unlinked while open: it lives on with no name.
                let nlink = tree.nlink(ino);
                let mut f = f.lock();
                // Passthrough writers change size and times unseen.
                f.refresh_from_kernel()?;
                let a = f.attrs;
                fuse_attr(
                    ino,
                    FileType::RegularFile,
                    f.size,
                    a.mode,
                    nlink,
                    a.uid,
                    a.gid,
                    a.atime_ns,
                    a.mtime_ns,
                    a.ctime_ns,
                )
            }
            Kind::Dir(_) => {
                let a = node.attrs;
                fuse_attr(
                    ino,
                    FileType::Directory,
                    4096,
                    a.mode,
                    2 + tree.subdirs(ino),
                    a.uid,
                    a.gid,
                    a.atime_ns,
                    a.mtime_ns,
                    a.ctime_ns,
                )
            }
            Kind::Symlink(t) => {
                let a = node.attrs;
                fuse_attr(
                    ino,
                    FileType::Symlink,
                    t.as_os_str().len() as u64,
                    a.mode,
                    tree.nlink(ino),
                    a.uid,
                    a.gid,
                    a.atime_ns,
                    a.mtime_ns,
                    a.ctime_ns,
                )
            }
            Kind::Special(rdev) => {
                let a = node.attrs;
                let mut attr = fuse_attr(
                    ino,
                    file_kind(a.mode),
                    0,
                    a.mode,
                    tree.nlink(ino),
                    a.uid,
                    a.gid,
                    a.atime_ns,
                    a.mtime_ns,
                    a.ctime_ns,
                );
                attr.rdev = *rdev as u32;
                attr
            }
        })
    }

    /// stat(2) of a node.
    pub fn getattr(&self, ino: u64) -> FsResult<FileAttr> {
        if control::is_control(ino) {
            return Ok(control::attr(ino, self.started_ns));
        }
        let tree = self.tree.read();
        self.attr_of(&tree, ino)
    }

    /// The node named `name` in `parent` (ENOENT if none).
    pub fn lookup(&self, parent: u64, name: &OsStr) -> FsResult<FileAttr> {
        // A name no entry can have: ENAMETOOLONG, as POSIX asks, not ENOENT.
        name_check(name)?;
        if parent == ROOT && name == RESERVED {
            return Ok(control::attr(control::DIR, self.started_ns));
        }
        if parent == control::DIR {
            let ino = control::lookup(name).ok_or_else(|| enoent("no such control file"))?;
            return Ok(control::attr(ino, self.started_ns));
        }
        let tree = self.tree.read();
        let ino = tree.lookup(parent, name)?;
        self.attr_of(&tree, ino)
    }

    /// A directory's entries changed: its mtime and ctime move.
    fn touch_dir(&self, tree: &mut Tree, ino: u64) {
        if let Ok(n) = tree.get_mut(ino) {
            let now = now_ns();
            n.attrs.mtime_ns = now;
            n.attrs.ctime_ns = now;
        }
        self.record_attrs(tree, ino);
    }

    /// Records the attributes a non-file node has now under all its names
    /// (files keep theirs in their manifest; the root has no name). Only
    /// the catalog keeps times of directories, so nothing on disk changes
    /// and a failure is logged.
    fn record_attrs(&self, tree: &Tree, ino: u64) {
        if ino == ROOT || !self.ns.keeps_times() {
            return;
        }
        let recorded = entry_of(tree, ino).and_then(|entry| {
            if matches!(entry, Entry::File { .. }) {
                return Ok(());
            }
            self.ns
                .set_attrs(&names_of(tree, ino)?, &entry, false, false)
        });
        if let Err(e) = recorded {
            tracing::warn!("record attributes: {e}");
        }
    }

    fn check_new(tree: &Tree, parent: u64, name: &OsStr) -> FsResult<()> {
        name_check(name)?;
        if parent == ROOT && name == RESERVED {
            return Err(FsError::new(libc::EEXIST, "reserved name"));
        }
        if tree.children(parent)?.contains_key(name) {
            return Err(FsError::new(libc::EEXIST, "exists"));
        }
        Ok(())
    }

    /// mkdir(2): a new directory, recorded by the namespace before it shows.
    pub fn mkdir(
        &self,
        parent: u64,
        name: &OsStr,
        mode: u32,
        uid: u32,
        gid: u32,
    ) -> FsResult<FileAttr> {
        let mut tree = self.tree.write();
        Self::check_new(&tree, parent, name)?;
        let at = ns_index::at(&tree, parent, name)?;
        let attrs = Attrs::new(libc::S_IFDIR | (mode & 0o7777), uid, gid, now_ns());
        self.ns.create_dir(&at, &attrs)?;
        let ino = tree.insert(parent, name, Kind::Dir(Default::default()), attrs);
        self.touch_dir(&mut tree, parent);
        self.attr_of(&tree, ino)
    }

    /// Creates a regular file and returns its attributes.
    pub fn mknod_file(
        &self,
        parent: u64,
        name: &OsStr,
        mode: u32,
        uid: u32,
        gid: u32,
    ) -> FsResult<FileAttr> {
        let mut tree = self.tree.write();
        Self::check_new(&tree, parent, name)?;
        let at = ns_index::at(&tree, parent, name)?;
        let attrs = Attrs::new(libc::S_IFREG | (mode & 0o7777), uid, gid, now_ns());
        let id = super::file::new_id();
        let packed = tree.packed_for_new();
        let ino = tree.peek_ino();
        let mut made = None;
        self.ns.create_file(&at, &id, &mut |home| {
            let store = match &packed {
                Some(db) => DurableStore::open_packed(home, db.clone(), &id),
                None => DurableStore::open(home),
            }
            .ctx("open file dir")?;
            let file = FileNode::create(
                Arc::new(store),
                id.clone(),
                ino,
                &name.to_string_lossy(),
                attrs,
            )?;
            made = Some(file);
            Ok(())
        })?;
        let file = made.ok_or_else(|| FsError::new(libc::EIO, "create: no file was built"))?;
        let ino = tree.insert(parent, name, Kind::File(Arc::new(Mutex::new(file))), attrs);
        self.touch_dir(&mut tree, parent);
        self.attr_of(&tree, ino)
    }

    /// symlink(2).
    pub fn symlink(
        &self,
        parent: u64,
        name: &OsStr,
        target: &Path,
        uid: u32,
        gid: u32,
    ) -> FsResult<FileAttr> {
        let mut tree = self.tree.write();
        Self::check_new(&tree, parent, name)?;
        let at = ns_index::at(&tree, parent, name)?;
        let attrs = Attrs::new(libc::S_IFLNK | 0o777, uid, gid, now_ns());
        self.ns.create_symlink(&at, target, &attrs)?;
        let ino = tree.insert(parent, name, Kind::Symlink(target.to_path_buf()), attrs);
        self.touch_dir(&mut tree, parent);
        self.attr_of(&tree, ino)
    }

    /// Creates a fifo, socket or device node (`mode` carries its type).
    #[allow(clippy::too_many_arguments)]
    pub fn mknod_special(
        &self,
        parent: u64,
        name: &OsStr,
        mode: u32,
        rdev: u64,
        uid: u32,
        gid: u32,
    ) -> FsResult<FileAttr> {
        let kind = mode & libc::S_IFMT;
        if !matches!(
            kind,
            libc::S_IFIFO | libc::S_IFSOCK | libc::S_IFCHR | libc::S_IFBLK
        ) {
            return Err(FsError::new(libc::EINVAL, "unsupported node type"));
        }
        let mut tree = self.tree.write();
        Self::check_new(&tree, parent, name)?;
        let at = ns_index::at(&tree, parent, name)?;
        let attrs = Attrs::new(kind | (mode & 0o7777), uid, gid, now_ns());
        self.ns.create_special(&at, &attrs, rdev)?;
        let ino = tree.insert(parent, name, Kind::Special(rdev), attrs);
        self.touch_dir(&mut tree, parent);
        self.attr_of(&tree, ino)
    }

    /// A symlink's target.
    pub fn readlink(&self, ino: u64) -> FsResult<Vec<u8>> {
        use std::os::unix::ffi::OsStrExt;
        let tree = self.tree.read();
        match &tree.get(ino)?.kind {
            Kind::Symlink(t) => Ok(t.as_os_str().as_bytes().to_vec()),
            _ => Err(FsError::new(libc::EINVAL, "not a symlink")),
        }
    }

    /// Removes the last name of a node; files still open keep their home
    /// until their last close.
    fn discard_node(&self, tree: &mut Tree, ino: u64, at: &At) -> FsResult<()> {
        let file = match tree.get(ino).map(|n| &n.kind) {
            Ok(Kind::File(f)) => Some(f.clone()),
            _ => None,
        };
        let how = if file.is_some() {
            Removal::LastName
        } else {
            Removal::Node
        };
        let retired = self.ns.remove_name(at, how)?;
        let is_open = file.as_ref().is_some_and(|f| f.lock().open_count > 0);
        if let Some(retired) = retired {
            if is_open {
                self.orphans.insert(ino, retired);
            } else {
                if let Some(f) = &file {
                    f.lock().store.destroy();
                }
                self.ns.purge(retired);
            }
        }
        if !is_open {
            tree.nodes.remove(&ino);
        } else if let Ok(n) = tree.get_mut(ino) {
            n.attrs.ctime_ns = now_ns();
        }
        Ok(())
    }

    /// unlink(2): a file open elsewhere lives on, nameless, until its last close.
    pub fn unlink(&self, parent: u64, name: &OsStr) -> FsResult<()> {
        let mut tree = self.tree.write();
        let ino = tree.lookup(parent, name)?;
        if matches!(tree.get(ino)?.kind, Kind::Dir(_)) {
            return Err(FsError::new(libc::EISDIR, "is a directory"));
        }
        let at = ns_index::at(&tree, parent, name)?;
        self.remove_name(&mut tree, ino, parent, name, &at)?;
        tree.unlink(parent, name);
        self.touch_dir(&mut tree, parent);
        Ok(())
    }

    /// Removes the name `(parent, name)` of a non-directory node, found in
    /// the namespace at `at`; the node goes with its last name.
    fn remove_name(
        &self,
        tree: &mut Tree,
        ino: u64,
        parent: u64,
        name: &OsStr,
        at: &At,
    ) -> FsResult<()> {
        if tree.nlink(ino) <= 1 {
            return self.discard_node(tree, ino, at);
        }
        let now = now_ns();
        let file = match &tree.get(ino)?.kind {
            Kind::File(f) => Some(f.clone()),
            _ => None,
        };
        if let Some(f) = file {
            let heir = if tree.is_first_name(ino, parent, name) {
                let (p2, n2) = tree.get(ino)?.links[0].clone();
                Some((ns_index::at(tree, p2, &n2)?, n2))
            } else {
                None
            };
            self.ns.remove_name(
                at,
                Removal::FurtherName {
                    heir: heir.as_ref().map(|(a, _)| a),
                },
            )?;
            let mut f = f.lock();
            if let Some((_, n2)) = heir {
                f.name = n2.to_string_lossy().into_owned();
            }
            f.attrs.ctime_ns = now;
        } else {
            self.ns.remove_name(at, Removal::Node)?;
            tree.get_mut(ino)?.attrs.ctime_ns = now;
        }
        tree.drop_name(ino, parent, name);
        self.record_attrs(tree, ino);
        Ok(())
    }

    /// Gives `ino` a further name (`link(2)`), durable on return: a crash
    /// leaves both names or the old one alone.
    pub fn link(&self, ino: u64, newparent: u64, newname: &OsStr) -> FsResult<FileAttr> {
        if control::is_control(ino) {
            return Err(FsError::new(libc::EPERM, "control file"));
        }
        let mut tree = self.tree.write();
        Self::check_new(&tree, newparent, newname)?;
        if tree.nlink(ino) == 0 {
            return Err(enoent("the file has no name left"));
        }
        let at = ns_index::at(&tree, newparent, newname)?;
        let now = now_ns();
        match &tree.get(ino)?.kind {
            Kind::Dir(_) => return Err(FsError::new(libc::EPERM, "hard link to a directory")),
            Kind::File(f) => {
                let id = f.lock().manifest().id.clone();
                self.ns.link_file(&at, &id)?;
                f.lock().attrs.ctime_ns = now;
            }
            Kind::Symlink(_) | Kind::Special(_) => {
                let entry = ns_index::entry_with_node(&tree, ino, Some(ino))?;
                self.ns
                    .link_node(&ns_index::at_node(&tree, ino)?, &at, &entry)?;
                tree.get_mut(ino)?.attrs.ctime_ns = now;
            }
        }
        tree.add_name(ino, newparent, newname);
        self.record_attrs(&tree, ino);
        self.touch_dir(&mut tree, newparent);
        self.attr_of(&tree, ino)
    }

    /// rmdir(2) of an empty directory.
    pub fn rmdir(&self, parent: u64, name: &OsStr) -> FsResult<()> {
        let mut tree = self.tree.write();
        let ino = tree.lookup(parent, name)?;
        match &tree.get(ino)?.kind {
            Kind::Dir(c) if !c.is_empty() => {
                return Err(FsError::new(libc::ENOTEMPTY, "directory not empty"))
            }
            Kind::Dir(_) => {}
            _ => return Err(FsError::new(libc::ENOTDIR, "not a directory")),
        }
        self.ns.remove_dir(&ns_index::at(&tree, parent, name)?)?;
        tree.unlink(parent, name);
        tree.nodes.remove(&ino);
        tree.forget_dir(ino);
        self.touch_dir(&mut tree, parent);
        Ok(())
    }

    /// rename(2) and renameat2(2) (`RENAME_NOREPLACE`, `RENAME_EXCHANGE`):
    /// atomic, and durable on return.
    pub fn rename(
        &self,
        parent: u64,
        name: &OsStr,
        newparent: u64,
        newname: &OsStr,
        flags: u32,
    ) -> FsResult<()> {
        name_check(newname)?;
        // Publishing by rename (write a temp file, rename it over the old
        // one, then close) must not let a crash leave the name on the temp
        // file's last committed state (empty): commit it first, as ext4
        // flushes a file renamed over another.
        let replacing = {
            let tree = self.tree.read();
            let src = tree.lookup(parent, name)?;
            let dst = tree.children(newparent)?.get(newname).copied();
            match &tree.get(src)?.kind {
                Kind::File(f) if dst.is_some_and(|d| d != src) => Some(f.clone()),
                _ => None,
            }
        };
        if let Some(f) = replacing {
            f.lock().commit(&self.pipe)?;
        }
        let mut tree = self.tree.write();
        let src = tree.lookup(parent, name)?;
        if newparent == ROOT && newname == RESERVED {
            return Err(FsError::new(libc::EPERM, "reserved name"));
        }
        tree.children(newparent)?;
        let src_is_dir = matches!(tree.get(src)?.kind, Kind::Dir(_));
        if src_is_dir && tree.is_within(newparent, src) {
            return Err(FsError::new(
                libc::EINVAL,
                "cannot move a directory into itself",
            ));
        }
        let dst = tree.children(newparent)?.get(newname).copied();
        let from = ns_index::at(&tree, parent, name)?;
        let to = ns_index::at(&tree, newparent, newname)?;
        let exchange = flags & libc::RENAME_EXCHANGE != 0;
        if flags & libc::RENAME_NOREPLACE != 0 && dst.is_some() {
            return Err(FsError::new(libc::EEXIST, "target exists"));
        }
        if dst == Some(src) {
            return Ok(());
        }
        if exchange {
            let dst = dst.ok_or_else(|| enoent("exchange target"))?;
            let dst_is_dir = matches!(tree.get(dst)?.kind, Kind::Dir(_));
            if dst_is_dir && tree.is_within(parent, dst) {
                return Err(FsError::new(
                    libc::EINVAL,
                    "cannot move a directory into itself",
                ));
            }
            self.ns.exchange(&from, &to)?;
            Self::rename_file_node(&tree, src, newname);
            Self::rename_file_node(&tree, dst, name);
            tree.unlink(parent, name);
            tree.unlink(newparent, newname);
            Self::relink(&mut tree, src, (parent, name), (newparent, newname));
            Self::relink(&mut tree, dst, (newparent, newname), (parent, name));
        } else {
            if let Some(dst) = dst {
                let dst_is_dir = matches!(tree.get(dst)?.kind, Kind::Dir(_));
                match (src_is_dir, dst_is_dir) {
                    (true, false) => {
                        return Err(FsError::new(libc::ENOTDIR, "target is not a directory"))
                    }
                    (false, true) => {
                        return Err(FsError::new(libc::EISDIR, "target is a directory"))
                    }
                    (true, true) if !tree.children(dst)?.is_empty() => {
                        return Err(FsError::new(libc::ENOTEMPTY, "target directory not empty"))
                    }
                    _ => {}
                }
                // Swap atomically, then retire the old target from its new
                // place: the target name never goes missing.
                self.ns.exchange(&from, &to)?;
                Self::rename_file_node(&tree, src, newname);
                if dst_is_dir {
                    self.ns.remove_dir(&from)?;
                    tree.nodes.remove(&dst);
                    tree.forget_dir(dst);
                } else {
                    // The target loses this name; with others it lives on.
                    self.remove_name(&mut tree, dst, newparent, newname, &from)?;
                }
                tree.unlink(newparent, newname);
                tree.unlink(parent, name);
                Self::relink(&mut tree, src, (parent, name), (newparent, newname));
            } else {
                self.ns.rename(&from, &to)?;
                Self::rename_file_node(&tree, src, newname);
                tree.unlink(parent, name);
                Self::relink(&mut tree, src, (parent, name), (newparent, newname));
            }
        }
        if let Ok(n) = tree.get_mut(src) {
            n.attrs.ctime_ns = now_ns();
        }
        self.record_attrs(&tree, src);
        if let Ok(Kind::File(f)) = tree.get(src).map(|n| &n.kind) {
            f.lock().attrs.ctime_ns = now_ns();
        }
        self.touch_dir(&mut tree, parent);
        self.touch_dir(&mut tree, newparent);
        // Checkpoint tools publish by rename: make it durable.
        self.ns.sync_names(&[&to, &from])
    }

    fn rename_file_node(tree: &Tree, ino: u64, name: &OsStr) {
        if let Ok(Kind::File(f)) = tree.get(ino).map(|n| &n.kind) {
            f.lock().name = name.to_string_lossy().into_owned();
        }
    }

    /// Moves the name `from` of `ino` to `(parent, name)`.
    fn relink(tree: &mut Tree, ino: u64, from: (u64, &OsStr), (parent, name): (u64, &OsStr)) {
        tree.rename_name(ino, from, (parent, name));
        if let Ok(super::tree::Node {
            kind: Kind::Dir(c), ..
        }) = tree.get_mut(parent)
        {
            c.insert(name.to_os_string(), ino);
        }
    }

    /// Applies a setattr.
    #[allow(clippy::too_many_arguments)]
    pub fn setattr(
        &self,
        ino: u64,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        times: SetTimes,
    ) -> FsResult<FileAttr> {
        let now = now_ns();
        let file = {
            let mut tree = self.tree.write();
            match &tree.get(ino)?.kind {
                Kind::File(f) => Some(f.clone()),
                Kind::Dir(_) | Kind::Symlink(_) | Kind::Special(_) => {
                    if size.is_some() {
                        return Err(FsError::new(libc::EISDIR, "truncate of a directory"));
                    }
                    let mut a = tree.get(ino)?.attrs;
                    if let Some(m) = mode {
                        a.mode = (a.mode & libc::S_IFMT) | (m & 0o7777);
                    }
                    a.uid = uid.unwrap_or(a.uid);
                    a.gid = gid.unwrap_or(a.gid);
                    a.atime_ns = times.atime.unwrap_or(a.atime_ns);
                    a.mtime_ns = times.mtime.unwrap_or(a.mtime_ns);
                    a.ctime_ns = now;
                    let names = names_of(&tree, ino)?;
                    let entry = match entry_of(&tree, ino)? {
                        Entry::Dir { .. } => Entry::Dir { attrs: a },
                        Entry::Symlink { target, node, .. } => Entry::Symlink {
                            target,
                            attrs: a,
                            node,
                        },
                        Entry::Special { rdev, node, .. } => Entry::Special {
                            rdev,
                            attrs: a,
                            node,
                        },
                        e @ Entry::File { .. } => e,
                    };
                    let chown = uid.is_some() || gid.is_some();
                    self.ns.set_attrs(&names, &entry, mode.is_some(), chown)?;
                    tree.get_mut(ino)?.attrs = a;
                    None
                }
            }
        };
        if let Some(f) = file {
            let mut f = f.lock();
            if let Some(s) = size {
                f.truncate(&self.pipe, s)?;
            }
            let mut a = f.attrs;
            if let Some(m) = mode {
                a.mode = (a.mode & libc::S_IFMT) | (m & 0o7777);
            }
            a.uid = uid.unwrap_or(a.uid);
            a.gid = gid.unwrap_or(a.gid);
            if let Some(t) = times.atime {
                a.atime_ns = t;
            }
            if let Some(t) = times.mtime {
                a.mtime_ns = t;
            }
            a.ctime_ns = now;
            if mode.is_some()
                || uid.is_some()
                || gid.is_some()
                || times.atime.is_some()
                || times.mtime.is_some()
            {
                f.set_attrs(&self.pipe, a)?;
            }
        }
        self.getattr(ino)
    }

    fn file_of(&self, ino: u64) -> FsResult<Arc<Mutex<FileNode>>> {
        let tree = self.tree.read();
        match &tree.get(ino)?.kind {
            Kind::File(f) => Ok(f.clone()),
            Kind::Dir(_) => Err(FsError::new(libc::EISDIR, "is a directory")),
            Kind::Symlink(_) => Err(FsError::new(libc::ELOOP, "is a symlink")),
            // The kernel opens fifos and device nodes itself.
            Kind::Special(_) => Err(FsError::new(libc::ENXIO, "not a regular file")),
        }
    }

    /// Sets what passthrough the mount uses, and why (after FUSE init).
    pub fn set_passthrough(&self, use_: PassthroughUse, why: impl Into<String>) {
        *self.passthrough.write() = (use_, why.into());
    }

    /// The passthrough in use and why, for stats and the profile.
    pub fn passthrough(&self) -> (PassthroughUse, String) {
        self.passthrough.read().clone()
    }

    /// Opens a file: its handle number and how the kernel is to serve it.
    /// `register` registers a backing file for kernel passthrough.
    pub fn open(
        &self,
        ino: u64,
        flags: i32,
        pid: u32,
        register: RegisterBacking,
    ) -> FsResult<(u64, OpenReply)> {
        if control::is_control(ino) {
            return Ok((self.open_control(ino, flags)?, OpenReply::Direct));
        }
        let file = self.file_of(ino)?;
        let acc = flags & libc::O_ACCMODE;
        let writable = acc == libc::O_WRONLY || acc == libc::O_RDWR;
        let lossless = self.pipe.config.layout.dtype == crate::config::StoredDtype::Keep;
        let allow = self.passthrough.read().0;
        let (label, path, reply) = {
            let mut f = file.lock();
            let plain = if allow == PassthroughUse::Off {
                None
            } else {
                f.plain_state(&self.pipe)?
            };
            let choice =
                f.io.choose(plain.as_ref().map(|(s, _)| *s), writable, allow);
            let (path, reply) = match (choice, &plain) {
                (Choice::Register, Some((state, data))) => match register(data) {
                    Ok(token) => {
                        f.io.passthrough = Some(Passthrough {
                            gen: state.gen,
                            id: token.clone(),
                            opens: 1,
                            writers: u32::from(writable),
                        });
                        (IoPath::Passthrough, OpenReply::Passthrough(token))
                    }
                    Err(e) => {
                        // The kernel refused (a stacked backing filesystem,
                        // say): serve this open through the daemon.
                        tracing::debug!("passthrough registration failed: {e}");
                        self.opens
                            .passthrough_failed
                            .fetch_add(1, Ordering::Relaxed);
                        f.io.cached += 1;
                        (IoPath::Cached, OpenReply::Cached { keep_cache: false })
                    }
                },
                (Choice::Join { copy_aside }, _) => {
                    if copy_aside {
                        f.copy_aside(&self.pipe)?;
                    }
                    match f.io.passthrough.as_mut() {
                        Some(pt) => {
                            pt.opens += 1;
                            pt.writers += u32::from(writable);
                            (IoPath::Passthrough, OpenReply::Passthrough(pt.id.clone()))
                        }
                        None => return Err(FsError::new(libc::EIO, "passthrough state vanished")),
                    }
                }
                _ if !writable
                    && plain.is_none()
                    && self.pipe.config.io.read_mode == crate::config::ReadMode::Direct =>
                {
                    f.io.direct += 1;
                    (IoPath::Direct, OpenReply::Direct)
                }
                // A save: its bytes go straight to the daemon. Pages other
                // opens cached are dropped by the kernel where written, and
                // by the next cached open.
                _ if acc == libc::O_WRONLY
                    && plain.is_none()
                    && self.pipe.config.io.write_mode == crate::config::WriteMode::Direct =>
                {
                    f.io.direct += 1;
                    f.page_cache_stale = true;
                    (IoPath::Direct, OpenReply::Direct)
                }
                _ => {
                    f.io.cached += 1;
                    // Every change goes through this mount, so pages the
                    // kernel cached stay valid across opens (fast mmap
                    // loads) — unless passthrough or direct writes bypassed
                    // them, or the layout is lossy (a reopen must see the
                    // rounded values, not the pages the writer left).
                    let keep_cache = lossless && !f.page_cache_stale;
                    f.page_cache_stale = false;
                    (IoPath::Cached, OpenReply::Cached { keep_cache })
                }
            };
            if path == IoPath::Passthrough {
                f.begin_shared();
                if writable {
                    f.begin_kernel_writes();
                }
            }
            f.open_count += 1;
            (Arc::<str>::from(f.name.as_str()), path, reply)
        };
        let counter = match path {
            IoPath::Cached => &self.opens.cached,
            IoPath::Direct => &self.opens.direct,
            IoPath::Passthrough => &self.opens.passthrough,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        let fh = self.next_fh.fetch_add(1, Ordering::Relaxed);
        self.handles.insert(
            fh,
            Handle {
                ino,
                label,
                pid: process_of(pid),
                file,
                writable,
                prefetch: Arc::default(),
                path,
            },
        );
        Ok((fh, reply))
    }

    fn open_control(&self, ino: u64, flags: i32) -> FsResult<u64> {
        if flags & libc::O_ACCMODE != libc::O_RDONLY {
            return Err(FsError::new(libc::EACCES, "control files are read-only"));
        }
        let profiler = &self.pipe.profiler;
        let handle = match ino {
            control::STATS => {
                let mut doc = profiler.snapshot();
                doc["memory_budget"] = serde_json::json!({
                    "limit": self.pipe.budget.limit(),
                    "used": self.pipe.budget.used(),
                    "peak": self.pipe.budget.peak(),
                    "waits": self.pipe.budget.waits(),
                });
                doc["io_paths"] = self.io_paths_json();
                doc["daemon_pid"] = serde_json::json!(std::process::id());
                if let Some(p) = self.upstream_status() {
                    doc["publish"] = p;
                }
                doc["cache"] = serde_json::json!({
                    "bytes": self.pipe.cache.bytes(),
                    "pinned_bytes": self.pipe.cache.pinned_bytes(),
                    "hits": self.pipe.cache.hits.load(Ordering::Relaxed),
                    "misses": self.pipe.cache.misses.load(Ordering::Relaxed),
                });
                let mut b = serde_json::to_vec_pretty(&doc).unwrap_or_default();
                b.push(b'\n');
                ControlHandle::Snapshot(b)
            }
            control::CONFIG => {
                let mut b =
                    serde_json::to_vec_pretty(&self.pipe.config.to_json()).unwrap_or_default();
                b.push(b'\n');
                ControlHandle::Snapshot(b)
            }
            control::ACCESSLOG => ControlHandle::Log(profiler.accesslog.attach()),
            _ => return Err(FsError::new(libc::EISDIR, "is a directory")),
        };
        let fh = self.next_fh.fetch_add(1, Ordering::Relaxed);
        self.controls.insert(fh, handle);
        Ok(fh)
    }

    /// Which paths the kernel used for opens: passthrough bytes never reach
    /// the daemon, so only their opens are counted.
    pub fn io_paths_json(&self) -> serde_json::Value {
        let (use_, why) = self.passthrough();
        let n = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let (reused, allocated) = self.pipe.buffers.counts();
        serde_json::json!({
            "passthrough": use_,
            "passthrough_note": why,
            "opens_passthrough": n(&self.opens.passthrough),
            "opens_passthrough_refused": n(&self.opens.passthrough_failed),
            "opens_direct": n(&self.opens.direct),
            "opens_cached": n(&self.opens.cached),
            "buffers_reused": reused,
            "buffers_allocated": allocated,
            "buffers_retained_bytes": self.pipe.buffers.retained(),
        })
    }

    /// Whether `ino` is the control directory `.ckptfs` or one of its files.
    pub fn is_control(&self, ino: u64) -> bool {
        control::is_control(ino)
    }

    /// The name a handle's file had when opened.
    pub fn handle_label(&self, fh: u64) -> Option<Arc<str>> {
        self.handles.get(&fh).map(|h| h.label.clone())
    }

    fn handle_file(&self, fh: u64) -> FsResult<(u64, Arc<Mutex<FileNode>>)> {
        self.handles
            .get(&fh)
            .map(|h| (h.ino, h.file.clone()))
            .ok_or_else(|| FsError::new(libc::EBADF, format!("no handle {fh}")))
    }

    /// Reads up to `size` bytes at `offset` into `out` (its length is what
    /// the read returns). `out` is the caller's reusable buffer: the fast
    /// paths overwrite it without zeroing first.
    pub fn read(&self, fh: u64, offset: u64, size: u32, out: &mut Vec<u8>) -> FsResult<()> {
        if let ReadReply::Shared(b) = self.read_reply(fh, offset, size, out)? {
            out.clear();
            out.extend_from_slice(&b);
        }
        Ok(())
    }

    /// `read`, answered from a cached chunk without a copy where the bytes
    /// lie in one (`ReadReply::Shared`), else into `out`.
    pub fn read_reply(
        &self,
        fh: u64,
        offset: u64,
        size: u32,
        out: &mut Vec<u8>,
    ) -> FsResult<ReadReply> {
        if let Some(c) = self.controls.get(&fh) {
            *out = c.read(offset, size);
            return Ok(ReadReply::Filled);
        }
        let (file, prefetch) = self
            .handles
            .get(&fh)
            .map(|h| (h.file.clone(), h.prefetch.clone()))
            .ok_or_else(|| FsError::new(libc::EBADF, format!("no handle {fh}")))?;
        let mut f = file.lock();
        f.refresh_from_kernel()?;
        if let Some((data, len)) = f.plain_reader() {
            drop(f);
            let n = (size as u64).min(len.saturating_sub(offset)) as usize;
            out.resize(n, 0);
            // Past the data file's end (a truncate-up hole) reads zeros.
            let got = crate::pipeline::plain::read_full(&data, offset, out)?;
            out[got..].fill(0);
            return Ok(ReadReply::Filled);
        }
        if let Some((reader, len)) = f.sealed_reader(&self.pipe)? {
            // Chunk loads of committed data run unlocked, so the kernel's
            // parallel read-ahead requests proceed in parallel.
            drop(f);
            let n = (size as u64).min(len.saturating_sub(offset)) as usize;
            if n == 0 {
                out.clear();
                return Ok(ReadReply::Filled);
            }
            prefetch.on_read(&self.pipe, &reader, offset, n as u64, len);
            // On an object store a chunk loaded alone costs a round trip:
            // the request's chunks not yet loading (queued read-ahead
            // included) come in one batch. Locally a chunk costs a pread
            // and loading chunk by chunk measured no slower.
            if self.pipe.remote_store {
                crate::pipeline::prefetch::load_request(&self.pipe, &reader, offset, n as u64);
            }
            // A rewrite committed meanwhile may have removed the chunks
            // this reader knew: on an error, read again, under the lock,
            // what is now.
            match reader.read_shared(&self.pipe, offset, n) {
                Ok(Some(b)) => return Ok(ReadReply::Shared(b)),
                Ok(None) => {
                    out.resize(n, 0);
                    match reader.read(&self.pipe, offset, out) {
                        Ok(()) => return Ok(ReadReply::Filled),
                        Err(_) => f = file.lock(),
                    }
                }
                Err(_) => f = file.lock(),
            }
        }
        *out = f.read(&self.pipe, offset, size as usize)?;
        Ok(ReadReply::Filled)
    }

    /// pwrite(2) through an open handle; returns the bytes taken.
    pub fn write(&self, fh: u64, offset: u64, data: &[u8]) -> FsResult<u32> {
        let (_, file) = self.handle_file(fh)?;
        let mut f = file.lock();
        f.write(&self.pipe, offset, data)?;
        Ok(data.len() as u32)
    }

    /// close(2) of a descriptor by the process that opened it commits, so
    /// the closing tool sees any error (a release error would be invisible)
    /// — unless that process still writes the file through another
    /// descriptor, whose close commits then (TensorStore opens each chunk's
    /// lock file twice and closes one at once: one commit, not two).
    pub fn flush(&self, fh: u64, pid: u32) -> FsResult<()> {
        if self.controls.contains_key(&fh) {
            return Ok(());
        }
        let (opener, ino, file) = match self.handles.get(&fh) {
            Some(h) => (h.pid, h.ino, h.file.clone()),
            None => return Err(FsError::new(libc::EBADF, format!("no handle {fh}"))),
        };
        if opener != process_of(pid) {
            return Ok(());
        }
        let writes_on = self
            .handles
            .iter()
            .any(|h| *h.key() != fh && h.ino == ino && h.pid == opener && h.writable);
        if writes_on {
            return Ok(());
        }
        let mut f = file.lock();
        f.commit(&self.pipe)
    }

    /// fsync(2): commits the file (and waits for an upstream copy, if any).
    pub fn fsync(&self, fh: u64) -> FsResult<()> {
        if self.controls.contains_key(&fh) {
            return Ok(());
        }
        let (_, file) = self.handle_file(fh)?;
        file.lock().fsync(&self.pipe)?;
        self.sync_upstream()
    }

    /// fsync of a directory: the names in it become durable. Files still
    /// pending keep them with their last committed content (POSIX: the
    /// entry survives, its unsynced data need not); the backing directory
    /// is synced so the entries themselves reach the disk.
    pub fn fsyncdir(&self, ino: u64) -> FsResult<()> {
        // The control directory holds nothing to make durable; tools that
        // fsync every directory of a tree (extractors, `sync -f`) reach it.
        if control::is_control(ino) {
            return Ok(());
        }
        let (files, at) = {
            let tree = self.tree.read();
            let files: Vec<_> = tree
                .children(ino)?
                .values()
                .filter_map(|c| match tree.get(*c).map(|n| &n.kind) {
                    Ok(Kind::File(f)) => Some(f.clone()),
                    _ => None,
                })
                .collect();
            (files, ns_index::at_node(&tree, ino)?)
        };
        for f in files {
            f.lock().make_name_durable()?;
        }
        self.ns.sync_dir(&at)?;
        self.sync_upstream()
    }

    /// The last close of a handle: the file's last handle commits it, and an
    /// unlinked file goes with it.
    pub fn release(&self, fh: u64) -> FsResult<()> {
        if let Some((_, c)) = self.controls.remove(&fh) {
            if let ControlHandle::Log(r) = c {
                self.pipe.profiler.accesslog.detach(&r);
            }
            return Ok(());
        }
        let Some((_, h)) = self.handles.remove(&fh) else {
            return Ok(());
        };
        h.prefetch.release(&self.pipe);
        let mut f = h.file.lock();
        if h.path == IoPath::Passthrough && h.writable {
            // Take in the kernel's last writes while they are still ours.
            f.refresh_from_kernel()?;
        }
        if f.io.close(h.path, h.writable) {
            f.end_shared();
        }
        f.open_count = f.open_count.saturating_sub(1);
        if f.open_count > 0 {
            return Ok(());
        }
        if let Some((_, home)) = self.orphans.remove(&h.ino) {
            // Unlinked while open: its data goes with the last close.
            f.abandon();
            f.store.destroy();
            drop(f);
            self.ns.purge(home);
            self.tree.write().nodes.remove(&h.ino);
            return Ok(());
        }
        let result = f.commit(&self.pipe);
        if result.is_ok() {
            f.release_buffers();
        }
        result
    }

    /// Directory entries from `offset` on: (ino, next offset, kind, name).
    pub fn readdir(
        &self,
        ino: u64,
        offset: u64,
    ) -> FsResult<Vec<(u64, u64, FileType, std::ffi::OsString)>> {
        if ino == control::DIR {
            let mut all = vec![
                (control::DIR, FileType::Directory, ".".into()),
                (ROOT, FileType::Directory, "..".into()),
            ];
            for (name, i) in control::ENTRIES {
                all.push((i, FileType::RegularFile, name.into()));
            }
            return Ok(all
                .into_iter()
                .enumerate()
                .skip(offset as usize)
                .map(|(i, (ino, kind, name))| (ino, i as u64 + 1, kind, name))
                .collect());
        }
        let tree = self.tree.read();
        let children = tree.children(ino)?;
        let parent = tree.get(ino)?.parent;
        let mut all = vec![
            (ino, FileType::Directory, ".".into()),
            (parent, FileType::Directory, "..".into()),
        ];
        if ino == ROOT {
            // A dot-name: `ls` shows it only with -a.
            all.push((control::DIR, FileType::Directory, RESERVED.into()));
        }
        for (name, child) in children {
            let kind = match tree.get(*child) {
                Ok(n) if matches!(n.kind, Kind::Dir(_)) => FileType::Directory,
                Ok(n) if matches!(n.kind, Kind::Symlink(_)) => FileType::Symlink,
                Ok(n) if matches!(n.kind, Kind::Special(_)) => file_kind(n.attrs.mode),
                _ => FileType::RegularFile,
            };
            all.push((*child, kind, name.clone()));
        }
        Ok(all
            .into_iter()
            .enumerate()
            .skip(offset as usize)
            .map(|(i, (ino, kind, name))| (ino, i as u64 + 1, kind, name))
            .collect())
    }

    /// The attributes a directory listing (`readdirplus`) gives an entry.
    pub fn attr_for_entry(&self, ino: u64) -> FsResult<FileAttr> {
        self.getattr(ino)
    }

    /// statfs(2): the namespace's store figures.
    pub fn statfs(&self) -> FsResult<nix::sys::statvfs::Statvfs> {
        self.ns.statfs()
    }

    /// Commits every file (unmount).
    pub fn commit_all(&self) -> usize {
        let files = self.tree.read().files();
        let mut failed = 0;
        // Attribute changes noted beside manifests: one flush for them all.
        let mut noted = None;
        for f in files {
            let mut f = f.lock();
            if let Err(e) = f.commit(&self.pipe) {
                tracing::error!("commit at unmount failed: {e}");
                failed += 1;
            }
            match f.take_unsynced_attrs(&self.pipe) {
                Ok(true) => noted = Some(f.store.clone()),
                Ok(false) => {}
                Err(e) => {
                    tracing::error!("commit of attribute changes at unmount failed: {e}");
                    failed += 1;
                }
            }
        }
        if let Some(store) = noted {
            if let Err(e) = store.barrier() {
                tracing::error!("flush of attribute changes at unmount failed: {e}");
                failed += 1;
            }
        }
        // Deletions since the last file commit (files removed) become durable.
        let db = self.tree.read().db.clone();
        if let Some(db) = db.filter(|db| !db.is_read_only()) {
            if let Err(e) = db.commit() {
                tracing::error!("packed index commit at unmount failed: {e}");
                failed += 1;
            }
        }
        failed
    }

    /// The file type a mode's `S_IFMT` bits name.
    pub fn kind_of_mode(mode: u32) -> FileType {
        file_kind(mode)
    }

    /// A time to set, as nanoseconds since the epoch.
    pub fn times_from(t: Option<std::time::SystemTime>) -> Option<i64> {
        t.map(from_time)
    }
}

/// The process (thread group) of a FUSE request's thread id, so that a
/// close from any thread of the opening process counts as the opener's.
pub fn process_of(tid: u32) -> u32 {
    std::fs::read_to_string(format!("/proc/{tid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Tgid:"))
                .and_then(|v| v.trim().parse().ok())
        })
        .unwrap_or(tid)
}
