//! The builtin loader of safetensors files: the header, then each tensor's
//! bytes read straight into the memory that becomes the tensor, in file
//! order. There is no whole-file buffer and no second copy into tensors
//! (what streaming loaders and TensorStore's own reads do): the load costs
//! one pass over the bytes, so what it measures is the file system.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use candle_core::{Device, Tensor, WithDType};
use half::{bf16, f16};
use safetensors::tensor::{Metadata, TensorInfo};
use safetensors::Dtype;

use super::model::{LoadSplit, Tensors};

/// Largest header accepted (safetensors' own limit).
const MAX_HEADER: u64 = 100 << 20;

/// Reads the tensors of the safetensors file `path` onto `device`; the
/// split says how long the file reads took and how long the move onto the
/// device (on the CPU, wrapping the memory read into: no copy).
pub fn read_safetensors(path: &Path, device: &Device) -> Result<(Tensors, LoadSplit)> {
    let t0 = Instant::now();
    let file = File::open(path).with_context(|| format!("open {}", path.display()))?;
    let mut len = [0u8; 8];
    file.read_exact_at(&mut len, 0)
        .with_context(|| format!("read the header length of {}", path.display()))?;
    let n = u64::from_le_bytes(len);
    if n > MAX_HEADER {
        bail!("{}: safetensors header of {n} bytes", path.display());
    }
    let mut header = vec![0u8; n as usize];
    file.read_exact_at(&mut header, 8)
        .with_context(|| format!("read the header of {}", path.display()))?;
    let meta: Metadata = serde_json::from_slice(&header)
        .with_context(|| format!("parse the safetensors header of {}", path.display()))?;
    let mut infos: Vec<(String, &TensorInfo)> = meta.tensors().into_iter().collect();
    infos.sort_by_key(|(_, info)| info.data_offsets.0);
    let base = 8 + n;
    let mut host = Vec::with_capacity(infos.len());
    for (name, info) in infos {
        let tensor = read_tensor(&file, base, info)
            .with_context(|| format!("read tensor {name} of {}", path.display()))?;
        host.push((name, tensor));
    }
    let file_read_s = t0.elapsed().as_secs_f64();
    let t1 = Instant::now();
    let tensors = if device.is_cpu() {
        host
    } else {
        let moved = host
            .into_iter()
            .map(|(name, t)| Ok((name, t.to_device(device)?)))
            .collect::<Result<Tensors>>()?;
        device.synchronize().context("synchronize the device")?;
        moved
    };
    let split = LoadSplit {
        file_read_s,
        to_device_s: t1.elapsed().as_secs_f64(),
    };
    Ok((tensors, split))
}

/// One tensor, read into a vector of its element type.
fn read_tensor(file: &File, base: u64, info: &TensorInfo) -> Result<Tensor> {
    match info.dtype {
        Dtype::F32 => typed::<f32>(file, base, info),
        Dtype::F16 => typed::<f16>(file, base, info),
        Dtype::BF16 => typed::<bf16>(file, base, info),
        Dtype::F64 => typed::<f64>(file, base, info),
        Dtype::I64 => typed::<i64>(file, base, info),
        Dtype::I32 => typed::<i32>(file, base, info),
        Dtype::I16 => typed::<i16>(file, base, info),
        Dtype::U32 => typed::<u32>(file, base, info),
        Dtype::U8 => typed::<u8>(file, base, info),
        other => bail!("element type {other:?} is not one candle holds"),
    }
}

fn typed<T: WithDType + bytemuck::Pod>(
    file: &File,
    base: u64,
    info: &TensorInfo,
) -> Result<Tensor> {
    let (start, end) = info.data_offsets;
    let elems: usize = info.shape.iter().product();
    if end < start || end - start != elems * std::mem::size_of::<T>() {
        bail!(
            "{} bytes at {start}..{end} for shape {:?} of {:?}",
            end.saturating_sub(start),
            info.shape,
            info.dtype
        );
    }
    // Zeroed memory comes from the allocator as fresh pages, written once
    // by the read (safetensors is little endian, as this host is).
    let mut v: Vec<T> = bytemuck::zeroed_vec(elems);
    file.read_exact_at(bytemuck::cast_slice_mut(&mut v), base + start as u64)?;
    Ok(Tensor::from_vec(v, info.shape.as_slice(), &Device::Cpu)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_what_candle_wrote_for_every_dtype_and_refuses_a_short_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("m.safetensors");
        let base = Tensor::arange(0f32, 60.0, &Device::Cpu)
            .and_then(|t| t.reshape((3, 4, 5)))
            .expect("tensor");
        let mut named = Vec::new();
        for dt in [
            candle_core::DType::F32,
            candle_core::DType::F16,
            candle_core::DType::BF16,
            candle_core::DType::F64,
            candle_core::DType::I64,
            candle_core::DType::U32,
            candle_core::DType::U8,
        ] {
            named.push((format!("{dt:?}"), base.to_dtype(dt).expect("cast")));
        }
        // A 0-element tensor and a scalar too.
        named.push((
            "empty".into(),
            Tensor::zeros((0, 4), candle_core::DType::F32, &Device::Cpu).expect("empty"),
        ));
        named.push((
            "scalar".into(),
            Tensor::new(7.5f32, &Device::Cpu).expect("scalar"),
        ));
        candle_core::safetensors::save(
            &named
                .iter()
                .cloned()
                .collect::<std::collections::HashMap<_, _>>(),
            &path,
        )
        .expect("save");
        let (got, split) = read_safetensors(&path, &Device::Cpu).expect("read");
        assert!(split.file_read_s >= 0.0 && split.to_device_s >= 0.0);
        assert_eq!(got.len(), named.len());
        let want = candle_core::safetensors::load(&path, &Device::Cpu).expect("candle load");
        for (name, t) in &got {
            let w = &want[name];
            assert_eq!(t.dtype(), w.dtype(), "{name}");
            assert_eq!(t.dims(), w.dims(), "{name}");
            let (a, b) = (
                t.flatten_all()
                    .and_then(|t| t.to_dtype(candle_core::DType::F64)),
                w.flatten_all()
                    .and_then(|t| t.to_dtype(candle_core::DType::F64)),
            );
            assert_eq!(
                a.and_then(|a| a.to_vec1::<f64>()).expect("a"),
                b.and_then(|b| b.to_vec1::<f64>()).expect("b"),
                "{name}"
            );
        }
        // Cut short: the last tensor cannot be read whole.
        let len = std::fs::metadata(&path).expect("stat").len();
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .expect("open");
        f.set_len(len - 3).expect("truncate");
        assert!(read_safetensors(&path, &Device::Cpu).is_err());
    }
}
