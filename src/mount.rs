//! `ckptfs mount` and `ckptfs umount`: lock the backing dir, recover it,
//! serve it over FUSE until unmounted or signalled, commit, and leave.

use std::fs::{self, File};
use std::io::{BufRead, BufReader, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use fuser::{Config, MountOption, Session, SessionACL};
use nix::fcntl::FlockArg;
use nix::mount::MntFlags;
use nix::sys::signal::{SigSet, Signal};

use crate::config::{Index, MountConfig};
use crate::fs::core::CkptFs;
use crate::fs::fuse::FuseAdapter;
use crate::fs::tree::Tree;
use crate::layout::manifest::{dir_group_json, ZARR_JSON};
use crate::ocdbt::db::MANIFEST_FILE;
use crate::ocdbt::{Db, DbOptions};
use crate::pipeline::Pipeline;
use crate::profile::Profiler;
use crate::publish::Publisher;
use crate::store::dir_names::RESERVED;
use crate::store::durable::{open_rw, write_atomic};
use crate::store::lease::{Lease, Role};
use crate::store::ns_catalog::PREFIX as NS_PREFIX;
use crate::store::s3::{S3Location, S3Remote, S3Store};
use crate::store::s3_cache::BlockCache;
use crate::writeback::WriteBack;

const FUSE_SUPER_MAGIC: i64 = 0x6573_5546;

/// Options of `ckptfs mount`.
pub struct MountArgs {
    pub config: MountConfig,
    pub backing: PathBuf,
    pub mountpoint: PathBuf,
    pub daemon: bool,
    pub log: Option<PathBuf>,
    /// Where the profile goes at unmount.
    pub profile_out: Option<PathBuf>,
    pub profile: crate::profile::Level,
    /// Mount this version of the packed index, read-only.
    pub version: Option<VersionPick>,
    /// Mount the backing dir's live tree as it is, read-only (a packed
    /// index's data from its newest version), changing nothing in it.
    pub read_only: bool,
    /// Mount over a directory that has entries.
    pub nonempty: bool,
    /// The checkpoint is a database published to an object store
    /// (`ckptfs publish`); `backing` is then its local cache dir.
    pub remote: Option<S3Location>,
    /// Bytes of fetched blocks a read-only s3:// mount keeps in
    /// `backing/blocks` (0: none); for a writer, the bytes of published
    /// data files it keeps local (see `writeback`).
    pub cache_size: u64,
    /// `backing` is a cache dir made for this mount alone: removed at exit.
    pub ephemeral_cache: bool,
}

/// Which version of a packed index a `--version` mount shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VersionPick {
    /// Generation N (see `ckptfs versions`).
    Generation(u64),
    /// The newest when the mount starts (`latest`).
    Newest,
}

impl std::str::FromStr for VersionPick {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "latest" | "newest" => Ok(VersionPick::Newest),
            n => n.parse().map(VersionPick::Generation).map_err(|_| {
                format!("{n:?} is not a version: a generation number (see ckptfs versions) or \"latest\"")
            }),
        }
    }
}

/// Opens the packed database at the backing root: the version asked for
/// (read-only), the newest one read-only for a read-only mount, or the
/// live one when the config packs new files or the backing dir already
/// has one.
fn open_packed(
    backing: &Path,
    config: &MountConfig,
    opts: &CoreOptions,
) -> Result<Option<Arc<Db>>> {
    let (version, read_only) = (opts.version, opts.read_only);
    let exists = backing.join(MANIFEST_FILE).exists();
    if read_only && !exists && version.is_none() {
        return Ok(None);
    }
    let version = version.or(read_only.then_some(VersionPick::Newest));
    if let Some(pick) = version {
        let what = match pick {
            VersionPick::Generation(n) => format!("--version {n}"),
            VersionPick::Newest => "--version latest".into(),
        };
        if !exists {
            bail!(
                "{what}: {} has no packed index ({MANIFEST_FILE}); versions exist only with layout.index = \"packed\"",
                backing.display()
            );
        }
        // The version stays readable while the mount lives, whatever a
        // writer mounted on the same backing dir commits meanwhile.
        let db = match pick {
            VersionPick::Generation(n) => Db::open_version(backing, n),
            VersionPick::Newest => Db::open_newest(backing),
        }
        .map_err(|e| {
            let kept = crate::ocdbt::versions(backing)
                .map(|v| {
                    v.iter()
                        .map(|v| v.generation.to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                })
                .unwrap_or_default();
            anyhow!("{what}: {e} (kept: {kept}; see ckptfs versions)")
        })?;
        return Ok(Some(db));
    }
    if !exists && config.layout.index != Index::Packed {
        return Ok(None);
    }
    let p = &config.packed;
    let db_opts = DbOptions {
        target_data_file_size: p.data_file_bytes,
        keep_versions: p.keep_versions,
        auto_compact_garbage_ratio: (p.auto_compact_ratio > 0.0).then_some(p.auto_compact_ratio),
        ..DbOptions::default()
    };
    let db = Db::open_or_create_with_copy(backing, db_opts, opts.copy.clone())
        .with_context(|| format!("open packed index in {}", backing.display()))?;
    Ok(Some(db))
}

/// Holds the backing dir's lock for as long as the mount lives (none for a
/// read-only mount of read-only media, which nothing can change).
pub struct BackingLock {
    _file: Option<File>,
    /// The mount shows a version of the packed index and shares the
    /// backing dir with a writer and other version mounts.
    pub shared: bool,
}

fn lock_path(backing: &Path) -> PathBuf {
    backing.join(RESERVED).join("lock")
}

/// Takes the exclusive lock of a backing dir, or says who holds it.
pub fn lock_backing(backing: &Path) -> Result<BackingLock> {
    try_lock_backing(backing)?.map_err(|holder| in_use(backing, &holder))
}

fn in_use(backing: &Path, holder: &str) -> anyhow::Error {
    anyhow!(
        "backing dir {} is already in use by a live ckptfs mount (pid {holder}); unmount it first",
        backing.display()
    )
}

/// The exclusive lock of a backing dir, or the pid of the live mount that
/// holds it.
fn try_lock_backing(backing: &Path) -> Result<std::result::Result<BackingLock, String>> {
    let path = lock_path(backing);
    let mut file =
        open_rw(&path, true).with_context(|| format!("open lock file {}", path.display()))?;
    // Not `Flock`: its drop panics when the unlock fails (a backing dir on
    // NFS can make it fail); closing the file releases the lock regardless.
    #[allow(deprecated)]
    let locked = nix::fcntl::flock(file.as_raw_fd(), FlockArg::LockExclusiveNonblock);
    if locked.is_err() {
        let mut holder = String::new();
        let _ = file.read_to_string(&mut holder);
        return Ok(Err(holder.trim().to_string()));
    }
    file.set_len(0)?;
    write!(file, "{}", std::process::id())?;
    Ok(Ok(BackingLock {
        _file: Some(file),
        shared: false,
    }))
}

/// Whether `path` is on a filesystem mounted read-only.
fn on_read_only_media(path: &Path) -> bool {
    nix::sys::statvfs::statvfs(path)
        .is_ok_and(|s| s.flags().contains(nix::sys::statvfs::FsFlags::ST_RDONLY))
}

/// Prepares a backing dir: our state folder and the root group.
fn init_backing(backing: &Path) -> Result<()> {
    fs::create_dir_all(backing.join(RESERVED))
        .with_context(|| format!("create backing dir {}", backing.display()))?;
    let root = backing.join(ZARR_JSON);
    if !root.exists() {
        write_atomic(&root, &dir_group_json("root"), true).context("write root zarr.json")?;
    }
    Ok(())
}

/// How [`open_core`] opens a backing dir, beside its config.
#[derive(Debug, Clone)]
pub struct CoreOptions {
    /// What the profiler records.
    pub profile: crate::profile::Level,
    /// Open this version of the packed index, read-only.
    pub version: Option<VersionPick>,
    /// Change nothing in the backing dir (see `MountArgs::read_only`).
    pub read_only: bool,
    /// Show a packed database published elsewhere (an object store), at
    /// `version` or its newest; the backing dir is then only local scratch.
    pub remote: Option<Arc<dyn crate::ocdbt::Remote>>,
    /// The store a writer publishes the packed index to: data files
    /// evicted locally are read from it (see `writeback`).
    pub copy: Option<Arc<dyn crate::ocdbt::Remote>>,
}

impl Default for CoreOptions {
    /// What `ckptfs mount` does without options.
    fn default() -> Self {
        CoreOptions {
            profile: crate::profile::Level::Full,
            version: None,
            read_only: false,
            remote: None,
            copy: None,
        }
    }
}

/// Opens the filesystem core on a backing dir (created if missing) without
/// mounting it: locks the dir, recovers it from any interrupted work, and
/// starts the worker pools. `ckptfs mount` serves the result over FUSE;
/// an embedder or a test calls the core's methods directly.
///
/// Closing is `CkptFs::commit_all` (what an unmount does), then dropping
/// the core, then the lock. A background compaction of the packed index
/// may hold the database (`tree.db`) a while after the core is dropped:
/// wait for it before opening the dir again in the same process. Kernel
/// passthrough stays off: only a FUSE session can negotiate it.
pub fn open_core(
    backing: &Path,
    config: &MountConfig,
    opts: CoreOptions,
) -> Result<(Arc<CkptFs>, BackingLock)> {
    // The lock first: a racing mount's recovery would take our half-written
    // root document for a crash's leftover. A version mount takes none: the
    // packed index keeps the bytes of the version it reads (a reader's
    // pin), so it shares the backing dir with a writer and with other
    // version mounts; so does a read-only mount that finds a writer there.
    // Read-only media need none: nothing can change them.
    if let Some(remote) = opts.remote.clone() {
        return open_remote_core(backing, config, &opts, remote);
    }
    let mut opts = opts;
    let lock = if opts.version.is_some() {
        BackingLock {
            _file: None,
            shared: true,
        }
    } else if opts.read_only && on_read_only_media(backing) {
        BackingLock {
            _file: None,
            shared: false,
        }
    } else {
        fs::create_dir_all(backing.join(RESERVED))
            .with_context(|| format!("create backing dir {}", backing.display()))?;
        match try_lock_backing(backing)? {
            Ok(lock) => lock,
            Err(holder) if opts.read_only && backing.join(MANIFEST_FILE).exists() => {
                // A writer has the live tree, which moves on under a reader:
                // show its newest version instead, kept whole while mounted.
                tracing::warn!(
                    "backing dir {} is in use by a live ckptfs mount (pid {holder}): mounting the newest version of its packed index (files of the files index are in no version)",
                    backing.display()
                );
                opts.version = Some(VersionPick::Newest);
                opts.read_only = false;
                BackingLock {
                    _file: None,
                    shared: true,
                }
            }
            Err(holder) => return Err(in_use(backing, &holder)),
        }
    };
    if !opts.read_only && opts.version.is_none() {
        init_backing(backing)?;
    }
    let started = Instant::now();
    let db = open_packed(backing, config, &opts)?;
    let pack_new = config.layout.index == Index::Packed;
    let (tree, rec, ns) = Tree::load(backing, db, pack_new, opts.read_only)
        .map_err(|e| anyhow!("load backing dir: {e}"))?;
    tracing::info!(
        files = rec.files,
        dirs = rec.dirs,
        removed = rec.removed,
        "loaded {} in {:.3}s",
        backing.display(),
        started.elapsed().as_secs_f64()
    );
    let profiler = Arc::new(Profiler::new(opts.profile));
    let pipe = Pipeline::new(config.clone(), profiler).context("start worker pool")?;
    let core = Arc::new(CkptFs::new(pipe, tree, ns).map_err(|e| anyhow!("{e}"))?);
    Ok((core, lock))
}

/// [`open_core`] for a database published to an object store: read-only,
/// no lock (nothing local is shared), the tree of the version asked for.
fn open_remote_core(
    scratch: &Path,
    config: &MountConfig,
    opts: &CoreOptions,
    remote: Arc<dyn crate::ocdbt::Remote>,
) -> Result<(Arc<CkptFs>, BackingLock)> {
    let started = Instant::now();
    fs::create_dir_all(scratch.join(RESERVED))
        .with_context(|| format!("create cache dir {}", scratch.display()))?;
    let at = remote.describe();
    let generation = match opts.version {
        Some(VersionPick::Generation(n)) => Some(n),
        _ => None,
    };
    let db = Db::open_remote(remote, generation).map_err(|e| anyhow!("open {at}: {e}"))?;
    if db.list_prefix(NS_PREFIX).is_empty() {
        bail!(
            "{at}: its version {} keeps no namespace (published by an older ckptfs?); mount it locally instead",
            db.opened_generation().unwrap_or(0)
        );
    }
    let (tree, _, ns) =
        Tree::load(scratch, Some(db), false, false).map_err(|e| anyhow!("load {at}: {e}"))?;
    tracing::info!("loaded {at} in {:.3}s", started.elapsed().as_secs_f64());
    let profiler = Arc::new(Profiler::new(opts.profile));
    let pipe = Pipeline::new_remote(config.clone(), profiler).context("start worker pool")?;
    let core = Arc::new(CkptFs::new(pipe, tree, ns).map_err(|e| anyhow!("{e}"))?);
    Ok((
        core,
        BackingLock {
            _file: None,
            shared: true,
        },
    ))
}

/// The mountpoint is a directory, and empty unless `nonempty` (entries
/// under it would be hidden while mounted, a likely mistake).
fn check_mountpoint(mountpoint: &Path, nonempty: bool) -> Result<()> {
    if !mountpoint.is_dir() {
        bail!("mountpoint {} is not a directory", mountpoint.display());
    }
    if is_fuse_mount(mountpoint) && mount_source(mountpoint).is_some() {
        bail!(
            "mountpoint {} is already a ckptfs mount; unmount it first",
            mountpoint.display()
        );
    }
    let mut entries =
        fs::read_dir(mountpoint).with_context(|| format!("mountpoint {}", mountpoint.display()))?;
    if !nonempty && entries.next().is_some() {
        bail!(
            "mountpoint {} is not empty (its entries would be hidden while mounted); pass --nonempty to mount over them",
            mountpoint.display()
        );
    }
    Ok(())
}

/// A mount left behind by a killed daemon answers ENOTCONN: detach it.
fn clear_dead_mount(mountpoint: &Path) {
    // `stat` may be answered from the kernel's cache; listing the
    // directory has to reach the (dead) daemon.
    let dead = |e: &std::io::Error| e.raw_os_error() == Some(libc::ENOTCONN);
    let unanswered = match fs::metadata(mountpoint) {
        Err(e) => dead(&e),
        Ok(_) => fs::read_dir(mountpoint).err().is_some_and(|e| dead(&e)),
    };
    if unanswered {
        tracing::warn!("{} was a dead mount; detaching it", mountpoint.display());
        let _ = umount(mountpoint, MntFlags::MNT_DETACH);
    }
}

fn umount(path: &Path, flags: MntFlags) -> std::io::Result<()> {
    Ok(nix::mount::umount2(path, flags)?)
}

fn is_fuse_mount(path: &Path) -> bool {
    nix::sys::statfs::statfs(path)
        .map(|s| s.filesystem_type().0 == FUSE_SUPER_MAGIC)
        .unwrap_or(false)
}

/// FUSE requests are capped at `max_pages_limit` pages (1 MiB by default,
/// machine-wide). Raise it when we may (root), never lower it: fewer, larger
/// requests cut the per-request cost of big sequential checkpoint I/O.
fn raise_request_limit(bytes: u64) {
    let path = "/proc/sys/fs/fuse/max_pages_limit";
    let pages = bytes.div_ceil(4096);
    let current: u64 = fs::read_to_string(path)
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0);
    if current > 0 && pages > current {
        if let Err(e) = fs::write(path, pages.to_string()) {
            tracing::debug!("cannot raise {path}: {e}");
        }
    }
}

/// Raises the kernel's read-ahead for this mount: the FUSE default of
/// 128 KiB turns a sequential read into thousands of small requests.
fn set_kernel_readahead(mountpoint: &Path, kb: u64) {
    use std::os::unix::fs::MetadataExt;
    let Ok(meta) = fs::metadata(mountpoint) else {
        return;
    };
    let dev = meta.dev();
    let (major, minor) = (libc::major(dev), libc::minor(dev));
    let path = format!("/sys/class/bdi/{major}:{minor}/read_ahead_kb");
    if let Err(e) = fs::write(&path, kb.to_string()) {
        tracing::debug!("cannot set {path}: {e}");
    }
}

enum Event {
    Signal(Signal),
    SessionEnded(std::io::Result<()>),
}

/// Runs `ckptfs mount` to completion; returns the exit status.
/// For a read-only mount, buffers of 4 MiB and up are mapped and unmapped
/// by glibc's `malloc` each on its own. By default the threshold rises to
/// the size of each large buffer freed (up to 32 MiB), and from then on
/// chunk-sized buffers come from per-thread arenas, which keep freed
/// memory. Measured on a cold read of a 1.34 GB file from the S3 test
/// cluster: the daemon's peak RSS was 773-834 MiB with the default,
/// 509-530 MiB with this, at the same speed; local loads peaked 30-50 MiB
/// lower. Not for writers: `ts-ocdbt` saves took ~12% longer with it in two
/// interleaved A/B runs (fresh pages for every large buffer).
fn fixed_mmap_threshold() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: `mallopt` only sets an allocator parameter; it is called
    // before the daemon starts any thread of its own.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 4 << 20);
    }
}

pub fn run(args: MountArgs) -> Result<i32> {
    if args.daemon {
        return spawn_daemon(&args);
    }
    // Everything that can be refused is checked before anything is written.
    clear_dead_mount(&args.mountpoint);
    let mountpoint = fs::canonicalize(&args.mountpoint)
        .with_context(|| format!("mountpoint {}", args.mountpoint.display()))?;
    check_mountpoint(&mountpoint, args.nonempty)?;
    let nest = |backing: &Path| {
        if mountpoint.starts_with(backing) || backing.starts_with(&mountpoint) {
            bail!(
                "the mountpoint {} and the backing dir {} must not contain each other",
                mountpoint.display(),
                backing.display()
            );
        }
        Ok(())
    };
    nest(&std::path::absolute(&args.backing).unwrap_or_else(|_| args.backing.clone()))?;
    let read_only = args.version.is_some() || args.read_only;
    if read_only {
        fixed_mmap_threshold();
    }
    // A writer of s3://…: a local packed backing dir in the cache dir,
    // published after each commit (see `writeback`).
    let upstream_at = args.remote.clone().filter(|_| !read_only);
    let mut config = args.config.clone();
    // A writer of s3:// compacts on its publish thread, between uploads
    // (see `writeback`), not on a thread of the database's own.
    let writer_compact_ratio = config.packed.auto_compact_ratio;
    if upstream_at.is_some() {
        config.packed.auto_compact_ratio = 0.0;
    }
    let backing_arg = match &upstream_at {
        Some(_) => {
            if config.layout.index != Index::Packed {
                if config.layout.chunking == crate::config::Chunking::None {
                    bail!(
                        "an s3:// writer keeps files in the packed index, which needs chunks: config {} has layout.chunking = \"none\"",
                        config.name
                    );
                }
                tracing::info!(
                    "config {}: layout.index = \"packed\" for an s3:// mount",
                    config.name
                );
                config.layout.index = Index::Packed;
            }
            args.backing.join("checkpoint")
        }
        None => args.backing.clone(),
    };
    // A reader's lease, written before the manifest is read (it holds
    // every version until it names the one opened).
    let mut reader_lease = None;
    let remote = match args.remote.as_ref().filter(|_| read_only) {
        Some(at) => {
            let store = Arc::new(S3Store::connect_with(at.clone(), &config.store)?);
            match Lease::take(store.clone(), Role::Reader, 0, config.store.lease_ttl()) {
                Ok(l) => reader_lease = Some(l),
                Err(e) => tracing::warn!(
                    "{at}: no reader's lease ({e}): a writer or `ckptfs compact` may delete versions this mount reads once the manifest no longer keeps them"
                ),
            }
            let cache = if args.cache_size > 0 {
                let dir = args.backing.join("blocks");
                let c = BlockCache::open(&dir, args.cache_size)
                    .with_context(|| format!("cache dir {}", dir.display()))?;
                Some(c)
            } else {
                None
            };
            Some(Arc::new(S3Remote::new(store, cache)) as Arc<dyn crate::ocdbt::Remote>)
        }
        None => None,
    };
    let backing = fs::canonicalize(&backing_arg)
        .or_else(|e| {
            if read_only && remote.is_none() {
                return Err(e);
            }
            fs::create_dir_all(&backing_arg)?;
            fs::canonicalize(&backing_arg)
        })
        .with_context(|| format!("backing dir {}", backing_arg.display()))?;
    if !backing.is_dir() {
        bail!("backing dir {} is not a directory", backing.display());
    }
    nest(&backing)?;
    let publisher = match &upstream_at {
        Some(at) => {
            let p = Publisher::connect(at, &config.store)?;
            p.check_continues(&backing)?;
            Some(p)
        }
        None => None,
    };
    // Signals are taken by one thread with sigwait; block them everywhere
    // before any other thread starts (opening the core starts workers).
    let mut signals = SigSet::empty();
    signals.add(Signal::SIGINT);
    signals.add(Signal::SIGTERM);
    signals.add(Signal::SIGUSR1);
    signals.thread_block().context("block signals")?;

    // Declared first, so dropped last: the lock outlives the core.
    let _lock: BackingLock;
    let core: Arc<CkptFs>;
    (core, _lock) = open_core(
        &backing,
        &config,
        CoreOptions {
            profile: args.profile,
            version: args.version,
            read_only: args.read_only,
            remote,
            copy: publisher
                .as_ref()
                .map(|p| Arc::new(S3Remote::new(p.store(), None)) as Arc<dyn crate::ocdbt::Remote>),
        },
    )?;
    if let Some(l) = &reader_lease {
        let opened = core
            .tree
            .read()
            .db
            .as_ref()
            .and_then(|d| d.opened_generation());
        if let Some(g) = opened {
            if let Err(e) = l.set_generation(g) {
                tracing::warn!("move the reader's lease to generation {g}: {e}");
            }
        }
    }
    let writeback = match publisher {
        Some(p) => {
            let db = core
                .tree
                .read()
                .db
                .clone()
                .context("the s3:// writer has no packed index")?;
            let opts = crate::writeback::WriteBackOptions {
                lease_ttl: config.store.lease_ttl(),
                local_limit: args.cache_size,
                compact_ratio: writer_compact_ratio,
            };
            p.share_budget(core.pipe.budget.clone());
            let wb = WriteBack::start(backing.clone(), db, p, opts)?;
            core.set_upstream(wb.clone());
            Some(wb)
        }
        None => None,
    };
    let adapter = FuseAdapter::new(core.clone(), Duration::from_millis(config.io.attr_ttl_ms));

    let options = |clone_fd| {
        let mut c = Config::default();
        let source = match &args.remote {
            Some(at) => at.to_string(),
            None => backing.display().to_string(),
        };
        c.mount_options = vec![
            MountOption::FSName(format!("ckptfs:{source}")),
            MountOption::Subtype("ckptfs".into()),
            MountOption::DefaultPermissions,
            MountOption::NoAtime,
        ];
        if read_only {
            // The kernel answers EROFS to every change.
            c.mount_options.push(MountOption::RO);
        }
        c.acl = SessionACL::All;
        c.n_threads = Some(config.io.fuse_threads);
        c.clone_fd = clone_fd;
        c
    };
    raise_request_limit(config.io.max_request_bytes);
    let mut adapter = Some(adapter);
    let mut attempt = 0;
    let session = loop {
        let Some(a) = adapter.take() else {
            bail!("mount {}: no filesystem", mountpoint.display());
        };
        match Session::new(a, &mountpoint, &options(true)) {
            Ok(s) => break s,
            // A dead mount still being torn down: detach it and retry.
            Err(e) if e.raw_os_error() == Some(libc::ENOTCONN) && attempt < 20 => {
                attempt += 1;
                let _ = umount(&mountpoint, MntFlags::MNT_DETACH);
                std::thread::sleep(Duration::from_millis(50));
                adapter = Some(FuseAdapter::new(
                    core.clone(),
                    Duration::from_millis(config.io.attr_ttl_ms),
                ));
            }
            Err(e) => bail!("mount {}: {e}", mountpoint.display()),
        }
    };
    let (tx, rx) = mpsc::channel();
    let tx2 = tx.clone();
    let session_thread = std::thread::Builder::new()
        .name("ckptfs-session".into())
        .spawn(move || {
            let r = session.run();
            let _ = tx2.send(Event::SessionEnded(r));
        })
        .context("start session")?;
    std::thread::Builder::new()
        .name("ckptfs-signals".into())
        .spawn(move || loop {
            match signals.wait() {
                Ok(sig) => {
                    if tx.send(Event::Signal(sig)).is_err() {
                        return;
                    }
                }
                Err(_) => return,
            }
        })
        .context("start signal thread")?;

    let deadline = Instant::now() + Duration::from_secs(10);
    while !is_fuse_mount(&mountpoint) {
        if Instant::now() > deadline {
            bail!("mount at {} did not come up", mountpoint.display());
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    set_kernel_readahead(&mountpoint, config.io.kernel_readahead_kb);
    tracing::info!(config = %config.name, "mounted {} on {}", backing.display(), mountpoint.display());
    println!("ready");
    let _ = std::io::stdout().flush();

    let profile_out = args.profile_out.clone().unwrap_or_else(|| {
        // A version mount may share the backing dir with a writer: its
        // profile does not take the writer's place.
        let name = if _lock.shared {
            "profile-version.json"
        } else {
            "profile.json"
        };
        backing.join(RESERVED).join(name)
    });
    let mut result = Ok(());
    for event in rx {
        match event {
            Event::Signal(Signal::SIGUSR1) => write_profile(&core, &config, &profile_out),
            Event::Signal(sig) => {
                tracing::info!("{sig}: unmounting {}", mountpoint.display());
                if umount(&mountpoint, MntFlags::empty()).is_err() {
                    // Files still open: detach now, finish when they close.
                    let _ = umount(&mountpoint, MntFlags::MNT_DETACH);
                }
            }
            Event::SessionEnded(r) => {
                result = r;
                break;
            }
        }
    }
    let _ = session_thread.join();
    let mut failed = core.commit_all();
    let mut keep_cache = false;
    if let (Some(wb), Some(at)) = (&writeback, &upstream_at) {
        match wb.finish() {
            Ok(s) => tracing::info!(
                "published generation {} to {at} ({} publishes, {} files, {} bytes uploaded)",
                s.published_generation,
                s.publishes,
                s.uploaded_files,
                s.uploaded_bytes
            ),
            Err(e) => {
                tracing::error!(
                    "the last publish to {at} failed: {e:#}; the checkpoint is whole in {}: mount it again with --cache-dir {}, or run ckptfs publish {} {at}",
                    backing.display(),
                    args.backing.display(),
                    backing.display()
                );
                failed += 1;
                keep_cache = true;
            }
        }
    }
    write_profile(&core, &config, &profile_out);
    if args.ephemeral_cache && !keep_cache {
        drop(core);
        let _ = fs::remove_dir_all(&args.backing);
    }
    if let Err(e) = result {
        tracing::error!("session ended with an error: {e}");
        return Ok(1);
    }
    Ok(if failed > 0 { 1 } else { 0 })
}

fn write_profile(core: &CkptFs, config: &MountConfig, out: &Path) {
    let doc = serde_json::json!({
        "config": config.to_json(),
        "profile": core.pipe.profiler.snapshot(),
        "memory_budget_peak_bytes": core.pipe.budget.peak(),
        "io_paths": core.io_paths_json(),
        "publish": core.upstream_status(),
    });
    match serde_json::to_vec_pretty(&doc) {
        Ok(bytes) => {
            if let Err(e) = write_atomic(out, &bytes, false) {
                tracing::warn!("write profile {}: {e}", out.display());
            }
        }
        Err(e) => tracing::warn!("profile: {e}"),
    }
}

/// `--daemon`: start the mount as a detached child and return once it
/// answers (exit 0), or report why it did not.
fn spawn_daemon(args: &MountArgs) -> Result<i32> {
    let exe = std::env::current_exe().context("locate ckptfs binary")?;
    let log = match &args.log {
        Some(p) => p.clone(),
        None => std::env::temp_dir().join(format!("ckptfs-{}.log", std::process::id())),
    };
    let log_file = File::create(&log).with_context(|| format!("open log {}", log.display()))?;
    let argv: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--daemon" && a != "-d")
        .collect();
    let mut cmd = Command::new(exe);
    cmd.args(&argv)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::from(log_file));
    // SAFETY: pre_exec runs between fork and exec, where only
    // async-signal-safe calls are allowed; setsid(2) is one and allocates
    // nothing. The child leaves our session so a terminal's SIGINT does not
    // reach it (a failure leaves it in ours, as before: not fatal).
    unsafe {
        cmd.pre_exec(|| {
            let _ = nix::unistd::setsid();
            Ok(())
        });
    }
    let mut child = cmd.spawn().context("start daemon")?;
    let stdout = child.stdout.take().context("daemon stdout")?;
    let mut line = String::new();
    let _ = BufReader::new(stdout).read_line(&mut line);
    if line.trim() == "ready" {
        eprintln!(
            "ckptfs: mounted (pid {}, log {})",
            child.id(),
            log.display()
        );
        return Ok(0);
    }
    let status = child.wait().context("wait for daemon")?;
    let logged = fs::read_to_string(&log).unwrap_or_default();
    eprint!("{logged}");
    bail!("mount failed ({status})");
}

/// `ckptfs umount MOUNTPOINT`: unmount and wait for the daemon to finish
/// committing and exit.
pub fn unmount(mountpoint: &Path, lazy: bool) -> Result<()> {
    let mnt = fs::canonicalize(mountpoint).unwrap_or_else(|_| mountpoint.to_path_buf());
    let backing =
        mount_source(&mnt).ok_or_else(|| anyhow!("{} is not a ckptfs mount", mnt.display()))?;
    // The daemon says who it is; the backing dir's lock names only its
    // writer (version mounts share the dir and take no lock).
    let pid: Option<i32> = daemon_pid(&mnt).or_else(|| {
        fs::read_to_string(lock_path(&backing))
            .ok()
            .and_then(|s| s.trim().parse().ok())
    });
    let flags = if lazy {
        MntFlags::MNT_DETACH
    } else {
        MntFlags::empty()
    };
    // A file closed just before can still hold the mount for a moment
    // (the kernel releases it asynchronously): retry EBUSY briefly.
    let mut result = umount(&mnt, flags);
    for _ in 0..30 {
        match &result {
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {
                std::thread::sleep(Duration::from_millis(100));
                result = umount(&mnt, flags);
            }
            _ => break,
        }
    }
    result.map_err(|e| {
        if e.raw_os_error() == Some(libc::EBUSY) {
            anyhow!(
                "{} is busy (files are open); close them or use --lazy",
                mnt.display()
            )
        } else {
            anyhow!("umount {}: {e}", mnt.display())
        }
    })?;
    if let Some(pid) = pid {
        let deadline = Instant::now() + Duration::from_secs(300);
        let pid = nix::unistd::Pid::from_raw(pid);
        while nix::sys::signal::kill(pid, None).is_ok() && Instant::now() < deadline {
            if !process_is_ckptfs(pid.as_raw()) {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    Ok(())
}

/// The pid of the daemon serving `mnt`, from its live stats.
fn daemon_pid(mnt: &Path) -> Option<i32> {
    let doc = fs::read(mnt.join(RESERVED).join("stats")).ok()?;
    let v: serde_json::Value = serde_json::from_slice(&doc).ok()?;
    v.get("daemon_pid")?.as_i64()?.try_into().ok()
}

fn process_is_ckptfs(pid: i32) -> bool {
    fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| !s.contains(") Z "))
        .unwrap_or(false)
}

/// The backing dir of a ckptfs mount, from /proc/mounts.
fn mount_source(mnt: &Path) -> Option<PathBuf> {
    let mounts = fs::read_to_string("/proc/mounts").ok()?;
    mounts.lines().rev().find_map(|line| {
        let mut parts = line.split(' ');
        let source = parts.next()?;
        let target = parts.next()?;
        let fstype = parts.next()?;
        let target = target.replace("\\040", " ");
        (fstype.starts_with("fuse") && Path::new(&target) == mnt)
            .then(|| {
                source
                    .strip_prefix("ckptfs:")
                    .map(|s| PathBuf::from(s.replace("\\040", " ")))
            })
            .flatten()
    })
}
