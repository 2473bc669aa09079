//! Kernel FUSE passthrough for plain-layout files: reads (mmap included)
//! and saves bypass the daemon, every byte stays exact, a writer that opens
//! a file passthrough readers hold gets no error, and a crash keeps the
//! committed version whole.

mod common;

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::process::Command;

use common::{random, repo_config, sha256_file, verify, write_config, Mount};

/// The mount's live stats document.
fn stats(m: &Mount) -> serde_json::Value {
    let text = fs::read_to_string(m.path(".ckptfs/stats")).expect("read stats");
    serde_json::from_str(&text).expect("stats json")
}

fn op_count(s: &serde_json::Value, op: &str) -> u64 {
    s["ops"][op]["count"].as_u64().unwrap_or(0)
}

fn passthrough_opens(s: &serde_json::Value) -> u64 {
    s["io_paths"]["opens_passthrough"].as_u64().unwrap_or(0)
}

/// sha256 of the file read through a shared read-only mapping.
fn mmap_sha256(path: &std::path::Path) -> String {
    let out = Command::new("python3")
        .arg("-c")
        .arg(
            "import hashlib, mmap, sys\n\
             f = open(sys.argv[1], 'rb')\n\
             m = mmap.mmap(f.fileno(), 0, prot=mmap.PROT_READ)\n\
             print(hashlib.sha256(m[:]).hexdigest())",
        )
        .arg(path)
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[test]
fn committed_plain_files_are_read_by_the_kernel_and_stay_byte_exact() {
    let mut m = Mount::new(Some(repo_config("passthrough")));
    let data = random(24 << 20, 7);
    fs::write(m.path("model.bin"), &data).expect("write");
    let want = sha256_file(&m.path("model.bin"));
    m.remount();
    let before = stats(&m);
    assert_eq!(
        before["io_paths"]["passthrough"], "read_write",
        "passthrough not granted: {}",
        before["io_paths"]
    );
    assert_eq!(fs::read(m.path("model.bin")).expect("read"), data);
    assert_eq!(mmap_sha256(&m.path("model.bin")), want);
    let after = stats(&m);
    assert!(passthrough_opens(&after) >= 2, "{}", after["io_paths"]);
    // 24 MiB read twice, and not one byte through the daemon.
    assert_eq!(op_count(&after, "read"), op_count(&before, "read"));
    m.unmount();
}

#[test]
fn a_save_through_passthrough_is_committed_with_its_checksum() {
    let mut m = Mount::new(Some(repo_config("passthrough")));
    // Large enough to be checksummed in parts beside its fsync.
    let data = random(40 << 20, 11);
    let before = stats(&m);
    {
        let mut f = fs::File::create(m.path("ckpt.bin")).expect("create");
        for piece in data.chunks(1 << 20) {
            f.write_all(piece).expect("write");
        }
        // The size seen while the kernel writes behind the daemon.
        assert_eq!(
            fs::metadata(m.path("ckpt.bin")).expect("stat").len(),
            data.len() as u64
        );
        f.sync_all().expect("fsync");
    }
    let after = stats(&m);
    assert!(passthrough_opens(&after) > passthrough_opens(&before));
    assert_eq!(
        op_count(&after, "write"),
        op_count(&before, "write"),
        "writes reached the daemon"
    );
    m.unmount();
    let (code, out) = verify(&m.backing);
    assert_eq!(code, 0, "verify after a passthrough save: {out}");
    m.start();
    assert_eq!(fs::read(m.path("ckpt.bin")).expect("read back"), data);
    m.unmount();
}

#[test]
fn a_writer_joining_passthrough_readers_gets_no_error_and_commits_a_whole_version() {
    let mut m = Mount::new(Some(repo_config("passthrough")));
    let old = random(6 << 20, 3);
    fs::write(m.path("w.bin"), &old).expect("write");
    m.remount();
    let reader = fs::File::open(m.path("w.bin")).expect("open reader");
    let mut head = vec![0u8; 4096];
    reader.read_exact_at(&mut head, 0).expect("read");
    assert_eq!(head, old[..4096]);
    // Rewrite the start in place while the reader holds the file.
    let new_head = random(1 << 20, 5);
    {
        let w = OpenOptions::new()
            .write(true)
            .open(m.path("w.bin"))
            .expect("a writer beside passthrough readers must open");
        w.write_all_at(&new_head, 0).expect("write");
    }
    let mut want = old.clone();
    want[..new_head.len()].copy_from_slice(&new_head);
    assert_eq!(fs::read(m.path("w.bin")).expect("read new"), want);
    // The reader shares the data file, as on a local disk.
    let mut seen = vec![0u8; 4096];
    reader.read_exact_at(&mut seen, 0).expect("reader reads");
    assert_eq!(seen, want[..4096]);
    // A truncating rewrite (torch.save over an existing file) works too.
    let rewritten = random(3 << 20, 9);
    fs::write(m.path("w.bin"), &rewritten).expect("rewrite with O_TRUNC");
    drop(reader);
    m.remount();
    assert_eq!(fs::read(m.path("w.bin")).expect("after remount"), rewritten);
    m.unmount();
    let (code, out) = verify(&m.backing);
    assert_eq!(code, 0, "{out}");
}

#[test]
fn kill9_while_a_writer_shares_the_readers_file_keeps_the_committed_version() {
    let mut m = Mount::new(Some(repo_config("passthrough")));
    let old = random(5 << 20, 21);
    fs::write(m.path("k.bin"), &old).expect("write");
    m.remount();
    let reader = fs::File::open(m.path("k.bin")).expect("open reader");
    let w = OpenOptions::new()
        .write(true)
        .open(m.path("k.bin"))
        .expect("open writer");
    w.write_all_at(&random(2 << 20, 22), 1 << 20)
        .expect("overwrite");
    // Never fsynced or closed: the daemon dies with it uncommitted.
    m.kill9();
    drop(w);
    drop(reader);
    let (code, out) = verify(&m.backing);
    assert_eq!(code, 0, "verify after kill -9: {out}");
    m.start();
    assert_eq!(
        fs::read(m.path("k.bin")).expect("read"),
        old,
        "the committed version must survive whole"
    );
    m.unmount();
}

#[test]
fn passthrough_off_serves_plain_reads_through_the_daemon() {
    let tmp = tempfile::tempdir().expect("tmp");
    let cfg = write_config(
        tmp.path(),
        "plain-off",
        "[layout]\nchunking = \"none\"\n[io]\npassthrough = \"off\"\n",
    );
    let mut m = Mount::new(Some(cfg));
    let data = random(3 << 20, 1);
    fs::write(m.path("a.bin"), &data).expect("write");
    m.remount();
    let before = stats(&m);
    assert_eq!(fs::read(m.path("a.bin")).expect("read"), data);
    let after = stats(&m);
    assert_eq!(passthrough_opens(&after), 0);
    assert!(op_count(&after, "read") > op_count(&before, "read"));
    m.unmount();
}
