//! `ckptfs advise`: measures candidate layouts on a sample of the user's own
//! checkpoint, through real mounts on the user's backing disk, and writes
//! the mount config that serves a goal best.
//!
//! Each candidate run is a `ckptfs bench` run (fresh backing dir, save,
//! fsync, unmount, page cache dropped, remount, cold load, verify), so the
//! advice and the bench measure the same thing. The sample's size follows
//! the time budget: a calibration run on plain disk gives this machine's
//! rate, and the candidates' runs are planned from it. Runs go round-robin
//! over the candidates until the budget is spent (at least one each).

pub mod candidate;
pub mod front;
pub mod report;
pub mod sample;

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};

use crate::bench::disk;
use crate::bench::load_tool::LoadTool;
use crate::bench::machine;
use crate::bench::model::{Model, ModelDtype};
use crate::bench::mount_process::MountUnavailable;
use crate::bench::preset::Preset;
use crate::bench::runner::{self, RunContext, RunResult};
use crate::bench::save_tool::{self, SaveTool};
use crate::bench::strategy::{MountSetup, Strategy, PLAIN};
use crate::bench::verify::Narrowing;

use self::candidate::Candidate;
use self::front::{Goal, Point};
use self::sample::TensorInfo;

/// `ckptfs advise` flags.
#[derive(Debug, Clone, clap::Args)]
pub struct AdviseArgs {
    /// The checkpoint to sample: a .safetensors file, a folder of shards, or
    /// a PyTorch .bin/.pt (or --preset).
    #[arg(value_name = "CHECKPOINT_OR_DIR", required_unless_present = "preset")]
    pub checkpoint: Option<PathBuf>,
    /// A built-in model instead: openllama-3b or tiny (all layers, f32,
    /// unless --layers/--dtype say otherwise).
    #[arg(long, conflicts_with = "checkpoint")]
    pub preset: Option<String>,
    /// Keep only the first N decoder layers of the preset.
    #[arg(long, value_name = "N", requires = "preset")]
    pub layers: Option<usize>,
    /// Element type of preset weights; a checkpoint's floats are cast to it.
    #[arg(long, value_enum)]
    pub dtype: Option<ModelDtype>,
    /// Draw f32 preset values as f16 and widen them (the seed documents' values).
    #[arg(long, requires = "preset")]
    pub f16_values: bool,
    /// Where the candidates' backing dirs and mountpoints go: the disk the
    /// mounts will use.
    #[arg(long, value_name = "DIR", default_value = "/var/tmp")]
    pub backing: PathBuf,
    /// Time budget for the measurements: 300, 90s, 5m, 1h.
    #[arg(long, value_name = "DURATION", default_value = "5m", value_parser = parse_duration)]
    pub time: f64,
    /// What to optimise.
    #[arg(long, value_enum, default_value = "balanced")]
    pub goal: Goal,
    /// Also try storing floats as float16 / bfloat16 (loads give back rounded values).
    #[arg(long)]
    pub allow_lossy: bool,
    /// The mount config to write.
    #[arg(long, value_name = "FILE.toml")]
    pub out: PathBuf,
    /// Most runs per candidate (fewer when the budget runs out).
    #[arg(long, value_name = "N", default_value_t = 3)]
    pub runs: usize,
    /// Sample this many MB of the checkpoint instead of sizing it from --time.
    #[arg(long, value_name = "MB")]
    pub sample_mb: Option<f64>,
    /// Every measurement, as JSON.
    #[arg(long, value_name = "FILE.json")]
    pub json: Option<PathBuf>,
    /// A plot of the front: save time against load time, size as labels.
    #[arg(long, value_name = "FILE.png")]
    pub plot: Option<PathBuf>,
    /// builtin (candle's safetensors writer), torch, safetensors-py,
    /// save-pretrained, dcp.
    #[arg(long, value_name = "TOOL", default_value = "builtin")]
    pub save_tool: String,
    /// builtin, safetensors-mmap, torch, dcp (default: dcp with --save-tool
    /// dcp, else builtin).
    #[arg(long, value_name = "TOOL")]
    pub load_tool: Option<String>,
}

/// `300`, `90s`, `5m`, `1h` as seconds.
pub fn parse_duration(s: &str) -> std::result::Result<f64, String> {
    let s = s.trim();
    let (num, unit) = match s.char_indices().find(|(_, c)| c.is_ascii_alphabetic()) {
        Some((i, _)) => (&s[..i], &s[i..]),
        None => (s, "s"),
    };
    let v: f64 = num
        .trim()
        .parse()
        .map_err(|_| format!("`{s}` is not a duration (e.g. 300, 90s, 5m, 1h)"))?;
    let mult = match unit {
        "s" => 1.0,
        "m" | "min" => 60.0,
        "h" => 3600.0,
        _ => return Err(format!("`{s}`: the unit must be s, m or h")),
    };
    if !(v > 0.0 && v.is_finite()) {
        return Err(format!("`{s}`: the duration must be positive"));
    }
    Ok(v * mult)
}

/// What a candidate run is assumed to cost over a plain run of the same
/// bytes (mount, unmount, remount, chunking, codec): on a 262 MB sample of
/// the seeds' workload the first-round candidates ran at 0.7-1.6x plain.
const CANDIDATE_COST: f64 = 1.5;
/// Candidates of the second round, planned for before it is known.
const SECOND_ROUND_PLAN: usize = 6;
/// The calibration sample: enough to time the disk, cheap enough to waste.
const CALIBRATION_BYTES: u64 = 64 << 20;
/// Smallest sample worth measuring (per-file costs would dominate below).
const MIN_SAMPLE_BYTES: u64 = 32 << 20;

/// One candidate's runs.
pub struct Trial {
    /// The candidate's name (`plain` for the plain-disk reference).
    pub name: String,
    /// None for the plain-disk reference.
    pub candidate: Option<Candidate>,
    /// One result per run, in the order they ran.
    pub runs: Vec<RunResult>,
    /// Why it was dropped (unavailable here, failed, did not verify).
    pub dropped: Option<String>,
}

impl Trial {
    fn new(name: String, candidate: Option<Candidate>) -> Trial {
        Trial {
            name,
            candidate,
            runs: Vec::new(),
            dropped: None,
        }
    }

    /// The means over its runs; `None` when it was dropped or never ran.
    pub fn point(&self) -> Option<Point> {
        if self.dropped.is_some() || self.runs.is_empty() {
            return None;
        }
        let n = self.runs.len() as f64;
        let mean = |f: fn(&RunResult) -> f64| self.runs.iter().map(f).sum::<f64>() / n;
        Some(Point {
            name: self.name.clone(),
            save_s: mean(|r| r.save_s),
            load_s: mean(|r| r.load_s),
            bytes: (mean(|r| r.backing.bytes as f64)) as u64,
            lossy: self.candidate.as_ref().is_some_and(Candidate::is_lossy),
            runs: self.runs.len(),
        })
    }
}

/// What `advise` found, for the report and the written config.
pub struct Advice {
    /// What was measured, in words (the model and the sample taken of it).
    pub source: String,
    /// Bytes of the whole checkpoint.
    pub model_bytes: u64,
    /// Tensors in the whole checkpoint.
    pub model_tensors: usize,
    /// The tensors measured.
    pub sample: sample::Sample,
    /// The directory the candidates' backing dirs were made in.
    pub backing: PathBuf,
    /// The filesystem type of `backing`, when it could be found.
    pub backing_fs: Option<String>,
    /// What the choice optimised.
    pub goal: Goal,
    /// Whether lossy candidates could be chosen.
    pub allow_lossy: bool,
    /// The time budget given, in seconds.
    pub budget_s: f64,
    /// The time the measurements took, in seconds.
    pub elapsed_s: f64,
    /// The plain-disk reference, if it was measured.
    pub plain: Option<Point>,
    /// Every candidate tried, the plain reference first.
    pub trials: Vec<Trial>,
    /// Indices into `points()` of the front.
    pub front: Vec<usize>,
    /// Index into `points()` of the chosen candidate.
    pub chosen: usize,
    /// Index into `points()` of the next best, if any.
    pub runner_up: Option<usize>,
    /// The tool that saved the checkpoint in each run.
    pub save_tool: String,
    /// The tool that loaded it.
    pub load_tool: String,
}

impl Advice {
    /// The candidates' points (the plain reference is not one: it is not a
    /// mount config).
    pub fn points(&self) -> Vec<Point> {
        self.trials
            .iter()
            .filter(|t| t.candidate.is_some())
            .filter_map(Trial::point)
            .collect()
    }

    /// The candidate chosen (its mount config is the one written).
    pub fn chosen_candidate(&self) -> Option<&Candidate> {
        let name = &self.points().get(self.chosen)?.name.clone();
        self.trials
            .iter()
            .find(|t| &t.name == name)
            .and_then(|t| t.candidate.as_ref())
    }
}

/// Runs the advisor; returns the process exit status.
pub fn run(args: AdviseArgs) -> Result<u8> {
    if args.runs == 0 {
        bail!("--runs must be at least 1");
    }
    let save = SaveTool::parse(&args.save_tool)?;
    let load = LoadTool::parse(args.load_tool.as_deref().unwrap_or(match save {
        SaveTool::Dcp => "dcp",
        _ => "builtin",
    }))?;
    if matches!(save, SaveTool::Cmd(_)) {
        bail!("--save-tool: advise takes builtin, torch, safetensors-py, save-pretrained or dcp");
    }
    if (load == LoadTool::Torch) != (save == SaveTool::Torch) && load != LoadTool::Builtin {
        bail!("--load-tool torch goes with --save-tool torch, safetensors-mmap with a safetensors save tool");
    }
    if (load == LoadTool::Dcp) != (save == SaveTool::Dcp) {
        bail!("--save-tool dcp and --load-tool dcp go together (DCP checkpoints are read by DCP)");
    }
    let scripts = save_tool::scripts_dir();
    save.check(&scripts)?;
    load.check(&scripts)?;
    if let Some(dir) = args.out.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
    }
    let (device, _, note) = machine::select_device();
    if let Some(note) = note {
        eprintln!("ckptfs advise: {note}");
    }
    let model = match (&args.checkpoint, &args.preset) {
        (_, Some(p)) => {
            let preset = Preset::by_name(p)?;
            let preset = preset.with_layers(args.layers.unwrap_or(preset.layers))?;
            Model::from_preset(
                &preset,
                args.dtype.unwrap_or(ModelDtype::F32),
                0,
                args.f16_values,
                &device,
            )?
        }
        (Some(path), None) => Model::from_path(path, args.dtype, &device)?,
        (None, None) => bail!("name a checkpoint or a --preset"),
    };
    let tensors: Vec<TensorInfo> = model
        .cpu
        .iter()
        .map(|(n, t)| TensorInfo {
            name: n.clone(),
            kind: format!("{:?}{:?}", t.dtype(), t.dims()),
            bytes: (t.elem_count() * t.dtype().size_in_bytes()) as u64,
        })
        .collect();
    let narrowable = model
        .cpu
        .iter()
        .any(|(_, t)| t.dtype() == candle_core::DType::F32);

    let work = args
        .backing
        .join(format!("ckptfs-advise-{}", std::process::id()));
    std::fs::create_dir_all(&work).with_context(|| format!("create {}", work.display()))?;
    let outcome = advise(
        &args, &model, &tensors, narrowable, &device, &save, load, &scripts, &work,
    );
    let cleanup = disk::remove_dir(&work);
    let advice = outcome?;
    cleanup?;
    report::write_all(&advice, &args)?;
    Ok(0)
}

#[allow(clippy::too_many_arguments)]
fn advise(
    args: &AdviseArgs,
    model: &Model,
    tensors: &[TensorInfo],
    narrowable: bool,
    device: &candle_core::Device,
    save: &SaveTool,
    load: LoadTool,
    scripts: &Path,
    work: &Path,
) -> Result<Advice> {
    let started = Instant::now();
    // Mounts run a copy of this binary, as in the bench.
    let exe = std::env::current_exe().context("locate the ckptfs binary")?;
    let mount_exe = work.join("ckptfs");
    std::fs::copy(&exe, &mount_exe)
        .with_context(|| format!("copy {} to {}", exe.display(), mount_exe.display()))?;
    let total: u64 = tensors.iter().map(|t| t.bytes).sum();
    let plain = Strategy {
        name: PLAIN.into(),
        config: None,
        store: None,
    };
    let first = candidate::first_round();

    // Calibration: plain disk on a small sample gives this machine's rate.
    let sample_bytes = match args.sample_mb {
        Some(mb) => (mb * 1e6) as u64,
        None => {
            let cal = sample::pick(tensors, CALIBRATION_BYTES.min(total));
            let cal_model = model.subset(&cal.names, "calibration sample".into(), device)?;
            let src = source_file(save, &cal_model, work, "calibration")?;
            let ctx = context(&mount_exe, &cal_model, device, save, load, src.as_deref(), scripts);
            // The first write after the model is built is slow (fresh
            // memory, up to 3x here): an untimed run first.
            let cal_dir = work.join("calibration");
            runner::run_once(&ctx, &plain, 0, &cal_dir, &|_| {})
                .context("warm-up run on plain disk")?;
            let t = Instant::now();
            runner::run_once(&ctx, &plain, 0, &cal_dir, &|_| {})
                .context("calibration run on plain disk")?;
            let rate = cal.bytes as f64 / t.elapsed().as_secs_f64().max(1e-3);
            let planned = (first.len() + SECOND_ROUND_PLAN + 1) * args.runs;
            let left = (args.time - started.elapsed().as_secs_f64()).max(0.0);
            let fit = left * rate / (CANDIDATE_COST * planned as f64);
            eprintln!(
                "ckptfs advise: plain disk ran {:.0} MB/s (save + cold load); {:.0} s left for {planned} runs",
                rate / 1e6,
                left
            );
            (fit as u64).max(MIN_SAMPLE_BYTES)
        }
    }
    .min(total);
    let sample = sample::pick(tensors, sample_bytes);
    let source = format!(
        "{} tensors of {} ({:.1} of {:.1} MB)",
        sample.names.len(),
        model.source,
        sample.bytes as f64 / 1e6,
        total as f64 / 1e6
    );
    eprintln!("ckptfs advise: measuring on {source}");
    let sub = model.subset(&sample.names, source, device)?;
    let src = source_file(save, &sub, work, "sample")?;
    let ctx = context(
        &mount_exe,
        &sub,
        device,
        save,
        load,
        src.as_deref(),
        scripts,
    );
    let cfg_dir = work.join("configs");
    std::fs::create_dir_all(&cfg_dir).with_context(|| format!("create {}", cfg_dir.display()))?;

    let mut trials = vec![Trial::new(PLAIN.into(), None)];
    trials.extend(first.iter().map(|c| Trial::new(c.name(), Some(c.clone()))));
    let over = |started: &Instant| started.elapsed().as_secs_f64() > args.time;
    // Round 1 of the first round is always run, whatever the budget: the
    // advice needs every candidate measured once.
    for t in trials.iter_mut() {
        run_trial(&ctx, t, 1, &cfg_dir, work)?;
    }
    if !over(&started) {
        let points: Vec<Point> = trials.iter().skip(1).filter_map(Trial::point).collect();
        if let Some((best, _)) = front::choose(&points, args.goal, false) {
            let best_name = points[best].name.clone();
            let base = trials
                .iter()
                .find(|t| t.name == best_name)
                .and_then(|t| t.candidate.clone());
            if let Some(base) = base {
                for c in candidate::second_round(&base, args.allow_lossy, narrowable) {
                    if over(&started) {
                        break;
                    }
                    let mut t = Trial::new(c.name(), Some(c));
                    run_trial(&ctx, &mut t, 1, &cfg_dir, work)?;
                    trials.push(t);
                }
            }
        }
    }
    // Each later round starts one trial later, as `ckptfs bench` does: the
    // place right after plain disk's load costs loads more on some machines.
    'rounds: for run in 2..=args.runs {
        for (_, i) in crate::bench::round_order(run, trials.len()) {
            if over(&started) {
                break 'rounds;
            }
            let t = &mut trials[i];
            run_trial(&ctx, t, run, &cfg_dir, work)?;
        }
    }
    let elapsed_s = started.elapsed().as_secs_f64();

    let plain_point = trials[0].point();
    let mut advice = Advice {
        source: model.source.clone(),
        model_bytes: total,
        model_tensors: tensors.len(),
        sample,
        backing: args.backing.clone(),
        backing_fs: disk::filesystem_type(&args.backing),
        goal: args.goal,
        allow_lossy: args.allow_lossy,
        budget_s: args.time,
        elapsed_s,
        plain: plain_point,
        trials,
        front: Vec::new(),
        chosen: 0,
        runner_up: None,
        save_tool: save.name(),
        load_tool: load.name().to_string(),
    };
    let points = advice.points();
    advice.front = front::pareto(&points);
    let Some((chosen, runner_up)) = front::choose(&points, args.goal, args.allow_lossy) else {
        let why: Vec<String> = advice
            .trials
            .iter()
            .filter_map(|t| t.dropped.as_ref().map(|d| format!("{}: {d}", t.name)))
            .collect();
        bail!(
            "no candidate layout could be measured:\n  {}",
            why.join("\n  ")
        );
    };
    advice.chosen = chosen;
    advice.runner_up = runner_up;
    Ok(advice)
}

fn context<'a>(
    exe: &'a Path,
    model: &'a Model,
    device: &'a candle_core::Device,
    save: &'a SaveTool,
    load: LoadTool,
    source_file: Option<&'a Path>,
    scripts: &'a Path,
) -> RunContext<'a> {
    RunContext {
        exe,
        model,
        device,
        save_tool: save,
        load_tool: load,
        source_file,
        scripts,
    }
}

/// The plain safetensors copy of `model` that external save tools read.
fn source_file(save: &SaveTool, model: &Model, work: &Path, name: &str) -> Result<Option<PathBuf>> {
    if !save.needs_source_file() {
        return Ok(None);
    }
    let p = work.join(format!("{name}.safetensors"));
    candle_core::safetensors::save(&model.on_device, &p)
        .with_context(|| format!("write {}", p.display()))?;
    Ok(Some(p))
}

/// One run of a trial; a candidate that cannot run or verify is dropped
/// with the reason, a failure of the plain reference stops the advice.
fn run_trial(
    ctx: &RunContext,
    t: &mut Trial,
    run: usize,
    cfg_dir: &Path,
    work: &Path,
) -> Result<()> {
    if t.dropped.is_some() {
        return Ok(());
    }
    let strategy = match &t.candidate {
        None => Strategy {
            name: PLAIN.into(),
            config: None,
            store: None,
        },
        Some(c) => {
            let path = cfg_dir.join(format!("{}.toml", t.name));
            let toml = c.toml();
            std::fs::write(&path, &toml).with_context(|| format!("write {}", path.display()))?;
            Strategy {
                name: t.name.clone(),
                config: Some(MountSetup {
                    path,
                    toml,
                    narrowing: Narrowing::from(c.dtype),
                }),
                store: None,
            }
        }
    };
    let dir = work.join(format!("{}-run{run}", t.name));
    let outcome = runner::run_once(ctx, &strategy, run, &dir, &|_| {});
    let failure = match outcome {
        Ok(r) => match &r.verification.failure {
            None => {
                eprintln!(
                    "ckptfs advise: {} run {run}: save {:.3} s, load {:.3} s, {:.1} MB",
                    t.name,
                    r.save_s,
                    r.load_s,
                    r.backing.bytes as f64 / 1e6
                );
                t.runs.push(r);
                return Ok(());
            }
            Some(why) => format!("did not verify: {why}"),
        },
        Err(e) if e.downcast_ref::<MountUnavailable>().is_some() => {
            format!("unavailable here: {e:#}")
        }
        Err(e) => format!("failed: {e:#}"),
    };
    if t.candidate.is_none() {
        bail!("the plain-disk reference {failure}");
    }
    eprintln!("ckptfs advise: {} dropped: {failure}", t.name);
    t.dropped = Some(failure);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_with_units_and_bad_ones_are_refused() {
        assert_eq!(parse_duration("300"), Ok(300.0));
        assert_eq!(parse_duration("90s"), Ok(90.0));
        assert_eq!(parse_duration("5m"), Ok(300.0));
        assert_eq!(parse_duration("1.5h"), Ok(5400.0));
        assert!(parse_duration("5 days").is_err());
        assert!(parse_duration("0").is_err());
        assert!(parse_duration("m").is_err());
    }
}
