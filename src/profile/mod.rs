//! The built-in profiler: counters and latencies per FUSE operation and per
//! backend stage, and bytes served versus bytes stored.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use dashmap::DashMap;
use serde::Serialize;

/// Totals for one operation or stage.
#[derive(Debug, Default)]
pub struct Stat {
    pub count: AtomicU64,
    pub errors: AtomicU64,
    pub bytes: AtomicU64,
    pub total_ns: AtomicU64,
    pub max_ns: AtomicU64,
}

#[derive(Debug, Serialize)]
pub struct StatSnapshot {
    pub count: u64,
    pub errors: u64,
    pub bytes: u64,
    pub total_s: f64,
    pub max_s: f64,
}

impl Stat {
    fn record(&self, ns: u64, bytes: u64, error: bool) {
        self.count.fetch_add(1, Ordering::Relaxed);
        self.bytes.fetch_add(bytes, Ordering::Relaxed);
        self.total_ns.fetch_add(ns, Ordering::Relaxed);
        self.max_ns.fetch_max(ns, Ordering::Relaxed);
        if error {
            self.errors.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn snapshot(&self) -> StatSnapshot {
        StatSnapshot {
            count: self.count.load(Ordering::Relaxed),
            errors: self.errors.load(Ordering::Relaxed),
            bytes: self.bytes.load(Ordering::Relaxed),
            total_s: self.total_ns.load(Ordering::Relaxed) as f64 / 1e9,
            max_s: self.max_ns.load(Ordering::Relaxed) as f64 / 1e9,
        }
    }
}

/// Aggregates every measurement of a mount.
#[derive(Debug, Default)]
pub struct Profiler {
    ops: DashMap<&'static str, Stat>,
    stages: DashMap<&'static str, Stat>,
    backend_written: AtomicU64,
    backend_read: AtomicU64,
}

/// Times a stage until dropped.
pub struct StageTimer<'a> {
    profiler: &'a Profiler,
    name: &'static str,
    start: Instant,
}

impl Drop for StageTimer<'_> {
    fn drop(&mut self) {
        let ns = self.start.elapsed().as_nanos() as u64;
        self.profiler
            .stages
            .entry(self.name)
            .or_default()
            .record(ns, 0, false);
    }
}

impl Profiler {
    pub fn stage(&self, name: &'static str) -> StageTimer<'_> {
        StageTimer {
            profiler: self,
            name,
            start: Instant::now(),
        }
    }

    /// Records one FUSE operation.
    pub fn op(&self, name: &'static str, start: Instant, bytes: u64, error: bool) {
        let ns = start.elapsed().as_nanos() as u64;
        self.ops.entry(name).or_default().record(ns, bytes, error);
    }

    pub fn add_backend_write(&self, bytes: u64) {
        self.backend_written.fetch_add(bytes, Ordering::Relaxed);
    }

    pub fn add_backend_read(&self, bytes: u64) {
        self.backend_read.fetch_add(bytes, Ordering::Relaxed);
    }

    /// All counters as JSON.
    pub fn snapshot(&self) -> serde_json::Value {
        let ops: serde_json::Map<String, serde_json::Value> = self
            .ops
            .iter()
            .map(|e| (e.key().to_string(), serde_json::json!(e.value().snapshot())))
            .collect();
        let stages: serde_json::Map<String, serde_json::Value> = self
            .stages
            .iter()
            .map(|e| (e.key().to_string(), serde_json::json!(e.value().snapshot())))
            .collect();
        serde_json::json!({
            "ops": ops,
            "stages": stages,
            "backend_written_bytes": self.backend_written.load(Ordering::Relaxed),
            "backend_read_bytes": self.backend_read.load(Ordering::Relaxed),
        })
    }
}
