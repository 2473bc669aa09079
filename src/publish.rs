//! `ckptfs publish BACKING s3://BUCKET/PREFIX`: copies a backing dir's
//! packed (OCDBT) database to an object store, where read-only mounts on
//! any number of hosts (`ckptfs mount --read-only s3://…`) and TensorStore
//! (`ocdbt` over its `s3` kvstore) open it.
//!
//! Data files go first and the manifest last, by one conditional PUT (the
//! remote manifest must still be the one read at the start), so a reader
//! sees the old version or the new one, never a manifest whose files are
//! missing. A publish deletes nothing (see `store::s3_gc` for what is
//! deleted, and when): a reader that opened an older version keeps reading
//! it. Publishing again uploads only what
//! changed (data files are written once under random names and only ever
//! grow while open for appends).

use std::collections::HashMap;
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{anyhow, bail, Context, Result};
use object_store::{
    ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload, UpdateVersion, WriteMultipart,
};

use crate::config::StoreSettings;
use crate::ocdbt::data_file::DATA_DIR;
use crate::ocdbt::db::MANIFEST_FILE;
use crate::ocdbt::manifest;
use crate::ocdbt::Sealed;
use crate::pipeline::MemoryBudget;
use crate::store::s3::{to_io, S3Location, S3Store};

/// Objects above this size go up in parts of this size (S3's minimum
/// part is 5 MiB).
const PART_BYTES: usize = 8 << 20;
/// Parts of one object in flight at once.
const PARTS_IN_FLIGHT: usize = 4;
/// Objects uploaded at once: with the parts above, at most
/// 2 × (4 + 1) × 8 MiB = 80 MiB of upload buffers (measured: as fast as
/// 4 files × 8 parts on the loopback test cluster, whose ingest is the limit).
const FILES_IN_FLIGHT: usize = 2;

/// What a publish did.
#[derive(Debug, Default, serde::Serialize)]
pub struct PublishReport {
    /// The generation the remote manifest now names as newest.
    pub generation: u64,
    /// The oldest generation it keeps.
    pub oldest_kept_generation: u64,
    pub uploaded_files: u64,
    pub uploaded_bytes: u64,
    /// Data files the store already had whole.
    pub unchanged_files: u64,
    /// Whether the store refuses a conditional PUT whose condition fails
    /// (measured at each publish). Where it does not, two publishers
    /// racing on one prefix are not detected: the last manifest wins.
    pub conditional_put_enforced: bool,
    pub seconds: f64,
}

/// The remote manifest and its version tag, when there is one.
struct RemoteManifest {
    bytes: Vec<u8>,
    e_tag: Option<String>,
    version: Option<String>,
}

/// Publishes `backing`'s packed database to `to`. The caller holds the
/// backing dir's lock (no live writer).
pub fn publish(backing: &Path, to: &S3Location, settings: &StoreSettings) -> Result<PublishReport> {
    Publisher::connect(to, settings)?.publish(backing)
}

/// A connection to one prefix that databases are published to: the CLI's
/// one publish, or a writer mount's publish after each of its commits.
pub struct Publisher {
    store: Arc<S3Store>,
    to: S3Location,
    conditional_put_enforced: bool,
    /// A writer mount's memory budget, which upload buffers count against.
    budget: std::sync::OnceLock<Arc<MemoryBudget>>,
}

impl Publisher {
    /// Connects, and measures once whether the store enforces conditional
    /// PUTs (a warning where it does not).
    pub fn connect(to: &S3Location, settings: &StoreSettings) -> Result<Self> {
        let store = Arc::new(S3Store::connect_with(to.clone(), settings)?);
        let conditional_put_enforced = conditional_puts_enforced(&store)?;
        if !conditional_put_enforced {
            tracing::warn!(
                "{to}: the store accepts conditional PUTs whose condition fails (it ignores If-None-Match/If-Match): a publisher racing this one on the same prefix would not be detected"
            );
        }
        Ok(Publisher {
            store,
            to: to.clone(),
            conditional_put_enforced,
            budget: std::sync::OnceLock::new(),
        })
    }

    pub fn location(&self) -> &S3Location {
        &self.to
    }

    /// Counts upload buffers against `budget` (a writer mount's
    /// `io.memory_budget`): an upload starts once its buffers fit.
    pub fn share_budget(&self, budget: Arc<MemoryBudget>) {
        let _ = self.budget.set(budget);
    }

    /// The connection publishes go through.
    pub fn store(&self) -> Arc<S3Store> {
        self.store.clone()
    }

    /// Whether the store refused a failing conditional PUT when probed.
    pub fn conditional_put_enforced(&self) -> bool {
        self.conditional_put_enforced
    }

    /// Refuses a prefix that holds another database or a newer version of
    /// this one than `backing` has (the checks each publish makes, before
    /// a writer mount starts). `backing` may have no database yet.
    pub fn check_continues(&self, backing: &Path) -> Result<()> {
        let local = match fs::read(backing.join(MANIFEST_FILE)) {
            Ok(b) => Some(
                manifest::decode(&b)
                    .with_context(|| format!("decode {}", backing.join(MANIFEST_FILE).display()))?,
            ),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => {
                return Err(anyhow!(
                    "read {}: {e}",
                    backing.join(MANIFEST_FILE).display()
                ))
            }
        };
        let Some(remote) = remote_manifest(&self.store)? else {
            return Ok(());
        };
        let to = &self.to;
        let Some(local) = local else {
            bail!(
                "{to} already holds a checkpoint database: mount it --read-only, or give the --cache-dir of the writer mount that published it"
            );
        };
        self.check_remote(&remote, &local, backing)
    }

    fn check_remote(
        &self,
        remote: &RemoteManifest,
        local: &manifest::Manifest,
        backing: &Path,
    ) -> Result<()> {
        let to = &self.to;
        let theirs = manifest::decode(&remote.bytes)
            .with_context(|| format!("decode {to}/{MANIFEST_FILE}"))?;
        if theirs.config.uuid != local.config.uuid {
            bail!(
                "{to} holds another database (its manifest has another uuid); publish to an empty prefix"
            );
        }
        if theirs.latest().generation > local.latest().generation {
            bail!(
                "{to} is at generation {}, newer than {}'s {}: it was published from elsewhere",
                theirs.latest().generation,
                backing.display(),
                local.latest().generation
            );
        }
        Ok(())
    }

    /// Uploads what the store lacks of `backing`'s database, then its
    /// manifest. `backing` has no live writer (the CLI holds its lock).
    pub fn publish(&self, backing: &Path) -> Result<PublishReport> {
        let manifest_path = backing.join(MANIFEST_FILE);
        let local_bytes = fs::read(&manifest_path).with_context(|| {
            format!(
                "{} has no packed index ({MANIFEST_FILE}); only layout.index = \"packed\" backing dirs can be published",
                backing.display()
            )
        })?;
        self.publish_parts(backing, local_bytes, local_data_files(backing)?)
    }

    /// [`Publisher::publish`] beside a live writer of `backing`: what
    /// `Db::seal_for_copy` froze, read while the writer goes on.
    pub fn publish_sealed(&self, backing: &Path, sealed: Sealed) -> Result<PublishReport> {
        let files = data_files_named(backing, &sealed.files)?;
        self.publish_parts(backing, sealed.manifest, files)
    }

    /// Uploads those of `files` (paths `d/<name>` under `backing`, none
    /// to be written again) that the store lacks, ahead of the manifest
    /// that will name them: a writer's save and its upload overlap.
    /// Returns the files and bytes uploaded.
    pub fn upload_ahead(&self, backing: &Path, files: &[String]) -> Result<(u64, u64)> {
        let (todo, _) = self.missing(data_files_named(backing, files)?)?;
        let (n, bytes) = (todo.len() as u64, todo.iter().map(|t| t.2).sum());
        upload_all(&self.store, todo, self.budget.get().cloned())?;
        Ok((n, bytes))
    }

    /// Those of `files` the store lacks or holds shorter, and how many it
    /// holds whole; an error for one it holds longer (another database's).
    fn missing(&self, files: Vec<DataFileEntry>) -> Result<(Vec<DataFileEntry>, u64)> {
        let remote_sizes = list_data_files(&self.store)?;
        let (mut todo, mut whole) = (Vec::new(), 0);
        for (name, path, size) in files {
            match remote_sizes.get(&name) {
                Some(&r) if r == size => whole += 1,
                Some(&r) if r > size => bail!(
                    "{}/{DATA_DIR}/{name} has {r} bytes, more than the local copy's {size}: not a copy of this database",
                    self.to
                ),
                _ => todo.push((name, path, size)),
            }
        }
        Ok((todo, whole))
    }

    /// Data files first (those the store lacks or holds shorter), then the
    /// manifest by one conditional PUT.
    fn publish_parts(
        &self,
        backing: &Path,
        local_bytes: Vec<u8>,
        data_files: Vec<DataFileEntry>,
    ) -> Result<PublishReport> {
        let started = Instant::now();
        let to = &self.to;
        let store = &self.store;
        let manifest_path = backing.join(MANIFEST_FILE);
        let local = manifest::decode(&local_bytes)
            .with_context(|| format!("decode {}", manifest_path.display()))?;
        let remote = remote_manifest(store)?;
        if let Some(r) = &remote {
            self.check_remote(r, &local, backing)?;
        }

        let (todo, unchanged_files) = self.missing(data_files)?;
        let mut report = PublishReport {
            generation: local.latest().generation,
            oldest_kept_generation: crate::store::s3_gc::oldest_kept(&local)?,
            conditional_put_enforced: self.conditional_put_enforced,
            unchanged_files,
            ..PublishReport::default()
        };
        for (_, _, size) in &todo {
            report.uploaded_files += 1;
            report.uploaded_bytes += size;
        }
        upload_all(store, todo, self.budget.get().cloned())?;

        // The commit point: the new manifest, only if nobody else published
        // since it was read.
        let mode = match remote {
            Some(r) => PutMode::Update(UpdateVersion {
                e_tag: r.e_tag,
                version: r.version,
            }),
            None => PutMode::Create,
        };
        let (s, path) = (store.clone(), store.path(MANIFEST_FILE));
        let put = store.block_on(async move {
            let opts = PutOptions {
                mode,
                ..PutOptions::default()
            };
            s.store
                .put_opts(&path, PutPayload::from(local_bytes), opts)
                .await
        })?;
        match put {
            Ok(_) => {}
            Err(e @ object_store::Error::Precondition { .. })
            | Err(e @ object_store::Error::AlreadyExists { .. }) => {
                bail!("{to}/{MANIFEST_FILE} changed while publishing (another publisher?): {e}; run again")
            }
            Err(e) => return Err(to_io(e, to, MANIFEST_FILE).into()),
        }
        report.seconds = started.elapsed().as_secs_f64();
        Ok(report)
    }
}

/// Creates one scratch object twice with `If-None-Match: *`: a store that
/// honours conditions refuses the second.
fn conditional_puts_enforced(store: &Arc<S3Store>) -> Result<bool> {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let key = format!(".ckptfs-probe-{}-{nanos}", std::process::id());
    let (s, path) = (store.clone(), store.path(&key));
    let outcome = store.block_on(async move {
        let create = || PutOptions {
            mode: PutMode::Create,
            ..PutOptions::default()
        };
        s.store
            .put_opts(&path, PutPayload::from_static(b"probe"), create())
            .await?;
        let second = s
            .store
            .put_opts(&path, PutPayload::from_static(b"probe"), create())
            .await;
        let _ = s.store.delete(&path).await;
        match second {
            Ok(_) => Ok(false),
            Err(object_store::Error::AlreadyExists { .. })
            | Err(object_store::Error::Precondition { .. }) => Ok(true),
            Err(e) => Err(e),
        }
    })?;
    outcome.map_err(|e| to_io(e, &store.location, &key).into())
}

fn remote_manifest(store: &Arc<S3Store>) -> Result<Option<RemoteManifest>> {
    let (s, path) = (store.clone(), store.path(MANIFEST_FILE));
    let got = store.block_on(async move {
        match s.store.get(&path).await {
            Ok(r) => {
                let (e_tag, version) = (r.meta.e_tag.clone(), r.meta.version.clone());
                r.bytes().await.map(|b| {
                    Some(RemoteManifest {
                        bytes: b.to_vec(),
                        e_tag,
                        version,
                    })
                })
            }
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    })?;
    got.map_err(|e| to_io(e, &store.location, MANIFEST_FILE).into())
}

/// The store's data files by name, with their sizes.
fn list_data_files(store: &Arc<S3Store>) -> Result<HashMap<String, u64>> {
    let (s, dir) = (store.clone(), store.path(DATA_DIR));
    let listed = store.block_on(async move { s.store.list_with_delimiter(Some(&dir)).await })?;
    let listed = listed.map_err(|e| to_io(e, &store.location, DATA_DIR))?;
    Ok(listed
        .objects
        .into_iter()
        .filter_map(|o| Some((o.location.filename()?.to_string(), o.size)))
        .collect())
}

/// A data file: its name under `d/`, its local path, its size.
pub(crate) type DataFileEntry = (String, PathBuf, u64);

/// The data files at `rels` (paths `d/<name>` under `backing`).
fn data_files_named(backing: &Path, rels: &[String]) -> Result<Vec<DataFileEntry>> {
    let mut out = Vec::with_capacity(rels.len());
    for rel in rels {
        let Some(name) = rel.strip_prefix(&format!("{DATA_DIR}/")) else {
            continue;
        };
        let path = backing.join(rel);
        let size = fs::metadata(&path)
            .with_context(|| format!("stat {}", path.display()))?
            .len();
        out.push((name.to_string(), path, size));
    }
    Ok(out)
}

/// The backing dir's data files: name, path, size.
pub(crate) fn local_data_files(backing: &Path) -> Result<Vec<DataFileEntry>> {
    let dir = backing.join(DATA_DIR);
    let mut out = Vec::new();
    let entries = match fs::read_dir(&dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(anyhow!("list {}: {e}", dir.display())),
    };
    for entry in entries {
        let entry = entry.with_context(|| format!("list {}", dir.display()))?;
        let meta = entry.metadata()?;
        if !meta.is_file() {
            continue;
        }
        let Some(name) = entry.file_name().to_str().map(str::to_string) else {
            continue;
        };
        out.push((name, entry.path(), meta.len()));
    }
    out.sort();
    Ok(out)
}

/// Uploads the files, `FILES_IN_FLIGHT` at once; the first error stops it.
/// With `budget`, each upload first reserves its buffers from it.
fn upload_all(
    store: &Arc<S3Store>,
    todo: Vec<DataFileEntry>,
    budget: Option<Arc<MemoryBudget>>,
) -> Result<()> {
    let s = store.clone();
    store.block_on(async move {
        let mut set = tokio::task::JoinSet::new();
        let mut queue = todo.into_iter();
        loop {
            while set.len() < FILES_IN_FLIGHT {
                let Some((name, path, size)) = queue.next() else {
                    break;
                };
                // A part being read, those in flight, and the copy the
                // request body holds.
                let need = size.min(((PARTS_IN_FLIGHT + 1) * PART_BYTES) as u64);
                let held = match &budget {
                    Some(b) => loop {
                        if let Some(r) = b.try_reserve(need) {
                            break Some(r);
                        }
                        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                    },
                    None => None,
                };
                let s = s.clone();
                set.spawn(async move {
                    let r = upload(&s, &name, &path, size).await;
                    drop(held);
                    r
                });
            }
            match set.join_next().await {
                None => return Ok(()),
                Some(Ok(Ok(()))) => {}
                Some(Ok(Err(e))) => return Err(e),
                Some(Err(e)) => return Err(anyhow!("upload task: {e}")),
            }
        }
    })?
}

async fn upload(s: &S3Store, name: &str, path: &Path, size: u64) -> Result<()> {
    let key = format!("{DATA_DIR}/{name}");
    let at = s.path(&key);
    let mut file = fs::File::open(path).with_context(|| format!("open {}", path.display()))?;
    if crate::ocdbt::data_file::is_evicted(&file) {
        // Its local bytes are a hole: only the store ever had them.
        bail!(
            "{} was evicted locally, yet {} lacks it: the store lost a published file",
            path.display(),
            s.location
        );
    }
    let io = |e| anyhow!(to_io(e, &s.location, &key));
    if size <= PART_BYTES as u64 {
        let mut bytes = Vec::with_capacity(size as usize);
        file.read_to_end(&mut bytes)
            .with_context(|| format!("read {}", path.display()))?;
        s.store
            .put(&at, PutPayload::from(bytes))
            .await
            .map_err(io)?;
        return Ok(());
    }
    let upload = s.store.put_multipart(&at).await.map_err(io)?;
    let mut w = WriteMultipart::new_with_chunk_size(upload, PART_BYTES);
    let mut buf = vec![0u8; PART_BYTES];
    let sent: Result<()> = async {
        loop {
            let n = read_full(&mut file, &mut buf)
                .with_context(|| format!("read {}", path.display()))?;
            if n == 0 {
                return Ok(());
            }
            w.wait_for_capacity(PARTS_IN_FLIGHT).await.map_err(io)?;
            w.write(&buf[..n]);
        }
    }
    .await;
    if let Err(e) = sent {
        // Parts already stored would be kept (and billed) until aborted.
        let _ = w.abort().await;
        return Err(e);
    }
    w.finish().await.map_err(io)?;
    Ok(())
}

/// Reads until `buf` is full or the file ends.
fn read_full(f: &mut fs::File, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match f.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}
