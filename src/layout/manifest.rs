//! The per-file manifest: the commit point of a file.
//!
//! A mounted file `a/b` is the backing directory `a/b/`, a Zarr v3 group
//! whose `zarr.json` carries the manifest under the `ckptfs` attribute. The
//! manifest names the generation array (`g<N>/`) that holds the bytes, the
//! size, the POSIX attributes and a CRC-32C per chunk. Replacing `zarr.json`
//! (temp, fsync, rename, fsync dir) is what makes a new version visible.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{eio, FsResult, IoContext};
use crate::store::durable::{sync_dir, write_atomic};

/// Name of the metadata document of every Zarr v3 node.
pub const ZARR_JSON: &str = "zarr.json";

/// How a file's bytes are laid out in its generation array.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileLayout {
    /// `plain`: one chunk holding the raw bytes; `bytes`: a 1-D uint8 array
    /// of `chunk_bytes` chunks.
    pub kind: String,
    pub chunk_bytes: u64,
    pub codec: String,
}

/// What a committed file is.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FileManifest {
    pub kind: String,
    /// Stable identity of the file, kept across renames.
    pub id: String,
    /// Incremented by each commit that starts a new array.
    pub generation: u64,
    /// Incremented by every commit.
    pub commit: u64,
    pub size: u64,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub atime_ns: i64,
    pub mtime_ns: i64,
    pub ctime_ns: i64,
    pub layout: FileLayout,
    /// The generation array, relative to the file's directory.
    pub array: String,
    /// CRC-32C of the valid bytes of each chunk; `None` for a chunk never
    /// written (it reads as zeros). For a parsed checkpoint: of its raw array.
    pub chunks: Vec<Option<u32>>,
    /// The arrays live in the packed database under `<id>/`, not in the
    /// file's backing directory.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub packed: bool,
    /// Created, and neither its content nor its name committed since: a
    /// crash removes it (recovery at the next mount), so an interrupted
    /// first save leaves no empty file behind.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub pending: bool,
    /// The checkpoint format recognised (`safetensors`, …), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<String>,
    /// A parsed checkpoint's bytes, in file order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub segments: Vec<SegmentMeta>,
}

/// A stretch of a parsed checkpoint file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum SegmentMeta {
    /// Bytes kept exactly, at `raw_offset` in the generation's `raw` array.
    Raw {
        start: u64,
        len: u64,
        raw_offset: u64,
    },
    /// A tensor stored as its own array.
    Tensor {
        start: u64,
        len: u64,
        name: String,
        layout: crate::layout::tensor::TensorLayout,
        /// CRC-32C of each decoded chunk, by linear chunk index.
        crcs: Vec<u32>,
        /// Largest |original − stored| when the dtype was narrowed.
        max_abs_error: Option<f64>,
    },
}

#[derive(Serialize, Deserialize)]
struct GroupDoc {
    zarr_format: u32,
    node_type: String,
    #[serde(default)]
    attributes: serde_json::Map<String, serde_json::Value>,
}

/// Group document of a directory (mounted directory or the root).
pub fn dir_group_json(kind: &str) -> Vec<u8> {
    let mut attrs = serde_json::Map::new();
    attrs.insert("ckptfs".into(), serde_json::json!({ "kind": kind }));
    let doc = GroupDoc {
        zarr_format: 3,
        node_type: "group".into(),
        attributes: attrs,
    };
    serde_json::to_vec_pretty(&doc).unwrap_or_default()
}

/// Group document of a hard link's record: a further name of the file
/// whose manifest carries `id` (the file's home is at its first name).
pub fn link_group_json(id: &str) -> Vec<u8> {
    let mut attrs = serde_json::Map::new();
    attrs.insert(
        "ckptfs".into(),
        serde_json::json!({ "kind": "link", "id": id }),
    );
    let doc = GroupDoc {
        zarr_format: 3,
        node_type: "group".into(),
        attributes: attrs,
    };
    serde_json::to_vec_pretty(&doc).unwrap_or_default()
}

/// What a backing directory holds, judged from its `zarr.json`.
pub enum NodeDoc {
    Dir,
    File(Box<FileManifest>),
    /// A hard link's record: another name of the file with this id.
    Link(String),
    /// No readable document: a directory half-created by a crash, or not ours.
    Unknown,
}

/// Reads the `zarr.json` of a backing directory.
pub fn read_node(dir: &Path) -> NodeDoc {
    match std::fs::read(dir.join(ZARR_JSON)) {
        Ok(text) => parse_node(&text),
        Err(_) => NodeDoc::Unknown,
    }
}

/// Parses a `zarr.json` document (from a directory or a packed key).
pub fn parse_node(text: &[u8]) -> NodeDoc {
    let Ok(doc) = serde_json::from_slice::<GroupDoc>(text) else {
        return NodeDoc::Unknown;
    };
    let Some(meta) = doc.attributes.get("ckptfs") else {
        return NodeDoc::Dir;
    };
    match meta.get("kind").and_then(|k| k.as_str()) {
        Some("file") => match serde_json::from_value::<FileManifest>(meta.clone()) {
            Ok(m) => NodeDoc::File(Box::new(m)),
            Err(_) => NodeDoc::Unknown,
        },
        Some("link") => match meta.get("id").and_then(|i| i.as_str()) {
            Some(id) => NodeDoc::Link(id.to_owned()),
            None => NodeDoc::Unknown,
        },
        _ => NodeDoc::Dir,
    }
}

impl FileManifest {
    /// Serialises the manifest as the group document of the file directory.
    pub fn to_group_json(&self) -> FsResult<Vec<u8>> {
        let mut attrs = serde_json::Map::new();
        let value = serde_json::to_value(self).map_err(|e| eio(format!("manifest: {e}")))?;
        attrs.insert("ckptfs".into(), value);
        let doc = GroupDoc {
            zarr_format: 3,
            node_type: "group".into(),
            attributes: attrs,
        };
        serde_json::to_vec_pretty(&doc).map_err(|e| eio(format!("manifest: {e}")))
    }

    /// Commits the manifest into `dir`: temp, fsync, rename, fsync dir.
    pub fn commit(&self, dir: &Path, durable: bool) -> FsResult<()> {
        let json = self.to_group_json()?;
        write_atomic(&dir.join(ZARR_JSON), &json, durable).ctx("write manifest")?;
        if durable {
            sync_dir(dir).ctx("fsync file directory")?;
        }
        Ok(())
    }
}
