//! One tensor as a Zarr v3 array: its chunk shape under the mount's rule,
//! its stored dtype, and the two copies between the file's row-major bytes
//! and N-d chunks (cut on write, gather on read).

use std::sync::Arc;

use zarrs::array::codec::BytesCodec;
use zarrs::array::{Array, ArrayBuilder};

use super::array::{bytes_codecs, parse_codec};
use super::chunk_shape::{choose_chunk_shape, per_dim_max};
use super::dtype::Dtype;
use crate::config::Chunking;
use crate::error::{eio, FsResult};
use crate::store::durable::DurableStore;

/// A tensor's Zarr array, opened over the file's durable store.
pub type TensorArray = Array<DurableStore>;

/// Everything needed to build (or rebuild) a tensor's array.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TensorLayout {
    /// Array path in the file's store: `/g<N>/t<index>.<name>`.
    pub path: String,
    /// Element type as the checkpoint file has it.
    pub dtype: Dtype,
    /// Element type kept in the store: `dtype`, or a narrower one under the stored-dtype policy.
    pub stored: Dtype,
    /// Extent of each dimension, in elements.
    pub shape: Vec<u64>,
    /// Chunk extent of each dimension, in elements (the mount's chunking rule).
    pub chunk: Vec<u64>,
    /// Compressor of the chunks, as [`crate::config::Codec`]'s `Display` writes it
    /// (`none`, `zstd(3)`, …).
    pub codec: String,
}

/// Chunk shape of a tensor under the mount's chunking rule.
pub fn chunk_for(shape: &[u64], dtype: Dtype, rule: &Chunking) -> Vec<u64> {
    match *rule {
        Chunking::PerDimMax(n) => per_dim_max(shape, n),
        Chunking::TargetElements(t) => choose_chunk_shape(shape, t),
        Chunking::TargetBytes(b) => choose_chunk_shape(shape, (b / dtype.size()).max(1)),
        Chunking::None => shape.iter().map(|&d| d.max(1)).collect(),
    }
}

/// A path component safe in the backing store for any tensor name
/// (`../../x`, `/`, NUL): unusual bytes become `_`, and a running index
/// keeps names unique.
pub fn array_name(index: usize, name: &str) -> String {
    let clean: String = name
        .chars()
        .take(120)
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '_' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!("t{index:05}.{}", clean.trim_start_matches('.'))
}

impl TensorLayout {
    /// Bytes per stored element.
    pub fn item(&self) -> usize {
        self.stored.size() as usize
    }

    /// Elements in one whole chunk.
    pub fn chunk_elems(&self) -> u64 {
        self.chunk.iter().product()
    }

    /// Number of chunks along each dimension.
    pub fn grid(&self) -> Vec<u64> {
        self.shape
            .iter()
            .zip(&self.chunk)
            .map(|(&d, &c)| d.div_ceil(c))
            .collect()
    }

    /// A handle on the tensor's array in `store`, for reading or writing its
    /// chunks; `attributes` go into its `zarr.json` when the caller stores
    /// the metadata.
    pub fn build(
        &self,
        store: &Arc<DurableStore>,
        attributes: serde_json::Map<String, serde_json::Value>,
    ) -> FsResult<TensorArray> {
        let dt = self
            .stored
            .zarr()
            .ok_or_else(|| eio(format!("no array type for {}", self.stored.name())))?;
        let fill = zarrs::array::FillValue::new(vec![0u8; self.item()]);
        let mut b = ArrayBuilder::new(self.shape.clone(), self.chunk.clone(), dt, fill);
        b.array_to_bytes_codec(Arc::new(BytesCodec::little()));
        b.bytes_to_bytes_codecs(bytes_codecs(parse_codec(&self.codec)?)?);
        b.attributes(attributes);
        b.build(store.clone(), &self.path)
            .map_err(|e| eio(format!("build array {}: {e}", self.path)))
    }

    /// Copies chunk `coords` out of a slab that holds whole rows
    /// `[coords[0] * chunk[0], + rows)` of dimension 0, in stored dtype.
    pub fn cut(&self, slab: &[u8], rows: u64, coords: &[u64]) -> Vec<u8> {
        let mut out = vec![0u8; self.chunk_elems() as usize * self.item()];
        self.cut_into(slab, rows, coords, &mut out);
        out
    }

    /// [`TensorLayout::cut`] into `out` (a whole chunk's bytes, contents
    /// anything: every byte is written, edges zero-filled).
    pub fn cut_into(&self, slab: &[u8], rows: u64, coords: &[u64], out: &mut [u8]) {
        let item = self.item();
        let n = self.shape.len();
        if n == 1 {
            let len = slab.len().min(out.len());
            out[..len].copy_from_slice(&slab[..len]);
            out[len..].fill(0);
            return;
        }
        let last = n - 1;
        let c_last = self.chunk[last];
        let g_last = coords[last] * c_last;
        let run = c_last.min(self.shape[last].saturating_sub(g_last)) as usize;
        // Extent of the chunk in each leading dimension, clipped at edges.
        let mut extent = vec![0u64; last];
        extent[0] = self.chunk[0].min(rows);
        for d in 1..last {
            extent[d] = self.chunk[d].min(self.shape[d].saturating_sub(coords[d] * self.chunk[d]));
        }
        let whole = run as u64 == c_last && extent.iter().zip(&self.chunk).all(|(e, c)| e == c);
        if !whole {
            // An edge chunk: what no row covers is padding.
            out.fill(0);
        }
        if extent.contains(&0) || run == 0 {
            return;
        }
        let mut j = vec![0u64; last];
        loop {
            // Source: row j0 of the slab, global index in dims 1..last.
            let mut src = j[0];
            let mut dst = j[0];
            for d in 1..last {
                src = src * self.shape[d] + coords[d] * self.chunk[d] + j[d];
                dst = dst * self.chunk[d] + j[d];
            }
            let src = (src * self.shape[last] + g_last) as usize * item;
            let dst = (dst * c_last) as usize * item;
            let bytes = run * item;
            if src + bytes <= slab.len() {
                out[dst..dst + bytes].copy_from_slice(&slab[src..src + bytes]);
            }
            // Odometer over the leading dimensions.
            let mut d = last;
            loop {
                if d == 0 {
                    return;
                }
                d -= 1;
                j[d] += 1;
                if j[d] < extent[d] {
                    break;
                }
                j[d] = 0;
            }
        }
    }

    /// For element `e` (row-major), the chunk holding it, the element's
    /// offset inside that chunk, and how many elements from `e` on lie in
    /// the same chunk along the last dimension.
    pub fn locate(&self, e: u64) -> (Vec<u64>, u64, u64) {
        let n = self.shape.len();
        let mut coord = vec![0u64; n];
        let mut rest = e;
        for d in (0..n).rev() {
            coord[d] = rest % self.shape[d].max(1);
            rest /= self.shape[d].max(1);
        }
        let chunk_idx: Vec<u64> = coord
            .iter()
            .zip(&self.chunk)
            .map(|(&c, &s)| c / s)
            .collect();
        let within = coord
            .iter()
            .zip(&self.chunk)
            .fold(0u64, |w, (&c, &s)| w * s + c % s);
        let last = n - 1;
        let run =
            (self.chunk[last] - coord[last] % self.chunk[last]).min(self.shape[last] - coord[last]);
        (chunk_idx, within, run)
    }

    /// Linear index of a chunk in the grid (for checksums and cache keys).
    pub fn linear(&self, coords: &[u64]) -> u64 {
        let grid = self.grid();
        coords.iter().zip(&grid).fold(0, |a, (&c, &g)| a * g + c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layout(shape: Vec<u64>, chunk: Vec<u64>) -> TensorLayout {
        TensorLayout {
            path: "/t".into(),
            dtype: Dtype::U8,
            stored: Dtype::U8,
            shape,
            chunk,
            codec: "none".into(),
        }
    }

    #[test]
    fn cut_and_locate_agree_on_a_3d_tensor_with_edges() {
        let l = layout(vec![5, 7, 3], vec![2, 3, 2]);
        let data: Vec<u8> = (0..105u32).map(|i| i as u8).collect();
        let row = 7 * 3;
        let grid = l.grid();
        // Rebuild every element from chunks cut out of slabs.
        let mut chunks = std::collections::HashMap::new();
        for s in 0..grid[0] {
            let r0 = s * 2;
            let rows = 2.min(5 - r0);
            let slab = &data[(r0 * row) as usize..((r0 + rows) * row) as usize];
            for c1 in 0..grid[1] {
                for c2 in 0..grid[2] {
                    chunks.insert(vec![s, c1, c2], l.cut(slab, rows, &[s, c1, c2]));
                }
            }
        }
        let mut e = 0;
        while e < 105 {
            let (ci, within, run) = l.locate(e);
            let ch = &chunks[&ci];
            for k in 0..run {
                assert_eq!(
                    ch[(within + k) as usize],
                    data[(e + k) as usize],
                    "element {}",
                    e + k
                );
            }
            e += run;
        }
    }

    #[test]
    fn hostile_names_become_safe_paths() {
        for n in ["../../x", "a/b", "nul\0here", ".hidden", ""] {
            let a = array_name(3, n);
            assert!(
                !a.contains('/') && !a.contains('\0') && a.starts_with("t00003."),
                "{a}"
            );
        }
    }
}
