//! The profile plot: throughput over time (filesystem and backend, read and
//! write) above the time spent per stage.

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

pub fn draw(doc: &Value, out: &Path) -> Result<()> {
    register_font()?;
    let snap = snapshot(doc);
    let timeline: Vec<[f64; 4]> = snap
        .get("timeline")
        .and_then(Value::as_array)
        .map(|t| {
            t.iter()
                .map(|s| {
                    let g = |k: &str| s.get(k).and_then(Value::as_f64).unwrap_or(0.0) / 1e6;
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
    let stages = rows(doc, By::Stage)?;
    let root = BitMapBackend::new(out, (1400, 900)).into_drawing_area();
    root.fill(&WHITE).map_err(e)?;
    let (top, bottom) = root.split_vertically(460);
    let secs = timeline.len().max(1) as f64;
    let ymax = timeline.iter().flatten().fold(1.0f64, |a, &b| a.max(b)) * 1.1;
    let mut chart = ChartBuilder::on(&top)
        .caption("Throughput over time (MB/s)", ("sans-serif", 26))
        .margin(15)
        .x_label_area_size(45)
        .y_label_area_size(70)
        .build_cartesian_2d(0f64..secs, 0f64..ymax)
        .map_err(e)?;
    chart
        .configure_mesh()
        .x_desc("seconds since mount")
        .y_desc("MB/s")
        .label_style(("sans-serif", 16))
        .draw()
        .map_err(e)?;
    let series = [
        ("filesystem read", 0, BLUE),
        ("filesystem write", 1, RED),
        ("backend read", 2, GREEN),
        ("backend write", 3, MAGENTA),
    ];
    for (label, i, color) in series {
        chart
            .draw_series(LineSeries::new(
                timeline
                    .iter()
                    .enumerate()
                    .map(|(s, v)| (s as f64 + 0.5, v[i])),
                color.stroke_width(2),
            ))
            .map_err(e)?
            .label(label)
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(3))
            });
    }
    chart
        .configure_series_labels()
        .label_font(("sans-serif", 16))
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(e)?;
    let n = stages.len().max(1);
    let xmax = stages.iter().fold(0.001f64, |a, r| a.max(r.total_s)) * 1.15;
    let mut bars = ChartBuilder::on(&bottom)
        .caption(
            "Time per stage (s, summed over threads)",
            ("sans-serif", 26),
        )
        .margin(15)
        .x_label_area_size(45)
        .y_label_area_size(170)
        .build_cartesian_2d(0f64..xmax, (0usize..n).into_segmented())
        .map_err(e)?;
    let names: Vec<String> = stages.iter().map(|r| r.name.clone()).collect();
    bars.configure_mesh()
        .disable_y_mesh()
        .y_labels(n)
        .y_label_formatter(&|v| match v {
            SegmentValue::CenterOf(i) => names.get(*i).cloned().unwrap_or_default(),
            _ => String::new(),
        })
        .x_desc("seconds")
        .label_style(("sans-serif", 16))
        .draw()
        .map_err(e)?;
    bars.draw_series(stages.iter().enumerate().map(|(i, r)| {
        Rectangle::new(
            [
                (0.0, SegmentValue::Exact(i)),
                (r.total_s, SegmentValue::Exact(i + 1)),
            ],
            BLUE.mix(0.7).filled(),
        )
    }))
    .map_err(e)?;
    root.present().map_err(e)?;
    Ok(())
}
