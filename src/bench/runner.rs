//! One run of one strategy: save the model through a fresh mount (or onto
//! plain disk), make it durable, drop the page cache, load it back cold onto
//! the device, verify it, and measure every step.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{anyhow, Context, Result};
use candle_core::Device;
use serde::Serialize;

use super::disk::{self, Footprint};
use super::load_tool::LoadTool;
use super::model::{self, Model};
use super::mount_process::{MountProcess, MountSpec};
use super::profile_summary::{self, ProfileSummary};
use super::save_tool::SaveTool;
use super::strategy::Strategy;
use super::verify::{self, Verification};
use crate::store::s3::{S3Location, S3Store};

/// What every run shares.
pub struct RunContext<'a> {
    /// The ckptfs binary that mounts.
    pub exe: &'a Path,
    /// The model to save, and to verify loads against.
    pub model: &'a Model,
    /// The device loads go to.
    pub device: &'a Device,
    /// The tool that saves the checkpoint.
    pub save_tool: &'a SaveTool,
    /// The tool that loads it back.
    pub load_tool: LoadTool,
    /// The plain safetensors copy external save tools read.
    pub source_file: Option<&'a Path>,
    /// The folder of the Python helper scripts.
    pub scripts: &'a Path,
}

/// Where the save time went. `save_s` is their sum: the time from nothing
/// to a durable, committed checkpoint.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct SavePhases {
    /// Starting the mount (0 for plain).
    pub mount_s: f64,
    /// The save tool writing the checkpoint.
    pub write_s: f64,
    /// fsync of the file and its folder.
    pub fsync_s: f64,
    /// `ckptfs umount`: commit and daemon exit (0 for plain).
    pub unmount_s: f64,
}

/// Where the load time went. `load_s` is their sum: from a cold start to
/// tensors on the device.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct LoadPhases {
    /// Mounting the backing dir again (0 for plain).
    pub mount_s: f64,
    /// Reading the checkpoint onto the device.
    pub read_s: f64,
    /// `read_s` split into the file read and the move onto the device, where
    /// the load tool can tell them apart.
    pub split: Option<model::LoadSplit>,
}

/// Every figure of one run.
#[derive(Debug, Clone, Serialize)]
pub struct RunResult {
    /// Which run of the strategy this was, from 1.
    pub run: usize,
    /// Its place in its round of strategies, from 1 (each round starts one
    /// strategy later); 0 for a run outside `ckptfs bench`'s rounds.
    pub place: usize,
    /// Seconds from nothing to a durable, committed checkpoint (the sum of `save_phases`).
    pub save_s: f64,
    /// Seconds from a cold start to tensors on the device (the sum of `load_phases`).
    pub load_s: f64,
    /// Where the save time went.
    pub save_phases: SavePhases,
    /// Where the load time went.
    pub load_phases: LoadPhases,
    /// The checkpoint file's size as the save tool wrote it.
    pub checkpoint_bytes: u64,
    /// The backing dir without `.ckptfs/`.
    pub backing: Footprint,
    /// Peak RSS (VmHWM) of the save mount's daemon, just before unmount.
    pub daemon_peak_rss_save_bytes: Option<u64>,
    /// Peak RSS of the load mount's daemon.
    pub daemon_peak_rss_load_bytes: Option<u64>,
    /// Whether the page cache was dropped before the load (a cold load).
    pub page_cache_dropped: bool,
    /// Why the page cache could not be dropped, when it could not.
    pub page_cache_note: Option<String>,
    /// How the loaded tensors compared with the source.
    pub verification: Verification,
    /// The save mount's profile totals; `None` for `plain` or when it could not be read.
    pub profile_save: Option<ProfileSummary>,
    /// The load mount's profile totals; `None` for `plain` or when it could not be read.
    pub profile_load: Option<ProfileSummary>,
    /// Why a profile is missing, when one is.
    pub profile_note: Option<String>,
}

impl RunResult {
    /// The higher of the save and load daemons' peak resident memory.
    pub fn daemon_peak_rss_bytes(&self) -> Option<u64> {
        match (
            self.daemon_peak_rss_save_bytes,
            self.daemon_peak_rss_load_bytes,
        ) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        }
    }
}

/// Runs `strategy` once in `run_dir` (made fresh, removed afterwards).
/// `phase` is told what is happening, for progress display.
pub fn run_once(
    ctx: &RunContext,
    strategy: &Strategy,
    run: usize,
    run_dir: &Path,
    phase: &dyn Fn(&str),
) -> Result<RunResult> {
    disk::remove_dir(run_dir)?;
    std::fs::create_dir_all(run_dir)
        .with_context(|| format!("create run folder {}", run_dir.display()))?;
    // Earlier runs' writeback must not land in this run's timings.
    disk::sync_all();
    let result = match &strategy.config {
        None => run_plain(ctx, strategy, run, run_dir, phase),
        Some(cfg) => run_mounted(ctx, strategy, &cfg.path, run, run_dir, phase),
    };
    let cleanup = disk::remove_dir(run_dir);
    let result = result?;
    cleanup?;
    Ok(result)
}

fn run_plain(
    ctx: &RunContext,
    strategy: &Strategy,
    run: usize,
    run_dir: &Path,
    phase: &dyn Fn(&str),
) -> Result<RunResult> {
    let backing = run_dir.join("backing");
    std::fs::create_dir_all(&backing).with_context(|| format!("create {}", backing.display()))?;
    let file = backing.join(ctx.save_tool.file_name());

    phase("saving");
    let t0 = Instant::now();
    let own = ctx
        .save_tool
        .save(ctx.model, ctx.source_file, &file, ctx.scripts)?;
    let write_s = own.unwrap_or_else(|| t0.elapsed().as_secs_f64());
    let t1 = Instant::now();
    disk::fsync_file_and_dir(&file)?;
    let fsync_s = t1.elapsed().as_secs_f64();
    let checkpoint_bytes = file_len(&file)?;
    let backing_fp = disk::footprint(&backing)?;

    let dropped = disk::drop_page_cache();
    phase("loading");
    let (read_s, load_split, loaded) = load(ctx, &file)?;

    phase("verifying");
    let verification = verify::verify(&ctx.model.cpu, loaded, strategy.narrowing())?;
    let save_phases = SavePhases {
        write_s,
        fsync_s,
        ..Default::default()
    };
    Ok(RunResult {
        run,
        place: 0,
        save_s: write_s + fsync_s,
        load_s: read_s,
        save_phases,
        load_phases: LoadPhases {
            mount_s: 0.0,
            read_s,
            split: load_split,
        },
        checkpoint_bytes,
        backing: backing_fp,
        daemon_peak_rss_save_bytes: None,
        daemon_peak_rss_load_bytes: None,
        page_cache_dropped: dropped.is_ok(),
        page_cache_note: dropped.err(),
        verification,
        profile_save: None,
        profile_load: None,
        profile_note: None,
    })
}

fn run_mounted(
    ctx: &RunContext,
    strategy: &Strategy,
    config: &Path,
    run: usize,
    run_dir: &Path,
    phase: &dyn Fn(&str),
) -> Result<RunResult> {
    let mnt = run_dir.join("mnt");
    let path = |name: &str| -> PathBuf { run_dir.join(name) };
    // On an object store: a fresh prefix per run, written through a writer
    // mount (its local copy in the run folder) and read back cold through
    // a read-only one with no block cache.
    let remote = match &strategy.store {
        Some(at) => {
            let prefix = format!("{}-{}-r{run}", strategy.name, std::process::id());
            let at = S3Location {
                bucket: at.bucket.clone(),
                prefix: [at.prefix.as_str(), prefix.as_str()]
                    .iter()
                    .filter(|p| !p.is_empty())
                    .copied()
                    .collect::<Vec<_>>()
                    .join("/"),
            };
            Some(RemoteRun::new(at, run_dir)?)
        }
        None => None,
    };
    let backing = match &remote {
        Some(r) => PathBuf::from(r.at.to_string()),
        None => run_dir.join("backing"),
    };
    let no_args: Vec<OsString> = Vec::new();
    let (save_extra, load_extra) = match &remote {
        Some(r) => (&r.save_args, &r.load_args),
        None => (&no_args, &no_args),
    };
    let spec = |profile: &'static str, log: &'static str| (path(profile), path(log));
    let (save_profile, save_log) = spec("profile-save.json", "mount-save.log");
    let (load_profile, load_log) = spec("profile-load.json", "mount-load.log");
    let file = mnt.join(ctx.save_tool.file_name());

    phase("mounting");
    let t0 = Instant::now();
    let mount = MountProcess::start(&MountSpec {
        exe: ctx.exe,
        config,
        backing: &backing,
        mountpoint: &mnt,
        profile_out: &save_profile,
        log: &save_log,
        extra: save_extra,
    })?;
    let mount_s = t0.elapsed().as_secs_f64();

    phase("saving");
    let t1 = Instant::now();
    let own = ctx
        .save_tool
        .save(ctx.model, ctx.source_file, &file, ctx.scripts)
        .with_context(|| format!("save through the {} mount", strategy.name))?;
    let write_s = own.unwrap_or_else(|| t1.elapsed().as_secs_f64());
    let t2 = Instant::now();
    disk::fsync_file_and_dir(&file)?;
    let fsync_s = t2.elapsed().as_secs_f64();
    let checkpoint_bytes = file_len(&file)?;
    let rss_save = mount.peak_rss();

    phase("committing");
    let t3 = Instant::now();
    mount.unmount().context("unmount after the save")?;
    let unmount_s = t3.elapsed().as_secs_f64();
    let backing_fp = match &remote {
        Some(r) => r.footprint()?,
        None => disk::footprint(&backing)?,
    };

    let dropped = disk::drop_page_cache();
    phase("remounting");
    let t4 = Instant::now();
    let mount = MountProcess::start(&MountSpec {
        exe: ctx.exe,
        config,
        backing: &backing,
        mountpoint: &mnt,
        profile_out: &load_profile,
        log: &load_log,
        extra: load_extra,
    })
    // The first mount worked: a failing remount is a failure, not an
    // unavailable strategy.
    .map_err(|e| anyhow!("remount for the load: {e:#}"))?;
    let remount_s = t4.elapsed().as_secs_f64();
    phase("loading");
    let (read_s, load_split, loaded) = load(ctx, &file)?;
    let rss_load = mount.peak_rss();
    mount.unmount().context("unmount after the load")?;
    if let Some(r) = &remote {
        r.delete()?;
    }

    phase("verifying");
    let verification = verify::verify(&ctx.model.cpu, loaded, strategy.narrowing())?;
    let (profile_save, e1) = split(profile_summary::read(&save_profile));
    let (profile_load, e2) = split(profile_summary::read(&load_profile));
    let profile_note = match (e1, e2) {
        (None, None) => None,
        (a, b) => Some([a, b].into_iter().flatten().collect::<Vec<_>>().join("; ")),
    };
    let save_phases = SavePhases {
        mount_s,
        write_s,
        fsync_s,
        unmount_s,
    };
    Ok(RunResult {
        run,
        place: 0,
        save_s: mount_s + write_s + fsync_s + unmount_s,
        load_s: remount_s + read_s,
        save_phases,
        load_phases: LoadPhases {
            mount_s: remount_s,
            read_s,
            split: load_split,
        },
        checkpoint_bytes,
        backing: backing_fp,
        daemon_peak_rss_save_bytes: rss_save,
        daemon_peak_rss_load_bytes: rss_load,
        page_cache_dropped: dropped.is_ok(),
        page_cache_note: dropped.err(),
        verification,
        profile_save,
        profile_load,
        profile_note,
    })
}

/// One run's prefix on the object store, and the mount options for it.
struct RemoteRun {
    at: S3Location,
    save_args: Vec<OsString>,
    load_args: Vec<OsString>,
}

impl RemoteRun {
    fn new(at: S3Location, run_dir: &Path) -> Result<Self> {
        let dir = |name: &str| run_dir.join(name).into_os_string();
        Ok(RemoteRun {
            at,
            save_args: vec!["--cache-dir".into(), dir("save-cache")],
            load_args: vec![
                "--read-only".into(),
                "--cache-size".into(),
                "0".into(),
                "--cache-dir".into(),
                dir("load-cache"),
            ],
        })
    }

    /// What the store holds under the prefix.
    fn footprint(&self) -> Result<Footprint> {
        let store = S3Store::connect(self.at.clone())?;
        let objects = store
            .list_all()
            .with_context(|| format!("list {}", self.at))?;
        let bytes = objects.iter().map(|(_, n)| n).sum();
        Ok(Footprint {
            bytes,
            apparent_bytes: bytes,
            files: objects.len() as u64,
            dirs: 0,
        })
    }

    fn delete(&self) -> Result<()> {
        let store = S3Store::connect(self.at.clone())?;
        store
            .delete_all()
            .with_context(|| format!("delete {}", self.at))?;
        Ok(())
    }
}

/// Loads the checkpoint with the run's load tool: its seconds, and the
/// tensors to verify (read again, untimed, when the tool ran elsewhere).
fn load(ctx: &RunContext, file: &Path) -> Result<(f64, Option<model::LoadSplit>, model::Tensors)> {
    let loaded = ctx.load_tool.load(file, ctx.device, ctx.scripts)?;
    let tensors = match loaded.tensors {
        Some(t) => t,
        None => model::read_checkpoint(file, ctx.device)?,
    };
    Ok((loaded.seconds, loaded.split, tensors))
}

/// The checkpoint's bytes: a file's length, or the sum of a folder's file
/// lengths (the tools that write several).
fn file_len(file: &Path) -> Result<u64> {
    let meta = std::fs::metadata(file).with_context(|| format!("stat {}", file.display()))?;
    if meta.is_dir() {
        return Ok(disk::footprint(file)?.apparent_bytes);
    }
    Ok(meta.len())
}

fn split<T>(r: std::result::Result<T, String>) -> (Option<T>, Option<String>) {
    match r {
        Ok(v) => (Some(v), None),
        Err(e) => (None, Some(e)),
    }
}
