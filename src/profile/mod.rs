//! The built-in profiler: every FUSE operation and every backend stage is
//! counted and timed (hdr histograms: p50/p90/p99/max), per operation, per
//! stage and per file, with bytes served by the filesystem against bytes
//! moved by the backend, and a throughput timeline whose buckets start at
//! 10 ms and widen as the mount lives on.
//!
//! `off` records nothing; `counters` keeps counts, bytes and total time;
//! `full` adds histograms, the timeline and the access log (which formats a
//! line only while someone reads `.ckptfs/accesslog`).

pub mod accesslog;
pub mod live;
pub mod plot;
pub mod report;
pub mod stat;

use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use dashmap::DashMap;
use parking_lot::Mutex;

use accesslog::AccessLog;
use stat::Stat;

/// How much the profiler records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Level {
    /// Nothing.
    Off,
    /// Counts, bytes, errors and total time per operation, stage and file.
    Counters,
    /// Counters, latency histograms, the timeline and the access log.
    Full,
}

/// Read and write totals of one file.
#[derive(Default)]
pub struct FileStats {
    read: Stat,
    write: Stat,
}

/// Bytes and operations in one bucket of the mount's life.
#[derive(Debug, Default, Clone, Copy, serde::Serialize)]
pub struct Bucket {
    /// Bytes the filesystem returned to readers.
    pub fs_read: u64,
    /// Bytes writers handed to the filesystem.
    pub fs_written: u64,
    /// Bytes read from the backing store.
    pub backend_read: u64,
    /// Bytes written to the backing store.
    pub backend_written: u64,
    /// FUSE operations.
    pub ops: u64,
}

impl Bucket {
    fn merge(&mut self, o: &Bucket) {
        self.fs_read += o.fs_read;
        self.fs_written += o.fs_written;
        self.backend_read += o.backend_read;
        self.backend_written += o.backend_written;
        self.ops += o.ops;
    }
}

/// The first bucket width: a 33 MB save through the default config takes
/// about 50 ms, which 100 ms buckets would still show as a single step.
pub const BUCKET_MS: u64 = 10;
/// Buckets kept at most. Past it neighbours merge and the bucket doubles, so
/// the width follows the mount's length (10 ms for the first 40 s, 1.28 s
/// for an hour) and the profile never holds more rows than an hour-long one
/// did with one-second buckets.
const MAX_BUCKETS: usize = 4096;

/// Throughput over the mount's life.
#[derive(Debug)]
struct Timeline {
    bucket_ms: u64,
    rows: Vec<Bucket>,
}

impl Timeline {
    fn new() -> Timeline {
        Timeline {
            bucket_ms: BUCKET_MS,
            rows: Vec::new(),
        }
    }

    /// The bucket of `elapsed_ms`; called under the profiler's lock on every
    /// operation, so it only divides (the rare coarsening is O(MAX_BUCKETS)).
    fn at(&mut self, elapsed_ms: u64) -> &mut Bucket {
        let mut i = (elapsed_ms / self.bucket_ms) as usize;
        while i >= MAX_BUCKETS {
            self.coarsen();
            i = (elapsed_ms / self.bucket_ms) as usize;
        }
        if self.rows.len() <= i {
            self.rows.resize(i + 1, Bucket::default());
        }
        &mut self.rows[i]
    }

    /// Merges neighbours: twice the bucket, half the rows.
    fn coarsen(&mut self) {
        self.rows = self
            .rows
            .chunks(2)
            .map(|pair| {
                let mut b = pair[0];
                if let Some(o) = pair.get(1) {
                    b.merge(o);
                }
                b
            })
            .collect();
        self.bucket_ms *= 2;
    }
}

/// Counts and times every FUSE operation and backend stage of a mount, per operation, stage and
/// file, at the level it was made with.
pub struct Profiler {
    level: AtomicU8,
    started: Instant,
    started_unix: f64,
    ops: DashMap<&'static str, Stat>,
    stages: DashMap<&'static str, Stat>,
    /// Reads and writes per file name (looked up by `&str`: no allocation
    /// per request once a file has been seen).
    files: DashMap<Arc<str>, FileStats>,
    backend_written: AtomicU64,
    backend_read: AtomicU64,
    timeline: Mutex<Timeline>,
    /// The `.ckptfs/accesslog` stream.
    pub accesslog: AccessLog,
}

/// Times a stage until dropped.
pub struct StageTimer<'a> {
    profiler: &'a Profiler,
    name: &'static str,
    start: Option<Instant>,
    bytes: u64,
}

impl StageTimer<'_> {
    /// Counts `n` bytes as moved by this stage (its MB/s in the report).
    pub fn add_bytes(&mut self, n: u64) {
        self.bytes += n;
    }
}

impl Drop for StageTimer<'_> {
    fn drop(&mut self) {
        if let Some(start) = self.start {
            let ns = start.elapsed().as_nanos() as u64;
            let full = self.profiler.level() == Level::Full;
            self.profiler
                .stages
                .entry(self.name)
                .or_default()
                .record(ns, self.bytes, false, full);
        }
    }
}

impl Default for Profiler {
    fn default() -> Self {
        Profiler::new(Level::Full)
    }
}

impl Profiler {
    /// A profiler recording at `level`, its clock started now.
    pub fn new(level: Level) -> Self {
        Profiler {
            level: AtomicU8::new(level as u8),
            started: Instant::now(),
            started_unix: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_secs_f64())
                .unwrap_or(0.0),
            ops: DashMap::new(),
            stages: DashMap::new(),
            files: DashMap::new(),
            backend_written: AtomicU64::new(0),
            backend_read: AtomicU64::new(0),
            timeline: Mutex::new(Timeline::new()),
            accesslog: AccessLog::default(),
        }
    }

    /// How much it records.
    pub fn level(&self) -> Level {
        match self.level.load(Ordering::Relaxed) {
            0 => Level::Off,
            1 => Level::Counters,
            _ => Level::Full,
        }
    }

    /// Whether an operation gets an access-log line: at `full` only, like
    /// the other per-request detail, and only while someone reads the log.
    pub fn logs_access(&self) -> bool {
        self.level() == Level::Full && self.accesslog.enabled()
    }

    /// Times the stage `name` until the returned timer is dropped (records nothing at level `off`).
    pub fn stage(&self, name: &'static str) -> StageTimer<'_> {
        StageTimer {
            profiler: self,
            name,
            start: (self.level() != Level::Off).then(Instant::now),
            bytes: 0,
        }
    }

    fn bucket(&self, f: impl FnOnce(&mut Bucket)) {
        let ms = self.started.elapsed().as_millis() as u64;
        f(self.timeline.lock().at(ms));
    }

    /// Records one FUSE operation (on `file`, when it has one).
    pub fn op(
        &self,
        name: &'static str,
        start: Instant,
        bytes: u64,
        error: bool,
        file: Option<&str>,
    ) {
        let level = self.level();
        if level == Level::Off {
            return;
        }
        let ns = start.elapsed().as_nanos() as u64;
        let full = level == Level::Full;
        self.ops
            .entry(name)
            .or_default()
            .record(ns, bytes, error, full);
        if let Some(f) = file {
            if name == "read" || name == "write" {
                let record = |s: &FileStats| {
                    let stat = if name == "read" { &s.read } else { &s.write };
                    stat.record(ns, bytes, error, full);
                };
                match self.files.get(f) {
                    Some(s) => record(&s),
                    None => record(&self.files.entry(Arc::from(f)).or_default()),
                }
            }
        }
        if full {
            self.bucket(|s| {
                s.ops += 1;
                match name {
                    "read" => s.fs_read += bytes,
                    "write" => s.fs_written += bytes,
                    _ => {}
                }
            });
        }
    }

    /// Counts bytes written to the backing store (and on the timeline at `full`).
    pub fn add_backend_write(&self, bytes: u64) {
        if self.level() == Level::Off {
            return;
        }
        self.backend_written.fetch_add(bytes, Ordering::Relaxed);
        if self.level() == Level::Full {
            self.bucket(|s| s.backend_written += bytes);
        }
    }

    /// Counts bytes read from the backing store (and on the timeline at `full`).
    pub fn add_backend_read(&self, bytes: u64) {
        if self.level() == Level::Off {
            return;
        }
        self.backend_read.fetch_add(bytes, Ordering::Relaxed);
        if self.level() == Level::Full {
            self.bucket(|s| s.backend_read += bytes);
        }
    }

    /// Everything measured so far, as JSON.
    pub fn snapshot(&self) -> serde_json::Value {
        let table =
            |m: &DashMap<&'static str, Stat>| -> serde_json::Map<String, serde_json::Value> {
                m.iter()
                    .map(|e| (e.key().to_string(), e.value().snapshot()))
                    .collect()
            };
        let mut files = serde_json::Map::new();
        for e in self.files.iter() {
            let mut ops = serde_json::Map::new();
            for (op, stat) in [("read", &e.value().read), ("write", &e.value().write)] {
                if stat.count() > 0 {
                    ops.insert(op.to_string(), stat.snapshot());
                }
            }
            files.insert(e.key().to_string(), serde_json::Value::Object(ops));
        }
        let fs_read: u64 = self.ops.get("read").map(|s| s.bytes()).unwrap_or(0);
        let fs_written: u64 = self.ops.get("write").map(|s| s.bytes()).unwrap_or(0);
        let backend_written = self.backend_written.load(Ordering::Relaxed);
        let backend_read = self.backend_read.load(Ordering::Relaxed);
        let ratio = |a: u64, b: u64| if b > 0 { a as f64 / b as f64 } else { 0.0 };
        let (bucket_ms, timeline) = {
            let t = self.timeline.lock();
            (t.bucket_ms, t.rows.clone())
        };
        serde_json::json!({
            "level": self.level(),
            "started_unix": self.started_unix,
            "wall_s": self.started.elapsed().as_secs_f64(),
            "ops": table(&self.ops),
            "stages": table(&self.stages),
            "files": files,
            "fs_read_bytes": fs_read,
            "fs_written_bytes": fs_written,
            "backend_read_bytes": backend_read,
            "backend_written_bytes": backend_written,
            "read_amplification": ratio(backend_read, fs_read),
            "write_amplification": ratio(backend_written, fs_written),
            "timeline": timeline,
            "timeline_bucket_ms": bucket_ms,
            "accesslog_dropped_lines": self.accesslog.dropped(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_full_level_writes_the_access_log() {
        for (level, logs) in [
            (Level::Off, false),
            (Level::Counters, false),
            (Level::Full, true),
        ] {
            let p = Profiler::new(level);
            assert!(!p.logs_access(), "{level:?} with no reader");
            let reader = p.accesslog.attach();
            assert_eq!(p.logs_access(), logs, "{level:?} with a reader");
            p.accesslog.detach(&reader);
        }
    }

    #[test]
    fn the_timeline_starts_at_10ms_buckets_and_coarsens_past_its_limit() {
        let mut t = Timeline::new();
        t.at(5).fs_written += 1;
        t.at(15).fs_written += 2;
        t.at(25).backend_written += 4;
        assert_eq!(t.bucket_ms, 10);
        assert_eq!(t.rows.len(), 3);
        assert_eq!(t.rows[1].fs_written, 2);
        // Far past the limit: buckets double until it fits, nothing lost.
        let late = BUCKET_MS * MAX_BUCKETS as u64 * 3;
        t.at(late).fs_read += 8;
        assert!(t.rows.len() <= MAX_BUCKETS, "{}", t.rows.len());
        assert_eq!(t.bucket_ms, 4 * BUCKET_MS);
        assert_eq!(t.rows[0].fs_written, 3);
        assert_eq!(t.rows[0].backend_written, 4);
        let total: u64 = t
            .rows
            .iter()
            .map(|b| b.fs_read + b.fs_written + b.backend_written)
            .sum();
        assert_eq!(total, 15);
        assert_eq!(t.rows[(late / t.bucket_ms) as usize].fs_read, 8);
        // An hour: 1.28 s buckets.
        t.at(3_600_000).ops += 1;
        assert_eq!(t.bucket_ms, 1280);
        assert!(t.rows.len() <= MAX_BUCKETS);
    }
}
