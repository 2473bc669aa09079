//! `Db`: an OCDBT database rooted at a directory, with an in-memory ordered
//! index of every key (values stay on disk unless inline) and pending
//! writes that become a new version on `commit`.
//!
//! ```no_run
//! use ocdbt::{Db, DbOptions};
//! let db = Db::open_or_create(std::path::Path::new("/tmp/db"), DbOptions::default())?;
//! db.put(b"tensor/zarr.json", b"{}")?;
//! let generation = db.commit()?;
//! assert_eq!(db.get(b"tensor/zarr.json")?.as_deref(), Some(&b"{}"[..]));
//! # Ok::<(), ocdbt::OcdbtError>(())
//! ```

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};

use bytes::Bytes;
use parking_lot::{Condvar, Mutex, RwLock};

use super::btree::MAX_KEY_LEN;
use super::data_file::{random_uuid, DataFile, FileTable, DATA_DIR};
use super::envelope::Compression;
use super::error::{io_at, OcdbtError, Result};
use super::manifest::{self, Config, Manifest};
use super::remote::Remote;
use super::tree_read::{manifest_versions, walk_tree, FileRange, FileSource, Version, Visit};
use super::tree_write::Value;
use super::version_tree::MAX_ARITY_LOG2;

/// Name of the manifest at the database root.
pub const MANIFEST_FILE: &str = "manifest.ocdbt";

/// Knobs of a database. The first four are fixed when the database is
/// created (later opens take them from its manifest); the rest apply to
/// this process.
#[derive(Clone, Debug)]
pub struct DbOptions {
    /// Values up to this size live inside the leaf node (Orbax uses 1024,
    /// which keeps every `zarr.json` inline).
    pub max_inline_value_bytes: u32,
    /// Upper bound of a decoded B+tree node; more keys add interior levels.
    pub max_decoded_node_bytes: u32,
    /// Generations per version-tree leaf (log2); TensorStore's default 4.
    pub version_tree_arity_log2: u8,
    /// Compression of nodes and the manifest.
    pub compression: Compression,
    /// Start a new data file once the current one is past this size.
    pub target_data_file_size: u64,
    /// Versions kept readable (at most `2^version_tree_arity_log2`).
    pub keep_versions: usize,
    /// `compact` rewrites a data file once this share of it is garbage.
    pub compact_file_garbage_ratio: f64,
    /// After a commit, compact on a background thread once this share of
    /// all data-file bytes is garbage (`None`: only on request).
    pub auto_compact_garbage_ratio: Option<f64>,
}

impl Default for DbOptions {
    fn default() -> Self {
        Self {
            max_inline_value_bytes: 1024,
            max_decoded_node_bytes: 8 << 20,
            version_tree_arity_log2: 4,
            compression: Compression::Zstd(0),
            target_data_file_size: 2 << 30,
            keep_versions: 4,
            compact_file_garbage_ratio: 0.3,
            auto_compact_garbage_ratio: Some(0.5),
        }
    }
}

pub(crate) struct IndexState {
    /// Every key's value as of now: the last commit plus writes since.
    pub map: Arc<BTreeMap<Vec<u8>, Value>>,
    /// Changed since the last commit.
    pub dirty: bool,
}

pub(crate) struct CommitState {
    /// A commit is writing now; others wait for it (or join the next one).
    pub running: bool,
    /// Epoch the next commit will take. A `commit` call notes it and is
    /// served by the first commit of at least that epoch (one that started
    /// after the call).
    pub next_epoch: u64,
    /// Epoch of the last commit that finished.
    pub done_epoch: u64,
    /// Outcome of that commit: its generation, or its error as text.
    pub last: std::result::Result<u64, String>,
}

/// What `Db::seal_for_copy` froze.
#[derive(Debug, Clone)]
pub struct Sealed {
    /// The newest manifest, as on disk.
    pub manifest: Vec<u8>,
    /// Every data file then, as paths under the root (`d/<name>`).
    pub files: Vec<String>,
}

/// An open database.
pub struct Db {
    pub(crate) dir: PathBuf,
    pub(crate) opts: DbOptions,
    pub(crate) config: Config,
    pub(crate) read_only: bool,
    pub(crate) index: RwLock<IndexState>,
    pub(crate) files: Mutex<FileTable>,
    /// The data file appends go to.
    pub(crate) writer: Mutex<Option<Arc<DataFile>>>,
    /// Kept versions, oldest first.
    pub(crate) committed: Mutex<Vec<Version>>,
    pub(crate) commit_state: Mutex<CommitState>,
    pub(crate) commit_cv: Condvar,
    pub(crate) compacting: AtomicBool,
    /// Held (shared) by a `put` from its append to its index insert, and
    /// (exclusive) by compaction's swap: a value appended to a file that
    /// compaction deletes is always in the index the swap relocates.
    pub(crate) put_gate: RwLock<()>,
    /// Data files were created since the directory was last fsynced.
    pub(crate) new_files: AtomicBool,
    pub(crate) me: Weak<Db>,
    /// A reader's pin on the version it opened (see `readers`).
    pub(crate) pin: Mutex<Option<fs::File>>,
    /// The generation a read-only `Db` opened.
    pub(crate) opened: Mutex<Option<u64>>,
    /// Where the files are when not in `dir` (read-only; see `remote`).
    pub(crate) remote: Mutex<Option<Arc<dyn Remote>>>,
    /// A copy of this database elsewhere (the object store a writer
    /// publishes to), which evicted data files are read from (`evict`).
    pub(crate) copy: Mutex<Option<Arc<dyn Remote>>>,
}

impl FileSource for Db {
    fn file(&self, path: &str, transitive: &str) -> Result<Arc<DataFile>> {
        let mut files = self.files.lock();
        if let Some(f) = files.id_of(path).and_then(|id| files.get(id)) {
            return Ok(f.clone());
        }
        let remote = self.remote.lock().clone();
        let f = Arc::new(match remote {
            Some(r) => DataFile::open_remote(r, path, transitive)?,
            None => DataFile::open_with(&self.dir, path, transitive, self.copy.lock().as_ref())?,
        });
        files.insert(f.clone());
        Ok(f)
    }
}

pub(crate) fn check_key(key: &[u8]) -> Result<()> {
    if key.len() as u64 > MAX_KEY_LEN {
        return Err(OcdbtError::Invalid(format!(
            "key of {} bytes exceeds {MAX_KEY_LEN}",
            key.len()
        )));
    }
    Ok(())
}

/// Keys starting with `prefix`, with their values.
fn prefix_range<'a>(
    map: &'a BTreeMap<Vec<u8>, Value>,
    prefix: &'a [u8],
) -> impl Iterator<Item = (&'a Vec<u8>, &'a Value)> + 'a {
    map.range(prefix.to_vec()..)
        .take_while(move |(k, _)| k.starts_with(prefix))
}

impl Db {
    fn new(dir: &Path, opts: DbOptions, config: Config, read_only: bool) -> Arc<Db> {
        Arc::new_cyclic(|me| Db {
            dir: dir.to_path_buf(),
            opts,
            config,
            read_only,
            index: RwLock::new(IndexState {
                map: Arc::new(BTreeMap::new()),
                dirty: false,
            }),
            files: Mutex::new(FileTable::default()),
            writer: Mutex::new(None),
            committed: Mutex::new(Vec::new()),
            commit_state: Mutex::new(CommitState {
                running: false,
                next_epoch: 1,
                done_epoch: 0,
                last: Ok(0),
            }),
            commit_cv: Condvar::new(),
            compacting: AtomicBool::new(false),
            put_gate: RwLock::new(()),
            new_files: AtomicBool::new(false),
            me: me.clone(),
            pin: Mutex::new(None),
            opened: Mutex::new(None),
            remote: Mutex::new(None),
            copy: Mutex::new(None),
        })
    }

    /// Opens the database in `dir`, creating it (and `dir`) if there is no
    /// manifest yet. The index is loaded from the newest version.
    pub fn open_or_create(dir: &Path, opts: DbOptions) -> Result<Arc<Db>> {
        Self::open_or_create_with_copy(dir, opts, None)
    }

    /// [`Db::open_or_create`] of a database with a copy elsewhere that
    /// holds every file it published (see [`Db::evict`]): data files
    /// evicted before are read from it.
    pub fn open_or_create_with_copy(
        dir: &Path,
        opts: DbOptions,
        copy: Option<Arc<dyn Remote>>,
    ) -> Result<Arc<Db>> {
        fs::create_dir_all(dir.join(DATA_DIR)).map_err(io_at(dir))?;
        // The readers' lock file exists before the disk can fill up: the
        // hole punching of a full disk takes it, and could not create it.
        super::readers::ensure(dir)?;
        let manifest_path = dir.join(MANIFEST_FILE);
        let existing = match fs::read(&manifest_path) {
            Ok(b) => Some(manifest::decode(&b)?),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(io_at(&manifest_path)(e)),
        };
        let config = match &existing {
            Some(m) => m.config.clone(),
            None => {
                if opts.version_tree_arity_log2 == 0
                    || opts.version_tree_arity_log2 > MAX_ARITY_LOG2
                {
                    return Err(OcdbtError::Invalid(
                        "version_tree_arity_log2 must be 1..=16".into(),
                    ));
                }
                if opts.max_decoded_node_bytes < 4096 {
                    return Err(OcdbtError::Invalid(
                        "max_decoded_node_bytes below 4096".into(),
                    ));
                }
                Config {
                    uuid: random_uuid()?,
                    max_inline_value_bytes: opts.max_inline_value_bytes,
                    max_decoded_node_bytes: opts.max_decoded_node_bytes,
                    version_tree_arity_log2: opts.version_tree_arity_log2,
                    compression: opts.compression,
                }
            }
        };
        let db = Db::new(dir, opts, config, false);
        *db.copy.lock() = copy;
        if let Some(m) = existing {
            let mut versions = manifest_versions(&*db, &m)?;
            let keep = db.keep_versions();
            if versions.len() > keep {
                versions.drain(..versions.len() - keep);
            }
            if let Some(latest) = versions.last() {
                db.load_tree(latest)?;
            }
            *db.committed.lock() = versions;
            db.adopt_strays()?;
        }
        Ok(db)
    }

    /// Frees the local blocks of the finished data file `path` (`d/<name>`),
    /// whose bytes the copy given at open holds (the caller uploaded it):
    /// its reads go to the copy from now on, and after a reopen too. The
    /// file being appended to is refused. Returns the bytes freed.
    pub fn evict(&self, path: &str) -> Result<u64> {
        let Some(copy) = self.copy.lock().clone() else {
            return Err(OcdbtError::Invalid(
                "no copy elsewhere to evict data files to".into(),
            ));
        };
        let file = {
            let files = self.files.lock();
            files.id_of(path).and_then(|id| files.get(id)).cloned()
        };
        let Some(file) = file else {
            return Ok(0);
        };
        {
            // Under the put gate no append is between its reservation and
            // its write: once the gate is had, a file that is not the one
            // being appended to has every byte it will ever have.
            let _gate = self.put_gate.write();
            if self
                .writer
                .lock()
                .as_ref()
                .is_some_and(|w| w.path == file.path)
            {
                return Err(OcdbtError::Invalid(format!(
                    "{path} is still being appended to"
                )));
            }
        }
        file.evict(copy)
    }

    /// Puts the data files no kept version names into the table, so that
    /// compaction (and `drop_dead_files`) sees them: what a process killed
    /// in the middle of a save appended and never committed, or files of
    /// versions dropped since. Only a writable open adopts them.
    fn adopt_strays(&self) -> Result<()> {
        let dir = self.dir.join(DATA_DIR);
        for e in fs::read_dir(&dir).map_err(io_at(&dir))? {
            let e = e.map_err(io_at(&dir))?;
            if !e.file_type().map_err(io_at(&dir))?.is_file() {
                continue;
            }
            let Some(name) = e.file_name().to_str().map(str::to_string) else {
                continue;
            };
            let path = format!("{DATA_DIR}/{name}");
            if super::data_file::check_path(&path).is_ok() {
                self.file(&path, "")?;
            }
        }
        Ok(())
    }

    /// Opens one committed version read-only.
    pub fn open_version(dir: &Path, generation: u64) -> Result<Arc<Db>> {
        Self::open_kept(dir, Some(generation))
    }

    /// Opens the newest version read-only (see [`Db::open_version`]).
    pub fn open_newest(dir: &Path) -> Result<Arc<Db>> {
        Self::open_kept(dir, None)
    }

    /// A kept version of a database elsewhere (an object store), read-only;
    /// the newest for `None`. No pin: objects there are never rewritten
    /// in place (see `remote`).
    pub fn open_remote(remote: Arc<dyn Remote>, generation: Option<u64>) -> Result<Arc<Db>> {
        let bytes = remote.get(MANIFEST_FILE).map_err(|source| OcdbtError::Io {
            path: format!("{}/{MANIFEST_FILE}", remote.describe()),
            source,
        })?;
        let m = manifest::decode(&bytes)?;
        let db = Db::new(Path::new(""), DbOptions::default(), m.config.clone(), true);
        *db.remote.lock() = Some(remote);
        db.load_kept(&m, generation)?;
        Ok(db)
    }

    /// A kept version, read-only; the newest for `None`. The version's
    /// bytes stay where they are while the `Db` lives (see `readers`): the
    /// pin is taken before the manifest is read, so no compaction can
    /// remove what it names in between.
    fn open_kept(dir: &Path, generation: Option<u64>) -> Result<Arc<Db>> {
        let pin = super::readers::pin(dir)?;
        let manifest_path = dir.join(MANIFEST_FILE);
        let m = manifest::decode(&fs::read(&manifest_path).map_err(io_at(&manifest_path))?)?;
        let db = Db::new(dir, DbOptions::default(), m.config.clone(), true);
        *db.pin.lock() = pin;
        db.load_kept(&m, generation)?;
        Ok(db)
    }

    /// Loads version `generation` (the newest for `None`) of manifest `m`
    /// into a read-only `Db`.
    fn load_kept(&self, m: &Manifest, generation: Option<u64>) -> Result<()> {
        let db = self;
        let versions = manifest_versions(db, m)?;
        let v = match generation {
            Some(g) => versions
                .iter()
                .find(|v| v.generation == g)
                .ok_or_else(|| OcdbtError::Invalid(format!("generation {g} is not kept")))?,
            None => versions
                .last()
                .ok_or_else(|| OcdbtError::Invalid("no version is kept".into()))?,
        };
        db.load_tree(v)?;
        *db.opened.lock() = Some(v.generation);
        *db.committed.lock() = versions;
        Ok(())
    }

    /// The generation a read-only `Db` opened (`None` for a writable one).
    pub fn opened_generation(&self) -> Option<u64> {
        *self.opened.lock()
    }

    /// How many versions a commit keeps.
    pub(crate) fn keep_versions(&self) -> usize {
        self.opts
            .keep_versions
            .clamp(1, 1 << self.config.version_tree_arity_log2)
    }

    fn load_tree(&self, v: &Version) -> Result<()> {
        let mut entries = Vec::new();
        walk_tree(self, v, self.max_node_bytes(), &mut |visit| {
            if let Visit::Entry {
                key,
                inline,
                indirect,
            } = visit
            {
                let value = match (inline, indirect) {
                    (Some(b), _) => Value::Inline(Bytes::copy_from_slice(b)),
                    (None, Some(r)) => Value::Indirect(r),
                    (None, None) => return Ok(()),
                };
                entries.push((key.to_vec(), value));
            }
            Ok(())
        })?;
        // The walk yields keys in order: building the map from the sorted
        // list is linear, where one insert per key compares down the tree
        // (a large checkpoint has ~10^6 keys). A repeated key keeps its
        // last value, as inserts would.
        let map: BTreeMap<Vec<u8>, Value> = entries.into_iter().collect();
        self.index.write().map = Arc::new(map);
        Ok(())
    }

    pub(crate) fn max_node_bytes(&self) -> usize {
        // Read TensorStore's nodes even if they exceed our own limit a bit.
        (self.config.max_decoded_node_bytes as usize).max(8 << 20) * 2
    }

    /// Whether this handle is one version opened read-only.
    pub fn is_read_only(&self) -> bool {
        self.read_only
    }

    /// The database's root directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The settings fixed when the database was created.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Newest committed generation (0 before the first commit).
    pub fn generation(&self) -> u64 {
        self.committed.lock().last().map_or(0, |v| v.generation)
    }

    fn value(&self, key: &[u8]) -> Option<Value> {
        self.index.read().map.get(key).cloned()
    }

    /// The whole value of `key`, pending writes included.
    pub fn get(&self, key: &[u8]) -> Result<Option<Bytes>> {
        match self.value(key) {
            None => Ok(None),
            Some(Value::Inline(b)) => Ok(Some(b)),
            Some(Value::Indirect(r)) => Ok(Some(Bytes::from(r.file.read_at(r.offset, r.length)?))),
        }
    }

    /// `len` bytes of `key` from `offset`; errors if the range is past its end.
    pub fn get_range(&self, key: &[u8], offset: u64, len: u64) -> Result<Option<Bytes>> {
        let Some(v) = self.value(key) else {
            return Ok(None);
        };
        let end = offset
            .checked_add(len)
            .filter(|e| *e <= v.len())
            .ok_or_else(|| {
                OcdbtError::Invalid(format!(
                    "range {offset}+{len} past the value's {} bytes",
                    v.len()
                ))
            })?;
        match v {
            Value::Inline(b) => Ok(Some(b.slice(offset as usize..end as usize))),
            Value::Indirect(r) => Ok(Some(Bytes::from(r.file.read_at(r.offset + offset, len)?))),
        }
    }

    /// Length of `key`'s value, pending writes included.
    pub fn size(&self, key: &[u8]) -> Option<u64> {
        self.value(key).map(|v| v.len())
    }

    /// Keys under `prefix` with their sizes, in key order.
    /// The smallest key at or after `from`: a seek, so a caller can step
    /// over whole ranges of keys instead of listing them.
    pub fn first_key_from(&self, from: &[u8]) -> Option<Vec<u8>> {
        let ix = self.index.read();
        ix.map.range(from.to_vec()..).next().map(|(k, _)| k.clone())
    }

    pub fn list_prefix(&self, prefix: &[u8]) -> Vec<(Vec<u8>, u64)> {
        let ix = self.index.read();
        prefix_range(&ix.map, prefix)
            .map(|(k, v)| (k.clone(), v.len()))
            .collect()
    }

    pub(crate) fn writable(&self) -> Result<()> {
        if self.read_only {
            return Err(OcdbtError::Invalid("database opened read-only".into()));
        }
        Ok(())
    }

    /// Appends bytes to the current data file (rolling to a new one past
    /// the target size). Only the choice of file is under a lock; the
    /// write itself runs in parallel with other appends.
    pub(crate) fn append(&self, data: &[u8]) -> Result<FileRange> {
        let file = {
            let mut w = self.writer.lock();
            match &*w {
                Some(f) if f.len() < self.opts.target_data_file_size => f.clone(),
                _ => {
                    let f = Arc::new(DataFile::create(&self.dir)?);
                    self.files.lock().insert(f.clone());
                    self.new_files.store(true, Ordering::Release);
                    *w = Some(f.clone());
                    f
                }
            }
        };
        let offset = file.reserve(data.len() as u64);
        file.write_at(offset, data)?;
        Ok(FileRange {
            file,
            offset,
            length: data.len() as u64,
        })
    }

    /// Freezes what a copy of the database elsewhere needs (`ckptfs`
    /// publishing to an object store): the newest manifest's bytes, and
    /// the data files (paths under the root) that exist now, none of which
    /// is written again. Appends already under way finish first; the next
    /// append starts a new file. The caller holds a versions pin
    /// (`pin_versions`), or compaction could still write or delete them.
    pub fn seal_for_copy(&self) -> Result<Sealed> {
        self.writable()?;
        self.exclusive(|| {
            let _gate = self.put_gate.write();
            *self.writer.lock() = None;
            let path = self.dir.join(MANIFEST_FILE);
            let manifest = fs::read(&path).map_err(io_at(&path))?;
            let dir = self.dir.join(DATA_DIR);
            let mut files = Vec::new();
            let entries = match fs::read_dir(&dir) {
                Ok(e) => e,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    return Ok(Sealed {
                        manifest,
                        files: Vec::new(),
                    })
                }
                Err(e) => return Err(io_at(&dir)(e)),
            };
            for e in entries {
                let e = e.map_err(io_at(&dir))?;
                if let Some(name) = e.file_name().to_str() {
                    files.push(format!("{DATA_DIR}/{name}"));
                }
            }
            files.sort();
            Ok(Sealed { manifest, files })
        })
    }

    /// Data files no append will write again (paths under the root), for
    /// a copy elsewhere to take ahead of the next commit. The file being
    /// appended to is ended first when it holds `roll_at` bytes or more,
    /// and is then among them. The caller holds a versions pin.
    pub fn finished_files(&self, roll_at: u64) -> Result<Vec<String>> {
        self.writable()?;
        self.exclusive(|| {
            let _gate = self.put_gate.write();
            let mut w = self.writer.lock();
            if w.as_ref().is_some_and(|f| f.len() >= roll_at) {
                *w = None;
            }
            let current = w.as_ref().map(|f| f.path.clone());
            Ok(self
                .files
                .lock()
                .iter()
                .map(|(_, f)| f.path.clone())
                .filter(|p| Some(p) != current.as_ref() && p.starts_with(DATA_DIR))
                .collect())
        })
    }

    /// Holds the bytes of every kept version in place while the returned
    /// pin lives: compaction and space reclaim wait for it (see
    /// `readers`). `None` where the database is on read-only media.
    pub fn pin_versions(&self) -> Result<Option<fs::File>> {
        super::readers::pin(&self.dir)
    }

    /// Stores `value` under `key` (visible at once, durable at `commit`).
    pub fn put(&self, key: &[u8], value: &[u8]) -> Result<()> {
        self.writable()?;
        check_key(key)?;
        self.with_space(|| self.put_once(key, value))
    }

    /// Runs `op`; on a full disk, commits (so values deleted since the last
    /// commit are in no newest version), punches out unreferenced ranges,
    /// then gives up the history, and tries again after each, before the
    /// caller sees ENOSPC.
    pub(crate) fn with_space(&self, op: impl Fn() -> Result<()>) -> Result<()> {
        let mut tries = [false, true].into_iter();
        loop {
            match op() {
                Err(e) if e.is_no_space() => match tries.next() {
                    Some(drop_history) => {
                        // A version without what was deleted since the last
                        // commit lets the deleted values' ranges go too.
                        let _ = self.commit();
                        self.reclaim(drop_history)?;
                    }
                    None => return Err(e),
                },
                r => return r,
            }
        }
    }

    fn put_once(&self, key: &[u8], value: &[u8]) -> Result<()> {
        let _gate = self.put_gate.read();
        let v = if value.len() as u64 <= u64::from(self.config.max_inline_value_bytes) {
            Value::Inline(Bytes::copy_from_slice(value))
        } else {
            Value::Indirect(self.append(value)?)
        };
        let mut ix = self.index.write();
        Arc::make_mut(&mut ix.map).insert(key.to_vec(), v);
        ix.dirty = true;
        Ok(())
    }

    /// Stores several values at once: the out-of-line ones are appended to
    /// a data file with one write, side by side (a save's small chunks,
    /// which one `pwrite` each would cost a system call and a page-cache
    /// round each), and indexed under one lock. Like `put` for each.
    pub fn put_many(&self, items: &[(&[u8], &[u8])]) -> Result<()> {
        self.writable()?;
        for (key, _) in items {
            check_key(key)?;
        }
        self.with_space(|| self.put_many_once(items))
    }

    fn put_many_once(&self, items: &[(&[u8], &[u8])]) -> Result<()> {
        let _gate = self.put_gate.read();
        let inline_max = u64::from(self.config.max_inline_value_bytes);
        let far = |v: &[u8]| v.len() as u64 > inline_max;
        let total: usize = items
            .iter()
            .filter(|(_, v)| far(v))
            .map(|(_, v)| v.len())
            .sum();
        let mut joined = Vec::with_capacity(total);
        for (_, v) in items.iter().filter(|(_, v)| far(v)) {
            joined.extend_from_slice(v);
        }
        let range = if total > 0 {
            Some(self.append(&joined)?)
        } else {
            None
        };
        let mut ix = self.index.write();
        let map = Arc::make_mut(&mut ix.map);
        let mut at = 0;
        for (key, v) in items {
            let value = match &range {
                Some(r) if far(v) => {
                    let part = FileRange {
                        file: r.file.clone(),
                        offset: r.offset + at,
                        length: v.len() as u64,
                    };
                    at += v.len() as u64;
                    Value::Indirect(part)
                }
                _ => Value::Inline(Bytes::copy_from_slice(v)),
            };
            map.insert(key.to_vec(), value);
        }
        ix.dirty = true;
        Ok(())
    }

    /// Removes `key`; returns whether it existed.
    pub fn delete(&self, key: &[u8]) -> Result<bool> {
        self.writable()?;
        let mut ix = self.index.write();
        if !ix.map.contains_key(key) {
            return Ok(false);
        }
        Arc::make_mut(&mut ix.map).remove(key);
        ix.dirty = true;
        Ok(true)
    }

    /// Removes every key under `prefix`; returns how many.
    pub fn delete_prefix(&self, prefix: &[u8]) -> Result<usize> {
        self.writable()?;
        let mut ix = self.index.write();
        let keys: Vec<Vec<u8>> = prefix_range(&ix.map, prefix)
            .map(|(k, _)| k.clone())
            .collect();
        if keys.is_empty() {
            return Ok(0);
        }
        let map = Arc::make_mut(&mut ix.map);
        for k in &keys {
            map.remove(k);
        }
        ix.dirty = true;
        Ok(keys.len())
    }

    /// Moves every key under `old` to the same suffix under `new`, replacing
    /// whatever was under `new`. Only the index changes; values stay put.
    pub fn rename_prefix(&self, old: &[u8], new: &[u8]) -> Result<usize> {
        self.writable()?;
        if old == new {
            return Ok(0);
        }
        if new.starts_with(old) || old.starts_with(new) {
            return Err(OcdbtError::Invalid("rename prefixes must not nest".into()));
        }
        let mut ix = self.index.write();
        let moved: Vec<(Vec<u8>, Value)> = prefix_range(&ix.map, old)
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        for (k, _) in &moved {
            check_key(&[new, &k[old.len()..]].concat())?;
        }
        let replaced: Vec<Vec<u8>> = prefix_range(&ix.map, new).map(|(k, _)| k.clone()).collect();
        let map = Arc::make_mut(&mut ix.map);
        for k in replaced {
            map.remove(&k);
        }
        for (k, v) in &moved {
            map.remove(k);
            map.insert([new, &k[old.len()..]].concat(), v.clone());
        }
        ix.dirty = true;
        Ok(moved.len())
    }

    /// Total bytes of all data files this process knows.
    pub fn data_bytes(&self) -> u64 {
        self.files.lock().iter().map(|(_, f)| f.len()).sum()
    }
}
