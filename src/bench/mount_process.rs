//! A `ckptfs mount` run as its own process, exactly as a user runs it: the
//! benchmark's own binary in the foreground, `ready` on its stdout once the
//! mount answers, `ckptfs umount` to commit and stop it.

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};

/// How long a mount may take to answer.
const READY_TIMEOUT: Duration = Duration::from_secs(120);
/// How long the daemon may take to commit and exit after `umount`.
const EXIT_TIMEOUT: Duration = Duration::from_secs(900);

/// The mount did not come up: the strategy is unavailable in this build.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct MountUnavailable(pub String);

/// What the benchmark passes to `ckptfs mount`.
pub struct MountSpec<'a> {
    /// The `ckptfs` binary to run.
    pub exe: &'a Path,
    /// The mount config (`--config`).
    pub config: &'a Path,
    /// The backing dir.
    pub backing: &'a Path,
    /// Where to mount it.
    pub mountpoint: &'a Path,
    /// Where the daemon writes its profile at unmount (`--profile-out`).
    pub profile_out: &'a Path,
    /// File the daemon's stderr goes to, quoted when it fails.
    pub log: &'a Path,
    /// Further `ckptfs mount` options (an s3:// mount's cache dir, …).
    pub extra: &'a [std::ffi::OsString],
}

/// A running mount daemon.
pub struct MountProcess {
    child: Option<Child>,
    exe: PathBuf,
    mountpoint: PathBuf,
    log: PathBuf,
}

impl MountProcess {
    /// Starts the mount and waits until it answers. A mount that exits or
    /// stays silent gives [`MountUnavailable`] with its own message.
    pub fn start(spec: &MountSpec) -> Result<MountProcess> {
        std::fs::create_dir_all(spec.mountpoint)
            .with_context(|| format!("create mountpoint {}", spec.mountpoint.display()))?;
        let log = File::create(spec.log)
            .with_context(|| format!("create mount log {}", spec.log.display()))?;
        let mut cmd = Command::new(spec.exe);
        // SAFETY: pre_exec runs between fork and exec, where only
        // async-signal-safe calls are allowed; prctl(2) is one and allocates
        // nothing. Should the benchmark die, the daemon gets SIGTERM, commits
        // and unmounts instead of lingering (a failure only loses that).
        unsafe {
            cmd.pre_exec(|| {
                let _ = nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGTERM);
                Ok(())
            });
        }
        let mut child = cmd
            .arg("mount")
            .arg("--config")
            .arg(spec.config)
            .arg("--profile-out")
            .arg(spec.profile_out)
            .args(spec.extra)
            .arg(spec.backing)
            .arg(spec.mountpoint)
            .env("CKPTFS_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log))
            .spawn()
            .with_context(|| format!("start {} mount", spec.exe.display()))?;
        let stdout = child.stdout.take().context("mount stdout")?;
        let (tx, rx) = mpsc::channel();
        // Reads `ready`, then drains stdout so the daemon never blocks on it.
        std::thread::spawn(move || {
            let mut reader = BufReader::new(stdout);
            let mut line = String::new();
            let first = reader.read_line(&mut line).map(|_| line.trim().to_string());
            let _ = tx.send(first);
            let mut sink = String::new();
            while matches!(reader.read_line(&mut sink), Ok(n) if n > 0) {
                sink.clear();
            }
        });
        let mut process = MountProcess {
            child: Some(child),
            exe: spec.exe.to_path_buf(),
            mountpoint: spec.mountpoint.to_path_buf(),
            log: spec.log.to_path_buf(),
        };
        match rx.recv_timeout(READY_TIMEOUT) {
            Ok(Ok(line)) if line == "ready" => Ok(process),
            Ok(_) | Err(mpsc::RecvTimeoutError::Disconnected) => {
                let status = process.wait_exit(Duration::from_secs(30));
                let why = match status {
                    Some(s) => format!("`ckptfs mount` exited with {s}"),
                    None => "`ckptfs mount` closed its stdout without `ready`".into(),
                };
                Err(MountUnavailable(format!("{why}: {}", process.log_tail())).into())
            }
            Err(mpsc::RecvTimeoutError::Timeout) => Err(MountUnavailable(format!(
                "`ckptfs mount` did not answer within {} s: {}",
                READY_TIMEOUT.as_secs(),
                process.log_tail()
            ))
            .into()),
        }
    }

    /// The daemon's process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// The daemon's peak resident memory so far (VmHWM), in bytes.
    pub fn peak_rss(&self) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()?)).ok()?;
        vm_hwm_bytes(&status)
    }

    /// `ckptfs umount`: commits every file, unmounts, and waits for the
    /// daemon to exit 0.
    pub fn unmount(mut self) -> Result<()> {
        let out = Command::new(&self.exe)
            .arg("umount")
            .arg(&self.mountpoint)
            .stdin(Stdio::null())
            .output()
            .context("run ckptfs umount")?;
        if !out.status.success() {
            bail!(
                "ckptfs umount {} failed ({}): {}",
                self.mountpoint.display(),
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        match self.wait_exit(EXIT_TIMEOUT) {
            Some(s) if s.success() => Ok(()),
            Some(s) => Err(anyhow!(
                "the mount daemon exited with {s} after unmount: {}",
                self.log_tail()
            )),
            None => Err(anyhow!(
                "the mount daemon did not exit within {} s of unmount",
                EXIT_TIMEOUT.as_secs()
            )),
        }
    }

    fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let child = self.child.as_mut()?;
        let deadline = Instant::now() + timeout;
        loop {
            match child.try_wait() {
                Ok(Some(status)) => {
                    self.child = None;
                    return Some(status);
                }
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(10))
                }
                _ => return None,
            }
        }
    }

    /// The last lines the daemon logged, for error messages.
    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
        let tail = lines[lines.len().saturating_sub(3)..].join(" | ");
        if tail.is_empty() {
            format!("(nothing logged in {})", self.log.display())
        } else {
            tail
        }
    }
}

impl Drop for MountProcess {
    /// A run that failed half-way still leaves no mount behind.
    fn drop(&mut self) {
        if self.child.is_none() {
            return;
        }
        let _ = Command::new(&self.exe)
            .arg("umount")
            .arg("--lazy")
            .arg(&self.mountpoint)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        if self.wait_exit(Duration::from_secs(60)).is_none() {
            if let Some(mut child) = self.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

/// `VmHWM:   123456 kB` in /proc/PID/status, in bytes.
fn vm_hwm_bytes(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vm_hwm_is_read_in_bytes() {
        let s = "Name:\tckptfs\nVmPeak:\t  9000 kB\nVmHWM:\t   2048 kB\nVmRSS:\t 1000 kB\n";
        assert_eq!(vm_hwm_bytes(s), Some(2048 * 1024));
        assert_eq!(vm_hwm_bytes("Name: x\n"), None);
    }
}
