//! Files smaller than one chunk store only their bytes, on both indexes,
//! and grow back into whole configured chunks when written again.

mod common;

use std::fs;
use std::io::Write;
use std::path::Path;
use std::process::Command;

use common::{random, repo_config, verify, write_config, Mount, BIN};

/// `ckptfs inspect --json` of a file in a live mount.
fn inspect(path: &Path) -> serde_json::Value {
    let out = Command::new(BIN)
        .arg("inspect")
        .arg("--json")
        .arg(path)
        .output()
        .expect("run ckptfs inspect");
    assert!(
        out.status.success(),
        "inspect {}: {}",
        path.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("inspect json")
}

/// Every regular file's length under `dir` (not the reserved `.ckptfs`).
fn apparent_bytes(dir: &Path) -> u64 {
    let mut total = 0;
    for e in fs::read_dir(dir).expect("read dir") {
        let e = e.expect("entry");
        if e.file_name() == ".ckptfs" {
            continue;
        }
        let meta = e.metadata().expect("stat");
        total += if meta.is_dir() {
            apparent_bytes(&e.path())
        } else {
            meta.len()
        };
    }
    total
}

/// The small files `save_pretrained` writes beside its shards, and a shell
/// redirect: stored as their own bytes (an 8 MiB chunk each before), exact
/// after a remount, `verify` clean.
#[test]
fn files_smaller_than_a_chunk_store_only_their_bytes() {
    for layout in ["default", "ts-ocdbt", "zstd"] {
        let mut m = Mount::new(Some(repo_config(layout)));
        let files: Vec<(String, Vec<u8>)> = [722usize, 195, 1761, 64 << 10]
            .iter()
            .enumerate()
            .map(|(i, &n)| (format!("f{i}.json"), random(n, i as u64 + 1)))
            .collect();
        for (name, data) in &files {
            fs::write(m.path(name), data).expect("write");
        }
        let st = Command::new("sh")
            .arg("-c")
            .arg(format!("echo hello > {}", m.path("a.json").display()))
            .status()
            .expect("sh");
        assert!(st.success());
        for (name, data) in &files {
            let r = inspect(&m.path(name));
            assert_eq!(
                r["size"].as_u64(),
                Some(data.len() as u64),
                "{layout} {name}: {r}"
            );
            assert_eq!(
                r["chunk_bytes"].as_u64(),
                Some(data.len() as u64),
                "{layout} {name}: {r}"
            );
            if layout != "zstd" {
                assert_eq!(
                    r["stored_bytes"].as_u64(),
                    Some(data.len() as u64),
                    "{layout} {name}: {r}"
                );
            }
        }
        m.unmount();
        // Five small files: well under one padded 8 MiB chunk in all.
        let stored = apparent_bytes(&m.backing);
        assert!(
            stored < 1 << 20,
            "{layout}: {stored} bytes in the backing dir for 71 KB of files"
        );
        m.start();
        for (name, data) in &files {
            assert_eq!(
                &fs::read(m.path(name)).expect("read"),
                data,
                "{layout} {name}"
            );
        }
        assert_eq!(fs::read(m.path("a.json")).expect("read"), b"hello\n");
        m.unmount();
        let (code, out) = verify(&m.backing);
        assert_eq!(code, 0, "{layout}: {out}");
    }
}

/// A file committed short, then appended to, truncated up and overwritten:
/// it goes back to the configured chunk size (not thousands of chunks of
/// its first length) and every byte matches a model of the file.
#[test]
fn a_short_file_grows_back_into_configured_chunks() {
    let tmp = tempfile::tempdir().expect("tmp");
    for (name, index) in [("files", "files"), ("packed", "packed")] {
        let cfg = write_config(
            tmp.path(),
            name,
            &format!("[layout]\nraw_chunk_bytes = 65536\ncodec = \"none\"\nindex = \"{index}\"\n"),
        );
        let mut m = Mount::new(Some(cfg));
        let path = m.path("log.bin");
        let mut model = random(1000, 7);
        {
            let mut f = fs::File::create(&path).expect("create");
            f.write_all(&model).expect("write");
            f.sync_all().expect("fsync");
            assert_eq!(inspect(&path)["chunk_bytes"].as_u64(), Some(1000), "{name}");
            // Appends in pieces, with a commit in the middle.
            for i in 0..40u64 {
                let piece = random(25_000 + i as usize, 100 + i);
                f.write_all(&piece).expect("append");
                model.extend_from_slice(&piece);
                if i == 3 {
                    f.sync_all().expect("fsync");
                }
            }
            f.sync_all().expect("fsync");
        }
        let r = inspect(&path);
        assert_eq!(r["chunk_bytes"].as_u64(), Some(65536), "{name}: {r}");
        assert_eq!(
            fs::read(&path).expect("read"),
            model,
            "{name}: after appends"
        );

        // A second file: short, then grown by truncate, then written inside.
        let path2 = m.path("sparse.bin");
        let mut model2 = random(300, 9);
        fs::write(&path2, &model2).expect("write");
        {
            let f = fs::OpenOptions::new()
                .write(true)
                .open(&path2)
                .expect("open");
            f.set_len(200_000).expect("grow");
            model2.resize(200_000, 0);
            use std::os::unix::fs::FileExt;
            let patch = random(5000, 11);
            f.write_all_at(&patch, 150).expect("overwrite");
            model2[150..5150].copy_from_slice(&patch);
            f.sync_all().expect("fsync");
        }
        assert_eq!(
            inspect(&path2)["chunk_bytes"].as_u64(),
            Some(65536),
            "{name}"
        );
        m.unmount();
        m.start();
        assert_eq!(
            fs::read(&path).expect("read"),
            model,
            "{name}: after remount"
        );
        assert_eq!(
            fs::read(&path2).expect("read"),
            model2,
            "{name}: sparse after remount"
        );
        m.unmount();
        let (code, out) = verify(&m.backing);
        assert_eq!(code, 0, "{name}: {out}");
    }
}
