//! Deleting what a database on an object store no longer uses: data files
//! no kept version references (versions a writer dropped, uploads a
//! crashed writer left behind) and leases of dead mounts.
//!
//! Two callers. A writer mount sweeps after its own publishes, knowing
//! which files its database still holds (`writeback`). `ckptfs compact
//! s3://…` sweeps a prefix no writer holds, deciding from the manifest
//! alone: it walks every kept version and keeps every file one of them
//! points into. Both delete nothing while a reader holds a version older
//! than the manifest keeps (see `lease`).

use std::collections::HashSet;
use std::sync::Arc;

use anyhow::{anyhow, bail, Context, Result};

use super::lease::{self, Leases};
use super::s3::{ObjectInfo, S3Store};
use crate::ocdbt::data_file::DATA_DIR;
use crate::ocdbt::db::MANIFEST_FILE;
use crate::store::s3::S3Remote;

/// What a sweep did (or, dry, would do).
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct SweepReport {
    pub removed_files: u64,
    pub removed_bytes: u64,
    /// Data files kept: referenced, or written after the sweep began.
    pub kept_files: u64,
    pub kept_bytes: u64,
    pub removed_leases: u64,
}

/// Why a sweep deleted nothing.
#[derive(Debug)]
pub enum Refused {
    /// Readers hold versions the manifest no longer keeps.
    Readers(String),
    /// A writer mount holds the prefix.
    Writer(String),
}

/// The oldest generation a manifest keeps, from the manifest alone (the
/// version-tree nodes say which generations they cover).
pub fn oldest_kept(m: &crate::ocdbt::manifest::Manifest) -> Result<u64> {
    let inline = m.versions.iter().map(|v| v.generation);
    let older = m
        .version_nodes
        .iter()
        .map(|n| (n.generation + 1).saturating_sub(n.num_generations));
    inline
        .chain(older)
        .min()
        .ok_or_else(|| anyhow!("the manifest keeps no version"))
}

/// Deletes `victims` (data files), and the expired leases; counts them.
pub fn delete(
    store: &S3Store,
    victims: &[ObjectInfo],
    leases: &Leases,
    report: &mut SweepReport,
) -> Result<()> {
    for o in victims {
        store.delete(&o.key)?;
        report.removed_files += 1;
        report.removed_bytes += o.size;
    }
    for k in &leases.expired {
        store.delete(k)?;
        report.removed_leases += 1;
    }
    Ok(())
}

/// `ckptfs compact s3://…`: deletes the data files no kept version of the
/// manifest references, older than the sweep itself (a writer that mounts
/// meanwhile writes its lease before any upload, and its uploads are
/// newer), and the expired leases. `dry_run` only counts.
pub fn compact(store: Arc<S3Store>, dry_run: bool) -> Result<Result<SweepReport, Refused>> {
    let at = store.location.clone();
    let now = store.now_ms().context("read the store's clock")?;
    let check = |leases: &Leases| -> Option<Refused> {
        let w: Vec<String> = leases.writers().map(|l| l.holder.clone()).collect();
        (!w.is_empty()).then(|| Refused::Writer(w.join(", ")))
    };
    let leases = lease::list(&store, now)?;
    if let Some(r) = check(&leases) {
        return Ok(Err(r));
    }
    if store.get_opt(MANIFEST_FILE)?.is_none() {
        bail!("{at} holds no database ({MANIFEST_FILE} is missing)");
    }
    let remote = Arc::new(S3Remote::new(store.clone(), None));
    let referenced = crate::ocdbt::referenced_remote(remote)
        .map_err(|e| anyhow!("read the kept versions of {at}: {e}"))?;
    let oldest = referenced.generations.first().copied().unwrap_or(0);
    if let Some(r) = leases.readers_before(oldest) {
        return Ok(Err(Refused::Readers(r)));
    }
    let mut report = SweepReport::default();
    let mut victims = Vec::new();
    // Whole seconds on the store's clock: a file in the same second as
    // `now` may be newer than it.
    let cutoff = now - 1_000;
    for o in store.list_meta(DATA_DIR)? {
        if referenced.files.contains(&o.key) || o.modified_ms >= cutoff {
            report.kept_files += 1;
            report.kept_bytes += o.size;
        } else {
            victims.push(o);
        }
    }
    if dry_run {
        report.removed_files = victims.len() as u64;
        report.removed_bytes = victims.iter().map(|o| o.size).sum();
        report.removed_leases = leases.expired.len() as u64;
        return Ok(Ok(report));
    }
    // Once more just before deleting: a writer mounted since the first look
    // may be about to name an old file again in its first publish.
    let again = lease::list(&store, store.now_ms()?)?;
    if let Some(r) = check(&again) {
        return Ok(Err(r));
    }
    if let Some(r) = again.readers_before(oldest) {
        return Ok(Err(Refused::Readers(r)));
    }
    delete(&store, &victims, &leases, &mut report)?;
    Ok(Ok(report))
}

/// A writer's sweep after a publish of its own: deletes the store's data
/// files that neither that publish's sealed set (`published`) nor the
/// local database now (`local`) holds. Every file the store's manifest
/// references was sealed, and every file the writer will still upload is
/// local, so what is left is garbage. Nothing goes while readers hold
/// versions older than `oldest_kept`.
pub fn sweep_writer(
    store: &S3Store,
    published: &HashSet<String>,
    local: &HashSet<String>,
    oldest_kept: u64,
) -> Result<Result<SweepReport, Refused>> {
    let leases = lease::list(store, store.now_ms()?)?;
    if let Some(r) = leases.readers_before(oldest_kept) {
        return Ok(Err(Refused::Readers(r)));
    }
    let mut report = SweepReport::default();
    let mut victims = Vec::new();
    for o in store.list_meta(DATA_DIR)? {
        if published.contains(&o.key) || local.contains(&o.key) {
            report.kept_files += 1;
            report.kept_bytes += o.size;
        } else {
            victims.push(o);
        }
    }
    delete(store, &victims, &leases, &mut report)?;
    Ok(Ok(report))
}
