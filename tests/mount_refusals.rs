//! Bad and hostile setups at mount time: each is refused with a clear
//! message and a non-zero exit, and nothing is written to the backing dir.

mod common;

use std::fs;
use std::path::Path;
use std::process::Command;

use common::BIN;

/// `ckptfs mount -d ARGS…`: (exit code, stderr).
fn mount(args: &[&dyn AsRef<std::ffi::OsStr>]) -> (i32, String) {
    let mut cmd = Command::new(BIN);
    cmd.args(["mount", "-d"]);
    for a in args {
        cmd.arg(a);
    }
    let out = cmd.output().expect("run ckptfs mount");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn umount(mnt: &Path) {
    let ok = Command::new(BIN)
        .arg("umount")
        .arg(mnt)
        .status()
        .expect("ckptfs umount")
        .success();
    assert!(ok, "ckptfs umount {}", mnt.display());
}

/// Makes `dir` a read-only view of itself (root runs the tests); undone
/// by `umount dir`.
fn bind_read_only(dir: &Path) {
    let bound = Command::new("mount")
        .args(["--bind", "-o", "ro"])
        .arg(dir)
        .arg(dir)
        .status()
        .expect("mount --bind")
        .success();
    assert!(bound, "mount --bind -o ro failed");
}

fn refused(code: i32, err: &str, says: &str) {
    assert_ne!(code, 0, "mount should have been refused; stderr:\n{err}");
    assert!(
        err.contains(says),
        "the refusal should say {says:?}; stderr:\n{err}"
    );
}

#[test]
fn a_backing_dir_that_is_a_file_is_refused() {
    let tmp = tempfile::tempdir().expect("tmp");
    let (file, mnt) = (tmp.path().join("file"), tmp.path().join("mnt"));
    fs::write(&file, b"not a dir").expect("file");
    fs::create_dir(&mnt).expect("mnt");
    let (code, err) = mount(&[&file, &mnt]);
    refused(code, &err, "not a directory");
    assert_eq!(fs::read(&file).expect("file"), b"not a dir");
}

#[test]
fn a_mountpoint_with_entries_is_refused_unless_nonempty_is_given() {
    let tmp = tempfile::tempdir().expect("tmp");
    let (backing, mnt) = (tmp.path().join("backing"), tmp.path().join("mnt"));
    fs::create_dir(&mnt).expect("mnt");
    fs::write(mnt.join("notes.txt"), b"mine").expect("entry");
    let (code, err) = mount(&[&backing, &mnt]);
    refused(code, &err, "not empty");
    assert!(
        !backing.exists(),
        "the refused mount created the backing dir"
    );
    let (code, err) = mount(&[&"--nonempty", &backing, &mnt]);
    assert_eq!(code, 0, "--nonempty: {err}");
    assert!(!mnt.join("notes.txt").exists(), "hidden while mounted");
    umount(&mnt);
    assert_eq!(fs::read(mnt.join("notes.txt")).expect("back"), b"mine");
}

#[test]
fn a_mountpoint_inside_the_backing_dir_or_already_mounted_is_refused() {
    let tmp = tempfile::tempdir().expect("tmp");
    let backing = tmp.path().join("backing");
    let inner = backing.join("mnt");
    fs::create_dir_all(&inner).expect("inner");
    let (code, err) = mount(&[&backing, &inner]);
    refused(code, &err, "must not contain each other");
    assert_eq!(
        fs::read_dir(&backing).expect("ls").count(),
        1,
        "written into"
    );
    // A backing dir under the mountpoint, not yet existing: not created.
    let mnt = tmp.path().join("mnt");
    fs::create_dir(&mnt).expect("mnt");
    let (code, err) = mount(&[&mnt.join("b"), &mnt]);
    refused(code, &err, "must not contain each other");
    assert!(!mnt.join("b").exists());
    // Mounted once; a second mount on the same mountpoint is refused.
    let (code, err) = mount(&[&tmp.path().join("b1"), &mnt]);
    assert_eq!(code, 0, "{err}");
    let (code, err) = mount(&[&tmp.path().join("b2"), &mnt]);
    refused(code, &err, "already a ckptfs mount");
    assert!(!tmp.path().join("b2").exists());
    umount(&mnt);
}

#[test]
fn a_backing_dir_on_a_read_only_filesystem_is_refused() {
    let tmp = tempfile::tempdir().expect("tmp");
    let (ro, mnt) = (tmp.path().join("ro"), tmp.path().join("mnt"));
    fs::create_dir_all(ro.join("backing")).expect("backing");
    fs::create_dir(&mnt).expect("mnt");
    bind_read_only(&ro);
    let (code, err) = mount(&[&ro.join("backing"), &mnt]);
    let _ = Command::new("umount").arg(&ro).status();
    refused(code, &err, "Read-only file system");
    assert_eq!(fs::read_dir(ro.join("backing")).expect("ls").count(), 0);
}

/// `--read-only` serves a backing dir on read-only media (a published
/// checkpoint on a read-only volume): no lock, no recovery, EROFS to
/// changes, the bytes as they were.
#[test]
fn a_backing_dir_on_a_read_only_filesystem_mounts_read_only() {
    let tmp = tempfile::tempdir().expect("tmp");
    let (ro, mnt) = (tmp.path().join("ro"), tmp.path().join("mnt"));
    let backing = ro.join("backing");
    fs::create_dir_all(&ro).expect("ro");
    fs::create_dir(&mnt).expect("mnt");
    let (code, err) = mount(&[&backing, &mnt]);
    assert_eq!(code, 0, "{err}");
    let data: Vec<u8> = (0..2_000_000u32).map(|i| (i * 7 + i / 300) as u8).collect();
    fs::write(mnt.join("w.bin"), &data).expect("write");
    umount(&mnt);
    bind_read_only(&ro);
    let (code, err) = mount(&[&"--read-only", &backing, &mnt]);
    let read = (code == 0).then(|| fs::read(mnt.join("w.bin")));
    let write = (code == 0).then(|| fs::write(mnt.join("x.bin"), b"x"));
    if code == 0 {
        umount(&mnt);
    }
    let _ = Command::new("umount").arg(&ro).status();
    assert_eq!(code, 0, "--read-only on read-only media: {err}");
    assert!(
        read.is_some_and(|r| r.is_ok_and(|r| r == data)),
        "the read-only mount reads other bytes"
    );
    let e = write
        .and_then(|w| w.err())
        .expect("a write on the read-only mount");
    assert_eq!(e.raw_os_error(), Some(libc::EROFS));
}

#[test]
fn the_lock_is_the_flock_not_the_file_content() {
    let tmp = tempfile::tempdir().expect("tmp");
    let (backing, mnt) = (tmp.path().join("backing"), tmp.path().join("mnt"));
    fs::create_dir(&mnt).expect("mnt");
    let (code, err) = mount(&[&backing, &mnt]);
    assert_eq!(code, 0, "{err}");
    umount(&mnt);
    // Garbage in the lock file (no process holds it): mounts, and the file
    // names the new holder.
    let lock = backing.join(".ckptfs/lock");
    fs::write(&lock, b"\x00\xffgarbage").expect("corrupt lock");
    let (code, err) = mount(&[&backing, &mnt]);
    assert_eq!(code, 0, "a stale lock file's content must not block: {err}");
    let holder = fs::read_to_string(&lock).expect("lock");
    assert!(
        holder.trim().parse::<u32>().is_ok(),
        "lock names {holder:?}"
    );
    umount(&mnt);
    // A lock path that cannot be a lock file: refused, clearly.
    fs::remove_file(&lock).expect("rm lock");
    fs::create_dir(&lock).expect("lock dir");
    let (code, err) = mount(&[&backing, &mnt]);
    refused(code, &err, "lock file");
}

#[test]
fn two_mounts_racing_on_one_backing_dir_one_wins() {
    let tmp = tempfile::tempdir().expect("tmp");
    let backing = tmp.path().join("backing");
    let mnts: Vec<_> = (0..4).map(|i| tmp.path().join(format!("m{i}"))).collect();
    for m in &mnts {
        fs::create_dir(m).expect("mnt");
    }
    let racers: Vec<_> = mnts
        .iter()
        .map(|m| {
            let (b, m) = (backing.clone(), m.clone());
            std::thread::spawn(move || mount(&[&b, &m]))
        })
        .collect();
    let results: Vec<_> = racers
        .into_iter()
        .map(|r| r.join().expect("racer"))
        .collect();
    let won: Vec<_> = (0..4).filter(|&i| results[i].0 == 0).collect();
    assert_eq!(won.len(), 1, "exactly one mount wins: {results:?}");
    for (i, (code, err)) in results.iter().enumerate() {
        if *code != 0 {
            refused(*code, err, "already in use");
            assert!(fs::read_dir(&mnts[i]).expect("ls").next().is_none());
        }
    }
    umount(&mnts[won[0]]);
}
