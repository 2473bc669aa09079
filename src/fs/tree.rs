//! The namespace: inodes, directories and their children, loaded at mount
//! by a scan of the namespace's record (which is also when a crash is
//! recovered from: half-made entries and unreferenced generations are
//! removed).

use std::collections::{BTreeMap, HashMap};
use std::ffi::{OsStr, OsString};
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::Mutex;

use crate::error::{enoent, FsError, FsResult, IoContext};
use crate::layout::manifest::{parse_node, Attrs, FileManifest, NodeDoc, ZARR_JSON};
use crate::ocdbt::Db;
use crate::store::dir_names::{fd_path, is_packed_root_entry, to_backing_in, LONG_PATH, RESERVED};
use crate::store::dir_namespace::DirNamespace;
use crate::store::dir_scan::attrs_of;
use crate::store::durable::DurableStore;
use crate::store::namespace::{
    FoundFile, FoundNode, Mirrored, Namespace, Node as Shared, ScanVisitor,
};
use crate::store::ns_catalog::Catalog;
use crate::store::ns_live::{self, LiveCatalog};

use super::file::FileNode;

pub use crate::store::namespace::Recovery;

/// The root directory's inode number.
pub const ROOT: u64 = 1;

/// What a node is.
pub enum Kind {
    Dir(BTreeMap<OsString, u64>),
    File(Arc<Mutex<FileNode>>),
    Symlink(PathBuf),
    /// A fifo, socket or device node (`mknod`), kept as a node of the same
    /// type in the backing dir; the value is its device number.
    Special(u64),
}

/// One inode of the tree.
pub struct Node {
    /// The node's first name. A file's backing directory (its manifest
    /// and data, the *home*) always sits at this name.
    pub parent: u64,
    pub name: OsString,
    /// Further names (hard links). For a file each is a link record that
    /// names the file's id; fifos, sockets, devices and symlinks are hard
    /// links of one backing node.
    pub links: Vec<(u64, OsString)>,
    pub kind: Kind,
    pub attrs: Attrs,
}

/// Every inode of the mount, and what the tree was loaded from.
pub struct Tree {
    pub nodes: HashMap<u64, Node>,
    next_ino: u64,
    pub backing: PathBuf,
    /// The packed database at the backing root, if there is one.
    pub db: Option<Arc<Db>>,
    /// New files put their arrays in `db` (`layout.index = "packed"`).
    pub pack_new: bool,
    /// Nothing on disk may change (`ckptfs mount --read-only`).
    frozen: bool,
    /// Open directories that anchor long paths (see `LONG_PATH`), by inode.
    anchors: Mutex<HashMap<u64, fs::File>>,
    /// Names are backing paths (the backing directory tree is the record;
    /// not where the packed catalog is).
    pub backing_names: bool,
}

/// Builds the tree from what a scan finds.
struct Loader<'a> {
    tree: &'a mut Tree,
    /// Packed files' ids, with their generation and manifest document.
    live: HashMap<String, (u64, Vec<u8>)>,
    /// Each file's inode by its id (to give it its further names).
    by_id: HashMap<String, u64>,
    /// Symlinks and special nodes with several names, by their number.
    shared: HashMap<u64, u64>,
}

impl ScanVisitor for Loader<'_> {
    fn root(&mut self, attrs: Attrs) {
        if let Ok(root) = self.tree.get_mut(ROOT) {
            root.attrs = attrs;
        }
    }

    fn dir(&mut self, parent: u64, name: &OsStr, attrs: Attrs) -> u64 {
        self.tree
            .insert(parent, name, Kind::Dir(BTreeMap::new()), attrs)
    }

    fn file(&mut self, parent: u64, name: &OsStr, found: FoundFile) -> FsResult<()> {
        let tree = &mut *self.tree;
        let Some((mut m, store)) = tree.open_file(found.home, found.manifest)? else {
            return Ok(());
        };
        // A version read from the database has no note.
        let from_home = found.home.is_some()
            && (!m.packed || tree.db.as_ref().is_some_and(|db| !db.is_read_only()));
        let noted = found.noted.filter(|_| from_home);
        if let Some(a) = noted {
            m.attrs = a;
        }
        if m.packed && !tree.read_only() {
            self.live
                .insert(m.id.clone(), (m.generation, m.to_group_json()?));
        }
        let ino = tree.peek_ino();
        self.by_id.insert(m.id.clone(), ino);
        let mut file = FileNode::load(Arc::new(store), ino, &name.to_string_lossy(), *m);
        if noted.is_some() {
            file.noted_attrs_found();
        }
        tree.insert(
            parent,
            name,
            Kind::File(Arc::new(Mutex::new(file))),
            found.attrs,
        );
        Ok(())
    }

    fn link(&mut self, parent: u64, name: &OsStr, id: &str) {
        if let Some(&ino) = self.by_id.get(id) {
            self.tree.add_name(ino, parent, name);
        }
    }

    fn node(&mut self, parent: u64, name: &OsStr, found: FoundNode, node: Shared) {
        if let Some(&ino) = node.and_then(|n| self.shared.get(&n)) {
            self.tree.add_name(ino, parent, name);
            return;
        }
        let ino = match found {
            FoundNode::Symlink { target, attrs } => {
                self.tree.insert(parent, name, Kind::Symlink(target), attrs)
            }
            FoundNode::Special { rdev, attrs } => {
                self.tree.insert(parent, name, Kind::Special(rdev), attrs)
            }
        };
        if let Some(n) = node {
            self.shared.insert(n, ino);
        }
    }
}

/// The namespace of a mount of `backing`, and whether names have backing
/// paths: the packed database's catalog where it is the live record (a
/// database made on an empty backing dir, see `ns_live`), else the backing
/// directory tree, followed by the catalog when `db` may be written.
/// Unless `read_only`, the trash is emptied (nothing is open yet).
pub fn namespace_of(
    backing: &Path,
    db: Option<Arc<Db>>,
    read_only: bool,
) -> FsResult<(Box<dyn Namespace>, bool)> {
    if let Some(db) = &db {
        let fresh = !db.is_read_only() && !read_only && !has_names(backing)? && {
            let catalog = Catalog::new(db.clone());
            !catalog.has_names()
        };
        if fresh && !ns_live::is_live(db) {
            ns_live::make_live(db)?;
        }
        if ns_live::is_live(db) {
            let live = LiveCatalog::new(backing, db.clone(), !read_only && !db.is_read_only())?;
            return Ok((Box::new(live), false));
        }
    }
    let trash = backing.join(RESERVED).join("trash");
    Ok((
        Box::new(Mirrored {
            record: DirNamespace::new(backing, trash, !read_only)?,
            mirror: db.filter(|_| !read_only).map(Catalog::new),
        }),
        true,
    ))
}

/// Whether the backing dir's tree holds any name of the mount.
fn has_names(backing: &Path) -> FsResult<bool> {
    for entry in fs::read_dir(backing).ctx(format!("read {}", backing.display()))? {
        let name = entry.ctx("read backing dir")?.file_name();
        if name != RESERVED && name != ZARR_JSON && !is_packed_root_entry(&name) {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Removes packed keys no file references (a deleted file's, or a
/// generation a crash left unpublished) and brings each file's copy of its
/// manifest in the database up to the one in its directory; commits if
/// anything changed. Returns how many key prefixes were removed.
fn recover_packed(db: &Db, live: &HashMap<String, (u64, Vec<u8>)>) -> FsResult<u64> {
    let fail = |e: crate::ocdbt::OcdbtError| FsError::new(libc::EIO, format!("packed index: {e}"));
    let mut doomed = std::collections::BTreeSet::new();
    // A seek per range rather than a pass over every key: the keys of one
    // generation (a chunk each, ~10^6 for a large checkpoint) are stepped
    // over at once. Every key under `P/` sorts before `P0` ('/' + 1).
    let past = |prefix: &[u8]| -> Vec<u8> { [prefix, b"0"].concat() };
    let mut at: Vec<u8> = Vec::new();
    while let Some(key) = db.first_key_from(&at) {
        let Some(slash) = key.iter().position(|&b| b == b'/') else {
            at = [key.as_slice(), &[0]].concat();
            continue;
        };
        let id = &key[..slash];
        // Only our own keys: a file id is 32 hex digits.
        let ours = id.len() == 32 && id.iter().all(|b| b.is_ascii_hexdigit());
        let id_text = String::from_utf8_lossy(id);
        match live.get(id_text.as_ref()).filter(|_| ours) {
            None => {
                if ours {
                    doomed.insert(format!("{id_text}/"));
                }
                at = past(id);
            }
            Some((gen, _)) => {
                let rest = &key[slash + 1..];
                match rest.iter().position(|&b| b == b'/') {
                    // A key of the file itself (its zarr.json).
                    None => at = [key.as_slice(), &[0]].concat(),
                    Some(end) => {
                        let first = String::from_utf8_lossy(&rest[..end]);
                        if first != format!("g{gen}") {
                            doomed.insert(format!("{id_text}/{first}/"));
                        }
                        at = past(&key[..slash + 1 + end]);
                    }
                }
            }
        }
    }
    let mut changed = !doomed.is_empty();
    for prefix in &doomed {
        db.delete_prefix(prefix.as_bytes()).map_err(fail)?;
    }
    for (id, (_, json)) in live {
        let key = format!("{id}/{ZARR_JSON}");
        let have = db.get(key.as_bytes()).map_err(fail)?;
        if have.as_deref() != Some(json.as_slice()) {
            db.put(key.as_bytes(), json).map_err(fail)?;
            changed = true;
        }
    }
    if changed {
        db.commit().map_err(fail)?;
    }
    Ok(doomed.len() as u64)
}

impl Tree {
    /// Loads the tree under `backing`, recovering from any interrupted work,
    /// and returns it with the namespace that keeps it from now on.
    ///
    /// With a read-only `db` (one version, `ckptfs mount --version N`)
    /// nothing is changed on disk, and the tree is that version's catalog
    /// (or, for a version older than the catalog, the backing dir's names
    /// with the manifests that version holds; files it does not hold are
    /// left out).
    ///
    /// With `frozen` (a read-only mount) nothing is changed on disk either:
    /// what a crash left is passed over, not removed.
    pub fn load(
        backing: &Path,
        db: Option<Arc<Db>>,
        pack_new: bool,
        frozen: bool,
    ) -> FsResult<(Self, Recovery, Box<dyn Namespace>)> {
        let meta = fs::metadata(backing).ctx(format!("backing dir {}", backing.display()))?;
        let mut tree = Tree {
            nodes: HashMap::new(),
            next_ino: ROOT + 1,
            backing: backing.to_path_buf(),
            db,
            pack_new,
            frozen,
            anchors: Mutex::new(HashMap::new()),
            backing_names: true,
        };
        tree.nodes.insert(
            ROOT,
            Node {
                parent: ROOT,
                name: OsString::new(),
                links: Vec::new(),
                kind: Kind::Dir(BTreeMap::new()),
                attrs: attrs_of(&meta),
            },
        );
        let (ns, backing_names) = namespace_of(backing, tree.db.clone(), tree.read_only())?;
        tree.backing_names = backing_names;
        if !backing_names && !tree.pack_new && !tree.read_only() {
            // A new file's name is durable with its commit, which only a
            // packed file's commit makes a commit of the database.
            tracing::info!(
                "{}: its names live in the packed index, so new files go into it too",
                backing.display()
            );
            tree.pack_new = true;
        }
        // A read-only mount shows the live tree, whose record is the
        // backing dir (files of the `files` index are in no version).
        let version = tree
            .db
            .clone()
            .filter(|db| db.is_read_only() && !frozen)
            .map(Catalog::new)
            .filter(Catalog::has_names);
        let recover = !tree.read_only();
        let mut loader = Loader {
            tree: &mut tree,
            live: HashMap::new(),
            by_id: HashMap::new(),
            shared: HashMap::new(),
        };
        let record: &dyn Namespace = match &version {
            Some(catalog) => catalog,
            None => ns.as_ref(),
        };
        let mut rec = record.scan(&mut loader, ROOT, recover)?;
        let live = std::mem::take(&mut loader.live);
        if let Some(db) = tree.ns_db() {
            rec.removed += recover_packed(&db, &live)?;
            // Also where the catalog is the record: each mount numbers the
            // symlinks and special nodes with several names afresh.
            if super::ns_index::reconcile(&tree, &db)? {
                db.commit().map_err(|e| {
                    FsError::new(
                        libc::EIO,
                        format!("packed index: commit of the namespace: {e}"),
                    )
                })?;
            }
        }
        Ok((tree, rec, ns))
    }

    /// Whether the tree may change nothing on disk (an old version, or a
    /// read-only mount).
    pub fn read_only(&self) -> bool {
        self.frozen || self.db.as_ref().is_some_and(|db| db.is_read_only())
    }

    /// The packed index whose namespace keys follow this tree (any
    /// writable one: see `ns_index`).
    pub fn ns_db(&self) -> Option<Arc<Db>> {
        self.db.clone().filter(|_| !self.read_only())
    }

    /// The database new files go into, if packed.
    pub fn packed_for_new(&self) -> Option<Arc<Db>> {
        self.db
            .clone()
            .filter(|_| self.pack_new && !self.read_only())
    }

    /// The manifest and store of a file found at `home` (`None`: a
    /// version's catalog, which keeps no homes); `None` when a version
    /// mount's database does not hold the file.
    fn open_file(
        &self,
        home: Option<&Path>,
        m: Box<FileManifest>,
    ) -> FsResult<Option<(Box<FileManifest>, DurableStore)>> {
        let at = home.unwrap_or(&self.backing);
        if !m.packed {
            let store = DurableStore::open(at).ctx(format!("open {}", at.display()))?;
            return Ok(Some((m, store)));
        }
        let Some(db) = &self.db else {
            return Err(FsError::new(
                libc::EIO,
                format!(
                    "{} keeps its data in the packed index, but {} has no {}",
                    at.display(),
                    self.backing.display(),
                    crate::ocdbt::db::MANIFEST_FILE
                ),
            ));
        };
        let m = if db.is_read_only() && home.is_some() {
            let key = format!("{}/{ZARR_JSON}", m.id);
            let doc = db.get(key.as_bytes()).map_err(|e| {
                FsError::new(libc::EIO, format!("read {key} from the packed index: {e}"))
            })?;
            match doc.as_deref().map(parse_node) {
                Some(NodeDoc::File(old)) => old,
                _ => return Ok(None),
            }
        } else {
            m
        };
        // A version's file without a home: its store's directory is only
        // an anchor (a deleted file has none); its keys are the database's.
        let store = DurableStore::open_packed(at, db.clone(), &m.id)
            .ctx(format!("open {}", at.display()))?;
        Ok(Some((m, store)))
    }

    /// Adds a further name of `ino` (a hard link) under `parent`.
    pub fn add_name(&mut self, ino: u64, parent: u64, name: &OsStr) {
        if let Some(Node {
            kind: Kind::Dir(children),
            ..
        }) = self.nodes.get_mut(&parent)
        {
            children.insert(name.to_os_string(), ino);
        }
        if let Some(n) = self.nodes.get_mut(&ino) {
            n.links.push((parent, name.to_os_string()));
        }
    }

    /// How many names `ino` has in the tree (its link count).
    pub fn nlink(&self, ino: u64) -> u32 {
        let Some(node) = self.nodes.get(&ino) else {
            return 0;
        };
        let first = self
            .children(node.parent)
            .is_ok_and(|c| c.get(&node.name) == Some(&ino));
        u32::from(first) + node.links.len() as u32
    }

    /// Whether `(parent, name)` is the first name of `ino` (for a file: the
    /// name its home directory sits at).
    pub fn is_first_name(&self, ino: u64, parent: u64, name: &OsStr) -> bool {
        self.nodes
            .get(&ino)
            .is_some_and(|n| n.parent == parent && n.name == name)
    }

    /// Records that the name `(parent, name)` of `ino` is now
    /// `(new_parent, new_name)` (the directories' entries are the caller's).
    pub fn rename_name(
        &mut self,
        ino: u64,
        (parent, name): (u64, &OsStr),
        (new_parent, new_name): (u64, &OsStr),
    ) {
        let Some(n) = self.nodes.get_mut(&ino) else {
            return;
        };
        if n.parent == parent && n.name == name {
            n.parent = new_parent;
            n.name = new_name.to_os_string();
        } else if let Some(l) = n
            .links
            .iter_mut()
            .find(|(p, l)| *p == parent && l.as_os_str() == name)
        {
            *l = (new_parent, new_name.to_os_string());
        }
    }

    /// Forgets the name `(parent, name)` of a node that keeps other names;
    /// when it was the first name, the node's first further name takes
    /// its place (the caller has moved a file's home there).
    pub fn drop_name(&mut self, ino: u64, parent: u64, name: &OsStr) {
        let Some(n) = self.nodes.get_mut(&ino) else {
            return;
        };
        if n.parent == parent && n.name == name {
            if !n.links.is_empty() {
                let (p, l) = n.links.remove(0);
                n.parent = p;
                n.name = l;
            }
        } else {
            n.links
                .retain(|(p, l)| !(*p == parent && l.as_os_str() == name));
        }
    }

    /// Adds a node under `parent` and returns its inode number.
    pub fn insert(&mut self, parent: u64, name: &OsStr, kind: Kind, attrs: Attrs) -> u64 {
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
                links: Vec::new(),
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

    /// The node `ino` (ENOENT if gone).
    pub fn get(&self, ino: u64) -> FsResult<&Node> {
        self.nodes
            .get(&ino)
            .ok_or_else(|| enoent(format!("inode {ino}")))
    }

    /// The node `ino`, to change (ENOENT if gone).
    pub fn get_mut(&mut self, ino: u64) -> FsResult<&mut Node> {
        self.nodes
            .get_mut(&ino)
            .ok_or_else(|| enoent(format!("inode {ino}")))
    }

    /// A directory's entries by name (ENOTDIR if `ino` is not one).
    pub fn children(&self, ino: u64) -> FsResult<&BTreeMap<OsString, u64>> {
        match &self.get(ino)?.kind {
            Kind::Dir(c) => Ok(c),
            _ => Err(crate::error::FsError::new(libc::ENOTDIR, "not a directory")),
        }
    }

    /// The inode named `name` in `parent` (ENOENT if none).
    pub fn lookup(&self, parent: u64, name: &OsStr) -> FsResult<u64> {
        self.children(parent)?
            .get(name)
            .copied()
            .ok_or_else(|| enoent(format!("{}", name.to_string_lossy())))
    }

    /// Backing path of a node (its first name's). A path longer than
    /// `LONG_PATH` starts at an open ancestor directory instead of the
    /// backing root; it stays valid while the tree does not drop that
    /// directory (the caller holds the tree's lock).
    pub fn path(&self, ino: u64) -> FsResult<PathBuf> {
        // (inode, backing name), from the node up to the root's child.
        let mut chain = Vec::new();
        let mut cur = ino;
        while cur != ROOT {
            let node = self.get(cur)?;
            chain.push((cur, to_backing_in(&node.name, node.parent == ROOT)));
            cur = node.parent;
        }
        let len: usize = chain.iter().map(|(_, p)| p.len() + 1).sum();
        if self.backing.as_os_str().len() + len <= LONG_PATH {
            let mut p = self.backing.clone();
            for (_, part) in chain.iter().rev() {
                p.push(part);
            }
            return Ok(p);
        }
        // The longest tail that stays well short, below an open directory.
        let mut tail = 0;
        let mut split = 0;
        for (_, part) in &chain {
            if split > 0 && tail + part.len() + 1 > LONG_PATH / 2 {
                break;
            }
            tail += part.len() + 1;
            split += 1;
        }
        let anchor = chain.get(split).map_or(ROOT, |(i, _)| *i);
        let mut p = self.anchor_path(anchor)?;
        for (_, part) in chain[..split].iter().rev() {
            p.push(part);
        }
        Ok(p)
    }

    /// `/proc/self/fd/N` of directory `ino`, opened on first use.
    fn anchor_path(&self, ino: u64) -> FsResult<PathBuf> {
        if ino == ROOT {
            return Ok(self.backing.clone());
        }
        if let Some(dir) = self.anchors.lock().get(&ino) {
            return Ok(fd_path(dir));
        }
        // Shorter than the path it anchors, so this ends.
        let path = self.path(ino)?;
        let dir = fs::File::open(&path).ctx(format!("open {}", path.display()))?;
        let p = fd_path(&dir);
        self.anchors.lock().insert(ino, dir);
        Ok(p)
    }

    /// Closes the anchor of a directory that is gone.
    pub fn forget_dir(&mut self, ino: u64) {
        self.anchors.get_mut().remove(&ino);
    }

    /// Backing path of the entry `name` in directory `parent`.
    pub fn child_path(&self, parent: u64, name: &OsStr) -> FsResult<PathBuf> {
        Ok(self.path(parent)?.join(to_backing_in(name, parent == ROOT)))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recovery_keeps_exactly_the_live_generation_of_each_live_file() {
        let dir = tempfile::tempdir_in(std::env::temp_dir()).expect("tempdir");
        let db = Db::open_or_create(dir.path(), Default::default()).expect("db");
        let live_id = "0123456789abcdef0123456789abcdef";
        let dead_id = "fedcba9876543210fedcba9876543210";
        let json = b"{\"live\":1}".to_vec();
        let keys = [
            // The live file at generation 1: "g1" is a prefix of "g10".
            format!("{live_id}/g1/c/0"),
            format!("{live_id}/g1/c/1"),
            format!("{live_id}/g10/c/0"),
            format!("{live_id}/g0/c/0"),
            format!("{live_id}/g2/c/0"),
            format!("{dead_id}/g1/c/0"),
            format!("{dead_id}/zarr.json"),
            // Not ours: names that are not file ids, and the namespace.
            "0123/g9/c/0".to_string(),
            ".ns/a".to_string(),
            "plain".to_string(),
        ];
        for k in &keys {
            db.put(k.as_bytes(), b"v").expect("put");
        }
        db.put(format!("{live_id}/{ZARR_JSON}").as_bytes(), b"old")
            .expect("put");
        db.commit().expect("commit");
        let live = HashMap::from([(live_id.to_string(), (1u64, json.clone()))]);
        let removed = recover_packed(&db, &live).expect("recover");
        let left: Vec<String> = db
            .list_prefix(b"")
            .into_iter()
            .map(|(k, _)| String::from_utf8(k).expect("utf-8"))
            .collect();
        let mut want = vec![
            format!("{live_id}/g1/c/0"),
            format!("{live_id}/g1/c/1"),
            format!("{live_id}/{ZARR_JSON}"),
            "0123/g9/c/0".to_string(),
            ".ns/a".to_string(),
            "plain".to_string(),
        ];
        want.sort();
        assert_eq!(left, want);
        // g10, g0, g2 of the live file, and the dead file.
        assert_eq!(removed, 4);
        let doc = db.get(format!("{live_id}/{ZARR_JSON}").as_bytes());
        assert_eq!(doc.expect("get").as_deref(), Some(json.as_slice()));
    }
}
