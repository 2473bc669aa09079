//! Where removed file homes wait for the last close of a file unlinked
//! while open (`BACKING/.ckptfs/trash`). A mount that may write empties it
//! before anything is open: anything there was left by a crash.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::error::{FsResult, IoContext};

/// The trash directory of a backing dir.
pub struct Trash {
    dir: PathBuf,
    retired: AtomicU64,
}

impl Trash {
    /// The trash at `dir`; with `sweep` (a mount that may write, before
    /// anything is open) it is made if missing and emptied. A mount that
    /// may not write makes and sweeps nothing: its backing may sit on
    /// read-only media.
    pub fn new(dir: PathBuf, sweep: bool) -> FsResult<Self> {
        if sweep {
            fs::create_dir_all(&dir).ctx("create trash dir")?;
            for entry in fs::read_dir(&dir).ctx("read trash dir")? {
                let path = entry.ctx("read trash dir")?.path();
                if fs::remove_dir_all(&path).is_err() {
                    let _ = fs::remove_file(&path);
                }
            }
        }
        Ok(Trash {
            dir,
            retired: AtomicU64::new(0),
        })
    }

    /// Moves `path` into the trash; returns where it went.
    pub fn retire(&self, path: &Path) -> FsResult<PathBuf> {
        // Unique across mounts too: a crash can leave a retired home here.
        let n = self.retired.fetch_add(1, Ordering::Relaxed);
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let dest = self.dir.join(format!("{t}-{n}"));
        fs::rename(path, &dest).ctx("unlink")?;
        Ok(dest)
    }
}
