//! Random sequences of create / write-at-offset / append / truncate /
//! rename / unlink / fsync / close / read run against a real mount and an
//! in-memory model; every byte is compared, then again after a remount.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::fs::{self, File, OpenOptions};
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use common::{fill, layouts, safetensors_bytes, Mount};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};

const NAMES: usize = 4;

/// Final contents of each case's files, by case directory.
type Finals = Vec<(PathBuf, BTreeMap<usize, Vec<u8>>)>;

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
    Unlink {
        f: usize,
    },
    Fsync {
        f: usize,
    },
    Close {
        f: usize,
    },
    Read {
        f: usize,
    },
    /// Opens a reader and keeps it while other ops change the file, or
    /// reads through the kept one (then closes it): it must see one whole
    /// version the file had since the reader opened, never a mix.
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
        1 => f.clone().prop_map(|f| Op::Unlink { f }),
        1 => f.clone().prop_map(|f| Op::Fsync { f }),
        2 => f.clone().prop_map(|f| Op::Close { f }),
        2 => f.clone().prop_map(|f| Op::Read { f }),
        2 => f.clone().prop_map(|f| Op::Peek { f }),
        2 => (f, 1u64..300, any::<u64>()).prop_map(|(f, rows, seed)| Op::Checkpoint { f, rows, seed: seed | 1 }),
    ]
}

struct Case {
    dir: PathBuf,
    model: BTreeMap<usize, Vec<u8>>,
    open: HashMap<usize, File>,
    /// Every content each file had, in order (cleared by rename/unlink).
    history: HashMap<usize, Vec<Vec<u8>>>,
    /// Kept readers: descriptor and the history index when opened.
    readers: HashMap<usize, (File, usize)>,
}

impl Case {
    fn path(&self, f: usize) -> PathBuf {
        self.dir.join(format!("f{f}"))
    }

    fn handle(&mut self, f: usize) -> &File {
        let path = self.path(f);
        self.model.entry(f).or_default();
        self.open.entry(f).or_insert_with(|| {
            OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(&path)
                .expect("open")
        })
    }

    /// Notes the model's content of `f` as a version readers may see.
    fn record(&mut self, f: usize) {
        if let Some(m) = self.model.get(&f) {
            self.history.entry(f).or_default().push(m.clone());
        }
    }

    /// Forgets readers and versions of a name whose file went away.
    fn forget(&mut self, f: usize) {
        self.readers.remove(&f);
        self.history.remove(&f);
    }

    fn apply(&mut self, op: &Op) -> Result<(), TestCaseError> {
        self.apply_op(op)?;
        match *op {
            Op::Write { f, .. }
            | Op::Append { f, .. }
            | Op::Truncate { f, .. }
            | Op::Checkpoint { f, .. } => self.record(f),
            Op::Rename { to, .. } => self.record(to),
            _ => {}
        }
        Ok(())
    }

    fn apply_op(&mut self, op: &Op) -> Result<(), TestCaseError> {
        match *op {
            Op::Write { f, off, len, seed } => {
                let mut data = vec![0u8; len];
                fill(&mut data, &mut { seed });
                self.handle(f).write_all_at(&data, off).expect("pwrite");
                let m = self.model.entry(f).or_default();
                let end = off as usize + len;
                if m.len() < end {
                    m.resize(end, 0);
                }
                m[off as usize..end].copy_from_slice(&data);
            }
            Op::Append { f, len, seed } => {
                let mut data = vec![0u8; len];
                fill(&mut data, &mut { seed });
                let off = self.model.get(&f).map(|m| m.len()).unwrap_or(0) as u64;
                self.handle(f).write_all_at(&data, off).expect("append");
                self.model.entry(f).or_default().extend_from_slice(&data);
            }
            Op::Truncate { f, len } => {
                self.handle(f).set_len(len).expect("truncate");
                self.model.entry(f).or_default().resize(len as usize, 0);
            }
            Op::Rename { from, to } => {
                if from != to && self.model.contains_key(&from) {
                    self.forget(from);
                    self.forget(to);
                    fs::rename(self.path(from), self.path(to)).expect("rename");
                    let data = self.model.remove(&from).unwrap_or_default();
                    self.model.insert(to, data);
                    self.open.remove(&to);
                    if let Some(h) = self.open.remove(&from) {
                        self.open.insert(to, h);
                    }
                }
            }
            Op::Unlink { f } => {
                if let Some(expect) = self.model.remove(&f) {
                    self.forget(f);
                    fs::remove_file(self.path(f)).expect("unlink");
                    prop_assert!(!self.path(f).exists(), "unlinked file still visible");
                    if let Some(h) = self.open.remove(&f) {
                        // Still readable through the open descriptor.
                        let mut got = vec![0u8; expect.len()];
                        h.read_exact_at(&mut got, 0).expect("read unlinked");
                        prop_assert!(got == expect, "unlinked-but-open file changed");
                    }
                }
            }
            Op::Fsync { f } => {
                if let Some(h) = self.open.get(&f) {
                    h.sync_all().expect("fsync");
                }
            }
            Op::Close { f } => {
                self.open.remove(&f);
            }
            Op::Checkpoint { f, rows, seed } => {
                let data = safetensors_bytes(rows, seed);
                let h = self.handle(f);
                h.set_len(0).expect("truncate");
                // Header first, then the data in pieces, as writers do.
                let cut = 8 + u64::from_le_bytes(data[..8].try_into().expect("8 bytes")) as usize;
                h.write_all_at(&data[..cut], 0).expect("header");
                for (i, piece) in data[cut..].chunks(7919).enumerate() {
                    h.write_all_at(piece, (cut + i * 7919) as u64)
                        .expect("data");
                }
                self.model.insert(f, data);
            }
            Op::Peek { f } => {
                if !self.model.contains_key(&f) {
                    return Ok(());
                }
                if self.history.get(&f).is_none_or(|h| h.is_empty()) {
                    self.record(f);
                }
                let versions = &self.history[&f];
                match self.readers.remove(&f) {
                    Some((r, since)) => {
                        let got = read_through(&r);
                        prop_assert!(
                            versions[since..].contains(&got),
                            "a reader of f{} kept open saw {} bytes matching no version since it opened",
                            f,
                            got.len()
                        );
                    }
                    None => {
                        let r = File::open(self.path(f)).expect("open reader");
                        let got = read_through(&r);
                        prop_assert!(got == self.model[&f], "new reader of f{} differs", f);
                        self.readers.insert(f, (r, versions.len() - 1));
                    }
                }
            }
            Op::Read { f } => {
                if let Some(expect) = self.model.get(&f) {
                    let got = read_all(&self.path(f));
                    prop_assert_eq!(got.len(), expect.len(), "size of f{}", f);
                    prop_assert!(got == *expect, "content of f{} differs", f);
                }
            }
        }
        Ok(())
    }

    fn check_all(&self) -> Result<(), TestCaseError> {
        let mut names: Vec<String> = fs::read_dir(&self.dir)
            .expect("readdir")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        let want: Vec<String> = self.model.keys().map(|f| format!("f{f}")).collect();
        prop_assert_eq!(names, want);
        for (f, expect) in &self.model {
            let got = read_all(&self.path(*f));
            prop_assert!(got == *expect, "final content of f{} differs", f);
            let meta = fs::metadata(self.path(*f)).expect("stat");
            prop_assert_eq!(meta.len(), expect.len() as u64);
        }
        Ok(())
    }
}

/// Everything an open descriptor reads from offset 0 to its end.
fn read_through(f: &File) -> Vec<u8> {
    let mut out = Vec::new();
    let mut buf = vec![0u8; 65536];
    loop {
        let n = f.read_at(&mut buf, out.len() as u64).expect("read");
        if n == 0 {
            return out;
        }
        out.extend_from_slice(&buf[..n]);
    }
}

fn read_all(p: &Path) -> Vec<u8> {
    let mut v = Vec::new();
    File::open(p)
        .expect("open")
        .read_to_end(&mut v)
        .expect("read");
    v
}

fn run_layout(name: &str, config: PathBuf, cases: u32) {
    run_on(name, Mount::new(Some(config)), cases, None);
}

/// The model test on `mount`; with `reader`, the final files are also
/// compared through that (a reader of the store `mount` writes to).
fn run_on(name: &str, mut mount: Mount, cases: u32, reader: Option<&dyn Fn() -> Mount>) {
    let finals: std::cell::RefCell<Finals> = Default::default();
    let mut runner = TestRunner::new(Config {
        cases,
        max_shrink_iters: 200,
        ..Config::default()
    });
    let n = std::cell::Cell::new(0u32);
    let strategy = proptest::collection::vec(op(), 1..40);
    let result = runner.run(&strategy, |ops| {
        n.set(n.get() + 1);
        let dir = mount.path(&format!("case{}", n.get()));
        fs::create_dir(&dir).expect("case dir");
        let mut case = Case {
            dir,
            model: BTreeMap::new(),
            open: HashMap::new(),
            history: HashMap::new(),
            readers: HashMap::new(),
        };
        for op in &ops {
            case.apply(op)?;
        }
        case.check_all()?;
        case.open.clear();
        case.readers.clear();
        case.check_all()?;
        finals
            .borrow_mut()
            .push((case.dir.clone(), case.model.clone()));
        Ok(())
    });
    if let Err(e) = result {
        panic!("{name}: {e}");
    }
    // Everything closed was committed: a new daemon must show it all.
    mount.remount();
    for (dir, model) in finals.borrow().iter() {
        for (f, expect) in model {
            let got = read_all(&dir.join(format!("f{f}")));
            assert!(
                got == *expect,
                "{name}: {} f{f} differs after remount",
                dir.display()
            );
        }
    }
    mount.unmount();
    // A reader of the store (its own process and cache dir) has them all.
    if let Some(reader) = reader {
        let r = reader();
        for (dir, model) in finals.borrow().iter() {
            let rel = dir
                .strip_prefix(&mount.mnt)
                .expect("case dir under the mount");
            for (f, expect) in model {
                let got = read_all(&r.mnt.join(rel).join(format!("f{f}")));
                assert!(
                    got == *expect,
                    "{name}: {} f{f} differs in a reader of the store",
                    rel.display()
                );
            }
        }
        let mut r = r;
        r.unmount();
    }
}

/// The model test through a writer mount of `s3://` and, after it, a
/// reader mount of the same prefix. Run by `scripts/reliability/s3-cluster.sh`
/// against the test cluster (`CKPTFS_TEST_S3=s3://BUCKET/PREFIX`, an empty
/// prefix, and the cluster's `AWS_*`).
#[test]
#[ignore = "needs an S3 store: scripts/reliability/s3-cluster.sh runs it"]
fn random_write_patterns_match_the_model_on_an_s3_writer() {
    let url = std::env::var("CKPTFS_TEST_S3").expect("CKPTFS_TEST_S3=s3://BUCKET/PREFIX");
    let cases = std::env::var("CKPTFS_PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(24);
    // A small limit: old data files are evicted and read from the store.
    let tmp = tempfile::tempdir().expect("tmp");
    let config = common::write_config(
        tmp.path(),
        "s3-writer",
        "[layout]\ntarget_bytes = 65536\n[packed]\nkeep_versions = 2\n",
    );
    let reader = || Mount::s3(None, &url, true, &[]);
    let writer = Mount::s3(Some(config), &url, false, &["--cache-size", "1M"]);
    run_on("s3", writer, cases, Some(&reader));
}

#[test]
fn random_write_patterns_match_the_model_on_every_layout() {
    let tmp = tempfile::tempdir().expect("tmp");
    let cases = std::env::var("CKPTFS_PROPTEST_CASES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(48);
    for (name, config) in layouts(tmp.path()) {
        run_layout(&name, config, cases);
    }
}

#[test]
fn a_write_far_past_the_end_stores_only_the_chunks_written() {
    for layout in ["default", "zstd"] {
        let mut m = Mount::new(Some(common::repo_config(layout)));
        let far = 16u64 << 30;
        {
            let f = OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(true)
                .open(m.path("sparse"))
                .expect("create");
            f.write_all_at(b"head", 0).expect("write head");
            f.write_all_at(b"z", far).expect("write far");
        }
        // The hole between is neither read nor encoded: two chunks, not 2049.
        let stats: serde_json::Value =
            serde_json::from_slice(&fs::read(m.path(".ckptfs/stats")).expect("stats"))
                .expect("stats json");
        let encoded = stats["stages"]["encode_store"]["count"]
            .as_u64()
            .unwrap_or(0);
        assert!(
            encoded <= 2,
            "{layout}: {encoded} chunks encoded for 2 written"
        );
        for round in 0..2 {
            let f = File::open(m.path("sparse")).expect("open");
            assert_eq!(f.metadata().expect("stat").len(), far + 1, "{layout}");
            let mut buf = [9u8; 5];
            f.read_exact_at(&mut buf, 0).expect("read head");
            assert_eq!(&buf, b"head\0", "{layout} round {round}");
            f.read_exact_at(&mut buf, far - 4).expect("read tail");
            assert_eq!(&buf, b"\0\0\0\0z", "{layout} round {round}");
            f.read_exact_at(&mut buf, far / 2).expect("read hole");
            assert_eq!(buf, [0u8; 5], "{layout} round {round}");
            drop(f);
            m.remount();
        }
        m.unmount();
    }
}
