//! `ckptfs verify BACKING`: checks a backing store offline, reading every
//! committed byte back through the same codecs a mount uses.
//!
//! For every file: the manifest parses, its generation exists, every chunk
//! (raw bytes and each tensor chunk) decodes and matches the CRC-32C its
//! manifest recorded, the arrays' `zarr.json` documents exist, and segments
//! follow each other from the file's start, none starting past its end.
//! Leftovers of an interrupted write (temp entries, superseded generations)
//! are counted, not reported: the next mount removes them.
//!
//! With `all_versions`, the files of every older version a packed index
//! keeps are checked too, against the manifests that version holds (a
//! byte flipped in a value only `mount --version N` reads shows up here).
//! Plain-layout files keep only their newest bytes and are left out.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use parking_lot::Mutex;
use zarrs::array::{ArrayBytes, CodecOptions};

use crate::layout::array::{parse_codec, retrieve_chunk, ByteArraySpec};
use crate::layout::manifest::{
    read_node, FileManifest, LayoutKind, NodeDoc, SegmentMeta, ZARR_JSON,
};
use crate::layout::tensor::TensorLayout;
use crate::ocdbt::db::MANIFEST_FILE;
use crate::ocdbt::Db;
use crate::pipeline::crc_with_zeros;
use crate::pipeline::plain::data_key;
use crate::store::dir_names::{fd_path, LONG_PATH};
use crate::store::dir_names::{is_packed_root_entry, RESERVED};
use crate::store::durable::{is_temp, DurableStore};
use crate::store::ns_live;

/// What a check found.
#[derive(Debug, Default, serde::Serialize)]
pub struct Report {
    /// Files checked (one per file, however many names it has).
    pub files: u64,
    /// Directories walked.
    pub dirs: u64,
    /// Further names of files (hard links' records).
    pub links: u64,
    /// Chunks read back and compared with their recorded CRC-32C.
    pub chunks: u64,
    /// Decoded bytes those chunks held.
    pub bytes: u64,
    /// Temp entries and superseded generations a mount would clean up.
    pub leftovers: u64,
    /// For a packed (OCDBT) database: kept versions, tree nodes and keys.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub packed: Option<[u64; 3]>,
    /// With `all_versions`: older versions checked, and the files in them.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub older_versions: Option<[u64; 2]>,
    /// What is wrong, one line each; empty for a clean store.
    pub problems: Vec<String>,
}

/// Checks every file under `backing` (and in every kept version, with
/// `all_versions`).
pub fn verify(backing: &Path, all_versions: bool) -> Result<Report> {
    if !backing.is_dir() {
        bail!("{} is not a directory", backing.display());
    }
    let mut older = Vec::new();
    let (mut report, db) = if backing.join(MANIFEST_FILE).is_file() {
        let report = verify_packed(backing);
        // Files' arrays are read from the newest version.
        let kept: Vec<u64> = crate::ocdbt::versions(backing)
            .map(|v| v.iter().map(|v| v.generation).collect())
            .unwrap_or_default();
        let db = kept.last().and_then(|&g| Db::open_version(backing, g).ok());
        if all_versions {
            older = kept[..kept.len().saturating_sub(1)].to_vec();
        }
        (report, db)
    } else {
        (Report::default(), None)
    };
    let mut files = Vec::new();
    let mut links = Vec::new();
    let mut anchors = Vec::new();
    let mut found = Found {
        files: &mut files,
        links: &mut links,
        anchors: &mut anchors,
    };
    match db.as_ref().filter(|db| ns_live::is_live(db)) {
        Some(db) => live_files(backing, db, &mut found, &mut report)?,
        None => walk(backing, true, &mut found, &mut report)?,
    }
    report.files = files.len() as u64;
    // A record whose file is gone (a crash cut the file's first save
    // short) is a leftover: the next mount removes it.
    let ids: std::collections::HashSet<&str> =
        files.iter().map(|(_, _, m)| m.id.as_str()).collect();
    for id in &links {
        if ids.contains(id.as_str()) {
            report.links += 1;
        } else {
            report.leftovers += 1;
        }
    }
    // Homes of files removed while open, which a crash kept from their
    // last close: the next mount empties the trash.
    let trash = backing
        .join(crate::store::dir_names::RESERVED)
        .join("trash");
    if let Ok(entries) = std::fs::read_dir(&trash) {
        report.leftovers += entries.count() as u64;
    }
    let mut pre = Tally::default();
    let mut jobs: Vec<Job> = files
        .into_iter()
        .map(|(label, home, m)| Job {
            home,
            label,
            m,
            db: db.clone(),
        })
        .collect();
    if all_versions {
        let open = |g| Db::open_version(backing, g);
        report.older_versions = Some(older_jobs(open, &older, backing, &mut jobs, &mut pre));
    }
    check_all(&jobs, pre, &mut report);
    Ok(report)
}

/// [`verify`] of a packed database published to an object store
/// (`ckptfs publish`): its nodes and references, then every file of its
/// newest version (and of every kept version, with `all_versions`), each
/// chunk fetched, decoded and checked against its CRC-32C. `scratch` is a
/// local dir the stores anchor on; nothing is written to it.
pub fn verify_remote(
    remote: Arc<dyn crate::ocdbt::Remote>,
    scratch: &Path,
    all_versions: bool,
) -> Result<Report> {
    let at = remote.describe();
    let mut report = Report::default();
    match crate::ocdbt::verify_remote(remote.clone()) {
        Ok(r) => {
            report.packed = Some([r.versions as u64, r.nodes as u64, r.keys as u64]);
            report.problems = r.problems;
        }
        Err(e) => bail!("{at}: {e}"),
    }
    let kept: Vec<u64> = crate::ocdbt::versions_remote(remote.clone())
        .with_context(|| format!("{at}: versions"))?
        .iter()
        .map(|v| v.generation)
        .collect();
    let Some((&newest, older)) = kept.split_last() else {
        bail!("{at}: no versions");
    };
    let mut jobs = Vec::new();
    let mut pre = Tally::default();
    let db = Db::open_remote(remote.clone(), Some(newest)).with_context(|| at.clone())?;
    report.dirs = version_jobs(&db, None, scratch, &mut jobs, &mut pre);
    report.files = jobs.len() as u64;
    if all_versions {
        let open = |g| Db::open_remote(remote.clone(), Some(g));
        report.older_versions = Some(older_jobs(open, older, scratch, &mut jobs, &mut pre));
    }
    check_all(&jobs, pre, &mut report);
    Ok(report)
}

/// Adds the files of each older version in `older` (opened by `open`) to
/// `jobs`; returns [versions, files] for the report.
fn older_jobs(
    open: impl Fn(u64) -> crate::ocdbt::Result<Arc<Db>>,
    older: &[u64],
    home: &Path,
    jobs: &mut Vec<Job>,
    pre: &mut Tally,
) -> [u64; 2] {
    let before = jobs.len();
    for &g in older {
        match open(g) {
            Ok(db) => {
                version_jobs(&db, Some(g), home, jobs, pre);
            }
            Err(e) => pre.problem(format!("version {g}: {e}")),
        }
    }
    [older.len() as u64, (jobs.len() - before) as u64]
}

/// Checks the jobs on a few threads; adds their tally to `report`.
fn check_all(jobs: &[Job], pre: Tally, report: &mut Report) {
    let next = AtomicUsize::new(0);
    let shared = Mutex::new(pre);
    let workers = std::thread::available_parallelism().map_or(2, |n| n.get().min(8));
    std::thread::scope(|s| {
        for _ in 0..workers {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(job) = jobs.get(i) else { break };
                let mut t = Tally::default();
                if let Err(e) = check_file(&job.label, &job.home, &job.m, job.db.as_ref(), &mut t) {
                    t.problems.push(format!("{}: {e:#}", job.label.display()));
                }
                shared.lock().add(t);
            });
        }
    });
    let t = shared.into_inner();
    report.chunks = t.chunks;
    report.bytes = t.bytes;
    report.problems.extend(t.problems);
    report.problems.sort();
}

/// One file to check: `label` names it in problems, `home` is its
/// directory, `m` the manifest to check it against, `db` the version of
/// the packed index its arrays are read from.
struct Job {
    label: PathBuf,
    home: PathBuf,
    m: FileManifest,
    db: Option<Arc<Db>>,
}

/// The files a version of the packed index names, each with the manifest
/// that version holds (plain-layout files, which keep only their newest
/// bytes, left out); labelled `version G/…` for an older version `g`.
/// Returns the number of directories the version has.
fn version_jobs(
    db: &Arc<Db>,
    g: Option<u64>,
    home: &Path,
    jobs: &mut Vec<Job>,
    t: &mut Tally,
) -> u64 {
    use crate::store::namespace::Entry;
    let prefix = crate::store::ns_catalog::PREFIX;
    let mut seen = std::collections::HashSet::new();
    let mut dirs = 0;
    for (key, _) in db.list_prefix(prefix) {
        let name = String::from_utf8_lossy(&key[prefix.len()..]).into_owned();
        let label = match g {
            Some(g) => PathBuf::from(format!("version {g}")).join(&name),
            None => PathBuf::from(&name),
        };
        let entry = match db.get(&key) {
            Ok(Some(v)) => serde_json::from_slice::<Entry>(&v).ok(),
            Ok(None) => continue,
            Err(e) => {
                t.problem(format!("{}: {e}", label.display()));
                continue;
            }
        };
        let id = match entry {
            Some(Entry::File { id }) => id,
            Some(Entry::Dir { .. }) => {
                dirs += 1;
                continue;
            }
            _ => continue,
        };
        if !seen.insert(id.clone()) {
            continue;
        }
        let doc = match db.get(format!("{id}/{ZARR_JSON}").as_bytes()) {
            Ok(doc) => doc,
            Err(e) => {
                t.problem(format!("{}: manifest: {e}", label.display()));
                continue;
            }
        };
        // Created, never committed in this version: no file yet.
        let Some(NodeDoc::File(m)) = doc.as_deref().map(crate::layout::manifest::parse_node) else {
            continue;
        };
        if m.layout.kind == LayoutKind::Plain {
            continue;
        }
        // An older version's arrays are all in the packed index: the
        // backing root is only the store's anchor.
        jobs.push(Job {
            label,
            home: home.to_path_buf(),
            m: *m,
            db: Some(db.clone()),
        });
    }
    dirs
}

/// A packed database: every kept version's nodes (CRC-32C, order) and
/// every value reference; an unreadable manifest is a problem, not an error.
fn verify_packed(backing: &Path) -> Report {
    let mut report = Report::default();
    match crate::ocdbt::verify(backing) {
        Ok(r) => {
            report.chunks = r.indirect_values as u64;
            report.packed = Some([r.versions as u64, r.nodes as u64, r.keys as u64]);
            report.problems = r.problems;
        }
        Err(e) => report
            .problems
            .push(format!("{}: {e}", backing.join("manifest.ocdbt").display())),
    }
    report
}

#[derive(Default)]
struct Tally {
    chunks: u64,
    bytes: u64,
    problems: Vec<String>,
}

impl Tally {
    fn add(&mut self, o: Tally) {
        self.chunks += o.chunks;
        self.bytes += o.bytes;
        self.problems.extend(o.problems);
    }

    fn problem(&mut self, what: String) {
        self.problems.push(what);
    }
}

/// What the walk gathers.
struct Found<'a> {
    /// Each file's label (its backing path, or its name), home and manifest.
    files: &'a mut Vec<(PathBuf, PathBuf, FileManifest)>,
    /// The ids link records name.
    links: &'a mut Vec<String>,
    /// Open directories that deep paths start from (`/proc/self/fd/N`):
    /// kept open until the files below them are checked.
    anchors: &'a mut Vec<fs::File>,
}

fn walk(dir: &Path, root: bool, found: &mut Found, report: &mut Report) -> Result<()> {
    let entries = fs::read_dir(dir).with_context(|| format!("read {}", dir.display()))?;
    for entry in entries {
        let entry = entry.with_context(|| format!("read {}", dir.display()))?;
        let name = entry.file_name();
        let path = entry.path();
        if root && (name == RESERVED || is_packed_root_entry(&name)) {
            continue;
        }
        if is_temp(&name.to_string_lossy()) {
            report.leftovers += 1;
            continue;
        }
        let ft = entry
            .file_type()
            .with_context(|| format!("stat {}", path.display()))?;
        if !ft.is_dir() {
            // Regular files are ours (zarr.json) or temps; symlinks, fifos,
            // sockets and devices are the mount's own nodes.
            if name != ZARR_JSON && ft.is_file() {
                report.leftovers += 1;
            }
            continue;
        }
        match read_node(&path) {
            // Never committed: the next mount removes it.
            NodeDoc::File(m) if m.pending => report.leftovers += 1,
            NodeDoc::File(m) => {
                report.leftovers += superseded(&path, &m)?;
                found.files.push((path.clone(), path, *m));
            }
            NodeDoc::Link(id) => found.links.push(id),
            NodeDoc::Dir => {
                report.dirs += 1;
                walk(&below(&path, found)?, false, found, report)?;
            }
            NodeDoc::Unknown => {
                if path.join(ZARR_JSON).exists() {
                    report
                        .problems
                        .push(format!("{}: unreadable zarr.json", path.display()));
                }
                report.dirs += 1;
                walk(&below(&path, found)?, false, found, report)?;
            }
        }
    }
    Ok(())
}

/// The files of a backing dir whose packed catalog is the record of the
/// live tree (`store::ns_live`): each home in `.ckptfs/homes` that a name
/// of the newest version reaches, labelled by its first name. Homes no
/// name reaches (files created after the last commit) and homes of files
/// never committed are leftovers for the next mount, as are the names of
/// such files (counted with the further names' ids).
fn live_files(backing: &Path, db: &Db, found: &mut Found, report: &mut Report) -> Result<()> {
    use crate::store::namespace::Entry;
    let prefix = crate::store::ns_catalog::PREFIX;
    let mut first: std::collections::HashMap<String, PathBuf> = Default::default();
    for (key, _) in db.list_prefix(prefix) {
        let name = String::from_utf8_lossy(&key[prefix.len()..]).into_owned();
        let entry = db
            .get(&key)
            .with_context(|| format!("read the name {name}"))?
            .and_then(|v| serde_json::from_slice::<Entry>(&v).ok());
        match entry {
            Some(Entry::File { id }) => match first.entry(id) {
                std::collections::hash_map::Entry::Occupied(e) => found.links.push(e.key().clone()),
                std::collections::hash_map::Entry::Vacant(e) => {
                    e.insert(backing.join(name));
                }
            },
            Some(Entry::Dir { .. }) if !name.is_empty() => report.dirs += 1,
            _ => {}
        }
    }
    let homes = ns_live::homes_dir(backing);
    let entries = match fs::read_dir(&homes) {
        Ok(e) => e.collect::<std::io::Result<Vec<_>>>(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(e),
    }
    .with_context(|| format!("read {}", homes.display()))?;
    for entry in entries {
        let path = entry.path();
        let label = entry.file_name().to_str().and_then(|id| first.remove(id));
        match (label, read_node(&path)) {
            (Some(label), NodeDoc::File(m)) if !m.pending => {
                report.leftovers += superseded(&path, &m)?;
                found.files.push((label, path, *m));
            }
            (Some(_), _) | (None, _) => report.leftovers += 1,
        }
    }
    // Named files without a home: a packed one committed is checked from
    // the database (the next mount makes its home again); the others'
    // names are dropped by the next mount.
    for (id, label) in first {
        let doc = db.get(format!("{id}/{ZARR_JSON}").as_bytes())?;
        match doc.as_deref().map(crate::layout::manifest::parse_node) {
            Some(NodeDoc::File(m)) if m.packed && !m.pending => {
                found.files.push((label, backing.to_path_buf(), *m))
            }
            _ => report.leftovers += 1,
        }
    }
    Ok(())
}

/// `path`, or for a deep one `/proc/self/fd/N` of it, kept open.
fn below(path: &Path, found: &mut Found) -> Result<PathBuf> {
    if path.as_os_str().len() <= LONG_PATH {
        return Ok(path.to_path_buf());
    }
    let dir = fs::File::open(path).with_context(|| format!("open {}", path.display()))?;
    let p = fd_path(&dir);
    found.anchors.push(dir);
    Ok(p)
}

/// Entries of a file directory other than its manifest and live generation.
fn superseded(dir: &Path, m: &FileManifest) -> Result<u64> {
    let live = format!("g{}", m.generation);
    let mut n = 0;
    for entry in fs::read_dir(dir).with_context(|| format!("read {}", dir.display()))? {
        let name = entry?.file_name();
        if name != ZARR_JSON && name.to_string_lossy() != live {
            n += 1;
        }
    }
    Ok(n)
}

/// Checks one file: `dir` names it in problems, `home` is its directory
/// (the backing root for an older version's file, whose data is all in
/// the packed index).
fn check_file(
    dir: &Path,
    home: &Path,
    m: &FileManifest,
    db: Option<&Arc<Db>>,
    t: &mut Tally,
) -> Result<()> {
    if m.generation == 0 || m.layout.kind == LayoutKind::Empty {
        if m.size != 0 {
            t.problem(format!(
                "{}: size {} but no generation",
                dir.display(),
                m.size
            ));
        }
        return Ok(());
    }
    if m.layout.kind == LayoutKind::Inline {
        // The manifest is the data: its bytes against its size and checksum.
        match m.inline_bytes() {
            Ok(_) => {
                t.chunks += 1;
                t.bytes += m.size;
            }
            Err(e) => t.problem(format!("{}: {e}", dir.display())),
        }
        return Ok(());
    }
    let present = match (m.packed, db) {
        (false, _) => home.join(format!("g{}", m.generation)).is_dir(),
        (true, Some(db)) => !db
            .list_prefix(format!("{}/g{}/", m.id, m.generation).as_bytes())
            .is_empty(),
        (true, None) => {
            t.problem(format!(
                "{}: its arrays are in the packed index, which cannot be read",
                dir.display()
            ));
            return Ok(());
        }
    };
    if !present {
        t.problem(format!(
            "{}: generation g{} is missing",
            dir.display(),
            m.generation
        ));
        return Ok(());
    }
    let store = Arc::new(
        match (m.packed, db) {
            (true, Some(db)) => DurableStore::open_packed(home, db.clone(), &m.id),
            _ => DurableStore::open(home),
        }
        .with_context(|| format!("open {}", dir.display()))?,
    );
    match &m.layout.kind {
        LayoutKind::Plain => check_plain(dir, &store, m, t),
        LayoutKind::Bytes => check_bytes(dir, &store, m, m.size, t),
        LayoutKind::Segments => check_segments(dir, &store, m, t),
        other @ (LayoutKind::Empty | LayoutKind::Inline | LayoutKind::Unknown(_)) => {
            t.problem(format!(
                "{}: unknown layout kind {:?}",
                dir.display(),
                other.as_str()
            ));
            Ok(())
        }
    }
}

fn check_plain(dir: &Path, store: &DurableStore, m: &FileManifest, t: &mut Tally) -> Result<()> {
    let path = store.key_path(&data_key(m.generation));
    let file = match fs::File::open(&path) {
        Ok(f) => f,
        Err(e) => {
            t.problem(format!("{}: data file: {e}", dir.display()));
            return Ok(());
        }
    };
    let len = file.metadata()?.len();
    if len < m.size {
        t.problem(format!(
            "{}: data file holds {len} bytes, manifest says {}",
            dir.display(),
            m.size
        ));
        return Ok(());
    }
    let mut crc = 0u32;
    let mut buf = vec![0u8; 1 << 20];
    let mut at = 0u64;
    while at < m.size {
        let n = (m.size - at).min(buf.len() as u64) as usize;
        std::os::unix::fs::FileExt::read_exact_at(&file, &mut buf[..n], at)
            .with_context(|| format!("read {}", path.display()))?;
        crc = crc32c::crc32c_append(crc, &buf[..n]);
        at += n as u64;
    }
    t.chunks += 1;
    t.bytes += m.size;
    match m.chunks.first().copied().flatten() {
        Some(want) if want != crc => t.problem(format!(
            "{}: checksum mismatch (manifest {want:08x}, data {crc:08x})",
            dir.display()
        )),
        _ => {}
    }
    Ok(())
}

/// Checks a 1-D byte array `g<N>` (or `g<N>/raw`) of `size` valid bytes.
fn check_byte_array(
    dir: &Path,
    store: &Arc<DurableStore>,
    m: &FileManifest,
    path: &str,
    size: u64,
    t: &mut Tally,
) -> Result<()> {
    let chunk = m.layout.chunk_bytes.max(1);
    let spec = ByteArraySpec {
        chunk_bytes: chunk,
        codec: parse_codec(&m.layout.codec).map_err(|e| anyhow::anyhow!("{e}"))?,
    };
    let want_chunks = size.div_ceil(chunk) as usize;
    if m.chunks.len() < want_chunks {
        t.problem(format!(
            "{}: {} checksums for {want_chunks} chunks",
            dir.display(),
            m.chunks.len()
        ));
    }
    let array = spec
        .handle(store, path)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    for (i, want) in m.chunks.iter().enumerate().take(want_chunks) {
        let Some(want) = *want else { continue };
        let start = i as u64 * chunk;
        let valid = (size.min(start + chunk) - start) as usize;
        let data = match retrieve_chunk(&array, i as u64) {
            Ok(d) => d,
            Err(e) => {
                t.problem(format!("{}: {path} chunk {i}: {e}", dir.display()));
                continue;
            }
        };
        let have = valid.min(data.len());
        let crc = crc_with_zeros(0, &data[..have], (valid - have) as u64);
        t.chunks += 1;
        t.bytes += valid as u64;
        if crc != want {
            t.problem(format!(
                "{}: {path} chunk {i}: checksum mismatch (manifest {want:08x}, data {crc:08x})",
                dir.display()
            ));
        }
    }
    Ok(())
}

fn check_bytes(
    dir: &Path,
    store: &Arc<DurableStore>,
    m: &FileManifest,
    size: u64,
    t: &mut Tally,
) -> Result<()> {
    let path = format!("/g{}", m.generation);
    require_metadata(dir, store, &path, t);
    check_byte_array(dir, store, m, &path, size, t)
}

fn check_segments(
    dir: &Path,
    store: &Arc<DurableStore>,
    m: &FileManifest,
    t: &mut Tally,
) -> Result<()> {
    let mut at = 0u64;
    // Where the last segment starts.
    let mut last_start = 0u64;
    let mut raw_total = 0u64;
    for seg in &m.segments {
        let (start, len) = match seg {
            SegmentMeta::Raw {
                start,
                len,
                raw_offset,
            } => {
                raw_total = raw_total.max(raw_offset.saturating_add(*len));
                (*start, *len)
            }
            SegmentMeta::Tensor {
                start,
                len,
                layout,
                crcs,
                ..
            } => {
                check_tensor(dir, store, layout, crcs, t)?;
                (*start, *len)
            }
        };
        if start != at {
            t.problem(format!(
                "{}: segment at {start} does not follow the previous one (ends at {at})",
                dir.display()
            ));
        }
        last_start = start;
        at = start.saturating_add(len);
    }
    // The file may end inside its last segment (a checkpoint cut short by a
    // truncate or a commit mid-save: the tensor is stored whole, its rest
    // zeros) or past it (grown by a truncate: bytes no segment covers read
    // as zeros); a segment wholly past the end is not the file's.
    if last_start > m.size {
        t.problem(format!(
            "{}: a segment starts at {last_start}, past the file's end ({})",
            dir.display(),
            m.size
        ));
    }
    if m.segments.is_empty() && m.size > 0 {
        t.problem(format!(
            "{}: no segments for a {}-byte checkpoint",
            dir.display(),
            m.size
        ));
    }
    let raw = format!("/g{}/raw", m.generation);
    if raw_total > 0 {
        require_metadata(dir, store, &raw, t);
    }
    check_byte_array(dir, store, m, &raw, raw_total, t)
}

fn check_tensor(
    dir: &Path,
    store: &Arc<DurableStore>,
    layout: &TensorLayout,
    crcs: &[u32],
    t: &mut Tally,
) -> Result<()> {
    require_metadata(dir, store, &layout.path, t);
    let grid = layout.grid();
    let count: u64 = grid.iter().product();
    if crcs.len() as u64 != count {
        t.problem(format!(
            "{}: {}: {} checksums for {count} chunks",
            dir.display(),
            layout.path,
            crcs.len()
        ));
        return Ok(());
    }
    let array = layout
        .build(store, Default::default())
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let opts = CodecOptions::default().with_concurrent_target(1);
    for (linear, &want) in crcs.iter().enumerate() {
        let coords = unravel(linear as u64, &grid);
        let got: Result<Vec<u8>> = array
            .retrieve_chunk_opt(&coords, &opts)
            .map_err(anyhow::Error::from)
            .and_then(|b: ArrayBytes| Ok(b.into_fixed()?.into_owned()));
        match got {
            Ok(raw) => {
                t.chunks += 1;
                t.bytes += raw.len() as u64;
                let crc = crc32c::crc32c(&raw);
                if crc != want {
                    t.problem(format!(
                        "{}: {} chunk {coords:?}: checksum mismatch (manifest {want:08x}, data {crc:08x})",
                        dir.display(),
                        layout.path
                    ));
                }
            }
            Err(e) => t.problem(format!(
                "{}: {} chunk {coords:?}: {e:#}",
                dir.display(),
                layout.path
            )),
        }
    }
    Ok(())
}

/// Row-major chunk coordinates of linear index `i` in `grid`.
fn unravel(mut i: u64, grid: &[u64]) -> Vec<u64> {
    let mut coords = vec![0; grid.len()];
    for d in (0..grid.len()).rev() {
        let g = grid[d].max(1);
        coords[d] = i % g;
        i /= g;
    }
    coords
}

/// An array's `zarr.json` must exist for other Zarr readers to open it.
fn require_metadata(dir: &Path, store: &DurableStore, path: &str, t: &mut Tally) {
    let doc = dir.join(path.trim_start_matches('/')).join(ZARR_JSON);
    let key = format!("{}/{ZARR_JSON}", path.trim_matches('/'));
    let ok = zarrs_storage::StoreKey::new(key)
        .ok()
        .and_then(|k| {
            zarrs_storage::ReadableStorageTraits::get(store, &k)
                .ok()
                .flatten()
        })
        .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
        .is_some_and(|v| v.get("node_type").and_then(|n| n.as_str()) == Some("array"));
    if !ok {
        t.problem(format!(
            "{}: missing or unreadable array metadata",
            doc.display()
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::unravel;

    #[test]
    fn unravel_is_row_major() {
        assert_eq!(unravel(0, &[2, 3]), vec![0, 0]);
        assert_eq!(unravel(4, &[2, 3]), vec![1, 1]);
        assert_eq!(unravel(5, &[2, 3, 1]), vec![1, 2, 0]);
    }
}
