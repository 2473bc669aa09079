//! A real ckptfs mount for tests: the `ckptfs` binary runs as its own
//! process over a temp backing dir, exactly as users run it.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_ckptfs");

/// Sets a path's access and modification times to `secs` with
/// utimensat(2) on the path, as `rsync` and `tar` do: no open, so no close
/// (which would commit the file).
pub fn set_times(path: &Path, secs: i64) {
    let st = Command::new("python3")
        .args([
            "-c",
            "import os, sys; t = int(sys.argv[2]); os.utime(sys.argv[1], (t, t))",
        ])
        .arg(path)
        .arg(secs.to_string())
        .status()
        .expect("python3 os.utime");
    assert!(st.success(), "os.utime of {}", path.display());
}

pub fn repo_config(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("mount-configs")
        .join(format!("{name}.toml"))
}

/// Writes a config file into `dir` and returns its path.
pub fn write_config(dir: &Path, name: &str, toml: &str) -> PathBuf {
    let p = dir.join(format!("{name}.toml"));
    std::fs::write(&p, toml).expect("write config");
    p
}

pub struct Mount {
    pub root: tempfile::TempDir,
    pub backing: PathBuf,
    pub mnt: PathBuf,
    pub config: Option<PathBuf>,
    /// An `s3://` location mounted instead of `backing` (then the mount's
    /// cache dir): a writer, or a reader with `read_only`.
    pub remote: Option<String>,
    pub read_only: bool,
    /// More `ckptfs mount` arguments (`--cache-size 1M`).
    pub extra: Vec<String>,
    child: Option<Child>,
}

impl Mount {
    /// Mounts a fresh backing dir with `config` (None: embedded default).
    pub fn new(config: Option<PathBuf>) -> Mount {
        Self::with_source(config, None, false, true)
    }

    /// A writer (or, `read_only`, a reader) of the `s3://` location `url`,
    /// with a cache dir of its own (the store's settings from `AWS_*`).
    pub fn s3(config: Option<PathBuf>, url: &str, read_only: bool, extra: &[&str]) -> Mount {
        let mut m = Self::with_source(config, Some(url.to_string()), read_only, false);
        m.extra = extra.iter().map(|a| a.to_string()).collect();
        m.start();
        m
    }

    fn with_source(
        config: Option<PathBuf>,
        remote: Option<String>,
        read_only: bool,
        start: bool,
    ) -> Mount {
        let root = tempfile::Builder::new()
            .prefix("ckptfs-test")
            .tempdir_in(std::env::var("CKPTFS_TEST_DIR").unwrap_or_else(|_| "/tmp".into()))
            .expect("tempdir");
        let backing = root.path().join("backing");
        let mnt = root.path().join("mnt");
        std::fs::create_dir_all(&mnt).expect("mnt");
        let mut m = Mount {
            root,
            backing,
            mnt,
            config,
            remote,
            read_only,
            extra: Vec::new(),
            child: None,
        };
        if start {
            m.start();
        }
        m
    }

    pub fn start(&mut self) {
        let mut cmd = Command::new(BIN);
        cmd.arg("mount");
        if let Some(c) = &self.config {
            cmd.arg("--config").arg(c);
        }
        cmd.args(&self.extra);
        match &self.remote {
            Some(url) => {
                if self.read_only {
                    cmd.arg("--read-only");
                }
                cmd.arg("--cache-dir").arg(&self.backing).arg(url)
            }
            None => cmd.arg(&self.backing),
        }
        .arg(&self.mnt)
        .env("CKPTFS_LOG", "warn,fuser::session=error")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
        let mut child = cmd.spawn().expect("spawn ckptfs");
        let out = child.stdout.take().expect("stdout");
        let mut line = String::new();
        BufReader::new(out)
            .read_line(&mut line)
            .expect("read ready");
        assert_eq!(line.trim(), "ready", "ckptfs mount did not come up");
        self.child = Some(child);
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.mnt.join(rel)
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).unwrap_or(0)
    }

    /// Clean unmount; asserts the daemon exits 0.
    pub fn unmount(&mut self) {
        if let Some(mut child) = self.child.take() {
            let st = Command::new(BIN)
                .arg("umount")
                .arg(&self.mnt)
                .status()
                .expect("umount");
            assert!(st.success(), "ckptfs umount failed");
            let deadline = Instant::now() + Duration::from_secs(120);
            loop {
                if let Some(status) = child.try_wait().expect("wait") {
                    assert!(status.success(), "daemon exited with {status}");
                    break;
                }
                assert!(Instant::now() < deadline, "daemon did not exit");
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }

    /// kill -9 of the daemon; the dead mount is left for the next start.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().expect("kill");
            let _ = child.wait();
        }
    }

    pub fn remount(&mut self) {
        self.unmount();
        self.start();
    }
}

/// Runs `ckptfs verify` on a backing dir: (exit code, stdout).
pub fn verify(backing: &Path) -> (i32, String) {
    let out = Command::new(BIN)
        .arg("verify")
        .arg(backing)
        .output()
        .expect("run ckptfs verify");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    )
}

impl Drop for Mount {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new(BIN)
                .arg("umount")
                .arg("--lazy")
                .arg(&self.mnt)
                .status();
            let deadline = Instant::now() + Duration::from_secs(60);
            while child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = Command::new("umount").arg("-l").arg(&self.mnt).status();
    }
}

/// Deterministic pseudo-random bytes (xorshift), fast enough for GiBs.
/// `len` bytes of `fill`'s sequence from `seed`.
pub fn random(len: usize, seed: u64) -> Vec<u8> {
    let mut v = vec![0u8; len];
    fill(&mut v, &mut { seed });
    v
}

pub fn fill(buf: &mut [u8], seed: &mut u64) {
    for chunk in buf.chunks_mut(8) {
        *seed ^= *seed << 13;
        *seed ^= *seed >> 7;
        *seed ^= *seed << 17;
        let b = seed.to_le_bytes();
        chunk.copy_from_slice(&b[..chunk.len()]);
    }
}

pub fn sha256_file(path: &Path) -> String {
    use sha2::{Digest, Sha256};
    use std::io::Read;
    let mut f = std::fs::File::open(path).expect("open for hash");
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).expect("read for hash");
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    format!("{:x}", h.finalize())
}

/// The chunked layouts of the data tests (name, config TOML): tiny chunks
/// (so chunk edges are everywhere), compressed (tensors byte-shuffled
/// first), and tiny compressed chunks in the packed index (two versions
/// kept, eager compaction, small data files, so rolling and background
/// compaction run under the test).
pub const CHUNKED_LAYOUTS: [(&str, &str); 3] = [
    (
        "chunked-4k",
        "[layout]\nraw_chunk_bytes = 4096\ncodec = \"none\"\n[io]\nconcurrency = 3\nmemory_budget = 1048576\ncache = 65536\n",
    ),
    (
        "zstd-8k",
        "[layout]\nraw_chunk_bytes = 8192\ncodec = \"zstd\"\nlevel = 3\nshuffle = true\n[io]\nconcurrency = 2\nmemory_budget = 1048576\n",
    ),
    (
        "packed-4k",
        "[layout]\nraw_chunk_bytes = 4096\ncodec = \"zstd\"\nindex = \"packed\"\n[packed]\nkeep_versions = 2\ndata_file_bytes = 1048576\nauto_compact_ratio = 0.2\n[io]\nconcurrency = 3\nmemory_budget = 1048576\n",
    ),
];

/// The layouts every data test runs against: plain, then the chunked ones.
pub fn layouts(dir: &Path) -> Vec<(String, PathBuf)> {
    let mut all = vec![("passthrough".to_string(), repo_config("passthrough"))];
    all.extend(
        CHUNKED_LAYOUTS
            .iter()
            .map(|(name, toml)| (name.to_string(), write_config(dir, name, toml))),
    );
    all
}

/// A safetensors file with an F32 [rows, 37] tensor and an I64 [5] tensor.
pub fn safetensors_bytes(rows: u64, seed: u64) -> Vec<u8> {
    let a = rows * 37 * 4;
    let header = format!(
        r#"{{"w":{{"dtype":"F32","shape":[{rows},37],"data_offsets":[0,{a}]}},"i":{{"dtype":"I64","shape":[5],"data_offsets":[{a},{}]}},"__metadata__":{{"format":"pt"}}}}"#,
        a + 40
    );
    let mut out = (header.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(header.as_bytes());
    let mut data = vec![0u8; (a + 40) as usize];
    fill(&mut data, &mut { seed });
    out.extend_from_slice(&data);
    out
}

/// Every chunk file (a file below a `c/` directory) under `dir`.
pub fn chunk_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).expect("read dir") {
        let p = e.expect("entry").path();
        if p.is_dir() {
            chunk_files(&p, out);
        } else if p.components().any(|c| c.as_os_str() == "c") {
            out.push(p);
        }
    }
}
