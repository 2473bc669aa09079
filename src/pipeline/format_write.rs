//! Writes a recognised checkpoint, as its bytes arrive, into one Zarr array
//! per tensor plus one byte array for everything else.
//!
//! A tensor's bytes arrive in row-major order, so a chunk that spans less
//! than a full row is only complete once `chunk[0]` whole rows are in: the
//! assembler fills one such slab (reserved from the memory budget), cuts it
//! into chunks, narrows their dtype if the policy says so, and hands each to
//! the worker pool. Memory per tensor in flight is one slab plus the chunks
//! being encoded, whatever the tensor's size.

use std::collections::HashMap;
use std::sync::Arc;

use crate::config::{Chunking, Codec, StoredDtype};
use crate::error::{FsError, FsResult};
use crate::format::{Format, Next, Planner, TensorSpec, LOOKAHEAD_LIMIT};
use crate::layout::array::ByteArraySpec;
use crate::layout::dtype::narrow_into;
use crate::layout::manifest::SegmentMeta;
use crate::layout::tensor::{array_name, chunk_for, TensorLayout};
use crate::store::durable::DurableStore;

use super::budget::Reservation;
use super::chunk_store::{self, chunk_key};
use super::inflight::Inflight;
use super::{crc_with_zeros, Pipeline};

/// Chunks of at most this many bytes bound for the packed index are stored
/// in batches of about [`BATCH_BYTES`].
const BATCH_CHUNK_MAX: usize = 256 * 1024;
const BATCH_BYTES: usize = 4 << 20;

/// Steps `coords` to the next chunk of a slab (an odometer over dimensions
/// 1..n); `false` after the last.
fn next_chunk(grid: &[u64], coords: &mut [u64]) -> bool {
    for d in (1..grid.len()).rev() {
        coords[d] += 1;
        if coords[d] < grid[d] {
            return true;
        }
        coords[d] = 0;
    }
    false
}

/// Checksum keys: raw chunks use their index, tensor chunks this offset.
pub fn tensor_key(segment: usize, linear: u64) -> u64 {
    ((segment as u64 + 1) << 40) | linear
}

struct RawAppender {
    chunk: u64,
    buf: Vec<u8>,
    index: u64,
    total: u64,
    reservation: Option<Reservation>,
}

struct TensorAsm {
    segment: usize,
    layout: TensorLayout,
    left: u64,
    slab: Vec<u8>,
    slab_index: u64,
    row_bytes: u64,
    rows: u64,
    reservation: Option<Reservation>,
    max_err: f64,
    codec: Codec,
    /// CRC-32 of the bytes the file will read back (lossy only): torch zip
    /// records carry it in their descriptor and the central directory.
    zip_crc: Option<crc32fast::Hasher>,
}

enum Current {
    Undecided,
    Raw(Option<u64>),
    Tensor(Box<TensorAsm>),
}

/// Parses a checkpoint stream as it is written, storing each tensor in its own array and everything
/// else in the `raw` array, chunks encoded by the worker pool.
pub struct FormatWriter {
    pipe: Arc<Pipeline>,
    store: Arc<DurableStore>,
    /// The generation the arrays are written into.
    pub gen: u64,
    planner: Planner,
    /// The format the sniffer recognised, once it has.
    pub format: Option<Format>,
    /// File bytes assigned to a segment so far.
    pos: u64,
    look: Vec<u8>,
    current: Current,
    raw: RawAppender,
    /// The stretches assigned so far, in file order.
    pub segments: Vec<SegmentMeta>,
    inflight: Arc<Inflight>,
    file_name: String,
    /// CRC to write into the next data descriptor, and by record name for
    /// the central directory (lossy torch zip).
    pending_crc: Option<(String, u32)>,
    zip_crcs: HashMap<String, u32>,
    /// The central directory, held until the end to patch its CRCs.
    tail: Option<Vec<u8>>,
}

impl FormatWriter {
    /// A writer for generation `gen` of the file called `file_name` (recorded in array attributes),
    /// sniffing the format from the first bytes.
    pub fn new(
        pipe: &Arc<Pipeline>,
        store: &Arc<DurableStore>,
        gen: u64,
        file_name: &str,
    ) -> FsResult<Self> {
        let spec = pipe.byte_spec();
        Ok(FormatWriter {
            pipe: pipe.clone(),
            store: store.clone(),
            gen,
            planner: Planner::Sniff,
            format: None,
            pos: 0,
            look: Vec::new(),
            current: Current::Undecided,
            raw: RawAppender {
                chunk: spec.chunk_bytes,
                buf: Vec::new(),
                index: 0,
                total: 0,
                reservation: None,
            },
            segments: Vec::new(),
            inflight: Arc::new(Inflight::default()),
            file_name: file_name.to_string(),
            pending_crc: None,
            zip_crcs: HashMap::new(),
            tail: None,
        })
    }

    /// Bytes received so far (the stream's end).
    pub fn end(&self) -> u64 {
        self.pos + self.look.len() as u64
    }

    /// The first error a background chunk store reported, if any.
    pub fn take_error(&self) -> Option<FsError> {
        self.inflight.take_error()
    }

    /// Takes the next bytes of the stream (they continue at `end()`).
    pub fn push(&mut self, mut data: &[u8]) -> FsResult<()> {
        while !data.is_empty() {
            match &mut self.current {
                Current::Undecided => {
                    self.look.extend_from_slice(data);
                    data = &[];
                    self.decide(false)?;
                }
                Current::Raw(left) => {
                    let n = left.map_or(data.len() as u64, |l| l.min(data.len() as u64)) as usize;
                    let seg_len = n as u64;
                    let to_end = left.is_none();
                    if let Some(l) = left {
                        *l -= seg_len;
                    }
                    let done = *left == Some(0);
                    if to_end && !self.zip_crcs.is_empty() {
                        // The central directory: patched and stored at the end.
                        self.tail
                            .get_or_insert_with(Vec::new)
                            .extend_from_slice(&data[..n]);
                    } else if let Some((name, crc)) = self.pending_crc.take() {
                        let mut d = data[..n].to_vec();
                        let at = if d.starts_with(b"PK\x07\x08") { 4 } else { 0 };
                        if d.len() >= at + 4 {
                            d[at..at + 4].copy_from_slice(&crc.to_le_bytes());
                            self.zip_crcs.insert(name, crc);
                        }
                        self.raw_push(&d);
                    } else {
                        self.raw_push(&data[..n]);
                    }
                    self.extend_raw_segment(seg_len);
                    self.pos += seg_len;
                    data = &data[n..];
                    if done {
                        self.current = Current::Undecided;
                        let look = std::mem::take(&mut self.look);
                        if !look.is_empty() {
                            self.push(&look)?;
                        }
                    }
                }
                Current::Tensor(asm) => {
                    let n = asm.left.min(data.len() as u64) as usize;
                    let part = &data[..n];
                    data = &data[n..];
                    self.pos += n as u64;
                    self.tensor_push(part)?;
                }
            }
        }
        Ok(())
    }

    /// Asks the planner about the buffered bytes until it needs more.
    fn decide(&mut self, eof: bool) -> FsResult<()> {
        while matches!(self.current, Current::Undecided) {
            if self.look.is_empty() && !eof {
                return Ok(());
            }
            let (next, format) = self.planner.next(self.pos, &self.look, eof);
            if format.is_some() && self.format.is_none() {
                self.format = format;
            }
            let next = match next {
                Next::NeedMore if self.look.len() > LOOKAHEAD_LIMIT || eof => Next::Rest,
                n => n,
            };
            match next {
                Next::NeedMore => return Ok(()),
                Next::Raw(n) => self.current = Current::Raw(Some(n)),
                Next::Rest => self.current = Current::Raw(None),
                Next::Tensor(spec) => self.start_tensor(spec)?,
            }
            let look = std::mem::take(&mut self.look);
            if !look.is_empty() {
                self.push(&look)?;
            }
            if eof && self.look.is_empty() {
                return Ok(());
            }
        }
        Ok(())
    }

    fn extend_raw_segment(&mut self, n: u64) {
        let raw_end = self.raw.total;
        match self.segments.last_mut() {
            Some(SegmentMeta::Raw { start, len, .. }) if *start + *len == self.pos => *len += n,
            _ => self.segments.push(SegmentMeta::Raw {
                start: self.pos,
                len: n,
                raw_offset: raw_end - n,
            }),
        }
    }

    fn raw_push(&mut self, mut data: &[u8]) {
        self.raw.total += data.len() as u64;
        while !data.is_empty() {
            if self.raw.reservation.is_none() {
                self.raw.reservation = Some(self.pipe.budget.reserve(self.raw.chunk));
                if self.raw.buf.capacity() == 0 {
                    self.raw.buf = self.pipe.buffers.take_empty(self.raw.chunk as usize);
                }
            }
            let take = (self.raw.chunk as usize - self.raw.buf.len()).min(data.len());
            self.raw.buf.extend_from_slice(&data[..take]);
            data = &data[take..];
            if self.raw.buf.len() as u64 == self.raw.chunk {
                self.raw_submit();
            }
        }
    }

    fn raw_submit(&mut self) {
        let mut buf = std::mem::take(&mut self.raw.buf);
        let valid = buf.len();
        buf.resize(self.raw.chunk as usize, 0);
        let index = self.raw.index;
        self.raw.index += 1;
        let reservation = self.raw.reservation.take();
        let key = chunk_key(&format!("g{}/raw", self.gen), &[index]);
        let codec = self.pipe.config.layout.codec;
        let store = self.store.clone();
        let inflight = self.inflight.clone();
        let pipe = self.pipe.clone();
        inflight.start();
        self.pipe.pool.spawn(move || {
            let crc = crc32c::crc32c(&buf[..valid]);
            let r = {
                let mut t = pipe.profiler.stage("encode_store");
                t.add_bytes(buf.len() as u64);
                chunk_store::store(&pipe, &store, &key, codec, buf)
            };
            if let Ok(n) = &r {
                pipe.profiler.add_backend_write(*n);
            }
            drop(reservation);
            inflight.finish(index, r.map(|_| crc));
        });
    }

    fn start_tensor(&mut self, spec: TensorSpec) -> FsResult<()> {
        let cfg = &self.pipe.config;
        let numel: u64 = spec.shape.iter().product();
        let stored = spec.dtype.stored(cfg.layout.dtype);
        let chunk = chunk_for(&spec.shape, spec.dtype, &cfg.layout.chunking);
        let row_bytes = if spec.shape.len() > 1 {
            spec.shape[1..].iter().product::<u64>() * spec.dtype.size()
        } else {
            spec.dtype.size()
        };
        let slab = chunk.first().copied().unwrap_or(1) * row_bytes;
        let chunk_bytes = chunk.iter().product::<u64>() * stored.size();
        // Kept as raw bytes: scalars, empty tensors, types without an array
        // type, and slabs too large for the memory budget.
        if spec.shape.is_empty()
            || numel == 0
            || spec.dtype.zarr().is_none()
            || slab * 2 + chunk_bytes > cfg.io.memory_budget
            || matches!(cfg.layout.chunking, Chunking::None)
        {
            self.current = Current::Raw(Some(spec.len));
            return Ok(());
        }
        let index = self.segments.len();
        let layout = TensorLayout {
            path: format!("/g{}/{}", self.gen, array_name(index, &spec.name)),
            dtype: spec.dtype,
            stored,
            shape: spec.shape.clone(),
            chunk,
            codec: cfg.layout.codec_for(stored.size()).to_string(),
        };
        self.segments.push(SegmentMeta::Tensor {
            start: spec.start,
            len: spec.len,
            name: spec.name.clone(),
            layout: layout.clone(),
            crcs: Vec::new(),
            max_abs_error: None,
        });
        self.current = Current::Tensor(Box::new(TensorAsm {
            segment: index,
            rows: spec.shape[0],
            layout,
            left: spec.len,
            slab: Vec::new(),
            slab_index: 0,
            row_bytes,
            reservation: None,
            max_err: 0.0,
            codec: cfg.layout.codec_for(stored.size()),
            zip_crc: (stored != spec.dtype && self.format == Some(Format::TorchZip))
                .then(crc32fast::Hasher::new),
        }));
        Ok(())
    }

    fn tensor_push(&mut self, mut data: &[u8]) -> FsResult<()> {
        let Current::Tensor(asm) = &mut self.current else {
            return Ok(());
        };
        while !data.is_empty() {
            let rows_here =
                asm.layout.chunk[0].min(asm.rows - asm.slab_index * asm.layout.chunk[0]);
            let cap = (rows_here * asm.row_bytes) as usize;
            if asm.reservation.is_none() {
                let _t = self.pipe.profiler.stage("budget_wait");
                asm.reservation = Some(self.pipe.budget.reserve(cap as u64));
                if asm.slab.capacity() < cap {
                    asm.slab = self.pipe.buffers.take_empty(cap);
                }
            }
            let take = (cap - asm.slab.len()).min(data.len());
            asm.slab.extend_from_slice(&data[..take]);
            asm.left -= take as u64;
            data = &data[take..];
            if asm.slab.len() == cap {
                Self::flush_slab(&self.pipe, &self.store, &self.inflight, asm);
            }
        }
        if asm.left == 0 {
            self.end_tensor();
        }
        Ok(())
    }

    /// Cuts the slab into chunks and queues them.
    fn flush_slab(
        pipe: &Arc<Pipeline>,
        store: &Arc<DurableStore>,
        inflight: &Arc<Inflight>,
        asm: &mut TensorAsm,
    ) {
        if asm.slab.is_empty() {
            return;
        }
        let rows_here = asm.layout.chunk[0].min(asm.rows - asm.slab_index * asm.layout.chunk[0]);
        asm.slab.resize((rows_here * asm.row_bytes) as usize, 0);
        let slab = std::mem::take(&mut asm.slab);
        let stored = if asm.layout.stored != asm.layout.dtype {
            let mut t = pipe.profiler.stage("cast");
            t.add_bytes(slab.len() as u64);
            let elems = slab.len() / asm.layout.dtype.size() as usize;
            let mut narrowed = pipe.buffers.take(elems * asm.layout.item());
            let err = narrow_into(
                &slab,
                asm.layout.dtype,
                asm.layout.stored,
                &mut narrowed,
                asm.zip_crc.as_mut(),
            );
            asm.max_err = asm.max_err.max(err);
            pipe.buffers.give(slab);
            narrowed
        } else {
            slab
        };
        let grid = asm.layout.grid();
        let mut coords = vec![0u64; grid.len()];
        coords[0] = asm.slab_index;
        let chunk_bytes = (asm.layout.chunk_elems() * asm.layout.item() as u64) as usize;
        // Small chunks bound for the packed index go in batches: one task
        // and one append to its data file per batch, not per chunk.
        let batch = if store.packed_prefix().is_some() && chunk_bytes <= BATCH_CHUNK_MAX {
            (BATCH_BYTES / chunk_bytes.max(1)).max(1)
        } else {
            1
        };
        let mut keys: Vec<(u64, String)> = Vec::with_capacity(batch);
        let mut buf = pipe.buffers.take(chunk_bytes * batch);
        loop {
            let i = keys.len();
            asm.layout.cut_into(
                &stored,
                rows_here,
                &coords,
                &mut buf[i * chunk_bytes..(i + 1) * chunk_bytes],
            );
            keys.push((
                tensor_key(asm.segment, asm.layout.linear(&coords)),
                chunk_key(&asm.layout.path, &coords),
            ));
            let last = !next_chunk(&grid, &mut coords);
            if keys.len() == batch || last {
                let full = std::mem::replace(
                    &mut buf,
                    if last {
                        Vec::new()
                    } else {
                        pipe.buffers.take(chunk_bytes * batch)
                    },
                );
                let done = std::mem::replace(&mut keys, Vec::with_capacity(batch));
                Self::spawn_store(pipe, store, inflight, asm.codec, full, done, chunk_bytes);
            }
            if last {
                break;
            }
        }
        asm.slab_index += 1;
        asm.reservation = None;
        pipe.buffers.give(stored);
    }

    /// Stores the chunks `keys` (tensor key, store key), laid side by side
    /// in `buf`, on the pool; each chunk's CRC goes to `inflight`.
    fn spawn_store(
        pipe: &Arc<Pipeline>,
        store: &Arc<DurableStore>,
        inflight: &Arc<Inflight>,
        codec: Codec,
        buf: Vec<u8>,
        keys: Vec<(u64, String)>,
        chunk_bytes: usize,
    ) {
        let bytes = (chunk_bytes * keys.len()) as u64;
        let reservation = pipe.budget.reserve(bytes);
        let (store, infl, p) = (store.clone(), inflight.clone(), pipe.clone());
        for _ in &keys {
            infl.start();
        }
        pipe.pool.spawn(move || {
            let mut t = p.profiler.stage("encode_store");
            t.add_bytes(bytes);
            let used = &buf[..bytes as usize];
            let crcs: Vec<u32> = used
                .chunks(chunk_bytes.max(1))
                .map(crc32c::crc32c)
                .collect();
            let r = if let ([(_, key)], true) = (keys.as_slice(), buf.len() == chunk_bytes) {
                chunk_store::store(&p, &store, key, codec, buf).map(|n| vec![n])
            } else {
                let store_keys: Vec<String> = keys.iter().map(|(_, k)| k.clone()).collect();
                let r = chunk_store::store_many(&p, &store, &store_keys, codec, used, chunk_bytes);
                p.buffers.give(buf);
                r
            };
            drop(t);
            match r {
                Ok(sizes) => {
                    p.profiler.add_backend_write(sizes.iter().sum());
                    for ((key, _), crc) in keys.iter().zip(crcs) {
                        infl.finish(*key, Ok(crc));
                    }
                }
                Err(e) => {
                    for (key, _) in &keys {
                        infl.finish(*key, Err(e.clone()));
                    }
                }
            }
            drop(reservation);
        });
    }

    fn end_tensor(&mut self) {
        if let Current::Tensor(asm) = &mut self.current {
            Self::flush_slab(&self.pipe, &self.store, &self.inflight, asm);
            if let Some(h) = asm.zip_crc.take() {
                if let Some(SegmentMeta::Tensor { name, .. }) = self.segments.get(asm.segment) {
                    self.pending_crc = Some((name.clone(), h.finalize()));
                }
            }
            let err = asm.max_err;
            let lossy = asm.layout.stored != asm.layout.dtype;
            if let Some(SegmentMeta::Tensor { max_abs_error, .. }) =
                self.segments.get_mut(asm.segment)
            {
                *max_abs_error = lossy.then_some(err);
            }
        }
        self.current = Current::Undecided;
    }

    /// Stores everything received; afterwards the writer takes no bytes.
    /// Returns the raw array's chunk checksums.
    pub fn finish(&mut self) -> FsResult<Vec<Option<u32>>> {
        if matches!(self.current, Current::Undecided) {
            self.decide(true)?;
        }
        if let Current::Tensor(asm) = &mut self.current {
            // A tensor cut short by the end of the data: the rest is zeros.
            Self::flush_slab(&self.pipe, &self.store, &self.inflight, asm);
        }
        if matches!(self.current, Current::Tensor(_)) {
            self.end_tensor();
        }
        if let Some(mut tail) = self.tail.take() {
            patch_central_directory(&mut tail, &self.zip_crcs);
            self.raw_push(&tail);
        }
        if self.raw.index == 0 && self.raw.total < self.raw.chunk {
            // All raw bytes fit in one chunk: size it to them rather than
            // padding headers of a few KiB to a whole chunk.
            self.raw.chunk = self.raw.total.max(1);
        }
        if !self.raw.buf.is_empty() {
            self.raw_submit();
        }
        self.inflight.wait()?;
        let crcs = self.inflight.drain_crcs();
        for seg in self.segments.iter_mut() {
            if let SegmentMeta::Tensor {
                layout, crcs: out, ..
            } = seg
            {
                let _ = layout;
                out.clear();
            }
        }
        let mut raw_crcs = Vec::new();
        let raw_chunks = self.raw.total.div_ceil(self.raw.chunk);
        for i in 0..raw_chunks {
            let valid = self.raw.total.min((i + 1) * self.raw.chunk) - i * self.raw.chunk;
            raw_crcs.push(Some(
                crcs.get(&i)
                    .copied()
                    .unwrap_or_else(|| crc_with_zeros(0, &[], valid)),
            ));
        }
        let zero = crc32c::crc32c(&[]);
        for (index, seg) in self.segments.iter_mut().enumerate() {
            if let SegmentMeta::Tensor {
                layout, crcs: out, ..
            } = seg
            {
                let n: u64 = layout.grid().iter().product();
                let bytes = layout.chunk_elems() * layout.item() as u64;
                let zeros = crc_with_zeros(0, &[], bytes);
                *out = (0..n)
                    .map(|l| crcs.get(&tensor_key(index, l)).copied().unwrap_or(zeros))
                    .collect();
                let _ = zero;
            }
        }
        self.current = Current::Raw(Some(0));
        Ok(raw_crcs)
    }

    /// Encoding of the generation's raw byte array.
    pub fn raw_spec(&self) -> ByteArraySpec {
        ByteArraySpec {
            chunk_bytes: self.raw.chunk,
            codec: self.pipe.config.layout.codec,
        }
    }

    /// Writes the Zarr metadata of every array of the generation.
    pub fn store_metadata(&self) -> FsResult<()> {
        let spec = self.raw_spec();
        let mut attrs = serde_json::Map::new();
        attrs.insert(
            "ckptfs".into(),
            serde_json::json!({ "file": self.file_name, "role": "non-tensor bytes of the file, in file order" }),
        );
        spec.store_metadata(
            &self.store,
            &format!("/g{}/raw", self.gen),
            self.raw.total,
            attrs,
        )?;
        for seg in &self.segments {
            if let SegmentMeta::Tensor {
                start,
                len,
                name,
                layout,
                max_abs_error,
                ..
            } = seg
            {
                let mut attrs = serde_json::Map::new();
                attrs.insert(
                    "ckptfs".into(),
                    serde_json::json!({
                        "file": self.file_name,
                        "tensor": name,
                        "byte_range": [start, start + len],
                        "dtype": layout.dtype.name(),
                        "stored_dtype": layout.stored.name(),
                        "max_abs_error": max_abs_error,
                    }),
                );
                layout
                    .build(&self.store, attrs)?
                    .store_metadata()
                    .map_err(|e| {
                        crate::error::from_storage(&e, format!("store {}/zarr.json", layout.path))
                    })?;
            }
        }
        let group = serde_json::json!({
            "zarr_format": 3,
            "node_type": "group",
            "attributes": { "ckptfs": { "file": self.file_name, "format": self.format.map(|f| f.name()) } },
        });
        let key = zarrs_storage::StoreKey::new(format!("g{}/zarr.json", self.gen))
            .map_err(|e| FsError::new(libc::EIO, format!("generation group key: {e}")))?;
        zarrs_storage::WritableStorageTraits::set(
            &*self.store,
            &key,
            zarrs_storage::Bytes::from(group.to_string()),
        )
        .map_err(|e| crate::error::from_storage(&e, "write generation group"))
    }
}

/// Writes the recomputed CRC-32 of narrowed records into their central
/// directory entries, so `zipfile` and the `zip` crate accept the file.
fn patch_central_directory(tail: &mut [u8], crcs: &HashMap<String, u32>) {
    let mut i = 0;
    while i + 46 <= tail.len() && &tail[i..i + 4] == b"PK\x01\x02" {
        let n = u16::from_le_bytes([tail[i + 28], tail[i + 29]]) as usize;
        let m = u16::from_le_bytes([tail[i + 30], tail[i + 31]]) as usize;
        let k = u16::from_le_bytes([tail[i + 32], tail[i + 33]]) as usize;
        if i + 46 + n > tail.len() {
            break;
        }
        let name = String::from_utf8_lossy(&tail[i + 46..i + 46 + n]).into_owned();
        if let Some(crc) = crcs.get(&name) {
            tail[i + 16..i + 20].copy_from_slice(&crc.to_le_bytes());
        }
        i += 46 + n + m + k;
    }
}

/// Whether a mount's stored-dtype policy narrows anything.
pub fn is_lossy(policy: StoredDtype) -> bool {
    policy != StoredDtype::Keep
}
