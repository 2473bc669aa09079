//! One operation's or stage's totals and latency histogram.

use std::sync::atomic::{AtomicU64, Ordering};

use hdrhistogram::Histogram;
use parking_lot::Mutex;

/// Totals and (at level `full`) a latency histogram of one operation or stage; updated lock-free
/// except for the histogram.
pub struct Stat {
    count: AtomicU64,
    errors: AtomicU64,
    bytes: AtomicU64,
    total_ns: AtomicU64,
    max_ns: AtomicU64,
    /// Latency in microseconds (`full` level only).
    hist: Mutex<Option<Histogram<u64>>>,
}

impl Default for Stat {
    fn default() -> Self {
        Stat {
            count: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            total_ns: AtomicU64::new(0),
            max_ns: AtomicU64::new(0),
            hist: Mutex::new(Histogram::new_with_bounds(1, 3_600_000_000, 2).ok()),
        }
    }
}

impl Stat {
    /// Records one run: its time, its bytes, whether it failed, and (with `histogram`) its latency.
    pub fn record(&self, ns: u64, bytes: u64, error: bool, histogram: bool) {
        self.count.fetch_add(1, Ordering::Relaxed);
        self.bytes.fetch_add(bytes, Ordering::Relaxed);
        self.total_ns.fetch_add(ns, Ordering::Relaxed);
        self.max_ns.fetch_max(ns, Ordering::Relaxed);
        if error {
            self.errors.fetch_add(1, Ordering::Relaxed);
        }
        if histogram {
            if let Some(h) = self.hist.lock().as_mut() {
                h.saturating_record((ns / 1000).max(1));
            }
        }
    }

    /// How many runs were recorded.
    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    /// Bytes recorded over all runs.
    pub fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }

    /// The totals as JSON: count, errors, bytes, total, mean, p50/p90/p99 and max time in seconds.
    pub fn snapshot(&self) -> serde_json::Value {
        let count = self.count.load(Ordering::Relaxed);
        let total = self.total_ns.load(Ordering::Relaxed) as f64 / 1e9;
        let (p50, p90, p99) = match self.hist.lock().as_ref() {
            Some(h) if !h.is_empty() => (
                h.value_at_quantile(0.5) as f64 / 1e6,
                h.value_at_quantile(0.9) as f64 / 1e6,
                h.value_at_quantile(0.99) as f64 / 1e6,
            ),
            _ => (0.0, 0.0, 0.0),
        };
        serde_json::json!({
            "count": count,
            "errors": self.errors.load(Ordering::Relaxed),
            "bytes": self.bytes(),
            "total_s": total,
            "mean_s": if count > 0 { total / count as f64 } else { 0.0 },
            "p50_s": p50,
            "p90_s": p90,
            "p99_s": p99,
            "max_s": self.max_ns.load(Ordering::Relaxed) as f64 / 1e9,
        })
    }
}
