//! Read-only inspection of a database (a directory, or a [`Remote`]): the
//! versions it keeps, and a full check of every node (CRC-32C, decoding,
//! height, key order) and every reference (file present, range inside it).

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use parking_lot::Mutex;

use super::data_file::DataFile;
use super::db::MANIFEST_FILE;
use super::error::{io_at, OcdbtError, Result};
use super::manifest;
use super::remote::Remote;
use super::tree_read::{manifest_versions, walk_tree, FileSource, Visit};

/// Where a database's files are.
enum Home<'a> {
    Dir(&'a Path),
    Remote(Arc<dyn Remote>),
}

/// Opens data files of a database on demand, read-only.
struct Files<'a> {
    home: Home<'a>,
    open: Mutex<HashMap<String, Arc<DataFile>>>,
}

impl<'a> Files<'a> {
    fn new(home: Home<'a>) -> Self {
        Files {
            home,
            open: Mutex::new(HashMap::new()),
        }
    }

    /// The manifest's bytes.
    fn manifest(&self) -> Result<Vec<u8>> {
        match &self.home {
            Home::Dir(dir) => {
                let path = dir.join(MANIFEST_FILE);
                std::fs::read(&path).map_err(io_at(&path))
            }
            Home::Remote(r) => r.get(MANIFEST_FILE).map_err(|source| OcdbtError::Io {
                path: format!("{}/{MANIFEST_FILE}", r.describe()),
                source,
            }),
        }
    }
}

impl FileSource for Files<'_> {
    fn file(&self, path: &str, transitive: &str) -> Result<Arc<DataFile>> {
        let mut open = self.open.lock();
        if let Some(f) = open.get(path) {
            return Ok(f.clone());
        }
        let f = Arc::new(match &self.home {
            Home::Dir(dir) => DataFile::open(dir, path, transitive)?,
            Home::Remote(r) => DataFile::open_remote(r.clone(), path, transitive)?,
        });
        open.insert(path.to_string(), f.clone());
        Ok(f)
    }
}

/// One kept version, as `ckptfs versions` lists it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VersionInfo {
    /// Commit counter of the version.
    pub generation: u64,
    /// When it was committed, nanoseconds since the Unix epoch.
    pub commit_time_ns: u64,
    /// Keys in its tree.
    pub num_keys: u64,
    /// Encoded bytes of its tree's nodes.
    pub tree_bytes: u64,
    /// Bytes of its values stored out of line.
    pub indirect_value_bytes: u64,
}

/// The versions the manifest in `dir` references, oldest first.
pub fn versions(dir: &Path) -> Result<Vec<VersionInfo>> {
    versions_of(Files::new(Home::Dir(dir)))
}

/// [`versions`] of a database read through `remote`.
pub fn versions_remote(remote: Arc<dyn Remote>) -> Result<Vec<VersionInfo>> {
    versions_of(Files::new(Home::Remote(remote)))
}

fn versions_of(src: Files) -> Result<Vec<VersionInfo>> {
    let m = manifest::decode(&src.manifest()?)?;
    Ok(manifest_versions(&src, &m)?
        .into_iter()
        .map(|v| VersionInfo {
            generation: v.generation,
            commit_time_ns: v.commit_time_ns,
            num_keys: v.stats.num_keys,
            tree_bytes: v.stats.num_tree_bytes,
            indirect_value_bytes: v.stats.num_indirect_value_bytes,
        })
        .collect())
}

/// What a database's manifest keeps alive: the generations of its kept
/// versions (oldest first) and every data file a kept version, its tree or
/// the version tree itself points into (paths under the root, `d/<name>`).
#[derive(Clone, Debug, Default)]
pub struct Referenced {
    pub generations: Vec<u64>,
    pub files: std::collections::BTreeSet<String>,
}

/// [`Referenced`] of a database read through `remote`: the manifest, the
/// version tree and every node of every kept version are fetched (values
/// are not: a reference names its file). Any error is an error, never a
/// smaller set: what this returns decides what may be deleted.
pub fn referenced_remote(remote: Arc<dyn Remote>) -> Result<Referenced> {
    referenced_of(Files::new(Home::Remote(remote)))
}

/// [`referenced_remote`] of the database in `dir`.
pub fn referenced(dir: &Path) -> Result<Referenced> {
    referenced_of(Files::new(Home::Dir(dir)))
}

fn referenced_of(src: Files) -> Result<Referenced> {
    let m = manifest::decode(&src.manifest()?)?;
    let versions = manifest_versions(&src, &m)?;
    let max_node = (m.config.max_decoded_node_bytes as usize).max(8 << 20) * 2;
    let mut out = Referenced::default();
    for v in &versions {
        out.generations.push(v.generation);
        walk_tree(&src, v, max_node, &mut |visit| {
            match visit {
                Visit::Node(r) => out.files.insert(r.file.path.clone()),
                Visit::Entry {
                    indirect: Some(r), ..
                } => out.files.insert(r.file.path.clone()),
                Visit::Entry { .. } => false,
            };
            Ok(())
        })?;
    }
    // Every file the manifest's table and the version-tree nodes opened.
    out.files.extend(src.open.lock().keys().cloned());
    for f in &m.files {
        out.files.insert(f.full.clone());
    }
    out.generations.sort_unstable();
    Ok(out)
}

/// What `verify` found.
#[derive(Clone, Debug, Default)]
pub struct VerifyReport {
    /// Versions walked.
    pub versions: usize,
    /// Nodes read, summed over the versions (a node several versions share counts once for each).
    pub nodes: usize,
    /// Keys seen, summed over the versions.
    pub keys: usize,
    /// Out-of-line values checked, summed over the versions.
    pub indirect_values: usize,
    /// What is wrong, one line each.
    pub problems: Vec<String>,
}

impl VerifyReport {
    /// Whether nothing is wrong.
    pub fn is_ok(&self) -> bool {
        self.problems.is_empty()
    }
}

/// Checks every kept version of the database in `dir`. Corruption is
/// reported in `problems`; only an unreadable manifest path is an error.
pub fn verify(dir: &Path) -> Result<VerifyReport> {
    verify_of(Files::new(Home::Dir(dir)))
}

/// [`verify`] of a database read through `remote`: every node and value
/// reference of every kept version is fetched.
pub fn verify_remote(remote: Arc<dyn Remote>) -> Result<VerifyReport> {
    verify_of(Files::new(Home::Remote(remote)))
}

fn verify_of(src: Files) -> Result<VerifyReport> {
    let mut report = VerifyReport::default();
    let bytes = src.manifest()?;
    let m = match manifest::decode(&bytes) {
        Ok(m) => m,
        Err(e) => {
            report.problems.push(format!("manifest: {e}"));
            return Ok(report);
        }
    };
    let versions = match manifest_versions(&src, &m) {
        Ok(v) => v,
        Err(e) => {
            report.problems.push(format!("version tree: {e}"));
            return Ok(report);
        }
    };
    let max_node = (m.config.max_decoded_node_bytes as usize).max(8 << 20) * 2;
    for v in &versions {
        report.versions += 1;
        let (mut keys, mut problems) = (0u64, Vec::new());
        let walked = walk_tree(&src, v, max_node, &mut |visit| {
            match visit {
                Visit::Node(_) => report.nodes += 1,
                Visit::Entry { key, indirect, .. } => {
                    keys += 1;
                    if let Some(r) = indirect {
                        report.indirect_values += 1;
                        let end = r.offset.checked_add(r.length);
                        if end.is_none_or(|e| e > r.file.len()) {
                            problems.push(format!(
                                "generation {}: value of {:?} at {}+{} is past the end of {} ({} bytes)",
                                v.generation,
                                String::from_utf8_lossy(key),
                                r.offset,
                                r.length,
                                r.file.path,
                                r.file.len()
                            ));
                        }
                    }
                }
            }
            Ok(())
        });
        report.keys += keys as usize;
        report.problems.extend(problems);
        match walked {
            Err(e) => report
                .problems
                .push(format!("generation {}: {e}", v.generation)),
            Ok(()) if keys != v.stats.num_keys => report.problems.push(format!(
                "generation {}: {keys} keys found, statistics say {}",
                v.generation, v.stats.num_keys
            )),
            Ok(()) => {}
        }
    }
    Ok(report)
}
