//! Reads a parsed checkpoint back as the bytes of its file: raw stretches
//! from the generation's byte array, tensor stretches gathered from their
//! chunks (widened back to the file's dtype when stored narrower).
//!
//! A request is served chunk by chunk, not element by element: the rows it
//! covers are walked a chunk band at a time (the rows that share their
//! leading chunk coordinates), each band's chunks are taken from the cache
//! once, and each row's run of each chunk is copied straight into the reply.

use std::sync::Arc;

use bytes::Bytes;

use crate::config::Codec;
use crate::error::{eio, FsResult};
use crate::layout::array::{parse_codec, ByteArraySpec};
use crate::layout::dtype::{widen_into, Dtype};
use crate::layout::manifest::{FileManifest, SegmentMeta};
use crate::layout::tensor::TensorLayout;
use crate::store::durable::DurableStore;

use super::chunk_load::{self, ChunkRef, ChunkSource};
use super::format_write::tensor_key;
use super::sealed::{next_epoch, SealedRead};
use super::Pipeline;

/// A tensor's chunk grid, in the terms the read path needs.
struct Geometry {
    /// Bytes per element in the file and in the store.
    fi: u64,
    si: u64,
    stored: Dtype,
    dtype: Dtype,
    /// Leading dimensions (all but the last) and their chunk sizes.
    lead: Vec<u64>,
    lead_chunk: Vec<u64>,
    lead_grid: Vec<u64>,
    /// Elements per row (the last dimension), per chunk along it, chunks.
    cols: u64,
    col_chunk: u64,
    col_grid: u64,
    decoded: usize,
    codec: Codec,
    /// Store key of chunk (0, .., 0) without its coordinates.
    key_prefix: String,
    crcs: Vec<u32>,
}

/// The rows `[row, row + len)` whose leading chunk coordinates are equal.
struct Band {
    row: u64,
    len: u64,
    /// Linear index of the band's first chunk (column chunk 0).
    first_chunk: u64,
    /// Chunk coordinates of the leading dimensions (for store keys).
    coords: Vec<u64>,
    /// Row inside the chunk of the band's first row.
    within: u64,
}

impl Geometry {
    fn new(layout: &TensorLayout, crcs: &[u32]) -> FsResult<Self> {
        let n = layout.shape.len();
        if n == 0 || layout.chunk.len() != n || layout.chunk.contains(&0) {
            return Err(eio("manifest: tensor without a chunk shape"));
        }
        let lead = layout.shape[..n - 1].to_vec();
        let lead_chunk = layout.chunk[..n - 1].to_vec();
        let lead_grid = lead
            .iter()
            .zip(&lead_chunk)
            .map(|(&d, &c)| d.div_ceil(c))
            .collect();
        Ok(Geometry {
            fi: layout.dtype.size(),
            si: layout.stored.size(),
            stored: layout.stored,
            dtype: layout.dtype,
            lead,
            lead_chunk,
            lead_grid,
            cols: layout.shape[n - 1],
            col_chunk: layout.chunk[n - 1],
            col_grid: layout.shape[n - 1].div_ceil(layout.chunk[n - 1]),
            decoded: (layout.chunk_elems() * layout.stored.size()) as usize,
            codec: parse_codec(&layout.codec)?,
            key_prefix: format!("{}/c/", layout.path.trim_start_matches('/')),
            crcs: crcs.to_vec(),
        })
    }

    fn row_bytes(&self) -> u64 {
        self.cols * self.fi
    }

    fn rows(&self) -> u64 {
        self.lead.iter().product()
    }

    /// The band holding `row`, ending at `last` at most.
    fn band(&self, row: u64, last: u64) -> Band {
        let k = self.lead.len();
        let mut coords = vec![0u64; k];
        let mut within_lin = 0u64;
        let mut chunk_lin = 0u64;
        let mut rest = row;
        let mut x = vec![0u64; k];
        for d in (0..k).rev() {
            x[d] = rest % self.lead[d];
            rest /= self.lead[d];
        }
        for d in 0..k {
            coords[d] = x[d] / self.lead_chunk[d];
            within_lin = within_lin * self.lead_chunk[d] + x[d] % self.lead_chunk[d];
            chunk_lin = chunk_lin * self.lead_grid[d] + coords[d];
        }
        let len = match k {
            0 => 1,
            _ => {
                let c = self.lead_chunk[k - 1];
                (c - x[k - 1] % c).min(self.lead[k - 1] - x[k - 1])
            }
        };
        Band {
            row,
            len: len.min(last + 1 - row),
            first_chunk: chunk_lin * self.col_grid,
            coords,
            within: within_lin,
        }
    }

    fn chunk_ref(&self, ino: u64, epoch: u64, segment: usize, band: &Band, j: u64) -> ChunkRef {
        use std::fmt::Write;
        let linear = band.first_chunk + j;
        let mut key = self.key_prefix.clone();
        for c in &band.coords {
            let _ = write!(key, "{c}/");
        }
        let _ = write!(key, "{j}");
        ChunkRef {
            key: (ino, epoch, tensor_key(segment, linear)),
            store_key: key,
            codec: self.codec,
            decoded: self.decoded,
            crc: self.crcs.get(linear as usize).map(|&c| (c, self.decoded)),
        }
    }
}

/// A committed (or flushed) checkpoint generation, read back as the file's bytes without the file's
/// lock.
pub struct SegmentReader {
    ino: u64,
    epoch: u64,
    raw_prefix: String,
    raw_chunk: u64,
    raw_codec: Codec,
    raw_crcs: Vec<Option<u32>>,
    raw_total: u64,
    segments: Vec<SegmentMeta>,
    geometry: Vec<Option<Geometry>>,
    src: ChunkSource,
}

impl SegmentReader {
    /// The reader of the committed generation `m` names.
    pub fn open(store: &Arc<DurableStore>, ino: u64, m: &FileManifest) -> FsResult<Self> {
        let spec = ByteArraySpec {
            chunk_bytes: m.layout.chunk_bytes,
            codec: parse_codec(&m.layout.codec)?,
        };
        let mut r = Self::from_parts(
            store,
            ino,
            m.generation,
            spec,
            m.chunks.clone(),
            m.segments.clone(),
        )?;
        r.src.committed = true;
        Ok(r)
    }

    /// A reader over a generation described by its parts (not yet
    /// committed: its chunks stay in the kernel's cache).
    pub fn from_parts(
        store: &Arc<DurableStore>,
        ino: u64,
        gen: u64,
        spec: ByteArraySpec,
        raw_crcs: Vec<Option<u32>>,
        segments: Vec<SegmentMeta>,
    ) -> FsResult<Self> {
        if spec.chunk_bytes == 0 {
            return Err(eio("manifest: raw chunk size 0"));
        }
        let mut geometry = Vec::new();
        let mut raw_total = 0;
        for seg in &segments {
            match seg {
                SegmentMeta::Tensor { layout, crcs, .. } => {
                    geometry.push(Some(Geometry::new(layout, crcs)?))
                }
                SegmentMeta::Raw {
                    len, raw_offset, ..
                } => {
                    raw_total = raw_total.max(raw_offset + len);
                    geometry.push(None)
                }
            }
        }
        Ok(SegmentReader {
            ino,
            epoch: next_epoch(),
            raw_prefix: format!("g{gen}/raw/c/"),
            raw_chunk: spec.chunk_bytes,
            raw_codec: spec.codec,
            raw_crcs,
            raw_total,
            segments,
            geometry,
            src: ChunkSource {
                store: store.clone(),
                committed: false,
            },
        })
    }

    /// The file's stretches, in file order.
    pub fn segments(&self) -> &[SegmentMeta] {
        &self.segments
    }

    fn raw_ref(&self, index: u64) -> ChunkRef {
        let start = index * self.raw_chunk;
        let valid = self
            .raw_total
            .min(start + self.raw_chunk)
            .saturating_sub(start) as usize;
        ChunkRef {
            key: (self.ino, self.epoch, index),
            store_key: format!("{}{index}", self.raw_prefix),
            codec: self.raw_codec,
            decoded: self.raw_chunk as usize,
            crc: self
                .raw_crcs
                .get(index as usize)
                .copied()
                .flatten()
                .map(|c| (c, valid)),
        }
    }

    fn read_raw(&self, pipe: &Pipeline, mut at: u64, dst: &mut [u8]) -> FsResult<()> {
        let mut done = 0;
        while done < dst.len() {
            let index = at / self.raw_chunk;
            let within = (at - index * self.raw_chunk) as usize;
            let n = (self.raw_chunk as usize - within).min(dst.len() - done);
            let data = chunk_load::load(pipe, &self.src, &self.raw_ref(index))?;
            if within + n > data.len() {
                return Err(eio("raw chunk shorter than its size"));
            }
            dst[done..done + n].copy_from_slice(&data[within..within + n]);
            done += n;
            at += n as u64;
        }
        Ok(())
    }

    /// Copies the tensor bytes `[rel, rel + dst.len())` (relative to the
    /// tensor's start in the file) chunk band by chunk band.
    fn read_tensor(
        &self,
        pipe: &Pipeline,
        segment: usize,
        g: &Geometry,
        rel: u64,
        dst: &mut [u8],
    ) -> FsResult<()> {
        let row_bytes = g.row_bytes();
        if row_bytes == 0 || dst.is_empty() {
            return Ok(());
        }
        let end = rel + dst.len() as u64;
        let first = rel / row_bytes;
        let last = ((end - 1) / row_bytes).min(g.rows().max(1) - 1);
        let mut chunks = Vec::with_capacity(g.col_grid as usize);
        let mut row = first;
        while row <= last {
            let band = g.band(row, last);
            chunks.clear();
            for j in 0..g.col_grid {
                let r = g.chunk_ref(self.ino, self.epoch, segment, &band, j);
                chunks.push(chunk_load::load(pipe, &self.src, &r)?);
            }
            for i in 0..band.len {
                let r = band.row + i;
                let w = band.within + i;
                let row_start = r * row_bytes;
                for (j, chunk) in chunks.iter().enumerate() {
                    let c0 = j as u64 * g.col_chunk;
                    let ncols = g.col_chunk.min(g.cols - c0);
                    // The run's bytes in the file, clipped to the request.
                    let run_a = row_start + c0 * g.fi;
                    let run_b = run_a + ncols * g.fi;
                    let a = run_a.max(rel);
                    let b = run_b.min(end);
                    if a >= b {
                        continue;
                    }
                    let src_el = (w * g.col_chunk) as usize;
                    let out = &mut dst[(a - rel) as usize..(b - rel) as usize];
                    copy_run(g, chunk, src_el, ncols as usize, a - run_a, out)?;
                }
            }
            row += band.len;
        }
        Ok(())
    }

    /// Where the tensor bytes `[rel, end)` sit in one chunk, when they are
    /// one stretch of it as the file holds them (stored in the file's
    /// dtype, and either whole rows per chunk inside one band of rows, or a
    /// 1-D tensor's one chunk): the chunk and the stretch's offset in it.
    fn tensor_stretch(
        &self,
        segment: usize,
        g: &Geometry,
        rel: u64,
        end: u64,
    ) -> Option<(ChunkRef, usize)> {
        let row_bytes = g.row_bytes();
        if g.fi != g.si || row_bytes == 0 || end <= rel {
            return None;
        }
        if g.lead.is_empty() {
            let span = g.col_chunk * g.fi;
            let j = rel / span;
            if (end - 1) / span != j {
                return None;
            }
            let band = g.band(0, 0);
            let r = g.chunk_ref(self.ino, self.epoch, segment, &band, j);
            return Some((r, (rel - j * span) as usize));
        }
        if g.col_chunk != g.cols {
            return None;
        }
        let first = rel / row_bytes;
        let last = (end - 1) / row_bytes;
        if last >= g.rows() {
            return None;
        }
        let band = g.band(first, last);
        if band.row + band.len <= last {
            return None;
        }
        let at = band.within * row_bytes + rel % row_bytes;
        let r = g.chunk_ref(self.ino, self.epoch, segment, &band, 0);
        Some((r, at as usize))
    }

    /// The chunks of tensor segment `segment` holding bytes `[rel, end)`.
    fn tensor_chunks(
        &self,
        segment: usize,
        g: &Geometry,
        rel: u64,
        end: u64,
        out: &mut Vec<ChunkRef>,
    ) {
        let row_bytes = g.row_bytes();
        if row_bytes == 0 || end <= rel {
            return;
        }
        let first = rel / row_bytes;
        let last = ((end - 1) / row_bytes).min(g.rows().max(1) - 1);
        let mut row = first;
        while row <= last {
            let band = g.band(row, last);
            for j in 0..g.col_grid {
                out.push(g.chunk_ref(self.ino, self.epoch, segment, &band, j));
            }
            row += band.len;
        }
    }
}

/// Copies the bytes `[skip, skip + out.len())` of a run of `n` elements
/// starting at element `el` of `chunk`, widened to the file's dtype when
/// stored narrower.
fn copy_run(
    g: &Geometry,
    chunk: &[u8],
    el: usize,
    n: usize,
    skip: u64,
    out: &mut [u8],
) -> FsResult<()> {
    let si = g.si as usize;
    if (el + n) * si > chunk.len() {
        return Err(eio("tensor chunk shorter than its shape"));
    }
    if g.fi == g.si {
        let a = el * si + skip as usize;
        out.copy_from_slice(&chunk[a..a + out.len()]);
        return Ok(());
    }
    // Narrowed storage: widen the elements the bytes fall in, the whole
    // ones in bulk.
    let fi = g.fi as usize;
    let e0 = skip as usize / fi;
    let lo = skip as usize - e0 * fi;
    let elem = |e: usize| &chunk[(el + e) * si..(el + e + 1) * si];
    let mut one = [0u8; 8];
    let (mut done, mut e) = (0, e0);
    if lo != 0 {
        widen_into(elem(e), g.stored, g.dtype, &mut one[..fi]);
        let take = (fi - lo).min(out.len());
        out[..take].copy_from_slice(&one[lo..lo + take]);
        (done, e) = (take, e + 1);
    }
    let whole = (out.len() - done) / fi;
    if whole > 0 {
        let src = &chunk[(el + e) * si..(el + e + whole) * si];
        widen_into(src, g.stored, g.dtype, &mut out[done..done + whole * fi]);
        (done, e) = (done + whole * fi, e + whole);
    }
    if done < out.len() {
        widen_into(elem(e), g.stored, g.dtype, &mut one[..fi]);
        let take = out.len() - done;
        out[done..].copy_from_slice(&one[..take]);
    }
    Ok(())
}

fn seg_range(s: &SegmentMeta) -> (u64, u64) {
    match s {
        SegmentMeta::Raw { start, len, .. } | SegmentMeta::Tensor { start, len, .. } => {
            (*start, start + len)
        }
    }
}

impl SealedRead for SegmentReader {
    fn read(&self, pipe: &Pipeline, offset: u64, out: &mut [u8]) -> FsResult<()> {
        let end = offset + out.len() as u64;
        // Bytes no segment covers read as zeros; everything else is copied.
        let mut covered = offset;
        let first = self.segments.partition_point(|s| seg_range(s).1 <= offset);
        for (i, seg) in self.segments.iter().enumerate().skip(first) {
            let (s, e) = seg_range(seg);
            if s >= end {
                break;
            }
            let a = s.max(offset);
            let b = e.min(end);
            if a >= b {
                continue;
            }
            if a > covered {
                out[(covered - offset) as usize..(a - offset) as usize].fill(0);
            }
            let dst = &mut out[(a - offset) as usize..(b - offset) as usize];
            match (seg, &self.geometry[i]) {
                (SegmentMeta::Raw { raw_offset, .. }, _) => {
                    self.read_raw(pipe, raw_offset + (a - s), dst)?
                }
                (SegmentMeta::Tensor { .. }, Some(g)) => {
                    self.read_tensor(pipe, i, g, a - s, dst)?
                }
                (SegmentMeta::Tensor { .. }, None) => return Err(eio("tensor geometry missing")),
            }
            covered = b;
        }
        if covered < end {
            out[(covered - offset) as usize..].fill(0);
        }
        Ok(())
    }

    fn read_shared(&self, pipe: &Pipeline, offset: u64, len: usize) -> FsResult<Option<Bytes>> {
        let end = offset + len as u64;
        let i = self.segments.partition_point(|s| seg_range(s).1 <= offset);
        let Some(seg) = self.segments.get(i) else {
            return Ok(None);
        };
        let (s, e) = seg_range(seg);
        if len == 0 || offset < s || end > e {
            return Ok(None);
        }
        let (r, at) = match (seg, &self.geometry[i]) {
            (SegmentMeta::Raw { raw_offset, .. }, _) => {
                let r0 = raw_offset + (offset - s);
                let index = r0 / self.raw_chunk;
                let within = r0 - index * self.raw_chunk;
                if within + len as u64 > self.raw_chunk {
                    return Ok(None);
                }
                (self.raw_ref(index), within as usize)
            }
            (SegmentMeta::Tensor { .. }, Some(g)) => {
                match self.tensor_stretch(i, g, offset - s, end - s) {
                    Some(found) => found,
                    None => return Ok(None),
                }
            }
            (SegmentMeta::Tensor { .. }, None) => return Ok(None),
        };
        let data = chunk_load::load(pipe, &self.src, &r)?;
        Ok((at + len <= data.len()).then(|| data.slice(at..at + len)))
    }

    fn chunks(&self, start: u64, end: u64, out: &mut Vec<ChunkRef>) {
        let first = self.segments.partition_point(|s| seg_range(s).1 <= start);
        for (i, seg) in self.segments.iter().enumerate().skip(first) {
            let (s, e) = seg_range(seg);
            if s >= end {
                break;
            }
            let a = s.max(start);
            let b = e.min(end);
            if a >= b {
                continue;
            }
            match (seg, &self.geometry[i]) {
                (SegmentMeta::Raw { raw_offset, .. }, _) => {
                    let r0 = raw_offset + (a - s);
                    let r1 = raw_offset + (b - s);
                    for index in r0 / self.raw_chunk..r1.div_ceil(self.raw_chunk) {
                        out.push(self.raw_ref(index));
                    }
                }
                (SegmentMeta::Tensor { .. }, Some(g)) => {
                    self.tensor_chunks(i, g, a - s, b - s, out)
                }
                _ => {}
            }
        }
    }

    fn source(&self) -> &ChunkSource {
        &self.src
    }

    fn chunk_hint(&self) -> u64 {
        self.geometry
            .iter()
            .flatten()
            .map(|g| g.decoded as u64)
            .max()
            .unwrap_or(self.raw_chunk)
            .max(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layout::tensor::TensorLayout;

    fn geometry(shape: Vec<u64>, chunk: Vec<u64>) -> Geometry {
        let layout = TensorLayout {
            path: "/g1/t00000.x".into(),
            dtype: Dtype::U8,
            stored: Dtype::U8,
            shape,
            chunk,
            codec: "none".into(),
        };
        Geometry::new(&layout, &[]).expect("geometry")
    }

    #[test]
    fn bands_follow_the_leading_chunk_coordinates() {
        // 3-D [5, 7, 3] in [2, 3, 2] chunks: rows are (x0, x1) pairs.
        let g = geometry(vec![5, 7, 3], vec![2, 3, 2]);
        let b = g.band(0, 34);
        assert_eq!(
            (b.row, b.len, b.coords.clone(), b.within),
            (0, 3, vec![0, 0], 0)
        );
        let b = g.band(3, 34);
        assert_eq!((b.len, b.coords.clone(), b.first_chunk), (3, vec![0, 1], 2));
        // Row 6 = (0, 6): the last, short band of x1.
        let b = g.band(6, 34);
        assert_eq!((b.len, b.coords.clone(), b.within), (1, vec![0, 2], 0));
        // Row 7 = (1, 0): back to chunk (0, 0), second row of it.
        let b = g.band(7, 34);
        assert_eq!((b.len, b.coords.clone(), b.within), (3, vec![0, 0], 3));
        let one_d = geometry(vec![10], vec![4]);
        let b = one_d.band(0, 0);
        assert_eq!((b.len, b.first_chunk, b.within), (1, 0, 0));
    }

    #[test]
    fn narrowed_runs_read_back_widened_at_every_offset_and_length() {
        for stored in [Dtype::F16, Dtype::BF16] {
            let layout = TensorLayout {
                path: "/g1/t00000.x".into(),
                dtype: Dtype::F32,
                stored,
                shape: vec![40],
                chunk: vec![40],
                codec: "none".into(),
            };
            let g = Geometry::new(&layout, &[]).expect("geometry");
            let vals: Vec<f32> = (0..40).map(|i| i as f32 * 0.25 - 3.0).collect();
            let chunk: Vec<u8> = vals
                .iter()
                .flat_map(|&v| match stored {
                    Dtype::F16 => half::f16::from_f32(v).to_le_bytes(),
                    _ => half::bf16::from_f32(v).to_le_bytes(),
                })
                .collect();
            // The file's bytes of elements 3.. (every value is exact in both).
            let file: Vec<u8> = vals[3..].iter().flat_map(|v| v.to_le_bytes()).collect();
            for skip in 0..file.len() {
                for len in 0..=(file.len() - skip).min(45) {
                    let mut out = vec![0xAAu8; len];
                    copy_run(&g, &chunk, 3, 37, skip as u64, &mut out).expect("copy");
                    assert_eq!(
                        out,
                        file[skip..skip + len],
                        "{stored:?} skip {skip} len {len}"
                    );
                }
            }
        }
    }

    #[test]
    fn chunk_keys_name_the_chunk_coordinates() {
        let g = geometry(vec![5, 7, 3], vec![2, 3, 2]);
        let band = g.band(7, 34);
        let r = g.chunk_ref(9, 77, 2, &band, 1);
        assert_eq!(r.store_key, "g1/t00000.x/c/0/0/1");
        assert_eq!(r.key, (9, 77, tensor_key(2, 1)));
        assert_eq!(r.decoded, 12);
    }
}
