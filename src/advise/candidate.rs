//! The layouts the advisor tries, each written out as a mount config.
//!
//! A first round covers the choices that move figures most: chunk target
//! size, codec, and files vs packed index (plus the plain one-file layout
//! with kernel passthrough). A second round varies, around the best of the
//! first for the goal, what matters less or only sometimes: chunks in
//! flight, read mode, codec level, and the stored dtype when lossy storage
//! is allowed.

use crate::config::{Codec, Index, ReadMode, StoredDtype};

const MIB: u64 = 1024 * 1024;

/// Chunk target sizes of the first round: T5X-like small, the default, and
/// T5X's own 64 MiB.
pub const CHUNK_TARGETS: [u64; 3] = [MIB, 8 * MIB, 64 * MIB];

/// Chunks in flight of the first round (the default config's value).
const BASE_CONCURRENCY: usize = 4;

/// One layout to measure: the mount-config choices the advisor varies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    /// None: the file's bytes kept as one plain file, served by kernel
    /// passthrough.
    pub chunk_bytes: Option<u64>,
    /// Compressor of every chunk.
    pub codec: Codec,
    /// Chunk files, or the packed index.
    pub index: Index,
    /// Chunks encoded and stored in flight (`io.concurrency`).
    pub concurrency: usize,
    /// How read-only opens of chunked files are served.
    pub read_mode: ReadMode,
    /// Element type tensors are stored in; anything but `keep` is lossy.
    pub dtype: StoredDtype,
}

impl Candidate {
    fn chunked(chunk_bytes: u64, codec: Codec, index: Index) -> Candidate {
        Candidate {
            chunk_bytes: Some(chunk_bytes),
            codec,
            index,
            concurrency: BASE_CONCURRENCY,
            read_mode: ReadMode::Cached,
            dtype: StoredDtype::Keep,
        }
    }

    fn passthrough() -> Candidate {
        Candidate {
            chunk_bytes: None,
            codec: Codec::None,
            index: Index::Files,
            concurrency: 1,
            read_mode: ReadMode::Cached,
            dtype: StoredDtype::Keep,
        }
    }

    /// Whether it stores tensors in a narrower dtype than they have.
    pub fn is_lossy(&self) -> bool {
        self.dtype != StoredDtype::Keep
    }

    /// A short name that says what differs, e.g. `8m-zstd1-packed-c8-direct`.
    pub fn name(&self) -> String {
        let Some(chunk) = self.chunk_bytes else {
            return "passthrough".into();
        };
        let mut n = format!("{}m", chunk / MIB);
        match self.codec {
            Codec::None => n.push_str("-raw"),
            Codec::Zstd(l) | Codec::ZstdShuffled { level: l, .. } => {
                n.push_str(&format!("-zstd{l}"))
            }
            Codec::Gzip(l) => n.push_str(&format!("-gzip{l}")),
        }
        n.push_str(match self.index {
            Index::Files => "-files",
            Index::Packed => "-packed",
        });
        if self.concurrency != BASE_CONCURRENCY {
            n.push_str(&format!("-c{}", self.concurrency));
        }
        if self.read_mode == ReadMode::Direct {
            n.push_str("-direct");
        }
        match self.dtype {
            StoredDtype::Keep => {}
            StoredDtype::Float16 => n.push_str("-f16"),
            StoredDtype::Bfloat16 => n.push_str("-bf16"),
        }
        n
    }

    /// The mount config, with a comment per choice.
    pub fn toml(&self) -> String {
        let mut t = String::from("[layout]\n");
        match self.chunk_bytes {
            None => t.push_str("chunking = \"none\"   # each file kept as one plain file\n"),
            Some(b) => t.push_str(&format!(
                "target_bytes = {b}   # {} MiB chunks (T5X chunk-shape rule)\n",
                b / MIB
            )),
        }
        match self.codec {
            Codec::None => t.push_str("codec = \"none\"\n"),
            Codec::Zstd(l) | Codec::ZstdShuffled { level: l, .. } => t.push_str(&format!(
                "codec = \"zstd\"\nlevel = {l}\nshuffle = true   # tensor chunks byte-shuffled first (zarr-python reads it, TensorStore does not)\n"
            )),
            Codec::Gzip(l) => t.push_str(&format!("codec = \"gzip\"\nlevel = {l}\n")),
        }
        t.push_str(match self.dtype {
            StoredDtype::Keep => "dtype = \"keep\"\n",
            StoredDtype::Float16 => "dtype = \"float16\"   # lossy: floats rounded to float16\n",
            StoredDtype::Bfloat16 => "dtype = \"bfloat16\"   # lossy: floats rounded to bfloat16\n",
        });
        t.push_str(match self.index {
            Index::Files => "index = \"files\"\n",
            Index::Packed => "index = \"packed\"   # chunks packed in an OCDBT database\n",
        });
        t.push_str(&format!(
            "\n[io]\nconcurrency = {}   # chunks encoded and stored in flight\n",
            self.concurrency
        ));
        if self.chunk_bytes.is_none() {
            t.push_str("passthrough = \"read-write\"\n");
        }
        t.push_str(match self.read_mode {
            ReadMode::Cached => "read_mode = \"cached\"\n",
            ReadMode::Direct => "read_mode = \"direct\"   # loads bypass the page cache\n",
        });
        t
    }
}

/// The first round.
pub fn first_round() -> Vec<Candidate> {
    let mut out = vec![Candidate::passthrough()];
    for index in [Index::Files, Index::Packed] {
        for chunk in CHUNK_TARGETS {
            for codec in [Codec::None, Codec::Zstd(1)] {
                out.push(Candidate::chunked(chunk, codec, index));
            }
        }
    }
    out
}

/// The second round: variations of `best`. `narrowable`: the checkpoint has
/// f32 tensors (narrowing f16/bf16 to the other half type is not a saving).
pub fn second_round(best: &Candidate, allow_lossy: bool, narrowable: bool) -> Vec<Candidate> {
    let mut out = Vec::new();
    if best.chunk_bytes.is_none() {
        // Passthrough has no chunks to tune; the nearest chunked layout is
        // what lossy storage would use.
        if allow_lossy && narrowable {
            for dtype in [StoredDtype::Bfloat16, StoredDtype::Float16] {
                out.push(Candidate {
                    dtype,
                    ..Candidate::chunked(64 * MIB, Codec::None, Index::Files)
                });
            }
        }
        return out;
    }
    for concurrency in [1, 2, 8] {
        if concurrency != best.concurrency {
            out.push(Candidate {
                concurrency,
                ..best.clone()
            });
        }
    }
    let mode = match best.read_mode {
        ReadMode::Cached => ReadMode::Direct,
        ReadMode::Direct => ReadMode::Cached,
    };
    out.push(Candidate {
        read_mode: mode,
        ..best.clone()
    });
    if let Codec::Zstd(level) = best.codec {
        for l in [3, 9] {
            if l != level {
                out.push(Candidate {
                    codec: Codec::Zstd(l),
                    ..best.clone()
                });
            }
        }
    }
    if allow_lossy && narrowable {
        for dtype in [StoredDtype::Bfloat16, StoredDtype::Float16] {
            out.push(Candidate {
                dtype,
                ..best.clone()
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::MountConfig;

    #[test]
    fn every_candidate_is_a_config_the_mount_accepts() {
        let first = first_round();
        let mut all = first.clone();
        for c in &first {
            all.extend(second_round(c, true, true));
        }
        for c in &all {
            let cfg = MountConfig::parse(&c.toml(), &c.name())
                .unwrap_or_else(|e| panic!("{}: {e}\n{}", c.name(), c.toml()));
            assert_eq!(cfg.layout.codec, c.codec, "{}", c.name());
            assert_eq!(cfg.layout.index, c.index, "{}", c.name());
            assert_eq!(cfg.layout.dtype, c.dtype, "{}", c.name());
            assert_eq!(cfg.io.concurrency, c.concurrency, "{}", c.name());
            assert_eq!(cfg.io.read_mode, c.read_mode, "{}", c.name());
        }
    }

    #[test]
    fn names_are_unique_and_say_what_differs() {
        let first = first_round();
        let mut names: Vec<String> = first.iter().map(Candidate::name).collect();
        names.extend(
            second_round(&first[4], true, true)
                .iter()
                .map(Candidate::name),
        );
        let unique: std::collections::BTreeSet<&String> = names.iter().collect();
        assert_eq!(unique.len(), names.len(), "{names:?}");
        assert!(names.contains(&"8m-zstd1-files".to_string()), "{names:?}");
        assert!(
            names.contains(&"8m-zstd1-files-direct".to_string()),
            "{names:?}"
        );
    }

    #[test]
    fn lossy_variants_only_when_allowed_and_useful() {
        let best = &first_round()[1];
        assert!(second_round(best, false, true)
            .iter()
            .all(|c| !c.is_lossy()));
        assert!(second_round(best, true, false)
            .iter()
            .all(|c| !c.is_lossy()));
        assert_eq!(
            second_round(best, true, true)
                .iter()
                .filter(|c| c.is_lossy())
                .count(),
            2
        );
    }
}
