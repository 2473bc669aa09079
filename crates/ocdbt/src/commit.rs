//! Commit: pending writes become a new version.
//!
//! Group commit: callers that arrive while a commit runs wait and are all
//! served by the next one, which the first of them runs. The order inside
//! a commit is what makes a crash safe: values' data files are fdatasynced,
//! the new tree's nodes are written and synced, then the manifest is
//! replaced atomically (temp, fsync, rename, fsync dir). A reader of the
//! manifest therefore only ever sees complete versions.

use std::sync::atomic::Ordering;
use std::time::{SystemTime, UNIX_EPOCH};

use super::btree::Location;
use super::compact::CompactReport;
use super::data_file::DATA_DIR;
use super::data_file_table::DataFilePath;
use super::db::{Db, MANIFEST_FILE};
use super::error::{io_at, OcdbtError, Result};
use super::manifest::{self, Manifest};
use super::tree_read::{FileRange, Version};
use super::tree_write::write_tree;
use super::version_tree::{
    self, bucket_start, VersionEntries, VersionNodeRef, VersionRef, VersionTreeNode,
};
use crate::fsutil::{sync_dir, write_atomic};

fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos().min(i64::MAX as u128) as u64)
}

/// A data-file table over the given files, plus each file's index in it.
fn file_table(files: &[&FileRange]) -> (Vec<DataFilePath>, Vec<usize>) {
    let mut paths: Vec<(String, String)> = files
        .iter()
        .map(|r| (r.file.transitive.clone(), r.file.path.clone()))
        .collect();
    paths.sort();
    paths.dedup();
    let index = files
        .iter()
        .map(|r| {
            paths
                .binary_search(&(r.file.transitive.clone(), r.file.path.clone()))
                .unwrap_or(0)
        })
        .collect();
    let table = paths
        .into_iter()
        .map(|(t, p)| DataFilePath {
            full: p,
            transitive: t,
        })
        .collect();
    (table, index)
}

fn loc(r: &FileRange, file: usize) -> Location {
    Location {
        file,
        offset: r.offset,
        length: r.length,
    }
}

/// Version references over a table built from their roots.
fn version_refs(versions: &[Version]) -> (Vec<DataFilePath>, Vec<VersionRef>) {
    let roots: Vec<&FileRange> = versions.iter().filter_map(|v| v.root.as_ref()).collect();
    let (mut table, index) = file_table(&roots);
    if table.is_empty() {
        // An empty tree still names file 0, as TensorStore's writer does.
        table.push(DataFilePath {
            full: String::new(),
            transitive: String::new(),
        });
    }
    let mut next = index.into_iter();
    let refs = versions
        .iter()
        .map(|v| VersionRef {
            generation: v.generation,
            root_height: v.root_height,
            root: v
                .root
                .as_ref()
                .map(|r| loc(r, next.next().unwrap_or_default())),
            stats: v.stats,
            commit_time_ns: v.commit_time_ns,
        })
        .collect();
    (table, refs)
}

impl Db {
    /// Makes every write so far durable as a new version; returns its
    /// generation (the current one if nothing changed).
    pub fn commit(&self) -> Result<u64> {
        if self.read_only {
            return Err(OcdbtError::Invalid("database opened read-only".into()));
        }
        let mut st = self.commit_state.lock();
        // Served by any commit that starts after this point.
        let target = st.next_epoch;
        loop {
            if st.done_epoch >= target {
                return st.last.clone().map_err(OcdbtError::Invalid);
            }
            if !st.running {
                st.running = true;
                let epoch = st.next_epoch;
                st.next_epoch += 1;
                drop(st);
                let mut result = self.commit_now();
                // A full disk: make room (see `reclaim`) and try again.
                for drop_history in [false, true] {
                    match &result {
                        Err(e) if e.is_no_space() => {
                            if let Err(r) = self.reclaim_in_slot(drop_history) {
                                tracing::warn!("packed index: reclaiming space failed: {r}");
                                break;
                            }
                            result = self.commit_now();
                        }
                        _ => break,
                    }
                }
                let mut st2 = self.commit_state.lock();
                st2.running = false;
                st2.done_epoch = epoch;
                st2.last = result.as_ref().map(|g| *g).map_err(|e| e.to_string());
                self.commit_cv.notify_all();
                drop(st2);
                if result.is_ok() {
                    self.maybe_auto_compact();
                }
                return result;
            }
            self.commit_cv.wait(&mut st);
        }
    }

    /// Runs `f` while holding the commit slot, so no commit interleaves.
    pub(crate) fn exclusive<T>(&self, f: impl FnOnce() -> Result<T>) -> Result<T> {
        let mut st = self.commit_state.lock();
        while st.running {
            self.commit_cv.wait(&mut st);
        }
        st.running = true;
        drop(st);
        let r = f();
        let mut st = self.commit_state.lock();
        st.running = false;
        self.commit_cv.notify_all();
        r
    }

    pub(crate) fn commit_now(&self) -> Result<u64> {
        let snapshot = {
            let mut ix = self.index.write();
            if !ix.dirty && !self.committed.lock().is_empty() {
                return Ok(self.generation());
            }
            ix.dirty = false;
            ix.map.clone()
        };
        let result = (|| {
            let entries: Vec<_> = snapshot.iter().map(|(k, v)| (k.as_slice(), v)).collect();
            let tree = write_tree(
                &entries,
                self.config.max_decoded_node_bytes as usize,
                self.config.compression,
                &|b| self.append(b),
            )?;
            let mut versions = self.committed.lock().clone();
            let generation = versions.last().map_or(1, |v| v.generation + 1);
            versions.push(Version {
                generation,
                root_height: tree.as_ref().map_or(0, |t| t.height),
                root: tree.as_ref().map(|t| t.root.clone()),
                stats: tree.as_ref().map(|t| t.stats).unwrap_or_default(),
                commit_time_ns: now_ns(),
            });
            let keep = self.keep_versions();
            if versions.len() > keep {
                versions.drain(..versions.len() - keep);
            }
            self.publish(&versions)?;
            *self.committed.lock() = versions;
            Ok(generation)
        })();
        if result.is_err() {
            self.index.write().dirty = true;
        }
        result
    }

    /// Syncs all data files, then writes the manifest for `versions`
    /// (writing version-tree nodes for those older than the newest bucket).
    pub(crate) fn publish(&self, versions: &[Version]) -> Result<()> {
        let Some(last) = versions.last() else {
            return Err(OcdbtError::Invalid("no version to publish".into()));
        };
        let arity = self.config.version_tree_arity_log2;
        let start = bucket_start(arity, last.generation);
        // Keeping at most 2^arity consecutive generations means the older
        // ones all fall in the previous bucket; anything else is dropped.
        let prev_start = start.saturating_sub(1 << arity).max(1);
        let older: Vec<Version> = versions
            .iter()
            .filter(|v| v.generation < start && v.generation >= prev_start)
            .cloned()
            .collect();
        let inline: Vec<Version> = versions
            .iter()
            .filter(|v| v.generation >= start)
            .cloned()
            .collect();
        let mut version_nodes = Vec::new();
        let mut node_range = None;
        if let Some(first_old) = older.first() {
            let (files, refs) = version_refs(&older);
            let leaf = VersionTreeNode {
                arity_log2: arity,
                height: 0,
                files,
                entries: VersionEntries::Leaf(refs),
            };
            let leaf_at = self.append(&version_tree::encode(&leaf, self.config.compression)?)?;
            let bucket_end = start - 1;
            let child = VersionNodeRef {
                generation: bucket_end,
                location: loc(&leaf_at, 0),
                num_generations: older.len() as u64,
                commit_time: first_old.commit_time_ns,
                height: 0,
            };
            let (files, _) = file_table(&[&leaf_at]);
            let interior = VersionTreeNode {
                arity_log2: arity,
                height: 1,
                files,
                entries: VersionEntries::Interior(vec![child.clone()]),
            };
            let at = self.append(&version_tree::encode(&interior, self.config.compression)?)?;
            version_nodes.push(VersionNodeRef {
                location: loc(&at, 0),
                height: 1,
                ..child
            });
            node_range = Some(at);
        }
        let (mut files, mut refs) = version_refs(&inline);
        if let Some(at) = &node_range {
            // Merge the node's file into the table and re-index.
            let mut roots: Vec<&FileRange> =
                inline.iter().filter_map(|v| v.root.as_ref()).collect();
            roots.push(at);
            let (table, index) = file_table(&roots);
            let mut it = index.into_iter();
            for r in refs.iter_mut() {
                if let Some(l) = r.root.as_mut() {
                    l.file = it.next().unwrap_or_default();
                }
            }
            version_nodes[0].location.file = it.next().unwrap_or_default();
            if !table.is_empty() {
                files = table;
            }
        }
        let m = Manifest {
            config: self.config.clone(),
            files,
            versions: refs,
            version_nodes,
        };
        let bytes = manifest::encode(&m)?;
        for (_, f) in self.files.lock().iter() {
            f.sync()?;
        }
        if self.new_files.swap(false, Ordering::AcqRel) {
            let d = self.dir.join(DATA_DIR);
            if let Err(e) = sync_dir(&d) {
                self.new_files.store(true, Ordering::Release);
                return Err(io_at(&d)(e));
            }
        }
        let path = self.dir.join(MANIFEST_FILE);
        write_atomic(&path, &bytes, true).map_err(io_at(&path))?;
        sync_dir(&self.dir).map_err(io_at(&self.dir))?;
        Ok(())
    }

    /// Whether garbage passed `ratio` of all data-file bytes (estimated from
    /// the newest version's statistics; never below 1 MiB of data).
    fn garbage_past(&self, ratio: f64) -> bool {
        let total = self.data_bytes();
        let live = self.committed.lock().last().map_or(0, |v| {
            v.stats.num_tree_bytes + v.stats.num_indirect_value_bytes
        });
        total >= (1 << 20) && (total.saturating_sub(live) as f64) >= ratio * total as f64
    }

    /// Compacts now, on this thread, if garbage passed `ratio` of all
    /// data-file bytes: what auto compaction does, for a caller that must
    /// order it with its own reads (a writer's uploads).
    pub fn compact_if_garbage(&self, ratio: f64) -> Result<Option<CompactReport>> {
        if !self.garbage_past(ratio) {
            return Ok(None);
        }
        self.compact().map(Some)
    }

    /// Starts a background compaction once garbage passes the configured
    /// share of all data-file bytes.
    fn maybe_auto_compact(&self) {
        let Some(ratio) = self.opts.auto_compact_garbage_ratio else {
            return;
        };
        if !self.garbage_past(ratio) {
            return;
        }
        if self.compacting.load(Ordering::Acquire) {
            return;
        }
        if let Some(db) = self.me.upgrade() {
            let spawned = std::thread::Builder::new()
                .name("ocdbt-compact".into())
                .spawn(move || {
                    if let Err(e) = db.compact() {
                        tracing::warn!("background OCDBT compaction failed: {e}");
                    }
                });
            if let Err(e) = spawned {
                tracing::warn!("cannot start OCDBT compaction: {e}");
            }
        }
    }
}
