//! `ckptfs report PROFILE`: a profile as tables (by operation, stage or
//! file), sorted by total time, in text, markdown or JSON.

use anyhow::{anyhow, Result};
use serde_json::Value;

/// Which table a report shows: one row per FUSE operation, per backend stage, or per file and
/// operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum By {
    Op,
    Stage,
    File,
}

/// Output format of `ckptfs report`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Table,
    Markdown,
    Json,
}

/// One line of a report table, from one operation's or stage's totals.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Row {
    /// Operation, stage, or `<file> <op>`.
    pub name: String,
    /// How many times it ran.
    pub count: u64,
    /// How many of those failed.
    pub errors: u64,
    /// Bytes it moved.
    pub bytes: u64,
    /// Time spent in it, summed over every run (concurrent runs add up).
    pub total_s: f64,
    /// `bytes` over `total_s`, in MB/s.
    pub mb_per_s: f64,
    /// Mean time per run, in milliseconds.
    pub mean_ms: f64,
    /// Median time per run (0 without histograms: profile level `counters`).
    pub p50_ms: f64,
    /// 99th-percentile time per run (0 without histograms).
    pub p99_ms: f64,
    /// `total_s` as a share of the mount's wall time.
    pub share: f64,
}

/// The profile a `ckptfs report` argument names: a profile file itself, a
/// mountpoint's live figures (`MNT/.ckptfs/stats`), or the profile a
/// backing dir keeps from its last unmount (`BACKING/.ckptfs/profile.json`).
pub fn locate(arg: &std::path::Path) -> Result<std::path::PathBuf> {
    if !arg.is_dir() {
        return Ok(arg.to_path_buf());
    }
    let dir = arg.join(".ckptfs");
    for name in ["stats", "profile.json"] {
        if dir.join(name).is_file() {
            return Ok(dir.join(name));
        }
    }
    Err(anyhow!(
        "{} holds no profile: expected a mount's {} or a backing dir's {} (written at unmount or on SIGUSR1)",
        arg.display(),
        dir.join("stats").display(),
        dir.join("profile.json").display()
    ))
}

/// The profiler snapshot inside a profile file (or a bare snapshot).
pub fn snapshot(doc: &Value) -> &Value {
    doc.get("profile").unwrap_or(doc)
}

fn row(name: String, s: &Value, wall: f64) -> Row {
    let f = |k: &str| s.get(k).and_then(Value::as_f64).unwrap_or(0.0);
    let u = |k: &str| s.get(k).and_then(Value::as_u64).unwrap_or(0);
    let total = f("total_s");
    Row {
        name,
        count: u("count"),
        errors: u("errors"),
        bytes: u("bytes"),
        total_s: total,
        mb_per_s: if total > 0.0 {
            u("bytes") as f64 / total / 1e6
        } else {
            0.0
        },
        mean_ms: f("mean_s") * 1e3,
        p50_ms: f("p50_s") * 1e3,
        p99_ms: f("p99_s") * 1e3,
        share: if wall > 0.0 { total / wall } else { 0.0 },
    }
}

/// The profile's throughput timeline: bytes and operations per bucket.
pub struct Timeline {
    /// Width of a bucket in milliseconds.
    pub bucket_ms: u64,
    /// Per bucket, one value per `SERIES`.
    pub rows: Vec<[u64; 5]>,
}

/// The timeline's series, in the order of each row's values.
pub const SERIES: [&str; 5] = [
    "fs_read",
    "fs_written",
    "backend_read",
    "backend_written",
    "ops",
];

impl Timeline {
    /// Width of a bucket in seconds.
    pub fn bucket_s(&self) -> f64 {
        self.bucket_ms as f64 / 1e3
    }

    /// First and last bucket that moved a byte (operations alone do not
    /// count: a `stat` of the mountpoint is one).
    pub fn busy(&self) -> Option<(usize, usize)> {
        let moved = |r: &[u64; 5]| r[..4].iter().any(|&b| b > 0);
        let first = self.rows.iter().position(moved)?;
        let last = self.rows.iter().rposition(moved)?;
        Some((first, last))
    }
}

/// The throughput timeline of a profile; a profile that has no bucket width (older ones) has
/// one-second buckets.
pub fn timeline(doc: &Value) -> Timeline {
    let snap = snapshot(doc);
    // Profiles from before finer buckets have no width: one second.
    let bucket_ms = snap
        .get("timeline_bucket_ms")
        .and_then(Value::as_u64)
        .unwrap_or(1000)
        .max(1);
    let rows = snap
        .get("timeline")
        .and_then(Value::as_array)
        .map(|t| {
            t.iter()
                .map(|b| SERIES.map(|k| b.get(k).and_then(Value::as_u64).unwrap_or(0)))
                .collect()
        })
        .unwrap_or_default();
    Timeline { bucket_ms, rows }
}

/// One line on the timeline: its resolution, when bytes moved, and the
/// fastest bucket of each series.
fn timeline_line(doc: &Value) -> String {
    let t = timeline(doc);
    let Some((first, last)) = t.busy() else {
        return String::new();
    };
    let s = t.bucket_s();
    let peak = |i: usize| t.rows.iter().map(|r| r[i]).max().unwrap_or(0) as f64 / s / 1e6;
    format!(
        "timeline: {} buckets of {} ms, bytes moved from {:.2} s to {:.2} s; peak MB/s in a bucket: filesystem read {:.1}, write {:.1}; backend read {:.1}, write {:.1}\n",
        t.rows.len(),
        t.bucket_ms,
        first as f64 * s,
        (last + 1) as f64 * s,
        peak(0),
        peak(1),
        peak(2),
        peak(3)
    )
}

/// The rows of `doc` for the table `by`, longest total time first.
pub fn rows(doc: &Value, by: By) -> Result<Vec<Row>> {
    let snap = snapshot(doc);
    let wall = snap.get("wall_s").and_then(Value::as_f64).unwrap_or(0.0);
    let mut out = Vec::new();
    match by {
        By::Op | By::Stage => {
            let key = if by == By::Op { "ops" } else { "stages" };
            let map = snap
                .get(key)
                .and_then(Value::as_object)
                .ok_or_else(|| anyhow!("profile has no `{key}`"))?;
            for (name, s) in map {
                out.push(row(name.clone(), s, wall));
            }
        }
        By::File => {
            let map = snap
                .get("files")
                .and_then(Value::as_object)
                .ok_or_else(|| anyhow!("profile has no `files`"))?;
            for (file, ops) in map {
                if let Some(ops) = ops.as_object() {
                    for (op, s) in ops {
                        out.push(row(format!("{file} {op}"), s, wall));
                    }
                }
            }
        }
    }
    out.sort_by(|a, b| b.total_s.total_cmp(&a.total_s));
    Ok(out)
}

const HEAD: [&str; 10] = [
    "name", "count", "errors", "bytes", "total s", "MB/s", "mean ms", "p50 ms", "p99 ms", "% wall",
];

fn cells(r: &Row) -> [String; 10] {
    [
        r.name.clone(),
        r.count.to_string(),
        r.errors.to_string(),
        r.bytes.to_string(),
        format!("{:.4}", r.total_s),
        format!("{:.1}", r.mb_per_s),
        format!("{:.3}", r.mean_ms),
        format!("{:.3}", r.p50_ms),
        format!("{:.3}", r.p99_ms),
        format!("{:.1}", r.share * 100.0),
    ]
}

/// Which paths the kernel took: passthrough opens are served by the
/// kernel from the backing file, so their bytes are in no row above.
fn io_paths_line(doc: &Value) -> String {
    let Some(p) = doc.get("io_paths") else {
        return String::new();
    };
    let n = |k: &str| p.get(k).and_then(Value::as_u64).unwrap_or(0);
    let mode = p
        .get("passthrough")
        .and_then(Value::as_str)
        .unwrap_or("off");
    format!(
        "opens: {} by kernel passthrough (passthrough {mode}; their reads and writes never reach the daemon and are not in the rows above), {} cached, {} direct\n",
        n("opens_passthrough"),
        n("opens_cached"),
        n("opens_direct")
    )
}

/// What a writer mount of `s3://…` published (none for other mounts).
fn publish_line(doc: &Value) -> String {
    let Some(p) = doc.get("publish").filter(|p| !p.is_null()) else {
        return String::new();
    };
    let n = |k: &str| p.get(k).and_then(Value::as_u64).unwrap_or(0);
    let gb = |k: &str| n(k) as f64 / 1e9;
    let mut s = format!(
        "published to {}: generation {}, {} publishes ({} failed), {} files / {:.3} GB uploaded ({:.3} GB ahead of their commit), {:.2} s publishing\n",
        p.get("store").and_then(Value::as_str).unwrap_or("?"),
        n("published_generation"),
        n("publishes"),
        n("failed_publishes"),
        n("uploaded_files"),
        gb("uploaded_bytes"),
        gb("uploaded_ahead_bytes"),
        p.get("publish_seconds").and_then(Value::as_f64).unwrap_or(0.0)
    );
    s.push_str(&format!(
        "no longer used: {} data files / {:.3} GB dropped locally, {} files / {:.3} GB removed from the store, {} sweeps held off by readers\n",
        n("dropped_local_files"),
        gb("dropped_local_bytes"),
        n("removed_files"),
        gb("removed_bytes"),
        n("sweeps_deferred")
    ));
    if let Some(e) = p.get("last_error").and_then(Value::as_str) {
        s.push_str(&format!("last publish failed: {e}\n"));
    }
    s
}

/// Renders the table `by` of `doc` as text, markdown or JSON.
pub fn render(doc: &Value, by: By, format: Format) -> Result<String> {
    let rows = rows(doc, by)?;
    let snap = snapshot(doc);
    Ok(match format {
        Format::Json => serde_json::to_string_pretty(&serde_json::json!({
            "by": format!("{by:?}").to_lowercase(),
            "wall_s": snap.get("wall_s"),
            "read_amplification": snap.get("read_amplification"),
            "write_amplification": snap.get("write_amplification"),
            "timeline_bucket_ms": timeline(doc).bucket_ms,
            "io_paths": doc.get("io_paths"),
            "publish": doc.get("publish"),
            "rows": rows,
        }))?,
        Format::Markdown => {
            let mut s = format!("| {} |\n|{}\n", HEAD.join(" | "), "---|".repeat(HEAD.len()));
            for r in &rows {
                s.push_str(&format!("| {} |\n", cells(r).join(" | ")));
            }
            s
        }
        Format::Table => {
            let all: Vec<[String; 10]> = rows.iter().map(cells).collect();
            let mut width = HEAD.map(str::len);
            for c in &all {
                for (w, v) in width.iter_mut().zip(c) {
                    *w = (*w).max(v.len());
                }
            }
            let line = |c: &[String]| -> String {
                c.iter()
                    .enumerate()
                    .map(|(i, v)| {
                        if i == 0 {
                            format!("{v:<w$}", w = width[i])
                        } else {
                            format!("{v:>w$}", w = width[i])
                        }
                    })
                    .collect::<Vec<_>>()
                    .join("  ")
            };
            let mut s = line(&HEAD.map(String::from));
            s.push('\n');
            for c in &all {
                s.push_str(&line(c));
                s.push('\n');
            }
            let f = |k: &str| snap.get(k).and_then(Value::as_f64).unwrap_or(0.0);
            s.push_str(&format!(
                "wall {:.2} s; read amplification {:.3}, write amplification {:.3}\n",
                f("wall_s"),
                f("read_amplification"),
                f("write_amplification")
            ));
            s.push_str(&timeline_line(doc));
            s.push_str(&io_paths_line(doc));
            s.push_str(&publish_line(doc));
            s
        }
    })
}
