//! Space back on a full disk. Data-file ranges that no kept version, no
//! pending write and no version-tree node references (values of deleted
//! files, appends a failed write left behind, superseded nodes) are punched
//! out in place with `fallocate(PUNCH_HOLE)`: offsets stay valid and
//! nothing has to be written, which is what a full disk allows. Compaction
//! (which copies live values) reclaims space when the disk is not full.

use std::collections::HashMap;
use std::fs::OpenOptions;
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::compact::Guard;
use super::data_file::{DataFile, DATA_DIR};
use super::db::{Db, MANIFEST_FILE};
use super::error::{io_at, OcdbtError, Result};
use super::manifest;
use super::tree_read::{walk_tree, FileRange, Visit};
use super::tree_write::Value;

/// Holes are punched in whole blocks of this size.
const BLOCK: u64 = 4096;

impl OcdbtError {
    /// The storage ran out of space (or quota).
    pub fn is_no_space(&self) -> bool {
        matches!(self, OcdbtError::Io { source, .. }
            if matches!(source.raw_os_error(), Some(libc::ENOSPC | libc::EDQUOT)))
    }
}

impl Db {
    /// Punches out unreferenced data-file ranges; with `drop_history`, the
    /// kept versions older than the newest are given up first (what a full
    /// disk costs: `--version` of them no longer mounts). Returns the bytes
    /// the backing filesystem gave back.
    pub fn reclaim(&self, drop_history: bool) -> Result<u64> {
        if self.read_only {
            return Err(OcdbtError::Invalid("database opened read-only".into()));
        }
        self.exclusive(|| self.reclaim_in_slot(drop_history))
    }

    /// `reclaim`, with the commit slot already held by the caller.
    pub(crate) fn reclaim_in_slot(&self, drop_history: bool) -> Result<u64> {
        // Excludes compaction, which deletes files and reads live ranges.
        if self.compacting.swap(true, Ordering::AcqRel) {
            return Ok(0);
        }
        let _guard = Guard(self);
        // Ranges no kept version names may still be read by a reader of a
        // version dropped since: nothing is punched while one is there.
        let Some(_readers_out) = super::readers::exclusive(&self.dir)? else {
            tracing::warn!("packed index: the disk is full, and version mounts hold the space no kept version uses");
            return Ok(0);
        };
        let mut freed = self.punch_unreferenced()?;
        if drop_history {
            // Deleted files' values stay referenced by the newest version
            // until a commit records the deletion: commit (in the room just
            // punched out), then keep only that version. Each step needs a
            // little space; where none is left the history stays.
            let committed = self.commit_now().is_ok();
            let versions = self.committed.lock().clone();
            if committed && versions.len() > 1 {
                let newest = versions[versions.len() - 1..].to_vec();
                if self.publish(&newest).is_ok() {
                    *self.committed.lock() = newest;
                }
            }
            freed += self.punch_unreferenced()?;
        }
        if freed > 0 {
            tracing::info!(
                freed,
                "packed index: punched out unreferenced data on a full disk"
            );
        }
        Ok(freed)
    }

    /// One pass of hole punching over every data file we wrote.
    fn punch_unreferenced(&self) -> Result<u64> {
        // What is referenced, and how far each file reaches, at one instant:
        // no put is between its append and its index insert, and later
        // appends land past the lengths taken here.
        let (files, versions, live) = {
            let _gate = self.put_gate.write();
            let files: Vec<(Arc<DataFile>, u64)> = self
                .files
                .lock()
                .iter()
                .map(|(_, f)| (f.clone(), f.len()))
                .collect();
            let versions = self.committed.lock().clone();
            let live = self.index.read().map.clone();
            (files, versions, live)
        };
        let mut keep: HashMap<String, Vec<(u64, u64)>> = HashMap::new();
        let mut add = |r: &FileRange| {
            keep.entry(r.file.path.clone())
                .or_default()
                .push((r.offset, r.offset.saturating_add(r.length)));
        };
        for v in &versions {
            walk_tree(self, v, self.max_node_bytes(), &mut |visit| {
                match visit {
                    Visit::Node(r) => add(r),
                    Visit::Entry {
                        indirect: Some(r), ..
                    } => add(&r),
                    Visit::Entry { .. } => {}
                }
                Ok(())
            })?;
        }
        for v in live.values() {
            if let Value::Indirect(r) = v {
                add(r);
            }
        }
        // The version-tree nodes the published manifest points at (leaves:
        // `publish` writes no deeper tree; anything else is left alone).
        let path = self.dir.join(MANIFEST_FILE);
        let m = manifest::decode(&std::fs::read(&path).map_err(io_at(&path))?)?;
        for n in &m.version_nodes {
            let Some(f) = m.files.get(n.location.file) else {
                return Ok(0);
            };
            if n.height != 0 {
                return Ok(0);
            }
            keep.entry(f.full.clone()).or_default().push((
                n.location.offset,
                n.location.offset.saturating_add(n.location.length),
            ));
        }
        let mut freed = 0u64;
        for (f, len) in files {
            if !f.path.starts_with(&format!("{DATA_DIR}/")) {
                continue;
            }
            let mut ranges = keep.remove(&f.path).unwrap_or_default();
            ranges.sort_unstable();
            let full = self.dir.join(&f.path);
            let file = OpenOptions::new()
                .write(true)
                .open(&full)
                .map_err(io_at(&full))?;
            let before = file.metadata().map_err(io_at(&full))?.blocks();
            let mut at = 0u64;
            for (start, end) in ranges.into_iter().chain([(len, len)]) {
                if start > at {
                    punch(&file, at, start.min(len)).map_err(io_at(&full))?;
                }
                at = at.max(end);
            }
            let after = file.metadata().map_err(io_at(&full))?.blocks();
            freed += before.saturating_sub(after) * 512;
        }
        Ok(freed)
    }
}

/// Frees the whole blocks inside `[start, end)`; the file keeps its size
/// and the range reads as zeros.
fn punch(file: &std::fs::File, start: u64, end: u64) -> std::io::Result<()> {
    let (s, e) = (start.next_multiple_of(BLOCK), end / BLOCK * BLOCK);
    if e <= s {
        return Ok(());
    }
    let (Ok(off), Ok(len)) = (i64::try_from(s), i64::try_from(e - s)) else {
        return Ok(());
    };
    nix::fcntl::fallocate(
        file.as_raw_fd(),
        nix::fcntl::FallocateFlags::FALLOC_FL_PUNCH_HOLE
            | nix::fcntl::FallocateFlags::FALLOC_FL_KEEP_SIZE,
        off,
        len,
    )
    .map_err(|e| std::io::Error::from_raw_os_error(e as i32))
}
