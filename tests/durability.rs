//! Large files and crashes: a 1 GiB file keeps its SHA-256 across a
//! remount, and kill -9 of the daemon mid-write loses nothing committed.

mod common;

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::time::Duration;

use common::{chunk_files, fill, repo_config, sha256_file, verify, write_config, Mount};
use sha2::{Digest, Sha256};

fn write_random(path: &std::path::Path, bytes: u64, seed: u64) -> String {
    let mut f = File::create(path).expect("create");
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut s = seed;
    let mut left = bytes;
    while left > 0 {
        let n = left.min(buf.len() as u64) as usize;
        fill(&mut buf[..n], &mut s);
        f.write_all(&buf[..n]).expect("write");
        h.update(&buf[..n]);
        left -= n as u64;
    }
    f.sync_all().expect("fsync");
    format!("{:x}", h.finalize())
}

#[test]
fn one_gib_file_keeps_its_sha256_across_remount() {
    let gib: u64 = std::env::var("CKPTFS_BIG_BYTES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1 << 30);
    for config in [repo_config("default"), repo_config("passthrough")] {
        let mut m = Mount::new(Some(config));
        let want = write_random(&m.path("big.bin"), gib + 12345, 7);
        assert_eq!(sha256_file(&m.path("big.bin")), want);
        m.remount();
        assert_eq!(
            fs::metadata(m.path("big.bin")).expect("stat").len(),
            gib + 12345
        );
        assert_eq!(sha256_file(&m.path("big.bin")), want, "after remount");
        m.unmount();
    }
}

#[test]
fn kill9_during_a_write_keeps_committed_files_and_the_old_version() {
    let tmp = tempfile::tempdir().expect("tmp");
    let small_chunks = write_config(
        tmp.path(),
        "c64k",
        "[layout]\nraw_chunk_bytes = 65536\n[io]\nconcurrency = 2\n",
    );
    let packed = write_config(
        tmp.path(),
        "p64k",
        "[layout]\nraw_chunk_bytes = 65536\nindex = \"packed\"\n[io]\nconcurrency = 2\n",
    );
    for config in [repo_config("passthrough"), small_chunks, packed] {
        for round in 0..3u64 {
            let mut m = Mount::new(Some(config.clone()));
            let a = write_random(&m.path("a.bin"), 3_000_000, 1 + round);
            let v1 = write_random(&m.path("b.bin"), 500_000, 100 + round);
            // Rewrite b.bin in a thread, slowly, and kill the daemon mid-way.
            let path = m.path("b.bin");
            let writer = std::thread::spawn(move || {
                let mut f = match OpenOptions::new().write(true).truncate(true).open(&path) {
                    Ok(f) => f,
                    Err(_) => return,
                };
                let mut buf = vec![0u8; 256 * 1024];
                let mut s = 5;
                for _ in 0..4000 {
                    fill(&mut buf, &mut s);
                    if f.write_all(&buf).is_err() {
                        return;
                    }
                }
            });
            std::thread::sleep(Duration::from_millis(150 + 100 * round));
            m.kill9();
            let _ = writer.join();
            let (code, out) = verify(&m.backing);
            assert_eq!(code, 0, "verify after kill -9 found problems:\n{out}");
            m.start();
            assert_eq!(sha256_file(&m.path("a.bin")), a, "committed file changed");
            match fs::metadata(m.path("b.bin")) {
                Ok(meta) => assert_eq!(
                    sha256_file(&m.path("b.bin")),
                    v1,
                    "{}: round {round}: interrupted file ({} bytes) is neither absent nor its committed version",
                    config.display(),
                    meta.len()
                ),
                Err(e) => assert_eq!(e.kind(), std::io::ErrorKind::NotFound),
            }
            m.unmount();
        }
    }
}

/// Flips one byte of `path` in place.
fn flip_byte(path: &std::path::Path, at: u64) {
    let mut bytes = fs::read(path).expect("read chunk");
    let i = (at as usize).min(bytes.len() - 1);
    bytes[i] ^= 0x20;
    fs::write(path, bytes).expect("write chunk");
}

#[test]
fn verify_checks_every_chunk_and_refuses_a_live_mount() {
    let tmp = tempfile::tempdir().expect("tmp");
    let small_chunks = write_config(
        tmp.path(),
        "c4k",
        "[layout]\nraw_chunk_bytes = 4096\ninline_max = 0\n[io]\nconcurrency = 2\n",
    );
    for config in [
        repo_config("passthrough"),
        small_chunks,
        repo_config("zstd"),
    ] {
        let mut m = Mount::new(Some(config.clone()));
        write_random(&m.path("a.bin"), 100_000, 3);
        fs::create_dir(m.path("sub")).expect("mkdir");
        // Past `inline_max`: its bytes are in chunk files.
        write_random(&m.path("sub/b.bin"), 150_000, 4);
        let (code, out) = verify(&m.backing);
        assert_eq!(code, 2, "verify of a mounted store must refuse:\n{out}");
        m.unmount();
        let (code, out) = verify(&m.backing);
        assert_eq!(
            code,
            0,
            "{}: clean store reported:\n{out}",
            config.display()
        );
        assert!(out.contains("2 files"), "{out}");
        let mut chunks = Vec::new();
        chunk_files(&m.backing.join("sub/b.bin"), &mut chunks);
        chunks.sort();
        let victim = chunks.last().expect("a chunk file");
        flip_byte(victim, 100);
        let (code, out) = verify(&m.backing);
        assert_eq!(
            code,
            1,
            "{}: flipped byte not found:\n{out}",
            config.display()
        );
        assert!(out.contains("b.bin"), "{out}");
        // Chunked layouts also check each chunk as it is read; the plain
        // layout's whole-file checksum is left to verify.
        if config != repo_config("passthrough") {
            m.start();
            let err = fs::read(m.path("sub/b.bin")).expect_err("read of a flipped chunk");
            assert_eq!(err.raw_os_error(), Some(libc::EIO), "{}", config.display());
            m.unmount();
        }
    }
}

#[test]
fn verify_checks_a_packed_database() {
    use ckptfs::ocdbt::{Compression, Db, DbOptions};
    let dir = tempfile::tempdir().expect("tmp");
    let opts = DbOptions {
        compression: Compression::None,
        ..DbOptions::default()
    };
    let db = Db::open_or_create(dir.path(), opts).expect("create db");
    db.put(b"a/zarr.json", b"{}").expect("put");
    db.put(b"a/c/0", &vec![7u8; 5000]).expect("put");
    db.commit().expect("commit");
    drop(db);
    let (code, out) = verify(dir.path());
    assert_eq!(code, 0, "clean database reported:\n{out}");
    assert!(out.contains("packed database"), "{out}");
    // The tree node follows the 5000-byte value in the only data file.
    let data = fs::read_dir(dir.path().join("d"))
        .expect("data dir")
        .next()
        .expect("a data file")
        .expect("entry")
        .path();
    flip_byte(&data, 5000 + 20);
    let (code, out) = verify(dir.path());
    assert_eq!(code, 1, "flipped node byte not found:\n{out}");
    flip_byte(&data, 5000 + 20);
    flip_byte(&dir.path().join("manifest.ocdbt"), 30);
    let (code, out) = verify(dir.path());
    assert_eq!(code, 1, "corrupt manifest not reported:\n{out}");
}

/// The temp-file-then-rename save (safetensors' `save_file`): the rename
/// happens before the close, and a crash right after it must leave the new
/// content (or the old), never the temp file's empty first state.
#[test]
fn kill9_after_rename_over_a_committed_file_keeps_a_whole_version() {
    for config in [repo_config("default"), repo_config("passthrough")] {
        let mut m = Mount::new(Some(config.clone()));
        let old = write_random(&m.path("model.bin"), 700_000, 11);
        let mut f = File::create(m.path(".tmp123")).expect("create temp");
        let mut buf = vec![0u8; 900_000];
        let mut s = 12;
        fill(&mut buf, &mut s);
        f.write_all(&buf).expect("write temp");
        let new = format!("{:x}", Sha256::digest(&buf));
        fs::rename(m.path(".tmp123"), m.path("model.bin")).expect("rename over");
        m.kill9();
        drop(f);
        let (code, out) = verify(&m.backing);
        assert_eq!(code, 0, "verify after kill -9 found problems:\n{out}");
        m.start();
        let got = sha256_file(&m.path("model.bin"));
        assert!(
            got == new || got == old,
            "{}: model.bin is neither version ({} bytes)",
            config.display(),
            fs::metadata(m.path("model.bin"))
                .map(|x| x.len())
                .unwrap_or(0)
        );
        m.unmount();
    }
}

/// Writes `path` (a new file) slowly in a thread, kills the daemon while
/// it writes, checks the store and remounts.
fn kill9_mid_first_save(m: &mut Mount, rel: &str, after_ms: u64) {
    let path = m.path(rel);
    let writer = std::thread::spawn(move || {
        let Ok(mut f) = File::create(&path) else {
            return;
        };
        let mut buf = vec![0u8; 256 * 1024];
        let mut s = 9;
        for _ in 0..4000 {
            fill(&mut buf, &mut s);
            if f.write_all(&buf).is_err() {
                return;
            }
        }
    });
    std::thread::sleep(Duration::from_millis(after_ms));
    m.kill9();
    let _ = writer.join();
    let (code, out) = verify(&m.backing);
    assert_eq!(code, 0, "verify after kill -9 found problems:\n{out}");
    m.start();
}

/// A checkpoint interrupted during its first save is absent after the
/// crash, not an empty (or partial) file: files and packed index, plain
/// and chunked.
#[test]
fn kill9_during_the_first_save_of_a_new_file_leaves_no_name() {
    for config in ["default", "passthrough", "ts-ocdbt"] {
        for (round, after_ms) in [150u64, 600].into_iter().enumerate() {
            let mut m = Mount::new(Some(repo_config(config)));
            fs::create_dir(m.path("ckpt")).expect("mkdir");
            let kept = write_random(&m.path("ckpt/kept.bin"), 300_000, 3);
            kill9_mid_first_save(&mut m, "ckpt/new.bin", after_ms);
            let left = fs::metadata(m.path("ckpt/new.bin")).map(|x| x.len());
            assert!(
                left.is_err(),
                "{config} round {round}: the interrupted new file survived the crash ({} bytes)",
                left.unwrap_or(0)
            );
            assert_eq!(sha256_file(&m.path("ckpt/kept.bin")), kept, "{config}");
            let names: Vec<_> = fs::read_dir(m.path("ckpt"))
                .expect("readdir")
                .map(|e| e.expect("entry").file_name())
                .collect();
            assert_eq!(names, ["kept.bin"], "{config}: {names:?}");
            // The name is free again, and a save into it works.
            let again = write_random(&m.path("ckpt/new.bin"), 200_000, 4);
            m.remount();
            assert_eq!(sha256_file(&m.path("ckpt/new.bin")), again, "{config}");
            m.unmount();
        }
    }
}

/// The names POSIX does promise: a new file whose directory was fsynced
/// after the create survives the crash (empty: its data was never
/// committed), and so does one closed empty (`touch`) or fsynced.
#[test]
fn kill9_keeps_new_names_that_were_committed_or_whose_directory_was_fsynced() {
    for config in ["default", "ts-ocdbt"] {
        let mut m = Mount::new(Some(repo_config(config)));
        File::create(m.path("touched")).expect("touch");
        let synced = write_random(&m.path("synced.bin"), 100_000, 5);
        let mut open = File::create(m.path("dir-synced.bin")).expect("create");
        open.write_all(&[7u8; 5000]).expect("write");
        File::open(&m.mnt)
            .expect("open dir")
            .sync_all()
            .expect("fsyncdir");
        let mut unsynced = File::create(m.path("unsynced.bin")).expect("create");
        unsynced.write_all(&[8u8; 5000]).expect("write");
        m.kill9();
        drop((open, unsynced));
        let (code, out) = verify(&m.backing);
        assert_eq!(code, 0, "verify after kill -9 found problems:\n{out}");
        m.start();
        assert_eq!(fs::metadata(m.path("touched")).expect("touched").len(), 0);
        assert_eq!(sha256_file(&m.path("synced.bin")), synced, "{config}");
        let kept = fs::metadata(m.path("dir-synced.bin"));
        assert_eq!(
            kept.as_ref().map(|x| x.len()).ok(),
            Some(0),
            "{config}: a name made durable by fsync of its directory: {kept:?}"
        );
        assert!(
            fs::metadata(m.path("unsynced.bin")).is_err(),
            "{config}: unsynced.bin was never committed"
        );
        m.unmount();
    }
}

/// `torch.save`, and safetensors' `save_file` (a `.tmpXXXX` file renamed
/// at the end), of a new checkpoint killed mid-way, as a training job's
/// crash leaves it: the resume finds no file (nor a temp file) rather than
/// an empty or torn one.
#[test]
fn kill9_during_the_first_torch_or_safetensors_save_leaves_no_file() {
    const SAVERS: [(&str, &str); 2] = [
        (
            "torch.save",
            "import sys, torch\n\
             sd = {f'w{i}': torch.randn(4096, 4096) for i in range(16)}\n\
             print('ready', flush=True)\n\
             torch.save(sd, sys.argv[1] + '/step-100.pt')\n",
        ),
        (
            "safetensors save_file",
            "import sys, numpy as np\n\
             from safetensors.numpy import save_file\n\
             rng = np.random.default_rng(1)\n\
             sd = {f'w{i}': rng.standard_normal((4096, 4096), dtype=np.float32) for i in range(16)}\n\
             print('ready', flush=True)\n\
             save_file(sd, sys.argv[1] + '/model.safetensors')\n",
        ),
    ];
    for config in ["default", "ts-ocdbt"] {
        for (saver, script) in SAVERS {
            let mut m = Mount::new(Some(repo_config(config)));
            let dir = m.path("ckpt");
            fs::create_dir(&dir).expect("mkdir");
            let mut py = std::process::Command::new("python3")
                .args(["-c", script])
                .arg(&dir)
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::null())
                .spawn()
                .expect("python3");
            let mut line = String::new();
            let stdout = py.stdout.take().expect("stdout");
            std::io::BufRead::read_line(&mut std::io::BufReader::new(stdout), &mut line)
                .expect("python output");
            assert_eq!(
                line.trim(),
                "ready",
                "python3 with torch, numpy and safetensors is needed"
            );
            // Mid-save: the checkpoint (or its temp file) exists and grows.
            let written = || -> u64 {
                fs::read_dir(&dir)
                    .map(|d| {
                        d.filter_map(|e| e.ok()?.metadata().ok())
                            .map(|x| x.len())
                            .sum()
                    })
                    .unwrap_or(0)
            };
            let deadline = std::time::Instant::now() + Duration::from_secs(30);
            while written() < (64 << 20) {
                assert!(
                    std::time::Instant::now() < deadline,
                    "{saver} never got going"
                );
                std::thread::sleep(Duration::from_millis(20));
            }
            m.kill9();
            let _ = py.kill();
            let _ = py.wait();
            let (code, out) = verify(&m.backing);
            assert_eq!(code, 0, "verify after kill -9 found problems:\n{out}");
            m.start();
            let left: Vec<_> = fs::read_dir(&dir)
                .expect("readdir")
                .map(|e| e.expect("entry").file_name())
                .collect();
            assert!(
                left.is_empty(),
                "{config}: an interrupted first {saver} left {left:?} behind"
            );
            m.unmount();
        }
    }
}

/// A file grown with zeros by `truncate`, committed, then shrunk back into
/// that zero tail and committed again: the checksum recorded for its last
/// chunk must cover the new size (it kept the old one, so the file read
/// back as EIO and `verify` reported it; found by a 1M-op fsx soak).
#[test]
fn shrinking_into_the_zero_tail_keeps_the_chunk_checksum_right() {
    for config in ["default", "ts-ocdbt"] {
        let mut m = Mount::new(Some(repo_config(config)));
        let path = m.path("f.bin");
        let mut data = vec![0u8; 1000];
        fill(&mut data, &mut 3);
        fs::write(&path, &data).expect("write");
        for size in [5000u64, 3000, 1500, 1000, 7000, 1001] {
            OpenOptions::new()
                .write(true)
                .open(&path)
                .expect("open")
                .set_len(size)
                .expect("truncate");
            let mut want = data.clone();
            want.resize(size as usize, 0);
            assert_eq!(
                fs::read(&path).expect("read back"),
                want,
                "{config}: size {size}"
            );
        }
        m.remount();
        let mut want = data.clone();
        want.resize(1001, 0);
        assert_eq!(
            fs::read(&path).expect("read after remount"),
            want,
            "{config}"
        );
        m.unmount();
        let (code, out) = verify(&m.backing);
        assert_eq!(code, 0, "{config}: verify:\n{out}");
    }
}

/// A manifest naming a layout this build does not know (a newer release's,
/// or a damaged one) mounts: the file lists and stats, its reads fail with
/// EIO instead of taking the daemon down, an attribute change keeps the
/// name as written, and `verify` reports it.
#[test]
fn an_unknown_layout_kind_reads_as_eio_and_verify_reports_it() {
    let tmp = tempfile::tempdir().expect("tmp");
    let small_chunks = write_config(
        tmp.path(),
        "c4k",
        "[layout]\nraw_chunk_bytes = 4096\ninline_max = 0\n",
    );
    for (config, kind) in [
        (repo_config("passthrough"), "plain"),
        (small_chunks, "bytes"),
    ] {
        let mut m = Mount::new(Some(config.clone()));
        write_random(&m.path("a.bin"), 10_000, 5);
        let want_b = write_random(&m.path("b.bin"), 10_000, 6);
        m.unmount();
        let manifest = m.backing.join("a.bin/zarr.json");
        let text = fs::read_to_string(&manifest).expect("read manifest");
        let from = format!("\"kind\": \"{kind}\"");
        assert!(text.contains(&from), "{kind}: {text}");
        fs::write(&manifest, text.replace(&from, "\"kind\": \"zigzag\"")).expect("write");

        m.start();
        let meta = fs::metadata(m.path("a.bin")).expect("stat");
        assert_eq!(meta.len(), 10_000, "{kind}");
        let err = fs::read(m.path("a.bin")).expect_err("read of an unknown layout");
        assert_eq!(err.raw_os_error(), Some(libc::EIO), "{kind}");
        assert_eq!(sha256_file(&m.path("b.bin")), want_b, "{kind}");
        let mut perms = meta.permissions();
        std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o600);
        fs::set_permissions(m.path("a.bin"), perms).expect("chmod");
        m.unmount();

        let text = fs::read_to_string(&manifest).expect("read manifest");
        assert!(text.contains("\"kind\": \"zigzag\""), "{kind}: {text}");
        let (code, out) = verify(&m.backing);
        assert_eq!(code, 1, "{kind}: {out}");
        assert!(
            out.contains("unknown layout kind \"zigzag\""),
            "{kind}: {out}"
        );
    }
}

/// Bytes of the regular files under `dir`.
fn bytes_under(dir: &std::path::Path) -> u64 {
    let mut total = 0;
    let Ok(entries) = fs::read_dir(dir) else {
        return 0;
    };
    for e in entries.flatten() {
        let Ok(meta) = fs::symlink_metadata(e.path()) else {
            continue;
        };
        if meta.is_dir() {
            total += bytes_under(&e.path());
        } else if meta.is_file() {
            total += meta.len();
        }
    }
    total
}

/// A file unlinked while held open waits for its last close; a crash
/// before that close must not leave its data behind for good: the next
/// mount removes it.
#[test]
fn kill9_with_an_unlinked_file_still_open_leaves_nothing_after_the_next_mount() {
    for config in [repo_config("default"), repo_config("passthrough")] {
        let mut m = Mount::new(Some(config.clone()));
        write_random(&m.path("keep.bin"), 300_000, 21);
        write_random(&m.path("gone.bin"), 3_000_000, 22);
        let held = File::open(m.path("gone.bin")).expect("open gone.bin");
        fs::remove_file(m.path("gone.bin")).expect("unlink gone.bin");
        let trash = m.backing.join(".ckptfs").join("trash");
        assert!(
            bytes_under(&trash) >= 3_000_000,
            "{}: the open file's data is not where an unlinked open file waits",
            config.display()
        );
        m.kill9();
        drop(held);
        let (code, out) = verify(&m.backing);
        assert_eq!(code, 0, "verify after kill -9 found problems:\n{out}");
        assert!(
            out.contains("1 leftovers"),
            "{}: verify does not count the retired home:\n{out}",
            config.display()
        );
        m.start();
        assert_eq!(
            bytes_under(&trash),
            0,
            "{}: the unlinked file's data outlived the crash and the next mount",
            config.display()
        );
        assert!(!m.path("gone.bin").exists());
        assert_eq!(
            fs::metadata(m.path("keep.bin")).map(|x| x.len()).ok(),
            Some(300_000)
        );
        m.unmount();
        let (code, out) = verify(&m.backing);
        assert_eq!(code, 0, "verify found problems:\n{out}");
        assert!(out.contains("0 leftovers"), "{out}");
    }
}

/// How many times the mount has run profiler stage `stage` so far (its
/// live figures): `commit`, `fsync` (flushes).
fn stage_count(m: &Mount, stage: &str) -> u64 {
    let stats: serde_json::Value =
        serde_json::from_slice(&fs::read(m.path(".ckptfs/stats")).expect("stats")).expect("json");
    stats["stages"][stage]["count"].as_u64().unwrap_or(0)
}

fn commits(m: &Mount) -> u64 {
    stage_count(m, "commit")
}

/// close(2) commits, except while the closing process still writes the
/// file through another descriptor (TensorStore's lock files): that one's
/// close commits. A read-only descriptor left open does not hold a
/// writer's commit back. Either way kill -9 after the last close keeps
/// the file.
#[test]
fn a_close_while_the_process_writes_through_another_descriptor_defers_the_commit() {
    let mut m = Mount::new(None);
    let before = commits(&m);
    let mut writer = File::create(m.path("chunk.__lock")).expect("create");
    drop(
        OpenOptions::new()
            .write(true)
            .open(m.path("chunk.__lock"))
            .expect("open again"),
    );
    assert_eq!(
        commits(&m),
        before,
        "the second descriptor's close committed"
    );
    writer.write_all(&[7u8; 300_000]).expect("write");
    drop(writer);
    assert_eq!(commits(&m), before + 1, "the writer's close did not commit");

    let reader = File::open(m.path("chunk.__lock")).expect("open for reading");
    let mut w = OpenOptions::new()
        .write(true)
        .open(m.path("chunk.__lock"))
        .expect("open");
    w.write_all(&[9u8; 1000]).expect("overwrite");
    drop(w);
    assert_eq!(
        commits(&m),
        before + 2,
        "a reader held the writer's commit back"
    );
    drop(reader);
    m.kill9();
    m.start();
    let got = fs::read(m.path("chunk.__lock")).expect("read after kill -9");
    assert_eq!(got.len(), 300_000);
    assert!(got[..1000].iter().all(|&b| b == 9) && got[1000..].iter().all(|&b| b == 7));
    m.unmount();
}

fn flushes(m: &Mount) -> u64 {
    stage_count(m, "fsync")
}

/// chmod and utimens of a closed file (what `rsync -a` and `tar x` do
/// after writing) cost no flush, as on a local disk: they survive kill -9
/// of the daemon and a remount at once, an fsync of the file makes them
/// durable (the packed index: commits them into the database), and the
/// next commit of its data keeps them.
#[test]
fn attribute_changes_of_a_closed_file_survive_kill_9_without_a_flush() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    for (config, label) in [(None, "files"), (Some(repo_config("ts-ocdbt")), "packed")] {
        let mut m = Mount::new(config);
        fs::write(m.path("a.bin"), vec![3u8; 100_000]).expect("write");
        fs::write(m.path("b.bin"), vec![4u8; 1_000]).expect("write");
        let before = flushes(&m);
        fs::set_permissions(m.path("a.bin"), fs::Permissions::from_mode(0o640)).expect("chmod");
        common::set_times(&m.path("b.bin"), 981_173_106);
        assert_eq!(flushes(&m), before, "{label}: an attribute change flushed");
        assert_eq!(
            fs::metadata(m.path("a.bin")).expect("stat").mode() & 0o777,
            0o640
        );

        m.kill9();
        m.start();
        let a = fs::metadata(m.path("a.bin")).expect("stat a");
        let b = fs::metadata(m.path("b.bin")).expect("stat b");
        assert_eq!(a.mode() & 0o777, 0o640, "{label}: chmod lost at kill -9");
        assert_eq!(b.mtime(), 981_173_106, "{label}: utimens lost at kill -9");

        // fsync makes it durable (one flush), and a data commit keeps it.
        fs::set_permissions(m.path("a.bin"), fs::Permissions::from_mode(0o604)).expect("chmod");
        let before = flushes(&m);
        File::open(m.path("a.bin"))
            .and_then(|f| f.sync_all())
            .expect("fsync");
        assert!(flushes(&m) > before, "{label}: fsync did not flush");
        let mut f = OpenOptions::new()
            .append(true)
            .open(m.path("a.bin"))
            .expect("open");
        f.write_all(b"tail").expect("append");
        drop(f);
        m.remount();
        let a = fs::metadata(m.path("a.bin")).expect("stat a");
        assert_eq!(
            a.mode() & 0o777,
            0o604,
            "{label}: chmod lost at a data commit"
        );
        assert_eq!(a.len(), 100_004, "{label}");
        assert_eq!(
            fs::metadata(m.path("b.bin")).expect("stat b").mtime(),
            981_173_106,
            "{label}"
        );
        // A note found at mount (b.bin's, made before the kill) is
        // settled at unmount: a read-only mount (the packed index: from
        // the database) shows it.
        m.unmount();
        let (code, out) = verify(&m.backing);
        assert_eq!(code, 0, "{label}: verify found problems:\n{out}");
        m.extra = vec!["--read-only".into()];
        m.start();
        let b = fs::metadata(m.path("b.bin")).expect("stat b");
        assert_eq!(b.mtime(), 981_173_106, "{label}: read-only mount");
        m.unmount();
    }
}
