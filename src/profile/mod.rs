//! The built-in profiler: every FUSE operation and every backend stage is
//! counted and timed (hdr histograms: p50/p90/p99/max), per operation, per
//! stage and per file, with bytes served by the filesystem against bytes
//! moved by the backend, and a per-second throughput timeline.
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
    Off,
    Counters,
    Full,
}

/// Read and write totals of one file.
#[derive(Default)]
pub struct FileStats {
    read: Stat,
    write: Stat,
}

/// Bytes per second, one row per second of the mount's life.
#[derive(Debug, Default, Clone, Copy, serde::Serialize)]
pub struct Second {
    pub fs_read: u64,
    pub fs_written: u64,
    pub backend_read: u64,
    pub backend_written: u64,
    pub ops: u64,
}

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
    timeline: Mutex<Vec<Second>>,
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
            timeline: Mutex::new(Vec::new()),
            accesslog: AccessLog::default(),
        }
    }

    pub fn level(&self) -> Level {
        match self.level.load(Ordering::Relaxed) {
            0 => Level::Off,
            1 => Level::Counters,
            _ => Level::Full,
        }
    }

    pub fn stage(&self, name: &'static str) -> StageTimer<'_> {
        StageTimer {
            profiler: self,
            name,
            start: (self.level() != Level::Off).then(Instant::now),
            bytes: 0,
        }
    }

    fn second(&self, f: impl FnOnce(&mut Second)) {
        let s = self.started.elapsed().as_secs() as usize;
        let mut t = self.timeline.lock();
        if t.len() <= s {
            t.resize(s + 1, Second::default());
        }
        f(&mut t[s]);
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
            self.second(|s| {
                s.ops += 1;
                match name {
                    "read" => s.fs_read += bytes,
                    "write" => s.fs_written += bytes,
                    _ => {}
                }
            });
        }
    }

    pub fn add_backend_write(&self, bytes: u64) {
        if self.level() == Level::Off {
            return;
        }
        self.backend_written.fetch_add(bytes, Ordering::Relaxed);
        if self.level() == Level::Full {
            self.second(|s| s.backend_written += bytes);
        }
    }

    pub fn add_backend_read(&self, bytes: u64) {
        if self.level() == Level::Off {
            return;
        }
        self.backend_read.fetch_add(bytes, Ordering::Relaxed);
        if self.level() == Level::Full {
            self.second(|s| s.backend_read += bytes);
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
            "timeline": *self.timeline.lock(),
            "accesslog_dropped_lines": self.accesslog.dropped(),
        })
    }
}
