//! One regular file: its committed manifest, its current attributes and the
//! data state of its newest generation, and the commit that joins them.

use std::fs;
use std::sync::Arc;

use crate::error::{FsError, FsResult, IoContext};
use crate::format::{Format, Next, Planner};
use crate::layout::array::{parse_codec, ByteArraySpec};
use crate::layout::manifest::{
    parse_node, Attrs, FileLayout, FileManifest, LayoutKind, NodeDoc, ZARR_JSON,
};
use crate::pipeline::chunked::ChunkedData;
use crate::pipeline::format_data::FormatData;
use crate::pipeline::format_read::SegmentReader;
use crate::pipeline::format_write::FormatWriter;
use crate::pipeline::plain::PlainData;
use crate::pipeline::sealed::{ByteReader, SealedRead};
use crate::pipeline::Pipeline;
use crate::store::attrs_xattr;
use crate::store::durable::DurableStore;

use super::attr::now_ns;
use super::io_mode::{IoModes, PlainState};

enum Data {
    Plain(PlainData),
    Chunked(ChunkedData),
    /// A new generation's first bytes, held until their content says
    /// whether they are a checkpoint format.
    Sniff {
        gen: u64,
        buf: Vec<u8>,
    },
    Format(FormatData),
    /// A small file's committed bytes, from its manifest (the `inline`
    /// layout); a change turns them into a new generation's `Sniff`.
    Inline(Vec<u8>),
}

/// A regular file as the mount holds it: the committed manifest, the attributes and size as they
/// are now, and the data of its newest generation, loaded on first use.
pub struct FileNode {
    /// The file's backing directory (or its keys in the packed index).
    pub store: Arc<DurableStore>,
    /// The file's name when last saved, recorded in array attributes.
    pub name: String,
    /// The inode number in the mounted tree (not the manifest's stable
    /// `id`): the first part of this file's chunk cache keys.
    ino: u64,
    manifest: FileManifest,
    /// Attributes as they are now, committed or not.
    pub attrs: Attrs,
    /// Size as it is now, uncommitted writes included.
    pub size: u64,
    data: Option<Data>,
    /// Data changed since the last commit.
    dirty: bool,
    /// Attributes changed since the last commit.
    meta_dirty: bool,
    /// Attributes changed since the last commit are recorded beside the
    /// manifest (`attrs_xattr`) but not yet flushed: the next fsync does.
    attrs_unsynced: bool,
    /// Highest generation number used, committed or not.
    max_gen: u64,
    /// Open handles; the last close commits the file and drops its buffers.
    pub open_count: u32,
    /// Bumped by every change, so readers know when cached pages are stale.
    pub version: u64,
    /// Lock-free reader of the committed data of a `bytes` file, kept
    /// while nothing changes.
    sealed: Option<Arc<dyn SealedRead>>,
    /// How the kernel serves each of the file's opens.
    pub io: IoModes,
    /// The kernel's page cache of the file may be stale (passthrough or
    /// direct writes bypassed it): the next cached open invalidates it.
    pub page_cache_stale: bool,
    /// Length and mtime of the plain data file when last looked at, while
    /// passthrough writers change it behind the daemon's back.
    kernel_seen: Option<(u64, i64)>,
}

/// A new stable file id (also the file's key prefix in a packed database).
pub fn new_id() -> String {
    use std::time::{SystemTime, UNIX_EPOCH};
    let t = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("{:032x}", t ^ ((std::process::id() as u128) << 96))
}

/// Writes the array metadata of plain generation `gen` (`size` bytes, one
/// chunk) and makes it durable.
fn store_plain_metadata(store: &Arc<DurableStore>, gen: u64, size: u64) -> FsResult<()> {
    let spec = ByteArraySpec {
        chunk_bytes: size.max(1),
        codec: crate::config::Codec::None,
    };
    spec.store_metadata(store, &format!("/g{gen}"), size, Default::default())?;
    store
        .sync_local(&format!("g{gen}/zarr.json"))
        .ctx("fsync array metadata")
}

impl FileNode {
    /// A new empty file with id `id` (`new_id`) in the (already created)
    /// directory of `store`.
    pub fn create(
        store: Arc<DurableStore>,
        id: String,
        ino: u64,
        name: &str,
        attrs: Attrs,
    ) -> FsResult<Self> {
        let manifest = FileManifest {
            kind: "file".into(),
            id,
            packed: store.packed_prefix().is_some(),
            pending: true,
            generation: 0,
            commit: 0,
            size: 0,
            attrs,
            layout: FileLayout {
                kind: LayoutKind::Empty,
                chunk_bytes: 0,
                codec: "none".into(),
            },
            array: String::new(),
            chunks: Vec::new(),
            format: None,
            segments: Vec::new(),
            inline: None,
        };
        // Pending and not fsynced: until its first commit (or an fsync of
        // its directory) a crash removes it.
        manifest.commit(store.base(), false)?;
        Ok(FileNode {
            store,
            name: name.to_string(),
            ino,
            manifest,
            attrs,
            size: 0,
            data: None,
            dirty: false,
            meta_dirty: false,
            attrs_unsynced: false,
            max_gen: 0,
            open_count: 0,
            version: 0,
            sealed: None,
            io: IoModes::default(),
            page_cache_stale: false,
            kernel_seen: None,
        })
    }

    /// A committed file found in the backing store.
    pub fn load(
        store: Arc<DurableStore>,
        ino: u64,
        name: &str,
        mut manifest: FileManifest,
    ) -> Self {
        // Inline bytes are read again when the file is opened: a tree of
        // many small files must not hold them all.
        manifest.inline = None;
        let attrs = manifest.attrs;
        FileNode {
            store,
            name: name.to_string(),
            ino,
            size: manifest.size,
            max_gen: manifest.generation,
            manifest,
            attrs,
            data: None,
            dirty: false,
            meta_dirty: false,
            attrs_unsynced: false,
            open_count: 0,
            version: 0,
            sealed: None,
            io: IoModes::default(),
            page_cache_stale: false,
            kernel_seen: None,
        }
    }

    /// The last committed manifest.
    pub fn manifest(&self) -> &FileManifest {
        &self.manifest
    }

    /// Whether data or attributes changed since the last commit.
    pub fn is_dirty(&self) -> bool {
        self.dirty || self.meta_dirty
    }

    fn fresh_data(&mut self, pipe: &Pipeline) -> FsResult<Data> {
        self.max_gen += 1;
        let gen = self.max_gen;
        Ok(if pipe.plain_layout() {
            Data::Plain(PlainData::create(&self.store, gen)?)
        } else {
            Data::Sniff {
                gen,
                buf: Vec::new(),
            }
        })
    }

    fn committed_data(&self) -> FsResult<Data> {
        let m = &self.manifest;
        match &m.layout.kind {
            LayoutKind::Plain => Ok(Data::Plain(PlainData::open(
                &self.store,
                m.generation,
                m.size,
                m.chunks.first().copied().flatten(),
            )?)),
            LayoutKind::Bytes => {
                let spec = ByteArraySpec {
                    chunk_bytes: m.layout.chunk_bytes,
                    codec: parse_codec(&m.layout.codec)?,
                };
                Ok(Data::Chunked(ChunkedData::open(
                    &self.store,
                    self.ino,
                    spec,
                    m.generation,
                    m.size,
                    m.chunks.clone(),
                )?))
            }
            LayoutKind::Segments => Ok(Data::Format(FormatData::Sealed(Arc::new(
                SegmentReader::open(&self.store, self.ino, m)?,
            )))),
            LayoutKind::Inline => Ok(Data::Inline(self.stored_inline()?)),
            other @ (LayoutKind::Empty | LayoutKind::Unknown(_)) => Err(FsError::new(
                libc::EIO,
                format!("unknown layout `{other}` in manifest"),
            )),
        }
    }

    /// The committed inline bytes, read from the stored manifest (the
    /// packed index: the database's copy; else the file's directory) and
    /// checked against the manifest this node holds.
    fn stored_inline(&self) -> FsResult<Vec<u8>> {
        let m = &self.manifest;
        let matches = |doc: &[u8]| match parse_node(doc) {
            NodeDoc::File(stored)
                if stored.generation == m.generation && stored.chunks == m.chunks =>
            {
                Some(stored)
            }
            _ => None,
        };
        let from_store = self
            .store
            .read_values(&[ZARR_JSON], None, &ocdbt::multi_get::Allocate, false)
            .pop()
            .and_then(|r| r.ok().flatten())
            .and_then(|doc| matches(&doc));
        let stored = match from_store {
            Some(s) => s,
            None => {
                let doc = self
                    .store
                    .read_home_manifest()
                    .ctx("read inline manifest")?;
                matches(&doc).ok_or_else(|| {
                    FsError::new(
                        libc::EIO,
                        format!(
                            "inline bytes of generation {} are not in the stored manifest",
                            m.generation
                        ),
                    )
                })?
            }
        };
        stored.inline_bytes()
    }

    /// Before a change to an inline file: its bytes become the first bytes
    /// of a new generation, which the next commit stores as any other.
    fn thaw_inline(&mut self) {
        if let Some(Data::Inline(bytes)) = self.data.as_mut() {
            let buf = std::mem::take(bytes);
            self.max_gen += 1;
            self.data = Some(Data::Sniff {
                gen: self.max_gen,
                buf,
            });
        }
    }

    /// The file's bytes as they are now, when they are few enough to keep
    /// in the manifest. Never for the plain layout, which passthrough opens
    /// serve from its data file, nor for a checkpoint format, whose tensors
    /// are arrays other readers (TensorStore) open.
    fn inline_candidate(&mut self, pipe: &Arc<Pipeline>) -> FsResult<Option<Vec<u8>>> {
        if self.size > pipe.config.layout.inline_max || pipe.plain_layout() {
            return Ok(None);
        }
        match &self.data {
            Some(Data::Plain(_) | Data::Format(_)) => return Ok(None),
            Some(Data::Sniff { buf, .. }) => {
                let (_, format) = Planner::Sniff.next(0, buf, true);
                if format.is_some_and(|f| f != Format::Raw) {
                    return Ok(None);
                }
            }
            _ => {}
        }
        let bytes = self.read(pipe, 0, self.size as usize)?;
        if bytes.len() as u64 != self.size {
            return Err(FsError::new(libc::EIO, "short read of a small file"));
        }
        Ok(Some(bytes))
    }

    fn data(&mut self, pipe: &Pipeline) -> FsResult<&mut Data> {
        if self.data.is_none() {
            let d = if self.manifest.generation == 0 {
                self.fresh_data(pipe)?
            } else {
                self.committed_data()?
            };
            self.data = Some(d);
        }
        self.data
            .as_mut()
            .ok_or_else(|| FsError::new(libc::EIO, "file data unavailable"))
    }

    /// Ends sniffing: the held bytes become a checkpoint stream or a raw
    /// chunk stream. With `eof`, decides on what is there.
    fn resolve(&mut self, pipe: &Arc<Pipeline>, eof: bool) -> FsResult<()> {
        let Some(Data::Sniff { gen, buf }) = self.data.as_ref() else {
            return Ok(());
        };
        let (next, format) = Planner::Sniff.next(0, buf, eof);
        if matches!(next, Next::NeedMore) && !eof && buf.len() < crate::format::LOOKAHEAD_LIMIT {
            return Ok(());
        }
        let gen = *gen;
        let Some(Data::Sniff { buf, .. }) = self.data.take() else {
            return Ok(());
        };
        let data = match format {
            Some(f) if f != Format::Raw => {
                let mut t = pipe.profiler.stage("parse");
                t.add_bytes(buf.len() as u64);
                let mut w = FormatWriter::new(pipe, &self.store, gen, &self.name)?;
                w.push(&buf)?;
                Data::Format(FormatData::Writing(Box::new(w)))
            }
            _ => {
                let mut c = ChunkedData::create(&self.store, self.ino, pipe.byte_spec(), gen)?;
                c.append(pipe, &buf)?;
                Data::Chunked(c)
            }
        };
        self.data = Some(data);
        Ok(())
    }

    fn touch(&mut self) {
        self.sealed = None;
        let now = now_ns();
        self.attrs.mtime_ns = now;
        self.attrs.ctime_ns = now;
        self.dirty = true;
        self.version += 1;
    }

    /// Writes `data` at `offset`; never a short write.
    pub fn write(&mut self, pipe: &Arc<Pipeline>, offset: u64, data: &[u8]) -> FsResult<()> {
        self.refresh_from_kernel()?;
        if self.io.passthrough.is_some() {
            self.copy_aside(pipe)?;
        }
        let end = offset
            .checked_add(data.len() as u64)
            .filter(|e| *e <= i64::MAX as u64)
            .ok_or_else(|| FsError::new(libc::EFBIG, "write past the largest file size"))?;
        self.data(pipe)?;
        self.thaw_inline();
        let size = self.size;
        let store = self.store.clone();
        let mut max_gen = self.max_gen;
        let mut next = || {
            max_gen += 1;
            max_gen
        };
        let ino = self.ino;
        if let Data::Sniff { buf, .. } = self.data(pipe)? {
            if buf.len() as u64 == offset {
                buf.extend_from_slice(data);
                self.resolve(pipe, false)?;
                self.size = self.size.max(end);
                self.touch();
                return Ok(());
            }
            self.resolve(pipe, true)?;
        }
        match self.data(pipe)? {
            Data::Plain(p) => p.write(&store, offset, data, size, &mut next)?,
            Data::Chunked(c) => {
                if let Some(e) = c.take_error() {
                    return Err(e);
                }
                c.write(pipe, &store, offset, data, size, &mut next)?
            }
            Data::Format(f) => {
                if let Some(e) = f.take_error() {
                    return Err(e);
                }
                f.write(pipe, &store, ino, offset, data, size, &mut next)?
            }
            Data::Sniff { .. } | Data::Inline(_) => {
                return Err(FsError::new(libc::EIO, "unresolved file data"))
            }
        }
        self.max_gen = self.max_gen.max(max_gen);
        self.size = self.size.max(end);
        self.touch();
        Ok(())
    }

    /// Sets the size; growing reads as zeros.
    pub fn truncate(&mut self, pipe: &Arc<Pipeline>, new_size: u64) -> FsResult<()> {
        self.refresh_from_kernel()?;
        if self.io.passthrough.is_some() {
            self.copy_aside(pipe)?;
        }
        if new_size > i64::MAX as u64 {
            return Err(FsError::new(libc::EFBIG, "size past the largest file size"));
        }
        let shared = self.io.passthrough.is_some();
        if new_size == 0 && !shared {
            // Start over in a new generation; the committed one stays intact.
            if let Some(old) = self.data.take() {
                self.discard(old);
            }
            let fresh = self.fresh_data(pipe)?;
            self.data = Some(fresh);
        } else if new_size != self.size {
            self.data(pipe)?;
            self.thaw_inline();
            let size = self.size;
            let store = self.store.clone();
            let mut max_gen = self.max_gen;
            let mut next = || {
                max_gen += 1;
                max_gen
            };
            let ino = self.ino;
            if let Data::Sniff { buf, .. } = self.data(pipe)? {
                if new_size < buf.len() as u64 {
                    self.resolve(pipe, true)?;
                }
            }
            match self.data(pipe)? {
                Data::Plain(p) => p.truncate(&store, new_size, size, &mut next)?,
                Data::Chunked(c) => c.truncate(pipe, &store, new_size, size, &mut next)?,
                Data::Format(f) => f.truncate(pipe, &store, ino, new_size, size, &mut next)?,
                Data::Sniff { .. } | Data::Inline(_) => {}
            }
            self.max_gen = self.max_gen.max(max_gen);
        }
        self.size = new_size;
        self.touch();
        Ok(())
    }

    fn discard(&self, old: Data) {
        match old {
            Data::Plain(p) => {
                if p.gen != self.manifest.generation {
                    self.store.remove_generation(p.gen);
                }
            }
            Data::Chunked(mut c) => c.discard(&self.store),
            Data::Format(mut f) => f.discard(&self.store),
            Data::Sniff { gen, .. } => {
                self.store.remove_generation(gen);
            }
            Data::Inline(_) => {}
        }
    }

    /// The plain data file of the current generation, for kernel
    /// passthrough (None when the file is chunked).
    pub fn plain_state(
        &mut self,
        pipe: &Pipeline,
    ) -> FsResult<Option<(PlainState, Arc<fs::File>)>> {
        if !pipe.plain_layout() && self.manifest.layout.kind != LayoutKind::Plain {
            return Ok(None);
        }
        if self.manifest.generation != 0 && self.manifest.layout.kind != LayoutKind::Plain {
            return Ok(None);
        }
        match self.data(pipe)? {
            Data::Plain(p) => Ok(Some((
                PlainState {
                    gen: p.gen,
                    protected: p.is_protected(),
                },
                p.shared_file(),
            ))),
            _ => Ok(None),
        }
    }

    /// Passthrough opens share the data file from now on: every change
    /// stays in it.
    pub fn begin_shared(&mut self) {
        if let Some(Data::Plain(p)) = self.data.as_mut() {
            p.set_shared(true);
        }
    }

    /// The last passthrough open closed.
    pub fn end_shared(&mut self) {
        if let Some(Data::Plain(p)) = self.data.as_mut() {
            p.set_shared(false);
        }
    }

    /// A passthrough writer opened: the kernel writes the data file
    /// directly from now on.
    pub fn begin_kernel_writes(&mut self) {
        if let Some(Data::Plain(p)) = self.data.as_mut() {
            p.forget_crc();
        }
        self.kernel_seen = None;
        self.page_cache_stale = true;
        self.sealed = None;
    }

    /// Before the shared data file changes in place: when it holds the
    /// committed version, copy that to a new generation and publish it
    /// (same bytes, same checksum), so a crash during the change still
    /// leaves the whole committed version. The shared file becomes the
    /// uncommitted working copy.
    pub fn copy_aside(&mut self, pipe: &Pipeline) -> FsResult<()> {
        let Some(Data::Plain(p)) = self.data.as_mut() else {
            return Ok(());
        };
        if !p.is_protected() || self.manifest.generation != p.gen {
            return Ok(());
        }
        let _t = pipe.profiler.stage("copy_aside");
        self.max_gen += 1;
        let gen = self.max_gen;
        let size = p.copy_aside(&self.store, gen)?;
        store_plain_metadata(&self.store, gen, size)?;
        let mut next = self.manifest.clone();
        next.generation = gen;
        next.array = format!("g{gen}");
        next.commit += 1;
        // Replacing the manifest drops its attribute note: keep what it said.
        if let Some(noted) = attrs_xattr::read(self.store.base()) {
            next.attrs = noted;
        }
        next.commit(self.store.base(), true)?;
        self.attrs_unsynced = false;
        self.manifest = next;
        self.dirty = true;
        Ok(())
    }

    /// Takes in what passthrough writers did to the data file: its size
    /// and time, and marks the file changed when it is.
    pub fn refresh_from_kernel(&mut self) -> FsResult<()> {
        if !self.io.passthrough_writers() {
            return Ok(());
        }
        let Some(Data::Plain(p)) = self.data.as_mut() else {
            return Ok(());
        };
        let (len, mtime) = p.file_state().ctx("stat data file")?;
        if self.kernel_seen == Some((len, mtime)) {
            return Ok(());
        }
        p.forget_crc();
        self.kernel_seen = Some((len, mtime));
        self.size = len;
        self.attrs.mtime_ns = mtime;
        self.attrs.ctime_ns = mtime.max(self.attrs.ctime_ns);
        self.dirty = true;
        self.version += 1;
        Ok(())
    }

    /// For the plain layout: the data file and size, so a read can run
    /// without holding this file's lock (parallel read-ahead requests).
    pub fn plain_reader(&self) -> Option<(Arc<fs::File>, u64)> {
        match &self.data {
            Some(Data::Plain(p)) => Some((p.shared_file(), self.size)),
            _ => None,
        }
    }

    /// A reader of the committed data that needs no lock (its chunks do
    /// not change until the next write, which replaces the reader), when
    /// the file has no uncommitted change and is chunked.
    pub fn sealed_reader(
        &mut self,
        pipe: &Pipeline,
    ) -> FsResult<Option<(Arc<dyn SealedRead>, u64)>> {
        if self.manifest.generation == 0 || self.dirty {
            return Ok(None);
        }
        let size = self.size;
        if let Some(r) = &self.sealed {
            return Ok(Some((r.clone(), size)));
        }
        let reader: Arc<dyn SealedRead> = match self.manifest.layout.kind {
            LayoutKind::Segments => match self.data(pipe)? {
                Data::Format(FormatData::Sealed(r)) => r.clone(),
                _ => return Ok(None),
            },
            LayoutKind::Bytes => Arc::new(ByteReader::open(&self.store, self.ino, &self.manifest)?),
            _ => return Ok(None),
        };
        self.sealed = Some(reader.clone());
        Ok(Some((reader, size)))
    }

    /// Reads up to `len` bytes at `offset` (short only at end of file).
    pub fn read(&mut self, pipe: &Arc<Pipeline>, offset: u64, len: usize) -> FsResult<Vec<u8>> {
        if offset >= self.size {
            return Ok(Vec::new());
        }
        let len = len.min((self.size - offset) as usize);
        let mut out = vec![0u8; len];
        let size = self.size;
        let store = self.store.clone();
        let ino = self.ino;
        let mut max_gen = self.max_gen;
        let next = || {
            max_gen += 1;
            max_gen
        };
        match self.data(pipe)? {
            Data::Plain(p) => {
                let n = p.read(offset, &mut out)?;
                // Past the data file's end (a truncate-up hole) reads zeros.
                out[n..].fill(0);
            }
            Data::Chunked(c) => c.read(pipe, offset, &mut out, size)?,
            Data::Format(f) => f.read(pipe, &store, ino, offset, &mut out, size, next)?,
            Data::Sniff { buf, .. } | Data::Inline(buf) => {
                let have = buf.len().saturating_sub(offset as usize).min(out.len());
                if have > 0 {
                    out[..have].copy_from_slice(&buf[offset as usize..offset as usize + have]);
                }
            }
        }
        self.max_gen = self.max_gen.max(max_gen);
        Ok(out)
    }

    /// Commits data and attributes: after this returns, the file survives a
    /// crash as it is now.
    pub fn commit(&mut self, pipe: &Arc<Pipeline>) -> FsResult<()> {
        self.refresh_from_kernel()?;
        if !self.dirty && !self.meta_dirty && !self.manifest.pending {
            return Ok(());
        }
        let mut t = pipe.profiler.stage("commit");
        if self.dirty {
            t.add_bytes(self.size);
        }
        let mut next = self.manifest.clone();
        let old_gen = self.manifest.generation;
        // Whether the data needs the store's durability barrier before the
        // manifest may name it.
        let mut barrier = false;
        // A small file's bytes, going into the manifest.
        let mut inline = None;
        if self.dirty {
            inline = self.inline_candidate(pipe)?;
        }
        if let Some(bytes) = &inline {
            let mut t = pipe.profiler.stage("encode_inline");
            t.add_bytes(bytes.len() as u64);
            self.max_gen += 1;
            next.set_inline(self.max_gen, bytes);
            pipe.profiler.add_backend_write(bytes.len() as u64);
        } else if self.dirty {
            let size = self.size;
            let store = self.store.clone();
            if matches!(self.data, Some(Data::Sniff { .. })) {
                self.resolve(pipe, true)?;
            }
            let name = self.name.clone();
            match self.data(pipe)? {
                Data::Sniff { .. } | Data::Inline(_) => {
                    return Err(FsError::new(libc::EIO, "unresolved file data"))
                }
                Data::Format(f) => {
                    let flushed = f.flush(pipe, &store, size, &name)?.ok_or_else(|| {
                        FsError::new(libc::EIO, "nothing to commit for a sealed file")
                    })?;
                    barrier = true;
                    next.generation = flushed.gen;
                    next.layout = FileLayout {
                        kind: LayoutKind::Segments,
                        chunk_bytes: flushed.raw.chunk_bytes,
                        codec: flushed.raw.codec.to_string(),
                    };
                    next.chunks = flushed.raw_crcs;
                    next.segments = flushed.segments;
                    next.format = flushed.format;
                }
                Data::Plain(p) => {
                    let crc = {
                        let _t = pipe.profiler.stage("fsync");
                        p.sync(size)?
                    };
                    store_plain_metadata(&store, p.gen, size)?;
                    next.generation = p.gen;
                    next.segments = Vec::new();
                    next.format = None;
                    next.layout = FileLayout {
                        kind: LayoutKind::Plain,
                        chunk_bytes: size.max(1),
                        codec: "none".into(),
                    };
                    next.chunks = vec![Some(crc)];
                }
                Data::Chunked(c) => {
                    let crcs = c.flush(pipe, size)?;
                    c.spec
                        .store_metadata(&store, &c.gen_path(), size, Default::default())?;
                    barrier = true;
                    next.generation = c.gen;
                    next.segments = Vec::new();
                    next.format = None;
                    next.layout = FileLayout {
                        kind: LayoutKind::Bytes,
                        chunk_bytes: c.spec.chunk_bytes,
                        codec: c.spec.codec.to_string(),
                    };
                    next.chunks = crcs;
                }
            }
            next.array = format!("g{}", next.generation);
            next.size = size;
        } else if next.layout.kind == LayoutKind::Inline {
            // Attributes only: the bytes stay as committed.
            let bytes = match &self.data {
                Some(Data::Inline(b)) => b.clone(),
                _ => self.stored_inline()?,
            };
            next.set_inline(next.generation, &bytes);
        }
        next.commit += 1;
        next.pending = false;
        next.attrs = self.attrs;
        let sync = |store: &DurableStore| -> FsResult<()> {
            let _t = pipe.profiler.stage("fsync");
            store.barrier().ctx("sync backing filesystem")
        };
        let packed = self.store.packed_prefix().is_some();
        if packed && barrier {
            sync(&self.store)?;
        }
        let stage = pipe.profiler.stage("manifest_commit");
        if packed {
            let json = next.to_group_json()?;
            let _t = pipe.profiler.stage("fsync");
            self.store.seal(&json).ctx("commit packed index")?;
        }
        if barrier && !packed {
            // The manifest's temp copy is written before the barrier, which
            // then makes it durable with the data: one flush fewer.
            next.commit_with(self.store.base(), || sync(&self.store))?;
        } else {
            // A packed file's home shares the disk its database fills.
            let store = &self.store;
            store.with_room(&mut || next.commit(store.base(), true))?;
        }
        drop(stage);
        if let Some(bytes) = inline {
            if let Some(old) = self.data.take() {
                self.discard(old);
            }
            self.data = Some(Data::Inline(bytes));
        } else if self.dirty {
            match self.data.as_mut() {
                Some(Data::Chunked(c)) => c.committed(&self.store, next.size, next.chunks.clone()),
                Some(Data::Format(f)) => f.committed(&self.store, self.ino, &next)?,
                _ => {}
            }
        }
        if old_gen != 0 && old_gen != next.generation {
            self.store.remove_generation(old_gen);
        }
        self.manifest = next;
        // Held by `Data::Inline` while loaded; read again from the store.
        self.manifest.inline = None;
        self.dirty = false;
        self.meta_dirty = false;
        // The new manifest holds the attributes; the note went with the old.
        self.attrs_unsynced = false;
        self.sealed = None;
        if self.io.passthrough_writers() {
            // What the commit saw; a later change shows as a new state.
            if let Some(Data::Plain(p)) = self.data.as_ref() {
                self.kernel_seen = p.file_state().ok();
            }
        }
        Ok(())
    }

    /// fsync(2): commits, and makes attribute changes noted since the last
    /// commit durable too.
    pub fn fsync(&mut self, pipe: &Arc<Pipeline>) -> FsResult<()> {
        self.commit(pipe)?;
        if self.take_unsynced_attrs(pipe)? {
            let _t = pipe.profiler.stage("fsync");
            self.store.barrier().ctx("sync attribute change")?;
        }
        Ok(())
    }

    /// The loaded manifest carries a note of attribute changes: the next
    /// fsync or unmount settles it as one made in this mount.
    pub fn noted_attrs_found(&mut self) {
        self.attrs_unsynced = true;
    }

    /// Settles attribute changes noted since the last commit: the packed
    /// index commits them into the database (its versions hold them then);
    /// in the `files` index the note is the record, and this returns
    /// whether the caller must flush the backing for it (unmount: once for
    /// all files).
    pub fn take_unsynced_attrs(&mut self, pipe: &Arc<Pipeline>) -> FsResult<bool> {
        if !std::mem::take(&mut self.attrs_unsynced) {
            return Ok(false);
        }
        if self.store.packed_prefix().is_some() {
            self.meta_dirty = true;
            self.commit(pipe)?;
            return Ok(false);
        }
        Ok(true)
    }

    /// Records an attribute change (chmod, chown, utimens): with pending
    /// data it is committed with the data; on a committed file it is noted
    /// beside the manifest and made durable by the next fsync (or commit).
    pub fn set_attrs(&mut self, pipe: &Arc<Pipeline>, attrs: Attrs) -> FsResult<()> {
        self.attrs = attrs;
        // A pending file's attributes wait for its first commit: committing
        // them now would make a crash leave it behind, empty.
        if self.dirty || self.meta_dirty || self.manifest.pending {
            self.meta_dirty = true;
            return Ok(());
        }
        // Committed: noted beside the manifest (the packed index: its home
        // copy, which the live tree loads from), durable at the next fsync,
        // as on a local disk; a backing without user xattrs commits.
        match attrs_xattr::write(self.store.base(), &attrs) {
            Ok(()) => {
                self.attrs_unsynced = true;
                Ok(())
            }
            Err(e) if e.kind() == std::io::ErrorKind::Unsupported => {
                self.meta_dirty = true;
                self.commit(pipe)
            }
            Err(e) => Err(FsError::io(&e, "record attributes")),
        }
    }

    /// fsync of the file's directory: a pending file's name becomes
    /// durable with its last committed content (none: empty), as POSIX has
    /// it; its uncommitted data stays uncommitted.
    pub fn make_name_durable(&mut self) -> FsResult<()> {
        if !self.manifest.pending {
            return Ok(());
        }
        let mut next = self.manifest.clone();
        next.pending = false;
        next.commit(self.store.base(), true)?;
        self.manifest = next;
        Ok(())
    }

    /// Drops buffers of a file nobody has open.
    pub fn release_buffers(&mut self) {
        if !self.dirty {
            match self.data.as_mut() {
                Some(Data::Chunked(c)) => c.unload(),
                Some(Data::Plain(_) | Data::Inline(_)) => self.data = None,
                _ => {}
            }
        }
    }

    /// Throws away uncommitted data (the file was unlinked).
    pub fn abandon(&mut self) {
        if let Some(old) = self.data.take() {
            self.discard(old);
        }
        self.dirty = false;
        self.meta_dirty = false;
    }
}
