//! The builtin saver of safetensors files: each tensor's bytes are written
//! from the memory that holds them. candle's own `save` first copies every
//! tensor into a new buffer (one pass over fresh memory, about as long as
//! the write itself on this kind of machine), a cost TensorStore's saves of
//! the same arrays do not have; without it a save measures the file system.

use std::borrow::Cow;
use std::collections::HashMap;
use std::path::Path;

use anyhow::{anyhow, Context, Result};
use candle_core::{CpuStorage, Storage, Tensor};
use safetensors::tensor::View;
use safetensors::Dtype;

/// A tensor's bytes where they are, as the safetensors writer wants them.
struct HostView<'a> {
    dtype: Dtype,
    shape: &'a [usize],
    bytes: &'a [u8],
}

impl View for HostView<'_> {
    fn dtype(&self) -> Dtype {
        self.dtype
    }
    fn shape(&self) -> &[usize] {
        self.shape
    }
    fn data(&self) -> Cow<'_, [u8]> {
        Cow::Borrowed(self.bytes)
    }
    fn data_len(&self) -> usize {
        self.bytes.len()
    }
}

/// Writes `tensors` to `path` as a safetensors file (the same bytes as
/// `candle_core::safetensors::save`). Tensors in host memory are written
/// from their storage; on a GPU, or for a layout or dtype this cannot take
/// as it is, candle's writer does it (with its copy).
pub fn save(tensors: &HashMap<String, Tensor>, path: &Path) -> Result<()> {
    let fallback = || {
        candle_core::safetensors::save(tensors, path)
            .with_context(|| format!("save {}", path.display()))
    };
    if !tensors
        .values()
        .all(|t| t.device().is_cpu() && t.is_contiguous())
    {
        return fallback();
    }
    let held: Vec<_> = tensors
        .iter()
        .map(|(name, t)| {
            let (storage, layout) = t.storage_and_layout();
            (name, t, storage, layout.start_offset())
        })
        .collect();
    let mut views = Vec::with_capacity(held.len());
    for (name, t, storage, offset) in &held {
        let Storage::Cpu(cpu) = &**storage else {
            return fallback();
        };
        let Some(bytes) = host_bytes(cpu, *offset, t.elem_count()) else {
            return fallback();
        };
        views.push((
            name.as_str(),
            HostView {
                dtype: Tensor::dtype(t).into(),
                shape: t.dims(),
                bytes,
            },
        ));
    }
    safetensors::tensor::serialize_to_file(views, None, path)
        .map_err(|e| anyhow!("save {}: {e}", path.display()))
}

/// The bytes of `count` elements from `offset` of a host storage; `None`
/// for a dtype without a plain byte view here, or a range outside it.
fn host_bytes(cpu: &CpuStorage, offset: usize, count: usize) -> Option<&[u8]> {
    fn cut<T: bytemuck::Pod>(v: &[T], offset: usize, count: usize) -> Option<&[u8]> {
        let end = offset.checked_add(count)?;
        v.get(offset..end).map(bytemuck::cast_slice)
    }
    match cpu {
        CpuStorage::U8(v) => cut(v, offset, count),
        CpuStorage::U32(v) => cut(v, offset, count),
        CpuStorage::I16(v) => cut(v, offset, count),
        CpuStorage::I32(v) => cut(v, offset, count),
        CpuStorage::I64(v) => cut(v, offset, count),
        CpuStorage::BF16(v) => cut(v, offset, count),
        CpuStorage::F16(v) => cut(v, offset, count),
        CpuStorage::F32(v) => cut(v, offset, count),
        CpuStorage::F64(v) => cut(v, offset, count),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device};

    #[test]
    fn writes_the_bytes_candle_writes_for_every_dtype() {
        let dev = Device::Cpu;
        let base = Tensor::arange(0f32, 24f32, &dev)
            .and_then(|t| t.reshape((2, 3, 4)))
            .expect("tensor");
        let mut tensors = HashMap::new();
        for dt in [
            DType::F32,
            DType::F16,
            DType::BF16,
            DType::F64,
            DType::I64,
            DType::U32,
            DType::U8,
        ] {
            tensors.insert(format!("t.{dt:?}"), base.to_dtype(dt).expect("cast"));
        }
        // A view that starts inside its storage (a row of a matrix).
        let rows = Tensor::arange(0f32, 12f32, &dev)
            .and_then(|t| t.reshape((3, 4)))
            .expect("matrix");
        tensors.insert("row".into(), rows.get(1).expect("row"));
        tensors.insert("scalar".into(), Tensor::new(7f32, &dev).expect("scalar"));
        tensors.insert(
            "empty".into(),
            Tensor::zeros((0, 5), DType::F32, &dev).expect("empty"),
        );
        let dir = tempfile::tempdir_in(std::env::temp_dir()).expect("tempdir");
        let ours = dir.path().join("ours.safetensors");
        let theirs = dir.path().join("theirs.safetensors");
        save(&tensors, &ours).expect("save");
        candle_core::safetensors::save(&tensors, &theirs).expect("candle save");
        let a = std::fs::read(&ours).expect("read");
        let b = std::fs::read(&theirs).expect("read");
        assert_eq!(a, b, "different bytes from candle's writer");

        // Not contiguous: written by candle's writer.
        tensors.insert("t".into(), rows.t().expect("transpose"));
        save(&tensors, &ours).expect("save non-contiguous");
        candle_core::safetensors::save(&tensors, &theirs).expect("candle save");
        assert_eq!(
            std::fs::read(&ours).expect("read"),
            std::fs::read(&theirs).expect("read")
        );
    }
}
