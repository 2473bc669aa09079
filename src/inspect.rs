//! `ckptfs inspect PATH`: how one file is stored — its format, and for each
//! tensor its shape, dtype, stored dtype, chunk shape, codec, stored bytes,
//! compression ratio and (lossy layouts) largest absolute error.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use serde_json::json;

use crate::layout::manifest::{read_node, LayoutKind, NodeDoc, SegmentMeta};
use crate::ocdbt::db::MANIFEST_FILE;
use crate::ocdbt::Db;
use crate::store::dir_names::{to_backing_in, RESERVED};

/// Maps a path inside a live ckptfs mount to its backing directory, the
/// mount's backing root and the path's name in the mount.
fn backing_of(path: &Path) -> Option<(PathBuf, PathBuf, PathBuf)> {
    let abs = fs::canonicalize(path).ok()?;
    let mounts = fs::read_to_string("/proc/mounts").ok()?;
    let mut best: Option<(PathBuf, PathBuf)> = None;
    for line in mounts.lines() {
        let mut parts = line.split(' ');
        let (Some(src), Some(target)) = (parts.next(), parts.next()) else {
            continue;
        };
        let Some(backing) = src.strip_prefix("ckptfs:") else {
            continue;
        };
        let target = PathBuf::from(target.replace("\\040", " "));
        if abs.starts_with(&target)
            && best
                .as_ref()
                .is_none_or(|(t, _)| target.as_os_str().len() > t.as_os_str().len())
        {
            best = Some((target, PathBuf::from(backing.replace("\\040", " "))));
        }
    }
    let (target, backing) = best?;
    let rel = abs.strip_prefix(&target).ok()?;
    let mut out = backing.clone();
    for (i, part) in rel.components().enumerate() {
        out.push(to_backing_in(part.as_os_str(), i == 0));
    }
    Some((out, backing, rel.to_path_buf()))
}

/// The home of the file named `rel` where the packed catalog is the record
/// of the live tree (`store::ns_live`), as its newest version names it.
fn live_home(root: &Path, rel: &Path) -> Option<PathBuf> {
    use crate::store::namespace::Entry;
    use std::os::unix::ffi::OsStrExt;
    let homes = crate::store::ns_live::homes_dir(root);
    if !homes.is_dir() {
        return None;
    }
    let db = Db::open_newest(root).ok()?;
    let key = crate::store::ns_catalog::key(rel.as_os_str().as_bytes());
    match serde_json::from_slice(&db.get(&key).ok()??).ok()? {
        Entry::File { id } => Some(homes.join(id)),
        _ => None,
    }
}

/// The home directory of the file with `id` under `dir` (a hard link's
/// record names only the id).
fn find_home(dir: &Path, id: &str) -> Option<PathBuf> {
    for entry in fs::read_dir(dir).ok()?.flatten() {
        let path = entry.path();
        if !entry.file_type().is_ok_and(|t| t.is_dir()) || entry.file_name() == RESERVED {
            continue;
        }
        match read_node(&path) {
            NodeDoc::File(m) if m.id == id => return Some(path),
            NodeDoc::Dir | NodeDoc::Unknown => {
                if let Some(found) = find_home(&path, id) {
                    return Some(found);
                }
            }
            _ => {}
        }
    }
    None
}

fn dir_bytes(path: &Path) -> u64 {
    let Ok(entries) = fs::read_dir(path) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => dir_bytes(&e.path()),
            Ok(_) if e.file_name() == "zarr.json" => 0,
            Ok(_) => e.metadata().map(|m| m.len()).unwrap_or(0),
            Err(_) => 0,
        })
        .sum()
}

/// Builds the inspection report of one file.
pub fn inspect(path: &Path) -> Result<serde_json::Value> {
    let (mut dir, root, rel) =
        backing_of(path).unwrap_or_else(|| (path.to_path_buf(), path.into(), PathBuf::new()));
    let mut node = read_node(&dir);
    if matches!(node, NodeDoc::Unknown) {
        if let Some(home) = live_home(&root, &rel) {
            dir = home;
            node = read_node(&dir);
        }
    }
    if let NodeDoc::Link(id) = &node {
        if let Some(home) = find_home(&root, id) {
            dir = home;
            node = read_node(&dir);
        }
    }
    let m = match node {
        NodeDoc::File(m) => m,
        _ => bail!(
            "{} is neither a file in a ckptfs mount nor a file's directory in a backing store",
            path.display()
        ),
    };
    let gen_dir = dir.join(format!("g{}", m.generation));
    // A packed file's arrays are keys `<id>/g<N>/...` of the database at the
    // backing root (the nearest ancestor with a manifest.ocdbt).
    let packed = if m.packed {
        let root = dir
            .ancestors()
            .find(|a| a.join(MANIFEST_FILE).is_file())
            .ok_or_else(|| {
                anyhow!(
                    "{}: packed file outside a packed backing dir",
                    dir.display()
                )
            })?;
        let newest = crate::ocdbt::versions(root)
            .with_context(|| format!("read {}", root.join(MANIFEST_FILE).display()))?
            .last()
            .map(|v| v.generation)
            .ok_or_else(|| anyhow!("{}: no version", root.display()))?;
        let root = fs::canonicalize(root).unwrap_or_else(|_| root.to_path_buf());
        let db = Db::open_version(&root, newest)?;
        Some((root, db))
    } else {
        None
    };
    let stored_of = |rel: &str| match &packed {
        Some((_, db)) => db
            .list_prefix(format!("{}/{}/", m.id, rel.trim_matches('/')).as_bytes())
            .iter()
            .filter(|(k, _)| !k.ends_with(b"zarr.json"))
            .map(|(_, n)| n)
            .sum(),
        None => dir_bytes(&dir.join(rel.trim_start_matches('/'))),
    };
    let array_of = |rel: &str| match &packed {
        Some(_) => format!("{}/{}", m.id, rel.trim_start_matches('/')),
        None => format!("{}{}", dir.display(), rel),
    };
    let mut tensors = Vec::new();
    let mut tensor_bytes = 0u64;
    for seg in &m.segments {
        if let SegmentMeta::Tensor {
            name,
            len,
            layout,
            max_abs_error,
            ..
        } = seg
        {
            let stored = stored_of(&layout.path);
            tensor_bytes += stored;
            tensors.push(json!({
                "name": name,
                "shape": layout.shape,
                "dtype": layout.dtype.name(),
                "stored_dtype": layout.stored.name(),
                "chunk_shape": layout.chunk,
                "chunks": layout.grid().iter().product::<u64>(),
                "codec": layout.codec,
                "bytes": len,
                "stored_bytes": stored,
                "ratio": if stored > 0 { *len as f64 / stored as f64 } else { 0.0 },
                "array": array_of(&layout.path),
                "max_abs_error": max_abs_error,
            }));
        }
    }
    let total_stored = match &packed {
        // In the manifest itself (base64).
        _ if m.layout.kind == LayoutKind::Inline => m.inline.as_ref().map_or(0, |b| b.len() as u64),
        Some(_) => stored_of(&format!("g{}", m.generation)),
        None => dir_bytes(&gen_dir),
    };
    // How to open `array` with TensorStore: a path in the backing dir, or a
    // key path in the ocdbt kvstore at the backing root.
    let kvstore = match &packed {
        Some((root, _)) => {
            json!({"driver": "ocdbt", "base": format!("file://{}/", root.display())})
        }
        None => json!({"driver": "file"}),
    };
    Ok(json!({
        "kvstore": kvstore,
        "path": path.display().to_string(),
        "backing": dir.display().to_string(),
        "format": m.format.clone().unwrap_or_else(|| "raw".into()),
        "layout": m.layout.kind,
        "size": m.size,
        "generation": m.generation,
        "stored_bytes": total_stored,
        "ratio": if total_stored > 0 { m.size as f64 / total_stored as f64 } else { 0.0 },
        "raw_bytes": total_stored.saturating_sub(tensor_bytes),
        "codec": m.layout.codec,
        // Raw bytes' chunk length (a file smaller than the configured chunk
        // is stored as one chunk of its own length).
        "chunk_bytes": m.layout.chunk_bytes,
        "tensors": tensors,
    }))
}

/// The last `n` characters of `s` (all of it when shorter): the end of a
/// tensor name tells tensors apart. Cut on a character boundary, since a
/// byte offset can fall inside a multi-byte character.
fn last_chars(s: &str, n: usize) -> &str {
    match n.checked_sub(1).and_then(|k| s.char_indices().rev().nth(k)) {
        Some((i, _)) => &s[i..],
        None if n == 0 => "",
        None => s,
    }
}

/// Prints the report as a table.
pub fn print_table(r: &serde_json::Value) -> Result<()> {
    let s = |k: &str| {
        r.get(k)
            .map(|v| v.to_string().trim_matches('"').to_string())
            .unwrap_or_default()
    };
    println!("{}", s("path"));
    println!(
        "  format {}  size {}  stored {}  ratio {:.3}  generation {}",
        s("format"),
        s("size"),
        s("stored_bytes"),
        r["ratio"].as_f64().unwrap_or(0.0),
        s("generation")
    );
    let tensors = r["tensors"]
        .as_array()
        .ok_or_else(|| anyhow!("no tensors field"))?;
    if tensors.is_empty() {
        println!(
            "  (no tensors: stored as raw bytes, codec {}, chunks of {} bytes)",
            s("codec"),
            s("chunk_bytes")
        );
        return Ok(());
    }
    // Wide enough for the longest codec name, `shuffle(4)+zstd(22)`.
    println!(
        "  {:<40} {:>18} {:>6} {:>6} {:>14} {:>19} {:>12} {:>6} {:>10}",
        "tensor", "shape", "dtype", "stored", "chunk", "codec", "stored B", "ratio", "max err"
    );
    for t in tensors {
        let shape = t["shape"].to_string();
        let chunk = t["chunk_shape"].to_string();
        let name = last_chars(t["name"].as_str().unwrap_or(""), 40);
        println!(
            "  {:<40} {:>18} {:>6} {:>6} {:>14} {:>19} {:>12} {:>6.3} {:>10}",
            name,
            shape,
            t["dtype"].as_str().unwrap_or(""),
            t["stored_dtype"].as_str().unwrap_or(""),
            chunk,
            t["codec"].as_str().unwrap_or(""),
            t["stored_bytes"],
            t["ratio"].as_f64().unwrap_or(0.0),
            t["max_abs_error"]
                .as_f64()
                .map(|e| format!("{e:.3e}"))
                .unwrap_or_else(|| "-".into()),
        );
    }
    Ok(())
}

/// `ckptfs inspect` entry point.
pub fn run(path: &Path, as_json: bool) -> Result<()> {
    let r = inspect(path)?;
    if as_json {
        println!("{}", serde_json::to_string_pretty(&r).context("json")?);
        Ok(())
    } else {
        print_table(&r)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_long_multibyte_tensor_name_is_cut_on_a_character_boundary() {
        // 3-byte characters and a 4-byte emoji: 40 bytes from the end is
        // inside a character, where a byte slice panics.
        let name = format!("{}.🦀.重み", "モデル.層".repeat(12));
        assert!(!name.is_char_boundary(name.len() - 40));
        let cut = last_chars(&name, 40);
        assert_eq!(cut.chars().count(), 40);
        assert!(name.ends_with(cut));
        // ASCII is cut as before (40 bytes), a short name kept whole.
        let ascii = "model.layers.31.self_attn.q_proj.weight.scale";
        assert_eq!(last_chars(ascii, 40), &ascii[ascii.len() - 40..]);
        assert_eq!(last_chars("重み", 40), "重み");
        assert_eq!(last_chars("重み", 0), "");

        let report = serde_json::json!({
            "path": "model.safetensors",
            "format": "safetensors",
            "tensors": [{"name": name, "shape": [2, 3], "chunk_shape": [2, 3]}],
        });
        print_table(&report).expect("table");
    }
}
