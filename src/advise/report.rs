//! What `advise` prints and writes: the table of every candidate with the
//! front marked, the chosen mount config with the figures behind it as
//! comments, the measurements as JSON, and a plot of the front.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::{anyhow, Context, Result};
use plotters::prelude::*;
use serde_json::json;

use super::front::Point;
use super::{Advice, AdviseArgs};
use crate::config::MountConfig;

fn mb(b: u64) -> f64 {
    b as f64 / 1e6
}

fn figures(p: &Point) -> String {
    format!(
        "save {:.3} s, load {:.3} s, {:.1} MB (mean of {} run{})",
        p.save_s,
        p.load_s,
        mb(p.bytes),
        p.runs,
        if p.runs == 1 { "" } else { "s" }
    )
}

/// The table: the plain reference, then every candidate; `*` on the front,
/// `>` on the choice.
pub fn table(a: &Advice) -> String {
    let points = a.points();
    let plain_total = a.plain.as_ref().map(Point::total_s);
    let mut out = String::new();
    let _ = writeln!(
        out,
        "   {:<26} {:>8} {:>8} {:>10} {:>8} {:>10} {:>4}",
        "layout", "save s", "load s", "save+load", "x plain", "size MB", "runs"
    );
    let row = |out: &mut String, mark: &str, p: &Point| {
        let ratio = plain_total
            .map(|t| format!("{:.2}", p.total_s() / t.max(1e-9)))
            .unwrap_or_else(|| "-".into());
        let _ = writeln!(
            out,
            "{mark:<2} {:<26} {:>8.3} {:>8.3} {:>10.3} {:>8} {:>10.1} {:>4}",
            p.name,
            p.save_s,
            p.load_s,
            p.total_s(),
            ratio,
            mb(p.bytes),
            p.runs
        );
    };
    if let Some(p) = &a.plain {
        let mut p = p.clone();
        p.name = "plain disk (reference)".into();
        row(&mut out, "", &p);
    }
    for (i, p) in points.iter().enumerate() {
        let mark = match (i == a.chosen, a.front.contains(&i)) {
            (true, _) => ">*",
            (false, true) => " *",
            _ => "",
        };
        row(&mut out, mark, p);
    }
    for t in a.trials.iter().filter(|t| t.dropped.is_some()) {
        let _ = writeln!(
            out,
            "   {:<26} dropped: {}",
            t.name,
            t.dropped.as_deref().unwrap_or_default()
        );
    }
    out
}

/// The chosen config, its figures and the front as comments above it.
pub fn config_text(a: &Advice) -> Result<String> {
    let points = a.points();
    let chosen = points
        .get(a.chosen)
        .ok_or_else(|| anyhow!("no chosen layout"))?;
    let cand = a
        .chosen_candidate()
        .ok_or_else(|| anyhow!("the chosen layout has no config"))?;
    let mut t = String::new();
    let _ = writeln!(
        t,
        "# Written by `ckptfs advise` on {} (goal: {}, {}).",
        crate::clock::iso_utc_now(),
        serde_json::to_value(a.goal)?.as_str().unwrap_or("?"),
        a.goal.describe()
    );
    let _ = writeln!(
        t,
        "# Checkpoint: {} ({} tensors, {:.1} MB).",
        a.source,
        a.model_tensors,
        mb(a.model_bytes)
    );
    let _ = writeln!(
        t,
        "# Measured on a sample of {} tensors, {:.1} MB ({:.0}%; every (dtype, shape) kind: {} of {}),",
        a.sample.names.len(),
        mb(a.sample.bytes),
        100.0 * a.sample.bytes as f64 / a.model_bytes.max(1) as f64,
        a.sample.groups_sampled,
        a.sample.groups
    );
    let _ = writeln!(
        t,
        "# through real mounts on {} ({}), cold loads; save: {}; load: {}; {:.0} s of a {:.0} s budget.",
        a.backing.display(),
        a.backing_fs.as_deref().unwrap_or("unknown filesystem"),
        a.save_tool,
        a.load_tool,
        a.elapsed_s,
        a.budget_s
    );
    let _ = writeln!(t, "#   this layout ({}): {}", chosen.name, figures(chosen));
    if let Some(p) = &a.plain {
        let _ = writeln!(t, "#   plain disk, same sample: {}", figures(p));
    }
    if let Some(r) = a.runner_up.and_then(|i| points.get(i)) {
        let _ = writeln!(t, "#   next best for the goal ({}): {}", r.name, figures(r));
    }
    let _ = writeln!(
        t,
        "# Pareto front (save s / load s / MB; none is better on all three):"
    );
    for &i in &a.front {
        let p = &points[i];
        let _ = writeln!(
            t,
            "#   {:<26} {:.3} / {:.3} / {:.1}{}",
            p.name,
            p.save_s,
            p.load_s,
            mb(p.bytes),
            if p.lossy { "  (lossy)" } else { "" }
        );
    }
    let _ = writeln!(
        t,
        "# Runs on this machine vary by tens of percent; rerun with a longer --time for more runs.\n"
    );
    t.push_str(&cand.toml());
    // What is written must mount.
    MountConfig::parse(&t, &chosen.name)
        .map_err(|e| anyhow!("the written config does not parse: {e}"))?;
    Ok(t)
}

/// The advice as JSON (`--json`): inputs, every trial's runs and means, the front and the choice.
pub fn to_json(a: &Advice) -> serde_json::Value {
    let points = a.points();
    let trials: Vec<serde_json::Value> = a
        .trials
        .iter()
        .map(|t| {
            json!({
                "name": t.name,
                "config": t.candidate.as_ref().map(|c| c.toml()),
                "dropped": t.dropped,
                "runs": t.runs.iter().map(|r| json!({
                    "run": r.run,
                    "save_s": r.save_s,
                    "load_s": r.load_s,
                    "backing_bytes": r.backing.bytes,
                    "backing_files": r.backing.files,
                })).collect::<Vec<_>>(),
            })
        })
        .collect();
    json!({
        "checkpoint": a.source,
        "checkpoint_bytes": a.model_bytes,
        "sample": {
            "tensors": a.sample.names,
            "bytes": a.sample.bytes,
            "groups": a.sample.groups,
            "groups_sampled": a.sample.groups_sampled,
        },
        "backing": a.backing,
        "goal": a.goal,
        "allow_lossy": a.allow_lossy,
        "budget_s": a.budget_s,
        "elapsed_s": a.elapsed_s,
        "plain": a.plain,
        "points": points,
        "front": a.front.iter().map(|&i| points[i].name.clone()).collect::<Vec<_>>(),
        "chosen": points.get(a.chosen).map(|p| p.name.clone()),
        "runner_up": a.runner_up.and_then(|i| points.get(i)).map(|p| p.name.clone()),
        "trials": trials,
    })
}

fn e<E: std::fmt::Display>(err: E) -> anyhow::Error {
    anyhow!("plot: {err}")
}

/// Save time against load time; front points labelled with their size.
pub fn plot(a: &Advice, out: &Path) -> Result<()> {
    crate::bench::plot::ensure_font()?;
    let points = a.points();
    let mut all = points.clone();
    all.extend(a.plain.clone());
    let xmax = all.iter().fold(0.001f64, |m, p| m.max(p.save_s)) * 1.15;
    let ymax = all.iter().fold(0.001f64, |m, p| m.max(p.load_s)) * 1.15;
    let root = BitMapBackend::new(out, (1200, 800)).into_drawing_area();
    root.fill(&WHITE).map_err(e)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            format!("ckptfs advise: save vs load ({})", a.goal.describe()),
            ("sans-serif", 26),
        )
        .margin(20)
        .x_label_area_size(50)
        .y_label_area_size(70)
        .build_cartesian_2d(0f64..xmax, 0f64..ymax)
        .map_err(e)?;
    chart
        .configure_mesh()
        .x_desc("save s (to durable, unmounted)")
        .y_desc("cold load s")
        .label_style(("sans-serif", 16))
        .draw()
        .map_err(e)?;
    let off: Vec<&Point> = (0..points.len())
        .filter(|i| !a.front.contains(i))
        .map(|i| &points[i])
        .collect();
    chart
        .draw_series(
            off.iter()
                .map(|p| Circle::new((p.save_s, p.load_s), 5, BLACK.mix(0.35).filled())),
        )
        .map_err(e)?
        .label("dominated")
        .legend(|(x, y)| Circle::new((x + 10, y), 5, BLACK.mix(0.35).filled()));
    chart
        .draw_series(a.front.iter().map(|&i| {
            let p = &points[i];
            let style = if i == a.chosen { RED } else { BLUE };
            EmptyElement::at((p.save_s, p.load_s))
                + Circle::new((0, 0), if i == a.chosen { 9 } else { 6 }, style.filled())
                + Text::new(
                    format!("{} ({:.0} MB)", p.name, mb(p.bytes)),
                    (8, -18),
                    ("sans-serif", 15),
                )
        }))
        .map_err(e)?
        .label("Pareto front (red: chosen)")
        .legend(|(x, y)| Circle::new((x + 10, y), 6, BLUE.filled()));
    if let Some(p) = &a.plain {
        chart
            .draw_series(std::iter::once(
                EmptyElement::at((p.save_s, p.load_s))
                    + TriangleMarker::new((0, 0), 8, GREEN.filled())
                    + Text::new("plain disk".to_string(), (8, -18), ("sans-serif", 15)),
            ))
            .map_err(e)?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .label_font(("sans-serif", 16))
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(e)?;
    root.present().map_err(e)?;
    Ok(())
}

/// Prints the table and writes the config, JSON and plot asked for.
pub fn write_all(a: &Advice, args: &AdviseArgs) -> Result<()> {
    let text = config_text(a)?;
    std::fs::write(&args.out, &text).with_context(|| format!("write {}", args.out.display()))?;
    println!();
    println!(
        "ckptfs advise: {} tensors, {:.1} MB sampled from {}",
        a.sample.names.len(),
        mb(a.sample.bytes),
        a.source
    );
    println!(
        "  measured on {} in {:.0} s (budget {:.0} s); goal: {}; * Pareto front, > chosen",
        a.backing.display(),
        a.elapsed_s,
        a.budget_s,
        a.goal.describe()
    );
    println!();
    print!("{}", table(a));
    println!();
    let points = a.points();
    if let Some(p) = points.get(a.chosen) {
        println!("chosen: {}: {}", p.name, figures(p));
    }
    println!("config: {}", args.out.display());
    if let Some(j) = &args.json {
        let body = serde_json::to_vec_pretty(&to_json(a))?;
        std::fs::write(j, body).with_context(|| format!("write {}", j.display()))?;
        println!("json:   {}", j.display());
    }
    if let Some(p) = &args.plot {
        plot(a, p)?;
        println!("plot:   {}", p.display());
    }
    Ok(())
}
