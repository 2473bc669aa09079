//! The packed index through a real mount: versions and `--version N`
//! read-only mounts, removal of what no file references (also after a
//! kill -9), compaction, and the root names the database reserves.

mod common;

use std::collections::BTreeSet;
use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use ckptfs::ocdbt::Db;
use common::{fill, sha256_file, verify, write_config, Mount, BIN};

fn packed_config(dir: &Path) -> std::path::PathBuf {
    write_config(
        dir,
        "packed",
        "[layout]\nraw_chunk_bytes = 65536\ncodec = \"none\"\nindex = \"packed\"\n[packed]\nkeep_versions = 8\nauto_compact_ratio = 0\n",
    )
}

fn write_file(path: &Path, bytes: usize, seed: u64) -> Vec<u8> {
    let mut data = vec![0u8; bytes];
    let mut s = seed;
    fill(&mut data, &mut s);
    fs::write(path, &data).expect("write");
    data
}

fn ckptfs(args: &[&dyn AsRef<std::ffi::OsStr>]) -> (bool, String) {
    let mut cmd = Command::new(BIN);
    for a in args {
        cmd.arg(a);
    }
    let out = cmd.output().expect("run ckptfs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    )
}

/// Generations `ckptfs versions` lists, oldest first.
fn versions(backing: &Path) -> Vec<u64> {
    let (ok, out) = ckptfs(&[&"versions", &backing]);
    assert!(ok, "ckptfs versions failed:\n{out}");
    out.lines()
        .filter_map(|l| l.split_whitespace().next()?.parse().ok())
        .collect()
}

/// (id, generation) of every file manifest under a backing dir.
fn manifests(dir: &Path, out: &mut BTreeSet<(String, u64)>) {
    for e in fs::read_dir(dir).expect("read dir") {
        let p = e.expect("entry").path();
        if !p.is_dir() || p.file_name().is_some_and(|n| n == ".ckptfs" || n == "d") {
            continue;
        }
        let doc = fs::read(p.join("zarr.json")).unwrap_or_default();
        let v: serde_json::Value = serde_json::from_slice(&doc).unwrap_or_default();
        let m = &v["attributes"]["ckptfs"];
        if m["kind"] == "file" {
            assert_eq!(m["packed"], true, "{}: not packed", p.display());
            let id = m["id"].as_str().expect("id").to_string();
            out.insert((id, m["generation"].as_u64().expect("generation")));
        } else {
            manifests(&p, out);
        }
    }
}

/// Asserts that the newest version holds exactly the live files' manifests
/// and generations: nothing of a deleted file or a superseded generation.
fn assert_only_live_keys(backing: &Path) {
    let mut live = BTreeSet::new();
    manifests(backing, &mut live);
    // Where the catalog is the live record, homes are kept by id.
    let homes = backing.join(".ckptfs/homes");
    if homes.is_dir() {
        manifests(&homes, &mut live);
    }
    let newest = *versions(backing).last().expect("a version");
    let db = Db::open_version(backing, newest).expect("open newest version");
    let mut seen = BTreeSet::new();
    let mut named = BTreeSet::new();
    for (key, _) in db.list_prefix(b"") {
        // The namespace: each file name names a live file.
        if let Some(path) = key.strip_prefix(b".ns/") {
            let value = db.get(&key).expect("get").expect("value");
            let v: serde_json::Value = serde_json::from_slice(&value).expect("entry");
            if v["t"] == "file" {
                let id = v["id"].as_str().expect("id").to_string();
                assert!(
                    live.iter().any(|(i, _)| *i == id),
                    "name {} names no live file",
                    String::from_utf8_lossy(path)
                );
                named.insert(id);
            }
            continue;
        }
        if key == b".ns-live" {
            continue;
        }
        let key = String::from_utf8(key).expect("utf-8 key");
        let mut parts = key.splitn(3, '/');
        let id = parts.next().unwrap_or_default().to_string();
        let second = parts.next().unwrap_or_default();
        let gen = live
            .iter()
            .find(|(i, _)| *i == id)
            .map(|(_, g)| *g)
            .unwrap_or_else(|| panic!("key {key} belongs to no live file"));
        if second != "zarr.json" {
            assert_eq!(
                second,
                format!("g{gen}"),
                "key {key}: superseded generation"
            );
        }
        seen.insert(id);
    }
    let live_ids: BTreeSet<String> = live.iter().map(|(i, _)| i.clone()).collect();
    assert_eq!(seen, live_ids, "a live file has no keys");
    assert_eq!(named, live_ids, "a live file has no name in the namespace");
}

#[test]
fn an_old_version_mounts_read_only_with_its_contents() {
    let tmp = tempfile::tempdir().expect("tmp");
    let mut m = Mount::new(Some(packed_config(tmp.path())));
    let v1 = write_file(&m.path("a.bin"), 300_000, 1);
    fs::create_dir(m.path("sub")).expect("mkdir");
    write_file(&m.path("sub/b.bin"), 70_000, 2);
    m.unmount();
    let g1 = *versions(&m.backing)
        .last()
        .expect("a version after the first save");

    m.start();
    let v2 = write_file(&m.path("a.bin"), 200_000, 3);
    write_file(&m.path("c.bin"), 10_000, 4);
    m.unmount();
    let all = versions(&m.backing);
    assert!(
        *all.last().expect("versions") > g1,
        "no newer version: {all:?}"
    );
    assert!(all.contains(&g1), "version {g1} not kept: {all:?}");

    let old = m.root.path().join("old");
    fs::create_dir_all(&old).expect("mkdir");
    let (ok, out) = ckptfs(&[
        &"mount",
        &"--daemon",
        &"--version",
        &g1.to_string(),
        &m.backing,
        &old,
    ]);
    assert!(ok, "mount --version {g1} failed:\n{out}");
    let got = fs::read(old.join("a.bin"));
    let new_file = old.join("c.bin").exists();
    let write = fs::write(old.join("x"), b"x");
    let (ok, umount_out) = ckptfs(&[&"umount", &old]);
    assert!(ok, "umount failed:\n{umount_out}");
    assert_eq!(
        got.expect("read old a.bin"),
        v1,
        "version {g1} shows other bytes"
    );
    assert!(
        !new_file,
        "a file saved after version {g1} is visible in it"
    );
    let e = write.expect_err("a write to an old version succeeded");
    assert_eq!(e.raw_os_error(), Some(libc::EROFS), "{e}");

    let (ok, out) = ckptfs(&[
        &"mount",
        &"--daemon",
        &"--version",
        &"999",
        &m.backing,
        &old,
    ]);
    assert!(!ok, "a version never committed mounted");
    assert!(out.contains("kept"), "{out}");

    m.start();
    assert_eq!(fs::read(m.path("a.bin")).expect("read"), v2);
    m.unmount();
    let (code, out) = verify(&m.backing);
    assert_eq!(code, 0, "{out}");
}

#[test]
fn deleted_files_and_old_generations_leave_the_index_even_after_kill9() {
    let tmp = tempfile::tempdir().expect("tmp");
    let mut m = Mount::new(Some(packed_config(tmp.path())));
    write_file(&m.path("gone.bin"), 500_000, 1);
    write_file(&m.path("kept.bin"), 200_000, 2);
    let kept = write_file(&m.path("kept.bin"), 150_000, 3);
    fs::remove_file(m.path("gone.bin")).expect("unlink");
    m.unmount();
    assert_only_live_keys(&m.backing);

    // Deleted and rewritten with no commit after: the kill leaves the keys
    // in the index, and the next mount removes them.
    m.start();
    write_file(&m.path("late.bin"), 100_000, 4);
    fs::remove_file(m.path("kept.bin")).expect("unlink");
    m.kill9();
    m.start();
    assert!(!m.path("kept.bin").exists());
    assert_eq!(sha256_file(&m.path("late.bin")).len(), 64);
    m.unmount();
    assert_only_live_keys(&m.backing);
    let (code, out) = verify(&m.backing);
    assert_eq!(code, 0, "{out}");
    let _ = kept;
}

fn data_bytes(backing: &Path) -> u64 {
    fs::read_dir(backing.join("d"))
        .expect("data dir")
        .map(|e| e.expect("entry").metadata().expect("stat").len())
        .sum()
}

#[test]
fn compact_reclaims_a_deleted_checkpoint() {
    let tmp = tempfile::tempdir().expect("tmp");
    let mut m = Mount::new(Some(packed_config(tmp.path())));
    write_file(&m.path("big.bin"), 8 << 20, 1);
    let small = write_file(&m.path("small.bin"), 100_000, 2);
    fs::remove_file(m.path("big.bin")).expect("unlink");
    m.unmount();
    let before = data_bytes(&m.backing);
    // Kept versions still reference the big file: keep only the newest.
    let (ok, out) = ckptfs(&[&"compact", &m.backing, &"--keep", &"1"]);
    assert!(ok, "compact failed:\n{out}");
    let after = data_bytes(&m.backing);
    assert!(
        after + (7 << 20) < before,
        "compaction kept {after} of {before} bytes"
    );
    m.start();
    assert_eq!(fs::read(m.path("small.bin")).expect("read"), small);
    m.unmount();
    let (code, out) = verify(&m.backing);
    assert_eq!(code, 0, "{out}");
}

#[test]
fn root_names_of_the_database_stay_usable() {
    let tmp = tempfile::tempdir().expect("tmp");
    let mut m = Mount::new(Some(packed_config(tmp.path())));
    fs::create_dir(m.path("d")).expect("mkdir d");
    fs::write(m.path("d/x"), b"in d").expect("write");
    fs::write(m.path("manifest.ocdbt"), b"not the manifest").expect("write");
    m.remount();
    assert_eq!(fs::read(m.path("d/x")).expect("read"), b"in d");
    assert_eq!(
        fs::read(m.path("manifest.ocdbt")).expect("read"),
        b"not the manifest"
    );
    let names: BTreeSet<String> = fs::read_dir(&m.mnt)
        .expect("readdir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        names.contains("d") && names.contains("manifest.ocdbt"),
        "{names:?}"
    );
    m.unmount();
    assert!(m.backing.join("manifest.ocdbt").is_file());
    assert!(m.backing.join("d").is_dir());
    let (code, out) = verify(&m.backing);
    assert_eq!(code, 0, "{out}");
}

/// Sorted names in a directory.
fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("ls {}: {e}", dir.display()))
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

fn lstat(p: &Path) -> fs::Metadata {
    fs::symlink_metadata(p).unwrap_or_else(|e| panic!("lstat {}: {e}", p.display()))
}

/// Mounts version `g` read-only, runs `check` on its root, unmounts.
fn with_version(backing: &Path, at: &Path, g: u64, check: impl FnOnce(&Path)) {
    fs::create_dir_all(at).expect("mkdir");
    let (ok, out) = ckptfs(&[
        &"mount",
        &"--daemon",
        &"--version",
        &g.to_string(),
        &backing,
        &at,
    ]);
    assert!(ok, "mount --version {g} failed:\n{out}");
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| check(at)));
    let (ok, out) = ckptfs(&[&"umount", &at]);
    assert!(ok, "umount failed:\n{out}");
    if let Err(e) = r {
        std::panic::resume_unwind(e);
    }
}

/// A version holds the tree too: mounted, it shows files under the names
/// they had then (renamed since), files deleted since, its hard links and
/// symlinks; the newest shows today's tree. An unlink that no commit
/// followed before a kill -9 is brought into the namespace at the next
/// mount.
#[test]
fn a_version_mount_shows_the_tree_as_it_was() {
    let tmp = tempfile::tempdir().expect("tmp");
    let mut m = Mount::new(Some(packed_config(tmp.path())));
    fs::create_dir_all(m.path("ck/step1")).expect("mkdir");
    fs::create_dir(m.path("ck/empty")).expect("mkdir");
    let v1 = write_file(&m.path("ck/step1/a.bin"), 300_000, 1);
    let c = write_file(&m.path("ck/c.txt"), 1_000, 2);
    fs::hard_link(m.path("ck/c.txt"), m.path("ck/c-link.txt")).expect("link");
    std::os::unix::fs::symlink("step1/a.bin", m.path("ck/latest")).expect("symlink");
    // Symlinks and fifos take hard links too: one node under two names.
    fs::hard_link(m.path("ck/latest"), m.path("ck/latest2")).expect("link symlink");
    nix::unistd::mkfifo(
        &m.path("ck/pipe"),
        nix::sys::stat::Mode::from_bits_truncate(0o640),
    )
    .expect("mkfifo");
    fs::hard_link(m.path("ck/pipe"), m.path("ck/pipe2")).expect("link fifo");
    m.unmount();
    let g1 = *versions(&m.backing).last().expect("a version");

    m.start();
    fs::rename(m.path("ck/step1"), m.path("ck/step2")).expect("rename dir");
    let v2 = write_file(&m.path("ck/step2/a.bin"), 200_000, 3);
    fs::remove_file(m.path("ck/c.txt")).expect("unlink");
    fs::remove_dir(m.path("ck/empty")).expect("rmdir");
    fs::remove_file(m.path("ck/pipe")).expect("unlink one name of the fifo");
    write_file(&m.path("ck/new.txt"), 500, 4);
    m.unmount();
    let g2 = *versions(&m.backing).last().expect("a version");
    assert!(g2 > g1, "no version after the changes");

    with_version(&m.backing, &tmp.path().join("v1"), g1, |root| {
        assert_eq!(
            names(&root.join("ck")),
            [
                "c-link.txt",
                "c.txt",
                "empty",
                "latest",
                "latest2",
                "pipe",
                "pipe2",
                "step1"
            ],
            "version {g1}'s tree"
        );
        assert!(fs::read(root.join("ck/step1/a.bin")).expect("read a") == v1);
        assert!(fs::read(root.join("ck/latest")).expect("read via symlink") == v1);
        assert_eq!(
            fs::read(root.join("ck/c.txt")).expect("read deleted file"),
            c
        );
        let meta = fs::metadata(root.join("ck/c.txt")).expect("stat c");
        assert_eq!(meta.nlink(), 2, "c.txt's links in version {g1}");
        assert_eq!(
            meta.ino(),
            fs::metadata(root.join("ck/c-link.txt"))
                .expect("stat")
                .ino()
        );
        for (a, b) in [("latest", "latest2"), ("pipe", "pipe2")] {
            let (ma, mb) = (
                lstat(&root.join("ck").join(a)),
                lstat(&root.join("ck").join(b)),
            );
            assert_eq!(ma.nlink(), 2, "{a}'s links in version {g1}");
            assert_eq!(
                ma.ino(),
                mb.ino(),
                "{a} and {b} are one node in version {g1}"
            );
        }
        assert!(lstat(&root.join("ck/pipe")).file_type().is_fifo());
        assert_eq!(
            fs::read_link(root.join("ck/latest2")).expect("readlink"),
            Path::new("step1/a.bin")
        );
    });
    with_version(&m.backing, &tmp.path().join("v2"), g2, |root| {
        assert_eq!(
            names(&root.join("ck")),
            [
                "c-link.txt",
                "latest",
                "latest2",
                "new.txt",
                "pipe2",
                "step2"
            ],
            "version {g2}'s tree"
        );
        assert!(fs::read(root.join("ck/step2/a.bin")).expect("read a") == v2);
        assert_eq!(lstat(&root.join("ck/pipe2")).nlink(), 1, "pipe2 alone");
        assert_eq!(lstat(&root.join("ck/latest2")).nlink(), 2);
    });

    // An unlink is durable on return: kill -9 after it, and the next
    // mount's version does not have the name.
    m.start();
    fs::remove_file(m.path("ck/new.txt")).expect("unlink");
    m.kill9();
    m.start();
    assert!(!m.path("ck/new.txt").exists());
    m.unmount();
    assert_only_live_keys(&m.backing);
    let g3 = *versions(&m.backing).last().expect("a version");
    with_version(&m.backing, &tmp.path().join("v3"), g3, |root| {
        assert_eq!(
            names(&root.join("ck")),
            ["c-link.txt", "latest", "latest2", "pipe2", "step2"]
        );
    });
    let (code, out) = verify(&m.backing);
    assert_eq!(code, 0, "{out}");
}

/// A byte flipped in a value only an older version reads: `verify` checks
/// the newest version and passes; `verify --all-versions` also checks
/// each kept version's files against that version's manifests, and names
/// the version and the file.
#[test]
fn verify_all_versions_finds_a_flipped_byte_only_an_old_version_reads() {
    let tmp = tempfile::tempdir().expect("tmp");
    let mut m = Mount::new(Some(packed_config(tmp.path())));
    fs::create_dir(m.path("ck")).expect("mkdir");
    write_file(&m.path("ck/a.bin"), 300_000, 5);
    m.unmount();
    let g1 = *versions(&m.backing).last().expect("a version");
    m.start();
    write_file(&m.path("ck/a.bin"), 300_000, 6);
    m.unmount();

    let all = |backing: &Path| ckptfs(&[&"verify", &"--all-versions", &backing]);
    let (ok, out) = all(&m.backing);
    assert!(ok, "verify --all-versions of a clean store:\n{out}");
    assert!(out.contains("older versions:"), "{out}");

    // A chunk of the first save: in version g1, gone from the newest.
    let old = Db::open_version(&m.backing, g1).expect("open version");
    let newest = Db::open_or_create(&m.backing, Default::default()).expect("open db");
    let key = old
        .list_prefix(b"")
        .into_iter()
        .map(|(k, _)| k)
        .find(|k| k.windows(3).any(|w| w == b"/c/") && newest.get(k).expect("get").is_none())
        .expect("a chunk only the old version holds");
    let value = old.get(&key).expect("get").expect("value");
    drop((old, newest));
    let mut flipped = 0;
    for e in fs::read_dir(m.backing.join("d")).expect("data files") {
        let p = e.expect("entry").path();
        let mut bytes = fs::read(&p).expect("read data file");
        if let Some(at) = bytes.windows(value.len()).position(|w| w == &value[..]) {
            bytes[at + value.len() / 2] ^= 0x20;
            fs::write(&p, bytes).expect("write data file");
            flipped += 1;
        }
    }
    assert!(flipped > 0, "the old chunk's bytes are in no data file");

    let (code, out) = verify(&m.backing);
    assert_eq!(code, 0, "verify reads the newest version only:\n{out}");
    let (ok, out) = all(&m.backing);
    assert!(!ok, "verify --all-versions missed the flipped byte:\n{out}");
    assert!(
        out.contains(&format!("version {g1}/ck/a.bin")),
        "the problem names no version and file:\n{out}"
    );
}

/// Bytes of the packed index's data files, and how many there are.
fn data_files(backing: &Path) -> (u64, usize) {
    let mut total = (0, 0);
    for e in fs::read_dir(backing.join("d")).expect("ls d") {
        // Background compaction may remove a file between the listing and
        // its stat: it is gone, so it counts for nothing.
        let meta = match e.expect("entry").metadata() {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => panic!("stat: {e}"),
        };
        total.0 += meta.blocks() * 512;
        total.1 += 1;
    }
    total
}

/// Lazily unmounts a mount the test made, if it is still there when the
/// test ends (a failed assertion included).
struct Unmounts(Vec<std::path::PathBuf>);

impl Drop for Unmounts {
    fn drop(&mut self) {
        let mounts = fs::read_to_string("/proc/mounts").unwrap_or_default();
        for at in &self.0 {
            let listed = format!(" {} ", at.display());
            if mounts.contains(&listed) {
                let _ = Command::new(BIN)
                    .arg("umount")
                    .arg("--lazy")
                    .arg(at)
                    .status();
            }
        }
    }
}

fn mount_version(backing: &Path, at: &Path, version: &str) -> u32 {
    fs::create_dir_all(at).expect("mkdir");
    let (ok, out) = ckptfs(&[&"mount", &"--daemon", &"--version", &version, &backing, &at]);
    assert!(
        ok,
        "mount --version {version} beside the writer failed:\n{out}"
    );
    out.split("pid ")
        .nth(1)
        .and_then(|s| s.split(|c: char| !c.is_ascii_digit()).next()?.parse().ok())
        .unwrap_or_else(|| panic!("no pid in {out:?}"))
}

/// Version mounts share the backing dir with a writer and with each other
/// (a read-only mount that finds the writer there shows its newest version).
/// The version they read keeps its bytes while the writer rewrites the
/// file, drops that version from its list and would compact: compaction
/// waits for the readers, and runs once they are gone (a kill -9 of one
/// included).
#[test]
fn version_mounts_read_their_version_while_a_writer_goes_on() {
    let tmp = tempfile::tempdir().expect("tmp");
    let cfg = write_config(
        tmp.path(),
        "shared",
        "[layout]\nraw_chunk_bytes = 65536\ncodec = \"none\"\nindex = \"packed\"\n[packed]\nkeep_versions = 1\nauto_compact_ratio = 0.3\ndata_file_bytes = 1048576\n",
    );
    let m = Mount::new(Some(cfg));
    let size = 3 << 20;
    let v1 = write_file(&m.path("a.bin"), size, 1);
    let g1 = *versions(&m.backing).last().expect("a version");

    let (r1, r2) = (tmp.path().join("r1"), tmp.path().join("r2"));
    let r3 = tmp.path().join("r3");
    let _cleanup = Unmounts(vec![r1.clone(), r2.clone(), r3.clone()]);
    let pid1 = mount_version(&m.backing, &r1, "latest");
    mount_version(&m.backing, &r2, &g1.to_string());
    assert_eq!(
        fs::metadata(r1.join("a.bin")).expect("stat").len(),
        size as u64
    );

    let mut newest = Vec::new();
    for seed in 2..7 {
        newest = write_file(&m.path("a.bin"), size, seed);
    }
    assert!(
        !versions(&m.backing).contains(&g1),
        "version {g1} is still kept: the readers would not need their pin"
    );
    let (_, listed) = ckptfs(&[&"versions", &m.backing]);
    assert!(listed.contains("readers: "), "{listed}");
    let held = data_files(&m.backing);
    assert!(
        held.0 >= 5 * size as u64,
        "the writer's rewrites were reclaimed under the readers: {held:?}"
    );
    // A read-only mount beside the writer shows the newest version.
    fs::create_dir_all(&r3).expect("mkdir");
    let (ok, out) = ckptfs(&[&"mount", &"--daemon", &"--read-only", &m.backing, &r3]);
    assert!(ok, "mount --read-only beside the writer failed:\n{out}");
    let shown = fs::read(r3.join("a.bin")).expect("read r3");
    let (ok, out) = ckptfs(&[&"umount", &r3]);
    assert!(ok, "umount r3: {out}");
    assert!(shown == newest, "a read-only mount beside the writer");
    // Cold reads: the bytes come from the data files as they are now.
    fs::write("/proc/sys/vm/drop_caches", "3").expect("drop caches");
    assert!(fs::read(r1.join("a.bin")).expect("read r1") == v1, "r1");
    assert!(fs::read(r2.join("a.bin")).expect("read r2") == v1, "r2");
    assert!(fs::read(m.path("a.bin")).expect("read writer") == newest);

    // One reader unmounts, the other dies: the pins go with them.
    let (ok, out) = ckptfs(&[&"umount", &r2]);
    assert!(ok, "umount r2: {out}");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid1 as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .expect("kill -9 reader");
    let deadline = Instant::now() + Duration::from_secs(10);
    while Path::new(&format!("/proc/{pid1}")).exists() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = Command::new("umount").arg("-l").arg(&r1).status();
    let (_, listed) = ckptfs(&[&"versions", &m.backing]);
    assert!(!listed.contains("readers: "), "{listed}");
    write_file(&m.path("a.bin"), size, 9);
    // Compaction runs in the background after a commit.
    let deadline = Instant::now() + Duration::from_secs(30);
    let after = loop {
        let now = data_files(&m.backing);
        if now.0 < 3 * size as u64 || Instant::now() > deadline {
            break now;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(
        after.0 < 3 * size as u64,
        "no space came back once the readers were gone: {held:?} then {after:?}"
    );
    let mut m = m;
    m.unmount();
    let (code, out) = verify(&m.backing);
    assert_eq!(code, 0, "verify after the compaction:\n{out}");
}

/// An attribute change of a committed packed file is noted beside its home
/// manifest (no commit); the database's versions get it at the file's next
/// fsync or at unmount, also when the note was found after a kill -9.
#[test]
fn noted_attribute_changes_reach_the_database_at_unmount_also_after_kill_9() {
    let tmp = tempfile::tempdir().expect("tmp");
    let mut m = Mount::new(Some(packed_config(tmp.path())));
    write_file(&m.path("b.bin"), 100_000, 3);
    common::set_times(&m.path("b.bin"), 981_173_106);
    m.kill9();
    m.start();
    assert_eq!(
        fs::metadata(m.path("b.bin")).expect("stat").mtime(),
        981_173_106
    );
    m.unmount();
    let newest = *versions(&m.backing).last().expect("a version");
    let at = tmp.path().join("v");
    mount_version(&m.backing, &at, &newest.to_string());
    let mtime = fs::metadata(at.join("b.bin")).map(|s| s.mtime());
    let (ok, out) = ckptfs(&[&"umount", &at]);
    assert!(ok, "umount failed:\n{out}");
    assert_eq!(
        mtime.ok(),
        Some(981_173_106),
        "version {newest} lacks the change"
    );
}
