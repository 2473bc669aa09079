//! The machine a benchmark ran on, and the device tensors are loaded onto.

use std::path::Path;

use candle_core::Device;
use serde::Serialize;

use super::disk;

#[derive(Debug, Clone, Serialize)]
pub struct MachineInfo {
    pub cpu_model: String,
    pub cores: usize,
    pub memory_bytes: u64,
    pub kernel: String,
    pub os: String,
    /// Where tensors were loaded: "cpu" or "cuda:0 (NAME)".
    pub device: String,
    /// Why the CPU was used, when it was.
    pub device_note: Option<String>,
    /// Filesystem of the folder holding the backing dirs.
    pub work_filesystem: Option<String>,
    pub ckptfs_version: String,
}

impl MachineInfo {
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
    fn meminfo_values_are_read_in_kb() {
        let m = "MemTotal:       24000000 kB\nMemAvailable:   20000000 kB\n";
        assert_eq!(meminfo_kb(m, "MemTotal:"), Some(24_000_000));
        assert_eq!(meminfo_kb(m, "MemAvailable:"), Some(20_000_000));
        assert_eq!(meminfo_kb(m, "Swap:"), None);
    }
}
