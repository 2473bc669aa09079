//! The profile plot: write and read throughput over the stretch of the mount
//! where bytes moved (filesystem and backend, in steps as fine as the
//! profile's buckets allow) above where the time went (FUSE operations and
//! backend stages, each bar labelled with its seconds and share of the wall
//! time).

use std::path::Path;

use anyhow::{anyhow, Result};
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use serde_json::Value;

use super::report::{rows, snapshot, timeline, By, Timeline};

const FONT_PATHS: [&str; 2] = [
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
];

fn register_font() -> Result<()> {
    let path = FONT_PATHS
        .iter()
        .find(|p| Path::new(p).exists())
        .ok_or_else(|| {
            anyhow!("no DejaVuSans.ttf found (install the Debian package fonts-dejavu-core)")
        })?;
    let bytes: &'static [u8] = Box::leak(std::fs::read(path)?.into_boxed_slice());
    plotters::style::register_font("sans-serif", FontStyle::Normal, bytes)
        .map_err(|_| anyhow!("cannot load font {path}"))
}

fn e<E: std::fmt::Display>(err: E) -> anyhow::Error {
    anyhow!("plot: {err}")
}

/// Steps drawn at most per series: finer buckets are summed.
const MAX_STEPS: usize = 300;

/// The throughput to draw: the stretch of the timeline where bytes moved
/// (idle time before and after is cut off, or a quick save would be a
/// sliver of a long mount), in steps of at most `MAX_STEPS` per series.
struct Steps {
    /// Seconds since mount of the first step's start.
    start_s: f64,
    step_s: f64,
    /// MB/s per step of the first four `report::SERIES` (the bytes).
    rows: Vec<[f64; 4]>,
}

impl Steps {
    fn new(t: &Timeline, wall: f64) -> Steps {
        let n = t.rows.len();
        let b = t.bucket_s();
        let (first, last) = t.busy().unwrap_or((0, n.saturating_sub(1)));
        let span = last + 1 - first;
        let pad = (span / 20).max(2);
        let lo = first.saturating_sub(pad);
        // Padding stops at the end of the mount.
        let end = n.max((wall / b).ceil() as usize).max(last + 1);
        let hi = (last + 1 + pad).min(end);
        let per = (hi - lo).div_ceil(MAX_STEPS).max(1);
        let step_s = b * per as f64;
        let rows = (lo..hi)
            .step_by(per)
            .map(|k| {
                let mut sum = [0u64; 4];
                for r in t.rows.iter().take(k + per).skip(k) {
                    for (a, v) in sum.iter_mut().zip(r) {
                        *a += v;
                    }
                }
                sum.map(|v| v as f64 / step_s / 1e6)
            })
            .collect();
        Steps {
            start_s: lo as f64 * b,
            step_s,
            rows,
        }
    }

    fn end_s(&self) -> f64 {
        self.start_s + self.rows.len().max(1) as f64 * self.step_s
    }

    fn x(&self, k: usize) -> f64 {
        self.start_s + k as f64 * self.step_s
    }

    /// Series `i` as a step line: flat across each step.
    fn line(&self, i: usize) -> Vec<(f64, f64)> {
        let mut pts = Vec::with_capacity(self.rows.len() * 2);
        for (k, r) in self.rows.iter().enumerate() {
            pts.push((self.x(k), r[i]));
            pts.push((self.x(k + 1), r[i]));
        }
        pts
    }

    fn any(&self, i: usize) -> bool {
        self.rows.iter().any(|r| r[i] > 0.0)
    }
}

type Area<'a> = DrawingArea<BitMapBackend<'a>, plotters::coord::Shift>;

/// One throughput panel: the filesystem's series as filled bars with a
/// thick outline, the backend's as a dashed step line on top, so both show
/// where they coincide.
fn throughput_panel(
    area: &Area,
    title: &str,
    steps: &Steps,
    series: [(&str, usize, RGBColor); 2],
) -> Result<()> {
    let ymax = steps
        .rows
        .iter()
        .map(|r| r[series[0].1].max(r[series[1].1]))
        .fold(1.0f64, f64::max)
        * 1.3;
    let mut chart = ChartBuilder::on(area)
        .caption(
            format!("{title}: MB/s in {} steps", step_label(steps.step_s)),
            ("sans-serif", 22),
        )
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d(steps.start_s..steps.end_s(), 0f64..ymax)
        .map_err(e)?;
    chart
        .configure_mesh()
        .x_desc("seconds since mount")
        .y_desc("MB/s")
        .y_label_formatter(&|v| {
            if ymax < 10.0 {
                format!("{v:.1}")
            } else {
                format!("{v:.0}")
            }
        })
        .label_style(("sans-serif", 15))
        .light_line_style(WHITE)
        .draw()
        .map_err(e)?;
    let (fs_label, fs_i, fs_color) = series[0];
    chart
        .draw_series(
            steps
                .rows
                .iter()
                .enumerate()
                .filter(|(_, r)| r[fs_i] > 0.0)
                .map(|(k, r)| {
                    Rectangle::new(
                        [(steps.x(k), 0.0), (steps.x(k + 1), r[fs_i])],
                        fs_color.mix(0.25).filled(),
                    )
                }),
        )
        .map_err(e)?;
    chart
        .draw_series(LineSeries::new(steps.line(fs_i), fs_color.stroke_width(4)))
        .map_err(e)?
        .label(fs_label)
        .legend(move |(x, y)| {
            Rectangle::new([(x, y - 6), (x + 20, y + 6)], fs_color.mix(0.5).filled())
        });
    let (be_label, be_i, be_color) = series[1];
    chart
        .draw_series(DashedLineSeries::new(
            steps.line(be_i),
            8,
            5,
            be_color.stroke_width(2),
        ))
        .map_err(e)?
        .label(be_label)
        .legend(move |(x, y)| {
            PathElement::new(vec![(x, y), (x + 20, y)], be_color.stroke_width(2))
        });
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .label_font(("sans-serif", 15))
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()
        .map_err(e)?;
    Ok(())
}

/// A step's width: "10 ms", "1.28 s".
fn step_label(s: f64) -> String {
    if s < 1.0 {
        format!("{:.0} ms", s * 1e3)
    } else {
        format!("{s:.2} s")
    }
}

/// `0.0934` as "0.093 s", `0.00004` as "0.04 ms".
fn duration(s: f64) -> String {
    if s >= 0.1 {
        format!("{s:.2} s")
    } else if s >= 0.001 {
        format!("{s:.3} s")
    } else {
        format!("{:.2} ms", s * 1e3)
    }
}

/// A bar of the bottom panel.
struct Bar {
    label: String,
    total_s: f64,
    color: RGBColor,
}

/// What a FUSE operation's or a stage's time means, where a name alone
/// does not say it.
fn gloss(by: By, name: &str) -> String {
    let what = match (by, name) {
        (By::Op, "read") => "readers waiting for bytes",
        (By::Op, "write") => "writers waiting",
        (By::Op, "flush") => "close, which commits",
        (By::Op, "fsync") => "fsync, which commits",
        (By::Stage, "store_read") => "backend read",
        (By::Stage, "decode") => "decode chunks",
        (By::Stage, "prefetch") => "read-ahead (its store_read + decode)",
        (By::Stage, "copy") => "reply bytes to the kernel",
        (By::Stage, "encode_store") => "encode + backend write",
        (By::Stage, "encode_inline") => "a small file into its manifest",
        (By::Stage, "commit") => "commit a file",
        (By::Stage, "fsync") => "backend fsync",
        (By::Stage, "budget_wait") => "wait for the memory budget",
        _ => "",
    };
    let name = match by {
        By::Op => format!("FUSE {name}"),
        _ => name.to_string(),
    };
    if what.is_empty() {
        name
    } else {
        format!("{name}: {what}")
    }
}

/// FUSE operations (the daemon's time answering the kernel: what a reader or
/// writer waited for) and backend stages (on worker threads, overlapping the
/// answers), longest first within each group.
fn bars(doc: &Value, wall: f64) -> Result<Vec<Bar>> {
    let mut out = Vec::new();
    for (by, color) in [
        (By::Op, RGBColor(70, 110, 200)),
        (By::Stage, RGBColor(230, 140, 40)),
    ] {
        for r in rows(doc, by)? {
            // Operations under 0.5% of the wall time are noise in a picture.
            if by == By::Op && r.total_s < wall * 0.005 {
                continue;
            }
            out.push(Bar {
                label: gloss(by, &r.name),
                total_s: r.total_s,
                color,
            });
        }
    }
    Ok(out)
}

/// The time panel: one horizontal bar per operation and stage, its name on
/// the left, its seconds and share of the wall time at its end.
fn time_panel(root: &Area, area: &Area, bars: &[Bar], wall: f64) -> Result<()> {
    let n = bars.len().max(1);
    let xmax = bars.iter().fold(0.001f64, |a, b| a.max(b.total_s)) * 1.3;
    let mut chart = ChartBuilder::on(area)
        .caption(
            format!("Where the time went (s summed over threads, % of the {wall:.2} s wall): FUSE operations blue, backend stages orange"),
            ("sans-serif", 20),
        )
        .margin(15)
        .x_label_area_size(40)
        .y_label_area_size(380)
        .build_cartesian_2d(0f64..xmax, 0f64..n as f64)
        .map_err(e)?;
    chart
        .configure_mesh()
        .disable_y_mesh()
        .y_labels(0)
        .x_desc("seconds")
        .label_style(("sans-serif", 15))
        .light_line_style(WHITE)
        .draw()
        .map_err(e)?;
    // Top to bottom in the order given: bar i spans y in [n-1-i, n-i].
    let mid = |i: usize| (n - 1 - i) as f64 + 0.5;
    chart
        .draw_series(bars.iter().enumerate().map(|(i, b)| {
            Rectangle::new(
                [(0.0, mid(i) - 0.32), (b.total_s, mid(i) + 0.32)],
                b.color.filled(),
            )
        }))
        .map_err(e)?;
    let value =
        TextStyle::from(("sans-serif", 16).into_font()).pos(Pos::new(HPos::Left, VPos::Center));
    chart
        .draw_series(bars.iter().enumerate().map(|(i, b)| {
            let share = if wall > 0.0 {
                let p = 100.0 * b.total_s / wall;
                if p >= 10.0 {
                    format!(", {p:.0}% of wall")
                } else if p >= 0.05 || p == 0.0 {
                    format!(", {p:.1}% of wall")
                } else {
                    ", <0.1% of wall".to_string()
                }
            } else {
                String::new()
            };
            Text::new(
                format!("{}{share}", duration(b.total_s)),
                (b.total_s + xmax * 0.008, mid(i)),
                value.clone(),
            )
        }))
        .map_err(e)?;
    // Names in the label area left of the axis, at each bar's middle.
    let name =
        TextStyle::from(("sans-serif", 16).into_font()).pos(Pos::new(HPos::Right, VPos::Center));
    for (i, b) in bars.iter().enumerate() {
        let (x, y) = chart.backend_coord(&(0.0, mid(i)));
        root.draw(&Text::new(b.label.as_str(), (x - 10, y), name.clone()))
            .map_err(e)?;
    }
    Ok(())
}

/// Draws the profile `doc` as a PNG at `out`: throughput over time above the time per operation and
/// stage.
pub fn draw(doc: &Value, out: &Path) -> Result<()> {
    register_font()?;
    let snap = snapshot(doc);
    let wall = snap.get("wall_s").and_then(Value::as_f64).unwrap_or(0.0);
    let steps = Steps::new(&timeline(doc), wall);
    let writes = (
        "Writes",
        [
            ("filesystem write", 1, RGBColor(200, 30, 30)),
            ("backend write", 3, RGBColor(90, 0, 140)),
        ],
    );
    let reads = (
        "Reads",
        [
            ("filesystem read", 0, RGBColor(30, 80, 200)),
            ("backend read", 2, RGBColor(0, 120, 40)),
        ],
    );
    // A panel per direction that moved bytes.
    let panels: Vec<_> = [writes, reads]
        .into_iter()
        .filter(|(_, s)| steps.any(s[0].1) || steps.any(s[1].1))
        .collect();
    let bars = bars(doc, wall)?;
    let top_h = if panels.is_empty() {
        50
    } else {
        320 * panels.len() as u32
    };
    let bottom_h = 110 + 34 * bars.len().max(1) as u32;
    let root = BitMapBackend::new(out, (1400, top_h + bottom_h)).into_drawing_area();
    root.fill(&WHITE).map_err(e)?;
    let (top, bottom) = root.split_vertically(top_h);
    if panels.is_empty() {
        top.draw(&Text::new(
            "No bytes in the timeline (a `counters` profile keeps none)",
            (20, 15),
            ("sans-serif", 20),
        ))
        .map_err(e)?;
    }
    let areas = top.split_evenly((panels.len().max(1), 1));
    for (area, (title, series)) in areas.iter().zip(panels) {
        throughput_panel(area, title, &steps, series)?;
    }
    time_panel(&root, &bottom, &bars, wall)?;
    root.present().map_err(e)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc(bucket_ms: Option<u64>, written: &[u64]) -> Value {
        let rows: Vec<Value> = written
            .iter()
            .map(|&w| serde_json::json!({"fs_written": w, "backend_written": w, "ops": 1}))
            .collect();
        let mut d = serde_json::json!({"timeline": rows, "wall_s": 100.0});
        if let Some(ms) = bucket_ms {
            d["timeline_bucket_ms"] = ms.into();
        }
        d
    }

    #[test]
    fn steps_cut_idle_time_and_stay_few_over_long_runs() {
        // Old profiles: one-second rows.
        let t = timeline(&doc(None, &[0, 5_000_000, 0]));
        assert_eq!(t.bucket_ms, 1000);
        // A 50 ms burst after 5 s idle: drawn from just before it, at 10 ms.
        let mut w = vec![0u64; 600];
        w[500..505].fill(1_000_000);
        let s = Steps::new(&timeline(&doc(Some(10), &w)), 6.0);
        assert!((s.step_s - 0.01).abs() < 1e-9);
        assert!(
            s.start_s > 4.9 && s.end_s() < 5.2,
            "{} {}",
            s.start_s,
            s.end_s()
        );
        assert!(s.rows.iter().any(|r| (r[1] - 100.0).abs() < 1e-6));
        // 4096 busy buckets: summed into at most MAX_STEPS, same bytes.
        let w = vec![1_000_000u64; 4096];
        let s = Steps::new(&timeline(&doc(Some(10), &w)), 41.0);
        assert!(s.rows.len() <= MAX_STEPS, "{}", s.rows.len());
        let bytes: f64 = s.rows.iter().map(|r| r[1] * s.step_s * 1e6).sum();
        assert!((bytes - 4096e6).abs() < 1.0, "{bytes}");
    }
}
