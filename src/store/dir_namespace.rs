//! The namespace as a backing directory tree, the record of the live tree:
//! a directory is a directory holding a group `zarr.json`; a file is a
//! directory (its home: manifest, staging, data) at its first name, and
//! each further name is a link record naming its id; symlinks and special
//! nodes are themselves, further names of them backing hard links.
//!
//! Every change that could be cut short by a crash is made so the tree is
//! whole before and after it: new files and link records are built under
//! a temp name and renamed into place, replacements are swaps.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use super::dir_scan::Walk;
use super::durable::{sync_dir, temp_name, write_atomic};
use super::namespace::{At, Entry, Namespace, Recovery, Removal, Retired, ScanVisitor};
use super::trash::Trash;
use crate::error::{FsError, FsResult, IoContext};
use crate::layout::manifest::{dir_group_json, link_group_json, Attrs, ZARR_JSON};

/// A backing directory's tree of names.
pub struct DirNamespace {
    root: PathBuf,
    /// Where removed file homes wait (for their last close) and go.
    trash: Trash,
}

/// renameat2(RENAME_EXCHANGE): swaps two existing paths atomically.
fn rename_exchange(a: &Path, b: &Path) -> std::io::Result<()> {
    use nix::fcntl::{renameat2, RenameFlags};
    Ok(renameat2(None, a, None, b, RenameFlags::RENAME_EXCHANGE)?)
}

fn sync_parent(p: &Path) -> FsResult<()> {
    match p.parent() {
        Some(dir) => sync_dir(dir).ctx("fsync directory"),
        None => Ok(()),
    }
}

impl DirNamespace {
    /// The namespace of `root`, whose trash is `trash` (see `Trash::new`
    /// for `sweep`).
    pub fn new(root: &Path, trash: PathBuf, sweep: bool) -> FsResult<Self> {
        Ok(DirNamespace {
            root: root.to_path_buf(),
            trash: Trash::new(trash, sweep)?,
        })
    }
}

impl Namespace for DirNamespace {
    fn scan(&self, visit: &mut dyn ScanVisitor, root: u64, recover: bool) -> FsResult<Recovery> {
        let mut walk = Walk::new(visit, recover);
        walk.dir(&self.root, root, true)?;
        Ok(walk.finish())
    }

    fn create_dir(&self, at: &At, attrs: &Attrs) -> FsResult<()> {
        let path = &at.backing;
        fs::create_dir(path).ctx("mkdir")?;
        let made = (|| {
            write_atomic(&path.join(ZARR_JSON), &dir_group_json("dir"), false)?;
            fs::set_permissions(path, fs::Permissions::from_mode(attrs.mode & 0o7777))?;
            std::os::unix::fs::chown(path, Some(attrs.uid), Some(attrs.gid))
        })();
        if let Err(e) = made {
            let _ = fs::remove_dir_all(path);
            return Err(FsError::io(&e, "mkdir"));
        }
        Ok(())
    }

    fn create_file(
        &self,
        at: &At,
        _id: &str,
        build: &mut dyn FnMut(&Path) -> FsResult<()>,
    ) -> FsResult<()> {
        // Built under a temp name, then renamed: a crash never leaves a
        // half-made file that could be mistaken for a directory.
        let tmp = temp_name(&at.backing);
        fs::create_dir(&tmp).ctx("create file dir")?;
        let made = build(&tmp).and_then(|()| fs::rename(&tmp, &at.backing).ctx("create file"));
        if made.is_err() {
            let _ = fs::remove_dir_all(&tmp);
        }
        made
    }

    fn create_symlink(&self, at: &At, target: &Path, attrs: &Attrs) -> FsResult<()> {
        std::os::unix::fs::symlink(target, &at.backing).ctx("symlink")?;
        let _ = std::os::unix::fs::lchown(&at.backing, Some(attrs.uid), Some(attrs.gid));
        Ok(())
    }

    fn create_special(&self, at: &At, attrs: &Attrs, rdev: u64) -> FsResult<()> {
        use nix::sys::stat::{mknod, Mode, SFlag};
        let path = &at.backing;
        mknod(
            path,
            SFlag::from_bits_truncate(attrs.mode & libc::S_IFMT),
            Mode::from_bits_truncate(attrs.mode & 0o7777),
            rdev,
        )
        .map_err(|e| FsError::new(e as i32, format!("mknod: {e}")))?;
        // mknod applied the daemon's umask: set the mode asked for.
        let made = fs::set_permissions(path, fs::Permissions::from_mode(attrs.mode & 0o7777))
            .and_then(|()| std::os::unix::fs::lchown(path, Some(attrs.uid), Some(attrs.gid)));
        if let Err(e) = made {
            let _ = fs::remove_file(path);
            return Err(FsError::io(&e, "mknod"));
        }
        Ok(())
    }

    /// A link record, made under a temp name and renamed into place, so a
    /// crash leaves both names or the old one alone.
    fn link_file(&self, at: &At, id: &str) -> FsResult<()> {
        let tmp = temp_name(&at.backing);
        fs::create_dir(&tmp).ctx("create link record")?;
        let made = write_atomic(&tmp.join(ZARR_JSON), &link_group_json(id), true)
            .and_then(|()| fs::rename(&tmp, &at.backing));
        if let Err(e) = made {
            let _ = fs::remove_dir_all(&tmp);
            return Err(FsError::io(&e, "link"));
        }
        sync_parent(&at.backing)
    }

    fn link_node(&self, from: &At, at: &At, _entry: &Entry) -> FsResult<()> {
        fs::hard_link(&from.backing, &at.backing).ctx("link")?;
        sync_parent(&at.backing)
    }

    fn remove_name(&self, at: &At, how: Removal) -> FsResult<Option<Retired>> {
        match how {
            Removal::Node => {
                fs::remove_file(&at.backing).ctx("unlink")?;
                Ok(None)
            }
            Removal::LastName => Ok(Some(Retired(self.trash.retire(&at.backing)?))),
            Removal::FurtherName { heir } => {
                if let Some(heir) = heir {
                    // The home moves to the next name (one atomic swap with
                    // that name's record), so the record can go from here.
                    rename_exchange(&at.backing, &heir.backing)
                        .ctx("move the file's home to its next name")?;
                }
                let record = self.trash.retire(&at.backing)?;
                let _ = fs::remove_dir_all(record);
                Ok(None)
            }
        }
    }

    fn purge(&self, retired: Retired) {
        let _ = fs::remove_dir_all(retired.0);
    }

    fn remove_dir(&self, at: &At) -> FsResult<()> {
        fs::remove_dir_all(&at.backing).ctx("rmdir")
    }

    fn rename(&self, from: &At, to: &At) -> FsResult<()> {
        fs::rename(&from.backing, &to.backing).ctx("rename")
    }

    fn exchange(&self, a: &At, b: &At) -> FsResult<()> {
        rename_exchange(&a.backing, &b.backing).ctx("rename exchange")
    }

    fn set_attrs(&self, names: &[At], entry: &Entry, chmod: bool, chown: bool) -> FsResult<()> {
        let (Some(at), Some(attrs)) = (names.first(), attrs_of(entry)) else {
            return Ok(());
        };
        if chmod && !matches!(entry, Entry::Symlink { .. }) {
            fs::set_permissions(&at.backing, fs::Permissions::from_mode(attrs.mode & 0o7777))
                .ctx("chmod")?;
        }
        if chown {
            std::os::unix::fs::lchown(&at.backing, Some(attrs.uid), Some(attrs.gid))
                .ctx("chown")?;
        }
        Ok(())
    }

    fn sync_names(&self, names: &[&At]) -> FsResult<()> {
        let mut done: Vec<&Path> = Vec::new();
        for at in names {
            if let Some(dir) = at.backing.parent() {
                if !done.contains(&dir) {
                    sync_dir(dir).ctx("fsync directory")?;
                    done.push(dir);
                }
            }
        }
        Ok(())
    }

    fn sync_dir(&self, dir: &At) -> FsResult<()> {
        sync_dir(&dir.backing).ctx("fsync directory")
    }

    fn statfs(&self) -> FsResult<nix::sys::statvfs::Statvfs> {
        nix::sys::statvfs::statvfs(&self.root).map_err(|e| FsError::io(&e.into(), "statfs"))
    }

    /// Times live in the tree (and in each file's manifest), not here.
    fn keeps_times(&self) -> bool {
        false
    }
}

fn attrs_of(entry: &Entry) -> Option<&Attrs> {
    match entry {
        Entry::Dir { attrs } | Entry::Symlink { attrs, .. } | Entry::Special { attrs, .. } => {
            Some(attrs)
        }
        Entry::File { .. } => None,
    }
}
