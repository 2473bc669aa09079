//! A writer mount of `s3://BUCKET/PREFIX`. The checkpoint is written to a
//! local backing dir with the packed index, as any mount writes it, and a
//! thread publishes each new version to the store (`publish`): data files
//! first, the manifest last. So the store always holds a whole version,
//! the newest one published: a crash of the mount leaves it there, and a
//! remount with the same `--cache-dir` recovers the local dir and goes on.
//!
//! `close` makes a file durable locally (as on any mount) and published
//! within about a second; `fsync` and `fsyncdir` wait for the store
//! (see `Upstream`), so an application that syncs learns of a store that
//! is down. Unmount publishes what is left and fails when it cannot.
//!
//! What the kept versions no longer use goes, locally and then on the
//! store: every few seconds after a commit this thread drops the dead data
//! files (`Db::drop_dead_files`, which copies nothing) and compacts past
//! `packed.auto_compact_ratio` (here, not on a thread of the database's
//! own, so it never finds an upload's pin in its way); once a publish no
//! longer seals a file, the store's
//! copy goes too (`s3_gc::sweep_writer`), unless a reader's lease holds a
//! version the manifest no longer keeps. The writer's own lease tells
//! `ckptfs compact s3://…` to keep off.
//!
//! The local copy is bounded by `--cache-size`: past it, data files the
//! store holds whole (published, or uploaded ahead) are evicted oldest
//! first (`Db::evict`: their blocks are freed, their reads go to the
//! store), so the local dir holds what is not on the store yet plus at
//! most the limit.

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context, Result};
use parking_lot::{Condvar, Mutex};

use crate::error::{FsError, FsResult};
use crate::ocdbt::data_file::DATA_DIR;
use crate::ocdbt::Db;
use crate::publish::{PublishReport, Publisher};
use crate::store::lease::{Lease, Role};
use crate::store::s3_gc::{self, Refused};
use crate::store::upstream::Upstream;

/// The least time between two publishes that nobody waits for: each one
/// starts a new data file, and costs a few requests even when small.
const INTERVAL: Duration = Duration::from_secs(1);
/// How often finished data files are uploaded ahead of the commit that
/// will name them, and the size at which the file being written is ended
/// for that: a long save uploads while it writes.
const AHEAD_EVERY: Duration = Duration::from_millis(500);
const AHEAD_ROLL_BYTES: u64 = 64 << 20;
/// After a failed publish, the next one nobody waits for.
const BACKOFF: Duration = Duration::from_secs(2);
/// An `fsync` that waits longer than this fails (each request to the
/// store is bounded too, see `store::s3`).
const SYNC_TIMEOUT: Duration = Duration::from_secs(120);
/// Attempts of the last publish at unmount.
const FINAL_ATTEMPTS: u32 = 3;
/// How often the database looks for dead data files (a walk of every kept
/// version's tree), when it has committed since.
const DROP_EVERY: Duration = Duration::from_secs(5);
/// How soon a sweep that readers held off is tried again.
const SWEEP_RETRY: Duration = Duration::from_secs(5);

/// Totals of a writer mount's publishes.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct WriteBackStats {
    /// Where it publishes (`s3://BUCKET/PREFIX`).
    pub store: String,
    /// The newest generation the store holds.
    pub published_generation: u64,
    pub publishes: u64,
    pub failed_publishes: u64,
    pub uploaded_files: u64,
    pub uploaded_bytes: u64,
    /// Of those, uploaded before the commit that names them.
    pub uploaded_ahead_bytes: u64,
    pub publish_seconds: f64,
    pub last_error: Option<String>,
    pub conditional_put_enforced: bool,
    /// Data files the kept versions no longer used, deleted locally.
    pub dropped_local_files: u64,
    pub dropped_local_bytes: u64,
    /// Their copies (and crashed uploads' leftovers) deleted from the store.
    pub removed_files: u64,
    pub removed_bytes: u64,
    /// Sweeps held off by readers of versions no longer kept, and the last
    /// of those readers.
    pub sweeps_deferred: u64,
    pub deferred_for: Option<String>,
    /// Data files evicted locally (their reads go to the store), and the
    /// bytes that freed; the local data bytes after the last eviction.
    pub evicted_files: u64,
    pub evicted_bytes: u64,
    pub local_bytes: u64,
    /// `--cache-size`: the most bytes of data the store holds that stay local.
    pub local_limit: u64,
}

struct State {
    stats: WriteBackStats,
    /// Publishes begun, and ended (either way).
    started: u64,
    finished: u64,
    /// Whether the last one ended in an error.
    last_failed: bool,
    /// Finished data files already uploaded (or found in the store).
    ahead: std::collections::HashSet<String>,
    /// Someone waits: publish now.
    wake: bool,
    stop: bool,
    /// The store may hold data files that no publish seals any more.
    sweep_due: bool,
    last_sweep: Option<Instant>,
    /// Of the last successful publish (if any): the data files it sealed
    /// (a superset of those its manifest references), the oldest
    /// generation its manifest keeps.
    last_sealed: Option<HashSet<String>>,
    oldest_kept: u64,
    last_drop: Instant,
    last_drop_generation: u64,
    /// Data files evicted locally.
    evicted: HashSet<String>,
}

struct Shared {
    backing: PathBuf,
    compact_ratio: f64,
    db: Arc<Db>,
    publisher: Publisher,
    state: Mutex<State>,
    cv: Condvar,
}

/// Refuses a prefix another live writer mount holds. The lease is written
/// before the others are listed, so of two writers mounting at once each
/// sees the other (both are refused) or the later one sees the earlier
/// (it is refused): never two writers, whether or not the store enforces
/// conditional PUTs (Garage does not). Leases of writers on this host
/// whose process is gone are stale: passed over (they expire by themselves).
fn one_writer(publisher: &Publisher, lease: &Lease) -> Result<()> {
    let store = publisher.store();
    let leases = crate::store::lease::list(&store, store.now_ms()?)?;
    let me = lease.holder();
    let mut others = Vec::new();
    for l in leases.writers().filter(|l| l.holder != me) {
        if l.is_dead_here() {
            tracing::info!(
                "{}: the lease of writer {} is stale (its process is gone)",
                publisher.location(),
                l.holder
            );
            continue;
        }
        others.push(l.holder.clone());
    }
    if !others.is_empty() {
        anyhow::bail!(
            "{} is held by another writer mount ({}): one writer per prefix; mount it --read-only, or wait for that writer to unmount (a writer killed on another host holds it for store.lease_seconds)",
            publisher.location(),
            others.join(", ")
        );
    }
    Ok(())
}

/// The data files in the local database now (`d/<name>`).
fn local_files(backing: &std::path::Path) -> Result<HashSet<String>> {
    // No data dir is a broken database, never "no files" (a sweep would
    // take that as leave to delete what the store holds beyond the seal).
    let dir = backing.join(DATA_DIR);
    anyhow::ensure!(dir.is_dir(), "{} is missing", dir.display());
    Ok(crate::publish::local_data_files(backing)?
        .into_iter()
        .map(|(name, _, _)| format!("{DATA_DIR}/{name}"))
        .collect())
}

/// How a writer mount publishes, and what it keeps.
#[derive(Debug, Clone)]
pub struct WriteBackOptions {
    /// Lifetime of the writer's lease on the store.
    pub lease_ttl: Duration,
    /// The most bytes of data files the store holds that stay local.
    pub local_limit: u64,
    /// Compaction once garbage is past this share of the data (0: off).
    pub compact_ratio: f64,
}

/// The publisher of one writer mount.
pub struct WriteBack {
    shared: Arc<Shared>,
    thread: Mutex<Option<JoinHandle<()>>>,
    /// Held until the last publish and sweep are done.
    lease: Mutex<Option<Lease>>,
}

impl WriteBack {
    /// Starts publishing `db` (the packed database in `backing`), under a
    /// writer's lease written first.
    pub fn start(
        backing: PathBuf,
        db: Arc<Db>,
        publisher: Publisher,
        opts: WriteBackOptions,
    ) -> Result<Arc<Self>> {
        let lease = Lease::take(
            publisher.store(),
            Role::Writer,
            db.generation(),
            opts.lease_ttl,
        )
        .with_context(|| format!("write a lease under {}", publisher.location()))?;
        one_writer(&publisher, &lease)?;
        let shared = Arc::new(Shared {
            backing,
            compact_ratio: opts.compact_ratio,
            db,
            state: Mutex::new(State {
                stats: WriteBackStats {
                    store: publisher.location().to_string(),
                    local_limit: opts.local_limit,
                    conditional_put_enforced: publisher.conditional_put_enforced(),
                    ..WriteBackStats::default()
                },
                ahead: Default::default(),
                started: 0,
                finished: 0,
                last_failed: false,
                wake: false,
                stop: false,
                // A crashed writer may have left uploads behind.
                sweep_due: true,
                last_sweep: None,
                last_sealed: None,
                oldest_kept: 0,
                last_drop: Instant::now(),
                last_drop_generation: 0,
                evicted: HashSet::new(),
            }),
            publisher,
            cv: Condvar::new(),
        });
        let s = shared.clone();
        let thread = std::thread::Builder::new()
            .name("ckptfs-publish".into())
            .spawn(move || s.run())
            .context("start publish thread")?;
        Ok(Arc::new(WriteBack {
            shared,
            thread: Mutex::new(Some(thread)),
            lease: Mutex::new(Some(lease)),
        }))
    }

    pub fn stats(&self) -> WriteBackStats {
        self.shared.state.lock().stats.clone()
    }

    /// Stops the thread and publishes what is left (the caller committed
    /// every file), trying a few times.
    pub fn finish(&self) -> Result<WriteBackStats> {
        self.shared.state.lock().stop = true;
        self.shared.cv.notify_all();
        if let Some(t) = self.thread.lock().take() {
            let _ = t.join();
        }
        let mut last = Some(anyhow!("not published"));
        for attempt in 0..FINAL_ATTEMPTS {
            if attempt > 0 {
                std::thread::sleep(BACKOFF);
            }
            if self.shared.db.generation() <= self.stats().published_generation {
                last = None;
                break;
            }
            match self.shared.publish_once() {
                Ok(()) => {
                    last = None;
                    break;
                }
                Err(e) => last = Some(e),
            }
        }
        if let Some(e) = last {
            return Err(e);
        }
        // Leave the store tidy: what the last versions dropped goes, with
        // one more publish when the local manifest changed for it.
        let sh = &self.shared;
        if sh.drop_dead(true) {
            let _ = sh.publish_once();
        }
        sh.state.lock().last_sweep = None;
        sh.sweep();
        self.lease.lock().take();
        Ok(self.stats())
    }
}

impl Shared {
    fn run(&self) {
        // What a killed writer appended and never committed goes before
        // the first publish could upload it.
        self.drop_dead(true);
        // The first publish is due at once.
        let mut last_round = Instant::now()
            .checked_sub(INTERVAL)
            .unwrap_or_else(Instant::now);
        let mut last_ahead = Instant::now();
        loop {
            {
                let mut st = self.state.lock();
                loop {
                    if st.stop {
                        return;
                    }
                    let pause = if st.last_failed { BACKOFF } else { INTERVAL };
                    let due = last_round.elapsed() >= pause;
                    let behind = self.db.generation() > st.stats.published_generation;
                    if st.wake || (behind && due) {
                        break;
                    }
                    if !st.last_failed && last_ahead.elapsed() >= AHEAD_EVERY {
                        drop(st);
                        last_ahead = Instant::now();
                        self.upload_ahead();
                        self.drop_dead(false);
                        self.sweep();
                        self.evict();
                        st = self.state.lock();
                        continue;
                    }
                    let wait = if behind {
                        pause.saturating_sub(last_round.elapsed())
                    } else {
                        AHEAD_EVERY.saturating_sub(last_ahead.elapsed())
                    };
                    self.cv.wait_for(&mut st, wait);
                }
                st.wake = false;
            }
            last_round = Instant::now();
            if self.publish_once().is_ok() {
                self.sweep();
                self.evict();
            }
        }
    }

    /// Deletes the local data files no kept version and no pending write
    /// uses (every `DROP_EVERY` after a commit, or now when `force`); the
    /// store's copies go at the sweep after the next publish, which this
    /// asks for (the manifest changed). Whether it deleted any.
    fn drop_dead(&self, force: bool) -> bool {
        let generation = self.db.generation();
        {
            let st = self.state.lock();
            let idle = generation <= st.last_drop_generation;
            if !force && (idle || st.last_drop.elapsed() < DROP_EVERY) {
                return false;
            }
        }
        // At the start and the end nothing may be left for later: wait for
        // a compaction under way rather than skip.
        let dropped = self.db.drop_dead_files(force);
        let compacted = match self.compact_ratio > 0.0 {
            true => self.db.compact_if_garbage(self.compact_ratio),
            false => Ok(None),
        };
        let mut st = self.state.lock();
        st.last_drop = Instant::now();
        st.last_drop_generation = generation;
        let mut removed = 0;
        for r in [dropped.map(Some), compacted] {
            match r {
                Ok(Some(r)) => {
                    removed += r.files_removed;
                    st.stats.dropped_local_files += r.files_removed as u64;
                    st.stats.dropped_local_bytes += r.bytes_reclaimed;
                }
                Ok(None) => {}
                Err(e) => tracing::warn!("reclaim dead data: {e}"),
            }
        }
        if removed > 0 {
            st.wake = true;
            self.cv.notify_all();
        }
        if force {
            tracing::info!(
                "dropped or compacted away {removed} data files (generation {generation})"
            );
        }
        removed > 0
    }

    /// Evicts data files the store holds whole, oldest first, while the
    /// local ones hold more than the limit.
    fn evict(&self) {
        use std::os::unix::fs::MetadataExt;
        let dir = self.backing.join(DATA_DIR);
        let Ok(entries) = std::fs::read_dir(&dir) else {
            return;
        };
        let mut local: Vec<(std::time::SystemTime, String, u64)> = entries
            .filter_map(|e| {
                let e = e.ok()?;
                let m = e.metadata().ok()?;
                let name = format!("{DATA_DIR}/{}", e.file_name().to_str()?);
                Some((m.modified().ok()?, name, m.blocks() * 512))
            })
            .collect();
        let mut total: u64 = local.iter().map(|l| l.2).sum();
        let (limit, stored) = {
            let mut st = self.state.lock();
            st.stats.local_bytes = total;
            let limit = st.stats.local_limit;
            if total <= limit {
                return;
            }
            // On the store whole: sealed by the last publish, or uploaded
            // ahead of it (both only ever finished files).
            let mut stored: HashSet<String> = st.last_sealed.clone().unwrap_or_default();
            stored.extend(st.ahead.iter().cloned());
            for e in &st.evicted {
                stored.remove(e);
            }
            (limit, stored)
        };
        local.sort();
        for (_, name, held) in local {
            if total <= limit {
                break;
            }
            if held == 0 || !stored.contains(&name) {
                continue;
            }
            match self.db.evict(&name) {
                Ok(0) => {}
                Ok(freed) => {
                    total = total.saturating_sub(freed);
                    let mut st = self.state.lock();
                    st.evicted.insert(name);
                    st.stats.evicted_files += 1;
                    st.stats.evicted_bytes += freed;
                }
                Err(e) => tracing::warn!("evict {name}: {e}"),
            }
        }
        self.state.lock().stats.local_bytes = total;
    }

    /// Deletes the store's data files that the last publish did not seal
    /// and the local database no longer holds, when some may be there.
    fn sweep(&self) {
        let (published, oldest) = {
            let mut st = self.state.lock();
            let rested = st.last_sweep.is_none_or(|t| t.elapsed() >= SWEEP_RETRY);
            let Some(sealed) = st.last_sealed.clone().filter(|_| st.sweep_due && rested) else {
                return;
            };
            st.last_sweep = Some(Instant::now());
            (sealed, st.oldest_kept)
        };
        let store = self.publisher.store();
        let r = local_files(&self.backing)
            .and_then(|local| s3_gc::sweep_writer(&store, &published, &local, oldest));
        let mut st = self.state.lock();
        match r {
            Ok(Ok(r)) => {
                st.sweep_due = false;
                st.stats.removed_files += r.removed_files;
                st.stats.removed_bytes += r.removed_bytes;
                st.stats.deferred_for = None;
                if r.removed_files > 0 {
                    tracing::info!(
                        "removed {} data files ({} bytes) no kept version uses from {}",
                        r.removed_files,
                        r.removed_bytes,
                        self.publisher.location()
                    );
                }
            }
            Ok(Err(Refused::Readers(who) | Refused::Writer(who))) => {
                st.stats.sweeps_deferred += 1;
                st.stats.deferred_for = Some(who);
            }
            Err(e) => tracing::warn!("sweep {}: {e:#}", self.publisher.location()),
        }
    }

    /// Uploads the data files a save has finished, before its commit. A
    /// failure is left to the next publish, which uploads them again.
    fn upload_ahead(&self) {
        let r = (|| -> Result<(u64, u64)> {
            let _pin = self.db.pin_versions().context("pin the database")?;
            let files = self.db.finished_files(AHEAD_ROLL_BYTES)?;
            let fresh: Vec<String> = {
                let st = self.state.lock();
                files
                    .into_iter()
                    .filter(|f| !st.ahead.contains(f))
                    .collect()
            };
            if fresh.is_empty() {
                return Ok((0, 0));
            }
            let done = self.publisher.upload_ahead(&self.backing, &fresh)?;
            self.state.lock().ahead.extend(fresh);
            Ok(done)
        })();
        match r {
            Ok((files, bytes)) => {
                let mut st = self.state.lock();
                st.stats.uploaded_files += files;
                st.stats.uploaded_bytes += bytes;
                st.stats.uploaded_ahead_bytes += bytes;
            }
            Err(e) => tracing::warn!("upload ahead of the commit failed: {e:#}"),
        }
    }

    /// One publish of the newest version, counted in the state.
    fn publish_once(&self) -> Result<()> {
        self.state.lock().started += 1;
        let r = self.publish_newest();
        let mut st = self.state.lock();
        st.finished += 1;
        let out = match r {
            Ok((report, sealed)) => {
                // A file the last publish sealed and this one did not was
                // deleted locally (compaction): the store's copy is garbage.
                let gone = |last: &HashSet<String>| !last.is_subset(&sealed);
                st.sweep_due |= st.last_sealed.as_ref().is_some_and(gone);
                st.last_sealed = Some(sealed);
                st.oldest_kept = report.oldest_kept_generation;
                let s = &mut st.stats;
                s.publishes += 1;
                s.published_generation = s.published_generation.max(report.generation);
                s.uploaded_files += report.uploaded_files;
                s.uploaded_bytes += report.uploaded_bytes;
                s.publish_seconds += report.seconds;
                s.last_error = None;
                st.last_failed = false;
                Ok(())
            }
            Err(e) => {
                tracing::error!("publish to the store failed: {e:#}");
                st.stats.failed_publishes += 1;
                st.stats.last_error = Some(format!("{e:#}"));
                st.last_failed = true;
                Err(e)
            }
        };
        self.cv.notify_all();
        out
    }

    /// Publishes, and says which data files the publish sealed.
    fn publish_newest(&self) -> Result<(PublishReport, HashSet<String>)> {
        // The pin first: a compaction under way finishes, and none starts
        // until the upload is done (it would rewrite and delete files).
        let _pin = self.db.pin_versions().context("pin the database")?;
        let sealed = self.db.seal_for_copy().context("seal the database")?;
        let files = sealed.files.iter().cloned().collect();
        Ok((self.publisher.publish_sealed(&self.backing, sealed)?, files))
    }
}

impl Upstream for WriteBack {
    fn status(&self) -> serde_json::Value {
        serde_json::to_value(self.stats()).unwrap_or_default()
    }

    fn sync(&self, generation: u64) -> FsResult<()> {
        let sh = &self.shared;
        let deadline = Instant::now() + SYNC_TIMEOUT;
        let mut st = sh.state.lock();
        // The first publish that begins after this point covers the
        // generation: its outcome is the answer.
        let ours = st.started + 1;
        st.wake = true;
        sh.cv.notify_all();
        loop {
            if st.stats.published_generation >= generation {
                return Ok(());
            }
            if st.finished >= ours && st.last_failed {
                let why = st.stats.last_error.clone().unwrap_or_default();
                return Err(FsError::new(libc::EIO, format!("publish: {why}")));
            }
            if st.stop {
                return Err(FsError::new(libc::EIO, "publish: the mount is stopping"));
            }
            if Instant::now() >= deadline {
                return Err(FsError::new(libc::EIO, "publish: timed out"));
            }
            if !st.wake && st.finished >= ours {
                // Published an older generation (a commit raced the seal):
                // once more.
                st.wake = true;
                sh.cv.notify_all();
            }
            sh.cv.wait_for(&mut st, Duration::from_millis(500));
        }
    }
}
