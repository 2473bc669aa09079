//! The model the benchmark saves and loads: a seeded preset or a checkpoint
//! given by path, held as candle tensors.

use std::collections::{BTreeSet, HashMap};
use std::io::Read;
use std::path::Path;

use anyhow::{anyhow, bail, Context, Result};
use candle_core::{DType, Device, Tensor};
use half::{bf16, f16};
use serde::{Deserialize, Serialize};

use super::preset::Preset;
use super::rng;

/// Standard deviation of preset weights, as in the seed documents.
pub const INIT_STD: f32 = 0.02;

/// Element type of preset weights (and the cast applied to a `--model`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum ModelDtype {
    F16,
    Bf16,
    F32,
}

impl ModelDtype {
    /// The candle dtype of this choice.
    pub fn dtype(self) -> DType {
        match self {
            ModelDtype::F16 => DType::F16,
            ModelDtype::Bf16 => DType::BF16,
            ModelDtype::F32 => DType::F32,
        }
    }

    /// Parses a dtype name (`f16`/`float16`, `bf16`/`bfloat16`, `f32`/`float32`).
    pub fn parse(s: &str) -> Result<Self> {
        match s {
            "f16" | "float16" => Ok(ModelDtype::F16),
            "bf16" | "bfloat16" => Ok(ModelDtype::Bf16),
            "f32" | "float32" => Ok(ModelDtype::F32),
            other => bail!("dtype `{other}` is not allowed; allowed values: f16, bf16, f32"),
        }
    }
}

/// A loaded model: tensors sorted by name, on the CPU (the reference for
/// verification) and on the bench device (what is saved).
pub struct Model {
    /// Where the tensors came from, in words.
    pub source: String,
    /// The tensors on the CPU, sorted by name: the reference a load is verified against.
    pub cpu: Vec<(String, Tensor)>,
    /// The same tensors on the bench device, by name: what is saved.
    pub on_device: HashMap<String, Tensor>,
}

impl Model {
    /// Draws a preset's tensors from the seeded normal(0, 0.02).
    ///
    /// With `f16_values` and an f32 dtype the values are drawn as f16 and
    /// widened, as the seed documents did: this reproduces their compression
    /// ratios (13 low mantissa bits are zero) but makes float16 storage exact.
    pub fn from_preset(
        preset: &Preset,
        dtype: ModelDtype,
        seed: u64,
        f16_values: bool,
        device: &Device,
    ) -> Result<Model> {
        let mut cpu = Vec::new();
        for spec in preset.tensors() {
            let n = spec.elements();
            let t = match dtype {
                ModelDtype::F32 if f16_values => Tensor::from_vec(
                    rng::normal_tensor(seed, &spec.name, n, INIT_STD, |v| {
                        f16::from_f32(v).to_f32()
                    }),
                    spec.shape.clone(),
                    &Device::Cpu,
                ),
                ModelDtype::F32 => Tensor::from_vec(
                    rng::normal_tensor(seed, &spec.name, n, INIT_STD, |v| v),
                    spec.shape.clone(),
                    &Device::Cpu,
                ),
                ModelDtype::F16 => Tensor::from_vec(
                    rng::normal_tensor(seed, &spec.name, n, INIT_STD, f16::from_f32),
                    spec.shape.clone(),
                    &Device::Cpu,
                ),
                ModelDtype::Bf16 => Tensor::from_vec(
                    rng::normal_tensor(seed, &spec.name, n, INIT_STD, bf16::from_f32),
                    spec.shape.clone(),
                    &Device::Cpu,
                ),
            }
            .with_context(|| format!("build tensor {}", spec.name))?;
            cpu.push((spec.name, t));
        }
        let values = if f16_values && dtype == ModelDtype::F32 {
            ", drawn as f16 and widened"
        } else {
            ""
        };
        let layers = match preset.layers {
            1 => "1 layer".to_string(),
            n => format!("{n} layers"),
        };
        let source = format!(
            "preset {} ({layers}), {:?}, normal(0, {INIT_STD}) seed {seed}{values}",
            preset.name, dtype
        );
        Model::new(source, cpu, device)
    }

    /// Reads a checkpoint: a safetensors file, a folder of safetensors shards
    /// (with or without `model.safetensors.index.json`), or a PyTorch
    /// `.bin/.pt/.pth`. `cast` converts floating-point tensors.
    pub fn from_path(path: &Path, cast: Option<ModelDtype>, device: &Device) -> Result<Model> {
        let files = checkpoint_files(path)?;
        let mut cpu: Vec<(String, Tensor)> = Vec::new();
        let mut seen = BTreeSet::new();
        for file in &files {
            for (name, t) in read_checkpoint(file, &Device::Cpu)? {
                if !seen.insert(name.clone()) {
                    bail!("tensor {name} appears twice in {}", path.display());
                }
                let t = match cast {
                    Some(d) if t.dtype().is_float() => t
                        .to_dtype(d.dtype())
                        .with_context(|| format!("cast {name} to {d:?}"))?,
                    _ => t,
                };
                cpu.push((name, t));
            }
        }
        if cpu.is_empty() {
            bail!("{} holds no tensors", path.display());
        }
        let mut source = format!("{} ({} file(s))", path.display(), files.len());
        if let Some(d) = cast {
            source.push_str(&format!(", cast to {d:?}"));
        }
        Model::new(source, cpu, device)
    }

    /// The tensors named in `names` (a sample of this model), as a model of
    /// their own.
    pub fn subset(
        &self,
        names: &BTreeSet<String>,
        source: String,
        device: &Device,
    ) -> Result<Model> {
        let cpu = self
            .cpu
            .iter()
            .filter(|(n, _)| names.contains(n))
            .cloned()
            .collect();
        Model::new(source, cpu, device)
    }

    fn new(source: String, mut cpu: Vec<(String, Tensor)>, device: &Device) -> Result<Model> {
        cpu.sort_by(|a, b| a.0.cmp(&b.0));
        let mut on_device = HashMap::with_capacity(cpu.len());
        for (name, t) in &cpu {
            let d = t
                .to_device(device)
                .with_context(|| format!("copy {name} to {device:?}"))?;
            on_device.insert(name.clone(), d);
        }
        Ok(Model {
            source,
            cpu,
            on_device,
        })
    }

    /// Total elements over all tensors.
    pub fn parameters(&self) -> usize {
        self.cpu.iter().map(|(_, t)| t.elem_count()).sum()
    }

    /// Total bytes over all tensors.
    pub fn bytes(&self) -> usize {
        self.cpu
            .iter()
            .map(|(_, t)| t.elem_count() * t.dtype().size_in_bytes())
            .sum()
    }

    /// The dtypes present, e.g. "F32" or "F32, I64".
    pub fn dtypes(&self) -> String {
        let set: BTreeSet<String> = self
            .cpu
            .iter()
            .map(|(_, t)| format!("{:?}", t.dtype()))
            .collect();
        set.into_iter().collect::<Vec<_>>().join(", ")
    }
}

/// The checkpoint files behind `path`.
fn checkpoint_files(path: &Path) -> Result<Vec<std::path::PathBuf>> {
    let meta = std::fs::metadata(path).with_context(|| format!("model {}", path.display()))?;
    if meta.is_file() {
        return Ok(vec![path.to_path_buf()]);
    }
    let index = path.join("model.safetensors.index.json");
    if index.is_file() {
        let text =
            std::fs::read_to_string(&index).with_context(|| format!("read {}", index.display()))?;
        let doc: serde_json::Value =
            serde_json::from_str(&text).with_context(|| format!("parse {}", index.display()))?;
        let map = doc
            .get("weight_map")
            .and_then(|m| m.as_object())
            .ok_or_else(|| anyhow!("{} has no `weight_map` object", index.display()))?;
        let mut shards = BTreeSet::new();
        for (name, file) in map {
            let file = file
                .as_str()
                .ok_or_else(|| anyhow!("{}: shard of {name} is not a string", index.display()))?;
            if file.contains('/') || file.contains("..") {
                bail!("{}: shard name {file:?} leaves the folder", index.display());
            }
            shards.insert(file.to_string());
        }
        return Ok(shards.into_iter().map(|f| path.join(f)).collect());
    }
    let mut files: Vec<_> = std::fs::read_dir(path)
        .with_context(|| format!("list {}", path.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "safetensors"))
        .collect();
    files.sort();
    if files.is_empty() {
        for name in ["pytorch_model.bin", "model.pt", "model.pth"] {
            if path.join(name).is_file() {
                files.push(path.join(name));
                break;
            }
        }
    }
    if files.is_empty() {
        bail!(
            "{} holds no model.safetensors.index.json, *.safetensors or pytorch_model.bin",
            path.display()
        );
    }
    Ok(files)
}

/// Named tensors, as a checkpoint holds them.
pub type Tensors = Vec<(String, Tensor)>;

/// Where a timed load's seconds went.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct LoadSplit {
    /// The header and each tensor's bytes read into the tensor's own
    /// memory (through the mount: FUSE).
    pub file_read_s: f64,
    /// From host tensors to tensors on the device: the host-to-device copy
    /// on a GPU; nothing on the CPU (the memory read into is the tensor's).
    pub to_device_s: f64,
}

/// Reads a checkpoint file onto `device`, timing the file read and the
/// move onto the device apart (safetensors; a PyTorch
/// zip is read by its pickle reader in one step, so it has no split).
pub fn read_checkpoint_split(path: &Path, device: &Device) -> Result<(Tensors, Option<LoadSplit>)> {
    if path.is_dir() {
        // A folder of shards: each read and moved in turn, as loaders do.
        let mut all = Vec::new();
        let mut total = LoadSplit {
            file_read_s: 0.0,
            to_device_s: 0.0,
        };
        let mut split_known = true;
        for file in checkpoint_files(path)? {
            let (t, s) = read_checkpoint_split(&file, device)?;
            all.extend(t);
            match s {
                Some(s) => {
                    total.file_read_s += s.file_read_s;
                    total.to_device_s += s.to_device_s;
                }
                None => split_known = false,
            }
        }
        return Ok((all, split_known.then_some(total)));
    }
    if is_torch_zip(path)? {
        return Ok((read_checkpoint(path, device)?, None));
    }
    let (tensors, split) = super::tensor_read::read_safetensors(path, device)?;
    Ok((tensors, Some(split)))
}

fn is_torch_zip(path: &Path) -> Result<bool> {
    let mut magic = [0u8; 4];
    let n = std::fs::File::open(path)
        .and_then(|mut f| f.read(&mut magic))
        .with_context(|| format!("open {}", path.display()))?;
    Ok(n == 4 && &magic == b"PK\x03\x04")
}

/// Reads every tensor of one checkpoint file onto `device`: safetensors, or a
/// PyTorch zip (told apart by content, not by name); a folder of shards.
pub fn read_checkpoint(path: &Path, device: &Device) -> Result<Vec<(String, Tensor)>> {
    if path.is_dir() {
        let mut all = Vec::new();
        for file in checkpoint_files(path)? {
            all.extend(read_checkpoint(&file, device)?);
        }
        return Ok(all);
    }
    if is_torch_zip(path)? {
        let mut tensors = candle_core::pickle::read_all(path)
            .with_context(|| format!("read PyTorch checkpoint {}", path.display()))?;
        if tensors.is_empty() {
            tensors = candle_core::pickle::read_all_with_key(path, Some("state_dict"))
                .with_context(|| format!("read PyTorch checkpoint {}", path.display()))?;
        }
        if device.is_cpu() {
            return Ok(tensors);
        }
        return tensors
            .into_iter()
            .map(|(name, t)| Ok((name, t.to_device(device)?)))
            .collect();
    }
    let map = candle_core::safetensors::load(path, device)
        .with_context(|| format!("read safetensors {}", path.display()))?;
    Ok(map.into_iter().collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::preset::TINY;

    #[test]
    fn tiny_preset_builds_every_dtype_deterministically() {
        for dtype in [ModelDtype::F16, ModelDtype::Bf16, ModelDtype::F32] {
            let a = Model::from_preset(&TINY, dtype, 3, false, &Device::Cpu).expect("model");
            let b = Model::from_preset(&TINY, dtype, 3, false, &Device::Cpu).expect("model");
            assert_eq!(a.cpu.len(), TINY.tensors().len());
            assert_eq!(a.parameters(), TINY.parameters());
            assert_eq!(a.bytes(), TINY.parameters() * dtype.dtype().size_in_bytes());
            let (name, ta) = &a.cpu[0];
            let tb = &b.cpu[0].1;
            let va = ta
                .flatten_all()
                .and_then(|t| t.to_dtype(DType::F32))
                .and_then(|t| t.to_vec1::<f32>())
                .expect("a");
            let vb = tb
                .flatten_all()
                .and_then(|t| t.to_dtype(DType::F32))
                .and_then(|t| t.to_vec1::<f32>())
                .expect("b");
            assert_eq!(va, vb, "{name}");
        }
    }

    #[test]
    fn a_folder_of_shards_with_an_index_loads_whole_and_can_be_cast() {
        let d = tempfile::tempdir().expect("tempdir");
        let t = |v: Vec<f32>| Tensor::from_vec(v, (2, 2), &Device::Cpu).expect("tensor");
        let a: HashMap<String, Tensor> =
            [("a.weight".to_string(), t(vec![1.0, 2.0, 3.0, 4.0]))].into();
        let b: HashMap<String, Tensor> =
            [("b.weight".to_string(), t(vec![5.0, 6.0, 7.0, 8.0]))].into();
        candle_core::safetensors::save(&a, d.path().join("model-00001-of-00002.safetensors"))
            .expect("save a");
        candle_core::safetensors::save(&b, d.path().join("model-00002-of-00002.safetensors"))
            .expect("save b");
        std::fs::write(
            d.path().join("model.safetensors.index.json"),
            r#"{"metadata":{},"weight_map":{"a.weight":"model-00001-of-00002.safetensors","b.weight":"model-00002-of-00002.safetensors"}}"#,
        )
        .expect("index");
        let m = Model::from_path(d.path(), None, &Device::Cpu).expect("load folder");
        assert_eq!(m.cpu.len(), 2);
        assert_eq!(m.parameters(), 8);
        assert_eq!(m.cpu[1].0, "b.weight");
        let m = Model::from_path(d.path(), Some(ModelDtype::Bf16), &Device::Cpu).expect("cast");
        assert_eq!(m.dtypes(), "BF16");
        // One file by path works too; a missing one is a clear error.
        let one = Model::from_path(
            &d.path().join("model-00001-of-00002.safetensors"),
            None,
            &Device::Cpu,
        )
        .expect("one file");
        assert_eq!(one.cpu.len(), 1);
        let e = Model::from_path(&d.path().join("nope"), None, &Device::Cpu)
            .err()
            .map(|e| e.to_string());
        assert!(e.unwrap_or_default().contains("nope"));
    }

    #[test]
    fn f16_values_widened_to_f32_are_exact_in_f16() {
        let m = Model::from_preset(&TINY, ModelDtype::F32, 1, true, &Device::Cpu).expect("model");
        let v = m.cpu[0]
            .1
            .flatten_all()
            .and_then(|t| t.to_vec1::<f32>())
            .expect("values");
        assert!(v.iter().all(|x| f16::from_f32(*x).to_f32() == *x));
    }
}
