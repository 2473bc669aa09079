//! Reads a parsed checkpoint back as the bytes of its file: raw stretches
//! from the generation's byte array, tensor stretches gathered from their
//! chunks (widened back to the file's dtype when stored narrower).

use std::sync::Arc;

use zarrs::array::{ArrayBytes, CodecOptions};

use crate::error::{eio, from_array, FsError, FsResult};
use crate::layout::array::{parse_codec, retrieve_chunk, ByteArray, ByteArraySpec};
use crate::layout::dtype::widen;
use crate::layout::manifest::{FileManifest, SegmentMeta};

use crate::layout::tensor::TensorArray;
use crate::store::durable::DurableStore;

use super::format_write::tensor_key;
use super::Pipeline;

pub struct SegmentReader {
    file_id: u64,
    gen: u64,
    raw: Arc<ByteArray>,
    raw_chunk: u64,
    raw_crcs: Vec<Option<u32>>,
    raw_total: u64,
    segments: Vec<SegmentMeta>,
    arrays: Vec<Option<Arc<TensorArray>>>,
}

impl SegmentReader {
    pub fn open(store: &Arc<DurableStore>, file_id: u64, m: &FileManifest) -> FsResult<Self> {
        let spec = ByteArraySpec {
            chunk_bytes: m.layout.chunk_bytes,
            codec: parse_codec(&m.layout.codec)?,
        };
        Self::from_parts(
            store,
            file_id,
            m.generation,
            spec,
            m.chunks.clone(),
            m.segments.clone(),
        )
    }

    /// A reader over a generation described by its parts.
    pub fn from_parts(
        store: &Arc<DurableStore>,
        file_id: u64,
        gen: u64,
        spec: ByteArraySpec,
        raw_crcs: Vec<Option<u32>>,
        segments: Vec<SegmentMeta>,
    ) -> FsResult<Self> {
        let raw = Arc::new(spec.handle(store, &format!("/g{gen}/raw"))?);
        let mut arrays = Vec::new();
        let mut raw_total = 0;
        for seg in &segments {
            match seg {
                SegmentMeta::Tensor { layout, .. } => {
                    arrays.push(Some(Arc::new(layout.build(store, Default::default())?)))
                }
                SegmentMeta::Raw {
                    len, raw_offset, ..
                } => {
                    raw_total = raw_total.max(raw_offset + len);
                    arrays.push(None)
                }
            }
        }
        Ok(SegmentReader {
            file_id,
            gen,
            raw,
            raw_chunk: spec.chunk_bytes,
            raw_crcs,
            raw_total,
            segments,
            arrays,
        })
    }

    pub fn segments(&self) -> &[SegmentMeta] {
        &self.segments
    }

    /// Fills `out` with the file's bytes at `offset` (zeros where no
    /// segment covers them).
    pub fn read(&self, pipe: &Arc<Pipeline>, offset: u64, out: &mut [u8]) -> FsResult<()> {
        out.fill(0);
        let end = offset + out.len() as u64;
        // This request's chunks and the next request's decode on the worker
        // pool while this thread gathers them in order.
        self.prefetch(pipe, offset, end + out.len() as u64);
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
            let dst = &mut out[(a - offset) as usize..(b - offset) as usize];
            match seg {
                SegmentMeta::Raw {
                    start, raw_offset, ..
                } => self.read_raw(pipe, raw_offset + (a - start), dst)?,
                SegmentMeta::Tensor {
                    start,
                    layout,
                    crcs,
                    ..
                } => {
                    let array = self.arrays[i]
                        .as_ref()
                        .ok_or_else(|| eio("tensor array missing"))?;
                    self.read_tensor(pipe, i, array, layout, crcs, a - start, dst)?
                }
            }
        }
        Ok(())
    }

    fn read_raw(&self, pipe: &Arc<Pipeline>, mut at: u64, dst: &mut [u8]) -> FsResult<()> {
        let mut done = 0;
        while done < dst.len() {
            let index = at / self.raw_chunk;
            let within = (at - index * self.raw_chunk) as usize;
            let n = (self.raw_chunk as usize - within).min(dst.len() - done);
            let array = self.raw.clone();
            let expect = self.raw_crcs.get(index as usize).copied().flatten();
            let valid = (self.raw_total.min((index + 1) * self.raw_chunk) - index * self.raw_chunk)
                as usize;
            let data = pipe
                .cache
                .get_or_load((self.file_id, self.gen, index), || {
                    let _t = pipe.profiler.stage("decode");
                    let d = retrieve_chunk(&array, index)?;
                    check(&d[..valid.min(d.len())], expect, "raw chunk")?;
                    Ok(d)
                })?;
            dst[done..done + n].copy_from_slice(&data[within..within + n]);
            done += n;
            at += n as u64;
        }
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    fn read_tensor(
        &self,
        pipe: &Arc<Pipeline>,
        segment: usize,
        array: &Arc<TensorArray>,
        layout: &crate::layout::tensor::TensorLayout,
        crcs: &[u32],
        rel: u64,
        dst: &mut [u8],
    ) -> FsResult<()> {
        let fi = layout.dtype.size();
        let si = layout.stored.size() as usize;
        let e0 = rel / fi;
        let e1 = (rel + dst.len() as u64).div_ceil(fi);
        let skip = (rel - e0 * fi) as usize;
        let mut bytes = Vec::with_capacity(((e1 - e0) * fi) as usize);
        let mut e = e0;
        while e < e1 {
            let (coords, within, run) = layout.locate(e);
            let run = run.min(e1 - e);
            let linear = layout.linear(&coords);
            let key = (self.file_id, self.gen, tensor_key(segment, linear));
            let expect = crcs.get(linear as usize).copied();
            let chunk = pipe.cache.get_or_load(key, || {
                load_tensor_chunk(pipe, array, &coords, expect, "decode")
            })?;
            let from = within as usize * si;
            let to = from + run as usize * si;
            if to > chunk.len() {
                return Err(eio("tensor chunk shorter than its shape"));
            }
            if layout.stored == layout.dtype {
                bytes.extend_from_slice(&chunk[from..to]);
            } else {
                bytes.extend_from_slice(&widen(&chunk[from..to], layout.stored, layout.dtype));
            }
            e += run;
        }
        dst.copy_from_slice(&bytes[skip..skip + dst.len()]);
        Ok(())
    }
}

/// Most chunk loads one request queues ahead of itself.
const PREFETCH_MAX: usize = 256;

impl SegmentReader {
    /// Queues loads of the uncached tensor chunks under `[offset, end)`.
    fn prefetch(&self, pipe: &Arc<Pipeline>, offset: u64, end: u64) {
        let mut queued = 0;
        let mut seen = std::collections::HashSet::new();
        let first = self.segments.partition_point(|s| seg_range(s).1 <= offset);
        for (i, seg) in self.segments.iter().enumerate().skip(first) {
            let (s, e) = seg_range(seg);
            if s >= end || queued >= PREFETCH_MAX {
                break;
            }
            let SegmentMeta::Tensor { layout, crcs, .. } = seg else {
                continue;
            };
            let Some(array) = self.arrays[i].as_ref() else {
                continue;
            };
            let fi = layout.dtype.size();
            let mut el = (s.max(offset) - s) / fi;
            let e1 = (e.min(end) - s).div_ceil(fi);
            while el < e1 && queued < PREFETCH_MAX {
                let (coords, _, run) = layout.locate(el);
                el += run.max(1);
                let linear = layout.linear(&coords);
                let key = (self.file_id, self.gen, tensor_key(i, linear));
                if !seen.insert(key) || pipe.cache.contains(&key) {
                    continue;
                }
                queued += 1;
                let (p, arr) = (pipe.clone(), array.clone());
                let expect = crcs.get(linear as usize).copied();
                pipe.pool.spawn(move || {
                    let _ = p.cache.get_or_load(key, || {
                        load_tensor_chunk(&p, &arr, &coords, expect, "readahead_decode")
                    });
                });
            }
        }
    }
}

/// Reads, decodes and checks one tensor chunk (stored dtype, full shape).
fn load_tensor_chunk(
    pipe: &Pipeline,
    array: &TensorArray,
    coords: &[u64],
    expect: Option<u32>,
    stage: &'static str,
) -> FsResult<Vec<u8>> {
    let _t = pipe.profiler.stage(stage);
    let got: ArrayBytes = array
        .retrieve_chunk_opt(coords, &CodecOptions::default().with_concurrent_target(1))
        .map_err(|e| from_array(&e, "read tensor chunk"))?;
    let raw = got
        .into_fixed()
        .map_err(|e| eio(format!("tensor chunk: {e}")))?
        .into_owned();
    check(&raw, expect, "tensor chunk")?;
    Ok(raw)
}

fn seg_range(s: &SegmentMeta) -> (u64, u64) {
    match s {
        SegmentMeta::Raw { start, len, .. } | SegmentMeta::Tensor { start, len, .. } => {
            (*start, start + len)
        }
    }
}

fn check(data: &[u8], expect: Option<u32>, what: &str) -> FsResult<()> {
    if let Some(crc) = expect {
        let got = crc32c::crc32c(data);
        if got != crc {
            return Err(FsError::new(
                libc::EIO,
                format!("{what}: checksum mismatch (stored {crc:08x}, read {got:08x})"),
            ));
        }
    }
    Ok(())
}
