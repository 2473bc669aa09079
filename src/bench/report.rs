//! The human-readable results: the seeds' table as markdown, and the
//! one-screen summary printed at the end.

use std::fmt::Write;

use super::results::{BenchResults, Status, StrategyResult};

/// Decimal units, as the seeds' tables use ("1.81 GB").
pub struct SizeUnit {
    /// Its symbol, `GB` or `MB`.
    pub name: &'static str,
    /// Bytes in one unit.
    pub bytes: f64,
}

/// GB when any strategy stored a gigabyte or more, else MB.
pub fn size_unit(strategies: &[StrategyResult]) -> SizeUnit {
    let largest = strategies
        .iter()
        .filter_map(|s| s.summary.as_ref())
        .map(|m| m.backing_bytes.mean)
        .fold(0.0, f64::max);
    if largest >= 1e9 {
        SizeUnit {
            name: "GB",
            bytes: 1e9,
        }
    } else {
        SizeUnit {
            name: "MB",
            bytes: 1e6,
        }
    }
}

/// Strategy label with its lossy stored dtype, if any.
pub fn label(s: &StrategyResult) -> String {
    match s.narrowing {
        super::verify::Narrowing::None => s.name.clone(),
        super::verify::Narrowing::Float16 => format!("{} (lossy f16)", s.name),
        super::verify::Narrowing::Bfloat16 => format!("{} (lossy bf16)", s.name),
    }
}

fn pct(p: Option<f64>) -> String {
    match p {
        Some(p) if p.abs() < 0.05 => "0.0%".into(),
        Some(p) => format!("{p:+.1}%"),
        None => "—".into(),
    }
}

/// Seconds with enough decimals to tell small runs apart.
fn decimals_for(strategies: &[StrategyResult]) -> usize {
    let smallest = strategies
        .iter()
        .filter_map(|s| s.summary.as_ref())
        .flat_map(|m| [m.save_s.mean, m.load_s.mean])
        .fold(f64::INFINITY, f64::min);
    if smallest < 0.1 {
        3
    } else {
        2
    }
}

/// The markdown table alone.
pub fn table(r: &BenchResults) -> String {
    let unit = size_unit(&r.strategies);
    let dec = decimals_for(&r.strategies);
    let base = r.baseline.as_deref().unwrap_or("baseline");
    let mut out = String::new();
    let _ = writeln!(
        out,
        "| strategy | save s | load s | size {u} | files | save vs {base} | load vs {base} | daemon peak RSS MiB | file bytes {u} |",
        u = unit.name
    );
    let _ = writeln!(out, "|---|---|---|---|---|---|---|---|---|");
    for s in &r.strategies {
        let name = label(s);
        match (&s.summary, s.status) {
            (_, Status::Unavailable) => {
                let _ = writeln!(
                    out,
                    "| {name} | unavailable: {} | | | | | | | |",
                    one_line(s.reason.as_deref().unwrap_or("mount did not start"))
                );
            }
            (None, _) => {
                let _ = writeln!(
                    out,
                    "| {name} | FAILED: {} | | | | | | | |",
                    one_line(s.reason.as_deref().unwrap_or("no run completed"))
                );
            }
            (Some(m), status) => {
                let name = if status == Status::Failed {
                    format!("{name} **FAILED**")
                } else {
                    name
                };
                let (sp, lp) = if s.name == base {
                    ("baseline".to_string(), "baseline".to_string())
                } else {
                    (pct(m.save_improvement_pct), pct(m.load_improvement_pct))
                };
                let rss = m
                    .daemon_peak_rss_bytes
                    .map(|v| format!("{:.0}", v.mean / (1024.0 * 1024.0)))
                    .unwrap_or_else(|| "—".into());
                let _ = writeln!(
                    out,
                    "| {name} | {} | {} | {:.3} | {:.0} | {sp} | {lp} | {rss} | {:.3} |",
                    m.save_s.display(dec),
                    m.load_s.display(dec),
                    m.backing_bytes.mean / unit.bytes,
                    m.backing_files.mean,
                    m.backing_apparent_bytes.mean / unit.bytes,
                );
            }
        }
    }
    out
}

fn one_line(s: &str) -> String {
    let s = s.replace(['\n', '|'], " ");
    if s.chars().count() > 240 {
        format!("{}…", s.chars().take(240).collect::<String>())
    } else {
        s
    }
}

/// The fastest save, fastest load and smallest lossless layout.
pub fn highlights(r: &BenchResults) -> Vec<String> {
    let ok: Vec<_> = r
        .strategies
        .iter()
        .filter(|s| s.status == Status::Ok)
        .filter_map(|s| s.summary.as_ref().map(|m| (s, m)))
        .collect();
    let unit = size_unit(&r.strategies);
    let dec = decimals_for(&r.strategies);
    let mut lines = Vec::new();
    if let Some((s, m)) = ok
        .iter()
        .min_by(|a, b| a.1.save_s.mean.total_cmp(&b.1.save_s.mean))
    {
        lines.push(format!(
            "fastest save: {} ({} s)",
            label(s),
            m.save_s.display(dec)
        ));
    }
    if let Some((s, m)) = ok
        .iter()
        .min_by(|a, b| a.1.load_s.mean.total_cmp(&b.1.load_s.mean))
    {
        lines.push(format!(
            "fastest load: {} ({} s)",
            label(s),
            m.load_s.display(dec)
        ));
    }
    if let Some((s, m)) = ok
        .iter()
        .filter(|(s, _)| !s.lossy)
        .min_by(|a, b| a.1.backing_bytes.mean.total_cmp(&b.1.backing_bytes.mean))
    {
        lines.push(format!(
            "smallest lossless layout: {} ({:.3} {}, {:.0} files)",
            s.name,
            m.backing_bytes.mean / unit.bytes,
            unit.name,
            m.backing_files.mean
        ));
    }
    lines
}

/// `results.md`: what ran, on what, and the table.
/// Where each strategy's load went: remount, the file read (through FUSE
/// for a mount) and the move onto the device, with end-to-end GB/s. Empty
/// when the load tool does not split its time.
pub fn load_split_table(r: &BenchResults) -> String {
    let mut out = String::new();
    let gb = r.model.bytes as f64 / 1e9;
    let mut rows = Vec::new();
    for s in r.strategies.iter().filter(|s| !s.runs.is_empty()) {
        let splits: Vec<_> = s.runs.iter().filter_map(|x| x.load_phases.split).collect();
        if splits.len() != s.runs.len() {
            continue;
        }
        let n = s.runs.len() as f64;
        let mean =
            |f: &dyn Fn(&super::runner::RunResult) -> f64| s.runs.iter().map(f).sum::<f64>() / n;
        let load = mean(&|x| x.load_s);
        let mount = mean(&|x| x.load_phases.mount_s);
        let read = splits.iter().map(|x| x.file_read_s).sum::<f64>() / n;
        let dev = splits.iter().map(|x| x.to_device_s).sum::<f64>() / n;
        rows.push(format!(
            "| {} | {load:.3} | {mount:.3} | {read:.3} | {dev:.3} | {:.2} | {:.2} |",
            label(s),
            gb / load.max(1e-9),
            gb / read.max(1e-9)
        ));
    }
    if rows.is_empty() {
        return out;
    }
    let _ = writeln!(
        out,
        "| strategy | load s | remount s | file read s | to {} s | GB/s end to end | file read GB/s |",
        r.machine.device
    );
    let _ = writeln!(out, "|---|---|---|---|---|---|---|");
    for row in rows {
        let _ = writeln!(out, "{row}");
    }
    out
}

/// The results as markdown (`results.md`); `figure`, when the plot was drawn, is the image to link.
pub fn markdown(r: &BenchResults, figure: Option<&str>) -> String {
    let mut out = String::new();
    let m = &r.model;
    let _ = writeln!(out, "# ckptfs bench, {}\n", r.started_utc);
    let _ = writeln!(
        out,
        "- model: {}: {} tensors, {} parameters, {:.3} GB ({})",
        m.source,
        m.tensors,
        m.parameters,
        m.bytes as f64 / 1e9,
        m.dtypes
    );
    let _ = writeln!(out, "- save tool: {}", r.save_tool);
    let _ = writeln!(out, "- load tool: {}", r.load_tool);
    let _ = writeln!(
        out,
        "- runs: {} per strategy; mean ± sample std",
        r.settings.runs
    );
    let mc = &r.machine;
    let _ = writeln!(
        out,
        "- machine: {}, {} cores, {:.1} GiB, Linux {}, {}; work dir on {}",
        mc.cpu_model,
        mc.cores,
        mc.memory_bytes as f64 / (1u64 << 30) as f64,
        mc.kernel,
        mc.os,
        mc.work_filesystem
            .as_deref()
            .unwrap_or("unknown filesystem")
    );
    let _ = writeln!(
        out,
        "- device: {}{}",
        mc.device,
        mc.device_note
            .as_ref()
            .map(|n| format!(" ({n})"))
            .unwrap_or_default()
    );
    let _ = writeln!(out, "- page cache: {}", r.page_cache);
    let _ = writeln!(out, "- {}", r.wall.line());
    let _ = writeln!(
        out,
        "- save s: mount + write + fsync + unmount (commit); load s: remount + read onto the device; size: allocated bytes (du) of the backing dir without `.ckptfs/`; file bytes: the sum of its files' lengths (du rounds every file up to whole blocks)"
    );
    if let Some(b) = &r.baseline {
        let _ = writeln!(
            out,
            "- improvement: (baseline − strategy) / baseline of the mean, vs `{b}`; positive is faster"
        );
    }
    let _ = writeln!(out);
    out.push_str(&table(r));
    let _ = writeln!(out);
    let split = load_split_table(r);
    if !split.is_empty() {
        let _ = writeln!(
            out,
            "Where the load went (means; file read: the header and each tensor's bytes read into its own memory, through FUSE for a mount; to device: from host tensors to tensors on the device, nothing on the CPU):\n"
        );
        out.push_str(&split);
        let _ = writeln!(out);
    }
    let peers = super::peer::table(&r.peers, &r.strategies);
    if !peers.is_empty() {
        let _ = writeln!(
            out,
            "Direct peers on plain disk, same run (speedup: the peer's mean time over the mount strategy's; above 1, the mount is faster):\n"
        );
        out.push_str(&peers);
        let _ = writeln!(out);
    }
    for line in highlights(r) {
        let _ = writeln!(out, "- {line}");
    }
    if let Some(f) = figure {
        let _ = writeln!(out, "\n![save, load, size and improvements]({f})");
    }
    out
}
