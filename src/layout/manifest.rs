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
use crate::store::durable::{sync_dir, temp_name, write_atomic};

/// Name of the metadata document of every Zarr v3 node.
pub const ZARR_JSON: &str = "zarr.json";

/// How a file's bytes are laid out in its generation array.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileLayout {
    /// Which layout; selects the reader that opens the generation.
    pub kind: LayoutKind,
    /// Length of a chunk of the raw byte array (for `plain`, the file's
    /// whole length, at least 1; 0 for `empty`).
    pub chunk_bytes: u64,
    /// Codec of the raw byte array's chunks, as
    /// [`Codec`](crate::config::Codec)'s `Display` writes it (`none`,
    /// `zstd(3)`, …).
    pub codec: String,
}

/// The `kind` of a [`FileLayout`], written in the manifest as a lowercase
/// name (`"plain"`, `"bytes"`, …), so manifests read the same as when the
/// kind was a free string.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(from = "String")]
pub enum LayoutKind {
    /// No generation yet: a file created and never committed with data.
    Empty,
    /// One uncompressed chunk (`g<N>/c/0`) holding the raw bytes, written
    /// in place; the layout kernel passthrough serves.
    Plain,
    /// A 1-D `uint8` array of `chunk_bytes` chunks, each through `codec`.
    Bytes,
    /// A parsed checkpoint: bytes kept exactly in a `raw` array and each
    /// tensor in its own array, as [`FileManifest::segments`] lists.
    Segments,
    /// A small file's bytes inside the manifest itself
    /// ([`FileManifest::inline`]): no array, so its commit writes one
    /// backing file instead of an array's directories, documents and chunk.
    Inline,
    /// A name this build does not know (a newer release's or a damaged
    /// manifest). Kept as written, so committing attributes leaves it
    /// unchanged; reading the file fails with EIO and `verify` reports it.
    Unknown(String),
}

impl LayoutKind {
    /// Every kind this build reads or writes (not `Unknown`).
    pub const KNOWN: [LayoutKind; 5] = [
        LayoutKind::Empty,
        LayoutKind::Plain,
        LayoutKind::Bytes,
        LayoutKind::Segments,
        LayoutKind::Inline,
    ];

    /// The name the manifest carries.
    pub fn as_str(&self) -> &str {
        match self {
            LayoutKind::Empty => "empty",
            LayoutKind::Plain => "plain",
            LayoutKind::Bytes => "bytes",
            LayoutKind::Segments => "segments",
            LayoutKind::Inline => "inline",
            LayoutKind::Unknown(name) => name.as_str(),
        }
    }
}

impl From<String> for LayoutKind {
    fn from(name: String) -> Self {
        match name.as_str() {
            "empty" => LayoutKind::Empty,
            "plain" => LayoutKind::Plain,
            "bytes" => LayoutKind::Bytes,
            "segments" => LayoutKind::Segments,
            "inline" => LayoutKind::Inline,
            _ => LayoutKind::Unknown(name),
        }
    }
}

impl Serialize for LayoutKind {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl std::fmt::Display for LayoutKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The POSIX attributes every node keeps: of a file in its manifest, of a
/// directory, symlink or special node in the tree (and the packed index's
/// namespace entries).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attrs {
    /// `st_mode`: the node's type bits and its permission bits.
    pub mode: u32,
    /// Owner's user id.
    pub uid: u32,
    /// Owner's group id.
    pub gid: u32,
    /// Last access time, nanoseconds since the Unix epoch.
    pub atime_ns: i64,
    /// Last data change time, nanoseconds since the Unix epoch.
    pub mtime_ns: i64,
    /// Last data or attribute change time, nanoseconds since the Unix epoch.
    pub ctime_ns: i64,
}

impl Attrs {
    /// A new node's attributes, all three times `now_ns`.
    pub fn new(mode: u32, uid: u32, gid: u32, now_ns: i64) -> Self {
        Attrs {
            mode,
            uid,
            gid,
            atime_ns: now_ns,
            mtime_ns: now_ns,
            ctime_ns: now_ns,
        }
    }
}

/// What a committed file is.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FileManifest {
    /// Always `file`; what tells a file's group document from a directory's or a link's.
    pub kind: String,
    /// Stable identity of the file, kept across renames.
    pub id: String,
    /// Incremented by each commit that starts a new array.
    pub generation: u64,
    /// Incremented by every commit.
    pub commit: u64,
    /// Length of the file in bytes, as of this commit.
    pub size: u64,
    /// Mode, owner and times (the same six fields a directory has).
    #[serde(flatten)]
    pub attrs: Attrs,
    /// How the generation array stores the bytes.
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
    /// The `inline` layout's bytes, base64 (standard alphabet, padded);
    /// their CRC-32C is `chunks[0]`. A mounted tree drops them after
    /// loading (`FileManifest::take_inline`) and reads them back from the
    /// stored manifest when the file is opened.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inline: Option<String>,
}

impl FileManifest {
    /// An `inline` manifest's bytes, checked against its size and
    /// checksum.
    pub fn inline_bytes(&self) -> FsResult<Vec<u8>> {
        use base64::Engine;
        let text = self
            .inline
            .as_deref()
            .ok_or_else(|| eio("inline manifest without its bytes"))?;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(text)
            .map_err(|e| eio(format!("inline bytes: {e}")))?;
        if bytes.len() as u64 != self.size {
            return Err(eio(format!(
                "inline bytes: {} bytes where the manifest says {}",
                bytes.len(),
                self.size
            )));
        }
        let want = self.chunks.first().copied().flatten();
        let got = crc32c::crc32c(&bytes);
        if want != Some(got) {
            return Err(eio(format!(
                "inline bytes: checksum mismatch (stored {}, read {got:08x})",
                want.map_or("none".into(), |c| format!("{c:08x}"))
            )));
        }
        Ok(bytes)
    }

    /// Makes this an `inline` manifest holding `bytes` as generation `gen`.
    pub fn set_inline(&mut self, gen: u64, bytes: &[u8]) {
        use base64::Engine;
        self.generation = gen;
        self.size = bytes.len() as u64;
        self.layout = FileLayout {
            kind: LayoutKind::Inline,
            chunk_bytes: self.size,
            codec: "none".into(),
        };
        self.array = String::new();
        self.chunks = vec![Some(crc32c::crc32c(bytes))];
        self.format = None;
        self.segments = Vec::new();
        self.inline = Some(base64::engine::general_purpose::STANDARD.encode(bytes));
    }
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

    /// Commits the manifest into `dir` with the barrier that makes the
    /// file's data durable: the temp copy is written first, so the barrier
    /// (a `syncfs` of the backing filesystem, which holds `dir`) makes it
    /// durable with the data; then rename and fsync of the directory. One
    /// flush fewer than the barrier followed by [`FileManifest::commit`].
    pub fn commit_with(&self, dir: &Path, barrier: impl FnOnce() -> FsResult<()>) -> FsResult<()> {
        let json = self.to_group_json()?;
        let path = dir.join(ZARR_JSON);
        let tmp = temp_name(&path);
        let result = std::fs::write(&tmp, &json)
            .ctx("write manifest")
            .and_then(|()| barrier())
            .and_then(|()| std::fs::rename(&tmp, &path).ctx("publish manifest"));
        if result.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        result?;
        sync_dir(dir).ctx("fsync file directory")
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_kinds_round_trip_as_their_manifest_names() {
        for (kind, name) in LayoutKind::KNOWN
            .iter()
            .zip(["empty", "plain", "bytes", "segments", "inline"])
        {
            let json = serde_json::to_string(kind).expect("serialize");
            assert_eq!(json, format!("\"{name}\""));
            let back: LayoutKind = serde_json::from_str(&json).expect("deserialize");
            assert_eq!(&back, kind);
        }
    }

    #[test]
    fn an_unknown_layout_kind_parses_and_is_written_back_as_it_was() {
        let kind: LayoutKind = serde_json::from_str("\"zigzag\"").expect("deserialize");
        assert_eq!(kind, LayoutKind::Unknown("zigzag".into()));
        assert_eq!(
            serde_json::to_string(&kind).expect("serialize"),
            "\"zigzag\""
        );
        // Not a string at all is still a parse error, not a kind.
        assert!(serde_json::from_str::<LayoutKind>("7").is_err());
    }

    fn sample() -> FileManifest {
        FileManifest {
            kind: "file".into(),
            id: "0123".into(),
            generation: 1,
            commit: 1,
            size: 3,
            attrs: Attrs {
                mode: 0o100644,
                uid: 0,
                gid: 0,
                atime_ns: 0,
                mtime_ns: 0,
                ctime_ns: 0,
            },
            layout: FileLayout {
                kind: LayoutKind::Bytes,
                chunk_bytes: 4096,
                codec: "none".into(),
            },
            array: "g1".into(),
            chunks: vec![Some(1)],
            packed: false,
            pending: false,
            format: None,
            segments: Vec::new(),
            inline: None,
        }
    }

    #[test]
    fn inline_bytes_round_trip_and_a_changed_byte_or_length_is_refused() {
        let data: Vec<u8> = (0..=255u8).cycle().take(1000).collect();
        let mut m = sample();
        m.set_inline(7, &data);
        assert_eq!(m.layout.kind, LayoutKind::Inline);
        assert_eq!((m.generation, m.size), (7, 1000));
        let json = m.to_group_json().expect("json");
        let NodeDoc::File(back) = parse_node(&json) else {
            panic!("not a file");
        };
        assert_eq!(back.inline_bytes().expect("bytes"), data);
        let mut longer = back.clone();
        longer.size += 1;
        assert!(longer.inline_bytes().is_err(), "a wrong length passed");
        let mut changed = back.clone();
        let mut other = data.clone();
        other[500] ^= 1;
        changed.set_inline(7, &other);
        changed.chunks = back.chunks.clone();
        let e = changed.inline_bytes().expect_err("a changed byte passed");
        assert!(e.to_string().contains("checksum mismatch"), "{e}");
        let mut gone = back.as_ref().clone();
        gone.inline = None;
        assert!(gone.inline_bytes().is_err(), "missing bytes passed");
    }

    #[test]
    fn a_manifest_with_an_unknown_layout_kind_is_still_a_file() {
        let m = sample();
        let json = String::from_utf8(m.to_group_json().expect("json")).expect("utf-8");
        assert!(json.contains("\"kind\": \"bytes\""), "{json}");
        let NodeDoc::File(back) = parse_node(json.as_bytes()) else {
            panic!("not a file: {json}");
        };
        assert_eq!(*back, m);
        let odd = json.replace("\"kind\": \"bytes\"", "\"kind\": \"zigzag\"");
        let NodeDoc::File(back) = parse_node(odd.as_bytes()) else {
            panic!("not a file: {odd}");
        };
        assert_eq!(back.layout.kind, LayoutKind::Unknown("zigzag".into()));
        assert_eq!(back.to_group_json().expect("json"), odd.as_bytes());
    }
}
