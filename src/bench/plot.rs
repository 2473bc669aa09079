//! The results figure: save, load and size bars with error bars, save and
//! load improvement over the baseline, a strategy × metric heatmap, and with
//! `--compare` the mount's speedup over each direct peer (TS: TensorStore).
//!
//! Drawn with plotters' bitmap backend and its pure-Rust `ab_glyph` text,
//! from a TrueType font read at run time (Debian: `fonts-dejavu-core`), so no
//! fontconfig or freetype library is needed.

use std::path::Path;
use std::sync::OnceLock;

use anyhow::{anyhow, bail, Context, Result};
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use plotters::style::FontStyle;

use super::report::{label, size_unit};
use super::results::BenchResults;
use super::stats::MeanStd;

/// The font used unless CKPTFS_FONT names another TrueType file.
pub const DEFAULT_FONT: &str = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf";
const BOLD_FONT: &str = "/usr/share/fonts/truetype/dejavu/DejaVuSans-Bold.ttf";

const WIDTH: u32 = 1800;
const HEIGHT: u32 = 1560;
const SAVE_COLOR: RGBColor = RGBColor(52, 101, 164);
const LOAD_COLOR: RGBColor = RGBColor(230, 126, 34);
const SIZE_COLOR: RGBColor = RGBColor(46, 139, 87);
const BETTER: RGBColor = RGBColor(39, 174, 96);
const WORSE: RGBColor = RGBColor(192, 57, 43);

/// One row per direct peer with figures: the mount's speedup over it
/// (peer mean / mount mean) in `save` and `load`, with the ratio's error
/// from both stds (relative errors added in quadrature).
fn peer_rows(r: &BenchResults) -> Vec<Row> {
    let ratio = |peer: Option<MeanStd>, mount: Option<MeanStd>| -> Option<MeanStd> {
        let (p, m) = (peer?, mount?);
        if p.mean <= 0.0 || m.mean <= 0.0 {
            return None;
        }
        let mean = p.mean / m.mean;
        let rel = ((p.std / p.mean).powi(2) + (m.std / m.mean).powi(2)).sqrt();
        Some(MeanStd {
            mean,
            std: mean * rel,
            n: p.n.min(m.n),
        })
    };
    r.peers
        .iter()
        .filter_map(|p| {
            let mount = r
                .strategies
                .iter()
                .find(|s| s.name == p.pairs_with)?
                .summary
                .as_ref()?;
            Some(Row {
                label: match p.name.strip_prefix("tensorstore:") {
                    Some(_) => format!("{} vs TS", p.pairs_with),
                    None => format!("{} vs {}", p.pairs_with, p.name),
                },
                save: ratio(p.save_s, Some(mount.save_s))?,
                load: ratio(p.load_s, Some(mount.load_s))?,
                ..Row::default()
            })
        })
        .collect()
}

/// Registers the font with plotters once per process.
pub(crate) fn ensure_font() -> Result<()> {
    static FONT: OnceLock<std::result::Result<(), String>> = OnceLock::new();
    FONT.get_or_init(|| {
        let path = std::env::var("CKPTFS_FONT").unwrap_or_else(|_| DEFAULT_FONT.into());
        let bytes = std::fs::read(&path).map_err(|e| {
            format!(
                "the figure needs a TrueType font: cannot read {path}: {e}; install the Debian package fonts-dejavu-core or set CKPTFS_FONT=/path/to/font.ttf"
            )
        })?;
        // plotters keeps fonts for the life of the process.
        let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
        plotters::style::register_font("sans-serif", FontStyle::Normal, bytes)
            .map_err(|_| format!("{path} is not a usable TrueType font"))?;
        if let Ok(bold) = std::fs::read(BOLD_FONT) {
            let bold: &'static [u8] = Box::leak(bold.into_boxed_slice());
            let _ = plotters::style::register_font("sans-serif", FontStyle::Bold, bold);
        }
        Ok(())
    })
    .clone()
    .map_err(|e| anyhow!(e))
}

/// One strategy's figures, as plotted.
#[derive(Default)]
struct Row {
    label: String,
    save: MeanStd,
    load: MeanStd,
    size: MeanStd,
    files: f64,
    rss_mib: Option<f64>,
    save_imp: Option<f64>,
    load_imp: Option<f64>,
    is_baseline: bool,
}

/// Draws the figure to `path` (PNG).
pub fn draw(r: &BenchResults, path: &Path) -> Result<()> {
    ensure_font()?;
    let unit = size_unit(&r.strategies);
    let rows: Vec<Row> = r
        .strategies
        .iter()
        .filter_map(|s| {
            s.summary.as_ref().map(|m| Row {
                label: label(s),
                save: m.save_s,
                load: m.load_s,
                size: MeanStd {
                    mean: m.backing_bytes.mean / unit.bytes,
                    std: m.backing_bytes.std / unit.bytes,
                    n: m.backing_bytes.n,
                },
                files: m.backing_files.mean,
                rss_mib: m.daemon_peak_rss_bytes.map(|v| v.mean / (1024.0 * 1024.0)),
                save_imp: m.save_improvement_pct,
                load_imp: m.load_improvement_pct,
                is_baseline: r.baseline.as_deref() == Some(s.name.as_str()),
            })
        })
        .collect();
    if rows.is_empty() {
        bail!("no strategy completed a run: nothing to plot");
    }
    let pairs = peer_rows(r);
    let grid_rows = if pairs.is_empty() { 3 } else { 4 };
    let height = HEIGHT / 3 * grid_rows as u32 + 60;
    let root = BitMapBackend::new(path, (WIDTH, height)).into_drawing_area();
    root.fill(&WHITE).map_err(plot_err)?;
    let (title, body) = root.split_vertically(60);
    title
        .draw(&Text::new(
            format!(
                "ckptfs bench: {} ({} runs each, device {})",
                short(&r.model.source, 90),
                r.settings.runs,
                r.machine.device
            ),
            (WIDTH as i32 / 2, 30),
            ("sans-serif", 26)
                .into_font()
                .style(FontStyle::Bold)
                .color(&BLACK)
                .pos(Pos::new(HPos::Center, VPos::Center)),
        ))
        .map_err(plot_err)?;
    let panels = body.split_evenly((grid_rows, 2));
    let base = r.baseline.as_deref().unwrap_or("baseline");
    bars(
        &panels[0],
        "Save time (s), mean ± std",
        &rows,
        |x| Some(x.save),
        SAVE_COLOR,
        2,
        None,
    )?;
    bars(
        &panels[1],
        "Load time (s), mean ± std",
        &rows,
        |x| Some(x.load),
        LOAD_COLOR,
        2,
        None,
    )?;
    bars(
        &panels[2],
        &format!("Backing size ({}), mean ± std", unit.name),
        &rows,
        |x| Some(x.size),
        SIZE_COLOR,
        3,
        None,
    )?;
    improvement(
        &panels[3],
        &format!("Save improvement vs {base} (%)"),
        &rows,
        |x| x.save_imp,
    )?;
    improvement(
        &panels[4],
        &format!("Load improvement vs {base} (%)"),
        &rows,
        |x| x.load_imp,
    )?;
    heatmap(&panels[5], &rows, unit.name)?;
    if !pairs.is_empty() {
        for (panel, (what, pick)) in panels[6..].iter().zip([
            (
                "Save",
                (|x: &Row| Some(x.save)) as fn(&Row) -> Option<MeanStd>,
            ),
            ("Load", |x: &Row| Some(x.load)),
        ]) {
            bars(
                panel,
                &format!(
                    "{what}: mount speedup over the direct peer (×; right of 1: mount faster)"
                ),
                &pairs,
                pick,
                if what == "Save" {
                    SAVE_COLOR
                } else {
                    LOAD_COLOR
                },
                2,
                Some(1.0),
            )?;
        }
    }
    root.present()
        .map_err(plot_err)
        .with_context(|| format!("write {}", path.display()))?;
    Ok(())
}

fn plot_err<E: std::fmt::Display>(e: E) -> anyhow::Error {
    anyhow!("plot: {e}")
}

fn short(s: &str, n: usize) -> String {
    if s.chars().count() > n {
        format!("{}…", s.chars().take(n).collect::<String>())
    } else {
        s.to_string()
    }
}

/// Row `i` (0 at the top) on a y axis running from 0 at the bottom.
fn y_of(i: usize, n: usize) -> f64 {
    (n - 1 - i) as f64
}

fn name_at(rows: &[Row], y: f64) -> String {
    let n = rows.len();
    let r = y.round();
    if (y - r).abs() > 1e-6 || r < 0.0 || r >= n as f64 {
        return String::new();
    }
    rows.get(n - 1 - r as usize)
        .map(|x| x.label.clone())
        .unwrap_or_default()
}

fn caption_font() -> FontDesc<'static> {
    ("sans-serif", 22).into_font().style(FontStyle::Bold)
}

/// At most `decimals` places, more for small values so they stay readable.
fn fmt_value(v: f64, decimals: usize) -> String {
    let a = v.abs();
    let d = if a >= 1000.0 {
        0
    } else if a > 0.0 && a < 0.1 {
        decimals.max(3)
    } else if a >= 100.0 {
        decimals.min(1)
    } else {
        decimals
    };
    format!("{v:.d$}")
}

/// Horizontal bars with ± std error bars and the value written beside each.
fn bars<F>(
    area: &DrawingArea<BitMapBackend, Shift>,
    caption: &str,
    rows: &[Row],
    value: F,
    color: RGBColor,
    decimals: usize,
    reference: Option<f64>,
) -> Result<()>
where
    F: Fn(&Row) -> Option<MeanStd>,
{
    let n = rows.len();
    let top = rows
        .iter()
        .filter_map(&value)
        .map(|v| v.mean + v.std)
        .fold(0.0, f64::max);
    let top = top.max(reference.unwrap_or(0.0));
    let x_max = if top > 0.0 { top * 1.3 } else { 1.0 };
    let mut chart = ChartBuilder::on(area)
        .caption(caption, caption_font())
        .margin(12)
        .margin_right(40)
        .x_label_area_size(36)
        .y_label_area_size(230)
        .build_cartesian_2d(0f64..x_max, -0.6f64..(n as f64 - 0.4))
        .map_err(plot_err)?;
    chart
        .configure_mesh()
        .y_labels(n)
        .y_label_formatter(&|y| name_at(rows, *y))
        .x_labels(6)
        .disable_y_mesh()
        .light_line_style(RGBColor(238, 238, 238))
        .label_style(("sans-serif", 17))
        .draw()
        .map_err(plot_err)?;
    if let Some(x) = reference {
        chart
            .draw_series(std::iter::once(PathElement::new(
                vec![(x, -0.6), (x, n as f64 - 0.4)],
                BLACK.stroke_width(2),
            )))
            .map_err(plot_err)?;
    }
    let font = ("sans-serif", 16).into_font().color(&BLACK);
    for (i, row) in rows.iter().enumerate() {
        let Some(v) = value(row) else { continue };
        let y = y_of(i, n);
        chart
            .draw_series(std::iter::once(Rectangle::new(
                [(0.0, y - 0.32), (v.mean, y + 0.32)],
                color.filled(),
            )))
            .map_err(plot_err)?;
        if v.std > 0.0 {
            let (lo, hi) = ((v.mean - v.std).max(0.0), v.mean + v.std);
            let err = BLACK.stroke_width(2);
            chart
                .draw_series([
                    PathElement::new(vec![(lo, y), (hi, y)], err),
                    PathElement::new(vec![(lo, y - 0.15), (lo, y + 0.15)], err),
                    PathElement::new(vec![(hi, y - 0.15), (hi, y + 0.15)], err),
                ])
                .map_err(plot_err)?;
        }
        let text = if v.std > 0.0 {
            let d = if v.mean.abs() < 0.1 {
                decimals.max(3)
            } else {
                decimals
            };
            format!(
                "{} ± {}",
                fmt_value(v.mean, d),
                format_args!("{:.d$}", v.std)
            )
        } else {
            fmt_value(v.mean, decimals)
        };
        chart
            .draw_series(std::iter::once(
                EmptyElement::at((v.mean + v.std, y)) + Text::new(text, (8, -9), font.clone()),
            ))
            .map_err(plot_err)?;
    }
    Ok(())
}

/// Bars from zero: green where the strategy beats the baseline, red where not.
fn improvement<F>(
    area: &DrawingArea<BitMapBackend, Shift>,
    caption: &str,
    rows: &[Row],
    value: F,
) -> Result<()>
where
    F: Fn(&Row) -> Option<f64>,
{
    let n = rows.len();
    let vals: Vec<f64> = rows.iter().filter_map(&value).collect();
    let lo = vals.iter().copied().fold(0.0, f64::min);
    let hi = vals.iter().copied().fold(0.0, f64::max);
    let span = (hi - lo).max(10.0);
    let (x0, x1) = (lo - span * 0.25, hi + span * 0.25);
    let mut chart = ChartBuilder::on(area)
        .caption(caption, caption_font())
        .margin(12)
        .margin_right(40)
        .x_label_area_size(36)
        .y_label_area_size(230)
        .build_cartesian_2d(x0..x1, -0.6f64..(n as f64 - 0.4))
        .map_err(plot_err)?;
    chart
        .configure_mesh()
        .y_labels(n)
        .y_label_formatter(&|y| name_at(rows, *y))
        .x_labels(6)
        .x_label_formatter(&|x| format!("{x:.0}%"))
        .disable_y_mesh()
        .light_line_style(RGBColor(238, 238, 238))
        .label_style(("sans-serif", 17))
        .draw()
        .map_err(plot_err)?;
    chart
        .draw_series(std::iter::once(PathElement::new(
            vec![(0.0, -0.6), (0.0, n as f64 - 0.4)],
            BLACK.stroke_width(2),
        )))
        .map_err(plot_err)?;
    let font = ("sans-serif", 16).into_font().color(&BLACK);
    for (i, row) in rows.iter().enumerate() {
        let y = y_of(i, n);
        let Some(v) = value(row) else {
            continue;
        };
        let color = if v >= 0.0 { BETTER } else { WORSE };
        chart
            .draw_series(std::iter::once(Rectangle::new(
                [(0.0, y - 0.32), (v, y + 0.32)],
                color.filled(),
            )))
            .map_err(plot_err)?;
        let (offset, anchor) = if v >= 0.0 {
            (8, HPos::Left)
        } else {
            (-8, HPos::Right)
        };
        let text = if row.is_baseline {
            "baseline".to_string()
        } else {
            format!("{v:+.1}%")
        };
        chart
            .draw_series(std::iter::once(
                EmptyElement::at((v, y))
                    + Text::new(
                        text,
                        (offset, 0),
                        font.clone().pos(Pos::new(anchor, VPos::Center)),
                    ),
            ))
            .map_err(plot_err)?;
    }
    Ok(())
}

/// Strategy × metric: each column coloured from best (green, lowest) to
/// worst (red) on a log scale, with the value written in each cell.
fn heatmap(area: &DrawingArea<BitMapBackend, Shift>, rows: &[Row], size_unit: &str) -> Result<()> {
    let n = rows.len();
    let metrics: Vec<(String, Vec<Option<f64>>, usize)> = vec![
        (
            "save s".into(),
            rows.iter().map(|r| Some(r.save.mean)).collect(),
            2,
        ),
        (
            "load s".into(),
            rows.iter().map(|r| Some(r.load.mean)).collect(),
            2,
        ),
        (
            format!("size {size_unit}"),
            rows.iter().map(|r| Some(r.size.mean)).collect(),
            3,
        ),
        (
            "files".into(),
            rows.iter().map(|r| Some(r.files)).collect(),
            0,
        ),
        (
            "RSS MiB".into(),
            rows.iter().map(|r| r.rss_mib).collect(),
            0,
        ),
    ];
    let m = metrics.len();
    let names: Vec<String> = metrics.iter().map(|x| x.0.clone()).collect();
    let mut chart = ChartBuilder::on(area)
        .caption(
            "Strategy × metric, per column: green lowest, red highest",
            caption_font(),
        )
        .margin(12)
        .margin_right(40)
        .x_label_area_size(36)
        .y_label_area_size(230)
        .build_cartesian_2d(-0.5f64..(m as f64 - 0.5), -0.5f64..(n as f64 - 0.5))
        .map_err(plot_err)?;
    chart
        .configure_mesh()
        .y_labels(n)
        .y_label_formatter(&|y| name_at(rows, *y))
        .x_labels(m)
        .x_label_formatter(&|x| {
            let r = x.round();
            if (x - r).abs() < 1e-6 && r >= 0.0 {
                names.get(r as usize).cloned().unwrap_or_default()
            } else {
                String::new()
            }
        })
        .disable_mesh()
        .label_style(("sans-serif", 17))
        .draw()
        .map_err(plot_err)?;
    let font = ("sans-serif", 16).into_font();
    for (j, (_, values, decimals)) in metrics.iter().enumerate() {
        let present: Vec<f64> = values.iter().flatten().copied().collect();
        let lo = present.iter().copied().fold(f64::INFINITY, f64::min);
        let hi = present.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        for (i, v) in values.iter().enumerate() {
            let y = y_of(i, n);
            let x = j as f64;
            let (fill, text) = match v {
                Some(v) => (heat(*v, lo, hi), fmt_value(*v, *decimals)),
                None => (RGBColor(230, 230, 230), "—".into()),
            };
            chart
                .draw_series([
                    Rectangle::new([(x - 0.5, y - 0.5), (x + 0.5, y + 0.5)], fill.filled()),
                    Rectangle::new(
                        [(x - 0.5, y - 0.5), (x + 0.5, y + 0.5)],
                        WHITE.stroke_width(2),
                    ),
                ])
                .map_err(plot_err)?;
            chart
                .draw_series(std::iter::once(Text::new(
                    text,
                    (x, y),
                    font.clone()
                        .color(&BLACK)
                        .pos(Pos::new(HPos::Center, VPos::Center)),
                )))
                .map_err(plot_err)?;
        }
    }
    Ok(())
}

/// Green (best) to yellow to red (worst), log-scaled between `lo` and `hi`.
fn heat(v: f64, lo: f64, hi: f64) -> RGBColor {
    let t = if hi > lo && lo > 0.0 && v > 0.0 {
        (v.ln() - lo.ln()) / (hi.ln() - lo.ln())
    } else if hi > lo {
        (v - lo) / (hi - lo)
    } else {
        0.0
    };
    let t = t.clamp(0.0, 1.0);
    let lerp = |a: f64, b: f64, t: f64| (a + (b - a) * t).round() as u8;
    // Pastel shades keep the black text readable.
    let (g, y, r) = (
        (150.0, 220.0, 160.0),
        (250.0, 235.0, 150.0),
        (240.0, 150.0, 140.0),
    );
    if t < 0.5 {
        let u = t * 2.0;
        RGBColor(lerp(g.0, y.0, u), lerp(g.1, y.1, u), lerp(g.2, y.2, u))
    } else {
        let u = (t - 0.5) * 2.0;
        RGBColor(lerp(y.0, r.0, u), lerp(y.1, r.1, u), lerp(y.2, r.2, u))
    }
}
