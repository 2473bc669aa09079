//! `ckptfs versions DIR` and `ckptfs compact DIR|s3://…` over a packed
//! database.

use std::path::Path;

use ocdbt::verify::versions as list_versions;
use ocdbt::{Db, DbOptions};

/// Prints the kept versions, oldest first; returns the exit status.
pub fn versions(dir: &Path) -> u8 {
    match list_versions(dir) {
        Ok(v) => {
            println!(
                "{:>10}  {:>20}  {:>10}  {:>12}  {:>16}",
                "generation", "commit_time_ns", "keys", "tree_bytes", "indirect_bytes"
            );
            for v in v {
                println!(
                    "{:>10}  {:>20}  {:>10}  {:>12}  {:>16}",
                    v.generation,
                    v.commit_time_ns,
                    v.num_keys,
                    v.tree_bytes,
                    v.indirect_value_bytes
                );
            }
            if ocdbt::readers::present(dir).unwrap_or(false) {
                println!("readers: version mounts are reading kept or dropped versions; compaction waits for them");
            }
            0
        }
        Err(e) => {
            eprintln!("ckptfs: {}: {e}", dir.display());
            1
        }
    }
}

/// Compacts the database (it must not be open elsewhere), keeping the
/// newest `keep` versions (default: as many as the database options keep);
/// returns the exit status.
pub fn compact(dir: &Path, keep: Option<usize>) -> u8 {
    if !dir.join(ocdbt::db::MANIFEST_FILE).exists() {
        eprintln!("ckptfs: {}: no OCDBT manifest", dir.display());
        return 1;
    }
    let defaults = DbOptions::default();
    let opts = DbOptions {
        auto_compact_garbage_ratio: None,
        keep_versions: keep.unwrap_or(defaults.keep_versions),
        ..defaults
    };
    match Db::open_or_create(dir, opts).and_then(|db| db.compact()) {
        Ok(r) if r.skipped_for_readers => {
            eprintln!(
                "ckptfs: {}: not compacted: version mounts (or `verify --all-versions`) are reading kept versions; compact once they are gone",
                dir.display()
            );
            1
        }
        Ok(r) => {
            println!(
                "removed {} data files, copied {} bytes, reclaimed {} bytes",
                r.files_removed, r.bytes_copied, r.bytes_reclaimed
            );
            0
        }
        Err(e) => {
            eprintln!("ckptfs: {}: {e}", dir.display());
            1
        }
    }
}

/// `ckptfs compact s3://…` (see `store::s3_gc::compact`); returns the exit
/// status: 1 when refused or failed, 2 for a bad location.
pub fn compact_remote(at: &str, settings: &crate::config::StoreSettings, dry_run: bool) -> u8 {
    use crate::store::s3::{S3Location, S3Store};
    use crate::store::s3_gc::{compact, Refused};
    let loc = match S3Location::parse(at) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("ckptfs: {e:#}");
            return 2;
        }
    };
    let store = match S3Store::connect_with(loc.clone(), settings) {
        Ok(s) => std::sync::Arc::new(s),
        Err(e) => {
            eprintln!("ckptfs: {e:#}");
            return 1;
        }
    };
    match compact(store, dry_run) {
        Ok(Ok(r)) => {
            let verb = if dry_run { "would remove" } else { "removed" };
            println!(
                "{verb} {} data files ({} bytes) and {} expired leases; kept {} data files ({} bytes)",
                r.removed_files, r.removed_bytes, r.removed_leases, r.kept_files, r.kept_bytes
            );
            0
        }
        Ok(Err(Refused::Writer(who))) => {
            eprintln!(
                "ckptfs: {loc}: not compacted: a writer mount holds it ({who}); it removes what its versions stop using as it publishes"
            );
            1
        }
        Ok(Err(Refused::Readers(who))) => {
            eprintln!(
                "ckptfs: {loc}: not compacted: read-only mounts read versions the manifest no longer keeps ({who}); compact once they are gone"
            );
            1
        }
        Err(e) => {
            eprintln!("ckptfs: {loc}: {e:#}");
            1
        }
    }
}
