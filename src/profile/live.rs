//! `ckptfs stats MOUNTPOINT`: live rates, one line per interval, read from
//! the mount's `.ckptfs/stats` snapshots (like `dstat` / `juicefs stats`).

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result};
use serde_json::Value;

fn get(v: &Value, path: &[&str]) -> f64 {
    let mut cur = v;
    for p in path {
        match cur.get(p) {
            Some(x) => cur = x,
            None => return 0.0,
        }
    }
    cur.as_f64().unwrap_or(0.0)
}

fn read(mnt: &Path) -> Result<Value> {
    let p = mnt.join(".ckptfs/stats");
    let text = std::fs::read(&p)
        .with_context(|| format!("read {} (is it a ckptfs mount?)", p.display()))?;
    serde_json::from_slice(&text).context("parse stats")
}

/// Prints a line per `interval` until `count` lines (forever if None).
pub fn run(mnt: &Path, interval: Duration, count: Option<u64>) -> Result<()> {
    let mut prev = read(mnt)?;
    println!(
        "{:>8} {:>8} {:>10} {:>10} {:>10} {:>10} {:>9} {:>9} {:>7} {:>9}",
        "time",
        "ops/s",
        "read MB/s",
        "write MB/s",
        "be rd MB/s",
        "be wr MB/s",
        "rd lat ms",
        "wr lat ms",
        "cache%",
        "budget MB"
    );
    let mut n = 0;
    loop {
        if count.is_some_and(|c| n >= c) {
            return Ok(());
        }
        std::thread::sleep(interval);
        let cur = read(mnt)?;
        let dt = (get(&cur, &["wall_s"]) - get(&prev, &["wall_s"])).max(1e-9);
        let d = |p: &[&str]| get(&cur, p) - get(&prev, p);
        let ops: f64 = cur
            .get("ops")
            .and_then(Value::as_object)
            .map(|m| m.keys().map(|k| d(&["ops", k, "count"])).sum())
            .unwrap_or(0.0);
        let lat = |op: &str| {
            let c = d(&["ops", op, "count"]);
            if c > 0.0 {
                d(&["ops", op, "total_s"]) / c * 1e3
            } else {
                0.0
            }
        };
        let hits = d(&["cache", "hits"]);
        let misses = d(&["cache", "misses"]);
        println!(
            "{:>8.1} {:>8.0} {:>10.1} {:>10.1} {:>10.1} {:>10.1} {:>9.3} {:>9.3} {:>7.1} {:>9.1}",
            get(&cur, &["wall_s"]),
            ops / dt,
            d(&["fs_read_bytes"]) / dt / 1e6,
            d(&["fs_written_bytes"]) / dt / 1e6,
            d(&["backend_read_bytes"]) / dt / 1e6,
            d(&["backend_written_bytes"]) / dt / 1e6,
            lat("read"),
            lat("write"),
            if hits + misses > 0.0 {
                hits / (hits + misses) * 100.0
            } else {
                0.0
            },
            get(&cur, &["memory_budget", "used"]) / 1e6,
        );
        prev = cur;
        n += 1;
    }
}
