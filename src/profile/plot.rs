//! The profile plot: write and read throughput over time (filesystem and
//! backend, in steps as fine as the profile's buckets) above where the time
//! went (FUSE operations and backend stages, each bar labelled with its
//! seconds and share of the wall time).

use std::path::Path;

use anyhow::{anyhow, Result};
use plotters::prelude::*;
use serde_json::Value;

use super::report::{rows, snapshot, By};

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

/// The timeline as MB/s per step: (step seconds, rows of [fs read, fs
/// written, backend read, backend written]).
fn timeline(snap: &Value) -> (f64, Vec<[f64; 4]>) {
    // Profiles written before buckets were finer than a second have none.
    let bucket_ms = snap
        .get("timeline_bucket_ms")
        .and_then(Value::as_u64)
        .unwrap_or(1000)
        .max(1);
    let raw: Vec<[f64; 4]> = snap
        .get("timeline")
        .and_then(Value::as_array)
        .map(|t| {
            t.iter()
                .map(|s| {
                    let g = |k: &str| s.get(k).and_then(Value::as_f64).unwrap_or(0.0);
                    [
                        g("fs_read"),
                        g("fs_written"),
                        g("backend_read"),
                        g("backend_written"),
                    ]
                })
                .collect()
        })
        .unwrap_or_default();
    let per = raw.len().div_ceil(MAX_STEPS).max(1);
    let step_s = bucket_ms as f64 / 1e3 * per as f64;
    let rows = raw
        .chunks(per)
        .map(|c| {
            let mut sum = [0.0; 4];
            for r in c {
                for (a, b) in sum.iter_mut().zip(r) {
                    *a += b;
                }
            }
            sum.map(|b| b / step_s / 1e6)
        })
        .collect();
    (step_s, rows)
}

/// A step line: flat across each bucket.
fn steps(rows: &[[f64; 4]], i: usize, step_s: f64) -> Vec<(f64, f64)> {
    let mut pts = Vec::with_capacity(rows.len() * 2);
    for (k, r) in rows.iter().enumerate() {
        pts.push((k as f64 * step_s, r[i]));
        pts.push(((k + 1) as f64 * step_s, r[i]));
    }
    pts
}

/// One throughput panel: the filesystem's series solid and thick, the
/// backend's thinner and dashed on top, so both show where they coincide.
fn throughput_panel(
    area: &DrawingArea<BitMapBackend, plotters::coord::Shift>,
    title: &str,
    rows: &[[f64; 4]],
    step_s: f64,
    series: [(&str, usize, RGBColor); 2],
) -> Result<()> {
    let secs = (rows.len() as f64 * step_s).max(step_s);
    let ymax = rows
        .iter()
        .map(|r| r[series[0].1].max(r[series[1].1]))
        .fold(1.0f64, f64::max)
        * 1.15;
    let mut chart = ChartBuilder::on(area)
        .caption(
            format!("{title} (MB/s, {:.0} ms steps)", step_s * 1e3),
            ("sans-serif", 22),
        )
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d(0f64..secs, 0f64..ymax)
        .map_err(e)?;
    chart
        .configure_mesh()
        .x_desc("seconds since mount")
        .y_desc("MB/s")
        .label_style(("sans-serif", 15))
        .draw()
        .map_err(e)?;
    let (fs_label, fs_i, fs_color) = series[0];
    chart
        .draw_series(LineSeries::new(
            steps(rows, fs_i, step_s),
            fs_color.stroke_width(4),
        ))
        .map_err(e)?
        .label(fs_label)
        .legend(move |(x, y)| {
            PathElement::new(vec![(x, y), (x + 20, y)], fs_color.stroke_width(4))
        });
    let (be_label, be_i, be_color) = series[1];
    chart
        .draw_series(DashedLineSeries::new(
            steps(rows, be_i, step_s),
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

/// A bar of the bottom panel.
struct Bar {
    label: String,
    total_s: f64,
    color: RGBColor,
}

/// FUSE operations (the daemon's time answering the kernel: what a reader or
/// writer waited for) and backend stages (on worker threads, overlapping the
/// answers), longest first within each group.
fn bars(doc: &Value, wall: f64) -> Result<Vec<Bar>> {
    let mut out = Vec::new();
    for (by, prefix, color) in [
        (By::Op, "FUSE ", RGBColor(70, 110, 200)),
        (By::Stage, "", RGBColor(230, 140, 40)),
    ] {
        for r in rows(doc, by)? {
            // Operations under 0.5% of the wall time are noise in a picture.
            if by == By::Op && r.total_s < wall * 0.005 {
                continue;
            }
            out.push(Bar {
                label: format!("{prefix}{}", r.name),
                total_s: r.total_s,
                color,
            });
        }
    }
    Ok(out)
}

pub fn draw(doc: &Value, out: &Path) -> Result<()> {
    register_font()?;
    let snap = snapshot(doc);
    let wall = snap.get("wall_s").and_then(Value::as_f64).unwrap_or(0.0);
    let (step_s, rows) = timeline(snap);
    let bars = bars(doc, wall)?;
    let bar_px = 34u32;
    let bottom_h = 110 + bar_px * bars.len().max(1) as u32;
    let root = BitMapBackend::new(out, (1400, 620 + bottom_h)).into_drawing_area();
    root.fill(&WHITE).map_err(e)?;
    let (top, bottom) = root.split_vertically(620);
    let (writes, reads) = top.split_vertically(310);
    throughput_panel(
        &writes,
        "Writes",
        &rows,
        step_s,
        [
            ("filesystem write", 1, RGBColor(200, 30, 30)),
            ("backend write", 3, RGBColor(120, 0, 160)),
        ],
    )?;
    throughput_panel(
        &reads,
        "Reads",
        &rows,
        step_s,
        [
            ("filesystem read", 0, RGBColor(30, 80, 200)),
            ("backend read", 2, RGBColor(0, 150, 60)),
        ],
    )?;
    let n = bars.len().max(1);
    let xmax = bars.iter().fold(0.001f64, |a, b| a.max(b.total_s)) * 1.75;
    let mut chart = ChartBuilder::on(&bottom)
        .caption(
            format!(
                "Where the time went: FUSE operations (blue) and backend stages (orange), s summed over threads, % of the {wall:.2} s wall"
            ),
            ("sans-serif", 20),
        )
        .margin(15)
        .x_label_area_size(40)
        .y_label_area_size(10)
        .build_cartesian_2d(0f64..xmax, 0f64..n as f64)
        .map_err(e)?;
    chart
        .configure_mesh()
        .disable_y_mesh()
        .disable_y_axis()
        .x_desc("seconds")
        .label_style(("sans-serif", 15))
        .draw()
        .map_err(e)?;
    // Top to bottom in the order given: bar i sits at y = n - 1 - i.
    chart
        .draw_series(bars.iter().enumerate().map(|(i, b)| {
            let y = (n - 1 - i) as f64;
            Rectangle::new([(0.0, y + 0.18), (b.total_s, y + 0.82)], b.color.filled())
        }))
        .map_err(e)?;
    chart
        .draw_series(bars.iter().enumerate().map(|(i, b)| {
            let y = (n - 1 - i) as f64;
            let share = if wall > 0.0 {
                format!(" ({:.0}% of wall)", 100.0 * b.total_s / wall)
            } else {
                String::new()
            };
            Text::new(
                format!("{}: {:.3} s{share}", b.label, b.total_s),
                (b.total_s + xmax * 0.01, y + 0.72),
                ("sans-serif", 16),
            )
        }))
        .map_err(e)?;
    root.present().map_err(e)?;
    Ok(())
}
