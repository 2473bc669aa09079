//! The write-pattern model of `write_patterns.rs`, run straight against the
//! POSIX core (`CkptFs`) over a temp backing dir: nothing is mounted, so it
//! needs neither root nor /dev/fuse, runs many sequences in seconds and
//! shrinks a failure to a few ops. Every store runs: the files index
//! (plain, chunked, compressed) and the packed index, with chunks small
//! enough that chunk edges are everywhere.
//!
//! Kernel passthrough needs a FUSE session (only the FUSE init grants it),
//! so the plain layout's opens are served by the core here.
//!
//! A case ends with an unmount (every handle closed, everything committed,
//! the core dropped), `verify` of the backing dir, and a new core on it
//! that must show the model's names and bytes. `Remount` ops do the same
//! mid-sequence, so later ops change files loaded from disk.

mod common;

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::ffi::{OsStr, OsString};
use std::fmt::Display;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ckptfs::config::MountConfig;
use ckptfs::error::FsResult;
use ckptfs::fs::core::{CkptFs, OpenReply, SetTimes};
use ckptfs::fs::io_mode::BackingToken;
use ckptfs::fs::tree::ROOT;
use ckptfs::mount::{open_core, BackingLock, CoreOptions};
use common::{fill, safetensors_bytes, CHUNKED_LAYOUTS};
use fuser::FileType;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};

const NAMES: usize = 4;
/// The directory the case's files live in (made with `mkdir`).
const DIR: &str = "d";
/// Bytes per read request of a whole-file read (the kernel asks for pages).
const READ_BYTES: u32 = 65536;

#[derive(Debug, Clone)]
enum Op {
    Write {
        f: usize,
        off: u64,
        len: usize,
        seed: u64,
    },
    Append {
        f: usize,
        len: usize,
        seed: u64,
    },
    Truncate {
        f: usize,
        len: u64,
    },
    Rename {
        from: usize,
        to: usize,
    },
    /// A further name of a file (`link(2)`); EEXIST when `to` exists.
    Link {
        from: usize,
        to: usize,
    },
    Unlink {
        f: usize,
    },
    Fsync {
        f: usize,
    },
    Close {
        f: usize,
    },
    /// A whole-file read through a new handle, closed after (which commits).
    Read {
        f: usize,
    },
    /// One read at any offset, through the open writer when there is one
    /// (uncommitted data), else through a new handle.
    ReadAt {
        f: usize,
        off: u64,
        len: u32,
    },
    /// Opens a reader and keeps it while other ops change the file, or
    /// reads through the kept one (then closes it). Without a kernel page
    /// cache in between, it must see the file as it is now.
    Peek {
        f: usize,
    },
    /// Rewrites the file as a small valid safetensors checkpoint, so later
    /// ops exercise the parsed-checkpoint paths (staging, re-parsing).
    Checkpoint {
        f: usize,
        rows: u64,
        seed: u64,
    },
    /// fsync of the case's directory.
    Fsyncdir,
    /// Closes everything, unmounts, verifies and opens a new core.
    Remount,
}

fn op() -> impl Strategy<Value = Op> {
    let f = 0..NAMES;
    prop_oneof![
        4 => (f.clone(), 0u64..40_000, 1usize..12_000, any::<u64>())
            .prop_map(|(f, off, len, seed)| Op::Write { f, off, len, seed: seed | 1 }),
        4 => (f.clone(), 1usize..20_000, any::<u64>())
            .prop_map(|(f, len, seed)| Op::Append { f, len, seed: seed | 1 }),
        2 => (f.clone(), 0u64..50_000).prop_map(|(f, len)| Op::Truncate { f, len }),
        1 => (f.clone(), f.clone()).prop_map(|(from, to)| Op::Rename { from, to }),
        1 => (f.clone(), f.clone()).prop_map(|(from, to)| Op::Link { from, to }),
        1 => f.clone().prop_map(|f| Op::Unlink { f }),
        1 => f.clone().prop_map(|f| Op::Fsync { f }),
        2 => f.clone().prop_map(|f| Op::Close { f }),
        2 => f.clone().prop_map(|f| Op::Read { f }),
        2 => (f.clone(), 0u64..60_000, 1u32..20_000)
            .prop_map(|(f, off, len)| Op::ReadAt { f, off, len }),
        2 => f.clone().prop_map(|f| Op::Peek { f }),
        2 => (f, 1u64..300, any::<u64>()).prop_map(|(f, rows, seed)| Op::Checkpoint { f, rows, seed: seed | 1 }),
        1 => Just(Op::Fsyncdir),
        1 => Just(Op::Remount),
    ]
}

/// A core error as a test failure (shrinkable, unlike a panic's noise).
fn ok<T>(r: FsResult<T>, what: impl Display) -> Result<T, TestCaseError> {
    r.map_err(|e| TestCaseError::fail(format!("{what}: {e}")))
}

fn name(f: usize) -> OsString {
    format!("f{f}").into()
}

/// Opens are never offered passthrough here (no FUSE session granted it).
fn no_passthrough(_: &std::fs::File) -> std::io::Result<BackingToken> {
    Err(std::io::Error::from_raw_os_error(libc::ENOSYS))
}

/// Flush by the opening process (which commits), as close(2) does.
fn pid() -> u32 {
    std::process::id()
}

/// A file's bytes, shared by all its names (hard links).
type Content = Rc<RefCell<Vec<u8>>>;

struct Case<'a> {
    backing: &'a Path,
    config: &'a MountConfig,
    core: Option<(Arc<CkptFs>, BackingLock)>,
    /// Inode of the case's directory in the current core.
    dir: u64,
    uid: u32,
    gid: u32,
    /// Each name's file: names linked to one file share its content.
    model: BTreeMap<usize, Content>,
    /// Read-write handles.
    open: HashMap<usize, u64>,
    /// Kept readers of `Peek`.
    readers: HashMap<usize, u64>,
}

impl<'a> Case<'a> {
    fn new(backing: &'a Path, config: &'a MountConfig) -> Result<Self, TestCaseError> {
        let meta = std::fs::metadata(backing).expect("backing dir");
        let mut case = Case {
            backing,
            config,
            core: None,
            dir: 0,
            uid: meta.uid(),
            gid: meta.gid(),
            model: BTreeMap::new(),
            open: HashMap::new(),
            readers: HashMap::new(),
        };
        case.mount()?;
        let dir = ok(
            case.fs()
                .mkdir(ROOT, OsStr::new(DIR), 0o755, case.uid, case.gid),
            "mkdir",
        )?;
        case.dir = dir.ino.0;
        Ok(case)
    }

    fn fs(&self) -> &CkptFs {
        &self.core.as_ref().expect("core is open").0
    }

    fn mount(&mut self) -> Result<(), TestCaseError> {
        let (fs, lock) = open_core(self.backing, self.config, CoreOptions::default())
            .map_err(|e| TestCaseError::fail(format!("open core: {e:#}")))?;
        self.core = Some((fs, lock));
        Ok(())
    }

    /// What an unmount does once every file is closed: commit all, then
    /// let go of the core and only then of the lock.
    fn unmount(&mut self) -> Result<(), TestCaseError> {
        let Some((fs, lock)) = self.core.take() else {
            return Ok(());
        };
        let failed = fs.commit_all();
        prop_assert_eq!(failed, 0, "commits failed at unmount");
        // A background compaction of the packed index holds the database
        // past the core; a new core must not meet it.
        let db = fs.tree.read().db.as_ref().map(Arc::downgrade);
        drop(fs);
        let deadline = Instant::now() + Duration::from_secs(60);
        while db.as_ref().is_some_and(|db| db.strong_count() > 0) {
            prop_assert!(
                Instant::now() < deadline,
                "the packed index outlived its core"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
        drop(lock);
        Ok(())
    }

    fn remount(&mut self) -> Result<(), TestCaseError> {
        self.close_all()?;
        self.unmount()?;
        let report = ckptfs::verify::verify(self.backing, true)
            .map_err(|e| TestCaseError::fail(format!("verify: {e:#}")))?;
        prop_assert!(
            report.problems.is_empty(),
            "verify found problems: {:?}",
            report.problems
        );
        self.mount()?;
        // Inode numbers are the new core's.
        self.dir = ok(
            self.fs().lookup(ROOT, OsStr::new(DIR)),
            "lookup after remount",
        )?
        .ino
        .0;
        Ok(())
    }

    fn ino(&self, f: usize) -> Result<u64, TestCaseError> {
        Ok(
            ok(self.fs().lookup(self.dir, &name(f)), format!("lookup f{f}"))?
                .ino
                .0,
        )
    }

    fn open_fh(&self, ino: u64, flags: i32) -> Result<u64, TestCaseError> {
        let (fh, reply) = ok(self.fs().open(ino, flags, pid(), &no_passthrough), "open")?;
        prop_assert!(
            !matches!(reply, OpenReply::Passthrough(_)),
            "passthrough offered without a kernel"
        );
        Ok(fh)
    }

    fn close(&self, fh: u64) -> Result<(), TestCaseError> {
        ok(self.fs().flush(fh, pid()), "flush")?;
        ok(self.fs().release(fh), "release")
    }

    fn close_all(&mut self) -> Result<(), TestCaseError> {
        let fhs: Vec<u64> = self
            .open
            .drain()
            .chain(self.readers.drain())
            .map(|(_, fh)| fh)
            .collect();
        for fh in fhs {
            self.close(fh)?;
        }
        Ok(())
    }

    /// The read-write handle of `f`, creating the file if it does not exist
    /// (open with O_CREAT, without O_TRUNC).
    fn handle(&mut self, f: usize) -> Result<u64, TestCaseError> {
        if let Some(fh) = self.open.get(&f) {
            return Ok(*fh);
        }
        let ino = if self.model.contains_key(&f) {
            self.ino(f)?
        } else {
            let attr = ok(
                self.fs()
                    .mknod_file(self.dir, &name(f), 0o644, self.uid, self.gid),
                format!("create f{f}"),
            )?;
            attr.ino.0
        };
        let fh = self.open_fh(ino, libc::O_RDWR)?;
        self.model.entry(f).or_default();
        self.open.insert(f, fh);
        Ok(fh)
    }

    fn write(&mut self, f: usize, off: u64, data: &[u8]) -> Result<(), TestCaseError> {
        let fh = self.handle(f)?;
        let n = ok(self.fs().write(fh, off, data), format!("write f{f}"))?;
        prop_assert_eq!(n as usize, data.len(), "short write to f{}", f);
        let mut m = self.model.entry(f).or_default().borrow_mut();
        let end = off as usize + data.len();
        if m.len() < end {
            m.resize(end, 0);
        }
        m[off as usize..end].copy_from_slice(data);
        Ok(())
    }

    fn truncate(&mut self, f: usize, len: u64) -> Result<(), TestCaseError> {
        self.handle(f)?;
        let ino = self.ino(f)?;
        let times = SetTimes {
            atime: None,
            mtime: None,
        };
        let attr = ok(
            self.fs().setattr(ino, None, None, None, Some(len), times),
            format!("truncate f{f}"),
        )?;
        prop_assert_eq!(attr.size, len, "size of f{} after truncate", f);
        self.model
            .entry(f)
            .or_default()
            .borrow_mut()
            .resize(len as usize, 0);
        Ok(())
    }

    /// Everything a handle reads from offset 0 to its end.
    fn read_through(&self, fh: u64) -> Result<Vec<u8>, TestCaseError> {
        let mut out = Vec::new();
        let mut buf = Vec::new();
        loop {
            ok(
                self.fs().read(fh, out.len() as u64, READ_BYTES, &mut buf),
                "read",
            )?;
            if buf.is_empty() {
                return Ok(out);
            }
            prop_assert!(buf.len() <= READ_BYTES as usize, "read returned too much");
            out.extend_from_slice(&buf);
        }
    }

    /// Reads `f` whole through a new handle and compares it with the model.
    fn check_file(&self, f: usize, when: &str) -> Result<(), TestCaseError> {
        let expect = self.model[&f].borrow().clone();
        let ino = self.ino(f)?;
        let size = ok(self.fs().getattr(ino), "getattr")?.size;
        prop_assert_eq!(size, expect.len() as u64, "{}: size of f{}", when, f);
        let fh = self.open_fh(ino, libc::O_RDONLY)?;
        let got = self.read_through(fh)?;
        self.close(fh)?;
        prop_assert_eq!(got.len(), expect.len(), "{}: bytes read from f{}", when, f);
        prop_assert!(got == expect, "{}: content of f{} differs", when, f);
        Ok(())
    }

    /// Closes and forgets the kept reader of a name whose file went away.
    fn forget(&mut self, f: usize) -> Result<(), TestCaseError> {
        if let Some(fh) = self.readers.remove(&f) {
            self.close(fh)?;
        }
        Ok(())
    }

    fn apply(&mut self, op: &Op) -> Result<(), TestCaseError> {
        match *op {
            Op::Write { f, off, len, seed } => {
                let mut data = vec![0u8; len];
                fill(&mut data, &mut { seed });
                self.write(f, off, &data)?;
            }
            Op::Append { f, len, seed } => {
                let mut data = vec![0u8; len];
                fill(&mut data, &mut { seed });
                let off = self.model.get(&f).map_or(0, |m| m.borrow().len()) as u64;
                self.write(f, off, &data)?;
            }
            Op::Truncate { f, len } => self.truncate(f, len)?,
            Op::Rename { from, to } => {
                let same = match (self.model.get(&from), self.model.get(&to)) {
                    (Some(a), Some(b)) => Rc::ptr_eq(a, b),
                    _ => false,
                };
                if same {
                    // Two names of one file: rename(2) does nothing.
                    ok(
                        self.fs()
                            .rename(self.dir, &name(from), self.dir, &name(to), 0),
                        format!("rename f{from} f{to}, one file"),
                    )?;
                } else if from != to && self.model.contains_key(&from) {
                    self.forget(from)?;
                    self.forget(to)?;
                    ok(
                        self.fs()
                            .rename(self.dir, &name(from), self.dir, &name(to), 0),
                        format!("rename f{from} f{to}"),
                    )?;
                    let data = self.model.remove(&from).unwrap_or_default();
                    self.model.insert(to, data);
                    // The replaced file's writer closes after the rename.
                    if let Some(fh) = self.open.remove(&to) {
                        self.close(fh)?;
                    }
                    if let Some(fh) = self.open.remove(&from) {
                        self.open.insert(to, fh);
                    }
                }
            }
            Op::Link { from, to } => {
                if let Some(file) = self.model.get(&from).cloned() {
                    let ino = self.ino(from)?;
                    let made = self.fs().link(ino, self.dir, &name(to));
                    match self.model.entry(to) {
                        std::collections::btree_map::Entry::Occupied(_) => {
                            let e = made.err().map(|e| e.errno);
                            prop_assert_eq!(
                                e,
                                Some(libc::EEXIST),
                                "link f{} f{} over a name",
                                from,
                                to
                            );
                        }
                        std::collections::btree_map::Entry::Vacant(v) => {
                            ok(made, format!("link f{from} f{to}"))?;
                            v.insert(file);
                        }
                    }
                }
            }
            Op::Unlink { f } => {
                if let Some(expect) = self.model.remove(&f) {
                    let expect = expect.borrow().clone();
                    self.forget(f)?;
                    ok(self.fs().unlink(self.dir, &name(f)), format!("unlink f{f}"))?;
                    if let Some(fh) = self.open.remove(&f) {
                        // Still readable through the open handle.
                        let got = self.read_through(fh)?;
                        self.close(fh)?;
                        prop_assert!(got == expect, "unlinked-but-open f{} changed", f);
                    }
                }
            }
            Op::Fsync { f } => {
                if let Some(fh) = self.open.get(&f) {
                    ok(self.fs().fsync(*fh), format!("fsync f{f}"))?;
                }
            }
            Op::Close { f } => {
                if let Some(fh) = self.open.remove(&f) {
                    self.close(fh)?;
                }
            }
            Op::Read { f } => {
                if self.model.contains_key(&f) {
                    self.check_file(f, "read")?;
                }
            }
            Op::ReadAt { f, off, len } => {
                if let Some(expect) = self.model.get(&f).map(|m| m.borrow().clone()) {
                    let start = (off as usize).min(expect.len());
                    let end = (off as usize + len as usize).min(expect.len());
                    let want = expect[start..end].to_vec();
                    let (fh, new) = match self.open.get(&f) {
                        Some(fh) => (*fh, false),
                        None => (self.open_fh(self.ino(f)?, libc::O_RDONLY)?, true),
                    };
                    let mut got = Vec::new();
                    ok(self.fs().read(fh, off, len, &mut got), format!("read f{f}"))?;
                    if new {
                        self.close(fh)?;
                    }
                    prop_assert_eq!(got.len(), want.len(), "bytes read from f{} at {}", f, off);
                    prop_assert!(got == want, "f{} at {}+{} differs", f, off, len);
                }
            }
            Op::Peek { f } => {
                if let Some(expect) = self.model.get(&f).map(|m| m.borrow().clone()) {
                    let (fh, keep) = match self.readers.remove(&f) {
                        Some(fh) => (fh, false),
                        None => (self.open_fh(self.ino(f)?, libc::O_RDONLY)?, true),
                    };
                    let got = self.read_through(fh)?;
                    prop_assert!(
                        got == expect,
                        "a reader of f{} saw {} bytes, not the {} the file has",
                        f,
                        got.len(),
                        expect.len()
                    );
                    if keep {
                        self.readers.insert(f, fh);
                    } else {
                        self.close(fh)?;
                    }
                }
            }
            Op::Checkpoint { f, rows, seed } => {
                let data = safetensors_bytes(rows, seed);
                self.truncate(f, 0)?;
                // Header first, then the data in pieces, as writers do.
                let cut = 8 + u64::from_le_bytes(data[..8].try_into().expect("8 bytes")) as usize;
                self.write(f, 0, &data[..cut])?;
                for (i, piece) in data[cut..].chunks(7919).enumerate() {
                    self.write(f, (cut + i * 7919) as u64, piece)?;
                }
            }
            Op::Fsyncdir => ok(self.fs().fsyncdir(self.dir), "fsyncdir")?,
            Op::Remount => self.remount()?,
        }
        self.check_names()
    }

    /// Every name exists exactly when the model has it, with its size; the
    /// packed index's namespace keys followed every change (the catalog
    /// holds exactly the live tree, before any mount brings it in line).
    fn check_names(&self) -> Result<(), TestCaseError> {
        {
            let tree = self.fs().tree.read();
            if let Some(db) = tree.ns_db() {
                let d = ok(ckptfs::fs::ns_index::drift(&tree, &db), "namespace drift")?;
                let show = |k: &[u8]| String::from_utf8_lossy(k).into_owned();
                prop_assert!(
                    d.is_empty(),
                    "namespace keys differ from the tree: stale {:?}, missing {:?}",
                    d.stale.iter().map(|k| show(k)).collect::<Vec<_>>(),
                    d.missing.iter().map(|(k, _)| show(k)).collect::<Vec<_>>()
                );
            }
        }
        for f in 0..NAMES {
            match (self.fs().lookup(self.dir, &name(f)), self.model.get(&f)) {
                (Ok(attr), Some(m)) => {
                    prop_assert_eq!(attr.size, m.borrow().len() as u64, "size of f{}", f);
                    let names = self.model.values().filter(|o| Rc::ptr_eq(o, m)).count();
                    prop_assert_eq!(attr.nlink as usize, names, "st_nlink of f{}", f);
                    for (g, o) in &self.model {
                        if Rc::ptr_eq(o, m) {
                            let other = ok(self.fs().lookup(self.dir, &name(*g)), "lookup")?;
                            prop_assert_eq!(other.ino, attr.ino, "f{} and f{} are one file", f, g);
                        }
                    }
                }
                (Err(e), None) => {
                    prop_assert_eq!(e.errno, libc::ENOENT, "lookup f{}: {}", f, e);
                }
                (Ok(_), None) => {
                    prop_assert!(false, "f{} exists, the model has no such file", f);
                }
                (Err(e), Some(_)) => {
                    prop_assert!(false, "lookup f{}: {}", f, e);
                }
            }
        }
        Ok(())
    }

    /// The listings and every file's bytes match the model.
    fn check_all(&self, when: &str) -> Result<(), TestCaseError> {
        let listing = |ino| -> Result<Vec<(OsString, FileType)>, TestCaseError> {
            let mut names: Vec<_> = ok(self.fs().readdir(ino, 0), "readdir")?
                .into_iter()
                .filter(|(_, _, _, n)| n != "." && n != "..")
                .map(|(_, _, kind, n)| (n, kind))
                .collect();
            names.sort_by(|a, b| a.0.cmp(&b.0));
            Ok(names)
        };
        let root = listing(ROOT)?;
        let want_root = vec![
            (OsString::from(".ckptfs"), FileType::Directory),
            (OsString::from(DIR), FileType::Directory),
        ];
        prop_assert_eq!(root, want_root, "{}: root listing", when);
        let want: Vec<_> = self
            .model
            .keys()
            .map(|f| (name(*f), FileType::RegularFile))
            .collect();
        prop_assert_eq!(listing(self.dir)?, want, "{}: listing", when);
        for f in self.model.keys() {
            self.check_file(*f, when)?;
        }
        Ok(())
    }
}

impl Drop for Case<'_> {
    /// A failed case leaves handles open: drop the core before its dir goes.
    fn drop(&mut self) {
        self.open.clear();
        self.readers.clear();
        let _ = self.unmount();
    }
}

fn run_case(config: &MountConfig, ops: &[Op]) -> Result<(), TestCaseError> {
    let tmp = tempfile::Builder::new()
        .prefix("ckptfs-core")
        .tempdir_in(std::env::var("CKPTFS_TEST_DIR").unwrap_or_else(|_| "/tmp".into()))
        .expect("tempdir");
    let backing = tmp.path().join("backing");
    std::fs::create_dir(&backing).expect("backing dir");
    let mut case = Case::new(&backing, config)?;
    for op in ops {
        case.apply(op)?;
    }
    case.check_all("with handles open")?;
    case.close_all()?;
    case.check_all("all closed")?;
    case.remount()?;
    case.check_all("after remount")?;
    case.unmount()?;
    drop(case);
    Ok(())
}

fn run_layout(name: &str, toml: &str) {
    let config = MountConfig::parse(toml, name).expect("layout config");
    run_config(name, &config);
}

fn run_config(name: &str, config: &MountConfig) {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("CKPTFS_LOG")
                .unwrap_or_else(|_| "warn".into()),
        )
        .with_test_writer()
        .try_init();
    let cases = std::env::var("CKPTFS_PROPTEST_CASES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(64);
    let mut runner = TestRunner::new(Config {
        cases,
        max_shrink_iters: 2000,
        failure_persistence: None,
        ..Config::default()
    });
    let strategy = proptest::collection::vec(op(), 1..40);
    if let Err(e) = runner.run(&strategy, |ops| run_case(config, &ops)) {
        panic!("{name}: {e}");
    }
}

fn chunked(name: &str) -> &'static str {
    CHUNKED_LAYOUTS
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, toml)| *toml)
        .expect("layout")
}

/// One plain backing file per file (the `passthrough` config of the FUSE
/// tests, served by the core).
#[test]
fn plain() {
    let config = MountConfig::load(&common::repo_config("passthrough")).expect("config");
    run_config("plain", &config);
}

#[test]
fn chunked_4k() {
    run_layout("chunked-4k", chunked("chunked-4k"));
}

#[test]
fn zstd_8k() {
    run_layout("zstd-8k", chunked("zstd-8k"));
}

#[test]
fn packed_4k() {
    run_layout("packed-4k", chunked("packed-4k"));
}

/// Tensors in 4 KiB chunks too (the other layouts keep a checkpoint's
/// tensors whole), gzip, in the packed index with one version kept.
#[test]
fn packed_tensors_4k() {
    run_layout(
        "packed-tensors-4k",
        "[layout]\ntarget_bytes = 4096\ncodec = \"gzip\"\nindex = \"packed\"\n[packed]\nkeep_versions = 1\ndata_file_bytes = 1048576\nauto_compact_ratio = 0.1\n[io]\nconcurrency = 2\nmemory_budget = 1048576\ncache = 65536\n",
    );
}
