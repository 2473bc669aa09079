//! The benchmark's results: every run, every figure, and per-strategy
//! summaries, as written to `results.json`.

use serde::Serialize;

use super::machine::MachineInfo;
use super::runner::RunResult;
use super::settings::Settings;
use super::stats::{improvement_pct, MeanStd};
use super::strategy::{Strategy, PLAIN};
use super::verify::Narrowing;

/// The preferred baseline of the improvement columns (the seeds' basic
/// TensorStore layout); `plain` when it did not run.
pub const PREFERRED_BASELINE: &str = "tensorstore-basic";

/// The model the benchmark saved and loaded.
#[derive(Debug, Clone, Serialize)]
pub struct ModelInfo {
    /// Where the tensors came from, in words.
    pub source: String,
    /// Number of tensors.
    pub tensors: usize,
    /// Elements over all tensors.
    pub parameters: usize,
    /// Bytes over all tensors.
    pub bytes: usize,
    /// The dtypes present, e.g. `F32, I64`.
    pub dtypes: String,
}

/// Everything one `ckptfs bench` measured, written as `results.json`.
#[derive(Debug, Clone, Serialize)]
pub struct BenchResults {
    /// When the benchmark started (ISO 8601, UTC).
    pub started_utc: String,
    /// When it finished (ISO 8601, UTC).
    pub finished_utc: String,
    /// The command line it ran with.
    pub command: Vec<String>,
    /// The settings after flags, experiment file and defaults were combined.
    pub settings: Settings,
    /// The experiment file's text, when one was given.
    pub experiment_toml: Option<String>,
    /// The model measured.
    pub model: ModelInfo,
    /// The machine it ran on.
    pub machine: MachineInfo,
    /// The save tool, in words.
    pub save_tool: String,
    /// The load tool, in words.
    pub load_tool: String,
    /// The strategy the improvement percentages are relative to.
    pub baseline: Option<String>,
    /// Whether loads were cold, in words.
    pub page_cache: String,
    /// One result per strategy, in the order they ran.
    pub strategies: Vec<StrategyResult>,
    /// Direct peers (`--compare`), paired with the strategies.
    pub peers: Vec<super::peer::PeerResult>,
    /// Where the bench's own wall time went.
    pub wall: super::wall::WallTime,
}

/// How a strategy's (or peer's) runs went.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Every run completed and verified.
    Ok,
    /// A run failed or did not verify.
    Failed,
    /// The mount did not start (a config this build refuses, ...).
    Unavailable,
}

/// A run that produced no figures.
#[derive(Debug, Clone, Serialize)]
pub struct RunFailure {
    /// Which run it was, from 1.
    pub run: usize,
    /// What went wrong.
    pub error: String,
}

/// One strategy's runs, failures and summary.
#[derive(Debug, Clone, Serialize)]
pub struct StrategyResult {
    /// The strategy's name (`plain`, or a mount config's name).
    pub name: String,
    /// Whether every run completed and verified.
    pub status: Status,
    /// Why it is unavailable or failed.
    pub reason: Option<String>,
    /// The mount config file; `None` for `plain`.
    pub config_path: Option<String>,
    /// The mount config's text; `None` for `plain`.
    pub config_toml: Option<String>,
    /// How the layout stores float tensors.
    pub narrowing: Narrowing,
    /// Whether that narrowing loses precision (loads then verify within a tolerance).
    pub lossy: bool,
    /// The runs that completed, in order.
    pub runs: Vec<RunResult>,
    /// The runs that did not, with their errors.
    pub failures: Vec<RunFailure>,
    /// Means over the completed runs; `None` when none completed.
    pub summary: Option<Summary>,
}

/// Mean ± sample std over a strategy's completed runs.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Summary {
    /// Seconds to save.
    pub save_s: MeanStd,
    /// Seconds to load.
    pub load_s: MeanStd,
    /// Bytes the backing dir takes, as `du` counts them.
    pub backing_bytes: MeanStd,
    /// Sum of the backing files' lengths.
    pub backing_apparent_bytes: MeanStd,
    /// Regular files in the backing dir.
    pub backing_files: MeanStd,
    /// The mount daemon's peak resident memory, when it could be read.
    pub daemon_peak_rss_bytes: Option<MeanStd>,
    /// Lower save time than the baseline, in % of the baseline's.
    pub save_improvement_pct: Option<f64>,
    /// Lower load time than the baseline, in % of the baseline's.
    pub load_improvement_pct: Option<f64>,
    /// Every run left the same number of bytes in the backing files.
    pub sizes_equal_across_runs: bool,
    /// Every run's load verified.
    pub all_verified: bool,
}

impl StrategyResult {
    /// A result for strategy `s` with no runs yet.
    pub fn new(s: &Strategy) -> StrategyResult {
        StrategyResult {
            name: s.name.clone(),
            status: Status::Ok,
            reason: None,
            config_path: s.config.as_ref().map(|c| c.path.display().to_string()),
            config_toml: s.config.as_ref().map(|c| c.toml.clone()),
            narrowing: s.narrowing(),
            lossy: s.narrowing().is_lossy(),
            runs: Vec::new(),
            failures: Vec::new(),
            summary: None,
        }
    }

    /// Whether the mount did not start.
    pub fn is_unavailable(&self) -> bool {
        self.status == Status::Unavailable
    }
}

/// Fills in statuses, summaries and improvements; returns the baseline used.
pub fn summarise(strategies: &mut [StrategyResult]) -> Option<String> {
    for s in strategies.iter_mut() {
        if s.status == Status::Unavailable {
            continue;
        }
        let verified = s.runs.iter().all(|r| r.verification.passed);
        if !s.failures.is_empty() || !verified {
            s.status = Status::Failed;
            if s.reason.is_none() {
                s.reason = s
                    .failures
                    .first()
                    .map(|f| format!("run {}: {}", f.run, f.error))
                    .or_else(|| {
                        s.runs.iter().find_map(|r| {
                            r.verification
                                .failure
                                .as_ref()
                                .map(|why| format!("run {}: verification failed: {why}", r.run))
                        })
                    });
            }
        }
        if s.runs.is_empty() {
            continue;
        }
        let col = |f: &dyn Fn(&RunResult) -> f64| -> MeanStd {
            MeanStd::of(&s.runs.iter().map(f).collect::<Vec<_>>())
        };
        let rss: Vec<f64> = s
            .runs
            .iter()
            .filter_map(|r| r.daemon_peak_rss_bytes().map(|b| b as f64))
            .collect();
        let first = s.runs[0].backing.apparent_bytes;
        s.summary = Some(Summary {
            save_s: col(&|r| r.save_s),
            load_s: col(&|r| r.load_s),
            backing_bytes: col(&|r| r.backing.bytes as f64),
            backing_apparent_bytes: col(&|r| r.backing.apparent_bytes as f64),
            backing_files: col(&|r| r.backing.files as f64),
            daemon_peak_rss_bytes: (!rss.is_empty()).then(|| MeanStd::of(&rss)),
            save_improvement_pct: None,
            load_improvement_pct: None,
            sizes_equal_across_runs: s.runs.iter().all(|r| r.backing.apparent_bytes == first),
            all_verified: verified,
        });
    }
    let has_runs = |name: &str| {
        strategies
            .iter()
            .any(|s| s.name == name && s.summary.is_some() && s.status == Status::Ok)
    };
    let baseline = [PREFERRED_BASELINE, PLAIN]
        .into_iter()
        .find(|n| has_runs(n))?
        .to_string();
    let (bs, bl) = strategies
        .iter()
        .find(|s| s.name == baseline)
        .and_then(|s| s.summary.as_ref())
        .map(|m| (m.save_s.mean, m.load_s.mean))?;
    for s in strategies.iter_mut() {
        if let Some(m) = s.summary.as_mut() {
            m.save_improvement_pct = improvement_pct(bs, m.save_s.mean);
            m.load_improvement_pct = improvement_pct(bl, m.load_s.mean);
        }
    }
    Some(baseline)
}
