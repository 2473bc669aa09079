//! The data of a file recognised as a checkpoint. While it is written from
//! the start it streams into tensors (`Writing`); once committed it reads
//! from its arrays (`Sealed`); any other access — a write elsewhere, a
//! truncation, a read while writing — copies it into a staging file
//! (`Staged`), which the next commit parses again from the start.

use std::fs;
use std::sync::Arc;

use crate::error::{FsError, FsResult};
use crate::layout::array::ByteArraySpec;
use crate::layout::manifest::{FileManifest, SegmentMeta};
use crate::store::durable::DurableStore;

use super::format_read::SegmentReader;
use super::format_write::FormatWriter;
use super::sealed::SealedRead;
use super::staging::{staging_key, Staging};
use super::Pipeline;

/// A checkpoint file's data in one of its three states (see the module docs).
pub enum FormatData {
    Writing(Box<FormatWriter>),
    /// Shared so reads can run without the file's lock.
    Sealed(Arc<SegmentReader>),
    Staged(Staging),
}

/// What a commit records in the manifest.
pub struct Flushed {
    /// The generation the segments are stored in.
    pub gen: u64,
    /// Chunk length and codec of the generation's `raw` array.
    pub raw: ByteArraySpec,
    /// CRC-32C of each chunk of the `raw` array; `None`: never written.
    pub raw_crcs: Vec<Option<u32>>,
    /// The file's stretches, in file order.
    pub segments: Vec<SegmentMeta>,
    /// The checkpoint format recognised, if any.
    pub format: Option<String>,
}

const COPY_BLOCK: usize = 4 << 20;

impl FormatData {
    /// The generation being written or staged; `None` when sealed (the manifest names it).
    pub fn gen(&self) -> Option<u64> {
        match self {
            FormatData::Writing(w) => Some(w.gen),
            FormatData::Staged(st) => Some(st.gen),
            FormatData::Sealed(_) => None,
        }
    }

    /// The first error a background chunk store reported, if any; a write then fails with it.
    pub fn take_error(&self) -> Option<FsError> {
        match self {
            FormatData::Writing(w) => w.take_error(),
            _ => None,
        }
    }

    /// Copies the current bytes into a staging file of generation `gen`.
    fn stage(
        &mut self,
        pipe: &Arc<Pipeline>,
        store: &Arc<DurableStore>,
        ino: u64,
        size: u64,
        gen: u64,
    ) -> FsResult<()> {
        let staging = Staging::create(store, gen)?;
        let (reader, end, drop_gen) = match self {
            FormatData::Writing(w) => {
                let raw_crcs = w.finish()?;
                let spec = w.raw_spec();
                let r = SegmentReader::from_parts(
                    store,
                    ino,
                    w.gen,
                    spec,
                    raw_crcs,
                    w.segments.clone(),
                )?;
                (Some(r), w.end(), Some(w.gen))
            }
            FormatData::Sealed(_) => (None, size, None),
            FormatData::Staged(_) => return Ok(()),
        };
        let reader = match (&reader, &*self) {
            (Some(r), _) => r,
            (None, FormatData::Sealed(r)) => &**r,
            _ => return Err(FsError::new(libc::EIO, "nothing to stage")),
        };
        let mut buf = vec![0u8; COPY_BLOCK];
        let mut at = 0;
        let end = end.min(size);
        while at < end {
            let n = (end - at).min(COPY_BLOCK as u64) as usize;
            reader.read(pipe, at, &mut buf[..n])?;
            staging.write_at(&buf[..n], at)?;
            at += n as u64;
        }
        staging.set_len(size)?;
        if let Some(g) = drop_gen {
            store.remove_generation(g);
        }
        *self = FormatData::Staged(staging);
        Ok(())
    }

    /// Writes at `offset`: a write at the end of a stream being parsed
    /// continues it; anything else goes to the staging file, made first if
    /// there is none.
    #[allow(clippy::too_many_arguments)]
    pub fn write(
        &mut self,
        pipe: &Arc<Pipeline>,
        store: &Arc<DurableStore>,
        ino: u64,
        offset: u64,
        data: &[u8],
        size: u64,
        new_gen: impl FnOnce() -> u64,
    ) -> FsResult<()> {
        if let FormatData::Writing(w) = self {
            if w.end() == offset {
                return w.push(data);
            }
        }
        if !matches!(self, FormatData::Staged(_)) {
            self.stage(pipe, store, ino, size, new_gen())?;
        }
        match self {
            FormatData::Staged(st) => st.write_at(data, offset),
            _ => Err(FsError::new(libc::EIO, "staging failed")),
        }
    }

    /// Sets the size: growing a stream being parsed needs no data; anything
    /// else goes to the staging file, made first if there is none.
    #[allow(clippy::too_many_arguments)]
    pub fn truncate(
        &mut self,
        pipe: &Arc<Pipeline>,
        store: &Arc<DurableStore>,
        ino: u64,
        new_size: u64,
        size: u64,
        new_gen: impl FnOnce() -> u64,
    ) -> FsResult<()> {
        if let FormatData::Writing(w) = self {
            if new_size >= w.end() {
                return Ok(());
            }
        }
        if !matches!(self, FormatData::Staged(_)) {
            self.stage(pipe, store, ino, size, new_gen())?;
        }
        match self {
            FormatData::Staged(st) => st.set_len(new_size),
            _ => Err(FsError::new(libc::EIO, "staging failed")),
        }
    }

    /// Reads at `offset`: a sealed file from its arrays, otherwise from the staging file (a stream
    /// being parsed is staged first).
    #[allow(clippy::too_many_arguments)]
    pub fn read(
        &mut self,
        pipe: &Arc<Pipeline>,
        store: &Arc<DurableStore>,
        ino: u64,
        offset: u64,
        out: &mut [u8],
        size: u64,
        new_gen: impl FnOnce() -> u64,
    ) -> FsResult<()> {
        if matches!(self, FormatData::Writing(_)) {
            self.stage(pipe, store, ino, size, new_gen())?;
        }
        match self {
            FormatData::Sealed(r) => r.read(pipe, offset, out),
            FormatData::Staged(st) => st.read_at(offset, out),
            FormatData::Writing(_) => Err(FsError::new(libc::EIO, "staging failed")),
        }
    }

    /// Stores everything as its generation; the caller commits the manifest.
    pub fn flush(
        &mut self,
        pipe: &Arc<Pipeline>,
        store: &Arc<DurableStore>,
        size: u64,
        file_name: &str,
    ) -> FsResult<Option<Flushed>> {
        let writer = match self {
            FormatData::Sealed(_) => return Ok(None),
            FormatData::Writing(w) => w,
            FormatData::Staged(st) => {
                // Parse the staged bytes from the start, like a new save.
                let mut w = FormatWriter::new(pipe, store, st.gen, file_name)?;
                let mut buf = vec![0u8; COPY_BLOCK];
                let mut at = 0;
                while at < size {
                    let n = (size - at).min(COPY_BLOCK as u64) as usize;
                    st.read_at(at, &mut buf[..n])?;
                    w.push(&buf[..n])?;
                    at += n as u64;
                }
                *self = FormatData::Writing(Box::new(w));
                match self {
                    FormatData::Writing(w) => w,
                    _ => return Err(FsError::new(libc::EIO, "staging parse failed")),
                }
            }
        };
        let raw_crcs = writer.finish()?;
        writer.store_metadata()?;
        Ok(Some(Flushed {
            gen: writer.gen,
            raw: writer.raw_spec(),
            raw_crcs,
            segments: writer.segments.clone(),
            format: writer.format.map(|f| f.name().to_string()),
        }))
    }

    /// After the manifest commit: read from the committed arrays.
    pub fn committed(
        &mut self,
        store: &Arc<DurableStore>,
        ino: u64,
        m: &FileManifest,
    ) -> FsResult<()> {
        let sealed = FormatData::Sealed(Arc::new(SegmentReader::open(store, ino, m)?));
        if let FormatData::Staged(st) = std::mem::replace(self, sealed) {
            st.remove(store);
        }
        let _ = fs::remove_file(store.key_path(&staging_key(m.generation)));
        Ok(())
    }

    /// Removes uncommitted files of this state.
    pub fn discard(&mut self, store: &DurableStore) {
        match self {
            FormatData::Writing(w) => {
                let _ = w.finish();
                store.remove_generation(w.gen);
            }
            FormatData::Staged(st) => {
                st.remove(store);
                store.remove_generation(st.gen);
            }
            FormatData::Sealed(_) => {}
        }
    }
}
