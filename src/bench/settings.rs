//! The benchmark's settings: command-line flags over an experiment file over
//! the defaults.

use crate::store::s3::S3Location;
use std::path::{Path, PathBuf};

use anyhow::{bail, Result};
use serde::Serialize;

use super::experiment::Experiment;
use super::load_tool::LoadTool;
use super::machine::DeviceChoice;
use super::model::ModelDtype;
use super::peer::PeerFamily;
use super::preset::Preset;
use super::save_tool::SaveTool;
use super::strategy::SEED_ORDER;

/// The default workload, when neither a preset nor a model is named:
/// OpenLLaMA-3B's first decoder layer in f16 (657 MB, its real tensor
/// shapes), 2 runs. Measured on the 2-core machine with the 14 shipped
/// strategies: 3 runs took 10 m 56 s, over the 10-minute budget of a plain
/// `ckptfs bench`; 2 runs fit. The seeds' comparison is one flag away:
/// `--preset openllama-3b --layers 2` (f32, 3 runs).
pub const DEFAULT_PRESET: &str = "openllama-3b";
/// Decoder layers of the default workload.
pub const DEFAULT_LAYERS: usize = 1;
/// Element type of the default workload.
pub const DEFAULT_DTYPE: ModelDtype = ModelDtype::F16;
/// Runs per strategy of the default workload.
pub const DEFAULT_WORKLOAD_RUNS: usize = 2;
/// Runs per strategy of a named preset or model.
pub const DEFAULT_RUNS: usize = 3;

/// `ckptfs bench` flags.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct BenchArgs {
    /// Experiment file (TOML) with any of the settings below; flags override it.
    #[arg(long, value_name = "FILE.toml")]
    pub experiment: Option<PathBuf>,
    /// Model preset: openllama-3b (exact OpenLLaMA-3B shapes) or tiny; a
    /// named preset has all its layers, in f32, unless --layers/--dtype say
    /// otherwise. With neither --preset nor --model: openllama-3b, 1 layer,
    /// f16, 2 runs (the default workload).
    #[arg(long, conflicts_with = "model")]
    pub preset: Option<String>,
    /// A checkpoint instead of a preset: a .safetensors file, a folder of
    /// shards (model.safetensors.index.json), or a PyTorch .bin/.pt.
    #[arg(long, value_name = "PATH")]
    pub model: Option<PathBuf>,
    /// Keep only the first N decoder layers of the preset.
    #[arg(long, value_name = "N")]
    pub layers: Option<usize>,
    /// Element type of preset weights (default f32 for a named preset); a
    /// --model's floats are cast to it.
    #[arg(long, value_enum)]
    pub dtype: Option<ModelDtype>,
    /// Draw f32 preset values as f16 and widen them, as the seed documents
    /// did (their compression ratios; float16 storage becomes exact).
    #[arg(long)]
    pub f16_values: bool,
    /// Seed of the preset values.
    #[arg(long)]
    pub seed: Option<u64>,
    /// Strategies to run, comma-separated: plain and mount-config names, or
    /// `all` (default: all; with --compare, the seeds' nine: plain,
    /// passthrough and the seven layouts TensorStore writes).
    /// `s3-<config>` is the config on the object store of --store.
    #[arg(long, value_delimiter = ',', value_name = "a,b,c")]
    pub strategies: Option<Vec<String>>,
    /// Object store of the `s3-<config>` strategies (s3://BUCKET/PREFIX;
    /// endpoint and credentials from AWS_*): each run saves through a
    /// writer mount of a fresh prefix below it, loads cold through a
    /// read-only mount with no block cache, and deletes the prefix.
    #[arg(long, value_name = "s3://BUCKET/PREFIX")]
    pub store: Option<String>,
    /// Runs per strategy (default 3; 2 for the default workload, so that a
    /// plain `ckptfs bench` ends within 10 minutes on 2 cores).
    #[arg(long, value_name = "N")]
    pub runs: Option<usize>,
    /// builtin (candle's safetensors writer), torch, safetensors-py,
    /// save-pretrained (transformers, sharded safetensors in a folder), dcp
    /// (torch.distributed.checkpoint), or cmd:"TEMPLATE {src} {dst}".
    #[arg(long, value_name = "TOOL")]
    pub save_tool: Option<String>,
    /// How the checkpoint is read back: builtin (each tensor's bytes read
    /// into its own memory; PyTorch files by candle's pickle reader), safetensors-mmap (Python safe_open + a copy of each tensor) or
    /// torch (torch.load(mmap=True) + a copy of each tensor; needs
    /// --save-tool torch) or dcp (torch.distributed.checkpoint.load; the
    /// default, and the only one, with --save-tool dcp).
    #[arg(long, value_name = "TOOL")]
    pub load_tool: Option<String>,
    /// Direct peers run in the same benchmark, interleaved with the mount
    /// strategies, and paired with them in a ratio table: tensorstore (each
    /// selected seed layout written and read by TensorStore itself), torch
    /// (torch.save/torch.load), safetensors (save_file/load_file), on plain
    /// disk (Python packages; a missing one is reported unavailable).
    #[arg(long, value_delimiter = ',', value_name = "a,b,c")]
    pub compare: Option<Vec<String>>,
    /// Results folder (default: bench-results/<UTC date and time>).
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Folder of mount configs (default: ./mount-configs, else the source tree's).
    #[arg(long, value_name = "DIR")]
    pub configs: Option<PathBuf>,
    /// Folder for the runs' backing dirs and mountpoints; use a real disk,
    /// not tmpfs (default: /var/tmp).
    #[arg(long, value_name = "DIR")]
    pub work_dir: Option<PathBuf>,
    /// Where loads put the tensors: auto (the GPU with the `cuda` feature
    /// and a GPU, else the CPU), cpu, cuda or cuda:N (an error when that GPU
    /// cannot be used).
    #[arg(long, value_name = "DEVICE")]
    pub device: Option<String>,
}

/// Which model to benchmark.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum ModelChoice {
    Preset {
        preset: String,
        layers: usize,
        dtype: ModelDtype,
        f16_values: bool,
        seed: u64,
    },
    Path {
        path: PathBuf,
        cast: Option<ModelDtype>,
    },
}

/// Everything a benchmark run needs to know, resolved.
#[derive(Debug, Clone, Serialize)]
pub struct Settings {
    /// The model to save and load.
    pub model: ModelChoice,
    /// Empty: all.
    pub strategies: Vec<String>,
    /// Where the `s3-<config>` strategies store their checkpoints.
    #[serde(serialize_with = "store_name")]
    pub store: Option<S3Location>,
    /// Runs per strategy.
    pub runs: usize,
    /// The tool that saves the checkpoint.
    #[serde(serialize_with = "save_tool_name")]
    pub save_tool: SaveTool,
    /// The tool that loads it back.
    #[serde(serialize_with = "load_tool_name")]
    pub load_tool: LoadTool,
    /// Direct peers (`--compare`), empty for none.
    pub compare: Vec<PeerFamily>,
    /// Results folder.
    pub out: PathBuf,
    /// Folder of mount configs, one strategy per `*.toml`.
    pub configs: PathBuf,
    /// Folder under which each run's backing dir and mountpoint are made.
    pub work_dir: PathBuf,
    /// Where loads put the tensors.
    #[serde(serialize_with = "device_name")]
    pub device: DeviceChoice,
    /// The experiment file, when one was given.
    pub experiment_file: Option<PathBuf>,
    /// That file's text; the results carry it as `experiment_toml`.
    #[serde(skip)]
    pub experiment_text: Option<String>,
}

fn device_name<S: serde::Serializer>(d: &DeviceChoice, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&match d {
        DeviceChoice::Auto => "auto".to_string(),
        DeviceChoice::Cpu => "cpu".to_string(),
        DeviceChoice::Cuda(n) => format!("cuda:{n}"),
    })
}

fn load_tool_name<S: serde::Serializer>(t: &LoadTool, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(t.name())
}

fn save_tool_name<S: serde::Serializer>(t: &SaveTool, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&t.name())
}

impl Settings {
    /// Resolves the settings: flags over the experiment file (if any) over
    /// the defaults, checking that the choices fit together.
    pub fn resolve(args: &BenchArgs) -> Result<Settings> {
        let (exp, text) = match &args.experiment {
            Some(p) => {
                let (e, t) = Experiment::load(p)?;
                (e, Some(t))
            }
            None => (Experiment::default(), None),
        };
        if exp.preset.is_some() && exp.model.is_some() {
            bail!("the experiment sets both `preset` and `model`; choose one");
        }
        let dtype = match (args.dtype, &exp.dtype) {
            (Some(d), _) => Some(d),
            (None, Some(s)) => Some(ModelDtype::parse(s)?),
            (None, None) => None,
        };
        // A flag naming the model replaces the file's choice of model.
        let (preset, model) = if args.preset.is_some() || args.model.is_some() {
            (args.preset.clone(), args.model.clone())
        } else {
            (exp.preset.clone(), exp.model.clone())
        };
        let layers = args.layers.or(exp.layers);
        let default_workload = model.is_none() && preset.is_none();
        let model = match (model, preset) {
            (Some(path), _) => {
                if layers.is_some() {
                    bail!("--layers applies to a preset, not to --model");
                }
                ModelChoice::Path { path, cast: dtype }
            }
            (None, named) => {
                // A named preset is whole and f32, as the seeds' workload;
                // with none named, the default workload is small enough for
                // the default run to finish in minutes.
                let (name, default_layers, default_dtype) = match named {
                    Some(name) => {
                        let p = Preset::by_name(&name)?;
                        (name, p.layers, ModelDtype::F32)
                    }
                    None => (DEFAULT_PRESET.to_string(), DEFAULT_LAYERS, DEFAULT_DTYPE),
                };
                let layers = layers.unwrap_or(default_layers);
                Preset::by_name(&name)?.with_layers(layers)?;
                ModelChoice::Preset {
                    preset: name,
                    layers,
                    dtype: dtype.unwrap_or(default_dtype),
                    f16_values: args.f16_values || exp.f16_values.unwrap_or(false),
                    seed: args.seed.or(exp.seed).unwrap_or(0),
                }
            }
        };
        let runs = args.runs.or(exp.runs).unwrap_or(if default_workload {
            DEFAULT_WORKLOAD_RUNS
        } else {
            DEFAULT_RUNS
        });
        if runs == 0 {
            bail!("--runs must be at least 1");
        }
        let save_tool = SaveTool::parse(
            args.save_tool
                .as_deref()
                .or(exp.save_tool.as_deref())
                .unwrap_or("builtin"),
        )?;
        // A DCP checkpoint has one reader: DCP's own.
        let default_load = if save_tool == SaveTool::Dcp {
            "dcp"
        } else {
            "builtin"
        };
        let load_tool = LoadTool::parse(
            args.load_tool
                .as_deref()
                .or(exp.load_tool.as_deref())
                .unwrap_or(default_load),
        )?;
        if load_tool == LoadTool::Torch && save_tool != SaveTool::Torch {
            bail!("--load-tool torch reads torch.save checkpoints: add --save-tool torch");
        }
        if load_tool == LoadTool::SafetensorsMmap && save_tool == SaveTool::Torch {
            bail!("--load-tool safetensors-mmap reads safetensors files; --save-tool torch writes a torch zip");
        }
        if (load_tool == LoadTool::Dcp) != (save_tool == SaveTool::Dcp) {
            bail!(
                "--save-tool dcp and --load-tool dcp go together (DCP checkpoints are read by DCP)"
            );
        }
        let compare = args
            .compare
            .clone()
            .or(exp.compare)
            .unwrap_or_default()
            .iter()
            .map(|s| s.trim())
            .filter(|s| !s.is_empty())
            .map(PeerFamily::parse)
            .collect::<Result<Vec<_>>>()?;
        let strategies: Vec<String> = match args.strategies.clone().or(exp.strategies) {
            Some(named) => named
                .into_iter()
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty() && s != "all")
                .collect(),
            // Beside the peers, the seeds' comparison: the strategies they
            // pair with (`--strategies all` for every shipped one).
            None if !compare.is_empty() => SEED_ORDER.iter().map(|s| s.to_string()).collect(),
            None => Vec::new(),
        };
        let out =
            args.out.clone().or(exp.out).unwrap_or_else(|| {
                Path::new("bench-results").join(crate::clock::compact_utc_now())
            });
        let configs = args
            .configs
            .clone()
            .or(exp.configs)
            .unwrap_or_else(default_configs_dir);
        let work_dir = args
            .work_dir
            .clone()
            .or(exp.work_dir)
            .unwrap_or_else(|| PathBuf::from("/var/tmp"));
        let store = match args.store.clone().or(exp.store) {
            Some(s) => Some(S3Location::parse(&s)?),
            None => None,
        };
        Ok(Settings {
            model,
            strategies,
            store,
            runs,
            save_tool,
            load_tool,
            compare,
            out,
            configs,
            work_dir,
            device: DeviceChoice::parse(args.device.as_deref().unwrap_or("auto"))?,
            experiment_file: args.experiment.clone(),
            experiment_text: text,
        })
    }
}

fn store_name<S: serde::Serializer>(s: &Option<S3Location>, ser: S) -> Result<S::Ok, S::Error> {
    match s {
        Some(at) => ser.serialize_str(&at.to_string()),
        None => ser.serialize_none(),
    }
}

fn default_configs_dir() -> PathBuf {
    let here = PathBuf::from("mount-configs");
    if here.is_dir() {
        return here;
    }
    Path::new(env!("CARGO_MANIFEST_DIR")).join("mount-configs")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_flags_give_the_documented_default() {
        let s = Settings::resolve(&BenchArgs::default()).expect("defaults");
        assert_eq!(
            s.model,
            ModelChoice::Preset {
                preset: DEFAULT_PRESET.into(),
                layers: DEFAULT_LAYERS,
                dtype: DEFAULT_DTYPE,
                f16_values: false,
                seed: 0
            }
        );
        assert_eq!(s.runs, DEFAULT_WORKLOAD_RUNS);
        assert!(s.strategies.is_empty());
        assert_eq!(s.save_tool, SaveTool::Builtin);
    }

    #[test]
    fn compare_alone_runs_the_seeds_strategies_and_all_means_all() {
        let compare = Some(vec!["torch".to_string()]);
        let s = Settings::resolve(&BenchArgs {
            compare: compare.clone(),
            ..Default::default()
        })
        .expect("compare");
        assert_eq!(s.strategies, SEED_ORDER.map(String::from).to_vec());
        let s = Settings::resolve(&BenchArgs {
            compare,
            strategies: Some(vec!["all".into()]),
            ..Default::default()
        })
        .expect("compare, all");
        assert!(s.strategies.is_empty());
    }

    #[test]
    fn flags_override_the_experiment_file() {
        let args = BenchArgs {
            experiment: Some(
                Path::new(env!("CARGO_MANIFEST_DIR")).join("experiments/openllama-3b-2layers.toml"),
            ),
            runs: Some(1),
            preset: Some("tiny".into()),
            ..Default::default()
        };
        let s = Settings::resolve(&args).expect("resolve");
        assert_eq!(s.runs, 1);
        match s.model {
            ModelChoice::Preset {
                preset,
                layers,
                dtype,
                ..
            } => {
                assert_eq!(preset, "tiny");
                assert_eq!(layers, 2); // from the file
                assert_eq!(dtype, ModelDtype::F32);
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(s.out, PathBuf::from("bench-results/openllama-3b-2layers"));
    }

    #[test]
    fn a_named_preset_is_whole_and_f32() {
        let args = BenchArgs {
            preset: Some("tiny".into()),
            ..Default::default()
        };
        let s = Settings::resolve(&args).expect("resolve");
        assert_eq!(s.runs, DEFAULT_RUNS);
        match s.model {
            ModelChoice::Preset { layers, dtype, .. } => {
                assert_eq!(layers, 2);
                assert_eq!(dtype, ModelDtype::F32);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn layers_beyond_the_preset_are_refused() {
        let args = BenchArgs {
            preset: Some("tiny".into()),
            layers: Some(3),
            ..Default::default()
        };
        assert!(Settings::resolve(&args).is_err());
    }

    #[test]
    fn dcp_saves_are_read_by_dcp_and_only_they_are() {
        let args = |save: &str, load: Option<&str>| BenchArgs {
            preset: Some("tiny".into()),
            save_tool: Some(save.into()),
            load_tool: load.map(String::from),
            ..Default::default()
        };
        let s = Settings::resolve(&args("dcp", None)).expect("dcp");
        assert_eq!(s.load_tool, LoadTool::Dcp);
        let s = Settings::resolve(&args("save-pretrained", None)).expect("save-pretrained");
        assert_eq!(s.load_tool, LoadTool::Builtin);
        assert!(Settings::resolve(&args("save-pretrained", Some("safetensors-mmap"))).is_ok());
        for (save, load) in [
            ("dcp", "builtin"),
            ("dcp", "safetensors-mmap"),
            ("save-pretrained", "dcp"),
            ("save-pretrained", "torch"),
            ("builtin", "dcp"),
        ] {
            assert!(
                Settings::resolve(&args(save, Some(load))).is_err(),
                "{save} + {load}"
            );
        }
    }
}
