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
/// redirect: a file of at most `inline_max` (64 KiB) bytes lives inside its
/// manifest (its home holds nothing else); one byte more is stored as one
/// chunk of its own length (an 8 MiB chunk each before either). Exact after
/// a remount, `verify` clean.
#[test]
fn files_smaller_than_a_chunk_store_only_their_bytes() {
    for layout in ["default", "ts-ocdbt", "zstd"] {
        let mut m = Mount::new(Some(repo_config(layout)));
        let files: Vec<(String, Vec<u8>)> = [722usize, 195, 1761, 64 << 10, (64 << 10) + 1]
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
            let n = data.len() as u64;
            assert_eq!(r["size"].as_u64(), Some(n), "{layout} {name}: {r}");
            assert_eq!(r["chunk_bytes"].as_u64(), Some(n), "{layout} {name}: {r}");
            if n <= 64 << 10 {
                assert_eq!(r["layout"], "inline", "{layout} {name}: {r}");
                // base64: four characters for every three bytes.
                assert_eq!(
                    r["stored_bytes"].as_u64(),
                    Some(n.div_ceil(3) * 4),
                    "{layout} {name}: {r}"
                );
            } else {
                assert_eq!(r["layout"], "bytes", "{layout} {name}: {r}");
                if layout != "zstd" {
                    assert_eq!(r["stored_bytes"].as_u64(), Some(n), "{layout} {name}: {r}");
                }
            }
        }
        if layout != "ts-ocdbt" {
            // An inline file's home is its manifest alone: no array.
            let home: Vec<_> = fs::read_dir(m.backing.join("f0.json"))
                .expect("home")
                .map(|e| e.expect("entry").file_name())
                .collect();
            assert_eq!(home, ["zarr.json"], "{layout}");
        }
        m.unmount();
        // Six small files: well under one padded 8 MiB chunk in all.
        let stored = apparent_bytes(&m.backing);
        assert!(
            stored < 1 << 20,
            "{layout}: {stored} bytes in the backing dir for 136 KB of files"
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
            // Not inline: this is the short-chunk path.
            &format!("[layout]\nraw_chunk_bytes = 65536\ncodec = \"none\"\nindex = \"{index}\"\ninline_max = 0\n"),
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

/// Inline files against a model of their bytes: overwritten inside,
/// appended past `inline_max` (they become chunked) and cut back under it
/// (inline again), chmod'ed; each state survives kill -9 of the daemon
/// right after the writer closes the file, and `verify` stays clean.
#[test]
fn inline_files_change_like_any_file_and_survive_kill_9() {
    use std::os::unix::fs::{FileExt, PermissionsExt};
    for layout in ["default", "ts-ocdbt"] {
        let mut m = Mount::new(Some(repo_config(layout)));
        let path = m.path("cfg.json");
        let mut model = random(3000, 21);
        fs::write(&path, &model).expect("write");
        m.kill9();
        m.start();
        assert_eq!(
            fs::read(&path).expect("read"),
            model,
            "{layout}: first save"
        );
        assert_eq!(inspect(&path)["layout"], "inline", "{layout}");

        // Overwrite inside: still inline.
        let patch = random(500, 22);
        {
            let f = fs::OpenOptions::new()
                .write(true)
                .open(&path)
                .expect("open");
            f.write_all_at(&patch, 1000).expect("pwrite");
        }
        model[1000..1500].copy_from_slice(&patch);
        fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).expect("chmod");
        m.kill9();
        m.start();
        assert_eq!(fs::read(&path).expect("read"), model, "{layout}: overwrite");
        assert_eq!(inspect(&path)["layout"], "inline", "{layout}");
        let mode = fs::metadata(&path).expect("stat").permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "{layout}: chmod lost at kill -9");

        // Appended past 64 KiB: chunked.
        {
            let mut f = fs::OpenOptions::new()
                .append(true)
                .open(&path)
                .expect("open");
            for i in 0..8 {
                let piece = random(10_000, 30 + i);
                f.write_all(&piece).expect("append");
                model.extend_from_slice(&piece);
            }
        }
        m.kill9();
        m.start();
        assert_eq!(fs::read(&path).expect("read"), model, "{layout}: grown");
        assert_eq!(inspect(&path)["layout"], "bytes", "{layout}");

        // Cut back under it: inline again, and the chunked generation goes.
        {
            let f = fs::OpenOptions::new()
                .write(true)
                .open(&path)
                .expect("open");
            f.set_len(2000).expect("truncate");
        }
        model.truncate(2000);
        m.kill9();
        m.start();
        assert_eq!(fs::read(&path).expect("read"), model, "{layout}: cut");
        assert_eq!(inspect(&path)["layout"], "inline", "{layout}");
        if layout == "default" {
            let home: Vec<_> = fs::read_dir(m.backing.join("cfg.json"))
                .expect("home")
                .map(|e| e.expect("entry").file_name())
                .collect();
            assert_eq!(home, ["zarr.json"], "{layout}: old generation left");
        }
        // Emptied and rewritten by a shell redirect.
        fs::write(&path, b"{}\n").expect("rewrite");
        m.remount();
        assert_eq!(fs::read(&path).expect("read"), b"{}\n", "{layout}");
        m.unmount();
        let (code, out) = verify(&m.backing);
        assert_eq!(code, 0, "{layout}: {out}");
    }
}

/// A byte of an inline file changed in its manifest: `verify` names the
/// file and a read through the mount fails with EIO, not wrong bytes.
#[test]
fn a_damaged_inline_file_is_reported_not_served() {
    let mut m = Mount::new(None);
    fs::write(m.path("small.txt"), b"the quick brown fox jumps\n").expect("write");
    m.unmount();
    let doc_path = m.backing.join("small.txt").join("zarr.json");
    let doc = fs::read_to_string(&doc_path).expect("manifest");
    let mut v: serde_json::Value = serde_json::from_str(&doc).expect("json");
    let inline = &mut v["attributes"]["ckptfs"]["inline"];
    // "the quick" and "thE quick" differ in one base64 character.
    use base64::Engine;
    let good = base64::engine::general_purpose::STANDARD.encode(b"the quick brown fox jumps\n");
    assert_eq!(inline.as_str(), Some(good.as_str()));
    *inline = base64::engine::general_purpose::STANDARD
        .encode(b"thE quick brown fox jumps\n")
        .into();
    fs::write(&doc_path, serde_json::to_vec(&v).expect("json")).expect("write");
    let (code, out) = verify(&m.backing);
    assert_ne!(code, 0, "{out}");
    assert!(
        out.contains("small.txt") && out.contains("checksum mismatch"),
        "{out}"
    );
    m.start();
    let err = fs::read(m.path("small.txt")).expect_err("damaged bytes served");
    assert_eq!(err.raw_os_error(), Some(libc::EIO), "{err}");
}
