//! An experiment file: every choice of a study in one TOML file, so the
//! study can be run again as it was. Command-line flags override it.
//!
//! ```toml
//! preset = "openllama-3b"      # or: model = "path/to/model.safetensors"
//! layers = 2
//! dtype = "f32"                # f16 | bf16 | f32
//! strategies = ["plain", "passthrough", "chunked"]   # absent: all
//! runs = 3
//! save_tool = "builtin"        # torch | safetensors-py | "cmd:TEMPLATE {src} {dst}"
//! load_tool = "builtin"        # safetensors-mmap | torch
//! compare = ["tensorstore", "torch", "safetensors"]   # direct peers, same run
//! out = "bench-results/openllama-3b-2layers"
//! ```

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::Deserialize;

/// The choices of one study, as an experiment file names them; every key is optional (absent: the
/// flag or its default).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Experiment {
    /// A model preset (`openllama-3b`, `tiny`).
    pub preset: Option<String>,
    /// A checkpoint file or folder, instead of a preset.
    pub model: Option<PathBuf>,
    /// Keep only the first N decoder layers of a preset.
    pub layers: Option<usize>,
    /// f16, bf16 or f32.
    pub dtype: Option<String>,
    /// Draw f32 preset values as f16 and widen them, as the seeds did.
    pub f16_values: Option<bool>,
    /// Seed of the preset values.
    pub seed: Option<u64>,
    /// Strategies to run, by name (absent: all).
    pub strategies: Option<Vec<String>>,
    /// Runs of each strategy.
    pub runs: Option<usize>,
    /// Tool that saves the checkpoint (`builtin`, `torch`, `safetensors-py`,
    /// `save-pretrained`, `dcp`, `cmd:TEMPLATE`).
    pub save_tool: Option<String>,
    /// Tool that loads it back (`builtin`, `safetensors-mmap`, `torch`, `dcp`).
    pub load_tool: Option<String>,
    /// Direct peers run beside the mount strategies.
    pub compare: Option<Vec<String>>,
    /// Folder the results are written to.
    pub out: Option<PathBuf>,
    /// Folder of mount configs.
    pub configs: Option<PathBuf>,
    /// Folder under which each run's backing dir and mountpoint are made.
    pub work_dir: Option<PathBuf>,
    /// Object store (`s3://BUCKET/PREFIX`) of the `s3-<config>` strategies.
    pub store: Option<String>,
}

impl Experiment {
    /// Reads an experiment file; returns it with its text, which the results keep verbatim.
    pub fn load(path: &Path) -> Result<(Experiment, String)> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("read experiment {}", path.display()))?;
        let e = toml::from_str(&text).with_context(|| format!("experiment {}", path.display()))?;
        Ok((e, text))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_example_parses() {
        let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("experiments/openllama-3b-2layers.toml");
        let (e, _) = Experiment::load(&p).expect("example experiment");
        assert_eq!(e.preset.as_deref(), Some("openllama-3b"));
        assert_eq!(e.layers, Some(2));
    }

    #[test]
    fn unknown_keys_are_refused_by_name() {
        let e = toml::from_str::<Experiment>("preset = \"tiny\"\nrunz = 3\n").unwrap_err();
        assert!(e.to_string().contains("runz"), "{e}");
    }
}
