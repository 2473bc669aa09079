//! `io.writeback_cache = true`: small writes gather in the kernel's page
//! cache and reach the daemon as large requests; the bytes are the same,
//! partial-page overwrites of write-only opens work (the kernel reads the
//! rest of the page through the daemon), and a closed file is committed.

mod common;

use std::fs::{self, OpenOptions};
use std::io::{Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;

use common::{random, repo_config, verify, write_config, Mount};
use serde_json::Value;

fn config(dir: &std::path::Path, base: &str) -> std::path::PathBuf {
    let text = fs::read_to_string(repo_config(base)).expect("read config");
    let text = if text.contains("[io]\n") {
        text.replacen("[io]\n", "[io]\nwriteback_cache = true\n", 1)
    } else {
        text + "\n[io]\nwriteback_cache = true\n"
    };
    write_config(dir, &format!("{base}-wb"), &text)
}

fn ops(profile: &Value, op: &str) -> u64 {
    profile["ops"][op]["count"].as_u64().unwrap_or(0)
}

#[test]
fn small_writes_arrive_gathered_and_every_byte_survives_a_remount() {
    let cfg_dir = tempfile::tempdir().expect("tempdir");
    for base in ["default", "zstd", "ts-ocdbt"] {
        let mut m = Mount::new(Some(config(cfg_dir.path(), base)));
        // The kernel registers no backing file under its writeback cache:
        // the mount says passthrough is off, and why.
        let stats: Value =
            serde_json::from_slice(&fs::read(m.path(".ckptfs/stats")).expect("stats"))
                .expect("stats json");
        assert_eq!(stats["io_paths"]["passthrough"], "off", "{base}");
        assert!(
            stats["io_paths"]["passthrough_note"]
                .as_str()
                .is_some_and(|n| n.contains("writeback")),
            "{base}: {}",
            stats["io_paths"]
        );
        // 40 files written 1000 bytes per write() call, as tar and pickle do.
        let mut calls = 0u64;
        let files: Vec<(String, Vec<u8>)> = (0..40)
            .map(|i| {
                (
                    format!("f{i}.bin"),
                    random(20_000 + i * 3_001, i as u64 + 1),
                )
            })
            .collect();
        for (name, data) in &files {
            let mut f = fs::File::create(m.path(name)).expect("create");
            for piece in data.chunks(1000) {
                f.write_all(piece).expect("write");
                calls += 1;
            }
        }
        // A write-only open overwriting 10 bytes in the middle of a
        // committed file: the kernel must read the rest of its page.
        let mut want = files[3].1.clone();
        {
            let mut f = OpenOptions::new()
                .write(true)
                .open(m.path(&files[3].0))
                .expect("open write-only");
            f.seek(SeekFrom::Start(5_003)).expect("seek");
            f.write_all(b"0123456789").expect("overwrite");
        }
        want[5_003..5_013].copy_from_slice(b"0123456789");
        // An append, and a write past the end while the append is open.
        let mut grown = files[5].1.clone();
        {
            let f = OpenOptions::new()
                .append(true)
                .open(m.path(&files[5].0))
                .expect("open append");
            (&f).write_all(b"tail").expect("append");
            grown.extend_from_slice(b"tail");
            // (pwrite on an O_APPEND handle appends: another handle.)
            let g = OpenOptions::new()
                .write(true)
                .open(m.path(&files[5].0))
                .expect("open write-only");
            g.write_at(b"far", grown.len() as u64 + 100)
                .expect("write past end");
            grown.resize(grown.len() + 100, 0);
            grown.extend_from_slice(b"far");
        }
        assert_eq!(fs::read(m.path(&files[3].0)).expect("read"), want, "{base}");
        assert_eq!(
            fs::read(m.path(&files[5].0)).expect("read"),
            grown,
            "{base}"
        );

        m.unmount();
        let profile: Value = serde_json::from_slice(
            &fs::read(m.backing.join(".ckptfs/profile.json")).expect("profile"),
        )
        .expect("profile json");
        let profile = profile.get("profile").unwrap_or(&profile);
        // Gathered in the page cache: far fewer requests than write() calls
        // (without the cache there is one request per call).
        let requests = ops(profile, "write");
        assert!(
            requests * 8 < calls,
            "{base}: {requests} write requests for {calls} write() calls"
        );
        m.start();
        for (i, (name, data)) in files.iter().enumerate() {
            let expect = match i {
                3 => &want,
                5 => &grown,
                _ => data,
            };
            let got = fs::read(m.path(name)).expect("read after remount");
            assert!(got == *expect, "{base} {name}: bytes differ after remount");
        }
        m.unmount();
        let (code, out) = verify(&m.backing);
        assert_eq!(code, 0, "{base}: {out}");
    }
}
