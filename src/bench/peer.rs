//! Direct peers (`--compare`): the tools a user would otherwise use —
//! TensorStore writing the seeds' Zarr layouts itself, `torch.save`/`load`,
//! safetensors `save_file`/`load_file` — run on the same model, disk and
//! page-cache policy in the same benchmark, interleaved with the mount
//! strategies, and paired with the mount config that mirrors each one.
//!
//! Every peer run goes to one `scripts/peer_bench.py --serve` process, which
//! times the save until the data is durable, drops the page cache, times the
//! load, and checks every tensor against the source outside the timings.

use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};

use anyhow::{anyhow, bail, Context, Result};
use serde::{Deserialize, Serialize};

use super::results::{RunFailure, Status, StrategyResult};
use super::stats::MeanStd;
use super::strategy::{Strategy, PLAIN, SEED_ORDER};

/// A family of direct peers named by `--compare`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PeerFamily {
    Tensorstore,
    Torch,
    Safetensors,
}

impl PeerFamily {
    /// The family a `--compare` value names.
    pub fn parse(s: &str) -> Result<PeerFamily> {
        Ok(match s {
            "tensorstore" => PeerFamily::Tensorstore,
            "torch" => PeerFamily::Torch,
            "safetensors" => PeerFamily::Safetensors,
            other => {
                bail!("unknown --compare peer `{other}`; known: tensorstore, torch, safetensors")
            }
        })
    }
}

/// The seeds' layouts TensorStore writes itself (scripts/tensorstore_seed.py),
/// each named as the mount config that stores the same layout.
/// (The seed order after `plain` and `passthrough`.)
pub const TENSORSTORE_LAYOUTS: &[&str] = SEED_ORDER.split_at(2).1;

/// One direct peer.
#[derive(Debug, Clone, PartialEq)]
pub struct Peer {
    /// Its name in the results, also the script's PEER argument
    /// (`tensorstore:t5x`, `torch`, `safetensors`).
    pub name: String,
    /// The strategy it is compared with.
    pub pairs_with: String,
}

/// The peers of `families` for the selected strategies: a TensorStore peer
/// for each selected seed layout; torch and safetensors pair with `plain`.
pub fn select(families: &[PeerFamily], strategies: &[Strategy]) -> Result<Vec<Peer>> {
    let mut out = Vec::new();
    for family in families {
        match family {
            PeerFamily::Tensorstore => {
                let layouts: Vec<&str> = strategies
                    .iter()
                    .map(|s| s.name.as_str())
                    .filter(|n| TENSORSTORE_LAYOUTS.contains(n))
                    .collect();
                if layouts.is_empty() {
                    bail!(
                        "--compare tensorstore pairs TensorStore with the seed layouts' mount configs ({}); none of them is among the strategies",
                        TENSORSTORE_LAYOUTS.join(", ")
                    );
                }
                out.extend(layouts.into_iter().map(|l| Peer {
                    name: format!("tensorstore:{l}"),
                    pairs_with: l.to_string(),
                }));
            }
            PeerFamily::Torch | PeerFamily::Safetensors => out.push(Peer {
                name: if *family == PeerFamily::Torch {
                    "torch"
                } else {
                    "safetensors"
                }
                .to_string(),
                pairs_with: PLAIN.to_string(),
            }),
        }
    }
    out.dedup();
    Ok(out)
}

/// Every figure of one peer run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PeerRun {
    /// Which run of the peer this was, from 1.
    #[serde(default)]
    pub run: usize,
    /// Seconds until the saved data was durable.
    pub save_s: f64,
    /// Seconds to load it back, page cache dropped first.
    pub load_s: f64,
    /// Bytes and files the peer left on disk.
    pub bytes: u64,
    /// Files it left.
    pub files: u64,
    /// Largest difference from the source (0 for lossless peers).
    pub max_abs_error: f64,
}

/// Why a peer run produced no figures.
#[derive(Debug)]
pub enum PeerError {
    /// Its Python package is missing (or cannot hold the model's dtype).
    Unavailable(String),
    Failed(anyhow::Error),
}

/// One Python process for every peer run of a benchmark
/// (`peer_bench.py --serve`): the interpreter, the packages and the model
/// load once instead of once per run.
pub struct PeerServer {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
    log: PathBuf,
}

/// The server's answer to one run.
#[derive(Deserialize)]
#[serde(rename_all = "lowercase")]
enum Answer {
    Ok(PeerRun),
    Unavailable(String),
    Failed(String),
}

impl PeerServer {
    /// Starts the server on `source` (the model as a safetensors file); its
    /// stderr goes to `log`.
    pub fn start(source: &Path, scripts: &Path, log: &Path) -> Result<PeerServer> {
        let err = File::create(log).with_context(|| format!("create {}", log.display()))?;
        let mut child = Command::new(super::load_tool::python())
            .arg(scripts.join("peer_bench.py"))
            .arg("--serve")
            .arg(source)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(err)
            .spawn()
            .context("start peer_bench.py --serve")?;
        let (Some(stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
            let _ = child.kill();
            bail!("peer_bench.py --serve: no pipes");
        };
        Ok(PeerServer {
            child,
            stdin,
            stdout: BufReader::new(stdout),
            log: log.to_path_buf(),
        })
    }

    /// Runs `peer` once in `dir` (left for the caller to remove). A server
    /// that died is an error with the tail of its log; the caller starts
    /// another for the next run.
    pub fn run(
        &mut self,
        peer: &Peer,
        run: usize,
        dir: &Path,
    ) -> std::result::Result<PeerRun, PeerError> {
        let dir_text = dir.to_str().filter(|d| !d.contains(['\t', '\n']));
        let Some(dir_text) = dir_text else {
            return Err(PeerError::Failed(anyhow!(
                "peer work folder {} is not a plain UTF-8 path",
                dir.display()
            )));
        };
        let mut line = String::new();
        let asked = writeln!(self.stdin, "{}\t{dir_text}", peer.name)
            .and_then(|()| self.stdin.flush())
            .and_then(|()| self.stdout.read_line(&mut line));
        match asked {
            Ok(n) if n > 0 => {}
            Ok(_) | Err(_) => {
                return Err(PeerError::Failed(anyhow!(
                    "peer_bench.py --serve stopped during {}: {}",
                    peer.name,
                    self.log_tail()
                )))
            }
        }
        let answer: Answer = serde_json::from_str(line.trim())
            .with_context(|| format!("peer_bench.py {} answered {line:?}", peer.name))
            .map_err(PeerError::Failed)?;
        match answer {
            Answer::Ok(mut r) => {
                r.run = run;
                Ok(r)
            }
            Answer::Unavailable(why) => Err(PeerError::Unavailable(why)),
            Answer::Failed(why) => Err(PeerError::Failed(anyhow!(
                "peer_bench.py {} failed: {why}",
                peer.name
            ))),
        }
    }

    /// Whether the process still runs.
    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let tail: String = text.chars().rev().take(2000).collect();
        tail.chars().rev().collect::<String>().trim().to_string()
    }
}

impl Drop for PeerServer {
    fn drop(&mut self) {
        // End of input ends the server; a stuck one is killed.
        let _ = self.stdin.flush();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A peer's runs and their summary, paired with its mount strategy.
#[derive(Debug, Clone, Serialize)]
pub struct PeerResult {
    /// The peer's name (`tensorstore:t5x`, `torch`, `safetensors`).
    pub name: String,
    /// The mount strategy it is compared with.
    pub pairs_with: String,
    /// Whether all its runs completed and verified.
    pub status: Status,
    /// Why it did not, when it did not.
    pub reason: Option<String>,
    /// The runs that produced figures.
    pub runs: Vec<PeerRun>,
    /// The runs that did not, with their errors.
    pub failures: Vec<RunFailure>,
    /// Save time over its runs.
    pub save_s: Option<MeanStd>,
    /// Load time over its runs.
    pub load_s: Option<MeanStd>,
    /// Bytes left on disk over its runs.
    pub bytes: Option<MeanStd>,
    /// The peer's mean time over the paired strategy's: above 1, the mount
    /// is that many times faster than the peer.
    pub save_speedup: Option<f64>,
    /// The same ratio for load times.
    pub load_speedup: Option<f64>,
}

impl PeerResult {
    /// A result for peer `p` with no runs yet.
    pub fn new(p: &Peer) -> PeerResult {
        PeerResult {
            name: p.name.clone(),
            pairs_with: p.pairs_with.clone(),
            status: Status::Ok,
            reason: None,
            runs: Vec::new(),
            failures: Vec::new(),
            save_s: None,
            load_s: None,
            bytes: None,
            save_speedup: None,
            load_speedup: None,
        }
    }
}

/// Fills in the peers' summaries and their ratios to the paired strategies.
pub fn summarise(peers: &mut [PeerResult], strategies: &[StrategyResult]) {
    for p in peers.iter_mut() {
        if p.status == Status::Unavailable {
            continue;
        }
        if !p.failures.is_empty() {
            p.status = Status::Failed;
        }
        if p.runs.is_empty() {
            continue;
        }
        let of = |f: fn(&PeerRun) -> f64| MeanStd::of(&p.runs.iter().map(f).collect::<Vec<_>>());
        let (save, load) = (of(|r| r.save_s), of(|r| r.load_s));
        p.bytes = Some(of(|r| r.bytes as f64));
        let paired = strategies
            .iter()
            .find(|s| s.name == p.pairs_with)
            .and_then(|s| s.summary.as_ref());
        if let Some(m) = paired {
            let ratio = |peer: f64, mount: f64| (mount > 0.0).then(|| peer / mount);
            p.save_speedup = ratio(save.mean, m.save_s.mean);
            p.load_speedup = ratio(load.mean, m.load_s.mean);
        }
        p.save_s = Some(save);
        p.load_s = Some(load);
    }
}

/// The pairs as a markdown table (empty without peers).
pub fn table(peers: &[PeerResult], strategies: &[StrategyResult]) -> String {
    if peers.is_empty() {
        return String::new();
    }
    let mut t = String::from(
        "| mount strategy | direct peer | mount save s | peer save s | save: mount speedup | mount load s | peer load s | load: mount speedup | peer size MB |\n|---|---|---|---|---|---|---|---|---|\n",
    );
    let secs = |m: Option<MeanStd>| m.map_or("—".to_string(), |m| m.display(3));
    let times = |x: Option<f64>| x.map_or("—".to_string(), |x| format!("{x:.2}×"));
    for p in peers {
        let mount = strategies
            .iter()
            .find(|s| s.name == p.pairs_with)
            .and_then(|s| s.summary.as_ref());
        if p.status == Status::Unavailable {
            t.push_str(&format!(
                "| {} | {} | unavailable: {} |||||||\n",
                p.pairs_with,
                p.name,
                p.reason.as_deref().unwrap_or("").replace('\n', " ")
            ));
            continue;
        }
        t.push_str(&format!(
            "| {} | {}{} | {} | {} | {} | {} | {} | {} | {} |\n",
            p.pairs_with,
            p.name,
            if p.failures.is_empty() {
                ""
            } else {
                " (FAILED runs)"
            },
            secs(mount.map(|m| m.save_s)),
            secs(p.save_s),
            times(p.save_speedup),
            secs(mount.map(|m| m.load_s)),
            secs(p.load_s),
            times(p.load_speedup),
            p.bytes
                .map_or("—".to_string(), |b| format!("{:.1}", b.mean / 1e6)),
        ));
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strategy(name: &str) -> Strategy {
        Strategy {
            name: name.into(),
            config: None,
            store: None,
        }
    }

    #[test]
    fn peers_pair_with_the_selected_layouts() {
        let s = [strategy("plain"), strategy("t5x"), strategy("default")];
        let all = [
            PeerFamily::Tensorstore,
            PeerFamily::Torch,
            PeerFamily::Safetensors,
        ];
        let peers = select(&all, &s).expect("peers");
        let names: Vec<_> = peers
            .iter()
            .map(|p| (p.name.as_str(), p.pairs_with.as_str()))
            .collect();
        assert_eq!(
            names,
            [
                ("tensorstore:t5x", "t5x"),
                ("torch", "plain"),
                ("safetensors", "plain")
            ]
        );
        assert!(select(&[PeerFamily::Tensorstore], &s[..1]).is_err());
        assert!(PeerFamily::parse("orbax").is_err());
    }

    #[test]
    fn speedups_are_the_peer_time_over_the_mount_time() {
        let mut mount = StrategyResult::new(&strategy("t5x"));
        mount.summary = Some(super::super::results::Summary {
            save_s: MeanStd::of(&[2.0, 2.0]),
            load_s: MeanStd::of(&[4.0, 4.0]),
            ..Default::default()
        });
        let mut peers = vec![PeerResult::new(&Peer {
            name: "tensorstore:t5x".into(),
            pairs_with: "t5x".into(),
        })];
        for (run, (save_s, load_s)) in [(5.0, 2.0), (7.0, 2.0)].into_iter().enumerate() {
            peers[0].runs.push(PeerRun {
                run,
                save_s,
                load_s,
                bytes: 10,
                files: 1,
                max_abs_error: 0.0,
            });
        }
        summarise(&mut peers, std::slice::from_ref(&mount));
        assert_eq!(peers[0].save_speedup, Some(3.0));
        assert_eq!(peers[0].load_speedup, Some(0.5));
        assert!(table(&peers, &[mount])
            .contains("| t5x | tensorstore:t5x | 2.000 ± 0.000 | 6.000 ± 1.414 | 3.00× |"));
    }
}
