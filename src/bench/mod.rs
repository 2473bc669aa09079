//! `ckptfs bench`: saves a model through every storage strategy and loads it
//! back, measuring each step.
//!
//! For each strategy (`plain`, no FUSE, as the reference; then every mount
//! config in `mount-configs/`) and each run: a fresh backing dir, `ckptfs
//! mount` started as its own process, the model saved through the mount,
//! fsync, `ckptfs umount` (commit), the page cache dropped, a fresh mount, the
//! model loaded onto the device (candle-core; the GPU with the `cuda` feature
//! and a GPU, else the CPU), and verified against the source: bit-exact for
//! lossless layouts, within the stored dtype's rounding for lossy ones.
//! Results go to `results.json`, `results.md` and `results.png`.
//!
//! The model is a preset whose values come from our own seeded normal(0,
//! 0.02) (`openllama-3b`, the exact OpenLLaMA-3B state dict, or `tiny`), or a
//! checkpoint given by path. Preset weights are f32 by default, drawn at full
//! f32 precision; the seed documents drew f16 and widened it, which
//! `--f16-values` reproduces.

pub mod disk;
pub mod experiment;
pub mod load_tool;
pub mod machine;
pub mod model;
pub mod mount_process;
pub mod peer;
pub mod plot;
pub mod preset;
pub mod profile_summary;
pub mod progress;
pub mod report;
pub mod results;
pub mod rng;
pub mod runner;
pub mod save_tool;
pub mod settings;
pub mod stats;
pub mod strategy;
pub mod tensor_read;
pub mod tensor_write;
pub mod verify;
pub mod wall;

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};

use self::machine::MachineInfo;
use self::model::Model;
use self::mount_process::MountUnavailable;
use self::peer::{Peer, PeerError, PeerResult};
use self::preset::Preset;
use self::progress::Progress;
use self::results::{BenchResults, ModelInfo, RunFailure, Status, StrategyResult};
use self::runner::{RunContext, RunResult};
pub use self::settings::BenchArgs;
use self::settings::{ModelChoice, Settings};
use self::wall::WallTime;

/// Runs the benchmark; the exit status is 1 when a strategy failed (a run
/// errored or did not verify), 0 otherwise.
pub fn run(args: BenchArgs) -> Result<u8> {
    let started = crate::clock::iso_utc_now();
    let started_at = Instant::now();
    let mut wall = WallTime::default();
    let settings = Settings::resolve(&args)?;
    let strategies = strategy::select(
        strategy::discover(&settings.configs)?,
        &settings.strategies,
        settings.store.as_ref(),
    )?;
    let peers = peer::select(&settings.compare, &strategies)?;
    // Found unwritable now rather than after an hour of runs.
    std::fs::create_dir_all(&settings.out)
        .with_context(|| format!("create the results folder {}", settings.out.display()))?;
    let scripts = save_tool::scripts_dir();
    settings.save_tool.check(&scripts)?;
    settings.load_tool.check(&scripts)?;
    let exe = std::env::current_exe().context("locate the ckptfs binary")?;

    let (device, device_name, device_note) = settings.device.open()?;
    if let Some(note) = &device_note {
        eprintln!("ckptfs bench: {note}");
    }
    check_memory(&settings)?;
    eprintln!("ckptfs bench: preparing the model ...");
    let t = Instant::now();
    let model = match &settings.model {
        ModelChoice::Preset {
            preset,
            layers,
            dtype,
            f16_values,
            seed,
        } => {
            let p = Preset::by_name(preset)?.with_layers(*layers)?;
            Model::from_preset(&p, *dtype, *seed, *f16_values, &device)?
        }
        ModelChoice::Path { path, cast } => {
            let m = Model::from_path(path, *cast, &device)?;
            // Each load holds the file read into memory and the loaded copy.
            ensure_memory(
                2 * m.bytes() as u64,
                &format!("{} (file buffer and loaded copy)", m.source),
                "",
            )?;
            m
        }
    };
    eprintln!(
        "ckptfs bench: {}: {} tensors, {} parameters, {:.3} GB, ready in {:.1} s",
        model.source,
        model.cpu.len(),
        model.parameters(),
        model.bytes() as f64 / 1e9,
        t.elapsed().as_secs_f64()
    );
    wall.model_s = t.elapsed().as_secs_f64();

    let work = settings
        .work_dir
        .join(format!("ckptfs-bench-{}", std::process::id()));
    std::fs::create_dir_all(&work).with_context(|| format!("create {}", work.display()))?;
    // Mounts run a copy of this binary taken now, so that a rebuild during a
    // long benchmark cannot put two builds into one comparison.
    let mount_exe = work.join("ckptfs");
    let outcome = std::fs::copy(&exe, &mount_exe)
        .with_context(|| format!("copy {} to {}", exe.display(), mount_exe.display()))
        .and_then(|_| {
            run_all(
                &settings,
                &strategies,
                &peers,
                &model,
                &device,
                &mount_exe,
                &scripts,
                &work,
                &mut wall,
            )
        });
    let cleanup = disk::remove_dir(&work);
    let mut done = outcome?;
    cleanup?;

    let baseline = results::summarise(&mut done.strategies);
    wall.finish(started_at);
    peer::summarise(&mut done.peers, &done.strategies);
    let machine = MachineInfo::collect(&device_name, device_note, &settings.work_dir);
    let page_cache = match &done.cache_note {
        None => "dropped before every load (cold loads)".to_string(),
        Some(why) => format!("NOT dropped ({why}): loads may be warm"),
    };
    let results = BenchResults {
        started_utc: started,
        finished_utc: crate::clock::iso_utc_now(),
        command: std::env::args_os()
            .map(|a| a.to_string_lossy().into_owned())
            .collect(),
        experiment_toml: settings.experiment_text.clone(),
        model: ModelInfo {
            source: model.source.clone(),
            tensors: model.cpu.len(),
            parameters: model.parameters(),
            bytes: model.bytes(),
            dtypes: model.dtypes(),
        },
        machine,
        save_tool: settings.save_tool.name(),
        load_tool: settings.load_tool.name().to_string(),
        baseline,
        page_cache,
        strategies: done.strategies,
        peers: done.peers,
        settings: settings.clone(),
        wall,
    };
    if let Err(e) = write_outputs(&results, &settings.out) {
        if settings.out.join("results.json").is_file() {
            return Err(e);
        }
        // The runs took long: keep their figures somewhere.
        let fallback =
            std::env::temp_dir().join(format!("ckptfs-bench-{}.json", std::process::id()));
        let saved = serde_json::to_vec_pretty(&results)
            .ok()
            .and_then(|json| std::fs::write(&fallback, json).ok());
        return Err(match saved {
            Some(()) => e.context(format!("results.json saved to {}", fallback.display())),
            None => e,
        });
    }
    let failed = results
        .strategies
        .iter()
        .any(|s| s.status == Status::Failed)
        || results.peers.iter().any(|p| p.status == Status::Failed);
    Ok(u8::from(failed))
}

/// The order of round `run` (from 1) over `n` entries, as (place from 0,
/// index): each round starts one entry later than the round before.
pub(crate) fn round_order(run: usize, n: usize) -> impl Iterator<Item = (usize, usize)> {
    (0..n).map(move |place| (place, (place + run.saturating_sub(1)) % n))
}

/// What the runs produced.
struct Done {
    strategies: Vec<StrategyResult>,
    peers: Vec<PeerResult>,
    /// Why the page cache could not be dropped, if it could not.
    cache_note: Option<String>,
}

#[allow(clippy::too_many_arguments)]
fn run_all(
    settings: &Settings,
    strategies: &[strategy::Strategy],
    peers: &[Peer],
    model: &Model,
    device: &candle_core::Device,
    exe: &Path,
    scripts: &Path,
    work: &Path,
    wall: &mut WallTime,
) -> Result<Done> {
    let setup = Instant::now();
    let source_file = if settings.save_tool.needs_source_file() || !peers.is_empty() {
        let p = work.join("source.safetensors");
        candle_core::safetensors::save(&model.on_device, &p)
            .with_context(|| format!("write the source file {}", p.display()))?;
        Some(p)
    } else {
        None
    };
    let ctx = RunContext {
        exe,
        model,
        device,
        save_tool: &settings.save_tool,
        load_tool: settings.load_tool,
        source_file: source_file.as_deref(),
        scripts,
    };
    let runs = settings.runs;
    let progress = Progress::new((runs * (strategies.len() + peers.len())) as u64);
    progress.step("warming up: an untimed save and load on plain disk");
    warm_up(&ctx, work)?;
    wall.setup_s = setup.elapsed().as_secs_f64();
    let mut out: Vec<StrategyResult> = strategies.iter().map(StrategyResult::new).collect();
    let mut peer_out: Vec<PeerResult> = peers.iter().map(PeerResult::new).collect();
    let mut cache_note = None;
    let mut server: Option<peer::PeerServer> = None;
    // Round-robin over strategies, so slow drift of the machine spreads
    // evenly instead of landing on one strategy; each round starts one
    // strategy later, so each takes every place in a round alike. The
    // place matters: on a 2-core VM the strategy right after `plain`
    // loaded 1.8 GB 1-1.5 s slower than the same one a place later.
    for run in 1..=runs {
        for (place, i) in round_order(run, strategies.len()) {
            let (strategy, result) = (&strategies[i], &mut out[i]);
            if result.is_unavailable() {
                continue;
            }
            let name = &strategy.name;
            let run_dir: PathBuf = work.join(format!("{name}-run{run}"));
            let phase = |p: &str| progress.step(&format!("{name} run {run}/{runs}: {p}"));
            let t = Instant::now();
            let outcome = runner::run_once(&ctx, strategy, run, &run_dir, &phase);
            let timed = outcome.as_ref().map_or(0.0, |r| r.save_s + r.load_s);
            wall.add_strategy_run(t.elapsed(), timed);
            match outcome {
                Ok(mut r) => {
                    r.place = place + 1;
                    progress.line(&run_line(name, runs, &r));
                    if let Some(note) = &r.page_cache_note {
                        cache_note.get_or_insert_with(|| note.clone());
                    }
                    result.runs.push(r);
                    progress.advance(1);
                }
                Err(e)
                    if is_unavailable(&e)
                        && result.runs.is_empty()
                        && result.failures.is_empty() =>
                {
                    let why = format!("{e:#}");
                    progress.line(&format!("{name}: unavailable: {why}"));
                    result.status = Status::Unavailable;
                    result.reason = Some(why);
                    progress.advance((runs - run + 1) as u64);
                }
                Err(e) => {
                    let why = format!("{e:#}");
                    progress.line(&format!("!!! {name} run {run}/{runs} FAILED: {why}"));
                    result.failures.push(RunFailure { run, error: why });
                    progress.advance(1);
                }
            }
            // Each direct peer right after its mount strategy: the pair
            // meets the same state of the machine.
            for (p, pr) in peers.iter().zip(peer_out.iter_mut()) {
                if p.pairs_with == *name {
                    let t = Instant::now();
                    let timed = run_peer(&ctx, &mut server, p, pr, run, runs, work, &progress);
                    wall.add_peer_run(t.elapsed(), timed);
                }
            }
        }
    }
    progress.finish();
    Ok(Done {
        strategies: out,
        peers: peer_out,
        cache_note,
    })
}

/// One run of a direct peer, recorded in `result`; its timed seconds.
/// `server` is started at the first run and again after one died.
#[allow(clippy::too_many_arguments)]
fn run_peer(
    ctx: &RunContext,
    server: &mut Option<peer::PeerServer>,
    peer: &Peer,
    result: &mut PeerResult,
    run: usize,
    runs: usize,
    work: &Path,
    progress: &Progress,
) -> f64 {
    if result.status == Status::Unavailable {
        return 0.0;
    }
    let name = &peer.name;
    progress.step(&format!(
        "{name} run {run}/{runs}: save and load on plain disk"
    ));
    let Some(source) = ctx.source_file else {
        result.failures.push(RunFailure {
            run,
            error: "no source file for the peers".into(),
        });
        return 0.0;
    };
    let dir = work.join(format!("peer-{}-run{run}", name.replace(':', "-")));
    if server.as_mut().is_none_or(|s| !s.alive()) {
        match peer::PeerServer::start(source, ctx.scripts, &work.join("peers.log")) {
            Ok(s) => *server = Some(s),
            Err(e) => {
                result.failures.push(RunFailure {
                    run,
                    error: format!("{e:#}"),
                });
                return 0.0;
            }
        }
    }
    let Some(srv) = server.as_mut() else {
        return 0.0;
    };
    disk::sync_all();
    let mut timed = 0.0;
    match srv.run(peer, run, &dir) {
        Ok(r) => {
            timed = r.save_s + r.load_s;
            progress.line(&format!(
                "{name} run {run}/{runs}: save {:.3} s, load {:.3} s, {:.1} MB in {} files, verified{}",
                r.save_s,
                r.load_s,
                r.bytes as f64 / 1e6,
                r.files,
                if r.max_abs_error > 0.0 {
                    format!(" (max abs error {:.3e})", r.max_abs_error)
                } else {
                    " (exact)".to_string()
                }
            ));
            result.runs.push(r);
            progress.advance(1);
        }
        Err(PeerError::Unavailable(why)) => {
            progress.line(&format!("{name}: unavailable: {why}"));
            result.status = Status::Unavailable;
            result.reason = Some(why);
            progress.advance((runs - run + 1) as u64);
        }
        Err(PeerError::Failed(e)) => {
            let why = format!("{e:#}");
            progress.line(&format!("!!! {name} run {run}/{runs} FAILED: {why}"));
            result.failures.push(RunFailure { run, error: why });
            progress.advance(1);
        }
    }
    let _ = disk::remove_dir(&dir);
    timed
}

/// One untimed save and load on plain disk before the runs: the first write
/// after the model is built runs up to 3x slower (fresh page-cache memory),
/// which would otherwise land on whichever strategy runs first.
fn warm_up(ctx: &RunContext, work: &Path) -> Result<()> {
    let dir = work.join("warm-up");
    std::fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
    let file = dir.join(ctx.save_tool.file_name());
    ctx.save_tool
        .save(ctx.model, ctx.source_file, &file, ctx.scripts)
        .context("warm-up save on plain disk")?;
    disk::fsync_file_and_dir(&file)?;
    ctx.load_tool
        .load(&file, ctx.device, ctx.scripts)
        .context("warm-up load")?;
    disk::remove_dir(&dir)
}

fn is_unavailable(e: &anyhow::Error) -> bool {
    e.downcast_ref::<MountUnavailable>().is_some()
}

fn run_line(name: &str, runs: usize, r: &RunResult) -> String {
    let verdict = match (&r.verification.failure, r.verification.exact) {
        (Some(why), _) => format!("!!! VERIFICATION FAILED: {why}"),
        (None, true) => "verified (exact)".to_string(),
        (None, false) => format!(
            "verified (max abs error {:.3e})",
            r.verification.max_abs_error
        ),
    };
    format!(
        "{name} run {}/{runs}: save {:.3} s, load {:.3} s, backing {:.1} MB in {} files, {verdict}",
        r.run,
        r.save_s,
        r.load_s,
        r.backing.bytes as f64 / 1e6,
        r.backing.files
    )
}

/// Refuses a model that cannot be held three times over (source, the file
/// read into memory, the loaded tensors) before spending time on it.
fn check_memory(settings: &Settings) -> Result<()> {
    let ModelChoice::Preset {
        preset,
        layers,
        dtype,
        ..
    } = &settings.model
    else {
        return Ok(());
    };
    let p = Preset::by_name(preset)?.with_layers(*layers)?;
    let need = 3 * (p.parameters() * dtype.dtype().size_in_bytes()) as u64;
    ensure_memory(
        need,
        &format!("preset {preset} with {layers} layers in {dtype:?} (model, file buffer and loaded copy)"),
        "; use --dtype f16 or fewer --layers",
    )
}

fn ensure_memory(need: u64, what: &str, advice: &str) -> Result<()> {
    match machine::memory_available() {
        Some(avail) if need > avail => bail!(
            "{what} needs about {:.1} GB of memory, but {:.1} GB is available{advice}",
            need as f64 / 1e9,
            avail as f64 / 1e9
        ),
        _ => Ok(()),
    }
}

/// results.json, results.md, results.png, then the summary on stdout.
fn write_outputs(r: &BenchResults, out: &Path) -> Result<()> {
    std::fs::create_dir_all(out).with_context(|| format!("create {}", out.display()))?;
    let json = serde_json::to_vec_pretty(r).context("serialise results")?;
    let json_path = out.join("results.json");
    std::fs::write(&json_path, json).with_context(|| format!("write {}", json_path.display()))?;
    let png_path = out.join("results.png");
    let plotted = plot::draw(r, &png_path);
    let md_path = out.join("results.md");
    let figure = plotted.is_ok().then_some("results.png");
    std::fs::write(&md_path, report::markdown(r, figure))
        .with_context(|| format!("write {}", md_path.display()))?;

    println!();
    println!("ckptfs bench: {}", r.model.source);
    println!(
        "  {} tensors, {} parameters, {:.3} GB; device {}; save tool {}; load tool {}; {} runs per strategy",
        r.model.tensors,
        r.model.parameters,
        r.model.bytes as f64 / 1e9,
        r.machine.device,
        r.save_tool,
        r.load_tool,
        r.settings.runs
    );
    println!("  page cache: {}", r.page_cache);
    for line in report::highlights(r) {
        println!("  {line}");
    }
    println!();
    print!("{}", report::table(r));
    println!();
    let split = report::load_split_table(r);
    if !split.is_empty() {
        println!("where the load went (means):");
        print!("{split}");
        println!();
    }
    let peers = peer::table(&r.peers, &r.strategies);
    if !peers.is_empty() {
        println!("direct peers on plain disk, same run (speedup above 1: the mount is faster):");
        print!("{peers}");
        println!();
    }
    println!("{}", r.wall.line());
    println!("results: {}", json_path.display());
    println!("         {}", md_path.display());
    match plotted {
        Ok(()) => {
            println!("         {}", png_path.display());
            Ok(())
        }
        Err(e) => Err(e.context("draw the figure (results.json and results.md are written)")),
    }
}
