//! Compaction: data files that are mostly garbage (values and nodes no kept
//! version and no pending write references) have their live values copied
//! into the current data file; the kept versions' trees are rewritten to
//! point at the copies, the manifest is published, and only then are the
//! old files deleted.
//!
//! The copying runs without any lock; the swap runs in the commit slot
//! (no commit interleaves) and re-checks what changed meanwhile: versions
//! committed and values written during the copy are relocated too.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::data_file::{DataFile, DATA_DIR};
use super::db::Db;
use super::error::{io_at, OcdbtError, Result};
use super::tree_read::{walk_tree, FileRange, Version, Visit};
use super::tree_write::{write_tree, Value};
use crate::fsutil::sync_dir;

/// What one compaction did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CompactReport {
    /// Data files deleted.
    pub files_removed: usize,
    /// Bytes of live values copied out of them (trees are rewritten, not
    /// copied).
    pub bytes_copied: u64,
    /// Bytes the deleted files held.
    pub bytes_reclaimed: u64,
    /// Nothing was done: readers hold versions (see `readers`).
    pub skipped_for_readers: bool,
}

type RangeKey = (String, u64, u64);

fn key_of(r: &FileRange) -> RangeKey {
    (r.file.path.clone(), r.offset, r.length)
}

pub(super) struct Guard<'a>(pub(super) &'a Db);
impl Drop for Guard<'_> {
    fn drop(&mut self) {
        self.0.compacting.store(false, Ordering::Release);
    }
}

impl Db {
    /// Reclaims space held by values and nodes that no kept version
    /// references. Runs alongside writers; commits wait only for the swap.
    pub fn compact(&self) -> Result<CompactReport> {
        self.compact_files(self.opts.compact_file_garbage_ratio, true)
    }

    /// Deletes the data files nothing references any more (no kept version,
    /// no pending write), copying nothing: every file that stays is left
    /// as it is, and no file is written again. What a copy of the database
    /// elsewhere (an object store) can follow by deleting the same files.
    /// With `wait`, a compaction under way is waited for (it may have
    /// deleted them already) instead of returning at once.
    pub fn drop_dead_files(&self, wait: bool) -> Result<CompactReport> {
        while wait && self.compacting.load(Ordering::Acquire) {
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        self.compact_files(1.0, false)
    }

    /// Compacts the files whose unreferenced share is at least
    /// `garbage_ratio`; `end_current` ends the file being written first,
    /// so that it can be a candidate too.
    fn compact_files(&self, garbage_ratio: f64, end_current: bool) -> Result<CompactReport> {
        if self.read_only {
            return Err(OcdbtError::Invalid("database opened read-only".into()));
        }
        if self.compacting.swap(true, Ordering::AcqRel) {
            return Ok(CompactReport::default());
        }
        let _guard = Guard(self);
        let Some(_readers_out) = super::readers::exclusive(&self.dir)? else {
            return Ok(CompactReport {
                skipped_for_readers: true,
                ..CompactReport::default()
            });
        };

        // The file being written is never a candidate: close it (the next
        // append starts a new one), or the garbage in it, up to
        // `target_data_file_size` of it, could not be reclaimed until it is
        // full (a file rewritten by many commits fills it with old copies).
        if end_current {
            let mut w = self.writer.lock();
            if w.as_ref().is_some_and(|f| !f.is_empty()) {
                *w = None;
            }
        }

        // 1. What is referenced, per file. The file list is taken first:
        // a file created after it (the writer may roll meanwhile) is never
        // a candidate.
        let files: Vec<(u32, Arc<DataFile>)> = self
            .files
            .lock()
            .iter()
            .map(|(id, f)| (id, f.clone()))
            .collect();
        let versions = self.committed.lock().clone();
        let live = self.index.read().map.clone();
        let current = self.writer.lock().as_ref().map(|f| f.path.clone());
        let mut used: HashMap<String, u64> = HashMap::new();
        let mut values: HashMap<RangeKey, FileRange> = HashMap::new();
        for v in &versions {
            walk_tree(self, v, self.max_node_bytes(), &mut |visit| {
                match visit {
                    Visit::Node(r) => *used.entry(r.file.path.clone()).or_default() += r.length,
                    Visit::Entry {
                        indirect: Some(r), ..
                    } => {
                        values.entry(key_of(&r)).or_insert(r);
                    }
                    Visit::Entry { .. } => {}
                }
                Ok(())
            })?;
        }
        for v in live.values() {
            if let Value::Indirect(r) = v {
                values.entry(key_of(r)).or_insert_with(|| r.clone());
            }
        }
        for k in values.keys() {
            *used.entry(k.0.clone()).or_default() += k.2;
        }
        let victims: HashSet<String> = files
            .iter()
            .filter(|(_, f)| Some(&f.path) != current.as_ref())
            .filter(|(_, f)| {
                let len = f.len();
                let u = used.get(&f.path).copied().unwrap_or(0).min(len);
                len == 0 || (len - u) as f64 >= garbage_ratio * len as f64
            })
            .map(|(_, f)| f.path.clone())
            .collect();
        if victims.is_empty() {
            return Ok(CompactReport::default());
        }

        // 2. Copy live values out of the victims, no lock held.
        let mut report = CompactReport::default();
        let mut moved: HashMap<RangeKey, FileRange> = HashMap::new();
        for (k, r) in &values {
            if victims.contains(&k.0) {
                let data = r.file.read_at(r.offset, r.length)?;
                moved.insert(k.clone(), self.append(&data)?);
                report.bytes_copied += r.length;
            }
        }

        // 3. Swap: re-point versions and the index, publish, forget files.
        let moved = parking_lot::Mutex::new(moved);
        let relocate = |r: &FileRange| -> Result<FileRange> {
            if !victims.contains(&r.file.path) {
                return Ok(r.clone());
            }
            if let Some(n) = moved.lock().get(&key_of(r)) {
                return Ok(n.clone());
            }
            // Written or committed after the scan: copy it now.
            let n = self.append(&r.file.read_at(r.offset, r.length)?)?;
            moved.lock().insert(key_of(r), n.clone());
            Ok(n)
        };
        let removed = self.exclusive(|| {
            // No put is between its append and its index insert.
            let _gate = self.put_gate.write();
            let versions = self.committed.lock().clone();
            let mut rewritten = Vec::with_capacity(versions.len());
            for v in versions {
                rewritten.push(self.repoint(v, &victims, &relocate)?);
            }
            {
                let mut ix = self.index.write();
                let mut changes = Vec::new();
                for (k, v) in ix.map.iter() {
                    if let Value::Indirect(r) = v {
                        if victims.contains(&r.file.path) {
                            changes.push((k.clone(), Value::Indirect(relocate(r)?)));
                        }
                    }
                }
                let map = Arc::make_mut(&mut ix.map);
                for (k, v) in changes {
                    map.insert(k, v);
                }
            }
            self.publish(&rewritten)?;
            *self.committed.lock() = rewritten;
            let mut table = self.files.lock();
            Ok(files
                .iter()
                .filter(|(_, f)| victims.contains(&f.path))
                .filter_map(|(id, _)| table.remove(*id))
                .collect::<Vec<_>>())
        })?;

        // 4. Delete; open handles (readers mid-read) stay valid.
        for f in &removed {
            let p = self.dir.join(&f.path);
            match std::fs::remove_file(&p) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(io_at(&p)(e)),
            }
            report.bytes_reclaimed += f.len();
            report.files_removed += 1;
        }
        let d = self.dir.join(DATA_DIR);
        sync_dir(&d).map_err(io_at(&d))?;
        Ok(report)
    }

    /// Rewrites a version's tree if any node or value lies in a victim.
    fn repoint(
        &self,
        v: Version,
        victims: &HashSet<String>,
        relocate: &dyn Fn(&FileRange) -> Result<FileRange>,
    ) -> Result<Version> {
        let mut touched = false;
        let mut entries: Vec<(Vec<u8>, Value)> = Vec::new();
        walk_tree(self, &v, self.max_node_bytes(), &mut |visit| {
            match visit {
                Visit::Node(r) => touched |= victims.contains(&r.file.path),
                Visit::Entry {
                    key,
                    inline: Some(b),
                    ..
                } => entries.push((
                    key.to_vec(),
                    Value::Inline(bytes::Bytes::copy_from_slice(b)),
                )),
                Visit::Entry {
                    key,
                    indirect: Some(r),
                    ..
                } => {
                    touched |= victims.contains(&r.file.path);
                    entries.push((key.to_vec(), Value::Indirect(relocate(&r)?)));
                }
                Visit::Entry { .. } => {}
            }
            Ok(())
        })?;
        if !touched {
            return Ok(v);
        }
        let refs: Vec<(&[u8], &Value)> = entries.iter().map(|(k, v)| (k.as_slice(), v)).collect();
        let tree = write_tree(
            &refs,
            self.config.max_decoded_node_bytes as usize,
            self.config.compression,
            &|b| self.append(b),
        )?;
        Ok(Version {
            root_height: tree.as_ref().map_or(0, |t| t.height),
            root: tree.as_ref().map(|t| t.root.clone()),
            stats: tree.as_ref().map(|t| t.stats).unwrap_or_default(),
            ..v
        })
    }
}
