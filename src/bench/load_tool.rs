//! How the checkpoint is read back: the builtin reader (each tensor's bytes
//! read into its own memory, `tensor_read`), or the Python loaders users run, which map the file
//! (`safetensors.safe_open`, `torch.load(mmap=True)`): `--load-tool`.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use candle_core::{Device, Tensor};

use super::model;

/// A load tool, as `--load-tool` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoadTool {
    /// Safetensors: `tensor_read` (each tensor read into its own memory);
    /// a torch zip: candle's pickle reader. Onto the bench's device.
    Builtin,
    /// `scripts/load_checkpoint.py safetensors-mmap`.
    SafetensorsMmap,
    /// `scripts/load_checkpoint.py torch`.
    Torch,
    /// `scripts/load_checkpoint.py dcp`: `torch.distributed.checkpoint.load`.
    Dcp,
}

/// What a load gave: its seconds, and the tensors when the tool hands them
/// to this process (the Python tools are checked by reading again).
pub struct Loaded {
    /// Seconds the load took.
    pub seconds: f64,
    /// The loaded tensors by name, when the tool runs in this process.
    pub tensors: Option<Vec<(String, Tensor)>>,
    /// File read vs move onto the device (the builtin loader of safetensors).
    pub split: Option<model::LoadSplit>,
}

impl LoadTool {
    /// The tool a `--load-tool` value names.
    pub fn parse(s: &str) -> Result<LoadTool> {
        match s {
            "builtin" | "candle" => Ok(LoadTool::Builtin),
            "safetensors-mmap" => Ok(LoadTool::SafetensorsMmap),
            "torch" => Ok(LoadTool::Torch),
            "dcp" => Ok(LoadTool::Dcp),
            _ => {
                bail!("--load-tool `{s}` is not allowed; allowed: builtin, safetensors-mmap, torch, dcp")
            }
        }
    }

    /// The tool in words, for reports.
    pub fn name(&self) -> &'static str {
        match self {
            LoadTool::Builtin => "builtin (each tensor read into its own memory, in file order)",
            LoadTool::SafetensorsMmap => "safetensors safe_open (mmap) + copy of each tensor",
            LoadTool::Torch => "torch.load(mmap=True) + copy of each tensor",
            LoadTool::Dcp => "torch.distributed.checkpoint.load into allocated tensors",
        }
    }

    /// Fails early, with what to install, when the tool cannot run here.
    pub fn check(&self, scripts: &Path) -> Result<()> {
        if *self == LoadTool::Builtin {
            return Ok(());
        }
        let script = scripts.join("load_checkpoint.py");
        if !script.is_file() {
            bail!("load tool script {} is missing", script.display());
        }
        let probe = Command::new(python())
            .arg("-c")
            .arg("import torch, safetensors")
            .stdin(Stdio::null())
            .output()
            .context("run python3")?;
        if !probe.status.success() {
            bail!(
                "load tool `{}` needs Python with torch and safetensors (pip install torch safetensors)",
                self.name()
            );
        }
        Ok(())
    }

    /// Loads `file`; for the Python tools the time is what the script
    /// measured around the load itself (not the interpreter's start).
    pub fn load(&self, file: &Path, device: &Device, scripts: &Path) -> Result<Loaded> {
        let tool = match self {
            LoadTool::Builtin => {
                let t = Instant::now();
                let (tensors, split) = model::read_checkpoint_split(file, device)?;
                device.synchronize().context("synchronize the device")?;
                return Ok(Loaded {
                    seconds: t.elapsed().as_secs_f64(),
                    tensors: Some(tensors),
                    split,
                });
            }
            LoadTool::SafetensorsMmap => "safetensors-mmap",
            LoadTool::Torch => "torch",
            LoadTool::Dcp => "dcp",
        };
        // A DCP folder has no reader here: the script hands its tensors
        // over in a safetensors file written after the timing, beside the
        // checkpoint's folder (the run's folder on the disk under test): not
        // in the mount, and not in /tmp, which may be memory.
        let dump = (*self == LoadTool::Dcp).then(|| {
            file.parent()
                .and_then(Path::parent)
                .filter(|d| !d.as_os_str().is_empty())
                .map_or_else(std::env::temp_dir, Path::to_path_buf)
                .join(format!(
                    "ckptfs-dcp-load-{}.safetensors",
                    std::process::id()
                ))
        });
        let mut cmd = Command::new(python());
        cmd.arg(scripts.join("load_checkpoint.py"))
            .arg(tool)
            .arg(file);
        if let Some(d) = &dump {
            cmd.arg(d);
        }
        let out = cmd
            .stdin(Stdio::null())
            .output()
            .context("run load_checkpoint.py")?;
        if !out.status.success() {
            if let Some(d) = &dump {
                // A load that failed midway may have left part of it.
                let _ = std::fs::remove_file(d);
            }
            bail!(
                "load tool {tool} failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        let text = String::from_utf8_lossy(&out.stdout);
        let seconds: f64 = text
            .split_whitespace()
            .next()
            .and_then(|s| s.parse().ok())
            .with_context(|| format!("load_checkpoint.py printed {text:?}"))?;
        let tensors = match &dump {
            Some(d) => {
                let t = model::read_checkpoint(d, device);
                let _ = std::fs::remove_file(d);
                Some(t.context("read the tensors the DCP load handed over")?)
            }
            None => None,
        };
        Ok(Loaded {
            seconds,
            tensors,
            split: None,
        })
    }
}

pub(crate) fn python() -> String {
    std::env::var("CKPTFS_PYTHON").unwrap_or_else(|_| "python3".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn load_tools_parse_and_bad_ones_are_refused() {
        assert_eq!(
            LoadTool::parse("builtin").expect("builtin"),
            LoadTool::Builtin
        );
        assert_eq!(
            LoadTool::parse("safetensors-mmap").expect("mmap"),
            LoadTool::SafetensorsMmap
        );
        assert_eq!(LoadTool::parse("torch").expect("torch"), LoadTool::Torch);
        assert_eq!(LoadTool::parse("dcp").expect("dcp"), LoadTool::Dcp);
        assert!(LoadTool::parse("mmap").is_err());
    }
}
