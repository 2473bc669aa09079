//! The chunked layout: a generation is a 1-D `uint8` Zarr array of
//! fixed-size chunks, each encoded by the configured codec.
//!
//! Two modes:
//! - **Stream**: writes arrive at the end of the data. They fill one chunk
//!   buffer (reserved from the memory budget); a full chunk goes to the
//!   worker pool to be encoded and stored while the writer carries on.
//!   Appending to a committed file continues its array in place: chunks past
//!   the committed size are invisible to the committed version, and the one
//!   partial chunk is replaced atomically with the same leading bytes.
//! - **Staged**: any other write (holes, overwrites, truncation below the
//!   end) moves the content into a sparse staging file; the commit encodes
//!   it into a new generation. Slower, and byte-exact for any pattern.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::error::{FsError, FsResult};
use crate::layout::array::{retrieve_chunk, ByteArray, ByteArraySpec};
use crate::store::durable::DurableStore;

use super::budget::Reservation;
use super::chunk_store::{self, chunk_key};
use super::inflight::Inflight;
use super::staging::Staging;
use super::{crc_with_zeros, Pipeline};

struct ChunkBuf {
    index: u64,
    data: Vec<u8>,
    reservation: Reservation,
}

struct Stream {
    /// Bytes `[0, end)` hold data; `[end, size)` read as zeros.
    end: u64,
    buf: Option<ChunkBuf>,
    inflight: Arc<Inflight>,
    /// Checksums of chunks stored by this stream since the last commit.
    stored: BTreeMap<u64, u32>,
}

enum Mode {
    Stream(Stream),
    Staged(Staging),
}

/// A file's generation in the chunked (`bytes`) layout: appends stream into chunks encoded by the
/// worker pool, any other change goes through a staging file.
pub struct ChunkedData {
    /// The file's inode number: the first part of its cache keys.
    ino: u64,
    store: Arc<DurableStore>,
    /// Chunk length and codec of the generation being written or read.
    pub spec: ByteArraySpec,
    /// The generation this data is in: the committed one until a change
    /// needs a new one (appends continue it in place).
    pub gen: u64,
    array: Arc<ByteArray>,
    /// Whether `gen` is the committed generation (its array is live).
    committed_gen: bool,
    committed_size: u64,
    committed_crcs: Vec<Option<u32>>,
    mode: Mode,
}

/// A chunk read plan for `read`: where the chunk's bytes come from.
/// Whether `file` holds data (not only a hole) in `start..end`. When the
/// filesystem cannot tell (no SEEK_DATA), it says yes.
fn chunk_count(size: u64, chunk: u64) -> u64 {
    size.div_ceil(chunk)
}

impl ChunkedData {
    fn new_stream(end: u64) -> Mode {
        Mode::Stream(Stream {
            end,
            buf: None,
            inflight: Arc::new(Inflight::default()),
            stored: BTreeMap::new(),
        })
    }

    /// A new, empty generation.
    pub fn create(
        store: &Arc<DurableStore>,
        ino: u64,
        spec: ByteArraySpec,
        gen: u64,
    ) -> FsResult<Self> {
        let array = Arc::new(spec.handle(store, &format!("/g{gen}"))?);
        Ok(ChunkedData {
            ino,
            store: store.clone(),
            spec,
            gen,
            array,
            committed_gen: false,
            committed_size: 0,
            committed_crcs: Vec::new(),
            mode: Self::new_stream(0),
        })
    }

    /// The committed generation of a file.
    pub fn open(
        store: &Arc<DurableStore>,
        ino: u64,
        spec: ByteArraySpec,
        gen: u64,
        size: u64,
        crcs: Vec<Option<u32>>,
    ) -> FsResult<Self> {
        let array = Arc::new(spec.handle(store, &format!("/g{gen}"))?);
        Ok(ChunkedData {
            ino,
            store: store.clone(),
            spec,
            gen,
            array,
            committed_gen: true,
            committed_size: size,
            committed_crcs: crcs,
            mode: Self::new_stream(size),
        })
    }

    fn chunk(&self) -> u64 {
        self.spec.chunk_bytes
    }

    /// Whether a write at `offset` continues the stream.
    pub fn is_append(&self, offset: u64) -> bool {
        matches!(&self.mode, Mode::Stream(s) if s.end == offset)
    }

    /// The first error of a chunk stored in the background, if any.
    pub fn take_error(&self) -> Option<FsError> {
        match &self.mode {
            Mode::Stream(s) => s.inflight.take_error(),
            Mode::Staged(_) => None,
        }
    }

    /// Reads and checks one stored chunk through the cache.
    fn load_chunk(&self, pipe: &Pipeline, index: u64) -> FsResult<bytes::Bytes> {
        let key = (self.ino, self.gen, index);
        let array = self.array.clone();
        let expect = self.expected_crc(index);
        pipe.cache.get_or_load(key, move || {
            let mut t = pipe.profiler.stage("decode");
            let data = retrieve_chunk(&array, index)?;
            t.add_bytes(data.len() as u64);
            check_crc(&data, expect, index)?;
            Ok(bytes::Bytes::from(data))
        })
    }

    /// The checksum and valid length a committed chunk must match.
    fn expected_crc(&self, index: u64) -> Option<(u32, usize)> {
        if !self.committed_gen {
            return None;
        }
        let crc = (*self.committed_crcs.get(index as usize)?)?;
        let start = index * self.chunk();
        let valid = self
            .committed_size
            .min(start + self.chunk())
            .checked_sub(start)?;
        Some((crc, valid as usize))
    }

    /// Appends at the end of the stream.
    pub fn append(&mut self, pipe: &Arc<Pipeline>, data: &[u8]) -> FsResult<()> {
        let chunk = self.chunk();
        let mut pos = 0;
        while pos < data.len() {
            let Mode::Stream(s) = &mut self.mode else {
                return Err(FsError::new(libc::EIO, "append outside a stream"));
            };
            if s.buf.is_none() {
                let index = s.end / chunk;
                let reservation = {
                    let _t = pipe.profiler.stage("budget_wait");
                    pipe.budget.reserve(chunk)
                };
                let mut buf = pipe.buffers.take_empty(chunk as usize);
                let keep = (s.end - index * chunk) as usize;
                if keep > 0 {
                    // Resuming inside a stored chunk: start from its bytes.
                    let existing = retrieve_chunk(&self.array, index)?;
                    buf.extend_from_slice(&existing[..keep.min(existing.len())]);
                    buf.resize(keep, 0);
                    pipe.cache.remove(&(self.ino, self.gen, index));
                }
                s.buf = Some(ChunkBuf {
                    index,
                    data: buf,
                    reservation,
                });
            }
            let Some(buf) = s.buf.as_mut() else { break };
            let take = (chunk as usize - buf.data.len()).min(data.len() - pos);
            buf.data.extend_from_slice(&data[pos..pos + take]);
            s.end += take as u64;
            pos += take;
            if buf.data.len() == chunk as usize {
                if let Some(full) = s.buf.take() {
                    self.submit(pipe, full, chunk as usize);
                }
            }
        }
        Ok(())
    }

    /// Sends a chunk to the worker pool. `valid` bytes are file data; the
    /// rest is zero padding of the last chunk.
    fn submit(&mut self, pipe: &Arc<Pipeline>, mut buf: ChunkBuf, valid: usize) {
        let Mode::Stream(s) = &mut self.mode else {
            return;
        };
        buf.data.resize(self.spec.chunk_bytes as usize, 0);
        let inflight = s.inflight.clone();
        inflight.start();
        let store = self.store.clone();
        let key = chunk_key(&self.gen_path(), &[buf.index]);
        let codec = self.spec.codec;
        let pipe2 = pipe.clone();
        pipe.pool.spawn(move || {
            let ChunkBuf {
                index,
                data,
                reservation,
            } = buf;
            let crc = crc32c::crc32c(&data[..valid]);
            let result = {
                let mut t = pipe2.profiler.stage("encode_store");
                t.add_bytes(valid as u64);
                chunk_store::store(&pipe2, &store, &key, codec, data)
            };
            if let Ok(n) = &result {
                pipe2.profiler.add_backend_write(*n);
            }
            let result = result.map(|_| ());
            drop(reservation);
            inflight.finish(index, result.map(|()| crc));
        });
    }

    /// Moves the content into a staging file (new generation `new_gen`).
    fn stage(
        &mut self,
        pipe: &Pipeline,
        store: &Arc<DurableStore>,
        size: u64,
        new_gen: u64,
    ) -> FsResult<()> {
        let (end, partial) = {
            let Mode::Stream(s) = &self.mode else {
                return Ok(());
            };
            s.inflight.wait()?;
            (s.end, s.buf.as_ref().map(|b| (b.index, b.data.clone())))
        };
        let staging = Staging::create(store, new_gen)?;
        let chunk = self.chunk();
        for index in 0..chunk_count(end, chunk) {
            let start = index * chunk;
            let valid = (end.min(start + chunk) - start) as usize;
            if let Some((_, data)) = partial.as_ref().filter(|(i, _)| *i == index) {
                staging.write_at(&data[..valid.min(data.len())], start)?;
            } else {
                let data = self.load_chunk(pipe, index)?;
                if data.iter().any(|&b| b != 0) {
                    staging.write_at(&data[..valid], start)?;
                }
            }
        }
        staging.set_len(size)?;
        if self.is_short(pipe) {
            self.spec = pipe.byte_spec();
        }
        if !self.committed_gen {
            store.remove_generation(self.gen);
        }
        self.gen = new_gen;
        self.array = Arc::new(self.spec.handle(store, &format!("/g{new_gen}"))?);
        self.committed_gen = false;
        self.mode = Mode::Staged(staging);
        Ok(())
    }

    /// Writes anywhere: appends stream, anything else goes through staging.
    #[allow(clippy::too_many_arguments)]
    pub fn write(
        &mut self,
        pipe: &Arc<Pipeline>,
        store: &Arc<DurableStore>,
        offset: u64,
        data: &[u8],
        size: u64,
        new_gen: impl FnOnce() -> u64,
    ) -> FsResult<()> {
        if self.is_append(offset) {
            if self.is_short(pipe) {
                self.widen(pipe, store, new_gen())?;
            }
            return self.append(pipe, data);
        }
        if matches!(self.mode, Mode::Stream(_)) {
            self.stage(pipe, store, size, new_gen())?;
        }
        match &self.mode {
            Mode::Staged(st) => st.write_at(data, offset),
            Mode::Stream(_) => Err(FsError::new(libc::EIO, "staging failed")),
        }
    }

    /// Sets the size: growing (or cutting only zeros past the data) needs no data; cutting data
    /// stages the file first.
    pub fn truncate(
        &mut self,
        pipe: &Arc<Pipeline>,
        store: &Arc<DurableStore>,
        new_size: u64,
        size: u64,
        new_gen: impl FnOnce() -> u64,
    ) -> FsResult<()> {
        if let Mode::Stream(s) = &self.mode {
            if new_size >= s.end {
                // Growing (or shrinking within the zero tail) needs no data;
                // past a short file's one chunk, the chunk size widens first.
                if new_size > self.chunk() && self.is_short(pipe) {
                    self.widen(pipe, store, new_gen())?;
                }
                return Ok(());
            }
            self.stage(pipe, store, size, new_gen())?;
        }
        match &self.mode {
            Mode::Staged(st) => st.set_len(new_size),
            Mode::Stream(_) => Ok(()),
        }
    }

    /// Fills `out` with the bytes at `offset` of a file of `size` bytes: from the chunk being
    /// filled, the stored chunks (through the cache), or the staging file; zeros past the data.
    pub fn read(
        &self,
        pipe: &Arc<Pipeline>,
        offset: u64,
        out: &mut [u8],
        size: u64,
    ) -> FsResult<()> {
        match &self.mode {
            Mode::Staged(st) => st.read_at(offset, out),
            Mode::Stream(s) => {
                let chunk = self.chunk();
                let mut pos = 0usize;
                while pos < out.len() {
                    let at = offset + pos as u64;
                    let index = at / chunk;
                    let within = (at - index * chunk) as usize;
                    let n = (chunk as usize - within).min(out.len() - pos);
                    let dst = &mut out[pos..pos + n];
                    if at >= s.end || at >= size {
                        dst.fill(0);
                    } else if let Some(b) = s.buf.as_ref().filter(|b| b.index == index) {
                        let avail = b.data.len().saturating_sub(within).min(n);
                        dst[..avail].copy_from_slice(&b.data[within..within + avail]);
                        dst[avail..].fill(0);
                    } else {
                        if !s.inflight.is_idle() {
                            s.inflight.wait()?;
                        }
                        let data = self.load_chunk(pipe, index)?;
                        dst.copy_from_slice(&data[within..within + n]);
                        // Bytes past the stream end inside this chunk are zeros.
                        let valid_end = s.end.min(size);
                        if at + n as u64 > valid_end {
                            let keep = (valid_end - at) as usize;
                            dst[keep..].fill(0);
                        }
                    }
                    pos += n;
                }
                Ok(())
            }
        }
    }

    /// Encodes the staging file into its generation.
    fn encode_staged(&mut self, pipe: &Arc<Pipeline>, size: u64) -> FsResult<Vec<Option<u32>>> {
        let Mode::Staged(st) = &self.mode else {
            return Ok(Vec::new());
        };
        let chunk = self.chunk();
        let inflight = Arc::new(Inflight::default());
        for index in 0..chunk_count(size, chunk) {
            let start = index * chunk;
            let valid = (size.min(start + chunk) - start) as usize;
            // A hole of the staging file is a chunk never written: leave it
            // absent (it reads as zeros) instead of reading and storing zeros,
            // so a write far past the end costs what was written.
            if !st.has_data(start, start + valid as u64) {
                continue;
            }
            let reservation = pipe.budget.reserve(chunk);
            let mut data = pipe.buffers.take(chunk as usize);
            data[valid..].fill(0);
            // Past the staging file's end: zeros (the buffer is recycled).
            st.read_at(start, &mut data[..valid])?;
            inflight.start();
            let store = self.store.clone();
            let key = chunk_key(&self.gen_path(), &[index]);
            let codec = self.spec.codec;
            let infl = inflight.clone();
            let p = pipe.clone();
            pipe.pool.spawn(move || {
                let crc = crc32c::crc32c(&data[..valid]);
                let result = {
                    let mut t = p.profiler.stage("encode_store");
                    t.add_bytes(valid as u64);
                    chunk_store::store(&p, &store, &key, codec, data)
                };
                if let Ok(n) = &result {
                    p.profiler.add_backend_write(*n);
                }
                let result = result.map(|_| ());
                drop(reservation);
                infl.finish(index, result.map(|()| crc));
            });
        }
        inflight.wait()?;
        let crcs = inflight.drain_crcs();
        Ok((0..chunk_count(size, chunk))
            .map(|i| crcs.get(&i).copied())
            .collect())
    }

    /// Stores everything written so far as generation `self.gen` and returns
    /// the chunk checksums for the manifest. The caller writes the array
    /// metadata, makes it durable and commits the manifest, then calls
    /// [`ChunkedData::committed`].
    pub fn flush(&mut self, pipe: &Arc<Pipeline>, size: u64) -> FsResult<Vec<Option<u32>>> {
        self.fit_to_size(size)?;
        let chunk = self.chunk();
        if matches!(self.mode, Mode::Staged(_)) {
            return self.encode_staged(pipe, size);
        }
        let Mode::Stream(s) = &mut self.mode else {
            return Ok(Vec::new());
        };
        // Store the partial chunk (kept in memory: appends may continue it).
        let partial = s.buf.as_ref().map(|b| (b.index, b.data.clone()));
        let end = s.end;
        if let Some((index, data)) = &partial {
            let mut t = pipe.profiler.stage("encode_store");
            t.add_bytes(data.len() as u64);
            let key = chunk_key(&self.gen_path(), &[*index]);
            let n = chunk_store::store_partial(
                pipe,
                &self.store,
                &key,
                self.spec.codec,
                data,
                chunk as usize,
            )?;
            pipe.profiler.add_backend_write(n);
        }
        let Mode::Stream(s) = &mut self.mode else {
            return Ok(Vec::new());
        };
        s.inflight.wait()?;
        s.stored.extend(s.inflight.drain_crcs());
        let mut crcs = Vec::new();
        for index in 0..chunk_count(size, chunk) {
            let start = index * chunk;
            let valid = size.min(start + chunk) - start;
            let crc = if let Some((pi, data)) = partial.as_ref().filter(|(pi, _)| *pi == index) {
                let _ = pi;
                let have = (data.len() as u64).min(valid) as usize;
                crc_with_zeros(0, &data[..have], valid - have as u64)
            } else if start >= end {
                crc_with_zeros(0, &[], valid)
            } else if let Some(c) = s.stored.get(&index) {
                *c
            } else {
                // Unchanged since the last commit; may have grown by zeros.
                // Shrunk (into the zero tail past the stream's end) it needs
                // a checksum of fewer bytes: computed from the chunk.
                let old_valid = self.committed_size.min(start + chunk).saturating_sub(start);
                match self.committed_crcs.get(index as usize).copied().flatten() {
                    Some(c) if self.committed_gen && valid >= old_valid => {
                        crc32c_zero_extend(c, valid - old_valid)
                    }
                    _ => {
                        let data = retrieve_chunk(&self.array, index)?;
                        crc32c::crc32c(&data[..valid as usize])
                    }
                }
            };
            crcs.push(Some(crc));
        }
        Ok(crcs)
    }

    /// Records that generation `self.gen` is now the committed one.
    pub fn committed(&mut self, store: &Arc<DurableStore>, size: u64, crcs: Vec<Option<u32>>) {
        self.committed_gen = true;
        self.committed_size = size;
        self.committed_crcs = crcs;
        match &mut self.mode {
            Mode::Stream(s) => s.stored.clear(),
            Mode::Staged(st) => {
                st.remove(store);
                self.mode = Self::new_stream(size);
            }
        }
    }

    /// Frees the chunk buffer of an idle file (its bytes are stored).
    pub fn unload(&mut self) {
        if let Mode::Stream(s) = &mut self.mode {
            if s.inflight.is_idle() {
                s.buf = None;
            }
        }
    }

    /// Removes the uncommitted generation's files (staging and chunks).
    pub fn discard(&mut self, store: &DurableStore) {
        if let Mode::Stream(s) = &self.mode {
            let _ = s.inflight.wait();
        }
        if let Mode::Staged(st) = &self.mode {
            st.remove(store);
        }
        if !self.committed_gen {
            store.remove_generation(self.gen);
        }
    }

    /// A new generation smaller than one chunk is stored as one chunk of
    /// its own length: a 700-byte `config.json` costs 700 bytes, not a
    /// chunk padded with zeros (real bytes on the packed index, whose values
    /// are not sparse; a whole buffer to compress otherwise). The array stays
    /// a plain Zarr array, whose one chunk is the file.
    fn fit_to_size(&mut self, size: u64) -> FsResult<()> {
        if self.committed_gen || size == 0 || size >= self.chunk() {
            return Ok(());
        }
        if let Mode::Stream(s) = &self.mode {
            // Nothing may be stored yet under the wider chunk size.
            let only_first = s.buf.as_ref().is_none_or(|b| b.index == 0);
            if !s.stored.is_empty() || !s.inflight.is_idle() || !only_first {
                return Ok(());
            }
        }
        self.spec.chunk_bytes = size;
        self.array = Arc::new(self.spec.handle(&self.store, &self.gen_path())?);
        Ok(())
    }

    /// Whether the file is one chunk smaller than the configured chunk size
    /// (stored short by [`Self::fit_to_size`]): growing it must not go on
    /// in chunks of that size.
    fn is_short(&self, pipe: &Pipeline) -> bool {
        let end = match &self.mode {
            Mode::Stream(s) => s.end,
            Mode::Staged(_) => return false,
        };
        self.spec.chunk_bytes < pipe.byte_spec().chunk_bytes
            && end.max(self.committed_size) <= self.spec.chunk_bytes
    }

    /// A short file appended to: its bytes become the first chunk buffer of
    /// a new generation with the configured chunk size, and it streams on
    /// like any other file (no staging: it is less than one chunk).
    fn widen(
        &mut self,
        pipe: &Arc<Pipeline>,
        store: &Arc<DurableStore>,
        new_gen: u64,
    ) -> FsResult<()> {
        let (end, buf) = match &mut self.mode {
            Mode::Stream(s) => {
                s.inflight.wait()?;
                (s.end, s.buf.take())
            }
            Mode::Staged(_) => return Ok(()),
        };
        let wide = pipe.byte_spec();
        let keep = end as usize;
        let mut data = pipe.buffers.take_empty(wide.chunk_bytes as usize);
        match buf {
            Some(b) if b.index == 0 => data.extend_from_slice(&b.data[..keep.min(b.data.len())]),
            _ if keep > 0 => {
                let old = self.load_chunk(pipe, 0)?;
                data.extend_from_slice(&old[..keep.min(old.len())]);
            }
            _ => {}
        }
        data.resize(keep, 0);
        let reservation = {
            let _t = pipe.profiler.stage("budget_wait");
            pipe.budget.reserve(wide.chunk_bytes)
        };
        if !self.committed_gen {
            store.remove_generation(self.gen);
        }
        self.spec = wide;
        self.gen = new_gen;
        self.array = Arc::new(self.spec.handle(store, &self.gen_path())?);
        self.committed_gen = false;
        let mut stream = Stream {
            end,
            buf: None,
            inflight: Arc::new(Inflight::default()),
            stored: BTreeMap::new(),
        };
        if keep > 0 {
            stream.buf = Some(ChunkBuf {
                index: 0,
                data,
                reservation,
            });
        }
        self.mode = Mode::Stream(stream);
        Ok(())
    }

    /// The generation array's path in the file's store (`/g<N>`).
    pub fn gen_path(&self) -> String {
        format!("/g{}", self.gen)
    }
}

fn check_crc(data: &[u8], expect: Option<(u32, usize)>, index: u64) -> FsResult<()> {
    if let Some((crc, valid)) = expect {
        let got = crc32c::crc32c(&data[..valid.min(data.len())]);
        if got != crc {
            return Err(FsError::new(
                libc::EIO,
                format!("chunk {index}: checksum mismatch (stored {crc:08x}, read {got:08x})"),
            ));
        }
    }
    Ok(())
}

fn crc32c_zero_extend(crc: u32, zeros: u64) -> u32 {
    crc_with_zeros(crc, &[], zeros)
}
