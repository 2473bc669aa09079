//! `ckptfs versions DIR` and `ckptfs compact DIR` over a packed database.

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
