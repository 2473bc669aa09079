//! The built-in profiler against a scripted workload through a real mount:
//! `.ckptfs/stats`, the access log read while the workload runs, the
//! profile written at unmount, and `ckptfs report` in every format.

mod common;

use std::fs::{self, File};
use std::io::{BufRead, BufReader, Read, Write};
use std::os::fd::AsRawFd;
use std::path::Path;
use std::process::Command;

use common::{fill, Mount};
use serde_json::Value;

const SIZES: [usize; 3] = [100_000, 2_500_000, 7];

/// The bytes the workload writes to file `i`.
fn file_data(i: usize, size: usize) -> Vec<u8> {
    let mut data = vec![0u8; size];
    fill(&mut data, &mut (i as u64 + 1));
    data
}

/// Reads a whole file through the daemon (page cache dropped first).
fn read_cold(path: &std::path::Path) -> usize {
    let mut f = File::open(path).expect("open");
    // SAFETY: fadvise on a descriptor we own.
    unsafe { libc::posix_fadvise(f.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
    let mut v = Vec::new();
    f.read_to_end(&mut v).expect("read");
    v.len()
}

/// The errno of the call just made.
fn errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

/// An ioctl command no layer above the filesystem answers (`_IO('c', 1)`),
/// so the kernel sends it to the daemon.
const UNKNOWN_IOCTL: libc::c_ulong = 0x6301;

/// Operations that move no data, once each: statfs, the extended
/// attribute calls, an ioctl and an fsync of a directory.
const METADATA_OPS: [&str; 7] = [
    "statfs",
    "getxattr",
    "listxattr",
    "setxattr",
    "removexattr",
    "ioctl",
    "fsyncdir",
];

fn metadata_requests(m: &Mount) {
    use std::ffi::CString;
    use std::os::unix::ffi::OsStrExt;
    nix::sys::statvfs::statvfs(&m.mnt).expect("statvfs");
    let path = CString::new(m.path("f0").as_os_str().as_bytes()).expect("path");
    let (p, name) = (path.as_ptr(), c"user.ckptfs-test".as_ptr());
    let mut buf = [0u8; 64];
    let out = buf.as_mut_ptr().cast();
    // SAFETY (each call): NUL-terminated strings and a buffer of the length
    // passed, all alive across the call.
    let rc = unsafe { libc::getxattr(p, name, out, buf.len()) };
    assert_eq!((rc, errno()), (-1, libc::ENOTSUP), "getxattr");
    let rc = unsafe { libc::listxattr(p, out.cast(), buf.len()) };
    assert_eq!(rc, 0, "listxattr");
    let rc = unsafe { libc::setxattr(p, name, b"v".as_ptr().cast(), 1, 0) };
    assert_eq!((rc, errno()), (-1, libc::ENOTSUP), "setxattr");
    let rc = unsafe { libc::removexattr(p, name) };
    assert_eq!((rc, errno()), (-1, libc::ENOTSUP), "removexattr");
    let f = File::open(m.path("f0")).expect("open");
    // SAFETY: a command that takes no argument, on a descriptor we own.
    let rc = unsafe { libc::ioctl(f.as_raw_fd(), UNKNOWN_IOCTL) };
    assert_eq!((rc, errno()), (-1, libc::ENOTTY), "ioctl");
    File::open(&m.mnt)
        .and_then(|d| d.sync_all())
        .expect("fsync of the mount's root");
}

fn u(v: &Value, path: &[&str]) -> u64 {
    let mut cur = v;
    for p in path {
        cur = &cur[*p];
    }
    cur.as_u64().unwrap_or(0)
}

fn check_counts(doc: &Value, what: &str) {
    let p = doc.get("profile").unwrap_or(doc);
    let total: u64 = SIZES.iter().map(|&s| s as u64).sum();
    assert_eq!(u(p, &["ops", "create", "count"]), 3, "{what}: creates");
    assert_eq!(u(p, &["ops", "rename", "count"]), 1, "{what}: renames");
    assert_eq!(u(p, &["ops", "unlink", "count"]), 1, "{what}: unlinks");
    assert_eq!(
        u(p, &["ops", "write", "bytes"]),
        total,
        "{what}: bytes written"
    );
    assert_eq!(
        u(p, &["ops", "read", "bytes"]),
        2 * SIZES[0] as u64,
        "{what}: bytes read"
    );
    for (i, size) in SIZES.iter().enumerate() {
        assert_eq!(
            u(p, &["files", &format!("f{i}"), "write", "bytes"]),
            *size as u64,
            "{what}: bytes written to f{i}"
        );
    }
    assert_eq!(
        u(p, &["files", "f0", "read", "bytes"]),
        2 * SIZES[0] as u64,
        "{what}: f0 reads in {}",
        p["files"]
    );
    // Each file is one uncompressed chunk, stored up to its last nonzero
    // byte (the zero tail is a hole); a file of at most 64 KiB goes into
    // its manifest whole (`inline`).
    let stored: u64 = SIZES
        .iter()
        .enumerate()
        .map(|(i, &size)| {
            let data = file_data(i, size);
            if size <= 64 << 10 {
                return size as u64;
            }
            data.iter().rposition(|&b| b != 0).map_or(0, |p| p + 1) as u64
        })
        .sum();
    assert_eq!(
        u(p, &["backend_written_bytes"]),
        stored,
        "{what}: backend bytes for {total} written"
    );
    assert!(
        p["ops"]["write"]["p99_s"].as_f64().unwrap_or(0.0) > 0.0,
        "{what}: histogram"
    );
    // The kernel asks statfs and getxattr (security.capability) on its own
    // too; the rest come only from metadata_requests.
    for op in METADATA_OPS {
        let n = u(p, &["ops", op, "count"]);
        match op {
            "statfs" | "getxattr" => assert!(n >= 1, "{what}: no {op} in {}", p["ops"]),
            _ => assert_eq!(n, 1, "{what}: {op} in {}", p["ops"]),
        }
    }
    for op in ["getxattr", "setxattr", "removexattr", "ioctl"] {
        assert!(
            u(p, &["ops", op, "errors"]) >= 1,
            "{what}: {op}'s errno not counted"
        );
    }
    // Stages carry the bytes they moved: every written byte went through
    // encode_store (a small file: encode_inline) and a commit.
    let encoded = u(p, &["stages", "encode_store", "bytes"]);
    let inlined = u(p, &["stages", "encode_inline", "bytes"]);
    assert_eq!(
        inlined, SIZES[2] as u64,
        "{what}: inline bytes in {}",
        p["stages"]
    );
    assert!(
        encoded + inlined >= total,
        "{what}: encode bytes in {}",
        p["stages"]
    );
    assert!(
        u(p, &["stages", "commit", "bytes"]) >= total,
        "{what}: commit bytes in {}",
        p["stages"]
    );
}

#[test]
fn stats_accesslog_profile_and_report_match_a_scripted_workload() {
    let mut m = Mount::new(None);
    // The access log, read while the workload runs.
    let log_path = m.path(".ckptfs/accesslog");
    let reader = std::thread::spawn(move || {
        let f = File::open(log_path).expect("open accesslog");
        let mut lines = Vec::new();
        for line in BufReader::new(f).lines() {
            let line = line.expect("line");
            if line.contains("unlink") {
                lines.push(line);
                break;
            }
            lines.push(line);
        }
        lines
    });
    std::thread::sleep(std::time::Duration::from_millis(200));
    for (i, size) in SIZES.iter().enumerate() {
        let data = file_data(i, *size);
        let mut f = File::create(m.path(&format!("f{i}"))).expect("create");
        f.write_all(&data).expect("write");
    }
    assert_eq!(read_cold(&m.path("f0")), SIZES[0]);
    assert_eq!(read_cold(&m.path("f0")), SIZES[0]);
    fs::rename(m.path("f1"), m.path("f1-renamed")).expect("rename");
    metadata_requests(&m);
    fs::remove_file(m.path("f2")).expect("unlink");
    let lines = reader.join().expect("reader");

    let stats: Value =
        serde_json::from_slice(&fs::read(m.path(".ckptfs/stats")).expect("stats")).expect("json");
    check_counts(&stats, ".ckptfs/stats");
    let config: Value =
        serde_json::from_slice(&fs::read(m.path(".ckptfs/config")).expect("config")).expect("json");
    assert_eq!(config["name"], "default");
    // Hidden from a plain listing, never stored in the backing dir.
    let names: Vec<String> = fs::read_dir(&m.mnt)
        .expect("ls")
        .map(|e| e.expect("e").file_name().to_string_lossy().into_owned())
        .collect();
    assert!(names.contains(&".ckptfs".to_string()));
    assert!(!m.backing.join(".ckptfs/stats").exists());

    let written: u64 = lines
        .iter()
        .filter(|l| l.contains("] write "))
        .map(|l| {
            l.split("size=")
                .nth(1)
                .and_then(|s| s.split(')').next())
                .and_then(|s| s.parse::<u64>().ok())
                .unwrap_or(0)
        })
        .sum();
    assert_eq!(
        written,
        SIZES.iter().map(|&s| s as u64).sum::<u64>(),
        "access log write sizes"
    );
    for op in ["create", "rename", "unlink", "read", "flush"]
        .into_iter()
        .chain(METADATA_OPS)
    {
        assert!(
            lines.iter().any(|l| l.contains(&format!("] {op} "))),
            "no {op} line in the access log"
        );
    }

    m.unmount();
    let profile_path = m.backing.join(".ckptfs/profile.json");
    let profile: Value =
        serde_json::from_slice(&fs::read(&profile_path).expect("profile")).expect("json");
    check_counts(&profile, "profile at unmount");

    let png = m.root.path().join("profile.png");
    for (by, format) in [("op", "table"), ("stage", "markdown"), ("file", "json")] {
        let out = Command::new(common::BIN)
            .args(["report", "--by", by, "--format", format])
            .arg(&profile_path)
            .arg("--plot")
            .arg(&png)
            .output()
            .expect("report");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8_lossy(&out.stdout);
        match format {
            "json" => {
                let v: Value = serde_json::from_str(&text).expect("report json");
                assert!(v["rows"]
                    .as_array()
                    .is_some_and(|r| r.iter().any(|x| x["name"] == "f0 read")));
            }
            "markdown" => assert!(text.starts_with("| name |") && text.contains("commit")),
            _ => {
                assert!(text.contains("write") && text.contains("MB/s"));
                for op in METADATA_OPS {
                    assert!(text.contains(op), "no {op} row in:\n{text}");
                }
            }
        }
    }
    let png = fs::read(&png).expect("png");
    assert!(
        png.starts_with(b"\x89PNG\r\n\x1a\n") && png.len() > 20_000,
        "plot is not a real PNG"
    );

    // A backing dir names the profile of its last unmount; a directory
    // that holds none is refused with what was looked for.
    let report = |arg: &Path| {
        Command::new(common::BIN)
            .args(["report", "--format", "json"])
            .arg(arg)
            .output()
            .expect("report")
    };
    let (by_file, by_dir) = (report(&profile_path), report(&m.backing));
    assert!(
        by_dir.status.success(),
        "{}",
        String::from_utf8_lossy(&by_dir.stderr)
    );
    assert_eq!(by_file.stdout, by_dir.stdout, "report of the backing dir");
    let empty = m.root.path().join("empty");
    fs::create_dir_all(&empty).expect("mkdir");
    let none = report(&empty);
    assert!(!none.status.success(), "report of a dir without a profile");
    assert!(
        String::from_utf8_lossy(&none.stderr).contains("holds no profile"),
        "{}",
        String::from_utf8_lossy(&none.stderr)
    );
    // A mountpoint names its live figures.
    m.start();
    fs::write(m.path("live.bin"), file_data(9, 100_000)).expect("write");
    let live = report(&m.mnt);
    assert!(
        live.status.success(),
        "{}",
        String::from_utf8_lossy(&live.stderr)
    );
    let v: Value = serde_json::from_slice(&live.stdout).expect("live report json");
    assert!(
        v["rows"]
            .as_array()
            .is_some_and(|r| r.iter().any(|x| x["name"] == "write")),
        "live report rows: {}",
        v["rows"]
    );
    m.unmount();
}

/// PNG width and height from its IHDR chunk.
fn png_size(png: &[u8]) -> (u32, u32) {
    assert!(
        png.starts_with(b"\x89PNG\r\n\x1a\n") && png.len() > 24,
        "not a PNG"
    );
    let be = |at: usize| u32::from_be_bytes([png[at], png[at + 1], png[at + 2], png[at + 3]]);
    (be(16), be(20))
}

#[test]
fn a_short_save_and_load_show_as_10ms_steps_and_every_stage_gets_a_bar() {
    let mut m = Mount::new(None);
    // Three writes 300 ms apart: within one second, so one-second buckets
    // would put them in one or two rows.
    let mut f = File::create(m.path("steps.bin")).expect("create");
    for i in 0..3 {
        f.write_all(&file_data(i, 2_000_000)).expect("write");
        std::thread::sleep(std::time::Duration::from_millis(300));
    }
    f.sync_all().expect("fsync");
    drop(f);
    assert_eq!(read_cold(&m.path("steps.bin")), 6_000_000);
    m.unmount();
    let profile_path = m.backing.join(".ckptfs/profile.json");
    let doc: Value =
        serde_json::from_slice(&fs::read(&profile_path).expect("profile")).expect("json");
    let snap = doc.get("profile").unwrap_or(&doc);
    assert_eq!(snap["timeline_bucket_ms"], 10);
    let rows = snap["timeline"].as_array().expect("timeline");
    let series = |k: &str| -> Vec<u64> {
        rows.iter()
            .map(|r| r[k].as_u64().expect("bucket field"))
            .collect()
    };
    let written = series("fs_written");
    let busy = written.iter().filter(|&&b| b > 0).count();
    assert!(busy >= 3, "written per bucket: {written:?}");
    assert_eq!(written.iter().sum::<u64>(), 6_000_000);
    assert_eq!(series("fs_read").iter().sum::<u64>(), 6_000_000);
    // A load's last step: every byte read was copied to the kernel.
    assert_eq!(
        u(snap, &["stages", "copy", "bytes"]),
        u(snap, &["ops", "read", "bytes"]),
        "copy stage in {}",
        snap["stages"]
    );

    let png = m.root.path().join("steps.png");
    let out = Command::new(common::BIN)
        .arg("report")
        .arg(&profile_path)
        .arg("--plot")
        .arg(&png)
        .output()
        .expect("report");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("buckets of 10 ms"), "{text}");
    let png = fs::read(&png).expect("png");
    // A 320-pixel panel each for writes and reads, then one 34-pixel row
    // per bar: every stage (and each busy FUSE operation) has its own.
    let stages = snap["stages"].as_object().expect("stages").len() as u32;
    let (w, h) = png_size(&png);
    assert_eq!(w, 1400);
    assert!(
        h >= 2 * 320 + 110 + 34 * stages,
        "height {h} for {stages} stages"
    );
}
