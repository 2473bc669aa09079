//! The machine a benchmark ran on, and the device tensors are loaded onto.

use std::path::Path;

use anyhow::{bail, Result};
use candle_core::Device;
use serde::Serialize;

use super::disk;

/// The machine a benchmark ran on, recorded with its results.
#[derive(Debug, Clone, Serialize)]
pub struct MachineInfo {
    /// CPU model, from `/proc/cpuinfo`.
    pub cpu_model: String,
    /// CPUs this process may use.
    pub cores: usize,
    /// Total memory in bytes.
    pub memory_bytes: u64,
    /// Kernel release.
    pub kernel: String,
    /// Distribution name, from `/etc/os-release`.
    pub os: String,
    /// Where tensors were loaded: "cpu" or "cuda:0 (NAME)".
    pub device: String,
    /// Why the CPU was used, when it was.
    pub device_note: Option<String>,
    /// Filesystem of the folder holding the backing dirs.
    pub work_filesystem: Option<String>,
    /// Version of the ckptfs that ran the benchmark.
    pub ckptfs_version: String,
}

impl MachineInfo {
    /// Describes this machine; `device` and `device_note` as the bench chose them, `work_dir` the
    /// folder holding the backing dirs.
    pub fn collect(device: &str, device_note: Option<String>, work_dir: &Path) -> MachineInfo {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu_model = cpuinfo
            .lines()
            .find(|l| l.starts_with("model name"))
            .and_then(|l| l.split_once(':'))
            .map(|(_, v)| v.trim().to_string())
            .unwrap_or_else(|| "unknown".into());
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        let os = std::fs::read_to_string("/etc/os-release")
            .unwrap_or_default()
            .lines()
            .find_map(|l| l.strip_prefix("PRETTY_NAME="))
            .map(|v| v.trim_matches('"').to_string())
            .unwrap_or_else(|| "unknown".into());
        MachineInfo {
            cpu_model,
            cores: std::thread::available_parallelism()
                .map(|p| p.get())
                .unwrap_or(1),
            memory_bytes: meminfo_kb(&meminfo, "MemTotal:").unwrap_or(0) * 1024,
            kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
                .map(|s| s.trim().to_string())
                .unwrap_or_else(|_| "unknown".into()),
            os,
            device: device.to_string(),
            device_note,
            work_filesystem: disk::filesystem_type(work_dir),
            ckptfs_version: env!("CARGO_PKG_VERSION").to_string(),
        }
    }
}

/// Memory the kernel says is available now, in bytes.
pub fn memory_available() -> Option<u64> {
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok()?;
    meminfo_kb(&meminfo, "MemAvailable:").map(|kb| kb * 1024)
}

fn meminfo_kb(meminfo: &str, key: &str) -> Option<u64> {
    meminfo
        .lines()
        .find(|l| l.starts_with(key))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// Where the bench loads tensors, as `--device` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceChoice {
    /// The GPU when this build has CUDA and the machine has one, else the CPU.
    Auto,
    Cpu,
    Cuda(usize),
}

impl DeviceChoice {
    /// `auto`, `cpu`, `cuda` or `cuda:N`.
    pub fn parse(s: &str) -> Result<DeviceChoice> {
        match s {
            "auto" => Ok(DeviceChoice::Auto),
            "cpu" => Ok(DeviceChoice::Cpu),
            "cuda" | "gpu" => Ok(DeviceChoice::Cuda(0)),
            _ => match s.strip_prefix("cuda:").map(str::parse::<usize>) {
                Some(Ok(n)) => Ok(DeviceChoice::Cuda(n)),
                _ => bail!("--device `{s}` is not allowed; allowed: auto, cpu, cuda, cuda:N"),
            },
        }
    }

    /// The device, its name for the results, and why it differs from what
    /// was asked (auto only). A GPU asked for by name that cannot be used is
    /// an error, not a silent CPU run.
    pub fn open(self) -> Result<(Device, String, Option<String>)> {
        match self {
            DeviceChoice::Auto => Ok(select_device()),
            DeviceChoice::Cpu => Ok((Device::Cpu, "cpu".into(), None)),
            DeviceChoice::Cuda(n) => open_cuda(n),
        }
    }
}

#[cfg(feature = "cuda")]
fn open_cuda(n: usize) -> Result<(Device, String, Option<String>)> {
    let d = Device::new_cuda(n).map_err(|e| anyhow::anyhow!("--device cuda:{n}: {e}"))?;
    let name = gpu_name().unwrap_or_else(|| "GPU".into());
    Ok((d, format!("cuda:{n} ({name})"), None))
}

#[cfg(not(feature = "cuda"))]
fn open_cuda(n: usize) -> Result<(Device, String, Option<String>)> {
    bail!(
        "--device cuda:{n}: this ckptfs was built without CUDA; build it with `cargo build --release --features cuda` (needs the CUDA toolkit)"
    )
}

/// The GPU when this build has CUDA and the machine has one, else the CPU,
/// with a note saying why. Never an error.
pub fn select_device() -> (Device, String, Option<String>) {
    #[cfg(feature = "cuda")]
    {
        match Device::new_cuda(0) {
            Ok(d) => {
                let name = gpu_name().unwrap_or_else(|| "GPU".into());
                (d, format!("cuda:0 ({name})"), None)
            }
            Err(e) => (
                Device::Cpu,
                "cpu".into(),
                Some(format!("no usable CUDA device ({e}); using the CPU")),
            ),
        }
    }
    #[cfg(not(feature = "cuda"))]
    {
        (
            Device::Cpu,
            "cpu".into(),
            Some("built without the `cuda` feature; using the CPU".into()),
        )
    }
}

#[cfg(feature = "cuda")]
fn gpu_name() -> Option<String> {
    let out = std::process::Command::new("nvidia-smi")
        .args(["--query-gpu=name", "--format=csv,noheader", "-i", "0"])
        .output()
        .ok()?;
    let name = String::from_utf8_lossy(&out.stdout).trim().to_string();
    (!name.is_empty()).then_some(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_choices_parse_and_a_named_gpu_is_never_a_silent_cpu() {
        assert_eq!(DeviceChoice::parse("auto").ok(), Some(DeviceChoice::Auto));
        assert_eq!(DeviceChoice::parse("cpu").ok(), Some(DeviceChoice::Cpu));
        assert_eq!(
            DeviceChoice::parse("cuda").ok(),
            Some(DeviceChoice::Cuda(0))
        );
        assert_eq!(
            DeviceChoice::parse("cuda:3").ok(),
            Some(DeviceChoice::Cuda(3))
        );
        assert!(DeviceChoice::parse("cuda:x").is_err());
        assert!(DeviceChoice::parse("tpu").is_err());
        assert!(DeviceChoice::Cpu.open().is_ok_and(|(d, _, _)| d.is_cpu()));
        // Without a usable GPU (or without the feature) cuda is an error.
        if let Ok((d, name, _)) = DeviceChoice::Cuda(0).open() {
            assert!(d.is_cuda() && name.starts_with("cuda:0"));
        }
    }

    #[test]
    fn meminfo_values_are_read_in_kb() {
        let m = "MemTotal:       24000000 kB\nMemAvailable:   20000000 kB\n";
        assert_eq!(meminfo_kb(m, "MemTotal:"), Some(24_000_000));
        assert_eq!(meminfo_kb(m, "MemAvailable:"), Some(20_000_000));
        assert_eq!(meminfo_kb(m, "Swap:"), None);
    }
}
