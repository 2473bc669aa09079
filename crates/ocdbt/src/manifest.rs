//! The manifest (`manifest.ocdbt`): the database configuration, then (for
//! the single-file kind, the only one we read or write) a data-file table,
//! the newest versions inline and references to version-tree nodes.

use super::codec::{put_varint, Reader};
use super::data_file_table::{self, DataFilePath};
use super::envelope::{self, Compression, MANIFEST_MAGIC};
use super::error::{corrupt, OcdbtError, Result};
use super::version_tree::{
    max_height, read_node_refs, read_version_refs, write_node_refs, write_version_refs,
    VersionNodeRef, VersionRef, MAX_ARITY_LOG2,
};

/// Largest manifest body we accept (a manifest holds at most a few hundred
/// references, so anything near this is hostile).
pub const MAX_MANIFEST_BODY: usize = 64 << 20;

/// Database-wide settings, fixed at creation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// Random id of the database, written at creation.
    pub uuid: [u8; 16],
    /// Values up to this length are stored inline in leaves; longer ones in data files.
    pub max_inline_value_bytes: u32,
    /// Largest decoded node a writer may produce.
    pub max_decoded_node_bytes: u32,
    /// Base-2 log of the version tree's arity.
    pub version_tree_arity_log2: u8,
    /// Compression of manifests and nodes.
    pub compression: Compression,
}

/// A decoded `manifest.ocdbt`: the configuration and every kept version, inline or through
/// version-tree nodes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Manifest {
    /// Database-wide settings.
    pub config: Config,
    /// Files the version references point into (plain relative paths).
    pub files: Vec<DataFilePath>,
    /// Newest versions, oldest first; never empty.
    pub versions: Vec<VersionRef>,
    /// Older versions, highest node first.
    pub version_nodes: Vec<VersionNodeRef>,
}

impl Manifest {
    /// The newest version.
    pub fn latest(&self) -> &VersionRef {
        // `decode` and every writer guarantee at least one version.
        &self.versions[self.versions.len() - 1]
    }
}

/// Encodes a manifest; `files` indices in the references must be sorted
/// plain paths (see `data_file_table::encode`).
pub fn encode(m: &Manifest) -> Result<Vec<u8>> {
    let c = &m.config;
    let mut body = Vec::new();
    body.extend_from_slice(&c.uuid);
    body.push(0); // manifest_kind: single
    put_varint(&mut body, u64::from(c.max_inline_value_bytes));
    put_varint(&mut body, u64::from(c.max_decoded_node_bytes));
    body.push(c.version_tree_arity_log2);
    match c.compression {
        Compression::None => put_varint(&mut body, 0),
        Compression::Zstd(level) => {
            put_varint(&mut body, 1);
            body.extend_from_slice(&level.to_le_bytes());
        }
    }
    let paths = data_file_table::pairs(&m.files);
    data_file_table::encode(&mut body, &paths);
    write_version_refs(&mut body, &m.versions, |f| f);
    write_node_refs(&mut body, &m.version_nodes, true, |f| f);
    envelope::encode(MANIFEST_MAGIC, c.compression, &body)
}

/// Decodes a `manifest.ocdbt` record, checking its envelope (magic, length,
/// CRC-32C) and the format's limits.
pub fn decode(data: &[u8]) -> Result<Manifest> {
    let body = envelope::decode(data, MANIFEST_MAGIC, MAX_MANIFEST_BODY)?;
    let mut r = Reader::new(&body);
    let mut uuid = [0u8; 16];
    uuid.copy_from_slice(r.bytes(16)?);
    match r.byte()? {
        0 => {}
        1 => {
            return Err(OcdbtError::Unsupported(
                "numbered manifests (manifest_kind 1)".into(),
            ))
        }
        k => return Err(corrupt(format!("manifest_kind {k}"))),
    }
    let max_inline_value_bytes = r.varint_max(u32::MAX.into(), "max_inline_value_bytes")? as u32;
    let max_decoded_node_bytes = r.varint_max(u32::MAX.into(), "max_decoded_node_bytes")? as u32;
    let arity = r.byte()?;
    if arity == 0 || arity > MAX_ARITY_LOG2 {
        return Err(corrupt(format!("version_tree_arity_log2 {arity}")));
    }
    let compression = match r.varint()? {
        0 => Compression::None,
        1 => {
            let b = r.bytes(4)?;
            let level = i32::from_le_bytes([b[0], b[1], b[2], b[3]]);
            if !(-131072..=22).contains(&level) {
                return Err(corrupt(format!("zstd level {level}")));
            }
            Compression::Zstd(level)
        }
        m => return Err(corrupt(format!("compression method {m}"))),
    };
    let files = data_file_table::decode(&mut r, "")?;
    let versions = read_version_refs(&mut r, arity, files.len())?;
    let version_nodes = read_node_refs(&mut r, max_height(arity).into(), None, files.len())?;
    let last = versions[versions.len() - 1].generation;
    for n in &version_nodes {
        if n.height == 0 || n.height > max_height(arity) {
            return Err(corrupt(format!(
                "manifest version node height {}",
                n.height
            )));
        }
        if n.generation >= versions[0].generation || n.generation > last {
            return Err(corrupt("version node newer than the inline versions"));
        }
    }
    if !r.is_empty() {
        return Err(corrupt("trailing bytes in manifest"));
    }
    Ok(Manifest {
        config: Config {
            uuid,
            max_inline_value_bytes,
            max_decoded_node_bytes,
            version_tree_arity_log2: arity,
            compression,
        },
        files,
        versions,
        version_nodes,
    })
}

#[cfg(test)]
mod tests {
    use super::super::btree::{Location, Stats};
    use super::*;

    pub(crate) fn sample() -> Manifest {
        Manifest {
            config: Config {
                uuid: [7; 16],
                max_inline_value_bytes: 1024,
                max_decoded_node_bytes: 8 << 20,
                version_tree_arity_log2: 4,
                compression: Compression::Zstd(0),
            },
            files: vec![DataFilePath {
                full: "d/0123".into(),
                transitive: String::new(),
            }],
            versions: vec![
                VersionRef {
                    generation: 17,
                    root_height: 0,
                    root: Some(Location {
                        file: 0,
                        offset: 10,
                        length: 20,
                    }),
                    stats: Stats {
                        num_keys: 2,
                        num_tree_bytes: 20,
                        num_indirect_value_bytes: 0,
                    },
                    commit_time_ns: 1_700_000_000_000_000_000,
                },
                VersionRef {
                    generation: 18,
                    root_height: 0,
                    root: None,
                    stats: Stats::default(),
                    commit_time_ns: 1_700_000_000_000_000_001,
                },
            ],
            version_nodes: vec![VersionNodeRef {
                generation: 16,
                location: Location {
                    file: 0,
                    offset: 0,
                    length: 10,
                },
                num_generations: 16,
                commit_time: 1,
                height: 1,
            }],
        }
    }

    #[test]
    fn manifest_round_trips() {
        let m = sample();
        assert_eq!(decode(&encode(&m).unwrap()).unwrap(), m);
        let mut raw = m.clone();
        raw.config.compression = Compression::None;
        assert_eq!(decode(&encode(&raw).unwrap()).unwrap(), raw);
    }

    #[test]
    fn manifest_corruption_is_reported() {
        let enc = encode(&sample()).unwrap();
        for i in 0..enc.len() {
            let mut bad = enc.clone();
            bad[i] = bad[i].wrapping_add(1);
            assert!(decode(&bad).is_err(), "byte {i}");
        }
        for n in 0..enc.len() {
            assert!(decode(&enc[..n]).is_err());
        }
    }
}
