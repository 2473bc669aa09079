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

use std::path::PathBuf;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context, Result};
use parking_lot::{Condvar, Mutex};

use crate::error::{FsError, FsResult};
use crate::ocdbt::Db;
use crate::publish::{PublishReport, Publisher};
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
}

struct Shared {
    backing: PathBuf,
    db: Arc<Db>,
    publisher: Publisher,
    state: Mutex<State>,
    cv: Condvar,
}

/// The publisher of one writer mount.
pub struct WriteBack {
    shared: Arc<Shared>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl WriteBack {
    /// Starts publishing `db` (the packed database in `backing`).
    pub fn start(backing: PathBuf, db: Arc<Db>, publisher: Publisher) -> Result<Arc<Self>> {
        let shared = Arc::new(Shared {
            backing,
            db,
            state: Mutex::new(State {
                stats: WriteBackStats {
                    store: publisher.location().to_string(),
                    conditional_put_enforced: publisher.conditional_put_enforced(),
                    ..WriteBackStats::default()
                },
                ahead: Default::default(),
                started: 0,
                finished: 0,
                last_failed: false,
                wake: false,
                stop: false,
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
        let mut last = None;
        for attempt in 0..FINAL_ATTEMPTS {
            if attempt > 0 {
                std::thread::sleep(BACKOFF);
            }
            if self.shared.db.generation() <= self.stats().published_generation {
                return Ok(self.stats());
            }
            match self.shared.publish_once() {
                Ok(()) => return Ok(self.stats()),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| anyhow!("not published")))
    }
}

impl Shared {
    fn run(&self) {
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
            let _ = self.publish_once();
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
            Ok(report) => {
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

    fn publish_newest(&self) -> Result<PublishReport> {
        // The pin first: a compaction under way finishes, and none starts
        // until the upload is done (it would rewrite and delete files).
        let _pin = self.db.pin_versions().context("pin the database")?;
        let sealed = self.db.seal_for_copy().context("seal the database")?;
        self.publisher.publish_sealed(&self.backing, sealed)
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
