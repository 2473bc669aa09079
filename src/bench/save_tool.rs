//! How the model is written into the mount: candle's own safetensors writer,
//! or an existing tool (torch.save, Python safetensors, Hugging Face
//! `save_pretrained`, PyTorch Distributed Checkpoint, any command).
//!
//! The Python tools print the seconds of the save itself (and of fsyncing
//! what they wrote), not of starting the interpreter and importing their
//! libraries (transformers alone takes seconds to import): that is the time
//! a training job, already running, spends on a checkpoint.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{bail, Context, Result};

use super::model::Model;

/// A save tool, as `--save-tool` names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SaveTool {
    /// A safetensors file written in this process, each tensor from its
    /// own memory (`tensor_write`; candle's writer on a GPU).
    Builtin,
    /// `scripts/save_torch.py`: `torch.save` of the state dict.
    Torch,
    /// `scripts/save_safetensors.py`: `safetensors.torch.save_file`.
    SafetensorsPy,
    /// `scripts/save_pretrained.py`: a `LlamaForCausalLM` with the model's
    /// tensors, `save_pretrained` as sharded safetensors (a folder).
    SavePretrained,
    /// `scripts/save_dcp.py`: `torch.distributed.checkpoint.save`, one
    /// process (a folder: `.metadata` and `__0_0.distcp`).
    Dcp,
    /// A shell command with `{src}` and `{dst}` in it.
    Cmd(String),
}

impl SaveTool {
    /// `builtin`, `torch`, `safetensors-py`, `save-pretrained`, `dcp` or
    /// `cmd:TEMPLATE`.
    pub fn parse(s: &str) -> Result<SaveTool> {
        match s {
            "builtin" | "candle" => Ok(SaveTool::Builtin),
            "torch" => Ok(SaveTool::Torch),
            "safetensors-py" => Ok(SaveTool::SafetensorsPy),
            "save-pretrained" => Ok(SaveTool::SavePretrained),
            "dcp" => Ok(SaveTool::Dcp),
            _ => match s.strip_prefix("cmd:") {
                Some(t) if t.contains("{dst}") => Ok(SaveTool::Cmd(t.to_string())),
                Some(_) => bail!("--save-tool cmd:TEMPLATE needs {{dst}} in TEMPLATE (and usually {{src}})"),
                None => bail!(
                    "--save-tool `{s}` is not allowed; allowed: builtin, torch, safetensors-py, save-pretrained, dcp, cmd:\"TEMPLATE {{src}} {{dst}}\""
                ),
            },
        }
    }

    /// The tool in words, for reports.
    pub fn name(&self) -> String {
        match self {
            SaveTool::Builtin => "builtin (safetensors from tensor memory)".into(),
            SaveTool::Torch => "torch.save".into(),
            SaveTool::SafetensorsPy => "safetensors.torch.save_file".into(),
            SaveTool::SavePretrained => "transformers save_pretrained (sharded safetensors)".into(),
            SaveTool::Dcp => "torch.distributed.checkpoint.save".into(),
            SaveTool::Cmd(t) => format!("cmd: {t}"),
        }
    }

    /// The checkpoint's name inside the mount (a folder for the tools that
    /// write several files).
    pub fn file_name(&self) -> &'static str {
        match self {
            SaveTool::Torch => "model.pt",
            SaveTool::SavePretrained => "hf-model",
            SaveTool::Dcp => "dcp-checkpoint",
            _ => "model.safetensors",
        }
    }

    /// External tools read the model from a plain safetensors file.
    pub fn needs_source_file(&self) -> bool {
        *self != SaveTool::Builtin
    }

    /// Fails early, with what to install, when the tool cannot run here.
    pub fn check(&self, scripts: &Path) -> Result<()> {
        self.check_with(&python(), scripts)
    }

    fn check_with(&self, python: &str, scripts: &Path) -> Result<()> {
        let (script, modules) = match self {
            SaveTool::Builtin | SaveTool::Cmd(_) => return Ok(()),
            SaveTool::Torch => ("save_torch.py", "torch, safetensors"),
            SaveTool::SafetensorsPy => ("save_safetensors.py", "torch, safetensors"),
            SaveTool::SavePretrained => ("save_pretrained.py", "torch, safetensors, transformers"),
            SaveTool::Dcp => (
                "save_dcp.py",
                "torch, safetensors, torch.distributed.checkpoint",
            ),
        };
        let path = scripts.join(script);
        if !path.is_file() {
            bail!("save tool script {} is missing", path.display());
        }
        let probe = Command::new(python)
            .arg("-c")
            .arg(format!("import {modules}"))
            .stdin(Stdio::null())
            .output();
        match probe {
            Ok(out) if out.status.success() => Ok(()),
            Ok(out) => {
                bail!(
                "save tool `{}` needs Python with {modules} (pip install torch safetensors transformers): {}",
                self.name(),
                String::from_utf8_lossy(&out.stderr).lines().last().unwrap_or("import failed")
            )
            }
            Err(e) => bail!(
                "save tool `{}` needs {python} with {modules}: cannot run {python}: {e}",
                self.name()
            ),
        }
    }

    /// Writes the model to `dst`; `src` is the plain safetensors copy that
    /// external tools read. Returns the seconds the tool measured itself,
    /// when it does (the Python tools).
    pub fn save(
        &self,
        model: &Model,
        src: Option<&Path>,
        dst: &Path,
        scripts: &Path,
    ) -> Result<Option<f64>> {
        let src_path = || src.context("external save tools need the source safetensors file");
        let script = match self {
            SaveTool::Builtin => {
                return super::tensor_write::save(&model.on_device, dst).map(|()| None)
            }
            SaveTool::Cmd(template) => {
                let line = template
                    .replace("{src}", &shell_quote(src_path()?))
                    .replace("{dst}", &shell_quote(dst));
                return run_tool(Command::new("sh").arg("-c").arg(&line), &line).map(|_| None);
            }
            SaveTool::Torch => "save_torch.py",
            SaveTool::SafetensorsPy => "save_safetensors.py",
            SaveTool::SavePretrained => "save_pretrained.py",
            SaveTool::Dcp => "save_dcp.py",
        };
        let out = run_tool(
            Command::new(python())
                .arg(scripts.join(script))
                .arg(src_path()?)
                .arg(dst),
            &self.name(),
        )?;
        let seconds = out
            .split_whitespace()
            .next()
            .and_then(|s| s.parse::<f64>().ok())
            .with_context(|| format!("{script} printed {out:?}, not its seconds"))?;
        Ok(Some(seconds))
    }
}

fn python() -> String {
    std::env::var("CKPTFS_PYTHON").unwrap_or_else(|_| "python3".into())
}

/// Runs a tool; its stdout.
fn run_tool(cmd: &mut Command, what: &str) -> Result<String> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("run save tool {what}"))?;
    if !out.status.success() {
        bail!(
            "save tool {what} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Single-quotes a path for `sh -c`.
fn shell_quote(p: &Path) -> String {
    format!("'{}'", p.to_string_lossy().replace('\'', "'\\''"))
}

/// Where `scripts/` is: next to the current folder's checkout, else next to
/// the sources this binary was built from.
pub fn scripts_dir() -> PathBuf {
    let here = PathBuf::from("scripts");
    if here.join("save_torch.py").is_file() {
        return here;
    }
    Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn save_tools_parse_and_bad_ones_are_refused() {
        assert_eq!(
            SaveTool::parse("builtin").expect("builtin"),
            SaveTool::Builtin
        );
        assert_eq!(SaveTool::parse("torch").expect("torch"), SaveTool::Torch);
        assert_eq!(
            SaveTool::parse("save-pretrained").expect("save-pretrained"),
            SaveTool::SavePretrained
        );
        assert_eq!(SaveTool::parse("dcp").expect("dcp"), SaveTool::Dcp);
        // Both write a folder, not a file.
        assert_ne!(SaveTool::SavePretrained.file_name(), "model.safetensors");
        assert_ne!(SaveTool::Dcp.file_name(), "model.safetensors");
        assert_eq!(
            SaveTool::parse("cmd:cp {src} {dst}").expect("cmd"),
            SaveTool::Cmd("cp {src} {dst}".into())
        );
        assert!(SaveTool::parse("cmd:cp a b").is_err());
        assert!(SaveTool::parse("pickle").is_err());
    }

    #[test]
    fn a_python_tool_without_python_says_what_to_install() {
        let scripts = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts");
        let e = SaveTool::Torch
            .check_with("/nonexistent/python3", &scripts)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("torch") && e.contains("/nonexistent/python3"),
            "{e}"
        );
        assert!(SaveTool::Builtin
            .check_with("/nonexistent/python3", &scripts)
            .is_ok());
    }

    #[test]
    fn shell_quoting_survives_quotes() {
        assert_eq!(shell_quote(Path::new("/a b/it's")), "'/a b/it'\\''s'");
    }
}
