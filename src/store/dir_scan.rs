//! Loading the names of a backing directory tree (`DirNamespace::scan`),
//! and recovering from a crash on the way: what a crash left half made is
//! removed before anything is open.
//!
//! A directory holding a group `zarr.json` is a directory; one holding a
//! file manifest is a file's home; one holding a link record is a further
//! name of a file; symlinks and special nodes are themselves.

use std::collections::{HashMap, HashSet};
use std::ffi::OsString;
use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use super::attrs_xattr;
use super::dir_names::{fd_path, from_backing, is_packed_root_entry, LONG_PATH, RESERVED};
use super::durable::is_temp;
use super::namespace::{FoundFile, FoundNode, Recovery, ScanVisitor};
use crate::error::{FsResult, IoContext};
use crate::layout::manifest::{read_node, Attrs, NodeDoc, ZARR_JSON};

/// The attributes of a backing entry.
pub fn attrs_of(meta: &fs::Metadata) -> Attrs {
    Attrs {
        mode: meta.mode(),
        uid: meta.uid(),
        gid: meta.gid(),
        atime_ns: meta.atime() * 1_000_000_000 + meta.atime_nsec(),
        mtime_ns: meta.mtime() * 1_000_000_000 + meta.mtime_nsec(),
        ctime_ns: meta.ctime() * 1_000_000_000 + meta.ctime_nsec(),
    }
}

pub(super) fn remove_any(path: &Path) {
    let _ = fs::remove_dir_all(path).or_else(|_| fs::remove_file(path));
}

/// Removes everything in the home of the file `m` but its manifest and
/// live array (a packed file's arrays are in the database); returns how
/// many entries went.
pub(super) fn tidy_home(
    dir: &Path,
    m: &crate::layout::manifest::FileManifest,
) -> std::io::Result<u64> {
    let live = if m.generation == 0 || m.packed {
        String::new()
    } else {
        format!("g{}", m.generation)
    };
    clean_home(dir, &live)
}

/// Removes everything in a file's home but its manifest and live array;
/// returns how many entries went.
fn clean_home(dir: &Path, live: &str) -> std::io::Result<u64> {
    let mut removed = 0;
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        if name == ZARR_JSON || name == live {
            continue;
        }
        remove_any(&entry.path());
        removed += 1;
    }
    Ok(removed)
}

/// Where a link record is, to remove it after the walk: its path, or for
/// one in a directory reached below an open descriptor (past `LONG_PATH`)
/// its directory held open and its backing name.
enum Record {
    Path(PathBuf),
    Below(fs::File, OsString),
}

/// One walk of a backing tree.
pub(super) struct Walk<'a> {
    visit: &'a mut dyn ScanVisitor,
    recover: bool,
    rec: Recovery,
    /// Ids of the files found (their further names are kept).
    files: HashSet<String>,
    /// Link records: parent, name, file id, and where the record is.
    links: Vec<(u64, OsString, String, Record)>,
    /// Symlinks and special nodes with several backing names: their
    /// number by backing (device, inode).
    multi: HashMap<(u64, u64), u64>,
}

impl<'a> Walk<'a> {
    /// A walk reporting to `visit`, removing what a crash left if `recover`.
    pub fn new(visit: &'a mut dyn ScanVisitor, recover: bool) -> Self {
        Walk {
            visit,
            recover,
            rec: Recovery::default(),
            files: HashSet::new(),
            links: Vec::new(),
            multi: HashMap::new(),
        }
    }

    fn remove(&mut self, path: &Path) {
        if self.recover {
            remove_any(path);
            self.rec.removed += 1;
        }
    }

    /// Walks `dir` (the root when `at_root`), whose entries get `parent`.
    pub fn dir(&mut self, dir: &Path, parent: u64, at_root: bool) -> FsResult<()> {
        self.walk(dir, parent, at_root, false)
    }

    /// `below`: `dir` is reached through a descriptor the caller holds
    /// only for the call.
    fn walk(&mut self, dir: &Path, parent: u64, at_root: bool, below: bool) -> FsResult<()> {
        let entries = fs::read_dir(dir).ctx(format!("read {}", dir.display()))?;
        for entry in entries {
            let entry = entry.ctx("read dir entry")?;
            let bname = entry.file_name();
            let path = entry.path();
            if at_root && (bname == RESERVED || is_packed_root_entry(&bname)) {
                continue;
            }
            let meta = fs::symlink_metadata(&path).ctx(format!("stat {}", path.display()))?;
            let ft = meta.file_type();
            if ft.is_file() {
                // Ours: the group document, or a temp file a crash left.
                if bname != ZARR_JSON {
                    self.remove(&path);
                }
                continue;
            }
            if is_temp(&bname.to_string_lossy()) {
                self.remove(&path);
                continue;
            }
            let name = from_backing(&bname);
            let special =
                ft.is_fifo() || ft.is_socket() || ft.is_block_device() || ft.is_char_device();
            if ft.is_symlink() || special {
                let node = (meta.nlink() > 1).then(|| {
                    let n = self.multi.len() as u64 + 1;
                    *self.multi.entry((meta.dev(), meta.ino())).or_insert(n)
                });
                let found = if ft.is_symlink() {
                    FoundNode::Symlink {
                        target: fs::read_link(&path).ctx("readlink")?,
                        attrs: attrs_of(&meta),
                    }
                } else {
                    FoundNode::Special {
                        rdev: meta.rdev(),
                        attrs: attrs_of(&meta),
                    }
                };
                self.visit.node(parent, &name, found, node);
                continue;
            }
            if !ft.is_dir() {
                continue;
            }
            match read_node(&path) {
                NodeDoc::File(m) if m.pending => {
                    // Created, never committed: a crash interrupted its
                    // first save, and it was promised to be absent.
                    self.remove(&path);
                }
                NodeDoc::File(m) => {
                    if self.recover {
                        self.rec.removed += tidy_home(&path, &m).ctx("clean file dir")?;
                    }
                    self.files.insert(m.id.clone());
                    self.rec.files += 1;
                    let noted = attrs_xattr::read(&path);
                    self.visit.file(
                        parent,
                        &name,
                        FoundFile {
                            home: Some(&path),
                            manifest: m,
                            noted,
                            attrs: attrs_of(&meta),
                        },
                    )?;
                }
                NodeDoc::Link(id) => {
                    let at = if !below {
                        Record::Path(path.clone())
                    } else {
                        Record::Below(
                            fs::File::open(dir).ctx(format!("open {}", dir.display()))?,
                            bname.clone(),
                        )
                    };
                    self.links.push((parent, name, id, at));
                }
                NodeDoc::Dir | NodeDoc::Unknown => {
                    self.rec.dirs += 1;
                    let child = self.visit.dir(parent, &name, attrs_of(&meta));
                    if path.as_os_str().len() > LONG_PATH {
                        // Deep: go on below an open descriptor of it.
                        let anchor =
                            fs::File::open(&path).ctx(format!("open {}", path.display()))?;
                        self.walk(&fd_path(&anchor), child, false, true)?;
                    } else {
                        self.walk(&path, child, false, below)?;
                    }
                }
            }
        }
        Ok(())
    }

    /// Gives each link record's name to its file. A record whose file is
    /// gone (its last other name was removed, or a crash cut the first
    /// save short) is removed when recovering.
    pub fn finish(mut self) -> Recovery {
        for (parent, name, id, at) in std::mem::take(&mut self.links) {
            if self.files.contains(&id) {
                self.visit.link(parent, &name, &id);
                continue;
            }
            match at {
                Record::Path(path) => self.remove(&path),
                Record::Below(dir, bname) => self.remove(&fd_path(&dir).join(bname)),
            }
        }
        self.rec
    }
}

#[cfg(test)]
mod tests {
    use std::ffi::OsStr;
    use std::path::PathBuf;

    use super::*;
    use crate::layout::manifest::{dir_group_json, link_group_json, FileLayout, FileManifest};
    use crate::store::dir_namespace::DirNamespace;
    use crate::store::namespace::{FoundFile, FoundNode, Namespace, Node};

    /// Writes down what a scan reports, one line per name, by path.
    struct Seen {
        lines: Vec<String>,
        paths: std::collections::HashMap<u64, String>,
    }

    impl Seen {
        fn path(&self, parent: u64, name: &OsStr) -> String {
            let dir = self.paths.get(&parent).cloned().unwrap_or_default();
            format!("{dir}/{}", name.to_string_lossy())
        }
    }

    impl ScanVisitor for Seen {
        fn dir(&mut self, parent: u64, name: &OsStr, _attrs: Attrs) -> u64 {
            let path = self.path(parent, name);
            let n = self.paths.len() as u64 + 1;
            self.lines.push(format!("dir {path}"));
            self.paths.insert(n, path);
            n
        }
        fn file(&mut self, parent: u64, name: &OsStr, found: FoundFile) -> FsResult<()> {
            let home = found.home.map(|h| h.join(ZARR_JSON).exists());
            self.lines.push(format!(
                "file {} id {} gen {} home {home:?}",
                self.path(parent, name),
                found.manifest.id,
                found.manifest.generation
            ));
            Ok(())
        }
        fn link(&mut self, parent: u64, name: &OsStr, id: &str) {
            let line = format!("link {} -> {id}", self.path(parent, name));
            self.lines.push(line);
        }
        fn node(&mut self, parent: u64, name: &OsStr, found: FoundNode, node: Node) {
            let what = match found {
                FoundNode::Symlink { target, .. } => format!("symlink to {}", target.display()),
                FoundNode::Special { .. } => "special".to_string(),
            };
            let line = format!("{what} {} node {node:?}", self.path(parent, name));
            self.lines.push(line);
        }
    }

    fn manifest(id: &str, generation: u64, pending: bool) -> Vec<u8> {
        let m = FileManifest {
            kind: "file".into(),
            id: id.into(),
            generation,
            commit: generation,
            size: 3,
            attrs: Attrs::new(0o100644, 0, 0, 0),
            layout: FileLayout {
                kind: crate::layout::manifest::LayoutKind::Bytes,
                chunk_bytes: 4096,
                codec: "none".into(),
            },
            array: format!("g{generation}"),
            chunks: vec![Some(1)],
            packed: false,
            pending,
            format: None,
            segments: Vec::new(),
            inline: None,
        };
        m.to_group_json().expect("manifest")
    }

    /// A backing tree as a crash can leave it: a stale generation and a
    /// staging file in a file's home, a file never committed, a link
    /// record whose file is gone, temp entries, a stray file.
    fn crashed_tree() -> (tempfile::TempDir, PathBuf) {
        let tmp = tempfile::tempdir().expect("tmp");
        let root = tmp.path().join("backing");
        let mk = |p: &str| fs::create_dir_all(root.join(p)).expect("mkdir");
        let put = |p: &str, b: &[u8]| fs::write(root.join(p), b).expect("write");
        mk(".ckptfs/trash");
        put("zarr.json", &dir_group_json("root"));
        mk("a");
        put("a/zarr.json", &dir_group_json("dir"));
        mk("a/f/g1/c");
        mk("a/f/g2/c");
        put("a/f/zarr.json", &manifest("f1", 2, false));
        put("a/f/g3.staging", b"x");
        mk("a/p");
        put("a/p/zarr.json", &manifest("p1", 1, true));
        mk("a/l");
        put("a/l/zarr.json", &link_group_json("f1"));
        mk("a/gone");
        put("a/gone/zarr.json", &link_group_json("nobody"));
        mk("a/n.ckptfs-tmp.1.2");
        put("a/junk", b"stray");
        // A link record whose file is gone, past LONG_PATH: reached below
        // an open directory.
        let deep = deep();
        mk(&format!("{deep}/gone"));
        put(
            &format!("{deep}/gone/zarr.json"),
            &link_group_json("nobody"),
        );
        std::os::unix::fs::symlink("a/f", root.join("s1")).expect("symlink");
        fs::hard_link(root.join("s1"), root.join("s2")).expect("link symlink");
        (tmp, root)
    }

    /// 16 directories of 200-byte names below `deep`: past `LONG_PATH`.
    fn deep() -> String {
        let mut p = "deep".to_string();
        for _ in 0..16 {
            p.push('/');
            p.push_str(&"d".repeat(200));
        }
        p
    }

    fn scan(root: &Path, recover: bool) -> (Vec<String>, Recovery) {
        let ns = DirNamespace::new(root, root.join(".ckptfs/trash"), recover).expect("ns");
        let mut seen = Seen {
            lines: Vec::new(),
            paths: std::collections::HashMap::from([(1, String::new())]),
        };
        let rec = ns.scan(&mut seen, 1, recover).expect("scan");
        // The deep chain's 17 directories are counted, not listed.
        let deep = format!("dir /{}", deep());
        let mut lines: Vec<String> = seen
            .lines
            .into_iter()
            .filter(|l| !(l.starts_with("dir /deep") && deep.starts_with(l.as_str())))
            .collect();
        lines.sort();
        (lines, rec)
    }

    #[test]
    fn a_scan_reports_every_name_and_recovery_removes_what_a_crash_left() {
        let (_tmp, root) = crashed_tree();
        let want = [
            "dir /a",
            "file /a/f id f1 gen 2 home Some(true)",
            "link /a/l -> f1",
            "symlink to a/f /s1 node Some(1)",
            "symlink to a/f /s2 node Some(1)",
        ];
        // What a crash left: g1 and g3.staging, the pending file, two
        // dangling link records (one deep), the temp entry, a stray file.
        let deep_gone = format!("{}/gone", deep());
        let left = [
            "a/p",
            "a/gone",
            deep_gone.as_str(),
            "a/junk",
            "a/n.ckptfs-tmp.1.2",
            "a/f/g1",
            "a/f/g3.staging",
        ];
        // Without recovery nothing changes on disk, and the same names show.
        let (lines, rec) = scan(&root, false);
        assert_eq!(lines, want);
        assert_eq!(rec.removed, 0);
        for p in left {
            assert!(
                root.join(p).exists(),
                "{p} removed by a scan without recovery"
            );
        }
        let (lines, rec) = scan(&root, true);
        assert_eq!(lines, want);
        assert_eq!((rec.files, rec.dirs), (1, 18));
        assert_eq!(rec.removed, 7, "{rec:?}");
        for p in left {
            assert!(!root.join(p).exists(), "{p} left by recovery");
        }
        for p in [
            "a/f/g2",
            "a/f/zarr.json",
            "a/l",
            "s1",
            "s2",
            ".ckptfs/trash",
        ] {
            assert!(root.join(p).exists(), "{p} removed by recovery");
        }
    }
}
