//! The packed database's catalog as the record of the live tree: every
//! name is a `.ns/` key of the database (see `ns_catalog`), and each file's
//! home (manifest, staging, attribute note) is a directory named by its id
//! in `BACKING/.ckptfs/homes`, so nothing in the backing dir is named after
//! a name in the mount. A rename is one change of keys, a hard link one
//! more key naming the file's id.
//!
//! Each change of names is one `Db::apply` (a commit holds all its keys or
//! none) and, but for a new file's name and new times, is committed before
//! it returns, as a local disk keeps a name change once the call returns:
//! a `kill -9` of the daemon loses none. A new file's name is in its first
//! commit (a file is pending until then); times go with the next commit.
//! The next mount removes the homes no committed name reaches (files
//! created since the last commit) and the names of files never committed.

use std::collections::HashSet;
use std::ffi::OsStr;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use ocdbt::{Change, Db};

use super::attrs_xattr;
use super::dir_names::RESERVED;
use super::dir_scan::{remove_any, tidy_home};
use super::durable::{temp_name, write_atomic};
use super::namespace::{At, Entry, FoundFile, Namespace, Recovery, Removal, Retired, ScanVisitor};
use super::ns_catalog::{fail, Catalog};
use super::trash::Trash;
use crate::error::{FsError, FsResult, IoContext};
use crate::layout::manifest::{parse_node, read_node, Attrs, NodeDoc, ZARR_JSON};

/// The key whose presence says the catalog is the record of the live tree
/// (a database made on an empty backing dir); without it the backing dir's
/// tree is, and the catalog follows it (`Mirrored`).
pub const LIVE_MARK: &[u8] = b".ns-live";

/// Where file homes are kept, under the backing dir.
pub fn homes_dir(backing: &Path) -> PathBuf {
    backing.join(RESERVED).join("homes")
}

/// Whether the catalog of `db` is the record of its live tree.
pub fn is_live(db: &Db) -> bool {
    db.get(LIVE_MARK).ok().flatten().is_some()
}

/// Makes the catalog of a new database the record of its live tree (the
/// caller checked that the backing dir holds no names). The mark goes
/// with the first commit (a writer to an object store publishes nothing
/// before it): a crash before it leaves a backing dir with no names, which
/// the next mount makes live again.
pub fn make_live(db: &Db) -> FsResult<()> {
    db.apply(&[Change::Put(LIVE_MARK.to_vec(), b"1".to_vec())])
        .map_err(fail)
}

/// The names of a backing dir whose catalog is the live record.
pub struct LiveCatalog {
    catalog: Catalog,
    backing: PathBuf,
    homes: PathBuf,
    trash: Trash,
    /// Homes may be made and removed (a mount that may write).
    writable: bool,
}

impl LiveCatalog {
    /// The live catalog of `db` at `backing`, its homes made if missing
    /// and its trash swept when `writable` (before anything is open).
    pub fn new(backing: &Path, db: Arc<Db>, writable: bool) -> FsResult<Self> {
        let homes = homes_dir(backing);
        if writable {
            fs::create_dir_all(&homes).ctx("create homes dir")?;
        }
        Ok(LiveCatalog {
            catalog: Catalog::new(db),
            backing: backing.to_path_buf(),
            homes,
            trash: Trash::new(backing.join(RESERVED).join("trash"), writable)?,
            writable,
        })
    }

    fn home(&self, id: &str) -> PathBuf {
        self.homes.join(id)
    }

    fn db(&self) -> &Arc<Db> {
        self.catalog.db()
    }

    /// The file `id`'s manifest as the database holds it, if committed.
    fn committed(&self, id: &str) -> FsResult<Option<Box<crate::layout::manifest::FileManifest>>> {
        let doc = self
            .db()
            .get(format!("{id}/{ZARR_JSON}").as_bytes())
            .map_err(fail)?;
        Ok(match doc.as_deref().map(parse_node) {
            Some(NodeDoc::File(m)) if !m.pending => Some(m),
            _ => None,
        })
    }

    /// Reports the file `id`'s first name; returns whether it is there.
    /// With `recover`, a file never committed is left out (its home goes
    /// with the other unreached homes), a home a crash left without its
    /// manifest is made again from the database's, and what a crash left in
    /// a home is removed.
    fn found_file(
        &self,
        visit: &mut dyn ScanVisitor,
        parent: u64,
        name: &OsStr,
        id: &str,
        recover: bool,
        rec: &mut Recovery,
    ) -> FsResult<bool> {
        let home = self.home(id);
        let m = match read_node(&home) {
            NodeDoc::File(m) if m.pending => return Ok(false),
            NodeDoc::File(m) => m,
            _ => {
                let Some(m) = self.committed(id)? else {
                    return Ok(false);
                };
                if !m.packed {
                    // Its data was in the home.
                    return Ok(false);
                }
                if recover {
                    fs::create_dir_all(&home).ctx("make a file's home again")?;
                    write_atomic(&home.join(ZARR_JSON), &m.to_group_json()?, true)
                        .ctx("make a file's home again")?;
                } else {
                    visit.file(parent, name, FoundFile::without_home(m))?;
                    return Ok(true);
                }
                m
            }
        };
        if recover {
            rec.removed += tidy_home(&home, &m).ctx("clean file home")?;
        }
        let noted = attrs_xattr::read(&home);
        let attrs = noted.unwrap_or(m.attrs);
        visit.file(
            parent,
            name,
            FoundFile {
                home: Some(&home),
                manifest: m,
                noted,
                attrs,
            },
        )?;
        Ok(true)
    }

    /// Removes every home no name reached (and temp entries); returns how
    /// many went.
    fn sweep_homes(&self, reached: &HashSet<String>) -> FsResult<u64> {
        let mut removed = 0;
        for entry in fs::read_dir(&self.homes).ctx("read homes dir")? {
            let entry = entry.ctx("read homes dir")?;
            let keep = entry
                .file_name()
                .to_str()
                .is_some_and(|n| reached.contains(n));
            if !keep {
                remove_any(&entry.path());
                removed += 1;
            }
        }
        Ok(removed)
    }

    /// Runs `op` (a home is made on the disk the database's data files
    /// fill), making room in the database on a full disk.
    fn with_room(&self, op: &mut dyn FnMut() -> FsResult<()>) -> FsResult<()> {
        let db = self.db();
        super::packed::with_room(
            &|drop_history| super::packed::make_room(db, drop_history),
            op,
        )
    }

    /// The id of the file named at `at`.
    fn file_id(&self, at: &At) -> FsResult<String> {
        match self.catalog.entry(&at.key)? {
            Some(Entry::File { id }) => Ok(id),
            _ => Err(FsError::new(
                libc::EIO,
                format!(
                    "namespace in the packed index: {} names no file",
                    String::from_utf8_lossy(&at.key)
                ),
            )),
        }
    }
}

impl Namespace for LiveCatalog {
    fn scan(&self, visit: &mut dyn ScanVisitor, root: u64, recover: bool) -> FsResult<Recovery> {
        let recover = recover && self.writable;
        let mut rec = Recovery::default();
        let mut reached = HashSet::new();
        let mut files = 0;
        let mut tidied = Recovery::default();
        let dropped =
            self.catalog
                .walk(visit, root, &mut rec, &mut |visit, parent, name, id| {
                    let there = self.found_file(visit, parent, name, id, recover, &mut tidied)?;
                    if there {
                        files += 1;
                        reached.insert(id.to_string());
                    }
                    Ok(there)
                })?;
        rec.files = files;
        rec.removed = tidied.removed;
        if recover {
            rec.removed += self.sweep_homes(&reached)?;
            if !dropped.is_empty() {
                rec.removed += dropped.len() as u64;
                let gone: Vec<Change> = dropped.into_iter().map(Change::Delete).collect();
                self.db().apply(&gone).map_err(fail)?;
                self.catalog.commit()?;
            }
        }
        Ok(rec)
    }

    fn create_dir(&self, at: &At, attrs: &Attrs) -> FsResult<()> {
        self.catalog.create_dir(at, attrs)?;
        self.catalog.commit()
    }

    /// The home is built under a temp name and renamed to the file's id; a
    /// crash before the name's commit leaves a home no name reaches, which
    /// the next mount removes.
    fn create_file(
        &self,
        at: &At,
        id: &str,
        build: &mut dyn FnMut(&Path) -> FsResult<()>,
    ) -> FsResult<()> {
        let home = self.home(id);
        self.with_room(&mut || {
            let tmp = temp_name(&home);
            fs::create_dir(&tmp).ctx("create file home")?;
            let made = build(&tmp)
                .and_then(|()| fs::rename(&tmp, &home).ctx("create file home"))
                .and_then(|()| self.catalog.link_file(at, id));
            if made.is_err() {
                let _ = fs::remove_dir_all(&tmp);
                let _ = fs::remove_dir_all(&home);
            }
            made
        })
    }

    fn create_symlink(&self, at: &At, target: &Path, attrs: &Attrs) -> FsResult<()> {
        self.catalog.create_symlink(at, target, attrs)?;
        self.catalog.commit()
    }

    fn create_special(&self, at: &At, attrs: &Attrs, rdev: u64) -> FsResult<()> {
        self.catalog.create_special(at, attrs, rdev)?;
        self.catalog.commit()
    }

    /// One key more, committed: both names or the old one alone.
    fn link_file(&self, at: &At, id: &str) -> FsResult<()> {
        self.catalog.link_file(at, id)?;
        self.catalog.commit()
    }

    fn link_node(&self, from: &At, at: &At, entry: &Entry) -> FsResult<()> {
        self.catalog.link_node(from, at, entry)?;
        self.catalog.commit()
    }

    /// A file's last name takes its home to the trash (where it waits for
    /// the file's last close) once the name is gone from the catalog.
    fn remove_name(&self, at: &At, how: Removal) -> FsResult<Option<Retired>> {
        let home = match how {
            Removal::LastName => Some(self.home(&self.file_id(at)?)),
            _ => None,
        };
        self.catalog.remove_name(at, how)?;
        self.catalog.commit()?;
        match home {
            Some(home) => Ok(Some(Retired(self.trash.retire(&home)?))),
            None => Ok(None),
        }
    }

    fn purge(&self, retired: Retired) {
        let _ = fs::remove_dir_all(retired.0);
    }

    fn remove_dir(&self, at: &At) -> FsResult<()> {
        self.catalog.remove_dir(at)?;
        self.catalog.commit()
    }

    /// Durable with the caller's `sync_names`, which follows every rename.
    fn rename(&self, from: &At, to: &At) -> FsResult<()> {
        self.catalog.rename(from, to)
    }

    fn exchange(&self, a: &At, b: &At) -> FsResult<()> {
        self.catalog.exchange(a, b)
    }

    /// A mode or owner change commits; new times ride on the next commit.
    fn set_attrs(&self, names: &[At], entry: &Entry, chmod: bool, chown: bool) -> FsResult<()> {
        self.catalog.set_attrs(names, entry, chmod, chown)?;
        if chmod || chown {
            self.catalog.commit()?;
        }
        Ok(())
    }

    /// A rename is durable on return: the database commits.
    fn sync_names(&self, _names: &[&At]) -> FsResult<()> {
        self.catalog.commit()
    }

    fn sync_dir(&self, _dir: &At) -> FsResult<()> {
        self.catalog.commit()
    }

    fn statfs(&self) -> FsResult<nix::sys::statvfs::Statvfs> {
        nix::sys::statvfs::statvfs(&self.backing).map_err(|e| FsError::io(&e.into(), "statfs"))
    }

    fn keeps_times(&self) -> bool {
        true
    }
}
