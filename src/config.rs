//! Mount config (TOML): the backing layout and I/O limits of one mount.
//!
//! Every key is validated up front; a bad value yields a message naming the
//! key and what it accepts, and `ckptfs mount` exits with status 2.

use std::fmt;
use std::path::Path;

use serde::Serialize;
use toml::Value;

/// The layout written when no `--config` is given: lossless, 8 MiB chunks,
/// no codec. Large chunks keep per-file overhead low (the seeds' lesson) and
/// an uncompressed chunk costs only a copy.
pub const DEFAULT_CONFIG: &str = include_str!("../mount-configs/default.toml");

const MIB: u64 = 1024 * 1024;

/// Default `layout.inline_max`: a file this small costs more in an array's
/// directories, documents and flush than in its manifest (base64, a third
/// larger, read again at every mount).
pub const DEFAULT_INLINE_MAX: u64 = 64 * 1024;

/// Largest `layout.inline_max`: every manifest is read at mount.
const INLINE_MAX_LIMIT: u64 = MIB;

/// How opaque bytes and tensors are split into chunks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Chunking {
    /// The file's bytes are kept as one plain file (one chunk, no codec).
    None,
    /// TensorStore-basic: `min(N, dim)` per dimension.
    PerDimMax(u64),
    /// T5X `choose_chunk_shape` with a target element count.
    TargetElements(u64),
    /// T5X `choose_chunk_shape` with a target in bytes.
    TargetBytes(u64),
}

/// Compression applied to every chunk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Codec {
    None,
    Gzip(u32),
    Zstd(i32),
    /// zstd at `level` after a byte shuffle of `elem`-byte elements (the
    /// codec of a tensor array when `layout.shuffle` is on).
    ZstdShuffled {
        level: i32,
        elem: u8,
    },
}

impl fmt::Display for Codec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Codec::None => write!(f, "none"),
            Codec::Gzip(l) => write!(f, "gzip({l})"),
            Codec::Zstd(l) => write!(f, "zstd({l})"),
            Codec::ZstdShuffled { level, elem } => write!(f, "shuffle({elem})+zstd({level})"),
        }
    }
}

/// Stored dtype of floating-point tensor payloads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StoredDtype {
    Keep,
    Float16,
    Bfloat16,
}

/// Where chunks live.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Index {
    /// One backing file per chunk.
    Files,
    /// An OCDBT-style packed database.
    Packed,
}

/// The `[layout]` table: how files are stored in the backing dir.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Layout {
    /// How tensors (and, with `none`, every file) are split into chunks.
    pub chunking: Chunking,
    /// Chunk size for opaque bytes (files of no recognised format). Tensor
    /// rules such as `per_dim_max` have no meaning for a byte stream, so it is
    /// its own key; `target_bytes`/`target_elements` set it when it is absent.
    pub raw_chunk_bytes: u64,
    /// Compressor of every chunk.
    pub codec: Codec,
    /// Element type tensors are stored in (a narrower float is lossy).
    pub dtype: StoredDtype,
    /// Whether chunks are files of their own or values in a packed database.
    pub index: Index,
    /// Byte-shuffle tensor chunks before zstd (`numcodecs.shuffle`): smaller
    /// and faster to decode for floats, but TensorStore cannot read it.
    pub shuffle: bool,
    /// Files of at most this many bytes keep their bytes inside their
    /// manifest (the `inline` layout; 0: never). Not with `chunking =
    /// "none"`, whose files stay plain data files for kernel passthrough.
    pub inline_max: u64,
}

impl Layout {
    /// The codec of an array of `elem_size`-byte elements: the configured
    /// one, shuffled where `shuffle` is on and an element has several bytes.
    pub fn codec_for(&self, elem_size: u64) -> Codec {
        match self.codec {
            Codec::Zstd(level) if self.shuffle && (2..=255).contains(&elem_size) => {
                Codec::ZstdShuffled {
                    level,
                    elem: elem_size as u8,
                }
            }
            c => c,
        }
    }
}

/// How the kernel serves read-only opens of chunked files.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ReadMode {
    /// Through the kernel's page cache (mmap and repeated reads are served
    /// from memory).
    Cached,
    /// Straight from the daemon into the reader's buffer: no page-cache
    /// copy for one-pass `read()` loads; mmap works, uncached.
    Direct,
}

/// How write-only opens of files the daemon stores are served.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum WriteMode {
    /// Through the kernel's page cache (each request's bytes are copied
    /// into cached pages first, which later reads of the file reuse).
    Cached,
    /// Straight from the writer's buffer to the daemon: one copy fewer and
    /// no page-cache pages to allocate, for saves that are not read back
    /// from memory.
    Direct,
}

/// The `[io]` table: concurrency, memory and kernel-facing limits.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Io {
    /// Chunks encoded and stored in flight.
    pub concurrency: usize,
    /// Bytes of in-flight chunk data, for the whole mount.
    pub memory_budget: u64,
    /// Bytes of decoded chunks kept for reads.
    pub cache: u64,
    /// First read-ahead window of a sequential reader, in chunks (0: off).
    pub readahead_chunks: usize,
    /// Largest read-ahead window of one reader, in bytes (0: off).
    pub prefetch_max_bytes: u64,
    /// Threads loading chunks ahead of readers.
    pub read_concurrency: usize,
    /// Kernel FUSE passthrough for plain-layout files.
    pub passthrough: crate::fs::io_mode::PassthroughUse,
    /// How read-only opens of chunked files are served.
    pub read_mode: ReadMode,
    /// How write-only opens of files the daemon stores are served.
    pub write_mode: WriteMode,
    /// Chunk files of 1–16 MiB are written with `O_DIRECT` (`io.chunk_writes
    /// = "direct"`) instead of through the backing's page cache.
    pub direct_chunk_writes: bool,
    /// FUSE request loops.
    pub fuse_threads: usize,
    /// Milliseconds the kernel may cache attributes and entries.
    pub attr_ttl_ms: u64,
    /// Kernel read-ahead of the mount, in KiB.
    pub kernel_readahead_kb: u64,
    /// Largest FUSE read/write request, in bytes.
    pub max_request_bytes: u64,
    /// The kernel's writeback cache: small writes gather in the page cache
    /// and reach the daemon as large requests at close, fsync or writeback.
    pub writeback_cache: bool,
}

/// Knobs of the packed index (`[packed]`; used when `layout.index = "packed"`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Packed {
    /// Database versions kept readable (`ckptfs mount --version N`).
    pub keep_versions: usize,
    /// A data file is closed and a new one started past this size.
    pub data_file_bytes: u64,
    /// Compact in the background once this share of the data is garbage
    /// (0 turns automatic compaction off).
    pub auto_compact_ratio: f64,
}

impl Default for Packed {
    fn default() -> Self {
        Packed {
            keep_versions: 4,
            data_file_bytes: 2 << 30,
            auto_compact_ratio: 0.5,
        }
    }
}

/// A mount's whole config: the `[layout]`, `[io]` and `[packed]` tables.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MountConfig {
    /// The config's name: its file's stem (`default` for the embedded one).
    pub name: String,
    /// The `[layout]` table.
    pub layout: Layout,
    /// The `[io]` table.
    pub io: Io,
    /// The `[packed]` table.
    pub packed: Packed,
    /// The `[store]` table: how an `s3://` mount reaches its object store.
    pub store: StoreSettings,
}

/// Object-store settings of an `s3://` mount. Each one given here wins over
/// its `AWS_*` environment variable; what is absent comes from there.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct StoreSettings {
    /// `AWS_ENDPOINT_URL`: the S3 endpoint (MinIO, R2, Garage, …).
    pub endpoint: Option<String>,
    /// `AWS_REGION`.
    pub region: Option<String>,
    /// `AWS_ALLOW_HTTP`: plain http to the endpoint.
    pub allow_http: Option<bool>,
    /// `AWS_ACCESS_KEY_ID`.
    pub access_key_id: Option<String>,
    /// `AWS_SECRET_ACCESS_KEY`; never written into profiles or results.
    #[serde(skip_serializing)]
    pub secret_access_key: Option<String>,
    /// Lifetime of the leases an `s3://` mount keeps on the store (see
    /// `store::lease`): how long a mount that died without a word holds
    /// off the deletion of old versions. Default 300 s.
    pub lease_seconds: Option<u64>,
}

impl StoreSettings {
    pub fn lease_ttl(&self) -> std::time::Duration {
        std::time::Duration::from_secs(self.lease_seconds.unwrap_or(300))
    }
}

/// A config that could not be accepted; the message names the key.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

fn err<T>(msg: impl Into<String>) -> Result<T, ConfigError> {
    Err(ConfigError(msg.into()))
}

impl MountConfig {
    /// Reads and validates a config file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError(format!("cannot read config {}: {e}", path.display())))?;
        let name = path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "custom".into());
        Self::parse(&text, &name)
            .map_err(|e| ConfigError(format!("config {}: {}", path.display(), e.0)))
    }

    /// The embedded default layout.
    pub fn default_config() -> Self {
        // The embedded file is validated by a unit test; fall back to the
        // same values written out should it ever fail.
        Self::parse(DEFAULT_CONFIG, "default").unwrap_or_else(|_| MountConfig {
            name: "default".into(),
            layout: Layout {
                chunking: Chunking::TargetBytes(8 * MIB),
                raw_chunk_bytes: 8 * MIB,
                codec: Codec::None,
                dtype: StoredDtype::Keep,
                index: Index::Files,
                shuffle: false,
                inline_max: DEFAULT_INLINE_MAX,
            },
            io: Io {
                concurrency: 4,
                memory_budget: 512 * MIB,
                cache: 256 * MIB,
                readahead_chunks: 4,
                prefetch_max_bytes: 128 * MIB,
                read_concurrency: 16,
                passthrough: crate::fs::io_mode::PassthroughUse::Read,
                read_mode: ReadMode::Cached,
                write_mode: WriteMode::Direct,
                direct_chunk_writes: true,
                fuse_threads: 4,
                attr_ttl_ms: 1000,
                kernel_readahead_kb: 8192,
                max_request_bytes: 4 << 20,
                writeback_cache: false,
            },
            packed: Packed::default(),
            store: StoreSettings::default(),
        })
    }

    /// Parses and validates TOML text.
    pub fn parse(text: &str, name: &str) -> Result<Self, ConfigError> {
        let root: toml::Table = text
            .parse()
            .map_err(|e: toml::de::Error| ConfigError(format!("invalid TOML: {}", e.message())))?;
        for key in root.keys() {
            if !["layout", "io", "packed", "store"].contains(&key.as_str()) {
                return err(format!(
                    "unknown section `{key}`; allowed sections: [layout], [io], [packed], [store]"
                ));
            }
        }
        let empty = toml::Table::new();
        let layout = table(&root, "layout")?.unwrap_or(&empty);
        let io = table(&root, "io")?.unwrap_or(&empty);
        let packed_t = table(&root, "packed")?.unwrap_or(&empty);
        let store_t = table(&root, "store")?.unwrap_or(&empty);
        check_keys(
            store_t,
            "store",
            &[
                "endpoint",
                "region",
                "allow_http",
                "access_key_id",
                "secret_access_key",
                "lease_seconds",
            ],
        )?;
        let store = StoreSettings {
            endpoint: opt_str(store_t, "store.endpoint")?,
            region: opt_str(store_t, "store.region")?,
            allow_http: opt_bool(store_t, "store.allow_http")?,
            access_key_id: opt_str(store_t, "store.access_key_id")?,
            secret_access_key: opt_str(store_t, "store.secret_access_key")?,
            lease_seconds: opt_u64(store_t, "store.lease_seconds", 4, 86_400)?,
        };
        if store.access_key_id.is_some() != store.secret_access_key.is_some() {
            return err(
                "store.access_key_id and store.secret_access_key go together (or leave both to AWS_*)",
            );
        }
        check_keys(
            packed_t,
            "packed",
            &["keep_versions", "data_file_bytes", "auto_compact_ratio"],
        )?;
        check_keys(
            layout,
            "layout",
            &[
                "chunking",
                "per_dim_max",
                "target_elements",
                "target_bytes",
                "raw_chunk_bytes",
                "codec",
                "level",
                "dtype",
                "index",
                "shuffle",
                "inline_max",
            ],
        )?;
        check_keys(
            io,
            "io",
            &[
                "concurrency",
                "memory_budget",
                "cache",
                "readahead_chunks",
                "prefetch_max_bytes",
                "read_concurrency",
                "passthrough",
                "read_mode",
                "write_mode",
                "chunk_writes",
                "fuse_threads",
                "attr_ttl_ms",
                "kernel_readahead_kb",
                "max_request_bytes",
                "writeback_cache",
            ],
        )?;

        let chunking = parse_chunking(layout)?;
        let codec = parse_codec(layout)?;
        let shuffle = opt_bool(layout, "layout.shuffle")?.unwrap_or(false);
        if shuffle && !matches!(codec, Codec::Zstd(_)) {
            return err(format!(
                "layout.shuffle = true needs layout.codec = \"zstd\" (the codec is {codec})"
            ));
        }
        let dtype = match opt_str(layout, "layout.dtype")?.as_deref() {
            None | Some("keep") => StoredDtype::Keep,
            Some("float16") => StoredDtype::Float16,
            Some("bfloat16") => StoredDtype::Bfloat16,
            Some(other) => {
                return err(format!(
                    "layout.dtype = \"{other}\" is not allowed; allowed values: \"keep\", \"float16\", \"bfloat16\""
                ))
            }
        };
        let index = match opt_str(layout, "layout.index")?.as_deref() {
            None | Some("files") => Index::Files,
            Some("packed") => Index::Packed,
            Some(other) => {
                return err(format!(
                "layout.index = \"{other}\" is not allowed; allowed values: \"files\", \"packed\""
            ))
            }
        };
        if index == Index::Packed && chunking == Chunking::None {
            return err(
                "layout.index = \"packed\" needs chunks: layout.chunking = \"none\" keeps each file as one plain backing file; choose a chunking rule or index = \"files\"",
            );
        }
        let defaults = Packed::default();
        let packed = Packed {
            keep_versions: opt_u64(packed_t, "packed.keep_versions", 1, 16)?
                .map_or(defaults.keep_versions, |v| v as usize),
            data_file_bytes: opt_u64(packed_t, "packed.data_file_bytes", 1 << 20, 1 << 40)?
                .unwrap_or(defaults.data_file_bytes),
            auto_compact_ratio: match packed_t.get("auto_compact_ratio") {
                None => defaults.auto_compact_ratio,
                Some(v) => {
                    let r = v.as_float().or_else(|| v.as_integer().map(|i| i as f64));
                    match r {
                        Some(r) if (0.0..1.0).contains(&r) => r,
                        _ => {
                            return err(format!(
                                "packed.auto_compact_ratio = {v} is not allowed; a number from 0 (off) up to, not including, 1"
                            ))
                        }
                    }
                }
            },
        };
        let raw_default = match chunking {
            Chunking::TargetBytes(n) | Chunking::TargetElements(n) => n.clamp(64 * 1024, 256 * MIB),
            _ => 8 * MIB,
        };
        let raw_chunk_bytes =
            opt_u64(layout, "layout.raw_chunk_bytes", 4096, 1 << 30)?.unwrap_or(raw_default);

        let inline_max = opt_u64(layout, "layout.inline_max", 0, INLINE_MAX_LIMIT)?
            .unwrap_or(DEFAULT_INLINE_MAX);
        let concurrency = opt_u64(io, "io.concurrency", 1, 1024)?.unwrap_or(4) as usize;
        let cache = opt_u64(io, "io.cache", 0, 1 << 40)?.unwrap_or(256 * MIB);
        let readahead_chunks = opt_u64(io, "io.readahead_chunks", 0, 256)?.unwrap_or(4) as usize;
        let prefetch_max_bytes =
            opt_u64(io, "io.prefetch_max_bytes", 0, 1 << 40)?.unwrap_or((cache / 2).min(256 * MIB));
        let read_concurrency = opt_u64(io, "io.read_concurrency", 1, 256)?.unwrap_or(16) as usize;
        use crate::fs::io_mode::PassthroughUse;
        let passthrough = match opt_str(io, "io.passthrough")?.as_deref() {
            None | Some("read") => PassthroughUse::Read,
            Some("read-write") => PassthroughUse::ReadWrite,
            Some("off") => PassthroughUse::Off,
            Some(other) => {
                return err(format!(
                    "io.passthrough = {other:?} is not allowed; allowed values: \"off\", \"read\", \"read-write\""
                ))
            }
        };
        let read_mode = match opt_str(io, "io.read_mode")?.as_deref() {
            None | Some("cached") => ReadMode::Cached,
            Some("direct") => ReadMode::Direct,
            Some(other) => {
                return err(format!(
                "io.read_mode = {other:?} is not allowed; allowed values: \"cached\", \"direct\""
            ))
            }
        };
        let fuse_threads = opt_u64(io, "io.fuse_threads", 1, 64)?.unwrap_or(4) as usize;
        let attr_ttl_ms = opt_u64(io, "io.attr_ttl_ms", 0, 3_600_000)?.unwrap_or(1000);
        let kernel_readahead_kb =
            opt_u64(io, "io.kernel_readahead_kb", 0, 1 << 20)?.unwrap_or(8192);
        let max_request_bytes =
            opt_u64(io, "io.max_request_bytes", 4096, 16 << 20)?.unwrap_or(4 << 20);
        let writeback_cache = opt_bool(io, "io.writeback_cache")?.unwrap_or(false);
        // The writeback cache gathers small writes in cached pages: writes
        // that bypass the cache would undo it.
        let write_mode = match opt_str(io, "io.write_mode")?.as_deref() {
            None if writeback_cache => WriteMode::Cached,
            None => WriteMode::Direct,
            Some("direct") if !writeback_cache => WriteMode::Direct,
            Some("cached") => WriteMode::Cached,
            Some("direct") => return err(
                "io.write_mode = \"direct\" bypasses io.writeback_cache = true; set one of them",
            ),
            Some(other) => {
                return err(format!(
                "io.write_mode = {other:?} is not allowed; allowed values: \"cached\", \"direct\""
            ))
            }
        };
        let direct_chunk_writes = match opt_str(io, "io.chunk_writes")?.as_deref() {
            None | Some("direct") => true,
            Some("cached") => false,
            Some(other) => {
                return err(format!(
                    "io.chunk_writes = {other:?} is not allowed; allowed values: \"cached\", \"direct\""
                ))
            }
        };
        let chunk_floor = if chunking == Chunking::None {
            0
        } else {
            raw_chunk_bytes
        };
        let memory_budget = opt_u64(io, "io.memory_budget", 1 << 20, 1 << 40)?
            .unwrap_or(512 * MIB.max(chunk_floor));
        if chunk_floor > memory_budget {
            return err(format!(
                "io.memory_budget = {memory_budget} is smaller than one chunk ({chunk_floor} bytes); raise io.memory_budget or lower layout.raw_chunk_bytes"
            ));
        }
        Ok(MountConfig {
            name: name.to_string(),
            layout: Layout {
                chunking,
                raw_chunk_bytes,
                codec,
                dtype,
                index,
                shuffle,
                inline_max,
            },
            io: Io {
                concurrency,
                memory_budget,
                cache,
                readahead_chunks,
                prefetch_max_bytes,
                read_concurrency,
                passthrough,
                read_mode,
                write_mode,
                direct_chunk_writes,
                fuse_threads,
                attr_ttl_ms,
                kernel_readahead_kb,
                max_request_bytes,
                writeback_cache,
            },
            packed,
            store,
        })
    }

    /// The effective config as TOML, for `.ckptfs/config` and profiles.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::to_value(self).unwrap_or(serde_json::Value::Null)
    }
}

fn table<'a>(root: &'a toml::Table, key: &str) -> Result<Option<&'a toml::Table>, ConfigError> {
    match root.get(key) {
        None => Ok(None),
        Some(Value::Table(t)) => Ok(Some(t)),
        Some(_) => err(format!("`{key}` must be a section ([{key}])")),
    }
}

fn check_keys(t: &toml::Table, section: &str, allowed: &[&str]) -> Result<(), ConfigError> {
    for key in t.keys() {
        if !allowed.contains(&key.as_str()) {
            return err(format!(
                "unknown key `{section}.{key}`; allowed keys in [{section}]: {}",
                allowed.join(", ")
            ));
        }
    }
    Ok(())
}

fn leaf<'a>(t: &'a toml::Table, dotted: &str) -> Option<&'a Value> {
    dotted.rsplit('.').next().and_then(|k| t.get(k))
}

fn opt_str(t: &toml::Table, dotted: &str) -> Result<Option<String>, ConfigError> {
    match leaf(t, dotted) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(v) => err(format!("{dotted} must be a string, got {v}")),
    }
}

fn opt_bool(t: &toml::Table, dotted: &str) -> Result<Option<bool>, ConfigError> {
    match leaf(t, dotted) {
        None => Ok(None),
        Some(Value::Boolean(b)) => Ok(Some(*b)),
        Some(v) => err(format!("{dotted} must be true or false, got {v}")),
    }
}

fn opt_u64(t: &toml::Table, dotted: &str, min: u64, max: u64) -> Result<Option<u64>, ConfigError> {
    match leaf(t, dotted) {
        None => Ok(None),
        Some(Value::Integer(i)) if *i >= min as i64 && (*i as u64) <= max => Ok(Some(*i as u64)),
        Some(v) => err(format!(
            "{dotted} = {v} is not allowed; allowed values: an integer from {min} to {max}"
        )),
    }
}

fn parse_chunking(layout: &toml::Table) -> Result<Chunking, ConfigError> {
    let rules: Vec<&str> = ["per_dim_max", "target_elements", "target_bytes"]
        .into_iter()
        .filter(|k| layout.contains_key(*k))
        .collect();
    let named = opt_str(layout, "layout.chunking")?;
    if rules.len() > 1 {
        return err(format!(
            "layout sets {} together; choose one chunking rule",
            rules.join(" and ")
        ));
    }
    let rule = rules.first().copied();
    match (named.as_deref(), rule) {
        (Some("none"), None) => Ok(Chunking::None),
        (Some("none"), Some(r)) => err(format!(
            "layout.chunking = \"none\" keeps each file as one plain file and cannot be combined with layout.{r}"
        )),
        (Some(other), _) if !["per_dim_max", "target_elements", "target_bytes"].contains(&other) => err(format!(
            "layout.chunking = \"{other}\" is not allowed; allowed values: \"none\", \"per_dim_max\", \"target_elements\", \"target_bytes\" (or set layout.per_dim_max / layout.target_elements / layout.target_bytes = N)"
        )),
        (Some(name), r) if r.is_some() && r != Some(name) => err(format!(
            "layout.chunking = \"{name}\" but layout.{} is set; set layout.{name} = N",
            r.unwrap_or_default()
        )),
        (Some(name), None) => err(format!(
            "layout.chunking = \"{name}\" needs layout.{name} = N"
        )),
        (_, Some("per_dim_max")) => Ok(Chunking::PerDimMax(
            opt_u64(layout, "layout.per_dim_max", 1, 1 << 32)?.unwrap_or(64),
        )),
        (_, Some("target_elements")) => Ok(Chunking::TargetElements(
            opt_u64(layout, "layout.target_elements", 1024, 1 << 34)?.unwrap_or(1 << 18),
        )),
        (_, Some(_)) => Ok(Chunking::TargetBytes(
            opt_u64(layout, "layout.target_bytes", 4096, 1 << 34)?.unwrap_or(64 * MIB),
        )),
        (None, None) => Ok(Chunking::TargetBytes(8 * MIB)),
    }
}

fn parse_codec(layout: &toml::Table) -> Result<Codec, ConfigError> {
    let codec = opt_str(layout, "layout.codec")?;
    let level = match layout.get("level") {
        None => None,
        Some(Value::Integer(i)) => Some(*i),
        Some(v) => return err(format!("layout.level must be an integer, got {v}")),
    };
    match codec.as_deref() {
        None | Some("none") => match level {
            None => Ok(Codec::None),
            Some(_) => err("layout.level is set but layout.codec is \"none\"; set layout.codec = \"gzip\" or \"zstd\""),
        },
        Some("gzip") => match level.unwrap_or(1) {
            l @ 0..=9 => Ok(Codec::Gzip(l as u32)),
            l => err(format!("layout.level = {l} is not allowed for gzip; allowed values: 0 to 9")),
        },
        Some("zstd") => match level.unwrap_or(1) {
            l @ -7..=22 => Ok(Codec::Zstd(l as i32)),
            l => err(format!("layout.level = {l} is not allowed for zstd; allowed values: -7 to 22")),
        },
        Some(other) => err(format!(
            "layout.codec = \"{other}\" is not allowed; allowed values: \"none\", \"gzip\", \"zstd\""
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_default_parses() {
        let c = MountConfig::parse(DEFAULT_CONFIG, "default").expect("default config");
        assert_eq!(c.layout.codec, Codec::None);
        assert_eq!(c.layout.index, Index::Files);
    }

    #[test]
    fn shipped_configs_parse() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("mount-configs");
        let mut n = 0;
        for entry in std::fs::read_dir(dir).expect("mount-configs") {
            let p = entry.expect("entry").path();
            if p.extension().is_some_and(|e| e == "toml") {
                match MountConfig::load(&p) {
                    Ok(_) => n += 1,
                    Err(e) => panic!("{}: {e}", p.display()),
                }
            }
        }
        assert!(n >= 2);
    }

    #[test]
    fn bad_codec_names_key_and_allowed_values() {
        let e = MountConfig::parse("[layout]\ncodec = \"lz5\"\n", "x").unwrap_err();
        assert!(e.0.contains("layout.codec"), "{e}");
        assert!(e.0.contains("\"zstd\""), "{e}");
    }

    #[test]
    fn unknown_key_is_refused() {
        let e = MountConfig::parse("[io]\nconcurency = 3\n", "x").unwrap_err();
        assert!(e.0.contains("io.concurency"), "{e}");
    }

    #[test]
    fn two_chunking_rules_are_refused() {
        let e = MountConfig::parse("[layout]\nper_dim_max = 64\ntarget_bytes = 100000\n", "x")
            .unwrap_err();
        assert!(e.0.contains("choose one"), "{e}");
    }

    #[test]
    fn gzip_level_range_is_checked() {
        let e = MountConfig::parse("[layout]\ncodec = \"gzip\"\nlevel = 12\n", "x").unwrap_err();
        assert!(e.0.contains("0 to 9"), "{e}");
        let c = MountConfig::parse("[layout]\ncodec = \"gzip\"\nlevel = 6\n", "x").expect("ok");
        assert_eq!(c.layout.codec, Codec::Gzip(6));
    }

    #[test]
    fn shuffle_needs_zstd_and_applies_to_wide_elements_only() {
        let e =
            MountConfig::parse("[layout]\ncodec = \"gzip\"\nshuffle = true\n", "x").unwrap_err();
        assert!(e.0.contains("layout.shuffle"), "{e}");
        let c = MountConfig::parse(
            "[layout]\ncodec = \"zstd\"\nlevel = 2\nshuffle = true\n",
            "x",
        )
        .expect("ok");
        assert_eq!(
            c.layout.codec_for(4),
            Codec::ZstdShuffled { level: 2, elem: 4 }
        );
        assert_eq!(c.layout.codec_for(1), Codec::Zstd(2));
        let off = MountConfig::parse("[layout]\ncodec = \"zstd\"\n", "x").expect("ok");
        assert_eq!(off.layout.codec_for(4), Codec::Zstd(1));
    }

    #[test]
    fn packed_index_parses_and_needs_chunks() {
        let c = MountConfig::parse(
            "[layout]\nper_dim_max = 64\nindex = \"packed\"\n[packed]\nkeep_versions = 8\nauto_compact_ratio = 0\n",
            "x",
        )
        .expect("packed");
        assert_eq!(c.layout.index, Index::Packed);
        assert_eq!(c.packed.keep_versions, 8);
        assert_eq!(c.packed.auto_compact_ratio, 0.0);
        let e = MountConfig::parse("[layout]\nchunking = \"none\"\nindex = \"packed\"\n", "x")
            .unwrap_err();
        assert!(e.0.contains("needs chunks"), "{e}");
        let e = MountConfig::parse("[packed]\nkeep_versions = 17\n", "x").unwrap_err();
        assert!(e.0.contains("packed.keep_versions"), "{e}");
        let e = MountConfig::parse("[packed]\nauto_compact_ratio = 1.5\n", "x").unwrap_err();
        assert!(e.0.contains("packed.auto_compact_ratio"), "{e}");
    }

    #[test]
    fn budget_must_hold_a_chunk() {
        let e = MountConfig::parse(
            "[layout]\nraw_chunk_bytes = 67108864\n[io]\nmemory_budget = 1048576\n",
            "x",
        )
        .unwrap_err();
        assert!(e.0.contains("io.memory_budget"), "{e}");
    }

    #[test]
    fn chunk_writes_are_direct_unless_cached_is_asked_for() {
        let io = |t: &str| MountConfig::parse(&format!("[io]\n{t}\n"), "x").map(|c| c.io);
        assert!(io("").expect("default").direct_chunk_writes);
        assert!(
            !io("chunk_writes = \"cached\"")
                .expect("cached")
                .direct_chunk_writes
        );
        assert!(
            io("chunk_writes = \"direct\"")
                .expect("direct")
                .direct_chunk_writes
        );
        let e = io("chunk_writes = \"fast\"").unwrap_err();
        assert!(e.0.contains("io.chunk_writes"), "{e}");
    }

    #[test]
    fn write_mode_is_direct_unless_the_writeback_cache_is_on() {
        let io = |t: &str| MountConfig::parse(&format!("[io]\n{t}\n"), "x").map(|c| c.io);
        assert_eq!(io("").expect("default").write_mode, WriteMode::Direct);
        let wb = io("writeback_cache = true").expect("wb");
        assert_eq!(wb.write_mode, WriteMode::Cached);
        assert_eq!(
            io("write_mode = \"cached\"").expect("cached").write_mode,
            WriteMode::Cached
        );
        let e = io("writeback_cache = true\nwrite_mode = \"direct\"").unwrap_err();
        assert!(e.0.contains("io.write_mode"), "{e}");
        let e = io("write_mode = \"fast\"").unwrap_err();
        assert!(e.0.contains("allowed values"), "{e}");
    }

    #[test]
    fn the_store_section_is_read_and_its_secret_never_written_out() {
        let c = MountConfig::parse(
            "[store]\nendpoint = \"http://127.0.0.1:3900\"\nregion = \"garage\"\nallow_http = true\naccess_key_id = \"GK1\"\nsecret_access_key = \"hush\"\n",
            "s",
        )
        .expect("store");
        assert_eq!(c.store.endpoint.as_deref(), Some("http://127.0.0.1:3900"));
        assert_eq!(c.store.allow_http, Some(true));
        assert_eq!(c.store.secret_access_key.as_deref(), Some("hush"));
        let json = c.to_json().to_string();
        assert!(json.contains("GK1") && !json.contains("hush"), "{json}");
        let e = MountConfig::parse("[store]\nbucket = \"b\"\n", "s").unwrap_err();
        assert!(e.0.contains("store.bucket"), "{e}");
        let e = MountConfig::parse("[store]\naccess_key_id = \"GK1\"\n", "s").unwrap_err();
        assert!(e.0.contains("go together"), "{e}");
        assert_eq!(
            MountConfig::default_config().store,
            StoreSettings::default()
        );
    }
}
