//! The `ckptfs` command line.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use tracing_subscriber::EnvFilter;

use ckptfs::config::MountConfig;
use ckptfs::mount::{self, MountArgs};

#[derive(Parser)]
#[command(
    name = "ckptfs",
    version,
    about = "A FUSE filesystem for model checkpoints, with a built-in profiler"
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Mount BACKING_DIR on MOUNTPOINT (foreground until unmounted or
    /// signalled). BACKING_DIR may be s3://BUCKET/PREFIX (endpoint and
    /// credentials from AWS_* or the config's [store] section): with
    /// --read-only or --version, a packed database on the store read
    /// through a local block cache; without, a writer whose files go into a
    /// local packed dir (CACHE_DIR/checkpoint) and are published to the
    /// store after each commit (fsync waits for the store).
    Mount {
        /// Mount config (TOML); the embedded default layout without it.
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// Detach once the mount answers.
        #[arg(long, short)]
        daemon: bool,
        /// Log file of a daemon (default: a file in the temp dir).
        #[arg(long)]
        log: Option<PathBuf>,
        /// Where to write the profile at unmount and on SIGUSR1 (default: BACKING_DIR/.ckptfs/profile.json).
        #[arg(long)]
        profile_out: Option<PathBuf>,
        /// What the profiler records.
        #[arg(long, value_enum, default_value = "full")]
        profile: ckptfs::profile::Level,
        /// Mount generation N of the packed index read-only (see `ckptfs
        /// versions`), or `latest`: the newest when the mount starts. Its
        /// bytes stay readable while a writer mounted on the same backing
        /// dir goes on, and several version mounts may share it.
        #[arg(long, value_name = "N|latest")]
        version: Option<ckptfs::mount::VersionPick>,
        /// Mount the live tree read-only, changing nothing in the backing dir
        /// (packed files read at the newest version; the backing may be on
        /// read-only media).
        #[arg(long)]
        read_only: bool,
        /// Mount over a directory that has entries (hidden while mounted).
        #[arg(long)]
        nonempty: bool,
        /// Local dir of an s3:// mount: a reader's fetched blocks (kept for
        /// the next mount), a writer's local copy (a remount with the same
        /// dir goes on after a crash), and the profile. Default: a dir in
        /// the temp dir (/var/tmp for a writer), removed at unmount.
        #[arg(long, value_name = "DIR")]
        cache_dir: Option<PathBuf>,
        /// Bytes an s3:// mount keeps in its cache dir of what the store
        /// holds (K, M, G suffixes): a reader's fetched blocks, least
        /// recently used out first (0: none); a writer's published data
        /// files, oldest evicted first (0: all; what is not on the store
        /// yet always stays).
        #[arg(long, value_name = "SIZE", default_value = "2G", value_parser = ckptfs::store::s3_cache::parse_size)]
        cache_size: u64,
        backing_dir: PathBuf,
        mountpoint: PathBuf,
    },
    /// Unmount a ckptfs mount and wait until its daemon has committed and exited.
    Umount {
        /// Detach even if files are open.
        #[arg(long)]
        lazy: bool,
        mountpoint: PathBuf,
    },
    /// Show how a file is stored: format, tensors, chunks, codec, sizes, errors.
    Inspect {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
        /// A file in a ckptfs mount, or its directory in a backing store.
        path: PathBuf,
    },
    /// Render a profile (written at unmount or on SIGUSR1) as tables and a plot.
    Report {
        /// A profile file, a backing dir (its `.ckptfs/profile.json`), or a
        /// mountpoint (its live `.ckptfs/stats`).
        profile: PathBuf,
        #[arg(long, value_enum, default_value = "op")]
        by: ckptfs::profile::report::By,
        #[arg(long, value_enum, default_value = "table")]
        format: ckptfs::profile::report::Format,
        /// Also draw throughput over time and time per stage into this PNG.
        #[arg(long)]
        plot: Option<PathBuf>,
    },
    /// Print live rates of a mount every second until interrupted.
    Stats {
        mountpoint: PathBuf,
        #[arg(long, default_value = "1.0")]
        interval: f64,
        /// Stop after this many lines.
        #[arg(long)]
        count: Option<u64>,
    },
    /// Validate a mount config and print the effective settings.
    CheckConfig { config: PathBuf },
    /// Check an unmounted backing store: every manifest, chunk checksum and
    /// reference. Exit 0 when clean, 1 when problems are found, 2 when the
    /// store cannot be checked (in use by a mount, unreadable).
    Verify {
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
        /// Also check the files of every older version a packed index keeps,
        /// against the manifests of that version.
        #[arg(long)]
        all_versions: bool,
        /// A mount config whose [store] section says how to reach an
        /// s3:// store (over the AWS_* variables).
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
        backing_dir: PathBuf,
    },
    /// Copy a backing dir's packed (OCDBT) database to an object store
    /// (s3://BUCKET/PREFIX; endpoint and credentials from AWS_*), where
    /// `ckptfs mount --read-only s3://…` and TensorStore open it. Uploads
    /// only what the store lacks; the manifest goes last. Exit 2 when a
    /// live mount holds the backing dir.
    Publish {
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
        /// A mount config whose [store] section says how to reach the
        /// store (over the AWS_* variables).
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
        backing_dir: PathBuf,
        /// s3://BUCKET/PREFIX
        to: String,
    },
    /// List the versions a packed (OCDBT) database keeps.
    Versions { backing_dir: PathBuf },
    /// Reclaim space no kept version of a packed (OCDBT) database uses.
    /// On s3://BUCKET/PREFIX: delete the data files no kept version
    /// references and the leases of dead mounts; refused (exit 1) while a
    /// writer mount holds the prefix (it sweeps its own) or a read-only
    /// mount reads a version the manifest no longer keeps.
    Compact {
        /// Versions to keep readable (the newest K; default 4). Local only.
        #[arg(long, value_name = "K", value_parser = clap::value_parser!(u64).range(1..=16))]
        keep: Option<u64>,
        /// s3:// only: say what would be deleted, delete nothing.
        #[arg(long)]
        dry_run: bool,
        /// s3:// only: a mount config whose [store] section says how to
        /// reach the store (over the AWS_* variables).
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
        backing_dir: PathBuf,
    },
    /// Save and load a model through every strategy (plain disk and each
    /// mount config) and report save time, load time, size and files.
    #[cfg(feature = "bench")]
    Bench(ckptfs::bench::BenchArgs),
    /// Measure candidate layouts on a sample of a checkpoint through real
    /// mounts and write the mount config that serves a goal best.
    #[cfg(feature = "bench")]
    Advise(ckptfs::advise::AdviseArgs),
}

/// As `mount.ckptfs` (mount(8)'s helper): run the `ckptfs mount` it asks
/// for in this process's place.
fn mount_helper(args: Vec<std::ffi::OsString>) -> ExitCode {
    use ckptfs::mount_helper::{parse, HELPER_NAME};
    use std::os::unix::process::CommandExt;
    let helper = match parse(&args) {
        Ok(h) => h,
        Err(e) => {
            eprintln!("{HELPER_NAME}: {e:#}");
            return ExitCode::from(1);
        }
    };
    let exe = match std::env::current_exe() {
        Ok(p) => p,
        Err(e) => {
            eprintln!("{HELPER_NAME}: locate the ckptfs binary: {e}");
            return ExitCode::from(1);
        }
    };
    let shown = || {
        let words: Vec<_> = helper.argv.iter().map(|a| a.to_string_lossy()).collect();
        format!("{} {}", exe.display(), words.join(" "))
    };
    if helper.fake || helper.verbose {
        eprintln!("{HELPER_NAME}: {}", shown());
    }
    if helper.fake {
        return ExitCode::SUCCESS;
    }
    let e = std::process::Command::new(&exe).args(&helper.argv).exec();
    eprintln!("{HELPER_NAME}: run {}: {e}", shown());
    // mount(8)'s status for a mount that failed.
    ExitCode::from(32)
}

fn main() -> ExitCode {
    let mut argv = std::env::args_os();
    let arg0 = argv.next().unwrap_or_default();
    if std::path::Path::new(&arg0)
        .file_name()
        .is_some_and(|n| n == ckptfs::mount_helper::HELPER_NAME)
    {
        return mount_helper(argv.collect());
    }
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::try_from_env("CKPTFS_LOG").unwrap_or_else(|_| {
            // fuser warns when it re-unmounts a mount already gone.
            EnvFilter::new("info,fuser::session=error")
        }))
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let cli = Cli::parse();
    if !matches!(cli.command, Cmd::Mount { .. }) {
        // `ckptfs report … | head`: a closed pipe ends the command quietly,
        // as for other Unix tools, instead of a panic in println!. The mount
        // keeps Rust's default (EPIPE as an error) for its own pipes.
        // SAFETY: installs the default disposition, not a handler, so no
        // code of ours can run in signal context.
        unsafe {
            let _ = nix::sys::signal::signal(
                nix::sys::signal::Signal::SIGPIPE,
                nix::sys::signal::SigHandler::SigDfl,
            );
        }
    }
    match cli.command {
        Cmd::Mount {
            config,
            daemon,
            log,
            profile_out,
            profile,
            version,
            read_only,
            nonempty,
            cache_dir,
            cache_size,
            backing_dir,
            mountpoint,
        } => {
            let remote = if ckptfs::store::s3::S3Location::is_s3(backing_dir.as_os_str()) {
                match ckptfs::store::s3::S3Location::parse(&backing_dir.to_string_lossy()) {
                    Ok(at) => Some(at),
                    Err(e) => {
                        eprintln!("ckptfs: {e:#}");
                        return ExitCode::from(2);
                    }
                }
            } else {
                if cache_dir.is_some() {
                    eprintln!("ckptfs: --cache-dir is for s3:// mounts");
                    return ExitCode::from(2);
                }
                None
            };
            let ephemeral_cache = remote.is_some() && cache_dir.is_none();
            let backing_dir = match (&remote, cache_dir) {
                (Some(_), Some(dir)) => dir,
                (Some(_), None) => {
                    // A writer's copy holds the whole checkpoint: on disk
                    // (/var/tmp), not in a /tmp that may be memory.
                    let writer = !read_only && version.is_none();
                    let tmp = match std::path::Path::new("/var/tmp") {
                        p if writer && p.is_dir() => p.to_path_buf(),
                        _ => std::env::temp_dir(),
                    };
                    tmp.join(format!("ckptfs-s3-cache-{}", std::process::id()))
                }
                (None, _) => backing_dir,
            };
            let config = match config {
                Some(p) => match MountConfig::load(&p) {
                    Ok(c) => c,
                    Err(e) => {
                        eprintln!("ckptfs: {e}");
                        return ExitCode::from(2);
                    }
                },
                None => MountConfig::default_config(),
            };
            let args = MountArgs {
                config,
                backing: backing_dir,
                mountpoint,
                daemon,
                log,
                profile_out,
                profile,
                version,
                read_only,
                nonempty,
                remote,
                cache_size,
                ephemeral_cache,
            };
            match mount::run(args) {
                Ok(code) => ExitCode::from(code as u8),
                Err(e) => {
                    eprintln!("ckptfs: {e:#}");
                    ExitCode::from(1)
                }
            }
        }
        Cmd::Umount { lazy, mountpoint } => match mount::unmount(&mountpoint, lazy) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("ckptfs: {e:#}");
                ExitCode::from(1)
            }
        },
        Cmd::Inspect { json, path } => match ckptfs::inspect::run(&path, json) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("ckptfs: {e:#}");
                ExitCode::from(1)
            }
        },
        Cmd::Report {
            profile,
            by,
            format,
            plot,
        } => {
            let run = || -> anyhow::Result<()> {
                let path = ckptfs::profile::report::locate(&profile)?;
                let text = std::fs::read(&path)
                    .map_err(|e| anyhow::anyhow!("read profile {}: {e}", path.display()))?;
                let doc: serde_json::Value = serde_json::from_slice(&text)
                    .map_err(|e| anyhow::anyhow!("profile {}: {e}", path.display()))?;
                print!("{}", ckptfs::profile::report::render(&doc, by, format)?);
                if let Some(p) = plot {
                    ckptfs::profile::plot::draw(&doc, &p)?;
                }
                Ok(())
            };
            match run() {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("ckptfs: {e:#}");
                    ExitCode::from(1)
                }
            }
        }
        Cmd::Stats {
            mountpoint,
            interval,
            count,
        } => match ckptfs::profile::live::run(
            &mountpoint,
            std::time::Duration::from_secs_f64(interval.max(0.05)),
            count,
        ) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("ckptfs: {e:#}");
                ExitCode::from(1)
            }
        },
        Cmd::Verify {
            json,
            all_versions,
            config,
            backing_dir,
        } => match store_settings(config.as_deref()) {
            Ok(store) => run_verify(&backing_dir, json, all_versions, &store),
            Err(code) => code,
        },
        Cmd::Publish {
            json,
            config,
            backing_dir,
            to,
        } => match store_settings(config.as_deref()) {
            Ok(store) => run_publish(&backing_dir, &to, json, &store),
            Err(code) => code,
        },
        Cmd::Versions { backing_dir } => ExitCode::from(ckptfs::packed_cli::versions(&backing_dir)),
        Cmd::Compact {
            dry_run,
            config,
            backing_dir,
            ..
        } if ckptfs::store::s3::S3Location::is_s3(backing_dir.as_os_str()) => {
            match store_settings(config.as_deref()) {
                Ok(store) => ExitCode::from(ckptfs::packed_cli::compact_remote(
                    &backing_dir.to_string_lossy(),
                    &store,
                    dry_run,
                )),
                Err(code) => code,
            }
        }
        Cmd::Compact { dry_run: true, .. }
        | Cmd::Compact {
            config: Some(_), ..
        } => {
            eprintln!("ckptfs: --dry-run and --config apply to s3:// locations only");
            ExitCode::from(2)
        }
        Cmd::Compact {
            keep, backing_dir, ..
        } => {
            // A mounted backing dir's database belongs to its daemon.
            let _lock = match offline_lock(&backing_dir) {
                Ok(l) => l,
                Err(code) => return code,
            };
            ExitCode::from(ckptfs::packed_cli::compact(
                &backing_dir,
                keep.map(|k| k as usize),
            ))
        }
        Cmd::CheckConfig { config } => match MountConfig::load(&config) {
            Ok(c) => {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&c.to_json()).unwrap_or_default()
                );
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("ckptfs: {e}");
                ExitCode::from(2)
            }
        },
        #[cfg(feature = "bench")]
        Cmd::Bench(args) => match ckptfs::bench::run(args) {
            Ok(code) => ExitCode::from(code),
            Err(e) => {
                eprintln!("ckptfs bench: {e:#}");
                ExitCode::from(1)
            }
        },
        #[cfg(feature = "bench")]
        Cmd::Advise(args) => match ckptfs::advise::run(args) {
            Ok(code) => ExitCode::from(code),
            Err(e) => {
                eprintln!("ckptfs advise: {e:#}");
                ExitCode::from(1)
            }
        },
    }
}

/// The lock of a backing dir for an offline command; exit status 2 when a
/// live mount holds it. A directory that was never mounted needs none.
fn offline_lock(backing: &std::path::Path) -> Result<Option<mount::BackingLock>, ExitCode> {
    if !backing.join(".ckptfs").is_dir() {
        return Ok(None);
    }
    mount::lock_backing(backing).map(Some).map_err(|e| {
        eprintln!("ckptfs: {e:#}");
        ExitCode::from(2)
    })
}

/// The `[store]` section of `--config` (defaults: the environment alone).
fn store_settings(
    config: Option<&std::path::Path>,
) -> Result<ckptfs::config::StoreSettings, ExitCode> {
    match config.map(MountConfig::load) {
        None => Ok(Default::default()),
        Some(Ok(c)) => Ok(c.store),
        Some(Err(e)) => {
            eprintln!("ckptfs: {e}");
            Err(ExitCode::from(2))
        }
    }
}

/// `ckptfs publish`: refuses a backing dir a live mount holds.
fn run_publish(
    backing: &std::path::Path,
    to: &str,
    json: bool,
    store: &ckptfs::config::StoreSettings,
) -> ExitCode {
    let _lock = match offline_lock(backing) {
        Ok(l) => l,
        Err(code) => return code,
    };
    let run = || -> anyhow::Result<ckptfs::publish::PublishReport> {
        let to = ckptfs::store::s3::S3Location::parse(to)?;
        ckptfs::publish::publish(backing, &to, store)
    };
    match run() {
        Ok(r) if json => {
            println!("{}", serde_json::to_string_pretty(&r).unwrap_or_default());
            ExitCode::SUCCESS
        }
        Ok(r) => {
            println!(
                "published generation {} to {to}: {} data files uploaded ({} bytes), {} already there, in {:.2}s",
                r.generation, r.uploaded_files, r.uploaded_bytes, r.unchanged_files, r.seconds
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("ckptfs: {e:#}");
            ExitCode::from(1)
        }
    }
}

/// `ckptfs verify s3://…`: a published database, read through the store.
fn verify_s3(
    at: &str,
    all_versions: bool,
    settings: &ckptfs::config::StoreSettings,
) -> anyhow::Result<ckptfs::verify::Report> {
    use ckptfs::store::s3::{S3Location, S3Remote, S3Store};
    let store = S3Store::connect_with(S3Location::parse(at)?, settings)?;
    let scratch = std::env::temp_dir().join(format!("ckptfs-verify-{}", std::process::id()));
    std::fs::create_dir_all(&scratch)?;
    let cache = ckptfs::store::s3_cache::BlockCache::open(&scratch.join("blocks"), 1 << 30)?;
    let remote = std::sync::Arc::new(S3Remote::new(std::sync::Arc::new(store), Some(cache)));
    let report = ckptfs::verify::verify_remote(remote, &scratch, all_versions);
    let _ = std::fs::remove_dir_all(&scratch);
    report
}

/// `ckptfs verify`: refuses a store a live mount holds (it changes under us).
fn run_verify(
    backing: &std::path::Path,
    json: bool,
    all_versions: bool,
    store: &ckptfs::config::StoreSettings,
) -> ExitCode {
    let remote = ckptfs::store::s3::S3Location::is_s3(backing.as_os_str());
    let _lock = match offline_lock(backing) {
        Ok(l) if !remote => l,
        Ok(_) => None,
        Err(code) => return code,
    };
    let checked = if remote {
        verify_s3(&backing.to_string_lossy(), all_versions, store)
    } else {
        ckptfs::verify::verify(backing, all_versions)
    };
    let report = match checked {
        Ok(r) => r,
        Err(e) => {
            eprintln!("ckptfs: {e:#}");
            return ExitCode::from(2);
        }
    };
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&report).unwrap_or_default()
        );
    } else {
        for p in &report.problems {
            println!("problem: {p}");
        }
        if let Some([versions, nodes, keys]) = report.packed {
            println!("packed database: {versions} versions, {nodes} nodes, {keys} keys");
        }
        if let Some([versions, files]) = report.older_versions {
            println!("older versions: {versions} checked, {files} files in them");
        }
        println!(
            "{} files ({} further names), {} dirs, {} chunks ({} bytes) checked; {} leftovers for the next mount to remove; {} problems",
            report.files,
            report.links,
            report.dirs,
            report.chunks,
            report.bytes,
            report.leftovers,
            report.problems.len()
        );
    }
    if report.problems.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}
